//! The runc task service's errors, and their one mapping to ttrpc status codes
//! (docs/protocol.md §2.2-2.4): NotFound for unknown or gone objects, AlreadyExists for taken ids,
//! FailedPrecondition for execs of a container whose init has exited, InvalidArgument for
//! malformed requests, and Unknown for everything else, as containerd's Go shim answers.

use std::io;
use std::path::PathBuf;

use wren_runc_driver::ErrorKind as RuncErrorKind;
use wren_shim::identifier::InvalidIdentifier;
use wren_shim::rootfs;
use wren_shim::status::{self, Code};

use crate::options;
use crate::state::{ExecState, Found, InitState, Op, TransitionError};

/// Everything a task RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidId(#[from] InvalidIdentifier),
    #[error("container {id} not created")]
    ContainerNotFound { id: String },
    #[error("container {id} already exists")]
    ContainerExists { id: String },
    #[error("exec {exec_id} of container {id} not found")]
    ExecNotFound { id: String, exec_id: String },
    #[error("exec {exec_id} already exists in container {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("container {id} init process is not running")]
    InitNotRunning { id: String },
    #[error("exec {exec_id} of container {id} has not been started")]
    ExecNotStarted { id: String, exec_id: String },
    #[error("process {id} already finished")]
    ProcessFinished { id: String },
    #[error("process {id} was deleted before it exited")]
    DeletedBeforeExit { id: String },
    #[error("container {id}")]
    Transition {
        id: String,
        #[source]
        source: TransitionError,
    },
    #[error("bundle {} of container {id} is not an absolute path", bundle.display())]
    BundleNotAbsolute { id: String, bundle: PathBuf },
    #[error("bundle {} of container {id} is not an existing directory", bundle.display())]
    BundleNotDirectory { id: String, bundle: PathBuf },
    #[error("invalid runtime options for container {id}")]
    Options {
        id: String,
        #[source]
        source: options::Error,
    },
    #[error("failed to save the runtime options of container {id}")]
    SaveOptions {
        id: String,
        #[source]
        source: options::Error,
    },
    #[error("failed to mount the rootfs of container {id}")]
    Mount {
        id: String,
        #[source]
        source: rootfs::Error,
    },
    #[error("failed to unmount the rootfs of container {id}")]
    Unmount {
        id: String,
        #[source]
        source: rootfs::Error,
    },
    #[error("failed to set up the stdio of {id}")]
    Io {
        id: String,
        #[source]
        source: wren_io::IoError,
    },
    #[error("OCI runtime {verb} failed")]
    Runc {
        verb: &'static str,
        #[source]
        source: wren_runc_driver::Error,
    },
    #[error("exec {exec_id} carries a process spec of type {type_url}")]
    ExecSpecType { exec_id: String, type_url: String },
    #[error("exec {exec_id} carries a malformed process spec")]
    ExecSpec {
        exec_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("update of container {id} carries resources of type {type_url}")]
    ResourcesType { id: String, type_url: String },
    #[error("checkpoint options of container {id} are malformed")]
    CheckpointOptions {
        id: String,
        #[source]
        source: wren_shim_protocol::any::AnyError,
    },
    #[error("checkpoint image {path} of container {id} cannot be read")]
    CheckpointImage {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint image {path} of container {id} is not a directory")]
    CheckpointNotDirectory { id: String, path: PathBuf },
    #[error("failed to create the criu work directory {path} of container {id}")]
    RestoreWorkDir {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to signal process {pid} of {id}")]
    Signal {
        id: String,
        pid: u32,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("signal {signal} is not a valid signal number")]
    InvalidSignal { signal: u32 },
    #[error("container {id} has no cgroup")]
    NoCgroup { id: String },
    #[error("failed to read the cgroup statistics of container {id}")]
    Stats {
        id: String,
        #[source]
        source: wren_cgroups::StatsError,
    },
    #[error("failed to encode {what}")]
    Pack {
        what: &'static str,
        #[source]
        source: wren_shim_protocol::any::AnyError,
    },
    #[error("failed to remove {path}")]
    RemoveFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to spawn the {name} thread")]
    SpawnThread {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to start the stdio copy engine")]
    Engine(#[source] wren_io::EngineError),
    #[error("failed to start the oom watcher")]
    OomWatcher(#[source] wren_cgroups::OomError),
    #[error("failed to put the oom watcher in the main loop")]
    OomOnMainLoop(#[source] wren_shim::loop_sources::LoopStarted),
}

impl Error {
    /// The status code containerd should see.
    pub fn code(&self) -> Code {
        match self {
            Self::ContainerNotFound { .. }
            | Self::ExecNotFound { .. }
            | Self::DeletedBeforeExit { .. }
            | Self::ProcessFinished { .. }
            | Self::NoCgroup { .. } => Code::NotFound,
            Self::ContainerExists { .. } | Self::ExecExists { .. } => Code::AlreadyExists,
            Self::InitNotRunning { .. } | Self::ExecNotStarted { .. } => Code::FailedPrecondition,
            Self::Transition { source, .. } => transition_code(source),
            Self::Runc { verb, source } => runc_code(verb, source.kind()),
            Self::Signal { source, .. } if *source == nix::errno::Errno::ESRCH => Code::NotFound,
            Self::InvalidId(_)
            | Self::BundleNotAbsolute { .. }
            | Self::BundleNotDirectory { .. }
            | Self::Options { .. }
            | Self::ExecSpecType { .. }
            | Self::ExecSpec { .. }
            | Self::ResourcesType { .. }
            | Self::CheckpointOptions { .. }
            | Self::CheckpointImage { .. }
            | Self::CheckpointNotDirectory { .. }
            | Self::InvalidSignal { .. } => Code::InvalidArgument,
            Self::Io {
                source: wren_io::IoError::Uri(_),
                ..
            } => Code::InvalidArgument,
            _ => Code::Unknown,
        }
    }
}

/// A deleted process is gone (NotFound); exec on a stopped init is a precondition failure
/// (the brief's contract, and errdefs' meaning); other illegal moves are Unknown, as in Go.
fn transition_code(error: &TransitionError) -> Code {
    match (error.op, error.found) {
        (_, found) if found.is_deleted() => Code::NotFound,
        (Op::Exec, Found::Init(InitState::Stopped)) => Code::FailedPrecondition,
        (Op::Start, Found::Exec(ExecState::Stopped)) => Code::FailedPrecondition,
        _ => Code::Unknown,
    }
}

/// runc's own classification: a missing container is NotFound everywhere; a process that is
/// no longer running is NotFound for kill only ("process already finished", `checkKillError`).
fn runc_code(verb: &str, kind: RuncErrorKind) -> Code {
    match (verb, kind) {
        (_, RuncErrorKind::NotFound) | ("kill", RuncErrorKind::NotRunning) => Code::NotFound,
        (_, RuncErrorKind::AlreadyExists) => Code::AlreadyExists,
        _ => Code::Unknown,
    }
}

impl From<Error> for ttrpc::Error {
    fn from(error: Error) -> Self {
        status::error(error.code(), &error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(error: Error) -> ttrpc::Code {
        match ttrpc::Error::from(error) {
            ttrpc::Error::RpcStatus(status) => status.code.enum_value().unwrap(),
            other => panic!("not a status: {other:?}"),
        }
    }

    fn runc_failure(verb: &'static str, message: &str) -> Error {
        Error::Runc {
            verb,
            source: fake_runc_error(verb, message),
        }
    }

    /// A real runtime failure: a script standing in for runc prints `message` and fails.
    fn fake_runc_error(verb: &'static str, message: &str) -> wren_runc_driver::Error {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("runc");
        let body = format!("#!/bin/sh\necho '{message}' >&2\nexit 1\n");
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let runc = wren_runc_driver::Runc::new(
            wren_runc_driver::RuncConfig {
                binary: script,
                ..Default::default()
            },
            std::sync::Arc::new(wren_process::DirectSpawner),
        );
        match verb {
            "kill" => runc
                .kill("c1", 9, wren_runc_driver::KillScope::Init)
                .unwrap_err(),
            _ => runc.start("c1").unwrap_err(),
        }
    }

    #[test]
    fn lookups_map_to_not_found_and_already_exists() {
        let id = || "c1".to_owned();
        assert_eq!(
            code_of(Error::ContainerNotFound { id: id() }),
            ttrpc::Code::NOT_FOUND
        );
        let exec = Error::ExecNotFound {
            id: id(),
            exec_id: "e1".into(),
        };
        assert_eq!(code_of(exec), ttrpc::Code::NOT_FOUND);
        assert_eq!(
            code_of(Error::ContainerExists { id: id() }),
            ttrpc::Code::ALREADY_EXISTS
        );
        let dup = Error::ExecExists {
            id: id(),
            exec_id: "e1".into(),
        };
        assert_eq!(code_of(dup), ttrpc::Code::ALREADY_EXISTS);
        assert_eq!(
            code_of(Error::NoCgroup { id: id() }),
            ttrpc::Code::NOT_FOUND
        );
    }

    #[test]
    fn exec_after_init_exit_is_failed_precondition() {
        let id = || "c1".to_owned();
        assert_eq!(
            code_of(Error::InitNotRunning { id: id() }),
            ttrpc::Code::FAILED_PRECONDITION
        );
        let source = InitState::Stopped.check(Op::Exec).unwrap_err();
        let error = Error::Transition { id: id(), source };
        assert_eq!(code_of(error), ttrpc::Code::FAILED_PRECONDITION);
        let not_started = Error::ExecNotStarted {
            id: id(),
            exec_id: "e".into(),
        };
        assert_eq!(code_of(not_started), ttrpc::Code::FAILED_PRECONDITION);
    }

    #[test]
    fn transitions_map_like_the_go_shim() {
        let deleted = InitState::Deleted.check(Op::Kill).unwrap_err();
        let error = Error::Transition {
            id: "c1".into(),
            source: deleted,
        };
        assert_eq!(code_of(error), ttrpc::Code::NOT_FOUND);
        let running = InitState::Running.check(Op::Delete).unwrap_err();
        let error = Error::Transition {
            id: "c1".into(),
            source: running,
        };
        assert_eq!(code_of(error), ttrpc::Code::UNKNOWN);
    }

    #[test]
    fn runc_failures_follow_the_driver_classification() {
        let gone = runc_failure("kill", "container not running");
        assert_eq!(code_of(gone), ttrpc::Code::NOT_FOUND);
        let missing = runc_failure("start", "container does not exist");
        assert_eq!(code_of(missing), ttrpc::Code::NOT_FOUND);
        let not_running = runc_failure("start", "container not running");
        assert_eq!(code_of(not_running), ttrpc::Code::UNKNOWN);
        let other = runc_failure("start", "exec: \"nope\": executable file not found");
        assert_eq!(code_of(other), ttrpc::Code::UNKNOWN);
    }

    #[test]
    fn esrch_on_exec_kill_is_not_found() {
        let error = Error::Signal {
            id: "e1".into(),
            pid: 1,
            source: nix::errno::Errno::ESRCH,
        };
        assert_eq!(code_of(error), ttrpc::Code::NOT_FOUND);
    }

    #[test]
    fn message_carries_the_chain() {
        let error = runc_failure("start", "boom");
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(error) else {
            panic!()
        };
        assert!(
            status
                .message
                .starts_with("OCI runtime start failed: start c1 failed"),
            "{}",
            status.message
        );
        assert!(status.message.contains("boom"));
    }
}
