//! One stream's copy state machine: moves bytes from a source to a destination without
//! ever blocking, by splice(2) while the kernel allows it and through a bounded buffer
//! otherwise.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::drain::Drain;
use crate::engine::Direction;

/// Bytes asked of one splice(2); the kernel moves at most what the pipes hold.
const SPLICE_CHUNK: usize = 1 << 20;
/// The user-space buffer of the read/write fallback: the most a stream ever holds in memory.
const BUFFER_SIZE: usize = 64 * 1024;
/// Transfers per wake-up before yielding to other streams; readiness is level-triggered,
/// so a stream that still has data is woken again at once.
const BUDGET: usize = 16;

/// Which end of a pump the engine waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source = 0,
    Destination = 1,
}

/// What a pump needs next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wake me when this side is ready.
    WaitFor(Side),
    /// The source hit EOF (or the destination of an input stream broke): retire me.
    Finished,
}

/// The outcome of a single transfer attempt.
enum Step {
    Moved,
    SourceEmpty,
    DestinationFull,
    Eof,
}

enum Mode {
    Splice,
    /// `buf[start..end]` is read but not yet written.
    Buffered {
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    },
}

/// A stream being copied.
pub(crate) struct Pump {
    source: OwnedFd,
    destination: OwnedFd,
    /// Set once the destination broke: output is then read and dropped, so the container
    /// never blocks on (or is killed by) a consumer that is gone.
    discarding: bool,
    mode: Mode,
    direction: Direction,
    drain: Option<Drain>,
    /// Whether each side is in the epoll set, indexed by [`Side`].
    pub(crate) registered: [bool; 2],
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("direction", &self.direction)
            .field("splicing", &matches!(self.mode, Mode::Splice))
            .finish_non_exhaustive()
    }
}

impl Pump {
    pub(crate) fn new(
        source: OwnedFd,
        destination: OwnedFd,
        direction: Direction,
        drain: Option<Drain>,
    ) -> Self {
        Self {
            source,
            destination,
            discarding: false,
            mode: Mode::Splice,
            direction,
            drain,
            registered: [false; 2],
        }
    }

    /// The descriptor of `side`.
    pub(crate) fn fd(&self, side: Side) -> BorrowedFd<'_> {
        match side {
            Side::Source => self.source.as_fd(),
            Side::Destination => self.destination.as_fd(),
        }
    }

    /// Moves as much as is ready, up to a fairness budget.
    pub(crate) fn run(&mut self) -> Next {
        for _ in 0..BUDGET {
            match self.step() {
                Step::Moved => {}
                Step::SourceEmpty => return Next::WaitFor(Side::Source),
                Step::DestinationFull => return Next::WaitFor(Side::Destination),
                Step::Eof => return Next::Finished,
            }
        }
        match self.mode {
            Mode::Buffered { start, end, .. } if start < end && !self.discarding => {
                Next::WaitFor(Side::Destination)
            }
            _ => Next::WaitFor(Side::Source),
        }
    }

    /// Tells the drain latch this output stream is complete; called once when retired
    /// after [`Next::Finished`].
    pub(crate) fn finish(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.stream_done();
        }
    }

    fn step(&mut self) -> Step {
        if self.discarding || !matches!(self.mode, Mode::Splice) {
            return self.buffered_step();
        }
        let destination = &self.destination;
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        match splice(&self.source, None, destination, None, SPLICE_CHUNK, flags) {
            Ok(0) => Step::Eof,
            Ok(_) | Err(Errno::EINTR) => Step::Moved,
            Err(Errno::EAGAIN) => blocked_side(self.source.as_fd(), destination.as_fd()),
            // EINVAL: this pair cannot splice (O_APPEND file, some devices). Any other
            // error is retried by read/write, whose errors say which side failed.
            Err(_) => self.buffered_step(),
        }
    }

    fn buffered_step(&mut self) -> Step {
        match self.buffered_transfer() {
            Ok(step) => step,
            Err(errno) => self.destination_broke(errno),
        }
    }

    /// One read or write of the fallback path; `Err` means the destination failed.
    fn buffered_transfer(&mut self) -> Result<Step, Errno> {
        if matches!(self.mode, Mode::Splice) {
            self.mode = Mode::Buffered {
                buf: vec![0; BUFFER_SIZE].into(),
                start: 0,
                end: 0,
            };
        }
        let Mode::Buffered { buf, start, end } = &mut self.mode else {
            return Ok(Step::Moved);
        };
        if *start < *end && !self.discarding {
            return match nix::unistd::write(&self.destination, &buf[*start..*end]) {
                Ok(n) => {
                    *start += n;
                    Ok(Step::Moved)
                }
                Err(Errno::EAGAIN) => Ok(Step::DestinationFull),
                Err(Errno::EINTR) => Ok(Step::Moved),
                Err(errno) => Err(errno),
            };
        }
        Ok(match nix::unistd::read(self.source.as_raw_fd(), buf) {
            Ok(0) => Step::Eof,
            Ok(n) => {
                (*start, *end) = (0, if self.discarding { 0 } else { n });
                Step::Moved
            }
            Err(Errno::EAGAIN) => Step::SourceEmpty,
            Err(Errno::EINTR) => Step::Moved,
            // EIO: the pty's last slave closed, which is a pty's EOF.
            Err(Errno::EIO) => Step::Eof,
            Err(errno) => {
                log::warn!(
                    "io: reading {:?} stream failed, ending it: {errno}",
                    self.direction
                );
                Step::Eof
            }
        })
    }

    fn destination_broke(&mut self, errno: Errno) -> Step {
        match self.direction {
            // The container closed its stdin: nothing more can be delivered.
            Direction::Input => Step::Eof,
            Direction::Output => {
                log::warn!("io: output consumer failed ({errno}); discarding the rest");
                self.discarding = true;
                if let Mode::Buffered { start, end, .. } = &mut self.mode {
                    (*start, *end) = (0, 0);
                }
                Step::Moved
            }
        }
    }
}

/// After a non-blocking splice said EAGAIN: which side is not ready?
fn blocked_side(source: BorrowedFd<'_>, destination: BorrowedFd<'_>) -> Step {
    let mut fds = [
        PollFd::new(source, PollFlags::POLLIN),
        PollFd::new(destination, PollFlags::POLLOUT),
    ];
    if poll(&mut fds, PollTimeout::ZERO).is_err() {
        return Step::SourceEmpty;
    }
    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    match (ready(&fds[0]), ready(&fds[1])) {
        (false, _) => Step::SourceEmpty,
        (true, false) => Step::DestinationFull,
        // Both became ready since the splice: just try again.
        (true, true) => Step::Moved,
    }
}
