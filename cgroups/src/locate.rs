//! Finding a process's cgroup directories from `/proc/<pid>/cgroup` and the mount table.
//!
//! Three host layouts exist: legacy v1 (one hierarchy per controller, some co-mounted such as
//! `cpu,cpuacct`), unified v2, and hybrid (v1 controllers plus a cgroup2 mount, usually
//! `/sys/fs/cgroup/unified`, holding few or no controllers). Like containerd, a host with any
//! v1 controller hierarchy is treated as v1.

use std::path::{Path, PathBuf};

use crate::read::StatsError;
use crate::{v1, v2, Stats};

/// Why a process's cgroup could not be located.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// `/proc/self/mountinfo` or `/proc/<pid>/cgroup` could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A mountinfo line lacks the fields every mountinfo line has.
    #[error("malformed mountinfo line {line}: {text:?}")]
    MalformedMount {
        /// One-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A `/proc/<pid>/cgroup` line is not `id:controllers:path`.
    #[error("malformed cgroup membership line {line}: {text:?}")]
    MalformedMembership {
        /// One-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// The mount table holds no cgroup filesystem at all.
    #[error("no cgroup filesystem is mounted")]
    NoCgroupMount,
    /// A unified host, but the process has no `0::<path>` membership line.
    #[error("process has no cgroup v2 membership")]
    NoUnifiedMembership,
}

/// The cgroup filesystems in a mount table.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    mounts: Vec<CgroupMount>,
}

#[derive(Debug, Clone)]
struct CgroupMount {
    /// The directory of the hierarchy that is mounted (`/` unless bind-mounted or namespaced).
    root: PathBuf,
    mount_point: PathBuf,
    /// Controllers of a v1 hierarchy; `None` for cgroup2.
    controllers: Option<Vec<String>>,
}

/// v1 controllers whose statistics we read; anything else in the super options is a mount
/// option (`rw`, `name=systemd`, `xattr`, ...).
const V1_STAT_CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb", "rdma",
];

impl MountTable {
    /// Reads the calling process's mount table from `/proc/self/mountinfo`.
    pub fn read_self() -> Result<Self, LocateError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| LocateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses mountinfo text (format of `proc(5)`), keeping only cgroup mounts.
    pub fn parse(mountinfo: &str) -> Result<Self, LocateError> {
        let mut mounts = Vec::new();
        for (index, line) in mountinfo.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let malformed = || LocateError::MalformedMount {
                line: index + 1,
                text: line.to_owned(),
            };
            let (before, after) = line.split_once(" - ").ok_or_else(malformed)?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut tail = after.split(' ');
            let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
                return Err(malformed());
            };
            let (Some(fs_type), Some(_source), Some(options)) =
                (tail.next(), tail.next(), tail.next())
            else {
                return Err(malformed());
            };
            let controllers = match fs_type {
                "cgroup" => Some(options.split(',').map(str::to_owned).collect()),
                "cgroup2" => None,
                _ => continue,
            };
            mounts.push(CgroupMount {
                root: PathBuf::from(unescape(root)),
                mount_point: PathBuf::from(unescape(mount_point)),
                controllers,
            });
        }
        Ok(Self { mounts })
    }

    /// Whether the host is treated as cgroup v1: some v1 hierarchy carries a real controller.
    pub fn is_v1(&self) -> bool {
        self.mounts.iter().any(|mount| {
            mount.controllers.as_ref().is_some_and(|controllers| {
                controllers
                    .iter()
                    .any(|c| V1_STAT_CONTROLLERS.contains(&c.as_str()))
            })
        })
    }

    fn v1_mount(&self, controller: &str) -> impl Iterator<Item = &CgroupMount> + '_ {
        let controller = controller.to_owned();
        self.mounts.iter().filter(move |mount| {
            mount
                .controllers
                .as_ref()
                .is_some_and(|cs| cs.contains(&controller))
        })
    }

    fn v2_mounts(&self) -> impl Iterator<Item = &CgroupMount> {
        self.mounts
            .iter()
            .filter(|mount| mount.controllers.is_none())
    }
}

