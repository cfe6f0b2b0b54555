//! Clients that stop reading or walk away must cost the others nothing: a client that floods
//! requests and never reads its replies does not keep another client's calls or a container's
//! exit event from going through, and connections that left with Waits pending hold no
//! descriptor in the shim.

mod runc_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protobuf::Message;
use runc_support::{
    create_request, ctx, delete, open_fds, raw_connect, request_frame, shutdown, start, wait,
    Harness,
};
use wren_shim_protocol::task::{StateRequest, WaitRequest};
use wren_shim_protocol::task_ttrpc::TaskClient;

const TASK: &str = "containerd.task.v2.Task";
/// Requests the flooding client sends without reading a reply.
const FLOOD: usize = 40_000;
/// How long a well-behaved call may take at most: far beyond any healthy answer, far short
/// of "never", which is what a stalled shim gives.
const GENEROUS: Duration = Duration::from_secs(10);

fn state_payload(id: &str) -> Vec<u8> {
    let mut request = StateRequest::new();
    request.id = id.into();
    request.write_to_bytes().unwrap()
}

/// Sends `FLOOD` requests, half State (answered by workers), half for a service the shim
/// does not serve (answered by the main loop), and reads nothing; stops when the shim cuts
/// it off or stops taking them. Keeps the socket open until `hold` is dropped. Detached, so
/// that a shim that stalls it cannot hang the test.
fn flood(
    mut stream: UnixStream,
    id: &str,
    sent: Arc<AtomicUsize>,
    hold: crossbeam_channel::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    let state = state_payload(id);
    stream.set_write_timeout(Some(GENEROUS)).unwrap();
    std::thread::spawn(move || {
        for index in 0..FLOOD {
            let stream_id = u32::try_from(index * 2 + 1).unwrap();
            let frame = if index % 2 == 0 {
                request_frame(TASK, "State", state.clone(), stream_id)
            } else {
                request_frame("wren.test.Nothing", "Nothing", Vec::new(), stream_id)
            };
            if stream.write_all(&frame).is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::SeqCst);
        }
        let _ = hold.recv();
    })
}

/// How many of 20 State calls on a new connection are answered within the bound; the calls
/// run on a detached thread, so a stalled shim costs the bound, not a hang.
fn states_answered(address: &str, id: &str) -> usize {
    let (answers, answered) = crossbeam_channel::unbounded();
    let (address, id) = (address.to_owned(), id.to_owned());
    std::thread::spawn(move || {
        let client = TaskClient::new(ttrpc::Client::connect(&address).unwrap());
        for _ in 0..20 {
            let mut request = StateRequest::new();
            request.id.clone_from(&id);
            let timeout = i64::try_from(GENEROUS.as_nanos()).unwrap();
            let context = ttrpc::context::with_timeout(timeout);
            if answers
                .send(client.state(context, &request).is_ok())
                .is_err()
            {
                return;
            }
        }
    });
    let deadline = Instant::now() + GENEROUS;
    let mut count = 0;
    while let Ok(ok) = answered.recv_deadline(deadline) {
        count += usize::from(ok);
    }
    count
}

#[test]
fn a_client_that_never_reads_stalls_no_one() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("flood", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    let init = start(&shim, &task.id, "").unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let (release, hold) = crossbeam_channel::bounded::<()>(0);
    let flooder = flood(raw_connect(&shim), &task.id, Arc::clone(&sent), hold);
    // Let the flood pile up: until it is all sent, cut off, or stuck.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sent.load(Ordering::SeqCst) < FLOOD && !flooder.is_finished() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    let answered = states_answered(&shim.address, &task.id);
    eprintln!("{answered} of 20 State calls answered while a client floods");
    assert_eq!(answered, 20, "State calls answered while a client floods");

    // The init's exit must be reaped and published while the flooder is still connected.
    kill(Pid::from_raw(i32::try_from(init).unwrap()), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + GENEROUS;
    let exit = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match harness.event_within(left) {
            Some(event) if event.topic == "/tasks/exit" => break Some(event),
            Some(_) => {}
            None => break None,
        }
    };
    assert!(exit.is_some(), "no exit event while a client floods");
    drop(release);
    flooder.join().unwrap();
    eprintln!(
        "flooding client sent {} of {FLOOD} requests before it was cut off",
        sent.load(Ordering::SeqCst)
    );
    assert_eq!(wait(&shim, &task.id, "").unwrap().exit_status, 137);
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}

#[test]
fn connections_that_leave_with_waits_pending_hold_no_descriptor() {
    wren_tests::require_root!();
    let mut harness = Harness::new();
    let task = harness.task("abandon", &["sleep", "1000"]);
    let shim = harness.start_shim(&task);
    shim.client
        .create(ctx(), &create_request(&harness, &task, None))
        .unwrap();
    start(&shim, &task.id, "").unwrap();
    let before = open_fds(shim.pid);

    let mut wait_request = WaitRequest::new();
    wait_request.id.clone_from(&task.id);
    let wait_payload = wait_request.write_to_bytes().unwrap();
    for _ in 0..1_000 {
        let mut stream = raw_connect(&shim);
        let mut frames = request_frame(TASK, "Wait", wait_payload.clone(), 1);
        frames.extend(request_frame(TASK, "State", state_payload(&task.id), 3));
        stream.write_all(&frames).unwrap();
        // The State answer proves the shim has read the Wait too; then walk away.
        let mut header = [0u8; 10];
        stream.read_exact(&mut header).unwrap();
    }

    // Closing is seen asynchronously; a leak does not go away with time.
    let deadline = Instant::now() + GENEROUS;
    let mut after = open_fds(shim.pid);
    while after > before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = open_fds(shim.pid);
    }
    eprintln!("shim descriptors: {before} before, {after} after 1,000 abandoned Waits");
    assert!(
        after <= before + 2,
        "descriptors grew from {before} to {after} after 1,000 abandoned Waits"
    );

    // A Wait of a client still there is answered as ever.
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| wait(&shim, &task.id, ""));
        runc_support::kill_task(&shim, &task.id, "", libc::SIGKILL as u32).unwrap();
        assert_eq!(waiting.join().unwrap().unwrap().exit_status, 137);
    });
    delete(&shim, &task.id, "").unwrap();
    shutdown(&shim);
    harness.assert_clean(&shim);
}
