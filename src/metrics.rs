//! Every metric the process exports, declared in this one file.
//!
//! Metrics live on an explicit [`Registry`] owned by [`Metrics`], created once in `main`
//! and passed down (never the prometheus default registry, so tests can build as many as
//! they like and nothing registers behind our back). Names follow
//! `coi_proxy_<protocol>_<noun>_{total,seconds,bytes}`. Label values come only from the
//! closed enums below, through their `as_label`: never addresses, user names or mailbox
//! names, which would make the series count unbounded and leak personal data into
//! monitoring.
//!
//! Every label combination is created up front, so each series is exported at zero
//! before its first event: `rate()` and alerts such as "no TLS handshake failed" work
//! from the first scrape, and the exposition text is stable enough for
//! `tests/metrics.rs` to pin. The hot-path methods index pre-resolved children instead
//! of hashing label values on each call.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::time::Instant;

use crate::config::types::ListenerTls;

/// Upper bounds of `coi_proxy_imap_command_duration_seconds`, in seconds.
///
/// From 50 µs (a fast forwarded command such as CAPABILITY or NOOP; replies the proxy
/// writes itself are recorded as 0) to 30 s (a large APPEND or a SEARCH over a big
/// mailbox); roughly 1-2.5-5 per decade, which keeps quantile estimates within a factor
/// of about two. IDLE is observed too, but its duration is the client's choice and lands
/// in `+Inf`.
const COMMAND_DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of `coi_proxy_imap_session_duration_seconds`, in seconds.
///
/// From 1 s (a client that only probes capabilities) to 24 h (a chat client holding IDLE
/// all day; RFC 9051 §5.4 lets it idle 30 minutes at a time and re-issue IDLE forever).
const SESSION_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0, 28_800.0,
    86_400.0,
];

/// All metrics of one process, and the registry they are exported from.
pub struct Metrics {
    registry: Registry,
    /// The IMAP front's metrics.
    pub imap: ImapMetrics,
    /// The submission front's metrics.
    pub submission: SubmissionMetrics,
    /// The delivery hook's metrics, and the IDLE wakes it causes.
    pub delivery: DeliveryMetrics,
    /// The QUIC peer links' metrics: link states, fast-path deliveries and their
    /// fallbacks to mail, and what this proxy verified and stored for its peers.
    pub peer: PeerMetrics,
}

impl Metrics {
    /// Creates and registers every metric, each label combination at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();

        let build_info = IntGaugeVec::new(
            Opts::new(
                "coi_proxy_build_info",
                "Always 1; the version label says which coi-proxy build is running.",
            ),
            &["version"],
        )
        .expect(VALID_METRIC);
        register(&registry, build_info.clone());
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let imap = ImapMetrics::new(&registry);
        let submission = SubmissionMetrics::new(&registry);
        let delivery = DeliveryMetrics::new(&registry);
        let peer = PeerMetrics::new(&registry);
        Metrics {
            registry,
            imap,
            submission,
            delivery,
            peer,
        }
    }

    /// The current value of every metric in the Prometheus text exposition format
    /// (version 0.0.4, content type [`prometheus::TEXT_FORMAT`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding fails only for an empty metric family, which `gather` never returns
        // (it drops them). Should it happen anyway, a partial scrape beats none.
        if let Err(error) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "encoding metrics failed; the scrape is incomplete");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The registry's contents are what `encode` is for; the type name is enough here.
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

// === IMAP ===

/// Metrics of the IMAP front (client ⇄ proxy ⇄ Dovecot).
///
/// The methods do no label lookup, hashing or allocation (the label children are
/// resolved once in [`Metrics::new`]), so they are cheap enough for every command.
pub struct ImapMetrics {
    listeners: ListenerMetrics,
    commands_total: [[IntCounter; CommandOutcome::ALL.len()]; CommandClass::ALL.len()],
    command_duration: [Histogram; CommandClass::ALL.len()],
    bytes_total: [IntCounter; Direction::ALL.len()],
    upstream_connect_failures_total: IntCounter,
}

