//! SECURITY-CASES.md §B (STARTTLS and TLS) and §C (IMAP framing, literals, responses)
//! against the IMAP front: a real Dovecot behind the in-process proxy, and raw byte
//! clients that say exactly what an attacker would.
//!
//! Every case runs twice ([`DELIVERIES`]): all bytes in one write, and one byte per write
//! (with TCP_NODELAY, so usually one segment per byte). Multi-megabyte payloads are the
//! exception: their head follows the delivery, the bulk goes in 64 KiB writes.
//!
//! What the proxy must prevent is checked where it would happen: on Dovecot, through a
//! direct connection (mailboxes, METADATA) or its log (logins), never only by trusting
//! what the proxy answered. Dovecot 2.3 logs no commands, so an injected command is
//! proven absent by its effect: a mailbox that was never created, a login that never
//! appeared in the log.
//!
//! Memory cases read this process's RSS (the proxy runs in-process); they hold the memory
//! gate exclusively ([`exclusive_gate`]), so no other test of this binary allocates
//! meanwhile.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use coi_proxy::proto::imap::fragment::{Fragment, Framer, FramerOptions, LongLines, StreamKind};
use tokio::io::{AsyncRead, AsyncWrite};

use support::dovecot::Dovecot;
use support::io::STEP;
use support::memory::{exclusive_gate, send_bulk, shared_gate, MemoryGate, MemoryProbe};
use support::proxy::{Options, Proxy};
use support::raw::{
    assert_hello_refused, assert_only_an_alert, assert_openssl_tls_1_1_refused, escape,
    legacy_client_hello, lines_of, openssl, Delivery, End, Plain, RawClient, Tls, DELIVERIES,
    LEGACY_HELLOS,
};

// === set-up ===

/// A private Dovecot and a proxy in front of it.
struct Setup {
    proxy: Proxy,
    dovecot: Dovecot,
    _gate: MemoryGate,
}

impl Setup {
    async fn start(options: Options) -> Setup {
        Self::with_gate(options, shared_gate().await).await
    }

    /// For memory measurements: no other test of this binary runs meanwhile.
    async fn exclusive(options: Options) -> Setup {
        Self::with_gate(options, exclusive_gate().await).await
    }

    async fn with_gate(options: Options, gate: MemoryGate) -> Setup {
        let dovecot = Dovecot::start().expect("dovecot starts");
        let proxy = Proxy::start(dovecot.imap_addr(), options).await;
        Setup {
            proxy,
            dovecot,
            _gate: gate,
        }
    }
}

fn plaintext_auth() -> Options {
    Options {
        plaintext_auth: true,
        ..Options::default()
    }
}

/// Connects and reads the greeting, which must be `* OK`.
async fn greeted(addr: std::net::SocketAddr) -> (Plain, String) {
    let mut c = RawClient::connect(addr).await.expect("connect");
    let greeting = c.expect_line("the greeting").await.expect("greeting");
    assert!(greeting.starts_with("* OK "), "greeting: {greeting}");
    (c, greeting)
}

/// Connects with implicit TLS and reads the greeting.
async fn greeted_tls(setup: &Setup) -> (Tls, String) {
    let mut c = RawClient::connect_tls(setup.proxy.implicit, &setup.proxy.pki.ca_path)
        .await
        .expect("implicit TLS connect");
    let greeting = c.expect_line("the greeting").await.expect("greeting");
    assert!(greeting.starts_with("* OK "), "greeting: {greeting}");
    (c, greeting)
}

/// A session on the plain listener logged in as `user` (needs `plaintext_auth`).
async fn logged_in(addr: std::net::SocketAddr, user: &str) -> Plain {
    let (mut c, _) = greeted(addr).await;
    let reply = c
        .command("login", &format!("LOGIN {user} secret-{user}"))
        .await
        .expect("LOGIN");
    assert_eq!(status(&reply), "OK", "LOGIN {user}: {reply:?}");
    c
}

/// A session on the STARTTLS listener after `STARTTLS` and the handshake.
async fn after_starttls(setup: &Setup) -> Tls {
    let (mut c, _) = greeted(setup.proxy.starttls).await;
    let reply = c.command("s", "STARTTLS").await.expect("STARTTLS");
    assert_eq!(reply, ["s OK Begin TLS negotiation now"], "STARTTLS");
    c.upgrade(&setup.proxy.pki.ca_path)
        .await
        .expect("TLS handshake after STARTTLS")
}

/// The status word of the last line of a reply (`OK`, `NO`, `BAD`).
fn status(lines: &[String]) -> &str {
    lines.last().and_then(|l| l.split(' ').nth(1)).unwrap_or("")
}

