//! COI contact storage messages, sans-IO: the mails in `<root>/Contacts`, one per contact,
//! that hold the tokens exchanged with that contact (COI-PROTOCOL.md §4.1, §4.7, §4.9,
//! §4.10; DESIGN.md §3 "Inbound capture").
//!
//! - [`Contact::parse`] reads a contact as fetched over IMAP (`BODY.PEEK[]`): its
//!   `COI-From-Hash` values (both forms, as written), `COI-TokenIn` and `COI-TokenOut`
//!   tokens, `COI-Blocked` and `Date`. Every other header line and the body are kept byte
//!   for byte, so a client-written contact (From, Subject, Chat-Content, an h-card body,
//!   an encrypted multipart) survives an update untouched.
//! - [`Contact::render`] writes it back as Dovecot does: the header without any token
//!   field, then the current token set (`COI-TokenIn` lines, then `COI-TokenOut` lines),
//!   then the blank line and the body. [`Contact::new`] makes the contact the proxy writes
//!   for a sender it has none for, with the headers the client spec asks for (Dovecot
//!   writes only the hash, `Subject` and tokens: COI-PROTOCOL §4.12 item 14).
//! - The merge rules of §4.10: [`Contact::add_token_out`] keeps only the newest TokenOut
//!   per pair hash, [`Contact::add_token_in`] keeps every TokenIn that has not expired,
//!   [`merge_duplicates`] folds several contact mails for one address into one. Each
//!   returns a [`Change`], so that the caller skips the IMAP write when nothing changed.
//!
//! Call order in the delivery hook, per recipient and captured token (the hook does the
//! IMAP; nothing here reads the clock, `now` is passed in):
//!
//! ```text
//! let hash = FromHash::of(&sender);
//! uids = UID SEARCH in <root>/Contacts: OR HEADER COI-From-Hash <v1> HEADER COI-From-Hash <v2> ...
//!        (v in hash.search_values())
//! found = for each uid: UID FETCH BODY.PEEK[] -> Contact::parse
//!         -> keep it only if contact.has_from_hash(&hash)   (SEARCH is a substring match)
//! match merge_duplicates(found, now):
//!     None    -> contact = Contact::new(&owner, &sender, now, unique)?;
//!                contact.add_token_out(token)?; APPEND contact.render()
//!     Some(m) -> change = m.change | m.contact.add_token_out(token)?;
//!                if change.is_changed(): APPEND m.contact.render(), then expunge m.base_uid
//!                expunge every uid of m.others (whatever the change)
//! ```
//!
//! Line endings: a contact fetched over IMAP has CRLF lines (Dovecot converts what it
//! stores to CRLF on FETCH), so a bare CR or LF in the header block is refused
//! ([`ContactError::Header`]), as `headers.rs` refuses it in submitted mail: a line end
//! that another reader splits differently is how a field hides inside another. The body
//! is not parsed and passes byte for byte, bare LFs included.

use std::ops::BitOr;

use sha3::{Digest, Sha3_256};

use super::address::NormalizedAddress;
use super::headers::{skip_comment, Field, HeaderBlock, HeaderError, MAX_LINE};
use super::token::{self, Token, VerifyError};

/// Largest contact message parsed, in octets. A contact is a header and an h-card of a
/// few KiB; an inline avatar or PGP encryption (client spec: SHOULD) makes it tens or a
/// few hundred KiB. The hook holds the whole message while it updates it, so 1 MiB passes
/// every real contact and bounds that memory; a larger one is [`ContactError::TooLarge`],
/// and the caller leaves it alone.
pub const MAX_CONTACT_MESSAGE: usize = 1024 * 1024;

/// Most tokens kept per contact in each direction (TokenIn, TokenOut); beyond it the
/// oldest (by `created`) are dropped. A contact normally holds one token per address pair
/// and direction, a few with aliases and rotated tokens that have not expired yet; 32
/// leaves room for that while bounding the header (about 10 KiB of token lines) and the
/// merge work, whoever keeps presenting fresh tokens.
pub const MAX_TOKENS_PER_CONTACT: usize = 32;

/// Longest token a contact holds: `COI-TokenOut: <token>` must fit one line of
/// [`MAX_LINE`] octets. Token lines are never folded, because Dovecot writes and reads
/// them on one line; its tokens are about 140 characters. A longer one is malformed.
pub const MAX_CONTACT_TOKEN_LEN: usize = MAX_LINE - TOKEN_OUT_FIELD.len() - 2;

