//! The submission front against real Postfix and Dovecot on loopback, two domains:
//! a.test (Dovecot A, Postfix A with SASL by Dovecot A, the proxy in front of its
//! submission listener) and b.test (Dovecot B, Postfix B's MX).
//!
//! What is checked: AUTH relayed to Postfix and the user learned from it; the envelope
//! and `From` owned by that user; chat mail arriving with exactly one token per visible
//! recipient and none for Bcc; client-supplied token fields removed; other mail
//! byte-identical; XCLIENT naming the real client; Postfix failures giving 451, never 250.
//!
//! Every network step is bounded (support::io::STEP); waits poll with a deadline.

mod support;

use coi_proxy::coi::address;
use coi_proxy::coi::token::{self, Secret, Secrets, TokenKind};
use support::io::LineClient;
use support::mailbox::{fetch_message, imap_login, prime_inbox, wait_for_inbox};
use support::postfix::smtp;
use support::proxy::{SubmissionOptions, PERMANENT_SECRET, TEMPORARY_SECRET};
use support::world::{send, Inbound, World};

/// Two domains and the proxy in front of a.test's submission listener; Postfix B
/// delivers to Dovecot B directly.
async fn two_domains() -> World {
    two_domains_with(|_| {}).await
}

async fn two_domains_with(tweak: impl FnOnce(&mut SubmissionOptions) + 'static) -> World {
    World::builder()
        .inbound(Inbound::Dovecot)
        .submission(tweak)
        .start()
        .await
}

