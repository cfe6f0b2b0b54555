//! A private containerd per test, driven by `ctr`: the release `WREN_CONTAINERD` names
//! (1.6, 1.7 or 2.1; see [`crate::version`]), with that release's own `ctr` and Go shim.
//!
//! Every [`Containerd`] has its own root, state, config, log, FIFO dir and busybox rootfs
//! under a temp dir, its sockets under `/run/wren-test/<pid>-<n>/` (unix socket paths are
//! limited to 108 bytes, so they cannot live under a deep temp dir) and its own
//! namespace, so tests running in parallel threads never see each other's containers,
//! runc state or cgroups. Dropping it stops containerd by PID and removes everything it
//! or its shims left behind; [`Containerd::assert_no_leaks`] is the check a test ends with.

mod cleanup;
mod config;
mod events;
mod process;
mod scenario;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use cleanup::shim_socket_path;
pub(crate) use cleanup::{mounts_under, unmount};
pub use events::{Event, EventLog};
pub use process::{output_text, run_with_deadline, run_with_input};
pub use scenario::{sha256_hex, SpecOptions, StreamedOutput};

use crate::bundle::busybox_rootfs;
use crate::unique_id;
use crate::version::ContainerdVersion;

/// How long a single `ctr` invocation may take before the test calls it hung.
pub const CTR_DEADLINE: Duration = Duration::from_secs(120);

/// How long a state change (task status, shim exit) may take to become visible.
pub const STATE_DEADLINE: Duration = Duration::from_secs(30);

/// The shim a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// containerd's own `containerd-shim-runc-v2`, the reference behaviour.
    Go,
    /// wren's `containerd-shim-wren-v2`, built from this workspace.
    Wren,
}

impl Runtime {
    /// The runtime name passed to `ctr --runtime`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Go => "io.containerd.runc.v2",
            Runtime::Wren => "io.containerd.wren.v2",
        }
    }

    /// The directory containerd must find the shim binary in, if not on the default PATH.
    fn shim_dir(self) -> Option<PathBuf> {
        match self {
            Runtime::Go => None,
            Runtime::Wren => crate::workspace_bin("containerd-shim-wren-v2")
                .parent()
                .map(Path::to_path_buf),
        }
    }
}

/// A private containerd daemon, stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Containerd {
    runtime: Runtime,
    version: ContainerdVersion,
    /// More directories containerd looks for shim binaries in (other runtimes under test).
    extra_shim_dirs: Vec<PathBuf>,
    namespace: String,
    dir: tempfile::TempDir,
    socket_dir: PathBuf,
    address: PathBuf,
    rootfs: PathBuf,
    daemon: Option<Child>,
    /// Every container id handed out by [`Containerd::new_id`], for cleanup and leak checks.
    ids: Mutex<Vec<String>>,
}

impl Containerd {
    /// Writes a config for a fresh containerd, starts it and waits until `ctr version` answers.
    pub fn start(runtime: Runtime) -> Self {
        Self::start_with_shim_dirs(runtime, Vec::new())
    }

