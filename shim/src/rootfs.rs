//! Mounting `CreateTaskRequest.rootfs` onto `<bundle>/rootfs`, and unmounting it again: what
//! every runtime that takes containerd's snapshots does in the host's mount namespace (the runc
//! shim before `runc create`, nsbox before its pivot, wrenvm before sharing the root with its
//! guest).
//!
//! Options are interpreted the way containerd's `mount.All` does on Linux (`mount_linux.go`): known
//! flag words set or clear `MS_*` bits, propagation words are applied in a second `mount(2)`, a
//! read-only bind is remounted read-only, and everything else is passed as filesystem data.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use wren_shim_protocol::types::Mount;

/// Errors from mounting or unmounting a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `<bundle>/rootfs` could not be created.
    #[error("failed to create rootfs directory {path}")]
    CreateRootfs {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount's target leaves the rootfs (`..`).
    #[error("mount target {target} escapes the rootfs")]
    TargetEscapes {
        /// The target as given.
        target: String,
    },
    /// An option this module does not carry out (`loop`).
    #[error("mount of type {kind} uses the unsupported option {option}")]
    UnsupportedOption {
        /// The mount type.
        kind: String,
        /// The option.
        option: String,
    },
    /// The filesystem data does not fit the page `mount(2)` copies.
    #[error("mount data for {kind} at {target} is longer than a page")]
    DataTooLong {
        /// The mount type.
        kind: String,
        /// The mount point.
        target: PathBuf,
    },
    /// `mount(2)` failed.
    #[error("failed to mount {source_path} ({kind}) on {target}")]
    Mount {
        /// The mount type.
        kind: String,
        /// The mount source.
        source_path: String,
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The propagation change after a mount failed.
    #[error("failed to change the propagation of {target}")]
    Propagation {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// A read-only bind could not be made read-only.
    #[error("failed to remount {target} read-only")]
    RemountReadOnly {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The mount table could not be read.
    #[error("failed to read /proc/self/mountinfo")]
    ReadMountinfo(#[source] io::Error),
    /// `umount2(2)` failed.
    #[error("failed to unmount {target}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
}

/// One entry of `CreateTaskRequest.rootfs`, free of protobuf types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// The filesystem type (`overlay`, `bind`...).
    pub kind: String,
    /// The mount source.
    pub source: String,
    /// A path inside the rootfs (containerd ≥2.0), usually empty.
    pub target: String,
    /// fstab-style option words.
    pub options: Vec<String>,
}

impl RootfsMount {
    /// The request's mounts, converted field by field.
    pub fn from_request(mounts: &[Mount]) -> Vec<Self> {
        mounts
            .iter()
            .map(|m| Self {
                kind: m.type_.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                options: m.options.clone(),
            })
            .collect()
    }
}

/// What a list of mount option words turns into.
#[derive(Debug, PartialEq, Eq)]
struct ParsedOptions {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
    loop_device: bool,
}

const PROPAGATION: MsFlags = MsFlags::MS_SHARED
    .union(MsFlags::MS_PRIVATE)
    .union(MsFlags::MS_SLAVE)
    .union(MsFlags::MS_UNBINDABLE);

/// The flag words containerd knows, as (word, clears the flag, flag).
const FLAG_WORDS: &[(&str, bool, MsFlags)] = &[
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("defaults", false, MsFlags::empty()),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

const PROPAGATION_WORDS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

fn parse_options(options: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
        loop_device: false,
    };
    for word in options {
        if let Some(&(_, clears, flag)) = FLAG_WORDS.iter().find(|(w, _, _)| w == word) {
            if clears {
                parsed.flags.remove(flag);
            } else {
                parsed.flags.insert(flag);
            }
        } else if let Some(&(_, flag)) = PROPAGATION_WORDS.iter().find(|(w, _)| w == word) {
            parsed.propagation.insert(flag);
        } else if word == "loop" {
            parsed.loop_device = true;
        } else if !word.starts_with("X-containerd.") {
            parsed.data.push(word.clone());
        }
    }
    parsed
}

/// The mount point of `mount` below `rootfs`; `..` is refused rather than resolved.
fn target_in(rootfs: &Path, target: &str) -> Result<PathBuf, Error> {
    let relative = Path::new(target);
    if relative
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Error::TargetEscapes {
            target: target.to_owned(),
        });
    }
    let relative: PathBuf = relative
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    Ok(rootfs.join(relative))
}

/// Creates `rootfs` (0711) and mounts every entry of `mounts` on it, in order. On failure the
/// mounts made so far are undone.
pub fn mount_all(mounts: &[RootfsMount], rootfs: &Path) -> Result<(), Error> {
    if mounts.is_empty() {
        return Ok(());
    }
    create_rootfs_dir(rootfs)?;
    for entry in mounts {
        if let Err(err) = mount_one(entry, rootfs) {
            if let Err(undo) = unmount_recursive(rootfs) {
                log::warn!("undoing rootfs mounts after a failed mount: {undo}");
            }
            return Err(err);
        }
    }
    Ok(())
}

fn create_rootfs_dir(rootfs: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o711).create(rootfs) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::CreateRootfs {
            path: rootfs.to_owned(),
            source,
        }),
    }
}

