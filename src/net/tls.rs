//! rustls configurations for the proxy's two TLS roles.
//!
//! - [`server_config`]: what clients see on the implicit-TLS listener (993) and after
//!   STARTTLS (143). One certificate chain and key, loaded once at startup.
//! - [`client_config`]: how the proxy talks to an implicit-TLS upstream Dovecot, trusting
//!   only the CA certificates named in the configuration.
//!
//! Both use the ring provider explicitly rather than the process-wide default, so that the
//! choice does not depend on which rustls features some other dependency switches on
//! (with both ring and aws-lc-rs compiled in, `ServerConfig::builder()` panics).
//!
//! Only TLS 1.2 and 1.3 are offered; rustls implements nothing older. RFC 8314 §4.1 asks
//! for TLS 1.2 or later for mail access, and TLS 1.2 is kept because many deployed mail
//! clients still stop there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, PrivateKeyDer, ServerName};

use crate::config::types::TlsFiles;

/// The protocol versions offered in both roles.
static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS12, &rustls::version::TLS13];

/// Builds the configuration served to IMAP clients from the certificate chain and private
/// key named in `files`.
///
/// The certificate file holds the end-entity certificate first, then any intermediates.
/// The key file holds one private key in PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM form; other
/// PEM sections in either file are ignored. The key must match the first certificate.
///
/// Client certificates are not requested, no ALPN protocol is configured (few IMAP
/// clients send one), 0-RTT is refused, and session resumption keeps rustls' defaults
/// (an in-memory session cache and TLS 1.3 tickets backed by it).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let certified_key = certified_key(&provider, files)?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key)));
    // Early data is replayable by an attacker, and no IMAP command is safe to run twice
    // (APPEND, STORE, EXPUNGE). Zero is rustls' default; stated so nobody raises it casually.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Builds the configuration for connections to an implicit-TLS upstream, trusting only
/// the CA certificates in `ca_file` (PEM; at least one).
///
/// The system trust store is deliberately not consulted: the upstream is the ISP's own
/// Dovecot, usually with a private CA, and a public CA should not be able to vouch for it.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca_file)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Parses the name the upstream certificate is checked against: a DNS name or an IP
/// address literal.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|source| TlsError::InvalidServerName {
        name: name.to_owned(),
        source,
    })
}

/// Why a TLS configuration could not be built. Every variant about a file names it.
///
/// The underlying cause is available through [`std::error::Error::source`], not repeated
/// in the message; print the whole chain (as `anyhow`'s `{:#}` does) to see it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is not a valid certificate (or CA certificate).
    #[error("invalid certificate in {}", path.display())]
    InvalidCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The private key is in a PEM section of the right kind but cannot be used.
    #[error("invalid private key in {}", path.display())]
    InvalidPrivateKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The name configured for the upstream is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {name:?}")]
    InvalidServerName {
        name: String,
        #[source]
        source: InvalidDnsNameError,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error(
        "private key {} does not match the certificate {}",
        private_key.display(),
        certificate.display()
    )]
    KeyMismatch {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    /// The file contains no `CERTIFICATE` PEM section.
    #[error("no PEM certificate found in {}", path.display())]
    NoCertificates { path: PathBuf },
    /// The file contains no PKCS#8, PKCS#1 or SEC1 PEM private key.
    #[error("no PEM private key (PKCS#8, PKCS#1 or SEC1) found in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    /// The file could not be read, or a `CERTIFICATE` section in it is malformed.
    #[error("cannot read certificates from {}", path.display())]
    ReadCertificates {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// The file could not be read, or a private key section in it is malformed.
    #[error("cannot read private key from {}", path.display())]
    ReadPrivateKey {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// rustls refused the configuration itself (not a file's content).
    #[error("TLS configuration rejected")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, chosen explicitly (see the module documentation); the QUIC peer
/// links use it too.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The chain and key named in `files`, checked to belong together. Checked here rather
/// than left to rustls, so that each failure names the file at fault instead of
/// surfacing as an anonymous rustls error.
pub(crate) fn certified_key(
    provider: &CryptoProvider,
    files: &TlsFiles,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(&files.certificate)?;
    let key = read_private_key(&files.private_key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::InvalidPrivateKey {
            path: files.private_key.clone(),
            source,
        })?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    match certified_key.keys_match() {
        // `Unknown`: the key type cannot report its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(certified_key)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            certificate: files.certificate.clone(),
            private_key: files.private_key.clone(),
        }),
        Err(source) => Err(TlsError::InvalidCertificate {
            path: files.certificate.clone(),
            source,
        }),
    }
}

/// The CA certificates of `path` (PEM; at least one) as trust anchors; the system store
/// is never consulted.
pub(crate) fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::InvalidCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

/// Reads every `CERTIFICATE` section of `path`, in file order (end-entity first).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::ReadCertificates {
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// Reads the first private key section of `path`, whichever of the three encodings it is.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        source => TlsError::ReadPrivateKey {
            path: path.to_owned(),
            source,
        },
    })
}

