//! SECURITY-CASES.md §A (end of data and line endings), §B (STARTTLS and TLS), §D (SMTP
//! policy and resource abuse) and §4 (durability) against the submission front: the
//! in-process proxy in front of a real Postfix submission listener (SASL checked by
//! Dovecot, mail for `a.test` delivered into Dovecot by LMTP), and raw byte clients that
//! say exactly what an attacker would.
//!
//! Every case runs twice ([`DELIVERIES`]): all bytes in one write, and one byte per write
//! (TCP_NODELAY, so usually one segment per byte). Payloads of hundreds of kilobytes or
//! more are the exception: their head follows the delivery, the bulk goes in 64 KiB
//! writes.
//!
//! What must not reach Postfix is checked on Postfix: its log (an aborted upstream DATA
//! is a `lost connection after DATA`, every upstream session ends in a `disconnect` line
//! that counts its commands, every queued message has a qmgr `from=<` line), its queue and
//! the mailboxes. The log is written asynchronously, so absence is never read from it
//! alone: a test that claims "nothing was queued" sends one ordinary marker message
//! afterwards and, once that is delivered and the queue is empty, requires it to be the
//! only message Postfix ever queued and the only mail in the mailbox
//! ([`World::assert_only_the_marker_arrives`]).
//!
//! Upstream faults a real Postfix cannot produce on cue (silence, a close or a reset
//! after the end of data, a 452 or 554 there) come from [`Stub`], a scripted SMTP server
//! in this process that records what it receives. The crash case runs the `coi-proxy`
//! binary and kills it with SIGKILL.
//!
//! Memory cases read this process's RSS (the proxy runs in-process); they hold the memory
//! gate exclusively ([`exclusive_gate`]), so no other test of this binary allocates
//! meanwhile.
//!
//! # Cases
//!
//! | case | test |
//! |---|---|
//! | A1 LF.CRLF smuggle | [`lf_dot_crlf_smuggling_gets_one_550_and_nothing_is_queued`] |
//! | A2 LF.LF smuggle | [`lf_dot_lf_smuggling_gets_one_550_and_nothing_is_queued`] |
//! | A4 bare LF / CR in a header | [`bare_lf_or_cr_in_a_header_gets_550_and_nothing_is_forwarded`] |
//! | A5 NUL in a command / the body | [`nul_in_mail_from_gets_501_and_nul_in_the_body_gets_550`] |
//! | A6 dot-stuffing round trip | [`dot_stuffed_lines_arrive_byte_identical`], [`dot_stuffing_is_redone_on_the_upstream_wire`] |
//! | A7 long lines | [`long_command_line_gets_500_5_5_2_and_its_tail_never_runs`], [`long_body_line_gets_554_5_6_0_and_nothing_is_queued`], [`ten_megabyte_lines_get_500_and_554_with_flat_memory`] |
//! | A8 Postfix exemption trap | [`postfix_itself_accepts_the_smuggling_that_the_proxy_refuses`] |
//! | A rule: bare LF in a command | [`bare_lf_in_a_command_gets_421_and_close`] |
//! | B9 STARTTLS injection | [`starttls_with_a_pipelined_command_gets_220_then_close`] |
//! | B11 state reset | [`pre_tls_state_is_forgotten_after_starttls`] |
//! | B13 second STARTTLS, after AUTH | [`second_starttls_and_starttls_after_auth_are_refused`] |
//! | B14 old protocols | [`old_tls_versions_are_refused_with_an_alert_and_no_plaintext`], [`openssl_tls_1_1_client_is_refused_with_an_alert`] |
//! | B15 plaintext on 465 | [`plaintext_on_the_implicit_tls_port_is_closed_without_a_reply`] |
//! | D35 BDAT | [`bdat_gets_502_and_close_without_running_the_chunk`] |
//! | D36 SIZE lie | [`size_lie_gets_552_5_3_4_after_the_end_of_data_and_nothing_is_queued`] |
//! | D37 recipient flood | [`recipients_beyond_the_limit_get_452_4_5_3_and_never_reach_postfix`] |
//! | D38 slowloris | [`slow_client_before_auth_is_closed_at_the_pre_auth_deadline_holding_no_postfix_connection`], [`slow_auth_exchange_is_closed_at_the_pre_auth_deadline`], [`slow_commands_and_data_after_auth_are_closed_at_the_command_deadline`], [`stalled_tls_handshakes_are_closed_at_the_handshake_deadline`] |
//! | D39 connection flood | [`session_flood_gets_421_4_7_0_and_established_sessions_keep_working`] |
//! | D40 aggregate memory | [`concurrent_large_messages_leave_memory_flat`] |
//! | §4 rule 2 (cases 62, 63) | [`postfix_silent_closed_or_reset_at_the_end_of_data_gives_451_4_3_0_never_250`], [`postfix_refusals_at_the_end_of_data_are_relayed_in_their_class`] |
//! | §4 rule 8 graceful stop | [`graceful_stop_lets_data_finish_then_says_421_4_3_2`] |
//! | §4 crash table, rule 1 | [`a_killed_proxy_never_leaves_a_250`] |
//! | AUTH edge cases | [`auth_cancel_overlong_response_and_unknown_mechanism`] |
//!
//! # Not applicable here, or covered elsewhere
//!
//! - 3 and 33 are gaps in the catalogue's numbering, not cases.
//! - 10, 17–30 (IMAP) and 42–58 (tokens, addresses, QUIC) concern other components;
//!   tests/imap_security.rs covers §B/§C for the IMAP front.
//! - 12 (AUTH before TLS): tests/submission.rs
//!   `mail_before_auth_and_auth_before_tls_are_refused`; its 587 form is one step of
//!   [`pre_tls_state_is_forgotten_after_starttls`].
//! - 16 (response injection into the proxy's own STARTTLS): the proxy never uses
//!   STARTTLS towards Postfix (plain loopback or implicit TLS, `net::connect`), so there
//!   is no client-side STARTTLS to inject into.
//! - 31 (open relay on port 25) and 34 (early talker) are port-25 (MX front, postscreen)
//!   defences: submission needs AUTH before MAIL (530 before Postfix is asked, see
//!   tests/submission.rs), and the front greets at once, so there is no pre-greeting
//!   window.
//! - 32 (sender spoofing after AUTH): tests/submission.rs
//!   `the_envelope_sender_and_from_must_belong_to_the_authenticated_user`.
//! - 38 in DATA: the deadline applies to each read there (RFC 5321 §4.5.3.2.5's timer
//!   per data block), so a message trickled faster than `command` runs until
//!   `max_message_bytes`; the test covers a message that stalls. Before AUTH and for
//!   command lines after it the deadline does not move with activity.
//! - 39 per-IP cap: the front has one session cap per listener and no per-IP cap; the
//!   flood test connects from several source addresses to show that the cap holds
//!   whatever the source.
//! - 40 "over budget → 452 4.3.1": the front never holds a message (bodies are
//!   streamed; only the header block, at most 256 KiB, one line and one read are
//!   buffered per session), so there is no global byte budget to exceed; the test
//!   instead runs concurrent large messages and requires RSS to stay flat.
//! - §4 rules 4–7: QUIC and its deduplication do not exist on the submission path, the
//!   proxy makes one attempt per message (so one Message-ID), and rule 7 is IMAP's.
//! - Crash points between Postfix's 250 and the relayed 250 are not reachable without
//!   failpoints; the crash test covers "before the client's final dot" and "after the
//!   dot went to Postfix, before its reply".

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use support::dovecot::Dovecot;
use support::io::STEP;
use support::mailbox::{fetch_message, imap_login, prime_inbox, wait_for_inbox};
use support::memory::{exclusive_gate, send_bulk, shared_gate, MemoryGate, MemoryProbe};
use support::postfix::{smtp, Postfix, PostfixOptions};
use support::proxy::{free_port_on, Options, Proxy, ProxyProcess, SubmissionOptions};
use support::raw::{
    assert_dropped_without_reply, assert_hello_refused, assert_only_an_alert,
    assert_openssl_tls_1_1_refused, command, escape, expect, greeted, is_last_reply_line,
    legacy_client_hello, lines_of, openssl, replies_in, replies_to_close, reply, sent, statuses,
    Delivery, Plain, RawClient, Reply, Tls, DELIVERIES, LEGACY_HELLOS,
};
use support::stub::{Protocol, Script, Stub, StubWorld};

// === set-up ===

/// The mail domain of the world (Postfix delivers it to the Dovecot users alice, bob
/// and carol).
const DOMAIN: &str = "a.test";

/// A private Dovecot and Postfix for `a.test`, and the proxy in front of Postfix's
/// submission listener.
struct World {
    dovecot: Dovecot,
    postfix: Postfix,
    proxy: Proxy,
    _gate: MemoryGate,
}

impl World {
    async fn start(tweak: impl FnOnce(&mut SubmissionOptions)) -> World {
        Self::with_gate(tweak, shared_gate().await).await
    }

    /// For memory measurements: no other test of this binary runs meanwhile.
    async fn exclusive(tweak: impl FnOnce(&mut SubmissionOptions)) -> World {
        Self::with_gate(tweak, exclusive_gate().await).await
    }

