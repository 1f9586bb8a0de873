//! One alert per story, however many URLs, edits and outlets carry it (DESIGN §3), end to
//! end with the real binary on both backends. One feed carries a tariff story under its
//! own URL, under a tracked `http://www.…?utm_…` variant of it, and under a second section
//! path with the identical body; a second feed carries an edited wire copy of it (new
//! headline, a paragraph dropped, light copy-edits). `feedwatch once` must send exactly
//! one alert and store the copies with `duplicate_of` pointing at the first one; a later
//! edit of the story is an update (no alert), and markup or whitespace changes in the
//! feed are nothing at all.

use feedwatch::dedup::Fingerprint;

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

const ORIGINAL: &str = include_str!("../fixtures/dedup/tariff_original.txt");
const WIRE_COPY: &str = include_str!("../fixtures/dedup/tariff_wire_copy.txt");
const UNRELATED: &str = include_str!("../fixtures/dedup/cable_car_unrelated.txt");

const ORIGINAL_URL: &str = "https://harbourtimes.example/2026/11/27/indonesia-steel-coil-tariffs/";
const TRACKED_URL: &str = "http://www.harbourtimes.example/2026/11/27/indonesia-steel-coil-tariffs/\
     ?utm_source=rss&utm_medium=rss&utm_campaign=indonesia-steel-coil-tariffs";
const SECTION_URL: &str = "https://harbourtimes.example/business/trade/steel-coil-duties/";
const UNRELATED_URL: &str = "https://harbourtimes.example/2026/11/27/ngong-ping-cable-car/";
const WIRE_URL: &str = "https://pacificwire.example/asia/economy/indonesia-steel-duties-27pc";

const ORIGINAL_ID: &str = "https://harbourtimes.example/2026/11/27/indonesia-steel-coil-tariffs";
const SECTION_ID: &str = "https://harbourtimes.example/business/trade/steel-coil-duties";
const UNRELATED_ID: &str = "https://harbourtimes.example/2026/11/27/ngong-ping-cable-car";

/// The original story as the outlet later corrected it: a new start date and a
/// paragraph saying so.
fn corrected(paragraphs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = paragraphs
        .iter()
        .map(|p| p.replace("take effect on December 15", "take effect on January 2"))
        .collect();
    out.push(
        "The ministry later moved the start of the duties to January 2, saying importers \
         needed time to clear cargo that was already at sea when the decision was announced."
            .to_string(),
    );
    out
}

/// How a feed marks up the same text.
#[derive(Clone, Copy)]
enum Markup {
    /// One `<p>` per paragraph, one paragraph per line.
    Plain,
    /// The same words with classes, inline emphasis, a link, a non-breaking space and the
    /// lines re-wrapped: what a CMS template change or a re-save does to a feed.
    Restyled,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn body_html(paragraphs: &[String], markup: Markup) -> String {
    match markup {
        Markup::Plain => paragraphs
            .iter()
            .map(|p| format!("<p>{}</p>", escape(p)))
            .collect::<Vec<_>>()
            .join("\n"),
        Markup::Restyled => paragraphs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut words: Vec<String> = escape(p).split(' ').map(str::to_string).collect();
                if i == 0 {
                    words[0] = format!("<strong>{}</strong>", words[0]);
                }
                if let Some(w) = words.iter_mut().find(|w| w.as_str() == "ministry") {
                    *w = "<a href=\"https://harbourtimes.example/tag/trade/\">ministry</a>".into();
                }
                // Re-wrap every eight words with an indented line break, and glue one pair
                // of words with a non-breaking space.
                let mut text = String::new();
                for (j, word) in words.iter().enumerate() {
                    if j > 0 {
                        text.push_str(match j {
                            3 => "&#160;",
                            j if j % 8 == 0 => "\n\t\t  ",
                            _ => " ",
                        });
                    }
                    text.push_str(word);
                }
                format!("<p class=\"wp-block-paragraph has-text-align-left\">\n\t\t{text}  </p>")
            })
            .collect::<Vec<_>>()
            .join("\n\n<!-- /wp:paragraph -->\n"),
    }
}

/// One RSS item.
struct Item<'a> {
    title: &'a str,
    link: &'a str,
    guid: &'a str,
    hours_ago: i64,
    content: String,
}

