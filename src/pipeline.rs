//! The pipeline proper: poll jobs in, stored stories and outbox rows out
//! (DESIGN §1). Three stages joined by bounded channels, so a slow stage
//! back-pressures the ones before it:
//!
//! 1. **poll** — one task per claimed source (bounded by the fetcher's limits):
//!    fetch, parse on the blocking pool, emit raw stories, then a `PollDone`
//!    marker carrying the poll's outcome;
//! 2. **prepare** — normalise, key (canonical URL, content hash) and match topics;
//! 3. **store** — one writer: the new/update/duplicate verdict and the outbox
//!    rows in one transaction per story; on `PollDone` the source's validators
//!    and health are recorded — after its stories, so a crash in between makes
//!    the next poll fetch them again rather than skip them behind a 304.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};
use url::Url;

use crate::config::{Config, EventKind, SourceConfig, SourceKind};
use crate::dedup;
use crate::fetch::policy::{jittered, source_retry_delay};
use crate::fetch::{FetchError, FetchOutcome, Fetcher, Validators};
use crate::normalize::{RawStory, Story, normalize};
use crate::notify::payload::{self, SourceHealth};
use crate::source::feed::parse_feed;
use crate::store::{
    NewStory, OutboxEntry, PollRecord, SaveOutcome, SourceRow, SourceState, Store, StoreError,
};
use crate::topics::{TopicMatch, TopicSet};

/// Bound of each inter-stage channel.
const CHANNEL_BOUND: usize = 256;

/// Everything the stages share. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub fetcher: Arc<Fetcher>,
    pub topics: Arc<TopicSet>,
    /// Poked when the store queues a delivery, so the notifier wakes at once.
    pub outbox_wake: Arc<Notify>,
    /// Poked when a poll is recorded, so the scheduler recomputes its next wake-up.
    pub schedule_wake: Arc<Notify>,
}

/// A source claimed for one poll.
#[derive(Debug, Clone)]
pub struct PollJob {
    pub row: SourceRow,
    pub spec: SourceConfig,
}

/// How a poll ended, before it is recorded.
#[derive(Debug, Clone)]
struct PollEnd {
    job: PollJob,
    polled_at: DateTime<Utc>,
    result: Result<PollSuccess, PollFailure>,
}

#[derive(Debug, Clone)]
struct PollSuccess {
    status: i32,
    validators: Validators,
}

#[derive(Debug, Clone)]
struct PollFailure {
    status: Option<i32>,
    message: String,
    retry_after: Option<Duration>,
}

enum Item {
    Story(Box<RawStory>),
    Done(Box<PollEnd>),
}

enum Ready {
    Story(Box<(Story, NewStory, Vec<TopicMatch>)>),
    Done(Box<PollEnd>),
}

/// What a pipeline run did, for `once` and logs.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub polls_ok: AtomicUsize,
    pub polls_failed: AtomicUsize,
    pub stories_new: AtomicUsize,
    pub stories_updated: AtomicUsize,
    pub stories_duplicate: AtomicUsize,
    pub stories_unchanged: AtomicUsize,
    pub deliveries_queued: AtomicUsize,
}

/// Runs the three stages over the jobs received on `jobs` until that channel
/// closes and everything in flight is stored. Returns early only when the
/// store fails.
pub async fn run(
    shared: Shared,
    mut jobs: mpsc::Receiver<PollJob>,
    stats: Arc<PipelineStats>,
) -> Result<(), StoreError> {
    let (item_tx, item_rx) = mpsc::channel::<Item>(CHANNEL_BOUND);
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>(CHANNEL_BOUND);

    let poll_shared = shared.clone();
    let poller = tokio::spawn(async move {
        let mut polls = JoinSet::new();
        while let Some(job) = jobs.recv().await {
            // Bound the number of polls in flight; the fetcher bounds requests.
            while polls.len() >= poll_shared.config.http.global_concurrency {
                polls.join_next().await;
            }
            let span = info_span!("poll", source = %job.spec.name(), url = %job.spec.url);
            polls.spawn(poll_source(poll_shared.clone(), job, item_tx.clone()).instrument(span));
        }
        while polls.join_next().await.is_some() {}
    });

    let prep_topics = shared.topics.clone();
    let preparer = tokio::spawn(prepare_stage(item_rx, ready_tx, prep_topics));
    let result = store_stage(shared, ready_rx, stats).await;
    // The store stage ends when its input closes, i.e. after the other two.
    let _ = poller.await;
    let _ = preparer.await;
    result
}

