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
    /// The submission front; `None` when the section is absent (IMAP only).
    pub submission: Option<SubmissionConfig>,
    /// The delivery hook; `None` when the section is absent.
    pub delivery: Option<DeliveryConfig>,
    /// The mailbox writer (Dovecot master user); `None`: the proxy writes nothing into
    /// mailboxes itself, so the hook relays everything to Dovecot's LMTP.
    pub mailbox_writer: Option<MailboxWriterConfig>,
    /// Links to the coi-proxy of other domains; an absent section means no static routes
    /// and DNS discovery through the system's resolver.
    pub peer: PeerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImapConfig {
    /// At least one listener.
    pub listeners: Vec<Listener>,
    pub upstream: Upstream,
    pub limits: ImapLimits,
    pub timeouts: ImapTimeouts,
    pub bare_lf: BareLfPolicy,
    /// Allows LOGIN/AUTHENTICATE on a connection that is not protected by TLS. Dovecot
    /// trusts the proxy's loopback connection, so only the proxy can refuse plaintext
    /// authentication; turning this on removes that protection.
    pub insecure_allow_plaintext_auth: bool,
}

/// A listening socket of a front (IMAP or submission).
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// A short name ("imap", "submissions") used in logs (startup, bind errors) and in
    /// the `listening <front> <name> <addr>` line; not a metric label (metrics and the
    /// session span use the listener kind).
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

/// The backend service a front connects to (Dovecot IMAP, Postfix submission).
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    /// Host name or IP literal and port of the backend service.
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
    pub tokens: TokenConfig,
    /// The `X-COI-Server: host:port` hint added to outgoing chat messages: where other
    /// domains' proxies reach this one. `None`: no hint.
    pub server: Option<String>,
}

/// Token secrets and lifetimes (COI-PROTOCOL §4.5–4.6).
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// The first of each list issues, all of them verify (rotation: prepend a new one).
    /// Without temporary secrets no token is injected into outgoing mail.
    pub secrets: crate::coi::token::Secrets,
    /// Validity of the temporary tokens injected into outgoing chat mail.
    pub temporary_validity: Duration,
}

impl PartialEq for TokenConfig {
    /// Secrets never compare (they have no `PartialEq`, so that no code compares them
    /// in variable time); configurations compare by their number and the validity.
    fn eq(&self, other: &Self) -> bool {
        self.secrets.temporary.len() == other.secrets.temporary.len()
            && self.secrets.permanent.len() == other.secrets.permanent.len()
            && self.temporary_validity == other.temporary_validity
    }
}

/// The submission front (RFC 6409): clients submit mail here, the proxy relays it to
/// Postfix's submission service with the COI headers rewritten.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionConfig {
    /// At least one listener (587 with STARTTLS, 465 implicit TLS).
    pub listeners: Vec<Listener>,
    /// Postfix's submission listener reserved for the proxy: SASL enabled, XCLIENT
    /// authorized for the proxy's address.
    pub upstream: Upstream,
    /// The name in the proxy's greeting and in its EHLO to Postfix.
    pub hostname: String,
    /// Domains whose addresses a user who logged in without a domain owns
    /// (`alice` → `alice@<each domain>`); a login with `@` owns exactly that address.
    pub sender_domains: Vec<String>,
    pub limits: SubmissionLimits,
    pub timeouts: SubmissionTimeouts,
    /// Allows AUTH on a connection that is not protected by TLS.
    pub insecure_allow_plaintext_auth: bool,
    /// Lets an authenticated user send with any envelope sender and `From` (tokens sign
    /// the sender, so this makes forging them possible).
    pub insecure_allow_any_sender: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionLimits {
    /// Longest command line, CRLF excluded.
    pub max_line_bytes: usize,
    /// Largest message (RFC 1870 SIZE), advertised in EHLO.
    pub max_message_bytes: u64,
    /// Most recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Concurrent client sessions per listener.
    pub max_sessions: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionTimeouts {
    /// From accept (implicit TLS) or the STARTTLS reply until the handshake is done.
    pub tls_handshake: Duration,
    /// From the greeting until successful AUTH; not reset by activity.
    pub pre_auth: Duration,
    /// After AUTH, how long the proxy waits for the next command or the next part of a
    /// message (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub command: Duration,
    /// How long the proxy waits for Postfix to answer a command; after the end of data
    /// the client then gets 451 4.3.0 (SECURITY-CASES §4 rule 2).
    pub upstream_reply: Duration,
}

/// Peer links to the coi-proxy of other domains (DESIGN §4).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerConfig {
    /// Static routes, consulted before DNS, in file order; no two for one domain.
    pub routes: Vec<PeerRoute>,
    pub dns: PeerDnsConfig,
    /// The QUIC endpoint and what deliveries over it may take; `None` (no
    /// `peer.address`): no peer links at all, every message takes the mail path.
    pub link: Option<PeerLinkConfig>,
}

