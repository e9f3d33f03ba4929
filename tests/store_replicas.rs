//! De-duplication across replicas (issue 4, decision 0007): two proxy processes storing
//! the same delivery at the same instant (a link's copy and the mail fallback's, or a
//! replayed stream, landing on different replicas) leave one copy. Each process's lock
//! serialises only its own stores; here two `Mailboxes`, each with its own writer pool
//! and lock table, race against one real Dovecot, the way two replicas would.

mod support;

use std::sync::Arc;

use coi_proxy::coi::address::normalize;
use coi_proxy::coi::delivery::Folder;
use coi_proxy::coi::token::Secret;
use coi_proxy::config::UserName;
use coi_proxy::net::spool::Spool;
use coi_proxy::proxy::state::UserStates;
use coi_proxy::proxy::store::{Mailboxes, StoreOutcome};
use coi_proxy::proxy::writer::MailboxWriter;

use support::dovecot::Dovecot;
use support::io::step;
use support::mailbox::imap_login;
use support::peers::count_in;

/// Deliveries raced per folder. Without the search after the APPEND the very first round
/// already left two copies when tried: both replicas search before either appends.
const ROUNDS: usize = 12;

/// One replica's view of the mailboxes: its own connections and its own lock table.
fn replica(dovecot: &Dovecot) -> Mailboxes {
    let secret = Secret::new(*b"the replicas' shared dedup secret").expect("secret");
    Mailboxes::new(
        MailboxWriter::new(dovecot.writer_config()),
        "COI".to_owned(),
        Arc::new(UserStates::new()),
        UserName::LocalPart,
        Some(secret),
    )
}

async fn spooled(message: &str) -> Spool {
    let mut spool = Spool::new(64 * 1024, &std::env::temp_dir());
    spool.write(message.as_bytes()).await.expect("spool");
    spool
}

/// Races `ROUNDS` deliveries into `folder` from both replicas; every one must end with
/// exactly one replica's `Stored` and the other's `Duplicate` of that very copy.
async fn race(folder: Folder, tag: &str, replicas: [&Mailboxes; 2]) {
    let alice = normalize("alice@a.test").expect("address");
    for round in 0..ROUNDS {
        let id = format!("<{tag}{round}@b.test>");
        let message = format!(
            "From: bob@b.test\r\nTo: alice@a.test\r\nMessage-ID: {id}\r\n\
             Chat-Version: 1.0\r\n\r\nround {round}\r\n"
        );
        let key = replicas[0].delivery_key("b.test", &id, &alice, &[round as u8; 32]);
        assert_eq!(
            key,
            replicas[1].delivery_key("b.test", &id, &alice, &[round as u8; 32]),
            "one secret, one key"
        );
        let (mut one, mut two) = (spooled(&message).await, spooled(&message).await);
        let (a, b) = step("two stores at once", async {
            Ok::<_, std::io::Error>(tokio::join!(
                replicas[0].store("alice", folder, Some(&key), &mut one),
                replicas[1].store("alice", folder, Some(&key), &mut two),
            ))
        })
        .await
        .expect("stores finish");
        let stored: Vec<u32> = [&a, &b]
            .iter()
            .filter_map(|o| match o {
                StoreOutcome::Stored { uid, .. } => Some(uid.uid),
                _ => None,
            })
            .collect();
        let duplicate_of: Vec<u32> = [&a, &b]
            .iter()
            .filter_map(|o| match o {
                StoreOutcome::Duplicate { uid, .. } => Some(*uid),
                _ => None,
            })
            .collect();
        assert_eq!(stored.len(), 1, "round {round}: {a:?} / {b:?}");
        assert_eq!(duplicate_of, stored, "round {round}: {a:?} / {b:?}");
    }
}

#[tokio::test]
async fn two_replicas_storing_one_delivery_at_once_leave_one_copy() {
    let dovecot = Dovecot::start().expect("dovecot");
    let (first, second) = (replica(&dovecot), replica(&dovecot));
    race(Folder::Chats, "chats", [&first, &second]).await;
    race(Folder::Inbox, "inbox", [&second, &first]).await;

    let mut imap = imap_login(&dovecot, "alice").await;
    assert_eq!(count_in(&mut imap, "COI/Chats").await, ROUNDS as u32);
    assert_eq!(count_in(&mut imap, "INBOX").await, ROUNDS as u32);
}
