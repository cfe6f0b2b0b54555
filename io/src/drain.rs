//! A count-down latch that says when every output stream of a process has drained.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Waitable "all output has reached the client" state of one process.
///
/// Cloning shares the state: the engine counts down as each output stream hits EOF and
/// has been fully written; any number of waiters may wait, each with its own bound.
#[derive(Debug, Clone)]
pub struct Drain {
    state: Arc<(Mutex<usize>, Condvar)>,
}

impl Drain {
    /// A latch waiting for `streams` streams.
    pub(crate) fn new(streams: usize) -> Self {
        Self {
            state: Arc::new((Mutex::new(streams), Condvar::new())),
        }
    }

    /// Whether every stream has drained.
    pub fn is_drained(&self) -> bool {
        *self.lock() == 0
    }

    /// Waits until every stream has drained or `timeout` passes; returns whether drained.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut remaining = self.lock();
        while *remaining > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let (guard, _) = self
                .state
                .1
                .wait_timeout(remaining, left)
                .unwrap_or_else(PoisonError::into_inner);
            remaining = guard;
        }
        true
    }

    /// Records that one stream finished.
    pub(crate) fn stream_done(&self) {
        let mut remaining = self.lock();
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            self.state.1.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // The counter stays consistent even if a holder panicked: it is a plain integer.
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_and_wakes_waiters() {
        let drain = Drain::new(2);
        assert!(!drain.wait_timeout(Duration::ZERO));
        let waiter = {
            let drain = drain.clone();
            std::thread::spawn(move || drain.wait_timeout(Duration::from_secs(60)))
        };
        drain.stream_done();
        assert!(!drain.is_drained());
        drain.stream_done();
        assert!(waiter.join().unwrap());
        assert!(drain.is_drained());
        assert!(Drain::new(0).wait_timeout(Duration::ZERO));
    }
}
