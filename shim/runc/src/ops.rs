//! What happens to a created container: start, exec, signals, pause and resume, updates,
//! checkpoints, and the queries (pids, stats, wait).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protobuf::well_known_types::any::Any;
use wren_cgroups::Stats;
use wren_runc_driver::{
    AfterCheckpoint, CheckpointOptions, CriuOptions, ExecOptions, KillScope, ProcessSpec,
    Resources, Stdio as RuncStdio,
};
use wren_shim::identifier;
use wren_shim_protocol::events::{
    TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed, TaskStart,
};
use wren_shim_protocol::runc::{CheckpointOptions as CheckpointProto, ProcessDetails};
use wren_shim_protocol::types::ProcessInfo;

use crate::container::{self, publish, Container};
use crate::error::Error;
use crate::exits::ProcRef;
use crate::process::{ExitRecord, ProcState, Process, StdioPaths};
use crate::restore;
use crate::state::{ExecState, Op, PauseOutcome};
use crate::Shared;

/// How long Wait gives the output to reach the client after the exit.
const WAIT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);
const PROCESS_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RESOURCES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

fn transition(id: &str) -> impl FnOnce(crate::state::TransitionError) -> Error + '_ {
    move |source| Error::Transition {
        id: id.to_owned(),
        source,
    }
}

/// Start of the init (`runc start`), queueing TaskStart before any exit of it.
pub fn start_init(shared: &Shared, container: &Arc<Container>) -> Result<u32, Error> {
    let init = &container.init;
    let _ops = init.lock_ops();
    init.check(Op::Start).map_err(transition(&container.id))?;
    if let Some(criu) = container.pending_restore() {
        return restore::start(shared, container, criu);
    }
    let proc_ref = ProcRef {
        container: Arc::clone(container),
        process: Arc::clone(init),
    };
    let guard = shared.lifecycle.pre_start(Some(&proc_ref));
    if let Err(source) = container.runc.start(&container.id) {
        guard.started(proc_ref);
        return Err(Error::Runc {
            verb: "start",
            source,
        });
    }
    init.commit(Op::Start);
    let pid = init.pid();
    let mut event = TaskStart::new();
    event.container_id.clone_from(&container.id);
    event.pid = pid;
    publish(shared, &event);
    guard.started(proc_ref);
    Ok(pid)
}

/// The Exec RPC: registers the exec (nothing runs yet) and queues TaskExecAdded.
pub fn add_exec(
    shared: &Shared,
    container: &Container,
    exec_id: &str,
    stdio: StdioPaths,
    spec: Option<&Any>,
) -> Result<(), Error> {
    // The exec id names a file in the bundle: `<exec id>.pid`.
    identifier::validate("exec id", exec_id)?;
    container
        .init
        .check(Op::Exec)
        .map_err(transition(&container.id))?;
    if container.pending_restore().is_some() {
        // No runc container exists before the restore (containerd's shim refuses too).
        return Err(Error::InitNotRunning {
            id: container.id.clone(),
        });
    }
    let spec = exec_spec(exec_id, spec, stdio.terminal)?;
    let pid_file = container.bundle.join(format!("{exec_id}.pid"));
    container.add_exec(Process::exec(exec_id, stdio, spec, pid_file))?;
    let mut event = TaskExecAdded::new();
    event.container_id.clone_from(&container.id);
    event.exec_id = exec_id.to_owned();
    publish(shared, &event);
    Ok(())
}

/// The process spec JSON with `terminal` set from the request, as containerd's shim does.
fn exec_spec(exec_id: &str, spec: Option<&Any>, terminal: bool) -> Result<Vec<u8>, Error> {
    let spec = spec.cloned().unwrap_or_default();
    let name = spec.type_url.rsplit('/').next().unwrap_or_default();
    if !spec.type_url.is_empty() && name != "Process" && spec.type_url != PROCESS_SPEC_TYPE {
        return Err(Error::ExecSpecType {
            exec_id: exec_id.to_owned(),
            type_url: spec.type_url,
        });
    }
    let mut process: serde_json::Value =
        serde_json::from_slice(&spec.value).map_err(|source| Error::ExecSpec {
            exec_id: exec_id.to_owned(),
            source,
        })?;
    process["terminal"] = serde_json::Value::Bool(terminal);
    serde_json::to_vec(&process).map_err(|source| Error::ExecSpec {
        exec_id: exec_id.to_owned(),
        source,
    })
}

