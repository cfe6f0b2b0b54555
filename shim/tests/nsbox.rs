//! The example runtime `containerd-shim-nsbox-v2` through the real start protocol: a task in
//! fresh namespaces with its stdout on a FIFO, exit codes, Kill, events in order,
//! Unimplemented for what it leaves out, and nothing left behind. Also checks that the
//! code `docs/guide.md` quotes is still in the examples.

mod events_recorder;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{mkfifo, Pid};
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;
use ttrpc::context::Context;
use wren_shim_protocol::bootstrap::BootstrapParams;
use wren_shim_protocol::task::{
    ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, ExecProcessRequest,
    KillRequest, PauseRequest, PidsRequest, ShutdownRequest, StartRequest, StateRequest,
    WaitRequest,
};
use wren_shim_protocol::task_ttrpc::TaskClient;
use wren_shim_protocol::types::{Envelope, Status};

const NAMESPACE: &str = "wren-nsbox-test";
const BOUND: Duration = Duration::from_secs(30);

/// A containerd stand-in: a temp dir with an events server, and the daemon it started.
struct Containerd {
    tmp: tempfile::TempDir,
    events: Receiver<Envelope>,
    _events_server: events_recorder::EventsServer,
    daemon: Option<i32>,
}

impl Containerd {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (events_server, events) =
            events_recorder::serve(&tmp.path().join("containerd.sock.ttrpc"));
        Self {
            tmp,
            events,
            _events_server: events_server,
            daemon: None,
        }
    }

    fn address(&self) -> String {
        self.tmp
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }

    /// A busybox bundle running `sh -c script` (hostname `wren`; pid, ipc, uts and mount
    /// namespaces), with a stdout FIFO whose reader collects everything until EOF.
    fn bundle(&self, id: &str, script: &str) -> (PathBuf, String, FifoReader) {
        let dir = self.tmp.path().join(id);
        wren_tests::Bundle::new(&dir, &["sh", "-c", script]);
        let stdout = dir.join("stdout");
        mkfifo(&stdout, Mode::from_bits_truncate(0o600)).unwrap();
        let reader = FifoReader::open(stdout.clone());
        (dir, stdout.display().to_string(), reader)
    }

    fn run(&self, bundle: &Path, id: &str, action: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(example_binary())
            .args(["-namespace", NAMESPACE, "-address", &self.address()])
            .args(["-publish-binary", "/usr/bin/containerd", "-id", id])
            .args(action)
            .current_dir(bundle)
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

    /// Runs `start` as containerd 2.3 does (BootstrapParams on stdin) and connects.
    fn start(&mut self, bundle: &Path, id: &str) -> (String, TaskClient, u32) {
        let mut params = BootstrapParams::new();
        params.instance_id = id.into();
        params.namespace = NAMESPACE.into();
        params.containerd_grpc_address = self.address();
        params.socket_dir = Some(self.tmp.path().join("s").display().to_string());
        let output = self.run(bundle, id, &["start"], &params.write_to_bytes().unwrap());
        assert!(output.status.success(), "start failed: {output:?}");
        assert!(
            output.stderr.is_empty(),
            "start wrote to stderr: {output:?}"
        );
        let address = String::from_utf8(output.stdout).unwrap();
        let client = TaskClient::new(ttrpc::Client::connect(&address).unwrap());
        let mut connect = ConnectRequest::new();
        connect.id = id.into();
        let shim_pid = client.connect(ctx(), &connect).unwrap().shim_pid;
        self.daemon = Some(i32::try_from(shim_pid).unwrap());
        (address, client, shim_pid)
    }

    fn topics(&self, count: usize) -> Vec<String> {
        let next = || {
            self.events
                .recv_timeout(BOUND)
                .expect("event published")
                .topic
        };
        (0..count).map(|_| next()).collect()
    }
}

