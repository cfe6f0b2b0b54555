//! Every field of the cgroups structs must land in the proto field of the same meaning. The
//! inputs hold pairwise distinct non-zero values, so a swapped field fails an equality and a
//! forgotten one shows up as a zero in the reflection sweep.

use protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use protobuf::MessageDyn;

use super::*;

/// Hands out 1, 2, 3...
struct Counter(u64);

impl Counter {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    fn small(&mut self) -> u32 {
        u32::try_from(self.next()).unwrap()
    }

    fn ratio(&mut self) -> f64 {
        f64::from(self.small()) / 4.0
    }
}

macro_rules! assert_same {
    ($out:expr, $input:expr, $($field:ident),+ $(,)?) => {
        $(assert_eq!($out.$field, $input.$field, stringify!($field));)+
    };
}

/// Fails on any scalar field left at zero (or empty), anywhere in `message`, except the
/// top-level fields in `unfilled` (those containerd never fills on Linux).
fn assert_no_zero_field(message: &dyn MessageDyn, path: &str, unfilled: &[&str]) {
    let descriptor = message.descriptor_dyn();
    for field in descriptor
        .fields()
        .filter(|field| !unfilled.contains(&field.name()))
    {
        let name = format!("{path}.{}", field.name());
        match field.get_reflect(message) {
            ReflectFieldRef::Optional(value) => match value.value() {
                Some(ReflectValueRef::Message(inner)) => assert_no_zero_field(&*inner, &name, &[]),
                Some(value) => assert_nonzero(&value, &name),
                None => panic!("{name} is unset"),
            },
            ReflectFieldRef::Repeated(list) => {
                assert!(!list.is_empty(), "{name} is empty");
                for value in &list {
                    match value {
                        ReflectValueRef::Message(inner) => {
                            assert_no_zero_field(&*inner, &name, &[])
                        }
                        other => assert_nonzero(&other, &name),
                    }
                }
            }
            ReflectFieldRef::Map(_) => {}
        }
    }
}

fn assert_nonzero(value: &ReflectValueRef<'_>, name: &str) {
    let zero = match value {
        ReflectValueRef::U64(v) => *v == 0,
        ReflectValueRef::U32(v) => *v == 0,
        ReflectValueRef::F64(v) => *v == 0.0,
        ReflectValueRef::String(v) => v.is_empty(),
        _ => false,
    };
    assert!(!zero, "{name} was not mapped");
}

fn v1_memory_entry_input(n: &mut Counter) -> v1::MemoryEntry {
    v1::MemoryEntry {
        limit: n.next(),
        usage: n.next(),
        max: n.next(),
        failcnt: n.next(),
    }
}

fn v1_memory_input(n: &mut Counter) -> v1::MemoryStat {
    v1::MemoryStat {
        cache: n.next(),
        rss: n.next(),
        rss_huge: n.next(),
        mapped_file: n.next(),
        dirty: n.next(),
        writeback: n.next(),
        pg_pg_in: n.next(),
        pg_pg_out: n.next(),
        pg_fault: n.next(),
        pg_maj_fault: n.next(),
        inactive_anon: n.next(),
        active_anon: n.next(),
        inactive_file: n.next(),
        active_file: n.next(),
        unevictable: n.next(),
        hierarchical_memory_limit: n.next(),
        hierarchical_swap_limit: n.next(),
        total_cache: n.next(),
        total_rss: n.next(),
        total_rss_huge: n.next(),
        total_mapped_file: n.next(),
        total_dirty: n.next(),
        total_writeback: n.next(),
        total_pg_pg_in: n.next(),
        total_pg_pg_out: n.next(),
        total_pg_fault: n.next(),
        total_pg_maj_fault: n.next(),
        total_inactive_anon: n.next(),
        total_active_anon: n.next(),
        total_inactive_file: n.next(),
        total_active_file: n.next(),
        total_unevictable: n.next(),
        usage: v1_memory_entry_input(n),
        swap: Some(v1_memory_entry_input(n)),
        kernel: Some(v1_memory_entry_input(n)),
        kernel_tcp: Some(v1_memory_entry_input(n)),
    }
}

fn blkio_entries(n: &mut Counter) -> Vec<v1::BlkioEntry> {
    let entry = v1::BlkioEntry {
        op: format!("Read{}", n.next()),
        device: format!("/dev/sd{}", n.next()),
        major: n.next(),
        minor: n.next(),
        value: n.next(),
    };
    vec![entry]
}

