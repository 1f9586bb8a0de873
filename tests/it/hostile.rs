//! Fetching like a good citizen, and surviving whatever a server sends back
//! (DESIGN §2, §6). Every test runs the real binary (`feedwatch once`) against
//! local servers — axum for well-formed HTTP, a raw TCP server for responses
//! no HTTP library would send, a TLS server with a self-signed certificate —
//! with short timeouts set in the config. Each ends by checking that the run
//! exits as documented, that a bad source carries a `last_error` naming its
//! problem, that a good source in the same config stored its stories, and that
//! nothing stored before is lost.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::raw::{Misbehaviour, RawServer};
use crate::support::rows::{SourceInfo, StoryInfo};
use crate::support::tls::TlsServer;
use crate::support::*;

/// The User-Agent every test config sets, checked on the requests the site sees.
const USER_AGENT: &str = "feedwatch-tests/1.0 (+https://example.test/bot)";

/// Short timeouts: nothing in these tests waits out a real default.
const FAST: &str = "connect_timeout = \"1s\"\ntimeout = \"2s\"\n";

/// Roomier timeouts for tests that move tens of megabytes on a busy machine.
const ROOMY: &str = "connect_timeout = \"1s\"\ntimeout = \"20s\"\n";

/// A config head; `http` holds more `[http]` keys (timeouts at least).
fn head(db: &TestDb, http: &str) -> String {
    format!(
        r#"
[database]
url = "{url}"
max_connections = 2

[http]
user_agent = "{USER_AGENT}"
per_host_delay = "0s"
{http}
[delivery]
backoff_base = "1s"
backoff_max = "2s"
timeout = "2s"
"#,
        url = db.url
    )
}

fn source(name: &str, url: &str) -> String {
    format!("\n[[sources]]\nname = \"{name}\"\nkind = \"feed\"\nurl = \"{url}\"\n")
}

/// An RSS 2.0 document around `items`.
fn rss(items: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel>
<title>Test desk</title>
<link>http://example.test/</link>
<description>Feeds written for feedwatch's tests</description>
{items}</channel>
</rss>
"#
    )
}

/// One item published an hour ago, with its own link and guid.
fn item(base: &str, slug: &str, title: &str, text: &str) -> String {
    format!(
        "<item><title>{title}</title><link>{base}/{slug}/</link><guid>{base}/{slug}/</guid>\
         <pubDate>{date}</pubDate><description>{text}</description></item>\n",
        date = (Utc::now() - chrono::Duration::hours(1)).to_rfc2822()
    )
}

const GOOD_ITEMS: [(&str, &str, &str); 3] = [
    (
        "ferry-fares",
        "Ferry fares rise on the outlying island routes",
        "The operator said fuel costs forced a rise of eight per cent on three routes from next month.",
    ),
    (
        "library-hours",
        "Central library opens until midnight during exams",
        "Students asked for longer hours and the council agreed to a trial over the winter term.",
    ),
    (
        "tram-depot",
        "Tram depot upgrade finishes ahead of schedule",
        "Engineers replaced the overhead lines and the depot reopened two weeks earlier than planned.",
    ),
];

/// The well-behaved feed: its first `n` items.
fn good_feed(base: &str, n: usize) -> String {
    rss(&GOOD_ITEMS[..n]
        .iter()
        .map(|(slug, title, text)| item(base, slug, title, text))
        .collect::<String>())
}

/// A misbehaving source, and the phrases its `last_error` must contain (all of
/// them, ignoring case).
struct Bad<'a> {
    name: &'a str,
    url: String,
    says: &'a [&'a str],
    /// `sources.state` afterwards.
    state: &'a str,
}

/// A bad source that stays `active` (polled again, with backoff).
fn bad<'a>(name: &'a str, url: String, says: &'a [&'a str]) -> Bad<'a> {
    Bad {
        name,
        url,
        says,
        state: "active",
    }
}

/// What the second run of [`survive`] left behind.
struct Survived {
    /// The second run's config, for runs after it.
    config: TestConfig,
    elapsed: Duration,
    sources: Vec<SourceInfo>,
    stories: Vec<StoryInfo>,
}

impl Survived {
    fn path(&self) -> &str {
        self.config.path.to_str().unwrap()
    }

    fn source(&self, name: &str) -> &SourceInfo {
        self.sources
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no source {name:?}"))
    }
}

