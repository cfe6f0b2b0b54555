//! The shim's ttrpc server, written for an idle cost of zero threads.
//!
//! The daemon's main thread owns the listener and every connection through its epoll loop
//! and only reads and splits frames; each request then runs on a [`WorkerPool`] thread,
//! which ends when idle, and answers through a [`Reply`] that may outlive the handler (a
//! Wait answers when the process exits, holding no thread meanwhile). ttrpc's own sync
//! server keeps a listener thread, two threads per connection and a worker pool alive for
//! as long as the shim lives.
//!
//! No client can stall it: sockets are non-blocking, answers leave through each
//! connection's bounded outbox (a client that stops reading is cut off), and a
//! connection with too many requests in hand is not read until some are answered.
//!
//! Only unary calls exist in the task API: data frames and unknown frame types are ignored.

mod connection;
mod outbox;
mod reply;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{accept4, SockFlag};
use protobuf::Message;
use ttrpc::proto::{Code, Request, MESSAGE_TYPE_REQUEST};

use crate::framing::{Frame, MessageHeader};
use crate::pool::WorkerPool;
use connection::{Connection, Readable};
use outbox::{Attention, Interest, Outbox};
pub(crate) use reply::RawReply;
pub use reply::{Reply, RequestContext};

/// How often a flush looks again for the replies of requests still being handled.
const HANDLING_POLL: Duration = Duration::from_millis(5);

/// The services a shim answers: the task API under both names containerd uses.
pub const TASK_SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];

/// Runs one decoded request; called on a worker thread.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Handles `method` of a task service with its encoded request `payload`.
    fn dispatch(&self, context: RequestContext, method: &str, payload: &[u8], reply: RawReply);
}

/// Accepts connections and turns their frames into jobs for the worker pool.
pub(crate) struct Server {
    listener: OwnedFd,
    dispatcher: Arc<dyn Dispatch>,
    pool: WorkerPool,
    connections: HashMap<u64, Connection>,
    next_token: u64,
    attention: Arc<Attention>,
}

impl Server {
    /// Serves `listener` (a listening unix socket, made non-blocking here); connections get
    /// epoll tokens from `first_token` upward.
    pub(crate) fn new(
        listener: OwnedFd,
        dispatcher: Arc<dyn Dispatch>,
        pool: WorkerPool,
        first_token: u64,
    ) -> io::Result<Self> {
        let flags = nix::fcntl::fcntl(listener.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(listener.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Self {
            listener,
            dispatcher,
            pool,
            connections: HashMap::new(),
            next_token: first_token,
            attention: Attention::new()?,
        })
    }

    /// The listening socket, for the caller's epoll.
    pub(crate) fn listener(&self) -> &OwnedFd {
        &self.listener
    }

    /// Readable when connections need the main loop ([`Server::attend`]): replies the
    /// socket did not take, a client cut off, reading to resume.
    pub(crate) fn attention(&self) -> std::os::fd::BorrowedFd<'_> {
        self.attention.fd()
    }

    /// Looks at every connection that asked for it.
    pub(crate) fn attend(&mut self, epoll: &Epoll) {
        for token in self.attention.take() {
            self.update(epoll, token);
        }
    }

    /// Handles a readiness report for connection `token`.
    pub(crate) fn ready(&mut self, epoll: &Epoll, token: u64, flags: EpollFlags) {
        let Some(connection) = self.connections.get(&token) else {
            return;
        };
        if flags.contains(EpollFlags::EPOLLOUT) {
            connection.outbox().flush();
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.read(epoll, token);
        }
        self.update(epoll, token);
    }

