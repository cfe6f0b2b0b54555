//! Exit tracking and dispatch (docs/protocol.md §5.6, §3.3).
//!
//! Every exit the reaper sees goes to one serial queue, "exits" (its thread runs only while
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
//! Exits of pids nobody started (runc itself, reparented orphans) are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use crossbeam_channel::{Receiver, Sender};
use wren_cgroups::{OomEvent, OomSink, OomWatcher};
use wren_runc_driver::KillScope;
use wren_shim::{Exit, Monitor, Publisher, SerialQueue};
use wren_shim_protocol::events::{TaskExit, TaskOOM};
use wren_shim_protocol::timestamp::to_timestamp;

use crate::container::{Container, ExitPolicy};
use crate::error::Error;
use crate::process::{ExitRecord, Kind, Process};

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
    /// An exit that raced a start, replayed once the start event is queued.
    Replay(ProcRef, Exit),
    /// The running exec count of a container dropped to zero outside the thread.
    ExecsDone(String),
}

#[derive(Debug, Default)]
struct Tracking {
    /// Started processes by pid.
    running: HashMap<i32, Vec<ProcRef>>,
    /// Exits seen while each start was in flight.
    subscriptions: HashMap<u64, Vec<Exit>>,
    next_subscription: u64,
    /// Containers whose init has been reaped (execs may no longer start).
    init_exited: HashSet<String>,
    /// Execs started and not yet exited, per container.
    running_execs: HashMap<String, usize>,
    /// Init exits held back until the container's execs have exited.
    pending_init_exits: HashMap<String, (ProcRef, Exit)>,
}

/// The bookkeeping RPC threads and the exits queue share; locked only for map updates.
#[derive(Debug)]
pub struct Lifecycle {
    tracking: Mutex<Tracking>,
    messages: SerialQueue<Message>,
    publisher: Publisher,
    /// The OOM watcher, flushed before an init's exit is published.
    pub oom: Arc<OomWatcher>,
}

/// An exit subscription for one start; dropping it without [`started`](Self::started) just
/// unsubscribes.
#[derive(Debug)]
pub struct StartGuard<'a> {
    lifecycle: &'a Lifecycle,
    token: u64,
}

impl Lifecycle {
    fn lock(&self) -> MutexGuard<'_, Tracking> {
        // Only map updates happen under the lock; they cannot be left half-done.
        self.tracking.lock().unwrap_or_else(PoisonError::into_inner)
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
        let token = tracking.next_subscription;
        tracking.next_subscription += 1;
        tracking.subscriptions.insert(token, Vec::new());
        StartGuard {
            lifecycle: self,
            token,
        }
    }

    /// Before `runc exec`: refuses once the init has exited, else counts the exec as running
    /// (so the init's exit waits for it) and subscribes.
    pub fn pre_exec_start(&self, container_id: &str) -> Result<StartGuard<'_>, Error> {
        {
            let mut tracking = self.lock();
            if tracking.init_exited.contains(container_id) {
                return Err(Error::InitNotRunning {
                    id: container_id.to_owned(),
                });
            }
            *tracking
                .running_execs
                .entry(container_id.to_owned())
                .or_default() += 1;
        }
        Ok(self.pre_start(None))
    }

    /// `runc exec` failed: the exec will never exit, so it no longer holds the init's exit.
    pub fn exec_start_failed(&self, container_id: &str) {
        let mut tracking = self.lock();
        if let Some(count) = tracking.running_execs.get_mut(container_id) {
            *count = count.saturating_sub(1);
            if *count == 0 && tracking.pending_init_exits.contains_key(container_id) {
                self.messages
                    .push(Message::ExecsDone(container_id.to_owned()));
            }
        }
    }

    /// Forgets a deleted container.
    pub fn forget(&self, container_id: &str) {
        let mut tracking = self.lock();
        tracking.init_exited.remove(container_id);
        tracking.running_execs.remove(container_id);
        tracking.pending_init_exits.remove(container_id);
    }

    /// Records an exit from the reaper; returns the started processes it belongs to.
    fn take_exited(&self, exit: &Exit) -> Vec<ProcRef> {
        let mut tracking = self.lock();
        for exits in tracking.subscriptions.values_mut() {
            exits.push(*exit);
        }
        let procs = tracking.running.remove(&exit.pid).unwrap_or_default();
        for proc_ref in procs.iter().filter(|p| p.process.kind == Kind::Init) {
            tracking.init_exited.insert(proc_ref.container.id.clone());
        }
        procs
    }

    fn mark_init_exited(&self, container_id: &str) {
        self.lock().init_exited.insert(container_id.to_owned());
    }

    /// Holds an init exit back while execs run; returns it back if none run.
    fn defer_init_exit(&self, proc_ref: ProcRef, exit: Exit) -> Option<(ProcRef, Exit)> {
        let mut tracking = self.lock();
        let id = proc_ref.container.id.clone();
        if tracking.running_execs.get(&id).copied().unwrap_or(0) > 0 {
            tracking.pending_init_exits.insert(id, (proc_ref, exit));
            None
        } else {
            Some((proc_ref, exit))
        }
    }

    /// An exec exited: one fewer running; returns the init exit it was holding back, if any.
    fn exec_exited(&self, container_id: &str) -> Option<(ProcRef, Exit)> {
        let mut tracking = self.lock();
        let count = tracking
            .running_execs
            .entry(container_id.to_owned())
            .or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            tracking.pending_init_exits.remove(container_id)
        } else {
            None
        }
    }

    fn release_if_idle(&self, container_id: &str) -> Option<(ProcRef, Exit)> {
        let mut tracking = self.lock();
        if tracking
            .running_execs
            .get(container_id)
            .copied()
            .unwrap_or(0)
            == 0
        {
            tracking.pending_init_exits.remove(container_id)
        } else {
            None
        }
    }
}

