//! Strict CRLF line framing for SMTP commands and replies (frame first, then parse).
//!
//! A line ends only at CR LF (RFC 5321 §2.3.8). A bare LF or a bare CR inside a line is
//! not a line ending: it makes the whole line, up to the next CR LF, a violation
//! (SECURITY-CASES §A). Treating a bare LF as an ending would let a client frame commands
//! differently from a strict backend, which is how SMTP smuggling starts; the proxy never
//! forwards client bytes, but its own view of the stream must be the strict one.
//!
//! A line longer than the limit is reported as [`LineError::TooLong`] as soon as the limit
//! is passed, without waiting for its end; the framer then discards bytes up to the next
//! CR LF (a discard *state*, not a separate receiver type), so framing stays in sync and
//! memory stays below the limit whatever the peer sends.
//!
//! Call order: [`LineFramer::push`] any number of times, then [`LineFramer::next_line`]
//! until it returns `None`. Each faulty line yields exactly one error, as soon as the fault
//! is certain; its remaining bytes yield nothing. The events do not depend on how the input
//! was split into pushes.

use bytes::{Buf, Bytes, BytesMut};

/// RFC 5321 §4.5.3.1.4: the command line every server must accept, 512 octets including
/// the command word and CRLF. The smallest sensible limit.
pub const RFC5321_COMMAND_LINE: usize = 512;

/// RFC 5321 §4.5.3.1.5: the longest reply line, 512 octets including the code and CRLF.
/// [`super::reply::Reply::encode`] never writes a longer line.
pub const RFC5321_REPLY_LINE: usize = 512;

/// Default limit for client command lines, including CRLF: 2048 octets, Postfix's
/// `line_length_limit`. Above RFC 5321's 512 because extensions lengthen MAIL and RCPT
/// (RFC 4954 `AUTH=` adds up to 500 octets, RFC 3461 `ENVID`/`ORCPT`, RFC 6531 UTF-8
/// addresses); not above Postfix's own limit, since the proxy re-sends what it accepts to
/// a Postfix that would truncate a longer line.
pub const COMMAND_LINE_MAX: usize = 2048;

/// Limit for lines of a SASL exchange (the AUTH command with an initial response, and
/// the client's responses to 334 challenges), including CRLF: 12288 octets, the minimum
/// RFC 4954 §4 asks servers to accept for a response, and Postfix's
/// `smtpd_sasl_response_limit`. OAuth bearer tokens (XOAUTH2, OAUTHBEARER) need it.
pub const SASL_LINE_MAX: usize = 12_288;

/// Default limit for reply lines read from an upstream, including CRLF. Postfix writes
/// replies within RFC 5321's 512 octets, but texts from policy services or
/// `smtpd_reject_footer` can be longer; 2048 matches Postfix's own `line_length_limit`.
pub const REPLY_LINE_MAX: usize = 2048;

/// Why a line was refused. Every variant is the peer's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A CR not followed by LF (answered with 500 5.5.2 or 421 and close).
    #[error("bare CR in a line")]
    BareCr,
    /// An LF not preceded by CR.
    #[error("bare LF in a line")]
    BareLf,
    /// The line (with its CRLF) is longer than the limit (RFC 5321 §4.5.3.1.4: 500).
    #[error("line too long")]
    TooLong,
}

/// The strict CRLF framer. See the module documentation for the call order.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    /// Longest accepted line including its CRLF; at least 2.
    max_line: usize,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for the end of a line; `buf[..scanned]` holds no CR, LF or fault.
    Line { scanned: usize },
    /// Dropping the rest of a faulty line up to its CRLF. The buffer is empty in this
    /// state; `cr` is true when the last byte dropped was a CR.
    Discard { cr: bool },
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes including CRLF (see the constants in
    /// this module). Values below 2 are raised to 2.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_line: max_line.max(2),
            state: State::Line { scanned: 0 },
        }
    }

    /// Appends received bytes. While the framer discards a faulty line, bytes up to its
    /// end are dropped here and never buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        match self.state {
            State::Line { .. } => self.buf.extend_from_slice(bytes),
            State::Discard { cr } => match find_crlf_end(bytes, cr) {
                Some(end) => {
                    self.buf.extend_from_slice(&bytes[end..]);
                    self.state = State::Line { scanned: 0 };
                }
                None => {
                    let cr = bytes.last().map_or(cr, |&b| b == b'\r');
                    self.state = State::Discard { cr };
                }
            },
        }
    }

    /// The next complete line without its CRLF, a fault, or `None` if more input is needed.
    pub fn next_line(&mut self) -> Option<Result<Bytes, LineError>> {
        let State::Line { scanned } = self.state else {
            return None;
        };
        match scan(&self.buf, scanned, self.max_line, false) {
            Scan::Incomplete { scanned } => {
                self.state = State::Line { scanned };
                None
            }
            Scan::Line { len } => {
                let mut line = self.buf.split_to(len + 2);
                line.truncate(len);
                self.state = State::Line { scanned: 0 };
                Some(Ok(line.freeze()))
            }
            Scan::Fault { fault, resume } => {
                self.buf.advance(resume);
                self.state = State::Discard { cr: false };
                let rest = self.buf.split();
                self.push(&rest);
                Some(Err(fault.line_error()))
            }
        }
    }

    /// Changes the limit, e.g. to [`SASL_LINE_MAX`] while a SASL exchange runs. It applies
    /// to the line being received too.
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line.max(2);
        if let State::Line { scanned } = self.state {
            // A shorter window may end before what was scanned.
            self.state = State::Line {
                scanned: scanned.min(self.max_line.saturating_sub(1)),
            };
        }
    }

    /// The current limit, including CRLF.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes received but not yet returned in a line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True while the rest of a faulty line is being dropped.
    pub fn is_discarding(&self) -> bool {
        matches!(self.state, State::Discard { .. })
    }

    /// Hands over the bytes received after the last line returned, and starts afresh.
    ///
    /// Used when the stream changes framing: after a 354 to DATA the pipelined bytes
    /// belong to the DATA receiver; before a TLS handshake the buffer must be empty
    /// (SECURITY-CASES case 9). Call it only between lines, never while discarding.
    pub fn take_buffered(&mut self) -> Bytes {
        self.state = State::Line { scanned: 0 };
        self.buf.split().freeze()
    }
}