fn rss(channel: &str, items: &[Item<'_>]) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <rss version=\"2.0\" xmlns:content=\"http://purl.org/rss/1.0/modules/content/\">\n\
         <channel>\n<title>{channel}</title>\n<link>https://{channel}.example/</link>\n\
         <description>Test feed</description>\n"
    );
    for item in items {
        let published = chrono::Utc::now() - chrono::Duration::hours(item.hours_ago);
        xml.push_str(&format!(
            "<item>\n<title>{}</title>\n<link>{}</link>\n\
             <guid isPermaLink=\"false\">{}</guid>\n<pubDate>{}</pubDate>\n\
             <content:encoded><![CDATA[{}]]></content:encoded>\n</item>\n",
            escape(item.title),
            escape(item.link),
            escape(item.guid),
            published.to_rfc2822(),
            item.content,
        ));
    }
    xml.push_str("</channel>\n</rss>\n");
    xml
}

/// The Harbour Times feed: the story under its URL and a tracked variant of it (both with
/// `story_paragraphs`), the original text filed again under a section path, and an
/// unrelated story.
fn harbour_feed(story_paragraphs: &[String], markup: Markup) -> String {
    let (title, original) = story(ORIGINAL);
    let (other_title, other) = story(UNRELATED);
    let current = body_html(story_paragraphs, markup);
    rss(
        "harbourtimes",
        &[
            Item {
                title: &title,
                link: ORIGINAL_URL,
                guid: "https://harbourtimes.example/?p=90211",
                hours_ago: 3,
                content: current.clone(),
            },
            Item {
                title: &title,
                link: TRACKED_URL,
                guid: "https://harbourtimes.example/?p=90211&utm=1",
                hours_ago: 3,
                content: current,
            },
            Item {
                title: "Explainer: what Indonesia's new steel duties mean for buyers",
                link: SECTION_URL,
                guid: "https://harbourtimes.example/?p=90214",
                hours_ago: 2,
                content: body_html(&original, markup),
            },
            Item {
                title: &other_title,
                link: UNRELATED_URL,
                guid: "https://harbourtimes.example/?p=90198",
                hours_ago: 5,
                content: body_html(&other, markup),
            },
        ],
    )
}

fn wire_feed() -> String {
    let (title, paragraphs) = story(WIRE_COPY);
    rss(
        "pacificwire",
        &[Item {
            title: &title,
            link: WIRE_URL,
            guid: "pacificwire-2026-11-27-0412",
            hours_ago: 1,
            content: body_html(&paragraphs, Markup::Plain),
        }],
    )
}

fn put_feed(site: &Site, path: &str, xml: String) {
    site.put(
        path,
        Resource::ok("application/rss+xml; charset=UTF-8", xml),
    );
}

fn config(db: &TestDb, site: &Site, receiver: &Receiver) -> TestConfig {
    TestConfig::write(&format!(
        r#"{head}
[[sources]]
name = "harbourtimes"
kind = "feed"
url = "{harbour}"

[[sources]]
name = "pacificwire"
kind = "feed"
url = "{wire}"
{topics}
[[webhooks]]
name = "newsroom"
url = "{hook}"
secret = "{SECRET}"
"#,
        head = config_head(&db.url),
        harbour = site.url("/harbourtimes/feed/"),
        wire = site.url("/pacificwire/feed/"),
        topics = TEST_TOPICS,
        hook = receiver.url(),
    ))
}

fn row<'r>(rows: &'r [StoryRow], canonical_url: &str) -> &'r StoryRow {
    rows.iter()
        .find(|r| r.canonical_url == canonical_url)
        .unwrap_or_else(|| panic!("no story {canonical_url} in {rows:#?}"))
}

async fn run_once(config: &TestConfig) {
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
}

fn last_status(site: &Site, path: &str) -> Option<u16> {
    site.requests_to(path).last().map(|r| r.status)
}

