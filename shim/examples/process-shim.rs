//! A second, non-runc runtime on the wren shim framework: each task is a plain host process
//! running the bundle's `process.args` (no namespaces, no rootfs). It exists to show what a
//! runtime author writes (a `TaskService` and a `Runtime`, nothing about sockets, reaping
//! or events transport) and to drive the framework's integration tests.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::SystemTime;

use wren_shim::status::{self, Code};
use wren_shim::RequestContext;
use wren_shim::{CleanupContext, Monitor, Publisher, Runtime, ShimContext, TaskService};
use wren_shim_protocol::events::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use wren_shim_protocol::protobuf::well_known_types::empty::Empty;
use wren_shim_protocol::protobuf::MessageField;
use wren_shim_protocol::task::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, KillRequest, PidsRequest,
    PidsResponse, StartRequest, StartResponse, StateRequest, StateResponse, WaitRequest,
    WaitResponse,
};
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::ttrpc;
use wren_shim_protocol::types::{ProcessInfo, Status};

/// Errors of the process runtime.
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error("task {id} not found")]
    NotFound { id: String },
    #[error("task {id} already exists")]
    AlreadyExists { id: String },
    #[error("task {id} is not in a state that allows this")]
    WrongState { id: String },
    #[error("failed to read {path}")]
    ReadSpec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has no process.args")]
    NoArgs { path: PathBuf },
    #[error("failed to open {path}")]
    OpenStdio {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to start task {id}")]
    Spawn {
        id: String,
        source: wren_shim::SpawnError,
    },
    #[error("failed to signal task {id}")]
    Kill { id: String, source: nix::Error },
}

impl ProcessError {
    fn code(&self) -> Code {
        match self {
            ProcessError::NotFound { .. } => Code::NotFound,
            ProcessError::AlreadyExists { .. } => Code::AlreadyExists,
            ProcessError::WrongState { .. } => Code::FailedPrecondition,
            ProcessError::ReadSpec { .. } | ProcessError::NoArgs { .. } => Code::InvalidArgument,
            ProcessError::OpenStdio { .. }
            | ProcessError::Spawn { .. }
            | ProcessError::Kill { .. } => Code::Unknown,
        }
    }
}

impl From<ProcessError> for ttrpc::Error {
    fn from(error: ProcessError) -> Self {
        status::error(error.code(), &error)
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Created,
    Running {
        pid: u32,
    },
    Stopped {
        pid: u32,
        status: u32,
        at: SystemTime,
    },
}

#[derive(Debug)]
struct Task {
    bundle: PathBuf,
    args: Vec<String>,
    /// containerd's stdout and stderr FIFOs (empty: discard).
    stdout: String,
    stderr: String,
    state: State,
}

#[derive(Debug, Default)]
struct Tasks {
    tasks: Mutex<HashMap<String, Task>>,
    exited: Condvar,
}

#[derive(Debug)]
struct ProcessRuntime {
    tasks: Arc<Tasks>,
    publisher: Publisher,
    monitor: Arc<Monitor>,
}

impl ProcessRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.tasks
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish<E: wren_shim_protocol::topics::TaskEvent>(&self, event: &E) {
        if let Err(error) = self.publisher.publish(event) {
            log::error!("{}", status::error_chain(&error));
        }
    }

