//! The write side of one connection: a bounded queue of response frames, sent without ever
//! blocking.
//!
//! Whoever answers (a worker, the exits queue, the main loop itself) pushes a frame; if
//! nothing is queued ahead of it, the frame goes straight to the socket with a
//! non-blocking send, which is the usual case. Whatever the socket does not take waits
//! here, and the main loop is asked (through [`Attention`]) to watch the socket for
//! writability and send the rest. A client that stops reading so long that more than
//! [`OUTBOX_LIMIT`] bytes wait is dropped: the main loop closes the connection, and every
//! reply still in flight on it becomes a no-op holding no descriptor.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{send, MsgFlags};

/// Bytes a connection may have waiting beyond the frame being sent. A client reading its
/// replies never comes near it (the kernel's socket buffer takes the first ~200 KiB); one
/// that has stopped reading is cut off here instead of growing the shim without bound.
pub(crate) const OUTBOX_LIMIT: usize = 1 << 20;

/// Requests a connection may have in hand (queued, running, or waiting to answer, like a
/// Wait) before the main loop stops reading from it; reading resumes below half of it.
/// containerd keeps a few in flight, plus one Wait per running process.
pub(crate) const MAX_IN_HAND: usize = 4096;

/// The main loop's to-do list of connections, and the eventfd that wakes it for them.
#[derive(Debug)]
pub(crate) struct Attention {
    wake: EventFd,
    tokens: Mutex<Vec<u64>>,
}

impl Attention {
    pub(crate) fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            tokens: Mutex::default(),
        }))
    }

    /// Readable while tokens wait.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wake.as_fd()
    }

    fn request(&self, token: u64) {
        lock(&self.tokens).push(token);
        // EAGAIN: the counter is saturated, a wake-up is pending anyway.
        let _ = self.wake.write(1);
    }

    /// The connections that asked for the main loop since the last call.
    pub(crate) fn take(&self) -> Vec<u64> {
        // Reset first: a request filed after this wakes the loop again.
        let _ = self.wake.read();
        std::mem::take(&mut *lock(&self.tokens))
    }
}

/// What the main loop must do for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Drop it: it overflowed or its socket failed.
    Close,
    /// Watch it for these.
    Watch { read: bool, write: bool },
}

/// One connection's socket and unsent frames, shared by the main loop and every reply in
/// flight on the connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    token: u64,
    attention: Arc<Attention>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `None` once the main loop has closed the connection.
    socket: Option<Arc<UnixStream>>,
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the first frame already sent.
    sent: usize,
    /// Bytes in `frames`.
    queued: usize,
    /// The main loop has been asked to look at this connection and has not yet.
    attention_requested: bool,
    /// Overflowed or failed: to be closed.
    broken: bool,
    /// Reading stopped because too many requests are in hand.
    reading_paused: bool,
}

