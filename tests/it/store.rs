//! The Store contract, on SQLite and on Postgres alike: the verdict on a story
//! (new, unchanged, update, duplicate) is taken in its transaction together
//! with its matches and outbox rows; racing writers cannot both win; claims
//! hide what they claimed.

use std::sync::Arc;

use chrono::{Duration, Utc};
use feedwatch::store::{
    self, AlertTarget, DeliveryResult, NewStory, OutboxPolicy, PollOutcome, PollSave, PollWrite,
    PreparedStory, SaveOutcome, SourceEvent, SourceSpec, SourceState, Store, StreakChange,
};
use feedwatch::topics::TopicMatch;

use crate::both_backends;
use crate::support::*;

async fn open(db: &TestDb) -> (Arc<dyn Store>, i64) {
    let store = store::connect(&db.url, 2).await.unwrap();
    let rows = store
        .sync_sources(&[SourceSpec {
            name: "hkfp".into(),
            kind: "feed".into(),
            url: "https://hongkongfp.com/feed/".into(),
            enabled: true,
        }])
        .await
        .unwrap();
    (store, rows[0].id)
}

fn story(source_id: i64, url: &str, body: &str) -> NewStory {
    NewStory {
        source_id,
        url: url.into(),
        canonical_url: url.into(),
        title: Some("Steel tariffs".into()),
        summary: None,
        body: body.into(),
        author: None,
        published_at: Some(Utc::now()),
        fetched_at: Utc::now(),
        content_hash: blake3::hash(body.as_bytes()).to_hex().to_string(),
        raw_hash: None,
        source_name: "hkfp".into(),
        fingerprint: None,
        band_keys: Vec::new(),
    }
}

fn tariff_match() -> Vec<TopicMatch> {
    vec![TopicMatch {
        topic: "tariffs".into(),
        score: 2.0,
        terms: vec!["tariffs".into()],
        snippet: "new «tariffs» on steel".into(),
    }]
}

/// One webhook, `w`, that takes every topic; source events go nowhere.
struct OneWebhook;

impl OutboxPolicy for OneWebhook {
    fn story_targets(&self, _: &NewStory, matches: &[TopicMatch]) -> Vec<AlertTarget> {
        vec![AlertTarget {
            webhook: "w".into(),
            topics: (0..matches.len()).collect(),
        }]
    }

    fn story_payload(&self, _: &str, id: i64, _: &NewStory, _: &[&TopicMatch]) -> String {
        format!("{{\"story\":{id}}}")
    }

    fn source_event(&self, _: i64, _: &StreakChange, _: Option<&str>) -> Option<SourceEvent> {
        None
    }
}

fn prepared(s: &NewStory, m: &[TopicMatch]) -> PreparedStory {
    PreparedStory {
        story: s.clone(),
        matches: m.to_vec(),
    }
}

async fn save(store: &dyn Store, s: &NewStory, m: &[TopicMatch]) -> SaveOutcome {
    let never = |_: &[u8], _: &[u8]| false;
    store
        .save_story(
            &prepared(s, m),
            Utc::now() - Duration::days(7),
            &never,
            &OneWebhook,
        )
        .await
        .unwrap()
}

