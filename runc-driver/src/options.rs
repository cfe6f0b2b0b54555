//! Per-command options, each rendered to the exact flags the Go shim passes
//! (docs/protocol.md §5.2).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Command;

use crate::error::Error;

/// The standard streams of the container process a `create`, `exec` or `restore` starts.
///
/// `None` means `/dev/null`. The runtime inherits these fds and passes them on to the
/// container process; the driver drops its own copies as soon as the runtime is spawned
/// (so that, for example, the reader of `stdout` sees EOF when the container exits).
#[derive(Debug, Default)]
pub struct Stdio {
    /// The container's stdin.
    pub stdin: Option<OwnedFd>,
    /// The container's stdout.
    pub stdout: Option<OwnedFd>,
    /// The container's stderr.
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// All three streams on `/dev/null`.
    pub fn null() -> Self {
        Self::default()
    }

    pub(crate) fn attach(self, cmd: &mut Command) {
        let to_stdio = |fd: Option<OwnedFd>| fd.map_or_else(std::process::Stdio::null, Into::into);
        cmd.stdin(to_stdio(self.stdin));
        cmd.stdout(to_stdio(self.stdout));
        cmd.stderr(to_stdio(self.stderr));
    }
}

/// `runc create` options.
#[derive(Debug)]
pub struct CreateOptions {
    /// The bundle directory (`--bundle`).
    pub bundle: PathBuf,
    /// Where the runtime writes the init pid (`--pid-file`); read back by `create`.
    pub pid_file: PathBuf,
    /// A listening unix socket that receives the pty master (`--console-socket`).
    pub console_socket: Option<PathBuf>,
    /// Use `MS_MOVE` instead of `pivot_root` (`--no-pivot`), for ramdisk roots.
    pub no_pivot: bool,
    /// Keep the session keyring of the caller (`--no-new-keyring`).
    pub no_new_keyring: bool,
    /// The container process's stdio.
    pub stdio: Stdio,
}

impl CreateOptions {
    pub(crate) fn args(&self, cmd: &mut Command) {
        cmd.arg("--bundle").arg(&self.bundle);
        cmd.arg("--pid-file").arg(&self.pid_file);
        if let Some(socket) = &self.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        if self.no_pivot {
            cmd.arg("--no-pivot");
        }
        if self.no_new_keyring {
            cmd.arg("--no-new-keyring");
        }
    }
}

/// `runc exec` options. The process always starts detached (`--detach`): the runtime
/// exits once the process runs, and the process's exit reaches the caller's reaper.
#[derive(Debug)]
pub struct ExecOptions {
    /// Directory for the private (0600) process-spec file, removed after the call;
    /// `$XDG_RUNTIME_DIR` or the bundle in a shim.
    pub spec_dir: PathBuf,
    /// Where the runtime writes the process's pid (`--pid-file`); read back by `exec`.
    pub pid_file: PathBuf,
    /// A listening unix socket that receives the pty master (`--console-socket`).
    pub console_socket: Option<PathBuf>,
    /// The process's stdio.
    pub stdio: Stdio,
}

/// Which processes `kill` signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// The container's init process.
    Init,
    /// Every process in the container (`--all`).
    All,
}

/// How `delete` treats a container that still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Refuse to delete a running container.
    Stopped,
    /// SIGKILL whatever runs, then delete (`--force`).
    Force,
}

/// What happens to the container after a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterCheckpoint {
    /// It keeps running (`--leave-running`), the Go shim's default.
    #[default]
    LeaveRunning,
    /// CRIU stops it (containerd's `CheckpointOptions.exit`).
    Exit,
}

/// The CRIU settings shared by `checkpoint` and `restore`; the fields mirror
/// containerd's `CheckpointOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriuOptions {
    /// Where the images are written or read (`--image-path`).
    pub image_path: PathBuf,
    /// Where CRIU keeps its logs and work files (`--work-path`).
    pub work_path: Option<PathBuf>,
    /// A previous (pre-dump) image this one builds on (`--parent-path`).
    pub parent_path: Option<PathBuf>,
    /// Allow established TCP connections (`--tcp-established`; `open_tcp`).
    pub open_tcp: bool,
    /// Allow unix sockets connected outside the container (`--ext-unix-sk`).
    pub external_unix_sockets: bool,
    /// The container has a terminal (`--shell-job`; containerd's `terminal`).
    pub terminal: bool,
    /// Dump and restore file locks (`--file-locks`).
    pub file_locks: bool,
    /// Namespaces created empty instead of restored (`--empty-ns`, repeated), e.g. `network`.
    pub empty_namespaces: Vec<String>,
    /// CRIU's cgroup mode (`--manage-cgroups-mode`: soft, full, strict).
    pub cgroups_mode: Option<String>,
}

impl CriuOptions {
    pub(crate) fn args(&self, cmd: &mut Command) {
        cmd.arg("--image-path").arg(&self.image_path);
        if let Some(work) = &self.work_path {
            cmd.arg("--work-path").arg(work);
        }
        if let Some(parent) = &self.parent_path {
            cmd.arg("--parent-path").arg(parent);
        }
        let switches = [
            (self.open_tcp, "--tcp-established"),
            (self.external_unix_sockets, "--ext-unix-sk"),
            (self.terminal, "--shell-job"),
            (self.file_locks, "--file-locks"),
        ];
        cmd.args(switches.iter().filter(|(on, _)| *on).map(|(_, flag)| flag));
        for namespace in &self.empty_namespaces {
            cmd.arg("--empty-ns").arg(namespace);
        }
        if let Some(mode) = &self.cgroups_mode {
            cmd.arg("--manage-cgroups-mode").arg(mode);
        }
    }
}

