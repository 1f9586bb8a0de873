//! The application: builds the expensive things once (store pool, HTTP
//! clients, compiled topics), then drives them either as the daemon (`run`:
//! scheduler, pipeline and notifier until cancelled, then a drain bounded by
//! `daemon.shutdown_grace`) or for a single pass (`once`). Tests start exactly
//! what `main` starts.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::fetch::Fetcher;
use crate::health::Health;
use crate::notify::{DeliveryStats, Notifier};
use crate::pipeline::{self, PipelineStats, PollJob, Scheduler, Shared, Snapshot};
use crate::reload::ReloadReport;
use crate::store::{self, SourceRow, SourceSpec, Store};

/// A built feedwatch: what `run` and `once` share.
pub struct App {
    shared: Shared,
    notifier: Arc<Notifier>,
    scheduler: Scheduler,
    /// Where [`App::reload`] puts the sources, topics and webhooks of a reloaded file.
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// On SQLite, this process is the only `run` or `once` on the file while it holds
    /// this.
    _file_lock: store::InstanceLock,
}

/// What `once` did.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnceReport {
    pub sources: usize,
    pub polls_ok: usize,
    pub polls_failed: usize,
    pub stories_new: usize,
    pub stories_updated: usize,
    pub stories_duplicate: usize,
    pub deliveries: DeliveryStats,
}

impl OnceReport {
    /// `once` could not do its work when every source failed.
    pub fn all_failed(&self) -> bool {
        self.sources > 0 && self.polls_ok == 0
    }
}

