//! The fast path of a submission (DESIGN.md §4, SECURITY-CASES §4 rule 4): recipients
//! at a domain with a coi-proxy, for whom the sender holds a token, are offered to that
//! proxy over a peer link within the client's DATA wait; whatever the link does not
//! store joins Postfix's transaction before its DATA. One reply to the client, 250 only
//! when every recipient is stored by a peer or accepted by Postfix.
//!
//! ```text
//! MAIL              → 250 here; held back until Postfix must take a recipient
//! RCPT (candidate)  → 250 here; not relayed to Postfix
//! RCPT (other)      → the held MAIL, then the RCPT, relayed to Postfix
//! DATA              → 354 here; the rewritten message goes to a spool, unstuffed
//! end of data       → offer to each domain's proxy  ─ Stored ─▶ delivered
//!                                                   └ else ──▶ RCPT to Postfix
//!                   → if Postfix has recipients: (the held MAIL, RCPTs) DATA, the
//!                     spool stuffed, its reply; else 250, and Postfix saw nothing
//! ```
//!
//! Postfix's DATA comes last so that recipients the links did not store can still join
//! the one Postfix transaction; the cost is that such a message is spooled whole before
//! Postfix sees it (chat messages are small). Mail without candidates keeps streaming
//! straight to Postfix.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tracing::{debug, info};

use super::{upstream_unavailable, Opening, Session, SessionResult, Transaction};
use crate::coi::address::{self, NormalizedAddress};
use crate::coi::submit::{Fault, Outcome, OutgoingMessage, Step, Summary};
use crate::coi::token::{self, Token};
use crate::metrics::{DeliveryOutcome, DeliveryPath, FallbackReason, MessageOutcome};
use crate::net::spool::Spool;
use crate::proto::smtp::command::{Command, Path, RcptParameters};
use crate::proto::smtp::reply::Reply;
use crate::proxy::peer::{Offer, OfferRecipient, Verdict, SPOOL_MEMORY};

/// A recipient kept back for a peer link.
pub(super) struct FastRecipient {
    to: Path,
    params: RcptParameters,
    address: NormalizedAddress,
    /// The sender's `COI-TokenOut` for this recipient.
    token: Token,
}

impl Session {
    /// `command`'s recipient, if it may take the fast path: a peer endpoint is
    /// configured, the recipient is at another domain, no DSN is asked for (a link gives
    /// no delivery notification), and the sender's Contacts hold a valid token for the
    /// pair. Anything else, including a failed lookup, means the mail path.
    pub(super) async fn fast_candidate(&self, command: &Command) -> Option<FastRecipient> {
        let Command::Rcpt { to, params } = command else {
            return None;
        };
        let peers = self.shared.peers.as_ref()?;
        let auth = self.auth.as_ref()?;
        let transaction = self.transaction.as_ref()?;
        let sender = transaction.sender.as_ref()?;
        if transaction.recipients >= self.shared.config.limits.max_recipients
            || params.notify.is_some()
            || params.orcpt.is_some()
            || !params.other.is_empty()
        {
            return None;
        }
        let address = address::normalize(&to.mailbox()?.to_string()).ok()?;
        if peers.is_local(address.domain()) {
            return None;
        }
        let contact = match peers.mailboxes.contact(&auth.login, &address).await {
            Ok(contact) => contact?,
            Err(e) => {
                debug!(error = %e, "cannot read the sender's contacts; by mail");
                return None;
            }
        };
        let hash = token::pair_hash(Some(sender), &address);
        let token = contact.newest_token_out(&hash)?;
        token.check_time(super::unix_now()).ok()?;
        Some(FastRecipient {
            to: to.clone(),
            params: params.clone(),
            address,
            token: token.clone(),
        })
    }

