//! De-duplication of deliveries without state in the proxy (SECURITY-CASES §4 rule 5,
//! docs/peer-protocol.md §6.2).
//!
//! A message can reach a mailbox twice: over a peer link whose `Stored` was lost, then
//! again by mail, or again over the link when the client retries. Every copy the proxy
//! stores carries a [`DELIVERY_KEY_FIELD`] header whose value is a keyed hash of
//! (peer domain, Message-ID, recipient, body hash); before storing, the proxy searches
//! the mailbox for that value. The mailbox is the record, so the key lives exactly as long
//! as the message, survives restarts and is shared by every replica, with no table to
//! keep for the 5-day retry horizon.
//!
//! The hash is keyed with a server secret so that nobody outside can write a header
//! that suppresses a message yet to come; the body hash scopes the key so that a reused
//! Message-ID with other content is a new message.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha3::{Digest, Sha3_256};

use super::address::NormalizedAddress;
use super::headers::HeaderBlock;
use super::token::Secret;

/// The header field that carries a stored copy's delivery key.
pub const DELIVERY_KEY_FIELD: &str = "X-COI-Delivery";

/// Length of a key in characters: base64url of 32 bytes, unpadded.
pub const DELIVERY_KEY_LEN: usize = 43;

/// SHA3-256 of a message's body: the bytes after the first empty line (CRLF CRLF), so
/// that header fields each hop prepends (Received, DKIM) do not change it. A message
/// without an empty line has an empty body. Fed in pieces of any size.
#[derive(Clone, Debug)]
pub struct BodyHasher {
    /// The last up to 3 header bytes, to find a CRLF CRLF across pieces; `None` in the
    /// body.
    tail: Option<Vec<u8>>,
    hash: Sha3_256,
}

