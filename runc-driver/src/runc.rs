//! [`Runc`]: one typed method per runtime subcommand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, Invocation};
use crate::options::{
    parse_pid, CheckpointOptions, CreateOptions, DeleteMode, ExecOptions, KillScope, ProcessSpec,
    Resources, RestoreOptions,
};
use crate::spawn::{resolve_program, Call, Streams};
use crate::types::{Features, State};
use crate::AfterCheckpoint;
use wren_process::Spawner;

/// Which cgroup manager the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupDriver {
    /// The runtime writes cgroupfs itself.
    #[default]
    Cgroupfs,
    /// The runtime asks systemd (`--systemd-cgroup`).
    Systemd,
}

/// The global part of every command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncConfig {
    /// The runtime binary: `runc`, `crun`, or any runc-compatible CLI (looked up in
    /// `PATH` when it has no slash, once, by [`Runc::new`]).
    pub binary: PathBuf,
    /// The runtime's state directory (`--root`); the runtime's default when `None`.
    pub root: Option<PathBuf>,
    /// The JSON log (`--log`) that failure messages are read from. Without it, messages
    /// of `create`, `exec` and `restore` are lost: their stderr is the container's.
    pub log: Option<PathBuf>,
    /// The cgroup manager.
    pub cgroup_driver: CgroupDriver,
}

impl Default for RuncConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("runc"),
            root: None,
            log: None,
            cgroup_driver: CgroupDriver::Cgroupfs,
        }
    }
}

/// An OCI runtime CLI whose children are spawned through a [`Spawner`].
///
/// Every method blocks until the runtime exits. Methods take `&self`, hold no lock and
/// may run concurrently from several threads.
#[derive(Debug, Clone)]
pub struct Runc {
    config: RuncConfig,
    /// `config.binary` looked up in `PATH` once, here, rather than by every child's execvp.
    program: PathBuf,
    spawner: Arc<dyn Spawner>,
}

