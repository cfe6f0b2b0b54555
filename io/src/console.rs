//! The pty console: a socket runc sends the pty master to, and the master itself.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};

use crate::sys;

/// Failures of the console socket and the pty master.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The private directory for the socket could not be created.
    #[error("failed to create a console socket directory in {base}")]
    CreateDir {
        /// Where the directory was to be created.
        base: PathBuf,
        /// The mkdir error.
        #[source]
        source: io::Error,
    },
    /// The socket could not be bound or made non-blocking.
    #[error("failed to listen on console socket {path}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The bind error.
        #[source]
        source: io::Error,
    },
    /// runc did not connect in time.
    #[error("runc did not connect to console socket {path} within {timeout:?}")]
    ConnectTimeout {
        /// The socket path.
        path: PathBuf,
        /// The bound that passed.
        timeout: Duration,
    },
    /// Waiting for, accepting or reading the connection failed.
    #[error("failed to receive the pty master on console socket {path}")]
    Receive {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The message carried no descriptor.
    #[error("console socket {path} received a message without a descriptor")]
    NoDescriptor {
        /// The socket path.
        path: PathBuf,
    },
    /// The received descriptor is not a terminal.
    #[error("descriptor received on console socket {path} is not a terminal")]
    NotATerminal {
        /// The socket path.
        path: PathBuf,
        /// The tcgetattr error.
        #[source]
        source: nix::errno::Errno,
    },
    /// A window size does not fit a terminal's 16-bit fields.
    #[error("window size {width}x{height} is out of range")]
    SizeOutOfRange {
        /// Requested columns.
        width: u32,
        /// Requested rows.
        height: u32,
    },
    /// TIOCSWINSZ failed.
    #[error("failed to resize the console")]
    Resize(#[source] io::Error),
}

/// Where console socket directories go unless the caller says otherwise: `$XDG_RUNTIME_DIR`
/// when set, else the system temporary directory, as containerd's runc shim chooses. The
/// temporary directory cannot always hold sockets (a 9p or virtiofs share in a VM), and
/// whoever sets `XDG_RUNTIME_DIR` says where they can go.
pub fn default_dir() -> PathBuf {
    dir_for(std::env::var_os("XDG_RUNTIME_DIR"))
}

/// [`default_dir`] for a given `XDG_RUNTIME_DIR` value; an empty one counts as unset.
fn dir_for(runtime_dir: Option<std::ffi::OsString>) -> PathBuf {
    runtime_dir
        .filter(|dir| !dir.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A listening unix socket in a private 0700 directory; its path is what
/// `runc --console-socket` takes. Dropping it removes the directory.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    // Declared last so the socket closes before its directory is removed.
    _dir: tempfile::TempDir,
}

impl ConsoleSocket {
    /// Creates the socket in a fresh directory under `base` (e.g. `$XDG_RUNTIME_DIR`).
    pub fn new_in(base: &Path) -> Result<Self, ConsoleError> {
        use std::os::unix::fs::PermissionsExt;
        // tempfile's default is 0777 less the umask: only the owner may reach the socket.
        let dir = tempfile::Builder::new()
            .prefix("wren-pty")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|source| ConsoleError::CreateDir {
                base: base.to_owned(),
                source,
            })?;
        let path = dir.path().join("pty.sock");
        let listener = UnixListener::bind(&path)
            .and_then(|listener| {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                listener.set_nonblocking(true).map(|()| listener)
            })
            .map_err(|source| ConsoleError::Listen {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            listener,
            path,
            _dir: dir,
        })
    }

    /// Creates the socket under [`default_dir`].
    pub fn new() -> Result<Self, ConsoleError> {
        Self::new_in(&default_dir())
    }

    /// The socket path to give runc.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts runc's connection and receives the pty master, waiting at most `timeout`
    /// so that a runc that failed before connecting cannot hang the caller.
    pub fn receive_master(&self, timeout: Duration) -> Result<Console, ConsoleError> {
        let receive = |source| ConsoleError::Receive {
            path: self.path.clone(),
            source,
        };
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(receive(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConsoleError::ConnectTimeout {
                    path: self.path.clone(),
                    timeout,
                });
            }
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, sys::poll_timeout(left)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => return Err(receive(errno.into())),
            }
        };
        // runc sends right after connecting; the bound covers a runc killed in between.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).map_err(receive)?;
        let master = sys::receive_fd(stream.as_fd())
            .map_err(receive)?
            .ok_or_else(|| ConsoleError::NoDescriptor {
                path: self.path.clone(),
            })?;
        nix::sys::termios::tcgetattr(&master).map_err(|source| ConsoleError::NotATerminal {
            path: self.path.clone(),
            source,
        })?;
        Ok(Console { master })
    }
}

/// The pty master of a process's terminal.
#[derive(Debug)]
pub struct Console {
    master: OwnedFd,
}

impl Console {
    /// Wraps an already received pty master.
    pub fn from_master(master: OwnedFd) -> Self {
        Self { master }
    }

    /// Sets the terminal size: `width` columns by `height` rows.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), ConsoleError> {
        let out_of_range = || ConsoleError::SizeOutOfRange { width, height };
        let cols = u16::try_from(width).map_err(|_| out_of_range())?;
        let rows = u16::try_from(height).map_err(|_| out_of_range())?;
        sys::set_window_size(self.master.as_fd(), rows, cols).map_err(ConsoleError::Resize)
    }

    /// Another descriptor for the master (for the engine's two directions).
    pub(crate) fn try_clone_master(&self) -> io::Result<OwnedFd> {
        self.master.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_wins_over_the_temp_dir() {
        assert_eq!(
            dir_for(Some("/run/user/0".into())),
            Path::new("/run/user/0")
        );
        assert_eq!(dir_for(Some("".into())), std::env::temp_dir());
        assert_eq!(dir_for(None), std::env::temp_dir());
    }

    #[test]
    fn socket_is_private_and_removed_with_its_dir() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let socket = ConsoleSocket::new_in(base.path()).unwrap();
        let dir = socket.path().parent().unwrap().to_owned();
        assert!(dir.starts_with(base.path()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = std::fs::metadata(socket.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(socket);
        assert!(!dir.exists());
    }
}
