//! Fds a runtime hands to the daemon's main loop, so that waiting on them takes no thread.
//!
//! A runtime that waits for its own notifications (the runc runtime's OOM watcher: an epoll
//! set, readable when a watched cgroup reports) would otherwise keep a thread asleep for the
//! daemon's whole life. It adds a [`LoopSource`] while it is built ([`crate::Runtime::new`],
//! through [`crate::ShimContext::main_loop`]); the main loop polls the source's fd beside its
//! own and calls the source when the fd is readable. Sources run between reaping children
//! and serving connections, so they must not block: take what is ready and return.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// An fd for the main loop to poll, and what to do when it is readable.
pub trait LoopSource: Send {
    /// The fd, polled for readability (level-triggered: until `on_readable` has taken what
    /// made it readable).
    fn fd(&self) -> BorrowedFd<'_>;

    /// Runs on the main loop when the fd is readable; must not block.
    fn on_readable(&mut self);
}

/// The main loop was already serving when a source came.
#[derive(Debug, thiserror::Error)]
#[error("the main loop is already serving: add sources while the runtime is built")]
pub struct LoopStarted;

/// The sources waiting for the main loop; `None` once it took them.
type Waiting = Option<Vec<Box<dyn LoopSource>>>;

/// Where a runtime adds its [`LoopSource`]s; the daemon takes them when it starts serving
/// and drops them when it stops.
#[derive(Clone)]
pub struct MainLoopSources {
    added: Arc<Mutex<Waiting>>,
}

impl std::fmt::Debug for MainLoopSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let added = self.lock().as_ref().map(Vec::len);
        f.debug_struct("MainLoopSources")
            .field("waiting", &added)
            .finish()
    }
}

impl Default for MainLoopSources {
    fn default() -> Self {
        Self::new()
    }
}

impl MainLoopSources {
    /// Sources for a main loop that has not started.
    pub fn new() -> Self {
        Self {
            added: Arc::new(Mutex::new(Some(Vec::new()))),
        }
    }

    /// Has `source` polled by the main loop from the moment the daemon serves until it stops.
    ///
    /// # Errors
    /// [`LoopStarted`] once the daemon serves.
    pub fn add(&self, source: impl LoopSource + 'static) -> Result<(), LoopStarted> {
        let mut added = self.lock();
        let sources = added.as_mut().ok_or(LoopStarted)?;
        sources.push(Box::new(source));
        Ok(())
    }

    /// The sources added so far; later additions are refused.
    pub(crate) fn take(&self) -> Vec<Box<dyn LoopSource>> {
        self.lock().take().unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.added.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::os::fd::AsFd;

    struct Counter(EventFd);

    impl LoopSource for Counter {
        fn fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
        fn on_readable(&mut self) {
            let _ = self.0.read();
        }
    }

    fn counter() -> Counter {
        Counter(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).unwrap())
    }

    #[test]
    fn sources_added_before_serving_are_taken_and_later_ones_refused() {
        let sources = MainLoopSources::new();
        let runtime_copy = sources.clone();
        runtime_copy.add(counter()).unwrap();
        runtime_copy.add(counter()).unwrap();
        assert_eq!(sources.take().len(), 2);
        assert!(runtime_copy.add(counter()).is_err());
        assert!(sources.take().is_empty());
    }
}
