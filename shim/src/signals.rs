//! The daemon's signals as readable fds, for its epoll loop.
//!
//! signal-hook's pipe handler writes a byte per delivery to a socket we own; the main loop
//! drains it and acts outside signal context. SIGCHLD and the termination signals get a
//! socket each, so the loop knows which arrived without reading siginfo.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

/// Read ends that become readable when a signal arrives.
#[derive(Debug)]
pub struct SignalPipes {
    /// SIGCHLD: a child (or a reparented orphan) may be ready to reap.
    pub child: UnixStream,
    /// SIGTERM or SIGINT.
    pub terminate: UnixStream,
}

impl SignalPipes {
    /// Installs the handlers. Call it before spawning any child, so no exit can be missed.
    ///
    /// # Errors
    /// A socket pair cannot be created or a handler cannot be installed.
    pub fn install() -> io::Result<Self> {
        let child = pipe_for(&[SIGCHLD])?;
        let terminate = pipe_for(&[SIGTERM, SIGINT])?;
        Ok(Self { child, terminate })
    }
}

fn pipe_for(signals: &[i32]) -> io::Result<UnixStream> {
    let (read, write) = UnixStream::pair()?;
    // The handler must never block; a full socket already means "signal pending".
    write.set_nonblocking(true)?;
    read.set_nonblocking(true)?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok(read)
}

/// Empties a signal socket; the bytes only say "at least one arrived".
pub fn drain(pipe: &UnixStream) {
    let mut buffer = [0u8; 64];
    let mut reader = pipe;
    while matches!(reader.read(&mut buffer), Ok(read) if read > 0) {}
}
