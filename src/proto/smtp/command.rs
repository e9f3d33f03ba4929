//! Client commands (RFC 5321 §4.1 and the extensions the proxy handles): parsed from a
//! complete line (as returned by [`super::line::LineFramer`], without CRLF) and encoded
//! canonically for the upstream.
//!
//! Parsers are named after the ABNF rules they implement and quote them. The proxy never
//! forwards a client's bytes: it parses each command and writes its own canonical form
//! ([`Command::encode`]). That is what makes the tolerance below safe, and why strictness
//! is kept for what could change meaning (line endings, control characters, paths).
//!
//! # Strictness
//!
//! - Control characters (NUL, CR, LF, TAB, DEL ...) anywhere in a command line are an
//!   error (SECURITY-CASES case 5), and so is a line that is not UTF-8.
//! - Verbs and parameter keywords are case-insensitive.
//! - Where the ABNF has one SP, one or more are accepted, and trailing spaces are
//!   ignored (Postfix tolerates both; clients send `MAIL FROM: <a@b>`). Canonical output
//!   has one SP and none trailing.
//! - Paths must have angle brackets (Postfix without `strict_rfc821_envelopes` also takes
//!   a bare address, but submission clients all send brackets). Source routes are
//!   accepted and dropped (RFC 5321 §4.1.1.3 / Appendix C).
//! - Domains are LDH labels (or U-labels for SMTPUTF8) of at most 63 octets, 255 in
//!   all; address literals are validated. The EHLO/HELO argument is only required to be
//!   one word without control characters: Postfix accepts any, and Windows hosts send
//!   names with underscores.
//! - Duplicate known parameters are an error; unknown parameters are returned in
//!   `other` for the session to refuse with 555 (RFC 5321 §4.1.1.11).
//! - UTF-8 in paths and parameter values is accepted here; whether SMTPUTF8 was
//!   requested ([`MailParameters::smtputf8`], [`Path::is_ascii`]) is the session's check.

use std::fmt;

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{char, digit1};
use nom::combinator::{eof, map, opt, recognize, value, verify};
use nom::multi::{many0, separated_list1};
use nom::sequence::{delimited, preceded, terminated};
use nom::{IResult, Parser};

use super::reply::Reply;

/// Longest domain in octets (RFC 1035 §2.3.4; RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;

/// Longest domain label in octets (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// Longest ENVID value, decoded (RFC 3461 §4.4: 100 characters).
pub const MAX_ENVID: usize = 100;

/// Longest SASL mechanism name (RFC 4422 §3.1: 1*20 characters).
pub const MAX_MECHANISM: usize = 20;

/// A parsed client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4); the mechanism is upper-case.
    Auth {
        mechanism: String,
        initial_response: Option<SaslResponse>,
    },
    /// `BDAT chunk-size [LAST]` (RFC 3030 §2). The chunk's bytes follow the line.
    Bdat {
        size: u64,
        last: bool,
    },
    Data,
    /// `EHLO name`: the name as sent (a domain, an address literal, or what Postfix
    /// tolerates).
    Ehlo(String),
    /// `EXPN list`.
    Expn(String),
    Helo(String),
    /// `LHLO name` (RFC 2033 §4.1): LMTP's EHLO.
    Lhlo(String),
    /// `HELP [topic]`.
    Help(Option<String>),
    Mail {
        from: Path,
        params: MailParameters,
    },
    /// `NOOP [string]`; the argument is ignored (RFC 5321 §4.1.1.9).
    Noop,
    Quit,
    Rcpt {
        to: Path,
        params: RcptParameters,
    },
    Rset,
    Starttls,
    /// Any other verb, as sent. The session answers 500 or 502.
    Unknown(String),
    /// `VRFY string`.
    Vrfy(String),
    /// Postfix `XCLIENT attribute=value ...`: names upper-case, values xtext-decoded.
    /// The proxy sends it upstream; from a client it is refused.
    Xclient(Vec<(String, String)>),
}

/// A reverse-path or forward-path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `<>`: the null reverse-path (bounces); only in MAIL.
    Null,
    /// `<Postmaster>` without a domain; only in RCPT (RFC 5321 §4.1.1.3).
    Postmaster,
    Mailbox(Mailbox),
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part, unquoted: quotes and backslash escapes are removed, so
    /// `"a\"b"@x` has the local part `a"b`. Case is kept (RFC 5321 §2.4).
    pub local_part: String,
    pub domain: Domain,
}

/// The part after `@`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A domain as sent (case kept; U-labels allowed with SMTPUTF8).
    Name(String),
    /// An address literal without its brackets: `1.2.3.4`, `IPv6:...` or `tag:content`.
    Literal(String),
}

/// The parameters of MAIL FROM (RFC 5321 §4.1.1.2 and extensions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParameters {
    /// `SIZE=` (RFC 1870): the declared message size.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext-decoded: 1 to 100 printable ASCII characters.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 §5), xtext-decoded, not empty: a mailbox or `<>`.
    pub auth: Option<String>,
    /// Everything else, in order.
    pub other: Vec<EsmtpParam>,
}

/// The parameters of RCPT TO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParameters {
    /// `NOTIFY=` (RFC 3461 §4.1).
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461 §4.2).
    pub orcpt: Option<Orcpt>,
    /// Everything else, in order.
    pub other: Vec<EsmtpParam>,
}

/// `BODY=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// `RET=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// `NOTIFY=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Never,
    /// At least one of the three is true.
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// `ORCPT=addr-type;xtext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orcpt {
    /// `rfc822`, `utf-8`, ... as sent.
    pub addr_type: String,
    /// The original recipient, xtext-decoded.
    pub address: String,
}

/// An extension parameter the parser does not interpret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EsmtpParam {
    /// Upper-case.
    pub keyword: String,
    pub value: Option<String>,
}

/// A SASL response as sent: base64 text, or `=` for an empty response (RFC 4954 §4).
/// A credential: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslResponse(String);

