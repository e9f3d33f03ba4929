//! The delivery hook: an LMTP server (RFC 2033) that Postfix uses as its local delivery
//! transport, in front of Dovecot's LMTP (DESIGN.md §2 path 3).
//!
//! Per recipient it relays to Dovecot, or, for a COI user's chat message, stores the
//! message itself through the mailbox writer ([`crate::coi::delivery::route`]). Every
//! recipient is answered only with the result of its own store: Dovecot's per-recipient
//! reply, or the APPEND's tagged OK (DESIGN.md §1.3: nothing is acknowledged early).
//! After each successful store it wakes the recipient's IMAP sessions that idle on that
//! mailbox ([`crate::proxy::registry`], DESIGN.md §6).

mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{DeliveryConfig, UserName};
use crate::metrics::Metrics;
use crate::net::connect::Connector;
use crate::net::listener::{self, Policy};
use crate::net::shutdown::Shutdown;
use crate::proto::smtp::command::Path;
use crate::proxy::registry::SessionRegistry;
use crate::proxy::store::Mailboxes;

/// What every session of the hook shares.
pub struct Shared {
    pub config: DeliveryConfig,
    pub upstream: Connector,
    pub metrics: Arc<Metrics>,
    pub spool_dir: PathBuf,
    /// `None` without a mailbox writer: everything goes to Dovecot's LMTP unchanged.
    pub coi: Option<Arc<Mailboxes>>,
    /// The IMAP sessions to wake after a store (IDLE wake).
    pub registry: Arc<SessionRegistry>,
}

impl Shared {
    pub fn new(
        config: DeliveryConfig,
        upstream: Connector,
        metrics: Arc<Metrics>,
        coi: Option<Arc<Mailboxes>>,
        registry: Arc<SessionRegistry>,
    ) -> Self {
        let spool_dir = config.spool_dir();
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

/// Written to Postfix over the session limit.
const REFUSAL: &[u8] = b"421 4.3.2 Too many connections; try again later\r\n";

/// Accepts Postfix's LMTP connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let policy = Policy {
        max_sessions: shared.config.limits.max_sessions,
        // Postfix retries a refused connection later: waiting for a slot is fine, but
        // not forever (its own lmtp_connect_timeout is 0 = the OS's).
        refusal: Some(REFUSAL),
        limit_reached: "delivery session limit reached",
        peer_closed: "Postfix closed",
    };
    listener::serve(listener, policy, shutdown, |accepted| {
        let span = tracing::info_span!("delivery_session", session_id = accepted.id, peer = %accepted.peer);
        let shared = shared.clone();
        let session = async move {
            session::Session::new(shared, accepted.stream, accepted.shutdown)
                .run()
                .await
        };
        (span, session)
    })
    .await;
}

/// Binds the hook's listener.
pub async fn bind(config: &DeliveryConfig) -> std::io::Result<(TcpListener, SocketAddr)> {
    listener::bind(config.address, "the delivery listener").await
}
