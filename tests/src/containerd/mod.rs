//! A private containerd per test, driven by `ctr`: the release `WREN_CONTAINERD` names
//! (1.6, 1.7 or 2.1; see [`crate::version`]), with that release's own `ctr` and Go shim.
//!
//! Every [`Containerd`] is a [`Daemon`] (its own root, state, config, log and socket; CRI
//! off) with its own FIFO dir, busybox rootfs and namespace, so tests running in parallel
//! threads never see each other's containers, runc state or cgroups. Dropping it stops
//! containerd by PID and removes everything it or its shims left behind;
//! [`Containerd::assert_no_leaks`] is the check a test ends with.

mod cleanup;
mod config;
mod daemon;
mod events;
mod process;
mod scenario;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub(crate) use cleanup::dir_entries;
pub use cleanup::{mounts_under, shim_socket_path, unmount};
pub(crate) use daemon::or_panic;
pub use daemon::{Daemon, DaemonError, Settings};
pub use events::{Event, EventLog};
pub(crate) use process::sigkill;
pub use process::{output_text, run_with_deadline, run_with_input, terminate};
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
    namespace: String,
    rootfs: PathBuf,
    /// Every container id handed out by [`Containerd::new_id`], for cleanup and leak checks.
    ids: Mutex<Vec<String>>,
    daemon: Daemon,
}

impl Containerd {
    /// Writes a config for a fresh containerd, starts it and waits until `ctr version` answers.
    pub fn start(runtime: Runtime) -> Self {
        Self::start_with_shim_dirs(runtime, Vec::new())
    }

    /// Like [`Containerd::start`], with `shim_dirs` also on containerd's PATH, so runtimes
    /// other than the two runc shims (such as an example runtime) can be named by type.
    pub fn start_with_shim_dirs(runtime: Runtime, shim_dirs: Vec<PathBuf>) -> Self {
        let mut daemon = or_panic(Daemon::new("wren-test", ContainerdVersion::from_env()));
        let rootfs = busybox_rootfs(daemon.dir());
        fs::create_dir_all(daemon.dir().join("fifo")).expect("create fifo dir");
        let settings = Settings {
            cri: None,
            debug_log: true,
            shim_dirs: runtime.shim_dir().into_iter().chain(shim_dirs).collect(),
            // A cold containerd under emulation (the VM lane) takes far longer than a
            // state change.
            ready_within: CTR_DEADLINE,
        };
        or_panic(daemon.start(&settings));
        Self {
            runtime,
            namespace: unique_id("wt"),
            rootfs,
            ids: Mutex::new(Vec::new()),
            daemon,
        }
    }

    /// The runtime under test.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The containerd release this instance runs.
    pub fn version(&self) -> ContainerdVersion {
        self.daemon.version()
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> &Path {
        self.daemon.address()
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
        self.daemon.state_dir()
    }

    /// The directory `ctr` creates stdio FIFOs in (`--fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.daemon.dir().join("fifo")
    }

    /// A scratch directory owned by this instance.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.daemon.dir().join("scratch").join(name);
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
        self.daemon.log()
    }

    /// A `ctr` command with `--address` and `--namespace` set.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.daemon.ctr(&self.namespace);
        cmd.args(args);
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

    /// Runs `ctr run --runtime <runtime> [flags…] --rootfs <busybox> <id> <cmd…>` (bounded by
    /// [`CTR_DEADLINE`]). A `--rootfs` container gets no image env, so PATH is set here.
    pub fn run_on_rootfs(&self, runtime: &str, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
        let fifo_dir = self.fifo_dir().display().to_string();
        let rootfs = self.rootfs().display().to_string();
        let mut args = vec!["run", "--runtime", runtime, "--env", "PATH=/bin"];
        args.extend(["--fifo-dir", &fifo_dir]);
        args.extend(flags);
        // containerd 1.6: `--rootfs` is a bool flag; the first positional is the rootfs dir.
        args.extend(["--rootfs", &rootfs, id]);
        args.extend(cmd);
        self.ctr(&args)
    }

    /// Panics with the command's stderr and containerd's log unless `output` is a success.
    pub fn expect_success(&self, output: &Output, what: &str) {
        assert!(
            output.status.success(),
            "{what} failed ({}): {}\n--- containerd log ---\n{}",
            output.status,
            output_text(output),
            self.daemon.log_tail(80)
        );
    }

    /// Kills containerd with SIGKILL, the way a crash would, leaving its shims running.
    pub fn kill_daemon(&mut self) {
        self.daemon.kill();
    }

    /// Starts containerd again with the same config, root and state.
    pub fn restart(&mut self) {
        or_panic(self.daemon.restart());
    }

    /// Stops containerd: SIGTERM, then SIGKILL if it has not exited within a bounded wait.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- containerd log ({}) ---\n{}",
                self.namespace,
                self.daemon.log_tail(80)
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