    /// DATA of a transaction with fast-path candidates. See the module documentation.
    pub(super) async fn data_fast(&mut self, transaction: Transaction) -> SessionResult<()> {
        self.client.reply(&super::start_data());
        let mut message = OutgoingMessage::unstuffed(
            self.shared.rules.clone(),
            self.submitter(transaction.sender.clone()),
        );
        message.push(&self.client.framer_mut().take_buffered());
        // Candidates exist only with peer links configured.
        let spool_dir = self
            .shared
            .peers
            .as_ref()
            .map_or_else(std::env::temp_dir, |peers| peers.spool_dir.clone());
        let mut spool = Spool::new(SPOOL_MEMORY, &spool_dir);
        let mut spool_failed = false;
        let outcome = loop {
            let mut end = None;
            while let Some(step) = message.next_step() {
                match step {
                    Step::Upstream(bytes) => {
                        if !spool_failed && spool.write(&bytes).await.is_err() {
                            spool_failed = true;
                        }
                    }
                    Step::End(outcome) => end = Some(outcome),
                }
            }
            if let Some(outcome) = end {
                break outcome;
            }
            self.read_message(&mut message).await?;
        };
        self.client.framer_mut().push(&message.take_buffered());
        let started = Instant::now();
        let metrics = self.shared.metrics.clone();
        let summary = match outcome {
            Outcome::Refuse { reply, fault } => {
                self.end_at_postfix(&transaction).await;
                let outcome = match fault {
                    Fault::Client => MessageOutcome::Refused,
                    Fault::Internal => MessageOutcome::Internal,
                };
                metrics.submission.message(outcome, 0, 0, 0);
                self.client.reply(&reply);
                return Ok(());
            }
            Outcome::Relay { tail, summary } => {
                if !spool_failed && spool.write(&tail).await.is_err() {
                    spool_failed = true;
                }
                summary
            }
        };
        if spool_failed {
            info!("cannot spool a message");
            self.end_at_postfix(&transaction).await;
            metrics
                .submission
                .message(MessageOutcome::Internal, 0, 0, 0);
            self.client.reply(&upstream_unavailable());
            return Ok(());
        }
        let by_mail = self
            .offer_fast(
                &transaction,
                &summary,
                message.message_id(),
                &mut spool,
                started,
            )
            .await;
        let by_postfix = transaction.accepted - transaction.fast.len() + by_mail.len();
        let (reply, outcome) = if by_postfix == 0 {
            // Every recipient is stored: Postfix has seen no MAIL, or only MAIL and
            // refused RCPTs.
            self.end_at_postfix(&transaction).await;
            let reply = Reply::new(
                250,
                Some((2, 0, 0)),
                "Ok: delivered to the recipients' servers",
            );
            (reply, MessageOutcome::Relayed)
        } else {
            self.finish_by_postfix(transaction.held_mail.as_ref(), &by_mail, &mut spool)
                .await
        };
        let path_outcome = DeliveryOutcome::of(reply.code);
        for _ in &by_mail {
            metrics
                .peer
                .delivery(DeliveryPath::Smtp, path_outcome, started.elapsed());
        }
        metrics
            .submission
            .message(outcome, summary.bytes, summary.tokens, summary.removed);
        self.client.reply(&reply);
        Ok(())
    }

