//! Assembles the process from a validated [`Config`]: TLS, listeners, the admin endpoint,
//! and a two-phase shutdown. `main` and the integration tests both start the proxy here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::info;

use crate::admin::{self, Readiness};
use crate::config::{Config, UpstreamTls};
use crate::metrics::Metrics;
use crate::net::shutdown::{self, Phase, Trigger};
use crate::net::tls::{self, TlsError};
use crate::proxy::imap;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("imap.upstream.ca_file: {0}")]
    UpstreamTls(TlsError),
    #[error("{0}")]
    Bind(#[from] std::io::Error),
}

/// A started proxy.
pub struct Running {
    /// Bound IMAP listeners: configured name and actual address (port 0 resolved).
    pub imap: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
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
    let upstream_tls = match &config.imap.upstream.tls {
        UpstreamTls::None => None,
        UpstreamTls::Implicit {
            server_name,
            ca_file,
        } => {
            let client = tls::client_config(ca_file).map_err(StartError::UpstreamTls)?;
            let name = tls::server_name(server_name).map_err(StartError::UpstreamTls)?;
            Some((TlsConnector::from(client), name))
        }
    };
    let shared = Arc::new(imap::Shared {
        config: config.imap.clone(),
        coi: config.coi.clone(),
        tls: acceptor,
        upstream_tls,
        metrics: metrics.clone(),
        penalties: imap::penalty::AuthPenalties::new(config.imap.timeouts.auth_failure_delay),
    });
    let listeners = imap::bind(&config.imap).await?;
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
        admin,
        metrics,
        readiness,
        trigger,
        admin_stop,
        tasks,
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
    }
}
