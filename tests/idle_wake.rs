//! The IDLE wake (DESIGN.md §6) against a real Dovecot: the proxy runs its delivery hook
//! in front of Dovecot's LMTP (with the mailbox writer), and the tests speak LMTP to the
//! hook themselves (no Postfix). When the hook stores a message for a user whose IMAP
//! session through the proxy idles on that mailbox, the session restarts the backend's
//! IDLE: the client sees the new `* n EXISTS`, never a second `+` or a tagged reply
//! before its own DONE, and exactly one tagged OK after it.
//!
//! Whether a restart happened is read from `coi_proxy_imap_idle_wakes_total`; when the
//! EXISTS arrives is not asserted (Dovecot reports it anyway after its ~0.5 s delay):
//! latency is `benches/idle_wake.rs`'s business. Every network step is bounded
//! (support::io::STEP); nothing sleeps.

mod support;

use std::net::SocketAddr;

use support::dovecot::Dovecot;
use support::io::{tagged_status, LineClient};
use support::mailbox::imap_login;
use support::proxy::{DeliveryTuning, Proxy};
use support::stub::{Protocol, Script, Stub};
use support::world::{enable_coi, hook_options, hook_proxy};

struct Setup {
    dovecot: Dovecot,
    proxy: Proxy,
}

impl Setup {
    async fn start() -> Setup {
        let dovecot = Dovecot::start().expect("dovecot");
        let proxy = hook_proxy(&dovecot, DeliveryTuning::default()).await;
        Setup { dovecot, proxy }
    }

    fn hook(&self) -> SocketAddr {
        self.proxy.delivery.expect("the delivery hook listens")
    }

    fn wakes(&self) -> u64 {
        wakes(&self.proxy)
    }

    /// A client of `user` through the proxy, idling on `mailbox` (as written in the
    /// SELECT command) under `tag`: the `+` has arrived.
    async fn idle(&self, user: &str, select: &str, tag: &str) -> LineClient {
        let mut client = LineClient::logged_in(self.proxy.plain, user).await;
        let lines = client
            .imap("s", &format!("SELECT {select}"))
            .await
            .expect("SELECT");
        assert_eq!(tagged_status(&lines), "OK", "SELECT {select}: {lines:?}");
        start_idle(&mut client, tag).await;
        client
    }

    /// Creates `mailbox` for `user` directly in Dovecot.
    async fn create(&self, user: &str, mailbox: &str) {
        let mut direct = imap_login(&self.dovecot, user).await;
        let lines = direct
            .imap("c", &format!("CREATE {mailbox}"))
            .await
            .expect("CREATE");
        assert_eq!(tagged_status(&lines), "OK", "CREATE {mailbox}: {lines:?}");
    }

    /// Turns COI on for `user` with message filter `filter`, through the proxy.
    async fn enable_coi(&self, user: &str, filter: &str) {
        enable_coi(&self.proxy, user, filter).await;
    }
}

/// `coi_proxy_imap_idle_wakes_total`.
fn wakes(proxy: &Proxy) -> u64 {
    proxy
        .metric("coi_proxy_imap_idle_wakes_total")
        .expect("the wake counter is exported") as u64
}

async fn start_idle(client: &mut LineClient, tag: &str) {
    client
        .write_line(&format!("{tag} IDLE"))
        .await
        .expect("IDLE");
    let plus = client.read_line().await.expect("IDLE continuation");
    assert!(plus.starts_with("+ "), "IDLE: {plus}");
}