    /// Watches connection `token` for what it needs now, or closes it.
    fn update(&mut self, epoll: &Epoll, token: u64) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        let interest = connection.outbox().interest();
        if interest == connection.watched() {
            return;
        }
        let Interest::Watch { read, write } = interest else {
            return self.close(epoll, token);
        };
        let mut flags = EpollFlags::empty();
        flags.set(EpollFlags::EPOLLIN, read);
        flags.set(EpollFlags::EPOLLOUT, write);
        let mut event = EpollEvent::new(flags, token);
        if let Err(errno) = epoll.modify(connection.fd(), &mut event) {
            log::error!("failed to watch a connection: {errno}");
            return self.close(epoll, token);
        }
        connection.set_watched(interest);
    }

    fn close(&mut self, epoll: &Epoll, token: u64) {
        if let Some(connection) = self.connections.remove(&token) {
            // Closing the fd removes it from epoll too; deleting first keeps that explicit.
            let _ = epoll.delete(connection.fd());
            connection.close();
        }
    }

    /// Sends what replies are still queued, and those of requests still being handled, for
    /// at most `timeout`: the answer to a Shutdown, above all, and to a Kill that raced it,
    /// must reach its client before the daemon exits.
    pub(crate) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut handling = false;
            let pending: Vec<&Connection> = self
                .connections
                .values()
                .filter(|connection| {
                    let outbox = connection.outbox();
                    outbox.flush();
                    handling |= outbox.requests_in_hand() > 0;
                    outbox.has_pending()
                })
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if (pending.is_empty() && !handling) || left.is_zero() {
                return;
            }
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|connection| PollFd::new(connection.fd(), PollFlags::POLLOUT))
                .collect();
            // A reply still being made is not announced: look again soon.
            let left = if handling {
                left.min(HANDLING_POLL)
            } else {
                left
            };
            let left = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            if let Err(errno) = poll(&mut fds, left) {
                if errno != Errno::EINTR {
                    return;
                }
            }
        }
    }

    /// Accepts every pending connection and adds it to `epoll`.
    pub(crate) fn accept(&mut self, epoll: &Epoll) {
        loop {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let fd = match accept4(self.listener.as_raw_fd(), flags) {
                Ok(fd) => fd,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(errno) => {
                    log::error!("accept failed: {errno}");
                    return;
                }
            };
            // SAFETY: accept4 just returned this fd and nothing else owns it.
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let token = self.next_token;
            self.next_token += 1;
            let connection = Connection::new(stream, token, Arc::clone(&self.attention));
            let event = EpollEvent::new(EpollFlags::EPOLLIN, token);
            if let Err(errno) = epoll.add(connection.fd(), event) {
                log::error!("failed to watch a connection: {errno}");
                continue;
            }
            self.connections.insert(token, connection);
        }
    }

    /// Reads connection `token`, dispatching every complete request; forgets it once closed.
    fn read(&mut self, epoll: &Epoll, token: u64) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        let (frames, open) = match connection.read_frames() {
            Ok(Readable::Frames(frames)) => (frames, true),
            Ok(Readable::Closed(frames)) => (frames, false),
            Err(error) => {
                log::warn!("dropping a connection after a read error: {error}");
                (Vec::new(), false)
            }
        };
        let outbox = Arc::clone(connection.outbox());
        for frame in frames {
            self.handle(frame, &outbox);
        }
        if !open {
            self.close(epoll, token);
        }
    }

    fn handle(&self, frame: Frame, outbox: &Arc<Outbox>) {
        match frame {
            Frame::Oversized { header } => {
                let reply = RawReply::new(Arc::clone(outbox), header.stream_id);
                let message = format!(
                    "message length {} exceeds the maximum message size",
                    header.length
                );
                reply.send_status(Code::RESOURCE_EXHAUSTED, message);
            }
            Frame::Complete { header, body } if header.type_ == MESSAGE_TYPE_REQUEST => {
                let reply = RawReply::new(Arc::clone(outbox), header.stream_id);
                self.submit(&header, &body, reply);
            }
            Frame::Complete { header, .. } => {
                log::debug!(
                    "ignoring a frame of type {} on a unary server",
                    header.type_
                );
            }
        }
    }

    fn submit(&self, header: &MessageHeader, body: &[u8], reply: RawReply) {
        let request = match Request::parse_from_bytes(body) {
            Ok(request) => request,
            Err(error) => {
                let message = format!(
                    "undecodable request on stream {}: {error}",
                    header.stream_id
                );
                return reply.send_status(Code::INVALID_ARGUMENT, message);
            }
        };
        if !TASK_SERVICES.contains(&request.service.as_str()) {
            let message = format!("service {}", request.service);
            return reply.send_status(Code::UNIMPLEMENTED, message);
        }
        let dispatcher = Arc::clone(&self.dispatcher);
        self.pool.execute(move || {
            if reply.is_abandoned() {
                // The client left (or was cut off) while this waited for a worker.
                return;
            }
            let context = context_of(&request);
            dispatcher.dispatch(context, &request.method, &request.payload, reply);
        });
    }
}

