//! One process of a container (its init or an exec): its state machine, pid, exit record and
//! IO, behind a short-lived lock that is never held across a runc call or a wait on IO.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use wren_io::{Drain, ProcessIo};
use wren_shim_protocol::types::Status;

use crate::state::{ExecState, Found, InitState, Op, PauseOutcome, TransitionError};

/// Whether a process is a container's init or one of its execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Exec,
}

/// A process's position in its state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Init(InitState),
    Exec(ExecState),
}

impl ProcState {
    fn check(self, op: Op) -> Result<(), TransitionError> {
        match self {
            Self::Init(state) => state.check(op),
            Self::Exec(state) => state.check(op),
        }
    }

    fn after(self, op: Op) -> Result<Self, TransitionError> {
        match self {
            Self::Init(state) => state.after(op).map(Self::Init),
            Self::Exec(state) => state.after(op).map(Self::Exec),
        }
    }

    fn exited(self) -> Self {
        match self {
            Self::Init(state) => Self::Init(state.exited()),
            Self::Exec(state) => Self::Exec(state.exited()),
        }
    }

    fn pause_ended(self, outcome: PauseOutcome) -> Result<Self, TransitionError> {
        match self {
            Self::Init(state) => state.pause_ended(outcome).map(Self::Init),
            Self::Exec(state) => Err(TransitionError {
                op: Op::Pause,
                found: Found::Exec(state),
            }),
        }
    }

    /// Whether the process's life is over: its exit recorded, or deleted.
    fn has_ended(self) -> bool {
        matches!(
            self,
            Self::Init(InitState::Stopped | InitState::Deleted)
                | Self::Exec(ExecState::Stopped | ExecState::Deleted)
        )
    }

    /// The status containerd's State RPC reports.
    pub fn status(self) -> Status {
        match self {
            Self::Init(InitState::Created) | Self::Exec(ExecState::Created) => Status::CREATED,
            Self::Init(InitState::Running) | Self::Exec(ExecState::Running) => Status::RUNNING,
            Self::Init(InitState::Pausing) => Status::PAUSING,
            Self::Init(InitState::Paused) => Status::PAUSED,
            Self::Init(InitState::Stopped | InitState::Deleted)
            | Self::Exec(ExecState::Stopped | ExecState::Deleted) => Status::STOPPED,
        }
    }
}

/// How a process ended: containerd's exit status (code, or 128 + signal) and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    pub status: u32,
    pub at: SystemTime,
}

/// What the State RPC reports of a process, read in one critical section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub state: ProcState,
    pub pid: u32,
    pub exit: Option<ExitRecord>,
}

#[derive(Debug)]
struct Inner {
    state: ProcState,
    /// Reaped: set when the exit is taken for dispatch, before it is recorded (an init's
    /// exit waits for its execs'), so the process is known dead from then on.
    reaped: bool,
    pid: u32,
    exit: Option<ExitRecord>,
    io: Option<ProcessIo>,
    /// CloseIO came before the IO existed (during Start: ctr sends it the moment its own
    /// stdin ends), so the IO closes its stdin as soon as it is installed.
    stdin_closed: bool,
    on_exit: ExitCallbacks,
}

/// Called once: with the exit, or `None` if the process is deleted before it exits.
pub type ExitCallback = Box<dyn FnOnce(Option<ExitRecord>) + Send>;

/// Whether a callback's answer is still wanted (its client is still connected).
pub type Wanted = Box<dyn Fn() -> bool + Send>;

/// The callbacks waiting for the exit (deferred Wait replies).
#[derive(Default)]
struct ExitCallbacks(Vec<(ExitCallback, Option<Wanted>)>);

impl std::fmt::Debug for ExitCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exit callbacks", self.0.len())
    }
}

/// The exit callbacks of a process whose exit has just been recorded (deferred Wait
/// replies), to [`deliver`](Self::deliver) outside the recorder's locks.
#[must_use = "the exit callbacks run only when delivered"]
#[derive(Debug)]
pub struct ExitNotice {
    exit: ExitRecord,
    callbacks: ExitCallbacks,
}

impl ExitNotice {
    /// Runs every callback with the exit.
    pub fn deliver(self) {
        for (callback, _) in self.callbacks.0 {
            callback(Some(self.exit));
        }
    }
}

