//! Peer links end to end (issue 4, done-when 1): two domains on loopback, each with real
//! Dovecot, real Postfix and its own coi-proxy. The first message goes by mail and
//! carries a temporary token; the reply goes proxy to proxy over QUIC, which the
//! sender's Postfix never sees; later messages use the permanent token the first fast
//! delivery returned; with the other proxy gone, or a delivery stream cut by the
//! receiver, messages take the mail path again and arrive once.

mod support;

use std::time::Duration;

use coi_proxy::net::quic::{self, PeerTls};
use tokio::time::timeout;

use support::mailbox::{fetch_message, imap_login};
use support::peers::{chat, Peered};

/// Header lines of `field` in a fetched message.
fn field<'a>(message: &'a [String], name: &str) -> Vec<&'a str> {
    message
        .iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

/// COI on for alice and bob (filter `active`); alice@a.test writes to bob@b.test (by
/// mail: nobody holds a token yet, and bob's proxy captures hers); bob replies, which
/// takes the link. Returns how long bob's client waited for the 250 of the reply.
async fn mail_then_reply_by_link(world: &Peered) -> Duration {
    world.a.enable_coi("alice", "active").await;
    world.b.enable_coi("bob", "active").await;
    let first = chat("alice@a.test", "bob@b.test", "m1@a.test", "hi bob");
    world.a.send("alice", &["bob@b.test"], &first).await;
    world
        .b
        .wait_for("bob", "COI/Contacts", 1, &world.postfixes())
        .await;
    let reply = chat("bob@b.test", "alice@a.test", "r1@b.test", "hi alice");
    world.b.send("bob", &["alice@a.test"], &reply).await.1
}

/// Proxy B starts again and Postfix B's queue is flushed: the message `message_id` that
/// waited there arrives in bob's COI/Chats as his second message, once, by mail.
async fn arrives_by_mail_once_b_is_back(world: &mut Peered, message_id: &str) {
    world.b.proxy.start_again().await;
    world.b.postfix.flush().expect("flush Postfix B's queue");
    let postfixes = world.postfixes();
    world.b.wait_for("bob", "COI/Chats", 2, &postfixes).await;
    let mut imap = imap_login(&world.b.dovecot, "bob").await;
    let copy = fetch_message(&mut imap, "COI/Chats", 2).await;
    assert_eq!(field(&copy, "Message-ID"), vec![message_id]);
    assert!(
        copy.iter().any(|l| l.starts_with("Received:")),
        "came by mail: {copy:#?}"
    );
}

