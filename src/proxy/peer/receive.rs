//! The receiving side of the peer links: accepts links, reads each delivery stream with
//! [`DeliveryReader`], and answers every recipient (docs/peer-protocol.md §6).
//!
//! Order of the checks, each before anything is stored:
//!
//! 1. at the envelope, the whole delivery: the envelope sender's domain must be one the
//!    peer's certificate names (else `Error SenderNotAuthorized`: a stolen token is
//!    useless without that certificate), and the body must fit `peer.max_message_bytes`;
//! 2. at the envelope, each recipient: one of our domains, a token that verifies for
//!    H(envelope from : envelope to) (a permanent one must also be a `COI-TokenIn` of the
//!    recipient's contact for the sender), a COI user;
//! 3. after the FIN, when the message is complete: its Message-ID header equals the
//!    envelope's (the de-duplication key depends on it), and it is a chat message;
//! 4. then each accepted recipient's copy is stored through [`Mailboxes::store`], and
//!    only Dovecot's OK makes the answer `Stored` (SECURITY-CASES §4 rule 4).
//!
//! A stream that ends in any other way (reset, Error frame, FIN early, timeout, a
//! protocol violation) stores nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;
use tracing::{debug, info, info_span, Instrument};

use super::{Peers, SPOOL_MEMORY};
use crate::coi::address::{self, NormalizedAddress};
use crate::coi::classify::classify;
use crate::coi::dedup::{self, BodyHasher};
use crate::coi::delivery::{captured_token, route, Route};
use crate::coi::headers::{HeaderBlock, HeaderScanner, Progress, MAX_HEADER_BLOCK};
use crate::coi::token::{self, Token, TokenKind, VerifyError, PERMANENT_VALIDITY};
use crate::metrics::{ReceivedOutcome, TokenVerification};
use crate::net::quic::peer_domains;
use crate::net::shutdown::{Phase, Shutdown};
use crate::net::spool::Spool;
use crate::proto::peer::{
    DeliveryEvent, DeliveryReader, Envelope, ErrorCode, ErrorFrame, Frame, Outcome, Status,
    TokenText,
};
use crate::proxy::store::{unix_now, StoreOutcome};

/// The longest a peer may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a delivery stream may take from its first byte to its FIN. A sender gives
/// up after its `peer.delivery_timeout` (at most 30 s); a stream still open after twice
/// that is abandoned, so a stalled peer cannot hold a spool forever.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Read size from a stream.
const READ_CHUNK: usize = 64 * 1024;

/// Accepts links until shutdown; each link and each of its streams runs in a task of its
/// own.
pub async fn serve(peers: Arc<Peers>, mut shutdown: Shutdown) {
    loop {
        let incoming = tokio::select! {
            incoming = peers.endpoint.accept() => incoming,
            () = shutdown.reached(Phase::Draining) => break,
        };
        let Some(incoming) = incoming else { break };
        let remote = incoming.remote_address();
        let peers = peers.clone();
        let span = info_span!("peer_link", %remote);
        tokio::spawn(connection(peers, incoming, shutdown.clone()).instrument(span));
    }
    // Links that deliver to us are closed by their senders; ours close with the endpoint.
    peers
        .endpoint
        .close(ErrorCode::Unavailable.value().into(), b"shutting down");
}

async fn connection(peers: Arc<Peers>, incoming: quinn::Incoming, shutdown: Shutdown) {
    let connection = match timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            debug!(error = %e, "peer handshake failed");
            return;
        }
        Err(_) => {
            debug!("peer handshake timed out");
            return;
        }
    };
    let domains: Arc<[String]> = peer_domains(&connection).into();
    debug!(?domains, "peer link up");
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            accepted = connection.accept_bi() => accepted,
            () = shutdown.reached(Phase::Draining) => {
                // Deliveries in flight lose their stream: their senders fall back to
                // mail, and a copy already stored here is found again (decision 0007).
                connection.close(ErrorCode::Unavailable.value().into(), b"shutting down");
                return;
            }
        };
        let (send, recv) = match accepted {
            Ok(streams) => streams,
            Err(e) => {
                debug!(error = %e, "peer link closed");
                return;
            }
        };
        let delivery = Delivery {
            peers: peers.clone(),
            domains: domains.clone(),
        };
        tokio::spawn(
            async move {
                match timeout(STREAM_TIMEOUT, delivery.run(send, recv)).await {
                    Ok(()) => {}
                    Err(_) => info!("peer delivery abandoned: stream too slow"),
                }
            }
            .in_current_span(),
        );
    }
}

