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

    // The store's gauges agree with the database, once both deliveries are recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = get("/metrics").await.unwrap().text().await.unwrap();
        if metrics.contains("feedwatch_outbox_deliveries{status=\"delivered\"} 2\n") {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox gauge never showed 2 delivered: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metrics.contains("feedwatch_outbox_deliveries{status=\"pending\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("feedwatch_sources{state=\"active\"} 1\n"),
        "{metrics}"
    );
    // Latencies are histograms (buckets for the dashboard's quantiles), not summaries.
    for histogram in [
        "feedwatch_fetch_duration_seconds",
        "feedwatch_delivery_latency_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {histogram} histogram")),
            "{metrics}"
        );
    }
    // Every metric the Grafana dashboard queries is one the daemon serves.
    for name in dashboard_metrics() {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "contrib/grafana/feedwatch.json queries {name}, which /metrics does not serve:\n{metrics}"
        );
    }

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

/// The metric names the dashboard's queries use (a histogram's `_bucket` series named
/// by the histogram).
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/feedwatch.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("feedwatch_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name.strip_suffix("_bucket").unwrap_or(&name).to_string());
            }
        }
    }
    assert!(names.len() >= 10, "the dashboard queries {names:?}");
    names
}

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

/// RSS with one item per `(slug, title, body)`, dated now.
fn feed_of(items: &[(&str, &str, &str)]) -> Resource {
    let date = chrono::Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .map(|(slug, title, body)| {
            format!(
                "<item><title>{title}</title><link>https://example.org/{slug}/</link>\
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

async fn sighup_applies_sources_topics_and_webhooks_at_once_and_a_broken_file_changes_nothing(
    backend: Backend,
) {
    use tokio::io::AsyncBufReadExt;

    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    for path in ["/alpha", "/beta", "/gamma"] {
        site.put(path, feed(&[]));
    }
    // `all` takes every topic; `picky` filters on topics by name.
    let (all, picky) = (Receiver::start().await, Receiver::start().await);
    let write_config = |sources: &[&str], picky_topics: &str, extra: &str| {
        let sources: String = sources
            .iter()
            .map(|name| {
                format!(
                    "[[sources]]\nname = \"{name}\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1s\"\n",
                    site.url(&format!("/{name}"))
                )
            })
            .collect();
        format!(
            "{}\n{sources}{TEST_TOPICS}{extra}\
             [[webhooks]]\nname = \"all\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
             [[webhooks]]\nname = \"picky\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntopics = [{picky_topics}]\n",
            config_head(&db.url),
            all.url(),
            picky.url()
        )
    };
    let config = TestConfig::write(&write_config(&["alpha"], "\"tariffs\"", ""));
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn feedwatch run");
    let mut log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_log(&mut log, "feedwatch running").await;
    site.wait_for_requests("/alpha", 1, Duration::from_secs(10))
        .await;

    // beta added, alpha removed, picky switched from tariffs to lasers; a restart-only
    // setting changed too.
    std::fs::write(
        &config.path,
        write_config(&["beta"], "\"counter-drone-lasers\"", "")
            .replace("max_connections = 2", "max_connections = 3"),
    )
    .unwrap();
    signal(&child, "-HUP");
    let line = wait_for_log(&mut log, "SIGHUP").await;
    assert!(line.contains("config reloaded"), "{line}");
    assert!(
        line.contains("[\"beta\"]") && line.contains("[\"alpha\"]"),
        "names what was added and removed: {line}"
    );
    let line = wait_for_log(&mut log, "SIGHUP").await;
    assert!(
        line.contains("database.max_connections") && line.contains("restart"),
        "{line}"
    );
    let alpha_polls = site.requests_to("/alpha").len();

    let stories = [
        (
            "tariffs",
            "Steel tariffs rise again",
            "New tariffs on steel.",
        ),
        (
            "laser",
            "A laser downs drones",
            "The laser hit three drones.",
        ),
    ];
    site.put(
        "/alpha",
        feed_of(&[("alpha-1", stories[0].1, stories[0].2)]),
    );
    site.put(
        "/beta",
        feed_of(&[
            ("beta-1", stories[0].1, stories[0].2),
            ("beta-2", stories[1].1, stories[1].2),
        ]),
    );
    // Both of beta's stories go to `all`; only the lasers one to `picky`.
    let got = picky.wait_for(1, Duration::from_secs(30)).await;
    assert!(
        got[0].body.contains("\"counter-drone-lasers\""),
        "{}",
        got[0].body
    );
    assert!(got[0].body.contains("beta-2"), "{}", got[0].body);
    all.wait_for(2, Duration::from_secs(30)).await;

    // A file that fails to load (a topic's query does not parse) changes nothing:
    // gamma is not added, picky keeps its lasers filter.
    std::fs::write(
        &config.path,
        write_config(
            &["beta", "gamma"],
            "\"tariffs\"",
            "[[topics]]\nname = \"broken\"\nquery = 'steel AND (iron OR'\n",
        ),
    )
    .unwrap();
    signal(&child, "-HUP");
    let line = wait_for_log(&mut log, "SIGHUP").await;
    assert!(line.contains("not reloaded, nothing changed"), "{line}");
    assert!(
        line.contains(config.path.to_str().unwrap()) && line.contains("broken"),
        "{line}"
    );
    site.put(
        "/beta",
        feed_of(&[
            ("beta-1", stories[0].1, stories[0].2),
            ("beta-2", stories[1].1, stories[1].2),
            (
                "beta-3",
                "Levies on steel widen",
                "The new levies cover steel pipes and tariffs on wire.",
            ),
            (
                "beta-4",
                "Drones meet a laser",
                "Another laser stopped more drones.",
            ),
        ]),
    );
    let got = picky.wait_for(2, Duration::from_secs(30)).await;
    assert!(got[1].body.contains("beta-4"), "{}", got[1].body);
    all.wait_for(4, Duration::from_secs(30)).await;

    let drain = tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));
    drain.await.unwrap();

    assert_eq!(
        picky.received().len(),
        2,
        "picky never took a tariffs story"
    );
    assert!(
        site.requests_to("/gamma").is_empty(),
        "the broken file's source was never polled"
    );
    assert!(
        site.requests_to("/alpha").len() <= alpha_polls + 1,
        "the removed source is not polled again (one poll may have been under way)"
    );
    let sources = db.sources().await;
    let state = |name: &str| {
        sources
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.state.clone())
    };
    assert_eq!(state("alpha").as_deref(), Some("disabled"));
    assert_eq!(state("beta").as_deref(), Some("active"));
    assert_eq!(state("gamma"), None);
    let stories = db.stories().await;
    assert!(
        stories.iter().all(|s| s.source == "beta"),
        "nothing of the removed source was stored: {stories:?}"
    );
    assert_eq!(stories.len(), 4);
    db.cleanup().await;
}
both_backends!(
    sighup_applies_sources_topics_and_webhooks_at_once_and_a_broken_file_changes_nothing
);

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
    let daemon = |sources: &[&str], timeout: &str| {
        let mut text = config_head_with(&db.url, "lease = \"10m\"")
            .replace("\ntimeout = \"5s\"", &format!("\ntimeout = \"{timeout}\""));
        for source in sources {
            text.push_str(&format!(
                "\n[[sources]]\nname = \"{source}\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"5s\"\n",
                site.url(&format!("/{source}"))
            ));
        }
        text
    };
    // Daemons sharing a database share their sources: a source missing from the file of
    // a daemon that starts is disabled and its lease taken back (as a reload does), so
    // on Postgres `a`'s file lists `b` too, which `b`'s daemon holds.
    let config_a = TestConfig::write(&daemon(
        if backend == Backend::Postgres {
            &["a", "b"]
        } else {
            &["a"]
        },
        "5s",
    ));
    let spawn = |config: &TestConfig| {
        command(&["run", "--config", config.path.to_str().unwrap()])
            .spawn()
            .expect("spawn feedwatch run")
    };
    // On Postgres a second daemon shares the database, with a config file of its own (so
    // a name of its own) and a poll in flight the whole time (its timeout is a minute).
    let config_b = TestConfig::write(&daemon(&["b"], "60s"));
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

/// A second daemon of the same instance on one database (the same config started twice
/// on one host) would take back the running daemon's leases at start, and both would
/// poll and alert: it is refused, naming the reason, and the lease stays put. On SQLite,
/// whose `once` releases every lease too, so is a `once` beside the daemon.
async fn a_second_process_of_one_instance_is_refused(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/a",
        feed(&[("Steel tariffs rise", "New tariffs on steel.")])
            .with_delay(Duration::from_secs(3600)),
    );
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"a\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"5s\"\n",
        // The poll stays in flight (and leased) for the whole test.
        config_head_with(&db.url, "lease = \"10m\"")
            .replace("\ntimeout = \"5s\"", "\ntimeout = \"60s\""),
        site.url("/a")
    ));
    let path = config.path.to_str().unwrap();
    let _first = command(&["run", "--config", path])
        .spawn()
        .expect("spawn feedwatch run");
    site.wait_for_requests("/a", 1, Duration::from_secs(30))
        .await;
    let held = lease_owner(&db, "a").await.expect("the poll holds a lease");

    let mut second = vec!["run"];
    if backend == Backend::Sqlite {
        second.push("once");
    }
    for command in second {
        let out = feedwatch(&[command, "--config", path]).await;
        assert_eq!(out.status.code(), Some(1), "{command}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = match backend {
            Backend::Sqlite => "another feedwatch `run` or `once` is using",
            Backend::Postgres => "another feedwatch with daemon.instance",
        };
        assert!(stderr.contains(expected), "{command}: {}", describe(&out));
    }
    assert_eq!(
        lease_owner(&db, "a").await.as_deref(),
        Some(held.as_str()),
        "the running daemon keeps its lease"
    );
    assert_eq!(
        site.requests_to("/a").len(),
        1,
        "the source was polled once"
    );
    db.cleanup().await;
}
both_backends!(a_second_process_of_one_instance_is_refused);

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

