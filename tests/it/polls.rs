//! A poll is one unit of work (DESIGN §1, §6), end to end through `feedwatch once` on
//! both backends: a story that comes to match a topic later — an update of the same
//! URL, or a near copy that adds a paragraph — is alerted once, and a copy or update
//! that adds no topic sends nothing; a listing with more links than one poll fetches
//! is stored whole by the next poll instead of being hidden behind a 304; a page that
//! failed is fetched again; and a poll whose transaction fails leaves nothing behind.

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

const FERRY: &str = include_str!("../fixtures/dedup/ferry_original.txt");
const FERRY_COPY: &str = include_str!("../fixtures/dedup/ferry_syndicated.txt");

const TARIFF_PARAGRAPH: &str = "The operator said new tariffs on imported marine diesel \
     would raise its costs from next month.";

fn html(paragraphs: &[String]) -> String {
    paragraphs
        .iter()
        .map(|p| format!("<p>{}</p>", p.replace('&', "&amp;").replace('<', "&lt;")))
        .collect()
}

/// An RSS feed of `(title, link, content HTML or none)` items; an item without content
/// has only an excerpt, so its page is fetched.
fn rss(items: &[(&str, &str, Option<String>)]) -> String {
    let published = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc2822();
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" \
         xmlns:content=\"http://purl.org/rss/1.0/modules/content/\"><channel>\
         <title>t</title><link>https://t.example/</link><description>d</description>\n",
    );
    for (title, link, content) in items {
        let body = match content {
            Some(html) => format!("<content:encoded><![CDATA[{html}]]></content:encoded>"),
            None => "<description>It began [&#8230;]</description>".to_string(),
        };
        xml.push_str(&format!(
            "<item><title>{title}</title><link>{link}</link><guid>{link}</guid>\
             <pubDate>{published}</pubDate>{body}</item>\n"
        ));
    }
    xml.push_str("</channel></rss>\n");
    xml
}

fn put_feed(site: &Site, path: &str, xml: String) {
    site.put(
        path,
        Resource::ok("application/rss+xml; charset=UTF-8", xml),
    );
}

fn config(db: &TestDb, sources: &[(&str, String)], receiver: &Receiver) -> TestConfig {
    let sources: String = sources
        .iter()
        .map(|(name, url)| {
            format!("[[sources]]\nname = \"{name}\"\nkind = \"feed\"\nurl = \"{url}\"\n\n")
        })
        .collect();
    TestConfig::write(&format!(
        "{head}\n{sources}{topics}\n[[webhooks]]\nname = \"newsroom\"\nurl = \"{hook}\"\nsecret = \"{SECRET}\"\n",
        head = config_head(&db.url),
        topics = TEST_TOPICS,
        hook = receiver.url(),
    ))
}

async fn once(config: &TestConfig) -> std::process::Output {
    feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await
}

async fn run_once(config: &TestConfig) {
    let out = once(config).await;
    assert!(out.status.success(), "{}", describe(&out));
}