impl App {
    /// Connects to the store (running migrations), syncs the configured sources
    /// and compiles the topics.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let fetcher = Fetcher::new(&config.http).context("building the HTTP client")?;
        App::build_with_fetcher(config, fetcher).await
    }

    /// [`App::build`] with a fetcher built by the caller (tests give one a
    /// resolver that maps public-looking names to loopback).
    pub async fn build_with_fetcher(config: Config, fetcher: Fetcher) -> anyhow::Result<App> {
        let config = Arc::new(config);
        let snapshot = Snapshot::compile(config.clone())?;
        let store = store::connect(&config.database.url, config.database.max_connections).await?;
        info!(backend = store.backend(), url = %crate::config::redact_url(&config.database.url), "store ready");
        // Before any lease is released or claimed: no other process on a SQLite file.
        let file_lock = store::lock_database_file(&config.database.url)?;
        if store.backend() == "sqlite" {
            // One process owns a SQLite file: a lease still held is a crashed run's,
            // and waiting for it to lapse would leave its sources unpolled for minutes.
            match store.release_leases(None).await {
                Ok(0) => {}
                Ok(n) => info!(sources = n, "released the leases an earlier run left"),
                Err(e) => {
                    warn!(error = %e, "cannot release leases an earlier run left; they lapse on their own")
                }
            }
        }
        let run = pipeline::run_id();
        let notifier = Notifier::new(&config, format!("{}/{run}", config.daemon.instance))
            .context("building the webhook client")?;
        let (snapshot, snapshot_rx) = watch::channel(Arc::new(snapshot));
        let health = Arc::new(Health::new(config.daemon.stall_after));
        let shared = Shared {
            config,
            store,
            fetcher: Arc::new(fetcher),
            snapshot: snapshot_rx,
            outbox_wake: Arc::new(Notify::new()),
            schedule_wake: Arc::new(Notify::new()),
            prepare_permits: Shared::prepare_permits(),
            health,
        };
        let app = App {
            scheduler: Scheduler::new(shared.clone(), run),
            shared,
            notifier: Arc::new(notifier),
            snapshot,
            _file_lock: file_lock,
        };
        let config = app.shared.config.clone();
        app.sync_sources(&config).await?;
        Ok(app)
    }

    /// Reads the config at `path` again and, if the whole file is valid, puts its
    /// sources, topics and webhooks in place of the running ones at once: sources added
    /// are polled at once, sources removed are disabled (their stories stay, a poll of
    /// one under way writes nothing), a source's changed interval or URL is followed
    /// from now on; the next source claimed is prepared, matched and alerted with the
    /// new file, the next batch of deliveries is sent to its webhooks. A file that fails
    /// to load or compile, or sources the store cannot record, change nothing; the error
    /// says why. Settings only a restart applies are named in the report.
    pub async fn reload(&self, path: &Path) -> anyhow::Result<ReloadReport> {
        let file = path.to_path_buf();
        // Reading and compiling is blocking work: off the async workers.
        let snapshot =
            tokio::task::spawn_blocking(move || Snapshot::compile(Arc::new(Config::load(&file)?)))
                .await
                .context("the reload task failed")??;
        let webhooks = self.notifier.webhooks_for(&snapshot.config)?;
        let running = self.shared.snapshot.borrow().clone();
        let report = ReloadReport {
            restart_only: self.shared.config.restart_only_changes(&snapshot.config),
            topics: snapshot.topics.len(),
            webhooks: webhooks.names().len(),
            warnings: snapshot.config.warnings(),
            ..ReloadReport::sources(&running.config, &snapshot.config)
        };
        {
            // No source is claimed between the store's change and the snapshot's.
            let _claims = self.scheduler.hold_claims().await;
            self.sync_sources(&snapshot.config).await?;
            self.snapshot.send_replace(Arc::new(snapshot));
            self.notifier.set_webhooks(webhooks);
        }
        self.follow_new_schedules(&running.config, &report.sources_changed)
            .await;
        self.shared.schedule_wake.notify_one();
        self.shared.outbox_wake.notify_one();
        Ok(report)
    }

    /// Brings forward the next poll of the `changed` sources whose interval shrank or
    /// whose URL changed since `before`, so that the new schedule holds from now rather
    /// than from the next poll. A failure costs only that wait, so it is logged.
    async fn follow_new_schedules(&self, before: &Config, changed: &[String]) {
        let now = Utc::now();
        let after = self.shared.snapshot.borrow().config.clone();
        let polls: Vec<(String, chrono::DateTime<Utc>)> = changed
            .iter()
            .filter_map(|name| {
                let old = before.sources.iter().find(|s| s.name() == name)?;
                let new = after.sources.iter().find(|s| s.name() == name)?;
                let interval = after.interval_of(new);
                if old.url != new.url {
                    Some((name.clone(), now))
                } else if interval < before.interval_of(old) {
                    let by = now + chrono::Duration::from_std(interval).ok()?;
                    Some((name.clone(), by))
                } else {
                    None
                }
            })
            .collect();
        if polls.is_empty() {
            return;
        }
        if let Err(e) = self.shared.store.bring_polls_forward(&polls).await {
            warn!(error = %e, "cannot reschedule the sources whose interval or URL changed; they follow it after their next poll");
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Records the sources of `config` in the store (see [`Store::sync_sources`]).
    async fn sync_sources(&self, config: &Config) -> anyhow::Result<Vec<SourceRow>> {
        let specs: Vec<SourceSpec> = config
            .sources
            .iter()
            .map(|s| SourceSpec {
                name: s.name().to_string(),
                kind: s.kind.as_str().to_string(),
                url: s.url.clone(),
                enabled: s.enabled,
            })
            .collect();
        self.shared
            .store
            .sync_sources(&specs)
            .await
            .context("recording the configured sources")
    }

    /// Polls every enabled source once, stores what it finds, attempts every due
    /// delivery once, and returns what happened.
    pub async fn run_once(&self) -> anyhow::Result<OnceReport> {
        let configured = self.sync_sources(&self.shared.config).await?;
        let jobs = self.scheduler.claim_all(&configured).await?;
        let sources = jobs.len();
        let stats = Arc::new(PipelineStats::default());
        let (tx, rx) = mpsc::channel(jobs.len().max(1));
        let pipeline = tokio::spawn(pipeline::run(
            self.shared.clone(),
            rx,
            stats.clone(),
            CancellationToken::new(),
        ));
        // A long pass keeps its sources: `once` has no watchdog, so it renews as it goes.
        let renewing = tokio::spawn(renew_leases(
            self.shared.clone(),
            self.scheduler.once_holder(),
        ));
        for job in jobs {
            if tx.send(job).await.is_err() {
                break;
            }
        }
        drop(tx);
        let polled = pipeline.await;
        renewing.abort();
        polled.context("pipeline task panicked")?;
        // A `once` run from a timer is the only pass some stores get: keep their index
        // pruned too. A failure here costs space, not stories, so it does not fail the run.
        if let Err(e) =
            prune_bands(self.shared.store.as_ref(), self.shared.config.dedup.window).await
        {
            warn!(error = %e, "cannot prune the near-duplicate index");
        }
        let deliveries = self
            .notifier
            .deliver_due(self.shared.store.as_ref())
            .await
            .context("delivering webhooks")?;
        let report = OnceReport {
            sources,
            polls_ok: stats.polls_ok.load(Ordering::Relaxed),
            polls_failed: stats.polls_failed.load(Ordering::Relaxed),
            stories_new: stats.stories_new.load(Ordering::Relaxed),
            stories_updated: stats.stories_updated.load(Ordering::Relaxed),
            stories_duplicate: stats.stories_duplicate.load(Ordering::Relaxed),
            deliveries,
        };
        Ok(report)
    }

    /// The daemon: polls sources as they fall due and delivers alerts until
    /// `cancel`, then stops the scheduler, lets in-flight work drain within
    /// `daemon.shutdown_grace`, and returns.
    pub async fn run_daemon(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let grace = self.shared.config.daemon.shutdown_grace;
        // On Postgres, no other daemon of this instance may be running while this one
        // takes back the instance's leases and works: held until the daemon returns.
        let _instance_lock =
            store::lock_instance(&self.shared.config.database.url, self.scheduler.instance())
                .await?;
        self.take_back_leases().await;
        let stats = Arc::new(PipelineStats::default());
        let (tx, rx) = mpsc::channel::<PollJob>(64);
        // Every stage runs supervised: one that ends before shutdown says so on `died`.
        let (died_tx, mut died_rx) = mpsc::unbounded_channel();
        let stage = |name, task| supervised(name, cancel.clone(), died_tx.clone(), task);
        let pipeline = stage(
            "pipeline",
            Box::pin(pipeline::run(
                self.shared.clone(),
                rx,
                stats.clone(),
                cancel.clone(),
            )),
        );

        let notifier = self.notifier.clone();
        let (store, wake, notifier_cancel) = (
            self.shared.store.clone(),
            self.shared.outbox_wake.clone(),
            cancel.child_token(),
        );
        let notifier_task = stage(
            "notifier",
            Box::pin(async move { notifier.run(store, wake, notifier_cancel).await }),
        );

        if !self.shared.config.admin.listen.is_empty() {
            crate::admin::serve(
                &self.shared.config.admin.listen,
                self.shared.store.clone(),
                self.shared.health.clone(),
                cancel.child_token(),
            )
            .await?;
        }
        info!(
            sources = self.scheduler.sources(),
            topics = self.shared.snapshot.borrow().topics.len(),
            "feedwatch running"
        );
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        let pruning = {
            let (store, window, prune_cancel) = (
                self.shared.store.clone(),
                self.shared.config.dedup.window,
                cancel.clone(),
            );
            stage(
                "index pruning",
                Box::pin(async move {
                    let mut tick = tokio::time::interval(PRUNE_EVERY);
                    loop {
                        tokio::select! {
                            _ = prune_cancel.cancelled() => return,
                            _ = tick.tick() => {
                                if let Err(e) = prune_bands(store.as_ref(), window).await {
                                    warn!(error = %e, "cannot prune the near-duplicate index; trying again later");
                                }
                            }
                        }
                    }
                }),
            )
        };
        // Runs through the drain too (polls finishing keep their leases), until aborted.
        let keeping = stage(
            "health",
            Box::pin(keep_alive(self.shared.clone(), self.scheduler.holder())),
        );
        // The scheduler runs here; the stages run beside it, and none of them may end
        // before shutdown: one that does (a panic, say) ends the daemon non-zero, so
        // that systemd restarts it rather than leaving a process that polls nothing.
        let mut scheduler_result = Ok(());
        let died = tokio::select! {
            result = self.scheduler.run(&tx, &cancel) => {
                scheduler_result = result;
                None
            }
            Some(died) = died_rx.recv() => Some(died),
        };
        if let Some(died) = died {
            cancel.cancel();
            pipeline.abort();
            notifier_task.abort();
            pruning.abort();
            keeping.abort();
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            self.release_claims().await;
            self.shared.store.close().await;
            return Err(died);
        }
        drop(tx);
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        info!(
            "shutting down: nothing more is claimed; finishing the polls and deliveries under way"
        );
        // The keep-alive stage runs on through the drain: polls and deliveries still
        // finishing keep their leases, however short `daemon.lease` is beside the grace.
        drain(pipeline, notifier_task, &stats, grace).await;
        keeping.abort();
        self.release_claims().await;
        self.shared.store.close().await;
        info!("feedwatch stopped");
        scheduler_result
    }

    /// Hands back what this daemon claimed and did not finish, so that the next
    /// start (or another daemon) takes it at once rather than when the claims lapse:
    /// deliveries not sent (named by the notifier when their attempt was cut off), then
    /// every lease of this instance left, on sources not polled or whose polls were
    /// abandoned and on deliveries. Call it once the renewal has stopped.
    async fn release_claims(&self) {
        self.notifier
            .release_claims(self.shared.store.as_ref())
            .await;
        match self
            .shared
            .store
            .release_leases(Some(self.scheduler.instance()))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(leases = n, "released the leases of polls not finished"),
            Err(e) => {
                warn!(error = %e, "cannot release this daemon's leases; they lapse on their own")
            }
        }
    }

    /// Takes back, on Postgres, the leases an earlier run of this daemon (the same
    /// `daemon.instance`) left when it was killed: their polls and deliveries died with
    /// it, and waiting for the leases to lapse would leave that work undone meanwhile.
    /// (SQLite releases every lease at start already.)
    async fn take_back_leases(&self) {
        if self.shared.store.backend() != "postgres" {
            return;
        }
        let instance = self.scheduler.instance();
        match self.shared.store.release_leases(Some(instance)).await {
            Ok(0) => {}
            Ok(n) => {
                info!(
                    instance,
                    leases = n,
                    "took back the leases an earlier run of this daemon left"
                )
            }
            Err(e) => {
                warn!(error = %e, "cannot take back the leases an earlier run left; they lapse on their own")
            }
        }
    }

    /// Installs the metrics recorder (so `/metrics` has something to render).
    pub fn enable_metrics(&self) {
        let _ = crate::admin::metrics_handle();
    }
}

