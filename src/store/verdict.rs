//! The verdict and the alert rule, written once for both backends (DESIGN §3, §6).
//! A poll's write runs here: fence the lease, take the verdict on each story
//! (unchanged, updated, exact or near duplicate, new), queue the alerts its
//! cluster has not had yet, count the page attempts, record the source's health
//! and raise its events. The backends supply only dialect: each implements
//! [`PollTx`], a set of small statements on a connection inside a transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    NearDupCheck, NewStory, OutboxEntry, OutboxPolicy, PageFailure, PollOutcome, PollSave,
    PollWrite, PreparedStory, SaveOutcome, SourceState, StoreResult, StoredValidators,
    StreakChange, to_micros,
};
use crate::topics::TopicMatch;

/// A stored story found by its identity.
#[derive(Clone)]
pub(crate) struct StoredStory {
    pub id: i64,
    /// The first story of its cluster (itself unless it is a duplicate).
    pub cluster: i64,
    pub content_hash: String,
    pub raw_hash: Option<String>,
}

/// The identities and content hashes of a poll's stories as the store holds them,
/// read in one statement ([`PollTx::identify`]) instead of two per story, and kept
/// true while the poll's own stories are written. A key the write may have changed in
/// a way this cannot follow is forgotten, and read again on its own if it is needed.
#[derive(Default)]
pub(crate) struct Known {
    /// Canonical URL → the story under it (`None`: there is none).
    by_url: HashMap<String, Option<StoredStory>>,
    /// Content hash → `(id, cluster)` of the first story with it (`None`: there is none).
    by_hash: HashMap<String, Option<(i64, i64)>>,
}

impl Known {
    /// Reads what the store holds for `stories`: every key asked is known afterwards.
    async fn load<T: PollTx + ?Sized>(tx: &mut T, stories: &[PreparedStory]) -> StoreResult<Known> {
        let mut urls: Vec<&str> = stories
            .iter()
            .map(|p| p.story.canonical_url.as_str())
            .collect();
        let mut hashes: Vec<&str> = stories
            .iter()
            .map(|p| p.story.content_hash.as_str())
            .collect();
        urls.sort_unstable();
        urls.dedup();
        hashes.sort_unstable();
        hashes.dedup();
        let mut known = Known::default();
        if urls.is_empty() {
            return Ok(known);
        }
        let found = tx.identify(&urls, &hashes).await?;
        known.by_url = urls.iter().map(|u| (u.to_string(), None)).collect();
        known.by_hash = hashes.iter().map(|h| (h.to_string(), None)).collect();
        for (url, story) in found.by_url {
            known.by_url.insert(url, Some(story));
        }
        for (hash, first) in found.by_hash {
            known.by_hash.insert(hash, Some(first));
        }
        Ok(known)
    }

    async fn story_by_canonical_url<T: PollTx + ?Sized>(
        &self,
        tx: &mut T,
        url: &str,
    ) -> StoreResult<Option<StoredStory>> {
        match self.by_url.get(url) {
            Some(known) => Ok(known.clone()),
            None => tx.story_by_canonical_url(url).await,
        }
    }

    async fn cluster_by_content_hash<T: PollTx + ?Sized>(
        &self,
        tx: &mut T,
        hash: &str,
    ) -> StoreResult<Option<i64>> {
        match self.by_hash.get(hash) {
            Some(known) => Ok(known.map(|(_, cluster)| cluster)),
            None => tx.cluster_by_content_hash(hash).await,
        }
    }

    /// The entry hash of `url`'s story was set.
    fn raw_hash_set(&mut self, url: &str, raw_hash: Option<&str>) {
        if let Some(Some(stored)) = self.by_url.get_mut(url) {
            stored.raw_hash = raw_hash.map(str::to_string);
        }
    }

    /// `url`'s story now has `story`'s content: the first story of its old and of its
    /// new hash may have changed, so both are read again if needed.
    fn updated(&mut self, url: &str, story: &NewStory) {
        if let Some(Some(stored)) = self.by_url.get_mut(url) {
            self.by_hash.remove(&stored.content_hash);
            stored.content_hash = story.content_hash.clone();
            stored.raw_hash = story.raw_hash.clone();
        }
        self.by_hash.remove(&story.content_hash);
    }

    /// `story` was inserted as `id` in `cluster`. Ids grow, so a hash already held by a
    /// stored story keeps its first story.
    fn inserted(&mut self, story: &NewStory, id: i64, cluster: i64) {
        self.by_url.insert(
            story.canonical_url.clone(),
            Some(StoredStory {
                id,
                cluster,
                content_hash: story.content_hash.clone(),
                raw_hash: story.raw_hash.clone(),
            }),
        );
        if let Some(first @ None) = self.by_hash.get_mut(&story.content_hash) {
            *first = Some((id, cluster));
        }
    }

