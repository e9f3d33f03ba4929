//! A submitted message on its way to Postfix, streamed: the client's DATA bytes in, the
//! proxy's own canonical, dot-stuffed stream out (SECURITY-CASES §A), with the COI header
//! rewriting in between (issue 3, COI-PROTOCOL §4.7).
//!
//! ```text
//! client bytes ─▶ DataReceiver ─▶ HeaderScanner ─▶ checks, tokens ─▶ DotStuffer ─▶ Postfix
//!                 (CRLF, ".",      (header block     (From owned,     (".." again,
//!                  limits)          only, bounded)    chat → tokens)   ".\r\n" at the end)
//! ```
//!
//! Only the header block is buffered (at most [`MAX_HEADER_BLOCK`]); every body chunk
//! goes straight from the receiver to the stuffer, so memory stays constant in message
//! size and the body is byte-identical. Read into [`OutgoingMessage::input_buffer`], the
//! body leaves as slices of the bytes read: only a line that starts with a dot is
//! copied (to stuff it again). Nothing is released for the upstream before the
//! header passed its checks, so a refused message never reaches Postfix; a violation
//! found later in the body (bare LF, a long line, the size limit) makes
//! [`Step::End`] a refusal *without* the end-of-data line, and the caller must then drop
//! the upstream connection so that Postfix discards the open transaction.
//!
//! Call order: after the client's `DATA` and Postfix's 354, [`OutgoingMessage::push`]
//! client bytes, then take [`OutgoingMessage::next_step`] until it returns `None`; at
//! [`Step::End`] the message is over and [`OutgoingMessage::take_buffered`] holds the
//! client's pipelined commands after it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::address::{self, NormalizedAddress};
use super::classify::classify;
use super::headers::{
    field_addresses, issue_injections, visible_recipients, HeaderBlock, HeaderRewriter,
    HeaderScanner, Progress, MAX_HEADER_BLOCK,
};
use super::token::Secrets;
use crate::proto::smtp::data::{DataEvent, DataLimits, DataReceiver, DotStuffer, Lines};
use crate::proto::smtp::reply::Reply;

/// What every message of the process shares: how headers are rewritten and tokens issued.
#[derive(Clone, Debug)]
pub struct SubmitRules {
    pub rewriter: HeaderRewriter,
    /// Token secrets; without a temporary secret no token is injected (the client's COI
    /// fields are still removed).
    pub secrets: Secrets,
    /// Validity of the injected temporary tokens, in seconds.
    pub temporary_validity: u64,
    pub limits: DataLimits,
}

/// Who submits this message, as the session knows it after AUTH and MAIL FROM.
#[derive(Clone, Debug)]
pub struct Submitter {
    /// The envelope sender, normalised; `None` for the null reverse path `<>`.
    pub sender: Option<NormalizedAddress>,
    /// The addresses the authenticated user may write in `From`; `None`: any (the
    /// `insecure_allow_any_sender` setting).
    pub owned: Option<Arc<[NormalizedAddress]>>,
    /// Unix time, for the tokens' `created` field.
    pub now: u64,
    /// The `Message-ID` value (`<unique@host>`) to add when the message has none, so
    /// that every attempt to deliver it carries the same one (SECURITY-CASES §4 rule 6).
    pub message_id: String,
}

/// What the upstream gets next, or how the message ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Canonical, dot-stuffed bytes for Postfix.
    Upstream(Bytes),
    /// The end of the client's data.
    End(Outcome),
}

/// How a message ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send `tail` (the last stuffed bytes and the end-of-data line `.` CRLF), then relay
    /// Postfix's reply.
    Relay { tail: Bytes, summary: Summary },
    /// Do not end the upstream data: drop the upstream connection and answer `reply`.
    Refuse { reply: Reply, fault: Fault },
}

/// What the rewriting did, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub chat: bool,
    /// `X-COI-Temporary-Token` fields added.
    pub tokens: usize,
    /// Client-supplied COI fields removed.
    pub removed: usize,
    /// Body size as received (unstuffed, RFC 1870's measure).
    pub bytes: u64,
    /// The message had no `Message-ID`; the proxy added [`Submitter::message_id`].
    pub message_id_added: bool,
}