/// Start of an exec (`runc exec --detach`), queueing TaskExecStarted before its exit.
pub fn start_exec(
    shared: &Shared,
    container: &Arc<Container>,
    exec: &Arc<Process>,
) -> Result<u32, Error> {
    let _ops = exec.lock_ops();
    exec.check(Op::Start).map_err(transition(&exec.id))?;
    let proc_ref = ProcRef {
        container: Arc::clone(container),
        process: Arc::clone(exec),
    };
    let guard = shared.lifecycle.pre_exec_start(proc_ref.clone())?;
    // A failed `runc exec` drops the guard, which releases the init's exit if it waits.
    let (pid, io) = run_exec(shared, container, exec)?;
    let io = match io {
        Ok(io) => Some(io),
        Err(source) => {
            // The process runs without its stdio: stop it; its exit is tracked as usual.
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).unwrap_or(-1)),
                Signal::SIGKILL,
            );
            exec.started(pid, None);
            guard.started(proc_ref);
            return Err(Error::Io {
                id: exec.id.clone(),
                source,
            });
        }
    };
    exec.started(pid, io);
    let mut event = TaskExecStarted::new();
    event.container_id.clone_from(&container.id);
    event.exec_id.clone_from(&exec.id);
    event.pid = pid;
    publish(shared, &event);
    guard.started(proc_ref);
    Ok(pid)
}

type StartedIo = Result<wren_io::ProcessIo, wren_io::IoError>;

/// Runs `runc exec`; the IO result is kept apart because the process exists either way.
fn run_exec(
    shared: &Shared,
    container: &Container,
    exec: &Process,
) -> Result<(u32, StartedIo), Error> {
    let engine = shared.engine()?;
    let mut config = wren_io::IoConfig::new(container.id.as_str(), shared.namespace.as_str());
    config.owner = wren_io::IoOwner {
        uid: container.options.io_uid,
        gid: container.options.io_gid,
    };
    let mut io = wren_io::PreparedIo::new(
        &container::to_io_stdio(&exec.stdio),
        &config,
        &*shared.spawner,
    )
    .map_err(|source| Error::Io {
        id: exec.id.clone(),
        source,
    })?;
    let runc_io = io.take_runc_io();
    let options = ExecOptions {
        spec_dir: container.bundle.clone(),
        pid_file: exec
            .pid_file
            .clone()
            .unwrap_or_else(|| container.bundle.join(format!("{}.pid", exec.id))),
        console_socket: io.console_socket().map(Path::to_path_buf),
        stdio: RuncStdio {
            stdin: runc_io.stdin,
            stdout: runc_io.stdout,
            stderr: runc_io.stderr,
        },
    };
    let spec = ProcessSpec::from_json(exec.spec.clone().unwrap_or_default());
    let pid = container
        .runc
        .exec(&container.id, &spec, options)
        .map_err(|source| Error::Runc {
            verb: "exec",
            source,
        })?;
    Ok((pid, io.start(&engine, CONSOLE_TIMEOUT)))
}

/// Kill: `runc kill [--all]` for the init, kill(2) for an exec.
pub fn kill_process(
    container: &Container,
    process: &Process,
    signal: u32,
    all: bool,
) -> Result<(), Error> {
    let signo = i32::try_from(signal).map_err(|_| Error::InvalidSignal { signal })?;
    let snapshot = process.snapshot();
    process.check(Op::Kill).map_err(transition(&process.id))?;
    match snapshot.state {
        ProcState::Init(_) => {
            let scope = if all { KillScope::All } else { KillScope::Init };
            container
                .runc
                .kill(&container.id, signo, scope)
                .map_err(|source| Error::Runc {
                    verb: "kill",
                    source,
                })
        }
        ProcState::Exec(ExecState::Created) => Err(Error::ExecNotStarted {
            id: container.id.clone(),
            exec_id: process.id.clone(),
        }),
        ProcState::Exec(ExecState::Stopped | ExecState::Deleted) => Err(Error::ProcessFinished {
            id: process.id.clone(),
        }),
        ProcState::Exec(ExecState::Running) => {
            let signal = Signal::try_from(signo).map_err(|_| Error::InvalidSignal { signal })?;
            let pid = Pid::from_raw(i32::try_from(snapshot.pid).unwrap_or(-1));
            kill(pid, signal).map_err(|source| Error::Signal {
                id: process.id.clone(),
                pid: snapshot.pid,
                source,
            })
        }
    }
}

