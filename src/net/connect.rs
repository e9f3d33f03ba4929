//! Connections to a backend (Dovecot, Postfix): TCP with `TCP_NODELAY`, then implicit TLS
//! if configured, each step under the connect timeout. STARTTLS towards a backend is
//! never used (SECURITY-CASES §B rule: a proxy-as-client STARTTLS invites response
//! injection).

use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::MaybeTls;
use super::tls::{self, TlsError};
use crate::config::{Upstream, UpstreamTls};
use crate::error::{ErrorKind, SessionError, Side};

/// How to reach one backend service.
#[derive(Clone)]
pub struct Connector {
    host: String,
    port: u16,
    timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// Loads the CA file of an implicit-TLS upstream.
    pub fn new(upstream: &Upstream) -> Result<Self, TlsError> {
        let tls = match &upstream.tls {
            UpstreamTls::None => None,
            UpstreamTls::Implicit {
                server_name,
                ca_file,
            } => Some((
                TlsConnector::from(tls::client_config(ca_file)?),
                tls::server_name(server_name)?,
            )),
        };
        Ok(Self {
            host: upstream.host.clone(),
            port: upstream.port,
            timeout: upstream.connect_timeout,
            tls,
        })
    }

    /// Opens a connection; every failure is the upstream's ([`ErrorKind::Connect`]).
    pub async fn connect(&self) -> Result<MaybeTls, SessionError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(SessionError {
                    side: Side::Upstream,
                    kind: ErrorKind::Connect,
                    detail: "connect failed",
                    source: Some(e),
                })
            }
            Err(_) => return Err(connect_error("connect timed out")),
        };
        // Small commands and replies must not wait for Nagle (a 40 ms stall per round trip).
        let _ = stream.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(MaybeTls::Plain(stream));
        };
        match tokio::time::timeout(self.timeout, connector.connect(name.clone(), stream)).await {
            Ok(Ok(tls)) => Ok(MaybeTls::ClientTls(Box::new(tls))),
            Ok(Err(e)) => Err(SessionError {
                side: Side::Upstream,
                kind: ErrorKind::Connect,
                detail: "upstream TLS handshake failed",
                source: Some(e),
            }),
            Err(_) => Err(connect_error("upstream TLS handshake timed out")),
        }
    }
}

fn connect_error(detail: &'static str) -> SessionError {
    SessionError::new(Side::Upstream, ErrorKind::Connect, detail)
}
