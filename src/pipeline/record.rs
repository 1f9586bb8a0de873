//! The writer: the pipeline's last stage. Each poll's result becomes one
//! [`PollWrite`] — the source's schedule, validators and health worked out here
//! (backoff, `Retry-After`, a host-wide pause) — stored by the store in one
//! transaction fenced by the poll's lease. Polls that queue up while the writer is
//! busy are stored together, in one transaction (group commit); if that group
//! fails, each of its polls is written alone. A write that fails is retried; one
//! that still fails leaves everything as it was, releases the lease, and the
//! source's next poll does the whole poll again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::Retryable;
use chrono::Utc;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::outbox::ConfigOutbox;
use super::{PipelineStats, PollFailure, PollJob, Polled, Shared};
use crate::dedup::Fingerprint;
use crate::fetch::policy::{jittered, source_retry_delay};
use crate::store::{
    OutboxPolicy, PollOutcome, PollSave, PollWrite, PreparedStory, SaveOutcome, SourceState,
    StoreError, StoredValidators,
};

/// At most this many queued polls are stored in one transaction. Most of a first
/// ingest's write cost is index pages, and the polls of a group share many of them; a
/// group never waits for polls to arrive, so a lone poll is written at once. Measured
/// on the benchmark farm (N = 1,000 first ingest, SQLite CPU / peak RSS): 8 polls
/// 18.3 s / 50 MiB, 16 polls 17.0 s / 50 MiB, 32 polls 15.7 s / 56 MiB (Postgres
/// 34 -> 35 -> 44 MiB at no gain in CPU).
const MAX_GROUP: usize = 16;

/// Stores the polls received until the channel closes: whatever has queued up, as
/// one group.
pub(super) async fn run(
    shared: Shared,
    mut input: mpsc::Receiver<Polled>,
    stats: Arc<PipelineStats>,
) {
    let mut received = Vec::with_capacity(MAX_GROUP);
    while input.recv_many(&mut received, MAX_GROUP).await > 0 {
        // Polls waiting behind this group: the writer's backlog.
        metrics::gauge!("feedwatch_stage_queue_depth", "stage" => "writer").set(input.len() as f64);
        metrics::histogram!("feedwatch_write_group_polls").record(received.len() as f64);
        // A test-only fault (debug builds): the writer dies, as a bug would kill it.
        #[cfg(debug_assertions)]
        if std::env::var("FEEDWATCH_TEST_FAULT").as_deref() == Ok("writer-panic") {
            panic!("test fault: the writer stage panics (FEEDWATCH_TEST_FAULT=writer-panic)");
        }
        let _busy = shared.health.writer_busy();
        // A test-only fault (debug builds): the writer hangs on its first poll, as a
        // write stuck on a lock would.
        #[cfg(debug_assertions)]
        if std::env::var("FEEDWATCH_TEST_FAULT").as_deref() == Ok("writer-stall") {
            std::future::pending::<()>().await;
        }
        let group: Vec<Pending> = received
            .drain(..)
            .map(|polled| Pending::new(&shared, polled))
            .collect();
        let sources: Vec<String> = group.iter().map(|p| p.name.clone()).collect();
        record_group(&shared, &stats, group).await;
        for source in &sources {
            stats.in_flight.leave(source);
        }
    }
}

/// A poll on its way into the store.
struct Pending {
    name: String,
    unchanged: usize,
    write: PollWrite,
    job: PollJob,
}

impl Pending {
    fn new(shared: &Shared, polled: Polled) -> Pending {
        let name = polled.job.plan.spec.name().to_string();
        let unchanged = polled.unchanged;
        let (write, job) = poll_write(shared, polled);
        Pending {
            name,
            unchanged,
            write,
            job,
        }
    }

    /// The webhooks' view of this poll's alerts.
    fn outbox(&self) -> ConfigOutbox<'_> {
        ConfigOutbox::new(&self.job.snapshot.config, &self.job.row, Utc::now())
    }
}

