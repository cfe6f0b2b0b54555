//! containerd shim v2 wire types and ttrpc services, generated from our own transcription of
//! containerd's `.proto` files (`protos/`), plus the small helpers every shim needs around them.
//!
//! Generated modules (paths other crates code against):
//! - [`task`]: the `containerd.task.v2` request and response messages;
//! - [`task_ttrpc`]: the `Task` server trait, `TaskClient` and `create_task`;
//! - [`events`]: the `containerd.events.Task*` event messages;
//! - [`events_ttrpc`]: the `Events` service (`Forward`) and its `ForwardRequest`;
//! - [`types`]: `Mount`, `Status`, `ProcessInfo`, `Envelope`, `RuntimeInfo`, `Platform`;
//! - [`runc`]: `containerd.runc.v1` options;
//! - [`runtimeoptions`]: the CRI plugin's `runtimeoptions.v1.Options`;
//! - [`cgroups_v1`], [`cgroups_v2`]: the cgroup metrics carried by `Stats`;
//! - [`bootstrap`]: containerd 2.3's `BootstrapParams` / `BootstrapResult`;
//! - [`vm_agent`]: wren's own VM guest agent API (messages and ttrpc client/server).
//!
//! Hand-written helpers: [`any`], [`topics`], [`timestamp`], [`task_service`], and, shared
//! by the shims, the manager and the benchmarks, [`identifier`] (containerd's id rule) and
//! [`address`] (`unix://` socket addresses).
#![warn(missing_docs)]

pub use protobuf;
pub use ttrpc;

pub mod address;
pub mod any;
pub mod identifier;
pub mod task_service;
pub mod timestamp;
pub mod topics;

/// The generated code, never edited; the lint wall does not apply to it.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::needless_pass_by_value,
    clippy::too_many_lines
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

/// The shim task API messages (`containerd.task.v2`; `containerd.task.v3` is byte-identical).
pub mod task {
    pub use crate::generated::shim::*;
}

/// The shim task service: the [`Task`](task_ttrpc::Task) trait servers implement,
/// [`TaskClient`](task_ttrpc::TaskClient) and [`create_task`](task_ttrpc::create_task)
/// (registered as `containerd.task.v2.Task`; see [`crate::task_service`] for v3).
pub mod task_ttrpc {
    pub use crate::generated::shim_ttrpc::*;
}

/// Task lifecycle events (`containerd.events`), published through [`events_ttrpc`].
pub mod events {
    pub use crate::generated::task_events::*;
}

/// containerd's ttrpc events service (`containerd.services.events.ttrpc.v1.Events`).
pub mod events_ttrpc {
    pub use crate::generated::events_service::ForwardRequest;
    pub use crate::generated::events_service_ttrpc::*;
}

/// Shared containerd types from several proto packages.
pub mod types {
    pub use crate::generated::event::Envelope;
    pub use crate::generated::introspection::{RuntimeInfo, RuntimeRequest, RuntimeVersion};
    pub use crate::generated::mount::Mount;
    pub use crate::generated::platform::Platform;
    pub use crate::generated::process::{Process, ProcessInfo, Status};
}

/// runc runtime options (`containerd.runc.v1`).
pub mod runc {
    pub use crate::generated::runc_options::*;
}

/// The options containerd's CRI plugin gives runtimes other than runc's (`runtimeoptions.v1`).
pub mod runtimeoptions {
    pub use crate::generated::cri_runtime_options::*;
}

/// cgroup v1 statistics (`io.containerd.cgroups.v1`).
pub mod cgroups_v1 {
    pub use crate::generated::cgroups_v1_metrics::*;
}

/// cgroup v2 statistics (`io.containerd.cgroups.v2`).
pub mod cgroups_v2 {
    pub use crate::generated::cgroups_v2_metrics::*;
}

/// wren's VM guest agent API (`wren.vm.agent.v1`): messages, `AgentClient` and the `Agent`
/// service, spoken by `containerd-shim-wrenvm-v2` to its agent over virtio-serial.
pub mod vm_agent {
    pub use crate::generated::vm_agent::*;
    pub use crate::generated::vm_agent_ttrpc::*;
}

/// containerd 2.3+ start-up handshake (`containerd.runtime.bootstrap.v1`).
pub mod bootstrap {
    pub use crate::generated::bootstrap::*;
}
