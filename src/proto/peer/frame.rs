//! The frames: their types, field rules, canonical encoding, and the nom parsers of their
//! payloads (`docs/peer-protocol.md` §4–5).
//!
//! ```text
//! frame   = version:u8 type:u8 length:u32 payload      ; integers big-endian
//! str16   = length:u16 length*OCTET                    ; every string field
//! ```
//!
//! The header is checked before the payload is read (version, type, length against the
//! type's limit); a payload is parsed only whole, and its fields must use it up exactly.
//! Encoding is canonical and the inverse of decoding: a frame decodes if and only if its
//! fields keep their rules, every value has exactly one encoding, and encoding a decoded
//! frame gives back the bytes it was decoded from.

use std::fmt;

use bytes::Bytes;
use nom::error::{ErrorKind, ParseError};
use nom::multi::{count, length_data};
use nom::number::complete::{be_u16, be_u64, be_u8};
use nom::{IResult, Parser};

use super::error::{EncodeError, ErrorCode, Field, Invalid, PeerError, Problem};
use super::{
    MAX_ADDRESS_LEN, MAX_BODY_LEN, MAX_DATA_LEN, MAX_ENVELOPE_LEN, MAX_ERROR_LEN, MAX_EVENT_LEN,
    MAX_EVENT_PAYLOAD, MAX_MESSAGE_ID_LEN, MAX_OUTCOME_LEN, MAX_RECEIPT_LEN, MAX_RECIPIENTS,
    MAX_TEXT_LEN, MAX_TOKEN_LEN,
};

/// The protocol version this module speaks, carried in every frame's first byte.
pub const VERSION: u8 = 1;

/// Length of the frame header: version, type, payload length.
pub const FRAME_HEADER_LEN: usize = 6;

/// The frame types of version 1, with their wire values. The header layout and the Error
/// frame (type 0x05) are the same in every version, so a refusal is always readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client → server, first on a delivery stream.
    Envelope = 0x01,
    /// Client → server, body bytes after the Envelope.
    Data = 0x02,
    /// Server → client, one per recipient in envelope order.
    Outcome = 0x03,
    /// Ephemeral, on a unidirectional stream or in a datagram.
    Event = 0x04,
    /// Either side, the last frame its writer sends on a stream.
    Error = 0x05,
}

impl FrameType {
    /// Every type, in wire order.
    pub const ALL: [FrameType; 5] = [
        FrameType::Envelope,
        FrameType::Data,
        FrameType::Outcome,
        FrameType::Event,
        FrameType::Error,
    ];

    /// The wire value.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The type of a wire value; `None` for values version 1 does not define.
    pub fn from_value(value: u8) -> Option<FrameType> {
        FrameType::ALL.into_iter().find(|t| t.value() == value)
    }

    /// The longest payload a frame of this type may have (see the limits in
    /// [`super`]): every frame whose fields keep their limits fits.
    pub fn max_payload(self) -> usize {
        match self {
            FrameType::Envelope => MAX_ENVELOPE_LEN,
            FrameType::Data => MAX_DATA_LEN,
            FrameType::Outcome => MAX_OUTCOME_LEN,
            FrameType::Event => MAX_EVENT_LEN,
            FrameType::Error => MAX_ERROR_LEN,
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameType::Envelope => "Envelope",
            FrameType::Data => "Data",
            FrameType::Outcome => "Outcome",
            FrameType::Event => "Event",
            FrameType::Error => "Error",
        })
    }
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Envelope(Envelope),
    /// Body bytes, 1 to [`MAX_DATA_LEN`]. The [`super::FrameDecoder`] returns them in
    /// pieces ([`super::Decoded::Data`]); this variant is what [`Frame::decode`] returns
    /// and what the encoder takes.
    Data(Bytes),
    /// The outcome for the recipient at index `recipient` of the envelope.
    Outcome {
        recipient: u16,
        outcome: Outcome,
    },
    Event(Event),
    Error(ErrorFrame),
}

