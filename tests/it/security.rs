//! The holes of issue 13, tried as an attacker would, on both backends with
//! real servers on loopback: a same-host article page that redirects to a host
//! it may not lead to, a public-looking name that resolves to 127.0.0.1, a
//! webhook URL (a credential) that must never be printed or stored, and
//! `Retry-After` values that used to overflow the clock and panic the poll.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use feedwatch::app::App;
use feedwatch::config::Config;
use feedwatch::fetch::Fetcher;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

fn redirect(to: &str) -> Resource {
    Resource::status(302).with_header("location", to)
}

/// An article page on the "internal" host, with text no public page has.
fn internal_page(kind: &str) -> Resource {
    Resource::ok(
        "text/html; charset=utf-8",
        format!(
            "<html><head><title>Internal {kind} memo</title></head><body><article>\
             <h1>Internal {kind} memo</h1>\
             <p>This internal memo about {kind} must never leave the private network. \
             It lists the credentials of the build servers and the payroll figures.</p>\
             <p>The second paragraph of the internal memo carries more private detail, \
             enough words for the extractor to take it for the body of an article.</p>\
             </article></body></html>"
        ),
    )
}

fn rss_item(link: &str, title: &str, description: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
         <item><title>{title}</title><link>{link}</link><guid>{link}</guid>\
         <pubDate>{date}</pubDate><description>{description}</description></item>\
         </channel></rss>",
        date = (Utc::now() - chrono::Duration::hours(1)).to_rfc2822()
    )
}

/// Three sources on `site` whose article pages (a listing link, a full-text
/// page, an excerpt page) are on `site` but redirect to `other`; `tag` keeps
/// the URLs of two rounds apart.
fn redirecting_sources(site: &Site, other: &Site, tag: &str, extra: &str) -> String {
    site.put(
        &format!("/listing-{tag}/"),
        Resource::ok(
            "text/html",
            format!(
                "<html><body><h2 class=\"entry-title\"><a href=\"/go/listing-{tag}\">A story</a></h2></body></html>"
            ),
        ),
    );
    site.put(
        &format!("/full-{tag}.xml"),
        Resource::ok(
            "application/rss+xml",
            rss_item(
                &site.url(&format!("/go/full-{tag}")),
                "Ferry timetable changes",
                "The ferry operator publishes a new winter timetable for the outlying islands.",
            ),
        ),
    );
    site.put(
        &format!("/excerpt-{tag}.xml"),
        Resource::ok(
            "application/rss+xml",
            rss_item(
                &site.url(&format!("/go/excerpt-{tag}")),
                "Library hours extended",
                "The central library will open until midnight [&#8230;]",
            ),
        ),
    );
    for kind in ["listing", "full", "excerpt"] {
        let internal = format!("/internal/{kind}-{tag}");
        site.put(
            &format!("/go/{kind}-{tag}"),
            redirect(&other.url(&internal)),
        );
        other.put(&internal, internal_page(kind));
    }
    format!(
        "\n[[sources]]\nname = \"listing-{tag}\"\nkind = \"html\"\nurl = \"{}\"\nlinks = \"h2.entry-title a\"\n{extra}\n\
         [[sources]]\nname = \"full-{tag}\"\nkind = \"feed\"\nurl = \"{}\"\nfull_text = true\n{extra}\n\
         [[sources]]\nname = \"excerpt-{tag}\"\nkind = \"feed\"\nurl = \"{}\"\n{extra}\n",
        site.url(&format!("/listing-{tag}/")),
        site.url(&format!("/full-{tag}.xml")),
        site.url(&format!("/excerpt-{tag}.xml")),
    )
}

