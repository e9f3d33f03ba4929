//! The message body: the DATA receiver (end of data, dot-unstuffing, violations), the
//! dot-stuffing encoder for the upstream, and the BDAT chunk counter (RFC 3030).
//!
//! # DATA (RFC 5321 §4.1.1.4, §4.5.2)
//!
//! The data is a sequence of lines, each ended by CR LF; it ends at the first line that is
//! exactly `.`, so only at CR LF "." CR LF (the CR LF of the DATA command counts for the
//! first line). A line starting with `.` has that dot removed. Nothing else ends the data:
//! `\n.\r\n`, `\n.\n` and `\r.\r\n` are body bytes, which is what keeps a smuggled second
//! transaction inside the body (SECURITY-CASES §A cases 1–2).
//!
//! A bare CR, a bare LF or a NUL anywhere, a line longer than the limit, or a body larger
//! than the size limit is a [`DataViolation`]. The receiver then stops emitting body bytes
//! but keeps framing, counting what follows and dropping it, until the real end of
//! data, and reports the first violation with [`DataEvent::End`]: the session answers
//! with [`DataViolation::reply`] and stays in sync with the client.
//!
//! Only complete, valid lines are emitted, so a line with a bare LF never reaches the
//! upstream, not even in part (SECURITY-CASES case 4). Memory is bounded by the line limit
//! plus one push, whatever the message size.
//!
//! Call order: [`DataReceiver::push`] (or a read straight into
//! [`DataReceiver::input_buffer`]) any number of times, each followed by
//! [`DataReceiver::next_event`] until it returns `None`; after [`DataEvent::End`],
//! [`DataReceiver::take_buffered`] hands over the bytes that followed the data (pipelined
//! commands).
//!
//! # Copies
//!
//! The receiver emits [`Lines`]: slices of its input buffer, not copies. Read into
//! [`DataReceiver::input_buffer`] and passed on by [`DotStuffer::stuff_lines`], a body
//! line crosses the proxy without being copied or scanned again in user space, unless it
//! starts with a dot: the client's stuffed form of a canonical line is the proxy's own.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::line::{self, Fault, Scan};
use super::reply::Reply;

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF, not counting
/// a leading dot added for transparency. The default line limit.
pub const TEXT_LINE_MAX: usize = 1000;

/// Limits applied to a message body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataLimits {
    /// Longest line including CRLF, after unstuffing. Values below 2 count as 2.
    pub max_line: usize,
    /// Largest body in bytes (unstuffed, CRLFs included; RFC 1870's measure).
    pub max_size: u64,
}

impl Default for DataLimits {
    /// RFC 5321's line limit, and no size limit: bodies are streamed, never held whole,
    /// so size is a policy choice (configuration), not a memory bound.
    fn default() -> Self {
        Self {
            max_line: TEXT_LINE_MAX,
            max_size: u64::MAX,
        }
    }
}

/// What the receiver found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataEvent {
    /// Body bytes, unstuffed, in order: complete CRLF lines only. Chunk boundaries carry no
    /// meaning.
    Chunk(Lines),
    /// The end of data. `bytes` counts the whole body (unstuffed), including what was not
    /// emitted after a violation.
    End {
        bytes: u64,
        violation: Option<DataViolation>,
    },
}

/// Body lines as [`DataReceiver`] emits them: unstuffed, complete, each ended by CR LF
/// and holding no other CR or LF and no NUL. The type carries that promise to
/// [`DotStuffer::stuff_lines`], which then need not look at the bytes again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lines {
    bytes: Bytes,
    /// A line had its stuffing dot removed, so it may start with `.`; `false`: no line
    /// starts with `.`.
    dotted: bool,
}

