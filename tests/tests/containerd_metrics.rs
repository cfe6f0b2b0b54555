//! `ctr task metrics` through wren reports what it reports through containerd's Go shim: the
//! same workload under each shim, every field compared: equal where the workload fixes the
//! value, and of the same magnitude where the machine's load moves it.
//!
//! ctr prints the metrics as JSON with zero values omitted, so a field one shim shows and the
//! other does not is a zero on one side: it is compared like any other value.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use wren_tests::containerd::CTR_DEADLINE;
use wren_tests::{Containerd, Runtime};

/// Burns a few tenths of a second of CPU, then sleeps: a cgroup whose CPU time is large
/// enough that a unit error (microseconds in a nanosecond field) cannot hide in the drift.
const WORKLOAD: &[&str] = &[
    "sh",
    "-c",
    "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1000",
];

/// Two readings agree when the larger is at most this many times the smaller (plus a small
/// absolute slack): the same workload's counters vary with the machine's load, but a field fed
/// from the wrong file or in the wrong unit is off by orders of magnitude.
const DRIFT_FACTOR: u64 = 4;
/// The absolute slack for CPU time (ns on cgroup v1): the 10 ms tick `cpuacct.stat` counts
/// user/system in.
const CPU_SLACK_NS: u64 = 30_000_000;
/// The CPU time the loop takes at the least (ns).
const LOOP_CPU_NS: u64 = 150_000_000;
/// The system-time share of the CPU total (v2 `cpu.stat`, v1 `cpuacct.stat`).
const KERNEL_CPU: [&str; 2] = ["/cpu/system_usec", "/cpu/usage/kernel"];
/// The absolute slack for byte and event counters of a sleeping shell.
const COUNTER_SLACK: u64 = 1024 * 1024;

#[test]
fn metrics_match_the_go_shim_field_for_field() {
    wren_tests::require_root!();
    let go = metrics_of(Runtime::Go);
    let wren = metrics_of(Runtime::Wren);
    let mut paths = leaf_paths(&go);
    paths.extend(leaf_paths(&wren));
    let total = |metrics: &Value| number(metrics, cpu_total().path);
    for path in paths.iter().filter(|path| !path.contains("per_cpu")) {
        let (a, b) = (number(&go, path), number(&wren, path));
        if KERNEL_CPU.contains(&path.as_str()) {
            // How the kernel splits a busy loop's ticks between user and system moves with
            // the load (under emulation, several times over), so only the unit is checked:
            // a part of the total never exceeds it.
            assert!(
                a <= total(&go) && b <= total(&wren),
                "{path} exceeds the total: go {a}, wren {b}\ngo: {go}\nwren: {wren}"
            );
            continue;
        }
        assert!(
            within_drift(path, a, b),
            "{path}: go {a}, wren {b}\ngo: {go}\nwren: {wren}"
        );
    }
    // The work itself: both runs spent the CPU time of the loop.
    let least = LOOP_CPU_NS / cpu_total().ns_per_unit;
    assert!(
        total(&go) > least && total(&wren) > least,
        "the loop ran: go {}, wren {} ({})",
        total(&go),
        total(&wren),
        cpu_total().path
    );
    assert_eq!(number(&wren, "/pids/current"), 1);
}

/// Where the metrics keep a cgroup's total CPU time, and in what unit.
struct CpuTotal {
    path: &'static str,
    ns_per_unit: u64,
}

/// v1 `Metrics` carry `cpu.usage.total` in nanoseconds, v2 `Metrics` `cpu.usage_usec`.
fn cpu_total() -> CpuTotal {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CpuTotal {
            path: "/cpu/usage_usec",
            ns_per_unit: 1_000,
        }
    } else {
        CpuTotal {
            path: "/cpu/usage/total",
            ns_per_unit: 1,
        }
    }
}

/// Whether two readings of `path` from the same workload agree.
fn within_drift(path: &str, a: u64, b: u64) -> bool {
    if path.contains("limit") || path.starts_with("/pids") {
        return a == b;
    }
    let slack = if path.starts_with("/cpu") {
        CPU_SLACK_NS / cpu_total().ns_per_unit
    } else {
        COUNTER_SLACK
    };
    a.max(b) <= DRIFT_FACTOR * a.min(b) + slack
}

/// Runs the workload under `runtime`; returns `ctr task metrics --format json` once its CPU
/// time has settled (the loop is over).
fn metrics_of(runtime: Runtime) -> Value {
    let cd = Containerd::start(runtime);
    let id = cd.new_id("metrics");
    cd.run_detached(&[], &id, WORKLOAD);
    let read = || -> Value {
        let text = cd.ctr_ok(&["tasks", "metrics", "--format", "json", &id]);
        serde_json::from_str(&text).expect("metrics json")
    };
    // Under emulation (the cgroup v2 VM lane) the loop takes many seconds.
    let deadline = Instant::now() + CTR_DEADLINE;
    let mut last = read();
    let metrics = loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        let cpu = cpu_total().path;
        let settled = number(&now, cpu) == number(&last, cpu);
        assert!(Instant::now() < deadline, "cpu time never settled: {now}");
        if settled {
            break now;
        }
        last = now;
    };
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
    metrics
}

/// The number at `path`; ctr omits zero values, so a missing field reads 0.
fn number(metrics: &Value, path: &str) -> u64 {
    metrics.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// Every numeric leaf's JSON pointer; array elements are skipped by callers (`per_cpu`).
fn leaf_paths(value: &Value) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    collect_paths(value, String::new(), &mut paths);
    paths
}

fn collect_paths(value: &Value, prefix: String, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                collect_paths(child, format!("{prefix}/{key}"), paths);
            }
        }
        Value::Array(_) => {
            paths.insert(format!("{prefix}/per_cpu"));
        }
        _ => {
            paths.insert(prefix);
        }
    }
}