/// RSS with `n` distinct stories about tariffs, dated now: no two are duplicates or
/// near duplicates, so each makes a delivery of its own.
fn distinct_tariff_stories(n: usize) -> Resource {
    let date = chrono::Utc::now().to_rfc2822();
    let items: String = (0..n)
        .map(|i| {
            // Words of the story's own, so no two stories share their shingles.
            let sentence: Vec<String> = (0..30)
                .map(|k| blake3::hash(format!("{i}/{k}").as_bytes()).to_hex()[..8].to_string())
                .collect();
            format!(
                "<item><title>Tariffs bulletin {i}</title><link>https://example.org/drain/{i}/</link>\
                 <pubDate>{date}</pubDate><description>New tariffs, report {i}: {}.</description></item>",
                sentence.join(" ")
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

/// Runs `feedwatch run` with info logs piped; the log is read (and kept) by a task of
/// its own, so the daemon never blocks on a full pipe.
fn run_with_log(config: &TestConfig) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    use tokio::io::AsyncReadExt;
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn feedwatch run");
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    (child, log)
}

async fn sigterm_with_a_backlog_stops_claiming_and_hands_back_what_was_not_sent(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put("/feed", distinct_tariff_stories(60));
    let receiver = Receiver::start().await;
    // A slow receiver: each answer takes 1 s, and 4 requests go out at once. Claims
    // last 1 s, so the daemon renews its claim on the backlog every third of a second:
    // the hand-back must find the claim by its owner, not by an expiry renewals moved.
    receiver.set_delay(Duration::from_secs(1));
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"news\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"60s\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        config_head_with(&db.url, "lease = \"1s\""),
        site.url("/feed"),
        receiver.url()
    ));
    let (mut child, log) = run_with_log(&config);

    // The 60 deliveries are queued and the second wave of requests is out (so the
    // claim was renewed at least once, a second after it was made): stop now.
    receiver.wait_for(5, Duration::from_secs(30)).await;
    let asked = std::time::Instant::now();
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    let took = asked.elapsed();
    let log = log.await.unwrap();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} of a 10 s grace: the requests under way take 1 s\n{log}"
    );
    assert!(
        !log.contains("abandoning unfinished polls"),
        "no poll was running: {log}"
    );
    assert!(
        log.contains("released the claimed deliveries that were not sent"),
        "{log}"
    );

    // What was not sent is pending and due now, not locked behind a claim.
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let sent_before = receiver.webhook_ids().len();
    let rows = store.list_deliveries(None, 100).await.unwrap();
    assert_eq!(rows.len(), 60);
    let pending: Vec<_> = rows.iter().filter(|d| d.status == "pending").collect();
    assert!(
        pending.len() >= 40,
        "most of the backlog was left unsent: {} pending, {sent_before} sent",
        pending.len()
    );
    let now = chrono::Utc::now();
    assert!(
        pending.iter().all(|d| d.next_attempt_at <= now),
        "every unsent delivery is due at once: {:?}",
        pending
            .iter()
            .map(|d| d.next_attempt_at)
            .collect::<Vec<_>>()
    );
    assert!(
        pending.iter().all(|d| d.attempts == 0),
        "none of them was attempted"
    );
    // The notifier itself handed back every one of them (not only the release of the
    // instance's leases that follows it).
    let released = log
        .lines()
        .find(|l| l.contains("released the claimed deliveries that were not sent"))
        .and_then(|l| l.split("released=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(released, Some(pending.len()), "{log}");
    store.close().await;

    // The next start sends every one of them at once.
    receiver.set_delay(Duration::ZERO);
    let (mut child, log) = run_with_log(&config);
    receiver.wait_for_ids(60, Duration::from_secs(20)).await;
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    let log = log.await.unwrap();
    assert_eq!(exit.code(), Some(0), "{log}");
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.deliveries_delivered, counts.deliveries_pending),
        (60, 0),
        "{log}"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(sigterm_with_a_backlog_stops_claiming_and_hands_back_what_was_not_sent);

/// A config with one source, `stuck`, on a server that never answers (polls time out
/// after 5 s), and `grace` to drain.
fn stuck_source_config(
    db: &TestDb,
    server: &crate::support::raw::RawServer,
    grace: &str,
) -> TestConfig {
    TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"stuck\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}",
        config_head(&db.url).replace(
            "shutdown_grace = \"10s\"",
            &format!("shutdown_grace = \"{grace}\"")
        ),
        server.url("/feed"),
    ))
}

