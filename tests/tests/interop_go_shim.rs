//! Interop proof for `wren-shim-protocol`: our generated client and events server talk to the
//! real Go shim, `/usr/bin/containerd-shim-runc-v2` from containerd 1.6, over its start protocol.
//!
//! The test plays containerd: it prepares a bundle with a `log` FIFO, runs `start`, hosts the
//! ttrpc Events service at `TTRPC_ADDRESS`, drives a container from Create to Shutdown with
//! `TaskClient`, checks the forwarded events, and finishes with the `delete` action.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use protobuf::well_known_types::empty::Empty;
use protobuf::{Message, MessageField};
use wren_shim_protocol::address::socket_path;
use wren_shim_protocol::any::{pack, unpack};
use wren_shim_protocol::events::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use wren_shim_protocol::events_ttrpc::{create_events, Events, ForwardRequest};
use wren_shim_protocol::runc::Options;
use wren_shim_protocol::task::{
    ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, KillRequest, PidsRequest,
    ShutdownRequest, StartRequest, StateRequest, StateResponse, WaitRequest,
};
use wren_shim_protocol::task_ttrpc::TaskClient;
use wren_shim_protocol::topics;
use wren_shim_protocol::ttrpc::{self, context, Client, Server, TtrpcContext};
use wren_shim_protocol::types::{Envelope, Status};

const GO_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const CONTAINERD: &str = "/usr/bin/containerd";
const RUNC: &str = "/usr/sbin/runc";
const SIGKILL: u32 = 9;
/// Generous bound for anything that waits on the shim; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

/// Forwards every received envelope to the test thread.
#[derive(Debug)]
struct EventSink(Mutex<mpsc::Sender<Envelope>>);

impl Events for EventSink {
    fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let sender = self
            .0
            .lock()
            .map_err(|e| ttrpc::Error::Others(e.to_string()))?;
        // The receiver only disappears when the test is already failing.
        let _ = sender.send(req.envelope.unwrap_or_default());
        Ok(Empty::new())
    }
}

/// Everything one run creates, removed on drop even when an assertion failed halfway.
struct Lab {
    namespace: String,
    id: String,
    /// Bundle, runc root and stdout file.
    dir: tempfile::TempDir,
    /// Short directory under /run for containerd's fake address (unix paths are ≤ 106 bytes).
    run_dir: PathBuf,
    /// The `log` FIFO, held open read-write as containerd does, so the shim's open never blocks.
    log: File,
    events: Option<Server>,
    shim_pid: Option<u32>,
    shim_socket: Option<PathBuf>,
}

impl Lab {
    /// Named after the id as containerd lays bundles out: the 1.6 `delete` action finds its
    /// files at `<dirname(cwd)>/<id>`, not through `-bundle`.
    fn bundle(&self) -> PathBuf {
        self.dir.path().join(&self.id)
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }
    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }
    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }
    fn address(&self) -> String {
        self.run_dir.join("containerd.sock").display().to_string()
    }
    fn ttrpc_address(&self) -> String {
        format!("{}.ttrpc", self.address())
    }

    /// Whatever the shim wrote to its log FIFO so far (for failure messages).
    fn shim_log(&mut self) -> String {
        let mut buf = [0_u8; 64 * 1024];
        let n = self.log.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Runs the Go shim binary with containerd 1.6's argv for `action`.
    fn run_shim_action(&self, action: &str) -> anyhow::Result<Output> {
        let mut cmd = Command::new(GO_SHIM);
        cmd.args(["-namespace", &self.namespace, "-address", &self.address()])
            .args(["-publish-binary", CONTAINERD, "-id", &self.id]);
        if action == "delete" {
            cmd.arg("-bundle").arg(self.bundle());
        }
        cmd.arg(action)
            .env("TTRPC_ADDRESS", self.ttrpc_address())
            .current_dir(self.bundle())
            .stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("run {GO_SHIM} {action}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid.filter(|pid| process_alive(*pid)) {
            // The daemon this test started outlived the test: end it by its pid.
            let pid = libc::pid_t::try_from(pid).unwrap_or(0);
            // SAFETY: kill(2) with a pid we read from our own shim's Connect answer and a
            // valid signal number; it touches no memory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let runc_root = self.runc_root().join(&self.namespace);
        if runc_root.exists() {
            let _ = Command::new(RUNC)
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", &self.id])
                .output();
        }
        if let Some(socket) = &self.shim_socket {
            let _ = fs::remove_file(socket);
        }
        if let Some(server) = self.events.take() {
            server.shutdown();
        }
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state letter follows the parenthesised command name.
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            != Some("Z")
    })
}

fn make_fifo(path: &Path) -> anyhow::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; mkfifo(3)
    // only reads it.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    ensure!(
        rc == 0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Builds the bundle, the log FIFO and the events server; nothing is started yet.
