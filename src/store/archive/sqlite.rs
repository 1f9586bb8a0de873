//! The archive on the embedded SQLite database: read-only connections for backtest and
//! eval (`mode=ro`, never `create_if_missing`), and the label writes. Timestamps are the
//! store's RFC 3339 text, compared as text.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{ConnectOptions, Row, SqlitePool};

use super::{
    Access, Archive, ArchiveError, ArchiveResult, ArchivedStory, Label, LabelledStory,
    group_labels, stored_matches,
};
use crate::store::StoreError;
use crate::store::open::{self, ConnectProblem};
use crate::store::sqlite::ts;

/// The story columns both story reads select, the stored matches as one JSON array.
const STORY_COLUMNS: &str = "SELECT s.id, s.url, s.title, COALESCE(s.body, '') AS body, \
     s.published_at, s.fetched_at, s.duplicate_of, \
     (SELECT json_group_array(json_object('topic', m.topic, 'score', m.score, \
        'terms', json(m.terms), 'snippet', m.snippet)) \
      FROM matches m WHERE m.story_id = s.id) AS stored \
     FROM stories s";

const STORIES_SINCE: &str = "WHERE ?1 IS NULL OR COALESCE(s.published_at, s.fetched_at) >= ?1 \
     ORDER BY s.id";

const STORY_BY_URL: &str = "WHERE s.canonical_url = ?1 OR s.url = ?2 \
     ORDER BY s.canonical_url = ?1 DESC, s.id LIMIT 1";

const LABELLED: &str = "SELECT s.id, s.url, s.title, COALESCE(s.body, '') AS body, \
     l.topic, l.relevant, l.labelled_at \
     FROM labels l JOIN stories s ON s.id = l.story_id \
     WHERE ?1 IS NULL OR l.labelled_at >= ?1 ORDER BY s.id, l.topic";

const UPSERT_LABEL: &str = "INSERT INTO labels (story_id, topic, relevant, labelled_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (story_id, topic) \
     DO UPDATE SET relevant = excluded.relevant, labelled_at = excluded.labelled_at";

pub(super) struct SqliteArchive {
    pool: SqlitePool,
}

fn parse_ts(column: &'static str, s: &str) -> ArchiveResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ArchiveError::Store(StoreError::Decode {
                column,
                value: s.to_owned(),
            })
        })
}

fn story(row: &SqliteRow) -> ArchiveResult<ArchivedStory> {
    let published: Option<String> = row.try_get("published_at")?;
    let fetched: String = row.try_get("fetched_at")?;
    let stored: Option<String> = row.try_get("stored")?;
    Ok(ArchivedStory {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        published_at: published
            .map(|p| parse_ts("stories.published_at", &p))
            .transpose()?,
        fetched_at: parse_ts("stories.fetched_at", &fetched)?,
        duplicate_of: row.try_get("duplicate_of")?,
        stored: stored_matches(stored.as_deref())?,
    })
}

impl SqliteArchive {
    pub(super) async fn open(url: &str, access: Access) -> ArchiveResult<SqliteArchive> {
        let connect_err = |source| {
            ArchiveError::Store(open::connect_error(
                url,
                ConnectProblem::Other,
                Some(source),
            ))
        };
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // A backtest streams the whole table through one statement: not a slow query.
            .disable_statement_logging();
        let path = options.get_filename();
        if !path.as_os_str().is_empty()
            && path != std::path::Path::new(":memory:")
            && !path.exists()
        {
            return Err(ArchiveError::NoDatabase(path.display().to_string()));
        }
        options = match access {
            Access::ReadOnly => options.read_only(true),
            // The daemon's setting; set again here in case this opens the file first.
            Access::ReadWrite => options.journal_mode(SqliteJournalMode::Wal),
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        if access == Access::ReadWrite {
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        }
        Ok(SqliteArchive { pool })
    }
}

#[async_trait]
impl Archive for SqliteArchive {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn stories(&self, since: Option<DateTime<Utc>>) -> BoxStream<'_, ArchiveResult<ArchivedStory>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{STORY_COLUMNS} {STORIES_SINCE}"
        )))
        .bind(since.map(ts))
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
            .bind(since.map(ts))
            .fetch_all(&self.pool)
            .await?;
        let mut decoded = Vec::with_capacity(rows.len());
        for row in &rows {
            let at: String = row.try_get("labelled_at")?;
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
                parse_ts("labels.labelled_at", &at)?,
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM stories WHERE id = ?1")
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
                .bind(ts(now))
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
