//! ttrpc status codes, so a runtime maps its own errors in one `From` impl.
//!
//! containerd acts on a handful of codes (docs/protocol.md §2.4): NotFound from Kill and Delete means
//! "already gone", Unimplemented triggers the v3 to v2 downgrade, and everything else is treated
//! as a plain failure. A runtime gives each of its error variants a [`Code`] and writes:
//!
//! ```ignore
//! impl From<MyError> for ttrpc::Error {
//!     fn from(error: MyError) -> Self {
//!         wren_shim::status::error(error.code(), &error)
//!     }
//! }
//! ```

/// The gRPC status codes containerd distinguishes (`errdefs` / `errgrpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 1: the caller cancelled.
    Canceled,
    /// 2: any failure without a more precise meaning (Go's default for plain errors).
    Unknown,
    /// 3: the request is malformed.
    InvalidArgument,
    /// 4: a deadline expired.
    DeadlineExceeded,
    /// 5: no such container, process or exec.
    NotFound,
    /// 6: the id is taken.
    AlreadyExists,
    /// 9: the object is in the wrong state for the call.
    FailedPrecondition,
    /// 12: the runtime does not support the call.
    Unimplemented,
    /// 14: the service cannot answer right now.
    Unavailable,
}

impl Code {
    /// The ttrpc wire code.
    pub fn to_ttrpc(self) -> ttrpc::Code {
        match self {
            Code::Canceled => ttrpc::Code::CANCELLED,
            Code::Unknown => ttrpc::Code::UNKNOWN,
            Code::InvalidArgument => ttrpc::Code::INVALID_ARGUMENT,
            Code::DeadlineExceeded => ttrpc::Code::DEADLINE_EXCEEDED,
            Code::NotFound => ttrpc::Code::NOT_FOUND,
            Code::AlreadyExists => ttrpc::Code::ALREADY_EXISTS,
            Code::FailedPrecondition => ttrpc::Code::FAILED_PRECONDITION,
            Code::Unimplemented => ttrpc::Code::UNIMPLEMENTED,
            Code::Unavailable => ttrpc::Code::UNAVAILABLE,
        }
    }

    /// The code a remote peer answered with, for relaying: a runtime whose processes live
    /// behind another ttrpc service (a VM's guest agent) passes its NotFound, AlreadyExists
    /// or FailedPrecondition on to containerd, which acts on them. Codes containerd does not
    /// distinguish become `Unknown`.
    pub fn from_ttrpc(code: ttrpc::Code) -> Self {
        match code {
            ttrpc::Code::CANCELLED => Code::Canceled,
            ttrpc::Code::INVALID_ARGUMENT => Code::InvalidArgument,
            ttrpc::Code::DEADLINE_EXCEEDED => Code::DeadlineExceeded,
            ttrpc::Code::NOT_FOUND => Code::NotFound,
            ttrpc::Code::ALREADY_EXISTS => Code::AlreadyExists,
            ttrpc::Code::FAILED_PRECONDITION => Code::FailedPrecondition,
            ttrpc::Code::UNIMPLEMENTED => Code::Unimplemented,
            ttrpc::Code::UNAVAILABLE => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// A ttrpc error with `code` and `message`.
pub fn status(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code.to_ttrpc(), message.into()))
}

/// A ttrpc error with `code` whose message is `error` and its whole source chain,
/// joined by `": "` as Go's wrapped errors read.
pub fn error(code: Code, error: &dyn std::error::Error) -> ttrpc::Error {
    status(code, error_chain(error))
}

/// `error: cause: cause`: an error and its source chain on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The answer for an RPC the runtime does not implement: `Unimplemented`, never NotFound
/// (the generated default), which containerd would misread.
pub fn unimplemented(method: &str) -> ttrpc::Error {
    status(Code::Unimplemented, format!("{method} is not implemented"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_codes_round_trip() {
        for code in [
            Code::Canceled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Unavailable,
        ] {
            assert_eq!(Code::from_ttrpc(code.to_ttrpc()), code);
        }
        assert_eq!(Code::from_ttrpc(ttrpc::Code::DATA_LOSS), Code::Unknown);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("failed to kill {id}")]
    struct KillError {
        id: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn codes_match_grpc_numbers() {
        let numbers = [
            (Code::Canceled, 1),
            (Code::Unknown, 2),
            (Code::InvalidArgument, 3),
            (Code::DeadlineExceeded, 4),
            (Code::NotFound, 5),
            (Code::AlreadyExists, 6),
            (Code::FailedPrecondition, 9),
            (Code::Unimplemented, 12),
            (Code::Unavailable, 14),
        ];
        for (code, number) in numbers {
            assert_eq!(code.to_ttrpc() as i32, number, "{code:?}");
        }
    }

    #[test]
    fn error_message_carries_the_chain() {
        let failure = KillError {
            id: "c1".into(),
            source: std::io::Error::other("no such process"),
        };
        let ttrpc::Error::RpcStatus(status) = error(Code::NotFound, &failure) else {
            panic!("expected an rpc status");
        };
        assert_eq!(status.code.enum_value(), Ok(ttrpc::Code::NOT_FOUND));
        assert_eq!(status.message, "failed to kill c1: no such process");
    }
}