async fn a_story_is_new_once_then_unchanged_updated_or_duplicate(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    let s = story(src, "https://hongkongfp.com/a", "new tariffs on steel");
    let SaveOutcome::New { id, deliveries: 1 } = save(store.as_ref(), &s, &tariff_match()).await
    else {
        panic!("first save is new with one delivery")
    };
    assert_eq!(
        save(store.as_ref(), &s, &tariff_match()).await,
        SaveOutcome::Unchanged { id }
    );

    let edited = story(
        src,
        "https://hongkongfp.com/a",
        "new tariffs on steel and aluminium",
    );
    assert_eq!(
        save(store.as_ref(), &edited, &tariff_match()).await,
        SaveOutcome::Updated { id, deliveries: 0 },
        "an update matching only what its story was alerted of sends nothing"
    );

    let copy = story(
        src,
        "https://elsewhere.example/copy",
        "new tariffs on steel and aluminium",
    );
    let outcome = save(store.as_ref(), &copy, &tariff_match()).await;
    assert!(
        matches!(outcome, SaveOutcome::Duplicate { of, near: false, .. } if of == id),
        "{outcome:?}"
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.stories, 2);
    assert_eq!(
        counts.matches, 2,
        "the duplicate's matches are recorded too"
    );
    assert_eq!(
        counts.deliveries_pending, 1,
        "only the first copy is alerted, once"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_story_is_new_once_then_unchanged_updated_or_duplicate);

async fn two_writers_racing_on_one_story_store_one_row_and_one_delivery(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (a, src) = open(&db).await;
    // A second pool, as a second daemon would have.
    let b = store::connect(&db.url, 2).await.unwrap();
    for round in 0..10 {
        let s = story(
            src,
            &format!("https://hongkongfp.com/race/{round}"),
            &format!("race {round}"),
        );
        let m = tariff_match();
        let (x, y) = tokio::join!(save(a.as_ref(), &s, &m), save(b.as_ref(), &s, &m));
        let news = [x, y]
            .iter()
            .filter(|o| matches!(o, SaveOutcome::New { .. }))
            .count();
        assert_eq!(news, 1, "round {round}: {x:?} {y:?}");
    }
    let counts = a.counts().await.unwrap();
    assert_eq!((counts.stories, counts.deliveries_pending), (10, 10));
    a.close().await;
    b.close().await;
    db.cleanup().await;
}
both_backends!(two_writers_racing_on_one_story_store_one_row_and_one_delivery);

async fn claimed_deliveries_are_hidden_until_their_lease_ends(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    for i in 0..3 {
        save(
            store.as_ref(),
            &story(src, &format!("https://h.example/{i}"), &format!("b{i}")),
            &tariff_match(),
        )
        .await;
    }
    let hooks = vec!["w".to_string()];
    let now = Utc::now();
    let first = store
        .claim_due_deliveries("a", &hooks, now, now + Duration::minutes(5), 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let second = store
        .claim_due_deliveries("a", &hooks, now, now + Duration::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "claimed rows are not handed out twice");
    assert!(first.iter().all(|d| d.id != second[0].id));
    let later = now + Duration::minutes(6);
    let again = store
        .claim_due_deliveries("a", &hooks, later, later + Duration::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        3,
        "an unfinished claim is taken again after its lease"
    );
    let other = store
        .claim_due_deliveries("a", &["other".to_string()], later, later, 10)
        .await
        .unwrap();
    assert!(
        other.is_empty(),
        "deliveries of unconfigured webhooks are left alone"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(claimed_deliveries_are_hidden_until_their_lease_ends);

async fn claimed_deliveries_are_released_only_under_their_own_claim(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    for i in 0..3 {
        save(
            store.as_ref(),
            &story(src, &format!("https://h.example/{i}"), &format!("b{i}")),
            &tariff_match(),
        )
        .await;
    }
    let hooks = vec!["w".to_string()];
    let now = Utc::now();
    let until = now + Duration::minutes(5);
    let claimed = store
        .claim_due_deliveries("a/r", &hooks, now, until, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let ids: Vec<_> = claimed.iter().map(|d| d.id).collect();
    // One of them was attempted meanwhile: its retry time is its own, not a claim's.
    let retry_at = now + Duration::minutes(30);
    store
        .record_delivery(
            ids[0],
            &DeliveryResult::Retry {
                status_code: Some(503),
                error: "busy".into(),
                next_attempt_at: retry_at,
            },
            now,
        )
        .await
        .unwrap();

    // The run renews its claims meanwhile: that moves their expiry, not their owner.
    assert_eq!(
        store
            .renew_leases("a/r", until + Duration::minutes(5))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.release_deliveries(&ids, "a/s", now).await.unwrap(),
        0,
        "another run of the same daemon does not hold these claims"
    );
    assert_eq!(
        store.release_deliveries(&ids, "a/r", now).await.unwrap(),
        2,
        "the two never attempted are released, renewed or not; the attempted one keeps its retry time"
    );
    assert_eq!(
        store.renew_leases("a/r", until).await.unwrap(),
        0,
        "released claims are no longer the run's to renew"
    );
    let due = store
        .claim_due_deliveries("b/r", &hooks, now, until, 10)
        .await
        .unwrap();
    let mut due: Vec<_> = due.iter().map(|d| d.id).collect();
    due.sort();
    let mut expected = ids[1..].to_vec();
    expected.sort();
    assert_eq!(due, expected, "released deliveries are due at once");
    store.close().await;
    db.cleanup().await;
}
both_backends!(claimed_deliveries_are_released_only_under_their_own_claim);

async fn a_failure_streak_is_counted_and_reset(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    let poll = |at, outcome| PollWrite {
        source_id: src,
        lease_owner: "me/1".into(),
        polled_at: at,
        outcome,
        stories: Vec::new(),
        page_failures: Vec::new(),
        pages_done: Vec::new(),
        window_start: at - Duration::days(7),
    };
    let fail = |at| {
        poll(
            at,
            PollOutcome::Failed {
                status: Some(503),
                error: "HTTP 503".into(),
                state: SourceState::Active,
                next_poll_at: at,
            },
        )
    };
    let never = |_: &[u8], _: &[u8]| false;
    let write = |p: PollWrite| {
        let store = store.clone();
        async move {
            let now = Utc::now() - Duration::days(1);
            assert_eq!(
                store
                    .claim_every_source("me/1", now, now + Duration::minutes(5))
                    .await
                    .unwrap()
                    .len(),
                1
            );
            match store.save_poll(&p, &never, &OneWebhook).await.unwrap() {
                PollSave::Saved { streak, .. } => streak.unwrap(),
                PollSave::LeaseLost => panic!("lease lost"),
            }
        }
    };
    let t0 = Utc::now();
    let c1 = write(fail(t0)).await;
    let c2 = write(fail(t0 + Duration::minutes(1))).await;
    assert_eq!((c1.before, c1.after, c2.after), (0, 1, 2));
    assert_eq!(
        c1.since.map(|t| t.timestamp_micros()),
        Some(t0.timestamp_micros())
    );
    assert_eq!(c2.since, c1.since, "the streak keeps its start");
    let ok = poll(
        t0 + Duration::minutes(2),
        PollOutcome::Fetched {
            status: 200,
            validators: Some(store::StoredValidators {
                etag: Some("\"v1\"".into()),
                last_modified: None,
            }),
            next_poll_at: t0,
        },
    );
    let c3 = write(ok).await;
    assert_eq!((c3.before, c3.after), (2, 0));
    let rows = store
        .sync_sources(&[SourceSpec {
            name: "hkfp".into(),
            kind: "feed".into(),
            url: "https://hongkongfp.com/feed/".into(),
            enabled: true,
        }])
        .await
        .unwrap();
    assert_eq!(rows[0].etag.as_deref(), Some("\"v1\""));
    assert_eq!(rows[0].consecutive_failures, 0);
    // A source dropped from the config is disabled, not deleted (its stories stay).
    let rows = store.sync_sources(&[]).await.unwrap();
    assert!(rows.is_empty());
    let due = store
        .claim_due_sources(
            "me",
            Utc::now() + Duration::days(1),
            Utc::now() + Duration::days(2),
            10,
        )
        .await
        .unwrap();
    assert!(due.is_empty(), "disabled sources are never claimed");
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_failure_streak_is_counted_and_reset);

/// A story indexed under `band_keys`, with `fingerprint` as its stored fingerprint bytes.
fn keyed(source_id: i64, url: &str, band_keys: &[i64], fingerprint: &str) -> NewStory {
    NewStory {
        band_keys: band_keys.to_vec(),
        fingerprint: Some(fingerprint.as_bytes().to_vec()),
        ..story(source_id, url, &format!("body of {url}"))
    }
}

/// Saves `s` with a near-duplicate check that accepts only the fingerprint `accept`;
/// returns the outcome and the fingerprints the check was shown, in order.
async fn save_near(store: &dyn Store, s: &NewStory, accept: &str) -> (SaveOutcome, Vec<String>) {
    let shown = std::sync::Mutex::new(Vec::new());
    let check = |_: &[u8], fp: &[u8]| {
        shown
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(fp).into_owned());
        fp == accept.as_bytes()
    };
    let outcome = store
        .save_story(
            &prepared(s, &[]),
            Utc::now() - Duration::days(7),
            &check,
            &OneWebhook,
        )
        .await
        .unwrap();
    (outcome, shown.into_inner().unwrap())
}

async fn near_duplicates_are_found_through_shared_band_keys_inside_the_window(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    let store = store.as_ref();
    // Keys at the ends of the i64 range and one that a float would round (2^53 + 1).
    let odd = (1i64 << 53) + 1;
    let original = keyed(
        src,
        "https://a.example/1",
        &[i64::MIN, odd, i64::MAX],
        "orig",
    );
    let (first, _) = save_near(store, &original, "").await;
    let SaveOutcome::New { id, .. } = first else {
        panic!("{first:?}")
    };
    let mut stale = keyed(src, "https://a.example/old", &[42], "stale");
    stale.fetched_at = Utc::now() - Duration::days(10);
    let (stale_outcome, _) = save_near(store, &stale, "").await;
    assert!(matches!(stale_outcome, SaveOutcome::New { .. }));

    // Sharing one key (the one a float would round) is enough to be a candidate.
    let copy = keyed(src, "https://b.example/copy", &[7, odd], "copy");
    let (outcome, shown) = save_near(store, &copy, "orig").await;
    assert_eq!(shown, ["orig"]);
    assert!(
        matches!(outcome, SaveOutcome::Duplicate { of, near: true, .. } if of == id),
        "{outcome:?}"
    );

    // A candidate the fingerprint check rejects is a new story.
    let lookalike = keyed(src, "https://b.example/other", &[i64::MIN], "other");
    let (outcome, shown) = save_near(store, &lookalike, "nothing").await;
    assert_eq!(shown, ["orig"]);
    assert!(matches!(outcome, SaveOutcome::New { .. }), "{outcome:?}");

    // Stories older than the window are not candidates.
    let late_copy = keyed(src, "https://b.example/late", &[42], "late");
    let (outcome, shown) = save_near(store, &late_copy, "stale").await;
    assert!(shown.is_empty(), "{shown:?}");
    assert!(matches!(outcome, SaveOutcome::New { .. }), "{outcome:?}");

    // An update re-indexes the story under its new keys only.
    let mut revised = keyed(src, "https://a.example/1", &[99], "orig-v2");
    revised.content_hash = "revised".into();
    assert_eq!(
        save_near(store, &revised, "").await.0,
        SaveOutcome::Updated { id, deliveries: 0 }
    );
    let (outcome, shown) = save_near(
        store,
        &keyed(src, "https://c.example/1", &[i64::MAX], "x"),
        "",
    )
    .await;
    assert!(shown.is_empty(), "the old keys are gone: {shown:?}");
    assert!(matches!(outcome, SaveOutcome::New { .. }));
    let (outcome, shown) = save_near(
        store,
        &keyed(src, "https://c.example/2", &[99], "y"),
        "orig-v2",
    )
    .await;
    assert_eq!(shown, ["orig-v2"]);
    assert!(
        matches!(outcome, SaveOutcome::Duplicate { of, near: true, .. } if of == id),
        "{outcome:?}"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(near_duplicates_are_found_through_shared_band_keys_inside_the_window);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_finds_candidates_by_band_key_and_story_id_never_by_scanning() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let store = store::SqliteStore::connect(&db.url, 1).await.unwrap();
    let probe = keyed(1, "https://a.example/1", &[1, 2, 3], "fp");
    let plans = store
        .explain_save_story_lookups(&probe, Utc::now() - Duration::days(7))
        .await
        .unwrap();
    let plan = |lookup: &str| {
        plans
            .iter()
            .find(|p| p.lookup == lookup)
            .map(|p| p.lines.join("\n"))
            .unwrap()
    };
    for p in &plans {
        assert!(
            !p.lines.iter().any(|l| l.contains("SCAN s ")
                || l.trim_end().ends_with("SCAN s")
                || l.contains("SCAN stories")
                || l.contains("SCAN story_bands")),
            "{}: {:#?}",
            p.lookup,
            p.lines
        );
    }
    let near = plan("near_dup_candidates");
    assert!(near.contains("USING PRIMARY KEY (band_key=?"), "{near}");
    assert!(
        near.contains("SEARCH s USING INTEGER PRIMARY KEY (rowid=?)"),
        "{near}"
    );
    assert!(
        plan("story_by_content_hash").contains("stories_content_hash_id_idx"),
        "{plans:#?}"
    );
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_explains_its_lookups_with_custom_and_generic_plans() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let store = store::PostgresStore::connect(&db.url, 1).await.unwrap();
    let probe = keyed(1, "https://a.example/it's", &[1, -2, i64::MAX], "fp");
    for generic in [false, true] {
        let plans = store
            .explain_save_story_lookups(&probe, Utc::now() - Duration::days(7), generic)
            .await
            .unwrap();
        let lookups: Vec<&str> = plans.iter().map(|p| p.lookup).collect();
        assert_eq!(
            lookups,
            [
                "story_by_canonical_url",
                "story_by_content_hash",
                "near_dup_candidates"
            ]
        );
        assert!(plans.iter().all(|p| !p.lines.is_empty()));
        let near = plans[2].lines.join("\n");
        assert!(near.contains("story_bands"), "{near}");
    }
    store.close().await;
    db.cleanup().await;
}

async fn stories_older_than_the_window_leave_the_near_duplicate_index(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    let store = store.as_ref();
    let aged = |url: &str, key: i64, days: i64| {
        let mut s = keyed(src, url, &[key, key + 1000], url);
        s.fetched_at = Utc::now() - Duration::days(days);
        s
    };
    // Two stories past a 7-day window, one inside it; saved oldest last so that ids do
    // not follow fetch times.
    let mut ids = Vec::new();
    for s in [
        aged("https://a.example/9-days", 1, 9),
        aged("https://a.example/2-days", 3, 2),
        aged("https://a.example/8-days", 2, 8),
    ] {
        let (outcome, _) = save_near(store, &s, "").await;
        let SaveOutcome::New { id, .. } = outcome else {
            panic!("{outcome:?}")
        };
        ids.push(id);
    }
    let (nine, two, eight) = (ids[0], ids[1], ids[2]);
    assert_eq!(db.banded_story_ids().await, [nine, two, eight]);
    let before = Utc::now() - Duration::days(7);
    assert_eq!(store.prune_bands(before, 1).await.unwrap(), 1);
    assert_eq!(db.banded_story_ids().await, [two, eight], "oldest id first");
    assert_eq!(store.prune_bands(before, 1).await.unwrap(), 1);
    assert_eq!(
        store.prune_bands(before, 1).await.unwrap(),
        0,
        "nothing left"
    );
    assert_eq!(store.prune_bands(before, 100).await.unwrap(), 0);
    assert_eq!(
        db.banded_story_ids().await,
        [two],
        "the recent story keeps its rows"
    );

    // The stories themselves stay, and the recent one is still found by its keys.
    assert_eq!(db.story_rows().await.len(), 3);
    let (outcome, shown) =
        save_near(store, &keyed(src, "https://b.example/x", &[3], "y"), "").await;
    assert_eq!(shown, ["https://a.example/2-days"]);
    assert!(matches!(outcome, SaveOutcome::New { .. }));
    store.close().await;
    db.cleanup().await;
}
both_backends!(stories_older_than_the_window_leave_the_near_duplicate_index);

async fn a_poll_that_lost_its_lease_writes_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    let now = Utc::now();
    let claimed = |owner: &'static str, at: chrono::DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .claim_every_source(owner, at, at + Duration::minutes(1))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(claimed("a/1", now).await, 1);
    assert_eq!(claimed("b/1", now).await, 0, "a live lease is not taken");
    // a's poll outlives its lease, and b claims the source.
    assert_eq!(claimed("b/1", now + Duration::minutes(2)).await, 1);
    let poll = |owner: &str| PollWrite {
        source_id: src,
        lease_owner: owner.into(),
        polled_at: now,
        outcome: PollOutcome::Fetched {
            status: 200,
            validators: Some(store::StoredValidators {
                etag: Some("\"late\"".into()),
                last_modified: None,
            }),
            next_poll_at: now,
        },
        stories: vec![prepared(
            &story(src, "https://hongkongfp.com/late", "late tariffs"),
            &tariff_match(),
        )],
        page_failures: Vec::new(),
        pages_done: Vec::new(),
        window_start: now - Duration::days(7),
    };
    let never = |_: &[u8], _: &[u8]| false;
    let late = store
        .save_poll(&poll("a/1"), &never, &OneWebhook)
        .await
        .unwrap();
    assert_eq!(late, PollSave::LeaseLost);
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.stories, counts.matches, counts.deliveries_pending),
        (0, 0, 0)
    );
    assert_eq!(db.source_etag("hkfp").await, None);

    let current = store
        .save_poll(&poll("b/1"), &never, &OneWebhook)
        .await
        .unwrap();
    assert!(matches!(current, PollSave::Saved { .. }), "{current:?}");
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.stories, counts.deliveries_pending), (1, 1));
    assert_eq!(db.source_etag("hkfp").await.as_deref(), Some("\"late\""));
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_poll_that_lost_its_lease_writes_nothing);

