//! A container: its runc handle, rootfs, cgroup, init and execs; and the two ends of its life,
//! Create and the Delete of its init.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use protobuf::well_known_types::any::Any;
use protobuf::MessageField;
use wren_cgroups::{Cgroup, OomError, OomWatcher};
use wren_io::{IoConfig, IoOwner, PreparedIo};
use wren_process::{Monitor, Spawner};
use wren_runc_driver::{
    CgroupDriver, CreateOptions, CriuOptions, DeleteMode, ErrorKind, Runc, RuncConfig,
    Stdio as RuncStdio,
};
use wren_shim_protocol::events::{TaskCreate, TaskDelete, TaskIO};
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::types::Mount;

use crate::error::Error;
use crate::exits::ProcRef;
use crate::options::RuntimeOptions;
use crate::process::{ExitRecord, ProcState, Process, Snapshot, StdioPaths};
use crate::restore;
use crate::state::{InitState, Op};
use crate::Shared;
use wren_shim::rootfs::{self, RootfsMount};

/// How long Create waits for runc to hand over the pty master (runc has already exited by
/// then, so it is in the socket's queue or never coming).
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The drain budget of Delete: background children holding stdout must not stall it, and it
/// is separate from the cleanup that follows (containerd#13377).
pub const DELETE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Delete of a created (never started) init waits for runc's init to be reaped, so
/// its TaskExit is queued before TaskDelete.
const CREATED_EXIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a logging binary gets to finish on its own when its process's IO is closed.
pub const IO_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What happens to the rest of a container when its init exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitPolicy {
    /// Its own pid namespace: the kernel kills everything with the init.
    InitOnly,
    /// A shared (or unknown) pid namespace: `runc kill --all` after the init exits.
    KillAll,
}

/// Whether the shim mounted the rootfs (and so must unmount it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    Mounted(PathBuf),
    /// The spec's `root.path` used as is (no mounts in the request).
    Unmanaged,
}

/// One container of this shim.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runc: Runc,
    pub options: RuntimeOptions,
    pub rootfs: Rootfs,
    /// Located once the init runs: at Create, or at the Start that restores it.
    cgroup: OnceLock<Cgroup>,
    pub exit_policy: ExitPolicy,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// The `runc restore` a checkpointed init still waits for: Start runs it, as containerd's
    /// shim does, so the restored process's exit can only follow TaskStart.
    pending_restore: Mutex<Option<CriuOptions>>,
}

/// The parts of `CreateTaskRequest` Create uses.
#[derive(Debug)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub mounts: Vec<RootfsMount>,
    pub stdio: StdioPaths,
    pub checkpoint: String,
    pub parent_checkpoint: String,
    pub options: Option<Any>,
}

