//! cgroup statistics as containerd's metrics protos: `io.containerd.cgroups.v1.Metrics` on
//! legacy and hybrid hosts, `io.containerd.cgroups.v2.Metrics` on unified ones. The cgroups
//! crate already reads every file in containerd's units, so each function here copies fields
//! one to one; nothing is computed.

use protobuf::well_known_types::any::Any;
use protobuf::MessageField;
use wren_cgroups::{v1, v2, Stats};
use wren_shim_protocol::any::{self, AnyError};
use wren_shim_protocol::{cgroups_v1 as pb1, cgroups_v2 as pb2};

/// Packs `stats` into the `Any` that `StatsResponse.stats` carries, typed by the proto full
/// name as containerd's typeurl registry expects.
pub fn to_any(stats: &Stats) -> Result<Any, AnyError> {
    match stats {
        Stats::V1(metrics) => any::pack(&v1_metrics(metrics)),
        Stats::V2(metrics) => any::pack(&v2_metrics(metrics)),
    }
}

fn some<T>(value: Option<T>) -> MessageField<T> {
    MessageField::from_option(value)
}

/// The v1 metrics message; `network` and `cgroup_stats` stay empty, as containerd leaves them.
pub fn v1_metrics(stats: &v1::Metrics) -> pb1::Metrics {
    let mut out = pb1::Metrics::new();
    out.hugetlb = stats.hugetlb.iter().map(v1_hugetlb).collect();
    out.pids = some(stats.pids.as_ref().map(v1_pids));
    out.cpu = some(stats.cpu.as_ref().map(v1_cpu));
    out.memory = some(stats.memory.as_ref().map(v1_memory));
    out.blkio = some(stats.blkio.as_ref().map(v1_blkio));
    out.rdma = some(stats.rdma.as_ref().map(v1_rdma));
    out.memory_oom_control = some(stats.memory_oom_control.as_ref().map(v1_oom_control));
    out
}

fn v1_hugetlb(stat: &v1::HugetlbStat) -> pb1::HugetlbStat {
    let mut out = pb1::HugetlbStat::new();
    out.usage = stat.usage;
    out.max = stat.max;
    out.failcnt = stat.failcnt;
    out.pagesize.clone_from(&stat.pagesize);
    out
}

fn v1_pids(stat: &v1::PidsStat) -> pb1::PidsStat {
    let mut out = pb1::PidsStat::new();
    out.current = stat.current;
    out.limit = stat.limit;
    out
}

fn v1_cpu(stat: &v1::CpuStat) -> pb1::CPUStat {
    let mut out = pb1::CPUStat::new();
    out.usage = some(stat.usage.as_ref().map(|usage| {
        let mut out = pb1::CPUUsage::new();
        out.total = usage.total;
        out.kernel = usage.kernel;
        out.user = usage.user;
        out.per_cpu.clone_from(&usage.per_cpu);
        out
    }));
    out.throttling = some(stat.throttling.as_ref().map(|throttle| {
        let mut out = pb1::Throttle::new();
        out.periods = throttle.periods;
        out.throttled_periods = throttle.throttled_periods;
        out.throttled_time = throttle.throttled_time;
        out
    }));
    out
}

fn v1_memory(stat: &v1::MemoryStat) -> pb1::MemoryStat {
    let mut out = pb1::MemoryStat::new();
    out.cache = stat.cache;
    out.rss = stat.rss;
    out.rss_huge = stat.rss_huge;
    out.mapped_file = stat.mapped_file;
    out.dirty = stat.dirty;
    out.writeback = stat.writeback;
    out.pg_pg_in = stat.pg_pg_in;
    out.pg_pg_out = stat.pg_pg_out;
    out.pg_fault = stat.pg_fault;
    out.pg_maj_fault = stat.pg_maj_fault;
    out.inactive_anon = stat.inactive_anon;
    out.active_anon = stat.active_anon;
    out.inactive_file = stat.inactive_file;
    out.active_file = stat.active_file;
    out.unevictable = stat.unevictable;
    out.hierarchical_memory_limit = stat.hierarchical_memory_limit;
    out.hierarchical_swap_limit = stat.hierarchical_swap_limit;
    v1_memory_totals(stat, &mut out);
    out.usage = MessageField::some(v1_memory_entry(&stat.usage));
    out.swap = some(stat.swap.as_ref().map(v1_memory_entry));
    out.kernel = some(stat.kernel.as_ref().map(v1_memory_entry));
    out.kernel_tcp = some(stat.kernel_tcp.as_ref().map(v1_memory_entry));
    out
}

