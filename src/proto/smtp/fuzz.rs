//! Fuzz bodies for the SMTP core: each takes arbitrary bytes, drives one parser and
//! asserts its invariants; a panic is a bug found. `crate::fuzzing` wraps them for the
//! cargo-fuzz targets and the seed replay on stable.
//!
//! Each target also runs its input remapped onto a small alphabet of the protocol's
//! significant bytes (smtp-proto's `into_alphabet` trick), so that short random inputs
//! reach deep into the grammar.

use bytes::BytesMut;

use super::command::{self, Command};
use super::data::{
    reference_end_of_data, DataEvent, DataLimits, DataReceiver, DataViolation, DotStuffer,
    TEXT_LINE_MAX,
};
use super::line::{LineError, LineFramer, COMMAND_LINE_MAX, REPLY_LINE_MAX, RFC5321_REPLY_LINE};
use super::reply::{Reply, ReplyError, ReplyParser, MAX_REPLY_LINES};

// === commands ===

/// Bytes that matter to the command grammar.
const COMMAND_ALPHABET: &[u8] =
    b"MAILFROMRCPTODATEHLBSZUVXYQN:<>@.-= \"\\[]+,;0123456789abcxyz\r\n\0\xc3\xa9";

/// Parses the input as one command line and frames it as a command stream; the same
/// again remapped onto [`COMMAND_ALPHABET`].
///
/// Invariants: no panic; a parsed command came from a line without control characters
/// and encodes to a canonical line that parses back to the same command and is a fixed
/// point; an error's reply encodes and parses; the framer gives the same lines whether the
/// input arrives whole or one byte at a time, never a line with CR or LF or over the
/// limit, and never holds a full line's worth of bytes after draining.
pub fn fuzz_smtp_command(data: &[u8]) {
    let mapped = remap(data, COMMAND_ALPHABET);
    for input in [data, &mapped[..]] {
        check_command_line(input);
        for max_line in [64, COMMAND_LINE_MAX] {
            for line in check_line_stream(input, max_line).into_iter().flatten() {
                check_command_line(&line);
            }
        }
    }
}

fn check_command_line(line: &[u8]) {
    match command::command(line) {
        Ok(parsed) => {
            assert!(
                !line.iter().any(|&b| b < 0x20 || b == 0x7f),
                "a line with a control character parsed: {:?}",
                line.escape_ascii().to_string()
            );
            assert!(std::str::from_utf8(line).is_ok(), "a non-UTF-8 line parsed");
            let wire = parsed
                .to_bytes()
                .unwrap_or_else(|e| panic!("{parsed:?} does not encode: {e}"));
            let body = wire
                .strip_suffix(b"\r\n")
                .expect("encoded lines end in CRLF");
            assert!(
                !body.iter().any(|&b| b == b'\r' || b == b'\n'),
                "CR or LF inside an encoded command"
            );
            let reparsed = command::command(body).unwrap_or_else(|e| {
                panic!(
                    "canonical form {:?} of {parsed:?} does not parse: {e}",
                    body.escape_ascii().to_string()
                )
            });
            assert_eq!(reparsed, parsed, "canonical form parses to another command");
            assert_eq!(
                reparsed.to_bytes().ok(),
                Some(wire.clone()),
                "canonical form is not a fixed point"
            );
        }
        Err(error) => {
            let reply = error.reply();
            assert!(reply.is_permanent());
            check_encoded_reply(&reply);
        }
    }
    if let Ok(command::SaslLine::Response(response)) = command::sasl_line(line) {
        let auth = Command::Auth {
            mechanism: "PLAIN".into(),
            initial_response: Some(response),
        };
        assert!(
            auth.to_bytes().is_ok(),
            "a SASL response does not re-encode"
        );
    }
}

/// Frames `input` whole and one byte per push with the given limit; both must agree.
fn check_line_stream(input: &[u8], max_line: usize) -> Vec<Result<Vec<u8>, LineError>> {
    let whole = frame_lines(&[input], max_line);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let bytewise = frame_lines(&bytes, max_line);
    assert_eq!(
        whole, bytewise,
        "line framing depends on how input is split"
    );
    whole
}

