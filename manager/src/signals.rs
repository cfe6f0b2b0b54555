//! Signal forwarding for attached sessions: what `ctr run` and `docker run` do, so that
//! Ctrl-C reaches the container and the session (with its `--rm` cleanup) ends as usual,
//! instead of killing wrenctl and leaving the container and its shim behind.

use std::io;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

/// The signals a terminal or a supervisor sends to wrenctl that belong to the container.
const FORWARDED: [i32; 6] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// Calls `forward` with each forwarded signal received until dropped.
#[derive(Debug)]
pub struct SignalForwarder {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalForwarder {
    /// Starts forwarding; until dropped, these signals no longer end wrenctl.
    ///
    /// # Errors
    /// Registering the handlers or spawning the thread failed.
    pub fn start(forward: impl Fn(i32) + Send + 'static) -> io::Result<Self> {
        let mut signals = Signals::new(FORWARDED)?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    forward(signal);
                }
            })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
