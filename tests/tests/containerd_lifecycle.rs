//! Task lifecycle through a private containerd and `ctr`: exit codes, signals, events,
//! exec, many containers at once and one shim per sandbox.

use wren_tests::containerd::{output_text, SpecOptions};
use wren_tests::{Containerd, Runtime};

wren_tests::per_runtime!(
    run_captures_stdout,
    exit_code_is_propagated,
    sigterm_exits_143,
    sigkill_exits_137,
    events_arrive_in_order,
    exec_reports_exit_code,
    twenty_containers_at_once,
    same_sandbox_shares_one_shim,
    leak_check_sees_a_running_task,
);

fn run_captures_stdout(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("stdout");
    let output = cd.run_rm(&id, &["echo", "hello from wren"]);
    cd.expect_success(&output, "ctr run echo");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from wren\n");
    cd.assert_no_leaks();
}

fn exit_code_is_propagated(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("exit");
    let output = cd.run_rm(&id, &["sh", "-c", "exit 42"]);
    assert_eq!(output.status.code(), Some(42), "{}", output_text(&output));
    cd.assert_no_leaks();
}

/// SIGTERM reaches a process that is not PID 1 (host PID namespace), whose default
/// action kills it: containerd reports 128 + 15.
fn sigterm_exits_143(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("term");
    let options = SpecOptions {
        host_pid_namespace: true,
        ..SpecOptions::default()
    };
    cd.run_spec_detached(&id, &["sleep", "1000"], &options);
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_expecting_exit(&events, &id, "SIGTERM", 143);
}

fn sigkill_exits_137(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("kill");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    cd.kill_expecting_exit(&events, &id, "SIGKILL", 137);
}

fn events_arrive_in_order(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("events");
    let output = cd.run_rm(&id, &["true"]);
    cd.expect_success(&output, "ctr run true");
    // `ctr run --rm` returns after the delete; the events may still be in flight.
    let task_delete_came = events.wait_for_deletes(&cd, &id);
    let mut expected = vec![
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    if !task_delete_came {
        expected.pop();
    }
    assert_eq!(
        events.task_topics(&id),
        expected,
        "events:\n{}",
        events.raw()
    );
    cd.assert_no_leaks();
}

fn exec_reports_exit_code(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("exec");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let fifo_dir = cd.fifo_dir().display().to_string();
    let exec = |exec_id: &str, script: &str| {
        let args = [
            "tasks",
            "exec",
            "--fifo-dir",
            &fifo_dir,
            "--exec-id",
            exec_id,
            &id,
            "sh",
            "-c",
            script,
        ];
        cd.ctr(&args)
    };
    let output = exec("exec-ok", "echo from exec; echo to stderr >&2");
    cd.expect_success(&output, "ctr task exec");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "from exec\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "to stderr\n");
    let output = exec("exec-seven", "exit 7");
    assert_eq!(output.status.code(), Some(7), "{}", output_text(&output));
    // The exec'd processes are gone; the container itself keeps running.
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

fn twenty_containers_at_once(rt: Runtime) {
    let cd = Containerd::start(rt);
    let ids: Vec<String> = (0..20).map(|_| cd.new_id("many")).collect();
    std::thread::scope(|scope| {
        let runs: Vec<_> = ids
            .iter()
            .map(|id| {
                let cd = &cd;
                scope.spawn(move || {
                    (
                        id,
                        cd.run_rm(id, &["sh", "-c", &format!("echo {id}; exit 3")]),
                    )
                })
            })
            .collect();
        for run in runs {
            let (id, output) = run.join().expect("runner thread");
            assert_eq!(
                output.status.code(),
                Some(3),
                "{id}: {}",
                output_text(&output)
            );
            assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{id}\n"));
        }
    });
    cd.assert_no_leaks();
}

/// Containers annotated with one `io.kubernetes.cri.sandbox-id` are served by one shim.
fn same_sandbox_shares_one_shim(rt: Runtime) {
    let cd = Containerd::start(rt);
    let sandbox = cd.new_id("sandbox");
    let annotation = format!("io.kubernetes.cri.sandbox-id={sandbox}");
    let first = cd.new_id("pod-a");
    let second = cd.new_id("pod-b");
    for id in [&first, &second] {
        cd.run_detached(&["--annotation", &annotation], id, &["sleep", "1000"]);
    }
    let shims = cd.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "expected one shim for the sandbox, found {shims:?}"
    );
    cd.kill_and_remove(&first);
    assert_eq!(
        cd.task_status(&second).as_deref(),
        Some("RUNNING"),
        "the shared shim must outlive one container"
    );
    assert_eq!(
        cd.shim_pids(),
        shims,
        "the shim must serve the second container still"
    );
    cd.kill_and_remove(&second);
    cd.assert_no_leaks();
}

/// The leak check every scenario ends with must see a live task's traces.
fn leak_check_sees_a_running_task(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("leaky");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let leaks = cd.leaks();
    for kind in [
        "containers",
        "tasks",
        "shim-side processes",
        "runc containers",
        "cgroups",
        "shim sockets",
        "bundles",
    ] {
        assert!(
            leaks.iter().any(|leak| leak.starts_with(kind)),
            "{kind} not reported: {leaks:#?}"
        );
    }
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}