fn frame_lines(chunks: &[&[u8]], max_line: usize) -> Vec<Result<Vec<u8>, LineError>> {
    let mut framer = LineFramer::new(max_line);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(line) = framer.next_line() {
            if let Ok(line) = &line {
                assert!(line.len() + 2 <= max_line, "a line over the limit");
                assert!(!line.iter().any(|&b| b == b'\r' || b == b'\n'));
            }
            out.push(line.map(|l| l.to_vec()));
        }
        assert!(
            framer.buffered() < max_line,
            "a drained framer holds {} bytes, limit {max_line}",
            framer.buffered()
        );
    }
    out
}

// === replies ===

const REPLY_ALPHABET: &[u8] = b"2345-0 .1\r\n\tx\x00\xc3";

/// Frames the input as an upstream's reply stream and parses replies, whole, one byte at
/// a time and with [`Reply::parse`]; then encodes a reply carrying the input as text. The
/// same again remapped onto a reply alphabet.
///
/// Invariants: no panic; all three ways give the same replies and errors (up to the
/// first error for `Reply::parse`); a reply is never partial (its lines share one valid
/// code, at most [`MAX_REPLY_LINES`]); a parsed reply whose lines fit re-encodes and
/// parses back equal; an encoded reply has only CRLF endings, lines of at most 512
/// bytes, and parses back as exactly one reply.
pub fn fuzz_smtp_reply(data: &[u8]) {
    let mapped = remap(data, REPLY_ALPHABET);
    for input in [data, &mapped[..]] {
        check_reply_stream(input);
        let code = [250, 354, 451, 554][usize::from(input.first().copied().unwrap_or(0) % 4)];
        let enhanced = match input.get(1).copied().unwrap_or(0) % 3 {
            0 => None,
            1 => Some(((code / 100) as u8, 0, 0)),
            _ => Some(((code / 100) as u8, 999, 999)),
        };
        let text = String::from_utf8_lossy(input).into_owned();
        let reply = Reply {
            code,
            enhanced,
            lines: text.split('\n').map(str::to_owned).collect(),
        };
        check_encoded_reply(&reply);
    }
}

fn check_reply_stream(input: &[u8]) {
    let whole = frame_replies(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        frame_replies(&bytes),
        whole,
        "reply parsing depends on how input is split"
    );

    let mut one_shot = Vec::new();
    let mut at = 0;
    loop {
        match Reply::parse(&input[at..]) {
            Ok(Some((reply, used))) => {
                assert!(used > 0 && at + used <= input.len());
                at += used;
                one_shot.push(Ok(reply));
            }
            Ok(None) => break,
            Err(e) => {
                one_shot.push(Err(e));
                break;
            }
        }
    }
    let framed: Vec<_> = match whole.iter().position(Result::is_err) {
        Some(first_error) => whole[..=first_error].to_vec(),
        None => whole.clone(),
    };
    assert_eq!(
        one_shot, framed,
        "Reply::parse differs from the framed parser"
    );

    for reply in whole.iter().flatten() {
        assert!(
            (200..600).contains(&reply.code),
            "invalid code {}",
            reply.code
        );
        assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES);
        let budget = RFC5321_REPLY_LINE - 6 - reply.enhanced.map_or(0, |_| 10);
        if reply.lines.iter().all(|l| l.len() <= budget) {
            let wire = reply.to_bytes();
            let back = Reply::parse(&wire).expect("an encoded reply parses");
            assert_eq!(
                back,
                Some((reply.clone(), wire.len())),
                "reply does not round-trip"
            );
        }
        check_encoded_reply(reply);
    }
}

fn frame_replies(chunks: &[&[u8]]) -> Vec<Result<Reply, ReplyError>> {
    let mut framer = LineFramer::new(REPLY_LINE_MAX);
    let mut parser = ReplyParser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(line) = framer.next_line() {
            match line {
                Ok(line) => match parser.push_line(&line) {
                    Ok(Some(reply)) => out.push(Ok(reply)),
                    Ok(None) => {}
                    Err(e) => {
                        assert!(!parser.in_reply(), "a failed reply left lines behind");
                        out.push(Err(e));
                    }
                },
                Err(e) => {
                    parser.reset();
                    out.push(Err(e.into()));
                }
            }
        }
    }
    out
}