/// The envelope of one delivery.
///
/// ```text
/// envelope  = sender:str16 message-id:str16 body-length:u64 count:u16 count*recipient
/// recipient = address:str16 token:str16 reverse-token:str16   ; reverse length 0 = none
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The envelope sender (MAIL FROM), `local@domain` without angle brackets; never the
    /// null path (the fast path needs a sender domain to bind to the peer certificate).
    pub sender: String,
    /// The message's Message-ID without angle brackets, as in its header.
    pub message_id: String,
    /// The exact body length in bytes: the Data frames that follow add up to it.
    pub body_len: u64,
    /// 1 to [`MAX_RECIPIENTS`] recipients; outcomes refer to them by index.
    pub recipients: Vec<Recipient>,
}

/// One recipient of an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The envelope recipient (RCPT TO), `local@domain` without angle brackets.
    pub address: String,
    /// The token for the pair (sender, recipient), temporary or permanent (STOKEN).
    pub token: TokenText,
    /// The sender's token for the reverse pair, so the recipient can reply directly
    /// (MYSTOKEN).
    pub reverse_token: Option<TokenText>,
}

/// The result for one recipient.
///
/// ```text
/// outcome = recipient:u16 kind:u8 ( stored / refusal )
/// stored  = receipt:str16 new-token:str16            ; kind 0x01; new-token length 0 = none
/// refusal = code:u16 subject:u16 detail:u16 reason:str16
///                                                    ; kind 0x02 Rejected, 0x03 TempFail
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durably stored (the receiver's Postfix or Dovecot said 250 for this exact message).
    /// The sender counts the recipient as delivered only on this.
    Stored {
        /// An opaque id for logs: 1 to [`MAX_RECEIPT_LEN`] visible ASCII characters.
        receipt: String,
        /// A new or rotated permanent token for the pair, for the sender to keep
        /// (`COI-TokenOut`).
        new_token: Option<TokenText>,
    },
    /// Refused for good: 5xx. Do not retry over the fast path; bounce or fall back to
    /// mail as the status and the policy say.
    Rejected { status: Status, reason: String },
    /// Not stored this time: 4xx. Fall back to the mail path.
    TempFail { status: Status, reason: String },
}

/// An SMTP reply code with its enhanced status code (RFC 5321 §4.2, RFC 3463), so that the
/// sending proxy can answer its client or write a DSN with the receiver's verdict. The
/// enhanced code's class is the reply code's first digit and is not sent.
///
/// Rejected carries 5xx, TempFail 4xx; the second digit is 0–5, subject and detail 0–999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced code's subject (the `7` of `5.7.30`).
    pub subject: u16,
    /// The enhanced code's detail (the `30` of `5.7.30`).
    pub detail: u16,
}

impl Status {
    /// The token was not accepted (malformed, bad MAC, expired, wrong pair, or a
    /// permanent token no longer in the recipient's contacts): Dovecot's COI code. The
    /// sender forgets the token and sends by mail.
    pub const TOKEN_NOT_ACCEPTED: Status = Status::new(550, 7, 30);
    /// No such recipient here (550 5.1.1).
    pub const UNKNOWN_RECIPIENT: Status = Status::new(550, 1, 1);
    /// The message is larger than the receiver takes (552 5.3.4).
    pub const MESSAGE_TOO_LARGE: Status = Status::new(552, 3, 4);
    /// The content breaks the receiver's rules: bare CR or LF, NUL, over-long lines, or a
    /// Message-ID header other than the envelope's (550 5.6.0).
    pub const CONTENT_REJECTED: Status = Status::new(550, 6, 0);
    /// The receiver's local store failed or did not answer in time (451 4.3.0).
    pub const LOCAL_ERROR: Status = Status::new(451, 3, 0);

    pub const fn new(code: u16, subject: u16, detail: u16) -> Self {
        Self {
            code,
            subject,
            detail,
        }
    }

    /// The enhanced status code `(class, subject, detail)`.
    pub fn enhanced(&self) -> (u8, u16, u16) {
        // `code / 100` is below 10 for every u16 below 1000, and `check` keeps codes
        // below 600; a larger one only appears in a value that never passed it.
        let class = u8::try_from(self.code / 100).unwrap_or(u8::MAX);
        (class, self.subject, self.detail)
    }