impl ImapMetrics {
    fn new(registry: &Registry) -> Self {
        let listeners = ListenerMetrics::new(
            registry,
            "imap",
            ListenerHelp {
                connections_current: "IMAP client connections open now, by listener.",
                connections_total: "IMAP client connections accepted, by listener.",
                session_duration: "Time from accepting an IMAP client connection until it \
                                   closed, by listener.",
                tls_handshakes: "TLS handshakes with IMAP clients (implicit TLS or STARTTLS), \
                                 by listener and outcome.",
            },
        );
        let commands_total = IntCounterVec::new(
            Opts::new(
                "coi_proxy_imap_commands_total",
                "IMAP commands completed, by command and outcome (ok/no/bad from the \
                 server's tagged reply; rejected when the proxy answered itself; aborted \
                 when the connection ended first).",
            ),
            &["command", "outcome"],
        )
        .expect(VALID_METRIC);
        let command_duration = HistogramVec::new(
            HistogramOpts::new(
                "coi_proxy_imap_command_duration_seconds",
                "Time from a client's complete IMAP command to its tagged reply, by command.",
            )
            .buckets(COMMAND_DURATION_BUCKETS.to_vec()),
            &["command"],
        )
        .expect(VALID_METRIC);
        let bytes_total = IntCounterVec::new(
            Opts::new(
                "coi_proxy_imap_bytes_total",
                "IMAP bytes relayed, by direction (before TLS encryption).",
            ),
            &["direction"],
        )
        .expect(VALID_METRIC);
        let upstream_connect_failures_total = IntCounter::with_opts(Opts::new(
            "coi_proxy_imap_upstream_connect_failures_total",
            "Connections to the upstream IMAP server that could not be established \
             (refused, timed out or TLS failed).",
        ))
        .expect(VALID_METRIC);

        register(registry, commands_total.clone());
        register(registry, command_duration.clone());
        register(registry, bytes_total.clone());
        register(registry, upstream_connect_failures_total.clone());

        // `with_label_values` creates the child at zero, which is what makes every series
        // visible before its first event.
        Self {
            listeners,
            commands_total: CommandClass::ALL.map(|class| {
                CommandOutcome::ALL.map(|outcome| {
                    commands_total.with_label_values(&[class.as_label(), outcome.as_label()])
                })
            }),
            command_duration: CommandClass::ALL
                .map(|class| command_duration.with_label_values(&[class.as_label()])),
            bytes_total: Direction::ALL
                .map(|direction| bytes_total.with_label_values(&[direction.as_label()])),
            upstream_connect_failures_total,
        }
    }

    /// Counts a newly accepted client connection; see
    /// [`ListenerMetrics::connection_opened`].
    pub fn connection_opened(&self, listener: ListenerKind) -> ConnectionGuard {
        self.listeners.connection_opened(listener)
    }

    /// Records one command from the client's complete command line to its tagged reply.
    pub fn command_finished(
        &self,
        class: CommandClass,
        outcome: CommandOutcome,
        latency: Duration,
    ) {
        self.commands_total[class as usize][outcome as usize].inc();
        self.command_duration[class as usize].observe(latency.as_secs_f64());
    }

    /// Counts `n` relayed bytes.
    pub fn bytes(&self, direction: Direction, n: u64) {
        self.bytes_total[direction as usize].inc_by(n);
    }

    /// Counts one finished (or abandoned) TLS handshake with a client.
    pub fn tls_handshake(&self, listener: ListenerKind, outcome: TlsOutcome) {
        self.listeners.tls_handshake(listener, outcome);
    }

    /// Counts one failed attempt to reach the upstream IMAP server.
    pub fn upstream_connect_failed(&self) {
        self.upstream_connect_failures_total.inc();
    }
}

impl std::fmt::Debug for ImapMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapMetrics").finish_non_exhaustive()
    }
}

/// Accounts for one open client connection; see [`ListenerMetrics::connection_opened`].
#[must_use = "dropping the guard immediately counts the connection as closed"]
#[derive(Debug)]
pub struct ConnectionGuard {
    current: IntGauge,
    duration: Histogram,
    /// tokio's clock rather than std's, so tests with paused time see durations move.
    opened: Instant,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.current.dec();
        self.duration.observe(self.opened.elapsed().as_secs_f64());
    }
}

// === Per listener ===

/// The per-listener metrics of a front that accepts clients (IMAP, submission): the
/// connections open and accepted, how long sessions last, and the TLS handshakes.
pub struct ListenerMetrics {
    connections_current: [IntGauge; ListenerKind::ALL.len()],
    connections_total: [IntCounter; ListenerKind::ALL.len()],
    session_duration: [Histogram; ListenerKind::ALL.len()],
    tls_handshakes_total: [[IntCounter; TlsOutcome::ALL.len()]; ListenerKind::ALL.len()],
}

/// The help texts of one front's per-listener families.
struct ListenerHelp {
    connections_current: &'static str,
    connections_total: &'static str,
    session_duration: &'static str,
    tls_handshakes: &'static str,
}

