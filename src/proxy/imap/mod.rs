//! The IMAP front: accepts clients (plaintext with STARTTLS, or implicit TLS), connects
//! each to Dovecot, and runs a [`session::Session`] between them.

mod coi;
pub mod penalty;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{CoiConfig, ImapConfig, ListenerTls};
use crate::error::SessionError;
use crate::metrics::{ListenerKind, Metrics};
use crate::net::connect::Connector;
use crate::net::listener::{self, Accepted, Policy};
use crate::net::shutdown::Shutdown;

/// What every session of the front shares.
pub struct Shared {
    pub config: ImapConfig,
    pub coi: CoiConfig,
    /// The server side of TLS; `None` when no listener needs it.
    pub tls: Option<TlsAcceptor>,
    pub upstream: Connector,
    pub metrics: Arc<Metrics>,
    pub penalties: penalty::AuthPenalties,
    /// The user state cache shared with the delivery hook: COI configuration writes
    /// through this front invalidate it.
    pub states: Arc<crate::proxy::state::UserStates>,
    /// Authenticated sessions register here so that the proxy's own stores can wake
    /// their IDLE (DESIGN.md §6).
    pub registry: Arc<crate::proxy::registry::SessionRegistry>,
}

fn listener_kind(tls: ListenerTls) -> ListenerKind {
    ListenerKind::from(tls)
}

/// Written to a client over the session limit (not on implicit TLS).
const REFUSAL: &[u8] = b"* BYE [UNAVAILABLE] Too many connections\r\n";

/// Accepts clients on one listener until shutdown, at most `max_sessions` at a time.
pub async fn serve(
    listener: TcpListener,
    tls: ListenerTls,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let policy = Policy::clients(shared.config.limits.max_sessions, tls, REFUSAL);
    listener::serve(listener, policy, shutdown, |accepted| {
        let span = tracing::info_span!("imap_session", session_id = accepted.id, peer = %accepted.peer, listener = listener_kind(tls).as_label(), user = tracing::field::Empty);
        (span, run_session(accepted, tls, shared.clone()))
    })
    .await;
}

async fn run_session(
    accepted: Accepted,
    tls: ListenerTls,
    shared: Arc<Shared>,
) -> Result<(), SessionError> {
    let kind = listener_kind(tls);
    let _connection = shared.metrics.imap.connection_opened(kind);
    let timeout = shared.config.timeouts.tls_handshake;
    let client = listener::client_stream(
        accepted.stream,
        tls,
        shared.tls.as_ref(),
        timeout,
        |outcome| shared.metrics.imap.tls_handshake(kind, outcome),
    )
    .await?;
    let upstream = match shared.upstream.connect().await {
        Ok(upstream) => upstream,
        Err(e) => {
            shared.metrics.imap.upstream_connect_failed();
            let mut client = client;
            use tokio::io::AsyncWriteExt;
            if let Some(bye) = e.imap_bye() {
                let _ = client.write_all(format!("{bye}\r\n").as_bytes()).await;
                let _ = client.flush().await;
            }
            return Err(e);
        }
    };
    session::Session::new(shared, tls, client, upstream, accepted.shutdown)
        .run(accepted.peer)
        .await
}

/// Binds every configured IMAP listener; fails before anything is served if one cannot
/// be bound.
pub async fn bind(
    config: &ImapConfig,
) -> std::io::Result<Vec<(TcpListener, ListenerTls, SocketAddr)>> {
    listener::bind_all("IMAP", &config.listeners).await
}
