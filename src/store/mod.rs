//! The store: the pipeline's last stage before the notifier, and the only
//! source of truth (DESIGN §5). All SQL lives under this module. The `Store`
//! trait has two implementations over concrete pools — `sqlite` (embedded
//! default) and `postgres` (production, several daemons) — and every method
//! keeps the same contract on both: a story, its matches and its outbox rows
//! are written in one transaction, the new/update/duplicate verdict is taken
//! inside it, and claims of sources and deliveries commit before any HTTP call.

pub mod archive;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::topics::TopicMatch;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Migrations failed to apply.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A row held a value this version cannot read.
    #[error("unexpected value in column {column}: {value:?}")]
    Decode { column: &'static str, value: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A configured source as the store keeps it.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub enabled: bool,
}

/// Health of a source (the `sources.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Polled on its interval.
    Active,
    /// The server answered 403: probably a bot wall; still retried with backoff.
    Blocked,
    /// The server answered 410: not polled again until the config changes its URL.
    Gone,
    /// `enabled = false`, or no longer in the config.
    Disabled,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Active => "active",
            SourceState::Blocked => "blocked",
            SourceState::Gone => "gone",
            SourceState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> StoreResult<SourceState> {
        Ok(match s {
            "active" => SourceState::Active,
            "blocked" => SourceState::Blocked,
            "gone" => SourceState::Gone,
            "disabled" => SourceState::Disabled,
            other => {
                return Err(StoreError::Decode {
                    column: "sources.state",
                    value: other.to_string(),
                });
            }
        })
    }
}

/// A row of `sources`, as the scheduler and fetcher need it.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub state: SourceState,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
}

/// The outcome of one poll, written when the poll's stories are stored.
#[derive(Debug, Clone)]
pub struct PollRecord {
    pub source_id: i64,
    pub polled_at: DateTime<Utc>,
    pub status: Option<i32>,
    /// `None` on success.
    pub error: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub next_poll_at: DateTime<Utc>,
    pub state: SourceState,
}

/// How a source's failure streak changed with a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreakChange {
    /// Consecutive failures before this poll.
    pub before: i32,
    /// Consecutive failures after it.
    pub after: i32,
    /// When the streak began (the first failure of the run), if there is or was one.
    pub since: Option<DateTime<Utc>>,
}

/// A story ready to be stored: normalised, keyed and fingerprinted.
#[derive(Debug, Clone)]
pub struct NewStory {
    pub source_id: i64,
    pub url: String,
    pub canonical_url: String,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub body: String,
    pub author: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
    pub content_hash: String,
    pub simhash: Option<i64>,
    pub fingerprint: Option<Vec<u8>>,
    pub band_keys: Vec<i64>,
}

/// A webhook request to be queued in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub webhook: String,
    pub payload: String,
}

/// Builds the outbox entries of a new story once its id is known.
pub type AlertBuilder<'a> = &'a (dyn Fn(i64) -> Vec<OutboxEntry> + Send + Sync);

/// Decides whether a candidate near-duplicate (by its stored fingerprint bytes) is one.
pub type NearDupCheck<'a> = &'a (dyn Fn(&[u8]) -> bool + Send + Sync);

/// The verdict on a story, taken inside its transaction (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// A story we had not seen: stored, matched, alerted.
    New { id: i64, deliveries: usize },
    /// Same canonical URL, same content hash: nothing written.
    Unchanged { id: i64 },
    /// Same canonical URL, new content: row and matches updated, no alert.
    Updated { id: i64 },
    /// New URL but the same (or nearly the same) content as `of`: stored, matched, not alerted.
    Duplicate { id: i64, of: i64, near: bool },
}

/// The plan the database chose for one of the lookups [`Store::save_story`] makes, from
/// the backends' `explain_save_story_lookups`: benchmarks and tests check with it that each
/// lookup is an index search whatever the table size.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// Which lookup: `story_by_canonical_url`, `story_by_content_hash` or
    /// `near_dup_candidates`.
    pub lookup: &'static str,
    /// The plan, one line per step, as the database prints it.
    pub lines: Vec<String>,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub event: String,
    pub webhook: String,
    pub payload: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    Delivered {
        status_code: i32,
    },
    Retry {
        status_code: Option<i32>,
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
    Dead {
        status_code: Option<i32>,
        error: String,
    },
}

