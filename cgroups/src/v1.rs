//! cgroup v1 statistics, shaped like containerd's `io.containerd.cgroups.v1.Metrics`
//! (`cgroup1/stats/metrics.proto`) and filled from the same files containerd's `cgroup1`
//! package reads. A section whose primary file is absent is `None` (containerd's
//! `IgnoreNotExist`); `network` and `cgroup_stats` are not filled by containerd on Linux and
//! are left out.

use std::path::Path;

use crate::locate::V1Cgroup;
use crate::read::{parse_v1, Content, FileReader, StatsError};

/// All v1 statistics of one cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// One entry per huge page size (`hugetlb.<size>.*`).
    pub hugetlb: Vec<HugetlbStat>,
    /// `pids.current` / `pids.max`.
    pub pids: Option<PidsStat>,
    /// `cpuacct.*` usage and `cpu.stat` throttling.
    pub cpu: Option<CpuStat>,
    /// `memory.stat` and the usage/limit files of memory, memsw, kmem and kmem.tcp.
    pub memory: Option<MemoryStat>,
    /// `blkio.*` per-device lists.
    pub blkio: Option<BlkioStat>,
    /// `rdma.current` / `rdma.max`.
    pub rdma: Option<RdmaStat>,
    /// `memory.oom_control`.
    pub memory_oom_control: Option<MemoryOomControl>,
}

/// Usage of one huge page size, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugetlbStat {
    /// `usage_in_bytes`.
    pub usage: u64,
    /// `max_usage_in_bytes`.
    pub max: u64,
    /// `failcnt`.
    pub failcnt: u64,
    /// Page size as in the file names, e.g. `2MB`.
    pub pagesize: String,
}

/// Process count and limit (`max` reads as 0, as containerd does on v1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsStat {
    /// `pids.current`.
    pub current: u64,
    /// `pids.max`.
    pub limit: u64,
}

/// CPU usage and throttling; each half is present when its controller is mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// From the `cpuacct` controller.
    pub usage: Option<CpuUsage>,
    /// From the `cpu` controller's `cpu.stat`.
    pub throttling: Option<Throttle>,
}

/// CPU time, all in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// `cpuacct.usage`.
    pub total: u64,
    /// `system` of `cpuacct.stat`, converted from clock ticks.
    pub kernel: u64,
    /// `user` of `cpuacct.stat`, converted from clock ticks.
    pub user: u64,
    /// `cpuacct.usage_percpu`.
    pub per_cpu: Vec<u64>,
}

/// `cpu.stat` of the cpu controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttle {
    /// `nr_periods`.
    pub periods: u64,
    /// `nr_throttled`.
    pub throttled_periods: u64,
    /// `throttled_time`, nanoseconds.
    pub throttled_time: u64,
}

/// `memory.stat` keys (bytes or event counts) plus the four usage entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each field is the memory.stat key of the same name"
)]
pub struct MemoryStat {
    pub cache: u64,
    pub rss: u64,
    pub rss_huge: u64,
    pub mapped_file: u64,
    pub dirty: u64,
    pub writeback: u64,
    /// `pgpgin`.
    pub pg_pg_in: u64,
    /// `pgpgout`.
    pub pg_pg_out: u64,
    /// `pgfault`.
    pub pg_fault: u64,
    /// `pgmajfault`.
    pub pg_maj_fault: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    pub unevictable: u64,
    pub hierarchical_memory_limit: u64,
    /// `hierarchical_memsw_limit`.
    pub hierarchical_swap_limit: u64,
    pub total_cache: u64,
    pub total_rss: u64,
    pub total_rss_huge: u64,
    pub total_mapped_file: u64,
    pub total_dirty: u64,
    pub total_writeback: u64,
    /// `total_pgpgin`.
    pub total_pg_pg_in: u64,
    /// `total_pgpgout`.
    pub total_pg_pg_out: u64,
    /// `total_pgfault`.
    pub total_pg_fault: u64,
    /// `total_pgmajfault`.
    pub total_pg_maj_fault: u64,
    pub total_inactive_anon: u64,
    pub total_active_anon: u64,
    pub total_inactive_file: u64,
    pub total_active_file: u64,
    pub total_unevictable: u64,
    /// `memory.{usage_in_bytes,max_usage_in_bytes,failcnt,limit_in_bytes}`.
    pub usage: MemoryEntry,
    /// `memory.memsw.*`; `None` without swap accounting.
    pub swap: Option<MemoryEntry>,
    /// `memory.kmem.*`; `None` where the kernel dropped it.
    pub kernel: Option<MemoryEntry>,
    /// `memory.kmem.tcp.*`; `None` where the kernel dropped it.
    pub kernel_tcp: Option<MemoryEntry>,
}