    /// The insert of `url` lost to another writer: what is there is read again.
    fn forget_url(&mut self, url: &str) {
        self.by_url.remove(url);
    }
}

/// What [`PollTx::identify`] found.
pub(crate) struct Identified {
    /// The stories under the URLs asked (those that exist).
    pub by_url: Vec<(String, StoredStory)>,
    /// `(id, cluster)` of the first story with each hash asked (those that exist).
    pub by_hash: Vec<(String, (i64, i64))>,
}

/// A row of [`PollTx::identify`]'s statement: `by_url` true for the story under an
/// asked URL (`key`), false for the first story of an asked hash (`key`).
#[derive(sqlx::FromRow)]
pub(crate) struct IdentityRow {
    by_url: bool,
    key: String,
    id: i64,
    cluster: i64,
    content_hash: String,
    raw_hash: Option<String>,
}

impl Identified {
    pub(crate) fn from_rows(rows: Vec<IdentityRow>) -> Identified {
        let mut found = Identified {
            by_url: Vec::new(),
            by_hash: Vec::new(),
        };
        for row in rows {
            if row.by_url {
                let story = StoredStory {
                    id: row.id,
                    cluster: row.cluster,
                    content_hash: row.content_hash,
                    raw_hash: row.raw_hash,
                };
                found.by_url.push((row.key, story));
            } else {
                found.by_hash.push((row.key, (row.id, row.cluster)));
            }
        }
        found
    }
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
    /// The stories stored under these canonical URLs, and the first story (lowest id)
    /// with each of these content hashes, in one statement.
    async fn identify(&mut self, urls: &[&str], hashes: &[&str]) -> StoreResult<Identified>;
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
    /// Inserts the story with its band rows; `None` (and nothing written) if its
    /// canonical URL was taken meanwhile.
    async fn insert_story(
        &mut self,
        story: &NewStory,
        duplicate_of: Option<i64>,
    ) -> StoreResult<Option<i64>>;
    /// Overwrites the story's content (an update of the same URL).
    async fn update_story(&mut self, id: i64, story: &NewStory) -> StoreResult<()>;
    /// Records the entry hash of a story whose content did not change.
    async fn set_raw_hash(&mut self, id: i64, raw_hash: Option<&str>) -> StoreResult<()>;
    /// Replaces the band rows of an updated story.
    async fn replace_bands(&mut self, id: i64, band_keys: &[i64]) -> StoreResult<()>;
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
    let mut known = Known::load(tx, &poll.stories).await?;
    let mut stories = Vec::with_capacity(poll.stories.len());
    for story in &poll.stories {
        let outcome = decide(tx, story, poll.window_start, near_dup, outbox, &mut known).await?;
        stories.push(outcome);
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
    let mut known = Known::default();
    decide(tx, prepared, window_start, near_dup, outbox, &mut known).await
}

/// [`save_story`] with what is already known of the stored identities and hashes.
async fn decide<T: PollTx + ?Sized>(
    tx: &mut T,
    prepared: &PreparedStory,
    window_start: DateTime<Utc>,
    near_dup: NearDupCheck<'_>,
    outbox: &dyn OutboxPolicy,
    known: &mut Known,
) -> StoreResult<SaveOutcome> {
    let story = &prepared.story;
    let now = story.fetched_at;
    // Identity: the canonical URL.
    if let Some(stored) = known
        .story_by_canonical_url(tx, &story.canonical_url)
        .await?
    {
        if stored.content_hash == story.content_hash {
            if stored.raw_hash != story.raw_hash {
                // The entry changed in ways the text does not show (markup, a date):
                // remember it, so the next poll's cheap check skips it.
                tx.set_raw_hash(stored.id, story.raw_hash.as_deref())
                    .await?;
                known.raw_hash_set(&story.canonical_url, story.raw_hash.as_deref());
            }
            return Ok(SaveOutcome::Unchanged { id: stored.id });
        }
        tx.update_story(stored.id, story).await?;
        known.updated(&story.canonical_url, story);
        tx.replace_bands(stored.id, &story.band_keys).await?;
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
    let mut duplicate = known
        .cluster_by_content_hash(tx, &story.content_hash)
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
        known.forget_url(&story.canonical_url);
        let stored = tx.story_by_canonical_url(&story.canonical_url).await?;
        let stored = stored.ok_or(sqlx::Error::RowNotFound)?;
        return Ok(SaveOutcome::Unchanged { id: stored.id });
    };
    let cluster = duplicate.map_or(id, |d| d.0);
    known.inserted(story, id, cluster);
    tx.put_matches(id, &prepared.matches, now, true).await?;
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
