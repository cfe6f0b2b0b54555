//! cgroup v1 statistics through cgroups-rs's controllers, mapped onto [`v1::Metrics`].

use cgroups_rs::fs::blkio::{BlkIoController, BlkIoData, IoService};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::hugetlb::HugeTlbController;
use cgroups_rs::fs::memory::{MemController, Memory};
use cgroups_rs::fs::Cgroup;

use super::{keyed, pids, v1_size};
use crate::v1::{
    self, BlkioEntry, BlkioStat, CpuStat, CpuUsage, HugetlbStat, MemoryEntry, MemoryOomControl,
    MemoryStat, Throttle,
};

/// `cpuacct.stat` counts in `USER_HZ` ticks (100 on every architecture we build for).
const NANOS_PER_TICK: u64 = 10_000_000;

pub(super) fn read(cgroup: &Cgroup) -> v1::Metrics {
    // One read of the memory controller feeds both `memory` and `memory_oom_control`.
    let memory: Option<(&MemController, Memory)> = cgroup
        .controller_of::<MemController>()
        .map(|controller| (controller, controller.memory_stat()));
    v1::Metrics {
        hugetlb: hugetlb(cgroup),
        pids: pids(cgroup),
        cpu: cpu(cgroup),
        memory: memory
            .as_ref()
            .map(|(controller, stat)| memory_stat(controller, stat)),
        blkio: cgroup.controller_of::<BlkIoController>().map(blkio),
        // cgroups-rs hands rdma files back as unparsed text.
        rdma: None,
        memory_oom_control: memory.as_ref().map(|(_, stat)| MemoryOomControl {
            oom_kill_disable: u64::from(stat.oom_control.oom_kill_disable),
            under_oom: u64::from(stat.oom_control.under_oom),
            oom_kill: stat.oom_control.oom_kill,
        }),
    }
}

/// Huge page sizes as cgroups-rs names them, empty without a hugetlb controller.
pub(super) fn hugetlb_sizes(cgroup: &Cgroup) -> Vec<String> {
    cgroup
        .controller_of::<HugeTlbController>()
        .map(HugeTlbController::get_sizes)
        .unwrap_or_default()
}

fn hugetlb(cgroup: &Cgroup) -> Vec<HugetlbStat> {
    let Some(controller) = cgroup.controller_of::<HugeTlbController>() else {
        return Vec::new();
    };
    controller
        .get_sizes()
        .into_iter()
        .filter_map(|size| {
            Some(HugetlbStat {
                usage: controller.usage_in_bytes(&size).ok()?,
                max: controller.max_usage_in_bytes(&size).unwrap_or(0),
                failcnt: controller.failcnt(&size).unwrap_or(0),
                pagesize: size,
            })
        })
        .collect()
}

fn cpu(cgroup: &Cgroup) -> Option<CpuStat> {
    let usage = cgroup
        .controller_of::<CpuAcctController>()
        .map(|controller| {
            let acct = controller.cpuacct();
            CpuUsage {
                total: acct.usage,
                kernel: keyed(&acct.stat, "system").saturating_mul(NANOS_PER_TICK),
                user: keyed(&acct.stat, "user").saturating_mul(NANOS_PER_TICK),
                per_cpu: acct
                    .usage_percpu
                    .split_ascii_whitespace()
                    .filter_map(|value| value.parse().ok())
                    .collect(),
            }
        });
    let throttling = cgroup.controller_of::<CpuController>().map(|controller| {
        let stat = controller.cpu().stat;
        Throttle {
            periods: keyed(&stat, "nr_periods"),
            throttled_periods: keyed(&stat, "nr_throttled"),
            throttled_time: keyed(&stat, "throttled_time"),
        }
    });
    (usage.is_some() || throttling.is_some()).then_some(CpuStat { usage, throttling })
}

fn memory_stat(controller: &MemController, memory: &Memory) -> MemoryStat {
    let mut stat = MemoryStat::default();
    // cgroups-rs keeps every `memory.stat` line it could parse in `raw`.
    for (key, value) in &memory.stat.raw {
        if let Some(field) = stat.field(key) {
            *field = *value;
        }
    }
    stat.usage = MemoryEntry {
        limit: v1_size(memory.limit_in_bytes),
        usage: memory.usage_in_bytes,
        max: memory.max_usage_in_bytes,
        failcnt: memory.fail_cnt,
    };
    let swap = controller.memswap();
    stat.swap = Some(MemoryEntry {
        limit: v1_size(swap.limit_in_bytes),
        usage: swap.usage_in_bytes,
        max: swap.max_usage_in_bytes,
        failcnt: swap.fail_cnt,
    });
    let kernel = controller.kmem_stat();
    stat.kernel = Some(MemoryEntry {
        limit: v1_size(kernel.limit_in_bytes),
        usage: kernel.usage_in_bytes,
        max: kernel.max_usage_in_bytes,
        failcnt: kernel.fail_cnt,
    });
    let tcp = controller.kmem_tcp_stat();
    stat.kernel_tcp = Some(MemoryEntry {
        limit: v1_size(tcp.limit_in_bytes),
        usage: tcp.usage_in_bytes,
        max: tcp.max_usage_in_bytes,
        failcnt: tcp.fail_cnt,
    });
    stat
}

/// The CFQ `*_recursive` lists, or the throttle counters when those are all empty, as
/// containerd reads them.
fn blkio(controller: &BlkIoController) -> BlkioStat {
    let blkio = controller.blkio();
    let mut stat = BlkioStat {
        io_service_bytes_recursive: services(&blkio.io_service_bytes_recursive),
        io_serviced_recursive: services(&blkio.io_serviced_recursive),
        io_queued_recursive: services(&blkio.io_queued_recursive),
        io_service_time_recursive: services(&blkio.io_service_time_recursive),
        io_wait_time_recursive: services(&blkio.io_wait_time_recursive),
        io_merged_recursive: services(&blkio.io_merged_recursive),
        io_time_recursive: data(&blkio.time_recursive),
        sectors_recursive: data(&blkio.sectors_recursive),
    };
    if stat == BlkioStat::default() {
        stat.io_serviced_recursive = services(&blkio.throttle.io_serviced);
        stat.io_service_bytes_recursive = services(&blkio.throttle.io_service_bytes);
    }
    stat
}

/// cgroups-rs folds a device's op lines into one struct; unfold them in the kernel's order.
fn services(list: &[IoService]) -> Vec<BlkioEntry> {
    list.iter()
        .flat_map(|service| {
            [
                ("Read", service.read),
                ("Write", service.write),
                ("Sync", service.sync),
                ("Async", service.r#async),
                ("Discard", service.discard),
                ("Total", service.total),
            ]
            .map(|(op, value)| BlkioEntry {
                op: op.to_owned(),
                device: String::new(),
                major: u64::try_from(service.major).unwrap_or(0),
                minor: u64::try_from(service.minor).unwrap_or(0),
                value,
            })
        })
        .collect()
}

fn data(list: &[BlkIoData]) -> Vec<BlkioEntry> {
    list.iter()
        .map(|entry| BlkioEntry {
            op: String::new(),
            device: String::new(),
            major: u64::try_from(entry.major).unwrap_or(0),
            minor: u64::try_from(entry.minor).unwrap_or(0),
            value: entry.data,
        })
        .collect()
}