/// Runs the server side of a TLS handshake (implicit TLS, or after STARTTLS) under
/// `timeout`. Returns how it ended, for the caller's metrics, and the stream or the
/// client's fault.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    timeout: std::time::Duration,
) -> (
    crate::metrics::TlsOutcome,
    Result<super::stream::MaybeTls, crate::error::SessionError>,
) {
    use crate::error::{ErrorKind, SessionError, Side};
    use crate::metrics::TlsOutcome;
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => (
            TlsOutcome::Ok,
            Ok(super::stream::MaybeTls::ServerTls(Box::new(tls))),
        ),
        Ok(Err(e)) => (
            TlsOutcome::Failed,
            Err(SessionError {
                side: Side::Downstream,
                kind: ErrorKind::Tls,
                detail: "TLS handshake failed",
                source: Some(e),
            }),
        ),
        Err(_) => (
            TlsOutcome::Timeout,
            Err(SessionError::new(
                Side::Downstream,
                ErrorKind::Timeout,
                "TLS handshake timed out",
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::fs;
    use std::time::Duration;

    use rustls::ProtocolVersion;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// Every step of a handshake test must finish well within this.
    const STEP: Duration = Duration::from_secs(5);

    struct Pki {
        _dir: tempfile::TempDir,
        files: TlsFiles,
    }

    /// A self-signed certificate for `localhost` (so it is also its own CA).
    fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
        let files = TlsFiles {
            certificate: dir.path().join("cert.pem"),
            private_key: dir.path().join("key.pem"),
        };
        fs::write(&files.certificate, generated.cert.pem()).expect("write cert");
        fs::write(&files.private_key, generated.key_pair.serialize_pem()).expect("write key");
        Pki { _dir: dir, files }
    }

    /// The error and all its sources, as an operator would see them.
    fn chain(error: &TlsError) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    fn expect_err<T>(result: Result<T, TlsError>) -> TlsError {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(error) => error,
        }
    }

    #[test]
    fn valid_pair_loads() {
        let pki = generate();
        let config = server_config(&pki.files).expect("server config");
        assert_eq!(config.max_early_data_size, 0);
        assert!(config.alpn_protocols.is_empty());
        client_config(&pki.files.certificate).expect("client config");
    }

    #[test]
    fn sec1_key_loads() {
        // rcgen writes PKCS#8; the ECPrivateKey inside it is exactly the SEC1 form
        // (`BEGIN EC PRIVATE KEY`), so unwrapping it covers the second encoding without a
        // checked-in key or an openssl binary.
        let pki = generate();
        let pkcs8 = PrivateKeyDer::from_pem_file(&pki.files.private_key).expect("read key");
        let sec1 = sec1_from_pkcs8(pkcs8.secret_der());
        fs::write(&pki.files.private_key, pem_encode("EC PRIVATE KEY", sec1)).expect("write");
        assert!(matches!(
            PrivateKeyDer::from_pem_file(&pki.files.private_key),
            Ok(PrivateKeyDer::Sec1(_))
        ));
        server_config(&pki.files).expect("SEC1 key loads");
    }

    #[test]
    fn missing_certificate_file_names_the_path() {
        let pki = generate();
        let files = TlsFiles {
            certificate: pki.files.certificate.with_file_name("absent.pem"),
            ..pki.files.clone()
        };
        let error = expect_err(server_config(&files));
        assert!(
            matches!(&error, TlsError::ReadCertificates { path, .. } if path == &files.certificate),
            "{error:?}"
        );
        let text = chain(&error);
        assert!(text.contains("absent.pem"), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn missing_key_file_names_the_path() {
        let pki = generate();
        let files = TlsFiles {
            private_key: pki.files.private_key.with_file_name("absent-key.pem"),
            ..pki.files.clone()
        };
        let error = expect_err(server_config(&files));
        assert!(
            matches!(&error, TlsError::ReadPrivateKey { path, .. } if path == &files.private_key),
            "{error:?}"
        );
        assert!(chain(&error).contains("absent-key.pem"));
    }

    #[test]
    fn empty_certificate_file_is_no_certificates() {
        let pki = generate();
        fs::write(&pki.files.certificate, "").expect("truncate");
        let error = expect_err(server_config(&pki.files));
        assert!(
            matches!(&error, TlsError::NoCertificates { path } if path == &pki.files.certificate),
            "{error:?}"
        );
        assert!(error.to_string().contains("cert.pem"), "{error}");
    }

    #[test]
    fn empty_key_file_is_no_private_key() {
        let pki = generate();
        fs::write(&pki.files.private_key, "").expect("truncate");
        let error = expect_err(server_config(&pki.files));
        assert!(
            matches!(&error, TlsError::NoPrivateKey { path } if path == &pki.files.private_key),
            "{error:?}"
        );
    }

    #[test]
    fn key_in_certificate_file_is_no_certificates() {
        // A common slip: both paths pointing at the key file.
        let pki = generate();
        let files = TlsFiles {
            certificate: pki.files.private_key.clone(),
            ..pki.files.clone()
        };
        let error = expect_err(server_config(&files));
        assert!(
            matches!(error, TlsError::NoCertificates { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn certificate_in_key_file_is_no_private_key() {
        let pki = generate();
        let files = TlsFiles {
            private_key: pki.files.certificate.clone(),
            ..pki.files.clone()
        };
        let error = expect_err(server_config(&files));
        assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
    }

    #[test]
    fn garbage_outside_pem_sections_is_no_certificates() {
        let pki = generate();
        fs::write(&pki.files.certificate, b"\x00\xffnot pem at all\n").expect("write");
        let error = expect_err(server_config(&pki.files));
        assert!(
            matches!(error, TlsError::NoCertificates { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn bad_base64_in_certificate_is_a_read_error() {
        let pki = generate();
        fs::write(
            &pki.files.certificate,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = expect_err(server_config(&pki.files));
        assert!(
            matches!(error, TlsError::ReadCertificates { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn garbage_der_in_certificate_is_invalid_certificate() {
        let pki = generate();
        // Valid base64, but the DER inside is not a certificate.
        fs::write(
            &pki.files.certificate,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = expect_err(server_config(&pki.files));
        assert!(
            matches!(&error, TlsError::InvalidCertificate { path, .. } if path == &pki.files.certificate),
            "{error:?}"
        );
    }

    #[test]
    fn garbage_der_in_key_is_invalid_private_key() {
        let pki = generate();
        fs::write(
            &pki.files.private_key,
            "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let error = expect_err(server_config(&pki.files));
        assert!(
            matches!(&error, TlsError::InvalidPrivateKey { path, .. } if path == &pki.files.private_key),
            "{error:?}"
        );
    }

    #[test]
    fn key_of_another_certificate_is_key_mismatch() {
        let pki = generate();
        let other = generate();
        let files = TlsFiles {
            private_key: other.files.private_key.clone(),
            ..pki.files.clone()
        };
        let error = expect_err(server_config(&files));
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("key.pem") && text.contains("cert.pem"),
            "{text}"
        );
    }

    #[test]
    fn client_config_without_certificates_is_an_error() {
        let pki = generate();
        let error = expect_err(client_config(&pki.files.private_key));
        assert!(
            matches!(error, TlsError::NoCertificates { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("imap.example.org"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        let error = expect_err(server_name("not a name"));
        assert!(error.to_string().contains("not a name"), "{error}");
    }

    /// Runs a handshake over an in-memory pipe, exchanges one line each way, and returns
    /// the version both sides agreed on.
    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> ProtocolVersion {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let acceptor = TlsAcceptor::from(server);
        let connector = TlsConnector::from(client);

        let server_side = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.expect("server handshake");
            tls.write_all(b"* OK ready\r\n")
                .await
                .expect("server write");
            let mut line = [0u8; 10];
            tls.read_exact(&mut line).await.expect("server read");
            assert_eq!(&line, b"a LOGOUT\r\n");
            let version = tls.get_ref().1.protocol_version();
            tls.shutdown().await.expect("server shutdown");
            version
        });

        let name = server_name("localhost").expect("server name");
        let mut tls = tokio::time::timeout(STEP, connector.connect(name, client_io))
            .await
            .expect("client handshake timed out")
            .expect("client handshake");
        let mut greeting = [0u8; 12];
        tokio::time::timeout(STEP, tls.read_exact(&mut greeting))
            .await
            .expect("greeting timed out")
            .expect("client read");
        assert_eq!(&greeting, b"* OK ready\r\n");
        tls.write_all(b"a LOGOUT\r\n").await.expect("client write");
        let client_version = tls.get_ref().1.protocol_version();

        let server_version = tokio::time::timeout(STEP, server_side)
            .await
            .expect("server timed out")
            .expect("server task");
        assert_eq!(client_version, server_version);
        client_version.expect("a negotiated version")
    }

    #[tokio::test]
    async fn handshake_negotiates_tls13() {
        let pki = generate();
        let server = server_config(&pki.files).expect("server config");
        let client = client_config(&pki.files.certificate).expect("client config");
        assert_eq!(handshake(server, client).await, ProtocolVersion::TLSv1_3);
    }

    #[tokio::test]
    async fn tls12_only_client_still_connects() {
        let pki = generate();
        let server = server_config(&pki.files).expect("server config");
        let mut roots = RootCertStore::empty();
        for certificate in read_certificates(&pki.files.certificate).expect("read") {
            roots.add(certificate).expect("root");
        }
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_root_certificates(roots)
            .with_no_client_auth();
        assert_eq!(
            handshake(server, Arc::new(client)).await,
            ProtocolVersion::TLSv1_2
        );
    }

    #[tokio::test]
    async fn client_rejects_untrusted_server() {
        let pki = generate();
        let other = generate();
        let server = server_config(&pki.files).expect("server config");
        let client = client_config(&other.files.certificate).expect("client config");
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let server_side = tokio::spawn(async move {
            // Fails too once the client aborts; only the client's verdict matters here.
            let _ = TlsAcceptor::from(server).accept(server_io).await;
        });
        let name = server_name("localhost").expect("server name");
        let result =
            tokio::time::timeout(STEP, TlsConnector::from(client).connect(name, client_io))
                .await
                .expect("client handshake timed out");
        let error = match result {
            Ok(_) => panic!("untrusted certificate accepted"),
            Err(error) => error,
        };
        // Both rcgen certificates carry the same subject name, so webpki gets as far as
        // the signature (BadSignature) rather than UnknownIssuer; either way it is refused.
        assert!(
            matches!(
                error
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "{error:?}"
        );
        tokio::time::timeout(STEP, server_side)
            .await
            .expect("server timed out")
            .expect("server task");
    }

    /// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (RFC 5208 §5):
    /// `SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, .. }`.
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> &[u8] {
        let (tag, info, _) = der_element(pkcs8);
        assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
        let (tag, _, rest) = der_element(info);
        assert_eq!(tag, 0x02, "version");
        let (tag, _, rest) = der_element(rest);
        assert_eq!(tag, 0x30, "privateKeyAlgorithm");
        let (tag, private_key, _) = der_element(rest);
        assert_eq!(tag, 0x04, "privateKey");
        private_key
    }

    /// Splits one DER element off `input`: (tag, contents, rest). Short and long lengths.
    fn der_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (input[0], input[1]);
        let (length, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let octets = usize::from(first & 0x7f);
            let length = input[2..2 + octets]
                .iter()
                .fold(0, |length, &byte| length << 8 | usize::from(byte));
            (length, 2 + octets)
        };
        let (contents, rest) = input[header..].split_at(length);
        (tag, contents, rest)
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = format!("-----BEGIN {label}-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(&format!("-----END {label}-----\n"));
        pem
    }
}
