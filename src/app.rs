//! Assembles the process from a validated [`Config`]: TLS, listeners, the admin endpoint,
//! and a two-phase shutdown. `main` and the integration tests both start the proxy here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::info;

use crate::admin::{self, Readiness};
use crate::coi::headers::HeaderRewriter;
use crate::coi::submit::SubmitRules;
use crate::config::{
    Config, DeliveryConfig, MailboxWriterConfig, PeerLinkConfig, SubmissionConfig, UpstreamTls,
    UserName,
};
use crate::metrics::Metrics;
use crate::net::connect::Connector;
use crate::net::discovery::{Discovery, DiscoveryError};
use crate::net::quic::{self, PeerTls, QuicError};
use crate::net::shutdown::{self, Phase, Trigger};
use crate::net::tls::{self, TlsError};
use crate::proto::peer::ErrorCode;
use crate::proto::smtp::data::{DataLimits, TEXT_LINE_MAX};
use crate::proxy::peer::{Links, Peers};
use crate::proxy::registry::SessionRegistry;
use crate::proxy::state::UserStates;
use crate::proxy::store::Mailboxes;
use crate::proxy::writer::{MailboxWriter, MasterPassword, WriterConfig, WriterTls};
use crate::proxy::{delivery, imap, peer, submission};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("imap.upstream.ca_file: {0}")]
    UpstreamTls(TlsError),
    #[error("submission.upstream.ca_file: {0}")]
    SubmissionUpstreamTls(TlsError),
    #[error("delivery.upstream.ca_file: {0}")]
    DeliveryUpstreamTls(TlsError),
    #[error("coi.server: {0}")]
    CoiServer(String),
    #[error("peer: {0}")]
    Peer(#[source] QuicError),
    #[error("peer.dns: {0}")]
    Discovery(#[source] DiscoveryError),
    #[error("{0}")]
    Bind(#[from] std::io::Error),
}

/// A started proxy.
pub struct Running {
    /// Bound IMAP listeners: configured name and actual address (port 0 resolved).
    pub imap: Vec<(String, SocketAddr)>,
    /// Bound submission listeners, likewise; empty without a `submission` section.
    pub submission: Vec<(String, SocketAddr)>,
    /// The delivery hook's LMTP listener, without a `delivery` section none.
    pub delivery: Option<SocketAddr>,
    /// The peer links' QUIC endpoint (UDP), without `peer.address` none.
    pub peer: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// Closed and drained last, so that its UDP port is free when shutdown returns.
    peer_endpoint: Option<quinn::Endpoint>,
    trigger: Trigger,
    admin_stop: tokio::sync::oneshot::Sender<()>,
    tasks: JoinSet<()>,
}

/// Loads certificates, binds every listener and starts serving. Nothing is served if any
/// step fails.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let acceptor = match &config.tls {
        Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
        None => None,
    };
    let upstream = Connector::new(&config.imap.upstream).map_err(StartError::UpstreamTls)?;
    let states = Arc::new(UserStates::new());
    // Every IMAP session may register: the listeners' session limits bound it.
    let registry = Arc::new(SessionRegistry::new(
        config
            .imap
            .limits
            .max_sessions
            .saturating_mul(config.imap.listeners.len()),
    ));
    let shared = Arc::new(imap::Shared {
        config: config.imap.clone(),
        coi: config.coi.clone(),
        tls: acceptor.clone(),
        upstream,
        metrics: metrics.clone(),
        penalties: imap::penalty::AuthPenalties::new(config.imap.timeouts.auth_failure_delay),
        states: states.clone(),
        registry: registry.clone(),
    });
    let writer = match &config.mailbox_writer {
        Some(settings) => Some(mailbox_writer(config, settings)?),
        None => None,
    };
    // The users' mailboxes as the proxy writes them: for the delivery hook, the peer
    // links and the submission front's token lookups.
    let mailboxes = writer.clone().map(|writer| {
        let user_name = config
            .delivery
            .as_ref()
            .map_or(UserName::Address, |d| d.user_name);
        let secrets = &config.coi.tokens.secrets;
        // Any stable server secret keys the de-duplication hash; the first permanent one
        // changes least often.
        let dedup_secret = secrets
            .permanent
            .first()
            .or(secrets.temporary.first())
            .cloned();
        Arc::new(Mailboxes::new(
            writer,
            config.coi.mailbox_root.clone(),
            states.clone(),
            user_name,
            dedup_secret,
        ))
    });
    let peers = match (&config.peer.link, &mailboxes) {
        (Some(link), Some(mailboxes)) => Some(Arc::new(peers(
            config,
            link,
            mailboxes.clone(),
            metrics.clone(),
            registry.clone(),
        )?)),
        _ => None,
    };
    let submission_shared = match &config.submission {
        Some(submission) => Some(Arc::new(submission_shared(
            config,
            submission,
            acceptor.clone(),
            metrics.clone(),
            peers.clone(),
        )?)),
        None => None,
    };
    let delivery_shared = match &config.delivery {
        Some(delivery) => {
            let upstream =
                Connector::new(&delivery.upstream).map_err(StartError::DeliveryUpstreamTls)?;
            if mailboxes.is_none() {
                info!("no mailbox_writer section: the delivery hook relays all mail to Dovecot's LMTP");
            }
            Some(Arc::new(delivery::Shared::new(
                delivery.clone(),
                upstream,
                metrics.clone(),
                mailboxes.clone(),
                registry.clone(),
            )))
        }
        None => None,
    };
    let listeners = imap::bind(&config.imap).await?;
    let delivery_listener = match &config.delivery {
        Some(delivery) => Some(delivery::bind(delivery).await?),
        None => None,
    };
    let submission_listeners = match &config.submission {
        Some(submission) => submission::bind(submission).await?,
        None => Vec::new(),
    };
    let admin_listener = match config.admin.address {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("binding admin listener on {address}: {e}"),
            )
        })?),
        None => None,
    };
    let (trigger, shutdown) = shutdown::channel();
    let readiness = Readiness::default();
    let mut tasks = JoinSet::new();
    // The admin endpoint outlives the sessions: /metrics stays up while they drain.
    let (admin_stop, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut imap_addrs = Vec::new();
    for ((listener, kind, address), configured) in listeners.into_iter().zip(&config.imap.listeners)
    {
        info!(listener = %configured.name, %address, "IMAP listener ready");
        imap_addrs.push((configured.name.clone(), address));
        tasks.spawn(imap::serve(
            listener,
            kind,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    let mut submission_addrs = Vec::new();
    if let (Some(shared), Some(submission)) = (&submission_shared, &config.submission) {
        for ((listener, kind, address), configured) in
            submission_listeners.into_iter().zip(&submission.listeners)
        {
            info!(listener = %configured.name, %address, "submission listener ready");
            submission_addrs.push((configured.name.clone(), address));
            tasks.spawn(submission::serve(
                listener,
                kind,
                shared.clone(),
                shutdown.clone(),
            ));
        }
    }
    let mut delivery_addr = None;
    if let (Some(shared), Some((listener, address))) = (delivery_shared, delivery_listener) {
        info!(%address, "delivery listener ready");
        delivery_addr = Some(address);
        tasks.spawn(delivery::serve(listener, shared, shutdown.clone()));
    }
    let mut peer_addr = None;
    if let Some(peers) = &peers {
        let address = peers.endpoint.local_addr()?;
        info!(%address, domains = ?peers.domains, "peer endpoint ready");
        peer_addr = Some(address);
        tasks.spawn(peer::receive::serve(peers.clone(), shutdown.clone()));
    }
    let admin = match admin_listener {
        Some(listener) => {
            let address = listener.local_addr()?;
            let metrics = metrics.clone();
            let ready = readiness.clone();
            tasks.spawn(async move {
                let _ = admin::serve(listener, metrics, ready, async move {
                    let _ = admin_stop_rx.await;
                })
                .await;
            });
            Some(address)
        }
        None => None,
    };
    drop(shutdown);
    readiness.set_ready(true);
    Ok(Running {
        imap: imap_addrs,
        submission: submission_addrs,
        delivery: delivery_addr,
        peer: peer_addr,
        peer_endpoint: peers.as_ref().map(|p| p.endpoint.clone()),
        admin,
        metrics,
        readiness,
        trigger,
        admin_stop,
        tasks,
    })
}

/// The mailbox writer: master-user logins to the IMAP upstream.
fn mailbox_writer(
    config: &Config,
    settings: &MailboxWriterConfig,
) -> Result<Arc<MailboxWriter>, StartError> {
    let upstream = &config.imap.upstream;
    let mut writer = WriterConfig::new(
        upstream.host.clone(),
        upstream.port,
        settings.master_user.clone(),
        MasterPassword::new(settings.master_password.clone()),
    );
    writer.connect_timeout = upstream.connect_timeout;
    writer.max_connections = settings.max_connections;
    writer.max_idle_per_user = settings.max_idle_per_user;
    if let UpstreamTls::Implicit {
        server_name,
        ca_file,
    } = &upstream.tls
    {
        writer.tls = Some(WriterTls {
            connector: TlsConnector::from(
                tls::client_config(ca_file).map_err(StartError::UpstreamTls)?,
            ),
            server_name: tls::server_name(server_name).map_err(StartError::UpstreamTls)?,
        });
    }
    Ok(MailboxWriter::new(writer))
}

/// The submission front's shared state: the rewriting rules and the Postfix connector.
fn submission_shared(
    config: &Config,
    submission: &SubmissionConfig,
    acceptor: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    peers: Option<Arc<Peers>>,
) -> Result<submission::Shared, StartError> {
    let upstream =
        Connector::new(&submission.upstream).map_err(StartError::SubmissionUpstreamTls)?;
    let rewriter = HeaderRewriter::new(config.coi.server.as_deref())
        .map_err(|e| StartError::CoiServer(e.to_string()))?;
    let rules = SubmitRules {
        rewriter,
        secrets: config.coi.tokens.secrets.clone(),
        temporary_validity: config.coi.tokens.temporary_validity.as_secs(),
        limits: DataLimits {
            max_line: TEXT_LINE_MAX,
            max_size: submission.limits.max_message_bytes,
        },
    };
    Ok(submission::Shared::new(
        submission.clone(),
        Arc::new(rules),
        acceptor,
        upstream,
        metrics,
        peers,
    ))
}

/// The peer links' shared state: the QUIC endpoint (bound here), discovery, the link
/// table.
fn peers(
    config: &Config,
    link: &PeerLinkConfig,
    mailboxes: Arc<Mailboxes>,
    metrics: Arc<Metrics>,
    registry: Arc<SessionRegistry>,
) -> Result<Peers, StartError> {
    let tls = PeerTls::load(&link.tls, &link.ca_file).map_err(StartError::Peer)?;
    let endpoint = quic::endpoint(link.address, &tls).map_err(StartError::Peer)?;
    let discovery = Discovery::new(&config.peer).map_err(StartError::Discovery)?;
    let spool_dir = config
        .delivery
        .as_ref()
        .map_or_else(std::env::temp_dir, DeliveryConfig::spool_dir);
    Ok(Peers {
        endpoint,
        config: link.clone(),
        domains: tls.domains.clone(),
        discovery,
        links: Links::new(),
        mailboxes,
        secrets: config.coi.tokens.secrets.clone(),
        metrics,
        registry,
        spool_dir,
    })
}

impl Running {
    /// Stops accepting, lets sessions finish for up to `grace`, then tells the rest
    /// `* BYE` and waits for them (bounded).
    pub async fn shutdown(self, grace: Duration) {
        let Running {
            readiness,
            trigger,
            admin_stop,
            mut tasks,
            peer_endpoint,
            ..
        } = self;
        readiness.set_ready(false);
        trigger.set(Phase::Draining);
        let drained = tokio::time::timeout(grace, trigger.finished())
            .await
            .is_ok();
        if !drained {
            info!("grace period over, closing remaining sessions");
        }
        trigger.set(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(5), trigger.finished()).await;
        let _ = admin_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        if let Some(endpoint) = peer_endpoint {
            endpoint.close(ErrorCode::Unavailable.value().into(), b"shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
        }
    }
}
