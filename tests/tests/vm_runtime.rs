//! The VM-backed example runtime `containerd-shim-wrenvm-v2` (`io.containerd.wrenvm.v2`,
//! crate `wren-shim-vm`): containers in a QEMU microVM, under a private containerd driven by
//! `ctr` and under `wrenctl`. TCG boots take seconds, so each test boots as few VMs as it
//! can and checks several things in each.
//!
//! Skips (visibly; under CI=true they fail) only where QEMU or a kernel cannot be found.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE, STATE_DEADLINE};
use wren_tests::{Containerd, Runtime};

const WRENVM: &str = "io.containerd.wrenvm.v2";
const SHIM: &str = "containerd-shim-wrenvm-v2";

/// Held by each test while its VMs run. TCG boots of two VMs at once hang now and then
/// before the guest kernel's first message (cause not found): the runtime boots again after
/// its boot timeout, but two hangs in a row outlast a test's deadline. One at a time, they
/// do not hang.
fn one_vm_test_at_a_time() -> MutexGuard<'static, ()> {
    static VMS: Mutex<()> = Mutex::new(());
    VMS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shim, or `None` after a visible skip when no VM can run here.
fn vm_shim(test: &str) -> Option<PathBuf> {
    let shim = wren_tests::workspace_bin(SHIM);
    let qemu = std::env::var_os("WRENVM_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    let has_qemu = Command::new(&qemu)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_qemu {
        wren_tests::skip(
            test,
            "qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
        );
        return None;
    }
    // Finds the kernel and its modules and builds the cached initramfs: the VM's own probe.
    let probe = Command::new(&shim)
        .arg("__initramfs")
        .output()
        .expect("run the shim");
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr).into_owned();
        if why.contains("no kernel") {
            wren_tests::skip(
                test,
                "no kernel with modules in /boot (apt-get install linux-image-amd64)",
            );
            return None;
        }
        panic!("the initramfs probe failed: {}", output_text(&probe));
    }
    Some(shim)
}

/// QEMU processes started by shims of this containerd (they inherit its TTRPC_ADDRESS).
fn qemus(cd: &Containerd) -> Vec<i32> {
    cd.shim_processes()
        .into_iter()
        .filter(|p| {
            p.argv
                .first()
                .is_some_and(|arg0| arg0.contains("qemu-system"))
        })
        .map(|p| p.pid)
        .collect()
}

/// wrenvm shim daemons of this containerd.
fn vm_shims(cd: &Containerd) -> Vec<i32> {
    cd.shim_processes()
        .into_iter()
        .filter(|p| p.argv.first().is_some_and(|arg0| arg0.contains(SHIM)))
        .map(|p| p.pid)
        .collect()
}

fn ctr_run(cd: &Containerd, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
    cd.run_on_rootfs(WRENVM, flags, id, cmd)
}

fn wait_gone(what: &str, probe: impl Fn() -> Vec<i32>) {
    let deadline = Instant::now() + STATE_DEADLINE;
    while !probe().is_empty() {
        assert!(Instant::now() < deadline, "{what} left: {:?}", probe());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One attached run (its own VM), then a pod of two containers in one VM: exec, pids,
/// stats from the guest's cgroup, SIGKILL, and nothing left once both are deleted.
#[test]
fn containers_run_in_a_microvm_under_containerd() {
    wren_tests::require_root!();
    let _vms = one_vm_test_at_a_time();
    let Some(shim) = vm_shim(module_path!()) else {
        return;
    };
    let cd = Containerd::start_with_shim_dirs(
        Runtime::Go,
        vec![shim.parent().expect("target dir").to_owned()],
    );

    // Attached run: output, stderr and the exit status cross the VM boundary.
    let id = cd.new_id("vm-run");
    let started = Instant::now();
    let output = ctr_run(
        &cd,
        &["--rm"],
        &id,
        &["sh", "-c", "echo hi; echo oops >&2; exit 3"],
    );
    eprintln!("ctr run --rm in a microVM: {:?}", started.elapsed());
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}\n--- containerd log ---\n{}",
        output_text(&output),
        cd.log()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "oops\n");
    wait_gone("QEMU after --rm", || qemus(&cd));

    // A pod: two containers grouped into one shim, so one VM.
    let events = cd.events();
    let pod = cd.new_id("pod");
    let group = format!("io.containerd.runc.v2.group={pod}");
    let (first, second) = (cd.new_id("vm-a"), cd.new_id("vm-b"));
    for id in [&first, &second] {
        let output = ctr_run(
            &cd,
            &["-d", "--null-io", "--annotation", &group],
            id,
            &["sleep", "1000"],
        );
        cd.expect_success(&output, "ctr run -d");
        cd.wait_for_status(id, "RUNNING");
    }
    assert_eq!(vm_shims(&cd).len(), 1, "one shim for the pod");
    assert_eq!(qemus(&cd).len(), 1, "one VM for the pod");

    exec_pids_and_stats(&cd, &first);

    // SIGKILL: 137, each container on its own; the VM outlives the first one.
    for id in [&first, &second] {
        cd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", id]);
        assert_eq!(
            events.wait_exit_status(id),
            137,
            "events:\n{}",
            events.raw()
        );
        cd.wait_for_status(id, "STOPPED");
        cd.ctr_ok(&["tasks", "rm", id]);
        cd.ctr_ok(&["containers", "rm", id]);
        if id == &first {
            assert_eq!(
                qemus(&cd).len(),
                1,
                "the VM serves the second container still"
            );
        }
    }
    // The last Delete stopped the VM; containerd's Shutdown then ends the shim.
    wait_gone("QEMU after the pod", || qemus(&cd));
    wait_gone("wrenvm shims", || vm_shims(&cd));
    cd.assert_no_leaks();
    // containerd's shims use the default run dir; in this test binary only this test does.
    assert_no_vm_dirs(Path::new("/run/wrenvm"));
}

