//! A private containerd with its CRI plugin enabled, as a kubelet's node would run it: the
//! release `WREN_CONTAINERD` names (1.6 or 2.1 in CI; see [`crate::version`]).
//!
//! Unlike [`crate::Containerd`] (CRI disabled, containers from `ctr run --rootfs`), this one
//! serves `runtime.v1.RuntimeService` and `ImageService` on its socket, stores images with
//! the `native` snapshotter (it needs no kernel feature and no tool) and configures two
//! RuntimeClass handlers: `runc` (containerd's Go shim) and `wren` (this workspace's shim).
//! Pods use the host network, so no CNI plugin is needed; the CNI dirs point at empty dirs.
//!
//! Everything it owns is private: root, state and logs under a temp dir; sockets and the
//! runc root under `/run/wren-cri-<pid>-<n>/`; containers under the cgroup parent
//! `/wren-cri-<pid>-<n>`. Dropping it stops containerd by PID and removes what is left.

mod image;
mod leaks;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use image::{build_image_archive, ImageRecipe};

use crate::containerd::{output_text, run_with_deadline, CTR_DEADLINE, STATE_DEADLINE};
use crate::version::{ConfigFormat, ContainerdVersion};

/// The containerd namespace the CRI plugin keeps everything in.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// The pause image every sandbox runs (`sandbox_image`).
pub const PAUSE_IMAGE: &str = "docker.io/wren-test/pause:1";

/// The image the pods' workload containers run.
pub const WORKLOAD_IMAGE: &str = "docker.io/wren-test/busybox:1";

/// A RuntimeClass handler configured in this containerd (see `config.toml` beside this file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `runc`: `io.containerd.runc.v2`, containerd's Go shim, the reference behaviour.
    Runc,
    /// `wren`: `io.containerd.wren.v2`, the binary found on containerd's PATH. CRI sends a
    /// runtime type other than runc's `runtimeoptions.v1.Options`, not runc's options.
    Wren,
}

impl Handler {
    /// The handler name, as a `RuntimeClass`'s `handler` and CRI's `runtime_handler` say it.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Runc => "runc",
            Handler::Wren => "wren",
        }
    }

    /// The file name of the shim binary this handler runs.
    pub fn shim_binary(self) -> &'static str {
        match self {
            Handler::Runc => "containerd-shim-runc-v2",
            Handler::Wren => "containerd-shim-wren-v2",
        }
    }
}

/// A private containerd with the CRI plugin, stopped and cleaned up on drop.
#[derive(Debug)]
pub struct CriContainerd {
    version: ContainerdVersion,
    dir: tempfile::TempDir,
    socket_dir: PathBuf,
    address: PathBuf,
    cgroup_parent: String,
    daemon: Option<Child>,
    /// Sandbox and container ids of this instance's pods, for leak checks and cleanup.
    ids: Mutex<Vec<String>>,
}

