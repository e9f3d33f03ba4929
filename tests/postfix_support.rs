//! The real-Postfix test support works: submission delivers into Dovecot by LMTP, two
//! domains relay to each other's MX, XCLIENT from loopback is honoured (and takes the
//! loopback trust away), the MX listener is no open relay, SMTP AUTH on the submission
//! listener is checked by Dovecot (and is then the only way to relay), and an instance
//! leaves no processes behind.
//!
//! Every network step is bounded (support::io::STEP); waits poll with a deadline.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::dovecot::Dovecot;
use support::io::{tagged_status, LineClient};
use support::mailbox::{
    imap_login, inbox_messages, prime_inbox, wait_for_inbox, DELIVERY_DEADLINE,
};
use support::postfix::{self, smtp, Postfix, PostfixOptions};

/// How long a log line may take to appear.
const LOG_DEADLINE: Duration = Duration::from_secs(5);

/// The header fields `fields` of INBOX message `seq`, as the lines IMAP returned.
async fn fetch_header_fields(client: &mut LineClient, seq: u32, fields: &str) -> String {
    let lines = client.imap("x", "SELECT INBOX").await.expect("SELECT");
    assert_eq!(tagged_status(&lines), "OK", "SELECT: {lines:#?}");
    let lines = client
        .imap(
            "f",
            &format!("FETCH {seq} BODY.PEEK[HEADER.FIELDS ({fields})]"),
        )
        .await
        .expect("FETCH");
    assert_eq!(tagged_status(&lines), "OK", "FETCH: {lines:#?}");
    lines.join("\n")
}

/// Waits for Postfix's `status=sent` line of `queue_id` to `rcpt` and requires it to
/// name `next_hop` as the relay.
fn assert_sent_via(postfix: &Postfix, queue_id: &str, rcpt: &str, next_hop: SocketAddr) {
    let sent = postfix
        .wait_for_log_line(
            &[&format!("{queue_id}: to=<{rcpt}>"), "status=sent"],
            LOG_DEADLINE,
        )
        .unwrap_or_else(|e| panic!("the status=sent line to {rcpt}: {e}"));
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", next_hop.port());
    assert!(sent.contains(&relay), "{sent}");
}

/// Waits for Postfix's `client=` line of `queue_id` and requires it to end with `client`
/// (`client=unknown[192.0.2.7]`, with `, sasl_method=…` after AUTH).
fn assert_client_line(postfix: &Postfix, queue_id: &str, client: &str) {
    let line = postfix
        .wait_for_log(&format!("{queue_id}: client="), LOG_DEADLINE)
        .expect("client log line");
    assert!(line.ends_with(client), "{line}");
}

#[tokio::test]
async fn submission_delivers_to_the_local_dovecot_inbox_by_lmtp() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let started = Instant::now();
    let postfix = Postfix::start(PostfixOptions::new("a.example", dovecot.lmtp_addr()))
        .expect("start postfix");
    eprintln!("postfix started in {:?}", started.elapsed());
    prime_inbox(&dovecot, "alice").await;
    assert_eq!(postfix.domain(), "a.example");
    assert!(postfix.log_contents().contains("daemon started -- version"));

    let sent = Instant::now();
    let message = smtp::message(
        "mary@a.example",
        "alice@a.example",
        "local-delivery",
        "Hello Alice.\r\n.a line that starts with a dot",
    );
    let queue_id = smtp::submit(
        postfix.submission_addr(),
        "mary@a.example",
        &["alice@a.example"],
        &message,
    )
    .await
    .expect("submit");
    wait_for_inbox(&dovecot, "alice", 1, &[&postfix]).await;
    eprintln!("submission -> INBOX in {:?}", sent.elapsed());

    let mut client = imap_login(&dovecot, "alice").await;
    let header = fetch_header_fields(&mut client, 1, "SUBJECT").await;
    assert!(header.contains("Subject: local-delivery"), "{header}");
    let line = postfix
        .wait_for_log(&format!("{queue_id}: removed"), LOG_DEADLINE)
        .expect("queue file removed after delivery");
    assert!(!line.is_empty());
    assert_sent_via(&postfix, &queue_id, "alice@a.example", dovecot.lmtp_addr());
    postfix
        .wait_queue_empty(DELIVERY_DEADLINE)
        .expect("queue empty");
}

