//! The event publisher: one ordered queue, one persistent connection to containerd.
//!
//! Events are stamped and enveloped when they are published, queued without bound, and sent
//! in order by the thread "publisher" (which runs only while events are queued: see
//! [`SerialQueue`]) over one ttrpc connection to `TTRPC_ADDRESS`
//! (`containerd.services.events.ttrpc.v1.Events/Forward`). A failed send keeps the event at
//! the head of the queue: the thread reconnects and retries it with backoff, so events are
//! never reordered, and never dropped while containerd is unreachable (TaskExit is what keeps
//! a container from being stuck as running, containerd#3177). Only an event that containerd
//! itself refuses several times over is dropped, with an error in the log.
//!
//! The Forward call is a unary ttrpc exchange written here directly on a blocking
//! `UnixStream`, framed as the server frames its answers (`framing.rs`): the sync ttrpc
//! client keeps two threads per connection, one of which polls every 10 ms, which is a cost
//! an idle shim should not pay.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use ttrpc::proto::{Code, KeyValue, Request, Response, MESSAGE_TYPE_RESPONSE};
use wren_shim_protocol::address;
use wren_shim_protocol::any::AnyError;
use wren_shim_protocol::events_ttrpc::ForwardRequest;
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::topics::TaskEvent;
use wren_shim_protocol::types::Envelope;

use crate::framing::{self, Frame};
use crate::pool::SerialQueue;

const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
const FORWARD_METHOD: &str = "Forward";
const NAMESPACE_METADATA_KEY: &str = "containerd-namespace-ttrpc";
/// containerd's own publisher gives each Forward 5 s.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Attempts before an event containerd keeps *answering* with an error is dropped.
const MAX_REFUSALS: u32 = 5;
/// While containerd is unreachable, log one warning per this many attempts.
const LOG_EVERY_ATTEMPTS: u32 = 20;

/// Errors from queueing an event.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The event could not be packed into an `Any`.
    #[error("failed to pack event for {topic}")]
    Pack {
        /// The event's topic.
        topic: String,
        /// The cause.
        #[source]
        source: AnyError,
    },
}

