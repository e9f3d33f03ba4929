//! Fuzz bodies: one function per fuzz target. Each takes arbitrary bytes, drives one part
//! of the library and asserts its invariants; a panic is a bug found.
//!
//! `fuzz/fuzz_targets/<name>.rs` is a one-line call to the function `<name>` here, and
//! `tests/fuzz_seeds.rs` replays the checked-in seeds (`fuzz/seeds/<name>/`) through the
//! same function on stable, so what CI checks and what the fuzzer explores cannot drift
//! apart. `fuzz/README.md` lists every target with its input format and expectation.
//!
//! Targets whose code needs settings read them from the first bytes of the input (a small
//! header, documented on each function), so the fuzzer explores settings too.

use crate::coi::config::{self as coi, Entry, MessageFilter, UserConfig};
use crate::proto::imap::capability::{self, CapabilityView};
use crate::proto::imap::command::{self, CommandName, Intercepted, MetadataDepth};
use crate::proto::imap::encode::{self, LiteralStyle};
use crate::proto::imap::fragment::{
    self, Fragment, Framer, FramerOptions, LineEnding, LiteralHeader, LiteralMode, LongLines,
    StreamKind,
};
use crate::proto::imap::response::{self, Code, ResponseHead};

// === fragment ===

/// Line limits the fragment targets choose from: small, so that the fuzzer reaches them
/// with short inputs, and above the 24-byte tail the framer keeps back of a streamed line.
const FRAGMENT_MAX_LINES: [usize; 2] = [256, 64];

/// Frames a client command stream (see [`imap_fragment_responses`] for the input format).
pub fn imap_fragment_commands(data: &[u8]) {
    fragment_target(data, StreamKind::Commands);
}

/// Frames a server response stream.
///
/// Input: a header, then the stream.
/// - byte 0, flags: bit 0 streams long lines (`LongLines::Stream`, else `Reject`); bit 1
///   rejects the first synchronising literal (else accepts it; later ones alternate);
///   bit 2 sets `max_line` to 64 (else 256); bits 4–7 give `k`, the number of chunk-size
///   bytes that follow.
/// - bytes 1..=k: chunk sizes (`byte + 1`), used in turn; with `k = 0` the stream is
///   pushed whole.
///
/// The stream is framed three times (chunked as the header says, whole, and one byte per
/// push); all three must see the same lines and literal contents.
pub fn imap_fragment_responses(data: &[u8]) {
    fragment_target(data, StreamKind::Responses);
}

fn fragment_target(data: &[u8], stream: StreamKind) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(flags >> 4).min(rest.len());
    let (sizes, input) = rest.split_at(k);
    let options = FramerOptions {
        max_line: FRAGMENT_MAX_LINES[usize::from((flags >> 2) & 1)],
        long_lines: if flags & 1 == 0 {
            LongLines::Reject
        } else {
            LongLines::Stream
        },
        stream,
    };
    let reject_first = flags & 2 != 0;

    let chunks = crate::proto::split_by_sizes(input, sizes);

    let chunked = FramerRun::run(options, reject_first, &chunks);
    let whole = FramerRun::run(options, reject_first, &[input]);
    assert_eq!(
        chunked, whole,
        "chunked framing differs from whole-input framing"
    );
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let bytewise = FramerRun::run(options, reject_first, &bytes);
    assert_eq!(
        bytewise, whole,
        "one-byte-per-push framing differs from whole-input framing"
    );
}

/// Framer output normalised so that it does not depend on how the input was split: line
/// parts are merged into their line, and a literal's chunks into one.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Line {
        text: Text,
        ending: LineEnding,
        head: bool,
        literal: Option<LiteralHeader>,
    },
    Literal(Text),
    TooLong,
}

