//! The OCI runtime CLI (runc, crun, or any runc-compatible binary) as typed Rust.
//!
//! A shim never builds runtime command lines by hand; it calls [`Runc`]. The argv of each
//! method is the one containerd's Go shim uses (docs/protocol.md §5.2), and a failed call
//! carries the runtime's own last error message from its JSON log (§4.4), classified by
//! [`Error::kind`] so callers never read message text themselves.
//!
//! Every child is spawned through a caller-supplied [`wren_process::Spawner`], which
//! registers for the exit *before* the fork, so the driver coexists with a `waitpid(-1)`
//! reaper (§5.1); `wren_process::DirectSpawner` serves programs without one. Each child gets
//! `PR_SET_PDEATHSIG(SIGKILL)`, loses `NOTIFY_SOCKET`, and inherits no fd above 2.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wren_process::DirectSpawner;
//! use wren_runc_driver::{Runc, RuncConfig};
//!
//! let runc = Runc::new(RuncConfig::default(), Arc::new(DirectSpawner));
//! let state = runc.state("my-container")?;
//! println!("{} is {:?} with pid {}", state.id, state.status, state.pid);
//! # Ok::<(), wren_runc_driver::Error>(())
//! ```

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("wren-runc-driver drives Linux container runtimes only");

mod error;
mod options;
mod runc;
mod runtime_log;
mod spawn;
mod sys;
mod types;

pub use error::{Error, ErrorKind, Invocation};
pub use options::{
    AfterCheckpoint, CheckpointOptions, CreateOptions, CriuOptions, DeleteMode, ExecOptions,
    KillScope, ProcessSpec, Resources, RestoreOptions, Stdio,
};
pub use runc::{CgroupDriver, Runc, RuncConfig};
pub use types::{CgroupFeatures, Features, LinuxFeatures, State, Status};