/// Reads lines until `* {n} EXISTS` (inclusive).
async fn read_until_exists(client: &mut LineClient, n: u32) -> Vec<String> {
    let want = format!("* {n} EXISTS");
    let mut lines = Vec::new();
    loop {
        let line = client.read_line().await.expect("an untagged update");
        let done = line == want;
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// Sends DONE and reads up to the IDLE's tagged reply.
async fn done(client: &mut LineClient, tag: &str) -> Vec<String> {
    client.write_line("DONE").await.expect("DONE");
    client.read_until_tagged(tag).await.expect("IDLE's reply")
}

/// Asserts that `lines` is untagged mailbox updates and then exactly one tagged OK for
/// `tag`: no `+`, nothing tagged before the end.
fn assert_updates_then_ok(lines: &[String], tag: &str) {
    let (last, updates) = lines.split_last().expect("at least the tagged reply");
    assert!(
        last.starts_with(&format!("{tag} OK ")),
        "ends with {tag} OK: {lines:#?}"
    );
    for line in updates {
        let words: Vec<&str> = line.split(' ').collect();
        let update = words.len() == 3
            && words[0] == "*"
            && words[1].parse::<u32>().is_ok()
            && (words[2] == "EXISTS" || words[2] == "RECENT");
        assert!(
            update,
            "only EXISTS/RECENT before the tagged reply: {lines:#?}"
        );
    }
}

/// An LMTP client of the hook, after LHLO.
struct Lmtp(LineClient);

impl Lmtp {
    async fn connect(hook: SocketAddr) -> Lmtp {
        let mut client = LineClient::connect(hook)
            .await
            .expect("connect to the hook");
        let greeting = client.read_line().await.expect("LMTP greeting");
        assert!(greeting.starts_with("220 "), "{greeting}");
        client.write_line("LHLO test.example").await.expect("LHLO");
        loop {
            let line = client.read_line().await.expect("LHLO reply");
            assert!(line.starts_with("250"), "LHLO: {line}");
            if line.starts_with("250 ") {
                return Lmtp(client);
            }
        }
    }

    /// Everything up to the end of data; the recipient's reply is still to be read.
    async fn send(&mut self, to: &str, message: &str) {
        for (command, code) in [
            ("MAIL FROM:<alice@a.test>".to_owned(), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_owned(), "354"),
        ] {
            self.0.write_line(&command).await.expect("LMTP command");
            let reply = self.0.read_line().await.expect("LMTP reply");
            assert!(reply.starts_with(code), "{command}: {reply}");
        }
        self.0
            .write_raw(format!("{message}\r\n.\r\n").as_bytes())
            .await
            .expect("message");
    }

    /// The recipient's reply after the end of data; asserts a 250.
    async fn stored(&mut self) {
        let reply = self.0.read_line().await.expect("reply after DATA");
        assert!(reply.starts_with("250 "), "after DATA: {reply}");
    }

    async fn deliver(&mut self, to: &str, message: &str) {
        self.send(to, message).await;
        self.stored().await;
    }
}

fn plain_message(n: u32) -> String {
    format!("From: alice@a.test\r\nTo: bob@b.test\r\nSubject: mail {n}\r\nMessage-ID: <mail{n}@a.test>\r\n\r\nhello {n}")
}

fn chat_message(n: u32) -> String {
    format!("From: alice@a.test\r\nTo: bob@b.test\r\nSubject: chat {n}\r\nChat-Version: 1.0\r\nMessage-ID: <chat{n}@a.test>\r\n\r\nhello {n}")
}

#[tokio::test]
async fn lmtp_delivery_wakes_an_inbox_idle_and_done_gets_one_tagged_ok() {
    let setup = Setup::start().await;
    let mut client = setup.idle("bob", "INBOX", "t1").await;
    assert_eq!(setup.wakes(), 0);

    Lmtp::connect(setup.hook())
        .await
        .deliver("bob@b.test", &plain_message(1))
        .await;
    let mut lines = read_until_exists(&mut client, 1).await;
    assert_eq!(setup.wakes(), 1, "the backend IDLE was restarted once");
    lines.extend(done(&mut client, "t1").await);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[..2], ["* 1 EXISTS", "* 1 RECENT"], "{lines:#?}");
    assert!(lines[2].starts_with("t1 OK Idle completed"), "{lines:#?}");

    // Nothing of the restart is left over: the next command gets just its reply.
    let noop = client.imap("n", "NOOP").await.expect("NOOP");
    assert_eq!(noop.len(), 1, "{noop:#?}");
    assert!(noop[0].starts_with("n OK"), "{noop:#?}");
    assert_eq!(setup.wakes(), 1);
}

#[tokio::test]
async fn a_chat_message_stored_in_chats_wakes_an_idle_on_chats() {
    let setup = Setup::start().await;
    // Turning the active filter on creates COI/Chats (COI-PROTOCOL §2.6).
    setup.enable_coi("bob", "active").await;
    let mut client = setup.idle("bob", "\"COI/Chats\"", "t2").await;

    Lmtp::connect(setup.hook())
        .await
        .deliver("bob@b.test", &chat_message(1))
        .await;
    let mut lines = read_until_exists(&mut client, 1).await;
    assert_eq!(setup.wakes(), 1);
    lines.extend(done(&mut client, "t2").await);
    // A first `$Chat` in the mailbox also brings FLAGS and PERMANENTFLAGS.
    assert!(!lines.iter().any(|l| l.starts_with('+')), "{lines:#?}");
    let tagged: Vec<&String> = lines.iter().filter(|l| !l.starts_with("* ")).collect();
    assert_eq!(tagged.len(), 1, "{lines:#?}");
    assert!(
        lines.last().unwrap().starts_with("t2 OK Idle completed"),
        "{lines:#?}"
    );
    let noop = client.imap("n", "NOOP").await.expect("NOOP");
    assert_eq!(noop.len(), 1, "{noop:#?}");
}

#[tokio::test]
async fn a_session_idling_on_another_mailbox_is_not_restarted() {
    let setup = Setup::start().await;
    setup.create("bob", "Other").await;
    let mut elsewhere = setup.idle("bob", "Other", "o").await;
    let mut inbox = setup.idle("bob", "INBOX", "i").await;
    let mut carol = setup.idle("carol", "INBOX", "c").await;

    Lmtp::connect(setup.hook())
        .await
        .deliver("bob@b.test", &plain_message(1))
        .await;
    read_until_exists(&mut inbox, 1).await;
    // The registry signals only matching sessions, so the count is final here.
    assert_eq!(setup.wakes(), 1, "only bob's INBOX session");

    assert_eq!(done(&mut elsewhere, "o").await.len(), 1, "no update");
    let carol_lines = done(&mut carol, "c").await;
    assert_eq!(carol_lines.len(), 1, "{carol_lines:#?}");
    assert_updates_then_ok(&done(&mut inbox, "i").await, "i");
    assert_eq!(setup.wakes(), 1);
}

#[tokio::test]
async fn a_mailbox_named_by_a_literal_and_in_another_case_is_woken() {
    let setup = Setup::start().await;
    let mut client = LineClient::logged_in(setup.proxy.plain, "bob").await;
    client
        .write_raw(b"s SELECT {5+}\r\ninbox\r\n")
        .await
        .expect("SELECT");
    let lines = client.read_until_tagged("s").await.expect("SELECT reply");
    assert_eq!(tagged_status(&lines), "OK", "{lines:#?}");
    start_idle(&mut client, "t").await;

    Lmtp::connect(setup.hook())
        .await
        .deliver("BOB@b.test", &plain_message(1))
        .await;
    read_until_exists(&mut client, 1).await;
    assert_eq!(setup.wakes(), 1);
    assert_updates_then_ok(&done(&mut client, "t").await, "t");
}

#[tokio::test]
async fn done_racing_a_wake_still_gets_exactly_one_tagged_ok() {
    let setup = Setup::start().await;
    let mut client = setup.idle("bob", "INBOX", "r1").await;
    let mut lmtp = Lmtp::connect(setup.hook()).await;
    // The client's DONE at different moments: before the hook has answered (the wake
    // may come after it), and right after (the proxy's own DONE is likely in flight).
    for round in 1..=6u32 {
        let tag = format!("r{round}");
        if round > 1 {
            start_idle(&mut client, &tag).await;
        }
        lmtp.send("bob@b.test", &plain_message(round)).await;
        let early = round % 2 == 1;
        if early {
            client.write_line("DONE").await.expect("DONE");
        }
        lmtp.stored().await;
        if !early {
            client.write_line("DONE").await.expect("DONE");
        }
        let mut lines = client.read_until_tagged(&tag).await.expect("IDLE's reply");
        assert_updates_then_ok(&lines, &tag);
        // Whatever the IDLE did not report yet, a NOOP does; nothing else comes.
        let noop = client.imap("n", "NOOP").await.expect("NOOP");
        assert_updates_then_ok(&noop, "n");
        lines.extend(noop);
        let exists = format!("* {round} EXISTS");
        assert!(lines.contains(&exists), "round {round}: {lines:#?}");
    }
    assert!(setup.wakes() <= 6, "at most one restart per delivery here");
}

#[tokio::test]
async fn two_quick_deliveries_both_show_up() {
    let setup = Setup::start().await;
    let mut client = setup.idle("bob", "INBOX", "t").await;
    let mut lmtp = Lmtp::connect(setup.hook()).await;
    lmtp.deliver("bob@b.test", &plain_message(1)).await;
    lmtp.deliver("bob@b.test", &plain_message(2)).await;
    let mut lines = read_until_exists(&mut client, 2).await;
    let wakes = setup.wakes();
    assert!(
        (1..=2).contains(&wakes),
        "{wakes} restarts for two deliveries"
    );
    lines.extend(done(&mut client, "t").await);
    assert_updates_then_ok(&lines, "t");
    let noop = client.imap("n", "NOOP").await.expect("NOOP");
    assert_eq!(noop.len(), 1, "{noop:#?}");
}

// === A scripted backend ===
//
// The paths that real Dovecot takes only by chance (a wake while a restart is under way,
// a refused second IDLE) are driven by a scripted IMAP backend: the test reads what the
// proxy sends upstream and answers by hand. The delivery hook relays to a stub LMTP
// server (support::stub) that stores nothing and says 250 (no mailbox writer: every
// recipient is an LMTP recipient, woken on INBOX).

/// The proxy in front of a scripted IMAP backend and a stub LMTP server.
struct Scripted {
    proxy: Proxy,
    backend: tokio::net::TcpListener,
    _lmtp: Stub,
}

impl Scripted {
    async fn start() -> Scripted {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the scripted backend");
        // Every delivery here is one message for bob: one recipient, one 250.
        let lmtp = Stub::start(
            Protocol::Lmtp,
            Script::Reply("250 2.0.0 <bob@b.test> Saved\r\n"),
        )
        .await;
        let proxy =
            Proxy::start(backend.local_addr().unwrap(), hook_options(lmtp.addr, None)).await;
        Scripted {
            proxy,
            backend,
            _lmtp: lmtp,
        }
    }

    fn wakes(&self) -> u64 {
        wakes(&self.proxy)
    }

    /// A client of bob through the proxy, idling on INBOX under tag `t`, and the
    /// backend's side of its upstream connection.
    async fn idling_client(&self) -> (LineClient, Backend) {
        let mut client = LineClient::connect(self.proxy.plain)
            .await
            .expect("connect");
        let accepted = support::io::step("accept the proxy's connection", async {
            self.backend.accept().await
        })
        .await
        .expect("the proxy connects upstream");
        let mut backend = Backend(LineClient::from_stream(accepted.0));
        backend
            .send("* OK [CAPABILITY IMAP4rev1 IDLE] scripted")
            .await;
        let id = backend.expect(" ID ").await;
        let id_tag = id.split(' ').next().unwrap().to_owned();
        backend
            .send(&format!("* ID NIL\r\n{id_tag} OK ID completed"))
            .await;
        let greeting = client.read_line().await.expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting}");

        client
            .write_line("l LOGIN bob secret-bob")
            .await
            .expect("LOGIN");
        backend.expect("l LOGIN bob secret-bob").await;
        backend.send("l OK Logged in").await;
        assert_eq!(client.read_line().await.unwrap(), "l OK Logged in");

        client.write_line("s SELECT INBOX").await.expect("SELECT");
        backend.expect("s SELECT INBOX").await;
        backend
            .send("* 0 EXISTS\r\ns OK [READ-WRITE] Select completed")
            .await;
        assert_eq!(
            client.read_until_tagged("s").await.unwrap(),
            ["* 0 EXISTS", "s OK [READ-WRITE] Select completed"]
        );

        client.write_line("t IDLE").await.expect("IDLE");
        backend.expect("t IDLE").await;
        backend.send("+ idling").await;
        assert_eq!(client.read_line().await.unwrap(), "+ idling");
        (client, backend)
    }

    /// One message for bob through the hook; the wake has been signalled when this
    /// returns.
    async fn deliver(&self) {
        Lmtp::connect(self.proxy.delivery.expect("hook"))
            .await
            .deliver("bob@b.test", &plain_message(1))
            .await;
    }
}