    /// The rule for a status of class `class` (4 or 5).
    fn check(&self, class: u16) -> Result<(), Problem> {
        let code_ok = self.code / 100 == class && (self.code / 10) % 10 <= 5;
        if code_ok && self.subject <= 999 && self.detail <= 999 {
            Ok(())
        } else {
            Err(Problem::OutOfRange)
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, subject, detail) = self.enhanced();
        write!(f, "{} {class}.{subject}.{detail}", self.code)
    }
}

/// An ephemeral event (typing, presence): reserved in version 1, which defines no kind.
/// A receiver ignores kinds it does not know.
///
/// ```text
/// event = kind:u16 payload:*OCTET         ; the rest of the frame, at most 1024 octets
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: u16,
    pub payload: Bytes,
}

impl Event {
    /// Reserved for typing notifications.
    pub const KIND_TYPING: u16 = 0x0001;
    /// Reserved for presence.
    pub const KIND_PRESENCE: u16 = 0x0002;
}

/// A protocol error or refusal, the last frame its writer sends on a stream.
///
/// ```text
/// error = code:u16 text:str16
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    /// Any code but [`ErrorCode::NoError`].
    pub code: ErrorCode,
    /// Human-readable detail for logs, 0 to [`MAX_TEXT_LEN`] octets of UTF-8 without
    /// control characters (HT allowed).
    pub text: String,
}

/// A token as it travels: 1 to [`MAX_TOKEN_LEN`] characters that may stand in an ESMTP
/// parameter value (RFC 5321 `esmtp-value`: `%d33-60 / %d62-126`), as STOKEN does. The
/// COI syntax is `coi::token`'s business.
///
/// A token is a credential: `Debug` shows it only up to its MAC.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenText(String);

impl TokenText {
    /// Checks `text` against the wire rule.
    pub fn new(text: impl Into<String>) -> Result<TokenText, Problem> {
        let text = text.into();
        token(text.as_bytes())?;
        Ok(TokenText(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MARKER: &str = "-secret:";
        match self.0.find(MARKER) {
            Some(at) => write!(
                f,
                "TokenText(\"{}<redacted>\")",
                &self.0[..at + MARKER.len()]
            ),
            None => f.write_str("TokenText(<redacted>)"),
        }
    }
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Envelope(_) => FrameType::Envelope,
            Frame::Data(_) => FrameType::Data,
            Frame::Outcome { .. } => FrameType::Outcome,
            Frame::Event(_) => FrameType::Event,
            Frame::Error(_) => FrameType::Error,
        }
    }

    /// Decodes the first frame of `input`. `Ok(None)`: more input is needed;
    /// `Ok(Some((frame, n)))`: the frame took the first `n` bytes.
    ///
    /// Header faults are reported as soon as the 6 header bytes are there, payload faults
    /// once the whole payload is; either way the faulty frame takes
    /// `FRAME_HEADER_LEN + length` bytes, and a caller that goes on skips them (as
    /// [`super::FrameDecoder`] does).
    pub fn decode(input: &[u8]) -> Result<Option<(Frame, usize)>, PeerError> {
        let Some(header) = Header::read(input) else {
            return Ok(None);
        };
        let frame_type = header.check()?;
        // `check` bounded the length by the type's limit, far below `usize::MAX`.
        let end = FRAME_HEADER_LEN + header.len as usize;
        let Some(payload) = input.get(FRAME_HEADER_LEN..end) else {
            return Ok(None);
        };
        let frame = parse_payload(frame_type, Bytes::copy_from_slice(payload))?;
        Ok(Some((frame, end)))
    }

