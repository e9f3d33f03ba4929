//! Mail domains on loopback, built from the other support modules.
//!
//! - One domain's inbound side: a Dovecot and the proxy's delivery hook in front of its
//!   LMTP, with the mailbox writer logging in as its master user ([`hook_proxy`]).
//! - Two domains ([`World`]): a.test (Dovecot A, Postfix A with SASL by Dovecot A that
//!   relays b.test to Postfix B, proxy A with the submission front in front of Postfix
//!   A's submission listener) and b.test (Dovecot B, Postfix B's MX delivering by LMTP to
//!   proxy B's hook in front of Dovecot B, or straight to Dovecot B).
//!
//! COI is turned on per user through a proxy's IMAP front ([`enable_coi`]), which also
//! drops the hook's cached configuration of that user.

#![allow(dead_code)]

use std::net::SocketAddr;

use super::dovecot::Dovecot;
use super::io::{tagged_status, LineClient};
use super::postfix::{smtp, Postfix, PostfixOptions};
use super::proxy::{DeliveryOptions, DeliveryTuning, Options, Proxy, SubmissionOptions};

// === one domain's inbound side ===

/// Dovecot's master user and password, for the mailbox writer.
pub fn master_of(dovecot: &Dovecot) -> (String, String) {
    (
        dovecot.master_user().to_owned(),
        dovecot.master_password().to_owned(),
    )
}

/// Options for a proxy with the delivery hook in front of `lmtp` (the mailbox writer
/// logging in with `master`; `None`: everything by LMTP) and plaintext LOGIN allowed on
/// its IMAP front.
pub fn hook_options(lmtp: SocketAddr, master: Option<(String, String)>) -> Options {
    Options {
        delivery: Some(DeliveryOptions {
            upstream: lmtp,
            master,
            spool_memory_bytes: None,
            address: None,
        }),
        plaintext_auth: true,
        ..Options::default()
    }
}

/// The proxy in front of `dovecot`: IMAP front (plaintext LOGIN allowed), the delivery
/// hook in front of its LMTP with `tuning`, and the mailbox writer as its master user.
pub async fn hook_proxy(dovecot: &Dovecot, tuning: DeliveryTuning) -> Proxy {
    Proxy::start(
        dovecot.imap_addr(),
        Options {
            delivery_tuning: tuning,
            ..hook_options(dovecot.lmtp_addr(), Some(master_of(dovecot)))
        },
    )
    .await
}

/// The METADATA path of the COI configuration (COI-PROTOCOL §2.6).
pub const COI_CONFIG: &str = "/private/vendor/vendor.dovecot/coi/config";

/// The IMAP command (without a tag) that turns COI on with message filter `filter`.
pub fn enable_coi_command(filter: &str) -> String {
    format!(
        "SETMETADATA \"\" ({COI_CONFIG}/enabled \"yes\" {COI_CONFIG}/message-filter \"{filter}\")"
    )
}

/// Turns COI on for `user` with message filter `filter` (`active`, `none`) through
/// `proxy`'s IMAP front (plaintext LOGIN).
pub async fn enable_coi(proxy: &Proxy, user: &str, filter: &str) {
    let mut client = LineClient::logged_in(proxy.plain, user).await;
    let lines = client
        .imap("m", &enable_coi_command(filter))
        .await
        .expect("SETMETADATA");
    assert_eq!(tagged_status(&lines), "OK", "{lines:?}");
}

// === two domains ===

/// How Postfix B delivers b.test's mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// By LMTP to proxy B's delivery hook, in front of Dovecot B.
    Hook,
    /// By LMTP to Dovecot B; there is no proxy B.
    Dovecot,
}

/// a.test and b.test: see the module documentation.
pub struct World {
    pub dovecot_a: Dovecot,
    pub dovecot_b: Dovecot,
    pub postfix_a: Postfix,
    pub postfix_b: Postfix,
    /// The submission front for a.test, in front of Postfix A.
    pub proxy_a: Proxy,
    /// The delivery hook for b.test (with [`Inbound::Hook`]).
    pub proxy_b: Option<Proxy>,
}

/// Builds a [`World`]: [`World::builder`].
pub struct WorldBuilder {
    inbound: Inbound,
    submission: Box<dyn FnOnce(&mut SubmissionOptions)>,
}

impl WorldBuilder {
    /// How Postfix B delivers (default: through proxy B's hook).
    pub fn inbound(mut self, inbound: Inbound) -> Self {
        self.inbound = inbound;
        self
    }

    /// Changes proxy A's submission front from the test defaults.
    pub fn submission(mut self, tweak: impl FnOnce(&mut SubmissionOptions) + 'static) -> Self {
        self.submission = Box::new(tweak);
        self
    }

