//! One connection to Dovecot, logged in as a user through the master user: the login,
//! framing of Dovecot's responses, and the command/reply cycle every operation uses.
//!
//! The writer never pipelines: one command is on the wire at a time, and
//! [`Conn::in_flight`] is set from its first byte until its tagged reply has been read.
//! A connection whose flag is still set when it is given back (an error, or a cancelled
//! future) is in an unknown state and is closed, never reused.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;

use super::config::WriterConfig;
use super::error::{BodyError, ProtocolViolation, Refusal, RefusalStatus, ResponseCode};
use super::WriterError;
use crate::net::stream::MaybeTls;
use crate::proto::imap::client::{self, Capabilities, Command, Literals};
use crate::proto::imap::fragment::{
    Fragment, Framer, FramerOptions, LineEnding, LongLines, StreamKind,
};
use crate::proto::imap::response::{response_head, Code, ResponseHead, Status};

/// Longest response line framed whole: Dovecot's own `imap_max_line_length` default.
/// Longer lines (the SEARCH result of a large mailbox) are framed in parts and count
/// against `max_response_bytes` when kept.
const MAX_LINE: usize = 64 * 1024;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes of an APPEND body read and written per step: large enough for few system
/// calls, small enough that the body is never held in memory.
const BODY_CHUNK: usize = 64 * 1024;

/// Longest Dovecot text kept in an error (its texts are one short sentence).
const MAX_TEXT: usize = 256;

