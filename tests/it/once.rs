//! `feedwatch once` end to end on both backends: two WordPress-style feeds on a
//! local server, a local webhook receiver, and the real binary.

use std::time::Duration;

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

async fn serve_feeds(site: &Site) {
    let base = site.base();
    site.put(
        "/hkfp/feed/",
        Resource::ok(
            "application/rss+xml; charset=UTF-8",
            render_fixture("feeds/hkfp.xml", &base),
        ),
    );
    site.put(
        "/asiatimes/feed/",
        Resource::ok(
            "application/rss+xml; charset=UTF-8",
            render_fixture("feeds/asiatimes.xml", &base),
        ),
    );
}

fn two_feed_config(db: &TestDb, site: &Site, receiver: &Receiver) -> TestConfig {
    TestConfig::write(&format!(
        r#"{head}
[[sources]]
name = "hkfp"
kind = "feed"
url = "{hkfp}"

[[sources]]
name = "asiatimes"
kind = "feed"
url = "{at}"
{topics}
[[webhooks]]
name = "newsroom"
url = "{hook}"
secret = "{SECRET}"
"#,
        head = config_head(&db.url),
        hkfp = site.url("/hkfp/feed/"),
        at = site.url("/asiatimes/feed/"),
        topics = TEST_TOPICS,
        hook = receiver.url(),
    ))
}

async fn once_stores_every_story_and_sends_one_signed_alert_per_match(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    serve_feeds(&site).await;
    let receiver = Receiver::start().await;
    let config = two_feed_config(&db, &site, &receiver);
    let path = config.path.to_str().unwrap();

    let out = feedwatch(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));

    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.sources, 2);
    assert_eq!(counts.stories, 6, "every entry of both feeds is stored");
    assert_eq!(
        counts.matches, 4,
        "tariffs ×2, EDA, lasers; the feed-in tariff story is no match"
    );
    assert_eq!(counts.deliveries_delivered, 4);

    let received = receiver.received();
    assert_eq!(received.len(), 4, "one POST per matched story");
    let mut topics = Vec::new();
    for r in &received {
        assert!(verify_signature(r), "signature verifies: {r:?}");
        assert_eq!(r.header("content-type"), "application/json");
        let body = r.json();
        assert_eq!(body["type"], "story.matched");
        let story = &body["data"]["story"];
        assert!(story["id"].as_i64().is_some());
        assert!(
            story["canonical_url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        assert!(!story["canonical_url"].as_str().unwrap().contains("utm_"));
        for t in body["data"]["topics"].as_array().unwrap() {
            topics.push(t["name"].as_str().unwrap().to_string());
            assert!(t["snippet"].as_str().unwrap().contains('«'), "{t}");
            assert!(!t["terms"].as_array().unwrap().is_empty());
        }
        // The Asia Times footer is not part of what was stored or sent.
        assert!(!r.body.contains("appeared first on"), "{}", r.body);
    }
    topics.sort();
    assert_eq!(
        topics,
        [
            "counter-drone-lasers",
            "eda-export-controls",
            "tariffs",
            "tariffs"
        ]
    );
    let ids: std::collections::HashSet<_> = received
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(ids.len(), 4, "each delivery has its own webhook-id");

    // A second run finds nothing new: conditional GETs, no new rows, no new POSTs.
    let out = feedwatch(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(store.counts().await.unwrap(), counts);
    assert_eq!(receiver.received().len(), 4, "nothing is sent twice");
    let conditional = site
        .requests_to("/hkfp/feed/")
        .last()
        .map(|r| r.headers.contains_key("if-none-match"));
    assert_eq!(conditional, Some(true), "the second poll is conditional");
    store.close().await;
    db.cleanup().await;
}
both_backends!(once_stores_every_story_and_sends_one_signed_alert_per_match);

async fn once_exits_1_when_every_source_fails_and_0_when_some_do(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    serve_feeds(&site).await;
    site.put(
        "/broken/feed/",
        Resource::ok("application/rss+xml", "<rss><channel><item>"),
    );
    let receiver = Receiver::start().await;
    let only_broken = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"broken\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}",
        config_head(&db.url),
        site.url("/broken/feed/")
    ));
    let out = feedwatch(&["once", "--config", only_broken.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    let mixed = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"broken\"\nkind = \"feed\"\nurl = \"{}\"\n\
         [[sources]]\nname = \"gone\"\nkind = \"feed\"\nurl = \"http://127.0.0.1:9/feed\"\n\
         [[sources]]\nname = \"hkfp\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"w\"\nurl = \"{}\"\n",
        config_head(&db.url),
        site.url("/broken/feed/"),
        site.url("/hkfp/feed/"),
        receiver.url()
    ));
    let out = feedwatch(&["once", "--config", mixed.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    receiver.wait_for(2, Duration::from_secs(5)).await;
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    assert_eq!(
        store.counts().await.unwrap().stories,
        3,
        "the good source's stories are stored"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(once_exits_1_when_every_source_fails_and_0_when_some_do);
