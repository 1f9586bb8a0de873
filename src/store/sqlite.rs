//! The embedded SQLite store: the default backend, so that `cargo run` works on
//! a fresh machine. One process owns the file. Timestamps are RFC 3339 UTC text
//! with microseconds, written only through [`ts`] so they sort as text; writes
//! take the lock up front (`BEGIN IMMEDIATE`) so two writers never deadlock on
//! an upgrade; claims are `UPDATE … RETURNING` (SQLite has no `SKIP LOCKED`,
//! and needs none: a write transaction is exclusive).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::open::{self, ConnectProblem, OpenMode};
use super::verdict::{self, Candidate, Identified, IdentityRow, PollTx, StoredStory, Streak};
use super::{
    Counts, Delivery, DeliveryInfo, DeliveryResult, KnownStory, NearDupCheck, NewStory,
    OutboxEntry, OutboxPolicy, PageFailure, PollContext, PollSave, PollWrite, PreparedStory,
    QueryPlan, SaveOutcome, SourceRow, SourceSpec, SourceState, Store, StoreError, StoreGauges,
    StoreResult, StoredValidators, terms_json,
};
use crate::topics::TopicMatch;

/// The story with this canonical URL (`?1`): its identity.
const STORY_BY_CANONICAL_URL: &str = "SELECT id, COALESCE(duplicate_of, id) AS cluster, \
     content_hash, raw_hash FROM stories WHERE canonical_url = ?1";

/// The first story with this content hash (`?1`), as the root of its duplicates.
const STORY_BY_CONTENT_HASH: &str = "SELECT COALESCE(duplicate_of, id) FROM stories \
     WHERE content_hash = ?1 ORDER BY id LIMIT 1";

/// Near-duplicate candidates: the stories fetched since `?2` that share one of the band
/// keys in `?1` (a JSON array), found through the `story_bands` primary key and then
/// read by id: the newest [`super::NEAR_DUP_PER_BAND`] of each key (the `OFFSET` is one
/// less), the [`super::NEAR_DUP_MAX_CANDIDATES`] sharing most keys.
///
/// The two bounds are written into the text, not bound: SQLite reads a bound `LIMIT` or
/// `OFFSET` while it plans, so every new binding of one expires the statement and each
/// lookup would parse and plan it again (a quarter of a million instructions per story in
/// the profile of a first ingest). `near_dup_bounds_are_the_constants` keeps them equal.
const NEAR_DUP_CANDIDATES: &str = "SELECT s.id, COALESCE(s.duplicate_of, s.id) AS root, \
     s.fingerprint FROM stories s JOIN ( \
       SELECT sb.story_id, COUNT(*) AS shared \
       FROM json_each(?1) AS k JOIN story_bands sb ON sb.band_key = k.value \
        AND sb.story_id >= COALESCE((SELECT b.story_id FROM story_bands b \
          WHERE b.band_key = k.value ORDER BY b.story_id DESC \
          LIMIT 1 OFFSET 15), 0) \
       GROUP BY sb.story_id ORDER BY shared DESC, sb.story_id DESC LIMIT 64 \
     ) c ON c.story_id = s.id \
     WHERE s.fetched_at >= ?2 AND s.fingerprint IS NOT NULL ORDER BY s.id";

/// The oldest stories fetched before ?1 that still have band rows, at most ?2 of them:
/// a walk up the `story_id` index of `story_bands`, bounded by the newest story fetched
/// before ?1 (found on the `fetched_at` index), each checked on its own row, so that a
/// story stored late with an older id is not pruned early.
const PRUNE_BANDS_STORIES: &str = "SELECT DISTINCT sb.story_id FROM story_bands sb \
     WHERE sb.story_id <= (SELECT id FROM stories WHERE fetched_at < ?1 \
       ORDER BY fetched_at DESC LIMIT 1) \
       AND EXISTS (SELECT 1 FROM stories s WHERE s.id = sb.story_id AND s.fetched_at < ?1) \
     ORDER BY sb.story_id LIMIT ?2";

/// A JSON array of integers, as `json_each` reads it.
fn json_array(values: &[i64]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// A JSON array of strings, as `json_each` reads it.
fn json_text_array(values: &[&str]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// Inserts a story's band rows, in one statement (each statement is a round trip to
/// the connection's worker thread).
async fn insert_bands(conn: &mut SqliteConnection, id: i64, band_keys: &[i64]) -> StoreResult<()> {
    if band_keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT OR IGNORE INTO story_bands (band_key, story_id) \
         SELECT value, ?2 FROM json_each(?1)",
    )
    .bind(json_array(band_keys))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// SQLite's timestamp text: `2025-06-04T08:30:02.123456Z`.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(column: &'static str, s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Decode {
            column,
            value: s.to_string(),
        })
}