fn prepare() -> anyhow::Result<(Lab, mpsc::Receiver<Envelope>)> {
    let dir = tempfile::tempdir()?;
    let id = wren_tests::unique_id("goshim");
    let bundle = wren_tests::Bundle::new(
        &dir.path().join(&id),
        &["sh", "-c", "echo hello-wren; exec sleep 1000"],
    );
    make_fifo(&bundle.path.join("log"))?;
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.path.join("log"))?;
    let run_dir = PathBuf::from(format!("/run/{}", wren_tests::unique_id("wren-test")));
    fs::create_dir_all(&run_dir)?;
    let mut lab = Lab {
        namespace: wren_tests::unique_id("wren-ns"),
        id,
        dir,
        run_dir,
        log,
        events: None,
        shim_pid: None,
        shim_socket: None,
    };
    let (tx, rx) = mpsc::channel();
    let mut server = Server::new()
        .bind(&format!("unix://{}", lab.ttrpc_address()))?
        .register_service(create_events(Arc::new(EventSink(Mutex::new(tx)))));
    server.start()?;
    lab.events = Some(server);
    Ok((lab, rx))
}

/// `start`: the shim prints its socket address and writes the same to `<bundle>/address`.
fn start_shim(lab: &mut Lab) -> anyhow::Result<String> {
    let out = lab.run_shim_action("start")?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "start failed: {stderr} {stdout} log: {}",
        lab.shim_log()
    );
    ensure!(stderr.is_empty(), "start wrote to stderr: {stderr}");
    let address = stdout.trim().to_owned();
    lab.shim_socket = Some(socket_path(&address)?);
    let written = fs::read_to_string(lab.bundle().join("address"))?;
    ensure!(
        written == address,
        "bundle address {written:?} != printed {address:?}"
    );
    Ok(address)
}

fn ctx() -> context::Context {
    context::with_duration(PATIENCE)
}

fn create_request(lab: &Lab) -> anyhow::Result<CreateTaskRequest> {
    let mut options = Options::new();
    options.root = lab.runc_root().display().to_string();
    let mut req = CreateTaskRequest::new();
    req.id = lab.id.clone();
    req.bundle = lab.bundle().display().to_string();
    req.stdout = format!("file://{}", lab.stdout_path().display());
    // The 1.6 Go shim dereferences a nil stderr pipe (SIGSEGV) for file:// stdout with an
    // empty stderr, so give stderr a file too.
    req.stderr = format!("file://{}", lab.stderr_path().display());
    req.options = MessageField::some(pack(&options)?);
    Ok(req)
}

fn state(client: &TaskClient, lab: &Lab) -> anyhow::Result<StateResponse> {
    let mut req = StateRequest::new();
    req.id = lab.id.clone();
    Ok(client.state(ctx(), &req)?)
}

