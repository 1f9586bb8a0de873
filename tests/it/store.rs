//! The Store contract, on SQLite and on Postgres alike: the verdict on a story
//! (new, unchanged, update, duplicate) is taken in its transaction together
//! with its matches and outbox rows; racing writers cannot both win; claims
//! hide what they claimed.

use std::sync::Arc;

use chrono::{Duration, Utc};
use feedwatch::store::{
    self, NewStory, OutboxEntry, PollRecord, SaveOutcome, SourceSpec, SourceState, Store,
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
        simhash: None,
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

fn one_alert(id: i64) -> Vec<OutboxEntry> {
    vec![OutboxEntry {
        webhook: "w".into(),
        payload: format!("{{\"story\":{id}}}"),
    }]
}

async fn save(store: &dyn Store, s: &NewStory, m: &[TopicMatch]) -> SaveOutcome {
    let never = |_: &[u8]| false;
    store
        .save_story(s, m, Utc::now() - Duration::days(7), &never, &one_alert)
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
        SaveOutcome::Updated { id }
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
        .claim_due_deliveries(&hooks, now, now + Duration::minutes(5), 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let second = store
        .claim_due_deliveries(&hooks, now, now + Duration::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "claimed rows are not handed out twice");
    assert!(first.iter().all(|d| d.id != second[0].id));
    let later = now + Duration::minutes(6);
    let again = store
        .claim_due_deliveries(&hooks, later, later + Duration::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        3,
        "an unfinished claim is taken again after its lease"
    );
    let other = store
        .claim_due_deliveries(&["other".to_string()], later, later, 10)
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

async fn a_failure_streak_is_counted_and_reset(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, src) = open(&db).await;
    let fail = |at| PollRecord {
        source_id: src,
        polled_at: at,
        status: Some(503),
        error: Some("HTTP 503".into()),
        etag: None,
        last_modified: None,
        next_poll_at: at,
        state: SourceState::Active,
    };
    let t0 = Utc::now();
    let c1 = store.finish_poll(&fail(t0)).await.unwrap();
    let c2 = store
        .finish_poll(&fail(t0 + Duration::minutes(1)))
        .await
        .unwrap();
    assert_eq!((c1.before, c1.after, c2.after), (0, 1, 2));
    assert_eq!(
        c1.since.map(|t| t.timestamp_micros()),
        Some(t0.timestamp_micros())
    );
    assert_eq!(c2.since, c1.since, "the streak keeps its start");
    let ok = PollRecord {
        status: Some(200),
        error: None,
        etag: Some("\"v1\"".into()),
        ..fail(t0 + Duration::minutes(2))
    };
    let c3 = store.finish_poll(&ok).await.unwrap();
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
