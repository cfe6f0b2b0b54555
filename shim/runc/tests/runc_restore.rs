//! Restoring a checkpointed container through the shim's API, as containerd drives it:
//! Create with `checkpoint` registers an init without a process, Start runs `runc restore`.
//! The error path runs on any host; a real dump and restore needs a working CRIU
//! (`wren_tests::criu_works`: a visible skip here, a failure under `WREN_TESTS_CRIU=1`).

mod runc_support;

use std::time::{Duration, Instant};

use protobuf::MessageField;
use runc_support::{
    code_of, create_request, ctx, delete, exec, kill_task, shutdown, start, state, wait, Fifos,
    Harness,
};
use wren_shim_protocol::runc::CheckpointOptions;
use wren_shim_protocol::task::CheckpointTaskRequest;
use wren_shim_protocol::types::Status;

const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done",
];
const OUTPUT_BOUND: Duration = Duration::from_secs(30);

fn topics(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(topic, _)| topic.as_str()).collect()
}

/// The numbers the counter printed so far, read until there are more than `at_least`.
fn numbers(fifos: &mut Fifos, seen: &mut String, at_least: usize) -> Vec<u64> {
    let deadline = Instant::now() + OUTPUT_BOUND;
    loop {
        seen.push_str(&fifos.stdout());
        let parsed: Vec<u64> = seen.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if parsed.len() > at_least {
            return parsed;
        }
        assert!(
            Instant::now() < deadline,
            "counter output stalled: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The numbers printed so far, read until the FIFO has been quiet for a while.
fn settled_numbers(fifos: &mut Fifos, seen: &mut String) -> Vec<u64> {
    const QUIET: Duration = Duration::from_secs(1);
    let deadline = Instant::now() + OUTPUT_BOUND;
    loop {
        let before = seen.len();
        std::thread::sleep(QUIET);
        seen.push_str(&fifos.stdout());
        if seen.len() == before || Instant::now() >= deadline {
            return numbers(fifos, seen, 0);
        }
    }
}

#[test]
fn restore_of_a_bad_image_fails_at_start_and_leaves_nothing() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("rstbad", COUNTER);
    let shim = harness.start_shim(&task);
    let fifos = harness.fifos("rstbad", false);
    let image = harness.tmp.path().join("empty-image");
    std::fs::create_dir(&image).unwrap();

    let mut create = create_request(&harness, &task, Some(&fifos));
    create.checkpoint = image.display().to_string();
    // As in containerd's shim: nothing runs until Start.
    assert_eq!(shim.client.create(ctx(), &create).unwrap().pid, 0);
    let created = state(&shim, &task.id, "").unwrap();
    assert_eq!(created.status.enum_value(), Ok(Status::CREATED));
    assert_eq!(created.pid, 0);

    let ttrpc::Error::RpcStatus(status) = start(&shim, &task.id, "").unwrap_err() else {
        panic!("not a status")
    };
    assert_eq!(status.code.enum_value(), Ok(ttrpc::Code::UNKNOWN));
    assert!(
        status.message.starts_with("OCI runtime restore failed"),
        "{}",
        status.message
    );
    let after = state(&shim, &task.id, "").unwrap();
    assert_eq!(after.status.enum_value(), Ok(Status::CREATED));
    // Nothing to exec in before the restore.
    assert_eq!(
        code_of(exec(&shim, &task, "e1", &["true"], None)),
        ttrpc::Code::FAILED_PRECONDITION
    );

    assert_eq!(delete(&shim, &task.id, "").unwrap().pid, 0);
    let events = harness.events_until_delete(&task.id);
    assert_eq!(topics(&events), ["/tasks/create", "/tasks/delete"]);
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn checkpointed_counter_is_restored_and_keeps_counting() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("rstcount", COUNTER);
    let shim = harness.start_shim(&task);
    let mut fifos = harness.fifos("rstcount", false);
    shim.client
        .create(ctx(), &create_request(&harness, &task, Some(&fifos)))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    let mut seen = String::new();
    numbers(&mut fifos, &mut seen, 3);

    let image = harness.tmp.path().join("image");
    let mut checkpoint = CheckpointTaskRequest::new();
    checkpoint.id.clone_from(&task.id);
    checkpoint.path = image.display().to_string();
    let options = CheckpointOptions {
        exit: true,
        ..CheckpointOptions::default()
    };
    checkpoint.options = MessageField::some(wren_shim_protocol::any::pack(&options).unwrap());
    let test = "runc_restore::checkpointed_counter_is_restored_and_keeps_counting";
    if !wren_tests::criu_works(test) {
        // The error path: a plain error (not NotFound), and the task carries on.
        assert_ne!(
            code_of(shim.client.checkpoint(ctx(), &checkpoint)),
            ttrpc::Code::NOT_FOUND
        );
        let running = state(&shim, &task.id, "").unwrap();
        assert_eq!(running.status.enum_value(), Ok(Status::RUNNING));
        kill_task(&shim, &task.id, "", 9).unwrap();
        wait(&shim, &task.id, "").unwrap();
        delete(&shim, &task.id, "").unwrap();
        shutdown(&shim);
        harness.assert_clean(&shim);
        return;
    }
    shim.client.checkpoint(ctx(), &checkpoint).unwrap();
    // `exit`: CRIU stops the container once dumped; everything it printed has drained.
    wait(&shim, &task.id, "").unwrap();
    // The task's last lines can reach the FIFO just after Wait answers (seen under TCG:
    // while CRIU dumps, the counter's `sleep` returns at once and it prints in a burst).
    let last = *settled_numbers(&mut fifos, &mut seen).last().unwrap();
    delete(&shim, &task.id, "").unwrap();

    let mut restored_fifos = harness.fifos("rstcount-restored", false);
    let mut restore = create_request(&harness, &task, Some(&restored_fifos));
    restore.checkpoint = image.display().to_string();
    assert_eq!(shim.client.create(ctx(), &restore).unwrap().pid, 0);
    let pid = start(&shim, &task.id, "").unwrap();
    assert!(pid > 0);
    let running = state(&shim, &task.id, "").unwrap();
    assert_eq!(running.status.enum_value(), Ok(Status::RUNNING));
    assert_eq!(running.pid, pid);

    let mut restored_seen = String::new();
    let restored = numbers(&mut restored_fifos, &mut restored_seen, 3);
    eprintln!("counted to {last} before the dump; restored: {restored:?}");
    assert_eq!(
        restored[0],
        last + 1,
        "the restored counter must go on from {last}: {restored_seen:?}"
    );
    assert!(
        restored.windows(2).all(|w| w[1] == w[0] + 1),
        "{restored:?}"
    );

    kill_task(&shim, &task.id, "", 9).unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 137);
    assert_eq!(delete(&shim, &task.id, "").unwrap().pid, pid);
    // Both lives look alike to containerd: the restored one starts at Start, not Create.
    let life = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    assert_eq!(topics(&harness.events_until_delete(&task.id)), life);
    assert_eq!(topics(&harness.events_until_delete(&task.id)), life);
    shutdown(&shim);
    harness.assert_clean(&shim);
}