    /// Offers the message to each candidate's domain; returns the candidates to send by
    /// mail. Permanent tokens a peer returns are kept in the sender's Contacts.
    async fn offer_fast<'t>(
        &self,
        transaction: &'t Transaction,
        summary: &Summary,
        message_id: Option<&str>,
        spool: &mut Spool,
        started: Instant,
    ) -> Vec<&'t FastRecipient> {
        let metrics = &self.shared.metrics.peer;
        let all_by_mail = |reason| {
            for _ in &transaction.fast {
                metrics.fallback(reason);
            }
            transaction.fast.iter().collect()
        };
        let (Some(peers), Some(auth), Some(sender), Some(message_id)) = (
            self.shared.peers.as_ref(),
            self.auth.as_ref(),
            transaction.sender.as_ref(),
            message_id,
        ) else {
            return all_by_mail(FallbackReason::Internal);
        };
        if !summary.chat {
            return all_by_mail(FallbackReason::NotChat);
        }
        let mut by_domain: BTreeMap<&str, Vec<&FastRecipient>> = BTreeMap::new();
        for recipient in &transaction.fast {
            by_domain
                .entry(recipient.address.domain())
                .or_default()
                .push(recipient);
        }
        let mut by_mail = Vec::new();
        for (domain, recipients) in by_domain {
            let offer = Offer {
                sender: sender.clone(),
                message_id: message_id.to_owned(),
                recipients: recipients
                    .iter()
                    .map(|r| OfferRecipient {
                        address: r.address.clone(),
                        token: r.token.clone(),
                    })
                    .collect(),
            };
            let verdicts = peers.offer(domain, &offer, spool).await;
            for (recipient, verdict) in recipients.into_iter().zip(verdicts) {
                match verdict {
                    Verdict::Stored { receipt, new_token } => {
                        metrics.delivery(
                            DeliveryPath::Quic,
                            DeliveryOutcome::Delivered,
                            started.elapsed(),
                        );
                        debug!(domain, receipt, "stored by the peer");
                        if let Some(token) = new_token {
                            // Kept after the client has its reply: the message is
                            // delivered either way, and until the contact is written the
                            // temporary token still works.
                            let mailboxes = peers.mailboxes.clone();
                            let (user, owner) = (auth.login.clone(), sender.clone());
                            let peer = recipient.address.clone();
                            tokio::spawn(async move {
                                mailboxes.capture(&user, &owner, &peer, token).await;
                            });
                        }
                    }
                    Verdict::Fallback(reason) => {
                        metrics.fallback(reason);
                        by_mail.push(recipient);
                    }
                }
            }
        }
        by_mail
    }

    /// Ends the transaction at Postfix without a message, if Postfix has seen its MAIL.
    async fn end_at_postfix(&mut self, transaction: &Transaction) {
        if transaction.held_mail.is_none() {
            self.reset_postfix().await;
        }
    }

    /// Opens Postfix's transaction with `held_mail` if it was held back, adds `by_mail`
    /// to it, then DATA with the spooled message.
    /// The reply is Postfix's; a recipient Postfix refuses now (after the client had its
    /// 250 for it) ends the message with that refusal, nothing sent to Postfix, and the
    /// client retries or bounces it (copies stored by links are de-duplicated). With the
    /// reply, how the message ended, as the streamed path counts it.
    async fn finish_by_postfix(
        &mut self,
        held_mail: Option<&Command>,
        by_mail: &[&FastRecipient],
        spool: &mut Spool,
    ) -> (Reply, MessageOutcome) {
        if let Some(mail) = held_mail {
            match self.open_at_postfix(mail, None).await {
                Ok(Opening::Open(_)) => {}
                Ok(Opening::Refused(refusal)) => return (refusal, MessageOutcome::Rejected),
                Ok(Opening::Unavailable) | Err(_) => {
                    return (upstream_unavailable(), MessageOutcome::Failed)
                }
            }
        }
        let result = async {
            let upstream = self.upstream_mut()?;
            for recipient in by_mail {
                let rcpt = Command::Rcpt {
                    to: recipient.to.clone(),
                    params: recipient.params.clone(),
                };
                let reply = upstream.command(&rcpt).await?;
                if !reply.is_positive() {
                    info!(
                        code = reply.code,
                        "Postfix refused a recipient the link did not store"
                    );
                    return Ok(Err(reply));
                }
            }
            let reply = upstream.command(&Command::Data).await?;
            if reply.code != 354 {
                return Ok(Err(reply));
            }
            let reader = spool
                .reader()
                .await
                .map_err(|e| crate::error::SessionError::io(crate::error::Side::Internal, e))?;
            upstream.send_stuffed(reader).await?;
            Ok(Ok(upstream.reply().await?))
        }
        .await;
        match result {
            Ok(Ok(reply)) if reply.is_positive() => (reply, MessageOutcome::Relayed),
            Ok(Ok(reply)) => (reply, MessageOutcome::Rejected),
            Ok(Err(refusal)) => {
                self.reset_postfix().await;
                (refusal, MessageOutcome::Rejected)
            }
            Err(e) => {
                let e: crate::error::SessionError = e;
                info!(error = %e, "Postfix failed while taking a message");
                self.upstream = None;
                (upstream_unavailable(), MessageOutcome::Failed)
            }
        }
    }
}