/// One usage/limit family of the memory controller, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEntry {
    /// `*.limit_in_bytes`.
    pub limit: u64,
    /// `*.usage_in_bytes`.
    pub usage: u64,
    /// `*.max_usage_in_bytes`.
    pub max: u64,
    /// `*.failcnt`.
    pub failcnt: u64,
}

/// `memory.oom_control`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryOomControl {
    /// 1 when the OOM killer is disabled for this cgroup.
    pub oom_kill_disable: u64,
    /// 1 while tasks are stalled at the limit.
    pub under_oom: u64,
    /// Processes killed by the OOM killer (kernel 4.13 and later).
    pub oom_kill: u64,
}

/// Per-device block I/O lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each field is the blkio.<name> file of the same name"
)]
pub struct BlkioStat {
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    pub io_serviced_recursive: Vec<BlkioEntry>,
    pub io_queued_recursive: Vec<BlkioEntry>,
    pub io_service_time_recursive: Vec<BlkioEntry>,
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    pub io_merged_recursive: Vec<BlkioEntry>,
    /// `blkio.time_recursive`.
    pub io_time_recursive: Vec<BlkioEntry>,
    pub sectors_recursive: Vec<BlkioEntry>,
}

/// One line of a blkio file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total`; empty for single-value files.
    pub op: String,
    /// `/dev/<name>` from `/proc/partitions`; empty when unknown.
    pub device: String,
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// The value.
    pub value: u64,
}

/// RDMA usage and limits per device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaStat {
    /// `rdma.current`.
    pub current: Vec<RdmaEntry>,
    /// `rdma.max` (`max` reads as `u32::MAX`).
    pub limit: Vec<RdmaEntry>,
}

/// One device line of an rdma file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaEntry {
    /// The device name.
    pub device: String,
    /// `hca_handle`.
    pub hca_handles: u32,
    /// `hca_object`.
    pub hca_objects: u32,
}

/// Reads all v1 statistics of `cgroup`.
pub(crate) fn read(cgroup: &V1Cgroup) -> Result<Metrics, StatsError> {
    let mut reader = FileReader::new();
    let reader = &mut reader;
    let memory = cgroup.memory.as_deref();
    Ok(Metrics {
        hugetlb: match cgroup.hugetlb.as_deref() {
            Some(dir) => read_hugetlb(reader, dir, &cgroup.hugepage_sizes)?,
            None => Vec::new(),
        },
        pids: cgroup
            .pids
            .as_deref()
            .map(|dir| read_pids(reader, dir))
            .transpose()?
            .flatten(),
        cpu: read_cpu(reader, cgroup.cpu.as_deref(), cgroup.cpuacct.as_deref())?,
        memory: memory
            .map(|dir| read_memory(reader, dir))
            .transpose()?
            .flatten(),
        blkio: cgroup
            .blkio
            .as_deref()
            .map(|dir| crate::blkio::read(reader, dir, cgroup.partitions.as_deref()))
            .transpose()?,
        rdma: cgroup
            .rdma
            .as_deref()
            .map(|dir| crate::rdma::read(reader, dir))
            .transpose()?
            .flatten(),
        memory_oom_control: memory
            .map(|dir| read_oom_control(reader, dir))
            .transpose()?
            .flatten(),
    })
}

fn read_hugetlb(
    reader: &mut FileReader,
    dir: &Path,
    sizes: &[String],
) -> Result<Vec<HugetlbStat>, StatsError> {
    let mut stats = Vec::with_capacity(sizes.len());
    for size in sizes {
        let mut value =
            |key: &str| reader.read_value(dir, &format!("hugetlb.{size}.{key}"), parse_v1);
        let Some(usage) = value("usage_in_bytes")? else {
            continue;
        };
        stats.push(HugetlbStat {
            usage,
            max: value("max_usage_in_bytes")?.unwrap_or(0),
            failcnt: value("failcnt")?.unwrap_or(0),
            pagesize: size.clone(),
        });
    }
    Ok(stats)
}

