//! One LMTP session with Postfix, and the Dovecot LMTP session behind it.
//!
//! MAIL and RCPT are relayed to Dovecot as they come, so that Postfix hears Dovecot's
//! verdict on each recipient (an unknown user is refused at RCPT, as without the hook).
//! The message is received in full (strict framing, spooled: memory, then an unlinked
//! file) before anything is delivered, because one message may go two ways: Dovecot's
//! LMTP for some recipients, the mailbox writer for others. Then each recipient gets
//! exactly one reply after DATA, in RCPT order (RFC 2033 §4.2), each from its own store.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use super::Shared;
use crate::coi::address;
use crate::coi::classify::classify;
use crate::coi::dedup::{self, BodyHasher};
use crate::coi::delivery::{captured_token, route, Folder, Route};
use crate::coi::headers::{HeaderBlock, HeaderScanner, Progress, MAX_HEADER_BLOCK, TOKEN_FIELD};
use crate::error::{SessionError, Side};
use crate::metrics::{DeliveryOutcome, DeliveryRoute};
use crate::net::line_peer::{Deadline, LinePeer, PeerErrors};
use crate::net::shutdown::Shutdown;
use crate::net::smtp::SmtpClient;
use crate::net::spool::Spool;
use crate::proto::smtp::command::{self, Command, MailParameters, Path, RcptParameters};
use crate::proto::smtp::data::{DataEvent, DataLimits, DataReceiver};
use crate::proto::smtp::line::COMMAND_LINE_MAX;
use crate::proto::smtp::reply::Reply;
use crate::proxy::store::StoreOutcome;

/// Longest body line accepted from Postfix, CRLF included. Postfix's LMTP client folds
/// lines at `lmtp_line_length_limit` (998) by default; an operator may lift that, and
/// the line is the only part of a message held whole, so 64 KiB is tolerant and still
/// bounded.
const INBOUND_LINE_MAX: usize = 64 * 1024;

/// LHLO keywords passed on to Postfix when Dovecot offers them: they change what
/// Postfix sends (8-bit bodies, UTF-8 addresses, DSN parameters), which only Dovecot
/// can accept.
const RELAYED_KEYWORDS: &[&str] = &["8BITMIME", "SMTPUTF8", "DSN"];

/// Read size from Postfix and from the spool.
const CHUNK: usize = 64 * 1024;

type SessionResult<T> = Result<T, SessionError>;

struct Transaction {
    from: Path,
    params: MailParameters,
    /// The recipients Dovecot accepted at RCPT, in order.
    recipients: Vec<Recipient>,
}

struct Recipient {
    to: Path,
    params: RcptParameters,
}

/// What happens to one recipient's copy.
struct Plan {
    route: Route,
    /// The Dovecot user, when the COI configuration was read.
    user: Option<String>,
    coi_enabled: bool,
}

/// A received message, ready to deliver.
struct Received {
    spool: Spool,
    /// [`BodyHasher`] of the message, for its de-duplication key.
    body_hash: [u8; 32],
    /// The top-level header block; `None` if it could not be parsed (too large): such
    /// mail is relayed to Dovecot untouched.
    header: Option<HeaderBlock>,
}

pub struct Session {
    shared: Arc<Shared>,
    /// Postfix.
    client: LinePeer<TcpStream>,
    greeted: bool,
    dovecot: Option<SmtpClient>,
    /// Dovecot's LHLO keywords, upper-case.
    dovecot_keywords: Vec<String>,
    transaction: Option<Transaction>,
}

impl Session {
    pub fn new(shared: Arc<Shared>, client: TcpStream, shutdown: Shutdown) -> Self {
        let errors = PeerErrors {
            closed: "Postfix closed the connection",
            too_slow: "Postfix too slow",
        };
        Self {
            shared,
            client: LinePeer::new(client, COMMAND_LINE_MAX, CHUNK, shutdown, errors),
            greeted: false,
            dovecot: None,
            dovecot_keywords: Vec::new(),
            transaction: None,
        }
    }

