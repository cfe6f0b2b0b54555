//! Docker: a private dockerd on a private containerd runs containers on Docker's default
//! runtime (`runc`, containerd's Go shim, the reference) and on wren (`--runtime wren`, runtime
//! type `io.containerd.wren.v2` from daemon.json), through the `docker` CLI as a user would.
//!
//! Every scenario runs once per runtime; one failing on `runc` means its expectation is
//! wrong, one failing on `wren` alone is a wren bug. Needs Docker 26 and containerd from
//! `scripts/install-deps.sh`, and `cargo build --workspace --bins`.

use wren_tests::containerd::output_text;
use wren_tests::docker::{DockerRuntime, Dockerd, IMAGE};

/// Runs until SIGTERM, then exits 0 (`wait` returns as soon as a trapped signal arrives), and
/// says so on stdout first, for `docker logs`.
const SERVICE_SCRIPT: &str =
    "echo started; echo to stderr >&2; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";

/// Generates `runc_runtime::<scenario>` and `wren_runtime::<scenario>` tests.
macro_rules! per_docker_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod runc_runtime {
            $(
                #[test]
                fn $scenario() {
                    if super::can_run() {
                        super::$scenario(wren_tests::docker::DockerRuntime::Runc);
                    }
                }
            )*
        }
        mod wren_runtime {
            $(
                #[test]
                fn $scenario() {
                    if super::can_run() {
                        super::$scenario(wren_tests::docker::DockerRuntime::Wren);
                    }
                }
            )*
        }
    };
}

per_docker_runtime!(
    attached_runs,
    detached_container_lifecycle,
    oom_restart_policy_and_live_restore,
);

/// Root, the containerd release and Docker are all there (a visible skip otherwise, and a
/// failure under CI).
fn can_run() -> bool {
    if !wren_tests::is_root() {
        wren_tests::skip(module_path!(), "needs root");
        return false;
    }
    let missing = wren_tests::ContainerdVersion::from_env()
        .missing()
        .or_else(wren_tests::docker::missing);
    if let Some(reason) = missing {
        wren_tests::skip(module_path!(), &reason);
        return false;
    }
    true
}

/// `docker run` flags every container gets: the runtime and no network (there is no bridge).
fn run_args<'a>(rt: DockerRuntime, flags: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--runtime", rt.name(), "--network", "none"];
    args.extend(flags);
    args.push(IMAGE);
    args.extend(cmd);
    args
}

/// `docker run --rm` attached: stdout, exit codes, `-i` stdin, `-t`, `--init`.
fn attached_runs(rt: DockerRuntime) {
    let docker = Dockerd::start();
    let output = docker.docker(&run_args(rt, &["--rm"], &["echo", "hello from docker"]));
    docker.expect_success(&output, "docker run --rm echo");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from docker\n"
    );

    if rt == DockerRuntime::Wren {
        // The runtime type works as a name with no daemon.json entry (and so no options).
        let by_type = [
            "run",
            "--rm",
            "--runtime",
            "io.containerd.wren.v2",
            "--network",
            "none",
            IMAGE,
            "echo",
            "by type",
        ];
        let output = docker.docker(&by_type);
        docker.expect_success(&output, "docker run --runtime io.containerd.wren.v2");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "by type\n");
    }

    let output = docker.docker(&run_args(rt, &["--rm"], &["sh", "-c", "exit 3"]));
    assert_eq!(output.status.code(), Some(3), "{}", output_text(&output));

    let input = b"line one\nline two\n";
    let output = docker.docker_with_input(&run_args(rt, &["--rm", "-i"], &["cat"]), input);
    docker.expect_success(&output, "docker run -i cat");
    assert_eq!(output.stdout, input, "{}", output_text(&output));

    // With a terminal the container sees a tty, and output comes back with CRLF line ends.
    let tty_check = ["sh", "-c", "test -t 0 && test -t 1 && echo tty"];
    let output = docker.docker(&run_args(rt, &["--rm", "-t"], &tty_check));
    docker.expect_success(&output, "docker run -t");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "tty\r\n");

    // `--init` makes docker-init (tini) PID 1, with the command as its child.
    let pid1 = ["sh", "-c", "cat /proc/1/comm; echo $$"];
    let output = docker.docker(&run_args(rt, &["--rm", "--init"], &pid1));
    docker.expect_success(&output, "docker run --init");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("docker-init") && lines[1] != "1",
        "{text:?}"
    );
    docker.assert_no_leaks();
}