async fn article_pages_redirecting_to_another_host_are_not_followed_unless_allowed(
    backend: Backend,
) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let other = Site::start().await;

    let refused = TestConfig::write(&format!(
        "{}{}",
        config_head(&db.url),
        redirecting_sources(&site, &other, "a", "")
    ));
    let out = feedwatch(&["once", "--config", refused.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        other.requests().is_empty(),
        "the other host saw no request: {:?}",
        other.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    for kind in ["listing", "full", "excerpt"] {
        assert_eq!(
            site.requests_to(&format!("/go/{kind}-a")).len(),
            1,
            "the same-host link of {kind} was asked for"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = format!("redirect refused: to {}", other.url("/internal/"));
    assert_eq!(
        stderr.matches(&why).count(),
        3,
        "each page's log line says why: {}",
        describe(&out)
    );
    assert!(stderr.contains("neither the source's host nor in its allow_hosts"));
    let stories = db.stories().await;
    assert!(
        stories.iter().all(|s| !s.body.contains("internal memo")),
        "nothing from the other host was stored: {stories:?}"
    );

    // The same pages, with the other host named in allow_hosts: followed.
    let allowed = TestConfig::write(&format!(
        "{}{}",
        config_head(&db.url),
        redirecting_sources(
            &site,
            &other,
            "b",
            &format!("allow_hosts = [\"{}\"]", other.addr)
        )
    ));
    let out = feedwatch(&["once", "--config", allowed.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for kind in ["listing", "full", "excerpt"] {
        assert_eq!(
            other.requests_to(&format!("/internal/{kind}-b")).len(),
            1,
            "allow_hosts lets the {kind} redirect through"
        );
    }
    let stories = db.stories().await;
    let followed: Vec<&str> = stories
        .iter()
        .filter(|s| s.body.contains("internal memo"))
        .map(|s| s.url.as_str())
        .collect();
    assert_eq!(followed.len(), 3, "{stories:?}");
    assert!(
        followed.iter().all(|u| u.contains("/internal/")),
        "{followed:?}"
    );
    db.cleanup().await;
}
both_backends!(article_pages_redirecting_to_another_host_are_not_followed_unless_allowed);

/// A resolver that answers every name with 127.0.0.1, as a rebound or
/// hostile DNS record would.
struct EverythingIsLoopback;

impl Resolve for EverythingIsLoopback {
    fn resolve(&self, _: Name) -> Resolving {
        Box::pin(async {
            Ok(Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0)))) as Addrs)
        })
    }
}

async fn run_once_resolving_to_loopback(text: &str) {
    let config = Config::from_toml(text, std::path::Path::new("test.toml"), |_| None).unwrap();
    let fetcher = Fetcher::with_resolver(&config.http, Arc::new(EverythingIsLoopback)).unwrap();
    let app = App::build_with_fetcher(config, fetcher).await.unwrap();
    app.run_once().await.unwrap();
    app.store().close().await;
}

async fn a_public_name_resolving_to_loopback_is_refused_unless_private_networks_are_allowed(
    backend: Backend,
) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let feed = |slug: &str| {
        Resource::ok(
            "application/rss+xml",
            rss_item(
                &format!("https://example.org/{slug}/"),
                &format!("Harbour notice {slug}"),
                &format!("The harbour authority published notice {slug} about berth works."),
            ),
        )
    };
    site.put("/named.xml", feed("named"));
    site.put("/literal.xml", feed("literal"));
    let sources = format!(
        "\n[[sources]]\nname = \"named\"\nkind = \"feed\"\nurl = \"http://news.example.test:{port}/named.xml\"\n\
         [[sources]]\nname = \"literal\"\nkind = \"feed\"\nurl = \"{}\"\n",
        site.url("/literal.xml"),
        port = site.addr.port(),
    );
    run_once_resolving_to_loopback(&format!("{}{sources}", config_head(&db.url))).await;
    assert!(
        site.requests_to("/named.xml").is_empty(),
        "no connection was made for the name that resolves to loopback"
    );
    let named = db.source("named").await;
    let error = named.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("refused to connect to 127.0.0.1")
            && error.contains("news.example.test")
            && error.contains("allow_private_networks"),
        "{named:?}"
    );
    assert_eq!(named.consecutive_failures, 1, "{named:?}");
    let literal = db.source("literal").await;
    assert_eq!(
        (literal.last_error.as_deref(), literal.last_status),
        (None, Some(200)),
        "a source configured as http://127.0.0.1:PORT keeps working"
    );

    let head = config_head(&db.url).replace("[http]\n", "[http]\nallow_private_networks = true\n");
    run_once_resolving_to_loopback(&format!("{head}{sources}")).await;
    assert_eq!(site.requests_to("/named.xml").len(), 1);
    let named = db.source("named").await;
    assert_eq!(
        (named.last_error.as_deref(), named.last_status),
        (None, Some(200)),
        "{named:?}"
    );
    db.cleanup().await;
}
both_backends!(a_public_name_resolving_to_loopback_is_refused_unless_private_networks_are_allowed);

