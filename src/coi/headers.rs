//! The top-level header block of submitted mail, streamed: find where it ends, parse its
//! fields, and write it back with the COI headers the proxy owns (COI-PROTOCOL.md §4.7,
//! SECURITY-CASES.md §E, issue 3).
//!
//! - [`HeaderScanner`] is fed the message as the DATA receiver emits it (unstuffed, CRLF
//!   lines, chunk boundaries anywhere) and finds the end of the header block: the first
//!   empty line, i.e. the first CRLF CRLF, or a CRLF at the very start. It buffers the
//!   header only, under a size limit ([`MAX_HEADER_BLOCK`]), and hands the rest of the
//!   chunk that held the end back untouched; the caller then forwards every later body
//!   chunk as it is, without the scanner seeing it: the body is neither copied nor
//!   scanned, so it stays byte-identical and passes at memcpy speed (BENCHMARKS.md B8).
//! - [`HeaderBlock`] holds the header bytes and the position of every field.
//! - [`HeaderRewriter::render`] writes the header block again: every field the client
//!   supplied byte for byte (folding included) and in order, except the COI token and
//!   verdict fields ([`REMOVED_FIELDS`], SECURITY-CASES case 42), plus, for a chat
//!   message, one `X-COI-Temporary-Token` per visible recipient and `X-COI-Server` when
//!   configured.
//! - [`visible_recipients`] reads the addresses of the `To` and `Cc` fields;
//!   [`issue_injections`] issues the temporary tokens for them, bound to
//!   `H(recipient ":" sender)` (COI-PROTOCOL §4.1: the reverse direction, so that the
//!   recipient can answer with `STOKEN`).
//!
//! Only the top-level header block counts (SECURITY-CASES case 44): a token field inside
//! the body or an attached `message/rfc822` part is body, and stays.
//!
//! Call order, per message:
//!
//! ```text
//! let mut scanner = HeaderScanner::new(MAX_HEADER_BLOCK);
//! for each DataEvent::Chunk(bytes):
//!     NeedMore                         -> keep pushing
//!     HeaderEnd { header, body_start } -> c = classify(&header);
//!                                         injections = c.chat.then(|| issue_injections(
//!                                             &visible_recipients(&header), sender, ...));
//!                                         write rewriter.render(&header, injections)?.header,
//!                                         write body_start, then every later chunk as is
//!     Err(e)                           -> stop; answer e.reply() at the end of data
//! at DataEvent::End, if the header never ended: header = scanner.finish()?, render it
//! ```
//!
//! `Bcc` is left alone: removing it is Postfix's job on submission, not the proxy's (the
//! end-to-end test of issue 3 checks that no Bcc reaches a recipient). A Bcc recipient
//! gets no token anyway, because only `To` and `Cc` are read.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memmem;

use super::address::{self, NormalizedAddress};
use super::token::{self, IssueError, Secrets, TokenKind};
use crate::proto::smtp::reply::Reply;

/// Largest header block accepted, blank line included, in octets. Real submitted mail
/// has a few KiB of header (Delta Chat's outer header, an Autocrypt key of 1–5 KiB, DKIM
/// and Received lines added later by Postfix); Postfix itself keeps only
/// `header_size_limit` = 100 KiB of one header field. 256 KiB passes everything real
/// with room to spare while bounding what one message can make the proxy hold: the
/// header is the only part of a message that is buffered.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Most header fields (and malformed lines) in one block. Real mail has tens, a long
/// Received chain a few hundred; the bound keeps the field index of a block of small
/// fields (`a:b` CRLF) at a few tens of KiB instead of a million entries.
pub const MAX_HEADER_FIELDS: usize = 4096;

/// Most addresses [`visible_recipients`] returns, and so most tokens injected into one
/// message: Postfix's default `smtpd_recipient_limit`. A To/Cc list longer than this gets
/// tokens for its first entries only.
pub const MAX_VISIBLE_RECIPIENTS: usize = 1000;

/// Fold injected fields so that their lines stay within this many columns where the
/// value allows it (RFC 5322 §2.1.1 SHOULD).
pub const FOLD_COLUMN: usize = 78;

/// Longest line allowed, CRLF excluded (RFC 5322 §2.1.1 MUST).
pub const MAX_LINE: usize = 998;

/// The field the proxy injects, one per visible recipient of a chat message.
pub const TOKEN_FIELD: &str = "X-COI-Temporary-Token";

/// The field naming the sender's COI server (`host:port`), injected when configured.
pub const SERVER_FIELD: &str = "X-COI-Server";

/// Longest `X-COI-Server` value: a DNS name (253) or a bracketed IPv6 literal, `:`, port.
pub const MAX_SERVER_LEN: usize = 262;