/// Longest unique part of a Message-ID that [`Contact::new`] accepts.
pub const MAX_UNIQUE_LEN: usize = 128;

/// Contact key, one field per address of the contact (repeatable).
pub const FROM_HASH_FIELD: &str = "COI-From-Hash";

/// A token our server issued to the contact (accepted inbound; repeatable).
pub const TOKEN_IN_FIELD: &str = "COI-TokenIn";

/// A token the contact's server gave us (for outbound delivery; repeatable).
pub const TOKEN_OUT_FIELD: &str = "COI-TokenOut";

/// The contact is blocked, whatever the value (client spec: RECOMMENDED `yes`).
pub const BLOCKED_FIELD: &str = "COI-Blocked";

/// The prefix of the Message-ID local part of a contact the proxy writes: `chat$` as the
/// client spec asks of contact storage messages, `contact.` so that ours can be told apart.
pub const MESSAGE_ID_PREFIX: &str = "chat$contact.";

/// Latest time [`Contact::new`] can write: 9999-12-31T23:59:59Z, the last date with a
/// four-digit year.
const MAX_RENDERED_TIME: u64 = 253_402_300_799;

const SECONDS_PER_DAY: i64 = 86_400;

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

// === From-Hash ===

/// The `COI-From-Hash` values of one address, in every form a writer may have used.
///
/// Dovecot writes `base64_std_nopad(SHA3-256(address))` over its normal form; the client
/// spec writes the lowercase hex of the same digest, over the address "with quotes
/// removed" (COI-PROTOCOL §4.3, §4.4). The two differ only for a quoted local part
/// (`"john doe"@example.com`), so a third form, hex over the normal form, is accepted
/// too: a reader cannot know which rule a hex writer followed. The client spec's
/// "lowercase" of a UTF-8 local part is taken as Dovecot's ASCII-only lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromHash {
    /// Dovecot's form ([`token::address_hash`]), 43 characters, case-sensitive.
    pub base64: String,
    /// The client spec's form: lowercase hex, 64 characters, over the address with a
    /// quoted local part unquoted.
    pub hex: String,
    /// Lowercase hex over the normal form; equal to `hex` unless the local part is quoted.
    hex_normalized: String,
}

impl FromHash {
    /// The hashes of `address`.
    pub fn of(address: &NormalizedAddress) -> FromHash {
        let unquoted = format!("{}@{}", unquote(address.local_part()), address.domain());
        FromHash {
            base64: token::address_hash(address),
            hex: sha3_hex(unquoted.as_bytes()),
            hex_normalized: sha3_hex(address.as_str().as_bytes()),
        }
    }

    /// True if a `COI-From-Hash` value (trimmed) is one of these hashes: base64 exactly,
    /// hex in either case.
    pub fn matches(&self, value: &str) -> bool {
        value == self.base64
            || value.eq_ignore_ascii_case(&self.hex)
            || value.eq_ignore_ascii_case(&self.hex_normalized)
    }

    /// The distinct values to search for (`SEARCH HEADER COI-From-Hash <value>`). IMAP
    /// SEARCH matches substrings, case-insensitively, so confirm every hit with
    /// [`Contact::has_from_hash`].
    pub fn search_values(&self) -> Vec<&str> {
        let mut values = vec![self.base64.as_str(), self.hex.as_str()];
        if self.hex_normalized != self.hex {
            values.push(&self.hex_normalized);
        }
        values
    }
}

// === errors and outcomes ===

/// Why a stored message cannot be read as a contact. Both are the fault of whoever wrote
/// the message (a client, another server); the caller leaves that message alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// Larger than [`MAX_CONTACT_MESSAGE`].
    #[error("contact message larger than {limit} octets")]
    TooLarge { limit: usize },
    /// The header block does not parse: a bare CR or LF, an unterminated line, too many
    /// fields.
    #[error("contact message header: {0}")]
    Header(#[from] HeaderError),
}

/// Why [`Contact::new`] refused its arguments: the caller's bug, never a peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NewContactError {
    /// The unique part is empty, longer than [`MAX_UNIQUE_LEN`], or not dot-separated
    /// runs of letters, digits, `-` and `_`.
    #[error("invalid unique part for a contact Message-ID")]
    InvalidUnique,
    /// The date is after [`MAX_RENDERED_TIME`] (year 9999).
    #[error("contact date out of range")]
    DateOutOfRange,
}