    async fn with_gate(tweak: impl FnOnce(&mut SubmissionOptions), gate: MemoryGate) -> World {
        let dovecot = Dovecot::start().expect("dovecot starts");
        let postfix = Postfix::start(
            PostfixOptions::new(DOMAIN, dovecot.lmtp_addr()).sasl(dovecot.auth_addr()),
        )
        .expect("postfix starts");
        let proxy = proxy_in_front_of(dovecot.imap_addr(), postfix.submission_addr(), tweak).await;
        // A first delivery creates the INBOX; creating it now keeps the mailbox polling
        // from racing with LMTP (see support::mailbox::wait_for_inbox).
        for user in ["alice", "bob", "carol"] {
            prime_inbox(&dovecot, user).await;
        }
        World {
            dovecot,
            postfix,
            proxy,
            _gate: gate,
        }
    }

    fn plain(&self) -> SocketAddr {
        self.proxy.submission.expect("submission listeners").plain
    }

    fn starttls(&self) -> SocketAddr {
        self.proxy
            .submission
            .expect("submission listeners")
            .starttls
    }

    fn implicit(&self) -> SocketAddr {
        self.proxy
            .submission
            .expect("submission listeners")
            .implicit
    }

    fn ca(&self) -> &Path {
        &self.proxy.pki.ca_path
    }

    // --- Postfix, seen through its log and queue ---

    fn log(&self) -> String {
        self.postfix.log_contents()
    }

    /// Log lines containing `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until at least `want` log lines contain `needle`, then requires exactly
    /// `want`.
    async fn wait_count(&self, needle: &str, want: usize) {
        let deadline = Instant::now() + STEP * 2;
        loop {
            let have = self.count(needle);
            if have >= want {
                assert_eq!(have, want, "lines with {needle:?}:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{have} of {want} lines with {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `disconnect` lines of the submission listener for sessions that
    /// authenticated with AUTH (the proxy's upstream connections for clients; the
    /// proxy's EHLO probe does not authenticate).
    fn authenticated_upstream_sessions(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("postfix/submission/smtpd[")
                    && l.contains(": disconnect from ")
                    && l.contains(" auth=")
            })
            .map(str::to_owned)
            .collect()
    }

    async fn wait_authenticated_upstream_sessions(&self, want: usize) -> Vec<String> {
        let deadline = Instant::now() + STEP * 2;
        loop {
            let sessions = self.authenticated_upstream_sessions();
            if sessions.len() >= want {
                assert_eq!(sessions.len(), want, "{}", self.log());
                return sessions;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {want} upstream sessions ended:\n{}",
                sessions.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` authenticated upstream sessions have ended, and requires that none
    /// of them saw a MAIL.
    async fn assert_no_mail_reached_postfix(&self, n: usize) {
        for session in &self.wait_authenticated_upstream_sessions(n).await {
            assert!(
                !session.contains(" mail="),
                "a MAIL reached Postfix: {session}"
            );
        }
    }

    /// Connections to the submission listener that Postfix has not seen end yet.
    fn open_upstream_connections(&self) -> i64 {
        let log = self.log();
        let submission = log
            .lines()
            .filter(|l| l.contains("postfix/submission/smtpd["));
        let (mut open, mut closed) = (0, 0);
        for line in submission {
            if line.contains(": connect from ") {
                open += 1;
            } else if line.contains(": disconnect from ") {
                closed += 1;
            }
        }
        open - closed
    }

    async fn wait_no_open_upstream_connection(&self) {
        let deadline = Instant::now() + STEP * 2;
        while self.open_upstream_connections() != 0 {
            assert!(
                Instant::now() < deadline,
                "an upstream connection stays open:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// qmgr's `from=<…>` lines: one per message Postfix queued.
    fn queued(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("/qmgr[") && l.contains(": from=<"))
            .map(str::to_owned)
            .collect()
    }

    fn wait_queue_empty(&self) {
        tokio::task::block_in_place(|| {
            self.postfix
                .wait_queue_empty(STEP * 2)
                .expect("Postfix's queue drains")
        });
    }

    /// Proves that what happened before left nothing in Postfix: an ordinary message
    /// from alice to bob through the proxy, and once it is in bob's INBOX and the queue
    /// is empty, it must be the only message Postfix ever queued and bob's only mail.
    async fn assert_only_the_marker_arrives(&self) {
        let mut c = logged_in(self.plain(), "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        c.send(
            b"Subject: marker\r\nMessage-ID: <marker@a.test>\r\n\r\nmarker\r\n.\r\n",
            Delivery::Whole,
        )
        .await
        .expect("send the marker");
        let r = reply(&mut c).await;
        assert_eq!(r.status(), "250 2.0.0", "the marker: {r:?}");
        let id = r.queue_id().expect("a queue id");
        expect(&mut c, "QUIT", "221").await;
        wait_for_inbox(&self.dovecot, "bob", 1, &[&self.postfix]).await;
        self.wait_queue_empty();
        let queued = self.queued();
        assert!(
            queued.len() == 1 && queued[0].contains(&format!("{id}: from=<alice@a.test>")),
            "only the marker may have been queued: {queued:#?}\n{}",
            self.log()
        );
        let mut imap = imap_login(&self.dovecot, "bob").await;
        let message = fetch_message(&mut imap, "INBOX", 1).await;
        assert!(
            message.iter().any(|l| l == "Subject: marker"),
            "bob's only message is the marker: {message:#?}"
        );
    }
}

/// The proxy with a submission front in front of `submission_upstream`.
async fn proxy_in_front_of(
    imap_upstream: SocketAddr,
    submission_upstream: SocketAddr,
    tweak: impl FnOnce(&mut SubmissionOptions),
) -> Proxy {
    let mut submission = SubmissionOptions::new(submission_upstream, DOMAIN);
    tweak(&mut submission);
    Proxy::start(
        imap_upstream,
        Options {
            submission: Some(submission),
            ..Options::default()
        },
    )
    .await
}

/// A proxy for cases that never reach an upstream (TLS before any command): both
/// upstreams point at a port nobody listens on.
async fn proxy_without_upstream(tweak: impl FnOnce(&mut SubmissionOptions)) -> Proxy {
    let unused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    proxy_in_front_of(unused, unused, tweak).await
}

// === SMTP over raw clients ===

/// A TCP connection from the loopback address `source` (e.g. 127.0.0.10).
async fn connect_from(addr: SocketAddr, source: [u8; 4]) -> Plain {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let stream = support::io::step("connect", socket.connect(addr))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    RawClient::new(stream)
}

/// The SASL PLAIN response for a test user (password `secret-<user>`).
fn plain_credentials(user: &str) -> String {
    smtp::plain_response("", user, &format!("secret-{user}"))
}

/// Greeted, EHLO and AUTH PLAIN as `user` on a listener that allows it.
async fn logged_in(addr: SocketAddr, user: &str) -> Plain {
    let mut c = greeted(addr).await;
    authenticate(&mut c, user).await;
    c
}

async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>, user: &str) {
    expect(c, "EHLO client.test", "250").await;
    let r = command(c, &format!("AUTH PLAIN {}", plain_credentials(user))).await;
    assert_eq!(r.status(), "235 2.7.0", "AUTH {user}: {r:?}");
}

/// MAIL FROM alice, RCPT TO each of `to`, DATA: ready for the message.
async fn start_data<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>, to: &[&str]) {
    expect(c, "MAIL FROM:<alice@a.test>", "250").await;
    for rcpt in to {
        expect(c, &format!("RCPT TO:<{rcpt}>"), "250").await;
    }
    expect(c, "DATA", "354").await;
}

/// Waits up to `pace` on the socket: `None` if nothing arrived (the client's pause),
/// the reply if the proxy spoke or closed meanwhile.
async fn quiet_for<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    pace: Duration,
) -> Option<Reply> {
    let arrived = c
        .read_until_bytes(pace, |bytes| {
            bytes.ends_with(b"\r\n")
                && lines_of(bytes)
                    .last()
                    .is_some_and(|l| is_last_reply_line(l))
        })
        .await
        .is_ok();
    if arrived || c.ended().is_some() {
        let bytes = c.take_inbox();
        return Some(replies_in(&bytes).into_iter().next().unwrap_or(Reply {
            lines: vec![format!("(closed; received {})", escape(&bytes))],
        }));
    }
    assert!(
        c.buffered().is_empty(),
        "half a reply after {pace:?}: {}",
        escape(c.buffered())
    );
    None
}

/// A session on the STARTTLS listener after EHLO, STARTTLS and the handshake.
async fn after_starttls(addr: SocketAddr, ca: &Path) -> Tls {
    let mut c = greeted(addr).await;
    expect(&mut c, "EHLO client.test", "250").await;
    let r = command(&mut c, "STARTTLS").await;
    assert_eq!(r.status(), "220 2.0.0", "{r:?}");
    c.upgrade(ca).await.expect("TLS handshake after STARTTLS")
}

/// A session on the implicit-TLS listener, greeted.
async fn implicit_tls(addr: SocketAddr, ca: &Path) -> Tls {
    let mut c = RawClient::connect_tls(addr, ca)
        .await
        .expect("implicit TLS connect");
    let greeting = reply(&mut c).await;
    assert_eq!(greeting.code(), 220, "{greeting:?}");
    c
}

/// What SMTP says in plaintext: none of it may come back for a refused TLS handshake.
const SMTP_WORDS: &[&str] = &["220", "421", "250", "ESMTP", "5.", "4."];

// === memory ===

/// Proxy RSS growth allowed while it refuses or streams tens of megabytes: a few read
/// buffers, one line and one header block per session, far below what is sent.
const GROWTH_LIMIT_KIB: u64 = 6 * 1024;

// === §A end of data and line endings ===

/// A1: `\n.\r\n` inside the body, then a second transaction.
const SMUGGLE_LF_DOT_CRLF: &[u8] = b"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@a.test>\r\nRCPT TO:<bob@a.test>\r\nDATA\r\nFrom: ceo@a.test\r\n\r\nevil\r\n.\r\n";

/// A2: `\n.\n` inside the body, then a second transaction.
const SMUGGLE_LF_DOT_LF: &[u8] = b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@a.test>\r\nRCPT TO:<bob@a.test>\r\nDATA\r\nFrom: ceo@a.test\r\n\r\nevil\r\n.\r\n";

/// A4: a bare LF inside a header line.
const BARE_LF_IN_HEADER: &[u8] = b"Subject: hi\nX-Injected: 1\r\n\r\nbody\r\n.\r\n";

/// A4: a bare CR inside a header line.
const BARE_CR_IN_HEADER: &[u8] = b"Subject: hi\rX-Injected: 1\r\n\r\nbody\r\n.\r\n";

/// Sends `message` as the data of a transaction from alice to bob and returns every
/// reply up to the client's QUIT: the proxy must answer the whole message once.
async fn one_message_attempt(world: &World, message: &[u8], delivery: Delivery) -> Vec<Reply> {
    let mut c = logged_in(world.plain(), "alice").await;
    start_data(&mut c, &["bob@a.test"]).await;
    c.send(message, delivery)
        .await
        .unwrap_or_else(|e| panic!("{delivery:?}: send the message: {e}"));
    // QUIT fences the replies: everything before its 221 answers the message.
    c.send(b"QUIT\r\n", Delivery::Whole).await.expect("QUIT");
    replies_to_close(&mut c, STEP).await
}

/// A smuggling or framing attack must end in exactly one refusal of the one message
/// (then QUIT's 221), with Postfix's transaction aborted.
async fn assert_one_refusal(world: &World, message: &[u8], status: &str) {
    for delivery in DELIVERIES {
        let replies = one_message_attempt(world, message, delivery).await;
        assert_eq!(
            statuses(&replies),
            [status, "221 2.0.0"],
            "{delivery:?} {}: {replies:#?}",
            escape(message)
        );
    }
}

/// A smuggling payload in a world of its own: one 550 5.6.0 in both forms, and Postfix
/// sees each transaction aborted (one MAIL, one RCPT, an unfinished DATA), never a
/// second MAIL; nothing is queued.
async fn assert_smuggling_refused(payload: &[u8]) {
    let world = World::start(|_| {}).await;
    assert_one_refusal(&world, payload, "550 5.6.0").await;
    world.wait_count("lost connection after DATA", 2).await;
    let sessions = world.wait_authenticated_upstream_sessions(2).await;
    for session in &sessions {
        assert!(
            session.contains(" mail=1 rcpt=1 data=0/1 "),
            "one MAIL, one RCPT, an unfinished DATA: {session}"
        );
    }
    world.assert_only_the_marker_arrives().await;
}

/// A1: the LF.CRLF smuggle is one message with a bare LF: one 550 5.6.0, and Postfix
/// sees its transaction aborted, never a second MAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lf_dot_crlf_smuggling_gets_one_550_and_nothing_is_queued() {
    assert_smuggling_refused(SMUGGLE_LF_DOT_CRLF).await;
}

/// A2: the same with `\n.\n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lf_dot_lf_smuggling_gets_one_550_and_nothing_is_queued() {
    assert_smuggling_refused(SMUGGLE_LF_DOT_LF).await;
}

/// A4: a bare LF (or CR) inside the header: 550 5.6.0, and not one byte of the message
/// reached Postfix (the line is refused whole, before the header block could end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_or_cr_in_a_header_gets_550_and_nothing_is_forwarded() {
    let world = World::start(|_| {}).await;
    assert_one_refusal(&world, BARE_LF_IN_HEADER, "550 5.6.0").await;
    assert_one_refusal(&world, BARE_CR_IN_HEADER, "550 5.6.0").await;
    world
        .wait_count("lost connection after DATA (0 bytes)", 4)
        .await;
    world.assert_only_the_marker_arrives().await;
}

/// The §A rule for commands: a bare LF is no line end the proxy and Postfix could agree
/// on; the proxy says 421 and closes, and the would-be second command never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_in_a_command_gets_421_and_close() {
    let world = World::start(|_| {}).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(world.plain(), "alice").await;
        c.send_attack(b"NOOP\nMAIL FROM:<alice@a.test>\r\nRSET\r\n", delivery)
            .await;
        let replies = replies_to_close(&mut c, STEP).await;
        assert_eq!(
            statuses(&replies),
            ["421 4.7.0"],
            "{delivery:?}: {replies:#?}"
        );
    }
    world.assert_no_mail_reached_postfix(2).await;
}

/// A5: NUL in MAIL FROM is a syntax error that never reaches Postfix; NUL in the body
/// refuses the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_mail_from_gets_501_and_nul_in_the_body_gets_550() {
    let world = World::start(|_| {}).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(world.plain(), "alice").await;
        let r = sent(&mut c, b"MAIL FROM:<al\0ice@a.test>\r\n", delivery).await;
        assert_eq!(r.status(), "501 5.5.4", "{delivery:?}: {r:?}");
        // No transaction was opened anywhere.
        let r = command(&mut c, "RCPT TO:<bob@a.test>").await;
        assert_eq!(r.status(), "503 5.5.1", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221").await;
    }
    // The upstream sessions of those clients saw no MAIL at all.
    world.assert_no_mail_reached_postfix(2).await;
    assert_one_refusal(
        &world,
        b"Subject: nul\r\n\r\nbefore \0 after\r\n.\r\n",
        "550 5.6.0",
    )
    .await;
    world.wait_count("lost connection after DATA", 2).await;
    world.assert_only_the_marker_arrives().await;
}

/// A6: lines `.`, `..`, `.x`, `..x`, dot-stuffed by the client as RFC 5321 asks, are in
/// the mailbox exactly as meant (had the proxy not stuffed them again, Postfix would
/// have ended the message at the first `.`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_stuffed_lines_arrive_byte_identical() {
    let world = World::start(|_| {}).await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let header = format!(
            "From: alice@a.test\r\nTo: bob@a.test\r\nSubject: dots {i}\r\nMessage-ID: <dots.{i}@a.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\n"
        );
        let stuffed = format!("{header}..\r\n...\r\n..x\r\n...x\r\n. \r\nend\r\n.\r\n");
        let mut c = logged_in(world.plain(), "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        let r = sent(&mut c, stuffed.as_bytes(), delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221").await;
        wait_for_inbox(&world.dovecot, "bob", i as u32 + 1, &[&world.postfix]).await;
        let mut imap = imap_login(&world.dovecot, "bob").await;
        let message = fetch_message(&mut imap, "INBOX", i as u32 + 1)
            .await
            .join("\r\n");
        let start = message
            .find("From: alice@a.test")
            .expect("the client's header");
        let meant = format!("{header}.\r\n..\r\n.x\r\n..x\r\n \r\nend");
        assert_eq!(&message[start..], meant, "{delivery:?}");
    }
}

