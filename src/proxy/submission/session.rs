//! One submission session: the client's SMTP conversation, terminated here, and the
//! Postfix connection it relays to.
//!
//! The session reads one command line at a time from a strict CRLF framer and answers
//! each before reading the next, so pipelined commands (RFC 2920) are answered in order;
//! replies are written when the session would wait for the client, so a pipelined
//! group gets its replies in one write. Each state has its deadline: the TLS handshake,
//! the whole pre-AUTH phase (not reset by activity), then one per command or piece of
//! message after AUTH; Postfix's replies have their own.
//!
//! What Postfix sees is always the proxy's own canonical command (parsed, then encoded)
//! and the proxy's own dot-stuffed message stream; client bytes never pass through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info};

mod fast;

use super::upstream::{ClientFacts, Postfix};
use super::Shared;
use crate::coi::address::{self, NormalizedAddress};
use crate::coi::submit::{Fault, Outcome, OutgoingMessage, Step, Submitter};
use crate::config::ListenerTls;
use crate::error::{ErrorKind, SessionError, Side};
use crate::metrics::{AuthOutcome, ListenerKind, MessageOutcome};
use crate::net::line_peer::{Deadline, LinePeer, PeerErrors};
use crate::net::shutdown::Shutdown;
use crate::net::stream::MaybeTls;
use crate::proto::sasl::{self, Mechanism};
use crate::proto::smtp::command::{self, Command, MailParameters, Path, SaslLine};
use crate::proto::smtp::ehlo::{self, EhloView};
use crate::proto::smtp::line::{LineFramer, SASL_LINE_MAX};
use crate::proto::smtp::reply::{EnhancedCode, Reply};

/// Errors (syntax, sequence, unknown commands) a session may make before it is closed:
/// Postfix's `smtpd_hard_error_limit` default.
const MAX_ERRORS: u32 = 20;

/// Failed AUTH exchanges before the session is closed; each one costs the backend a
/// password check.
const MAX_AUTH_FAILURES: u32 = 3;

/// Read size from the client. For message data, 64 KiB cost more CPU per MiB than
/// 16 KiB (bench `submission`, 1 MiB messages: relay 871-921 µs against 676-730).
const READ_CHUNK: usize = 16 * 1024;

/// Most message bytes gathered before a write to Postfix. What one read yields goes in
/// one write at the end of that read, or with the end-of-data line (a typical chat
/// message: all of it); a read is smaller than this, so the bound matters only for
/// what the client sent behind DATA before its 354.
const GATHER_MAX: usize = 64 * 1024;

/// Message bytes waiting for one gathering write to Postfix: the pieces the pipeline
/// handed over (mostly slices of what the client sent), not copied together.
#[derive(Default)]
struct Gathered {
    parts: Vec<Bytes>,
    len: usize,
}