/// The backend's end of one upstream connection.
struct Backend(LineClient);

impl Backend {
    async fn send(&mut self, lines: &str) {
        self.0.write_line(lines).await.expect("backend write");
    }

    /// The next line from the proxy.
    async fn line(&mut self) -> String {
        self.0.read_line().await.expect("a line from the proxy")
    }

    /// Answers the proxy's DONE with `* {exists} EXISTS` and the IDLE's tagged OK, and
    /// reads the proxy's next IDLE, which must have the same tag.
    async fn end_idle_and_see_it_restart(&mut self, exists: u32) {
        self.send(&format!(
            "* {exists} EXISTS\r\nt OK Idle completed (0.001 + 0.000 secs)."
        ))
        .await;
        assert_eq!(self.line().await, "t IDLE", "same tag");
    }

    /// Reads the next line from the proxy and checks that it contains `want`.
    async fn expect(&mut self, want: &str) -> String {
        let line = self.0.read_line().await.expect("a line from the proxy");
        assert!(
            line.contains(want),
            "expected {want:?} upstream, got {line:?}"
        );
        line
    }
}

/// The client's `n NOOP` reaches the backend as it is, and the backend's OK the client.
async fn noop_passes_through(client: &mut LineClient, backend: &mut Backend) {
    client.write_line("n NOOP").await.expect("NOOP");
    assert_eq!(backend.line().await, "n NOOP");
    backend.send("n OK NOOP completed").await;
    assert_eq!(client.read_line().await.unwrap(), "n OK NOOP completed");
}

