//! The pipeline proper: claimed sources in, stored stories and outbox rows out
//! (DESIGN §1). A poll is the unit of work. Each claimed source is polled by a
//! task of its own, which fetches, parses, skips what the store already holds
//! unchanged (the cheap check), fetches article pages, and prepares the rest
//! (normalise, key, fingerprint, match) on the blocking pool; it yields one
//! [`Polled`] result. The writer stage stores each result in one transaction,
//! fenced by the poll's lease. A bounded channel between the two lets a slow
//! store back-pressure the polls.
//!
//! One file per role: [`scheduler`] (claiming due sources), [`plan`] (a
//! source's compiled selectors and host rule),
//! [`feed`] and [`listing`] (polling each kind of source), [`page`] (article
//! pages), [`prepare`] (the cheap check and story preparation), [`outbox`]
//! (which webhooks want what, and the frozen bodies), [`record`] (the writer).

mod feed;
mod listing;
mod outbox;
mod page;
mod plan;
mod prepare;
mod record;
mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, error, info, info_span};
use url::Url;

use crate::config::{Config, SourceKind};
use crate::fetch::{FetchError, FetchOutcome, FetchPolicy, Fetcher, Validators};
use crate::store::{PageFailure, PreparedStory, SourceRow, Store};
use crate::topics::TopicSet;

pub use outbox::ConfigOutbox;
pub use plan::SourcePlan;
pub use scheduler::{Scheduler, run_id};

/// Bound of the channel from the polls to the writer, in polls: as many as the writer
/// takes in one group ([`record`]'s group commit), so a group can be full.
const CHANNEL_BOUND: usize = 16;

/// Everything the stages share. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    /// The config the daemon started with: the settings only a restart changes
    /// (database, HTTP, delivery, admin). Sources, topics and webhooks are read
    /// from [`Shared::snapshot`].
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub fetcher: Arc<Fetcher>,
    /// The sources, topics and webhooks in force; SIGHUP puts a new snapshot here,
    /// which the next source claimed takes.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Poked when the store queues a delivery, so the notifier wakes at once.
    pub outbox_wake: Arc<Notify>,
    /// Poked when a poll is recorded, so the scheduler recomputes its next wake-up.
    pub schedule_wake: Arc<Notify>,
    /// Bounds the CPU-heavy preparation running at once to the machine's cores.
    pub prepare_permits: Arc<Semaphore>,
    /// Where the scheduler and the writer mark their progress.
    pub health: Arc<crate::health::Health>,
}

impl Shared {
    /// A semaphore with one permit per core, for [`Shared::prepare_permits`].
    pub fn prepare_permits() -> Arc<Semaphore> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Arc::new(Semaphore::new(cores))
    }
}

/// What a reload may change, compiled and swapped as one: the config file it came
/// from (its sources, topics, webhooks and source defaults), each source's plan,
/// and the topics. A poll keeps the snapshot in force when its source was claimed
/// from start to finish, so the topics it matched and the webhooks it alerts come
/// from one file.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// The configured sources' compiled plans, by name.
    pub plans: HashMap<String, Arc<SourcePlan>>,
    pub topics: Arc<TopicSet>,
}

impl Snapshot {
    /// Compiles `config`'s sources and topics; the error names the one at fault.
    pub fn compile(config: Arc<Config>) -> anyhow::Result<Snapshot> {
        let topics = TopicSet::compile(&config.topic_specs()).context("compiling topics")?;
        let plans = config
            .sources
            .iter()
            .map(|s| Ok((s.name().to_string(), Arc::new(SourcePlan::new(s)?))))
            .collect::<anyhow::Result<_>>()?;
        Ok(Snapshot {
            config,
            plans,
            topics: Arc::new(topics),
        })
    }
}

/// A source claimed for one poll.
#[derive(Clone)]
pub struct PollJob {
    pub row: SourceRow,
    pub plan: Arc<SourcePlan>,
    /// The snapshot in force when the source was claimed: its topics and webhooks serve
    /// the whole poll.
    pub snapshot: Arc<Snapshot>,
    /// The lease the source was claimed under; the poll's write is fenced by it.
    pub lease_owner: Arc<str>,
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
    /// The polls started and not yet recorded.
    pub in_flight: PollsInFlight,
}

/// The polls started and not yet recorded, by source name: what a shutdown whose
/// grace runs out abandons.
#[derive(Debug, Default)]
pub struct PollsInFlight(std::sync::Mutex<std::collections::BTreeMap<String, usize>>);

