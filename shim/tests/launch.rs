//! The whole launch protocol, end to end, with the example runtime `process-shim`:
//! `start` as containerd 2.3 runs it (BootstrapParams on stdin), the daemon it leaves
//! behind, the task RPCs over ttrpc, events to a containerd stand-in, Shutdown, `delete`.

mod events_recorder;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protobuf::{Message, MessageField};
use ttrpc::context::Context;
use wren_shim::socket::{socket_address, socket_path};
use wren_shim_protocol::bootstrap::{BootstrapParams, Extension};
use wren_shim_protocol::task::{
    ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, PauseRequest, PidsRequest,
    ShutdownRequest, StartRequest, WaitRequest,
};
use wren_shim_protocol::task_service::{NamedTaskClient, TaskApi};
use wren_shim_protocol::task_ttrpc::TaskClient;
use wren_shim_protocol::types::Envelope;

const NAMESPACE: &str = "wren-test";
const BOUND: Duration = Duration::from_secs(30);

/// A containerd stand-in: a temp dir with an events server, and the shims it started.
struct Containerd {
    tmp: tempfile::TempDir,
    events: Receiver<Envelope>,
    _events_server: events_recorder::EventsServer,
    daemons: Vec<i32>,
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
            daemons: Vec::new(),
        }
    }

    fn address(&self) -> String {
        self.tmp
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }

    fn socket_dir(&self) -> PathBuf {
        self.tmp.path().join("s")
    }

    /// A bundle with `config.json`, and a `log` FIFO held open read-write as containerd does.
    fn bundle(&self, id: &str, group: Option<&str>) -> (PathBuf, File) {
        let dir = self.tmp.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        let mut bundle = wren_tests::Bundle::new(&dir, &["/bin/sh", "-c", "exit 3"]);
        if let Some(group) = group {
            bundle.spec["annotations"] =
                serde_json::json!({ "io.containerd.runc.v2.group": group });
        }
        bundle.save();
        nix::unistd::mkfifo(
            &dir.join("log"),
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        )
        .unwrap();
        let log = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join("log"))
            .unwrap();
        (dir, log)
    }

    fn bootstrap(
        &self,
        id: &str,
        options: Option<protobuf::well_known_types::any::Any>,
    ) -> Vec<u8> {
        let mut params = BootstrapParams::new();
        params.instance_id = id.into();
        params.namespace = NAMESPACE.into();
        params.containerd_grpc_address = self.address();
        params.socket_dir = Some(self.socket_dir().display().to_string());
        if let Some(options) = options {
            let mut extension = Extension::new();
            extension.value = MessageField::some(options);
            params.extensions.push(extension);
        }
        params.write_to_bytes().unwrap()
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

    /// Runs `start` and connects to the address it printed. `start` inherits a stray fd (a
    /// pipe without close-on-exec, as a careless parent might leave), which the daemon must
    /// not keep.
    fn start(&mut self, bundle: &Path, id: &str, stdin: &[u8]) -> (String, TaskClient, u32) {
        let (stray, _stray_write) = nix::unistd::pipe().unwrap();
        let stray_inode =
            std::fs::read_link(format!("/proc/self/fd/{}", stray.as_raw_fd())).unwrap();
        let output = self.run(bundle, id, &["start"], stdin);
        assert!(
            output.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "start wrote to stderr: {output:?}"
        );
        let address = String::from_utf8(output.stdout).unwrap();
        let client = TaskClient::new(ttrpc::Client::connect(&address).unwrap());
        let shim_pid = connect(&client, id).shim_pid;
        self.daemons.push(i32::try_from(shim_pid).unwrap());
        let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{shim_pid}/fd"))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .collect();
        assert!(
            !held.contains(&stray_inode),
            "the daemon kept an inherited fd: {held:?}"
        );
        (address, client, shim_pid)
    }

    fn next_topic(&self) -> String {
        self.events
            .recv_timeout(BOUND)
            .expect("event published")
            .topic
    }
}

