//! Checkpoint/restore and features. CRIU cannot initialise on this kernel ("vdso:
//! Unexpected rt vDSO area bounds"), so only the error path is provable here: it must be
//! typed, carry CRIU's story, and leave the container running and deletable.

mod common;

use common::{Fixture, Flavor};
use wren_runc_driver::{
    AfterCheckpoint, CheckpointOptions, CriuOptions, DeleteMode, Error, RestoreOptions, Status,
    Stdio,
};
use wren_tests::unique_id;

#[test]
fn a_failed_checkpoint_is_typed_and_leaves_the_container_running() {
    wren_tests::require_root!();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["sleep", "1000"]);
    let id = unique_id("wren-rd-ckpt");
    let init = fx
        .create_or_skip("a_failed_checkpoint", &id, &bundle, Stdio::null())
        .unwrap();
    fx.runc.start(&id).unwrap();

    let images = fx.dir.path().join("images");
    let work = fx.dir.path().join("criu-work");
    let options = CheckpointOptions {
        criu: CriuOptions {
            image_path: images.clone(),
            work_path: Some(work.clone()),
            file_locks: true,
            ..CriuOptions::default()
        },
        after: AfterCheckpoint::LeaveRunning,
    };
    match fx.runc.checkpoint(&id, &options) {
        Err(Error::Failed { message, .. }) => {
            assert!(message.contains("criu failed"), "{message}");
            // The message points at CRIU's own log in the work path we chose.
            assert!(message.contains(&work.display().to_string()), "{message}");
        }
        // A host whose CRIU works must produce an image instead.
        Ok(()) => assert!(images.join("inventory.img").exists()),
        Err(other) => panic!("unexpected {other:?}"),
    }

    let state = fx.runc.state(&id).unwrap();
    assert_eq!((state.status, state.pid), (Status::Running, init));
    fx.runc.delete(&id, DeleteMode::Force).unwrap();
    fx.assert_clean();
}

#[test]
fn a_restore_from_a_missing_image_is_typed_and_leaves_nothing() {
    wren_tests::require_root!();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["sleep", "1000"]);
    let id = unique_id("wren-rd-restore");
    let options = RestoreOptions {
        criu: CriuOptions {
            image_path: fx.dir.path().join("no-images"),
            work_path: Some(fx.dir.path().join("restore-work")),
            ..CriuOptions::default()
        },
        bundle: bundle.path.clone(),
        pid_file: bundle.path.join("init.pid"),
        console_socket: None,
        no_pivot: false,
        stdio: Stdio::null(),
    };
    let err = fx.runc.restore(&id, options).unwrap_err();
    assert!(matches!(err, Error::Failed { .. }), "{err:?}");
    assert!(!err.runtime_message().unwrap_or_default().is_empty());
    fx.assert_clean();
}

#[test]
fn features_are_typed_and_raw() {
    let fx = Fixture::new(Flavor::Runc);
    let features = fx.runc.features().unwrap();
    let annotations = features.annotations.clone().unwrap_or_default();
    assert!(
        annotations.contains_key("org.opencontainers.runc.version"),
        "{annotations:?}"
    );
    let linux = features.linux.as_ref().unwrap();
    assert!(linux
        .namespaces
        .as_ref()
        .unwrap()
        .iter()
        .any(|ns| ns == "pid"));
    assert!(
        linux.other.contains_key("seccomp"),
        "unmodelled fields are kept"
    );
    // The raw bytes are the runtime's document, ready to forward unchanged.
    let raw: serde_json::Value = serde_json::from_slice(&features.raw).unwrap();
    assert_eq!(
        raw["annotations"]["org.opencontainers.runc.version"],
        annotations["org.opencontainers.runc.version"].as_str()
    );
    fx.assert_clean();
}
