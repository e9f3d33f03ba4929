//! Who is at fault, and what goes back on the wire.
//!
//! - [`PeerError`]: the peer broke the protocol. Every variant is specific, `Copy` and
//!   free of peer-supplied text; [`PeerError::code`] is the [`ErrorCode`] to send back in
//!   an Error frame (or as the QUIC application error code) before closing the stream.
//! - [`EncodeError`]: the local caller asked to send a frame that breaks a rule: a bug on
//!   our side, never sent.
//! - [`ErrorCode`]: the closed set of codes on the wire, with their numeric values.

use std::fmt;

use super::frame::FrameType;

/// The error codes of the peer protocol, with their wire values. They travel in Error
/// frames and, with the same values, as QUIC application error codes (RESET_STREAM,
/// STOP_SENDING, CONNECTION_CLOSE). `docs/peer-protocol.md` §7 has the table.
///
/// Codes 0x01–0x09 say that the receiver of the code broke the protocol
/// ([`ErrorCode::is_violation`]); the others report a state of the sender of the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Closed normally. Only as a QUIC application error code, never in an Error frame.
    NoError = 0x00,
    /// A frame or field is malformed, or the stream ended inside a frame.
    Malformed = 0x01,
    /// A frame carries a version this side does not speak; the text lists the versions
    /// it does, e.g. `1`.
    UnsupportedVersion = 0x02,
    /// A frame type this version does not define.
    UnknownFrameType = 0x03,
    /// A frame longer than its type's limit (from the header, before any payload).
    FrameTooLarge = 0x04,
    /// More than `MAX_RECIPIENTS` recipients in one envelope.
    TooManyRecipients = 0x05,
    /// The announced body is longer than `MAX_BODY_LEN`.
    MessageTooLarge = 0x06,
    /// A frame not allowed at this point of the stream.
    UnexpectedFrame = 0x07,
    /// The Data frames do not add up to the announced body length before the FIN.
    BodyLengthMismatch = 0x08,
    /// Outcomes that do not match the envelope: wrong order, too many, too few, or Stored
    /// before the body was complete.
    OutcomeMismatch = 0x09,
    /// The receiver refuses the envelope sender: the peer's certificate does not cover its
    /// domain, or the peer is not allowed to deliver. The sender falls back to mail.
    SenderNotAuthorized = 0x0A,
    /// The receiver takes no delivery now (overloaded, shutting down). Fall back to mail.
    Unavailable = 0x0B,
    /// The sender of the code gave up waiting (for the body, or for the outcomes).
    Timeout = 0x0C,
    /// The sending proxy abandons the delivery (its client went away, its budget ran
    /// out). Nothing is stored.
    Cancelled = 0x0D,
    /// The sender of the code failed internally. Treat as TempFail.
    Internal = 0x0E,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::NoError,
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownFrameType,
        ErrorCode::FrameTooLarge,
        ErrorCode::TooManyRecipients,
        ErrorCode::MessageTooLarge,
        ErrorCode::UnexpectedFrame,
        ErrorCode::BodyLengthMismatch,
        ErrorCode::OutcomeMismatch,
        ErrorCode::SenderNotAuthorized,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::Internal,
    ];

    /// The wire value.
    pub fn value(self) -> u16 {
        self as u16
    }

    /// The code of a wire value; `None` for values this version does not define.
    pub fn from_value(value: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.value() == value)
    }

    /// True when the code says its receiver broke the protocol (0x01–0x09).
    pub fn is_violation(self) -> bool {
        (0x01..=0x09).contains(&self.value())
    }

    /// A stable lower-case name, for logs and metric labels.
    pub fn as_label(self) -> &'static str {
        match self {
            ErrorCode::NoError => "no_error",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownFrameType => "unknown_frame_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::TooManyRecipients => "too_many_recipients",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::UnexpectedFrame => "unexpected_frame",
            ErrorCode::BodyLengthMismatch => "body_length_mismatch",
            ErrorCode::OutcomeMismatch => "outcome_mismatch",
            ErrorCode::SenderNotAuthorized => "sender_not_authorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.as_label(), self.value())
    }
}

/// A field of a frame, for [`Invalid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// An Envelope's announced body length.
    BodyLength,
    /// A Data frame's payload.
    DataPayload,
    /// An Error frame's code.
    ErrorCode,
    /// An Error frame's text.
    ErrorText,
    /// An Event frame's payload.
    EventPayload,
    /// An Envelope's Message-ID.
    MessageId,
    /// A Stored outcome's new token.
    NewToken,
    /// An Outcome's kind byte.
    OutcomeKind,
    /// An Outcome's recipient index.
    OutcomeRecipient,
    /// The payload as a whole (bytes after the last field, or too few for the first).
    Payload,
    /// A Rejected or TempFail outcome's reason.
    Reason,
    /// A Stored outcome's receipt.
    Receipt,
    /// A recipient's address.
    RecipientAddress,
    /// An Envelope's recipient count.
    Recipients,
    /// A recipient's reverse token (MYSTOKEN).
    ReverseToken,
    /// An Envelope's sender address.
    Sender,
    /// A Rejected or TempFail outcome's status (reply code or enhanced code).
    Status,
    /// A recipient's token (STOKEN).
    Token,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::BodyLength => "body length",
            Field::DataPayload => "data payload",
            Field::ErrorCode => "error code",
            Field::ErrorText => "error text",
            Field::EventPayload => "event payload",
            Field::MessageId => "Message-ID",
            Field::NewToken => "new token",
            Field::OutcomeKind => "outcome kind",
            Field::OutcomeRecipient => "outcome recipient index",
            Field::Payload => "payload",
            Field::Reason => "reason",
            Field::Receipt => "receipt",
            Field::RecipientAddress => "recipient address",
            Field::Recipients => "recipient count",
            Field::ReverseToken => "reverse token",
            Field::Sender => "sender address",
            Field::Status => "status",
            Field::Token => "token",
        })
    }
}

