//! Scenario building blocks: `ctr run` in its common shapes, specs for `ctr run --config`,
//! task status polling and container removal.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::events::EventLog;
use super::process::{drain, wait_with_deadline};
use super::{Containerd, Runtime, CTR_DEADLINE, STATE_DEADLINE};
use crate::bundle::default_spec;

/// How to shape the OCI spec written for `ctr run --config`.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    /// Run in the host PID namespace, so the process is not PID 1 and default signal
    /// actions apply (a PID 1 ignores SIGTERM unless it installs a handler).
    pub host_pid_namespace: bool,
    /// OCI annotations (`io.kubernetes.cri.sandbox-id`, ...).
    pub annotations: Vec<(String, String)>,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The byte count and sha256 of a command's stdout, hashed as it streams.
#[derive(Debug)]
pub struct StreamedOutput {
    /// How the command exited.
    pub status: ExitStatus,
    /// Bytes read from its stdout.
    pub len: u64,
    /// Lowercase hex sha256 of its stdout.
    pub sha256: String,
    /// Its stderr.
    pub stderr: String,
}

impl Containerd {
    /// Sends `signal` to task `id`, asserts its `/tasks/exit` (seen in `events`) carries
    /// `status`, then removes task and container and asserts nothing is left behind.
    pub fn kill_expecting_exit(&self, events: &EventLog, id: &str, signal: &str, status: i64) {
        self.ctr_ok(&["tasks", "kill", "--signal", signal, id]);
        assert_eq!(
            events.wait_exit_status(id),
            status,
            "events:\n{}",
            events.raw()
        );
        self.wait_for_status(id, "STOPPED");
        self.kill_and_remove(id);
        self.assert_no_leaks();
    }