impl ListenerMetrics {
    /// Creates and registers `coi_proxy_<front>_connections_current`,
    /// `coi_proxy_<front>_connections_total`, `coi_proxy_<front>_session_duration_seconds`
    /// and `coi_proxy_<front>_tls_handshakes_total`, each label combination at zero.
    fn new(registry: &Registry, front: &str, help: ListenerHelp) -> Self {
        let name = |noun: &str| format!("coi_proxy_{front}_{noun}");
        let current = IntGaugeVec::new(
            Opts::new(name("connections_current"), help.connections_current),
            &["listener"],
        )
        .expect(VALID_METRIC);
        register(registry, current.clone());
        let total = IntCounterVec::new(
            Opts::new(name("connections_total"), help.connections_total),
            &["listener"],
        )
        .expect(VALID_METRIC);
        register(registry, total.clone());
        let duration = HistogramVec::new(
            HistogramOpts::new(name("session_duration_seconds"), help.session_duration)
                .buckets(SESSION_DURATION_BUCKETS.to_vec()),
            &["listener"],
        )
        .expect(VALID_METRIC);
        register(registry, duration.clone());
        let tls = IntCounterVec::new(
            Opts::new(name("tls_handshakes_total"), help.tls_handshakes),
            &["listener", "outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, tls.clone());
        Self {
            connections_current: ListenerKind::ALL
                .map(|l| current.with_label_values(&[l.as_label()])),
            connections_total: ListenerKind::ALL.map(|l| total.with_label_values(&[l.as_label()])),
            session_duration: ListenerKind::ALL
                .map(|l| duration.with_label_values(&[l.as_label()])),
            tls_handshakes_total: ListenerKind::ALL.map(|l| {
                TlsOutcome::ALL.map(|o| tls.with_label_values(&[l.as_label(), o.as_label()]))
            }),
        }
    }

    /// Counts a newly accepted client connection.
    ///
    /// Keep the returned guard for the life of the connection: dropping it takes the
    /// connection out of `connections_current` and observes the session duration, so
    /// every exit path (errors and panics included) is accounted for.
    pub fn connection_opened(&self, listener: ListenerKind) -> ConnectionGuard {
        let current = self.connections_current[listener as usize].clone();
        current.inc();
        self.connections_total[listener as usize].inc();
        ConnectionGuard {
            current,
            duration: self.session_duration[listener as usize].clone(),
            opened: Instant::now(),
        }
    }

    /// Counts one finished (or abandoned) TLS handshake with a client.
    pub fn tls_handshake(&self, listener: ListenerKind, outcome: TlsOutcome) {
        self.tls_handshakes_total[listener as usize][outcome as usize].inc();
    }
}

impl std::fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerMetrics").finish_non_exhaustive()
    }
}

// === Submission ===

/// Metrics of the submission front (client → proxy → Postfix).
pub struct SubmissionMetrics {
    listeners: ListenerMetrics,
    auth_total: [IntCounter; AuthOutcome::ALL.len()],
    messages_total: [IntCounter; MessageOutcome::ALL.len()],
    message_bytes_total: IntCounter,
    token_injections_total: IntCounter,
    header_fields_removed_total: IntCounter,
    upstream_connect_failures_total: IntCounter,
}

impl SubmissionMetrics {
    fn new(registry: &Registry) -> Self {
        let listeners = ListenerMetrics::new(
            registry,
            "submission",
            ListenerHelp {
                connections_current: "Submission client connections open now, by listener.",
                connections_total: "Submission client connections accepted, by listener.",
                session_duration: "Time from accepting a submission client connection until \
                                   it closed, by listener.",
                tls_handshakes: "TLS handshakes with submission clients (implicit TLS or \
                                 STARTTLS), by listener and outcome.",
            },
        );
        let auth = IntCounterVec::new(
            Opts::new(
                "coi_proxy_submission_auth_total",
                "AUTH exchanges relayed to Postfix, by outcome (success: 235; failure: \
                 refused or cancelled; unavailable: Postfix could not be asked).",
            ),
            &["outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, auth.clone());
        let messages = IntCounterVec::new(
            Opts::new(
                "coi_proxy_submission_messages_total",
                "Messages whose data ended, by outcome (relayed: Postfix took it; \
                 rejected: Postfix refused it; refused: the proxy refused it for the \
                 client's fault; failed: Postfix failed or went silent, 451; internal: the \
                 proxy's own fault, 451).",
            ),
            &["outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, messages.clone());
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help)).expect(VALID_METRIC);
            register(registry, c.clone());
            c
        };
        Self {
            listeners,
            auth_total: AuthOutcome::ALL.map(|o| auth.with_label_values(&[o.as_label()])),
            messages_total: MessageOutcome::ALL
                .map(|o| messages.with_label_values(&[o.as_label()])),
            message_bytes_total: counter(
                "coi_proxy_submission_message_bytes_total",
                "Body bytes of the messages Postfix took (as received, before stuffing).",
            ),
            token_injections_total: counter(
                "coi_proxy_submission_token_injections_total",
                "X-COI-Temporary-Token fields added to outgoing chat messages.",
            ),
            header_fields_removed_total: counter(
                "coi_proxy_submission_header_fields_removed_total",
                "Client-supplied COI token or verdict fields removed from submitted mail.",
            ),
            upstream_connect_failures_total: counter(
                "coi_proxy_submission_upstream_connect_failures_total",
                "Connections to Postfix that could not be established or set up (refused, \
                 timed out, TLS failed, XCLIENT or EHLO refused).",
            ),
        }
    }

    /// Counts a newly accepted client connection; keep the guard for its life.
    pub fn connection_opened(&self, listener: ListenerKind) -> ConnectionGuard {
        self.listeners.connection_opened(listener)
    }

    pub fn tls_handshake(&self, listener: ListenerKind, outcome: TlsOutcome) {
        self.listeners.tls_handshake(listener, outcome);
    }

    pub fn auth(&self, outcome: AuthOutcome) {
        self.auth_total[outcome as usize].inc();
    }

    /// Counts one message whose data ended; the rewriting figures count only for
    /// messages Postfix took.
    pub fn message(&self, outcome: MessageOutcome, bytes: u64, injected: usize, removed: usize) {
        self.messages_total[outcome as usize].inc();
        if outcome == MessageOutcome::Relayed {
            self.message_bytes_total.inc_by(bytes);
            self.token_injections_total.inc_by(injected as u64);
            self.header_fields_removed_total.inc_by(removed as u64);
        }
    }

    pub fn upstream_connect_failed(&self) {
        self.upstream_connect_failures_total.inc();
    }
}

impl std::fmt::Debug for SubmissionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionMetrics").finish_non_exhaustive()
    }
}