/// The capability atoms of a `* CAPABILITY` line or of a `[CAPABILITY ...]` code.
fn capabilities(line: &str) -> Option<Vec<String>> {
    let list = match line.strip_prefix("* CAPABILITY ") {
        Some(list) => list,
        None => {
            let start = line.find("[CAPABILITY ")? + "[CAPABILITY ".len();
            let end = start + line[start..].find(']')?;
            &line[start..end]
        }
    };
    Some(
        list.split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

fn has_cap(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

/// Every capability list in `lines`, with the line it came from.
fn capability_lists(lines: &[String]) -> Vec<(String, Vec<String>)> {
    lines
        .iter()
        .filter_map(|l| capabilities(l).map(|caps| (l.clone(), caps)))
        .collect()
}

fn sasl_plain(authzid: &str, authcid: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{authzid}\0{authcid}\0{password}"))
}

/// Reads until a line starting with `{tag} ` arrives or the proxy closes; returns the
/// lines and whether the connection is still open. For attacks where the proxy may
/// either answer or close.
async fn lines_until_tagged_or_close<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    tag: &str,
) -> (Vec<String>, bool) {
    let prefix = format!("{tag} ");
    let mut lines = Vec::new();
    loop {
        match c.read_line().await.expect("read a line") {
            Some(line) => {
                let line = String::from_utf8_lossy(&line).into_owned();
                let done = line.starts_with(&prefix);
                lines.push(line);
                if done {
                    return (lines, true);
                }
            }
            None => return (lines, false),
        }
    }
}

// === Dovecot, seen directly ===

/// A direct session with Dovecot (bypassing the proxy), logged in as `user`.
async fn direct(dovecot: &Dovecot, user: &str) -> Plain {
    let (mut c, _) = greeted(dovecot.imap_addr()).await;
    let password = dovecot.password_of(user).expect("known user");
    let reply = c
        .command("l", &format!("LOGIN {user} {password}"))
        .await
        .expect("direct LOGIN");
    assert_eq!(status(&reply), "OK", "direct LOGIN {user}: {reply:?}");
    c
}

/// Whether alice's mailbox `name` exists, asked of Dovecot directly.
async fn mailbox_exists(dovecot: &Dovecot, name: &str) -> bool {
    let mut c = direct(dovecot, "alice").await;
    let reply = c
        .command("q", &format!("LIST \"\" \"{name}\""))
        .await
        .expect("LIST");
    assert_eq!(status(&reply), "OK", "{reply:?}");
    reply.iter().any(|l| l.starts_with("* LIST "))
}

/// alice's server METADATA entry `entry` as Dovecot answers it directly.
async fn direct_metadata(dovecot: &Dovecot, entry: &str) -> Vec<String> {
    let mut c = direct(dovecot, "alice").await;
    let reply = c
        .command("q", &format!("GETMETADATA \"\" {entry}"))
        .await
        .expect("GETMETADATA");
    assert_eq!(status(&reply), "OK", "{reply:?}");
    reply
}

/// Proves from Dovecot's log that nobody tried to log in as `user`: carol logs in
/// directly as a marker, and once her login is logged, anything the attack made Dovecot
/// do earlier (a login, or auth_verbose's failure line) is in the log too.
async fn assert_no_login_attempt(dovecot: &Dovecot, user: &str) {
    let marker = "Login: user=<carol>";
    let before = dovecot.log_contents().matches(marker).count();
    let _carol = direct(dovecot, "carol").await;
    // Generous: on a loaded machine Dovecot's log process can lag by seconds.
    let deadline = Instant::now() + STEP * 4;
    let log = loop {
        let log = dovecot.log_contents();
        if log.matches(marker).count() > before {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the marker login never reached the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !log.contains(&format!("user=<{user}>")) && !log.contains(&format!("({user},")),
        "Dovecot saw a login attempt for {user}:\n{log}"
    );
}

// === memory ===

/// Proxy RSS growth allowed while it refuses a multi-megabyte input: a few read buffers
/// and one line, far below the 10–20 MB sent.
const GROWTH_LIMIT_KIB: u64 = 6 * 1024;

/// The measurement the memory cases rely on sees a transient allocation of the size
/// they must not make.
#[tokio::test]
async fn memory_probe_sees_a_transient_allocation() {
    let _gate = exclusive_gate().await;
    let mut probe = MemoryProbe::start();
    let buffer = std::hint::black_box(vec![1u8; 16 * 1024 * 1024]);
    drop(buffer);
    let growth = probe.growth_kib();
    if probe.peak_reset {
        assert!(
            growth >= 15 * 1024,
            "a 16 MiB buffer showed as {growth} KiB"
        );
    } else {
        eprintln!("VmHWM cannot be reset here: memory cases see samples only");
    }
}

// === §B STARTTLS and TLS ===

/// B10: plaintext pipelined behind STARTTLS would run inside TLS.
#[tokio::test]
async fn starttls_with_pipelined_command_closes_without_running_it() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.starttls).await;
        c.send_attack(b"a STARTTLS\r\nb LOGIN alice secret-alice\r\n", delivery)
            .await;
        let (bytes, _) = c
            .read_to_close(STEP * 3)
            .await
            .expect("the proxy closes the connection");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !bytes.starts_with(b"b ") && !text.contains("\nb "),
            "{delivery:?}: a reply to the pipelined command: {}",
            escape(&bytes)
        );
        match delivery {
            // Both commands arrive in one read: no OK, no handshake, just the close.
            Delivery::Whole => assert!(
                !text.contains("a OK") && text.starts_with("* BYE "),
                "{delivery:?}: expected BYE and close without a handshake: {}",
                escape(&bytes)
            ),
            // The second command may arrive after the OK: then it is fed to the TLS
            // handshake, which fails (an alert at most, never an IMAP line).
            Delivery::BytePerWrite => {
                if let Some(after_ok) =
                    bytes.strip_prefix(b"a OK Begin TLS negotiation now\r\n".as_slice())
                {
                    assert!(
                        after_ok.is_empty() || after_ok[0] == 0x15,
                        "{delivery:?}: after the OK only a TLS alert may follow: {}",
                        escape(&bytes)
                    );
                } else {
                    assert!(
                        text.starts_with("* BYE "),
                        "{delivery:?}: expected BYE: {}",
                        escape(&bytes)
                    );
                }
            }
        }
    }
    assert_no_login_attempt(&setup.dovecot, "alice").await;
}

/// B10, the late form: the plaintext command comes after the OK, where the ClientHello
/// should be.
#[tokio::test]
async fn plaintext_command_in_place_of_the_tls_handshake_fails_the_handshake() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.starttls).await;
        c.send(b"a STARTTLS\r\n", delivery)
            .await
            .expect("send STARTTLS");
        let reply = c.read_until_tagged("a").await.expect("STARTTLS reply");
        assert_eq!(reply, ["a OK Begin TLS negotiation now"], "{delivery:?}");
        c.send_attack(b"b LOGIN alice secret-alice\r\n", delivery)
            .await;
        let (bytes, _) = c
            .read_to_close(STEP * 3)
            .await
            .expect("the handshake fails and the proxy closes");
        assert!(
            bytes.is_empty() || bytes[0] == 0x15,
            "{delivery:?}: only a TLS alert may answer: {}",
            escape(&bytes)
        );
    }
    assert_no_login_attempt(&setup.dovecot, "alice").await;
}

/// B11: the capability list after TLS is the TLS one, asked for again.
#[tokio::test]
async fn capabilities_after_starttls_drop_starttls_and_logindisabled_and_offer_plain() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, greeting) = greeted(setup.proxy.starttls).await;
        // (See `greeting_carries_the_filtered_capabilities` for greetings without a list.)
        if let Some(before) = capabilities(&greeting) {
            assert!(
                has_cap(&before, "STARTTLS") && has_cap(&before, "LOGINDISABLED"),
                "{before:?}"
            );
        }
        c.send(b"a STARTTLS\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("a").await.expect("STARTTLS reply");
        assert_eq!(reply, ["a OK Begin TLS negotiation now"], "{delivery:?}");
        let mut c = c
            .upgrade(&setup.proxy.pki.ca_path)
            .await
            .expect("handshake");
        c.send(b"c CAPABILITY\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("c").await.expect("CAPABILITY reply");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
        let lists = capability_lists(&reply);
        assert_eq!(lists.len(), 1, "{delivery:?}: {reply:?}");
        let caps = &lists[0].1;
        assert!(!has_cap(caps, "STARTTLS"), "{delivery:?}: {caps:?}");
        assert!(!has_cap(caps, "LOGINDISABLED"), "{delivery:?}: {caps:?}");
        assert!(has_cap(caps, "AUTH=PLAIN"), "{delivery:?}: {caps:?}");
        c.send(b"d LOGIN alice secret-alice\r\n", delivery)
            .await
            .expect("send");
        let reply = c.read_until_tagged("d").await.expect("LOGIN reply");
        assert_eq!(
            status(&reply),
            "OK",
            "{delivery:?}: LOGIN over TLS: {reply:?}"
        );
        for (line, caps) in capability_lists(&reply) {
            assert!(
                !has_cap(&caps, "STARTTLS") && !has_cap(&caps, "LOGINDISABLED"),
                "{line}"
            );
        }
    }
}

/// The client's greeting is Dovecot's banner with the proxy's capability list. Dovecot
/// answers input that arrives before its auth process is ready (the proxy's own `ID`,
/// sent at once) with a provisional `* OK Waiting for authentication process to
/// respond..`, and sends its real banner after it.
#[tokio::test]
async fn greeting_carries_the_filtered_capabilities() {
    let setup = Setup::start(Options::default()).await;
    // The provisional line comes in roughly one of five sessions here; 40 sessions,
    // each with a fresh Dovecot login process, make a miss unlikely.
    for i in 0..40 {
        let (_c, greeting) = greeted(setup.proxy.starttls).await;
        let caps = capabilities(&greeting)
            .unwrap_or_else(|| panic!("session {i}: greeting without capabilities: {greeting}"));
        assert!(
            has_cap(&caps, "STARTTLS") && has_cap(&caps, "LOGINDISABLED"),
            "session {i}: {greeting}"
        );
    }
}

