//! The validated, typed configuration. Everything here has passed `validate`; the rest of
//! the program never sees a raw YAML value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole, validated configuration of one coi-proxy process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub imap: ImapConfig,
    /// Certificate and key served by every TLS listener; required as soon as a listener
    /// uses TLS (implicit or STARTTLS).
    pub tls: Option<TlsFiles>,
    pub coi: CoiConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImapConfig {
    /// At least one listener.
    pub listeners: Vec<ImapListener>,
    pub upstream: ImapUpstream,
    pub limits: ImapLimits,
    pub timeouts: ImapTimeouts,
    pub bare_lf: BareLfPolicy,
    /// Allows LOGIN/AUTHENTICATE on a connection that is not protected by TLS. Dovecot
    /// trusts the proxy's loopback connection, so only the proxy can refuse plaintext
    /// authentication; turning this on removes that protection.
    pub insecure_allow_plaintext_auth: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImapListener {
    /// A short name ("imap", "imaps") used in logs (startup, bind errors) and in the
    /// `listening imap <name> <addr>` line; not a metric label (metrics and the session
    /// span use the listener kind).
    pub name: String,
    pub address: SocketAddr,
    pub tls: ListenerTls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerTls {
    /// Plaintext only: no STARTTLS offered (for a TLS-terminating load balancer in front).
    None,
    /// Plaintext with STARTTLS (port 143).
    Starttls,
    /// TLS from the first byte (port 993, RFC 8314).
    Implicit,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImapUpstream {
    /// Host name or IP literal and port of Dovecot's IMAP service.
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    pub connect_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamTls {
    /// Plaintext, for loopback or a unix-socket-like trusted link only.
    None,
    /// Implicit TLS to the upstream; STARTTLS towards an upstream is never used.
    Implicit {
        /// Name checked against the upstream certificate; defaults to `host`.
        server_name: String,
        /// Extra CA certificates (PEM); without it the system has no roots here, so it is
        /// required by validation.
        ca_file: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImapLimits {
    /// Longest command line accepted from a client, excluding the CRLF.
    pub max_line_bytes: usize,
    /// Largest literal a client may send; advertised as APPENDLIMIT.
    pub max_literal_bytes: u64,
    /// Concurrent client sessions per listener.
    pub max_sessions: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImapTimeouts {
    /// How long a TLS handshake may take: from accept on an implicit-TLS listener, from
    /// the STARTTLS OK on a STARTTLS listener.
    pub tls_handshake: Duration,
    /// From the moment the session starts relaying (after the implicit TLS handshake and
    /// the upstream connect) until successful authentication; not reset by activity.
    pub pre_auth: Duration,
    /// Inactivity allowed after authentication (RFC 9051 §5.4: at least 30 minutes).
    pub idle: Duration,
    /// How long the proxy waits for the upstream to answer one of its own commands.
    pub upstream_reply: Duration,
    /// The wait imposed on the next authentication from a client address after a failed
    /// one; it doubles with each further failure up to 15 s (Dovecot's own per-address
    /// penalty, which behind a proxy would otherwise hit the proxy's address).
    pub auth_failure_delay: Duration,
}

/// What a line ending in a bare LF (no CR) means on the client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareLfPolicy {
    /// The command is refused with BAD; framing continues at the LF.
    Reject,
    /// The line is accepted and re-sent upstream with CRLF (Dovecot accepts bare LF too,
    /// so both parsers agree; the proxy never forwards the bare LF itself).
    Canonicalize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CoiConfig {
    /// Root of the COI folders, e.g. "COI" → "COI/Chats", "COI/Contacts". Read-only for
    /// clients (COI-PROTOCOL §2.2).
    pub mailbox_root: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// Where /metrics, /healthz and /readyz are served; `None` disables the listener.
    pub address: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive, e.g. "info" or "coi_proxy=debug,info".
    pub level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long sessions may go on before they get `* BYE`.
    pub grace: Duration,
}