/// The topic names of every alert received, in order.
fn alerted_topics(receiver: &Receiver) -> Vec<Vec<String>> {
    receiver
        .received()
        .iter()
        .map(|r| {
            r.json()["data"]["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

async fn an_update_that_comes_to_match_is_alerted_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let receiver = Receiver::start().await;
    let (title, mut paragraphs) = story(FERRY);
    let link = "https://harbourtimes.example/2026/12/04/ferry/";
    put_feed(
        &site,
        "/feed",
        rss(&[(&title, link, Some(html(&paragraphs)))]),
    );
    let config = config(&db, &[("harbourtimes", site.url("/feed"))], &receiver);

    run_once(&config).await;
    assert!(
        receiver.received().is_empty(),
        "the first text matches nothing"
    );

    // The outlet adds the tariffs news to the same article.
    paragraphs.push(TARIFF_PARAGRAPH.to_string());
    put_feed(
        &site,
        "/feed",
        rss(&[(&title, link, Some(html(&paragraphs)))]),
    );
    run_once(&config).await;
    assert_eq!(alerted_topics(&receiver), [["tariffs"]]);
    let alert = receiver.received()[0].json();
    assert_eq!(
        alert["data"]["story"]["canonical_url"],
        "https://harbourtimes.example/2026/12/04/ferry"
    );

    // A further edit that matches only what was alerted sends nothing.
    paragraphs.push("Fares will not change before the new year.".to_string());
    put_feed(
        &site,
        "/feed",
        rss(&[(&title, link, Some(html(&paragraphs)))]),
    );
    run_once(&config).await;
    assert_eq!(alerted_topics(&receiver).len(), 1);
    let rows = db.story_rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(
        rows[0]
            .body
            .as_deref()
            .unwrap_or("")
            .contains("Fares will not change")
    );
    db.cleanup().await;
}
both_backends!(an_update_that_comes_to_match_is_alerted_once);

async fn a_near_copy_that_adds_a_topic_is_alerted_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let receiver = Receiver::start().await;
    let (title, original) = story(FERRY);
    let (copy_title, mut copy) = story(FERRY_COPY);
    put_feed(
        &site,
        "/harbour",
        rss(&[(
            &title,
            "https://harbourtimes.example/ferry/",
            Some(html(&original)),
        )]),
    );
    // The wire copy adds a tariffs paragraph; a second outlet runs the copy again.
    copy.push(TARIFF_PARAGRAPH.to_string());
    put_feed(
        &site,
        "/wire",
        rss(&[(
            &copy_title,
            "https://pacificwire.example/ferry-fares",
            Some(html(&copy)),
        )]),
    );
    let config_a = config(&db, &[("harbour", site.url("/harbour"))], &receiver);
    run_once(&config_a).await;
    assert!(receiver.received().is_empty());

    let config_b = config(
        &db,
        &[
            ("harbour", site.url("/harbour")),
            ("wire", site.url("/wire")),
        ],
        &receiver,
    );
    run_once(&config_b).await;
    assert_eq!(
        alerted_topics(&receiver),
        [["tariffs"]],
        "the copy brought a topic its cluster had not been alerted of"
    );

    put_feed(
        &site,
        "/reprint",
        rss(&[(
            &copy_title,
            "https://reprints.example/ferry",
            Some(html(&copy)),
        )]),
    );
    let config_c = config(
        &db,
        &[
            ("harbour", site.url("/harbour")),
            ("wire", site.url("/wire")),
            ("reprint", site.url("/reprint")),
        ],
        &receiver,
    );
    run_once(&config_c).await;
    assert_eq!(
        alerted_topics(&receiver).len(),
        1,
        "a copy adding no new topic sends nothing"
    );
    let rows = db.story_rows().await;
    assert_eq!(rows.len(), 3);
    let first = rows[0].id;
    assert!(
        rows[1..].iter().all(|r| r.duplicate_of == Some(first)),
        "{rows:#?}"
    );
    db.cleanup().await;
}
both_backends!(a_near_copy_that_adds_a_topic_is_alerted_once);

async fn a_listing_longer_than_one_poll_is_stored_whole_by_the_next(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let receiver = Receiver::start().await;
    let mut listing = String::from("<html><body>");
    for i in 0..70 {
        listing.push_str(&format!(
            "<h2 class=\"entry-title\"><a href=\"/news/{i}/\">Story {i}</a></h2>"
        ));
        site.put(
            &format!("/news/{i}/"),
            Resource::ok(
                "text/html; charset=utf-8",
                format!(
                    "<html><head><title>Story {i}</title></head><body><article><h1>Story {i}</h1>\
                     <p>Harbour story number {i} of seventy, about ferries and piers and the \
                     people who wait for them on the {i}th morning.</p></article></body></html>"
                ),
            ),
        );
    }
    listing.push_str("</body></html>");
    site.put("/news/", Resource::ok("text/html; charset=utf-8", listing));
    let config = TestConfig::write(&format!(
        "{head}\n[[sources]]\nname = \"listing\"\nkind = \"html\"\nurl = \"{url}\"\n\
         links = \"h2.entry-title a\"\n{TEST_TOPICS}",
        head = config_head(&db.url),
        url = site.url("/news/"),
    ));
    run_once(&config).await;
    assert_eq!(db.story_rows().await.len(), 50, "one poll fetches 50 pages");
    run_once(&config).await;
    assert_eq!(
        site.requests_to("/news/").last().map(|r| r.status),
        Some(200),
        "the listing's validators waited for its last 20 links"
    );
    assert_eq!(
        db.story_rows().await.len(),
        70,
        "the rest, on the next poll"
    );
    run_once(&config).await;
    assert_eq!(
        site.requests_to("/news/").last().map(|r| r.status),
        Some(304),
        "once every link is handled, the listing is asked for conditionally"
    );
    assert_eq!(
        site.requests_to("/news/0/").len(),
        1,
        "pages are fetched once"
    );
    drop(receiver);
    db.cleanup().await;
}
both_backends!(a_listing_longer_than_one_poll_is_stored_whole_by_the_next);

async fn a_page_that_fails_once_is_fetched_and_matched_on_the_next_poll(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let receiver = Receiver::start().await;
    let link = site.url("/2026/12/tariffs/");
    put_feed(&site, "/feed", rss(&[("Steel duties", &link, None)]));
    site.put("/2026/12/tariffs/", Resource::status(503));
    let config = config(&db, &[("excerpts", site.url("/feed"))], &receiver);

    run_once(&config).await;
    assert!(
        db.story_rows().await.is_empty(),
        "not stored on its excerpt alone"
    );
    assert!(receiver.received().is_empty());

    site.put(
        "/2026/12/tariffs/",
        Resource::ok(
            "text/html; charset=utf-8",
            "<html><head><title>Steel duties</title></head><body><article>\
             <h1>Steel duties</h1><p>The ministry announced new tariffs on steel coil \
             imports, to take effect next month, after a review of dumping complaints.</p>\
             </article></body></html>",
        ),
    );
    run_once(&config).await;
    assert_eq!(
        site.requests_to("/feed").last().map(|r| r.status),
        Some(200),
        "the feed's validators waited for the page"
    );
    let rows = db.story_rows().await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]
            .body
            .as_deref()
            .unwrap_or("")
            .contains("dumping complaints"),
        "{rows:#?}"
    );
    assert_eq!(alerted_topics(&receiver), [["tariffs"]]);
    db.cleanup().await;
}
both_backends!(a_page_that_fails_once_is_fetched_and_matched_on_the_next_poll);