    pub async fn run(mut self) -> SessionResult<()> {
        let greeting = format!("{} LMTP coi-proxy", self.shared.config.hostname);
        self.client.reply(&Reply::new(220, None, greeting));
        let result = self.converse().await;
        self.client.finish(&result).await;
        if let Some(dovecot) = self.dovecot.take() {
            dovecot.quit().await;
        }
        result
    }

    async fn converse(&mut self) -> SessionResult<()> {
        // Postfix gets the command timeout anew for every read.
        let deadline = Deadline::EachRead(self.shared.config.timeouts.command);
        loop {
            let Some(line) = self.client.read_command(deadline).await? else {
                self.client
                    .reply(&Reply::new(500, Some((5, 5, 2)), "Error: line too long"));
                continue;
            };
            let command = match command::command(&line) {
                Ok(command) => command,
                Err(e) => {
                    self.client.reply(&e.reply());
                    continue;
                }
            };
            match command {
                Command::Lhlo(_) => self.lhlo().await,
                Command::Mail { from, params } => self.mail(from, params).await?,
                Command::Rcpt { to, params } => self.rcpt(to, params).await?,
                Command::Data => self.data().await?,
                Command::Rset => {
                    self.reset().await;
                    self.client.reply(&Reply::new(250, Some((2, 0, 0)), "Ok"));
                }
                Command::Noop => self.client.reply(&Reply::new(250, Some((2, 0, 0)), "Ok")),
                Command::Quit => {
                    self.client.reply(&Reply::new(221, Some((2, 0, 0)), "Bye"));
                    return Ok(());
                }
                // RFC 2033 §4.1: LMTP has LHLO instead of HELO and EHLO.
                Command::Ehlo(_) | Command::Helo(_) => self.client.reply(&Reply::new(
                    500,
                    Some((5, 5, 1)),
                    "Error: this is LMTP; use LHLO",
                )),
                _ => self.client.reply(&Reply::new(
                    502,
                    Some((5, 5, 2)),
                    "Error: command not recognized",
                )),
            }
        }
    }

    /// LHLO: the keywords are the proxy's own (PIPELINING, ENHANCEDSTATUSCODES, SIZE)
    /// plus those body and address extensions Dovecot offers, so that Postfix only ever
    /// sends what Dovecot accepts.
    async fn lhlo(&mut self) {
        self.greeted = true;
        self.reset().await;
        if self.dovecot.is_none() {
            match self.connect_dovecot().await {
                Ok(dovecot) => self.dovecot = Some(dovecot),
                // MAIL tries again and answers 451 if Dovecot is still away.
                Err(e) => info!(error = %e, "cannot reach Dovecot's LMTP"),
            }
        }
        let size = self.shared.config.limits.max_message_bytes;
        let mut lines = vec![
            self.shared.config.hostname.clone(),
            "PIPELINING".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            format!("SIZE {size}"),
        ];
        for keyword in RELAYED_KEYWORDS {
            if self.dovecot_keywords.iter().any(|k| k == keyword) {
                lines.push((*keyword).to_owned());
            }
        }
        self.client.reply(&Reply {
            code: 250,
            enhanced: None,
            lines,
        });
    }

    async fn mail(&mut self, from: Path, params: MailParameters) -> SessionResult<()> {
        if !self.greeted {
            self.client
                .reply(&Reply::new(503, Some((5, 5, 1)), "Error: send LHLO first"));
            return Ok(());
        }
        if self.transaction.is_some() {
            self.client.reply(&Reply::new(
                503,
                Some((5, 5, 1)),
                "Error: nested MAIL command",
            ));
            return Ok(());
        }
        if params
            .size
            .is_some_and(|size| size > self.shared.config.limits.max_message_bytes)
        {
            self.client.reply(&Reply::new(
                552,
                Some((5, 3, 4)),
                "Message size exceeds fixed limit",
            ));
            return Ok(());
        }
        if self.dovecot.is_none() {
            match self.connect_dovecot().await {
                Ok(dovecot) => self.dovecot = Some(dovecot),
                Err(e) => {
                    info!(error = %e, "cannot reach Dovecot's LMTP");
                    self.client.reply(&unavailable());
                    return Ok(());
                }
            }
        }
        let command = Command::Mail {
            from: from.clone(),
            params: self.for_dovecot(&params),
        };
        let Some(reply) = self.relay(&command).await else {
            return Ok(());
        };
        if reply.is_positive() {
            self.transaction = Some(Transaction {
                from,
                params,
                recipients: Vec::new(),
            });
        }
        self.client.reply(&reply);
        Ok(())
    }