fn opt_ts(column: &'static str, s: Option<String>) -> StoreResult<Option<DateTime<Utc>>> {
    s.map(|s| parse_ts(column, &s)).transpose()
}

/// The SQLite backend.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<SqliteStore> {
        Self::open(url, max_connections, OpenMode::Create).await
    }

    /// Opens the database file: in [`OpenMode::Create`] creating it if missing and
    /// running migrations, in [`OpenMode::Existing`] only if it exists with the
    /// current schema.
    pub async fn open(url: &str, max_connections: u32, mode: OpenMode) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| open::connect_error(url, ConnectProblem::BadUrl, Some(e)))?;
        let path = options.get_filename().to_path_buf();
        open::check_sqlite_path(&path, mode).map_err(|p| open::connect_error(url, p, None))?;
        let options = options
            .create_if_missing(mode == OpenMode::Create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", "10000")
            .pragma("cache_size", "-1024");
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(|e| {
                // Say whether the file or its directory is not writable.
                let problem = match mode {
                    OpenMode::Create => open::diagnose_sqlite_write(&path),
                    OpenMode::Existing => None,
                };
                open::connect_error(url, problem.unwrap_or(ConnectProblem::Other), Some(e))
            })?;
        let migrator = sqlx::migrate!("migrations/sqlite");
        match mode {
            OpenMode::Create => {
                if let Err(e) = migrator.run(&pool).await {
                    pool.close().await;
                    return Err(match open::diagnose_sqlite_write(&path) {
                        Some(problem) => open::connect_error(url, problem, None),
                        None => StoreError::Migrate(e),
                    });
                }
            }
            OpenMode::Existing => {
                let applied = sqlx::query_scalar(open::SCHEMA_VERSION_SQL)
                    .fetch_one(&pool)
                    .await;
                if let Err(e) = open::check_schema(url, applied, &migrator) {
                    pool.close().await;
                    return Err(e);
                }
            }
        }
        Ok(SqliteStore { pool })
    }

    /// The plans (`EXPLAIN QUERY PLAN`) of the three lookups [`Store::save_story`] makes
    /// for `story`: by canonical URL, by content hash, and the near-duplicate candidates
    /// through `story_bands`. Each should be an index search, never a scan.
    pub async fn explain_save_story_lookups(
        &self,
        story: &NewStory,
        window_start: DateTime<Utc>,
    ) -> StoreResult<Vec<QueryPlan>> {
        let explain = |sql: &str| sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"));
        let mut conn = self.pool.acquire().await?;
        let by_url = sqlx::query(explain(STORY_BY_CANONICAL_URL))
            .bind(&story.canonical_url)
            .fetch_all(&mut *conn)
            .await?;
        let by_hash = sqlx::query(explain(STORY_BY_CONTENT_HASH))
            .bind(&story.content_hash)
            .fetch_all(&mut *conn)
            .await?;
        let near = sqlx::query(explain(NEAR_DUP_CANDIDATES))
            .bind(json_array(&story.band_keys))
            .bind(ts(window_start))
            .fetch_all(&mut *conn)
            .await?;
        Ok(vec![
            QueryPlan {
                lookup: "story_by_canonical_url",
                lines: plan_lines(&by_url)?,
            },
            QueryPlan {
                lookup: "story_by_content_hash",
                lines: plan_lines(&by_hash)?,
            },
            QueryPlan {
                lookup: "near_dup_candidates",
                lines: plan_lines(&near)?,
            },
        ])
    }

    async fn begin_immediate(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        Ok(conn)
    }
}

/// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`, rolling back on error.
macro_rules! immediate_tx {
    ($self:ident, |$conn:ident| $body:block) => {{
        let mut guard = $self.begin_immediate().await?;
        let result: StoreResult<_> = async {
            let $conn: &mut SqliteConnection = &mut *guard;
            $body
        }
        .await;
        match result {
            Ok(v) => {
                sqlx::query("COMMIT").execute(&mut *guard).await?;
                Ok(v)
            }
            Err(e) => {
                // The connection goes back to the pool only after a successful rollback.
                if sqlx::query("ROLLBACK").execute(&mut *guard).await.is_err() {
                    guard.detach();
                }
                Err(e)
            }
        }
    }};
}

