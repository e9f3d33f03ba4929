//! COI configuration (COI-PROTOCOL.md §2.2–2.6) through the proxy, against a real Dovecot:
//! METADATA entries, folder side effects, indirect enable/disable, persistence across a
//! proxy restart, and the `seen` message filter.

mod support;

use support::dovecot::Dovecot;
use support::io::{tagged_status, LineClient};
use support::proxy::{Options, Proxy};

const CONFIG: &str = "/private/vendor/vendor.dovecot/coi/config";

async fn ok(c: &mut LineClient, command: &str) -> Vec<String> {
    let reply = c.imap("t", command).await.expect(command);
    assert_eq!(tagged_status(&reply), "OK", "{command}: {reply:?}");
    reply
}

async fn no(c: &mut LineClient, command: &str) -> String {
    let reply = c.imap("t", command).await.expect(command);
    assert_eq!(tagged_status(&reply), "NO", "{command}: {reply:?}");
    reply.last().cloned().unwrap_or_default()
}

async fn config_values(c: &mut LineClient) -> String {
    let reply = ok(c, &format!("GETMETADATA (DEPTH 1) \"\" ({CONFIG})")).await;
    reply
        .iter()
        .filter(|l| l.starts_with("* METADATA"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

async fn mailboxes(c: &mut LineClient, command: &str) -> Vec<String> {
    ok(c, command)
        .await
        .into_iter()
        .filter(|l| l.starts_with("* L"))
        .collect()
}

fn start() -> Dovecot {
    Dovecot::start().expect("dovecot")
}

#[tokio::test]
async fn fresh_user_sees_only_the_mailbox_root() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    assert_eq!(
        config_values(&mut c).await,
        format!("* METADATA \"\" ({CONFIG}/mailbox-root \"COI\")")
    );
    let reply = ok(&mut c, &format!("GETMETADATA \"\" {CONFIG}/enabled")).await;
    assert_eq!(
        reply[0],
        format!("* METADATA \"\" ({CONFIG}/enabled NIL)"),
        "a named missing entry is NIL"
    );
}

#[tokio::test]
async fn enabling_creates_folders_and_survives_a_proxy_restart() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    ok(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled \"yes\" {CONFIG}/message-filter \"active\")"),
    )
    .await;
    let list = mailboxes(&mut c, "LIST \"\" \"COI/*\"").await.join("\n");
    assert!(
        list.contains("\"COI/Chats\"") || list.contains(" COI/Chats"),
        "{list}"
    );
    assert!(list.contains("COI/Contacts"), "{list}");
    let subscribed = mailboxes(&mut c, "LSUB \"\" \"COI/*\"").await.join("\n");
    assert!(
        subscribed.contains("COI/Chats"),
        "Chats is subscribed: {subscribed}"
    );
    assert!(
        !subscribed.contains("COI/Contacts"),
        "Contacts is not subscribed: {subscribed}"
    );
    drop(c);

    let proxy = proxy.restart().await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    assert_eq!(
        config_values(&mut c).await,
        format!("* METADATA \"\" ({CONFIG}/enabled \"yes\" {CONFIG}/message-filter \"active\" {CONFIG}/mailbox-root \"COI\")")
    );
    // Another user's configuration is their own.
    let mut other = LineClient::logged_in(proxy.plain, "bob").await;
    assert_eq!(
        config_values(&mut other).await,
        format!("* METADATA \"\" ({CONFIG}/mailbox-root \"COI\")")
    );
}

#[tokio::test]
async fn invalid_values_are_refused_with_cannot_and_change_nothing() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    let text = no(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled \"true\")"),
    )
    .await;
    assert_eq!(
        text,
        "t NO [CANNOT] Invalid enabled value. Must be yes or NIL."
    );
    let text = no(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/message-filter \"inactive\")"),
    )
    .await;
    assert_eq!(text, "t NO [CANNOT] Invalid message-filter value");
    let text = no(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/mailbox-root \"X\")"),
    )
    .await;
    assert!(text.starts_with("t NO [CANNOT] unable to set"), "{text}");
    // One bad entry refuses the whole command: the valid one is not applied either.
    no(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled \"yes\" {CONFIG}/message-filter \"Active\")"),
    )
    .await;
    assert_eq!(
        config_values(&mut c).await,
        format!("* METADATA \"\" ({CONFIG}/mailbox-root \"COI\")")
    );
    assert!(
        mailboxes(&mut c, "LIST \"\" \"COI/*\"").await.is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn disabling_and_nil_filter_remove_the_entries() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    ok(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled \"yes\" {CONFIG}/message-filter \"seen\")"),
    )
    .await;
    ok(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled NIL {CONFIG}/message-filter NIL)"),
    )
    .await;
    assert_eq!(
        config_values(&mut c).await,
        format!("* METADATA \"\" ({CONFIG}/mailbox-root \"COI\")")
    );
    assert_eq!(
        mailboxes(&mut c, "LIST \"\" \"COI/Chats\"").await.len(),
        1,
        "disabling leaves the folders"
    );
}