impl SaslResponse {
    /// The response as sent (base64 or `=`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `=`, the empty response.
    pub fn is_empty_response(&self) -> bool {
        self.0 == "="
    }
}

impl fmt::Debug for SaslResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaslResponse(<redacted>)")
    }
}

/// A client line during a SASL exchange, after a 334 challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslLine {
    /// `*`: the client cancels (answered with 501).
    Cancel,
    Response(SaslResponse),
}

/// What is wrong with a command line. Every variant is the client's fault; `syntax`
/// names the expected form for the 501 reply (`"MAIL FROM:<address> [parameters]"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No verb: an empty line or a leading space (500).
    #[error("no command verb")]
    BadVerb,
    /// NUL or another control character (501; SECURITY-CASES case 5).
    #[error("control character in command, syntax: {syntax}")]
    ControlCharacter { syntax: &'static str },
    /// A known parameter given twice (501).
    #[error("duplicate parameter, syntax: {syntax}")]
    DuplicateParameter { syntax: &'static str },
    /// The line is not UTF-8 (501).
    #[error("invalid UTF-8 in command, syntax: {syntax}")]
    InvalidUtf8 { syntax: &'static str },
    /// A number does not fit in 64 bits (501). After a BDAT with this error the chunk
    /// length is unknown: the session must close the connection.
    #[error("number too large, syntax: {syntax}")]
    NumberTooLarge { syntax: &'static str },
    /// The arguments do not match the syntax (501).
    #[error("syntax: {syntax}")]
    Syntax { syntax: &'static str },
}

impl CommandError {
    /// The expected syntax, for the reply text.
    pub fn syntax(&self) -> Option<&'static str> {
        match *self {
            CommandError::BadVerb => None,
            CommandError::ControlCharacter { syntax }
            | CommandError::DuplicateParameter { syntax }
            | CommandError::InvalidUtf8 { syntax }
            | CommandError::NumberTooLarge { syntax }
            | CommandError::Syntax { syntax } => Some(syntax),
        }
    }

    /// The reply to send (RFC 5321 §4.2.2 codes, RFC 3463 enhanced codes), worded as
    /// Postfix words it.
    pub fn reply(&self) -> Reply {
        match self.syntax() {
            None => Reply::new(500, Some((5, 5, 2)), "Error: bad syntax"),
            Some(syntax) => Reply::new(501, Some((5, 5, 4)), format!("Syntax: {syntax}")),
        }
    }
}

/// A command that cannot be written as SMTP: a field holds what no syntax can carry
/// (a control character, a space in a host name, an invalid domain, ...). Only commands
/// the proxy builds itself can fail; everything [`command`] returns encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} cannot be written in an SMTP command")]
pub struct EncodeError {
    pub field: &'static str,
}

/// The verbs the parser knows, and the syntax named in their errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Auth,
    Bdat,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    Starttls,
    Unknown,
    Vrfy,
    Xclient,
}

impl Verb {
    const ALL: [(&'static str, Verb); 16] = [
        ("AUTH", Verb::Auth),
        ("BDAT", Verb::Bdat),
        ("DATA", Verb::Data),
        ("EHLO", Verb::Ehlo),
        ("EXPN", Verb::Expn),
        ("HELO", Verb::Helo),
        ("HELP", Verb::Help),
        ("LHLO", Verb::Lhlo),
        ("MAIL", Verb::Mail),
        ("NOOP", Verb::Noop),
        ("QUIT", Verb::Quit),
        ("RCPT", Verb::Rcpt),
        ("RSET", Verb::Rset),
        ("STARTTLS", Verb::Starttls),
        ("VRFY", Verb::Vrfy),
        ("XCLIENT", Verb::Xclient),
    ];

    fn from_word(word: &[u8]) -> Verb {
        Self::ALL
            .iter()
            .find(|(name, _)| word.eq_ignore_ascii_case(name.as_bytes()))
            .map_or(Verb::Unknown, |&(_, verb)| verb)
    }

    fn syntax(self) -> &'static str {
        match self {
            Verb::Auth => "AUTH mechanism [initial-response]",
            Verb::Bdat => "BDAT chunk-size [LAST]",
            Verb::Data => "DATA",
            Verb::Ehlo => "EHLO hostname",
            Verb::Expn => "EXPN mailing-list",
            Verb::Helo => "HELO hostname",
            Verb::Help => "HELP [topic]",
            Verb::Lhlo => "LHLO hostname",
            Verb::Mail => "MAIL FROM:<address> [parameters]",
            Verb::Noop => "NOOP [string]",
            Verb::Quit => "QUIT",
            Verb::Rcpt => "RCPT TO:<address> [parameters]",
            Verb::Rset => "RSET",
            Verb::Starttls => "STARTTLS",
            Verb::Unknown => "command [arguments]",
            Verb::Vrfy => "VRFY address",
            Verb::Xclient => "XCLIENT attribute=value ...",
        }
    }
}

/// Parses one command line (without its CRLF).
///
/// ```abnf
/// command = verb [ SP arguments ] CRLF    ; verb case-insensitive
/// ```
pub fn command(line: &[u8]) -> Result<Command, CommandError> {
    // The verb ends at SP, or at a control character so that the error names its syntax.
    let end = line
        .iter()
        .position(|&b| b == b' ' || is_control(b))
        .unwrap_or(line.len());
    let word = &line[..end];
    if word.is_empty() {
        return Err(CommandError::BadVerb);
    }
    let verb = Verb::from_word(word);
    let syntax = verb.syntax();
    if line.iter().any(|&b| is_control(b)) {
        return Err(CommandError::ControlCharacter { syntax });
    }
    let Ok(line_text) = std::str::from_utf8(line) else {
        return Err(CommandError::InvalidUtf8 { syntax });
    };
    let args = &line[end..];
    let bad = CommandError::Syntax { syntax };
    match verb {
        Verb::Auth => arguments(auth, args).ok_or(bad),
        Verb::Bdat => {
            let (digits, last) = arguments(bdat, args).ok_or(bad)?;
            let size = text(digits)
                .parse()
                .map_err(|_| CommandError::NumberTooLarge { syntax })?;
            Ok(Command::Bdat { size, last })
        }
        Verb::Data => arguments(value(Command::Data, no_arguments), args).ok_or(bad),
        Verb::Ehlo => arguments(map(preceded(sp, helo_name), Command::Ehlo), args).ok_or(bad),
        Verb::Expn => arguments(map(preceded(sp, string_argument), Command::Expn), args).ok_or(bad),
        Verb::Helo => arguments(map(preceded(sp, helo_name), Command::Helo), args).ok_or(bad),
        Verb::Lhlo => arguments(map(preceded(sp, helo_name), Command::Lhlo), args).ok_or(bad),
        Verb::Help => {
            arguments(map(opt(preceded(sp, string_argument)), Command::Help), args).ok_or(bad)
        }
        Verb::Mail => {
            let (from, params) = arguments(mail, args).ok_or(bad)?;
            let params = mail_parameter_values(params, syntax)?;
            Ok(Command::Mail { from, params })
        }
        Verb::Noop => arguments(
            value(Command::Noop, opt(preceded(sp, string_argument))),
            args,
        )
        .ok_or(bad),
        Verb::Quit => arguments(value(Command::Quit, no_arguments), args).ok_or(bad),
        Verb::Rcpt => {
            let (to, params) = arguments(rcpt, args).ok_or(bad)?;
            let params = rcpt_parameter_values(params, syntax)?;
            Ok(Command::Rcpt { to, params })
        }
        Verb::Rset => arguments(value(Command::Rset, no_arguments), args).ok_or(bad),
        Verb::Starttls => arguments(value(Command::Starttls, no_arguments), args).ok_or(bad),
        Verb::Unknown => Ok(Command::Unknown(line_text[..end].to_owned())),
        Verb::Vrfy => arguments(map(preceded(sp, string_argument), Command::Vrfy), args).ok_or(bad),
        Verb::Xclient => arguments(xclient, args).ok_or(bad),
    }
}

/// Parses a client line of a SASL exchange (RFC 4954 §4):
///
/// ```abnf
/// client-response = base64 / "*"    ; "=" is not valid here, an empty line is
/// ```
///
/// An empty line is the empty response and is returned as `=`.
pub fn sasl_line(line: &[u8]) -> Result<SaslLine, CommandError> {
    const SYNTAX: &str = "base64 response or *";
    match line {
        b"*" => Ok(SaslLine::Cancel),
        b"" => Ok(SaslLine::Response(SaslResponse("=".to_owned()))),
        _ if is_base64(line) => Ok(SaslLine::Response(SaslResponse(text(line)))),
        _ if line.iter().any(|&b| is_control(b)) => {
            Err(CommandError::ControlCharacter { syntax: SYNTAX })
        }
        _ => Err(CommandError::Syntax { syntax: SYNTAX }),
    }
}

impl Command {
    /// Appends the canonical command line, CRLF included. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut line = Vec::with_capacity(64);
        match self {
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                let valid = !mechanism.is_empty()
                    && mechanism.len() <= MAX_MECHANISM
                    && mechanism.bytes().all(is_mech_char);
                check(valid, "AUTH mechanism")?;
                line.extend_from_slice(b"AUTH ");
                line.extend_from_slice(mechanism.as_bytes());
                if let Some(response) = initial_response {
                    let valid = response.is_empty_response() || is_base64(response.0.as_bytes());
                    check(valid, "AUTH initial response")?;
                    line.push(b' ');
                    line.extend_from_slice(response.0.as_bytes());
                }
            }
            Command::Bdat { size, last } => {
                line.extend_from_slice(format!("BDAT {size}").as_bytes());
                if *last {
                    line.extend_from_slice(b" LAST");
                }
            }
            Command::Data => line.extend_from_slice(b"DATA"),
            Command::Ehlo(name) | Command::Helo(name) | Command::Lhlo(name) => {
                let verb: &[u8] = match self {
                    Command::Ehlo(_) => b"EHLO ",
                    Command::Helo(_) => b"HELO ",
                    _ => b"LHLO ",
                };
                check(is_helo_name(name.as_bytes()), "EHLO/HELO/LHLO name")?;
                line.extend_from_slice(verb);
                line.extend_from_slice(name.as_bytes());
            }
            Command::Expn(arg) | Command::Vrfy(arg) => {
                let verb: &[u8] = if matches!(self, Command::Expn(_)) {
                    b"EXPN "
                } else {
                    b"VRFY "
                };
                check(is_string_argument(arg), "VRFY/EXPN argument")?;
                line.extend_from_slice(verb);
                line.extend_from_slice(arg.as_bytes());
            }
            Command::Help(topic) => {
                line.extend_from_slice(b"HELP");
                if let Some(topic) = topic {
                    check(is_string_argument(topic), "HELP topic")?;
                    line.push(b' ');
                    line.extend_from_slice(topic.as_bytes());
                }
            }
            Command::Mail { from, params } => {
                check(!matches!(from, Path::Postmaster), "MAIL reverse-path")?;
                line.extend_from_slice(b"MAIL FROM:");
                encode_path(from, &mut line)?;
                encode_mail_parameters(params, &mut line)?;
            }
            Command::Noop => line.extend_from_slice(b"NOOP"),
            Command::Quit => line.extend_from_slice(b"QUIT"),
            Command::Rcpt { to, params } => {
                check(!matches!(to, Path::Null), "RCPT forward-path")?;
                line.extend_from_slice(b"RCPT TO:");
                encode_path(to, &mut line)?;
                encode_rcpt_parameters(params, &mut line)?;
            }
            Command::Rset => line.extend_from_slice(b"RSET"),
            Command::Starttls => line.extend_from_slice(b"STARTTLS"),
            Command::Unknown(verb) => {
                let valid = !verb.is_empty() && verb.bytes().all(|b| b > b' ' && b != 0x7f);
                check(valid, "verb")?;
                line.extend_from_slice(verb.as_bytes());
            }
            Command::Xclient(attributes) => {
                check(!attributes.is_empty(), "XCLIENT attributes")?;
                line.extend_from_slice(b"XCLIENT");
                for (name, value) in attributes {
                    check(is_keyword(name.as_bytes()), "XCLIENT attribute name")?;
                    line.push(b' ');
                    line.extend_from_slice(name.as_bytes());
                    line.push(b'=');
                    xtext_encode(value.as_bytes(), &mut line);
                }
            }
        }
        line.extend_from_slice(b"\r\n");
        out.extend_from_slice(&line);
        Ok(())
    }

    /// [`Command::encode`] into a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

impl Path {
    /// True when the path holds only ASCII (else the session requires SMTPUTF8,
    /// RFC 6531 §3.4).
    pub fn is_ascii(&self) -> bool {
        match self {
            Path::Null | Path::Postmaster => true,
            Path::Mailbox(mailbox) => mailbox.is_ascii(),
        }
    }

    /// The mailbox, unless this is `<>` or `<Postmaster>`.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            Path::Mailbox(mailbox) => Some(mailbox),
            Path::Null | Path::Postmaster => None,
        }
    }
}

