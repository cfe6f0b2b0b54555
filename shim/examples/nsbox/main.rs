//! `containerd-shim-nsbox-v2` (runtime type `io.containerd.nsbox.v2`): a second runtime on
//! the wren shim framework that runs a bundle without runc, directly in fresh namespaces.
//!
//! Each task's `process.args` runs as pid 1 of new pid, mount, uts and ipc (and, if the spec
//! asks, network) namespaces, in the spec's rootfs via `pivot_root`, with the spec's env,
//! cwd, hostname and uid/gid, stdio on containerd's FIFOs. The same binary re-executed as
//! `__init` does the namespace setup (`supervisor.rs` explains why). Supported: Create,
//! Start, State, Pids, Kill, Wait, Delete (Connect and Shutdown come from the framework);
//! everything else answers Unimplemented. It is an example, not a sandbox: no cgroups,
//! capabilities, seccomp, spec mounts beyond `/proc`, or terminal.

mod service;
mod spec;
mod supervisor;

use std::path::Path;
use std::process::ExitCode;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wren_shim::status::{self, Code};
use wren_shim::{CleanupContext, Runtime, ShimContext};

use crate::service::NsBox;

/// The file in the bundle holding the supervisor's pid, for the `delete` action.
const INIT_PID_FILE: &str = "init.pid";

/// Errors of the nsbox runtime, each with the code containerd acts on.
#[derive(Debug, thiserror::Error)]
pub enum NsboxError {
    #[error("task {id} not found")]
    NotFound { id: String },
    #[error("exec {exec_id} not found in task {id}: nsbox has no execs")]
    ExecNotFound { id: String, exec_id: String },
    #[error("task {id} already exists")]
    AlreadyExists { id: String },
    #[error("task {id} is {state}")]
    WrongState { id: String, state: &'static str },
    #[error("process already finished")]
    AlreadyFinished,
    #[error("invalid spec for task {id}")]
    Spec { id: String, source: spec::SpecError },
    #[error("{what} is not supported by nsbox")]
    Unsupported { what: &'static str },
    #[error("invalid signal {signal}")]
    Signal { signal: u32 },
    #[error(transparent)]
    Mount(#[from] wren_shim::rootfs::Error),
    #[error("failed to open {path}")]
    OpenStdio {
        path: String,
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

impl NsboxError {
    fn code(&self) -> Code {
        match self {
            NsboxError::NotFound { .. }
            | NsboxError::ExecNotFound { .. }
            | NsboxError::AlreadyFinished => Code::NotFound,
            NsboxError::AlreadyExists { .. } => Code::AlreadyExists,
            NsboxError::WrongState { .. } => Code::FailedPrecondition,
            NsboxError::Spec { .. } | NsboxError::Signal { .. } => Code::InvalidArgument,
            NsboxError::Unsupported { .. } => Code::Unimplemented,
            NsboxError::Mount(_)
            | NsboxError::OpenStdio { .. }
            | NsboxError::Spawn { .. }
            | NsboxError::Kill { .. } => Code::Unknown,
        }
    }
}

impl From<NsboxError> for ttrpc::Error {
    fn from(error: NsboxError) -> Self {
        status::error(error.code(), &error)
    }
}

impl Runtime for NsBox {
    type Error = NsboxError;
    const NAME: &'static str = "io.containerd.nsbox.v2";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(context: ShimContext) -> Result<Self, NsboxError> {
        Ok(NsBox::new(context.publisher, context.monitor))
    }

    /// The daemon is gone: kill its supervisor if it outlived it (the payload follows, by
    /// its parent-death signal) and unmount the rootfs. Everything may already be gone.
    fn cleanup(context: &CleanupContext) -> Result<u32, NsboxError> {
        let text = std::fs::read_to_string(context.bundle.join(INIT_PID_FILE)).unwrap_or_default();
        let pid = text.trim().parse().unwrap_or(0);
        if pid != 0 && is_our_supervisor(pid, &context.bundle) {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        unmount_rootfs(&context.bundle);
        Ok(pid)
    }
}

/// Whether `pid` still is the supervisor of this bundle, not a recycled pid.
fn is_our_supervisor(pid: u32, bundle: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|byte| *byte == 0).skip(1);
    args.next() == Some(supervisor::MODE.as_bytes())
        && args.next() == Some(bundle.as_os_str().as_encoded_bytes())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|arg| arg == supervisor::MODE) {
        return supervisor::run(args.skip(1));
    }
    wren_shim::run::<NsBox>()
}

/// Undoes the rootfs mounts of Create (if any: `ctr run --rootfs` sends none). Safe to repeat:
/// Delete and the `delete` action both call it.
fn unmount_rootfs(bundle: &Path) {
    if let Err(err) = wren_shim::rootfs::unmount_recursive(&bundle.join("rootfs")) {
        log::warn!("{err}");
    }
}
