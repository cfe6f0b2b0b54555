//! Bringing the guest up: pseudo file systems, modules, the agent's port and the 9p share.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::{modules, PORT_NAME, SHARE_DIR, SHARE_TAG};

/// How long the port may take to appear once virtio_console is loaded (probing is async).
const PORT_WAIT: Duration = Duration::from_secs(20);

/// Why the guest could not come up.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A mount failed.
    #[error("mount {what} on {target}: {source}")]
    Mount {
        /// What was mounted.
        what: &'static str,
        /// Where.
        target: String,
        /// The cause.
        source: nix::Error,
    },
    /// A module could not be loaded.
    #[error(transparent)]
    Module(#[from] modules::ModuleError),
    /// The port never appeared.
    #[error("no virtio port named {PORT_NAME} after {PORT_WAIT:?}")]
    NoPort,
    /// The port could not be opened.
    #[error("open {path}: {source}")]
    OpenPort {
        /// The device.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A directory could not be created.
    #[error("create {path}: {source}")]
    Mkdir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Mounts, loads modules and opens the agent's port.
pub fn boot() -> Result<File, BootError> {
    mount_fs("devtmpfs", "devtmpfs", "/dev", "")?;
    mount_fs("proc", "proc", "/proc", "")?;
    mount_fs("sysfs", "sysfs", "/sys", "")?;
    mount_fs("tmpfs", "tmpfs", "/run", "mode=0755")?;
    mount_fs("cgroup2", "cgroup2", "/sys/fs/cgroup", "")?;
    // Let each container's cgroup account cpu, memory and pids (Stats reads them).
    let _ = std::fs::write(
        "/sys/fs/cgroup/cgroup.subtree_control",
        "+cpu +memory +pids",
    );
    modules::load_all(Path::new("/lib/modules"))?;
    let port = open_port()?;
    mount_share()?;
    Ok(port)
}

fn mount_fs(what: &'static str, fstype: &str, target: &str, data: &str) -> Result<(), BootError> {
    std::fs::create_dir_all(target).map_err(|source| BootError::Mkdir {
        path: target.into(),
        source,
    })?;
    mount(
        Some(what),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID,
        Some(data),
    )
    .map_err(|source| BootError::Mount {
        what,
        target: target.into(),
        source,
    })
}

fn mount_share() -> Result<(), BootError> {
    std::fs::create_dir_all(SHARE_DIR).map_err(|source| BootError::Mkdir {
        path: SHARE_DIR.into(),
        source,
    })?;
    // msize: larger messages cut the round trips of reading binaries over 9p.
    mount(
        Some(SHARE_TAG),
        SHARE_DIR,
        Some("9p"),
        MsFlags::empty(),
        Some("trans=virtio,version=9p2000.L,msize=524288,cache=loose"),
    )
    .map_err(|source| BootError::Mount {
        what: "9p",
        target: SHARE_DIR.into(),
        source,
    })
}

/// Finds the port by name under /sys/class/virtio-ports and opens its /dev node.
fn open_port() -> Result<File, BootError> {
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        if let Some(path) = find_port() {
            return OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| BootError::OpenPort { path, source });
        }
        if Instant::now() > deadline {
            return Err(BootError::NoPort);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn find_port() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for entry in entries.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == PORT_NAME {
            let dev = Path::new("/dev").join(entry.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}

/// Flushes and powers the guest off; QEMU then exits. Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Pid 1 must not exit (the kernel would panic): wait for the host to stop the VM.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
