//! Frame first, then parse: splits an IMAP byte stream into lines and literals.
//!
//! IMAP messages (commands and responses) are lines that may end in a literal announcement
//! (`{n}`, `{n+}`, `~{n}`), followed by exactly `n` bytes, followed by the rest of the
//! message as another line. The framer finds these boundaries without parsing the grammar,
//! under a line-length limit, so that literal bytes are never read as a command (the
//! classic proxy desync) and memory stays bounded whatever the peer sends.
//!
//! The framer is sans-IO: [`Framer::push`] takes bytes, [`Framer::next_fragment`] returns
//! the next complete [`Fragment`] or `None` when more input is needed. Literal payloads are
//! returned in chunks as they arrive (zero-copy splits of the input buffer), never buffered
//! whole.
//!
//! Call order: `push` any number of times, then call `next_fragment` until it returns
//! `None`. After a [`Fragment::Line`] announcing a synchronising literal on a
//! command stream, the framer waits for [`Framer::accept_literal`] or
//! [`Framer::reject_literal`] (the server's `+` or its tagged refusal) before it frames
//! anything else.

use bytes::{Bytes, BytesMut};

/// How a command or response stream is framed.
#[derive(Clone, Copy, Debug)]
pub struct FramerOptions {
    /// Longest line accepted, excluding the CRLF.
    pub max_line: usize,
    /// What happens to a line longer than `max_line`.
    pub long_lines: LongLines,
    /// Which side of the protocol produces the stream.
    pub stream: StreamKind,
}

/// What the framer does with a line longer than `max_line`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongLines {
    /// Report [`Fragment::LineTooLong`] and stop framing: the stream cannot be trusted.
    Reject,
    /// Return the line in [`Fragment::LinePart`] chunks, for relaying without inspection
    /// (a `* SEARCH` result of a large mailbox can be megabytes long).
    Stream,
}

/// Who writes the stream being framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Client commands: a synchronising literal waits for the server's `+`.
    Commands,
    /// Server responses: a literal's bytes follow at once, and status responses
    /// (`* OK ...`, `tag NO ...`, `+ ...`) carry free text that never announces a literal.
    Responses,
}

/// A literal announced at the end of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiteralHeader {
    /// Announced length in bytes. Saturates at `u64::MAX` for absurd announcements,
    /// which every size limit then refuses.
    pub len: u64,
    pub mode: LiteralMode,
    /// `~{n}`: a literal8 (RFC 3516 BINARY), which may contain NUL.
    pub binary: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralMode {
    /// `{n}`: the client waits for a `+` continuation before sending the bytes.
    Sync,
    /// `{n+}`: the bytes follow at once (RFC 7888 LITERAL+ / LITERAL-).
    NonSync,
}

/// How a line ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEnding {
    Crlf,
    /// LF without a CR before it. Policy decides what it means (`BareLfPolicy`).
    BareLf,
}

/// One unit of the framed stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// A complete line without its line ending.
    Line {
        line: Bytes,
        ending: LineEnding,
        /// True when this line starts a new command or response; false for the rest of a
        /// message after a literal.
        head: bool,
        /// The literal this line announces; its bytes follow as `LiteralData`.
        literal: Option<LiteralHeader>,
    },
    /// The start or middle of a line longer than `max_line` ([`LongLines::Stream`] only).
    /// The line goes on in further parts and ends with a `Line` whose `head` is false.
    LinePart { bytes: Bytes, head: bool },
    /// Bytes of the current literal, in order; their lengths add up to its `len`.
    LiteralData(Bytes),
    /// A line exceeded `max_line` ([`LongLines::Reject`]). The framer is poisoned: every
    /// later call returns `None`.
    LineTooLong,
}

/// Longest literal announcement the framer looks for at the end of a long line:
/// `~{` + 20 digits + `+}`.
const LITERAL_TAIL: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for the end of a line; bytes before `scanned` hold no LF.
    Line {
        scanned: usize,
        head: bool,
        streamed: bool,
    },
    /// A synchronising literal was announced; waiting for the caller's decision.
    AwaitLiteralDecision {
        len: u64,
    },
    /// Inside a literal with this many bytes still to come.
    Literal {
        remaining: u64,
    },
    Poisoned,
}

