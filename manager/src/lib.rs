//! wren's manager: launch and drive any containerd shim v2 binary from an OCI bundle,
//! without containerd.
//!
//! It does what containerd's runtime-v2 manager does and nothing else:
//! - [`launch::ShimConfig`] runs `<shim> start` / `<shim> delete` with containerd's argv, env and stdin;
//! - [`address`] parses what `start` prints (plain, JSON, `BootstrapResult`);
//! - [`events::EventSink`] serves `Events/Forward` at the shim's `TTRPC_ADDRESS`;
//! - [`client::TaskClient`] is a typed task client (v2 or v3 service);
//! - [`shim::Shim`] ties these together and tears a shim down like containerd;
//! - [`stdio`] makes and pumps client-side FIFOs; [`bundle`] writes default bundles;
//! - [`state`] is `wrenctl`'s on-disk record of the containers it started.
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("wren-manager targets Linux only");

pub mod address;
pub mod bundle;
pub mod client;
pub mod events;
pub mod fifo;
pub mod launch;
pub mod shim;
pub mod shim_log;
pub mod signals;
pub mod state;
pub mod stdio;
pub mod sys;
pub mod terminal;

pub use wren_shim_protocol as protocol;

/// Renders an error and its `source()` chain as one line, `outer: inner: root`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
