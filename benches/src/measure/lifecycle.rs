//! A container's life through the shim alone, without containerd: the cold path (`Create` →
//! `Start` → `Wait` → `Delete` over ttrpc, /bin/true) and exit latency (SIGKILL of the init
//! → `/tasks/exit` on the events socket), each against runc alone.
//!
//! Every trial launches a fresh shim (not timed: the start group times that) in a private
//! namespace, runc root and events socket, and tears it down after. The floors are what a
//! shim must do anyway: `runc create`, `runc start`, the exit, `runc delete` for the cold
//! path; for the exit, the time until a pidfd says the init is gone, which is as soon as
//! anyone can know.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wren_manager::events::EventPayload;
use wren_tests::unique_id;

use super::lab::{Lab, Trial};
use super::latency::overhead;
use super::{fill, millis, Bench, Subject};
use crate::cli::Shim;
use crate::report::{Better, Metric};
use crate::{proc, sys};

/// How long one runc call, RPC or awaited event may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// The cold path and exit latency rows.
pub fn cold_path_and_exit(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let lab = Lab::new(bench, "lifecycle")?;
    let subjects = bench.subjects();
    let cold =
        bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| match subject {
            Subject::Floor => floor_create_start_delete(bench, &unique_id("cold-floor")),
            Subject::Shim(shim) => shim_cold_path(&lab, bench, shim),
        })?;
    let mut cold_metric = Metric::new(
        "direct_cold_ms",
        "cold path /bin/true, shim alone: Create→Start→Wait→Delete over ttrpc (floor: `runc create`+`start`+`delete`)",
        "ms",
        Better::Lower,
    );
    fill(&mut cold_metric, &subjects, cold);
    let cold_overhead = overhead(
        &cold_metric,
        "direct_cold_overhead_ms",
        "cold path, shim alone: overhead over runc",
    );
    let exit =
        bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| match subject {
            Subject::Floor => floor_exit(bench),
            Subject::Shim(shim) => shim_exit(&lab, bench, shim),
        })?;
    let mut exit_metric = Metric::new(
        "direct_exit_event_ms",
        "exit → event, shim alone: kill -9 of the init → `/tasks/exit` received (floor: pidfd readable)",
        "ms",
        Better::Lower,
    );
    fill(&mut exit_metric, &subjects, exit);
    Ok(vec![cold_metric, cold_overhead, exit_metric])
}

/// Create → Start → Wait → Delete of /bin/true over ttrpc, in ms.
fn shim_cold_path(lab: &Lab, bench: &Bench<'_>, shim: &Shim) -> Result<f64> {
    let trial = Trial::launch(lab, bench, shim, &["/bin/true"])?;
    let client = trial.daemon()?.client();
    let started = Instant::now();
    client.create(&trial.create)?;
    client.start(&trial.id, "")?;
    let exit = client.wait(&trial.id, "")?;
    client.delete(&trial.id, "")?;
    let elapsed = started.elapsed();
    if exit.status != 0 {
        bail!("/bin/true exited with status {}", exit.status);
    }
    Ok(millis(elapsed))
}

/// A sleeper's init killed with SIGKILL; ms until its `/tasks/exit` event arrives.
fn shim_exit(lab: &Lab, bench: &Bench<'_>, shim: &Shim) -> Result<f64> {
    let trial = Trial::launch(lab, bench, shim, &["sleep", "86400"])?;
    let client = trial.daemon()?.client();
    let pid = client.create(&trial.create)?;
    client.start(&trial.id, "")?;
    // Events published before the kill (create, start) are not what is timed.
    while trial.events.try_recv().is_ok() {}
    let pid = i32::try_from(pid).context("init pid")?;
    let started = Instant::now();
    sys::kill(pid, libc::SIGKILL);
    let until = started + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let event = trial
            .events
            .recv_timeout(left)
            .context("no /tasks/exit event")?;
        if matches!(event.payload, EventPayload::Exit(ref exit) if exit.container_id == trial.id) {
            return Ok(millis(started.elapsed()));
        }
    }
}

/// `runc create`, `runc start`, the exit of /bin/true (a pidfd), `runc delete`, in ms.
pub(super) fn floor_create_start_delete(bench: &Bench<'_>, id: &str) -> Result<f64> {
    let bundle = bench.floor.bundle(id, &["/bin/true"])?;
    let pid_file = bundle.join("init.pid");
    let started = Instant::now();
    let mut create = bench.floor.runc(&["create", "--pid-file"]);
    create.arg(&pid_file).arg("--bundle").arg(&bundle).arg(id);
    proc::run_quiet(&mut create, DEADLINE)?;
    let init = pidfd_of(&pid_file)?;
    proc::run_quiet(&mut bench.floor.runc(&["start", id]), DEADLINE)?;
    if !sys::wait_readable(&init, DEADLINE)? {
        bail!("/bin/true still running after {DEADLINE:?}");
    }
    proc::run_quiet(&mut bench.floor.runc(&["delete", id]), DEADLINE)?;
    let elapsed = started.elapsed();
    let _ = fs::remove_dir_all(&bundle);
    Ok(millis(elapsed))
}

/// A `runc run -d` sleeper killed with SIGKILL; ms until its pidfd is readable.
pub(super) fn floor_exit(bench: &Bench<'_>) -> Result<f64> {
    let id = unique_id("exit-floor");
    let bundle = bench.floor.bundle(&id, &["sleep", "86400"])?;
    let pid_file = bundle.join("init.pid");
    let mut run = bench.floor.runc(&["run", "-d", "--pid-file"]);
    run.arg(&pid_file).arg("--bundle").arg(&bundle).arg(&id);
    proc::run_quiet(&mut run, DEADLINE)?;
    let pid = read_pid(&pid_file)?;
    let init = sys::pidfd_open(pid.unsigned_abs()).context("pidfd_open init")?;
    let started = Instant::now();
    sys::kill(pid, libc::SIGKILL);
    let exited = sys::wait_readable(&init, DEADLINE)?;
    let elapsed = started.elapsed();
    bench.floor.remove(&id)?;
    let _ = fs::remove_dir_all(&bundle);
    if !exited {
        bail!("init {pid} survived SIGKILL for {DEADLINE:?}");
    }
    Ok(millis(elapsed))
}

fn read_pid(pid_file: &Path) -> Result<i32> {
    let text = fs::read_to_string(pid_file).context("read pid file")?;
    text.trim().parse().context("parse pid file")
}

/// A pidfd for the init whose pid runc wrote to `pid_file`.
fn pidfd_of(pid_file: &Path) -> Result<std::os::fd::OwnedFd> {
    let pid = read_pid(pid_file)?;
    sys::pidfd_open(pid.unsigned_abs()).context("pidfd_open init")
}
