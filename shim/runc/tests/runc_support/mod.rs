//! A containerd stand-in for the runc shim's integration tests: it runs
//! `containerd-shim-wren-v2 start` as containerd 2.3 does (BootstrapParams on stdin, a private
//! socket dir), collects events with a ttrpc Events server, hands out bundles, FIFOs and a
//! private runc root, and on drop kills whatever a failed test left running.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

#[path = "../../../tests/events_recorder/mod.rs"]
mod events_recorder;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::empty::Empty;
use protobuf::{Message, MessageField};
use ttrpc::context::Context;
use wren_shim_protocol::bootstrap::BootstrapParams;
use wren_shim_protocol::task::{
    ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, ExecProcessRequest,
    KillRequest, ShutdownRequest, StartRequest, StateRequest, StateResponse, WaitRequest,
    WaitResponse,
};
use wren_shim_protocol::task_ttrpc::TaskClient;
use wren_shim_protocol::types::Envelope;

pub const NAMESPACE: &str = "wren-runc-test";
/// A bound on every wait, so a broken shim fails the test instead of hanging it.
pub const BOUND: Duration = Duration::from_secs(30);

/// One containerd stand-in with its own temp dir, events server and runc root.
pub struct Harness {
    pub tmp: tempfile::TempDir,
    events: Receiver<Envelope>,
    _events_server: events_recorder::EventsServer,
    shims: Vec<u32>,
    logs: Vec<File>,
    /// Environment changes for the shims started from now on (`None` removes a variable).
    pub shim_env: Vec<(String, Option<PathBuf>)>,
}

/// A started shim daemon.
pub struct Shim {
    pub client: TaskClient,
    pub address: String,
    pub pid: u32,
}

impl Shim {
    /// The socket file behind the shim's `unix://` address.
    pub fn socket(&self) -> PathBuf {
        wren_shim_protocol::address::socket_path(&self.address).unwrap()
    }
}

/// A bundle and its id.
pub struct Task {
    pub id: String,
    pub bundle: wren_tests::Bundle,
}

/// The client ends of a process's FIFOs, opened as containerd opens them (before Create).
pub struct Fifos {
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    stdin_writer: Option<File>,
    stdout_reader: File,
    stderr_reader: File,
}

