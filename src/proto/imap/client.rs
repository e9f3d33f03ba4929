//! The client side of IMAP as the mailbox writer speaks it to Dovecot: building commands
//! (with synchronising literals split out), and reading the few responses it needs
//! (capabilities, `APPENDUID`, `FETCH` bodies, status texts).
//!
//! Everything here works on complete frames: the driver frames the server's stream with
//! [`Framer`](super::fragment::Framer) first and hands over a whole response in its wire
//! form (lines with literals inline, as `{n}\r\n` + bytes). Nothing here reads a socket or
//! the clock.
//!
//! Commands are built by [`Command`], which encodes every value through
//! [`encode`](super::encode) (so a value can never splice a command) and splits the
//! command where a synchronising literal must wait for the server's `+`.

use std::ops::Range;

use bytes::Bytes;

use super::command::is_atom_char;
use super::encode::{self, LiteralStyle};
use super::response::capability_atoms;

/// Largest literal a client may send as non-synchronising under `LITERAL-` (RFC 7888 §5).
pub const LITERAL_MINUS_MAX: u64 = 4096;

/// Nesting budget for parenthesised lists in a `FETCH` response: far above what
/// BODYSTRUCTURE of real mail needs, low enough that a hostile response cannot recurse
/// deeply.
const MAX_NESTING: usize = 64;

/// Why a command could not be built. The caller passed something that has no valid
/// IMAP form; nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    /// A search program needs at least one key.
    #[error("empty search program")]
    EmptySearch,
    /// A UID set must name at least one message.
    #[error("empty UID set")]
    EmptyUidSet,
    /// An internal date outside the years 0001–9999 or with an offset of a day or more.
    #[error("internal date out of range")]
    InvalidDate,
    /// A METADATA entry name that RFC 5464 §3.2 does not allow.
    #[error("invalid METADATA entry name")]
    InvalidEntry,
    /// A flag is not `\atom` or a keyword atom.
    #[error("invalid flag")]
    InvalidFlag,
    /// A header field name is empty or has a character outside RFC 5322 `ftext`.
    #[error("invalid header field name")]
    InvalidHeaderName,
    /// A mailbox name that is not in wire form: a character outside printable ASCII, or
    /// an `&` that does not start a modified UTF-7 sequence (RFC 3501 §5.1.3).
    #[error("mailbox name not in modified UTF-7")]
    InvalidMailbox,
    /// A user name is empty (which would log in as the master user itself) or contains
    /// control characters.
    #[error("invalid user name")]
    InvalidUser,
    /// A SASL PLAIN identity or password contains NUL, which separates the fields.
    #[error("NUL in a SASL PLAIN field")]
    NulInCredentials,
    /// UID 0 does not exist (`nz-number`).
    #[error("UID 0")]
    ZeroUid,
}

/// The response was not what the grammar allows. The upstream is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// A `FETCH` response does not follow `msg-att`.
    #[error("malformed FETCH response")]
    MalformedFetch,
    /// Parenthesised lists nested deeper than the parser's budget.
    #[error("FETCH response nested too deeply")]
    TooDeep,
}

// === Capabilities ===

/// The capabilities the writer acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `AUTH=PLAIN` (RFC 4616).
    pub auth_plain: bool,
    /// `LITERAL+` (RFC 7888): any literal may be non-synchronising.
    pub literal_plus: bool,
    /// `LITERAL-` (RFC 7888): literals up to [`LITERAL_MINUS_MAX`] may be.
    pub literal_minus: bool,
    /// `LOGINDISABLED`: the server refuses authentication on this connection.
    pub login_disabled: bool,
    /// `METADATA` (RFC 5464).
    pub metadata: bool,
    /// `SASL-IR` (RFC 4959): the initial response may go with AUTHENTICATE.
    pub sasl_ir: bool,
    /// `UIDPLUS` (RFC 4315): `APPENDUID` and `UID EXPUNGE`.
    pub uidplus: bool,
}

impl Capabilities {
    /// Reads a capability list (the atoms of `* CAPABILITY` or of a `[CAPABILITY ...]`
    /// response code).
    pub fn parse(caps: &[u8]) -> Capabilities {
        let mut parsed = Capabilities::default();
        for atom in capability_atoms(caps) {
            let is = |name: &str| atom.eq_ignore_ascii_case(name.as_bytes());
            parsed.auth_plain |= is("AUTH=PLAIN");
            parsed.literal_plus |= is("LITERAL+");
            parsed.literal_minus |= is("LITERAL-");
            parsed.login_disabled |= is("LOGINDISABLED");
            parsed.metadata |= is("METADATA") || is("METADATA-SERVER");
            parsed.sasl_ir |= is("SASL-IR");
            parsed.uidplus |= is("UIDPLUS");
        }
        parsed
    }

    /// The literal forms commands may use on this connection.
    pub fn literals(&self) -> Literals {
        if self.literal_plus {
            Literals::NonSync
        } else if self.literal_minus {
            Literals::NonSyncUpTo(LITERAL_MINUS_MAX)
        } else {
            Literals::Sync
        }
    }
}

