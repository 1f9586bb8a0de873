//! The verdict and the alert rule, written once for both backends (DESIGN §3, §6).
//! A poll's write runs here: fence the lease, take the verdict on each story
//! (unchanged, updated, exact or near duplicate, new), queue the alerts its
//! cluster has not had yet, count the page attempts, record the source's health
//! and raise its events. The backends supply only dialect: each implements
//! [`PollTx`], a set of small statements on a connection inside a transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    NearDupCheck, NewStory, OutboxEntry, OutboxPolicy, PageFailure, PollOutcome, PollSave,
    PollWrite, PreparedStory, SaveOutcome, SourceState, StoreResult, StoredValidators,
    StreakChange, to_micros,
};
use crate::topics::TopicMatch;

/// A stored story found by its identity.
pub(crate) struct StoredStory {
    pub id: i64,
    /// The first story of its cluster (itself unless it is a duplicate).
    pub cluster: i64,
    pub content_hash: String,
    pub raw_hash: Option<String>,
}

/// A near-duplicate candidate from the band index.
pub(crate) struct Candidate {
    pub cluster: i64,
    pub fingerprint: Vec<u8>,
}

/// A source's failure streak as stored.
pub(crate) struct Streak {
    pub failures: i32,
    pub since: Option<DateTime<Utc>>,
}

