//! Failures come back typed, with the runtime's own message and a kind the shim maps
//! to an API status without reading text.

mod common;

use common::{Fixture, Flavor, FLAVORS};
use wren_runc_driver::{CreateOptions, DeleteMode, Error, ErrorKind, KillScope, Status, Stdio};
use wren_tests::unique_id;

#[test]
fn a_failed_create_carries_the_runtime_message_from_its_log() {
    wren_tests::require_root!();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["nope"]);
    let id = unique_id("wren-rd-nope");
    let options = CreateOptions {
        bundle: bundle.path.clone(),
        pid_file: bundle.path.join("init.pid"),
        console_socket: None,
        no_pivot: false,
        no_new_keyring: false,
        stdio: Stdio::null(),
    };
    let err = fx.runc.create(&id, options).unwrap_err();
    let Error::Failed {
        status, message, ..
    } = &err
    else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(status.status, 1);
    // stderr went to /dev/null (the container's stdio): this came from log.json.
    assert_eq!(
        message,
        "runc create failed: unable to start container process: \
         exec: \"nope\": executable file not found in $PATH"
    );
    assert_eq!(err.kind(), ErrorKind::Other);
    assert!(err
        .to_string()
        .starts_with(&format!("create {id} failed with exit code 1: runc")));
    fx.assert_clean();
}

#[test]
fn an_existing_id_is_already_exists() {
    wren_tests::require_root!();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["sleep", "1000"]);
    let id = unique_id("wren-rd-dup");
    fx.create_or_skip(
        "an_existing_id_is_already_exists",
        &id,
        &bundle,
        Stdio::null(),
    )
    .unwrap();
    let err = fx.create_or_skip_err(&id, &bundle);
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    fx.runc.delete(&id, DeleteMode::Force).unwrap();
    fx.assert_clean();
}

#[test]
fn unknown_containers_are_not_found_on_every_runtime() {
    wren_tests::require_root!();
    for flavor in FLAVORS {
        let fx = Fixture::new(flavor);
        let id = unique_id("wren-rd-ghost");
        let state = fx.runc.state(&id).unwrap_err();
        assert_eq!(
            state.kind(),
            ErrorKind::NotFound,
            "{flavor:?} state: {state}"
        );
        let kill = fx
            .runc
            .kill(&id, libc::SIGKILL, KillScope::Init)
            .unwrap_err();
        assert_eq!(kill.kind(), ErrorKind::NotFound, "{flavor:?} kill: {kill}");
        let delete = fx.runc.delete(&id, DeleteMode::Stopped).unwrap_err();
        assert_eq!(
            delete.kind(),
            ErrorKind::NotFound,
            "{flavor:?} delete: {delete}"
        );
        fx.assert_clean();
    }
}

#[test]
fn signalling_a_stopped_container_is_not_running() {
    wren_tests::require_root!();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["true"]);
    let id = unique_id("wren-rd-stopped");
    let (stdout_r, stdout_w) = common::pipe();
    let stdio = Stdio {
        stdout: Some(stdout_w),
        ..Stdio::null()
    };
    fx.create_or_skip("signalling_a_stopped_container", &id, &bundle, stdio)
        .unwrap();
    fx.runc.start(&id).unwrap();
    assert_eq!(
        common::read_to_end(stdout_r),
        "",
        "EOF: the container has exited"
    );
    common::wait_for_status(&fx.runc, &id, Status::Stopped);

    for err in [
        fx.runc
            .kill(&id, libc::SIGKILL, KillScope::Init)
            .unwrap_err(),
        fx.runc.pause(&id).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotRunning, "{err}");
        assert_eq!(err.runtime_message(), Some("container not running"));
    }
    fx.runc.delete(&id, DeleteMode::Stopped).unwrap();
    fx.assert_clean();
}

#[test]
fn a_missing_runtime_binary_is_a_spawn_error() {
    let mut fx = Fixture::new(Flavor::Runc);
    let config = wren_runc_driver::RuncConfig {
        binary: fx.dir.path().join("no-such-runtime"),
        ..fx.runc.config().clone()
    };
    fx.runc = wren_runc_driver::Runc::new(config, fx.spawner.clone());
    let err = fx.runc.state("anything").unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Other);
}