/// How an AUTH exchange ended (label `outcome` of `coi_proxy_submission_auth_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    Failure,
    Success,
    Unavailable,
}

impl AuthOutcome {
    pub const ALL: [Self; 3] = [Self::Failure, Self::Success, Self::Unavailable];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Success => "success",
            Self::Unavailable => "unavailable",
        }
    }
}

/// How a submitted message ended (label `outcome` of
/// `coi_proxy_submission_messages_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageOutcome {
    /// Postfix failed, closed or went silent: the client got 451.
    Failed,
    /// The proxy's own fault: the client got 451.
    Internal,
    /// The proxy refused it for the client's fault (framing, limits, sender).
    Refused,
    /// Postfix refused it (its 4xx/5xx relayed).
    Rejected,
    /// Postfix took it (250 relayed).
    Relayed,
}

impl MessageOutcome {
    pub const ALL: [Self; 5] = [
        Self::Failed,
        Self::Internal,
        Self::Refused,
        Self::Rejected,
        Self::Relayed,
    ];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Internal => "internal",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
            Self::Relayed => "relayed",
        }
    }
}

// === Delivery ===

/// Upper bounds of `coi_proxy_delivery_duration_seconds`: from 1 ms (a chat message
/// appended to a warm connection) to 60 s (a large message to a slow disk).
const DELIVERY_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Metrics of the delivery hook (Postfix → proxy → Dovecot).
pub struct DeliveryMetrics {
    recipients_total: [[IntCounter; DeliveryOutcome::ALL.len()]; DeliveryRoute::ALL.len()],
    token_captures_total: [IntCounter; CaptureOutcome::ALL.len()],
    message_bytes_total: IntCounter,
    duration: Histogram,
    idle_wakes_total: IntCounter,
}

impl DeliveryMetrics {
    fn new(registry: &Registry) -> Self {
        let recipients = IntCounterVec::new(
            Opts::new(
                "coi_proxy_delivery_recipients_total",
                "Recipients of delivered messages, by route (lmtp: relayed to Dovecot's \
                 LMTP; inbox, chats: a COI user's chat message appended with $Chat) and \
                 outcome (delivered; rejected: a permanent refusal; failed: 4xx).",
            ),
            &["route", "outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, recipients.clone());
        let captures = IntCounterVec::new(
            Opts::new(
                "coi_proxy_delivery_token_captures_total",
                "Temporary tokens addressed to a COI recipient, by what happened to the \
                 recipient's contact (stored; unchanged: already there; failed).",
            ),
            &["outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, captures.clone());
        let bytes = IntCounter::with_opts(Opts::new(
            "coi_proxy_delivery_message_bytes_total",
            "Bytes of the messages received from Postfix (unstuffed).",
        ))
        .expect(VALID_METRIC);
        register(registry, bytes.clone());
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "coi_proxy_delivery_duration_seconds",
                "Time from the end of a message's data to the last recipient's reply.",
            )
            .buckets(DELIVERY_DURATION_BUCKETS.to_vec()),
        )
        .expect(VALID_METRIC);
        register(registry, duration.clone());
        let wakes = IntCounter::with_opts(Opts::new(
            "coi_proxy_imap_idle_wakes_total",
            "Backend IDLEs restarted because the proxy stored a message for the idling \
             session's mailbox (DESIGN.md section 6).",
        ))
        .expect(VALID_METRIC);
        register(registry, wakes.clone());
        Self {
            recipients_total: DeliveryRoute::ALL.map(|r| {
                DeliveryOutcome::ALL
                    .map(|o| recipients.with_label_values(&[r.as_label(), o.as_label()]))
            }),
            token_captures_total: CaptureOutcome::ALL
                .map(|o| captures.with_label_values(&[o.as_label()])),
            message_bytes_total: bytes,
            duration,
            idle_wakes_total: wakes,
        }
    }

    pub fn recipient(&self, route: DeliveryRoute, outcome: DeliveryOutcome) {
        self.recipients_total[route as usize][outcome as usize].inc();
    }

    pub fn token_capture(&self, outcome: CaptureOutcome) {
        self.token_captures_total[outcome as usize].inc();
    }

    /// One message delivered (to all its recipients) in `duration`.
    pub fn message(&self, bytes: u64, duration: Duration) {
        self.message_bytes_total.inc_by(bytes);
        self.duration.observe(duration.as_secs_f64());
    }

    pub fn idle_wake(&self) {
        self.idle_wakes_total.inc();
    }
}

impl std::fmt::Debug for DeliveryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryMetrics").finish_non_exhaustive()
    }
}

/// Label `route` of `coi_proxy_delivery_recipients_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryRoute {
    Chats,
    Inbox,
    Lmtp,
}