impl Harness {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (events_server, events) =
            events_recorder::serve(&tmp.path().join("containerd.sock.ttrpc"));
        Self {
            tmp,
            events,
            _events_server: events_server,
            shims: Vec::new(),
            logs: Vec::new(),
            shim_env: Vec::new(),
        }
    }

    pub fn address(&self) -> String {
        self.tmp
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.tmp.path().join("s")
    }

    /// The runc `--root` base handed to the shim in the Create options.
    pub fn runc_root(&self) -> PathBuf {
        self.tmp.path().join("runc")
    }

    /// A busybox bundle running `args`, with containerd's `log` FIFO held open.
    pub fn task(&mut self, prefix: &str, args: &[&str]) -> Task {
        let id = wren_tests::unique_id(prefix);
        let dir = self.tmp.path().join(&id);
        let bundle = wren_tests::Bundle::new(&dir, args);
        let log = dir.join("log");
        nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o700)).unwrap();
        let log = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(log)
            .unwrap();
        self.logs.push(log);
        Task { id, bundle }
    }

    fn run(&self, binary: &Path, cwd: &Path, id: &str, action: &[&str], stdin: &[u8]) -> Output {
        let mut command = Command::new(binary);
        for (name, value) in &self.shim_env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .args(["-namespace", NAMESPACE, "-address", &self.address()])
            .args(["-publish-binary", "/usr/bin/containerd", "-id", id])
            .args(action)
            .current_dir(cwd)
            .env(
                "TTRPC_ADDRESS",
                self.tmp.path().join("containerd.sock.ttrpc"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `start` for `task` and connects to the daemon it leaves behind.
    pub fn start_shim(&mut self, task: &Task) -> Shim {
        let mut params = BootstrapParams::new();
        params.instance_id.clone_from(&task.id);
        params.namespace = NAMESPACE.into();
        params.containerd_grpc_address = self.address();
        params.socket_dir = Some(self.socket_dir().display().to_string());
        let stdin = params.write_to_bytes().unwrap();
        let output = self.run(
            &shim_binary(),
            &task.bundle.path,
            &task.id,
            &["start"],
            &stdin,
        );
        assert!(output.status.success(), "start failed: {output:?}");
        assert!(
            output.stderr.is_empty(),
            "start wrote to stderr: {output:?}"
        );
        let address = String::from_utf8(output.stdout).unwrap();
        let client = TaskClient::new(ttrpc::Client::connect(&address).unwrap());
        let mut connect = ConnectRequest::new();
        connect.id.clone_from(&task.id);
        let pid = client.connect(ctx(), &connect).unwrap().shim_pid;
        self.shims.push(pid);
        Shim {
            client,
            address,
            pid,
        }
    }

    /// Runs the `delete` action as containerd does after a shim disconnects.
    pub fn delete_action(&self, task: &Task) -> Output {
        let bundle = task.bundle.path.to_str().unwrap();
        self.run(
            &shim_binary(),
            &task.bundle.path,
            &task.id,
            &["-bundle", bundle, "delete"],
            &[],
        )
    }

    /// FIFOs for one process, opened for reading (and stdin for writing) like containerd.
    pub fn fifos(&self, name: &str, with_stdin: bool) -> Fifos {
        let dir = self.tmp.path().join("fifo");
        std::fs::create_dir_all(&dir).unwrap();
        let make = |stream: &str| {
            let path = dir.join(format!("{name}-{stream}"));
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            path
        };
        let reader = |path: &Path| {
            File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .unwrap()
        };
        let stdout = make("stdout");
        let stderr = make("stderr");
        let stdin = with_stdin.then(|| make("stdin"));
        // O_RDWR never blocks on Linux, and keeps the FIFO writable until we close it.
        let stdin_writer = stdin
            .as_ref()
            .map(|path| File::options().read(true).write(true).open(path).unwrap());
        Fifos {
            stdout_reader: reader(&stdout),
            stderr_reader: reader(&stderr),
            stdin,
            stdout,
            stderr,
            stdin_writer,
        }
    }

    /// The next event, within the bound.
    pub fn next_event(&self) -> Envelope {
        self.events
            .recv_timeout(BOUND)
            .expect("an event within the bound")
    }

    /// The next event, or `None` if none comes within `timeout`.
    pub fn event_within(&self, timeout: Duration) -> Option<Envelope> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Topics (with the process id they concern) up to and including `/tasks/delete` of
    /// `container_id`.
    pub fn events_until_delete(&self, container_id: &str) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        loop {
            let envelope = self.next_event();
            let event = describe(&envelope);
            let done = envelope.topic == "/tasks/delete" && event.1 == container_id;
            seen.push((envelope.topic.clone(), event.0));
            if done {
                return seen;
            }
        }
    }

    /// Waits (bounded) for the shim process to be gone.
    pub fn wait_gone(&mut self, pid: u32) {
        self.shims.retain(|shim| *shim != pid);
        let deadline = Instant::now() + BOUND;
        let pid = Pid::from_raw(i32::try_from(pid).unwrap());
        while kill(pid, None).is_ok() {
            assert!(Instant::now() < deadline, "shim {pid} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills a shim (as if it crashed) and waits for it to be gone.
    pub fn kill_shim(&mut self, pid: u32) {
        let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
        self.wait_gone(pid);
    }

    /// The containers runc still knows in the private root.
    pub fn runc_containers(&self) -> Vec<String> {
        let root = self.runc_root().join(NAMESPACE);
        match std::fs::read_dir(root) {
            Ok(entries) => entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(err) if err.kind() == ErrorKind::NotFound => Vec::new(),
            Err(err) => panic!("read runc root: {err}"),
        }
    }

    /// Mount points below this harness's temp dir.
    pub fn mounts(&self) -> Vec<String> {
        let tmp = self.tmp.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&tmp))
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that the shim left nothing behind: no process, socket, runc container, mount.
    pub fn assert_clean(&mut self, shim: &Shim) {
        self.wait_gone(shim.pid);
        let socket = shim.socket();
        assert!(!socket.exists(), "socket {} left behind", socket.display());
        assert_eq!(
            self.runc_containers(),
            Vec::<String>::new(),
            "runc containers left behind"
        );
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left behind");
    }
}

impl Drop for Harness {
    /// A failed test must not leave shims or containers behind.
    fn drop(&mut self) {
        for pid in &self.shims {
            let _ = kill(
                Pid::from_raw(i32::try_from(*pid).unwrap_or(-1)),
                Signal::SIGKILL,
            );
        }
        let root = self.runc_root().join(NAMESPACE);
        for id in self.runc_containers() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .output();
        }
        for point in self.mounts().iter().rev() {
            let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Fifos {
    /// Everything written to stdout so far (the shim has drained it when Wait returned).
    pub fn stdout(&mut self) -> String {
        read_available(&mut self.stdout_reader)
    }

    pub fn stderr(&mut self) -> String {
        read_available(&mut self.stderr_reader)
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        self.stdin_writer
            .as_mut()
            .expect("a stdin fifo")
            .write_all(data)
            .unwrap();
    }

    /// Closes our stdin writer, as a client detaching would.
    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }
}

fn read_available(file: &mut File) -> String {
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) => panic!("read fifo: {err}"),
        }
    }
    String::from_utf8(out).unwrap()
}

/// (process id, container id) of an event, whatever its type.
fn describe(envelope: &Envelope) -> (String, String) {
    use wren_shim_protocol::events::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskStart,
    };
    let any = envelope.event.as_ref().cloned().unwrap_or_default();
    use wren_shim_protocol::any::unpack;
    match envelope.topic.as_str() {
        "/tasks/create" => {
            let e: TaskCreate = unpack(&any).unwrap();
            (e.container_id.clone(), e.container_id)
        }
        "/tasks/start" => {
            let e: TaskStart = unpack(&any).unwrap();
            (e.container_id.clone(), e.container_id)
        }
        "/tasks/exit" => {
            let e: TaskExit = unpack(&any).unwrap();
            (e.id, e.container_id)
        }
        "/tasks/delete" => {
            let e: TaskDelete = unpack(&any).unwrap();
            (e.container_id.clone(), e.container_id)
        }
        "/tasks/exec-added" => {
            let e: TaskExecAdded = unpack(&any).unwrap();
            (e.exec_id, e.container_id)
        }
        "/tasks/exec-started" => {
            let e: TaskExecStarted = unpack(&any).unwrap();
            (e.exec_id, e.container_id)
        }
        _ => (String::new(), String::new()),
    }
}

