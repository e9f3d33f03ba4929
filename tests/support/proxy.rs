//! The proxy, started in-process on loopback port 0 in front of a given upstream, with a
//! fresh test certificate. Listeners: `plain` (no TLS), `starttls`, `implicit`. Also the
//! `coi-proxy` binary as a process of its own, for the cases that kill it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coi_proxy::app::{self, Running};

use super::io::STEP;
use super::pki::{self, TestPki};
use super::raw::RawClient;

pub struct Proxy {
    running: Option<Running>,
    pub plain: SocketAddr,
    pub starttls: SocketAddr,
    pub implicit: SocketAddr,
    /// The submission listeners, when [`Options::submission`] was given.
    pub submission: Option<SubmissionAddrs>,
    /// The delivery hook's LMTP listener, when [`Options::delivery`] was given.
    pub delivery: Option<SocketAddr>,
    /// The peer links' QUIC endpoint, with a `peer` section in [`Options::extra_yaml`].
    pub peer: Option<SocketAddr>,
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
    /// A submission front in front of this Postfix submission listener.
    pub submission: Option<SubmissionOptions>,
    /// A delivery hook in front of this Dovecot LMTP listener, with the mailbox writer
    /// logging in as the test Dovecot's master user.
    pub delivery: Option<DeliveryOptions>,
    /// Limits and timeouts of the delivery hook (with [`Options::delivery`]).
    pub delivery_tuning: DeliveryTuning,
    /// Further top-level YAML sections (`peer`, `coi`), appended as they are.
    pub extra_yaml: String,
}

/// `delivery.limits` and `delivery.timeouts` that differ from the test defaults; `None`
/// keeps the default (the proxy's own, except `upstream_reply`: 10 s here).
#[derive(Clone, Debug, Default)]
pub struct DeliveryTuning {
    /// `delivery.limits.max_message_bytes`.
    pub max_message_bytes: Option<u64>,
    /// `delivery.limits.max_recipients`.
    pub max_recipients: Option<usize>,
    /// `delivery.timeouts.upstream_reply` in milliseconds.
    pub upstream_reply_ms: Option<u64>,
}

/// The delivery hook (listener on 127.0.0.7, port 0) and the mailbox writer.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// Dovecot's LMTP.
    pub upstream: SocketAddr,
    /// Master user and password; `None`: no mailbox writer (everything by LMTP).
    pub master: Option<(String, String)>,
    /// `delivery.limits.spool_memory_bytes`.
    pub spool_memory_bytes: Option<u64>,
    /// The hook's listener; `None`: 127.0.0.7, port 0. A fixed one survives a restart.
    pub address: Option<SocketAddr>,
}

impl DeliveryOptions {
    pub fn yaml(&self) -> String {
        self.yaml_tuned(&DeliveryTuning::default())
    }

    /// [`DeliveryOptions::yaml`] with `tuning`'s limits and timeouts.
    pub fn yaml_tuned(&self, tuning: &DeliveryTuning) -> String {
        let reply = tuning
            .upstream_reply_ms
            .map_or_else(|| "10s".to_owned(), |ms| format!("{ms}ms"));
        let address = self
            .address
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 7], 0)));
        let mut y = format!(
            "delivery:\n  address: \"{address}\"\n  upstream:\n    address: \"{}\"\n  hostname: hook.test\n  user_name: local_part\n  timeouts:\n    upstream_reply: {reply}\n",
            self.upstream
        );
        let limits = [
            ("spool_memory_bytes", self.spool_memory_bytes),
            ("max_message_bytes", tuning.max_message_bytes),
            ("max_recipients", tuning.max_recipients.map(|n| n as u64)),
        ];
        if limits.iter().any(|(_, n)| n.is_some()) {
            y.push_str("  limits:\n");
            for (key, n) in limits {
                if let Some(n) = n {
                    y.push_str(&format!("    {key}: {n}\n"));
                }
            }
        }
        if let Some((user, password)) = &self.master {
            y.push_str(&format!(
                "mailbox_writer:\n  master_user: {user:?}\n  master_password: {password:?}\n"
            ));
        }
        y
    }
}