    async fn rcpt(&mut self, to: Path, params: RcptParameters) -> SessionResult<()> {
        let Some(transaction) = &self.transaction else {
            self.client.reply(&Reply::new(
                503,
                Some((5, 5, 1)),
                "Error: need MAIL command",
            ));
            return Ok(());
        };
        if transaction.recipients.len() >= self.shared.config.limits.max_recipients {
            self.client.reply(&Reply::new(
                452,
                Some((4, 5, 3)),
                "Error: too many recipients",
            ));
            return Ok(());
        }
        let command = Command::Rcpt {
            to: to.clone(),
            params: params.clone(),
        };
        let Some(reply) = self.relay(&command).await else {
            return Ok(());
        };
        if reply.is_positive() {
            if let Some(transaction) = &mut self.transaction {
                transaction.recipients.push(Recipient { to, params });
            }
        }
        self.client.reply(&reply);
        Ok(())
    }

    async fn data(&mut self) -> SessionResult<()> {
        let Some(transaction) = self.transaction.take() else {
            self.client.reply(&Reply::new(
                503,
                Some((5, 5, 1)),
                "Error: need MAIL command",
            ));
            return Ok(());
        };
        if transaction.recipients.is_empty() {
            // RFC 2033 §4.2: DATA without a successful RCPT fails with 503.
            self.client.reply(&Reply::new(
                503,
                Some((5, 5, 1)),
                "Error: no valid recipients",
            ));
            self.reset_dovecot().await;
            return Ok(());
        }
        self.client
            .reply(&Reply::new(354, None, "End data with <CR><LF>.<CR><LF>"));
        let received = self.receive().await?;
        let started = Instant::now();
        let replies = match received {
            Ok(received) => {
                let bytes = received.spool.len();
                let replies = self.deliver(&transaction, received).await;
                self.shared
                    .metrics
                    .delivery
                    .message(bytes, started.elapsed());
                replies
            }
            Err(refusal) => {
                // The message is refused whole: every recipient hears why, and Dovecot's
                // open transaction is reset.
                self.reset_dovecot().await;
                vec![refusal; transaction.recipients.len()]
            }
        };
        for reply in &replies {
            self.client.reply(reply);
        }
        Ok(())
    }

    /// Reads the message to its end into a spool, finding the header block on the way.
    /// `Err` inside: the message is refused (framing, size), with the reply.
    async fn receive(&mut self) -> SessionResult<Result<Received, Reply>> {
        let limits = DataLimits {
            max_line: INBOUND_LINE_MAX,
            max_size: self.shared.config.limits.max_message_bytes,
        };
        let mut receiver = DataReceiver::new(limits);
        receiver.push(&self.client.framer_mut().take_buffered());
        let mut spool = Spool::new(
            self.shared.config.limits.spool_memory_bytes,
            &self.shared.spool_dir,
        );
        let mut scanner = Some(HeaderScanner::new(MAX_HEADER_BLOCK));
        let mut hasher = BodyHasher::new();
        let mut header = None;
        let mut spool_error = None;
        loop {
            while let Some(event) = receiver.next_event() {
                match event {
                    DataEvent::Chunk(chunk) => {
                        hasher.push(&chunk);
                        if let Some(s) = &mut scanner {
                            match s.push(chunk.bytes().clone()) {
                                Ok(Progress::NeedMore) => {}
                                Ok(Progress::HeaderEnd { header: h, .. }) => {
                                    header = Some(h);
                                    scanner = None;
                                }
                                // Too large a header: deliver it untouched.
                                Err(_) => scanner = None,
                            }
                        }
                        if spool_error.is_none() {
                            if let Err(e) = spool.write(&chunk).await {
                                spool_error = Some(e);
                            }
                        }
                    }
                    DataEvent::End { violation, .. } => {
                        self.client.framer_mut().push(&receiver.take_buffered());
                        if let Some(violation) = violation {
                            return Ok(Err(violation.reply()));
                        }
                        if let Some(e) = spool_error {
                            info!(error = %e, "cannot spool a message");
                            return Ok(Err(Reply::new(
                                451,
                                Some((4, 3, 0)),
                                "Temporary local problem; try again later",
                            )));
                        }
                        if let Some(mut s) = scanner.take() {
                            header = s.finish().ok();
                        }
                        return Ok(Ok(Received {
                            spool,
                            body_hash: hasher.finish(),
                            header,
                        }));
                    }
                }
            }
            let deadline = Instant::now() + self.shared.config.timeouts.command;
            self.client
                .read_into(receiver.input_buffer(CHUNK), deadline)
                .await?;
        }
    }

