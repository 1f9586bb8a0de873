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

/// RSS with one item per `(title, body)`, dated now.
fn feed(items: &[(&str, &str)]) -> Resource {
    let date = chrono::Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .enumerate()
        .map(|(i, (title, body))| {
            format!(
                "<item><title>{title}</title><link>https://example.org/reload/{i}/</link>\
                 <pubDate>{date}</pubDate><description>{body}</description></item>"
            )
        })
        .collect();
    Resource::ok(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>{items}</channel></rss>"
        ),
    )
}

/// Reads the daemon's log until a line contains `needle`, and returns that line.
async fn wait_for_log(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> String {
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read the daemon's log") {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the daemon's log ended before {needle:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the daemon's log within 30 s"))
}

async fn sighup_reloads_topics_and_keeps_them_when_the_new_file_is_bad(backend: Backend) {
    use tokio::io::AsyncBufReadExt;

    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put("/feed", feed(&[]));
    let receiver = Receiver::start().await;
    // Webhook `w` takes every topic; `only` filters on the one topic by name.
    let write_config = |topic: &str, query: &str| {
        format!(
            "{}\n[[sources]]\nname = \"news\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1s\"\n\
             [[topics]]\nname = \"{topic}\"\nquery = '{query}'\n\
             [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
             [[webhooks]]\nname = \"only\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntopics = [\"{topic}\"]\n",
            config_head(&db.url),
            site.url("/feed"),
            receiver.url(),
            receiver.url()
        )
    };
    let config = TestConfig::write(&write_config("tariffs", "tariff*"));
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn feedwatch run");
    let mut log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_log(&mut log, "feedwatch running").await;

    // The same source and webhook, the tariffs topic swapped for a lasers one.
    std::fs::write(&config.path, write_config("lasers", "laser* AND drone*")).unwrap();
    signal(&child, "-HUP");
    // The running `only` webhook keeps its tariffs filter until a restart, and says so.
    let line = wait_for_log(&mut log, "no longer has").await;
    assert!(line.contains("only") && line.contains("tariffs"), "{line}");
    let line = wait_for_log(&mut log, "SIGHUP").await;
    assert!(line.contains("topics reloaded"), "{line}");

    site.put(
        "/feed",
        feed(&[
            ("Steel tariffs rise again", "New tariffs on steel."),
            ("A laser downs drones", "The laser hit three drones."),
        ]),
    );
    let received = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert!(
        received[0].body.contains("\"lasers\""),
        "{}",
        received[0].body
    );

    // A file that does not parse: the daemon says so, keeps running and keeps the lasers topic.
    std::fs::write(&config.path, "[[topics]\nname = \"broken\"\n").unwrap();
    signal(&child, "-HUP");
    let line = wait_for_log(&mut log, "SIGHUP").await;
    assert!(line.contains("not reloaded"), "{line}");
    assert!(line.contains(config.path.to_str().unwrap()), "{line}");
    site.put(
        "/feed",
        feed(&[
            ("Steel tariffs rise again", "New tariffs on steel."),
            ("A laser downs drones", "The laser hit three drones."),
            ("Drones meet a laser", "Another laser stopped more drones."),
        ]),
    );
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        received[1].body.contains("\"lasers\""),
        "{}",
        received[1].body
    );

    // Keep reading the log so the daemon never blocks on a full pipe while it drains.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));
    drain.await.unwrap();

    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.stories, 3);
    assert_eq!(
        counts.matches, 2,
        "the tariffs story matched nothing after the reload"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(sighup_reloads_topics_and_keeps_them_when_the_new_file_is_bad);

async fn a_stage_that_dies_ends_the_daemon_non_zero(backend: Backend) {
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
    // No webhook: a notifier with nothing to deliver must not count as a dead stage.
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"hkfp\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}",
        config_head(&db.url),
        site.url("/hkfp/feed/"),
    ));
    // The test-only fault makes the writer panic on the first poll it receives.
    let run = command(&["run", "--config", config.path.to_str().unwrap()])
        .env("FEEDWATCH_TEST_FAULT", "writer-panic")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the daemon exits by itself")
        .expect("run feedwatch");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the pipeline stage panicked") && stderr.contains("test fault"),
        "{}",
        describe(&out)
    );
    db.cleanup().await;
}
both_backends!(a_stage_that_dies_ends_the_daemon_non_zero);

/// The `lease_owner` of the source `name`, read with plain SQL.
async fn lease_owner(db: &TestDb, name: &str) -> Option<String> {
    let sql = format!("SELECT lease_owner FROM sources WHERE name = '{name}'");
    db.texts(&sql).await.into_iter().next().flatten()
}

