//! Webhook delivery through the outbox: retries keep the webhook-id, final
//! failures go dead (and can be re-driven), a dead receiver loses nothing, and
//! stories older than `max_age` are stored but not sent.

use std::time::Duration;

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

/// Distinct stories, so that dedup does not fold them into one.
const BODIES: [&str; 3] = [
    "Washington raised tariffs on Chinese steel again, and Beijing promised a measured response.",
    "Brussels will impose provisional tariffs on imported solar glass after an anti-dumping probe.",
    "Seoul and Tokyo agreed to cut tariffs on each other's machine tools from next spring.",
];

fn feed_with_ages(hours: &[i64]) -> String {
    let items: String = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let date = (chrono::Utc::now() - chrono::Duration::hours(*h)).to_rfc2822();
            format!(
                "<item><title>Steel tariffs story {i}</title><link>https://example.org/news/{i}/</link>\
                 <pubDate>{date}</pubDate><description>{}</description></item>",
                BODIES[i % BODIES.len()]
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>{items}</channel></rss>"
    )
}

fn config(db: &TestDb, site: &Site, hook_url: &str, extra: &str) -> TestConfig {
    TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"news\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1s\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"w\"\nurl = \"{hook_url}\"\nsecret = \"{SECRET}\"\n{extra}\n",
        config_head(&db.url),
        site.url("/feed"),
    ))
}

async fn failed_deliveries_are_retried_with_the_same_webhook_id(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed",
        Resource::ok("application/rss+xml", feed_with_ages(&[1])),
    );
    let receiver = Receiver::start_scripted(vec![500, 429]).await;
    let config = config(&db, &site, &receiver.url(), "");
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .spawn()
        .unwrap();
    let received = receiver.wait_for(3, Duration::from_secs(30)).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one delivery, retried: {ids:?}"
    );
    assert!(received.iter().all(verify_signature));
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let rows = store.list_deliveries(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "delivered");
    assert_eq!(rows[0].attempts, 3);
    store.close().await;
    db.cleanup().await;
}
both_backends!(failed_deliveries_are_retried_with_the_same_webhook_id);

async fn a_4xx_or_redirect_is_dead_at_once_and_can_be_retried(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed",
        Resource::ok("application/rss+xml", feed_with_ages(&[1, 2])),
    );
    let receiver = Receiver::start_scripted(vec![400, 301]).await;
    let config = config(&db, &site, &receiver.url(), "");
    let path = config.path.to_str().unwrap();
    let out = feedwatch(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(receiver.received().len(), 2);

    let out = feedwatch(&["deliveries", "--config", path, "list", "--status", "dead"]).await;
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listing.matches("story.matched").count(), 2, "{listing}");
    assert!(
        listing.contains("HTTP 400") && listing.contains("HTTP 301"),
        "{listing}"
    );

    let out = feedwatch(&["deliveries", "--config", path, "retry", "--dead"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 deliveries due again"),
        "{}",
        describe(&out)
    );
    let out = feedwatch(&["once", "--config", path]).await;
    assert!(out.status.success());
    assert_eq!(
        receiver.received().len(),
        4,
        "both re-driven deliveries were sent"
    );
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    assert_eq!(store.counts().await.unwrap().deliveries_delivered, 2);
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_4xx_or_redirect_is_dead_at_once_and_can_be_retried);

async fn a_dead_receiver_loses_no_alert(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed",
        Resource::ok("application/rss+xml", feed_with_ages(&[1])),
    );
    // Nothing listens on port 9 (discard) on loopback.
    let config = config(&db, &site, "http://127.0.0.1:9/hook", "");
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "a dead receiver is not a failed run: {}",
        describe(&out)
    );
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let rows = store.list_deliveries(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "pending", "kept for the next run");
    assert_eq!(rows[0].attempts, 1);
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connection"),
        "{:?}",
        rows[0]
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_dead_receiver_loses_no_alert);

async fn stories_older_than_max_age_are_stored_but_not_sent(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed",
        Resource::ok("application/rss+xml", feed_with_ages(&[1, 24 * 3, 24 * 30])),
    );
    let receiver = Receiver::start().await;
    let config = config(&db, &site, &receiver.url(), "max_age = \"2d\"");
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        receiver.received().len(),
        1,
        "only the story from an hour ago is sent"
    );
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.stories, counts.matches),
        (3, 3),
        "old stories are stored and matched"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(stories_older_than_max_age_are_stored_but_not_sent);
