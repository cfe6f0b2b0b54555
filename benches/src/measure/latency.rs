//! Latencies through containerd against runc alone: cold `ctr run --rm`, `ctr task exec`,
//! `ctr task metrics`. Each shim's overhead over runc is the per-round difference of the
//! interleaved trials, summarised like any other series.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use wren_tests::unique_id;

use super::fleet::Fleets;
use super::{fill, fill_failed, millis, Bench, Subject};
use crate::cli::Shim;
use crate::proc;
use crate::report::{Better, Metric, Series, ShimSeries};
use crate::stats::paired_differences;

/// How long one timed command may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// `ctr run --rm <rootfs> /bin/true` against `runc run`.
pub fn cold_run(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let subjects = bench.subjects();
    let results = bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| {
        let id = unique_id("cold");
        let mut cmd = match subject {
            Subject::Floor => bench
                .floor
                .run_command(&bench.floor.bundle(&id, &["/bin/true"])?, &id),
            Subject::Shim(shim) => {
                bench
                    .containerd
                    .run_command(shim, &["--rm"], &id, &["/bin/true"])
            }
        };
        timed(&mut cmd)
    })?;
    let mut metric = Metric::new(
        "cold_run_ms",
        "cold `ctr run --rm` /bin/true (floor: `runc run`)",
        "ms",
        Better::Lower,
    );
    fill(&mut metric, &subjects, results);
    let overhead = overhead(
        &metric,
        "cold_run_overhead_ms",
        "cold run overhead over `runc run`",
    );
    Ok(vec![metric, overhead])
}

/// `ctr task exec /bin/true` into the idle fleets against `runc exec`.
pub fn exec(bench: &Bench<'_>, fleets: &Fleets<'_>) -> Result<Vec<Metric>> {
    let metric = against_fleets(
        bench,
        fleets,
        ("exec_ms", "`ctr task exec` /bin/true (floor: `runc exec`)"),
        |floor_id| bench.floor.exec_true_command(floor_id),
        |target| {
            let exec_id = unique_id("x");
            bench
                .containerd
                .ctr(&["task", "exec", "--exec-id", &exec_id, target, "/bin/true"])
        },
    )?;
    let overhead = overhead(
        &metric,
        "exec_overhead_ms",
        "exec overhead over `runc exec`",
    );
    Ok(vec![metric, overhead])
}

/// `ctr task metrics` on the idle fleets against `runc events --stats`.
pub fn stats(bench: &Bench<'_>, fleets: &Fleets<'_>) -> Result<Vec<Metric>> {
    let metric = against_fleets(
        bench,
        fleets,
        (
            "stats_ms",
            "`ctr task metrics` (floor: `runc events --stats`)",
        ),
        |floor_id| bench.floor.stats_command(floor_id),
        |target| bench.containerd.ctr(&["task", "metrics", target]),
    )?;
    Ok(vec![metric])
}

/// Times `floor` on a sleeper run by runc alone and `through_shim` on the fleets' containers,
/// interleaved, into the metric `(name, title)`, in milliseconds.
fn against_fleets(
    bench: &Bench<'_>,
    fleets: &Fleets<'_>,
    (name, title): (&'static str, &str),
    floor: impl Fn(&str) -> Command,
    through_shim: impl Fn(&str) -> Command,
) -> Result<Metric> {
    let shims: Vec<&Shim> = bench
        .shims
        .iter()
        .filter(|s| fleets.of(s).is_some())
        .collect();
    let metric = Metric::new(name, title, "ms", Better::Lower);
    let mut metric = against_floor_sleeper(bench, &shims, metric, floor, |shim, round| {
        timed(&mut through_shim(&fleet_member(fleets, shim, round)?))
    })?;
    fill_failed(&mut metric, &fleets.failed);
    Ok(metric)
}

/// Times `floor` (a runc command given the id of a sleeper run by runc alone) and
/// `shim_trial` for each of `shims`, interleaved, into `metric`.
pub(super) fn against_floor_sleeper<'s>(
    bench: &Bench<'_>,
    shims: &[&'s Shim],
    mut metric: Metric,
    floor: impl Fn(&str) -> Command,
    mut shim_trial: impl FnMut(&'s Shim, usize) -> Result<f64>,
) -> Result<Metric> {
    let floor_id = unique_id("floor");
    bench
        .floor
        .start_sleeper(&floor_id)
        .context("start floor sleeper")?;
    let subjects: Vec<Subject<'s>> = std::iter::once(Subject::Floor)
        .chain(shims.iter().copied().map(Subject::Shim))
        .collect();
    let trial = |subject, round| match subject {
        Subject::Floor => timed(&mut floor(&floor_id)),
        Subject::Shim(shim) => shim_trial(shim, round),
    };
    let results = bench.warm_then_measure(&subjects, bench.sizes.trials, trial);
    let removed = bench.floor.remove(&floor_id);
    fill(&mut metric, &subjects, results?);
    removed?;
    Ok(metric)
}

/// The fleet container a round targets: rounds rotate over the fleet.
fn fleet_member(fleets: &Fleets<'_>, shim: &Shim, round: usize) -> Result<String> {
    let fleet = fleets.of(shim).context("no fleet")?;
    fleet
        .ids
        .get(round % fleet.ids.len().max(1))
        .cloned()
        .context("empty fleet")
}

/// Runs `cmd` (stdout discarded) under the deadline; its wall time in ms.
pub(super) fn timed(cmd: &mut Command) -> Result<f64> {
    Ok(millis(proc::run_timed(
        cmd.stdout(Stdio::null()),
        DEADLINE,
    )?))
}

/// Per-round `shim - floor` of `metric`, as a metric of its own.
pub(super) fn overhead(metric: &Metric, key: &'static str, title: &str) -> Metric {
    let mut out = Metric::new(key, title, metric.unit, Better::Lower);
    let floor = metric.floor.as_ref().filter(|f| f.error.is_none());
    for shim in &metric.shims {
        let series = match (floor, &shim.series.error) {
            (_, Some(err)) => Series::from_result(Err(anyhow::anyhow!("{err}"))),
            (None, None) => Series::from_result(Err(anyhow::anyhow!("no floor"))),
            (Some(floor), None) => {
                Series::from_result(Ok(paired_differences(&shim.series.samples, &floor.samples)))
            }
        };
        out.shims.push(ShimSeries {
            shim: shim.shim.clone(),
            series,
        });
    }
    out
}
