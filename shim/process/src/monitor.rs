//! The exit monitor behind a shim's single reaper.
//!
//! One thread owns `waitpid(-1, WNOHANG)` and calls [`Monitor::reap`] on every SIGCHLD; the
//! monitor hands each exit to every subscriber of all exits and to the one waiter of that
//! pid, if any, without loss.
//!
//! Spawning and reaping exclude each other through a read-write lock: spawns hold it shared
//! (so they run concurrently) and the reaper holds it exclusively. This gives
//! subscribe-before-spawn for free, since an exit cannot be dispatched before its waiter is
//! registered, and it keeps the reaper from stealing a child that std's `Command::spawn`
//! reaps itself after a failed `exec`.
//!
//! Nothing may call `Child::wait` (or `output`, `status`) while a reaper runs: use the waiter.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::{Exit, Spawned, Spawner};

/// A child [`Monitor::spawn`] could not start.
#[derive(Debug, thiserror::Error)]
#[error("failed to spawn {program}")]
pub struct SpawnError {
    /// The program that was run.
    pub program: String,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Receives exactly one [`Exit`]: the one of the child it was created for.
#[derive(Debug)]
pub struct ExitWaiter {
    pid: i32,
    exits: Receiver<Exit>,
    /// The exit once received, so every later question gets the same answer.
    received: OnceLock<Exit>,
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
        self.answer(self.exits.recv().ok())
    }

    /// Waits at most `timeout`; `None` when the child has not exited by then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        self.answer(self.exits.recv_timeout(timeout).ok())
    }

    /// The exit, if it has already been delivered.
    pub fn try_wait(&self) -> Option<Exit> {
        self.answer(self.exits.try_recv().ok())
    }

    fn answer(&self, delivered: Option<Exit>) -> Option<Exit> {
        if let Some(exit) = self.received.get() {
            return Some(*exit);
        }
        let exit = delivered?;
        Some(*self.received.get_or_init(|| exit))
    }
}

impl Spawned for ExitWaiter {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn wait(&mut self) -> io::Result<Exit> {
        ExitWaiter::wait(self).ok_or_else(|| io::Error::other("the reaper has stopped"))
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<Exit>> {
        Ok(ExitWaiter::wait_timeout(self, timeout))
    }

    fn signal(&mut self, signal: Signal) -> io::Result<()> {
        // Until the reaper collects it, the pid cannot be reused; once it has, the exit is
        // on the channel, so this check is never late.
        if self.try_wait().is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.pid), signal).map_err(io::Error::from)
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

/// Fans reaped exits out to subscribers; shared by the reaping thread and every spawner.
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
    /// thread and under the monitor's locks: it must never block and never spawn through
    /// this monitor. It may take a lock of its own (the monitor's come first) only if no
    /// thread ever holds that lock while spawning through this monitor or waiting for the
    /// reaping thread; it may start a thread. Returning `false` unsubscribes it.
    pub fn on_every_exit(&self, sink: impl FnMut(Exit) -> bool + Send + 'static) {
        self.lock_subscribers().all.push(Box::new(sink));
    }

    /// Spawns `command` and returns the child with a waiter for its exit; the exit also
    /// goes to every subscriber of all exits. (As a [`Spawner`], the monitor returns the
    /// waiter alone.)
    ///
    /// Never call `Child::wait` on the returned child; drop it (which does not wait) once
    /// its pipes are no longer needed.
    ///
    /// # Errors
    /// The program could not be started.
    pub fn spawn(&self, command: &mut Command) -> Result<(Child, ExitWaiter), SpawnError> {
        let _no_reaping = self.reaping.read().unwrap_or_else(PoisonError::into_inner);
        let child = command.spawn().map_err(|source| SpawnError {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        // Linux pids fit in i32 (pid_max is at most 2^22).
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.lock_subscribers().by_pid.insert(pid, tx);
        let waiter = ExitWaiter {
            pid,
            exits: rx,
            received: OnceLock::new(),
        };
        Ok((child, waiter))
    }

    /// Reaps every exited child and dispatches the exits; returns how many were reaped.
    ///
    /// The process's reaping thread calls this on SIGCHLD (a shim's main loop, or
    /// `wren_shim::reaper::start_reaper`); it is public for programs that reap by other
    /// means (tests, a pidfd loop).
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
            at: std::time::SystemTime::now(),
        };
        let mut subscribers = self.lock_subscribers();
        // A receiver that was dropped is pruned; everyone else gets the exit.
        subscribers.all.retain_mut(|sink| sink(exit));
        if let Some(tx) = subscribers.by_pid.remove(&pid) {
            // The waiter may have been dropped by a caller that lost interest: nothing to do.
            let _ = tx.send(exit);
        }
    }

    fn lock_subscribers(&self) -> MutexGuard<'_, Subscribers> {
        // The critical sections only push to channels and maps: a panic there leaves
        // consistent data, so a poisoned lock is safe to keep using.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Spawner for Monitor {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn Spawned>> {
        // The std child is dropped at once: dropping it neither waits nor kills, and the
        // waiter is the only way to learn of its exit.
        let (_child, waiter) = Monitor::spawn(self, cmd).map_err(|error| error.source)?;
        Ok(Box::new(waiter))
    }
}