/// The QUIC endpoint of the peer links (`peer.address` and the keys beside it).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerLinkConfig {
    /// UDP address the endpoint binds: peers connect to it, and links to peers leave
    /// from it.
    pub address: SocketAddr,
    /// This domain's certificate chain and key (PEM): shown to peers as server and as
    /// client certificate, so it must name the mail domains this proxy speaks for.
    pub tls: TlsFiles,
    /// CA certificates (PEM) that vouch for the peers' certificates.
    pub ca_file: PathBuf,
    /// How long the sender offers a message over a link before the recipients not yet
    /// stored go by mail (within the client's DATA wait).
    pub delivery_timeout: Duration,
    /// Largest message offered or accepted over a link; larger ones take the mail path.
    pub max_message_bytes: u64,
}

/// A static route: the coi-proxy of `domain` is at `host:port`, whatever DNS says.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRoute {
    /// The mail domain as a lowercase A-label ("xn--mnchen-3ya.example", not
    /// "München.example"), without a trailing dot.
    pub domain: String,
    /// Host name or IP literal (IPv6 without brackets) of the remote coi-proxy; a name is
    /// resolved through [`PeerDnsConfig`] like an SRV target.
    pub host: String,
    pub port: u16,
}

/// How peers are discovered in DNS (SRV `_coi._udp.<domain>`) and how long answers are
/// kept.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerDnsConfig {
    /// Recursive resolvers to ask (UDP, TCP when an answer is truncated); `None`: those of
    /// the system's resolv.conf.
    pub nameservers: Option<Vec<SocketAddr>>,
    /// The longest one discovery (SRV and address lookups together) may take; then the
    /// message goes by mail.
    pub timeout: Duration,
    /// Upper bound on how long a found peer is kept, whatever the records' TTL.
    pub max_ttl: Duration,
    /// How long "this domain has no coi-proxy" (no SRV record, or target ".") is kept.
    pub negative_ttl: Duration,
    /// How long a failed lookup (timeout, SERVFAIL, unreachable resolver) is kept.
    pub error_ttl: Duration,
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

/// The delivery hook: an LMTP server that Postfix uses as its local delivery transport,
/// relaying to Dovecot's LMTP (DESIGN.md §2 path 3).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryConfig {
    /// Where Postfix connects (plaintext LMTP: loopback or the pod network only).
    pub address: SocketAddr,
    /// Dovecot's LMTP service.
    pub upstream: Upstream,
    /// The name in the greeting and in the LHLO to Dovecot.
    pub hostname: String,
    /// How a recipient address names its Dovecot user for the mailbox writer.
    pub user_name: UserName,
    /// Where messages larger than `limits.spool_memory_bytes` are held during delivery
    /// (unlinked files); `None`: the system's temporary directory.
    pub spool_directory: Option<PathBuf>,
    pub limits: DeliveryLimits,
    pub timeouts: DeliveryTimeouts,
}

impl DeliveryConfig {
    /// Where messages over the spool's memory limit go: `spool_directory`, else the
    /// system's temporary directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_directory
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }
}

/// How the Dovecot user of a recipient is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserName {
    /// The whole address, `alice@example.org` (virtual users).
    Address,
    /// The local part, `alice` (system users, `auth_username_format = %Ln`).
    LocalPart,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryLimits {
    /// Largest message accepted from Postfix.
    pub max_message_bytes: u64,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Concurrent Postfix connections.
    pub max_sessions: usize,
    /// A message up to this size is held in memory during delivery, a larger one in a
    /// spool file.
    pub spool_memory_bytes: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryTimeouts {
    /// How long the hook waits for Postfix's next command or the next part of a message.
    pub command: Duration,
    /// How long the hook waits for Dovecot to answer; a recipient then gets 451.
    pub upstream_reply: Duration,
}

/// How the mailbox writer logs in to Dovecot's IMAP service (the `imap.upstream`) as the
/// master user on behalf of a user.
#[derive(Clone, PartialEq)]
pub struct MailboxWriterConfig {
    pub master_user: String,
    pub master_password: String,
    /// Connections open at once, idle or in use.
    pub max_connections: usize,
    /// Idle connections kept per user.
    pub max_idle_per_user: usize,
}

impl std::fmt::Debug for MailboxWriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxWriterConfig")
            .field("master_user", &self.master_user)
            .field("master_password", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("max_idle_per_user", &self.max_idle_per_user)
            .finish()
    }
}