#[tokio::test]
async fn two_domains_relay_to_each_others_mx_and_deliver_into_their_dovecot() {
    let dovecot_a = Dovecot::start().expect("start dovecot a");
    let dovecot_b = Dovecot::start().expect("start dovecot b");
    // B first, so that A can route to B's MX; B learns its route to A afterwards.
    let mut postfix_b = Postfix::start(PostfixOptions::new("b.example", dovecot_b.lmtp_addr()))
        .expect("start postfix b");
    let postfix_a = Postfix::start(
        PostfixOptions::new("a.example", dovecot_a.lmtp_addr())
            .route("b.example", postfix_b.mx_addr()),
    )
    .expect("start postfix a");

    prime_inbox(&dovecot_b, "bob").await;
    prime_inbox(&dovecot_a, "alice").await;

    // A's submission -> A's queue -> B's MX -> B's Dovecot (bob).
    let sent = Instant::now();
    let queue_id = smtp::submit(
        postfix_a.submission_addr(),
        "mary@a.example",
        &["bob@b.example"],
        &smtp::message("mary@a.example", "bob@b.example", "a-to-b", "Hi Bob."),
    )
    .await
    .expect("submit at a");
    wait_for_inbox(&dovecot_b, "bob", 1, &[&postfix_a, &postfix_b]).await;
    eprintln!("a -> b delivered in {:?}", sent.elapsed());
    assert_sent_via(&postfix_a, &queue_id, "bob@b.example", postfix_b.mx_addr());
    postfix_b
        .wait_for_log("postfix/mx/smtpd", LOG_DEADLINE)
        .expect("b received on its MX listener");

    // And back: B gets its route to A (a restart that keeps ports and queue).
    let b_mx_before = postfix_b.mx_addr();
    postfix_b
        .set_relay_routes(vec![("a.example".to_owned(), postfix_a.mx_addr())])
        .expect("route b -> a");
    assert_eq!(postfix_b.mx_addr(), b_mx_before);
    smtp::submit(
        postfix_b.submission_addr(),
        "bob@b.example",
        &["alice@a.example"],
        &smtp::message("bob@b.example", "alice@a.example", "b-to-a", "Hi Alice."),
    )
    .await
    .expect("submit at b");
    wait_for_inbox(&dovecot_a, "alice", 1, &[&postfix_b, &postfix_a]).await;

    // Nothing was delivered to the wrong side.
    let mut alice_b = imap_login(&dovecot_b, "alice").await;
    assert_eq!(inbox_messages(&mut alice_b).await, Ok(0));
    let mut bob_a = imap_login(&dovecot_a, "bob").await;
    assert_eq!(inbox_messages(&mut bob_a).await, Ok(0));
}

#[tokio::test]
async fn xclient_from_loopback_sets_the_client_and_drops_loopback_trust() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let postfix = Postfix::start(PostfixOptions::new("a.example", dovecot.lmtp_addr()))
        .expect("start postfix");
    prime_inbox(&dovecot, "alice").await;

    let mut client = smtp::connect(postfix.submission_addr())
        .await
        .expect("connect");
    let ehlo = smtp::expect(&mut client, "EHLO proxy.test", 250)
        .await
        .expect("EHLO");
    assert!(
        ehlo.ehlo_keywords().iter().any(|k| k == "XCLIENT"),
        "XCLIENT not offered to loopback: {ehlo:?}"
    );
    let reply = smtp::command(&mut client, "XCLIENT ADDR=192.0.2.7")
        .await
        .expect("XCLIENT");
    assert_eq!(reply.code, 220, "XCLIENT: {reply:?}");
    // XCLIENT restarts the session: EHLO again; 192.0.2.7 is not authorized for XCLIENT.
    let ehlo = smtp::expect(&mut client, "EHLO proxy.test", 250)
        .await
        .expect("EHLO after XCLIENT");
    assert!(!ehlo.ehlo_keywords().iter().any(|k| k == "XCLIENT"));

    smtp::expect(&mut client, "MAIL FROM:<mary@a.example>", 250)
        .await
        .expect("MAIL");
    smtp::expect(&mut client, "RCPT TO:<alice@a.example>", 250)
        .await
        .expect("RCPT local");
    // The real client is not in mynetworks: relaying is refused (SECURITY-CASES §D).
    let relay = smtp::command(&mut client, "RCPT TO:<peter@b.example>")
        .await
        .expect("RCPT remote");
    assert_eq!(relay.code, 554, "relay after XCLIENT: {relay:?}");
    assert!(relay.text().contains("Relay access denied"), "{relay:?}");
    smtp::expect(&mut client, "DATA", 354).await.expect("DATA");
    let message = smtp::message("mary@a.example", "alice@a.example", "via-xclient", "Hi.");
    client
        .write_raw(&smtp::data_payload(&message))
        .await
        .expect("write data");
    let done = smtp::read_reply(&mut client).await.expect("end of data");
    assert_eq!(done.code, 250, "{done:?}");
    let queue_id = done.queue_id().expect("queue id");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");

    assert_client_line(&postfix, &queue_id, "client=unknown[192.0.2.7]");
    let reject = postfix
        .wait_for_log("Relay access denied", LOG_DEADLINE)
        .expect("reject log line");
    assert!(reject.contains("RCPT from unknown[192.0.2.7]"), "{reject}");

    wait_for_inbox(&dovecot, "alice", 1, &[&postfix]).await;
    let mut alice = imap_login(&dovecot, "alice").await;
    let received = fetch_header_fields(&mut alice, 1, "RECEIVED").await;
    assert!(received.contains("[192.0.2.7]"), "{received}");
}

