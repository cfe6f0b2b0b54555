//! The events sink: a ttrpc server implementing
//! `containerd.services.events.ttrpc.v1.Events/Forward` at the `TTRPC_ADDRESS` a shim is
//! given, turning each envelope into a typed [`Event`] on a crossbeam channel.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Sender;
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::empty::Empty;
use wren_shim_protocol::any::{self, AnyError};
use wren_shim_protocol::events::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM,
    TaskPaused, TaskResumed, TaskStart,
};
use wren_shim_protocol::events_ttrpc::{create_events, Events, ForwardRequest};
use wren_shim_protocol::timestamp::from_timestamp;

/// A task event as a shim published it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// The containerd namespace from the envelope.
    pub namespace: String,
    /// When the shim published it.
    pub timestamp: Option<SystemTime>,
    /// The decoded message.
    pub payload: EventPayload,
}

/// The message inside an event, chosen by its type URL.
#[derive(Debug, Clone)]
pub enum EventPayload {
    /// `/tasks/create`.
    Create(TaskCreate),
    /// `/tasks/start`.
    Start(TaskStart),
    /// `/tasks/exec-added`.
    ExecAdded(TaskExecAdded),
    /// `/tasks/exec-started`.
    ExecStarted(TaskExecStarted),
    /// `/tasks/exit`.
    Exit(TaskExit),
    /// `/tasks/delete`.
    Delete(TaskDelete),
    /// `/tasks/paused`.
    Paused(TaskPaused),
    /// `/tasks/resumed`.
    Resumed(TaskResumed),
    /// `/tasks/oom`.
    Oom(TaskOOM),
    /// `/tasks/checkpointed`.
    Checkpointed(TaskCheckpointed),
    /// A type this manager does not know, or one that failed to decode; kept raw.
    Unknown(Any),
}

impl EventPayload {
    /// Decodes `event` by its type URL; unknown or undecodable payloads stay raw.
    pub fn decode(event: Any) -> Self {
        Self::try_decode(&event).unwrap_or(Self::Unknown(event))
    }

    fn try_decode(event: &Any) -> Result<Self, AnyError> {
        let name = event.type_url.rsplit('/').next().unwrap_or_default();
        Ok(match name {
            "containerd.events.TaskCreate" => Self::Create(any::unpack(event)?),
            "containerd.events.TaskStart" => Self::Start(any::unpack(event)?),
            "containerd.events.TaskExecAdded" => Self::ExecAdded(any::unpack(event)?),
            "containerd.events.TaskExecStarted" => Self::ExecStarted(any::unpack(event)?),
            "containerd.events.TaskExit" => Self::Exit(any::unpack(event)?),
            "containerd.events.TaskDelete" => Self::Delete(any::unpack(event)?),
            "containerd.events.TaskPaused" => Self::Paused(any::unpack(event)?),
            "containerd.events.TaskResumed" => Self::Resumed(any::unpack(event)?),
            "containerd.events.TaskOOM" => Self::Oom(any::unpack(event)?),
            "containerd.events.TaskCheckpointed" => Self::Checkpointed(any::unpack(event)?),
            _ => Self::Unknown(event.clone()),
        })
    }

    /// The container the event is about (empty for unknown payloads).
    pub fn container_id(&self) -> &str {
        match self {
            Self::Create(e) => &e.container_id,
            Self::Start(e) => &e.container_id,
            Self::ExecAdded(e) => &e.container_id,
            Self::ExecStarted(e) => &e.container_id,
            Self::Exit(e) => &e.container_id,
            Self::Delete(e) => &e.container_id,
            Self::Paused(e) => &e.container_id,
            Self::Resumed(e) => &e.container_id,
            Self::Oom(e) => &e.container_id,
            Self::Checkpointed(e) => &e.container_id,
            Self::Unknown(_) => "",
        }
    }
}

/// Errors from setting up the sink.
#[derive(Debug, thiserror::Error)]
pub enum EventSinkError {
    /// Creating the socket's directory failed.
    #[error("failed to create events socket directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Binding the socket failed.
    #[error("failed to bind events socket {path}")]
    Bind {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting the socket's mode failed.
    #[error("failed to restrict events socket {path} to its owner")]
    Chmod {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The ttrpc server did not start.
    #[error("failed to start the events server on {path}")]
    Serve {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ttrpc::Error,
    },
}

struct Forwarder {
    events: Sender<Event>,
}

impl Events for Forwarder {
    fn forward(&self, _ctx: &ttrpc::TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let envelope = req.envelope.into_option().unwrap_or_default();
        let event = Event {
            topic: envelope.topic,
            namespace: envelope.namespace,
            timestamp: envelope
                .timestamp
                .as_ref()
                .and_then(|ts| from_timestamp(ts).ok()),
            payload: EventPayload::decode(envelope.event.into_option().unwrap_or_default()),
        };
        // A receiver that went away no longer wants events; the shim must not retry for it.
        let _ = self.events.send(event);
        Ok(Empty::new())
    }
}

/// A listening events sink; stops serving and removes its socket on drop.
pub struct EventSink {
    path: PathBuf,
    server: Option<ttrpc::Server>,
    // The server borrows this fd by number; it is closed only after the server stopped.
    _listener: UnixListener,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// Listens at `path` (socket 0600; its directory made 0700 if missing) and sends
    /// every forwarded event to `events`. A stale socket file at `path` is replaced.
    pub fn bind(path: &Path, events: Sender<Event>) -> Result<Self, EventSinkError> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| EventSinkError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| EventSinkError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| EventSinkError::Chmod {
                path: path.to_path_buf(),
                source,
            },
        )?;
        let serve_err = |source| EventSinkError::Serve {
            path: path.to_path_buf(),
            source,
        };
        let mut server = ttrpc::Server::new()
            .add_listener(listener.as_raw_fd())
            .map_err(serve_err)?
            .register_service(create_events(Arc::new(Forwarder { events })));
        server.start().map_err(serve_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            server: Some(server),
            _listener: listener,
        })
    }

    /// The socket path (what goes into `TTRPC_ADDRESS`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use protobuf::MessageField;
    use wren_shim_protocol::address::unix_address;
    use wren_shim_protocol::events_ttrpc::EventsClient;
    use wren_shim_protocol::types::Envelope;

    use super::*;

    /// Plays the shim: forwards a TaskExit over a real ttrpc connection.
    #[test]
    fn forwarded_exit_arrives_decoded_and_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev/events.sock");
        let (tx, rx) = crossbeam_channel::unbounded();
        let sink = EventSink::bind(&path, tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let client = EventsClient::new(ttrpc::Client::connect(&unix_address(&path)).unwrap());
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 7,
            exit_status: 42,
            ..Default::default()
        };
        let envelope = Envelope {
            topic: "/tasks/exit".into(),
            namespace: "ns".into(),
            event: MessageField::some(any::pack(&exit).unwrap()),
            ..Default::default()
        };
        let req = ForwardRequest {
            envelope: MessageField::some(envelope),
            ..Default::default()
        };
        client
            .forward(ttrpc::context::with_timeout(0), &req)
            .unwrap();
        let event = rx.recv().unwrap();
        assert_eq!(event.topic, "/tasks/exit");
        assert_eq!(event.namespace, "ns");
        match event.payload {
            EventPayload::Exit(e) => assert_eq!((e.pid, e.exit_status), (7, 42)),
            other => panic!("unexpected payload {other:?}"),
        }
        drop(client);
        drop(sink);
        assert!(!path.exists());
    }
}
