//! A private Docker daemon on a private containerd, driven by the `docker` CLI.
//!
//! [`Dockerd`] starts a [`Containerd`] (the release `WREN_CONTAINERD` names, with wren's shim
//! on its `PATH`), then Docker 26's `dockerd` as `scripts/install-newer-deps.sh` unpacked it,
//! with everything of its own: data root and pidfile under a temp dir, exec root and API
//! socket under `/run/wren-docker-<pid>-<n>/`, `--containerd` pointing at the private
//! containerd, no iptables and no bridge (containers run with `--network none`), the `vfs`
//! storage driver (it needs nothing from the kernel) and `--live-restore`. Docker's containerd
//! namespace and cgroup parent are the containerd instance's namespace, so that instance's
//! leak checks and cleanup cover Docker's containers too.
//!
//! Two runtimes are configured: Docker's default (`runc`, containerd's Go shim) and `wren`
//! (`io.containerd.wren.v2` with its options in a `ConfigPath` file, the only options Docker
//! passes to a runtime type other than runc's). The image is a busybox rootfs brought in with
//! `docker import`, so nothing is pulled.

mod daemon;
mod leaks;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::containerd::{output_text, run_with_deadline, run_with_input, Containerd, Runtime};
use crate::containerd::{CTR_DEADLINE, STATE_DEADLINE};

/// The image every container runs: the busybox rootfs, imported.
pub const IMAGE: &str = "wren-test/busybox:1";

/// Where `scripts/install-newer-deps.sh` unpacks Docker, under the deps dir.
const DOCKER_DIR: &str = "docker-26";

/// The runtime a container runs on, as `docker run --runtime` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerRuntime {
    /// Docker's default, `runc`: runtime type `io.containerd.runc.v2`, containerd's Go shim,
    /// the reference behaviour.
    Runc,
    /// `wren` from daemon.json: runtime type `io.containerd.wren.v2`.
    Wren,
}

impl DockerRuntime {
    /// The name `docker run --runtime` takes.
    pub fn name(self) -> &'static str {
        match self {
            DockerRuntime::Runc => "runc",
            DockerRuntime::Wren => "wren",
        }
    }
}

/// Docker's binaries (`usr/sbin/dockerd`, `usr/bin/docker`, `usr/bin/docker-init`).
pub fn docker_root() -> PathBuf {
    crate::version::deps_dir().join(DOCKER_DIR)
}

/// Why Docker cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let root = docker_root();
    ["usr/sbin/dockerd", "usr/bin/docker", "usr/bin/docker-init"]
        .iter()
        .find(|binary| !root.join(binary).exists())
        .map(|binary| {
            format!(
                "no {} (run scripts/install-deps.sh)",
                root.join(binary).display()
            )
        })
}

/// A private dockerd and its containerd, stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Dockerd {
    dir: tempfile::TempDir,
    /// Exec root and API socket: unix socket paths must stay under 108 bytes.
    run_dir: PathBuf,
    daemon: Option<Child>,
    // Declared last: dropped after dockerd has stopped.
    containerd: Containerd,
}

impl Dockerd {
    /// Starts containerd and dockerd, and imports [`IMAGE`].
    pub fn start() -> Self {
        let wren_dir = crate::workspace_bin("containerd-shim-wren-v2")
            .parent()
            .expect("binary has a parent dir")
            .to_path_buf();
        let containerd = Containerd::start_with_shim_dirs(Runtime::Go, vec![wren_dir]);
        let dir = tempfile::Builder::new()
            .prefix("wren-docker-")
            .tempdir()
            .expect("temp dir");
        let run_dir = PathBuf::from(format!("/run/{}", containerd.namespace()));
        fs::create_dir_all(&run_dir).expect("create docker run dir");
        let mut dockerd = Self {
            dir,
            run_dir,
            daemon: None,
            containerd,
        };
        dockerd.write_config();
        dockerd.spawn();
        dockerd.import_image();
        dockerd
    }

    /// The containerd dockerd drives.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// A `docker` command bound to this daemon, with a private client config dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(docker_root().join("usr/bin/docker"));
        cmd.env("DOCKER_CONFIG", self.dir.path().join("client"))
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args);
        cmd
    }

    /// Runs `docker args…` (bounded by [`CTR_DEADLINE`]) with stdin closed.
    pub fn docker(&self, args: &[&str]) -> Output {
        run_with_deadline(self.command(args).stdin(Stdio::null()), CTR_DEADLINE)
    }

    /// Runs `docker args…` with `input` on its stdin.
    pub fn docker_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_input(&mut self.command(args), input, || (), CTR_DEADLINE)
    }

    /// Runs `docker args…`, panics (with dockerd's log) unless it succeeds; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        self.expect_success(&output, &format!("docker {}", args.join(" ")));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Panics with the command's output and dockerd's log unless `output` is a success.
    pub fn expect_success(&self, output: &Output, what: &str) {
        assert!(
            output.status.success(),
            "{what} failed ({}): {}\n--- dockerd log ---\n{}",
            output.status,
            output_text(output),
            self.log_tail()
        );
    }

    /// `docker inspect --format <format> <name>`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.docker_ok(&["inspect", "--format", format, name])
            .trim()
            .to_owned()
    }

    /// Waits (bounded) until `docker inspect --format <format> <name>` prints `want`.
    pub fn wait_for(&self, name: &str, format: &str, want: &str) {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let seen = self.inspect(name, format);
            if seen == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {format} never became {want:?}; last {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of dockerd's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn import_image(&self) {
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(self.containerd.rootfs())
            .args(["-cf", "-", "."]);
        let archive = run_with_deadline(tar.stdin(Stdio::null()), CTR_DEADLINE);
        assert!(archive.status.success(), "tar: {}", output_text(&archive));
        let output = self.docker_with_input(&["import", "-", IMAGE], &archive.stdout);
        self.expect_success(&output, "docker import");
    }

    fn socket(&self) -> PathBuf {
        self.run_dir.join("docker.sock")
    }

    fn exec_root(&self) -> PathBuf {
        self.run_dir.join("exec")
    }

    fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    fn private_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dockerd log ---\n{}", self.log_tail());
        }
        self.remove_containers();
        self.stop();
        self.remove_leftovers();
    }
}