/// The `detail` lines of an `EXPLAIN QUERY PLAN`, indented by depth in the plan tree.
fn plan_lines(rows: &[SqliteRow]) -> StoreResult<Vec<String>> {
    let mut depths: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let parent: i64 = row.try_get("parent")?;
        let detail: String = row.try_get("detail")?;
        let depth = depths.get(&parent).map_or(0, |d| d + 1);
        depths.insert(id, depth);
        lines.push(format!("{}{detail}", "  ".repeat(depth)));
    }
    Ok(lines)
}

fn source_row(row: &SqliteRow) -> StoreResult<SourceRow> {
    Ok(SourceRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        state: SourceState::parse(row.try_get::<&str, _>("state")?)?,
        etag: row.try_get("etag")?,
        last_modified: row.try_get("last_modified")?,
        next_poll_at: opt_ts("sources.next_poll_at", row.try_get("next_poll_at")?)?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        last_error: row.try_get("last_error")?,
        last_status: row.try_get("last_status")?,
    })
}

/// The `sources` columns [`source_row`] reads, for `RETURNING` clauses.
macro_rules! source_columns {
    () => {
        "id, name, url, state, etag, last_modified, next_poll_at, \
         consecutive_failures, last_error, last_status"
    };
}

/// `deliveries.id`, stored as hyphenated text.
fn delivery_id(row: &SqliteRow) -> StoreResult<Uuid> {
    let id: String = row.try_get("id")?;
    Uuid::parse_str(&id).map_err(|_| StoreError::Decode {
        column: "deliveries.id",
        value: id,
    })
}