impl Lines {
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl std::ops::Deref for Lines {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why a body must be refused. Every variant is the client's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataViolation {
    /// A CR not followed by LF.
    #[error("bare CR in message data")]
    BareCr,
    /// An LF not preceded by CR.
    #[error("bare LF in message data")]
    BareLf,
    /// A line longer than [`DataLimits::max_line`].
    #[error("message line too long")]
    LineTooLong,
    /// A NUL byte.
    #[error("NUL in message data")]
    Nul,
    /// The body is larger than [`DataLimits::max_size`].
    #[error("message too large")]
    TooLarge,
}

impl DataViolation {
    /// The reply to the end of data (SECURITY-CASES §A and case 36).
    pub fn reply(&self) -> Reply {
        match self {
            DataViolation::BareCr => Reply::new(
                550,
                Some((5, 6, 0)),
                "Message content rejected: bare CR received",
            ),
            DataViolation::BareLf => Reply::new(
                550,
                Some((5, 6, 0)),
                "Message content rejected: bare LF received",
            ),
            DataViolation::LineTooLong => Reply::new(
                554,
                Some((5, 6, 0)),
                "Message content rejected: line too long",
            ),
            DataViolation::Nul => Reply::new(
                550,
                Some((5, 6, 0)),
                "Message content rejected: NUL received",
            ),
            DataViolation::TooLarge => {
                Reply::new(552, Some((5, 3, 4)), "Message size exceeds fixed limit")
            }
        }
    }
}

/// The DATA receiver. See the module documentation for the rules and the call order.
#[derive(Debug)]
pub struct DataReceiver {
    limits: DataLimits,
    buf: BytesMut,
    /// `buf[..ready]` is body, unstuffed, waiting to be emitted; the current line starts at
    /// `ready`.
    ready: usize,
    /// Scan position within the current line (see [`line::scan`]).
    scanned: usize,
    /// The current line's stuffing dot was already removed from `buf`.
    dot_removed: bool,
    /// A line in `buf[..ready]` had its stuffing dot removed ([`Lines`]'s `dotted`).
    dotted: bool,
    /// Body bytes counted so far (emitted, ready, or counted after a violation).
    bytes: u64,
    violation: Option<DataViolation>,
    mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Buffering lines, emitting valid ones.
    Lines,
    /// After a violation: counting bytes up to the end of data; each push is counted and
    /// dropped by the next [`DataReceiver::next_event`].
    Counting(Count),
    /// `End` returned; `buf` holds what followed the data.
    Ended,
}

/// Where the counting machine is within a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Count {
    /// At the start of a line.
    LineStart,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
    /// Inside a line; `cr` is true when the last byte was a CR.
    Mid { cr: bool },
}

impl DataReceiver {
    /// A receiver for the bytes that follow the 354 reply.
    pub fn new(limits: DataLimits) -> Self {
        Self {
            limits: DataLimits {
                max_line: limits.max_line.max(2),
                ..limits
            },
            buf: BytesMut::new(),
            ready: 0,
            scanned: 0,
            dot_removed: false,
            dotted: false,
            bytes: 0,
            violation: None,
            mode: Mode::Lines,
        }
    }

    /// Appends received bytes (a copy; [`DataReceiver::input_buffer`] avoids it). After a
    /// violation they are counted by the next [`DataReceiver::next_event`] and dropped;
    /// after the end of data they are kept for [`DataReceiver::take_buffered`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer received bytes go into, with room for at least `additional` more: the
    /// IO loop reads the socket straight into it, then calls
    /// [`DataReceiver::next_event`] as after a push. The lines emitted are then slices of
    /// what was read, never copies.
    pub fn input_buffer(&mut self, additional: usize) -> &mut BytesMut {
        self.buf.reserve(additional);
        &mut self.buf
    }

