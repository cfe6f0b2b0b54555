//! Launch, events, exit codes and stdio against real shims (root only).

mod common;

use common::Session;
use wren_manager::events::EventPayload;
use wren_manager::shim::ShimLiveness;
use wren_manager::stdio::{Input, StdinMode};

/// Create, start, exit 42, delete: events in order, Wait's code, stdout and stderr apart,
/// and a teardown that leaves no shim, socket, FIFO or runc container behind.
fn exit_code_events_and_stdio(shim: &str) {
    let mut s = Session::launch(
        shim,
        &["sh", "-c", "echo out; echo err >&2; exit 42"],
        |_| {},
    );
    let open = s.create(StdinMode::Closed);
    let init_pid = match s.next_event().payload {
        EventPayload::Create(e) => {
            assert_eq!(e.container_id, s.id);
            e.pid
        }
        other => panic!("expected create, got {other:?}"),
    };
    let pump = s.pump(open, Input::Bytes(Vec::new()), "");
    assert_eq!(s.client().start(&s.id, "").unwrap(), init_pid);
    let exit = s.client().wait(&s.id, "").unwrap();
    assert_eq!(exit.status, 42);
    let captured = pump.wait();
    assert_eq!(captured.stdout, b"out\n");
    assert_eq!(captured.stderr, b"err\n");
    assert!(matches!(s.next_event().payload, EventPayload::Start(e) if e.pid == init_pid));
    match s.next_event().payload {
        EventPayload::Exit(e) => assert_eq!(
            (e.pid, e.exit_status, e.id.as_str()),
            (init_pid, 42, s.id.as_str())
        ),
        other => panic!("expected exit, got {other:?}"),
    }
    let events = s.events.clone();
    let id = s.id.clone();
    let teardown = s.teardown_and_check();
    assert_eq!(teardown.liveness, ShimLiveness::Alive);
    assert_eq!(teardown.deleted.map(|e| e.status), Some(42));
    let delete = events
        .try_recv()
        .expect("delete event before teardown returned");
    assert_eq!(delete.topic, "/tasks/delete");
    assert!(
        matches!(delete.payload, EventPayload::Delete(e) if e.container_id == id && e.exit_status == 42)
    );
}

/// Bytes written to stdin reach `cat` and come back; EOF arrives through CloseIO.
fn stdin_reaches_cat(shim: &str) {
    let mut s = Session::launch(shim, &["cat"], |_| {});
    let open = s.create(StdinMode::Piped);
    let input: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let pump = s.pump(open, Input::Bytes(input.clone()), "");
    s.client().start(&s.id, "").unwrap();
    assert_eq!(s.client().wait(&s.id, "").unwrap().status, 0);
    let captured = pump.wait();
    assert!(
        captured.stdout == input,
        "stdout differs: {} bytes vs {}",
        captured.stdout.len(),
        input.len()
    );
    s.teardown_and_check();
}

/// A shim killed with SIGKILL: teardown notices the dead connection and the delete
/// action still cleans up, reporting the init's exit as 137.
fn dead_shim_is_cleaned_up(shim: &str) {
    let mut s = Session::launch(shim, &["sleep", "1000"], |_| {});
    let _open = s.create(StdinMode::Closed);
    s.client().start(&s.id, "").unwrap();
    let shim_pid = nix::unistd::Pid::from_raw(i32::try_from(s.shim.pid()).unwrap());
    nix::sys::signal::kill(shim_pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let teardown = s.teardown_and_check();
    assert_eq!(teardown.liveness, ShimLiveness::Dead);
    let cleanup = teardown.cleanup.expect("delete action reported an exit");
    assert_eq!(cleanup.status, 137);
}

common::test_every_shim!(
    exit_code_events_and_stdio,
    stdin_reaches_cat,
    dead_shim_is_cleaned_up
);
