//! Shared fixtures for the driver's integration tests: a private runtime root per test,
//! a spawner that remembers every pid it spawned (to prove none is left a zombie), the
//! runtimes to run against, and pipes.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wren_process::{DirectSpawner, Spawned, Spawner};
use wren_runc_driver::{CreateOptions, DeleteMode, Error, Runc, RuncConfig, Status, Stdio};
use wren_tests::Bundle;

/// The runtimes every lifecycle test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `runc` from PATH.
    Runc,
    /// `#!/bin/sh\nexec runc "$@"` in the test's tempdir: any runc-compatible binary works.
    Wrapper,
    /// `crun` from PATH, where the host's cgroup layout allows it.
    Crun,
}

pub const FLAVORS: [Flavor; 3] = [Flavor::Runc, Flavor::Wrapper, Flavor::Crun];

/// Wraps [`DirectSpawner`], recording each child's pid.
#[derive(Debug, Default)]
pub struct RecordingSpawner {
    pids: Mutex<Vec<i32>>,
}

impl Spawner for RecordingSpawner {
    fn spawn(&self, cmd: &mut Command) -> std::io::Result<Box<dyn Spawned>> {
        let child = DirectSpawner.spawn(cmd)?;
        self.pids.lock().unwrap().push(child.pid());
        Ok(child)
    }
}

/// A private runtime root, log and bundle directory for one test.
#[derive(Debug)]
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub flavor: Flavor,
    pub runc: Runc,
    pub spawner: Arc<RecordingSpawner>,
    pub root: PathBuf,
    pub binary: PathBuf,
}

impl Fixture {
    pub fn new(flavor: Flavor) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let binary = match flavor {
            Flavor::Runc => PathBuf::from("runc"),
            Flavor::Crun => PathBuf::from("crun"),
            Flavor::Wrapper => write_wrapper(dir.path()),
        };
        let spawner = Arc::new(RecordingSpawner::default());
        let config = RuncConfig {
            binary: binary.clone(),
            root: Some(root.clone()),
            log: Some(dir.path().join("log.json")),
            ..RuncConfig::default()
        };
        let runc = Runc::new(config, spawner.clone());
        Self {
            dir,
            flavor,
            runc,
            spawner,
            root,
            binary,
        }
    }

    /// A busybox bundle in this fixture's tempdir running `args`.
    pub fn bundle(&self, name: &str, args: &[&str]) -> Bundle {
        Bundle::new(&self.dir.path().join(name), args)
    }

    /// Creates `id` from `bundle`; `None` (after a visible SKIP) when crun refuses
    /// this host's hybrid cgroup layout, an environment limit CI must tolerate.
    pub fn create_or_skip(
        &self,
        test: &str,
        id: &str,
        bundle: &Bundle,
        stdio: Stdio,
    ) -> Option<u32> {
        let options = CreateOptions {
            bundle: bundle.path.clone(),
            pid_file: bundle.path.join("init.pid"),
            console_socket: None,
            no_pivot: false,
            no_new_keyring: false,
            stdio,
        };
        match self.runc.create(id, options) {
            Ok(pid) => Some(pid),
            Err(err) if self.flavor == Flavor::Crun && refuses_hybrid_cgroups(&err) => {
                let _ = self.runc.delete(id, DeleteMode::Force);
                eprintln!(
                    "SKIP {test}: crun refuses this host's hybrid cgroup layout: {}",
                    err.runtime_message().unwrap_or_default()
                );
                None
            }
            Err(err) => panic!("{:?} create {id}: {err}", self.flavor),
        }
    }

    /// Creates `id` again, expecting failure.
    pub fn create_or_skip_err(&self, id: &str, bundle: &Bundle) -> Error {
        let options = CreateOptions {
            bundle: bundle.path.clone(),
            pid_file: bundle.path.join("again.pid"),
            console_socket: None,
            no_pivot: false,
            no_new_keyring: false,
            stdio: Stdio::null(),
        };
        self.runc
            .create(id, options)
            .expect_err("a second create of the same id")
    }

    /// The ids the runtime still knows in this fixture's root.
    pub fn listed_containers(&self) -> Vec<String> {
        self.try_listed_containers()
            .expect("the runtime lists its root")
    }

    fn try_listed_containers(&self) -> Option<Vec<String>> {
        let out = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(["list", "-q"])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status
            .success()
            .then(|| text.lines().map(str::to_owned).collect())
    }

    /// Every test ends here: no container left in the root, no runtime child a zombie.
    pub fn assert_clean(&self) {
        assert_eq!(
            self.listed_containers(),
            Vec::<String>::new(),
            "{:?}",
            self.flavor
        );
        let me = std::process::id();
        for pid in self.spawner.pids.lock().unwrap().iter() {
            assert!(
                !is_zombie_child_of(*pid, me),
                "runtime child {pid} was not reaped"
            );
        }
    }
}

impl Drop for Fixture {
    /// A failed assertion must not leave a container (and its cgroups) behind.
    fn drop(&mut self) {
        for id in self.try_listed_containers().unwrap_or_default() {
            let _ = self.runc.delete(&id, DeleteMode::Force);
        }
    }
}

/// Polls `state` until the container reaches `want`. Output EOF does not suffice: a dying
/// process closes its fds a moment before the kernel marks it a zombie, which is what the
/// runtime reads as stopped. The bound only turns a bug into a failure instead of a hang.
pub fn wait_for_status(runc: &Runc, id: &str, want: Status) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = runc.state(id).unwrap().status;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} stuck in {status:?}, waiting for {want:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn refuses_hybrid_cgroups(err: &Error) -> bool {
    err.runtime_message()
        .is_some_and(|m| m.contains("cgroups in hybrid mode not supported"))
}

fn write_wrapper(dir: &Path) -> PathBuf {
    let path = dir.join("runc-wrapper");
    std::fs::write(&path, "#!/bin/sh\nexec runc \"$@\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether `pid` is a zombie whose parent is `parent` (a recycled pid is not ours).
fn is_zombie_child_of(pid: i32, parent: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the parenthesised comm: state, ppid, ...
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let mut fields = rest.split(' ');
    let state = fields.next();
    let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
    state == Some("Z") && ppid == Some(parent)
}

/// A CLOEXEC pipe as (read end, write end).
pub fn pipe() -> (File, OwnedFd) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (File::from(read), write)
}

/// Reads `pipe` to EOF, which comes once every process holding the write end is gone.
pub fn read_to_end(mut pipe: File) -> String {
    let mut text = String::new();
    pipe.read_to_string(&mut text).unwrap();
    text
}