/// A7: a 600-byte command over a 512-byte limit gets 500 5.5.2 at the limit; the rest of
/// the line is dropped (never run as a command of its own) and the session goes on. A
/// line of exactly 512 bytes is still a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_command_line_gets_500_5_5_2_and_its_tail_never_runs() {
    let world = World::start(|s| s.max_line_bytes = Some(512)).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(world.plain(), "alice").await;
        let mut at_limit = b"NOOP ".to_vec();
        at_limit.resize(512, b'x');
        at_limit.extend_from_slice(b"\r\n");
        let r = sent(&mut c, &at_limit, delivery).await;
        assert_eq!(
            r.status(),
            "250 2.0.0",
            "{delivery:?}: a 512-byte line: {r:?}"
        );
        // A MAIL whose tail, cut at the limit, would read as `QUIT`.
        let mut long = b"MAIL FROM:<alice@a.test> ".to_vec();
        long.resize(514, b' ');
        long.extend_from_slice(b"QUIT ");
        long.resize(600, b'x');
        long.extend_from_slice(b"\r\nNOOP\r\n");
        c.send(&long, delivery).await.expect("send");
        let r = reply(&mut c).await;
        assert_eq!(r.status(), "500 5.5.2", "{delivery:?}: {r:?}");
        let r = reply(&mut c).await;
        assert_eq!(
            r.status(),
            "250 2.0.0",
            "{delivery:?}: the NOOP after it: {r:?}"
        );
        // The MAIL did not run.
        let r = command(&mut c, "RCPT TO:<bob@a.test>").await;
        assert_eq!(r.status(), "503 5.5.1", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221").await;
    }
    world.assert_no_mail_reached_postfix(2).await;
}