/// The secret part of the test's Slack-style webhook URL.
const TOKEN: &str = "tok3nSECRETxyz";

/// Runs the binary with every log level on (trace, so debug and info too) and returns everything it printed.
async fn run_verbose(args: &[&str]) -> (std::process::Output, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        command(args).env("RUST_LOG", "trace").output(),
    )
    .await
    .expect("feedwatch finished")
    .expect("feedwatch ran");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Every text column of `deliveries` and `sources`, read with plain SQL.
async fn stored_texts(db: &TestDb) -> Vec<String> {
    let deliveries = "SELECT COALESCE(last_error, '') || ' ' || payload || ' ' || webhook || ' ' || event_key FROM deliveries";
    let sources = "SELECT COALESCE(last_error, '') || ' ' || url FROM sources";
    let mut texts: Vec<String> = Vec::new();
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            for sql in [deliveries, sources] {
                texts.extend(
                    sqlx::query_scalar::<_, String>(sql)
                        .fetch_all(&pool)
                        .await
                        .unwrap(),
                );
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            for sql in [deliveries, sources] {
                texts.extend(
                    sqlx::query_scalar::<_, String>(sql)
                        .fetch_all(&pool)
                        .await
                        .unwrap(),
                );
            }
            pool.close().await;
        }
    }
    texts
}

async fn a_slack_webhook_url_is_never_printed_logged_or_stored(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed",
        Resource::ok(
            "application/rss+xml",
            rss_item(
                "https://example.org/news/steel/",
                "Steel tariffs raised again",
                "Washington raised tariffs on imported steel, and Beijing promised a response.",
            ),
        ),
    );
    // Nothing listens on this port until the second delivery attempt.
    let addr = free_port();
    let hook = format!("http://{addr}/services/T0FEEDW/B0SECRET/{TOKEN}");
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"news\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"slack\"\nurl = \"{hook}\"\nformat = \"slack\"\nsecret = \"{SECRET}\"\n",
        config_head(&db.url),
        site.url("/feed"),
    ));
    let path = config.path.to_str().unwrap();
    let mut printed = Vec::new();

    let (out, text) = run_verbose(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text.contains("DEBUG") && text.contains("TRACE"),
        "every log level was on: {text}"
    );
    printed.push(text);
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let rows = store.list_deliveries(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connection"),
        "the refused connection is recorded: {:?}",
        rows[0]
    );

    // Now the receiver is up, and answers 500.
    let receiver = Receiver::start_scripted_on(addr, vec![500]).await;
    let id = rows[0].id.to_string();
    let (out, text) = run_verbose(&["deliveries", "--config", path, "retry", &id]).await;
    assert!(out.status.success(), "{}", describe(&out));
    printed.push(text);
    let (out, text) = run_verbose(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    printed.push(text);
    assert_eq!(
        receiver.received().len(),
        1,
        "the second attempt reached the receiver"
    );
    let rows = store.list_deliveries(None, 10).await.unwrap();
    assert_eq!(rows[0].attempts, 1, "`retry` started the count again");
    assert!(
        rows[0].last_error.as_deref().unwrap_or("").contains("500"),
        "{:?}",
        rows[0]
    );
    store.close().await;

    for args in [
        &["deliveries", "--config", path, "list"][..],
        &["deliveries", "--config", path, "list", "--json"][..],
        &["check-config", "--config", path][..],
    ] {
        let (out, text) = run_verbose(args).await;
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        printed.push(text);
    }
    let check = printed.last().unwrap();
    assert!(
        check.contains(&format!("http://{addr}/…/[redacted:")),
        "check-config shows the webhook redacted: {check}"
    );
    for text in &printed {
        let signing_key = SECRET.trim_start_matches("whsec_");
        for secret in [TOKEN, "B0SECRET", "T0FEEDW", signing_key] {
            assert!(!text.contains(secret), "{secret} was printed:\n{text}");
        }
    }
    for text in stored_texts(&db).await {
        assert!(!text.contains(TOKEN), "{TOKEN} was stored: {text}");
    }
    db.cleanup().await;
}
both_backends!(a_slack_webhook_url_is_never_printed_logged_or_stored);