impl Mailbox {
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.as_str().is_ascii()
    }
}

impl Domain {
    /// The domain, or the address literal's content.
    pub fn as_str(&self) -> &str {
        match self {
            Domain::Name(name) | Domain::Literal(name) => name,
        }
    }
}

/// The canonical form, `local@domain` with the least quoting possible (RFC 5321
/// §4.1.2); an unencodable local part is shown quoted as it is.
impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        encode_local_part(&self.local_part, &mut out).ok();
        if out.is_empty() {
            write!(f, "\"{}\"", self.local_part)?;
        } else {
            f.write_str(&String::from_utf8_lossy(&out))?;
        }
        match &self.domain {
            Domain::Name(name) => write!(f, "@{name}"),
            Domain::Literal(literal) => write!(f, "@[{literal}]"),
        }
    }
}

// === argument parsers ===

/// Runs `parser` on the arguments (everything after the verb, starting with SP or
/// empty); it must consume them all but trailing spaces.
fn arguments<'a, P, O>(parser: P, args: &'a [u8]) -> Option<O>
where
    P: Parser<&'a [u8], Output = O, Error = nom::error::Error<&'a [u8]>>,
{
    terminated(parser, (take_while(|b| b == b' '), eof))
        .parse(args)
        .ok()
        .map(|(_, output)| output)
}