impl Drop for Containerd {
    /// A failed test must not leave daemons behind.
    fn drop(&mut self) {
        for pid in &self.daemons {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

fn example_binary() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/process-shim
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("process-shim")
}

fn ctx() -> Context {
    ttrpc::context::with_timeout(BOUND.as_nanos().try_into().unwrap())
}

fn connect(client: &TaskClient, id: &str) -> wren_shim_protocol::task::ConnectResponse {
    let mut request = ConnectRequest::new();
    request.id = id.into();
    client.connect(ctx(), &request).unwrap()
}

fn code_of<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> ttrpc::Code {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status.code.enum_value().unwrap(),
        other => panic!("expected an rpc status, got {other:?}"),
    }
}

fn shutdown(client: &TaskClient) {
    // The daemon may exit before its answer is written: containerd tolerates a closed socket.
    match client.shutdown(ctx(), &ShutdownRequest::new()) {
        Ok(_) | Err(ttrpc::Error::Socket(_) | ttrpc::Error::Others(_)) => {}
        Err(error) => panic!("shutdown failed: {error:?}"),
    }
}

fn wait_gone(containerd: &mut Containerd, pid: u32) {
    // Gone for good: the guard must not signal a recycled pid later.
    containerd
        .daemons
        .retain(|daemon| i64::from(*daemon) != i64::from(pid));
    let deadline = Instant::now() + BOUND;
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    while kill(pid, None).is_ok() {
        assert!(Instant::now() < deadline, "daemon {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn start_serve_shutdown_delete() {
    let mut containerd = Containerd::new();
    let (bundle, mut log) = containerd.bundle("c1", None);
    let (address, client, shim_pid) =
        containerd.start(&bundle, "c1", &containerd.bootstrap("c1", None));

    let expected = socket_path(
        &containerd.socket_dir(),
        &containerd.address(),
        NAMESPACE,
        "c1",
    );
    assert_eq!(address, socket_address(&expected));
    assert_eq!(
        std::fs::read_to_string(bundle.join("address")).unwrap(),
        address
    );
    assert_eq!(mode(&expected), 0o600);
    assert_eq!(mode(&containerd.socket_dir()), 0o700);
    let daemon_score = std::fs::read_to_string(format!("/proc/{shim_pid}/oom_score_adj")).unwrap();
    assert_eq!(
        daemon_score.trim().parse::<i32>().unwrap(),
        (own_oom_score_adj() + 1).min(1000)
    );

    // The daemon's stdio: nothing of start's output pipes, stderr on containerd's log FIFO.
    let fd_target = |fd: u32| std::fs::read_link(format!("/proc/{shim_pid}/fd/{fd}")).unwrap();
    assert_eq!(fd_target(0), Path::new("/dev/null"));
    assert_eq!(fd_target(1), Path::new("/dev/null"));
    assert_eq!(fd_target(2), bundle.join("log"));

    // Connect and Pids work on an empty shim; what the runtime leaves out is Unimplemented.
    assert_eq!(connect(&client, "c1").task_pid, 0);
    let mut pids = PidsRequest::new();
    pids.id = "c1".into();
    assert_eq!(code_of(client.pids(ctx(), &pids)), ttrpc::Code::NOT_FOUND);
    let mut pause = PauseRequest::new();
    pause.id = "c1".into();
    assert_eq!(
        code_of(client.pause(ctx(), &pause)),
        ttrpc::Code::UNIMPLEMENTED
    );
    let v3 = NamedTaskClient::new(ttrpc::Client::connect(&address).unwrap(), TaskApi::V3);
    let mut connect_v3 = ConnectRequest::new();
    connect_v3.id = "c1".into();
    assert_eq!(v3.call(ctx(), &connect_v3).unwrap().shim_pid, shim_pid);

    let task_pid = run_task(&containerd, &client, &bundle);

    // The delete action reports the init pid with 137, as for a shim that died.
    let output = containerd.run(
        &bundle,
        "c1",
        &["-bundle", bundle.to_str().unwrap(), "delete"],
        &[],
    );
    assert!(output.status.success(), "{output:?}");
    let response = DeleteResponse::parse_from_bytes(&output.stdout).unwrap();
    assert_eq!((response.pid, response.exit_status), (task_pid, 137));
    assert!(response.exited_at.seconds > 0);

    let info = containerd.run(&bundle, "c1", &["-info"], &[]);
    assert!(info.status.success(), "{info:?}");
    let info = wren_shim_protocol::types::RuntimeInfo::parse_from_bytes(&info.stdout).unwrap();
    assert_eq!(info.name, "io.containerd.process.v2");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    let version = containerd.run(&bundle, "c1", &["-v"], &[]);
    assert!(String::from_utf8(version.stdout)
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));

    shutdown(&client);
    wait_gone(&mut containerd, shim_pid);
    assert!(!expected.exists(), "socket removed on exit");
    let mut logged = String::new();
    let _ = log.read_to_string(&mut logged);
    assert!(
        logged.contains("level=info msg=\"serving io.containerd.process.v2 as c1\""),
        "{logged}"
    );
}

/// Create, start, wait and delete one task; Shutdown is ignored while it exists.
fn run_task(containerd: &Containerd, client: &TaskClient, bundle: &Path) -> u32 {
    let mut create = CreateTaskRequest::new();
    create.id = "c1".into();
    create.bundle = bundle.display().to_string();
    client.create(ctx(), &create).unwrap();
    let mut start = StartRequest::new();
    start.id = "c1".into();
    let task_pid = client.start(ctx(), &start).unwrap().pid;
    let mut wait = WaitRequest::new();
    wait.id = "c1".into();
    assert_eq!(client.wait(ctx(), &wait).unwrap().exit_status, 3);

    shutdown(client);
    assert_eq!(
        connect(client, "c1").task_pid,
        task_pid,
        "shutdown with a task left is a no-op"
    );

    let mut delete = DeleteRequest::new();
    delete.id = "c1".into();
    let deleted = client.delete(ctx(), &delete).unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (task_pid, 3));
    let topics: Vec<String> = (0..4).map(|_| containerd.next_topic()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    task_pid
}

#[test]
fn stale_socket_replaced_and_group_shares_the_daemon() {
    // Declared first so that it is dropped last, after the guard has killed any daemon.
    let cgroup = shim_cgroup();
    let mut containerd = Containerd::new();
    let expected = socket_path(
        &containerd.socket_dir(),
        &containerd.address(),
        NAMESPACE,
        "pod1",
    );
    // A socket file whose listener is gone, as a SIGKILLed shim leaves it.
    std::fs::create_dir_all(containerd.socket_dir()).unwrap();
    drop(UnixListener::bind(&expected).unwrap());

    let options = cgroup.as_ref().map(|cgroup| {
        let mut options = wren_shim_protocol::runc::Options::new();
        options.shim_cgroup = cgroup.name.clone();
        wren_shim_protocol::any::pack(&options).unwrap()
    });
    let (first, _log1) = containerd.bundle("c1", Some("pod1"));
    let (address, client, shim_pid) =
        containerd.start(&first, "c1", &containerd.bootstrap("c1", options));
    assert_eq!(address, socket_address(&expected));
    if let Some(cgroup) = &cgroup {
        let procs = std::fs::read_to_string(cgroup.path.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|pid| pid == shim_pid.to_string()),
            "{procs}"
        );
    }

    let (second, _log2) = containerd.bundle("c2", Some("pod1"));
    let (again, client2, shim_pid2) =
        containerd.start(&second, "c2", &containerd.bootstrap("c2", None));
    assert_eq!(again, address, "the live daemon is reused");
    assert_eq!(shim_pid2, shim_pid);
    assert_eq!(
        std::fs::read_to_string(second.join("address")).unwrap(),
        address
    );

    drop(client2);
    shutdown(&client);
    wait_gone(&mut containerd, shim_pid);
}

/// A v1 memory cgroup to put the daemon in (root only), removed when dropped.
struct TestCgroup {
    name: String,
    path: PathBuf,
}

fn shim_cgroup() -> Option<TestCgroup> {
    let hierarchy = Path::new("/sys/fs/cgroup/memory");
    if !wren_tests::is_root() || !hierarchy.join("cgroup.procs").exists() {
        wren_tests::skip(
            "shim cgroup part of stale_socket_replaced",
            "needs root and cgroup v1 memory",
        );
        return None;
    }
    let name = wren_tests::unique_id("wren-shim-test");
    let path = hierarchy.join(&name);
    std::fs::create_dir(&path).unwrap();
    Some(TestCgroup {
        name: format!("/{name}"),
        path,
    })
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The daemon has exited by now (or was killed by the Containerd guard).
        let deadline = Instant::now() + BOUND;
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
