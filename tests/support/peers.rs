//! Two mail domains on loopback that both run coi-proxy with peer links: a.test and
//! b.test, each with its own Dovecot, Postfix (submission with SASL by its Dovecot, MX,
//! local delivery by LMTP to its proxy's hook, the other domain relayed to the other
//! Postfix's MX) and proxy (IMAP front, submission front, delivery hook, mailbox writer,
//! QUIC endpoint with a certificate for its domain from one test CA, a static route to
//! the other proxy). Each domain has its own token secrets, so a token only ever
//! verifies at the domain that minted it.
//!
//! The hook's TCP port and the QUIC port are chosen before anything starts, so that
//! Postfix and the other proxy can be told them and a restarted proxy binds them again.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use super::dovecot::Dovecot;
use super::io::{tagged_status, LineClient};
use super::mailbox::imap_login;
use super::pki::{TestCa, TestPki};
use super::postfix::{smtp, Postfix, PostfixOptions};
use super::proxy::{free_port_on, DeliveryOptions, Options, Proxy, SubmissionOptions};
use super::world::{enable_coi, master_of};

/// How long a test waits for a message to show up in a mailbox.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// One domain's parts.
pub struct Domain {
    pub name: &'static str,
    pub dovecot: Dovecot,
    pub postfix: Postfix,
    pub proxy: Proxy,
    /// The peer certificate the proxy presents.
    pub peer_pki: TestPki,
    /// Where the proxy's QUIC endpoint listens (fixed across restarts).
    pub quic: SocketAddr,
    pub temporary_secret: String,
    pub permanent_secret: String,
}

/// a.test and b.test, peered.
pub struct Peered {
    pub a: Domain,
    pub b: Domain,
    pub ca: TestCa,
    dir: tempfile::TempDir,
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
}

/// What the domain's proxy is told besides the defaults.
struct Plan {
    name: &'static str,
    hook: SocketAddr,
    quic: SocketAddr,
    other: &'static str,
    other_quic: SocketAddr,
    pki: TestPki,
    ca_path: std::path::PathBuf,
    temporary_secret: String,
    permanent_secret: String,
}

impl Plan {
    fn extra_yaml(&self) -> String {
        format!(
            "coi:\n  tokens:\n    temporary_secrets: [\"{}\"]\n    permanent_secrets: [\"{}\"]\n\
             peer:\n  address: \"{}\"\n  certificate: {}\n  private_key: {}\n  ca_file: {}\n  \
             delivery_timeout: 3s\n  routes:\n    - domain: {}\n      address: \"{}\"\n",
            self.temporary_secret,
            self.permanent_secret,
            self.quic,
            self.pki.cert_path.display(),
            self.pki.key_path.display(),
            self.ca_path.display(),
            self.other,
            self.other_quic,
        )
    }
}

async fn start_proxy(plan: &Plan, dovecot: &Dovecot, postfix: &Postfix) -> Proxy {
    let mut submission = SubmissionOptions::new(postfix.submission_addr(), plan.name);
    submission.tokens = false;
    Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            submission: Some(submission),
            delivery: Some(DeliveryOptions {
                upstream: dovecot.lmtp_addr(),
                master: Some(master_of(dovecot)),
                spool_memory_bytes: None,
                address: Some(plan.hook),
            }),
            extra_yaml: plan.extra_yaml(),
            ..Options::default()
        },
    )
    .await
}