    /// Checks every field against its rule, as decoding does.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Frame::Envelope(envelope) => envelope.validate(),
            Frame::Data(bytes) => match bytes.len() {
                0 => Err(Invalid::new(Field::DataPayload, Problem::Empty)),
                n if n > MAX_DATA_LEN => Err(Invalid::new(Field::DataPayload, Problem::TooLong)),
                _ => Ok(()),
            },
            Frame::Outcome { recipient, outcome } => {
                if usize::from(*recipient) >= MAX_RECIPIENTS {
                    return Err(Invalid::new(Field::OutcomeRecipient, Problem::OutOfRange));
                }
                outcome.validate()
            }
            Frame::Event(event) => {
                if event.payload.len() > MAX_EVENT_PAYLOAD {
                    return Err(Invalid::new(Field::EventPayload, Problem::TooLong));
                }
                Ok(())
            }
            Frame::Error(error) => error.validate(),
        }
    }

    /// Appends the canonical wire form. On error nothing is written.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.validate()?;
        let start = out.len();
        out.extend_from_slice(&[VERSION, self.frame_type().value(), 0, 0, 0, 0]);
        self.write_payload(out);
        let len = out.len() - start - FRAME_HEADER_LEN;
        debug_assert!(len <= self.frame_type().max_payload());
        // `validate` keeps every payload within its type's limit, far below u32::MAX.
        let len = u32::try_from(len).expect("a validated payload fits its limit");
        out[start + 2..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// [`Frame::encode`] into a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Writes the payload of a validated frame.
    fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Envelope(envelope) => {
                put_str16(out, &envelope.sender);
                put_str16(out, &envelope.message_id);
                out.extend_from_slice(&envelope.body_len.to_be_bytes());
                put_u16(out, envelope.recipients.len());
                for recipient in &envelope.recipients {
                    put_str16(out, &recipient.address);
                    put_str16(out, recipient.token.as_str());
                    put_str16(
                        out,
                        recipient.reverse_token.as_ref().map_or("", |t| t.as_str()),
                    );
                }
            }
            Frame::Data(bytes) => out.extend_from_slice(bytes),
            Frame::Outcome { recipient, outcome } => {
                out.extend_from_slice(&recipient.to_be_bytes());
                out.push(outcome.kind());
                match outcome {
                    Outcome::Stored { receipt, new_token } => {
                        put_str16(out, receipt);
                        put_str16(out, new_token.as_ref().map_or("", |t| t.as_str()));
                    }
                    Outcome::Rejected { status, reason } | Outcome::TempFail { status, reason } => {
                        out.extend_from_slice(&status.code.to_be_bytes());
                        out.extend_from_slice(&status.subject.to_be_bytes());
                        out.extend_from_slice(&status.detail.to_be_bytes());
                        put_str16(out, reason);
                    }
                }
            }
            Frame::Event(event) => {
                out.extend_from_slice(&event.kind.to_be_bytes());
                out.extend_from_slice(&event.payload);
            }
            Frame::Error(error) => {
                out.extend_from_slice(&error.code.value().to_be_bytes());
                put_str16(out, &error.text);
            }
        }
    }
}

impl Envelope {
    /// Checks every field against its rule, as decoding does.
    pub fn validate(&self) -> Result<(), Invalid> {
        address(self.sender.as_bytes()).map_err(|p| Invalid::new(Field::Sender, p))?;
        message_id(self.message_id.as_bytes()).map_err(|p| Invalid::new(Field::MessageId, p))?;
        body_len(self.body_len).map_err(|p| Invalid::new(Field::BodyLength, p))?;
        recipient_count(self.recipients.len()).map_err(|p| Invalid::new(Field::Recipients, p))?;
        for recipient in &self.recipients {
            address(recipient.address.as_bytes())
                .map_err(|p| Invalid::new(Field::RecipientAddress, p))?;
            // Tokens were checked when their `TokenText` was made.
        }
        Ok(())
    }
}

impl Outcome {
    /// The kind byte on the wire.
    pub fn kind(&self) -> u8 {
        match self {
            Outcome::Stored { .. } => 0x01,
            Outcome::Rejected { .. } => 0x02,
            Outcome::TempFail { .. } => 0x03,
        }
    }