/// Which literal forms a command may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Literals {
    /// `LITERAL+`: every literal is `{n+}`, sent without waiting.
    NonSync,
    /// `LITERAL-`: `{n+}` up to this length, `{n}` above it.
    NonSyncUpTo(u64),
    /// Plain IMAP4rev1: every literal is `{n}` and waits for the server's `+`.
    Sync,
}

impl Literals {
    /// Whether a literal of `len` bytes may be sent without waiting for `+`.
    pub fn non_sync(self, len: u64) -> bool {
        match self {
            Literals::NonSync => true,
            Literals::NonSyncUpTo(max) => len <= max,
            Literals::Sync => false,
        }
    }
}

// === Commands ===

/// A command being built.
///
/// The wire form is kept in parts: every part but the last ends with a synchronising
/// literal announcement (`{n}\r\n`), after which the driver must wait for the server's
/// `+` (or a tagged refusal) before it sends the next part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    parts: Vec<Vec<u8>>,
    literals: Literals,
}

impl Command {
    /// Starts `tag SP name`. Both come from the caller's code, never from input: the tag
    /// is generated and the name is a constant.
    pub fn new(tag: &str, name: &str, literals: Literals) -> Command {
        Command {
            parts: vec![format!("{tag} {name}").into_bytes()],
            literals,
        }
    }

    /// Appends a space.
    pub fn sp(&mut self) -> &mut Self {
        self.raw(b" ")
    }

    /// Appends bytes as they are: syntax the caller built from validated pieces.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.current().extend_from_slice(bytes);
        self
    }

    /// Appends `value` as an `astring` (atom, quoted string or literal).
    pub fn astring(&mut self, value: &[u8]) -> &mut Self {
        let style = self.style_for(value.len());
        let mut encoded = Vec::new();
        encode::astring(&mut encoded, value, style);
        self.push_encoded(encoded, style)
    }

    /// Appends a mailbox name in wire form (modified UTF-7, RFC 3501 §5.1.3) as an
    /// `astring`. Names with other characters are refused here, because Dovecot's answer
    /// to them (a NO without a response code) would look like a transient failure.
    pub fn mailbox(&mut self, name: &str) -> Result<&mut Self, ArgumentError> {
        if !is_modified_utf7(name.as_bytes()) {
            return Err(ArgumentError::InvalidMailbox);
        }
        Ok(self.astring(name.as_bytes()))
    }

    /// Appends a METADATA entry name (RFC 5464 §3.2: slash-separated, no `*` or `%`, no
    /// empty component, no trailing slash) as an `astring`.
    pub fn entry(&mut self, name: &str) -> Result<&mut Self, ArgumentError> {
        let valid = name.starts_with('/')
            && !name.ends_with('/')
            && !name.contains("//")
            && name
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && b != b'*' && b != b'%');
        if !valid {
            return Err(ArgumentError::InvalidEntry);
        }
        Ok(self.astring(name.as_bytes()))
    }

    /// Appends `value` as a `string` (quoted string or literal).
    pub fn string(&mut self, value: &[u8]) -> &mut Self {
        let style = self.style_for(value.len());
        let mut encoded = Vec::new();
        encode::string(&mut encoded, value, style);
        self.push_encoded(encoded, style)
    }

    /// Appends `value` as a METADATA `value` (nstring or literal8, RFC 5464).
    pub fn nstring(&mut self, value: Option<&[u8]>) -> &mut Self {
        let style = self.style_for(value.map_or(0, <[u8]>::len));
        let mut encoded = Vec::new();
        encode::nstring(&mut encoded, value, style);
        self.push_encoded(encoded, style)
    }

    /// Ends the command with CRLF and returns its parts (see the type documentation).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.raw(b"\r\n");
        self.parts
    }

    /// Ends the command with the announcement of a literal of `len` bytes whose contents
    /// the driver streams itself (APPEND). Returns the parts and whether the announced
    /// literal is synchronising, i.e. whether the driver waits for `+` after the last
    /// part. The driver writes the bytes and the final CRLF.
    pub fn finish_with_literal(mut self, len: u64) -> (Vec<Vec<u8>>, bool) {
        let non_sync = self.literals.non_sync(len);
        let plus = if non_sync { "+" } else { "" };
        self.raw(format!("{{{len}{plus}}}\r\n").as_bytes());
        (self.parts, !non_sync)
    }

    fn current(&mut self) -> &mut Vec<u8> {
        if self.parts.is_empty() {
            self.parts.push(Vec::new());
        }
        let last = self.parts.len() - 1;
        &mut self.parts[last]
    }

    fn style_for(&self, len: usize) -> LiteralStyle {
        if self.literals.non_sync(len as u64) {
            LiteralStyle::NonSync
        } else {
            // `{n}` without `+`: in a command this is the synchronising form.
            LiteralStyle::Response
        }
    }

    /// Appends an encoded value. Atoms and quoted strings never contain LF, so an LF
    /// means the encoder chose a literal; a synchronising one ends the current part right
    /// after its announcement.
    fn push_encoded(&mut self, encoded: Vec<u8>, style: LiteralStyle) -> &mut Self {
        match memchr::memchr(b'\n', &encoded) {
            Some(lf) if style == LiteralStyle::Response => {
                self.current().extend_from_slice(&encoded[..=lf]);
                self.parts.push(encoded[lf + 1..].to_vec());
            }
            _ => self.current().extend_from_slice(&encoded),
        }
        self
    }
}