    fn spawn(&self, id: &str) -> Result<u32, ProcessError> {
        let mut tasks = self.lock();
        let task = tasks
            .get_mut(id)
            .ok_or_else(|| ProcessError::NotFound { id: id.into() })?;
        if !matches!(task.state, State::Created) {
            return Err(ProcessError::WrongState { id: id.into() });
        }
        let mut command = Command::new(&task.args[0]);
        command
            .args(&task.args[1..])
            .stdin(Stdio::null())
            .stdout(output(&task.stdout)?)
            .stderr(output(&task.stderr)?);
        let spawned = self.monitor.spawn(&mut command);
        // The Command holds our copies of the output FIFOs: close them, or the reader never
        // sees EOF after the task exits (and `wrenctl run` or `ctr run` waits for ever).
        drop(command);
        let (child, waiter) = spawned.map_err(|source| ProcessError::Spawn {
            id: id.into(),
            source,
        })?;
        let pid = child.id();
        task.state = State::Running { pid };
        let _ = std::fs::write(task.bundle.join("init.pid"), pid.to_string());
        // TaskStart is queued before the exit watcher can queue TaskExit: start, then exit.
        let mut start = TaskStart::new();
        start.container_id = id.into();
        start.pid = pid;
        self.publish(&start);
        drop(tasks);

        let (tasks, publisher, id) = (
            Arc::clone(&self.tasks),
            self.publisher.clone(),
            id.to_owned(),
        );
        std::thread::spawn(move || {
            let Some(exit) = waiter.wait() else { return };
            let status = u32::try_from(exit.status).unwrap_or(u32::MAX);
            let mut map = tasks.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(task) = map.get_mut(&id) {
                task.state = State::Stopped {
                    pid,
                    status,
                    at: exit.at,
                };
            }
            let mut event = TaskExit::new();
            event.container_id.clone_from(&id);
            event.id = id;
            event.pid = pid;
            event.exit_status = status;
            event.exited_at = MessageField::some(to_timestamp(exit.at));
            let _ = publisher.publish(&event);
            tasks.exited.notify_all();
        });
        Ok(pid)
    }
}

/// An output FIFO opened read-write, so the open never blocks on a reader that has gone.
fn output(path: &str) -> Result<Stdio, ProcessError> {
    if path.is_empty() {
        return Ok(Stdio::null());
    }
    let open = OpenOptions::new().read(true).write(true).open(path);
    let file: File = open.map_err(|source| ProcessError::OpenStdio {
        path: path.into(),
        source,
    })?;
    Ok(Stdio::from(file))
}