fn rdma_input(n: &mut Counter) -> v1::RdmaStat {
    let mut entry = || v1::RdmaEntry {
        device: format!("mlx{}", n.next()),
        hca_handles: n.small(),
        hca_objects: n.small(),
    };
    v1::RdmaStat {
        current: vec![entry()],
        limit: vec![entry()],
    }
}

fn v1_input() -> v1::Metrics {
    let n = &mut Counter(0);
    v1::Metrics {
        hugetlb: vec![v1::HugetlbStat {
            usage: n.next(),
            max: n.next(),
            failcnt: n.next(),
            pagesize: "2MB".into(),
        }],
        pids: Some(v1::PidsStat {
            current: n.next(),
            limit: n.next(),
        }),
        cpu: Some(v1::CpuStat {
            usage: Some(v1::CpuUsage {
                total: n.next(),
                kernel: n.next(),
                user: n.next(),
                per_cpu: vec![n.next(), n.next()],
            }),
            throttling: Some(v1::Throttle {
                periods: n.next(),
                throttled_periods: n.next(),
                throttled_time: n.next(),
            }),
        }),
        memory: Some(v1_memory_input(n)),
        blkio: Some(v1::BlkioStat {
            io_service_bytes_recursive: blkio_entries(n),
            io_serviced_recursive: blkio_entries(n),
            io_queued_recursive: blkio_entries(n),
            io_service_time_recursive: blkio_entries(n),
            io_wait_time_recursive: blkio_entries(n),
            io_merged_recursive: blkio_entries(n),
            io_time_recursive: blkio_entries(n),
            sectors_recursive: blkio_entries(n),
        }),
        rdma: Some(rdma_input(n)),
        memory_oom_control: Some(v1::MemoryOomControl {
            oom_kill_disable: n.next(),
            under_oom: n.next(),
            oom_kill: n.next(),
        }),
    }
}

fn assert_v1_memory(out: &pb1::MemoryStat, memory: &v1::MemoryStat) {
    assert_same!(
        out,
        memory,
        cache,
        rss,
        rss_huge,
        mapped_file,
        dirty,
        writeback,
        pg_pg_in,
        pg_pg_out,
        pg_fault,
        pg_maj_fault,
        inactive_anon,
        active_anon,
        inactive_file,
        active_file,
        unevictable,
        hierarchical_memory_limit,
        hierarchical_swap_limit,
        total_cache,
        total_rss,
        total_rss_huge,
        total_mapped_file,
        total_dirty,
        total_writeback,
        total_pg_pg_in,
        total_pg_pg_out,
        total_pg_fault,
        total_pg_maj_fault,
        total_inactive_anon,
        total_active_anon,
        total_inactive_file,
        total_active_file,
        total_unevictable,
    );
    for (out_entry, entry) in [
        (&out.usage, Some(&memory.usage)),
        (&out.swap, memory.swap.as_ref()),
        (&out.kernel, memory.kernel.as_ref()),
        (&out.kernel_tcp, memory.kernel_tcp.as_ref()),
    ] {
        assert_same!(out_entry, entry.unwrap(), limit, usage, max, failcnt);
    }
}

fn assert_v1_blkio(out: &pb1::BlkIOStat, blkio: &v1::BlkioStat) {
    for (out_list, list) in [
        (
            &out.io_service_bytes_recursive,
            &blkio.io_service_bytes_recursive,
        ),
        (&out.io_serviced_recursive, &blkio.io_serviced_recursive),
        (&out.io_queued_recursive, &blkio.io_queued_recursive),
        (
            &out.io_service_time_recursive,
            &blkio.io_service_time_recursive,
        ),
        (&out.io_wait_time_recursive, &blkio.io_wait_time_recursive),
        (&out.io_merged_recursive, &blkio.io_merged_recursive),
        (&out.io_time_recursive, &blkio.io_time_recursive),
        (&out.sectors_recursive, &blkio.sectors_recursive),
    ] {
        assert_same!(out_list[0], list[0], op, device, major, minor, value);
    }
}