impl DeliveryRoute {
    pub const ALL: [Self; 3] = [Self::Chats, Self::Inbox, Self::Lmtp];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Chats => "chats",
            Self::Inbox => "inbox",
            Self::Lmtp => "lmtp",
        }
    }
}

/// How a recipient's delivery ended: label `outcome` of
/// `coi_proxy_delivery_recipients_total` (the hook's reply) and of
/// `coi_proxy_peer_deliveries_total` (stored by a peer or accepted by Postfix, a
/// temporary failure, a permanent refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    Delivered,
    Failed,
    Rejected,
}

impl DeliveryOutcome {
    pub const ALL: [Self; 3] = [Self::Delivered, Self::Failed, Self::Rejected];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }

    /// The outcome a reply means.
    pub fn of(code: u16) -> Self {
        match code {
            200..=299 => Self::Delivered,
            400..=499 => Self::Failed,
            _ => Self::Rejected,
        }
    }
}

/// Label `outcome` of `coi_proxy_delivery_token_captures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureOutcome {
    Failed,
    Stored,
    Unchanged,
}

impl CaptureOutcome {
    pub const ALL: [Self; 3] = [Self::Failed, Self::Stored, Self::Unchanged];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Stored => "stored",
            Self::Unchanged => "unchanged",
        }
    }
}

// === Peer links ===

/// Upper bounds of `coi_proxy_peer_delivery_duration_seconds`, in seconds.
///
/// From 0.5 ms to 30 s: the QUIC fast path takes milliseconds (a round trip on a warm
/// link plus the peer's append), while the Postfix path includes the queue hand-off (and
/// any fast-path attempt before it) and can take seconds. 30 s is the largest allowed
/// `peer.delivery_timeout`; roughly 1-2.5-5 per decade, like the other duration buckets.
const PEER_DELIVERY_DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Metrics of the QUIC links between coi-proxies (sending proxy → peer proxy → Dovecot).
pub struct PeerMetrics {
    links: [IntGauge; LinkState::ALL.len()],
    deliveries_total: [[IntCounter; DeliveryOutcome::ALL.len()]; DeliveryPath::ALL.len()],
    delivery_duration: [Histogram; DeliveryPath::ALL.len()],
    fallbacks_total: [IntCounter; FallbackReason::ALL.len()],
    token_verifications_total: [IntCounter; TokenVerification::ALL.len()],
    received_total: [IntCounter; ReceivedOutcome::ALL.len()],
}

impl PeerMetrics {
    fn new(registry: &Registry) -> Self {
        let links = IntGaugeVec::new(
            Opts::new(
                "coi_proxy_peer_links",
                "QUIC links to peer coi-proxies now, by state (connecting: being opened; \
                 up: open; backoff: waiting to reconnect after a failure).",
            ),
            &["state"],
        )
        .expect(VALID_METRIC);
        register(registry, links.clone());
        let deliveries = IntCounterVec::new(
            Opts::new(
                "coi_proxy_peer_deliveries_total",
                "Recipients delivered by this proxy as sender, by path (quic: the fast path \
                 to the recipient's coi-proxy; smtp: handed to Postfix) and outcome \
                 (delivered: stored by the peer or accepted by Postfix; rejected: a \
                 permanent refusal; failed: a temporary failure).",
            ),
            &["path", "outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, deliveries.clone());
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "coi_proxy_peer_delivery_duration_seconds",
                "Time from the end of the client's message data to a recipient's verdict, \
                 by path.",
            )
            .buckets(PEER_DELIVERY_DURATION_BUCKETS.to_vec()),
            &["path"],
        )
        .expect(VALID_METRIC);
        register(registry, duration.clone());
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "coi_proxy_peer_fallbacks_total",
                "Fast-path candidate recipients sent by mail instead, by reason (no_peer: \
                 the domain has no coi-proxy; discovery: DNS failed; connect: the link \
                 could not be opened; backoff: the link is waiting to reconnect; timeout: \
                 no verdict within peer.delivery_timeout; refused: the peer refused the \
                 whole delivery with an Error frame; temp_fail, rejected: the peer's \
                 verdict for the recipient; protocol: the peer broke the protocol or the stream was cut; \
                 too_large: over peer.max_message_bytes; not_chat: not a chat message; \
                 internal: this proxy's own failure).",
            ),
            &["reason"],
        )
        .expect(VALID_METRIC);
        register(registry, fallbacks.clone());
        let verifications = IntCounterVec::new(
            Opts::new(
                "coi_proxy_peer_token_verifications_total",
                "Tokens presented to this proxy over a peer link, by result (temporary, \
                 permanent: accepted tokens of that kind; malformed: not a COI token; \
                 bad_mac: no secret of this proxy produces its MAC; wrong_pair: genuine but \
                 bound to another sender and recipient; expired; not_in_contacts: the \
                 sender is not among the recipient's contacts).",
            ),
            &["result"],
        )
        .expect(VALID_METRIC);
        register(registry, verifications.clone());
        let received = IntCounterVec::new(
            Opts::new(
                "coi_proxy_peer_received_total",
                "Recipients of deliveries received over peer links, by what this proxy \
                 answered (stored; duplicate: already in the mailbox, answered stored \
                 without storing again; rejected: a permanent refusal; temp_fail: a \
                 temporary failure; abandoned: the stream ended before the message was \
                 complete, nothing stored).",
            ),
            &["outcome"],
        )
        .expect(VALID_METRIC);
        register(registry, received.clone());
        Self {
            links: LinkState::ALL.map(|s| links.with_label_values(&[s.as_label()])),
            deliveries_total: DeliveryPath::ALL.map(|p| {
                DeliveryOutcome::ALL
                    .map(|o| deliveries.with_label_values(&[p.as_label(), o.as_label()]))
            }),
            delivery_duration: DeliveryPath::ALL
                .map(|p| duration.with_label_values(&[p.as_label()])),
            fallbacks_total: FallbackReason::ALL
                .map(|r| fallbacks.with_label_values(&[r.as_label()])),
            token_verifications_total: TokenVerification::ALL
                .map(|r| verifications.with_label_values(&[r.as_label()])),
            received_total: ReceivedOutcome::ALL
                .map(|o| received.with_label_values(&[o.as_label()])),
        }
    }

    /// A link changed state: `from` None = a new link, `to` None = the link is gone.
    pub fn link_state(&self, from: Option<LinkState>, to: Option<LinkState>) {
        if let Some(from) = from {
            self.links[from as usize].dec();
        }
        if let Some(to) = to {
            self.links[to as usize].inc();
        }
    }

    /// One recipient's delivery by the sending proxy: which path carried it and how it
    /// ended; `elapsed` from the end of the client's DATA to the recipient's verdict.
    pub fn delivery(&self, path: DeliveryPath, outcome: DeliveryOutcome, elapsed: Duration) {
        self.deliveries_total[path as usize][outcome as usize].inc();
        self.delivery_duration[path as usize].observe(elapsed.as_secs_f64());
    }

    /// A fast-path candidate recipient that went by mail instead, and why.
    pub fn fallback(&self, reason: FallbackReason) {
        self.fallbacks_total[reason as usize].inc();
    }

    /// A token presented to this proxy over a link, and the verdict.
    pub fn token_verification(&self, result: TokenVerification) {
        self.token_verifications_total[result as usize].inc();
    }

    /// One recipient of a delivery received over a link, and what this proxy answered.
    pub fn received(&self, outcome: ReceivedOutcome) {
        self.received_total[outcome as usize].inc();
    }
}

