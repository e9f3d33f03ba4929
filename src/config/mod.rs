//! Configuration: YAML text → `raw` shapes → `validate` → typed [`Config`].
//!
//! Loading fails loudly and completely: unknown keys are rejected, and every error in the
//! file is reported at once, each with its key path (`imap.listeners[1].address: ...`), so
//! one run of `coi-proxy check` shows everything to fix. Validation is pure (no file
//! system, no network): whether certificate files exist is checked at startup.
//!
//! Every default below is a named constant with the reason for its value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

mod raw;
pub mod types;
mod validate;

pub use types::*;

/// Prefix of a listener's default name, followed by its index: the first unnamed listener
/// is "imap-0", still a stable metric label as long as the list order is kept.
pub const DEFAULT_LISTENER_NAME_PREFIX: &str = "imap-";

/// Dovecot normally runs next to the proxy (same pod or host), where a plaintext link
/// adds no exposure and TLS would only cost CPU.
pub const DEFAULT_UPSTREAM_TLS: UpstreamTls = UpstreamTls::None;

/// A local Dovecot accepts in milliseconds; 5 s rides out a brief restart without keeping
/// the client waiting on a dead backend.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dovecot's imap_max_line_length is 64 KiB; matching it means the proxy never accepts a
/// line Dovecot would refuse.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Advertised as APPENDLIMIT: fits a 35 MiB attachment after base64's 4/3 growth (above
/// the usual provider ceilings of 25-35 MB) while bounding what one APPEND may stream.
pub const DEFAULT_MAX_LITERAL_BYTES: u64 = 50 * 1024 * 1024;

/// Each session holds two sockets; 10 000 sessions stay well inside the common 65 536
/// open-file limit, with room for the admin listener and TLS files.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// A TLS handshake is a few round trips; 10 s covers slow mobile links and still frees
/// connections that stall half-way (slowloris).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Unauthenticated sessions cost memory and a backend connection but prove nothing; a
/// minute covers a slow SASL exchange.
pub const DEFAULT_PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(60);

/// RFC 9051 §5.4: an inactivity autologout timer must be at least 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Dovecot answers the proxy's own commands (CAPABILITY, METADATA) in milliseconds; 30 s
/// only fires when the backend is wedged.
pub const DEFAULT_UPSTREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Dovecot's first auth penalty step is 2 s; the proxy applies the same per client address.
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(2);

/// RFC 9051 requires CRLF; refusing bare LF keeps the proxy and Dovecot from framing the
/// same bytes differently (SECURITY-CASES: parser differentials).
pub const DEFAULT_BARE_LF: BareLfPolicy = BareLfPolicy::Reject;

/// Dovecot trusts the proxy's connection, so the proxy is the only place left to refuse
/// passwords sent in clear (RFC 8314); weakening that must be an explicit choice.
pub const DEFAULT_INSECURE_ALLOW_PLAINTEXT_AUTH: bool = false;

/// The root Dovecot's COI plugin uses by default (COI-PROTOCOL §2.2: `COI/Chats`,
/// `COI/Contacts`).
pub const DEFAULT_MAILBOX_ROOT: &str = "COI";

/// Prefix of an unnamed submission listener's default name ("submission-0", ...).
pub const DEFAULT_SUBMISSION_LISTENER_NAME_PREFIX: &str = "submission-";

/// Postfix's `line_length_limit` default is 2048: RFC 5321's 512 is too tight for MAIL
/// FROM with DSN, SMTPUTF8 and AUTH= parameters, and 2048 is what the backend accepts.
pub const DEFAULT_SUBMISSION_MAX_LINE_BYTES: usize = 2048;

/// Allowed `submission.limits.max_line_bytes`: RFC 5321 §4.5.3.1.4's 512 is the floor
/// every client may rely on; 64 KiB bounds what a line can pin (it is buffered whole).
pub const SUBMISSION_MAX_LINE_BYTES_RANGE: RangeInclusive<usize> = 512..=64 * 1024;

/// The usual provider ceiling of 25-35 MB attachments after base64 growth, and the IMAP
/// front's APPENDLIMIT, so what can be sent can also be saved to Sent.
pub const DEFAULT_SUBMISSION_MAX_MESSAGE_BYTES: u64 = DEFAULT_MAX_LITERAL_BYTES;