/// Waits until `server` has read a request (a poll is under way).
async fn wait_for_a_request(server: &crate::support::raw::RawServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source was never polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn work_outlasting_the_grace_is_abandoned_by_name_and_handed_back(backend: Backend) {
    use crate::support::raw::{Misbehaviour, RawServer};
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // `stuck` never answers (its poll times out after 5 s); `news` has one story for
    // a receiver that takes 1.8 s to answer (the delivery timeout is 2 s).
    let server = RawServer::start(Misbehaviour::NeverAnswers).await;
    let site = Site::start().await;
    site.put("/news", distinct_tariff_stories(1));
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(1800));
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"stuck\"\nkind = \"feed\"\nurl = \"{}\"\n\
         [[sources]]\nname = \"news\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        config_head(&db.url).replace("shutdown_grace = \"10s\"", "shutdown_grace = \"1s\""),
        server.url("/feed"),
        site.url("/news"),
        receiver.url(),
    ));
    let (mut child, log) = run_with_log(&config);
    wait_for_a_request(&server).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    let asked = std::time::Instant::now();
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    let took = asked.elapsed();
    let log = log.await.unwrap();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(
        took < Duration::from_secs(4),
        "the 1 s grace bounds the drain, not the 5 s poll: {took:?}\n{log}"
    );
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log: {log}"))
            .to_string()
    };
    let polls = line("abandoning unfinished polls");
    assert!(
        polls.contains("stuck") && !polls.contains("news"),
        "{polls}"
    );
    let delivery = line("abandoning the delivery under way");
    let id = receiver.received()[0].header("webhook-id").to_string();
    assert!(
        delivery.contains(&id) && delivery.contains("webhook=w"),
        "named by id and webhook: {delivery}"
    );
    assert!(
        !delivery.contains(&receiver.url()),
        "never the URL: {delivery}"
    );
    line("released the leases of polls not finished");

    // The abandoned delivery is due at once; the abandoned poll's source is not leased.
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let rows = store.list_deliveries(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "pending");
    assert!(
        rows[0].next_attempt_at <= chrono::Utc::now(),
        "{:?}",
        rows[0]
    );
    store.close().await;
    receiver.set_delay(Duration::ZERO);
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("left to it"),
        "{}",
        describe(&out)
    );
    assert_eq!(server.requests(), 2, "{}", describe(&out));
    assert_eq!(
        receiver.webhook_ids().len(),
        1,
        "the same delivery, sent again"
    );
    assert_eq!(receiver.received().len(), 2, "{}", describe(&out));
    db.cleanup().await;
}
both_backends!(work_outlasting_the_grace_is_abandoned_by_name_and_handed_back);

