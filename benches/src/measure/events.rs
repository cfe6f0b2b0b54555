//! Exit → event through containerd: SIGKILL of a `ctr run -d` sleeper's init → its
//! `/tasks/exit` line from `ctr events`, against the floor of a pidfd on a runc sleeper's
//! init (as soon as anyone can know).
//!
//! One `ctr events` runs for the whole measurement; a thread stamps each line as it
//! arrives, so the clock stops when ctr prints, not when the trial gets to read it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use wren_tests::unique_id;

use super::lifecycle::floor_exit;
use super::{fill, millis, Bench, Subject};
use crate::report::{Better, Metric};
use crate::sys;

/// How long an exit may take to show up.
const DEADLINE: Duration = Duration::from_secs(60);

/// The exit → event row through containerd.
pub fn exit_through_containerd(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let events = CtrEvents::start(bench)?;
    let subjects = bench.subjects();
    let results =
        bench.warm_then_measure(&subjects, bench.sizes.trials, |subject, _| match subject {
            Subject::Floor => floor_exit(bench),
            Subject::Shim(shim) => {
                let id = unique_id("exitev");
                bench.containerd.start_sleeper(shim, &id)?;
                let timed = kill_and_await(bench, &events, &id);
                let removed = bench.containerd.remove(&[id]);
                let elapsed = timed?;
                removed?;
                Ok(elapsed)
            }
        })?;
    let mut metric = Metric::new(
        "exit_event_ms",
        "exit → event via containerd: kill -9 of the init → `/tasks/exit` from `ctr events` (floor: pidfd readable)",
        "ms",
        Better::Lower,
    );
    fill(&mut metric, &subjects, results);
    Ok(vec![metric])
}

fn kill_and_await(bench: &Bench<'_>, events: &CtrEvents, id: &str) -> Result<f64> {
    let pid = bench.containerd.task_pid(id)?;
    // Lines about earlier tasks (create, start, their deletes) are not what is timed.
    while events.lines.try_recv().is_ok() {}
    let started = Instant::now();
    sys::kill(pid, libc::SIGKILL);
    let until = started + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let (at, line) = events
            .lines
            .recv_timeout(left)
            .with_context(|| format!("no /tasks/exit for {id} from `ctr events`"))?;
        if line.contains("/tasks/exit") && line.contains(id) {
            return Ok(millis(at.saturating_duration_since(started)));
        }
    }
}

/// A running `ctr events`, its lines stamped on arrival; killed on drop.
struct CtrEvents {
    child: Child,
    lines: Receiver<(Instant, String)>,
}

impl CtrEvents {
    fn start(bench: &Bench<'_>) -> Result<Self> {
        let mut child = bench
            .containerd
            .ctr(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn ctr events")?;
        let stdout = child.stdout.take().context("ctr events stdout")?;
        let (sender, lines) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("ctr-events".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if sender.send((Instant::now(), line)).is_err() {
                        return;
                    }
                }
            })
            .context("spawn ctr events reader")?;
        Ok(Self { child, lines })
    }
}

impl Drop for CtrEvents {
    fn drop(&mut self) {
        // By PID, through the Child: it is unreaped, so the PID is still ours.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