/// B12: Dovecot trusts the proxy's loopback connection, so only the proxy can refuse
/// passwords in clear.
#[tokio::test]
async fn starttls_listener_refuses_authentication_before_tls() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, greeting) = greeted(setup.proxy.starttls).await;
        let mut lists = capability_lists(&[greeting]);
        c.send(b"k CAPABILITY\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("k").await.expect("CAPABILITY reply");
        assert_eq!(capability_lists(&reply).len(), 1, "{delivery:?}: {reply:?}");
        lists.extend(capability_lists(&reply));
        for (line, caps) in &lists {
            assert!(
                has_cap(caps, "LOGINDISABLED") && has_cap(caps, "STARTTLS"),
                "{delivery:?}: {line}"
            );
            assert!(
                !caps
                    .iter()
                    .any(|c| c.to_ascii_uppercase().starts_with("AUTH=")),
                "{delivery:?}: {line}"
            );
        }
        let sasl_ir = sasl_plain("", "alice", "secret-alice");
        for (tag, command) in [
            ("a", "LOGIN alice secret-alice".to_owned()),
            ("b", "AUTHENTICATE PLAIN".to_owned()),
            ("c", format!("AUTHENTICATE PLAIN {sasl_ir}")),
            ("d", "AUTHENTICATE LOGIN".to_owned()),
        ] {
            c.send(format!("{tag} {command}\r\n").as_bytes(), delivery)
                .await
                .expect("send");
            // The very next line is the refusal: no `+` continuation first.
            let line = c.expect_line("the refusal").await.expect("reply");
            assert!(
                line.starts_with(&format!("{tag} NO [PRIVACYREQUIRED]")),
                "{delivery:?}: {command}: {line}"
            );
        }
        // A synchronising literal in a refused LOGIN: no `+`, and the client, which
        // never got one, does not send the literal.
        c.send(b"e LOGIN {5}\r\n", delivery).await.expect("send");
        let line = c.expect_line("the refusal").await.expect("reply");
        assert!(
            line.starts_with("e NO "),
            "{delivery:?}: LOGIN {{5}}: {line}"
        );
        c.send(b"f NOOP\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("f").await.expect("NOOP reply");
        assert_eq!(
            status(&reply),
            "OK",
            "{delivery:?}: the session goes on: {reply:?}"
        );
    }
    assert_no_login_attempt(&setup.dovecot, "alice").await;
}

/// B13: STARTTLS only once, only before authentication, only where offered.
#[tokio::test]
async fn second_starttls_and_starttls_where_not_offered_are_refused() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        // Twice.
        let mut c = after_starttls(&setup).await;
        c.send(b"b STARTTLS\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("b").await.expect("reply");
        assert_eq!(
            status(&reply),
            "BAD",
            "{delivery:?}: second STARTTLS: {reply:?}"
        );
        let reply = c.command("c", "NOOP").await.expect("NOOP");
        assert_eq!(
            status(&reply),
            "OK",
            "{delivery:?}: TLS session goes on: {reply:?}"
        );

        // Implicit TLS.
        let (mut c, greeting) = greeted_tls(&setup).await;
        assert!(
            !has_cap(&capabilities(&greeting).unwrap_or_default(), "STARTTLS"),
            "{greeting}"
        );
        c.send(b"a STARTTLS\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("a").await.expect("reply");
        assert_eq!(
            status(&reply),
            "BAD",
            "{delivery:?}: STARTTLS on implicit TLS: {reply:?}"
        );
        let reply = c.command("b", "NOOP").await.expect("NOOP");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");

        // Plain listener: not offered.
        let (mut c, greeting) = greeted(setup.proxy.plain).await;
        assert!(
            !has_cap(&capabilities(&greeting).unwrap_or_default(), "STARTTLS"),
            "{greeting}"
        );
        c.send(b"a STARTTLS\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("a").await.expect("reply");
        assert_eq!(
            status(&reply),
            "BAD",
            "{delivery:?}: STARTTLS where not offered: {reply:?}"
        );
        let reply = c.command("b", "NOOP").await.expect("NOOP");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
    }
}

/// B13: STARTTLS after authentication (possible only with plaintext auth allowed).
#[tokio::test]
async fn starttls_after_authentication_is_refused() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.starttls, "alice").await;
        c.send(b"a STARTTLS\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("a").await.expect("reply");
        assert_eq!(
            status(&reply),
            "BAD",
            "{delivery:?}: STARTTLS after LOGIN: {reply:?}"
        );
        let reply = c.command("b", "NOOP").await.expect("NOOP");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
    }
}

/// What IMAP says in plaintext: none of it may come back for a refused TLS handshake.
const IMAP_WORDS: &[&str] = &["* OK", "BYE", "IMAP"];

/// B14: TLS 1.0/1.1 and SSLv3 are refused with an alert, on 993 and after STARTTLS.
#[tokio::test]
async fn old_tls_versions_are_refused_with_an_alert_and_no_plaintext() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        for (name, record_version, client_version) in LEGACY_HELLOS {
            let hello = legacy_client_hello(record_version, client_version);
            let c = RawClient::connect(setup.proxy.implicit)
                .await
                .expect("connect");
            let what = format!("{delivery:?} {name} on implicit TLS");
            assert_hello_refused(c, &hello, delivery, STEP * 3, IMAP_WORDS, &what).await;

            let (mut c, _) = greeted(setup.proxy.starttls).await;
            let reply = c.command("a", "STARTTLS").await.expect("STARTTLS");
            assert_eq!(status(&reply), "OK", "{reply:?}");
            let what = format!("{delivery:?} {name} after STARTTLS");
            assert_hello_refused(c, &hello, delivery, STEP * 3, IMAP_WORDS, &what).await;
        }
    }
}

/// B14 with a real TLS 1.1 client, where `openssl` is installed.
#[tokio::test]
async fn openssl_tls_1_1_client_is_refused_with_an_alert() {
    let Some(openssl) = openssl() else {
        eprintln!("openssl not installed: skipped");
        return;
    };
    let setup = Setup::start(Options::default()).await;
    assert_openssl_tls_1_1_refused(&openssl, setup.proxy.implicit, "* OK").await;
}

/// B15: plaintext on the implicit-TLS port.
#[tokio::test]
async fn plaintext_on_the_implicit_tls_port_is_closed_without_a_greeting() {
    let setup = Setup::start(Options::default()).await;
    // The proxy's default handshake timeout, plus slack.
    let handshake_timeout = Duration::from_secs(10) + STEP;
    for delivery in DELIVERIES {
        let mut c = RawClient::connect(setup.proxy.implicit)
            .await
            .expect("connect");
        let started = Instant::now();
        c.send_attack(b"a NOOP\r\n", delivery).await;
        let (bytes, _) = c
            .read_to_close(handshake_timeout)
            .await
            .expect("closed within the handshake timeout");
        assert!(started.elapsed() < handshake_timeout, "{delivery:?}");
        assert_only_an_alert(
            &bytes,
            IMAP_WORDS,
            &format!("{delivery:?} plaintext on implicit TLS"),
        );
    }
}

// === §C IMAP framing, literals, responses ===

/// C17: a 4 GiB synchronising literal is refused before the `+`.
#[tokio::test]
async fn huge_synchronising_literal_is_refused_without_continuation() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        for size in [
            "4294967295",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
        ] {
            c.send(
                format!("a APPEND INBOX {{{size}}}\r\n").as_bytes(),
                delivery,
            )
            .await
            .expect("send");
            let line = c.expect_line("the refusal").await.expect("reply");
            assert!(
                line.starts_with("a NO [TOOBIG]"),
                "{delivery:?} {{{size}}}: {line}"
            );
            c.send(b"b NOOP\r\n", delivery).await.expect("send");
            let reply = c.read_until_tagged("b").await.expect("NOOP reply");
            assert_eq!(
                status(&reply),
                "OK",
                "{delivery:?} {{{size}}}: session goes on: {reply:?}"
            );
        }
    }
}