/// A7: a 1200-byte body line (the limit is RFC 5321's 1000 with CRLF) refuses the
/// message with 554 5.6.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_body_line_gets_554_5_6_0_and_nothing_is_queued() {
    let world = World::start(|_| {}).await;
    let mut message = b"Subject: long\r\n\r\nshort\r\n".to_vec();
    message.extend_from_slice(&[b'y'; 1200]);
    message.extend_from_slice(b"\r\nshort again\r\n.\r\n");
    assert_one_refusal(&world, &message, "554 5.6.0").await;
    world.wait_count("lost connection after DATA", 2).await;
    world.assert_only_the_marker_arrives().await;
}

/// A7 and RSS: a 10 MB command line without LF gets 500 5.5.2 at the limit and is
/// dropped as it streams; a 10 MB body line gets 554 5.6.0 at the end of data. Neither
/// is buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_lines_get_500_and_554_with_flat_memory() {
    let world = World::exclusive(|_| {}).await;
    const TOTAL: usize = 10 * 1024 * 1024;
    for delivery in DELIVERIES {
        // Before AUTH, as a command.
        let mut c = greeted(world.plain()).await;
        expect(&mut c, "EHLO client.test", "250").await;
        let mut probe = MemoryProbe::start();
        let mut head = b"NOOP ".to_vec();
        head.resize(4096, b'x');
        c.send(&head, delivery).await.expect("send the head");
        let written = send_bulk(&mut c, b"x", TOTAL - head.len(), Some(&mut probe)).await;
        assert_eq!(
            written,
            TOTAL - head.len(),
            "{delivery:?}: the proxy keeps reading"
        );
        c.send(b"\r\nNOOP\r\n", Delivery::Whole)
            .await
            .expect("end the line");
        let r = reply(&mut c).await;
        assert_eq!(r.status(), "500 5.5.2", "{delivery:?}: {r:?}");
        let r = reply(&mut c).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        let growth = probe.growth_kib();
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{delivery:?}: RSS grew by {growth} KiB for a 10 MB command line"
        );

        // After AUTH, as a body line.
        let mut c = logged_in(world.plain(), "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        let mut probe = MemoryProbe::start();
        let mut head = b"Subject: big line\r\n\r\n".to_vec();
        head.resize(4096, b'z');
        c.send(&head, delivery).await.expect("send the head");
        send_bulk(&mut c, b"z", TOTAL - head.len(), Some(&mut probe)).await;
        let r = sent(&mut c, b"\r\n.\r\n", Delivery::Whole).await;
        assert_eq!(r.status(), "554 5.6.0", "{delivery:?}: {r:?}");
        let growth = probe.growth_kib();
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{delivery:?}: RSS grew by {growth} KiB for a 10 MB body line"
        );
        expect(&mut c, "QUIT", "221").await;
    }
    world.wait_count("lost connection after DATA", 2).await;
    world.assert_only_the_marker_arrives().await;
}

/// Reads `n` replies from a LineClient (a direct session with Postfix).
async fn direct_replies(c: &mut support::io::LineClient, n: usize) -> Vec<u16> {
    let mut codes = Vec::new();
    for _ in 0..n {
        codes.push(
            smtp::read_reply(c)
                .await
                .expect("a reply from Postfix")
                .code,
        );
    }
    codes
}

/// A8: the test Postfix runs with `smtpd_forbid_bare_newline = no` (Postfix 3.7's
/// default, and what `$mynetworks` gets anyway): sent to it directly, the smuggled
/// transactions are delivered and the bare-LF header is taken. Through the proxy the
/// same bytes are refused. The defence is the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_itself_accepts_the_smuggling_that_the_proxy_refuses() {
    let world = World::start(|_| {}).await;
    // Directly to Postfix's submission listener (authenticated as alice): two messages
    // for each smuggling payload, one for the bare-LF header.
    for (payload, replies) in [
        (SMUGGLE_LF_DOT_CRLF, 5),
        (SMUGGLE_LF_DOT_LF, 5),
        (BARE_LF_IN_HEADER, 1),
    ] {
        let mut c = smtp::connect(world.postfix.submission_addr())
            .await
            .expect("connect to Postfix");
        smtp::expect(&mut c, "EHLO client.test", 250).await.unwrap();
        let r = smtp::auth_plain(&mut c, "alice", "secret-alice")
            .await
            .unwrap();
        assert_eq!(r.code, 235, "{}", r.text());
        smtp::start_data(&mut c, "alice@a.test", &["bob@a.test"])
            .await
            .unwrap();
        c.write_raw(payload).await.unwrap();
        let codes = direct_replies(&mut c, replies).await;
        let expected: &[u16] = if replies == 5 {
            &[250, 250, 250, 354, 250]
        } else {
            &[250]
        };
        assert_eq!(codes, expected, "Postfix directly: {}", escape(payload));
        smtp::expect(&mut c, "QUIT", 221).await.unwrap();
    }
    // Through the proxy: refused, in both forms.
    for payload in [SMUGGLE_LF_DOT_CRLF, SMUGGLE_LF_DOT_LF, BARE_LF_IN_HEADER] {
        assert_one_refusal(&world, payload, "550 5.6.0").await;
    }
    wait_for_inbox(&world.dovecot, "bob", 5, &[&world.postfix]).await;
    world.wait_queue_empty();
    let queued = world.queued();
    assert_eq!(queued.len(), 5, "only the direct messages: {queued:#?}");
    assert_eq!(
        queued
            .iter()
            .filter(|l| l.contains("from=<ceo@a.test>"))
            .count(),
        2,
        "the smuggled ones came from the direct sessions: {queued:#?}"
    );
    world.wait_count("lost connection after DATA", 6).await;
}

// === §B STARTTLS and TLS ===

/// B9: plaintext pipelined behind STARTTLS would run inside TLS. The proxy answers 220
/// and closes (or, when the rest arrives after the 220, fails the handshake): no reply
/// to the pipelined RSET, no plaintext after the 220.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_pipelined_command_gets_220_then_close() {
    let world = World::start(|_| {}).await;
    for delivery in DELIVERIES {
        let mut c = greeted(world.starttls()).await;
        expect(&mut c, "EHLO client.test", "250").await;
        c.send_attack(b"STARTTLS\r\nRSET\r\n", delivery).await;
        let (bytes, _) = c
            .read_to_close(STEP)
            .await
            .expect("the proxy closes the connection");
        let after = bytes
            .strip_prefix(b"220 2.0.0 Ready to start TLS\r\n".as_slice())
            .unwrap_or_else(|| panic!("{delivery:?}: expected the 220: {}", escape(&bytes)));
        assert!(
            after.is_empty() || after[0] == 0x15,
            "{delivery:?}: after the 220 only the close or a TLS alert: {}",
            escape(&bytes)
        );
    }
}

/// B11: nothing learned before TLS survives it: MAIL without a new EHLO is out of
/// sequence, and the EHLO after TLS is the TLS one (AUTH, no STARTTLS). Before TLS on
/// 587 there is no AUTH (case 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_tls_state_is_forgotten_after_starttls() {
    let world = World::start(|s| s.plaintext_auth = false).await;
    let auth = format!("AUTH PLAIN {}\r\n", plain_credentials("alice"));
    for delivery in DELIVERIES {
        let mut c = greeted(world.starttls()).await;
        let ehlo = sent(&mut c, b"EHLO client.test\r\n", delivery).await;
        assert!(
            ehlo.keywords().contains(&"STARTTLS".to_owned())
                && !ehlo.keywords().contains(&"AUTH".to_owned()),
            "{delivery:?}: {ehlo:?}"
        );
        let r = sent(&mut c, auth.as_bytes(), delivery).await;
        assert_eq!(
            r.status(),
            "530 5.7.0",
            "{delivery:?}: AUTH before TLS: {r:?}"
        );
        let r = sent(&mut c, b"STARTTLS\r\n", delivery).await;
        assert_eq!(r.status(), "220 2.0.0", "{delivery:?}: {r:?}");
        let mut c = c.upgrade(world.ca()).await.expect("TLS handshake");
        let r = sent(&mut c, b"MAIL FROM:<alice@a.test>\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: MAIL without EHLO: {r:?}"
        );
        let r = sent(&mut c, auth.as_bytes(), delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: AUTH without EHLO: {r:?}"
        );
        let ehlo = sent(&mut c, b"EHLO client.test\r\n", delivery).await;
        assert!(
            ehlo.keywords().contains(&"AUTH".to_owned())
                && !ehlo.keywords().contains(&"STARTTLS".to_owned()),
            "{delivery:?}: {ehlo:?}"
        );
        let r = sent(&mut c, auth.as_bytes(), delivery).await;
        assert_eq!(r.status(), "235 2.7.0", "{delivery:?}: {r:?}");
        expect(&mut c, "MAIL FROM:<alice@a.test>", "250").await;
        expect(&mut c, "QUIT", "221").await;
    }
}

