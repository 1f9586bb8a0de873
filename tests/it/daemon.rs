//! `feedwatch run` as a user runs it: a long-lived process that polls, alerts,
//! and on SIGTERM stops polling, drains and exits 0 with nothing half-written.

use std::time::Duration;

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

async fn run_polls_alerts_and_exits_cleanly_on_sigterm(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/hkfp/feed/",
        Resource::ok(
            "application/rss+xml",
            render_fixture("feeds/hkfp.xml", &site.base()),
        ),
    );
    let receiver = Receiver::start().await;
    let admin = free_port();
    let config = TestConfig::write(&format!(
        "{}\n[admin]\nlisten = \"{admin}\"\n\
         [[sources]]\nname = \"hkfp\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1s\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        config_head(&db.url),
        site.url("/hkfp/feed/"),
        receiver.url()
    ));
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .spawn()
        .expect("spawn feedwatch run");

    // Two matched stories in the feed: the daemon polls and alerts both.
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(received.iter().all(verify_signature));
    // It keeps polling on its interval (conditionally).
    site.wait_for_requests("/hkfp/feed/", 2, Duration::from_secs(10))
        .await;

    // The admin listener reports health, readiness and what the daemon did.
    feedwatch::fetch::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| http.get(format!("http://{admin}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("feedwatch_polls_total"), "{metrics}");
    assert!(metrics.contains("feedwatch_deliveries_total"), "{metrics}");
    assert!(metrics.contains("outcome=\"new\""), "{metrics}");

    // Within the 10 s grace period.
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));

    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.stories, 3);
    assert_eq!(counts.matches, 2);
    assert_eq!(
        counts.deliveries_delivered, 2,
        "every stored match was delivered"
    );
    assert_eq!(counts.deliveries_pending, 0);
    assert_eq!(receiver.received().len(), 2, "no alert was sent twice");
    store.close().await;
    db.cleanup().await;
}
both_backends!(run_polls_alerts_and_exits_cleanly_on_sigterm);
