//! A seeded, bounded fuzz of the request path against a live shim: malformed frames,
//! malformed request envelopes and malformed protobuf for every Task method. Every request
//! that is framed correctly must get exactly one well-formed answer; after each batch the
//! shim must still answer a well-behaved client; at the end its descriptors are flat and its
//! container untouched.
//!
//! The cases come from a fixed seed, so a failure replays: `WREN_FUZZ_SEED=<n>` picks
//! another seed, `WREN_FUZZ_CASES=<n>` another count. Longer, coverage-guided runs of the
//! decoders alone live in `shim/fuzz` (cargo fuzz, nightly).

mod runc_support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use runc_support::{
    create_request, ctx, delete, open_fds, raw_connect, request_frame, shutdown, start, state,
    Harness, Shim,
};
use ttrpc::proto::{MessageHeader, Response, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX};
use wren_shim_protocol::task::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, CreateTaskRequest, DeleteRequest,
    ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, ResizePtyRequest, ResumeRequest,
    ShutdownRequest, StartRequest, StateRequest, StatsRequest, UpdateTaskRequest, WaitRequest,
};

const TASK: &str = "containerd.task.v2.Task";
const DEFAULT_SEED: u64 = 0x5eed_2026_0018;
const DEFAULT_CASES: usize = 4_000;
/// Requests per connection between health checks.
const BATCH: usize = 50;
/// An id no container has: mutations of it reach the decoders and the lookups, not runc.
const ABSENT: &str = "fuzz-absent";
const GENEROUS: Duration = Duration::from_secs(10);

/// splitmix64: tiny, seeded, good enough to spread cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }

    /// Up to `max` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn any(type_url: &str, value: &[u8]) -> MessageField<Any> {
    let mut any = Any::new();
    any.type_url = type_url.into();
    any.value = value.to_vec();
    MessageField::some(any)
}

/// A well-formed request for every Task method; only State, Stats and Connect name the
/// live container, so no mutation can stop, freeze or checkpoint it.
fn templates(live: &str) -> Vec<(&'static str, Vec<u8>)> {
    let bytes = |message: &dyn protobuf::MessageDyn| message.write_to_bytes_dyn().unwrap();
    let mut create = CreateTaskRequest::new();
    create.id = ABSENT.into();
    create.bundle = "/nonexistent/wren-fuzz/bundle/directory".into();
    create.stdout = "/nonexistent/wren-fuzz/stdout".into();
    create.options = any("containerd.runc.v1.Options", b"\x12\x04runc");
    let mut exec = ExecProcessRequest::new();
    exec.id = ABSENT.into();
    exec.exec_id = "e1".into();
    exec.spec = any(
        "types.containerd.io/opencontainers/runtime-spec/1/Process",
        br#"{"args":["true"],"cwd":"/"}"#,
    );
    let mut update = UpdateTaskRequest::new();
    update.id = ABSENT.into();
    update.resources = any(
        "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        br#"{"cpu":{"shares":2}}"#,
    );
    update.annotations.insert("a".into(), "b".into());
    let mut checkpoint = CheckpointTaskRequest::new();
    checkpoint.id = ABSENT.into();
    checkpoint.path = "/nonexistent/wren-fuzz/checkpoint".into();
    let mut kill = KillRequest::new();
    kill.id = ABSENT.into();
    kill.signal = 9;
    kill.all = true;
    let mut resize = ResizePtyRequest::new();
    resize.id = ABSENT.into();
    resize.width = 80;
    resize.height = 24;
    let mut close_io = CloseIORequest::new();
    close_io.id = ABSENT.into();
    close_io.stdin = true;
    let mut shutdown = ShutdownRequest::new();
    shutdown.now = true;
    macro_rules! with_id {
        ($type:ty, $id:expr) => {{
            let mut request = <$type>::new();
            request.id = $id.into();
            bytes(&request)
        }};
    }
    vec![
        ("Create", bytes(&create)),
        ("Start", with_id!(StartRequest, ABSENT)),
        ("Delete", with_id!(DeleteRequest, ABSENT)),
        ("Pids", with_id!(PidsRequest, ABSENT)),
        ("Pause", with_id!(PauseRequest, ABSENT)),
        ("Resume", with_id!(ResumeRequest, ABSENT)),
        ("Checkpoint", bytes(&checkpoint)),
        ("Kill", bytes(&kill)),
        ("Exec", bytes(&exec)),
        ("ResizePty", bytes(&resize)),
        ("CloseIO", bytes(&close_io)),
        ("Update", bytes(&update)),
        ("Wait", with_id!(WaitRequest, ABSENT)),
        ("Stats", with_id!(StatsRequest, live)),
        ("State", with_id!(StateRequest, live)),
        ("Connect", with_id!(ConnectRequest, live)),
        ("Shutdown", bytes(&shutdown)),
        ("NoSuchMethod", Vec::new()),
    ]
}

/// A template changed by one to four random edits, or pure noise.
fn mutate(rng: &mut Rng, template: &[u8]) -> Vec<u8> {
    let mut bytes = template.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] = rng.bytes(1)[0];
            }
            2 => bytes.truncate(at),
            3 => {
                let noise = rng.some_bytes(16);
                bytes.splice(at..at, noise);
            }
            // A length-delimited field whose length runs past the end.
            4 => bytes.extend_from_slice(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x41]),
            // An unknown field, or a known one with the wrong wire type.
            5 => bytes.extend_from_slice(&[0x1d, 1, 2, 3, 4, 0x08, 0x80, 0x80]),
            _ => bytes = rng.some_bytes(64),
        }
    }
    bytes
}

