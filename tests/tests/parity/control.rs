//! Controlling a running task through containerd: pause and resume (state, freezer and
//! events), the OOM event of a container over its memory limit, and checkpoint.

use std::process::Stdio;

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE};
use wren_tests::{Containerd, Runtime};

use crate::cgroup;
use crate::exec::exec;

/// Pausing freezes the task's cgroup and publishes `/tasks/paused`; resuming thaws it and
/// publishes `/tasks/resumed`, both between start and exit.
pub fn pause_and_resume_publish_events(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("pause");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let pid = cd.task_pid(&id).expect("a running task has a pid");
    let is_id = |body: &serde_json::Value| body["container_id"] == id.as_str();

    cd.ctr_ok(&["tasks", "pause", &id]);
    cd.wait_for_status(&id, "PAUSED");
    events.wait_for("/tasks/paused", is_id);
    assert_eq!(freezer_state(pid), Freezer::Frozen);

    cd.ctr_ok(&["tasks", "resume", &id]);
    cd.wait_for_status(&id, "RUNNING");
    events.wait_for("/tasks/resumed", is_id);
    assert_eq!(freezer_state(pid), Freezer::Thawed);

    cd.kill_expecting_exit(&events, &id, "SIGKILL", 137);
    let task_delete_came = events.wait_for_task_delete(&cd, &id);
    let mut expected = vec![
        "/tasks/create",
        "/tasks/start",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ];
    if !task_delete_came {
        expected.pop();
    }
    assert_eq!(events.task_topics(&id), expected, "{}", events.raw());
    cd.assert_no_leaks();
}

#[derive(Debug, PartialEq, Eq)]
enum Freezer {
    Frozen,
    Thawed,
}

fn freezer_state(pid: u32) -> Freezer {
    let frozen = if cgroup::is_unified() {
        cgroup::read(pid, "freezer", "cgroup.freeze") == "1"
    } else {
        cgroup::read(pid, "freezer", "freezer.state") == "FROZEN"
    };
    if frozen {
        Freezer::Frozen
    } else {
        Freezer::Thawed
    }
}

/// Whether `rt` publishes an init's OOM event before its exit. wren reads the kill counter a
/// last time before it publishes the exit (containerd PR #12714 does the same for Go); the
/// Go shims tested here (1.6 to 2.1) on cgroup v2 read `memory.events` on a goroutine of
/// their own, which loses the race to the exit now and then. On v1 the kernel signals their
/// eventfd before the kill, so the order holds for both.
fn oom_precedes_exit(rt: Runtime) -> bool {
    rt == Runtime::Wren || !cgroup::is_unified()
}

/// A container growing past its memory limit is OOM-killed: exactly one `/tasks/oom`,
/// published before its `/tasks/exit` (see [`oom_precedes_exit`] for the Go shim on v2).
pub fn oom_is_published_once_before_exit(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("oom");
    // `tail` buffers a line that never ends: it grows until the OOM killer stops it.
    let flags = ["--rm", "--memory-limit", "16777216"];
    let mut run = cd.run_command(&flags, &id, &["tail", "/dev/zero"]);
    let output = run_with_deadline(run.stdin(Stdio::null()), CTR_DEADLINE);
    assert_eq!(output.status.code(), Some(137), "{}", output_text(&output));
    // `ctr run --rm` returns after the delete; the events may still be in flight.
    let task_delete_came = events.wait_for_deletes(&cd, &id);
    let mut expected = vec![
        "/tasks/create",
        "/tasks/start",
        "/tasks/oom",
        "/tasks/exit",
        "/tasks/delete",
    ];
    if !task_delete_came {
        expected.pop();
    }
    let mut topics = events.task_topics(&id);
    let exit_then_oom = topics.len() > 3 && topics[2] == "/tasks/exit" && topics[3] == "/tasks/oom";
    if exit_then_oom && !oom_precedes_exit(rt) {
        topics.swap(2, 3);
    }
    assert_eq!(topics, expected, "{}", events.raw());
    cd.assert_no_leaks();
}

/// The OOM watcher and the stats of a task's cgroup outlive the execs that come and go in it:
/// after two execs ended, `ctr task metrics` still answers, and when the init then grows past
/// the limit, exactly one `/tasks/oom` is published, before the init's `/tasks/exit` (137).
pub fn oom_after_execs_come_and_go(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("oomexec");
    // SIGUSR1 makes the init (PID 1, which handles it) become a `tail` that grows until the
    // OOM killer stops it; until then it sleeps.
    let script = "trap 'exec tail /dev/zero' USR1; while :; do sleep 1; done";
    cd.run_detached(&["--memory-limit", "16777216"], &id, &["sh", "-c", script]);
    for (exec_id, cmd) in [("first", ["true"].as_slice()), ("second", &["ls", "/"])] {
        let output = exec(&cd, exec_id, &id, cmd);
        assert!(output.status.success(), "{}", output_text(&output));
    }
    let metrics = cd.ctr_ok(&["tasks", "metrics", &id]);
    assert!(metrics.contains(&id), "ctr task metrics: {metrics}");

    let trigger = exec(&cd, "trigger", &id, &["kill", "-USR1", "1"]);
    assert!(trigger.status.success(), "{}", output_text(&trigger));
    assert_eq!(events.wait_exit_status(&id), 137, "{}", events.raw());
    let topics = events.task_topics(&id);
    let ooms: Vec<usize> = (0..topics.len())
        .filter(|&i| topics[i] == "/tasks/oom")
        .collect();
    let last_exit = topics.iter().rposition(|t| t == "/tasks/exit");
    assert_eq!(ooms.len(), 1, "exactly one OOM event: {}", events.raw());
    assert!(
        Some(ooms[0]) < last_exit || !oom_precedes_exit(rt),
        "the OOM event comes before the init's exit: {}",
        events.raw()
    );
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

/// `ctr task checkpoint` (without `--exit`) leaves the task running. Where CRIU cannot work
/// (on this project's kernel `criu check` fails: "vdso: Unexpected rt vDSO area bounds"), the
/// checkpoint must fail with an error naming criu, and the task must not notice.
pub fn checkpoint_leaves_task_running(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("ckpt");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let output = cd.ctr(&["tasks", "checkpoint", &id]);
    match wren_tests::criu::criu_check() {
        Ok(()) => cd.expect_success(&output, "ctr task checkpoint"),
        Err(reason) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success() && stderr.contains("criu"),
                "expected a checkpoint failure naming criu: {}",
                output_text(&output)
            );
            crate::visible_skip(
                rt,
                "checkpoint_leaves_task_running",
                &format!(
                    "criu cannot checkpoint on this host ({reason}); the failure: {}",
                    stderr.trim()
                ),
            );
        }
    }
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}
