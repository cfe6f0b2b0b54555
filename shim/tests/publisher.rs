//! The publisher against a real ttrpc Events server that goes away and comes back.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use protobuf::well_known_types::empty::Empty;
use ttrpc::TtrpcContext;
use wren_shim::Publisher;
use wren_shim_protocol::events::TaskExit;
use wren_shim_protocol::events_ttrpc::{create_events, Events, ForwardRequest};
use wren_shim_protocol::types::Envelope;

const BOUND: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Recorder {
    received: Sender<Envelope>,
}

impl Events for Recorder {
    fn forward(&self, _ctx: &TtrpcContext, request: ForwardRequest) -> ttrpc::Result<Empty> {
        self.received
            .send(request.envelope.unwrap_or_default())
            .unwrap();
        Ok(Empty::new())
    }
}

/// A ttrpc server on `path`; the listener fd stays ours (ttrpc never closes it).
struct EventsServer {
    server: ttrpc::Server,
    listener: UnixListener,
}

impl EventsServer {
    fn start(path: &Path, received: Sender<Envelope>) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let recorder: Arc<dyn Events + Send + Sync> = Arc::new(Recorder { received });
        let mut server = ttrpc::Server::new()
            .add_listener(listener.as_raw_fd())
            .unwrap()
            .register_service(create_events(recorder));
        server.start().unwrap();
        Self { server, listener }
    }

    /// Stops listening and drops every connection, like a containerd that died.
    fn kill(self) {
        self.server.shutdown();
        drop(self.listener);
    }
}

fn exit_event(n: u32) -> TaskExit {
    let mut exit = TaskExit::new();
    exit.container_id = "c1".into();
    exit.pid = n;
    exit
}

fn receive(received: &Receiver<Envelope>, count: usize) -> Vec<u32> {
    (0..count)
        .map(|_| {
            let envelope = received.recv_timeout(BOUND).expect("event delivered");
            assert_eq!(envelope.topic, "/tasks/exit");
            assert_eq!(envelope.namespace, "wren-test");
            assert!(envelope.timestamp.seconds > 0);
            wren_shim_protocol::any::unpack::<TaskExit>(&envelope.event)
                .unwrap()
                .pid
        })
        .collect()
}

#[test]
fn events_arrive_once_in_order_across_server_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("containerd.sock.ttrpc");
    let (tx, received) = crossbeam_channel::unbounded();

    // Published before containerd listens at all: queued, then delivered.
    let publisher = Publisher::start(path.to_str().unwrap(), "wren-test");
    for n in 0..10 {
        publisher.publish(&exit_event(n)).unwrap();
    }
    let server = EventsServer::start(&path, tx.clone());
    assert_eq!(receive(&received, 10), (0..10).collect::<Vec<_>>());

    // The persistent connection breaks under the publisher twice.
    let mut server = Some(server);
    for round in 1..=2 {
        server.take().unwrap().kill();
        let first = round * 100;
        for n in first..first + 50 {
            publisher.publish(&exit_event(n)).unwrap();
        }
        server = Some(EventsServer::start(&path, tx.clone()));
        assert_eq!(
            receive(&received, 50),
            (first..first + 50).collect::<Vec<_>>()
        );
    }
    assert!(publisher.flush(BOUND), "queue drained");
    assert!(received.try_recv().is_err(), "no event was delivered twice");
    server.unwrap().kill();
}

#[test]
fn flush_reports_an_unreachable_containerd() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nobody-listens");
    let publisher = Publisher::start(path.to_str().unwrap(), "wren-test");
    publisher.publish(&exit_event(1)).unwrap();
    assert!(
        !publisher.flush(Duration::from_millis(200)),
        "nothing can have been sent"
    );
    // Still queued, not dropped: a late containerd receives it.
    let (tx, received) = crossbeam_channel::unbounded();
    let server = EventsServer::start(&path, tx);
    assert_eq!(receive(&received, 1), vec![1]);
    server.kill();
}

#[test]
fn publishing_is_ordered_under_concurrent_publishers() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("containerd.sock.ttrpc");
    let (tx, received) = crossbeam_channel::unbounded();
    let server = EventsServer::start(&path, tx);
    let publisher = Publisher::start(path.to_str().unwrap(), "wren-test");
    let order = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4u32)
        .map(|thread| {
            let (publisher, order) = (publisher.clone(), Arc::clone(&order));
            std::thread::spawn(move || {
                for n in 0..25 {
                    // Record the queueing order under the same lock that queues.
                    let mut order = order.lock().unwrap();
                    publisher.publish(&exit_event(thread * 1000 + n)).unwrap();
                    order.push(thread * 1000 + n);
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .for_each(|thread| thread.join().unwrap());
    assert_eq!(receive(&received, 100), *order.lock().unwrap());
    server.kill();
}
