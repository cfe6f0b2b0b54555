//! Execs in a running container: exit codes and stdio, event order, the exec-id rules, Pids
//! details, CloseIO, and the init's exit waiting for its execs'.

mod runc_support;

use runc_support::{
    code_of, create_request, ctx, delete, exec, kill_task, shutdown, start, state, wait, Harness,
};
use wren_shim_protocol::runc::ProcessDetails;
use wren_shim_protocol::task::{CloseIORequest, PidsRequest};
use wren_shim_protocol::types::Status;

#[test]
fn exec_exit_code_stdio_and_event_order() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("exec", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();

    let mut fifos = harness.fifos("e1", false);
    exec(
        &shim,
        &task,
        "e1",
        &["sh", "-c", "echo from-exec; exit 7"],
        Some(&fifos),
    )
    .unwrap();
    assert_eq!(
        state(&shim, &task.id, "e1").unwrap().status.enum_value(),
        Ok(Status::CREATED)
    );
    let duplicate = exec(&shim, &task, "e1", &["true"], None);
    assert_eq!(code_of(duplicate), ttrpc::Code::ALREADY_EXISTS);
    assert_eq!(
        code_of(kill_task(&shim, &task.id, "e1", 9)),
        ttrpc::Code::FAILED_PRECONDITION
    );

    let pid = start(&shim, &task.id, "e1").unwrap();
    assert!(pid > 0);
    assert_eq!(wait(&shim, &task.id, "e1").unwrap().exit_status, 7);
    assert_eq!(fifos.stdout(), "from-exec\n");
    assert_eq!(
        code_of(kill_task(&shim, &task.id, "e1", 9)),
        ttrpc::Code::NOT_FOUND
    );
    let deleted = delete(&shim, &task.id, "e1").unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 7));
    assert!(!task.bundle.path.join("e1.pid").exists());
    assert_eq!(
        code_of(state(&shim, &task.id, "e1")),
        ttrpc::Code::NOT_FOUND
    );

    // A long exec shows up in Pids with its exec id.
    exec(&shim, &task, "e2", &["sleep", "1000"], None).unwrap();
    let sleeper = start(&shim, &task.id, "e2").unwrap();
    let mut pids = PidsRequest::new();
    pids.id.clone_from(&task.id);
    let listed = shim.client.pids(ctx(), &pids).unwrap().processes;
    let entry = listed
        .iter()
        .find(|p| p.pid == sleeper)
        .expect("exec pid listed");
    let details: ProcessDetails = wren_shim_protocol::any::unpack(&entry.info).unwrap();
    assert_eq!(details.exec_id, "e2");
    assert!(
        listed.iter().any(|p| p.pid != sleeper && p.info.is_none()),
        "init listed"
    );

    // Killing the init takes the exec with it; the init's exit comes after the exec's.
    kill_task(&shim, &task.id, "", 9).unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 137);
    assert_eq!(wait(&shim, &task.id, "e2").unwrap().exit_status, 137);
    delete(&shim, &task.id, "e2").unwrap();
    delete(&shim, &task.id, "").unwrap();

    let events = harness.events_until_delete(&task.id);
    let position = |topic: &str, id: &str| {
        events
            .iter()
            .position(|(t, i)| t == topic && i == id)
            .unwrap_or_else(|| panic!("{topic} {id} in {events:?}"))
    };
    assert!(position("/tasks/exec-added", "e1") < position("/tasks/exec-started", "e1"));
    assert!(position("/tasks/exec-started", "e1") < position("/tasks/exit", "e1"));
    assert!(position("/tasks/exec-started", "e2") < position("/tasks/exit", "e2"));
    assert!(
        position("/tasks/exit", "e2") < position("/tasks/exit", &task.id),
        "{events:?}"
    );
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn ids_that_could_climb_out_of_their_directory_are_invalid_arguments() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("climb", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    // The container id names runc's state directory, the exec id a pid file in the bundle.
    let mut climbing = create_request(&harness, &task, None);
    climbing.id = format!("../{}", task.id);
    assert_eq!(
        code_of(shim.client.create(ctx(), &climbing)),
        ttrpc::Code::INVALID_ARGUMENT
    );
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    assert_eq!(
        code_of(exec(&shim, &task, "../e1", &["true"], None)),
        ttrpc::Code::INVALID_ARGUMENT
    );
    kill_task(&shim, &task.id, "", 9).unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 137);
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn exec_after_init_exit_is_failed_precondition() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("late", &["true"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 0);

    let refused = exec(&shim, &task, "e1", &["true"], None);
    assert_eq!(code_of(refused), ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(
        code_of(start(&shim, &task.id, "e1")),
        ttrpc::Code::NOT_FOUND
    );
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn close_io_ends_stdin() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("stdin", &["cat"]);
    let shim = harness.start_shim(&task);
    let mut fifos = harness.fifos("stdin", true);
    shim.client
        .create(ctx(), &create_request(&harness, &task, Some(&fifos)))
        .unwrap();
    start(&shim, &task.id, "").unwrap();

    fifos.write_stdin(b"ping\n");
    fifos.close_stdin();
    let mut close = CloseIORequest::new();
    close.id.clone_from(&task.id);
    close.stdin = true;
    shim.client.close_io(ctx(), &close).unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 0);
    assert_eq!(fifos.stdout(), "ping\n");
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}
