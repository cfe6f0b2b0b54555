//! Golden wire bytes written by hand from containerd's field numbers and protobuf's encoding
//! rules (tag = field << 3 | wire type; 0 varint, 1 fixed64, 2 length-delimited).
//! rust-protobuf writes fields in field-number order, which these byte strings follow.

use protobuf::{Message, MessageField};
use wren_shim_protocol::protobuf::well_known_types::any::Any;
use wren_shim_protocol::protobuf::well_known_types::timestamp::Timestamp;
use wren_shim_protocol::{bootstrap, cgroups_v1, cgroups_v2, events, runc};

/// Encodes `message`, compares with `golden`, and checks `golden` decodes back to `message`.
fn assert_golden<M: Message + PartialEq + std::fmt::Debug>(message: &M, golden: &[u8]) {
    let bytes = message.write_to_bytes().unwrap();
    assert_eq!(bytes, golden, "encoding of {message:?}");
    assert_eq!(&M::parse_from_bytes(golden).unwrap(), message);
}

#[test]
fn runc_options() {
    let mut options = runc::Options::new();
    options.io_uid = 1000;
    options.binary_name = "runc".into();
    options.root = "/run/r".into();
    options.criu_path = "/c".into();
    options.systemd_cgroup = true;
    #[rustfmt::skip]
    let golden = [
        0x20, 0xe8, 0x07,                                 // 4 io_uid = 1000
        0x32, 0x04, b'r', b'u', b'n', b'c',               // 6 binary_name
        0x3a, 0x06, b'/', b'r', b'u', b'n', b'/', b'r',   // 7 root
        0x42, 0x02, b'/', b'c',                           // 8 criu_path (containerd 1.6)
        0x48, 0x01,                                       // 9 systemd_cgroup
    ];
    assert_golden(&options, &golden);
}

#[test]
fn cgroups_v1_metrics() {
    let mut metrics = cgroups_v1::Metrics::new();
    let pids = metrics.pids.mut_or_insert_default();
    pids.current = 3;
    pids.limit = 100;
    let usage = metrics
        .cpu
        .mut_or_insert_default()
        .usage
        .mut_or_insert_default();
    usage.total = 5;
    usage.per_cpu = vec![1, 2];
    let memory = metrics.memory.mut_or_insert_default();
    memory.usage.mut_or_insert_default().usage = 4096;
    metrics.memory_oom_control.mut_or_insert_default().oom_kill = 1;
    #[rustfmt::skip]
    let golden = [
        0x12, 0x04, 0x08, 0x03, 0x10, 0x64,               // 2 pids {1 current=3, 2 limit=100}
        0x1a, 0x08, 0x0a, 0x06,                           // 3 cpu {1 usage {
        0x08, 0x05,                                       //   1 total = 5
        0x22, 0x02, 0x01, 0x02,                           //   4 per_cpu packed [1, 2] }}
        0x22, 0x06, 0x8a, 0x02, 0x03, 0x10, 0x80, 0x20,   // 4 memory {33 usage {2 usage=4096}}
        0x4a, 0x02, 0x18, 0x01,                           // 9 memory_oom_control {3 oom_kill=1}
    ];
    assert_golden(&metrics, &golden);
}

#[test]
fn cgroups_v2_metrics() {
    let mut metrics = cgroups_v2::Metrics::new();
    let cpu = metrics.cpu.mut_or_insert_default();
    cpu.usage_usec = 1000;
    cpu.psi
        .mut_or_insert_default()
        .some
        .mut_or_insert_default()
        .avg10 = 1.5;
    metrics.memory.mut_or_insert_default().usage = 1;
    metrics.memory_events.mut_or_insert_default().oom_kill = 2;
    #[rustfmt::skip]
    let golden = [
        0x12, 0x10,                                       // 2 cpu {
        0x08, 0xe8, 0x07,                                 //   1 usage_usec = 1000
        0x3a, 0x0b, 0x0a, 0x09,                           //   7 psi {1 some {
        0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,               //     1 avg10 = 1.5 (fixed64 LE) }}}
        0x22, 0x03, 0x80, 0x02, 0x01,                     // 4 memory {32 usage = 1}
        0x42, 0x02, 0x28, 0x02,                           // 8 memory_events {5 oom_kill = 2}
    ];
    assert_golden(&metrics, &golden);
}

#[test]
fn task_exit_event() {
    let mut exit = events::TaskExit::new();
    exit.container_id = "c".into();
    exit.id = "c".into();
    exit.pid = 300;
    exit.exit_status = 137;
    let mut at = Timestamp::new();
    at.seconds = 1;
    at.nanos = 2;
    exit.exited_at = MessageField::some(at);
    #[rustfmt::skip]
    let golden = [
        0x0a, 0x01, b'c',                                 // 1 container_id
        0x12, 0x01, b'c',                                 // 2 id
        0x18, 0xac, 0x02,                                 // 3 pid = 300
        0x20, 0x89, 0x01,                                 // 4 exit_status = 137
        0x2a, 0x04, 0x08, 0x01, 0x10, 0x02,               // 5 exited_at {1 seconds, 2 nanos}
    ];
    assert_golden(&exit, &golden);
}

#[test]
fn bootstrap_params() {
    let mut params = bootstrap::BootstrapParams::new();
    params.instance_id = "i".into();
    params.namespace = "n".into();
    params.log_level = bootstrap::LogLevel::LOG_LEVEL_DEBUG.into();
    let mut option = Any::new();
    option.type_url = "t".into();
    option.value = vec![0x01];
    let mut extension = bootstrap::Extension::new();
    extension.value = MessageField::some(option);
    params.extensions.push(extension);
    params.socket_dir = Some("/s".into());
    #[rustfmt::skip]
    let golden = [
        0x0a, 0x01, b'i',                                 // 1 instance_id
        0x12, 0x01, b'n',                                 // 2 namespace
        0x18, 0xfc, 0xff, 0xff, 0xff, 0xff,               // 3 log_level = -4: negative enums
        0xff, 0xff, 0xff, 0xff, 0x01,                     //   are sign-extended 10-byte varints
        0x42, 0x08, 0x0a, 0x06,                           // 8 extensions [{1 value {
        0x0a, 0x01, b't', 0x12, 0x01, 0x01,               //   1 type_url, 2 value }}]
        0x4a, 0x02, b'/', b's',                           // 9 socket_dir
    ];
    assert_golden(&params, &golden);
}

/// `socket_dir` is proto3 `optional`: an empty directory is still sent, an absent one is not.
#[test]
fn bootstrap_socket_dir_keeps_presence() {
    let mut params = bootstrap::BootstrapParams::new();
    assert!(params.write_to_bytes().unwrap().is_empty());
    params.socket_dir = Some(String::new());
    assert_golden(&params, &[0x4a, 0x00]);
}

#[test]
fn bootstrap_result() {
    let mut result = bootstrap::BootstrapResult::new();
    result.version = 2;
    result.address = "unix:///s".into();
    result.protocol = "ttrpc".into();
    #[rustfmt::skip]
    let golden = [
        0x08, 0x02,                                       // 1 version
        0x12, 0x09, b'u', b'n', b'i', b'x', b':', b'/', b'/', b'/', b's', // 2 address
        0x1a, 0x05, b't', b't', b'r', b'p', b'c',         // 3 protocol
    ];
    assert_golden(&result, &golden);
}