/// `runc checkpoint` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// Images, work path and CRIU switches.
    pub criu: CriuOptions,
    /// Whether the container keeps running.
    pub after: AfterCheckpoint,
}

/// `runc restore` options. The restored container always runs detached
/// (`--detach`) and the runtime never becomes a subreaper (`--no-subreaper`): the
/// caller's reaper adopts the process.
#[derive(Debug)]
pub struct RestoreOptions {
    /// Images, work path and CRIU switches.
    pub criu: CriuOptions,
    /// The bundle directory (`--bundle`).
    pub bundle: PathBuf,
    /// Where the runtime writes the restored init's pid; read back by `restore`.
    pub pid_file: PathBuf,
    /// A listening unix socket that receives the pty master (`--console-socket`).
    pub console_socket: Option<PathBuf>,
    /// Use `MS_MOVE` instead of `pivot_root` (`--no-pivot`).
    pub no_pivot: bool,
    /// The restored process's stdio.
    pub stdio: Stdio,
}

impl RestoreOptions {
    pub(crate) fn args(&self, cmd: &mut Command) {
        self.criu.args(cmd);
        cmd.arg("--detach").arg("--pid-file").arg(&self.pid_file);
        if let Some(socket) = &self.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        if self.no_pivot {
            cmd.arg("--no-pivot");
        }
        cmd.arg("--no-subreaper").arg("--bundle").arg(&self.bundle);
    }
}

/// An OCI `process` object as JSON, handed to the runtime unchanged.
///
/// containerd sends the shim JSON; passing those bytes through keeps every field,
/// including ones newer than this crate's `oci-spec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec(Vec<u8>);

impl ProcessSpec {
    /// Wraps JSON bytes as they came; the runtime validates them.
    pub fn from_json(json: Vec<u8>) -> Self {
        Self(json)
    }

    /// Serialises a typed process.
    pub fn from_oci(process: &oci_spec::runtime::Process) -> Result<Self, Error> {
        let json = serde_json::to_vec(process).map_err(|source| Error::Encode {
            what: "process spec",
            source,
        })?;
        Ok(Self(json))
    }

    /// The JSON bytes.
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }
}

/// An OCI `LinuxResources` object as JSON, for `update`; passed through unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources(Vec<u8>);

impl Resources {
    /// Wraps JSON bytes as they came; the runtime validates them.
    pub fn from_json(json: Vec<u8>) -> Self {
        Self(json)
    }

    /// Serialises typed resources.
    pub fn from_oci(resources: &oci_spec::runtime::LinuxResources) -> Result<Self, Error> {
        let json = serde_json::to_vec(resources).map_err(|source| Error::Encode {
            what: "resources",
            source,
        })?;
        Ok(Self(json))
    }

    /// The JSON bytes.
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }
}

/// Reads a pid file the runtime wrote: a positive decimal number, no newline required.
pub(crate) fn parse_pid(contents: &str) -> Option<u32> {
    contents.trim().parse().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn checkpoint_flags_follow_containerd_options() {
        let criu = CriuOptions {
            image_path: "/img".into(),
            work_path: Some("/work".into()),
            parent_path: Some("/parent".into()),
            open_tcp: true,
            external_unix_sockets: true,
            terminal: true,
            file_locks: true,
            empty_namespaces: vec!["network".into(), "ipc".into()],
            cgroups_mode: Some("soft".into()),
        };
        let mut cmd = Command::new("runc");
        criu.args(&mut cmd);
        let expected = "--image-path /img --work-path /work --parent-path /parent \
            --tcp-established --ext-unix-sk --shell-job --file-locks \
            --empty-ns network --empty-ns ipc --manage-cgroups-mode soft";
        assert_eq!(argv(&cmd).join(" "), expected);
    }

    #[test]
    fn restore_runs_detached_without_subreaper() {
        let restore = RestoreOptions {
            criu: CriuOptions {
                image_path: "/img".into(),
                ..CriuOptions::default()
            },
            bundle: "/b".into(),
            pid_file: "/b/init.pid".into(),
            console_socket: Some("/s.sock".into()),
            no_pivot: true,
            stdio: Stdio::null(),
        };
        let mut cmd = Command::new("runc");
        restore.args(&mut cmd);
        let expected = "--image-path /img --detach --pid-file /b/init.pid \
            --console-socket /s.sock --no-pivot --no-subreaper --bundle /b";
        assert_eq!(argv(&cmd).join(" "), expected);
    }

    #[test]
    fn pid_files_hold_positive_decimal_pids() {
        assert_eq!(parse_pid("1234"), Some(1234));
        assert_eq!(parse_pid("77\n"), Some(77));
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("-3"), None);
        assert_eq!(parse_pid(""), None);
    }

    #[test]
    fn typed_specs_serialise_to_oci_json() {
        let process = oci_spec::runtime::ProcessBuilder::default()
            .args(vec!["echo".to_owned(), "hi".to_owned()])
            .cwd("/")
            .build()
            .unwrap();
        let spec = ProcessSpec::from_oci(&process).unwrap();
        let value: serde_json::Value = serde_json::from_slice(spec.as_json()).unwrap();
        assert_eq!(value["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(value["cwd"], "/");
    }
}