/// The submission front: listeners `sub-plain` (no TLS), `sub-starttls`, `sub-implicit`.
#[derive(Clone, Debug)]
pub struct SubmissionOptions {
    pub upstream: SocketAddr,
    /// `submission.sender_domains`.
    pub sender_domains: Vec<String>,
    /// Allow AUTH without TLS (most tests speak plaintext to `sub-plain`).
    pub plaintext_auth: bool,
    pub max_recipients: Option<usize>,
    pub max_message_bytes: Option<u64>,
    pub max_line_bytes: Option<u64>,
    /// `submission.timeouts.upstream_reply` in milliseconds (default 10 s here).
    pub upstream_reply_ms: Option<u64>,
    /// `submission.timeouts.tls_handshake` in milliseconds (default: the proxy's).
    pub tls_handshake_ms: Option<u64>,
    /// `submission.timeouts.pre_auth` in milliseconds (default: the proxy's).
    pub pre_auth_ms: Option<u64>,
    /// `submission.timeouts.command` in milliseconds (default: the proxy's).
    pub command_ms: Option<u64>,
    /// `submission.limits.max_sessions` (default 100 here).
    pub max_sessions: Option<usize>,
    /// Token secrets and an `X-COI-Server` hint (`coi.tokens`, `coi.server`).
    pub tokens: bool,
}

impl SubmissionOptions {
    pub fn new(upstream: SocketAddr, sender_domain: &str) -> Self {
        Self {
            upstream,
            sender_domains: vec![sender_domain.to_owned()],
            plaintext_auth: true,
            max_recipients: None,
            max_message_bytes: None,
            max_line_bytes: None,
            upstream_reply_ms: None,
            tls_handshake_ms: None,
            pre_auth_ms: None,
            command_ms: None,
            max_sessions: None,
            tokens: true,
        }
    }

    fn yaml(&self) -> String {
        let mut y = String::from("submission:\n  listeners:\n    - {name: sub-plain, address: \"127.0.0.4:0\", tls: none}\n    - {name: sub-starttls, address: \"127.0.0.5:0\", tls: starttls}\n    - {name: sub-implicit, address: \"127.0.0.6:0\", tls: implicit}\n");
        y.push_str(&format!(
            "  upstream:\n    address: \"{}\"\n",
            self.upstream
        ));
        y.push_str("  hostname: submission.test\n");
        let domains: Vec<String> = self
            .sender_domains
            .iter()
            .map(|d| format!("{d:?}"))
            .collect();
        y.push_str(&format!("  sender_domains: [{}]\n", domains.join(", ")));
        if self.plaintext_auth {
            y.push_str("  insecure_allow_plaintext_auth: true\n");
        }
        let sessions = self.max_sessions.unwrap_or(100);
        y.push_str(&format!("  limits:\n    max_sessions: {sessions}\n"));
        if let Some(n) = self.max_recipients {
            y.push_str(&format!("    max_recipients: {n}\n"));
        }
        if let Some(n) = self.max_message_bytes {
            y.push_str(&format!("    max_message_bytes: {n}\n"));
        }
        if let Some(n) = self.max_line_bytes {
            y.push_str(&format!("    max_line_bytes: {n}\n"));
        }
        let reply = self.upstream_reply_ms.unwrap_or(10_000);
        y.push_str(&format!("  timeouts:\n    upstream_reply: {reply}ms\n"));
        for (key, ms) in [
            ("tls_handshake", self.tls_handshake_ms),
            ("pre_auth", self.pre_auth_ms),
            ("command", self.command_ms),
        ] {
            if let Some(ms) = ms {
                y.push_str(&format!("    {key}: {ms}ms\n"));
            }
        }
        y
    }
}

/// The token secrets of [`SubmissionOptions::tokens`], for tests that verify tokens.
pub const TEMPORARY_SECRET: &str = "test-temporary-secret-0001";
pub const PERMANENT_SECRET: &str = "test-permanent-secret-0001";
/// The `coi.server` hint of [`SubmissionOptions::tokens`].
pub const COI_SERVER: &str = "coi.a.test:4433";

