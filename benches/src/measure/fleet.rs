//! Fleets of idle containers: `count` detached `sleep` containers per shim, started
//! round-robin across shims, removed on drop.

use std::time::Instant;

use anyhow::Result;
use wren_tests::unique_id;

use super::{millis, Bench};
use crate::cli::Shim;
use crate::containerd::Containerd;

/// One shim's idle containers.
#[derive(Debug)]
pub struct Fleet<'a> {
    /// The shim serving them.
    pub shim: &'a Shim,
    /// Container ids.
    pub ids: Vec<String>,
    /// The distinct shim daemons serving them.
    pub pids: Vec<i32>,
    /// How long each `ctr run -d` took, ms.
    pub start_ms: Vec<f64>,
}

/// Every shim's fleet, or why it could not be started.
#[derive(Debug)]
pub struct Fleets<'a> {
    containerd: &'a Containerd,
    /// Fleets that started completely.
    pub ready: Vec<Fleet<'a>>,
    /// Shims whose fleet failed, with the error.
    pub failed: Vec<(&'a Shim, String)>,
}

impl<'a> Fleets<'a> {
    /// Starts `count` sleepers for every shim, one of each shim per round.
    pub fn start(bench: &Bench<'a>, count: usize, prefix: &str) -> Result<Self> {
        let mut fleets = Self {
            containerd: bench.containerd,
            ready: Vec::new(),
            failed: Vec::new(),
        };
        let shims: &'a [Shim] = bench.shims;
        fleets.ready = shims
            .iter()
            .map(|shim| Fleet {
                shim,
                ids: Vec::new(),
                pids: Vec::new(),
                start_ms: Vec::new(),
            })
            .collect();
        for round in 0..count {
            let mut i = 0;
            while i < fleets.ready.len() {
                bench.interrupt.check()?;
                let fleet = &mut fleets.ready[i];
                if let Err(err) = start_one(bench.containerd, fleet, prefix) {
                    let fleet = fleets.ready.remove(i);
                    eprintln!(
                        "{}: fleet failed in round {round}: {err:#}",
                        fleet.shim.name
                    );
                    fleets.failed.push((fleet.shim, format!("{err:#}")));
                    // Best effort: whatever did start is removed now, not at the end.
                    let _ = fleets.containerd.remove(&fleet.ids);
                    continue;
                }
                i += 1;
            }
            fleets.ready.rotate_left(1);
        }
        for fleet in &mut fleets.ready {
            fleet.pids.sort_unstable();
            fleet.pids.dedup();
        }
        fleets
            .ready
            .sort_by_key(|f| bench.shims.iter().position(|s| s == f.shim));
        Ok(fleets)
    }

    /// The fleet of `shim`, if it started.
    pub fn of(&self, shim: &Shim) -> Option<&Fleet<'a>> {
        self.ready.iter().find(|f| f.shim == shim)
    }
}

fn start_one(containerd: &Containerd, fleet: &mut Fleet<'_>, prefix: &str) -> Result<()> {
    let id = unique_id(&format!("{prefix}-{}", fleet.shim.name));
    fleet.ids.push(id.clone());
    let started = Instant::now();
    let pid = containerd.start_sleeper(fleet.shim, &id)?;
    fleet.start_ms.push(millis(started.elapsed()));
    fleet.pids.push(pid);
    Ok(())
}

impl Drop for Fleets<'_> {
    fn drop(&mut self) {
        for fleet in &self.ready {
            if let Err(err) = self.containerd.remove(&fleet.ids) {
                eprintln!("cleanup: removing {} fleet: {err:#}", fleet.shim.name);
            }
        }
    }
}