impl Peered {
    pub async fn start() -> Peered {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new(dir.path(), "peers");
        let (quic_a, quic_b) = (free_udp_port(), free_udp_port());
        let plan = |name, hook, quic, other, other_quic| Plan {
            name,
            hook,
            quic,
            other,
            other_quic,
            pki: ca.issue(&format!("peer-{name}"), &[name]),
            ca_path: ca.ca_path.clone(),
            temporary_secret: format!("{name}-temporary-secret"),
            permanent_secret: format!("{name}-permanent-secret"),
        };
        let plan_a = plan(
            "a.test",
            free_port_on([127, 0, 0, 7]),
            quic_a,
            "b.test",
            quic_b,
        );
        let plan_b = plan(
            "b.test",
            free_port_on([127, 0, 0, 8]),
            quic_b,
            "a.test",
            quic_a,
        );

        let dovecot_a = Dovecot::start().expect("Dovecot A");
        let dovecot_b = Dovecot::start().expect("Dovecot B");
        let mut postfix_b =
            Postfix::start(PostfixOptions::new("b.test", plan_b.hook).sasl(dovecot_b.auth_addr()))
                .expect("Postfix B");
        let postfix_a = Postfix::start(
            PostfixOptions::new("a.test", plan_a.hook)
                .route("b.test", postfix_b.mx_addr())
                .sasl(dovecot_a.auth_addr()),
        )
        .expect("Postfix A");
        postfix_b
            .set_relay_routes(vec![("a.test".to_owned(), postfix_a.mx_addr())])
            .expect("Postfix B routes a.test");
        let proxy_a = start_proxy(&plan_a, &dovecot_a, &postfix_a).await;
        let proxy_b = start_proxy(&plan_b, &dovecot_b, &postfix_b).await;
        let domain = |plan: Plan, dovecot, postfix, proxy| Domain {
            name: plan.name,
            dovecot,
            postfix,
            proxy,
            peer_pki: plan.pki,
            quic: plan.quic,
            temporary_secret: plan.temporary_secret,
            permanent_secret: plan.permanent_secret,
        };
        Peered {
            a: domain(plan_a, dovecot_a, postfix_a, proxy_a),
            b: domain(plan_b, dovecot_b, postfix_b, proxy_b),
            ca,
            dir,
        }
    }

    pub fn postfixes(&self) -> [&Postfix; 2] {
        [&self.a.postfix, &self.b.postfix]
    }
}

impl Domain {
    /// Turns COI on for `user` with filter `filter`, through this domain's proxy.
    pub async fn enable_coi(&self, user: &str, filter: &str) {
        enable_coi(&self.proxy, user, filter).await;
    }

    /// A submission client of this domain's proxy, authenticated as `user`.
    pub async fn logged_in(&self, user: &str) -> LineClient {
        let addr = self.proxy.submission.expect("submission listeners").plain;
        let mut client = smtp::connect(addr).await.expect("connect");
        smtp::expect(&mut client, "EHLO client.test", 250)
            .await
            .expect("EHLO");
        let password = self.dovecot.password_of(user).expect("test user");
        let reply = smtp::auth_plain(&mut client, user, password)
            .await
            .expect("AUTH");
        assert_eq!(reply.code, 235, "AUTH {user}: {}", reply.text());
        client
    }

    /// Sends `text` from `user`@this domain to `to` in a session of its own; returns the
    /// reply to the end of data (which must be 250) and how long it took from the end of
    /// data on.
    pub async fn send(&self, user: &str, to: &[&str], text: &str) -> (smtp::Reply, Duration) {
        let mut client = self.logged_in(user).await;
        let from = format!("{user}@{}", self.name);
        smtp::start_data(&mut client, &from, to)
            .await
            .expect("MAIL, RCPT and DATA");
        let started = std::time::Instant::now();
        client
            .write_raw(format!("{text}\r\n.\r\n").as_bytes())
            .await
            .expect("message");
        let reply = smtp::read_reply(&mut client)
            .await
            .expect("end of data reply");
        let elapsed = started.elapsed();
        assert_eq!(reply.code, 250, "{}", reply.text());
        smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");
        (reply, elapsed)
    }

    /// The number of messages in `user`'s `mailbox` (0 if it does not exist).
    pub async fn count(&self, user: &str, mailbox: &str) -> u32 {
        let mut client = imap_login(&self.dovecot, user).await;
        count_in(&mut client, mailbox).await
    }