impl Container {
    /// A container around `init`, with no cgroup located yet and nothing to restore.
    pub fn assemble(
        request: &CreateRequest,
        runc: Runc,
        options: RuntimeOptions,
        rootfs: Rootfs,
        init: Arc<Process>,
    ) -> Self {
        Self {
            id: request.id.clone(),
            bundle: request.bundle.clone(),
            runc,
            options,
            rootfs,
            cgroup: OnceLock::new(),
            exit_policy: exit_policy(&request.bundle),
            init,
            execs: Mutex::default(),
            pending_restore: Mutex::default(),
        }
    }

    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.get()
    }

    /// Locates the init's cgroup (once) and watches it for OOM kills right away (an OOM
    /// between create and start is not missed). Neither is fatal: the container runs, Stats
    /// reports NotFound.
    pub fn locate_cgroup(&self, shared: &Shared, pid: u32) {
        let cgroup = match Cgroup::for_pid(pid) {
            Ok(cgroup) => cgroup,
            Err(err) => {
                log::warn!(
                    "failed to locate the cgroup of {} (pid {pid}): {err}",
                    self.id
                );
                return;
            }
        };
        if let Err(err) = shared.oom.watch(&self.id, &cgroup) {
            log::warn!("failed to watch {} for oom kills: {err}", self.id);
        }
        let _ = self.cgroup.set(cgroup);
    }

    fn lock_restore(&self) -> MutexGuard<'_, Option<CriuOptions>> {
        // Only assignments happen under this lock.
        self.pending_restore
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The restore Start must run, if the init still waits for one.
    pub fn pending_restore(&self) -> Option<CriuOptions> {
        self.lock_restore().clone()
    }

    pub fn set_pending_restore(&self, restore: Option<CriuOptions>) {
        *self.lock_restore() = restore;
    }

    fn lock_execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        // Only inserts, removals and lookups happen under this lock.
        self.execs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn exec(&self, exec_id: &str) -> Result<Arc<Process>, Error> {
        self.lock_execs()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::ExecNotFound {
                id: self.id.clone(),
                exec_id: exec_id.to_owned(),
            })
    }

    /// The init for an empty exec id, else that exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>, Error> {
        if exec_id.is_empty() {
            Ok(Arc::clone(&self.init))
        } else {
            self.exec(exec_id)
        }
    }

    /// Registers a new exec, refusing a taken id.
    pub fn add_exec(&self, process: Process) -> Result<Arc<Process>, Error> {
        let mut execs = self.lock_execs();
        if execs.contains_key(&process.id) {
            return Err(Error::ExecExists {
                id: self.id.clone(),
                exec_id: process.id,
            });
        }
        let process = Arc::new(process);
        execs.insert(process.id.clone(), Arc::clone(&process));
        Ok(process)
    }

    pub fn remove_exec(&self, exec_id: &str) {
        self.lock_execs().remove(exec_id);
    }

    /// Closes the IO of execs the client never deleted: the container is going away.
    fn close_exec_io(&self) {
        let execs: Vec<Arc<Process>> = self.lock_execs().drain().map(|(_, exec)| exec).collect();
        for exec in execs {
            if let Some(io) = exec.take_io() {
                io.close(IO_CLOSE_GRACE);
            }
            exec.discard();
        }
    }

    /// Exec pids by exec id, for Pids.
    pub fn exec_pids(&self) -> HashMap<u32, String> {
        let execs: Vec<Arc<Process>> = self.lock_execs().values().cloned().collect();
        execs
            .iter()
            .map(|exec| (exec.pid(), exec.id.clone()))
            .filter(|(pid, _)| *pid != 0)
            .collect()
    }

    /// Stops the OOM watch with a final read; an unwatched container is fine.
    pub fn stop_oom_watch(&self, oom: &OomWatcher) {
        if self.cgroup.get().is_none() {
            return;
        }
        match oom.unwatch(&self.id) {
            Ok(_) | Err(OomError::NotWatched { .. }) => {}
            Err(err) => log::warn!("failed to stop the oom watch of {}: {err}", self.id),
        }
    }

    fn unmount_rootfs(&self) -> Result<(), Error> {
        match &self.rootfs {
            Rootfs::Mounted(path) => {
                rootfs::unmount_recursive(path).map_err(|source| Error::Unmount {
                    id: self.id.clone(),
                    source,
                })
            }
            Rootfs::Unmanaged => Ok(()),
        }
    }
}

/// The runc handle for a container in `bundle` with `options`.
pub fn runc_for(
    spawner: &Arc<Monitor>,
    namespace: &str,
    bundle: &Path,
    options: &RuntimeOptions,
) -> Runc {
    let config = RuncConfig {
        binary: PathBuf::from(options.binary()),
        root: Some(options.runc_root(namespace)),
        log: Some(bundle.join("log.json")),
        cgroup_driver: if options.systemd_cgroup {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        },
    };
    Runc::new(config, Arc::clone(spawner) as Arc<dyn Spawner>)
}

/// Go's `ShouldKillAllOnExit`: only a private pid namespace (a `pid` entry without a path)
/// takes everything down with the init; an unreadable spec is treated as shared.
pub fn exit_policy(bundle: &Path) -> ExitPolicy {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let private = spec
        .as_ref()
        .and_then(|spec| spec["linux"]["namespaces"].as_array())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|ns| ns["type"] == "pid" && ns["path"].as_str().is_none_or(str::is_empty))
        });
    if private {
        ExitPolicy::InitOnly
    } else {
        ExitPolicy::KillAll
    }
}

/// Create: everything up to a created init whose TaskCreate is queued. On failure nothing
/// is left behind (mounts, runc container, the id).
pub fn create(shared: &Shared, request: &CreateRequest) -> Result<Arc<Container>, Error> {
    check_bundle(&request.id, &request.bundle)?;
    shared.reserve(&request.id)?;
    let result = create_reserved(shared, request);
    if result.is_err() {
        shared.release(&request.id);
    }
    result
}