/// What [`scan`] found in the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// No verdict yet; `buf[..scanned]` needs no second look.
    Incomplete { scanned: usize },
    /// A line of `len` bytes, followed by CRLF at `len`.
    Line { len: usize },
    /// The line is faulty; the bytes before `resume` are settled, and the line's CRLF (if
    /// any) starts at or after it.
    Fault { fault: Fault, resume: usize },
}

/// A fault inside one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    BareCr,
    BareLf,
    Nul,
    TooLong,
}

impl Fault {
    /// The error of a line scanned with `reject_nul = false`.
    pub(crate) fn line_error(self) -> LineError {
        match self {
            Fault::BareCr => LineError::BareCr,
            Fault::BareLf => LineError::BareLf,
            Fault::TooLong => LineError::TooLong,
            // NUL in a command or reply is the parsers' business (they name the syntax
            // in their error); `scan` reports it only when asked to.
            Fault::Nul => unreachable!("scan called with reject_nul = false"),
        }
    }
}

/// Looks for the end of the line at the start of `buf`, resuming at `from` (a previous
/// `Incomplete { scanned }`, or 0).
///
/// The verdict is a function of `buf[..min(len, limit)]` alone, decided at the first
/// byte that settles it: a NUL (if `reject_nul`) or an LF at its position, a CR at the
/// byte after it, and an over-long line at byte `limit - 1`. Once decided it is the same
/// for every longer `buf`, so the result never depends on how the input was split.
pub(crate) fn scan(buf: &[u8], from: usize, limit: usize, reject_nul: bool) -> Scan {
    let window = &buf[..buf.len().min(limit)];
    let from = from.min(window.len());
    let hit = if reject_nul {
        memchr::memchr3(b'\r', b'\n', 0, &window[from..])
    } else {
        memchr::memchr2(b'\r', b'\n', &window[from..])
    };
    let Some(at) = hit.map(|i| from + i) else {
        return if buf.len() >= limit {
            Scan::Fault {
                fault: Fault::TooLong,
                resume: limit,
            }
        } else {
            Scan::Incomplete { scanned: buf.len() }
        };
    };
    match buf[at] {
        b'\n' => Scan::Fault {
            fault: Fault::BareLf,
            resume: at + 1,
        },
        b'\r' if at + 1 >= limit => Scan::Fault {
            // Even a following LF would end the line one byte too late. The CR may still
            // pair with that LF, so discarding resumes at the CR.
            fault: Fault::TooLong,
            resume: at,
        },
        b'\r' => match buf.get(at + 1) {
            None => Scan::Incomplete { scanned: at },
            Some(b'\n') => Scan::Line { len: at },
            Some(_) => Scan::Fault {
                fault: Fault::BareCr,
                resume: at + 1,
            },
        },
        _ => Scan::Fault {
            fault: Fault::Nul,
            resume: at + 1,
        },
    }
}

/// The index just after the first CRLF in `bytes`, where `cr` says whether the byte
/// before `bytes` was a CR.
fn find_crlf_end(bytes: &[u8], cr: bool) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &bytes[from..]).map(|i| from + i) {
        let after_cr = if i == 0 { cr } else { bytes[i - 1] == b'\r' };
        if after_cr {
            return Some(i + 1);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
#[path = "line_tests.rs"]
mod tests;
