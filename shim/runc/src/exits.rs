//! Exit tracking and dispatch (docs/protocol.md §5.6, §3.3).
//!
//! Exits reach TaskExit two ways. The exit of a started exec is recorded, and its TaskExit
//! queued, by the reaper's sink itself, on the reaping thread (the daemon's main loop): the
//! fast path, which can neither block nor run runc. Every other exit somebody waits for (an
//! init's, an exit while a start is in flight, a replayed one) goes to one serial queue,
//! "exits" (its thread runs only while there is work), which publishes those exits and,
//! alone, TaskOOM. The order containerd relies on holds across the two:
//! - a start (create, start, exec) registers a [`StartGuard`] before runc runs; an exit of the
//!   new pid that arrives before the start event is queued is parked in the guard and replayed
//!   to the queue only after the event ([`StartGuard::started`]); a pid is a started exec's,
//!   and its exit can take the fast path, only from then on;
//! - an init's exit waits until every running exec's exit is published: the fast path takes
//!   an exec out of the running set and queues its TaskExit in one critical section of the
//!   tracking lock, under which the queue decides whether the init's exit waits; and it hands
//!   an init exit it releases back to the queue ([`Message::ExecsDone`]);
//! - the OOM watcher is flushed (unwatch) before the init's TaskExit, and the flushed event,
//!   which lands on the channel the queue drains, is published first;
//! - when the init of a container without its own pid namespace exits, `runc kill --all` sends
//!   SIGKILL to what is left, so the exec exits, and then the init's, follow.
//!
//! The sink queues an exit only if its pid belongs to a started init or a start is in flight
//! (whose new pid is not known yet); other exits (runc's own, waited for by their spawner,
//! and reparented orphans) never wake the queue.
//!
//! Each fact has one owner: whether a process is dead is its [`Process`]'s (reaped when its
//! exit is taken here, before that exit is recorded); which execs still hold their init's
//! exit is derived from what is tracked here (started or starting), never counted apart.
//! What dispatching does to the world (runc, the OOM watcher, the publisher) goes through
//! [`Effects`], so the orders are unit tested without them.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use crossbeam_channel::{Receiver, Sender};
use wren_cgroups::{OomEvent, OomPoller, OomSink, OomWatcher};
use wren_runc_driver::KillScope;
use wren_shim::{Exit, LoopSource, MainLoopSources, Monitor, Publisher, SerialQueue};
use wren_shim_protocol::events::{TaskExit, TaskOOM};
use wren_shim_protocol::timestamp::to_timestamp;

use crate::container::{Container, ExitPolicy};
use crate::error::Error;
use crate::process::{ExitNotice, ExitRecord, Kind, ProcState, Process};
use crate::state::InitState;

/// A process together with its container.
#[derive(Debug, Clone)]
pub struct ProcRef {
    pub container: Arc<Container>,
    pub process: Arc<Process>,
}

/// Work for the exits queue.
#[derive(Debug)]
enum Message {
    /// The reaper collected a process.
    Reaped(Exit),
    /// The OOM watcher put events on the channel.
    Oom,
    /// An exit that raced a start, queued again once the start event is queued and its
    /// process is in `running`, and handled as a reaped one: so it still holds its init's exit
    /// meanwhile, and a Start that takes the process out of `running` again parks it.
    Replay(Exit),
    /// No exec holds the container's pending init exit any more: an exec start failed, or
    /// the reaper's sink recorded the last exec's exit (finishing an init blocks, so the sink
    /// leaves it to the queue).
    ExecsDone(String),
}

/// What dispatching exits does beyond the lifecycle's own bookkeeping: the seam that lets
/// the exits logic be tested without runc, cgroups or containerd.
pub trait Effects: Send + Sync + std::fmt::Debug {
    /// `runc kill --all` with SIGKILL: the init of a container sharing a pid namespace exited.
    fn kill_all(&self, container: &Container);
    /// Stops the container's OOM watch with a final read; a kill it finds is on the OOM
    /// channel when this returns.
    fn stop_oom_watch(&self, container: &Container);
    /// Queues a TaskExit.
    fn publish_exit(&self, event: &TaskExit);
    /// Queues a TaskOOM.
    fn publish_oom(&self, event: &TaskOOM);
}

/// A start in flight.
#[derive(Debug, Default)]
struct Start {
    /// Every exit reaped meanwhile (the new pid is not known before runc returns).
    exits: Vec<Exit>,
    /// The exec being started, which already holds its init's exit.
    exec: Option<ProcRef>,
}

