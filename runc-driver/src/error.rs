//! The driver's error type and the one place that reads meaning into runtime messages.

use std::fmt;
use std::io;
use std::path::PathBuf;

use wren_process::Exit;

/// One runtime invocation, for error context: the subcommand and the container it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The runtime subcommand (`create`, `kill`, ...).
    pub verb: &'static str,
    /// The container id, absent for container-less subcommands such as `features`.
    pub id: Option<String>,
}

impl Invocation {
    pub(crate) fn new(verb: &'static str, id: &str) -> Self {
        Self {
            verb,
            id: Some(id.to_owned()),
        }
    }

    pub(crate) fn global(verb: &'static str) -> Self {
        Self { verb, id: None }
    }
}

impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} {id}", self.verb),
            None => f.write_str(self.verb),
        }
    }
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipe for the runtime's stdin or output could not be created.
    #[error("failed to create a pipe for {call}")]
    Pipe {
        /// The call being prepared.
        call: Invocation,
        /// The pipe2(2) error.
        #[source]
        source: io::Error,
    },
    /// The runtime binary could not be started.
    #[error("failed to spawn {binary} for {call}")]
    Spawn {
        /// The runtime binary.
        binary: PathBuf,
        /// The call being started.
        call: Invocation,
        /// The spawn error.
        #[source]
        source: io::Error,
    },
    /// The process spec for `exec` could not be written to its temporary file.
    #[error("failed to write the process spec for {call} in {dir}")]
    WriteProcessFile {
        /// The directory the temporary file was created in.
        dir: PathBuf,
        /// The exec call.
        call: Invocation,
        /// The create or write error.
        #[source]
        source: io::Error,
    },
    /// The runtime exited successfully without reading all of its stdin.
    #[error("failed to feed the input of {call}")]
    WriteInput {
        /// The call whose stdin was written.
        call: Invocation,
        /// The write error.
        #[source]
        source: io::Error,
    },
    /// The runtime's stdout or stderr could not be read.
    #[error("failed to read the output of {call}")]
    ReadOutput {
        /// The call whose output was read.
        call: Invocation,
        /// The poll or read error.
        #[source]
        source: io::Error,
    },
    /// The spawner could not deliver the runtime's exit.
    #[error("failed to wait for {call} (pid {pid})")]
    Wait {
        /// The call being waited on.
        call: Invocation,
        /// The runtime's pid.
        pid: i32,
        /// The spawner's error.
        #[source]
        source: io::Error,
    },
    /// The runtime ran and reported failure.
    #[error("{call} failed with {status}: {message}")]
    Failed {
        /// The failed call.
        call: Invocation,
        /// How the runtime exited.
        status: Exit,
        /// The runtime's last error message (its JSON log, else its stderr).
        message: String,
    },
    /// The pid file the runtime wrote could not be read.
    #[error("failed to read pid file {path} after {call}")]
    ReadPidFile {
        /// The pid file.
        path: PathBuf,
        /// The call that wrote it.
        call: Invocation,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The pid file does not hold a positive decimal pid.
    #[error("pid file {path} after {call} holds {contents:?}, not a pid")]
    ParsePidFile {
        /// The pid file.
        path: PathBuf,
        /// The call that wrote it.
        call: Invocation,
        /// What the file holds.
        contents: String,
    },
    /// The runtime's JSON output does not have the expected shape.
    #[error("failed to decode the output of {call}")]
    Decode {
        /// The call whose stdout was decoded.
        call: Invocation,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An OCI spec value could not be serialised to JSON.
    #[error("failed to encode the {what} as JSON")]
    Encode {
        /// What was encoded (`process spec`, `resources`).
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// What a failure means to a caller that maps it to an API status (ttrpc codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The container does not exist in this runtime root.
    NotFound,
    /// The container or process is not running (already stopped, no such process).
    NotRunning,
    /// A container with this id already exists.
    AlreadyExists,
    /// Anything else.
    Other,
}

impl Error {
    /// Classifies the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Failed { call, message, .. } => classify(message, call.id.as_deref()),
            _ => ErrorKind::Other,
        }
    }

    /// The runtime's own message, for callers that format it the way containerd does
    /// (`OCI runtime create failed: <message>: unknown`).
    pub fn runtime_message(&self) -> Option<&str> {
        match self {
            Self::Failed { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// Sorts a runtime message into an [`ErrorKind`].
///
/// runc and crun report conditions only as text, so reading it is unavoidable; this is
/// the only place that does. Patterns, with the versions they were observed with:
/// - runc 1.1: `container does not exist`, `container not running`,
///   `container with id exists: <id>`; ESRCH as `no such process`.
/// - crun 1.8: a missing container surfaces as ENOENT on its state directory
///   (``error opening file `<root>/<id>/status`: No such file or directory``,
///   `cannot open directory '<root>/<id>': No such file or directory`);
///   ``container `<id>` already exists``; ESRCH as `No such process`.
fn classify(message: &str, id: Option<&str>) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if names_missing_container(&lower, id) || names_missing_state_dir(&lower, id) {
        ErrorKind::NotFound
    } else if lower.contains("not running")
        || lower.contains("no such process")
        || lower.contains("process already finished")
    {
        ErrorKind::NotRunning
    } else if lower.contains("already exists") || lower.contains("container with id exists") {
        ErrorKind::AlreadyExists
    } else {
        ErrorKind::Other
    }
}

/// runc's `container does not exist` (youki and later runcs may quote the id). A bare
/// "does not exist" is not enough: `create` reports a missing rootfs the same way.
fn names_missing_container(lower: &str, id: Option<&str>) -> bool {
    if lower.contains("container does not exist") {
        return true;
    }
    let Some(id) = id else { return false };
    let id = id.to_ascii_lowercase();
    lower.contains(&format!("container \"{id}\" does not exist"))
        || lower.contains(&format!("container {id} does not exist"))
}

/// crun's ENOENT on `<root>/<id>` or `<root>/<id>/status`: the container is unknown.
/// Matching the id keeps a missing bundle file of `create` from reading as NotFound.
fn names_missing_state_dir(lower: &str, id: Option<&str>) -> bool {
    let Some(id) = id else { return false };
    let id = id.to_ascii_lowercase();
    lower.contains("no such file or directory")
        && (lower.contains(&format!("/{id}/status`")) || lower.contains(&format!("/{id}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(message: &str) -> ErrorKind {
        classify(message, Some("c1"))
    }

    #[test]
    fn runc_messages_are_classified() {
        assert_eq!(kind_of("container does not exist"), ErrorKind::NotFound);
        assert_eq!(
            kind_of("container \"c1\" does not exist"),
            ErrorKind::NotFound
        );
        assert_eq!(kind_of("container not running"), ErrorKind::NotRunning);
        assert_eq!(kind_of("no such process"), ErrorKind::NotRunning);
        assert_eq!(
            kind_of("container with id exists: c1"),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind_of("runc create failed: unable to start container process: exec: \"nope\""),
            ErrorKind::Other
        );
    }

    #[test]
    fn crun_messages_are_classified() {
        let status = "error opening file `/run/crun/c1/status`: No such file or directory";
        assert_eq!(kind_of(status), ErrorKind::NotFound);
        let dir = "cannot open directory '/run/crun/c1': No such file or directory";
        assert_eq!(kind_of(dir), ErrorKind::NotFound);
        assert_eq!(
            kind_of("kill container: No such process"),
            ErrorKind::NotRunning
        );
        assert_eq!(
            kind_of("container `c1` already exists"),
            ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn enoent_elsewhere_is_not_a_missing_container() {
        let bundle = "cannot open directory '/bundles/x/rootfs': No such file or directory";
        assert_eq!(kind_of(bundle), ErrorKind::Other);
        let rootfs = "runc create failed: rootfs (\"/b/rootfs\") does not exist";
        assert_eq!(kind_of(rootfs), ErrorKind::Other);
        let other_id = "error opening file `/run/crun/c10/status`: No such file or directory";
        assert_eq!(kind_of(other_id), ErrorKind::Other);
    }

    #[test]
    fn only_runtime_failures_have_a_kind() {
        let spawn = Error::Spawn {
            binary: "runc".into(),
            call: Invocation::new("state", "c1"),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(spawn.kind(), ErrorKind::Other);
        assert_eq!(spawn.runtime_message(), None);
        assert_eq!(spawn.to_string(), "failed to spawn runc for state c1");
    }
}
