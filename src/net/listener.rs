//! What every front does with its listening sockets: binding them, and the accept loop
//! (a session limit per listener, accepting until shutdown, one task per session in its
//! own span, and a log line for how each session ended).
//!
//! The fronts differ only in what a session is, its span, and the words of the refusal
//! and the log lines; those come in as a [`Policy`] and a closure.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument, Span};

use super::shutdown::{Phase, Shutdown};
use super::stream::MaybeTls;
use crate::config::{Listener, ListenerTls};
use crate::error::{ErrorKind, SessionError, Side};
use crate::metrics::TlsOutcome;

/// The pause after a failed accept (out of file descriptors and similar): backing off
/// instead of spinning on an error that will not go away at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How one front's accept loop behaves where the fronts differ.
pub struct Policy {
    /// Sessions served at once; a connection beyond them is refused.
    pub max_sessions: usize,
    /// Written to a refused connection before it is closed. `None` closes it without a
    /// word: on an implicit-TLS listener a plaintext refusal would be garbage to the
    /// client's TLS stack.
    pub refusal: Option<&'static [u8]>,
    /// Logged (debug) when a connection is refused.
    pub limit_reached: &'static str,
    /// Logged (debug) when a session ends because its peer closed the connection.
    pub peer_closed: &'static str,
}

impl Policy {
    /// The policy of a front that accepts mail clients (IMAP, submission) on a listener
    /// of mode `tls`: `refusal` is said except on implicit TLS.
    pub fn clients(max_sessions: usize, tls: ListenerTls, refusal: &'static [u8]) -> Self {
        Self {
            max_sessions,
            refusal: (tls != ListenerTls::Implicit).then_some(refusal),
            limit_reached: "session limit reached",
            peer_closed: "client closed",
        }
    }
}

/// One accepted connection, for the front to start its session on.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The connection's number on this listener, from 1 (refused ones count too).
    pub id: u64,
    pub shutdown: Shutdown,
}

/// Accepts connections on `listener` until shutdown begins ([`Phase::Draining`]), at
/// most `policy.max_sessions` sessions at a time.
///
/// `start` turns each connection into the session's span and the session itself; the
/// session runs in its own task inside that span, holds its slot until it ends, and how
/// it ended is logged there.
pub async fn serve<F, S>(
    listener: TcpListener,
    policy: Policy,
    mut shutdown: Shutdown,
    mut start: F,
) where
    F: FnMut(Accepted) -> (Span, S),
    S: Future<Output = Result<(), SessionError>> + Send + 'static,
{
    let sessions = Arc::new(Semaphore::new(policy.max_sessions));
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.reached(Phase::Draining) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        next_id += 1;
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            debug!(%peer, "{}", policy.limit_reached);
            if let Some(refusal) = policy.refusal {
                tokio::spawn(refuse(stream, refusal));
            }
            continue;
        };
        // Small commands and replies must not wait for Nagle (a 40 ms stall per round
        // trip).
        let _ = stream.set_nodelay(true);
        let (span, session) = start(Accepted {
            stream,
            peer,
            id: next_id,
            shutdown: shutdown.clone(),
        });
        let peer_closed = policy.peer_closed;
        tokio::spawn(
            async move {
                let _permit = permit;
                match session.await {
                    Ok(()) => debug!("session ended"),
                    Err(e) if e.side == Side::Downstream && e.kind == ErrorKind::Closed => {
                        debug!("{peer_closed}")
                    }
                    Err(e) => info!(error = %e, "session ended"),
                }
            }
            .instrument(span),
        );
    }
}

/// The client's stream for a session: on an implicit-TLS listener, once the TLS
/// handshake is done under `timeout` (`handshake` hears how it ended, for the front's
/// metrics); else the plain connection, which STARTTLS may upgrade later.
pub async fn client_stream(
    stream: TcpStream,
    tls: ListenerTls,
    acceptor: Option<&TlsAcceptor>,
    timeout: Duration,
    handshake: impl FnOnce(TlsOutcome),
) -> Result<MaybeTls, SessionError> {
    if tls != ListenerTls::Implicit {
        return Ok(MaybeTls::Plain(stream));
    }
    let acceptor = acceptor
        .ok_or_else(|| SessionError::new(Side::Internal, ErrorKind::Tls, "no TLS configuration"))?;
    let (outcome, result) = super::tls::accept(acceptor, stream, timeout).await;
    handshake(outcome);
    result
}

/// Binds every listener of a front; fails before anything is served if one cannot be
/// bound. `front` names the front in the error ("IMAP", "submission").
pub async fn bind_all(
    front: &str,
    listeners: &[Listener],
) -> io::Result<Vec<(TcpListener, ListenerTls, SocketAddr)>> {
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let what = format!("{front} listener {}", listener.name);
        let (socket, local) = bind(listener.address, &what).await?;
        bound.push((socket, listener.tls, local));
    }
    Ok(bound)
}

/// Binds one listening socket and says where it is bound (port 0 picks a port); an error
/// names `what` is being bound.
pub async fn bind(address: SocketAddr, what: &str) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = TcpListener::bind(address)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("binding {what} on {address}: {e}")))?;
    let local = socket.local_addr()?;
    Ok((socket, local))
}

async fn refuse(mut stream: TcpStream, refusal: &'static [u8]) {
    let _ = stream.write_all(refusal).await;
}
