//! cgroup statistics (v1 and v2) as plain Rust structs, and an OOM watcher.
//!
//! Locate a process's cgroup once with [`Cgroup::for_pid`] (or [`Cgroup::from_membership`]
//! with a [`MountTable`] for fixtures), then call [`Cgroup::stats`] as often as needed. The
//! structs mirror containerd's `io.containerd.cgroups.v1.Metrics` ([`v1::Metrics`]) and
//! `io.containerd.cgroups.v2.Metrics` ([`v2::Metrics`]) field for field and unit for unit, so
//! the shim maps them to protobuf mechanically. This crate knows nothing of protobuf.
//!
//! [`OomWatcher`] runs one thread (`oom`) with one epoll set for every watched cgroup: an
//! eventfd per v1 cgroup and one inotify instance for all v2 cgroups.

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("wren-cgroups reads Linux cgroupfs and only builds for Linux");

mod blkio;
mod locate;
mod oom;
mod psi;
mod rdma;
mod read;
pub mod v1;
pub mod v2;

pub use locate::{hugepage_sizes, Cgroup, LocateError, MountTable, V1Cgroup, V2Cgroup};
pub use oom::{Flush, OomError, OomEvent, OomPoller, OomSink, OomWatcher};
pub use read::StatsError;

/// The statistics of one cgroup, in the shape of the host's cgroup version.
#[derive(Debug, Clone, PartialEq)]
pub enum Stats {
    /// A legacy or hybrid host: `io.containerd.cgroups.v1.Metrics`.
    V1(v1::Metrics),
    /// A unified host: `io.containerd.cgroups.v2.Metrics`.
    V2(v2::Metrics),
}
