//! Tuning topics on both backends: `backtest` over what `once` stored, `eval` on labelled
//! files and on stored labels, `label`, and `match --explain` — the real binary against
//! real databases.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::Connection;

use crate::both_backends;
use crate::support::http::{Resource, Site};
use crate::support::*;

/// Three feeds on a local server: six stories and one syndicated copy of the first.
async fn serve_feeds(site: &Site) {
    let base = site.base();
    for (path, fixture) in [
        ("/hkfp/feed/", "feeds/hkfp.xml"),
        ("/asiatimes/feed/", "feeds/asiatimes.xml"),
        ("/wire/feed/", "feeds/tuning_copy.xml"),
    ] {
        site.put(
            path,
            Resource::ok(
                "application/rss+xml; charset=UTF-8",
                render_fixture(fixture, &base),
            ),
        );
    }
}

fn config(db_url: &str, site: &Site) -> TestConfig {
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

[[sources]]
name = "wire"
kind = "feed"
url = "{wire}"
{TEST_TOPICS}"#,
        head = config_head(db_url),
        hkfp = site.url("/hkfp/feed/"),
        at = site.url("/asiatimes/feed/"),
        wire = site.url("/wire/feed/"),
    ))
}

/// A database filled by `feedwatch once` from the three feeds, and its config.
struct Filled {
    db: TestDb,
    config: TestConfig,
    _site: Site,
}

impl Filled {
    fn path(&self) -> &str {
        self.config.path.to_str().unwrap()
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec![args[0], "--config", self.path()];
        all.extend_from_slice(&args[1..]);
        feedwatch(&all).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
    }

    /// Runs one SQL statement with plain sqlx.
    async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.db.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.db.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                let _ = c.close().await;
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                let _ = c.close().await;
            }
        }
    }

    /// Row counts of every table a tuning command must not write (labels aside).
    async fn counts(&self) -> (usize, usize, feedwatch::store::Counts) {
        let store = feedwatch::store::connect(&self.db.url, 1).await.unwrap();
        let counts = store.counts().await.unwrap();
        store.close().await;
        (
            self.db.story_rows().await.len(),
            self.db.match_rows().await.len(),
            counts,
        )
    }
}

async fn filled(backend: Backend) -> Option<Filled> {
    let db = TestDb::new(backend).await?;
    let site = Site::start().await;
    serve_feeds(&site).await;
    let config = config(&db.url, &site);
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    Some(Filled {
        db,
        config,
        _site: site,
    })
}

/// The topic named `name` in a backtest report.
fn topic<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no topic {name} in {report}"))
}

fn ids(list: &Value) -> BTreeSet<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().or_else(|| v["id"].as_i64()).unwrap())
        .collect()
}

/// Story ids stored as matches of `topic`.
async fn stored(f: &Filled, topic: &str) -> BTreeSet<i64> {
    f.db.match_rows()
        .await
        .into_iter()
        .filter(|(_, t)| t == topic)
        .map(|(id, _)| id)
        .collect()
}

/// Story ids the library's matcher matches with `query` for topic `name`, over every
/// stored story.
async fn matcher_ids(f: &Filled, name: &str, query: &str) -> BTreeSet<i64> {
    let set = feedwatch::topics::TopicSet::compile(&[feedwatch::topics::TopicSpec {
        name: name.into(),
        query: query.into(),
        min_score: 1.0,
    }])
    .unwrap();
    f.db.story_rows()
        .await
        .into_iter()
        .filter(|s| {
            !set.match_story(
                s.title.as_deref().unwrap_or(""),
                s.body.as_deref().unwrap_or(""),
            )
            .is_empty()
        })
        .map(|s| s.id)
        .collect()
}