/// Nothing but (ignored) trailing spaces.
fn no_arguments(i: &[u8]) -> IResult<&[u8], ()> {
    Ok((i, ()))
}

/// `SP`, tolerated as `1*SP` (see the module documentation).
fn sp(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(|b| b == b' ').parse(i)
}

/// ```abnf
/// ehlo = "EHLO" SP ( Domain / address-literal ) CRLF
/// helo = "HELO" SP Domain CRLF
/// ```
///
/// Tolerated as one word of printable characters, at most [`MAX_DOMAIN`] octets (see the
/// module documentation).
fn helo_name(i: &[u8]) -> IResult<&[u8], String> {
    map(
        verify(
            take_while1(|b: u8| b > b' ' && b != 0x7f),
            |name: &[u8]| name.len() <= MAX_DOMAIN,
        ),
        text,
    )
    .parse(i)
}

/// ```abnf
/// vrfy = "VRFY" SP String CRLF
/// expn = "EXPN" SP String CRLF
/// help = "HELP" [ SP String ] CRLF
/// noop = "NOOP" [ SP String ] CRLF
/// String = Atom / Quoted-string
/// ```
///
/// Tolerated as the rest of the line, trailing spaces removed (`VRFY user@example.org`
/// is not an Atom, but every server takes it).
fn string_argument(i: &[u8]) -> IResult<&[u8], String> {
    let trimmed = i.len() - i.iter().rev().take_while(|&&b| b == b' ').count();
    if trimmed == 0 {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::TakeWhile1,
        )));
    }
    Ok((&i[trimmed..], text(&i[..trimmed])))
}

/// ```abnf
/// mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
/// ```
///
/// Returns the path and the parameters, not yet interpreted.
fn mail(i: &[u8]) -> IResult<&[u8], (Path, Vec<EsmtpParam>)> {
    let (i, (_, _, _, from, params)) = (
        sp,
        tag_no_case("FROM:"),
        take_while(|b| b == b' '),
        reverse_path,
        opt(preceded(sp, mail_parameters)),
    )
        .parse(i)?;
    Ok((i, (from, params.unwrap_or_default())))
}

/// ```abnf
/// rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
///        [SP Rcpt-parameters] CRLF
/// ```
///
/// Returns the path and the parameters, not yet interpreted.
fn rcpt(i: &[u8]) -> IResult<&[u8], (Path, Vec<EsmtpParam>)> {
    let (i, (_, _, _, to, params)) = (
        sp,
        tag_no_case("TO:"),
        take_while(|b| b == b' '),
        forward_path,
        opt(preceded(sp, rcpt_parameters)),
    )
        .parse(i)?;
    Ok((i, (to, params.unwrap_or_default())))
}

/// ```abnf
/// bdat-cmd   = "BDAT" SP chunk-size [ SP end-marker ] CRLF   ; RFC 3030 §2
/// chunk-size = 1*DIGIT
/// end-marker = "LAST"
/// ```
///
/// Returns the digits (the caller checks that they fit in 64 bits) and the end marker.
fn bdat(i: &[u8]) -> IResult<&[u8], (&[u8], bool)> {
    let (i, (_, digits, last)) = (sp, digit1, opt(preceded(sp, tag_no_case("LAST")))).parse(i)?;
    Ok((i, (digits, last.is_some())))
}