impl std::fmt::Debug for PeerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerMetrics").finish_non_exhaustive()
    }
}

/// The state of a link to a peer proxy (label `state` of `coi_proxy_peer_links`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Waiting to reconnect after a failed connect or a lost link.
    Backoff,
    /// Being opened.
    Connecting,
    /// Open: deliveries can be offered.
    Up,
}

impl LinkState {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 3] = [Self::Backoff, Self::Connecting, Self::Up];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Backoff => "backoff",
            Self::Connecting => "connecting",
            Self::Up => "up",
        }
    }
}

/// Which path carried a recipient's delivery (label `path` of
/// `coi_proxy_peer_deliveries_total` and `coi_proxy_peer_delivery_duration_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryPath {
    /// The fast path: over a QUIC link to the recipient's coi-proxy.
    Quic,
    /// The mail path: handed to Postfix.
    Smtp,
}

impl DeliveryPath {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 2] = [Self::Quic, Self::Smtp];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Smtp => "smtp",
        }
    }
}

/// Why a fast-path candidate recipient went by mail instead (label `reason` of
/// `coi_proxy_peer_fallbacks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// The link is waiting to reconnect.
    Backoff,
    /// The link could not be opened.
    Connect,
    /// The DNS lookup of the domain's coi-proxy failed.
    Discovery,
    /// This proxy's own failure.
    Internal,
    /// The recipient's domain has no coi-proxy.
    NoPeer,
    /// Not a chat message.
    NotChat,
    /// The peer broke the protocol, or the stream was cut.
    Protocol,
    /// The peer refused the whole delivery (an Error frame).
    Refused,
    /// The peer's verdict for the recipient was a permanent refusal.
    Rejected,
    /// The peer's verdict for the recipient was a temporary failure.
    TempFail,
    /// No verdict within `peer.delivery_timeout`.
    Timeout,
    /// Larger than `peer.max_message_bytes`.
    TooLarge,
}

impl FallbackReason {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 12] = [
        Self::Backoff,
        Self::Connect,
        Self::Discovery,
        Self::Internal,
        Self::NoPeer,
        Self::NotChat,
        Self::Protocol,
        Self::Refused,
        Self::Rejected,
        Self::TempFail,
        Self::Timeout,
        Self::TooLarge,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Backoff => "backoff",
            Self::Connect => "connect",
            Self::Discovery => "discovery",
            Self::Internal => "internal",
            Self::NoPeer => "no_peer",
            Self::NotChat => "not_chat",
            Self::Protocol => "protocol",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
            Self::TempFail => "temp_fail",
            Self::Timeout => "timeout",
            Self::TooLarge => "too_large",
        }
    }
}