impl StartGuard<'_> {
    /// The start event is queued: replays an exit that raced it, or tracks the pid as running.
    pub fn started(self, proc_ref: ProcRef) {
        let pid = pid_key(proc_ref.process.pid());
        let mut tracking = self.lifecycle.lock();
        let early = tracking
            .subscriptions
            .get(&self.token)
            .and_then(|exits| exits.iter().find(|exit| exit.pid == pid).copied());
        match early {
            Some(exit) => self
                .lifecycle
                .messages
                .push(Message::Replay(proc_ref, exit)),
            None => tracking.running.entry(pid).or_default().push(proc_ref),
        }
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.lifecycle.lock().subscriptions.remove(&self.token);
    }
}

fn pid_key(pid: u32) -> i32 {
    // Linux pids are below 2^22; an unparsable one simply matches no exit.
    i32::try_from(pid).unwrap_or(-1)
}

/// Creates the lifecycle: its exits queue, fed by every exit `monitor` reaps, and the OOM
/// watcher, whose events go through the same queue.
pub fn start(monitor: &Monitor, publisher: Publisher) -> Result<Arc<Lifecycle>, Error> {
    // The queue's handler reaches the lifecycle through a weak link set below: the
    // lifecycle owns the queue, so a strong one would be a cycle.
    let link: Arc<OnceLock<Weak<Lifecycle>>> = Arc::default();
    let (oom_events, ooms) = crossbeam_channel::unbounded();
    let messages = {
        let link = Arc::clone(&link);
        SerialQueue::new("exits", move |message| {
            if let Some(lifecycle) = link.get().and_then(Weak::upgrade) {
                Dispatcher::new(&lifecycle, &ooms).handle(message);
            }
        })
    };
    let sink = QueuedOomSink {
        events: oom_events,
        messages: messages.clone(),
    };
    let oom = Arc::new(OomWatcher::spawn(sink).map_err(Error::OomWatcher)?);
    let lifecycle = Arc::new(Lifecycle {
        tracking: Mutex::default(),
        messages,
        publisher,
        oom,
    });
    let _ = link.set(Arc::downgrade(&lifecycle));
    let queue = lifecycle.messages.clone();
    monitor.on_every_exit(move |exit| {
        queue.push(Message::Reaped(exit));
        true
    });
    Ok(lifecycle)
}

/// OOM events go on a channel that the exits queue drains, and wake the queue.
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

/// One message's handling, on the exits queue's thread.
struct Dispatcher<'a> {
    lifecycle: &'a Lifecycle,
    ooms: &'a Receiver<OomEvent>,
}

impl<'a> Dispatcher<'a> {
    fn new(lifecycle: &'a Lifecycle, ooms: &'a Receiver<OomEvent>) -> Self {
        Self { lifecycle, ooms }
    }

    fn handle(&self, message: Message) {
        match message {
            Message::Reaped(exit) => {
                for proc_ref in self.lifecycle.take_exited(&exit) {
                    self.dispatch(proc_ref, exit);
                }
            }
            Message::Oom => self.publish_pending_ooms(),
            Message::Replay(proc_ref, exit) => {
                if proc_ref.process.kind == Kind::Init {
                    self.lifecycle.mark_init_exited(&proc_ref.container.id);
                }
                self.dispatch(proc_ref, exit);
            }
            Message::ExecsDone(container_id) => {
                if let Some((init, exit)) = self.lifecycle.release_if_idle(&container_id) {
                    self.finish(&init, exit);
                }
            }
        }
    }

    fn dispatch(&self, proc_ref: ProcRef, exit: Exit) {
        match proc_ref.process.kind {
            Kind::Init => {
                let container = &proc_ref.container;
                if container.exit_policy == ExitPolicy::KillAll {
                    // The container shares a pid namespace: its other processes do not die
                    // with the init. runc's failure here (already gone) changes nothing.
                    if let Err(err) =
                        container
                            .runc
                            .kill(&container.id, libc::SIGKILL, KillScope::All)
                    {
                        log::debug!(
                            "kill --all after the init of {} exited: {err}",
                            container.id
                        );
                    }
                }
                if let Some((init, exit)) = self.lifecycle.defer_init_exit(proc_ref, exit) {
                    self.finish(&init, exit);
                }
            }
            Kind::Exec => {
                self.finish(&proc_ref, exit);
                if let Some((init, exit)) = self.lifecycle.exec_exited(&proc_ref.container.id) {
                    self.finish(&init, exit);
                }
            }
        }
    }

    /// Records the exit and queues TaskExit, after a final OOM flush for an init.
    fn finish(&self, proc_ref: &ProcRef, exit: Exit) {
        let container = &proc_ref.container;
        if proc_ref.process.kind == Kind::Init {
            container.stop_oom_watch(&self.lifecycle.oom);
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
        proc_ref.process.record_exit(record, |pid| {
            let event = task_exit(&container.id, &proc_ref.process.id, pid, record);
            if let Err(err) = self.lifecycle.publisher.publish(&event) {
                log::error!("failed to queue the exit of {}: {err}", proc_ref.process.id);
            }
        });
    }

    fn publish_pending_ooms(&self) {
        for event in self.ooms.try_iter() {
            self.publish_oom(&event);
        }
    }

    fn publish_oom(&self, event: &OomEvent) {
        let mut oom = TaskOOM::new();
        oom.container_id.clone_from(&event.key);
        if let Err(err) = self.lifecycle.publisher.publish(&oom) {
            log::error!("failed to queue the oom event of {}: {err}", event.key);
        }
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
