//! A real client nobody here wrote — isync's mbsync — synchronises a mailbox tree through
//! the proxy, both ways, and the result equals the same synchronisation straight to
//! Dovecot.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::dovecot::Dovecot;
use support::mbsync::{self, ImapAccount, MaildirListing};
use support::proxy::{Options, Proxy};

async fn sync(addr: SocketAddr, maildir: &Path, what: &str) {
    let account = ImapAccount {
        addr,
        user: "alice",
        password: "secret-alice",
    };
    let out = mbsync::sync(&account, maildir, mbsync::SYNC_TIMEOUT)
        .await
        .expect(what);
    assert!(out.success(), "{what} failed: {out:#?}");
}

/// Up from a populated tree, a local change synced up again, then down into an empty tree;
/// returns the listing of the final tree.
async fn round_trip(addr: SocketAddr) -> MaildirListing {
    let local = tempfile::tempdir().expect("tempdir");
    mbsync::populate_maildir(local.path(), "INBOX", 5, true).expect("INBOX");
    mbsync::populate_maildir(local.path(), "Archive/2024", 2, false).expect("Archive");
    sync(addr, local.path(), "first sync up").await;
    // Both ways: a new local folder with a message, synced up by a second run.
    mbsync::populate_maildir(local.path(), "Later", 1, false).expect("Later");
    sync(addr, local.path(), "second sync up").await;
    let copy = tempfile::tempdir().expect("tempdir");
    sync(addr, copy.path(), "sync down").await;
    let listing = mbsync::canonical_listing(copy.path()).expect("listing");
    let original = mbsync::canonical_listing(local.path()).expect("listing");
    assert_eq!(
        listing, original,
        "the tree synced down equals the tree synced up"
    );
    listing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_through_the_proxy_equals_mbsync_direct() {
    let direct_dovecot = Dovecot::start().expect("dovecot");
    let proxied_dovecot = Dovecot::start().expect("dovecot");
    let proxy = Proxy::start(
        proxied_dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let direct = round_trip(direct_dovecot.imap_addr()).await;
    let proxied = round_trip(proxy.plain).await;
    assert_eq!(direct.message_count(), 8);
    assert!(
        direct.folders.contains_key("Archive/2024") && direct.folders.contains_key("Later"),
        "{:?}",
        direct.folders.keys()
    );
    assert_eq!(proxied, direct);
}
