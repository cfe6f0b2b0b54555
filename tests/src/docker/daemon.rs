//! dockerd itself: its config, starting it, waiting for its API, stopping and restarting it.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{docker_root, Dockerd};
use crate::containerd::{terminate, STATE_DEADLINE};

impl Dockerd {
    /// daemon.json names the `wren` runtime; its options go through `ConfigPath`, because
    /// Docker passes runc's options only to `io.containerd.runc.v2` (an inline `ConfigBody`
    /// makes dockerd refuse to start). The file gives wren a runc root of its own beside
    /// Docker's `runtime-runc`, so the leak checks see only this daemon's containers.
    pub(super) fn write_config(&self) {
        let options = self.private_path("wren-options.toml");
        fs::write(
            &options,
            format!("Root = \"{}\"\n", self.wren_runc_root().display()),
        )
        .expect("write wren options");
        let config = serde_json::json!({
            "runtimes": {
                "wren": {
                    "runtimeType": "io.containerd.wren.v2",
                    "options": { "ConfigPath": options },
                }
            }
        });
        fs::write(
            self.private_path("daemon.json"),
            serde_json::to_vec_pretty(&config).expect("serialize daemon.json"),
        )
        .expect("write daemon.json");
    }

    pub(super) fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open dockerd log");
        let namespace = self.containerd.namespace().to_owned();
        let mut cmd = Command::new(docker_root().join("usr/sbin/dockerd"));
        cmd.arg("--config-file")
            .arg(self.private_path("daemon.json"))
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("--pidfile")
            .arg(self.private_path("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--containerd")
            .arg(self.containerd.address())
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-p")])
            .args(["--cgroup-parent", &format!("/{namespace}")])
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver", "vfs", "--live-restore"])
            // `--init` runs docker-init (tini), looked up on dockerd's PATH.
            .env("PATH", self.daemon_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        self.daemon = Some(cmd.spawn().expect("spawn dockerd"));
        self.wait_until_ready();
    }

    fn daemon_path(&self) -> std::ffi::OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let dirs = [
            docker_root().join("usr/bin"),
            docker_root().join("usr/sbin"),
        ]
        .into_iter()
        .chain(std::env::split_paths(&inherited));
        std::env::join_paths(dirs).expect("binary dirs hold no ':'")
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            if self.docker(&["version"]).status.success() {
                return;
            }
            let daemon = self.daemon.as_mut().expect("dockerd spawned");
            if let Some(status) = daemon.try_wait().expect("wait dockerd") {
                panic!("dockerd exited early ({status}):\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops dockerd by PID: SIGTERM, then SIGKILL after a bounded wait. With live-restore
    /// its containers (and their shims) keep running.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            terminate(&mut daemon, Duration::from_secs(20));
        }
    }

    /// Stops dockerd and starts it again with the same config, data and exec roots.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether dockerd runs (not stopped).
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }
}
