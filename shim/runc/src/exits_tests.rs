//! The orders the reaper's sink and the exits queue decide, driven on the test's thread (which
//! plays the reaping thread and the exits thread) through a recording [`Effects`]: no runc,
//! cgroup or containerd runs. Start events are recorded by the test where `ops` would queue
//! them, just before [`StartGuard::started`], as `ops` does.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;
use wren_runc_driver::{Runc, RuncConfig};
use wren_shim::{Exit, Monitor, SerialQueue};
use wren_shim_protocol::events::{TaskExit, TaskOOM};

use super::*;
use crate::container::{Container, CreateRequest, ExitPolicy, Rootfs};
use crate::options::RuntimeOptions;
use crate::process::{ProcState, Process, StdioPaths};
use crate::state::{ExecState, Op, PauseOutcome};

/// Records every effect, in order, as one line each.
#[derive(Debug, Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    /// Containers whose final OOM read finds a kill, and the sink it is delivered to.
    oom_kills: Mutex<Vec<String>>,
    oom_sink: OnceLock<QueuedOomSink>,
    /// Set by the tests that check where a TaskExit is queued from.
    lifecycle: OnceLock<Weak<Lifecycle>>,
    /// For each TaskExit queued once `lifecycle` is set: whether its tracking lock was held.
    tracking_held: Mutex<Vec<bool>>,
}

impl Recorder {
    fn record(&self, line: String) {
        self.events.lock().unwrap().push(line);
    }
}

/// The lifecycle holds a box; the test keeps the recorder.
#[derive(Debug)]
struct Shared(Arc<Recorder>);

impl Effects for Shared {
    fn kill_all(&self, container: &Container) {
        self.0.record(format!("kill-all {}", container.id));
    }

    fn stop_oom_watch(&self, container: &Container) {
        // As the watcher's final read does: a kill found goes through the sink before
        // unwatch returns.
        let found = {
            let mut kills = self.0.oom_kills.lock().unwrap();
            let before = kills.len();
            kills.retain(|id| *id != container.id);
            kills.len() != before
        };
        if found {
            let event = OomEvent {
                key: container.id.clone(),
            };
            assert!(self.0.oom_sink.get().unwrap().deliver(event));
        }
    }

    fn publish_exit(&self, event: &TaskExit) {
        if let Some(lifecycle) = self.0.lifecycle.get().and_then(Weak::upgrade) {
            let held = lifecycle.tracking.try_lock().is_err();
            self.0.tracking_held.lock().unwrap().push(held);
        }
        let line = format!(
            "exit {}/{} {}",
            event.container_id, event.id, event.exit_status
        );
        self.0.record(line);
    }

    fn publish_oom(&self, event: &TaskOOM) {
        self.0.record(format!("oom {}", event.container_id));
    }
}

struct Harness {
    lifecycle: Arc<Lifecycle>,
    /// The reaper's sink, as the monitor calls it.
    sink: Box<dyn Fn(Exit) -> bool>,
    recorder: Arc<Recorder>,
    queued: Receiver<Message>,
    monitor: Arc<Monitor>,
}

impl Harness {
    fn new() -> Self {
        // The queue's thread hands each message to this thread, which handles it: the
        // queue's order, on a thread the test controls.
        let (forward, queued) = crossbeam_channel::unbounded();
        let messages = SerialQueue::new("exits-test", move |message| {
            let _ = forward.send(message);
        });
        let (oom_events, ooms) = crossbeam_channel::unbounded();
        let recorder = Arc::new(Recorder::default());
        let sink = QueuedOomSink {
            events: oom_events,
            messages: messages.clone(),
        };
        let _ = recorder.oom_sink.set(sink);
        let effects = Box::new(Shared(Arc::clone(&recorder)));
        let lifecycle = Arc::new(Lifecycle::new(messages, ooms, effects));
        Self {
            sink: Box::new(lifecycle.exit_sink()),
            lifecycle,
            recorder,
            queued,
            monitor: Monitor::new(),
        }
    }

    /// What the reaper hands the lifecycle for `pid`: the sink runs on this thread, as it
    /// runs on the reaping thread.
    fn reap(&self, pid: u32, status: i32) {
        let exit = Exit {
            pid: pid_key(pid),
            status,
            at: SystemTime::now(),
        };
        assert!((self.sink)(exit), "the sink stays subscribed");
    }

