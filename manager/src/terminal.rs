//! The local terminal for `-t` sessions: raw mode while attached, and window-size
//! changes forwarded to the container's pty.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::thread::JoinHandle;

use nix::sys::termios::{self, SetArg, Termios};
use signal_hook::consts::SIGWINCH;
use signal_hook::iterator::{Handle, Signals};

use crate::sys::{self, WindowSize};

/// Errors from terminal setup.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// Reading the terminal's attributes failed (stdin is not a terminal?).
    #[error("failed to read terminal attributes")]
    GetAttr(#[source] nix::Error),
    /// Switching to raw mode failed.
    #[error("failed to switch the terminal to raw mode")]
    SetAttr(#[source] nix::Error),
    /// Registering for SIGWINCH failed.
    #[error("failed to watch for window size changes")]
    Signals(#[source] io::Error),
    /// Spawning the resize thread failed.
    #[error("failed to spawn the resize thread")]
    Spawn(#[source] io::Error),
}

/// Puts stdin's terminal in raw mode until dropped, then restores it.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin to raw mode.
    pub fn enable() -> Result<Self, TerminalError> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).map_err(TerminalError::GetAttr)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(TerminalError::SetAttr)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The current size of stdin's terminal.
pub fn stdin_size() -> io::Result<WindowSize> {
    let stdin = io::stdin();
    let fd: BorrowedFd<'_> = stdin.as_fd();
    sys::window_size(fd)
}

/// Calls `resize` now and on every SIGWINCH until dropped.
#[derive(Debug)]
pub struct ResizeForwarder {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl ResizeForwarder {
    /// Starts forwarding.
    pub fn start(resize: impl Fn(WindowSize) + Send + 'static) -> Result<Self, TerminalError> {
        let mut signals = Signals::new([SIGWINCH]).map_err(TerminalError::Signals)?;
        let handle = signals.handle();
        if let Ok(size) = stdin_size() {
            resize(size);
        }
        let thread = std::thread::Builder::new()
            .name("sigwinch".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if let Ok(size) = stdin_size() {
                        resize(size);
                    }
                }
            })
            .map_err(TerminalError::Spawn)?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for ResizeForwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
