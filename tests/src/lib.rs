//! Support for wren's integration tests: visible skips, busybox bundles, leak checks.
//!
//! Tests that need root call [`require_root!`]: without root they print a `SKIP` line
//! and return, and under `CI=true` the skip becomes a failure, so CI can never go
//! green by skipping.

pub mod bundle;
pub mod containerd;
pub mod cri;
pub mod criu;
pub mod docker;
pub mod leaks;
pub mod skip;
pub mod version;

pub use bundle::{busybox_rootfs, unique_id, Bundle};
pub use containerd::{Containerd, Runtime};
pub use criu::criu_works;
pub use leaks::{is_zombie, live_processes, open_fds, workspace_bin, ProcInfo};
pub use skip::{is_root, skip};
pub use version::ContainerdVersion;
