//! The real-Dovecot test support works: login, METADATA, `/` separator, master user,
//! LMTP, the auth listener Postfix uses for SMTP AUTH, stop/restart, and an mbsync
//! round trip straight to Dovecot (the baseline the proxy tests compare against).

mod support;

use base64::Engine as _;

use support::dovecot::{Dovecot, MASTER_PASSWORD, MASTER_SEPARATOR, MASTER_USER};
use support::io::{tagged_status, LineClient};
use support::mbsync::{self, ImapAccount};

/// Connects to the instance's IMAP port and checks the greeting.
async fn imap_client(dovecot: &Dovecot) -> LineClient {
    let mut client = LineClient::connect(dovecot.imap_addr())
        .await
        .expect("connect to dovecot imap");
    let greeting = client.read_line().await.expect("imap greeting");
    assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
    client
}

/// Runs one command and asserts its tagged status.
async fn expect_status(
    client: &mut LineClient,
    tag: &str,
    command: &str,
    status: &str,
) -> Vec<String> {
    let lines = client.imap(tag, command).await.expect(command);
    assert_eq!(tagged_status(&lines), status, "{command}: {lines:#?}");
    lines
}

fn sasl_plain(authzid: &str, authcid: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{authzid}\0{authcid}\0{password}"))
}