fn context_of(request: &Request) -> RequestContext {
    let mut metadata: HashMap<String, Vec<String>> = HashMap::new();
    for entry in &request.metadata {
        metadata
            .entry(entry.key.clone())
            .or_default()
            .push(entry.value.clone());
    }
    RequestContext {
        metadata,
        timeout_nano: request.timeout_nano,
    }
}

/// The decoders behind the server, fed raw bytes: entry points for the fuzz targets in
/// `shim/fuzz`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use protobuf::Message;
    use ttrpc::proto::Request;
    use wren_shim_protocol::task::{
        CheckpointTaskRequest, CloseIORequest, ConnectRequest, CreateTaskRequest, DeleteRequest,
        ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, ResizePtyRequest,
        ResumeRequest, ShutdownRequest, StartRequest, StateRequest, StatsRequest,
        UpdateTaskRequest, WaitRequest,
    };

    use crate::framing::{Frame, FrameSplitter};

    /// Splits `chunks`, fed one after the other as reads would, into frames; returns the
    /// complete ones' bodies and the number of oversized ones.
    pub fn split_frames<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, usize) {
        let mut splitter = FrameSplitter::default();
        let (mut bodies, mut oversized) = (Vec::new(), 0);
        for chunk in chunks {
            splitter.take_in(chunk);
            for frame in splitter.split() {
                match frame {
                    Frame::Complete { body, .. } => bodies.push(body),
                    Frame::Oversized { .. } => oversized += 1,
                }
            }
        }
        (bodies, oversized)
    }

    /// Decodes a frame body as the server does: the ttrpc Request, then its payload as the
    /// named Task method's request. Returns whether both decoded.
    pub fn decode_request(body: &[u8]) -> bool {
        let Ok(request) = Request::parse_from_bytes(body) else {
            return false;
        };
        let payload = request.payload.as_slice();
        match request.method.as_str() {
            "Create" => CreateTaskRequest::parse_from_bytes(payload).is_ok(),
            "Start" => StartRequest::parse_from_bytes(payload).is_ok(),
            "Delete" => DeleteRequest::parse_from_bytes(payload).is_ok(),
            "Pids" => PidsRequest::parse_from_bytes(payload).is_ok(),
            "Pause" => PauseRequest::parse_from_bytes(payload).is_ok(),
            "Resume" => ResumeRequest::parse_from_bytes(payload).is_ok(),
            "Checkpoint" => CheckpointTaskRequest::parse_from_bytes(payload).is_ok(),
            "Kill" => KillRequest::parse_from_bytes(payload).is_ok(),
            "Exec" => ExecProcessRequest::parse_from_bytes(payload).is_ok(),
            "ResizePty" => ResizePtyRequest::parse_from_bytes(payload).is_ok(),
            "CloseIO" => CloseIORequest::parse_from_bytes(payload).is_ok(),
            "Update" => UpdateTaskRequest::parse_from_bytes(payload).is_ok(),
            "Wait" => WaitRequest::parse_from_bytes(payload).is_ok(),
            "Stats" => StatsRequest::parse_from_bytes(payload).is_ok(),
            "State" => StateRequest::parse_from_bytes(payload).is_ok(),
            "Connect" => ConnectRequest::parse_from_bytes(payload).is_ok(),
            "Shutdown" => ShutdownRequest::parse_from_bytes(payload).is_ok(),
            _ => false,
        }
    }
}