/// Fields a client may never supply: the proxy's own token and server fields, every
/// `COI-Token*` (`COI-TokenIn`, `COI-TokenOut`, ...) and the `COI-Verified` verdict
/// (SECURITY-CASES case 42). Removed from the top-level header block of every submitted
/// message, chat or not, whatever their case.
pub const REMOVED_FIELDS: &[FieldName] = &[
    FieldName::Exact(TOKEN_FIELD),
    FieldName::Exact(SERVER_FIELD),
    FieldName::Prefix("COI-Token"),
    FieldName::Exact("COI-Verified"),
];

/// A header field name, or a family of them, compared ASCII case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldName {
    /// Exactly this name.
    Exact(&'static str),
    /// Every name starting with this.
    Prefix(&'static str),
}

impl FieldName {
    /// True if `name` (as written, without the colon) is this name or in this family.
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            FieldName::Exact(n) => name.eq_ignore_ascii_case(n.as_bytes()),
            FieldName::Prefix(p) => {
                name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
    }
}

/// True if a field of this name is removed from submitted mail ([`REMOVED_FIELDS`]).
pub fn is_removed(name: &[u8]) -> bool {
    REMOVED_FIELDS.iter().any(|f| f.matches(name))
}

/// Why a header block is refused. All but [`HeaderError::Ended`] are the client's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header block does not end within the limit.
    #[error("header block larger than {limit} octets")]
    TooLarge { limit: usize },
    /// More than [`MAX_HEADER_FIELDS`] fields.
    #[error("too many header fields")]
    TooManyFields,
    /// A CR or LF that is not part of a CRLF. The DATA receiver refuses these already;
    /// the header parser refuses them again because a header line ending that another
    /// parser reads differently is exactly how a field is smuggled past the removal.
    #[error("bare CR or LF in the header block")]
    BareLineEnding,
    /// The data ended inside a header line (never after the DATA receiver, which emits
    /// complete lines only).
    #[error("message ends inside a header line")]
    Unterminated,
    /// The caller pushed after the header end or after `finish`: a bug of the caller.
    #[error("header scanner used after the header end")]
    Ended,
}

impl HeaderError {
    /// The reply to the end of data.
    pub fn reply(&self) -> Reply {
        match self {
            HeaderError::TooLarge { .. } | HeaderError::TooManyFields => {
                Reply::new(552, Some((5, 3, 4)), "Message header size exceeds limit")
            }
            HeaderError::BareLineEnding | HeaderError::Unterminated => Reply::new(
                554,
                Some((5, 6, 0)),
                "Message content rejected: malformed header",
            ),
            HeaderError::Ended => Reply::new(451, Some((4, 3, 0)), "Local error in processing"),
        }
    }
}

// === the header block ===

/// A parsed top-level header block: the bytes as received and where each field lies.
///
/// A field is a line `field-name *WSP ":" ...` and its continuation lines (those starting
/// with SP or HT). A line that is neither (no colon, a name with forbidden characters, a
/// continuation line before any field) is kept as a malformed entry: it is written back
/// unchanged, it ends the run of well-formed fields after which the proxy injects its own
/// (so that a parser which stops at it still sees the tokens), and it is removed if it
/// loosely looks like a removed field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderBlock {
    raw: Bytes,
    /// End of the last field; `raw[fields_end..]` is the blank line or nothing.
    fields_end: usize,
    items: Vec<Item>,
    /// Number of leading items that are well-formed fields.
    lead: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Item {
    start: usize,
    /// End of the trimmed name (`start` for a malformed line).
    name_end: usize,
    /// Position of the colon; `None` for a malformed line.
    colon: Option<usize>,
    /// End of the last line, CRLF included.
    end: usize,
}

/// One field (or malformed line) of a [`HeaderBlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a [u8],
    name: &'a [u8],
    value: Option<&'a [u8]>,
}

impl<'a> Field<'a> {
    /// The whole field as received: every line, CRLFs included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The field name without trailing WSP; empty for a malformed line.
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The value: everything after the colon up to the final CRLF, still folded. `None`
    /// for a malformed line.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// True for a line that is not a well-formed field.
    pub fn is_malformed(&self) -> bool {
        self.value.is_none()
    }

    /// True if the name is `name`, ASCII case-insensitively.
    pub fn is(&self, name: &str) -> bool {
        self.value.is_some() && self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value unfolded (RFC 5322 §2.2.3: every CRLF that is followed by WSP removed;
    /// inside a field every CRLF is). Empty for a malformed line.
    pub fn unfolded_value(&self) -> Cow<'a, [u8]> {
        unfold(self.value.unwrap_or_default())
    }
}

impl HeaderBlock {
    /// Splits a whole message into its parsed header block and its body, under `limit`:
    /// what [`HeaderScanner`] does in one push, then [`HeaderScanner::finish`] when the
    /// message has no blank line (then the body is empty).
    pub fn parse_message(
        message: &[u8],
        limit: usize,
    ) -> Result<(HeaderBlock, &[u8]), HeaderError> {
        match find_header_end(message) {
            Some(end) if end > limit => Err(HeaderError::TooLarge { limit }),
            Some(end) => {
                let header = HeaderBlock::parse(Bytes::copy_from_slice(&message[..end]), true)?;
                Ok((header, &message[end..]))
            }
            None if message.len() >= limit && !message.is_empty() => {
                Err(HeaderError::TooLarge { limit })
            }
            None => Ok((
                HeaderBlock::parse(Bytes::copy_from_slice(message), false)?,
                &[],
            )),
        }
    }