impl Default for BodyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyHasher {
    pub fn new() -> Self {
        Self {
            tail: Some(Vec::new()),
            hash: Sha3_256::new(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let Some(tail) = &mut self.tail else {
            self.hash.update(bytes);
            return;
        };
        // Look for CRLF CRLF in the kept tail and the new bytes together, without
        // copying more than the tail's 3 bytes.
        let kept = tail.len();
        let mut window = std::mem::take(tail);
        window.extend_from_slice(&bytes[..bytes.len().min(3)]);
        if let Some(at) = find_blank(&window) {
            let body_start = at + 4 - kept;
            self.tail = None;
            self.hash.update(&bytes[body_start..]);
            return;
        }
        if let Some(at) = find_blank(bytes) {
            self.tail = None;
            self.hash.update(&bytes[at + 4..]);
            return;
        }
        let keep_from = window.len().saturating_sub(3);
        if bytes.len() >= 3 {
            window = bytes[bytes.len() - 3..].to_vec();
        } else {
            window.drain(..keep_from);
        }
        self.tail = Some(window);
    }

    pub fn finish(self) -> [u8; 32] {
        self.hash.finalize().into()
    }
}

fn find_blank(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The delivery key of one copy: who delivered it (`peer_domain`: the domain the peer's
/// certificate covers and the envelope sender belongs to; on the mail path the envelope
/// sender's domain), its Message-ID (without angle brackets), the recipient and the
/// body hash, keyed with `secret`. Fields are length-prefixed, so no two tuples share an
/// input.
pub fn delivery_key(
    secret: Option<&Secret>,
    peer_domain: &str,
    message_id: &str,
    recipient: &NormalizedAddress,
    body_hash: &[u8; 32],
) -> String {
    let mut hash = Sha3_256::new();
    hash.update(b"coi-proxy delivery key v1\0");
    for field in [
        peer_domain.to_ascii_lowercase().as_bytes(),
        message_id.as_bytes(),
        recipient.as_str().as_bytes(),
        &body_hash[..],
        secret.map(Secret::bytes).unwrap_or_default(),
    ] {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// The header line that records `key` in a stored copy, CRLF included.
pub fn key_field(key: &str) -> Vec<u8> {
    format!("{DELIVERY_KEY_FIELD}: {key}\r\n").into_bytes()
}

/// The Message-ID of a header block without angle brackets and white space: the first
/// `Message-ID` field's value, if it is one `<id>`.
pub fn message_id(header: &HeaderBlock) -> Option<String> {
    let field = header.first("Message-ID")?;
    let value = field.unfolded_value();
    let text = std::str::from_utf8(&value).ok()?.trim();
    let id = text.strip_prefix('<')?.strip_suffix('>')?;
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    valid.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coi::address::normalize;
    use crate::coi::headers::{HeaderScanner, Progress, MAX_HEADER_BLOCK};

    const MESSAGE: &[u8] = b"Received: by x\r\nSubject: hi\r\n\r\nhello\r\n\r\nworld\r\n";

    fn hash_in_pieces(message: &[u8], size: usize) -> [u8; 32] {
        let mut hasher = BodyHasher::new();
        for piece in message.chunks(size) {
            hasher.push(piece);
        }
        hasher.finish()
    }

    #[test]
    fn body_hash_covers_the_bytes_after_the_first_empty_line() {
        let expected: [u8; 32] = Sha3_256::digest(b"hello\r\n\r\nworld\r\n").into();
        for size in 1..=MESSAGE.len() {
            assert_eq!(hash_in_pieces(MESSAGE, size), expected, "pieces of {size}");
        }
    }

    #[test]
    fn body_hash_ignores_header_fields_added_on_the_way() {
        let relayed = [b"Received: by y\r\n".as_slice(), MESSAGE].concat();
        assert_eq!(hash_in_pieces(&relayed, 7), hash_in_pieces(MESSAGE, 5));
    }

    #[test]
    fn a_message_without_an_empty_line_has_an_empty_body() {
        let empty: [u8; 32] = Sha3_256::digest(b"").into();
        assert_eq!(hash_in_pieces(b"Subject: x\r\n", 2), empty);
    }

    #[test]
    fn body_hash_differs_with_the_body() {
        let other = b"Received: by x\r\nSubject: hi\r\n\r\nhellO\r\n\r\nworld\r\n";
        assert_ne!(hash_in_pieces(other, 4), hash_in_pieces(MESSAGE, 4));
    }

    #[test]
    fn delivery_key_depends_on_every_part() {
        let secret = Secret::new("s").unwrap();
        let other_secret = Secret::new("t").unwrap();
        let bob = normalize("bob@b.example").unwrap();
        let carol = normalize("carol@b.example").unwrap();
        let body = [1u8; 32];
        let key = |s: Option<&Secret>, d: &str, m: &str, r: &NormalizedAddress, b: &[u8; 32]| {
            delivery_key(s, d, m, r, b)
        };
        let base = key(Some(&secret), "a.example", "m1@a", &bob, &body);
        assert_eq!(base.len(), DELIVERY_KEY_LEN);
        assert_eq!(base, key(Some(&secret), "A.Example", "m1@a", &bob, &body));
        let variants = [
            key(Some(&other_secret), "a.example", "m1@a", &bob, &body),
            key(None, "a.example", "m1@a", &bob, &body),
            key(Some(&secret), "c.example", "m1@a", &bob, &body),
            key(Some(&secret), "a.example", "m2@a", &bob, &body),
            key(Some(&secret), "a.example", "m1@a", &carol, &body),
            key(Some(&secret), "a.example", "m1@a", &bob, &[2u8; 32]),
        ];
        for variant in variants {
            assert_ne!(variant, base);
        }
    }

    fn header_of(text: &[u8]) -> HeaderBlock {
        let mut scanner = HeaderScanner::new(MAX_HEADER_BLOCK);
        match scanner.push(bytes::Bytes::copy_from_slice(text)).unwrap() {
            Progress::HeaderEnd { header, .. } => header,
            Progress::NeedMore => scanner.finish().unwrap(),
        }
    }

    #[test]
    fn message_id_is_taken_without_brackets() {
        let header = header_of(b"Message-ID:\r\n <abc@x.example> \r\n\r\n");
        assert_eq!(message_id(&header).as_deref(), Some("abc@x.example"));
        for bad in [
            &b"Message-ID: abc@x\r\n\r\n"[..],
            b"Message-ID: <a b@x>\r\n\r\n",
            b"Message-ID: <>\r\n\r\n",
            b"Subject: none\r\n\r\n",
        ] {
            assert_eq!(
                message_id(&header_of(bad)),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