/// Stores a group in one transaction; if that fails, each poll alone, with retries,
/// so that one poll the store refuses cannot hold back the others.
async fn record_group(shared: &Shared, stats: &PipelineStats, group: Vec<Pending>) {
    if group.len() > 1 {
        let outboxes: Vec<ConfigOutbox> = group.iter().map(|p| p.outbox()).collect();
        let writes: Vec<(&PollWrite, &dyn OutboxPolicy)> = group
            .iter()
            .zip(&outboxes)
            .map(|(p, outbox)| (&p.write, outbox as &dyn OutboxPolicy))
            .collect();
        match shared.store.save_polls(&writes, &near_duplicates).await {
            Ok(saved) => {
                shared.schedule_wake.notify_one();
                for (pending, saved) in group.into_iter().zip(saved) {
                    finish(shared, stats, pending, saved);
                }
                return;
            }
            Err(e) => {
                warn!(polls = group.len(), error = %e, "cannot store the polls together; storing each alone");
            }
        }
    }
    for pending in group {
        record(shared, stats, pending).await;
    }
}

/// How a poll's write is retried before it is given up: the database may be
/// restarting or briefly unreachable, which must not cost a story or an alert.
fn store_retry() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

/// Whether two stored fingerprints are near duplicates of each other.
fn near_duplicates(mine: &[u8], theirs: &[u8]) -> bool {
    match (
        Fingerprint::from_bytes(mine),
        Fingerprint::from_bytes(theirs),
    ) {
        (Ok(mine), Ok(theirs)) => mine.is_near_duplicate(&theirs),
        _ => false,
    }
}

/// Stores one poll, retrying; a poll that still cannot be stored releases its lease.
async fn record(shared: &Shared, stats: &PipelineStats, pending: Pending) {
    let name = &pending.name;
    let outbox = pending.outbox();
    let saved = (|| {
        shared
            .store
            .save_poll(&pending.write, &near_duplicates, &outbox)
    })
    .retry(store_retry())
    .notify(|e: &StoreError, wait| {
        warn!(source = %name, error = %e, ?wait, "cannot store the poll; retrying");
    })
    .await;
    shared.schedule_wake.notify_one();
    match saved {
        Ok(saved) => finish(shared, stats, pending, saved),
        Err(e) => {
            error!(source = %name, error = %e, "poll not stored; nothing of it was written, and the next poll does it again");
            stats.polls_failed.fetch_add(1, Ordering::Relaxed);
            let job = &pending.job;
            let interval = interval_now(shared, job);
            let retry = Utc::now() + to_chrono(jittered(interval.min(Duration::from_secs(60))));
            if let Err(e) = shared
                .store
                .release_source(job.row.id, &job.lease_owner, retry)
                .await
            {
                warn!(source = %name, error = %e, "cannot release the source; it is polled again when its lease ends");
            }
        }
    }
}

/// Counts and logs a poll the store has committed (or turned away: lease lost).
fn finish(shared: &Shared, stats: &PipelineStats, pending: Pending, saved: PollSave) {
    let Pending {
        name,
        unchanged,
        write,
        ..
    } = pending;
    let (stories, source_events) = match saved {
        PollSave::Saved {
            stories,
            source_events,
            ..
        } => (stories, source_events),
        PollSave::LeaseLost => {
            warn!(source = %name, "the source's lease was taken over while it was polled (by another claim, or by a reload that removed the source or changed its URL); nothing of this poll was written");
            return;
        }
    };
    // Counted once committed: a retried write must not count anything twice.
    let outcome = match &write.outcome {
        PollOutcome::Fetched { .. } => "ok",
        PollOutcome::Failed { .. } => "failed",
        PollOutcome::Deferred { .. } => "deferred",
    };
    match outcome {
        "ok" => stats.polls_ok.fetch_add(1, Ordering::Relaxed),
        _ => stats.polls_failed.fetch_add(1, Ordering::Relaxed),
    };
    metrics::counter!("feedwatch_polls_total", "source" => name.clone(), "outcome" => outcome)
        .increment(1);
    stats
        .stories_unchanged
        .fetch_add(unchanged, Ordering::Relaxed);
    let mut deliveries = source_events;
    for (prepared, outcome) in write.stories.iter().zip(&stories) {
        deliveries += outcome.deliveries();
        count_story(stats, prepared, *outcome);
    }
    if deliveries > 0 {
        stats
            .deliveries_queued
            .fetch_add(deliveries, Ordering::Relaxed);
        shared.outbox_wake.notify_one();
    }
}