/// Bytes that print escaped in assertion messages.
#[derive(PartialEq, Eq)]
struct Text(Vec<u8>);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// One framer, fed and checked fragment by fragment.
struct FramerRun {
    framer: Framer,
    options: FramerOptions,
    /// The next synchronising literal is rejected (else accepted).
    reject_next: bool,
    pushed: usize,
    /// Bytes returned in fragments, line endings included.
    emitted: usize,
    poisoned: bool,
    /// The literal being received: announced length, bytes seen so far.
    literal: Option<(u64, u64)>,
    /// The `head` flag the next line (or first line part) must carry.
    next_head: bool,
    /// Inside a long line returned in parts: the head flag of its first part, its bytes.
    parts: Option<(bool, Vec<u8>)>,
    seen: Vec<Seen>,
}

impl FramerRun {
    fn run(options: FramerOptions, reject_first: bool, chunks: &[&[u8]]) -> Vec<Seen> {
        let mut run = FramerRun {
            framer: Framer::new(options),
            options,
            reject_next: reject_first,
            pushed: 0,
            emitted: 0,
            poisoned: false,
            literal: None,
            next_head: true,
            parts: None,
            seen: Vec::new(),
        };
        for chunk in chunks {
            run.push(chunk);
        }
        if let Some((len, got)) = run.literal {
            assert!(got < len, "a complete literal is never left open");
        }
        run.seen
    }

    fn push(&mut self, chunk: &[u8]) {
        self.framer.push(chunk);
        self.pushed += chunk.len();
        if self.poisoned {
            assert_eq!(self.framer.buffered(), 0, "a poisoned framer keeps nothing");
        } else {
            self.assert_accounting();
            if self.options.long_lines == LongLines::Reject {
                assert!(
                    self.framer.buffered() <= self.options.max_line + chunk.len() + 1,
                    "buffered {} bytes with max_line {} and a {}-byte push",
                    self.framer.buffered(),
                    self.options.max_line,
                    chunk.len()
                );
            }
        }
        self.drain();
        if self.poisoned {
            assert_eq!(self.framer.buffered(), 0, "a poisoned framer keeps nothing");
        } else {
            self.assert_accounting();
            // Between pushes the framer holds at most one incomplete line (and its CR).
            assert!(
                self.framer.buffered() <= self.options.max_line + 1,
                "buffered {} bytes after draining, max_line {}",
                self.framer.buffered(),
                self.options.max_line
            );
        }
    }

    /// Every byte pushed is either returned in a fragment or still buffered.
    fn assert_accounting(&self) {
        assert_eq!(
            self.emitted + self.framer.buffered(),
            self.pushed,
            "bytes returned + buffered must equal bytes pushed"
        );
    }

    fn drain(&mut self) {
        loop {
            if self.framer.awaiting_literal_decision() {
                self.decide();
                continue;
            }
            let Some(fragment) = self.framer.next_fragment() else {
                break;
            };
            assert!(!self.poisoned, "a fragment after LineTooLong: {fragment:?}");
            self.on_fragment(fragment);
            assert_eq!(
                self.framer.in_message(),
                self.poisoned || self.parts.is_some() || !self.next_head,
                "in_message() disagrees with the fragments returned"
            );
        }
        assert!(
            self.framer.next_fragment().is_none(),
            "None is stable without new input"
        );
    }

    fn decide(&mut self) {
        assert_eq!(
            self.options.stream,
            StreamKind::Commands,
            "only commands wait for a decision"
        );
        assert!(
            self.framer.next_fragment().is_none(),
            "nothing is framed before the decision"
        );
        let Some((len, 0)) = self.literal else {
            panic!(
                "a decision is awaited without an announced literal: {:?}",
                self.literal
            );
        };
        if self.reject_next {
            self.framer.reject_literal();
            self.literal = None;
            self.next_head = true;
        } else {
            self.framer.accept_literal();
            if len == 0 {
                self.literal = None;
            }
            self.next_head = false;
        }
        self.reject_next = !self.reject_next;
        assert!(
            !self.framer.awaiting_literal_decision(),
            "the decision was taken"
        );
        assert_eq!(
            self.framer.in_message(),
            !self.next_head,
            "in_message() after the decision"
        );
    }

