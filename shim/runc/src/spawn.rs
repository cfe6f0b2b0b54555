//! The framework's [`Monitor`] behind the spawning seams of the runc driver and the io crate,
//! so every child (runc, logging binaries) is subscribed to before it forks and reaped only by
//! the shim's one reaper (docs/protocol.md §5.1).

use std::io;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wren_io::{SpawnedChild, Spawner, StopSignal};
use wren_runc_driver::{ExitStatus, ProcessMonitor};
use wren_shim::{ExitWaiter, Monitor};

/// Spawns through the framework's monitor; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReapedSpawner {
    monitor: Arc<Monitor>,
}

impl ReapedSpawner {
    pub fn new(monitor: Arc<Monitor>) -> Self {
        Self { monitor }
    }

    fn spawn_child(&self, cmd: &mut Command) -> io::Result<ExitWaiter> {
        // The child handle is dropped at once: dropping a `Child` neither waits nor kills,
        // and the waiter is the only way to learn of its exit.
        let (_child, waiter) = self.monitor.spawn(cmd).map_err(io::Error::other)?;
        Ok(waiter)
    }
}

/// The reaper reports `128 + signal` for signal deaths, as containerd does; only the
/// numeric status matters to the driver (success, and the message it carries).
#[derive(Debug)]
struct RuncWaiter(ExitWaiter);

impl wren_runc_driver::ExitWaiter for RuncWaiter {
    fn pid(&self) -> u32 {
        u32::try_from(self.0.pid()).unwrap_or_default()
    }

    fn wait(self: Box<Self>) -> io::Result<ExitStatus> {
        let exit = self
            .0
            .wait()
            .ok_or_else(|| io::Error::other("the reaper has stopped"))?;
        Ok(ExitStatus::Exited(exit.status))
    }
}

impl ProcessMonitor for ReapedSpawner {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn wren_runc_driver::ExitWaiter>> {
        Ok(Box::new(RuncWaiter(self.spawn_child(cmd)?)))
    }
}

/// A logging binary, tracked by its waiter so it is never signalled after it was reaped.
#[derive(Debug)]
struct ReapedChild {
    waiter: ExitWaiter,
    exited: bool,
}

impl SpawnedChild for ReapedChild {
    fn pid(&self) -> u32 {
        u32::try_from(self.waiter.pid()).unwrap_or_default()
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<bool> {
        if !self.exited {
            self.exited = self.waiter.wait_timeout(timeout).is_some();
        }
        Ok(self.exited)
    }

    fn signal(&mut self, signal: StopSignal) -> io::Result<()> {
        if self.exited || self.waiter.try_wait().is_some() {
            self.exited = true;
            return Ok(());
        }
        let signal = match signal {
            StopSignal::Terminate => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        kill(Pid::from_raw(self.waiter.pid()), signal).map_err(io::Error::from)
    }
}

impl Spawner for ReapedSpawner {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn SpawnedChild>> {
        Ok(Box::new(ReapedChild {
            waiter: self.spawn_child(cmd)?,
            exited: false,
        }))
    }
}
