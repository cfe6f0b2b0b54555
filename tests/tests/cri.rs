//! Kubernetes: pods run through containerd's CRI plugin with a shim as RuntimeClass handler.
//!
//! Each test starts a private containerd with CRI enabled ([`CriContainerd`]; 1.6, or the
//! release `WREN_CONTAINERD` names), imports a pause and a busybox image built on the spot,
//! and drives `runtime.v1.RuntimeService` over the unix socket the way kubelet does: a
//! host-network pod, two containers (one printing and exiting with a known code, one
//! long-running), ExecSync, the CRI log files written through the shim's FIFOs,
//! ContainerStatus, ContainerStats, then teardown. The whole pod must be served by ONE shim
//! process (docs/protocol.md §1.6: grouping by `io.kubernetes.cri.sandbox-id`),
//! and nothing may be left behind.
//!
//! The scenario runs once per handler: `runc` (containerd's Go shim, the reference) and `wren`
//! (runtime type `io.containerd.wren.v2`; needs `cargo build --workspace --bins`). CRI sends
//! the `wren` handler `runtimeoptions.v1.Options`, not runc's options (docs/kubernetes.md).

// A test crate root resolves modules beside itself; these live in `cri/`.
#[path = "cri/api.rs"]
mod api;
#[path = "cri/client.rs"]
mod client;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use wren_tests::cri::{CriContainerd, Handler, PAUSE_IMAGE, WORKLOAD_IMAGE};
use wren_tests::unique_id;

use api::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    CONTAINER_EXITED, NAMESPACE_CONTAINER, NAMESPACE_NODE, NAMESPACE_POD,
};
use client::CriClient;

/// The printer container's script: two lines on stdout, one on stderr, a known exit code.
const PRINTER_SCRIPT: &str = "echo line one; echo line two; echo to stderr >&2; exit 7";
const PRINTER_EXIT_CODE: i32 = 7;

/// Runs until SIGTERM, then exits 0: `wait` returns as soon as a trapped signal arrives,
/// so the stop is graceful rather than a SIGKILL after the grace period.
const SLEEPER_SCRIPT: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";

/// StopContainer's grace period, far above what the trap needs.
const STOP_GRACE_SECS: i64 = 20;

/// How long a container may take to exit, or its log lines to reach the log file.
const POLL_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn runc_handler_pod_lifecycle() {
    wren_tests::require_root!();
    wren_tests::require_containerd!();
    pod_lifecycle(Handler::Runc);
}

#[test]
fn wren_handler_pod_lifecycle() {
    wren_tests::require_root!();
    wren_tests::require_containerd!();
    pod_lifecycle(Handler::Wren);
}

/// The whole scenario against `handler`; panics with the error chain (and, from the
/// containerd guard's drop, containerd's log) on the first failure.
fn pod_lifecycle(handler: Handler) {
    let mut containerd = CriContainerd::start(handler);
    if let Err(error) = run_pod(&containerd, handler) {
        panic!("pod on handler {:?} failed: {error:?}", handler.name());
    }
    containerd.stop();
    assert!(!containerd.is_running());
}

fn run_pod(containerd: &CriContainerd, handler: Handler) -> Result<()> {
    let cri = CriClient::connect(containerd.address())?;
    check_runtime_and_images(&cri)?;
    let pod = Pod::run(containerd, &cri, handler)?;
    let printer = pod.start_container("printer", PRINTER_SCRIPT)?;
    let sleeper = pod.start_container("sleeper", SLEEPER_SCRIPT)?;

    check_printer(&cri, &printer, &pod.log_dir)?;
    check_exec(&cri, &sleeper)?;
    check_stats(&cri, &sleeper)?;
    check_one_shim(containerd, handler)?;
    check_options_arrived(containerd, &pod.id)?;

    cri.stop_container(&sleeper, STOP_GRACE_SECS)
        .context("StopContainer")?;
    let stopped = cri.container_status(&sleeper)?;
    ensure!(
        stopped.state == CONTAINER_EXITED && stopped.exit_code == 0,
        "sleeper after stop: {stopped:?}"
    );
    for container in [&printer, &sleeper] {
        cri.remove_container(container).context("RemoveContainer")?;
    }
    cri.stop_pod_sandbox(&pod.id).context("StopPodSandbox")?;
    cri.remove_pod_sandbox(&pod.id)
        .context("RemovePodSandbox")?;
    containerd.assert_no_leaks();
    Ok(())
}

/// CRI answers on containerd's socket and sees both imported images.
fn check_runtime_and_images(cri: &CriClient) -> Result<()> {
    let version = cri.version()?;
    ensure!(
        version.runtime_name == "containerd",
        "runtime name: {version:?}"
    );
    ensure!(
        version.runtime_api_version == "v1",
        "CRI API version: {version:?}"
    );
    for image in [PAUSE_IMAGE, WORKLOAD_IMAGE] {
        let status = cri
            .image_status(image)?
            .with_context(|| format!("CRI does not see {image}"))?;
        ensure!(
            status.repo_tags.iter().any(|tag| tag == image),
            "{image} tags: {status:?}"
        );
    }
    Ok(())
}

/// The handler's runtime options reached the shim: runc keeps the sandbox's state under the
/// private `Root` they name (for wren, read from the handler's `ConfigPath` file).
fn check_options_arrived(containerd: &CriContainerd, sandbox: &str) -> Result<()> {
    let state = containerd.private_runc_state(sandbox);
    ensure!(
        state.join("state.json").exists(),
        "no runc state at {}: the handler's options did not reach the shim",
        state.display()
    );
    Ok(())
}

