//! QUIC transport for the peer links between the proxies of two domains (DESIGN §4):
//! endpoint configuration for both roles, and the peer's authenticated identity.
//!
//! - [`PeerTls::load`] reads the domain's certificate chain and key and the CA roots that
//!   vouch for other domains, once, and builds the rustls configuration of both roles.
//! - [`PeerTls::server_config`], [`PeerTls::client_config`] wrap them for quinn with the
//!   bounded [`transport_config`]; [`endpoint`] binds one UDP socket that serves both roles
//!   (incoming links from other domains, outgoing links to them).
//! - [`peer_domains`] and [`covers`] answer "may this peer speak for that mail domain?"
//!   (DESIGN §3, "Who may use a token").
//!
//! The TLS choices, each for a reason of its own:
//!
//! - TLS 1.3 only: QUIC is defined over TLS 1.3 (RFC 9001 §4.2), nothing older exists here.
//! - ALPN `coi/1` on both sides. rustls refuses a client that offers another protocol or
//!   none (`no_application_protocol`), so a stray HTTP/3 client never reaches our framing.
//! - Mutual authentication: the client certificate is required and verified against the
//!   configured CA roots, like the server's. Which *mail domains* a verified peer may
//!   speak for is a separate question, answered per delivery by [`covers`].
//! - No 0-RTT in either direction (SECURITY-CASES case 53): early data can be replayed by
//!   anyone on the path, and a delivery is not idempotent until the receiver's
//!   de-duplication has seen it. The server sets `max_early_data_size = 0`, the client
//!   never enables early data.
//! - No session resumption either: the server issues no tickets and keeps no session
//!   cache, the client stores none. A link is long-lived and handshakes between two
//!   proxies are rare, so a full handshake costs nothing that matters, and each one checks
//!   the peer's *current* certificate (expiry, CA rotation) instead of trusting a ticket
//!   issued for an older one. It also leaves no ticket through which 0-RTT could be tried.
//! - The ring provider explicitly, as in [`super::tls`], so that no other crate's choice
//!   of rustls features changes ours.
//!
//! The client connects with the remote **mail domain** as the server name (not the SRV
//! target host): what the link must prove is that the peer speaks for that domain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::Resumption;
use rustls::server::{NoServerSessionStorage, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls_pki_types::CertificateDer;

use super::tls::{certified_key, provider, read_roots, TlsError};
use crate::config::types::TlsFiles;

/// The ALPN protocol of peer links, defined with the framing it names.
pub use crate::proto::peer::ALPN;

/// Deliveries in flight on one link at once: one bidirectional stream each (DESIGN §4).
/// Together with [`STREAM_RECEIVE_WINDOW`] it bounds what a peer can make us hold per
/// link; 64 parallel deliveries to one domain is far above what a chat load needs, and a
/// sender beyond it waits for a stream (QUIC flow control), it is not refused.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 64;

/// Unidirectional streams open at once (ephemeral events: typing, presence). Events are
/// tiny and short-lived; a few streams suffice, and each costs state on our side.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 16;

/// Bytes a peer may send on one stream ahead of what we have read. A chat message is
/// small; 256 KiB still carries an attachment at about 5 MB/s over a 50 ms path, and
/// quinn's default (1.25 MB, sized for 100 Mbit/s bulk transfer) would let 64 streams
/// pin 80 MB per link.
pub const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;

/// Bytes a peer may send on the whole link ahead of what we have read, across all
/// streams: the memory bound per link (quinn's default is unlimited). Four full streams'
/// worth; more parallel streams share it.
pub const RECEIVE_WINDOW: u32 = 1024 * 1024;

/// Bytes we buffer for sending on one link across all streams before writes wait: the
/// same bound on our side as [`RECEIVE_WINDOW`] on the peer's.
pub const SEND_WINDOW: u64 = 1024 * 1024;

/// Datagrams (ephemeral events) buffered on receipt before the application reads them;
/// beyond it the oldest are dropped, which events tolerate by design.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 64 * 1024;

/// Datagrams buffered for sending; beyond it the oldest are dropped.
pub const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;

/// A link with no packet in either direction for this long is dead. 30 s is RFC 9308
/// §3.2's recommendation; with [`KEEP_ALIVE_INTERVAL`] it takes three lost probes in a
/// row, so a dead peer is noticed within half a minute and the sender falls back to mail.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A live but quiet link sends a PING this often, so that neither the idle timeout nor
/// a NAT or conntrack binding closes it between messages (Linux conntrack keeps a UDP
/// flow 30 s while it is seen one way only, 120 s once both ways; cloud NATs often less).
/// Closing links that are no longer wanted is the link table's job.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Connection attempts held between their first packet and the accept loop's decision
/// (SECURITY-CASES case 58). quinn's default is 65,536 (about 100 MB in first packets);
/// legitimate attempts are one per remote domain, and after our restart every peer
/// reconnects with backoff, so 1,024 pending at once is ample. Beyond it new Initials are
/// dropped unanswered, and links already up are not affected.
pub const MAX_INCOMING: usize = 1024;

/// Bytes of later packets buffered for one pending connection attempt (case 58). With
/// 0-RTT off these are only Initial retransmissions and a ClientHello split over
/// packets; quinn's 10 MB default is sized for 0-RTT data.
pub const INCOMING_BUFFER_SIZE: u64 = 16 * 1024;

/// Bytes buffered for all pending connection attempts together (case 58); quinn's
/// default is 100 MB. A quarter of [`MAX_INCOMING`] × [`INCOMING_BUFFER_SIZE`]: a flood
/// fills it, real attempts rarely buffer anything at all.
pub const INCOMING_BUFFER_SIZE_TOTAL: u64 = 4 * 1024 * 1024;

/// The rustls configurations of both roles of a peer endpoint, built once from the
/// domain's certificate and the CA roots.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// What peers connecting to us see. Public so that tests and diagnostics can check
    /// its settings (ALPN, `max_early_data_size`).
    pub server: Arc<rustls::ServerConfig>,
    /// How we connect to peers.
    pub client: Arc<rustls::ClientConfig>,
    /// The mail domains our own certificate names ([`certificate_domains`]): the domains
    /// this proxy receives for over links.
    pub domains: Vec<String>,
}

