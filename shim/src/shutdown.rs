//! The daemon's shutdown trigger: fired by the Shutdown RPC, SIGTERM/SIGINT, or the runtime.
//!
//! It is an eventfd so that the main thread's epoll loop sees it like any other source.

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// Why the daemon is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// containerd called Shutdown and no task was left.
    ShutdownRpc,
    /// SIGTERM or SIGINT.
    Signal,
    /// The runtime asked for it.
    Runtime,
}

/// Fires the daemon's shutdown; cheap to clone. Only the first trigger counts.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    reason: Mutex<Option<ShutdownReason>>,
    fired: EventFd,
}

impl ShutdownTrigger {
    /// A trigger that has not fired.
    ///
    /// # Errors
    /// The eventfd cannot be created.
    pub fn new() -> io::Result<Self> {
        let fired = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self {
            shared: Arc::new(Shared {
                reason: Mutex::new(None),
                fired,
            }),
        })
    }

    /// Starts the shutdown; later calls are ignored.
    pub fn trigger(&self, reason: ShutdownReason) {
        let mut slot = self
            .shared
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason);
            // Only an overflowing counter fails, and one write cannot overflow it.
            let _ = self.shared.fired.write(1);
        }
    }

    /// Why it fired, or `None` if it has not.
    pub fn reason(&self) -> Option<ShutdownReason> {
        *self
            .shared
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Readable once the trigger has fired.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.fired.as_fd()
    }
}
