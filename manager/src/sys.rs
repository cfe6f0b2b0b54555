//! The few syscalls without a safe wrapper in std or nix.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Opens a pidfd for `pid`: a handle that stays bound to that process even if the
/// number is reused, and becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: pidfd_open(2) takes a pid and a flags word (0), touches no memory of ours,
    // and returns either -1 or a new fd (always close-on-exec) that nothing else owns.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` exited within `timeout`.
pub fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(ready) => return Ok(ready > 0),
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The window size of the terminal behind `fd`.
pub fn window_size(fd: impl AsFd) -> io::Result<WindowSize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points
    // at a live, properly aligned local of exactly that type; the fd is borrowed and open.
    let ret = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(WindowSize {
        width: size.ws_col,
        height: size.ws_row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_reports_child_exit() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        assert!(wait_exit(&pidfd, Duration::from_secs(30)).unwrap());
        child.wait().unwrap();
    }

    #[test]
    fn window_size_of_non_tty_fails() {
        let file = tempfile::tempfile().unwrap();
        assert!(window_size(&file).is_err());
    }
}