    /// Delivers to every recipient; one reply each, in RCPT order.
    async fn deliver(&mut self, transaction: &Transaction, mut received: Received) -> Vec<Reply> {
        let plans = self.plan(transaction, &received).await;
        let lmtp: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, plan)| plan.route == Route::Lmtp)
            .map(|(i, _)| i)
            .collect();
        let mut replies: Vec<Option<Reply>> = vec![None; plans.len()];
        if !lmtp.is_empty() {
            let lmtp_replies = self
                .deliver_lmtp(transaction, &lmtp, &mut received.spool)
                .await;
            let user_name = self.shared.config.user_name;
            for (index, reply) in lmtp.iter().zip(lmtp_replies) {
                let to = &transaction.recipients[*index].to;
                // Dovecot's LMTP stores into INBOX unless Sieve files the message
                // elsewhere; then the wake restarts an INBOX IDLE for nothing.
                if let (true, Some(user)) = (reply.is_positive(), super::user_of(user_name, to)) {
                    self.wake(&user, "INBOX");
                }
                replies[*index] = Some(reply);
            }
        }
        if let Some(coi) = &self.shared.coi {
            let scope = dedup_scope(transaction, &received);
            for (index, plan) in plans.iter().enumerate() {
                if let (Route::Append { mailbox }, Some(user)) = (&plan.route, &plan.user) {
                    let key = scope.as_ref().and_then(|(domain, message_id)| {
                        let recipient = transaction.recipients[index].to.mailbox()?;
                        let recipient = address::normalize(&recipient.to_string()).ok()?;
                        Some(coi.delivery_key(domain, message_id, &recipient, &received.body_hash))
                    });
                    let outcome = coi
                        .store(user, *mailbox, key.as_deref(), &mut received.spool)
                        .await;
                    if let Some(mailbox) = outcome.stored_in() {
                        self.wake(user, mailbox);
                    }
                    replies[index] = Some(store_reply(&outcome));
                }
            }
        }
        let replies: Vec<Reply> = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(unavailable))
            .collect();
        for (plan, reply) in plans.iter().zip(&replies) {
            let route = match plan.route {
                Route::Lmtp => DeliveryRoute::Lmtp,
                Route::Append {
                    mailbox: Folder::Inbox,
                } => DeliveryRoute::Inbox,
                Route::Append {
                    mailbox: Folder::Chats,
                } => DeliveryRoute::Chats,
            };
            self.shared
                .metrics
                .delivery
                .recipient(route, DeliveryOutcome::of(reply.code));
        }
        self.capture_tokens(transaction, &received, &plans, &replies)
            .await;
        replies
    }

    /// The IDLE wake (DESIGN.md §6): `user`'s IMAP sessions through this proxy that idle
    /// on `mailbox` restart their backend IDLE, so they see the message now instead of
    /// after Dovecot's notification delay.
    fn wake(&self, user: &str, mailbox: &str) {
        let woken = self.shared.registry.wake(user, mailbox);
        if woken > 0 {
            debug!(woken, mailbox, "IDLE sessions woken");
        }
    }

    /// Where each recipient's copy goes. The recipient's COI configuration is read only
    /// for mail that could need it (chat, or a token to capture), so that ordinary mail
    /// costs no backend login.
    async fn plan(&self, transaction: &Transaction, received: &Received) -> Vec<Plan> {
        let lmtp = || Plan {
            route: Route::Lmtp,
            user: None,
            coi_enabled: false,
        };
        let (Some(coi), Some(header)) = (&self.shared.coi, &received.header) else {
            return transaction.recipients.iter().map(|_| lmtp()).collect();
        };
        let classification = classify(header);
        if !classification.chat && header.first(TOKEN_FIELD).is_none() {
            return transaction.recipients.iter().map(|_| lmtp()).collect();
        }
        let mut plans = Vec::with_capacity(transaction.recipients.len());
        for recipient in &transaction.recipients {
            let Some(user) = coi.user_of(&recipient.to) else {
                plans.push(lmtp());
                continue;
            };
            let Some(config) = coi.user_config(&user).await else {
                plans.push(lmtp());
                continue;
            };
            plans.push(Plan {
                route: route(&config, &classification),
                coi_enabled: config.enabled,
                user: Some(user),
            });
        }
        plans
    }

    /// Stores the temporary token addressed to each COI recipient that got its copy
    /// (DESIGN.md §3 "Inbound capture").
    async fn capture_tokens(
        &self,
        transaction: &Transaction,
        received: &Received,
        plans: &[Plan],
        replies: &[Reply],
    ) {
        let (Some(coi), Some(header)) = (&self.shared.coi, &received.header) else {
            return;
        };
        let Some(sender) = transaction
            .from
            .mailbox()
            .and_then(|m| crate::coi::delivery::sender(&m.to_string()))
        else {
            return;
        };
        let now = crate::proxy::store::unix_now();
        for ((recipient, plan), reply) in transaction.recipients.iter().zip(plans).zip(replies) {
            let (Some(user), true, true) = (&plan.user, plan.coi_enabled, reply.is_positive())
            else {
                continue;
            };
            let Some(owner) = recipient
                .to
                .mailbox()
                .and_then(|m| address::normalize(&m.to_string()).ok())
            else {
                continue;
            };
            if let Some(token) = captured_token(header, &owner, &sender, now) {
                let outcome = coi.capture(user, &owner, &sender, token).await;
                self.shared.metrics.delivery.token_capture(outcome);
            }
        }
    }

    /// Dovecot's LMTP for the recipients at `indices`: DATA on the open transaction when
    /// it holds exactly them, else a fresh transaction for them.
    async fn deliver_lmtp(
        &mut self,
        transaction: &Transaction,
        indices: &[usize],
        spool: &mut Spool,
    ) -> Vec<Reply> {
        let failed = || vec![unavailable(); indices.len()];
        let dovecot_params = self.for_dovecot(&transaction.params);
        let Some(mut dovecot) = self.dovecot.take() else {
            return failed();
        };
        let result = async {
            if indices.len() != transaction.recipients.len() {
                dovecot.command(&Command::Rset).await?;
                let mail = Command::Mail {
                    from: transaction.from.clone(),
                    params: dovecot_params.clone(),
                };
                let mut accepted = Vec::new();
                if dovecot.command(&mail).await?.is_positive() {
                    for &i in indices {
                        let recipient = &transaction.recipients[i];
                        let rcpt = Command::Rcpt {
                            to: recipient.to.clone(),
                            params: recipient.params.clone(),
                        };
                        accepted.push(dovecot.command(&rcpt).await?);
                    }
                }
                // Recipients Dovecot refuses now get that refusal; the rest go on.
                if !accepted.iter().any(Reply::is_positive) {
                    return Ok(accepted_or_unavailable(accepted, indices.len()));
                }
                let replies = send_data(
                    &mut dovecot,
                    spool,
                    accepted.iter().filter(|r| r.is_positive()).count(),
                )
                .await?;
                let mut replies = replies.into_iter();
                Ok(accepted
                    .into_iter()
                    .map(|r| {
                        if r.is_positive() {
                            replies.next().unwrap_or_else(unavailable)
                        } else {
                            r
                        }
                    })
                    .collect())
            } else {
                send_data(&mut dovecot, spool, indices.len()).await
            }
        }
        .await;
        match result {
            Ok(replies) => {
                self.dovecot = Some(dovecot);
                replies
            }
            Err(e) => {
                info!(error = %e, "Dovecot's LMTP failed during delivery");
                failed()
            }
        }
    }

    async fn connect_dovecot(&mut self) -> SessionResult<SmtpClient> {
        let timeout = self.shared.config.timeouts.upstream_reply;
        let mut dovecot = SmtpClient::connect(&self.shared.upstream, timeout).await?;
        let lhlo = Command::Lhlo(self.shared.config.hostname.clone());
        let reply = dovecot.expect(&lhlo, 250, "Dovecot refused LHLO").await?;
        self.dovecot_keywords = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect();
        Ok(dovecot)
    }

    /// MAIL parameters as Dovecot takes them: SIZE only if it offers SIZE (the proxy
    /// offers it to Postfix itself and checks it).
    fn for_dovecot(&self, params: &MailParameters) -> MailParameters {
        let mut params = params.clone();
        if !self.dovecot_keywords.iter().any(|k| k == "SIZE") {
            params.size = None;
        }
        params
    }

    /// Relays a command to Dovecot; `None` when Dovecot failed (the reply is given and
    /// the transaction is gone).
    async fn relay(&mut self, command: &Command) -> Option<Reply> {
        let Some(dovecot) = self.dovecot.as_mut() else {
            self.transaction = None;
            self.client.reply(&unavailable());
            return None;
        };
        match dovecot.command(command).await {
            Ok(reply) => Some(reply),
            Err(e) => {
                info!(error = %e, "Dovecot's LMTP failed");
                self.dovecot = None;
                self.transaction = None;
                self.client.reply(&unavailable());
                None
            }
        }
    }

    async fn reset(&mut self) {
        if self.transaction.take().is_some() {
            self.reset_dovecot().await;
        }
    }

    async fn reset_dovecot(&mut self) {
        if let Some(dovecot) = self.dovecot.as_mut() {
            if dovecot.command(&Command::Rset).await.is_err() {
                self.dovecot = None;
            }
        }
    }
}