/// Whether `name` has the shape of a modified UTF-7 mailbox name: printable ASCII, with
/// every `&` starting either `&-` or a run of modified base64 closed by `-`.
fn is_modified_utf7(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'&' => {
                let run = name[i + 1..]
                    .iter()
                    .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'+' || b == b',')
                    .count();
                if name.get(i + 1 + run) != Some(&b'-') {
                    return false;
                }
                i += run + 2;
            }
            0x20..=0x7e => i += 1,
            _ => return false,
        }
    }
    true
}

/// Encodes a set of UIDs as a compact `sequence-set` (sorted, duplicates merged, runs as
/// ranges):
///
/// ```abnf
/// sequence-set = (seq-number / seq-range) ["," sequence-set]
/// seq-range    = seq-number ":" seq-number
/// seq-number   = nz-number / "*"
/// ```
pub fn uid_set(uids: &[u32]) -> Result<Vec<u8>, ArgumentError> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(&first) = sorted.first() else {
        return Err(ArgumentError::EmptyUidSet);
    };
    if first == 0 {
        return Err(ArgumentError::ZeroUid);
    }
    let mut out = String::new();
    let mut start = first;
    let mut end = first;
    let flush = |out: &mut String, start: u32, end: u32| {
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
    };
    for &uid in &sorted[1..] {
        if Some(uid) == end.checked_add(1) {
            end = uid;
        } else {
            flush(&mut out, start, end);
            start = uid;
            end = uid;
        }
    }
    flush(&mut out, start, end);
    Ok(out.into_bytes())
}

/// Encodes a flag list:
///
/// ```abnf
/// flag-list      = "(" [flag *(SP flag)] ")"
/// flag           = "\Answered" / "\Flagged" / "\Deleted" / "\Seen" / "\Draft" /
///                  flag-keyword / flag-extension
/// flag-keyword   = atom
/// flag-extension = "\" atom
/// ```
pub fn flag_list(flags: &[&str]) -> Result<Vec<u8>, ArgumentError> {
    let mut out = vec![b'('];
    for (i, flag) in flags.iter().enumerate() {
        let name = flag.strip_prefix('\\').unwrap_or(flag);
        if name.is_empty() || !name.bytes().all(is_atom_char) {
            return Err(ArgumentError::InvalidFlag);
        }
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(flag.as_bytes());
    }
    out.push(b')');
    Ok(out)
}

/// A search key the writer needs (RFC 3501 §6.4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchKey {
    /// Every message.
    All,
    /// `\Deleted` is set.
    Deleted,
    /// The header field `name` contains `value` (a substring match, case-insensitive).
    Header { name: String, value: Vec<u8> },
    /// The keyword (e.g. `$Chat`) is set.
    Keyword(String),
    /// The key does not match.
    Not(Box<SearchKey>),
    /// Either key matches.
    Or(Box<SearchKey>, Box<SearchKey>),
    /// `\Seen` is set.
    Seen,
    /// The message's UID is in the set.
    Uid(Vec<u32>),
    /// `\Deleted` is not set.
    Undeleted,
    /// The keyword is not set.
    Unkeyword(String),
    /// `\Seen` is not set.
    Unseen,
}

impl SearchKey {
    fn needs_utf8(&self) -> bool {
        match self {
            SearchKey::Header { value, .. } => !value.is_ascii(),
            SearchKey::Not(key) => key.needs_utf8(),
            SearchKey::Or(a, b) => a.needs_utf8() || b.needs_utf8(),
            _ => false,
        }
    }

    fn encode(&self, cmd: &mut Command) -> Result<(), ArgumentError> {
        match self {
            SearchKey::All => {
                cmd.raw(b"ALL");
            }
            SearchKey::Deleted => {
                cmd.raw(b"DELETED");
            }
            SearchKey::Header { name, value } => {
                // `field-name = 1*ftext`, `ftext = %d33-57 / %d59-126` (RFC 5322).
                if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
                    return Err(ArgumentError::InvalidHeaderName);
                }
                cmd.raw(b"HEADER ")
                    .astring(name.as_bytes())
                    .sp()
                    .string(value);
            }
            SearchKey::Keyword(flag) | SearchKey::Unkeyword(flag) => {
                if flag.is_empty() || !flag.bytes().all(is_atom_char) {
                    return Err(ArgumentError::InvalidFlag);
                }
                let word: &[u8] = if matches!(self, SearchKey::Keyword(_)) {
                    b"KEYWORD "
                } else {
                    b"UNKEYWORD "
                };
                cmd.raw(word).raw(flag.as_bytes());
            }
            SearchKey::Not(key) => {
                cmd.raw(b"NOT ");
                key.encode(cmd)?;
            }
            SearchKey::Or(a, b) => {
                cmd.raw(b"OR ");
                a.encode(cmd)?;
                cmd.sp();
                b.encode(cmd)?;
            }
            SearchKey::Seen => {
                cmd.raw(b"SEEN");
            }
            SearchKey::Uid(uids) => {
                cmd.raw(b"UID ").raw(&uid_set(uids)?);
            }
            SearchKey::Undeleted => {
                cmd.raw(b"UNDELETED");
            }
            SearchKey::Unseen => {
                cmd.raw(b"UNSEEN");
            }
        }
        Ok(())
    }
}

