//! A 100 MB chat message through the submission front and the delivery hook, with the
//! proxies' memory watched (issue 3: "no attachment size limit is one of the promises";
//! memory stays constant in message size).
//!
//! alice@a.test submits through proxy A to Postfix A, which relays to Postfix B, which
//! delivers by LMTP to proxy B's hook: bob (COI on, filter active) gets it through the
//! mailbox writer's streamed APPEND into COI/Chats, carol (COI off) through Dovecot's
//! LMTP. Both proxies run in this process, so this process's RSS is theirs (plus the
//! test client's 64 KiB buffer). The figure is printed; the bound is asserted.
//!
//! One test in this binary, so no other test allocates in the process meanwhile.

mod support;

use std::time::{Duration, Instant};

use support::dovecot::Dovecot;
use support::mailbox::{imap_login, prime_inbox, wait_for_inbox};
use support::memory::MemoryProbe;
use support::postfix::{smtp, Postfix};
use support::world::World;

/// The message body size: 100 MB (decimal, as the issue says), under the hook's default
/// 100 MiB limit with the header and Postfix's Received lines.
const BODY_BYTES: usize = 100_000_000;

/// RSS growth allowed over the whole transfer: read buffers, the 1 MiB spool memory, a
/// header block, allocator slack — "a few MB", far below the 100 MB moved.
const GROWTH_LIMIT_KIB: u64 = 8 * 1024;

/// How long the message may take from the end of data to both mailboxes (two Postfix
/// queues and two Dovecot stores of 100 MB on a 2-core machine).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_message_crosses_submission_and_the_hook_in_constant_memory() {
    let world = World::builder()
        .submission(|s| s.max_message_bytes = Some(150 * 1024 * 1024))
        .start()
        .await;
    let World {
        dovecot_b,
        postfix_a,
        postfix_b,
        ..
    } = &world;

    // bob: COI on, active filter.
    world.enable_coi("bob", "active").await;
    prime_inbox(dovecot_b, "carol").await;

    let mut client = world.logged_in("alice").await;
    smtp::start_data(&mut client, "alice@a.test", &["bob@b.test", "carol@b.test"])
        .await
        .unwrap();

    let mut probe = MemoryProbe::start();
    let started = Instant::now();
    client
        .write_raw(b"From: alice@a.test\r\nTo: bob@b.test, carol@b.test\r\nSubject: big\r\nChat-Version: 1.0\r\nMessage-ID: <chat$big@a.test>\r\n\r\n")
        .await
        .unwrap();
    // Lines of 998 octets + CRLF, the most RFC 5321 allows.
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk = line.repeat(64);
    let mut sent = 0;
    while sent < BODY_BYTES {
        client.write_raw(chunk.as_bytes()).await.unwrap();
        sent += chunk.len();
        if sent % (4 * 1024 * 1024) < chunk.len() {
            probe.sample();
        }
    }
    client.write_raw(b".\r\n").await.unwrap();
    let reply = smtp::read_reply(&mut client).await.unwrap();
    assert_eq!(reply.code, 250, "{}", reply.text());
    let submitted = started.elapsed();

    let deadline = Instant::now() + DELIVERY_DEADLINE;
    wait_for_inbox_with(dovecot_b, "carol", &[postfix_a, postfix_b], deadline).await;
    loop {
        probe.sample();
        let mut bob = imap_login(dovecot_b, "bob").await;
        let lines = bob.imap("s", "STATUS COI/Chats (MESSAGES)").await.unwrap();
        if lines.iter().any(|l| l.contains("MESSAGES 1")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob's Chats: {lines:?}\n{}",
            dovecot_b.log_contents()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = probe.growth_kib();
    eprintln!(
        "100 MB message: submitted in {submitted:?}, delivered to both in {:?}; \
         RSS growth of both proxies {growth} KiB (peak {})",
        started.elapsed(),
        if probe.peak_reset { "VmHWM" } else { "sampled" }
    );
    assert!(
        growth < GROWTH_LIMIT_KIB,
        "RSS grew {growth} KiB moving a {BODY_BYTES}-byte message"
    );
    // Both copies are whole: the body size as stored (Dovecot counts the header too).
    for (user, mailbox) in [("carol", "INBOX"), ("bob", "COI/Chats")] {
        let mut c = imap_login(dovecot_b, user).await;
        c.imap("x", &format!("EXAMINE {mailbox}")).await.unwrap();
        let lines = c.imap("f", "FETCH 1 (RFC822.SIZE)").await.unwrap();
        let size: u64 = lines
            .iter()
            .find_map(|l| {
                l.split("RFC822.SIZE ")
                    .nth(1)?
                    .trim_end_matches(')')
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert!(size > BODY_BYTES as u64, "{user}: {size} bytes");
    }
}

async fn wait_for_inbox_with(
    dovecot: &Dovecot,
    user: &str,
    postfixes: &[&Postfix],
    deadline: Instant,
) {
    // The shared helper's deadline is for small mail; poll it until ours.
    while Instant::now() < deadline {
        let mut c = imap_login(dovecot, user).await;
        let lines = c.imap("s", "STATUS INBOX (MESSAGES)").await.unwrap();
        if lines.iter().any(|l| l.contains("MESSAGES 1")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_inbox(dovecot, user, 1, postfixes).await;
}
