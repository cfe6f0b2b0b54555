//! The measurements. Each takes a [`Bench`] and returns [`Metric`]s; trials across subjects
//! are interleaved (A B C, C B A, …) so drift on a noisy host hits every subject alike.

pub mod direct;
pub mod events;
pub mod fleet;
mod lab;
pub mod latency;
pub mod lifecycle;
pub mod memory;
pub mod start;
pub mod throughput;
pub mod wrenctl;

use anyhow::{anyhow, Result};

use crate::cli::{Shim, Sizes};
use crate::containerd::Containerd;
use crate::floor::Floor;
use crate::proc::Interrupt;
use crate::report::{Metric, Series, ShimSeries};

/// Everything a measurement needs.
#[derive(Debug)]
pub struct Bench<'a> {
    /// The private containerd.
    pub containerd: &'a Containerd,
    /// runc alone.
    pub floor: &'a Floor,
    /// Shims under test.
    pub shims: &'a [Shim],
    /// Trial counts and sizes.
    pub sizes: Sizes,
    /// Set on SIGINT/SIGTERM.
    pub interrupt: &'a Interrupt,
}

/// Who a trial measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// `runc` alone.
    Floor,
    /// One shim under test.
    Shim(&'a Shim),
}

impl Bench<'_> {
    /// The floor followed by every shim.
    pub fn subjects(&self) -> Vec<Subject<'_>> {
        std::iter::once(Subject::Floor)
            .chain(self.shims.iter().map(Subject::Shim))
            .collect()
    }

    /// Runs `trials` rounds of `trial` over `subjects`, alternating the order each round.
    /// A subject whose trial fails is dropped from later rounds and reports that error;
    /// the others carry on. An interrupt stops everything.
    pub fn interleaved<'s>(
        &self,
        subjects: &[Subject<'s>],
        trials: usize,
        mut trial: impl FnMut(Subject<'s>, usize) -> Result<f64>,
    ) -> Result<Vec<Result<Vec<f64>>>> {
        let mut results: Vec<Result<Vec<f64>>> = subjects.iter().map(|_| Ok(Vec::new())).collect();
        for round in 0..trials {
            let mut order: Vec<usize> = (0..subjects.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                self.interrupt.check()?;
                let Ok(samples) = &mut results[i] else {
                    continue;
                };
                match trial(subjects[i], round) {
                    Ok(sample) => samples.push(sample),
                    Err(err) => results[i] = Err(err.context(format!("trial {round}"))),
                }
            }
        }
        Ok(results)
    }
}

impl Bench<'_> {
    /// One untimed round (page cache, first-exec costs), then `trials` timed rounds over the
    /// subjects whose warm-up worked; the others report their warm-up error.
    pub fn warm_then_measure<'s>(
        &self,
        subjects: &[Subject<'s>],
        trials: usize,
        mut trial: impl FnMut(Subject<'s>, usize) -> Result<f64>,
    ) -> Result<Vec<Result<Vec<f64>>>> {
        let warm = self.interleaved(subjects, 1, &mut trial)?;
        let ok: Vec<Subject<'s>> = subjects
            .iter()
            .zip(&warm)
            .filter(|(_, w)| w.is_ok())
            .map(|(s, _)| *s)
            .collect();
        let mut measured = self.interleaved(&ok, trials, trial)?.into_iter();
        Ok(warm
            .into_iter()
            .map(|w| match w {
                Ok(_) => measured.next().unwrap_or_else(|| Err(anyhow!("no result"))),
                Err(err) => Err(err.context("warm-up")),
            })
            .collect())
    }
}

/// Files interleaved results into `metric`: the floor's (if it was a subject) and each shim's.
pub fn fill(metric: &mut Metric, subjects: &[Subject<'_>], results: Vec<Result<Vec<f64>>>) {
    for (subject, result) in subjects.iter().zip(results) {
        match subject {
            Subject::Floor => metric.floor = Some(Series::from_result(result)),
            Subject::Shim(shim) => {
                metric.shims.push(ShimSeries {
                    shim: shim.name.clone(),
                    series: Series::from_result(result),
                });
            }
        }
    }
}

/// Adds an error series for each shim in `failed` (a precondition such as its fleet failed).
pub fn fill_failed(metric: &mut Metric, failed: &[(&Shim, String)]) {
    for (shim, why) in failed {
        metric.shims.push(ShimSeries {
            shim: shim.name.clone(),
            series: Series::from_result(Err(anyhow!("{why}"))),
        });
    }
}

/// Milliseconds in a `Duration`, as the tables show latency.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// SIGKILL as the `Kill` RPC carries it.
const SIGKILL: u32 = 9;

/// Kills the init of task `id` and waits for it (a shim deletes only a stopped init; both
/// calls fail harmlessly once the trial deleted it), then tears the shim down; the error is
/// the teardown's, as a chain of messages.
pub fn kill_and_teardown(daemon: wren_manager::shim::Shim, id: &str) -> Result<(), String> {
    let client = daemon.client();
    if client
        .kill(id, "", SIGKILL, wren_manager::client::KillScope::Process)
        .is_ok()
    {
        let _ = client.wait(id, "");
    }
    daemon
        .teardown()
        .map(drop)
        .map_err(|err| wren_manager::error_chain(&err))
}