/// B13: STARTTLS inside TLS (after STARTTLS, or on the implicit-TLS port), after AUTH,
/// or where TLS is not offered, is refused; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_starttls_and_starttls_after_auth_are_refused() {
    let world = World::start(|_| {}).await;
    for delivery in DELIVERIES {
        let mut c = after_starttls(world.starttls(), world.ca()).await;
        expect(&mut c, "EHLO client.test", "250").await;
        let r = sent(&mut c, b"STARTTLS\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: second STARTTLS: {r:?}"
        );
        expect(&mut c, "NOOP", "250").await;

        let mut c = implicit_tls(world.implicit(), world.ca()).await;
        expect(&mut c, "EHLO client.test", "250").await;
        let r = sent(&mut c, b"STARTTLS\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: STARTTLS on 465: {r:?}"
        );
        expect(&mut c, "NOOP", "250").await;

        // Plaintext AUTH is allowed in this world, so STARTTLS can come after AUTH.
        let mut c = logged_in(world.starttls(), "alice").await;
        let r = sent(&mut c, b"STARTTLS\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: STARTTLS after AUTH: {r:?}"
        );
        expect(&mut c, "NOOP", "250").await;

        let mut c = greeted(world.plain()).await;
        expect(&mut c, "EHLO client.test", "250").await;
        let r = sent(&mut c, b"STARTTLS\r\n", delivery).await;
        assert_eq!(r.status(), "502 5.5.1", "{delivery:?}: no TLS here: {r:?}");
        expect(&mut c, "NOOP", "250").await;
    }
}

/// B14: SSLv3, TLS 1.0 and 1.1 hellos get an alert (or nothing) and the close, on 465
/// and after STARTTLS on 587; never a plaintext line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tls_versions_are_refused_with_an_alert_and_no_plaintext() {
    let _gate = shared_gate().await;
    let proxy = proxy_without_upstream(|_| {}).await;
    let addrs = proxy.submission.expect("submission listeners");
    for delivery in DELIVERIES {
        for (name, record_version, client_version) in LEGACY_HELLOS {
            let hello = legacy_client_hello(record_version, client_version);
            let c = RawClient::connect(addrs.implicit).await.expect("connect");
            let what = format!("{delivery:?} {name} on 465");
            assert_hello_refused(c, &hello, delivery, STEP, SMTP_WORDS, &what).await;

            let mut c = greeted(addrs.starttls).await;
            let r = command(&mut c, "STARTTLS").await;
            assert_eq!(r.status(), "220 2.0.0", "{r:?}");
            let what = format!("{delivery:?} {name} after STARTTLS");
            assert_hello_refused(c, &hello, delivery, STEP, SMTP_WORDS, &what).await;
        }
    }
}

/// B14 with a real TLS 1.1 client on 465, where `openssl` is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_tls_1_1_client_is_refused_with_an_alert() {
    let Some(openssl) = openssl() else {
        eprintln!("openssl not installed: skipped");
        return;
    };
    let _gate = shared_gate().await;
    let proxy = proxy_without_upstream(|_| {}).await;
    let implicit = proxy.submission.expect("submission listeners").implicit;
    assert_openssl_tls_1_1_refused(&openssl, implicit, "ESMTP").await;
}

/// B15: `EHLO` to the implicit-TLS port is no ClientHello: closed (an alert at most)
/// within the handshake timeout, no SMTP reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_the_implicit_tls_port_is_closed_without_a_reply() {
    let _gate = shared_gate().await;
    let handshake = Duration::from_secs(2);
    let proxy = proxy_without_upstream(|s| s.tls_handshake_ms = Some(2000)).await;
    let implicit = proxy.submission.expect("submission listeners").implicit;
    for delivery in DELIVERIES {
        let mut c = RawClient::connect(implicit).await.expect("connect");
        let started = Instant::now();
        c.send_attack(b"EHLO client.test\r\n", delivery).await;
        let (bytes, _) = c
            .read_to_close(handshake + STEP)
            .await
            .expect("closed within the handshake timeout");
        assert!(
            started.elapsed() < handshake + Duration::from_secs(1),
            "{delivery:?}: closed after {:?}",
            started.elapsed()
        );
        assert_only_an_alert(&bytes, SMTP_WORDS, &format!("{delivery:?} EHLO on 465"));
    }
}

// === §D SMTP policy and resource abuse ===

/// D35: CHUNKING is not offered; a BDAT's chunk could otherwise run as commands, so
/// the proxy answers and closes without reading it. An open transaction dies with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_gets_502_and_close_without_running_the_chunk() {
    let world = World::start(|_| {}).await;
    let cases: [(&[u8], &str); 3] = [
        (b"BDAT 5\r\nRSET\r\n", "502 5.5.1"),
        (b"BDAT 4294967296 LAST\r\nRSET\r\n", "502 5.5.1"),
        // Too large for any counter: the chunk's length is unknown.
        (
            b"BDAT 99999999999999999999999 LAST\r\nRSET\r\n",
            "501 5.5.4",
        ),
    ];
    for delivery in DELIVERIES {
        for (attack, status) in cases {
            let mut c = logged_in(world.plain(), "alice").await;
            expect(&mut c, "MAIL FROM:<alice@a.test>", "250").await;
            expect(&mut c, "RCPT TO:<bob@a.test>", "250").await;
            c.send_attack(attack, delivery).await;
            let replies = replies_to_close(&mut c, STEP).await;
            assert_eq!(
                statuses(&replies),
                [status],
                "{delivery:?} {}: {replies:#?}",
                escape(attack)
            );
        }
    }
    let sessions = world.wait_authenticated_upstream_sessions(6).await;
    for session in &sessions {
        assert!(
            session.contains(" mail=1 rcpt=1 ")
                && !session.contains("data")
                && !session.contains("bdat"),
            "the transaction ended without data: {session}"
        );
    }
    assert!(world.queued().is_empty(), "{:#?}", world.queued());
}

/// D36: a SIZE lie. SIZE over the limit is refused at MAIL; SIZE=100 with a 320 KiB body
/// over a 64 KiB limit gets 552 5.3.4 after the end of data, and Postfix gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_lie_gets_552_5_3_4_after_the_end_of_data_and_nothing_is_queued() {
    let world = World::start(|s| s.max_message_bytes = Some(64 * 1024)).await;
    let mut line = vec![b's'; 76];
    line.extend_from_slice(b"\r\n");
    let bulk = line.repeat(320 * 1024 / line.len());
    for delivery in DELIVERIES {
        let mut c = greeted(world.plain()).await;
        let ehlo = expect(&mut c, "EHLO client.test", "250").await;
        assert!(
            ehlo.lines.iter().any(|l| l.ends_with("SIZE 65536")),
            "{ehlo:?}"
        );
        let r = command(
            &mut c,
            &format!("AUTH PLAIN {}", plain_credentials("alice")),
        )
        .await;
        assert_eq!(r.code(), 235, "{r:?}");
        let r = sent(
            &mut c,
            b"MAIL FROM:<alice@a.test> SIZE=1000000\r\n",
            delivery,
        )
        .await;
        assert_eq!(
            r.status(),
            "552 5.3.4",
            "{delivery:?}: declared too large: {r:?}"
        );
        let r = sent(&mut c, b"MAIL FROM:<alice@a.test> SIZE=100\r\n", delivery).await;
        assert_eq!(r.code(), 250, "{delivery:?}: {r:?}");
        expect(&mut c, "RCPT TO:<bob@a.test>", "250").await;
        expect(&mut c, "DATA", "354").await;
        c.send(b"Subject: size lie\r\n\r\n", delivery)
            .await
            .expect("send the head");
        c.send(&bulk, Delivery::Whole).await.expect("send the bulk");
        let r = sent(&mut c, b".\r\n", delivery).await;
        assert_eq!(r.status(), "552 5.3.4", "{delivery:?}: {r:?}");
        expect(&mut c, "NOOP", "250").await;
        expect(&mut c, "QUIT", "221").await;
    }
    world.wait_count("lost connection after DATA", 2).await;
    world.assert_only_the_marker_arrives().await;
}

/// D37: with max_recipients 3, the 4th and 5th RCPT get 452 4.5.3 from the proxy and
/// never reach Postfix; the message goes to the first three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_beyond_the_limit_get_452_4_5_3_and_never_reach_postfix() {
    let world = World::start(|s| s.max_recipients = Some(3)).await;
    let rcpts = b"RCPT TO:<bob@a.test>\r\nRCPT TO:<carol@a.test>\r\nRCPT TO:<alice@a.test>\r\nRCPT TO:<dave@a.test>\r\nRCPT TO:<erin@a.test>\r\n";
    let mut ids = Vec::new();
    for delivery in DELIVERIES {
        let mut c = logged_in(world.plain(), "alice").await;
        expect(&mut c, "MAIL FROM:<alice@a.test>", "250").await;
        c.send(rcpts, delivery).await.expect("send the RCPTs");
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes.push(reply(&mut c).await.status());
        }
        assert_eq!(
            codes,
            [
                "250 2.1.5",
                "250 2.1.5",
                "250 2.1.5",
                "452 4.5.3",
                "452 4.5.3"
            ],
            "{delivery:?}"
        );
        expect(&mut c, "DATA", "354").await;
        let r = sent(&mut c, b"Subject: many\r\n\r\nhi\r\n.\r\n", delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        ids.push(r.queue_id().expect("queue id"));
        expect(&mut c, "QUIT", "221").await;
    }
    for user in ["bob", "carol", "alice"] {
        wait_for_inbox(&world.dovecot, user, 2, &[&world.postfix]).await;
    }
    world.wait_queue_empty();
    let queued = world.queued();
    assert_eq!(queued.len(), 2, "{queued:#?}");
    for id in &ids {
        assert!(
            queued
                .iter()
                .any(|l| l.contains(&format!("{id}: from=<alice@a.test>")) && l.contains("nrcpt=3")),
            "{id} with three recipients: {queued:#?}"
        );
    }
    let log = world.log();
    assert!(
        !log.contains("dave@a.test") && !log.contains("erin@a.test"),
        "refused recipients reached Postfix:\n{log}"
    );
}