/// The common shape of these tests. A first `once` stores two stories of a
/// good feed; then the good feed gains a third story and a second `once` runs
/// with the `bad` sources (and any `extra` TOML) beside it. Checks: exit 0,
/// each bad source's `last_error`, the good source healthy with all three
/// stories, the first run's stories intact, no story from a bad source, and
/// the configured User-Agent on the good feed's requests.
async fn survive(db: &TestDb, site: &Site, http: &str, bad: &[Bad<'_>], extra: &str) -> Survived {
    let base = site.base();
    let good_url = site.url("/good/feed");
    site.put(
        "/good/feed",
        Resource::ok("application/rss+xml", good_feed(&base, 2)),
    );
    let first = TestConfig::write(&format!("{}{}", head(db, http), source("good", &good_url)));
    let out = feedwatch(&["once", "--config", first.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let before = db.stories().await;
    assert_eq!(before.len(), 2, "the first run stored the good feed");

    site.put(
        "/good/feed",
        Resource::ok("application/rss+xml", good_feed(&base, 3)),
    );
    let mut text = head(db, http) + &source("good", &good_url);
    for b in bad {
        text += &source(b.name, &b.url);
    }
    text += extra;
    let config = TestConfig::write(&text);
    let started = Instant::now();
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    let elapsed = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "some sources failed, others did not: exit 0\n{}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", describe(&out));

    let sources = db.sources().await;
    let find = |name: &str| {
        sources
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no source {name:?}"))
    };
    for b in bad {
        let row = find(b.name);
        let error = row
            .last_error
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no last_error: {row:?}\n{}", b.name, describe(&out)));
        for phrase in b.says {
            assert!(
                error.to_lowercase().contains(&phrase.to_lowercase()),
                "{}: last_error {error:?} should say {phrase:?}",
                b.name
            );
        }
        assert_eq!(row.consecutive_failures, 1, "{row:?}");
        assert_eq!(row.state, b.state, "{row:?}");
    }
    let good = find("good");
    assert_eq!(good.last_error, None, "{good:?}");
    assert_eq!(good.last_status, Some(200), "{good:?}");
    assert_eq!(good.consecutive_failures, 0);

    let stories = db.stories().await;
    for old in &before {
        assert!(
            stories
                .iter()
                .any(|s| s.canonical_url == old.canonical_url && s.body == old.body),
            "a story stored before was lost or changed: {old:?}"
        );
    }
    assert_eq!(
        stories.iter().filter(|s| s.source == "good").count(),
        3,
        "the good source stored its new story beside the bad ones"
    );
    for b in bad {
        assert!(
            stories.iter().all(|s| s.source != b.name),
            "{} stored a story",
            b.name
        );
    }
    for request in site.requests_to("/good/feed") {
        assert_eq!(
            request
                .headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok()),
            Some(USER_AGENT)
        );
    }
    Survived {
        config,
        elapsed,
        sources,
        stories,
    }
}

// --- 1. Bodies that are not feeds ----------------------------------------------------------

async fn malformed_truncated_html_empty_and_mistyped_feeds_each_fail_alone(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let malformed = rss(&item(&base, "x", "Mismatched", "text").replace("</title>", "</titel>"));
    let full = good_feed(&base, 3);
    let truncated = &full[..full.len() / 2];
    let html = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\
                <body><form><p>Please log in to continue.</p></form></body></html>";
    let json = r#"{"version": "https://jsonfeed.org/version/1.1", "title": 42,
                   "items": [{"id": 7, "title": ["not", "a", "string"]}]}"#;
    for (path, body, content_type) in [
        ("/malformed", malformed.as_str(), "application/rss+xml"),
        ("/truncated", truncated, "application/rss+xml"),
        ("/html", html, "application/rss+xml"),
        ("/empty", "", "application/rss+xml"),
        ("/json", json, "application/feed+json"),
    ] {
        site.put(path, Resource::ok(content_type, body));
    }
    let bad = [
        bad(
            "malformed",
            site.url("/malformed"),
            &["malformed XML at line"],
        ),
        bad(
            "truncated",
            site.url("/truncated"),
            &["malformed XML at line"],
        ),
        bad("html-page", site.url("/html"), &["not a feed", "HTML page"]),
        bad("empty", site.url("/empty"), &["empty body"]),
        bad("json-types", site.url("/json"), &["invalid JSON feed"]),
    ];
    survive(&db, &site, FAST, &bad, "").await;
    db.cleanup().await;
}
both_backends!(malformed_truncated_html_empty_and_mistyped_feeds_each_fail_alone);

// --- 2. Entity bombs and external entities -------------------------------------------------

/// A feed whose DOCTYPE is `doctype` and whose item mentions `reference`.
fn feed_with_doctype(base: &str, doctype: &str, reference: &str) -> String {
    rss(&item(
        base,
        "entity",
        &format!("Entity {reference} here"),
        &format!("Body {reference} text"),
    ))
    .replacen("<rss version", &format!("{doctype}\n<rss version"), 1)
}

