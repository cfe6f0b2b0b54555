//! A private containerd 1.6 for one benchmark run, driven by `ctr`: a
//! [`wren_tests::containerd::Daemon`], the integration tests' own, at containerd's default log
//! level, with a busybox rootfs and a namespace of its own.
//!
//! Shim binaries are found through containerd's `PATH`: each shim under test gets a symlink
//! `containerd-shim-<x>-<v>` in a private bin dir, so any binary becomes a runtime name.
//! Dropping it removes containers, stops containerd by PID and clears what it or its shims
//! left behind (see `cleanup`).

mod cleanup;

pub use cleanup::remove_cgroups;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use wren_tests::containerd::{Daemon, Settings};
use wren_tests::ContainerdVersion;

use crate::cli::Shim;
use crate::proc;
use crate::procfs;

/// How long one `ctr` call may take before it counts as hung.
pub const CTR_DEADLINE: Duration = Duration::from_secs(60);

/// How long containerd may take to answer once started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A private containerd daemon, stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Containerd {
    daemon: Daemon,
    namespace: String,
    rootfs: PathBuf,
    /// `(shim name, runtime name)` for every shim under test.
    runtimes: Vec<(String, String)>,
}

impl Containerd {
    /// Links the shims into a private `PATH` dir, starts containerd and waits until it
    /// answers.
    ///
    /// It is the system's containerd (Debian 12's 1.6), whatever `WREN_CONTAINERD` says:
    /// the release the host line of the results names and the README's numbers were taken on.
    pub fn start(shims: &[Shim]) -> Result<Self> {
        let mut daemon = Daemon::new("wren-bench", ContainerdVersion::V1_6)?;
        let bin = daemon.dir().join("bin");
        fs::create_dir_all(&bin).context("create bin dir")?;
        let mut runtimes: Vec<(String, String)> = Vec::new();
        for shim in shims {
            let (link, runtime) = runtime_names(shim, &runtimes);
            symlink(&shim.binary, bin.join(&link)).with_context(|| format!("link {link}"))?;
            runtimes.push((shim.name.clone(), runtime));
        }
        let rootfs = wren_tests::busybox_rootfs(daemon.dir());
        fs::create_dir_all(daemon.dir().join("fifo")).context("create fifo dir")?;
        daemon.start(&Settings {
            cri: None,
            debug_log: false,
            shim_dirs: vec![bin],
            ready_within: READY_WITHIN,
        })?;
        Ok(Self {
            daemon,
            namespace: format!("wren-bench-{}", std::process::id()),
            rootfs,
            runtimes,
        })
    }

    /// The namespace every `ctr` call uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's gRPC socket (what shims get as `-address`).
    pub fn address(&self) -> &Path {
        self.daemon.address()
    }