impl Drop for Containerd {
    /// A failed test must not leave the daemon behind (its tasks die with it).
    fn drop(&mut self) {
        if let Some(pid) = self.daemon {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

/// Reads a FIFO to EOF on a thread, as containerd's copy loop does.
struct FifoReader {
    lines: Receiver<String>,
    done: JoinHandle<()>,
}

impl FifoReader {
    fn open(path: PathBuf) -> Self {
        let (tx, lines) = crossbeam_channel::unbounded();
        let done = std::thread::spawn(move || {
            // Blocks until the daemon opens its end at Start.
            let fifo = BufReader::new(File::open(path).unwrap());
            for line in fifo.lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        Self { lines, done }
    }

    fn next_line(&self) -> String {
        self.lines.recv_timeout(BOUND).expect("a line on stdout")
    }

    /// Everything left, once every writer has closed.
    fn rest(self) -> Vec<String> {
        self.done.join().unwrap();
        self.lines.try_iter().collect()
    }
}

fn example_binary() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    profile.join("examples").join("containerd-shim-nsbox-v2")
}

fn ctx() -> Context {
    ttrpc::context::with_timeout(BOUND.as_nanos().try_into().unwrap())
}

fn code_of<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> ttrpc::Code {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status.code.enum_value().unwrap(),
        other => panic!("expected an rpc status, got {other:?}"),
    }
}

fn create_start(client: &TaskClient, id: &str, bundle: &Path, stdout: &str) -> u32 {
    let mut create = CreateTaskRequest::new();
    create.id = id.into();
    create.bundle = bundle.display().to_string();
    create.stdout = stdout.into();
    client.create(ctx(), &create).unwrap();
    let mut start = StartRequest::new();
    start.id = id.into();
    client.start(ctx(), &start).unwrap().pid
}

fn wait(client: &TaskClient, id: &str) -> u32 {
    let mut wait = WaitRequest::new();
    wait.id = id.into();
    client.wait(ctx(), &wait).unwrap().exit_status
}

fn signal(client: &TaskClient, id: &str, signal: Signal) -> ttrpc::Result<Empty> {
    let mut kill = KillRequest::new();
    kill.id = id.into();
    kill.signal = u32::try_from(signal as i32).unwrap();
    client.kill(ctx(), &kill)
}

fn delete(client: &TaskClient, id: &str) -> DeleteResponse {
    let mut delete = DeleteRequest::new();
    delete.id = id.into();
    client.delete(ctx(), &delete).unwrap()
}

/// Polls (bounded) until no process has `marker` in its command line.
fn assert_no_process_with(marker: &str) {
    let deadline = Instant::now() + BOUND;
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.contains(marker))
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {alive:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + BOUND;
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    while kill(pid, None).is_ok() {
        assert!(Instant::now() < deadline, "daemon {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runs_in_namespaces_and_reports_exit() {
    wren_tests::require_root!();
    let mut containerd = Containerd::new();
    let script = "hostname; echo $$; exit 42";
    let (bundle, stdout, reader) = containerd.bundle("c1", script);
    let (address, client, shim_pid) = containerd.start(&bundle, "c1");

    let pid = create_start(&client, "c1", &bundle, &stdout);
    assert_eq!(wait(&client, "c1"), 42);
    // The spec's hostname proves the uts namespace, $$ = 1 the pid namespace.
    assert_eq!(reader.rest(), ["wren", "1"]);

    let mut state = StateRequest::new();
    state.id = "c1".into();
    let state = client.state(ctx(), &state).unwrap();
    assert_eq!(state.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!((state.pid, state.exit_status), (pid, 42));
    let mut pids = PidsRequest::new();
    pids.id = "c1".into();
    assert!(client.pids(ctx(), &pids).unwrap().processes.is_empty());
    let code = code_of(signal(&client, "c1", Signal::SIGTERM));
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "already finished");
    let deleted = delete(&client, "c1");
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 42));
    let create_to_delete = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert_eq!(containerd.topics(4), create_to_delete);

    unsupported_rpcs_are_unimplemented(&client);
    kill_reaches_the_payload(&containerd, &client);

    // The delete action is idempotent: the task is gone already.
    let action = ["-bundle", bundle.to_str().unwrap(), "delete"];
    let output = containerd.run(&bundle, "c1", &action, &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        DeleteResponse::parse_from_bytes(&output.stdout)
            .unwrap()
            .pid,
        0
    );

    let _ = client.shutdown(ctx(), &ShutdownRequest::new());
    wait_gone(shim_pid);
    containerd.daemon = None;
    let socket = wren_shim_protocol::address::socket_path(&address).unwrap();
    assert!(!socket.exists(), "socket removed on exit");
    let tmp = containerd.tmp.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&tmp),
        "no mount leaks into the host: {mounts}"
    );
}

fn unsupported_rpcs_are_unimplemented(client: &TaskClient) {
    let mut pause = PauseRequest::new();
    pause.id = "c1".into();
    assert_eq!(
        code_of(client.pause(ctx(), &pause)),
        ttrpc::Code::UNIMPLEMENTED
    );
    let mut exec = ExecProcessRequest::new();
    exec.id = "c1".into();
    exec.exec_id = "e1".into();
    assert_eq!(
        code_of(client.exec(ctx(), &exec)),
        ttrpc::Code::UNIMPLEMENTED
    );
}

/// SIGTERM is forwarded to the payload (pid 1 of its namespace, so only a trapped signal
/// counts); SIGKILL takes the supervisor and, through it, the whole namespace down.
fn kill_reaches_the_payload(containerd: &Containerd, client: &TaskClient) {
    let marker = wren_tests::unique_id("nsbox-marker");
    let trapped = format!("trap 'exit 7' TERM; echo ready; sleep 1000 & wait; : {marker}");
    let (bundle, stdout, reader) = containerd.bundle("c2", &trapped);
    create_start(client, "c2", &bundle, &stdout);
    assert_eq!(reader.next_line(), "ready", "the trap is set");
    signal(client, "c2", Signal::SIGTERM).unwrap();
    assert_eq!(wait(client, "c2"), 7);
    delete(client, "c2");

    let (bundle, stdout, reader) =
        containerd.bundle("c3", &format!("echo ready; sleep 1000; : {marker}"));
    let pid = create_start(client, "c3", &bundle, &stdout);
    let mut pids = PidsRequest::new();
    pids.id = "c3".into();
    let listed = client.pids(ctx(), &pids).unwrap().processes;
    assert_eq!(listed.iter().map(|p| p.pid).collect::<Vec<_>>(), [pid]);
    assert_eq!(reader.next_line(), "ready");
    signal(client, "c3", Signal::SIGKILL).unwrap();
    assert_eq!(wait(client, "c3"), 137);
    assert!(reader.rest().is_empty(), "stdout reaches EOF");
    delete(client, "c3");
    assert_no_process_with(&marker);
    let lifecycle = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert_eq!(containerd.topics(8), [lifecycle, lifecycle].concat());
}

/// `docs/guide.md` quotes the examples (`<!-- quoted from <path> -->` then a rust block):
/// each quote must still appear verbatim in its file, so the guide cannot rot.
#[test]
fn guide_quotes_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("docs/guide.md")).unwrap();
    let mut quotes = 0;
    for part in guide.split("<!-- quoted from ").skip(1) {
        let (path, rest) = part
            .split_once(" -->\n```rust\n")
            .expect("a rust block follows");
        let (quote, _) = rest.split_once("\n```").expect("the block ends");
        let source = std::fs::read_to_string(root.join(path)).unwrap();
        assert!(
            source.contains(quote),
            "{path} no longer contains:\n{quote}"
        );
        quotes += 1;
    }
    assert!(quotes >= 5, "the guide quotes the examples");
}
