//! `wrenctl run --rm` /bin/true with each shim, against `runc run` and against runc's own
//! `create` + `start` + `delete`: how much of a run without containerd is runc's three
//! invocations and how much is the shim and wrenctl.
//!
//! Every subject runs the same bundle (the floor's spec); wrenctl keeps its state in a
//! private directory and namespace.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use wren_tests::unique_id;

use super::latency::{overhead, timed};
use super::lifecycle::floor_create_start_delete;
use super::{fill, Bench, Subject};
use crate::cli::Shim;
use crate::report::{Better, Metric, Series};

/// `wrenctl run --rm` rows: against `runc run`, and against `runc create`+`start`+`delete`.
pub fn run_rm(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let wrenctl = wrenctl_binary()?;
    let state = bench.containerd.scratch("wrenctl")?;
    let namespace = format!("{}-wrenctl", bench.containerd.namespace());
    let subjects = bench.subjects();
    // The Floor subject times both floors in one trial, so that both are interleaved with
    // the shims alike; the second lands here.
    let split = RefCell::new(Vec::new());
    let results = bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| {
        let id = unique_id("ctl");
        let bundle = bench.floor.bundle(&id, &["/bin/true"])?;
        match subject {
            Subject::Floor => {
                let run = timed(&mut bench.floor.run_command(&bundle, &id))?;
                split
                    .borrow_mut()
                    .push(floor_create_start_delete(bench, &unique_id("ctl-split"))?);
                Ok(run)
            }
            Subject::Shim(shim) => timed(&mut wrenctl_run(
                &wrenctl, &state, &namespace, shim, &bundle, &id,
            )),
        }
    })?;
    let mut against_run = Metric::new(
        "wrenctl_run_ms",
        "`wrenctl run --rm` /bin/true (floor: `runc run`)",
        "ms",
        Better::Lower,
    );
    fill(&mut against_run, &subjects, results);
    let run_overhead = overhead(
        &against_run,
        "wrenctl_run_overhead_ms",
        "`wrenctl run --rm` overhead over `runc run`",
    );
    // The same shim series over the second floor (its warm-up trial is dropped, as theirs).
    let mut split_floor = split.into_inner();
    if !split_floor.is_empty() {
        split_floor.remove(0);
    }
    let mut against_split = Metric::new(
        "wrenctl_run_split_ms",
        "`wrenctl run --rm` /bin/true (floor: `runc create`+`start`+`delete`)",
        "ms",
        Better::Lower,
    );
    against_split.floor = Some(Series::from_result(Ok(split_floor)));
    against_split.shims = against_run.shims.clone();
    let split_overhead = overhead(
        &against_split,
        "wrenctl_run_split_overhead_ms",
        "`wrenctl run --rm` overhead over `runc create`+`start`+`delete`",
    );
    Ok(vec![
        against_run,
        run_overhead,
        against_split,
        split_overhead,
    ])
}

/// `wrenctl --state <private> --namespace <private> run --rm --shim <shim> --bundle <b>`.
fn wrenctl_run(
    wrenctl: &Path,
    state: &Path,
    namespace: &str,
    shim: &Shim,
    bundle: &Path,
    id: &str,
) -> Command {
    let mut cmd = Command::new(wrenctl);
    cmd.arg("--state")
        .arg(state)
        .args([
            "--namespace",
            namespace,
            "run",
            "--rm",
            "--name",
            id,
            "--shim",
        ])
        .arg(&shim.binary)
        .arg("--bundle")
        .arg(bundle);
    cmd
}

/// `wrenctl` beside this benchmark (the release build puts both in one directory).
fn wrenctl_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate wren-bench")?;
    let path = exe.with_file_name("wrenctl");
    if !path.is_file() {
        anyhow::bail!("no wrenctl beside {}", exe.display());
    }
    Ok(path)
}