#[derive(Debug, Default)]
struct Tracking {
    /// Started processes by pid, until their exit is taken for dispatch.
    running: HashMap<i32, Vec<ProcRef>>,
    /// Starts in flight.
    starts: HashMap<u64, Start>,
    next_start: u64,
    /// Init exits held back until the container's execs have exited.
    pending_init_exits: HashMap<String, (ProcRef, Exit)>,
}

impl Tracking {
    /// The execs of `container_id` whose exits are still to come, started or starting: the
    /// one count of running execs, derived from what is tracked.
    fn live_execs(&self, container_id: &str) -> usize {
        let started = self.running.values().flatten();
        let starting = self.starts.values().filter_map(|start| start.exec.as_ref());
        started
            .chain(starting)
            .filter(|p| p.process.kind == Kind::Exec && p.container.id == container_id)
            .count()
    }

    /// The pending init exit of `container_id`, once no exec holds it.
    fn release_if_idle(&mut self, container_id: &str) -> Option<(ProcRef, Exit)> {
        if self.live_execs(container_id) == 0 {
            self.pending_init_exits.remove(container_id)
        } else {
            None
        }
    }

    /// Whether `container_id` has an init exit pending that no exec holds any more.
    fn init_exit_releasable(&self, container_id: &str) -> bool {
        self.pending_init_exits.contains_key(container_id) && self.live_execs(container_id) == 0
    }

    /// Whether an exit of `pid` is a started exec's and nothing else's: one the reaper's
    /// sink records itself.
    fn is_started_exec(&self, pid: i32) -> bool {
        self.running.get(&pid).is_some_and(|procs| {
            !procs.is_empty() && procs.iter().all(|p| p.process.kind == Kind::Exec)
        })
    }

    /// Whether the exits queue must see an exit of `pid` the sink does not record: a started
    /// init's, or any exit while a start is in flight. An exit filtered out here would find
    /// nothing to do there: only a start in flight now can put its pid in `running` later.
    fn waits_for(&self, pid: i32) -> bool {
        self.running.contains_key(&pid) || !self.starts.is_empty()
    }

    /// Copies `exit` to every start in flight and takes the started processes of its pid.
    fn take_exited(&mut self, exit: &Exit) -> Vec<ProcRef> {
        for start in self.starts.values_mut() {
            start.exits.push(*exit);
        }
        self.take_running(exit.pid)
    }

    /// Takes the started processes of `pid` for dispatch; they are dead from now on.
    fn take_running(&mut self, pid: i32) -> Vec<ProcRef> {
        let procs = self.running.remove(&pid).unwrap_or_default();
        for proc_ref in &procs {
            proc_ref.process.mark_reaped();
        }
        procs
    }
}

/// The bookkeeping RPC threads, the reaping thread and the exits queue share; locked only
/// for map updates (and, on the reaping thread, to record an exec's exit with them).
#[derive(Debug)]
pub struct Lifecycle {
    tracking: Mutex<Tracking>,
    messages: SerialQueue<Message>,
    /// The OOM watcher's events, drained by the exits queue only.
    ooms: Receiver<OomEvent>,
    effects: Box<dyn Effects>,
}

/// An exit subscription for one start; dropping it without [`started`](Self::started)
/// unsubscribes (and a failed exec start stops holding its init's exit).
#[derive(Debug)]
pub struct StartGuard<'a> {
    lifecycle: &'a Lifecycle,
    token: u64,
}

