//! What a CRI containerd and its shims leave behind: finding shims, checking for leaks
//! (shim processes, runc state, mounts, cgroups, shim sockets) and removing them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{CriContainerd, K8S_NAMESPACE};
use crate::containerd::{dir_entries, mounts_under, shim_socket_path, sigkill, unmount};
use crate::leaks::{assert_none_left, live_processes};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The runc root a shim uses when the runtime options name none (CRI on containerd 1.6
/// sends a non-runc runtime type no runc options, so its `Root` never arrives).
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

impl CriContainerd {
    /// PIDs of the shim daemons serving this containerd (argv `-address <our socket>`).
    /// `ctr` is never among them: it takes `--address`, with two dashes.
    pub fn shim_pids(&self) -> Vec<libc::pid_t> {
        let address = self.address().display().to_string();
        live_processes()
            .into_iter()
            .filter(|process| {
                process
                    .argv
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == address)
            })
            .map(|process| process.pid)
            .collect()
    }

    /// The executable of each shim daemon serving this containerd, to tell which shim runs.
    pub fn shim_executables(&self) -> Vec<PathBuf> {
        self.shim_pids()
            .iter()
            .filter_map(|pid| fs::read_link(format!("/proc/{pid}/exe")).ok())
            .collect()
    }

    /// Remembers a sandbox or container id CRI returned, for leak checks and cleanup.
    pub fn track(&self, id: &str) {
        self.ids.lock().expect("ids lock").push(id.to_owned());
    }

    fn tracked_ids(&self) -> Vec<String> {
        self.ids.lock().expect("ids lock").clone()
    }

    /// Polls (bounded) until no shim, runc container, mount, cgroup or shim socket of this
    /// containerd is left; panics with the list and containerd's log otherwise.
    pub fn assert_no_leaks(&self) {
        assert_none_left("containerd", || self.leaks(), || self.log());
    }

    fn leaks(&self) -> Vec<String> {
        let mut leaks: Vec<String> = self
            .shim_pids()
            .iter()
            .map(|pid| format!("shim process {pid}"))
            .collect();
        leaks.extend(
            self.runc_states()
                .iter()
                .map(|(_, state)| format!("runc state {state:?}")),
        );
        leaks.extend(self.mounts().into_iter().map(|m| format!("mount {m}")));
        leaks.extend(
            self.container_cgroups()
                .iter()
                .map(|c| format!("cgroup {c:?}")),
        );
        for id in self.tracked_ids() {
            let socket = shim_socket_path(self.address(), K8S_NAMESPACE, &id);
            if socket.exists() {
                leaks.push(format!("shim socket {}", socket.display()));
            }
        }
        leaks
    }

    /// runc state dirs left, as (runc root, state dir): everything in our private root, and
    /// our ids in the default root.
    fn runc_states(&self) -> Vec<(PathBuf, PathBuf)> {
        let private = self.runc_root().join(K8S_NAMESPACE);
        let default = Path::new(DEFAULT_RUNC_ROOT).join(K8S_NAMESPACE);
        let mut states: Vec<_> = dir_entries(&private)
            .into_iter()
            .map(|state| (private.clone(), state))
            .collect();
        let ours = self
            .tracked_ids()
            .into_iter()
            .map(|id| default.join(id))
            .filter(|state| state.exists());
        states.extend(ours.map(|state| (default.clone(), state)));
        states
    }

    /// Mount points under this instance's temp dir or run dir.
    fn mounts(&self) -> Vec<String> {
        let mut mounts = mounts_under(self.daemon.dir());
        mounts.extend(mounts_under(self.daemon.run_dir()));
        mounts
    }

    /// `<controller>/<cgroup parent>` dirs that exist, for every controller.
    fn parent_cgroups(&self) -> Vec<PathBuf> {
        let parent = self.cgroup_parent.trim_start_matches('/');
        dir_entries(Path::new(CGROUP_ROOT))
            .into_iter()
            .map(|c| c.join(parent))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Pod and container cgroups left under the cgroup parent.
    fn container_cgroups(&self) -> Vec<PathBuf> {
        self.parent_cgroups()
            .iter()
            .flat_map(|p| dir_entries(p))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// SIGKILLs the shims still serving this containerd and waits (bounded) until they are gone.
    fn kill_shims(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.shim_pids();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids {
                sigkill(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Best-effort removal of everything left, once containerd has stopped.
    pub(super) fn remove_leftovers(&self) {
        self.kill_shims();
        for (runc_root, state) in self.runc_states() {
            let id = state
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", &id])
                .output();
        }
        for mount in self.mounts().iter().rev() {
            unmount(mount);
        }
        for cgroup in self
            .container_cgroups()
            .into_iter()
            .chain(self.parent_cgroups())
        {
            let _ = fs::remove_dir(cgroup);
        }
        // A killed shim cannot remove its socket.
        for id in self.tracked_ids() {
            let _ = fs::remove_file(shim_socket_path(self.address(), K8S_NAMESPACE, &id));
        }
    }
}
