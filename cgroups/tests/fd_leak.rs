//! The OOM watcher closes every fd it opened: its own binary, so no parallel test skews
//! the count.

use wren_cgroups::{Cgroup, OomWatcher, V2Cgroup};

#[test]
fn watcher_leaks_no_fds() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("memory.events"), "oom 0\noom_kill 0\n").expect("write");
    std::fs::write(dir.path().join("cgroup.events"), "populated 1\n").expect("write");
    let cgroup = Cgroup::V2(V2Cgroup {
        path: dir.path().to_path_buf(),
        hugepage_sizes: vec![],
    });
    let before = wren_tests::open_fds();
    {
        let (events_tx, _events) = crossbeam_channel::unbounded();
        let watcher = OomWatcher::spawn(events_tx).expect("spawn watcher");
        watcher.watch("fd", &cgroup).expect("watch");
        assert!(
            wren_tests::open_fds() > before,
            "watcher holds its epoll, eventfd, inotify"
        );
        watcher.unwatch("fd").expect("unwatch");
    }
    assert_eq!(wren_tests::open_fds(), before);
}