    /// Parses header bytes: with `blank_line`, `raw` ends with the empty line (or is just
    /// it); without, `raw` is a header with no body after it.
    fn parse(raw: Bytes, blank_line: bool) -> Result<HeaderBlock, HeaderError> {
        let fields_end = if blank_line {
            debug_assert!(raw.ends_with(b"\r\n"));
            raw.len() - 2
        } else {
            raw.len()
        };
        let mut items: Vec<Item> = Vec::new();
        let mut at = 0;
        while at < fields_end {
            let line_end = line_end(&raw[..fields_end], at)?;
            let continuation = matches!(raw[at], b' ' | b'\t');
            match items.last_mut() {
                Some(last) if continuation => last.end = line_end + 2,
                _ => {
                    if items.len() == MAX_HEADER_FIELDS {
                        return Err(HeaderError::TooManyFields);
                    }
                    items.push(item_at(&raw, at, line_end));
                }
            }
            at = line_end + 2;
        }
        let lead = items
            .iter()
            .position(|item| item.colon.is_none())
            .unwrap_or(items.len());
        Ok(HeaderBlock {
            raw,
            fields_end,
            items,
            lead,
        })
    }

    /// The header block as received, blank line included if there was one.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Its size in octets.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True if the message started with its blank line or was empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if the block ended with a blank line (a body, maybe empty, follows); false
    /// for a message that is all header.
    pub fn has_blank_line(&self) -> bool {
        self.fields_end < self.raw.len()
    }

    /// Every field and malformed line, in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> + '_ {
        self.items.iter().map(|item| self.field(item))
    }

    /// The fields named `name` (ASCII case-insensitive), in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Field<'a>> + 'a {
        self.fields().filter(move |f| f.is(name))
    }

    /// The first field named `name`.
    pub fn first(&self, name: &str) -> Option<Field<'_>> {
        self.fields().find(|f| f.is(name))
    }

    /// The item before which injected fields go: after the leading run of well-formed
    /// fields, except that a continuation line at the very top (a malformed item
    /// starting with WSP) would continue an injected field, so they go after it.
    fn injection_point(&self) -> usize {
        match self.items.get(self.lead) {
            Some(item) if matches!(self.raw[item.start], b' ' | b'\t') => self.lead + 1,
            _ => self.lead,
        }
    }

    fn field(&self, item: &Item) -> Field<'_> {
        let raw = &self.raw[item.start..item.end];
        Field {
            raw,
            name: &self.raw[item.start..item.name_end],
            value: item.colon.map(|c| &self.raw[c + 1..item.end - 2]),
        }
    }
}

/// The CRLF ending the line that starts at `at` in `fields`: the first CR or LF must be
/// a CR followed by LF. A bare CR or LF is [`HeaderError::BareLineEnding`] if a CRLF
/// follows somewhere (the line has an end, but not a clean one), else the block is
/// [`HeaderError::Unterminated`]. One `memchr2` per line: this runs on every line of
/// every submitted header.
fn line_end(fields: &[u8], at: usize) -> Result<usize, HeaderError> {
    let rest = &fields[at..];
    match memchr::memchr2(b'\r', b'\n', rest) {
        Some(i) if rest[i..].starts_with(b"\r\n") => Ok(at + i),
        Some(i) if memmem::find(&rest[i..], b"\r\n").is_some() => Err(HeaderError::BareLineEnding),
        _ => Err(HeaderError::Unterminated),
    }
}

/// Where the header block of `message` ends (after its blank line), if it does: the first
/// CRLF CRLF, or a CRLF at the start (an empty header). Equivalently the first CRLF CRLF
/// of the message behind a virtual CRLF.
fn find_header_end(message: &[u8]) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(2);
    }
    header_end_finder()
        .find(message)
        .map(|i| i + HEADER_END.len())
}

const HEADER_END: &[u8] = b"\r\n\r\n";

/// The searcher for [`HEADER_END`], built once: `memmem::find` would build one per call,
/// which costs more than the search itself on a small first chunk.
fn header_end_finder() -> &'static memmem::Finder<'static> {
    static FINDER: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(HEADER_END))
}