async fn a_daemon_killed_mid_poll_polls_those_sources_again_at_restart(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    // The server takes an hour to answer: a poll of it is in flight until the kill.
    let slow = |title: &str| {
        feed(&[(title, "New tariffs on steel.")]).with_delay(Duration::from_secs(3600))
    };
    site.put("/a", slow("Steel tariffs rise"));
    site.put("/b", slow("Copper tariffs rise"));
    let interval = Duration::from_secs(5);
    // A lease far longer than the test: only taking it back can explain a prompt re-poll.
    let daemon = |source: &str, timeout: &str| {
        format!(
            "{}\n[[sources]]\nname = \"{source}\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"5s\"\n",
            config_head_with(&db.url, "lease = \"10m\"")
                .replace("\ntimeout = \"5s\"", &format!("\ntimeout = \"{timeout}\"")),
            site.url(&format!("/{source}"))
        )
    };
    let config_a = TestConfig::write(&daemon("a", "5s"));
    let spawn = |config: &TestConfig| {
        command(&["run", "--config", config.path.to_str().unwrap()])
            .spawn()
            .expect("spawn feedwatch run")
    };
    // On Postgres a second daemon shares the database, with a config file of its own (so
    // a name of its own) and a poll in flight the whole time (its timeout is a minute).
    let config_b = TestConfig::write(&daemon("b", "60s"));
    let _b = if backend == Backend::Postgres {
        let b = spawn(&config_b);
        site.wait_for_requests("/b", 1, Duration::from_secs(30))
            .await;
        Some(b)
    } else {
        None
    };
    let mut a = spawn(&config_a);
    site.wait_for_requests("/a", 1, Duration::from_secs(30))
        .await;
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let held = lease_owner(&db, "a").await;
    assert!(held.is_some(), "the killed poll's lease is still held");
    let b_held = lease_owner(&db, "b").await;

    let restarted = std::time::Instant::now();
    let _a = spawn(&config_a);
    site.wait_for_requests("/a", 2, interval).await;
    eprintln!(
        "{backend:?}: the killed poll's source was polled again {:.2} s after the restart (interval {interval:?}, lease 10 min)",
        restarted.elapsed().as_secs_f64()
    );
    if backend == Backend::Postgres {
        let (a_owner, b_owner) = (held.unwrap(), b_held.expect("b's poll is in flight"));
        let instance = |owner: &str| owner.split_once('/').unwrap().0.to_string();
        assert_ne!(
            instance(&a_owner),
            instance(&b_owner),
            "two daemons on one host with their own config files have their own names"
        );
        assert_eq!(
            lease_owner(&db, "b").await.as_deref(),
            Some(b_owner.as_str()),
            "the restarted daemon took back its own lease only"
        );
    }
    db.cleanup().await;
}
both_backends!(a_daemon_killed_mid_poll_polls_those_sources_again_at_restart);

async fn readyz_says_not_ready_while_a_stage_is_stuck(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed",
        feed(&[("Steel tariffs rise", "New tariffs on steel.")]),
    );
    let admin = free_port();
    let config = TestConfig::write(&format!(
        "{}\n[admin]\nlisten = \"{admin}\"\n\
         [[sources]]\nname = \"news\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1s\"\n",
        config_head_with(&db.url, "stall_after = \"2s\"\nlease = \"3s\""),
        site.url("/feed"),
    ));
    // The test-only fault makes the writer hang on the first poll it receives.
    let _child = command(&["run", "--config", config.path.to_str().unwrap()])
        .env("FEEDWATCH_TEST_FAULT", "writer-stall")
        .spawn()
        .expect("spawn feedwatch run");
    feedwatch::fetch::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let resp = http
                .get(format!("http://{admin}{path}"))
                .send()
                .await
                .ok()?;
            Some((
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ))
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some((503, body)) = get("/readyz").await {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never said not ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("stuck") && body.contains("writer"), "{body}");
    assert_eq!(
        get("/healthz").await.map(|r| r.0),
        Some(200),
        "the process itself is up"
    );
    // Leases are no longer renewed: the stuck poll's lease lapses (3 s) and the source
    // is claimed again under another owner, which renewing would have prevented.
    let stuck_owner = lease_owner(&db, "news")
        .await
        .expect("the stuck poll's lease");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lease_owner(&db, "news").await.as_deref() == Some(stuck_owner.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck daemon kept renewing its lease"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    db.cleanup().await;
}
both_backends!(readyz_says_not_ready_while_a_stage_is_stuck);