async fn entity_declarations_are_refused_and_nothing_is_expanded_or_fetched(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let evil_dtd = "<!ENTITY passwd SYSTEM \"file:///etc/passwd\">";
    site.put("/evil.dtd", Resource::ok("application/xml-dtd", evil_dtd));
    site.put("/inert.dtd", Resource::ok("application/xml-dtd", evil_dtd));

    let mut laughs = String::from("<!DOCTYPE rss [\n<!ENTITY lol0 \"lol\">\n");
    for n in 1..=9 {
        laughs += &format!(
            "<!ENTITY lol{n} \"{}\">\n",
            format!("&lol{};", n - 1).repeat(10)
        );
    }
    laughs += "]>";
    let xxe = "<!DOCTYPE rss [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>";
    let remote = format!(
        "<!DOCTYPE rss [<!ENTITY % remote SYSTEM \"{}\"> %remote;]>",
        site.url("/evil.dtd")
    );
    // An external subset alone declares nothing here; it must not be fetched either.
    let inert = format!("<!DOCTYPE rss SYSTEM \"{}\">", site.url("/inert.dtd"));
    for (path, doctype, reference) in [
        ("/laughs", laughs.as_str(), "&lol9;"),
        ("/xxe", xxe, "&xxe;"),
        ("/remote", remote.as_str(), "&passwd;"),
        ("/inert", inert.as_str(), "&passwd;"),
    ] {
        site.put(
            path,
            Resource::ok(
                "application/rss+xml",
                feed_with_doctype(&base, doctype, reference),
            ),
        );
    }
    let refused: &[&str] = &["declares XML entities", "refused"];
    let bad = [
        bad("billion-laughs", site.url("/laughs"), refused),
        bad("external-entity", site.url("/xxe"), refused),
        bad("parameter-entity", site.url("/remote"), refused),
    ];
    let started = Instant::now();
    let survived = survive(
        &db,
        &site,
        FAST,
        &bad,
        &source("inert-doctype", &site.url("/inert")),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "nothing was expanded: {:?}",
        started.elapsed()
    );
    assert!(site.requests_to("/evil.dtd").is_empty(), "no DTD fetched");
    assert!(site.requests_to("/inert.dtd").is_empty(), "no DTD fetched");

    // The plain DOCTYPE is fine: its story is stored, with the reference unexpanded.
    let inert = survived.source("inert-doctype");
    assert_eq!(inert.last_error, None, "{inert:?}");
    let inert_stories: Vec<&StoryInfo> = survived
        .stories
        .iter()
        .filter(|s| s.source == "inert-doctype")
        .collect();
    assert_eq!(inert_stories.len(), 1, "{:?}", survived.stories);

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let marker = passwd.lines().next().unwrap_or("root:x:0:0");
    for s in &survived.stories {
        for text in [
            Some(&s.body),
            s.title.as_ref(),
            s.summary.as_ref(),
            s.author.as_ref(),
            Some(&s.url),
        ]
        .into_iter()
        .flatten()
        {
            assert!(!text.contains(marker), "passwd leaked into {s:?}");
            assert!(!text.contains("root:x:0:0"), "passwd leaked into {s:?}");
            assert!(!text.contains("lollollol"), "an entity was expanded: {s:?}");
        }
    }
    db.cleanup().await;
}
both_backends!(entity_declarations_are_refused_and_nothing_is_expanded_or_fetched);

// --- 3. Bodies past the cap ------------------------------------------------------------

/// About 50 MB of zeros, gzipped to about 50 KB, compressed as it is generated.
fn gzip_bomb() -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..50 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