fn secrets() -> Secrets {
    Secrets {
        temporary: vec![Secret::new(TEMPORARY_SECRET).unwrap()],
        permanent: vec![Secret::new(PERMANENT_SECRET).unwrap()],
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The values of the `X-COI-Temporary-Token` fields of a message given as lines (the
/// value is on the continuation line: a token is longer than a 78-column line).
fn tokens_in(lines: &[String]) -> Vec<String> {
    let header_end = lines
        .iter()
        .position(String::is_empty)
        .unwrap_or(lines.len());
    let header = &lines[..header_end];
    header
        .windows(2)
        .filter(|pair| pair[0].eq_ignore_ascii_case("X-COI-Temporary-Token:"))
        .map(|pair| pair[1].trim().to_owned())
        .collect()
}

/// Whether one of `tokens` is a valid temporary token for `recipient` → `sender`
/// (bound to H(recipient ":" sender), COI-PROTOCOL §4.1).
fn has_token_for(tokens: &[String], recipient: &str, sender: &str) -> bool {
    let recipient = address::normalize(recipient).unwrap();
    let sender = address::normalize(sender).unwrap();
    let hash = token::pair_hash(Some(&recipient), &sender);
    tokens
        .iter()
        .any(|t| token::verify(t, &hash, now(), &secrets()) == Ok(TokenKind::Temporary))
}

#[tokio::test]
async fn chat_mail_arrives_with_one_token_per_visible_recipient_and_none_for_bcc() {
    let world = two_domains().await;
    for user in ["alice", "bob", "carol"] {
        prime_inbox(&world.dovecot_b, user).await;
    }
    prime_inbox(&world.dovecot_a, "carol").await;
    let mut client = world.logged_in("alice").await;
    let text = "From: Alice <alice@a.test>\r\n\
                To: bob@b.test\r\n\
                Cc: carol@a.test, Carol B <carol@b.test>\r\n\
                Bcc: alice@b.test\r\n\
                Subject: chat\r\n\
                Chat-Version: 1.0\r\n\
                X-COI-Temporary-Token: 1-created:1-validity:1-hash:forged-secret:forged\r\n\
                Message-ID: <chat$1@a.test>\r\n\
                \r\n\
                hello from the proxy";
    let reply = send(
        &mut client,
        "alice@a.test",
        &["bob@b.test", "carol@a.test", "carol@b.test", "alice@b.test"],
        text,
    )
    .await;
    assert_eq!(reply.code, 250, "{}", reply.text());
    smtp::expect(&mut client, "QUIT", 221).await.expect("QUIT");

    wait_for_inbox(&world.dovecot_b, "bob", 1, &world.postfixes()).await;
    wait_for_inbox(&world.dovecot_b, "carol", 1, &world.postfixes()).await;
    wait_for_inbox(&world.dovecot_b, "alice", 1, &world.postfixes()).await;
    wait_for_inbox(&world.dovecot_a, "carol", 1, &world.postfixes()).await;

    for (dovecot, user) in [
        (&world.dovecot_b, "bob"),
        (&world.dovecot_b, "carol"),
        (&world.dovecot_b, "alice"),
        (&world.dovecot_a, "carol"),
    ] {
        let mut imap = imap_login(dovecot, user).await;
        let message = fetch_message(&mut imap, "INBOX", 1).await;
        let tokens = tokens_in(&message);
        let text = message.join("\n");
        assert_eq!(tokens.len(), 3, "{user}: one per visible recipient\n{text}");
        assert!(
            !text.contains("forged"),
            "{user}: the client's token is gone\n{text}"
        );
        for recipient in ["bob@b.test", "carol@a.test", "carol@b.test"] {
            assert!(
                has_token_for(&tokens, recipient, "alice@a.test"),
                "{user}: a token for {recipient}\n{text}"
            );
        }
        assert!(
            !has_token_for(&tokens, "alice@b.test", "alice@a.test"),
            "{user}: none for the Bcc recipient"
        );
        assert!(
            !text.to_ascii_lowercase().contains("\nbcc:"),
            "{user}: Postfix removed the Bcc field\n{text}"
        );
        assert!(text.contains("\nX-COI-Server: coi.a.test:4433\n"), "{text}");
        assert!(text.ends_with("\nhello from the proxy"), "{text}");
    }
    let metrics = world.proxy_a.metrics_text();
    assert!(
        metrics.contains("coi_proxy_submission_token_injections_total 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("coi_proxy_submission_messages_total{outcome=\"relayed\"} 1"));
}

#[tokio::test]
async fn other_mail_arrives_byte_identical_and_xclient_names_the_real_client() {
    let world = two_domains().await;
    prime_inbox(&world.dovecot_b, "bob").await;
    // From 127.0.0.9: Postfix must log that address, not the proxy's.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let stream = support::io::step("connect", socket.connect(world.submission()))
        .await
        .expect("connect from 127.0.0.9");
    let mut client = LineClient::from_stream(stream);
    assert_eq!(smtp::read_reply(&mut client).await.unwrap().code, 220);
    smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .unwrap();
    let reply = smtp::auth_plain(&mut client, "alice", "secret-alice")
        .await
        .unwrap();
    assert_eq!(reply.code, 235);
    // With its own Message-ID and Date, so that Postfix adds nothing but Received; the
    // body has a lone dot and a leading dot, stuffed as a client must.
    let body = "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: plain\r\nX-COI-Temporary-Token: forged\r\nMessage-ID: <plain.1@a.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\n..leading dot\r\n..\r\n\r\n\ttab line\r\nlast";
    let reply = send(&mut client, "alice@a.test", &["bob@b.test"], body).await;
    assert_eq!(reply.code, 250, "{}", reply.text());
    let queue_id = reply.queue_id().expect("queue id");
    world
        .postfix_a
        .wait_for_log(
            &format!("{queue_id}: client=unknown[127.0.0.9]"),
            support::io::STEP,
        )
        .expect("Postfix names the real client");
    world
        .postfix_a
        .wait_for_log("sasl_username=alice", support::io::STEP)
        .expect("Postfix knows the user");
    // The forged field is removed even from non-chat mail; the rest is as sent (the
    // client's ".." is one dot on the wire's far side).
    let expected = body
        .replace("X-COI-Temporary-Token: forged\r\n", "")
        .replace("\r\n..", "\r\n.");
    assert_eq!(bobs_message_from_alice(&world).await, expected);
}

/// Bob's first INBOX message once it has arrived, from the client's first header field
/// on (what Postfix and Dovecot put above it cut off).
async fn bobs_message_from_alice(world: &World) -> String {
    wait_for_inbox(&world.dovecot_b, "bob", 1, &world.postfixes()).await;
    let mut imap = imap_login(&world.dovecot_b, "bob").await;
    let message = fetch_message(&mut imap, "INBOX", 1).await.join("\r\n");
    let start = message
        .find("From: alice@a.test")
        .expect("the client's header");
    message[start..].to_owned()
}

#[tokio::test]
async fn a_body_of_thousands_of_dot_lines_arrives_intact() {
    // Each stuffed line is its own piece on the way to Postfix (it gets its dot back),
    // so one read of the client's data makes about two thousand pieces: more than one
    // gathering write takes (IOV_MAX, 1024 on Linux), so the write goes on in several.
    let world = two_domains().await;
    prime_inbox(&world.dovecot_b, "bob").await;
    let lines: Vec<String> = (0..6000).map(|i| format!("..{i}")).collect();
    let body = format!(
        "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: dots\r\nMessage-ID: <dots.1@a.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\n{}",
        lines.join("\r\n")
    );
    world.send_from("alice", &["bob@b.test"], &body).await;
    assert_eq!(
        bobs_message_from_alice(&world).await,
        body.replace("\r\n..", "\r\n.")
    );
}

#[tokio::test]
async fn the_envelope_sender_and_from_must_belong_to_the_authenticated_user() {
    let world = two_domains().await;
    let mut client = world.logged_in("alice").await;
    // SECURITY-CASES case 32.
    let reply = smtp::command(&mut client, "MAIL FROM:<bob@a.test>")
        .await
        .unwrap();
    assert_eq!(
        (reply.code, reply.text().contains("5.7.1")),
        (553, true),
        "{}",
        reply.text()
    );
    let reply = send(
        &mut client,
        "alice@a.test",
        &["bob@b.test"],
        "From: Bob <bob@a.test>\r\nTo: bob@b.test\r\n\r\nforged",
    )
    .await;
    assert_eq!(reply.code, 553, "{}", reply.text());
    // Null sender and the user's own address in any case are fine.
    smtp::expect(&mut client, "MAIL FROM:<>", 250)
        .await
        .unwrap();
    smtp::expect(&mut client, "RSET", 250).await.unwrap();
    let reply = send(
        &mut client,
        "ALICE@A.TEST",
        &["bob@b.test"],
        "From: alice@A.test\r\nTo: bob@b.test\r\n\r\nmine",
    )
    .await;
    assert_eq!(reply.code, 250, "{}", reply.text());
    // Only that one message was queued: once it has left the queue, the log holds every
    // queue line of this test (the log is written asynchronously).
    let queue_id = reply.queue_id().expect("queue id");
    world
        .postfix_a
        .wait_for_log(&format!("{queue_id}: removed"), support::io::STEP * 2)
        .expect("the message left the queue");
    let log = world.postfix_a.log_contents().to_ascii_lowercase();
    assert_eq!(log.matches(": from=<alice@a.test>").count(), 1, "{log}");
}

#[tokio::test]
async fn mail_before_auth_and_auth_before_tls_are_refused() {
    let world = two_domains_with(|s| s.plaintext_auth = false).await;
    let mut client = smtp::connect(world.submission()).await.unwrap();
    let ehlo = smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .unwrap();
    assert!(
        !ehlo.ehlo_keywords().contains(&"AUTH".to_owned()),
        "{ehlo:?}"
    );
    assert!(!ehlo.ehlo_keywords().contains(&"CHUNKING".to_owned()));
    assert!(!ehlo.ehlo_keywords().contains(&"XCLIENT".to_owned()));
    // SECURITY-CASES case 12.
    let reply = smtp::auth_plain(&mut client, "alice", "secret-alice")
        .await
        .unwrap();
    assert_eq!(reply.code, 530, "{}", reply.text());
    let reply = smtp::command(&mut client, "MAIL FROM:<alice@a.test>")
        .await
        .unwrap();
    assert_eq!(reply.code, 530, "{}", reply.text());
    let reply = smtp::command(&mut client, "XCLIENT ADDR=1.2.3.4")
        .await
        .unwrap();
    assert_eq!(reply.code, 550);
}

#[tokio::test]
async fn wrong_passwords_are_relayed_and_end_the_session_after_three() {
    let world = two_domains().await;
    let mut client = smtp::connect(world.submission()).await.unwrap();
    smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .unwrap();
    for attempt in 1..=3 {
        let reply = smtp::auth_plain(&mut client, "alice", "wrong")
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(reply.code, 535, "{}", reply.text());
        } else {
            assert_eq!(reply.code, 535);
            let bye = smtp::read_reply(&mut client).await.unwrap();
            assert_eq!(bye.code, 421, "{}", bye.text());
        }
    }
    // AUTH LOGIN works too, in a new session.
    let mut client = smtp::connect(world.submission()).await.unwrap();
    smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .unwrap();
    let reply = smtp::auth_login(&mut client, "bob", "secret-bob")
        .await
        .unwrap();
    assert_eq!(reply.code, 235, "{}", reply.text());
    let reply = smtp::command(&mut client, "MAIL FROM:<alice@a.test>")
        .await
        .unwrap();
    assert_eq!(reply.code, 553, "bob is not alice: {}", reply.text());
    smtp::expect(&mut client, "MAIL FROM:<bob@a.test>", 250)
        .await
        .unwrap();
}

#[tokio::test]
async fn postfix_stopped_gives_451_and_never_250() {
    let mut world = two_domains().await;
    let mut client = world.logged_in("alice").await;
    world.postfix_a.stop().expect("stop postfix a");
    // SECURITY-CASES case 61: the transaction cannot start; nothing is acknowledged.
    let reply = smtp::command(&mut client, "MAIL FROM:<alice@a.test>")
        .await
        .unwrap();
    assert_eq!(reply.code, 451, "{}", reply.text());
    let reply = smtp::command(&mut client, "RCPT TO:<bob@b.test>")
        .await
        .unwrap();
    assert_eq!(reply.code, 503, "{}", reply.text());
    // A new client cannot authenticate: 454, a temporary failure.
    let mut other = smtp::connect(world.submission()).await.unwrap();
    smtp::expect(&mut other, "EHLO client.test", 250)
        .await
        .unwrap();
    let reply = smtp::auth_plain(&mut other, "alice", "secret-alice")
        .await
        .unwrap();
    assert_eq!(reply.code, 454, "{}", reply.text());
    // Postfix back: the authenticated session goes on (XCLIENT LOGIN keeps the user).
    world.postfix_a.restart().expect("restart postfix a");
    prime_inbox(&world.dovecot_b, "bob").await;
    next_message_reaches_bob(&world, &mut client).await;
}

/// The session goes on: alice's next message to bob@b.test (whose INBOX was primed, and
/// empty) gets 250 and arrives.
async fn next_message_reaches_bob(world: &World, client: &mut LineClient) {
    let text = "Subject: after\r\n\r\nx";
    let reply = send(client, "alice@a.test", &["bob@b.test"], text).await;
    assert_eq!(reply.code, 250, "the next message: {}", reply.text());
    wait_for_inbox(&world.dovecot_b, "bob", 1, &world.postfixes()).await;
}

/// Postfix restarted while a session is idle between two messages: its connection to
/// the proxy is gone, and the proxy notices at the next MAIL (without waiting) and takes
/// a new one. The client sees nothing of it: 250 for both messages, both delivered.
#[tokio::test]
async fn postfix_restarted_between_messages_is_invisible_to_the_session() {
    let mut world = two_domains().await;
    prime_inbox(&world.dovecot_b, "bob").await;
    let mut client = world.logged_in("alice").await;
    for (n, subject) in ["before", "after"].into_iter().enumerate() {
        if n == 1 {
            world.postfix_a.restart().expect("restart postfix a");
        }
        let text = format!("Subject: {subject}\r\n\r\nx");
        let reply = send(&mut client, "alice@a.test", &["bob@b.test"], &text).await;
        assert_eq!(reply.code, 250, "{subject}: {}", reply.text());
    }
    wait_for_inbox(&world.dovecot_b, "bob", 2, &world.postfixes()).await;
}

/// Postfix refuses DATA (an `smtpd_data_restrictions` rule of its own). The proxy does
/// not wait for Postfix's 354 (docs/submission.md §3), so the client already has the
/// proxy's and sends the message; Postfix's refusal is then the reply to the end of
/// data. Nothing is queued, and the session's next transaction goes through.
#[tokio::test]
async fn data_refused_by_postfix_is_the_reply_to_the_end_of_data() {
    let mut world = two_domains().await;
    // With a single recipient, the data restrictions see it.
    world
        .postfix_a
        .add_to_main_cf(
            "smtpd_data_restrictions = check_recipient_access \
             inline:{ { carol@b.test = 554 5.7.1 no data for carol } }",
        )
        .expect("a data restriction for Postfix a");
    prime_inbox(&world.dovecot_b, "bob").await;
    let mut client = world.logged_in("alice").await;

    let reply = send(
        &mut client,
        "alice@a.test",
        &["carol@b.test"],
        "Subject: refused\r\n\r\nx",
    )
    .await;
    assert_eq!(reply.code, 554, "{}", reply.text());
    assert!(
        reply.text().contains("no data for carol"),
        "Postfix's own refusal: {}",
        reply.text()
    );
    world
        .postfix_a
        .wait_for_log("no data for carol", std::time::Duration::from_secs(10))
        .expect("Postfix logged its refusal of DATA");
    assert_eq!(
        world.postfix_a.queue_ids().expect("mailq"),
        Vec::<String>::new(),
        "nothing queued for the refused message"
    );

    next_message_reaches_bob(&world, &mut client).await;
}

#[tokio::test]
async fn pipelined_transactions_are_answered_in_order() {
    let world = two_domains().await;
    prime_inbox(&world.dovecot_b, "bob").await;
    let mut client = world.logged_in("alice").await;
    let mut batch = String::new();
    for i in 0..3 {
        batch.push_str(&format!(
            "MAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\nSubject: {i}\r\n\r\nbody {i}\r\n.\r\n"
        ));
    }
    batch.push_str("QUIT\r\n");
    client.write_raw(batch.as_bytes()).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..13 {
        codes.push(smtp::read_reply(&mut client).await.unwrap().code);
    }
    assert_eq!(
        codes,
        [250, 250, 354, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    );
    wait_for_inbox(&world.dovecot_b, "bob", 3, &world.postfixes()).await;
    // The messages had no Message-ID: the proxy added its own (SECURITY-CASES §4 rule 6),
    // so Postfix did not make one up.
    let mut imap = imap_login(&world.dovecot_b, "bob").await;
    let message = fetch_message(&mut imap, "INBOX", 1).await;
    assert!(
        message.iter().any(|l| {
            l.starts_with("Message-ID: <coi-proxy.") && l.ends_with("@submission.test>")
        }),
        "{message:#?}"
    );
}
