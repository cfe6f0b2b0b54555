//! Reads the stats of this process's own cgroup N times (default 1000) and prints the median
//! and 99th percentile latency: `cargo run --release -p wren-cgroups --example stats_latency [N]`.

use std::time::{Duration, Instant};

use wren_cgroups::{Cgroup, Stats};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1000,
    };
    let cgroup = Cgroup::for_pid(std::process::id())?;
    let version = match cgroup.stats()? {
        Stats::V1(_) => "v1",
        Stats::V2(_) => "v2",
    };
    let mut samples: Vec<Duration> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let stats = cgroup.stats()?;
        samples.push(start.elapsed());
        std::hint::black_box(stats);
    }
    samples.sort_unstable();
    let at = |percent: usize| {
        let index = samples.len().saturating_sub(1) * percent / 100;
        samples.get(index).copied().unwrap_or_default()
    };
    println!(
        "cgroup {version} stats: {rounds} reads, median {:?}, p99 {:?}",
        at(50),
        at(99)
    );
    Ok(())
}
