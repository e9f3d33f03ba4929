//! Client commands: the head of every command (tag and name), and the full grammar of the
//! few commands the proxy intercepts (METADATA, mailbox management, LOGIN, AUTHENTICATE).
//!
//! Intercepted commands are parsed from their complete wire form (lines with literals
//! inline, as `{n}\r\n` + bytes), which the session assembles under a size limit.
//! Parsers are named after the ABNF rules of RFC 9051 / RFC 5464 and quote them.

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take, take_while1};
use nom::character::complete::{char, digit1};
use nom::combinator::{map, map_res, opt, value};
use nom::multi::separated_list1;
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

/// What is wrong with a command, as far as the proxy checks it. Every variant is the
/// client's fault and is answered with `BAD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Missing or invalid tag")]
    BadTag,
    #[error("Missing or invalid command name")]
    BadCommandName,
    #[error("Control characters are not allowed outside literals")]
    ControlCharacter,
    #[error("Invalid arguments")]
    BadArguments,
}

/// The commands the proxy treats specially; everything else is [`CommandName::Other`] and
/// relayed as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandName {
    Append,
    Authenticate,
    Capability,
    Close,
    Compress,
    Copy,
    Create,
    Delete,
    Examine,
    Expunge,
    Fetch,
    GetMetadata,
    Idle,
    List,
    Login,
    Logout,
    Move,
    Noop,
    Rename,
    Search,
    Select,
    SetMetadata,
    Starttls,
    Store,
    Unselect,
    Other,
}

impl CommandName {
    fn from_atom(atom: &[u8]) -> Self {
        const NAMES: &[(&str, CommandName)] = &[
            ("APPEND", CommandName::Append),
            ("AUTHENTICATE", CommandName::Authenticate),
            ("CAPABILITY", CommandName::Capability),
            ("CLOSE", CommandName::Close),
            ("COMPRESS", CommandName::Compress),
            ("COPY", CommandName::Copy),
            ("CREATE", CommandName::Create),
            ("DELETE", CommandName::Delete),
            ("EXAMINE", CommandName::Examine),
            ("EXPUNGE", CommandName::Expunge),
            ("FETCH", CommandName::Fetch),
            ("GETMETADATA", CommandName::GetMetadata),
            ("IDLE", CommandName::Idle),
            ("LIST", CommandName::List),
            ("LOGIN", CommandName::Login),
            ("LOGOUT", CommandName::Logout),
            ("MOVE", CommandName::Move),
            ("NOOP", CommandName::Noop),
            ("RENAME", CommandName::Rename),
            ("SEARCH", CommandName::Search),
            ("SELECT", CommandName::Select),
            ("SETMETADATA", CommandName::SetMetadata),
            ("STARTTLS", CommandName::Starttls),
            ("STORE", CommandName::Store),
            ("UNSELECT", CommandName::Unselect),
        ];
        NAMES
            .iter()
            .find(|(name, _)| atom.eq_ignore_ascii_case(name.as_bytes()))
            .map_or(CommandName::Other, |&(_, c)| c)
    }
}

/// The first line of a command: tag, name and where the arguments start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandHead<'a> {
    pub tag: &'a [u8],
    pub name: CommandName,
    /// `UID FETCH`, `UID STORE`, ...: `name` is the command after `UID`.
    pub uid: bool,
    /// Everything after the command name and its space (may be empty).
    pub args: &'a [u8],
}

/// Parses the head of a command line:
///
/// ```abnf
/// command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF
/// tag     = 1*<any ASTRING-CHAR except "+">
/// ```
///
/// The rest of the line is checked only for control characters (CR, NUL and the other
/// CTLs except TAB are never valid outside a literal), so an unknown command can be
/// relayed without being understood.
pub fn command_head(line: &[u8]) -> Result<CommandHead<'_>, CommandError> {
    let (rest, tag) = take_while1::<_, _, ()>(is_tag_char)
        .parse(line)
        .map_err(|_| CommandError::BadTag)?;
    let rest = rest.strip_prefix(b" ").ok_or(CommandError::BadTag)?;
    let (after, name) = atom(rest).map_err(|_| CommandError::BadCommandName)?;
    let (uid, name, after) = if name.eq_ignore_ascii_case(b"UID") {
        let after = after
            .strip_prefix(b" ")
            .ok_or(CommandError::BadCommandName)?;
        let (after, sub) = atom(after).map_err(|_| CommandError::BadCommandName)?;
        (true, sub, after)
    } else {
        (false, name, after)
    };
    let args = match after {
        [] => after,
        [b' ', args @ ..] => args,
        _ => return Err(CommandError::BadCommandName),
    };
    if args.iter().any(|&b| is_forbidden_control(b)) {
        return Err(CommandError::ControlCharacter);
    }
    Ok(CommandHead {
        tag,
        name: CommandName::from_atom(name),
        uid,
        args,
    })
}