/// How long a slow client waits between its bytes: a pause on the socket, during which
/// only the proxy's closing reply may arrive.
const PACE: Duration = Duration::from_millis(250);

/// The short deadlines of the slowloris worlds.
const PRE_AUTH: Duration = Duration::from_millis(1500);
const COMMAND: Duration = Duration::from_millis(1500);
const HANDSHAKE: Duration = Duration::from_millis(1000);

/// Slack for "closed at the deadline": scheduling on a loaded machine, not another
/// deadline.
const SLACK: Duration = Duration::from_millis(1500);

/// D38 before AUTH: a client that keeps sending commands is still closed at the
/// pre-AUTH deadline (activity does not extend it), with 421 4.4.2; and meanwhile it
/// holds no Postfix connection (only the proxy's one EHLO-keyword probe ever opened
/// one, and closed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_before_auth_is_closed_at_the_pre_auth_deadline_holding_no_postfix_connection()
{
    let world = World::start(|s| s.pre_auth_ms = Some(PRE_AUTH.as_millis() as u64)).await;
    for delivery in DELIVERIES {
        let started = Instant::now();
        let mut c = greeted(world.plain()).await;
        let r = sent(&mut c, b"EHLO client.test\r\n", delivery).await;
        assert_eq!(r.code(), 250, "{r:?}");
        let mut no_upstream_while_open = false;
        let bye = loop {
            assert!(
                started.elapsed() < PRE_AUTH + SLACK,
                "{delivery:?}: still open after {:?}",
                started.elapsed()
            );
            // Keep busy until shortly before the deadline, then just wait.
            if started.elapsed() + PACE * 2 < PRE_AUTH {
                c.send_attack(b"NOOP\r\n", delivery).await;
                let r = reply(&mut c).await;
                if r.code() != 250 {
                    break r;
                }
            }
            if world.open_upstream_connections() == 0 {
                no_upstream_while_open = true;
            }
            if let Some(r) = quiet_for(&mut c, PACE).await {
                break r;
            }
        };
        assert_eq!(bye.status(), "421 4.4.2", "{delivery:?}: {bye:?}");
        let rest = replies_to_close(&mut c, STEP).await;
        assert!(rest.is_empty(), "{delivery:?}: after the 421: {rest:#?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= PRE_AUTH && elapsed < PRE_AUTH + SLACK,
            "{delivery:?}: closed after {elapsed:?}"
        );
        assert!(
            no_upstream_while_open,
            "{delivery:?}: a Postfix connection was open all along:\n{}",
            world.log()
        );
    }
    assert!(
        world.authenticated_upstream_sessions().is_empty(),
        "{}",
        world.log()
    );
}

/// D38 in the AUTH exchange: the exchange holds a Postfix connection (Postfix checks
/// the password), but only until the pre-AUTH deadline: 421 4.4.2, and Postfix's
/// connection ends with the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_auth_exchange_is_closed_at_the_pre_auth_deadline() {
    let world = World::start(|s| s.pre_auth_ms = Some(PRE_AUTH.as_millis() as u64)).await;
    for delivery in DELIVERIES {
        let started = Instant::now();
        let mut c = greeted(world.plain()).await;
        expect(&mut c, "EHLO client.test", "250").await;
        let r = command(&mut c, "AUTH LOGIN").await;
        assert_eq!(r.code(), 334, "{r:?}");
        let response = b"YWxpY2U=";
        let bye = match delivery {
            Delivery::Whole => {
                c.send(&response[..4], delivery).await.expect("send");
                quiet_for(&mut c, PRE_AUTH + SLACK).await
            }
            Delivery::BytePerWrite => {
                let mut bye = None;
                for byte in response.iter().cycle() {
                    if started.elapsed() > PRE_AUTH + SLACK {
                        break;
                    }
                    c.send_attack(std::slice::from_ref(byte), delivery).await;
                    bye = quiet_for(&mut c, PACE).await;
                    if bye.is_some() {
                        break;
                    }
                }
                bye
            }
        };
        let bye = bye.unwrap_or_else(|| panic!("{delivery:?}: still open"));
        assert_eq!(bye.status(), "421 4.4.2", "{delivery:?}: {bye:?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= PRE_AUTH && elapsed < PRE_AUTH + SLACK,
            "{delivery:?}: closed after {elapsed:?}"
        );
        world.wait_no_open_upstream_connection().await;
    }
}

/// D38 after AUTH: the command deadline covers the whole command line, so a client
/// that sends a line's bytes slowly (or stops half-way) is closed with 421 4.4.2 when
/// it runs out; likewise in DATA, where nothing is then queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_commands_and_data_after_auth_are_closed_at_the_command_deadline() {
    let world = World::start(|s| s.command_ms = Some(COMMAND.as_millis() as u64)).await;
    for delivery in DELIVERIES {
        // A command line, trickled or left unfinished.
        let mut c = logged_in(world.plain(), "alice").await;
        let started = Instant::now();
        let bye = slow_bytes(&mut c, b"NOOP and more", delivery, COMMAND + SLACK).await;
        assert_eq!(bye.status(), "421 4.4.2", "{delivery:?}: {bye:?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= COMMAND - PACE && elapsed < COMMAND + SLACK,
            "{delivery:?}: closed after {elapsed:?}"
        );

        // The message, stopped half-way.
        let mut c = logged_in(world.plain(), "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        let started = Instant::now();
        c.send(b"Subject: slow\r\n\r\nhalf a li", delivery)
            .await
            .expect("send");
        let bye = quiet_for(&mut c, COMMAND + SLACK)
            .await
            .unwrap_or_else(|| panic!("{delivery:?}: still open in DATA"));
        assert_eq!(bye.status(), "421 4.4.2", "{delivery:?}: {bye:?}");
        assert!(
            started.elapsed() < COMMAND + SLACK,
            "{delivery:?}: closed after {:?}",
            started.elapsed()
        );
    }
    world.wait_count("lost connection after DATA", 2).await;
    world.wait_no_open_upstream_connection().await;
    world.assert_only_the_marker_arrives().await;
}

/// Sends `bytes` (a line never finished) slowly: all at once and then nothing
/// (`Whole`), or one byte per [`PACE`] over and over (`BytePerWrite`), until the proxy
/// answers or closes; panics after `limit`.
async fn slow_bytes<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    bytes: &[u8],
    delivery: Delivery,
    limit: Duration,
) -> Reply {
    let started = Instant::now();
    match delivery {
        Delivery::Whole => {
            c.send(bytes, delivery).await.expect("send");
            quiet_for(c, limit)
                .await
                .unwrap_or_else(|| panic!("{delivery:?}: still open after {limit:?}"))
        }
        Delivery::BytePerWrite => {
            for byte in bytes.iter().cycle() {
                assert!(
                    started.elapsed() < limit,
                    "{delivery:?}: a trickling client is still served after {limit:?}"
                );
                c.send_attack(std::slice::from_ref(byte), delivery).await;
                if let Some(r) = quiet_for(c, PACE).await {
                    return r;
                }
            }
            unreachable!("cycle() never ends")
        }
    }
}

/// D38 for the TLS handshake: a client that opens the handshake and stalls (or never
/// starts it) is closed at the handshake deadline, on 465 and after STARTTLS on 587,
/// with nothing in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed_at_the_handshake_deadline() {
    let _gate = shared_gate().await;
    let proxy =
        proxy_without_upstream(|s| s.tls_handshake_ms = Some(HANDSHAKE.as_millis() as u64)).await;
    let addrs = proxy.submission.expect("submission listeners");
    // The first bytes of a ClientHello: a record header and the start of its body.
    let hello = legacy_client_hello([3, 3], [3, 3]);
    let partial = &hello[..20];
    for delivery in DELIVERIES {
        for on_465 in [true, false] {
            let mut c = if on_465 {
                RawClient::connect(addrs.implicit).await.expect("connect")
            } else {
                let mut c = greeted(addrs.starttls).await;
                let r = command(&mut c, "STARTTLS").await;
                assert_eq!(r.status(), "220 2.0.0", "{r:?}");
                c
            };
            let started = Instant::now();
            c.send(partial, delivery).await.expect("send");
            let (bytes, _) = c
                .read_to_close(HANDSHAKE + SLACK)
                .await
                .expect("closed at the handshake deadline");
            let elapsed = started.elapsed();
            let what = format!("{delivery:?} on {}", if on_465 { 465 } else { 587 });
            assert!(
                elapsed >= HANDSHAKE - Duration::from_millis(100) && elapsed < HANDSHAKE + SLACK,
                "{what}: closed after {elapsed:?}"
            );
            assert_only_an_alert(&bytes, SMTP_WORDS, &what);
        }
    }
}