#[tokio::test]
async fn literal_values_are_accepted_like_quoted_ones() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    c.write_line(&format!("s SETMETADATA \"\" ({CONFIG}/enabled {{3}}"))
        .await
        .unwrap();
    let cont = c.read_line().await.unwrap();
    assert!(cont.starts_with('+'), "{cont}");
    c.write_line("yes)").await.unwrap();
    let reply = c.read_until_tagged("s").await.unwrap();
    assert_eq!(tagged_status(&reply), "OK", "{reply:?}");
    assert!(config_values(&mut c).await.contains("/enabled \"yes\""));
}

#[tokio::test]
async fn creating_chats_enables_coi_and_deleting_it_disables() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    ok(&mut c, "CREATE COI/Chats").await;
    assert!(config_values(&mut c).await.contains("/enabled \"yes\""));
    assert_eq!(
        mailboxes(&mut c, "LIST \"\" \"COI/Contacts\"").await.len(),
        1,
        "enabling created Contacts"
    );
    ok(&mut c, "DELETE COI/Chats").await;
    assert!(!config_values(&mut c).await.contains("/enabled"));
    assert!(mailboxes(&mut c, "LIST \"\" \"COI/Chats\"")
        .await
        .is_empty());
}

#[tokio::test]
async fn chats_can_be_renamed_only_into_the_trash() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    ok(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled \"yes\")"),
    )
    .await;
    let text = no(&mut c, "RENAME COI/Chats Elsewhere").await;
    assert_eq!(text, "t NO [CANNOT] COI mailbox can't be renamed");
    assert!(
        config_values(&mut c).await.contains("/enabled \"yes\""),
        "a refused rename changes nothing"
    );
    ok(&mut c, "CREATE Trash").await;
    ok(&mut c, "RENAME COI/Chats Trash/old-chats").await;
    assert!(
        !config_values(&mut c).await.contains("/enabled"),
        "renaming into the trash disables"
    );
    ok(&mut c, "CREATE Later").await;
    ok(&mut c, "RENAME Later COI/Chats").await;
    assert!(
        config_values(&mut c).await.contains("/enabled \"yes\""),
        "renaming onto Chats enables"
    );
}

#[tokio::test]
async fn the_proxys_storage_stays_hidden_and_other_metadata_passes() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    ok(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/enabled \"yes\" /private/comment \"hello\")"),
    )
    .await;
    let reply = ok(&mut c, "GETMETADATA \"\" /private/comment")
        .await
        .join("\n");
    assert!(
        reply.contains("/private/comment {5}"),
        "Dovecot's own literal form passes unchanged: {reply}"
    );
    // Dovecot lists everything under /private/vendor, including the proxy's storage.
    let reply = ok(
        &mut c,
        "GETMETADATA (DEPTH infinity) \"\" (/private/vendor)",
    )
    .await
    .join("\n");
    assert!(
        !reply.contains("coi-proxy"),
        "storage entries are hidden: {reply}"
    );
    assert!(
        reply.contains("/vendor.dovecot/coi/config/enabled \"yes\""),
        "{reply}"
    );
    no(
        &mut c,
        "SETMETADATA \"\" (/private/vendor/coi-proxy/config/enabled \"yes\")",
    )
    .await;
    // Through a direct connection the value is where the proxy keeps it.
    let mut direct = LineClient::logged_in(dovecot.imap_addr(), "alice").await;
    let stored = ok(
        &mut direct,
        "GETMETADATA \"\" /private/vendor/coi-proxy/config/enabled",
    )
    .await
    .join("\n");
    assert!(stored.contains("yes"), "{stored}");
}