    fn on_fragment(&mut self, fragment: Fragment) {
        match fragment {
            Fragment::Line {
                line,
                ending,
                head,
                literal,
            } => {
                self.assert_no_open_literal();
                assert!(!line.contains(&b'\n'), "a line never contains LF");
                self.emitted += line.len() + if ending == LineEnding::Crlf { 2 } else { 1 };
                if self.options.long_lines == LongLines::Reject {
                    assert!(
                        line.len() <= self.options.max_line,
                        "line over max_line in Reject mode"
                    );
                }
                if literal.is_some() || self.options.stream == StreamKind::Commands {
                    assert_eq!(
                        literal,
                        fragment::literal_header(&line),
                        "the announced literal is the one at the end of the line"
                    );
                }
                let (text, head) = match self.parts.take() {
                    Some((first_head, mut text)) => {
                        assert!(!head, "the end of a long line is not a head");
                        text.extend_from_slice(&line);
                        (text, first_head)
                    }
                    None => {
                        assert_eq!(head, self.next_head, "head flag of {line:?}");
                        (line.to_vec(), head)
                    }
                };
                self.seen.push(Seen::Line {
                    text: Text(text),
                    ending,
                    head,
                    literal,
                });
                match literal {
                    None => self.next_head = true,
                    Some(lit) => {
                        self.next_head = false;
                        let waits = self.options.stream == StreamKind::Commands
                            && lit.mode == LiteralMode::Sync;
                        assert_eq!(self.framer.awaiting_literal_decision(), waits);
                        if waits || lit.len > 0 {
                            self.literal = Some((lit.len, 0));
                        }
                    }
                }
            }
            Fragment::LinePart { bytes, head } => {
                assert_eq!(
                    self.options.long_lines,
                    LongLines::Stream,
                    "parts only in Stream mode"
                );
                self.assert_no_open_literal();
                assert!(!bytes.is_empty(), "a line part is never empty");
                assert!(!bytes.contains(&b'\n'), "a line part never contains LF");
                self.emitted += bytes.len();
                match &mut self.parts {
                    Some((_, text)) => {
                        assert!(!head, "a later part of a long line is not a head");
                        text.extend_from_slice(&bytes);
                    }
                    None => {
                        assert_eq!(head, self.next_head, "head flag of the first line part");
                        self.parts = Some((head, bytes.to_vec()));
                    }
                }
            }
            Fragment::LiteralData(data) => {
                assert!(!self.framer.awaiting_literal_decision());
                let Some((len, got)) = &mut self.literal else {
                    panic!("literal data outside a literal");
                };
                assert!(!data.is_empty(), "literal data is never empty");
                *got += data.len() as u64;
                assert!(
                    *got <= *len,
                    "literal data beyond the announced {len} bytes"
                );
                if *got == *len {
                    self.literal = None;
                }
                self.emitted += data.len();
                match self.seen.last_mut() {
                    Some(Seen::Literal(acc)) => acc.0.extend_from_slice(&data),
                    _ => self.seen.push(Seen::Literal(Text(data.to_vec()))),
                }
            }
            Fragment::LineTooLong => {
                assert_eq!(
                    self.options.long_lines,
                    LongLines::Reject,
                    "LineTooLong only in Reject mode"
                );
                assert_eq!(self.framer.buffered(), 0, "the poisoned buffer is dropped");
                self.poisoned = true;
                self.parts = None;
                self.seen.push(Seen::TooLong);
            }
        }
    }

    /// A line may follow a literal only once all its announced bytes came.
    fn assert_no_open_literal(&self) {
        if let Some((len, got)) = self.literal {
            panic!("a line after {got} of {len} literal bytes");
        }
    }
}

// === command ===

/// The commands whose arguments [`command::intercepted`] parses.
const INTERCEPTED: [CommandName; 5] = [
    CommandName::GetMetadata,
    CommandName::SetMetadata,
    CommandName::Create,
    CommandName::Delete,
    CommandName::Rename,
];

