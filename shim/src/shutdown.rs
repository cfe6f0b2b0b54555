//! The daemon's shutdown trigger: fired by the Shutdown RPC, SIGTERM/SIGINT, or the runtime.

use crossbeam_channel::{Receiver, Sender, TrySendError};

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
    fire: Sender<ShutdownReason>,
}

impl ShutdownTrigger {
    /// A trigger and the receiver the daemon's main thread waits on.
    pub fn new() -> (Self, Receiver<ShutdownReason>) {
        let (fire, fired) = crossbeam_channel::bounded(1);
        (Self { fire }, fired)
    }

    /// Starts the shutdown; later calls are ignored.
    pub fn trigger(&self, reason: ShutdownReason) {
        match self.fire.try_send(reason) {
            Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}
