//! The task service answers under both names, and events travel through `Forward`, over real
//! ttrpc connections on unix sockets.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use wren_shim_protocol::any::unpack;
use wren_shim_protocol::events::TaskOOM;
use wren_shim_protocol::events_ttrpc::{create_events, Events, EventsClient, ForwardRequest};
use wren_shim_protocol::protobuf::well_known_types::empty::Empty;
use wren_shim_protocol::protobuf::MessageField;
use wren_shim_protocol::task::{ConnectRequest, ConnectResponse, PauseRequest, StateRequest};
use wren_shim_protocol::task_service::{
    create_task_v2_and_v3, task_service_names, NamedTaskClient, TaskApi,
};
use wren_shim_protocol::task_ttrpc::{Task, TaskClient};
use wren_shim_protocol::topics::{envelope, TASK_OOM};
use wren_shim_protocol::ttrpc::{self, context, Client, Server, TtrpcContext};
use wren_shim_protocol::types::Envelope;

/// Answers Connect with this process's pid and echoes the request id as the version;
/// every other RPC keeps the generated "not supported" answer.
#[derive(Debug)]
struct ConnectOnly;

impl Task for ConnectOnly {
    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = req.id;
        Ok(resp)
    }
}

fn serve(socket: &str, methods: wren_shim_protocol::task_service::MethodTable) -> Server {
    let mut server = Server::new()
        .bind(socket)
        .unwrap()
        .register_service(methods);
    server.start().unwrap();
    server
}

fn ctx() -> context::Context {
    context::with_duration(Duration::from_secs(10))
}

#[test]
fn names_are_v2_and_v3() {
    assert_eq!(
        task_service_names(),
        ["containerd.task.v2.Task", "containerd.task.v3.Task"]
    );
}

#[test]
fn registration_covers_every_method_under_both_names() {
    let table = create_task_v2_and_v3(Arc::new(ConnectOnly));
    assert_eq!(table.len(), 34);
    for name in task_service_names() {
        for method in ["State", "Create", "Connect", "Shutdown", "Wait", "Stats"] {
            assert!(
                table.contains_key(&format!("/{name}/{method}")),
                "{name}/{method}"
            );
        }
    }
}

#[test]
fn task_service_answers_under_v2_and_v3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("task.sock").display());
    let server = serve(&socket, create_task_v2_and_v3(Arc::new(ConnectOnly)));

    let mut req = ConnectRequest::new();
    req.id = "c1".into();
    let generated = TaskClient::new(Client::connect(&socket).unwrap());
    let v2 = generated.connect(ctx(), &req).unwrap();
    assert_eq!(
        (v2.shim_pid, v2.version.as_str()),
        (std::process::id(), "c1")
    );

    for api in TaskApi::ALL {
        let client = NamedTaskClient::new(Client::connect(&socket).unwrap(), api);
        let answer: ConnectResponse = client.call(ctx(), &req).unwrap();
        assert_eq!(answer, v2, "{api:?}");
        // An RPC the service does not implement comes back as an error status, not a hang.
        let unsupported = client.call(ctx(), &StateRequest::new()).unwrap_err();
        assert!(
            matches!(unsupported, ttrpc::Error::RpcStatus(_)),
            "{unsupported:?}"
        );
        let paused: Result<Empty, _> = client.call(ctx(), &PauseRequest::new());
        assert!(
            matches!(paused, Err(ttrpc::Error::RpcStatus(_))),
            "{paused:?}"
        );
    }
    server.shutdown();
}

/// Records every forwarded envelope.
#[derive(Debug)]
struct Recorder(Mutex<mpsc::Sender<Envelope>>);

impl Events for Recorder {
    fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let sent = self
            .0
            .lock()
            .unwrap()
            .send(req.envelope.unwrap_or_default());
        sent.map_err(|e| ttrpc::Error::Others(e.to_string()))?;
        Ok(Empty::new())
    }
}

#[test]
fn forward_delivers_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("events.sock").display());
    let (tx, rx) = mpsc::channel();
    let mut server = Server::new()
        .bind(&socket)
        .unwrap()
        .register_service(create_events(Arc::new(Recorder(Mutex::new(tx)))));
    server.start().unwrap();

    let mut oom = TaskOOM::new();
    oom.container_id = "c9".into();
    let mut req = ForwardRequest::new();
    req.envelope = MessageField::some(envelope("ns", &oom, SystemTime::now()).unwrap());
    EventsClient::new(Client::connect(&socket).unwrap())
        .forward(ctx(), &req)
        .unwrap();

    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (got.namespace.as_str(), got.topic.as_str()),
        ("ns", TASK_OOM)
    );
    assert_eq!(unpack::<TaskOOM>(&got.event).unwrap(), oom);
    server.shutdown();
}
