//! Controlling a running task through containerd: pause and resume (state, freezer and
//! events), the OOM event of a container over its memory limit, and checkpoint.

use std::process::Stdio;

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE};
use wren_tests::{Containerd, Runtime};

use crate::cgroup;

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
    events.wait_for("/tasks/delete", is_id);
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ];
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

/// A container growing past its memory limit is OOM-killed: exactly one `/tasks/oom`,
/// published before its `/tasks/exit`.
pub fn oom_is_published_once_before_exit(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("oom");
    // `tail` buffers a line that never ends: it grows until the OOM killer stops it.
    let flags = ["--rm", "--memory-limit", "16777216"];
    let mut run = cd.run_command(&flags, &id, &["tail", "/dev/zero"]);
    let output = run_with_deadline(run.stdin(Stdio::null()), CTR_DEADLINE);
    assert_eq!(output.status.code(), Some(137), "{}", output_text(&output));
    // `ctr run --rm` returns after the delete; the event may still be in flight.
    events.wait_for("/containers/delete", |body| body["id"] == id.as_str());
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/oom",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert_eq!(events.task_topics(&id), expected, "{}", events.raw());
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
