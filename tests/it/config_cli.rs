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