/// Appends a search program: `search = "SEARCH" [SP "CHARSET" SP astring] 1*(SP
/// search-key)`. `CHARSET UTF-8` is added when a value is not ASCII.
pub fn search_program(cmd: &mut Command, keys: &[SearchKey]) -> Result<(), ArgumentError> {
    if keys.is_empty() {
        return Err(ArgumentError::EmptySearch);
    }
    if keys.iter().any(SearchKey::needs_utf8) {
        cmd.raw(b" CHARSET UTF-8");
    }
    for key in keys {
        cmd.sp();
        key.encode(cmd)?;
    }
    Ok(())
}

/// The internal date of an appended message: a point in time and the UTC offset it is
/// shown with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InternalDate {
    unix_seconds: i64,
    offset_minutes: i16,
}

impl InternalDate {
    /// A time in UTC (`+0000`).
    pub fn from_unix(unix_seconds: i64) -> InternalDate {
        InternalDate {
            unix_seconds,
            offset_minutes: 0,
        }
    }

    /// A time shown with a UTC offset (east positive), which must be less than a day.
    pub fn with_offset(
        unix_seconds: i64,
        offset_minutes: i16,
    ) -> Result<InternalDate, ArgumentError> {
        if offset_minutes.unsigned_abs() >= 24 * 60 {
            return Err(ArgumentError::InvalidDate);
        }
        Ok(InternalDate {
            unix_seconds,
            offset_minutes,
        })
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub fn unix_seconds(&self) -> i64 {
        self.unix_seconds
    }
}

/// Encodes an internal date, quotes included:
///
/// ```abnf
/// date-time      = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
/// date-day-fixed = (SP DIGIT) / 2DIGIT
/// date-year      = 4DIGIT
/// time           = 2DIGIT ":" 2DIGIT ":" 2DIGIT
/// zone           = ("+" / "-") 4DIGIT
/// ```
pub fn date_time(date: InternalDate) -> Result<String, ArgumentError> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = date
        .unix_seconds
        .checked_add(i64::from(date.offset_minutes) * 60)
        .ok_or(ArgumentError::InvalidDate)?;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return Err(ArgumentError::InvalidDate);
    }
    let sign = if date.offset_minutes < 0 { '-' } else { '+' };
    let offset = date.offset_minutes.unsigned_abs();
    Ok(format!(
        "\"{day:2}-{mon}-{year:04} {:02}:{:02}:{:02} {sign}{:02}{:02}\"",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        offset / 60,
        offset % 60,
        // Invariant: `civil_from_days` returns a month in 1..=12.
        mon = MONTHS[(month - 1) as usize],
    ))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`): `(year, month 1..=12, day 1..=31)`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The SASL PLAIN message (RFC 4616), before base64:
///
/// ```abnf
/// message = [authzid] UTF8NUL authcid UTF8NUL passwd
/// ```
///
/// For a Dovecot master login the authorisation identity is the user and the
/// authentication identity the master user.
pub fn sasl_plain(
    authzid: &[u8],
    authcid: &[u8],
    password: &[u8],
) -> Result<Vec<u8>, ArgumentError> {
    if [authzid, authcid, password].iter().any(|f| f.contains(&0)) {
        return Err(ArgumentError::NulInCredentials);
    }
    let mut out = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    out.extend_from_slice(authzid);
    out.push(0);
    out.extend_from_slice(authcid);
    out.push(0);
    out.extend_from_slice(password);
    Ok(out)
}

// === Responses ===

/// The result of an APPEND, from `OK [APPENDUID uidvalidity uid]` (RFC 4315).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppendUid {
    /// The mailbox's UIDVALIDITY when the message was stored.
    pub uid_validity: u32,
    /// The stored message's UID.
    pub uid: u32,
}

/// Parses the arguments of an `APPENDUID` response code for a single message:
///
/// ```abnf
/// resp-code-apnd = "APPENDUID" SP nz-number SP append-uid
/// append-uid     = uniqueid   ; a uid-set only for MULTIAPPEND
/// ```
pub fn append_uid(args: &[u8]) -> Option<AppendUid> {
    let mut words = args.split(|&b| b == b' ');
    let uid_validity = nz_number(words.next()?)?;
    let uid = nz_number(words.next()?)?;
    if words.next().is_some() {
        return None;
    }
    Some(AppendUid { uid_validity, uid })
}

/// `nz-number = digit-nz *DIGIT` (32-bit).
pub fn nz_number(i: &[u8]) -> Option<u32> {
    if i.first().is_none_or(|&b| !(b'1'..=b'9').contains(&b)) || !i.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(i).ok()?.parse().ok()
}

