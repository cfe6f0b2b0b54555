//! The task service: containerd's tasks and execs, each a process in the pod's VM.
//!
//! State lives in one table (task id -> container, exec id -> process). Every process's
//! exit comes from the guest: a thread per started process keeps a WaitProcess call open,
//! then waits for its output to drain, then records the exit and publishes `TaskExit`.
//! `TaskStart` is queued before that thread exists, so events stay in order.

mod rpc;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use protobuf::MessageField;
use wren_shim::{Monitor, Publisher};
use wren_shim_protocol::events::TaskExit;
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::vm_agent::{AgentClient, ProcessRef};

use crate::config::Config;
use crate::error::VmShimError;
use crate::stdio::{self, Pumps};
use crate::vm::Vm;

/// A process's life, as the host knows it. Pids are guest pids: they mean nothing on the
/// host, and the shim never signals or waits on them itself.
#[derive(Debug, Clone, Copy)]
enum State {
    Created,
    /// StartProcess is in flight.
    Starting,
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
struct Process {
    stdin: String,
    stdout: String,
    stderr: String,
    state: State,
}

#[derive(Debug)]
struct Container {
    bundle: PathBuf,
    /// Whether Create mounted the request's rootfs mounts on `<bundle>/rootfs`.
    mounted_rootfs: bool,
    /// "" is the task's own process.
    processes: HashMap<String, Process>,
}

#[derive(Debug, Default)]
struct Table {
    containers: Mutex<HashMap<String, Container>>,
    exited: Condvar,
}

/// The wrenvm task service.
#[derive(Debug)]
pub struct WrenVm {
    table: Arc<Table>,
    publisher: Publisher,
    monitor: Arc<Monitor>,
    /// The pod's VM, booted by the first Create and stopped with the last Delete.
    vm: Mutex<Option<Arc<Vm>>>,
    /// Names the VM's directory: unique per daemon.
    key: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections replace plain values only: a poisoned lock's data is consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn process_ref(id: &str, exec_id: &str) -> ProcessRef {
    let mut process = ProcessRef::new();
    process.container_id = id.into();
    process.exec_id = exec_id.into();
    process
}

impl WrenVm {
    pub fn new(publisher: Publisher, monitor: Arc<Monitor>, key: String) -> Self {
        Self {
            table: Arc::default(),
            publisher,
            monitor,
            vm: Mutex::default(),
            key,
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        lock(&self.table.containers)
    }

    fn publish<E: wren_shim_protocol::topics::TaskEvent>(&self, event: &E) {
        publish(&self.publisher, event);
    }

    /// The running VM, booting it first if there is none.
    fn vm(&self) -> Result<Arc<Vm>, VmShimError> {
        let mut slot = lock(&self.vm);
        if let Some(vm) = slot.as_ref() {
            return Ok(Arc::clone(vm));
        }
        let config = Config::from_env().map_err(crate::vm::VmError::from)?;
        let vm = Arc::new(Vm::boot_with_retries(&config, &self.monitor, &self.key)?);
        *slot = Some(Arc::clone(&vm));
        Ok(vm)
    }

    /// The running VM, without booting one.
    fn running_vm(&self) -> Option<Arc<Vm>> {
        lock(&self.vm).clone()
    }

    /// Stops the VM; the next Create boots a fresh one.
    fn stop_vm(&self) {
        let vm = lock(&self.vm).take();
        if let Some(vm) = vm {
            vm.stop();
        }
    }

    /// Starts process `exec_id` of task `id`: StartProcess in the guest, the stdio copies,
    /// then the exit watcher. Returns the guest pid.
    fn start_process(&self, id: &str, exec_id: &str) -> Result<u32, VmShimError> {
        let (stdin, stdout, stderr) = {
            let mut containers = self.containers();
            let process = find(&mut containers, id, exec_id)?;
            if !matches!(process.state, State::Created) {
                return Err(wrong_state(id, exec_id, process.state));
            }
            process.state = State::Starting;
            (
                process.stdin.clone(),
                process.stdout.clone(),
                process.stderr.clone(),
            )
        };
        let result = self.spawn_in_guest(id, exec_id, &stdin, &stdout, &stderr);
        let mut containers = self.containers();
        let process = find(&mut containers, id, exec_id)?;
        let (pid, pumps, agent) = match result {
            Ok(started) => started,
            Err(error) => {
                process.state = State::Created;
                return Err(error);
            }
        };
        process.state = State::Running { pid };
        // Queued under the lock, before the exit watcher exists: start precedes exit.
        if exec_id.is_empty() {
            let mut start = wren_shim_protocol::events::TaskStart::new();
            start.container_id = id.into();
            start.pid = pid;
            self.publish(&start);
        } else {
            let mut started = wren_shim_protocol::events::TaskExecStarted::new();
            started.container_id = id.into();
            started.exec_id = exec_id.into();
            started.pid = pid;
            self.publish(&started);
        }
        drop(containers);
        let (table, publisher) = (Arc::clone(&self.table), self.publisher.clone());
        let process = process_ref(id, exec_id);
        std::thread::spawn(move || watch_exit(&table, &publisher, &agent, &process, &pumps));
        Ok(pid)
    }

    fn spawn_in_guest(
        &self,
        id: &str,
        exec_id: &str,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> Result<(u32, Pumps, Arc<AgentClient>), VmShimError> {
        let open = |path: &str| {
            stdio::open_output(path).map_err(|source| VmShimError::Stdio {
                path: path.into(),
                source,
            })
        };
        let outputs = [open(stdout)?, open(stderr)?];
        let vm = self.running_vm().ok_or(VmShimError::WrongState {
            id: id.into(),
            state: "without a VM",
        })?;
        let agent = Arc::clone(vm.agent());
        let process = process_ref(id, exec_id);
        let response = agent
            .start_process(ttrpc::context::Context::default(), &process)
            .map_err(VmShimError::agent("StartProcess"))?;
        let pumps = stdio::start_output(&agent, &process, outputs);
        stdio::start_stdin(&agent, &process, stdin);
        Ok((response.pid, pumps, agent))
    }

    /// A created task that is killed never runs: it is stopped with the signal's status.
    fn stop_created(&self, process: &mut Process, id: &str, exec_id: &str, signal: u32) {
        let at = SystemTime::now();
        let status = 128 + signal;
        process.state = State::Stopped { pid: 0, status, at };
        self.publish(&exit_event(id, exec_id, 0, status, at));
        self.table.exited.notify_all();
    }
}

/// Waits for the guest to report the exit, lets the output drain, then records and
/// publishes it. A VM that dies takes its processes with it: status 255.
fn watch_exit(
    table: &Table,
    publisher: &Publisher,
    agent: &AgentClient,
    process: &ProcessRef,
    pumps: &Pumps,
) {
    let status = match agent.wait_process(ttrpc::context::Context::default(), process) {
        Ok(response) => response.exit_status,
        Err(error) => {
            log::warn!("lost {}/{}: {error}", process.container_id, process.exec_id);
            255
        }
    };
    pumps.drain();
    let at = SystemTime::now();
    let mut containers = lock(&table.containers);
    let pid = match find(&mut containers, &process.container_id, &process.exec_id) {
        Ok(entry) => {
            let pid = match entry.state {
                State::Running { pid } => pid,
                _ => 0,
            };
            entry.state = State::Stopped { pid, status, at };
            pid
        }
        Err(_) => 0,
    };
    publish(
        publisher,
        &exit_event(&process.container_id, &process.exec_id, pid, status, at),
    );
    table.exited.notify_all();
}

fn publish<E: wren_shim_protocol::topics::TaskEvent>(publisher: &Publisher, event: &E) {
    if let Err(error) = publisher.publish(event) {
        log::error!("{}", wren_shim::status::error_chain(&error));
    }
}

fn exit_event(id: &str, exec_id: &str, pid: u32, status: u32, at: SystemTime) -> TaskExit {
    let mut exit = TaskExit::new();
    exit.container_id = id.into();
    exit.id = if exec_id.is_empty() { id } else { exec_id }.into();
    exit.pid = pid;
    exit.exit_status = status;
    exit.exited_at = MessageField::some(to_timestamp(at));
    exit
}

fn find<'a>(
    containers: &'a mut HashMap<String, Container>,
    id: &str,
    exec_id: &str,
) -> Result<&'a mut Process, VmShimError> {
    let container = containers
        .get_mut(id)
        .ok_or_else(|| VmShimError::task_not_found(id))?;
    container
        .processes
        .get_mut(exec_id)
        .ok_or_else(|| VmShimError::NotFound {
            what: "exec",
            id: exec_id.into(),
        })
}

fn wrong_state(id: &str, exec_id: &str, state: State) -> VmShimError {
    let state = match state {
        State::Created => "not started",
        State::Starting => "starting",
        State::Running { .. } => "running",
        State::Stopped { .. } => "stopped",
    };
    VmShimError::WrongState {
        id: if exec_id.is_empty() { id } else { exec_id }.into(),
        state,
    }
}