    /// True for [`Outcome::Stored`].
    pub fn is_stored(&self) -> bool {
        matches!(self, Outcome::Stored { .. })
    }

    /// Checks every field against its rule, as decoding does.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Outcome::Stored { receipt: r, .. } => receipt(r.as_bytes())
                .map(drop)
                .map_err(|p| Invalid::new(Field::Receipt, p)),
            Outcome::Rejected { status, reason } => refusal(status, reason, 5),
            Outcome::TempFail { status, reason } => refusal(status, reason, 4),
        }
    }
}

impl ErrorFrame {
    /// Checks every field against its rule, as decoding does.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.code == ErrorCode::NoError {
            return Err(Invalid::new(Field::ErrorCode, Problem::OutOfRange));
        }
        text(self.text.as_bytes())
            .map(drop)
            .map_err(|p| Invalid::new(Field::ErrorText, p))
    }
}

/// Appends `body` as Data frames of at most [`MAX_DATA_LEN`] bytes each; nothing for an
/// empty slice. The caller keeps the total equal to the envelope's `body_len`.
pub fn encode_data(body: &[u8], out: &mut Vec<u8>) {
    for chunk in body.chunks(MAX_DATA_LEN) {
        // `chunks` yields 1 to MAX_DATA_LEN bytes, the range `data_header` accepts.
        let header = data_header(chunk.len()).expect("a chunk within the Data limit");
        out.extend_from_slice(&header);
        out.extend_from_slice(chunk);
    }
}

/// The header of a Data frame carrying `len` bytes, for writing the payload after it
/// without copying (1 to [`MAX_DATA_LEN`]).
pub fn data_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], EncodeError> {
    if len == 0 {
        return Err(Invalid::new(Field::DataPayload, Problem::Empty).into());
    }
    if len > MAX_DATA_LEN {
        return Err(Invalid::new(Field::DataPayload, Problem::TooLong).into());
    }
    // MAX_DATA_LEN fits in u32.
    let len = u32::try_from(len).expect("len <= MAX_DATA_LEN");
    let [a, b, c, d] = len.to_be_bytes();
    Ok([VERSION, FrameType::Data.value(), a, b, c, d])
}

/// Decodes a QUIC datagram, which carries exactly one Event frame. Anything else is the
/// peer's fault; events are ephemeral, so the caller drops the datagram and goes on.
pub fn decode_datagram(datagram: &[u8]) -> Result<Event, PeerError> {
    match Frame::decode(datagram)? {
        None => Err(PeerError::Truncated),
        Some((_, n)) if n != datagram.len() => {
            Err(Invalid::new(Field::Payload, Problem::Trailing).into())
        }
        Some((Frame::Event(event), _)) => Ok(event),
        Some((frame, _)) => Err(PeerError::UnexpectedFrame {
            got: frame.frame_type(),
        }),
    }
}

// === header ===

/// A frame header as read, before any check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u8,
    pub(crate) type_byte: u8,
    pub(crate) len: u32,
}

impl Header {
    /// The header at the start of `input`, if all 6 bytes are there.
    pub(crate) fn read(input: &[u8]) -> Option<Header> {
        let [version, type_byte, a, b, c, d] = *input.first_chunk::<FRAME_HEADER_LEN>()?;
        Some(Header {
            version,
            type_byte,
            len: u32::from_be_bytes([a, b, c, d]),
        })
    }

    /// The checks made before any payload byte is looked at, in this order: version,
    /// type, length against the type's limit, and a Data frame's length against zero.
    pub(crate) fn check(&self) -> Result<FrameType, PeerError> {
        if self.version != VERSION {
            return Err(PeerError::UnsupportedVersion(self.version));
        }
        let frame_type = FrameType::from_value(self.type_byte)
            .ok_or(PeerError::UnknownFrameType(self.type_byte))?;
        if self.len as usize > frame_type.max_payload() {
            return Err(PeerError::FrameTooLarge {
                frame_type,
                len: self.len,
            });
        }
        if frame_type == FrameType::Data && self.len == 0 {
            return Err(PeerError::EmptyData);
        }
        Ok(frame_type)
    }
}