/// The human-readable text of a status response (`resp-text` without its code):
///
/// ```abnf
/// response-tagged = tag SP resp-cond-state CRLF
/// resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
/// resp-text       = ["[" resp-text-code "]" SP] [text]
/// ```
///
/// Works for tagged and untagged status responses (`* BYE ...`).
pub fn status_text(line: &[u8]) -> &[u8] {
    let mut rest = line;
    for _ in 0..2 {
        rest = match memchr::memchr(b' ', rest) {
            Some(sp) => &rest[sp + 1..],
            None => return &[],
        };
    }
    if rest.first() == Some(&b'[') {
        rest = match memchr::memchr(b']', rest) {
            Some(close) => &rest[close + 1..],
            None => rest,
        };
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    rest
}

/// What the writer reads from one `FETCH` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchData {
    /// The message sequence number.
    pub number: u32,
    /// The `UID` item, if present.
    pub uid: Option<u32>,
    /// The `BODY[]` item (the whole message), if present and not NIL.
    pub body: Option<Bytes>,
}

/// Parses a complete `FETCH` response in wire form (literals inline), keeping `UID` and
/// `BODY[]` and skipping every other item:
///
/// ```abnf
/// response-data = "*" SP message-data CRLF
/// message-data  = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
/// msg-att       = "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic / msg-att-static)) ")"
/// ```
///
/// A literal body is returned as a zero-copy slice of `message`.
pub fn fetch_data(message: &Bytes) -> Result<FetchData, ResponseError> {
    let bad = ResponseError::MalformedFetch;
    let mut p = Cursor {
        input: message,
        pos: 0,
    };
    p.expect(b"* ").ok_or(bad)?;
    let number = nz_number(p.word()).ok_or(bad)?;
    p.expect(b" ").ok_or(bad)?;
    if !p.word().eq_ignore_ascii_case(b"FETCH") {
        return Err(bad);
    }
    p.expect(b" (").ok_or(bad)?;
    let mut fetched = FetchData {
        number,
        uid: None,
        body: None,
    };
    if p.peek() == Some(b')') {
        // An empty list is not allowed by the grammar, but harmless.
        p.pos += 1;
    } else {
        loop {
            let name = p.att_name().ok_or(bad)?;
            p.expect(b" ").ok_or(bad)?;
            let value = p.value(0)?;
            if name.eq_ignore_ascii_case(b"UID") {
                fetched.uid = match value {
                    Value::Atom(r) => Some(nz_number(&message[r]).ok_or(bad)?),
                    _ => return Err(bad),
                };
            } else if name.eq_ignore_ascii_case(b"BODY[]") {
                fetched.body = match value {
                    Value::Literal(r) => Some(message.slice(r)),
                    Value::Quoted(v) => Some(Bytes::from(v)),
                    Value::Atom(r) if message[r.clone()].eq_ignore_ascii_case(b"NIL") => None,
                    _ => return Err(bad),
                };
            }
            match p.next() {
                Some(b' ') => continue,
                Some(b')') => break,
                _ => return Err(bad),
            }
        }
    }
    if p.pos != message.len() {
        return Err(bad);
    }
    Ok(fetched)
}

/// A value in a `FETCH` response, as far as the parser keeps it.
enum Value {
    /// An atom or number (also NIL), as a range of the input.
    Atom(Range<usize>),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    /// A literal's contents, as a range of the input.
    Literal(Range<usize>),
    /// A parenthesised list (skipped).
    List,
}

