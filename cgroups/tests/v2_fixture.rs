//! cgroup v2 from fixtures: real file formats in a temporary directory, read through the
//! public API, and `memory.events` edits driving the inotify OOM watcher.

use std::path::Path;
use std::time::Duration;

use wren_cgroups::v2::{IoEntry, MemoryEvents, PidsStat};
use wren_cgroups::{Cgroup, Flush, OomError, OomWatcher, Stats, StatsError, V1Cgroup, V2Cgroup};

const PATIENCE: Duration = Duration::from_secs(30);

const PRESSURE: &str = "some avg10=1.50 avg60=0.75 avg300=0.25 total=123456\n\
                        full avg10=0.10 avg60=0.05 avg300=0.01 total=789\n";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

fn events_text(oom: u64, oom_kill: u64) -> String {
    format!("low 0\nhigh 4\nmax 7\noom {oom}\noom_kill {oom_kill}\noom_group_kill 0\n")
}

fn populate(dir: &Path) {
    write(dir, "cgroup.events", "populated 1\nfrozen 0\n");
    write(dir, "pids.current", "3\n");
    write(dir, "pids.max", "max\n");
    write(
        dir,
        "cpu.stat",
        "usage_usec 108706\nuser_usec 77268\nsystem_usec 31437\n\
        core_sched.force_idle_usec 0\nnr_periods 10\nnr_throttled 2\nthrottled_usec 3000\n\
        nr_bursts 1\nburst_usec 500\n",
    );
    write(dir, "cpu.pressure", PRESSURE);
    write(
        dir,
        "memory.stat",
        "anon 4096\nfile 8192\nkernel 1024\nkernel_stack 16384\nslab 900\n\
        sock 0\nshmem 12\nfile_mapped 13\nfile_dirty 14\nfile_writeback 15\nanon_thp 0\n\
        inactive_anon 20\nactive_anon 21\ninactive_file 22\nactive_file 23\nunevictable 24\n\
        slab_reclaimable 25\nslab_unreclaimable 26\npgfault 27\npgmajfault 28\n\
        workingset_refault_anon 29\nworkingset_refault_file 30\nworkingset_activate_anon 31\n\
        workingset_activate_file 32\nworkingset_nodereclaim 33\npgrefill 34\npgscan 35\n\
        pgsteal 36\npgactivate 37\npgdeactivate 38\npglazyfree 39\npglazyfreed 40\n\
        thp_fault_alloc 41\nthp_collapse_alloc 42\nzswap 0\n",
    );
    write(dir, "memory.current", "1048576\n");
    write(dir, "memory.max", "max\n");
    write(dir, "memory.peak", "2097152\n");
    write(dir, "memory.swap.current", "0\n");
    write(dir, "memory.swap.max", "max\n");
    write(dir, "memory.pressure", PRESSURE);
    write(dir, "memory.events", &events_text(0, 0));
    write(
        dir,
        "io.stat",
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
        253:1 rbytes=5 wbytes=6 rios=7 wios=8 dbytes=0 dios=0 cost.vrate=100.00 depth=max\n",
    );
    write(dir, "io.pressure", PRESSURE);
    write(dir, "hugetlb.2MB.current", "0\n");
    write(dir, "hugetlb.2MB.max", "max\n");
    write(dir, "hugetlb.2MB.events", "max 5\n");
    write(dir, "rdma.current", "mlx5_0 hca_handle=1 hca_object=20\n");
    write(dir, "rdma.max", "mlx5_0 hca_handle=max hca_object=max\n");
}

fn fixture() -> (tempfile::TempDir, Cgroup) {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let cgroup = Cgroup::V2(V2Cgroup {
        path: dir.path().to_path_buf(),
        hugepage_sizes: vec!["2MB".into(), "1GB".into()],
    });
    (dir, cgroup)
}

fn v2_stats(cgroup: &Cgroup) -> wren_cgroups::v2::Metrics {
    match cgroup.stats().expect("read stats") {
        Stats::V2(metrics) => metrics,
        Stats::V1(_) => panic!("a v2 cgroup must give v2 stats"),
    }
}

