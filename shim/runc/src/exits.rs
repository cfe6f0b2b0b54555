//! Exit tracking and dispatch (docs/protocol.md §5.6, §3.3).
//!
//! Every exit somebody waits for goes to one serial queue, "exits" (its thread runs only while
//! there is work), which alone publishes TaskExit and TaskOOM; that single consumer is what
//! keeps the order containerd relies on:
//! - a start (create, start, exec) registers a [`StartGuard`] before runc runs; an exit of the
//!   new pid that arrives before the start event is queued is parked in the guard and replayed
//!   to the queue only after the event ([`StartGuard::started`]);
//! - an init's exit waits until every running exec's exit is published;
//! - the OOM watcher is flushed (unwatch) before the init's TaskExit, and the flushed event,
//!   which lands on the channel the queue drains, is published first;
//! - when the init of a container without its own pid namespace exits, `runc kill --all` sends
//!   SIGKILL to what is left, so the exec exits, and then the init's, follow.
//!
//! The reaper's sink forwards an exit only if its pid belongs to a started process or a start
//! is in flight (whose new pid is not known yet); other exits (runc's own, waited for by
//! their spawner, and reparented orphans) never wake the queue.
//!
//! Each fact has one owner: whether a process is dead is its [`Process`]'s (reaped when its
//! exit is taken here, before that exit is recorded); which execs still hold their init's
//! exit is derived from what is tracked here (started or starting), never counted apart.
//! What dispatching does to the world (runc, the OOM watcher, the publisher) goes through
//! [`Effects`], so the orders are unit tested without them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use crossbeam_channel::{Receiver, Sender};
use wren_cgroups::{OomEvent, OomSink, OomWatcher};
use wren_runc_driver::KillScope;
use wren_shim::{Exit, Monitor, Publisher, SerialQueue};
use wren_shim_protocol::events::{TaskExit, TaskOOM};
use wren_shim_protocol::timestamp::to_timestamp;

use crate::container::{Container, ExitPolicy};
use crate::error::Error;
use crate::process::{ExitRecord, Kind, ProcState, Process};
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
    /// A failed exec start left no exec that holds the container's pending init exit.
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

    /// Whether the exits queue must see an exit of `pid`: a started process's, or any exit
    /// while a start is in flight. An exit filtered out here would find nothing to do there:
    /// only a start in flight now can put its pid in `running` later.
    fn waits_for(&self, pid: i32) -> bool {
        self.running.contains_key(&pid) || !self.starts.is_empty()
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

/// The bookkeeping RPC threads and the exits queue share; locked only for map updates.
#[derive(Debug)]
pub struct Lifecycle {
    /// Shared with the reaper's sink, which reads it to filter exits.
    tracking: Arc<Mutex<Tracking>>,
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
            tracking: Arc::default(),
            messages,
            ooms,
            effects,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tracking> {
        lock(&self.tracking)
    }

    /// The reaper's sink: queues the exits somebody waits for. It runs on the reaping thread
    /// under the monitor's locks, which are taken before the tracking lock, never after.
    fn exit_sink(&self) -> impl Fn(Exit) -> bool + Send + 'static {
        let tracking = Arc::clone(&self.tracking);
        let queue = self.messages.clone();
        move |exit| {
            if lock(&tracking).waits_for(exit.pid) {
                queue.push(Message::Reaped(exit));
            }
            true
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
        let mut tracking = self.lock();
        for start in tracking.starts.values_mut() {
            start.exits.push(*exit);
        }
        tracking.take_running(exit.pid)
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

    /// One message's handling, on the exits queue's thread.
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

    /// Records the exit and queues TaskExit, after a final OOM flush for an init.
    fn finish(&self, proc_ref: &ProcRef, exit: Exit) {
        let container = &proc_ref.container;
        if proc_ref.process.kind == Kind::Init {
            self.effects.stop_oom_watch(container);
            // The flush put any last kill on the channel; publish it before the exit.
            self.publish_pending_ooms();
        }
        // Before the exit is recorded, which lets Wait answer once the output drained: with
        // the shim's own FIFO readers gone, output nobody reads no longer holds the drain.
        proc_ref.process.release_output();
        let record = ExitRecord {
            status: u32::try_from(exit.status).unwrap_or(255),
            at: exit.at,
        };
        proc_ref
            .process
            .record_exit(record, |pid| {
                let event = task_exit(&container.id, &proc_ref.process.id, pid, record);
                self.effects.publish_exit(&event);
            })
            .deliver();
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

fn lock(tracking: &Mutex<Tracking>) -> MutexGuard<'_, Tracking> {
    // Only map updates happen under the lock; they cannot be left half-done.
    tracking.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pid_key(pid: u32) -> i32 {
    // Linux pids are below 2^22; an unparsable one simply matches no exit.
    i32::try_from(pid).unwrap_or(-1)
}

/// Creates the lifecycle: its exits queue, fed by the exits `monitor` reaps that somebody
/// waits for, and the OOM watcher, whose events go through the same queue.
pub fn start(
    monitor: &Monitor,
    publisher: Publisher,
) -> Result<(Arc<Lifecycle>, Arc<OomWatcher>), Error> {
    let (messages, link) = exits_queue();
    let (oom_events, ooms) = crossbeam_channel::unbounded();
    let sink = QueuedOomSink {
        events: oom_events,
        messages: messages.clone(),
    };
    let oom = Arc::new(OomWatcher::spawn(sink).map_err(Error::OomWatcher)?);
    let effects = ShimEffects {
        publisher,
        oom: Arc::clone(&oom),
    };
    let lifecycle = Arc::new(Lifecycle::new(messages, ooms, Box::new(effects)));
    let _ = link.set(Arc::downgrade(&lifecycle));
    monitor.on_every_exit(lifecycle.exit_sink());
    Ok((lifecycle, oom))
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