/// A token longer than [`MAX_CONTACT_TOKEN_LEN`] cannot be stored in a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("token longer than {MAX_CONTACT_TOKEN_LEN} characters does not fit a contact line")]
pub struct TokenTooLong;

/// Whether an operation changed the token set, i.e. whether the contact must be written.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// The token set differs: APPEND the rendered contact, expunge the old one.
    Changed,
    /// Nothing to write.
    Unchanged,
}

impl Change {
    /// True for [`Change::Changed`].
    pub fn is_changed(self) -> bool {
        self == Change::Changed
    }

    fn of(changed: bool) -> Change {
        if changed {
            Change::Changed
        } else {
            Change::Unchanged
        }
    }
}

impl BitOr for Change {
    type Output = Change;

    /// Changed if either is.
    fn bitor(self, other: Change) -> Change {
        Change::of(self.is_changed() || other.is_changed())
    }
}

/// Token fields [`Contact::parse`] left out of the token lists. They are not written back
/// by [`Contact::render`]; the caller may log the counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Discarded {
    /// `COI-TokenIn`/`COI-TokenOut` fields whose value is not one token that
    /// [`Token::parse`] accepts within [`MAX_CONTACT_TOKEN_LEN`]. Such a token could never
    /// verify (verification parses the same way), so dropping it loses nothing.
    pub malformed: usize,
    /// Tokens beyond [`MAX_TOKENS_PER_CONTACT`] in one direction, the oldest.
    pub over_limit: usize,
}

// === the contact ===

/// A parsed contact storage message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Every header line except the token fields, byte for byte and in order.
    header: Vec<u8>,
    /// Whether a blank line (and so a body, maybe empty) follows the header.
    blank_line: bool,
    body: Vec<u8>,
    from_hashes: Vec<String>,
    token_in: Vec<Token>,
    token_out: Vec<Token>,
    blocked: bool,
    date: Option<i64>,
    discarded: Discarded,
}

impl Contact {
    /// Parses a contact message as fetched (header block, blank line, body).
    ///
    /// Field names are matched ASCII case-insensitively, values unfolded and trimmed of
    /// WSP. `COI-From-Hash` values are kept as written (both forms, duplicates once,
    /// non-UTF-8 ones ignored); only the first `Date` counts, `None` if it does not parse.
    /// Only the top-level header block is read: a token field in the body is body.
    pub fn parse(message: &[u8]) -> Result<Contact, ContactError> {
        if message.len() > MAX_CONTACT_MESSAGE {
            return Err(ContactError::TooLarge {
                limit: MAX_CONTACT_MESSAGE,
            });
        }
        // The size is bounded already; the header limit would only reject a message
        // without a body at exactly its size.
        let (block, body) = HeaderBlock::parse_message(message, usize::MAX)?;
        let mut contact = Contact {
            header: Vec::with_capacity(block.len()),
            blank_line: block.has_blank_line(),
            body: body.to_vec(),
            from_hashes: Vec::new(),
            token_in: Vec::new(),
            token_out: Vec::new(),
            blocked: false,
            date: None,
            discarded: Discarded::default(),
        };
        let mut date_seen = false;
        // Every line of the block belongs to exactly one field (or malformed line), so
        // the fields' raw bytes, concatenated, are the block without its blank line.
        for field in block.fields() {
            let list = if field.is(TOKEN_IN_FIELD) {
                &mut contact.token_in
            } else if field.is(TOKEN_OUT_FIELD) {
                &mut contact.token_out
            } else {
                contact.header.extend_from_slice(field.raw());
                if field.is(FROM_HASH_FIELD) {
                    if let Some(value) = text_value(&field) {
                        if !value.is_empty() && !contact.from_hashes.contains(&value) {
                            contact.from_hashes.push(value);
                        }
                    }
                } else if field.is(BLOCKED_FIELD) {
                    contact.blocked = true;
                } else if field.is("Date") && !date_seen {
                    date_seen = true;
                    contact.date = parse_date(&field.unfolded_value());
                }
                continue;
            };
            match read_token(&field) {
                Some(token) => list.push(token),
                None => contact.discarded.malformed += 1,
            }
        }
        contact.discarded.over_limit =
            enforce_limit(&mut contact.token_in) + enforce_limit(&mut contact.token_out);
        Ok(contact)
    }

