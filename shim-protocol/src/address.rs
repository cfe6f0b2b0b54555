//! Shim socket addresses: `unix://` and a path, the one form shims, the manager and the
//! benchmarks exchange (docs/protocol.md §1.5).
//!
//! containerd's dialer reads an address without `unix://` as an abstract socket, which any
//! container sharing the host's network namespace can reach (CVE-2020-15257): those, and
//! `unix://@…`, are refused, as are the other schemes (`vsock://`, `hvsock://`).

use std::path::{Path, PathBuf};

const UNIX: &str = "unix://";

/// Why an address names no socket file.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// An abstract socket.
    #[error("refusing abstract socket address {address:?}")]
    Abstract {
        /// The address.
        address: String,
    },
    /// A scheme other than `unix://`.
    #[error("unsupported address scheme in {address:?}")]
    Scheme {
        /// The address.
        address: String,
    },
}

/// The socket file a `unix://` address names (surrounding white space ignored, so a line
/// of `start` output or a bundle's `address` file can be given as read).
///
/// # Errors
/// [`AddressError`] for an abstract socket or another scheme.
pub fn socket_path(address: &str) -> Result<PathBuf, AddressError> {
    let address = address.trim();
    match address.strip_prefix(UNIX) {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        None if address.contains("://") => Err(AddressError::Scheme {
            address: address.to_owned(),
        }),
        _ => Err(AddressError::Abstract {
            address: address.to_owned(),
        }),
    }
}

/// The address of the socket file at `path`, as shims print it and ttrpc dials it.
pub fn unix_address(path: &Path) -> String {
    format!("{UNIX}{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_path_round_trips() {
        let path = socket_path(" unix:///run/containerd/s/ab\n").unwrap();
        assert_eq!(path, Path::new("/run/containerd/s/ab"));
        assert_eq!(unix_address(&path), "unix:///run/containerd/s/ab");
    }

    #[test]
    fn abstract_and_foreign_addresses_are_refused() {
        for address in ["unix://@/containerd-shim/x.sock", "/run/x.sock", "@x", ""] {
            let refused = socket_path(address);
            assert!(
                matches!(refused, Err(AddressError::Abstract { .. })),
                "{address}: {refused:?}"
            );
        }
        assert!(matches!(
            socket_path("vsock://3:1024"),
            Err(AddressError::Scheme { .. })
        ));
    }
}
