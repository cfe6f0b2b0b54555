//! The task state and how a task starts: one supervisor per task, spawned at Start through
//! the framework's monitor, and one thread per task waiting for its exit.

mod rpc;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protobuf::MessageField;
use wren_shim::rootfs::{self, RootfsMount};
use wren_shim::RequestContext;
use wren_shim::{ExitWaiter, Monitor, Publisher, ShutdownReason, TaskService};
use wren_shim_protocol::events::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use wren_shim_protocol::task::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, KillRequest, PidsRequest,
    PidsResponse, StartRequest, StartResponse, StateRequest, StateResponse, WaitRequest,
    WaitResponse,
};
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::types::{ProcessInfo, Status};

use crate::{spec, supervisor, NsboxError, INIT_PID_FILE};

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
    request: CreateTaskRequest,
    /// Whether Create mounted `request.rootfs` on `<bundle>/rootfs`.
    mounted_rootfs: bool,
    /// The spec's namespaces, as `unshare(2)` flags.
    clone_flags: libc::c_int,
    state: State,
}

#[derive(Debug, Default)]
struct Tasks {
    tasks: Mutex<HashMap<String, Task>>,
    exited: Condvar,
}

/// The nsbox task service.
#[derive(Debug)]
pub struct NsBox {
    tasks: Arc<Tasks>,
    publisher: Publisher,
    monitor: Arc<Monitor>,
}

impl NsBox {
    pub fn new(publisher: Publisher, monitor: Arc<Monitor>) -> Self {
        Self {
            tasks: Arc::default(),
            publisher,
            monitor,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        lock(&self.tasks)
    }

    fn publish<E: wren_shim_protocol::topics::TaskEvent>(&self, event: &E) {
        publish(&self.publisher, event);
    }

    fn start_task(&self, id: &str) -> Result<u32, NsboxError> {
        let mut tasks = self.lock();
        let task = find(&mut tasks, id)?;
        if !matches!(task.state, State::Created) {
            return Err(wrong_state(id, task.state));
        }
        let (stdin, stdin_writer) = stdin_pipe(&task.request.stdin)?;
        let mut command = supervisor_command(task, stdin)?;
        let spawned = self.monitor.spawn(&mut command);
        // The Command holds our copies of the output FIFOs and of the stdin pipe's read end:
        // close them, or the readers never see EOF after the task exits.
        drop(command);
        let (child, waiter) = spawned.map_err(|source| NsboxError::Spawn {
            id: id.into(),
            source,
        })?;
        let pid = child.id();
        if let Some(writer) = stdin_writer {
            copy_stdin(PathBuf::from(&task.request.stdin), writer);
        }
        task.state = State::Running { pid };
        let _ = std::fs::write(task.bundle.join(INIT_PID_FILE), pid.to_string());
        // Queued under the lock, before the exit watcher exists: start always precedes exit.
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
        std::thread::spawn(move || watch_exit(&tasks, &publisher, &id, &waiter));
        Ok(pid)
    }

    fn stop_created(&self, task: &mut Task, id: &str, signal: Signal) {
        let at = SystemTime::now();
        let status = 128 + u32::try_from(signal as i32).unwrap_or_default();
        task.state = State::Stopped { pid: 0, status, at };
        self.publish(&exit_event(id, 0, status, at));
        self.tasks.exited.notify_all();
    }
}

fn lock(tasks: &Tasks) -> MutexGuard<'_, HashMap<String, Task>> {
    // Critical sections only read and replace plain values: a poisoned map is still consistent.
    tasks.tasks.lock().unwrap_or_else(PoisonError::into_inner)
}

fn publish<E: wren_shim_protocol::topics::TaskEvent>(publisher: &Publisher, event: &E) {
    if let Err(error) = publisher.publish(event) {
        log::error!("{}", wren_shim::status::error_chain(&error));
    }
}

fn find<'a>(tasks: &'a mut HashMap<String, Task>, id: &str) -> Result<&'a mut Task, NsboxError> {
    tasks
        .get_mut(id)
        .ok_or_else(|| NsboxError::NotFound { id: id.into() })
}

/// nsbox has no execs: any exec id names nothing.
fn no_exec(id: &str, exec_id: &str) -> Result<(), NsboxError> {
    if exec_id.is_empty() {
        return Ok(());
    }
    Err(NsboxError::ExecNotFound {
        id: id.into(),
        exec_id: exec_id.into(),
    })
}