/// Extracts whatever looks like a tag from a line that failed to parse, so that a `BAD`
/// can be tagged; `None` means the reply must be untagged.
pub fn salvage_tag(line: &[u8]) -> Option<&[u8]> {
    // A lone word is a tag without a command; Dovecot tags its BAD with it too.
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let candidate = &line[..end];
    (!candidate.is_empty() && candidate.len() <= 64 && candidate.iter().all(|&b| is_tag_char(b)))
        .then_some(candidate)
}

/// CTLs other than TAB, which are never valid outside a literal.
pub fn is_forbidden_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `ATOM-CHAR = <any CHAR except atom-specials>`;
/// `atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials`
pub fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// `ASTRING-CHAR = ATOM-CHAR / resp-specials`
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// `atom = 1*ATOM-CHAR`
pub fn atom(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_atom_char).parse(i)
}

/// `number = 1*DIGIT` (unsigned 32-bit) — here up to 64 bits for sizes.
fn number64(i: &[u8]) -> IResult<&[u8], u64> {
    map_res(digit1, |d: &[u8]| {
        std::str::from_utf8(d)
            .map_err(|_| ())
            .and_then(|s| s.parse::<u64>().map_err(|_| ()))
    })
    .parse(i)
}

/// ```abnf
/// quoted      = DQUOTE *QUOTED-CHAR DQUOTE
/// QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials / UTF8-2 / UTF8-3 / UTF8-4
/// ```
/// NUL, CR and LF are never valid here (CVE-2019-11500 class).
pub fn quoted(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (mut i, _) = char('"').parse(i)?;
    let mut out = Vec::new();
    loop {
        match i {
            [b'"', rest @ ..] => return Ok((rest, out)),
            [b'\\', q @ (b'"' | b'\\'), rest @ ..] => {
                out.push(*q);
                i = rest;
            }
            [b, rest @ ..] if *b != b'\\' && *b != 0 && *b != b'\r' && *b != b'\n' => {
                out.push(*b);
                i = rest;
            }
            _ => {
                return Err(nom::Err::Error(nom::error::Error::new(
                    i,
                    nom::error::ErrorKind::Char,
                )))
            }
        }
    }
}

/// ```abnf
/// literal  = "{" number64 ["+"] "}" CRLF *CHAR8
/// literal8 = "~{" number64 ["+"] "}" CRLF *OCTET
/// ```
pub fn literal(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (i, _) = opt(char('~')).parse(i)?;
    let (i, len) = delimited(
        char('{'),
        number64,
        (opt(char('+')), char('}'), tag("\r\n")),
    )
    .parse(i)?;
    let len = usize::try_from(len)
        .map_err(|_| nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::TooLarge)))?;
    let (i, data) = take(len).parse(i)?;
    Ok((i, data.to_vec()))
}

/// `string = quoted / literal`
pub fn string(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((quoted, literal)).parse(i)
}

/// `astring = 1*ASTRING-CHAR / string`
pub fn astring(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((map(take_while1(is_astring_char), <[u8]>::to_vec), string)).parse(i)
}

/// `nstring = string / nil`
pub fn nstring(i: &[u8]) -> IResult<&[u8], Option<Vec<u8>>> {
    alt((value(None, tag_no_case("NIL")), map(string, Some))).parse(i)
}

/// `mailbox = "INBOX" / astring` — INBOX is case-insensitive and returned upper-case.
pub fn mailbox(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    map(astring, |m| {
        if m.eq_ignore_ascii_case(b"INBOX") {
            b"INBOX".to_vec()
        } else {
            m
        }
    })
    .parse(i)
}