#[tokio::test]
async fn reply_takes_the_link_and_later_messages_the_permanent_token() {
    let world = Peered::start().await;
    let elapsed = mail_then_reply_by_link(&world).await;
    let postfixes = world.postfixes();
    assert_eq!(world.b.count("bob", "COI/Chats").await, 1);
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"quic\"}"),
        Some(0.0),
        "alice's first message went by mail"
    );
    let mut bob_imap = imap_login(&world.b.dovecot, "bob").await;
    let first = fetch_message(&mut bob_imap, "COI/Chats", 1).await;
    assert!(
        first.iter().filter(|l| l.starts_with("Received:")).count() >= 2,
        "through Postfix A and B: {first:#?}"
    );
    let tokens = first
        .iter()
        .filter(|l| l.starts_with("X-COI-Temporary-Token:"))
        .count();
    assert_eq!(tokens, 1, "{first:#?}");
    // bob's reply is in alice's Chats when bob's client has its 250: no queue between.
    assert_eq!(
        world.a.count("alice", "COI/Chats").await,
        1,
        "stored before the 250"
    );
    assert_eq!(
        world
            .b
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"quic\"}"),
        Some(1.0)
    );
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_token_verifications_total{result=\"temporary\"}"),
        Some(1.0)
    );
    // Postfix A never saw the reply; Postfix B had no RCPT for it either.
    for postfix in postfixes {
        assert!(
            !postfix.log_contents().contains("r1@b.test"),
            "{} logged the reply:\n{}",
            postfix.domain(),
            postfix.log_contents()
        );
        assert!(postfix.queue_ids().expect("mailq").is_empty());
    }
    let mut imap = imap_login(&world.a.dovecot, "alice").await;
    let stored = fetch_message(&mut imap, "COI/Chats", 1).await;
    assert_eq!(field(&stored, "Message-ID"), vec!["<r1@b.test>"]);
    assert_eq!(field(&stored, "X-COI-Delivery").len(), 1, "{stored:#?}");
    assert!(
        !stored.iter().any(|l| l.starts_with("Received:")),
        "no mail hop: {stored:#?}"
    );
    eprintln!("reply over the link: 250 after {elapsed:?}");

    // The first fast delivery with a temporary token returned a permanent one: alice's
    // contact for bob holds it as COI-TokenIn, bob's contact for alice as COI-TokenOut.
    world
        .a
        .wait_for("alice", "COI/Contacts", 1, &postfixes)
        .await;
    let alice_contact = fetch_message(&mut imap, "COI/Contacts", 1).await;
    let token_in = field(&alice_contact, "COI-TokenIn");
    assert_eq!(token_in.len(), 1, "{alice_contact:#?}");
    // Proxy B writes it into bob's contact after bob's client had its 250.
    let deadline = std::time::Instant::now() + support::peers::DEADLINE;
    loop {
        let bob_contact = fetch_message(&mut bob_imap, "COI/Contacts", 1).await;
        if field(&bob_contact, "COI-TokenOut").contains(&token_in[0]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob keeps the permanent token: {bob_contact:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 3. The next reply uses the permanent token.
    world
        .b
        .send(
            "bob",
            &["alice@a.test"],
            &chat("bob@b.test", "alice@a.test", "r2@b.test", "again"),
        )
        .await;
    assert_eq!(world.a.count("alice", "COI/Chats").await, 2);
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_token_verifications_total{result=\"permanent\"}"),
        Some(1.0)
    );

    world.a.wait_for_token_out("alice").await;
    // 4. alice's reply to bob now goes by the link too: bob's message carried a token for
    // her, captured from the fast delivery.
    world
        .a
        .send(
            "alice",
            &["bob@b.test"],
            &chat("alice@a.test", "bob@b.test", "m2@a.test", "fast"),
        )
        .await;
    assert_eq!(world.b.count("bob", "COI/Chats").await, 2);
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"quic\"}"),
        Some(1.0)
    );

    // 5. A session of replies all stored by the link opens no transaction at Postfix B:
    // MAIL is held back until a recipient needs Postfix, so Postfix's junk-command limit
    // never counts a MAIL/RSET pair per message. (Postfix B still sees the session's
    // AUTH, which the proxy checks through it.)
    let logged_before = postfixes[1].log_contents().len();
    let mut bob = world.b.logged_in("bob").await;
    for n in 3..6 {
        let text = chat(
            "bob@b.test",
            "alice@a.test",
            &format!("r{n}@b.test"),
            "more",
        );
        support::postfix::smtp::send_in_session(&mut bob, "bob@b.test", &["alice@a.test"], &text)
            .await
            .expect("a fast reply");
    }
    support::postfix::smtp::expect(&mut bob, "QUIT", 221)
        .await
        .expect("QUIT");
    assert_eq!(world.a.count("alice", "COI/Chats").await, 5);
    assert_eq!(
        world
            .b
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"quic\"}"),
        Some(5.0)
    );
    // Every connection to Postfix B has ended (its disconnect line counts the commands).
    let deadline = std::time::Instant::now() + support::peers::DEADLINE;
    let log = loop {
        let log = postfixes[1].log_contents();
        if log.matches(": connect from ").count() == log.matches(": disconnect from ").count() {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Postfix B's sessions end:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let new_lines = &log[logged_before..];
    assert!(
        new_lines.contains("auth=1"),
        "the session's AUTH went through Postfix B:\n{new_lines}"
    );
    assert!(
        !new_lines.contains("mail=") && !new_lines.contains("rset="),
        "Postfix B saw a transaction for replies the link stored:\n{new_lines}"
    );
}

/// Durability rule 4 with the receiving proxy gone: alice holds a token for bob, but
/// proxy B is stopped. Her message falls back to mail within her DATA wait (250 from
/// Postfix A), waits in Postfix B's queue while B's delivery hook is down too, and
/// arrives once by mail when proxy B is back.
#[tokio::test]
async fn with_the_other_proxy_stopped_messages_arrive_by_mail() {
    let mut world = Peered::start().await;
    mail_then_reply_by_link(&world).await;
    // The reply carried a token for alice → bob, which proxy A keeps.
    world.a.wait_for_token_out("alice").await;

    world.b.proxy.halt(Duration::from_millis(200)).await;
    let (_, elapsed) = world
        .a
        .send(
            "alice",
            &["bob@b.test"],
            &chat("alice@a.test", "bob@b.test", "m2@a.test", "3"),
        )
        .await;
    let fallbacks: f64 = ["connect", "timeout", "refused", "protocol"]
        .iter()
        .filter_map(|reason| {
            world.a.proxy.metric(&format!(
                "coi_proxy_peer_fallbacks_total{{reason=\"{reason}\"}}"
            ))
        })
        .sum();
    assert_eq!(fallbacks, 1.0, "{}", world.a.proxy.metrics_text());
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"smtp\"}"),
        Some(1.0)
    );
    eprintln!("fallback to mail: 250 after {elapsed:?}");

    arrives_by_mail_once_b_is_back(&mut world, "<m2@a.test>").await;
}

