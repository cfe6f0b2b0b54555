//! `binary://` and `binary-v2://` logging binaries.
//!
//! A shim runs a `waitpid(-1)` reaper, so this crate never waits on a child itself: every
//! logger is started through the caller's [`Spawner`] (`wren-process`), which registers for
//! the exit before forking and answers "has it exited?" from the reaper's records.

use std::fmt::Debug;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags};

use wren_process::{Signal, Spawned, Spawner};

use crate::sys;
use crate::uri::{LoggerCommand, Readiness};

/// How long to wait for a logger to die after SIGKILL; SIGKILL cannot be ignored, so this
/// only bounds a pathological case (a process stuck in uninterruptible sleep).
const KILL_WAIT: Duration = Duration::from_secs(2);
/// The logger's descriptors: stdout reader, stderr reader, ready writer.
const LOGGER_FDS: [i32; 3] = [3, 4, 5];

/// Failures starting a logging binary.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// A pipe for the logger could not be created.
    #[error("failed to create the logger's pipes")]
    Pipe(#[source] Errno),
    /// The binary could not be spawned.
    #[error("failed to spawn logging binary {path}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The spawn error.
        #[source]
        source: io::Error,
    },
    /// Reading the ready pipe failed.
    #[error("failed to read the ready pipe of logging binary {path}")]
    Ready {
        /// The binary.
        path: PathBuf,
        /// The error.
        #[source]
        source: Errno,
    },
    /// A `binary-v2://` logger closed the ready pipe without writing to it.
    #[error("logging binary {path} closed its ready pipe without signalling ready")]
    NotReady {
        /// The binary.
        path: PathBuf,
    },
    /// The logger did not become ready in time.
    #[error("logging binary {path} was not ready within {timeout:?}")]
    ReadyTimeout {
        /// The binary.
        path: PathBuf,
        /// The bound that passed.
        timeout: Duration,
    },
}

/// Who the logger is logging for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggerEnv<'a> {
    pub(crate) container_id: &'a str,
    pub(crate) namespace: &'a str,
}

/// A running, ready logger and the write ends of its stdout and stderr pipes.
#[derive(Debug)]
pub(crate) struct Logger {
    pub(crate) child: Box<dyn Spawned>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// Starts `command` with fd 3/4/5 = stdout reader, stderr reader, ready writer, and waits
/// for it to say it is ready.
pub(crate) fn start(
    command: &LoggerCommand,
    env: LoggerEnv<'_>,
    spawner: &dyn Spawner,
    ready_timeout: Duration,
) -> Result<Logger, LoggerError> {
    // Returns (the logger's read end, the shim's write end). The logger-side ends go
    // above fd 5 so that moving them onto 3, 4, 5 never overwrites one another.
    let pipe = || -> Result<(OwnedFd, OwnedFd), LoggerError> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LoggerError::Pipe)?;
        Ok((
            sys::dup_at_least(read.as_fd(), 6).map_err(LoggerError::Pipe)?,
            write,
        ))
    };
    let ((stdout_read, stdout_write), (stderr_read, stderr_write)) = (pipe()?, pipe()?);
    let (ready_read, ready_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LoggerError::Pipe)?;
    // Not shadowed: the original must close now, or the ready pipe never sees EOF.
    let ready_write_high = sys::dup_at_least(ready_write.as_fd(), 6).map_err(LoggerError::Pipe)?;
    drop(ready_write);

    let mut cmd = Command::new(&command.path);
    // The same environment the reference shim gives loggers: only these two variables.
    cmd.args(&command.args)
        .env_clear()
        .env("CONTAINER_ID", env.container_id)
        .env("CONTAINER_NAMESPACE", env.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let sources = [
        stdout_read.as_raw_fd(),
        stderr_read.as_raw_fd(),
        ready_write_high.as_raw_fd(),
    ];
    let spawn_error = |source| LoggerError::Spawn {
        path: command.path.clone(),
        source,
    };
    // SAFETY: the three sources are owned by locals that outlive the spawn below.
    unsafe { sys::map_fds_in_child(&mut cmd, [0, 1, 2].map(|i| (sources[i], LOGGER_FDS[i]))) }
        .map_err(spawn_error)?;
    let mut child = spawner.spawn(&mut cmd).map_err(spawn_error)?;
    // The child has its copies; ours would hide the logger's EOF and its ready close.
    drop((stdout_read, stderr_read, ready_write_high));

    if let Err(e) = wait_ready(&ready_read, command, ready_timeout) {
        stop(child.as_mut(), Duration::ZERO);
        return Err(e);
    }
    Ok(Logger {
        child,
        stdout: stdout_write,
        stderr: stderr_write,
    })
}

fn wait_ready(
    ready: &OwnedFd,
    command: &LoggerCommand,
    timeout: Duration,
) -> Result<(), LoggerError> {
    let failed = |source| LoggerError::Ready {
        path: command.path.clone(),
        source,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, sys::poll_timeout(left)) {
            Ok(0) if left.is_zero() => {
                return Err(LoggerError::ReadyTimeout {
                    path: command.path.clone(),
                    timeout,
                })
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(failed(errno)),
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let mut byte = [0u8; 1];
        return match (
            nix::unistd::read(ready.as_raw_fd(), &mut byte),
            command.readiness,
        ) {
            (Ok(1), _) | (Ok(_), Readiness::ByteOrEof) => Ok(()),
            (Ok(_), Readiness::Byte) => Err(LoggerError::NotReady {
                path: command.path.clone(),
            }),
            (Err(errno), _) => Err(failed(errno)),
        };
    }
}

/// Stops a logger whose pipes are closed: it normally exits by itself once it has read
/// everything, so it first gets `grace` to do that (nothing is lost), then SIGTERM and
/// another `grace`, then SIGKILL.
pub(crate) fn stop(child: &mut dyn Spawned, grace: Duration) {
    let pid = child.pid();
    for (signal, wait) in [
        (None, grace),
        (Some(Signal::SIGTERM), grace),
        (Some(Signal::SIGKILL), KILL_WAIT),
    ] {
        if let Some(signal) = signal {
            if let Err(e) = child.signal(signal) {
                log::warn!("io: failed to send {signal:?} to logger {pid}: {e}");
            }
        }
        match child.wait_timeout(wait) {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                log::warn!("io: failed to wait for logger {pid}: {e}");
                return;
            }
        }
    }
    log::warn!("io: logger {pid} survived SIGKILL for {KILL_WAIT:?}");
}