/// ```abnf
/// auth-command     = "AUTH" SP sasl-mech [SP initial-response]   ; RFC 4954 §4
/// sasl-mech        = 1*20mech-char                                ; RFC 4422 §3.1
/// mech-char        = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
/// initial-response = base64 / "="
/// ```
///
/// The mechanism is taken case-insensitively and returned upper-case.
fn auth(i: &[u8]) -> IResult<&[u8], Command> {
    let mechanism = verify(
        take_while1(|b: u8| is_mech_char(b.to_ascii_uppercase())),
        |m: &[u8]| m.len() <= MAX_MECHANISM,
    );
    let initial_response = alt((tag("="), verify(take_while1(|b| b != b' '), is_base64)));
    let (i, (_, mechanism, initial_response)) =
        (sp, mechanism, opt(preceded(sp, initial_response))).parse(i)?;
    Ok((
        i,
        Command::Auth {
            mechanism: text(mechanism).to_ascii_uppercase(),
            initial_response: initial_response.map(|r| SaslResponse(text(r))),
        },
    ))
}

/// ```abnf
/// xclient-command = "XCLIENT" 1*( SP attribute-name "=" attribute-value )
/// attribute-value = xtext
/// ```
///
/// Postfix's XCLIENT (`XCLIENT_README`); names are returned upper-case, values decoded.
/// Which names are allowed is the session's business.
fn xclient(i: &[u8]) -> IResult<&[u8], Command> {
    let attribute = map((esmtp_keyword, char('='), xtext), |(name, _, value)| {
        (text(name).to_ascii_uppercase(), value)
    });
    map(
        preceded(sp, separated_list1(sp, attribute)),
        Command::Xclient,
    )
    .parse(i)
}

// === paths ===

/// ```abnf
/// Reverse-path = Path / "<>"
/// ```
pub fn reverse_path(i: &[u8]) -> IResult<&[u8], Path> {
    alt((value(Path::Null, tag("<>")), map(path, Path::Mailbox))).parse(i)
}

/// ```abnf
/// Forward-path = Path
/// rcpt-path    = "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path
/// ```
///
/// `<Postmaster@domain>` is an ordinary mailbox here.
pub fn forward_path(i: &[u8]) -> IResult<&[u8], Path> {
    alt((
        value(Path::Postmaster, tag_no_case("<Postmaster>")),
        map(path, Path::Mailbox),
    ))
    .parse(i)
}

/// ```abnf
/// Path = "<" [ A-d-l ":" ] Mailbox ">"
/// ```
///
/// A source route (`A-d-l`) is accepted and dropped (RFC 5321 §4.1.1.3: "SHOULD ignore").
pub fn path(i: &[u8]) -> IResult<&[u8], Mailbox> {
    delimited(
        char('<'),
        preceded(opt((a_d_l, char(':'))), mailbox),
        char('>'),
    )
    .parse(i)
}

/// ```abnf
/// A-d-l = At-domain *( "," At-domain )
/// ```
fn a_d_l(i: &[u8]) -> IResult<&[u8], &[u8]> {
    recognize(separated_list1(char(','), at_domain)).parse(i)
}

/// ```abnf
/// At-domain = "@" Domain
/// ```
fn at_domain(i: &[u8]) -> IResult<&[u8], &[u8]> {
    preceded(char('@'), domain).parse(i)
}

/// ```abnf
/// Mailbox = Local-part "@" ( Domain / address-literal )
/// ```
pub fn mailbox(i: &[u8]) -> IResult<&[u8], Mailbox> {
    let (i, (local_part, _, domain)) = (
        local_part,
        char('@'),
        alt((
            map(address_literal, |l| Domain::Literal(text(l))),
            map(domain, |d| Domain::Name(text(d))),
        )),
    )
        .parse(i)?;
    Ok((
        i,
        Mailbox {
            local_part: String::from_utf8_lossy(&local_part).into_owned(),
            domain,
        },
    ))
}

/// ```abnf
/// Local-part = Dot-string / Quoted-string
/// ```
///
/// Returns the unquoted value.
fn local_part(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((map(dot_string, <[u8]>::to_vec), quoted_string)).parse(i)
}

/// ```abnf
/// Dot-string = Atom *("."  Atom)
/// ```
fn dot_string(i: &[u8]) -> IResult<&[u8], &[u8]> {
    recognize((atom, many0((char('.'), atom)))).parse(i)
}

/// ```abnf
/// Atom  = 1*atext
/// atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/" /
///         "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"   ; RFC 5322 §3.2.3
/// atext =/ UTF8-non-ascii                                      ; RFC 6531 §3.3
/// ```
fn atom(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_atext).parse(i)
}

