//! The few syscalls that have no safe wrapper in std or nix, each with its invariants.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::PollTimeout;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Puts the open file description behind `fd` into non-blocking mode.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Duplicates `fd` onto the lowest free descriptor not below `min`, close-on-exec.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> nix::Result<OwnedFd> {
    let raw = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned `raw` as a brand-new descriptor; no other
    // value in this process knows its number, so the OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sets the window size of the terminal `tty` (TIOCSWINSZ).
pub(crate) fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `tty` is a live descriptor for the duration of the borrow; TIOCSWINSZ reads
    // exactly one `struct winsize` through the pointer, which points at a live, initialised
    // local of that type; the kernel answers ENOTTY for anything that is not a terminal.
    let ret = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message on the connected unix socket `sock` and returns the first
/// descriptor it carried (SCM_RIGHTS), already close-on-exec; extra descriptors are closed.
pub(crate) fn receive_fd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut payload = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: recvmsg installed `raw` into our descriptor table moments ago
                // (with MSG_CMSG_CLOEXEC); nothing else in the process has seen the number.
                received.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok(received.into_iter().next())
}

/// Makes `cmd`'s child receive each `(source, target)` pair's source as descriptor `target`.
///
/// Every source must be above every target (callers use [`dup_at_least`]) so that no
/// `dup2` clobbers a source still to be moved, and no source equals its target (dup2 would
/// then keep its close-on-exec flag).
///
/// Known limit: std reports a failed exec over its own close-on-exec pipe; if that pipe
/// landed on a target number, a failed exec shows up as a child exiting at once instead of
/// a spawn error (the logger then looks dead to its ready wait, which is handled).
///
/// # Safety
///
/// Each source descriptor must stay open in the parent until `cmd` has been spawned; the
/// child only sees raw numbers.
pub(crate) unsafe fn map_fds_in_child(
    cmd: &mut Command,
    mapping: [(RawFd, RawFd); 3],
) -> io::Result<()> {
    let highest_target = mapping.iter().map(|&(_, target)| target).max().unwrap_or(0);
    if mapping.iter().any(|&(source, _)| source <= highest_target) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: the closure runs between fork and exec, and only calls dup2(2), which is
    // async-signal-safe; it reads a copied array and allocates nothing. dup2 onto a
    // different number clears close-on-exec on the target, so the targets survive exec
    // while the (close-on-exec) sources do not. The caller keeps the sources open.
    unsafe {
        cmd.pre_exec(move || {
            for (source, target) in mapping {
                if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// A poll(2) timeout covering at least `duration` (rounded up to whole milliseconds).
pub(crate) fn poll_timeout(duration: Duration) -> PollTimeout {
    let millis = duration.as_micros().div_ceil(1000);
    i32::try_from(millis).map_or(PollTimeout::MAX, |ms| {
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    })
}