fn read_pids(reader: &mut FileReader, dir: &Path) -> Result<Option<PidsStat>, StatsError> {
    let Some(current) = reader.read_value(dir, "pids.current", parse_v1)? else {
        return Ok(None);
    };
    let limit = reader.read_value(dir, "pids.max", parse_v1)?.unwrap_or(0);
    Ok(Some(PidsStat { current, limit }))
}

/// `cpuacct.stat` counts in `USER_HZ` ticks, which Linux fixes at 100 for user space on every
/// architecture we build for (containerd hard-codes the same).
const USER_HZ: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

fn read_cpu(
    reader: &mut FileReader,
    cpu: Option<&Path>,
    cpuacct: Option<&Path>,
) -> Result<Option<CpuStat>, StatsError> {
    let usage = cpuacct
        .map(|dir| read_cpu_usage(reader, dir))
        .transpose()?
        .flatten();
    let throttling = match cpu {
        Some(dir) => reader
            .read(dir, "cpu.stat")?
            .map(parse_throttle)
            .transpose()?,
        None => None,
    };
    if usage.is_none() && throttling.is_none() {
        return Ok(None);
    }
    Ok(Some(CpuStat { usage, throttling }))
}

fn parse_throttle(content: Content<'_>) -> Result<Throttle, StatsError> {
    let mut throttle = Throttle::default();
    content.for_each_pair(parse_v1, |key, value| match key {
        "nr_periods" => throttle.periods = value,
        "nr_throttled" => throttle.throttled_periods = value,
        "throttled_time" => throttle.throttled_time = value,
        _ => {}
    })?;
    Ok(throttle)
}

fn read_cpu_usage(reader: &mut FileReader, dir: &Path) -> Result<Option<CpuUsage>, StatsError> {
    let Some(total) = reader.read_value(dir, "cpuacct.usage", parse_v1)? else {
        return Ok(None);
    };
    let mut usage = CpuUsage {
        total,
        ..CpuUsage::default()
    };
    if let Some(content) = reader.read(dir, "cpuacct.stat")? {
        let user = content.pair("user", parse_v1)?;
        let system = content.pair("system", parse_v1)?;
        let missing = |key| StatsError::MissingKey {
            path: content.path.to_path_buf(),
            key,
        };
        usage.user = user
            .ok_or_else(|| missing("user"))?
            .saturating_mul(NANOS_PER_TICK);
        usage.kernel = system
            .ok_or_else(|| missing("system"))?
            .saturating_mul(NANOS_PER_TICK);
    }
    if let Some(content) = reader.read(dir, "cpuacct.usage_percpu")? {
        usage.per_cpu = content
            .text
            .split_ascii_whitespace()
            .map(|value| content.parse(value, parse_v1))
            .collect::<Result<_, _>>()?;
    }
    Ok(Some(usage))
}

/// File names of one memory usage family.
struct EntryFiles {
    limit: &'static str,
    usage: &'static str,
    max: &'static str,
    failcnt: &'static str,
}

const USAGE_FILES: EntryFiles = EntryFiles {
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
    max: "memory.max_usage_in_bytes",
    failcnt: "memory.failcnt",
};
const SWAP_FILES: EntryFiles = EntryFiles {
    limit: "memory.memsw.limit_in_bytes",
    usage: "memory.memsw.usage_in_bytes",
    max: "memory.memsw.max_usage_in_bytes",
    failcnt: "memory.memsw.failcnt",
};
const KERNEL_FILES: EntryFiles = EntryFiles {
    limit: "memory.kmem.limit_in_bytes",
    usage: "memory.kmem.usage_in_bytes",
    max: "memory.kmem.max_usage_in_bytes",
    failcnt: "memory.kmem.failcnt",
};
const KERNEL_TCP_FILES: EntryFiles = EntryFiles {
    limit: "memory.kmem.tcp.limit_in_bytes",
    usage: "memory.kmem.tcp.usage_in_bytes",
    max: "memory.kmem.tcp.max_usage_in_bytes",
    failcnt: "memory.kmem.tcp.failcnt",
};