    /// A new contact for `address`, written by the proxy in `owner`'s Contacts, with no
    /// tokens yet (add them with [`Contact::add_token_in`] / [`Contact::add_token_out`]):
    ///
    /// ```text
    /// From: <owner>
    /// Subject: Contact
    /// Date: <date, RFC 5322, +0000>
    /// Message-ID: <chat$contact.<unique>@<owner's domain>>
    /// Chat-Version: 1.0
    /// Chat-Content: contact
    /// MIME-Version: 1.0
    /// Content-Type: text/plain; charset=utf-8
    /// COI-From-Hash: <hex>
    /// COI-From-Hash: <base64>
    /// ```
    ///
    /// and an empty body: the proxy knows no name, and an h-card with the address would
    /// put it in clear text where the client spec wants the contact encrypted; the
    /// client fills the body in. Both hash forms are written, because Dovecot looks a
    /// contact up by the base64 form and a client by the hex form; an extra hash that
    /// is the same address spelled differently is harmless to both (each form is a hash
    /// of an address of this contact). `date` is unix seconds (the caller's clock);
    /// `unique` must make the Message-ID unique for the account (say, hex of 16 random
    /// bytes): dot-separated runs of letters, digits, `-` and `_`, at most
    /// [`MAX_UNIQUE_LEN`].
    pub fn new(
        owner: &NormalizedAddress,
        address: &NormalizedAddress,
        date: u64,
        unique: &str,
    ) -> Result<Contact, NewContactError> {
        if !is_unique_part(unique) {
            return Err(NewContactError::InvalidUnique);
        }
        let date_text = format_date(date).ok_or(NewContactError::DateOutOfRange)?;
        let hash = FromHash::of(address);
        let header = format!(
            "From: {owner}\r\n\
             Subject: Contact\r\n\
             Date: {date_text}\r\n\
             Message-ID: <{MESSAGE_ID_PREFIX}{unique}@{domain}>\r\n\
             Chat-Version: 1.0\r\n\
             Chat-Content: contact\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             {FROM_HASH_FIELD}: {hex}\r\n\
             {FROM_HASH_FIELD}: {base64}\r\n",
            domain = owner.domain(),
            hex = hash.hex,
            base64 = hash.base64,
        );
        Ok(Contact {
            header: header.into_bytes(),
            blank_line: true,
            body: Vec::new(),
            from_hashes: vec![hash.hex, hash.base64],
            token_in: Vec::new(),
            token_out: Vec::new(),
            blocked: false,
            // Checked against MAX_RENDERED_TIME by format_date, far below i64::MAX.
            date: i64::try_from(date).ok(),
            discarded: Discarded::default(),
        })
    }

