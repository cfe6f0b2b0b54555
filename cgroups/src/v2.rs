//! cgroup v2 statistics, shaped like containerd's `io.containerd.cgroups.v2.Metrics`
//! (`cgroup2/stats/metrics.proto`) and filled from the same files containerd's
//! `cgroup2.Manager.Stat` reads. A section whose primary file is absent is `None`; secondary
//! single-value files that are absent read as 0, as in containerd. `max` reads as `u64::MAX`.

use std::path::Path;

pub use crate::psi::{PsiData, PsiStats};
pub use crate::v1::{PidsStat, RdmaEntry, RdmaStat};

use crate::locate::V2Cgroup;
use crate::read::{parse_v2, Content, FileReader, StatsError};

/// All v2 statistics of one cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// `pids.current` / `pids.max`.
    pub pids: Option<PidsStat>,
    /// `cpu.stat` and `cpu.pressure`.
    pub cpu: Option<CpuStat>,
    /// `memory.stat`, the memory and swap counters, `memory.pressure`.
    pub memory: Option<MemoryStat>,
    /// `rdma.current` / `rdma.max`.
    pub rdma: Option<RdmaStat>,
    /// `io.stat` and `io.pressure`.
    pub io: Option<IoStat>,
    /// One entry per huge page size.
    pub hugetlb: Vec<HugeTlbStat>,
    /// `memory.events`.
    pub memory_events: Option<MemoryEvents>,
}

/// `cpu.stat` (microseconds and counts) and `cpu.pressure`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(
    missing_docs,
    reason = "each counter is the cpu.stat key of the same name"
)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
    pub nr_bursts: u64,
    pub burst_usec: u64,
    /// `cpu.pressure`.
    pub psi: Option<PsiStats>,
}

/// `memory.stat` keys (bytes or event counts), the usage counters and `memory.pressure`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(
    missing_docs,
    reason = "each counter is the memory.stat key of the same name"
)]
pub struct MemoryStat {
    pub anon: u64,
    pub file: u64,
    pub kernel_stack: u64,
    pub slab: u64,
    pub sock: u64,
    pub shmem: u64,
    pub file_mapped: u64,
    pub file_dirty: u64,
    pub file_writeback: u64,
    pub anon_thp: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    pub unevictable: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    pub pgfault: u64,
    pub pgmajfault: u64,
    /// Before Linux 5.9; split into `_anon` and `_file` since.
    pub workingset_refault: u64,
    /// Before Linux 5.9; split into `_anon` and `_file` since.
    pub workingset_activate: u64,
    pub workingset_nodereclaim: u64,
    pub pgrefill: u64,
    pub pgscan: u64,
    pub pgsteal: u64,
    pub pgactivate: u64,
    pub pgdeactivate: u64,
    pub pglazyfree: u64,
    pub pglazyfreed: u64,
    pub thp_fault_alloc: u64,
    pub thp_collapse_alloc: u64,
    pub workingset_refault_anon: u64,
    pub workingset_refault_file: u64,
    pub workingset_activate_anon: u64,
    pub workingset_activate_file: u64,
    /// `memory.current`.
    pub usage: u64,
    /// `memory.max`.
    pub usage_limit: u64,
    /// `memory.peak`.
    pub max_usage: u64,
    /// `memory.swap.current`.
    pub swap_usage: u64,
    /// `memory.swap.max`.
    pub swap_limit: u64,
    /// `memory.swap.peak`.
    pub swap_max_usage: u64,
    /// `memory.pressure`.
    pub psi: Option<PsiStats>,
}

/// `memory.events` counters (hierarchical).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each counter is the memory.events key of the same name"
)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    /// Times the cgroup hit its limit and invoked the OOM killer (also charged to parents).
    pub oom: u64,
    /// Processes in this cgroup killed by the OOM killer: the counter TaskOOM follows.
    pub oom_kill: u64,
    pub oom_group_kill: u64,
}

/// `io.stat` per device and `io.pressure`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoStat {
    /// One entry per device line of `io.stat`.
    pub usage: Vec<IoEntry>,
    /// `io.pressure`.
    pub psi: Option<PsiStats>,
}

