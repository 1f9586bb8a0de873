//! The PostgreSQL store: the production backend, shareable by several daemons.
//! Sources and deliveries are claimed with `FOR UPDATE SKIP LOCKED` and the
//! lease committed at once, so no transaction stays open across an HTTP call.
//! A story's verdict is serialised per canonical URL and per content hash with
//! transaction-scoped advisory locks, near-duplicate verdicts by one more such
//! lock across all writers, and `canonical_url` / `(event_key,
//! webhook)` unique constraints make every story and delivery exactly-once even
//! if that were bypassed. New matches are announced with
//! `pg_notify('feedwatch_matches', story_id)` on commit.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::open::{self, ConnectProblem, OpenMode};
use super::verdict::{self, Candidate, Identified, IdentityRow, PollTx, StoredStory, Streak};
use super::{
    Counts, Delivery, DeliveryInfo, DeliveryResult, KnownStory, NEAR_DUP_MAX_CANDIDATES,
    NEAR_DUP_PER_BAND, NearDupCheck, NewStory, OutboxEntry, OutboxPolicy, PageFailure, PollContext,
    PollSave, PollWrite, PreparedStory, QueryPlan, SaveOutcome, SourceRow, SourceSpec, SourceState,
    Store, StoreError, StoreGauges, StoreResult, StoredValidators,
};
use crate::topics::TopicMatch;

/// The story with this canonical URL (`$1`): its identity.
const STORY_BY_CANONICAL_URL: &str = "SELECT id, COALESCE(duplicate_of, id) AS cluster, \
     content_hash, raw_hash FROM stories WHERE canonical_url = $1";

/// The first story with this content hash (`$1`), as the root of its duplicates.
const STORY_BY_CONTENT_HASH: &str = "SELECT COALESCE(duplicate_of, id) FROM stories \
     WHERE content_hash = $1 ORDER BY id LIMIT 1";

/// Near-duplicate candidates: the stories fetched since `$2` that share one of the band
/// keys in `$1`, found through the `story_bands` primary key and then read by id.
const NEAR_DUP_CANDIDATES: &str = "SELECT s.id, COALESCE(s.duplicate_of, s.id) AS root, \
     s.fingerprint FROM stories s JOIN ( \
       SELECT b.story_id, COUNT(*) AS shared \
       FROM unnest($1::bigint[]) AS k(key) CROSS JOIN LATERAL ( \
         SELECT story_id FROM story_bands WHERE band_key = k.key \
         ORDER BY story_id DESC LIMIT $3) b \
       GROUP BY b.story_id ORDER BY shared DESC, b.story_id DESC LIMIT $4 \
     ) c ON c.story_id = s.id \
     WHERE s.fetched_at >= $2 AND s.fingerprint IS NOT NULL ORDER BY s.id";

/// The transaction-scoped advisory lock that serialises near-duplicate verdicts across
/// connections and daemons (see `lock_stories`). Should it ever equal the key of a URL
/// or a content hash, two polls would at worst wait for each other needlessly.
const NEAR_DUP_VERDICT_LOCK: i64 = 0x6665_6564_7761_7463; // "feedwatc"

