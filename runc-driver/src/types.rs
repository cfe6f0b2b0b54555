//! What the runtime reports as JSON: `state` and `features`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A container's status as `runc state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, its init blocked before the user process.
    Created,
    /// The user process runs.
    Running,
    /// Being frozen.
    Pausing,
    /// Frozen.
    Paused,
    /// The init has exited.
    Stopped,
    /// A status this crate does not know (a newer runtime's).
    #[serde(other)]
    Unknown,
}

/// `runc state <id>` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The OCI runtime spec version of the container.
    #[serde(default)]
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// The init pid (0 once stopped).
    #[serde(default)]
    pub pid: u32,
    /// The lifecycle status.
    pub status: Status,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
    /// The root filesystem.
    #[serde(default)]
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 as the runtime wrote it.
    #[serde(default)]
    pub created: String,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Fields this crate does not model (`owner`, runtime-specific ones).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `runc features` output (runtime-spec `features.md`).
///
/// The typed fields cover what a shim inspects; [`Features::raw`] keeps the runtime's
/// exact bytes so a shim can forward them (containerd's `-info`) without loss.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// The oldest runtime-spec version supported.
    pub oci_version_min: Option<String>,
    /// The newest runtime-spec version supported.
    pub oci_version_max: Option<String>,
    /// Supported hook names.
    pub hooks: Option<Vec<String>>,
    /// Supported mount options.
    pub mount_options: Option<Vec<String>>,
    /// Linux-specific features.
    pub linux: Option<LinuxFeatures>,
    /// Runtime annotations (version, commit, checkpoint support).
    pub annotations: Option<BTreeMap<String, String>>,
    /// Top-level fields this crate does not model.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
    /// The output exactly as the runtime printed it.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// The `linux` part of [`Features`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LinuxFeatures {
    /// Namespace types the runtime can create or join.
    pub namespaces: Option<Vec<String>>,
    /// Capability names the runtime knows.
    pub capabilities: Option<Vec<String>>,
    /// Cgroup drivers available.
    pub cgroup: Option<CgroupFeatures>,
    /// Seccomp, AppArmor, SELinux, mount extensions and whatever newer runtimes add.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The `linux.cgroup` part of [`Features`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupFeatures {
    /// cgroup v1 support.
    pub v1: Option<bool>,
    /// cgroup v2 support.
    pub v2: Option<bool>,
    /// systemd driver support.
    pub systemd: Option<bool>,
    /// systemd user-session driver support.
    pub systemd_user: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keeps_unknown_fields_and_statuses() {
        let json = r#"{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"thawing",
            "bundle":"/b","rootfs":"/b/rootfs","created":"2026-01-01T00:00:00Z",
            "owner":"","systemd-scope":"x.scope"}"#;
        let state: State = serde_json::from_str(json).unwrap();
        assert_eq!(state.status, Status::Unknown);
        assert_eq!(state.pid, 42);
        assert_eq!(state.other["systemd-scope"], "x.scope");
        assert!(state.annotations.is_empty());
    }

    #[test]
    fn features_keep_what_is_not_modelled() {
        let json = r#"{"ociVersionMin":"1.0.0","hooks":["prestart"],
            "linux":{"namespaces":["pid"],"cgroup":{"v1":true,"systemdUser":false},
                     "seccomp":{"enabled":true}},
            "potentiallyUnsafeConfigAnnotations":["run.oci."]}"#;
        let features: Features = serde_json::from_str(json).unwrap();
        let linux = features.linux.unwrap();
        assert_eq!(linux.cgroup.unwrap().systemd_user, Some(false));
        assert_eq!(linux.other["seccomp"]["enabled"], true);
        assert!(features
            .other
            .contains_key("potentiallyUnsafeConfigAnnotations"));
    }
}