// === payload parsers ===

type Res<'a, T> = IResult<&'a [u8], T, Invalid>;

/// nom's own failures inside a payload can only mean that the payload ended early; the
/// parsers below relabel them with the field being read.
impl ParseError<&[u8]> for Invalid {
    fn from_error_kind(_: &[u8], _: ErrorKind) -> Self {
        Invalid::new(Field::Payload, Problem::Truncated)
    }

    fn append(_: &[u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

/// Parses a complete, header-checked payload of `frame_type`.
pub(crate) fn parse_payload(frame_type: FrameType, payload: Bytes) -> Result<Frame, Invalid> {
    match frame_type {
        // The header check bounded the length to 1..=MAX_DATA_LEN; body bytes are opaque.
        FrameType::Data => Ok(Frame::Data(payload)),
        FrameType::Envelope => whole(envelope, &payload).map(Frame::Envelope),
        FrameType::Outcome => whole(outcome, &payload)
            .map(|(recipient, outcome)| Frame::Outcome { recipient, outcome }),
        FrameType::Event => {
            let kind = whole(event_kind, payload.get(..2).unwrap_or(&payload))?;
            // The header check bounded the payload to 2 + MAX_EVENT_PAYLOAD.
            Ok(Frame::Event(Event {
                kind,
                payload: payload.slice(2..),
            }))
        }
        FrameType::Error => whole(error, &payload).map(Frame::Error),
    }
}

/// Runs `parser` over a whole payload, which it must use up.
fn whole<'a, T>(
    mut parser: impl FnMut(&'a [u8]) -> Res<'a, T>,
    input: &'a [u8],
) -> Result<T, Invalid> {
    match parser(input) {
        Ok(([], value)) => Ok(value),
        Ok(_) => Err(Invalid::new(Field::Payload, Problem::Trailing)),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e),
        // Only complete parsers are used; an incomplete one would mean a short payload.
        Err(nom::Err::Incomplete(_)) => Err(Invalid::new(Field::Payload, Problem::Truncated)),
    }
}

/// `envelope = sender:str16 message-id:str16 body-length:u64 count:u16 count*recipient`
fn envelope(i: &[u8]) -> Res<'_, Envelope> {
    let (i, sender) = str16(Field::Sender, address)(i)?;
    let (i, message_id) = str16(Field::MessageId, message_id)(i)?;
    let (i, body_length) = number(Field::BodyLength, be_u64, body_len)(i)?;
    let (i, n) = number(Field::Recipients, be_u16, |n| {
        recipient_count(usize::from(n))
    })(i)?;
    let (i, recipients) = count(recipient, usize::from(n)).parse(i)?;
    Ok((
        i,
        Envelope {
            sender: sender.to_owned(),
            message_id: message_id.to_owned(),
            body_len: body_length,
            recipients,
        },
    ))
}

/// `recipient = address:str16 token:str16 reverse-token:str16` (reverse length 0 = none)
fn recipient(i: &[u8]) -> Res<'_, Recipient> {
    let (i, address) = str16(Field::RecipientAddress, address)(i)?;
    let (i, token) = str16(Field::Token, token)(i)?;
    let (i, reverse_token) = str16(Field::ReverseToken, optional_token)(i)?;
    Ok((
        i,
        Recipient {
            address: address.to_owned(),
            token: TokenText(token.to_owned()),
            reverse_token: reverse_token.map(|t| TokenText(t.to_owned())),
        },
    ))
}

/// `outcome = recipient:u16 kind:u8 ( stored / refusal )`
fn outcome(i: &[u8]) -> Res<'_, (u16, Outcome)> {
    let (i, recipient) = number(Field::OutcomeRecipient, be_u16, |n| {
        if usize::from(n) < MAX_RECIPIENTS {
            Ok(n)
        } else {
            Err(Problem::OutOfRange)
        }
    })(i)?;
    let (i, kind) = number(Field::OutcomeKind, be_u8, Ok)(i)?;
    let (i, outcome) = match kind {
        0x01 => stored(i)?,
        0x02 => {
            let (i, (status, reason)) = refusal_fields(i, 5)?;
            (i, Outcome::Rejected { status, reason })
        }
        0x03 => {
            let (i, (status, reason)) = refusal_fields(i, 4)?;
            (i, Outcome::TempFail { status, reason })
        }
        _ => return Err(fail(Field::OutcomeKind, Problem::OutOfRange)),
    };
    Ok((i, (recipient, outcome)))
}

