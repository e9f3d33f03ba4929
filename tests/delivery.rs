//! The delivery hook against real Postfix and Dovecot on loopback, two domains:
//! alice@a.test submits through proxy A (submission front, tokens) to Postfix A, which
//! relays to Postfix B's MX; Postfix B delivers by LMTP to proxy B's hook, in front of
//! Dovecot B, with the mailbox writer logging in as Dovecot B's master user.
//!
//! What is checked: a COI user's chat mail goes to Chats with `$Chat` under the active
//! filter and INBOX never sees it; with filter none it lands in INBOX with `$Chat`; the
//! token addressed to the recipient is captured into their Contacts once, also after a
//! second message; non-chat mail and non-COI users are untouched (Dovecot's LMTP).
//!
//! Every network step is bounded (support::io::STEP); waits poll with a deadline.

mod support;

use std::time::{Duration, Instant};

use support::dovecot::Dovecot;
use support::io::{tagged_status, LineClient};
use support::mailbox::{fetch_message, imap_login, prime_inbox, wait_for_inbox};
use support::world::World;

const DEADLINE: Duration = Duration::from_secs(10);

fn chat_text(n: u32) -> String {
    format!(
        "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: chat {n}\r\nChat-Version: 1.0\r\nMessage-ID: <chat${n}@a.test>\r\n\r\nhello {n}"
    )
}

/// The number of messages in `mailbox` and their FLAGS lines.
async fn mailbox_state(client: &mut LineClient, mailbox: &str) -> (u32, Vec<String>) {
    let lines = client
        .imap("e", &format!("EXAMINE {mailbox}"))
        .await
        .unwrap();
    if tagged_status(&lines) != "OK" {
        return (0, Vec::new());
    }
    let exists = lines
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
        .unwrap_or(0);
    if exists == 0 {
        return (0, Vec::new());
    }
    let flags = client.imap("f", "FETCH 1:* (FLAGS)").await.unwrap();
    (
        exists,
        flags.into_iter().filter(|l| l.starts_with("* ")).collect(),
    )
}