    /// The message to APPEND: the header without token fields, byte for byte, then one
    /// `COI-TokenIn: <token>` line per TokenIn and one `COI-TokenOut: <token>` line per
    /// TokenOut (unfolded, each within [`MAX_LINE`]), then the blank line and the body,
    /// byte for byte. `Date` is left as it is: it is the date of the last intentional
    /// change (client spec), and a token update is not one.
    pub fn render(&self) -> Vec<u8> {
        let tokens = self.token_in.len() + self.token_out.len();
        let mut out = Vec::with_capacity(self.header.len() + tokens * 160 + 2 + self.body.len());
        out.extend_from_slice(&self.header);
        for (name, list) in [
            (TOKEN_IN_FIELD, &self.token_in),
            (TOKEN_OUT_FIELD, &self.token_out),
        ] {
            for token in list {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(token.render().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if self.blank_line {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.body);
        }
        out
    }

    /// The `COI-From-Hash` values, trimmed, in order, each once.
    pub fn from_hashes(&self) -> &[String] {
        &self.from_hashes
    }

    /// The TokenIn tokens, in order.
    pub fn token_in(&self) -> &[Token] {
        &self.token_in
    }

    /// The TokenOut tokens, in order.
    pub fn token_out(&self) -> &[Token] {
        &self.token_out
    }

    /// True if the header has a `COI-Blocked` field.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The first `Date` field as unix seconds, if it parses (RFC 5322 §3.3, obsolete
    /// forms of §4.3 included).
    pub fn date(&self) -> Option<i64> {
        self.date
    }

    /// Token fields left out while parsing.
    pub fn discarded(&self) -> Discarded {
        self.discarded
    }

    /// The header lines other than token fields, as stored.
    pub fn header_without_tokens(&self) -> &[u8] {
        &self.header
    }

    /// The body, as stored.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// True if one of the `COI-From-Hash` values is a hash of `address`, in any form.
    pub fn belongs_to(&self, address: &NormalizedAddress) -> bool {
        self.has_from_hash(&FromHash::of(address))
    }

    /// [`Contact::belongs_to`] with the hashes computed once.
    pub fn has_from_hash(&self, hash: &FromHash) -> bool {
        self.from_hashes.iter().any(|value| hash.matches(value))
    }

    /// The newest TokenIn bound to the pair `hash` (by `created`; the later one on a tie).
    pub fn newest_token_in(&self, hash: &str) -> Option<&Token> {
        newest(&self.token_in, hash)
    }

    /// The newest TokenOut bound to the pair `hash`.
    pub fn newest_token_out(&self, hash: &str) -> Option<&Token> {
        newest(&self.token_out, hash)
    }

    /// Stores a TokenOut, keeping only the newest per pair hash (by `created`; on a tie
    /// the one added now, which is what the peer hands out now). Adding a token that is
    /// present, or older than the one held for its pair, is [`Change::Unchanged`]. The
    /// oldest tokens beyond [`MAX_TOKENS_PER_CONTACT`] are dropped.
    pub fn add_token_out(&mut self, token: Token) -> Result<Change, TokenTooLong> {
        check_length(&token)?;
        let mut list = self.token_out.clone();
        insert_newest(&mut list, token, Tie::Replace);
        enforce_limit(&mut list);
        Ok(replace(&mut self.token_out, list))
    }

    /// Stores a TokenIn, keeping every TokenIn that has not expired at `now` (an expired
    /// one is removed, an expired `token` is not stored). A token created more than the
    /// allowed clock skew in the future is not valid now but not expired either: it stays.
    /// Adding a token that is present is [`Change::Unchanged`] unless others expired.
    pub fn add_token_in(&mut self, token: Token, now: u64) -> Result<Change, TokenTooLong> {
        check_length(&token)?;
        let mut list: Vec<Token> = self
            .token_in
            .iter()
            .filter(|t| !is_expired(t, now))
            .cloned()
            .collect();
        if !is_expired(&token, now) && !list.contains(&token) {
            list.push(token);
        }
        enforce_limit(&mut list);
        Ok(replace(&mut self.token_in, list))
    }

    /// Removes every TokenIn and TokenOut expired at `now`: an expired TokenOut is refused
    /// by the peer, an expired TokenIn admits nothing.
    pub fn prune_expired(&mut self, now: u64) -> Change {
        let before = self.token_in.len() + self.token_out.len();
        self.token_in.retain(|t| !is_expired(t, now));
        self.token_out.retain(|t| !is_expired(t, now));
        Change::of(self.token_in.len() + self.token_out.len() != before)
    }
}

/// A contact as found in the mailbox, with its UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its UID in `<root>/Contacts`: breaks Date ties, names what to expunge.
    pub uid: u32,
    /// The parsed message.
    pub contact: Contact,
}

/// The result of [`merge_duplicates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The merged contact: the base's header and body, the merged tokens.
    pub contact: Contact,
    /// The UID whose header and body were kept. Expunge it after appending a changed
    /// contact.
    pub base_uid: u32,
    /// The other UIDs: always expunge them (after the APPEND, if one is needed).
    pub others: Vec<u32>,
    /// Whether the token set differs from the base's as stored.
    pub change: Change,
}

/// Merges the contact mails found for one address (COI-PROTOCOL §4.10): the base is the
/// one with the newest `Date` (a contact without a parseable Date is the oldest; a tie
/// goes to the higher UID), and its header and body are kept. Tokens: every TokenIn of
/// every mail that has not expired at `now`, each once; per pair hash the newest TokenOut
/// (on a `created` tie, the one from the newer mail); oldest beyond
/// [`MAX_TOKENS_PER_CONTACT`] dropped. With a single mail this tidies it (duplicate and
/// expired TokenIn, superseded TokenOut). `None` if `stored` is empty.
pub fn merge_duplicates(mut stored: Vec<Stored>, now: u64) -> Option<Merged> {
    // Newest first.
    stored.sort_by_key(|s| std::cmp::Reverse((s.contact.date, s.uid)));
    let mut stored = stored.into_iter();
    let base = stored.next()?;
    let others: Vec<Stored> = stored.collect();
    let mut token_in: Vec<Token> = Vec::new();
    let mut token_out: Vec<Token> = Vec::new();
    for contact in std::iter::once(&base.contact).chain(others.iter().map(|s| &s.contact)) {
        for token in &contact.token_in {
            if !is_expired(token, now) && !token_in.contains(token) {
                token_in.push(token.clone());
            }
        }
        for token in &contact.token_out {
            insert_newest(&mut token_out, token.clone(), Tie::Keep);
        }
    }
    enforce_limit(&mut token_in);
    enforce_limit(&mut token_out);
    let mut contact = base.contact;
    let change =
        replace(&mut contact.token_in, token_in) | replace(&mut contact.token_out, token_out);
    Some(Merged {
        contact,
        base_uid: base.uid,
        others: others.iter().map(|s| s.uid).collect(),
        change,
    })
}