async fn backtest_with_the_configured_topics_reports_exactly_the_stored_matches(backend: Backend) {
    let Some(f) = filled(backend).await else {
        return;
    };
    let before = f.counts().await;
    let report = f.json(&["backtest", "--json"]).await;
    assert_eq!(report["stories"], 7, "{report}");
    assert_eq!(report["duplicates"], 1, "the wire copy is read and counted");
    for name in ["tariffs", "eda-export-controls", "counter-drone-lasers"] {
        let t = topic(&report, name);
        assert_eq!(ids(&t["matched"]), stored(&f, name).await, "{name}: {t}");
        assert_eq!(t["added"], Value::Array(vec![]), "{name}");
        assert_eq!(t["dropped"], Value::Array(vec![]), "{name}");
    }
    assert_eq!(
        ids(&topic(&report, "tariffs")["matched"]).len(),
        3,
        "the hkfp story, its copy, the steel levies"
    );
    assert_eq!(f.counts().await, before, "backtest writes nothing");
    f.db.cleanup().await;
}
both_backends!(backtest_with_the_configured_topics_reports_exactly_the_stored_matches);

async fn a_broader_query_adds_and_a_narrower_one_drops_exactly_what_the_matcher_says(
    backend: Backend,
) {
    let Some(f) = filled(backend).await else {
        return;
    };
    let before = f.counts().await;
    let stored = stored(&f, "tariffs").await;

    let broader = "tariff* OR levies";
    let arg = format!("tariffs={broader}");
    let report = f
        .json(&["backtest", "--topic", "tariffs", "--query", &arg, "--json"])
        .await;
    assert_eq!(report["topics"].as_array().unwrap().len(), 1, "{report}");
    let t = topic(&report, "tariffs");
    let now = matcher_ids(&f, "tariffs", broader).await;
    let added: BTreeSet<i64> = now.difference(&stored).copied().collect();
    assert_eq!(ids(&t["matched"]), now);
    assert_eq!(ids(&t["added"]), added);
    assert_eq!(added.len(), 1, "the feed-in tariff story: {t}");
    assert_eq!(t["dropped"], Value::Array(vec![]));
    let story = &t["added"][0];
    assert!(story["title"].as_str().unwrap().contains("feed-in tariff"));
    assert!(story["snippet"].as_str().unwrap().contains("«"), "{story}");
    for key in ["url", "score", "terms", "published_at"] {
        assert!(!story[key].is_null(), "{key} in {story}");
    }

    let narrower = "(tariff* OR levies) AND steel";
    let arg = format!("tariffs={narrower}");
    let report = f
        .json(&["backtest", "--topic", "tariffs", "--query", &arg, "--json"])
        .await;
    let t = topic(&report, "tariffs");
    let now = matcher_ids(&f, "tariffs", narrower).await;
    let dropped: BTreeSet<i64> = stored.difference(&now).copied().collect();
    assert_eq!(ids(&t["matched"]), now);
    assert_eq!(ids(&t["dropped"]), dropped);
    assert_eq!(dropped.len(), 2, "the hkfp story and its copy: {t}");
    assert_eq!(t["added"], Value::Array(vec![]));
    let copy = t["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| !s["duplicate_of"].is_null())
        .expect("the duplicate is listed and marked");
    assert!(copy["snippet"].as_str().unwrap().contains("«"), "{copy}");

    let text = f.run(&["backtest", "--query", &arg]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("2 dropped") && text.contains("[duplicate of"),
        "{text}"
    );

    assert_eq!(f.counts().await, before, "backtest writes nothing");
    f.db.cleanup().await;
}
both_backends!(a_broader_query_adds_and_a_narrower_one_drops_exactly_what_the_matcher_says);

async fn since_filters_on_published_at_falling_back_to_fetched_at(backend: Backend) {
    let Some(f) = filled(backend).await else {
        return;
    };
    let rows = f.db.story_rows().await;
    let levies = rows
        .iter()
        .find(|s| s.title.as_deref().unwrap_or("").contains("steel levies"))
        .unwrap()
        .id;
    let lasers = rows
        .iter()
        .find(|s| s.title.as_deref().unwrap_or("").contains("laser"))
        .unwrap()
        .id;
    let (old, none) = match backend {
        Backend::Sqlite => ("'2020-01-01T00:00:00.000000Z'", "NULL"),
        Backend::Postgres => ("'2020-01-01T00:00:00Z'::timestamptz", "NULL"),
    };
    f.execute(&format!(
        "UPDATE stories SET published_at = {old} WHERE id = {levies}"
    ))
    .await;
    f.execute(&format!(
        "UPDATE stories SET published_at = {none} WHERE id = {lasers}"
    ))
    .await;

    let report = f.json(&["backtest", "--since", "2d", "--json"]).await;
    assert_eq!(report["stories"], 6, "the 2020 story is left out: {report}");
    let tariffs = ids(&topic(&report, "tariffs")["matched"]);
    assert!(!tariffs.contains(&levies), "{report}");
    assert_eq!(tariffs.len(), 2);
    assert_eq!(
        topic(&report, "tariffs")["dropped"],
        Value::Array(vec![]),
        "a story outside the window is not dropped"
    );
    assert_eq!(
        ids(&topic(&report, "counter-drone-lasers")["matched"]),
        BTreeSet::from([lasers]),
        "a story without a date counts from its fetch time"
    );
    let all = f.json(&["backtest", "--since", "3650d", "--json"]).await;
    assert_eq!(all["stories"], 7);
    f.db.cleanup().await;
}
both_backends!(since_filters_on_published_at_falling_back_to_fetched_at);

#[tokio::test]
async fn backtest_eval_and_label_never_create_a_missing_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("absent.db");
    let c = TestConfig::write(&format!(
        "{}{TEST_TOPICS}",
        config_head(&format!("sqlite://{}", db.display()))
    ));
    let labels = c.dir.path().join("labels.json");
    std::fs::write(
        &labels,
        r#"{"items": [{"id": "x", "url": "https://example.org/a", "topics": []}]}"#,
    )
    .unwrap();
    let path = c.path.to_str().unwrap();
    for args in [
        vec!["backtest", "--config", path],
        vec!["eval", "--config", path, "--stored"],
        vec!["eval", "--config", path, labels.to_str().unwrap()],
        vec!["label", "--config", path, "1", "+tariffs"],
    ] {
        let out = feedwatch(&args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no database at"),
            "{}",
            describe(&out)
        );
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
}

/// A labelled file: three stories with bodies, hand-scored below.
const LABELS: &str = r#"{"items": [
  {"id": "a", "url": "https://example.org/a", "title": "EU weighs tariffs on steel",
   "body": "Brussels is weighing tariffs.", "topics": ["tariffs"]},
  {"id": "b", "url": "https://example.org/b", "title": "Hotel tariffs rise",
   "body": "Room tariffs went up.", "topics": []},
  {"id": "c", "url": "https://example.org/c", "title": "Solar owners paid more",
   "body": "A higher feed-in tariff starts in May.", "topics": ["tariffs"]},
  {"id": "d", "url": "https://example.org/d", "title": "Laser downs drones",
   "body": "A laser weapon shot down drones.", "topics": ["counter-drone-lasers"]}
]}"#;