/// mountinfo escapes space, tab, newline and backslash as three octal digits (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directories of one process's cgroup on a v1 (or hybrid) host, one per controller we
/// read; `None` where the controller is not mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Cgroup {
    /// `memory` controller directory.
    pub memory: Option<PathBuf>,
    /// `cpu` controller directory (throttling).
    pub cpu: Option<PathBuf>,
    /// `cpuacct` controller directory (usage); the same as `cpu` when co-mounted.
    pub cpuacct: Option<PathBuf>,
    /// `pids` controller directory.
    pub pids: Option<PathBuf>,
    /// `blkio` controller directory.
    pub blkio: Option<PathBuf>,
    /// `hugetlb` controller directory.
    pub hugetlb: Option<PathBuf>,
    /// `rdma` controller directory.
    pub rdma: Option<PathBuf>,
    /// Huge page sizes as cgroup file names spell them (`2MB`, `1GB`).
    pub hugepage_sizes: Vec<String>,
    /// `/proc/partitions`, to name blkio devices; `None` leaves device names empty.
    pub partitions: Option<PathBuf>,
}

/// The directory of one process's cgroup on a unified (v2) host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Cgroup {
    /// The cgroup directory.
    pub path: PathBuf,
    /// Huge page sizes as cgroup file names spell them (`2MB`, `1GB`).
    pub hugepage_sizes: Vec<String>,
}

/// A process's cgroup, located once (at container create) and read many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// A legacy or hybrid host.
    V1(V1Cgroup),
    /// A unified host.
    V2(V2Cgroup),
}

impl Cgroup {
    /// Locates the cgroup of `pid` on this host: `/proc/<pid>/cgroup`, `/proc/self/mountinfo`,
    /// huge page sizes from `/sys/kernel/mm/hugepages`, device names from `/proc/partitions`.
    pub fn for_pid(pid: u32) -> Result<Self, LocateError> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let membership =
            std::fs::read_to_string(&path).map_err(|source| LocateError::Read { path, source })?;
        let mut cgroup = Self::from_membership(&membership, &MountTable::read_self()?)?;
        let sizes = hugepage_sizes(Path::new("/sys/kernel/mm/hugepages"));
        match &mut cgroup {
            Cgroup::V1(v1) => {
                v1.hugepage_sizes = sizes;
                v1.partitions = Some(PathBuf::from("/proc/partitions"));
            }
            Cgroup::V2(v2) => v2.hugepage_sizes = sizes,
        }
        Ok(cgroup)
    }

    /// Locates a cgroup from `/proc/<pid>/cgroup` text and a mount table; no huge page sizes
    /// and no device names (set those fields if wanted).
    pub fn from_membership(membership: &str, mounts: &MountTable) -> Result<Self, LocateError> {
        if mounts.mounts.is_empty() {
            return Err(LocateError::NoCgroupMount);
        }
        let mut v1 = V1Cgroup::default();
        let mut unified = None;
        for (index, line) in membership.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(LocateError::MalformedMembership {
                    line: index + 1,
                    text: line.to_owned(),
                });
            };
            if id == "0" && controllers.is_empty() {
                unified = Some(path);
                continue;
            }
            for controller in controllers.split(',') {
                let dir = mounts
                    .v1_mount(controller)
                    .find_map(|mount| resolve(mount, path));
                if let (Some(slot), Some(dir)) = (v1.slot(controller), dir) {
                    *slot = Some(dir);
                }
            }
        }
        if mounts.is_v1() {
            return Ok(Cgroup::V1(v1));
        }
        let path = unified.ok_or(LocateError::NoUnifiedMembership)?;
        let dir = mounts.v2_mounts().find_map(|mount| resolve(mount, path));
        dir.map(|path| {
            Cgroup::V2(V2Cgroup {
                path,
                hugepage_sizes: Vec::new(),
            })
        })
        .ok_or(LocateError::NoCgroupMount)
    }

    /// Reads every statistic the kernel exposes for this cgroup.
    pub fn stats(&self) -> Result<Stats, StatsError> {
        match self {
            Cgroup::V1(cgroup) => v1::read(cgroup).map(Stats::V1),
            Cgroup::V2(cgroup) => v2::read(cgroup).map(Stats::V2),
        }
    }

    /// The directory whose memory files the OOM watcher uses, if the memory controller is
    /// mounted.
    pub fn memory_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1(cgroup) => cgroup.memory.as_deref(),
            Cgroup::V2(cgroup) => Some(&cgroup.path),
        }
    }
}

impl V1Cgroup {
    fn slot(&mut self, controller: &str) -> Option<&mut Option<PathBuf>> {
        match controller {
            "memory" => Some(&mut self.memory),
            "cpu" => Some(&mut self.cpu),
            "cpuacct" => Some(&mut self.cpuacct),
            "pids" => Some(&mut self.pids),
            "blkio" => Some(&mut self.blkio),
            "hugetlb" => Some(&mut self.hugetlb),
            "rdma" => Some(&mut self.rdma),
            _ => None,
        }
    }
}

