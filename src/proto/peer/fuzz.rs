//! Fuzz body for the peer-link codec: takes arbitrary bytes, drives the decoder, the
//! encoder and both stream readers, and asserts their invariants; a panic is a bug found.
//! `crate::fuzzing` wraps it for the cargo-fuzz target and the seed replay on stable.

use bytes::Bytes;

use super::decoder::{Decoded, FrameDecoder};
use super::error::PeerError;
use super::frame::{Envelope, ErrorFrame, Frame, FrameType, Header, FRAME_HEADER_LEN};
use super::stream::{DeliveryEvent, DeliveryReader, OutcomeEvent, OutcomeReader};
use super::{MAX_BUFFERED, MAX_DATA_LEN};

/// Decodes a peer-link byte stream in several ways and checks that they agree.
///
/// Input: a header byte, then chunk sizes, then the stream.
/// - byte 0: bits 0–3 give `k`, the number of chunk-size bytes that follow; bits 4–6 give
///   the recipient count minus one for the [`OutcomeReader`]; bit 7 says the body was sent
///   (a Stored outcome is then allowed).
/// - bytes 1..=k: chunk sizes (`byte + 1`), used in turn; with `k = 0` the stream is
///   pushed whole.
///
/// Invariants:
/// - [`FrameDecoder`] fed in the header's chunks, whole, and one byte per push gives the
///   same frames, errors and trailing partial Data as a loop over [`Frame::decode`]
///   that skips a faulty frame by its length; [`FrameDecoder::finish`] agrees with where
///   that loop stopped;
/// - Data pieces are never empty and a Data frame never exceeds [`MAX_DATA_LEN`]; after
///   each drain fewer than [`MAX_BUFFERED`] bytes are held;
/// - every decoded frame encodes back to exactly the bytes it was decoded from, and those
///   decode to the same frame;
/// - [`DeliveryReader`] and [`OutcomeReader`] give the same events however the input is
///   split; nothing follows their last event; a complete delivery's body has exactly the
///   announced length; outcomes come in envelope order, and Stored only after the body.
pub fn fuzz_peer_frames(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(flags & 0x0f).min(rest.len());
    let (sizes, input) = rest.split_at(k);
    let recipients = u16::from((flags >> 4) & 0x07) + 1;
    let body_sent = flags & 0x80 != 0;

    let chunks = crate::proto::split_by_sizes(input, sizes);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let whole: [&[u8]; 1] = [input];

    let reference = one_shot(input);
    for (name, split) in [
        ("chunked", &chunks[..]),
        ("whole", &whole[..]),
        ("bytewise", &bytes[..]),
    ] {
        let streamed = streamed(split);
        assert_eq!(
            streamed.seen, reference.seen,
            "{name} decoding differs from one-shot decoding"
        );
        assert_eq!(
            streamed.between_frames, reference.between_frames,
            "{name} decoding ends in another place than one-shot decoding"
        );
    }

    for (frame, wire) in &reference.frames {
        let encoded = frame
            .to_bytes()
            .unwrap_or_else(|e| panic!("decoded {frame:?} does not encode: {e}"));
        assert_eq!(
            &encoded, wire,
            "{frame:?} encodes to other bytes than it was decoded from"
        );
        assert_eq!(
            Frame::decode(&encoded),
            Ok(Some((frame.clone(), encoded.len()))),
            "re-encoded frame decodes differently"
        );
    }

    let delivery = delivery(&whole);
    assert_eq!(
        delivery,
        self::delivery(&chunks),
        "chunked delivery differs"
    );
    assert_eq!(
        delivery,
        self::delivery(&bytes),
        "bytewise delivery differs"
    );
    let outcomes = outcomes(&whole, recipients, body_sent);
    assert_eq!(
        outcomes,
        self::outcomes(&chunks, recipients, body_sent),
        "chunked outcomes differ"
    );
    assert_eq!(
        outcomes,
        self::outcomes(&bytes, recipients, body_sent),
        "bytewise outcomes differ"
    );
}

/// Decoder output that does not depend on how the input was split: Data pieces merged
/// into their frame, or into a trailing partial frame.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Frame(Frame),
    Error(PeerError),
    PartialData(Text),
}

/// Bytes that print escaped in assertion messages.
#[derive(PartialEq, Eq)]
struct Text(Vec<u8>);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

struct Decoding {
    seen: Vec<Seen>,
    /// Each complete frame with the bytes it was decoded from (one-shot only).
    frames: Vec<(Frame, Vec<u8>)>,
    /// The input ended exactly between frames.
    between_frames: bool,
}

/// The reference: [`Frame::decode`] in a loop, skipping a faulty frame by its length.
fn one_shot(input: &[u8]) -> Decoding {
    let mut seen = Vec::new();
    let mut frames = Vec::new();
    let mut at = 0;
    let between_frames = loop {
        let rest = &input[at..];
        if rest.is_empty() {
            break true;
        }
        match Frame::decode(rest) {
            Ok(Some((frame, n))) => {
                assert!(n <= rest.len(), "decode claims more bytes than it got");
                seen.push(Seen::Frame(frame.clone()));
                frames.push((frame, rest[..n].to_vec()));
                at += n;
            }
            Ok(None) => {
                // A Data frame with a good header hands out what has arrived.
                let header = Header::read(rest);
                if let Some(header) = header {
                    if header.check() == Ok(FrameType::Data) && rest.len() > FRAME_HEADER_LEN {
                        seen.push(Seen::PartialData(Text(rest[FRAME_HEADER_LEN..].to_vec())));
                    }
                }
                break false;
            }
            Err(error) => {
                seen.push(Seen::Error(error));
                let header = Header::read(rest).expect("errors come after a whole header");
                let end = FRAME_HEADER_LEN as u64 + u64::from(header.len);
                if (rest.len() as u64) < end {
                    break false;
                }
                at += end as usize;
            }
        }
    };
    Decoding {
        seen,
        frames,
        between_frames,
    }
}

