//! The sending side of the peer links: the link table (one connection per remote
//! domain, reused, reopened with backoff) and one delivery over it.
//!
//! [`Peers::offer`] never fails: every recipient gets a [`Verdict`], and anything but
//! `Stored` means "send this recipient by mail" (docs/peer-protocol.md §6.2). The whole
//! offer is bounded by `peer.delivery_timeout` plus discovery and connection setup,
//! themselves bounded.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, info};

use super::Peers;
use crate::coi::address::NormalizedAddress;
use crate::coi::token::Token;
use crate::metrics::{FallbackReason, LinkState};
use crate::net::spool::Spool;
use crate::proto::peer::{
    data_header, Envelope, ErrorCode, Frame, Outcome, OutcomeEvent, OutcomeReader, Recipient,
    TokenText, MAX_DATA_LEN,
};

/// First wait before a failed link is tried again; it doubles with each failure in a
/// row. Meanwhile messages to that domain go by mail at once instead of each waiting for
/// a connection attempt.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// Longest wait between attempts: a peer back after an outage is used again within a
/// minute.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Read size of the outcomes.
const READ_CHUNK: usize = 16 * 1024;

/// A message to offer to one domain's proxy.
#[derive(Clone, Debug)]
pub struct Offer {
    pub sender: NormalizedAddress,
    /// Without angle brackets, as in the message's header.
    pub message_id: String,
    pub recipients: Vec<OfferRecipient>,
}

#[derive(Clone, Debug)]
pub struct OfferRecipient {
    pub address: NormalizedAddress,
    /// The sender's `COI-TokenOut` for this recipient.
    pub token: Token,
}

/// What became of one recipient of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The peer stored it durably: delivered. `new_token`: a permanent token to keep as
    /// the sender's `COI-TokenOut`.
    Stored {
        receipt: String,
        new_token: Option<Token>,
    },
    /// Not stored: send by mail.
    Fallback(FallbackReason),
}

/// The link table: one entry per remote domain tried.
#[derive(Default)]
pub struct Links {
    table: DashMap<String, Arc<tokio::sync::Mutex<Link>>>,
}

