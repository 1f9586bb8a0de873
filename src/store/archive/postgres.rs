//! The archive on PostgreSQL: read-only sessions (`default_transaction_read_only`) for
//! backtest and eval, and the label writes. The stored matches of a story come back as
//! one JSON array built by the server, as on SQLite.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgPool, Row};

use super::{
    Access, Archive, ArchiveError, ArchiveResult, ArchivedStory, Label, LabelledStory,
    group_labels, stored_matches,
};
use crate::store::open::{self, ConnectProblem};

/// The story columns both story reads select, the stored matches as one JSON array
/// (`NULL` when there are none). Never `SELECT *`: `search` is a tsvector.
const STORY_COLUMNS: &str = "SELECT s.id, s.url, s.title, COALESCE(s.body, '') AS body, \
     s.published_at, s.fetched_at, s.duplicate_of, \
     (SELECT json_agg(json_build_object('topic', m.topic, 'score', m.score, \
        'terms', m.terms, 'snippet', m.snippet))::text \
      FROM matches m WHERE m.story_id = s.id) AS stored \
     FROM stories s";

const STORIES_SINCE: &str = "WHERE $1::timestamptz IS NULL \
       OR COALESCE(s.published_at, s.fetched_at) >= $1 \
     ORDER BY s.id";

const STORY_BY_URL: &str = "WHERE s.canonical_url = $1 OR s.url = $2 \
     ORDER BY s.canonical_url = $1 DESC, s.id LIMIT 1";

const LABELLED: &str = "SELECT s.id, s.url, s.title, COALESCE(s.body, '') AS body, \
     l.topic, l.relevant, l.labelled_at \
     FROM labels l JOIN stories s ON s.id = l.story_id \
     WHERE $1::timestamptz IS NULL OR l.labelled_at >= $1 ORDER BY s.id, l.topic";

const UPSERT_LABEL: &str = "INSERT INTO labels (story_id, topic, relevant, labelled_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (story_id, topic) \
     DO UPDATE SET relevant = excluded.relevant, labelled_at = excluded.labelled_at";

pub(super) struct PostgresArchive {
    pool: PgPool,
}

fn story(row: &PgRow) -> ArchiveResult<ArchivedStory> {
    let stored: Option<String> = row.try_get("stored")?;
    Ok(ArchivedStory {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        published_at: row.try_get("published_at")?,
        fetched_at: row.try_get("fetched_at")?,
        duplicate_of: row.try_get("duplicate_of")?,
        stored: stored_matches(stored.as_deref())?,
    })
}

impl PostgresArchive {
    pub(super) async fn open(url: &str, access: Access) -> ArchiveResult<PostgresArchive> {
        let connect_err = |source| {
            ArchiveError::Store(open::connect_error(
                url,
                ConnectProblem::Other,
                Some(source),
            ))
        };
        // A backtest streams the whole table through one statement: not a slow query.
        let mut options = PgConnectOptions::from_str(url)
            .map_err(connect_err)?
            .disable_statement_logging();
        if access == Access::ReadOnly {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        // One direct connection first: a refused, unknown or unauthenticated server is
        // said at once and in words, not as a pool timeout.
        open::probe_postgres(url, &options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        if access == Access::ReadWrite {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(PostgresArchive { pool })
    }
}

#[async_trait]
impl Archive for PostgresArchive {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn stories(&self, since: Option<DateTime<Utc>>) -> BoxStream<'_, ArchiveResult<ArchivedStory>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{STORY_COLUMNS} {STORIES_SINCE}"
        )))
        .bind(since)
        .fetch(&self.pool)
        .map(|row| story(&row?))
        .boxed()
    }

    async fn story_by_url(
        &self,
        url: &str,
        canonical_url: &str,
    ) -> ArchiveResult<Option<ArchivedStory>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{STORY_COLUMNS} {STORY_BY_URL}"
        )))
        .bind(canonical_url)
        .bind(url)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(story).transpose()
    }

    async fn labelled_stories(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> ArchiveResult<Vec<LabelledStory>> {
        let rows = sqlx::query(LABELLED)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        let mut decoded = Vec::with_capacity(rows.len());
        for row in &rows {
            decoded.push((
                LabelledStory {
                    id: row.try_get("id")?,
                    url: row.try_get("url")?,
                    title: row.try_get("title")?,
                    body: row.try_get("body")?,
                    labels: Vec::new(),
                    labelled_at: DateTime::<Utc>::MIN_UTC,
                },
                row.try_get::<String, _>("topic")?,
                row.try_get::<bool, _>("relevant")?,
                row.try_get::<DateTime<Utc>, _>("labelled_at")?,
            ));
        }
        Ok(group_labels(decoded))
    }

    async fn record_labels(
        &self,
        story_id: i64,
        labels: &[Label],
        now: DateTime<Utc>,
    ) -> ArchiveResult<()> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM stories WHERE id = $1")
            .bind(story_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(ArchiveError::UnknownStory(story_id));
        }
        for label in labels {
            sqlx::query(UPSERT_LABEL)
                .bind(story_id)
                .bind(&label.topic)
                .bind(label.relevant)
                .bind(crate::store::to_micros(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
