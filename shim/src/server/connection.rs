//! The read half of one client connection: bytes in, complete request frames out.
//!
//! Reads use `MSG_DONTWAIT` and stop after [`READ_BUDGET`] chunks, so the main thread only
//! takes what epoll said is there, and one busy client cannot keep it from the others
//! (epoll is level-triggered: what is left is reported again). Writes go through the
//! connection's [`Outbox`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use super::outbox::{Attention, Interest, Outbox};
use crate::framing::{Frame, FrameSplitter};

/// Bytes read per `recv`, on the main thread's stack: most requests fit in one (a Create
/// is about 1 KiB), larger ones take a few. Every page of it is a page of the main thread's
/// stack that stays resident for the shim's life, so it is kept small.
const READ_CHUNK: usize = 4 * 1024;
/// Chunks read per readiness report before the main loop moves on to other work.
const READ_BUDGET: usize = 16;

/// What reading found.
#[derive(Debug)]
pub(crate) enum Readable {
    /// Zero or more frames; the connection is still open.
    Frames(Vec<Frame>),
    /// The client closed the connection (frames read before that are included).
    Closed(Vec<Frame>),
}

/// One accepted client connection.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The socket; the outbox shares it until [`Connection::close`].
    stream: Arc<UnixStream>,
    outbox: Arc<Outbox>,
    splitter: FrameSplitter,
    /// What epoll watches for now.
    watched: Interest,
}

impl Connection {
    /// Wraps an accepted (non-blocking) socket known to epoll as `token`.
    pub(crate) fn new(stream: UnixStream, token: u64, attention: Arc<Attention>) -> Self {
        let stream = Arc::new(stream);
        let outbox = Outbox::new(Arc::clone(&stream), token, attention);
        Self {
            stream,
            outbox,
            splitter: FrameSplitter::default(),
            watched: Interest::Watch {
                read: true,
                write: false,
            },
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// What epoll watches for now, as last set by the caller.
    pub(crate) fn watched(&self) -> Interest {
        self.watched
    }

    pub(crate) fn set_watched(&mut self, interest: Interest) {
        self.watched = interest;
    }

    /// Ends the connection: the outbox lets go of the socket, so the descriptor closes
    /// when this value drops, whatever replies are still in flight.
    pub(crate) fn close(self) {
        self.outbox.close();
    }

    /// Reads what is available (up to the budget) and splits it into frames.
    pub(crate) fn read_frames(&mut self) -> io::Result<Readable> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut closed = false;
        for _ in 0..READ_BUDGET {
            match recv(self.stream.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(read) => self.splitter.take_in(&chunk[..read]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(Errno::ECONNRESET) => {
                    closed = true;
                    break;
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        let frames = self.splitter.split();
        Ok(if closed {
            Readable::Closed(frames)
        } else {
            Readable::Frames(frames)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::framing::{self, MessageHeader, MAX_BODY};

    fn frame(stream_id: u32, body: &[u8]) -> Vec<u8> {
        framing::request(stream_id, body).unwrap()
    }

    fn bodies(frames: &[Frame]) -> Vec<(u32, Vec<u8>)> {
        frames.iter().map(Frame::summary).collect()
    }

    #[test]
    fn splits_frames_across_reads() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut connection = Connection::new(server, 1, Attention::new().unwrap());
        let mut bytes = frame(1, b"first");
        bytes.extend(frame(3, b"second"));
        client.write_all(&bytes[..7]).unwrap();
        let Readable::Frames(frames) = connection.read_frames().unwrap() else {
            panic!("closed early");
        };
        assert!(frames.is_empty());
        client.write_all(&bytes[7..]).unwrap();
        drop(client);
        let Readable::Closed(frames) = connection.read_frames().unwrap() else {
            panic!("close not seen");
        };
        assert_eq!(
            bodies(&frames),
            [(1, b"first".to_vec()), (3, b"second".to_vec())]
        );
    }

    #[test]
    fn skips_an_oversized_frame_and_keeps_the_next() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut connection = Connection::new(server, 1, Attention::new().unwrap());
        let oversized = u32::try_from(MAX_BODY + 1).unwrap();
        let header: Vec<u8> = MessageHeader::new_request(5, oversized).into();
        let writer = std::thread::spawn(move || {
            client.write_all(&header).unwrap();
            client.write_all(&vec![7u8; MAX_BODY + 1]).unwrap();
            client.write_all(&frame(7, b"after")).unwrap();
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match connection.read_frames().unwrap() {
                Readable::Frames(frames) | Readable::Closed(frames) => {
                    seen.extend(bodies(&frames));
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(seen, [(5, b"oversized".to_vec()), (7, b"after".to_vec())]);
    }
}