impl CriContainerd {
    /// Starts containerd and imports the pause and workload images into `k8s.io`.
    ///
    /// With [`Handler::Wren`] the wren shim's directory is prepended to containerd's PATH
    /// (panicking with build advice if the binary is missing); the `runc` handler needs none.
    pub fn start(handler: Handler) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wren-cri-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("wren-cri-")
            .tempdir()
            .expect("temp dir");
        // Unix socket paths are limited to 108 bytes, so they cannot live under a temp dir.
        let socket_dir = Path::new("/run").join(&name);
        fs::create_dir_all(&socket_dir).expect("create socket dir");
        for sub in ["cni-conf", "cni-bin", "images", "pod-logs"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create containerd dirs");
        }
        let mut containerd = Self {
            version: ContainerdVersion::from_env(),
            address: socket_dir.join("containerd.sock"),
            socket_dir,
            cgroup_parent: format!("/{name}"),
            daemon: None,
            ids: Mutex::new(Vec::new()),
            dir,
        };
        containerd.write_config();
        containerd.spawn_daemon(handler);
        containerd.import_images();
        containerd
    }

    /// containerd's gRPC socket, which also serves CRI.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The cgroup parent to give pods, the way kubelet gives each pod its own.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// A directory for pod logs (`log_directory`), which kubelet would create.
    pub fn pod_log_dir(&self, pod: &str) -> PathBuf {
        let dir = self.dir.path().join("pod-logs").join(pod);
        fs::create_dir_all(&dir).expect("create pod log dir");
        dir
    }

    /// containerd's log so far, for assertion messages.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Runs `ctr -n k8s.io args…` against this containerd; panics unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let mut ctr = Command::new(self.version.binary("ctr"));
        ctr.arg("--address")
            .arg(&self.address)
            .args(["--namespace", K8S_NAMESPACE])
            .args(args);
        let output = run_with_deadline(ctr.stdin(Stdio::null()), CTR_DEADLINE);
        assert!(
            output.status.success(),
            "ctr {} failed: {}\n--- containerd log ---\n{}",
            args.join(" "),
            output_text(&output),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
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

    /// Whether containerd is still running (not yet stopped).
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// Where runc keeps `id`'s state when the handler honoured its options' private `Root`.
    pub fn private_runc_state(&self, id: &str) -> PathBuf {
        self.runc_root().join(K8S_NAMESPACE).join(id)
    }

    fn runc_root(&self) -> PathBuf {
        self.socket_dir.join("runc")
    }

    /// The wren handler's options file (its `ConfigPath`).
    fn wren_options(&self) -> PathBuf {
        self.dir.path().join("wren-options.toml")
    }

    fn write_config(&self) {
        let template = match self.version.config_format() {
            ConfigFormat::V2 => include_str!("config.toml"),
            ConfigFormat::V3 => include_str!("config-v3.toml"),
        };
        let config = template
            .replace(
                "@ROOT@",
                &self.dir.path().join("root").display().to_string(),
            )
            .replace(
                "@STATE@",
                &self.dir.path().join("state").display().to_string(),
            )
            .replace("@ADDRESS@", &self.address.display().to_string())
            .replace("@OPT@", &self.dir.path().join("opt").display().to_string())
            .replace(
                "@CNI_CONF@",
                &self.dir.path().join("cni-conf").display().to_string(),
            )
            .replace(
                "@CNI_BIN@",
                &self.dir.path().join("cni-bin").display().to_string(),
            )
            .replace("@RUNC_ROOT@", &self.runc_root().display().to_string())
            .replace("@WREN_OPTIONS@", &self.wren_options().display().to_string())
            .replace("@OCI_RUNTIME@", &oci_runtime())
            .replace("@PAUSE_IMAGE@", PAUSE_IMAGE);
        fs::write(self.dir.path().join("config.toml"), config).expect("write containerd config");
        let wren_options = format!(
            "SystemdCgroup = false\nBinaryName = \"{}\"\nRoot = \"{}\"\n",
            oci_runtime(),
            self.runc_root().display()
        );
        fs::write(self.wren_options(), wren_options).expect("write wren runtime options");
    }

    fn spawn_daemon(&mut self, handler: Handler) {
        let log = fs::File::create(self.dir.path().join("containerd.log"))
            .expect("create containerd log");
        let mut cmd = Command::new(self.version.binary("containerd"));
        cmd.arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null());
        cmd.stdout(log.try_clone().expect("dup log fd")).stderr(log);
        let mut shim_dirs = Vec::new();
        if handler == Handler::Wren {
            let shim = crate::workspace_bin(handler.shim_binary());
            shim_dirs.push(
                shim.parent()
                    .expect("binary has a parent dir")
                    .to_path_buf(),
            );
        }
        cmd.env("PATH", self.version.daemon_path(&shim_dirs));
        self.daemon = Some(cmd.spawn().expect("spawn containerd"));
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let mut ctr = Command::new(self.version.binary("ctr"));
            ctr.arg("--address")
                .arg(&self.address)
                .arg("version")
                .stdin(Stdio::null());
            if run_with_deadline(&mut ctr, CTR_DEADLINE).status.success() {
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

    /// Builds and imports both images, unpacked for the snapshotter CRI uses.
    fn import_images(&self) {
        let pause = ImageRecipe {
            reference: PAUSE_IMAGE,
            entrypoint: &["/bin/sleep", "2147483647"],
        };
        let workload = ImageRecipe {
            reference: WORKLOAD_IMAGE,
            entrypoint: &["/bin/sh"],
        };
        for recipe in [pause, workload] {
            let archive = build_image_archive(&self.dir.path().join("images"), recipe);
            let archive = archive.display().to_string();
            // ctr 2.x imports through the transfer service, which unpacks only for the
            // snapshotters of its own config ("no unpack platforms defined" for `native`);
            // `--local` imports client-side as 1.x does.
            let platforms: &[&str] = match self.version.config_format() {
                ConfigFormat::V2 => &["--all-platforms"],
                ConfigFormat::V3 => &["--local", "--all-platforms"],
            };
            let mut import = vec!["images", "import", "--snapshotter", "native"];
            import.extend(platforms);
            import.push(&archive);
            self.ctr_ok(&import);
        }
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- containerd log ---\n{}", self.log());
        }
        self.stop();
        self.remove_leftovers();
    }
}

/// The OCI runtime both handlers run (their options' `BinaryName`): runc, or the one a test
/// lane asks for with `WREN_TESTS_OCI_RUNTIME` (the cgroup v2 VM lane runs crun too).
fn oci_runtime() -> String {
    std::env::var("WREN_TESTS_OCI_RUNTIME")
        .ok()
        .filter(|binary| !binary.is_empty())
        .unwrap_or_else(|| "runc".to_owned())
}