/// A bundle must be an absolute path to a directory: runc runs from it, and a relative or
/// empty one would resolve against the shim's own working directory (the first task's
/// bundle), silently running a container from someone else's config.
fn check_bundle(id: &str, bundle: &Path) -> Result<(), Error> {
    if !bundle.is_absolute() {
        return Err(Error::BundleNotAbsolute {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
        });
    }
    if !std::fs::metadata(bundle).is_ok_and(|meta| meta.is_dir()) {
        return Err(Error::BundleNotDirectory {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
        });
    }
    Ok(())
}

fn create_reserved(shared: &Shared, request: &CreateRequest) -> Result<Arc<Container>, Error> {
    let id = &request.id;
    let options =
        RuntimeOptions::from_any(request.options.as_ref()).map_err(|source| Error::Options {
            id: id.clone(),
            source,
        })?;
    options
        .save(&request.bundle)
        .map_err(|source| Error::SaveOptions {
            id: id.clone(),
            source,
        })?;
    let rootfs = if request.mounts.is_empty() {
        Rootfs::Unmanaged
    } else {
        let path = request.bundle.join("rootfs");
        rootfs::mount_all(&request.mounts, &path).map_err(|source| Error::Mount {
            id: id.clone(),
            source,
        })?;
        Rootfs::Mounted(path)
    };
    let created = if request.checkpoint.is_empty() {
        run_create(shared, request, options, rootfs.clone())
    } else {
        restore::create(shared, request, options, rootfs.clone())
    };
    if created.is_err() {
        if let Rootfs::Mounted(path) = &rootfs {
            if let Err(err) = rootfs::unmount_recursive(path) {
                log::warn!("failed to unmount the rootfs of {id} after a failed create: {err}");
            }
        }
    }
    created
}

fn run_create(
    shared: &Shared,
    request: &CreateRequest,
    options: RuntimeOptions,
    rootfs: Rootfs,
) -> Result<Arc<Container>, Error> {
    let engine = shared.engine()?;
    let id = &request.id;
    let runc = runc_for(
        &shared.spawner,
        &shared.namespace,
        &request.bundle,
        &options,
    );
    let mut io = prepare_io(shared, id, &request.stdio, &options)?;
    let guard = shared.lifecycle.pre_start(None);
    let pid = runc
        .create(id, create_options(request, &options, &mut io))
        .map_err(|source| Error::Runc {
            verb: "create",
            source,
        })?;
    let io = match io.start(&engine, CONSOLE_TIMEOUT) {
        Ok(io) => io,
        Err(source) => {
            if let Err(err) = runc.delete(id, DeleteMode::Force) {
                log::warn!("failed to remove {id} after its stdio failed: {err}");
            }
            return Err(Error::Io {
                id: id.clone(),
                source,
            });
        }
    };
    let init = Arc::new(Process::init(id, request.stdio.clone(), pid, Some(io)));
    let container = Container::assemble(request, runc, options, rootfs, Arc::clone(&init));
    container.locate_cgroup(shared, pid);
    let container = Arc::new(container);
    shared.publish_ready(&container);
    publish(shared, &task_create(request, pid));
    guard.started(ProcRef {
        container: Arc::clone(&container),
        process: init,
    });
    Ok(container)
}

/// runc create's flags; takes the runc ends of the stdio out of `io`.
fn create_options(
    request: &CreateRequest,
    options: &RuntimeOptions,
    io: &mut PreparedIo,
) -> CreateOptions {
    let runc_io = io.take_runc_io();
    CreateOptions {
        bundle: request.bundle.clone(),
        pid_file: request.bundle.join("init.pid"),
        console_socket: io.console_socket().map(Path::to_path_buf),
        no_pivot: options.no_pivot_root,
        no_new_keyring: options.no_new_keyring,
        stdio: RuncStdio {
            stdin: runc_io.stdin,
            stdout: runc_io.stdout,
            stderr: runc_io.stderr,
        },
    }
}

pub fn prepare_io(
    shared: &Shared,
    id: &str,
    stdio: &StdioPaths,
    options: &RuntimeOptions,
) -> Result<PreparedIo, Error> {
    let mut config = IoConfig::new(id, shared.namespace.as_str());
    config.owner = IoOwner {
        uid: options.io_uid,
        gid: options.io_gid,
    };
    PreparedIo::new(&to_io_stdio(stdio), &config, &*shared.spawner).map_err(|source| Error::Io {
        id: id.to_owned(),
        source,
    })
}

