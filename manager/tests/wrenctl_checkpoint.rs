//! `wrenctl checkpoint` and `wrenctl run --checkpoint` against real shims (root only): a
//! counter is dumped with `--exit`, restored under a new name and goes on counting where it
//! stopped, its output still flowing. Needs a working CRIU (`wren_tests::criu_works`: a
//! visible skip on hosts where `criu check` fails, a failure under `WREN_TESTS_CRIU=1`);
//! without one, the error paths are checked instead.

mod common;

use common::{text, wrenctl};

use std::path::Path;
use std::time::{Duration, Instant};

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";
const OUTPUT_BOUND: Duration = Duration::from_secs(30);

fn run_counter(state: &Path, shim: &str, rootfs: &Path, name: &str, checkpoint: Option<&Path>) {
    let mut args = vec!["run", "-d", "--name", name, "--shim", shim];
    let image = checkpoint.map(|dir| dir.display().to_string());
    if let Some(image) = &image {
        args.extend(["--checkpoint", image]);
    }
    let rootfs = rootfs.display().to_string();
    args.extend(["--rootfs", &rootfs, "--", "sh", "-c", COUNTER]);
    let out = wrenctl(state, &args);
    assert!(out.status.success(), "run {name}: {}", text(&out.stderr));
}

/// The numbers `name` printed so far, read until there are more than `at_least`.
fn numbers(state: &Path, name: &str, at_least: usize) -> Vec<u64> {
    let log = state.join(format!("wrenctl/{name}/output.log"));
    let deadline = Instant::now() + OUTPUT_BOUND;
    loop {
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let parsed: Vec<u64> = output
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if parsed.len() > at_least {
            return parsed;
        }
        assert!(Instant::now() < deadline, "{name} stalled: {output:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(state: &Path, name: &str) -> String {
    let list = text(&wrenctl(state, &["list"]).stdout);
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("absent")
        .to_owned()
}

fn wait_for_status(state: &Path, name: &str, expected: &str) {
    let deadline = Instant::now() + OUTPUT_BOUND;
    while status(state, name) != expected {
        assert!(Instant::now() < deadline, "{name} never became {expected}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remove(state: &Path, name: &str) {
    let out = wrenctl(state, &["delete", "-f", name]);
    assert!(out.status.success(), "delete {name}: {}", text(&out.stderr));
}

/// wrenctl's state holds unix sockets: keep it on /run's tmpfs, as the VM lane's /tmp (a 9p
/// share) cannot hold them.
fn socket_capable_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wren-wrenctl-")
        .tempdir_in("/run")
        .unwrap()
}

fn checkpoint_then_restore_keeps_counting(shim: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state_dir = socket_capable_dir();
    let state = state_dir.path().join("state");
    let image = tmp.path().join("image");
    run_counter(&state, shim, &rootfs, "count", None);
    numbers(&state, "count", 3);

    let image_arg = image.display().to_string();
    let dump = wrenctl(
        &state,
        &["checkpoint", "--exit", "--image-path", &image_arg, "count"],
    );
    let test = format!("wrenctl_checkpoint::checkpoint_then_restore_keeps_counting ({shim})");
    if !wren_tests::criu_works(&test) {
        // A plain error naming criu, and the container carries on.
        assert_eq!(dump.status.code(), Some(125), "{}", text(&dump.stderr));
        assert!(
            text(&dump.stderr).contains("criu"),
            "{}",
            text(&dump.stderr)
        );
        assert_eq!(status(&state, "count"), "running");
        remove(&state, "count");
        restore_of_an_empty_image_fails_cleanly(&state, shim, &rootfs);
        return;
    }
    assert!(dump.status.success(), "checkpoint: {}", text(&dump.stderr));
    wait_for_status(&state, "count", "stopped");
    let last = *numbers(&state, "count", 0).last().unwrap();
    remove(&state, "count");

    run_counter(&state, shim, &rootfs, "again", Some(&image));
    let restored = numbers(&state, "again", 3);
    assert_eq!(restored[0], last + 1, "go on from {last}: {restored:?}");
    assert!(
        restored.windows(2).all(|w| w[1] == w[0] + 1),
        "{restored:?}"
    );
    assert_eq!(status(&state, "again"), "running");
    remove(&state, "again");
    let list = text(&wrenctl(&state, &["list"]).stdout);
    assert_eq!(list.lines().count(), 1, "{list}");
}

/// An image directory without a checkpoint: Start fails with the runtime's restore error,
/// wrenctl exits 125, and nothing is left.
fn restore_of_an_empty_image_fails_cleanly(state: &Path, shim: &str, rootfs: &Path) {
    let empty = state.with_file_name("empty-image");
    std::fs::create_dir_all(&empty).unwrap();
    let empty_arg = empty.display().to_string();
    let rootfs_arg = rootfs.display().to_string();
    let out = wrenctl(
        state,
        &[
            "run",
            "--name",
            "bad",
            "--shim",
            shim,
            "--checkpoint",
            &empty_arg,
            "--rootfs",
            &rootfs_arg,
            "--",
            "sh",
            "-c",
            COUNTER,
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("OCI runtime restore failed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status(state, "bad"), "absent");
}

common::test_every_shim!(checkpoint_then_restore_keeps_counting);
