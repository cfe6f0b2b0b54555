//! The copy engine: one epoll thread, named `io`, moving the bytes of every stream of every
//! process in the shim.
//!
//! Other threads never touch the epoll set. They send commands over a channel and kick an
//! eventfd; the loop owns every registered descriptor. Both ends of a stream stay registered,
//! edge-triggered, for the stream's whole life, so moving a chunk costs no epoll_ctl: an edge
//! on either end runs the stream until it blocks. A stream only moves bytes that its
//! destination takes, so a full destination stops reading from the source: back-pressure
//! reaches the container through its pipe and memory stays flat.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::drain::Drain;
use crate::pump::{Next, Pump, Side, Trigger};
use crate::sys;

/// The epoll token of the command eventfd; pump tokens are `id << 1 | side`.
const WAKE_TOKEN: u64 = u64::MAX;
/// Events taken per epoll_wait.
const EVENT_BATCH: usize = 64;
/// Stack of the `io` thread, which lives as long as the engine: its loop keeps buffers on
/// the heap and calls nothing deep (under 16 KiB used), so the default 2 MiB is waste.
const STACK_SIZE: usize = 128 * 1024;

/// Which way a stream flows, seen from the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards the container (stdin).
    Input,
    /// From the container (stdout, stderr); counts towards the drain.
    Output,
}

/// Failures of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// epoll_create1 failed.
    #[error("failed to create the io epoll instance")]
    Epoll(#[source] Errno),
    /// The wake-up eventfd could not be created or registered.
    #[error("failed to set up the io wake-up eventfd")]
    Wake(#[source] Errno),
    /// The `io` thread could not be spawned.
    #[error("failed to spawn the io thread")]
    Spawn(#[source] std::io::Error),
    /// A stream's descriptor could not be made non-blocking.
    #[error("failed to make a {direction:?} stream non-blocking")]
    NonBlocking {
        /// The stream's direction.
        direction: Direction,
        /// The fcntl error.
        #[source]
        source: Errno,
    },
    /// The `io` thread is gone.
    #[error("the io thread has stopped")]
    Stopped,
}

/// One stream to copy: bytes read from `source` are written to `destination`.
#[derive(Debug)]
pub struct Transfer {
    /// Readable end: a pipe, FIFO or pty master.
    pub source: OwnedFd,
    /// Writable end: a pipe, FIFO, pty master, regular file or character device.
    pub destination: OwnedFd,
    /// Which way it flows; output streams count towards the [`Drain`].
    pub direction: Direction,
}

enum Command {
    Attach { group: u64, pumps: Vec<Pump> },
    Detach { group: u64, done: Sender<()> },
    Shutdown,
}

/// The copy engine and its `io` thread; dropping it stops the thread and closes every
/// descriptor still attached.
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable way to attach streams to an [`Engine`] from any thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
    next_group: Arc<AtomicU64>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attach { group, pumps } => write!(f, "Attach({group}, {} streams)", pumps.len()),
            Self::Detach { group, .. } => write!(f, "Detach({group})"),
            Self::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl Engine {
    /// Creates the epoll set and starts the `io` thread.
    pub fn start() -> Result<Self, EngineError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(EngineError::Epoll)?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(EngineError::Wake)?;
        epoll
            .add(
                wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
            )
            .map_err(EngineError::Wake)?;
        let wake = Arc::new(wake);
        let (commands, inbox) = crossbeam_channel::unbounded();
        let event_loop = EventLoop {
            epoll,
            wake: Arc::clone(&wake),
            inbox,
            pumps: HashMap::new(),
            again: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name("io".into())
            .stack_size(STACK_SIZE)
            .spawn(move || event_loop.run())
            .map_err(EngineError::Spawn)?;
        let handle = EngineHandle {
            commands,
            wake,
            next_group: Arc::new(AtomicU64::new(0)),
        };
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle for attaching streams.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A send failure means the thread already ended; joining is still right.
        let _ = self.handle.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("io: the io thread panicked");
            }
        }
    }
}

impl EngineHandle {
    /// Starts copying `transfers` as one group; the returned [`Attachment`] owns them.
    pub fn attach(&self, transfers: Vec<Transfer>) -> Result<Attachment, EngineError> {
        let outputs = transfers
            .iter()
            .filter(|t| t.direction == Direction::Output)
            .count();
        let drain = Drain::new(outputs);
        let mut pumps = Vec::with_capacity(transfers.len());
        for Transfer {
            source,
            destination,
            direction,
        } in transfers
        {
            for fd in [&source, &destination] {
                sys::set_nonblocking(fd.as_fd())
                    .map_err(|source| EngineError::NonBlocking { direction, source })?;
            }
            let drain = (direction == Direction::Output).then(|| drain.clone());
            pumps.push(Pump::new(source, destination, direction, drain));
        }
        let group = self.next_group.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Attach { group, pumps })?;
        Ok(Attachment {
            handle: self.clone(),
            group,
            drain,
        })
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.commands
            .send(command)
            .map_err(|_| EngineError::Stopped)?;
        // EAGAIN means the counter is saturated, so a wake-up is pending anyway.
        match self.wake.write(1) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(_) => Err(EngineError::Stopped),
        }
    }
}

