//! The order of a delivery stream, read from either end (`docs/peer-protocol.md` §6).
//!
//! ```text
//! client → server   Envelope  Data ... Data  FIN      (or ... Error FIN: abandoned)
//! server → client   Outcome × recipients     FIN      (or ... Error FIN)
//! ```
//!
//! - [`DeliveryReader`], at the receiving proxy: the message counts only when the
//!   Envelope arrived, the Data frames add up exactly to its `body_len`, no frame follows
//!   them, and the stream ended (FIN) between frames. Only then does it return
//!   [`DeliveryEvent::Complete`], and only then may the receiver store the message and
//!   answer Stored. A byte beyond the announced length is never handed out.
//! - [`OutcomeReader`], at the sending proxy: outcomes arrive in envelope order, one per
//!   recipient, and none claims Stored before this side sent the whole body.
//!
//! Both stop at the first [`PeerError`]: the caller sends an Error frame with its
//! [`PeerError::code`] (or resets the stream with it), and nothing more comes out.
//!
//! Call order: `push` the bytes read from the stream, `handle_fin` when the peer finished
//! its side, and after each of these call `next_event` until it returns `None`.

use bytes::Bytes;

use super::decoder::{Decoded, FrameDecoder};
use super::error::PeerError;
use super::frame::{Envelope, ErrorFrame, Frame, FrameType, Outcome};

/// What the receiving proxy learns from a delivery stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// The envelope; the body follows.
    Envelope(Envelope),
    /// Body bytes, in order. They add up to `body_len` at most.
    Body(Bytes),
    /// The body is complete and the stream ended exactly after it: the message may be
    /// stored. Always the last event.
    Complete,
    /// The sender abandoned the delivery with an Error frame: store nothing. The last
    /// event.
    Abandoned(ErrorFrame),
}

/// Reads a delivery stream at the receiving proxy. See the module documentation.
#[derive(Debug, Default)]
pub struct DeliveryReader {
    decoder: FrameDecoder,
    state: Expect,
    fin: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Expect {
    #[default]
    Envelope,
    /// `remaining` body bytes to come; `in_frame` of them belong to the Data frame whose
    /// pieces are being handed out (0 between Data frames).
    Body { remaining: u64, in_frame: usize },
    /// The body is complete; only the FIN may follow.
    Fin,
    /// Complete, abandoned or failed: nothing more comes out.
    Done,
}

impl DeliveryReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read from the stream. Ignored once the stream is done.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.state != Expect::Done {
            self.decoder.push(bytes);
        }
    }

    /// The client finished its side of the stream.
    pub fn handle_fin(&mut self) {
        self.fin = true;
    }

    /// The next event, the peer's violation, or `None` if more input is needed (or the
    /// stream is done).
    pub fn next_event(&mut self) -> Option<Result<DeliveryEvent, PeerError>> {
        if self.state == Expect::Done {
            return None;
        }
        let Some(item) = self.decoder.next_frame() else {
            return self.at_end();
        };
        let event = match (item, self.state) {
            (Err(error), _) => Err(error),
            (Ok(Decoded::Frame(Frame::Error(error))), _) => {
                self.state = Expect::Done;
                return Some(Ok(DeliveryEvent::Abandoned(error)));
            }
            (Ok(Decoded::Frame(Frame::Envelope(envelope))), Expect::Envelope) => {
                self.state = Expect::Body {
                    remaining: envelope.body_len,
                    in_frame: 0,
                };
                Ok(DeliveryEvent::Envelope(envelope))
            }
            (
                Ok(Decoded::Data { piece, rest }),
                Expect::Body {
                    remaining,
                    in_frame,
                },
            ) => {
                let len = piece.len() as u64;
                // On a frame's first piece, the whole frame must fit in what is left.
                if in_frame == 0 && len + rest as u64 > remaining {
                    Err(PeerError::BodyTooLong)
                } else {
                    let remaining = remaining - len;
                    self.state = if remaining == 0 {
                        Expect::Fin
                    } else {
                        Expect::Body {
                            remaining,
                            in_frame: rest,
                        }
                    };
                    Ok(DeliveryEvent::Body(piece))
                }
            }
            (Ok(Decoded::Data { .. }), Expect::Fin) => Err(PeerError::BodyTooLong),
            (Ok(Decoded::Data { .. }), _) => Err(PeerError::UnexpectedFrame {
                got: FrameType::Data,
            }),
            (Ok(Decoded::Frame(frame)), _) => Err(PeerError::UnexpectedFrame {
                got: frame.frame_type(),
            }),
        };
        if event.is_err() {
            self.state = Expect::Done;
        }
        Some(event)
    }

    /// Body bytes still to come; 0 before the envelope and once the body is complete.
    pub fn remaining(&self) -> u64 {
        match self.state {
            Expect::Body { remaining, .. } => remaining,
            _ => 0,
        }
    }

    /// True once nothing more will come out.
    pub fn is_done(&self) -> bool {
        self.state == Expect::Done
    }

    /// Everything buffered has been returned: decide at the FIN.
    fn at_end(&mut self) -> Option<Result<DeliveryEvent, PeerError>> {
        if !self.fin {
            return None;
        }
        let verdict = match (self.decoder.finish(), self.state) {
            (Err(error), _) => Err(error),
            (Ok(()), Expect::Fin) => Ok(DeliveryEvent::Complete),
            (Ok(()), Expect::Envelope) => Err(PeerError::MissingEnvelope),
            (Ok(()), Expect::Body { remaining, .. }) => {
                Err(PeerError::BodyTruncated { missing: remaining })
            }
            (Ok(()), Expect::Done) => return None,
        };
        self.state = Expect::Done;
        Some(verdict)
    }
}