/// A family is present when its usage file is; its other files default to 0.
fn read_entry(
    reader: &mut FileReader,
    dir: &Path,
    files: &EntryFiles,
) -> Result<Option<MemoryEntry>, StatsError> {
    let Some(usage) = reader.read_value(dir, files.usage, parse_v1)? else {
        return Ok(None);
    };
    Ok(Some(MemoryEntry {
        usage,
        limit: reader.read_value(dir, files.limit, parse_v1)?.unwrap_or(0),
        max: reader.read_value(dir, files.max, parse_v1)?.unwrap_or(0),
        failcnt: reader
            .read_value(dir, files.failcnt, parse_v1)?
            .unwrap_or(0),
    }))
}

fn read_memory(reader: &mut FileReader, dir: &Path) -> Result<Option<MemoryStat>, StatsError> {
    let mut stat = MemoryStat::default();
    match reader.read(dir, "memory.stat")? {
        Some(content) => content.for_each_pair(parse_v1, |key, value| {
            if let Some(field) = stat.field(key) {
                *field = value;
            }
        })?,
        None => return Ok(None),
    }
    stat.usage = read_entry(reader, dir, &USAGE_FILES)?.unwrap_or_default();
    stat.swap = read_entry(reader, dir, &SWAP_FILES)?;
    stat.kernel = read_entry(reader, dir, &KERNEL_FILES)?;
    stat.kernel_tcp = read_entry(reader, dir, &KERNEL_TCP_FILES)?;
    Ok(Some(stat))
}

impl MemoryStat {
    /// The field fed by a `memory.stat` key; `None` for keys the proto does not carry.
    fn field(&mut self, key: &str) -> Option<&mut u64> {
        Some(match key {
            "cache" => &mut self.cache,
            "rss" => &mut self.rss,
            "rss_huge" => &mut self.rss_huge,
            "mapped_file" => &mut self.mapped_file,
            "dirty" => &mut self.dirty,
            "writeback" => &mut self.writeback,
            "pgpgin" => &mut self.pg_pg_in,
            "pgpgout" => &mut self.pg_pg_out,
            "pgfault" => &mut self.pg_fault,
            "pgmajfault" => &mut self.pg_maj_fault,
            "inactive_anon" => &mut self.inactive_anon,
            "active_anon" => &mut self.active_anon,
            "inactive_file" => &mut self.inactive_file,
            "active_file" => &mut self.active_file,
            "unevictable" => &mut self.unevictable,
            "hierarchical_memory_limit" => &mut self.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut self.hierarchical_swap_limit,
            "total_cache" => &mut self.total_cache,
            "total_rss" => &mut self.total_rss,
            "total_rss_huge" => &mut self.total_rss_huge,
            "total_mapped_file" => &mut self.total_mapped_file,
            "total_dirty" => &mut self.total_dirty,
            "total_writeback" => &mut self.total_writeback,
            "total_pgpgin" => &mut self.total_pg_pg_in,
            "total_pgpgout" => &mut self.total_pg_pg_out,
            "total_pgfault" => &mut self.total_pg_fault,
            "total_pgmajfault" => &mut self.total_pg_maj_fault,
            "total_inactive_anon" => &mut self.total_inactive_anon,
            "total_active_anon" => &mut self.total_active_anon,
            "total_inactive_file" => &mut self.total_inactive_file,
            "total_active_file" => &mut self.total_active_file,
            "total_unevictable" => &mut self.total_unevictable,
            _ => return None,
        })
    }
}

/// Reads `memory.oom_control`; `None` if the file is absent (the cgroup was removed).
pub(crate) fn read_oom_control(
    reader: &mut FileReader,
    dir: &Path,
) -> Result<Option<MemoryOomControl>, StatsError> {
    let Some(content) = reader.read(dir, "memory.oom_control")? else {
        return Ok(None);
    };
    let mut control = MemoryOomControl::default();
    content.for_each_pair(parse_v1, |key, value| match key {
        "oom_kill_disable" => control.oom_kill_disable = value,
        "under_oom" => control.under_oom = value,
        "oom_kill" => control.oom_kill = value,
        _ => {}
    })?;
    Ok(Some(control))
}