// === fuzzing ===

/// Fuzz body (`coi_contacts`): parsing never panics; a parsed contact renders and parses
/// back to the same contact (token sets, hashes, other header lines and body byte for
/// byte), and a message without token fields renders as itself; adding a token twice
/// changes nothing the second time; merging keeps the limits and one TokenOut per pair,
/// and merging the result again changes nothing.
#[doc(hidden)]
pub fn fuzz_contacts(data: &[u8]) {
    let Ok(contact) = Contact::parse(data) else {
        return;
    };
    if contact.token_in.is_empty()
        && contact.token_out.is_empty()
        && contact.discarded == Discarded::default()
    {
        assert_eq!(contact.render(), data, "no token field: rendered as read");
    }
    assert_round_trip(&contact);

    let now = 1_700_000_000;
    let mut updated = contact.clone();
    let _ = updated.prune_expired(now);
    assert_round_trip(&updated);
    let token_out = Token::parse(FUZZ_TOKEN_OUT).expect("a valid literal token");
    let token_in = Token::parse(FUZZ_TOKEN_IN).expect("a valid literal token");
    let first = updated.add_token_out(token_out.clone());
    assert!(first.is_ok(), "a short token fits");
    assert_eq!(updated.add_token_out(token_out), Ok(Change::Unchanged));
    let first = updated.add_token_in(token_in.clone(), now);
    assert!(first.is_ok(), "a short token fits");
    assert_eq!(updated.add_token_in(token_in, now), Ok(Change::Unchanged));
    assert_round_trip(&updated);

    let merged = merge_duplicates(
        vec![
            Stored {
                uid: 1,
                contact: contact.clone(),
            },
            Stored {
                uid: 2,
                contact: updated,
            },
        ],
        now,
    )
    .expect("two contacts merge");
    // Same header, so the same Date: the higher UID wins.
    assert_eq!((merged.base_uid, merged.others.as_slice()), (2, &[1][..]));
    let merged = merged.contact;
    assert!(merged.token_in.len() <= MAX_TOKENS_PER_CONTACT);
    assert!(merged.token_out.len() <= MAX_TOKENS_PER_CONTACT);
    assert!(merged.token_in.iter().all(|t| !is_expired(t, now)));
    for (i, token) in merged.token_out.iter().enumerate() {
        assert!(
            merged.token_out[..i]
                .iter()
                .all(|t| t.hash() != token.hash()),
            "one TokenOut per pair hash"
        );
    }
    assert_round_trip(&merged);
    let again = merge_duplicates(
        vec![Stored {
            uid: 3,
            contact: merged.clone(),
        }],
        now,
    )
    .expect("one contact merges");
    assert_eq!(again.change, Change::Unchanged, "merging is idempotent");
    assert_eq!(again.contact, merged);
}

/// Tokens for the fuzz body, valid at its `now`: COI-PROTOCOL §6.3 V2 (Carol → Dave), and
/// one for the reverse pair (its MAC is not checked here).
const FUZZ_TOKEN_OUT: &str = "1-created:1700000000-validity:604800-hash:6qBSL/BDAMqGoyZDH0YGEaqrnJSKSS5dyE0VQV1IK1Y-secret:FDxDsgidfPeiiYBAL0o1Wld7xiZ0BYHDPQa4IZVDR0U";
const FUZZ_TOKEN_IN: &str = "1-created:1700000000-validity:604800-hash:Wjt8eq0Za1LhDTH9RyH4c0FwwHOrYmd0rR5WdYzkaM0-secret:AAAA";

