//! The reaper and monitor against real children.
//!
//! A `waitpid(-1)` reaper takes every child of the process, so this test binary holds one
//! monitor for all its tests and never waits on a child any other way.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use signal_hook::consts::SIGCHLD;
use signal_hook::iterator::Signals;
use wren_shim::reaper::start_reaper;
use wren_shim::Monitor;

/// Generous bound for a child to be reaped; only a broken reaper ever reaches it.
const DELIVERY_BOUND: Duration = Duration::from_secs(30);

fn monitor() -> Arc<Monitor> {
    static MONITOR: OnceLock<Arc<Monitor>> = OnceLock::new();
    Arc::clone(MONITOR.get_or_init(|| {
        let monitor = Monitor::new();
        let signals = Signals::new([SIGCHLD]).unwrap();
        start_reaper(Arc::clone(&monitor), signals, || {}).unwrap();
        monitor
    }))
}

fn quiet(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn exit_before_the_waiter_is_polled_is_still_delivered() {
    let monitor = monitor();
    let (_child, waiter) = monitor
        .spawn(&mut quiet("/bin/sh", &["-c", "exit 7"]))
        .unwrap();
    // Make sure the child is long gone and reaped before anyone looks at the waiter.
    let probe = monitor.spawn(&mut quiet("/bin/true", &[])).unwrap().1;
    probe.wait_timeout(DELIVERY_BOUND).expect("probe exit");
    let exit = waiter.wait_timeout(DELIVERY_BOUND).expect("exit delivered");
    assert_eq!(exit.pid, waiter.pid());
    assert_eq!(exit.status, 7);
}

#[test]
fn signal_deaths_report_128_plus_signal() {
    let monitor = monitor();
    let (_child, waiter) = monitor
        .spawn(&mut quiet("/bin/sh", &["-c", "kill -9 $$"]))
        .unwrap();
    assert_eq!(
        waiter.wait_timeout(DELIVERY_BOUND).expect("exit").status,
        137
    );
}

#[test]
fn failed_exec_is_an_error_not_a_crash() {
    // std reaps a child whose exec failed itself (and asserts that it could); the reaper must
    // not steal it first. Setting the uid forces std's fork+exec path over posix_spawn.
    let mut command = Command::new("/nonexistent/wren-binary");
    std::os::unix::process::CommandExt::uid(&mut command, nix::unistd::getuid().as_raw());
    let error = monitor().spawn(&mut command).unwrap_err();
    assert_eq!(error.program, "/nonexistent/wren-binary", "{error}");
}

#[test]
fn two_hundred_concurrent_children_every_exit_delivered_everywhere() {
    let monitor = monitor();
    let all = monitor.subscribe_all();
    let spawners: Vec<_> = (0..4)
        .map(|thread| {
            let monitor = Arc::clone(&monitor);
            std::thread::spawn(move || {
                (0..50)
                    .map(|n| {
                        let code = (thread * 50 + n) % 256;
                        let script = format!("exit {code}");
                        let (child, waiter) = monitor
                            .spawn(&mut quiet("/bin/sh", &["-c", &script]))
                            .unwrap();
                        (child.id(), code, waiter)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let children: Vec<_> = spawners
        .into_iter()
        .flat_map(|spawner| spawner.join().unwrap())
        .collect();
    assert_eq!(children.len(), 200);

    let mut expected: HashSet<i32> = HashSet::new();
    for (pid, code, waiter) in &children {
        let exit = waiter
            .wait_timeout(DELIVERY_BOUND)
            .expect("waiter got its exit");
        assert_eq!(i64::from(exit.pid), i64::from(*pid));
        assert_eq!(i64::from(exit.status), i64::from(*code));
        expected.insert(exit.pid);
    }
    // Other tests run concurrently in this binary: look for ours among all exits seen.
    while !expected.is_empty() {
        let exit = all
            .recv_timeout(DELIVERY_BOUND)
            .expect("subscribe-all got every exit");
        expected.remove(&exit.pid);
    }
}

#[test]
fn orphans_reach_subscribe_all_when_subreaper() {
    // Only a subreaper (the daemon) is handed orphans; become one in this test process.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let monitor = monitor();
    let all = monitor.subscribe_all();
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("orphan.pid");
    // The shell starts a grandchild, records its pid and exits: the grandchild reparents here.
    let script = format!("sleep 0.2 & echo $! > {}", pid_file.display());
    let (_child, waiter) = monitor
        .spawn(&mut quiet("/bin/sh", &["-c", &script]))
        .unwrap();
    waiter.wait_timeout(DELIVERY_BOUND).expect("shell exit");
    let orphan: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    loop {
        let exit = all
            .recv_timeout(DELIVERY_BOUND)
            .expect("orphan exit delivered");
        if exit.pid == orphan {
            assert_eq!(exit.status, 0);
            break;
        }
    }
}
