//! One private containerd process: the part every harness shares, the integration tests'
//! [`Containerd`](super::Containerd) (driven by `ctr`), the CRI tests'
//! [`CriContainerd`](crate::cri::CriContainerd) and the benchmarks' containerd.
//!
//! A [`Daemon`] owns a temp dir (root, state, config, log, and whatever its owner keeps
//! there) and a run dir `/run/<prefix>-<pid>-<n>/` for its socket: unix socket paths are
//! limited to 108 bytes, so they cannot live under a deep temp dir. It comes up in two steps
//! so that its owner can put files in those dirs and name them in the config: [`Daemon::new`]
//! makes the dirs, [`Daemon::start`] writes the config, starts containerd and waits until
//! `ctr version` answers. Dropping it stops containerd and removes both dirs; what the shims
//! leave elsewhere (runc state, mounts, cgroups, shim sockets) is for the owner to clean.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::config;
use super::process::{terminate, wait_until};
use crate::version::ContainerdVersion;

/// How long containerd has to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Lines of containerd's log an error carries.
const LOG_LINES: usize = 80;

/// What a harness asks of its containerd beyond the private paths.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The CRI plugin's tables, in the config format of the release; `None` leaves CRI out.
    pub cri: Option<String>,
    /// Log at debug level, where containerd's log is read (tests); containerd's default
    /// level otherwise (benchmarks, which should not pay for debug logging).
    pub debug_log: bool,
    /// Directories containerd finds shim binaries in, after the release's own binaries
    /// (so `io.containerd.runc.v2` is that release's Go shim) and before the inherited `PATH`.
    pub shim_dirs: Vec<PathBuf>,
    /// How long containerd may take to answer `ctr version` once spawned.
    pub ready_within: Duration,
}