/// A complete intercepted command, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intercepted {
    /// `GETMETADATA [options] mailbox entries` (RFC 5464 §4.2).
    GetMetadata {
        depth: MetadataDepth,
        maxsize: Option<u64>,
        mailbox: Vec<u8>,
        entries: Vec<Vec<u8>>,
    },
    /// `SETMETADATA mailbox (entry value ...)` (RFC 5464 §4.3); `None` is NIL.
    SetMetadata {
        mailbox: Vec<u8>,
        entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    Create {
        mailbox: Vec<u8>,
    },
    Delete {
        mailbox: Vec<u8>,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataDepth {
    Zero,
    One,
    Infinity,
}

/// Parses the arguments of an intercepted command (the bytes after the command name and
/// its space, literals inline). The whole input must be consumed.
pub fn intercepted(name: CommandName, args: &[u8]) -> Result<Intercepted, CommandError> {
    let parsed = match name {
        CommandName::GetMetadata => getmetadata(args),
        CommandName::SetMetadata => setmetadata(args),
        CommandName::Create => map((mailbox, trailing_params), |(mailbox, ())| {
            Intercepted::Create { mailbox }
        })
        .parse(args),
        CommandName::Delete => map(mailbox, |mailbox| Intercepted::Delete { mailbox }).parse(args),
        CommandName::Rename => map(
            (mailbox, char(' '), mailbox, trailing_params),
            |(from, _, to, ())| Intercepted::Rename { from, to },
        )
        .parse(args),
        _ => return Err(CommandError::BadArguments),
    };
    match parsed {
        Ok(([], command)) => Ok(command),
        _ => Err(CommandError::BadArguments),
    }
}

/// Optional extension parameters after the arguments, e.g. RFC 6154
/// `create-param = "USE" SP "(" ... ")"`: a parenthesised list on one line, passed on
/// unexamined but never containing a literal or a control character.
fn trailing_params(i: &[u8]) -> IResult<&[u8], ()> {
    let acceptable = i.is_empty()
        || (i.starts_with(b" (")
            && i.ends_with(b")")
            && !i.iter().any(|&b| b == b'{' || is_forbidden_control(b)));
    if acceptable {
        Ok((&i[i.len()..], ()))
    } else {
        Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Verify,
        )))
    }
}

/// ```abnf
/// getmetadata = "GETMETADATA" [SP getmetadata-options] SP mailbox SP getmetadata-entries
/// getmetadata-options = "(" getmetadata-option *(SP getmetadata-option) ")"
/// getmetadata-option  = maxsize-opt / scope-opt
/// maxsize-opt = "MAXSIZE" SP number
/// scope-opt   = "DEPTH" SP ("0" / "1" / "infinity")
/// getmetadata-entries = entry / "(" entry *(SP entry) ")"
/// ```
fn getmetadata(i: &[u8]) -> IResult<&[u8], Intercepted> {
    #[derive(Clone, Copy)]
    enum Opt {
        Depth(MetadataDepth),
        MaxSize(u64),
    }
    let depth = alt((
        value(MetadataDepth::Zero, char('0')),
        value(MetadataDepth::One, char('1')),
        value(MetadataDepth::Infinity, tag_no_case("infinity")),
    ));
    let option = alt((
        map(preceded(tag_no_case("DEPTH "), depth), Opt::Depth),
        map(preceded(tag_no_case("MAXSIZE "), number64), Opt::MaxSize),
    ));
    let (i, options) = opt((
        delimited(char('('), separated_list1(char(' '), option), char(')')),
        char(' '),
    ))
    .parse(i)?;
    let (i, mailbox) = mailbox(i)?;
    let (i, _) = char(' ').parse(i)?;
    let (i, entries) = alt((
        delimited(char('('), separated_list1(char(' '), astring), char(')')),
        map(astring, |e| vec![e]),
    ))
    .parse(i)?;
    let mut depth = MetadataDepth::Zero;
    let mut maxsize = None;
    for option in options.map(|(o, _)| o).unwrap_or_default() {
        match option {
            Opt::Depth(d) => depth = d,
            Opt::MaxSize(m) => maxsize = Some(m),
        }
    }
    Ok((
        i,
        Intercepted::GetMetadata {
            depth,
            maxsize,
            mailbox,
            entries,
        },
    ))
}