/// Parses the input as one command line (head, LOGIN, AUTHENTICATE) and as the arguments
/// of every intercepted command, both whole and after its first two words. A parsed
/// intercepted command must re-encode canonically and parse back to the same value.
pub fn imap_command(data: &[u8]) {
    if let Ok(head) = command::command_head(data) {
        assert!(!head.tag.is_empty(), "a tag is never empty");
        assert!(data.starts_with(head.tag), "the tag starts the line");
        assert!(
            !head
                .tag
                .iter()
                .any(|&b| b == b'+' || b == b' ' || is_control(b)),
            "tag {:?} holds a character tags exclude",
            head.tag
        );
        assert!(is_suffix(data, head.args), "args are the end of the line");
        assert!(
            !data.iter().any(|&b| is_control(b) && b != b'\t'),
            "a command head was parsed from a line with control characters"
        );
    }
    if let Some(tag) = command::salvage_tag(data) {
        assert!(!tag.is_empty() && tag.len() <= 64, "salvaged tag {tag:?}");
        // The first word: followed by a space, or the whole line (a lone word is a tag
        // without a command, which Dovecot answers with `word BAD`).
        assert!(data.starts_with(tag) && matches!(data.get(tag.len()), Some(&b' ') | None));
    }
    // The whole input, and what follows `tag NAME ` as a command's arguments.
    let after_name = data.splitn(3, |&b| b == b' ').nth(2);
    for args in [Some(data), after_name].into_iter().flatten() {
        for name in INTERCEPTED {
            if let Ok(parsed) = command::intercepted(name, args) {
                assert_intercepted_round_trip(name, &parsed);
            }
        }
        if let Ok(user) = command::login_userid(args) {
            for style in [LiteralStyle::NonSync, LiteralStyle::Response] {
                let mut wire = Vec::new();
                encode::astring(&mut wire, &user, style);
                wire.extend_from_slice(b" pw");
                assert_eq!(
                    command::login_userid(&wire),
                    Ok(user.clone()),
                    "LOGIN {:?}",
                    escape(&wire)
                );
            }
        }
        if let Ok((mechanism, initial)) = command::authenticate(args) {
            assert!(!mechanism.is_empty() && args.starts_with(mechanism));
            assert!(mechanism.iter().all(|&b| command::is_atom_char(b)));
            if let Some(initial) = initial {
                assert!(!initial.is_empty() && is_suffix(args, initial));
            }
        }
    }
}

fn assert_intercepted_round_trip(name: CommandName, parsed: &Intercepted) {
    for style in [LiteralStyle::NonSync, LiteralStyle::Response] {
        let wire = encode_intercepted(parsed, style);
        match command::intercepted(name, &wire) {
            Ok(again) => assert_eq!(&again, parsed, "re-encoded as {:?}", escape(&wire)),
            Err(e) => panic!(
                "canonical {:?} does not parse ({e}): {:?}",
                parsed,
                escape(&wire)
            ),
        }
    }
}

/// The arguments of an intercepted command in canonical form, as the proxy would send
/// them upstream.
fn encode_intercepted(parsed: &Intercepted, style: LiteralStyle) -> Vec<u8> {
    let mut out = Vec::new();
    match parsed {
        Intercepted::GetMetadata {
            depth,
            maxsize,
            mailbox,
            entries,
        } => {
            let mut options = Vec::new();
            match depth {
                MetadataDepth::Zero => {}
                MetadataDepth::One => options.push("DEPTH 1".to_owned()),
                MetadataDepth::Infinity => options.push("DEPTH infinity".to_owned()),
            }
            if let Some(maxsize) = maxsize {
                options.push(format!("MAXSIZE {maxsize}"));
            }
            if !options.is_empty() {
                out.extend_from_slice(format!("({}) ", options.join(" ")).as_bytes());
            }
            encode::astring(&mut out, mailbox, style);
            out.extend_from_slice(b" (");
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                encode::astring(&mut out, entry, style);
            }
            out.push(b')');
        }
        Intercepted::SetMetadata { mailbox, entries } => {
            encode::astring(&mut out, mailbox, style);
            out.extend_from_slice(b" (");
            encode_entry_values(&mut out, entries, style);
            out.push(b')');
        }
        Intercepted::Create { mailbox } | Intercepted::Delete { mailbox } => {
            encode::astring(&mut out, mailbox, style);
        }
        Intercepted::Rename { from, to } => {
            encode::astring(&mut out, from, style);
            out.push(b' ');
            encode::astring(&mut out, to, style);
        }
    }
    out
}

