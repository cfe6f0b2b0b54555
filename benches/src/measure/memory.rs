//! Memory, threads and idle wake-ups of shim daemons, and density (total PSS of many).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::fleet::{Fleet, Fleets};
use super::{fill_failed, Bench};
use crate::procfs;
use crate::report::{Better, Metric, Series, ShimSeries};
use crate::stats::count_as_f64;

/// Time for freshly started shims to finish their start-up allocations.
const SETTLE: Duration = Duration::from_secs(2);

/// Per-shim RSS, PSS and threads, and wake-ups per second, of the idle fleets.
pub fn idle(bench: &Bench<'_>, fleets: &Fleets<'_>) -> Result<Vec<Metric>> {
    std::thread::sleep(SETTLE);
    let n = bench.sizes.idle;
    let mut rss = Metric::new(
        "idle_rss_mib",
        format!("RSS per idle shim ({n} containers)"),
        "MiB",
        Better::Lower,
    );
    let mut pss = Metric::new(
        "idle_pss_mib",
        format!("PSS per idle shim ({n} containers)"),
        "MiB",
        Better::Lower,
    );
    let mut threads = Metric::new(
        "idle_threads",
        "threads per idle shim",
        "threads",
        Better::Lower,
    );
    for fleet in &fleets.ready {
        push(
            &mut rss,
            fleet,
            per_shim(fleet, |pid| Ok(mib(procfs::memory(pid)?.rss_kib))),
        );
        push(
            &mut pss,
            fleet,
            per_shim(fleet, |pid| Ok(mib(procfs::memory(pid)?.pss_kib))),
        );
        push(
            &mut threads,
            fleet,
            per_shim(fleet, |pid| Ok(count_f64(procfs::threads(pid)?))),
        );
    }
    let mut wakeups = Metric::new(
        "idle_wakeups_per_s",
        "idle wake-ups per shim",
        "ctx sw/s",
        Better::Lower,
    );
    for (fleet, result) in fleets
        .ready
        .iter()
        .zip(wakeup_rates(fleets, bench.sizes.wake_window))
    {
        push(&mut wakeups, fleet, result);
    }
    let mut metrics = vec![rss, pss, threads, wakeups];
    for metric in &mut metrics {
        fill_failed(metric, &fleets.failed);
    }
    Ok(metrics)
}

/// Starts `sizes.density` sleepers per shim (round-robin), then totals the shims' PSS.
pub fn density(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let n = bench.sizes.density;
    let fleets = Fleets::start(bench, n, "dense")?;
    std::thread::sleep(SETTLE);
    let mut total = Metric::new(
        "density_pss_mib",
        format!("total shim PSS, {n} containers"),
        "MiB",
        Better::Lower,
    );
    let mut daemons = Metric::new(
        "density_shims",
        format!("shim processes, {n} containers"),
        "procs",
        Better::Lower,
    );
    let mut start = Metric::new(
        "density_run_d_ms",
        format!("`ctr run -d` while filling to {n}"),
        "ms",
        Better::Lower,
    );
    for fleet in &fleets.ready {
        let sum = per_shim(fleet, |pid| Ok(mib(procfs::memory(pid)?.pss_kib)))
            .map(|v| vec![v.iter().sum()]);
        push(&mut total, fleet, sum);
        push(
            &mut daemons,
            fleet,
            Ok(vec![count_as_f64(fleet.pids.len())]),
        );
        push(&mut start, fleet, Ok(fleet.start_ms.clone()));
    }
    let mut metrics = vec![total, daemons, start];
    for metric in &mut metrics {
        fill_failed(metric, &fleets.failed);
    }
    Ok(metrics)
}

/// Context switches per second of each fleet's shims (all threads), over one shared window.
fn wakeup_rates(fleets: &Fleets<'_>, window: Duration) -> Vec<Result<Vec<f64>>> {
    let snapshot = || -> BTreeMap<i32, u64> {
        let pids = fleets.ready.iter().flat_map(|f| f.pids.iter().copied());
        pids.filter_map(|pid| Some((pid, procfs::context_switches(pid).ok()?)))
            .collect()
    };
    let before = snapshot();
    std::thread::sleep(window);
    let after = snapshot();
    fleets
        .ready
        .iter()
        .map(|fleet| {
            fleet
                .pids
                .iter()
                .map(|pid| match (before.get(pid), after.get(pid)) {
                    (Some(b), Some(a)) => {
                        Ok(count_f64(a.saturating_sub(*b)) / window.as_secs_f64())
                    }
                    _ => Err(anyhow::anyhow!("shim {pid} vanished while idle")),
                })
                .collect()
        })
        .collect()
}

fn per_shim(fleet: &Fleet<'_>, read: impl Fn(i32) -> Result<f64>) -> Result<Vec<f64>> {
    fleet.pids.iter().map(|pid| read(*pid)).collect()
}

fn push(metric: &mut Metric, fleet: &Fleet<'_>, result: Result<Vec<f64>>) {
    metric.shims.push(ShimSeries {
        shim: fleet.shim.name.clone(),
        series: Series::from_result(result),
    });
}

fn mib(kib: u64) -> f64 {
    count_f64(kib) / 1024.0
}

/// A kernel counter as `f64` (exact below 2^53, far above anything counted here).
fn count_f64(n: u64) -> f64 {
    n as f64
}
