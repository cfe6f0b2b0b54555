//! Answers: each request gets exactly one response frame, written by whichever thread holds
//! its [`Reply`], now or later (a deferred Wait answers when the process exits).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use protobuf::Message;
use ttrpc::proto::{Code, Response, Status};

use super::outbox::Outbox;
use crate::framing;

/// What a handler may know about the request besides its message.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// ttrpc metadata, grouped by key (containerd sends its namespace here).
    pub metadata: HashMap<String, Vec<String>>,
    /// The client's timeout in nanoseconds; 0 when none was set.
    pub timeout_nano: i64,
}

/// The untyped answer to one request.
///
/// It holds the connection's [`Outbox`], never its socket: a reply that outlives its
/// connection (a Wait on a process that runs for days) costs no descriptor, and sending it
/// then is a no-op.
#[derive(Debug)]
pub(crate) struct RawReply {
    outbox: Arc<Outbox>,
    stream_id: u32,
}

impl RawReply {
    pub(crate) fn new(outbox: Arc<Outbox>, stream_id: u32) -> Self {
        Self { outbox, stream_id }
    }

    /// Whether nobody is left to read the answer (the connection is closed).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.outbox.is_closed()
    }

    /// [`RawReply::is_abandoned`] as a probe that does not keep the connection's outbox.
    fn abandonment(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let outbox = Arc::downgrade(&self.outbox);
        move || outbox.upgrade().is_none_or(|outbox| outbox.is_closed())
    }

    /// Sends an OK response carrying `payload` (`ResourceExhausted` if it is too large).
    pub(crate) fn send_payload(self, payload: Vec<u8>) {
        let mut response = Response::new();
        response.status = protobuf::MessageField::some(status(Code::OK, String::new()));
        response.payload = payload;
        self.send(&response);
    }

    /// Sends an error response.
    pub(crate) fn send_status(self, code: Code, message: String) {
        let mut response = Response::new();
        response.status = protobuf::MessageField::some(status(code, message));
        self.send(&response);
    }

    fn send(self, response: &Response) {
        let body = match response.write_to_bytes() {
            Ok(body) => body,
            Err(error) => {
                log::error!(
                    "failed to encode the answer to stream {}: {error}",
                    self.stream_id
                );
                return;
            }
        };
        match framing::response(self.stream_id, &body) {
            Ok(frame) => self.outbox.push(frame),
            // The client would drop a frame this large: it gets the code it would report.
            Err(too_large) => self.send_status(Code::RESOURCE_EXHAUSTED, too_large.to_string()),
        }
    }
}

impl Drop for RawReply {
    fn drop(&mut self) {
        // The connection's own handle is not a reply in hand; this one still is.
        let in_hand = Arc::strong_count(&self.outbox).saturating_sub(1);
        self.outbox.reply_done(in_hand);
    }
}

fn status(code: Code, message: String) -> Status {
    let mut status = Status::new();
    status.code = code.into();
    status.message = message;
    status
}

/// The answer to one request of type `T`, to send once, from any thread, at any time.
///
/// Dropping it unsent answers `Internal`, so a client never waits for an answer that
/// cannot come (e.g. a Wait on a process deleted before it ever ran).
#[derive(Debug)]
pub struct Reply<T> {
    raw: Option<RawReply>,
    response: PhantomData<fn(T)>,
}

impl<T: Message> Reply<T> {
    pub(crate) fn new(raw: RawReply) -> Self {
        Self {
            raw: Some(raw),
            response: PhantomData,
        }
    }

    /// Whether nobody is left to read the answer: the client's connection is closed, so a
    /// runtime may drop the reply instead of keeping it until the answer is known.
    pub fn is_abandoned(&self) -> bool {
        self.raw.as_ref().is_none_or(RawReply::is_abandoned)
    }

    /// [`Reply::is_abandoned`], callable after the reply has been moved elsewhere (into an
    /// exit callback): lets a runtime drop the waiting replies of clients that left.
    pub fn abandonment(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let raw = self.raw.as_ref().map(RawReply::abandonment);
        move || raw.as_ref().is_none_or(|abandoned| abandoned())
    }

    /// Sends the handler's result: the message, or the error's status.
    pub fn send(mut self, result: ttrpc::Result<T>) {
        let Some(raw) = self.raw.take() else {
            return;
        };
        match result {
            Ok(message) => match message.write_to_bytes() {
                Ok(payload) => raw.send_payload(payload),
                Err(error) => raw.send_status(Code::INTERNAL, format!("encode response: {error}")),
            },
            Err(ttrpc::Error::RpcStatus(status)) => {
                raw.send_status(status.code.enum_value_or_default(), status.message);
            }
            Err(error) => raw.send_status(Code::UNKNOWN, error.to_string()),
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            raw.send_status(Code::INTERNAL, "the request was dropped unanswered".into());
        }
    }
}