fn encode_entry_values(
    out: &mut Vec<u8>,
    entries: &[(Vec<u8>, Option<Vec<u8>>)],
    style: LiteralStyle,
) {
    for (i, (entry, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        encode::astring(out, entry, style);
        out.push(b' ');
        encode::nstring(out, value.as_deref(), style);
    }
}

// === response ===

/// Classifies the input as one response line, and parses it as the payload of METADATA,
/// SEARCH and CAPABILITY responses. Every slice returned lies within the line, a response
/// code's span starts at its `[` and ends after its `]`, and a parsed METADATA payload
/// re-encodes canonically to the same value.
pub fn imap_response(data: &[u8]) {
    if let Ok(head) = response::response_head(data) {
        match head {
            ResponseHead::Continuation => assert_eq!(data.first(), Some(&b'+')),
            ResponseHead::UntaggedStatus { code, .. } => {
                assert!(data.starts_with(b"* "), "untagged status without `* `");
                assert_code(data, code);
            }
            ResponseHead::Capability { caps } => {
                assert!(is_suffix(data, caps));
                for atom in response::capability_atoms(caps) {
                    assert!(!atom.is_empty() && !atom.contains(&b' '));
                }
            }
            ResponseHead::Numbered { name, .. } => assert!(is_within(data, name)),
            ResponseHead::Data { name, rest } => {
                assert!(!name.is_empty() && name.iter().all(|&b| command::is_atom_char(b)));
                assert!(is_within(data, name) && is_suffix(data, rest));
                if name.eq_ignore_ascii_case(b"METADATA") {
                    assert_metadata_round_trip(rest);
                }
                if name.eq_ignore_ascii_case(b"SEARCH") {
                    assert_search(rest);
                }
            }
            ResponseHead::Tagged { tag, code, .. } => {
                assert!(!tag.is_empty(), "a tagged response with an empty tag");
                assert!(data.starts_with(tag));
                assert_code(data, code);
            }
        }
    }
    assert_metadata_round_trip(data);
    assert_search(data);
}

fn assert_code(line: &[u8], code: Option<Code<'_>>) {
    let Some(code) = code else { return };
    let (open, end) = code.span;
    assert!(
        open < end && end <= line.len(),
        "span {:?} outside a {}-byte line",
        code.span,
        line.len()
    );
    assert_eq!(line[open], b'[', "a code span starts at `[`");
    assert_eq!(line[end - 1], b']', "a code span ends after `]`");
    let inside = &line[open..end];
    assert!(is_within(inside, code.name) && is_within(inside, code.args));
    assert!(!code.name.contains(&b']') && !code.args.contains(&b']'));
}

fn assert_metadata_round_trip(rest: &[u8]) {
    let Some((mailbox, entries)) = response::metadata_response(rest) else {
        return;
    };
    assert!(!entries.is_empty());
    for style in [LiteralStyle::Response, LiteralStyle::NonSync] {
        let mut wire = Vec::new();
        encode::astring(&mut wire, &mailbox, style);
        wire.push(b' ');
        if entries.iter().all(|(_, v)| v.is_none()) {
            // The unsolicited form: entry names only.
            for (i, (entry, _)) in entries.iter().enumerate() {
                if i > 0 {
                    wire.push(b' ');
                }
                encode::astring(&mut wire, entry, style);
            }
        } else {
            wire.push(b'(');
            encode_entry_values(&mut wire, &entries, style);
            wire.push(b')');
        }
        assert_eq!(
            response::metadata_response(&wire),
            Some((mailbox.clone(), entries.clone())),
            "canonical METADATA {:?}",
            escape(&wire)
        );
    }
}

fn assert_search(rest: &[u8]) {
    if let Some(numbers) = response::search_numbers(rest) {
        let words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty()).count();
        assert!(numbers.len() <= words);
    }
}

