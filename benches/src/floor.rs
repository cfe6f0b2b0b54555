//! `runc` alone: the floor every shim's numbers are compared against.
//!
//! Containers run from the same busybox rootfs with the spec `ctr` itself would generate
//! (`ctr oci spec`: same namespaces, mounts, masked paths), under a private runc root and
//! cgroups `/<namespace>/<id>`, as `ctr` places them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::containerd::remove_cgroups;
use crate::proc;

/// How long one runc call may take.
const RUNC_DEADLINE: Duration = Duration::from_secs(60);

/// runc with a private root; deletes its containers on drop.
#[derive(Debug)]
pub struct Floor {
    dir: PathBuf,
    root: PathBuf,
    rootfs: PathBuf,
    namespace: String,
    base_spec: Value,
}

impl Floor {
    /// Prepares a private runc root under `dir`, running containers from `rootfs`.
    pub fn new(dir: &Path, rootfs: &Path, namespace: &str) -> Result<Self> {
        let text = proc::output(Command::new("ctr").args(["oci", "spec"]), RUNC_DEADLINE)?;
        let base_spec = serde_json::from_str(&text).context("parse `ctr oci spec`")?;
        let root = dir.join("runc-root");
        fs::create_dir_all(&root).context("create runc root")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            root,
            rootfs: rootfs.to_path_buf(),
            namespace: namespace.to_owned(),
            base_spec,
        })
    }

    /// Writes a bundle for container `id` running `args`; returns its directory.
    pub fn bundle(&self, id: &str, args: &[&str]) -> Result<PathBuf> {
        let bundle = self.dir.join("bundles").join(id);
        self.write_bundle(&bundle, id, args)?;
        Ok(bundle)
    }

    /// Writes `config.json` for container `id` running `args` into `bundle` (created).
    pub fn write_bundle(&self, bundle: &Path, id: &str, args: &[&str]) -> Result<()> {
        fs::create_dir_all(bundle).context("create bundle dir")?;
        let mut spec = self.base_spec.clone();
        spec["root"] = json!({"path": self.rootfs, "readonly": false});
        spec["process"]["args"] = json!(args);
        spec["process"]["env"] = json!(["PATH=/bin"]);
        spec["process"]["terminal"] = json!(false);
        spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", self.namespace));
        let text = serde_json::to_vec_pretty(&spec).context("encode spec")?;
        fs::write(bundle.join("config.json"), text).context("write config.json")
    }

    /// `runc --root <private> <args…>`, stdin null.
    pub fn runc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `runc run --bundle <bundle> <id>` (foreground: create, start, wait, delete).
    pub fn run_command(&self, bundle: &Path, id: &str) -> Command {
        let mut cmd = self.runc(&["run", "--bundle"]);
        cmd.arg(bundle).arg(id);
        cmd
    }

    /// `runc exec <id> /bin/true`: the floor of every exec measured through a shim.
    pub fn exec_true_command(&self, id: &str) -> Command {
        self.runc(&["exec", id, "/bin/true"])
    }

    /// `runc events --stats <id>`: the floor of every stats call measured through a shim.
    pub fn stats_command(&self, id: &str) -> Command {
        self.runc(&["events", "--stats", id])
    }

    /// Starts a detached `sleep` container `id` (all stdio on /dev/null).
    pub fn start_sleeper(&self, id: &str) -> Result<()> {
        let bundle = self.bundle(id, &["sleep", "86400"])?;
        let mut cmd = self.runc(&["run", "-d", "--bundle"]);
        cmd.arg(bundle).arg(id).stdout(Stdio::null());
        proc::run_timed(&mut cmd, RUNC_DEADLINE).map(drop)
    }

    /// Kills and deletes container `id`.
    pub fn remove(&self, id: &str) -> Result<()> {
        proc::run_quiet(&mut self.runc(&["delete", "--force", id]), RUNC_DEADLINE)
    }

    fn containers(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        for id in self.containers() {
            if let Err(err) = self.remove(&id) {
                eprintln!("cleanup: runc delete {id}: {err:#}");
            }
        }
        remove_cgroups(&self.namespace);
    }
}