/// One framed request: a mutated Task request, a request for another service, or a body
/// that is no Request at all.
fn framed_case(rng: &mut Rng, templates: &[(&str, Vec<u8>)], stream_id: u32) -> Vec<u8> {
    match rng.below(10) {
        0 => {
            let body = rng.some_bytes(200);
            let length = u32::try_from(body.len()).unwrap();
            let mut frame: Vec<u8> = MessageHeader::new_request(stream_id, length).into();
            frame.extend_from_slice(&body);
            frame
        }
        1 => request_frame("wren.fuzz.Other", "State", rng.some_bytes(8), stream_id),
        _ => {
            let (method, template) = &templates[rng.below(templates.len())];
            request_frame(TASK, method, mutate(rng, template), stream_id)
        }
    }
}

/// Bytes that break the framing: other message types, lengths that lie, raw noise.
fn broken_frame(rng: &mut Rng) -> Vec<u8> {
    let body = rng.some_bytes(300);
    let mut header: Vec<u8> =
        MessageHeader::new_request(1, u32::try_from(body.len()).unwrap()).into();
    match rng.below(5) {
        0 => header[8] = [2, 3, 4, 0xff][rng.below(4)],
        1 => header[9] = rng.bytes(1)[0],
        // Longer than what follows: the shim waits for the rest until the client leaves.
        2 => {
            let length = body.len() + 1 + rng.below(1000);
            header[..4].copy_from_slice(&u32::try_from(length).unwrap().to_be_bytes());
        }
        3 => {
            let length = MESSAGE_LENGTH_MAX + 1 + rng.below(1 << 20);
            header[..4].copy_from_slice(&u32::try_from(length).unwrap().to_be_bytes());
        }
        _ => return rng.some_bytes(2000),
    }
    header.extend_from_slice(&body);
    header
}

/// Reads `expected` answers (each a well-formed Response for a stream that asked) within
/// the bound.
fn read_answers(stream: &mut UnixStream, mut expected: HashSet<u32>) {
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    let deadline = Instant::now() + GENEROUS;
    while !expected.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} requests unanswered",
            expected.len()
        );
        let mut header = [0u8; MESSAGE_HEADER_LENGTH];
        stream.read_exact(&mut header).expect("an answer");
        let header = MessageHeader::from(&header[..]);
        assert_eq!(header.type_, ttrpc::proto::MESSAGE_TYPE_RESPONSE);
        let mut body = vec![0u8; usize::try_from(header.length).unwrap()];
        stream.read_exact(&mut body).unwrap();
        let response = Response::parse_from_bytes(&body).expect("a well-formed response");
        assert!(response.status.is_some(), "a response without a status");
        assert!(
            expected.remove(&header.stream_id),
            "an answer to stream {} that was not asked or was answered twice",
            header.stream_id
        );
    }
}

/// Sends bytes that break the framing on a connection of their own, then leaves.
fn send_broken(shim: &Shim, bytes: &[u8]) {
    let mut stream = raw_connect(shim);
    // The shim may cut a connection off mid-write: that is an answer too.
    let _ = stream.write_all(bytes);
    stream.set_nonblocking(true).unwrap();
    let mut sink = [0u8; 4096];
    while let Ok(read) = stream.read(&mut sink) {
        if read == 0 {
            break;
        }
    }
}

fn assert_healthy(shim: &Shim, live: &str, case: usize) {
    match state(shim, live, "") {
        Ok(response) => assert_eq!(response.id, live, "after case {case}"),
        Err(error) => panic!("the shim stopped answering after case {case}: {error:?}"),
    }
}

#[test]
fn malformed_requests_for_every_method_are_answered_and_harmless() {
    wren_tests::require_root!();
    let seed = env_or("WREN_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_or("WREN_FUZZ_CASES", DEFAULT_CASES);
    eprintln!("request fuzz: seed {seed:#x}, {cases} cases");
    let mut rng = Rng(seed);
    let mut harness = Harness::new();
    let task = harness.task("fuzz", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    let templates = templates(&task.id);
    let fds_before = open_fds(shim.pid);

    let mut case = 0;
    while case < cases {
        let mut stream = raw_connect(&shim);
        let mut expected = HashSet::new();
        let mut frames = Vec::new();
        for index in 0..BATCH.min(cases - case) {
            let stream_id = u32::try_from(index * 2 + 1).unwrap();
            if rng.below(8) == 0 {
                send_broken(&shim, &broken_frame(&mut rng));
            } else {
                frames.extend(framed_case(&mut rng, &templates, stream_id));
                expected.insert(stream_id);
            }
        }
        stream.write_all(&frames).unwrap();
        read_answers(&mut stream, expected);
        case += BATCH;
        assert_healthy(&shim, &task.id, case);
    }

    // Closed connections are seen asynchronously; what is left must not grow with cases.
    let deadline = Instant::now() + GENEROUS;
    let mut fds_after = open_fds(shim.pid);
    while fds_after > fds_before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds_after = open_fds(shim.pid);
    }
    assert!(
        fds_after <= fds_before + 2,
        "descriptors {fds_before} -> {fds_after}"
    );
    let state = state(&shim, &task.id, "").unwrap();
    assert_eq!(
        state.status.enum_value_or_default(),
        wren_shim_protocol::types::Status::RUNNING,
        "the fuzz touched the live container"
    );
    assert!(!std::path::Path::new("/options.json").exists());

    runc_support::kill_task(&shim, &task.id, "", libc::SIGKILL as u32).unwrap();
    runc_support::wait(&shim, &task.id, "").unwrap();
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn mutations_are_reproducible() {
    let mut first = Rng(7);
    let mut second = Rng(7);
    let template = b"\x0a\x04abcd\x12\x02ef";
    for _ in 0..100 {
        assert_eq!(mutate(&mut first, template), mutate(&mut second, template));
    }
}
