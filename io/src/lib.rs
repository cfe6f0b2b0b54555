//! Container stdio plumbing for a containerd shim: stdio URI schemes, the pipes between
//! runc and the shim, FIFO opening that never hangs, one splice-based copy engine for
//! every process, logging binaries, and pty consoles.
//!
//! Nothing here knows protobuf or ttrpc. The shim drives one [`PreparedIo`] per process
//! (see [`process`] for the flow) and shares one [`Engine`] across all of them.
//!
//! The engine writes to pipes, so the process must ignore SIGPIPE (Rust programs do by
//! default); a vanished consumer is then an `EPIPE` error, handled per stream.

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("wren-io supports Linux only");

pub mod console;
pub mod drain;
pub mod endpoint;
pub mod engine;
pub mod logger;
pub mod pipe;
pub mod process;
mod pump;
mod sys;
pub mod uri;

pub use console::{Console, ConsoleError, ConsoleSocket};
pub use drain::Drain;
pub use endpoint::EndpointError;
pub use engine::{Attachment, Direction, Engine, EngineError, EngineHandle, Transfer};
pub use logger::LoggerError;
pub use pipe::{IoOwner, PipeError};
pub use process::{IoConfig, IoError, PreparedIo, ProcessIo, RuncIo};
pub use uri::{IoPlan, LoggerCommand, Output, Readiness, Stdio, UriError};
