//! A private namespace, runc root and events socket for benchmarks that drive a shim alone,
//! without containerd, and one freshly launched shim per trial.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use wren_manager::client::CreateTask;
use wren_manager::events::{Event, EventSink};
use wren_manager::launch::{ShimConfig, ShimDebug};
use wren_manager::shim::Shim as Daemon;
use wren_manager::shim_log::ShimLog;
use wren_shim_protocol::runc;
use wren_tests::unique_id;

use super::Bench;
use crate::cli::Shim;
use crate::{proc, sys};

/// How long a clean-up runc call may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// The private namespace, runc root and bundles of this group; removed on drop.
#[derive(Debug)]
pub(super) struct Lab {
    dir: PathBuf,
    namespace: String,
    /// The shims' `-address`: nobody listens; shims hash it into their socket name.
    grpc_address: PathBuf,
    runc_root: PathBuf,
}

impl Lab {
    /// A lab for the group `name`.
    pub(super) fn new(bench: &Bench<'_>, name: &str) -> Result<Self> {
        let dir = bench.containerd.scratch(name)?;
        Ok(Self {
            namespace: format!("{}-{name}", bench.containerd.namespace()),
            grpc_address: dir.join("grpc.sock"),
            runc_root: dir.join("runc"),
            dir,
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Backstop for a trial whose teardown failed: containers left in our runc root.
        let root = self.runc_root.join(&self.namespace);
        for id in sys::dir_names(&root) {
            let mut cmd = std::process::Command::new("runc");
            cmd.arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id]);
            if let Err(err) = proc::run_quiet(&mut cmd, DEADLINE) {
                eprintln!("cleanup: runc delete {id}: {err:#}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One shim launched for one container, with its events; torn down on drop.
pub(super) struct Trial {
    /// The container id.
    pub(super) id: String,
    /// Its bundle.
    pub(super) bundle: PathBuf,
    /// Create's request, with no stdio.
    pub(super) create: CreateTask,
    daemon: Option<Daemon>,
    /// What the shim published.
    pub(super) events: Receiver<Event>,
    /// Dropped after the daemon: shims flush their last events during teardown.
    _sink: EventSink,
}

impl Trial {
    /// Writes a bundle running `args` and launches `shim` for it.
    pub(super) fn launch(lab: &Lab, bench: &Bench<'_>, shim: &Shim, args: &[&str]) -> Result<Self> {
        let id = unique_id(&format!("life-{}", shim.name));
        // The Go shim's `delete` action finds the bundle as `<dirname(cwd)>/<id>`.
        let bundle = lab.dir.join(&id);
        bench.floor.write_bundle(&bundle, &id, args)?;
        for sub in ["rootfs", "work"] {
            fs::create_dir_all(bundle.join(sub)).with_context(|| format!("create {sub} dir"))?;
        }
        let (sender, events) = crossbeam_channel::unbounded();
        let sink = EventSink::bind(&bundle.join("events.sock"), sender).context("events sink")?;
        let config = ShimConfig {
            binary: shim.binary.clone(),
            namespace: lab.namespace.clone(),
            id: id.clone(),
            bundle: bundle.clone(),
            grpc_address: lab.grpc_address.clone(),
            events_address: sink.path().to_path_buf(),
            publish_binary: PathBuf::from("/usr/bin/containerd"),
            debug: ShimDebug::Off,
        };
        let options = runc::Options {
            root: lab.runc_root.display().to_string(),
            ..Default::default()
        };
        let daemon = Daemon::launch(config, Some(&options), &ShimLog::Discard)
            .with_context(|| format!("launch {}", shim.name))?;
        let create = CreateTask {
            id: id.clone(),
            bundle: bundle.clone(),
            options: Some(options),
            ..Default::default()
        };
        Ok(Self {
            id,
            bundle,
            create,
            daemon: Some(daemon),
            events,
            _sink: sink,
        })
    }

    /// The shim.
    pub(super) fn daemon(&self) -> Result<&Daemon> {
        self.daemon.as_ref().context("no shim")
    }
}

impl Drop for Trial {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            if let Err(err) = super::kill_and_teardown(daemon, &self.id) {
                eprintln!("cleanup: lifecycle shim {}: {}", self.id, err);
            }
        }
        let _ = fs::remove_dir_all(&self.bundle);
    }
}