/// The item of the line `raw[start..line_end]` (CRLF at `line_end`):
/// `field-name = 1*ftext`, `ftext = %d33-57 / %d59-126`, then `*WSP ":"` (RFC 5322
/// §3.6.8, with the WSP of `obs-optional` §4.5.8).
fn item_at(raw: &[u8], start: usize, line_end: usize) -> Item {
    let line = &raw[start..line_end];
    let name_len = line.iter().take_while(|&&b| is_ftext(b)).count();
    let wsp = line[name_len..]
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t'))
        .count();
    let colon =
        (name_len > 0 && line.get(name_len + wsp) == Some(&b':')).then_some(start + name_len + wsp);
    Item {
        start,
        name_end: if colon.is_some() {
            start + name_len
        } else {
            start
        },
        colon,
        end: line_end + 2,
    }
}

fn is_ftext(b: u8) -> bool {
    matches!(b, 33..=57 | 59..=126)
}

fn unfold(value: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'\r', value).is_none() {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = memmem::find(rest, b"\r\n") {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + 2..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

// === the scanner ===

/// What [`HeaderScanner::push`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The header block has not ended yet: push more.
    NeedMore,
    /// The header block ended in this push. `body_start` is the rest of the pushed chunk
    /// (a slice of it, not a copy); every later chunk is body too and goes to the output
    /// as it is, without the scanner.
    HeaderEnd {
        header: HeaderBlock,
        body_start: Bytes,
    },
}

/// Finds the end of the top-level header block in a message pushed in chunks, buffering
/// at most `limit` octets of header and nothing of the body. See the module
/// documentation for the call order.
#[derive(Debug)]
pub struct HeaderScanner {
    limit: usize,
    buf: BytesMut,
    /// The last (up to) three octets of the stream so far, behind a virtual CRLF: a CRLF
    /// CRLF across a chunk boundary, and a CRLF at the start, are found through it.
    tail: [u8; 3],
    tail_len: usize,
    state: ScanState,
}

#[derive(Debug)]
enum ScanState {
    Scanning,
    Ended,
    Failed(HeaderError),
}

impl HeaderScanner {
    /// A scanner refusing header blocks larger than `limit` octets (normally
    /// [`MAX_HEADER_BLOCK`]).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: BytesMut::new(),
            tail: [b'\r', b'\n', 0],
            tail_len: 2,
            state: ScanState::Scanning,
        }
    }

    /// Takes the next chunk of the message. After [`Progress::HeaderEnd`] or an error,
    /// do not push again (an error is returned again, [`HeaderError::Ended`] after the
    /// end).
    pub fn push(&mut self, chunk: Bytes) -> Result<Progress, HeaderError> {
        match self.state {
            ScanState::Scanning => {}
            ScanState::Ended => return Err(HeaderError::Ended),
            ScanState::Failed(e) => return Err(e),
        }
        if chunk.is_empty() {
            return Ok(Progress::NeedMore);
        }
        if let Some(end) = self.find_end(&chunk) {
            if self.buf.len() + end > self.limit {
                return Err(self.fail(HeaderError::TooLarge { limit: self.limit }));
            }
            self.buf.extend_from_slice(&chunk[..end]);
            self.state = ScanState::Ended;
            let raw = std::mem::take(&mut self.buf).freeze();
            let header = HeaderBlock::parse(raw, true).map_err(|e| self.fail(e))?;
            return Ok(Progress::HeaderEnd {
                header,
                body_start: chunk.slice(end..),
            });
        }
        // No end yet: a header reaching the limit now can only end beyond it.
        if self.buf.len() + chunk.len() >= self.limit {
            return Err(self.fail(HeaderError::TooLarge { limit: self.limit }));
        }
        self.buf.extend_from_slice(&chunk);
        self.keep_tail(&chunk);
        Ok(Progress::NeedMore)
    }

    /// The end of the data came before a blank line: the whole message is header, with
    /// no body. Returns the block to render.
    pub fn finish(&mut self) -> Result<HeaderBlock, HeaderError> {
        match self.state {
            ScanState::Scanning => {}
            ScanState::Ended => return Err(HeaderError::Ended),
            ScanState::Failed(e) => return Err(e),
        }
        self.state = ScanState::Ended;
        let raw = std::mem::take(&mut self.buf).freeze();
        HeaderBlock::parse(raw, false).map_err(|e| self.fail(e))
    }

    /// Header octets held now; always below the limit while scanning, zero after.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True once the header end was found, `finish` was called or an error returned.
    pub fn is_done(&self) -> bool {
        !matches!(self.state, ScanState::Scanning)
    }

    /// The offset in `chunk` just after the blank line, if it is in this chunk.
    fn find_end(&self, chunk: &[u8]) -> Option<usize> {
        // A match starting in the tail ends within the first three octets of the chunk.
        let tail = &self.tail[..self.tail_len];
        let head = &chunk[..chunk.len().min(3)];
        let mut window = [0u8; 6];
        window[..tail.len()].copy_from_slice(tail);
        window[tail.len()..tail.len() + head.len()].copy_from_slice(head);
        if let Some(i) = memmem::find(&window[..tail.len() + head.len()], HEADER_END) {
            return Some(i + HEADER_END.len() - tail.len());
        }
        header_end_finder()
            .find(chunk)
            .map(|i| i + HEADER_END.len())
    }

    fn keep_tail(&mut self, chunk: &[u8]) {
        if chunk.len() >= 3 {
            self.tail.copy_from_slice(&chunk[chunk.len() - 3..]);
            self.tail_len = 3;
            return;
        }
        let mut joined = [0u8; 5];
        joined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        joined[self.tail_len..self.tail_len + chunk.len()].copy_from_slice(chunk);
        let len = self.tail_len + chunk.len();
        let keep = len.min(3);
        self.tail[..keep].copy_from_slice(&joined[len - keep..len]);
        self.tail_len = keep;
    }

    fn fail(&mut self, e: HeaderError) -> HeaderError {
        self.state = ScanState::Failed(e);
        self.buf = BytesMut::new();
        e
    }
}