/// ```abnf
/// setmetadata = "SETMETADATA" SP mailbox SP entry-values
/// entry-values = "(" entry-value *(SP entry-value) ")"
/// entry-value  = entry SP value
/// value        = nstring / literal8
/// ```
fn setmetadata(i: &[u8]) -> IResult<&[u8], Intercepted> {
    let entry_value = map((astring, char(' '), nstring), |(e, _, v)| (e, v));
    let (i, (mailbox, _, entries)) = (
        mailbox,
        char(' '),
        delimited(
            char('('),
            separated_list1(char(' '), entry_value),
            char(')'),
        ),
    )
        .parse(i)?;
    Ok((i, Intercepted::SetMetadata { mailbox, entries }))
}

/// `login = "LOGIN" SP userid SP password` — returns the user id; the password is not kept.
pub fn login_userid(args: &[u8]) -> Result<Vec<u8>, CommandError> {
    match (astring, char(' '), astring).parse(args) {
        Ok(([], (user, _, _password))) => Ok(user),
        _ => Err(CommandError::BadArguments),
    }
}

/// `authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]`
pub fn authenticate(args: &[u8]) -> Result<(&[u8], Option<&[u8]>), CommandError> {
    let parsed: IResult<&[u8], _> = (
        atom,
        opt(preceded(
            char(' '),
            take_while1(|b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='),
        )),
    )
        .parse(args);
    match parsed {
        Ok(([], (mechanism, initial))) => Ok((mechanism, initial)),
        _ => Err(CommandError::BadArguments),
    }
}

/// The sequence set a STORE or FETCH applies to (its first argument).
pub fn sequence_set(args: &[u8]) -> Option<&[u8]> {
    let set = args.split(|&b| b == b' ').next()?;
    let valid = !set.is_empty()
        && set
            .iter()
            .all(|&b| b.is_ascii_digit() || b":,*$".contains(&b));
    valid.then_some(set)
}

/// Whether `STORE args` adds `\Seen`:
///
/// ```abnf
/// store          = "STORE" SP sequence-set [SP store-modifiers] SP store-att-flags
/// store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
/// ```
pub fn store_adds_seen(args: &[u8]) -> bool {
    let Some(set) = sequence_set(args) else {
        return false;
    };
    let mut rest = &args[set.len()..];
    rest = rest.strip_prefix(b" ").unwrap_or(rest);
    if rest.first() == Some(&b'(') {
        // store-modifiers, e.g. (UNCHANGEDSINCE 12)
        let Some(close) = memchr::memchr(b')', rest) else {
            return false;
        };
        rest = rest[close + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&rest[close + 1..]);
    }
    let Some(space) = memchr::memchr(b' ', rest) else {
        return false;
    };
    let (item, flags) = (&rest[..space], &rest[space + 1..]);
    let item = item.to_ascii_uppercase();
    let adds = matches!(
        item.as_slice(),
        b"+FLAGS" | b"+FLAGS.SILENT" | b"FLAGS" | b"FLAGS.SILENT"
    );
    adds && flags
        .split(|&b| b == b' ' || b == b'(' || b == b')')
        .any(|flag| flag.eq_ignore_ascii_case(b"\\Seen"))
}

/// Whether `FETCH args` sets `\Seen` implicitly: a non-PEEK `BODY[...]`, `BINARY[...]`,
/// `RFC822` or `RFC822.TEXT` (RFC 9051 §6.4.5).
pub fn fetch_sets_seen(args: &[u8]) -> bool {
    let Some(set) = sequence_set(args) else {
        return false;
    };
    let items = args[set.len()..].to_ascii_uppercase();
    let contains = |needle: &[u8]| items.windows(needle.len()).any(|w| w == needle);
    contains(b"BODY[")
        || contains(b"BINARY[")
        || items
            .split(|&b| b == b' ' || b == b'(' || b == b')')
            .any(|word| word == b"RFC822" || word == b"RFC822.TEXT")
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
