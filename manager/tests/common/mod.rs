//! Shared set-up for the manager's integration tests: a busybox bundle, an events sink,
//! a launched shim with a private runc root, and FIFO stdio.
// Each test binary uses a part of it.
#![allow(dead_code, unused_macros, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crossbeam_channel::Receiver;
use tempfile::TempDir;
use wren_manager::client::{CreateTask, TaskClient};
use wren_manager::events::{Event, EventSink};
use wren_manager::launch::{ShimConfig, ShimDebug};
use wren_manager::protocol::runc;
use wren_manager::shim::{Shim, Teardown};
use wren_manager::shim_log::ShimLog;
use wren_manager::stdio::{FifoSet, Input, OpenFifos, Output, Pump, StdinMode, Terminal};
use wren_tests::Bundle;

/// Every shim binary the scenarios run against.
/// The shims every scenario runs against: containerd's Go shim, proof that the manager speaks
/// the real protocol, and wren's.
pub fn shims() -> Vec<String> {
    vec![
        "/usr/bin/containerd-shim-runc-v2".to_owned(),
        wren_tests::workspace_bin("containerd-shim-wren-v2")
            .display()
            .to_string(),
    ]
}

/// Generates `every_shim::<scenario>`: one test per scenario function (taking a shim path),
/// run against every shim in [`shims`], so each scenario proves the manager on containerd's Go
/// shim and on wren alike.
macro_rules! test_every_shim {
    ($($scenario:ident),* $(,)?) => {
        mod every_shim {
            $(
                #[test]
                fn $scenario() {
                    wren_tests::require_root!();
                    for shim in super::common::shims() {
                        super::$scenario(&shim);
                    }
                }
            )*
        }
    };
}
pub(crate) use test_every_shim;

/// The namespace tests use.
pub const NAMESPACE: &str = "wren-manager-test";

/// A launched shim with one created (not started) container.
pub struct Session {
    pub tmp: TempDir,
    pub id: String,
    pub bundle: Bundle,
    pub events: Receiver<Event>,
    pub sink: EventSink,
    pub shim: Shim,
    pub runc_root: PathBuf,
    pub fifos: Option<FifoSet>,
}

impl Session {
    /// Launches `shim_bin` for a bundle running `args`; `edit` may change the spec first.
    pub fn launch(shim_bin: &str, args: &[&str], edit: impl FnOnce(&mut Bundle)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let id = wren_tests::unique_id("mgr");
        // The bundle's name is the id: the Go shim's delete action relies on it.
        let mut bundle = Bundle::new(&tmp.path().join(&id), args);
        edit(&mut bundle);
        bundle.save();
        let (tx, events) = crossbeam_channel::unbounded();
        let sink = EventSink::bind(&tmp.path().join("events.sock"), tx).unwrap();
        let config = ShimConfig {
            binary: PathBuf::from(shim_bin),
            namespace: NAMESPACE.into(),
            id: id.clone(),
            bundle: bundle.path.clone(),
            grpc_address: tmp.path().join("wren.sock"),
            events_address: sink.path().to_path_buf(),
            publish_binary: PathBuf::from("/bin/false"),
            debug: ShimDebug::Off,
        };
        let runc_root = tmp.path().join("runc");
        let shim = Shim::launch(
            config,
            Some(&runc_options(&runc_root)),
            &ShimLog::File(tmp.path().join("shim.log")),
        )
        .unwrap();
        Self {
            tmp,
            id,
            bundle,
            events,
            sink,
            shim,
            runc_root,
            fifos: None,
        }
    }

    pub fn client(&self) -> &TaskClient {
        self.shim.client()
    }

    /// Makes FIFOs for `id` and opens our ends.
    pub fn fifos(&self, name: &str, stdin: StdinMode) -> (FifoSet, OpenFifos) {
        let set =
            FifoSet::create(&self.tmp.path().join("fifo"), name, stdin, Terminal::Off).unwrap();
        let open = set.open().unwrap();
        (set, open)
    }

    /// Creates the init with FIFO stdio; returns the opened FIFOs to pump after start.
    pub fn create(&mut self, stdin: StdinMode) -> OpenFifos {
        let (set, open) = self.fifos(&self.id.clone(), stdin);
        let req = CreateTask {
            id: self.id.clone(),
            bundle: self.bundle.path.clone(),
            stdin: path_str(set.stdin.as_deref()),
            stdout: path_str(Some(&set.stdout)),
            stderr: path_str(set.stderr.as_deref()),
            options: Some(runc_options(&self.runc_root)),
            ..Default::default()
        };
        self.client().create(&req).unwrap();
        self.fifos = Some(set);
        open
    }

    /// Starts pumping `open` with captured output; stdin EOF is passed on with CloseIO.
    pub fn pump(&self, open: OpenFifos, input: Input, exec_id: &str) -> Pump {
        let client = self.client().clone();
        let (id, exec_id) = (self.id.clone(), exec_id.to_owned());
        open.pump(input, Output::Capture, Output::Capture, move || {
            let _ = client.close_io(&id, &exec_id);
        })
        .unwrap()
    }

    /// The next event, failing the test instead of hanging forever.
    pub fn next_event(&self) -> Event {
        self.events
            .recv_timeout(Duration::from_secs(60))
            .expect("an event within 60 s")
    }

    /// Tears down and checks that nothing is left behind.
    pub fn teardown_and_check(self) -> Teardown {
        let shim_pidfd = wren_manager::sys::pidfd_open(self.shim.pid()).unwrap();
        let socket = self.shim.address().socket.clone();
        let fifo_dir = self.fifos.as_ref().map(|f| f.dir().to_path_buf());
        let runc_state = self.runc_root.join(NAMESPACE).join(&self.id);
        let result = self.shim.teardown().unwrap();
        assert!(
            wren_manager::sys::wait_exit(&shim_pidfd, Duration::ZERO).unwrap(),
            "shim still running"
        );
        assert!(
            !socket.exists(),
            "shim socket {} left behind",
            socket.display()
        );
        assert!(
            !runc_state.exists(),
            "runc container state {} left behind",
            runc_state.display()
        );
        drop(self.fifos);
        if let Some(dir) = fifo_dir {
            assert!(!dir.exists(), "fifo dir left behind");
        }
        assert!(
            !self.bundle.path.join("log").exists(),
            "log fifo left behind"
        );
        result
    }
}

pub fn runc_options(root: &Path) -> runc::Options {
    runc::Options {
        root: root.display().to_string(),
        ..Default::default()
    }
}

pub fn path_str(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// Runs the `wrenctl` of this build with its state under `state`, stdin closed.
pub fn wrenctl(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wrenctl"))
        .arg("--state")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Command output as text, for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