/// Decides from a response's first line whether the caller wants the whole response.
pub(super) type Want = fn(&ResponseHead<'_>) -> bool;

/// Wants no untagged response.
pub(super) fn want_none(_: &ResponseHead<'_>) -> bool {
    false
}

/// A tagged reply.
#[derive(Debug)]
pub(super) struct Completion {
    /// OK, NO or BAD.
    pub status: Status,
    /// The response code, if any.
    pub code: Option<ResponseCode>,
    /// The text after the code.
    pub text: String,
    /// The capabilities of a `[CAPABILITY ...]` code, read in full (the owned code's
    /// text is bounded for error messages).
    pub capabilities: Option<Capabilities>,
}

impl Completion {
    /// The completion if it is OK, else the refusal as an error.
    pub fn ok(self, command: &'static str) -> Result<Completion, WriterError> {
        match self.refusal() {
            None => Ok(self),
            Some(refusal) => Err(WriterError::Refused { command, refusal }),
        }
    }

    /// The refusal if the reply is NO or BAD.
    pub fn refusal(&self) -> Option<Refusal> {
        let status = match self.status {
            Status::Ok => return None,
            Status::No => RefusalStatus::No,
            // `response_head` only returns OK, NO or BAD for tagged replies.
            _ => RefusalStatus::Bad,
        };
        Some(Refusal {
            status,
            code: self.code.clone(),
            text: self.text.clone(),
        })
    }
}

/// One complete response, as [`Conn::read_message`] returns it.
enum Message {
    /// `+ ...`
    Continuation,
    /// A tagged reply's line.
    Tagged(Bytes),
    /// A wanted untagged response in wire form (literals inline).
    Untagged(Bytes),
    /// An untagged response nobody wanted, read and dropped.
    Skipped,
    /// A wanted untagged response over `max_response_bytes`, read and dropped.
    TooLarge,
}

/// A connection, logged in.
pub(super) struct Conn {
    stream: MaybeTls,
    framer: Framer,
    caps: Capabilities,
    literals: Literals,
    next_tag: u64,
    /// When the TCP connection was established.
    pub opened: Instant,
    /// When the connection was last given back to the pool.
    pub idle_since: Instant,
    /// A command's first byte was sent and its tagged reply not yet read.
    pub in_flight: bool,
    /// Dovecot said BYE; its text.
    bye: Option<String>,
    reply_timeout: Duration,
    max_response: usize,
    /// The pool slot this connection occupies; released when the connection is dropped.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Connects, reads the greeting and logs in as `user` through the master user.
    pub async fn open(
        config: &WriterConfig,
        user: &str,
        permit: OwnedSemaphorePermit,
    ) -> Result<Conn, WriterError> {
        let stream = connect(config).await?;
        let literals = if config.literal_plus {
            Literals::NonSync
        } else {
            Literals::Sync
        };
        let now = Instant::now();
        let mut conn = Conn {
            stream,
            framer: Framer::new(FramerOptions {
                max_line: MAX_LINE,
                long_lines: LongLines::Stream,
                stream: StreamKind::Responses,
            }),
            caps: Capabilities::default(),
            literals,
            next_tag: 0,
            opened: now,
            idle_since: now,
            in_flight: true,
            bye: None,
            reply_timeout: config.reply_timeout,
            max_response: config.max_response_bytes,
            _permit: permit,
        };
        conn.greeting().await?;
        conn.login(config, user).await?;
        conn.in_flight = false;
        Ok(conn)
    }

    /// Whether Dovecot said BYE on this connection.
    pub fn saw_bye(&self) -> bool {
        self.bye.is_some()
    }

    /// Whether an idle connection still looks usable: nothing in flight, and nothing
    /// arrived while it was idle. Dovecot sends nothing unasked outside IDLE, so any
    /// byte (a `* BYE` at shutdown or autologout), the end of the stream or an error
    /// means the connection is gone. Never waits.
    pub fn idle_and_alive(&mut self) -> bool {
        if self.in_flight || self.bye.is_some() || self.framer.in_message() {
            return false;
        }
        if self.framer.buffered() > 0 {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 64];
        let mut buf = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// A fresh tag.
    pub fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("w{}", self.next_tag)
    }

    /// A command on this connection's literal forms.
    pub fn command(&mut self, name: &str) -> (String, Command) {
        let tag = self.tag();
        let literals = if self.literals == Literals::NonSync {
            self.caps.literals()
        } else {
            Literals::Sync
        };
        let command = Command::new(&tag, name, literals);
        (tag, command)
    }

    /// Sends a complete command and reads its reply. Untagged responses for which
    /// `want` is true are handed to `on_data` whole; all others are skipped.
    ///
    /// Returns the tagged reply whatever its status; an error means the reply never
    /// came (or a wanted response was over the limit, after the reply came).
    pub async fn run(
        &mut self,
        name: &'static str,
        tag: &str,
        command: Command,
        want: Want,
        on_data: &mut (dyn FnMut(Bytes) -> Result<(), WriterError> + Send),
    ) -> Result<Completion, WriterError> {
        let parts = command.finish();
        if let Some(refused) = self
            .send_parts(name, tag, &parts, false, want, on_data)
            .await?
        {
            return Ok(refused);
        }
        self.await_tagged(name, tag, want, on_data).await
    }

    /// APPEND: sends the command, streams exactly `len` bytes of `body` as its
    /// literal, and reads the reply.
    ///
    /// The literal's last bytes are held back until `body` has ended exactly at `len`:
    /// a short or long body makes this return an error with the literal still
    /// incomplete, and the caller closes the connection, so Dovecot sees the client
    /// vanish mid-APPEND and stores nothing. A truncated message can never be taken as
    /// complete.
    pub async fn append(
        &mut self,
        tag: &str,
        command: Command,
        len: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Completion, WriterError> {
        let name = "APPEND";
        let (parts, sync) = command.finish_with_literal(len);
        let mut skip = |_: Bytes| Ok(());
        if let Some(refused) = self
            .send_parts(name, tag, &parts, sync, want_none, &mut skip)
            .await?
        {
            // Refused before the literal (TRYCREATE, TOOBIG): nothing of the body was
            // sent and the connection is in step.
            return Ok(refused);
        }
        self.stream_body(len, body).await?;
        self.await_tagged(name, tag, want_none, &mut skip).await
    }

    /// Reads the greeting: `* OK [CAPABILITY ...]`, else BYE or a protocol error.
    async fn greeting(&mut self) -> Result<(), WriterError> {
        let deadline = Instant::now() + self.reply_timeout;
        let line = match self.read_message(deadline, "greeting", |_| true).await? {
            Message::Untagged(line) => line,
            Message::Skipped if self.bye.is_some() => return Err(self.lost(None)),
            _ => return Err(WriterError::Protocol(ProtocolViolation::BadGreeting)),
        };
        match response_head(&line) {
            Ok(ResponseHead::UntaggedStatus {
                status: Status::Ok,
                code,
            }) => {
                if let Some(code) = code.filter(|c| c.is("CAPABILITY")) {
                    self.caps = Capabilities::parse(code.args);
                }
                Ok(())
            }
            Ok(ResponseHead::UntaggedStatus {
                status: Status::Preauth,
                ..
            }) => Err(WriterError::Protocol(ProtocolViolation::UnexpectedPreauth)),
            _ => Err(WriterError::Protocol(ProtocolViolation::BadGreeting)),
        }
    }

    /// AUTHENTICATE PLAIN with authzid = user, authcid = master user (RFC 4616), with
    /// the initial response in the command when SASL-IR is advertised.
    async fn login(&mut self, config: &WriterConfig, user: &str) -> Result<(), WriterError> {
        let name = "AUTHENTICATE";
        if self.caps == Capabilities::default() {
            // The greeting carried no capabilities.
            self.capability().await?;
        }
        let message = client::sasl_plain(
            user.as_bytes(),
            config.master_user.as_bytes(),
            config.master_password.expose().as_bytes(),
        )?;
        let mut response = base64::engine::general_purpose::STANDARD.encode(&message);
        let tag = self.tag();
        // Credentials: never logged; the buffers are dropped right after the write.
        let completion = if self.caps.sasl_ir {
            let line = format!("{tag} AUTHENTICATE PLAIN {response}\r\n");
            response.clear();
            self.in_flight = true;
            self.write(line.as_bytes(), name).await?;
            drop(line);
            self.await_tagged(name, &tag, want_none, &mut |_| Ok(()))
                .await?
        } else {
            self.in_flight = true;
            self.write(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes(), name)
                .await?;
            let deadline = Instant::now() + self.reply_timeout;
            match self
                .await_continuation(name, &tag, deadline, want_none, &mut |_| Ok(()))
                .await?
            {
                Some(refused) => refused,
                None => {
                    response.push_str("\r\n");
                    self.write(response.as_bytes(), name).await?;
                    response.clear();
                    self.await_tagged(name, &tag, want_none, &mut |_| Ok(()))
                        .await?
                }
            }
        };
        if let Some(refusal) = completion.refusal() {
            debug!(user, %refusal, "master login refused");
            return Err(WriterError::AuthFailed { refusal });
        }
        match completion.capabilities {
            Some(caps) => self.caps = caps,
            None => self.capability().await?,
        }
        if !self.caps.uidplus {
            return Err(WriterError::Unsupported {
                capability: "UIDPLUS",
            });
        }
        Ok(())
    }

    /// CAPABILITY, for servers that do not volunteer the list.
    async fn capability(&mut self) -> Result<(), WriterError> {
        let (tag, command) = self.command("CAPABILITY");
        let mut caps = None;
        self.in_flight = true;
        let completion = self
            .run(
                "CAPABILITY",
                &tag,
                command,
                |h| matches!(h, ResponseHead::Capability { .. }),
                &mut |line| {
                    if let Ok(ResponseHead::Capability { caps: atoms }) = response_head(&line) {
                        caps = Some(Capabilities::parse(atoms));
                    }
                    Ok(())
                },
            )
            .await?;
        completion.ok("CAPABILITY")?;
        self.caps = caps.unwrap_or_default();
        Ok(())
    }

    /// Writes the parts of a command, waiting for `+` after each synchronising literal
    /// announcement (and after the last part if `wait_last`). Returns the tagged reply
    /// if Dovecot refused the command before it was complete.
    async fn send_parts(
        &mut self,
        name: &'static str,
        tag: &str,
        parts: &[Vec<u8>],
        wait_last: bool,
        want: Want,
        on_data: &mut (dyn FnMut(Bytes) -> Result<(), WriterError> + Send),
    ) -> Result<Option<Completion>, WriterError> {
        self.in_flight = true;
        for (i, part) in parts.iter().enumerate() {
            self.write(part, name).await?;
            if i + 1 < parts.len() || wait_last {
                let deadline = Instant::now() + self.reply_timeout;
                if let Some(refused) = self
                    .await_continuation(name, tag, deadline, want, on_data)
                    .await?
                {
                    return Ok(Some(refused));
                }
            }
        }
        Ok(None)
    }

    /// Streams the APPEND literal; see [`Conn::append`].
    async fn stream_body(
        &mut self,
        len: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), WriterError> {
        // Invariant: BODY_CHUNK fits in usize, so `chunk` does too.
        let chunk = usize::try_from(len.min(BODY_CHUNK as u64)).unwrap_or(BODY_CHUNK);
        let mut buf = vec![0u8; chunk];
        let mut remaining = len;
        while remaining > 0 {
            let want = usize::try_from(remaining.min(chunk as u64)).unwrap_or(chunk);
            let n = self.read_body(body, &mut buf[..want]).await?;
            if n == 0 {
                return Err(WriterError::Body(BodyError::Short {
                    expected: len,
                    received: len - remaining,
                }));
            }
            remaining -= n as u64;
            if remaining == 0 {
                // Before the literal's last bytes go out: the body must end here.
                self.expect_body_end(body, len).await?;
            }
            self.write(&buf[..n], "APPEND").await?;
        }
        if len == 0 {
            self.expect_body_end(body, len).await?;
        }
        self.write(b"\r\n", "APPEND").await
    }

    async fn read_body(
        &self,
        body: &mut (dyn AsyncRead + Unpin + Send),
        buf: &mut [u8],
    ) -> Result<usize, WriterError> {
        match timeout(self.reply_timeout, body.read(buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(WriterError::Body(BodyError::Read(e))),
            Err(_) => Err(WriterError::Body(BodyError::Stalled)),
        }
    }

    async fn expect_body_end(
        &self,
        body: &mut (dyn AsyncRead + Unpin + Send),
        len: u64,
    ) -> Result<(), WriterError> {
        let mut probe = [0u8; 1];
        match self.read_body(body, &mut probe).await? {
            0 => Ok(()),
            _ => Err(WriterError::Body(BodyError::Long { expected: len })),
        }
    }

    /// Reads until `+` (`None`) or the tagged reply (`Some`, the command was refused).
    async fn await_continuation(
        &mut self,
        name: &'static str,
        tag: &str,
        deadline: Instant,
        want: Want,
        on_data: &mut (dyn FnMut(Bytes) -> Result<(), WriterError> + Send),
    ) -> Result<Option<Completion>, WriterError> {
        let mut too_large = false;
        loop {
            match self.read_message(deadline, name, want).await? {
                Message::Continuation => return Ok(None),
                Message::Tagged(line) => {
                    let completion = self.completion(tag, &line)?;
                    return Self::unless_too_large(too_large, self.max_response, completion)
                        .map(Some);
                }
                Message::Untagged(data) => on_data(data)?,
                Message::Skipped => {}
                Message::TooLarge => too_large = true,
            }
        }
    }

    /// Reads until the tagged reply.
    async fn await_tagged(
        &mut self,
        name: &'static str,
        tag: &str,
        want: Want,
        on_data: &mut (dyn FnMut(Bytes) -> Result<(), WriterError> + Send),
    ) -> Result<Completion, WriterError> {
        let deadline = Instant::now() + self.reply_timeout;
        let mut too_large = false;
        loop {
            match self.read_message(deadline, name, want).await? {
                Message::Continuation => {
                    return Err(WriterError::Protocol(
                        ProtocolViolation::UnexpectedContinuation,
                    ))
                }
                Message::Tagged(line) => {
                    let completion = self.completion(tag, &line)?;
                    return Self::unless_too_large(too_large, self.max_response, completion);
                }
                Message::Untagged(data) => on_data(data)?,
                Message::Skipped => {}
                Message::TooLarge => too_large = true,
            }
        }
    }

    fn unless_too_large(
        too_large: bool,
        limit: usize,
        completion: Completion,
    ) -> Result<Completion, WriterError> {
        if too_large {
            Err(WriterError::ResponseTooLarge { limit })
        } else {
            Ok(completion)
        }
    }

    /// Parses a tagged reply to the command in flight, which ends it.
    fn completion(&mut self, tag: &str, line: &[u8]) -> Result<Completion, WriterError> {
        let Ok(ResponseHead::Tagged {
            tag: got,
            status,
            code,
        }) = response_head(line)
        else {
            return Err(WriterError::Protocol(ProtocolViolation::MalformedResponse));
        };
        if got != tag.as_bytes() {
            return Err(WriterError::Protocol(ProtocolViolation::UnexpectedTag));
        }
        self.in_flight = false;
        Ok(Completion {
            status,
            capabilities: code
                .filter(|c| c.is("CAPABILITY"))
                .map(|c| Capabilities::parse(c.args)),
            code: code.map(owned_code),
            text: text_of(client::status_text(line)),
        })
    }

    /// Reads one complete response. A wanted untagged response is returned whole (up to
    /// `max_response_bytes`); any other is read through and dropped chunk by chunk, so
    /// an unwanted literal is never held in memory.
    async fn read_message(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
        want: Want,
    ) -> Result<Message, WriterError> {
        let (first, mut complete, announces_literal) =
            match self.fragment(deadline, waiting_for).await? {
                Fragment::Line {
                    line,
                    ending,
                    head: true,
                    literal,
                } => {
                    check_ending(ending)?;
                    (line, literal.is_none(), literal.is_some())
                }
                Fragment::LinePart { bytes, head: true } => (bytes, false, false),
                // Every message is read to its end, so the next fragment always starts
                // one; the framer streams long lines instead of refusing them.
                _ => return Err(WriterError::Protocol(ProtocolViolation::MalformedResponse)),
            };
        enum Kind {
            Continuation,
            Tagged,
            Bye,
            Data { wanted: bool },
        }
        let kind = match response_head(&first) {
            Ok(ResponseHead::Continuation) => Kind::Continuation,
            Ok(ResponseHead::Tagged { .. }) => Kind::Tagged,
            Ok(ResponseHead::UntaggedStatus {
                status: Status::Bye,
                ..
            }) => Kind::Bye,
            Ok(head) => Kind::Data {
                wanted: want(&head),
            },
            Err(_) => return Err(WriterError::Protocol(ProtocolViolation::MalformedResponse)),
        };
        // Status lines are kept whatever `want` says: they are one line, and the framer
        // never sees a literal in them.
        let keep = !matches!(kind, Kind::Data { wanted: false });
        let mut size = first.len();
        let mut oversized = size > self.max_response;
        let mut whole = BytesMut::new();
        if keep && !complete && !oversized {
            whole.extend_from_slice(&first);
            if announces_literal {
                whole.extend_from_slice(b"\r\n");
            }
        }
        while !complete {
            let (bytes, crlf) = match self.fragment(deadline, waiting_for).await? {
                Fragment::LiteralData(data) => (data, false),
                Fragment::LinePart { bytes, head: false } => (bytes, false),
                Fragment::Line {
                    line,
                    ending,
                    head: false,
                    literal,
                } => {
                    check_ending(ending)?;
                    complete = literal.is_none();
                    (line, literal.is_some())
                }
                _ => return Err(WriterError::Protocol(ProtocolViolation::MalformedResponse)),
            };
            size = size.saturating_add(bytes.len() + if crlf { 2 } else { 0 });
            if !keep || oversized {
                continue;
            }
            if size > self.max_response {
                oversized = true;
                whole = BytesMut::new();
                continue;
            }
            whole.extend_from_slice(&bytes);
            if crlf {
                whole.extend_from_slice(b"\r\n");
            }
        }
        let message = if whole.is_empty() {
            first
        } else {
            whole.freeze()
        };
        Ok(match kind {
            Kind::Continuation => Message::Continuation,
            Kind::Tagged if oversized => {
                return Err(WriterError::Protocol(ProtocolViolation::MalformedResponse))
            }
            Kind::Tagged => Message::Tagged(message),
            Kind::Bye => {
                let text = text_of(client::status_text(&message));
                debug!(%text, "Dovecot said BYE");
                self.bye = Some(text);
                Message::Skipped
            }
            Kind::Data { wanted: false } => Message::Skipped,
            Kind::Data { wanted: true } if oversized => Message::TooLarge,
            Kind::Data { wanted: true } => Message::Untagged(message),
        })
    }

    /// The next fragment of Dovecot's stream, reading as needed until `deadline`.
    async fn fragment(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
    ) -> Result<Fragment, WriterError> {
        loop {
            if let Some(fragment) = self.framer.next_fragment() {
                return Ok(fragment);
            }
            let buf = self.framer.input_buffer(READ_CHUNK);
            match timeout_at(deadline, self.stream.read_buf(buf)).await {
                Err(_) => return Err(WriterError::Timeout { waiting_for }),
                Ok(Err(e)) => return Err(self.lost(Some(e))),
                Ok(Ok(0)) => return Err(self.lost(None)),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Writes and flushes, each within the reply timeout.
    async fn write(&mut self, bytes: &[u8], waiting_for: &'static str) -> Result<(), WriterError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout(self.reply_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.lost(Some(e))),
            Err(_) => Err(WriterError::Timeout { waiting_for }),
        }
    }

    /// The error for a connection that ended: BYE if Dovecot said why.
    fn lost(&self, source: Option<std::io::Error>) -> WriterError {
        match &self.bye {
            Some(text) => WriterError::Bye { text: text.clone() },
            None => WriterError::Closed { source },
        }
    }
}

/// TCP connect, then the TLS handshake if configured, together within the connect
/// timeout.
async fn connect(config: &WriterConfig) -> Result<MaybeTls, WriterError> {
    let deadline = Instant::now() + config.connect_timeout;
    let tcp = match timeout_at(
        deadline,
        TcpStream::connect((config.host.as_str(), config.port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(WriterError::Connect {
                detail: "connect failed",
                source: Some(e),
            })
        }
        Err(_) => {
            return Err(WriterError::Connect {
                detail: "connect timed out",
                source: None,
            })
        }
    };
    // Commands are small writes waiting for replies: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &config.tls else {
        return Ok(MaybeTls::Plain(tcp));
    };
    match timeout_at(
        deadline,
        tls.connector.connect(tls.server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(stream)) => Ok(MaybeTls::ClientTls(Box::new(stream))),
        Ok(Err(e)) => Err(WriterError::Connect {
            detail: "TLS handshake failed",
            source: Some(e),
        }),
        Err(_) => Err(WriterError::Connect {
            detail: "TLS handshake timed out",
            source: None,
        }),
    }
}

/// Dovecot ends every line with CRLF; a bare LF means the stream is not what we think.
fn check_ending(ending: LineEnding) -> Result<(), WriterError> {
    match ending {
        LineEnding::Crlf => Ok(()),
        LineEnding::BareLf => Err(WriterError::Protocol(ProtocolViolation::BareLf)),
    }
}

fn owned_code(code: Code<'_>) -> ResponseCode {
    ResponseCode {
        name: String::from_utf8_lossy(code.name).to_ascii_uppercase(),
        args: text_of(code.args),
    }
}

/// Dovecot's text for an error message: lossy UTF-8, controls replaced, bounded.
fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT)
        .collect()
}