    /// Polls until `user`'s `mailbox` holds `want` messages (exactly).
    pub async fn wait_for(&self, user: &str, mailbox: &str, want: u32, postfixes: &[&Postfix]) {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let have = self.count(user, mailbox).await;
            if have >= want {
                assert_eq!(have, want, "{user}@{}'s {mailbox}", self.name);
                return;
            }
            if std::time::Instant::now() > deadline {
                let logs: Vec<String> = postfixes.iter().map(|p| p.log_contents()).collect();
                panic!(
                    "{user}@{}'s {mailbox}: {have} messages, not {want}\n{}\n{}",
                    self.name,
                    self.dovecot.log_contents(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `EXAMINE`'s EXISTS count of `mailbox`, 0 if it does not exist.
pub async fn count_in(client: &mut LineClient, mailbox: &str) -> u32 {
    let lines = client
        .imap("e", &format!("EXAMINE {mailbox}"))
        .await
        .expect("EXAMINE");
    if tagged_status(&lines) != "OK" {
        return 0;
    }
    lines
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
        .unwrap_or(0)
}

/// A chat message (Chat-Version) from `from` to `to` with Message-ID `<id>`.
pub fn chat(from: &str, to: &str, id: &str, text: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: chat\r\nChat-Version: 1.0\r\nMessage-ID: <{id}>\r\n\r\n{text}"
    )
}

// === for tests that speak to a proxy as a peer themselves (tests/peer_security.rs) ===

impl Domain {
    /// This domain's token secrets, as its proxy has them: a token minted with them
    /// verifies at this domain's proxy (and nowhere else).
    pub fn token_secrets(&self) -> coi_proxy::coi::token::Secrets {
        use coi_proxy::coi::token::{Secret, Secrets};
        let secret = |s: &str| Secret::new(s.to_owned()).expect("a non-empty secret");
        Secrets {
            temporary: vec![secret(&self.temporary_secret)],
            permanent: vec![secret(&self.permanent_secret)],
        }
    }
}

/// Polls `postfix`'s mail log (without blocking the runtime, which also runs the
/// in-process proxies) until one line contains every one of `needles`; returns it.
/// Panics with the log after [`DEADLINE`].
pub async fn wait_for_log_line(postfix: &Postfix, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let log = postfix.log_contents();
        if let Some(line) = log
            .lines()
            .find(|line| needles.iter().all(|needle| line.contains(needle)))
        {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line of {} with all of {needles:?} within {DEADLINE:?}\n{log}",
            postfix.domain()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until every queue of `postfixes` is empty (without blocking the runtime);
/// panics with the queues and logs after [`DEADLINE`].
pub async fn wait_queues_empty(postfixes: &[&Postfix]) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let queued: usize = postfixes
            .iter()
            .map(|p| p.queue_ids().expect("postqueue").len())
            .sum();
        if queued == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            let report: Vec<String> = postfixes
                .iter()
                .map(|p| {
                    format!(
                        "--- {} ---\n{}\n{}",
                        p.domain(),
                        p.mailq().unwrap_or_default(),
                        p.log_contents()
                    )
                })
                .collect();
            panic!(
                "{queued} messages still queued after {DEADLINE:?}\n{}",
                report.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Domain {
    /// Polls until `user`'s first contact holds a `COI-TokenOut` (a token written in the
    /// background after a delivery over a link).
    pub async fn wait_for_token_out(&self, user: &str) {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let mut client = imap_login(&self.dovecot, user).await;
            if count_in(&mut client, "COI/Contacts").await > 0 {
                let lines = client
                    .imap("f", "FETCH 1 BODY.PEEK[HEADER.FIELDS (COI-TokenOut)]")
                    .await
                    .expect("FETCH");
                if lines.iter().any(|l| l.starts_with("COI-TokenOut: ")) {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{user}@{} holds no COI-TokenOut",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