impl Runc {
    /// A driver for `config` whose children are spawned and reaped through `spawner`.
    pub fn new(config: RuncConfig, spawner: Arc<dyn Spawner>) -> Self {
        let program = resolve_program(&config.binary);
        Self {
            config,
            program,
            spawner,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RuncConfig {
        &self.config
    }

    /// `create`: sets the container up with its init blocked before the user process;
    /// returns the init pid from the pid file.
    pub fn create(&self, id: &str, options: CreateOptions) -> Result<u32, Error> {
        let mut cmd = self.command("create");
        options.args(&mut cmd);
        cmd.arg(id);
        let pid_file = options.pid_file;
        self.call("create", id)
            .run(cmd, Streams::Container(options.stdio))?;
        read_pid(&pid_file, Invocation::new("create", id))
    }

    /// `start`: runs the user process of a created container.
    pub fn start(&self, id: &str) -> Result<(), Error> {
        self.simple("start", id, &[])
    }

    /// `exec --detach`: starts `process` in the container; returns its pid.
    ///
    /// The spec goes through a 0600 file in `options.spec_dir`, removed afterwards.
    pub fn exec(
        &self,
        id: &str,
        process: &ProcessSpec,
        options: ExecOptions,
    ) -> Result<u32, Error> {
        let call = Invocation::new("exec", id);
        let spec_file = write_spec_file(&options.spec_dir, process).map_err(|source| {
            Error::WriteProcessFile {
                dir: options.spec_dir.clone(),
                call: call.clone(),
                source,
            }
        })?;
        let mut cmd = self.command("exec");
        cmd.arg("--process").arg(spec_file.path());
        if let Some(socket) = &options.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg("--detach")
            .arg("--pid-file")
            .arg(&options.pid_file)
            .arg(id);
        self.call("exec", id)
            .run(cmd, Streams::Container(options.stdio))?;
        drop(spec_file);
        read_pid(&options.pid_file, call)
    }

    /// `kill`: sends signal number `signal` (any, real-time ones included).
    pub fn kill(&self, id: &str, signal: i32, scope: KillScope) -> Result<(), Error> {
        let signal = signal.to_string();
        match scope {
            KillScope::Init => self.simple("kill", id, &[&signal]),
            KillScope::All => self.simple_with_flags("kill", &["--all"], id, &[&signal]),
        }
    }

    /// `delete`: removes the container's runtime state.
    pub fn delete(&self, id: &str, mode: DeleteMode) -> Result<(), Error> {
        match mode {
            DeleteMode::Stopped => self.simple("delete", id, &[]),
            DeleteMode::Force => self.simple_with_flags("delete", &["--force"], id, &[]),
        }
    }

    /// `state`: the container's status and init pid.
    pub fn state(&self, id: &str) -> Result<State, Error> {
        let mut cmd = self.command("state");
        cmd.arg(id);
        let stdout = self
            .call("state", id)
            .run(cmd, Streams::Captured { input: None })?;
        decode(&stdout, Invocation::new("state", id))
    }

    /// `ps --format json`: the pids of the container's processes (empty once stopped).
    pub fn ps(&self, id: &str) -> Result<Vec<u32>, Error> {
        let mut cmd = self.command("ps");
        cmd.args(["--format", "json", id]);
        let stdout = self
            .call("ps", id)
            .run(cmd, Streams::Captured { input: None })?;
        // runc prints `null` rather than `[]` when no process is left.
        let pids: Option<Vec<u32>> = decode(&stdout, Invocation::new("ps", id))?;
        Ok(pids.unwrap_or_default())
    }

    /// `pause`: freezes every process of the container.
    pub fn pause(&self, id: &str) -> Result<(), Error> {
        self.simple("pause", id, &[])
    }

    /// `resume`: thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<(), Error> {
        self.simple("resume", id, &[])
    }

    /// `update --resources=-`: applies `resources`, fed on stdin.
    pub fn update(&self, id: &str, resources: &Resources) -> Result<(), Error> {
        let mut cmd = self.command("update");
        cmd.args(["--resources=-", id]);
        let input = Some(resources.as_json());
        self.call("update", id)
            .run(cmd, Streams::Captured { input })?;
        Ok(())
    }

    /// `checkpoint`: dumps the container with CRIU.
    pub fn checkpoint(&self, id: &str, options: &CheckpointOptions) -> Result<(), Error> {
        let mut cmd = self.command("checkpoint");
        options.criu.args(&mut cmd);
        if options.after == AfterCheckpoint::LeaveRunning {
            cmd.arg("--leave-running");
        }
        cmd.arg(id);
        self.call("checkpoint", id)
            .run(cmd, Streams::Captured { input: None })?;
        Ok(())
    }

    /// `restore --detach`: recreates a checkpointed container; returns its init pid.
    pub fn restore(&self, id: &str, options: RestoreOptions) -> Result<u32, Error> {
        let mut cmd = self.command("restore");
        options.args(&mut cmd);
        cmd.arg(id);
        let pid_file = options.pid_file;
        self.call("restore", id)
            .run(cmd, Streams::Container(options.stdio))?;
        read_pid(&pid_file, Invocation::new("restore", id))
    }

    /// `features`: what the runtime supports, typed and as raw JSON.
    pub fn features(&self) -> Result<Features, Error> {
        let call = Call {
            spawner: self.spawner.as_ref(),
            log: self.config.log.as_deref(),
            invocation: Invocation::global("features"),
        };
        let raw = call.run(self.command("features"), Streams::Captured { input: None })?;
        let mut features: Features = decode(&raw, Invocation::global("features"))?;
        features.raw = raw;
        Ok(features)
    }

    /// `<binary> [--root R] [--log L] --log-format json [--systemd-cgroup] <verb>`.
    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        if let Some(root) = &self.config.root {
            cmd.arg("--root").arg(root);
        }
        if let Some(log) = &self.config.log {
            cmd.arg("--log").arg(log);
        }
        // JSON also on stderr when there is no log file, so messages parse the same way.
        cmd.args(["--log-format", "json"]);
        if self.config.cgroup_driver == CgroupDriver::Systemd {
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg(verb);
        cmd
    }

    fn call(&self, verb: &'static str, id: &str) -> Call<'_> {
        Call {
            spawner: self.spawner.as_ref(),
            log: self.config.log.as_deref(),
            invocation: Invocation::new(verb, id),
        }
    }

    fn simple(&self, verb: &'static str, id: &str, trailing: &[&str]) -> Result<(), Error> {
        self.simple_with_flags(verb, &[], id, trailing)
    }

    /// `<verb> <flags> <id> <trailing>` with captured output and nothing to decode.
    fn simple_with_flags(
        &self,
        verb: &'static str,
        flags: &[&str],
        id: &str,
        trailing: &[&str],
    ) -> Result<(), Error> {
        let mut cmd = self.command(verb);
        cmd.args(flags).arg(id).args(trailing);
        self.call(verb, id)
            .run(cmd, Streams::Captured { input: None })?;
        Ok(())
    }
}

/// Writes `process` to a fresh 0600 `runc-process*` file in `dir`, deleted on drop.
fn write_spec_file(dir: &Path, process: &ProcessSpec) -> std::io::Result<tempfile::NamedTempFile> {
    // tempfile creates with O_EXCL | O_CLOEXEC and mode 0600.
    let mut file = tempfile::Builder::new()
        .prefix("runc-process")
        .tempfile_in(dir)?;
    file.write_all(process.as_json())?;
    Ok(file)
}

fn read_pid(path: &Path, call: Invocation) -> Result<u32, Error> {
    let contents = std::fs::read_to_string(path).map_err(|source| Error::ReadPidFile {
        path: path.to_path_buf(),
        call: call.clone(),
        source,
    })?;
    parse_pid(&contents).ok_or_else(|| Error::ParsePidFile {
        path: path.to_path_buf(),
        call,
        contents,
    })
}

fn decode<T: DeserializeOwned>(stdout: &[u8], call: Invocation) -> Result<T, Error> {
    serde_json::from_slice(stdout).map_err(|source| Error::Decode { call, source })
}
