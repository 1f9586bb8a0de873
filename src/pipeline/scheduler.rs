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

/// Claims sources for polls under leases named after this process.
pub struct Scheduler {
    shared: Shared,
    /// This process's identity in `sources.lease_owner`.
    instance: String,
    /// Claims made so far, numbering the leases.
    claims: AtomicU64,
    /// Held while sources are claimed and given their plans, and by a reload while it
    /// changes the sources in the store and the snapshot: a claim sees both before or
    /// both after.
    claiming: Mutex<()>,
}

impl Scheduler {
    pub fn new(shared: Shared) -> Scheduler {
        Scheduler {
            shared,
            instance: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            claims: AtomicU64::new(0),
            claiming: Mutex::new(()),
        }
    }

    /// Keeps sources from being claimed until the guard drops (a reload in progress).
    pub async fn hold_claims(&self) -> MutexGuard<'_, ()> {
        self.claiming.lock().await
    }

    /// This process's identity: the part of its lease owners before the `/`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How many sources are configured.
    pub fn sources(&self) -> usize {
        self.shared.snapshot.borrow().plans.len()
    }

    /// How long a poll holds its source at most; then another daemon may take it.
    fn lease(&self) -> chrono::Duration {
        let lease = self.shared.config.http.timeout * 4 + Duration::from_secs(300);
        chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1))
    }

    /// A lease owner for one claim: this process's identity and a claim number, so that
    /// a poll fenced by it cannot write once its source was claimed again, even by this
    /// same process after the lease ran out.
    fn lease_owner(&self) -> Arc<str> {
        let claim = self.claims.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}/{claim}", self.instance))
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
        let owner = self.lease_owner();
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
        let mut store_failures = 0u32;
        while !cancel.is_cancelled() {
            let now = Utc::now();
            let owner = self.lease_owner();
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
                    }
                    match store.next_poll_due(Utc::now()).await {
                        Ok(Some(next)) => (next - Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .clamp(Duration::from_millis(100), Duration::from_secs(30)),
                        Ok(None) => Duration::from_secs(30),
                        Err(e) => {
                            warn!(error = %e, "cannot read the schedule");
                            Duration::from_secs(5)
                        }
                    }
                }
                Err(e) => {
                    store_failures += 1;
                    warn!(error = %e, failures = store_failures, "cannot claim due sources; retrying");
                    Duration::from_secs(u64::from(store_failures.min(6)) * 5)
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