#[derive(Clone, Copy, Debug)]
pub struct SubmissionAddrs {
    pub plain: SocketAddr,
    pub starttls: SocketAddr,
    pub implicit: SocketAddr,
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
        let (submission, coi) = match &options.submission {
            Some(submission) => {
                let coi = if submission.tokens {
                    format!("coi:\n  server: \"{COI_SERVER}\"\n  tokens:\n    temporary_secrets: [\"{TEMPORARY_SECRET}\"]\n    permanent_secrets: [\"{PERMANENT_SECRET}\"]\n")
                } else {
                    String::new()
                };
                (submission.yaml(), coi)
            }
            None => (String::new(), String::new()),
        };
        let delivery = options
            .delivery
            .as_ref()
            .map(|d| d.yaml_tuned(&options.delivery_tuning))
            .unwrap_or_default();
        // Distinct loopback addresses keep the listeners distinct while the ports are 0.
        let extra = &options.extra_yaml;
        let yaml = format!(
            "{submission}{delivery}{coi}{extra}imap:\n  listeners:\n    - {{name: plain, address: \"127.0.0.1:0\", tls: none}}\n    - {{name: starttls, address: \"127.0.0.2:0\", tls: starttls}}\n    - {{name: implicit, address: \"127.0.0.3:0\", tls: implicit}}\n  upstream:\n    address: \"{upstream}\"\n  timeouts:\n    upstream_reply: 10s\n{timeouts_extra}{imap_extra}tls:\n  certificate: {}\n  private_key: {}\nadmin:\n  address: \"127.0.0.1:0\"\nshutdown:\n  grace: 2s\n",
            pki.cert_path.display(),
            pki.key_path.display(),
        );
        Self::start_yaml(yaml, pki, dir).await
    }

    async fn start_yaml(yaml: String, pki: TestPki, dir: tempfile::TempDir) -> Proxy {
        let config = coi_proxy::config::load_str(&yaml)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        // A fixed UDP address (a halted proxy's peer endpoint, or a test's stand-in for
        // it) is free only once quinn's endpoint driver has ended, just after its last
        // handle is dropped: a bounded wait for that, nothing else.
        let deadline = Instant::now() + STEP;
        let running = loop {
            match app::start(&config).await {
                Ok(running) => break running,
                Err(app::StartError::Peer(coi_proxy::net::quic::QuicError::Bind {
                    source,
                    ..
                })) if source.kind() == std::io::ErrorKind::AddrInUse
                    && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("proxy starts: {e:?}"),
            }
        };
        let addr = |name: &str| {
            running
                .imap
                .iter()
                .chain(&running.submission)
                .find(|(n, _)| n == name)
                .map(|(_, a)| *a)
                .expect("listener")
        };
        let submission = (!running.submission.is_empty()).then(|| SubmissionAddrs {
            plain: addr("sub-plain"),
            starttls: addr("sub-starttls"),
            implicit: addr("sub-implicit"),
        });
        Proxy {
            submission,
            delivery: running.delivery,
            peer: running.peer,
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

    /// The value of one series of the metrics text, e.g.
    /// `coi_proxy_delivery_token_captures_total{outcome="stored"}`; `None` when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
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

    /// Stops the proxy where it stands (sessions get BYE after `grace`); the value stays,
    /// for [`Proxy::start_again`].
    pub async fn halt(&mut self, grace: Duration) {
        if let Some(running) = self.running.take() {
            running.shutdown(grace).await;
        }
    }

    /// Starts a halted proxy again with the same configuration and certificate. Fixed
    /// addresses in it (a delivery hook's, a peer endpoint's) are bound again; the
    /// listeners on port 0 get new ports, and the fields say which.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "halt the proxy first");
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        *self = Self::start_yaml(self.yaml.clone(), self.pki.clone(), dir).await;
    }

    pub async fn stop(mut self, grace: Duration) {
        if let Some(running) = self.running.take() {
            running.shutdown(grace).await;
        }
    }
}

/// The `coi-proxy` binary, run with a configuration of the test's; killed (SIGKILL, by
/// its pid) when dropped.
pub struct ProxyProcess {
    child: std::process::Child,
    /// The listener [`ProxyProcess::start`] waited for.
    pub listener: SocketAddr,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_coi-proxy")`: Cargo names it to
    /// integration tests only) with the YAML `section` of the listener under test (at
    /// `listener`), a plaintext IMAP listener in front of `imap` (the configuration
    /// requires one), no admin listener and a 1 s shutdown grace. Waits until `listener`,
    /// an SMTP or LMTP listener, greets with a 220.
    pub async fn start(
        binary: &str,
        imap: SocketAddr,
        section: &str,
        listener: SocketAddr,
    ) -> ProxyProcess {
        let config = format!(
            "imap:\n  listeners:\n    - {{name: imap, address: \"127.0.0.1:0\", tls: none}}\n  upstream: {{address: \"{imap}\"}}\n{section}admin:\n  address: off\nshutdown:\n  grace: 1s\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, config).expect("write the config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let child = std::process::Command::new(binary)
            .args(["run", "--config"])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn coi-proxy");
        let mut process = ProxyProcess {
            child,
            listener,
            dir,
        };
        let deadline = Instant::now() + STEP * 2;
        loop {
            if let Ok(mut c) = RawClient::connect(listener).await {
                if c.read_line()
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|l| l.starts_with(b"220 "))
                {
                    break;
                }
            }
            assert!(
                process.child.try_wait().expect("poll the child").is_none(),
                "coi-proxy exited: {}",
                std::fs::read_to_string(process.dir.path().join("stderr.log")).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "coi-proxy does not greet");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port on the loopback address `ip`: one no in-process listener uses, so that
/// no other test's listener takes the port between here and the binary's bind.
pub fn free_port_on(ip: [u8; 4]) -> SocketAddr {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
