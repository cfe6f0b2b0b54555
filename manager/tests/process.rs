//! Exec, Pids, Stats, Pause/Resume and Kill against real shims (root only).

mod common;

use common::Session;
use serde_json::json;
use wren_manager::client::{ExecProcess, KillScope, Metrics};
use wren_manager::events::EventPayload;
use wren_manager::stdio::{Input, StdinMode};

/// An exec's process spec: the container's process with other args.
fn exec_spec(s: &Session, args: &[&str]) -> serde_json::Value {
    let mut process = wren_manager::bundle::read_process(&s.bundle.path).unwrap();
    process["args"] = json!(args);
    process
}

fn start_exec(s: &Session, exec_id: &str, args: &[&str]) -> wren_manager::stdio::Pump {
    let (set, open) = s.fifos(exec_id, StdinMode::Closed);
    let req = ExecProcess {
        id: s.id.clone(),
        exec_id: exec_id.into(),
        stdout: set.stdout.display().to_string(),
        stderr: common::path_str(set.stderr.as_deref()),
        spec: exec_spec(s, args),
        ..Default::default()
    };
    s.client().exec(&req).unwrap();
    let pump = s.pump(open, Input::Bytes(Vec::new()), exec_id);
    s.client().start(&s.id, exec_id).unwrap();
    // The FIFO directory may go now: both sides hold their ends open.
    drop(set);
    pump
}

fn expect(s: &Session, topic: &str) -> EventPayload {
    let event = s.next_event();
    assert_eq!(event.topic, topic, "unexpected event {event:?}");
    event.payload
}

/// Exec exit codes, Pids with ProcessDetails, v1/v2 Stats, Pause/Resume events.
fn exec_pids_stats_pause(shim: &str) {
    let mut s = Session::launch(shim, &["sleep", "1000"], |_| {});
    let _open = s.create(StdinMode::Closed);
    s.client().start(&s.id, "").unwrap();
    expect(&s, "/tasks/create");
    expect(&s, "/tasks/start");

    let sleeper = start_exec(&s, "sleeper", &["sleep", "1000"]);
    expect(&s, "/tasks/exec-added");
    let started = match expect(&s, "/tasks/exec-started") {
        EventPayload::ExecStarted(e) => e.pid,
        other => panic!("{other:?}"),
    };
    let pids = s.client().pids(&s.id).unwrap();
    assert!(pids.len() >= 2, "{pids:?}");
    let exec_entry = pids
        .iter()
        .find(|p| p.pid == started)
        .expect("exec pid listed");
    assert_eq!(exec_entry.exec_id.as_deref(), Some("sleeper"));
    s.client()
        .kill(&s.id, "sleeper", 9, KillScope::Process)
        .unwrap();
    assert_eq!(s.client().wait(&s.id, "sleeper").unwrap().status, 137);
    sleeper.wait();
    s.client().delete(&s.id, "sleeper").unwrap();
    assert!(matches!(expect(&s, "/tasks/exit"), EventPayload::Exit(e) if e.id == "sleeper"));

    let seven = start_exec(&s, "seven", &["sh", "-c", "echo exec-out; exit 7"]);
    assert_eq!(s.client().wait(&s.id, "seven").unwrap().status, 7);
    assert_eq!(seven.wait().stdout, b"exec-out\n");
    s.client().delete(&s.id, "seven").unwrap();
    expect(&s, "/tasks/exec-added");
    expect(&s, "/tasks/exec-started");
    expect(&s, "/tasks/exit");

    match s.client().stats(&s.id).unwrap() {
        Metrics::V1(m) => assert!(
            m.memory.usage.as_ref().is_some_and(|u| u.usage > 0),
            "{m:?}"
        ),
        Metrics::V2(m) => assert!(m.memory.as_ref().is_some_and(|mem| mem.usage > 0), "{m:?}"),
    }

    s.client().pause(&s.id).unwrap();
    assert!(
        matches!(expect(&s, "/tasks/paused"), EventPayload::Paused(e) if e.container_id == s.id)
    );
    let status = s.client().state(&s.id, "").unwrap().status.enum_value();
    assert_eq!(status, Ok(wren_manager::protocol::types::Status::PAUSED));
    s.client().resume(&s.id).unwrap();
    assert!(matches!(
        expect(&s, "/tasks/resumed"),
        EventPayload::Resumed(_)
    ));

    s.client().kill(&s.id, "", 9, KillScope::Process).unwrap();
    assert_eq!(s.client().wait(&s.id, "").unwrap().status, 137);
    s.teardown_and_check();
}

/// SIGTERM to an init that is not pid 1 of a namespace (no pid namespace) → 143.
fn kill_sigterm_gives_143(shim: &str) {
    let mut s = Session::launch(shim, &["sleep", "1000"], |b| {
        let namespaces = b.spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|ns| ns["type"] != "pid");
    });
    let _open = s.create(StdinMode::Closed);
    s.client().start(&s.id, "").unwrap();
    s.client().kill(&s.id, "", 15, KillScope::Process).unwrap();
    assert_eq!(s.client().wait(&s.id, "").unwrap().status, 143);
    let not_found = s
        .client()
        .kill(&s.id, "", 15, KillScope::Process)
        .unwrap_err();
    assert!(not_found.is_not_found(), "{not_found}");
    s.teardown_and_check();
}

common::test_every_shim!(exec_pids_stats_pause, kill_sigterm_gives_143);
