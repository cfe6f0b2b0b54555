//! What an idle shim costs: its threads. A running container with a Wait pending on it and on
//! a never-started exec must settle to the threads that wait on the kernel for the whole shim
//! (main loop, io, oom), and both Waits must still be answered.

mod runc_support;

use std::time::{Duration, Instant};

use runc_support::{
    code_of, create_request, ctx, delete, exec, kill_task, shutdown, start, wait, Harness,
};

/// The daemon's permanent threads: the main loop, "io" and "oom".
const IDLE_THREADS: usize = 3;
/// Far beyond the pool's idle exit (1 s): a slow machine must not fail this test.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("shim is alive")
        .count()
}

#[test]
fn pending_waits_hold_no_thread_and_are_answered() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("idle", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    exec(&shim, &task, "never-started", &["true"], None).unwrap();

    std::thread::scope(|scope| {
        let init_wait = scope.spawn(|| wait(&shim, &task.id, ""));
        let exec_wait = scope.spawn(|| wait(&shim, &task.id, "never-started"));

        let deadline = Instant::now() + SETTLE_DEADLINE;
        while threads(shim.pid) > IDLE_THREADS {
            assert!(
                Instant::now() < deadline,
                "shim still runs {} threads with only Waits pending",
                threads(shim.pid)
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        // Deleting an exec that never ran releases its Wait with NotFound.
        delete(&shim, &task.id, "never-started").unwrap();
        let released = exec_wait.join().unwrap();
        assert_eq!(code_of(released), ttrpc::Code::NOT_FOUND);

        kill_task(&shim, &task.id, "", libc::SIGKILL as u32).unwrap();
        let exited = init_wait.join().unwrap().unwrap();
        assert_eq!(exited.exit_status, 137);
    });
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}