/// A group of polls (the writer's group commit) is one transaction in which each poll
/// is still fenced by its own lease, and the verdicts inside a poll see its own
/// earlier stories: a second URL with the same body is an exact duplicate, the same
/// URL with a new body an update, and a copy in a later poll of the group a duplicate.
async fn polls_stored_together_keep_their_own_fences_and_verdicts(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = store::connect(&db.url, 2).await.unwrap();
    let spec = |name: &str| SourceSpec {
        name: name.into(),
        kind: "feed".into(),
        url: format!("https://{name}.example/feed/"),
        enabled: true,
    };
    let rows = store
        .sync_sources(&[spec("one"), spec("two")])
        .await
        .unwrap();
    let (src, other) = (rows[0].id, rows[1].id);
    let now = Utc::now();
    let claim = |owner: &'static str, at: chrono::DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .claim_every_source(owner, at, at + Duration::minutes(1))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(claim("a/1", now).await, 2);
    assert_eq!(claim("b/1", now + Duration::minutes(2)).await, 2);
    let poll = |source_id: i64, owner: &str, stories: Vec<PreparedStory>| PollWrite {
        source_id,
        lease_owner: owner.into(),
        polled_at: now,
        outcome: PollOutcome::Fetched {
            status: 200,
            validators: None,
            next_poll_at: now,
        },
        stories,
        page_failures: Vec::new(),
        pages_done: Vec::new(),
        window_start: now - Duration::days(7),
    };
    let first = story(src, "https://hongkongfp.com/a", "steel tariffs rise");
    let copy = story(src, "https://hongkongfp.com/b", "steel tariffs rise");
    let changed = story(src, "https://hongkongfp.com/a", "steel tariffs rise again");
    let late_copy = story(other, "https://two.example/c", "steel tariffs rise again");
    let stale = poll(
        src,
        "a/1",
        vec![prepared(&story(src, "https://hongkongfp.com/z", "z"), &[])],
    );
    let current = poll(
        src,
        "b/1",
        vec![
            prepared(&first, &tariff_match()),
            prepared(&copy, &tariff_match()),
            prepared(&changed, &tariff_match()),
        ],
    );
    let later = poll(other, "b/1", vec![prepared(&late_copy, &tariff_match())]);
    let never = |_: &[u8], _: &[u8]| false;
    let saved = store
        .save_polls(
            &[
                (&stale, &OneWebhook),
                (&current, &OneWebhook),
                (&later, &OneWebhook),
            ],
            &never,
        )
        .await
        .unwrap();
    assert_eq!(
        saved[0],
        PollSave::LeaseLost,
        "the stale poll is fenced off"
    );
    let PollSave::Saved { stories, .. } = &saved[1] else {
        panic!("the current poll is stored: {:?}", saved[1]);
    };
    let SaveOutcome::New {
        id: a,
        deliveries: 1,
    } = stories[0]
    else {
        panic!("the first story is new and alerted: {:?}", stories[0]);
    };
    assert!(
        matches!(stories[1], SaveOutcome::Duplicate { of, near: false, deliveries: 0, .. } if of == a),
        "the same body under a second URL is an exact duplicate: {:?}",
        stories[1]
    );
    assert!(
        matches!(stories[2], SaveOutcome::Updated { id, deliveries: 0 } if id == a),
        "the same URL with a new body is an update: {:?}",
        stories[2]
    );
    let PollSave::Saved { stories, .. } = &saved[2] else {
        panic!("the later poll is stored: {:?}", saved[2]);
    };
    assert!(
        matches!(stories[0], SaveOutcome::Duplicate { of, near: false, deliveries: 0, .. } if of == a),
        "a copy of the updated text in a later poll is its duplicate: {:?}",
        stories[0]
    );
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.stories, counts.deliveries_pending), (3, 1));
    store.close().await;
    db.cleanup().await;
}
both_backends!(polls_stored_together_keep_their_own_fences_and_verdicts);