impl Lifecycle {
    fn new(
        messages: SerialQueue<Message>,
        ooms: Receiver<OomEvent>,
        effects: Box<dyn Effects>,
    ) -> Self {
        Self {
            tracking: Mutex::default(),
            messages,
            ooms,
            effects,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tracking> {
        lock(&self.tracking)
    }

    /// The reaper's sink, [`Lifecycle::reaped`]. It holds the lifecycle weakly: a strong
    /// link would be a cycle (the lifecycle's containers keep the monitor, runc's spawner).
    fn exit_sink(self: &Arc<Self>) -> impl Fn(Exit) -> bool + Send + 'static {
        let lifecycle = Arc::downgrade(self);
        move |exit| {
            let Some(lifecycle) = lifecycle.upgrade() else {
                return false;
            };
            lifecycle.reaped(exit);
            true
        }
    }

    /// One reaped exit, on the reaping thread (the daemon's main loop, inside
    /// `Monitor::dispatch`), so it must never block, run runc, or spawn through the monitor.
    /// A started exec's exit is recorded here, the fast path: taken out of `running` (and
    /// copied to every start in flight), recorded with its TaskExit queued, and, if its init's
    /// exit was waiting for it, [`Message::ExecsDone`] queued for the exits thread, which
    /// finishes the init (its OOM flush waits for the main loop, which serves the watcher).
    /// Any other exit somebody waits for goes to the exits queue.
    ///
    /// Lock order, outermost first: the monitor's `reaping` (write) and `subscribers`; then
    /// `tracking`; then one process's `inner`; then the state of the publisher's queue and of
    /// the exits queue, and transient's list of threads (`SerialQueue::push` may start the
    /// queue's thread). The exit callbacks run once `tracking` and `inner` are released: a
    /// Wait's reply goes to its connection's outbox, which never blocks, or to a new
    /// `wait-output` thread. This cannot deadlock, because no thread holding one of these
    /// locks waits for the monitor's or for the main loop:
    /// - runc runs (spawns through the monitor) only under a process's `ops` lock, which is
    ///   never taken here, and never under `tracking` or `inner`, whose holders only read and
    ///   update maps, channels and queues;
    /// - starting a thread waits for nothing on the main loop, which joins only threads that
    ///   have ended their work;
    /// - what could wait for an exit (closing a process's IO stops its logger) is never
    ///   dropped here: see [`release_off_the_reaper`].
    fn reaped(&self, exit: Exit) {
        let mut tracking = self.lock();
        if !tracking.is_started_exec(exit.pid) {
            if tracking.waits_for(exit.pid) {
                self.messages.push(Message::Reaped(exit));
            }
            return;
        }
        let execs = tracking.take_exited(&exit);
        // Recorded under the tracking lock: the exits thread, deciding whether an init's exit
        // waits for its execs, sees each exec either running or with its TaskExit queued.
        let notices: Vec<ExitNotice> = execs.iter().map(|exec| self.record(exec, exit)).collect();
        let mut released: Vec<&str> = Vec::new();
        for exec in &execs {
            let id = exec.container.id.as_str();
            if !released.contains(&id) && tracking.init_exit_releasable(id) {
                released.push(id);
                self.messages.push(Message::ExecsDone(id.to_owned()));
            }
        }
        drop(tracking);
        for notice in notices {
            notice.deliver();
        }
        for exec in execs {
            release_off_the_reaper(exec);
        }
    }

    /// Subscribes to exits before a runc call that starts a process. For the Start of an init
    /// that Create already registered, `restarting` removes it from the running set, so its
    /// exit during `runc start` is parked until TaskStart is queued.
    pub fn pre_start(&self, restarting: Option<&ProcRef>) -> StartGuard<'_> {
        let mut tracking = self.lock();
        if let Some(proc_ref) = restarting {
            let pid = pid_key(proc_ref.process.pid());
            if let Some(list) = tracking.running.get_mut(&pid) {
                list.retain(|other| !Arc::ptr_eq(&other.process, &proc_ref.process));
                if list.is_empty() {
                    tracking.running.remove(&pid);
                }
            }
        }
        self.subscribe(&mut tracking, None)
    }

