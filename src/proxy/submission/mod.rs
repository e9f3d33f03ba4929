//! The submission front (RFC 6409): accepts mail clients on 587 (STARTTLS) and 465
//! (implicit TLS), terminates SMTP, and relays each transaction to Postfix's submission
//! listener with the message rewritten by [`crate::coi::submit`].
//!
//! The upstream connection is opened late: at AUTH (which Postfix must check) and again
//! for a transaction after an aborted one, never for a client that has not started to
//! authenticate (SECURITY-CASES §D: no Postfix process is held by a slow client). Replies
//! are relayed one command at a time; pipelined commands are read in order from the
//! buffer and answered in order (RFC 2920).

mod session;
mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::coi::address::{self, NormalizedAddress};
use crate::coi::submit::SubmitRules;
use crate::config::{ListenerTls, SubmissionConfig};
use crate::error::{ErrorKind, SessionError, Side};
use crate::metrics::{ListenerKind, Metrics};
use crate::net::connect::Connector;
use crate::net::shutdown::{Phase, Shutdown};
use crate::net::stream::MaybeTls;

pub use upstream::ClientFacts;

/// What every session of the front shares.
pub struct Shared {
    pub config: SubmissionConfig,
    pub rules: Arc<SubmitRules>,
    pub tls: Option<TlsAcceptor>,
    pub upstream: Connector,
    pub metrics: Arc<Metrics>,
    /// Postfix's EHLO keywords as last seen, for answering a client's EHLO without
    /// opening an upstream connection for it.
    keywords: Mutex<Option<Arc<[String]>>>,
}

impl Shared {
    pub fn new(
        config: SubmissionConfig,
        rules: Arc<SubmitRules>,
        tls: Option<TlsAcceptor>,
        upstream: Connector,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            rules,
            tls,
            upstream,
            metrics,
            keywords: Mutex::new(None),
        }
    }

    fn keywords(&self) -> Option<Arc<[String]>> {
        self.keywords.lock().map(|k| k.clone()).unwrap_or(None)
    }

    fn remember_keywords(&self, keywords: &[String]) {
        if let Ok(mut cached) = self.keywords.lock() {
            if cached.as_deref() != Some(keywords) {
                *cached = Some(Arc::from(keywords));
            }
        }
    }

    /// The addresses a login owns: itself if it has a domain, else `login@domain` for
    /// every configured sender domain. Logins that do not normalise own nothing.
    fn owned_addresses(&self, login: &str) -> Vec<NormalizedAddress> {
        if login.contains('@') {
            return address::normalize(login).into_iter().collect();
        }
        self.config
            .sender_domains
            .iter()
            .filter_map(|domain| address::normalize(&format!("{login}@{domain}")).ok())
            .collect()
    }
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
            if tls != ListenerTls::Implicit {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let kind = ListenerKind::from(tls);
        let span = tracing::info_span!("submission_session", session_id = next_id, %peer, listener = kind.as_label(), user = tracing::field::Empty);
        tokio::spawn(
            async move {
                let _permit = permit;
                let _connection = shared.metrics.submission.connection_opened(kind);
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
        .write_all(b"421 4.7.0 Too many connections; try again later\r\n")
        .await;
}

async fn run_session(
    stream: TcpStream,
    peer: SocketAddr,
    tls: ListenerTls,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> Result<(), SessionError> {
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
                .submission
                .tls_handshake(ListenerKind::from(tls), outcome);
            result?
        }
        ListenerTls::None | ListenerTls::Starttls => MaybeTls::Plain(stream),
    };
    session::Session::new(shared, tls, peer, client, shutdown)
        .run()
        .await
}

/// Binds every configured submission listener; fails before anything is served if one
/// cannot be bound.
pub async fn bind(
    config: &SubmissionConfig,
) -> std::io::Result<Vec<(TcpListener, ListenerTls, SocketAddr)>> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let socket = TcpListener::bind(listener.address).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "binding submission listener {} on {}: {e}",
                    listener.name, listener.address
                ),
            )
        })?;
        let local = socket.local_addr()?;
        bound.push((socket, listener.tls, local));
    }
    Ok(bound)
}