/// ```abnf
/// Quoted-string   = DQUOTE *QcontentSMTP DQUOTE
/// QcontentSMTP    = qtextSMTP / quoted-pairSMTP
/// quoted-pairSMTP = %d92 %d32-126
/// qtextSMTP       = %d32-33 / %d35-91 / %d93-126
/// qtextSMTP       =/ UTF8-non-ascii                  ; RFC 6531 §3.3
/// ```
///
/// Returns the content with the quoting removed.
fn quoted_string(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (mut i, _) = char('"').parse(i)?;
    let mut out = Vec::new();
    loop {
        match i {
            [b'"', rest @ ..] => return Ok((rest, out)),
            [b'\\', q @ 32..=126, rest @ ..] => {
                out.push(*q);
                i = rest;
            }
            [b, rest @ ..] if is_qtext(*b) => {
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
/// Domain     = sub-domain *("." sub-domain)
/// sub-domain = Let-dig [Ldh-str]
/// sub-domain =/ U-label                        ; RFC 6531 §3.3
/// Let-dig    = ALPHA / DIGIT
/// Ldh-str    = *( ALPHA / DIGIT / "-" ) Let-dig
/// ```
///
/// U-labels are taken as any non-ASCII UTF-8 mixed with LDH characters; their IDNA
/// validity is the address normaliser's business. At most [`MAX_DOMAIN`] octets.
pub fn domain(i: &[u8]) -> IResult<&[u8], &[u8]> {
    verify(
        recognize((sub_domain, many0((char('.'), sub_domain)))),
        |d: &[u8]| d.len() <= MAX_DOMAIN,
    )
    .parse(i)
}

/// One label: see [`domain`]. At most [`MAX_LABEL`] octets, no leading or trailing `-`.
fn sub_domain(i: &[u8]) -> IResult<&[u8], &[u8]> {
    verify(
        take_while1(|b: u8| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80),
        |label: &[u8]| {
            label.len() <= MAX_LABEL && label.first() != Some(&b'-') && label.last() != Some(&b'-')
        },
    )
    .parse(i)
}

/// ```abnf
/// address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
///                         General-address-literal ) "]"
/// ```
///
/// Returns the content between the brackets.
pub fn address_literal(i: &[u8]) -> IResult<&[u8], &[u8]> {
    delimited(
        char('['),
        verify(take_while1(is_dcontent), |content: &[u8]| {
            is_address_literal_content(content)
        }),
        char(']'),
    )
    .parse(i)
}

// === parameters ===

/// ```abnf
/// Mail-parameters = esmtp-param *(SP esmtp-param)
/// ```
fn mail_parameters(i: &[u8]) -> IResult<&[u8], Vec<EsmtpParam>> {
    separated_list1(sp, esmtp_param).parse(i)
}

/// ```abnf
/// Rcpt-parameters = esmtp-param *(SP esmtp-param)
/// ```
fn rcpt_parameters(i: &[u8]) -> IResult<&[u8], Vec<EsmtpParam>> {
    separated_list1(sp, esmtp_param).parse(i)
}

/// ```abnf
/// esmtp-param = esmtp-keyword ["=" esmtp-value]
/// esmtp-value = 1*(%d33-60 / %d62-126)
/// esmtp-value =/ UTF8-non-ascii             ; RFC 6531 §3.3
/// ```
fn esmtp_param(i: &[u8]) -> IResult<&[u8], EsmtpParam> {
    let value = take_while1(|b: u8| ((33..=126).contains(&b) && b != b'=') || b >= 0x80);
    map(
        (esmtp_keyword, opt(preceded(char('='), value))),
        |(keyword, value)| EsmtpParam {
            keyword: text(keyword).to_ascii_uppercase(),
            value: value.map(text),
        },
    )
    .parse(i)
}

/// ```abnf
/// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
/// ```
fn esmtp_keyword(i: &[u8]) -> IResult<&[u8], &[u8]> {
    verify(
        take_while1(|b: u8| b.is_ascii_alphanumeric() || b == b'-'),
        |k: &[u8]| k[0] != b'-',
    )
    .parse(i)
}

/// ```abnf
/// xtext   = *( xchar / hexchar )        ; RFC 3461 §4
/// xchar   = %d33-42 / %d44-60 / %d62-126   ; "!".."~" except "+" and "="
/// hexchar = "+" 2HEXDIG
/// ```
///
/// Decodes; lower-case hex digits and UTF-8 (RFC 6533) are tolerated. The result must
/// be UTF-8 without control characters.
fn xtext(i: &[u8]) -> IResult<&[u8], String> {
    let fail = |i| nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Verify));
    let end = i
        .iter()
        .position(|&b| !(b >= 0x80 || ((33..=126).contains(&b) && b != b'=')))
        .unwrap_or(i.len());
    let decoded = xtext_decode(&i[..end]).ok_or_else(|| fail(i))?;
    Ok((&i[end..], decoded))
}

/// Decodes xtext (see [`xtext`]); `None` for a bad `+` escape, invalid UTF-8 or a
/// control character in the result.
pub fn xtext_decode(v: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'+' {
            let hex = v.get(i + 1..i + 3)?;
            let digit = |b: u8| char::from(b).to_digit(16);
            let byte = digit(hex[0])? * 16 + digit(hex[1])?;
            out.push(u8::try_from(byte).ok()?);
            i += 3;
        } else if v[i] >= 0x80 || ((33..=126).contains(&v[i]) && v[i] != b'=') {
            out.push(v[i]);
            i += 1;
        } else {
            return None;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.chars().any(|c| c.is_ascii_control())).then_some(s)
}

/// Appends `v` as xtext: printable ASCII except `+` and `=` as is, every other byte as
/// `+XX` (upper-case hex).
pub fn xtext_encode(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("+{b:02X}").as_bytes());
        }
    }
}

// === semantics: known parameters ===

fn mail_parameter_values(
    list: Vec<EsmtpParam>,
    syntax: &'static str,
) -> Result<MailParameters, CommandError> {
    let bad = CommandError::Syntax { syntax };
    let duplicate = CommandError::DuplicateParameter { syntax };
    let mut params = MailParameters::default();
    for param in list {
        let value = param.value.as_deref();
        match (param.keyword.as_str(), value) {
            ("SIZE", Some(v)) => {
                if params.size.is_some() {
                    return Err(duplicate);
                }
                // RFC 1870: size-value = 1*20DIGIT
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad);
                }
                let size = v
                    .parse()
                    .map_err(|_| CommandError::NumberTooLarge { syntax })?;
                params.size = Some(size);
            }
            ("BODY", Some(v)) => {
                if params.body.is_some() {
                    return Err(duplicate);
                }
                params.body = Some(match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(bad),
                });
            }
            ("SMTPUTF8", None) => {
                if params.smtputf8 {
                    return Err(duplicate);
                }
                params.smtputf8 = true;
            }
            ("RET", Some(v)) => {
                if params.ret.is_some() {
                    return Err(duplicate);
                }
                params.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(bad),
                });
            }
            ("ENVID", Some(v)) => {
                if params.envid.is_some() {
                    return Err(duplicate);
                }
                let envid = xtext_decode(v.as_bytes()).ok_or(bad)?;
                if envid.chars().count() > MAX_ENVID || !envid.is_ascii() {
                    return Err(bad);
                }
                params.envid = Some(envid);
            }
            ("AUTH", Some(v)) => {
                if params.auth.is_some() {
                    return Err(duplicate);
                }
                params.auth = Some(xtext_decode(v.as_bytes()).ok_or(bad)?);
            }
            ("SIZE" | "BODY" | "SMTPUTF8" | "RET" | "ENVID" | "AUTH", _) => return Err(bad),
            _ => params.other.push(param),
        }
    }
    Ok(params)
}