/// A delivery stream cut before its end (done-when 1): alice holds a token for bob, and
/// the coi-proxy answering for b.test takes the envelope, then resets the stream. Proxy
/// A falls back to mail inside alice's DATA wait (250 from Postfix A), and the message
/// arrives once, by mail, when b.test's real proxy is back.
#[tokio::test]
async fn a_stream_cut_by_the_receiver_falls_back_to_mail() {
    let mut world = Peered::start().await;
    mail_then_reply_by_link(&world).await;
    world.a.wait_for_token_out("alice").await;

    // b.test's endpoint, played by the test with a genuine b.test certificate.
    world.b.proxy.halt(Duration::from_millis(200)).await;
    let pki = world.ca.issue("cutting-b", &["b.test"]);
    let tls = PeerTls::load(&pki.tls_files(), &pki.ca_path).expect("peer TLS");
    // Proxy B's socket is released once quinn's endpoint driver has ended, just after.
    let deadline = std::time::Instant::now() + support::peers::DEADLINE;
    let endpoint = loop {
        match quic::endpoint(world.b.quic, &tls) {
            Ok(endpoint) => break endpoint,
            Err(e) if std::time::Instant::now() > deadline => panic!("b.test's UDP port: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let cutter = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let connection = endpoint.accept().await?.await.ok()?;
            let (mut send, mut recv) = connection.accept_bi().await.ok()?;
            let mut start = [0u8; 16];
            let read = recv.read(&mut start).await.ok()??;
            // Cut both directions; the connection stays up, so only the stream fails.
            send.reset(0u32.into()).ok()?;
            recv.stop(0u32.into()).ok()?;
            Some((read, connection))
        })
    };

    let (_, elapsed) = world
        .a
        .send(
            "alice",
            &["bob@b.test"],
            &chat("alice@a.test", "bob@b.test", "cut@a.test", "cut"),
        )
        .await;
    let (read, connection) = timeout(support::peers::DEADLINE, cutter)
        .await
        .expect("proxy A opened a delivery stream")
        .expect("the cutting peer")
        .expect("a delivery stream, read and cut");
    assert!(read > 0, "the envelope had begun");
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"quic\"}"),
        Some(0.0)
    );
    assert_eq!(
        world
            .a
            .proxy
            .metric("coi_proxy_peer_deliveries_total{outcome=\"delivered\",path=\"smtp\"}"),
        Some(1.0),
        "{}",
        world.a.proxy.metrics_text()
    );
    eprintln!("stream cut: 250 by mail after {elapsed:?}");
    connection.close(0u32.into(), b"");
    drop(connection);
    endpoint.close(0u32.into(), b"");
    timeout(support::peers::DEADLINE, endpoint.wait_idle())
        .await
        .expect("the cutting endpoint closes");
    drop(endpoint);

    arrives_by_mail_once_b_is_back(&mut world, "<cut@a.test>").await;
}
