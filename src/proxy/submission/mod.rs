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

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::coi::address::{self, NormalizedAddress};
use crate::coi::submit::SubmitRules;
use crate::config::{ListenerTls, SubmissionConfig};
use crate::error::SessionError;
use crate::metrics::{ListenerKind, Metrics};
use crate::net::connect::Connector;
use crate::net::listener::{self, Accepted, Policy};
use crate::net::shutdown::Shutdown;
use crate::proxy::peer::Peers;

pub use upstream::ClientFacts;

/// What every session of the front shares.
pub struct Shared {
    pub config: SubmissionConfig,
    pub rules: Arc<SubmitRules>,
    pub tls: Option<TlsAcceptor>,
    pub upstream: Connector,
    pub metrics: Arc<Metrics>,
    /// The peer links, when configured: chat recipients at other domains with a
    /// coi-proxy may take the fast path.
    pub peers: Option<Arc<Peers>>,
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
        peers: Option<Arc<Peers>>,
    ) -> Self {
        Self {
            config,
            rules,
            tls,
            upstream,
            metrics,
            peers,
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

/// Written to a client over the session limit (not on implicit TLS).
const REFUSAL: &[u8] = b"421 4.7.0 Too many connections; try again later\r\n";

/// Accepts clients on one listener until shutdown, at most `max_sessions` at a time.
pub async fn serve(
    listener: TcpListener,
    tls: ListenerTls,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let policy = Policy::clients(shared.config.limits.max_sessions, tls, REFUSAL);
    listener::serve(listener, policy, shutdown, |accepted| {
        let span = tracing::info_span!("submission_session", session_id = accepted.id, peer = %accepted.peer, listener = ListenerKind::from(tls).as_label(), user = tracing::field::Empty);
        (span, run_session(accepted, tls, shared.clone()))
    })
    .await;
}

async fn run_session(
    accepted: Accepted,
    tls: ListenerTls,
    shared: Arc<Shared>,
) -> Result<(), SessionError> {
    let kind = ListenerKind::from(tls);
    let _connection = shared.metrics.submission.connection_opened(kind);
    let timeout = shared.config.timeouts.tls_handshake;
    let client = listener::client_stream(
        accepted.stream,
        tls,
        shared.tls.as_ref(),
        timeout,
        |outcome| shared.metrics.submission.tls_handshake(kind, outcome),
    )
    .await?;
    session::Session::new(shared, tls, accepted.peer, client, accepted.shutdown)
        .run()
        .await
}

/// Binds every configured submission listener; fails before anything is served if one
/// cannot be bound.
pub async fn bind(
    config: &SubmissionConfig,
) -> std::io::Result<Vec<(TcpListener, ListenerTls, SocketAddr)>> {
    listener::bind_all("submission", &config.listeners).await
}