/// A group of streams being copied; dropping it (or [`Attachment::detach`]) stops them and
/// closes their descriptors before returning.
#[derive(Debug)]
pub struct Attachment {
    handle: EngineHandle,
    group: u64,
    drain: Drain,
}

impl Attachment {
    /// The drain latch of this group's output streams.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Stops copying and closes every descriptor of the group.
    pub fn detach(self) {}
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self
            .handle
            .send(Command::Detach {
                group: self.group,
                done,
            })
            .is_ok()
        {
            // The loop never blocks, so this answers promptly; an error means the
            // thread is gone and has closed everything already.
            let _ = finished.recv();
        }
    }
}

struct EventLoop {
    epoll: Epoll,
    wake: Arc<EventFd>,
    inbox: Receiver<Command>,
    /// Pumps by id; ids are never reused, so a stale event finds nothing.
    pumps: HashMap<u64, (u64, Pump)>,
    /// Pumps to run without waiting for an edge: new ones, and those whose budget ran out.
    again: VecDeque<u64>,
}

impl EventLoop {
    fn run(mut self) {
        let mut events = [EpollEvent::empty(); EVENT_BATCH];
        let mut ready: Vec<(u64, Trigger)> = Vec::with_capacity(EVENT_BATCH);
        let mut next_id = 0;
        loop {
            let timeout = if self.again.is_empty() {
                EpollTimeout::NONE
            } else {
                EpollTimeout::ZERO
            };
            let count = match self.epoll.wait(&mut events, timeout) {
                Ok(count) => count,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::error!("io: epoll_wait failed, stopping the io thread: {errno}");
                    return;
                }
            };
            ready.clear();
            for event in &events[..count] {
                if event.data() != WAKE_TOKEN {
                    ready.push((event.data() >> 1, trigger_of(event)));
                } else if !self.take_commands(&mut next_id) {
                    return;
                }
            }
            merge_by_pump(&mut ready);
            for &(id, trigger) in &ready {
                self.run_pump(id, trigger);
            }
            for _ in 0..self.again.len() {
                if let Some(id) = self.again.pop_front() {
                    self.run_pump(id, Trigger::Sweep);
                }
            }
        }
    }

    /// Runs every queued command; returns false on shutdown.
    fn take_commands(&mut self, next_id: &mut u64) -> bool {
        // Reset the counter before draining the queue so no command goes unnoticed.
        let _ = self.wake.read();
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::Attach { group, pumps } => {
                    for pump in pumps {
                        let id = *next_id;
                        *next_id += 1;
                        self.pumps.insert(id, (group, pump));
                        self.register(id);
                    }
                }
                Command::Detach { group, done } => {
                    let ids: Vec<u64> = self
                        .pumps
                        .iter()
                        .filter(|(_, (g, _))| *g == group)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.retire(id);
                    }
                    let _ = done.send(());
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn run_pump(&mut self, id: u64, trigger: Trigger) {
        let Some((_, pump)) = self.pumps.get_mut(&id) else {
            return;
        };
        match pump.run(trigger) {
            Next::Idle => {}
            Next::Again => self.again.push_back(id),
            Next::Finished => {
                pump.finish();
                self.retire(id);
            }
        }
    }

    /// Adds both ends to the epoll set, edge-triggered, and queues a first run for what
    /// is already there. A destination epoll refuses (a regular file, `/dev/null`) is
    /// always writable and needs no registration; a source epoll refuses ends the stream.
    fn register(&mut self, id: u64) {
        let Some((_, pump)) = self.pumps.get_mut(&id) else {
            return;
        };
        for side in [Side::Source, Side::Destination] {
            let interest = match side {
                Side::Source => EpollFlags::EPOLLIN,
                Side::Destination => EpollFlags::EPOLLOUT,
            };
            let event = EpollEvent::new(interest | EpollFlags::EPOLLET, id << 1 | side as u64);
            match self.epoll.add(pump.fd(side), event) {
                Ok(()) => pump.registered[side as usize] = true,
                Err(Errno::EPERM) if side == Side::Destination => {}
                Err(errno) => {
                    log::warn!("io: cannot wait on {side:?} of {pump:?}, ending it: {errno}");
                    pump.finish();
                    self.retire(id);
                    return;
                }
            }
        }
        self.again.push_back(id);
    }

    /// Removes a pump from the epoll set and closes its descriptors.
    fn retire(&mut self, id: u64) {
        let Some((_, pump)) = self.pumps.remove(&id) else {
            return;
        };
        for side in [Side::Source, Side::Destination] {
            if pump.registered[side as usize] {
                // Explicit removal matters: a dup of the same open file (a pty master
                // used both ways) would otherwise keep the registration alive.
                let _ = self.epoll.delete(pump.fd(side));
            }
        }
    }
}

/// What an event says about its end. epoll computes the flags as it delivers the event,
/// so a peer already gone shows here and one leaving later brings a new edge.
fn trigger_of(event: &EpollEvent) -> Trigger {
    if event
        .events()
        .intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
    {
        Trigger::PeerGone
    } else {
        Trigger::Edge
    }
}

/// Leaves one entry per pump: both ends may have fired, and one run serves both, for the
/// weightiest reason.
fn merge_by_pump(ready: &mut Vec<(u64, Trigger)>) {
    ready.sort_unstable_by_key(|&(id, _)| id);
    ready.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        kept.1 = kept.1.max(later.1);
        true
    });
}