impl PeerTls {
    /// Reads the domain's certificate chain and private key (`files`, PEM, as for the
    /// TLS listeners) and the CA certificates that vouch for peers (`ca_file`, PEM, at
    /// least one), and builds both configurations.
    ///
    /// The same certificate serves as server certificate and as client certificate, so it
    /// must carry the domain's names as DNS subject alternative names and, if it has an
    /// extended key usage extension at all, both `serverAuth` and `clientAuth`.
    pub fn load(files: &TlsFiles, ca_file: &Path) -> Result<Self, QuicError> {
        let provider = provider();
        let certified_key = Arc::new(certified_key(&provider, files)?);
        let domains = certified_key
            .cert
            .first()
            .map(certificate_domains)
            .unwrap_or_default();
        let roots = Arc::new(read_roots(ca_file)?);

        // Mandatory client authentication is the builder's default (no
        // `allow_unauthenticated`).
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|source| QuicError::ClientVerifier {
                path: ca_file.to_owned(),
                source,
            })?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key.clone())));
        server.alpn_protocols = vec![ALPN.to_vec()];
        // No 0-RTT (case 53). Zero is rustls' default, and the only other value QUIC
        // allows is u32::MAX; stated so that nobody raises it casually.
        server.max_early_data_size = 0;
        // No resumption: no tickets, no session cache (see the module doc).
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key)));
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.enable_early_data = false;
        client.resumption = Resumption::disabled();

        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            domains,
        })
    }

    /// The quinn configuration for incoming links: [`Self::server`], the bounded
    /// [`transport_config`], and the limits on pending connection attempts.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, QuicError> {
        let crypto = QuicServerConfig::try_from(self.server.clone())?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config
            .transport_config(Arc::new(transport_config()))
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size(INCOMING_BUFFER_SIZE)
            .incoming_buffer_size_total(INCOMING_BUFFER_SIZE_TOTAL);
        Ok(config)
    }

    /// The quinn configuration for outgoing links: [`Self::client`] and the bounded
    /// [`transport_config`].
    pub fn client_config(&self) -> Result<quinn::ClientConfig, QuicError> {
        let crypto = QuicClientConfig::try_from(self.client.clone())?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }
}

