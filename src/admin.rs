//! The admin HTTP listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! Kubernetes probes.
//!
//! - `GET /metrics`: 200, [`Metrics::encode`] as `text/plain; version=0.0.4`.
//! - `GET /healthz`: 200 `ok` while the process can answer at all (liveness).
//! - `GET /readyz`: 200 `ready` when [`Readiness::is_ready`], else 503 `not ready`
//!   (readiness: the Service stops sending new clients while not ready, e.g. during
//!   shutdown's drain).
//! - Any other path is 404; another method on a known path is 405.
//!
//! The listener is meant for the pod network only (Prometheus and the kubelet) and has no
//! authentication; the metrics carry no personal data (see [`crate::metrics`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// How long a client may take to send a request's headers. Prometheus and the kubelet
/// send theirs at once; this only stops a stray connection from holding a task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// After shutdown, how long in-flight requests may take before their connections are
/// dropped. A scrape encodes in well under a millisecond; one second is ample and keeps
/// the admin listener from eating into the IMAP sessions' grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// After a failed `accept` (typically EMFILE), how long to wait before trying again, so
/// that a persistent error does not become a busy loop.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Whether the proxy should receive new clients, shared between whoever decides it
/// (startup, shutdown) and `/readyz`. Starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets what `/readyz` answers from now on.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// What `/readyz` answers now.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
///
/// Then it stops accepting, lets requests in flight finish for a short grace period
/// (idle keep-alive connections close at once), drops whatever remains, and returns.
/// Failures of single connections or `accept` calls are logged and do not end the
/// server; the `Err` case is reserved for the listener itself being unusable.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "admin listener started");

    let mut shutdown = pin!(shutdown);
    // `true` once shutdown has begun; every connection task watches it.
    let (draining_tx, draining_rx) = watch::channel(false);
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "admin connection accepted");
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&metrics),
                        readiness.clone(),
                        draining_rx.clone(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "admin listener failed to accept a connection");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_RETRY_DELAY) => {}
                    }
                }
            },
            // Reap finished connections so the set does not grow with every scrape.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    drop(listener);
    // `send_replace` rather than `send`: it cannot fail when no connection is listening.
    draining_tx.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = connections.len(),
            "admin connections still open after the grace period; dropping them"
        );
        connections.abort_all();
    }
    tracing::info!(address = %local, "admin listener stopped");
    Ok(())
}

/// Runs one HTTP/1 connection until it closes, or closes it gracefully once `draining`
/// turns true.
async fn serve_connection(
    stream: TcpStream,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    mut draining: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| {
        let response = respond(&request, &metrics, &readiness);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));

    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The borrow `wait_for` returns is not `Send`, so only its success leaves this
        // arm; an error means the server is gone, which is as good as draining.
        _ = async { draining.wait_for(|draining| *draining).await.is_ok() } => {
            // Finishes the request in flight, if any, then closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Peers hanging up mid-request or timing out are routine, not operator news.
        tracing::debug!(%error, "admin connection ended with an error");
    }
}