#[tokio::test]
async fn mx_listener_is_no_open_relay_even_from_loopback() {
    // SECURITY-CASES §D 31 against the bare backend: the MX listener has no
    // permit_mynetworks. No Dovecot needed: nothing is delivered.
    let unused_lmtp = "127.0.0.1:9".parse().expect("addr");
    let postfix =
        Postfix::start(PostfixOptions::new("a.example", unused_lmtp)).expect("start postfix");
    let mut client = smtp::connect(postfix.mx_addr()).await.expect("connect");
    smtp::expect(&mut client, "EHLO relay.test", 250)
        .await
        .expect("EHLO");
    smtp::expect(&mut client, "MAIL FROM:<x@evil.example>", 250)
        .await
        .expect("MAIL");
    let relay = smtp::command(&mut client, "RCPT TO:<y@remote.example>")
        .await
        .expect("RCPT");
    assert_eq!(relay.code, 554, "{relay:?}");
    smtp::expect(&mut client, "RCPT TO:<alice@a.example>", 250)
        .await
        .expect("RCPT for the local domain");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");
    assert!(postfix.queue_ids().expect("queue ids").is_empty());
}

#[tokio::test]
async fn mail_for_a_stopped_peer_is_deferred_and_flush_delivers_it_after_restart() {
    let dovecot_a = Dovecot::start().expect("start dovecot a");
    let dovecot_b = Dovecot::start().expect("start dovecot b");
    let mut postfix_b = Postfix::start(PostfixOptions::new("b.example", dovecot_b.lmtp_addr()))
        .expect("start postfix b");
    let postfix_a = Postfix::start(
        PostfixOptions::new("a.example", dovecot_a.lmtp_addr())
            .route("b.example", postfix_b.mx_addr()),
    )
    .expect("start postfix a");

    prime_inbox(&dovecot_b, "bob").await;
    postfix_b.stop().expect("stop b");
    assert!(!postfix_b.is_running());
    assert!(postfix_b.processes().is_empty());
    let queue_id = smtp::submit(
        postfix_a.submission_addr(),
        "mary@a.example",
        &["bob@b.example"],
        &smtp::message("mary@a.example", "bob@b.example", "deferred", "Later."),
    )
    .await
    .expect("submit at a");
    let deferred = postfix_a
        .wait_for_log_line(
            &[
                &format!("{queue_id}: to=<bob@b.example>"),
                "status=deferred",
            ],
            LOG_DEADLINE,
        )
        .expect("deferral log line");
    assert!(deferred.contains("Connection refused"), "{deferred}");
    assert_eq!(
        postfix_a.queue_ids().expect("queue"),
        vec![queue_id.clone()]
    );
    assert!(postfix_a.mailq().expect("mailq").contains(&queue_id));

    postfix_b.restart().expect("restart b");
    assert!(postfix_b.is_running());
    let flushed = Instant::now();
    postfix_a.flush().expect("flush a");
    wait_for_inbox(&dovecot_b, "bob", 1, &[&postfix_a, &postfix_b]).await;
    eprintln!("flush -> delivered in {:?}", flushed.elapsed());
    postfix_a
        .wait_queue_empty(DELIVERY_DEADLINE)
        .expect("a's queue empty");
}

