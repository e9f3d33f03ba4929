//! The delivery hook: an LMTP server (RFC 2033) that Postfix uses as its local delivery
//! transport, in front of Dovecot's LMTP (DESIGN.md §2 path 3).
//!
//! Per recipient it relays to Dovecot, or, for a COI user's chat message, stores the
//! message itself through the mailbox writer ([`crate::coi::delivery::route`]). Every
//! recipient is answered only with the result of its own store: Dovecot's per-recipient
//! reply, or the APPEND's tagged OK (DESIGN.md §1.3: nothing is acknowledged early).
//! After each successful store it wakes the recipient's IMAP sessions that idle on that
//! mailbox ([`crate::proxy::registry`], DESIGN.md §6).

mod coi;
mod session;

pub use coi::HookCoi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use crate::config::{DeliveryConfig, UserName};
use crate::error::{ErrorKind, Side};
use crate::metrics::Metrics;
use crate::net::connect::Connector;
use crate::net::shutdown::{Phase, Shutdown};
use crate::proto::smtp::command::Path;
use crate::proxy::registry::SessionRegistry;

/// What every session of the hook shares.
pub struct Shared {
    pub config: DeliveryConfig,
    pub upstream: Connector,
    pub metrics: Arc<Metrics>,
    pub spool_dir: PathBuf,
    /// `None` without a mailbox writer: everything goes to Dovecot's LMTP unchanged.
    pub coi: Option<HookCoi>,
    /// The IMAP sessions to wake after a store (IDLE wake).
    pub registry: Arc<SessionRegistry>,
}

impl Shared {
    pub fn new(
        config: DeliveryConfig,
        upstream: Connector,
        metrics: Arc<Metrics>,
        coi: Option<HookCoi>,
        registry: Arc<SessionRegistry>,
    ) -> Self {
        let spool_dir = config
            .spool_directory
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        Self {
            config,
            upstream,
            metrics,
            spool_dir,
            coi,
            registry,
        }
    }
}

/// The Dovecot user a recipient path names (`delivery.user_name`); `None` for a path
/// without a mailbox (`<>`, which RCPT never carries).
pub fn user_of(user_name: UserName, to: &Path) -> Option<String> {
    let mailbox = to.mailbox()?;
    Some(match user_name {
        UserName::Address => mailbox.to_string(),
        UserName::LocalPart => mailbox.local_part.clone(),
    })
}

/// Accepts Postfix's LMTP connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
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
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        // Postfix retries a refused connection later: waiting for a slot is fine, but
        // not forever (its own lmtp_connect_timeout is 0 = the OS's).
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            debug!(%peer, "delivery session limit reached");
            tokio::spawn(refuse(stream));
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("delivery_session", session_id = next_id, %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                match session::Session::new(shared, stream, shutdown).run().await {
                    Ok(()) => debug!("session ended"),
                    Err(e) if e.side == Side::Downstream && e.kind == ErrorKind::Closed => {
                        debug!("Postfix closed")
                    }
                    Err(e) => info!(error = %e, "session ended"),
                }
            }
            .instrument(span),
        );
    }
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream
        .write_all(b"421 4.3.2 Too many connections; try again later\r\n")
        .await;
}

/// Binds the hook's listener.
pub async fn bind(config: &DeliveryConfig) -> std::io::Result<(TcpListener, SocketAddr)> {
    let socket = TcpListener::bind(config.address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the delivery listener on {}: {e}", config.address),
        )
    })?;
    let local = socket.local_addr()?;
    Ok((socket, local))
}