fn rcpt_parameter_values(
    list: Vec<EsmtpParam>,
    syntax: &'static str,
) -> Result<RcptParameters, CommandError> {
    let bad = CommandError::Syntax { syntax };
    let duplicate = CommandError::DuplicateParameter { syntax };
    let mut params = RcptParameters::default();
    for param in list {
        match (param.keyword.as_str(), param.value.as_deref()) {
            ("NOTIFY", Some(v)) => {
                if params.notify.is_some() {
                    return Err(duplicate);
                }
                params.notify = Some(notify_value(v).ok_or(bad)?);
            }
            ("ORCPT", Some(v)) => {
                if params.orcpt.is_some() {
                    return Err(duplicate);
                }
                // orcpt-parameter = "ORCPT=" addr-type ";" xtext ; addr-type = atom
                let (addr_type, address) = v.split_once(';').ok_or(bad)?;
                let valid_type =
                    !addr_type.is_empty() && addr_type.bytes().all(|b| b.is_ascii() && is_atext(b));
                if !valid_type {
                    return Err(bad);
                }
                params.orcpt = Some(Orcpt {
                    addr_type: addr_type.to_owned(),
                    address: xtext_decode(address.as_bytes()).ok_or(bad)?,
                });
            }
            ("NOTIFY" | "ORCPT", _) => return Err(bad),
            _ => params.other.push(param),
        }
    }
    Ok(params)
}

/// ```abnf
/// notify-esmtp-value  = "NEVER" / 1#notify-list-element      ; RFC 3461 §4.1
/// notify-list-element = "SUCCESS" / "FAILURE" / "DELAY"
/// ```
///
/// A repeated element is an error, as is NEVER in a list.
fn notify_value(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for element in v.split(',') {
        let flag = match element.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut success,
            "FAILURE" => &mut failure,
            "DELAY" => &mut delay,
            _ => return None,
        };
        if *flag {
            return None;
        }
        *flag = true;
    }
    Some(Notify::On {
        success,
        failure,
        delay,
    })
}

// === encoding helpers ===

fn check(valid: bool, field: &'static str) -> Result<(), EncodeError> {
    if valid {
        Ok(())
    } else {
        Err(EncodeError { field })
    }
}

fn encode_path(path: &Path, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match path {
        Path::Null => out.extend_from_slice(b"<>"),
        Path::Postmaster => out.extend_from_slice(b"<Postmaster>"),
        Path::Mailbox(mailbox) => {
            out.push(b'<');
            encode_local_part(&mailbox.local_part, out)?;
            out.push(b'@');
            match &mailbox.domain {
                Domain::Name(name) => {
                    let valid = matches!(domain(name.as_bytes()), Ok(([], _)));
                    check(valid, "domain")?;
                    out.extend_from_slice(name.as_bytes());
                }
                Domain::Literal(literal) => {
                    let valid = !literal.is_empty()
                        && literal.bytes().all(is_dcontent)
                        && is_address_literal_content(literal.as_bytes());
                    check(valid, "address literal")?;
                    out.push(b'[');
                    out.extend_from_slice(literal.as_bytes());
                    out.push(b']');
                }
            }
            out.push(b'>');
        }
    }
    Ok(())
}

/// Writes the local part with the least quoting possible (RFC 5321 §4.1.2): as a
/// Dot-string when it is one, else as a Quoted-string.
fn encode_local_part(local: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let bytes = local.as_bytes();
    if matches!(dot_string(bytes), Ok(([], _))) {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    // Anything from %d32-126 can be quoted (with a backslash where needed); control
    // characters cannot be written at all.
    check(!bytes.iter().any(|&b| is_control(b)), "local part")?;
    out.push(b'"');
    for &b in bytes {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Ok(())
}

fn encode_mail_parameters(params: &MailParameters, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let Some(size) = params.size {
        out.extend_from_slice(format!(" SIZE={size}").as_bytes());
    }
    if let Some(body) = params.body {
        out.extend_from_slice(match body {
            Body::SevenBit => b" BODY=7BIT".as_slice(),
            Body::EightBitMime => b" BODY=8BITMIME",
            Body::BinaryMime => b" BODY=BINARYMIME",
        });
    }
    if params.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    if let Some(ret) = params.ret {
        out.extend_from_slice(match ret {
            Ret::Full => b" RET=FULL".as_slice(),
            Ret::Hdrs => b" RET=HDRS",
        });
    }
    if let Some(envid) = &params.envid {
        let valid = !envid.is_empty() && envid.chars().count() <= MAX_ENVID && envid.is_ascii();
        check(valid, "ENVID")?;
        out.extend_from_slice(b" ENVID=");
        xtext_encode(envid.as_bytes(), out);
    }
    if let Some(auth) = &params.auth {
        check(!auth.is_empty(), "AUTH parameter")?;
        out.extend_from_slice(b" AUTH=");
        xtext_encode(auth.as_bytes(), out);
    }
    encode_other_parameters(
        &params.other,
        &["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"],
        out,
    )
}

fn encode_rcpt_parameters(params: &RcptParameters, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let Some(notify) = params.notify {
        out.extend_from_slice(b" NOTIFY=");
        match notify {
            Notify::Never => out.extend_from_slice(b"NEVER"),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let names = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")];
                let list: Vec<&str> = names
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| *n)
                    .collect();
                check(!list.is_empty(), "NOTIFY")?;
                out.extend_from_slice(list.join(",").as_bytes());
            }
        }
    }
    if let Some(orcpt) = &params.orcpt {
        let valid = !orcpt.addr_type.is_empty()
            && orcpt.addr_type.bytes().all(|b| b.is_ascii() && is_atext(b));
        check(valid, "ORCPT address type")?;
        out.extend_from_slice(b" ORCPT=");
        out.extend_from_slice(orcpt.addr_type.as_bytes());
        out.push(b';');
        xtext_encode(orcpt.address.as_bytes(), out);
    }
    encode_other_parameters(&params.other, &["NOTIFY", "ORCPT"], out)
}

