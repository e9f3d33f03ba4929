//! The peer-link wire protocol between the coi-proxies of two domains (DESIGN.md §4),
//! sans-IO: frames, their canonical encoding, a streaming decoder, and the two stream
//! readers that enforce the order of a delivery. `docs/peer-protocol.md` is the
//! specification; this module implements it.
//!
//! The transport is QUIC with ALPN `coi/1` and mutual TLS; one bidirectional stream
//! carries one delivery, unidirectional streams or datagrams carry ephemeral events. The
//! QUIC side lives in `net`; here bytes come in and values go out.
//!
//! ```text
//! frame = version:u8 type:u8 length:u32 payload:length      ; big-endian
//!
//! client → server   Envelope  Data ... Data  FIN
//! server → client   Outcome (one per recipient, in envelope order)  FIN
//! either side       Error (the last frame its writer sends on the stream)
//! uni / datagram    Event
//! ```
//!
//! - [`frame`]: the frame types, their validation, encoding and (nom) payload parsers,
//!   and [`Frame::decode`], the one-shot decoder.
//! - [`decoder`]: [`FrameDecoder`], frame first then parse: it finds frame boundaries from
//!   the fixed header, checks the length against the frame type's limit before buffering
//!   anything, hands Data payloads out in pieces, and skips a faulty frame by its length
//!   (a discard state), so framing never goes out of sync and memory stays below one
//!   frame.
//! - [`stream`]: the order of a delivery. [`DeliveryReader`] is the receiving proxy's
//!   view (the message counts only when the announced body length, the frame boundaries
//!   and the FIN agree), [`OutcomeReader`] the sending proxy's.
//! - [`error`]: who is at fault. [`PeerError`] is the peer's fault and names the
//!   [`ErrorCode`] to send back; [`EncodeError`] is the local caller's.
//!
//! Every field has a named limit below. The limits of the frame payloads are derived from
//! them, so every frame whose fields are within their limits fits its frame type's limit,
//! and the decoder can refuse an oversized frame from its header alone.

pub mod decoder;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod stream;

#[cfg(test)]
mod tests;

pub use decoder::{Decoded, FrameDecoder};
pub use error::{EncodeError, ErrorCode, Field, Invalid, PeerError, Problem};
pub use frame::{
    data_header, decode_datagram, encode_data, Envelope, ErrorFrame, Event, Frame, FrameType,
    Outcome, Recipient, Status, TokenText, FRAME_HEADER_LEN, VERSION,
};
pub use stream::{DeliveryEvent, DeliveryReader, OutcomeEvent, OutcomeReader};

/// ALPN protocol identifier of the peer link (DESIGN.md §4). It names the connection's
/// protocol; the version byte of every frame names the frame's.
pub const ALPN: &[u8] = b"coi/1";

/// Longest envelope address (sender or recipient), in octets: a local part of 64 octets,
/// the `@` and a domain of 255 octets (RFC 5321 §4.5.3.1.1–2). It is also the longest
/// address `coi::address` normalises to, so every address the sender can hash fits.
pub const MAX_ADDRESS_LEN: usize = 64 + 1 + 255;

/// Longest Message-ID, in octets, without its angle brackets: `Message-ID: <id>` must fit
/// one header line of 998 characters (RFC 5322 §2.1.1). Real ones are under 100.
pub const MAX_MESSAGE_ID_LEN: usize = 998 - "Message-ID: <>".len();

/// Longest token, in octets: one header line (RFC 5322 §2.1.1), the bound
/// `coi::token::MAX_TOKEN_LEN` puts on every token it parses or issues (Dovecot's are
/// about 138). Defined here again because `proto` does not depend on `coi`; the two
/// must stay equal, or a valid token could not travel over the fast path.
pub const MAX_TOKEN_LEN: usize = 998;

/// Most recipients in one envelope: the 100 that RFC 5321 §4.5.3.1.8 asks every server
/// to accept in one transaction. A sender with more recipients at one domain (a large
/// group) sends the message in several deliveries; deduplication is per recipient, so
/// that is safe. The bound keeps an envelope below [`MAX_ENVELOPE_LEN`].
pub const MAX_RECIPIENTS: usize = 100;

/// Largest body a delivery may announce: 1 GiB. The fast path runs inside the client's
/// DATA wait with a budget of a few seconds (SECURITY-CASES §4 rule 4); even at 1 Gbit/s
/// five seconds move less, so a larger announcement can never complete and is refused at
/// once ([`ErrorCode::MessageTooLarge`]). Each side's configured size limit is usually far
/// lower and is answered per recipient (Rejected 552 5.3.4).
pub const MAX_BODY_LEN: u64 = 1 << 30;

/// Largest Data payload: 64 KiB. The decoder hands a Data payload out in pieces as it
/// arrives, so this does not bound memory; it keeps frames small (DESIGN.md §4), so that
/// an implementation that does buffer a whole frame stays cheap, and a sender interleaves
/// nothing else anyway.
pub const MAX_DATA_LEN: usize = 64 * 1024;

/// Longest receipt in a Stored outcome: 128 visible ASCII characters, enough for
/// `<mailbox-hash>/<uidvalidity>/<uid>` or a hex SHA-256 (64). Only logged by the sender.
pub const MAX_RECEIPT_LEN: usize = 128;

/// Longest reason of a Rejected or TempFail outcome, and text of an Error frame, in
/// octets: 512, the longest SMTP reply line (RFC 5321 §4.5.3.1.5), since the sender may
/// pass the reason on in its reply to the client or in a DSN.
pub const MAX_TEXT_LEN: usize = 512;

/// Largest Event payload: 1 KiB. An Event frame (header, kind, payload: 1032 octets)
/// then fits one QUIC datagram at the minimum MTU: 1200 octets (RFC 9000 §14) less a
/// 1-RTT packet header, AEAD tag and DATAGRAM frame header (RFC 9221), at most 44.
pub const MAX_EVENT_PAYLOAD: usize = 1024;

/// Largest Envelope payload: every field at its limit (about 228 KiB). The largest frame
/// the decoder ever buffers whole.
pub const MAX_ENVELOPE_LEN: usize = (2 + MAX_ADDRESS_LEN)
    + (2 + MAX_MESSAGE_ID_LEN)
    + 8
    + 2
    + MAX_RECIPIENTS * ((2 + MAX_ADDRESS_LEN) + (2 + MAX_TOKEN_LEN) + (2 + MAX_TOKEN_LEN));

/// Largest Outcome payload: index, kind, and the larger of Stored (receipt, new token)
/// and Rejected/TempFail (status, reason).
pub const MAX_OUTCOME_LEN: usize = 2
    + 1
    + max(
        (2 + MAX_RECEIPT_LEN) + (2 + MAX_TOKEN_LEN),
        6 + (2 + MAX_TEXT_LEN),
    );

/// Largest Event payload: kind and payload.
pub const MAX_EVENT_LEN: usize = 2 + MAX_EVENT_PAYLOAD;

/// Largest Error payload: code and text.
pub const MAX_ERROR_LEN: usize = 2 + 2 + MAX_TEXT_LEN;

/// The most a [`FrameDecoder`] holds after it has returned everything it can: the header
/// and payload of one Envelope, the largest frame it buffers whole.
pub const MAX_BUFFERED: usize = FRAME_HEADER_LEN + MAX_ENVELOPE_LEN;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
