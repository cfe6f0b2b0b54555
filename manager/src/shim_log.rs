//! The bundle's `log` FIFO: where a shim daemon writes its stderr and logs.
//!
//! Like containerd, the manager creates the FIFO and opens it `O_RDWR` before
//! running `start`, so the daemon's open never blocks and its writes never fail,
//! and a named thread drains it for as long as the shim lives.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::fifo;

/// Where the shim's log lines go.
#[derive(Debug, Clone)]
pub enum ShimLog {
    /// Read and dropped, so the shim never blocks on a full pipe.
    Discard,
    /// Appended to this file (created if missing).
    File(PathBuf),
    /// Copied to the manager's own stderr.
    Inherit,
}

/// Errors from setting up the log FIFO.
#[derive(Debug, thiserror::Error)]
pub enum ShimLogError {
    /// `mkfifo` of the bundle's log FIFO failed.
    #[error("failed to create shim log fifo {path}")]
    Create {
        /// The FIFO path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening the log FIFO failed.
    #[error("failed to open shim log fifo {path}")]
    Open {
        /// The FIFO path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening the destination log file failed.
    #[error("failed to open shim log file {path}")]
    OpenDestination {
        /// The destination path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the stop pipe failed.
    #[error("failed to create the log drain's stop pipe")]
    StopPipe(#[source] nix::Error),
    /// Spawning the drain thread failed.
    #[error("failed to spawn the shim log drain thread")]
    Spawn(#[source] io::Error),
}

/// A running drain of a shim's `log` FIFO; [`LogDrain::finish`] stops it and removes the FIFO.
#[derive(Debug)]
pub struct LogDrain {
    path: PathBuf,
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl LogDrain {
    /// Creates `<bundle>/log` (replacing a stale one), opens it and starts draining it to `dest`.
    pub fn start(bundle: &Path, dest: &ShimLog) -> Result<Self, ShimLogError> {
        let path = bundle.join("log");
        // A FIFO left by a crashed run is reused by nobody: start clean.
        let _ = std::fs::remove_file(&path);
        fifo::make(&path).map_err(|source| ShimLogError::Create {
            path: path.clone(),
            source,
        })?;
        let fifo =
            fifo::open_read_write_nonblocking(&path).map_err(|source| ShimLogError::Open {
                path: path.clone(),
                source,
            })?;
        let out = open_destination(dest)?;
        let (stop_rx, stop_tx) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ShimLogError::StopPipe)?;
        let thread = std::thread::Builder::new()
            .name("shim-log".into())
            .spawn(move || drain(&fifo, &stop_rx, out))
            .map_err(ShimLogError::Spawn)?;
        Ok(Self {
            path,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Copies what is left in the FIFO, stops the thread and removes the FIFO.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Closing the write end wakes the thread with POLLHUP on its read end.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for LogDrain {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn open_destination(dest: &ShimLog) -> Result<Option<Box<dyn Write + Send>>, ShimLogError> {
    Ok(match dest {
        ShimLog::Discard => None,
        ShimLog::Inherit => Some(Box::new(io::stderr())),
        ShimLog::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ShimLogError::OpenDestination {
                    path: path.clone(),
                    source,
                })?;
            Some(Box::new(file))
        }
    })
}

/// Copies the FIFO to `out` until the stop pipe closes, then copies what remains.
fn drain(fifo: &File, stop: &OwnedFd, mut out: Option<Box<dyn Write + Send>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        }
        let stopping = fds[1].revents().is_some_and(|r| !r.is_empty());
        copy_available(fifo, &mut buf, &mut out);
        if stopping {
            return;
        }
    }
}

/// Reads until the non-blocking FIFO would block.
fn copy_available(mut fifo: &File, buf: &mut [u8], out: &mut Option<Box<dyn Write + Send>>) {
    loop {
        match fifo.read(buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Some(writer) = out.as_mut() {
                    // A failing destination must not stall the shim: keep draining.
                    let _ = writer.write_all(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_fifo_to_file_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("shim.log");
        let drain = LogDrain::start(dir.path(), &ShimLog::File(dest.clone())).unwrap();
        let fifo_path = dir.path().join("log");
        let mut writer = OpenOptions::new().write(true).open(&fifo_path).unwrap();
        writer.write_all(b"level=info msg=hello\n").unwrap();
        drop(writer);
        drain.finish();
        assert!(!fifo_path.exists());
        assert_eq!(
            std::fs::read_to_string(dest).unwrap(),
            "level=info msg=hello\n"
        );
    }
}
