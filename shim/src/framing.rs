//! ttrpc framing, the one copy the server and the event publisher share.
//!
//! A message is a 10-byte header (body length and stream id, both u32 big-endian, then a
//! type byte and a flags byte) followed by its body, of at most [`MAX_BODY`] bytes: ttrpc's
//! limit on both ends of a connection (a peer that receives a larger frame drops it and
//! reports `ResourceExhausted`). The header codec is ttrpc's own [`MessageHeader`]; what
//! lives here is the limit and the cutting of a byte stream into frames, either blocking
//! ([`read_frame`], the publisher) or fed chunk by chunk ([`FrameSplitter`], the server).

use std::io::{self, Read};

pub(crate) use ttrpc::proto::MessageHeader;
use ttrpc::proto::{MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX};

/// The largest body a frame may carry, either way.
pub(crate) const MAX_BODY: usize = MESSAGE_LENGTH_MAX;

/// A body too large to frame.
#[derive(Debug, thiserror::Error)]
#[error("a body of {length} bytes exceeds the ttrpc limit of {MAX_BODY}")]
pub(crate) struct TooLarge {
    /// The body's length.
    pub(crate) length: usize,
}

/// One frame taken off the wire.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A complete frame within the size limit.
    Complete {
        header: MessageHeader,
        body: Vec<u8>,
    },
    /// A frame over the limit: its body is not kept.
    Oversized { header: MessageHeader },
}

#[cfg(test)]
impl Frame {
    /// Its stream id and body (`oversized` for an oversized frame), for assertions.
    pub(crate) fn summary(&self) -> (u32, Vec<u8>) {
        match self {
            Frame::Complete { header, body } => (header.stream_id, body.clone()),
            Frame::Oversized { header } => (header.stream_id, b"oversized".to_vec()),
        }
    }
}

/// A request frame carrying `body` on `stream_id`.
pub(crate) fn request(stream_id: u32, body: &[u8]) -> Result<Vec<u8>, TooLarge> {
    encode(body, |length| MessageHeader::new_request(stream_id, length))
}

/// A response frame carrying `body` on `stream_id`.
pub(crate) fn response(stream_id: u32, body: &[u8]) -> Result<Vec<u8>, TooLarge> {
    encode(body, |length| {
        MessageHeader::new_response(stream_id, length)
    })
}

fn encode(body: &[u8], header: impl FnOnce(u32) -> MessageHeader) -> Result<Vec<u8>, TooLarge> {
    let length = Some(body.len())
        .filter(|length| *length <= MAX_BODY)
        .and_then(|length| u32::try_from(length).ok())
        .ok_or(TooLarge { length: body.len() })?;
    let mut frame: Vec<u8> = header(length).into();
    frame.extend_from_slice(body);
    Ok(frame)
}

/// The body length `header` announces, if it is within the limit.
fn body_length(header: &MessageHeader) -> Option<usize> {
    usize::try_from(header.length)
        .ok()
        .filter(|length| *length <= MAX_BODY)
}

/// Reads one frame from a blocking stream.
///
/// An oversized frame's body is left unread, so the stream no longer stands at a frame
/// boundary: the caller drops the connection.
pub(crate) fn read_frame(reader: &mut impl Read) -> io::Result<Frame> {
    let mut header = [0u8; MESSAGE_HEADER_LENGTH];
    reader.read_exact(&mut header)?;
    let header = MessageHeader::from(header);
    let Some(length) = body_length(&header) else {
        return Ok(Frame::Oversized { header });
    };
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Frame::Complete { header, body })
}

/// Bytes in, frames out: the framing of one connection's non-blocking byte stream.
#[derive(Debug, Default)]
pub(crate) struct FrameSplitter {
    buffer: Vec<u8>,
    /// Body bytes still to skip of an oversized frame.
    skipping: usize,
}

impl FrameSplitter {
    /// Adds bytes read from the connection.
    pub(crate) fn take_in(&mut self, bytes: &[u8]) {
        let skipped = self.skipping.min(bytes.len());
        self.skipping -= skipped;
        self.buffer.extend_from_slice(&bytes[skipped..]);
    }

    /// Takes every complete frame out of what was added; an oversized frame is reported
    /// at once and its body skipped as it arrives, never buffered.
    pub(crate) fn split(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut consumed = 0;
        while self.skipping == 0 {
            let rest = &self.buffer[consumed..];
            if rest.len() < MESSAGE_HEADER_LENGTH {
                break;
            }
            let header = MessageHeader::from(&rest[..MESSAGE_HEADER_LENGTH]);
            let rest = &rest[MESSAGE_HEADER_LENGTH..];
            let Some(length) = body_length(&header) else {
                let announced = usize::try_from(header.length).unwrap_or(usize::MAX);
                let skipped = rest.len().min(announced);
                consumed += MESSAGE_HEADER_LENGTH + skipped;
                self.skipping = announced - skipped;
                frames.push(Frame::Oversized { header });
                continue;
            };
            if rest.len() < length {
                break;
            }
            let body = rest[..length].to_vec();
            consumed += MESSAGE_HEADER_LENGTH + length;
            frames.push(Frame::Complete { header, body });
        }
        self.buffer.drain(..consumed);
        if self.buffer.is_empty() {
            // Between requests a connection holds no memory: the buffer would otherwise keep
            // the capacity of the largest read for as long as the client stays connected.
            self.buffer = Vec::new();
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use ttrpc::proto::{MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};

    use super::*;

    #[test]
    fn a_frame_reads_back_as_written() {
        let bytes = response(9, b"body").unwrap();
        assert_eq!(bytes.len(), MESSAGE_HEADER_LENGTH + 4);
        let Frame::Complete { header, body } = read_frame(&mut bytes.as_slice()).unwrap() else {
            panic!("oversized");
        };
        assert_eq!((header.stream_id, header.type_), (9, MESSAGE_TYPE_RESPONSE));
        assert_eq!(body, b"body");
        let header = MessageHeader::from(&request(3, b"").unwrap()[..MESSAGE_HEADER_LENGTH]);
        assert_eq!((header.stream_id, header.type_), (3, MESSAGE_TYPE_REQUEST));
    }

    #[test]
    fn bodies_over_the_limit_are_refused_both_ways() {
        let body = vec![0u8; MAX_BODY + 1];
        assert_eq!(request(1, &body).unwrap_err().length, MAX_BODY + 1);
        assert!(response(1, &body[..MAX_BODY]).is_ok());
        let oversized = u32::try_from(MAX_BODY + 1).unwrap();
        let header: Vec<u8> = MessageHeader::new_response(1, oversized).into();
        let frame = read_frame(&mut header.as_slice()).unwrap();
        assert!(matches!(frame, Frame::Oversized { .. }));
    }

    #[test]
    fn the_splitter_joins_reads_and_skips_an_oversized_body() {
        let oversized = u32::try_from(MAX_BODY + 1).unwrap();
        let mut bytes: Vec<u8> = MessageHeader::new_request(5, oversized).into();
        bytes.extend(vec![7u8; MAX_BODY + 1]);
        bytes.extend(request(7, b"after").unwrap());
        bytes.extend(request(9, b"last").unwrap());
        let mut splitter = FrameSplitter::default();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(4096 + 3) {
            splitter.take_in(chunk);
            seen.extend(splitter.split().iter().map(Frame::summary));
        }
        assert_eq!(
            seen,
            [
                (5, b"oversized".to_vec()),
                (7, b"after".to_vec()),
                (9, b"last".to_vec())
            ]
        );
        assert_eq!(splitter.buffer.capacity(), 0);
    }
}