#[test]
fn every_file_feeds_its_field() {
    let (_dir, cgroup) = fixture();
    let stats = v2_stats(&cgroup);
    assert_eq!(
        stats.pids,
        Some(PidsStat {
            current: 3,
            limit: u64::MAX
        })
    );

    let cpu = stats.cpu.expect("cpu");
    assert_eq!(
        (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
        (108_706, 77_268, 31_437)
    );
    assert_eq!(
        (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec),
        (10, 2, 3000)
    );
    assert_eq!((cpu.nr_bursts, cpu.burst_usec), (1, 500));
    let some = cpu.psi.and_then(|psi| psi.some).expect("cpu psi");
    assert_eq!((some.avg10, some.total), (1.5, 123_456));

    let memory = stats.memory.expect("memory");
    assert_eq!(
        (memory.anon, memory.file, memory.kernel_stack),
        (4096, 8192, 16384)
    );
    assert_eq!(
        (memory.file_writeback, memory.unevictable, memory.pgmajfault),
        (15, 24, 28)
    );
    assert_eq!(
        (memory.workingset_refault_file, memory.thp_collapse_alloc),
        (30, 42)
    );
    assert_eq!(memory.workingset_refault, 0, "not exposed since Linux 5.9");
    assert_eq!(
        (memory.usage, memory.usage_limit, memory.max_usage),
        (1 << 20, u64::MAX, 2 << 20)
    );
    assert_eq!((memory.swap_usage, memory.swap_limit), (0, u64::MAX));
    assert_eq!(
        memory.swap_max_usage, 0,
        "absent memory.swap.peak reads as 0"
    );
    assert_eq!(
        memory.psi.and_then(|psi| psi.full).map(|full| full.total),
        Some(789)
    );

    let expected = MemoryEvents {
        low: 0,
        high: 4,
        max: 7,
        oom: 0,
        oom_kill: 0,
        oom_group_kill: 0,
    };
    assert_eq!(stats.memory_events, Some(expected));
}

#[test]
fn io_hugetlb_and_rdma_files_feed_their_fields() {
    let (_dir, cgroup) = fixture();
    let stats = v2_stats(&cgroup);
    let io = stats.io.expect("io");
    assert_eq!(
        io.usage,
        [
            IoEntry {
                major: 8,
                minor: 0,
                rbytes: 4096,
                wbytes: 8192,
                rios: 1,
                wios: 2
            },
            IoEntry {
                major: 253,
                minor: 1,
                rbytes: 5,
                wbytes: 6,
                rios: 7,
                wios: 8
            },
        ]
    );
    assert!(io.psi.is_some());

    assert_eq!(stats.hugetlb.len(), 1, "1GB files are absent and skipped");
    assert_eq!(
        (stats.hugetlb[0].max, stats.hugetlb[0].failcnt),
        (u64::MAX, 5)
    );
    assert_eq!(stats.hugetlb[0].pagesize, "2MB");

    let rdma = stats.rdma.expect("rdma");
    assert_eq!(
        (rdma.current[0].hca_handles, rdma.current[0].hca_objects),
        (1, 20)
    );
    assert_eq!(rdma.limit[0].hca_objects, u32::MAX);
}

#[test]
fn missing_files_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "cgroup.events", "populated 0\nfrozen 0\n");
    let cgroup = Cgroup::V2(V2Cgroup {
        path: dir.path().to_path_buf(),
        hugepage_sizes: vec!["2MB".into()],
    });
    assert_eq!(v2_stats(&cgroup), wren_cgroups::v2::Metrics::default());
}

#[test]
fn malformed_files_are_typed_errors_naming_the_file() {
    let cases = [
        ("memory.stat", "anon 12\nfile lots\n"),
        ("cpu.stat", "usage_usec\n"),
        ("memory.events", "oom_kill -1\n"),
        ("io.stat", "8:0 rbytes\n"),
        ("io.stat", "sda rbytes=1\n"),
        ("pids.current", "three\n"),
        ("cpu.pressure", "some avg10=high\n"),
        ("memory.max", "\n"),
    ];
    for (name, text) in cases {
        let (dir, cgroup) = fixture();
        write(dir.path(), name, text);
        let err = cgroup.stats().expect_err(name);
        let path = match &err {
            StatsError::Malformed { path, .. }
            | StatsError::Integer { path, .. }
            | StatsError::Decimal { path, .. } => path,
            other => panic!("{name}: unexpected {other:?}"),
        };
        assert_eq!(path, &dir.path().join(name), "{err}");
    }
}