/// `stored = receipt:str16 new-token:str16` (new-token length 0 = none)
fn stored(i: &[u8]) -> Res<'_, Outcome> {
    let (i, receipt) = str16(Field::Receipt, receipt)(i)?;
    let (i, new_token) = str16(Field::NewToken, optional_token)(i)?;
    Ok((
        i,
        Outcome::Stored {
            receipt: receipt.to_owned(),
            new_token: new_token.map(|t| TokenText(t.to_owned())),
        },
    ))
}

/// `refusal = code:u16 subject:u16 detail:u16 reason:str16`, for a status of `class`.
fn refusal_fields(i: &[u8], class: u16) -> Res<'_, (Status, String)> {
    let (i, (code, subject, detail)) = (be_u16, be_u16, be_u16)
        .parse(i)
        .map_err(truncated_in(Field::Status))?;
    let status = Status::new(code, subject, detail);
    status.check(class).map_err(|p| fail(Field::Status, p))?;
    let (i, reason) = str16(Field::Reason, text)(i)?;
    Ok((i, (status, reason.to_owned())))
}

/// `event-kind = kind:u16` (the payload is the rest of the frame)
fn event_kind(i: &[u8]) -> Res<'_, u16> {
    number(Field::Payload, be_u16, Ok)(i)
}

/// `error = code:u16 text:str16`
fn error(i: &[u8]) -> Res<'_, ErrorFrame> {
    let (i, code) = number(Field::ErrorCode, be_u16, |v| {
        ErrorCode::from_value(v)
            .filter(|c| *c != ErrorCode::NoError)
            .ok_or(Problem::OutOfRange)
    })(i)?;
    let (i, text) = str16(Field::ErrorText, text)(i)?;
    Ok((
        i,
        ErrorFrame {
            code,
            text: text.to_owned(),
        },
    ))
}

/// `str16 = length:u16 length*OCTET`, then `check`ed as `field`.
fn str16<'a, T>(
    field: Field,
    check: fn(&'a [u8]) -> Result<T, Problem>,
) -> impl FnMut(&'a [u8]) -> Res<'a, T> {
    move |i| {
        let (i, raw) = length_data(be_u16).parse(i).map_err(truncated_in(field))?;
        let value = check(raw).map_err(|p| fail(field, p))?;
        Ok((i, value))
    }
}

/// A fixed-size number read by `read`, then `check`ed as `field`.
fn number<'a, N, T>(
    field: Field,
    mut read: impl FnMut(&'a [u8]) -> Res<'a, N>,
    check: impl Fn(N) -> Result<T, Problem>,
) -> impl FnMut(&'a [u8]) -> Res<'a, T> {
    move |i| {
        let (i, n) = read(i).map_err(truncated_in(field))?;
        let value = check(n).map_err(|p| fail(field, p))?;
        Ok((i, value))
    }
}

/// Relabels nom's failure to read a fixed-size number or a length-prefixed string (the
/// payload ended; `length_data` says so as `Incomplete`) as a truncated `field`.
fn truncated_in(field: Field) -> impl Fn(nom::Err<Invalid>) -> nom::Err<Invalid> {
    move |_| nom::Err::Error(Invalid::new(field, Problem::Truncated))
}

fn fail(field: Field, problem: Problem) -> nom::Err<Invalid> {
    nom::Err::Failure(Invalid::new(field, problem))
}

fn refusal(status: &Status, reason: &str, class: u16) -> Result<(), Invalid> {
    status
        .check(class)
        .map_err(|p| Invalid::new(Field::Status, p))?;
    text(reason.as_bytes())
        .map(drop)
        .map_err(|p| Invalid::new(Field::Reason, p))
}

// === field rules (shared by decoding and `validate`) ===

/// An envelope address: 1 to [`MAX_ADDRESS_LEN`] octets of UTF-8 without ASCII control
/// characters. Whether it normalises is the receiver's policy (`coi::address`).
fn address(raw: &[u8]) -> Result<&str, Problem> {
    bounded(raw, 1, MAX_ADDRESS_LEN)?;
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Problem::BadByte);
    }
    std::str::from_utf8(raw).map_err(|_| Problem::NotUtf8)
}