/// Maps a hierarchy path to a directory under `mount`, if the mount exposes it.
fn resolve(mount: &CgroupMount, cgroup_path: &str) -> Option<PathBuf> {
    let relative = Path::new(cgroup_path).strip_prefix(&mount.root).ok()?;
    Some(mount.mount_point.join(relative))
}

/// Huge page sizes named the way hugetlb cgroup files name them: `hugepages-2048kB` in
/// `dir` (normally `/sys/kernel/mm/hugepages`) becomes `2MB`. Empty if `dir` is unreadable.
pub fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<(u64, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let kib: u64 = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kib, page_size_name(kib)))
        })
        .collect();
    sizes.sort_unstable();
    sizes.into_iter().map(|(_, name)| name).collect()
}

/// The kernel's spelling (`mm/hugetlb_cgroup.c`): the largest unit that divides nothing away.
fn page_size_name(kib: u64) -> String {
    if kib >= 1 << 20 {
        format!("{}GB", kib >> 20)
    } else if kib >= 1 << 10 {
        format!("{}MB", kib >> 10)
    } else {
        format!("{kib}KB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_is_v1_with_comounted_cpu() {
        let mounts = MountTable::parse(HYBRID).unwrap();
        assert!(mounts.is_v1());
        let membership = "9:name=systemd:/\n4:memory:/pod/c1\n2:cpu,cpuacct:/pod/c1\n1:pids:/pod/c1\n0::/pod/c1\n";
        let Cgroup::V1(v1) = Cgroup::from_membership(membership, &mounts).unwrap() else {
            panic!("hybrid host must be v1");
        };
        assert_eq!(
            v1.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/pod/c1"))
        );
        assert_eq!(
            v1.cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/pod/c1"))
        );
        assert_eq!(v1.cpuacct, v1.cpu);
        assert_eq!(
            v1.pids.as_deref(),
            Some(Path::new("/sys/fs/cgroup/pids/pod/c1"))
        );
        assert_eq!(v1.blkio, None);
    }

    #[test]
    fn unified_host_is_v2_and_namespaced_root_is_stripped() {
        let mounts = MountTable::parse(
            "29 23 0:26 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        )
        .unwrap();
        assert!(!mounts.is_v1());
        let cgroup = Cgroup::from_membership("0::/kubepods/pod1/c1\n", &mounts).unwrap();
        assert_eq!(
            cgroup.memory_dir(),
            Some(Path::new("/sys/fs/cgroup/pod1/c1")),
        );
    }

    #[test]
    fn escaped_mount_point_is_decoded() {
        let mounts =
            MountTable::parse("29 23 0:26 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n")
                .unwrap();
        let cgroup = Cgroup::from_membership("0::/a\n", &mounts).unwrap();
        assert_eq!(cgroup.memory_dir(), Some(Path::new("/mnt/my cgroups/a")));
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        assert!(matches!(
            MountTable::parse("1 2 3\n"),
            Err(LocateError::MalformedMount { line: 1, .. })
        ));
        let mounts = MountTable::parse(HYBRID).unwrap();
        assert!(matches!(
            Cgroup::from_membership("garbage\n", &mounts),
            Err(LocateError::MalformedMembership { line: 1, .. })
        ));
        assert!(matches!(
            Cgroup::from_membership("0::/\n", &MountTable::default()),
            Err(LocateError::NoCgroupMount)
        ));
        let unified =
            MountTable::parse("29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n").unwrap();
        assert!(matches!(
            Cgroup::from_membership("4:memory:/x\n", &unified),
            Err(LocateError::NoUnifiedMembership)
        ));
    }

    #[test]
    fn hugepage_directory_names_become_cgroup_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "hugepages-1048576kB",
            "hugepages-2048kB",
            "hugepages-64kB",
            "unrelated",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(hugepage_sizes(dir.path()), ["64KB", "2MB", "1GB"]);
        assert!(hugepage_sizes(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn this_process_is_located() {
        let cgroup = Cgroup::for_pid(std::process::id()).unwrap();
        let dir = cgroup.memory_dir().expect("memory controller mounted");
        assert!(dir.is_dir(), "{} is not a directory", dir.display());
    }
}