/// Spawns a long-lived stage of the daemon. If it ends before `cancel` (a panic, or a
/// return no stage should make), the reason goes to `died` and the daemon stops
/// non-zero, so that systemd restarts it rather than keeping a process that polls nothing.
fn supervised(
    stage: &'static str,
    cancel: CancellationToken,
    died: mpsc::UnboundedSender<anyhow::Error>,
    task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> tokio::task::JoinHandle<()> {
    use futures_util::FutureExt;
    tokio::spawn(async move {
        let ended = std::panic::AssertUnwindSafe(task).catch_unwind().await;
        if cancel.is_cancelled() {
            return;
        }
        let reason = match ended {
            Ok(()) => {
                anyhow::anyhow!("the {stage} stage ended before shutdown, so the daemon stops")
            }
            Err(panic) => {
                let message = crate::telemetry::panic_message(panic.as_ref());
                anyhow::anyhow!("the {stage} stage panicked, so the daemon stops: {message}")
            }
        };
        let _ = died.send(reason);
    })
}

/// While the daemon's work progresses (see [`Health`]): probes the store, pings the
/// systemd watchdog and renews this daemon's leases on sources and deliveries. Once it
/// is stuck, neither: systemd restarts it and other daemons take its work over. Runs
/// until aborted.
async fn keep_alive(shared: Shared, holder: String) {
    let health = shared.health.clone();
    let lease = shared.config.daemon.lease;
    let lease_chrono = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(1));
    let mut every = (health.stall_after() / 4).min(lease / 3);
    if let Some(watchdog) = sd_notify::watchdog_enabled() {
        every = every.min(watchdog / 2);
    }
    let every = every.max(Duration::from_millis(100));
    let probe_timeout = health.stall_after().min(Duration::from_secs(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stuck = false;
    loop {
        tick.tick().await;
        match tokio::time::timeout(probe_timeout, shared.store.ping()).await {
            Ok(Ok(())) => health.store_answered(),
            Ok(Err(e)) => health.store_failed(e.to_string()),
            Err(_) => health.store_failed(format!("no answer within {probe_timeout:?}")),
        }
        if let Some(why) = health.stuck() {
            if !was_stuck {
                warn!(reason = %why, "the daemon is stuck: the watchdog is no longer pinged and its leases are no longer renewed");
                was_stuck = true;
            }
            continue;
        }
        if was_stuck {
            info!("the daemon's work progresses again");
            was_stuck = false;
        }
        notify_systemd(&[sd_notify::NotifyState::Watchdog]);
        if let Err(e) = shared
            .store
            .renew_leases(&holder, Utc::now() + lease_chrono)
            .await
        {
            warn!(error = %e, "cannot renew this daemon's leases; trying again shortly");
        }
    }
}

/// Renews `holder`'s leases every third of a lease, for as long as it is let run.
async fn renew_leases(shared: Shared, holder: String) {
    let lease = shared.config.daemon.lease;
    let lease_chrono = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(1));
    let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = shared
            .store
            .renew_leases(&holder, Utc::now() + lease_chrono)
            .await
        {
            warn!(error = %e, "cannot renew the leases of this pass; trying again shortly");
        }
    }
}