/// The transport limits of every peer link, in both roles (the constants above).
pub fn transport_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_CONCURRENT_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        .max_idle_timeout(Some(idle_timeout()))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    config
}

/// Binds one UDP socket at `bind` that accepts links from peers and opens links to them
/// (`endpoint.connect(addr, mail_domain)` uses [`PeerTls::client_config`]).
///
/// Must be called inside a tokio runtime.
pub fn endpoint(bind: SocketAddr, tls: &PeerTls) -> Result<quinn::Endpoint, QuicError> {
    let mut endpoint = quinn::Endpoint::server(tls.server_config()?, bind)
        .map_err(|source| QuicError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(tls.client_config()?);
    Ok(endpoint)
}

/// The DNS names the peer's verified certificate is valid for, lowercased, in
/// certificate order: the mail domains it may speak for (see [`covers`]).
///
/// Empty before the handshake has completed, and for a peer without a certificate (which
/// our server never accepts). Only the leaf certificate counts; rustls has already checked
/// its chain up to one of the configured CA roots.
pub fn peer_domains(connection: &quinn::Connection) -> Vec<String> {
    let Some(identity) = connection.peer_identity() else {
        return Vec::new();
    };
    // With the rustls crypto provider the identity is the peer's chain, leaf first.
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return Vec::new();
    };
    chain.first().map(certificate_domains).unwrap_or_default()
}