// === the rewriter ===

/// One token to inject: the visible recipient it is for (normalised; informational, the
/// recipient's server finds its token by the pair hash) and the token string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub recipient: String,
    pub token: String,
}

/// Why the rewriter refused its input. Both are the proxy's own fault (a bad setting or
/// a bug producing tokens), never the client's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The injection at this index does not hold a well-formed token that fits a line.
    #[error("injection {0} is not a well-formed token")]
    InvalidToken(usize),
    /// The configured `X-COI-Server` value is not `host:port`.
    #[error("X-COI-Server must be host:port, got {0:?}")]
    InvalidServer(String),
}

/// The rewritten header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The header block to send, blank line included if the input had one.
    pub header: Bytes,
    /// Client-supplied fields removed.
    pub removed: usize,
    /// Fields injected (tokens and the server field).
    pub injected: usize,
}

/// Writes header blocks with the client's COI fields removed and the proxy's injected.
#[derive(Clone, Debug, Default)]
pub struct HeaderRewriter {
    server: Option<String>,
}

impl HeaderRewriter {
    /// A rewriter adding `X-COI-Server: <server>` to chat messages when `server` is
    /// given; it must be `host:port` (a DNS name or a bracketed IP literal, port
    /// 1–65535).
    pub fn new(server: Option<&str>) -> Result<Self, RewriteError> {
        if let Some(server) = server {
            if !is_host_port(server) {
                return Err(RewriteError::InvalidServer(server.to_owned()));
            }
        }
        Ok(Self {
            server: server.map(str::to_owned),
        })
    }

    /// The output header block for `header`: every field byte for byte and in order,
    /// except those of [`REMOVED_FIELDS`]; for a chat message (`chat` given) one
    /// `X-COI-Temporary-Token` per injection and `X-COI-Server`, after the leading run of
    /// well-formed fields. Every token is checked before anything is written.
    pub fn render(
        &self,
        header: &HeaderBlock,
        chat: Option<&[Injection]>,
    ) -> Result<Rendered, RewriteError> {
        let injections = chat.unwrap_or_default();
        for (i, injection) in injections.iter().enumerate() {
            if !is_emittable_token(&injection.token) {
                return Err(RewriteError::InvalidToken(i));
            }
        }
        let mut out = BytesMut::with_capacity(
            header.len() + injections.len() * (TOKEN_FIELD.len() + 160) + 64,
        );
        let mut removed = 0;
        let mut injected = 0;
        let mut inject = |out: &mut BytesMut| {
            let Some(injections) = chat else {
                return;
            };
            for injection in injections {
                push_field(out, TOKEN_FIELD, &injection.token);
                injected += 1;
            }
            if let Some(server) = &self.server {
                push_field(out, SERVER_FIELD, server);
                injected += 1;
            }
        };
        let at = header.injection_point();
        for (i, item) in header.items.iter().enumerate() {
            if i == at {
                inject(&mut out);
            }
            if removes(header, item) {
                removed += 1;
                continue;
            }
            out.put_slice(&header.raw[item.start..item.end]);
        }
        if at == header.items.len() {
            inject(&mut out);
        }
        out.put_slice(&header.raw[header.fields_end..]);
        Ok(Rendered {
            header: out.freeze(),
            removed,
            injected,
        })
    }
}

/// Whether the rewriter drops this item: a well-formed field with a removed name, or a
/// malformed line whose text before its first colon, stripped of everything that is not
/// `ftext`, is one (` X-COI-Server:` at the top, `X-COI-Server\0:`): a lenient parser
/// may read it as that field, and no legitimate line looks like it.
fn removes(header: &HeaderBlock, item: &Item) -> bool {
    if item.colon.is_some() {
        return is_removed(&header.raw[item.start..item.name_end]);
    }
    let line = &header.raw[item.start..item.end];
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let loose: Vec<u8> = line[..colon]
        .iter()
        .copied()
        .filter(|&b| is_ftext(b))
        .collect();
    !loose.is_empty() && is_removed(&loose)
}