/// The verdict on a token presented over a link (label `result` of
/// `coi_proxy_peer_token_verifications_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenVerification {
    /// No secret of this proxy produces the token's MAC.
    BadMac,
    Expired,
    /// Not a COI token (it does not parse).
    Malformed,
    /// Genuine, but the sender is not among the recipient's contacts.
    NotInContacts,
    /// Accepted: a permanent token.
    Permanent,
    /// Accepted: a temporary token.
    Temporary,
    /// Genuine, but bound to another sender and recipient pair.
    WrongPair,
}

impl TokenVerification {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 7] = [
        Self::BadMac,
        Self::Expired,
        Self::Malformed,
        Self::NotInContacts,
        Self::Permanent,
        Self::Temporary,
        Self::WrongPair,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::BadMac => "bad_mac",
            Self::Expired => "expired",
            Self::Malformed => "malformed",
            Self::NotInContacts => "not_in_contacts",
            Self::Permanent => "permanent",
            Self::Temporary => "temporary",
            Self::WrongPair => "wrong_pair",
        }
    }
}

/// What this proxy answered for one recipient of a delivery received over a link (label
/// `outcome` of `coi_proxy_peer_received_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceivedOutcome {
    /// The stream ended before the message was complete; nothing stored.
    Abandoned,
    /// Already in the mailbox: answered Stored without storing again.
    Duplicate,
    /// A permanent refusal.
    Rejected,
    Stored,
    /// A temporary failure.
    TempFail,
}

impl ReceivedOutcome {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 5] = [
        Self::Abandoned,
        Self::Duplicate,
        Self::Rejected,
        Self::Stored,
        Self::TempFail,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Abandoned => "abandoned",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Stored => "stored",
            Self::TempFail => "temp_fail",
        }
    }
}

// === Labels ===

/// Which kind of IMAP listener a connection came in on (label `listener`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// TLS from the first byte (993).
    Implicit,
    /// Plaintext, no STARTTLS offered.
    Plain,
    /// Plaintext with STARTTLS (143).
    Starttls,
}

impl ListenerKind {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 3] = [Self::Implicit, Self::Plain, Self::Starttls];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Implicit => "implicit",
            Self::Plain => "plain",
            Self::Starttls => "starttls",
        }
    }
}

impl From<ListenerTls> for ListenerKind {
    fn from(tls: ListenerTls) -> Self {
        match tls {
            ListenerTls::Implicit => Self::Implicit,
            ListenerTls::None => Self::Plain,
            ListenerTls::Starttls => Self::Starttls,
        }
    }
}

/// The command families worth telling apart on a dashboard (label `command`). Everything
/// else, including extensions the proxy merely forwards, is [`CommandClass::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandClass {
    Append,
    Authenticate,
    Capability,
    /// The COI command family (COI-PROTOCOL §5).
    Coi,
    /// FETCH and UID FETCH.
    Fetch,
    Idle,
    /// LIST, LSUB and their extended forms.
    List,
    Login,
    Logout,
    /// GETMETADATA and SETMETADATA (RFC 5464), where the COI configuration lives.
    Metadata,
    Noop,
    Other,
    /// SEARCH and UID SEARCH.
    Search,
    /// SELECT and EXAMINE.
    Select,
    Starttls,
    /// STORE and UID STORE.
    Store,
}

impl CommandClass {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 16] = [
        Self::Append,
        Self::Authenticate,
        Self::Capability,
        Self::Coi,
        Self::Fetch,
        Self::Idle,
        Self::List,
        Self::Login,
        Self::Logout,
        Self::Metadata,
        Self::Noop,
        Self::Other,
        Self::Search,
        Self::Select,
        Self::Starttls,
        Self::Store,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Authenticate => "authenticate",
            Self::Capability => "capability",
            Self::Coi => "coi",
            Self::Fetch => "fetch",
            Self::Idle => "idle",
            Self::List => "list",
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Metadata => "metadata",
            Self::Noop => "noop",
            Self::Other => "other",
            Self::Search => "search",
            Self::Select => "select",
            Self::Starttls => "starttls",
            Self::Store => "store",
        }
    }
}

/// How a command ended (label `outcome` of `coi_proxy_imap_commands_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandOutcome {
    /// The connection ended before the tagged reply.
    Aborted,
    /// The server's tagged reply was BAD.
    Bad,
    /// The server's tagged reply was NO.
    No,
    /// The server's tagged reply was OK.
    Ok,
    /// The proxy answered the command itself with NO or BAD (policy, framing, limits)
    /// and never forwarded it.
    Rejected,
}

impl CommandOutcome {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 5] = [Self::Aborted, Self::Bad, Self::No, Self::Ok, Self::Rejected];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::Bad => "bad",
            Self::No => "no",
            Self::Ok => "ok",
            Self::Rejected => "rejected",
        }
    }
}

/// Which way relayed bytes went (label `direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the upstream (or the proxy itself) to the client.
    ToClient,
    /// From the client (or the proxy itself) to the upstream.
    ToUpstream,
}

impl Direction {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 2] = [Self::ToClient, Self::ToUpstream];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::ToClient => "to_client",
            Self::ToUpstream => "to_upstream",
        }
    }
}