pub fn shim_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-wren-v2"))
}

pub fn ctx() -> Context {
    ttrpc::context::with_timeout(i64::try_from(BOUND.as_nanos()).unwrap())
}

pub fn code_of<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> ttrpc::Code {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status.code.enum_value().unwrap(),
        other => panic!("expected an rpc status, got {other:?}"),
    }
}

/// The runtime options pointing runc at the harness's private root.
pub fn runc_options(harness: &Harness) -> Any {
    let mut options = wren_shim_protocol::runc::Options::new();
    options.root = harness.runc_root().display().to_string();
    wren_shim_protocol::any::pack(&options).unwrap()
}

pub fn create_request(harness: &Harness, task: &Task, fifos: Option<&Fifos>) -> CreateTaskRequest {
    let mut create = CreateTaskRequest::new();
    create.id.clone_from(&task.id);
    create.bundle = task.bundle.path.display().to_string();
    if let Some(fifos) = fifos {
        create.stdin = fifos
            .stdin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        create.stdout = fifos.stdout.display().to_string();
        create.stderr = fifos.stderr.display().to_string();
    }
    create.options = MessageField::some(runc_options(harness));
    create
}

pub fn start(shim: &Shim, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
    let mut request = StartRequest::new();
    request.id = id.into();
    request.exec_id = exec_id.into();
    shim.client
        .start(ctx(), &request)
        .map(|response| response.pid)
}

pub fn wait(shim: &Shim, id: &str, exec_id: &str) -> ttrpc::Result<WaitResponse> {
    let mut request = WaitRequest::new();
    request.id = id.into();
    request.exec_id = exec_id.into();
    shim.client.wait(ctx(), &request)
}

pub fn state(shim: &Shim, id: &str, exec_id: &str) -> ttrpc::Result<StateResponse> {
    let mut request = StateRequest::new();
    request.id = id.into();
    request.exec_id = exec_id.into();
    shim.client.state(ctx(), &request)
}

pub fn kill_task(shim: &Shim, id: &str, exec_id: &str, signal: u32) -> ttrpc::Result<Empty> {
    let mut request = KillRequest::new();
    request.id = id.into();
    request.exec_id = exec_id.into();
    request.signal = signal;
    shim.client.kill(ctx(), &request)
}

pub fn delete(shim: &Shim, id: &str, exec_id: &str) -> ttrpc::Result<DeleteResponse> {
    let mut request = DeleteRequest::new();
    request.id = id.into();
    request.exec_id = exec_id.into();
    shim.client.delete(ctx(), &request)
}

/// Exec of `args` in `task`, with the init's process spec otherwise.
pub fn exec(
    shim: &Shim,
    task: &Task,
    exec_id: &str,
    args: &[&str],
    fifos: Option<&Fifos>,
) -> ttrpc::Result<Empty> {
    let mut process = task.bundle.spec["process"].clone();
    process["args"] = serde_json::json!(args);
    let mut spec = Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value = serde_json::to_vec(&process).unwrap();
    let mut request = ExecProcessRequest::new();
    request.id.clone_from(&task.id);
    request.exec_id = exec_id.into();
    request.spec = MessageField::some(spec);
    if let Some(fifos) = fifos {
        request.stdin = fifos
            .stdin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        request.stdout = fifos.stdout.display().to_string();
        request.stderr = fifos.stderr.display().to_string();
    }
    shim.client.exec(ctx(), &request)
}

/// Shutdown; the daemon answers before it exits.
pub fn shutdown(shim: &Shim) {
    if let Err(error) = shim.client.shutdown(ctx(), &ShutdownRequest::new()) {
        panic!("shutdown failed: {error:?}");
    }
}

/// A raw ttrpc request frame for `method` of the task service, on `stream_id`.
pub fn request_frame(service: &str, method: &str, payload: Vec<u8>, stream_id: u32) -> Vec<u8> {
    let mut request = ttrpc::proto::Request::new();
    request.service = service.into();
    request.method = method.into();
    request.payload = payload;
    let body = request.write_to_bytes().unwrap();
    let length = u32::try_from(body.len()).unwrap();
    let mut frame: Vec<u8> = ttrpc::proto::MessageHeader::new_request(stream_id, length).into();
    frame.extend_from_slice(&body);
    frame
}

/// A plain unix socket to the shim, for clients that misbehave.
pub fn raw_connect(shim: &Shim) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(shim.socket()).unwrap()
}

/// The number of descriptors `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}
