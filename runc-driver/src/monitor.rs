//! The seam through which every runtime child is spawned and reaped.
//!
//! A shim runs one reaper thread that calls `waitpid(-1)`. Any other `wait` on a child
//! would race it, and a child that exits between `fork` and a late subscription would be
//! lost (docs/protocol.md §5.1, §8 #2 and #3). So the driver never waits on its own children:
//! the caller hands it a [`ProcessMonitor`] that registers interest in the exit *before*
//! it forks, and the driver blocks on the returned [`ExitWaiter`].

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal with this number killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// Decodes a raw status as `waitpid(2)` reports it; `None` for stop/continue reports,
    /// which only arrive with `WUNTRACED`/`WCONTINUED` and do not end a process.
    pub fn from_wait_status(raw: i32) -> Option<Self> {
        if libc::WIFEXITED(raw) {
            Some(Self::Exited(libc::WEXITSTATUS(raw)))
        } else if libc::WIFSIGNALED(raw) {
            Some(Self::Signaled(libc::WTERMSIG(raw)))
        } else {
            None
        }
    }

    /// Whether the process exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }

    /// The shell's convention, which containerd also uses for `exit_status`:
    /// the exit code, or 128 plus the signal number.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => 128 + signal,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit code {code}"),
            Self::Signaled(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// A registration for one spawned child's exit.
pub trait ExitWaiter: Send {
    /// The child's pid.
    fn pid(&self) -> u32;

    /// Blocks until the child has exited and been reaped, and returns how it ended.
    fn wait(self: Box<Self>) -> io::Result<ExitStatus>;
}

/// Spawns children so that their exits cannot be lost to a process-wide reaper.
///
/// An implementation must subscribe to exits *before* calling [`Command::spawn`], and
/// the returned waiter must yield the status of exactly that child even if the child
/// exited before `spawn` returned. The driver calls `spawn` once per runtime invocation,
/// always waits on the waiter (also on its own error paths), and drops the `Command`,
/// with the parent's copies of the child's stdio, right after `spawn` returns.
pub trait ProcessMonitor: Send + Sync + fmt::Debug {
    /// Spawns `cmd` and returns the registration for its exit.
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn ExitWaiter>>;
}

/// A monitor for programs without a `waitpid(-1)` reaper: it waits with [`Child::wait`].
///
/// Do not use it in a process that reaps with `waitpid(-1)`; the reaper would steal the
/// status and `wait` would fail with `ECHILD`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdMonitor;

impl ProcessMonitor for StdMonitor {
    fn spawn(&self, cmd: &mut Command) -> io::Result<Box<dyn ExitWaiter>> {
        Ok(Box::new(StdWaiter(cmd.spawn()?)))
    }
}

/// The child itself: std's `wait` is the registration when nothing else reaps.
#[derive(Debug)]
struct StdWaiter(Child);

impl ExitWaiter for StdWaiter {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn wait(mut self: Box<Self>) -> io::Result<ExitStatus> {
        let status = self.0.wait()?;
        ExitStatus::from_wait_status(status.into_raw()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "wait reported neither an exit nor a fatal signal",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_monitor_reports_exit_codes_and_signals() {
        let mut exit3 = Command::new("/bin/sh");
        exit3.args(["-c", "exit 3"]);
        let status = StdMonitor.spawn(&mut exit3).unwrap().wait().unwrap();
        assert_eq!(status, ExitStatus::Exited(3));
        assert_eq!(status.code(), 3);
        assert!(!status.success());

        let mut killed = Command::new("/bin/sh");
        killed.args(["-c", "kill -9 $$"]);
        let status = StdMonitor.spawn(&mut killed).unwrap().wait().unwrap();
        assert_eq!(status, ExitStatus::Signaled(libc::SIGKILL));
        assert_eq!(status.code(), 137);
    }

    #[test]
    fn wait_status_decoding_matches_the_kernel_layout() {
        // exit(2) stores the code in bits 8..16; a fatal signal in bits 0..7.
        assert_eq!(
            ExitStatus::from_wait_status(0x0100),
            Some(ExitStatus::Exited(1))
        );
        assert_eq!(
            ExitStatus::from_wait_status(15),
            Some(ExitStatus::Signaled(15))
        );
        // 0x137f: stopped by SIGSTOP (19), not an end of life.
        assert_eq!(ExitStatus::from_wait_status(0x137f), None);
    }
}
