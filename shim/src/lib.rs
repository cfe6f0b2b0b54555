//! A framework for containerd runtime v2 shims, synchronous (threads, no async runtime).
//!
//! A runtime implements [`TaskService`] (the task RPCs, each defaulting to `Unimplemented`)
//! and [`Runtime`] (construction and launch-time hooks); its `main` is one call:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     wren_shim::run::<MyRuntime>()
//! }
//! ```
//!
//! The framework does the rest of the shim v2 contract (docs/protocol.md §0-§3):
//! - the launch protocol: Go-style flags ([`flags`]), `start` (socket naming and pod grouping
//!   ([`socket`]), stdin decoding ([`start_input`]), the daemon forked ([`launch`])), `delete`,
//!   `-info` and `-v`;
//! - the daemon ([`daemon`]): subreaper, signals ([`signals`]), logging to containerd's `log`
//!   FIFO ([`logger`]), the reaper and exit monitor ([`reaper`]), the ordered event publisher
//!   ([`publisher`]), and the ttrpc server ([`server`]) answering `containerd.task.v2.Task`
//!   and `containerd.task.v3.Task`, with `Connect` and `Shutdown` handled here ([`runtime`]);
//!   an idle daemon runs one thread, plus what its runtime keeps; work runs on threads that
//!   end when idle ([`pool`]);
//! - error codes for runtimes' own errors ([`status`]);
//! - containerd's rootfs mounts made and undone as containerd's own shim does ([`rootfs`]).
#![warn(missing_docs)]

pub mod daemon;
pub mod flags;
mod framing;
pub mod launch;
pub mod logger;
pub mod loop_sources;
mod memory;
pub mod pool;
pub mod publisher;
pub mod reaper;
pub mod rootfs;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod socket;
pub mod start_input;
pub mod status;
pub mod transient;

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use wren_shim_protocol::task::DeleteResponse;

/// containerd's identifier rule (it lives in the protocol crate, shared with the manager).
pub use wren_shim_protocol::identifier;

pub use crate::flags::{Flags, Invocation};
pub use crate::logger::Verbosity;
pub use crate::loop_sources::{LoopSource, MainLoopSources};
pub use crate::pool::{SerialQueue, WorkerPool};
pub use crate::publisher::Publisher;
pub use crate::runtime::{CleanupContext, Runtime, ShimContext, TaskService};
pub use crate::server::{Reply, RequestContext};
pub use crate::shutdown::{ShutdownReason, ShutdownTrigger};
pub use crate::status::Code;
pub use wren_process::{Exit, ExitWaiter, Monitor, SpawnError, Spawned, Spawner};

/// 128 + SIGKILL: what `delete` reports for a task whose shim died.
const KILLED_EXIT_STATUS: u32 = 137;

/// Errors of one shim invocation, printed on stderr by [`run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is invalid.
    #[error(transparent)]
    Flags(#[from] flags::FlagsError),
    /// `start` failed.
    #[error(transparent)]
    Start(#[from] launch::StartError),
    /// The daemon failed to come up.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// The reaper for `delete` failed to start.
    #[error(transparent)]
    Reaper(#[from] reaper::ReaperError),
    /// stdin could not be read (`-info`).
    #[error("failed to read stdin")]
    ReadStdin(#[source] io::Error),
    /// stdin is not a protobuf `Any` (`-info`).
    #[error("stdin is not a protobuf Any")]
    DecodeOptions(#[source] protobuf::Error),
    /// The working directory (the bundle) is unknown.
    #[error("failed to get the working directory")]
    Cwd(#[source] io::Error),
    /// A runtime hook failed.
    #[error("runtime {name} failed to {step}")]
    Runtime {
        /// The runtime name.
        name: &'static str,
        /// The hook: "clean up" or "report info".
        step: &'static str,
        /// The runtime's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The answer could not be encoded.
    #[error("failed to encode the answer")]
    Encode(#[source] protobuf::Error),
    /// The answer could not be written to stdout.
    #[error("failed to write stdout")]
    WriteStdout(#[source] io::Error),
}

/// The shim binary's entry point: parses argv and runs the invocation it names.
///
/// On failure the error and its causes go to stderr and the exit code is 1.
pub fn run<R: Runtime>() -> ExitCode {
    // A non-UTF-8 argument cannot be a valid flag or id: let the parser reject it by name.
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned());
    match run_invocation::<R>(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(io::stderr(), "{}", status::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn run_invocation<R: Runtime>(args: impl Iterator<Item = String>) -> Result<(), Error> {
    let flags = Flags::parse(args)?;
    match flags.invocation()? {
        Invocation::Help => {
            let binary = std::env::args_os().next().unwrap_or_default();
            write_stdout(flags::usage(&binary.to_string_lossy(), R::NAME).as_bytes())
        }
        Invocation::Version => {
            let binary = std::env::args_os().next().unwrap_or_default();
            let binary = binary.to_string_lossy();
            let text = format!(
                "{binary}:\n  Runtime: {}\n  Version: {}\n",
                R::NAME,
                R::VERSION
            );
            write_stdout(text.as_bytes())
        }
        Invocation::Info => info::<R>(),
        Invocation::Start => Ok(launch::start::<R>(&flags)?),
        Invocation::Delete => delete::<R>(&flags),
        Invocation::Daemon => Ok(daemon::serve::<R>(&flags)?),
    }
}

fn info<R: Runtime>() -> Result<(), Error> {
    let mut stdin = Vec::new();
    io::stdin()
        .read_to_end(&mut stdin)
        .map_err(Error::ReadStdin)?;
    let options = if stdin.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&stdin).map_err(Error::DecodeOptions)?)
    };
    let info = R::info(options.as_ref()).map_err(|source| Error::Runtime {
        name: R::NAME,
        step: "report info",
        source: Box::new(source),
    })?;
    write_stdout(&info.write_to_bytes().map_err(Error::Encode)?)
}

fn delete<R: Runtime>(flags: &Flags) -> Result<(), Error> {
    // The cleanup hook runs children (runc): reap them like the daemon does.
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD])
        .map_err(reaper::ReaperError::RegisterSignals)?;
    let monitor = Monitor::new();
    reaper::start_reaper(Arc::clone(&monitor), signals, || {})?;
    let bundle = match &flags.bundle {
        Some(bundle) => bundle.clone(),
        None => std::env::current_dir().map_err(Error::Cwd)?,
    };
    let context = CleanupContext {
        namespace: flags.namespace.clone(),
        id: flags.id.clone(),
        bundle,
        address: flags.address.clone(),
        monitor,
    };
    let pid = R::cleanup(&context).map_err(|source| Error::Runtime {
        name: R::NAME,
        step: "clean up",
        source: Box::new(source),
    })?;
    let mut response = DeleteResponse::new();
    response.pid = pid;
    response.exit_status = KILLED_EXIT_STATUS;
    response.exited_at = MessageField::some(wren_shim_protocol::timestamp::to_timestamp(
        SystemTime::now(),
    ));
    write_stdout(&response.write_to_bytes().map_err(Error::Encode)?)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(Error::WriteStdout)
}