fn delivery_row(row: &SqliteRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: delivery_id(row)?,
        event: row.try_get("event")?,
        webhook: row.try_get("webhook")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        created_at: parse_ts("deliveries.created_at", row.try_get("created_at")?)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn sync_sources(&self, specs: &[SourceSpec]) -> StoreResult<Vec<SourceRow>> {
        immediate_tx!(self, |conn| {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            sqlx::query(
                "UPDATE sources SET state = 'disabled', lease_owner = NULL, lease_until = NULL \
                 WHERE name NOT IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()))
            .execute(&mut *conn)
            .await?;
            let mut rows = Vec::with_capacity(specs.len());
            for s in specs {
                let state = if s.enabled { "active" } else { "disabled" };
                let row = sqlx::query(concat!(
                    "INSERT INTO sources (name, kind, url, state) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (name) DO UPDATE SET \
                       kind = excluded.kind, \
                       state = CASE \
                         WHEN excluded.state = 'disabled' THEN 'disabled' \
                         WHEN sources.state = 'disabled' THEN 'active' \
                         WHEN sources.state = 'gone' AND sources.url <> excluded.url THEN 'active' \
                         ELSE sources.state END, \
                       etag = CASE WHEN sources.url <> excluded.url THEN NULL ELSE sources.etag END, \
                       last_modified = CASE WHEN sources.url <> excluded.url THEN NULL \
                         ELSE sources.last_modified END, \
                       lease_owner = CASE WHEN excluded.state = 'disabled' OR sources.url <> excluded.url THEN NULL \
                         ELSE sources.lease_owner END, \
                       lease_until = CASE WHEN excluded.state = 'disabled' OR sources.url <> excluded.url THEN NULL \
                         ELSE sources.lease_until END, \
                       url = excluded.url \
                     RETURNING ",
                    source_columns!()
                ))
                .bind(&s.name)
                .bind(&s.kind)
                .bind(&s.url)
                .bind(state)
                .fetch_one(&mut *conn)
                .await?;
                rows.push(source_row(&row)?);
            }
            Ok(rows)
        })
    }

    async fn bring_polls_forward(&self, polls: &[(String, DateTime<Utc>)]) -> StoreResult<u64> {
        let mut moved = 0;
        for (name, by) in polls {
            let done = sqlx::query(
                "UPDATE sources SET next_poll_at = ?2 WHERE name = ?1 AND next_poll_at > ?2",
            )
            .bind(name)
            .bind(ts(*by))
            .execute(&self.pool)
            .await?;
            moved += done.rows_affected();
        }
        Ok(moved)
    }

    async fn claim_due_sources(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SourceRow>> {
        immediate_tx!(self, |conn| {
            let rows = sqlx::query(concat!(
                "UPDATE sources SET lease_owner = ?1, lease_until = ?3 \
                 WHERE id IN (SELECT id FROM sources \
                   WHERE state IN ('active', 'blocked') \
                     AND (next_poll_at IS NULL OR next_poll_at <= ?2) \
                     AND (lease_until IS NULL OR lease_until <= ?2) \
                   ORDER BY next_poll_at IS NOT NULL, next_poll_at LIMIT ?4) \
                 RETURNING ",
                source_columns!()
            ))
            .bind(owner)
            .bind(ts(now))
            .bind(ts(lease_until))
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(source_row).collect()
        })
    }

    async fn next_poll_due(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        // Timestamps are RFC 3339 text of one width, so they order (and MAX) as text.
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN lease_until > ?1 \
               THEN MAX(COALESCE(next_poll_at, '0000'), lease_until) \
               ELSE COALESCE(next_poll_at, '0000') END) FROM sources \
             WHERE state IN ('active', 'blocked')",
        )
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(match next {
            Some(s) if s == "0000" => Some(DateTime::<Utc>::MIN_UTC),
            other => opt_ts("sources.next_poll_at", other)?,
        })
    }

    async fn claim_every_source(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<SourceRow>> {
        immediate_tx!(self, |conn| {
            let rows = sqlx::query(concat!(
                "UPDATE sources SET lease_owner = ?1, lease_until = ?3 \
                 WHERE state IN ('active', 'blocked') \
                   AND (lease_until IS NULL OR lease_until <= ?2) \
                 RETURNING ",
                source_columns!()
            ))
            .bind(owner)
            .bind(ts(now))
            .bind(ts(lease_until))
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(source_row).collect()
        })
    }

    async fn poll_context(
        &self,
        source_id: i64,
        canonical_urls: &[String],
        urls: &[String],
        pages: &[String],
    ) -> StoreResult<PollContext> {
        let mut conn = self.pool.acquire().await?;
        let known = sqlx::query_as::<_, KnownStory>(
            "SELECT id, url, canonical_url, raw_hash FROM stories \
             WHERE canonical_url IN (SELECT value FROM json_each(?1)) \
             UNION SELECT id, url, canonical_url, raw_hash FROM stories \
             WHERE url IN (SELECT value FROM json_each(?2))",
        )
        .bind(json_strings(canonical_urls))
        .bind(json_strings(urls))
        .fetch_all(&mut *conn)
        .await?;
        let mut page_attempts = std::collections::HashMap::new();
        if !pages.is_empty() {
            let rows = sqlx::query(
                "SELECT url, attempts FROM page_failures \
                 WHERE source_id = ?1 AND url IN (SELECT value FROM json_each(?2))",
            )
            .bind(source_id)
            .bind(json_strings(pages))
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                page_attempts.insert(r.try_get("url")?, r.try_get("attempts")?);
            }
        }
        Ok(PollContext {
            known,
            page_attempts,
        })
    }

    async fn save_poll(
        &self,
        poll: &PollWrite,
        near_dup: NearDupCheck<'_>,
        outbox: &dyn OutboxPolicy,
    ) -> StoreResult<PollSave> {
        immediate_tx!(self, |conn| {
            verdict::save_poll(conn, poll, near_dup, outbox).await
        })
    }

    async fn save_polls(
        &self,
        polls: &[(&PollWrite, &dyn OutboxPolicy)],
        near_dup: NearDupCheck<'_>,
    ) -> StoreResult<Vec<PollSave>> {
        immediate_tx!(self, |conn| {
            let mut saved = Vec::with_capacity(polls.len());
            for (poll, outbox) in polls {
                saved.push(verdict::save_poll(&mut *conn, poll, near_dup, *outbox).await?);
            }
            Ok(saved)
        })
    }

    async fn release_leases(&self, instance: Option<&str>) -> StoreResult<u64> {
        // `/` sorts right after the instance name, so `owner > 'I/' AND owner < 'I0'`
        // is the prefix `I/` without LIKE's wildcards.
        let now = ts(Utc::now());
        immediate_tx!(self, |conn| {
            let sources = sqlx::query(
                "UPDATE sources SET lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner IS NOT NULL \
                   AND (?1 IS NULL OR (lease_owner > ?1 || '/' AND lease_owner < ?1 || '0'))",
            )
            .bind(instance)
            .execute(&mut *conn)
            .await?;
            let deliveries = sqlx::query(
                "UPDATE deliveries SET lease_owner = NULL, \
                   next_attempt_at = MIN(next_attempt_at, ?2) \
                 WHERE lease_owner IS NOT NULL AND status = 'pending' \
                   AND (?1 IS NULL OR (lease_owner > ?1 || '/' AND lease_owner < ?1 || '0'))",
            )
            .bind(instance)
            .bind(&now)
            .execute(&mut *conn)
            .await?;
            Ok(sources.rows_affected() + deliveries.rows_affected())
        })
    }

    async fn renew_leases(&self, holder: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        let until = ts(lease_until);
        immediate_tx!(self, |conn| {
            let sources = sqlx::query(
                "UPDATE sources SET lease_until = ?2 \
                 WHERE lease_owner > ?1 || '/' AND lease_owner < ?1 || '0'",
            )
            .bind(holder)
            .bind(&until)
            .execute(&mut *conn)
            .await?;
            let deliveries = sqlx::query(
                "UPDATE deliveries SET next_attempt_at = ?2 \
                 WHERE lease_owner = ?1 AND status = 'pending'",
            )
            .bind(holder)
            .bind(&until)
            .execute(&mut *conn)
            .await?;
            Ok(sources.rows_affected() + deliveries.rows_affected())
        })
    }

    async fn release_source(
        &self,
        source_id: i64,
        owner: &str,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sources SET lease_owner = NULL, lease_until = NULL, next_poll_at = ?3 \
             WHERE id = ?1 AND lease_owner = ?2",
        )
        .bind(source_id)
        .bind(owner)
        .bind(ts(next_poll_at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn save_story(
        &self,
        story: &PreparedStory,
        window_start: DateTime<Utc>,
        near_dup: NearDupCheck<'_>,
        outbox: &dyn OutboxPolicy,
    ) -> StoreResult<SaveOutcome> {
        immediate_tx!(self, |conn| {
            verdict::save_story(conn, story, window_start, near_dup, outbox).await
        })
    }

    async fn claim_due_deliveries(
        &self,
        owner: &str,
        webhooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        immediate_tx!(self, |conn| {
            let rows = sqlx::query(
                "UPDATE deliveries SET next_attempt_at = ?3, lease_owner = ?5 \
                 WHERE id IN (SELECT id FROM deliveries \
                   WHERE status = 'pending' AND next_attempt_at <= ?2 \
                     AND webhook IN (SELECT value FROM json_each(?1)) \
                   ORDER BY next_attempt_at LIMIT ?4) \
                 RETURNING id, event, webhook, payload, attempts, created_at",
            )
            .bind(serde_json::to_string(webhooks).unwrap_or_else(|_| "[]".into()))
            .bind(ts(now))
            .bind(ts(lease_until))
            .bind(limit)
            .bind(owner)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(delivery_row).collect()
        })
    }

    async fn release_deliveries(
        &self,
        ids: &[Uuid],
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let ids: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
        let done = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = ?3, lease_owner = NULL \
             WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'pending' \
               AND lease_owner = ?2",
        )
        .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
        .bind(owner)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn next_delivery_due(&self, webhooks: &[String]) -> StoreResult<Option<DateTime<Utc>>> {
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending' \
             AND webhook IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(webhooks).unwrap_or_else(|_| "[]".into()))
        .fetch_one(&self.pool)
        .await?;
        opt_ts("deliveries.next_attempt_at", next)
    }

    async fn record_delivery(
        &self,
        id: Uuid,
        result: &DeliveryResult,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let id = id.hyphenated().to_string();
        let query = match result {
            DeliveryResult::Delivered { status_code } => sqlx::query(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
                 last_status_code = ?2, last_error = NULL, delivered_at = ?3, \
                 lease_owner = NULL WHERE id = ?1",
            )
            .bind(id)
            .bind(status_code)
            .bind(ts(now)),
            DeliveryResult::Retry {
                status_code,
                error,
                next_attempt_at,
            } => sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, last_status_code = ?2, \
                 last_error = ?3, next_attempt_at = ?4, lease_owner = NULL WHERE id = ?1",
            )
            .bind(id)
            .bind(status_code)
            .bind(error)
            .bind(ts(*next_attempt_at)),
            DeliveryResult::Dead { status_code, error } => sqlx::query(
                "UPDATE deliveries SET status = 'dead', attempts = attempts + 1, \
                 last_status_code = ?2, last_error = ?3, lease_owner = NULL WHERE id = ?1",
            )
            .bind(id)
            .bind(status_code)
            .bind(error),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryInfo>> {
        let rows = sqlx::query(
            "SELECT id, event, event_key, webhook, status, attempts, next_attempt_at, \
             last_status_code, last_error, created_at, delivered_at FROM deliveries \
             WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id LIMIT ?2",
        )
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let d = delivery_row_info(row)?;
                Ok(d)
            })
            .collect()
    }

    async fn retry_deliveries(&self, id: Option<Uuid>, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?2, attempts = 0 \
             WHERE (?1 IS NULL AND status = 'dead') OR (id = ?1 AND status <> 'delivered')",
        )
        .bind(id.map(|u| u.hyphenated().to_string()))
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn prune_bands(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        immediate_tx!(self, |conn| {
            let pruned: Vec<i64> = sqlx::query_scalar(PRUNE_BANDS_STORIES)
                .bind(ts(before))
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            sqlx::query(
                "DELETE FROM story_bands WHERE story_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_array(&pruned))
            .execute(&mut *conn)
            .await?;
            Ok(pruned.len() as u64)
        })
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM sources) AS sources, \
                    (SELECT COUNT(*) FROM stories) AS stories, \
                    (SELECT COUNT(*) FROM matches) AS matches, \
                    (SELECT COUNT(*) FROM deliveries WHERE status = 'pending') AS pending, \
                    (SELECT COUNT(*) FROM deliveries WHERE status = 'delivered') AS delivered, \
                    (SELECT COUNT(*) FROM deliveries WHERE status = 'dead') AS dead",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            sources: row.try_get("sources")?,
            stories: row.try_get("stories")?,
            matches: row.try_get("matches")?,
            deliveries_pending: row.try_get("pending")?,
            deliveries_delivered: row.try_get("delivered")?,
            deliveries_dead: row.try_get("dead")?,
        })
    }

    async fn gauges(&self) -> StoreResult<StoreGauges> {
        let deliveries: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        let oldest: Option<String> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM deliveries WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        let oldest_pending = oldest.map(|t| parse_ts("created_at", &t)).transpose()?;
        let sources: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM sources GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let sources_failing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sources WHERE consecutive_failures > 0")
                .fetch_one(&self.pool)
                .await?;
        Ok(StoreGauges {
            deliveries,
            oldest_pending,
            sources,
            sources_failing,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

fn delivery_row_info(row: &SqliteRow) -> StoreResult<DeliveryInfo> {
    Ok(DeliveryInfo {
        id: delivery_id(row)?,
        event: row.try_get("event")?,
        event_key: row.try_get("event_key")?,
        webhook: row.try_get("webhook")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: parse_ts(
            "deliveries.next_attempt_at",
            row.try_get("next_attempt_at")?,
        )?,
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        created_at: parse_ts("deliveries.created_at", row.try_get("created_at")?)?,
        delivered_at: opt_ts("deliveries.delivered_at", row.try_get("delivered_at")?)?,
    })
}

/// A JSON array of strings, as `json_each` reads it.
fn json_strings(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl PollTx for SqliteConnection {
    async fn fence_source(&mut self, source_id: i64, owner: &str) -> StoreResult<Option<Streak>> {
        let row = sqlx::query(
            "SELECT consecutive_failures, failing_since FROM sources \
             WHERE id = ?1 AND lease_owner = ?2",
        )
        .bind(source_id)
        .bind(owner)
        .fetch_optional(&mut *self)
        .await?;
        row.map(|row| {
            Ok(Streak {
                failures: row.try_get("consecutive_failures")?,
                since: opt_ts("sources.failing_since", row.try_get("failing_since")?)?,
            })
        })
        .transpose()
    }

    async fn lock_stories(&mut self, _stories: &[&PreparedStory]) -> StoreResult<()> {
        // `BEGIN IMMEDIATE` holds the database's one write lock already.
        Ok(())
    }

    async fn identify(&mut self, urls: &[&str], hashes: &[&str]) -> StoreResult<Identified> {
        let rows = sqlx::query_as::<_, IdentityRow>(
            "SELECT 1 AS by_url, canonical_url AS key, id, \
               COALESCE(duplicate_of, id) AS cluster, content_hash, raw_hash \
             FROM stories WHERE canonical_url IN (SELECT value FROM json_each(?1)) \
             UNION ALL \
             SELECT 0, s.content_hash, s.id, COALESCE(s.duplicate_of, s.id), s.content_hash, NULL \
             FROM json_each(?2) AS h JOIN stories s ON s.id = ( \
               SELECT id FROM stories WHERE content_hash = h.value ORDER BY id LIMIT 1)",
        )
        .bind(json_text_array(urls))
        .bind(json_text_array(hashes))
        .fetch_all(&mut *self)
        .await?;
        Ok(Identified::from_rows(rows))
    }

    async fn story_by_canonical_url(
        &mut self,
        canonical_url: &str,
    ) -> StoreResult<Option<StoredStory>> {
        let row = sqlx::query(STORY_BY_CANONICAL_URL)
            .bind(canonical_url)
            .fetch_optional(&mut *self)
            .await?;
        row.map(|row| {
            Ok(StoredStory {
                id: row.try_get("id")?,
                cluster: row.try_get("cluster")?,
                content_hash: row.try_get("content_hash")?,
                raw_hash: row.try_get("raw_hash")?,
            })
        })
        .transpose()
    }

    async fn cluster_by_content_hash(&mut self, content_hash: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(STORY_BY_CONTENT_HASH)
            .bind(content_hash)
            .fetch_optional(&mut *self)
            .await?)
    }

    async fn near_dup_candidates(
        &mut self,
        band_keys: &[i64],
        window_start: DateTime<Utc>,
    ) -> StoreResult<Vec<Candidate>> {
        // The newest NEAR_DUP_PER_BAND stories of each band key (a range on the
        // (band_key, story_id) key), the NEAR_DUP_MAX_CANDIDATES sharing most keys.
        let rows = sqlx::query(NEAR_DUP_CANDIDATES)
            .bind(json_array(band_keys))
            .bind(ts(window_start))
            .fetch_all(&mut *self)
            .await?;
        rows.iter()
            .map(|c| {
                Ok(Candidate {
                    cluster: c.try_get("root")?,
                    fingerprint: c.try_get("fingerprint")?,
                })
            })
            .collect()
    }

    async fn insert_story(
        &mut self,
        story: &NewStory,
        duplicate_of: Option<i64>,
    ) -> StoreResult<Option<i64>> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO stories (source_id, url, canonical_url, title, summary, body, author, \
             published_at, fetched_at, updated_at, content_hash, raw_hash, duplicate_of, \
             fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT (canonical_url) DO NOTHING RETURNING id",
        )
        .bind(story.source_id)
        .bind(&story.url)
        .bind(&story.canonical_url)
        .bind(&story.title)
        .bind(&story.summary)
        .bind(&story.body)
        .bind(&story.author)
        .bind(story.published_at.map(ts))
        .bind(ts(story.fetched_at))
        .bind(&story.content_hash)
        .bind(&story.raw_hash)
        .bind(duplicate_of)
        .bind(&story.fingerprint)
        .fetch_optional(&mut *self)
        .await?;
        if let Some(id) = id {
            insert_bands(self, id, &story.band_keys).await?;
        }
        Ok(id)
    }

    async fn update_story(&mut self, id: i64, story: &NewStory) -> StoreResult<()> {
        sqlx::query(
            "UPDATE stories SET url = ?2, title = ?3, summary = ?4, body = ?5, author = ?6, \
             published_at = COALESCE(?7, published_at), updated_at = ?8, content_hash = ?9, \
             raw_hash = ?10, fingerprint = ?11 WHERE id = ?1",
        )
        .bind(id)
        .bind(&story.url)
        .bind(&story.title)
        .bind(&story.summary)
        .bind(&story.body)
        .bind(&story.author)
        .bind(story.published_at.map(ts))
        .bind(ts(story.fetched_at))
        .bind(&story.content_hash)
        .bind(&story.raw_hash)
        .bind(&story.fingerprint)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn set_raw_hash(&mut self, id: i64, raw_hash: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE stories SET raw_hash = ?2 WHERE id = ?1")
            .bind(id)
            .bind(raw_hash)
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    async fn replace_bands(&mut self, id: i64, band_keys: &[i64]) -> StoreResult<()> {
        sqlx::query("DELETE FROM story_bands WHERE story_id = ?1")
            .bind(id)
            .execute(&mut *self)
            .await?;
        insert_bands(self, id, band_keys).await
    }

    async fn put_matches(
        &mut self,
        id: i64,
        matches: &[TopicMatch],
        now: DateTime<Utc>,
        fresh: bool,
    ) -> StoreResult<()> {
        if !fresh {
            sqlx::query("DELETE FROM matches WHERE story_id = ?1")
                .bind(id)
                .execute(&mut *self)
                .await?;
        }
        for m in matches {
            sqlx::query(
                "INSERT INTO matches (story_id, topic, score, terms, snippet, matched_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (story_id, topic) DO NOTHING",
            )
            .bind(id)
            .bind(&m.topic)
            .bind(m.score)
            .bind(terms_json(&m.terms))
            .bind(&m.snippet)
            .bind(ts(now))
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn claim_alerts(
        &mut self,
        cluster: i64,
        story_id: i64,
        webhook: &str,
        topics: &[&str],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO alerts (cluster_id, topic, webhook, story_id, alerted_at) \
             SELECT ?1, value, ?3, ?2, ?5 FROM json_each(?4) WHERE true \
             ON CONFLICT (cluster_id, topic, webhook) DO NOTHING RETURNING topic",
        )
        .bind(cluster)
        .bind(story_id)
        .bind(webhook)
        .bind(serde_json::to_string(topics).unwrap_or_else(|_| "[]".into()))
        .bind(ts(now))
        .fetch_all(&mut *self)
        .await?)
    }

    async fn insert_outbox(
        &mut self,
        event: &str,
        event_key: &str,
        story_id: Option<i64>,
        source_id: Option<i64>,
        entries: &[OutboxEntry],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut queued = 0;
        for e in entries {
            let done = sqlx::query(
                "INSERT INTO deliveries (id, event, event_key, story_id, source_id, webhook, \
                 payload, status, attempts, next_attempt_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8) \
                 ON CONFLICT (event_key, webhook) DO NOTHING",
            )
            .bind(Uuid::new_v4().hyphenated().to_string())
            .bind(event)
            .bind(event_key)
            .bind(story_id)
            .bind(source_id)
            .bind(&e.webhook)
            .bind(&e.payload)
            .bind(ts(now))
            .execute(&mut *self)
            .await?;
            queued += done.rows_affected() as usize;
        }
        Ok(queued)
    }

    async fn announce_match(&mut self, _story_id: i64) -> StoreResult<()> {
        // One process owns a SQLite file: the notifier is woken in memory.
        Ok(())
    }

    async fn page_failed(
        &mut self,
        source_id: i64,
        page: &PageFailure,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO page_failures (source_id, url, attempts, last_error, last_tried_at) \
             VALUES (?1, ?2, 1, ?3, ?4) ON CONFLICT (source_id, url) DO UPDATE SET \
             attempts = attempts + 1, last_error = excluded.last_error, \
             last_tried_at = excluded.last_tried_at",
        )
        .bind(source_id)
        .bind(&page.url)
        .bind(&page.error)
        .bind(ts(now))
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn pages_done(&mut self, source_id: i64, urls: &[String]) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM page_failures WHERE source_id = ?1 \
             AND url IN (SELECT value FROM json_each(?2))",
        )
        .bind(source_id)
        .bind(json_strings(urls))
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn source_polled(
        &mut self,
        source_id: i64,
        polled_at: DateTime<Utc>,
        status: i32,
        validators: Option<&StoredValidators>,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sources SET last_polled_at = ?2, last_status = ?3, last_error = NULL, \
             etag = CASE WHEN ?4 THEN ?5 ELSE etag END, \
             last_modified = CASE WHEN ?4 THEN ?6 ELSE last_modified END, \
             next_poll_at = ?7, state = 'active', consecutive_failures = 0, \
             failing_since = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
        )
        .bind(source_id)
        .bind(ts(polled_at))
        .bind(status)
        .bind(validators.is_some())
        .bind(validators.and_then(|v| v.etag.as_deref()))
        .bind(validators.and_then(|v| v.last_modified.as_deref()))
        .bind(ts(next_poll_at))
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn source_failed(
        &mut self,
        source_id: i64,
        polled_at: DateTime<Utc>,
        status: Option<i32>,
        error: &str,
        state: SourceState,
        since: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sources SET last_polled_at = ?2, last_status = ?3, last_error = ?4, \
             next_poll_at = ?5, state = ?6, consecutive_failures = consecutive_failures + 1, \
             failing_since = ?7, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
        )
        .bind(source_id)
        .bind(ts(polled_at))
        .bind(status)
        .bind(error)
        .bind(ts(next_poll_at))
        .bind(state.as_str())
        .bind(ts(since))
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn source_deferred(
        &mut self,
        source_id: i64,
        next_poll_at: DateTime<Utc>,
        note: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sources SET next_poll_at = ?2, last_error = ?3, \
             lease_owner = NULL, lease_until = NULL WHERE id = ?1",
        )
        .bind(source_id)
        .bind(ts(next_poll_at))
        .bind(note)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NEAR_DUP_CANDIDATES;
    use crate::store::{NEAR_DUP_MAX_CANDIDATES, NEAR_DUP_PER_BAND};

    #[test]
    fn near_dup_bounds_are_the_constants() {
        let offset = format!("LIMIT 1 OFFSET {})", NEAR_DUP_PER_BAND - 1);
        let limit = format!("LIMIT {} ", NEAR_DUP_MAX_CANDIDATES);
        assert!(
            NEAR_DUP_CANDIDATES.contains(&offset),
            "{offset:?} not in the lookup"
        );
        assert!(
            NEAR_DUP_CANDIDATES.contains(&limit),
            "{limit:?} not in the lookup"
        );
    }
}
