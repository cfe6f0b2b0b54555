//! Exec and `Stats` through the shim alone: ttrpc straight to each shim, with neither
//! containerd nor `ctr` in the path, so the shim's own share of those latencies shows.
//!
//! Each shim serves one sleeping container launched the way `wrenctl run -d` launches one
//! (the `wren-manager` library: the `start` action with an events sink at `TTRPC_ADDRESS`,
//! then `Create` and `Start`), from the floor's own spec so that runc does the same work for
//! every subject. The namespace, runc root, bundles, `-address` and events sockets are private
//! to this run; only the shims' own task sockets live where the shims put them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use wren_manager::bundle;
use wren_manager::client::{CreateTask, ExecProcess, ExitInfo, TaskClient, TaskError};
use wren_manager::events::EventSink;
use wren_manager::launch::{ShimConfig, ShimDebug};
use wren_manager::shim::Shim as Daemon;
use wren_manager::shim_log::ShimLog;
use wren_shim_protocol::address::socket_path;
use wren_shim_protocol::runc;
use wren_tests::unique_id;

use super::latency::{against_floor_sleeper, overhead};
use super::{fill_failed, millis, Bench};
use crate::cli::Shim;
use crate::report::{Better, Metric};
use crate::{proc, procfs, sys};

/// How long one RPC (an exec's whole life, for `Wait`) or one cleanup command may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long a sleeper's teardown may take before its shim is SIGKILLed.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Exec of /bin/true and `Stats`, over ttrpc to one sleeper per shim, against `runc exec` and
/// `runc events --stats` on a sleeper run by runc alone.
pub fn exec_and_stats(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let sleepers = Sleepers::start(bench)?;
    let shims: Vec<&Shim> = sleepers.ready.iter().map(|s| s.shim).collect();
    let exec = Metric::new(
        "direct_exec_ms",
        "exec /bin/true, shim alone: Exec→Start→Wait→Delete over ttrpc (floor: `runc exec`)",
        "ms",
        Better::Lower,
    );
    let mut exec = against_floor_sleeper(
        bench,
        &shims,
        exec,
        |id| bench.floor.exec_true_command(id),
        |shim, _| sleepers.of(shim)?.exec_true(),
    )?;
    fill_failed(&mut exec, &sleepers.failed);
    let exec_overhead = overhead(
        &exec,
        "direct_exec_overhead_ms",
        "exec, shim alone: overhead over `runc exec`",
    );
    let stats = Metric::new(
        "direct_stats_ms",
        "`Stats` RPC, shim alone (floor: `runc events --stats`)",
        "ms",
        Better::Lower,
    );
    let mut stats = against_floor_sleeper(
        bench,
        &shims,
        stats,
        |id| bench.floor.stats_command(id),
        |shim, _| sleepers.of(shim)?.stats(),
    )?;
    fill_failed(&mut stats, &sleepers.failed);
    Ok(vec![exec, exec_overhead, stats])
}

/// One sleeper per shim, launched without containerd; all of it is torn down on drop.
#[derive(Debug)]
struct Sleepers<'a> {
    /// Bundles and the runc root live here.
    dir: PathBuf,
    namespace: String,
    /// The shims' `-address`. Nothing listens there: shims only hash it into their socket
    /// name, and it marks their daemons' argv as ours for the cleanup backstop.
    grpc_address: PathBuf,
    /// `Options.root`: the shims' runc state, `<root>/<namespace>/<id>`.
    runc_root: PathBuf,
    ready: Vec<Sleeper<'a>>,
    failed: Vec<(&'a Shim, String)>,
}

impl<'a> Sleepers<'a> {
    /// Starts a sleeper for every shim; a shim whose sleeper fails is kept aside with why.
    fn start(bench: &Bench<'a>) -> Result<Self> {
        let dir = bench.containerd.scratch("direct")?;
        let mut sleepers = Self {
            namespace: format!("{}-direct", bench.containerd.namespace()),
            grpc_address: dir.join("grpc.sock"),
            runc_root: dir.join("runc"),
            dir,
            ready: Vec::new(),
            failed: Vec::new(),
        };
        let shims: &'a [Shim] = bench.shims;
        for shim in shims {
            bench.interrupt.check()?;
            match sleepers.start_one(bench, shim) {
                Ok(sleeper) => sleepers.ready.push(sleeper),
                Err(err) => {
                    eprintln!("{}: direct sleeper failed: {err:#}", shim.name);
                    sleepers.failed.push((shim, format!("{err:#}")));
                }
            }
        }
        Ok(sleepers)
    }