fn mount_one(entry: &RootfsMount, rootfs: &Path) -> Result<(), Error> {
    let target = target_in(rootfs, &entry.target)?;
    let parsed = parse_options(&entry.options);
    if parsed.loop_device {
        let option = "loop".to_owned();
        return Err(Error::UnsupportedOption {
            kind: entry.kind.clone(),
            option,
        });
    }
    let data = parsed.data.join(",");
    if data.len() > page_size() {
        return Err(Error::DataTooLong {
            kind: entry.kind.clone(),
            target,
        });
    }
    // A remount without new data only changes flags, which the calls below cover.
    if !parsed.flags.contains(MsFlags::MS_REMOUNT) || !data.is_empty() {
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(
            Some(entry.source.as_str()),
            &target,
            Some(entry.kind.as_str()),
            parsed.flags,
            data,
        )
        .map_err(|source| Error::Mount {
            kind: entry.kind.clone(),
            source_path: entry.source.clone(),
            target: target.clone(),
            source,
        })?;
    }
    if !parsed.propagation.is_empty() {
        let flags = parsed.propagation & (PROPAGATION | MsFlags::MS_REC | MsFlags::MS_SILENT);
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>).map_err(|source| {
            Error::Propagation {
                target: target.clone(),
                source,
            }
        })?;
    }
    let read_only_bind = MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if parsed.flags.contains(read_only_bind) {
        // MS_RDONLY is ignored by the initial bind; only a remount applies it.
        let flags = parsed.flags | MsFlags::MS_REMOUNT;
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>).map_err(|source| {
            Error::RemountReadOnly {
                target: target.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(4096)
}

/// Unmounts everything mounted at or below `target`, deepest first. A path that is not a
/// mount point (or does not exist) is not an error, so this is safe to repeat.
pub fn unmount_recursive(target: &Path) -> Result<(), Error> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(Error::ReadMountinfo)?;
    let mut points: Vec<PathBuf> = mount_points(&mountinfo)
        .filter(|point| point.starts_with(target))
        .collect();
    // Deeper mounts first; among equal paths, the later (upper) mount first.
    points.reverse();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in points {
        unmount_one(&point)?;
    }
    Ok(())
}

fn unmount_one(target: &Path) -> Result<(), Error> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
        // Something still holds the mount (a late process, an open file): detach it so
        // the bundle can go; the kernel frees it when the last user leaves.
        Err(Errno::EBUSY) => match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
            Err(source) => Err(Error::Unmount {
                target: target.to_owned(),
                source,
            }),
        },
        Err(source) => Err(Error::Unmount {
            target: target.to_owned(),
            source,
        }),
    }
}

/// The mount points of a mountinfo text, in file order (field 5, octal escapes decoded).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
}

fn unescape_octal(field: &str) -> PathBuf {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(digits) = escape {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_mounts_convert_field_by_field() {
        let mut proto = Mount::new();
        proto.type_ = "overlay".into();
        proto.source = "overlay".into();
        proto.target = "sub".into();
        proto.options = vec!["lowerdir=/l".into()];
        let expected = RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "sub".into(),
            options: vec!["lowerdir=/l".into()],
        };
        assert_eq!(RootfsMount::from_request(&[proto]), [expected]);
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn overlay_options_become_data() {
        let parsed = parse_options(&words(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
        ]));
        assert_eq!(parsed.flags, MsFlags::empty());
        assert_eq!(
            parsed.data.join(","),
            "index=off,workdir=/w,upperdir=/u,lowerdir=/l"
        );
    }

    #[test]
    fn bind_flags_set_and_clear_in_order() {
        let parsed = parse_options(&words(&["rbind", "ro", "rw", "nosuid", "rprivate"]));
        assert_eq!(
            parsed.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID
        );
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert!(parsed.data.is_empty());
    }

    #[test]
    fn containerd_private_options_are_skipped_and_loop_noticed() {
        let parsed = parse_options(&words(&["X-containerd.mkdir.path=/x", "loop"]));
        assert!(parsed.loop_device);
        assert!(parsed.data.is_empty());
    }

    #[test]
    fn target_cannot_escape_rootfs() {
        let rootfs = Path::new("/b/rootfs");
        assert_eq!(target_in(rootfs, "").unwrap(), rootfs);
        assert_eq!(target_in(rootfs, "/usr/x").unwrap(), rootfs.join("usr/x"));
        assert!(target_in(rootfs, "../etc").is_err());
    }

    #[test]
    fn mountinfo_points_are_unescaped() {
        let info = "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n";
        let points: Vec<PathBuf> = mount_points(info).collect();
        assert_eq!(points, [PathBuf::from("/mnt/with space")]);
    }
}
