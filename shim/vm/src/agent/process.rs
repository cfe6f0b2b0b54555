//! The agent's table of containers and processes, and the reaper that records their exits.
//!
//! One lock guards the table. A process is spawned with the lock held and its pid entered
//! before the lock is released, so the reaper (which takes the lock to record an exit) can
//! never see the exit of a pid it does not know yet.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use ttrpc::Code;
use wren_shim_protocol::vm_agent::ProcessSpec;

use crate::container::Layout;
use crate::spawn;

/// An RPC's failure: a ttrpc code and a message.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A stream end shared between the table and the RPC reading or writing it.
type Pipe = Arc<Mutex<Option<File>>>;

#[derive(Debug)]
struct Process {
    spec: ProcessSpec,
    pid: Option<u32>,
    exit: Option<u32>,
    stdin: Pipe,
    stdout: Pipe,
    stderr: Pipe,
}

impl Process {
    fn new(spec: ProcessSpec) -> Self {
        Self {
            spec,
            pid: None,
            exit: None,
            stdin: Pipe::default(),
            stdout: Pipe::default(),
            stderr: Pipe::default(),
        }
    }
}

#[derive(Debug)]
struct Container {
    layout: Layout,
    hostname: String,
    /// Keyed by exec id; "" is the container's own process.
    processes: HashMap<String, Process>,
}

#[derive(Debug, Default)]
struct Table {
    containers: HashMap<String, Container>,
    /// Live pid -> (container id, exec id).
    pids: HashMap<u32, (String, String)>,
}

/// The agent's state, shared by every RPC thread and the reaper.
#[derive(Debug, Default)]
pub struct Agent {
    table: Mutex<Table>,
    exited: Condvar,
}

fn lock(agent: &Agent) -> MutexGuard<'_, Table> {
    // Critical sections replace plain values only: a poisoned table is still consistent.
    agent.table.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(container: &str, exec: &str) -> Failure {
    Failure::new(
        Code::NOT_FOUND,
        format!("process {container:?}/{exec:?} not found"),
    )
}

fn process<'a>(
    table: &'a mut Table,
    container: &str,
    exec: &str,
) -> Result<&'a mut Process, Failure> {
    table
        .containers
        .get_mut(container)
        .and_then(|c| c.processes.get_mut(exec))
        .ok_or_else(|| not_found(container, exec))
}

/// Containerd's identifier rule, so an id can name a directory.
fn check_id(id: &str) -> Result<(), Failure> {
    wren_shim_protocol::identifier::validate("id", id)
        .map_err(|error| Failure::new(Code::INVALID_ARGUMENT, error.to_string()))
}

impl Agent {
    /// Starts the reaper thread.
    pub fn start_reaper(self: &Arc<Self>) {
        let agent = Arc::clone(self);
        std::thread::spawn(move || agent.reap());
    }