/// The stdio paths the client gave, echoed back by State.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// One process. Operations that run runc are serialised by `ops`; the state lives in `inner`.
#[derive(Debug)]
pub struct Process {
    /// The container id for an init, the exec id for an exec.
    pub id: String,
    pub kind: Kind,
    pub stdio: StdioPaths,
    /// For execs: the process spec (JSON) to hand `runc exec`.
    pub spec: Option<Vec<u8>>,
    /// For execs: `<bundle>/<exec id>.pid`.
    pub pid_file: Option<PathBuf>,
    /// Held across a runc call that changes this process (start, pause, delete...).
    pub ops: Mutex<()>,
    inner: Mutex<Inner>,
    exited: Condvar,
}

impl Process {
    /// A container's init, created by `runc create` with `pid`.
    pub fn init(id: &str, stdio: StdioPaths, pid: u32, io: Option<ProcessIo>) -> Self {
        let state = ProcState::Init(InitState::Created);
        Self::new(
            id,
            Kind::Init,
            stdio,
            Inner {
                state,
                reaped: false,
                pid,
                exit: None,
                io,
                stdin_closed: false,
                on_exit: ExitCallbacks::default(),
            },
            None,
            None,
        )
    }

    /// An exec registered by the Exec RPC; it runs once started.
    pub fn exec(id: &str, stdio: StdioPaths, spec: Vec<u8>, pid_file: PathBuf) -> Self {
        let inner = Inner {
            state: ProcState::Exec(ExecState::Created),
            reaped: false,
            pid: 0,
            exit: None,
            io: None,
            stdin_closed: false,
            on_exit: ExitCallbacks::default(),
        };
        Self::new(id, Kind::Exec, stdio, inner, Some(spec), Some(pid_file))
    }

    fn new(
        id: &str,
        kind: Kind,
        stdio: StdioPaths,
        inner: Inner,
        spec: Option<Vec<u8>>,
        pid_file: Option<PathBuf>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            kind,
            stdio,
            spec,
            pid_file,
            ops: Mutex::new(()),
            inner: Mutex::new(inner),
            exited: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Critical sections only assign fields; a panic cannot leave them half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks `ops` for a runc call that changes this process.
    pub fn lock_ops(&self) -> MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            state: inner.state,
            pid: inner.pid,
            exit: inner.exit,
        }
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    pub fn state(&self) -> ProcState {
        self.lock().state
    }

    /// The state while the process lives; `None` once it has been reaped, even before its
    /// exit is recorded.
    pub fn live_state(&self) -> Option<ProcState> {
        let inner = self.lock();
        (!inner.reaped).then_some(inner.state)
    }

    /// The reaper collected the process; its exit is about to be dispatched.
    pub fn mark_reaped(&self) {
        self.lock().reaped = true;
    }

    /// Fails unless `op` is allowed in the current state.
    pub fn check(&self, op: Op) -> Result<ProcState, TransitionError> {
        let state = self.lock().state;
        state.check(op).map(|()| state)
    }

    /// Applies `op`'s transition now, or refuses it (for a move that must happen before runc
    /// runs, such as Running to Pausing).
    pub fn transition(&self, op: Op) -> Result<ProcState, TransitionError> {
        let mut inner = self.lock();
        inner.state = inner.state.after(op)?;
        Ok(inner.state)
    }

    /// Applies `op`'s transition after runc carried it out; see [`Self::settle`].
    pub fn commit(&self, op: Op) {
        let mut inner = self.lock();
        self.settle(&mut inner, |state| state.after(op));
    }

    /// Leaves Pausing once `runc pause` returned; see [`Self::settle`].
    pub fn pause_ended(&self, outcome: PauseOutcome) {
        let mut inner = self.lock();
        self.settle(&mut inner, |state| state.pause_ended(outcome));
    }

    /// A move after a runc call: the process may have ended while runc ran (its exit
    /// recorded, or deleted with its container), and then the end wins; any other refusal
    /// means a caller skipped its check under the `ops` lock, a bug, logged as one.
    fn settle(
        &self,
        inner: &mut Inner,
        next: impl FnOnce(ProcState) -> Result<ProcState, TransitionError>,
    ) {
        match next(inner.state) {
            Ok(state) => inner.state = state,
            Err(_) if inner.state.has_ended() => {}
            Err(err) => log::error!("bug: illegal transition of {}: {err}", self.id),
        }
    }

    /// An exec started, or a checkpointed init was restored: its pid and IO, and Running
    /// (unless it already ended).
    pub fn started(&self, pid: u32, mut io: Option<ProcessIo>) {
        let mut inner = self.lock();
        inner.pid = pid;
        if inner.stdin_closed {
            if let Some(io) = &mut io {
                io.close_stdin();
            }
        }
        inner.io = io;
        self.settle(&mut inner, |state| state.after(Op::Start));
    }

