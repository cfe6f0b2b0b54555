//! OCI bundles: reading the one a caller gives, and writing a default one for a
//! root filesystem directory and a command line.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::stdio::Terminal;

/// Errors from reading or writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Creating the bundle directory failed.
    #[error("failed to create bundle directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing `config.json` failed.
    #[error("failed to write {path}")]
    WriteSpec {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading `config.json` failed.
    #[error("failed to read {path}")]
    ReadSpec {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `config.json` is not valid JSON.
    #[error("{path} is not a valid OCI spec")]
    ParseSpec {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The spec lacks a `process` object.
    #[error("{path} has no process section")]
    NoProcess {
        /// The file.
        path: PathBuf,
    },
}

/// How the root filesystem reaches the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsMount {
    /// `root.path` in the spec points at the directory itself; the shim mounts nothing.
    Spec,
    /// The shim bind-mounts the directory on `<bundle>/rootfs` (a `Create` rootfs mount).
    Bind,
    /// The shim mounts an overlay: the directory as lower layer, upper and work dirs in the bundle.
    Overlay,
}

/// One entry of `CreateTaskRequest.rootfs`, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Filesystem type (`bind`, `overlay`).
    pub kind: String,
    /// Mount source.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// Writes `<bundle>/config.json` for `rootfs` running `args`, and returns the
/// mounts to pass in `Create` (empty for [`RootfsMount::Spec`]).
pub fn write_default(
    bundle: &Path,
    rootfs: &Path,
    args: &[String],
    terminal: Terminal,
    mount: &RootfsMount,
) -> Result<Vec<MountSpec>, BundleError> {
    let mkdir = |path: PathBuf| {
        std::fs::create_dir_all(&path).map_err(|source| BundleError::CreateDir { path, source })
    };
    // containerd always makes an empty rootfs/ for the shim to mount on.
    mkdir(bundle.join("rootfs"))?;
    let (root_path, mounts) = match mount {
        RootfsMount::Spec => (rootfs.display().to_string(), Vec::new()),
        RootfsMount::Bind => (
            "rootfs".to_owned(),
            vec![MountSpec {
                kind: "bind".into(),
                source: rootfs.display().to_string(),
                options: vec!["rbind".into(), "rw".into()],
            }],
        ),
        RootfsMount::Overlay => {
            let upper = bundle.join("overlay/upper");
            let work = bundle.join("overlay/work");
            mkdir(upper.clone())?;
            mkdir(work.clone())?;
            let options = vec![
                format!("lowerdir={}", rootfs.display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ];
            (
                "rootfs".to_owned(),
                vec![MountSpec {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }],
            )
        }
    };
    let spec = default_spec(&root_path, args, terminal);
    let path = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&spec).map_err(|source| BundleError::ParseSpec {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(|source| BundleError::WriteSpec { path, source })?;
    Ok(mounts)
}

/// The `process` object of `<bundle>/config.json`, the base of an exec's process spec.
pub fn read_process(bundle: &Path) -> Result<Value, BundleError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| BundleError::ReadSpec {
        path: path.clone(),
        source,
    })?;
    let mut spec: Value =
        serde_json::from_slice(&text).map_err(|source| BundleError::ParseSpec {
            path: path.clone(),
            source,
        })?;
    match spec.get_mut("process").map(Value::take) {
        Some(process @ Value::Object(_)) => Ok(process),
        _ => Err(BundleError::NoProcess { path }),
    }
}

/// Whether the bundle's process asks for a terminal.
pub fn wants_terminal(bundle: &Path) -> Result<Terminal, BundleError> {
    let process = read_process(bundle)?;
    Ok(
        if process.get("terminal").and_then(Value::as_bool) == Some(true) {
            Terminal::On
        } else {
            Terminal::Off
        },
    )
}

/// A spec like `runc spec` writes: pid/ipc/uts/mount namespaces, the host network,
/// the usual pseudo-filesystems, and the runc default capabilities.
fn default_spec(root_path: &str, args: &[String], terminal: Terminal) -> Value {
    const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal.enabled(),
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": root_path, "readonly": false},
        "hostname": "wren",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_bundle_points_root_at_rootfs_and_returns_mount() {
        let dir = tempfile::tempdir().unwrap();
        let args = vec!["sh".to_owned(), "-c".to_owned(), "true".to_owned()];
        let mounts = write_default(
            dir.path(),
            Path::new("/lower"),
            &args,
            Terminal::On,
            &RootfsMount::Overlay,
        )
        .unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].kind, "overlay");
        assert!(mounts[0].options[0] == "lowerdir=/lower");
        assert!(dir.path().join("rootfs").is_dir() && dir.path().join("overlay/work").is_dir());
        let process = read_process(dir.path()).unwrap();
        assert_eq!(process["args"][2], "true");
        assert_eq!(wants_terminal(dir.path()).unwrap(), Terminal::On);
    }

    #[test]
    fn spec_mode_uses_directory_as_root_path() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = write_default(
            dir.path(),
            Path::new("/r"),
            &[],
            Terminal::Off,
            &RootfsMount::Spec,
        )
        .unwrap();
        assert!(mounts.is_empty());
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let spec: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(spec["root"]["path"], "/r");
    }
}
