//! Server replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463): parsed
//! from an upstream's lines, and encoded canonically for the client.
//!
//! ```abnf
//! Reply-line = *( Reply-code "-" [ textstring ] CRLF )
//!              Reply-code [ SP textstring ] CRLF
//! Reply-code = %x32-35 %x30-35 %x30-39
//! textstring = 1*(%d09 / %d32-126) ; HT, SP, Printable US-ASCII
//! textstring =/ UTF8-non-ascii     ; RFC 6531 §3.3
//! status-code = class "." subject "." detail   ; RFC 3463, at the start of each line's text
//! ```
//!
//! Parsing is all-or-nothing: a multi-line reply is returned only when its last line has
//! arrived, and a malformed line or a line with another code fails the whole reply. The
//! enhanced code of the first line is lifted into [`Reply::enhanced`] and stripped from
//! every line that repeats it; encoding writes it on every line, as RFC 2034 asks.

use super::line::{self, LineError, RFC5321_REPLY_LINE};

/// Most lines accepted in one reply. Postfix's EHLO reply, its longest, has about a
/// dozen; an upstream sending more is broken, and the bound keeps a reply's memory below
/// `MAX_REPLY_LINES * REPLY_LINE_MAX`.
pub const MAX_REPLY_LINES: usize = 64;

/// An enhanced status code `class.subject.detail` (RFC 3463): class 2, 4 or 5, subject
/// and detail 0–999.
pub type EnhancedCode = (u8, u16, u16);

/// A complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, 200–599 (RFC 5321 §4.2.1: first digit 2–5, second 0–5).
    pub code: u16,
    /// The enhanced status code of the first line, if it had one matching `code`'s class.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line, without code, separator and repeated enhanced code. Never
    /// empty after parsing.
    pub lines: Vec<String>,
}

/// Why a reply was refused. Every variant is the upstream's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not a three-digit reply code in 200–599 with a second digit 0–5.
    #[error("malformed reply code")]
    BadCode,
    /// The code is followed by something other than SP, "-" or the end of the line.
    #[error("malformed separator after the reply code")]
    BadSeparator,
    /// The text holds a control character other than HT, or is not UTF-8.
    #[error("control character or invalid UTF-8 in reply text")]
    BadText,
    /// A continuation line carries another code than the first line.
    #[error("reply code changed within a multi-line reply")]
    CodeMismatch,
    /// The line framing was broken (only from [`Reply::parse`]).
    #[error(transparent)]
    Line(#[from] LineError),
    /// More than [`MAX_REPLY_LINES`] lines.
    #[error("too many lines in one reply")]
    TooManyLines,
}