async fn poll_source(shared: Shared, job: PollJob, out: mpsc::Sender<Item>) {
    let polled_at = Utc::now();
    let result = match job.spec.kind {
        SourceKind::Feed => poll_feed(&shared, &job, polled_at, &out).await,
        SourceKind::Html => Err(PollFailure {
            status: None,
            message: "kind = \"html\" sources are not supported by this version yet".into(),
            retry_after: None,
        }),
    };
    let _ = out
        .send(Item::Done(Box::new(PollEnd {
            job,
            polled_at,
            result,
        })))
        .await;
}

async fn poll_feed(
    shared: &Shared,
    job: &PollJob,
    fetched_at: DateTime<Utc>,
    out: &mpsc::Sender<Item>,
) -> Result<PollSuccess, PollFailure> {
    let url = Url::parse(&job.row.url).map_err(|e| PollFailure {
        status: None,
        message: format!("bad URL {:?}: {e}", job.row.url),
        retry_after: None,
    })?;
    let validators = Validators {
        etag: job.row.etag.clone(),
        last_modified: job.row.last_modified.clone(),
    };
    let fetched = match shared.fetcher.get(&url, &validators).await {
        Ok(FetchOutcome::NotModified) => {
            debug!("not modified");
            return Ok(PollSuccess {
                status: 304,
                validators,
            });
        }
        Ok(FetchOutcome::Fetched(f)) => f,
        Err(e) => return Err(fetch_failure(e)),
    };
    let status = i32::from(fetched.status);
    let new_validators = fetched.validators.clone();
    let feed_url = fetched.final_url.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        parse_feed(
            &fetched.body,
            fetched.content_type.as_deref(),
            &feed_url,
            fetched_at,
        )
    })
    .await
    .map_err(|e| PollFailure {
        status: Some(status),
        message: format!("feed parser crashed: {e}"),
        retry_after: None,
    })?
    .map_err(|e| PollFailure {
        status: Some(status),
        message: e.to_string(),
        retry_after: None,
    })?;
    let entries = parsed.entries.len();
    for entry in parsed.entries {
        let raw = RawStory {
            source_id: job.row.id,
            source_name: job.spec.name().to_string(),
            link: entry.link,
            guid: entry.guid,
            rel_canonical: None,
            title: entry.title,
            summary_html: entry.summary_html,
            body_html: entry.content_html,
            body_is_text: false,
            author: entry.author,
            published: entry.published,
            fetched_at,
        };
        if out.send(Item::Story(Box::new(raw))).await.is_err() {
            break;
        }
    }
    info!(entries, status, "polled");
    Ok(PollSuccess {
        status,
        validators: new_validators,
    })
}

fn fetch_failure(e: FetchError) -> PollFailure {
    PollFailure {
        status: e.status().map(i32::from),
        retry_after: e.retry_after(),
        message: e.to_string(),
    }
}

async fn prepare_stage(
    mut input: mpsc::Receiver<Item>,
    output: mpsc::Sender<Ready>,
    topics: Arc<TopicSet>,
) {
    while let Some(item) = input.recv().await {
        let ready = match item {
            Item::Done(end) => Ready::Done(end),
            Item::Story(raw) => {
                let story = normalize(*raw);
                let matches = topics.match_story(story.title.as_deref().unwrap_or(""), &story.body);
                let new = key_story(&story);
                Ready::Story(Box::new((story, new, matches)))
            }
        };
        if output.send(ready).await.is_err() {
            return;
        }
    }
}

