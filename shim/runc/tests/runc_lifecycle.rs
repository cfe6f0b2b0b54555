//! The runc shim end to end, driven as containerd drives it: create, start, wait, delete,
//! stdio through FIFOs, events and their order, rootfs mounts, the `delete` action, and a
//! clean exit that leaves nothing behind.

mod runc_support;

use protobuf::Message;
use runc_support::{
    code_of, create_request, ctx, delete, kill_task, shutdown, start, state, wait, Harness,
};
use wren_shim_protocol::task::{DeleteResponse, PidsRequest, StatsRequest};
use wren_shim_protocol::types::{Mount, Status};

fn topics(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(topic, _)| topic.as_str()).collect()
}

#[test]
fn create_start_wait_delete_with_stdio_and_ordered_events() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("life", &["sh", "-c", "echo hello; echo oops >&2; exit 42"]);
    let shim = harness.start_shim(&task);
    let mut fifos = harness.fifos("life", false);

    let created = shim
        .client
        .create(ctx(), &create_request(&harness, &task, Some(&fifos)))
        .unwrap();
    assert!(created.pid > 0);
    let created_state = state(&shim, &task.id, "").unwrap();
    assert_eq!(created_state.status.enum_value(), Ok(Status::CREATED));
    assert_eq!(created_state.pid, created.pid);
    assert_eq!(
        std::fs::read_to_string(task.bundle.path.join("init.pid")).unwrap(),
        created.pid.to_string()
    );
    assert!(task.bundle.path.join("options.json").exists());

    assert_eq!(start(&shim, &task.id, "").unwrap(), created.pid);
    let exited = wait(&shim, &task.id, "").unwrap();
    assert_eq!(exited.exit_status, 42);
    assert_eq!(fifos.stdout(), "hello\n");
    assert_eq!(fifos.stderr(), "oops\n");
    let stopped = state(&shim, &task.id, "").unwrap();
    assert_eq!(stopped.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!(stopped.exit_status, 42);

    let deleted = delete(&shim, &task.id, "").unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (created.pid, 42));
    let events = harness.events_until_delete(&task.id);
    assert_eq!(
        topics(&events),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );

    // Gone now: every call about it is NotFound, and Shutdown ends the empty shim.
    assert_eq!(code_of(state(&shim, &task.id, "")), ttrpc::Code::NOT_FOUND);
    assert_eq!(code_of(delete(&shim, &task.id, "")), ttrpc::Code::NOT_FOUND);
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn rootfs_mounts_are_made_and_undone() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("mounts", &["sh", "-c", "test -x /bin/busybox"]);
    // The image lives elsewhere; the bundle's rootfs is the empty mount point containerd makes.
    let image = harness.tmp.path().join("image");
    std::fs::rename(task.bundle.rootfs(), &image).unwrap();
    let shim = harness.start_shim(&task);

    let mut create = create_request(&harness, &task, None);
    let mut bind = Mount::new();
    bind.type_ = "bind".into();
    bind.source = image.display().to_string();
    bind.options = vec!["rbind".into(), "rw".into()];
    create.rootfs.push(bind);
    shim.client.create(ctx(), &create).unwrap();
    let rootfs = task.bundle.rootfs().display().to_string();
    assert!(harness.mounts().contains(&rootfs), "rootfs mounted");

    start(&shim, &task.id, "").unwrap();
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 0);
    delete(&shim, &task.id, "").unwrap();
    assert!(
        !harness.mounts().contains(&rootfs),
        "rootfs unmounted by Delete"
    );
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn delete_action_cleans_up_after_a_dead_shim_and_is_idempotent() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("dead", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    let created = shim
        .client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    harness.kill_shim(shim.pid);
    assert_eq!(harness.runc_containers(), std::slice::from_ref(&task.id));

    for _ in 0..2 {
        let output = harness.delete_action(&task);
        assert!(output.status.success(), "{output:?}");
        let response = DeleteResponse::parse_from_bytes(&output.stdout).unwrap();
        assert_eq!((response.pid, response.exit_status), (created.pid, 137));
    }
    assert_eq!(harness.runc_containers(), Vec::<String>::new());
    // The killed shim cannot remove its socket: containerd's next start replaces it.
    let _ = std::fs::remove_file(shim.socket());
    harness.assert_clean(&shim);
}