#[tokio::test]
async fn drop_leaves_no_postfix_processes_behind() {
    let unused_lmtp = "127.0.0.1:9".parse().expect("addr");
    let postfix =
        Postfix::start(PostfixOptions::new("a.example", unused_lmtp)).expect("start postfix");
    // Make the master spawn more daemons (smtpd, cleanup, trivial-rewrite).
    let mut client = smtp::connect(postfix.submission_addr())
        .await
        .expect("connect");
    smtp::expect(&mut client, "EHLO drop.test", 250)
        .await
        .expect("EHLO");
    smtp::expect(&mut client, "MAIL FROM:<mary@a.example>", 250)
        .await
        .expect("MAIL");
    smtp::expect(&mut client, "RCPT TO:<alice@a.example>", 250)
        .await
        .expect("RCPT");

    let master = postfix.master_pid().expect("master pid");
    let processes = postfix.processes();
    assert!(processes.contains(&master), "{processes:?}");
    assert!(
        processes.len() >= 4,
        "master, pickup, qmgr, smtpd, ...: {processes:?}"
    );
    let dir = postfix.dir().to_owned();

    let stopped = Instant::now();
    drop(postfix);
    eprintln!("drop took {:?}", stopped.elapsed());
    assert!(!postfix::process_alive(master), "master {master} survived");
    let left: Vec<u32> = processes
        .iter()
        .copied()
        .filter(|pid| postfix::process_alive(*pid))
        .filter(|pid| postfix::live_group_members(master).contains(pid))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(postfix::live_group_members(master).is_empty());
    assert!(!dir.exists(), "{} not removed", dir.display());
    // The SMTP session was cut (at most a 421 first), not left hanging.
    let next = client.read_line().await;
    assert!(
        next.is_err() || next.as_deref().is_ok_and(|l| l.starts_with("421")),
        "{next:?}"
    );
}

#[tokio::test]
async fn kill_cuts_sessions_and_restart_serves_on_the_same_ports() {
    let unused_lmtp = "127.0.0.1:9".parse().expect("addr");
    let mut postfix =
        Postfix::start(PostfixOptions::new("a.example", unused_lmtp)).expect("start postfix");
    let submission = postfix.submission_addr();
    let mut client = smtp::connect(submission).await.expect("connect");
    smtp::expect(&mut client, "EHLO kill.test", 250)
        .await
        .expect("EHLO");
    let master = postfix.master_pid().expect("master pid");

    postfix.kill().expect("kill");
    assert!(!postfix.is_running());
    assert!(!postfix::process_alive(master));
    assert!(postfix::live_group_members(master).is_empty());
    // The open session is cut without a reply; new connections are refused.
    let cut = smtp::command(&mut client, "NOOP").await;
    assert!(cut.is_err(), "{cut:?}");
    let refused = tokio::net::TcpStream::connect(submission).await;
    assert!(refused.is_err(), "still accepting after kill");

    postfix.restart().expect("restart");
    assert_eq!(postfix.submission_addr(), submission);
    let mut client = smtp::connect(submission).await.expect("connect again");
    smtp::expect(&mut client, "EHLO kill.test", 250)
        .await
        .expect("EHLO again");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");
}

/// A Postfix for `a.example` whose submission listener takes SMTP AUTH, checked by
/// `dovecot`, with relay `routes` to other domains.
fn start_sasl_postfix(dovecot: &Dovecot, routes: &[(&str, SocketAddr)]) -> Postfix {
    let mut options =
        PostfixOptions::new("a.example", dovecot.lmtp_addr()).sasl(dovecot.auth_addr());
    for (domain, addr) in routes {
        options = options.route(domain, *addr);
    }
    Postfix::start(options).expect("start postfix with sasl")
}

/// Connects to `addr` and says EHLO; returns the client and the EHLO reply.
async fn ehlo_session(addr: SocketAddr) -> (LineClient, smtp::Reply) {
    let mut client = smtp::connect(addr).await.expect("connect");
    let ehlo = smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .expect("EHLO");
    (client, ehlo)
}