    /// Records the exit and runs `announce` (queueing TaskExit) in the same critical section,
    /// so nobody can see the process stopped, and Delete it, before its exit is queued; then
    /// wakes the threads blocked on the exit. The exit callbacks are returned, for the
    /// caller to run once it holds no lock of its own.
    pub fn record_exit(&self, exit: ExitRecord, announce: impl FnOnce(u32)) -> ExitNotice {
        let mut inner = self.lock();
        inner.state = inner.state.exited();
        inner.reaped = true;
        inner.exit = Some(exit);
        announce(inner.pid);
        let callbacks = std::mem::take(&mut inner.on_exit.0);
        drop(inner);
        self.exited.notify_all();
        ExitNotice {
            exit,
            callbacks: ExitCallbacks(callbacks),
        }
    }

    /// Runs `callback` with the exit once it is recorded: now, if it already is.
    #[cfg(test)]
    pub fn on_exit(&self, callback: ExitCallback) {
        self.register(callback, None);
    }

    /// Runs `callback` with the exit once it is recorded (now, if it already is), unless it
    /// stops being wanted first: each registration drops those no longer wanted, so the
    /// Waits of clients that went away do not pile up for the life of a long-running process.
    pub fn on_exit_while(&self, callback: ExitCallback, wanted: Wanted) {
        self.register(callback, Some(wanted));
    }