/// `name ": " value CRLF` on one line if it fits [`FOLD_COLUMN`], else folded before the
/// value (`name ":" CRLF SP value CRLF`): values are single words (tokens, host:port)
/// and cannot be folded inside.
fn push_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    if name.len() + 2 + value.len() <= FOLD_COLUMN {
        out.put_slice(b": ");
    } else {
        out.put_slice(b":\r\n ");
    }
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// A token the rewriter may write: the token alphabet only (printable ASCII: no space,
/// no CR or LF, so nothing can be spliced into the header), the v1 prefix, and short
/// enough for a continuation line (SP + token ≤ [`MAX_LINE`]). Deliberately not a full
/// [`token::Token::parse`]: tokens come from [`token::issue`], and this check is about what
/// reaches the wire, per injected field on the hot path.
fn is_emittable_token(token: &str) -> bool {
    token.len() < MAX_LINE && token.starts_with("1-") && token.bytes().all(|b| b.is_ascii_graphic())
}

/// `host ":" port`, host a DNS name (letters, digits, `-`, `.`) or `[` IP literal `]`.
fn is_host_port(value: &str) -> bool {
    if value.len() > MAX_SERVER_LEN {
        return false;
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(port.parse::<u32>(), Ok(1..=65535));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(literal) => {
            !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        }
    };
    port_ok && host_ok
}

// === recipients and tokens ===

/// The addresses of every `To` and `Cc` field of the top-level block, in order, exact
/// duplicates dropped, at most [`MAX_VISIBLE_RECIPIENTS`]: each an `addr-spec` as
/// written (`alice@example.org`, `"john doe"@example.com`), for [`address::normalize`].
/// `Bcc` is never read.
///
/// `address-list` (RFC 5322 §3.4), best effort: display names (atoms, quoted strings,
/// encoded words), `<angle-addr>` with an obsolete route (`<@a,@b:x@y>`), groups
/// (`name: a, b;`, also empty: `hidden-recipients:;`), comments (nested) and folding
/// whitespace anywhere. An entry that is not clearly one address is skipped rather than
/// guessed: words separated by whitespace (`Alice alice@x`, a missing comma, CFWS around
/// the dots of an `obs-local-part`), an unclosed quoted string or domain literal, no `@`,
/// an empty local part or domain, invalid UTF-8. Skipping only costs that recipient its token.
pub fn visible_recipients(header: &HeaderBlock) -> Vec<String> {
    let mut out = Vec::new();
    for field in header.fields().filter(|f| f.is("To") || f.is("Cc")) {
        parse_address_list(&field.unfolded_value(), &mut out);
        if out.len() >= MAX_VISIBLE_RECIPIENTS {
            out.truncate(MAX_VISIBLE_RECIPIENTS);
            break;
        }
    }
    out
}

/// The addresses of every `name` field (e.g. `From`), read like [`visible_recipients`]
/// reads `To` and `Cc`, at most [`MAX_VISIBLE_RECIPIENTS`]. An entry that is not clearly
/// one address is skipped.
pub fn field_addresses(header: &HeaderBlock, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for field in header.all(name) {
        parse_address_list(&field.unfolded_value(), &mut out);
        if out.len() >= MAX_VISIBLE_RECIPIENTS {
            out.truncate(MAX_VISIBLE_RECIPIENTS);
            break;
        }
    }
    out
}

/// Issues one temporary token per distinct recipient for a message from `sender` (the
/// authenticated envelope sender, normalised), bound to `H(recipient ":" sender)`: the
/// token lets the recipient's side deliver back to the sender. Recipients that do not
/// normalise are skipped (they get no token); duplicates after normalisation get one.
pub fn issue_injections(
    recipients: &[String],
    sender: &NormalizedAddress,
    now: u64,
    validity: u64,
    secrets: &Secrets,
) -> Result<Vec<Injection>, IssueError> {
    let mut out: Vec<Injection> = Vec::new();
    for recipient in recipients.iter().take(MAX_VISIBLE_RECIPIENTS) {
        let Ok(normalized) = address::normalize(recipient) else {
            continue;
        };
        if out.iter().any(|i| i.recipient == normalized.as_str()) {
            continue;
        }
        let hash = token::pair_hash(Some(&normalized), sender);
        let token = token::issue(TokenKind::Temporary, now, validity, &hash, &[], secrets)?;
        out.push(Injection {
            recipient: normalized.into_string(),
            token: token.render(),
        });
    }
    Ok(out)
}