/// Render, parse back, compare; every token line fits.
fn assert_round_trip(contact: &Contact) {
    let rendered = contact.render();
    let back = match Contact::parse(&rendered) {
        Ok(back) => back,
        // Adding token lines may push a message already at a limit over it.
        Err(ContactError::TooLarge { .. } | ContactError::Header(HeaderError::TooManyFields)) => {
            return
        }
        Err(e) => panic!("a rendered contact parses back: {e}"),
    };
    assert_eq!(back.token_in, contact.token_in);
    assert_eq!(back.token_out, contact.token_out);
    assert_eq!(back.from_hashes, contact.from_hashes);
    assert_eq!(back.blocked, contact.blocked);
    assert_eq!(back.date, contact.date);
    assert_eq!(
        back.header, contact.header,
        "other header lines byte for byte"
    );
    assert_eq!(back.body, contact.body, "body byte for byte");
    assert_eq!(back.blank_line, contact.blank_line);
    assert_eq!(back.discarded, Discarded::default());
    assert_eq!(back.render(), rendered, "rendering is stable");
    let tail = if contact.blank_line {
        2 + contact.body.len()
    } else {
        0
    };
    let token_lines = &rendered[contact.header.len()..rendered.len() - tail];
    for line in token_lines.split_inclusive(|&b| b == b'\n') {
        assert!(line.starts_with(b"COI-Token"), "only token lines");
        assert!(line.len() <= MAX_LINE + 2, "token lines fit");
    }
}

// === helpers ===

/// How [`insert_newest`] treats a token with the same `created` as the one held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tie {
    /// Keep the one held (merge: it comes from the newer mail).
    Keep,
    /// Take the new one (a peer just handed it over).
    Replace,
}

/// Adds `token` to a TokenOut list unless it is present or an equal-or-newer token (see
/// `tie`) for its pair is held; drops the older ones of its pair.
fn insert_newest(list: &mut Vec<Token>, token: Token, tie: Tie) {
    if list.contains(&token) {
        return;
    }
    let held = list
        .iter()
        .filter(|t| t.hash() == token.hash())
        .map(Token::created)
        .max();
    match held {
        Some(created) if created > token.created() => return,
        Some(created) if created == token.created() && tie == Tie::Keep => return,
        _ => {}
    }
    list.retain(|t| t.hash() != token.hash());
    list.push(token);
}

/// Drops the oldest tokens (by `created`, earlier in the list first on a tie) beyond
/// [`MAX_TOKENS_PER_CONTACT`], keeping the order of the rest. Returns how many it dropped.
fn enforce_limit(list: &mut Vec<Token>) -> usize {
    let excess = list.len().saturating_sub(MAX_TOKENS_PER_CONTACT);
    if excess == 0 {
        return 0;
    }
    let mut order: Vec<usize> = (0..list.len()).collect();
    order.sort_by_key(|&i| (list[i].created(), i));
    let mut drop = vec![false; list.len()];
    for &i in &order[..excess] {
        drop[i] = true;
    }
    let mut i = 0;
    list.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    excess
}

/// Sets `list` to `new`, telling whether it differed.
fn replace(list: &mut Vec<Token>, new: Vec<Token>) -> Change {
    let change = Change::of(*list != new);
    *list = new;
    change
}

fn newest<'a>(list: &'a [Token], hash: &str) -> Option<&'a Token> {
    list.iter()
        .filter(|t| t.hash() == hash)
        .max_by_key(|t| t.created())
}

/// Expired at `now` (§4.6). Created too far in the future is another error, not expiry.
fn is_expired(token: &Token, now: u64) -> bool {
    token.check_time(now) == Err(VerifyError::Expired)
}

fn check_length(token: &Token) -> Result<(), TokenTooLong> {
    if token.render().len() > MAX_CONTACT_TOKEN_LEN {
        return Err(TokenTooLong);
    }
    Ok(())
}

/// The token of a token field: its unfolded value, trimmed, one token that fits a line.
fn read_token(field: &Field<'_>) -> Option<Token> {
    let value = text_value(field)?;
    if value.len() > MAX_CONTACT_TOKEN_LEN {
        return None;
    }
    Token::parse(&value).ok()
}

/// The unfolded value trimmed of WSP, if it is UTF-8.
fn text_value(field: &Field<'_>) -> Option<String> {
    let value = field.unfolded_value();
    let text = std::str::from_utf8(&value).ok()?;
    Some(text.trim_matches([' ', '\t']).to_owned())
}