/// C17 at a configured limit: one byte over is refused, the limit itself passes.
#[tokio::test]
async fn synchronising_literal_over_the_configured_limit_is_refused() {
    let setup = Setup::start(Options {
        max_literal_bytes: Some(1000),
        ..plaintext_auth()
    })
    .await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        c.send(b"a APPEND INBOX {1001}\r\n", delivery)
            .await
            .expect("send");
        let line = c.expect_line("the refusal").await.expect("reply");
        assert!(line.starts_with("a NO [TOOBIG]"), "{delivery:?}: {line}");
        let mut message = b"Subject: limit\r\n\r\n".to_vec();
        message.resize(1000, b'x');
        c.send(b"b APPEND INBOX {1000}\r\n", delivery)
            .await
            .expect("send");
        let line = c.expect_line("the continuation").await.expect("reply");
        assert!(line.starts_with('+'), "{delivery:?}: {line}");
        let mut rest = message.clone();
        rest.extend_from_slice(b"\r\n");
        c.send(&rest, delivery).await.expect("send");
        let reply = c.read_until_tagged("b").await.expect("APPEND reply");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
    }
}

/// C18: a non-synchronising literal over the limit: the bytes are already coming and
/// would be read as commands, so BAD and close; memory stays flat.
#[tokio::test]
async fn huge_non_synchronising_literal_gets_bad_and_close_with_flat_memory() {
    let setup = Setup::exclusive(Options {
        max_literal_bytes: Some(1000),
        ..plaintext_auth()
    })
    .await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        let mut probe = MemoryProbe::start();
        c.send_attack(b"a APPEND INBOX {2000000000+}\r\n", delivery)
            .await;
        send_bulk(&mut c, b"x", 20 * 1024 * 1024, Some(&mut probe)).await;
        let (bytes, _) = c.read_to_close(STEP * 2).await.expect("the proxy closes");
        let lines = lines_of(&bytes);
        assert!(
            lines
                .first()
                .is_some_and(|l| l.starts_with("a BAD [TOOBIG]")),
            "{delivery:?}: {}",
            escape(&bytes)
        );
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("a BAD") || l.starts_with("* BYE")),
            "{delivery:?}: {lines:?}"
        );
        let growth = probe.growth_kib();
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{delivery:?}: RSS grew by {growth} KiB"
        );
    }
    // Nothing of it reached the mailbox.
    let mut c = direct(&setup.dovecot, "alice").await;
    let reply = c
        .command("q", "STATUS INBOX (MESSAGES)")
        .await
        .expect("STATUS");
    assert!(
        reply.iter().any(|l| l.contains("(MESSAGES 0)")),
        "{reply:?}"
    );
}

/// C21: a line without end: BYE [TOOBIG] at the default 64 KiB limit and close,
/// memory flat.
#[tokio::test]
async fn endless_line_gets_bye_toobig_and_close_with_flat_memory() {
    endless_line_is_closed_with_flat_memory(Options::default(), 64 * 1024).await;
}

/// C21 under a small configured limit (below the proxy's 64 KiB read size).
#[tokio::test]
async fn endless_line_over_a_small_limit_gets_bye_toobig_and_close_with_flat_memory() {
    let options = Options {
        max_line_bytes: Some(1024),
        ..Options::default()
    };
    endless_line_is_closed_with_flat_memory(options, 1024).await;
}

async fn endless_line_is_closed_with_flat_memory(options: Options, limit: usize) {
    let setup = Setup::exclusive(options).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        let mut probe = MemoryProbe::start();
        // The head (past the limit) as the delivery says, then the bulk: 10 MB in all.
        let mut head = b"a NOOP ".to_vec();
        head.resize(limit + 2 * 1024, b'x');
        c.send_attack(&head, delivery).await;
        send_bulk(
            &mut c,
            b"x",
            10 * 1024 * 1024 - head.len(),
            Some(&mut probe),
        )
        .await;
        let (bytes, _) = c.read_to_close(STEP * 2).await.expect("the proxy closes");
        let lines = lines_of(&bytes);
        assert_eq!(
            lines,
            ["* BYE [TOOBIG] Input exceeds a limit"],
            "{delivery:?}: {}",
            escape(&bytes)
        );
        let growth = probe.growth_kib();
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{delivery:?}: RSS grew by {growth} KiB"
        );
    }
}

/// C21 boundary: a line exactly at the limit is a line, one byte more is not. (After
/// login: Dovecot's login process has a smaller buffer of its own.)
#[tokio::test]
async fn line_at_the_limit_passes_and_one_byte_more_closes() {
    let setup = Setup::start(plaintext_auth()).await;
    let limit = 64 * 1024;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        // `a NOOP xxx…`: Dovecot ignores NOOP's arguments; the line is `limit` bytes.
        let mut line = b"a NOOP ".to_vec();
        line.resize(limit, b'x');
        line.extend_from_slice(b"\r\n");
        c.send(&line, delivery).await.expect("send");
        let (reply, open) = lines_until_tagged_or_close(&mut c, "a").await;
        assert!(
            open && status(&reply) == "OK",
            "{delivery:?}: a {limit}-byte line: {reply:?}"
        );

        let mut line = b"b NOOP ".to_vec();
        line.resize(limit + 1, b'x');
        line.extend_from_slice(b"\r\n");
        c.send_attack(&line, delivery).await;
        let (bytes, _) = c.read_to_close(STEP * 2).await.expect("the proxy closes");
        assert_eq!(
            lines_of(&bytes),
            ["* BYE [TOOBIG] Input exceeds a limit"],
            "{delivery:?}"
        );
    }
}

/// C21 with a raised limit: lines longer than the proxy's 64 KiB read chunk, but within
/// `max_line_bytes`, are still lines.
#[tokio::test]
async fn lines_above_64_kib_within_a_raised_limit_pass() {
    let setup = Setup::start(Options {
        max_line_bytes: Some(256 * 1024),
        ..plaintext_auth()
    })
    .await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        let mut line = b"a NOOP ".to_vec();
        line.resize(100 * 1024, b'x');
        line.extend_from_slice(b"\r\n");
        c.send(&line, delivery).await.expect("send");
        let (reply, open) = lines_until_tagged_or_close(&mut c, "a").await;
        assert!(
            open && status(&reply) == "OK",
            "{delivery:?}: a 100 KiB line under a 256 KiB limit: {reply:?}"
        );
    }
}

/// Rule C: LOGIN, AUTHENTICATE and the METADATA/mailbox commands are assembled whole
/// (at most 64 KiB): a larger literal in them is refused like a too-large APPEND.
#[tokio::test]
async fn oversized_literal_in_an_assembled_command_is_refused() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        c.send(b"a LOGIN {70000}\r\n", delivery)
            .await
            .expect("send");
        let line = c.expect_line("the refusal").await.expect("reply");
        assert!(line.starts_with("a NO [TOOBIG]"), "{delivery:?}: {line}");
        let reply = c.command("b", "NOOP").await.expect("NOOP");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");

        let mut c = logged_in(setup.proxy.plain, "alice").await;
        c.send(
            b"c SETMETADATA \"\" (/private/comment {70000}\r\n",
            delivery,
        )
        .await
        .expect("send");
        let line = c.expect_line("the refusal").await.expect("reply");
        assert!(line.starts_with("c NO [TOOBIG]"), "{delivery:?}: {line}");
        let reply = c.command("d", "NOOP").await.expect("NOOP");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");

        // Non-synchronising: the bytes are coming, so BAD and close.
        let mut probe = MemoryProbe::start();
        c.send_attack(
            b"e SETMETADATA \"\" (/private/comment {70000+}\r\n",
            delivery,
        )
        .await;
        send_bulk(&mut c, b"x", 70000, Some(&mut probe)).await;
        let (bytes, _) = c.read_to_close(STEP * 2).await.expect("the proxy closes");
        let lines = lines_of(&bytes);
        assert!(
            lines
                .first()
                .is_some_and(|l| l.starts_with("e BAD [TOOBIG]")),
            "{delivery:?}: {lines:?}"
        );
    }
    let stored = direct_metadata(&setup.dovecot, "/private/comment").await;
    assert!(stored[0].ends_with(" NIL)"), "{stored:?}");
}