/// Ends a stream with an Error frame (docs/peer-protocol.md §4.5) and stops reading.
fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream, code: ErrorCode, text: &str) {
    let _ = recv.stop(ErrorCode::NoError.value().into());
    let frame = Frame::Error(ErrorFrame {
        code,
        text: text.to_owned(),
    });
    tokio::spawn(async move {
        if let Ok(bytes) = frame.to_bytes() {
            let _ = send.write_all(&bytes).await;
        }
        let _ = send.finish();
    });
}

/// One delivery stream.
struct Delivery {
    peers: Arc<Peers>,
    /// The names of the peer's certificate.
    domains: Arc<[String]>,
}

/// What the receiver decided for one recipient before the body.
enum Admission {
    /// Admitted: store for this user, issuing a permanent token if the presented one was
    /// temporary.
    Admit {
        user: String,
        recipient: NormalizedAddress,
        kind: TokenKind,
    },
    /// Refused already: this outcome.
    Refuse(Outcome),
}

impl Delivery {
    async fn run(self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let mut reader = DeliveryReader::new();
        let mut state: Option<Received> = None;
        let mut buffer = vec![0u8; READ_CHUNK];
        loop {
            while let Some(event) = reader.next_event() {
                match event {
                    Ok(DeliveryEvent::Envelope(envelope)) => match self.admit(&envelope).await {
                        Ok(received) => state = Some(received),
                        Err((code, text)) => {
                            refuse(send, recv, code, &text);
                            return;
                        }
                    },
                    Ok(DeliveryEvent::Body(bytes)) => {
                        if let Some(received) = &mut state {
                            received.push(&bytes).await;
                        }
                    }
                    Ok(DeliveryEvent::Complete) => {
                        let Some(received) = state.take() else { return };
                        let outcomes = self.deliver(received).await;
                        write_outcomes(&mut send, outcomes).await;
                        return;
                    }
                    Ok(DeliveryEvent::Abandoned(error)) => {
                        debug!(code = ?error.code, text = %error.text, "peer abandoned a delivery");
                        self.abandoned(&state);
                        return;
                    }
                    Err(violation) => {
                        info!(error = %violation, "peer broke the protocol");
                        self.abandoned(&state);
                        refuse(send, recv, violation.code(), &violation.to_string());
                        return;
                    }
                }
            }
            match recv.read(&mut buffer).await {
                Ok(Some(n)) => reader.push(&buffer[..n]),
                Ok(None) => reader.handle_fin(),
                Err(e) => {
                    debug!(error = %e, "delivery stream cut");
                    self.abandoned(&state);
                    return;
                }
            }
        }
    }

    fn abandoned(&self, state: &Option<Received>) {
        if let Some(received) = state {
            for _ in &received.admissions {
                self.peers.metrics.peer.received(ReceivedOutcome::Abandoned);
            }
        }
    }

