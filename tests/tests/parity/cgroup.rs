//! Reading a task's cgroup files from the host, found through `/proc/<pid>/cgroup` and the
//! cgroup mounts in `/proc/self/mountinfo` (v1 controller hierarchies or the v2 unified one).

use std::fs;
use std::path::PathBuf;

/// Whether this host mounts the v2 unified hierarchy at `/sys/fs/cgroup` (no v1 controllers).
pub fn is_unified() -> bool {
    PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The contents (trimmed) of `file` in the cgroup of `pid` for v1 `controller`, or in its
/// v2 cgroup on a unified host.
pub fn read(pid: u32, controller: &str, file: &str) -> String {
    let path = dir(pid, controller).join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The cgroup directory of `pid` in `controller`'s hierarchy (the unified one on v2).
fn dir(pid: u32, controller: &str) -> PathBuf {
    let membership = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    // Lines are `<id>:<controllers>:<path>`; v2's is `0::<path>`.
    let path = membership
        .lines()
        .filter_map(|line| line.split_once(':')?.1.split_once(':'))
        .find(|(controllers, _)| {
            if is_unified() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == controller)
            }
        })
        .map(|(_, path)| path.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| panic!("pid {pid} has no {controller} cgroup:\n{membership}"));
    mount_point(controller).join(path)
}

/// Where the hierarchy holding `controller` is mounted (its root, as on a host).
fn mount_point(controller: &str) -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    // `… <mount point> <options> [optional…] - <fstype> <source> <super options>`
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mut fs_fields = fs.split(' ');
            let fstype = fs_fields.next()?;
            let super_options = fs_fields.nth(1)?;
            let wanted = if is_unified() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && super_options.split(',').any(|o| o == controller)
            };
            let point = mount.split(' ').nth(4)?;
            wanted.then(|| PathBuf::from(point))
        })
        .unwrap_or_else(|| panic!("no cgroup mount for {controller}"))
}