/// A row of `deliveries` for the `deliveries list` command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryInfo {
    pub id: Uuid,
    pub event: String,
    pub event_key: String,
    pub webhook: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Row counts, for summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sources: i64,
    pub stories: i64,
    pub matches: i64,
    pub deliveries_pending: i64,
    pub deliveries_delivered: i64,
    pub deliveries_dead: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Makes `sources` agree with the config: inserts new names, updates kind and
    /// URL (a changed URL reactivates a gone source), disables removed or disabled ones.
    async fn sync_sources(&self, specs: &[SourceSpec]) -> StoreResult<Vec<SourceRow>>;

    /// The active sources due at `now` and not leased by another daemon, leased to
    /// `owner` until `lease_until` (committed before returning).
    async fn claim_due_sources(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SourceRow>>;

    /// The earliest `next_poll_at` of an active source not leased at `now`, if any.
    async fn next_poll_due(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>>;

    /// Records a poll's outcome, releases the lease, and reports the failure streak.
    async fn finish_poll(&self, record: &PollRecord) -> StoreResult<StreakChange>;

    /// Puts off a poll that was never made (its host asked every client to wait):
    /// `next_poll_at` moves, the lease is released and `note` says why in
    /// `last_error`, while the failure streak and validators stay as they were.
    async fn defer_poll(
        &self,
        source_id: i64,
        next_poll_at: DateTime<Utc>,
        note: &str,
    ) -> StoreResult<()>;

    /// Whether a story from this page URL, or with this canonical URL, is stored
    /// (article pages are fetched once).
    async fn story_exists(&self, url: &str, canonical_url: &str) -> StoreResult<bool>;

    /// Stores a story with its matches and, when it is new and not a duplicate,
    /// its outbox rows — all in one transaction.
    async fn save_story(
        &self,
        story: &NewStory,
        matches: &[TopicMatch],
        window_start: DateTime<Utc>,
        near_dup: NearDupCheck<'_>,
        alerts: AlertBuilder<'_>,
    ) -> StoreResult<SaveOutcome>;

    /// Queues `source.failing` / `source.recovered` deliveries (idempotent per event key).
    async fn enqueue_source_event(
        &self,
        event: &str,
        event_key: &str,
        source_id: i64,
        entries: &[OutboxEntry],
        now: DateTime<Utc>,
    ) -> StoreResult<usize>;

    /// Pending deliveries due at `now` for the named webhooks, claimed until `lease_until`.
    async fn claim_due_deliveries(
        &self,
        webhooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;

    /// The earliest `next_attempt_at` of a pending delivery for the named webhooks.
    async fn next_delivery_due(&self, webhooks: &[String]) -> StoreResult<Option<DateTime<Utc>>>;

    /// Records the outcome of one attempt (attempts is incremented).
    async fn record_delivery(
        &self,
        id: Uuid,
        result: &DeliveryResult,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Deliveries, newest first, optionally of one status.
    async fn list_deliveries(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryInfo>>;

    /// Makes dead (or pending) deliveries due now again; `None` means every dead one.
    async fn retry_deliveries(&self, id: Option<Uuid>, now: DateTime<Utc>) -> StoreResult<u64>;

    async fn counts(&self) -> StoreResult<Counts>;

    /// Drops the near-duplicate index rows (`story_bands`) of up to `limit` stories
    /// fetched before `before`, oldest first, and returns how many stories that was.
    /// Such stories are outside the dedup window and never candidates again, so their
    /// rows only cost space and index depth; the stories and their fingerprints stay.
    async fn prune_bands(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;

    /// A trivial round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the pool, waiting for connections to finish.
    async fn close(&self);
}

/// Opens the store `url` names and runs its migrations.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections).await?,
        ))
    } else {
        Ok(Arc::new(SqliteStore::connect(url, max_connections).await?))
    }
}

/// Near-duplicate candidates: of the stories sharing a band key, only this many of the
/// newest are looked at per key. Templated stories (bulletins, tickers: one sentence with
/// a number changed) share a few band keys with every story of their template, so without
/// a bound each new one would compare against all the earlier ones and a feed of such
/// items would take quadratic time. A true copy shares several band keys (about
/// `50·J³`), so it is still found through the keys that are not crowded.
pub(crate) const NEAR_DUP_PER_BAND: i64 = 16;

/// Near-duplicate candidates: at most this many, those sharing the most band keys first,
/// have their fingerprints read and compared.
pub(crate) const NEAR_DUP_MAX_CANDIDATES: i64 = 64;

/// `t` truncated to the microsecond, the precision both backends store.
pub(crate) fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(t)
}

/// Stores a slice of terms the way both backends can read back.
pub(crate) fn terms_json(terms: &[String]) -> String {
    serde_json::to_string(terms).unwrap_or_else(|_| "[]".to_string())
}
