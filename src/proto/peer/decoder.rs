//! The streaming frame decoder: frame first, then parse.
//!
//! The decoder reads the fixed 6-byte header, checks version, type and length against the
//! type's limit before it buffers a single payload byte, then:
//!
//! - for a Data frame, hands the payload out in pieces as it arrives
//!   ([`Decoded::Data`]), never holding it whole;
//! - for any other frame, buffers the payload (at most [`MAX_ENVELOPE_LEN`]) and parses it
//!   whole ([`Decoded::Frame`]).
//!
//! A faulty frame yields exactly one [`PeerError`], as soon as the fault is certain (at
//! its header, or at its last payload byte). Its remaining bytes are then skipped by its
//! length without being buffered (a discard state): the header layout is the same in
//! every version, so the length is trustworthy even in a frame that is not, and framing
//! stays in sync. Whether the stream goes on after an error is the caller's decision (a
//! delivery stream never does; see [`super::stream`]).
//!
//! The items and errors depend only on the bytes, not on how they were split into
//! pushes, except that Data pieces follow the pushes.
//!
//! Call order: [`FrameDecoder::push`] any number of times, then
//! [`FrameDecoder::next_frame`] until it returns `None`. When the peer ends the stream
//! (FIN), [`FrameDecoder::finish`] says whether it ended between frames. After
//! `next_frame` has returned `None`, fewer than [`MAX_BUFFERED`] bytes are held.
//!
//! [`MAX_ENVELOPE_LEN`]: super::MAX_ENVELOPE_LEN
//! [`MAX_BUFFERED`]: super::MAX_BUFFERED

use bytes::{Buf, Bytes, BytesMut};

use super::error::PeerError;
use super::frame::{parse_payload, Frame, FrameType, Header, FRAME_HEADER_LEN};

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame other than Data.
    Frame(Frame),
    /// A piece of a Data frame's payload, in order, never empty. `rest` is the number of
    /// bytes of the same frame still to come: the piece at `rest == 0` is the frame's
    /// last, and `piece.len() + rest` on a frame's first piece is its whole length.
    Data { piece: Bytes, rest: usize },
}

/// The streaming decoder. See the module documentation for the call order.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    state: State,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Between frames: `buf` starts with the next header.
    #[default]
    Header,
    /// Waiting for the `len` payload bytes of a frame that is parsed whole.
    Payload { frame_type: FrameType, len: usize },
    /// Inside a Data frame with `rest` payload bytes to come; `buf` is empty after each
    /// piece handed out.
    Data { rest: usize },
    /// Skipping the `rest` remaining bytes of a faulty frame; `buf` is empty.
    Discard { rest: u64 },
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. While a faulty frame is being skipped, its bytes are
    /// dropped here and never buffered.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if let State::Discard { rest } = self.state {
            let skip = usize::try_from(rest).map_or(bytes.len(), |r| r.min(bytes.len()));
            bytes = &bytes[skip..];
            let rest = rest - skip as u64;
            self.state = if rest == 0 {
                State::Header
            } else {
                State::Discard { rest }
            };
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame or Data piece, an error for a faulty frame, or `None` if more input
    /// is needed.
    pub fn next_frame(&mut self) -> Option<Result<Decoded, PeerError>> {
        loop {
            match self.state {
                State::Discard { .. } => return None,
                State::Data { rest } => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    let n = rest.min(self.buf.len());
                    let piece = self.buf.split_to(n).freeze();
                    let rest = rest - n;
                    self.state = if rest == 0 {
                        State::Header
                    } else {
                        State::Data { rest }
                    };
                    return Some(Ok(Decoded::Data { piece, rest }));
                }
                State::Payload { frame_type, len } => {
                    if self.buf.len() < len {
                        return None;
                    }
                    let payload = self.buf.split_to(len).freeze();
                    self.state = State::Header;
                    return Some(
                        parse_payload(frame_type, payload)
                            .map(Decoded::Frame)
                            .map_err(PeerError::from),
                    );
                }
                State::Header => {
                    let header = Header::read(&self.buf)?;
                    self.buf.advance(FRAME_HEADER_LEN);
                    let len = header.len as usize;
                    match header.check() {
                        Err(error) => {
                            self.state = State::Discard {
                                rest: u64::from(header.len),
                            };
                            // Skip what is already buffered of the faulty frame.
                            let buffered = self.buf.split();
                            self.push(&buffered);
                            return Some(Err(error));
                        }
                        Ok(FrameType::Data) => self.state = State::Data { rest: len },
                        Ok(frame_type) => self.state = State::Payload { frame_type, len },
                    }
                }
            }
        }
    }

    /// At the peer's FIN, after `next_frame` returned `None`: `Ok` if the stream ended
    /// between frames, [`PeerError::Truncated`] if it ended inside one (a header, a
    /// payload, a Data frame or a faulty frame being skipped).
    pub fn finish(&self) -> Result<(), PeerError> {
        if self.is_between_frames() {
            Ok(())
        } else {
            Err(PeerError::Truncated)
        }
    }

    /// True when nothing is buffered and no frame is open.
    pub fn is_between_frames(&self) -> bool {
        self.state == State::Header && self.buf.is_empty()
    }

    /// Bytes received and not yet returned or skipped.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