/// C22: NUL and CR inside a quoted string (CVE-2019-11500 class) are refused by the
/// proxy and never reach Dovecot.
#[tokio::test]
async fn nul_or_cr_in_a_quoted_string_is_bad_and_never_forwarded() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        for attack in [
            &b"a LOGIN \"us\0er\" pw\r\n"[..],
            b"a LOGIN \"a\rb\" pw\r\n",
            b"a LOGIN alice \"secret\0-alice\"\r\n",
        ] {
            c.send(attack, delivery).await.expect("send");
            let reply = c.read_until_tagged("a").await.expect("reply");
            assert_eq!(reply.len(), 1, "{delivery:?} {}: {reply:?}", escape(attack));
            assert!(
                reply[0].starts_with("a BAD "),
                "{delivery:?} {}: {reply:?}",
                escape(attack)
            );
            c.send(b"b NOOP\r\n", delivery).await.expect("send");
            let reply = c.read_until_tagged("b").await.expect("NOOP reply");
            assert_eq!(
                status(&reply),
                "OK",
                "{delivery:?}: session goes on: {reply:?}"
            );
        }
    }
    // NUL and CR outside LOGIN too (Dovecot's NOOP would accept `"a\rb"`).
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "bob").await;
        for attack in [
            &b"a NOOP \"a\rb\"\r\n"[..],
            b"a CREATE \"x\0y\"\r\n",
            b"a SELECT \"IN\rBOX\"\r\n",
        ] {
            c.send(attack, delivery).await.expect("send");
            let reply = c.read_until_tagged("a").await.expect("reply");
            assert!(
                reply.len() == 1 && reply[0].starts_with("a BAD "),
                "{delivery:?} {}: {reply:?}",
                escape(attack)
            );
        }
    }
    assert_no_login_attempt(&setup.dovecot, "us").await;
    assert_no_login_attempt(&setup.dovecot, "a").await;
    assert_no_login_attempt(&setup.dovecot, "alice").await;
}

/// C23 with the default policy: bare LF ends nothing; each such command gets its BAD.
#[tokio::test]
async fn bare_lf_commands_are_refused_by_default() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        c.send(b"a NOOP\nb NOOP\n", delivery).await.expect("send");
        let a = c.read_until_tagged("a").await.expect("reply a");
        let b = c.read_until_tagged("b").await.expect("reply b");
        assert_eq!((a.len(), status(&a)), (1, "BAD"), "{delivery:?}: {a:?}");
        assert_eq!((b.len(), status(&b)), (1, "BAD"), "{delivery:?}: {b:?}");
        let reply = c.command("c", "NOOP").await.expect("NOOP");
        assert_eq!(
            status(&reply),
            "OK",
            "{delivery:?}: CRLF still works: {reply:?}"
        );
    }
}

/// C23 with `bare_lf: canonicalize`: exactly as with CRLF.
#[tokio::test]
async fn bare_lf_commands_are_handled_like_crlf_when_canonicalized() {
    let setup = Setup::start(Options {
        bare_lf_canonicalize: true,
        ..Options::default()
    })
    .await;
    for delivery in DELIVERIES {
        let mut replies = Vec::new();
        for ending in ["\n", "\r\n"] {
            let (mut c, _) = greeted(setup.proxy.plain).await;
            let script = format!("a NOOP{ending}b CAPABILITY{ending}c LOGOUT{ending}");
            c.send(script.as_bytes(), delivery).await.expect("send");
            let (bytes, _) = c.read_to_close(STEP).await.expect("LOGOUT closes");
            replies.push(lines_of(&bytes));
        }
        let [lf, crlf] = [&replies[0], &replies[1]];
        assert_eq!(lf, crlf, "{delivery:?}: LF and CRLF differ");
        let tagged: Vec<_> = lf
            .iter()
            .filter(|l| !l.starts_with('*'))
            .map(|l| status(std::slice::from_ref(l)))
            .collect();
        assert_eq!(tagged, ["OK", "OK", "OK"], "{delivery:?}: {lf:?}");
    }
}

const COI_ENABLED: &str = "/private/vendor/vendor.dovecot/coi/config/enabled";
const SPLICE: &[u8] = b"\r\n* OK [ALERT] pwned\r\na1 OK";

fn assert_no_splice(lines: &[String], what: &str) {
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("* OK [ALERT]") || l.starts_with("a1 ")),
        "{what}: a spliced response line: {lines:?}"
    );
}