/// The Postgres backend.
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PostgresStore> {
        Self::open(url, max_connections, OpenMode::Create).await
    }

    /// Connects; in [`OpenMode::Create`] runs migrations, in [`OpenMode::Existing`]
    /// checks that the database has the current schema. One direct connection comes
    /// first, so an unreachable or misconfigured server is reported at once, in plain
    /// words, rather than as a pool timeout.
    pub async fn open(
        url: &str,
        max_connections: u32,
        mode: OpenMode,
    ) -> StoreResult<PostgresStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| open::connect_error(url, ConnectProblem::BadUrl, Some(e)))?;
        open::probe_postgres(url, &options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| open::connect_error(url, ConnectProblem::Other, Some(e)))?;
        let migrator = sqlx::migrate!("migrations/postgres");
        match mode {
            OpenMode::Create => migrator.run(&pool).await.map_err(StoreError::Migrate)?,
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
        Ok(PostgresStore { pool })
    }

    /// The plans of the three lookups [`Store::save_story`] makes for `story` (by
    /// canonical URL, by content hash, near-duplicate candidates), run with
    /// `EXPLAIN (ANALYZE, BUFFERS)` inside a transaction that is rolled back. With
    /// `generic`, the plan Postgres uses once a prepared statement has switched to a
    /// generic plan (`plan_cache_mode = force_generic_plan`), as sqlx's cached statements
    /// may after five executions.
    pub async fn explain_save_story_lookups(
        &self,
        story: &NewStory,
        window_start: DateTime<Utc>,
        generic: bool,
    ) -> StoreResult<Vec<QueryPlan>> {
        let keys: Vec<String> = story.band_keys.iter().map(i64::to_string).collect();
        let lookups: [(&'static str, &str, Vec<String>); 3] = [
            (
                "story_by_canonical_url",
                STORY_BY_CANONICAL_URL,
                vec![sql_text(&story.canonical_url)],
            ),
            (
                "story_by_content_hash",
                STORY_BY_CONTENT_HASH,
                vec![sql_text(&story.content_hash)],
            ),
            (
                "near_dup_candidates",
                NEAR_DUP_CANDIDATES,
                vec![
                    format!("'{{{}}}'::bigint[]", keys.join(",")),
                    format!("{}::timestamptz", sql_text(&window_start.to_rfc3339())),
                    NEAR_DUP_PER_BAND.to_string(),
                    NEAR_DUP_MAX_CANDIDATES.to_string(),
                ],
            ),
        ];
        let mut tx = self.pool.begin().await?;
        if generic {
            sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
                .execute(&mut *tx)
                .await?;
        }
        let mut plans = Vec::with_capacity(lookups.len());
        for (lookup, sql, args) in lookups {
            // Prepared statements outlive transactions: a unique name cannot collide with
            // one an interrupted call left on this connection.
            let name = format!("feedwatch_explain_{}", Uuid::new_v4().simple());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
                .execute(&mut *tx)
                .await?;
            // The arguments are literals built above from integers, a timestamp and quoted text.
            let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}({})",
                args.join(", ")
            )))
            .fetch_all(&mut *tx)
            .await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DEALLOCATE {name}")))
                .execute(&mut *tx)
                .await?;
            plans.push(QueryPlan { lookup, lines });
        }
        tx.rollback().await?;
        Ok(plans)
    }

    /// The pool, for tests and `LISTEN`ers.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// `text` as a quoted SQL string literal (`standard_conforming_strings` is on by default
/// since Postgres 9.1, so only quotes need doubling).
fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The `sources` columns [`source_row`] reads, for `RETURNING` clauses.
macro_rules! source_columns {
    () => {
        "id, name, url, state, etag, last_modified, next_poll_at, \
         consecutive_failures, last_error, last_status"
    };
}

fn source_row(row: &PgRow) -> StoreResult<SourceRow> {
    Ok(SourceRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        state: SourceState::parse(row.try_get::<&str, _>("state")?)?,
        etag: row.try_get("etag")?,
        last_modified: row.try_get("last_modified")?,
        next_poll_at: row.try_get("next_poll_at")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        last_error: row.try_get("last_error")?,
        last_status: row.try_get("last_status")?,
    })
}

