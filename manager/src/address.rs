//! What `<shim> start` prints, and which socket and service that names.
//!
//! Shims answer in one of three forms (docs/protocol.md §1.3): a plain address
//! (`unix:///run/containerd/s/<hash>`), JSON `{"version":2|3,"address":..,"protocol":"ttrpc"}`
//! (containerd 1.7 to 2.2), or a binary `BootstrapResult` protobuf (2.3+). The address inside
//! is read by [`wren_shim_protocol::address`], which refuses abstract sockets.

use std::path::PathBuf;

use protobuf::Message;
use serde::Deserialize;
use wren_shim_protocol::address::{self as socket, AddressError as SocketAddressError};
use wren_shim_protocol::bootstrap::BootstrapResult;

/// The task service a shim serves; v2 and v3 carry byte-identical messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskApi {
    /// `containerd.task.v2.Task`, implied by a plain address or `"version": 2`.
    V2,
    /// `containerd.task.v3.Task`, announced with `"version": 3`.
    V3,
}

impl TaskApi {
    /// The ttrpc service name.
    pub fn service(self) -> &'static str {
        match self {
            Self::V2 => "containerd.task.v2.Task",
            Self::V3 => "containerd.task.v3.Task",
        }
    }
}

/// A dialable shim address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimAddress {
    /// The filesystem path of the shim's unix socket.
    pub socket: PathBuf,
    /// The task service to call on it.
    pub api: TaskApi,
}

impl ShimAddress {
    /// The address in the form ttrpc's client dials.
    pub fn ttrpc_uri(&self) -> String {
        socket::unix_address(&self.socket)
    }
}

/// Why a `start` answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The shim printed nothing.
    #[error("shim printed no address")]
    Empty,
    /// The output looked like JSON but was not the expected object.
    #[error("shim printed malformed JSON {text:?}")]
    Json {
        /// What the shim printed.
        text: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The output was neither text nor a `BootstrapResult`.
    #[error("shim printed {len} bytes that are not a BootstrapResult")]
    Proto {
        /// Output length.
        len: usize,
        /// The cause.
        #[source]
        source: protobuf::Error,
    },
    /// A protocol version the manager does not speak.
    #[error("shim announced unsupported version {version}")]
    Version {
        /// The announced version.
        version: i64,
    },
    /// A transport other than ttrpc.
    #[error("shim announced unsupported protocol {protocol:?}")]
    Protocol {
        /// The announced protocol.
        protocol: String,
    },
    /// The address is not a `unix://` path (an abstract socket, another scheme).
    #[error(transparent)]
    Socket(#[from] SocketAddressError),
}

#[derive(Deserialize)]
struct JsonBootstrap {
    version: i64,
    address: String,
    #[serde(default)]
    protocol: String,
}

/// Parses the stdout of `<shim> start`.
pub fn parse_start_output(out: &[u8]) -> Result<ShimAddress, AddressError> {
    match std::str::from_utf8(out) {
        Ok(text) if is_text(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Err(AddressError::Empty);
            }
            if text.starts_with('{') {
                let parsed: JsonBootstrap =
                    serde_json::from_str(text).map_err(|source| AddressError::Json {
                        text: text.to_owned(),
                        source,
                    })?;
                return resolve(parsed.version, &parsed.address, &parsed.protocol);
            }
            resolve(2, text, "ttrpc")
        }
        _ => {
            let result =
                BootstrapResult::parse_from_bytes(out).map_err(|source| AddressError::Proto {
                    len: out.len(),
                    source,
                })?;
            resolve(i64::from(result.version), &result.address, &result.protocol)
        }
    }
}

/// Printable text (plus whitespace); a `BootstrapResult` starts with a tag byte below 0x20.
fn is_text(text: &str) -> bool {
    text.chars().all(|c| !c.is_control() || c.is_whitespace())
}

fn resolve(version: i64, address: &str, protocol: &str) -> Result<ShimAddress, AddressError> {
    let api = match version {
        2 => TaskApi::V2,
        3 => TaskApi::V3,
        _ => return Err(AddressError::Version { version }),
    };
    if !protocol.is_empty() && protocol != "ttrpc" {
        return Err(AddressError::Protocol {
            protocol: protocol.to_owned(),
        });
    }
    Ok(ShimAddress {
        socket: socket::socket_path(address)?,
        api,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_address_means_v2() {
        let got = parse_start_output(b"unix:///run/containerd/s/abc\n").unwrap();
        assert_eq!(got.socket, PathBuf::from("/run/containerd/s/abc"));
        assert_eq!(got.api, TaskApi::V2);
        assert_eq!(got.ttrpc_uri(), "unix:///run/containerd/s/abc");
    }

    #[test]
    fn json_version_three_selects_v3() {
        let out = br#"{"version":3,"address":"unix:///run/s/x","protocol":"ttrpc"}"#;
        let got = parse_start_output(out).unwrap();
        assert_eq!(got.api, TaskApi::V3);
        assert_eq!(got.api.service(), "containerd.task.v3.Task");
    }

    #[test]
    fn json_grpc_and_version_four_are_refused() {
        let grpc = br#"{"version":2,"address":"unix:///s","protocol":"grpc"}"#;
        assert!(matches!(
            parse_start_output(grpc),
            Err(AddressError::Protocol { .. })
        ));
        let v4 = br#"{"version":4,"address":"unix:///s","protocol":"ttrpc"}"#;
        assert!(matches!(
            parse_start_output(v4),
            Err(AddressError::Version { version: 4 })
        ));
    }

    #[test]
    fn bootstrap_result_proto_is_decoded() {
        let mut result = BootstrapResult::new();
        result.version = 3;
        result.address = "unix:///run/s/proto".into();
        result.protocol = "ttrpc".into();
        let got = parse_start_output(&result.write_to_bytes().unwrap()).unwrap();
        assert_eq!(got.socket, PathBuf::from("/run/s/proto"));
        assert_eq!(got.api, TaskApi::V3);
    }

    #[test]
    fn abstract_and_foreign_schemes_are_refused() {
        for bad in [
            "unix://@/containerd-shim/x.sock",
            "/containerd-shim/x.sock",
            "@x",
        ] {
            assert!(
                matches!(
                    parse_start_output(bad.as_bytes()),
                    Err(AddressError::Socket(SocketAddressError::Abstract { .. }))
                ),
                "{bad}"
            );
        }
        let vsock = parse_start_output(b"vsock://3:1024");
        assert!(matches!(
            vsock,
            Err(AddressError::Socket(SocketAddressError::Scheme { .. }))
        ));
        assert!(matches!(
            parse_start_output(b"  \n"),
            Err(AddressError::Empty)
        ));
    }
}
