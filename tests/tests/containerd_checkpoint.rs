//! Checkpoint and restore of a counter through a private containerd driven by `ctr`, for the
//! Go shim (the reference) and wren.
//!
//! `ctr task checkpoint --image-path` dumps the task through the shim's Checkpoint RPC, with
//! and without `--exit`. ctr 1.6 restores only from a checkpoint *image* of an image-based
//! container (`ctr containers checkpoint --task` + `ctr containers restore --live`), which a
//! `--rootfs` container cannot make; so the dumped image is restored by the same shim binary
//! through `wrenctl run --checkpoint`, with the bundle containerd wrote, which sends the shim
//! the Create (with `checkpoint`) and Start containerd's restore path sends.
//!
//! ctr sends its checkpoint options (`--exit`, `--image-path`) only to a runtime named
//! `io.containerd.runc.*`, and containerd 1.6 honours an image path only for those names; so
//! wren's runs here install it as an operator replacing the Go shim in place would: as
//! `containerd-shim-runc-v2`, first on containerd's PATH (each scenario checks that wren's
//! binary served the task).
//!
//! Needs a working CRIU (`wren_tests::criu_works`): where `criu check` fails (this project's
//! hybrid cgroup host) a visible `SKIP` follows the error path (a checkpoint failure naming
//! criu, the task still running and counting, nothing leaked); under `WREN_TESTS_CRIU=1` (the
//! cgroup v2 VM lane) a failing `criu check` fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE};
use wren_tests::{Containerd, Runtime};

const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done",
];
const OUTPUT_BOUND: Duration = Duration::from_secs(30);

wren_tests::per_runtime!(
    checkpoint_exit_then_restore_keeps_counting,
    checkpoint_leave_running_keeps_counting,
);

/// A private containerd whose `io.containerd.runc.v2` is `rt`'s shim; for wren, with the temp
/// dir holding its alias, which must outlive the containerd.
fn start_containerd(rt: Runtime) -> (Containerd, Option<tempfile::TempDir>) {
    match rt {
        Runtime::Go => (Containerd::start(Runtime::Go), None),
        Runtime::Wren => {
            let wren = wren_tests::workspace_bin("containerd-shim-wren-v2");
            let alias_dir = tempfile::Builder::new()
                .prefix("wren-as-runc-")
                .tempdir()
                .expect("create the alias dir");
            let alias = alias_dir.path().join("containerd-shim-runc-v2");
            std::os::unix::fs::symlink(&wren, alias).expect("link wren as runc's shim");
            let dirs = vec![alias_dir.path().to_path_buf()];
            (
                Containerd::start_with_shim_dirs(Runtime::Go, dirs),
                Some(alias_dir),
            )
        }
    }
}

/// Asserts that the shim serving task `id` (its init's parent) runs `rt`'s binary.
fn assert_served_by(cd: &Containerd, id: &str, rt: Runtime) {
    let pid = cd.task_pid(id).expect("a running task has a pid");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // `pid (comm) state ppid …`: comm may hold spaces, so count from its closing paren.
    let after_comm = &stat[stat.rfind(')').expect("comm ends") + 2..];
    let shim_pid = after_comm.split(' ').nth(1).expect("ppid field");
    let exe = std::fs::read_link(format!("/proc/{shim_pid}/exe")).expect("read shim exe");
    assert_eq!(exe, PathBuf::from(shim_binary(rt)), "the shim serving {id}");
}

/// A detached counter whose output goes to `<scratch>/<id>.log`; returns the log path.
fn run_counter(cd: &Containerd, id: &str) -> PathBuf {
    let log = cd.scratch("logs").join(format!("{id}.log"));
    let uri = format!("file://{}", log.display());
    let mut command = cd.run_command(&["-d", "--log-uri", &uri], id, COUNTER);
    let output = run_with_deadline(command.stdin(Stdio::null()), CTR_DEADLINE);
    cd.expect_success(&output, &format!("ctr run -d {id}"));
    cd.wait_for_status(id, "RUNNING");
    log
}

/// The numbers in `log`, read until there are more than `at_least`.
fn numbers(log: &Path, at_least: usize) -> Vec<u64> {
    let deadline = Instant::now() + OUTPUT_BOUND;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let parsed: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if parsed.len() > at_least {
            return parsed;
        }
        assert!(
            Instant::now() < deadline,
            "{} stalled: {text:?}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scenario_name(rt: Runtime, scenario: &str) -> String {
    let shim = match rt {
        Runtime::Go => "go_shim",
        Runtime::Wren => "wren_shim",
    };
    format!("containerd_checkpoint::{shim}::{scenario}")
}

/// Where CRIU cannot work: the checkpoint fails naming criu and the task keeps counting.
fn checkpoint_fails_and_task_goes_on(cd: &Containerd, id: &str, log: &Path, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("criu"),
        "expected a checkpoint failure naming criu: {}",
        output_text(output)
    );
    assert_eq!(cd.task_status(id).as_deref(), Some("RUNNING"));
    let before = numbers(log, 0).len();
    numbers(log, before);
    cd.kill_and_remove(id);
    cd.assert_no_leaks();
}