/// A read position in a complete response.
struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, s: &[u8]) -> Option<()> {
        if self.input[self.pos..].starts_with(s) {
            self.pos += s.len();
            Some(())
        } else {
            None
        }
    }

    /// Bytes up to the next space (or the end).
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| b != b' ') {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// A `msg-att` item name: an atom, optionally with a `[section]` (which may hold
    /// spaces and parentheses, as in `BODY[HEADER.FIELDS (FROM TO)]`) and a `<partial>`.
    fn att_name(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b'[' => {
                    let close = memchr::memchr(b']', &self.input[self.pos..])?;
                    self.pos += close + 1;
                }
                b' ' | b')' | b'(' => break,
                _ => self.pos += 1,
            }
        }
        (self.pos > start).then(|| &self.input[start..self.pos])
    }

    /// Any value: `nil / number / atom / quoted / literal / literal8 / "(" ... ")"`.
    fn value(&mut self, depth: usize) -> Result<Value, ResponseError> {
        let bad = ResponseError::MalformedFetch;
        match self.peek().ok_or(bad)? {
            b'"' => self.quoted().ok_or(bad).map(Value::Quoted),
            b'{' | b'~' => self.literal().ok_or(bad).map(Value::Literal),
            b'(' => {
                if depth >= MAX_NESTING {
                    return Err(ResponseError::TooDeep);
                }
                self.pos += 1;
                if self.peek() == Some(b')') {
                    self.pos += 1;
                    return Ok(Value::List);
                }
                loop {
                    self.value(depth + 1)?;
                    match self.next() {
                        Some(b' ') => continue,
                        Some(b')') => return Ok(Value::List),
                        _ => return Err(bad),
                    }
                }
            }
            _ => {
                // Atoms, numbers, NIL and flags such as `\Seen`.
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|b| !matches!(b, b' ' | b'(' | b')' | b'"' | b'\r' | b'\n'))
                {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(bad);
                }
                Ok(Value::Atom(start..self.pos))
            }
        }
    }

    /// `quoted = DQUOTE *QUOTED-CHAR DQUOTE`, unescaped.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.expect(b"\"")?;
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => match self.next()? {
                    q @ (b'"' | b'\\') => out.push(q),
                    _ => return None,
                },
                b'\r' | b'\n' | 0 => return None,
                b => out.push(b),
            }
        }
    }

    /// `literal = "{" number64 ["+"] "}" CRLF *CHAR8`, or a literal8 (`~{`): the range of
    /// its contents.
    fn literal(&mut self) -> Option<Range<usize>> {
        if self.peek() == Some(b'~') {
            self.pos += 1;
        }
        self.expect(b"{")?;
        let digits_start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let len: usize = std::str::from_utf8(&self.input[digits_start..self.pos])
            .ok()?
            .parse()
            .ok()?;
        if self.peek() == Some(b'+') {
            self.pos += 1;
        }
        self.expect(b"}\r\n")?;
        let start = self.pos;
        let end = start.checked_add(len)?;
        if end > self.input.len() {
            return None;
        }
        self.pos = end;
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(cmd: Command) -> Vec<String> {
        cmd.finish()
            .into_iter()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .collect()
    }

    #[test]
    fn capabilities_are_read_case_insensitively() {
        let caps = Capabilities::parse(b"IMAP4rev1 SASL-IR literal+ AUTH=PLAIN UIDPLUS METADATA");
        assert!(caps.sasl_ir && caps.literal_plus && caps.auth_plain && caps.uidplus);
        assert!(caps.metadata && !caps.login_disabled && !caps.literal_minus);
        assert_eq!(caps.literals(), Literals::NonSync);
        let minus = Capabilities::parse(b"IMAP4rev1 LITERAL- LOGINDISABLED");
        assert_eq!(minus.literals(), Literals::NonSyncUpTo(4096));
        assert!(minus.login_disabled && !minus.sasl_ir);
        assert_eq!(Capabilities::parse(b"").literals(), Literals::Sync);
    }

    #[test]
    fn literal_forms_follow_the_capabilities() {
        assert!(Literals::NonSync.non_sync(u64::MAX));
        assert!(Literals::NonSyncUpTo(4096).non_sync(4096));
        assert!(!Literals::NonSyncUpTo(4096).non_sync(4097));
        assert!(!Literals::Sync.non_sync(0));
    }

    #[test]
    fn command_values_are_atoms_quoted_or_literals() {
        let mut cmd = Command::new("w1", "CREATE", Literals::NonSync);
        cmd.sp().astring(b"COI/Chats");
        assert_eq!(parts(cmd), ["w1 CREATE COI/Chats\r\n"]);

        let mut cmd = Command::new("w2", "CREATE", Literals::NonSync);
        cmd.sp().astring(b"a \"b\"");
        assert_eq!(parts(cmd), ["w2 CREATE \"a \\\"b\\\"\"\r\n"]);

        let mut cmd = Command::new("w3", "CREATE", Literals::NonSync);
        cmd.sp().astring(b"x\r\ny");
        assert_eq!(parts(cmd), ["w3 CREATE {4+}\r\nx\r\ny\r\n"]);
    }

    #[test]
    fn synchronising_literals_split_the_command() {
        let mut cmd = Command::new("w4", "UID SEARCH", Literals::Sync);
        search_program(
            &mut cmd,
            &[SearchKey::Header {
                name: "Subject".into(),
                value: "caf\u{e9}".into(),
            }],
        )
        .unwrap();
        assert_eq!(
            parts(cmd),
            [
                "w4 UID SEARCH CHARSET UTF-8 HEADER Subject {5}\r\n",
                "caf\u{e9}\r\n"
            ]
        );

        let mut cmd = Command::new("w5", "X", Literals::NonSyncUpTo(4));
        cmd.sp()
            .string(b"\xff\xff\xff\xff")
            .sp()
            .string(b"\xff\xff\xff\xff\xff");
        let wire = cmd.finish();
        assert_eq!(wire.len(), 2, "only the 5-byte literal waits");
        assert!(wire[0].ends_with(b"{4+}\r\n\xff\xff\xff\xff {5}\r\n"));
        assert_eq!(wire[1], b"\xff\xff\xff\xff\xff\r\n");
    }

    #[test]
    fn streamed_literal_announcement() {
        let mut cmd = Command::new("w6", "APPEND", Literals::NonSync);
        cmd.sp()
            .astring(b"INBOX")
            .sp()
            .raw(&flag_list(&["$Chat", "\\Seen"]).unwrap())
            .sp();
        let (wire, sync) = cmd.finish_with_literal(12);
        assert_eq!(wire, [b"w6 APPEND INBOX ($Chat \\Seen) {12+}\r\n".to_vec()]);
        assert!(!sync);
        let mut cmd = Command::new("w7", "APPEND", Literals::NonSyncUpTo(4096));
        cmd.sp().astring(b"INBOX").sp();
        let (wire, sync) = cmd.finish_with_literal(5000);
        assert_eq!(wire, [b"w7 APPEND INBOX {5000}\r\n".to_vec()]);
        assert!(sync);
    }

    #[test]
    fn mailbox_names_must_be_in_wire_form() {
        for good in [
            "INBOX",
            "COI/Chats",
            "a b",
            "Odd \"q\"",
            "caf&AOk-",
            "&-",
            "",
        ] {
            let mut cmd = Command::new("t", "SELECT", Literals::NonSync);
            assert!(cmd.sp().mailbox(good).is_ok(), "{good:?}");
        }
        for bad in [
            "caf\u{e9}",
            "a&b",
            "a&AOk",
            "a\0b",
            "a\r\nb",
            "tab\t",
            "&Z!-",
        ] {
            let mut cmd = Command::new("t", "SELECT", Literals::NonSync);
            assert_eq!(
                cmd.sp().mailbox(bad).err(),
                Some(ArgumentError::InvalidMailbox),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn metadata_entry_names() {
        for good in [
            "/private/comment",
            "/private/vendor/coi-proxy/config/enabled",
        ] {
            let mut cmd = Command::new("t", "GETMETADATA", Literals::NonSync);
            assert!(cmd.entry(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "private",
            "/private/",
            "/a//b",
            "/a/*",
            "/a/%",
            "/a b",
            "/caf\u{e9}",
        ] {
            let mut cmd = Command::new("t", "GETMETADATA", Literals::NonSync);
            assert_eq!(
                cmd.entry(bad).err(),
                Some(ArgumentError::InvalidEntry),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uid_sets_are_sorted_and_compressed() {
        assert_eq!(uid_set(&[5]).unwrap(), b"5");
        assert_eq!(uid_set(&[3, 1, 2, 2, 7, 9, 8]).unwrap(), b"1:3,7:9");
        assert_eq!(uid_set(&[1, 3, 5]).unwrap(), b"1,3,5");
        assert_eq!(
            uid_set(&[u32::MAX, u32::MAX - 1]).unwrap(),
            b"4294967294:4294967295"
        );
        assert_eq!(uid_set(&[]), Err(ArgumentError::EmptyUidSet));
        assert_eq!(uid_set(&[0, 1]), Err(ArgumentError::ZeroUid));
    }

    #[test]
    fn flags_must_be_atoms() {
        assert_eq!(flag_list(&[]).unwrap(), b"()");
        assert_eq!(flag_list(&["\\Seen", "$Chat"]).unwrap(), b"(\\Seen $Chat)");
        for bad in [
            "",
            "\\",
            "a b",
            "a)",
            "x]",
            "\\\\Seen",
            "a\r\n",
            "caf\u{e9}",
            "%",
        ] {
            assert_eq!(
                flag_list(&[bad]),
                Err(ArgumentError::InvalidFlag),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn search_programs() {
        let mut cmd = Command::new("s", "UID SEARCH", Literals::NonSync);
        search_program(
            &mut cmd,
            &[
                SearchKey::Header {
                    name: "Message-ID".into(),
                    value: b"<a\"b@x>".to_vec(),
                },
                SearchKey::Not(Box::new(SearchKey::Deleted)),
                SearchKey::Or(
                    Box::new(SearchKey::Keyword("$Chat".into())),
                    Box::new(SearchKey::Uid(vec![1, 2])),
                ),
                SearchKey::Unseen,
            ],
        )
        .unwrap();
        assert_eq!(
            parts(cmd),
            ["s UID SEARCH HEADER Message-ID \"<a\\\"b@x>\" NOT DELETED OR KEYWORD $Chat UID 1:2 UNSEEN\r\n"]
        );
        let mut cmd = Command::new("s", "UID SEARCH", Literals::NonSync);
        let bad_name = SearchKey::Header {
            name: "Subject:".into(),
            value: vec![],
        };
        assert_eq!(
            search_program(&mut cmd, &[bad_name]),
            Err(ArgumentError::InvalidHeaderName)
        );
        assert_eq!(
            search_program(&mut cmd, &[]),
            Err(ArgumentError::EmptySearch)
        );
        let empty_value = SearchKey::Header {
            name: "X".into(),
            value: vec![],
        };
        let mut cmd = Command::new("s", "UID SEARCH", Literals::NonSync);
        search_program(&mut cmd, &[empty_value]).unwrap();
        assert_eq!(parts(cmd), ["s UID SEARCH HEADER X \"\"\r\n"]);
    }

    #[test]
    fn internal_dates() {
        let at = |secs, offset| date_time(InternalDate::with_offset(secs, offset).unwrap());
        assert_eq!(
            date_time(InternalDate::from_unix(0)).unwrap(),
            "\" 1-Jan-1970 00:00:00 +0000\""
        );
        assert_eq!(
            at(1_700_000_000, 60).unwrap(),
            "\"14-Nov-2023 23:13:20 +0100\""
        );
        assert_eq!(
            at(1_700_000_000, -330).unwrap(),
            "\"14-Nov-2023 16:43:20 -0530\""
        );
        // 2000-02-29 (a leap day in a century leap year) and the day before 1970.
        assert_eq!(
            at(951_782_400, 0).unwrap(),
            "\"29-Feb-2000 00:00:00 +0000\""
        );
        assert_eq!(at(-1, 0).unwrap(), "\"31-Dec-1969 23:59:59 +0000\"");
        assert_eq!(
            InternalDate::with_offset(0, 24 * 60),
            Err(ArgumentError::InvalidDate)
        );
        assert_eq!(
            date_time(InternalDate::from_unix(i64::MAX)),
            Err(ArgumentError::InvalidDate)
        );
        assert_eq!(
            date_time(InternalDate::from_unix(-62_135_596_801)),
            Err(ArgumentError::InvalidDate),
            "year 0"
        );
    }

    #[test]
    fn sasl_plain_message() {
        assert_eq!(
            sasl_plain(b"alice", b"proxy-master", b"pw").unwrap(),
            b"alice\0proxy-master\0pw"
        );
        assert_eq!(
            sasl_plain(b"al\0ice", b"m", b"pw"),
            Err(ArgumentError::NulInCredentials)
        );
    }

    #[test]
    fn append_uid_code() {
        assert_eq!(
            append_uid(b"1700000000 42"),
            Some(AppendUid {
                uid_validity: 1_700_000_000,
                uid: 42
            })
        );
        for bad in [
            &b""[..],
            b"1",
            b"0 1",
            b"1 0",
            b"1 2:3",
            b"1 2 3",
            b"x 1",
            b"1  2",
        ] {
            assert_eq!(append_uid(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn status_texts() {
        assert_eq!(
            status_text(b"w1 NO [TRYCREATE] Mailbox doesn't exist: X"),
            b"Mailbox doesn't exist: X"
        );
        assert_eq!(status_text(b"w1 OK Done"), b"Done");
        assert_eq!(
            status_text(b"* BYE Server shutting down."),
            b"Server shutting down."
        );
        assert_eq!(status_text(b"w1 OK"), b"");
        assert_eq!(status_text(b"w1 OK [READ-WRITE]"), b"");
    }

    #[test]
    fn fetch_with_literal_body_and_other_items() {
        let wire = Bytes::from_static(
            b"* 3 FETCH (FLAGS (\\Seen $Chat) UID 17 BODY[] {12}\r\nhello\r\nworld INTERNALDATE \"01-Jan-2024 00:00:00 +0000\")",
        );
        let fetched = fetch_data(&wire).unwrap();
        assert_eq!(fetched.number, 3);
        assert_eq!(fetched.uid, Some(17));
        assert_eq!(fetched.body.as_deref(), Some(&b"hello\r\nworld"[..]));
    }

    #[test]
    fn fetch_items_in_any_order_and_forms() {
        let wire = Bytes::from_static(b"* 1 FETCH (BODY[] \"short\" UID 2)");
        let fetched = fetch_data(&wire).unwrap();
        assert_eq!(
            (fetched.uid, fetched.body.as_deref()),
            (Some(2), Some(&b"short"[..]))
        );
        let wire = Bytes::from_static(
            b"* 1 FETCH (UID 9 BODY[HEADER.FIELDS (FROM TO)] {2}\r\nab MODSEQ (12) BODY[] NIL)",
        );
        let fetched = fetch_data(&wire).unwrap();
        assert_eq!((fetched.uid, fetched.body), (Some(9), None));
        let flags_only = Bytes::from_static(b"* 4 FETCH (UID 5 FLAGS ())");
        assert_eq!(
            fetch_data(&flags_only).unwrap(),
            FetchData {
                number: 4,
                uid: Some(5),
                body: None
            }
        );
    }

    #[test]
    fn malformed_fetches_are_errors() {
        for bad in [
            &b"* 1 FETCH (UID 2"[..],
            b"* 1 FETCH (UID x)",
            b"* 1 FETCH (BODY[] {5}\r\nabc)",
            b"* 1 FETCH (BODY[] {99999999999999999999}\r\n)",
            b"* 1 FETCH (UID 2) trailing",
            b"* 0 FETCH (UID 2)",
            b"* 1 EXISTS",
            b"* 1 FETCH UID 2",
            b"* 1 FETCH (UID 2 FLAGS (\\Seen)",
            b"* 1 FETCH (BODY[] \"a\rb\")",
        ] {
            let wire = Bytes::copy_from_slice(bad);
            assert!(
                fetch_data(&wire).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut deep = b"* 1 FETCH (X ".to_vec();
        deep.extend(std::iter::repeat_n(b'(', 100));
        deep.extend(std::iter::repeat_n(b')', 100));
        deep.push(b')');
        assert_eq!(fetch_data(&Bytes::from(deep)), Err(ResponseError::TooDeep));
    }

    #[test]
    fn every_prefix_of_a_fetch_is_an_error_not_a_panic() {
        let wire: &[u8] = b"* 3 FETCH (FLAGS (\\Seen) UID 17 BODY[] {5}\r\nhello)";
        assert!(fetch_data(&Bytes::from_static(wire)).is_ok());
        for end in 0..wire.len() {
            assert!(fetch_data(&Bytes::copy_from_slice(&wire[..end])).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn fetch_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut wire = b"* 1 FETCH (".to_vec();
            wire.extend_from_slice(&bytes);
            let _ = fetch_data(&Bytes::from(wire));
        }

        #[test]
        fn any_body_round_trips_as_a_literal(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300), uid in 1u32..) {
            let mut wire = format!("* 1 FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len()).into_bytes();
            wire.extend_from_slice(&body);
            wire.push(b')');
            let fetched = fetch_data(&Bytes::from(wire)).unwrap();
            proptest::prop_assert_eq!(fetched.uid, Some(uid));
            proptest::prop_assert_eq!(fetched.body.as_deref(), Some(&body[..]));
        }
    }
}