/// Writes unknown parameters; a known keyword here would be ambiguous and is refused.
fn encode_other_parameters(
    other: &[EsmtpParam],
    known: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for param in other {
        let valid = matches!(esmtp_keyword(param.keyword.as_bytes()), Ok(([], _)))
            && !known.iter().any(|k| param.keyword.eq_ignore_ascii_case(k));
        check(valid, "parameter keyword")?;
        out.push(b' ');
        out.extend_from_slice(param.keyword.as_bytes());
        if let Some(value) = &param.value {
            let valid = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| ((33..=126).contains(&b) && b != b'=') || b >= 0x80);
            check(valid, "parameter value")?;
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
    }
    Ok(())
}

// === character classes ===

/// CTLs (and DEL): never valid in a command line.
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn is_qtext(b: u8) -> bool {
    matches!(b, 32..=33 | 35..=91 | 93..=126) || b >= 0x80
}

/// `dcontent = %d33-90 / %d94-126` (printable ASCII but "[", "\\" and "]"; ":" included).
fn is_dcontent(b: u8) -> bool {
    matches!(b, 33..=90 | 94..=126)
}

/// `mech-char = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE`
fn is_mech_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

fn is_keyword(k: &[u8]) -> bool {
    matches!(esmtp_keyword(k), Ok(([], _)))
}

fn is_helo_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_DOMAIN && name.iter().all(|&b| b > b' ' && b != 0x7f)
}

fn is_string_argument(arg: &str) -> bool {
    !arg.is_empty() && !arg.starts_with(' ') && !arg.ends_with(' ') && !arg.bytes().any(is_control)
}

/// ```abnf
/// base64          = base64-terminal / ( 1*(4base64-char) [base64-terminal] )
/// base64-char     = ALPHA / DIGIT / "+" / "/"
/// base64-terminal = (2base64-char "==") / (3base64-char "=")
/// ```
fn is_base64(v: &[u8]) -> bool {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return false;
    }
    let pad = v.iter().rev().take_while(|&&b| b == b'=').count();
    pad <= 2
        && v[..v.len() - pad]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// ```abnf
/// IPv4-address-literal    = Snum 3("."  Snum)
/// IPv6-address-literal    = "IPv6:" IPv6-addr
/// General-address-literal = Standardized-tag ":" 1*dcontent
/// Standardized-tag        = Ldh-str
/// ```
fn is_address_literal_content(content: &[u8]) -> bool {
    if is_ipv4(content) {
        return true;
    }
    let Some(colon) = memchr::memchr(b':', content) else {
        return false;
    };
    let (tag, rest) = (&content[..colon], &content[colon + 1..]);
    if tag.eq_ignore_ascii_case(b"IPv6") {
        return is_ipv6(rest);
    }
    let ldh = tag.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        && tag.first().is_some_and(u8::is_ascii_alphanumeric)
        && tag.last().is_some_and(u8::is_ascii_alphanumeric);
    ldh && !rest.is_empty() && rest.iter().all(|&b| is_dcontent(b))
}

/// `Snum 3("." Snum)`, `Snum = 1*3DIGIT` with a value of 0–255.
fn is_ipv4(v: &[u8]) -> bool {
    let mut parts = 0;
    for part in v.split(|&b| b == b'.') {
        parts += 1;
        let valid = !part.is_empty()
            && part.len() <= 3
            && part.iter().all(u8::is_ascii_digit)
            && part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 255;
        if !valid {
            return false;
        }
    }
    parts == 4
}

/// ```abnf
/// IPv6-addr = IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp
/// ```
///
/// Eight groups of 1–4 hex digits, or at most six with one `::` (RFC 5321 §4.1.3: "::"
/// stands for at least two groups), the last two groups optionally written as an IPv4
/// address.
fn is_ipv6(v: &[u8]) -> bool {
    let groups = |s: &[u8]| -> Option<usize> {
        if s.is_empty() {
            return Some(0);
        }
        let mut count = 0;
        let parts: Vec<&[u8]> = s.split(|&b| b == b':').collect();
        for (i, part) in parts.iter().enumerate() {
            if i == parts.len() - 1 && part.contains(&b'.') {
                if !is_ipv4(part) {
                    return None;
                }
                count += 2;
            } else if !part.is_empty() && part.len() <= 4 && part.iter().all(u8::is_ascii_hexdigit)
            {
                count += 1;
            } else {
                return None;
            }
        }
        Some(count)
    };
    let compressed = v.windows(2).position(|w| w == b"::");
    match compressed {
        None => groups(v) == Some(8),
        Some(at) => {
            let (head, tail) = (&v[..at], &v[at + 2..]);
            if tail.windows(2).any(|w| w == b"::") || head.contains(&b'.') {
                return false;
            }
            match (groups(head), groups(tail)) {
                (Some(h), Some(t)) => h + t <= 6,
                _ => false,
            }
        }
    }
}

/// A slice of a line already checked to be UTF-8, cut at ASCII bytes (so still UTF-8).
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