#[test]
fn v1_every_field_is_mapped() {
    let input = v1_input();
    let out = v1_metrics(&input);

    let hugetlb = &input.hugetlb[0];
    assert_same!(out.hugetlb[0], hugetlb, usage, max, failcnt, pagesize);
    let pids = input.pids.unwrap();
    assert_same!(out.pids, pids, current, limit);
    let cpu = input.cpu.as_ref().unwrap();
    let usage = cpu.usage.as_ref().unwrap();
    assert_same!(out.cpu.usage, usage, total, kernel, user, per_cpu);
    let throttle = cpu.throttling.unwrap();
    assert_same!(
        out.cpu.throttling,
        throttle,
        periods,
        throttled_periods,
        throttled_time
    );
    assert_v1_memory(&out.memory, input.memory.as_ref().unwrap());
    assert_v1_blkio(&out.blkio, input.blkio.as_ref().unwrap());
    let rdma = input.rdma.as_ref().unwrap();
    assert_same!(
        out.rdma.current[0],
        rdma.current[0],
        device,
        hca_handles,
        hca_objects
    );
    assert_same!(
        out.rdma.limit[0],
        rdma.limit[0],
        device,
        hca_handles,
        hca_objects
    );
    let oom = input.memory_oom_control.unwrap();
    assert_same!(
        out.memory_oom_control,
        oom,
        oom_kill_disable,
        under_oom,
        oom_kill
    );

    assert_no_zero_field(&out, "v1", &["network", "cgroup_stats"]);
}

#[test]
fn v1_absent_sections_stay_unset() {
    let out = v1_metrics(&v1::Metrics::default());
    assert!(out.pids.is_none() && out.cpu.is_none() && out.memory.is_none());
    assert!(out.blkio.is_none() && out.rdma.is_none() && out.memory_oom_control.is_none());
    assert!(out.hugetlb.is_empty());
}

fn psi_input(n: &mut Counter) -> Option<v2::PsiStats> {
    let mut data = || v2::PsiData {
        avg10: n.ratio(),
        avg60: n.ratio(),
        avg300: n.ratio(),
        total: n.next(),
    };
    Some(v2::PsiStats {
        some: Some(data()),
        full: Some(data()),
    })
}

fn v2_memory_input(n: &mut Counter) -> v2::MemoryStat {
    v2::MemoryStat {
        anon: n.next(),
        file: n.next(),
        kernel_stack: n.next(),
        slab: n.next(),
        sock: n.next(),
        shmem: n.next(),
        file_mapped: n.next(),
        file_dirty: n.next(),
        file_writeback: n.next(),
        anon_thp: n.next(),
        inactive_anon: n.next(),
        active_anon: n.next(),
        inactive_file: n.next(),
        active_file: n.next(),
        unevictable: n.next(),
        slab_reclaimable: n.next(),
        slab_unreclaimable: n.next(),
        pgfault: n.next(),
        pgmajfault: n.next(),
        workingset_refault: n.next(),
        workingset_activate: n.next(),
        workingset_nodereclaim: n.next(),
        pgrefill: n.next(),
        pgscan: n.next(),
        pgsteal: n.next(),
        pgactivate: n.next(),
        pgdeactivate: n.next(),
        pglazyfree: n.next(),
        pglazyfreed: n.next(),
        thp_fault_alloc: n.next(),
        thp_collapse_alloc: n.next(),
        workingset_refault_anon: n.next(),
        workingset_refault_file: n.next(),
        workingset_activate_anon: n.next(),
        workingset_activate_file: n.next(),
        usage: n.next(),
        usage_limit: n.next(),
        max_usage: n.next(),
        swap_usage: n.next(),
        swap_limit: n.next(),
        swap_max_usage: n.next(),
        psi: psi_input(n),
    }
}

fn v2_input() -> v2::Metrics {
    let n = &mut Counter(0);
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: n.next(),
            limit: n.next(),
        }),
        cpu: Some(v2::CpuStat {
            usage_usec: n.next(),
            user_usec: n.next(),
            system_usec: n.next(),
            nr_periods: n.next(),
            nr_throttled: n.next(),
            throttled_usec: n.next(),
            nr_bursts: n.next(),
            burst_usec: n.next(),
            psi: psi_input(n),
        }),
        memory: Some(v2_memory_input(n)),
        rdma: Some(rdma_input(n)),
        io: Some(v2::IoStat {
            usage: vec![v2::IoEntry {
                major: n.next(),
                minor: n.next(),
                rbytes: n.next(),
                wbytes: n.next(),
                rios: n.next(),
                wios: n.next(),
            }],
            psi: psi_input(n),
        }),
        hugetlb: vec![v2::HugeTlbStat {
            current: n.next(),
            max: n.next(),
            pagesize: "1GB".into(),
            failcnt: n.next(),
        }],
        memory_events: Some(v2::MemoryEvents {
            low: n.next(),
            high: n.next(),
            max: n.next(),
            oom: n.next(),
            oom_kill: n.next(),
            oom_group_kill: n.next(),
        }),
    }
}

