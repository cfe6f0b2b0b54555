//! The only unsafe code of the crate: what runs in a runtime child between fork and exec.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child die with its parent and keeps stray inherited fds out of it.
///
/// After fork the child:
/// 1. sets `PR_SET_PDEATHSIG` to SIGKILL, so a runtime call never outlives a crashed
///    shim (the signal fires when the *forking thread* exits; the driver's calls are
///    synchronous, so that thread outlives the child's useful life);
/// 2. fails the spawn if the parent already died before step 1 took effect;
/// 3. marks every fd above 2 close-on-exec, so an fd some other library opened without
///    `O_CLOEXEC` cannot leak into the runtime. std's own error pipe is already
///    close-on-exec and keeps working; the stdio that std `dup2`ed to 0-2 is untouched.
pub(crate) fn harden_child(cmd: &mut Command) {
    // Computed before the fork: getpid(2) in the child would return the child's pid.
    let parent = nix::unistd::getpid();
    let pre_exec = move || {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        if nix::unistd::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        mark_inherited_fds_cloexec();
        Ok(())
    };
    // SAFETY: the closure runs in the forked child of a possibly multi-threaded parent, so
    // it may only use async-signal-safe operations. It calls prctl(2), getppid(2) and
    // close_range(2) directly, reads errno, and builds an `io::Error` from a raw os code
    // (no allocation). It captures only a `Pid` (Copy), takes no locks, touches no heap
    // and does not log.
    unsafe { cmd.pre_exec(pre_exec) };
}

/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`; on kernels before 5.11 (ENOSYS, EINVAL)
/// nothing happens, which is still correct because every fd of ours is born CLOEXEC.
fn mark_inherited_fds_cloexec() {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on fds of this
    // process; it takes integer arguments, reads and writes no user memory and is a
    // plain syscall, hence async-signal-safe. Its result is ignored on purpose.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3_u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}
