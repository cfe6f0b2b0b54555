//! The same lookup and statistics as [`Cgroup`], done by the cgroups-rs crate: an experiment
//! behind the `cgroups-rs-backend` feature, measured against our readers by
//! `examples/backend_compare.rs` (docs/architecture.md, "cgroups-rs, measured").
//!
//! cgroups-rs reads every file a controller has and turns a missing or unparsable file into 0
//! (or an empty string), so [`RsCgroup::stats`] cannot fail and cannot tell "absent" from
//! "zero". What it does not read at all stays `None` or empty: pressure (PSI), `memory.events`,
//! rdma (it hands back the raw text), blkio device names.

mod v1;
mod v2;

use std::path::PathBuf;

use cgroups_rs::fs::cgroup::get_cgroups_relative_paths_by_pid;
use cgroups_rs::fs::error::Error as RsError;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{hierarchies, Cgroup as RsFsCgroup, Controllers, MaxValue, Subsystem};

use crate::locate::{V1Cgroup, V2Cgroup};
use crate::v1::PidsStat;
use crate::{Cgroup, Stats};

/// Why cgroups-rs could not locate a process's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum RsLocateError {
    /// `/proc/<pid>/cgroup` could not be read.
    #[error("failed to read the cgroup membership of pid {pid}")]
    Membership {
        /// The process.
        pid: u32,
        /// cgroups-rs's error.
        #[source]
        source: RsError,
    },
    /// A unified host, but the process has no `0::<path>` membership line.
    #[error("process {pid} has no cgroup v2 membership")]
    NoUnifiedMembership {
        /// The process.
        pid: u32,
    },
}

/// A process's cgroup as cgroups-rs sees it.
#[derive(Debug)]
pub struct RsCgroup {
    cgroup: RsFsCgroup,
}

impl RsCgroup {
    /// Locates the cgroup of `pid` with cgroups-rs: its host layout guess (`statfs` of
    /// `/sys/fs/cgroup`), its mount table and its reading of `/proc/<pid>/cgroup`.
    pub fn for_pid(pid: u32) -> Result<Self, RsLocateError> {
        let hierarchy = hierarchies::auto();
        let paths = get_cgroups_relative_paths_by_pid(pid)
            .map_err(|source| RsLocateError::Membership { pid, source })?;
        let cgroup = if hierarchy.v2() {
            let path = paths
                .get("")
                .ok_or(RsLocateError::NoUnifiedMembership { pid })?;
            // Relative, or joining it to the mount point would replace the mount point.
            RsFsCgroup::load(hierarchy, path.trim_start_matches('/'))
        } else {
            // Each controller's directory is its mount point, then its own path from
            // /proc/<pid>/cgroup, then this path. "." adds nothing; an empty path would make
            // cgroups-rs skip the joining and leave every controller at its mount point.
            RsFsCgroup::load_with_relative_paths(hierarchy, ".", paths)
        };
        Ok(Self { cgroup })
    }

    /// Reads the statistics through cgroups-rs's controllers.
    pub fn stats(&self) -> Stats {
        if self.cgroup.v2() {
            Stats::V2(v2::read(&self.cgroup))
        } else {
            Stats::V1(v1::read(&self.cgroup))
        }
    }

    /// The directories cgroups-rs reads, in the shape of [`Cgroup::for_pid`]'s answer (huge
    /// page sizes as cgroups-rs names them, no `/proc/partitions`), to compare the lookups.
    pub fn located(&self) -> Cgroup {
        let dir = |kind: Controllers| {
            self.cgroup
                .subsystems()
                .iter()
                .map(Subsystem::to_controller)
                .find(|controller| controller.control_type() == kind)
                // cgroups-rs's v1 directories end in the "." we gave it.
                .map(|controller| controller.path().components().collect::<PathBuf>())
        };
        let hugepage_sizes = v1::hugetlb_sizes(&self.cgroup);
        if self.cgroup.v2() {
            // Every v2 controller sits in the one directory; cgroups-rs always adds freezer.
            return Cgroup::V2(V2Cgroup {
                path: dir(Controllers::Freezer).unwrap_or_else(PathBuf::new),
                hugepage_sizes,
            });
        }
        Cgroup::V1(V1Cgroup {
            memory: dir(Controllers::Mem),
            cpu: dir(Controllers::Cpu),
            cpuacct: dir(Controllers::CpuAcct),
            pids: dir(Controllers::Pids),
            blkio: dir(Controllers::BlkIo),
            hugetlb: dir(Controllers::HugeTlb),
            rdma: dir(Controllers::Rdma),
            hugepage_sizes,
            partitions: None,
        })
    }
}

/// `pids.current` / `pids.max`, the same on v1 and v2; `max` reads as 0, as in containerd.
fn pids(cgroup: &RsFsCgroup) -> Option<PidsStat> {
    let controller: &PidController = cgroup.controller_of()?;
    let current = controller.get_pid_current().ok()?;
    let limit = match controller.get_pid_max() {
        Ok(MaxValue::Value(limit)) => u64::try_from(limit).unwrap_or(0),
        Ok(MaxValue::Max) | Err(_) => 0,
    };
    Some(PidsStat { current, limit })
}

/// The value of `key` in a flat keyed text cgroups-rs hands back unparsed (`cpu.stat`,
/// `cpuacct.stat`); 0 when absent, as cgroups-rs does for its own fields.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// cgroups-rs spells unlimited as -1 where it parsed `max`, and negative values cannot be
/// sizes: both become 0 on v1, as containerd reads them.
fn v1_size(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_text_reads_like_cgroups_rs_fields() {
        let stat = "user 12\nsystem 34\n";
        assert_eq!((keyed(stat, "user"), keyed(stat, "system")), (12, 34));
        assert_eq!(keyed(stat, "absent"), 0);
        assert_eq!(v1_size(-1), 0);
    }

    #[test]
    fn this_process_is_located_where_our_lookup_finds_it() {
        let mut ours = Cgroup::for_pid(std::process::id()).expect("our lookup");
        let mut theirs = RsCgroup::for_pid(std::process::id())
            .expect("cgroups-rs lookup")
            .located();
        // Directories only: the two name huge page sizes from different places.
        for cgroup in [&mut ours, &mut theirs] {
            match cgroup {
                Cgroup::V1(v1) => {
                    v1.hugepage_sizes.clear();
                    v1.partitions = None;
                }
                Cgroup::V2(v2) => v2.hugepage_sizes.clear(),
            }
        }
        assert_eq!(ours, theirs);
    }
}
