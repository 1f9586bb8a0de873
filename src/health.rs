//! Whether the daemon's work progresses, beside the pipeline rather than in it. The
//! scheduler beats on every pass of its loop and every poll it hands out; the writer
//! marks the start and end of each poll it stores; a probe records each time the
//! store answers a trivial query. From these [`Health::stuck`] says whether, and why,
//! the daemon is stuck: `/readyz` answers 503 with that reason, the systemd watchdog
//! is no longer pinged (so systemd restarts the daemon) and leases are no longer
//! renewed (so other daemons take its sources over).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The progress marks of one daemon. Share it in an `Arc`.
pub struct Health {
    /// Marks are milliseconds since this instant (0: never).
    start: Instant,
    stall_after: Duration,
    /// The scheduler's last beat.
    scheduler: AtomicU64,
    /// When the poll the writer is storing reached it; 0 while it waits for one.
    writer_busy_since: AtomicU64,
    /// When the writer last finished storing a poll.
    writer_done: AtomicU64,
    /// When the store last answered the probe.
    store_answered: AtomicU64,
    /// Why the store's last probe failed, if it did.
    store_error: Mutex<Option<String>>,
}

impl Health {
    /// Marks that count as fresh at first: a daemon is not stuck before it began.
    pub fn new(stall_after: Duration) -> Health {
        let health = Health {
            start: Instant::now(),
            stall_after,
            scheduler: AtomicU64::new(0),
            writer_busy_since: AtomicU64::new(0),
            writer_done: AtomicU64::new(0),
            store_answered: AtomicU64::new(0),
            store_error: Mutex::new(None),
        };
        health.scheduler_beat();
        health.store_answered();
        health
    }

    /// How long a stage may go without progress before it counts as stuck.
    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }

    fn now(&self) -> u64 {
        // At least 1, so that 0 can mean "never" or "idle".
        (self.start.elapsed().as_millis() as u64).max(1)
    }

    fn age(&self, mark: &AtomicU64) -> Duration {
        let at = mark.load(Ordering::Relaxed);
        Duration::from_millis(self.now().saturating_sub(at))
    }

    /// The scheduler made a pass of its loop or handed out a poll.
    pub fn scheduler_beat(&self) {
        self.scheduler.store(self.now(), Ordering::Relaxed);
    }

    /// The writer starts storing a poll; it is done when the guard drops.
    pub fn writer_busy(&self) -> WriterBusy<'_> {
        self.writer_busy_since.store(self.now(), Ordering::Relaxed);
        WriterBusy(self)
    }

    /// The store answered the probe.
    pub fn store_answered(&self) {
        self.store_answered.store(self.now(), Ordering::Relaxed);
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The store's probe failed (or did not answer in time) for `reason`.
    pub fn store_failed(&self, reason: String) {
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Why the daemon is stuck, or `None` while its work progresses: the store has not
    /// answered for `stall_after`, the writer has been storing one poll that long, or
    /// the scheduler has not beaten that long while the writer finished nothing either
    /// (a scheduler waiting on a full pipeline is not stuck while the pipeline moves).
    pub fn stuck(&self) -> Option<String> {
        let limit = self.stall_after;
        let secs = |d: Duration| d.as_secs();
        let store = self.age(&self.store_answered);
        if store > limit {
            let why = self
                .store_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "no answer".into());
            return Some(format!(
                "the store has not answered for {} s: {why}",
                secs(store)
            ));
        }
        let busy_since = self.writer_busy_since.load(Ordering::Relaxed);
        if busy_since != 0 {
            let busy = Duration::from_millis(self.now().saturating_sub(busy_since));
            if busy > limit {
                return Some(format!(
                    "the writer has been storing one poll for {} s",
                    secs(busy)
                ));
            }
        }
        let scheduler = self.age(&self.scheduler);
        if scheduler > limit && self.age(&self.writer_done) > limit {
            return Some(format!(
                "the scheduler has not moved for {} s and no poll was stored meanwhile",
                secs(scheduler)
            ));
        }
        None
    }
}

/// The writer is storing a poll until this drops.
pub struct WriterBusy<'a>(&'a Health);

impl Drop for WriterBusy<'_> {
    fn drop(&mut self) {
        let health = self.0;
        health.writer_busy_since.store(0, Ordering::Relaxed);
        health.writer_done.store(health.now(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_daemon_is_not_stuck() {
        assert_eq!(Health::new(Duration::from_millis(50)).stuck(), None);
    }

    #[test]
    fn a_writer_busy_past_the_limit_is_stuck_and_recovers_when_done() {
        let health = Health::new(Duration::from_millis(30));
        let busy = health.writer_busy();
        std::thread::sleep(Duration::from_millis(60));
        health.scheduler_beat();
        health.store_answered();
        let why = health.stuck().expect("stuck");
        assert!(why.contains("writer"), "{why}");
        drop(busy);
        assert_eq!(health.stuck(), None);
    }

    #[test]
    fn a_silent_scheduler_is_stuck_only_when_nothing_is_stored_either() {
        let health = Health::new(Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(60));
        health.store_answered();
        drop(health.writer_busy());
        assert_eq!(health.stuck(), None, "the pipeline moves");
        std::thread::sleep(Duration::from_millis(60));
        health.store_answered();
        let why = health.stuck().expect("stuck");
        assert!(why.contains("scheduler"), "{why}");
    }

    #[test]
    fn a_store_that_stops_answering_is_stuck_with_its_reason() {
        let health = Health::new(Duration::from_millis(30));
        health.store_failed("connection refused".into());
        std::thread::sleep(Duration::from_millis(60));
        health.scheduler_beat();
        let why = health.stuck().expect("stuck");
        assert!(
            why.contains("store") && why.contains("connection refused"),
            "{why}"
        );
    }
}
