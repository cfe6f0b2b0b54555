//! Shim start: exec of `<shim> start` to the first answered RPC, without containerd.
//!
//! The start protocol as containerd 1.6 runs it (docs/protocol.md §1.3): cwd = a prepared bundle
//! (`config.json`, `rootfs/`, `work/`, a `log` FIFO already open for reading), argv
//! `-namespace NS -address ADDR -publish-binary BIN -id ID start`, env `GOMAXPROCS=2` and
//! `TTRPC_ADDRESS`, stdin empty, stdout and stderr one pipe read to EOF. The clock stops
//! when the daemon answers `Connect`; the shim is then shut down and reaped from /proc.
//!
//! The floor is `start-floor` (beside this benchmark) run the same way: one exec of a static
//! Rust binary that prints an address, which is as far as any shim's `start` can go without
//! a daemon behind the address.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wren_manager::address::parse_start_output;
use wren_shim_protocol::address::unix_address;
use wren_shim_protocol::task::{ConnectRequest, ShutdownRequest};
use wren_shim_protocol::task_ttrpc::TaskClient;
use wren_shim_protocol::ttrpc;
use wren_tests::unique_id;

use super::latency::overhead;
use super::{fill, millis, Bench, Subject};
use crate::report::{Better, Metric};
use crate::{proc, procfs, sys};

/// How long `start` and the first RPC may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// `<shim> start` to answered `Connect`, interleaved across shims and the floor.
pub fn shim_start(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let dir = bench.containerd.scratch("start")?;
    let floor = floor_binary()?;
    let subjects = bench.subjects();
    let results = bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| {
        let id = unique_id("start");
        let bundle = dir.join(&id);
        bench.floor.write_bundle(&bundle, &id, &["sleep", "1"])?;
        let result = match subject {
            Subject::Floor => floor_once(bench, &floor, &bundle, &id),
            Subject::Shim(shim) => start_once(bench, &shim.binary, &bundle, &id),
        };
        let _ = fs::remove_dir_all(&bundle);
        result
    })?;
    let mut metric = Metric::new(
        "shim_start_ms",
        "shim start: exec `start` → `Connect` answered (floor: exec of a static binary to EOF)",
        "ms",
        Better::Lower,
    );
    fill(&mut metric, &subjects, results);
    let over = overhead(
        &metric,
        "shim_start_overhead_ms",
        "shim start: overhead over one exec",
    );
    Ok(vec![metric, over])
}

/// `start-floor` beside this benchmark (the release build puts both in one directory).
fn floor_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate wren-bench")?;
    let path = exe.with_file_name("start-floor");
    if !path.is_file() {
        bail!("no start-floor beside {}", exe.display());
    }
    Ok(path)
}

/// `start-floor` run as a shim's `start` is, in ms to the EOF of its output.
fn floor_once(bench: &Bench<'_>, floor: &Path, bundle: &Path, id: &str) -> Result<f64> {
    let address = bench.containerd.address();
    let started = Instant::now();
    run_start(floor, bundle, id, address, bench.containerd.namespace())?;
    Ok(millis(started.elapsed()))
}

fn start_once(bench: &Bench<'_>, shim: &Path, bundle: &Path, id: &str) -> Result<f64> {
    fs::create_dir_all(bundle.join("rootfs")).context("create rootfs dir")?;
    fs::create_dir_all(bundle.join("work")).context("create work dir")?;
    sys::mkfifo(&bundle.join("log"), 0o700).context("mkfifo log")?;
    // containerd holds the log FIFO open for reading before it runs `start`.
    let _log = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .context("open log fifo")?;
    let address = bench.containerd.address();
    let started = Instant::now();
    let (socket, output) = run_start(shim, bundle, id, address, bench.containerd.namespace())?;
    let client = ttrpc::Client::connect(&unix_address(&socket))
        .with_context(|| format!("dial {} (start printed {output:?})", socket.display()))?;
    let task = TaskClient::new(client);
    let req = ConnectRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    let resp = task
        .connect(context(bench.containerd.namespace()), &req)
        .context("Connect")?;
    let elapsed = started.elapsed();
    stop_daemon(&task, id, resp.shim_pid, bench.containerd.namespace());
    let _ = fs::remove_file(&socket);
    Ok(millis(elapsed))
}

/// Runs `<shim> … start`; returns the socket path it printed and the raw output.
fn run_start(
    shim: &Path,
    bundle: &Path,
    id: &str,
    address: &Path,
    ns: &str,
) -> Result<(PathBuf, String)> {
    let (read_end, write_end) = sys::pipe().context("pipe")?;
    let mut child = {
        let mut cmd = Command::new(shim);
        cmd.current_dir(bundle)
            .args(["-namespace", ns, "-address"])
            .arg(address)
            .args(["-publish-binary", "/usr/bin/containerd", "-id", id, "start"])
            .env("GOMAXPROCS", "2")
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", address.display()))
            .stdin(Stdio::null())
            .stdout(write_end.try_clone().context("dup pipe")?)
            .stderr(write_end);
        cmd.spawn()
            .with_context(|| format!("spawn {}", shim.display()))?
        // `cmd` drops here with our copies of the write end: EOF comes when the shim's do.
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let result = File::from(read_end).read_to_string(&mut text).map(|_| text);
        let _ = tx.send(result);
    });
    let text = match rx.recv_timeout(DEADLINE) {
        Ok(read) => read.context("read start output")?,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("start output not closed within {DEADLINE:?} (daemon kept stdout/stderr?)");
        }
    };
    let status = proc::wait_deadline(&mut child, DEADLINE).context("wait start")?;
    if !status.success() {
        bail!("start failed ({status}): {}", text.trim());
    }
    let socket = parse_start_output(text.as_bytes())
        .with_context(|| format!("start printed {text:?}"))?
        .socket;
    Ok((socket, text))
}

fn context(namespace: &str) -> ttrpc::context::Context {
    let mut ctx = ttrpc::context::with_duration(DEADLINE);
    ctx.add(
        "containerd-namespace-ttrpc".to_owned(),
        namespace.to_owned(),
    );
    ctx
}

/// Asks the idle daemon to shut down; SIGKILLs it by PID if it is still alive after 5 s.
fn stop_daemon(task: &TaskClient, id: &str, pid: u32, namespace: &str) {
    let req = ShutdownRequest {
        id: id.to_owned(),
        now: true,
        ..Default::default()
    };
    // The daemon may exit before it answers; whether it is gone is checked below.
    let _ = task.shutdown(context(namespace), &req);
    let Ok(pid) = i32::try_from(pid) else { return };
    let until = Instant::now() + Duration::from_secs(5);
    while procfs::is_alive(pid) {
        if Instant::now() > until {
            eprintln!("shim start: daemon {pid} ignored Shutdown; killed");
            sys::kill(pid, libc::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