async fn one_story_under_three_urls_and_a_wire_edit_alerts_once_and_updates_quietly(
    backend: Backend,
) {
    // The fixtures are what the scenario says they are.
    let (original_title, original) = story(ORIGINAL);
    let (wire_title, wire) = story(WIRE_COPY);
    let (original_fp, wire_fp) = (
        Fingerprint::of(&original_title, &original.join("\n\n")),
        Fingerprint::of(&wire_title, &wire.join("\n\n")),
    );
    assert_ne!(original_title, wire_title);
    assert!(
        wire.len() < original.len(),
        "the wire copy drops a paragraph"
    );
    assert!(original_fp.is_near_duplicate(&wire_fp));
    assert!(
        wire_fp
            .band_keys()
            .iter()
            .any(|k| original_fp.band_keys().contains(k)),
        "the wire copy is found through the band index"
    );

    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    put_feed(
        &site,
        "/harbourtimes/feed/",
        harbour_feed(&original, Markup::Plain),
    );
    put_feed(&site, "/pacificwire/feed/", wire_feed());
    let receiver = Receiver::start().await;
    let config = config(&db, &site, &receiver);

    // 1. Four entries carry one story: one alert, three stored copies.
    run_once(&config).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "one alert for the story: {received:#?}");
    assert!(verify_signature(&received[0]));
    let alert = received[0].json();
    assert_eq!(alert["data"]["topics"][0]["name"], "tariffs");

    let rows = db.story_rows().await;
    assert_eq!(
        rows.len(),
        4,
        "the tracked variant is the same story, not a row: {rows:#?}"
    );
    assert!(
        rows.iter()
            .all(|r| !r.canonical_url.contains("utm_") && !r.canonical_url.contains("www.")),
        "{rows:#?}"
    );
    let copies = [
        row(&rows, ORIGINAL_ID),
        row(&rows, SECTION_ID),
        row(&rows, WIRE_URL),
    ];
    let first = copies.iter().map(|r| r.id).min().unwrap();
    for copy in copies {
        let expected = (copy.id != first).then_some(first);
        assert_eq!(copy.duplicate_of, expected, "{copy:#?}");
    }
    assert_eq!(row(&rows, UNRELATED_ID).duplicate_of, None);
    assert_eq!(
        alert["data"]["story"]["id"].as_i64(),
        Some(first),
        "the alert is for the first copy stored"
    );
    assert_eq!(
        row(&rows, SECTION_ID).content_hash,
        row(&rows, ORIGINAL_ID).content_hash
    );
    assert_ne!(
        row(&rows, WIRE_URL).content_hash,
        row(&rows, ORIGINAL_ID).content_hash
    );

    let mut matched: Vec<i64> = db
        .match_rows()
        .await
        .into_iter()
        .filter(|(_, topic)| topic == "tariffs")
        .map(|(id, _)| id)
        .collect();
    matched.sort();
    let mut copy_ids: Vec<i64> = copies.iter().map(|r| r.id).collect();
    copy_ids.sort();
    assert_eq!(matched, copy_ids, "every copy's match is recorded");

    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts.deliveries_delivered,
            counts.deliveries_pending,
            counts.deliveries_dead
        ),
        (1, 0, 0)
    );

    // 2. The outlet corrects the story (same URL, new text): an update, not an alert.
    let corrected = corrected(&original);
    put_feed(
        &site,
        "/harbourtimes/feed/",
        harbour_feed(&corrected, Markup::Plain),
    );
    run_once(&config).await;
    assert_eq!(last_status(&site, "/harbourtimes/feed/"), Some(200));
    assert_eq!(receiver.received().len(), 1, "an update sends no alert");
    assert_eq!(store.counts().await.unwrap(), counts);

    let updated = db.story_rows().await;
    let (before, after) = (row(&rows, ORIGINAL_ID), row(&updated, ORIGINAL_ID));
    assert_eq!(after.id, before.id);
    assert!(
        after.updated_at > before.updated_at,
        "{before:#?} → {after:#?}"
    );
    assert_ne!(after.content_hash, before.content_hash);
    assert!(
        after
            .body
            .as_deref()
            .unwrap()
            .contains("take effect on January 2")
    );
    assert_eq!(after.duplicate_of, before.duplicate_of);
    for id in [SECTION_ID, UNRELATED_ID, WIRE_URL] {
        assert_eq!(row(&updated, id), row(&rows, id), "untouched");
    }
    assert!(
        db.match_rows()
            .await
            .contains(&(after.id, "tariffs".to_string())),
        "the updated story's match is kept"
    );

    // 3. The feed re-renders the same text with other markup and whitespace: nothing changes.
    put_feed(
        &site,
        "/harbourtimes/feed/",
        harbour_feed(&corrected, Markup::Restyled),
    );
    run_once(&config).await;
    assert_eq!(
        last_status(&site, "/harbourtimes/feed/"),
        Some(200),
        "the restyled feed was read"
    );
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(store.counts().await.unwrap(), counts);
    assert_eq!(
        db.story_rows().await,
        updated,
        "markup and whitespace are not updates"
    );

    store.close().await;
    db.cleanup().await;
}
both_backends!(one_story_under_three_urls_and_a_wire_edit_alerts_once_and_updates_quietly);