/// `-d`, `docker logs`, exec, stats, pause/unpause, update, stop with a grace period, and
/// `rm -f` of a running container.
fn detached_container_lifecycle(rt: DockerRuntime) {
    let docker = Dockerd::start();
    let name = wren_tests::unique_id("svc");
    docker.docker_ok(&run_args(
        rt,
        &["-d", "--name", &name],
        &["sh", "-c", SERVICE_SCRIPT],
    ));
    docker.wait_for(&name, "{{.State.Status}}", "running");
    wait_for_logs(&docker, &name);
    // Docker gives the Go shim runc's root under its exec root; wren's root came from the
    // options file daemon.json names (`ConfigPath`).
    let state = docker.runc_state(rt, &docker.inspect(&name, "{{.Id}}"));
    assert!(
        state.join("state.json").is_file(),
        "no runc state at {}",
        state.display()
    );

    let output = docker.docker(&["exec", &name, "sh", "-c", "echo from exec; exit 5"]);
    assert_eq!(output.status.code(), Some(5), "{}", output_text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "from exec\n");

    let stats = docker.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        &name,
    ]);
    assert!(
        stats.starts_with(&name) && !stats.contains(" 0B /"),
        "stats: {stats:?}"
    );

    docker.docker_ok(&["pause", &name]);
    assert_eq!(docker.inspect(&name, "{{.State.Status}}"), "paused");
    docker.docker_ok(&["unpause", &name]);
    assert_eq!(docker.inspect(&name, "{{.State.Status}}"), "running");

    docker.docker_ok(&["update", "--memory", "64m", "--memory-swap", "64m", &name]);
    let limit = docker.docker_ok(&["exec", &name, "sh", "-c", MEMORY_LIMIT]);
    assert_eq!(
        limit.trim(),
        "67108864",
        "memory limit in the container's cgroup"
    );

    // The trap answers SIGTERM at once: a clean exit 0, not a SIGKILL after the grace.
    docker.docker_ok(&["stop", "--time", "30", &name]);
    assert_eq!(docker.inspect(&name, "{{.State.ExitCode}}"), "0");
    docker.docker_ok(&["rm", &name]);

    let doomed = wren_tests::unique_id("doomed");
    docker.docker_ok(&run_args(
        rt,
        &["-d", "--name", &doomed],
        &["sleep", "1000"],
    ));
    docker.wait_for(&doomed, "{{.State.Status}}", "running");
    docker.docker_ok(&["rm", "--force", &doomed]);
    docker.assert_no_leaks();
}

/// The container's memory limit, from its own cgroup (v2 or v1).
const MEMORY_LIMIT: &str =
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";

fn wait_for_logs(docker: &Dockerd, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let output = docker.docker(&["logs", name]);
        docker.expect_success(&output, "docker logs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        if stdout == "started\n" && stderr == "to stderr\n" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "docker logs: {}",
            output_text(&output)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `--memory` OOM → `OOMKilled`; `--restart on-failure:2`; dockerd restarted under
/// live-restore finds its container running on the same process.
fn oom_restart_policy_and_live_restore(rt: DockerRuntime) {
    let mut docker = Dockerd::start();
    // busybox `tail` buffers a line that never ends: it grows until the limit kills it.
    let hog = wren_tests::unique_id("oom");
    let limits = ["--name", &hog, "--memory", "32m", "--memory-swap", "32m"];
    let output = docker.docker(&run_args(rt, &limits, &["tail", "/dev/zero"]));
    assert_eq!(output.status.code(), Some(137), "{}", output_text(&output));
    assert_eq!(
        docker.inspect(&hog, "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    docker.docker_ok(&["rm", &hog]);

    let failing = wren_tests::unique_id("retry");
    let policy = ["-d", "--name", &failing, "--restart", "on-failure:2"];
    docker.docker_ok(&run_args(rt, &policy, &["sh", "-c", "exit 1"]));
    docker.wait_for(
        &failing,
        "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}",
        "2 exited 1",
    );
    docker.docker_ok(&["rm", &failing]);

    let survivor = wren_tests::unique_id("live");
    docker.docker_ok(&run_args(
        rt,
        &["-d", "--name", &survivor],
        &["sleep", "1000"],
    ));
    docker.wait_for(&survivor, "{{.State.Status}}", "running");
    let pid = docker.inspect(&survivor, "{{.State.Pid}}");
    let shims = docker.containerd().shim_pids();
    docker.restart();
    assert_eq!(
        docker.inspect(&survivor, "{{.State.Status}} {{.State.Pid}}"),
        format!("running {pid}")
    );
    assert_eq!(
        docker.containerd().shim_pids(),
        shims,
        "the same shim after the restart"
    );
    let output = docker.docker(&["exec", &survivor, "echo", "still here"]);
    docker.expect_success(&output, "docker exec after the dockerd restart");
    docker.docker_ok(&["rm", "--force", &survivor]);
    docker.assert_no_leaks();
}