/// C24: values with CRLF never come back as raw lines: COI values are refused, other
/// values come back as literals.
#[tokio::test]
async fn metadata_values_cannot_splice_responses() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;

        // Quoted strings cannot even carry it: the CRLF ends the command.
        c.send(
            format!("q SETMETADATA \"\" ({COI_ENABLED} \"x\r\n* OK [ALERT] y\")\r\n").as_bytes(),
            delivery,
        )
        .await
        .expect("send");
        let reply = c.read_until_tagged("q").await.expect("reply");
        assert_eq!(status(&reply), "BAD", "{delivery:?}: {reply:?}");
        let reply = c.command("r", "NOOP").await.expect("NOOP");
        assert_no_splice(&reply, "quoted");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");

        // As a literal, for the COI entry: refused.
        c.send(
            format!("a SETMETADATA \"\" ({COI_ENABLED} {{{}}}\r\n", SPLICE.len()).as_bytes(),
            delivery,
        )
        .await
        .expect("send");
        let line = c.expect_line("the continuation").await.expect("reply");
        assert!(line.starts_with('+'), "{delivery:?}: {line}");
        let mut rest = SPLICE.to_vec();
        rest.extend_from_slice(b")\r\n");
        c.send(&rest, delivery).await.expect("send");
        let reply = c.read_until_tagged("a").await.expect("reply");
        assert_no_splice(&reply, "COI entry");
        assert!(
            reply.len() == 1 && reply[0].starts_with("a NO [CANNOT] "),
            "{delivery:?}: {reply:?}"
        );

        // As a literal, for an ordinary entry: stored, and read back as a literal.
        c.send(
            format!(
                "b SETMETADATA \"\" (/private/comment {{{}+}}\r\n",
                SPLICE.len()
            )
            .as_bytes(),
            delivery,
        )
        .await
        .expect("send");
        c.send(&rest, delivery).await.expect("send");
        let reply = c.read_until_tagged("b").await.expect("reply");
        assert_no_splice(&reply, "SETMETADATA /private/comment");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");

        c.send(b"c GETMETADATA \"\" /private/comment\r\n", delivery)
            .await
            .expect("send");
        let fragments = read_responses(&mut c, "c").await;
        let heads: Vec<String> = fragments
            .iter()
            .filter_map(|f| match f {
                Fragment::Line {
                    line, head: true, ..
                } => Some(String::from_utf8_lossy(line).into_owned()),
                _ => None,
            })
            .collect();
        assert_no_splice(&heads, "GETMETADATA");
        assert_eq!(
            heads.len(),
            2,
            "{delivery:?}: METADATA and the tagged OK: {fragments:?}"
        );
        assert!(heads[1].starts_with("c OK"), "{delivery:?}: {heads:?}");
        let Fragment::Line {
            line,
            literal: Some(literal),
            ..
        } = &fragments[0]
        else {
            panic!("{delivery:?}: the value must be a literal: {fragments:?}")
        };
        assert_eq!(
            &line[..],
            format!("* METADATA \"\" (/private/comment {{{}}}", SPLICE.len()).as_bytes()
        );
        assert_eq!(literal.len, SPLICE.len() as u64);
        let value: Vec<u8> = fragments
            .iter()
            .filter_map(|f| match f {
                Fragment::LiteralData(d) => Some(d.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(value, SPLICE, "{delivery:?}");
        assert!(
            matches!(&fragments[fragments.len() - 2], Fragment::Line { line, head: false, literal: None, .. } if &line[..] == b")"),
            "{delivery:?}: {fragments:?}"
        );
    }
    // The COI entry was never stored.
    let stored = direct_metadata(&setup.dovecot, "/private/vendor/coi-proxy/config/enabled").await;
    assert!(stored[0].ends_with(" NIL)"), "{stored:?}");
}

/// Reads responses up to the tagged one for `tag`, framed by the proxy's own framer.
async fn read_responses<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    tag: &str,
) -> Vec<Fragment> {
    let frame = |bytes: &[u8]| {
        let mut framer = Framer::new(FramerOptions {
            max_line: 64 * 1024,
            long_lines: LongLines::Stream,
            stream: StreamKind::Responses,
        });
        framer.push(bytes);
        std::iter::from_fn(|| framer.next_fragment()).collect::<Vec<_>>()
    };
    let tagged = |fragments: &[Fragment]| {
        fragments.iter().any(|f| {
            matches!(f, Fragment::Line { line, head: true, .. } if line.starts_with(format!("{tag} ").as_bytes()))
        })
    };
    c.read_until_bytes(STEP, |bytes| tagged(&frame(bytes)))
        .await
        .expect("tagged response");
    frame(&c.take_inbox())
}

/// C26: COMPRESS would turn the stream opaque to the proxy.
#[tokio::test]
async fn compress_is_refused_and_never_advertised() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let (mut c, greeting) = greeted(setup.proxy.plain).await;
        let mut seen = vec![greeting];
        c.send(b"a CAPABILITY\r\n", delivery).await.expect("send");
        seen.extend(c.read_until_tagged("a").await.expect("reply"));
        c.send(b"b COMPRESS DEFLATE\r\n", delivery)
            .await
            .expect("send");
        let reply = c.read_until_tagged("b").await.expect("reply");
        assert_eq!(
            status(&reply),
            "NO",
            "{delivery:?}: COMPRESS before login: {reply:?}"
        );
        c.send(b"c LOGIN alice secret-alice\r\n", delivery)
            .await
            .expect("send");
        let reply = c.read_until_tagged("c").await.expect("reply");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
        seen.extend(reply);
        c.send(b"d CAPABILITY\r\n", delivery).await.expect("send");
        seen.extend(c.read_until_tagged("d").await.expect("reply"));
        c.send(b"e COMPRESS DEFLATE\r\n", delivery)
            .await
            .expect("send");
        let reply = c.read_until_tagged("e").await.expect("reply");
        assert_eq!(
            status(&reply),
            "NO",
            "{delivery:?}: COMPRESS after login: {reply:?}"
        );
        // The stream is still plain IMAP.
        let reply = c.command("f", "NOOP").await.expect("NOOP");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
        // Both CAPABILITY replies, and the greeting and LOGIN OK codes where present.
        let lists = capability_lists(&seen);
        assert!(lists.len() >= 2, "{seen:?}");
        for (line, caps) in lists {
            assert!(
                !caps
                    .iter()
                    .any(|c| c.to_ascii_uppercase().starts_with("COMPRESS")),
                "{delivery:?}: {line}"
            );
        }
    }
}

/// C27: IDLE is relayed both ways, and `DONE` split over writes plus a pipelined command
/// complete in order.
#[tokio::test]
async fn idle_relays_updates_and_done_split_over_writes() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        let reply = c.command("s", "SELECT INBOX").await.expect("SELECT");
        assert_eq!(status(&reply), "OK", "{reply:?}");
        let exists: u32 = reply
            .iter()
            .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
            .expect("EXISTS in the SELECT reply");
        c.send(b"a IDLE\r\n", delivery).await.expect("send");
        let line = c.expect_line("the IDLE continuation").await.expect("reply");
        assert!(line.starts_with('+'), "{delivery:?}: {line}");

        // A message arrives through another connection.
        let mut other = direct(&setup.dovecot, "alice").await;
        let message = "Subject: idle\r\n\r\nhello";
        other
            .send(
                format!("x APPEND INBOX {{{}+}}\r\n{message}\r\n", message.len()).as_bytes(),
                Delivery::Whole,
            )
            .await
            .expect("send APPEND");
        let reply = other.read_until_tagged("x").await.expect("APPEND");
        assert_eq!(status(&reply), "OK", "{reply:?}");

        let expected = format!("* {} EXISTS", exists + 1);
        let pushed = c
            .read_lines_until(|l| l == expected)
            .await
            .expect("EXISTS while idling");
        assert!(
            pushed.iter().all(|l| l.starts_with("* ")),
            "{delivery:?}: {pushed:?}"
        );

        c.send(b"DO", delivery).await.expect("send");
        c.send(b"NE\r\nb NOOP\r\n", delivery).await.expect("send");
        let lines = c.read_until_tagged("b").await.expect("replies");
        let tagged: Vec<&String> = lines.iter().filter(|l| !l.starts_with("* ")).collect();
        assert_eq!(tagged.len(), 2, "{delivery:?}: {lines:?}");
        assert!(
            tagged[0].starts_with("a OK") && tagged[1].starts_with("b OK"),
            "{delivery:?}: {lines:?}"
        );
    }
}

/// C29: `-PLUS` SASL mechanisms would bind to the proxy's TLS, not Dovecot's.
#[tokio::test]
async fn no_plus_mechanism_is_ever_advertised() {
    let setup = Setup::start(Options::default()).await;
    let mut seen = Vec::new();
    for delivery in DELIVERIES {
        let (mut c, greeting) = greeted(setup.proxy.starttls).await;
        seen.push(greeting);
        c.send(b"a CAPABILITY\r\n", delivery).await.expect("send");
        seen.extend(c.read_until_tagged("a").await.expect("reply"));

        let mut c = after_starttls(&setup).await;
        c.send(b"b CAPABILITY\r\n", delivery).await.expect("send");
        seen.extend(c.read_until_tagged("b").await.expect("reply"));

        let (mut c, greeting) = greeted_tls(&setup).await;
        seen.push(greeting);
        c.send(
            b"c CAPABILITY\r\nd LOGIN alice secret-alice\r\ne CAPABILITY\r\n",
            delivery,
        )
        .await
        .expect("send");
        let reply = c.read_until_tagged("e").await.expect("reply");
        assert_eq!(
            reply.iter().filter(|l| l.starts_with("d OK")).count(),
            1,
            "{delivery:?}: {reply:?}"
        );
        seen.extend(reply);

        let (_, greeting) = greeted(setup.proxy.plain).await;
        seen.push(greeting);
    }
    let lists = capability_lists(&seen);
    // Four CAPABILITY replies per delivery, plus the greetings and LOGIN OK codes.
    assert!(lists.len() >= 8, "{seen:?}");
    for (line, caps) in lists {
        assert!(
            !caps
                .iter()
                .any(|c| c.to_ascii_uppercase().ends_with("-PLUS")),
            "{line}"
        );
        for cap in &caps {
            if let Some(mechanism) = cap.to_ascii_uppercase().strip_prefix("AUTH=") {
                assert!(["PLAIN", "LOGIN"].contains(&mechanism), "{line}");
            }
        }
    }
}