impl PollsInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, source: &str) {
        *self.lock().entry(source.to_string()).or_default() += 1;
    }

    fn leave(&self, source: &str) {
        let mut polls = self.lock();
        if let Some(n) = polls.get_mut(source) {
            *n -= 1;
            if *n == 0 {
                polls.remove(source);
            }
        }
    }

    /// The sources with a poll under way, by name.
    pub fn sources(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

/// Everything one poll produced, for the writer.
pub(crate) struct Polled {
    job: PollJob,
    polled_at: DateTime<Utc>,
    result: Result<Fetched, PollFailure>,
    stories: Vec<PreparedStory>,
    /// Entries skipped by the cheap check (held unchanged).
    unchanged: usize,
    page_failures: Vec<PageFailure>,
    pages_done: Vec<String>,
}

impl Polled {
    fn new(job: PollJob, polled_at: DateTime<Utc>) -> Polled {
        Polled {
            job,
            polled_at,
            result: Err(PollFailure::new(None, "not polled")),
            stories: Vec::new(),
            unchanged: 0,
            page_failures: Vec::new(),
            pages_done: Vec::new(),
        }
    }
}

/// A poll that got an answer.
#[derive(Debug, Clone)]
struct Fetched {
    status: i32,
    validators: Validators,
    /// Every link and page of the answer was handled: only then do the validators
    /// advance, so that what is left is fetched again rather than hidden behind a 304.
    complete: bool,
}

#[derive(Debug, Clone)]
struct PollFailure {
    status: Option<i32>,
    message: String,
    retry_after: Option<Duration>,
    /// No request was made: the host asked every client to wait until then (another
    /// source's 429 or 503). Not a failure of this source.
    deferred_until: Option<DateTime<Utc>>,
}

impl PollFailure {
    /// A failure of the source's own poll, with no Retry-After.
    fn new(status: Option<i32>, message: impl Into<String>) -> PollFailure {
        PollFailure {
            status,
            message: message.into(),
            retry_after: None,
            deferred_until: None,
        }
    }

    fn from_fetch(e: FetchError) -> PollFailure {
        PollFailure {
            status: e.status().map(i32::from),
            retry_after: e.retry_after(),
            message: e.to_string(),
            deferred_until: match e {
                FetchError::HostPaused { until, .. } => Some(until),
                _ => None,
            },
        }
    }
}

/// Runs the polls received on `jobs` and stores each one's result, until that
/// channel closes and every poll in flight is stored (or, after retries, left
/// for the next poll). From `stop` on, no poll is started: those still queued are
/// left claimed, for the daemon to release, and only the polls under way go on.
pub async fn run(
    shared: Shared,
    mut jobs: mpsc::Receiver<PollJob>,
    stats: Arc<PipelineStats>,
    stop: CancellationToken,
) {
    let (polled_tx, polled_rx) = mpsc::channel::<Polled>(CHANNEL_BOUND);
    let poll_shared = shared.clone();
    let poll_stats = stats.clone();
    // Aborted with this future (a shutdown that runs out of grace), taking its polls along.
    let poller = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut polls = JoinSet::new();
        let mut not_started = Vec::new();
        while let Some(job) = jobs.recv().await {
            // Claimed sources waiting for a poll slot.
            metrics::gauge!("feedwatch_stage_queue_depth", "stage" => "poll")
                .set(jobs.len() as f64);
            // Bound the number of polls in flight; the fetcher bounds requests.
            while polls.len() >= poll_shared.config.http.global_concurrency && !stop.is_cancelled()
            {
                tokio::select! {
                    _ = polls.join_next() => {}
                    _ = stop.cancelled() => {}
                }
            }
            if stop.is_cancelled() {
                not_started.push(job.plan.spec.name().to_string());
                continue;
            }
            poll_stats.in_flight.enter(job.plan.spec.name());
            let span = info_span!("poll", source = %job.plan.spec.name(), url = %job.row.url);
            let (shared, out, stats) = (poll_shared.clone(), polled_tx.clone(), poll_stats.clone());
            polls.spawn(
                async move {
                    let name = job.plan.spec.name().to_string();
                    let polled = poll_guarded(shared, job).await;
                    if out.send(polled).await.is_err() {
                        stats.in_flight.leave(&name);
                    }
                }
                .instrument(span),
            );
        }
        if !not_started.is_empty() {
            info!(sources = ?not_started, "shutting down: polls claimed but not started are handed back");
        }
        while polls.join_next().await.is_some() {}
    }));
    record::run(shared, polled_rx, stats).await;
    // The writer ends when its input closes, i.e. after the polls.
    if let Err(e) = poller.await {
        error!(error = %e, "poll stage failed");
    }
}