/// Exec (output and status), Pids and Stats of running task `id`.
fn exec_pids_and_stats(cd: &Containerd, id: &str) {
    // Exec: output and exit status.
    let exec = cd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "probe",
        id,
        "sh",
        "-c",
        "echo in-vm; exit 5",
    ]);
    assert_eq!(exec.status.code(), Some(5), "{}", output_text(&exec));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "in-vm\n");

    // Pids are guest pids, listed from the container's guest cgroup.
    let ps = cd.ctr_ok(&["tasks", "ps", id]);
    assert!(ps.lines().count() >= 2, "ctr task ps: {ps}");

    // Stats: the guest cgroup's real numbers.
    let metrics = cd.ctr_ok(&["tasks", "metrics", "--format", "json", id]);
    let metrics: serde_json::Value = serde_json::from_str(&metrics).expect("metrics json");
    let usage = metrics["memory"]["usage"].as_u64().unwrap_or(0);
    let pids = metrics["pids"]["current"].as_u64().unwrap_or(0);
    let cpu = metrics["cpu"]["usage_usec"].as_u64().unwrap_or(0);
    assert!(usage > 0 && pids >= 1 && cpu > 0, "metrics: {metrics:#}");
}

/// `wrenctl run --rm` of the VM shim: output and exit status, and nothing left after.
#[test]
fn wrenctl_runs_a_microvm_container() {
    wren_tests::require_root!();
    let _vms = one_vm_test_at_a_time();
    let Some(shim) = vm_shim(module_path!()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    // The shim inherits wrenctl's environment: a private run dir to check for leftovers.
    let run_dir = tmp.path().join("run");
    let mut command = Command::new(wren_tests::workspace_bin("wrenctl"));
    command
        .env("WRENVM_RUN_DIR", &run_dir)
        .arg("--state")
        .arg(&state)
        .args(["run", "--rm", "--shim"])
        .arg(&shim)
        .arg("--rootfs")
        .arg(&rootfs)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo from-vm; cat /proc/1/comm; exit 4",
        ])
        .stdin(Stdio::null());
    let output = run_with_deadline(&mut command, CTR_DEADLINE);
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    // The container's /proc is the guest's: its pid 1 is the agent, not the host's init.
    assert_eq!(String::from_utf8_lossy(&output.stdout), "from-vm\ninit\n");
    let needle = state.display().to_string();
    let left: Vec<_> = wren_tests::live_processes()
        .into_iter()
        .filter(|p| p.argv.iter().any(|arg| arg.contains(&needle)))
        .map(|p| p.pid)
        .collect();
    assert!(left.is_empty(), "shims outlived the run: {left:?}");
    let mounts = wren_tests::containerd::mounts_under(tmp.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    assert_no_vm_dirs(&run_dir);
}

/// No VM directory (socket, 9p share, logs) and no mount is left in `run_dir`.
fn assert_no_vm_dirs(run_dir: &Path) {
    let mounts = wren_tests::containerd::mounts_under(run_dir);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let left: Vec<_> = std::fs::read_dir(run_dir)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "VM directories left: {left:?}");
}
