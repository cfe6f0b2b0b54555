//! The example runtime `containerd-shim-nsbox-v2` (`io.containerd.nsbox.v2`, built by
//! `cargo build -p wren-shim --examples`) under a private containerd 1.6, driven by `ctr`:
//! a runtime written on the wren framework works with containerd as it is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wren_tests::containerd::{output_text, STATE_DEADLINE};
use wren_tests::{Containerd, Runtime};

const NSBOX: &str = "io.containerd.nsbox.v2";

/// `target/<profile>/examples/containerd-shim-nsbox-v2`, next to this test's
/// `target/<profile>/deps/`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile.join("examples").join("containerd-shim-nsbox-v2");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p wren-shim --examples` first",
        path.display()
    );
    path
}

/// A private containerd that finds `containerd-shim-nsbox-v2` on its PATH. Its `Runtime` only
/// picks the runc shim `run_command` would use; every `ctr run` below names nsbox itself.
fn start_containerd() -> Containerd {
    let examples = example_binary().parent().expect("examples dir").to_owned();
    Containerd::start_with_shim_dirs(Runtime::Go, vec![examples])
}

/// `ctr run --runtime io.containerd.nsbox.v2 [flags] --rootfs <busybox> <id> <cmd…>`.
fn nsbox_run(cd: &Containerd, flags: &[&str], id: &str, cmd: &[&str]) -> std::process::Output {
    cd.run_on_rootfs(NSBOX, flags, id, cmd)
}

#[test]
fn attached_run_prints_and_exits_3() {
    wren_tests::require_root!();
    let cd = start_containerd();
    let id = cd.new_id("nsbox-run");
    let output = nsbox_run(&cd, &["--rm"], &id, &["sh", "-c", "echo hi; exit 3"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}\n--- containerd log ---\n{}",
        output_text(&output),
        cd.log()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
    cd.assert_no_leaks();
}

/// The payload is pid 1 of its namespace, where only a trapped signal counts (as under
/// runc): it traps SIGTERM, and says so through a file in the shared rootfs.
#[test]
fn detached_run_killed_with_sigterm() {
    wren_tests::require_root!();
    let cd = start_containerd();
    let events = cd.events();
    let id = cd.new_id("nsbox-term");
    let ready = format!("/tmp/{id}.ready");
    let script = format!("trap 'exit 143' TERM; touch {ready}; sleep 1000 & wait");
    let output = nsbox_run(&cd, &["-d", "--null-io"], &id, &["sh", "-c", &script]);
    cd.expect_success(&output, "ctr run -d");
    cd.wait_for_status(&id, "RUNNING");
    let ready_on_host = cd.rootfs().join(ready.trim_start_matches('/'));
    wait_for_file(&ready_on_host);
    std::fs::remove_file(&ready_on_host).expect("remove the ready file");

    cd.ctr_ok(&["tasks", "kill", "--signal", "SIGTERM", &id]);
    assert_eq!(
        events.wait_exit_status(&id),
        143,
        "events:\n{}",
        events.raw()
    );
    cd.wait_for_status(&id, "STOPPED");
    cd.ctr_ok(&["tasks", "rm", &id]);
    cd.ctr_ok(&["containers", "rm", &id]);
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    events.wait_for("/tasks/delete", |body| body["container_id"] == id.as_str());
    assert_eq!(
        events.task_topics(&id),
        expected,
        "events:\n{}",
        events.raw()
    );
    cd.assert_no_leaks();
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + STATE_DEADLINE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