fn check_encoded_reply(reply: &Reply) {
    let wire = reply.to_bytes();
    let mut lines = 0;
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("every encoded line ends in CRLF");
        let line = &rest[..end];
        assert!(
            line.len() + 2 <= RFC5321_REPLY_LINE,
            "an encoded reply line is {} bytes",
            line.len() + 2
        );
        assert!(!line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
        rest = &rest[end + 2..];
        lines += 1;
    }
    let (parsed, used) = Reply::parse(&wire)
        .expect("an encoded reply parses")
        .expect("an encoded reply is complete");
    assert_eq!(used, wire.len(), "an encoded reply is more than one reply");
    assert_eq!(parsed.lines.len(), lines);
}

// === data ===

const DATA_ALPHABET: &[u8] = b"\r\n.\r\n.a\0";

/// Line and size limits the data target chooses from: small, so that short inputs reach
/// them.
const DATA_MAX_LINES: [usize; 4] = [TEXT_LINE_MAX, 3, 8, 64];
const DATA_MAX_SIZES: [u64; 4] = [u64::MAX, 0, 10, 200];

/// Runs the DATA receiver over the input and compares it with the naive reference.
///
/// Input: byte 0 is flags: bits 0–1 choose `max_line` from [`DATA_MAX_LINES`], bits 2–3
/// `max_size` from [`DATA_MAX_SIZES`], bits 4–7 give `k`, the number of chunk-size bytes
/// that follow (`byte + 1` each, used in turn; `k = 0` pushes the data whole). The data
/// follows; it is also run remapped onto a framing alphabet.
///
/// Invariants: no panic; the same body, end offset, byte count and violation whether the
/// data comes in the header's chunks, whole or one byte at a time; all of them equal to
/// [`reference_end_of_data`]'s (without an end, the emitted body is a prefix of the
/// reference's for any continuation); a drained receiver holds less than one line; the
/// emitted body dot-stuffs and unstuffs back to itself, and stuffing any input gives a
/// stream that ends exactly at its terminator.
pub fn fuzz_smtp_data(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(flags >> 4).min(rest.len());
    let (sizes, input) = rest.split_at(k);
    let limits = DataLimits {
        max_line: DATA_MAX_LINES[usize::from(flags & 3)],
        max_size: DATA_MAX_SIZES[usize::from((flags >> 2) & 3)],
    };
    let mapped = remap(input, DATA_ALPHABET);
    for input in [input, &mapped[..]] {
        check_data(input, sizes, limits);
        check_stuffing(input);
    }
}

/// What a receiver made of an input, independent of chunking.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DataRun {
    pub(crate) emitted: Vec<u8>,
    /// `emitted` as [`DotStuffer::stuff_lines`] passed it on, chunk by chunk.
    pub(crate) stuffed: Vec<u8>,
    /// End offset in the input, body bytes, violation.
    pub(crate) end: Option<(usize, u64, Option<DataViolation>)>,
}

/// Feeds `chunks` to a receiver until the end of data, draining after each push.
pub(crate) fn run_data(chunks: &[&[u8]], limits: DataLimits) -> DataRun {
    let mut receiver = DataReceiver::new(limits);
    let mut stuffer = DotStuffer::new();
    let mut emitted = Vec::new();
    let mut stuffed = Vec::new();
    let mut pushed = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        // Both ways in: a copy, and a read into the receiver's own buffer.
        if i % 2 == 0 {
            receiver.push(chunk);
        } else {
            receiver.input_buffer(chunk.len()).extend_from_slice(chunk);
        }
        pushed += chunk.len();
        while let Some(event) = receiver.next_event() {
            match event {
                DataEvent::Chunk(lines) => {
                    assert!(!lines.is_empty(), "an empty chunk");
                    emitted.extend_from_slice(&lines);
                    stuffed.extend_from_slice(&stuffer.stuff_lines(lines));
                }
                DataEvent::End { bytes, violation } => {
                    assert!(receiver.is_ended());
                    assert_eq!(violation.is_none(), emitted.len() as u64 == bytes);
                    let leftover = receiver.take_buffered().len();
                    return DataRun {
                        emitted,
                        stuffed,
                        end: Some((pushed - leftover, bytes, violation)),
                    };
                }
            }
        }
        assert!(
            receiver.buffered() < limits.max_line.max(3),
            "a drained receiver holds {} bytes, line limit {}",
            receiver.buffered(),
            limits.max_line
        );
    }
    DataRun {
        emitted,
        stuffed,
        end: None,
    }
}