fn delivery_row(row: &PgRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: row.try_get("id")?,
        event: row.try_get("event")?,
        webhook: row.try_get("webhook")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn sync_sources(&self, specs: &[SourceSpec]) -> StoreResult<Vec<SourceRow>> {
        let mut tx = self.pool.begin().await?;
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        sqlx::query(
            "UPDATE sources SET state = 'disabled', lease_owner = NULL, lease_until = NULL \
             WHERE NOT (name = ANY($1))",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        let mut rows = Vec::with_capacity(specs.len());
        for s in specs {
            let state = if s.enabled { "active" } else { "disabled" };
            let row = sqlx::query(concat!(
                "INSERT INTO sources (name, kind, url, state) VALUES ($1, $2, $3, $4) \
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
            .fetch_one(&mut *tx)
            .await?;
            rows.push(source_row(&row)?);
        }
        tx.commit().await?;
        Ok(rows)
    }

    async fn bring_polls_forward(&self, polls: &[(String, DateTime<Utc>)]) -> StoreResult<u64> {
        let mut moved = 0;
        for (name, by) in polls {
            let done = sqlx::query(
                "UPDATE sources SET next_poll_at = $2 WHERE name = $1 AND next_poll_at > $2",
            )
            .bind(name)
            .bind(by)
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
        let rows = sqlx::query(concat!(
            "UPDATE sources SET lease_owner = $1, lease_until = $3 \
             WHERE id IN (SELECT id FROM sources \
               WHERE state IN ('active', 'blocked') \
                 AND (next_poll_at IS NULL OR next_poll_at <= $2) \
                 AND (lease_until IS NULL OR lease_until <= $2) \
               ORDER BY next_poll_at NULLS FIRST LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            source_columns!()
        ))
        .bind(owner)
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(source_row).collect()
    }

    async fn next_poll_due(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT bool_or(next_poll_at IS NULL AND (lease_until IS NULL OR lease_until <= $1)) \
               AS unscheduled, \
             MIN(CASE WHEN lease_until > $1 THEN GREATEST(next_poll_at, lease_until) \
               ELSE next_poll_at END) AS next \
             FROM sources WHERE state IN ('active', 'blocked')",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        if row.try_get::<Option<bool>, _>("unscheduled")? == Some(true) {
            return Ok(Some(DateTime::<Utc>::MIN_UTC));
        }
        Ok(row.try_get("next")?)
    }

    async fn claim_every_source(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<SourceRow>> {
        let rows = sqlx::query(concat!(
            "UPDATE sources SET lease_owner = $1, lease_until = $3 \
             WHERE id IN (SELECT id FROM sources \
               WHERE state IN ('active', 'blocked') \
                 AND (lease_until IS NULL OR lease_until <= $2) \
               FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            source_columns!()
        ))
        .bind(owner)
        .bind(now)
        .bind(lease_until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(source_row).collect()
    }

    async fn poll_context(
        &self,
        source_id: i64,
        canonical_urls: &[String],
        urls: &[String],
        pages: &[String],
    ) -> StoreResult<PollContext> {
        let mut conn = self.pool.acquire().await?;
        // Planned afresh each time (`persistent(false)`: an unnamed statement): a plan
        // cached while `stories` was small scans the table, and it would stay until
        // autovacuum next analyses it (seen: 3–7 ms a poll instead of 0.2 ms). Planning
        // this once per poll costs far less than that, and sees the table as it is.
        let known = sqlx::query_as::<_, KnownStory>(
            "SELECT id, url, canonical_url, raw_hash FROM stories WHERE canonical_url = ANY($1) \
             UNION SELECT id, url, canonical_url, raw_hash FROM stories WHERE url = ANY($2)",
        )
        .persistent(false)
        .bind(canonical_urls)
        .bind(urls)
        .fetch_all(&mut *conn)
        .await?;
        let mut page_attempts = std::collections::HashMap::new();
        if !pages.is_empty() {
            let rows = sqlx::query(
                "SELECT url, attempts FROM page_failures WHERE source_id = $1 AND url = ANY($2)",
            )
            .bind(source_id)
            .bind(pages)
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
        let mut tx = self.pool.begin().await?;
        let saved = verdict::save_poll(&mut *tx, poll, near_dup, outbox).await?;
        tx.commit().await?;
        Ok(saved)
    }

    async fn save_polls(
        &self,
        polls: &[(&PollWrite, &dyn OutboxPolicy)],
        near_dup: NearDupCheck<'_>,
    ) -> StoreResult<Vec<PollSave>> {
        let mut tx = self.pool.begin().await?;
        // The whole group's locks first, in one order, as one poll's are: taken poll by
        // poll, two daemons' groups could each hold a lock the other waits for. Each
        // poll's own call then finds its locks held already.
        let all: Vec<&PreparedStory> = polls.iter().flat_map(|(p, _)| &p.stories).collect();
        tx.lock_stories(&all).await?;
        let mut saved = Vec::with_capacity(polls.len());
        for (poll, outbox) in polls {
            saved.push(verdict::save_poll(&mut *tx, poll, near_dup, *outbox).await?);
        }
        tx.commit().await?;
        Ok(saved)
    }

    async fn release_leases(&self, instance: Option<&str>) -> StoreResult<u64> {
        // `/` sorts right after the instance name, so `owner > 'I/' AND owner < 'I0'`
        // is the prefix `I/` without LIKE's wildcards.
        let mut tx = self.pool.begin().await?;
        let sources = sqlx::query(
            "UPDATE sources SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner IS NOT NULL \
               AND ($1 IS NULL OR (lease_owner > $1 || '/' AND lease_owner < $1 || '0'))",
        )
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        let deliveries = sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, \
               next_attempt_at = LEAST(next_attempt_at, now()) \
             WHERE lease_owner IS NOT NULL AND status = 'pending' \
               AND ($1 IS NULL OR (lease_owner > $1 || '/' AND lease_owner < $1 || '0'))",
        )
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sources.rows_affected() + deliveries.rows_affected())
    }

    async fn renew_leases(&self, holder: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        // Rows locked by a poll's write are skipped rather than waited for: that write
        // ends the lease, or fails and leaves it for the next renewal.
        let mut tx = self.pool.begin().await?;
        let sources = sqlx::query(
            "UPDATE sources SET lease_until = $2 WHERE id IN ( \
               SELECT id FROM sources \
               WHERE lease_owner > $1 || '/' AND lease_owner < $1 || '0' \
               FOR UPDATE SKIP LOCKED)",
        )
        .bind(holder)
        .bind(lease_until)
        .execute(&mut *tx)
        .await?;
        let deliveries = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $2 \
             WHERE lease_owner = $1 AND status = 'pending'",
        )
        .bind(holder)
        .bind(lease_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sources.rows_affected() + deliveries.rows_affected())
    }

    async fn release_source(
        &self,
        source_id: i64,
        owner: &str,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sources SET lease_owner = NULL, lease_until = NULL, next_poll_at = $3 \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(source_id)
        .bind(owner)
        .bind(next_poll_at)
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
        let mut tx = self.pool.begin().await?;
        tx.lock_stories(&[story]).await?;
        let outcome = verdict::save_story(&mut *tx, story, window_start, near_dup, outbox).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn claim_due_deliveries(
        &self,
        owner: &str,
        webhooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $3, lease_owner = $5 \
             WHERE id IN (SELECT id FROM deliveries \
               WHERE status = 'pending' AND next_attempt_at <= $2 AND webhook = ANY($1) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, event, webhook, payload, attempts, created_at",
        )
        .bind(webhooks)
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn release_deliveries(
        &self,
        ids: &[Uuid],
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $3, lease_owner = NULL \
             WHERE id = ANY($1) AND status = 'pending' AND lease_owner = $2",
        )
        .bind(ids)
        .bind(owner)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn next_delivery_due(&self, webhooks: &[String]) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM deliveries \
             WHERE status = 'pending' AND webhook = ANY($1)",
        )
        .bind(webhooks)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn record_delivery(
        &self,
        id: Uuid,
        result: &DeliveryResult,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let query = match result {
            DeliveryResult::Delivered { status_code } => sqlx::query(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
                 last_status_code = $2, last_error = NULL, delivered_at = $3, \
                 lease_owner = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(status_code)
            .bind(now),
            DeliveryResult::Retry {
                status_code,
                error,
                next_attempt_at,
            } => sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, last_status_code = $2, \
                 last_error = $3, next_attempt_at = $4, lease_owner = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(status_code)
            .bind(error)
            .bind(next_attempt_at),
            DeliveryResult::Dead { status_code, error } => sqlx::query(
                "UPDATE deliveries SET status = 'dead', attempts = attempts + 1, \
                 last_status_code = $2, last_error = $3, lease_owner = NULL WHERE id = $1",
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
             WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, id LIMIT $2",
        )
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeliveryInfo {
                    id: row.try_get("id")?,
                    event: row.try_get("event")?,
                    event_key: row.try_get("event_key")?,
                    webhook: row.try_get("webhook")?,
                    status: row.try_get("status")?,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    last_status_code: row.try_get("last_status_code")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    delivered_at: row.try_get("delivered_at")?,
                })
            })
            .collect()
    }

    async fn retry_deliveries(&self, id: Option<Uuid>, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $2, attempts = 0 \
             WHERE ($1::uuid IS NULL AND status = 'dead') OR (id = $1 AND status <> 'delivered')",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn prune_bands(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let pruned: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT sb.story_id FROM story_bands sb \
             WHERE sb.story_id <= (SELECT id FROM stories WHERE fetched_at < $1 \
               ORDER BY fetched_at DESC LIMIT 1) \
               AND EXISTS (SELECT 1 FROM stories s WHERE s.id = sb.story_id AND s.fetched_at < $1) \
             ORDER BY sb.story_id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM story_bands WHERE story_id = ANY($1)")
            .bind(&pruned)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(pruned.len() as u64)
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
        let oldest_pending: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM deliveries WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
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

#[async_trait]
impl PollTx for PgConnection {
    async fn fence_source(&mut self, source_id: i64, owner: &str) -> StoreResult<Option<Streak>> {
        let row = sqlx::query(
            "SELECT consecutive_failures, failing_since FROM sources \
             WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
        )
        .bind(source_id)
        .bind(owner)
        .fetch_optional(&mut *self)
        .await?;
        row.map(|row| {
            Ok(Streak {
                failures: row.try_get("consecutive_failures")?,
                since: row.try_get("failing_since")?,
            })
        })
        .transpose()
    }

    async fn lock_stories(&mut self, stories: &[&PreparedStory]) -> StoreResult<()> {
        // Serialise verdicts on the same identity and on the same content, so that two
        // daemons racing on one story (or on two URLs of one body) cannot both win. All of
        // a poll's locks are taken at once, in key order, so two polls cannot deadlock.
        let urls: Vec<&str> = stories
            .iter()
            .map(|p| p.story.canonical_url.as_str())
            .collect();
        let hashes: Vec<&str> = stories
            .iter()
            .map(|p| p.story.content_hash.as_str())
            .collect();
        if urls.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "SELECT pg_advisory_xact_lock(k) FROM ( \
               SELECT DISTINCT k FROM ( \
                 SELECT hashtextextended(u, 0) AS k FROM unnest($1::text[]) AS u \
                 UNION ALL SELECT hashtextextended(h, 1) FROM unnest($2::text[]) AS h) keys \
               ORDER BY k) ordered",
        )
        .bind(&urls)
        .bind(&hashes)
        .execute(&mut *self)
        .await?;
        // A near duplicate has neither the URL nor the hash of its original, so the locks
        // above do not keep two near copies apart: two polls storing them at once would
        // each miss the other's uncommitted row and both alert. A lock per band key would
        // (about 50 per story, a thousand per poll, and Postgres's shared lock table holds
        // `max_locks_per_transaction` × connections), so instead a poll that may store a
        // new fingerprinted story takes one lock for all near-duplicate verdicts: their
        // lookups and inserts run one poll at a time across every daemon, while fetching,
        // parsing and preparing stay parallel. It is taken after the URL locks, highest in
        // the order, so it cannot deadlock with them; only stories whose URL is not stored
        // yet can reach the near-duplicate lookup, and the URL locks keep that answer true.
        let fingerprinted: Vec<&str> = stories
            .iter()
            .filter(|p| p.story.fingerprint.is_some() && !p.story.band_keys.is_empty())
            .map(|p| p.story.canonical_url.as_str())
            .collect();
        if !fingerprinted.is_empty() {
            sqlx::query(
                "SELECT pg_advisory_xact_lock($1) WHERE EXISTS ( \
                   SELECT 1 FROM unnest($2::text[]) AS u(url) \
                   WHERE NOT EXISTS (SELECT 1 FROM stories s WHERE s.canonical_url = u.url))",
            )
            .bind(NEAR_DUP_VERDICT_LOCK)
            .bind(&fingerprinted)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn identify(&mut self, urls: &[&str], hashes: &[&str]) -> StoreResult<Identified> {
        // Planned afresh each time, as the cheap check is: a cached plan made while
        // `stories` was small would scan it.
        let rows = sqlx::query_as::<_, IdentityRow>(
            "SELECT TRUE AS by_url, canonical_url AS key, id, \
               COALESCE(duplicate_of, id) AS cluster, content_hash, raw_hash \
             FROM stories WHERE canonical_url = ANY($1) \
             UNION ALL \
             SELECT FALSE, h.content_hash, h.id, h.cluster, h.content_hash, NULL \
             FROM unnest($2::text[]) AS x(hash) CROSS JOIN LATERAL ( \
               SELECT content_hash, id, COALESCE(duplicate_of, id) AS cluster FROM stories \
               WHERE content_hash = x.hash ORDER BY id LIMIT 1) h",
        )
        .persistent(false)
        .bind(urls)
        .bind(hashes)
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
        // The newest NEAR_DUP_PER_BAND stories of each band key, the
        // NEAR_DUP_MAX_CANDIDATES sharing most keys.
        let rows = sqlx::query(NEAR_DUP_CANDIDATES)
            .bind(band_keys)
            .bind(window_start)
            .bind(NEAR_DUP_PER_BAND)
            .bind(NEAR_DUP_MAX_CANDIDATES)
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
        // The story and its band rows in one statement (one round trip). The band rows
        // need no `ON CONFLICT`: the story is new and `DISTINCT` folds repeated keys.
        Ok(sqlx::query_scalar(
            "WITH s AS (INSERT INTO stories (source_id, url, canonical_url, title, summary, \
               body, author, published_at, fetched_at, updated_at, content_hash, raw_hash, \
               duplicate_of, fingerprint) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13) \
               ON CONFLICT (canonical_url) DO NOTHING RETURNING id), \
             b AS (INSERT INTO story_bands (band_key, story_id) \
               SELECT DISTINCT k, s.id FROM s CROSS JOIN UNNEST($14::bigint[]) AS k) \
             SELECT id FROM s",
        )
        .bind(story.source_id)
        .bind(&story.url)
        .bind(&story.canonical_url)
        .bind(&story.title)
        .bind(&story.summary)
        .bind(&story.body)
        .bind(&story.author)
        .bind(story.published_at)
        .bind(story.fetched_at)
        .bind(&story.content_hash)
        .bind(&story.raw_hash)
        .bind(duplicate_of)
        .bind(&story.fingerprint)
        .bind(&story.band_keys)
        .fetch_optional(&mut *self)
        .await?)
    }

    async fn update_story(&mut self, id: i64, story: &NewStory) -> StoreResult<()> {
        sqlx::query(
            "UPDATE stories SET url = $2, title = $3, summary = $4, body = $5, author = $6, \
             published_at = COALESCE($7, published_at), updated_at = $8, content_hash = $9, \
             raw_hash = $10, fingerprint = $11 WHERE id = $1",
        )
        .bind(id)
        .bind(&story.url)
        .bind(&story.title)
        .bind(&story.summary)
        .bind(&story.body)
        .bind(&story.author)
        .bind(story.published_at)
        .bind(story.fetched_at)
        .bind(&story.content_hash)
        .bind(&story.raw_hash)
        .bind(&story.fingerprint)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn set_raw_hash(&mut self, id: i64, raw_hash: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE stories SET raw_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(raw_hash)
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    async fn replace_bands(&mut self, id: i64, band_keys: &[i64]) -> StoreResult<()> {
        sqlx::query("DELETE FROM story_bands WHERE story_id = $1")
            .bind(id)
            .execute(&mut *self)
            .await?;
        if band_keys.is_empty() {
            return Ok(());
        }
        // No `ON CONFLICT`: the story's rows were just deleted and `DISTINCT` folds
        // repeated keys, so a speculative insert per row would only cost time.
        sqlx::query(
            "INSERT INTO story_bands (band_key, story_id) \
             SELECT DISTINCT k, $2 FROM UNNEST($1::bigint[]) AS k",
        )
        .bind(band_keys)
        .bind(id)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn put_matches(
        &mut self,
        id: i64,
        matches: &[TopicMatch],
        now: DateTime<Utc>,
        fresh: bool,
    ) -> StoreResult<()> {
        if !fresh {
            sqlx::query("DELETE FROM matches WHERE story_id = $1")
                .bind(id)
                .execute(&mut *self)
                .await?;
        }
        for m in matches {
            sqlx::query(
                "INSERT INTO matches (story_id, topic, score, terms, snippet, matched_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (story_id, topic) DO NOTHING",
            )
            .bind(id)
            .bind(&m.topic)
            .bind(m.score)
            .bind(&m.terms)
            .bind(&m.snippet)
            .bind(now)
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
             SELECT $1, t, $3, $2, $5 FROM unnest($4::text[]) AS t \
             ON CONFLICT (cluster_id, topic, webhook) DO NOTHING RETURNING topic",
        )
        .bind(cluster)
        .bind(story_id)
        .bind(webhook)
        .bind(topics)
        .bind(now)
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8) \
                 ON CONFLICT (event_key, webhook) DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(event)
            .bind(event_key)
            .bind(story_id)
            .bind(source_id)
            .bind(&e.webhook)
            .bind(&e.payload)
            .bind(now)
            .execute(&mut *self)
            .await?;
            queued += done.rows_affected() as usize;
        }
        Ok(queued)
    }

    async fn announce_match(&mut self, story_id: i64) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify('feedwatch_matches', $1)")
            .bind(story_id.to_string())
            .execute(&mut *self)
            .await?;
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
             VALUES ($1, $2, 1, $3, $4) ON CONFLICT (source_id, url) DO UPDATE SET \
             attempts = page_failures.attempts + 1, last_error = excluded.last_error, \
             last_tried_at = excluded.last_tried_at",
        )
        .bind(source_id)
        .bind(&page.url)
        .bind(&page.error)
        .bind(now)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn pages_done(&mut self, source_id: i64, urls: &[String]) -> StoreResult<()> {
        sqlx::query("DELETE FROM page_failures WHERE source_id = $1 AND url = ANY($2)")
            .bind(source_id)
            .bind(urls)
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
            "UPDATE sources SET last_polled_at = $2, last_status = $3, last_error = NULL, \
             etag = CASE WHEN $4 THEN $5 ELSE etag END, \
             last_modified = CASE WHEN $4 THEN $6 ELSE last_modified END, \
             next_poll_at = $7, state = 'active', consecutive_failures = 0, \
             failing_since = NULL, lease_owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(source_id)
        .bind(polled_at)
        .bind(status)
        .bind(validators.is_some())
        .bind(validators.and_then(|v| v.etag.as_deref()))
        .bind(validators.and_then(|v| v.last_modified.as_deref()))
        .bind(next_poll_at)
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
            "UPDATE sources SET last_polled_at = $2, last_status = $3, last_error = $4, \
             next_poll_at = $5, state = $6, consecutive_failures = consecutive_failures + 1, \
             failing_since = $7, lease_owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(source_id)
        .bind(polled_at)
        .bind(status)
        .bind(error)
        .bind(next_poll_at)
        .bind(state.as_str())
        .bind(since)
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
            "UPDATE sources SET next_poll_at = $2, last_error = $3, \
             lease_owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(source_id)
        .bind(next_poll_at)
        .bind(note)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