/// Waits up to `grace` for the `pipeline` and `notifier` stages to finish the work
/// under way (neither claims anything more once shutdown began); then stops them,
/// naming the polls abandoned. The deliveries abandoned are named when they are
/// released.
async fn drain(
    pipeline: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    stats: &PipelineStats,
    grace: Duration,
) {
    let stop = [pipeline.abort_handle(), notifier.abort_handle()];
    let finished = async {
        let (pipeline, _) = tokio::join!(pipeline, notifier);
        if let Err(e) = pipeline {
            warn!(error = %e, "pipeline task failed");
        }
    };
    if tokio::time::timeout(grace, finished).await.is_ok() {
        return;
    }
    for stage in stop {
        stage.abort();
    }
    let sources = stats.in_flight.sources();
    if !sources.is_empty() {
        warn!(
            ?grace,
            ?sources,
            "shutdown grace elapsed; abandoning unfinished polls (nothing of them was written; their sources are polled again at the next start)"
        );
    }
}

/// How often the daemon prunes the near-duplicate index (first at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Stories whose band rows one prune transaction drops (50 rows each): short
/// transactions that leave the writer free for stories in between.
const PRUNE_BATCH: i64 = 500;

/// Drops the `story_bands` rows of every story older than the dedup `window`, in
/// batches, and returns how many stories that was.
async fn prune_bands(store: &dyn Store, window: Duration) -> store::StoreResult<u64> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(7));
    let before = Utc::now() - window;
    let mut total = 0;
    loop {
        let pruned = store.prune_bands(before, PRUNE_BATCH).await?;
        total += pruned;
        if pruned < PRUNE_BATCH as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        info!(
            stories = total,
            "pruned the near-duplicate index of stories older than the dedup window"
        );
    }
    // Counted even when 0, so the series exists from the first pass.
    metrics::counter!("feedwatch_dedup_pruned_stories_total").increment(total);
    Ok(total)
}

/// Tells systemd about the service state (a no-op outside `Type=notify` units).
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