/// Who is at fault for a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client's message breaks a rule (framing, limits, sender ownership).
    Client,
    /// The proxy could not issue or render tokens (a bug or a bad setting).
    Internal,
}

/// One message in flight. See the module documentation.
#[derive(Debug)]
pub struct OutgoingMessage {
    rules: Arc<SubmitRules>,
    submitter: Submitter,
    receiver: DataReceiver,
    /// `Some` until the header block has ended.
    scanner: Option<HeaderScanner>,
    /// `None` once taken by `finish`.
    stuffer: Option<DotStuffer>,
    /// `false`: the output is the message itself (for a spool), not dot-stuffed and
    /// without the end-of-data line.
    stuffing: bool,
    /// Set when the header was refused: the rest of the data is read and dropped.
    refused: Option<(Reply, Fault)>,
    /// The message's Message-ID without angle brackets (its own or the one added), once
    /// the header block has been seen.
    message_id: Option<String>,
    summary: Summary,
    ended: bool,
}

impl OutgoingMessage {
    pub fn new(rules: Arc<SubmitRules>, submitter: Submitter) -> Self {
        let receiver = DataReceiver::new(rules.limits);
        Self {
            rules,
            submitter,
            receiver,
            scanner: Some(HeaderScanner::new(MAX_HEADER_BLOCK)),
            stuffer: Some(DotStuffer::new()),
            stuffing: true,
            refused: None,
            message_id: None,
            summary: Summary::default(),
            ended: false,
        }
    }

    /// A message whose output is the rewritten message itself: neither dot-stuffed nor
    /// ended with the end-of-data line, for a spool from which it is sent on later
    /// (over a peer link, or stuffed again for Postfix). [`Step::Upstream`] carries
    /// these bytes, and [`Outcome::Relay`]'s `tail` the last of them.
    pub fn unstuffed(rules: Arc<SubmitRules>, submitter: Submitter) -> Self {
        Self {
            stuffing: false,
            ..Self::new(rules, submitter)
        }
    }

    /// The message's Message-ID without angle brackets: its own, or the one the proxy
    /// added. `None` before the header block ended, or when its own does not parse.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Takes bytes from the client, exactly as received (still dot-stuffed).
    pub fn push(&mut self, bytes: &[u8]) {
        self.receiver.push(bytes);
    }

    /// The buffer to read the client's bytes into instead of [`OutgoingMessage::push`],
    /// with room for `additional` more ([`DataReceiver::input_buffer`]): the body then
    /// goes to the upstream in slices of that buffer, uncopied.
    pub fn input_buffer(&mut self, additional: usize) -> &mut BytesMut {
        self.receiver.input_buffer(additional)
    }

    /// The next step, or `None` when more client bytes are needed (or after the end).
    pub fn next_step(&mut self) -> Option<Step> {
        if self.ended {
            return None;
        }
        while let Some(event) = self.receiver.next_event() {
            match event {
                DataEvent::Chunk(chunk) => {
                    if let Some(out) = self.chunk(chunk) {
                        return Some(Step::Upstream(out));
                    }
                }
                DataEvent::End { bytes, violation } => {
                    self.ended = true;
                    self.summary.bytes = bytes;
                    let outcome = match (violation, self.refused.take()) {
                        (Some(violation), _) => Outcome::Refuse {
                            reply: violation.reply(),
                            fault: Fault::Client,
                        },
                        (None, Some((reply, fault))) => Outcome::Refuse { reply, fault },
                        (None, None) => self.finish(),
                    };
                    return Some(Step::End(outcome));
                }
            }
        }
        None
    }

    /// Whether the end of data has been seen.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The client bytes after the end of data (pipelined commands).
    pub fn take_buffered(&mut self) -> Bytes {
        self.receiver.take_buffered()
    }