    /// Before `runc exec`: refuses unless the init lives and is created or running, else
    /// subscribes with the exec, which holds the init's exit from now on. The init's state
    /// is read under the lock its exit is taken under, so an exec either holds that exit or
    /// is refused.
    pub fn pre_exec_start(&self, exec: ProcRef) -> Result<StartGuard<'_>, Error> {
        let mut tracking = self.lock();
        match exec.container.init.live_state() {
            Some(ProcState::Init(InitState::Created | InitState::Running)) => {}
            _ => {
                return Err(Error::InitNotRunning {
                    id: exec.container.id.clone(),
                })
            }
        }
        Ok(self.subscribe(&mut tracking, Some(exec)))
    }

    fn subscribe(&self, tracking: &mut Tracking, exec: Option<ProcRef>) -> StartGuard<'_> {
        let token = tracking.next_start;
        tracking.next_start += 1;
        let start = Start {
            exits: Vec::new(),
            exec,
        };
        tracking.starts.insert(token, start);
        StartGuard {
            lifecycle: self,
            token,
        }
    }

    /// Forgets a deleted container.
    pub fn forget(&self, container_id: &str) {
        self.lock().pending_init_exits.remove(container_id);
    }

    /// Records an exit from the reaper; returns the started processes it belongs to.
    fn take_exited(&self, exit: &Exit) -> Vec<ProcRef> {
        self.lock().take_exited(exit)
    }

    /// Holds an init exit back while execs run; returns it back if none run.
    fn defer_init_exit(&self, proc_ref: ProcRef, exit: Exit) -> Option<(ProcRef, Exit)> {
        let mut tracking = self.lock();
        let id = proc_ref.container.id.clone();
        if tracking.live_execs(&id) > 0 {
            tracking.pending_init_exits.insert(id, (proc_ref, exit));
            None
        } else {
            Some((proc_ref, exit))
        }
    }

    /// One message's handling, on the exits queue's thread, which may block (runc, the OOM
    /// watcher).
    fn handle(&self, message: Message) {
        match message {
            Message::Reaped(exit) | Message::Replay(exit) => {
                for proc_ref in self.take_exited(&exit) {
                    self.dispatch(proc_ref, exit);
                }
            }
            Message::Oom => self.publish_pending_ooms(),
            Message::ExecsDone(container_id) => self.release_init_exit(&container_id),
        }
    }

    fn dispatch(&self, proc_ref: ProcRef, exit: Exit) {
        match proc_ref.process.kind {
            Kind::Init => {
                if proc_ref.container.exit_policy == ExitPolicy::KillAll {
                    // The container shares a pid namespace: its other processes do not die
                    // with the init.
                    self.effects.kill_all(&proc_ref.container);
                }
                if let Some((init, exit)) = self.defer_init_exit(proc_ref, exit) {
                    self.finish(&init, exit);
                }
            }
            Kind::Exec => {
                self.finish(&proc_ref, exit);
                self.release_init_exit(&proc_ref.container.id);
            }
        }
    }

    /// Publishes the init exit that waited for the container's execs, once none is left.
    fn release_init_exit(&self, container_id: &str) {
        let released = self.lock().release_if_idle(container_id);
        if let Some((init, exit)) = released {
            self.finish(&init, exit);
        }
    }

    /// Records the exit and queues TaskExit, after a final OOM flush for an init; then runs
    /// its exit callbacks.
    fn finish(&self, proc_ref: &ProcRef, exit: Exit) {
        if proc_ref.process.kind == Kind::Init {
            self.effects.stop_oom_watch(&proc_ref.container);
            // The flush put any last kill on the channel; publish it before the exit.
            self.publish_pending_ooms();
        }
        self.record(proc_ref, exit).deliver();
    }

    /// Records the exit and queues TaskExit in one critical section of the process; never
    /// blocks. Returns the exit callbacks, to run outside the caller's locks.
    fn record(&self, proc_ref: &ProcRef, exit: Exit) -> ExitNotice {
        let container = &proc_ref.container;
        // Before the exit is recorded, which lets Wait answer once the output drained: with
        // the shim's own FIFO readers gone, output nobody reads no longer holds the drain.
        proc_ref.process.release_output();
        let record = ExitRecord {
            status: u32::try_from(exit.status).unwrap_or(255),
            at: exit.at,
        };
        proc_ref.process.record_exit(record, |pid| {
            let event = task_exit(&container.id, &proc_ref.process.id, pid, record);
            self.effects.publish_exit(&event);
        })
    }

    fn publish_pending_ooms(&self) {
        for event in self.ooms.try_iter() {
            let mut oom = TaskOOM::new();
            oom.container_id = event.key;
            self.effects.publish_oom(&oom);
        }
    }
}

impl StartGuard<'_> {
    /// The start event is queued: tracks the pid as running, and replays an exit that raced
    /// the start.
    pub fn started(self, proc_ref: ProcRef) {
        let pid = pid_key(proc_ref.process.pid());
        let mut tracking = self.lifecycle.lock();
        let start = tracking.starts.remove(&self.token).unwrap_or_default();
        tracking.running.entry(pid).or_default().push(proc_ref);
        if let Some(exit) = start.exits.iter().find(|exit| exit.pid == pid) {
            self.lifecycle.messages.push(Message::Replay(*exit));
        }
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        let mut tracking = self.lifecycle.lock();
        let Some(Start {
            exec: Some(exec), ..
        }) = tracking.starts.remove(&self.token)
        else {
            return;
        };
        // `runc exec` failed: the exec will never exit, so it no longer holds the init's exit.
        let id = &exec.container.id;
        if tracking.pending_init_exits.contains_key(id) && tracking.live_execs(id) == 0 {
            self.lifecycle.messages.push(Message::ExecsDone(id.clone()));
        }
    }
}

/// Lets go of a process taken on the reaping thread. The last holder of an exec whose IO is
/// still installed (one its container's Delete dropped while `runc exec` ran) closes that
/// IO on a thread of its own: closing it may wait for a logger's exit, which only the
/// reaping thread can deliver.
fn release_off_the_reaper(proc_ref: ProcRef) {
    let Some(process) = Arc::into_inner(proc_ref.process) else {
        return;
    };
    if let Some(io) = process.take_io() {
        if let Err(err) = wren_shim::transient::spawn("io-close", move || drop(io)) {
            log::error!(
                "failed to start a thread to close the io of {}: {err}",
                process.id
            );
        }
    }
}