#[allow(
    deprecated,
    reason = "workingset_refault/activate are deprecated in the proto"
)]
fn assert_v2_memory(out: &pb2::MemoryStat, memory: &v2::MemoryStat) {
    assert_same!(
        out,
        memory,
        anon,
        file,
        kernel_stack,
        slab,
        sock,
        shmem,
        file_mapped,
        file_dirty,
        file_writeback,
        anon_thp,
        inactive_anon,
        active_anon,
        inactive_file,
        active_file,
        unevictable,
        slab_reclaimable,
        slab_unreclaimable,
        pgfault,
        pgmajfault,
        workingset_refault,
        workingset_activate,
        workingset_nodereclaim,
        pgrefill,
        pgscan,
        pgsteal,
        pgactivate,
        pgdeactivate,
        pglazyfree,
        pglazyfreed,
        thp_fault_alloc,
        thp_collapse_alloc,
        workingset_refault_anon,
        workingset_refault_file,
        workingset_activate_anon,
        workingset_activate_file,
        usage,
        usage_limit,
        max_usage,
        swap_usage,
        swap_limit,
        swap_max_usage,
    );
}

fn assert_psi(out: &MessageField<pb2::PSIStats>, psi: Option<&v2::PsiStats>) {
    let psi = psi.unwrap();
    assert_same!(out.some, psi.some.unwrap(), avg10, avg60, avg300, total);
    assert_same!(out.full, psi.full.unwrap(), avg10, avg60, avg300, total);
}

#[test]
fn v2_every_field_is_mapped() {
    let input = v2_input();
    let out = v2_metrics(&input);

    assert_same!(out.pids, input.pids.unwrap(), current, limit);
    let cpu = input.cpu.unwrap();
    assert_same!(
        out.cpu,
        cpu,
        usage_usec,
        user_usec,
        system_usec,
        nr_periods,
        nr_throttled,
        throttled_usec,
        nr_bursts,
        burst_usec,
    );
    assert_psi(&out.cpu.psi, cpu.psi.as_ref());
    let memory = input.memory.as_ref().unwrap();
    assert_v2_memory(&out.memory, memory);
    assert_psi(&out.memory.psi, memory.psi.as_ref());
    let rdma = input.rdma.as_ref().unwrap();
    assert_same!(
        out.rdma.current[0],
        rdma.current[0],
        device,
        hca_handles,
        hca_objects
    );
    assert_same!(
        out.rdma.limit[0],
        rdma.limit[0],
        device,
        hca_handles,
        hca_objects
    );
    let io = input.io.as_ref().unwrap();
    assert_same!(
        out.io.usage[0],
        io.usage[0],
        major,
        minor,
        rbytes,
        wbytes,
        rios,
        wios
    );
    assert_psi(&out.io.psi, io.psi.as_ref());
    assert_same!(
        out.hugetlb[0],
        input.hugetlb[0],
        current,
        max,
        pagesize,
        failcnt
    );
    let events = input.memory_events.unwrap();
    assert_same!(
        out.memory_events,
        events,
        low,
        high,
        max,
        oom,
        oom_kill,
        oom_group_kill
    );

    assert_no_zero_field(&out, "v2", &["network"]);
}

#[test]
fn stats_are_packed_under_the_proto_full_name() {
    let v1_any = to_any(&Stats::V1(v1::Metrics::default())).unwrap();
    assert_eq!(v1_any.type_url, "io.containerd.cgroups.v1.Metrics");
    let v2_any = to_any(&Stats::V2(v2_input())).unwrap();
    assert_eq!(v2_any.type_url, "io.containerd.cgroups.v2.Metrics");
    let decoded: pb2::Metrics = any::unpack(&v2_any).unwrap();
    assert_eq!(decoded, v2_metrics(&v2_input()));
}