    /// One body chunk from the receiver: buffered while the header lasts, else stuffed.
    fn chunk(&mut self, lines: Lines) -> Option<Bytes> {
        if self.refused.is_some() {
            return None;
        }
        let Some(scanner) = &mut self.scanner else {
            return Some(match &mut self.stuffer {
                Some(stuffer) if self.stuffing => stuffer.stuff_lines(lines),
                _ => lines.into_bytes(),
            });
        };
        match scanner.push(lines.into_bytes()) {
            Ok(Progress::NeedMore) => None,
            Ok(Progress::HeaderEnd { header, body_start }) => {
                self.scanner = None;
                match self.header(&header) {
                    Ok(rendered) => Some(self.stuff(&[&rendered, &body_start])),
                    Err(refusal) => {
                        self.refused = Some(refusal);
                        None
                    }
                }
            }
            Err(e) => {
                self.scanner = None;
                self.refused = Some((e.reply(), Fault::Client));
                None
            }
        }
    }

    /// The end of data without a violation: a message without a body (the header never
    /// ended) is rendered now; then the end-of-data line.
    fn finish(&mut self) -> Outcome {
        let mut out = BytesMut::new();
        if let Some(mut scanner) = self.scanner.take() {
            let rendered = match scanner.finish() {
                Ok(header) => self.header(&header),
                Err(e) => Err((e.reply(), Fault::Client)),
            };
            match rendered {
                Ok(rendered) => out = BytesMut::from(&self.stuff(&[&rendered])[..]),
                Err((reply, fault)) => return Outcome::Refuse { reply, fault },
            }
        }
        if let Some(stuffer) = self.stuffer.take() {
            if self.stuffing {
                stuffer.finish(&mut out);
            }
        }
        Outcome::Relay {
            tail: out.freeze(),
            summary: self.summary,
        }
    }

    fn stuff(&mut self, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // A leading dot per line at most doubles a pathological body; the common case is
        // a handful of extra bytes.
        let mut out = BytesMut::with_capacity(len + len / 64 + 8);
        if !self.stuffing {
            for part in parts {
                out.extend_from_slice(part);
            }
            return out.freeze();
        }
        if let Some(stuffer) = &mut self.stuffer {
            for part in parts {
                stuffer.stuff(part, &mut out);
            }
        }
        out.freeze()
    }

    /// The checks and the rewrite of the header block.
    fn header(&mut self, header: &HeaderBlock) -> Result<Bytes, (Reply, Fault)> {
        if let Some(owned) = &self.submitter.owned {
            check_from(header, owned)?;
        }
        let chat = classify(header).chat;
        let rules = &self.rules;
        let injections = match (&self.submitter.sender, chat) {
            (Some(sender), true) if !rules.secrets.temporary.is_empty() => issue_injections(
                &visible_recipients(header),
                sender,
                self.submitter.now,
                rules.temporary_validity,
                &rules.secrets,
            )
            .map_err(|_| internal())?,
            _ => Vec::new(),
        };
        let rendered = rules
            .rewriter
            .render(header, chat.then_some(&injections[..]))
            .map_err(|_| internal())?;
        self.summary.chat = chat;
        self.summary.tokens = if chat { injections.len() } else { 0 };
        self.summary.removed = rendered.removed;
        if header.first("Message-ID").is_some() || !is_message_id(&self.submitter.message_id) {
            self.message_id = super::dedup::message_id(header);
            return Ok(rendered.header);
        }
        let id = &self.submitter.message_id;
        self.message_id = Some(id[1..id.len() - 1].to_owned());
        // Field order carries no meaning (RFC 5322 §3.6), so the new field goes first,
        // which also works for a message that is all header without a blank line.
        let mut out =
            BytesMut::with_capacity(rendered.header.len() + 16 + self.submitter.message_id.len());
        out.extend_from_slice(b"Message-ID: ");
        out.extend_from_slice(self.submitter.message_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rendered.header);
        self.summary.message_id_added = true;
        Ok(out.freeze())
    }
}

/// SECURITY-CASES case 32: tokens sign the sender, so `From` must be the user's own.
/// Exactly one `From` field with exactly one address, and that address owned; a message
/// without `From` passes (Postfix does not add one on submission, and the recipient sees
/// no forged name).
fn check_from(header: &HeaderBlock, owned: &[NormalizedAddress]) -> Result<(), (Reply, Fault)> {
    let fields = header.all("From").count();
    if fields == 0 {
        return Ok(());
    }
    let addresses = field_addresses(header, "From");
    let is_owned = |a: &String| {
        address::normalize(a)
            .map(|a| owned.contains(&a))
            .unwrap_or(false)
    };
    if fields == 1 && addresses.len() == 1 && addresses.iter().all(is_owned) {
        return Ok(());
    }
    Err((
        Reply::new(
            553,
            Some((5, 7, 1)),
            "Sender address in From not owned by the authenticated user",
        ),
        Fault::Client,
    ))
}

