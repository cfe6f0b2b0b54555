//! `ctr task exec` edge cases: a duplicate exec id, an exec after the init process exited,
//! and an ended exec leaving the shim's process table.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE, STATE_DEADLINE};
use wren_tests::{Containerd, Runtime};

/// `ctr task exec --fifo-dir <ours> [flags] --exec-id <exec_id> <id> <cmd…>`.
pub fn exec_command(
    cd: &Containerd,
    flags: &[&str],
    exec_id: &str,
    id: &str,
    cmd: &[&str],
) -> Command {
    let fifo_dir = cd.fifo_dir().display().to_string();
    let mut args = vec!["tasks", "exec", "--fifo-dir", &fifo_dir];
    args.extend(flags);
    args.extend(["--exec-id", exec_id, id]);
    args.extend(cmd);
    cd.ctr_command(&args)
}

/// Runs an attached exec with stdin closed (bounded by `CTR_DEADLINE`); returns its output.
pub fn exec(cd: &Containerd, exec_id: &str, id: &str, cmd: &[&str]) -> Output {
    let mut command = exec_command(cd, &[], exec_id, id, cmd);
    run_with_deadline(command.stdin(Stdio::null()), CTR_DEADLINE)
}

/// Whether `ctr task ps <id>` lists a process of exec `exec_id`.
pub fn exec_is_listed(cd: &Containerd, id: &str, exec_id: &str) -> bool {
    // ctr 1.x prints each exec's details as `&ProcessDetails{ExecID:<id>,…}`, ctr 2.x as
    // `exec_id:"<id>"`.
    let listing = cd.ctr_ok(&["tasks", "ps", id]);
    listing.contains(&format!("ExecID:{exec_id},"))
        || listing.contains(&format!("exec_id:\"{exec_id}\""))
}

/// Waits (bounded) until exec `exec_id` of task `id` shows up in `ctr task ps`.
pub fn wait_for_exec(cd: &Containerd, id: &str, exec_id: &str) {
    let deadline = Instant::now() + STATE_DEADLINE;
    while !exec_is_listed(cd, id, exec_id) {
        assert!(
            Instant::now() < deadline,
            "exec {exec_id} never listed: {}",
            cd.ctr_ok(&["tasks", "ps", id])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_failed_with(output: &Output, needle: &str) {
    assert!(
        !output.status.success() && String::from_utf8_lossy(&output.stderr).contains(needle),
        "expected a failure mentioning {needle:?}: {}",
        output_text(output)
    );
}

/// A second exec with the id of one still running is refused, and the first one carries on.
pub fn duplicate_exec_id_is_rejected(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("dupexec");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    std::thread::scope(|scope| {
        let first = scope.spawn(|| exec(&cd, "dup", &id, &["sleep", "1000"]));
        wait_for_exec(&cd, &id, "dup");
        let second = exec(&cd, "dup", &id, &["true"]);
        // Go: "id dup: already exists"; wren: "exec dup already exists in container …".
        assert_failed_with(&second, "already exists");
        assert!(
            exec_is_listed(&cd, &id, "dup"),
            "the first exec must run on"
        );
        cd.ctr_ok(&[
            "tasks",
            "kill",
            "--exec-id",
            "dup",
            "--signal",
            "SIGKILL",
            &id,
        ]);
        let first = first.join().expect("first exec thread");
        assert_eq!(first.status.code(), Some(137), "{}", output_text(&first));
    });
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

/// Once the init process has exited, an exec is refused with a "stopped" error.
pub fn exec_after_init_exit_fails(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("lateexec");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    cd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", &id]);
    cd.wait_for_status(&id, "STOPPED");
    let output = exec(&cd, "late", &id, &["true"]);
    // Go: "cannot exec in a stopped state: unknown";
    // wren: "container …: cannot exec a stopped process: failed precondition".
    assert_failed_with(&output, "stopped");
    assert_eq!(cd.task_status(&id).as_deref(), Some("STOPPED"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

/// An exec that ended is gone: `ctr task ps` no longer lists it and its id can be used again.
pub fn ended_exec_is_removed(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("endexec");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    std::thread::scope(|scope| {
        let running = scope.spawn(|| exec(&cd, "again", &id, &["sleep", "1000"]));
        wait_for_exec(&cd, &id, "again");
        cd.ctr_ok(&[
            "tasks",
            "kill",
            "--exec-id",
            "again",
            "--signal",
            "SIGKILL",
            &id,
        ]);
        let ended = running.join().expect("exec thread");
        assert_eq!(ended.status.code(), Some(137), "{}", output_text(&ended));
    });
    // An attached `ctr task exec` deletes its process before returning.
    assert!(
        !exec_is_listed(&cd, &id, "again"),
        "ended exec still listed: {}",
        cd.ctr_ok(&["tasks", "ps", &id])
    );
    let reused = exec(&cd, "again", &id, &["sh", "-c", "exit 7"]);
    assert_eq!(reused.status.code(), Some(7), "{}", output_text(&reused));
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}