    fn start_one(&self, bench: &Bench<'_>, shim: &'a Shim) -> Result<Sleeper<'a>> {
        let id = unique_id(&format!("direct-{}", shim.name));
        // The Go shim's `delete` action finds the bundle as `<dirname(cwd)>/<id>`.
        let bundle = self.dir.join(&id);
        bench
            .floor
            .write_bundle(&bundle, &id, &["sleep", "86400"])?;
        for sub in ["rootfs", "work"] {
            fs::create_dir_all(bundle.join(sub)).with_context(|| format!("create {sub} dir"))?;
        }
        // Shims publish to TTRPC_ADDRESS and retry while nobody listens; nobody reads here.
        let events = EventSink::bind(
            &bundle.join("events.sock"),
            crossbeam_channel::unbounded().0,
        )
        .context("bind events sink")?;
        let config = ShimConfig {
            binary: shim.binary.clone(),
            namespace: self.namespace.clone(),
            id: id.clone(),
            bundle: bundle.clone(),
            grpc_address: self.grpc_address.clone(),
            events_address: events.path().to_path_buf(),
            publish_binary: PathBuf::from("/usr/bin/containerd"),
            debug: ShimDebug::Off,
        };
        let options = runc::Options {
            root: self.runc_root.display().to_string(),
            ..Default::default()
        };
        let log = bundle.join("shim.log");
        let daemon = Daemon::launch(config.clone(), Some(&options), &ShimLog::File(log.clone()))
            .map_err(|e| with_log(anyhow::Error::new(e).context("launch"), &log))?;
        let mut sleeper = Sleeper {
            shim,
            id,
            grpc_address: self.grpc_address.clone(),
            config,
            daemon: Some(daemon),
            waiter: None,
            exec: ExecProcess::default(),
            _events: events,
        };
        // On failure the half-started sleeper is dropped here, which tears it down.
        sleeper
            .run(&bundle, options)
            .map_err(|e| with_log(e, &log))?;
        Ok(sleeper)
    }

    /// The sleeper of `shim`.
    fn of(&self, shim: &Shim) -> Result<&Sleeper<'a>> {
        self.ready
            .iter()
            .find(|s| s.shim == shim)
            .context("no direct sleeper")
    }
}

impl Drop for Sleepers<'_> {
    fn drop(&mut self) {
        // Sleepers first: each tears its shim down while its bundle still exists.
        self.ready.clear();
        // Backstops for a teardown that failed halfway: daemons, then containers, sockets.
        let address = self.grpc_address.display().to_string();
        let until = Instant::now() + Duration::from_secs(10);
        while kill_shims(&address, |_| true) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let root = self.runc_root.join(&self.namespace);
        for id in sys::dir_names(&root) {
            let mut cmd = Command::new("runc");
            cmd.arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id]);
            if let Err(err) = proc::run_quiet(&mut cmd, DEADLINE) {
                eprintln!("cleanup: runc delete {id}: {err:#}");
            }
        }
        for id in sys::dir_names(&self.dir) {
            let Ok(text) = fs::read_to_string(self.dir.join(id).join("address")) else {
                continue;
            };
            // A killed shim leaves its socket behind; its daemon is gone by now.
            if let Ok(socket) = socket_path(&text) {
                let _ = fs::remove_file(socket);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One shim serving one sleeping container, reached over ttrpc; torn down on drop.
#[derive(Debug)]
struct Sleeper<'a> {
    shim: &'a Shim,
    id: String,
    grpc_address: PathBuf,
    config: ShimConfig,
    daemon: Option<Daemon>,
    waiter: Option<Waiter>,
    /// The exec request every trial sends, bar its exec id.
    exec: ExecProcess,
    /// Declared last so it is dropped last: shims flush their last events during teardown.
    _events: EventSink,
}

impl Sleeper<'_> {
    /// `Create` and `Start` the sleeper, then prepare the exec request and the waiter.
    fn run(&mut self, bundle: &Path, options: runc::Options) -> Result<()> {
        let daemon = self.daemon.as_ref().context("no shim")?;
        let client = daemon.client();
        let create = CreateTask {
            id: self.id.clone(),
            bundle: bundle.to_path_buf(),
            options: Some(options),
            ..Default::default()
        };
        client.create(&create)?;
        client.start(&self.id, "")?;
        // An exec runs the container's own process spec with other args, as `ctr task exec`.
        let mut spec = bundle::read_process(bundle)?;
        spec["args"] = json!(["/bin/true"]);
        self.exec = ExecProcess {
            id: self.id.clone(),
            spec,
            ..Default::default()
        };
        let second = TaskClient::connect(daemon.address(), &self.config.namespace)
            .context("second connection")?;
        self.waiter = Some(Waiter::start(second, self.id.clone())?);
        Ok(())
    }

    fn parts(&self) -> Result<(&TaskClient, &Waiter)> {
        let daemon = self.daemon.as_ref().context("no shim")?;
        let waiter = self.waiter.as_ref().context("no waiter")?;
        Ok((daemon.client(), waiter))
    }

    /// One timed exec of /bin/true: Exec → Start → Wait → Delete, in ms.
    fn exec_true(&self) -> Result<f64> {
        let (client, waiter) = self.parts()?;
        let req = ExecProcess {
            exec_id: unique_id("x"),
            ..self.exec.clone()
        };
        let started = Instant::now();
        client.exec(&req)?;
        // Wait goes out before Start, from another thread on another connection, as
        // containerd's does: `runc exec` takes milliseconds before /bin/true even runs, so
        // the Wait is pending in the shim when the exit comes.
        waiter.begin(&req.exec_id)?;
        if let Err(err) = client.start(&self.id, &req.exec_id) {
            let _ = client.delete(&self.id, &req.exec_id);
            return Err(err.into());
        }
        let exit = waiter.finish()?;
        client.delete(&self.id, &req.exec_id)?;
        let elapsed = started.elapsed();
        if exit.status != 0 {
            bail!("/bin/true exited with status {}", exit.status);
        }
        Ok(millis(elapsed))
    }

    /// One timed `Stats` RPC, in ms.
    fn stats(&self) -> Result<f64> {
        let (client, _) = self.parts()?;
        let started = Instant::now();
        client.stats(&self.id)?;
        Ok(millis(started.elapsed()))
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        // Dropping its sender ends the waiter's thread once no Wait is pending.
        self.waiter = None;
        let Some(daemon) = self.daemon.take() else {
            return;
        };
        let _watchdog = Watchdog::arm(daemon.pid(), &self.grpc_address);
        if let Err(err) = super::kill_and_teardown(daemon, &self.id) {
            eprintln!(
                "cleanup: {} direct sleeper {}: {}",
                self.shim.name, self.id, err
            );
            // The `delete` action kills and deletes the container without the daemon.
            let _ = self.config.delete_action();
        }
    }
}