/// What is wrong with a field, for [`Invalid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Problem {
    /// A byte or character the field does not allow (a control character, a space, ...).
    BadByte,
    /// Empty (or zero) where the field needs a value.
    Empty,
    /// Not UTF-8 where the field is text.
    NotUtf8,
    /// A number outside the field's range, or a code this version does not define.
    OutOfRange,
    /// Bytes left in the payload after its last field.
    Trailing,
    /// Longer (or larger) than the field's limit.
    TooLong,
    /// More items than the field's limit.
    TooMany,
    /// The payload ends inside the field.
    Truncated,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::BadByte => "holds a byte it may not hold",
            Problem::Empty => "is empty",
            Problem::NotUtf8 => "is not UTF-8",
            Problem::OutOfRange => "is out of range",
            Problem::Trailing => "is followed by trailing bytes",
            Problem::TooLong => "is over its limit",
            Problem::TooMany => "has too many items",
            Problem::Truncated => "is truncated",
        })
    }
}

/// A field that breaks its rule (see `docs/peer-protocol.md` §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Invalid {
    pub field: Field,
    pub problem: Problem,
}

impl Invalid {
    pub fn new(field: Field, problem: Problem) -> Self {
        Self { field, problem }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for Invalid {}

/// The peer broke the protocol. The stream cannot carry the delivery any further: send
/// an Error frame with [`PeerError::code`] (or reset the stream with that code when its
/// direction is closed) and store nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    // --- framing (FrameDecoder, Frame::decode) ---
    /// A frame header names a version this side does not speak.
    #[error("peer sent a frame of unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A frame header names a type this version does not define.
    #[error("peer sent a frame of unknown type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A frame header announces a payload over its type's limit.
    #[error("peer sent a {frame_type} frame of {len} bytes, over the limit")]
    FrameTooLarge { frame_type: FrameType, len: u32 },
    /// A Data frame with no payload (it would let a peer send frames forever without
    /// advancing the body).
    #[error("peer sent an empty Data frame")]
    EmptyData,
    /// A payload field breaks its rule.
    #[error("peer sent a frame whose {0}")]
    Invalid(Invalid),
    /// The stream ended (FIN) inside a frame.
    #[error("peer ended the stream inside a frame")]
    Truncated,

    // --- order (DeliveryReader, OutcomeReader) ---
    /// A frame not allowed at this point of the stream.
    #[error("peer sent an unexpected {got} frame")]
    UnexpectedFrame { got: FrameType },
    /// The stream ended before an Envelope.
    #[error("peer ended the delivery stream before the envelope")]
    MissingEnvelope,
    /// A Data frame goes beyond the announced body length.
    #[error("peer sent more body than it announced")]
    BodyTooLong,
    /// The stream ended before the announced body was complete.
    #[error("peer ended the stream {missing} bytes before the announced body end")]
    BodyTruncated { missing: u64 },
    /// An Outcome for another recipient than the next in envelope order.
    #[error("peer sent the outcome for recipient {got}, expected {expected}")]
    OutcomeOutOfOrder { expected: u16, got: u16 },
    /// An Outcome after every recipient had one.
    #[error("peer sent an outcome for recipient {got} after all outcomes")]
    ExtraOutcome { got: u16 },
    /// A Stored outcome before this side had sent the whole body: the peer cannot have
    /// stored the message (SECURITY-CASES §4 rule 4).
    #[error("peer claims recipient {recipient} stored before the body was complete")]
    StoredBeforeEnd { recipient: u16 },
    /// The stream ended before every recipient had an outcome.
    #[error("peer ended the stream with {missing} outcomes missing")]
    MissingOutcomes { missing: u16 },
}

impl PeerError {
    /// The code to send back.
    pub fn code(&self) -> ErrorCode {
        match self {
            PeerError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            PeerError::UnknownFrameType(_) => ErrorCode::UnknownFrameType,
            PeerError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            PeerError::Invalid(Invalid {
                field: Field::Recipients,
                problem: Problem::TooMany,
            }) => ErrorCode::TooManyRecipients,
            PeerError::Invalid(Invalid {
                field: Field::BodyLength,
                problem: Problem::TooLong,
            }) => ErrorCode::MessageTooLarge,
            PeerError::EmptyData
            | PeerError::Invalid(_)
            | PeerError::Truncated
            | PeerError::MissingEnvelope => ErrorCode::Malformed,
            PeerError::UnexpectedFrame { .. } => ErrorCode::UnexpectedFrame,
            PeerError::BodyTooLong | PeerError::BodyTruncated { .. } => {
                ErrorCode::BodyLengthMismatch
            }
            PeerError::OutcomeOutOfOrder { .. }
            | PeerError::ExtraOutcome { .. }
            | PeerError::StoredBeforeEnd { .. }
            | PeerError::MissingOutcomes { .. } => ErrorCode::OutcomeMismatch,
        }
    }
}

impl From<Invalid> for PeerError {
    fn from(invalid: Invalid) -> Self {
        PeerError::Invalid(invalid)
    }
}

/// The local caller asked to encode a frame that breaks a rule: a bug in the caller.
/// Nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refusing to encode a frame whose {0} (a bug in the caller)")]
pub struct EncodeError(pub Invalid);

impl From<Invalid> for EncodeError {
    fn from(invalid: Invalid) -> Self {
        EncodeError(invalid)
    }
}