async fn a_100_mb_body_and_a_gzip_bomb_stop_at_the_body_cap(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let bomb = gzip_bomb();
    assert!(
        bomb.len() < 100_000,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    site.put(
        "/bomb",
        Resource::ok("application/rss+xml", bomb).with_header("content-encoding", "gzip"),
    );
    let hundred_mb = 100 * 1000 * 1000;
    let declared = RawServer::start(Misbehaviour::Huge {
        bytes: hundred_mb,
        declare_length: true,
    })
    .await;
    let streamed = RawServer::start(Misbehaviour::Huge {
        bytes: hundred_mb,
        declare_length: false,
    })
    .await;
    let cap: &[&str] = &["exceeds the 10485760-byte limit"];
    let bad = [
        bad("huge-declared", declared.url("/feed"), cap),
        bad("huge-streamed", streamed.url("/feed"), cap),
        bad("gzip-bomb", site.url("/bomb"), cap),
    ];
    survive(&db, &site, ROOMY, &bad, "").await;
    assert_eq!(declared.requests(), 1);
    assert_eq!(streamed.requests(), 1);
    db.cleanup().await;
}
both_backends!(a_100_mb_body_and_a_gzip_bomb_stop_at_the_body_cap);

// --- 4. Servers that are slow, silent, or break off ----------------------------------------

async fn slow_silent_broken_and_endless_servers_are_cut_off_by_the_timeouts(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let trickle = RawServer::start(Misbehaviour::OneByteASecond).await;
    let silent = RawServer::start(Misbehaviour::NeverAnswers).await;
    let broken = RawServer::start(Misbehaviour::ClosesMidBody).await;
    let endless = RawServer::start(Misbehaviour::EndlessChunks).await;
    let unaccepting = RawServer::unaccepting().await;
    let bad = [
        bad("one-byte-a-second", trickle.url("/feed"), &["timed out"]),
        bad("never-answers", silent.url("/feed"), &["timed out"]),
        bad(
            "closes-mid-body",
            broken.url("/feed"),
            &["connection failed", "body broke off"],
        ),
        bad("endless-chunks", endless.url("/feed"), &["timed out"]),
        bad(
            "never-accepts",
            unaccepting.url("/feed"),
            &["timed out", "connect"],
        ),
    ];
    let survived = survive(&db, &site, FAST, &bad, "").await;
    // `timeout = "2s"` bounds the run; without it the trickle would never end.
    assert!(
        survived.elapsed < Duration::from_secs(20),
        "the run took {:?}",
        survived.elapsed
    );
    for server in [&trickle, &silent, &broken, &endless] {
        assert_eq!(
            server.requests(),
            1,
            "one request each, no retry within a run"
        );
    }
    db.cleanup().await;
}
both_backends!(slow_silent_broken_and_endless_servers_are_cut_off_by_the_timeouts);

// --- 5. Redirects --------------------------------------------------------------------------

fn redirect(to: &str) -> Resource {
    Resource::status(302).with_header("location", to)
}

async fn redirect_loops_long_chains_and_other_schemes_are_refused(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    site.put("/loop/a", redirect("/loop/b"));
    site.put("/loop/b", redirect("/loop/a"));
    for n in 0..6 {
        site.put(&format!("/six/{n}"), redirect(&format!("/six/{}", n + 1)));
    }
    site.put(
        "/six/6",
        Resource::ok("application/rss+xml", good_feed(&base, 1)),
    );
    // Five hops is the limit, and allowed.
    for n in 0..5 {
        site.put(&format!("/five/{n}"), redirect(&format!("/five/{}", n + 1)));
    }
    site.put(
        "/five/5",
        Resource::ok(
            "application/rss+xml",
            rss(&item(
                &base,
                "hops",
                "Five hops away",
                "Reached after five redirects.",
            )),
        ),
    );
    site.put("/ftp", redirect("ftp://127.0.0.1/feed.xml"));
    let bad = [
        bad(
            "redirect-loop",
            site.url("/loop/a"),
            &["redirect refused", "redirect loop"],
        ),
        bad(
            "six-redirects",
            site.url("/six/0"),
            &["redirect refused", "more than 5 redirects"],
        ),
        bad(
            "ftp-redirect",
            site.url("/ftp"),
            &["redirect refused", "ftp"],
        ),
    ];
    let survived = survive(
        &db,
        &site,
        FAST,
        &bad,
        &source("five-hops", &site.url("/five/0")),
    )
    .await;
    assert!(
        site.requests_to("/six/6").is_empty(),
        "the 6th redirect was not followed"
    );
    assert_eq!(site.requests_to("/five/5").len(), 1);
    assert_eq!(survived.source("five-hops").last_error, None);
    assert!(
        survived
            .stories
            .iter()
            .any(|s| s.source == "five-hops" && s.title.as_deref() == Some("Five hops away"))
    );
    db.cleanup().await;
}
both_backends!(redirect_loops_long_chains_and_other_schemes_are_refused);

// --- 6. Charsets -------------------------------------------------------------------------

fn encode(text: &str, encoding: &'static encoding_rs::Encoding) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding.encode(text);
    assert!(!unmappable, "test text must fit {}", encoding.name());
    bytes.into_owned()
}

fn charset_feed(base: &str, declaration: &str, slug: &str, title: &str, text: &str) -> String {
    rss(&item(base, slug, title, text)).replacen(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        declaration,
        1,
    )
}

async fn feeds_in_legacy_charsets_are_stored_as_the_right_text(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let french = "Les propriétaires de cafés à Montréal craignent les nouveaux tarifs douaniers. \
                  « C’est déjà vu », déclare une gérante élevée à Québec ; les prix grimperont \
                  dès l’été, et même les crêpes coûteront plus cher.";
    let spanish = "El señor Müller visitó la pequeña panadería del pueblo. Según él, la crème \
                   brûlée de la señora Núñez es única: «¡qué maravilla!», exclamó al salir.";
    let cases: [(&str, &str, Vec<u8>, &str); 5] = [
        (
            "gb2312",
            "海关总署公布新一轮关税调整方案",
            encode(
                &charset_feed(
                    &base,
                    "<?xml version=\"1.0\" encoding=\"GB2312\"?>",
                    "gb",
                    "海关总署公布新一轮关税调整方案",
                    "海关总署今天公布了新一轮关税调整方案，涉及钢铁和电子产品。",
                ),
                encoding_rs::GBK,
            ),
            "application/rss+xml",
        ),
        (
            "big5",
            "立法會三讀通過修訂條例草案",
            encode(
                &charset_feed(
                    &base,
                    "<?xml version=\"1.0\"?>",
                    "big5",
                    "立法會三讀通過修訂條例草案",
                    "立法會今日三讀通過修訂條例草案，議員就細節辯論了六個小時。",
                ),
                encoding_rs::BIG5,
            ),
            "application/rss+xml; charset=Big5",
        ),
        (
            "cp1252-as-utf8",
            "Café owners brace for “new tariffs” — déjà vu",
            encode(
                &charset_feed(
                    &base,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                    "cafe",
                    "Café owners brace for “new tariffs” — déjà vu",
                    french,
                ),
                encoding_rs::WINDOWS_1252,
            ),
            "application/rss+xml; charset=utf-8",
        ),
        (
            "cp1252-unlabelled",
            "Señor Müller’s naïve crème brûlée tour",
            encode(
                &charset_feed(
                    &base,
                    "<?xml version=\"1.0\"?>",
                    "senor",
                    "Señor Müller’s naïve crème brûlée tour",
                    spanish,
                ),
                encoding_rs::WINDOWS_1252,
            ),
            "application/rss+xml",
        ),
        (
            "utf16-bom",
            "Ελληνικά, русский и 中文 в одном заголовке",
            {
                let text = charset_feed(
                    &base,
                    "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
                    "utf16",
                    "Ελληνικά, русский и 中文 в одном заголовке",
                    "Текст статьи на нескольких языках.",
                );
                let mut bytes = vec![0xFF, 0xFE];
                bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
                bytes
            },
            // The byte-order mark wins over a wrong header.
            "application/rss+xml; charset=ISO-8859-1",
        ),
    ];
    let mut config = head(&db, FAST);
    for (name, _, body, content_type) in &cases {
        site.put(
            &format!("/{name}"),
            Resource::ok(content_type, body.clone()),
        );
        config += &source(name, &site.url(&format!("/{name}")));
    }
    let config = TestConfig::write(&config);
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stories = db.stories().await;
    let sources = db.sources().await;
    for (name, title, _, _) in &cases {
        let story = stories
            .iter()
            .find(|s| s.source == *name)
            .unwrap_or_else(|| panic!("{name}: no story; {sources:?}"));
        assert_eq!(story.title.as_deref(), Some(*title), "{name}");
        assert!(!story.body.contains('\u{FFFD}'), "{name}: {:?}", story.body);
    }
    let cafe = stories
        .iter()
        .find(|s| s.source == "cp1252-as-utf8")
        .unwrap();
    assert!(cafe.body.contains("déjà vu"), "{:?}", cafe.body);
    db.cleanup().await;
}
both_backends!(feeds_in_legacy_charsets_are_stored_as_the_right_text);

// --- 7. Dates ------------------------------------------------------------------------------

async fn missing_unreadable_and_future_dates_become_the_fetch_time(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let stated = (Utc::now() - chrono::Duration::hours(3)).to_rfc2822();
    let future = (Utc::now() + chrono::Duration::days(30)).to_rfc2822();
    let dated = |slug: &str, title: &str, date: Option<&str>| {
        format!(
            "<item><title>{title}</title><link>{base}/{slug}/</link>{}\
             <description>{title}, and more words so the stories differ.</description></item>\n",
            date.map(|d| format!("<pubDate>{d}</pubDate>"))
                .unwrap_or_default()
        )
    };
    let items = [
        dated("undated", "No date at all", None),
        dated(
            "unreadable",
            "A date nobody can read",
            Some("sometime last week"),
        ),
        dated("future", "A date a month ahead", Some(&future)),
        dated("stated", "A proper date", Some(&stated)),
    ]
    .concat();
    site.put("/dates", Resource::ok("application/rss+xml", rss(&items)));
    let config = TestConfig::write(&format!(
        "{}{}",
        head(&db, FAST),
        source("dates", &site.url("/dates"))
    ));
    let before = Utc::now();
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    let after = Utc::now();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stories = db.stories().await;
    assert_eq!(stories.len(), 4, "every story is kept: {stories:?}");
    let by_title = |title: &str| {
        stories
            .iter()
            .find(|s| s.title.as_deref() == Some(title))
            .unwrap_or_else(|| panic!("no story {title:?}"))
    };
    for title in [
        "No date at all",
        "A date nobody can read",
        "A date a month ahead",
    ] {
        let s = by_title(title);
        assert!(s.fetched_at >= before && s.fetched_at <= after, "{s:?}");
        assert_eq!(
            s.published_at,
            Some(s.fetched_at),
            "{title}: the fetch time stands in"
        );
    }
    let s = by_title("A proper date");
    let expected = chrono::DateTime::parse_from_rfc2822(&stated).unwrap();
    assert_eq!(s.published_at, Some(expected.with_timezone(&Utc)));
    db.cleanup().await;
}
both_backends!(missing_unreadable_and_future_dates_become_the_fetch_time);

// --- 8. Big feeds, big items, anonymous items -----------------------------------------------

/// Items in the big-feed test: 100,000 with `FEEDWATCH_SLOW_TESTS=1`, else 500.
/// Storing a story costs a few milliseconds in a debug build (one transaction, 50
/// band keys), so 100,000 take minutes: too long for every `cargo test`.
fn many_items() -> usize {
    if std::env::var("FEEDWATCH_SLOW_TESTS").is_ok_and(|v| v == "1") {
        100_000
    } else {
        500
    }
}

async fn a_feed_of_many_items_larger_than_the_default_cap_is_stored_whole(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let count = many_items();
    let date = (Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    // Past the default 10 MiB cap either way: 100,000 plain items, or 500 padded ones.
    let padding = " ".repeat((11_000_000 / count).saturating_sub(200));
    let mut items = String::with_capacity(count * (250 + padding.len()));
    for n in 0..count {
        items += &format!(
            "<item><title>Bulletin {n}</title><link>{base}/b/{n}</link><pubDate>{date}</pubDate>\
             <description>Council bulletin number {n} lists item {n} of the agenda.{padding}\
             </description></item>\n"
        );
    }
    let body = rss(&items);
    assert!(
        body.len() > 10 << 20,
        "larger than the default cap: {}",
        body.len()
    );
    site.put("/bulletins", Resource::ok("application/rss+xml", body));
    let survived = survive(
        &db,
        &site,
        &format!("{ROOMY}max_body_bytes = {}\n", 64 << 20),
        &[],
        &source("bulletins", &site.url("/bulletins")),
    )
    .await;
    assert_eq!(survived.source("bulletins").last_error, None);
    let bulletins = survived
        .stories
        .iter()
        .filter(|s| s.source == "bulletins")
        .count();
    assert_eq!(bulletins, count);
    db.cleanup().await;
}
both_backends!(a_feed_of_many_items_larger_than_the_default_cap_is_stored_whole);

async fn an_item_with_a_5_mb_body_is_stored_whole(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let paragraph = "<p>The finance committee reviewed the harbour budget line by line.</p>\n";
    let big = paragraph.repeat(5_000_000 / paragraph.len() + 1);
    let items = format!(
        "<item><title>The whole budget</title><link>{base}/budget/</link>\
         <content:encoded><![CDATA[{big}]]></content:encoded></item>\n"
    );
    site.put("/budget", Resource::ok("application/rss+xml", rss(&items)));
    let survived = survive(
        &db,
        &site,
        ROOMY,
        &[],
        &source("budget", &site.url("/budget")),
    )
    .await;
    assert_eq!(survived.source("budget").last_error, None);
    let budget = survived
        .stories
        .iter()
        .find(|s| s.title.as_deref() == Some("The whole budget"))
        .expect("the big item is stored");
    assert!(budget.body.len() > 4_500_000, "{}", budget.body.len());
    assert!(budget.body.starts_with("The finance committee reviewed"));
    db.cleanup().await;
}
both_backends!(an_item_with_a_5_mb_body_is_stored_whole);

async fn items_without_link_or_title_are_kept_and_alerted_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let items = "<item><guid isPermaLink=\"false\">notice-17</guid>\
         <description>Steel tariffs rise again, the ministry said in a short notice.</description></item>\n\
         <item><description>New import duties on timber and new tariffs on glass take effect \
         on Monday.</description></item>\n";
    // No ETag: the second run parses the feed again rather than getting a 304.
    let mut feed = Resource::ok("application/rss+xml", rss(items));
    feed.etag = None;
    site.put("/odd", feed);
    let receiver = Receiver::start().await;
    let config = TestConfig::write(&format!(
        "{}{}{TEST_TOPICS}\n[[webhooks]]\nname = \"desk\"\nurl = \"{}\"\n",
        head(&db, FAST),
        source("odd", &site.url("/odd")),
        receiver.url()
    ));
    let path = config.path.to_str().unwrap();
    let out = feedwatch(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stories = db.stories().await;
    assert_eq!(stories.len(), 2, "{stories:?}");
    for s in &stories {
        assert_eq!(s.title, None);
        assert!(s.url.starts_with("feedwatch:odd:"), "{s:?}");
        assert_eq!(s.canonical_url, s.url);
    }
    assert!(stories.iter().any(|s| s.url == "feedwatch:odd:notice-17"));
    assert_eq!(receiver.received().len(), 2, "both tariff notices alerted");

    let out = feedwatch(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(site.requests_to("/odd").len(), 2, "the feed was read again");
    let again = db.stories().await;
    assert_eq!(again.len(), 2, "recognised, not stored again: {again:?}");
    assert_eq!(receiver.received().len(), 2, "and not alerted again");
    db.cleanup().await;
}
both_backends!(items_without_link_or_title_are_kept_and_alerted_once);

// --- 9. Deep markup --------------------------------------------------------------------------

async fn content_nested_100000_levels_deep_is_stored_without_a_crash(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    let depth = 100_000;
    let html = format!(
        "{}Deep inside the markup, the harbour report survives.{}",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    );
    let items = format!(
        "<item><title>Deep markup</title><link>{base}/deep/</link>\
         <content:encoded><![CDATA[{html}]]></content:encoded></item>\n"
    );
    site.put("/deep", Resource::ok("application/rss+xml", rss(&items)));
    let survived = survive(&db, &site, ROOMY, &[], &source("deep", &site.url("/deep"))).await;
    assert_eq!(survived.source("deep").last_error, None);
    let story = survived
        .stories
        .iter()
        .find(|s| s.source == "deep")
        .expect("the deep story is stored");
    assert!(
        story.body.contains("the harbour report survives"),
        "{:?}",
        &story.body[..story.body.len().min(200)]
    );
    db.cleanup().await;
}
both_backends!(content_nested_100000_levels_deep_is_stored_without_a_crash);

// --- Statuses ------------------------------------------------------------------------------

async fn forbidden_blocks_a_source_and_gone_stops_polling_it(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put("/forbidden", Resource::status(403));
    site.put("/gone", Resource::status(410));
    let mut forbidden = bad("forbidden", site.url("/forbidden"), &["HTTP 403"]);
    forbidden.state = "blocked";
    let mut gone = bad("gone", site.url("/gone"), &["HTTP 410"]);
    gone.state = "gone";
    let survived = survive(&db, &site, FAST, &[forbidden, gone], "").await;
    assert_eq!(survived.source("forbidden").last_status, Some(403));
    assert_eq!(survived.source("gone").last_status, Some(410));

    // A blocked source is still polled (with backoff in the daemon); a gone one is not.
    let out = feedwatch(&["once", "--config", survived.path()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(site.requests_to("/forbidden").len(), 2);
    assert_eq!(
        site.requests_to("/gone").len(),
        1,
        "a gone source is not polled again"
    );
    let gone = db.source("gone").await;
    assert_eq!(
        (gone.state.as_str(), gone.consecutive_failures),
        ("gone", 1)
    );
    let forbidden = db.source("forbidden").await;
    assert_eq!(
        (forbidden.state.as_str(), forbidden.consecutive_failures),
        ("blocked", 2)
    );
    db.cleanup().await;
}
both_backends!(forbidden_blocks_a_source_and_gone_stops_polling_it);

async fn retry_after_pauses_the_whole_host_and_delays_the_next_poll(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let limited = Site::start().await;
    let elsewhere = Site::start().await;
    let base = limited.base();
    let mut config = head(&db, &format!("{FAST}per_host_concurrency = 1\n"));
    for n in 1..=4 {
        let slug = format!("notice-{n}");
        limited.put(
            &format!("/feed/{n}"),
            Resource::ok(
                "application/rss+xml",
                rss(&item(
                    &base,
                    &slug,
                    &format!("Notice number {n}"),
                    &format!("Notice {n} of the harbour authority, about berth {n}."),
                )),
            ),
        );
        config += &source(
            &format!("same-host-{n}"),
            &limited.url(&format!("/feed/{n}")),
        );
    }
    elsewhere.put(
        "/feed",
        Resource::ok("application/rss+xml", good_feed(&elsewhere.base(), 3)),
    );
    config += &source("elsewhere", &elsewhere.url("/feed"));
    let config = TestConfig::write(&config);
    let path = config.path.to_str().unwrap();
    let out = feedwatch(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stored = db.stories().await;
    assert_eq!(stored.len(), 7);
    let first_run = limited.requests().len();
    assert_eq!(first_run, 4);

    // Whichever source asks first is told to come back in two minutes.
    limited.answer_next(Resource::status(429).with_header("retry-after", "120"));
    let before = Utc::now();
    let out = feedwatch(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let requests = limited.requests();
    assert_eq!(
        requests.len() - first_run,
        1,
        "nothing more was asked of the host after its 429 (per_host_concurrency = 1): {:?}",
        requests
            .iter()
            .map(|r| (&r.path, r.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(requests.last().unwrap().status, 429);

    let sources = db.sources().await;
    let same_host: Vec<&SourceInfo> = sources
        .iter()
        .filter(|s| s.name.starts_with("same-host-"))
        .collect();
    let told: Vec<&&SourceInfo> = same_host
        .iter()
        .filter(|s| s.last_status == Some(429))
        .collect();
    assert_eq!(told.len(), 1, "{same_host:?}");
    assert_eq!(
        told[0].last_error.as_deref(),
        Some("HTTP 429 (Retry-After 120s)")
    );
    assert_eq!(
        told[0].consecutive_failures, 1,
        "the source told to wait failed"
    );
    for s in &same_host {
        let error = s.last_error.as_deref().unwrap_or_default();
        if s.last_status != Some(429) {
            // Never asked: not a failure of theirs, but the reason is on the row.
            assert!(
                error.starts_with("not polled")
                    && error.contains("asked to wait")
                    && error.contains("Retry-After"),
                "{s:?}"
            );
            assert_eq!(s.consecutive_failures, 0, "{s:?}");
            assert_eq!(
                s.last_status,
                Some(200),
                "the last real poll's status: {s:?}"
            );
        }
        let next = s.next_poll_at.expect("next_poll_at is set");
        assert!(
            next >= before + chrono::Duration::seconds(119),
            "{}: next poll at {next}, less than 120 s after {before}",
            s.name
        );
        assert_eq!(s.state, "active");
    }
    let elsewhere_row = sources.iter().find(|s| s.name == "elsewhere").unwrap();
    assert_eq!(elsewhere_row.last_error, None, "another host is not paused");
    assert!(elsewhere_row.next_poll_at.unwrap() > before);
    let stories = db.stories().await;
    assert_eq!(stories.len(), 7, "nothing stored before was lost");
    db.cleanup().await;
}
both_backends!(retry_after_pauses_the_whole_host_and_delays_the_next_poll);

async fn failing_and_recovered_are_each_sent_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    site.put(
        "/steady",
        Resource::ok("application/rss+xml", good_feed(&base, 3)),
    );
    site.put("/flaky", Resource::status(500));
    let receiver = Receiver::start().await;
    let config = TestConfig::write(&format!(
        "{}[defaults]\nfailing_after = 2\n{}{}\n[[webhooks]]\nname = \"ops\"\nurl = \"{}\"\n\
         secret = \"{SECRET}\"\nevents = [\"source.failing\", \"source.recovered\"]\n",
        head(&db, FAST),
        source("steady", &site.url("/steady")),
        source("flaky", &site.url("/flaky")),
        receiver.url()
    ));
    let path = config.path.to_str().unwrap();
    let mut sent = Vec::new();
    for run in 1..=5 {
        if run == 4 {
            site.put(
                "/flaky",
                Resource::ok(
                    "application/rss+xml",
                    rss(&item(&base, "back", "Back online", "The feed works again.")),
                ),
            );
        }
        let out = feedwatch(&["once", "--config", path]).await;
        assert_eq!(out.status.code(), Some(0), "run {run}: {}", describe(&out));
        sent.push(receiver.received().len());
    }
    // Failures after runs 1, 2, 3; healthy from run 4 on.
    assert_eq!(
        sent,
        [0, 1, 1, 2, 2],
        "one source.failing, then one source.recovered"
    );
    let received = receiver.received();
    for r in &received {
        assert!(verify_signature(r), "{r:?}");
    }
    let failing = received[0].json();
    assert_eq!(failing["type"], "source.failing");
    assert_eq!(failing["data"]["source"]["name"], "flaky");
    assert_eq!(failing["data"]["consecutive_failures"], 2);
    assert!(
        failing["data"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{failing}"
    );
    let recovered = received[1].json();
    assert_eq!(recovered["type"], "source.recovered");
    assert_eq!(recovered["data"]["source"]["name"], "flaky");
    let flaky = db.source("flaky").await;
    assert_eq!((flaky.consecutive_failures, flaky.last_error), (0, None));
    assert_eq!(
        db.stories().await.len(),
        4,
        "the steady feed's three stories and the recovered one"
    );
    db.cleanup().await;
}
both_backends!(failing_and_recovered_are_each_sent_once);

// --- TLS -----------------------------------------------------------------------------------

async fn https_uses_the_ring_provider_and_rejects_a_self_signed_certificate(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let tls = TlsServer::start(good_feed("https://127.0.0.1", 1)).await;
    let bad = [bad("self-signed", tls.url("/feed"), &["certificate"])];
    survive(&db, &site, FAST, &bad, "").await;
    // The handshake happened, with the one provider the binary installs (no
    // "CryptoProvider" panic), and the client refused the certificate.
    let handshakes = tls.handshakes();
    assert!(
        !handshakes.is_empty(),
        "no TLS handshake reached the server"
    );
    assert!(
        handshakes.iter().all(|h| h.is_err()),
        "the self-signed certificate was refused: {handshakes:?}"
    );
    db.cleanup().await;
}
both_backends!(https_uses_the_ring_provider_and_rejects_a_self_signed_certificate);

// --- The daemon among them -----------------------------------------------------------------

/// `feedwatch run` with a good feed among sources that break in most of the ways above,
/// all polled every second: the daemon keeps answering its health check, keeps polling
/// and alerting the good feed while every bad source records its error, and still stops
/// cleanly on SIGTERM.
async fn the_daemon_keeps_running_among_hostile_sources(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let base = site.base();
    site.put(
        "/good/feed",
        Resource::ok(
            "application/rss+xml",
            render_fixture("feeds/hkfp.xml", &base),
        ),
    );
    let malformed = rss(&item(&base, "x", "Mismatched", "text").replace("</title>", "</titel>"));
    site.put("/malformed", Resource::ok("application/rss+xml", malformed));
    site.put(
        "/bomb",
        Resource::ok("application/rss+xml", gzip_bomb()).with_header("content-encoding", "gzip"),
    );
    site.put("/loop/a", redirect("/loop/b"));
    site.put("/loop/b", redirect("/loop/a"));
    site.put(
        "/laughs",
        Resource::ok(
            "application/rss+xml",
            feed_with_doctype(
                &base,
                "<!DOCTYPE rss [<!ENTITY a \"ha\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>",
                "&b;",
            ),
        ),
    );
    let silent = RawServer::start(Misbehaviour::NeverAnswers).await;
    let endless = RawServer::start(Misbehaviour::EndlessChunks).await;
    let broken = RawServer::start(Misbehaviour::ClosesMidBody).await;
    let bad_sources = [
        ("malformed", site.url("/malformed")),
        ("gzip-bomb", site.url("/bomb")),
        ("redirect-loop", site.url("/loop/a")),
        ("entity-bomb", site.url("/laughs")),
        ("never-answers", silent.url("/feed")),
        ("endless-chunks", endless.url("/feed")),
        ("closes-mid-body", broken.url("/feed")),
    ];
    let receiver = Receiver::start().await;
    let admin = free_port();
    let mut text = format!(
        "{}\n[admin]\nlisten = \"{admin}\"\n{TEST_TOPICS}\n\
         [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        head(&db, FAST),
        receiver.url()
    );
    for (name, url) in std::iter::once(("good", site.url("/good/feed"))).chain(bad_sources.clone())
    {
        text += &format!("{}interval = \"1s\"\n", source(name, &url));
    }
    let config = TestConfig::write(&text);
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .spawn()
        .expect("spawn feedwatch run");

    // The good feed's two matched stories are alerted.
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(received.iter().all(verify_signature));
    // Every bad source gets its error recorded. The database is read until then:
    // nothing announces a recorded poll from outside the process.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sources = db.sources().await;
        let pending: Vec<&str> = bad_sources
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| {
                sources
                    .iter()
                    .find(|s| s.name == *name)
                    .is_none_or(|s| s.last_error.is_none())
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no error recorded for {pending:?}: {sources:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still running, still healthy, still polling the good feed.
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    feedwatch::fetch::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = http
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let polled = site.requests_to("/good/feed").len();
    site.wait_for_requests("/good/feed", polled + 2, Duration::from_secs(20))
        .await;

    let exit = terminate(&mut child, Duration::from_secs(30)).await;
    assert_eq!(exit.code(), Some(0));

    let sources = db.sources().await;
    let good = sources.iter().find(|s| s.name == "good").unwrap();
    assert_eq!(good.last_error, None, "{good:?}");
    assert_eq!(good.consecutive_failures, 0);
    let stories = db.stories().await;
    assert_eq!(stories.len(), 3, "{stories:?}");
    assert!(stories.iter().all(|s| s.source == "good"));
    assert_eq!(receiver.received().len(), 2, "no alert was sent twice");
    db.cleanup().await;
}
both_backends!(the_daemon_keeps_running_among_hostile_sources);
