//! The archive: the store read back for tuning topics — every stored story with the matches
//! stored for it, stories looked up by URL, and people's labels (DESIGN §5 `labels`).
//!
//! Place in the pipeline: beside it, not in it. The daemon writes through [`super::Store`];
//! `feedwatch backtest`, `eval` and `label` open the same database through [`open`] and
//! read what the pipeline left there. An archive never creates a database: a missing
//! SQLite file is [`ArchiveError::NoDatabase`]. Opened [`Access::ReadOnly`] (backtest,
//! eval) it runs no migrations and the connections refuse writes (SQLite `mode=ro`,
//! Postgres `default_transaction_read_only`); opened [`Access::ReadWrite`] (label) it
//! brings an existing database's schema up to date, then writes labels only.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use serde::Deserialize;

use super::StoreError;

/// Why an archive could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The SQLite file does not exist; commands that only read, and `label`, never create one.
    #[error(
        "no database at {0} (this command never creates one; run `feedwatch once` or `run` first)"
    )]
    NoDatabase(String),
    /// `label` named a story id that is not in `stories`.
    #[error("no story with id {0}")]
    UnknownStory(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ArchiveError {
    fn from(e: sqlx::Error) -> Self {
        ArchiveError::Store(StoreError::Sql(e))
    }
}

impl From<sqlx::migrate::MigrateError> for ArchiveError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        ArchiveError::Store(StoreError::Migrate(e))
    }
}

pub type ArchiveResult<T> = Result<T, ArchiveError>;

/// How a command opens the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: no migrations, writes refused by the connection.
    ReadOnly,
    /// Runs pending migrations on an existing database, then may record labels.
    ReadWrite,
}

/// A stored story as the tuning commands see it.
#[derive(Debug, Clone)]
pub struct ArchivedStory {
    pub id: i64,
    pub url: String,
    pub title: Option<String>,
    /// Plain-text body, as the matcher saw it (`""` when none was stored).
    pub body: String,
    pub published_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
    pub duplicate_of: Option<i64>,
    /// The rows of `matches` for this story, every topic.
    pub stored: Vec<StoredMatch>,
}

impl ArchivedStory {
    /// `published_at`, or `fetched_at` for a story without a date.
    pub fn dated(&self) -> DateTime<Utc> {
        self.published_at.unwrap_or(self.fetched_at)
    }
}

/// A row of `matches`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredMatch {
    pub topic: String,
    pub score: f64,
    pub terms: Vec<String>,
    pub snippet: String,
}

/// A story with the labels people gave it.
#[derive(Debug, Clone)]
pub struct LabelledStory {
    pub id: i64,
    pub url: String,
    pub title: Option<String>,
    pub body: String,
    /// `(topic, relevant)`, by topic.
    pub labels: Vec<(String, bool)>,
    /// The latest `labelled_at` of its labels.
    pub labelled_at: DateTime<Utc>,
}

/// One judgement: the story is (or is not) relevant to the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub topic: String,
    pub relevant: bool,
}

#[async_trait]
pub trait Archive: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Every story dated (published, else fetched) at or after `since`, by id, with its
    /// stored matches, read as a stream: memory stays bounded whatever the table's size.
    fn stories(&self, since: Option<DateTime<Utc>>) -> BoxStream<'_, ArchiveResult<ArchivedStory>>;

    /// The story whose canonical URL is `canonical_url`, else one whose page URL is `url`.
    async fn story_by_url(
        &self,
        url: &str,
        canonical_url: &str,
    ) -> ArchiveResult<Option<ArchivedStory>>;

    /// Every labelled story with its labels, by story id; only labels given at or after
    /// `since` when it is set.
    async fn labelled_stories(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> ArchiveResult<Vec<LabelledStory>>;

    /// Records (or replaces) labels of one story, at `now`, in one transaction.
    /// [`ArchiveError::UnknownStory`] when the story is not stored.
    async fn record_labels(
        &self,
        story_id: i64,
        labels: &[Label],
        now: DateTime<Utc>,
    ) -> ArchiveResult<()>;

    /// Closes the pool.
    async fn close(&self);
}

/// Opens the archive of the database `url` names, never creating one.
pub async fn open(url: &str, access: Access) -> ArchiveResult<Box<dyn Archive>> {
    if super::is_postgres_url(url) {
        Ok(Box::new(
            postgres::PostgresArchive::open(url, access).await?,
        ))
    } else {
        Ok(Box::new(sqlite::SqliteArchive::open(url, access).await?))
    }
}

/// Decodes the JSON array of stored matches that both backends build in SQL.
fn stored_matches(json: Option<&str>) -> ArchiveResult<Vec<StoredMatch>> {
    match json {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|_| {
            ArchiveError::Store(StoreError::Decode {
                column: "matches",
                value: text.chars().take(200).collect(),
            })
        }),
    }
}

/// Groups `(story, topic, relevant, at)` rows (sorted by story) into labelled stories.
fn group_labels(
    rows: impl IntoIterator<Item = (LabelledStory, String, bool, DateTime<Utc>)>,
) -> Vec<LabelledStory> {
    let mut out: Vec<LabelledStory> = Vec::new();
    for (story, topic, relevant, at) in rows {
        match out.last_mut() {
            Some(last) if last.id == story.id => {
                last.labels.push((topic, relevant));
                last.labelled_at = last.labelled_at.max(at);
            }
            _ => out.push(LabelledStory {
                labels: vec![(topic, relevant)],
                labelled_at: at,
                ..story
            }),
        }
    }
    out
}
