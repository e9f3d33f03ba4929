//! A user's mailbox in the test Dovecot, seen over IMAP: log in, count, wait for
//! deliveries, fetch messages.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::dovecot::Dovecot;
use super::io::{tagged_status, LineClient};
use super::postfix::Postfix;

/// How long a message may take from Postfix's 250 to the recipient's INBOX.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// Logs in to Dovecot as `user` (password from the Dovecot support).
pub async fn imap_login(dovecot: &Dovecot, user: &str) -> LineClient {
    let mut client = LineClient::connect(dovecot.imap_addr())
        .await
        .expect("connect to dovecot imap");
    let greeting = client.read_line().await.expect("imap greeting");
    assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
    let password = dovecot.password_of(user).expect("a dovecot test user");
    let lines = client
        .imap("l", &format!("LOGIN {user} {password}"))
        .await
        .expect("LOGIN");
    assert_eq!(tagged_status(&lines), "OK", "LOGIN {user}: {lines:#?}");
    client
}

/// `STATUS INBOX (MESSAGES)` on a logged-in session; the error carries Dovecot's
/// answer.
pub async fn inbox_messages(client: &mut LineClient) -> Result<u32, String> {
    let lines = client
        .imap("s", "STATUS INBOX (MESSAGES)")
        .await
        .map_err(|e| format!("STATUS: {e}"))?;
    if tagged_status(&lines) != "OK" {
        return Err(format!("STATUS: {lines:?}"));
    }
    lines
        .iter()
        .find_map(|line| {
            let rest = line.strip_prefix("* STATUS ")?;
            let n = rest.split("MESSAGES ").nth(1)?;
            n.trim_end_matches(')').trim().parse().ok()
        })
        .ok_or_else(|| format!("no MESSAGES in {lines:?}"))
}

/// Polls `user`'s INBOX until it holds `want` messages; panics with both logs and the
/// queue when the deadline passes.
///
/// A STATUS that fails is retried on a new session: while LMTP creates a user's INBOX
/// for the first delivery, Dovecot 2.3 may answer a concurrent STATUS of that
/// not-yet-existing INBOX with `NO [ALREADYEXISTS]` or close the session.
pub async fn wait_for_inbox(dovecot: &Dovecot, user: &str, want: u32, postfixes: &[&Postfix]) {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut client = imap_login(dovecot, user).await;
    loop {
        let last = match inbox_messages(&mut client).await {
            Ok(have) if have >= want => {
                assert_eq!(have, want, "{user}'s INBOX has more messages than expected");
                return;
            }
            Ok(have) => format!("{have} messages"),
            Err(e) => {
                eprintln!("retrying after a failed STATUS: {e}");
                client = imap_login(dovecot, user).await;
                e
            }
        };
        if Instant::now() >= deadline {
            let mut report = String::new();
            for postfix in postfixes {
                report.push_str(&format!(
                    "--- postfix {} queue ---\n{}\n--- postfix {} log ---\n{}\n",
                    postfix.domain(),
                    postfix.mailq().unwrap_or_else(|e| e.to_string()),
                    postfix.domain(),
                    postfix.log_contents()
                ));
            }
            panic!(
                "{user}'s INBOX: {last}, not {want}, after {DELIVERY_DEADLINE:?}\n\
                 {report}--- dovecot log ---\n{}",
                dovecot.log_contents()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `user`'s INBOX before the first delivery (a STATUS creates it), so the
/// test's polling cannot race with LMTP creating it (see [`wait_for_inbox`]).
pub async fn prime_inbox(dovecot: &Dovecot, user: &str) {
    let mut client = imap_login(dovecot, user).await;
    assert_eq!(inbox_messages(&mut client).await, Ok(0), "{user}'s INBOX");
}

/// The whole message `seq` of `mailbox` as the lines IMAP returned (the literal's lines
/// between the FETCH line and its closing parenthesis).
pub async fn fetch_message(client: &mut LineClient, mailbox: &str, seq: u32) -> Vec<String> {
    let lines = client
        .imap("x", &format!("EXAMINE {mailbox}"))
        .await
        .expect("EXAMINE");
    assert_eq!(tagged_status(&lines), "OK", "EXAMINE: {lines:#?}");
    let lines = client
        .imap("f", &format!("FETCH {seq} BODY.PEEK[]"))
        .await
        .expect("FETCH");
    assert_eq!(tagged_status(&lines), "OK", "FETCH: {lines:#?}");
    // "* n FETCH (BODY[] {len}", the message lines, ")", "f OK ..."
    let end = lines.len().saturating_sub(2);
    lines[1..end].to_vec()
}