async fn append_chat(c: &mut LineClient, flags: &str, subject: &str, chat: bool) {
    let header = if chat { "Chat-Version: 1.0\r\n" } else { "" };
    let message = format!(
        "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n{header}\r\nhi\r\n"
    );
    c.write_line(&format!("a APPEND INBOX ({flags}) {{{}+}}", message.len()))
        .await
        .unwrap();
    // The literal, then the CRLF that ends the command.
    c.write_line(&message).await.unwrap();
    let reply = c.read_until_tagged("a").await.unwrap();
    assert_eq!(tagged_status(&reply), "OK", "{reply:?}");
}

async fn count(c: &mut LineClient, mailbox: &str) -> usize {
    let reply = ok(c, &format!("STATUS {mailbox} (MESSAGES)")).await;
    let line = reply
        .iter()
        .find(|l| l.starts_with("* STATUS"))
        .expect("STATUS");
    line.rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap()
}

async fn seen_filter_user(proxy: &Proxy, filter: &str) -> LineClient {
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    ok(
        &mut c,
        &format!(
            "SETMETADATA \"\" ({CONFIG}/enabled \"yes\" {CONFIG}/message-filter \"{filter}\")"
        ),
    )
    .await;
    append_chat(&mut c, "$Chat", "chat1", true).await;
    append_chat(&mut c, "", "mail1", false).await;
    append_chat(&mut c, "$Chat \\Seen", "chat-already-seen", true).await;
    append_chat(&mut c, "$Chat", "chat2", true).await;
    ok(&mut c, "SELECT INBOX").await;
    c
}

#[tokio::test]
async fn seen_filter_moves_chat_messages_newly_seen_by_store() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = seen_filter_user(&proxy, "seen").await;
    let reply = ok(&mut c, "STORE 1:4 +FLAGS (\\Seen)").await;
    assert!(
        !reply.iter().any(|l| l.contains("EXPUNGE")),
        "no EXPUNGE while responding to STORE: {reply:?}"
    );
    let reply = ok(&mut c, "NOOP").await;
    let expunges: Vec<_> = reply.iter().filter(|l| l.ends_with("EXPUNGE")).collect();
    assert_eq!(
        expunges.len(),
        2,
        "chat1 and chat2 moved, the already-seen one stays: {reply:?}"
    );
    assert_eq!(count(&mut c, "COI/Chats").await, 2);
    assert_eq!(
        count(&mut c, "INBOX").await,
        2,
        "plain mail and the message that was seen before stay"
    );
}

#[tokio::test]
async fn seen_filter_follows_non_peek_fetch_but_not_peek() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = seen_filter_user(&proxy, "seen").await;
    ok(&mut c, "FETCH 1 BODY.PEEK[]").await;
    ok(&mut c, "NOOP").await;
    assert_eq!(count(&mut c, "COI/Chats").await, 0, "PEEK sets no \\Seen");
    ok(&mut c, "UID FETCH 1 BODY[TEXT]").await;
    let reply = ok(&mut c, "NOOP").await;
    assert!(reply.iter().any(|l| l == "* 1 EXPUNGE"), "{reply:?}");
    assert_eq!(count(&mut c, "COI/Chats").await, 1);
}

#[tokio::test]
async fn seen_filter_is_off_for_none_and_active_and_in_examine() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = seen_filter_user(&proxy, "none").await;
    ok(&mut c, "STORE 1:* +FLAGS (\\Seen)").await;
    ok(&mut c, "NOOP").await;
    assert_eq!(count(&mut c, "INBOX").await, 4, "filter none moves nothing");
    ok(&mut c, "STORE 1:* -FLAGS (\\Seen)").await;
    ok(
        &mut c,
        &format!("SETMETADATA \"\" ({CONFIG}/message-filter \"seen\")"),
    )
    .await;
    ok(&mut c, "EXAMINE INBOX").await;
    ok(&mut c, "FETCH 1:* BODY[]").await;
    ok(&mut c, "NOOP").await;
    assert_eq!(
        count(&mut c, "COI/Chats").await,
        0,
        "EXAMINE sets no \\Seen"
    );
}

#[tokio::test]
async fn seen_filter_moves_before_a_select_of_another_mailbox() {
    let dovecot = start();
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let mut c = seen_filter_user(&proxy, "seen").await;
    ok(&mut c, "STORE 4 +FLAGS.SILENT (\\Seen)").await;
    let reply = ok(&mut c, "SELECT COI/Chats").await;
    assert!(
        !reply.iter().any(|l| l.contains("EXPUNGE")),
        "INBOX expunges are not shown in the new mailbox: {reply:?}"
    );
    assert!(reply.iter().any(|l| l == "* 1 EXISTS"), "{reply:?}");
}