/// Polls one source. A poll that panics is still a poll: it is recorded as failed
/// (and counts toward `source.failing`), logged at error with the source's name,
/// rather than lost with its task.
async fn poll_guarded(shared: Shared, job: PollJob) -> Polled {
    let polled_at = Utc::now();
    catching_panics(job.clone(), polled_at, poll_source(shared, job, polled_at)).await
}

/// Runs `poll`; a panic in it becomes a failed poll of `job`.
async fn catching_panics(
    job: PollJob,
    polled_at: DateTime<Utc>,
    poll: impl std::future::Future<Output = Polled>,
) -> Polled {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(poll).catch_unwind().await {
        Ok(polled) => polled,
        Err(panic) => {
            let message = crate::telemetry::panic_message(panic.as_ref());
            error!(source = %job.plan.spec.name(), panic = %message, "internal error while polling; the poll is recorded as failed");
            let mut polled = Polled::new(job, polled_at);
            polled.result = Err(PollFailure::new(
                None,
                format!("internal error while polling: {message}"),
            ));
            polled
        }
    }
}

async fn poll_source(shared: Shared, job: PollJob, polled_at: DateTime<Utc>) -> Polled {
    let mut polled = Polled::new(job.clone(), polled_at);
    polled.result = match job.plan.spec.kind {
        SourceKind::Feed => feed::poll(&shared, &job, &mut polled).await,
        SourceKind::Html => listing::poll(&shared, &job, &mut polled).await,
    };
    polled
}

/// What a poll's conditional GET of its source's URL brought.
enum Answer {
    /// 304: nothing changed since the stored validators.
    NotModified(Fetched),
    /// A body to parse, from the URL the source names.
    Body(Url, Box<crate::fetch::Fetched>),
}

/// The conditional GET every poll starts with, with the source's stored validators.
async fn fetch_source(shared: &Shared, job: &PollJob) -> Result<Answer, PollFailure> {
    let url = Url::parse(&job.row.url)
        .map_err(|e| PollFailure::new(None, format!("bad URL {:?}: {e}", job.row.url)))?;
    let validators = Validators {
        etag: job.row.etag.clone(),
        last_modified: job.row.last_modified.clone(),
    };
    let started = std::time::Instant::now();
    let fetched = shared
        .fetcher
        .get(&url, &validators, &FetchPolicy::source(&url))
        .await;
    // From asking to the answer, waits for the host's politeness included.
    metrics::histogram!("feedwatch_fetch_duration_seconds", "kind" => "source")
        .record(started.elapsed().as_secs_f64());
    match fetched {
        Ok(FetchOutcome::NotModified) => {
            debug!("not modified");
            Ok(Answer::NotModified(Fetched {
                status: 304,
                validators,
                complete: true,
            }))
        }
        Ok(FetchOutcome::Fetched(body)) => Ok(Answer::Body(url, Box::new(body))),
        Err(e) => Err(PollFailure::from_fetch(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SourceState;

    fn job() -> PollJob {
        PollJob {
            row: SourceRow {
                id: 1,
                name: "hkfp".into(),
                url: "https://hongkongfp.com/feed/".into(),
                state: SourceState::Active,
                etag: None,
                last_modified: None,
                next_poll_at: None,
                consecutive_failures: 0,
                last_error: None,
                last_status: None,
            },
            plan: Arc::new(plan::plan_of(
                "[[sources]]\nname = \"hkfp\"\nkind = \"feed\"\nurl = \"https://hongkongfp.com/feed/\"\n",
            )),
            snapshot: Arc::new(Snapshot::compile(Arc::new(Config::default())).unwrap()),
            lease_owner: Arc::from("test/1"),
        }
    }

    #[tokio::test]
    async fn a_panicking_poll_becomes_a_failure_that_names_it() {
        let now = Utc::now();
        let failed = catching_panics(job(), now, async {
            if std::hint::black_box(true) {
                panic!("a header the server did not send");
            }
            Polled::new(job(), now)
        })
        .await;
        let failure = failed.result.expect_err("a failure, not a panic");
        assert_eq!(
            failure.message,
            "internal error while polling: a header the server did not send"
        );
        assert_eq!(
            (failure.status, failure.retry_after, failure.deferred_until),
            (None, None, None),
            "an ordinary failure of the source's own poll"
        );
        let ok = catching_panics(job(), now, async {
            let mut polled = Polled::new(job(), now);
            polled.result = Ok(Fetched {
                status: 200,
                validators: Validators::default(),
                complete: true,
            });
            polled
        })
        .await;
        assert_eq!(ok.result.ok().map(|f| f.status), Some(200));
    }
}