    /// Starts everything; the error names what did not start.
    pub async fn try_start(self) -> Result<World, String> {
        let dovecot_a = Dovecot::start().map_err(|e| format!("Dovecot A: {e}"))?;
        let dovecot_b = Dovecot::start().map_err(|e| format!("Dovecot B: {e}"))?;
        let proxy_b = match self.inbound {
            Inbound::Hook => Some(hook_proxy(&dovecot_b, DeliveryTuning::default()).await),
            Inbound::Dovecot => None,
        };
        let lmtp_b = match &proxy_b {
            Some(proxy) => proxy.delivery.expect("proxy B's hook listener"),
            None => dovecot_b.lmtp_addr(),
        };
        let postfix_b = Postfix::start(PostfixOptions::new("b.test", lmtp_b))
            .map_err(|e| format!("Postfix B: {e}"))?;
        let postfix_a = Postfix::start(
            PostfixOptions::new("a.test", dovecot_a.lmtp_addr())
                .route("b.test", postfix_b.mx_addr())
                .sasl(dovecot_a.auth_addr()),
        )
        .map_err(|e| format!("Postfix A: {e}"))?;
        let mut submission = SubmissionOptions::new(postfix_a.submission_addr(), "a.test");
        (self.submission)(&mut submission);
        let proxy_a = Proxy::start(
            dovecot_a.imap_addr(),
            Options {
                submission: Some(submission),
                ..Options::default()
            },
        )
        .await;
        Ok(World {
            dovecot_a,
            dovecot_b,
            postfix_a,
            postfix_b,
            proxy_a,
            proxy_b,
        })
    }

    pub async fn start(self) -> World {
        self.try_start().await.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl World {
    /// Both domains with the defaults: Postfix B delivers through proxy B's hook.
    pub async fn start() -> World {
        Self::builder().start().await
    }

    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            inbound: Inbound::Hook,
            submission: Box::new(|_| {}),
        }
    }

    /// Proxy B (the world must have [`Inbound::Hook`]).
    pub fn proxy_b(&self) -> &Proxy {
        self.proxy_b
            .as_ref()
            .expect("proxy B: this world delivers to Dovecot B directly")
    }

    /// Proxy A's plaintext submission listener.
    pub fn submission(&self) -> SocketAddr {
        self.proxy_a.submission.expect("submission listeners").plain
    }

    pub fn postfixes(&self) -> [&Postfix; 2] {
        [&self.postfix_a, &self.postfix_b]
    }

    /// Turns COI on for `user`@b.test with message filter `filter`, through proxy B.
    pub async fn enable_coi(&self, user: &str, filter: &str) {
        enable_coi(self.proxy_b(), user, filter).await;
    }

    /// A client of proxy A's submission front that said EHLO and authenticated as
    /// `user`@a.test (AUTH PLAIN, checked by Postfix A through Dovecot A).
    pub async fn logged_in(&self, user: &str) -> LineClient {
        let mut client = smtp::connect(self.submission()).await.expect("connect");
        smtp::expect(&mut client, "EHLO client.test", 250)
            .await
            .expect("EHLO");
        let password = self.dovecot_a.password_of(user).expect("test user");
        let reply = smtp::auth_plain(&mut client, user, password)
            .await
            .expect("AUTH");
        assert_eq!(reply.code, 235, "AUTH {user}: {}", reply.text());
        client
    }

    /// Sends one message from `user`@a.test to `to` through proxy A in a session of its
    /// own ([`send`]); the end of data and QUIT must succeed. Returns the reply to the end
    /// of data.
    pub async fn send_from(&self, user: &str, to: &[&str], text: &str) -> smtp::Reply {
        let mut client = self.logged_in(user).await;
        let reply = send(&mut client, &format!("{user}@a.test"), to, text).await;
        assert_eq!(reply.code, 250, "{}", reply.text());
        smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");
        reply
    }
}

/// Sends one message in `client`'s session: MAIL, the RCPTs and DATA (each must be
/// accepted), then `text` as it is (CRLF lines, dot-stuffed by the caller) and CRLF "."
/// CRLF. Returns the reply to the end of data, whatever it is.
pub async fn send(client: &mut LineClient, from: &str, to: &[&str], text: &str) -> smtp::Reply {
    smtp::start_data(client, from, to)
        .await
        .expect("MAIL, RCPT and DATA");
    client
        .write_raw(format!("{text}\r\n.\r\n").as_bytes())
        .await
        .expect("message");
    smtp::read_reply(client).await.expect("end of data reply")
}