pub fn to_io_stdio(stdio: &StdioPaths) -> wren_io::Stdio {
    wren_io::Stdio {
        stdin: stdio.stdin.clone(),
        stdout: stdio.stdout.clone(),
        stderr: stdio.stderr.clone(),
        terminal: stdio.terminal,
    }
}

pub fn task_create(request: &CreateRequest, pid: u32) -> TaskCreate {
    let mut event = TaskCreate::new();
    event.container_id.clone_from(&request.id);
    event.bundle = request.bundle.to_string_lossy().into_owned();
    event.rootfs = request
        .mounts
        .iter()
        .map(|m| {
            let mut mount = Mount::new();
            mount.type_.clone_from(&m.kind);
            mount.source.clone_from(&m.source);
            mount.target.clone_from(&m.target);
            mount.options.clone_from(&m.options);
            mount
        })
        .collect();
    let mut io = TaskIO::new();
    io.stdin.clone_from(&request.stdio.stdin);
    io.stdout.clone_from(&request.stdio.stdout);
    io.stderr.clone_from(&request.stdio.stderr);
    io.terminal = request.stdio.terminal;
    event.io = MessageField::some(io);
    event.checkpoint.clone_from(&request.checkpoint);
    event.pid = pid;
    event
}

pub fn publish<E: wren_shim_protocol::topics::TaskEvent>(shared: &Shared, event: &E) {
    if let Err(err) = shared.publisher.publish(event) {
        log::error!("failed to queue {}: {err}", E::TOPIC);
    }
}

/// Delete of the init: the container's end. Returns the init's last snapshot.
pub fn delete(shared: &Shared, container: &Container) -> Result<Snapshot, Error> {
    let init = &container.init;
    let _ops = init.lock_ops();
    let state = init.check(Op::Delete).map_err(|source| Error::Transition {
        id: container.id.clone(),
        source,
    })?;
    let created = state == ProcState::Init(InitState::Created);
    if created {
        // runc delete kills a created init; its exit must be queued before TaskDelete.
        remove_runc_container(container)?;
        // An init still waiting for its restore has no process (pid 0) to reap.
        if init.pid() != 0 && init.wait_exit_timeout(CREATED_EXIT_TIMEOUT).is_none() {
            log::warn!("created init of {} not reaped after delete", container.id);
        }
    }
    if !init.wait_drained(DELETE_DRAIN_TIMEOUT) {
        log::warn!(
            "output of {} not drained after {DELETE_DRAIN_TIMEOUT:?}: closing",
            container.id
        );
    }
    if !created {
        remove_runc_container(container)?;
    }
    if let Some(io) = init.take_io() {
        io.close(IO_CLOSE_GRACE);
    }
    container.close_exec_io();
    container.unmount_rootfs()?;
    container.stop_oom_watch(&shared.oom);
    let snapshot = init.mark_deleted();
    shared.release(&container.id);
    shared.lifecycle.forget(&container.id);
    publish(shared, &task_delete(&container.id, snapshot));
    Ok(snapshot)
}

/// `runc delete` without `--force`; a container runc no longer knows is already gone.
fn remove_runc_container(container: &Container) -> Result<(), Error> {
    match container.runc.delete(&container.id, DeleteMode::Stopped) {
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        result => result.map_err(|source| Error::Runc {
            verb: "delete",
            source,
        }),
    }
}

fn task_delete(id: &str, snapshot: Snapshot) -> TaskDelete {
    let exit = snapshot.exit.unwrap_or(ExitRecord {
        status: 0,
        at: SystemTime::now(),
    });
    let mut event = TaskDelete::new();
    event.container_id = id.to_owned();
    event.pid = snapshot.pid;
    event.exit_status = exit.status;
    event.exited_at = MessageField::some(to_timestamp(exit.at));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_of(spec: &str) -> ExitPolicy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), spec).unwrap();
        exit_policy(dir.path())
    }

    #[test]
    fn only_a_private_pid_namespace_spares_kill_all() {
        let private = r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;
        assert_eq!(policy_of(private), ExitPolicy::InitOnly);
        let joined = r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#;
        assert_eq!(policy_of(joined), ExitPolicy::KillAll);
        assert_eq!(
            policy_of(r#"{"linux":{"namespaces":[{"type":"ipc"}]}}"#),
            ExitPolicy::KillAll
        );
        assert_eq!(policy_of("not json"), ExitPolicy::KillAll);
        let missing = tempfile::tempdir().unwrap();
        assert_eq!(exit_policy(missing.path()), ExitPolicy::KillAll);
    }
}