/// `<` id-left `@` id-right `>` in printable ASCII without spaces, at most 250 octets:
/// what the proxy may write as a field value (the session builds it; this only keeps a
/// bad one off the wire).
fn is_message_id(id: &str) -> bool {
    id.len() <= 250
        && id.starts_with('<')
        && id.ends_with('>')
        && id.contains('@')
        && id.bytes().all(|b| b.is_ascii_graphic())
}

fn internal() -> (Reply, Fault) {
    (
        Reply::new(
            451,
            Some((4, 3, 0)),
            "Temporary internal error; try again later",
        ),
        Fault::Internal,
    )
}

/// Fuzz body (`coi_submit`): the pipeline never panics, does not depend on how the
/// client's bytes are split, and what it sends upstream is well-framed: a relayed message
/// ends the data exactly once, at its end; a refused one never ends it.
///
/// Input: byte 0 is the chunk size (`byte + 1`); byte 1, bit 0: a sender that owns only
/// `alice@a.test` (else any `From` passes); the rest is the client's DATA stream.
#[doc(hidden)]
pub fn fuzz_submit(data: &[u8]) {
    use crate::coi::token::Secret;
    let [size, flags, input @ ..] = data else {
        return;
    };
    let Ok(secret) = Secret::new(&b"fuzz-temporary-secret"[..]) else {
        return;
    };
    let rules = Arc::new(SubmitRules {
        rewriter: HeaderRewriter::new(Some("coi.a.test:4433")).unwrap_or_default(),
        secrets: Secrets {
            temporary: vec![secret],
            permanent: Vec::new(),
        },
        temporary_validity: 86_400,
        limits: DataLimits {
            max_line: 1000,
            max_size: 1 << 20,
        },
    });
    let me = address::normalize("alice@a.test").ok();
    let submitter = Submitter {
        sender: me.clone(),
        owned: (flags & 1 == 1).then(|| Arc::from(me.into_iter().collect::<Vec<_>>())),
        now: 1_700_000_000,
        message_id: "<fuzz.1@a.test>".to_owned(),
    };
    let run = |chunk: usize| {
        let mut message = OutgoingMessage::new(rules.clone(), submitter.clone());
        let mut upstream = Vec::new();
        for piece in input.chunks(chunk) {
            message.push(piece);
            while let Some(step) = message.next_step() {
                match step {
                    Step::Upstream(bytes) => upstream.extend_from_slice(&bytes),
                    Step::End(outcome) => return Some((upstream, outcome)),
                }
            }
        }
        None
    };
    let chunked = run(usize::from(*size) + 1);
    let whole = run(input.len().max(1));
    assert_eq!(
        chunked.as_ref().map(|(u, _)| u),
        whole.as_ref().map(|(u, _)| u),
        "the split of the input changed the upstream bytes"
    );
    let Some((mut upstream, outcome)) = whole else {
        return;
    };
    let relayed = match outcome {
        Outcome::Relay { tail, .. } => {
            upstream.extend_from_slice(&tail);
            true
        }
        Outcome::Refuse { .. } => false,
    };
    // Read the upstream bytes back as Postfix would.
    let mut receiver = DataReceiver::new(DataLimits {
        max_line: usize::MAX,
        max_size: u64::MAX,
    });
    receiver.push(&upstream);
    let mut ended = false;
    while let Some(event) = receiver.next_event() {
        if let DataEvent::End { violation, .. } = event {
            assert_eq!(violation, None, "the proxy's own stream is canonical");
            ended = true;
        }
    }
    assert_eq!(
        ended, relayed,
        "the data ends upstream exactly when relayed"
    );
    if relayed {
        assert!(receiver.take_buffered().is_empty(), "nothing after the end");
    }
}

#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
