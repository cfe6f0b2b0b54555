//! The `delete` action runs `runc delete --force` only when runc may hold state for the task:
//! containerd runs the action after every clean removal too, when there is none left.

mod runc_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use protobuf::{Message, MessageField};
use runc_support::{create_request, ctx, start, Harness, NAMESPACE};
use wren_shim_protocol::task::DeleteResponse;

/// Installs `<dir>/runc`, which appends its argv to `calls` and then runs the real runc. It
/// is named `runc` because the shim skips the call only for runtimes it knows the state
/// layout of.
fn recording_runc(dir: &Path, calls: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let wrapper = dir.join("runc");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec runc \"$@\"\n",
        calls.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

/// How many `delete --force <id>` calls reached the wrapper.
fn deletes(calls: &Path, id: &str) -> usize {
    let recorded = std::fs::read_to_string(calls).unwrap_or_default();
    recorded
        .lines()
        .filter(|call| call.ends_with(&format!(" delete --force {id}")))
        .count()
}

#[test]
fn delete_action_runs_runc_only_while_runc_has_state() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("skip", &["sleep", "1000"]);
    let calls = harness.tmp.path().join("runc.calls");
    let wrapper = recording_runc(&harness.tmp.path().join("bin"), &calls);
    let shim = harness.start_shim(&task);
    let mut options = wren_shim_protocol::runc::Options::new();
    options.root = harness.runc_root().display().to_string();
    options.binary_name = wrapper;
    let mut create = create_request(&harness, &task, None);
    create.options = MessageField::some(wren_shim_protocol::any::pack(&options).unwrap());
    let created = shim.client.create(ctx(), &create).unwrap();
    start(&shim, &task.id, "").unwrap();
    harness.kill_shim(shim.pid);
    assert_eq!(harness.runc_containers(), std::slice::from_ref(&task.id));
    let delete_action = || {
        let output = harness.delete_action(&task);
        assert!(output.status.success(), "{output:?}");
        let response = DeleteResponse::parse_from_bytes(&output.stdout).unwrap();
        assert_eq!((response.pid, response.exit_status), (created.pid, 137));
    };

    // runc's state exists: runc (through the wrapper) removes it.
    delete_action();
    assert_eq!(deletes(&calls, &task.id), 1, "runc delete ran");
    assert_eq!(harness.runc_containers(), Vec::<String>::new());

    // Nothing left for runc: the action succeeds without it.
    delete_action();
    assert_eq!(deletes(&calls, &task.id), 1, "runc delete skipped");

    // Something there that is not runc's state is still runc's to judge.
    let state = harness.runc_root().join(NAMESPACE).join(&task.id);
    std::os::unix::fs::symlink(harness.tmp.path().join("nowhere"), &state).unwrap();
    delete_action();
    assert_eq!(
        deletes(&calls, &task.id),
        2,
        "runc delete ran for a symlink"
    );
    let _ = std::fs::remove_file(&state);

    // The killed shim cannot remove its socket: containerd's next start replaces it.
    let _ = std::fs::remove_file(shim.socket());
    harness.assert_clean(&shim);
}