/// One `io.stat` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each counter is the io.stat key of the same name"
)]
pub struct IoEntry {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// Usage of one huge page size, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugeTlbStat {
    /// `hugetlb.<size>.current`.
    pub current: u64,
    /// `hugetlb.<size>.max`.
    pub max: u64,
    /// Page size as in the file names, e.g. `2MB`.
    pub pagesize: String,
    /// `max` of `hugetlb.<size>.events`: allocations refused by the limit.
    pub failcnt: u64,
}

/// Reads all v2 statistics of `cgroup`.
pub(crate) fn read(cgroup: &V2Cgroup) -> Result<Metrics, StatsError> {
    let reader = &mut FileReader::new();
    let dir = cgroup.path.as_path();
    Ok(Metrics {
        pids: read_pids(reader, dir)?,
        cpu: read_cpu(reader, dir)?,
        memory: read_memory(reader, dir)?,
        rdma: crate::rdma::read(reader, dir)?,
        io: read_io(reader, dir)?,
        hugetlb: read_hugetlb(reader, dir, &cgroup.hugepage_sizes)?,
        memory_events: read_memory_events(reader, dir)?,
    })
}

fn read_pids(reader: &mut FileReader, dir: &Path) -> Result<Option<PidsStat>, StatsError> {
    let Some(current) = reader.read_value(dir, "pids.current", parse_v2)? else {
        return Ok(None);
    };
    let limit = reader.read_value(dir, "pids.max", parse_v2)?.unwrap_or(0);
    Ok(Some(PidsStat { current, limit }))
}

fn read_cpu(reader: &mut FileReader, dir: &Path) -> Result<Option<CpuStat>, StatsError> {
    let Some(content) = reader.read(dir, "cpu.stat")? else {
        return Ok(None);
    };
    let mut cpu = CpuStat::default();
    content.for_each_pair(parse_v2, |key, value| {
        let field = match key {
            "usage_usec" => &mut cpu.usage_usec,
            "user_usec" => &mut cpu.user_usec,
            "system_usec" => &mut cpu.system_usec,
            "nr_periods" => &mut cpu.nr_periods,
            "nr_throttled" => &mut cpu.nr_throttled,
            "throttled_usec" => &mut cpu.throttled_usec,
            "nr_bursts" => &mut cpu.nr_bursts,
            "burst_usec" => &mut cpu.burst_usec,
            _ => return,
        };
        *field = value;
    })?;
    cpu.psi = crate::psi::read(reader, dir, "cpu.pressure")?;
    Ok(Some(cpu))
}

fn read_memory(reader: &mut FileReader, dir: &Path) -> Result<Option<MemoryStat>, StatsError> {
    let Some(content) = reader.read(dir, "memory.stat")? else {
        return Ok(None);
    };
    let mut stat = MemoryStat::default();
    content.for_each_pair(parse_v2, |key, value| {
        if let Some(field) = stat.field(key) {
            *field = value;
        }
    })?;
    let mut value = |name| {
        reader
            .read_value(dir, name, parse_v2)
            .map(Option::unwrap_or_default)
    };
    stat.usage = value("memory.current")?;
    stat.usage_limit = value("memory.max")?;
    stat.max_usage = value("memory.peak")?;
    stat.swap_usage = value("memory.swap.current")?;
    stat.swap_limit = value("memory.swap.max")?;
    stat.swap_max_usage = value("memory.swap.peak")?;
    stat.psi = crate::psi::read(reader, dir, "memory.pressure")?;
    Ok(Some(stat))
}

