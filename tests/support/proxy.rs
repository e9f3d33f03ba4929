//! The proxy, started in-process on loopback port 0 in front of a given upstream, with a
//! fresh test certificate. Listeners: `plain` (no TLS), `starttls`, `implicit`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use coi_proxy::app::{self, Running};

use super::pki::{self, TestPki};

pub struct Proxy {
    running: Option<Running>,
    pub plain: SocketAddr,
    pub starttls: SocketAddr,
    pub implicit: SocketAddr,
    pub admin: SocketAddr,
    pub pki: TestPki,
    /// The YAML it was started with, to start it again after a stop.
    yaml: String,
    _dir: tempfile::TempDir,
}

/// Options that differ between tests, as YAML lines under `imap:`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Allow LOGIN on the plaintext listener (the differential tests speak plaintext).
    pub plaintext_auth: bool,
    pub bare_lf_canonicalize: bool,
    pub max_literal_bytes: Option<u64>,
    pub max_line_bytes: Option<u64>,
    /// `imap.timeouts.auth_failure_delay` in milliseconds (default: the proxy's 2 s).
    pub auth_failure_delay_ms: Option<u64>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, options: Options) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki::self_signed(dir.path(), &["localhost", "127.0.0.1"]);
        let mut imap_extra = String::new();
        if options.plaintext_auth {
            imap_extra.push_str("  insecure_allow_plaintext_auth: true\n");
        }
        if options.bare_lf_canonicalize {
            imap_extra.push_str("  bare_lf: canonicalize\n");
        }
        if options.max_literal_bytes.is_some() || options.max_line_bytes.is_some() {
            imap_extra.push_str("  limits:\n");
            if let Some(n) = options.max_literal_bytes {
                imap_extra.push_str(&format!("    max_literal_bytes: {n}\n"));
            }
            if let Some(n) = options.max_line_bytes {
                imap_extra.push_str(&format!("    max_line_bytes: {n}\n"));
            }
        }
        let timeouts_extra = options
            .auth_failure_delay_ms
            .map(|ms| format!("    auth_failure_delay: {ms}ms\n"))
            .unwrap_or_default();
        // Distinct loopback addresses keep the listeners distinct while the ports are 0.
        let yaml = format!(
            "imap:\n  listeners:\n    - {{name: plain, address: \"127.0.0.1:0\", tls: none}}\n    - {{name: starttls, address: \"127.0.0.2:0\", tls: starttls}}\n    - {{name: implicit, address: \"127.0.0.3:0\", tls: implicit}}\n  upstream:\n    address: \"{upstream}\"\n  timeouts:\n    upstream_reply: 10s\n{timeouts_extra}{imap_extra}tls:\n  certificate: {}\n  private_key: {}\nadmin:\n  address: \"127.0.0.1:0\"\nshutdown:\n  grace: 2s\n",
            pki.cert_path.display(),
            pki.key_path.display(),
        );
        Self::start_yaml(yaml, pki, dir).await
    }

    async fn start_yaml(yaml: String, pki: TestPki, dir: tempfile::TempDir) -> Proxy {
        let config = coi_proxy::config::load_str(&yaml)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        let running = app::start(&config).await.expect("proxy starts");
        let addr = |name: &str| {
            running
                .imap
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, a)| *a)
                .expect("listener")
        };
        Proxy {
            plain: addr("plain"),
            starttls: addr("starttls"),
            implicit: addr("implicit"),
            admin: running.admin.expect("admin listener"),
            running: Some(running),
            pki,
            yaml,
            _dir: dir,
        }
    }

    pub fn metrics_text(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.metrics.encode())
            .unwrap_or_default()
    }

    /// Stops the proxy (sessions get BYE after the grace period) and starts a new one
    /// with the same configuration and certificate; the ports change.
    pub async fn restart(self) -> Proxy {
        let Proxy {
            running,
            yaml,
            pki,
            _dir,
            ..
        } = self;
        if let Some(running) = running {
            running.shutdown(Duration::from_millis(200)).await;
        }
        Self::start_yaml(yaml, pki, _dir).await
    }

    pub async fn stop(mut self, grace: Duration) {
        if let Some(running) = self.running.take() {
            running.shutdown(grace).await;
        }
    }
}