#[tokio::test]
async fn user_logs_in_sets_and_reads_back_metadata_and_sees_slash_separator() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let mut client = imap_client(&dovecot).await;

    expect_status(&mut client, "a", "LOGIN alice secret-alice", "OK").await;
    expect_status(
        &mut client,
        "b",
        r#"SETMETADATA "" (/private/vendor/coi-proxy/test "v")"#,
        "OK",
    )
    .await;
    let lines = expect_status(
        &mut client,
        "c",
        r#"GETMETADATA "" /private/vendor/coi-proxy/test"#,
        "OK",
    )
    .await;
    let answer = lines.join("\n");
    assert!(
        answer.contains("* METADATA \"\" (/private/vendor/coi-proxy/test")
            && (answer.contains("\"v\")") || answer.contains("{1}\nv)")),
        "GETMETADATA answer: {answer}"
    );
    expect_status(&mut client, "d", r#"CREATE "COI/Chats""#, "OK").await;
    let lines = expect_status(&mut client, "e", r#"LIST "" "*""#, "OK").await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("* LIST") && l.ends_with(r#""/" COI/Chats"#)),
        "LIST: {lines:#?}"
    );
    expect_status(&mut client, "f", "LOGOUT", "OK").await;

    // Persisted in the user's home, not just in the session.
    let attributes = dovecot.home_of("alice").join("dovecot-attributes");
    assert!(attributes.is_file(), "{} missing", attributes.display());
    assert!(dovecot.mail_dir_of("alice").join("COI/Chats/cur").is_dir());

    let mut again = imap_client(&dovecot).await;
    expect_status(&mut again, "a", "LOGIN alice secret-alice", "OK").await;
    let lines = expect_status(
        &mut again,
        "b",
        r#"GETMETADATA "" /private/vendor/coi-proxy/test"#,
        "OK",
    )
    .await;
    assert!(
        lines.iter().any(|l| l.starts_with("* METADATA")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn wrong_user_password_is_rejected() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let mut client = imap_client(&dovecot).await;
    expect_status(&mut client, "a", "LOGIN alice secret-bob", "NO").await;
    expect_status(&mut client, "b", "LOGIN carol secret-carol", "OK").await;
}

#[tokio::test]
async fn master_user_logs_in_as_alice_with_sasl_plain_authzid() {
    let dovecot = Dovecot::start().expect("start dovecot");

    // alice creates a mailbox of her own.
    let mut alice = imap_client(&dovecot).await;
    expect_status(&mut alice, "a", "LOGIN alice secret-alice", "OK").await;
    expect_status(&mut alice, "b", r#"CREATE "Only-Alice""#, "OK").await;
    expect_status(&mut alice, "c", "LOGOUT", "OK").await;

    let mut master = imap_client(&dovecot).await;
    let ir = sasl_plain("alice", dovecot.master_user(), dovecot.master_password());
    expect_status(&mut master, "a", &format!("AUTHENTICATE PLAIN {ir}"), "OK").await;
    let lines = expect_status(&mut master, "b", r#"LIST "" "*""#, "OK").await;
    assert!(
        lines.iter().any(|l| l.ends_with(" Only-Alice")),
        "master session does not see alice's mailboxes: {lines:#?}"
    );

    // The LOGIN form with the separator works too.
    let mut login = imap_client(&dovecot).await;
    expect_status(
        &mut login,
        "a",
        &format!("LOGIN alice{MASTER_SEPARATOR}{MASTER_USER} {MASTER_PASSWORD}"),
        "OK",
    )
    .await;
    assert!(dovecot
        .log_contents()
        .contains("Master user logging in as alice"));
}

#[tokio::test]
async fn master_user_with_wrong_password_or_unknown_target_is_rejected() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let mut client = imap_client(&dovecot).await;
    let wrong = sasl_plain("alice", MASTER_USER, "not-the-master-secret");
    expect_status(
        &mut client,
        "a",
        &format!("AUTHENTICATE PLAIN {wrong}"),
        "NO",
    )
    .await;
    let unknown = sasl_plain("mallory", MASTER_USER, MASTER_PASSWORD);
    expect_status(
        &mut client,
        "b",
        &format!("AUTHENTICATE PLAIN {unknown}"),
        "NO",
    )
    .await;
    // A user's own password does not make them a master.
    let not_master = sasl_plain("bob", "alice", "secret-alice");
    expect_status(
        &mut client,
        "c",
        &format!("AUTHENTICATE PLAIN {not_master}"),
        "NO",
    )
    .await;
}

#[tokio::test]
async fn lmtp_delivers_to_a_user_whatever_the_recipient_domain() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let mut lmtp = LineClient::connect(dovecot.lmtp_addr())
        .await
        .expect("connect lmtp");
    assert!(lmtp
        .read_line()
        .await
        .expect("lmtp greeting")
        .starts_with("220 "));
    lmtp.write_line("LHLO test").await.expect("LHLO");
    loop {
        let line = lmtp.read_line().await.expect("LHLO reply");
        assert!(line.starts_with("250"), "LHLO: {line}");
        if line.starts_with("250 ") {
            break;
        }
    }
    for (command, code) in [
        ("MAIL FROM:<sender@example.org>", "250"),
        ("RCPT TO:<bob@example.org>", "250"),
        ("RCPT TO:<nobody@example.org>", "550"),
        ("DATA", "354"),
    ] {
        lmtp.write_line(command).await.expect(command);
        let reply = lmtp.read_line().await.expect(command);
        assert!(reply.starts_with(code), "{command}: {reply}");
    }
    lmtp.write_line("Subject: over lmtp\r\n\r\nhello bob\r\n.")
        .await
        .expect("message");
    let reply = lmtp.read_line().await.expect("DATA reply");
    assert!(reply.starts_with("250 "), "DATA: {reply}");

    let mut bob = imap_client(&dovecot).await;
    expect_status(&mut bob, "a", "LOGIN bob secret-bob", "OK").await;
    let lines = expect_status(&mut bob, "b", "STATUS INBOX (MESSAGES)", "OK").await;
    assert!(
        lines.iter().any(|l| l == "* STATUS INBOX (MESSAGES 1)"),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn stopped_dovecot_refuses_connections_and_restart_keeps_the_mail() {
    let mut dovecot = Dovecot::start().expect("start dovecot");
    let mut alice = imap_client(&dovecot).await;
    expect_status(&mut alice, "a", "LOGIN alice secret-alice", "OK").await;
    expect_status(&mut alice, "b", r#"CREATE "Kept""#, "OK").await;

    dovecot.stop().expect("stop dovecot");
    assert!(!dovecot.is_running());
    // The open session is closed (after a BYE) ...
    loop {
        match alice.read_line().await {
            Ok(line) => assert!(line.starts_with("* BYE"), "after stop: {line}"),
            Err(e) => {
                assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "session not closed");
                break;
            }
        }
    }
    // ... and new connections are refused.
    assert!(LineClient::connect(dovecot.imap_addr()).await.is_err());

    dovecot.restart().expect("restart dovecot");
    let mut again = imap_client(&dovecot).await;
    expect_status(&mut again, "a", "LOGIN alice secret-alice", "OK").await;
    let lines = expect_status(&mut again, "b", r#"LIST "" "Kept""#, "OK").await;
    assert!(lines.iter().any(|l| l.ends_with(" Kept")), "{lines:#?}");

    dovecot.kill().expect("kill dovecot");
    let cut = again.read_line().await;
    assert!(
        matches!(&cut, Err(e) if e.kind() != std::io::ErrorKind::TimedOut),
        "a killed backend cuts sessions without BYE: {cut:?}"
    );
}

#[tokio::test]
async fn mbsync_round_trip_through_dovecot_reproduces_every_message_and_flag() {
    let dovecot = Dovecot::start().expect("start dovecot");
    let account = ImapAccount {
        addr: dovecot.imap_addr(),
        user: "alice",
        password: dovecot.password_of("alice").expect("alice exists"),
    };

    let source = tempfile::tempdir().expect("tempdir");
    mbsync::populate_maildir(source.path(), "INBOX", 5, true).expect("populate INBOX");
    mbsync::populate_maildir(source.path(), "Archive/2024", 2, false).expect("populate Archive");
    let before = mbsync::canonical_listing(source.path()).expect("list source");
    assert_eq!(before.message_count(), 7);
    assert!(before.folders["INBOX"]
        .iter()
        .any(|m| m.size > mbsync::LARGE_MESSAGE_BYTES as u64));

    let up = mbsync::sync(&account, source.path(), mbsync::SYNC_TIMEOUT)
        .await
        .expect("mbsync up");
    assert!(
        up.success(),
        "mbsync up failed: {up:#?}\n{}",
        dovecot.log_contents()
    );

    // Dovecot really has them.
    let mut alice = imap_client(&dovecot).await;
    expect_status(&mut alice, "a", "LOGIN alice secret-alice", "OK").await;
    for (folder, count) in [("INBOX", 5), ("Archive/2024", 2)] {
        let lines = expect_status(
            &mut alice,
            "b",
            &format!("STATUS \"{folder}\" (MESSAGES)"),
            "OK",
        )
        .await;
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!("(MESSAGES {count})"))),
            "{folder}: {lines:#?}"
        );
    }

    let copy = tempfile::tempdir().expect("tempdir");
    let down = mbsync::sync(&account, copy.path(), mbsync::SYNC_TIMEOUT)
        .await
        .expect("mbsync down");
    assert!(
        down.success(),
        "mbsync down failed: {down:#?}\n{}",
        dovecot.log_contents()
    );

    let after_up = mbsync::canonical_listing(source.path()).expect("list source");
    let copied = mbsync::canonical_listing(copy.path()).expect("list copy");
    assert_eq!(after_up, before, "syncing up changed the source");
    assert_eq!(copied, before, "the copy differs from the source");
}

#[tokio::test]
async fn auth_listener_checks_passwords_over_the_auth_client_protocol() {
    // What Postfix's `smtpd_sasl_type = dovecot` does on `inet:` (Dovecot's auth-client
    // protocol, LF-terminated, tab-separated).
    let dovecot = Dovecot::start().expect("start dovecot");
    let mut auth = LineClient::connect(dovecot.auth_addr())
        .await
        .expect("connect to dovecot auth");
    let mut handshake = Vec::new();
    loop {
        let line = auth.read_line().await.expect("auth handshake");
        if line == "DONE" {
            break;
        }
        handshake.push(line);
    }
    assert!(handshake[0].starts_with("VERSION\t1\t"), "{handshake:#?}");
    for mech in ["PLAIN", "LOGIN"] {
        assert!(
            handshake
                .iter()
                .any(|l| l.split('\t').take(2).eq(["MECH", mech])),
            "{mech} not offered: {handshake:#?}"
        );
    }
    auth.write_raw(b"VERSION\t1\t2\nCPID\t4242\n")
        .await
        .expect("client handshake");

    let good = sasl_plain("", "alice", "secret-alice");
    auth.write_raw(format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={good}\n").as_bytes())
        .await
        .expect("AUTH 1");
    let reply = auth.read_line().await.expect("AUTH 1 reply");
    assert!(reply.starts_with("OK\t1\tuser=alice"), "{reply}");

    let bad = sasl_plain("", "alice", "secret-bob");
    auth.write_raw(format!("AUTH\t2\tPLAIN\tservice=smtp\tresp={bad}\n").as_bytes())
        .await
        .expect("AUTH 2");
    let reply = auth.read_line().await.expect("AUTH 2 reply");
    assert!(reply.starts_with("FAIL\t2"), "{reply}");
}