    /// The next event, or `None` if more input is needed (or the end was returned).
    pub fn next_event(&mut self) -> Option<DataEvent> {
        loop {
            match self.mode {
                Mode::Ended => return None,
                Mode::Counting(state) => return self.count_buffered(state),
                Mode::Lines => {}
            }
            let line = &self.buf[self.ready..];
            if !self.dot_removed && self.scanned == 0 && !line.is_empty() && line[0] != b'.' {
                // The common case, a run of plain lines, in whole-buffer scans.
                let budget = self.limits.max_size.saturating_sub(self.bytes);
                let run = plain_lines(line, self.limits.max_line, budget);
                if run > 0 {
                    self.ready += run;
                    self.bytes += run as u64;
                    continue;
                }
            }
            if !self.dot_removed && self.scanned == 0 && line.first() == Some(&b'.') {
                match line.get(1..3) {
                    Some(b"\r\n") => {
                        if let Some(chunk) = self.take_ready() {
                            return Some(chunk);
                        }
                        self.buf.advance(3);
                        self.mode = Mode::Ended;
                        return Some(self.end_event());
                    }
                    // `.` or `.` CR so far: it may still be the terminator.
                    None if line.len() == 1 || line[1] == b'\r' => return self.take_ready(),
                    _ => {
                        // A stuffed line. The dot goes, so the bytes before it go first.
                        if let Some(chunk) = self.take_ready() {
                            return Some(chunk);
                        }
                        self.buf.advance(1);
                        self.dot_removed = true;
                        self.dotted = true;
                        continue;
                    }
                }
            }
            match line::scan(line, self.scanned, self.limits.max_line, true) {
                Scan::Incomplete { scanned } => {
                    self.scanned = scanned;
                    return self.take_ready();
                }
                Scan::Line { len } => {
                    let total = len as u64 + 2;
                    if self.bytes.saturating_add(total) > self.limits.max_size {
                        return self.violate(DataViolation::TooLarge);
                    }
                    self.bytes += total;
                    self.ready += len + 2;
                    self.scanned = 0;
                    self.dot_removed = false;
                }
                Scan::Fault { fault, .. } => {
                    return self.violate(match fault {
                        Fault::BareCr => DataViolation::BareCr,
                        Fault::BareLf => DataViolation::BareLf,
                        Fault::Nul => DataViolation::Nul,
                        Fault::TooLong => DataViolation::LineTooLong,
                    });
                }
            }
        }
    }

    /// The first violation so far, if any: the session may stop feeding the upstream at
    /// once, though it answers only at [`DataEvent::End`].
    pub fn violation(&self) -> Option<DataViolation> {
        self.violation
    }

    /// Body bytes counted so far (unstuffed).
    pub fn received(&self) -> u64 {
        self.bytes
    }

    /// True once [`DataEvent::End`] has been returned.
    pub fn is_ended(&self) -> bool {
        self.mode == Mode::Ended
    }

    /// Bytes received but not yet returned or counted. After the end, these are the bytes
    /// that followed the data.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// After [`DataEvent::End`]: the bytes that followed the end of data (pipelined
    /// commands, RFC 2920), for the command framer. Before it: empty.
    pub fn take_buffered(&mut self) -> Bytes {
        if self.mode == Mode::Ended {
            self.buf.split().freeze()
        } else {
            Bytes::new()
        }
    }

    fn end_event(&self) -> DataEvent {
        DataEvent::End {
            bytes: self.bytes,
            violation: self.violation,
        }
    }

    /// Emits the body bytes that are ready, if any.
    fn take_ready(&mut self) -> Option<DataEvent> {
        if self.ready == 0 {
            return None;
        }
        let bytes = self.buf.split_to(self.ready).freeze();
        self.ready = 0;
        Some(DataEvent::Chunk(Lines {
            bytes,
            dotted: std::mem::take(&mut self.dotted),
        }))
    }

    /// Records a violation in the current line and switches to counting from that line's
    /// start. The complete lines before it are still emitted: they are valid, and emitting
    /// them keeps the output independent of how the input was split.
    fn violate(&mut self, violation: DataViolation) -> Option<DataEvent> {
        self.violation.get_or_insert(violation);
        let chunk = self.take_ready();
        // `buf` now starts with the faulty line (after its stuffing dot, if removed).
        self.mode = Mode::Counting(if self.dot_removed {
            Count::Mid { cr: false }
        } else {
            Count::LineStart
        });
        if chunk.is_some() {
            return chunk;
        }
        self.next_event()
    }

