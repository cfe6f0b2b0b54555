//! A container's guest-side resources: its root (on the 9p share), the /proc and /dev
//! mounted into it, and its cgroup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::SHARE_DIR;

/// Where a container lives in the guest.
#[derive(Debug)]
pub struct Layout {
    /// Its root: `<SHARE_DIR>/<id>`, the host's bind mount of the bundle's rootfs.
    pub root: PathBuf,
    /// Its cgroup: `/sys/fs/cgroup/<id>`.
    pub cgroup: PathBuf,
}

impl Layout {
    /// The layout of container `id` (already validated by the caller).
    pub fn of(id: &str) -> Self {
        Self {
            root: Path::new(SHARE_DIR).join(id),
            cgroup: Path::new("/sys/fs/cgroup").join(id),
        }
    }

    /// Creates the cgroup and mounts /proc and /dev into the root.
    pub fn set_up(&self) -> std::io::Result<()> {
        if !self.root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not shared with the guest", self.root.display()),
            ));
        }
        std::fs::create_dir_all(&self.cgroup)?;
        // A missing mount point in the image means the container does without it.
        let proc_dir = self.root.join("proc");
        if proc_dir.is_dir() {
            mount(
                Some("proc"),
                &proc_dir,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )?;
        }
        let dev_dir = self.root.join("dev");
        if dev_dir.is_dir() {
            mount(
                Some("/dev"),
                &dev_dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
        }
        Ok(())
    }

    /// The pids in the container's cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Kills what is left, unmounts and removes the cgroup. Best effort: a container's
    /// removal must not fail half-way.
    pub fn tear_down(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for sub in ["dev", "proc"] {
            let _ = umount2(&self.root.join(sub), MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}
