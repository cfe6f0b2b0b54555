//! The rootfs mounts containerd hands over in Create (an image's overlay, a snapshot), made
//! on `<bundle>/rootfs` in the host's mount namespace, as runc shims do: the 9p export then
//! reaches them through the share's bind mount. `ctr run --rootfs` sends none.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use wren_shim_protocol::types::Mount;

/// Mounts each of `mounts`, in order, on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), nix::Error> {
    for spec in mounts {
        let (flags, data) = flags_and_data(&spec.options);
        let kind = (!spec.type_.is_empty()).then_some(spec.type_.as_str());
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(spec.source.as_str()), target, kind, flags, data)?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; nothing to do is success.
pub fn unmount_all(target: &Path) {
    for _ in 0..16 {
        if umount2(target, MntFlags::MNT_DETACH).is_err() {
            return;
        }
    }
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