    /// The busybox rootfs every container runs from.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// A scratch directory of this run.
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let path = self.daemon.dir().join("scratch").join(name);
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(path)
    }

    /// The runtime name `shim` is reached by.
    pub fn runtime(&self, shim: &Shim) -> &str {
        self.runtimes
            .iter()
            .find(|(name, _)| *name == shim.name)
            .map_or("", |(_, rt)| rt.as_str())
    }

    /// `ctr --address … --namespace … args…`, stdin null.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = self.daemon.ctr(&self.namespace);
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// `ctr run [flags] --rootfs <busybox> <id> <args>` with `shim` as the runtime.
    pub fn run_command(&self, shim: &Shim, flags: &[&str], id: &str, args: &[&str]) -> Command {
        let fifo_dir = self.daemon.dir().join("fifo");
        let mut cmd = self.ctr(&["run", "--runtime", self.runtime(shim), "--env", "PATH=/bin"]);
        cmd.arg("--fifo-dir")
            .arg(fifo_dir)
            .args(flags)
            .arg("--rootfs")
            .arg(&self.rootfs);
        cmd.arg(id).args(args);
        cmd
    }

    /// Starts a detached `sleep` container; returns its shim's PID.
    pub fn start_sleeper(&self, shim: &Shim, id: &str) -> Result<i32> {
        let mut cmd = self.run_command(shim, &["-d"], id, &["sleep", "86400"]);
        proc::run_quiet(&mut cmd, CTR_DEADLINE)?;
        self.shim_pid(shim, id)
    }

    /// The PID of the shim serving `id`: the parent of its init process (shims are
    /// subreapers, so the container's init is reparented to them), checked by executable.
    pub fn shim_pid(&self, shim: &Shim, id: &str) -> Result<i32> {
        let pid = procfs::ppid(self.task_pid(id)?)?;
        let exe = procfs::exe(pid)?;
        let want = fs::canonicalize(&shim.binary).unwrap_or_else(|_| shim.binary.clone());
        if exe != want {
            bail!(
                "parent {pid} of task {id} runs {}, not {}",
                exe.display(),
                want.display()
            );
        }
        Ok(pid)
    }

    /// The PID of task `id`'s init, from `ctr task ls`.
    pub fn task_pid(&self, id: &str) -> Result<i32> {
        let listing = proc::output(&mut self.ctr(&["task", "ls"]), CTR_DEADLINE)?;
        listing
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next()? == id).then(|| cols.next()?.parse().ok())?
            })
            .next()
            .with_context(|| format!("task {id} not in `ctr task ls`:\n{listing}"))
    }

    /// Force-deletes the tasks and containers `ids` (killing what still runs).
    pub fn remove(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(50) {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            // A task that already exited and was removed makes `task rm` fail; `c rm` decides.
            let _ = proc::run_quiet(
                &mut self.ctr(&[&["task", "rm", "-f"], names.as_slice()].concat()),
                CTR_DEADLINE,
            );
            proc::run_quiet(
                &mut self.ctr(&[&["c", "rm"], names.as_slice()].concat()),
                CTR_DEADLINE,
            )?;
        }
        Ok(())
    }

    /// The last lines of containerd's log, for error reports.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail(30)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `(symlink name, runtime name)` for `shim`: the binary's own name when it already reads
/// `containerd-shim-<x>-<v>` and is not taken, else `containerd-shim-<name>-v2`.
fn runtime_names(shim: &Shim, taken: &[(String, String)]) -> (String, String) {
    let file = shim
        .binary
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("");
    let own = file.strip_prefix("containerd-shim-").and_then(|rest| {
        let (x, v) = rest.rsplit_once('-')?;
        let ok = !x.is_empty() && !x.contains('-') && v.starts_with('v');
        ok.then(|| (file.to_owned(), format!("io.containerd.{x}.{v}")))
    });
    match own {
        Some((link, runtime)) if !taken.iter().any(|(_, rt)| *rt == runtime) => (link, runtime),
        _ => (
            format!("containerd-shim-{}-v2", shim.name),
            format!("io.containerd.{}.v2", shim.name),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shim(name: &str, binary: &str) -> Shim {
        Shim {
            name: name.into(),
            binary: binary.into(),
        }
    }

    #[test]
    fn runtime_names_follow_binary_name_then_shim_name() {
        let go = runtime_names(&shim("go", "/usr/bin/containerd-shim-runc-v2"), &[]);
        assert_eq!(
            go,
            (
                "containerd-shim-runc-v2".into(),
                "io.containerd.runc.v2".into()
            )
        );
        let taken = [("go".to_owned(), "io.containerd.runc.v2".to_owned())];
        let twin = runtime_names(&shim("old", "/x/containerd-shim-runc-v2"), &taken);
        assert_eq!(twin.1, "io.containerd.old.v2");
        let odd = runtime_names(&shim("mine", "/x/my-shim"), &[]);
        assert_eq!(
            odd,
            (
                "containerd-shim-mine-v2".into(),
                "io.containerd.mine.v2".into()
            )
        );
    }
}
