//! The shim's errors and their ttrpc codes.

use wren_shim::status::{self, Code};

/// What can go wrong serving a wrenvm task.
#[derive(Debug, thiserror::Error)]
pub enum VmShimError {
    /// No such task or exec.
    #[error("{what} {id} not found")]
    NotFound {
        /// "task" or "exec".
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// It exists already.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// "task" or "exec".
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Not in a state for this.
    #[error("{id} is {state}")]
    WrongState {
        /// The task or exec.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// The process has exited.
    #[error("process already finished")]
    AlreadyFinished,
    /// A bad id.
    #[error(transparent)]
    Id(#[from] wren_shim::identifier::InvalidIdentifier),
    /// A bad or unsupported spec.
    #[error("invalid spec: {0}")]
    Spec(#[from] crate::spec::SpecError),
    /// Something wrenvm does not do.
    #[error("{0} is not supported by wrenvm")]
    Unsupported(&'static str),
    /// The VM would not come up.
    #[error("failed to start the VM")]
    Vm(#[from] crate::vm::VmError),
    /// The rootfs mounts failed.
    #[error("failed to mount the rootfs")]
    Mount(#[source] wren_shim::rootfs::Error),
    /// A FIFO would not open.
    #[error("failed to open {path}")]
    Stdio {
        /// The FIFO.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The agent refused or failed.
    #[error("guest agent: {what}")]
    Agent {
        /// The call.
        what: &'static str,
        /// The cause.
        source: ttrpc::Error,
    },
    /// Stats could not be encoded.
    #[error("encode stats")]
    Encode(#[source] wren_shim_protocol::any::AnyError),
}

impl VmShimError {
    /// Task `id` is not in this daemon.
    pub fn task_not_found(id: &str) -> Self {
        Self::NotFound {
            what: "task",
            id: id.into(),
        }
    }

    /// A failed agent call.
    pub fn agent(what: &'static str) -> impl FnOnce(ttrpc::Error) -> Self {
        move |source| Self::Agent { what, source }
    }

    fn code(&self) -> Code {
        match self {
            Self::NotFound { .. } | Self::AlreadyFinished => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::WrongState { .. } => Code::FailedPrecondition,
            Self::Id(_)
            | Self::Spec(crate::spec::SpecError::Parse(_) | crate::spec::SpecError::NoProcess) => {
                Code::InvalidArgument
            }
            Self::Spec(crate::spec::SpecError::Terminal) | Self::Unsupported(_) => {
                Code::Unimplemented
            }
            // The agent's own code (NotFound for a finished process...) carries over.
            Self::Agent {
                source: ttrpc::Error::RpcStatus(status),
                ..
            } => Code::from_ttrpc(status.code()),
            Self::Spec(_)
            | Self::Vm(_)
            | Self::Mount(_)
            | Self::Stdio { .. }
            | Self::Agent { .. }
            | Self::Encode(_) => Code::Unknown,
        }
    }
}

impl From<VmShimError> for ttrpc::Error {
    fn from(error: VmShimError) -> Self {
        status::error(error.code(), &error)
    }
}