/// The mechanisms of the EHLO `AUTH` line (empty when AUTH is not offered).
fn auth_mechanisms(ehlo: &smtp::Reply) -> Vec<String> {
    ehlo.lines
        .iter()
        .skip(1)
        .find(|line| line.to_ascii_uppercase().starts_with("AUTH "))
        .map(|line| line.split_whitespace().skip(1).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn sasl_submission_answers_auth_plain_235_for_dovecot_users_and_535_for_a_wrong_password() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let postfix = start_sasl_postfix(&dovecot, &[]);

    let (mut client, ehlo) = ehlo_session(postfix.submission_addr()).await;
    let mechanisms = auth_mechanisms(&ehlo);
    assert!(
        mechanisms.iter().any(|m| m == "PLAIN") && mechanisms.iter().any(|m| m == "LOGIN"),
        "AUTH PLAIN LOGIN not offered in plaintext: {ehlo:?}"
    );
    let wrong = smtp::auth_plain(&mut client, "alice", "secret-bob")
        .await
        .expect("AUTH PLAIN, wrong password");
    assert_eq!(wrong.code, 535, "{wrong:?}");
    assert!(wrong.text().starts_with("5.7.8"), "{wrong:?}");
    // A failure leaves the session usable: the right password in the same session.
    let alice = dovecot.password_of("alice").expect("alice");
    let good = smtp::auth_plain(&mut client, "alice", alice)
        .await
        .expect("AUTH PLAIN");
    assert_eq!(good.code, 235, "{good:?}");
    assert!(good.text().starts_with("2.7.0"), "{good:?}");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");

    // Every Dovecot test user, each in a session of its own.
    for user in dovecot.users() {
        let (mut client, _) = ehlo_session(postfix.submission_addr()).await;
        let reply = smtp::auth_plain(&mut client, user.name, user.password)
            .await
            .expect("AUTH PLAIN");
        assert_eq!(reply.code, 235, "{}: {reply:?}", user.name);
    }
    let unknown = {
        let (mut client, _) = ehlo_session(postfix.submission_addr()).await;
        smtp::auth_plain(&mut client, "mallory", "secret-mallory")
            .await
            .expect("AUTH PLAIN, unknown user")
    };
    assert_eq!(unknown.code, 535, "{unknown:?}");

    // The MX listener never offers AUTH.
    let (_, mx_ehlo) = ehlo_session(postfix.mx_addr()).await;
    assert!(auth_mechanisms(&mx_ehlo).is_empty(), "{mx_ehlo:?}");
    let failed = postfix
        .wait_for_log("SASL PLAIN authentication failed", LOG_DEADLINE)
        .expect("auth failure log line");
    assert!(failed.contains("postfix/submission/smtpd"), "{failed}");
}

#[tokio::test]
async fn sasl_submission_answers_auth_login_235_for_good_and_535_for_bad_credentials() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let postfix = start_sasl_postfix(&dovecot, &[]);

    let (mut client, _) = ehlo_session(postfix.submission_addr()).await;
    let wrong = smtp::auth_login(&mut client, "bob", "secret-alice")
        .await
        .expect("AUTH LOGIN, wrong password");
    assert_eq!(wrong.code, 535, "{wrong:?}");
    let bob = dovecot.password_of("bob").expect("bob");
    let good = smtp::auth_login(&mut client, "bob", bob)
        .await
        .expect("AUTH LOGIN");
    assert_eq!(good.code, 235, "{good:?}");
    // One successful AUTH per session (RFC 4954): a second one is refused.
    let again = smtp::auth_login(&mut client, "bob", bob)
        .await
        .expect("second AUTH");
    assert_eq!(again.code, 503, "{again:?}");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");
}

