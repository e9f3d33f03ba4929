//! How the mailbox writer reaches Dovecot, and the limits of its pool.

use std::fmt;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// How long a TCP connect plus TLS handshake may take: Dovecot on the same host or in the
/// same cluster answers in milliseconds, so seconds mean it is down or unreachable, and a
/// delivery should fail over (4xx) well inside an SMTP client's wait.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command may wait for its reply (and one write or body read for progress):
/// covers an fsync'ed APPEND and a header SEARCH in a large mailbox, and stays far below
/// RFC 5321's 10-minute end-of-data wait, so the SMTP side can still answer 451.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per user: deliveries to one user come in bursts, and Dovecot
/// counts master logins against `mail_max_userip_connections` (default 10 per user and
/// IP), which the user's own clients share.
pub const DEFAULT_MAX_IDLE_PER_USER: usize = 2;

/// Connections open at once, idle or in use: each holds a Dovecot `imap` process
/// (`service imap { process_limit }` defaults to 1024 for all users together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long an idle connection is kept for reuse: long enough to carry a burst of
/// deliveries, far below Dovecot's 30-minute autologout, so a pooled connection is not
/// closed under us and idle `imap` processes are given back soon.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection is used at all, however busy: picks up Dovecot restarts,
/// configuration reloads and a changed master password, and bounds the memory a
/// long-lived Dovecot process accumulates.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Largest single response the writer buffers (one FETCH body, one METADATA value), and
/// the total of one [`uid_fetch_bodies`](super::WriterSession::uid_fetch_bodies) call:
/// above the usual message size limits (Postfix's `message_size_limit` is 10 MB by
/// default, large providers allow 50 MB), while bounding memory per call.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Where and how the mailbox writer logs in to Dovecot.
#[derive(Clone)]
pub struct WriterConfig {
    /// Host name or IP literal of Dovecot's IMAP service.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Implicit TLS to Dovecot; `None` for plaintext (loopback or a trusted link only).
    pub tls: Option<WriterTls>,
    /// The Dovecot master user (a passdb with `master = yes`).
    pub master_user: String,
    /// The master user's password.
    pub master_password: MasterPassword,
    /// Bound on TCP connect plus TLS handshake, and on waiting for a free pool slot.
    pub connect_timeout: Duration,
    /// Bound on each command's reply (the greeting and the login included), and on each
    /// write to Dovecot or read from an APPEND body making progress.
    pub reply_timeout: Duration,
    /// Idle connections kept per user; 0 disables reuse.
    pub max_idle_per_user: usize,
    /// Connections open at once, idle or in use (at least 1).
    pub max_connections: usize,
    /// An idle connection unused for longer is closed instead of reused.
    pub idle_timeout: Duration,
    /// A connection opened longer ago is closed instead of reused.
    pub max_lifetime: Duration,
    /// Largest response buffered; see [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub max_response_bytes: usize,
    /// Use non-synchronising literals when Dovecot advertises `LITERAL+`/`LITERAL-`
    /// (saves a round trip per APPEND). Off forces synchronising literals: an interop
    /// switch for servers whose `LITERAL+` is broken.
    pub literal_plus: bool,
}

impl WriterConfig {
    /// A plaintext configuration with every default.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        master_user: impl Into<String>,
        master_password: MasterPassword,
    ) -> WriterConfig {
        WriterConfig {
            host: host.into(),
            port,
            tls: None,
            master_user: master_user.into(),
            master_password,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            max_idle_per_user: DEFAULT_MAX_IDLE_PER_USER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            literal_plus: true,
        }
    }
}

impl fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("master_user", &self.master_user)
            .field("master_password", &self.master_password)
            .field("connect_timeout", &self.connect_timeout)
            .field("reply_timeout", &self.reply_timeout)
            .field("max_idle_per_user", &self.max_idle_per_user)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("literal_plus", &self.literal_plus)
            .finish()
    }
}

/// Implicit TLS towards Dovecot.
#[derive(Clone)]
pub struct WriterTls {
    /// Client configuration (roots, versions).
    pub connector: TlsConnector,
    /// The name Dovecot's certificate must be valid for.
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for WriterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The master user's password. Its `Debug` is redacted and it has no `Display`, so it
/// cannot end up in a log line or an error message by accident.
#[derive(Clone)]
pub struct MasterPassword(String);

impl MasterPassword {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> MasterPassword {
        MasterPassword(password.into())
    }

    /// The password, for the one place that sends it (the SASL PLAIN message).
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MasterPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterPassword(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let config = WriterConfig::new(
            "127.0.0.1",
            143,
            "proxy-master",
            MasterPassword::new("hunter2"),
        );
        let shown = format!("{config:?} {:?}", config.master_password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("proxy-master"), "{shown}");
    }
}