/// Allowed `submission.limits.max_message_bytes` (see [`MAX_LITERAL_BYTES_RANGE`]).
pub const SUBMISSION_MAX_MESSAGE_BYTES_RANGE: RangeInclusive<u64> = MAX_LITERAL_BYTES_RANGE;

/// Postfix's `smtpd_recipient_limit` default: a client that needs more already fails
/// against the backend (SECURITY-CASES case 37).
pub const DEFAULT_SUBMISSION_MAX_RECIPIENTS: usize = 1000;

/// RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
pub const DEFAULT_SUBMISSION_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Postfix answers the end of data in milliseconds (it queues, it does not deliver); 60 s
/// only fires when it is wedged, and stays well inside the client's own 10-minute wait
/// for that reply (RFC 5321 §4.5.3.2.6), so the client hears 451 rather than timing out.
pub const DEFAULT_SUBMISSION_UPSTREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// COI-PROTOCOL / DESIGN §3: temporary tokens in outgoing chat mail live 30 days, long
/// enough for a conversation to start, short enough that a leaked one expires.
pub const DEFAULT_TEMPORARY_TOKEN_VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Longest accepted token validity: a permanent token lives 365 days (COI-PROTOCOL
/// §4.6); a temporary one should not outlive it.
pub const MAX_TOKEN_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Shortest token secret: a MAC key is only as strong as its entropy, and 16 bytes of
/// random text (`openssl rand -base64 24` gives 32) is the least worth calling a key.
pub const MIN_TOKEN_SECRET_LEN: usize = 16;

/// Inbound mail has no client to blame for its size: Postfix already applied its own
/// `message_size_limit`; the hook's limit only bounds what one delivery may spool.
pub const DEFAULT_DELIVERY_MAX_MESSAGE_BYTES: u64 = 100 * 1024 * 1024;

/// Postfix's LMTP client sends at most `lmtp_destination_recipient_limit` (50 by default)
/// recipients per transaction; 1000 leaves room for a raised setting.
pub const DEFAULT_DELIVERY_MAX_RECIPIENTS: usize = 1000;

/// Postfix runs at most `default_process_limit` (100) LMTP clients; 1000 leaves room.
pub const DEFAULT_DELIVERY_MAX_SESSIONS: usize = 1000;

/// Chat messages are a few KiB; 1 MiB keeps nearly all mail off the disk while a
/// thousand concurrent deliveries stay within a GiB.
pub const DEFAULT_SPOOL_MEMORY_BYTES: usize = 1024 * 1024;

/// Allowed `delivery.limits.spool_memory_bytes`: up to 64 MiB per delivery.
pub const SPOOL_MEMORY_BYTES_RANGE: RangeInclusive<usize> = 0..=64 * 1024 * 1024;

/// Dovecot's LMTP names users by the full address unless configured otherwise.
pub const DEFAULT_USER_NAME: UserName = UserName::Address;

/// A resolver answers from its cache in milliseconds and resolves a cold name well within
/// a second; 3 s still covers a slow authoritative server, and bounds what a broken DNS
/// adds to a send before the message falls back to mail.
pub const DEFAULT_PEER_DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Even a zone that publishes day-long TTLs has a moved or retired coi-proxy noticed
/// within the hour; one SRV query per peer domain per hour costs nothing.
pub const DEFAULT_PEER_DNS_MAX_TTL: Duration = Duration::from_secs(60 * 60);

/// Most mail domains have no coi-proxy, so without a floor every message to them would
/// cost an SRV query (RFC 2308 negative TTLs can be zero). A minute keeps it to one query
/// per domain per minute, and a domain that just published its record gets the fast path
/// within a minute.
pub const DEFAULT_PEER_DNS_NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// While the resolver fails, every message to the domain would otherwise wait the whole
/// timeout before going by mail; 5 s limits that to one wait per domain per 5 s. Shorter
/// than the negative TTL: the failure is probably transient, and the domain may well have
/// a coi-proxy.
pub const DEFAULT_PEER_DNS_ERROR_TTL: Duration = Duration::from_secs(5);

/// SECURITY-CASES §4 rule 4 gives the fast path 2-5 s of the client's DATA wait. A link
/// answers a chat message in milliseconds, so 3 s only ever runs out when the peer is in
/// trouble, and the mail path still has the rest of the client's wait.
pub const DEFAULT_PEER_DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Allowed `peer.delivery_timeout`. Below 100 ms an offer to a peer on another continent
/// (a round trip of 100-300 ms) could never be answered, so every message would wait for
/// nothing and then go by mail; "10ms" is more likely a slip for "10s". Above 30 s the
/// fast path takes far more than the few seconds rule 4 allots it, and a stalled peer
/// would hold every sender's reply to the end of data that long.
pub const PEER_DELIVERY_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(30);

/// A chat message with a photo fits. The whole offer must finish within
/// `delivery_timeout`; larger mail takes the mail path, where Postfix's own
/// `message_size_limit` applies.
pub const DEFAULT_PEER_MAX_MESSAGE_BYTES: u64 = 10 * 1024 * 1024;

/// Allowed `peer.max_message_bytes`: the header of any real message already takes several
/// hundred bytes, so below 1 KiB no message would ever take a link (leave `peer.address`
/// out instead); the upper end is the largest body the peer protocol lets a delivery
/// announce ([`crate::proto::peer::MAX_BODY_LEN`], 1 GiB).
pub const PEER_MAX_MESSAGE_BYTES_RANGE: RangeInclusive<u64> =
    1024..=crate::proto::peer::MAX_BODY_LEN;

/// Loopback, so metrics and health endpoints are never exposed by accident; 9090 is the
/// conventional Prometheus port.
pub const DEFAULT_ADMIN_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

/// The value of `admin.address` that disables the admin listener.
pub const ADMIN_ADDRESS_OFF: &str = "off";

/// Text is readable on a terminal and in `kubectl logs`; log pipelines opt into JSON.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// One line per session event and error, without per-command detail or user data.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Kubernetes' default terminationGracePeriodSeconds is also 30 s; give the pod a few
/// seconds more so `* BYE` goes out before SIGKILL.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Allowed `imap.limits.max_line_bytes`: below 1 KiB ordinary LOGIN and UID FETCH lines
/// stop fitting; a line is buffered whole, so 16 MiB caps the memory one session can pin.
pub const MAX_LINE_BYTES_RANGE: RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// Allowed `imap.limits.max_literal_bytes`: APPENDLIMIT=0 would forbid every APPEND, and
/// no mail store keeps 4 GiB messages, so a larger value is a typo (an extra digit).
pub const MAX_LITERAL_BYTES_RANGE: RangeInclusive<u64> = 1..=4 * 1024 * 1024 * 1024;

/// The idle timer runs at second granularity in practice; a sub-second idle timeout
/// would drop every client between two commands.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest accepted duration: a week-long timeout is a typo, and the bound keeps
/// `Instant + timeout` arithmetic elsewhere from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Longest listener name: names become log fields and metric labels, which stay short.
pub const MAX_LISTENER_NAME_LEN: usize = 32;

/// Parses and validates a configuration given as YAML text.
///
/// Returns every problem found, not just the first.
pub fn load_str(yaml: &str) -> Result<Config, ConfigErrors> {
    let document = raw::parse_document(yaml).map_err(|e| ConfigErrors(vec![e]))?;
    validate::validate(&document)
}

/// Reads and validates the configuration file at `path`.
///
/// A file that cannot be read (or is not UTF-8) is a single error whose path is the file
/// name.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let yaml = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.display().to_string(),
            message: format!("cannot read configuration file: {e}"),
        }])
    })?;
    load_str(&yaml)
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", PathPrefix(path))]
pub struct ConfigError {
    /// Where the problem is: a key path such as `imap.listeners[1].address`; empty when
    /// the document as a whole is at fault (e.g. a YAML syntax error, whose message gives
    /// the line and column).
    pub path: String,
    /// What is wrong, on one line.
    pub message: String,
}

/// Every problem found in one configuration, in schema order. Never empty when returned
/// by [`load`] or [`load_str`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Fuzz entry for the configuration loader: must never panic, whatever the bytes.
///
/// Non-UTF-8 input cannot be a configuration file's text, so it just returns. The
/// assertions are invariants the loader promises its callers.
#[doc(hidden)]
pub fn fuzz_load_str(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = load_str(text) {
        assert!(
            !errors.0.is_empty(),
            "a failed load reports at least one error"
        );
        let shown = errors.to_string();
        assert_eq!(
            shown.lines().count(),
            errors.0.len(),
            "each error prints on exactly one line"
        );
    }
}

/// `path: ` before a message, or nothing for a document-level error.
struct PathPrefix<'a>(&'a str);

impl fmt::Display for PathPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, "{}: ", self.0)
    }
}

/// One error per line, without a trailing newline.
struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