/// DATA, the spooled message dot-stuffed, the end of data; then one reply per accepted
/// recipient (RFC 2033 §4.2).
async fn send_data(
    dovecot: &mut SmtpClient,
    spool: &mut Spool,
    recipients: usize,
) -> SessionResult<Vec<Reply>> {
    let reply = dovecot.command(&Command::Data).await?;
    if reply.code != 354 {
        return Ok(vec![reply; recipients]);
    }
    let mut reader = spool
        .reader()
        .await
        .map_err(|e| SessionError::io(Side::Internal, e))?;
    dovecot.send_stuffed(&mut reader).await?;
    let mut replies = Vec::with_capacity(recipients);
    for _ in 0..recipients {
        replies.push(dovecot.reply().await?);
    }
    debug!(recipients, "delivered by LMTP");
    Ok(replies)
}

fn accepted_or_unavailable(replies: Vec<Reply>, n: usize) -> Vec<Reply> {
    if replies.len() == n {
        replies
    } else {
        vec![unavailable(); n]
    }
}

/// What the de-duplication keys of a message's copies on the mail path share: the peer,
/// which is the envelope sender's domain (SECURITY-CASES §4 rule 5), and the Message-ID.
/// `None` without either: such a message never came over a peer link, which needs both.
fn dedup_scope(transaction: &Transaction, received: &Received) -> Option<(String, String)> {
    let sender = transaction.from.mailbox()?;
    let sender = crate::coi::delivery::sender(&sender.to_string())?;
    let message_id = dedup::message_id(received.header.as_ref()?)?;
    Some((sender.domain().to_owned(), message_id))
}

/// The reply for a copy the mailbox writer stored (or did not).
fn store_reply(outcome: &StoreOutcome) -> Reply {
    match outcome {
        StoreOutcome::Stored { .. } => Reply::new(250, Some((2, 0, 0)), "Saved chat message"),
        StoreOutcome::Duplicate { .. } => {
            Reply::new(250, Some((2, 0, 0)), "Chat message already delivered")
        }
        StoreOutcome::TempFail => Reply::new(
            451,
            Some((4, 2, 0)),
            "Temporary failure storing the message",
        ),
        StoreOutcome::Refused => Reply::new(550, Some((5, 2, 0)), "Mailbox unavailable"),
    }
}

fn unavailable() -> Reply {
    Reply::new(
        451,
        Some((4, 3, 0)),
        "Mail system temporarily unavailable; try again later",
    )
}