impl MemoryStat {
    /// The field fed by a `memory.stat` key; `None` for keys the proto does not carry.
    fn field(&mut self, key: &str) -> Option<&mut u64> {
        Some(match key {
            "anon" => &mut self.anon,
            "file" => &mut self.file,
            "kernel_stack" => &mut self.kernel_stack,
            "slab" => &mut self.slab,
            "sock" => &mut self.sock,
            "shmem" => &mut self.shmem,
            "file_mapped" => &mut self.file_mapped,
            "file_dirty" => &mut self.file_dirty,
            "file_writeback" => &mut self.file_writeback,
            "anon_thp" => &mut self.anon_thp,
            "inactive_anon" => &mut self.inactive_anon,
            "active_anon" => &mut self.active_anon,
            "inactive_file" => &mut self.inactive_file,
            "active_file" => &mut self.active_file,
            "unevictable" => &mut self.unevictable,
            "slab_reclaimable" => &mut self.slab_reclaimable,
            "slab_unreclaimable" => &mut self.slab_unreclaimable,
            "pgfault" => &mut self.pgfault,
            "pgmajfault" => &mut self.pgmajfault,
            "workingset_refault" => &mut self.workingset_refault,
            "workingset_activate" => &mut self.workingset_activate,
            "workingset_nodereclaim" => &mut self.workingset_nodereclaim,
            "pgrefill" => &mut self.pgrefill,
            "pgscan" => &mut self.pgscan,
            "pgsteal" => &mut self.pgsteal,
            "pgactivate" => &mut self.pgactivate,
            "pgdeactivate" => &mut self.pgdeactivate,
            "pglazyfree" => &mut self.pglazyfree,
            "pglazyfreed" => &mut self.pglazyfreed,
            "thp_fault_alloc" => &mut self.thp_fault_alloc,
            "thp_collapse_alloc" => &mut self.thp_collapse_alloc,
            "workingset_refault_anon" => &mut self.workingset_refault_anon,
            "workingset_refault_file" => &mut self.workingset_refault_file,
            "workingset_activate_anon" => &mut self.workingset_activate_anon,
            "workingset_activate_file" => &mut self.workingset_activate_file,
            _ => return None,
        })
    }
}

/// Reads `memory.events`; `None` if the file is absent (no memory controller, or the
/// cgroup was removed).
pub(crate) fn read_memory_events(
    reader: &mut FileReader,
    dir: &Path,
) -> Result<Option<MemoryEvents>, StatsError> {
    let Some(content) = reader.read(dir, "memory.events")? else {
        return Ok(None);
    };
    let mut events = MemoryEvents::default();
    content.for_each_pair(parse_v2, |key, value| {
        let field = match key {
            "low" => &mut events.low,
            "high" => &mut events.high,
            "max" => &mut events.max,
            "oom" => &mut events.oom,
            "oom_kill" => &mut events.oom_kill,
            "oom_group_kill" => &mut events.oom_group_kill,
            _ => return,
        };
        *field = value;
    })?;
    Ok(Some(events))
}

fn read_io(reader: &mut FileReader, dir: &Path) -> Result<Option<IoStat>, StatsError> {
    let usage = reader
        .read(dir, "io.stat")?
        .map(parse_io_stat)
        .transpose()?;
    let psi = crate::psi::read(reader, dir, "io.pressure")?;
    if usage.is_none() && psi.is_none() {
        return Ok(None);
    }
    Ok(Some(IoStat {
        usage: usage.unwrap_or_default(),
        psi,
    }))
}

/// Lines are `major:minor key=value ...`. Only the four byte/op counters are parsed: other
/// keys (`dbytes`, `cost.vrate=100.00`, `depth=max`, ...) vary by kernel and configuration.
fn parse_io_stat(content: Content<'_>) -> Result<Vec<IoEntry>, StatsError> {
    let mut entries = Vec::new();
    for (number, line) in content.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some((major, minor)) = fields.next().and_then(|device| device.split_once(':')) else {
            return Err(content.malformed(number, line));
        };
        let mut entry = IoEntry {
            major: content.parse(major, parse_v2)?,
            minor: content.parse(minor, parse_v2)?,
            ..IoEntry::default()
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(content.malformed(number, line));
            };
            let counter = match key {
                "rbytes" => &mut entry.rbytes,
                "wbytes" => &mut entry.wbytes,
                "rios" => &mut entry.rios,
                "wios" => &mut entry.wios,
                _ => continue,
            };
            *counter = content.parse(value, parse_v2)?;
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn read_hugetlb(
    reader: &mut FileReader,
    dir: &Path,
    sizes: &[String],
) -> Result<Vec<HugeTlbStat>, StatsError> {
    let mut stats = Vec::with_capacity(sizes.len());
    for size in sizes {
        let Some(current) = reader.read_value(dir, &format!("hugetlb.{size}.current"), parse_v2)?
        else {
            continue;
        };
        let max = reader.read_value(dir, &format!("hugetlb.{size}.max"), parse_v2)?;
        let events = reader.read(dir, &format!("hugetlb.{size}.events"))?;
        let failcnt = events
            .map(|content| content.pair("max", parse_v2))
            .transpose()?
            .flatten();
        stats.push(HugeTlbStat {
            current,
            max: max.unwrap_or(0),
            pagesize: size.clone(),
            failcnt: failcnt.unwrap_or(0),
        });
    }
    Ok(stats)
}
