//! OCI bundles with a busybox-static root filesystem.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into every test rootfs.
const APPLETS: &[&str] = &[
    "sh",
    "echo",
    "cat",
    "sleep",
    "true",
    "false",
    "dd",
    "head",
    "tail",
    "ls",
    "kill",
    "ps",
    "env",
    "id",
    "test",
    "stty",
    "wc",
    "sha256sum",
    "md5sum",
    "yes",
    "tr",
    "printf",
    "seq",
    "mkdir",
    "rm",
    "touch",
    "grep",
    "hostname",
    "nproc",
    "stat",
    "readlink",
    "timeout",
    "tee",
    "sync",
];

/// A process-wide unique id with a readable prefix, usable as container id.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `<dir>/rootfs` holding busybox-static and its applets; returns the rootfs path.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        fs::create_dir_all(rootfs.join(sub)).expect("create rootfs dirs");
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} (apt-get install busybox-static): {e}"));
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("link applet");
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
    rootfs
}

/// An OCI bundle directory: `config.json` plus a busybox `rootfs/`.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub path: PathBuf,
    /// The OCI runtime spec written to `config.json`; edit it, then call [`Bundle::save`].
    pub spec: Value,
}

impl Bundle {
    /// Creates a bundle in `dir` (created if missing) whose process runs `args`.
    pub fn new(dir: &Path, args: &[&str]) -> Self {
        fs::create_dir_all(dir).expect("create bundle dir");
        busybox_rootfs(dir);
        let bundle = Self {
            path: dir.to_path_buf(),
            spec: default_spec(args),
        };
        bundle.save();
        bundle
    }

    /// Writes `spec` to `config.json`.
    pub fn save(&self) {
        let text = serde_json::to_vec_pretty(&self.spec).expect("serialize spec");
        fs::write(self.path.join("config.json"), text).expect("write config.json");
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
}

/// A spec like `runc spec` writes, with a writable root, no terminal and `args`.
pub fn default_spec(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS, "ambient": CAPS
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "wren",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// The capability set `runc spec` grants.
const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
