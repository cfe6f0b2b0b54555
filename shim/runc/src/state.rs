//! The lifecycle of a container's processes as explicit state machines (containerd's
//! `process/init_state.go`, `exec_state.go`): every operation checks the current state first and
//! an illegal move is a typed error, never a silent no-op.

use std::fmt;

/// Where an init process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitState {
    /// `runc create` done, the user process not started.
    Created,
    Running,
    /// `runc pause` is in flight; [`InitState::pause_ended`] leaves it.
    Pausing,
    Paused,
    /// The init exited (reaped); only Delete and Kill remain meaningful.
    Stopped,
    /// Deleted: every further operation reports NotFound.
    Deleted,
}

/// Where an exec process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecState {
    /// Registered by the Exec RPC; nothing runs until Start.
    Created,
    Running,
    Stopped,
    Deleted,
}

/// The operations the service performs on a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Delete,
    Kill,
    Pause,
    Resume,
    Update,
    Exec,
    Checkpoint,
    ResizePty,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Start => "start",
            Self::Delete => "delete",
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Update => "update",
            Self::Exec => "exec",
            Self::Checkpoint => "checkpoint",
            Self::ResizePty => "resize the pty of",
        };
        f.write_str(name)
    }
}

/// The state a rejected operation found, for either kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Init(InitState),
    Exec(ExecState),
}

impl Found {
    /// A deleted process is gone as far as the caller can tell.
    pub fn is_deleted(self) -> bool {
        matches!(
            self,
            Self::Init(InitState::Deleted) | Self::Exec(ExecState::Deleted)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Self::Init(state) => state.status_name(),
            Self::Exec(state) => state.status_name(),
        }
    }
}

/// How a `runc pause` ended, for the move out of [`InitState::Pausing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseOutcome {
    /// runc froze the container.
    Frozen,
    /// runc failed: the container runs on.
    Failed,
}

/// An operation the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {op} a {} process", .found.name())]
pub struct TransitionError {
    pub op: Op,
    pub found: Found,
}

impl InitState {
    /// The name containerd shows for this state (`deleted` reports as stopped).
    pub fn status_name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Stopped | Self::Deleted => "stopped",
        }
    }

    /// Checks that `op` is allowed now, without changing state.
    pub fn check(self, op: Op) -> Result<(), TransitionError> {
        use InitState::{Created, Paused, Pausing, Running, Stopped};
        let allowed = match op {
            Op::Start => self == Created,
            Op::Delete => matches!(self, Created | Stopped),
            Op::Kill => matches!(self, Created | Running | Pausing | Paused | Stopped),
            Op::Pause => self == Running,
            Op::Resume => self == Paused,
            Op::Update => matches!(self, Created | Running | Pausing | Paused),
            Op::Exec => matches!(self, Created | Running),
            Op::Checkpoint => matches!(self, Running | Paused),
            Op::ResizePty => matches!(self, Created | Running | Pausing | Paused),
        };
        if allowed {
            Ok(())
        } else {
            Err(TransitionError {
                op,
                found: Found::Init(self),
            })
        }
    }

    /// The state after `op` succeeded (Pause: while runc pauses). Ops that leave the state
    /// alone return it unchanged.
    pub fn after(self, op: Op) -> Result<Self, TransitionError> {
        self.check(op)?;
        Ok(match op {
            Op::Start | Op::Resume => Self::Running,
            Op::Pause => Self::Pausing,
            Op::Delete => Self::Deleted,
            Op::Kill | Op::Update | Op::Exec | Op::Checkpoint | Op::ResizePty => self,
        })
    }

    /// The state once `runc pause` returned: only Pausing may end a pause.
    pub fn pause_ended(self, outcome: PauseOutcome) -> Result<Self, TransitionError> {
        match (self, outcome) {
            (Self::Pausing, PauseOutcome::Frozen) => Ok(Self::Paused),
            (Self::Pausing, PauseOutcome::Failed) => Ok(Self::Running),
            _ => Err(TransitionError {
                op: Op::Pause,
                found: Found::Init(self),
            }),
        }
    }

    /// The state once the process has been reaped. Exits after deletion change nothing.
    pub fn exited(self) -> Self {
        match self {
            Self::Deleted => Self::Deleted,
            _ => Self::Stopped,
        }
    }
}

