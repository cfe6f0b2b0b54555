//! The pipes between runc and the shim.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{fchown, Gid, Uid};

use crate::engine::Direction;

/// The uid and gid that own the container's end of its stdio pipes (`IoUid`/`IoGid`), so
/// a process running as that user can reopen `/proc/self/fd/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoOwner {
    /// Owning uid.
    pub uid: u32,
    /// Owning gid.
    pub gid: u32,
}

/// Failures creating a stdio pipe.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// pipe2 failed.
    #[error("failed to create a {direction:?} pipe")]
    Create {
        /// Which stream the pipe was for.
        direction: Direction,
        /// The pipe2 error.
        #[source]
        source: Errno,
    },
    /// fchown of the container's end failed.
    #[error("failed to chown a {direction:?} pipe to {owner:?}")]
    Chown {
        /// Which stream the pipe was for.
        direction: Direction,
        /// The requested owner.
        owner: IoOwner,
        /// The fchown error.
        #[source]
        source: Errno,
    },
}

/// A pipe split by who holds which end.
#[derive(Debug)]
pub(crate) struct ProcessPipe {
    /// The end the shim keeps: the writer for stdin, the reader for output.
    pub(crate) shim_end: OwnedFd,
    /// The end handed to runc, owned by the container's IO user.
    pub(crate) runc_end: OwnedFd,
}

/// Creates a close-on-exec pipe whose runc end belongs to `owner`.
pub(crate) fn process_pipe(direction: Direction, owner: IoOwner) -> Result<ProcessPipe, PipeError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|source| PipeError::Create { direction, source })?;
    let (shim_end, runc_end) = match direction {
        Direction::Input => (write, read),
        Direction::Output => (read, write),
    };
    chown_pipe(runc_end.as_fd(), direction, owner)?;
    Ok(ProcessPipe { shim_end, runc_end })
}

/// Gives a pipe to `owner`; both ends share one inode, so either end will do.
pub(crate) fn chown_pipe(
    end: BorrowedFd<'_>,
    direction: Direction,
    owner: IoOwner,
) -> Result<(), PipeError> {
    fchown(
        end.as_raw_fd(),
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
    )
    .map_err(|source| PipeError::Chown {
        direction,
        owner,
        source,
    })
}