    fn reap(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, u32::try_from(code).unwrap_or(255)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as u32),
                Ok(_) | Err(Errno::EINTR) => continue,
                // No child at all: nothing to reap until the next spawn.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            let mut table = lock(self);
            let Some((container, exec)) =
                table.pids.remove(&u32::try_from(pid.as_raw()).unwrap_or(0))
            else {
                continue; // an orphan reparented to pid 1
            };
            if let Ok(process) = process(&mut table, &container, &exec) {
                process.exit = Some(status);
            }
            drop(table);
            self.exited.notify_all();
        }
    }

    pub fn create_container(
        &self,
        id: &str,
        hostname: &str,
        spec: ProcessSpec,
    ) -> Result<(), Failure> {
        check_id(id)?;
        let mut table = lock(self);
        if table.containers.contains_key(id) {
            return Err(Failure::new(
                Code::ALREADY_EXISTS,
                format!("container {id} exists"),
            ));
        }
        let layout = Layout::of(id);
        layout.set_up().map_err(|error| {
            Failure::new(Code::FAILED_PRECONDITION, format!("set up {id}: {error}"))
        })?;
        let mut processes = HashMap::new();
        processes.insert(String::new(), Process::new(spec));
        table.containers.insert(
            id.to_owned(),
            Container {
                layout,
                hostname: hostname.to_owned(),
                processes,
            },
        );
        Ok(())
    }

    pub fn add_exec(&self, container: &str, exec: &str, spec: ProcessSpec) -> Result<(), Failure> {
        check_id(exec)?;
        let mut table = lock(self);
        let entry = table
            .containers
            .get_mut(container)
            .ok_or_else(|| not_found(container, ""))?;
        if entry.processes.contains_key(exec) {
            return Err(Failure::new(
                Code::ALREADY_EXISTS,
                format!("exec {exec} exists"),
            ));
        }
        entry.processes.insert(exec.to_owned(), Process::new(spec));
        Ok(())
    }

    pub fn start(&self, container: &str, exec: &str) -> Result<u32, Failure> {
        let mut table = lock(self);
        let entry = table
            .containers
            .get_mut(container)
            .ok_or_else(|| not_found(container, exec))?;
        let (root, cgroup, hostname) = (
            entry.layout.root.clone(),
            entry.layout.cgroup.clone(),
            entry.hostname.clone(),
        );
        let process = entry
            .processes
            .get_mut(exec)
            .ok_or_else(|| not_found(container, exec))?;
        if process.pid.is_some() {
            return Err(Failure::new(Code::FAILED_PRECONDITION, "already started"));
        }
        let spawned = spawn::spawn(&root, &cgroup, &hostname, &process.spec)
            .map_err(|error| Failure::new(Code::FAILED_PRECONDITION, error.to_string()))?;
        process.pid = Some(spawned.pid);
        *lock_pipe(&process.stdin) = spawned.stdin;
        *lock_pipe(&process.stdout) = Some(spawned.stdout);
        *lock_pipe(&process.stderr) = Some(spawned.stderr);
        table
            .pids
            .insert(spawned.pid, (container.to_owned(), exec.to_owned()));
        Ok(spawned.pid)
    }

    pub fn wait(&self, container: &str, exec: &str) -> Result<u32, Failure> {
        let mut table = lock(self);
        loop {
            if let Some(status) = process(&mut table, container, exec)?.exit {
                return Ok(status);
            }
            table = self
                .exited
                .wait(table)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub fn signal(
        &self,
        container: &str,
        exec: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), Failure> {
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|number| Signal::try_from(number).ok())
            .ok_or_else(|| Failure::new(Code::INVALID_ARGUMENT, format!("signal {signal}")))?;
        let mut table = lock(self);
        let targets = if all {
            let entry = table
                .containers
                .get(container)
                .ok_or_else(|| not_found(container, exec))?;
            entry.layout.pids()
        } else {
            let process = process(&mut table, container, exec)?;
            match (process.pid, process.exit) {
                (Some(pid), None) => vec![pid],
                // containerd reads NotFound from Kill as "already gone".
                _ => return Err(Failure::new(Code::NOT_FOUND, "process not running")),
            }
        };
        for pid in targets {
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                signal,
            );
        }
        Ok(())
    }

    fn pipe(
        &self,
        container: &str,
        exec: &str,
        pick: impl Fn(&Process) -> &Pipe,
    ) -> Result<Pipe, Failure> {
        let mut table = lock(self);
        Ok(Arc::clone(pick(process(&mut table, container, exec)?)))
    }

    /// Up to 64 KiB of output; empty at end of file (the stream is then closed).
    pub fn read_output(
        &self,
        container: &str,
        exec: &str,
        stderr: bool,
    ) -> Result<Vec<u8>, Failure> {
        let pipe = self.pipe(
            container,
            exec,
            |p| if stderr { &p.stderr } else { &p.stdout },
        )?;
        // Held across the blocking read: one reader per stream is the protocol.
        let mut guard = lock_pipe(&pipe);
        let Some(file) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buffer = vec![0; 64 * 1024];
        loop {
            match file.read(&mut buffer) {
                Ok(n) if n > 0 => {
                    buffer.truncate(n);
                    return Ok(buffer);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                // End of file (every writer, the process and its children, is gone), or a
                // broken pipe: either way the stream is over.
                Ok(_) | Err(_) => {
                    *guard = None;
                    return Ok(Vec::new());
                }
            }
        }
    }

    pub fn write_stdin(&self, container: &str, exec: &str, data: &[u8]) -> Result<(), Failure> {
        let pipe = self.pipe(container, exec, |p| &p.stdin)?;
        let mut guard = lock_pipe(&pipe);
        let file = guard
            .as_mut()
            .ok_or_else(|| Failure::new(Code::FAILED_PRECONDITION, "stdin is closed"))?;
        file.write_all(data)
            .map_err(|error| Failure::new(Code::UNAVAILABLE, format!("write stdin: {error}")))
    }

    pub fn close_stdin(&self, container: &str, exec: &str) -> Result<(), Failure> {
        let pipe = self.pipe(container, exec, |p| &p.stdin)?;
        *lock_pipe(&pipe) = None;
        Ok(())
    }

    pub fn pids(&self, container: &str) -> Result<Vec<u32>, Failure> {
        let table = lock(self);
        let entry = table
            .containers
            .get(container)
            .ok_or_else(|| not_found(container, ""))?;
        Ok(entry.layout.pids())
    }

    pub fn stats(
        &self,
        container: &str,
    ) -> Result<wren_shim_protocol::cgroups_v2::Metrics, Failure> {
        let table = lock(self);
        let entry = table
            .containers
            .get(container)
            .ok_or_else(|| not_found(container, ""))?;
        Ok(crate::stats::read(&entry.layout.cgroup))
    }

    /// Forgets an exec, or removes a whole container (killing what is left in it).
    pub fn remove(&self, container: &str, exec: &str) -> Result<(), Failure> {
        let mut table = lock(self);
        if exec.is_empty() {
            let entry = table
                .containers
                .remove(container)
                .ok_or_else(|| not_found(container, exec))?;
            table.pids.retain(|_, (c, _)| c != container);
            drop(table);
            entry.layout.tear_down();
        } else {
            let entry = table
                .containers
                .get_mut(container)
                .ok_or_else(|| not_found(container, exec))?;
            let process = entry
                .processes
                .remove(exec)
                .ok_or_else(|| not_found(container, exec))?;
            if let (Some(pid), None) = (process.pid, process.exit) {
                table.pids.remove(&pid);
            }
        }
        Ok(())
    }
}

fn lock_pipe(pipe: &Pipe) -> MutexGuard<'_, Option<File>> {
    pipe.lock().unwrap_or_else(PoisonError::into_inner)
}
