//! `exec --detach` with caller-owned pipes. This test binary makes itself a child
//! subreaper, as a shim does, so the detached processes (and the inits) it starts
//! become its children and their exit statuses can be checked.

mod common;

use std::path::Path;

use common::{pipe, read_to_end, Fixture, Flavor};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use wren_runc_driver::{DeleteMode, Error, ExecOptions, KillScope, ProcessSpec, Stdio};
use wren_tests::unique_id;

fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// Reaps `pid`, which must be our child (via the subreaper).
fn reap(pid: u32) -> WaitStatus {
    waitpid(Pid::from_raw(i32::try_from(pid).unwrap()), None).unwrap()
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// The bundle's own `process`, running `args` instead.
fn process_json(spec: &serde_json::Value, args: &[&str]) -> ProcessSpec {
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(args);
    ProcessSpec::from_json(serde_json::to_vec(&process).unwrap())
}

#[test]
fn a_detached_exec_reports_output_pid_and_exit_code() {
    wren_tests::require_root!();
    become_subreaper();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["sleep", "1000"]);
    let id = unique_id("wren-rd-exec");
    let init = fx
        .create_or_skip("a_detached_exec", &id, &bundle, Stdio::null())
        .unwrap();
    fx.runc.start(&id).unwrap();

    let spec_dir = tempfile::tempdir().unwrap();
    let (stdout_r, stdout_w) = pipe();
    let (stderr_r, stderr_w) = pipe();
    // `; exit 7` keeps ash from exec'ing ls, so $$ is the shell runc started.
    let script = "echo out; echo err >&2; ls /proc/$$/fd; exit 7";
    let options = ExecOptions {
        spec_dir: spec_dir.path().to_path_buf(),
        pid_file: bundle.path.join("exec1.pid"),
        console_socket: None,
        stdio: Stdio {
            stdin: None,
            stdout: Some(stdout_w),
            stderr: Some(stderr_w),
        },
    };
    let pid = fx.runc.exec(
        &id,
        &process_json(&bundle.spec, &["sh", "-c", script]),
        options,
    );
    let pid = pid.unwrap();
    assert!(
        dir_is_empty(spec_dir.path()),
        "the process spec file is removed"
    );

    // The exec'd shell holds exactly the three stdio fds: nothing leaked into it.
    assert_eq!(read_to_end(stdout_r), "out\n0\n1\n2\n");
    assert_eq!(read_to_end(stderr_r), "err\n");
    assert_eq!(
        reap(pid),
        WaitStatus::Exited(Pid::from_raw(pid.try_into().unwrap()), 7)
    );

    fx.runc.kill(&id, libc::SIGKILL, KillScope::Init).unwrap();
    let init_pid = Pid::from_raw(init.try_into().unwrap());
    assert_eq!(
        reap(init),
        WaitStatus::Signaled(init_pid, nix::sys::signal::SIGKILL, false)
    );
    fx.runc.delete(&id, DeleteMode::Stopped).unwrap();
    fx.assert_clean();
}

#[test]
fn a_typed_process_spec_runs_and_a_failed_exec_cleans_up() {
    wren_tests::require_root!();
    become_subreaper();
    let fx = Fixture::new(Flavor::Runc);
    let bundle = fx.bundle("bundle", &["sleep", "1000"]);
    let id = unique_id("wren-rd-exec-typed");
    let init = fx
        .create_or_skip("a_typed_process_spec", &id, &bundle, Stdio::null())
        .unwrap();
    fx.runc.start(&id).unwrap();
    let spec_dir = tempfile::tempdir().unwrap();

    let process: oci_spec::runtime::Process =
        serde_json::from_value(bundle.spec["process"].clone()).unwrap();
    let mut process = process;
    process.set_args(Some(vec!["sh".into(), "-c".into(), "echo typed".into()]));
    let (stdout_r, stdout_w) = pipe();
    let options = ExecOptions {
        spec_dir: spec_dir.path().to_path_buf(),
        pid_file: bundle.path.join("typed.pid"),
        console_socket: None,
        stdio: Stdio {
            stdout: Some(stdout_w),
            ..Stdio::null()
        },
    };
    let pid = fx
        .runc
        .exec(&id, &ProcessSpec::from_oci(&process).unwrap(), options)
        .unwrap();
    assert_eq!(read_to_end(stdout_r), "typed\n");
    assert!(matches!(reap(pid), WaitStatus::Exited(_, 0)));

    let options = ExecOptions {
        spec_dir: spec_dir.path().to_path_buf(),
        pid_file: bundle.path.join("nope.pid"),
        console_socket: None,
        stdio: Stdio::null(),
    };
    let err = fx
        .runc
        .exec(&id, &process_json(&bundle.spec, &["nope"]), options)
        .unwrap_err();
    let Error::Failed { message, .. } = &err else {
        panic!("unexpected {err:?}")
    };
    assert!(
        message.contains("exec: \"nope\": executable file not found"),
        "{message}"
    );
    assert!(
        dir_is_empty(spec_dir.path()),
        "the spec file is removed on failure too"
    );

    fx.runc.delete(&id, DeleteMode::Force).unwrap();
    assert!(matches!(reap(init), WaitStatus::Signaled(..)));
    fx.assert_clean();
}