/// A Message-ID without its angle brackets: 1 to [`MAX_MESSAGE_ID_LEN`] visible ASCII
/// characters other than `<` and `>` (RFC 5322 §3.6.4 `id-left "@" id-right` is made of
/// them; the `@` is not required, the value is a key, not an address).
fn message_id(raw: &[u8]) -> Result<&str, Problem> {
    bounded(raw, 1, MAX_MESSAGE_ID_LEN)?;
    ascii(raw, |b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// A token: 1 to [`MAX_TOKEN_LEN`] `esmtp-value` characters.
fn token(raw: &[u8]) -> Result<&str, Problem> {
    bounded(raw, 1, MAX_TOKEN_LEN)?;
    ascii(raw, |b| b.is_ascii_graphic() && b != b'=')
}

/// A token, or none when empty.
fn optional_token(raw: &[u8]) -> Result<Option<&str>, Problem> {
    if raw.is_empty() {
        Ok(None)
    } else {
        token(raw).map(Some)
    }
}

/// A receipt: 1 to [`MAX_RECEIPT_LEN`] visible ASCII characters.
fn receipt(raw: &[u8]) -> Result<&str, Problem> {
    bounded(raw, 1, MAX_RECEIPT_LEN)?;
    ascii(raw, |b| b.is_ascii_graphic())
}

/// A reason or error text: 0 to [`MAX_TEXT_LEN`] octets of UTF-8 without control
/// characters other than HT (RFC 5321 `textstring`), so that it can never splice a line
/// into an SMTP reply or a log.
fn text(raw: &[u8]) -> Result<&str, Problem> {
    bounded(raw, 0, MAX_TEXT_LEN)?;
    if raw.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Problem::BadByte);
    }
    std::str::from_utf8(raw).map_err(|_| Problem::NotUtf8)
}

/// An announced body length: 1 to [`MAX_BODY_LEN`] (a message has at least a header).
fn body_len(n: u64) -> Result<u64, Problem> {
    match n {
        0 => Err(Problem::Empty),
        n if n > MAX_BODY_LEN => Err(Problem::TooLong),
        n => Ok(n),
    }
}

/// A recipient count: 1 to [`MAX_RECIPIENTS`].
fn recipient_count(n: usize) -> Result<u16, Problem> {
    match n {
        0 => Err(Problem::Empty),
        n if n > MAX_RECIPIENTS => Err(Problem::TooMany),
        // MAX_RECIPIENTS fits in u16.
        n => u16::try_from(n).map_err(|_| Problem::TooMany),
    }
}

fn bounded(raw: &[u8], min: usize, max: usize) -> Result<(), Problem> {
    if raw.len() < min {
        Err(Problem::Empty)
    } else if raw.len() > max {
        Err(Problem::TooLong)
    } else {
        Ok(())
    }
}

fn ascii(raw: &[u8], allowed: impl Fn(u8) -> bool) -> Result<&str, Problem> {
    if !raw.iter().all(|&b| allowed(b)) {
        return Err(Problem::BadByte);
    }
    // Only ASCII bytes passed `allowed`.
    std::str::from_utf8(raw).map_err(|_| Problem::BadByte)
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a length or count that `validate` bounded below 65 536.
fn put_u16(out: &mut Vec<u8>, n: usize) {
    let n = u16::try_from(n).expect("a validated length fits in u16");
    out.extend_from_slice(&n.to_be_bytes());
}