/// Pause: `pausing` while `runc pause` runs, then `paused` and TaskPaused.
pub fn pause(shared: &Shared, container: &Container) -> Result<(), Error> {
    let init = &container.init;
    let _ops = init.lock_ops();
    init.transition(Op::Pause)
        .map_err(transition(&container.id))?;
    if let Err(source) = container.runc.pause(&container.id) {
        init.pause_ended(PauseOutcome::Failed);
        return Err(Error::Runc {
            verb: "pause",
            source,
        });
    }
    init.pause_ended(PauseOutcome::Frozen);
    let mut event = TaskPaused::new();
    event.container_id.clone_from(&container.id);
    publish(shared, &event);
    Ok(())
}

/// Resume: `runc resume`, then `running` and TaskResumed.
pub fn resume(shared: &Shared, container: &Container) -> Result<(), Error> {
    let init = &container.init;
    let _ops = init.lock_ops();
    init.check(Op::Resume).map_err(transition(&container.id))?;
    container
        .runc
        .resume(&container.id)
        .map_err(|source| Error::Runc {
            verb: "resume",
            source,
        })?;
    init.commit(Op::Resume);
    let mut event = TaskResumed::new();
    event.container_id.clone_from(&container.id);
    publish(shared, &event);
    Ok(())
}

/// Update: `runc update --resources=-` with the request's LinuxResources JSON.
pub fn update(container: &Container, resources: Option<&Any>) -> Result<(), Error> {
    let init = &container.init;
    let _ops = init.lock_ops();
    init.check(Op::Update).map_err(transition(&container.id))?;
    let resources = resources.cloned().unwrap_or_default();
    let name = resources.type_url.rsplit('/').next().unwrap_or_default();
    if name != "LinuxResources" && resources.type_url != RESOURCES_TYPE {
        return Err(Error::ResourcesType {
            id: container.id.clone(),
            type_url: resources.type_url,
        });
    }
    let resources = Resources::from_json(resources.value);
    container
        .runc
        .update(&container.id, &resources)
        .map_err(|source| Error::Runc {
            verb: "update",
            source,
        })
}

/// Checkpoint: `runc checkpoint` into `path`; the default CRIU work dir is removed after.
pub fn checkpoint(container: &Container, path: &str, options: Option<&Any>) -> Result<(), Error> {
    let init = &container.init;
    let _ops = init.lock_ops();
    init.check(Op::Checkpoint)
        .map_err(transition(&container.id))?;
    let proto: CheckpointProto = match options {
        Some(any) if !any.type_url.is_empty() => {
            wren_shim_protocol::any::unpack(any).map_err(|source| Error::CheckpointOptions {
                id: container.id.clone(),
                source,
            })?
        }
        _ => CheckpointProto::new(),
    };
    let default_work = container.bundle.join("work").join("criu-work");
    let work = non_empty(&proto.work_path).unwrap_or_else(|| default_work.clone());
    let options = CheckpointOptions {
        criu: CriuOptions {
            image_path: PathBuf::from(path),
            work_path: Some(work.clone()),
            parent_path: non_empty(&proto.parent_path),
            open_tcp: proto.open_tcp,
            external_unix_sockets: proto.external_unix_sockets,
            terminal: proto.terminal,
            file_locks: proto.file_locks,
            empty_namespaces: proto.empty_namespaces.clone(),
            cgroups_mode: None,
        },
        after: if proto.exit {
            AfterCheckpoint::Exit
        } else {
            AfterCheckpoint::LeaveRunning
        },
    };
    // runc creates only the last component; a bundle not made by containerd (wrenctl's)
    // has no `work` directory.
    if let Err(err) = std::fs::create_dir_all(&work) {
        log::warn!(
            "failed to create the criu work directory {}: {err}",
            work.display()
        );
    }
    let result = container.runc.checkpoint(&container.id, &options);
    if work == default_work {
        // Nothing to keep from a default work dir; a failed run leaves criu's log in it.
        let _ = std::fs::remove_dir_all(&work);
    }
    result.map_err(|source| Error::Runc {
        verb: "checkpoint",
        source,
    })
}

