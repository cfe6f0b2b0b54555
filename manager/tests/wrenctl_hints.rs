//! What a new user meets: README's wrenctl sequence run literally, `stop`, the CLI
//! conventions, and error texts that say what to do.

mod common;

use common::{text, wrenctl};

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A busybox rootfs with the applets README's commands use.
fn rootfs(dir: &Path) -> PathBuf {
    let rootfs = wren_tests::busybox_rootfs(dir);
    for applet in ["httpd", "ps"] {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    rootfs
}

/// The lines of README's wrenctl block, comments cut off.
fn readme_wrenctl_lines() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let block = readme
        .split_once("## Without containerd: wrenctl")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("README has a wrenctl block")
        .0;
    block
        .lines()
        .map(|line| {
            line.split_once('#')
                .map_or(line, |(code, _)| code)
                .trim()
                .to_owned()
        })
        .collect()
}

/// README's first three wrenctl lines, as written, in a directory holding `./rootfs`, with
/// `wrenctl` on PATH pointing at a private state directory.
#[test]
fn readme_sequence_works_literally() {
    wren_tests::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    rootfs(tmp.path());
    let state = tmp.path().join("state");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = format!(
        "#!/bin/sh\nexec {} --state {} \"$@\"\n",
        env!("CARGO_BIN_EXE_wrenctl"),
        state.display()
    );
    std::fs::write(bin.join("wrenctl"), wrapper).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(bin.join("wrenctl"))
            .unwrap()
            .permissions(),
        0o755,
    );
    Command::new("chmod")
        .arg("755")
        .arg(bin.join("wrenctl"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lines = readme_wrenctl_lines();
    let sh = |line: &str| {
        Command::new("/bin/sh")
            .args(["-ec", line])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let attached = sh(&lines[0]);
    assert_eq!(
        attached.status.code(),
        Some(3),
        "{}: {}",
        lines[0],
        text(&attached.stderr)
    );
    assert_eq!(text(&attached.stdout), "hi\n");
    let detached = sh(&lines[1]);
    assert!(
        detached.status.success(),
        "{}: {}",
        lines[1],
        text(&detached.stderr)
    );
    assert_eq!(text(&detached.stdout), "web\n");
    let rest = sh(&lines[2]);
    assert!(
        rest.status.success(),
        "{}: {}",
        lines[2],
        text(&rest.stderr)
    );
    assert!(
        text(&rest.stdout).contains("httpd"),
        "ps shows httpd: {}",
        text(&rest.stdout)
    );
    let list = wrenctl(&state, &["list"]);
    assert_eq!(
        text(&list.stdout).lines().count(),
        1,
        "{}",
        text(&list.stdout)
    );
}

fn run_detached(state: &Path, rootfs: &Path, name: &str) -> Output {
    let rootfs = rootfs.to_str().unwrap();
    let args = [
        "run", "-d", "--name", name, "--rootfs", rootfs, "--", "sleep", "1000",
    ];
    wrenctl(state, &args)
}

/// A second `run --name` names the container and `delete`; exec without `--` and into a
/// dead shim say what to type; `stop` ends a container that ignores TERM.
#[test]
fn errors_say_what_to_do() {
    wren_tests::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = rootfs(tmp.path());
    let state = tmp.path().join("state");
    let first = run_detached(&state, &rootfs, "dup");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = run_detached(&state, &rootfs, "dup");
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("container dup already exists"), "{stderr}");
    assert!(stderr.contains("wrenctl delete dup"), "{stderr}");

    let exec = wrenctl(&state, &["exec", "dup", "true"]);
    assert!(
        text(&exec.stderr).contains("wrenctl exec dup -- true"),
        "{}",
        text(&exec.stderr)
    );

    // sleep as pid 1 ignores TERM: stop must fall back to KILL.
    let stop = wrenctl(&state, &["stop", "-t", "1", "dup"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let list = text(&wrenctl(&state, &["list"]).stdout);
    assert!(list.contains("stopped"), "{list}");
    let delete = wrenctl(&state, &["delete", "dup"]);
    assert!(delete.status.success(), "{}", text(&delete.stderr));

    let dead = run_detached(&state, &rootfs, "dead");
    assert!(dead.status.success(), "{}", text(&dead.stderr));
    kill_shim_of(&state);
    let exec = wrenctl(&state, &["exec", "dead", "--", "true"]);
    let stderr = text(&exec.stderr);
    assert!(stderr.contains("wrenctl delete dead"), "{stderr}");
    let delete = wrenctl(&state, &["delete", "dead"]);
    assert!(delete.status.success(), "{}", text(&delete.stderr));
}

/// SIGKILLs the shims whose command line names `state` (their -address is under it).
fn kill_shim_of(state: &Path) {
    let needle = state.display().to_string();
    for process in wren_tests::live_processes() {
        if process.argv.iter().any(|arg| arg.contains(&needle)) {
            let pid = nix::unistd::Pid::from_raw(process.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
}

/// A name breaking the id rule, or too long for the socket, is refused by the rule.
#[test]
fn names_follow_the_id_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let long = "a".repeat(100);
    let out = wrenctl(
        &state,
        &["run", "--name", &long, "--rootfs", "/", "--", "true"],
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid container name"), "{stderr}");
    assert!(!stderr.contains("SUN_LEN"), "{stderr}");
    let fits_rule = "b".repeat(76);
    let out = wrenctl(
        &state,
        &["run", "--name", &fits_rule, "--rootfs", "/", "--", "true"],
    );
    assert!(
        text(&out.stderr).contains("use a shorter --name"),
        "{}",
        text(&out.stderr)
    );
}

/// No command: usage and a failure; --version answers.
#[test]
fn cli_conventions() {
    let tmp = tempfile::tempdir().unwrap();
    let none = wrenctl(tmp.path(), &[]);
    assert_eq!(none.status.code(), Some(125));
    assert!(text(&none.stderr).contains("usage: wrenctl"));
    let version = wrenctl(tmp.path(), &["--version"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout),
        format!("wrenctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Not root: the permission error says so.
#[test]
fn not_root_is_named() {
    wren_tests::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wrenctl"))
        .arg("--state")
        .arg(tmp.path().join("state"))
        .args(["run", "--name", "c", "--rootfs", "/", "--", "true"])
        .uid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("needs root"),
        "{}",
        text(&out.stderr)
    );
}

/// `events` with nothing to follow yet waits (like `ctr events`) until interrupted.
#[test]
fn events_waits_for_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrenctl"))
        .arg("--state")
        .arg(tmp.path())
        .arg("events")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "events exited at once");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(child.wait().unwrap().success());
}

/// An attached run without `--rm` keeps its container: its generated name is printed, so
/// that it can be deleted.
#[test]
fn kept_generated_name_is_printed() {
    wren_tests::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = rootfs(tmp.path());
    let state = tmp.path().join("state");
    let out = wrenctl(
        &state,
        &["run", "--rootfs", rootfs.to_str().unwrap(), "--", "true"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let list = text(&wrenctl(&state, &["list"]).stdout);
    let id = list
        .lines()
        .nth(1)
        .and_then(|line| line.split(' ').next())
        .unwrap();
    assert!(stderr.contains(&format!("wrenctl delete {id}")), "{stderr}");
    let delete = wrenctl(&state, &["delete", id]);
    assert!(delete.status.success(), "{}", text(&delete.stderr));
}