    /// Whether anything reached the queue since it was last run.
    fn queued_anything(&self) -> bool {
        assert!(self.lifecycle.messages.wait_empty(Duration::from_secs(5)));
        !self.queued.is_empty()
    }

    /// Handles everything queued, in order, until the queue stays empty.
    fn run_queue(&self) {
        loop {
            assert!(self.lifecycle.messages.wait_empty(Duration::from_secs(5)));
            let batch: Vec<Message> = self.queued.try_iter().collect();
            if batch.is_empty() {
                return;
            }
            for message in batch {
                self.lifecycle.handle(message);
            }
        }
    }

    fn record(&self, line: &str) {
        self.recorder.record(line.to_owned());
    }

    fn events(&self) -> Vec<String> {
        self.recorder.events.lock().unwrap().clone()
    }

    /// A container whose created init has `pid`, registered as Create registers it.
    fn create(&self, id: &str, pid: u32, policy: ExitPolicy) -> ProcRef {
        let guard = self.lifecycle.pre_start(None);
        let init = self.create_without_start(id, pid, policy);
        self.record(&format!("create {id}"));
        guard.started(init.clone());
        init
    }

    /// A container whose created init has `pid`, for the test to register.
    fn create_without_start(&self, id: &str, pid: u32, policy: ExitPolicy) -> ProcRef {
        let request = CreateRequest {
            id: id.to_owned(),
            bundle: PathBuf::from("/nonexistent/bundle"),
            mounts: Vec::new(),
            stdio: StdioPaths::default(),
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            options: None,
        };
        let runc = Runc::new(RuncConfig::default(), Arc::clone(&self.monitor) as _);
        let init = Arc::new(Process::init(id, StdioPaths::default(), pid, None));
        let mut container = Container::assemble(
            &request,
            runc,
            RuntimeOptions::default(),
            Rootfs::Unmanaged,
            Arc::clone(&init),
        );
        container.exit_policy = policy;
        ProcRef {
            container: Arc::new(container),
            process: init,
        }
    }

    /// The Start of a created init, as `ops::start_init` runs it.
    fn start(&self, init: &ProcRef) {
        let guard = self.lifecycle.pre_start(Some(init));
        init.process.commit(Op::Start);
        self.record(&format!("start {}", init.container.id));
        guard.started(init.clone());
    }

    /// An exec registered by the Exec RPC.
    fn add_exec(&self, init: &ProcRef, exec_id: &str) -> ProcRef {
        let process = Process::exec(
            exec_id,
            StdioPaths::default(),
            b"{}".to_vec(),
            PathBuf::from("/nonexistent/e.pid"),
        );
        ProcRef {
            container: Arc::clone(&init.container),
            process: init.container.add_exec(process).unwrap(),
        }
    }

    /// The end of an exec start once `runc exec` returned `pid`, as `ops::start_exec` ends.
    fn exec_started(&self, guard: StartGuard<'_>, exec: &ProcRef, pid: u32) {
        exec.process.started(pid, None);
        self.record(&format!("exec-started {}", exec.process.id));
        guard.started(exec.clone());
    }

    /// A whole exec start of `exec_id` with `pid`.
    fn exec(&self, init: &ProcRef, exec_id: &str, pid: u32) -> ProcRef {
        let exec = self.add_exec(init, exec_id);
        let guard = self.lifecycle.pre_exec_start(exec.clone()).unwrap();
        self.exec_started(guard, &exec, pid);
        exec
    }
}

fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| (*line).to_owned()).collect()
}

fn is_init_not_running<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::InitNotRunning { .. }))
}

#[test]
fn an_exit_during_runc_exec_waits_for_the_start_event() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    let exec = harness.add_exec(&init, "e1");
    let guard = harness.lifecycle.pre_exec_start(exec.clone()).unwrap();
    // The exec dies before runc returns its pid: the exit is reaped and handled first.
    harness.reap(101, 3);
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1", "start c1"]));
    harness.exec_started(guard, &exec, 101);
    harness.run_queue();
    let expected = ["create c1", "start c1", "exec-started e1", "exit c1/e1 3"];
    assert_eq!(harness.events(), lines(&expected));
    assert_eq!(exec.process.state(), ProcState::Exec(ExecState::Stopped));
}