    /// In counting mode: counts what is buffered as body and drops it, or finds the end
    /// of data in it and returns [`DataEvent::End`], keeping what follows.
    fn count_buffered(&mut self, state: Count) -> Option<DataEvent> {
        let (state, counted, end) = count(state, &self.buf);
        self.bytes = self.bytes.saturating_add(counted);
        match end {
            None => {
                self.buf.clear();
                self.mode = Mode::Counting(state);
                None
            }
            Some(end) => {
                self.buf.advance(end);
                self.mode = Mode::Ended;
                Some(self.end_event())
            }
        }
    }
}

/// Counts `input` as body from `state`: the new state, the bytes counted, and the index
/// just past the end of data if it lies in `input`.
fn count(mut state: Count, input: &[u8]) -> (Count, u64, Option<usize>) {
    let mut i = 0;
    let mut counted = 0u64;
    let end = loop {
        let Some(&b) = input.get(i) else {
            break None;
        };
        state = match state {
            Count::LineStart if b == b'.' => {
                i += 1;
                Count::Dot
            }
            Count::LineStart => Count::Mid { cr: false },
            Count::Dot if b == b'\r' => {
                i += 1;
                Count::DotCr
            }
            // The dot was a stuffing dot: not counted.
            Count::Dot => Count::Mid { cr: false },
            Count::DotCr if b == b'\n' => break Some(i + 1),
            Count::DotCr => {
                counted += 1; // the CR after the stuffing dot
                Count::Mid { cr: true }
            }
            Count::Mid { cr } => match memchr::memchr(b'\n', &input[i..]) {
                None => {
                    counted += (input.len() - i) as u64;
                    let cr = input.last().map_or(cr, |&l| l == b'\r');
                    i = input.len();
                    Count::Mid { cr }
                }
                Some(k) => {
                    let lf = i + k;
                    let after_cr = if lf > i { input[lf - 1] == b'\r' } else { cr };
                    counted += (lf - i + 1) as u64;
                    i = lf + 1;
                    if after_cr {
                        Count::LineStart
                    } else {
                        Count::Mid { cr: false }
                    }
                }
            },
        };
    };
    (state, counted, end)
}

/// The length of the longest prefix of `input` (which starts at a line start) made of
/// complete lines that need nothing but counting: each ends in CR LF, holds no other CR
/// or LF and no NUL, fits `max_line` (CR LF included), and the next one does not start
/// with `.` (which would be stuffing or the end of data); the prefix fits `budget`
/// bytes. 0 when the first line is not such a line: the per-line path then decides,
/// violations included.
fn plain_lines(input: &[u8], max_line: usize, budget: u64) -> usize {
    // A few passes over the whole input, each at memchr speed, rather than a search per
    // line: at 80-byte lines that costs about twice as much. The run ends at the first
    // line that breaks a rule; each pass below only moves that end earlier.
    let limit = usize::try_from(budget).map_or(input.len(), |b| b.min(input.len()));
    let mut run = &input[..limit];
    // A line starting with `.` ends the run after the line before it.
    if let Some(lf) = memchr::memmem::find(run, b"\n.") {
        run = &run[..lf + 1];
    }
    let Some(last_lf) = memchr::memrchr(b'\n', run) else {
        return 0;
    };
    run = &run[..last_lf + 1];
    // Every line fits `max_line`: from each line start, the last LF within `max_line`
    // bytes is the end of the last line that starts in that window, and the line after
    // it starts the next window. No LF in the window: that line is too long.
    let mut start = 0;
    while start < run.len() {
        let window = &run[start..run.len().min(start.saturating_add(max_line))];
        match memchr::memrchr(b'\n', window) {
            Some(lf) => start += lf + 1,
            None => run = &run[..start],
        }
    }
    if only_crlf(run, true) {
        return run.len();
    }
    // The run stops before the line holding the first fault (a violation ends the fast
    // path for good, so this rare scan does not repeat).
    run.split_inclusive(|&b| b == b'\n')
        .take_while(|line| only_crlf(line, true))
        .map(<[u8]>::len)
        .sum()
}

