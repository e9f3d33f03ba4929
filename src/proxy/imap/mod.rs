//! The IMAP front: accepts clients (plaintext with STARTTLS, or implicit TLS), connects
//! each to Dovecot, and runs a [`session::Session`] between them.

mod coi;
pub mod penalty;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::config::{CoiConfig, ImapConfig, ListenerTls};
use crate::error::{ErrorKind, SessionError, Side};
use crate::metrics::{ListenerKind, Metrics};
use crate::net::connect::Connector;
use crate::net::shutdown::{Phase, Shutdown};
use crate::net::stream::MaybeTls;

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

/// Accepts clients on one listener until shutdown, at most `max_sessions` at a time.
pub async fn serve(
    listener: TcpListener,
    tls: ListenerTls,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
) {
    let sessions = Arc::new(Semaphore::new(shared.config.limits.max_sessions));
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.reached(Phase::Draining) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            debug!(%peer, "session limit reached");
            // On an implicit-TLS listener a plaintext BYE would be garbage to the client's
            // TLS stack: there the connection is just closed.
            if tls != ListenerTls::Implicit {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("imap_session", session_id = next_id, %peer, listener = listener_kind(tls).as_label(), user = tracing::field::Empty);
        tokio::spawn(
            async move {
                let _permit = permit;
                let _connection = shared.metrics.imap.connection_opened(listener_kind(tls));
                match run_session(stream, peer, tls, shared, shutdown).await {
                    Ok(()) => debug!("session ended"),
                    Err(e) if e.side == Side::Downstream && e.kind == ErrorKind::Closed => {
                        debug!("client closed")
                    }
                    Err(e) => info!(error = %e, "session ended"),
                }
            }
            .instrument(span),
        );
    }
}

async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream
        .write_all(b"* BYE [UNAVAILABLE] Too many connections\r\n")
        .await;
}

async fn run_session(
    stream: TcpStream,
    peer: SocketAddr,
    tls: ListenerTls,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> Result<(), SessionError> {
    // Small commands and replies must not wait for Nagle (a 40 ms stall per round trip).
    let _ = stream.set_nodelay(true);
    let client = match tls {
        ListenerTls::Implicit => {
            let acceptor = shared.tls.clone().ok_or_else(|| {
                SessionError::new(Side::Internal, ErrorKind::Tls, "no TLS configuration")
            })?;
            let timeout = shared.config.timeouts.tls_handshake;
            let (outcome, result) = crate::net::tls::accept(&acceptor, stream, timeout).await;
            shared
                .metrics
                .imap
                .tls_handshake(listener_kind(tls), outcome);
            result?
        }
        ListenerTls::None | ListenerTls::Starttls => MaybeTls::Plain(stream),
    };
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
    session::Session::new(shared, tls, client, upstream, shutdown)
        .run(peer)
        .await
}

/// Binds every configured IMAP listener; fails before anything is served if one cannot
/// be bound.
pub async fn bind(
    config: &ImapConfig,
) -> std::io::Result<Vec<(TcpListener, ListenerTls, SocketAddr)>> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let socket = TcpListener::bind(listener.address).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "binding IMAP listener {} on {}: {e}",
                    listener.name, listener.address
                ),
            )
        })?;
        let local = socket.local_addr()?;
        bound.push((socket, listener.tls, local));
    }
    Ok(bound)
}