    /// Like [`Containerd::start`], with `shim_dirs` also on containerd's PATH, so runtimes
    /// other than the two runc shims (such as an example runtime) can be named by type.
    pub fn start_with_shim_dirs(runtime: Runtime, shim_dirs: Vec<PathBuf>) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("wren-containerd-")
            .tempdir()
            .expect("temp dir");
        let socket_dir = PathBuf::from(format!(
            "/run/wren-test/{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&socket_dir).expect("create socket dir");
        let rootfs = busybox_rootfs(dir.path());
        fs::create_dir_all(dir.path().join("fifo")).expect("create fifo dir");
        let mut containerd = Self {
            runtime,
            version: ContainerdVersion::from_env(),
            extra_shim_dirs: shim_dirs,
            namespace: unique_id("wt"),
            address: socket_dir.join("containerd.sock"),
            socket_dir,
            rootfs,
            daemon: None,
            ids: Mutex::new(Vec::new()),
            dir,
        };
        containerd.write_config();
        containerd.spawn_daemon();
        containerd
    }

    /// The runtime under test.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The containerd release this instance runs.
    pub fn version(&self) -> ContainerdVersion {
        self.version
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The namespace every `ctr` call of this instance uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The busybox rootfs shared by this instance's containers.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// containerd's `state` directory (bundles live under it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The directory `ctr` creates stdio FIFOs in (`--fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// A scratch directory owned by this instance.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("scratch").join(name);
        fs::create_dir_all(&path).expect("create scratch dir");
        path
    }

    /// A fresh container id, remembered for cleanup and leak checks.
    pub fn new_id(&self, prefix: &str) -> String {
        let id = unique_id(prefix);
        self.ids.lock().expect("ids lock").push(id.clone());
        id
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().expect("ids lock").clone()
    }

    /// containerd's log so far (its stdout and stderr at debug level).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// A `ctr` command with `--address` and `--namespace` set.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.version.binary("ctr"));
        cmd.arg("--address")
            .arg(&self.address)
            .args(["--namespace", &self.namespace])
            .args(args);
        cmd
    }

    /// Runs `ctr args…` to completion (bounded by [`CTR_DEADLINE`]) and returns its output.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_with_deadline(self.ctr_command(args).stdin(Stdio::null()), CTR_DEADLINE)
    }

    /// Runs `ctr args…`, panics (with containerd's log) unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let output = self.ctr(args);
        self.expect_success(&output, &format!("ctr {}", args.join(" ")));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Panics with the command's stderr and containerd's log unless `output` is a success.
    pub fn expect_success(&self, output: &Output, what: &str) {
        assert!(
            output.status.success(),
            "{what} failed ({}): {}\n--- containerd log ---\n{}",
            output.status,
            output_text(output),
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Kills containerd with SIGKILL, the way a crash would, leaving its shims running.
    pub fn kill_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill().expect("SIGKILL containerd");
            daemon.wait().expect("reap containerd");
        }
    }

    /// Starts containerd again with the same config, root and state.
    pub fn restart(&mut self) {
        assert!(
            self.daemon.is_none(),
            "restart: containerd is still running"
        );
        self.spawn_daemon();
    }

    /// Stops containerd: SIGTERM, then SIGKILL if it has not exited within a bounded wait.
    pub fn stop(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(daemon.id()).expect("pid fits pid_t");
        // SAFETY: `pid` is our own unreaped child (we hold its `Child`), so it cannot have
        // been recycled for another process; kill(2) touches no memory.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if daemon.try_wait().expect("wait containerd").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon.kill().expect("SIGKILL containerd");
        daemon.wait().expect("reap containerd");
    }

    fn spawn_daemon(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open containerd log");
        let mut cmd = Command::new(self.version.binary("containerd"));
        cmd.arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let shim_dirs: Vec<PathBuf> = self
            .runtime
            .shim_dir()
            .into_iter()
            .chain(self.extra_shim_dirs.iter().cloned())
            .collect();
        cmd.env("PATH", self.version.daemon_path(&shim_dirs));
        self.daemon = Some(cmd.spawn().expect("spawn containerd"));
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        // A cold containerd under emulation (the VM lane) takes far longer than a state change.
        let deadline = Instant::now() + CTR_DEADLINE;
        loop {
            if self.ctr(&["version"]).status.success() {
                return;
            }
            let daemon = self.daemon.as_mut().expect("daemon spawned");
            if let Some(status) = daemon.try_wait().expect("wait containerd") {
                panic!("containerd exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- containerd log ({}) ---\n{}",
                self.namespace,
                self.log_tail()
            );
        }
        self.stop();
        self.remove_leftovers();
    }
}

/// Generates `go_shim::<scenario>` and `wren_shim::<scenario>` tests for scenario functions
/// taking a [`Runtime`]. Filter with `cargo test … go_` or `… wren_`.
#[macro_export]
macro_rules! per_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod go_shim {
            $(
                #[test]
                fn $scenario() {
                    $crate::require_root!();
                    $crate::require_containerd!();
                    super::$scenario($crate::containerd::Runtime::Go);
                }
            )*
        }
        mod wren_shim {
            $(
                #[test]
                fn $scenario() {
                    $crate::require_root!();
                    $crate::require_containerd!();
                    super::$scenario($crate::containerd::Runtime::Wren);
                }
            )*
        }
    };
}