    /// Step 1 and 2 of the module documentation.
    async fn admit(&self, envelope: &Envelope) -> Result<Received, (ErrorCode, String)> {
        let peers = &self.peers;
        let Ok(sender) = address::normalize(&envelope.sender) else {
            return Err((
                ErrorCode::SenderNotAuthorized,
                "sender does not normalise".into(),
            ));
        };
        if !crate::net::quic::covers(&self.domains, sender.domain()) {
            info!(
                sender_domain = sender.domain(),
                "peer may not send for this domain"
            );
            return Err((
                ErrorCode::SenderNotAuthorized,
                format!("certificate does not cover {}", sender.domain()),
            ));
        }
        let too_large = envelope.body_len > peers.config.max_message_bytes;
        let now = unix_now();
        let mut admissions = Vec::with_capacity(envelope.recipients.len());
        for recipient in &envelope.recipients {
            let admission = if too_large {
                refusal(
                    Status::MESSAGE_TOO_LARGE,
                    "message too large for a link",
                    true,
                )
            } else {
                self.admit_recipient(&sender, &recipient.address, &recipient.token, now)
                    .await
            };
            if let Admission::Refuse(outcome) = &admission {
                let received = match outcome {
                    Outcome::Rejected { .. } => ReceivedOutcome::Rejected,
                    _ => ReceivedOutcome::TempFail,
                };
                peers.metrics.peer.received(received);
            }
            admissions.push(admission);
        }
        Ok(Received {
            sender,
            message_id: envelope.message_id.clone(),
            admissions,
            spool: Spool::new(SPOOL_MEMORY, &peers.spool_dir),
            hasher: BodyHasher::new(),
            scanner: Some(HeaderScanner::new(MAX_HEADER_BLOCK)),
            header: None,
            spool_failed: false,
        })
    }

    async fn admit_recipient(
        &self,
        sender: &NormalizedAddress,
        address_text: &str,
        token_text: &TokenText,
        now: u64,
    ) -> Admission {
        let peers = &self.peers;
        let metrics = &peers.metrics.peer;
        let Ok(recipient) = address::normalize(address_text) else {
            return refusal(Status::UNKNOWN_RECIPIENT, "no such recipient here", true);
        };
        if !peers.is_local(recipient.domain()) {
            return refusal(
                Status::UNKNOWN_RECIPIENT,
                "not a domain of this proxy",
                true,
            );
        }
        let hash = token::pair_hash(Some(sender), &recipient);
        let kind = match token::verify(token_text.as_str(), &hash, now, &peers.secrets) {
            Ok(kind) => kind,
            Err(e) => {
                metrics.token_verification(match e {
                    VerifyError::Malformed(_) => TokenVerification::Malformed,
                    VerifyError::SecretNotValid => TokenVerification::BadMac,
                    VerifyError::WrongPair => TokenVerification::WrongPair,
                    VerifyError::Expired | VerifyError::CreatedInFuture => {
                        TokenVerification::Expired
                    }
                });
                info!(error = %e, "token refused");
                return refusal(Status::TOKEN_NOT_ACCEPTED, &e.to_string(), true);
            }
        };
        let user = peers.mailboxes.user_of_address(&recipient);
        if kind == TokenKind::Permanent {
            // A permanent token admits only while the recipient keeps it (revocation =
            // deleting the contact, DESIGN.md §3).
            let held = match peers.mailboxes.contact(&user, sender).await {
                Ok(contact) => contact.is_some_and(|c| {
                    c.token_in()
                        .iter()
                        .any(|t| same_token(&t.render(), token_text.as_str()))
                }),
                Err(e) => {
                    info!(error = %e, "cannot read the recipient's contacts");
                    return refusal(Status::LOCAL_ERROR, "contacts unavailable", false);
                }
            };
            if !held {
                metrics.token_verification(TokenVerification::NotInContacts);
                return refusal(Status::TOKEN_NOT_ACCEPTED, "token not in contacts", true);
            }
        }
        metrics.token_verification(match kind {
            TokenKind::Temporary => TokenVerification::Temporary,
            TokenKind::Permanent => TokenVerification::Permanent,
        });
        let Some(config) = peers.mailboxes.user_config(&user).await else {
            return refusal(Status::LOCAL_ERROR, "recipient unavailable", false);
        };
        if !config.enabled {
            // Only COI users' chat messages skip the mail path (and with it Sieve and
            // spam filtering, DESIGN.md §3 "No-spam invitation").
            return refusal(Status::LOCAL_ERROR, "recipient takes mail only", false);
        }
        // The folder depends on the message (chat or not): decided after the body.
        Admission::Admit {
            user,
            recipient,
            kind,
        }
    }