/// Polls until `mailbox` of `user` holds `want` messages.
async fn wait_for_mailbox(dovecot: &Dovecot, user: &str, mailbox: &str, want: u32) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut client = imap_login(dovecot, user).await;
        let (have, flags) = mailbox_state(&mut client, mailbox).await;
        if have >= want {
            assert_eq!(have, want, "{user}'s {mailbox}");
            return flags;
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s {mailbox}: {have} messages, not {want}\n{}",
            dovecot.log_contents()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn active_filter_stores_chat_in_chats_with_the_keyword_and_captures_the_token_once() {
    let world = World::start().await;
    world.enable_coi("bob", "active").await;
    prime_inbox(&world.dovecot_b, "bob").await;

    world
        .send_from("alice", &["bob@b.test"], &chat_text(1))
        .await;
    let flags = wait_for_mailbox(&world.dovecot_b, "bob", "COI/Chats", 1).await;
    assert!(flags[0].contains("$Chat"), "{flags:?}");
    let contacts = wait_for_mailbox(&world.dovecot_b, "bob", "COI/Contacts", 1).await;
    assert_eq!(contacts.len(), 1);

    let mut imap = imap_login(&world.dovecot_b, "bob").await;
    let contact = fetch_message(&mut imap, "COI/Contacts", 1).await;
    assert_eq!(token_out(&contact), vec![token_in_chat(&mut imap, 1).await]);

    world
        .send_from("alice", &["bob@b.test"], &chat_text(2))
        .await;
    wait_for_mailbox(&world.dovecot_b, "bob", "COI/Chats", 2).await;
    // Still one contact, holding the newest token for the pair: the second message's.
    let second = token_in_chat(&mut imap, 2).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let contacts = wait_for_mailbox(&world.dovecot_b, "bob", "COI/Contacts", 1).await;
        assert_eq!(contacts.len(), 1);
        let contact = fetch_message(&mut imap, "COI/Contacts", 1).await;
        if token_out(&contact) == vec![second.clone()] {
            assert!(contact.iter().any(|l| l.starts_with("COI-From-Hash: ")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "contact not updated: {contact:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // INBOX never saw the chat messages.
    let (inbox, _) = mailbox_state(&mut imap, "INBOX").await;
    assert_eq!(inbox, 0);
}

/// Chats deleted behind the proxy's back (directly in Dovecot, so COI stays on): the
/// hook's APPEND gets TRYCREATE, creates Chats (subscribed) and stores the message there.
#[tokio::test]
async fn a_missing_chats_folder_is_created_at_delivery() {
    let world = World::start().await;
    world.enable_coi("bob", "active").await;
    prime_inbox(&world.dovecot_b, "bob").await;
    let mut direct = imap_login(&world.dovecot_b, "bob").await;
    let lines = direct.imap("d", "DELETE COI/Chats").await.unwrap();
    assert_eq!(tagged_status(&lines), "OK", "{lines:?}");

    world
        .send_from("alice", &["bob@b.test"], &chat_text(1))
        .await;
    let flags = wait_for_mailbox(&world.dovecot_b, "bob", "COI/Chats", 1).await;
    assert!(flags[0].contains("$Chat"), "{flags:?}");
    let lines = direct.imap("l", "LSUB \"\" COI/Chats").await.unwrap();
    assert!(lines.iter().any(|l| l.starts_with("* LSUB")), "{lines:?}");
    let (inbox, _) = mailbox_state(&mut direct, "INBOX").await;
    assert_eq!(inbox, 0);
}

/// The `COI-TokenOut` values of a contact message.
fn token_out(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("COI-TokenOut: "))
        .map(str::to_owned)
        .collect()
}

/// The token the submission side put into chat message `seq` of bob's Chats (one
/// visible recipient, so one token; folded onto a continuation line).
async fn token_in_chat(imap: &mut LineClient, seq: u32) -> String {
    let message = fetch_message(imap, "COI/Chats", seq).await;
    let at = message
        .iter()
        .position(|l| l == "X-COI-Temporary-Token:")
        .unwrap_or_else(|| panic!("a token field in {message:#?}"));
    message[at + 1].trim().to_owned()
}

#[tokio::test]
async fn filter_none_puts_chat_in_inbox_with_the_keyword_and_plain_mail_is_untouched() {
    let world = World::start().await;
    world.enable_coi("bob", "none").await;
    prime_inbox(&world.dovecot_b, "bob").await;
    prime_inbox(&world.dovecot_b, "carol").await;

    world
        .send_from("alice", &["bob@b.test", "carol@b.test"], &chat_text(1))
        .await;
    wait_for_inbox(&world.dovecot_b, "bob", 1, &world.postfixes()).await;
    wait_for_inbox(&world.dovecot_b, "carol", 1, &world.postfixes()).await;
    let bob = wait_for_mailbox(&world.dovecot_b, "bob", "INBOX", 1).await;
    assert!(bob[0].contains("$Chat"), "{bob:?}");
    // carol has COI off: Dovecot's LMTP delivered it as it is.
    let carol = wait_for_mailbox(&world.dovecot_b, "carol", "INBOX", 1).await;
    assert!(!carol[0].contains("$Chat"), "{carol:?}");
    let mut imap = imap_login(&world.dovecot_b, "carol").await;
    let (contacts, _) = mailbox_state(&mut imap, "COI/Contacts").await;
    assert_eq!(contacts, 0, "non-COI users get no Contacts");

    world
        .send_from(
            "alice",
            &["bob@b.test"],
            "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: plain\r\n\r\nnot a chat",
        )
        .await;
    let bob = wait_for_mailbox(&world.dovecot_b, "bob", "INBOX", 2).await;
    assert!(!bob[1].contains("$Chat"), "{bob:?}");
}