async fn a_second_signal_during_the_drain_exits_at_once(backend: Backend) {
    use crate::support::raw::{Misbehaviour, RawServer};
    use tokio::io::AsyncBufReadExt;
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = RawServer::start(Misbehaviour::NeverAnswers).await;
    let config = stuck_source_config(&db, &server, "30s");
    let mut child = command(&["run", "--config", config.path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn feedwatch run");
    let mut log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_a_request(&server).await;
    signal(&child, "-TERM");
    wait_for_log(&mut log, "shutting down").await;
    // The poll under way holds the drain for up to 5 s; a second signal cuts it short.
    let asked = std::time::Instant::now();
    signal(&child, "-INT");
    let line = wait_for_log(&mut log, "received again").await;
    assert!(
        line.contains("SIGINT") && line.contains("exiting at once"),
        "{line}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(exit.code(), Some(130), "128 + SIGINT");
    db.cleanup().await;
}
both_backends!(a_second_signal_during_the_drain_exits_at_once);

async fn sighup_follows_a_source_s_new_url_interval_and_enabled_at_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    for path in ["/moved-old", "/moved-new", "/slow", "/off"] {
        site.put(path, feed(&[]));
    }
    // Every source polled once an hour: after its first poll, only a reload brings it back.
    let write_config = |moved: &str, slow_interval: &str, off_enabled: bool| {
        format!(
            "{}\n[[sources]]\nname = \"moved\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1h\"\n\
             [[sources]]\nname = \"slow\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"{slow_interval}\"\n\
             [[sources]]\nname = \"off\"\nkind = \"feed\"\nurl = \"{}\"\ninterval = \"1s\"\nenabled = {off_enabled}\n\
             {TEST_TOPICS}",
            config_head(&db.url),
            site.url(moved),
            site.url("/slow"),
            site.url("/off"),
        )
    };
    let config = TestConfig::write(&write_config("/moved-old", "1h", true));
    let (mut child, log) = run_with_log(&config);
    for path in ["/moved-old", "/slow", "/off"] {
        site.wait_for_requests(path, 1, Duration::from_secs(30))
            .await;
    }
    // Each first poll is recorded (scheduled an hour out) before the reload.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db
        .sources()
        .await
        .iter()
        .any(|s| s.last_polled_at.is_none())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            db.sources().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&config.path, write_config("/moved-new", "1s", false)).unwrap();
    signal(&child, "-HUP");
    // The new URL is polled at once, and the source whose interval shrank to 1 s twice
    // more, where the old schedule would wait an hour.
    site.wait_for_requests("/moved-new", 1, Duration::from_secs(15))
        .await;
    site.wait_for_requests("/slow", 3, Duration::from_secs(15))
        .await;
    let off_polls = site.requests_to("/off").len();
    site.wait_for_requests("/slow", 5, Duration::from_secs(15))
        .await;
    assert!(
        site.requests_to("/off").len() <= off_polls + 1,
        "a disabled source is not polled (one poll may have been under way)"
    );
    assert_eq!(
        site.requests_to("/moved-old").len(),
        1,
        "the old URL is not polled again"
    );
    let exit = terminate(&mut child, Duration::from_secs(10)).await;
    let log = log.await.unwrap();
    assert_eq!(exit.code(), Some(0), "{log}");
    let changed = log
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        changed.contains("moved") && changed.contains("slow") && changed.contains("off"),
        "{changed}"
    );
    let off = db.source("off").await;
    assert_eq!(off.state, "disabled");
    db.cleanup().await;
}
both_backends!(sighup_follows_a_source_s_new_url_interval_and_enabled_at_once);