#[tokio::test]
async fn a_wake_during_a_restart_restarts_once_more_after_it() {
    let scripted = Scripted::start().await;
    let (mut client, mut backend) = scripted.idling_client().await;

    scripted.deliver().await;
    backend.expect("DONE").await;
    // A second message while the proxy's DONE is unanswered.
    scripted.deliver().await;
    backend.end_idle_and_see_it_restart(1).await;
    backend.send("+ idling").await;
    // The pending wake: the backend's IDLE ends once more.
    backend.expect("DONE").await;
    backend.end_idle_and_see_it_restart(2).await;
    backend.send("+ idling").await;
    assert_eq!(scripted.wakes(), 2);

    assert_eq!(client.read_line().await.unwrap(), "* 1 EXISTS");
    assert_eq!(client.read_line().await.unwrap(), "* 2 EXISTS");
    client.write_line("DONE").await.unwrap();
    assert_eq!(backend.line().await, "DONE");
    backend
        .send("t OK Idle completed (0.002 + 0.000 secs).")
        .await;
    assert_eq!(
        client.read_line().await.unwrap(),
        "t OK Idle completed (0.002 + 0.000 secs)."
    );
    noop_passes_through(&mut client, &mut backend).await;
}

#[tokio::test]
async fn a_refused_second_idle_ends_the_clients_idle_with_that_reply() {
    let scripted = Scripted::start().await;
    let (mut client, mut backend) = scripted.idling_client().await;

    scripted.deliver().await;
    backend.expect("DONE").await;
    backend.end_idle_and_see_it_restart(1).await;
    backend.send("t NO [LIMIT] Too many IDLEs").await;

    // The client's IDLE is over, with its tag and the backend's reason.
    assert_eq!(client.read_line().await.unwrap(), "* 1 EXISTS");
    assert_eq!(
        client.read_line().await.unwrap(),
        "t NO [LIMIT] Too many IDLEs"
    );
    // The session is back in command mode.
    noop_passes_through(&mut client, &mut backend).await;
    // No longer idling: a wake does nothing.
    scripted.deliver().await;
    client.write_line("m NOOP").await.unwrap();
    assert_eq!(backend.line().await, "m NOOP");
    assert_eq!(scripted.wakes(), 1);
}