// === encode ===

/// Encodes the input as an `astring` and an `nstring`, in both literal styles, and parses
/// it back: same bytes, nothing left over. Status text made from it never holds a CTL.
pub fn imap_encode_roundtrip(data: &[u8]) {
    for style in [LiteralStyle::Response, LiteralStyle::NonSync] {
        let mut wire = Vec::new();
        encode::astring(&mut wire, data, style);
        match command::astring(&wire) {
            Ok((rest, value)) => {
                assert!(
                    rest.is_empty(),
                    "{} bytes left after astring {:?}",
                    rest.len(),
                    escape(&wire)
                );
                assert_eq!(value, data, "astring {:?}", escape(&wire));
            }
            Err(e) => panic!(
                "canonical astring {:?} does not parse: {e:?}",
                escape(&wire)
            ),
        }
        let mut wire = Vec::new();
        encode::nstring(&mut wire, Some(data), style);
        match command::nstring(&wire) {
            Ok((rest, value)) => {
                assert!(
                    rest.is_empty(),
                    "{} bytes left after nstring {:?}",
                    rest.len(),
                    escape(&wire)
                );
                assert_eq!(value.as_deref(), Some(data), "nstring {:?}", escape(&wire));
            }
            Err(e) => panic!(
                "canonical nstring {:?} does not parse: {e:?}",
                escape(&wire)
            ),
        }
    }
    let mut nil = Vec::new();
    encode::nstring(&mut nil, None, LiteralStyle::Response);
    assert_eq!(command::nstring(&nil), Ok((&b""[..], None)));
    if let Ok(text) = std::str::from_utf8(data) {
        let mut out = Vec::new();
        encode::text(&mut out, text);
        assert_eq!(out.len(), data.len());
        assert!(
            !out.iter().any(|&b| is_control(b)),
            "status text keeps a control character"
        );
    }
}

// === capability ===

/// APPENDLIMIT values the capability target chooses from.
const APPEND_LIMITS: [u64; 5] = [0, 1, 1000, 50 * 1024 * 1024, u64::MAX];

