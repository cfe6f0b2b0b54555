//! A private containerd with its CRI plugin enabled, as a kubelet's node would run it: the
//! release `WREN_CONTAINERD` names (1.6 or 2.1 in CI; see [`crate::version`]).
//!
//! Unlike [`crate::Containerd`] (CRI disabled, containers from `ctr run --rootfs`), this one
//! serves `runtime.v1.RuntimeService` and `ImageService` on its socket, stores images with
//! the `native` snapshotter (it needs no kernel feature and no tool) and configures two
//! RuntimeClass handlers: `runc` (containerd's Go shim) and `wren` (this workspace's shim).
//! Pods use the host network, so no CNI plugin is needed; the CNI dirs point at empty dirs.
//!
//! Everything it owns is private: a [`Daemon`] (root, state and logs under a temp dir, the
//! socket under `/run/wren-cri-<pid>-<n>/`), the runc root beside that socket, and the cgroup
//! parent `/wren-cri-<pid>-<n>`. Dropping it stops containerd by PID and removes what is left.

mod image;
mod leaks;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

pub use image::{build_image_archive, ImageRecipe};

use crate::containerd::{
    or_panic, output_text, run_with_deadline, Daemon, Settings, CTR_DEADLINE, STATE_DEADLINE,
};
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
    daemon: Daemon,
    cgroup_parent: String,
    /// Sandbox and container ids of this instance's pods, for leak checks and cleanup.
    ids: Mutex<Vec<String>>,
}

impl CriContainerd {
    /// Starts containerd and imports the pause and workload images into `k8s.io`.
    ///
    /// With [`Handler::Wren`] the wren shim's directory is prepended to containerd's PATH
    /// (panicking with build advice if the binary is missing); the `runc` handler needs none.
    pub fn start(handler: Handler) -> Self {
        let mut daemon = or_panic(Daemon::new("wren-cri", ContainerdVersion::from_env()));
        for sub in ["cni-conf", "cni-bin", "images", "pod-logs"] {
            fs::create_dir_all(daemon.dir().join(sub)).expect("create containerd dirs");
        }
        let name = daemon.run_dir().file_name().expect("a named run dir");
        let cgroup_parent = format!("/{}", name.to_string_lossy());
        let mut shim_dirs = Vec::new();
        if handler == Handler::Wren {
            let shim = crate::workspace_bin(handler.shim_binary());
            shim_dirs.push(
                shim.parent()
                    .expect("binary has a parent dir")
                    .to_path_buf(),
            );
        }
        let settings = Settings {
            cri: Some(cri_tables(&daemon)),
            debug_log: true,
            shim_dirs,
            ready_within: STATE_DEADLINE,
        };
        or_panic(daemon.start(&settings));
        let containerd = Self {
            daemon,
            cgroup_parent,
            ids: Mutex::new(Vec::new()),
        };
        containerd.import_images();
        containerd
    }

    /// containerd's gRPC socket, which also serves CRI.
    pub fn address(&self) -> &Path {
        self.daemon.address()
    }

    /// The cgroup parent to give pods, the way kubelet gives each pod its own.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// A directory for pod logs (`log_directory`), which kubelet would create.
    pub fn pod_log_dir(&self, pod: &str) -> PathBuf {
        let dir = self.daemon.dir().join("pod-logs").join(pod);
        fs::create_dir_all(&dir).expect("create pod log dir");
        dir
    }

    /// The end of containerd's log so far, for assertion messages.
    pub fn log(&self) -> String {
        self.daemon.log_tail(60)
    }

    /// Runs `ctr -n k8s.io args…` against this containerd; panics unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let mut ctr = self.daemon.ctr(K8S_NAMESPACE);
        let output = run_with_deadline(ctr.args(args).stdin(Stdio::null()), CTR_DEADLINE);
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
        self.daemon.stop();
    }

    /// Whether containerd is still running (not yet stopped).
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// Where runc keeps `id`'s state when the handler honoured its options' private `Root`.
    pub fn private_runc_state(&self, id: &str) -> PathBuf {
        self.runc_root().join(K8S_NAMESPACE).join(id)
    }

    fn runc_root(&self) -> PathBuf {
        runc_root(&self.daemon)
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
            let archive = build_image_archive(&self.daemon.dir().join("images"), recipe);
            let archive = archive.display().to_string();
            // ctr 2.x imports through the transfer service, which unpacks only for the
            // snapshotters of its own config ("no unpack platforms defined" for `native`);
            // `--local` imports client-side as 1.x does.
            let platforms: &[&str] = match self.daemon.version().config_format() {
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

/// The CRI plugin's tables for `daemon`'s release (`config.toml` beside this file for 1.x,
/// `config-v3.toml` for 2.x); also writes the wren handler's options file they name.
fn cri_tables(daemon: &Daemon) -> String {
    let dir = daemon.dir();
    let wren_options = dir.join("wren-options.toml");
    let options = format!(
        "SystemdCgroup = false\nBinaryName = \"{}\"\nRoot = \"{}\"\n",
        oci_runtime(),
        runc_root(daemon).display()
    );
    fs::write(&wren_options, options).expect("write wren runtime options");
    let template = match daemon.version().config_format() {
        ConfigFormat::V2 => include_str!("config.toml"),
        ConfigFormat::V3 => include_str!("config-v3.toml"),
    };
    template
        .replace("@CNI_CONF@", &dir.join("cni-conf").display().to_string())
        .replace("@CNI_BIN@", &dir.join("cni-bin").display().to_string())
        .replace("@RUNC_ROOT@", &runc_root(daemon).display().to_string())
        .replace("@WREN_OPTIONS@", &wren_options.display().to_string())
        .replace("@OCI_RUNTIME@", &oci_runtime())
        .replace("@PAUSE_IMAGE@", PAUSE_IMAGE)
}

/// The private runc root both handlers are given, beside containerd's socket.
fn runc_root(daemon: &Daemon) -> PathBuf {
    daemon.run_dir().join("runc")
}

/// The OCI runtime both handlers run (their options' `BinaryName`): runc, or the one a test
/// lane asks for with `WREN_TESTS_OCI_RUNTIME` (the cgroup v2 VM lane runs crun too).
fn oci_runtime() -> String {
    std::env::var("WREN_TESTS_OCI_RUNTIME")
        .ok()
        .filter(|binary| !binary.is_empty())
        .unwrap_or_else(|| "runc".to_owned())
}