/// Polls the stdout file until the container's greeting shows up (the copy is asynchronous).
fn await_stdout(lab: &Lab, expected: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = fs::read_to_string(lab.stdout_path()).unwrap_or_default();
        if text.contains(expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("stdout never showed {expected:?}, got {text:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connect, Create, Start, State, Pids: returns the init pid of a running container.
fn create_and_start(client: &TaskClient, lab: &mut Lab) -> anyhow::Result<u32> {
    let mut connect = ConnectRequest::new();
    connect.id = lab.id.clone();
    let connected = client.connect(ctx(), &connect)?;
    ensure!(connected.shim_pid > 0, "connect: {connected:?}");
    lab.shim_pid = Some(connected.shim_pid);

    let created = client.create(ctx(), &create_request(lab)?);
    let created = created.with_context(|| format!("create; shim log: {}", lab.shim_log()))?;
    ensure!(created.pid > 0, "create: {created:?}");
    ensure!(state(client, lab)?.status.enum_value() == Ok(Status::CREATED));

    let mut start = StartRequest::new();
    start.id = lab.id.clone();
    let started = client.start(ctx(), &start)?;
    ensure!(
        started.pid == created.pid,
        "start pid {} != create pid {}",
        started.pid,
        created.pid
    );
    let running = state(client, lab)?;
    ensure!(
        running.status.enum_value() == Ok(Status::RUNNING),
        "state: {running:?}"
    );
    ensure!(running.pid == created.pid && running.bundle == lab.bundle().display().to_string());

    let mut pids = PidsRequest::new();
    pids.id = lab.id.clone();
    let listed = client.pids(ctx(), &pids)?;
    ensure!(
        listed.processes.iter().any(|p| p.pid == created.pid),
        "pids: {listed:?}"
    );
    await_stdout(lab, "hello-wren")?;
    Ok(created.pid)
}

/// Kill, Wait, State, Delete: the container ends by SIGKILL, i.e. exit status 128 + 9.
fn kill_and_delete(client: &TaskClient, lab: &Lab, pid: u32) -> anyhow::Result<()> {
    let mut kill = KillRequest::new();
    kill.id = lab.id.clone();
    kill.signal = SIGKILL;
    client.kill(ctx(), &kill)?;

    let mut wait = WaitRequest::new();
    wait.id = lab.id.clone();
    let waited = client.wait(ctx(), &wait)?;
    ensure!(
        waited.exit_status == 137 && waited.exited_at.is_some(),
        "wait: {waited:?}"
    );

    let stopped = state(client, lab)?;
    ensure!(
        stopped.status.enum_value() == Ok(Status::STOPPED),
        "state: {stopped:?}"
    );
    ensure!(stopped.exit_status == 137, "state: {stopped:?}");

    let mut delete = DeleteRequest::new();
    delete.id = lab.id.clone();
    let deleted = client.delete(ctx(), &delete)?;
    ensure!(
        deleted.pid == pid && deleted.exit_status == 137,
        "delete: {deleted:?}"
    );
    Ok(())
}

/// Shutdown on an empty shim makes the daemon exit; the reply may race the connection close.
fn shutdown(client: &TaskClient, lab: &Lab) -> anyhow::Result<()> {
    let mut req = ShutdownRequest::new();
    req.id = lab.id.clone();
    match client.shutdown(ctx(), &req) {
        Ok(_) | Err(ttrpc::Error::LocalClosed | ttrpc::Error::RemoteClosed) => {}
        Err(other) => bail!("shutdown: {other:?}"),
    }
    let pid = lab.shim_pid.context("no shim pid")?;
    let deadline = Instant::now() + PATIENCE;
    while process_alive(pid) {
        ensure!(
            Instant::now() < deadline,
            "shim {pid} still alive after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The four lifecycle events arrive in order, under the right topics and type URLs.
fn check_events(rx: &mpsc::Receiver<Envelope>, lab: &Lab, pid: u32) -> anyhow::Result<()> {
    let next = |topic: &str, type_url: &str| -> anyhow::Result<Envelope> {
        let envelope = rx
            .recv_timeout(PATIENCE)
            .with_context(|| format!("no {topic} event"))?;
        ensure!(
            envelope.topic == topic,
            "expected {topic}, got {envelope:?}"
        );
        ensure!(
            envelope.event.type_url == type_url,
            "type url of {envelope:?}"
        );
        ensure!(envelope.namespace == lab.namespace && envelope.timestamp.is_some());
        Ok(envelope)
    };
    let create: TaskCreate =
        unpack(&next(topics::TASK_CREATE, "containerd.events.TaskCreate")?.event)?;
    ensure!(
        create.container_id == lab.id && create.pid == pid,
        "{create:?}"
    );
    let start: TaskStart = unpack(&next(topics::TASK_START, "containerd.events.TaskStart")?.event)?;
    ensure!(
        start.container_id == lab.id && start.pid == pid,
        "{start:?}"
    );
    let exit: TaskExit = unpack(&next(topics::TASK_EXIT, "containerd.events.TaskExit")?.event)?;
    ensure!(
        exit.pid == pid && exit.exit_status == 137 && exit.id == lab.id,
        "{exit:?}"
    );
    let delete: TaskDelete =
        unpack(&next(topics::TASK_DELETE, "containerd.events.TaskDelete")?.event)?;
    ensure!(delete.pid == pid && delete.exit_status == 137, "{delete:?}");
    Ok(())
}

/// The `delete` action prints a protobuf `DeleteResponse` for the init process.
fn delete_action(lab: &Lab, pid: u32) -> anyhow::Result<()> {
    let out = lab.run_shim_action("delete")?;
    ensure!(
        out.status.success(),
        "delete action: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = DeleteResponse::parse_from_bytes(&out.stdout)?;
    ensure!(response.pid == pid, "delete action: {response:?}");
    ensure!(
        response.exit_status == 137 && response.exited_at.is_some(),
        "{response:?}"
    );
    Ok(())
}

#[test]
fn go_shim_speaks_our_protocol() {
    wren_tests::require_root!();
    let (mut lab, events) = prepare().unwrap();
    let address = start_shim(&mut lab).unwrap();
    let client = TaskClient::new(Client::connect(&address).unwrap());

    let pid = create_and_start(&client, &mut lab).unwrap();
    kill_and_delete(&client, &lab, pid).unwrap();
    check_events(&events, &lab, pid).unwrap();
    shutdown(&client, &lab).unwrap();
    drop(client);
    delete_action(&lab, pid).unwrap();
    let runc_state = lab.runc_root().join(&lab.namespace).join(&lab.id);
    assert!(
        !runc_state.exists(),
        "runc state left behind: {}",
        runc_state.display()
    );
}