#[tokio::test]
async fn sasl_submission_relays_for_authenticated_clients_and_denies_unauthenticated_loopback() {
    // One Dovecot behind both domains: bob@b.example lands in its `bob`.
    let dovecot = Dovecot::start().expect("start dovecot");
    let postfix_b = Postfix::start(PostfixOptions::new("b.example", dovecot.lmtp_addr()))
        .expect("start postfix b");
    let postfix_a = start_sasl_postfix(&dovecot, &[("b.example", postfix_b.mx_addr())]);
    prime_inbox(&dovecot, "bob").await;

    // Without AUTH, loopback is not trusted to relay on this listener (it still
    // receives for its own domain).
    let (mut client, _) = ehlo_session(postfix_a.submission_addr()).await;
    smtp::expect(&mut client, "MAIL FROM:<alice@a.example>", 250)
        .await
        .expect("MAIL");
    let relay = smtp::command(&mut client, "RCPT TO:<bob@b.example>")
        .await
        .expect("RCPT remote");
    assert_eq!(relay.code, 554, "unauthenticated relay: {relay:?}");
    assert!(
        relay.text().starts_with("5.7.1") && relay.text().contains("Relay access denied"),
        "{relay:?}"
    );
    smtp::expect(&mut client, "RCPT TO:<alice@a.example>", 250)
        .await
        .expect("RCPT for the local domain");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");
    let reject = postfix_a
        .wait_for_log("Relay access denied", LOG_DEADLINE)
        .expect("reject log line");
    assert!(reject.contains("RCPT from unknown[127.0.0.1]"), "{reject}");

    // After AUTH the same recipient is accepted and the message goes to b's MX.
    let (mut client, _) = ehlo_session(postfix_a.submission_addr()).await;
    let alice = dovecot.password_of("alice").expect("alice");
    let auth = smtp::auth_plain(&mut client, "alice", alice)
        .await
        .expect("AUTH PLAIN");
    assert_eq!(auth.code, 235, "{auth:?}");
    let message = smtp::message("alice@a.example", "bob@b.example", "sasl-relay", "Hi Bob.");
    let done = smtp::send_in_session(&mut client, "alice@a.example", &["bob@b.example"], &message)
        .await
        .expect("authenticated relay");
    let queue_id = done.queue_id().expect("queue id");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");

    assert_client_line(
        &postfix_a,
        &queue_id,
        "client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice",
    );
    assert_sent_via(&postfix_a, &queue_id, "bob@b.example", postfix_b.mx_addr());
    wait_for_inbox(&dovecot, "bob", 1, &[&postfix_a, &postfix_b]).await;
}

#[tokio::test]
async fn xclient_then_ehlo_then_auth_authenticates_the_real_client() {
    // The proxy's order: greeting, EHLO, XCLIENT, EHLO, then the client's AUTH.
    let dovecot = Dovecot::start().expect("start dovecot");
    // A route, so that Postfix accepts b.example recipients (without one it rejects
    // them at RCPT); nothing is sent there.
    let unused_mx = "127.0.0.1:9".parse().expect("addr");
    let postfix = start_sasl_postfix(&dovecot, &[("b.example", unused_mx)]);
    prime_inbox(&dovecot, "alice").await;

    let (mut client, _) = ehlo_session(postfix.submission_addr()).await;
    let reply = smtp::command(&mut client, "XCLIENT ADDR=192.0.2.7")
        .await
        .expect("XCLIENT");
    assert_eq!(reply.code, 220, "XCLIENT: {reply:?}");
    let ehlo = smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .expect("EHLO after XCLIENT");
    assert!(
        auth_mechanisms(&ehlo).iter().any(|m| m == "PLAIN"),
        "AUTH PLAIN not offered after XCLIENT: {ehlo:?}"
    );
    let carol = dovecot.password_of("carol").expect("carol");
    let auth = smtp::auth_plain(&mut client, "carol", carol)
        .await
        .expect("AUTH PLAIN");
    assert_eq!(auth.code, 235, "{auth:?}");

    // Authenticated, the real client may relay ...
    smtp::expect(&mut client, "MAIL FROM:<carol@a.example>", 250)
        .await
        .expect("MAIL");
    smtp::expect(&mut client, "RCPT TO:<peter@b.example>", 250)
        .await
        .expect("RCPT remote after AUTH");
    // ... (the recipient is dropped again, never sent) and delivers locally.
    smtp::expect(&mut client, "RSET", 250).await.expect("RSET");
    let message = smtp::message("carol@a.example", "alice@a.example", "xclient-auth", "Hi.");
    let done = smtp::send_in_session(
        &mut client,
        "carol@a.example",
        &["alice@a.example"],
        &message,
    )
    .await
    .expect("send after XCLIENT and AUTH");
    let queue_id = done.queue_id().expect("queue id");
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");

    assert_client_line(
        &postfix,
        &queue_id,
        "client=unknown[192.0.2.7], sasl_method=PLAIN, sasl_username=carol",
    );
    wait_for_inbox(&dovecot, "alice", 1, &[&postfix]).await;
}
