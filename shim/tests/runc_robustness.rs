//! Requests and clients that containerd would not send, answered as a stricter client
//! expects: bad bundle paths refused, Shutdown answered before the daemon exits, and an
//! exit whose output has nobody left to read it answered without waiting for a drain.

mod runc_support;

use runc_support::{code_of, create_request, ctx, Harness};

#[test]
fn create_refuses_bundles_that_are_not_absolute_directories() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("bundle", &["true"]);
    let shim = harness.start_shim(&task);
    let file = harness.tmp.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let bad = [
        String::new(),
        "relative/bundle".to_owned(),
        ".".to_owned(),
        harness.tmp.path().join("missing").display().to_string(),
        file.display().to_string(),
    ];
    for bundle in bad {
        let mut request = create_request(&harness, &task, None);
        request.bundle.clone_from(&bundle);
        let answer = shim.client.create(ctx(), &request);
        assert_eq!(
            code_of(answer),
            ttrpc::Code::INVALID_ARGUMENT,
            "bundle {bundle:?}"
        );
    }
    assert_eq!(harness.runc_containers(), Vec::<String>::new());
    // The refusals reserved nothing: the id is still free for a good bundle.
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    runc_support::kill_task(&shim, &task.id, "", libc::SIGKILL as u32).unwrap();
    runc_support::wait(&shim, &task.id, "").unwrap();
    runc_support::delete(&shim, &task.id, "").unwrap();
    runc_support::shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn shutdown_is_answered_before_the_daemon_exits() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    // The answer used to race the exit; one shim rarely shows it, twenty nearly always did.
    for _ in 0..20 {
        let task = harness.task("shutdown", &["true"]);
        let shim = harness.start_shim(&task);
        let answer = shim
            .client
            .shutdown(ctx(), &wren_shim_protocol::task::ShutdownRequest::new());
        assert!(answer.is_ok(), "Shutdown unanswered: {answer:?}");
        harness.wait_gone(shim.pid);
    }
}