/// D39: with max_sessions 3, the 4th connection gets 421 4.7.0 and the close (on 465
/// just the close: no plaintext there), whatever its source address; the established
/// sessions keep working, and an ended one frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flood_gets_421_4_7_0_and_established_sessions_keep_working() {
    let world = World::start(|s| s.max_sessions = Some(3)).await;
    for (round, delivery) in DELIVERIES.into_iter().enumerate() {
        let mut sessions = Vec::new();
        for i in 0..3u8 {
            sessions.push(session_when_free(world.plain(), [127, 0, 0, 10 + i]).await);
        }
        for source in [13u8, 14, 1] {
            let mut c = connect_from(world.plain(), [127, 0, 0, source]).await;
            let replies = replies_to_close(&mut c, STEP).await;
            assert_eq!(
                statuses(&replies),
                ["421 4.7.0"],
                "{delivery:?}: a 4th session from 127.0.0.{source}: {replies:#?}"
            );
        }
        for c in &mut sessions {
            let r = sent(c, b"EHLO client.test\r\n", delivery).await;
            assert_eq!(r.code(), 250, "{delivery:?}: {r:?}");
            let auth = format!("AUTH PLAIN {}\r\n", plain_credentials("alice"));
            let r = sent(c, auth.as_bytes(), delivery).await;
            assert_eq!(r.status(), "235 2.7.0", "{delivery:?}: {r:?}");
        }
        let c = &mut sessions[round];
        start_data(c, &["bob@a.test"]).await;
        let r = sent(c, b"Subject: flood\r\n\r\nstill here\r\n.\r\n", delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");

        // The implicit-TLS listener has its own limit.
        let mut tls = Vec::new();
        for _ in 0..3 {
            tls.push(implicit_tls_when_free(world.implicit(), world.ca()).await);
        }
        let mut c = RawClient::connect(world.implicit()).await.expect("connect");
        let (bytes, _) = c.read_to_close(STEP).await.expect("closed");
        assert!(bytes.is_empty(), "{delivery:?}: {}", escape(&bytes));
        for c in &mut tls {
            expect(c, "NOOP", "250").await;
            expect(c, "QUIT", "221").await;
        }

        for c in &mut sessions {
            expect(c, "QUIT", "221").await;
        }
        // A place is free again.
        let mut c = session_when_free(world.plain(), [127, 0, 0, 1]).await;
        expect(&mut c, "QUIT", "221").await;
        drop(sessions);
    }
    wait_for_inbox(&world.dovecot, "bob", 2, &[&world.postfix]).await;
}

/// A greeted implicit-TLS session, retried while the proxy closes new connections for
/// lack of a free place.
async fn implicit_tls_when_free(addr: SocketAddr, ca: &Path) -> Tls {
    let deadline = Instant::now() + STEP;
    loop {
        match RawClient::connect_tls(addr, ca).await {
            Ok(mut c) => {
                let greeting = reply(&mut c).await;
                assert_eq!(greeting.code(), 220, "{greeting:?}");
                return c;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no free place on 465: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A greeted session on `addr` from `source`, retried while the proxy refuses for lack
/// of a free place (ended sessions free theirs asynchronously).
async fn session_when_free(addr: SocketAddr, source: [u8; 4]) -> Plain {
    let deadline = Instant::now() + STEP;
    loop {
        let mut c = connect_from(addr, source).await;
        let greeting = reply(&mut c).await;
        match greeting.code() {
            220 => return c,
            421 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => panic!("greeting: {greeting:?}"),
        }
    }
}

// === a scripted upstream ===

/// The upstream reply deadline of the stub worlds.
const UPSTREAM_REPLY: Duration = Duration::from_millis(1000);

/// A scripted SMTP upstream playing `script` and the submission front in front of it.
async fn stub_world(script: Script, gate: MemoryGate) -> StubWorld {
    StubWorld::start(Protocol::Smtp, script, UPSTREAM_REPLY, gate).await
}

const SIMPLE_MESSAGE: &[u8] = b"Subject: durable\r\n\r\nbody\r\n.\r\n";

// === §4 durability ===

/// §4 rule 2 (cases 62, 64's cousins): Postfix silent, closing or resetting after the
/// end of data — or closing in the middle of it, or closing or silent at DATA, which the
/// proxy has already answered with its own 354 (docs/submission.md §3) — gives 451
/// 4.3.0, never 250 and never silence (silence only until the reply deadline). The proxy
/// sends the message once; the client's retry on the same session gets a new upstream
/// connection and its 250.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_silent_closed_or_reset_at_the_end_of_data_gives_451_4_3_0_never_250() {
    let world = stub_world(Script::Silent, shared_gate().await).await;
    let (stub, addr) = (&world.stub, world.submission());
    let mut client_data = 0;
    let mut delivered_ends = 0;
    for script in [
        Script::Silent,
        Script::Close,
        Script::Reset,
        Script::CloseInData,
        Script::CloseAtData,
        Script::SilentAtData,
    ] {
        for delivery in DELIVERIES {
            stub.set(script);
            let mut c = logged_in(addr, "alice").await;
            start_data(&mut c, &["bob@a.test"]).await;
            client_data += 1;
            let started = Instant::now();
            let r = sent(&mut c, SIMPLE_MESSAGE, delivery).await;
            assert_eq!(r.status(), "451 4.3.0", "{script:?} {delivery:?}: {r:?}");
            if matches!(script, Script::Silent | Script::SilentAtData) {
                assert!(
                    started.elapsed() >= UPSTREAM_REPLY,
                    "{delivery:?}: 451 before the reply deadline"
                );
            }
            if matches!(script, Script::Silent | Script::Close | Script::Reset) {
                delivered_ends += 1;
            }
            // The client retries; Postfix answers this time.
            stub.set(Script::Reply("250 2.0.0 Ok: queued as STUB1\r\n"));
            start_data(&mut c, &["bob@a.test"]).await;
            client_data += 1;
            delivered_ends += 1;
            let r = sent(&mut c, SIMPLE_MESSAGE, Delivery::Whole).await;
            assert_eq!(
                r.status(),
                "250 2.0.0",
                "{script:?} {delivery:?}: retry: {r:?}"
            );
            expect(&mut c, "QUIT", "221").await;
        }
    }
    let data_commands = stub.commands().iter().filter(|c| *c == "DATA").count();
    assert_eq!(
        data_commands, client_data,
        "one upstream DATA per client DATA, never a resend"
    );
    assert_eq!(
        stub.ends(),
        delivered_ends,
        "one end of data per message sent"
    );
    // The proxy gave up the silent connections rather than keeping them.
    stub.assert_silent_connections_given_up(2 * DELIVERIES.len())
        .await;
}

/// §4 rule 2, case 63: Postfix's 4xx/5xx to the end of data reaches the client in its
/// class, multi-line replies intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_refusals_at_the_end_of_data_are_relayed_in_their_class() {
    let world = stub_world(Script::Silent, shared_gate().await).await;
    let (stub, addr) = (&world.stub, world.submission());
    let cases: [(&str, &[&str]); 2] = [
        (
            "452-4.3.1 Insufficient system storage\r\n452 4.3.1 Try again later\r\n",
            &[
                "452-4.3.1 Insufficient system storage",
                "452 4.3.1 Try again later",
            ],
        ),
        (
            "554 5.7.1 Rejected by policy\r\n",
            &["554 5.7.1 Rejected by policy"],
        ),
    ];
    for (answer, expected) in cases {
        stub.set(Script::Reply(answer));
        for delivery in DELIVERIES {
            let mut c = logged_in(addr, "alice").await;
            start_data(&mut c, &["bob@a.test"]).await;
            let r = sent(&mut c, SIMPLE_MESSAGE, delivery).await;
            assert_eq!(r.lines, expected, "{delivery:?}");
            expect(&mut c, "QUIT", "221").await;
        }
    }
}

/// A6 on the wire: the proxy unstuffs the client's data and stuffs it again for
/// Postfix, so the upstream sees each dot line doubled exactly as RFC 5321 asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_stuffing_is_redone_on_the_upstream_wire() {
    let world = stub_world(
        Script::Reply("250 2.0.0 Ok: queued as STUB2\r\n"),
        shared_gate().await,
    )
    .await;
    let (stub, addr) = (&world.stub, world.submission());
    let stuffed = b"Subject: dots\r\nMessage-ID: <dots@a.test>\r\n\r\n..\r\n...\r\n..x\r\n...x\r\nend\r\n.\r\n";
    for delivery in DELIVERIES {
        let mut c = logged_in(addr, "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        let r = sent(&mut c, stuffed, delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221").await;
        let wire = stub
            .connections()
            .into_iter()
            .rev()
            .find(|c| c.ends > 0)
            .expect("a connection with a message")
            .data;
        assert_eq!(escape(&wire), escape(stuffed), "{delivery:?}");
    }
}

/// §4 rule 8: at shutdown the listener closes, sessions go on for the grace period (a
/// message in DATA can finish and gets Postfix's 250), then every session still there
/// gets 421 4.3.2 and the close; the unfinished message is never queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_lets_data_finish_then_says_421_4_3_2() {
    let world = World::start(|_| {}).await;
    let grace = Duration::from_millis(1500);
    for delivery in DELIVERIES {
        let proxy = proxy_in_front_of(
            world.dovecot.imap_addr(),
            world.postfix.submission_addr(),
            |_| {},
        )
        .await;
        let addr = proxy.submission.expect("submission listeners").plain;
        let mut idle = logged_in(addr, "alice").await;
        let mut finishing = logged_in(addr, "alice").await;
        let mut abandoned = logged_in(addr, "alice").await;
        start_data(&mut finishing, &["bob@a.test"]).await;
        start_data(&mut abandoned, &["bob@a.test"]).await;
        finishing
            .send(b"Subject: in flight\r\n\r\nfirst half\r\n", delivery)
            .await
            .expect("send");
        abandoned
            .send(b"Subject: abandoned\r\n\r\nfirst half\r\n", delivery)
            .await
            .expect("send");

        let stopping = Instant::now();
        let stop = tokio::spawn(proxy.stop(grace));
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "the listener still accepts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = sent(&mut idle, b"NOOP\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "250 2.0.0",
            "{delivery:?}: during the grace: {r:?}"
        );
        let r = sent(&mut finishing, b"second half\r\n.\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "250 2.0.0",
            "{delivery:?}: in-flight DATA: {r:?}"
        );

        for (name, c) in [
            ("idle", &mut idle),
            ("finishing", &mut finishing),
            ("abandoned", &mut abandoned),
        ] {
            let replies = replies_to_close(c, grace + STEP).await;
            assert_eq!(
                statuses(&replies),
                ["421 4.3.2"],
                "{delivery:?} {name}: {replies:#?}"
            );
        }
        assert!(
            stopping.elapsed() >= grace,
            "{delivery:?}: 421 before the grace period ended"
        );
        tokio::time::timeout(STEP * 2, stop)
            .await
            .expect("the proxy stops")
            .expect("stop task");
    }
    wait_for_inbox(&world.dovecot, "bob", 2, &[&world.postfix]).await;
    world.wait_queue_empty();
    let queued = world.queued();
    assert_eq!(queued.len(), 2, "only the finished messages: {queued:#?}");
    let mut imap = imap_login(&world.dovecot, "bob").await;
    for seq in 1..=2 {
        let message = fetch_message(&mut imap, "INBOX", seq).await;
        assert!(
            message.iter().any(|l| l == "Subject: in flight"),
            "{message:#?}"
        );
    }
}