/// The sandbox and both containers are served by one shim daemon, the handler's.
fn check_one_shim(containerd: &CriContainerd, handler: Handler) -> Result<()> {
    let shims = containerd.shim_executables();
    ensure!(
        shims.len() == 1,
        "the sandbox and its two containers must share one shim, found {shims:?}"
    );
    let binary = shims[0].file_name().and_then(|name| name.to_str());
    ensure!(
        binary == Some(handler.shim_binary()),
        "handler {} ran shim {shims:?}",
        handler.name()
    );
    Ok(())
}

/// A running pod sandbox, and what creating containers in it takes.
#[derive(Debug)]
struct Pod<'a> {
    containerd: &'a CriContainerd,
    cri: &'a CriClient,
    id: String,
    config: PodSandboxConfig,
    log_dir: PathBuf,
}

impl<'a> Pod<'a> {
    /// RunPodSandbox: a host-network pod in its own cgroup parent, as kubelet asks for one.
    fn run(containerd: &'a CriContainerd, cri: &'a CriClient, handler: Handler) -> Result<Self> {
        let log_dir = containerd.pod_log_dir(&unique_id("pod"));
        let namespaces = NamespaceOption {
            network: NAMESPACE_NODE,
            pid: NAMESPACE_CONTAINER,
            ipc: NAMESPACE_POD,
        };
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "wren-cri-pod".into(),
                uid: unique_id("uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: String::new(),
            log_directory: log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: containerd.cgroup_parent().into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces),
                }),
            }),
        };
        let id = cri
            .run_pod_sandbox(&config, handler.name())
            .context("RunPodSandbox")?;
        containerd.track(&id);
        Ok(Self {
            containerd,
            cri,
            id,
            config,
            log_dir,
        })
    }

    /// Creates and starts a workload container running `sh -c script`; its log goes to
    /// `<log_directory>/<name>.log`. Returns its id.
    fn start_container(&self, name: &str, script: &str) -> Result<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: WORKLOAD_IMAGE.into(),
            }),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![script.into()],
            log_path: format!("{name}.log"),
        };
        let id = self
            .cri
            .create_container(&self.id, config, &self.config)
            .with_context(|| format!("CreateContainer {name}"))?;
        self.containerd.track(&id);
        self.cri
            .start_container(&id)
            .with_context(|| format!("StartContainer {name}"))?;
        Ok(id)
    }
}

/// The printer exits with its code, and containerd's CRI logger has written its output,
/// in order, to the log file CRI reports.
fn check_printer(cri: &CriClient, printer: &str, log_dir: &Path) -> Result<()> {
    let deadline = Instant::now() + POLL_DEADLINE;
    let status = loop {
        let status = cri.container_status(printer)?;
        if status.state == CONTAINER_EXITED {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "printer did not exit: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        status.exit_code == PRINTER_EXIT_CODE,
        "printer exit code: {status:?}"
    );
    let log_path = log_dir.join("printer.log");
    ensure!(
        Path::new(&status.log_path) == log_path,
        "printer log path: {status:?}"
    );

    // The logger drains the shim's FIFOs on its own; the lines may land after the exit.
    let expected = [
        ("stdout", "line one"),
        ("stdout", "line two"),
        ("stderr", "to stderr"),
    ];
    loop {
        let entries = read_cri_log(&log_path)?;
        let has =
            |(stream, line): &(&str, &str)| entries.iter().any(|e| e.0 == *stream && e.1 == *line);
        if expected.iter().all(has) {
            let stdout: Vec<&str> = entries
                .iter()
                .filter(|e| e.0 == "stdout")
                .map(|e| e.1.as_str())
                .collect();
            ensure!(
                stdout == ["line one", "line two"],
                "stdout lines out of order: {entries:?}"
            );
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "printer log incomplete: {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses a CRI log file: `<RFC 3339 nano timestamp> <stream> <P|F> <content>` per line.
/// Returns (stream, content) of each full line; a partial (`P`) line would mean the
/// logger split a short line, which these short lines never need.
fn read_cri_log(path: &Path) -> Result<Vec<(&'static str, String)>> {
    let text = match fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        read => read.with_context(|| format!("read {}", path.display()))?,
    };
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let (Some(timestamp), Some(stream), Some(tag), Some(content)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                bail!("malformed CRI log line {line:?}");
            };
            ensure!(
                timestamp.len() > 20 && timestamp.as_bytes()[10] == b'T',
                "timestamp in {line:?}"
            );
            ensure!(tag == "F", "unexpected partial line {line:?}");
            let stream = match stream {
                "stdout" => "stdout",
                "stderr" => "stderr",
                other => bail!("stream {other:?} in {line:?}"),
            };
            Ok((stream, content.to_owned()))
        })
        .collect()
}

/// ExecSync returns the exec'd process's exit code and both streams.
fn check_exec(cri: &CriClient, container: &str) -> Result<()> {
    let script = "echo exec-out; echo exec-err >&2; exit 3";
    let result = cri
        .exec_sync(container, &["/bin/sh", "-c", script], 30)
        .context("ExecSync")?;
    ensure!(result.exit_code == 3, "exec exit code: {result:?}");
    ensure!(
        result.stdout == b"exec-out\n",
        "exec stdout: {:?}",
        String::from_utf8_lossy(&result.stdout)
    );
    ensure!(
        result.stderr == b"exec-err\n",
        "exec stderr: {:?}",
        String::from_utf8_lossy(&result.stderr)
    );
    Ok(())
}

/// ContainerStats reports the running container's cgroup: some CPU used, some memory in use.
fn check_stats(cri: &CriClient, container: &str) -> Result<()> {
    let stats = cri.container_stats(container).context("ContainerStats")?;
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|cpu| cpu.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value);
    let memory = stats
        .memory
        .as_ref()
        .and_then(|mem| mem.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    ensure!(cpu > 0 && memory > 0, "stats without usage: {stats:?}");
    Ok(())
}
