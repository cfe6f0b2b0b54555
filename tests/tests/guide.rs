//! docs/guide.md followed literally: its shortest runtime, `shim/examples/process-shim.rs`,
//! built as the guide's "your own crate" recipe from a crate outside the workspace, then run
//! under `wrenctl` (output, exit, Ctrl-C with `--rm`) and under a private containerd 1.6
//! with `ctr run --rm --runtime io.containerd.process.v2`.
//!
//! Needs `cargo build --workspace --bins --examples` first (scripts/test.sh does it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE, STATE_DEADLINE};
use wren_tests::{Containerd, Runtime};

const GUIDE: &str = include_str!("../../docs/guide.md");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Where the guide's Cargo.toml says the wren checkout is.
const CHECKOUT_PLACEHOLDER: &str = "/path/to/wren";

/// `target/<profile>/examples/process-shim`.
fn process_shim() -> PathBuf {
    let bin = wren_tests::workspace_bin("wrenctl");
    let path = bin.with_file_name("examples").join("process-shim");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p wren-shim --examples` first",
        path.display()
    );
    path
}

/// The first ```` ```toml ```` block after `heading` in the guide.
fn guide_block(heading: &str, language: &str) -> String {
    let section = GUIDE
        .split_once(heading)
        .unwrap_or_else(|| panic!("the guide has no {heading:?}"))
        .1;
    let fence = format!("```{language}\n");
    let block = section.split_once(&fence).expect("a fenced block").1;
    block
        .split_once("```")
        .expect("a closed block")
        .0
        .to_owned()
}

/// The recipe: `cargo new`, the guide's Cargo.toml, the example as `src/main.rs`; builds
/// offline against the workspace's lock file and registry cache, in its own target dir
/// under the workspace's (a nested cargo in the test's own target dir would wait for the
/// lock that the running `cargo test` holds).
#[test]
fn own_crate_recipe_builds_outside_the_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let workspace = Path::new(WORKSPACE).canonicalize().unwrap();
    let manifest = guide_block("### Your own crate", "toml")
        .replace(CHECKOUT_PLACEHOLDER, &workspace.display().to_string());
    let krate = tmp.path().join("process-shim");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(
        workspace.join("shim/examples/process-shim.rs"),
        krate.join("src/main.rs"),
    )
    .unwrap();
    std::fs::copy(workspace.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", workspace.join("target/guide-crate"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let binary = workspace.join("target/guide-crate/debug/process-shim");
    let version = Command::new(&binary).arg("-v").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("io.containerd.process.v2"),
        "{}",
        output_text(&version)
    );
}

fn wrenctl(state: &Path) -> Command {
    let mut command = Command::new(wren_tests::workspace_bin("wrenctl"));
    command.arg("--state").arg(state).stdin(Stdio::null());
    command
}

fn run_args<'a>(shim: &'a str, rootfs: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--rm", "--shim", shim, "--rootfs", rootfs, "--"];
    args.extend(cmd);
    args
}

fn only_header(state: &Path) {
    let list = wrenctl(state).arg("list").output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
    let needle = state.display().to_string();
    let left: Vec<_> = wren_tests::live_processes()
        .into_iter()
        .filter(|process| process.argv.iter().any(|arg| arg.contains(&needle)))
        .map(|process| process.pid)
        .collect();
    assert!(left.is_empty(), "shims outlived the run: {left:?}");
}

/// The guide's `wrenctl run --rm` of the example prints the task's output and returns.
#[test]
fn example_runs_under_wrenctl() {
    wren_tests::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    let shim = process_shim().display().to_string();
    let rootfs = rootfs.display().to_string();
    let args = run_args(&shim, &rootfs, &["/bin/sh", "-c", "echo x; exit 4"]);
    let output = run_with_deadline(wrenctl(&state).args(args), CTR_DEADLINE);
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "x\n");
    only_header(&state);
}

/// Ctrl-C reaches the task (as with `ctr run`), and `--rm` still removes container and shim.
#[test]
fn ctrl_c_under_wrenctl_cleans_up() {
    wren_tests::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = wren_tests::busybox_rootfs(tmp.path());
    let state = tmp.path().join("state");
    let shim = process_shim().display().to_string();
    let rootfs = rootfs.display().to_string();
    let args = run_args(&shim, &rootfs, &["/bin/sleep", "1000"]);
    let mut child = wrenctl(&state)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_running(&state);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_with_deadline(&mut child);
    assert_eq!(status.code(), Some(130), "128 + SIGINT, as a shell reports");
    only_header(&state);
}

fn wait_until_running(state: &Path) {
    let deadline = Instant::now() + STATE_DEADLINE;
    loop {
        let list = wrenctl(state).arg("list").output().unwrap();
        if String::from_utf8_lossy(&list.stdout).contains("running") {
            return;
        }
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_with_deadline(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + CTR_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wrenctl did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The guide's containerd recipe: the example installed as `containerd-shim-process-v2`
/// on containerd's PATH, `ctr run --rm --runtime io.containerd.process.v2`.
#[test]
fn example_runs_under_containerd() {
    wren_tests::require_root!();
    let shims = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        process_shim(),
        shims.path().join("containerd-shim-process-v2"),
    )
    .unwrap();
    let cd = Containerd::start_with_shim_dirs(Runtime::Go, vec![shims.path().to_owned()]);
    let id = cd.new_id("process-shim");
    let fifo_dir = cd.fifo_dir().display().to_string();
    let rootfs = cd.rootfs().display().to_string();
    let mut args = vec!["run", "--rm", "--runtime", "io.containerd.process.v2"];
    args.extend(["--fifo-dir", &fifo_dir, "--rootfs", &rootfs, &id]);
    args.extend(["/bin/sh", "-c", "echo hi; exit 3"]);
    let mut command = cd.ctr_command(&args);
    let output = run_with_deadline(command.stdin(Stdio::null()), CTR_DEADLINE);
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