/// Whether every line end in `bytes` is CR LF: every CR is followed by an LF (so a CR at
/// the end is not) and every LF follows a CR; with `refuse_nul`, and there is no NUL.
/// One branch-free pass over byte pairs, which the compiler vectorises.
fn only_crlf(bytes: &[u8], refuse_nul: bool) -> bool {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return true;
    };
    let nul = u8::from(refuse_nul);
    let ends = u8::from(first == b'\n') | u8::from(last == b'\r') | (u8::from(last == 0) & nul);
    let pairs = bytes.iter().zip(&bytes[1..]);
    let faults = pairs.fold(ends, |faults, (&a, &b)| {
        faults | u8::from((a == b'\r') != (b == b'\n')) | (u8::from(a == 0) & nul)
    });
    faults == 0
}

/// Dot-stuffs a body for the upstream, streaming, in canonical form: every line ends in
/// CR LF (a bare LF or bare CR in the input becomes CR LF, so no input can produce a line
/// ending the upstream might read differently), and a line starting with `.` gets a
/// second one. [`DotStuffer::finish`] ends the last line if needed and writes the
/// terminator.
///
/// For CRLF-canonical input (all that [`DataReceiver`] emits) the receiver gives back
/// exactly the input.
#[derive(Clone, Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last byte written was a CR whose LF is not written yet.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the data (just after the DATA command's CRLF).
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the stuffed form of `body` to `out`.
    pub fn stuff<B: BufMut>(&mut self, body: &[u8], out: &mut B) {
        if !body.is_empty() && self.stuff_canonical(body, out) {
            return;
        }
        self.stuff_any(body, out);
    }

    /// Stuffs lines from [`DataReceiver`]. They are canonical already, so unless one may
    /// start with `.`, their stuffed form is themselves: they are returned as they are,
    /// neither copied nor scanned.
    pub fn stuff_lines(&mut self, lines: Lines) -> Bytes {
        if lines.dotted || !self.at_line_start || self.pending_cr {
            let mut out = BytesMut::with_capacity(lines.len() + lines.len() / 64 + 8);
            self.stuff(&lines, &mut out);
            return out.freeze();
        }
        // Complete lines: the stuffer stays at a line start.
        lines.into_bytes()
    }

    /// The fast path for CRLF-canonical input (what [`DataReceiver`] emits): whole-chunk
    /// scans instead of a search per line. `false`, writing nothing, when `body` is not
    /// canonical on its own (a bare CR or LF, a CR at its end, a CR pending from the
    /// previous chunk); [`DotStuffer::stuff_any`] then handles it.
    fn stuff_canonical<B: BufMut>(&mut self, body: &[u8], out: &mut B) -> bool {
        // No line end needs rewriting.
        if self.pending_cr || !only_crlf(body, false) {
            return false;
        }
        if self.at_line_start && body[0] == b'.' {
            out.put_u8(b'.');
        }
        let mut start = 0;
        for at in memchr::memmem::find_iter(body, b"\n.") {
            out.put_slice(&body[start..=at]);
            out.put_u8(b'.');
            start = at + 1;
        }
        out.put_slice(&body[start..]);
        self.at_line_start = body.last() == Some(&b'\n');
        true
    }

    /// Any input: bare CR and bare LF become CR LF.
    fn stuff_any<B: BufMut>(&mut self, body: &[u8], out: &mut B) {
        let mut i = 0;
        while i < body.len() {
            if self.pending_cr {
                self.pending_cr = false;
                out.put_u8(b'\n');
                self.at_line_start = true;
                if body[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            if self.at_line_start {
                self.at_line_start = false;
                if body[i] == b'.' {
                    out.put_u8(b'.');
                }
            }
            match memchr::memchr2(b'\r', b'\n', &body[i..]) {
                None => {
                    out.put_slice(&body[i..]);
                    i = body.len();
                }
                Some(k) => {
                    let at = i + k;
                    out.put_slice(&body[i..at]);
                    if body[at] == b'\r' {
                        out.put_u8(b'\r');
                        self.pending_cr = true;
                    } else {
                        out.put_slice(b"\r\n");
                        self.at_line_start = true;
                    }
                    i = at + 1;
                }
            }
        }
    }

    /// Ends the last line if it is open and writes the end-of-data line `.` CR LF.
    pub fn finish<B: BufMut>(self, out: &mut B) {
        if self.pending_cr {
            out.put_u8(b'\n');
        } else if !self.at_line_start {
            out.put_slice(b"\r\n");
        }
        out.put_slice(b".\r\n");
    }
}

/// Counts the bytes of one BDAT chunk (RFC 3030 §2): exactly the announced size follows
/// the command line, raw (no dot-stuffing, no end marker). The counter never allocates
/// for the announced size, which may be absurd (SECURITY-CASES case 35).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BdatChunk {
    remaining: u64,
    last: bool,
}