/// Computes the dedup keys of a story for the store.
fn key_story(story: &Story) -> NewStory {
    let fingerprint = dedup::Fingerprint::of(story.title.as_deref().unwrap_or(""), &story.body);
    NewStory {
        source_id: story.source_id,
        url: story.url.clone(),
        canonical_url: story.canonical_url.clone(),
        title: story.title.clone(),
        summary: story.summary.clone(),
        body: story.body.clone(),
        author: story.author.clone(),
        published_at: story.published_at,
        fetched_at: story.fetched_at,
        content_hash: dedup::content_hash(&story.body),
        simhash: Some(fingerprint.simhash_i64()),
        band_keys: fingerprint.band_keys(),
        fingerprint: Some(fingerprint.to_bytes()),
    }
}

async fn store_stage(
    shared: Shared,
    mut input: mpsc::Receiver<Ready>,
    stats: Arc<PipelineStats>,
) -> Result<(), StoreError> {
    let window =
        chrono::Duration::from_std(shared.config.dedup.window).unwrap_or(chrono::Duration::days(7));
    while let Some(ready) = input.recv().await {
        match ready {
            Ready::Story(boxed) => {
                let (story, new, matches) = *boxed;
                let alerts = |id: i64| build_story_alerts(&shared.config, id, &story, &matches);
                let mine = new
                    .fingerprint
                    .as_deref()
                    .and_then(|b| dedup::Fingerprint::from_bytes(b).ok());
                let near_dup = |stored: &[u8]| match (&mine, dedup::Fingerprint::from_bytes(stored))
                {
                    (Some(mine), Ok(theirs)) => mine.is_near_duplicate(&theirs),
                    _ => false,
                };
                let outcome = shared
                    .store
                    .save_story(&new, &matches, Utc::now() - window, &near_dup, &alerts)
                    .await?;
                record_outcome(&stats, &story, &matches, outcome);
                if let SaveOutcome::New { deliveries, .. } = outcome
                    && deliveries > 0
                {
                    stats
                        .deliveries_queued
                        .fetch_add(deliveries, Ordering::Relaxed);
                    shared.outbox_wake.notify_one();
                }
            }
            Ready::Done(end) => finish_poll(&shared, &stats, *end).await?,
        }
    }
    Ok(())
}