async fn leases_are_released_by_their_instance_or_all_at_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, _) = open(&db).await;
    let now = Utc::now();
    let claim = |owner: &'static str| {
        let store = store.clone();
        async move {
            store
                .claim_every_source(owner, now, now + Duration::hours(1))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(claim("a-1/3").await, 1);
    assert_eq!(store.release_leases(Some("a-10")).await.unwrap(), 0);
    assert_eq!(store.release_leases(Some("a-1")).await.unwrap(), 1);
    assert_eq!(store.release_leases(Some("a-1")).await.unwrap(), 0);
    assert_eq!(
        claim("a-10/1").await,
        1,
        "a released source is claimed at once"
    );
    assert_eq!(
        store.release_leases(Some("a-1")).await.unwrap(),
        0,
        "another instance whose name starts alike keeps its lease"
    );
    assert_eq!(store.release_leases(None).await.unwrap(), 1);
    store.close().await;
    db.cleanup().await;
}
both_backends!(leases_are_released_by_their_instance_or_all_at_once);

async fn two_writers_storing_near_copies_at_once_alert_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (a, src) = open(&db).await;
    // A second pool, as a second daemon would have.
    let b = store::connect(&db.url, 2).await.unwrap();
    // Each round: two near copies (other URL, other body, shared band keys) stored by
    // the two writers at the same instant. Whichever commits second must see the first.
    let rounds = 12;
    for round in 0..rounds {
        let keys = [round * 10 + 1, round * 10 + 2, round * 10 + 3];
        let mut original = keyed(
            src,
            &format!("https://a.example/near/{round}"),
            &keys,
            "copy",
        );
        let mut copy = keyed(
            src,
            &format!("https://b.example/near/{round}"),
            &keys,
            "copy",
        );
        original.body = format!("new tariffs on steel, round {round}");
        copy.body = format!("new tariffs on steel and iron, round {round}");
        for s in [&mut original, &mut copy] {
            s.content_hash = blake3::hash(s.body.as_bytes()).to_hex().to_string();
        }
        let same = |mine: &[u8], theirs: &[u8]| mine == theirs;
        let save = |store: Arc<dyn Store>, s: NewStory| async move {
            store
                .save_story(
                    &prepared(&s, &tariff_match()),
                    Utc::now() - Duration::days(7),
                    &same,
                    &OneWebhook,
                )
                .await
                .unwrap()
        };
        let (x, y) = tokio::join!(save(a.clone(), original), save(b.clone(), copy));
        let alerted: usize = [x, y].iter().map(SaveOutcome::deliveries).sum();
        assert_eq!(alerted, 1, "round {round}: {x:?} {y:?}");
        let near = [x, y]
            .iter()
            .filter(|o| matches!(o, SaveOutcome::Duplicate { near: true, .. }))
            .count();
        assert_eq!(
            near, 1,
            "round {round}: one copy is the other's duplicate: {x:?} {y:?}"
        );
    }
    let counts = a.counts().await.unwrap();
    assert_eq!(
        (counts.stories, counts.deliveries_pending),
        (2 * rounds, rounds)
    );
    a.close().await;
    b.close().await;
    db.cleanup().await;
}
both_backends!(two_writers_storing_near_copies_at_once_alert_once);

