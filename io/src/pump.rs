//! One stream's copy state machine: moves bytes from a source to a destination without
//! ever blocking, by splice(2) while the kernel allows it and through a bounded buffer
//! otherwise.
//!
//! The engine watches both ends edge-triggered, so a pump must not go idle while a transfer
//! could still succeed: it stops when a transfer says EAGAIN or, between two pipes, after a
//! splice that left an end blocked (see `Pump::after_splice`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};

use crate::drain::Drain;
use crate::engine::Direction;

/// Bytes asked of one splice(2); the kernel moves at most what the pipes hold.
const SPLICE_CHUNK: usize = 1 << 20;
/// The user-space buffer of the read/write fallback: the most a stream ever holds in memory.
const BUFFER_SIZE: usize = 64 * 1024;
/// Transfers per turn before yielding to other streams; a pump that still has work when
/// its budget runs out is queued to run again, since no new edge will announce it.
const BUDGET: usize = 16;

/// The two ends of a pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source = 0,
    Destination = 1,
}

/// Why a pump runs, which decides how far it must go before it may wait for an edge.
/// Ordered by precedence when one run serves several reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Trigger {
    /// Readiness edges on ends whose peers are still there.
    Edge,
    /// A first run, or a run whose budget ran out: no edge announced what is there.
    Sweep,
    /// An end reported its peer gone (EPOLLHUP, EPOLLERR). No edge will follow, so from
    /// now on only EAGAIN, EOF or EPIPE proves there is no work left.
    PeerGone,
}

/// How far a run must go before the pump may wait for an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopAt {
    /// A pipe-to-pipe splice that moved less than it asked for (see `Pump::after_splice`),
    /// or EAGAIN.
    ShortSplice,
    /// Only EAGAIN, EOF or EPIPE.
    Eagain,
}

/// What a pump needs next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Blocked on an end: the next edge on either end runs me again.
    Idle,
    /// The budget ran out with work left: run me again soon.
    Again,
    /// The source hit EOF (or the destination of an input stream broke): retire me.
    Finished,
}

/// The outcome of a single transfer attempt.
enum Step {
    Moved,
    /// An end is not ready; an edge on it will come once it is.
    Blocked,
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
    /// Both ends are pipes or FIFOs, whose splice stops only at an empty source or a full
    /// destination.
    pipe_to_pipe: bool,
    /// An end has reported its peer gone; see [`Trigger::PeerGone`].
    peer_gone: bool,
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
        let pipe_to_pipe = is_pipe(source.as_fd()) && is_pipe(destination.as_fd());
        Self {
            source,
            destination,
            discarding: false,
            mode: Mode::Splice,
            pipe_to_pipe,
            peer_gone: false,
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
    pub(crate) fn run(&mut self, trigger: Trigger) -> Next {
        self.peer_gone |= trigger == Trigger::PeerGone;
        let stop_at = if self.peer_gone || trigger != Trigger::Edge {
            StopAt::Eagain
        } else {
            StopAt::ShortSplice
        };
        for _ in 0..BUDGET {
            match self.step(stop_at) {
                Step::Moved => {}
                Step::Blocked => return Next::Idle,
                Step::Eof => return Next::Finished,
            }
        }
        Next::Again
    }

    /// Tells the drain latch this output stream is complete; called once when retired
    /// after [`Next::Finished`].
    pub(crate) fn finish(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.stream_done();
        }
    }

    /// One transfer.
    fn step(&mut self, stop_at: StopAt) -> Step {
        if self.discarding || !matches!(self.mode, Mode::Splice) {
            return self.buffered_step();
        }
        let destination = &self.destination;
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        match splice(&self.source, None, destination, None, SPLICE_CHUNK, flags) {
            Ok(0) => Step::Eof,
            Ok(moved) => self.after_splice(moved, stop_at),
            Err(Errno::EINTR) => Step::Moved,
            Err(Errno::EAGAIN) => Step::Blocked,
            // EINVAL: this pair cannot splice (O_APPEND file, some devices). Any other
            // error is retried by read/write, whose errors say which side failed.
            Err(_) => self.buffered_step(),
        }
    }

    /// Whether to splice again after one that moved `moved` bytes.
    ///
    /// Between two pipes, a splice that moved less than it asked for stopped because the
    /// source was empty or the destination full, and either state brings an edge: the next
    /// write into an empty pipe wakes its reader, the next read from a full pipe wakes its
    /// writer. Going idle here, rather than splicing until EAGAIN, matters: that extra splice
    /// would usually meet the writer this one just woke busy copying into the source (or
    /// the client's reader copying out of the FIFO) and spin on the pipe's mutex for the
    /// whole copy. Only an end whose peer is gone (a source without writers, a destination
    /// without readers) brings no further edge; epoll reports that state with the edge
    /// that runs the pump ([`Trigger::PeerGone`]), and from then on the pump goes on to
    /// its EOF or EPIPE. First runs and runs after the budget go on to EAGAIN too.
    fn after_splice(&self, moved: usize, stop_at: StopAt) -> Step {
        if stop_at == StopAt::ShortSplice && self.pipe_to_pipe && moved < SPLICE_CHUNK {
            Step::Blocked
        } else {
            Step::Moved
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
                Err(Errno::EAGAIN) => Ok(Step::Blocked),
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
            Err(Errno::EAGAIN) => Step::Blocked,
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

/// Whether `fd` is a pipe or FIFO.
fn is_pipe(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFIFO)
}