impl Gathered {
    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.parts.push(bytes);
    }

    fn clear(&mut self) {
        self.parts.clear();
        self.len = 0;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

type SessionResult<T> = Result<T, SessionError>;

/// Whether the conversation goes on.
enum Flow {
    Continue,
    Close,
}

/// The user behind a successful AUTH.
struct Authenticated {
    login: String,
    /// The addresses this user may send from; empty with `insecure_allow_any_sender`
    /// off means none.
    owned: Arc<[NormalizedAddress]>,
}

/// An open mail transaction, after the client's MAIL passed the proxy's checks.
struct Transaction {
    sender: Option<NormalizedAddress>,
    /// The client's MAIL while Postfix has not seen it. The proxy answers MAIL itself and
    /// sends it to Postfix only with the first recipient Postfix must take: in the same
    /// write as that RCPT (PIPELINING), which saves a round trip per message, or before a
    /// fast-path fallback. A transaction wholly stored by peer links so leaves no
    /// MAIL/RSET pair at Postfix, whose `smtpd_junk_command_limit` would otherwise slow a
    /// busy chat session down after about a hundred messages. Postfix itself defers its
    /// sender checks to RCPT by default (`smtpd_delay_reject`), so a refusal of the
    /// sender arrives at RCPT either way.
    held_mail: Option<Command>,
    /// RCPT commands taken, and of those accepted (by Postfix, or for the fast path).
    recipients: usize,
    accepted: usize,
    /// Recipients kept back from Postfix for a peer link ([`fast`]); they join Postfix's
    /// transaction only if the link does not store them.
    fast: Vec<fast::FastRecipient>,
}

impl Transaction {
    fn new(sender: Option<NormalizedAddress>, held_mail: Option<Command>) -> Self {
        Self {
            sender,
            held_mail,
            recipients: 0,
            accepted: 0,
            fast: Vec::new(),
        }
    }
}

pub struct Session {
    shared: Arc<Shared>,
    listener: ListenerTls,
    peer: SocketAddr,
    client: LinePeer<MaybeTls>,
    helo: Option<String>,
    auth: Option<Authenticated>,
    upstream: Option<Postfix>,
    transaction: Option<Transaction>,
    errors: u32,
    auth_failures: u32,
    /// Until AUTH succeeds, the session must end by this instant.
    pre_auth_deadline: Instant,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        listener: ListenerTls,
        peer: SocketAddr,
        client: MaybeTls,
        shutdown: Shutdown,
    ) -> Self {
        let max_line = shared.config.limits.max_line_bytes + 2;
        let pre_auth_deadline = Instant::now() + shared.config.timeouts.pre_auth;
        let errors = PeerErrors {
            closed: "client closed the connection",
            too_slow: "client too slow",
        };
        Self {
            shared,
            listener,
            peer,
            client: LinePeer::new(client, max_line, READ_CHUNK, shutdown, errors),
            helo: None,
            auth: None,
            upstream: None,
            transaction: None,
            errors: 0,
            auth_failures: 0,
            pre_auth_deadline,
        }
    }

    pub async fn run(mut self) -> SessionResult<()> {
        let greeting = format!("{} ESMTP coi-proxy", self.shared.config.hostname);
        self.client.reply(&Reply::new(220, None, greeting));
        let result = self.converse().await;
        self.client.finish(&result).await;
        if let Some(upstream) = self.upstream.take() {
            upstream.quit().await;
        }
        result
    }

    async fn converse(&mut self) -> SessionResult<()> {
        loop {
            let Some(line) = self.client.read_command(self.line_deadline()).await? else {
                self.refuse(500, (5, 5, 2), "Error: line too long")?;
                continue;
            };
            let command = match command::command(&line) {
                Ok(command) => command,
                Err(e) => {
                    let reply = e.reply();
                    self.count_error()?;
                    self.client.reply(&reply);
                    if matches!(e, command::CommandError::NumberTooLarge { .. })
                        && line.len() >= 4
                        && line[..4].eq_ignore_ascii_case(b"BDAT")
                    {
                        // The chunk length is unknown: its bytes cannot be told from
                        // commands.
                        return Ok(());
                    }
                    continue;
                }
            };
            if let Flow::Close = self.dispatch(command).await? {
                return Ok(());
            }
        }
    }

    async fn dispatch(&mut self, command: Command) -> SessionResult<Flow> {
        match command {
            Command::Ehlo(name) => self.ehlo(name, true).await?,
            Command::Helo(name) => self.ehlo(name, false).await?,
            Command::Starttls => return self.starttls().await,
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                let initial = initial_response.map(|r| r.as_str().to_owned());
                self.auth(&mechanism, initial).await?;
            }
            Command::Mail { from, params } => self.mail(from, params).await?,
            Command::Rcpt { to, params } => {
                let command = Command::Rcpt { to, params };
                self.rcpt(command).await?;
            }
            Command::Data => self.data().await?,
            Command::Rset => {
                self.reset_transaction().await;
                self.client.reply(&Reply::new(250, Some((2, 0, 0)), "Ok"));
            }
            Command::Noop => self.client.reply(&Reply::new(250, Some((2, 0, 0)), "Ok")),
            Command::Quit => {
                self.client.reply(&Reply::new(221, Some((2, 0, 0)), "Bye"));
                return Ok(Flow::Close);
            }
            // Never confirm addresses to a client (RFC 5321 §3.5.3 allows 252).
            Command::Vrfy(_) => self.client.reply(&Reply::new(
                252,
                Some((2, 0, 0)),
                "Cannot VRFY user; try RCPT to attempt delivery",
            )),
            Command::Expn(_) => self.refuse(502, (5, 5, 1), "Error: command not implemented")?,
            Command::Help(_) => self.client.reply(&Reply::new(
                214,
                Some((2, 0, 0)),
                "See RFC 5321 and RFC 6409",
            )),
            // SECURITY-CASES case 35: CHUNKING is not offered, and the chunk's bytes would
            // otherwise be read as commands.
            Command::Bdat { .. } => {
                self.client.reply(&Reply::new(
                    502,
                    Some((5, 5, 1)),
                    "Error: CHUNKING not offered; closing",
                ));
                return Ok(Flow::Close);
            }
            // XCLIENT is the proxy's trust relation with Postfix, never a client's.
            Command::Xclient(_) => {
                self.refuse(550, (5, 7, 0), "Error: insufficient authorization")?
            }
            // LHLO is LMTP's; on submission it is as unknown as any other verb.
            Command::Unknown(_) | Command::Lhlo(_) => {
                self.refuse(502, (5, 5, 2), "Error: command not recognized")?
            }
        }
        Ok(Flow::Continue)
    }

    // === commands ===

    async fn ehlo(&mut self, name: String, extended: bool) -> SessionResult<()> {
        // RFC 5321 §4.1.4: EHLO resets the transaction.
        self.reset_transaction().await;
        self.helo = Some(name);
        let hostname = self.shared.config.hostname.clone();
        if !extended {
            self.client.reply(&Reply::new(250, None, hostname));
            return Ok(());
        }
        let upstream_keywords = match self.shared.keywords() {
            Some(keywords) => keywords,
            None => self.probe_keywords().await,
        };
        let view = EhloView {
            tls_active: self.client.stream().is_tls(),
            starttls_offered: self.listener == ListenerTls::Starttls && self.shared.tls.is_some(),
            plaintext_auth_allowed: self.shared.config.insecure_allow_plaintext_auth,
            authenticated: self.auth.is_some(),
            max_message_bytes: self.shared.config.limits.max_message_bytes,
        };
        let keywords = ehlo::filter(upstream_keywords.iter().map(String::as_str), &view);
        let mut lines = vec![hostname];
        lines.extend(keywords.iter().map(ehlo::Keyword::render));
        self.client.reply(&Reply {
            code: 250,
            enhanced: None,
            lines,
        });
        Ok(())
    }

    /// Postfix's EHLO keywords when none are cached yet: one short connection (at most
    /// once per process while Postfix is up). If Postfix cannot be asked, the proxy
    /// advertises only what it does itself; the transaction will fail with 4xx anyway.
    async fn probe_keywords(&mut self) -> Arc<[String]> {
        match self.connect_postfix().await {
            Ok(postfix) => {
                let keywords = Arc::from(postfix.keywords());
                postfix.quit().await;
                keywords
            }
            Err(e) => {
                info!(error = %e, "Postfix unavailable for the EHLO keywords");
                Arc::from(Vec::new())
            }
        }
    }

    async fn starttls(&mut self) -> SessionResult<Flow> {
        if self.client.stream().is_tls() {
            // SECURITY-CASES case 13.
            self.refuse(503, (5, 5, 1), "Error: TLS already active")?;
            return Ok(Flow::Continue);
        }
        let Some(acceptor) = self
            .shared
            .tls
            .clone()
            .filter(|_| self.listener == ListenerTls::Starttls)
        else {
            self.refuse(502, (5, 5, 1), "Error: command not implemented")?;
            return Ok(Flow::Continue);
        };
        if self.auth.is_some() || self.transaction.is_some() {
            self.refuse(503, (5, 5, 1), "Error: STARTTLS not allowed now")?;
            return Ok(Flow::Continue);
        }
        self.client
            .reply(&Reply::new(220, Some((2, 0, 0)), "Ready to start TLS"));
        self.client.flush().await?;
        if self.client.framer_mut().buffered() > 0 {
            // Plaintext pipelined behind STARTTLS would run inside TLS: command injection
            // (SECURITY-CASES case 9). Close instead of discarding, and without a 421:
            // after the 220 the client's next bytes are its TLS handshake, so any
            // plaintext line would be out of place (a Tls error gets no reply).
            return Err(SessionError::new(
                Side::Downstream,
                ErrorKind::Tls,
                "data pipelined after STARTTLS",
            ));
        }
        let MaybeTls::Plain(tcp) = std::mem::replace(self.client.stream_mut(), MaybeTls::Detached)
        else {
            return Err(SessionError::new(
                Side::Internal,
                ErrorKind::Tls,
                "STARTTLS on a TLS stream",
            ));
        };
        let timeout = self.shared.config.timeouts.tls_handshake;
        let (outcome, result) = crate::net::tls::accept(&acceptor, tcp, timeout).await;
        self.shared
            .metrics
            .submission
            .tls_handshake(ListenerKind::from(self.listener), outcome);
        *self.client.stream_mut() = result?;
        // RFC 3207 §4.2: everything learned before TLS is forgotten; EHLO again.
        self.helo = None;
        *self.client.framer_mut() = LineFramer::new(self.shared.config.limits.max_line_bytes + 2);
        if let Some(upstream) = self.upstream.take() {
            upstream.quit().await;
        }
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> SessionResult<()> {
        if self.helo.is_none() {
            return self.refuse(503, (5, 5, 1), "Error: send HELO/EHLO first");
        }
        if self.auth.is_some() {
            return self.refuse(503, (5, 5, 1), "Error: already authenticated");
        }
        if self.transaction.is_some() {
            return self.refuse(503, (5, 5, 1), "Error: MAIL transaction in progress");
        }
        if !self.client.stream().is_tls() && !self.shared.config.insecure_allow_plaintext_auth {
            // SECURITY-CASES case 12: Postfix trusts the proxy's connection, so only the
            // proxy can refuse passwords in clear.
            return self.refuse(530, (5, 7, 0), "Must issue a STARTTLS command first");
        }
        let Some(mechanism) = Mechanism::from_name(mechanism) else {
            return self.refuse(504, (5, 5, 4), "Unsupported authentication mechanism");
        };
        if self.upstream.is_none() && self.connect_upstream().await.is_err() {
            self.shared
                .metrics
                .submission
                .auth(AuthOutcome::Unavailable);
            self.client.reply(&temporary_auth_failure());
            return Ok(());
        }
        match self.relay_auth(mechanism, initial).await {
            Ok(()) => Ok(()),
            Err(e) if e.side == Side::Upstream => {
                info!(error = %e, "Postfix failed during AUTH");
                self.upstream = None;
                self.shared
                    .metrics
                    .submission
                    .auth(AuthOutcome::Unavailable);
                self.client.reply(&temporary_auth_failure());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The SASL exchange, relayed line by line; the identity comes from the client's
    /// first response and counts only once Postfix says 235.
    async fn relay_auth(
        &mut self,
        mechanism: Mechanism,
        initial: Option<String>,
    ) -> SessionResult<()> {
        let name = match mechanism {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        };
        let mut identity = initial
            .as_deref()
            .and_then(|r| sasl::identity(mechanism, r));
        let mut first_response_seen = initial.is_some();
        let mut line = format!("AUTH {name}");
        if let Some(initial) = &initial {
            line.push(' ');
            line.push_str(initial);
        }
        line.push_str("\r\n");
        let upstream = self.upstream_mut()?;
        upstream.send(line.as_bytes()).await?;
        loop {
            let reply = self.upstream_mut()?.reply().await?;
            if reply.code == 334 {
                self.client.reply(&reply);
                self.client.framer_mut().set_max_line(SASL_LINE_MAX);
                let line = self.client.read_line(self.line_deadline()).await;
                self.client
                    .framer_mut()
                    .set_max_line(self.shared.config.limits.max_line_bytes + 2);
                let response = match line? {
                    Ok(line) => command::sasl_line(&line),
                    Err(_) => Err(command::CommandError::BadVerb),
                };
                match response {
                    Ok(SaslLine::Response(response)) => {
                        if !first_response_seen {
                            first_response_seen = true;
                            identity = sasl::identity(mechanism, response.as_str());
                        }
                        let mut line = response.as_str().as_bytes().to_vec();
                        line.extend_from_slice(b"\r\n");
                        self.upstream_mut()?.send(&line).await?;
                    }
                    // A cancel, or a line that is no SASL response: Postfix ends the
                    // exchange (501) on `*`.
                    Ok(SaslLine::Cancel) | Err(_) => {
                        self.upstream_mut()?.send(b"*\r\n").await?;
                    }
                }
                continue;
            }
            if reply.code == 235 {
                let Some(login) = identity else {
                    // Postfix accepted an identity the proxy cannot name, so the sender
                    // could not be checked: refuse rather than guess.
                    self.upstream = None;
                    self.shared.metrics.submission.auth(AuthOutcome::Failure);
                    return self.refuse(535, (5, 7, 8), "Error: authentication failed");
                };
                let owned: Arc<[NormalizedAddress]> = self.shared.owned_addresses(&login).into();
                tracing::Span::current().record("user", login.as_str());
                debug!("authenticated");
                self.auth = Some(Authenticated { login, owned });
                self.shared.metrics.submission.auth(AuthOutcome::Success);
                self.client.reply(&reply);
                return Ok(());
            }
            self.shared.metrics.submission.auth(AuthOutcome::Failure);
            self.client.reply(&reply);
            self.auth_failures += 1;
            if self.auth_failures >= MAX_AUTH_FAILURES {
                return Err(SessionError::new(
                    Side::Downstream,
                    ErrorKind::AuthenticationFailures,
                    "too many failed authentications",
                ));
            }
            return Ok(());
        }
    }

    async fn mail(&mut self, from: Path, params: MailParameters) -> SessionResult<()> {
        if self.helo.is_none() {
            return self.refuse(503, (5, 5, 1), "Error: send HELO/EHLO first");
        }
        let Some(auth) = &self.auth else {
            return self.refuse(530, (5, 7, 0), "Authentication required");
        };
        if self.transaction.is_some() {
            return self.refuse(503, (5, 5, 1), "Error: nested MAIL command");
        }
        let limit = self.shared.config.limits.max_message_bytes;
        if params.size.is_some_and(|size| size > limit) {
            return self.refuse(552, (5, 3, 4), "Message size exceeds fixed limit");
        }
        let sender = match &from {
            Path::Mailbox(mailbox) => match address::normalize(&mailbox.to_string()) {
                Ok(sender) => Some(sender),
                Err(_) => return self.refuse(553, (5, 1, 7), "Bad sender address syntax"),
            },
            _ => None,
        };
        let owned = sender
            .as_ref()
            .is_none_or(|sender| auth.owned.contains(sender));
        if !owned && !self.shared.config.insecure_allow_any_sender {
            // SECURITY-CASES case 32: tokens sign the sender.
            return self.refuse(
                553,
                (5, 7, 1),
                "Sender address rejected: not owned by the authenticated user",
            );
        }
        if self.upstream.as_mut().is_some_and(Postfix::went_away) {
            debug!("Postfix closed the idle connection");
            self.upstream = None;
        }
        // Without peer links every message needs Postfix: one it cannot reach is refused
        // now (SECURITY-CASES case 61), not after the recipients. With them, messages the
        // links store go on while Postfix is away.
        if self.shared.peers.is_none()
            && self.upstream.is_none()
            && self.connect_upstream().await.is_err()
        {
            self.client.reply(&upstream_unavailable());
            return Ok(());
        }
        let command = Command::Mail { from, params };
        self.transaction = Some(Transaction::new(sender, Some(command)));
        self.client.reply(&Reply::new(250, Some((2, 1, 0)), "Ok"));
        Ok(())
    }

    async fn rcpt(&mut self, command: Command) -> SessionResult<()> {
        if let Some(recipient) = self.fast_candidate(&command).await {
            if let Some(transaction) = &mut self.transaction {
                transaction.recipients += 1;
                transaction.accepted += 1;
                transaction.fast.push(recipient);
            }
            self.client.reply(&Reply::new(250, Some((2, 1, 5)), "Ok"));
            return Ok(());
        }
        let Some(transaction) = &self.transaction else {
            return self.refuse(503, (5, 5, 1), "Error: need MAIL command");
        };
        if transaction.recipients >= self.shared.config.limits.max_recipients {
            // SECURITY-CASES case 37; RFC 5321 §4.5.3.1.10 asks for 452 here.
            self.client.reply(&Reply::new(
                452,
                Some((4, 5, 3)),
                "Error: too many recipients",
            ));
            return Ok(());
        }
        let held = self.transaction.as_mut().and_then(|t| t.held_mail.take());
        let reply = match held {
            Some(mail) => match self.open_at_postfix(&mail, Some(&command)).await? {
                Opening::Open(Some(reply)) => reply,
                Opening::Open(None) => return Err(lost_upstream()),
                refused => {
                    // Nothing is open at Postfix: the MAIL stays held, and the next
                    // recipient tries again.
                    if let Some(transaction) = &mut self.transaction {
                        transaction.held_mail = Some(mail);
                    }
                    self.client.reply(&refused.into_refusal());
                    return Ok(());
                }
            },
            None => match self.relay(&command).await? {
                Some(reply) => reply,
                None => return Ok(()),
            },
        };
        if let Some(transaction) = &mut self.transaction {
            transaction.recipients += 1;
            if reply.is_positive() {
                transaction.accepted += 1;
            }
        }
        self.client.reply(&reply);
        Ok(())
    }

    async fn data(&mut self) -> SessionResult<()> {
        let Some(transaction) = &self.transaction else {
            return self.refuse(503, (5, 5, 1), "Error: need MAIL command");
        };
        if transaction.accepted == 0 {
            return self.refuse(554, (5, 5, 1), "Error: no valid recipients");
        }
        if !transaction.fast.is_empty() {
            let Some(transaction) = self.transaction.take() else {
                return Ok(());
            };
            return self.data_fast(transaction).await;
        }
        let sender = transaction.sender.clone();
        // DATA goes to Postfix, but the client does not wait for Postfix's 354: the
        // proxy gives its own at once, and reads Postfix's reply before the first message
        // byte follows DATA (`open_data`), by which time it has usually arrived. This
        // saves the client one round trip to Postfix per message; nothing is
        // acknowledged earlier, since the 250 is still Postfix's. A refusal of DATA
        // becomes the reply to the end of data (docs/submission.md §3).
        let sent = match self.upstream.as_mut() {
            Some(upstream) => upstream.send(b"DATA\r\n").await,
            None => Err(lost_upstream()),
        };
        if let Err(e) = sent {
            self.postfix_failed(&e);
            return Ok(());
        }
        self.client.reply(&start_data());
        self.transaction = None;
        let mut message = OutgoingMessage::new(self.shared.rules.clone(), self.submitter(sender));
        message.push(&self.client.framer_mut().take_buffered());
        let mut pending = Gathered::default();
        let mut start = DataStart::Awaited;
        let outcome = self
            .stream_message(&mut message, &mut pending, &mut start)
            .await?;
        self.client.framer_mut().push(&message.take_buffered());
        self.finish_message(outcome, pending, start).await;
        Ok(())
    }

    /// Reads Postfix's reply to the DATA sent ahead of the message, if it is still owed.
    /// True if Postfix takes the message. A refusal or a failure drops the connection:
    /// the client's transaction ends with the end of data either way, and Postfix's
    /// would otherwise stay open.
    async fn open_data(&mut self, start: &mut DataStart) -> bool {
        if let DataStart::Awaited = start {
            let reply = match self.upstream.as_mut() {
                Some(upstream) => upstream.reply().await,
                None => Err(lost_upstream()),
            };
            *start = match reply {
                Ok(reply) if reply.code == 354 => DataStart::Open,
                Ok(reply) => {
                    info!(code = reply.code, "Postfix refused DATA");
                    self.upstream = None;
                    DataStart::Refused(reply)
                }
                Err(e) => {
                    info!(error = %e, "no reply from Postfix to DATA");
                    self.upstream = None;
                    DataStart::Failed
                }
            };
        }
        matches!(start, DataStart::Open)
    }

    /// Moves the message from the client to Postfix until the client's end of data.
    /// What one read from the client yields goes to Postfix in one write, gathered in
    /// `pending` up to about [`GATHER_MAX`]; at the end, `pending` holds what is still to
    /// go with the end-of-data line (a small message: all of it, so one write). A Postfix
    /// failure on the way is remembered, and the client's data is still read to its end
    /// so that the session stays in step; `None` then.
    async fn stream_message(
        &mut self,
        message: &mut OutgoingMessage,
        pending: &mut Gathered,
        start: &mut DataStart,
    ) -> SessionResult<Option<Outcome>> {
        let mut upstream_failed = false;
        loop {
            while let Some(step) = message.next_step() {
                match step {
                    Step::Upstream(bytes) if upstream_failed => drop(bytes),
                    Step::Upstream(bytes) => {
                        pending.push(bytes);
                        if pending.len >= GATHER_MAX {
                            upstream_failed = !self.write_gathered(pending, start).await;
                        }
                    }
                    // A refusal stays a refusal (the client's fault comes first); a
                    // message Postfix could not take is the upstream's failure.
                    Step::End(Outcome::Relay { .. }) if upstream_failed => return Ok(None),
                    Step::End(outcome) => return Ok(Some(outcome)),
                }
            }
            if !pending.is_empty() && !upstream_failed {
                upstream_failed = !self.write_gathered(pending, start).await;
            }
            self.read_message(message).await?;
        }
    }

    /// Sends what `pending` gathered (after Postfix's answer to DATA, if still awaited)
    /// and empties it; `false` when Postfix failed.
    async fn write_gathered(&mut self, pending: &mut Gathered, start: &mut DataStart) -> bool {
        let written = self.open_data(start).await && self.write_upstream(pending).await.is_ok();
        pending.clear();
        written
    }

    /// Writes message bytes to Postfix; a failure drops the connection.
    async fn write_upstream(&mut self, pending: &Gathered) -> SessionResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let written = match self.upstream.as_mut() {
            Some(upstream) => upstream.write_parts(&pending.parts).await,
            None => Err(lost_upstream()),
        };
        if let Err(e) = &written {
            info!(error = %e, "Postfix failed while receiving a message");
            self.upstream = None;
        }
        written
    }

    /// The next piece of the message from the client, under the command deadline. On a
    /// failure Postfix's connection is dropped: it may be inside DATA, where anything
    /// more (a QUIT) would be message text, and the drop discards the open transaction.
    async fn read_message(&mut self, message: &mut OutgoingMessage) -> SessionResult<()> {
        let deadline = Instant::now() + self.shared.config.timeouts.command;
        match self
            .client
            .read_into(message.input_buffer(READ_CHUNK), deadline)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                self.upstream = None;
                Err(e)
            }
        }
    }

    /// Ends the message: the end of data to Postfix and its reply to the client, or the
    /// proxy's own refusal (Postfix's connection is then dropped, which discards the
    /// open transaction: SECURITY-CASES §4 rule 2). `None`: Postfix refused DATA (its
    /// reply goes to the client) or failed during the message (451).
    async fn finish_message(
        &mut self,
        outcome: Option<Outcome>,
        mut pending: Gathered,
        mut start: DataStart,
    ) {
        let outcome = match outcome {
            Some(Outcome::Relay { .. }) if !self.open_data(&mut start).await => None,
            outcome => outcome,
        };
        let metrics = &self.shared.metrics.submission;
        let Some(outcome) = outcome else {
            self.upstream = None;
            match start {
                DataStart::Refused(reply) => {
                    metrics.message(MessageOutcome::Rejected, 0, 0, 0);
                    self.client.reply(&reply);
                }
                _ => {
                    metrics.message(MessageOutcome::Failed, 0, 0, 0);
                    self.client.reply(&upstream_unavailable());
                }
            }
            return;
        };
        match outcome {
            Outcome::Relay { tail, summary } => {
                pending.push(tail);
                let result = match self.upstream.as_mut() {
                    Some(upstream) => match upstream.send_parts(&pending.parts).await {
                        Ok(()) => upstream.reply().await,
                        Err(e) => Err(e),
                    },
                    None => Err(lost_upstream()),
                };
                match result {
                    Ok(reply) => {
                        let outcome = if reply.is_positive() {
                            MessageOutcome::Relayed
                        } else {
                            MessageOutcome::Rejected
                        };
                        metrics.message(outcome, summary.bytes, summary.tokens, summary.removed);
                        if summary.chat {
                            debug!(tokens = summary.tokens, "chat message relayed");
                        }
                        self.client.reply(&reply);
                    }
                    Err(e) => {
                        info!(error = %e, "no reply from Postfix to the end of data");
                        self.upstream = None;
                        metrics.message(MessageOutcome::Failed, summary.bytes, 0, 0);
                        self.client.reply(&upstream_unavailable());
                    }
                }
            }
            Outcome::Refuse { reply, fault } => {
                self.upstream = None;
                let outcome = match fault {
                    Fault::Client => MessageOutcome::Refused,
                    Fault::Internal => MessageOutcome::Internal,
                };
                metrics.message(outcome, 0, 0, 0);
                self.client.reply(&reply);
            }
        }
    }

    /// Who submits the message now: the sender, the addresses the user owns.
    fn submitter(&self, sender: Option<NormalizedAddress>) -> Submitter {
        let owned = match (&self.auth, self.shared.config.insecure_allow_any_sender) {
            (Some(auth), false) => Some(auth.owned.clone()),
            _ => None,
        };
        Submitter {
            sender,
            owned,
            now: unix_now(),
            message_id: self.new_message_id(),
        }
    }

    /// A Message-ID for a message that has none: unique per process and time, named
    /// after this host (RFC 5322 §3.6.4).
    fn new_message_id(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "<coi-proxy.{nanos:x}.{}.{n}@{}>",
            std::process::id(),
            self.shared.config.hostname
        )
    }

    // === upstream ===

    /// Opens the transaction at Postfix: MAIL, and `rcpt` with it (in the same write when
    /// Postfix offers PIPELINING). Connects first if needed, or again if the connection
    /// went stale.
    async fn open_at_postfix(
        &mut self,
        mail: &Command,
        rcpt: Option<&Command>,
    ) -> SessionResult<Opening> {
        if self.upstream.is_none() && self.connect_upstream().await.is_err() {
            return Ok(Opening::Unavailable);
        }
        let mut result = self.send_opening(mail, rcpt).await;
        if stale(&result) {
            // Postfix ends an idle connection after its smtpd_timeout (a 421 left in the
            // buffer, then the close); a MAIL starts afresh, so it may take a new one.
            debug!("Postfix connection went stale; reconnecting for MAIL");
            self.upstream = None;
            if self.connect_upstream().await.is_err() {
                return Ok(Opening::Unavailable);
            }
            result = self.send_opening(mail, rcpt).await;
        }
        match result {
            Ok(opening) => Ok(opening),
            Err(e) if e.side == Side::Upstream => {
                info!(error = %e, "Postfix failed");
                self.upstream = None;
                Ok(Opening::Unavailable)
            }
            Err(e) => Err(e),
        }
    }

    async fn send_opening(
        &mut self,
        mail: &Command,
        rcpt: Option<&Command>,
    ) -> SessionResult<Opening> {
        let upstream = self.upstream_mut()?;
        let (mail_reply, rcpt_reply) = match rcpt {
            Some(rcpt) if upstream.pipelining() => {
                let mut replies = upstream.commands(&[mail, rcpt]).await?.into_iter();
                (replies.next(), replies.next())
            }
            Some(rcpt) => {
                let mail_reply = upstream.command(mail).await?;
                if !mail_reply.is_positive() {
                    return Ok(Opening::Refused(mail_reply));
                }
                (Some(mail_reply), Some(upstream.command(rcpt).await?))
            }
            None => (Some(upstream.command(mail).await?), None),
        };
        match mail_reply {
            Some(reply) if reply.is_positive() => Ok(Opening::Open(rcpt_reply)),
            Some(refusal) => {
                // A pipelined RCPT then got its 503; the reply that counts is the MAIL's.
                info!(code = refusal.code, "Postfix refused a held-back MAIL");
                Ok(Opening::Refused(refusal))
            }
            None => Err(lost_upstream()),
        }
    }

    /// Relays a command of a transaction open at Postfix. `None` when Postfix failed: the
    /// client has its 451 then, and the transaction is gone.
    async fn relay(&mut self, command: &Command) -> SessionResult<Option<Reply>> {
        let result = match self.upstream.as_mut() {
            Some(upstream) => upstream.command(command).await,
            // The connection broke after MAIL: the transaction is lost.
            None => Err(lost_upstream()),
        };
        match result {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if e.side == Side::Upstream => {
                self.postfix_failed(&e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Postfix failed inside a transaction: its connection and the transaction are
    /// gone, and the client gets 451.
    fn postfix_failed(&mut self, e: &SessionError) {
        info!(error = %e, "Postfix failed");
        self.upstream = None;
        self.transaction = None;
        self.client.reply(&upstream_unavailable());
    }

    async fn connect_upstream(&mut self) -> Result<(), SessionError> {
        match self.connect_postfix().await {
            Ok(postfix) => {
                self.upstream = Some(postfix);
                Ok(())
            }
            Err(e) => {
                info!(error = %e, "cannot reach Postfix");
                Err(e)
            }
        }
    }

    /// A new Postfix connection on this client's behalf (XCLIENT with its facts). Its
    /// EHLO keywords are remembered for the next client's EHLO; a failure is counted.
    async fn connect_postfix(&self) -> SessionResult<Postfix> {
        let facts = self.facts();
        let timeout = self.shared.config.timeouts.upstream_reply;
        let connected = Postfix::connect(
            &self.shared.upstream,
            &self.shared.config.hostname,
            &facts,
            timeout,
        )
        .await;
        match &connected {
            Ok(postfix) => self.shared.remember_keywords(postfix.keywords()),
            Err(_) => self.shared.metrics.submission.upstream_connect_failed(),
        }
        connected
    }

    fn facts(&self) -> ClientFacts {
        ClientFacts {
            peer: self.peer,
            helo: self.helo.clone(),
            login: self.auth.as_ref().map(|a| a.login.clone()),
        }
    }

    fn upstream_mut(&mut self) -> SessionResult<&mut Postfix> {
        self.upstream.as_mut().ok_or_else(lost_upstream)
    }

    /// RSET towards Postfix if a transaction is open there; the client's RSET always
    /// succeeds (a broken upstream is reconnected at the next MAIL).
    async fn reset_transaction(&mut self) {
        match self.transaction.take() {
            Some(transaction) if transaction.held_mail.is_none() => self.reset_postfix().await,
            _ => {}
        }
    }

    /// Ends the transaction open at Postfix (its MAIL, perhaps RCPTs) without a message.
    async fn reset_postfix(&mut self) {
        if let Some(upstream) = self.upstream.as_mut() {
            if upstream.command(&Command::Rset).await.is_err() {
                self.upstream = None;
            }
        }
    }

    // === client I/O ===

    /// A reply the proxy gives itself for the client's fault, counted against
    /// [`MAX_ERRORS`].
    fn refuse(&mut self, code: u16, enhanced: EnhancedCode, text: &str) -> SessionResult<()> {
        self.count_error()?;
        self.client.reply(&Reply::new(code, Some(enhanced), text));
        Ok(())
    }

    fn count_error(&mut self) -> SessionResult<()> {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            return Err(SessionError::new(
                Side::Downstream,
                ErrorKind::TooManyErrors,
                "too many errors",
            ));
        }
        Ok(())
    }

    /// The deadline for the next line from the client, taken before its first read: one
    /// for the whole line, so that a client that trickles a byte now and then cannot
    /// extend it with every read (SECURITY-CASES case 38, slowloris). Before AUTH it is
    /// the pre-AUTH deadline, which activity does not reset.
    fn line_deadline(&self) -> Deadline {
        if self.auth.is_some() {
            Deadline::At(Instant::now() + self.shared.config.timeouts.command)
        } else {
            Deadline::At(self.pre_auth_deadline)
        }
    }
}

/// Whether a failure shows a connection Postfix already gave up (closed, reset, or its
/// 421, which the SMTP client reports as closed).
fn stale<T>(result: &SessionResult<T>) -> bool {
    matches!(result, Err(e) if e.side == Side::Upstream && matches!(e.kind, ErrorKind::Closed | ErrorKind::Io))
}

/// How opening a transaction at Postfix ended.
enum Opening {
    /// MAIL accepted; the reply to the RCPT sent with it, if one was.
    Open(Option<Reply>),
    /// Postfix refused the MAIL: its reply.
    Refused(Reply),
    /// Postfix could not be reached, or failed.
    Unavailable,
}

impl Opening {
    /// The reply for the client when the transaction did not open.
    fn into_refusal(self) -> Reply {
        match self {
            Opening::Refused(reply) => reply,
            Opening::Open(_) | Opening::Unavailable => upstream_unavailable(),
        }
    }
}

/// Where Postfix stands with the DATA the proxy sent ahead of the message.
enum DataStart {
    /// Its reply has not been read yet.
    Awaited,
    /// 354: the message may follow.
    Open,
    /// Any other reply: the client gets it at the end of data.
    Refused(Reply),
    /// No reply (closed, timed out): 451 at the end of data.
    Failed,
}

/// The 354 the proxy gives to DATA itself.
fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}

fn upstream_unavailable() -> Reply {
    Reply::new(
        451,
        Some((4, 3, 0)),
        "Mail system temporarily unavailable; try again later",
    )
}

fn temporary_auth_failure() -> Reply {
    Reply::new(454, Some((4, 7, 0)), "Temporary authentication failure")
}

fn lost_upstream() -> SessionError {
    SessionError::new(Side::Upstream, ErrorKind::Closed, "no Postfix connection")
}

/// Wall-clock seconds for the tokens' `created` field (the proxy layer reads the clock;
/// the sans-IO core is given the value).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
