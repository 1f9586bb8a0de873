//! The scheduler: the pipeline's first stage. It claims the sources that are due
//! (a lease in `sources`, committed before any request, so several daemons on one
//! Postgres never poll a source at once), turns each into a [`PollJob`] with the
//! source's compiled plan, and sleeps until the next source falls due or a
//! recorded poll wakes it. `once` claims every source at once instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{PollJob, Shared};
use crate::store::{SourceRow, SourceState};

/// Most sources claimed at once.
const CLAIM_BATCH: i64 = 64;

/// A name for one run of a daemon: 12 random hex digits.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The longest the scheduler sleeps: a source due sooner wakes it, a recorded poll too.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Claims sources for polls under leases named after this daemon.
pub struct Scheduler {
    shared: Shared,
    /// This daemon's name (`daemon.instance`), the part of its lease owners before
    /// the `/`: the same after a restart, so that the daemon takes its leases back.
    instance: String,
    /// This run of the daemon, so that a claim of this run is never mistaken for an
    /// equally numbered claim of an earlier run, and only this run's are renewed.
    run: String,
    /// Claims made so far, numbering the leases.
    claims: AtomicU64,
    /// Held while sources are claimed and given their plans, and by a reload while it
    /// changes the sources in the store and the snapshot: a claim sees both before or
    /// both after.
    claiming: Mutex<()>,
}

impl Scheduler {
    /// A scheduler for this run `run` of the daemon (see [`run_id`]); the plans of
    /// the sources it claims come from the snapshot in force at each claim.
    pub fn new(shared: Shared, run: String) -> Scheduler {
        let instance = shared.config.daemon.instance.clone();
        Scheduler {
            shared,
            instance,
            run,
            claims: AtomicU64::new(0),
            claiming: Mutex::new(()),
        }
    }

    /// Keeps sources from being claimed until the guard drops (a reload in progress).
    pub async fn hold_claims(&self) -> MutexGuard<'_, ()> {
        self.claiming.lock().await
    }

    /// This daemon's name: the part of its lease owners before the `/`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// This run's name in its leases, `<instance>/<run>`: what it renews.
    pub fn holder(&self) -> String {
        format!("{}/{}", self.instance, self.run)
    }

    /// The holder `once` claims as, `<instance>.once/<run>`: not under the daemon's
    /// instance name, so that a daemon started with the same config takes back only its
    /// own leases, never those of a `once` running beside it.
    pub(crate) fn once_holder(&self) -> String {
        format!("{}.once/{}", self.instance, self.run)
    }

    /// How many sources are configured.
    pub fn sources(&self) -> usize {
        self.shared.snapshot.borrow().plans.len()
    }

    /// How long a claim holds its source unless renewed (`daemon.lease`); then
    /// another daemon may take it.
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.shared.config.daemon.lease)
            .unwrap_or(chrono::Duration::minutes(1))
    }

    /// A lease owner for one claim, `<instance>/<run>/<claim>`: the daemon's name, this
    /// run and a claim number, so that a poll fenced by it cannot write once its source
    /// was claimed again, even by this same daemon after the lease ran out.
    fn lease_owner(&self, holder: &str) -> Arc<str> {
        let claim = self.claims.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{holder}/{claim}"))
    }

    /// The polls of the claimed `rows`, each with its plan in the snapshot in force.
    /// Call it under [`Scheduler::hold_claims`]'s lock, with the claim.
    fn jobs(&self, rows: Vec<SourceRow>, owner: &Arc<str>) -> Vec<PollJob> {
        let snapshot = self.shared.snapshot.borrow().clone();
        rows.into_iter()
            .filter_map(|row| {
                let Some(plan) = snapshot.plans.get(&row.name).cloned() else {
                    // Only a daemon with another config file (on a shared Postgres) gets here.
                    warn!(source = %row.name, "claimed a source this config does not have; its lease lapses");
                    return None;
                };
                Some(PollJob {
                    row,
                    plan,
                    snapshot: snapshot.clone(),
                    lease_owner: owner.clone(),
                })
            })
            .collect()
    }

    /// Claims every active source, due or not (`once`); sources `configured` lists but
    /// a running daemon holds are left to it.
    pub async fn claim_all(&self, configured: &[SourceRow]) -> anyhow::Result<Vec<PollJob>> {
        let active = configured
            .iter()
            .filter(|r| matches!(r.state, SourceState::Active | SourceState::Blocked))
            .count();
        let owner = self.lease_owner(&self.once_holder());
        let now = Utc::now();
        let _claiming = self.hold_claims().await;
        let rows = self
            .shared
            .store
            .claim_every_source(&owner, now, now + self.lease())
            .await
            .context("claiming the sources")?;
        if rows.len() < active {
            warn!(
                skipped = active - rows.len(),
                "sources leased by a running daemon are left to it"
            );
        }
        Ok(self.jobs(rows, &owner))
    }

    /// Claims sources as they fall due and sends their polls to `jobs`, until `cancel`.
    pub async fn run(
        &self,
        jobs: &mpsc::Sender<PollJob>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let store = &self.shared.store;
        let health = &self.shared.health;
        let holder = self.holder();
        // Beat at least four times per `stall_after`, even when nothing falls due.
        let longest_sleep = (health.stall_after() / 4).clamp(Duration::from_millis(100), MAX_SLEEP);
        let mut store_failures = 0u32;
        while !cancel.is_cancelled() {
            health.scheduler_beat();
            let now = Utc::now();
            let owner = self.lease_owner(&holder);
            let claiming = self.hold_claims().await;
            let claimed = store
                .claim_due_sources(&owner, now, now + self.lease(), CLAIM_BATCH)
                .await
                .map(|rows| self.jobs(rows, &owner));
            drop(claiming);
            let wait = match claimed {
                Ok(claimed) => {
                    store_failures = 0;
                    for job in claimed {
                        // Stopping leaves the rest of the batch claimed: the daemon
                        // releases its leases once the polls under way are done.
                        tokio::select! {
                            sent = jobs.send(job) => if sent.is_err() { return Ok(()) },
                            _ = cancel.cancelled() => return Ok(()),
                        }
                        health.scheduler_beat();
                    }
                    match store.next_poll_due(Utc::now()).await {
                        Ok(Some(next)) => (next - Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .clamp(Duration::from_millis(100), longest_sleep),
                        Ok(None) => longest_sleep,
                        Err(e) => {
                            warn!(error = %e, "cannot read the schedule");
                            Duration::from_secs(5)
                        }
                    }
                }
                Err(e) => {
                    store_failures += 1;
                    warn!(error = %e, failures = store_failures, "cannot claim due sources; retrying");
                    (Duration::from_secs(5) * store_failures.min(6)).min(longest_sleep)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.shared.schedule_wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }
}