impl Reply {
    /// A one-line reply. The text is sanitised and split by [`Reply::encode`].
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// Parses the first reply in `input` (strict CRLF lines of at most
    /// [`line::REPLY_LINE_MAX`] bytes). `Ok(None)` means more input is needed;
    /// `Ok(Some((reply, n)))` that the reply took the first `n` bytes.
    pub fn parse(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        let mut parser = ReplyParser::new();
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match line::scan(rest, 0, line::REPLY_LINE_MAX, false) {
                line::Scan::Incomplete { .. } => return Ok(None),
                line::Scan::Line { len } => {
                    at += len + 2;
                    if let Some(reply) = parser.push_line(&rest[..len])? {
                        return Ok(Some((reply, at)));
                    }
                }
                line::Scan::Fault { fault, .. } => return Err(fault.line_error().into()),
            }
        }
    }

    /// True for 2xx (positive completion).
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// True for 3xx (positive intermediate: 334 to AUTH, 354 to DATA).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// True for 4xx (transient failure: the client retries).
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// True for 5xx (permanent failure).
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// Appends the canonical wire form: `code` and `-` or SP on each line, the enhanced
    /// code on each line, CRLF endings, every line at most [`RFC5321_REPLY_LINE`] bytes
    /// (longer texts are split at character boundaries). Control characters in the text,
    /// CR and LF above all, become spaces, so a text can never splice in another reply.
    ///
    /// A `code` outside 200–599 (or with a second digit above 5) is a bug in the caller:
    /// debug builds panic, release builds send 451 so that the client retries rather
    /// than desynchronises. An invalid enhanced code is left out.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(is_valid_code(self.code), "invalid reply code {}", self.code);
        let code = if is_valid_code(self.code) {
            self.code
        } else {
            451
        };
        let enhanced = self
            .enhanced
            .filter(|&e| is_valid_enhanced(code, e))
            .map(|(c, s, d)| format!("{c}.{s}.{d}"));
        // code + separator + CRLF, and the enhanced code with its space.
        let budget = RFC5321_REPLY_LINE - 6 - enhanced.as_ref().map_or(0, |e| e.len() + 1);
        let mut pieces: Vec<String> = Vec::with_capacity(self.lines.len());
        for text in &self.lines {
            let clean = sanitise(text);
            let mut rest = clean.as_str();
            loop {
                let cut = floor_char_boundary(rest, budget);
                pieces.push(rest[..cut].to_owned());
                rest = &rest[cut..];
                if rest.is_empty() {
                    break;
                }
            }
        }
        if pieces.is_empty() {
            pieces.push(String::new());
        }
        // Never write what `parse` would refuse: text beyond the line limit is dropped.
        pieces.truncate(MAX_REPLY_LINES);
        let last = pieces.len() - 1;
        for (i, text) in pieces.iter().enumerate() {
            out.extend_from_slice(format!("{code:03}").as_bytes());
            let separator = if i == last { b' ' } else { b'-' };
            match (&enhanced, text.is_empty()) {
                (None, true) => {
                    if i != last {
                        out.push(b'-');
                    }
                }
                (None, false) => {
                    out.push(separator);
                    out.extend_from_slice(text.as_bytes());
                }
                (Some(e), empty) => {
                    out.push(separator);
                    out.extend_from_slice(e.as_bytes());
                    if !empty {
                        out.push(b' ');
                        out.extend_from_slice(text.as_bytes());
                    }
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// [`Reply::encode`] into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Assembles replies from lines (as returned by a [`line::LineFramer`] reading an
/// upstream). Call [`ReplyParser::push_line`] with each line in order.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// The reply being assembled; `None` between replies.
    partial: Option<Reply>,
    /// The first line's enhanced code as written, for stripping it from later lines.
    enhanced_text: Option<String>,
}

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one line (without CRLF). Returns the reply when this was its last line. On
    /// error the partial reply is dropped whole and the next line starts a new reply.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let result = self.push_line_inner(line);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// True while a multi-line reply is incomplete.
    pub fn in_reply(&self) -> bool {
        self.partial.is_some()
    }

    /// Drops a partial reply, e.g. after the line framer reported a broken line.
    pub fn reset(&mut self) {
        self.partial = None;
        self.enhanced_text = None;
    }

    fn push_line_inner(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let (code, last, text) = reply_line(line)?;
        match &mut self.partial {
            Some(reply) => {
                if reply.code != code {
                    return Err(ReplyError::CodeMismatch);
                }
                if reply.lines.len() >= MAX_REPLY_LINES {
                    return Err(ReplyError::TooManyLines);
                }
                let text = match &self.enhanced_text {
                    Some(e) => strip_enhanced(text, e).unwrap_or(text),
                    None => text,
                };
                reply.lines.push(text.to_owned());
            }
            None => {
                let (enhanced, text) = match enhanced_code(code, text) {
                    Some((e, written, rest)) => {
                        self.enhanced_text = Some(written.to_owned());
                        (Some(e), rest)
                    }
                    None => (None, text),
                };
                self.partial = Some(Reply {
                    code,
                    enhanced,
                    lines: vec![text.to_owned()],
                });
            }
        }
        if last {
            self.enhanced_text = None;
            Ok(self.partial.take())
        } else {
            Ok(None)
        }
    }
}

/// One reply line: `Reply-code ( "-" / SP / end ) [ textstring ]`. Returns the code,
/// whether this is the last line, and the text. A trailing SP with no text (`250 `) is
/// accepted as an empty text.
fn reply_line(line: &[u8]) -> Result<(u16, bool, &str), ReplyError> {
    let (digits, rest) = line.split_at(line.len().min(3));
    let code = match digits {
        [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9'] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ReplyError::BadCode),
    };
    let (last, text) = match rest {
        [] => (true, rest),
        [b' ', text @ ..] => (true, text),
        [b'-', text @ ..] => (false, text),
        _ => return Err(ReplyError::BadSeparator),
    };
    if text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ReplyError::BadText);
    }
    let text = std::str::from_utf8(text).map_err(|_| ReplyError::BadText)?;
    Ok((code, last, text))
}

/// `status-code = class "." subject "." detail` at the start of `text`, followed by SP
/// or the end of the text, with class equal to the reply's first digit (RFC 3463 §2).
/// Digits with leading zeros are not taken as a code, so that encoding (which writes
/// plain numbers) gives back the same text. Returns the code, its written form and the
/// text after it and its SP.
fn enhanced_code(code: u16, text: &str) -> Option<(EnhancedCode, &str, &str)> {
    let end = text.find(' ').unwrap_or(text.len());
    let written = &text[..end];
    let mut parts = written.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str, max_len: usize| -> Option<u16> {
        let plain = !s.is_empty()
            && s.len() <= max_len
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        plain.then(|| s.parse().ok()).flatten()
    };
    let class = u8::try_from(number(class, 1)?).ok()?;
    let enhanced = (class, number(subject, 3)?, number(detail, 3)?);
    if !is_valid_enhanced(code, enhanced) {
        return None;
    }
    let rest = text[end..].strip_prefix(' ').unwrap_or("");
    Some((enhanced, written, rest))
}

/// The text after `written` (the first line's enhanced code) and its SP, if the line
/// starts with it.
fn strip_enhanced<'a>(text: &'a str, written: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(written)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(' ')
    }
}

fn is_valid_code(code: u16) -> bool {
    (200..600).contains(&code) && (code / 10) % 10 <= 5
}

fn is_valid_enhanced(code: u16, (class, subject, detail): EnhancedCode) -> bool {
    u16::from(class) == code / 100 && matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999
}

/// Replaces every ASCII control character except HT (the ones `textstring` excludes)
/// with a space.
fn sanitise(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_control() && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The largest index `<= max` that is a character boundary of `s` (at least one whole
/// character when `s` is not empty, so splitting always progresses).
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut cut = max;
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        s.chars().next().map_or(0, char::len_utf8)
    } else {
        cut
    }
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