fn check_data(input: &[u8], sizes: &[u8], limits: DataLimits) {
    let chunks = crate::proto::split_by_sizes(input, sizes);
    let whole = run_data(&[input], limits);
    assert_eq!(
        run_data(&chunks, limits),
        whole,
        "chunked differs from whole"
    );
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run_data(&bytes, limits),
        whole,
        "bytewise differs from whole"
    );

    match reference_end_of_data(input, limits) {
        Some(reference) => {
            let (end, bytes, violation) = whole.end.expect("the reference found an end");
            assert_eq!(end, reference.end, "end offset differs from the reference");
            assert_eq!(bytes, reference.body.len() as u64, "byte count differs");
            assert_eq!(violation, reference.violation, "violation differs");
            assert_eq!(whole.emitted, reference.emitted, "emitted body differs");
        }
        None => {
            assert_eq!(whole.end, None, "an end the reference does not see");
            let mut closed = input.to_vec();
            closed.extend_from_slice(b"\r\n.\r\n");
            let reference =
                reference_end_of_data(&closed, limits).expect("a terminated input ends");
            assert!(
                reference.emitted.starts_with(&whole.emitted),
                "emitted bytes the reference would not"
            );
        }
    }

    // What was emitted is canonical: stuffing and receiving it gives it back.
    let mut wire = BytesMut::new();
    let mut stuffer = DotStuffer::new();
    stuffer.stuff(&whole.emitted, &mut wire);
    assert_eq!(
        whole.stuffed, wire,
        "the lines passed on differ from the stuffer's own output"
    );
    stuffer.finish(&mut wire);
    let back = run_data(&[&wire], limits);
    assert_eq!(
        back.emitted, whole.emitted,
        "stuffed body does not round-trip"
    );
    assert_eq!(
        back.end,
        Some((wire.len(), whole.emitted.len() as u64, None))
    );
}

/// Stuffing any input gives canonical CRLF lines that end exactly at the terminator and
/// unstuff to the input with its line endings made CRLF.
fn check_stuffing(input: &[u8]) {
    let mut wire = Vec::new();
    let mut stuffer = DotStuffer::new();
    // Stuff in two pieces, so that a CR at the cut is exercised.
    let (a, b) = input.split_at(input.len() / 2);
    stuffer.stuff(a, &mut wire);
    stuffer.stuff(b, &mut wire);
    stuffer.finish(&mut wire);
    let unlimited = DataLimits {
        max_line: usize::MAX,
        max_size: u64::MAX,
    };
    let run = run_data(&[&wire], unlimited);
    let (end, bytes, violation) = run.end.expect("stuffed data ends");
    assert_eq!(end, wire.len(), "stuffed data ends early");
    let canonical = canonical_lines(input);
    assert_eq!(bytes, canonical.len() as u64);
    match violation {
        None => assert_eq!(run.emitted, canonical),
        Some(v) => assert_eq!(v, DataViolation::Nul, "stuffed data is not canonical"),
    }
}

/// The naive canonical form: every CR LF, bare CR and bare LF becomes CR LF, and an open
/// last line is closed.
fn canonical_lines(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Maps every byte onto `alphabet`.
fn remap(input: &[u8], alphabet: &[u8]) -> Vec<u8> {
    input
        .iter()
        .map(|&b| alphabet[usize::from(b) % alphabet.len()])
        .collect()
}