impl Outbox {
    pub(crate) fn new(socket: Arc<UnixStream>, token: u64, attention: Arc<Attention>) -> Arc<Self> {
        Arc::new(Self {
            token,
            attention,
            state: Mutex::new(State {
                socket: Some(socket),
                frames: VecDeque::new(),
                sent: 0,
                queued: 0,
                attention_requested: false,
                broken: false,
                reading_paused: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether the connection is gone: nothing pushed now reaches anyone.
    pub(crate) fn is_closed(&self) -> bool {
        let state = self.lock();
        state.socket.is_none() || state.broken
    }

    /// Queues `frame` and sends what the socket takes now; never blocks.
    pub(crate) fn push(&self, frame: Vec<u8>) {
        let mut state = self.lock();
        if state.socket.is_none() || state.broken {
            return;
        }
        if !state.frames.is_empty() && state.queued + frame.len() > OUTBOX_LIMIT {
            log::warn!("a client stopped reading its replies: closing its connection");
            state.broken = true;
            state.frames = VecDeque::new();
            self.ask_attention(&mut state);
            return;
        }
        state.queued += frame.len();
        state.frames.push_back(frame);
        if state.frames.len() == 1 {
            send_queued(&mut state);
        }
        if state.broken || !state.frames.is_empty() {
            self.ask_attention(&mut state);
        }
    }

    /// Sends what the socket takes now (the main loop, on writability).
    pub(crate) fn flush(&self) {
        send_queued(&mut self.lock());
    }

    /// Whether frames still wait to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.lock().frames.is_empty()
    }

    /// Requests read from this connection and not answered yet (pending Waits included):
    /// every holder of the outbox but the connection itself is one.
    pub(crate) fn requests_in_hand(self: &Arc<Self>) -> usize {
        Arc::strong_count(self).saturating_sub(1)
    }

    /// What the main loop should watch now; also ends the pending attention request, so
    /// that the next change asks again.
    pub(crate) fn interest(self: &Arc<Self>) -> Interest {
        let mut state = self.lock();
        state.attention_requested = false;
        if state.broken {
            return Interest::Close;
        }
        if self.requests_in_hand() >= MAX_IN_HAND {
            state.reading_paused = true;
        }
        Interest::Watch {
            read: !state.reading_paused,
            write: !state.frames.is_empty(),
        }
    }

    /// A reply is done with the connection: resumes reading once few are left in hand.
    /// `in_hand` counts the replies alive, the finishing one included.
    pub(crate) fn reply_done(&self, in_hand: usize) {
        let mut state = self.lock();
        if state.reading_paused && in_hand <= MAX_IN_HAND / 2 && state.socket.is_some() {
            state.reading_paused = false;
            self.ask_attention(&mut state);
        }
    }

    /// Closes the connection: drops the socket and the unsent frames.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.socket = None;
        state.frames = VecDeque::new();
        state.queued = 0;
    }

    fn ask_attention(&self, state: &mut State) {
        if !state.attention_requested {
            state.attention_requested = true;
            self.attention.request(self.token);
        }
    }
}

/// Sends queued frames until the socket would block; a failed socket marks the outbox
/// broken (the client is gone, nobody is left to answer).
fn send_queued(state: &mut State) {
    let Some(socket) = state.socket.clone() else {
        return;
    };
    while let Some(frame) = state.frames.front() {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match send(socket.as_raw_fd(), &frame[state.sent..], flags) {
            Ok(written) => {
                state.sent += written;
                if state.sent == frame.len() {
                    state.queued -= frame.len();
                    state.sent = 0;
                    state.frames.pop_front();
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return,
            Err(errno) => {
                log::debug!("dropping a connection after a failed send: {errno}");
                state.broken = true;
                state.frames = VecDeque::new();
                state.queued = 0;
                state.sent = 0;
                return;
            }
        }
    }
    if state.frames.capacity() > 0 {
        // An idle connection holds no buffer of its busiest moment.
        state.frames = VecDeque::new();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only queue and flag updates happen under these locks; a panic cannot tear them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const TOKEN: u64 = 7;

    fn outbox() -> (UnixStream, Arc<Outbox>, Arc<Attention>) {
        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let attention = Attention::new().unwrap();
        let outbox = Outbox::new(Arc::new(server), TOKEN, Arc::clone(&attention));
        (client, outbox, attention)
    }

    #[test]
    fn a_reading_client_gets_every_frame_in_order() {
        let (mut client, outbox, attention) = outbox();
        outbox.push(b"first".to_vec());
        outbox.push(b"second".to_vec());
        let mut got = [0u8; 11];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"firstsecond");
        assert!(!outbox.has_pending());
        // Sent at once: the main loop was never needed.
        assert!(attention.take().is_empty());
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_off_without_blocking() {
        let (_client, outbox, attention) = outbox();
        let frame = vec![0u8; 64 * 1024];
        // The socket buffer fills, then the outbox, then the connection is cut off; no
        // push ever blocks.
        for _ in 0..OUTBOX_LIMIT / frame.len() + 64 {
            outbox.push(frame.clone());
        }
        assert_eq!(outbox.interest(), Interest::Close);
        assert_eq!(attention.take(), vec![TOKEN]);
        assert!(!outbox.has_pending());
    }

    #[test]
    fn a_closed_outbox_holds_no_socket_and_drops_what_comes() {
        let (mut client, outbox, _) = outbox();
        outbox.close();
        outbox.push(b"late".to_vec());
        assert!(outbox.is_closed());
        assert!(!outbox.has_pending());
        // The outbox held the last reference to the server end: the client sees EOF.
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).unwrap(), 0);
    }

    #[test]
    fn reading_pauses_with_too_many_in_hand_and_resumes_at_half() {
        let (_client, outbox, attention) = outbox();
        let in_hand: Vec<Arc<Outbox>> = (0..MAX_IN_HAND).map(|_| Arc::clone(&outbox)).collect();
        let paused = Interest::Watch {
            read: false,
            write: false,
        };
        assert_eq!(outbox.interest(), paused);
        drop(in_hand);
        // A reply going away reports how many are left, itself included.
        outbox.reply_done(MAX_IN_HAND / 2);
        assert_eq!(attention.take(), vec![TOKEN]);
        let reading = Interest::Watch {
            read: true,
            write: false,
        };
        assert_eq!(outbox.interest(), reading);
    }
}