/// Why a private containerd did not come up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Its temp dir or run dir could not be made.
    #[error("failed to create {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Its config or log file could not be written.
    #[error("failed to write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A program (containerd, ctr) could not be spawned or waited for.
    #[error("failed to run {program}")]
    Run {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// containerd exited before it answered.
    #[error("containerd exited early ({status}); its log ends:\n{log}")]
    ExitedEarly {
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// containerd did not answer in time (it has been stopped).
    #[error("containerd did not answer `ctr version` within {within:?}; its log ends:\n{log}")]
    NotReady {
        /// The bound.
        within: Duration,
        /// The end of its log.
        log: String,
    },
}

/// A private containerd, stopped and its dirs removed on drop.
#[derive(Debug)]
pub struct Daemon {
    version: ContainerdVersion,
    dir: tempfile::TempDir,
    run_dir: PathBuf,
    address: PathBuf,
    /// containerd's `PATH` and readiness bound, set by [`Daemon::start`], kept for restarts.
    path: OsString,
    ready_within: Duration,
    child: Option<Child>,
}

impl Daemon {
    /// Makes the private dirs of a containerd of release `version`, named after `prefix`;
    /// nothing runs yet.
    ///
    /// # Errors
    /// [`DaemonError::CreateDir`] if a dir cannot be made.
    pub fn new(prefix: &str, version: ContainerdVersion) -> Result<Self, DaemonError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(|source| DaemonError::CreateDir {
                path: std::env::temp_dir(),
                source,
            })?;
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        let run_dir = PathBuf::from(format!("/run/{prefix}-{}-{serial}", std::process::id()));
        fs::create_dir_all(&run_dir).map_err(|source| DaemonError::CreateDir {
            path: run_dir.clone(),
            source,
        })?;
        Ok(Self {
            version,
            dir,
            address: run_dir.join("containerd.sock"),
            run_dir,
            path: OsString::new(),
            ready_within: Duration::ZERO,
            child: None,
        })
    }

    /// The release this daemon runs.
    pub fn version(&self) -> ContainerdVersion {
        self.version
    }

    /// The private temp dir (root, state, config, log, and the owner's files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private dir under `/run` holding the socket (and whatever else needs a short path).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// containerd's gRPC socket (what `ctr --address` and shims' `-address` name).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// containerd's `state` directory (bundles live under it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// Writes the config, starts containerd and waits until it answers.
    ///
    /// # Errors
    /// A [`DaemonError`] if the config cannot be written or containerd does not come up.
    pub fn start(&mut self, settings: &Settings) -> Result<(), DaemonError> {
        let config = config::render(self.version, self.dir(), &self.address, settings);
        let path = self.config_path();
        fs::write(&path, config).map_err(|source| DaemonError::Write { path, source })?;
        self.path = self.version.daemon_path(&settings.shim_dirs);
        self.ready_within = settings.ready_within;
        self.spawn()
    }

    /// Stops containerd if it runs, then starts it again with the same config, root and
    /// state.
    ///
    /// # Errors
    /// A [`DaemonError`] if containerd does not come up.
    pub fn restart(&mut self) -> Result<(), DaemonError> {
        self.stop();
        self.spawn()
    }

    /// Whether containerd runs (started, not stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs containerd, the way a crash would, leaving its shims running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only an already reaped child fails here, and ours is not.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops containerd: SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !terminate(&mut child, STOP_GRACE) {
                eprintln!("containerd ignored SIGTERM for {STOP_GRACE:?}: killed");
            }
        }
    }

    /// A `ctr` of this release with `--address` and `--namespace` set.
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = self.ctr_on_socket();
        cmd.args(["--namespace", namespace]);
        cmd
    }

    fn ctr_on_socket(&self) -> Command {
        let mut cmd = Command::new(self.version.binary("ctr"));
        cmd.arg("--address").arg(&self.address);
        cmd
    }

    /// containerd's log so far (its stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("containerd.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("config.toml")
    }

    fn spawn(&mut self) -> Result<(), DaemonError> {
        let path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| DaemonError::Write {
                path: path.clone(),
                source,
            })?;
        let stderr = log
            .try_clone()
            .map_err(|source| DaemonError::Write { path, source })?;
        let program = self.version.binary("containerd");
        let mut child = Command::new(&program)
            .arg("--config")
            .arg(self.config_path())
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| DaemonError::Run { program, source })?;
        match self.wait_until_ready(&mut child) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            // Reaped already: its PID may be another process's by now.
            Err(error @ DaemonError::ExitedEarly { .. }) => Err(error),
            Err(error) => {
                terminate(&mut child, STOP_GRACE);
                Err(error)
            }
        }
    }

    /// Asks `ctr version` until it answers, containerd exits or the bound passes.
    fn wait_until_ready(&self, child: &mut Child) -> Result<(), DaemonError> {
        let until = Instant::now() + self.ready_within;
        loop {
            if self.answers(until)? {
                return Ok(());
            }
            let exited = child.try_wait().map_err(|source| DaemonError::Run {
                program: self.version.binary("containerd"),
                source,
            })?;
            if let Some(status) = exited {
                let log = self.log_tail(LOG_LINES);
                return Err(DaemonError::ExitedEarly { status, log });
            }
            if Instant::now() > until {
                let log = self.log_tail(LOG_LINES);
                let within = self.ready_within;
                return Err(DaemonError::NotReady { within, log });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `ctr version` succeeds; one that runs past `until` is killed.
    fn answers(&self, until: Instant) -> Result<bool, DaemonError> {
        let program = self.version.binary("ctr");
        let run = |source| DaemonError::Run {
            program: program.clone(),
            source,
        };
        let mut probe = self
            .ctr_on_socket()
            .arg("version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(run)?;
        let status = wait_until(&mut probe, until).map_err(run)?;
        Ok(status.is_some_and(|status| status.success()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // The temp dir goes with its own drop, after this.
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

/// The value, or a panic naming the error and its causes: how the tests' harnesses take a
/// containerd that did not come up.
pub(crate) fn or_panic<T>(result: Result<T, DaemonError>) -> T {
    result.unwrap_or_else(|error| {
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(source) = cause {
            message = format!("{message}: {source}");
            cause = source.source();
        }
        panic!("{message}")
    })
}