/// The `coi-proxy` binary with one plaintext submission listener in front of
/// `upstream`.
async fn submission_process(imap_upstream: SocketAddr, upstream: SocketAddr) -> ProxyProcess {
    // An address of its own: no in-process listener of this binary uses 127.0.0.7.
    let submission = free_port_on([127, 0, 0, 7]);
    let section = format!(
        "submission:\n  listeners:\n    - {{name: sub, address: \"{submission}\", tls: none}}\n  upstream:\n    address: \"{upstream}\"\n  hostname: submission.test\n  sender_domains: [\"a.test\"]\n  insecure_allow_plaintext_auth: true\n  timeouts:\n    upstream_reply: 10s\n"
    );
    ProxyProcess::start(
        env!("CARGO_BIN_EXE_coi-proxy"),
        imap_upstream,
        &section,
        submission,
    )
    .await
}

/// §4 crash table and rule 1: a proxy killed mid-message never leaves a 250 for a
/// message that was not stored. Killed before the client's final dot (Postfix has an
/// open DATA: it discards it), and after the dot went to Postfix but before its reply
/// (a silent stub stands in for Postfix there): the client sees the connection drop,
/// no reply at all, and Postfix queued nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_never_leaves_a_250() {
    let world = World::start(|_| {}).await;
    let stub = Stub::start(Protocol::Smtp, Script::Silent).await;
    for delivery in DELIVERIES {
        // Before the final dot, in front of the real Postfix.
        let mut proxy =
            submission_process(world.dovecot.imap_addr(), world.postfix.submission_addr()).await;
        let mut c = logged_in(proxy.listener, "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        c.send(b"Subject: crash\r\n\r\nfirst half\r\nsecond", delivery)
            .await
            .expect("send");
        proxy.kill();
        assert_dropped_without_reply(&mut c, &format!("{delivery:?}")).await;

        // After the dot went upstream, before the reply.
        let ends = stub.ends();
        let mut proxy = submission_process(world.dovecot.imap_addr(), stub.addr).await;
        let mut c = logged_in(proxy.listener, "alice").await;
        start_data(&mut c, &["bob@a.test"]).await;
        c.send(SIMPLE_MESSAGE, delivery).await.expect("send");
        let deadline = Instant::now() + STEP;
        while stub.ends() == ends {
            assert!(Instant::now() < deadline, "the dot never reached the stub");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.kill();
        assert_dropped_without_reply(&mut c, &format!("{delivery:?}")).await;
    }
    world.wait_count("lost connection after DATA", 2).await;
    world.assert_only_the_marker_arrives().await;
}

// === AUTH ===

/// AUTH edge cases: a client's `*` cancel is relayed and Postfix's 501 comes back; a
/// SASL response over the 12288-byte limit is cancelled for the client (501) and its
/// rest dropped, framing intact; an unknown mechanism gets 504 5.5.4 without asking
/// Postfix. The session then still authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cancel_overlong_response_and_unknown_mechanism() {
    let world = World::start(|_| {}).await;
    for delivery in DELIVERIES {
        let mut c = greeted(world.plain()).await;
        expect(&mut c, "EHLO client.test", "250").await;

        let r = command(&mut c, "AUTH LOGIN").await;
        assert_eq!(r.code(), 334, "{r:?}");
        let r = sent(&mut c, b"*\r\n", delivery).await;
        assert_eq!(r.status(), "501 5.7.0", "{delivery:?}: cancel: {r:?}");

        let r = command(&mut c, "AUTH LOGIN").await;
        assert_eq!(r.code(), 334, "{r:?}");
        let mut long = b"YWxp".to_vec();
        long.resize(13_000, b'A');
        c.send(&long[..64], delivery).await.expect("send the head");
        c.send(&long[64..], Delivery::Whole)
            .await
            .expect("send the rest");
        c.send(b"\r\nNOOP\r\n", delivery).await.expect("send");
        let r = reply(&mut c).await;
        assert_eq!(
            r.status(),
            "501 5.7.0",
            "{delivery:?}: over-long response: {r:?}"
        );
        let r = reply(&mut c).await;
        assert_eq!(
            r.status(),
            "250 2.0.0",
            "{delivery:?}: the NOOP after it: {r:?}"
        );

        let r = sent(&mut c, b"AUTH CRAM-MD5\r\n", delivery).await;
        assert_eq!(r.status(), "504 5.5.4", "{delivery:?}: {r:?}");

        let auth = format!("AUTH PLAIN {}\r\n", plain_credentials("alice"));
        let r = sent(&mut c, auth.as_bytes(), delivery).await;
        assert_eq!(r.status(), "235 2.7.0", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221").await;
    }
    // Postfix saw the two cancelled exchanges and the good one per session, and never
    // the unknown mechanism.
    let sessions = world.wait_authenticated_upstream_sessions(2).await;
    for session in &sessions {
        assert!(session.contains(" auth=1/3 "), "{session}");
    }
    assert!(!world.log().contains("CRAM-MD5"), "{}", world.log());
}

// === D40 aggregate memory ===

/// D40: eight concurrent 8 MiB messages (64 MiB in all) through the proxy to a sink:
/// RSS stays flat, because no message is ever held whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_messages_leave_memory_flat() {
    let world = stub_world(
        Script::Reply("250 2.0.0 Ok: queued as SINK\r\n"),
        exclusive_gate().await,
    )
    .await;
    let addr = world.submission();
    const SESSIONS: usize = 8;
    const MESSAGE: usize = 8 * 1024 * 1024;
    // 64 lines of 1000 bytes: complete lines, so every chunk is plain body.
    let mut line = vec![b'm'; 998];
    line.extend_from_slice(b"\r\n");
    let chunk = Arc::new(line.repeat(64));
    for delivery in DELIVERIES {
        let mut clients = Vec::new();
        for _ in 0..SESSIONS {
            let mut c = logged_in(addr, "alice").await;
            start_data(&mut c, &["bob@a.test"]).await;
            clients.push(c);
        }
        let mut probe = MemoryProbe::start();
        let mut tasks = tokio::task::JoinSet::new();
        for mut c in clients {
            let chunk = chunk.clone();
            tasks.spawn(async move {
                c.send(b"Subject: large\r\n\r\n", delivery)
                    .await
                    .expect("send the head");
                let mut written = 0;
                while written < MESSAGE {
                    c.send(&chunk, Delivery::Whole).await.expect("send");
                    written += chunk.len();
                }
                sent(&mut c, b".\r\n", Delivery::Whole).await
            });
        }
        while let Some(done) = tokio::time::timeout(STEP * 4, tasks.join_next())
            .await
            .expect("the messages go through")
        {
            probe.sample();
            let r = done.expect("client task");
            assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        }
        let growth = probe.growth_kib();
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{delivery:?}: RSS grew by {growth} KiB for {SESSIONS} concurrent {MESSAGE}-byte messages"
        );
    }
}
