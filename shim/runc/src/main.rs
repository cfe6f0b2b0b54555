//! `containerd-shim-wren-v2`: the runc shim (runtime type `io.containerd.wren.v2`), a drop-in
//! for containerd's `containerd-shim-runc-v2` built on the wren shim framework (`wren-shim`).
//!
//! Layout: [`runtime`] holds the shared state and the framework's launch-time hooks;
//! [`service`] turns requests into calls and results into responses; [`container`] creates
//! and deletes containers; [`ops`] runs everything in between; [`process`] and [`state`] hold
//! each process's state machine; [`exits`] orders exits and their events; [`cleanup`] serves
//! the `delete` and `-info` invocations.

mod cleanup;
mod container;
mod error;
mod exits;
mod metrics;
mod ops;
mod options;
mod options_config;
mod process;
mod restore;
mod runtime;
mod service;
mod state;

use crate::runtime::Shared;

fn main() -> std::process::ExitCode {
    wren_shim::run::<runtime::RuncRuntime>()
}