#[test]
fn an_init_exit_during_runc_start_waits_for_task_start() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    let guard = harness.lifecycle.pre_start(Some(&init));
    // runc start returned; the init exits before TaskStart is queued.
    harness.reap(100, 0);
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1"]));
    init.process.commit(Op::Start);
    harness.record("start c1");
    guard.started(init.clone());
    harness.run_queue();
    assert_eq!(
        harness.events(),
        lines(&["create c1", "start c1", "exit c1/c1 0"])
    );
}

#[test]
fn a_replayed_init_exit_not_yet_handled_when_start_runs_follows_that_start() {
    let harness = Harness::new();
    let guard = harness.lifecycle.pre_start(None);
    let init = harness.create_without_start("c1", 100, ExitPolicy::InitOnly);
    // The init dies during runc create: its exit is parked, then queued again by `started`.
    harness.reap(100, 1);
    harness.run_queue();
    harness.record("create c1");
    guard.started(init.clone());
    // containerd's Start comes before the queue handled that replay; runc start fails.
    let start = harness.lifecycle.pre_start(Some(&init));
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1"]));
    start.started(init.clone());
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1", "exit c1/c1 1"]));
}

#[test]
fn an_exit_still_queued_when_the_start_event_is_queued_follows_it() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    let exec = harness.add_exec(&init, "e1");
    let guard = harness.lifecycle.pre_exec_start(exec.clone()).unwrap();
    // Reaped, but the queue has not taken it yet when the start event is queued.
    harness.reap(101, 1);
    harness.exec_started(guard, &exec, 101);
    harness.run_queue();
    let expected = ["create c1", "exec-started e1", "exit c1/e1 1"];
    assert_eq!(harness.events(), lines(&expected));
}

#[test]
fn an_init_exit_waits_for_the_exits_of_running_execs() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    harness.exec(&init, "e1", 101);
    harness.exec(&init, "e2", 102);
    harness.reap(100, 137);
    harness.run_queue();
    assert_eq!(harness.events().len(), 4, "{:?}", harness.events());
    // Still running as containerd sees it, but dead: no exec may start any more.
    assert_eq!(init.process.state(), ProcState::Init(InitState::Running));
    let late = harness.add_exec(&init, "e3");
    assert!(is_init_not_running(&harness.lifecycle.pre_exec_start(late)));
    harness.reap(102, 137);
    harness.run_queue();
    assert_eq!(harness.events()[4..], lines(&["exit c1/e2 137"]));
    harness.reap(101, 137);
    harness.run_queue();
    assert_eq!(
        harness.events()[4..],
        lines(&["exit c1/e2 137", "exit c1/e1 137", "exit c1/c1 137"])
    );
    assert_eq!(init.process.state(), ProcState::Init(InitState::Stopped));
}

#[test]
fn an_init_exit_in_a_shared_pid_namespace_kills_the_rest_then_waits() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::KillAll);
    harness.start(&init);
    harness.exec(&init, "e1", 101);
    harness.reap(100, 0);
    harness.run_queue();
    assert_eq!(harness.events()[3..], lines(&["kill-all c1"]));
    // The SIGKILL of `kill --all` ends the exec.
    harness.reap(101, 137);
    harness.run_queue();
    assert_eq!(
        harness.events()[3..],
        lines(&["kill-all c1", "exit c1/e1 137", "exit c1/c1 0"])
    );
}

#[test]
fn a_private_pid_namespace_needs_no_kill_all() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    harness.reap(100, 0);
    harness.run_queue();
    let expected = ["create c1", "start c1", "exit c1/c1 0"];
    assert_eq!(harness.events(), lines(&expected));
}

#[test]
fn an_exec_starting_when_the_init_exits_holds_its_exit_until_replayed() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    let exec = harness.add_exec(&init, "e1");
    let guard = harness.lifecycle.pre_exec_start(exec.clone()).unwrap();
    // Both die while `runc exec` runs: the init's exit waits for the starting exec.
    harness.reap(101, 2);
    harness.reap(100, 137);
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1", "start c1"]));
    harness.exec_started(guard, &exec, 101);
    harness.run_queue();
    assert_eq!(
        harness.events()[2..],
        lines(&["exec-started e1", "exit c1/e1 2", "exit c1/c1 137"])
    );
}