/// The store's view of a poll: its outcome on the source (schedule, validators,
/// health) and what it produced.
fn poll_write(shared: &Shared, polled: Polled) -> (PollWrite, PollJob) {
    let config = &shared.config;
    let job = &polled.job;
    let interval = interval_now(shared, job);
    let now = Utc::now();
    let outcome = match &polled.result {
        Err(PollFailure {
            deferred_until: Some(until),
            message,
            ..
        }) => {
            // Another source's 429/503 paused the host before this one's request went
            // out: nothing was asked of the server, so the streak, validators and
            // health events are untouched; the source is polled once the pause ends
            // (spread a little, so the host's sources do not all return at once).
            let at = (*until).max(now) + to_chrono(jittered(Duration::from_secs(5)));
            info!(source = %job.plan.spec.name(), until = %at, "host paused; poll deferred");
            PollOutcome::Deferred {
                next_poll_at: at,
                note: format!("not polled: {message}"),
            }
        }
        Ok(fetched) => PollOutcome::Fetched {
            status: fetched.status,
            validators: fetched.complete.then(|| StoredValidators {
                etag: fetched.validators.etag.clone(),
                last_modified: fetched.validators.last_modified.clone(),
            }),
            next_poll_at: now + to_chrono(jittered(interval)),
        },
        Err(fail) => {
            let failures = u32::try_from(job.row.consecutive_failures).unwrap_or(0) + 1;
            let state = match fail.status {
                Some(403) => SourceState::Blocked,
                Some(410) => SourceState::Gone,
                _ => SourceState::Active,
            };
            if state == SourceState::Gone {
                error!(source = %job.plan.spec.name(), "the server says the feed is gone (HTTP 410); source disabled until its URL changes");
            } else {
                warn!(source = %job.plan.spec.name(), error = %fail.message, failures, "poll failed");
            }
            let wait = source_retry_delay(
                failures,
                interval,
                config.http.backoff_max,
                fail.retry_after,
            );
            PollOutcome::Failed {
                status: fail.status,
                error: fail.message.clone(),
                state,
                next_poll_at: now + to_chrono(wait),
            }
        }
    };
    let window =
        chrono::Duration::from_std(config.dedup.window).unwrap_or(chrono::Duration::days(7));
    let write = PollWrite {
        source_id: polled.job.row.id,
        lease_owner: polled.job.lease_owner.to_string(),
        polled_at: polled.polled_at,
        outcome,
        stories: polled.stories,
        page_failures: polled.page_failures,
        pages_done: polled.pages_done,
        window_start: now - window,
    };
    (write, polled.job)
}

/// The polling interval of `job`'s source in the snapshot in force now: a reload
/// while the poll was under way may have changed it, and the source's next poll
/// follows the new file (its matches and alerts stay with the poll's own snapshot).
/// A source the reload removed keeps the poll's interval.
fn interval_now(shared: &Shared, job: &PollJob) -> Duration {
    let current = shared.snapshot.borrow().clone();
    match current.plans.get(job.plan.spec.name()) {
        Some(plan) => current.config.interval_of(&plan.spec),
        None => job.snapshot.config.interval_of(&job.plan.spec),
    }
}

fn count_story(stats: &PipelineStats, prepared: &PreparedStory, outcome: SaveOutcome) {
    let story = &prepared.story;
    let topics: Vec<&str> = prepared.matches.iter().map(|m| m.topic.as_str()).collect();
    let label = match outcome {
        SaveOutcome::New { .. } => "new",
        SaveOutcome::Updated { .. } => "updated",
        SaveOutcome::Duplicate { near: false, .. } => "duplicate",
        SaveOutcome::Duplicate { near: true, .. } => "near_duplicate",
        SaveOutcome::Unchanged { .. } => "unchanged",
    };
    metrics::counter!("feedwatch_stories_total", "outcome" => label).increment(1);
    if !matches!(outcome, SaveOutcome::Unchanged { .. }) {
        for topic in &topics {
            metrics::counter!("feedwatch_matches_total", "topic" => topic.to_string()).increment(1);
        }
    }
    match outcome {
        SaveOutcome::New { id, deliveries } => {
            stats.stories_new.fetch_add(1, Ordering::Relaxed);
            info!(story = id, source = %story.source_name, url = %story.url, ?topics, deliveries, "new story");
        }
        SaveOutcome::Updated { id, deliveries } => {
            stats.stories_updated.fetch_add(1, Ordering::Relaxed);
            info!(story = id, url = %story.url, ?topics, deliveries, "story updated");
        }
        SaveOutcome::Duplicate {
            id,
            of,
            near,
            deliveries,
        } => {
            stats.stories_duplicate.fetch_add(1, Ordering::Relaxed);
            info!(story = id, duplicate_of = of, near, url = %story.url, ?topics, deliveries, "duplicate story");
        }
        SaveOutcome::Unchanged { .. } => {
            stats.stories_unchanged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}
