//! A spawner for programs that run no `waitpid(-1)` reaper: each child is its own std
//! [`Child`](std::process::Child), waited on directly.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{Exit, Spawned, Spawner};

/// How often [`Spawned::wait_timeout`] looks again: polling keeps this free of signal
/// handlers and pidfd plumbing; a shim's [`Monitor`](crate::Monitor) is told instead.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Spawns with [`Command::spawn`] and waits with [`Child::wait`].
///
/// Never use it in a process that reaps with `waitpid(-1)`: the reaper would take the
/// status and `wait` would fail with `ECHILD`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectSpawner;

impl Spawner for DirectSpawner {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn Spawned>> {
        Ok(Box::new(DirectChild {
            child: cmd.spawn()?,
            exit: None,
        }))
    }
}

#[derive(Debug)]
struct DirectChild {
    child: Child,
    exit: Option<Exit>,
}

impl DirectChild {
    fn pid_i32(&self) -> i32 {
        // Linux pids fit in i32 (pid_max is at most 2^22).
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    fn record(&mut self, status: std::process::ExitStatus) -> io::Result<Exit> {
        let exit = Exit::from_wait_status(self.pid_i32(), status.into_raw()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "wait reported neither an exit nor a fatal signal",
            )
        })?;
        self.exit = Some(exit);
        Ok(exit)
    }

    fn try_wait(&mut self) -> io::Result<Option<Exit>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        match self.child.try_wait()? {
            Some(status) => self.record(status).map(Some),
            None => Ok(None),
        }
    }
}

impl Spawned for DirectChild {
    fn pid(&self) -> i32 {
        self.pid_i32()
    }

    fn wait(&mut self) -> io::Result<Exit> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let status = self.child.wait()?;
        self.record(status)
    }

    fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<Exit>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn signal(&mut self, signal: Signal) -> io::Result<()> {
        // Until try_wait reaps it, the pid cannot be reused, so signalling it is safe.
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.pid_i32()), signal).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn reports_exit_codes_and_signals() {
        let exit = DirectSpawner
            .spawn(&mut sh("exit 3"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(exit.status, 3);
        assert!(!exit.success());
        let exit = DirectSpawner
            .spawn(&mut sh("kill -9 $$"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(exit.status, 128 + libc::SIGKILL);
    }

    #[test]
    fn waits_with_a_bound_and_never_signals_a_reaped_child() {
        let mut child = DirectSpawner.spawn(&mut sh("sleep 30")).unwrap();
        assert_eq!(child.wait_timeout(Duration::from_millis(20)).unwrap(), None);
        child.signal(Signal::SIGTERM).unwrap();
        let exit = child.wait().unwrap();
        assert_eq!(exit.status, 128 + libc::SIGTERM);
        // Reaped: a second signal is a no-op, and the exit is remembered.
        child.signal(Signal::SIGKILL).unwrap();
        assert_eq!(child.wait_timeout(Duration::ZERO).unwrap(), Some(exit));
    }
}