#[test]
fn a_failed_exec_start_releases_the_init_exit() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    let exec = harness.add_exec(&init, "e1");
    let guard = harness.lifecycle.pre_exec_start(exec).unwrap();
    harness.reap(100, 1);
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1", "start c1"]));
    // `runc exec` failed: the guard goes without a started process.
    drop(guard);
    harness.run_queue();
    let expected = ["create c1", "start c1", "exit c1/c1 1"];
    assert_eq!(harness.events(), lines(&expected));
}

#[test]
fn execs_are_refused_unless_the_init_is_created_or_running() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    let exec = harness.add_exec(&init, "e1");
    drop(harness.lifecycle.pre_exec_start(exec.clone()).unwrap());
    harness.start(&init);
    init.process.transition(Op::Pause).unwrap();
    let refused = harness.lifecycle.pre_exec_start(exec.clone());
    assert!(is_init_not_running(&refused));
    init.process.pause_ended(PauseOutcome::Failed);
    drop(harness.lifecycle.pre_exec_start(exec.clone()).unwrap());
    harness.reap(100, 0);
    harness.run_queue();
    assert!(is_init_not_running(&harness.lifecycle.pre_exec_start(exec)));
}

#[test]
fn the_final_oom_event_precedes_the_init_exit() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    harness.recorder.oom_kills.lock().unwrap().push("c1".into());
    harness.reap(100, 137);
    harness.run_queue();
    let expected = ["create c1", "start c1", "oom c1", "exit c1/c1 137"];
    assert_eq!(harness.events(), lines(&expected));
}

#[test]
fn an_oom_event_is_published_when_it_comes() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    let sink = harness.recorder.oom_sink.get().unwrap();
    assert!(sink.deliver(OomEvent { key: "c1".into() }));
    harness.run_queue();
    harness.reap(100, 137);
    harness.run_queue();
    let expected = ["create c1", "oom c1", "exit c1/c1 137"];
    assert_eq!(harness.events(), lines(&expected));
    drop(init);
}

#[test]
fn a_second_exit_of_the_same_pid_is_dropped() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    let exec = harness.exec(&init, "e1", 101);
    harness.reap(101, 5);
    harness.reap(101, 6);
    harness.run_queue();
    let expected = ["create c1", "start c1", "exec-started e1", "exit c1/e1 5"];
    assert_eq!(harness.events(), lines(&expected));
    assert_eq!(exec.process.snapshot().exit.unwrap().status, 5);
}

#[test]
fn an_exit_nobody_started_is_dropped() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.reap(4242, 0);
    harness.run_queue();
    assert_eq!(harness.events(), lines(&["create c1"]));
    assert_eq!(init.process.live_state(), Some(init.process.state()));
}

#[test]
fn only_the_exits_somebody_waits_for_reach_the_queue() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    // runc's own exit (a kill, a delete...) with no start in flight: the queue stays asleep.
    harness.reap(4242, 0);
    assert!(!harness.queued_anything());
    // During a start, any exit may be the new process's.
    let exec = harness.add_exec(&init, "e1");
    let guard = harness.lifecycle.pre_exec_start(exec.clone()).unwrap();
    harness.reap(4243, 0);
    assert!(harness.queued_anything());
    harness.run_queue();
    harness.exec_started(guard, &exec, 101);
    harness.reap(4244, 0);
    assert!(!harness.queued_anything());
    // A started exec's exit is recorded by the sink itself; a started init's is queued.
    harness.reap(101, 0);
    assert!(!harness.queued_anything());
    harness.reap(100, 0);
    assert!(harness.queued_anything());
    harness.run_queue();
    let expected = [
        "create c1",
        "exec-started e1",
        "exit c1/e1 0",
        "exit c1/c1 0",
    ];
    assert_eq!(harness.events(), lines(&expected));
}