async fn an_instance_renews_and_takes_back_its_source_and_delivery_leases(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    save(
        store.as_ref(),
        &story(src, "https://h.example/lease", "lease tariffs"),
        &tariff_match(),
    )
    .await;
    let hooks = vec!["w".to_string()];
    let now = Utc::now();
    let minute = now + Duration::minutes(1);
    let sources = |owner: &'static str, at: chrono::DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .claim_every_source(owner, at, at + Duration::minutes(1))
                .await
                .unwrap()
                .len()
        }
    };
    let deliveries = |owner: &'static str, at: chrono::DateTime<Utc>| {
        let (store, hooks) = (store.clone(), hooks.clone());
        async move {
            store
                .claim_due_deliveries(owner, &hooks, at, at + Duration::minutes(1), 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(sources("a/r/1", now).await, 1);
    assert_eq!(deliveries("a/r", now).await.len(), 1);
    // Renewed past the first minute: another daemon finds nothing two minutes on.
    let renewed = store
        .renew_leases("a/r", now + Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(renewed, 2, "the source and the delivery");
    assert_eq!(
        store.renew_leases("a/s", minute).await.unwrap(),
        0,
        "another run of the daemon renews nothing of this one's"
    );
    assert_eq!(store.renew_leases("b/r", minute).await.unwrap(), 0);
    let later = now + Duration::minutes(2);
    assert_eq!(sources("b/r/1", later).await, 0);
    assert!(deliveries("b/r", later).await.is_empty());
    // A restarted `a` takes back both, whatever their expiry: due at once again.
    assert_eq!(store.release_leases(Some("b")).await.unwrap(), 0);
    assert_eq!(store.release_leases(Some("a")).await.unwrap(), 2);
    let now = Utc::now();
    assert_eq!(sources("b/r/2", now).await, 1);
    let taken = deliveries("b/r", now).await;
    assert_eq!(taken.len(), 1, "the delivery is due at once");
    // An attempt ends the claim: nothing of b's is left to renew but its source.
    store
        .record_delivery(
            taken[0].id,
            &store::DeliveryResult::Retry {
                status_code: Some(503),
                error: "busy".into(),
                next_attempt_at: now + Duration::hours(1),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(store.renew_leases("b/r", minute).await.unwrap(), 1);
    assert_eq!(store.release_leases(None).await.unwrap(), 1);
    store.close().await;
    db.cleanup().await;
}
both_backends!(an_instance_renews_and_takes_back_its_source_and_delivery_leases);

fn spec(name: &str, url: &str) -> SourceSpec {
    SourceSpec {
        name: name.into(),
        kind: "feed".into(),
        url: url.into(),
        enabled: true,
    }
}

async fn a_reload_takes_back_the_leases_of_sources_removed_or_moved_and_brings_polls_forward(
    backend: Backend,
) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = store::connect(&db.url, 2).await.unwrap();
    let specs = [
        spec("a", "https://a.example/feed"),
        spec("b", "https://b.example/feed"),
        spec("c", "https://c.example/feed"),
    ];
    store.sync_sources(&specs).await.unwrap();
    let now = Utc::now();
    let polled = store
        .claim_every_source("x/1", now, now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(polled.len(), 3);

    // Polls of all three under way; the new file keeps a, moves b, drops c.
    store
        .sync_sources(&[
            spec("a", "https://a.example/feed"),
            spec("b", "https://b.example/new-feed"),
        ])
        .await
        .unwrap();
    let free: Vec<String> = store
        .claim_every_source("y/1", now, now + Duration::hours(1))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        free,
        ["b"],
        "a keeps its poll's lease; b's was taken back; c is disabled"
    );

    // Scheduled an hour out, then one source's interval shrinks to a minute.
    store.release_leases(None).await.unwrap();
    let later = now + Duration::hours(1);
    store.sync_sources(&specs[..2]).await.unwrap();
    for row in store.claim_every_source("z/1", now, later).await.unwrap() {
        assert!(store.release_source(row.id, "z/1", later).await.unwrap());
    }
    let soon = now + Duration::minutes(1);
    let moved = store
        .bring_polls_forward(&[("a".into(), soon), ("b".into(), later + Duration::hours(1))])
        .await
        .unwrap();
    assert_eq!(moved, 1, "a poll is brought forward, never pushed back");
    let next = store.next_poll_due(now).await.unwrap().unwrap();
    assert!(
        (next - soon).num_milliseconds().abs() < 1,
        "{next} is a's new time {soon}"
    );
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_reload_takes_back_the_leases_of_sources_removed_or_moved_and_brings_polls_forward);