/// [`FrameDecoder`] over `chunks`, checking its per-item invariants.
fn streamed(chunks: &[&[u8]]) -> Decoding {
    let mut decoder = FrameDecoder::new();
    let mut seen = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(item) = decoder.next_frame() {
            match item {
                Ok(Decoded::Data { piece, rest }) => {
                    assert!(!piece.is_empty(), "an empty Data piece");
                    let frame = data.get_or_insert_with(Vec::new);
                    frame.extend_from_slice(&piece);
                    assert!(
                        frame.len() + rest <= MAX_DATA_LEN,
                        "a Data frame over the limit"
                    );
                    if rest == 0 {
                        let frame = data.take().unwrap_or_default();
                        seen.push(Seen::Frame(Frame::Data(Bytes::from(frame))));
                    }
                }
                Ok(Decoded::Frame(frame)) => {
                    assert!(data.is_none(), "a frame inside a Data frame");
                    assert!(
                        !matches!(frame, Frame::Data(_)),
                        "Data returned as a whole frame"
                    );
                    seen.push(Seen::Frame(frame));
                }
                Err(error) => {
                    assert!(data.is_none(), "an error inside a Data frame");
                    seen.push(Seen::Error(error));
                }
            }
        }
        assert!(
            decoder.buffered() < MAX_BUFFERED,
            "the decoder holds {} bytes after draining",
            decoder.buffered()
        );
    }
    if let Some(partial) = data {
        seen.push(Seen::PartialData(Text(partial)));
    }
    let between_frames = decoder.finish().is_ok();
    assert_eq!(between_frames, decoder.is_between_frames());
    Decoding {
        seen,
        frames: Vec::new(),
        between_frames,
    }
}

/// [`DeliveryReader`] events with body pieces merged.
#[derive(Debug, PartialEq, Eq)]
enum DeliveryStep {
    Envelope(Box<Envelope>),
    Body(Text),
    Complete,
    Abandoned(ErrorFrame),
    Error(PeerError),
}

fn delivery(chunks: &[&[u8]]) -> Vec<DeliveryStep> {
    let mut reader = DeliveryReader::new();
    let mut steps = Vec::new();
    let mut announced = None;
    let mut body = 0u64;
    let mut last = false;
    let mut take = |reader: &mut DeliveryReader, steps: &mut Vec<DeliveryStep>| {
        while let Some(event) = reader.next_event() {
            assert!(!last, "an event after the last one");
            let step = match event {
                Ok(DeliveryEvent::Envelope(envelope)) => {
                    assert!(announced.is_none(), "a second envelope");
                    announced = Some(envelope.body_len);
                    DeliveryStep::Envelope(Box::new(envelope))
                }
                Ok(DeliveryEvent::Body(piece)) => {
                    assert!(!piece.is_empty(), "an empty body piece");
                    body += piece.len() as u64;
                    let announced = announced.expect("body before the envelope");
                    assert!(body <= announced, "more body than announced handed out");
                    assert_eq!(reader.remaining(), announced - body);
                    if let Some(DeliveryStep::Body(Text(prev))) = steps.last_mut() {
                        prev.extend_from_slice(&piece);
                        continue;
                    }
                    DeliveryStep::Body(Text(piece.to_vec()))
                }
                Ok(DeliveryEvent::Complete) => {
                    last = true;
                    assert_eq!(Some(body), announced, "complete with another body length");
                    DeliveryStep::Complete
                }
                Ok(DeliveryEvent::Abandoned(error)) => {
                    last = true;
                    DeliveryStep::Abandoned(error)
                }
                Err(error) => {
                    last = true;
                    DeliveryStep::Error(error)
                }
            };
            steps.push(step);
        }
    };
    for chunk in chunks {
        reader.push(chunk);
        take(&mut reader, &mut steps);
    }
    reader.handle_fin();
    take(&mut reader, &mut steps);
    assert!(
        reader.is_done(),
        "the delivery reader is not done after the FIN"
    );
    steps
}

/// [`OutcomeReader`] events.
fn outcomes(
    chunks: &[&[u8]],
    recipients: u16,
    body_sent: bool,
) -> Vec<Result<OutcomeEvent, PeerError>> {
    let mut reader = OutcomeReader::new(recipients);
    if body_sent {
        reader.handle_body_sent();
    }
    let mut events = Vec::new();
    let take = |reader: &mut OutcomeReader, events: &mut Vec<_>| {
        while let Some(event) = reader.next_event() {
            assert!(
                !matches!(
                    events.last(),
                    Some(Err(_) | Ok(OutcomeEvent::Complete | OutcomeEvent::Refused(_)))
                ),
                "an event after the last one"
            );
            if let Ok(OutcomeEvent::Outcome { recipient, outcome }) = &event {
                let seen = events
                    .iter()
                    .filter(|e| matches!(e, Ok(OutcomeEvent::Outcome { .. })))
                    .count();
                assert_eq!(usize::from(*recipient), seen, "outcome out of order");
                assert!(*recipient < recipients, "outcome beyond the envelope");
                assert!(body_sent || !outcome.is_stored(), "Stored before the body");
            }
            if let Ok(OutcomeEvent::Complete) = &event {
                assert_eq!(reader.missing(), 0, "complete with outcomes missing");
            }
            events.push(event);
        }
    };
    for chunk in chunks {
        reader.push(chunk);
        take(&mut reader, &mut events);
    }
    reader.handle_fin();
    take(&mut reader, &mut events);
    assert!(
        reader.is_done(),
        "the outcome reader is not done after the FIN"
    );
    events
}
