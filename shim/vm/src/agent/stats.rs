//! A container's metrics, read from its guest cgroup (cgroup v2 files) into containerd's
//! `io.containerd.cgroups.v2.Metrics`.

use std::collections::HashMap;
use std::path::Path;

use protobuf::MessageField;
use wren_shim_protocol::cgroups_v2::{CPUStat, MemoryStat, Metrics, PidsStat};

/// The `key value` lines of a flat-keyed cgroup file.
fn keyed(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A single-number cgroup file; `max` and missing files read as 0.
fn single(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// The metrics of the cgroup at `cgroup`.
pub fn read(cgroup: &Path) -> Metrics {
    let cpu = keyed(&cgroup.join("cpu.stat"));
    let memory = keyed(&cgroup.join("memory.stat"));
    let get = |map: &HashMap<String, u64>, key: &str| map.get(key).copied().unwrap_or(0);
    let mut metrics = Metrics::new();
    metrics.pids = MessageField::some(PidsStat {
        current: single(&cgroup.join("pids.current")),
        limit: single(&cgroup.join("pids.max")),
        ..PidsStat::default()
    });
    metrics.cpu = MessageField::some(CPUStat {
        usage_usec: get(&cpu, "usage_usec"),
        user_usec: get(&cpu, "user_usec"),
        system_usec: get(&cpu, "system_usec"),
        nr_periods: get(&cpu, "nr_periods"),
        nr_throttled: get(&cpu, "nr_throttled"),
        throttled_usec: get(&cpu, "throttled_usec"),
        ..CPUStat::default()
    });
    metrics.memory = MessageField::some(MemoryStat {
        anon: get(&memory, "anon"),
        file: get(&memory, "file"),
        kernel_stack: get(&memory, "kernel_stack"),
        slab: get(&memory, "slab"),
        sock: get(&memory, "sock"),
        shmem: get(&memory, "shmem"),
        file_mapped: get(&memory, "file_mapped"),
        pgfault: get(&memory, "pgfault"),
        pgmajfault: get(&memory, "pgmajfault"),
        usage: single(&cgroup.join("memory.current")),
        usage_limit: single(&cgroup.join("memory.max")),
        max_usage: single(&cgroup.join("memory.peak")),
        ..MemoryStat::default()
    });
    metrics
}
