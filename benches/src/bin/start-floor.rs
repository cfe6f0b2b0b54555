//! `start-floor`: prints a shim address and exits, nothing else.
//!
//! wren-bench times it exactly as it times a shim's `start` (same cwd, argv, environment and
//! output pipe read to EOF): the one exec of a Rust binary that containerd's `start` costs any
//! shim written in Rust, before the shim has done anything of its own. The shim start row
//! reports it as its floor.

use std::io::Write;

fn main() {
    // The benchmark only needs the output closed; a failed write shows as an empty answer.
    let _ = std::io::stdout().write_all(b"unix:///run/containerd/s/start-floor\n");
}