#[test]
fn v1_fixture_reads_and_rejects_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "memory.stat",
        "cache 1\nrss 2\ntotal_rss 3\nhierarchical_memsw_limit 4\nswap 0\n",
    );
    write(d, "memory.usage_in_bytes", "100\n");
    write(d, "memory.limit_in_bytes", "9223372036854771712\n");
    write(
        d,
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    write(d, "cpuacct.usage", "5000\n");
    write(d, "cpuacct.stat", "user 3\nsystem 1\n");
    write(d, "cpuacct.usage_percpu", "2000 3000 \n");
    write(d, "pids.current", "1\n");
    write(d, "pids.max", "max\n");
    let dir_path = Some(d.to_path_buf());
    let cgroup = Cgroup::V1(V1Cgroup {
        memory: dir_path.clone(),
        cpuacct: dir_path.clone(),
        pids: dir_path,
        ..V1Cgroup::default()
    });
    let Stats::V1(stats) = cgroup.stats().expect("v1 stats") else {
        panic!("v1 expected")
    };
    let memory = stats.memory.expect("memory");
    assert_eq!(
        (
            memory.cache,
            memory.rss,
            memory.total_rss,
            memory.hierarchical_swap_limit
        ),
        (1, 2, 3, 4)
    );
    assert_eq!(
        (memory.usage.usage, memory.usage.limit),
        (100, 9_223_372_036_854_771_712)
    );
    assert_eq!((memory.swap, memory.kernel), (None, None));
    assert_eq!(stats.memory_oom_control.map(|c| c.oom_kill), Some(2));
    let usage = stats.cpu.and_then(|cpu| cpu.usage).expect("cpuacct");
    assert_eq!(
        (usage.total, usage.user, usage.kernel),
        (5000, 30_000_000, 10_000_000)
    );
    assert_eq!(usage.per_cpu, [2000, 3000]);
    assert_eq!(
        stats.pids.map(|p| p.limit),
        Some(0),
        "v1 reads max as 0 like containerd"
    );

    write(d, "cpuacct.stat", "user 3\n");
    assert!(matches!(
        cgroup.stats(),
        Err(StatsError::MissingKey { key: "system", .. })
    ));
    write(d, "cpuacct.stat", "user 3\nsystem 1\n");
    write(d, "memory.oom_control", "oom_kill_disable\n");
    assert!(matches!(
        cgroup.stats(),
        Err(StatsError::Malformed { line: 1, .. })
    ));
}

#[test]
fn oom_kill_rise_fires_once_and_oom_alone_never() {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let watcher = OomWatcher::spawn(events_tx).expect("spawn watcher");
    let (parent_dir, parent) = fixture();
    let (child_dir, child) = fixture();
    watcher.watch("parent", &parent).expect("watch parent");
    watcher.watch("child", &child).expect("watch child");

    // `oom` rises alone in the parent (charged from a child), then a real kill in the child.
    write(parent_dir.path(), "memory.events", &events_text(1, 0));
    write(child_dir.path(), "memory.events", &events_text(1, 1));
    // inotify events are handled in order: a parent event would arrive first.
    assert_eq!(
        events.recv_timeout(PATIENCE).expect("child event").key,
        "child"
    );

    // A second kill in the child: one event, whether the notification or the flush saw it.
    write(child_dir.path(), "memory.events", &events_text(2, 2));
    let flush = watcher.unwatch("child").expect("unwatch child");
    let delivered: Vec<_> = events.try_iter().collect();
    assert_eq!(
        delivered.len(),
        1,
        "flush {flush:?} delivered {delivered:?}"
    );
    assert_eq!(
        watcher.unwatch("parent").expect("unwatch parent"),
        Flush::NoOom
    );
    assert!(events.try_recv().is_err());
}

#[test]
fn kills_before_watch_are_not_reported_and_removal_is_quiet() {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let watcher = OomWatcher::spawn(events_tx).expect("spawn watcher");
    let (dir, cgroup) = fixture();
    write(dir.path(), "memory.events", &events_text(5, 5));
    watcher.watch("old", &cgroup).expect("watch");
    drop(dir);
    assert_eq!(watcher.unwatch("old").expect("unwatch"), Flush::NoOom);
    assert!(events.try_recv().is_err());
}

#[test]
fn watch_and_unwatch_errors_are_typed() {
    let (events_tx, _events) = crossbeam_channel::unbounded();
    let watcher = OomWatcher::spawn(events_tx).expect("spawn watcher");
    assert!(matches!(
        watcher.unwatch("nobody"),
        Err(OomError::NotWatched { .. })
    ));
    let no_memory = Cgroup::V1(V1Cgroup::default());
    assert!(matches!(
        watcher.watch("a", &no_memory),
        Err(OomError::NoMemoryController { .. })
    ));
    let empty = tempfile::tempdir().expect("tempdir");
    let bare = Cgroup::V2(V2Cgroup {
        path: empty.path().to_path_buf(),
        hugepage_sizes: vec![],
    });
    assert!(matches!(
        watcher.watch("b", &bare),
        Err(OomError::MissingCounter { .. })
    ));
    let (_dir, cgroup) = fixture();
    watcher.watch("c", &cgroup).expect("watch");
    assert!(matches!(
        watcher.watch("c", &cgroup),
        Err(OomError::AlreadyWatched { .. })
    ));
    assert_eq!(watcher.unwatch("c").expect("unwatch"), Flush::NoOom);
}