#[tokio::test]
async fn eval_on_a_labelled_file_gives_the_hand_computed_figures() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestConfig::write(&format!(
        "{}{TEST_TOPICS}",
        config_head(&format!(
            "sqlite://{}",
            dir.path().join("never-opened.db").display()
        ))
    ));
    let labels = c.dir.path().join("labels.json");
    std::fs::write(&labels, LABELS).unwrap();
    let out = feedwatch(&[
        "eval",
        "--config",
        c.path.to_str().unwrap(),
        labels.to_str().unwrap(),
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // tariffs: TP a, FP b (hotel tariffs), FN c (feed-in, excluded): P 1/2, R 1/2, F1 1/2.
    let t = topic(&r, "tariffs");
    assert_eq!(
        (t["tp"].clone(), t["fp"].clone(), t["fn"].clone()),
        (1.into(), 1.into(), 1.into())
    );
    assert_eq!(t["precision"], 0.5);
    assert_eq!(t["recall"], 0.5);
    assert_eq!(t["f1"], 0.5);
    assert_eq!(t["false_positives"][0]["id"], "b");
    assert!(
        t["false_positives"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("«tariffs»")
    );
    assert_eq!(t["false_negatives"][0]["id"], "c");
    assert!(
        t["false_negatives"][0]["failed"][0]
            .as_str()
            .unwrap()
            .starts_with("excluded by NOT \"feed in tariff*\""),
        "{t}"
    );
    // eda: nothing predicted, nothing relevant: P 1, R 1, F1 1. lasers: TP d: 1, 1, 1.
    assert_eq!(topic(&r, "eda-export-controls")["f1"], 1.0);
    assert_eq!(topic(&r, "counter-drone-lasers")["f1"], 1.0);
    assert_eq!(r["macro"]["precision"], (0.5 + 1.0 + 1.0) / 3.0);
    assert_eq!(r["macro"]["f1"], (0.5 + 1.0 + 1.0) / 3.0);
    assert_eq!(r["items"], 4);

    let mut cmd = command(&["eval", "--config", c.path.to_str().unwrap(), "-"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(LABELS.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("macro average"), "{text}");
    assert!(text.contains("FN tariffs  c"), "{text}");
}

async fn eval_finds_items_without_a_body_by_canonical_url(backend: Backend) {
    let Some(f) = filled(backend).await else {
        return;
    };
    // URL variants: http, www., a tracking parameter, a trailing slash dropped.
    let labels = r#"{"items": [
      {"id": 1, "url": "http://www.hongkongfp.com/2026/11/27/hong-kong-exporters-brace-for-new-us-tariffs/?utm_source=x",
       "topics": ["tariffs"]},
      {"id": 2, "url": "https://asiatimes.com/2026/11/vietnam-raises-feed-in-tariff-for-rooftop-solar",
       "topics": ["tariffs"]},
      {"id": 3, "url": "https://hongkongfp.com/2026/11/26/pla-garrison-laser-system-drones-drill/",
       "topics": []},
      {"id": 4, "url": "https://example.org/not-stored", "topics": ["tariffs"]}
    ]}"#;
    let file = f.config.dir.path().join("labels.json");
    std::fs::write(&file, labels).unwrap();
    let before = f.counts().await;
    let out = f.run(&["eval", file.to_str().unwrap(), "--json"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["items"], 3, "{r}");
    assert_eq!(r["not_found"][0], "https://example.org/not-stored");
    // tariffs: TP 1, FN 2 (feed-in excluded) → P 1, R 1/2, F1 2/3.
    let t = topic(&r, "tariffs");
    assert_eq!(
        (t["tp"].clone(), t["fn"].clone()),
        (1.into(), 1.into()),
        "{t}"
    );
    assert_eq!(t["precision"], 1.0);
    assert_eq!(t["recall"], 0.5);
    // lasers: FP 3 → P 0, R 1 (nothing relevant), F1 0.
    let l = topic(&r, "counter-drone-lasers");
    assert_eq!(
        (l["fp"].clone(), l["precision"].clone(), l["f1"].clone()),
        (1.into(), 0.0.into(), 0.0.into())
    );
    assert_eq!(f.counts().await, before, "eval writes nothing");
    f.db.cleanup().await;
}
both_backends!(eval_finds_items_without_a_body_by_canonical_url);

async fn labels_round_trip_through_eval_stored(backend: Backend) {
    let Some(f) = filled(backend).await else {
        return;
    };
    let rows = f.db.story_rows().await;
    let id_of = |needle: &str| {
        rows.iter()
            .find(|s| s.title.as_deref().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no story {needle}"))
            .id
            .to_string()
    };
    let exporters = id_of("exporters brace");
    let solar = id_of("feed-in tariff");
    let court = id_of("Court adjourns");

    for (id, marks) in [
        (&exporters, vec!["+tariffs"]),
        (&solar, vec!["+tariffs", "-counter-drone-lasers"]),
        (&court, vec!["-tariffs"]),
        (&court, vec!["+tariffs"]),
    ] {
        let mut args = vec!["label", id.as_str()];
        args.extend(marks);
        let out = f.run(&args).await;
        assert!(out.status.success(), "{}", describe(&out));
    }
    let out = f.run(&["label", "99999", "+tariffs"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no story with id 99999"));
    let out = f.run(&["label", &court, "tariffs"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    let before = f.counts().await;
    let r = f.json(&["eval", "--stored", "--json"]).await;
    assert_eq!(r["items"], 3, "{r}");
    // tariffs judged on 3: exporters TP, solar FN, court (relabelled +) FN.
    let t = topic(&r, "tariffs");
    assert_eq!(t["judged"], 3);
    assert_eq!(
        (t["tp"].clone(), t["fp"].clone(), t["fn"].clone()),
        (1.into(), 0.into(), 2.into()),
        "{t}"
    );
    // lasers judged on the solar story only: a true negative.
    let l = topic(&r, "counter-drone-lasers");
    assert_eq!((l["judged"].clone(), l["fp"].clone()), (1.into(), 0.into()));
    assert_eq!(topic(&r, "eda-export-controls")["judged"], 0);
    assert_eq!(f.counts().await, before);

    let recent = f
        .json(&["eval", "--stored", "--since", "1h", "--json"])
        .await;
    assert_eq!(recent["items"], 3);
    f.db.cleanup().await;
}
both_backends!(labels_round_trip_through_eval_stored);

#[tokio::test]
async fn match_explain_names_the_not_clause_and_the_near_too_far_apart() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestConfig::write(&format!(
        r#"{}
[[topics]]
name = "tariffs"
query = '(tariff* OR levies) AND NOT "feed-in tariff*"'

[[topics]]
name = "lasers"
query = 'laser* NEAR/5 drone*'
"#,
        config_head(&format!("sqlite://{}/unused.db", dir.path().display()))
    ));
    let story = c.dir.path().join("story.txt");
    std::fs::write(
        &story,
        "Vietnam raises feed-in tariff for rooftop solar\n\n\
         The new feed-in tariff starts in May. A laser show opened the ceremony, and \
         afterwards the organisers thanked sponsors, guests, volunteers and the city before \
         a few toy drones flew.\n",
    )
    .unwrap();
    let out = feedwatch(&[
        "match",
        "--config",
        c.path.to_str().unwrap(),
        "--explain",
        story.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tariffs: no match"), "{text}");
    assert!(
        text.contains("excluded by NOT \"feed in tariff*\": found «feed-in tariff»"),
        "{text}"
    );
    assert!(text.contains("lasers: no match"), "{text}");
    assert!(
        text.contains("too far apart: laser* NEAR/5 drone*"),
        "{text}"
    );

    let out = feedwatch(&[
        "match",
        "--config",
        c.path.to_str().unwrap(),
        "--explain",
        "--json",
        story.to_str().unwrap(),
    ])
    .await;
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let explain = &r[0]["explain"];
    assert_eq!(explain[0]["topic"], "tariffs");
    assert_eq!(explain[0]["matched"], false);
    assert!(
        explain[1]["failed"][0]
            .as_str()
            .unwrap()
            .contains("words apart")
    );

    std::fs::write(
        &story,
        "Laser downs drones\n\nA laser shot down two drones.\n",
    )
    .unwrap();
    let out = feedwatch(&[
        "match",
        "--config",
        c.path.to_str().unwrap(),
        "--explain",
        story.to_str().unwrap(),
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lasers: matched, score 6 (min_score 1) from [laser, drones]"),
        "{text}"
    );
}

async fn a_read_only_archive_refuses_writes_at_the_connection(backend: Backend) {
    let Some(f) = filled(backend).await else {
        return;
    };
    use feedwatch::store::archive::{self, Access, ArchiveError, Label};
    let id = f.db.story_rows().await[0].id;
    let label = [Label {
        topic: "tariffs".into(),
        relevant: true,
    }];
    let ro = archive::open(&f.db.url, Access::ReadOnly).await.unwrap();
    let refused = ro.record_labels(id, &label, chrono::Utc::now()).await;
    ro.close().await;
    assert!(
        matches!(refused, Err(ArchiveError::Store(_))),
        "a read-only archive wrote: {refused:?}"
    );
    let rw = archive::open(&f.db.url, Access::ReadWrite).await.unwrap();
    rw.record_labels(id, &label, chrono::Utc::now())
        .await
        .unwrap();
    rw.close().await;
    f.db.cleanup().await;
}
both_backends!(a_read_only_archive_refuses_writes_at_the_connection);