/// What the sending proxy learns from the outcome side of a delivery stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeEvent {
    /// The outcome for the recipient at index `recipient`, the next in envelope order.
    /// Final: a Stored recipient is delivered whatever happens to the stream later.
    Outcome { recipient: u16, outcome: Outcome },
    /// Every recipient has its outcome and the stream ended. The last event.
    Complete,
    /// The receiver refused or ended the delivery with an Error frame: every recipient
    /// without an outcome is not delivered (fall back to mail). The last event.
    Refused(ErrorFrame),
}

/// Reads the outcomes of a delivery at the sending proxy. See the module documentation.
#[derive(Debug)]
pub struct OutcomeReader {
    decoder: FrameDecoder,
    /// Recipients in the envelope.
    recipients: u16,
    /// Index of the next outcome expected.
    next: u16,
    /// This side has sent the whole body (and its FIN).
    body_sent: bool,
    fin: bool,
    done: bool,
}

impl OutcomeReader {
    /// A reader for a delivery of `recipients` recipients (the envelope's count).
    pub fn new(recipients: u16) -> Self {
        Self {
            decoder: FrameDecoder::new(),
            recipients,
            next: 0,
            body_sent: false,
            fin: false,
            done: false,
        }
    }

    /// Call once the whole body and the FIN have been written: from then on a Stored
    /// outcome is believable.
    pub fn handle_body_sent(&mut self) {
        self.body_sent = true;
    }

    /// Bytes read from the stream. Ignored once the stream is done.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.done {
            self.decoder.push(bytes);
        }
    }

    /// The server finished its side of the stream.
    pub fn handle_fin(&mut self) {
        self.fin = true;
    }

    /// The next event, the peer's violation, or `None` if more input is needed (or the
    /// stream is done).
    pub fn next_event(&mut self) -> Option<Result<OutcomeEvent, PeerError>> {
        if self.done {
            return None;
        }
        let Some(item) = self.decoder.next_frame() else {
            return self.at_end();
        };
        let event = match item {
            Err(error) => Err(error),
            Ok(Decoded::Frame(Frame::Error(error))) => {
                self.done = true;
                return Some(Ok(OutcomeEvent::Refused(error)));
            }
            Ok(Decoded::Frame(Frame::Outcome { recipient, outcome })) => {
                if self.next >= self.recipients {
                    Err(PeerError::ExtraOutcome { got: recipient })
                } else if recipient != self.next {
                    Err(PeerError::OutcomeOutOfOrder {
                        expected: self.next,
                        got: recipient,
                    })
                } else if outcome.is_stored() && !self.body_sent {
                    Err(PeerError::StoredBeforeEnd { recipient })
                } else {
                    self.next += 1;
                    Ok(OutcomeEvent::Outcome { recipient, outcome })
                }
            }
            Ok(Decoded::Data { .. }) => Err(PeerError::UnexpectedFrame {
                got: FrameType::Data,
            }),
            Ok(Decoded::Frame(frame)) => Err(PeerError::UnexpectedFrame {
                got: frame.frame_type(),
            }),
        };
        if event.is_err() {
            self.done = true;
        }
        Some(event)
    }

    /// Recipients that have no outcome yet.
    pub fn missing(&self) -> u16 {
        self.recipients.saturating_sub(self.next)
    }

    /// True once nothing more will come out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn at_end(&mut self) -> Option<Result<OutcomeEvent, PeerError>> {
        if !self.fin {
            return None;
        }
        self.done = true;
        Some(match self.decoder.finish() {
            Err(error) => Err(error),
            Ok(()) if self.next < self.recipients => Err(PeerError::MissingOutcomes {
                missing: self.recipients - self.next,
            }),
            Ok(()) => Ok(OutcomeEvent::Complete),
        })
    }
}
