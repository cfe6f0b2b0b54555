//! cgroup v2 statistics through cgroups-rs's controllers, mapped onto [`v2::Metrics`].

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hugetlb::HugeTlbController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::Cgroup;

use super::{keyed, pids};
use crate::v2::{self, CpuStat, HugeTlbStat, IoEntry, IoStat, MemoryStat};

pub(super) fn read(cgroup: &Cgroup) -> v2::Metrics {
    v2::Metrics {
        pids: pids(cgroup),
        cpu: cgroup.controller_of::<CpuController>().map(cpu),
        memory: cgroup.controller_of::<MemController>().map(memory),
        // cgroups-rs's v2 hierarchy has no rdma controller.
        rdma: None,
        io: cgroup.controller_of::<BlkIoController>().map(io),
        hugetlb: hugetlb(cgroup),
        // cgroups-rs reads memory.events only to wait for OOM, never as statistics.
        memory_events: None,
    }
}

/// `cpu.stat`, which cgroups-rs hands back unparsed; no pressure.
fn cpu(controller: &CpuController) -> CpuStat {
    let stat = controller.cpu().stat;
    CpuStat {
        usage_usec: keyed(&stat, "usage_usec"),
        user_usec: keyed(&stat, "user_usec"),
        system_usec: keyed(&stat, "system_usec"),
        nr_periods: keyed(&stat, "nr_periods"),
        nr_throttled: keyed(&stat, "nr_throttled"),
        throttled_usec: keyed(&stat, "throttled_usec"),
        nr_bursts: keyed(&stat, "nr_bursts"),
        burst_usec: keyed(&stat, "burst_usec"),
        psi: None,
    }
}

fn memory(controller: &MemController) -> MemoryStat {
    let memory = controller.memory_stat();
    let mut stat = MemoryStat::default();
    for (key, value) in &memory.stat.raw {
        if let Some(field) = stat.field(key) {
            *field = *value;
        }
    }
    // cgroups-rs spells `max` as -1 in `memory.max`.
    stat.usage_limit = u64::try_from(memory.limit_in_bytes).unwrap_or(u64::MAX);
    stat.usage = memory.usage_in_bytes;
    stat.max_usage = memory.max_usage_in_bytes;
    let swap = controller.memswap();
    // Here `max` fails to parse as a number and cgroups-rs turns that into 0.
    stat.swap_limit = u64::try_from(swap.limit_in_bytes).unwrap_or(0);
    stat.swap_usage = swap.usage_in_bytes;
    stat.swap_max_usage = swap.max_usage_in_bytes;
    stat
}

/// `io.stat` lines of exactly the six counters cgroups-rs knows; no pressure.
fn io(controller: &BlkIoController) -> IoStat {
    let usage = controller
        .blkio()
        .io_stat
        .iter()
        .map(|line| IoEntry {
            major: u64::try_from(line.major).unwrap_or(0),
            minor: u64::try_from(line.minor).unwrap_or(0),
            rbytes: line.rbytes,
            wbytes: line.wbytes,
            rios: line.rios,
            wios: line.wios,
        })
        .collect();
    IoStat { usage, psi: None }
}

fn hugetlb(cgroup: &Cgroup) -> Vec<HugeTlbStat> {
    let Some(controller) = cgroup.controller_of::<HugeTlbController>() else {
        return Vec::new();
    };
    controller
        .get_sizes()
        .into_iter()
        .filter_map(|size| {
            Some(HugeTlbStat {
                current: controller.usage_in_bytes(&size).ok()?,
                // `max` does not parse as a number: cgroups-rs gives an error, read as 0.
                max: controller.limit_in_bytes(&size).unwrap_or(0),
                failcnt: controller.failcnt(&size).unwrap_or(0),
                pagesize: size,
            })
        })
        .collect()
}