async fn absurd_retry_after_values_fail_the_poll_without_a_panic(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let cases = [
        ("too-many", 429, "10000000000000"),
        ("unavailable", 503, "10000000000000"),
        ("year-9999", 503, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ];
    // One site each: a Retry-After pauses its whole host for up to backoff_max.
    let mut sites = Vec::new();
    let mut sources = String::new();
    for (name, status, retry_after) in cases {
        let site = Site::start().await;
        site.put(
            "/feed",
            Resource::status(status).with_header("retry-after", retry_after),
        );
        sources += &format!(
            "\n[[sources]]\nname = \"{name}\"\nkind = \"feed\"\nurl = \"{}\"\n",
            site.url("/feed")
        );
        sites.push(site);
    }
    let good = Site::start().await;
    good.put(
        "/feed",
        Resource::ok(
            "application/rss+xml",
            rss_item(
                "https://example.org/ok/",
                "Tram depot reopens",
                "Engineers finished the depot upgrade two weeks early.",
            ),
        ),
    );
    sources += &format!(
        "\n[[sources]]\nname = \"good\"\nkind = \"feed\"\nurl = \"{}\"\n",
        good.url("/feed")
    );
    let head = config_head(&db.url).replace("[http]\n", "[http]\nbackoff_max = \"1h\"\n");
    let config = TestConfig::write(&format!("{head}{sources}"));
    let before = Utc::now();
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    let after = Utc::now();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        describe(&out)
    );
    for (name, status, _) in cases {
        let row = db.source(name).await;
        assert_eq!(row.last_status, Some(i32::from(status)), "{row:?}");
        assert_eq!(
            row.consecutive_failures, 1,
            "the poll was recorded: {row:?}"
        );
        assert_eq!(
            row.last_error.as_deref(),
            Some(format!("HTTP {status} (Retry-After 3600s)").as_str()),
            "capped at backoff_max: {row:?}"
        );
        let next = row.next_poll_at.expect("next_poll_at is set");
        assert!(
            next <= after + chrono::Duration::hours(1),
            "{name}: polled again no later than backoff_max, not at {next}"
        );
        assert!(
            next >= before + chrono::Duration::minutes(59),
            "{name}: the wait was honoured up to the cap: {next}"
        );
    }
    assert_eq!(db.source("good").await.last_error, None);
    db.cleanup().await;
}
both_backends!(absurd_retry_after_values_fail_the_poll_without_a_panic);

async fn a_feed_redirecting_to_a_metadata_or_loopback_address_is_refused(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/to-metadata",
        redirect("http://169.254.169.254/latest/meta-data/"),
    );
    // `localhost` is a name: the system resolver answers with loopback, which the
    // source's URL (127.0.0.1) does not name, so the hop is refused.
    site.put(
        "/to-localhost",
        redirect(&format!("http://localhost:{}/internal", site.addr.port())),
    );
    site.put("/internal", internal_page("loopback"));
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"metadata\"\nkind = \"feed\"\nurl = \"{}\"\n\
         [[sources]]\nname = \"localhost\"\nkind = \"feed\"\nurl = \"{}\"\n",
        config_head(&db.url),
        site.url("/to-metadata"),
        site.url("/to-localhost"),
    ));
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "every source failed: {}",
        describe(&out)
    );
    assert!(site.requests_to("/internal").is_empty());
    for (name, addresses) in [
        ("metadata", &["169.254.169.254"][..]),
        ("localhost", &["127.0.0.1", "::1"][..]),
    ] {
        let row = db.source(name).await;
        let error = row.last_error.clone().unwrap_or_default();
        assert!(
            addresses
                .iter()
                .any(|a| error.contains(&format!("refused to connect to {a}"))),
            "{name}: {row:?}"
        );
        assert_eq!(row.consecutive_failures, 1, "{row:?}");
    }
    db.cleanup().await;
}
both_backends!(a_feed_redirecting_to_a_metadata_or_loopback_address_is_refused);
