//! `containerd-shim-wrenvm-v2` (runtime type `io.containerd.wrenvm.v2`): an example
//! VM-backed runtime on the wren shim framework. One QEMU microVM per daemon, so per pod
//! (the framework groups a pod's tasks into one daemon), containers' roots shared with it
//! over virtio-9p, their processes run by a guest agent (`wrenvm-agent`) spoken to with
//! ttrpc over a virtio-serial port. See docs/guide.md, "VM runtimes".

mod config;
mod cpio;
mod error;
mod initramfs;
mod service;
mod spec;
mod stdio;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sha2::{Digest, Sha256};
use wren_shim::{CleanupContext, Runtime, ShimContext};

use crate::error::VmShimError;
use crate::service::WrenVm;

/// Written in each bundle at Create: the VM directory its task runs in.
pub const VM_DIR_FILE: &str = "wrenvm.vm";
/// The hidden mode that builds (or finds) the cached initramfs and prints its path.
const INITRAMFS_MODE: &str = "__initramfs";

impl Runtime for WrenVm {
    type Error = VmShimError;
    const NAME: &'static str = "io.containerd.wrenvm.v2";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(context: ShimContext) -> Result<Self, VmShimError> {
        Ok(WrenVm::new(
            context.publisher,
            context.monitor,
            vm_key(&context.namespace, &context.id),
        ))
    }

    /// The daemon is gone: if its VM outlived it, kill QEMU (only if its command line names
    /// the VM directory recorded in the bundle) and remove the directory; unmount the
    /// bundle's rootfs. Everything may already be gone.
    fn cleanup(context: &CleanupContext) -> Result<u32, VmShimError> {
        let recorded = std::fs::read(context.bundle.join(VM_DIR_FILE)).unwrap_or_default();
        let dir = PathBuf::from(String::from_utf8_lossy(&recorded).into_owned());
        if !recorded.is_empty() && dir.is_absolute() && dir.is_dir() {
            kill_stale_qemu(&dir);
            vm::remove_dir(&dir);
        }
        unmount_rootfs(&context.bundle);
        let _ = std::fs::remove_file(context.bundle.join(VM_DIR_FILE));
        Ok(0)
    }
}

/// A VM directory name, unique per daemon and short enough for a socket path.
fn vm_key(namespace: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{id}/{}", std::process::id()).as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn kill_stale_qemu(dir: &Path) {
    let pid: u32 = std::fs::read_to_string(dir.join(vm::PID_FILE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 0 {
        return;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    if cmdline.windows(needle.len()).any(|window| window == needle) && !parent_is_a_shim(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Give the kernel a moment to release QEMU's files before the directory goes.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether QEMU's parent is still a wrenvm shim: then the VM is served (a pod's other
/// tasks) and is not this cleanup's to kill.
fn parent_is_a_shim(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) state ppid ...`: comm may hold spaces, so split after its closing paren.
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .unwrap_or("0");
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
    let needle = b"containerd-shim-wrenvm-v2";
    cmdline.windows(needle.len()).any(|window| window == needle)
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == INITRAMFS_MODE)
    {
        return print_initramfs();
    }
    wren_shim::run::<WrenVm>()
}

/// `containerd-shim-wrenvm-v2 __initramfs`: builds the cached image and prints
/// `<kernel> <initramfs>` (for trying the guest by hand, and for the tests' probe).
fn print_initramfs() -> ExitCode {
    let built = config::Config::from_env()
        .map_err(vm::VmError::from)
        .and_then(|config| Ok((initramfs::ensure(&config, None)?, config)));
    match built {
        Ok((image, config)) => {
            println!("{} {}", config.kernel.display(), image.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}", wren_shim::status::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Undoes the rootfs mounts of Create (if any: `ctr run --rootfs` sends none). Safe to repeat:
/// Delete and the `delete` action both call it.
fn unmount_rootfs(bundle: &Path) {
    if let Err(err) = wren_shim::rootfs::unmount_recursive(&bundle.join("rootfs")) {
        log::warn!("{err}");
    }
}