fn wrong_state(id: &str, state: State) -> NsboxError {
    let state = match state {
        State::Created => "not started",
        State::Running { .. } => "running",
        State::Stopped { .. } => "stopped",
    };
    NsboxError::WrongState {
        id: id.into(),
        state,
    }
}

/// `/proc/self/exe __init <bundle>`, in the spec's new namespaces, with `stdin` and the
/// output FIFOs as its stdio (the payload inherits them).
fn supervisor_command(task: &Task, stdin: Stdio) -> Result<Command, NsboxError> {
    // /proc/self/exe is this very binary even if the file was replaced since the daemon started.
    let mut command = Command::new("/proc/self/exe");
    // The daemon's environment is kept (the payload gets the spec's): TTRPC_ADDRESS in it
    // is how containerd-side tooling recognizes a shim's processes.
    command
        .arg(supervisor::MODE)
        .arg(&task.bundle)
        .current_dir(&task.bundle)
        .stdin(stdin)
        .stdout(open_output(&task.request.stdout)?)
        .stderr(open_output(&task.request.stderr)?);
    let clone_flags = task.clone_flags;
    // SAFETY: the closure runs in the forked child before exec and makes a single
    // async-signal-safe syscall, unshare(2), on an integer copied before the fork; it
    // allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || match libc::unshare(clone_flags) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    Ok(command)
}

/// The payload's stdin: a pipe that [`copy_stdin`] fills from the FIFO, or /dev/null.
///
/// Not the FIFO itself: opening it for reading blocks until containerd's writer shows up,
/// and a writer that came and went before Start (`ctr run` with stdin at EOF) never comes
/// back. A thread may block on that; the supervisor must not.
fn stdin_pipe(path: &str) -> Result<(Stdio, Option<File>), NsboxError> {
    if path.is_empty() {
        return Ok((Stdio::null(), None));
    }
    // Both ends CLOEXEC: the supervisor gets the read end through dup2 onto fd 0 only.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| {
        NsboxError::OpenStdio {
            path: path.into(),
            source: errno.into(),
        }
    })?;
    Ok((Stdio::from(read), Some(File::from(write))))
}

/// Copies the stdin FIFO into the payload's pipe until containerd's writer closes it (then
/// the payload sees EOF) or the payload is gone (EPIPE: Rust ignores SIGPIPE).
fn copy_stdin(fifo: PathBuf, mut pipe: File) {
    std::thread::spawn(move || {
        // Blocks until a writer opens the FIFO, or Delete unblocks it (unblock_stdin).
        let Ok(mut reader) = File::open(&fifo) else {
            return;
        };
        let _ = std::io::copy(&mut reader, &mut pipe);
    });
}

/// Ends a [`copy_stdin`] thread still waiting to open the FIFO: a non-blocking open for
/// writing succeeds since it is a reader, and closing at once gives it EOF. When nothing
/// waits, the open fails with ENXIO and nothing happens.
fn unblock_stdin(path: &str) {
    if path.is_empty() {
        return;
    }
    let _ = File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

/// An output FIFO opened read-write, as containerd's shim does: the open never blocks and
/// writes never fail for want of a reader (they wait for one once the pipe is full).
fn open_output(path: &str) -> Result<Stdio, NsboxError> {
    if path.is_empty() {
        return Ok(Stdio::null());
    }
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .map(Stdio::from)
        .map_err(|source| NsboxError::OpenStdio {
            path: path.into(),
            source,
        })
}

fn watch_exit(tasks: &Tasks, publisher: &Publisher, id: &str, waiter: &ExitWaiter) {
    let Some(exit) = waiter.wait() else { return };
    let status = u32::try_from(exit.status).unwrap_or(u32::MAX);
    let pid = u32::try_from(exit.pid).unwrap_or_default();
    let mut map = lock(tasks);
    if let Some(task) = map.get_mut(id) {
        task.state = State::Stopped {
            pid,
            status,
            at: exit.at,
        };
    }
    publish(publisher, &exit_event(id, pid, status, exit.at));
    tasks.exited.notify_all();
}

fn exit_event(id: &str, pid: u32, status: u32, at: SystemTime) -> TaskExit {
    let mut event = TaskExit::new();
    event.container_id = id.into();
    event.id = id.into();
    event.pid = pid;
    event.exit_status = status;
    event.exited_at = MessageField::some(to_timestamp(at));
    event
}