async fn a_poll_whose_write_fails_leaves_nothing_and_is_done_again(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let receiver = Receiver::start().await;
    let (title, paragraphs) = story(FERRY);
    let mut tariffs = paragraphs.clone();
    tariffs.push(TARIFF_PARAGRAPH.to_string());
    put_feed(
        &site,
        "/feed",
        rss(&[
            (
                "Tariffs on diesel",
                "https://h.example/a",
                Some(html(&tariffs)),
            ),
            (
                &format!("poison {title}"),
                "https://h.example/b",
                Some(html(&paragraphs)),
            ),
        ]),
    );
    let config = config(&db, &[("harbour", site.url("/feed"))], &receiver);
    // Migrate, then make the database refuse the second story of the poll.
    feedwatch::store::connect(&db.url, 1)
        .await
        .unwrap()
        .close()
        .await;
    db.execute(match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON stories WHEN NEW.title LIKE 'poison%' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        }
        Backend::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.title LIKE 'poison%' THEN RAISE EXCEPTION 'injected failure'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT ON stories FOR EACH ROW EXECUTE FUNCTION poison()"
        }
    })
    .await;

    let out = once(&config).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("injected failure"),
        "{}",
        describe(&out)
    );
    assert!(
        db.story_rows().await.is_empty(),
        "the first story went with the second"
    );
    let source = db.source("harbour").await;
    assert_eq!(source.consecutive_failures, 0, "{source:?}");
    assert_eq!(source.last_status, None, "no poll was recorded: {source:?}");
    assert_eq!(db.source_etag("harbour").await, None);
    assert!(receiver.received().is_empty());

    db.execute(match backend {
        Backend::Sqlite => "DROP TRIGGER poison",
        Backend::Postgres => "DROP TRIGGER poison ON stories",
    })
    .await;
    run_once(&config).await;
    assert_eq!(
        site.requests_to("/feed").last().map(|r| r.status),
        Some(200),
        "the whole poll again, not a 304"
    );
    assert_eq!(db.story_rows().await.len(), 2);
    assert_eq!(alerted_topics(&receiver), [["tariffs"]]);
    assert!(db.source_etag("harbour").await.is_some());
    db.cleanup().await;
}
both_backends!(a_poll_whose_write_fails_leaves_nothing_and_is_done_again);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_new_run_polls_the_sources_a_crashed_one_had_leased() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let site = Site::start().await;
    let receiver = Receiver::start().await;
    let (title, paragraphs) = story(FERRY);
    let first = (
        title.as_str(),
        "https://h.example/a",
        Some(html(&paragraphs)),
    );
    put_feed(&site, "/feed", rss(std::slice::from_ref(&first)));
    let config = config(&db, &[("harbour", site.url("/feed"))], &receiver);
    run_once(&config).await;
    // A run killed mid-poll leaves its lease behind, good for minutes.
    db.execute(
        "UPDATE sources SET lease_owner = 'crashed-1/7', \
         lease_until = '9999-12-31T00:00:00.000000Z'",
    )
    .await;
    put_feed(
        &site,
        "/feed",
        rss(&[
            first.clone(),
            ("Later", "https://h.example/b", Some(html(&paragraphs[..1]))),
        ]),
    );
    run_once(&config).await;
    assert_eq!(
        db.story_rows().await.len(),
        2,
        "one process owns a SQLite file: the crashed run's lease is released at start"
    );
    db.cleanup().await;
}