/// How a TLS handshake with a client ended (label `outcome` of
/// `coi_proxy_imap_tls_handshakes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsOutcome {
    /// The handshake failed (bad ClientHello, no common version or cipher, peer alert).
    Failed,
    Ok,
    /// The client did not finish within the configured handshake timeout.
    Timeout,
}

impl TlsOutcome {
    /// Every variant, in declaration order (the order of the internal arrays).
    pub const ALL: [Self; 3] = [Self::Failed, Self::Ok, Self::Timeout];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Ok => "ok",
            Self::Timeout => "timeout",
        }
    }
}

// === Helpers ===

/// Names, help texts, label names and buckets above are constants that
/// `tests/metrics.rs` exercises, so construction cannot fail at runtime.
const VALID_METRIC: &str = "metric definitions are constant and valid";

fn register<C: prometheus::core::Collector + 'static>(registry: &Registry, collector: C) {
    // Registration fails only on a duplicate or inconsistent name, i.e. a programming
    // error in this file; `Metrics::new` runs in every metrics test, so it cannot ship.
    registry
        .register(Box::new(collector))
        .expect("metric names are unique within this file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_follow_declaration_order() {
        // The arrays in `ImapMetrics` are indexed by `variant as usize`.
        for (i, v) in ListenerKind::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in CommandClass::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in CommandOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in Direction::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in TlsOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in AuthOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in MessageOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in DeliveryRoute::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in DeliveryOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in CaptureOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in LinkState::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in DeliveryPath::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in DeliveryOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in FallbackReason::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in TokenVerification::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, v) in ReceivedOutcome::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
    }

    #[test]
    fn labels_are_sorted_like_variants_and_distinct() {
        fn check(labels: Vec<&'static str>) {
            let mut sorted = labels.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(labels, sorted);
        }
        check(ListenerKind::ALL.map(ListenerKind::as_label).to_vec());
        check(CommandClass::ALL.map(CommandClass::as_label).to_vec());
        check(CommandOutcome::ALL.map(CommandOutcome::as_label).to_vec());
        check(Direction::ALL.map(Direction::as_label).to_vec());
        check(TlsOutcome::ALL.map(TlsOutcome::as_label).to_vec());
        check(AuthOutcome::ALL.map(AuthOutcome::as_label).to_vec());
        check(MessageOutcome::ALL.map(MessageOutcome::as_label).to_vec());
        check(DeliveryRoute::ALL.map(DeliveryRoute::as_label).to_vec());
        check(DeliveryOutcome::ALL.map(DeliveryOutcome::as_label).to_vec());
        check(CaptureOutcome::ALL.map(CaptureOutcome::as_label).to_vec());
        check(LinkState::ALL.map(LinkState::as_label).to_vec());
        check(DeliveryPath::ALL.map(DeliveryPath::as_label).to_vec());
        check(DeliveryOutcome::ALL.map(DeliveryOutcome::as_label).to_vec());
        check(FallbackReason::ALL.map(FallbackReason::as_label).to_vec());
        check(
            TokenVerification::ALL
                .map(TokenVerification::as_label)
                .to_vec(),
        );
        check(ReceivedOutcome::ALL.map(ReceivedOutcome::as_label).to_vec());
    }

    #[test]
    fn buckets_increase() {
        for buckets in [
            COMMAND_DURATION_BUCKETS,
            SESSION_DURATION_BUCKETS,
            DELIVERY_DURATION_BUCKETS,
            PEER_DELIVERY_DURATION_BUCKETS,
        ] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(COMMAND_DURATION_BUCKETS.first(), Some(&0.000_05));
        assert_eq!(COMMAND_DURATION_BUCKETS.last(), Some(&30.0));
        assert_eq!(SESSION_DURATION_BUCKETS.first(), Some(&1.0));
        assert_eq!(SESSION_DURATION_BUCKETS.last(), Some(&86_400.0));
        assert_eq!(PEER_DELIVERY_DURATION_BUCKETS.first(), Some(&0.000_5));
        assert_eq!(PEER_DELIVERY_DURATION_BUCKETS.last(), Some(&30.0));
    }

    #[test]
    fn listener_kind_from_config() {
        assert_eq!(
            ListenerKind::from(ListenerTls::Implicit),
            ListenerKind::Implicit
        );
        assert_eq!(ListenerKind::from(ListenerTls::None), ListenerKind::Plain);
        assert_eq!(
            ListenerKind::from(ListenerTls::Starttls),
            ListenerKind::Starttls
        );
    }

    #[tokio::test(start_paused = true)]
    async fn guard_observes_session_duration() {
        let metrics = Metrics::new();
        let guard = metrics.imap.connection_opened(ListenerKind::Starttls);
        let idx = ListenerKind::Starttls as usize;
        assert_eq!(metrics.imap.listeners.connections_current[idx].get(), 1);
        tokio::time::advance(Duration::from_secs(90)).await;
        drop(guard);
        assert_eq!(metrics.imap.listeners.connections_current[idx].get(), 0);
        let histogram = &metrics.imap.listeners.session_duration[idx];
        assert_eq!(histogram.get_sample_count(), 1);
        assert!(histogram.get_sample_sum() >= 90.0);
    }
}
