//! Shim start: exec of `<shim> start` to the first answered RPC, without containerd.
//!
//! The start protocol as containerd 1.6 runs it (docs/protocol.md §1.3): cwd = a prepared bundle
//! (`config.json`, `rootfs/`, `work/`, a `log` FIFO already open for reading), argv
//! `-namespace NS -address ADDR -publish-binary BIN -id ID start`, env `GOMAXPROCS=2` and
//! `TTRPC_ADDRESS`, stdin empty, stdout and stderr one pipe read to EOF. The clock stops
//! when the daemon answers `Connect`; the shim is then shut down and reaped from /proc.

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

use super::{fill, millis, Bench, Subject};
use crate::cli::Shim;
use crate::report::{Better, Metric};
use crate::{proc, procfs, sys};

/// How long `start` and the first RPC may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// `<shim> start` to answered `Connect`, interleaved across shims.
pub fn shim_start(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let dir = bench.containerd.scratch("start")?;
    let subjects: Vec<Subject<'_>> = bench.shims.iter().map(Subject::Shim).collect();
    let results = bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| {
        let Subject::Shim(shim) = subject else {
            bail!("no floor for shim start")
        };
        let id = unique_id("start");
        let bundle = dir.join(&id);
        bench.floor.write_bundle(&bundle, &id, &["sleep", "1"])?;
        let result = start_once(bench, shim, &bundle, &id);
        let _ = fs::remove_dir_all(&bundle);
        result
    })?;
    let mut metric = Metric::new(
        "shim_start_ms",
        "shim start: exec `start` → `Connect` answered",
        "ms",
        Better::Lower,
    );
    fill(&mut metric, &subjects, results);
    Ok(vec![metric])
}

fn start_once(bench: &Bench<'_>, shim: &Shim, bundle: &Path, id: &str) -> Result<f64> {
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
    shim: &Shim,
    bundle: &Path,
    id: &str,
    address: &Path,
    ns: &str,
) -> Result<(PathBuf, String)> {
    let (read_end, write_end) = sys::pipe().context("pipe")?;
    let mut child = {
        let mut cmd = Command::new(&shim.binary);
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
            .with_context(|| format!("spawn {}", shim.binary.display()))?
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