/// The hierarchical `total_*` half of `memory.stat`.
fn v1_memory_totals(stat: &v1::MemoryStat, out: &mut pb1::MemoryStat) {
    out.total_cache = stat.total_cache;
    out.total_rss = stat.total_rss;
    out.total_rss_huge = stat.total_rss_huge;
    out.total_mapped_file = stat.total_mapped_file;
    out.total_dirty = stat.total_dirty;
    out.total_writeback = stat.total_writeback;
    out.total_pg_pg_in = stat.total_pg_pg_in;
    out.total_pg_pg_out = stat.total_pg_pg_out;
    out.total_pg_fault = stat.total_pg_fault;
    out.total_pg_maj_fault = stat.total_pg_maj_fault;
    out.total_inactive_anon = stat.total_inactive_anon;
    out.total_active_anon = stat.total_active_anon;
    out.total_inactive_file = stat.total_inactive_file;
    out.total_active_file = stat.total_active_file;
    out.total_unevictable = stat.total_unevictable;
}

fn v1_memory_entry(entry: &v1::MemoryEntry) -> pb1::MemoryEntry {
    let mut out = pb1::MemoryEntry::new();
    out.limit = entry.limit;
    out.usage = entry.usage;
    out.max = entry.max;
    out.failcnt = entry.failcnt;
    out
}

fn v1_blkio(stat: &v1::BlkioStat) -> pb1::BlkIOStat {
    let entries = |list: &[v1::BlkioEntry]| list.iter().map(v1_blkio_entry).collect();
    let mut out = pb1::BlkIOStat::new();
    out.io_service_bytes_recursive = entries(&stat.io_service_bytes_recursive);
    out.io_serviced_recursive = entries(&stat.io_serviced_recursive);
    out.io_queued_recursive = entries(&stat.io_queued_recursive);
    out.io_service_time_recursive = entries(&stat.io_service_time_recursive);
    out.io_wait_time_recursive = entries(&stat.io_wait_time_recursive);
    out.io_merged_recursive = entries(&stat.io_merged_recursive);
    out.io_time_recursive = entries(&stat.io_time_recursive);
    out.sectors_recursive = entries(&stat.sectors_recursive);
    out
}

fn v1_blkio_entry(entry: &v1::BlkioEntry) -> pb1::BlkIOEntry {
    let mut out = pb1::BlkIOEntry::new();
    out.op.clone_from(&entry.op);
    out.device.clone_from(&entry.device);
    out.major = entry.major;
    out.minor = entry.minor;
    out.value = entry.value;
    out
}

fn v1_rdma(stat: &v1::RdmaStat) -> pb1::RdmaStat {
    let entry = |entry: &v1::RdmaEntry| {
        let mut out = pb1::RdmaEntry::new();
        out.device.clone_from(&entry.device);
        out.hca_handles = entry.hca_handles;
        out.hca_objects = entry.hca_objects;
        out
    };
    let mut out = pb1::RdmaStat::new();
    out.current = stat.current.iter().map(entry).collect();
    out.limit = stat.limit.iter().map(entry).collect();
    out
}

fn v1_oom_control(stat: &v1::MemoryOomControl) -> pb1::MemoryOomControl {
    let mut out = pb1::MemoryOomControl::new();
    out.oom_kill_disable = stat.oom_kill_disable;
    out.under_oom = stat.under_oom;
    out.oom_kill = stat.oom_kill;
    out
}

/// The v2 metrics message; `network` stays empty, as containerd leaves it.
pub fn v2_metrics(stats: &v2::Metrics) -> pb2::Metrics {
    let mut out = pb2::Metrics::new();
    out.pids = some(stats.pids.as_ref().map(|pids| {
        let mut out = pb2::PidsStat::new();
        out.current = pids.current;
        out.limit = pids.limit;
        out
    }));
    out.cpu = some(stats.cpu.as_ref().map(v2_cpu));
    out.memory = some(stats.memory.as_ref().map(v2_memory));
    out.rdma = some(stats.rdma.as_ref().map(v2_rdma));
    out.io = some(stats.io.as_ref().map(v2_io));
    out.hugetlb = stats.hugetlb.iter().map(v2_hugetlb).collect();
    out.memory_events = some(stats.memory_events.as_ref().map(v2_memory_events));
    out
}

fn v2_psi(stats: Option<&v2::PsiStats>) -> MessageField<pb2::PSIStats> {
    let data = |data: &v2::PsiData| {
        let mut out = pb2::PSIData::new();
        out.avg10 = data.avg10;
        out.avg60 = data.avg60;
        out.avg300 = data.avg300;
        out.total = data.total;
        out
    };
    some(stats.map(|stats| {
        let mut out = pb2::PSIStats::new();
        out.some = some(stats.some.as_ref().map(data));
        out.full = some(stats.full.as_ref().map(data));
        out
    }))
}