/// Lowercase hex of SHA3-256.
fn sha3_hex(input: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha3_256::digest(input);
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// A local part without its quotes and escapes (`"q\"uote"` → `q"uote`); a dot-atom as
/// it is.
fn unquote(local: &str) -> String {
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Dot-separated runs of letters, digits, `-`, `_`: a `dot-atom-text` (RFC 5322 §3.2.3)
/// that needs no quoting anywhere.
fn is_unique_part(unique: &str) -> bool {
    !unique.is_empty()
        && unique.len() <= MAX_UNIQUE_LEN
        && unique.split('.').all(|run| {
            !run.is_empty()
                && run
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

// === dates ===

/// A `date-time` (RFC 5322 §3.3) as unix seconds:
///
/// ```text
/// date-time = [ day-of-week "," ] day month year hour ":" minute [ ":" second ] zone
/// ```
///
/// Comments and the day of week are ignored; two- and three-digit years and alphabetic
/// zones are read as §4.3 says (`EST` is -0500; other names, military letters included,
/// are -0000). `None` for anything else (ranges checked, second 60 allowed), and for a
/// year before 1900 or after 9999.
fn parse_date(value: &[u8]) -> Option<i64> {
    let mut text = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'(' {
            i = skip_comment(value, i);
            text.push(b' ');
        } else {
            text.push(value[i]);
            i += 1;
        }
    }
    let text = std::str::from_utf8(&text).ok()?;
    let mut words = text
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .peekable();
    if words
        .peek()
        .is_some_and(|w| DAYS.iter().any(|d| d.eq_ignore_ascii_case(w)))
    {
        words.next();
    }
    let day = digits(words.next()?, 1, 2)?;
    let month_word = words.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_word))?;
    let year_word = words.next()?;
    let year = i64::from(digits(year_word, 2, 4)?);
    let year = match year_word.len() {
        2 if year < 50 => 2000 + year,
        2 | 3 => 1900 + year,
        _ => year,
    };
    let mut time = words.next()?.split(':');
    let hour = digits(time.next()?, 2, 2)?;
    let minute = digits(time.next()?, 2, 2)?;
    let second = time.next().map_or(Some(0), |s| digits(s, 2, 2))?;
    let zone = zone_offset(words.next()?)?;
    if time.next().is_some() || words.next().is_some() {
        return None;
    }
    // `month` is an index below 12.
    let month = u32::try_from(month).ok()? + 1;
    let valid = (1900..=9999).contains(&year)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !valid {
        return None;
    }
    let seconds = i64::from(hour * 3600 + minute * 60 + second);
    Some(days_from_civil(year, month, day) * SECONDS_PER_DAY + seconds - zone)
}

/// A zone as seconds east of UTC: `+hhmm` / `-hhmm`, or an obsolete name.
fn zone_offset(zone: &str) -> Option<i64> {
    let (sign, hhmm) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return obsolete_zone_offset(zone),
    };
    let hhmm = digits(hhmm, 4, 4)?;
    let (hours, minutes) = (hhmm / 100, hhmm % 100);
    if minutes > 59 {
        return None;
    }
    Some(sign * i64::from(hours * 3600 + minutes * 60))
}

/// `obs-zone` (RFC 5322 §4.3): the US names, and -0000 for any other alphabetic name.
fn obsolete_zone_offset(zone: &str) -> Option<i64> {
    if zone.is_empty() || !zone.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let hours = match zone.to_ascii_uppercase().as_str() {
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        _ => 0,
    };
    Some(hours * 3600)
}

/// `min..=max` ASCII digits as a number.
fn digits(word: &str, min: usize, max: usize) -> Option<u32> {
    if word.len() < min || word.len() > max || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `Thu, 01 Jan 1970 00:00:00 +0000` for unix seconds, up to [`MAX_RENDERED_TIME`].
fn format_date(unix: u64) -> Option<String> {
    if unix > MAX_RENDERED_TIME {
        return None;
    }
    let unix = i64::try_from(unix).ok()?;
    let days = unix.div_euclid(SECONDS_PER_DAY);
    let second = unix.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = usize::try_from((days + 4).rem_euclid(7)).ok()?;
    let month = usize::try_from(month).ok()? - 1;
    Some(format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        DAYS[weekday],
        MONTHS[month],
        second / 3600,
        second % 3600 / 60,
        second % 60
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both below 32 and 13 by construction.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[path = "contacts_tests.rs"]
mod tests;
