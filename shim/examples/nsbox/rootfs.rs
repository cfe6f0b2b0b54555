//! The rootfs mounts containerd hands over in Create (an image's overlay, a snapshot), made
//! on `<bundle>/rootfs` in the host's mount namespace as runc shims do; `ctr run --rootfs`
//! sends none. Unmounting is idempotent: Delete and the `delete` action both call it.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use wren_shim_protocol::types::Mount;

/// A rootfs mount failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to mount {kind} {source_path} on {target}")]
pub struct MountError {
    kind: String,
    source_path: String,
    target: PathBuf,
    source: nix::Error,
}

/// Mounts each of `mounts`, in order, on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    for spec in mounts {
        let (flags, data) = flags_and_data(&spec.options);
        let kind = (!spec.type_.is_empty()).then_some(spec.type_.as_str());
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(spec.source.as_str()), target, kind, flags, data).map_err(|source| {
            MountError {
                kind: spec.type_.clone(),
                source_path: spec.source.clone(),
                target: target.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; nothing to do is success.
pub fn unmount_all(target: &Path) {
    while is_mount_point(target) {
        if let Err(errno) = umount2(target, MntFlags::MNT_DETACH) {
            log::warn!("failed to unmount {}: {errno}", target.display());
            return;
        }
    }
}

fn is_mount_point(target: &Path) -> bool {
    let Some(target) = target.to_str() else {
        return false;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Field 5 is the mount point (mountinfo escapes spaces, which bundle paths do not have).
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target))
}

/// Splits fstab-style options into mount flags and the filesystem's data string.
fn flags_and_data(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}
