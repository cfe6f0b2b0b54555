//! The shim's listening socket: its name, its permissions, and stale or live predecessors.
//!
//! The name is `<dir>/<hex sha256(filepath.Join(address, namespace, group id))>` so that every
//! container of one pod hashes to the same socket (docs/protocol.md §1.5, §1.6). The socket is a path
//! socket (never abstract: CVE-2020-15257), mode 0600 inside a 0700 directory.

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use sha2::{Digest, Sha256};

/// containerd's default socket directory for shims run by root.
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// Errors from creating or probing the shim socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket directory could not be created.
    #[error("failed to create socket directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `bind(2)` failed for a reason other than a stale socket.
    #[error("failed to bind {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The socket could not be made 0600.
    #[error("failed to chmod {path}")]
    Chmod {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A stale socket file could not be removed.
    #[error("failed to remove stale socket {path}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Probing an existing socket failed unexpectedly.
    #[error("failed to probe existing socket {path}")]
    Probe {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
}

/// The outcome of claiming a socket path.
#[derive(Debug)]
pub enum Claim {
    /// This process now listens on the path.
    Listening(UnixListener),
    /// A live shim already serves the path: reuse it (pod grouping).
    AlreadyServed,
}

/// The socket path for `group_id`: `<dir>/<hex sha256(join(address, namespace, group_id))>`.
pub fn socket_path(dir: &Path, address: &str, namespace: &str, group_id: &str) -> PathBuf {
    let joined = go_clean(&format!("{address}/{namespace}/{group_id}"));
    let digest = Sha256::digest(joined.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    dir.join(hex)
}

/// The address containerd dials for a socket path.
pub fn socket_address(path: &Path) -> String {
    wren_shim_protocol::address::unix_address(path)
}

/// Listens on `path`, creating its directory (0700) and replacing a stale socket file.
///
/// When `bind` reports the path in use, a non-blocking connect tells a live shim (which is
/// then reused) from a file left behind by a killed one (which is removed and bound again).
///
/// # Errors
/// Returns an error when the directory, bind, chmod or probe fails.
pub fn claim(path: &Path) -> Result<Claim, SocketError> {
    if let Some(dir) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SocketError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    match bind(path) {
        Err(SocketError::Bind { source, .. }) if source.kind() == io::ErrorKind::AddrInUse => {}
        other => return other.map(Claim::Listening),
    }
    if is_live(path)? {
        return Ok(Claim::AlreadyServed);
    }
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => {
            return Err(SocketError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        _ => {}
    }
    bind(path).map(Claim::Listening)
}

fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(|source| {
        SocketError::Chmod {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(listener)
}

/// Whether something accepts connections on `path`, without ever blocking.
///
/// A unix `connect` completes at once: it succeeds (or says EAGAIN when the backlog is full)
/// if a listener exists, and fails with ECONNREFUSED when the file is a dead socket.
pub fn is_live(path: &Path) -> Result<bool, SocketError> {
    let probe_error = |source| SocketError::Probe {
        path: path.to_owned(),
        source,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(probe_error)?;
    let addr = UnixAddr::new(path).map_err(probe_error)?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => Ok(true),
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => Ok(false),
        Err(source) => Err(probe_error(source)),
    }
}

/// Go's `path.Clean`, which `filepath.Join` applies before containerd hashes the address.
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_name_is_sha256_of_joined_address() {
        // Known vector: `printf %s /run/containerd/containerd.sock/default/c1 | sha256sum`.
        let path = socket_path(
            Path::new(DEFAULT_SOCKET_DIR),
            "/run/containerd/containerd.sock",
            "default",
            "c1",
        );
        assert_eq!(
            path,
            Path::new(
                "/run/containerd/s/d25aa4ef11a84e954e74a5bcff06557d0b6ea8d0c00243896f29826694bbd888"
            )
        );
        // filepath.Join cleans: a trailing slash or a dot segment hashes the same.
        let unclean = "/run/containerd/./containerd.sock/";
        assert_eq!(
            path,
            socket_path(Path::new(DEFAULT_SOCKET_DIR), unclean, "default", "c1")
        );
        assert_eq!(
            socket_path(Path::new("/d"), "a", "b", "c"),
            Path::new("/d/d76a7b72669c9cec266b566bdec68efbc8d4f22d1f2689bbf0146bf0b88fdbe9")
        );
        assert_eq!(socket_address(&path), format!("unix://{}", path.display()));
    }

    #[test]
    fn go_clean_matches_go() {
        assert_eq!(go_clean("/a//b/./c/"), "/a/b/c");
        assert_eq!(go_clean("/a/b/../c"), "/a/c");
        assert_eq!(go_clean("/../a"), "/a");
        assert_eq!(go_clean("a/../../b"), "../b");
        assert_eq!(go_clean(""), ".");
    }

    #[test]
    fn claim_creates_private_dir_and_replaces_stale_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s").join("sock");
        let Claim::Listening(first) = claim(&path).unwrap() else {
            panic!("expected a listener")
        };
        let dir_mode = std::fs::metadata(tmp.path().join("s"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let sock_mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(sock_mode & 0o777, 0o600);

        // A live listener is reused, not replaced.
        assert!(matches!(claim(&path).unwrap(), Claim::AlreadyServed));

        // Closing the listener leaves a dead socket file behind, as a SIGKILLed shim does.
        drop(first);
        assert!(path.exists());
        assert!(!is_live(&path).unwrap());
        let Claim::Listening(_second) = claim(&path).unwrap() else {
            panic!("stale not replaced")
        };
        assert!(is_live(&path).unwrap());
    }
}
