//! Real cgroup v1 hierarchies on this host: stats move with a real workload, and the OOM
//! killer yields exactly one event per kill and none for cgroup removal. Needs root and a v1
//! memory controller at /sys/fs/cgroup/memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wren_cgroups::{v1, Cgroup, Flush, OomPoller, OomWatcher, Stats, V1Cgroup};

const ROOT: &str = "/sys/fs/cgroup";
/// Polling bound for values that must move; generous because CI machines stall.
const PATIENCE: Duration = Duration::from_secs(30);

/// Skips visibly unless the host has a v1 memory controller mounted where we expect it.
fn v1_host(test: &str) -> bool {
    if !wren_tests::is_root() {
        wren_tests::skip(test, "needs root");
        return false;
    }
    if !Path::new(ROOT).join("memory/memory.oom_control").exists() {
        wren_tests::skip(
            test,
            "no cgroup v1 memory controller at /sys/fs/cgroup/memory",
        );
        return false;
    }
    true
}

/// Cgroup directories created for one test, one per controller hierarchy; on drop every
/// process left in them is killed and the directories are removed.
struct Scratch {
    dirs: Vec<PathBuf>,
}

impl Scratch {
    fn new(controllers: &[&str]) -> Self {
        let id = wren_tests::unique_id("wren-cgroups");
        let dirs: Vec<PathBuf> = controllers
            .iter()
            .map(|controller| Path::new(ROOT).join(controller).join(&id))
            .filter(|dir| dir.parent().is_some_and(Path::is_dir))
            .collect();
        for dir in &dirs {
            std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        Self { dirs }
    }

    fn dir(&self, controller: &str) -> &Path {
        let mount = Path::new(ROOT).join(controller);
        self.dirs
            .iter()
            .find(|dir| dir.starts_with(&mount))
            .expect("controller created")
    }

    /// Spawns `sh -c script` after joining every scratch cgroup; returns once the script
    /// printed its first line.
    fn spawn(&self, script: &str) -> (Child, BufReader<std::process::ChildStdout>) {
        let join = r#"for f; do echo $$ > "$f/cgroup.procs"; done; "#;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{join}{script}"))
            .arg("sh")
            .args(&self.dirs)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready line");
        assert_eq!(line.trim(), "ready", "workload did not start");
        (child, stdout)
    }

    fn remove(&mut self) {
        for dir in self.dirs.drain(..) {
            kill_all(&dir);
            std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for dir in self.dirs.drain(..) {
            kill_all(&dir);
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// SIGKILLs every process in `dir` and waits until the kernel has moved them all out.
fn kill_all(dir: &Path) {
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pids = std::fs::read_to_string(&procs).unwrap_or_default();
        if pids.trim().is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) takes plain integers and touches no memory; the pids were
            // read from a scratch cgroup this test created, so they are the test's own
            // workload (or already gone, which kill reports as ESRCH).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn v1_stats(cgroup: &Cgroup) -> v1::Metrics {
    match cgroup.stats().expect("read stats") {
        Stats::V1(metrics) => metrics,
        Stats::V2(_) => panic!("a v1 host must give v1 stats"),
    }
}

#[test]
fn stats_follow_a_real_workload() {
    if !v1_host("stats_follow_a_real_workload") {
        return;
    }
    let scratch = Scratch::new(&["memory", "cpu", "cpuacct", "pids", "blkio"]);
    // 8 MiB held in a shell variable, two sleeping children, then a busy loop.
    let script = "x=$(head -c 8388608 /dev/zero | tr '\\0' a); \
                  sleep 1000 & sleep 1000 & echo ready; while :; do :; done";
    let (mut child, _stdout) = scratch.spawn(script);
    let cgroup = Cgroup::for_pid(child.id()).expect("locate cgroup");
    let Cgroup::V1(located) = &cgroup else {
        panic!("v1 host located as v2")
    };
    assert_eq!(located.memory.as_deref(), Some(scratch.dir("memory")));

    let first = v1_stats(&cgroup);
    let memory = first.memory.as_ref().expect("memory stats");
    assert!(
        memory.usage.usage >= 8 << 20,
        "usage {} below the 8 MiB held",
        memory.usage.usage
    );
    assert!(memory.total_rss + memory.total_cache > 0);
    assert_eq!(
        first.pids.expect("pids stats").current,
        3,
        "sh and two sleeps"
    );
    assert_eq!(first.memory_oom_control.expect("oom control").oom_kill, 0);
    assert!(first.blkio.is_some());

    let total = |metrics: &v1::Metrics| {
        metrics
            .cpu
            .as_ref()
            .and_then(|cpu| cpu.usage.as_ref())
            .expect("cpuacct usage")
            .total
    };
    let start = total(&first);
    let deadline = Instant::now() + PATIENCE;
    let later = loop {
        let now = v1_stats(&cgroup);
        // 100 ms of CPU: well past any accounting granularity.
        if total(&now) > start + 100_000_000 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let usage = later
        .cpu
        .as_ref()
        .and_then(|cpu| cpu.usage.clone())
        .expect("cpuacct usage");
    assert!(
        usage.total > start + 100_000_000,
        "cpu time did not grow while spinning"
    );
    // cpuacct lists every possible CPU, at least the ones we may run on.
    let usable = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        usage.per_cpu.len() >= usable,
        "per-cpu list {:?}",
        usage.per_cpu
    );
    assert!(usage.per_cpu.iter().sum::<u64>() > 0);
    assert!(
        later.cpu.and_then(|cpu| cpu.throttling).is_some(),
        "cpu.stat read"
    );

    child.kill().expect("kill workload");
    child.wait().expect("reap workload");
    drop(scratch);
}

/// A memory cgroup limited to 16 MiB, watched before a process that allocates without bound
/// runs in it.
fn limited_memory_cgroup() -> (Scratch, Cgroup) {
    let scratch = Scratch::new(&["memory"]);
    let limit = scratch.dir("memory").join("memory.limit_in_bytes");
    std::fs::write(&limit, "16777216").expect("set memory limit");
    let cgroup = Cgroup::V1(V1Cgroup {
        memory: Some(scratch.dir("memory").to_path_buf()),
        ..V1Cgroup::default()
    });
    (scratch, cgroup)
}

/// Runs `tail /dev/zero` (an endless line held in memory) in `scratch` until the OOM killer
/// ends it.
fn run_until_oom_killed(scratch: &Scratch) {
    let (mut child, _stdout) = scratch.spawn("echo ready; exec tail /dev/zero");
    let status = child.wait().expect("reap workload");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "workload was not OOM-killed: {status}"
    );
}

#[test]
fn one_oom_event_per_kill_and_none_for_removal() {
    if !v1_host("one_oom_event_per_kill_and_none_for_removal") {
        return;
    }
    let (events_tx, events) = crossbeam_channel::unbounded();
    let watcher = OomWatcher::spawn(events_tx).expect("spawn watcher");

    let (mut first, first_cgroup) = limited_memory_cgroup();
    watcher.watch("first", &first_cgroup).expect("watch first");
    run_until_oom_killed(&first);
    let event = events
        .recv_timeout(PATIENCE)
        .expect("oom event for the first cgroup");
    assert_eq!(event.key, "first");
    // Removing the cgroup wakes its eventfd; that must not read as an OOM.
    first.remove();

    let (second, second_cgroup) = limited_memory_cgroup();
    watcher
        .watch("second", &second_cgroup)
        .expect("watch second");
    run_until_oom_killed(&second);
    // Events are handled in order, so anything the removal produced would come first.
    let event = events
        .recv_timeout(PATIENCE)
        .expect("oom event for the second cgroup");
    assert_eq!(event.key, "second");

    assert_eq!(
        watcher.unwatch("first").expect("unwatch first"),
        Flush::NoOom
    );
    assert_eq!(
        watcher.unwatch("second").expect("unwatch second"),
        Flush::NoOom
    );
    assert!(events.try_recv().is_err(), "more than one event per kill");
    drop(second);
    drop(watcher);
}

/// An event loop of the test's own, as a shim's main loop would serve a polled watcher:
/// polls the watcher's fd and serves it until `stop` is set.
fn serve_polled(
    mut poller: OomPoller,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let mut fds = [PollFd::new(poller.fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(50u16)).is_ok_and(|ready| ready > 0) {
                poller.poll();
            }
        }
    })
}

#[test]
fn a_polled_watcher_reports_through_its_owners_loop() {
    if !v1_host("a_polled_watcher_reports_through_its_owners_loop") {
        return;
    }
    let (events_tx, events) = crossbeam_channel::unbounded();
    let (watcher, poller) = OomWatcher::polled(events_tx).expect("polled watcher");
    let stop = std::sync::Arc::default();
    let owner_loop = serve_polled(poller, std::sync::Arc::clone(&stop));

    let (scratch, cgroup) = limited_memory_cgroup();
    watcher.watch("polled", &cgroup).expect("watch");
    run_until_oom_killed(&scratch);
    let event = events.recv_timeout(PATIENCE).expect("oom event");
    assert_eq!(event.key, "polled");
    assert_eq!(watcher.unwatch("polled").expect("unwatch"), Flush::NoOom);
    assert!(events.try_recv().is_err(), "more than one event per kill");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    owner_loop.join().expect("owner loop");
    drop(scratch);
    drop(watcher);
}

#[test]
fn unwatch_flush_reports_a_kill_exactly_once() {
    if !v1_host("unwatch_flush_reports_a_kill_exactly_once") {
        return;
    }
    let (events_tx, events) = crossbeam_channel::unbounded();
    let watcher = OomWatcher::spawn(events_tx).expect("spawn watcher");
    let (scratch, cgroup) = limited_memory_cgroup();
    watcher.watch("flushed", &cgroup).expect("watch");
    run_until_oom_killed(&scratch);
    // Straight after the exit, as a shim does before publishing TaskExit: whether the
    // eventfd or the final read saw the kill first, it is reported once, before we go on.
    let flush = watcher.unwatch("flushed").expect("unwatch");
    let delivered: Vec<_> = events.try_iter().collect();
    assert_eq!(
        delivered.len(),
        1,
        "flush {flush:?} delivered {delivered:?}"
    );
    assert_eq!(delivered[0].key, "flushed");
    drop(scratch);
}