/// Issues `Wait` from a thread of its own on a connection of its own, so that the call is
/// pending in the shim while the trial's thread starts the process.
#[derive(Debug)]
struct Waiter {
    requests: mpsc::Sender<String>,
    exits: mpsc::Receiver<Result<ExitInfo, TaskError>>,
}

impl Waiter {
    /// Starts the thread; it waits for one exec id at a time of container `id`.
    fn start(client: TaskClient, id: String) -> Result<Self> {
        let (requests, exec_ids) = mpsc::channel::<String>();
        let (exit_tx, exits) = mpsc::channel();
        std::thread::Builder::new()
            .name("direct-wait".into())
            .spawn(move || {
                // Ends once the `Waiter` (the only sender) is dropped.
                for exec_id in exec_ids {
                    if exit_tx.send(client.wait(&id, &exec_id)).is_err() {
                        return;
                    }
                }
            })
            .context("spawn wait thread")?;
        Ok(Self { requests, exits })
    }

    /// Sends `Wait` for `exec_id`.
    fn begin(&self, exec_id: &str) -> Result<()> {
        self.requests
            .send(exec_id.to_owned())
            .map_err(|_| anyhow!("wait thread gone"))
    }

    /// The answer to the last [`Waiter::begin`].
    fn finish(&self) -> Result<ExitInfo> {
        match self.exits.recv_timeout(DEADLINE) {
            Ok(exit) => Ok(exit?),
            Err(RecvTimeoutError::Timeout) => bail!("Wait not answered within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("wait thread gone"),
        }
    }
}

/// SIGKILLs a shim daemon whose teardown outlives [`TEARDOWN_DEADLINE`], so that a hung
/// shim cannot hang the bench (its pending RPCs then fail); disarmed when dropped.
#[derive(Debug)]
struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    fn arm(pid: u32, grpc_address: &Path) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let address = grpc_address.display().to_string();
        let pid = i32::try_from(pid).unwrap_or(-1);
        // Without the thread there is no watchdog; teardown still runs.
        let _ = std::thread::Builder::new()
            .name("direct-watchdog".into())
            .spawn(move || {
                if disarmed.recv_timeout(TEARDOWN_DEADLINE) == Err(RecvTimeoutError::Timeout) {
                    eprintln!("cleanup: shim {pid} still tearing down after {TEARDOWN_DEADLINE:?}");
                    kill_shims(&address, |p| p == pid);
                }
            });
        Self { _disarm: disarm }
    }
}

/// SIGKILLs the live processes run with `-address <address>` (only this group's shims carry
/// it) that `which` selects; returns how many.
fn kill_shims(address: &str, which: impl Fn(i32) -> bool) -> usize {
    let pids: Vec<i32> = procfs::pids_with_args("-address", address)
        .into_iter()
        .filter(|pid| which(*pid))
        .collect();
    for pid in &pids {
        eprintln!("cleanup: killing shim {pid}");
        sys::kill(*pid, libc::SIGKILL);
    }
    pids.len()
}

/// `err`, with the last lines of the shim's log when it wrote any (why a launch failed).
fn with_log(err: anyhow::Error, log: &Path) -> anyhow::Error {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    if tail.trim().is_empty() {
        err
    } else {
        anyhow!("{err:#} (shim log: {tail})")
    }
}