/// The statements a backend runs inside a write transaction. Each is one round trip
/// in the backend's own SQL; the order and the decisions are [`save_poll`]'s.
#[async_trait]
pub(crate) trait PollTx: Send {
    /// Locks the source's row if `owner` still holds its lease, and reads its streak.
    async fn fence_source(&mut self, source_id: i64, owner: &str) -> StoreResult<Option<Streak>>;
    /// Serialises verdicts on these stories' identities and contents with other writers
    /// (Postgres: advisory locks taken in one order; SQLite: the write lock already does).
    async fn lock_stories(&mut self, stories: &[PreparedStory]) -> StoreResult<()>;
    async fn story_by_canonical_url(
        &mut self,
        canonical_url: &str,
    ) -> StoreResult<Option<StoredStory>>;
    /// The cluster of the first story with this content hash.
    async fn cluster_by_content_hash(&mut self, content_hash: &str) -> StoreResult<Option<i64>>;
    /// Stories fetched since `window_start` sharing band keys with `band_keys`, most shared first.
    async fn near_dup_candidates(
        &mut self,
        band_keys: &[i64],
        window_start: DateTime<Utc>,
    ) -> StoreResult<Vec<Candidate>>;
    /// Inserts the story; `None` if its canonical URL was taken meanwhile.
    async fn insert_story(
        &mut self,
        story: &NewStory,
        duplicate_of: Option<i64>,
    ) -> StoreResult<Option<i64>>;
    /// Overwrites the story's content (an update of the same URL).
    async fn update_story(&mut self, id: i64, story: &NewStory) -> StoreResult<()>;
    /// Records the entry hash of a story whose content did not change.
    async fn set_raw_hash(&mut self, id: i64, raw_hash: Option<&str>) -> StoreResult<()>;
    /// Replaces the story's band rows (`fresh`: it has none yet).
    async fn put_bands(&mut self, id: i64, band_keys: &[i64], fresh: bool) -> StoreResult<()>;
    /// Replaces the story's matches (`fresh`: it has none yet).
    async fn put_matches(
        &mut self,
        id: i64,
        matches: &[TopicMatch],
        now: DateTime<Utc>,
        fresh: bool,
    ) -> StoreResult<()>;
    /// Records that `webhook` is alerted of `topics` for `cluster` (by `story_id`) and
    /// returns those that were not already: the only ones to send.
    async fn claim_alerts(
        &mut self,
        cluster: i64,
        story_id: i64,
        webhook: &str,
        topics: &[&str],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
    /// Queues deliveries, once per (event key, webhook); returns how many were new.
    async fn insert_outbox(
        &mut self,
        event: &str,
        event_key: &str,
        story_id: Option<i64>,
        source_id: Option<i64>,
        entries: &[OutboxEntry],
        now: DateTime<Utc>,
    ) -> StoreResult<usize>;
    /// Tells listeners on commit that a story has queued alerts (Postgres `NOTIFY`).
    async fn announce_match(&mut self, story_id: i64) -> StoreResult<()>;
    async fn page_failed(
        &mut self,
        source_id: i64,
        page: &PageFailure,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn pages_done(&mut self, source_id: i64, urls: &[String]) -> StoreResult<()>;
    /// A poll that got an answer: streak reset, validators (when given) and schedule set,
    /// lease released.
    async fn source_polled(
        &mut self,
        source_id: i64,
        polled_at: DateTime<Utc>,
        status: i32,
        validators: Option<&StoredValidators>,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// A failed poll: streak + 1 starting at `since`, lease released.
    #[allow(clippy::too_many_arguments)]
    async fn source_failed(
        &mut self,
        source_id: i64,
        polled_at: DateTime<Utc>,
        status: Option<i32>,
        error: &str,
        state: SourceState,
        since: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// A poll never made: only the schedule and `last_error` move, lease released.
    async fn source_deferred(
        &mut self,
        source_id: i64,
        next_poll_at: DateTime<Utc>,
        note: &str,
    ) -> StoreResult<()>;
}

/// Writes `poll` through `tx` (inside a transaction the caller commits on `Ok` and
/// rolls back on `Err`).
pub(crate) async fn save_poll<T: PollTx + ?Sized>(
    tx: &mut T,
    poll: &PollWrite,
    near_dup: NearDupCheck<'_>,
    outbox: &dyn OutboxPolicy,
) -> StoreResult<PollSave> {
    let Some(streak) = tx.fence_source(poll.source_id, &poll.lease_owner).await? else {
        return Ok(PollSave::LeaseLost);
    };
    tx.lock_stories(&poll.stories).await?;
    let mut stories = Vec::with_capacity(poll.stories.len());
    for story in &poll.stories {
        stories.push(save_story(tx, story, poll.window_start, near_dup, outbox).await?);
    }
    let now = Utc::now();
    for page in &poll.page_failures {
        tx.page_failed(poll.source_id, page, now).await?;
    }
    if !poll.pages_done.is_empty() {
        tx.pages_done(poll.source_id, &poll.pages_done).await?;
    }
    let (streak, error) = match &poll.outcome {
        PollOutcome::Fetched {
            status,
            validators,
            next_poll_at,
        } => {
            tx.source_polled(
                poll.source_id,
                poll.polled_at,
                *status,
                validators.as_ref(),
                *next_poll_at,
            )
            .await?;
            let change = StreakChange {
                before: streak.failures,
                after: 0,
                since: streak.since,
            };
            (Some(change), None)
        }
        PollOutcome::Failed {
            status,
            error,
            state,
            next_poll_at,
        } => {
            let since = streak.since.unwrap_or_else(|| to_micros(poll.polled_at));
            tx.source_failed(
                poll.source_id,
                poll.polled_at,
                *status,
                error,
                *state,
                since,
                *next_poll_at,
            )
            .await?;
            let change = StreakChange {
                before: streak.failures,
                after: streak.failures + 1,
                since: Some(since),
            };
            (Some(change), Some(error.as_str()))
        }
        PollOutcome::Deferred { next_poll_at, note } => {
            tx.source_deferred(poll.source_id, *next_poll_at, note)
                .await?;
            (None, None)
        }
    };
    let mut source_events = 0;
    if let Some(event) = streak
        .as_ref()
        .and_then(|change| outbox.source_event(poll.source_id, change, error))
    {
        source_events = tx
            .insert_outbox(
                event.event,
                &event.event_key,
                None,
                Some(poll.source_id),
                &event.entries,
                now,
            )
            .await?;
    }
    Ok(PollSave::Saved {
        stories,
        streak,
        source_events,
    })
}

/// The verdict on one story (DESIGN §3), then its alerts (§6).
pub(crate) async fn save_story<T: PollTx + ?Sized>(
    tx: &mut T,
    prepared: &PreparedStory,
    window_start: DateTime<Utc>,
    near_dup: NearDupCheck<'_>,
    outbox: &dyn OutboxPolicy,
) -> StoreResult<SaveOutcome> {
    let story = &prepared.story;
    let now = story.fetched_at;
    // Identity: the canonical URL.
    if let Some(stored) = tx.story_by_canonical_url(&story.canonical_url).await? {
        if stored.content_hash == story.content_hash {
            if stored.raw_hash != story.raw_hash {
                // The entry changed in ways the text does not show (markup, a date):
                // remember it, so the next poll's cheap check skips it.
                tx.set_raw_hash(stored.id, story.raw_hash.as_deref())
                    .await?;
            }
            return Ok(SaveOutcome::Unchanged { id: stored.id });
        }
        tx.update_story(stored.id, story).await?;
        tx.put_bands(stored.id, &story.band_keys, false).await?;
        tx.put_matches(stored.id, &prepared.matches, now, false)
            .await?;
        let deliveries =
            queue_alerts(tx, stored.cluster, stored.id, false, prepared, outbox).await?;
        return Ok(SaveOutcome::Updated {
            id: stored.id,
            deliveries,
        });
    }

    // Exact duplicate: the same normalised body under another URL; else a near one.
    let mut duplicate = tx
        .cluster_by_content_hash(&story.content_hash)
        .await?
        .map(|cluster| (cluster, false));
    if let (None, Some(mine)) = (duplicate, story.fingerprint.as_deref())
        && !story.band_keys.is_empty()
    {
        let candidates = tx
            .near_dup_candidates(&story.band_keys, window_start)
            .await?;
        duplicate = candidates
            .iter()
            .find(|c| near_dup(mine, &c.fingerprint))
            .map(|c| (c.cluster, true));
    }

    let Some(id) = tx.insert_story(story, duplicate.map(|d| d.0)).await? else {
        // Another writer took the URL in between (only if something bypassed the
        // locks): the row that won stands, and this copy is left for the next poll.
        let stored = tx.story_by_canonical_url(&story.canonical_url).await?;
        let stored = stored.ok_or(sqlx::Error::RowNotFound)?;
        return Ok(SaveOutcome::Unchanged { id: stored.id });
    };
    tx.put_bands(id, &story.band_keys, true).await?;
    tx.put_matches(id, &prepared.matches, now, true).await?;
    let cluster = duplicate.map_or(id, |d| d.0);
    let deliveries = queue_alerts(tx, cluster, id, true, prepared, outbox).await?;
    Ok(match duplicate {
        Some((of, near)) => SaveOutcome::Duplicate {
            id,
            of,
            near,
            deliveries,
        },
        None => SaveOutcome::New { id, deliveries },
    })
}

/// The alert rule: each (cluster, topic) reaches each subscribed webhook once, the
/// first time any story of the cluster matches it. One delivery per webhook carries
/// every topic newly alerted in this write.
async fn queue_alerts<T: PollTx + ?Sized>(
    tx: &mut T,
    cluster: i64,
    story_id: i64,
    inserted: bool,
    prepared: &PreparedStory,
    outbox: &dyn OutboxPolicy,
) -> StoreResult<usize> {
    if prepared.matches.is_empty() {
        return Ok(0);
    }
    let now = prepared.story.fetched_at;
    let mut queued = 0;
    for target in outbox.story_targets(&prepared.story, &prepared.matches) {
        let wanted: Vec<&str> = target
            .topics
            .iter()
            .map(|&i| prepared.matches[i].topic.as_str())
            .collect();
        let claimed = tx
            .claim_alerts(cluster, story_id, &target.webhook, &wanted, now)
            .await?;
        if claimed.is_empty() {
            continue;
        }
        let topics: Vec<&TopicMatch> = prepared
            .matches
            .iter()
            .filter(|m| claimed.contains(&m.topic))
            .collect();
        let entry = OutboxEntry {
            payload: outbox.story_payload(&target.webhook, story_id, &prepared.story, &topics),
            webhook: target.webhook,
        };
        // A story's first delivery keeps the key `story:<id>`; a later one (an update
        // that came to match) names the topics it adds, which are never alerted twice.
        let key = if inserted {
            format!("story:{story_id}")
        } else {
            let mut names: Vec<&str> = topics.iter().map(|m| m.topic.as_str()).collect();
            names.sort_unstable();
            format!("story:{story_id}:{}", names.join(","))
        };
        queued += tx
            .insert_outbox(
                "story.matched",
                &key,
                Some(story_id),
                None,
                std::slice::from_ref(&entry),
                now,
            )
            .await?;
    }
    if queued > 0 {
        tx.announce_match(story_id).await?;
    }
    Ok(queued)
}
