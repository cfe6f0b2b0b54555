//! The events end of a containerd stand-in: an `Events/Forward` ttrpc server on a unix socket
//! that records every envelope a shim publishes, in arrival order.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use protobuf::well_known_types::empty::Empty;
use ttrpc::TtrpcContext;
use wren_shim_protocol::events_ttrpc::{create_events, Events, ForwardRequest};
use wren_shim_protocol::types::Envelope;

struct Recorder(Sender<Envelope>);

impl Events for Recorder {
    fn forward(&self, _ctx: &TtrpcContext, request: ForwardRequest) -> ttrpc::Result<Empty> {
        let _ = self.0.send(request.envelope.unwrap_or_default());
        Ok(Empty::new())
    }
}

/// A running events server; dropping it stops the server.
pub struct EventsServer {
    _server: ttrpc::Server,
    _listener: UnixListener,
}

/// Serves `Events/Forward` at `socket`; returns the server and the envelopes it receives.
pub fn serve(socket: &Path) -> (EventsServer, Receiver<Envelope>) {
    let (tx, events) = crossbeam_channel::unbounded();
    let listener = UnixListener::bind(socket).unwrap();
    let recorder: Arc<dyn Events + Send + Sync> = Arc::new(Recorder(tx));
    let mut server = ttrpc::Server::new()
        .add_listener(listener.as_raw_fd())
        .unwrap()
        .register_service(create_events(recorder));
    server.start().unwrap();
    let server = EventsServer {
        _server: server,
        _listener: listener,
    };
    (server, events)
}