    fn register(&self, callback: ExitCallback, wanted: Option<Wanted>) {
        let mut inner = self.lock();
        if let Some(exit) = inner.exit {
            drop(inner);
            return callback(Some(exit));
        }
        let waiting = std::mem::take(&mut inner.on_exit.0);
        let (kept, unwanted): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|(_, wanted)| wanted.as_ref().is_none_or(|wanted| wanted()));
        inner.on_exit.0 = kept;
        inner.on_exit.0.push((callback, wanted));
        // Dropped outside the lock: a dropped reply answers (nobody) on its way out.
        drop(inner);
        drop(unwanted);
    }

    /// Waits at most `timeout` for the exit to be recorded.
    pub fn wait_exit_timeout(&self, timeout: Duration) -> Option<ExitRecord> {
        let inner = self.lock();
        let (inner, _) = self
            .exited
            .wait_timeout_while(inner, timeout, |inner| inner.exit.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        inner.exit
    }

    /// Marks the process deleted (its caller checked Delete under the `ops` lock: a refusal
    /// is a bug, logged) and tells its waiters it never will exit; returns its last snapshot.
    pub fn mark_deleted(&self) -> Snapshot {
        self.delete(|id, err| log::error!("bug: illegal transition of {id}: {err}"))
    }

    /// Its container is going away: the process is deleted if it may be. One still running
    /// (an exec that outlived the bounded wait for a created init's exit) keeps its state,
    /// reported; either way, its waiters are told it will not exit here.
    pub fn discard(&self) {
        self.delete(|id, err| log::warn!("{id} left behind by its deleted container: {err}"));
    }

    fn delete(&self, refused: impl FnOnce(&str, TransitionError)) -> Snapshot {
        let mut inner = self.lock();
        match inner.state.after(Op::Delete) {
            Ok(next) => inner.state = next,
            Err(err) => refused(&self.id, err),
        }
        // A process deleted before it exited (an exec never started) never will: its
        // waiters are told so.
        let abandoned = std::mem::take(&mut inner.on_exit.0);
        let snapshot = Snapshot {
            state: inner.state,
            pid: inner.pid,
            exit: inner.exit,
        };
        drop(inner);
        for (callback, _) in abandoned {
            callback(None);
        }
        snapshot
    }

    /// The output drain latch, to wait on without holding the lock.
    pub fn drain(&self) -> Option<Drain> {
        self.lock().io.as_ref().map(|io| io.drain().clone())
    }

    /// Waits at most `timeout` for the output to reach the client; true if it did (or there is
    /// no output to wait for).
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        self.drain().is_none_or(|drain| drain.wait_timeout(timeout))
    }

    /// Runs `f` on the IO, if the process has any.
    pub fn with_io<T>(&self, f: impl FnOnce(&mut ProcessIo) -> T) -> Option<T> {
        self.lock().io.as_mut().map(f)
    }

    /// CloseIO: the client's EOF on stdin becomes the process's, now or, if the IO is not
    /// installed yet, the moment it is.
    pub fn close_stdin(&self) {
        let mut inner = self.lock();
        inner.stdin_closed = true;
        if let Some(io) = &mut inner.io {
            io.close_stdin();
        }
    }

    /// The process has exited: its output is waited for only while a client reads it.
    pub fn release_output(&self) {
        if let Some(io) = &mut self.lock().io {
            io.release_output();
        }
    }

    /// Takes the IO out, to close it outside the lock.
    pub fn take_io(&self) -> Option<ProcessIo> {
        self.lock().io.take()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn exec() -> Process {
        Process::exec(
            "e1",
            StdioPaths::default(),
            b"{}".to_vec(),
            PathBuf::from("/b/e1.pid"),
        )
    }

    #[test]
    fn exit_is_queued_before_waiters_wake() {
        let process = Arc::new(exec());
        process.started(42, None);
        let (waiter, waited) = crossbeam_channel::bounded(1);
        process.on_exit(Box::new(move |exit| waiter.send(exit).unwrap()));
        let mut announced = None;
        let exit = ExitRecord {
            status: 3,
            at: SystemTime::now(),
        };
        process
            .record_exit(exit, |pid| announced = Some(pid))
            .deliver();
        assert_eq!(announced, Some(42));
        assert_eq!(waited.try_recv().unwrap(), Some(exit));
        assert_eq!(
            process.snapshot().state,
            ProcState::Exec(ExecState::Stopped)
        );
        assert_eq!(process.snapshot().state.status(), Status::STOPPED);
    }

    #[test]
    fn registering_drops_the_waiters_nobody_wants() {
        let process = exec();
        let (gone, left) = crossbeam_channel::bounded::<()>(1);
        process.on_exit_while(
            Box::new(move |_| gone.send(()).unwrap()),
            Box::new(|| false),
        );
        let (waiter, waited) = crossbeam_channel::bounded(1);
        process.on_exit_while(
            Box::new(move |exit| waiter.send(exit).unwrap()),
            Box::new(|| true),
        );
        // The unwanted callback was dropped unrun: its sender is gone, nothing was sent.
        assert!(left.recv().is_err());
        process.mark_deleted();
        assert_eq!(waited.try_recv().unwrap(), None);
    }

    #[test]
    fn deleting_before_the_exit_releases_waiters() {
        let process = exec();
        let (waiter, waited) = crossbeam_channel::bounded(1);
        process.on_exit(Box::new(move |exit| waiter.send(exit).unwrap()));
        process.mark_deleted();
        assert_eq!(waited.try_recv().unwrap(), None);
    }

    #[test]
    fn start_after_exit_keeps_the_exit() {
        let process = exec();
        process
            .record_exit(
                ExitRecord {
                    status: 1,
                    at: SystemTime::now(),
                },
                |_| {},
            )
            .deliver();
        process.started(7, None);
        assert_eq!(process.state(), ProcState::Exec(ExecState::Stopped));
        assert_eq!(process.pid(), 7);
    }

    #[test]
    fn timeout_without_exit() {
        let process = exec();
        assert_eq!(process.wait_exit_timeout(Duration::from_millis(1)), None);
        assert!(process.wait_drained(Duration::ZERO));
    }

    #[test]
    fn pausing_reports_pausing() {
        let init = Process::init("c1", StdioPaths::default(), 1, None);
        init.commit(Op::Start);
        init.transition(Op::Pause).unwrap();
        assert_eq!(init.snapshot().state.status(), Status::PAUSING);
        assert!(init.check(Op::Pause).is_err());
        assert!(init.transition(Op::Pause).is_err());
        init.pause_ended(PauseOutcome::Failed);
        assert_eq!(init.state(), ProcState::Init(InitState::Running));
    }

    #[test]
    fn the_end_wins_over_a_move_after_runc() {
        let init = Process::init("c1", StdioPaths::default(), 1, None);
        init.commit(Op::Start);
        init.transition(Op::Pause).unwrap();
        let exit = ExitRecord {
            status: 137,
            at: SystemTime::now(),
        };
        init.record_exit(exit, |_| {}).deliver();
        init.pause_ended(PauseOutcome::Frozen);
        init.commit(Op::Resume);
        assert_eq!(init.state(), ProcState::Init(InitState::Stopped));
    }

    #[test]
    fn a_refused_delete_keeps_the_state_and_releases_waiters() {
        let process = exec();
        process.started(9, None);
        let (waiter, waited) = crossbeam_channel::bounded(1);
        process.on_exit(Box::new(move |exit| waiter.send(exit).unwrap()));
        process.discard();
        assert_eq!(process.state(), ProcState::Exec(ExecState::Running));
        assert_eq!(waited.try_recv().unwrap(), None);
    }
}
