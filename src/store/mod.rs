//! The store: the pipeline's last stage before the notifier, and the only
//! source of truth (DESIGN §5). All SQL lives under this module. The `Store`
//! trait has two implementations over concrete pools — `sqlite` (embedded
//! default) and `postgres` (production, several daemons) — and every method
//! keeps the same contract on both: a story, its matches and its outbox rows
//! are written in one transaction, the new/update/duplicate verdict is taken
//! inside it, and claims of sources and deliveries commit before any HTTP call.

pub mod archive;
mod instance;
mod open;
mod postgres;
mod sqlite;
mod verdict;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::topics::TopicMatch;

pub use instance::{InstanceLock, lock_database_file, lock_instance};
pub use open::{ConnectProblem, OpenMode};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached; `problem` says why, `url` where
    /// (its password redacted).
    #[error("cannot open the store at {url}: {problem}")]
    Connect {
        url: String,
        problem: Box<ConnectProblem>,
        #[source]
        source: Option<sqlx::Error>,
    },
    /// Migrations failed to apply.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Another process holds this instance's lock ([`lock_instance`]); `what` says which
    /// and what to do.
    #[error("{what}")]
    InUse { what: String },
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

/// How a poll ended, as the store records it on the source.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    /// The source answered (200, or 304 Not Modified).
    Fetched {
        status: i32,
        /// The validators to keep for the next conditional GET; `None` keeps the stored
        /// ones, as a poll that left links or pages for later must not hide them behind a 304.
        validators: Option<StoredValidators>,
        next_poll_at: DateTime<Utc>,
    },
    /// The poll failed: the streak grows and `last_error` says why.
    Failed {
        status: Option<i32>,
        error: String,
        state: SourceState,
        next_poll_at: DateTime<Utc>,
    },
    /// No request was made (the host asked every client to wait): the streak and
    /// validators stay, `note` goes to `last_error`.
    Deferred {
        next_poll_at: DateTime<Utc>,
        note: String,
    },
}

/// `ETag` / `Last-Modified` as stored on a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredValidators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// An article page that could not be fetched in this poll.
#[derive(Debug, Clone)]
pub struct PageFailure {
    pub url: String,
    pub error: String,
}

/// Everything one poll produced, written by [`Store::save_poll`] in one transaction.
#[derive(Debug, Clone)]
pub struct PollWrite {
    pub source_id: i64,
    /// The lease the poll was claimed under: a poll whose lease was taken over writes nothing.
    pub lease_owner: String,
    pub polled_at: DateTime<Utc>,
    pub outcome: PollOutcome,
    /// The stories to take a verdict on (those the store holds unchanged were left out).
    pub stories: Vec<PreparedStory>,
    /// Pages that failed: their attempt counts grow.
    pub page_failures: Vec<PageFailure>,
    /// Pages that were fetched, or given up: their failure rows go.
    pub pages_done: Vec<String>,
    /// Near duplicates are looked for among stories fetched since then.
    pub window_start: DateTime<Utc>,
}

/// What [`Store::save_poll`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollSave {
    /// Committed: one verdict per story of the poll (in order), and how the source's
    /// failure streak moved.
    Saved {
        stories: Vec<SaveOutcome>,
        streak: Option<StreakChange>,
        /// `source.failing` / `source.recovered` deliveries queued.
        source_events: usize,
    },
    /// The source's lease belongs to someone else now: nothing was written.
    LeaseLost,
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
    /// The source's name, for alert payloads.
    pub source_name: String,
    pub url: String,
    pub canonical_url: String,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub body: String,
    pub author: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
    pub content_hash: String,
    /// Hash of the entry as served (see `pipeline::prepare`): the cheap check's key.
    pub raw_hash: Option<String>,
    pub fingerprint: Option<Vec<u8>>,
    pub band_keys: Vec<i64>,
}

/// A story with the topics it matched.
#[derive(Debug, Clone)]
pub struct PreparedStory {
    pub story: NewStory,
    pub matches: Vec<TopicMatch>,
}

/// A stored story as the cheap check sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KnownStory {
    pub id: i64,
    pub url: String,
    pub canonical_url: String,
    pub raw_hash: Option<String>,
}

/// What the store holds of a poll's links before the poll prepares anything.
#[derive(Debug, Clone, Default)]
pub struct PollContext {
    /// Stored stories whose canonical URL or URL is one of those asked about.
    pub known: Vec<KnownStory>,
    /// Failed attempts so far of the pages asked about (absent: none).
    pub page_attempts: std::collections::HashMap<String, i32>,
}

/// A webhook request to be queued in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub webhook: String,
    pub payload: String,
}

/// A webhook that wants a `story.matched` alert, with the topics it wants.
#[derive(Debug, Clone)]
pub struct AlertTarget {
    pub webhook: String,
    /// Indices into the story's matches.
    pub topics: Vec<usize>,
}