/// `--exit`: the dump stops the task; the image, restored by the same shim, goes on counting
/// from the last number the task printed, its output still flowing.
fn checkpoint_exit_then_restore_keeps_counting(rt: Runtime) {
    let (cd, _alias) = start_containerd(rt);
    let id = cd.new_id("ckptexit");
    let log = run_counter(&cd, &id);
    assert_served_by(&cd, &id, rt);
    numbers(&log, 3);
    let image = cd.scratch("image").display().to_string();
    // The bundle goes with the task: keep a copy of the spec to restore with.
    let bundle = cd.scratch("restored-bundle");
    let spec = cd
        .state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(cd.namespace())
        .join(&id)
        .join("config.json");
    std::fs::copy(&spec, bundle.join("config.json")).expect("copy containerd's spec");

    let output = cd.ctr(&["tasks", "checkpoint", "--exit", "--image-path", &image, &id]);
    let scenario = scenario_name(rt, "checkpoint_exit_then_restore_keeps_counting");
    if !wren_tests::criu_works(&scenario) {
        checkpoint_fails_and_task_goes_on(&cd, &id, &log, &output);
        return;
    }
    cd.expect_success(&output, "ctr task checkpoint --exit");
    cd.wait_for_status(&id, "STOPPED");
    let last = *numbers(&log, 0).last().expect("numbers before the dump");
    cd.kill_and_remove(&id);

    // wrenctl's state holds unix sockets: /run's tmpfs, as the VM lane's /tmp (9p) cannot.
    let state_dir = tempfile::Builder::new()
        .prefix("wren-wrenctl-")
        .tempdir_in("/run")
        .unwrap();
    let state = state_dir.path();
    let restored_id = format!("{id}-restored");
    let run = wrenctl(
        state,
        &[
            "run",
            "-d",
            "--name",
            &restored_id,
            "--shim",
            &shim_binary(rt),
            "--checkpoint",
            &image,
            "--bundle",
            &bundle.display().to_string(),
        ],
    );
    assert!(run.status.success(), "restore: {}", output_text(&run));
    let restored_log = state.join(format!("wrenctl/{restored_id}/output.log"));
    let restored = numbers(&restored_log, 3);
    eprintln!("{scenario}: counted to {last} before the dump; restored: {restored:?}");
    assert_eq!(restored[0], last + 1, "go on from {last}: {restored:?}");
    assert!(
        restored.windows(2).all(|w| w[1] == w[0] + 1),
        "{restored:?}"
    );
    let removed = wrenctl(state, &["delete", "-f", &restored_id]);
    assert!(removed.status.success(), "{}", output_text(&removed));
    cd.assert_no_leaks();
}

/// Without `--exit` the dump leaves the task running, still counting, and writes an image.
fn checkpoint_leave_running_keeps_counting(rt: Runtime) {
    let (cd, _alias) = start_containerd(rt);
    let id = cd.new_id("ckptlive");
    let log = run_counter(&cd, &id);
    assert_served_by(&cd, &id, rt);
    numbers(&log, 3);
    let image = cd.scratch("image");
    let image_arg = image.display().to_string();
    let output = cd.ctr(&["tasks", "checkpoint", "--image-path", &image_arg, &id]);
    let scenario = scenario_name(rt, "checkpoint_leave_running_keeps_counting");
    if !wren_tests::criu_works(&scenario) {
        checkpoint_fails_and_task_goes_on(&cd, &id, &log, &output);
        return;
    }
    cd.expect_success(&output, "ctr task checkpoint");
    assert!(
        image.join("inventory.img").exists(),
        "no CRIU image written"
    );
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));
    let dumped = numbers(&log, 0).len();
    let after = numbers(&log, dumped + 2);
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

fn shim_binary(rt: Runtime) -> String {
    match rt {
        Runtime::Go => "/usr/bin/containerd-shim-runc-v2".to_owned(),
        Runtime::Wren => wren_tests::workspace_bin("containerd-shim-wren-v2")
            .display()
            .to_string(),
    }
}

fn wrenctl(state: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(wren_tests::workspace_bin("wrenctl"));
    command.arg("--state").arg(state).args(args);
    run_with_deadline(command.stdin(Stdio::null()), CTR_DEADLINE)
}