/// Filters an upstream capability list.
///
/// Input: byte 0 sets the view (bit 0 `tls_active`, 1 `starttls_offered`, 2
/// `authenticated`, 3 `plaintext_auth_allowed`, bits 4–7 pick the APPENDLIMIT); the rest
/// is the upstream list, split at spaces.
pub fn capability_filter(data: &[u8]) {
    let Some((&flags, list)) = data.split_first() else {
        return;
    };
    let view = CapabilityView {
        tls_active: flags & 1 != 0,
        starttls_offered: flags & 2 != 0,
        authenticated: flags & 4 != 0,
        plaintext_auth_allowed: flags & 8 != 0,
        append_limit: APPEND_LIMITS[usize::from(flags >> 4) % APPEND_LIMITS.len()],
    };
    let upstream: Vec<&[u8]> = response::capability_atoms(list).collect();
    let out = capability::filter(upstream.iter().copied(), &view);
    let shown = || out.join(" ");

    let mut append_limits = 0;
    for cap in &out {
        let upper = cap.to_ascii_uppercase();
        assert!(!cap.is_empty(), "an empty capability in {:?}", shown());
        assert!(
            cap.bytes().all(command::is_atom_char),
            "capability {cap:?} is not an atom: it could break the response line"
        );
        assert!(
            !upper.starts_with("COMPRESS"),
            "COMPRESS advertised: {:?}",
            shown()
        );
        if let Some(mechanism) = upper.strip_prefix("AUTH=") {
            assert!(
                !mechanism.ends_with("-PLUS"),
                "a -PLUS mechanism advertised: {:?}",
                shown()
            );
            assert!(
                !view.authenticated,
                "AUTH= after authentication: {:?}",
                shown()
            );
            assert!(
                view.auth_allowed(),
                "AUTH= where authentication is refused: {:?}",
                shown()
            );
        } else if let Some(limit) = upper.strip_prefix("APPENDLIMIT=") {
            append_limits += 1;
            let limit: u64 = limit.parse().expect("APPENDLIMIT is a number");
            assert!(
                limit <= view.append_limit,
                "APPENDLIMIT above the proxy's own"
            );
        } else if !matches!(upper.as_str(), "STARTTLS" | "LOGINDISABLED" | "COI") {
            assert!(
                upstream.contains(&cap.as_bytes()),
                "{cap:?} was neither passed through nor added by the proxy"
            );
        }
    }
    assert_eq!(append_limits, 1, "exactly one APPENDLIMIT: {:?}", shown());
    let count = |name: &str| out.iter().filter(|c| c.eq_ignore_ascii_case(name)).count();
    assert_eq!(
        count("COI"),
        usize::from(view.authenticated),
        "COI iff authenticated: {:?}",
        shown()
    );
    let starttls = !view.authenticated && view.starttls_offered && !view.tls_active;
    assert_eq!(
        count("STARTTLS"),
        usize::from(starttls),
        "STARTTLS: {:?}",
        shown()
    );
    let disabled = !view.authenticated && !view.auth_allowed();
    assert_eq!(
        count("LOGINDISABLED"),
        usize::from(disabled),
        "LOGINDISABLED: {:?}",
        shown()
    );
}

// === COI config ===

/// Runs the input as a SETMETADATA value for every COI entry, as a stored value, and as a
/// GETMETADATA entry path at every depth.
pub fn coi_config(data: &[u8]) {
    for entry in Entry::ALL {
        match coi::validate_set(entry, Some(data)) {
            Ok(change) => {
                assert_eq!(change.entry, entry);
                assert_ne!(entry, Entry::MailboxRoot, "mailbox-root is read-only");
                assert_eq!(
                    change.value.map(str::as_bytes),
                    Some(data),
                    "a valid value is stored as sent"
                );
            }
            Err(_) => assert!(entry == Entry::MailboxRoot || !is_valid_value(entry, data)),
        }
        assert_eq!(
            coi::validate_set(entry, None).is_ok(),
            entry != Entry::MailboxRoot
        );
    }
    if let Some(filter) = MessageFilter::parse(data) {
        assert_eq!(filter.as_str().as_bytes(), data);
    }
    let stored = UserConfig::from_stored(Some(data), Some(data));
    assert_eq!(stored.enabled, data == b"yes");
    assert_eq!(
        stored.message_filter,
        MessageFilter::parse(data).unwrap_or_default()
    );
    if !stored.enabled {
        assert_eq!(stored.effective_filter(), MessageFilter::None);
    }

    let requested = data.strip_suffix(b"/").unwrap_or(data);
    let exact = coi::selected_by(data, false, false);
    let one = coi::selected_by(data, true, false);
    let infinity = coi::selected_by(data, false, true);
    assert_eq!(
        infinity,
        coi::selected_by(data, true, true),
        "infinity includes depth 1"
    );
    for (smaller, larger) in [(&exact, &one), (&one, &infinity)] {
        assert!(
            smaller.iter().all(|e| larger.contains(e)),
            "a deeper GETMETADATA selects less"
        );
    }
    for entry in &infinity {
        let path = entry.client_path();
        let path = path.as_bytes();
        assert!(
            path.len() >= requested.len()
                && path[..requested.len()].eq_ignore_ascii_case(requested),
            "{entry:?} selected by a path that is not its prefix"
        );
        assert!(path.len() == requested.len() || path[requested.len()] == b'/');
        assert!(coi::is_reserved(path));
    }
    if !exact.is_empty() {
        assert!(coi::is_reserved(data), "an entry path is reserved");
    }
    if let Some(entry) = Entry::from_client_path(data) {
        assert_eq!(exact, vec![entry]);
    }
}