fn read_args(bundle: &Path) -> Result<Vec<String>, ProcessError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| ProcessError::ReadSpec {
        path: path.clone(),
        source,
    })?;
    let spec: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .map(|args| {
            args.iter()
                .filter_map(|arg| arg.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if args.is_empty() {
        return Err(ProcessError::NoArgs { path });
    }
    Ok(args)
}

impl TaskService for ProcessRuntime {
    fn task_pid(&self, id: &str) -> Option<u32> {
        match self.lock().get(id)?.state {
            State::Created => Some(0),
            State::Running { pid } | State::Stopped { pid, .. } => Some(pid),
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn create(
        &self,
        _ctx: &RequestContext,
        request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let bundle = PathBuf::from(&request.bundle);
        let args = read_args(&bundle)?;
        let mut tasks = self.lock();
        if tasks.contains_key(&request.id) {
            return Err(ProcessError::AlreadyExists { id: request.id }.into());
        }
        tasks.insert(
            request.id.clone(),
            Task {
                bundle,
                args,
                stdout: request.stdout.clone(),
                stderr: request.stderr.clone(),
                state: State::Created,
            },
        );
        let mut event = TaskCreate::new();
        event.container_id = request.id;
        event.bundle = request.bundle;
        self.publish(&event);
        Ok(CreateTaskResponse::new())
    }

    fn start(&self, _ctx: &RequestContext, request: StartRequest) -> ttrpc::Result<StartResponse> {
        let mut response = StartResponse::new();
        response.pid = self.spawn(&request.id)?;
        Ok(response)
    }

    fn pids(&self, _ctx: &RequestContext, request: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let pid = self
            .task_pid(&request.id)
            .ok_or(ProcessError::NotFound { id: request.id })?;
        let mut response = PidsResponse::new();
        if pid != 0 {
            let mut info = ProcessInfo::new();
            info.pid = pid;
            response.processes.push(info);
        }
        Ok(response)
    }

    /// containerd and ctr ask for the state of every task they show or wait on.
    fn state(&self, _ctx: &RequestContext, request: StateRequest) -> ttrpc::Result<StateResponse> {
        let tasks = self.lock();
        let task = tasks
            .get(&request.id)
            .ok_or_else(|| ProcessError::NotFound {
                id: request.id.clone(),
            })?;
        let mut response = StateResponse::new();
        response.bundle = task.bundle.display().to_string();
        response.stdout.clone_from(&task.stdout);
        response.stderr.clone_from(&task.stderr);
        let (pid, status) = match task.state {
            State::Created => (0, Status::CREATED),
            State::Running { pid } => (pid, Status::RUNNING),
            State::Stopped { pid, status, at } => {
                response.exit_status = status;
                response.exited_at = MessageField::some(to_timestamp(at));
                (pid, Status::STOPPED)
            }
        };
        response.pid = pid;
        response.status = status.into();
        response.id = request.id;
        Ok(response)
    }

    /// Kill on a finished process answers NotFound, as containerd's runc shim does.
    fn kill(&self, _ctx: &RequestContext, request: KillRequest) -> ttrpc::Result<Empty> {
        let tasks = self.lock();
        let not_found = || ProcessError::NotFound {
            id: request.id.clone(),
        };
        let State::Running { pid } = tasks.get(&request.id).ok_or_else(not_found)?.state else {
            return Err(not_found().into());
        };
        let signal = nix::sys::signal::Signal::try_from(i32::try_from(request.signal).unwrap_or(0))
            .map_err(|source| ProcessError::Kill {
                id: request.id.clone(),
                source,
            })?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
        // A pid is only reused after the reaper reaps it, and the exit watcher marks the task
        // stopped right after: the window in which this could reach a stranger is that short.
        nix::sys::signal::kill(pid, signal).map_err(|source| ProcessError::Kill {
            id: request.id.clone(),
            source,
        })?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &RequestContext, request: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let mut tasks = self.lock();
        loop {
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| ProcessError::NotFound {
                    id: request.id.clone(),
                })?;
            if let State::Stopped { status, at, .. } = task.state {
                let mut response = WaitResponse::new();
                response.exit_status = status;
                response.exited_at = MessageField::some(to_timestamp(at));
                return Ok(response);
            }
            tasks = self
                .tasks
                .exited
                .wait(tasks)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn delete(
        &self,
        _ctx: &RequestContext,
        request: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let mut tasks = self.lock();
        let task = tasks
            .get(&request.id)
            .ok_or_else(|| ProcessError::NotFound {
                id: request.id.clone(),
            })?;
        let (pid, status, at) = match task.state {
            State::Running { .. } => return Err(ProcessError::WrongState { id: request.id }.into()),
            State::Created => (0, 0, SystemTime::now()),
            State::Stopped { pid, status, at } => (pid, status, at),
        };
        tasks.remove(&request.id);
        let mut event = TaskDelete::new();
        event.container_id = request.id;
        event.pid = pid;
        event.exit_status = status;
        event.exited_at = MessageField::some(to_timestamp(at));
        self.publish(&event);
        let mut response = DeleteResponse::new();
        response.pid = pid;
        response.exit_status = status;
        response.exited_at = MessageField::some(to_timestamp(at));
        Ok(response)
    }
}

impl Runtime for ProcessRuntime {
    type Error = ProcessError;
    const NAME: &'static str = "io.containerd.process.v2";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(context: ShimContext) -> Result<Self, ProcessError> {
        Ok(ProcessRuntime {
            tasks: Arc::default(),
            publisher: context.publisher,
            monitor: context.monitor,
        })
    }

    /// Nothing outlives the daemon but the pid file: report it, as runc shims report init.pid.
    fn cleanup(context: &CleanupContext) -> Result<u32, ProcessError> {
        let pid = std::fs::read_to_string(context.bundle.join("init.pid")).unwrap_or_default();
        Ok(pid.trim().parse().unwrap_or(0))
    }
}

fn main() -> ExitCode {
    wren_shim::run::<ProcessRuntime>()
}
