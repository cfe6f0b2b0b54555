//! wrenctl end to end against real shims (root only).

mod common;

use common::{text, wrenctl};

/// An attached run prints the container's output and exits with its code; --rm leaves no state.
fn attached_run_passes_exit_code(shim: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    let out = wrenctl(
        &state,
        &[
            "run",
            "--rm",
            "--shim",
            shim,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "oops\n");
    let list = wrenctl(&state, &["list"]);
    assert_eq!(
        text(&list.stdout).lines().count(),
        1,
        "only the header: {}",
        text(&list.stdout)
    );
}

/// The overlay rootfs mount: the shim mounts it, writes land in the upper dir, not in the rootfs.
fn overlay_rootfs_keeps_lower_clean(shim: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    let out = wrenctl(
        &state,
        &[
            "run",
            "--rm",
            "--name",
            "ovl",
            "--shim",
            shim,
            "--rootfs-mount",
            "overlay",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo x > /written && cat /written",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "x\n");
    assert!(
        !rootfs.join("written").exists(),
        "write reached the lower layer"
    );
}

/// A detached container is found again by list, ps, exec, kill and delete.
fn detached_run_is_found_again(shim: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    let out = wrenctl(
        &state,
        &[
            "run",
            "-d",
            "--name",
            "bg",
            "--shim",
            shim,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 1000",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bg\n");

    let list = text(&wrenctl(&state, &["list"]).stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("bg ") && l.contains("running")),
        "{list}"
    );
    let ps = wrenctl(&state, &["ps", "bg"]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    assert_eq!(text(&ps.stdout).lines().count(), 2, "{}", text(&ps.stdout));
    let exec = wrenctl(
        &state,
        &["exec", "bg", "--", "sh", "-c", "echo in-exec; exit 5"],
    );
    assert_eq!(exec.status.code(), Some(5), "{}", text(&exec.stderr));
    assert_eq!(text(&exec.stdout), "in-exec\n");
    let stats = wrenctl(&state, &["stats", "bg"]);
    assert!(
        text(&stats.stdout).contains("memory usage"),
        "{}",
        text(&stats.stderr)
    );

    let delete_running = wrenctl(&state, &["delete", "bg"]);
    assert!(
        !delete_running.status.success(),
        "deleting a running container must fail"
    );
    let kill = wrenctl(&state, &["kill", "-s", "KILL", "bg"]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let mut deleted = wrenctl(&state, &["delete", "bg"]);
    // The exit may not be processed yet right after Kill returns; delete -f waits for it.
    if !deleted.status.success() {
        deleted = wrenctl(&state, &["delete", "-f", "bg"]);
    }
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let log = std::fs::read_to_string(state.join("wrenctl/bg/output.log"));
    assert!(log.is_err(), "state dir removed with the container");
    let list = text(&wrenctl(&state, &["list"]).stdout);
    assert_eq!(list.lines().count(), 1, "{list}");
}

/// A runtime binary that does not exist (runtime options `binary_name`, as containerd passes
/// `BinaryName`): a plain error naming it, wrenctl's own exit code 125, and no state, shim or
/// container left behind.
fn missing_runtime_binary_fails_cleanly(shim: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    let out = wrenctl(
        &state,
        &[
            "run",
            "--rm",
            "--shim",
            shim,
            "--runtime-options",
            "binary_name=/nonexistent/runc",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "true",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(stderr.contains("/nonexistent/runc"), "stderr: {stderr}");
    let list = text(&wrenctl(&state, &["list"]).stdout);
    assert_eq!(list.lines().count(), 1, "only the header: {list}");
    let address = state.join("wren.sock").display().to_string();
    assert!(
        shim_processes_with(&address).is_empty(),
        "a shim for {address} outlived the failed run"
    );
}

/// Live processes whose command line mentions `needle`.
fn shim_processes_with(needle: &str) -> Vec<libc::pid_t> {
    wren_tests::live_processes()
        .into_iter()
        .filter(|process| process.argv.iter().any(|arg| arg.contains(needle)))
        .map(|process| process.pid)
        .collect()
}

#[test]
fn help_explains_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    for command in [
        "run", "exec", "ps", "kill", "stop", "pause", "resume", "stats", "events", "delete", "list",
    ] {
        let out = wrenctl(tmp.path(), &[command, "--help"]);
        assert!(out.status.success());
        assert!(
            text(&out.stdout).starts_with(&format!("usage: wrenctl {command}")),
            "{command}"
        );
    }
    let bad = wrenctl(tmp.path(), &["frobnicate"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(text(&bad.stderr).contains("unknown command"));
}

common::test_every_shim!(
    missing_runtime_binary_fails_cleanly,
    attached_run_passes_exit_code,
    overlay_rootfs_keeps_lower_clean,
    detached_run_is_found_again
);
