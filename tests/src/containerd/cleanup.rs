//! Finding, checking and removing what a private containerd and its shims leave behind:
//! shim processes, runc state, mounts, cgroups, shim sockets, bundles and FIFOs.

use std::ffi::CString;
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::process::{is_alive, sigkill};
use super::{Containerd, Runtime};
use crate::leaks::{assert_none_left, live_processes, ProcInfo};
use crate::version::ConfigFormat;

/// Where containerd 1.6 shims put their sockets.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// The runc root the shims use by default: `<this>/<namespace>/<container id>`.
const RUNC_ROOT: &str = "/run/containerd/runc";

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The socket a 1.6 shim listens on for `id` (or a group id):
/// `/run/containerd/s/<hex sha256("<address>/<namespace>/<id>")>`.
pub fn shim_socket_path(address: &Path, namespace: &str, id: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{}/{namespace}/{id}", address.display()).as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Path::new(SHIM_SOCKET_DIR).join(hex)
}

impl Containerd {
    /// Live processes containerd started for this instance: shims (argv `-address <ours>`)
    /// and anything they run that inherited `TTRPC_ADDRESS=<ours>.ttrpc` (runc calls).
    /// `ctr` is never among them: it gets `--address`, with two dashes, and no such env.
    pub fn shim_processes(&self) -> Vec<ProcInfo> {
        let address = self.address().display().to_string();
        let ttrpc_env = format!("TTRPC_ADDRESS={address}.ttrpc");
        let flag_joined = format!("-address={address}");
        live_processes()
            .into_iter()
            .filter(|p| {
                p.argv
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == address)
                    || p.argv.contains(&flag_joined)
                    || p.environ.contains(&ttrpc_env)
            })
            .collect()
    }

    /// PIDs of this instance's shim daemons: its shim-side processes that are not runc.
    pub fn shim_pids(&self) -> Vec<libc::pid_t> {
        self.shim_processes()
            .into_iter()
            .filter(|p| {
                p.argv
                    .first()
                    .is_some_and(|argv0| argv0.contains("containerd-shim"))
            })
            .map(|p| p.pid)
            .collect()
    }

    /// SIGKILLs this instance's shim daemons, the way the OOM killer or a crash would.
    pub fn kill_shims(&self) -> Vec<libc::pid_t> {
        let pids = self.shim_pids();
        for pid in &pids {
            sigkill(*pid);
        }
        pids
    }

    /// Waits (bounded) until nothing this containerd created is left, then returns;
    /// panics with the list of leaks and containerd's log otherwise.
    pub fn assert_no_leaks(&self) {
        assert_none_left("containerd", || self.leaks(), || self.log());
    }

    /// Everything left behind right now, one `<kind>: <items>` line per kind of leak.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        if self.daemon.is_running() {
            for (what, args) in [
                ("containers", ["containers", "ls", "-q"]),
                ("tasks", ["tasks", "ls", "-q"]),
            ] {
                let listed = self.ctr_ok(&args);
                if !listed.trim().is_empty() {
                    leaks.push(format!("{what}: {}", listed.trim().replace('\n', " ")));
                }
            }
        }
        let procs: Vec<String> = self
            .shim_processes()
            .iter()
            .map(|p| format!("{} {:?}", p.pid, p.argv))
            .collect();
        push_nonempty(&mut leaks, "shim-side processes", &procs);
        push_nonempty(&mut leaks, "runc containers", &dir_names(&self.runc_root()));
        push_nonempty(&mut leaks, "mounts", &self.mounts());
        push_nonempty(
            &mut leaks,
            "cgroups",
            &self.cgroup_dirs(CgroupLevel::Containers),
        );
        push_nonempty(&mut leaks, "shim sockets", &self.shim_sockets());
        push_nonempty(&mut leaks, "bundles", &dir_names(&self.bundle_dir()));
        push_nonempty(&mut leaks, "fifo dirs", &dir_names(&self.fifo_dir()));
        leaks
    }

    /// Removes every leftover, best effort: used on drop, after containerd has stopped.
    pub(super) fn remove_leftovers(&self) {
        self.kill_shim_processes();
        self.delete_runc_containers();
        for mount in self.mounts().iter().rev() {
            unmount(mount);
        }
        for cgroup in self.cgroup_dirs(CgroupLevel::Containers) {
            let _ = fs::remove_dir(cgroup);
        }
        for cgroup in self.cgroup_dirs(CgroupLevel::Namespace) {
            let _ = fs::remove_dir(cgroup);
        }
        for socket in self.shim_socket_files() {
            let _ = fs::remove_file(socket);
        }
        let _ = fs::remove_dir(self.runc_root());
    }

    fn kill_shim_processes(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids: Vec<_> = self.shim_processes().iter().map(|p| p.pid).collect();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids.iter().copied().filter(|pid| is_alive(*pid)) {
                sigkill(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `runc delete --force` for every container left in this namespace's runc root.
    fn delete_runc_containers(&self) {
        let root = self.runc_root();
        for id in dir_names(&root) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .output();
        }
    }

    fn runc_root(&self) -> PathBuf {
        Path::new(RUNC_ROOT).join(self.namespace())
    }

    fn bundle_dir(&self) -> PathBuf {
        self.state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(self.namespace())
    }

    /// Mount points under this instance's temp dir, in mount order.
    fn mounts(&self) -> Vec<String> {
        mounts_under(self.daemon.dir())
    }

    /// `<controller>/<namespace>` or `<controller>/<namespace>/<id>` cgroup dirs that exist
    /// (`<namespace>` and `<namespace>/<id>` on a unified host).
    /// `ctr` puts containers at cgroupsPath `/<namespace>/<id>`.
    fn cgroup_dirs(&self, level: CgroupLevel) -> Vec<String> {
        let root = Path::new(CGROUP_ROOT);
        let hierarchies: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
            vec![root.to_path_buf()]
        } else {
            dir_names(root).iter().map(|c| root.join(c)).collect()
        };
        let namespace_dirs = hierarchies.iter().map(|h| h.join(self.namespace()));
        let dirs: Vec<PathBuf> = match level {
            CgroupLevel::Namespace => namespace_dirs.filter(|d| d.is_dir()).collect(),
            CgroupLevel::Containers => namespace_dirs
                .flat_map(|ns_dir| {
                    let children = dir_entries(&ns_dir);
                    children.into_iter().filter(|child| child.is_dir())
                })
                .collect(),
        };
        dirs.iter().map(|d| d.display().to_string()).collect()
    }

    /// Shim socket files that exist for the ids (and group ids) handed out by `new_id`.
    ///
    /// The 2.1 Go shim, when it serves a group (a sandbox id), leaves the group's socket file
    /// behind after it exits: the reference's own behaviour, so for it a socket nothing
    /// listens on is noted and not counted. wren must remove its sockets on every version.
    fn shim_sockets(&self) -> Vec<String> {
        let tolerate_dead =
            self.runtime() == Runtime::Go && self.version().config_format() == ConfigFormat::V3;
        self.shim_socket_files()
            .into_iter()
            .filter(|path| {
                let dead = UnixStream::connect(path).is_err();
                if tolerate_dead && dead {
                    eprintln!("note: the Go shim left a dead socket {}", path.display());
                }
                !(tolerate_dead && dead)
            })
            .map(|path| path.display().to_string())
            .collect()
    }

    /// Every shim socket file that exists for the ids handed out by `new_id`.
    fn shim_socket_files(&self) -> Vec<PathBuf> {
        self.ids()
            .iter()
            .map(|id| shim_socket_path(self.address(), self.namespace(), id))
            .filter(|path| path.exists())
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum CgroupLevel {
    Namespace,
    Containers,
}

fn push_nonempty(leaks: &mut Vec<String>, what: &str, found: &[String]) {
    if !found.is_empty() {
        leaks.push(format!("{what}: {}", found.join(", ")));
    }
}

pub(crate) fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |entries| entries.filter_map(|e| Some(e.ok()?.path())).collect(),
    )
}

fn dir_names(dir: &Path) -> Vec<String> {
    dir_entries(dir)
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
        .collect()
}

/// Mount points under `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let ours = dir.display().to_string();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&ours))
        .map(str::to_owned)
        .collect()
}

/// Detaches the mount at `point`, best effort.
pub fn unmount(point: &str) {
    let Ok(path) = CString::new(point) else {
        return;
    };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call; umount2(2)
    // only reads it. MNT_DETACH cannot hang on a busy mount.
    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
}