    /// `ctr run` with this instance's runtime, `PATH`, FIFO dir and busybox rootfs, plus
    /// `flags`. A `--rootfs` container gets no image env, so `PATH` must be set or runc
    /// cannot find `sh`.
    pub fn run_command(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Command {
        let fifo_dir = self.fifo_dir().display().to_string();
        let rootfs = self.rootfs().display().to_string();
        let mut args = vec![
            "run",
            "--runtime",
            self.runtime().name(),
            "--env",
            "PATH=/bin",
        ];
        args.extend(["--fifo-dir", &fifo_dir]);
        let lane_flags = self.oci_runtime_flags(id);
        args.extend(lane_flags.iter().map(String::as_str));
        args.extend(flags);
        args.extend(["--rootfs", &rootfs, id]);
        args.extend(cmd);
        self.ctr_command(&args)
    }

    /// `ctr run --rm … <id> <cmd…>`, attached, with stdin closed; returns its output.
    pub fn run_rm(&self, id: &str, cmd: &[&str]) -> std::process::Output {
        let mut command = self.run_command(&["--rm"], id, cmd);
        super::run_with_deadline(command.stdin(Stdio::null()), super::CTR_DEADLINE)
    }

    /// `ctr run -d --null-io … <id> <cmd…>` plus `flags`; asserts it started and is RUNNING.
    pub fn run_detached(&self, flags: &[&str], id: &str, cmd: &[&str]) {
        let mut all_flags = vec!["-d", "--null-io"];
        all_flags.extend(flags);
        let mut command = self.run_command(&all_flags, id, cmd);
        let output = super::run_with_deadline(command.stdin(Stdio::null()), super::CTR_DEADLINE);
        self.expect_success(&output, &format!("ctr run -d {id}"));
        self.wait_for_status(id, "RUNNING");
    }

    /// Writes a spec running `args` (busybox rootfs, cgroup `/<namespace>/<id>`) and starts it
    /// detached with `ctr run -d --config`; asserts it is RUNNING.
    pub fn run_spec_detached(&self, id: &str, args: &[&str], options: &SpecOptions) {
        let spec_path = self.write_spec(id, args, options);
        let spec = spec_path.display().to_string();
        let lane_flags = self.oci_runtime_flags(id);
        let mut run = vec!["run", "-d", "--null-io", "--runtime", self.runtime().name()];
        run.extend(lane_flags.iter().map(String::as_str));
        run.extend(["--config", &spec, id]);
        self.ctr_ok(&run);
        self.wait_for_status(id, "RUNNING");
    }

    fn write_spec(&self, id: &str, args: &[&str], options: &SpecOptions) -> PathBuf {
        let mut spec = default_spec(args);
        spec["root"]["path"] = self.rootfs().display().to_string().into();
        spec["linux"]["cgroupsPath"] = format!("/{}/{id}", self.namespace()).into();
        if options.host_pid_namespace {
            let namespaces = spec["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces array");
            namespaces.retain(|ns| ns["type"] != "pid");
        }
        for (key, value) in &options.annotations {
            spec["annotations"][key] = value.clone().into();
        }
        let path = self.scratch("specs").join(format!("{id}.json"));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&spec).expect("serialize spec"),
        )
        .expect("write spec");
        path
    }

    /// The `ctr run` flags that select the OCI runtime a test lane asked for with
    /// `WREN_TESTS_OCI_RUNTIME` (the cgroup v2 VM lane runs its scenarios again with crun);
    /// none when it is unset, so the shim runs its default, runc. A scenario's own
    /// [`Containerd::binary_name_flags`] come later on the command line and win.
    pub fn oci_runtime_flags(&self, id: &str) -> Vec<String> {
        match std::env::var("WREN_TESTS_OCI_RUNTIME") {
            Ok(binary) if !binary.is_empty() => self.binary_name_flags(id, &binary),
            _ => Vec::new(),
        }
    }

    /// `ctr run` flags that make the shim run `binary` in place of runc (runc's `BinaryName`).
    ///
    /// ctr 1.6 sends runc's options (`--runc-binary`) only to the runtime named
    /// `io.containerd.runc.v2`; to any other it can send only `runtimeoptions.v1.Options` with
    /// the `ConfigPath` of `--runtime-config-path`, the options CRI sends to non-runc runtime
    /// types. wren reads runc's option keys from that TOML (docs/kubernetes.md).
    pub fn binary_name_flags(&self, id: &str, binary: &str) -> Vec<String> {
        match self.runtime {
            Runtime::Go => vec!["--runc-binary".into(), binary.into()],
            Runtime::Wren => {
                let path = self.scratch("options").join(format!("{id}.toml"));
                std::fs::write(&path, format!("BinaryName = {binary:?}\n"))
                    .expect("write runtime options");
                vec!["--runtime-config-path".into(), path.display().to_string()]
            }
        }
    }

    /// The `STATUS` column of `ctr task ls` for `id`, or `None` when there is no such task.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.task_row(id)
            .map(|fields| fields.last().cloned().unwrap_or_default())
    }

    /// The `PID` column of `ctr task ls` for `id`, or `None` when there is no such task.
    pub fn task_pid(&self, id: &str) -> Option<u32> {
        self.task_row(id)?.get(1)?.parse().ok()
    }

    /// The fields of `id`'s row in `ctr task ls` (`TASK PID STATUS`).
    fn task_row(&self, id: &str) -> Option<Vec<String>> {
        let listing = self.ctr_ok(&["tasks", "ls"]);
        listing.lines().skip(1).find_map(|line| {
            let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            (fields.first().map(String::as_str) == Some(id)).then_some(fields)
        })
    }

    /// Waits (bounded) until `ctr task ls` shows `id` with `status`.
    pub fn wait_for_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let seen = self.task_status(id);
            if seen.as_deref() == Some(status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never became {status}; last seen {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs task `id` if it runs, waits for STOPPED, then deletes task and container.
    pub fn kill_and_remove(&self, id: &str) {
        if self.task_status(id).as_deref() == Some("RUNNING") {
            self.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", id]);
        }
        if self.task_status(id).is_some() {
            self.wait_for_status(id, "STOPPED");
            self.ctr_ok(&["tasks", "rm", id]);
        }
        self.ctr_ok(&["containers", "rm", id]);
    }

    /// Removes container `id`'s record if there is one: a failed `ctr run --rm` may leave it
    /// behind (it is deleted only when the task ran), and the leak check that follows should
    /// see only what the shim left.
    pub fn remove_container_record(&self, id: &str) {
        let listed = self.ctr_ok(&["containers", "ls", "-q"]);
        if listed.lines().any(|line| line == id) {
            self.ctr_ok(&["containers", "rm", id]);
        }
    }

    /// Runs `cmd` (a `ctr` command, bounded by [`CTR_DEADLINE`]) with stdout hashed as it
    /// streams, never held in memory; calls `at_len` once `len` bytes have arrived.
    pub fn stream_sha256(
        &self,
        cmd: &mut Command,
        len: u64,
        at_len: impl FnOnce() + Send,
    ) -> StreamedOutput {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn streamed command");
        let stderr = drain(child.stderr.take().expect("stderr piped"));
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::scope(|scope| {
            let hashed = scope.spawn(move || hash_stream(stdout, len, at_len));
            let status = wait_with_deadline(cmd, &mut child, CTR_DEADLINE);
            let (received, sha256) = hashed.join().expect("stdout hasher");
            let stderr = stderr.join().expect("stderr reader");
            StreamedOutput {
                status,
                len: received,
                sha256,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            }
        })
    }
}

/// Hashes `stream` to EOF, calling `at_len` once `len` bytes have been read; returns the
/// byte count and the hex sha256.
fn hash_stream(mut stream: impl Read, len: u64, at_len: impl FnOnce()) -> (u64, String) {
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut at_len = Some(at_len);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stream.read(&mut buf).expect("read streamed stdout");
        if n == 0 {
            return (received, hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        received += u64::try_from(n).expect("usize fits u64");
        if received >= len {
            if let Some(at_len) = at_len.take() {
                at_len();
            }
        }
    }
}