fn record_outcome(
    stats: &PipelineStats,
    story: &Story,
    matches: &[TopicMatch],
    outcome: SaveOutcome,
) {
    let topics: Vec<&str> = matches.iter().map(|m| m.topic.as_str()).collect();
    match outcome {
        SaveOutcome::New { id, deliveries } => {
            stats.stories_new.fetch_add(1, Ordering::Relaxed);
            info!(story = id, source = %story.source_name, url = %story.url, ?topics, deliveries, "new story");
        }
        SaveOutcome::Updated { id } => {
            stats.stories_updated.fetch_add(1, Ordering::Relaxed);
            info!(story = id, url = %story.url, "story updated");
        }
        SaveOutcome::Duplicate { id, of, near } => {
            stats.stories_duplicate.fetch_add(1, Ordering::Relaxed);
            info!(story = id, duplicate_of = of, near, url = %story.url, "duplicate story");
        }
        SaveOutcome::Unchanged { .. } => {
            stats.stories_unchanged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The outbox rows for a new story: one per webhook that wants any of its
/// topics, unless the story is older than that webhook's `max_age`.
fn build_story_alerts(
    config: &Config,
    story_id: i64,
    story: &Story,
    matches: &[TopicMatch],
) -> Vec<OutboxEntry> {
    let now = Utc::now();
    config
        .webhooks
        .iter()
        .filter(|w| w.wants_event(EventKind::StoryMatched))
        .filter(|w| {
            let age = story.published_at.map(|p| now - p).unwrap_or_default();
            age.to_std().map(|a| a <= w.max_age).unwrap_or(true)
        })
        .filter_map(|w| {
            let topics: Vec<&TopicMatch> =
                matches.iter().filter(|m| w.wants_topic(&m.topic)).collect();
            (!topics.is_empty()).then(|| OutboxEntry {
                webhook: w.name().to_string(),
                payload: payload::story_matched(w.format, story_id, story, &topics, now),
            })
        })
        .collect()
}

async fn finish_poll(
    shared: &Shared,
    stats: &PipelineStats,
    end: PollEnd,
) -> Result<(), StoreError> {
    let config = &shared.config;
    let interval = config.interval_of(&end.job.spec);
    let now = Utc::now();
    let record = match &end.result {
        Ok(ok) => {
            stats.polls_ok.fetch_add(1, Ordering::Relaxed);
            PollRecord {
                source_id: end.job.row.id,
                polled_at: end.polled_at,
                status: Some(ok.status),
                error: None,
                etag: ok.validators.etag.clone(),
                last_modified: ok.validators.last_modified.clone(),
                next_poll_at: now + to_chrono(jittered(interval)),
                state: SourceState::Active,
            }
        }
        Err(fail) => {
            stats.polls_failed.fetch_add(1, Ordering::Relaxed);
            let failures = u32::try_from(end.job.row.consecutive_failures).unwrap_or(0) + 1;
            let state = match fail.status {
                Some(403) => SourceState::Blocked,
                Some(410) => SourceState::Gone,
                _ => SourceState::Active,
            };
            if state == SourceState::Gone {
                error!(source = %end.job.spec.name(), "the server says the feed is gone (HTTP 410); source disabled until its URL changes");
            } else {
                warn!(source = %end.job.spec.name(), error = %fail.message, failures, "poll failed");
            }
            let wait = source_retry_delay(
                failures,
                interval,
                config.http.backoff_max,
                fail.retry_after,
            );
            PollRecord {
                source_id: end.job.row.id,
                polled_at: end.polled_at,
                status: fail.status,
                error: Some(fail.message.clone()),
                etag: None,
                last_modified: None,
                next_poll_at: now + to_chrono(wait),
                state,
            }
        }
    };
    let change = shared.store.finish_poll(&record).await?;
    shared.schedule_wake.notify_one();
    let threshold = i32::try_from(config.defaults.failing_after).unwrap_or(i32::MAX);
    let event = if change.before < threshold && change.after >= threshold {
        Some(EventKind::SourceFailing)
    } else if change.before >= threshold && change.after == 0 {
        Some(EventKind::SourceRecovered)
    } else {
        None
    };
    if let Some(event) = event {
        let since = change.since.unwrap_or(end.polled_at);
        let health = SourceHealth {
            id: end.job.row.id,
            name: end.job.spec.name(),
            url: &end.job.row.url,
            consecutive_failures: change.after.max(change.before),
            since: Some(since),
            last_error: record.error.as_deref(),
        };
        let entries: Vec<OutboxEntry> = config
            .webhooks
            .iter()
            .filter(|w| w.wants_event(event))
            .map(|w| OutboxEntry {
                webhook: w.name().to_string(),
                payload: payload::source_event(w.format, event.as_str(), &health, now),
            })
            .collect();
        let key = format!(
            "{}:{}:{}",
            event.as_str(),
            end.job.row.id,
            since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        info!(source = %end.job.spec.name(), event = event.as_str(), "source health changed");
        if !entries.is_empty()
            && shared
                .store
                .enqueue_source_event(event.as_str(), &key, end.job.row.id, &entries, now)
                .await?
                > 0
        {
            shared.outbox_wake.notify_one();
        }
    }
    Ok(())
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}