/// Pipelined commands are answered in order.
#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        c.send(b"a NOOP\r\nb CAPABILITY\r\nc NOOP\r\n", delivery)
            .await
            .expect("send");
        let lines = c.read_until_tagged("c").await.expect("replies");
        assert_eq!(lines.len(), 4, "{delivery:?}: {lines:?}");
        assert!(lines[0].starts_with("a OK"), "{delivery:?}: {lines:?}");
        assert!(
            lines[1].starts_with("* CAPABILITY "),
            "{delivery:?}: {lines:?}"
        );
        assert!(
            lines[2].starts_with("b OK") && lines[3].starts_with("c OK"),
            "{delivery:?}: {lines:?}"
        );

        // After login too, mixing relayed and intercepted commands.
        c.send(
            b"d LOGIN alice secret-alice\r\ne NOOP\r\nf GETMETADATA \"\" /private/comment\r\ng SELECT INBOX\r\nh NOOP\r\n",
            delivery,
        )
        .await
        .expect("send");
        let lines = c.read_until_tagged("h").await.expect("replies");
        let tags: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with("* "))
            .map(|l| &l[..1])
            .collect();
        assert_eq!(tags, ["d", "e", "f", "g", "h"], "{delivery:?}: {lines:?}");
        assert!(
            lines
                .iter()
                .filter(|l| !l.starts_with("* "))
                .all(|l| l[2..].starts_with("OK")),
            "{lines:?}"
        );
    }
}

/// Gibberish gets BAD (tagged when a tag can be found) and the session goes on.
#[tokio::test]
async fn gibberish_gets_bad_and_the_session_goes_on() {
    let setup = Setup::start(Options::default()).await;
    let cases: [(&[u8], &str); 10] = [
        (b"\r\n", "*"),
        (b"a\r\n", "a"),
        (b"!!!\r\n", "!!!"),
        (b"+ go on\r\n", "*"),
        (b"* OK fake greeting\r\n", "*"),
        (b"\x01\x02\x03\r\n", "*"),
        (b"a \r\n", "a"),
        (b"a {5}\r\n", "a"),
        (b"a NOOP\x07\r\n", "a"),
        (b"a (x)\r\n", "a"),
    ];
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        for (gibberish, tag) in cases {
            c.send(gibberish, delivery).await.expect("send");
            let line = c.expect_line("the BAD").await.expect("reply");
            assert!(
                line.starts_with(&format!("{tag} BAD ")),
                "{delivery:?} {}: {line}",
                escape(gibberish)
            );
            let reply = c.command("z", "NOOP").await.expect("NOOP");
            assert_eq!(
                reply.len(),
                1,
                "{delivery:?} {}: {reply:?}",
                escape(gibberish)
            );
            assert_eq!(
                status(&reply),
                "OK",
                "{delivery:?} {}: {reply:?}",
                escape(gibberish)
            );
        }
    }
}

/// Rule C: a refused command's synchronising literal is never sent, so the next line is
/// a command.
#[tokio::test]
async fn refused_synchronising_literal_is_not_expected() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.starttls).await;
        c.send(b"a LOGIN {30}\r\n", delivery).await.expect("send");
        let line = c.expect_line("the refusal").await.expect("reply");
        assert!(
            line.starts_with("a NO [PRIVACYREQUIRED]"),
            "{delivery:?}: {line}"
        );
        c.send(b"b NOOP\r\n", delivery).await.expect("send");
        let reply = c.read_until_tagged("b").await.expect("reply");
        assert_eq!(reply.len(), 1, "{delivery:?}: {reply:?}");
        assert_eq!(status(&reply), "OK", "{delivery:?}: {reply:?}");
    }
}

/// Rule C: a refused command's non-synchronising literal is consumed, never run.
#[tokio::test]
async fn refused_command_literal_is_never_run_as_a_command() {
    let setup = Setup::start(plaintext_auth()).await;
    // Before TLS on a STARTTLS listener that refuses plaintext LOGIN ...
    let strict = Proxy::start(setup.dovecot.imap_addr(), Options::default()).await;
    for delivery in DELIVERIES {
        let d = format!("{delivery:?}").to_lowercase();
        let (mut c, _) = greeted(strict.starttls).await;
        let mailbox = format!("injected-{d}-prelogin");
        let injected = format!("c CREATE {mailbox}");
        let attack = format!(
            "a LOGIN {{{}+}}\r\n{injected}\r\nd NOOP\r\n",
            injected.len()
        );
        c.send(attack.as_bytes(), delivery).await.expect("send");
        let lines = c.read_until_tagged("d").await.expect("replies");
        assert_eq!(lines.len(), 2, "{delivery:?}: {lines:?}");
        assert!(
            lines[0].starts_with("a NO [PRIVACYREQUIRED]"),
            "{delivery:?}: {lines:?}"
        );
        assert!(lines[1].starts_with("d OK"), "{delivery:?}: {lines:?}");
        assert!(
            !mailbox_exists(&setup.dovecot, &mailbox).await,
            "{delivery:?}: {mailbox} was created"
        );

        // ... and after login, where Dovecot would run a CREATE: LOGIN again, COMPRESS
        // and STARTTLS are refused by the proxy itself.
        for (refused, expected) in [("LOGIN", "BAD"), ("COMPRESS", "NO"), ("STARTTLS", "BAD")] {
            let mut c = logged_in(setup.proxy.plain, "alice").await;
            let mailbox = format!("injected-{d}-{}", refused.to_lowercase());
            let injected = format!("c CREATE {mailbox}");
            let attack = format!(
                "a {refused} {{{}+}}\r\n{injected}\r\nd NOOP\r\n",
                injected.len()
            );
            c.send(attack.as_bytes(), delivery).await.expect("send");
            let lines = c.read_until_tagged("d").await.expect("replies");
            assert_eq!(lines.len(), 2, "{delivery:?} {refused}: {lines:?}");
            assert!(
                lines[0].starts_with(&format!("a {expected} ")),
                "{delivery:?} {refused}: {lines:?}"
            );
            assert!(
                lines[1].starts_with("d OK"),
                "{delivery:?} {refused}: {lines:?}"
            );
            assert!(
                !mailbox_exists(&setup.dovecot, &mailbox).await,
                "{delivery:?} {refused}: {mailbox} was created"
            );
        }
    }
}

/// Rule C / B12: before login, Dovecot's login process reads the literal of a relayed
/// command as a literal, so a LOGIN hidden in it cannot bypass PRIVACYREQUIRED. This
/// guards that the proxy keeps it so (whatever it relays, nothing logs in).
#[tokio::test]
async fn literal_of_a_relayed_command_before_login_never_logs_in() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        for carrier in ["NOOP", "XYZZY", "CAPABILITY", "ID"] {
            let (mut c, _) = greeted(setup.proxy.starttls).await;
            let injected = "y LOGIN alice secret-alice";
            let attack = format!(
                "x {carrier} {{{}+}}\r\n{injected}\r\nz NOOP\r\n",
                injected.len()
            );
            c.send_attack(attack.as_bytes(), delivery).await;
            let (lines, _) = lines_until_tagged_or_close(&mut c, "z").await;
            assert!(
                !lines.iter().any(|l| l.starts_with("y ")),
                "{delivery:?} {carrier}: {lines:?}"
            );
        }
    }
    assert_no_login_attempt(&setup.dovecot, "alice").await;
}