/// Maps one request to its response; never fails.
fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    // Known path first, then method: an unknown path is 404 whatever the method.
    let endpoint = match request.uri().path() {
        "/metrics" => Endpoint::Metrics,
        "/healthz" => Endpoint::Healthz,
        "/readyz" => Endpoint::Readyz,
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }

    match endpoint {
        Endpoint::Healthz => text(StatusCode::OK, "ok"),
        Endpoint::Metrics => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            );
            response
        }
        Endpoint::Readyz if readiness.is_ready() => text(StatusCode::OK, "ready"),
        Endpoint::Readyz => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Healthz,
    Metrics,
    Readyz,
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::metrics::{CommandClass, CommandOutcome};

    /// Every network step of these tests must finish well within this.
    const STEP: Duration = Duration::from_secs(5);

    struct Admin {
        address: SocketAddr,
        metrics: Arc<Metrics>,
        readiness: Readiness,
        stop: oneshot::Sender<()>,
        server: JoinHandle<std::io::Result<()>>,
    }

    async fn start() -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr");
        let metrics = Arc::new(Metrics::new());
        let readiness = Readiness::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&metrics),
            readiness.clone(),
            async move {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            },
        ));
        Admin {
            address,
            metrics,
            readiness,
            stop,
            server,
        }
    }

    impl Admin {
        async fn stop(self) {
            self.stop.send(()).expect("server still running");
            tokio::time::timeout(STEP, self.server)
                .await
                .expect("serve did not return after shutdown")
                .expect("serve task")
                .expect("serve result");
        }
    }

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    /// Sends one request with `Connection: close` and reads the whole reply.
    async fn request(address: SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = tokio::time::timeout(STEP, TcpStream::connect(address))
            .await
            .expect("connect timed out")
            .expect("connect");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut raw))
            .await
            .expect("reply timed out")
            .expect("read");
        parse(&raw)
    }

    fn parse(raw: &[u8]) -> Reply {
        let raw = String::from_utf8(raw.to_vec()).expect("UTF-8 reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let admin = start().await;
        let reply = request(admin.address, "GET", "/healthz").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "ok");
        admin.stop().await;
    }

    #[tokio::test]
    async fn readyz_follows_readiness() {
        let admin = start().await;
        let reply = request(admin.address, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (503, "not ready"));

        admin.readiness.set_ready(true);
        let reply = request(admin.address, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ready"));

        admin.readiness.set_ready(false);
        let reply = request(admin.address, "GET", "/readyz").await;
        assert_eq!(reply.status, 503);
        admin.stop().await;
    }

    #[tokio::test]
    async fn metrics_are_exposed_as_prometheus_text() {
        let admin = start().await;
        admin.metrics.imap.command_finished(
            CommandClass::Select,
            CommandOutcome::Ok,
            Duration::from_millis(3),
        );
        let reply = request(admin.address, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .head
                .contains("content-type: text/plain; version=0.0.4"),
            "{}",
            reply.head
        );
        assert!(reply
            .body
            .contains("# TYPE coi_proxy_imap_commands_total counter"));
        assert!(reply
            .body
            .contains("coi_proxy_imap_commands_total{command=\"select\",outcome=\"ok\"} 1"));
        admin.stop().await;
    }

    #[tokio::test]
    async fn query_strings_are_ignored() {
        let admin = start().await;
        let reply = request(admin.address, "GET", "/healthz?verbose=1").await;
        assert_eq!(reply.status, 200);
        admin.stop().await;
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let admin = start().await;
        assert_eq!(request(admin.address, "GET", "/").await.status, 404);
        assert_eq!(request(admin.address, "GET", "/metricsx").await.status, 404);
        assert_eq!(request(admin.address, "POST", "/nope").await.status, 404);
        admin.stop().await;
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let admin = start().await;
        for (method, path) in [
            ("POST", "/metrics"),
            ("PUT", "/readyz"),
            ("DELETE", "/healthz"),
        ] {
            let reply = request(admin.address, method, path).await;
            assert_eq!(reply.status, 405, "{method} {path}");
            assert!(reply.head.contains("allow: get"), "{}", reply.head);
        }
        admin.stop().await;
    }

    #[tokio::test]
    async fn shutdown_returns_and_stops_accepting() {
        let admin = start().await;
        let address = admin.address;
        admin.stop().await;
        // The listener is closed: connecting now fails (or, on some systems, is reset at
        // once); it must never be answered.
        if let Ok(Ok(mut stream)) = tokio::time::timeout(STEP, TcpStream::connect(address)).await {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
                .await;
            let mut raw = Vec::new();
            let read = tokio::time::timeout(STEP, stream.read_to_end(&mut raw))
                .await
                .expect("read timed out");
            assert!(read.is_err() || raw.is_empty(), "answered after shutdown");
        }
    }

    #[tokio::test]
    async fn shutdown_closes_idle_keep_alive_connections() {
        let admin = start().await;
        // One connection that finished a request and stays open (keep-alive), and one that
        // never sent anything: neither may hold up shutdown beyond the grace period.
        let mut kept = TcpStream::connect(admin.address).await.expect("connect");
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            .await
            .expect("write");
        let mut buffer = [0u8; 1024];
        let n = tokio::time::timeout(STEP, kept.read(&mut buffer))
            .await
            .expect("reply timed out")
            .expect("read");
        assert!(parse(&buffer[..n]).status == 200);
        let _silent = TcpStream::connect(admin.address).await.expect("connect");

        let started = tokio::time::Instant::now();
        admin.stop().await;
        assert!(started.elapsed() <= SHUTDOWN_GRACE + Duration::from_secs(1));
        // The kept-alive connection has been closed by the server.
        let n = tokio::time::timeout(STEP, kept.read(&mut buffer))
            .await
            .expect("close timed out")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