/// The address-list parser of [`visible_recipients`], as a small state machine over the
/// unfolded value.
fn parse_address_list(value: &[u8], out: &mut Vec<String>) {
    let mut list = AddressList::default();
    let mut i = 0;
    while i < value.len() && out.len() < MAX_VISIBLE_RECIPIENTS {
        match value[i] {
            b' ' | b'\t' | b'\r' | b'\n' => {
                list.spaced = true;
                i += 1;
            }
            b'(' => {
                i = skip_comment(value, i);
                list.spaced = true;
            }
            open @ (b'"' | b'[') => {
                let close = if open == b'"' { b'"' } else { b']' };
                let (end, closed) = quoted_end(value, i, close);
                list.broken |= !closed;
                list.word(&value[i..end]);
                i = end;
            }
            b'<' => {
                list.angle = Some(Vec::new());
                list.angle_spaced = false;
                i += 1;
            }
            b'>' => {
                if let Some(angle) = list.angle.take() {
                    list.angle_done = Some(angle);
                }
                i += 1;
            }
            b':' => {
                match &mut list.angle {
                    // The end of an obsolete route: what came before is not the address.
                    Some(angle) => angle.clear(),
                    // A group's display name: discard it.
                    None => list.reset(),
                }
                i += 1;
            }
            b',' | b';' => {
                // A comma inside <> belongs to an obsolete route.
                if list.angle.is_none() {
                    list.flush(out);
                }
                i += 1;
            }
            b'@' => {
                list.push_special(b'@');
                i += 1;
            }
            _ => {
                let end = i + value[i..]
                    .iter()
                    .take_while(|&&b| !is_address_special(b))
                    .count();
                // Specials not handled above (`)`, `]`, `\`) are taken as one-octet words.
                let end = end.max(i + 1);
                list.word(&value[i..end]);
                i = end;
            }
        }
    }
    list.flush(out);
}

fn is_address_special(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'\r'
            | b'\n'
            | b'('
            | b')'
            | b'<'
            | b'>'
            | b'['
            | b']'
            | b':'
            | b';'
            | b'@'
            | b'\\'
            | b','
            | b'"'
    )
}

#[derive(Default)]
struct AddressList {
    /// The tokens of the current entry outside `<>`, concatenated.
    current: Vec<u8>,
    /// Whether `current` holds a word, and whether whitespace followed the last one.
    has_word: bool,
    spaced: bool,
    /// Two words separated by whitespace: a phrase, not an addr-spec.
    phrase: bool,
    angle: Option<Vec<u8>>,
    angle_spaced: bool,
    angle_phrase: bool,
    angle_done: Option<Vec<u8>>,
    /// An unclosed quoted string or domain literal: the entry is skipped.
    broken: bool,
}

impl AddressList {
    fn word(&mut self, word: &[u8]) {
        match &mut self.angle {
            Some(angle) => {
                if self.angle_spaced && !angle.is_empty() && !angle.ends_with(b"@") {
                    self.angle_phrase = true;
                }
                angle.extend_from_slice(word);
                self.angle_spaced = false;
            }
            None => {
                if self.has_word && self.spaced && !self.current.ends_with(b"@") {
                    self.phrase = true;
                }
                self.current.extend_from_slice(word);
                self.has_word = true;
            }
        }
        self.spaced = false;
    }

    fn push_special(&mut self, b: u8) {
        match &mut self.angle {
            Some(angle) => angle.push(b),
            None => self.current.push(b),
        }
        self.spaced = false;
    }

    fn reset(&mut self) {
        *self = AddressList::default();
    }

    fn flush(&mut self, out: &mut Vec<String>) {
        let spec = match (self.angle_done.take(), self.angle.take()) {
            (Some(done), _) => (!self.angle_phrase).then_some(done),
            // An unclosed `<`: take what it holds.
            (None, Some(open)) => (!self.angle_phrase).then_some(open),
            (None, None) => (!self.phrase).then(|| std::mem::take(&mut self.current)),
        };
        let broken = self.broken;
        self.reset();
        if broken {
            return;
        }
        let Some(spec) = spec else {
            return;
        };
        let Some(at) = spec.iter().rposition(|&b| b == b'@') else {
            return;
        };
        if at == 0 || at + 1 == spec.len() || out.len() >= MAX_VISIBLE_RECIPIENTS {
            return;
        }
        let Ok(spec) = String::from_utf8(spec) else {
            return;
        };
        if !out.contains(&spec) {
            out.push(spec);
        }
    }
}

/// The end (after the closing octet) of a quoted string or domain literal starting at
/// `start`, honouring `\` escapes, and whether it was closed (else the end of input).
fn quoted_end(value: &[u8], start: usize, close: u8) -> (usize, bool) {
    let mut i = start + 1;
    while i < value.len() {
        match value[i] {
            b'\\' => i += 2,
            b if b == close => return (i + 1, true),
            _ => i += 1,
        }
    }
    (value.len(), false)
}

