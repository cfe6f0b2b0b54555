//! The reaper thread of the short-lived `delete` invocation.
//!
//! A daemon reaps in its main loop; `delete` has no loop, so [`start_reaper`] gives it a
//! thread that calls [`Monitor::reap`] on every SIGCHLD. The monitor itself, and the one
//! way to spawn a child and learn of its exit, live in `wren-process`.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wren_process::Monitor;

/// Errors from starting the reaper.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// The signal handlers could not be installed.
    #[error("failed to register signal handlers")]
    RegisterSignals(#[source] io::Error),
    /// The reaper thread could not be started.
    #[error("failed to spawn the reaper thread")]
    SpawnThread(#[source] io::Error),
}

/// What the reaper thread does on SIGTERM or SIGINT.
pub trait OnTerminate: Send + 'static {
    /// Called once per termination signal.
    fn terminate(&self);
}

impl<F: Fn() + Send + 'static> OnTerminate for F {
    fn terminate(&self) {
        self();
    }
}

/// Starts the thread "reaper": reaps on SIGCHLD and calls `on_terminate` on SIGTERM/SIGINT.
///
/// A first reap runs at once, for children that exited before the handlers existed.
///
/// # Errors
/// Returns [`ReaperError::SpawnThread`] when the thread cannot be created.
pub fn start_reaper(
    monitor: Arc<Monitor>,
    mut signals: Signals,
    on_terminate: impl OnTerminate,
) -> Result<JoinHandle<()>, ReaperError> {
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            monitor.reap();
            for signal in signals.forever() {
                match signal {
                    SIGCHLD => {
                        monitor.reap();
                    }
                    SIGTERM | SIGINT => {
                        log::info!("received signal {signal}, shutting down");
                        on_terminate.terminate();
                    }
                    _ => {}
                }
            }
        })
        .map_err(ReaperError::SpawnThread)
}