#[test]
fn a_started_exec_exit_is_recorded_and_published_by_the_sink() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    let exec = harness.exec(&init, "e1", 101);
    let _ = harness
        .recorder
        .lifecycle
        .set(Arc::downgrade(&harness.lifecycle));
    // A pending Wait, which notes whether the tracking lock was free when it was answered.
    let (answer, answered) = crossbeam_channel::bounded(1);
    let lifecycle = Arc::clone(&harness.lifecycle);
    exec.process.on_exit(Box::new(move |exit| {
        let tracking_free = lifecycle.tracking.try_lock().is_ok();
        answer.send((exit, tracking_free)).unwrap();
    }));
    harness.reap(101, 3);
    // Before the sink returned, with no queue run: stopped, published, answered.
    let expected = ["create c1", "start c1", "exec-started e1", "exit c1/e1 3"];
    assert_eq!(harness.events(), lines(&expected));
    assert_eq!(exec.process.state(), ProcState::Exec(ExecState::Stopped));
    let (exit, tracking_free) = answered.try_recv().unwrap();
    assert_eq!(exit.map(|exit| exit.status), Some(3));
    assert!(!harness.queued_anything());
    // The TaskExit was queued in the critical section that took the exec out of `running`;
    // the Wait was answered outside it.
    assert_eq!(*harness.recorder.tracking_held.lock().unwrap(), [true]);
    assert!(tracking_free);
}

#[test]
fn an_exec_exit_on_the_sink_releases_the_held_init_exit_through_the_queue() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    harness.exec(&init, "e1", 101);
    harness.recorder.oom_kills.lock().unwrap().push("c1".into());
    harness.reap(100, 137);
    harness.run_queue();
    assert_eq!(harness.events().len(), 3, "{:?}", harness.events());
    harness.reap(101, 1);
    // The exec's exit at once; the init's (its OOM flush blocks) only from the queue.
    assert_eq!(harness.events()[3..], lines(&["exit c1/e1 1"]));
    assert_eq!(init.process.state(), ProcState::Init(InitState::Running));
    assert!(harness.queued_anything());
    harness.run_queue();
    assert_eq!(
        harness.events()[3..],
        lines(&["exit c1/e1 1", "oom c1", "exit c1/c1 137"])
    );
    assert_eq!(init.process.state(), ProcState::Init(InitState::Stopped));
}

#[test]
fn an_init_exit_still_queued_when_its_exec_exits_on_the_sink_follows_the_exec_exit() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    harness.exec(&init, "e1", 101);
    // The init's exit is queued, not handled yet, when the exec's is recorded.
    harness.reap(100, 0);
    harness.reap(101, 9);
    assert_eq!(harness.events()[3..], lines(&["exit c1/e1 9"]));
    harness.run_queue();
    assert_eq!(
        harness.events()[3..],
        lines(&["exit c1/e1 9", "exit c1/c1 0"])
    );
}

#[test]
fn an_exec_exit_on_the_sink_during_another_start_reaches_that_start() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::InitOnly);
    harness.start(&init);
    let first = harness.exec(&init, "e1", 101);
    let second = harness.add_exec(&init, "e2");
    let guard = harness.lifecycle.pre_exec_start(second.clone()).unwrap();
    harness.reap(101, 4);
    // Recorded at once even with a start in flight...
    assert_eq!(harness.events()[3..], lines(&["exit c1/e1 4"]));
    assert_eq!(first.process.state(), ProcState::Exec(ExecState::Stopped));
    assert!(!harness.queued_anything());
    // ...and copied to that start's subscription, which sees every exit reaped meanwhile.
    let copied = harness
        .lifecycle
        .lock()
        .starts
        .values()
        .all(|start| start.exits.iter().any(|exit| exit.pid == 101));
    assert!(copied);
    harness.exec_started(guard, &second, 102);
    harness.reap(102, 5);
    assert_eq!(
        harness.events()[3..],
        lines(&["exit c1/e1 4", "exec-started e2", "exit c1/e2 5"])
    );
}

#[test]
fn an_init_exit_never_takes_the_fast_path() {
    let harness = Harness::new();
    let init = harness.create("c1", 100, ExitPolicy::KillAll);
    harness.start(&init);
    harness.reap(100, 0);
    // Neither `kill --all` nor the exit ran on the reaping thread.
    assert!(harness.queued_anything());
    assert_eq!(harness.events(), lines(&["create c1", "start c1"]));
    assert_eq!(init.process.live_state(), Some(init.process.state()));
    harness.run_queue();
    let expected = ["create c1", "start c1", "kill-all c1", "exit c1/c1 0"];
    assert_eq!(harness.events(), lines(&expected));
}
