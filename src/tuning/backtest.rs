//! `feedwatch backtest`: topic queries — the configured ones or changed ones — run over the
//! stories the store holds, and compared with the matches stored for them.
//!
//! Place in the pipeline: after the fact. The archive streams the stored stories (with
//! their stored matches) through a bounded channel to a blocking matcher thread running
//! the same [`TopicSet`] the daemon runs; per topic it keeps the ids matched now and the
//! stories added to or dropped from the stored matches. Memory is bounded by the report
//! (ids, and the added and dropped stories), not by the table. It only reads.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;

use crate::store::archive::{Archive, ArchivedStory};
use crate::topics::{TopicSet, TopicSpec};

/// Stories handed to the matcher thread at a time.
const BATCH: usize = 64;

/// What a backtest found.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Only stories dated (published, else fetched) at or after this were read.
    pub since: Option<DateTime<Utc>>,
    /// Stories read.
    pub stories: u64,
    /// Of which duplicates (`duplicate_of` set).
    pub duplicates: u64,
    /// Wall-clock time of the read-and-match pass.
    pub seconds: f64,
    pub stories_per_second: f64,
    pub topics: Vec<TopicReport>,
}

/// One topic's result.
#[derive(Debug, Clone, Serialize)]
pub struct TopicReport {
    pub name: String,
    pub query: String,
    pub min_score: f64,
    /// Stored matches of this topic among the stories read.
    pub stored: u64,
    /// Ids of the stories the query matches now.
    pub matched: Vec<i64>,
    /// Matched now, not stored as matches: with the new score, terms and snippet.
    pub added: Vec<StoryReport>,
    /// Stored as matches, not matched now: with the stored score, terms and snippet.
    pub dropped: Vec<StoryReport>,
}

/// A story in a report.
#[derive(Debug, Clone, Serialize)]
pub struct StoryReport {
    pub id: i64,
    pub url: String,
    pub title: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub duplicate_of: Option<i64>,
    pub score: f64,
    pub terms: Vec<String>,
    pub snippet: String,
}

impl StoryReport {
    fn new(story: &ArchivedStory, score: f64, terms: &[String], snippet: &str) -> StoryReport {
        StoryReport {
            id: story.id,
            url: story.url.clone(),
            title: story.title.clone(),
            published_at: story.published_at,
            duplicate_of: story.duplicate_of,
            score,
            terms: terms.to_vec(),
            snippet: snippet.to_owned(),
        }
    }
}

/// Runs `specs` (compiled as `set`) over the archive's stories since `since`.
pub async fn run(
    archive: &dyn Archive,
    specs: &[TopicSpec],
    set: Arc<TopicSet>,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<BacktestReport> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<ArchivedStory>>(8);
    let mut tally = Tally::new(specs);
    let matcher = tokio::task::spawn_blocking(move || {
        while let Some(batch) = rx.blocking_recv() {
            for story in &batch {
                tally.add(&set, story);
            }
        }
        tally
    });
    let mut stories = archive.stories(since);
    let mut batch = Vec::with_capacity(BATCH);
    let mut read_error = None;
    while let Some(story) = stories.next().await {
        match story {
            Ok(story) => batch.push(story),
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(full).await.is_err() {
                break;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    drop(stories);
    let tally = matcher.await?;
    if let Some(e) = read_error {
        return Err(e.into());
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BacktestReport {
        backend: archive.backend(),
        since,
        stories: tally.stories,
        duplicates: tally.duplicates,
        seconds,
        stories_per_second: tally.stories as f64 / seconds.max(1e-9),
        topics: tally.topics,
    })
}

/// The running counts, owned by the matcher thread.
struct Tally {
    stories: u64,
    duplicates: u64,
    topics: Vec<TopicReport>,
}

impl Tally {
    fn new(specs: &[TopicSpec]) -> Tally {
        Tally {
            stories: 0,
            duplicates: 0,
            topics: specs
                .iter()
                .map(|s| TopicReport {
                    name: s.name.clone(),
                    query: s.query.clone(),
                    min_score: s.min_score,
                    stored: 0,
                    matched: Vec::new(),
                    added: Vec::new(),
                    dropped: Vec::new(),
                })
                .collect(),
        }
    }

    fn add(&mut self, set: &TopicSet, story: &ArchivedStory) {
        self.stories += 1;
        if story.duplicate_of.is_some() {
            self.duplicates += 1;
        }
        let now = set.match_story(story.title.as_deref().unwrap_or(""), &story.body);
        for topic in &mut self.topics {
            let fresh = now.iter().find(|m| m.topic == topic.name);
            let stored = story.stored.iter().find(|m| m.topic == topic.name);
            if stored.is_some() {
                topic.stored += 1;
            }
            if fresh.is_some() {
                topic.matched.push(story.id);
            }
            match (stored, fresh) {
                (None, Some(m)) => {
                    topic
                        .added
                        .push(StoryReport::new(story, m.score, &m.terms, &m.snippet));
                }
                (Some(m), None) => {
                    topic
                        .dropped
                        .push(StoryReport::new(story, m.score, &m.terms, &m.snippet));
                }
                _ => {}
            }
        }
    }
}

/// The report as text for a person.
pub fn render(report: &BacktestReport) -> String {
    let mut out = String::new();
    let since = report
        .since
        .map(|t| format!(" dated since {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "backtest over {} stored stories{since} ({} duplicates) on {}: {:.2} s, {:.0} stories/s",
        report.stories,
        report.duplicates,
        report.backend,
        report.seconds,
        report.stories_per_second
    );
    for t in &report.topics {
        let query = t.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "\n{}  {query}", t.name);
        let _ = writeln!(
            out,
            "  matches now {} (stored {}): {} added, {} dropped",
            t.matched.len(),
            t.stored,
            t.added.len(),
            t.dropped.len()
        );
        for (sign, stories) in [("+", &t.added), ("-", &t.dropped)] {
            for s in stories {
                render_story(&mut out, sign, s);
            }
        }
    }
    out
}

fn render_story(out: &mut String, sign: &str, s: &StoryReport) {
    let date = s
        .published_at
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "no date".to_owned());
    let dup = s
        .duplicate_of
        .map(|d| format!("  [duplicate of {d}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {sign} #{} {date}  {}{dup}",
        s.id,
        s.title.as_deref().unwrap_or("(untitled)")
    );
    let _ = writeln!(out, "      {}", s.url);
    let _ = writeln!(
        out,
        "      score {}  terms [{}]",
        s.score,
        s.terms.join(", ")
    );
    let _ = writeln!(out, "      {}", s.snippet);
}
