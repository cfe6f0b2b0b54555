//! What `start` learns before it creates anything: its stdin and the bundle's grouping id.
//!
//! containerd 2.3+ writes a `BootstrapParams` protobuf on stdin; 1.6 to 2.2 write the runtime
//! options as a bare `Any`, or nothing (docs/protocol.md §1.3, §1.4). Both are protobuf and either
//! may parse as the other, so `BootstrapParams` is only believed when its instance id and
//! namespace match the flags, as containerd's own shims check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use protobuf::well_known_types::any::Any;
use protobuf::Message;
use wren_shim_protocol::bootstrap::{BootstrapParams, LogLevel};

/// Annotations naming the group whose containers share one shim, in priority order.
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Errors from decoding `start`'s inputs.
#[derive(Debug, thiserror::Error)]
pub enum StartInputError {
    /// stdin is neither a matching `BootstrapParams` nor an `Any`.
    #[error("stdin ({len} bytes) is neither BootstrapParams nor a protobuf Any")]
    Undecodable {
        /// How many bytes were read.
        len: usize,
        /// Why the `Any` decoding failed.
        #[source]
        source: protobuf::Error,
    },
    /// The bundle's `config.json` could not be read.
    #[error("failed to read {path}")]
    ReadSpec {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle's `config.json` is not JSON.
    #[error("failed to parse {path}")]
    ParseSpec {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The decoded stdin of `start`.
#[derive(Debug, Clone, PartialEq)]
pub enum StartInput {
    /// containerd 2.3+: the bootstrap parameters, identity already checked.
    Bootstrap(Box<BootstrapParams>),
    /// containerd up to 2.2: the runtime options.
    Legacy(Any),
    /// No stdin: no runtime options.
    Empty,
}

impl StartInput {
    /// Decodes `bytes`, believing `BootstrapParams` only if it names `namespace`/`id`.
    ///
    /// # Errors
    /// Returns [`StartInputError::Undecodable`] when the bytes are not protobuf at all.
    pub fn decode(bytes: &[u8], namespace: &str, id: &str) -> Result<Self, StartInputError> {
        if bytes.is_empty() {
            return Ok(StartInput::Empty);
        }
        if let Ok(params) = BootstrapParams::parse_from_bytes(bytes) {
            if params.instance_id == id && params.namespace == namespace {
                return Ok(StartInput::Bootstrap(Box::new(params)));
            }
        }
        Any::parse_from_bytes(bytes)
            .map(StartInput::Legacy)
            .map_err(|source| StartInputError::Undecodable {
                len: bytes.len(),
                source,
            })
    }

    /// The runtime options: the legacy `Any`, or the first bootstrap extension.
    pub fn runtime_options(&self) -> Option<&Any> {
        match self {
            StartInput::Bootstrap(params) => params
                .extensions
                .iter()
                .find_map(|extension| extension.value.as_ref()),
            StartInput::Legacy(any) => Some(any),
            StartInput::Empty => None,
        }
    }

    /// The socket directory containerd asked for (2.3+ only).
    pub fn socket_dir(&self) -> Option<&Path> {
        match self {
            StartInput::Bootstrap(params) => params
                .socket_dir
                .as_deref()
                .filter(|dir| !dir.is_empty())
                .map(Path::new),
            StartInput::Legacy(_) | StartInput::Empty => None,
        }
    }

    /// containerd's ttrpc address, when the bootstrap parameters carry it.
    pub fn ttrpc_address(&self) -> Option<&str> {
        match self {
            StartInput::Bootstrap(params) => {
                Some(params.containerd_ttrpc_address.as_str()).filter(|address| !address.is_empty())
            }
            StartInput::Legacy(_) | StartInput::Empty => None,
        }
    }

    /// Whether containerd runs at debug level or finer (2.3+ only; older ones pass `-debug`).
    pub fn wants_debug(&self) -> bool {
        match self {
            StartInput::Bootstrap(params) => {
                let level = params.log_level.value();
                level <= LogLevel::LOG_LEVEL_DEBUG as i32
            }
            StartInput::Legacy(_) | StartInput::Empty => false,
        }
    }
}

/// The id whose hash names the socket: the first group annotation present, else `id`.
pub fn grouping_id(annotations: &Annotations, id: &str) -> String {
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(*key).filter(|group| !group.is_empty()))
        .map_or(id, String::as_str)
        .to_owned()
}

/// A spec's `annotations`.
pub type Annotations = HashMap<String, String>;

/// The one part of `config.json` that `start` reads. Every other field is skipped unbuilt:
/// `start` is on the path of every container's start-up.
#[derive(serde::Deserialize)]
struct SpecAnnotations {
    annotations: Option<Annotations>,
}

/// Reads the annotations of `<bundle>/config.json`.
///
/// # Errors
/// Returns an error if the file is missing, is not JSON, or has annotations that are not
/// all strings.
pub fn read_annotations(bundle: &Path) -> Result<Annotations, StartInputError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| StartInputError::ReadSpec {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice::<SpecAnnotations>(&text)
        .map(|spec| spec.annotations.unwrap_or_default())
        .map_err(|source| StartInputError::ParseSpec { path, source })
}

#[cfg(test)]
mod tests {
    use protobuf::MessageField;
    use wren_shim_protocol::bootstrap::Extension;
    use wren_shim_protocol::runc::Options;

    use super::*;

    fn runc_options() -> Any {
        let mut options = Options::new();
        options.binary_name = "runc".into();
        options.shim_cgroup = "/wren-test".into();
        wren_shim_protocol::any::pack(&options).unwrap()
    }

    fn bootstrap(namespace: &str, id: &str) -> BootstrapParams {
        let mut params = BootstrapParams::new();
        params.instance_id = id.into();
        params.namespace = namespace.into();
        params.containerd_ttrpc_address = "/run/containerd/containerd.sock.ttrpc".into();
        params.socket_dir = Some("/run/wren/s".into());
        params.log_level = LogLevel::LOG_LEVEL_DEBUG.into();
        let mut extension = Extension::new();
        extension.value = MessageField::some(runc_options());
        params.extensions.push(extension);
        params
    }

    #[test]
    fn empty_stdin_means_no_options() {
        let input = StartInput::decode(&[], "ns", "c1").unwrap();
        assert_eq!(input, StartInput::Empty);
        assert!(input.runtime_options().is_none());
    }

    #[test]
    fn bootstrap_params_with_matching_identity() {
        let bytes = bootstrap("ns", "c1").write_to_bytes().unwrap();
        let input = StartInput::decode(&bytes, "ns", "c1").unwrap();
        assert!(matches!(input, StartInput::Bootstrap(_)));
        assert_eq!(input.runtime_options(), Some(&runc_options()));
        assert_eq!(input.socket_dir(), Some(Path::new("/run/wren/s")));
        assert_eq!(
            input.ttrpc_address(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        assert!(input.wants_debug());
    }

    #[test]
    fn bootstrap_params_for_another_task_are_not_believed() {
        // Bytes that parse as BootstrapParams for a different identity fall back to Any.
        let bytes = bootstrap("ns", "other").write_to_bytes().unwrap();
        let input = StartInput::decode(&bytes, "ns", "c1").unwrap();
        assert!(matches!(input, StartInput::Legacy(_)));
    }

    #[test]
    fn legacy_any_is_the_runtime_options() {
        let bytes = runc_options().write_to_bytes().unwrap();
        let input = StartInput::decode(&bytes, "ns", "c1").unwrap();
        assert_eq!(input, StartInput::Legacy(runc_options()));
        let options: Options =
            wren_shim_protocol::any::unpack(input.runtime_options().unwrap()).unwrap();
        assert_eq!(options.shim_cgroup, "/wren-test");
        assert_eq!(input.socket_dir(), None);
        assert!(!input.wants_debug());
    }

    #[test]
    fn garbage_is_an_error() {
        // A length-delimited field 1 claiming more bytes than follow.
        let error = StartInput::decode(&[0x0a, 0x7f, 0x01], "ns", "c1").unwrap_err();
        assert!(matches!(error, StartInputError::Undecodable { len: 3, .. }));
    }

    fn annotations(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn grouping_prefers_runc_group_then_sandbox_id() {
        let both = annotations(&[
            ("io.kubernetes.cri.sandbox-id", "sandbox"),
            ("io.containerd.runc.v2.group", "group"),
        ]);
        assert_eq!(grouping_id(&both, "c1"), "group");
        let sandbox = annotations(&[("io.kubernetes.cri.sandbox-id", "sb")]);
        assert_eq!(grouping_id(&sandbox, "c1"), "sb");
        let empty_group = annotations(&[("io.containerd.runc.v2.group", "")]);
        assert_eq!(grouping_id(&empty_group, "c1"), "c1");
        assert_eq!(grouping_id(&Annotations::new(), "c1"), "c1");
    }

    fn bundle_with(spec: &str) -> tempfile::TempDir {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(bundle.path().join("config.json"), spec).unwrap();
        bundle
    }

    #[test]
    fn reads_only_the_annotations_of_a_spec() {
        let bundle = bundle_with(
            r#"{"ociVersion":"1.1.0","process":{"args":["sh"],"env":[]},
                "annotations":{"io.kubernetes.cri.sandbox-id":"sb","other":"x"}}"#,
        );
        let read = read_annotations(bundle.path()).unwrap();
        assert_eq!(
            read,
            annotations(&[("io.kubernetes.cri.sandbox-id", "sb"), ("other", "x")])
        );
    }

    #[test]
    fn a_spec_without_annotations_has_none() {
        for spec in [r#"{"ociVersion":"1.1.0"}"#, r#"{"annotations":null}"#] {
            let bundle = bundle_with(spec);
            assert_eq!(read_annotations(bundle.path()).unwrap(), Annotations::new());
        }
    }

    #[test]
    fn a_spec_that_is_not_json_is_an_error() {
        let bundle = bundle_with("{\"annotations\": ");
        let error = read_annotations(bundle.path()).unwrap_err();
        assert!(matches!(error, StartInputError::ParseSpec { .. }));
        let missing = tempfile::tempdir().unwrap();
        let error = read_annotations(missing.path()).unwrap_err();
        assert!(matches!(error, StartInputError::ReadSpec { .. }));
    }
}