/// Rule C: Dovecot skips the rest of the line of a command it does not know or that
/// takes no arguments, literal announcement included, and then reads the literal's bytes
/// as commands. The proxy must not relay such a literal: the bytes would run without
/// passing its checks (COI interception, reserved METADATA, authentication policy).
#[tokio::test]
async fn literal_of_a_relayed_command_is_never_run_by_dovecot_as_a_command() {
    let setup = Setup::start(plaintext_auth()).await;
    for delivery in DELIVERIES {
        let d = format!("{delivery:?}").to_lowercase();
        for carrier in ["XYZZY", "NOOP", "CAPABILITY", "CHECK", "UID XYZZY"] {
            let mut c = logged_in(setup.proxy.plain, "alice").await;
            let mailbox = format!("smuggled-{d}-{}", carrier.replace(' ', "").to_lowercase());
            let injected = format!("c CREATE {mailbox}");
            let attack = format!(
                "x {carrier} {{{}+}}\r\n{injected}\r\nz NOOP\r\n",
                injected.len()
            );
            c.send_attack(attack.as_bytes(), delivery).await;
            let (lines, _) = lines_until_tagged_or_close(&mut c, "z").await;
            assert!(
                !lines.iter().any(|l| l.starts_with("c ")),
                "{delivery:?} {carrier}: {lines:?}"
            );
            assert!(
                !mailbox_exists(&setup.dovecot, &mailbox).await,
                "{delivery:?} {carrier}: Dovecot ran the literal as a command and created {mailbox}"
            );
        }
        // The same carries a write to the proxy's own reserved storage entries.
        let mut c = logged_in(setup.proxy.plain, "alice").await;
        let injected = "c SETMETADATA \"\" (/private/vendor/coi-proxy/config/enabled yes)";
        let attack = format!("x NOOP {{{}+}}\r\n{injected}\r\nz NOOP\r\n", injected.len());
        c.send_attack(attack.as_bytes(), delivery).await;
        let (lines, _) = lines_until_tagged_or_close(&mut c, "z").await;
        assert!(
            !lines.iter().any(|l| l.starts_with("c ")),
            "{delivery:?}: {lines:?}"
        );
        let stored =
            direct_metadata(&setup.dovecot, "/private/vendor/coi-proxy/config/enabled").await;
        assert!(
            stored[0].ends_with(" NIL)"),
            "{delivery:?}: reserved entry written: {stored:?}"
        );
    }
}

/// SASL PLAIN: the proxy learns the user from the authentication identity, so a
/// different authorization identity (including Dovecot's master-user form) is refused.
#[tokio::test]
async fn sasl_plain_with_a_foreign_authorization_identity_is_refused() {
    // Each refusal counts as a failed authentication: keep the penalty short, and use one
    // session per foreign identity (two failures each; the third would end the session).
    let setup = Setup::start(Options {
        auth_failure_delay_ms: Some(1),
        ..plaintext_auth()
    })
    .await;
    for delivery in DELIVERIES {
        for foreign in [
            sasl_plain("bob", "alice", "secret-alice"),
            sasl_plain("alice", "proxy-master", "master-secret"),
        ] {
            // Plaintext (plaintext_auth) and implicit TLS.
            let (c, _) = greeted(setup.proxy.plain).await;
            sasl_checks(c, delivery, &setup, "plain", &foreign).await;
            let (c, _) = greeted_tls(&setup).await;
            sasl_checks(c, delivery, &setup, "tls", &foreign).await;
        }
    }
    assert_no_login_attempt(&setup.dovecot, "bob").await;
    assert_no_login_attempt(&setup.dovecot, "proxy-master").await;
}

async fn sasl_checks<S: AsyncRead + AsyncWrite + Unpin>(
    mut c: RawClient<S>,
    delivery: Delivery,
    setup: &Setup,
    via: &str,
    response: &str,
) {
    let what = format!("{delivery:?} {via}");
    {
        // Continuation form.
        c.send(b"a AUTHENTICATE PLAIN\r\n", delivery)
            .await
            .expect("send");
        let line = c.expect_line("the continuation").await.expect("reply");
        assert!(line.starts_with('+'), "{what}: {line}");
        c.send(format!("{response}\r\n").as_bytes(), delivery)
            .await
            .expect("send");
        let reply = c.read_until_tagged("a").await.expect("reply");
        assert!(
            reply.len() == 1 && reply[0].starts_with("a NO [AUTHORIZATIONFAILED]"),
            "{what}: {reply:?}"
        );
        // SASL-IR form.
        c.send(
            format!("b AUTHENTICATE PLAIN {response}\r\n").as_bytes(),
            delivery,
        )
        .await
        .expect("send");
        let reply = c.read_until_tagged("b").await.expect("reply");
        assert!(
            reply.len() == 1 && reply[0].starts_with("b NO [AUTHORIZATIONFAILED]"),
            "{what}: {reply:?}"
        );
    }
    // Valid PLAIN works in both forms (empty or equal authorization identity).
    c.send(b"c AUTHENTICATE PLAIN\r\n", delivery)
        .await
        .expect("send");
    let line = c.expect_line("the continuation").await.expect("reply");
    assert!(line.starts_with('+'), "{what}: {line}");
    c.send(
        format!("{}\r\n", sasl_plain("", "alice", "secret-alice")).as_bytes(),
        delivery,
    )
    .await
    .expect("send");
    let reply = c.read_until_tagged("c").await.expect("reply");
    assert_eq!(status(&reply), "OK", "{what}: {reply:?}");
    let reply = c.command("d", "CAPABILITY").await.expect("CAPABILITY");
    assert!(
        reply[0].ends_with(" COI"),
        "{what}: the proxy knows the user: {reply:?}"
    );

    let mut c2 = RawClient::connect(setup.proxy.plain)
        .await
        .expect("connect");
    c2.expect_line("greeting").await.expect("greeting");
    c2.send(
        format!(
            "e AUTHENTICATE PLAIN {}\r\n",
            sasl_plain("alice", "alice", "secret-alice")
        )
        .as_bytes(),
        delivery,
    )
    .await
    .expect("send");
    let reply = c2.read_until_tagged("e").await.expect("reply");
    assert_eq!(status(&reply), "OK", "{what}: SASL-IR: {reply:?}");
}

/// LOGOUT: BYE, OK, then an orderly close (the baseline the close-on-attack cases differ from).
#[tokio::test]
async fn logout_ends_the_session_cleanly() {
    let setup = Setup::start(Options::default()).await;
    for delivery in DELIVERIES {
        let (mut c, _) = greeted(setup.proxy.plain).await;
        c.send(b"a LOGOUT\r\n", delivery).await.expect("send");
        let (bytes, end) = c.read_to_close(STEP).await.expect("close after LOGOUT");
        let lines = lines_of(&bytes);
        assert!(
            lines.len() == 2 && lines[0].starts_with("* BYE") && lines[1].starts_with("a OK"),
            "{lines:?}"
        );
        assert_eq!(end, End::Eof, "{delivery:?}");
    }
}
