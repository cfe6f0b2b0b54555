//! Failures around a running task: containerd crashing and coming back, and the shim
//! itself being killed.

use std::os::unix::net::UnixStream;

use wren_tests::containerd::shim_socket_path;
use wren_tests::{Containerd, Runtime};

wren_tests::per_runtime!(task_survives_containerd_restart, killed_shim_is_cleaned_up);

/// containerd dies with SIGKILL while a task runs; after a restart it reconnects to the
/// shim (1.x re-dials `<bundle>/address`, 2.x `<bundle>/bootstrap.json`) and the task can be
/// listed, killed and waited on. From 1.7 on containerd deletes a reloaded task whose shim
/// lists no processes, so the task still being there shows the shim answered `Pids`.
fn task_survives_containerd_restart(rt: Runtime) {
    let mut cd = Containerd::start(rt);
    let id = cd.new_id("restart");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for one task: {shims:?}");

    cd.kill_daemon();
    assert_eq!(cd.shim_pids(), shims, "the shim must outlive containerd");
    cd.restart();

    assert_eq!(
        cd.task_status(&id).as_deref(),
        Some("RUNNING"),
        "task after restart"
    );
    assert_eq!(
        cd.shim_pids(),
        shims,
        "containerd must reconnect to the same shim"
    );
    let events = cd.events();
    cd.kill_expecting_exit(&events, &id, "SIGKILL", 137);
}

/// The shim dies with SIGKILL: containerd notices the closed connection, runs the shim's
/// `delete` action (which force-deletes the container), publishes the exit, and the task
/// and container can then be removed with nothing stuck.
fn killed_shim_is_cleaned_up(rt: Runtime) {
    let cd = Containerd::start(rt);
    let events = cd.events();
    let id = cd.new_id("shimkill");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let killed = cd.kill_shims();
    assert_eq!(killed.len(), 1, "one shim for one task: {killed:?}");

    let exit = events.wait_for("/tasks/exit", |body| body["container_id"] == id.as_str());
    assert_eq!(exit.body["exit_status"], 137, "exit event: {:?}", exit.body);
    events.wait_for("/tasks/delete", |body| body["container_id"] == id.as_str());
    if let Some(status) = cd.task_status(&id) {
        assert_eq!(status, "STOPPED", "a task whose shim died");
        cd.ctr_ok(&["tasks", "rm", &id]);
    }
    cd.ctr_ok(&["containers", "rm", &id]);

    // A SIGKILLed shim cannot remove its socket file (the Go shim leaves it too); the next
    // `start` replaces it. It must at least be dead: nothing may still listen on it.
    let socket = shim_socket_path(cd.address(), cd.namespace(), &id);
    if socket.exists() {
        assert!(
            UnixStream::connect(&socket).is_err(),
            "a killed shim's socket still accepts connections"
        );
        std::fs::remove_file(&socket).expect("remove stale shim socket");
    }
    cd.assert_no_leaks();
}
