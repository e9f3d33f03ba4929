//! Peer links: chat messages handed straight to the coi-proxy of another domain over
//! QUIC (DESIGN.md §4, docs/peer-protocol.md), instead of through two Postfix queues.
//!
//! - [`receive`]: the endpoint's accept loop and one task per delivery stream: checks the
//!   sender against the peer's certificate, the tokens, the recipients; stores through
//!   [`Mailboxes`] (the delivery hook's path: filter, `$Chat`, de-duplication, IDLE
//!   wake) and answers each recipient.
//! - [`send`]: the sending side, used by the submission front within its client's DATA
//!   wait: one link per remote domain, reused, reopened with backoff; one stream per
//!   delivery; per recipient a verdict, anything but `Stored` meaning "send by mail".
//!
//! Each proxy opens its own links for what it sends; a link a peer opened to us only
//! carries that peer's deliveries. That keeps one role per connection (the opener is
//! always the client of every stream) at the cost of up to two connections per pair of
//! domains.

pub mod receive;
pub mod send;

use std::path::PathBuf;
use std::sync::Arc;

use crate::coi::token::Secrets;
use crate::config::PeerLinkConfig;
use crate::metrics::Metrics;
use crate::net::discovery::Discovery;
use crate::proxy::registry::SessionRegistry;
use crate::proxy::store::Mailboxes;

pub use send::{Links, Offer, OfferRecipient, Verdict};

/// Message bytes held in memory before a spool of a link's message (received, or
/// submitted for the fast path) moves to a file: a chat message fits.
pub const SPOOL_MEMORY: usize = 1024 * 1024;

/// What both sides of the peer links share.
pub struct Peers {
    pub endpoint: quinn::Endpoint,
    pub config: PeerLinkConfig,
    /// The mail domains our certificate names: we receive for these.
    pub domains: Vec<String>,
    pub discovery: Discovery,
    pub links: Links,
    pub mailboxes: Arc<Mailboxes>,
    pub secrets: Secrets,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<SessionRegistry>,
    /// Where a link's messages over [`SPOOL_MEMORY`] are spooled (`delivery.spool_directory`).
    pub spool_dir: PathBuf,
}

impl Peers {
    /// Whether `domain` (a lowercase A-label) is one of ours.
    pub fn is_local(&self, domain: &str) -> bool {
        crate::net::quic::covers(&self.domains, domain)
    }
}