/// Why one Forward attempt failed.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("failed to connect to {path}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("failed to encode the forward request")]
    Encode(#[source] protobuf::Error),
    #[error("forward transport failed")]
    Transport(#[source] io::Error),
    #[error("malformed forward response: {reason}")]
    Malformed { reason: &'static str },
    #[error("containerd refused the event: {code:?} {message}")]
    Refused { code: Code, message: String },
}

/// A handle to the event queue; cheap to clone and share between threads.
#[derive(Debug, Clone)]
pub struct Publisher {
    namespace: String,
    queue: SerialQueue<Envelope>,
}

impl Publisher {
    /// A publisher sending to the ttrpc socket at `ttrpc_address` (a path, or `unix://` +
    /// path), stamping events with `namespace`. Its thread starts with the first event.
    pub fn start(ttrpc_address: &str, namespace: &str) -> Publisher {
        // containerd gives its own socket as a plain path; a `unix://` address is read too.
        let path =
            address::socket_path(ttrpc_address).unwrap_or_else(|_| PathBuf::from(ttrpc_address));
        let mut forwarder = Forwarder {
            path,
            namespace: namespace.to_owned(),
            connection: None,
        };
        let queue = SerialQueue::new("publisher", move |envelope: Envelope| {
            forwarder.deliver(&envelope);
        });
        Publisher {
            namespace: namespace.to_owned(),
            queue,
        }
    }

    /// Queues a task event under its topic, stamped now.
    ///
    /// # Errors
    /// Returns an error if the event cannot be packed or the publisher has stopped.
    pub fn publish<E: TaskEvent>(&self, event: &E) -> Result<(), PublisherError> {
        let any = wren_shim_protocol::any::pack(event).map_err(|source| PublisherError::Pack {
            topic: E::TOPIC.to_owned(),
            source,
        })?;
        self.publish_any(E::TOPIC, any)
    }

    /// Queues an already packed event under `topic`, stamped now.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a bounded queue.
    pub fn publish_any(&self, topic: &str, event: Any) -> Result<(), PublisherError> {
        let mut envelope = Envelope::new();
        envelope.timestamp = MessageField::some(to_timestamp(SystemTime::now()));
        envelope.namespace.clone_from(&self.namespace);
        envelope.topic = topic.to_owned();
        envelope.event = MessageField::some(event);
        self.queue.push(envelope);
        Ok(())
    }

    /// Waits until every event queued before this call has been sent, at most `timeout`.
    ///
    /// Returns whether the queue drained in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.queue.wait_empty(timeout)
    }
}

/// The publisher's state, kept between its threads: where to send, and the connection if
/// one is open.
struct Forwarder {
    path: PathBuf,
    namespace: String,
    connection: Option<Connection>,
}

impl Forwarder {
    /// Sends one event, retrying until containerd takes it (or refuses it for good).
    fn deliver(&mut self, envelope: &Envelope) {
        let mut request = ForwardRequest::new();
        request.envelope = MessageField::some(envelope.clone());
        let mut backoff = FIRST_BACKOFF;
        let mut attempts: u32 = 0;
        let mut refusals: u32 = 0;
        loop {
            attempts += 1;
            let error = match self.forward(&request) {
                Ok(()) => return,
                Err(error) => error,
            };
            if let ForwardError::Refused { .. } = error {
                refusals += 1;
                if refusals >= MAX_REFUSALS {
                    log::error!(
                        "dropping event {} after {refusals} refusals: {error}",
                        envelope.topic
                    );
                    return;
                }
            } else {
                // After a transport failure the stream may hold half a frame: start afresh.
                self.connection = None;
            }
            if attempts == 1 || attempts % LOG_EVERY_ATTEMPTS == 0 {
                log::warn!(
                    "failed to publish {} (attempt {attempts}), retrying: {}",
                    envelope.topic,
                    crate::status::error_chain(&error)
                );
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn forward(&mut self, request: &ForwardRequest) -> Result<(), ForwardError> {
        if self.connection.is_none() {
            let stream =
                UnixStream::connect(&self.path).map_err(|source| ForwardError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
            self.connection = Some(Connection::new(stream)?);
        }
        let connection = self.connection.as_mut().ok_or(ForwardError::Malformed {
            reason: "connection vanished",
        })?;
        let payload = request.write_to_bytes().map_err(ForwardError::Encode)?;
        connection.call(FORWARD_METHOD, payload, &self.namespace)
    }
}

/// One ttrpc client connection, used by one thread for one call at a time.
struct Connection {
    stream: UnixStream,
    next_stream_id: u32,
}

impl Connection {
    fn new(stream: UnixStream) -> Result<Self, ForwardError> {
        stream
            .set_read_timeout(Some(FORWARD_TIMEOUT))
            .map_err(ForwardError::Transport)?;
        stream
            .set_write_timeout(Some(FORWARD_TIMEOUT))
            .map_err(ForwardError::Transport)?;
        Ok(Self {
            stream,
            next_stream_id: 1,
        })
    }

    /// A unary call: one request frame out, one response frame back.
    fn call(
        &mut self,
        method: &str,
        payload: Vec<u8>,
        namespace: &str,
    ) -> Result<(), ForwardError> {
        let mut request = Request::new();
        request.service = EVENTS_SERVICE.to_owned();
        request.method = method.to_owned();
        request.payload = payload;
        request.timeout_nano = i64::try_from(FORWARD_TIMEOUT.as_nanos()).unwrap_or(i64::MAX);
        let mut namespace_entry = KeyValue::new();
        namespace_entry.key = NAMESPACE_METADATA_KEY.to_owned();
        namespace_entry.value = namespace.to_owned();
        request.metadata.push(namespace_entry);
        let body = request.write_to_bytes().map_err(ForwardError::Encode)?;

        // Client stream ids are odd and increase.
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(2);
        let frame = framing::request(stream_id, &body).map_err(|_| ForwardError::Malformed {
            reason: "request exceeds the ttrpc size limit",
        })?;
        self.stream
            .write_all(&frame)
            .map_err(ForwardError::Transport)?;

        let response = self.read_response(stream_id)?;
        match response
            .status
            .as_ref()
            .map(|status| (status.code.enum_value_or_default(), status))
        {
            None | Some((Code::OK, _)) => Ok(()),
            Some((code, status)) => Err(ForwardError::Refused {
                code,
                message: status.message.clone(),
            }),
        }
    }

    fn read_response(&mut self, stream_id: u32) -> Result<Response, ForwardError> {
        let frame = framing::read_frame(&mut self.stream).map_err(ForwardError::Transport)?;
        let Frame::Complete { header, body } = frame else {
            return Err(ForwardError::Malformed {
                reason: "response exceeds the ttrpc size limit",
            });
        };
        if header.type_ != MESSAGE_TYPE_RESPONSE || header.stream_id != stream_id {
            return Err(ForwardError::Malformed {
                reason: "unexpected frame",
            });
        }
        Response::parse_from_bytes(&body).map_err(|_| ForwardError::Malformed {
            reason: "undecodable response",
        })
    }
}
