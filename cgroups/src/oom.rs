//! The OOM watcher: one epoll set for every watched cgroup, served by a thread of its own
//! ([`OomWatcher::spawn`]) or by the owner's event loop ([`OomWatcher::polled`]).
//!
//! - v1: an eventfd registered through `cgroup.event_control` on `memory.oom_control`. The
//!   kernel signals it when the cgroup enters OOM, *before* the killer runs, and once more when
//!   the cgroup is removed. Each signal while the cgroup exists is one event, as in
//!   containerd; the removal signal is ignored because `memory.oom_control` is gone by then.
//! - v2: one inotify instance watching `memory.events` and `cgroup.events` (`IN_MODIFY`). A
//!   wake-up prompts a re-read of `memory.events`, and an event goes out when `oom_kill` rose;
//!   `oom` rises are charged to parents too and are ignored (containerd#6323).
//!
//! `unwatch` reads the kill counter (`oom_kill` of `memory.oom_control` or `memory.events`) one
//! last time and reports a kill not yet reported, so an OOM just before the container exited is
//! published before the shim publishes the exit (containerd#12714). Each watch counts the events
//! it sent, so that flush never repeats an event the notifications already produced. The v1 flush
//! needs Linux 4.13 or later, where `oom_kill` exists.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::read::{FileReader, StatsError};
use crate::{v1, v2, Cgroup};

/// A process in a watched cgroup was killed by the OOM killer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomEvent {
    /// The key given to [`OomWatcher::watch`], normally the container id.
    pub key: String,
}

/// What the final read of [`OomWatcher::unwatch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// A kill not yet reported was found, and its event was sent before `unwatch` returned.
    Oom,
    /// Nothing new since the last event.
    NoOom,
}

