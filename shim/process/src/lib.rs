//! The one seam through which wren spawns a child and learns of its exit.
//!
//! A shim reaps with `waitpid(-1)`: any other `wait` on a child races it, and a child that
//! exits between `fork` and a late subscription is lost (docs/protocol.md §5.1). So nothing
//! in wren waits on its own children: the runc driver, the io crate's logging binaries and
//! the shim's runtimes all spawn through a [`Spawner`], which registers for the exit before
//! the fork and hands back a [`Spawned`] child that reports one [`Exit`].
//!
//! Two spawners exist: [`Monitor`], fed by the process's single reaper (a shim daemon), and
//! [`DirectSpawner`], which waits with std's `Child` (programs and tests without a reaper).

#![warn(missing_docs)]

mod direct;
mod exit;
mod monitor;

use std::fmt::Debug;
use std::io;
use std::process::Command;
use std::time::Duration;

pub use nix::sys::signal::Signal;

pub use crate::direct::DirectSpawner;
pub use crate::exit::Exit;
pub use crate::monitor::{ExitWaiter, Monitor, SpawnError};

/// A spawned child as its spawner tracks it: its pid, and its exit once reaped.
pub trait Spawned: Send + Debug {
    /// The child's pid.
    fn pid(&self) -> i32;

    /// Blocks until the child has exited and been reaped.
    ///
    /// # Errors
    /// Fails only when no exit can ever arrive (the reaper is gone, or `wait` itself failed).
    fn wait(&mut self) -> io::Result<Exit>;

    /// Waits at most `timeout`; `Ok(None)` while the child runs.
    ///
    /// # Errors
    /// As [`Spawned::wait`].
    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<Exit>>;

    /// Sends `signal`, unless the child has been reaped: its pid may belong to another
    /// process by then, so a reaped child is never signalled.
    ///
    /// # Errors
    /// The `kill(2)` error.
    fn signal(&mut self, signal: Signal) -> io::Result<()>;
}

/// Starts children so that their exits cannot be lost to a process-wide reaper.
///
/// An implementation registers for the exit *before* calling [`Command::spawn`], and the
/// returned child reports the exit of exactly that process even if it exited before
/// `spawn` returned. Callers drop the `Command` (the parent's copies of the child's stdio)
/// right after `spawn` returns.
pub trait Spawner: Send + Sync + Debug {
    /// Spawns `cmd`.
    ///
    /// # Errors
    /// The program could not be started.
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn Spawned>>;
}