#[test]
fn empty_shim_answers_not_found_and_shuts_down() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("empty", &["true"]);
    let shim = harness.start_shim(&task);

    assert_eq!(code_of(state(&shim, "nope", "")), ttrpc::Code::NOT_FOUND);
    assert_eq!(code_of(start(&shim, "nope", "")), ttrpc::Code::NOT_FOUND);
    assert_eq!(code_of(wait(&shim, "nope", "")), ttrpc::Code::NOT_FOUND);
    assert_eq!(
        code_of(kill_task(&shim, "nope", "", 9)),
        ttrpc::Code::NOT_FOUND
    );
    assert_eq!(code_of(delete(&shim, "nope", "")), ttrpc::Code::NOT_FOUND);
    let mut pids = PidsRequest::new();
    pids.id = "nope".into();
    assert_eq!(
        code_of(shim.client.pids(ctx(), &pids)),
        ttrpc::Code::NOT_FOUND
    );
    let mut stats = StatsRequest::new();
    stats.id = "nope".into();
    assert_eq!(
        code_of(shim.client.stats(ctx(), &stats)),
        ttrpc::Code::NOT_FOUND
    );

    // A restore from an image that does not exist is bad input, refused at Create.
    let mut restore = create_request(&harness, &task, None);
    restore.checkpoint = harness.tmp.path().join("checkpoint").display().to_string();
    assert_eq!(
        code_of(shim.client.create(ctx(), &restore)),
        ttrpc::Code::INVALID_ARGUMENT
    );
    assert_eq!(code_of(state(&shim, &task.id, "")), ttrpc::Code::NOT_FOUND);

    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn failed_create_leaves_nothing_and_frees_the_id() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("bad", &["/no/such/binary"]);
    let shim = harness.start_shim(&task);
    let failed = shim
        .client
        .create(ctx(), &create_request(&harness, &task, None));
    let ttrpc::Error::RpcStatus(status) = failed.unwrap_err() else {
        panic!("not a status")
    };
    assert_eq!(status.code.enum_value(), Ok(ttrpc::Code::UNKNOWN));
    assert!(
        status.message.starts_with("OCI runtime create failed"),
        "{}",
        status.message
    );
    assert_eq!(code_of(state(&shim, &task.id, "")), ttrpc::Code::NOT_FOUND);
    assert_eq!(harness.runc_containers(), Vec::<String>::new());
    shutdown(&shim);
    harness.assert_clean(&shim);
}

/// Bad input containerd can send: options whose bytes are not the message their type URL
/// names, and a bundle that does not exist. Each gets a clear error with the right code, and
/// neither leaves a container, mount or runc state behind.
#[test]
fn malformed_options_and_missing_bundle_are_refused_cleanly() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("badinput", &["true"]);
    let shim = harness.start_shim(&task);

    let mut garbled = create_request(&harness, &task, None);
    let mut options = protobuf::well_known_types::any::Any::new();
    options.type_url = "containerd.runc.v1.Options".into();
    options.value = vec![0xff, 0xff, 0xff];
    garbled.options = protobuf::MessageField::some(options);
    let refused = shim.client.create(ctx(), &garbled);
    assert!(
        format!("{refused:?}").contains("runtime options"),
        "{refused:?}"
    );
    assert_eq!(code_of(refused), ttrpc::Code::INVALID_ARGUMENT);

    let mut nowhere = create_request(&harness, &task, None);
    nowhere.bundle = "/nonexistent/wren-bundle".into();
    let refused = shim.client.create(ctx(), &nowhere);
    assert!(
        format!("{refused:?}").contains("/nonexistent/wren-bundle"),
        "{refused:?}"
    );

    assert_eq!(code_of(state(&shim, &task.id, "")), ttrpc::Code::NOT_FOUND);
    assert_eq!(harness.runc_containers(), Vec::<String>::new());
    shutdown(&shim);
    harness.assert_clean(&shim);
}