fn non_empty(path: &str) -> Option<PathBuf> {
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Pids: `runc ps`, with the exec id of every exec pid.
pub fn pids(container: &Container) -> Result<Vec<ProcessInfo>, Error> {
    let pids = container
        .runc
        .ps(&container.id)
        .map_err(|source| Error::Runc { verb: "ps", source })?;
    let execs = container.exec_pids();
    pids.into_iter()
        .map(|pid| {
            let mut info = ProcessInfo::new();
            info.pid = pid;
            if let Some(exec_id) = execs.get(&pid) {
                let mut details = ProcessDetails::new();
                details.exec_id.clone_from(exec_id);
                let any =
                    wren_shim_protocol::any::pack(&details).map_err(|source| Error::Pack {
                        what: "process details",
                        source,
                    })?;
                info.info = protobuf::MessageField::some(any);
            }
            Ok(info)
        })
        .collect()
}

/// Stats: the cgroup located at Create, read now.
pub fn stats(container: &Container) -> Result<Stats, Error> {
    let cgroup = container.cgroup().ok_or_else(|| Error::NoCgroup {
        id: container.id.clone(),
    })?;
    cgroup.stats().map_err(|source| Error::Stats {
        id: container.id.clone(),
        source,
    })
}

/// Wait, without holding a thread: `answer` gets the exit once it is recorded (and TaskExit
/// queued) and the output has drained (bounded), or `None` if the process is deleted before
/// it exits.
///
/// Output usually drains as the process exits; when it has not yet, a short-lived thread
/// waits for it (bounded), so the thread that records the exit (the reaping thread for an
/// exec, the exits queue for an init) never blocks on a client's reader.
///
/// `abandoned` says the answer has nobody left to go to: such waits are dropped early.
pub fn wait_then(
    process: &Arc<Process>,
    answer: impl FnOnce(Option<ExitRecord>) + Send + 'static,
    abandoned: impl Fn() -> bool + Send + 'static,
) {
    let weak = Arc::downgrade(process);
    let wanted = Box::new(move || !abandoned());
    let callback = Box::new(move |exit| {
        let (Some(exit), Some(process)) = (exit, weak.upgrade()) else {
            return answer(exit);
        };
        if process.drain().is_none_or(|drain| drain.is_drained()) {
            return answer(Some(exit));
        }
        let waited = wren_shim::transient::spawn("wait-output", move || {
            wait_drained(&process);
            answer(Some(exit));
        });
        if let Err(error) = waited {
            // The reply went with the closure; dropping it answers with an error.
            log::error!("failed to start a thread to wait for output: {error}");
        }
    });
    process.on_exit_while(callback, wanted);
}

fn wait_drained(process: &Process) {
    if !process.wait_drained(WAIT_DRAIN_TIMEOUT) {
        log::debug!(
            "output of {} still open after {WAIT_DRAIN_TIMEOUT:?}",
            process.id
        );
    }
}

/// Delete of an exec: bounded drain, close its IO, remove its pid file; no event.
pub fn delete_exec(
    container: &Container,
    exec: &Process,
) -> Result<crate::process::Snapshot, Error> {
    let _ops = exec.lock_ops();
    exec.check(Op::Delete).map_err(transition(&exec.id))?;
    if !exec.wait_drained(container::DELETE_DRAIN_TIMEOUT) {
        log::warn!("output of exec {} not drained: closing", exec.id);
    }
    if let Some(io) = exec.take_io() {
        io.close(container::IO_CLOSE_GRACE);
    }
    if let Some(path) = &exec.pid_file {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                log::warn!("failed to remove {}: {err}", path.display());
            }
            _ => {}
        }
    }
    let snapshot = exec.mark_deleted();
    container.remove_exec(&exec.id);
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_any(type_url: &str, json: &str) -> Any {
        let mut any = Any::new();
        any.type_url = type_url.to_owned();
        any.value = json.as_bytes().to_vec();
        any
    }

    #[test]
    fn exec_spec_takes_terminal_from_the_request() {
        let any = spec_any(
            PROCESS_SPEC_TYPE,
            r#"{"args":["sh"],"terminal":false,"cwd":"/"}"#,
        );
        let json = exec_spec("e1", Some(&any), true).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["terminal"], true);
        assert_eq!(value["args"][0], "sh");
    }

    #[test]
    fn exec_spec_refuses_other_types_and_bad_json() {
        let wrong = spec_any("containerd.runc.v1.Options", "{}");
        assert!(matches!(
            exec_spec("e1", Some(&wrong), false),
            Err(Error::ExecSpecType { .. })
        ));
        let bad = spec_any(PROCESS_SPEC_TYPE, "{");
        assert!(matches!(
            exec_spec("e1", Some(&bad), false),
            Err(Error::ExecSpec { .. })
        ));
    }
}