fn is_valid_value(entry: Entry, value: &[u8]) -> bool {
    match entry {
        Entry::Enabled => value == b"yes",
        Entry::MessageFilter => matches!(value, b"none" | b"active" | b"seen"),
        Entry::MailboxRoot => false,
    }
}

// === config ===

/// Loads the input as the YAML configuration: errors only, never a panic.
pub fn config_yaml(data: &[u8]) {
    crate::config::fuzz_load_str(data);
}

// === helpers ===

/// CTL characters (and DEL), which never appear outside a literal.
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// True if `part` is a subslice of `whole` (same memory, not just equal bytes). An empty
/// part always is: parsers may return a static `&[]`.
fn is_within(whole: &[u8], part: &[u8]) -> bool {
    if part.is_empty() {
        return true;
    }
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= start + whole.len()
}

/// True if `part` is the end of `whole` (same memory).
fn is_suffix(whole: &[u8], part: &[u8]) -> bool {
    part.is_empty()
        || is_within(whole, part)
            && part.as_ptr() as usize + part.len() == whole.as_ptr() as usize + whole.len()
}

/// Normalises an envelope address (the path's bytes): never panics, idempotent when Ok.
pub fn coi_address(data: &[u8]) {
    crate::coi::address::fuzz_normalize(data);
}

/// Parses, renders, re-issues and verifies a COI token; secrets are the §6.3 ones.
pub fn coi_token(data: &[u8]) {
    crate::coi::token::fuzz_token(data);
}

/// Scanner + rewriter on an arbitrary message; byte 0 picks the chunk size (see
/// `coi::headers::fuzz_headers`).
pub fn coi_headers(data: &[u8]) {
    crate::coi::headers::fuzz_headers(data);
}

/// Classifies the top-level header block; the body never counts.
pub fn coi_classify(data: &[u8]) {
    crate::coi::classify::fuzz_classify(data);
}

// === smtp ===

/// See `proto::smtp::fuzz::fuzz_smtp_command`.
pub fn smtp_command(data: &[u8]) {
    crate::proto::smtp::fuzz::fuzz_smtp_command(data);
}

/// See `proto::smtp::fuzz::fuzz_smtp_reply`.
pub fn smtp_reply(data: &[u8]) {
    crate::proto::smtp::fuzz::fuzz_smtp_reply(data);
}

/// Input header documented on `proto::smtp::fuzz::fuzz_smtp_data`.
pub fn smtp_data(data: &[u8]) {
    crate::proto::smtp::fuzz::fuzz_smtp_data(data);
}

/// Bytes shown readably in assertion messages.
fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The submitted-message pipeline (see [`crate::coi::submit::fuzz_submit`]).
pub fn coi_submit(data: &[u8]) {
    crate::coi::submit::fuzz_submit(data);
}

/// Contact storage messages (see [`crate::coi::contacts::fuzz_contacts`]).
pub fn coi_contacts(data: &[u8]) {
    crate::coi::contacts::fuzz_contacts(data);
}

/// The SASL identity of a first response (see [`crate::proto::sasl::fuzz_identity`]).
pub fn sasl_identity(data: &[u8]) {
    crate::proto::sasl::fuzz_identity(data);
}

/// Peer-link frames and the stream readers (see
/// [`crate::proto::peer::fuzz::fuzz_peer_frames`]).
pub fn peer_frames(data: &[u8]) {
    crate::proto::peer::fuzz::fuzz_peer_frames(data);
}
