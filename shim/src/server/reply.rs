//! Answers: each request gets exactly one response frame, written by whichever thread holds
//! its [`Reply`], now or later (a deferred Wait answers when the process exits).

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::socket::{send, MsgFlags};
use protobuf::Message;
use ttrpc::proto::{Code, MessageHeader, Response, Status, MESSAGE_LENGTH_MAX};

/// What a handler may know about the request besides its message.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// ttrpc metadata, grouped by key (containerd sends its namespace here).
    pub metadata: HashMap<String, Vec<String>>,
    /// The client's timeout in nanoseconds; 0 when none was set.
    pub timeout_nano: i64,
}

/// The write half of one client connection, shared by the replies in flight on it.
#[derive(Debug)]
pub(crate) struct ConnectionWriter {
    stream: Mutex<UnixStream>,
}

impl ConnectionWriter {
    pub(crate) fn new(stream: UnixStream) -> Arc<Self> {
        Arc::new(Self {
            stream: Mutex::new(stream),
        })
    }

    /// Writes one response frame; the lock keeps frames from interleaving.
    fn write_response(&self, stream_id: u32, response: &Response) -> io::Result<()> {
        let body = response.write_to_bytes().map_err(io::Error::other)?;
        let length = u32::try_from(body.len()).map_err(io::Error::other)?;
        let mut frame: Vec<u8> = MessageHeader::new_response(stream_id, length).into();
        frame.extend_from_slice(&body);
        let stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        write_all(&stream, &frame)
    }
}

/// `send` with MSG_NOSIGNAL: a client that hung up must cost an error, not a SIGPIPE.
fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match send(stream.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// The untyped answer to one request.
#[derive(Debug)]
pub(crate) struct RawReply {
    writer: Arc<ConnectionWriter>,
    stream_id: u32,
}

impl RawReply {
    pub(crate) fn new(writer: Arc<ConnectionWriter>, stream_id: u32) -> Self {
        Self { writer, stream_id }
    }

    /// Sends an OK response carrying `payload`, or `status` if the payload is too large.
    pub(crate) fn send_payload(self, payload: Vec<u8>) {
        if payload.len() > MESSAGE_LENGTH_MAX {
            let message = format!(
                "response of {} bytes exceeds the limit of {MESSAGE_LENGTH_MAX}",
                payload.len()
            );
            return self.send_status(Code::RESOURCE_EXHAUSTED, message);
        }
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
        if let Err(error) = self.writer.write_response(self.stream_id, response) {
            // The client hung up or stopped reading; nobody is left to tell.
            log::debug!("failed to answer stream {}: {error}", self.stream_id);
        }
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
