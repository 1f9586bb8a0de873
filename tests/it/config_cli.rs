//! Bad configuration files: each gives a clear message naming the key at
//! fault and exit code 2, before anything is opened or fetched.

use crate::support::*;

async fn check(config: &str) -> String {
    let file = TestConfig::write(config);
    let out = feedwatch(&["check-config", "--config", file.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn an_unknown_key_is_named_with_its_line() {
    let err = check("[http]\ntimeout = \"5s\"\nretries = 3\n").await;
    assert!(
        err.contains("unknown field `retries`") && err.contains("line 3"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_duration_is_named() {
    let err = check("[defaults]\ninterval = \"every ten minutes\"\n").await;
    assert!(err.contains("interval") && err.contains("line 2"), "{err}");
}

#[tokio::test]
async fn a_bad_query_names_the_topic_and_column() {
    let err = check("[[topics]]\nname = \"tariffs\"\nquery = 'tariff* AND (steel OR'\n").await;
    assert!(
        err.contains("topic \"tariffs\"") && err.contains("column"),
        "{err}"
    );
}

#[tokio::test]
async fn a_duplicate_topic_name_is_rejected() {
    let err = check(
        "[[topics]]\nname = \"tariffs\"\nquery = 'tariff*'\n[[topics]]\nname = \"tariffs\"\nquery = 'levies'\n",
    )
    .await;
    assert!(err.contains("duplicate topic name \"tariffs\""), "{err}");
}

#[tokio::test]
async fn a_missing_config_file_is_a_usage_error() {
    let out = feedwatch(&["once", "--config", "/nonexistent/feedwatch.toml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/feedwatch.toml"));
}

#[tokio::test]
async fn the_shipped_config_checks_clean() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let out = feedwatch(&["check-config", "--config", shipped]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hkfp") && text.contains("asiatimes") && text.contains("tariffs"));
}

/// Settings that `run` would fail on (or that would make every request fail):
/// `check-config` rejects each with exit 2, naming the key.
#[tokio::test]
async fn settings_run_cannot_work_with_are_rejected_with_their_key() {
    for (config, key) in [
        ("[admin]\nlisten = \"nonsense\"\n", "admin.listen"),
        ("[http]\ntimeout = \"0s\"\n", "http.timeout"),
        ("[http]\nconnect_timeout = \"0s\"\n", "http.connect_timeout"),
        ("[delivery]\ntimeout = \"0s\"\n", "delivery.timeout"),
        ("[defaults]\ninterval = \"1ms\"\n", "defaults.interval"),
        (
            "[daemon]\nshutdown_grace = \"0s\"\n",
            "daemon.shutdown_grace",
        ),
        (
            "[delivery]\nbackoff_base = \"0s\"\n",
            "delivery.backoff_base",
        ),
        ("[http]\nmax_body_bytes = 0\n", "http.max_body_bytes"),
        (
            "[database]\nurl = \"postgres://fw@db.internal:99999/fw\"\n",
            "database.url",
        ),
        (
            "[database]\nurl = \"postgresfoo://db/fw\"\n",
            "database.url",
        ),
        ("[database]\nurl = \"sqlite://\"\n", "database.url"),
        ("[database]\nurl = \"sqlite::memory:\"\n", "database.url"),
        (
            "[[sources]]\nname = \"a\"\nkind = \"feed\"\nurl = \"https://example.org/\"\ninterval = \"1ms\"\n",
            "sources[0] (line 2).interval",
        ),
    ] {
        let err = check(config).await;
        assert!(err.contains(key), "{config:?} should name {key}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "one message: {err}");
    }
}

#[tokio::test]
async fn run_with_a_bad_admin_listen_exits_2_before_opening_anything() {
    let file = TestConfig::write("[admin]\nlisten = \"nonsense\"\n");
    let out = feedwatch(&["run", "--config", file.path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin.listen"),
        "{}",
        describe(&out)
    );
    assert!(
        !file.dir.path().join("feedwatch.db").exists(),
        "no database is created for a config that is rejected"
    );
}

#[tokio::test]
async fn an_empty_config_is_valid_with_warnings_about_sources_and_topics() {
    let file = TestConfig::write("");
    let out = feedwatch(&["check-config", "--config", file.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: no [[sources]]") && err.contains("warning: no [[topics]]"),
        "{}",
        describe(&out)
    );
    assert!(
        !file.dir.path().join("feedwatch.db").exists(),
        "check-config creates nothing"
    );
}