#[derive(Default)]
struct Link {
    connection: Option<quinn::Connection>,
    state: Option<LinkState>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Links {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Peers {
    /// Offers a message (the spooled body, unstuffed) to the proxy of `domain`. One
    /// verdict per recipient, in order.
    pub async fn offer(&self, domain: &str, offer: &Offer, body: &mut Spool) -> Vec<Verdict> {
        let count = offer.recipients.len();
        let all = |reason| vec![Verdict::Fallback(reason); count];
        if body.len() > self.config.max_message_bytes {
            return all(FallbackReason::TooLarge);
        }
        let connection = match self.link(domain).await {
            Ok(connection) => connection,
            Err(reason) => return all(reason),
        };
        let deadline = Instant::now() + self.config.delivery_timeout;
        let mut verdicts: Vec<Option<Verdict>> = vec![None; count];
        let result = timeout_at(deadline, deliver(&connection, offer, body, &mut verdicts)).await;
        let reason = match result {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some(FallbackReason::Timeout),
        };
        if let Some(reason) = reason {
            info!(
                domain,
                reason = reason.as_label(),
                "peer delivery failed; by mail"
            );
            if matches!(reason, FallbackReason::Timeout | FallbackReason::Protocol) {
                // A peer that does not answer in time is probably gone: reconnect (with
                // backoff) rather than wait on this link again.
                self.link_failed(domain, &connection).await;
            }
        }
        verdicts
            .into_iter()
            .map(|v| {
                v.unwrap_or(Verdict::Fallback(
                    reason.unwrap_or(FallbackReason::Protocol),
                ))
            })
            .collect()
    }

    /// The link to `domain`: the open one, or a new one.
    async fn link(&self, domain: &str) -> Result<quinn::Connection, FallbackReason> {
        let entry = self
            .links
            .table
            .entry(domain.to_owned())
            .or_default()
            .clone();
        let mut link = entry.lock().await;
        if let Some(connection) = &link.connection {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
            debug!(domain, "peer link closed; reopening");
            link.connection = None;
        }
        if link.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(FallbackReason::Backoff);
        }
        let target = match self.discovery.resolve(domain).await {
            Ok(Some(target)) => target,
            Ok(None) => {
                self.set_state(&mut link, None);
                return Err(FallbackReason::NoPeer);
            }
            Err(e) => {
                debug!(error = %e, "peer discovery failed");
                return Err(FallbackReason::Discovery);
            }
        };
        self.set_state(&mut link, Some(LinkState::Connecting));
        for address in &target.addresses {
            let connecting = match self.endpoint.connect(*address, &target.domain) {
                Ok(connecting) => connecting,
                Err(e) => {
                    debug!(error = %e, %address, "cannot connect to peer");
                    continue;
                }
            };
            match timeout(self.config.delivery_timeout, connecting).await {
                Ok(Ok(connection)) => {
                    debug!(domain, %address, "peer link up");
                    link.connection = Some(connection.clone());
                    link.failures = 0;
                    link.retry_at = None;
                    self.set_state(&mut link, Some(LinkState::Up));
                    return Ok(connection);
                }
                Ok(Err(e)) => info!(error = %e, %address, "peer link failed"),
                Err(_) => info!(%address, "peer link: no handshake in time"),
            }
        }
        self.back_off(&mut link);
        Err(FallbackReason::Connect)
    }

    /// Drops `connection` as `domain`'s link and waits before the next attempt.
    async fn link_failed(&self, domain: &str, connection: &quinn::Connection) {
        let Some(entry) = self.links.table.get(domain).map(|e| e.value().clone()) else {
            return;
        };
        let mut link = entry.lock().await;
        if link
            .connection
            .as_ref()
            .is_some_and(|c| c.stable_id() == connection.stable_id())
        {
            connection.close(ErrorCode::Timeout.value().into(), b"no answer in time");
            link.connection = None;
            self.back_off(&mut link);
        }
    }

    fn back_off(&self, link: &mut Link) {
        link.failures = link.failures.saturating_add(1);
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << link.failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        link.retry_at = Some(Instant::now() + wait);
        self.set_state(link, Some(LinkState::Backoff));
    }

    fn set_state(&self, link: &mut Link, state: Option<LinkState>) {
        if link.state != state {
            self.metrics.peer.link_state(link.state, state);
            link.state = state;
        }
    }
}

/// One delivery on `connection`: the envelope, the body, the FIN, then the outcomes into
/// `verdicts`. `Err` with the reason for the recipients still without a verdict.
async fn deliver(
    connection: &quinn::Connection,
    offer: &Offer,
    body: &mut Spool,
    verdicts: &mut [Option<Verdict>],
) -> Result<(), FallbackReason> {
    // Encoded before the stream opens: an envelope that breaks a field rule (more than
    // 100 recipients, an over-long address) is our own failure, found without the peer.
    let envelope = envelope_of(offer, body.len())
        .and_then(|e| Frame::Envelope(e).to_bytes().ok())
        .ok_or(FallbackReason::Internal)?;
    let (send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|_| FallbackReason::Connect)?;
    let mut send = CancelOnDrop(Some(send));
    let mut reader = OutcomeReader::new(verdicts.len() as u16);
    // A write that fails (the peer stopped reading after refusing everyone) still
    // leaves its outcomes or Error frame to read.
    if send_message(send.stream(), &envelope, body).await.is_ok() {
        reader.handle_body_sent();
    }
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        while let Some(event) = reader.next_event() {
            match event {
                Ok(OutcomeEvent::Outcome { recipient, outcome }) => {
                    let verdict = match outcome {
                        Outcome::Stored { receipt, new_token } => Verdict::Stored {
                            receipt,
                            new_token: new_token.and_then(|t| Token::parse(t.as_str()).ok()),
                        },
                        Outcome::Rejected { status, reason } => {
                            debug!(%status, reason, "peer rejected a recipient");
                            Verdict::Fallback(FallbackReason::Rejected)
                        }
                        Outcome::TempFail { status, reason } => {
                            debug!(%status, reason, "peer could not store for a recipient");
                            Verdict::Fallback(FallbackReason::TempFail)
                        }
                    };
                    if let Some(slot) = verdicts.get_mut(usize::from(recipient)) {
                        *slot = Some(verdict);
                    }
                }
                Ok(OutcomeEvent::Complete) => {
                    send.disarm();
                    return Ok(());
                }
                Ok(OutcomeEvent::Refused(error)) => {
                    info!(code = ?error.code, text = %error.text, "peer refused the delivery");
                    send.disarm();
                    return Err(FallbackReason::Refused);
                }
                Err(violation) => {
                    info!(error = %violation, "peer broke the protocol");
                    return Err(FallbackReason::Protocol);
                }
            }
        }
        match recv.read(&mut buffer).await {
            Ok(Some(n)) => reader.push(&buffer[..n]),
            Ok(None) => reader.handle_fin(),
            Err(_) => return Err(FallbackReason::Protocol),
        }
    }
}

/// The Envelope frame, the body in Data frames, the FIN.
async fn send_message(
    send: &mut quinn::SendStream,
    envelope: &[u8],
    body: &mut Spool,
) -> Result<(), ()> {
    send.write_all(envelope).await.map_err(|_| ())?;
    let mut reader = body.reader().await.map_err(|_| ())?;
    let mut chunk = vec![0u8; MAX_DATA_LEN];
    loop {
        let n = reader.read(&mut chunk).await.map_err(|_| ())?;
        if n == 0 {
            break;
        }
        let header = data_header(n).map_err(|_| ())?;
        send.write_all(&header).await.map_err(|_| ())?;
        send.write_all(&chunk[..n]).await.map_err(|_| ())?;
    }
    send.finish().map_err(|_| ())
}

fn envelope_of(offer: &Offer, body_len: u64) -> Option<Envelope> {
    let recipients = offer
        .recipients
        .iter()
        .map(|r| {
            Some(Recipient {
                address: r.address.to_string(),
                token: TokenText::new(r.token.render()).ok()?,
                reverse_token: None,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Envelope {
        sender: offer.sender.to_string(),
        message_id: offer.message_id.clone(),
        body_len,
        recipients,
    })
}

/// A send stream that is reset with `Cancelled` if the delivery is dropped before its
/// end (the budget ran out): the receiver then stores nothing (docs/peer-protocol.md
/// §6.1), rather than reading an early FIN.
struct CancelOnDrop(Option<quinn::SendStream>);

impl CancelOnDrop {
    fn stream(&mut self) -> &mut quinn::SendStream {
        self.0.as_mut().expect("present until disarmed")
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(mut send) = self.0.take() {
            let _ = send.reset(ErrorCode::Cancelled.value().into());
        }
    }
}