impl ExecState {
    /// The name containerd shows for this state (`deleted` reports as stopped).
    pub fn status_name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Stopped | Self::Deleted => "stopped",
        }
    }

    /// Checks that `op` is allowed now, without changing state.
    pub fn check(self, op: Op) -> Result<(), TransitionError> {
        use ExecState::{Created, Running, Stopped};
        let allowed = match op {
            Op::Start => self == Created,
            Op::Delete => matches!(self, Created | Stopped),
            Op::Kill => matches!(self, Created | Running | Stopped),
            Op::ResizePty => matches!(self, Created | Running),
            Op::Pause | Op::Resume | Op::Update | Op::Exec | Op::Checkpoint => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(TransitionError {
                op,
                found: Found::Exec(self),
            })
        }
    }

    /// The state after `op` succeeded.
    pub fn after(self, op: Op) -> Result<Self, TransitionError> {
        self.check(op)?;
        Ok(match op {
            Op::Start => Self::Running,
            Op::Delete => Self::Deleted,
            _ => self,
        })
    }

    /// The state once the process has been reaped.
    pub fn exited(self) -> Self {
        match self {
            Self::Deleted => Self::Deleted,
            _ => Self::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_happy_path() {
        let state = InitState::Created.after(Op::Start).unwrap();
        assert_eq!(state, InitState::Running);
        let state = state.after(Op::Pause).unwrap();
        assert_eq!(state, InitState::Pausing);
        let state = state.pause_ended(PauseOutcome::Frozen).unwrap();
        assert_eq!(state, InitState::Paused);
        let state = state.after(Op::Resume).unwrap().exited();
        assert_eq!(state, InitState::Stopped);
        assert_eq!(state.after(Op::Delete).unwrap(), InitState::Deleted);
    }

    #[test]
    fn init_rejects_illegal_moves() {
        let err = InitState::Running.after(Op::Delete).unwrap_err();
        assert_eq!(err.to_string(), "cannot delete a running process");
        assert!(InitState::Running.check(Op::Start).is_err());
        assert!(InitState::Paused.check(Op::Pause).is_err());
        assert!(InitState::Running.check(Op::Resume).is_err());
        assert!(InitState::Paused.check(Op::Exec).is_err());
        assert!(InitState::Stopped.check(Op::Exec).is_err());
        assert!(InitState::Created.check(Op::Checkpoint).is_err());
        assert!(InitState::Pausing.check(Op::Pause).is_err());
        assert!(InitState::Stopped.check(Op::Update).is_err());
    }

    #[test]
    fn deleted_init_is_gone_for_everything() {
        for op in [
            Op::Start,
            Op::Delete,
            Op::Kill,
            Op::Pause,
            Op::Resume,
            Op::Update,
            Op::Exec,
        ] {
            let err = InitState::Deleted.check(op).unwrap_err();
            assert!(err.found.is_deleted());
        }
        assert_eq!(InitState::Deleted.exited(), InitState::Deleted);
        assert_eq!(InitState::Deleted.status_name(), "stopped");
    }

    #[test]
    fn only_pausing_ends_a_pause() {
        let pausing = InitState::Running.after(Op::Pause).unwrap();
        assert_eq!(pausing.status_name(), "pausing");
        assert_eq!(
            pausing.pause_ended(PauseOutcome::Failed).unwrap(),
            InitState::Running
        );
        for state in [
            InitState::Created,
            InitState::Running,
            InitState::Paused,
            InitState::Stopped,
            InitState::Deleted,
        ] {
            let err = state.pause_ended(PauseOutcome::Frozen).unwrap_err();
            assert_eq!(err.found, Found::Init(state));
        }
    }

    #[test]
    fn kill_is_allowed_until_deleted() {
        for state in [
            InitState::Created,
            InitState::Running,
            InitState::Paused,
            InitState::Stopped,
        ] {
            assert_eq!(state.after(Op::Kill).unwrap(), state);
        }
    }

    #[test]
    fn exec_lifecycle() {
        let state = ExecState::Created.after(Op::Start).unwrap();
        assert_eq!(state, ExecState::Running);
        assert!(state.check(Op::Delete).is_err());
        assert!(state.check(Op::Start).is_err());
        let state = state.exited();
        assert_eq!(state.after(Op::Delete).unwrap(), ExecState::Deleted);
        assert!(ExecState::Created.check(Op::Delete).is_ok());
        assert!(ExecState::Running.check(Op::Pause).is_err());
        assert!(ExecState::Deleted
            .check(Op::Kill)
            .unwrap_err()
            .found
            .is_deleted());
    }
}