/// A `source.failing` / `source.recovered` event to queue.
#[derive(Debug, Clone)]
pub struct SourceEvent {
    pub event: &'static str,
    pub event_key: String,
    pub entries: Vec<OutboxEntry>,
}

/// The pipeline's side of the outbox: which webhooks want what, and the frozen
/// bodies. The store decides *whether* an alert is due (the alert rule, against
/// what was alerted before); this decides *to whom* and *what it says*.
pub trait OutboxPolicy: Send + Sync {
    /// The webhooks that would take an alert of `story` for some of its `matches`
    /// (their event and topic filters, `max_age`).
    fn story_targets(&self, story: &NewStory, matches: &[TopicMatch]) -> Vec<AlertTarget>;
    /// The body of one `story.matched` delivery to `webhook` for `topics`.
    fn story_payload(
        &self,
        webhook: &str,
        story_id: i64,
        story: &NewStory,
        topics: &[&TopicMatch],
    ) -> String;
    /// The event a change of the failure streak raises, if any.
    fn source_event(
        &self,
        source_id: i64,
        change: &StreakChange,
        error: Option<&str>,
    ) -> Option<SourceEvent>;
}

/// Decides whether a candidate is a near duplicate of a story, from their stored
/// fingerprint bytes: `(story's, candidate's)`.
pub type NearDupCheck<'a> = &'a (dyn Fn(&[u8], &[u8]) -> bool + Send + Sync);

/// The verdict on a story, taken inside its poll's transaction (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// A story we had not seen: stored, matched; `deliveries` alerts queued.
    New { id: i64, deliveries: usize },
    /// Same canonical URL, same content hash: nothing written.
    Unchanged { id: i64 },
    /// Same canonical URL, new content: row and matches updated; alerted for the
    /// topics its cluster had not been alerted of.
    Updated { id: i64, deliveries: usize },
    /// New URL but the same (or nearly the same) content as `of`: stored, matched;
    /// alerted for the topics its cluster had not been alerted of.
    Duplicate {
        id: i64,
        of: i64,
        near: bool,
        deliveries: usize,
    },
}

impl SaveOutcome {
    /// Deliveries queued with this story.
    pub fn deliveries(&self) -> usize {
        match *self {
            SaveOutcome::New { deliveries, .. }
            | SaveOutcome::Updated { deliveries, .. }
            | SaveOutcome::Duplicate { deliveries, .. } => deliveries,
            SaveOutcome::Unchanged { .. } => 0,
        }
    }
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

/// What the store holds that `/metrics` shows as gauges, read at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    /// Deliveries by status (`pending`, `delivered`, `dead`), every status present.
    pub deliveries: Vec<(String, i64)>,
    /// When the oldest pending delivery was created.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Sources by state (`active`, `blocked`, `gone`, `disabled`), every state present.
    pub sources: Vec<(String, i64)>,
    /// Sources whose last poll failed (a failure streak under way).
    pub sources_failing: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Makes `sources` agree with the config: inserts new names, updates kind and
    /// URL (a changed URL reactivates a gone source), disables removed or disabled ones.
    /// A source disabled, or given another URL, loses its lease, so a poll of it under
    /// way writes nothing (its stories stay).
    async fn sync_sources(&self, specs: &[SourceSpec]) -> StoreResult<Vec<SourceRow>>;

    /// Brings the next poll of each named source forward to the time given with it,
    /// where it was later (a reload shortened the source's interval or changed its
    /// URL); a source already due is left as it is. Returns how many moved.
    async fn bring_polls_forward(&self, polls: &[(String, DateTime<Utc>)]) -> StoreResult<u64>;