/// The stream framer. See the module documentation for the call order.
#[derive(Debug)]
pub struct Framer {
    options: FramerOptions,
    buf: BytesMut,
    state: State,
    /// For a streamed long line: whether its head showed a status response (no literal).
    streamed_is_status: bool,
}

impl Framer {
    pub fn new(mut options: FramerOptions) -> Self {
        // A streamed part keeps `LITERAL_TAIL` bytes back; the limit must leave room.
        if options.long_lines == LongLines::Stream {
            options.max_line = options.max_line.max(LITERAL_TAIL);
        }
        Self {
            options,
            buf: BytesMut::with_capacity(4096),
            state: State::Line {
                scanned: 0,
                head: true,
                streamed: false,
            },
            streamed_is_status: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.state != State::Poisoned {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The input buffer, with room for at least `additional` more bytes, for a driver that
    /// reads from its socket straight into it (saving a copy of every byte). Only
    /// appending to it is allowed; the bytes count as pushed.
    pub fn input_buffer(&mut self, additional: usize) -> &mut BytesMut {
        if self.state == State::Poisoned {
            // A poisoned framer keeps nothing, as `push` does.
            self.buf.clear();
        }
        self.buf.reserve(additional);
        &mut self.buf
    }

    /// Bytes received but not yet returned in a fragment.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True while a synchronising literal waits for [`Framer::accept_literal`] or
    /// [`Framer::reject_literal`].
    pub fn awaiting_literal_decision(&self) -> bool {
        matches!(self.state, State::AwaitLiteralDecision { .. })
    }

    /// True while the framer is inside a literal or the tail of a message after one:
    /// the next fragment does not start a new command or response.
    pub fn in_message(&self) -> bool {
        !matches!(
            self.state,
            State::Line {
                head: true,
                streamed: false,
                ..
            }
        )
    }

    /// The server sent `+`: the announced literal's bytes come next.
    pub fn accept_literal(&mut self) {
        if let State::AwaitLiteralDecision { len } = self.state {
            self.state = if len == 0 {
                State::Line {
                    scanned: 0,
                    head: false,
                    streamed: false,
                }
            } else {
                State::Literal { remaining: len }
            };
        }
    }

    /// The command was refused before its literal: the client will not send the bytes,
    /// so the next line starts a new command.
    pub fn reject_literal(&mut self) {
        if let State::AwaitLiteralDecision { .. } = self.state {
            self.state = State::Line {
                scanned: 0,
                head: true,
                streamed: false,
            };
        }
    }

    /// Returns the next complete fragment, or `None` if more input is needed (or the
    /// framer waits for a literal decision, or is poisoned).
    pub fn next_fragment(&mut self) -> Option<Fragment> {
        match self.state {
            State::Poisoned | State::AwaitLiteralDecision { .. } => None,
            State::Literal { remaining } => {
                if self.buf.is_empty() {
                    return None;
                }
                // Invariant: the chunk is at most `buf.len()`, which fits in usize.
                let take =
                    usize::try_from(remaining).map_or(self.buf.len(), |r| r.min(self.buf.len()));
                let data = self.buf.split_to(take).freeze();
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::Line {
                        scanned: 0,
                        head: false,
                        streamed: false,
                    }
                } else {
                    State::Literal { remaining: left }
                };
                Some(Fragment::LiteralData(data))
            }
            State::Line {
                scanned,
                head,
                streamed,
            } => self.next_line(scanned, head, streamed),
        }
    }

    fn next_line(&mut self, scanned: usize, head: bool, streamed: bool) -> Option<Fragment> {
        let Some(lf) = memchr::memchr(b'\n', &self.buf[scanned..]).map(|i| scanned + i) else {
            return self.line_incomplete(head, streamed);
        };
        let (content_len, ending) = if lf > 0 && self.buf[lf - 1] == b'\r' {
            (lf - 1, LineEnding::Crlf)
        } else {
            (lf, LineEnding::BareLf)
        };
        if content_len > self.options.max_line && self.options.long_lines == LongLines::Reject {
            return Some(self.poison());
        }
        let mut taken = self.buf.split_to(lf + 1);
        taken.truncate(content_len);
        let line = taken.freeze();
        let is_status = if streamed {
            self.streamed_is_status
        } else {
            head && self.options.stream == StreamKind::Responses
                && is_status_response(&line, self.options.max_line)
        };
        let literal = if is_status {
            None
        } else {
            literal_header(&line)
        };
        self.state = match literal {
            None => State::Line {
                scanned: 0,
                head: true,
                streamed: false,
            },
            Some(lit) => match (self.options.stream, lit.mode) {
                (StreamKind::Commands, LiteralMode::Sync) => {
                    State::AwaitLiteralDecision { len: lit.len }
                }
                _ if lit.len == 0 => State::Line {
                    scanned: 0,
                    head: false,
                    streamed: false,
                },
                _ => State::Literal { remaining: lit.len },
            },
        };
        Some(Fragment::Line {
            line,
            ending,
            head: head && !streamed,
            literal,
        })
    }

    /// No LF yet: either wait, refuse the line, or stream its beginning.
    fn line_incomplete(&mut self, head: bool, streamed: bool) -> Option<Fragment> {
        let len = self.buf.len();
        // A CR at the very end may belong to the CRLF; it is not part of the content yet.
        if len <= self.options.max_line + 1 {
            self.state = State::Line {
                scanned: len,
                head,
                streamed,
            };
            return None;
        }
        if self.options.long_lines == LongLines::Reject {
            return Some(self.poison());
        }
        if !streamed && head && self.options.stream == StreamKind::Responses {
            self.streamed_is_status = is_status_response(&self.buf, self.options.max_line);
        } else if !streamed {
            self.streamed_is_status = false;
        }
        // Keep a tail back so that a literal announcement is seen whole in the final Line.
        let part = self.buf.split_to(len - LITERAL_TAIL).freeze();
        self.state = State::Line {
            scanned: self.buf.len(),
            head: false,
            streamed: true,
        };
        Some(Fragment::LinePart {
            bytes: part,
            head: head && !streamed,
        })
    }

    fn poison(&mut self) -> Fragment {
        self.state = State::Poisoned;
        self.buf = BytesMut::new();
        Fragment::LineTooLong
    }
}

/// Parses a literal announcement at the end of a line (without its line ending):
///
/// ```abnf
/// literal  = "{" number64 ["+"] "}" CRLF *CHAR8      ; RFC 9051, RFC 7888
/// literal8 = "~{" number64 ["+"] "}" CRLF *OCTET     ; RFC 3516
/// ```
pub fn literal_header(line: &[u8]) -> Option<LiteralHeader> {
    let body = line.strip_suffix(b"}")?;
    let (body, mode) = match body.strip_suffix(b"+") {
        Some(b) => (b, LiteralMode::NonSync),
        None => (body, LiteralMode::Sync),
    };
    let open = memchr::memrchr(b'{', body)?;
    let digits = &body[open + 1..];
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = digits
        .iter()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(u64::MAX);
    let binary = open > 0 && body[open - 1] == b'~';
    Some(LiteralHeader { len, mode, binary })
}

/// True for responses whose rest is free text: `+ ...`, `* OK|NO|BAD|BYE|PREAUTH ...` and
/// tagged `tag OK|NO|BAD ...`.
///
/// Only the first `window` bytes are examined, and a status word must end inside them (at
/// a space, or at the end of a line that fits): a long line is then judged the same way
/// whether it arrived whole or was streamed in parts, so packet boundaries can never
/// change where a literal is seen.
fn is_status_response(line: &[u8], window: usize) -> bool {
    if line.first() == Some(&b'+') {
        return true;
    }
    let complete = line.len() <= window;
    let line = &line[..line.len().min(window)];
    let mut words = line.splitn(3, |&b| b == b' ');
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return false;
    };
    if first.is_empty() || (words.next().is_none() && !complete) {
        // An empty tag, or a second word cut off by the window.
        return false;
    }
    let status = |w: &[u8]| {
        [&b"OK"[..], b"NO", b"BAD"]
            .iter()
            .any(|s| w.eq_ignore_ascii_case(s))
    };
    if first == b"*" {
        status(second)
            || second.eq_ignore_ascii_case(b"BYE")
            || second.eq_ignore_ascii_case(b"PREAUTH")
    } else {
        status(second)
    }
}

#[cfg(test)]
#[path = "fragment_tests.rs"]
mod tests;
