//! Tearing a private containerd down: containers, the daemon, leftover shims, runc state,
//! shim sockets, mounts and cgroups. Best effort throughout: cleanup must never stop halfway.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wren_shim_protocol::address::socket_path;
use wren_tests::containerd::{mounts_under, unmount};

use super::{Containerd, CTR_DEADLINE};
use crate::{proc, procfs, sys};

/// The runc root containerd's shims use by default: `<this>/<namespace>/<id>`.
const RUNC_ROOT: &str = "/run/containerd/runc";

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Containerd {
    pub(super) fn cleanup(&mut self) {
        let sockets = self.shim_sockets();
        if self.daemon.is_running() {
            if let Ok(listing) = proc::output(&mut self.ctr(&["c", "ls", "-q"]), CTR_DEADLINE) {
                let ids: Vec<String> = listing.split_whitespace().map(str::to_owned).collect();
                if let Err(err) = self.remove(&ids) {
                    eprintln!("cleanup: removing containers: {err:#}");
                }
            }
        }
        self.daemon.stop();
        self.kill_leftover_shims();
        let runc_root = Path::new(RUNC_ROOT).join(&self.namespace);
        for id in sys::dir_names(&runc_root) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", &id])
                .output();
        }
        let _ = fs::remove_dir(&runc_root);
        for socket in sockets.iter().filter(|s| s.exists()) {
            let _ = fs::remove_file(socket);
        }
        for mount in mounts_under(self.daemon.dir()).iter().rev() {
            unmount(mount);
        }
        remove_cgroups(&self.namespace);
    }

    /// Shims (and their runc children) still carrying our `-address`, SIGKILLed by PID.
    fn kill_leftover_shims(&self) {
        let address = self.address().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = procfs::pids_with_args("-address", &address);
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids {
                eprintln!("cleanup: killing leftover shim {pid}");
                sys::kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Socket paths the shims of this namespace wrote to their bundles' `address` files.
    fn shim_sockets(&self) -> Vec<PathBuf> {
        let bundles = self
            .daemon
            .state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace);
        let scratch = self.daemon.dir().join("scratch");
        let mut dirs: Vec<PathBuf> = sys::dir_names(&bundles)
            .iter()
            .map(|id| bundles.join(id))
            .collect();
        for sub in sys::dir_names(&scratch) {
            dirs.extend(
                sys::dir_names(&scratch.join(&sub))
                    .iter()
                    .map(|id| scratch.join(&sub).join(id)),
            );
        }
        dirs.iter()
            .filter_map(|dir| fs::read_to_string(dir.join("address")).ok())
            .filter_map(|address| socket_path(&address).ok())
            .collect()
    }
}

/// Removes `<controller>/<namespace>/*` and `<controller>/<namespace>` cgroup dirs (empty by
/// now: their processes are dead), on every hierarchy.
pub fn remove_cgroups(namespace: &str) {
    for controller in sys::dir_names(Path::new(CGROUP_ROOT)) {
        let ns_dir = Path::new(CGROUP_ROOT).join(controller).join(namespace);
        for child in sys::dir_names(&ns_dir) {
            let _ = fs::remove_dir(ns_dir.join(child));
        }
        let _ = fs::remove_dir(&ns_dir);
    }
}