#[tokio::test]
async fn a_client_done_while_the_proxys_done_is_unanswered_is_not_sent_again() {
    let scripted = Scripted::start().await;
    let (mut client, mut backend) = scripted.idling_client().await;

    scripted.deliver().await;
    backend.expect("DONE").await;
    client.write_line("DONE").await.unwrap();
    // Pipelined behind the DONE: it must reach the backend after the IDLE's end.
    client.write_line("n NOOP").await.unwrap();
    backend
        .send("* 1 EXISTS\r\nt OK Idle completed (0.001 + 0.000 secs).")
        .await;
    // Either the proxy saw the client's DONE before the reply (no second IDLE), or
    // after it (a second IDLE, then the client's DONE): never DONE twice for one IDLE.
    let next = backend.line().await;
    if next == "t IDLE" {
        backend.send("+ idling").await;
        assert_eq!(backend.line().await, "DONE");
        backend
            .send("t OK Idle completed (0.003 + 0.000 secs).")
            .await;
        assert_eq!(backend.line().await, "n NOOP");
    } else {
        assert_eq!(next, "n NOOP");
    }
    backend.send("n OK NOOP completed").await;
    assert_eq!(client.read_line().await.unwrap(), "* 1 EXISTS");
    let ok = client.read_line().await.unwrap();
    assert!(ok.starts_with("t OK Idle completed"), "{ok}");
    assert_eq!(client.read_line().await.unwrap(), "n OK NOOP completed");
    assert_eq!(scripted.wakes(), 1);
}
