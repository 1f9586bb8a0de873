//! `feedwatch match`: the configured topics on a story given as a text file,
//! an HTML page, a feed or stdin, as a user tuning a query runs it.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::support::*;

fn config() -> TestConfig {
    let db = tempfile::tempdir().unwrap();
    TestConfig::write(&format!(
        "{}{TEST_TOPICS}",
        config_head(&format!("sqlite://{}/unused.db", db.path().display()))
    ))
}

#[tokio::test]
async fn a_plain_text_story_shows_topic_score_terms_and_snippet() {
    let c = config();
    let story = c.dir.path().join("story.txt");
    std::fs::write(
        &story,
        "Brussels weighs tariffs on Chinese steel\n\nThe European Commission is weighing new tariffs \
         on steel imports after a surge in shipments.\n",
    )
    .unwrap();
    let out = feedwatch(&[
        "match",
        "--config",
        c.path.to_str().unwrap(),
        story.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tariffs score 3"),
        "title hit counts double: {text}"
    );
    assert!(text.contains("«tariffs»"), "{text}");
    assert!(text.contains("1 of 1 stories matched"), "{text}");
}

#[tokio::test]
async fn a_feed_is_matched_entry_by_entry_as_json_without_its_footers() {
    let c = config();
    let feed = c.dir.path().join("feed.xml");
    std::fs::write(
        &feed,
        render_fixture("feeds/asiatimes.xml", "https://asiatimes.com"),
    )
    .unwrap();
    let out = feedwatch(&[
        "match",
        "--config",
        c.path.to_str().unwrap(),
        "--json",
        feed.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    let topics: Vec<Vec<&str>> = reports
        .iter()
        .map(|r| {
            r["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["topic"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        topics,
        [vec!["eda-export-controls"], vec![], vec!["tariffs"]]
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("appeared first on"));
}

#[tokio::test]
async fn stdin_is_read_when_the_input_is_a_dash() {
    let c = config();
    let mut child = command(&["match", "--config", c.path.to_str().unwrap(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"Navy tests laser\n\nA ship-borne laser shot down two drones.\n")
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("counter-drone-lasers"));
}
