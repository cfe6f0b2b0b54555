//! `wrenvm-agent`: pid 1 of a wrenvm microVM's initramfs.
//!
//! It mounts the guest's pseudo file systems, loads the kernel modules the host packed next
//! to it, mounts the 9p share that holds every container's root, and then serves
//! `wren.vm.agent.v1.Agent` (ttrpc framing) on the virtio-serial port named
//! [`PORT_NAME`], until the host asks it to power off.
//!
//! It is also the guest's reaper: every process of every container is its child, and
//! orphans are reparented to it.

mod boot;
mod container;
mod modules;
mod process;
mod serve;
mod spawn;
mod stats;

use std::process::ExitCode;

/// The virtio-serial port the host's chardev is attached to (`virtserialport,name=`).
pub const PORT_NAME: &str = "wren.agent";
/// The 9p mount tag of the host's shared directory (`virtio-9p-pci,mount_tag=`).
pub const SHARE_TAG: &str = "wrenvm";
/// Where the share is mounted in the guest: container `<id>`'s root is `<SHARE_DIR>/<id>`.
pub const SHARE_DIR: &str = "/run/share";

fn main() -> ExitCode {
    if std::process::id() != 1 {
        eprintln!("wrenvm-agent: runs only as the init of a wrenvm guest");
        return ExitCode::FAILURE;
    }
    let port = match boot::boot() {
        Ok(port) => port,
        Err(error) => {
            eprintln!("wrenvm-agent: boot failed: {error:#}");
            boot::power_off();
        }
    };
    serve::serve(&port);
    boot::power_off();
}
