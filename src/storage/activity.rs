//! When live traffic last happened: the last commit that woke a waiter (a
//! sync, a socket). Background writers (notification logs, delivered
//! receipts) wait for a quiet moment before they commit, so that their
//! batches do not land in the middle of a message's fan-out, where they
//! would take a core from the deliveries.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long after the last wake-up the server counts as quiet: a message's
/// fan-out to its members' sockets takes a few milliseconds after the commit.
pub const QUIET: Duration = Duration::from_millis(3);

/// The longest a background writer waits for quiet under steady traffic.
pub const QUIET_AT_MOST: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Microseconds from `started` to the last wake-up (0: none yet).
    last_wake: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_wake: AtomicU64::new(0),
        }
    }
}

impl Activity {
    pub fn woke(&self) {
        let now = self.started.elapsed().as_micros() as u64;
        self.last_wake.fetch_max(now.max(1), Ordering::Relaxed);
    }

    /// How long nothing has been woken (`None` before the first wake-up).
    fn quiet_for(&self) -> Option<Duration> {
        let last = self.last_wake.load(Ordering::Relaxed);
        (last > 0).then(|| {
            let now = self.started.elapsed().as_micros() as u64;
            Duration::from_micros(now.saturating_sub(last))
        })
    }

    /// Returns once nothing has been woken for `quiet`, or after `at_most`
    /// under steady traffic, so that background work is late, never starved.
    pub async fn wait_quiet(&self, quiet: Duration, at_most: Duration) {
        let deadline = tokio::time::Instant::now() + at_most;
        loop {
            let remaining = match self.quiet_for() {
                Some(quiet_for) if quiet_for < quiet => quiet - quiet_for,
                _ => return,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep_until((now + remaining).min(deadline)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const QUIET: Duration = Duration::from_millis(20);
    const AT_MOST: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn without_traffic_the_wait_is_over_at_once() {
        let activity = Activity::default();
        let waited = tokio::time::timeout(AT_MOST, activity.wait_quiet(QUIET, AT_MOST)).await;
        assert!(waited.is_ok(), "no wake-up yet: nothing to wait for");
    }

    #[tokio::test]
    async fn a_wake_up_makes_background_work_wait_for_quiet() {
        let activity = Activity::default();
        activity.woke();
        let started = Instant::now();
        activity.wait_quiet(QUIET, AT_MOST).await;
        assert!(started.elapsed() >= QUIET - Duration::from_millis(1));
        assert!(activity.quiet_for().is_some_and(|q| q >= QUIET));
    }

    #[tokio::test]
    async fn steady_traffic_delays_background_work_but_does_not_starve_it() {
        let activity = Arc::new(Activity::default());
        let busy = {
            let activity = activity.clone();
            tokio::spawn(async move {
                loop {
                    activity.woke();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        activity.wait_quiet(QUIET, AT_MOST).await;
        let waited = started.elapsed();
        busy.abort();
        assert!(
            waited >= AT_MOST,
            "never quiet: waited the longest, {waited:?}"
        );
    }
}