impl BdatChunk {
    /// A chunk of `size` bytes; `last` if the command had `LAST`.
    pub fn new(size: u64, last: bool) -> Self {
        Self {
            remaining: size,
            last,
        }
    }

    /// Splits `input` into the part that belongs to this chunk and the rest (the next
    /// command line), and counts the first part.
    pub fn consume<'a>(&mut self, input: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let take = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        self.remaining -= take as u64;
        input.split_at(take)
    }

    /// Bytes of the chunk still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// True when all the chunk's bytes have been consumed.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// True for the message's last chunk (`BDAT n LAST`).
    pub fn is_last(&self) -> bool {
        self.last
    }
}

/// The naive end-of-data reference the fuzz target and the tests compare the receiver
/// with: it looks at the whole input at once, byte by byte, with none of the receiver's
/// incremental state.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceData {
    /// Index just past the terminating `.` CR LF.
    pub end: usize,
    /// The whole body, unstuffed.
    pub body: Vec<u8>,
    /// What the receiver must emit: the lines before the first faulty one.
    pub emitted: Vec<u8>,
    /// The first violation, as the receiver must report it.
    pub violation: Option<DataViolation>,
}

/// See [`ReferenceData`]. `None` if `input` holds no end of data.
#[doc(hidden)]
pub fn reference_end_of_data(input: &[u8], limits: DataLimits) -> Option<ReferenceData> {
    // The data starts just after a CRLF (the DATA command's), so look for CRLF "." CRLF
    // in CRLF + input.
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(input);
    let at = framed.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let end = at + 3;
    let wire = &input[..at];
    let max_line = limits.max_line.max(2);
    let mut body = Vec::new();
    let mut emitted = Vec::new();
    let mut violation = None;
    let mut rest = wire;
    while !rest.is_empty() {
        let split = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(rest.len());
        let raw = &rest[..split];
        rest = &rest[(split + 2).min(rest.len())..];
        let content = raw.strip_prefix(b".").unwrap_or(raw);
        let mut full = content.to_vec();
        full.extend_from_slice(b"\r\n");
        body.extend_from_slice(&full);
        if violation.is_some() {
            continue;
        }
        violation = reference_line_fault(&full, max_line);
        if violation.is_none() && body.len() as u64 > limits.max_size {
            violation = Some(DataViolation::TooLarge);
        }
        if violation.is_none() {
            emitted.extend_from_slice(&full);
        }
    }
    Some(ReferenceData {
        end,
        body,
        emitted,
        violation,
    })
}

/// The first fault of one line (`full` ends with its CRLF), decided byte by byte as the
/// receiver's documentation states: NUL or LF at its position, CR at the next byte, an
/// over-long line at byte `max_line - 1`.
fn reference_line_fault(full: &[u8], max_line: usize) -> Option<DataViolation> {
    for k in 0..full.len() {
        let b = full[k];
        if b == 0 {
            return Some(DataViolation::Nul);
        }
        if b == b'\n' {
            // The first CRLF ends the line, so any LF met here is bare.
            return Some(DataViolation::BareLf);
        }
        if b == b'\r' {
            if k + 1 >= max_line {
                return Some(DataViolation::LineTooLong);
            }
            if full[k + 1] == b'\n' {
                return None;
            }
            return Some(DataViolation::BareCr);
        }
        if k + 1 >= max_line {
            return Some(DataViolation::LineTooLong);
        }
    }
    None
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