fn lock(tracking: &Mutex<Tracking>) -> MutexGuard<'_, Tracking> {
    // Only map updates happen under the lock; they cannot be left half-done.
    tracking.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pid_key(pid: u32) -> i32 {
    // Linux pids are below 2^22; an unparsable one simply matches no exit.
    i32::try_from(pid).unwrap_or(-1)
}

/// Creates the lifecycle: the sink of the exits `monitor` reaps, which records a started
/// exec's exit itself and queues the others somebody waits for, and the OOM watcher, whose
/// events go through the same queue. The watcher is served by the daemon's `main_loop`:
/// `watch` runs on RPC threads and `unwatch` on them or the exits queue, never on that loop.
pub fn start(
    monitor: &Monitor,
    publisher: Publisher,
    main_loop: &MainLoopSources,
) -> Result<(Arc<Lifecycle>, Arc<OomWatcher>), Error> {
    let (messages, link) = exits_queue();
    let (oom_events, ooms) = crossbeam_channel::unbounded();
    let sink = QueuedOomSink {
        events: oom_events,
        messages: messages.clone(),
    };
    let (oom, poller) = OomWatcher::polled(sink).map_err(Error::OomWatcher)?;
    main_loop
        .add(OomSource(poller))
        .map_err(Error::OomOnMainLoop)?;
    let oom = Arc::new(oom);
    let effects = ShimEffects {
        publisher,
        oom: Arc::clone(&oom),
    };
    let lifecycle = Arc::new(Lifecycle::new(messages, ooms, Box::new(effects)));
    let _ = link.set(Arc::downgrade(&lifecycle));
    monitor.on_every_exit(lifecycle.exit_sink());
    Ok((lifecycle, oom))
}

/// The OOM watcher's epoll set, in the daemon's main loop.
struct OomSource(OomPoller);

impl LoopSource for OomSource {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd()
    }

    fn on_readable(&mut self) {
        self.0.poll();
    }
}

/// The exits queue, whose handler reaches the lifecycle through a weak link set once it
/// exists: the lifecycle owns the queue, so a strong one would be a cycle.
fn exits_queue() -> (SerialQueue<Message>, Arc<OnceLock<Weak<Lifecycle>>>) {
    let link: Arc<OnceLock<Weak<Lifecycle>>> = Arc::default();
    let queue = {
        let link = Arc::clone(&link);
        SerialQueue::new("exits", move |message| {
            if let Some(lifecycle) = link.get().and_then(Weak::upgrade) {
                lifecycle.handle(message);
            }
        })
    };
    (queue, link)
}

/// The effects of the running shim: runc, the OOM watcher and the publisher.
#[derive(Debug)]
struct ShimEffects {
    publisher: Publisher,
    oom: Arc<OomWatcher>,
}

impl Effects for ShimEffects {
    fn kill_all(&self, container: &Container) {
        // runc's failure here (already gone) changes nothing.
        if let Err(err) = container
            .runc
            .kill(&container.id, libc::SIGKILL, KillScope::All)
        {
            log::debug!(
                "kill --all after the init of {} exited: {err}",
                container.id
            );
        }
    }

    fn stop_oom_watch(&self, container: &Container) {
        container.stop_oom_watch(&self.oom);
    }

    fn publish_exit(&self, event: &TaskExit) {
        if let Err(err) = self.publisher.publish(event) {
            log::error!("failed to queue the exit of {}: {err}", event.id);
        }
    }

    fn publish_oom(&self, event: &TaskOOM) {
        if let Err(err) = self.publisher.publish(event) {
            log::error!(
                "failed to queue the oom event of {}: {err}",
                event.container_id
            );
        }
    }
}

/// OOM events go on a channel that the exits queue drains, and wake the queue.
#[derive(Debug)]
struct QueuedOomSink {
    events: Sender<OomEvent>,
    messages: SerialQueue<Message>,
}

impl OomSink for QueuedOomSink {
    fn deliver(&self, event: OomEvent) -> bool {
        let delivered = self.events.send(event).is_ok();
        self.messages.push(Message::Oom);
        delivered
    }
}

fn task_exit(container_id: &str, id: &str, pid: u32, exit: ExitRecord) -> TaskExit {
    let mut event = TaskExit::new();
    event.container_id = container_id.to_owned();
    event.id = id.to_owned();
    event.pid = pid;
    event.exit_status = exit.status;
    event.exited_at = protobuf::MessageField::some(to_timestamp(exit.at));
    event
}

#[cfg(test)]
#[path = "exits_tests.rs"]
mod tests;
