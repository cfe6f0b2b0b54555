//! The whole container lifecycle against real runtimes: runc, a runc-compatible wrapper
//! script (any `binary` works), and crun where the host allows it.

mod common;

use std::io::{BufRead, BufReader};

use common::{pipe, read_to_end, wait_for_status, Fixture, Flavor, FLAVORS};
use oci_spec::runtime::{LinuxPidsBuilder, LinuxResourcesBuilder};
use wren_runc_driver::{DeleteMode, ErrorKind, KillScope, Resources, Status, Stdio};
use wren_tests::unique_id;

#[test]
fn full_lifecycle_on_every_runtime() {
    wren_tests::require_root!();
    for flavor in FLAVORS {
        lifecycle(flavor);
    }
}

fn lifecycle(flavor: Flavor) {
    let fx = Fixture::new(flavor);
    let bundle = fx.bundle("bundle", &["sh", "-c", "echo started; exec sleep 1000"]);
    let id = unique_id("wren-rd-life");
    let (stdout_r, stdout_w) = pipe();
    let stdio = Stdio {
        stdout: Some(stdout_w),
        ..Stdio::null()
    };
    let test = format!("full_lifecycle_on_every_runtime[{flavor:?}]");
    let Some(pid) = fx.create_or_skip(&test, &id, &bundle, stdio) else {
        return;
    };

    let state = fx.runc.state(&id).unwrap();
    assert_eq!(
        (state.status, state.pid, state.id.as_str()),
        (Status::Created, pid, &*id)
    );
    assert_eq!(state.bundle, bundle.path);

    fx.runc.start(&id).unwrap();
    // The line arrives through the pipe handed to `create`: stdio reached the container.
    let mut stdout = BufReader::new(stdout_r);
    assert_eq!(next_line(&mut stdout), "started\n");
    assert_eq!(fx.runc.state(&id).unwrap().status, Status::Running);
    assert_eq!(fx.runc.ps(&id).unwrap(), vec![pid]);

    fx.runc.pause(&id).unwrap();
    assert_eq!(fx.runc.state(&id).unwrap().status, Status::Paused);
    fx.runc.resume(&id).unwrap();
    assert_eq!(fx.runc.state(&id).unwrap().status, Status::Running);

    update_pids_limit(&fx, &id, pid);

    fx.runc.kill(&id, libc::SIGKILL, KillScope::Init).unwrap();
    // EOF once the container's only process, holding the write end, is dead.
    assert_eq!(read_to_end(stdout.into_inner()), "");
    wait_for_status(&fx.runc, &id, Status::Stopped);
    assert_eq!(fx.runc.ps(&id).unwrap(), Vec::<u32>::new());

    let err = fx
        .runc
        .kill(&id, libc::SIGTERM, KillScope::Init)
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotRunning | ErrorKind::NotFound),
        "kill of a stopped container: {err}"
    );

    fx.runc.delete(&id, DeleteMode::Stopped).unwrap();
    assert_eq!(fx.runc.state(&id).unwrap_err().kind(), ErrorKind::NotFound);
    fx.assert_clean();
}

/// `update` with typed resources; the kernel's pids.max shows it took effect.
fn update_pids_limit(fx: &Fixture, id: &str, pid: u32) {
    let pids = LinuxPidsBuilder::default().limit(42).build().unwrap();
    let resources = LinuxResourcesBuilder::default().pids(pids).build().unwrap();
    fx.runc
        .update(id, &Resources::from_oci(&resources).unwrap())
        .unwrap();
    assert_eq!(pids_max(pid), "42");
}

/// pids.max of `pid`'s cgroup (v1 `pids` controller or the v2 unified hierarchy).
fn pids_max(pid: u32) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "pids")
                .then(|| format!("/sys/fs/cgroup/pids{path}"))
        })
        .expect("a pids cgroup");
    std::fs::read_to_string(format!("{path}/pids.max"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn force_delete_removes_a_running_container() {
    wren_tests::require_root!();
    for flavor in FLAVORS {
        let fx = Fixture::new(flavor);
        let bundle = fx.bundle("bundle", &["sleep", "1000"]);
        let id = unique_id("wren-rd-force");
        let test = format!("force_delete_removes_a_running_container[{flavor:?}]");
        let Some(_) = fx.create_or_skip(&test, &id, &bundle, Stdio::null()) else {
            continue;
        };
        fx.runc.start(&id).unwrap();
        assert_eq!(fx.runc.state(&id).unwrap().status, Status::Running);

        let err = fx.runc.delete(&id, DeleteMode::Stopped).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Other,
            "a plain delete refuses a running container: {err}"
        );
        fx.runc.delete(&id, DeleteMode::Force).unwrap();
        assert_eq!(fx.runc.state(&id).unwrap_err().kind(), ErrorKind::NotFound);
        fx.assert_clean();
    }
}

#[test]
fn kill_all_signals_every_process() {
    wren_tests::require_root!();
    let fx = Fixture::new(Flavor::Runc);
    // As pid-namespace init the shell has no TERM handler, so TERM cannot touch it;
    // only `--all` reaches its background child, whose death lets `wait` return.
    let script = "sleep 1000 & echo ready; wait; echo reaped; exec sleep 1000";
    let bundle = fx.bundle("bundle", &["sh", "-c", script]);
    let id = unique_id("wren-rd-kill-all");
    let (stdout_r, stdout_w) = pipe();
    let stdio = Stdio {
        stdout: Some(stdout_w),
        ..Stdio::null()
    };
    fx.create_or_skip("kill_all_signals_every_process", &id, &bundle, stdio)
        .unwrap();
    fx.runc.start(&id).unwrap();
    let mut stdout = BufReader::new(stdout_r);
    assert_eq!(next_line(&mut stdout), "ready\n");
    assert_eq!(fx.runc.ps(&id).unwrap().len(), 2);

    fx.runc.kill(&id, libc::SIGTERM, KillScope::All).unwrap();
    // If `--all` were lost this read would block: a watchdog turns that into EOF.
    let watchdog = Watchdog::arm(&fx, &id);
    assert_eq!(next_line(&mut stdout), "reaped\n");
    drop(watchdog);
    assert_eq!(fx.runc.state(&id).unwrap().status, Status::Running);

    fx.runc.delete(&id, DeleteMode::Force).unwrap();
    assert_eq!(read_to_end(stdout.into_inner()), "");
    fx.assert_clean();
}

fn next_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// SIGKILLs every process of a container if not disarmed within a minute, so that a
/// broken signal path fails the test instead of hanging it. Not a timing assertion.
struct Watchdog {
    disarm: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn arm(fx: &Fixture, id: &str) -> Self {
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        let (runc, id) = (fx.runc.clone(), id.to_owned());
        let thread = std::thread::spawn(move || {
            if disarmed
                .recv_timeout(std::time::Duration::from_secs(60))
                .is_err()
            {
                let _ = runc.kill(&id, libc::SIGKILL, KillScope::All);
            }
        });
        Self {
            disarm,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.disarm.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
