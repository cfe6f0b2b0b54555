//! The reaper and the exit monitor.
//!
//! One thread owns `waitpid(-1, WNOHANG)` (the daemon's main loop, or [`start_reaper`]'s
//! thread for the short-lived `delete`): on every SIGCHLD it reaps until nothing is left and
//! hands each exit to the [`Monitor`], which delivers it without loss to every subscriber of
//! all exits and to the one waiter of that pid, if any.
//!
//! Children are spawned through [`Monitor::spawn`]. Spawning and reaping exclude each other
//! through a read-write lock: spawns hold it shared (so they run concurrently) and the reaper
//! holds it exclusively. This gives subscribe-before-spawn for free, since an exit cannot be
//! dispatched before the waiter is registered, and it keeps the reaper from stealing a child
//! that std's `Command::spawn` reaps itself after a failed `exec`.
//!
//! Nothing may call `Child::wait` (or `output`, `status`) while a reaper runs: use the waiter.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Errors from the reaper and monitor.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// The signal handlers could not be installed.
    #[error("failed to register signal handlers")]
    RegisterSignals(#[source] io::Error),
    /// The reaper thread could not be started.
    #[error("failed to spawn the reaper thread")]
    SpawnThread(#[source] io::Error),
    /// The child process could not be spawned.
    #[error("failed to spawn {program}")]
    Spawn {
        /// The program that was run.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The pid that exited.
    pub pid: i32,
    /// The exit code, or 128 + the signal number if a signal killed it (containerd's convention).
    pub status: i32,
    /// When the reaper collected it.
    pub at: SystemTime,
}

/// Receives exactly one [`Exit`]: the one of the child it was created for.
#[derive(Debug)]
pub struct ExitWaiter {
    pid: i32,
    exits: Receiver<Exit>,
}

impl ExitWaiter {
    /// The pid this waiter waits for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Blocks until the child has been reaped.
    ///
    /// Returns `None` only if the monitor was dropped, which means no reaper can deliver it.
    pub fn wait(&self) -> Option<Exit> {
        self.exits.recv().ok()
    }

    /// Waits at most `timeout`; `None` when the child has not exited by then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        self.exits.recv_timeout(timeout).ok()
    }

    /// The exit, if it has already been delivered.
    pub fn try_wait(&self) -> Option<Exit> {
        self.exits.try_recv().ok()
    }
}

/// Receives every exit; returns `false` once it no longer wants any.
type ExitSink = Box<dyn FnMut(Exit) -> bool + Send>;

#[derive(Default)]
struct Subscribers {
    all: Vec<ExitSink>,
    by_pid: HashMap<i32, Sender<Exit>>,
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers")
            .field("all", &self.all.len())
            .field("by_pid", &self.by_pid.len())
            .finish()
    }
}

/// Fans reaped exits out to subscribers; shared by the reaper thread and every spawner.
#[derive(Debug, Default)]
pub struct Monitor {
    /// Shared by spawns in flight, exclusive while reaping.
    reaping: RwLock<()>,
    subscribers: Mutex<Subscribers>,
}

impl Monitor {
    /// A monitor with no subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every exit reaped from now on, including reparented orphans, in reaping order.
    pub fn subscribe_all(&self) -> Receiver<Exit> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.on_every_exit(move |exit| tx.send(exit).is_ok());
        rx
    }

    /// Calls `sink` with every exit reaped from now on, in reaping order, on the reaping
    /// thread and under the monitor's locks: it must only hand the exit on (never spawn
    /// through this monitor, never block). Returning `false` unsubscribes it.
    pub fn on_every_exit(&self, sink: impl FnMut(Exit) -> bool + Send + 'static) {
        self.lock_subscribers().all.push(Box::new(sink));
    }

    /// Spawns `command` and returns the child with a waiter for its exit.
    ///
    /// The exit is also delivered to subscribe-all receivers. Never call `Child::wait` on the
    /// returned child; drop it (which does not wait) once its pipes are no longer needed.
    ///
    /// # Errors
    /// Returns [`ReaperError::Spawn`] when the program cannot be started.
    pub fn spawn(&self, command: &mut Command) -> Result<(Child, ExitWaiter), ReaperError> {
        let _no_reaping = self.reaping.read().unwrap_or_else(PoisonError::into_inner);
        let child = command.spawn().map_err(|source| ReaperError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        let pid = pid_of(&child);
        let (tx, rx) = crossbeam_channel::unbounded();
        self.lock_subscribers().by_pid.insert(pid, tx);
        Ok((child, ExitWaiter { pid, exits: rx }))
    }

    /// Reaps every exited child and dispatches the exits; returns how many were reaped.
    ///
    /// The reaper thread calls this on SIGCHLD; it is public for runtimes that reap
    /// by other means (tests, a pidfd loop).
    pub fn reap(&self) -> usize {
        let _exclusive = self.reaping.write().unwrap_or_else(PoisonError::into_inner);
        let mut reaped = 0;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.dispatch(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, signal, _core)) => {
                    self.dispatch(pid.as_raw(), 128 + signal as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::error!("waitpid failed: {errno}");
                    return reaped;
                }
                // Stops and continues are not exits; waitpid without WUNTRACED rarely reports them.
                Ok(_) => continue,
            }
            reaped += 1;
        }
    }

    fn dispatch(&self, pid: i32, status: i32) {
        let exit = Exit {
            pid,
            status,
            at: SystemTime::now(),
        };
        let mut subscribers = self.lock_subscribers();
        // A receiver that was dropped is pruned; everyone else gets the exit.
        subscribers.all.retain_mut(|sink| sink(exit));
        if let Some(tx) = subscribers.by_pid.remove(&pid) {
            // The waiter may have been dropped by a caller that lost interest: nothing to do.
            let _ = tx.send(exit);
        }
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        // The critical sections only push to channels and maps: a panic there leaves
        // consistent data, so a poisoned lock is safe to keep using.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn pid_of(child: &Child) -> i32 {
    // Linux pids fit in i32 (pid_max is at most 2^22).
    i32::try_from(child.id()).unwrap_or(i32::MAX)
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
