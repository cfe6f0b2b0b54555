//! Bad input gets a clear error from ctr and leaves no shim, mount, cgroup or socket behind.

use std::process::Output;

use wren_tests::containerd::output_text;
use wren_tests::{Containerd, Runtime};

wren_tests::per_runtime!(
    kill_of_unknown_task_is_not_found,
    missing_command_fails_cleanly,
    failed_exec_leaves_container_running,
    missing_runc_binary_fails_cleanly,
);

fn assert_failed_with(output: &Output, needle: &str) {
    assert!(
        !output.status.success(),
        "expected a failure: {}",
        output_text(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(needle),
        "stderr should mention {needle:?}: {}",
        output_text(output)
    );
}

fn kill_of_unknown_task_is_not_found(rt: Runtime) {
    let cd = Containerd::start(rt);
    let output = cd.ctr(&["tasks", "kill", "--signal", "SIGKILL", "no-such-task"]);
    assert_failed_with(&output, "not found");
    cd.assert_no_leaks();
}

fn missing_command_fails_cleanly(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("nocmd");
    let output = cd.run_rm(&id, &["/bin/no-such-command"]);
    assert_failed_with(&output, "no-such-command");
    cd.remove_container_record(&id);
    cd.assert_no_leaks();
}

fn missing_runc_binary_fails_cleanly(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("norunc");
    let mut flags = vec!["--rm"];
    let binary_flags = cd.binary_name_flags(&id, "/nonexistent/runc");
    flags.extend(binary_flags.iter().map(String::as_str));
    let mut run = cd.run_command(&flags, &id, &["true"]);
    let output =
        wren_tests::containerd::run_with_deadline(&mut run, wren_tests::containerd::CTR_DEADLINE);
    assert_failed_with(&output, "/nonexistent/runc");
    cd.remove_container_record(&id);
    cd.assert_no_leaks();
}

/// An exec of a missing binary fails with a clear error and does not disturb the task.
fn failed_exec_leaves_container_running(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("badexec");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let fifo_dir = cd.fifo_dir().display().to_string();
    let exec = [
        "tasks",
        "exec",
        "--fifo-dir",
        &fifo_dir,
        "--exec-id",
        "missing",
        &id,
        "/bin/no-such-command",
    ];
    let output = cd.ctr(&exec);
    assert_failed_with(&output, "no-such-command");
    assert_eq!(
        cd.task_status(&id).as_deref(),
        Some("RUNNING"),
        "a failed exec must not stop the task"
    );
    let output = cd.ctr(&[
        "tasks",
        "exec",
        "--fifo-dir",
        &fifo_dir,
        "--exec-id",
        "after",
        &id,
        "true",
    ]);
    cd.expect_success(&output, "an exec after the failed one");
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}