fn v2_cpu(stat: &v2::CpuStat) -> pb2::CPUStat {
    let mut out = pb2::CPUStat::new();
    out.usage_usec = stat.usage_usec;
    out.user_usec = stat.user_usec;
    out.system_usec = stat.system_usec;
    out.nr_periods = stat.nr_periods;
    out.nr_throttled = stat.nr_throttled;
    out.throttled_usec = stat.throttled_usec;
    out.nr_bursts = stat.nr_bursts;
    out.burst_usec = stat.burst_usec;
    out.psi = v2_psi(stat.psi.as_ref());
    out
}

fn v2_memory(stat: &v2::MemoryStat) -> pb2::MemoryStat {
    let mut out = pb2::MemoryStat::new();
    out.anon = stat.anon;
    out.file = stat.file;
    out.kernel_stack = stat.kernel_stack;
    out.slab = stat.slab;
    out.sock = stat.sock;
    out.shmem = stat.shmem;
    out.file_mapped = stat.file_mapped;
    out.file_dirty = stat.file_dirty;
    out.file_writeback = stat.file_writeback;
    out.anon_thp = stat.anon_thp;
    out.inactive_anon = stat.inactive_anon;
    out.active_anon = stat.active_anon;
    out.inactive_file = stat.inactive_file;
    out.active_file = stat.active_file;
    out.unevictable = stat.unevictable;
    out.slab_reclaimable = stat.slab_reclaimable;
    out.slab_unreclaimable = stat.slab_unreclaimable;
    v2_memory_events_counters(stat, &mut out);
    out.usage = stat.usage;
    out.usage_limit = stat.usage_limit;
    out.max_usage = stat.max_usage;
    out.swap_usage = stat.swap_usage;
    out.swap_limit = stat.swap_limit;
    out.swap_max_usage = stat.swap_max_usage;
    out.psi = v2_psi(stat.psi.as_ref());
    out
}

/// The event counters of `memory.stat` (faults, reclaim, working set, THP).
#[allow(
    deprecated,
    reason = "workingset_refault/activate are deprecated in the proto, still sent"
)]
fn v2_memory_events_counters(stat: &v2::MemoryStat, out: &mut pb2::MemoryStat) {
    out.pgfault = stat.pgfault;
    out.pgmajfault = stat.pgmajfault;
    out.workingset_refault = stat.workingset_refault;
    out.workingset_activate = stat.workingset_activate;
    out.workingset_nodereclaim = stat.workingset_nodereclaim;
    out.pgrefill = stat.pgrefill;
    out.pgscan = stat.pgscan;
    out.pgsteal = stat.pgsteal;
    out.pgactivate = stat.pgactivate;
    out.pgdeactivate = stat.pgdeactivate;
    out.pglazyfree = stat.pglazyfree;
    out.pglazyfreed = stat.pglazyfreed;
    out.thp_fault_alloc = stat.thp_fault_alloc;
    out.thp_collapse_alloc = stat.thp_collapse_alloc;
    out.workingset_refault_anon = stat.workingset_refault_anon;
    out.workingset_refault_file = stat.workingset_refault_file;
    out.workingset_activate_anon = stat.workingset_activate_anon;
    out.workingset_activate_file = stat.workingset_activate_file;
}

fn v2_rdma(stat: &v2::RdmaStat) -> pb2::RdmaStat {
    let entry = |entry: &v2::RdmaEntry| {
        let mut out = pb2::RdmaEntry::new();
        out.device.clone_from(&entry.device);
        out.hca_handles = entry.hca_handles;
        out.hca_objects = entry.hca_objects;
        out
    };
    let mut out = pb2::RdmaStat::new();
    out.current = stat.current.iter().map(entry).collect();
    out.limit = stat.limit.iter().map(entry).collect();
    out
}

fn v2_io(stat: &v2::IoStat) -> pb2::IOStat {
    let mut out = pb2::IOStat::new();
    out.usage = stat
        .usage
        .iter()
        .map(|entry| {
            let mut out = pb2::IOEntry::new();
            out.major = entry.major;
            out.minor = entry.minor;
            out.rbytes = entry.rbytes;
            out.wbytes = entry.wbytes;
            out.rios = entry.rios;
            out.wios = entry.wios;
            out
        })
        .collect();
    out.psi = v2_psi(stat.psi.as_ref());
    out
}

fn v2_hugetlb(stat: &v2::HugeTlbStat) -> pb2::HugeTlbStat {
    let mut out = pb2::HugeTlbStat::new();
    out.current = stat.current;
    out.max = stat.max;
    out.pagesize.clone_from(&stat.pagesize);
    out.failcnt = stat.failcnt;
    out
}

fn v2_memory_events(events: &v2::MemoryEvents) -> pb2::MemoryEvents {
    let mut out = pb2::MemoryEvents::new();
    out.low = events.low;
    out.high = events.high;
    out.max = events.max;
    out.oom = events.oom;
    out.oom_kill = events.oom_kill;
    out.oom_group_kill = events.oom_group_kill;
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