    /// Steps 3 and 4: the message is complete; store each admitted recipient's copy.
    async fn deliver(&self, mut received: Received) -> Vec<Outcome> {
        let peers = &self.peers;
        let header = received.finish_header();
        let body_hash = std::mem::take(&mut received.hasher).finish();
        let content = check_content(header, &received.message_id);
        let now = unix_now();
        let mut outcomes = Vec::with_capacity(received.admissions.len());
        for admission in std::mem::take(&mut received.admissions) {
            let Admission::Admit {
                user,
                recipient,
                kind,
                ..
            } = admission
            else {
                if let Admission::Refuse(outcome) = admission {
                    outcomes.push(outcome);
                }
                continue;
            };
            let folder = match (&content, received.spool_failed) {
                (_, true) => Err(local_error("cannot spool")),
                (Err(outcome), _) => Err(outcome.clone()),
                (Ok(header), false) => {
                    let config = peers.mailboxes.user_config(&user).await;
                    match config.map(|c| route(&c, &classify(header))) {
                        Some(Route::Append { mailbox }) => Ok(mailbox),
                        Some(Route::Lmtp) => Err(local_error("not a chat message; send by mail")),
                        None => Err(local_error("recipient unavailable")),
                    }
                }
            };
            let folder = match folder {
                Ok(folder) => folder,
                Err(outcome) => {
                    peers.metrics.peer.received(ReceivedOutcome::TempFail);
                    outcomes.push(outcome);
                    continue;
                }
            };
            let key = peers.mailboxes.delivery_key(
                received.sender.domain(),
                &received.message_id,
                &recipient,
                &body_hash,
            );
            let stored = peers
                .mailboxes
                .store(&user, folder, Some(&key), &mut received.spool)
                .await;
            let outcome = match &stored {
                StoreOutcome::Stored { .. } | StoreOutcome::Duplicate { .. } => {
                    if let Some(mailbox) = stored.stored_in() {
                        // Counted in coi_proxy_imap_idle_wakes_total by the woken session.
                        peers.registry.wake(&user, mailbox);
                    }
                    peers.metrics.peer.received(match stored {
                        StoreOutcome::Stored { .. } => ReceivedOutcome::Stored,
                        _ => ReceivedOutcome::Duplicate,
                    });
                    let new_token = match kind {
                        TokenKind::Temporary => {
                            self.issue_permanent(&user, &recipient, &received.sender, now)
                                .await
                        }
                        TokenKind::Permanent => None,
                    };
                    if let Ok(header) = &content {
                        self.capture_reverse(&user, &recipient, &received.sender, header, now);
                    }
                    Outcome::Stored {
                        receipt: stored.receipt().unwrap_or_else(|| "stored".to_owned()),
                        new_token,
                    }
                }
                StoreOutcome::TempFail => {
                    peers.metrics.peer.received(ReceivedOutcome::TempFail);
                    local_error("store failed")
                }
                StoreOutcome::Refused => {
                    peers.metrics.peer.received(ReceivedOutcome::TempFail);
                    local_error("store refused")
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The message's own temporary token for the reverse pair (the sender's proxy put
    /// one in for each visible recipient), kept as the recipient's `COI-TokenOut`, as the
    /// delivery hook does for mail. In the background: the outcome does not wait for it,
    /// and a capture that fails loses nothing (the next message brings a token again).
    fn capture_reverse(
        &self,
        user: &str,
        recipient: &NormalizedAddress,
        sender: &NormalizedAddress,
        header: &HeaderBlock,
        now: u64,
    ) {
        let Some(token) = captured_token(header, recipient, sender, now) else {
            return;
        };
        let peers = self.peers.clone();
        let (user, recipient, sender) = (user.to_owned(), recipient.clone(), sender.clone());
        tokio::spawn(
            async move {
                let outcome = peers
                    .mailboxes
                    .capture(&user, &recipient, &sender, token)
                    .await;
                peers.metrics.delivery.token_capture(outcome);
            }
            .in_current_span(),
        );
    }

    /// A permanent token for `sender` → `recipient`, recorded as the recipient's
    /// `COI-TokenIn` first (a token handed out but not recorded would be refused on
    /// use). `None` without a permanent secret or when recording failed: the sender keeps
    /// its temporary token meanwhile.
    async fn issue_permanent(
        &self,
        user: &str,
        recipient: &NormalizedAddress,
        sender: &NormalizedAddress,
        now: u64,
    ) -> Option<TokenText> {
        let peers = &self.peers;
        let hash = token::pair_hash(Some(sender), recipient);
        let token: Token = token::issue(
            TokenKind::Permanent,
            now,
            PERMANENT_VALIDITY,
            &hash,
            &[],
            &peers.secrets,
        )
        .ok()?;
        let text = TokenText::new(token.render()).ok()?;
        match peers
            .mailboxes
            .record_token_in(user, recipient, sender, token, now)
            .await
        {
            Ok(()) => Some(text),
            Err(e) => {
                info!(error = %e, "cannot record a permanent token; none issued");
                None
            }
        }
    }
}

/// A delivery being received.
struct Received {
    sender: NormalizedAddress,
    message_id: String,
    admissions: Vec<Admission>,
    spool: Spool,
    hasher: BodyHasher,
    scanner: Option<HeaderScanner>,
    header: Option<HeaderBlock>,
    spool_failed: bool,
}

impl Received {
    /// Body bytes. A spool failure is remembered: the admitted recipients then get
    /// TempFail after the FIN.
    async fn push(&mut self, bytes: &Bytes) {
        self.hasher.push(bytes);
        if let Some(scanner) = &mut self.scanner {
            match scanner.push(bytes.clone()) {
                Ok(Progress::NeedMore) => {}
                Ok(Progress::HeaderEnd { header, .. }) => {
                    self.header = Some(header);
                    self.scanner = None;
                }
                Err(_) => self.scanner = None,
            }
        }
        // Nobody admitted: nothing to keep.
        let wanted = self
            .admissions
            .iter()
            .any(|a| matches!(a, Admission::Admit { .. }));
        if wanted && !self.spool_failed {
            if let Err(e) = self.spool.write(bytes).await {
                info!(error = %e, "cannot spool a delivery");
                self.spool_failed = true;
            }
        }
    }

    fn finish_header(&mut self) -> Option<HeaderBlock> {
        if let Some(mut scanner) = self.scanner.take() {
            self.header = scanner.finish().ok();
        }
        self.header.take()
    }
}

/// The message's Message-ID header must equal the envelope's.
fn check_content(header: Option<HeaderBlock>, message_id: &str) -> Result<HeaderBlock, Outcome> {
    let Some(header) = header else {
        return Err(rejected(
            Status::CONTENT_REJECTED,
            "header block unreadable",
        ));
    };
    if dedup::message_id(&header).as_deref() != Some(message_id) {
        return Err(rejected(
            Status::CONTENT_REJECTED,
            "Message-ID differs from the envelope's",
        ));
    }
    Ok(header)
}

async fn write_outcomes(send: &mut quinn::SendStream, outcomes: Vec<Outcome>) {
    let mut bytes = Vec::new();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let frame = Frame::Outcome {
            recipient: index as u16,
            outcome,
        };
        if frame.encode(&mut bytes).is_err() {
            // Cannot happen for outcomes built here; the sender falls back for all.
            return;
        }
    }
    if let Err(e) = send.write_all(&bytes).await {
        debug!(error = %e, "cannot write the outcomes");
        return;
    }
    let _ = send.finish();
    // Wait until the peer has the outcomes (or gave up): dropping the stream earlier
    // could reset it before they are delivered.
    let _ = send.stopped().await;
}

/// A recipient refused before the body: `permanent` → Rejected, else TempFail.
fn refusal(status: Status, reason: &str, permanent: bool) -> Admission {
    Admission::Refuse(if permanent {
        rejected(status, reason)
    } else {
        Outcome::TempFail {
            status,
            reason: reason.to_owned(),
        }
    })
}

fn rejected(status: Status, reason: &str) -> Outcome {
    Outcome::Rejected {
        status,
        reason: reason.to_owned(),
    }
}

fn local_error(reason: &str) -> Outcome {
    Outcome::TempFail {
        status: Status::LOCAL_ERROR,
        reason: reason.to_owned(),
    }
}

/// Constant-time comparison of two tokens' texts (SECURITY-CASES case 48).
fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