/// The end of the comment starting at `value[start] == b'('` (nested comments and
/// quoted pairs included, RFC 5322 §3.2.2); the end of the input if it is not closed.
/// Nesting is a counter, so depth costs no stack.
pub(crate) fn skip_comment(value: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < value.len() {
        match value[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    value.len()
}

/// Skips `CFWS` (whitespace, CR/LF of folding, comments) from `i`.
pub(crate) fn skip_cfws(value: &[u8], mut i: usize) -> usize {
    while i < value.len() {
        match value[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => i = skip_comment(value, i),
            _ => break,
        }
    }
    i
}

// === fuzzing ===

/// Fuzz body (`coi_headers`): the scanner and the rewriter on an arbitrary message.
///
/// Input: byte 0 chooses the chunk size (`byte + 1`; 0 pushes the message whole), the
/// rest is the message. Invariants: no panic; the scanner finds the same header block
/// (or the same error) in chunks, one byte at a time and whole, and buffers less than
/// its limit; the body comes out identical; the rendered header parses back to the input
/// fields minus the removed ones, byte for byte and in order, plus exactly the injected
/// fields, whose values are the tokens given (no CR or LF spliced in); no removed field
/// survives.
#[doc(hidden)]
pub fn fuzz_headers(data: &[u8]) {
    let Some((&size, message)) = data.split_first() else {
        return;
    };
    // A small limit, so that the fuzzer reaches it.
    let limit = 4096;
    let whole = HeaderBlock::parse_message(message, limit);
    let chunk = if size == 0 {
        message.len().max(1)
    } else {
        usize::from(size) + 1
    };
    for chunk in [chunk, 1] {
        let (header, body) = scan_chunked(message, chunk, limit);
        match &whole {
            Ok((h, b)) => {
                assert_eq!(header.as_ref(), Ok(h), "same header whatever the chunking");
                assert_eq!(body, *b, "the body passes unchanged");
            }
            Err(e) => assert_eq!(header.as_ref(), Err(e), "same error whatever the chunking"),
        }
    }
    let Ok((header, body)) = whole else {
        return;
    };
    let _ = super::classify::classify(&header);
    let recipients = visible_recipients(&header);
    assert!(recipients.len() <= MAX_VISIBLE_RECIPIENTS);
    let secrets = Secrets {
        temporary: vec![token::Secret::new("fuzz").expect("non-empty secret")],
        permanent: Vec::new(),
    };
    let sender = address::normalize("sender@example.org").expect("a valid address");
    let injections = issue_injections(&recipients, &sender, 1_700_000_000, 86_400, &secrets)
        .expect("a temporary secret is configured");
    let rewriter = HeaderRewriter::new(Some("coi.example.org:443")).expect("valid server");
    for chat in [None, Some(injections.as_slice())] {
        let rendered = rewriter
            .render(&header, chat)
            .expect("issued tokens are valid");
        let mut output = rendered.header.to_vec();
        output.extend_from_slice(body);
        let (back, back_body) = HeaderBlock::parse_message(&output, usize::MAX)
            .expect("the rendered header parses back");
        assert_eq!(back_body, body, "the body is unchanged");
        assert_eq!(back.has_blank_line(), header.has_blank_line());
        let kept: Vec<&[u8]> = header
            .items
            .iter()
            .filter(|item| !removes(&header, item))
            .map(|item| &header.raw[item.start..item.end])
            .collect();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for item in &back.items {
            let field = back.field(item);
            if field.is(TOKEN_FIELD) || field.is(SERVER_FIELD) {
                ours.push(field);
            } else {
                assert!(!removes(&back, item), "no removed field survives");
                theirs.push(field.raw());
            }
        }
        assert_eq!(theirs, kept, "other fields byte for byte and in order");
        let expected = chat.map_or(0, |c| c.len() + 1);
        assert_eq!(ours.len(), expected, "exactly the injected fields");
        assert_eq!(rendered.injected, expected);
        assert_eq!(rendered.removed, header.items.len() - kept.len());
        for (field, injection) in ours.iter().zip(chat.unwrap_or_default()) {
            let value = field.unfolded_value();
            assert_eq!(trim_wsp(&value), injection.token.as_bytes());
        }
        for field in &ours {
            for line in field.raw().split_inclusive(|&b| b == b'\n') {
                assert!(line.len() <= MAX_LINE + 2, "injected lines fit");
            }
        }
    }
}

fn scan_chunked(
    message: &[u8],
    chunk: usize,
    limit: usize,
) -> (Result<HeaderBlock, HeaderError>, Vec<u8>) {
    let mut scanner = HeaderScanner::new(limit);
    let mut body = Vec::new();
    let mut header = None;
    for piece in message.chunks(chunk) {
        if header.is_some() {
            body.extend_from_slice(piece);
            continue;
        }
        match scanner.push(Bytes::copy_from_slice(piece)) {
            Ok(Progress::NeedMore) => assert!(scanner.buffered() < limit),
            Ok(Progress::HeaderEnd {
                header: h,
                body_start,
            }) => {
                body.extend_from_slice(&body_start);
                header = Some(Ok(h));
            }
            Err(e) => return (Err(e), body),
        }
    }
    let header = header.unwrap_or_else(|| scanner.finish());
    (header, body)
}

fn trim_wsp(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