/// The dNSName subject alternative names of `certificate`, lowercased, wildcard names
/// left out (see [`covers`]). The subject's common name is not consulted: RFC 6125 §6.4.4
/// retires it wherever SANs exist, and webpki ignores it too. A certificate that does not
/// parse has no names.
pub fn certificate_domains(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok(parsed) = webpki::EndEntityCert::try_from(certificate) else {
        return Vec::new();
    };
    parsed
        .valid_dns_names()
        .filter(|name| !name.starts_with('*'))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Whether a peer whose certificate names `domains` ([`peer_domains`]) may deliver mail
/// from `mail_domain` (the envelope sender's domain).
///
/// Exact match, ASCII case-insensitive. `mail_domain` must be in A-label form (as address
/// normalisation leaves it): certificates carry only A-labels, so a U-label never
/// matches. Wildcard certificates vouch for no mail domain: `*.example.org` is typically
/// shared by many hosts (web servers included), and a key stolen from any of them should
/// not be able to inject chat messages for every `*.example.org` mail domain. A domain's
/// certificate must name the mail domain itself.
pub fn covers(domains: &[String], mail_domain: &str) -> bool {
    !mail_domain.is_empty()
        && domains
            .iter()
            .any(|domain| domain.eq_ignore_ascii_case(mail_domain))
}

/// Why a peer endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the QUIC endpoint to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The CA roots could not be turned into a client certificate verifier.
    #[error("cannot verify peer certificates with the CA roots in {}", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: VerifierBuilderError,
    },
    /// The TLS configuration lacks the cipher suite QUIC's Initial packets use
    /// (TLS_AES_128_GCM_SHA256); cannot happen with the ring provider's defaults.
    #[error("TLS configuration unusable for QUIC")]
    NoInitialCipherSuite(#[from] NoInitialCipherSuite),
    /// A certificate, key or CA file is missing, unreadable or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn idle_timeout() -> IdleTimeout {
    // 30 s in milliseconds is far below the 2^62 bound of a QUIC varint.
    IdleTimeout::from(VarInt::from_u32(MAX_IDLE_TIMEOUT.as_millis() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    fn certificate(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(names(sans)).expect("params");
        params.self_signed(&key).expect("sign").der().clone()
    }

    #[test]
    fn covers_exact_names_case_insensitively() {
        let domains = names(&["a.example", "mail.a.example"]);
        assert!(covers(&domains, "a.example"));
        assert!(covers(&domains, "A.Example"));
        assert!(covers(&domains, "mail.a.example"));
        assert!(!covers(&domains, "b.example"));
        assert!(!covers(&domains, "x.a.example"), "no implied subdomains");
        assert!(!covers(&domains, "example"), "no parent domains");
        assert!(!covers(&domains, "a.example."), "no trailing-dot folding");
        assert!(!covers(&domains, ""));
        assert!(!covers(&[], "a.example"));
    }

    #[test]
    fn covers_only_a_labels() {
        let domains = names(&["xn--mnchen-3ya.example"]);
        assert!(covers(&domains, "xn--mnchen-3ya.example"));
        assert!(!covers(&domains, "münchen.example"));
    }

    #[test]
    fn certificate_domains_are_the_dns_sans_lowercased() {
        let der = certificate(&["A.Example", "mail.a.example", "127.0.0.1"]);
        assert_eq!(
            certificate_domains(&der),
            names(&["a.example", "mail.a.example"]),
            "IP addresses are not domains"
        );
    }

    #[test]
    fn wildcard_names_vouch_for_nothing() {
        let der = certificate(&["*.a.example", "b.example"]);
        let domains = certificate_domains(&der);
        assert_eq!(domains, names(&["b.example"]));
        assert!(!covers(&domains, "x.a.example"));
        assert!(!covers(&domains, "*.a.example"));
    }

    #[test]
    fn garbage_certificate_has_no_domains() {
        let der = CertificateDer::from(b"not a certificate".to_vec());
        assert!(certificate_domains(&der).is_empty());
    }

    /// A self-signed certificate for `a.example` in a fresh directory: its own CA.
    fn files(dir: &Path) -> TlsFiles {
        let generated = rcgen::generate_simple_self_signed(names(&["a.example"])).expect("rcgen");
        let files = TlsFiles {
            certificate: dir.join("cert.pem"),
            private_key: dir.join("key.pem"),
        };
        std::fs::write(&files.certificate, generated.cert.pem()).expect("write cert");
        std::fs::write(&files.private_key, generated.key_pair.serialize_pem()).expect("write key");
        files
    }

    #[test]
    fn load_builds_both_roles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files(dir.path());
        let tls = PeerTls::load(&files, &files.certificate).expect("load");
        assert_eq!(tls.server.alpn_protocols, [ALPN]);
        assert_eq!(tls.server.max_early_data_size, 0);
        assert!(tls.client.client_auth_cert_resolver.has_certs());
        tls.server_config().expect("quinn server config");
        tls.client_config().expect("quinn client config");
    }

    #[test]
    fn missing_ca_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files(dir.path());
        let error = PeerTls::load(&files, &dir.path().join("absent-ca.pem")).expect_err("load");
        assert!(
            matches!(&error, QuicError::Tls(TlsError::ReadCertificates { path, .. })
                if path.ends_with("absent-ca.pem")),
            "{error:?}"
        );
        assert!(error.to_string().contains("absent-ca.pem"), "{error}");
    }

    #[test]
    fn ca_file_without_certificates_is_no_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = files(dir.path());
        let error = PeerTls::load(&files, &files.private_key).expect_err("load");
        assert!(
            matches!(error, QuicError::Tls(TlsError::NoCertificates { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn key_of_another_certificate_is_key_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            private_key: self::files(other_dir.path()).private_key,
            ..self::files(dir.path())
        };
        let error = PeerTls::load(&files, &files.certificate).expect_err("load");
        assert!(
            matches!(error, QuicError::Tls(TlsError::KeyMismatch { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn transport_limits_are_applied() {
        let text = format!("{:?}", transport_config());
        for expected in [
            "max_concurrent_bidi_streams: 64",
            "max_concurrent_uni_streams: 16",
            "stream_receive_window: 262144",
            "receive_window: 1048576",
            "send_window: 1048576",
            "keep_alive_interval: Some(10s)",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
    }
}
