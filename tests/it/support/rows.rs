//! What a run left in the database, read with plain SQL on either backend:
//! the `sources` rows (state, last error, schedule) and the `stories` rows.
//! Timestamps are read as RFC 3339 text on both (SQLite stores them so;
//! Postgres formats them), so one decoder serves both.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::db::{Backend, TestDb};

/// A row of `sources`.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub name: String,
    pub state: String,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
}

/// A row of `stories`, with its source's name.
#[derive(Debug, Clone)]
pub struct StoryInfo {
    pub source: String,
    pub url: String,
    pub canonical_url: String,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub body: String,
    pub author: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
}

const SOURCES_SQL: &str = "SELECT name, state, last_status, last_error, consecutive_failures, \
     {next_poll_at} AS next_poll_at, {last_polled_at} AS last_polled_at FROM sources ORDER BY name";

const STORIES_SQL: &str = "SELECT src.name AS source, s.url, s.canonical_url, s.title, s.summary, \
     COALESCE(s.body, '') AS body, s.author, {published_at} AS published_at, \
     {fetched_at} AS fetched_at \
     FROM stories s JOIN sources src ON src.id = s.source_id ORDER BY s.id";

/// `column` as RFC 3339 UTC text in the backend's SQL.
fn as_text(backend: Backend, column: &str) -> String {
    match backend {
        Backend::Sqlite => column.to_string(),
        Backend::Postgres => {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        }
    }
}

fn sources_sql(backend: Backend) -> String {
    SOURCES_SQL
        .replace("{next_poll_at}", &as_text(backend, "next_poll_at"))
        .replace("{last_polled_at}", &as_text(backend, "last_polled_at"))
}

fn stories_sql(backend: Backend) -> String {
    STORIES_SQL
        .replace("{published_at}", &as_text(backend, "s.published_at"))
        .replace("{fetched_at}", &as_text(backend, "s.fetched_at"))
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .unwrap_or_else(|e| panic!("timestamp {t:?}: {e}"))
            .with_timezone(&Utc)
    })
}

macro_rules! read_rows {
    ($pool:expr, $sources:expr, $stories:expr) => {{
        let sources = sqlx::query(sqlx::AssertSqlSafe($sources))
            .fetch_all(&$pool)
            .await
            .expect("read sources")
            .iter()
            .map(|r| SourceInfo {
                name: r.get("name"),
                state: r.get("state"),
                last_status: r.get("last_status"),
                last_error: r.get("last_error"),
                consecutive_failures: r.get("consecutive_failures"),
                next_poll_at: time(r.get("next_poll_at")),
                last_polled_at: time(r.get("last_polled_at")),
            })
            .collect::<Vec<_>>();
        let stories = match $stories {
            None => Vec::new(),
            Some(sql) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&$pool)
                .await
                .expect("read stories")
                .iter()
                .map(|r| StoryInfo {
                    source: r.get("source"),
                    url: r.get("url"),
                    canonical_url: r.get("canonical_url"),
                    title: r.get("title"),
                    summary: r.get("summary"),
                    body: r.get("body"),
                    author: r.get("author"),
                    published_at: time(r.get("published_at")),
                    fetched_at: time(r.get("fetched_at")).expect("fetched_at is set"),
                })
                .collect::<Vec<_>>(),
        };
        $pool.close().await;
        (sources, stories)
    }};
}

async fn read(db: &TestDb, with_stories: bool) -> (Vec<SourceInfo>, Vec<StoryInfo>) {
    let stories = with_stories.then(|| stories_sql(db.backend));
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url)
                .await
                .expect("open SQLite");
            read_rows!(pool, sources_sql(db.backend), stories)
        }
        Backend::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("connect to Postgres");
            read_rows!(pool, sources_sql(db.backend), stories)
        }
    }
}

impl TestDb {
    /// Every row of `sources`, by name.
    pub async fn sources(&self) -> Vec<SourceInfo> {
        read(self, false).await.0
    }

    /// The `sources` row named `name`; panics if there is none.
    pub async fn source(&self, name: &str) -> SourceInfo {
        self.sources()
            .await
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no source {name:?} in the database"))
    }

    /// Every row of `stories`, in insertion order.
    pub async fn stories(&self) -> Vec<StoryInfo> {
        read(self, true).await.1
    }
}