    /// The active sources due at `now` and not leased by another daemon, leased to
    /// `owner` until `lease_until` (committed before returning).
    async fn claim_due_sources(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SourceRow>>;

    /// When the next active source falls due: the earliest `next_poll_at`, or for a
    /// source leased at `now` the later of that and its lease's end (when a dead
    /// daemon's source may be taken over), if any.
    async fn next_poll_due(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>>;

    /// Every active source not leased by another daemon at `now`, leased to `owner`
    /// until `lease_until` whether due or not (`once` polls them all).
    async fn claim_every_source(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<SourceRow>>;

    /// The cheap check's read, before a poll prepares anything: the stored stories
    /// with one of `canonical_urls` or `urls`, and the failed attempts of `pages`.
    async fn poll_context(
        &self,
        source_id: i64,
        canonical_urls: &[String],
        urls: &[String],
        pages: &[String],
    ) -> StoreResult<PollContext>;

    /// Writes a whole poll in one transaction, fenced by its lease: the verdict on
    /// each story with its bands, matches and alerts, the page attempts, the source's
    /// validators and health, and any `source.failing` / `source.recovered` event —
    /// all or nothing. A poll whose lease another owner holds writes nothing.
    async fn save_poll(
        &self,
        poll: &PollWrite,
        near_dup: NearDupCheck<'_>,
        outbox: &dyn OutboxPolicy,
    ) -> StoreResult<PollSave>;

    /// Writes several polls as [`Store::save_poll`] would, in one transaction (group
    /// commit): each poll is still fenced by its own lease, and the whole group is
    /// stored or none of it. One commit for the group spares the database a commit per
    /// poll, and lets a page that several polls change be written once.
    async fn save_polls(
        &self,
        polls: &[(&PollWrite, &dyn OutboxPolicy)],
        near_dup: NearDupCheck<'_>,
    ) -> StoreResult<Vec<PollSave>>;

    /// Releases the leases of `instance` (every lease with `None`), whatever their
    /// expiry, and returns how many: sources and pending deliveries whose owner starts
    /// with `instance` followed by `/` (the deliveries fall due at once). A
    /// daemon releases its own on a clean exit and takes back at start those a crash
    /// of it left; on SQLite, which one process owns, a starting daemon releases every
    /// lease a crashed one left.
    async fn release_leases(&self, instance: Option<&str>) -> StoreResult<u64>;

    /// Extends every lease of one run of a daemon, `holder` = `<instance>/<run>` (sources
    /// whose owner starts with `holder/`, pending deliveries claimed by `holder`), to
    /// `lease_until`, and returns how many. Leases an earlier run left are not renewed.
    /// A source whose poll is being written at this moment is skipped: its write ends
    /// the lease anyway.
    async fn renew_leases(&self, holder: &str, lease_until: DateTime<Utc>) -> StoreResult<u64>;

    /// Releases a lease `owner` still holds without recording a poll (its write
    /// failed): validators, streak and stories stay; it is polled again at `next_poll_at`.
    async fn release_source(
        &self,
        source_id: i64,
        owner: &str,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Takes the verdict on one story in a transaction of its own, outside any poll
    /// (tests and benchmarks of the verdict itself): the same rule [`Store::save_poll`]
    /// applies to each of its stories.
    async fn save_story(
        &self,
        story: &PreparedStory,
        window_start: DateTime<Utc>,
        near_dup: NearDupCheck<'_>,
        outbox: &dyn OutboxPolicy,
    ) -> StoreResult<SaveOutcome>;

    /// Pending deliveries due at `now` for the named webhooks, claimed by `owner` (a run
    /// of a daemon, `<instance>/<run>`) until `lease_until`.
    async fn claim_due_deliveries(
        &self,
        owner: &str,
        webhooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;

    /// Hands back deliveries `owner` (a run of a daemon, `<instance>/<run>`) claimed and
    /// never finished (a daemon shutting down): each of `ids` still pending under a
    /// claim of `owner` is unclaimed and due at `now` again, so the next daemon sends
    /// it at once rather than when the claim lapses. The claim is matched by its owner,
    /// not its expiry, which renewals move. A delivery attempted (its claim ended), or
    /// claimed by another run since, is left alone. Returns how many were released.
    async fn release_deliveries(
        &self,
        ids: &[Uuid],
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// The earliest `next_attempt_at` of a pending delivery for the named webhooks.
    async fn next_delivery_due(&self, webhooks: &[String]) -> StoreResult<Option<DateTime<Utc>>>;

    /// Records the outcome of one attempt (attempts is incremented) and ends its claim.
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

    /// The outbox and source figures `/metrics` shows (three small aggregate reads).
    async fn gauges(&self) -> StoreResult<StoreGauges>;

    /// A trivial round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the pool, waiting for connections to finish.
    async fn close(&self);
}

/// Opens the store `url` names to write — creating a missing SQLite file — and runs
/// its migrations: what `run` and `once` do.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    open(url, max_connections, OpenMode::Create).await
}

/// Opens an existing store for a command that inspects or re-drives what is stored
/// (`deliveries`, and any other command that must not create a database): a missing
/// SQLite file, a database without feedwatch's schema or with an older one is an
/// error; nothing is created or migrated.
pub async fn connect_existing(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    open(url, max_connections, OpenMode::Existing).await
}

/// Whether `url` names a Postgres database (any other URL is a SQLite one).
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// Opens the store `url` names in `mode`.
pub async fn open(url: &str, max_connections: u32, mode: OpenMode) -> StoreResult<Arc<dyn Store>> {
    if is_postgres_url(url) {
        Ok(Arc::new(
            PostgresStore::open(url, max_connections, mode).await?,
        ))
    } else {
        Ok(Arc::new(
            SqliteStore::open(url, max_connections, mode).await?,
        ))
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

/// An outbox policy with no webhooks: stories are stored and matched, nothing is
/// queued (benchmarks and tools that write stories without alerting anyone).
pub struct NoOutbox;

impl OutboxPolicy for NoOutbox {
    fn story_targets(&self, _: &NewStory, _: &[TopicMatch]) -> Vec<AlertTarget> {
        Vec::new()
    }

    fn story_payload(&self, _: &str, _: i64, _: &NewStory, _: &[&TopicMatch]) -> String {
        String::new()
    }

    fn source_event(&self, _: i64, _: &StreakChange, _: Option<&str>) -> Option<SourceEvent> {
        None
    }
}