/// Why the watcher could not start, watch or unwatch.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    /// `epoll_create1` failed.
    #[error("failed to create the oom epoll set")]
    CreateEpoll(#[source] Errno),
    /// `eventfd` failed.
    #[error("failed to create an eventfd")]
    CreateEventFd(#[source] Errno),
    /// `inotify_init1` failed.
    #[error("failed to create the oom inotify instance")]
    CreateInotify(#[source] Errno),
    /// Adding an fd to the epoll set failed.
    #[error("failed to add an fd to the oom epoll set")]
    EpollAdd(#[source] Errno),
    /// The thread could not be spawned.
    #[error("failed to spawn the oom thread")]
    SpawnThread(#[source] std::io::Error),
    /// The watcher thread has stopped.
    #[error("the oom watcher thread has stopped")]
    Stopped,
    /// `watch` was called twice for one key.
    #[error("{key} is already watched")]
    AlreadyWatched {
        /// The key.
        key: String,
    },
    /// `unwatch` was called for a key that is not watched.
    #[error("{key} is not watched")]
    NotWatched {
        /// The key.
        key: String,
    },
    /// The cgroup has no memory controller, so OOM cannot be observed.
    #[error("cgroup of {key} has no memory controller")]
    NoMemoryController {
        /// The key.
        key: String,
    },
    /// The kill counter file does not exist in the cgroup.
    #[error("{path} does not exist")]
    MissingCounter {
        /// The file.
        path: PathBuf,
    },
    /// The kill counter could not be read.
    #[error("failed to read the oom kill counter")]
    ReadCounter(#[source] StatsError),
    /// `memory.oom_control` could not be opened (v1).
    #[error("failed to open {path}")]
    OpenOomControl {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the registration to `cgroup.event_control` failed (v1).
    #[error("failed to register with {path}")]
    WriteEventControl {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `inotify_add_watch` failed (v2).
    #[error("failed to watch {path}")]
    AddInotifyWatch {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Errno,
    },
}

/// Watches cgroups for OOM kills, on a thread named `oom` or on its owner's event loop
/// (through an [`OomPoller`]). Dropping it stops the thread.
#[derive(Debug)]
pub struct OomWatcher {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

/// The polled half of an [`OomWatcher::polled`] watcher: the owner's event loop polls
/// [`fd`](Self::fd) for readability and then calls [`poll`](Self::poll).
pub struct OomPoller {
    worker: Worker,
}

impl std::fmt::Debug for OomPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OomPoller")
            .field("watches", &self.worker.watches.len())
            .finish_non_exhaustive()
    }
}

impl OomPoller {
    /// Readable when a watched cgroup reported or a `watch`/`unwatch` is waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.worker.epoll.0.as_fd()
    }

    /// Serves whatever is ready, without blocking: notifications read, events delivered,
    /// commands answered.
    pub fn poll(&mut self) {
        // A Stop would come from a Shutdown, which only a watcher with a thread sends.
        let _ = self.worker.serve_ready(EpollTimeout::ZERO);
    }
}

enum Command {
    Watch {
        key: String,
        target: Target,
        reply: Sender<Result<(), OomError>>,
    },
    Unwatch {
        key: String,
        reply: Sender<Result<Flush, OomError>>,
    },
    Shutdown,
}

/// Which mechanism a cgroup is watched with, and its memory directory.
#[derive(Debug, Clone)]
enum Target {
    V1(PathBuf),
    V2(PathBuf),
}

impl OomWatcher {
    /// Starts the `oom` thread; events go to `events`: a channel (unbounded is best: a full
    /// one would stall the watcher, never drop an event) or any other [`OomSink`].
    pub fn spawn(events: impl OomSink) -> Result<Self, OomError> {
        let (mut watcher, worker) = Self::unstarted(events)?;
        let thread = std::thread::Builder::new()
            .name("oom".into())
            .stack_size(STACK_SIZE)
            .spawn(move || worker.run())
            .map_err(OomError::SpawnThread)?;
        watcher.thread = Some(thread);
        Ok(watcher)
    }

    /// A watcher without a thread: the caller's event loop serves it through the returned
    /// [`OomPoller`], so a long-lived process with a loop of its own saves the thread.
    /// `watch` and `unwatch` wait for that loop to poll: they must not be called on it.
    pub fn polled(events: impl OomSink) -> Result<(Self, OomPoller), OomError> {
        let (watcher, worker) = Self::unstarted(events)?;
        Ok((watcher, OomPoller { worker }))
    }

    fn unstarted(events: impl OomSink) -> Result<(Self, Worker), OomError> {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let wake = Arc::new(EventFd::from_flags(flags).map_err(OomError::CreateEventFd)?);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(OomError::CreateEpoll)?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(OomError::CreateInotify)?;
        epoll
            .add(wake.as_fd(), readable(WAKE_TOKEN))
            .map_err(OomError::EpollAdd)?;
        epoll
            .add(inotify.as_fd(), readable(INOTIFY_TOKEN))
            .map_err(OomError::EpollAdd)?;
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let worker = Worker {
            epoll,
            wake: Arc::clone(&wake),
            inotify,
            commands: command_rx,
            events: Box::new(events),
            watches: HashMap::new(),
            tokens: HashMap::new(),
            descriptors: HashMap::new(),
            next_token: FIRST_WATCH_TOKEN,
        };
        let watcher = Self {
            commands,
            wake,
            thread: None,
        };
        Ok((watcher, worker))
    }

    /// Starts watching `cgroup` under `key`. Kills that happened before this call are not
    /// reported. Register at container create so no OOM between create and start is missed.
    pub fn watch(&self, key: &str, cgroup: &Cgroup) -> Result<(), OomError> {
        let target = match (cgroup, cgroup.memory_dir()) {
            (Cgroup::V1(_), Some(dir)) => Target::V1(dir.to_path_buf()),
            (Cgroup::V2(_), Some(dir)) => Target::V2(dir.to_path_buf()),
            (_, None) => {
                return Err(OomError::NoMemoryController {
                    key: key.to_owned(),
                })
            }
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.request(Command::Watch {
            key: key.to_owned(),
            target,
            reply,
        })?;
        answer.recv().map_err(|_| OomError::Stopped)?
    }

    /// Stops watching `key` after a final read of its kill counter; any kill found is sent as
    /// an event before this returns. Call it before publishing the container's exit.
    pub fn unwatch(&self, key: &str) -> Result<Flush, OomError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.request(Command::Unwatch {
            key: key.to_owned(),
            reply,
        })?;
        answer.recv().map_err(|_| OomError::Stopped)?
    }

    fn request(&self, command: Command) -> Result<(), OomError> {
        self.commands.send(command).map_err(|_| OomError::Stopped)?;
        self.wake.write(1).map_err(|_| OomError::Stopped)?;
        Ok(())
    }
}

impl Drop for OomWatcher {
    fn drop(&mut self) {
        // A polled watcher's loop goes on delivering events for the watches left.
        if let Some(thread) = self.thread.take() {
            // Errors mean the thread is already gone; joining is then immediate.
            let _ = self.request(Command::Shutdown);
            let _ = thread.join();
        }
    }
}

const WAKE_TOKEN: u64 = 0;
const INOTIFY_TOKEN: u64 = 1;
const FIRST_WATCH_TOKEN: u64 = 2;
/// Stack of the `oom` thread, which lives as long as the watcher: it reads small files into
/// a heap buffer and hands events on (under 16 KiB used), so the default 2 MiB is waste.
const STACK_SIZE: usize = 128 * 1024;

fn readable(token: u64) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR,
        token,
    )
}

/// One watched cgroup.
struct Watch {
    key: String,
    dir: PathBuf,
    source: Source,
    /// The kill counter when the watch began; kills before it are not ours to report.
    baseline: u64,
    /// Events sent for this watch.
    reported: u64,
}

enum Source {
    /// The eventfd stays registered in the epoll set until unwatch or cgroup removal.
    V1 {
        eventfd: Option<EventFd>,
    },
    V2 {
        descriptors: Vec<WatchDescriptor>,
    },
}

struct Worker {
    epoll: Epoll,
    wake: Arc<EventFd>,
    inotify: Inotify,
    commands: Receiver<Command>,
    events: Box<dyn OomSink>,
    watches: HashMap<u64, Watch>,
    tokens: HashMap<String, u64>,
    descriptors: HashMap<WatchDescriptor, u64>,
    next_token: u64,
}

/// What to do after handling commands.
enum Next {
    Continue,
    Stop,
}

impl Worker {
    /// The `oom` thread: serves until a Shutdown.
    fn run(mut self) {
        while let Next::Continue = self.serve_ready(EpollTimeout::NONE) {}
    }

    /// Waits up to `timeout` for readiness and serves what is ready.
    fn serve_ready(&mut self, timeout: EpollTimeout) -> Next {
        let mut ready = [EpollEvent::empty(); 16];
        let count = match self.epoll.wait(&mut ready, timeout) {
            Ok(count) => count,
            Err(Errno::EINTR) => return Next::Continue,
            Err(err) => {
                log::error!("oom watcher stops: epoll_wait failed: {err}");
                return Next::Stop;
            }
        };
        for event in &ready[..count] {
            let next = match event.data() {
                WAKE_TOKEN => self.serve_commands(),
                INOTIFY_TOKEN => self.on_inotify(),
                token => self.on_eventfd(token),
            };
            if let Next::Stop = next {
                return Next::Stop;
            }
        }
        Next::Continue
    }

    fn serve_commands(&mut self) -> Next {
        // Reset the wake-up counter first: a command sent after this read wakes us again.
        let _ = self.wake.read();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Watch { key, target, reply } => {
                    let _ = reply.send(self.watch(key, target));
                }
                Command::Unwatch { key, reply } => {
                    let _ = reply.send(self.unwatch(&key));
                }
                Command::Shutdown => return Next::Stop,
            }
        }
        Next::Continue
    }

    fn watch(&mut self, key: String, target: Target) -> Result<(), OomError> {
        if self.tokens.contains_key(&key) {
            return Err(OomError::AlreadyWatched { key });
        }
        let token = self.next_token;
        let (dir, source) = match target {
            Target::V1(dir) => {
                let eventfd = register_v1(&dir)?;
                (
                    dir,
                    Source::V1 {
                        eventfd: Some(eventfd),
                    },
                )
            }
            Target::V2(dir) => (
                dir,
                Source::V2 {
                    descriptors: Vec::new(),
                },
            ),
        };
        // Baseline before arming: a kill between the two is then seen as a rise.
        let baseline = read_kills(&source, &dir)
            .map_err(OomError::ReadCounter)?
            .ok_or_else(|| OomError::MissingCounter {
                path: dir.join(counter_file(&source)),
            })?;
        let mut watch = Watch {
            key,
            dir,
            source,
            baseline,
            reported: 0,
        };
        self.arm(token, &mut watch)?;
        self.next_token += 1;
        self.tokens.insert(watch.key.clone(), token);
        let is_v2 = matches!(watch.source, Source::V2 { .. });
        self.watches.insert(token, watch);
        if is_v2 {
            // A kill between the baseline and arming raised no notification; look once now.
            // (v1 needs no look: its eventfd was armed before any kill counted in baseline.)
            self.check(token);
        }
        Ok(())
    }

    /// Starts notifications for a new watch: the v1 eventfd joins the epoll set, v2 files
    /// join the inotify instance.
    fn arm(&mut self, token: u64, watch: &mut Watch) -> Result<(), OomError> {
        match &mut watch.source {
            Source::V1 {
                eventfd: Some(eventfd),
            } => self
                .epoll
                .add(eventfd.as_fd(), readable(token))
                .map_err(OomError::EpollAdd),
            Source::V1 { eventfd: None } => Ok(()),
            Source::V2 { descriptors } => {
                for name in ["memory.events", "cgroup.events"] {
                    let path = watch.dir.join(name);
                    match self.inotify.add_watch(&path, AddWatchFlags::IN_MODIFY) {
                        Ok(descriptor) => {
                            descriptors.push(descriptor);
                            self.descriptors.insert(descriptor, token);
                        }
                        Err(source) => {
                            self.disarm_v2(descriptors);
                            return Err(OomError::AddInotifyWatch { path, source });
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn disarm_v2(&mut self, descriptors: &mut Vec<WatchDescriptor>) {
        for descriptor in descriptors.drain(..) {
            self.descriptors.remove(&descriptor);
            // EINVAL when the kernel already dropped the watch; nothing is left to undo.
            let _ = self.inotify.rm_watch(descriptor);
        }
    }

    fn disarm(&mut self, watch: &mut Watch) {
        match &mut watch.source {
            Source::V1 { eventfd } => {
                if let Some(eventfd) = eventfd.take() {
                    // Closing the eventfd also ends the kernel's registration.
                    let _ = self.epoll.delete(eventfd.as_fd());
                }
            }
            Source::V2 { descriptors } => self.disarm_v2(descriptors),
        }
    }

    fn unwatch(&mut self, key: &str) -> Result<Flush, OomError> {
        let token = self
            .tokens
            .remove(key)
            .ok_or_else(|| OomError::NotWatched {
                key: key.to_owned(),
            })?;
        let notified = self.drain_eventfd(token);
        let flush = match self.check(token) {
            Flush::NoOom => notified,
            Flush::Oom => Flush::Oom,
        };
        if let Some(mut watch) = self.watches.remove(&token) {
            self.disarm(&mut watch);
        }
        Ok(flush)
    }

    fn on_eventfd(&mut self, token: u64) -> Next {
        self.drain_eventfd(token);
        Next::Continue
    }

    /// Consumes a pending v1 notification and reports it unless it announced the cgroup's
    /// removal.
    fn drain_eventfd(&mut self, token: u64) -> Flush {
        let Some(watch) = self.watches.get_mut(&token) else {
            return Flush::NoOom;
        };
        let Source::V1 {
            eventfd: Some(eventfd),
        } = &mut watch.source
        else {
            return Flush::NoOom;
        };
        // Non-blocking: EAGAIN when nothing is pending.
        if !matches!(eventfd.read(), Ok(count) if count > 0) {
            return Flush::NoOom;
        }
        if watch.dir.join("memory.oom_control").exists() {
            watch.reported += 1;
            send(self.events.as_ref(), &watch.key);
            return Flush::Oom;
        }
        // Removed: the kernel sends nothing more on this eventfd.
        if let Source::V1 { eventfd } = &mut watch.source {
            if let Some(eventfd) = eventfd.take() {
                let _ = self.epoll.delete(eventfd.as_fd());
            }
        }
        Flush::NoOom
    }

    fn on_inotify(&mut self) -> Next {
        let mut touched = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(err) => {
                    log::warn!("oom watcher: reading inotify events failed: {err}");
                    break;
                }
            };
            for event in events {
                let Some(&token) = self.descriptors.get(&event.wd) else {
                    continue;
                };
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The file went away with its cgroup and the kernel dropped the watch;
                    // forget the descriptor so a later reuse of its number is not ours.
                    self.forget_descriptor(token, event.wd);
                }
                touched.push(token);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for token in touched {
            self.check(token);
        }
        Next::Continue
    }

    fn forget_descriptor(&mut self, token: u64, descriptor: WatchDescriptor) {
        self.descriptors.remove(&descriptor);
        if let Some(Watch {
            source: Source::V2 { descriptors },
            ..
        }) = self.watches.get_mut(&token)
        {
            descriptors.retain(|known| *known != descriptor);
        }
    }

    /// Re-reads the kill counter of `token` and sends one event if it counts kills not yet
    /// reported.
    fn check(&mut self, token: u64) -> Flush {
        let Some(watch) = self.watches.get_mut(&token) else {
            return Flush::NoOom;
        };
        let kills = match read_kills(&watch.source, &watch.dir) {
            Ok(Some(kills)) => kills,
            // The cgroup is gone, and its counter with it.
            Ok(None) => return Flush::NoOom,
            Err(err) => {
                log::warn!("oom watcher: {}: {err}", watch.key);
                return Flush::NoOom;
            }
        };
        let kills = kills.saturating_sub(watch.baseline);
        if kills <= watch.reported {
            return Flush::NoOom;
        }
        watch.reported = kills;
        send(self.events.as_ref(), &watch.key);
        Flush::Oom
    }
}

/// Where an [`OomWatcher`] delivers its events; called on the `oom` thread or the polling
/// loop, so it must not block for long.
pub trait OomSink: Send + 'static {
    /// Takes one event; `false` means the receiver is gone.
    fn deliver(&self, event: OomEvent) -> bool;
}

impl OomSink for Sender<OomEvent> {
    fn deliver(&self, event: OomEvent) -> bool {
        self.send(event).is_ok()
    }
}

fn send(events: &dyn OomSink, key: &str) {
    let event = OomEvent {
        key: key.to_owned(),
    };
    if !events.deliver(event) {
        log::warn!("oom watcher: event receiver dropped; oom of {key} not delivered");
    }
}

fn counter_file(source: &Source) -> &'static str {
    match source {
        Source::V1 { .. } => "memory.oom_control",
        Source::V2 { .. } => "memory.events",
    }
}

/// Reads the kill counter. The reader (a 4 KiB buffer) lives only for this read: the
/// counter is read at watch, unwatch and on notifications, rarely enough that keeping the
/// buffer for the shim's whole life would cost more than allocating it each time.
fn read_kills(source: &Source, dir: &Path) -> Result<Option<u64>, StatsError> {
    let mut reader = FileReader::new();
    Ok(match source {
        Source::V1 { .. } => {
            v1::read_oom_control(&mut reader, dir)?.map(|control| control.oom_kill)
        }
        Source::V2 { .. } => {
            v2::read_memory_events(&mut reader, dir)?.map(|events| events.oom_kill)
        }
    })
}

/// Creates an eventfd and asks the kernel to signal it on OOM in the memory cgroup `dir`.
fn register_v1(dir: &Path) -> Result<EventFd, OomError> {
    let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
    let eventfd = EventFd::from_flags(flags).map_err(OomError::CreateEventFd)?;
    let control_path = dir.join("memory.oom_control");
    let control = File::open(&control_path).map_err(|source| OomError::OpenOomControl {
        path: control_path,
        source,
    })?;
    let registration = format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd());
    let path = dir.join("cgroup.event_control");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(registration.as_bytes()))
        .map_err(|source| OomError::WriteEventControl { path, source })?;
    // The kernel now holds its own reference to memory.oom_control; ours can close.
    Ok(eventfd)
}
