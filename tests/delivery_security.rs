//! SECURITY-CASES.md §A (end of data and line endings), the hook's share of §D, §E
//! (tokens on the inbound path), §F (address forms) and §4 (durability) against the
//! delivery hook: the in-process proxy's LMTP listener in front of a real Dovecot (LMTP
//! for delivery, IMAP for the mailbox writer), spoken to by raw byte clients exactly as
//! Postfix's LMTP client would, or as a broken one would. One test puts a real Postfix in
//! front, where Postfix's own behaviour is the point (it keeps a message the hook defers).
//!
//! Every case with input runs twice ([`DELIVERIES`]): all bytes in one write, and one
//! byte per write (TCP_NODELAY, so usually one segment per byte). Payloads of tens of
//! kilobytes or more are the exception: their head and tail follow the delivery, the
//! bulk goes in 64 KiB writes.
//!
//! Every reply is asserted per recipient and in RCPT order (RFC 2033 §4.2), and what
//! Dovecot stored is read back over IMAP: nothing, or the exact bytes. A copy the writer
//! appended must equal the message byte for byte; a copy Dovecot's LMTP delivered must
//! equal it after the trace fields Dovecot puts in front (`Return-Path`, `Delivered-To`,
//! `Received`). The hook answers only after every store answered, so what Dovecot holds
//! after the last reply is final; absence is read then, never from a log.
//!
//! Upstream faults a real Dovecot cannot produce on cue (silence after the end of data,
//! a 452 for one recipient only) come from a scripted LMTP server in this process
//! ([`StubWorld`]). A failing mailbox writer comes from [`ImapRelay`], which cuts the writer's
//! IMAP connection at its APPEND. The crash case runs the `coi-proxy` binary and kills it
//! with SIGKILL.
//!
//! Memory cases read this process's RSS (the proxy runs in-process); they hold the memory
//! gate exclusively ([`exclusive_gate`]), so no other test of this binary allocates
//! meanwhile.
//!
//! Users of the test Dovecot: bob has COI on (filter `active`: chat mail goes to
//! `COI/Chats` with `$Chat`) where a test says so; carol has COI off unless a test turns
//! it on; alice is the sender. `nobody` does not exist.
//!
//! # Cases
//!
//! | case | test |
//! |---|---|
//! | A1 LF.CRLF smuggle | [`lf_dot_crlf_smuggling_gets_one_550_per_recipient_and_nothing_is_stored`] |
//! | A2 LF.LF smuggle | [`lf_dot_lf_smuggling_gets_one_550_per_recipient_and_nothing_is_stored`] |
//! | A4 bare LF / CR in a header or the body | [`bare_lf_or_cr_in_the_header_or_the_body_gets_550_per_recipient_and_nothing_is_stored`] |
//! | A5 NUL in a command / the body | [`nul_in_mail_from_gets_501_and_nul_in_the_body_gets_550_per_recipient`] |
//! | A rule: bare LF in a command | [`bare_lf_in_a_command_gets_421_and_close`] |
//! | A6 dot-stuffing round trip | [`dot_stuffed_lines_are_stored_byte_identical_on_the_lmtp_and_the_chat_route`] |
//! | A7 long lines (the hook's 64 KiB) | [`a_64_kib_line_is_delivered_and_a_longer_one_gets_554_5_6_0_per_recipient`] |
//! | D36 size (SIZE= and the body) | [`size_over_the_limit_gets_552_at_mail_and_after_the_end_of_data_per_recipient`] |
//! | D37 recipient flood | [`recipients_beyond_the_limit_get_452_4_5_3_and_get_nothing`] |
//! | LMTP: DATA without a good RCPT | [`data_without_a_successful_rcpt_gets_503`] |
//! | LMTP: per-recipient replies | [`an_unknown_recipient_gets_550_at_rcpt_and_the_others_one_reply_each_in_order`] |
//! | LMTP: pipelining | [`pipelined_transactions_in_one_write_are_answered_in_order`] |
//! | LMTP: RSET | [`rset_between_transactions_forgets_the_recipients`] |
//! | LMTP: EHLO/HELO | [`ehlo_and_helo_are_refused_and_lhlo_works`] |
//! | §4 rule 2, case 61 (Dovecot's LMTP crashed or stopped) | [`dovecot_lmtp_crash_mid_data_gives_451_4_3_0_for_every_recipient_and_stores_nothing`], [`dovecot_stopped_gives_451_4_3_0_for_every_recipient_and_stores_nothing`] (ignored: bug), [`postfix_keeps_a_deferred_message_and_delivers_it_once_when_dovecot_is_back`] |
//! | §4 rule 2, case 62 (silent after the dot) | [`dovecot_silent_closed_or_reset_after_the_end_of_data_gives_451_per_recipient`] |
//! | §4 rule 2, case 63 (refusals after the dot) | [`per_recipient_replies_after_the_end_of_data_are_relayed_in_order`] |
//! | §4 rule 7 (the writer fails) | [`a_failing_mailbox_writer_gives_its_recipient_451_and_the_others_are_delivered`], [`an_unreadable_coi_configuration_sends_chat_mail_by_lmtp`] |
//! | §4 crash table, rule 1 | [`a_killed_proxy_mid_data_leaves_nothing_in_dovecot`] |
//! | §4 rule 8 graceful stop | [`a_stop_mid_data_gives_421_4_3_2_and_stores_nothing`] |
//! | E44 token in a nested part / the body | [`a_token_in_the_body_or_an_attached_message_is_not_captured`] |
//! | E47 (inbound) other pair, expired, future | [`tokens_for_another_pair_expired_or_from_the_future_are_not_captured`] |
//! | contact update is idempotent | [`the_same_message_delivered_twice_stores_its_token_once`] |
//! | E46 nested MIME | [`ten_thousand_nested_multiparts_are_delivered_in_bounded_time`] |
//! | F50 address forms | [`capture_finds_one_contact_whatever_the_case_of_the_addresses`] |
//! | memory | [`a_20_mb_message_to_the_chat_and_the_lmtp_route_in_constant_memory`] |
//!
//! # Not applicable to the hook, or covered elsewhere
//!
//! - §B (STARTTLS, TLS): the hook's listener is plaintext LMTP for Postfix on loopback
//!   or the pod network (docs/delivery.md); it offers no STARTTLS.
//! - §C (IMAP) and §G (QUIC) concern other components.
//! - A8 (Postfix exemption trap): Postfix's LMTP client writes canonical CRLF lines, so
//!   the hook never meets Postfix's bare-LF leniency; the raw clients here send what a
//!   broken client would, and the refusals are the hook's own.
//! - A7 command lines and 10 MB lines: the command framer is the submission front's
//!   (tests/submission_security.rs); the hook's body line limit is tested here.
//! - D31, D32, D34, D35, D39, D40: port-25 and submission policy (relay, sender
//!   ownership, early talkers, BDAT, connection floods, the aggregate budget) do not
//!   apply to an LMTP hook that only Postfix reaches. D38 (slowloris against
//!   `delivery.timeouts.command`) and the session cap (`delivery.limits.max_sessions`)
//!   were not part of this suite's brief and are not covered here.
//! - E42 (pre-supplied verdict headers) and E48 (constant-time MAC checks): the hook
//!   injects and verifies nothing; the MAC of a captured token is the sender's server's
//!   and only ever goes back to it (docs/delivery.md §3), so a "forged" token here is one
//!   in the wrong place or for the wrong pair.
//! - E47 key rotation and clock jumps: the hook checks no MAC; its time rule is the
//!   token module's `check_time`, unit-tested there.
//! - §4 rules 4–6 (QUIC, deduplication, Message-IDs): not on the LMTP path.
//! - Crash points after the hook wrote the end of data to Dovecot are the documented
//!   duplicate window and not reachable without failpoints; the crash test covers the
//!   point before the final dot.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use coi_proxy::coi::address::{self, NormalizedAddress};
use coi_proxy::coi::contacts::{Contact, FromHash};
use coi_proxy::coi::token::{self, Secret, Secrets, TokenKind};

use support::dovecot::Dovecot;
use support::io::{tagged_status, STEP};
use support::memory::{exclusive_gate, send_bulk, shared_gate, MemoryGate, MemoryProbe};
use support::postfix::{smtp, Postfix, PostfixOptions};
use support::proxy::{free_port_on, DeliveryTuning, Options, Proxy, ProxyProcess};
use support::raw::{
    assert_dropped_without_reply, assert_statuses, command, escape, expect, greeted, replies,
    replies_to_close, sent, statuses, Delivery, Plain, RawClient, Reply, DELIVERIES,
};
use support::stub::{Protocol, Script, StubWorld};
use support::world::{enable_coi, hook_options, hook_proxy, master_of};

// === set-up ===

/// The envelope sender of the tests.
const ALICE: &str = "alice@a.test";

/// A private Dovecot and the proxy's hook in front of its LMTP, with the mailbox writer
/// logging in to its IMAP as the master user.
struct World {
    dovecot: Dovecot,
    proxy: Proxy,
    _gate: MemoryGate,
}

impl World {
    async fn start(tuning: DeliveryTuning) -> World {
        Self::with_gate(tuning, shared_gate().await).await
    }

    /// For memory measurements: no other test of this binary runs meanwhile.
    async fn exclusive(tuning: DeliveryTuning) -> World {
        Self::with_gate(tuning, exclusive_gate().await).await
    }

    async fn with_gate(tuning: DeliveryTuning, gate: MemoryGate) -> World {
        let dovecot = Dovecot::start().expect("dovecot starts");
        let proxy = hook_proxy(&dovecot, tuning).await;
        World {
            dovecot,
            proxy,
            _gate: gate,
        }
    }

    fn hook(&self) -> SocketAddr {
        self.proxy.delivery.expect("the hook's listener")
    }

    /// Turns COI on for `user` (filter `active`) through the proxy's IMAP front, which
    /// also drops the hook's cached configuration (see tests/delivery.rs).
    async fn enable_coi(&self, user: &str) {
        enable_coi(&self.proxy, user, "active").await;
    }

    async fn stored(&self, user: &str, mailbox: &str) -> Vec<Stored> {
        stored(&self.dovecot, user, mailbox).await
    }

    /// No copy of anything in `users`' INBOX or Chats.
    async fn assert_nothing_stored(&self, users: &[&str], what: &str) {
        for user in users {
            for mailbox in ["INBOX", CHATS] {
                let stored = self.stored(user, mailbox).await;
                assert!(
                    stored.is_empty(),
                    "{what}: {user}'s {mailbox} holds {:#?}",
                    stored.iter().map(|s| escape(&s.bytes)).collect::<Vec<_>>()
                );
            }
        }
    }

    /// `message` sent to bob (COI on) and carol (COI off) for the `n`th time: bob's
    /// Chats holds `n` copies, the last one the writer's; carol's INBOX holds `n`, the
    /// last one Dovecot's LMTP's.
    async fn assert_nth_copies_for_bob_and_carol(&self, n: usize, message: &[u8], what: &str) {
        let bob = self.stored("bob", CHATS).await;
        assert_eq!(bob.len(), n, "{what}: bob's copies");
        assert_appended_copy(&bob[n - 1], message, &format!("{what}: bob's chat copy"));
        let carol = self.stored("carol", "INBOX").await;
        assert_eq!(carol.len(), n, "{what}: carol's copies");
        assert_lmtp_copy(&carol[n - 1], message, &format!("{what}: carol's copy"));
    }
}

/// The proxy with a hook in front of `lmtp`; its IMAP front (plaintext LOGIN allowed)
/// and its mailbox writer (with `master`) use `imap`.
async fn hook_in_front_of(
    imap: SocketAddr,
    lmtp: SocketAddr,
    master: Option<(String, String)>,
    tuning: DeliveryTuning,
) -> Proxy {
    Proxy::start(
        imap,
        Options {
            delivery_tuning: tuning,
            ..hook_options(lmtp, master)
        },
    )
    .await
}

// === LMTP over raw clients ===

/// Greeted and after LHLO, as Postfix's LMTP client starts.
async fn session(addr: SocketAddr) -> Plain {
    let mut c = greeted(addr).await;
    expect(&mut c, "LHLO mx.b.test", "250").await;
    c
}

/// MAIL FROM `from`, RCPT TO each of `to` (each accepted), DATA: ready for the message.
async fn open_data(c: &mut Plain, from: &str, to: &[&str]) {
    expect(c, &format!("MAIL FROM:<{from}>"), "250 2.1.0").await;
    for rcpt in to {
        expect(c, &format!("RCPT TO:<{rcpt}>"), "250 2.1.5").await;
    }
    expect(c, "DATA", "354").await;
}

/// A session from alice to bob and carol, ready for the message.
async fn data_for_bob_and_carol(hook: SocketAddr) -> Plain {
    let mut c = session(hook).await;
    open_data(&mut c, ALICE, &["bob@b.test", "carol@b.test"]).await;
    c
}

/// One transaction on a fresh session: MAIL FROM `from`, RCPT TO each of `to`, DATA,
/// then `data` sent as `delivery` says, then QUIT in one write. Returns every reply from
/// the end of data to the close: the recipients' replies, then QUIT's 221.
async fn attempt(
    hook: SocketAddr,
    from: &str,
    to: &[&str],
    data: &[u8],
    delivery: Delivery,
) -> Vec<Reply> {
    let mut c = session(hook).await;
    open_data(&mut c, from, to).await;
    c.send(data, delivery)
        .await
        .unwrap_or_else(|e| panic!("{delivery:?}: send the data: {e}"));
    // QUIT fences the replies: everything before its 221 answers the message.
    c.send(b"QUIT\r\n", Delivery::Whole).await.expect("QUIT");
    replies_to_close(&mut c, STEP).await
}

/// [`attempt`] from alice to bob and carol.
async fn attempt_to_bob_and_carol(hook: SocketAddr, data: &[u8], delivery: Delivery) -> Vec<Reply> {
    attempt(hook, ALICE, &["bob@b.test", "carol@b.test"], data, delivery).await
}

/// [`attempt`] that must end with one `status` per recipient, then 221.
async fn assert_replies(
    hook: SocketAddr,
    from: &str,
    to: &[&str],
    data: &[u8],
    delivery: Delivery,
    status: &str,
) -> Vec<Reply> {
    let replies = attempt(hook, from, to, data, delivery).await;
    let mut want = vec![status.to_owned(); to.len()];
    want.push("221 2.0.0".to_owned());
    assert_eq!(
        statuses(&replies),
        want,
        "{delivery:?} {}: {replies:#?}",
        escape(data)
    );
    replies
}

/// `message` from alice to bob alone, delivered (250 2.0.0).
async fn assert_delivered_to_bob(hook: SocketAddr, message: &[u8], delivery: Delivery) {
    assert_replies(
        hook,
        ALICE,
        &["bob@b.test"],
        &data_of(message),
        delivery,
        "250 2.0.0",
    )
    .await;
}

/// A message (CRLF lines, ending in CRLF) as DATA: dot-stuffed, then the end line.
fn data_of(message: &[u8]) -> Vec<u8> {
    assert!(message.ends_with(b"\r\n"), "a message ends with CRLF");
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A plain (non-chat) message from alice.
fn plain_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: alice@a.test\r\nTo: bob@b.test, carol@b.test\r\nSubject: {subject}\r\nMessage-ID: <{}@a.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

/// A chat message from alice (`Chat-Version`), `extra` header lines (each ending in
/// CRLF) before the blank line.
fn chat_message(n: u32, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: chat {n}\r\nChat-Version: 1.0\r\nMessage-ID: <chat.{n}@a.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

/// `message` with a Message-ID of its own for the `i`th delivery pattern, so that the
/// hook's de-duplication (decision 0007) does not take the second pattern's copy for the
/// first's. Same length for `i` below 10.
fn for_delivery(message: &[u8], i: usize) -> Vec<u8> {
    let from = b"Message-ID: <chat.";
    let at = message
        .windows(from.len())
        .position(|w| w == from)
        .expect("a chat message's Message-ID");
    let mut out = message.to_vec();
    out[at + from.len() - 1] = b'0' + (i % 10) as u8;
    out
}

// === what Dovecot stored ===

/// The mailbox the writer appends COI users' chat mail to under the `active` filter.
const CHATS: &str = "COI/Chats";
const CONTACTS: &str = "COI/Contacts";

/// One message as Dovecot holds it.
#[derive(Debug)]
struct Stored {
    uid: u32,
    flags: String,
    bytes: Vec<u8>,
}

/// Every message of `user`'s `mailbox` (none if it does not exist), read over IMAP as
/// exact bytes.
async fn stored(dovecot: &Dovecot, user: &str, mailbox: &str) -> Vec<Stored> {
    let mut c = RawClient::connect(dovecot.imap_addr())
        .await
        .expect("connect to Dovecot's IMAP");
    let greeting = c.expect_line("the IMAP greeting").await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let password = dovecot.password_of(user).expect("a test user");
    let lines = c
        .command("l", &format!("LOGIN {user} {password}"))
        .await
        .expect("LOGIN");
    assert_eq!(tagged_status(&lines), "OK", "LOGIN {user}: {lines:?}");
    let lines = c
        .command("e", &format!("EXAMINE \"{mailbox}\""))
        .await
        .expect("EXAMINE");
    if tagged_status(&lines) != "OK" {
        return Vec::new();
    }
    let exists: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    if exists == 0 {
        return out;
    }
    c.send(b"f FETCH 1:* (UID FLAGS BODY.PEEK[])\r\n", Delivery::Whole)
        .await
        .expect("FETCH");
    loop {
        let line = c.expect_line("FETCH").await.expect("a FETCH line");
        if line.starts_with("f ") {
            assert!(line.starts_with("f OK"), "FETCH: {line}");
            break;
        }
        if !line.starts_with("* ") || !line.contains(" FETCH (") {
            continue;
        }
        let len: usize = line
            .rsplit_once('{')
            .and_then(|(_, n)| n.strip_suffix('}'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a literal in {line}"));
        let bytes = c.read_bytes(len).await.expect("the message literal");
        let rest = c.expect_line("the end of FETCH").await.expect(")");
        let items = format!("{line} {rest}");
        let uid = items
            .split("UID ")
            .nth(1)
            .and_then(|s| s.split([' ', ')']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a UID in {items}"));
        let flags = items
            .split("FLAGS (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("FLAGS in {items}"))
            .to_owned();
        out.push(Stored { uid, flags, bytes });
    }
    assert_eq!(out.len(), exists, "one FETCH per message");
    out
}

/// The message after the trace fields Dovecot's LMTP puts in front (`Return-Path`,
/// `Delivered-To`, `Received`, with their continuation lines); `None` without any.
fn without_trace(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    let mut in_trace = false;
    let mut seen = false;
    while let Some(end) = memchr::memmem::find(&bytes[at..], b"\r\n") {
        let line = &bytes[at..at + end];
        let is_trace = [&b"Return-Path:"[..], b"Delivered-To:", b"Received:"]
            .iter()
            .any(|name| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name));
        let continues = in_trace && matches!(line.first(), Some(b' ' | b'\t'));
        if !is_trace && !continues {
            break;
        }
        in_trace = true;
        seen = true;
        at += end + 2;
    }
    seen.then_some(&bytes[at..])
}

/// One copy delivered by Dovecot's LMTP: the message exactly, after Dovecot's trace
/// fields, without `$Chat`.
fn assert_lmtp_copy(copy: &Stored, message: &[u8], what: &str) {
    let body = without_trace(&copy.bytes)
        .unwrap_or_else(|| panic!("{what}: no LMTP trace fields: {}", escape(&copy.bytes)));
    assert!(
        body == message,
        "{what}: stored {}\nsent {}",
        escape(body),
        escape(message)
    );
    assert!(!copy.flags.contains("$Chat"), "{what}: {}", copy.flags);
}

/// The line the mailbox writer puts before a chat message it stores: its
/// de-duplication key (docs/decisions/0007), 43 base64url characters.
const DELIVERY_KEY_LINE_LEN: usize = "X-COI-Delivery: ".len() + 43 + 2;

/// One copy appended by the mailbox writer: one `X-COI-Delivery` line, then the message
/// byte for byte, with `$Chat`.
fn assert_appended_copy(copy: &Stored, message: &[u8], what: &str) {
    let (key, stored) = copy
        .bytes
        .split_at(DELIVERY_KEY_LINE_LEN.min(copy.bytes.len()));
    assert!(
        key.starts_with(b"X-COI-Delivery: ")
            && key.ends_with(b"\r\n")
            && key[16..key.len() - 2]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'),
        "{what}: no delivery key line first: {}",
        escape(&copy.bytes)
    );
    assert!(
        stored == message,
        "{what}: stored {}\nsent {}",
        escape(stored),
        escape(message)
    );
    assert!(copy.flags.contains("$Chat"), "{what}: {}", copy.flags);
}

// === tokens and contacts ===

/// The sender's server's secret: the tests mint tokens as alice's server would.
const SENDER_SECRET: &str = "sender-server-secret-for-tests-01";

/// A day, the validity of the test tokens.
const DAY: u64 = 86_400;

fn normalized(address: &str) -> NormalizedAddress {
    address::normalize(address).unwrap_or_else(|e| panic!("{address}: {e}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A temporary token as alice's server mints it for `recipient` to write back to
/// `sender` (hash `H(recipient ":" sender)`), created at `created`, valid `validity`.
fn token_for(recipient: &str, sender: &str, created: u64, validity: u64) -> String {
    let secrets = Secrets {
        temporary: vec![Secret::new(SENDER_SECRET).expect("a secret")],
        permanent: Vec::new(),
    };
    let hash = token::pair_hash(Some(&normalized(recipient)), &normalized(sender));
    token::issue(
        TokenKind::Temporary,
        created,
        validity,
        &hash,
        &[],
        &secrets,
    )
    .expect("issue a token")
    .render()
}

/// The header field as alice's server writes it (folded onto a continuation line).
fn token_field(token: &str) -> String {
    format!("X-COI-Temporary-Token:\r\n {token}\r\n")
}

/// `user`'s contact messages, parsed.
async fn contacts(dovecot: &Dovecot, user: &str) -> Vec<(u32, Contact)> {
    stored(dovecot, user, CONTACTS)
        .await
        .into_iter()
        .map(|s| {
            let contact = Contact::parse(&s.bytes)
                .unwrap_or_else(|e| panic!("a contact: {e:?}: {}", escape(&s.bytes)));
            (s.uid, contact)
        })
        .collect()
}

/// The `COI-TokenOut` values of a contact.
fn tokens_out(contact: &Contact) -> Vec<String> {
    contact.token_out().iter().map(|t| t.render()).collect()
}

/// `user` has no contact at all.
async fn assert_no_contact(dovecot: &Dovecot, user: &str, what: &str) {
    let found = contacts(dovecot, user).await;
    assert!(
        found.is_empty(),
        "{what}: {user} has contacts: {:#?}",
        found.iter().map(|(_, c)| tokens_out(c)).collect::<Vec<_>>()
    );
}

/// `user` has exactly one contact, alice's, holding exactly `token`; its UID.
async fn assert_one_contact_for_alice(dovecot: &Dovecot, user: &str, token: &str) -> u32 {
    let found = contacts(dovecot, user).await;
    assert_eq!(found.len(), 1, "{user}'s contacts: {found:#?}");
    let (uid, contact) = &found[0];
    assert!(
        contact.has_from_hash(&FromHash::of(&normalized(ALICE))),
        "alice's contact: {contact:#?}"
    );
    assert_eq!(tokens_out(contact), [token.to_owned()], "{user}'s contact");
    *uid
}

/// A counter of the proxy's metrics text, e.g.
/// `coi_proxy_delivery_token_captures_total{outcome="stored"}`; 0 when absent.
fn metric(proxy: &Proxy, series: &str) -> u64 {
    proxy.metric(series).map_or(0, |v| v as u64)
}

// === memory ===

/// Proxy RSS growth allowed while a message of tens of megabytes goes through: read
/// buffers, the 1 MiB spool memory, one line, a header block, allocator slack.
const GROWTH_LIMIT_KIB: u64 = 6 * 1024;

/// Sends `head` as `delivery` says, then `total` bytes of `line` repeated in 64 KiB
/// writes ([`send_bulk`], sampling RSS every MiB into `probe`), then `tail` as
/// `delivery` says. The hook must read it all.
async fn send_large(
    c: &mut Plain,
    head: &[u8],
    line: &[u8],
    total: usize,
    tail: &[u8],
    delivery: Delivery,
    probe: Option<&mut MemoryProbe>,
) {
    c.send(head, delivery).await.expect("send the head");
    let written = send_bulk(c, line, total, probe).await;
    assert_eq!(
        written, total,
        "{delivery:?}: the hook closed during the bulk"
    );
    c.send(tail, delivery).await.expect("send the tail");
}

// === §A end of data and line endings ===

/// A1: `\n.\r\n` inside the body, then a second transaction.
const SMUGGLE_LF_DOT_CRLF: &[u8] = b"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\nFrom: ceo@a.test\r\n\r\nevil\r\n.\r\n";

/// A2: `\n.\n` inside the body, then a second transaction.
const SMUGGLE_LF_DOT_LF: &[u8] = b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\nFrom: ceo@a.test\r\n\r\nevil\r\n.\r\n";

/// A smuggling payload to bob and carol: one 550 5.6.0 per recipient and QUIT's 221,
/// nothing else (no reply for a second transaction); nothing stored for anyone.
async fn assert_smuggling_refused(world: &World, payload: &[u8]) {
    for delivery in DELIVERIES {
        assert_replies(
            world.hook(),
            ALICE,
            &["bob@b.test", "carol@b.test"],
            payload,
            delivery,
            "550 5.6.0",
        )
        .await;
    }
    world
        .assert_nothing_stored(&["bob", "carol", "alice"], &escape(payload))
        .await;
}

/// A1: the LF.CRLF smuggle is one message with a bare LF: one 550 5.6.0 per recipient,
/// never a reply for the smuggled transaction, and Dovecot stored nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lf_dot_crlf_smuggling_gets_one_550_per_recipient_and_nothing_is_stored() {
    let world = World::start(DeliveryTuning::default()).await;
    assert_smuggling_refused(&world, SMUGGLE_LF_DOT_CRLF).await;
}

/// A2: the same with `\n.\n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lf_dot_lf_smuggling_gets_one_550_per_recipient_and_nothing_is_stored() {
    let world = World::start(DeliveryTuning::default()).await;
    assert_smuggling_refused(&world, SMUGGLE_LF_DOT_LF).await;
}

/// A4: a bare LF or CR in a header line or a body line: 550 5.6.0 per recipient, for
/// COI chat mail (bob) as for plain mail (carol), and nothing stored. The session stays
/// in step: a good message on the same session is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_or_cr_in_the_header_or_the_body_gets_550_per_recipient_and_nothing_is_stored() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    let payloads: [&[u8]; 4] = [
        b"Chat-Version: 1.0\r\nSubject: hi\nX-Injected: 1\r\n\r\nbody\r\n.\r\n",
        b"Chat-Version: 1.0\r\nSubject: hi\rX-Injected: 1\r\n\r\nbody\r\n.\r\n",
        b"Chat-Version: 1.0\r\nSubject: hi\r\n\r\nline one\nline two\r\n.\r\n",
        b"Chat-Version: 1.0\r\nSubject: hi\r\n\r\nline one\rline two\r\n.\r\n",
    ];
    for payload in payloads {
        for delivery in DELIVERIES {
            let mut c = data_for_bob_and_carol(world.hook()).await;
            c.send(payload, delivery).await.expect("send the payload");
            let refused = replies(&mut c, 2).await;
            assert_eq!(
                statuses(&refused),
                ["550 5.6.0", "550 5.6.0"],
                "{delivery:?} {}: {refused:#?}",
                escape(payload)
            );
            world
                .assert_nothing_stored(&["bob", "carol"], &escape(payload))
                .await;
        }
    }
    // In step after all that: one more transaction on a session that saw a refusal.
    let mut c = session(world.hook()).await;
    open_data(&mut c, ALICE, &["carol@b.test"]).await;
    let r = sent(&mut c, payloads[0], Delivery::Whole).await;
    assert_eq!(r.status(), "550 5.6.0", "{r:?}");
    let message = plain_message("after", "fine");
    open_data(&mut c, ALICE, &["carol@b.test"]).await;
    let r = sent(&mut c, &data_of(&message), Delivery::Whole).await;
    assert_eq!(r.status(), "250 2.0.0", "{r:?}");
    let carol = world.stored("carol", "INBOX").await;
    assert_eq!(carol.len(), 1);
    assert_lmtp_copy(&carol[0], &message, "the message after the refusals");
}

/// The §A rule for commands: a bare LF is no line end the hook and Dovecot could agree
/// on; the hook says 421 4.7.0 and closes, and neither the rest of that line nor the
/// commands after it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_in_a_command_gets_421_and_close() {
    let world = World::start(DeliveryTuning::default()).await;
    let payloads: [&[u8]; 2] = [
        b"NOOP\nMAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\n",
        b"MAIL FROM:<alice@a.test>\nRCPT TO:<bob@b.test>\r\nDATA\r\n",
    ];
    for payload in payloads {
        for delivery in DELIVERIES {
            let mut c = session(world.hook()).await;
            c.send_attack(payload, delivery).await;
            let replies = replies_to_close(&mut c, STEP).await;
            assert_eq!(
                statuses(&replies),
                ["421 4.7.0"],
                "{delivery:?} {}: {replies:#?}",
                escape(payload)
            );
        }
    }
    world.assert_nothing_stored(&["bob"], "bare LF").await;
}

/// A5: NUL in MAIL FROM is a syntax error (501 5.5.4) that opens no transaction; NUL in
/// the body refuses the message for every recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_mail_from_gets_501_and_nul_in_the_body_gets_550_per_recipient() {
    let world = World::start(DeliveryTuning::default()).await;
    for delivery in DELIVERIES {
        let mut c = session(world.hook()).await;
        let r = sent(&mut c, b"MAIL FROM:<al\0ice@a.test>\r\n", delivery).await;
        assert_eq!(r.status(), "501 5.5.4", "{delivery:?}: {r:?}");
        let r = sent(&mut c, b"RCPT TO:<bob@b.test>\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: no transaction: {r:?}"
        );
        let r = sent(&mut c, b"MAIL FROM:<alice@a.test>\r\n", delivery).await;
        assert_eq!(r.status(), "250 2.1.0", "{delivery:?}: {r:?}");
        let r = sent(&mut c, b"RCPT TO:<b\0ob@b.test>\r\n", delivery).await;
        assert_eq!(r.status(), "501 5.5.4", "{delivery:?}: {r:?}");
        let r = sent(&mut c, b"DATA\r\n", delivery).await;
        assert_eq!(r.status(), "503 5.5.1", "{delivery:?}: no recipient: {r:?}");
        expect(&mut c, "QUIT", "221 2.0.0").await;

        assert_replies(
            world.hook(),
            ALICE,
            &["bob@b.test", "carol@b.test"],
            b"Subject: nul\r\n\r\nbefore \0 after\r\n.\r\n",
            delivery,
            "550 5.6.0",
        )
        .await;
    }
    world
        .assert_nothing_stored(&["bob", "carol"], "NUL in the body")
        .await;
}

/// A6: lines `.`, `..`, `.x`, `..x` (client-stuffed on the wire) are stored exactly as
/// meant on both routes: Dovecot's LMTP (carol; the hook stuffs again) and the writer's
/// APPEND (bob's chat copy; a literal, never stuffed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_stuffed_lines_are_stored_byte_identical_on_the_lmtp_and_the_chat_route() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = chat_message(i as u32, "", ".\r\n..\r\n.x\r\n..x\r\n . \r\nend\r\n.");
        let data = data_of(&message);
        assert!(
            data.ends_with(b"\r\n..\r\n.\r\n")
                && memchr::memmem::find(&data, b"\r\n...x\r\n").is_some(),
            "stuffed on the wire: {}",
            escape(&data)
        );
        let replies = assert_replies(
            world.hook(),
            ALICE,
            &["bob@b.test", "carol@b.test"],
            &data,
            delivery,
            "250 2.0.0",
        )
        .await;
        assert!(replies[1].mentions("<carol@b.test>"), "{replies:#?}");
        world
            .assert_nth_copies_for_bob_and_carol(i + 1, &message, &format!("{delivery:?}"))
            .await;
    }
    assert!(world.stored("bob", "INBOX").await.is_empty());
}

/// The hook's line limit: 64 KiB including CRLF (docs/delivery.md). A line of exactly
/// that length is delivered as it is; one byte more refuses the message with 554 5.6.0
/// for every recipient, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_line_is_delivered_and_a_longer_one_gets_554_5_6_0_per_recipient() {
    const LIMIT: usize = 64 * 1024;
    let world = World::start(DeliveryTuning::default()).await;
    let head = b"Subject: long line\r\n\r\nshort\r\n".to_vec();
    for delivery in DELIVERIES {
        for (content, status) in [(LIMIT - 2, "250 2.0.0"), (LIMIT - 1, "554 5.6.0")] {
            let mut c = data_for_bob_and_carol(world.hook()).await;
            // The line's last bytes and its CRLF follow the delivery form.
            let tail = b"yyyyyyyyyyyyyyyy\r\nshort again\r\n.\r\n";
            send_large(&mut c, &head, b"y", content - 16, tail, delivery, None).await;
            let got = replies(&mut c, 2).await;
            assert_eq!(
                statuses(&got),
                [status, status],
                "{delivery:?}: a line of {} bytes with CRLF: {got:#?}",
                content + 2
            );
            expect(&mut c, "QUIT", "221 2.0.0").await;
        }
        let mut message = head.clone();
        message.extend_from_slice(&vec![b'y'; LIMIT - 2]);
        message.extend_from_slice(b"\r\nshort again\r\n");
        for user in ["bob", "carol"] {
            let copies = world.stored(user, "INBOX").await;
            let n = if delivery == Delivery::Whole { 1 } else { 2 };
            assert_eq!(
                copies.len(),
                n,
                "{delivery:?}: only the 64 KiB line arrived"
            );
            assert_lmtp_copy(&copies[n - 1], &message, "the 64 KiB line");
        }
    }
}

/// D36 on the hook: SIZE over `delivery.limits.max_message_bytes` gets 552 5.3.4 at MAIL;
/// a body over the limit after SIZE=100 gets 552 5.3.4 for every recipient after the end
/// of data, nothing is stored, and the session goes on. A body of exactly the limit is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_over_the_limit_gets_552_at_mail_and_after_the_end_of_data_per_recipient() {
    const LIMIT: usize = 64 * 1024;
    let world = World::start(DeliveryTuning {
        max_message_bytes: Some(LIMIT as u64),
        ..DeliveryTuning::default()
    })
    .await;
    let head = b"Subject: size\r\n\r\n";
    let mut line = vec![b's'; 62];
    line.extend_from_slice(b"\r\n");
    for delivery in DELIVERIES {
        let mut c = greeted(world.hook()).await;
        let lhlo = expect(&mut c, "LHLO mx.b.test", "250").await;
        assert!(
            lhlo.lines
                .iter()
                .any(|l| l == &format!("250-SIZE {LIMIT}") || l == &format!("250 SIZE {LIMIT}")),
            "{lhlo:?}"
        );
        let r = sent(
            &mut c,
            b"MAIL FROM:<alice@a.test> SIZE=1000000\r\n",
            delivery,
        )
        .await;
        assert_eq!(
            r.status(),
            "552 5.3.4",
            "{delivery:?}: declared too large: {r:?}"
        );
        let r = sent(&mut c, b"MAIL FROM:<alice@a.test> SIZE=100\r\n", delivery).await;
        assert_eq!(r.status(), "250 2.1.0", "{delivery:?}: {r:?}");
        expect(&mut c, "RCPT TO:<bob@b.test>", "250 2.1.5").await;
        expect(&mut c, "RCPT TO:<carol@b.test>", "250 2.1.5").await;
        expect(&mut c, "DATA", "354").await;
        // 100 KiB of complete lines: the size is over, no line is.
        send_large(&mut c, head, &line, 100 * 1024, b".\r\n", delivery, None).await;
        let got = replies(&mut c, 2).await;
        assert_eq!(
            statuses(&got),
            ["552 5.3.4", "552 5.3.4"],
            "{delivery:?}: {got:#?}"
        );
        expect(&mut c, "NOOP", "250 2.0.0").await;

        // Exactly the limit (RFC 1870's measure: the unstuffed body with its CRLFs).
        let mut message = head.to_vec();
        while message.len() + line.len() <= LIMIT {
            message.extend_from_slice(&line);
        }
        let pad = LIMIT - message.len();
        assert!(pad >= 2, "room for a last line");
        message.extend_from_slice(&vec![b'p'; pad - 2]);
        message.extend_from_slice(b"\r\n");
        assert_eq!(message.len(), LIMIT);
        open_data(&mut c, ALICE, &["bob@b.test", "carol@b.test"]).await;
        let data = data_of(&message);
        c.send(&data[..64], delivery).await.expect("send the head");
        c.send(&data[64..data.len() - 64], Delivery::Whole)
            .await
            .expect("send the bulk");
        c.send(&data[data.len() - 64..], delivery)
            .await
            .expect("send the tail");
        let got = replies(&mut c, 2).await;
        assert_eq!(
            statuses(&got),
            ["250 2.0.0", "250 2.0.0"],
            "{delivery:?}: exactly the limit: {got:#?}"
        );
        expect(&mut c, "QUIT", "221 2.0.0").await;
    }
    for user in ["bob", "carol"] {
        let copies = world.stored(user, "INBOX").await;
        assert_eq!(copies.len(), 2, "{user}: only the messages at the limit");
        for copy in &copies {
            let body = without_trace(&copy.bytes).expect("an LMTP copy");
            assert_eq!(body.len(), LIMIT, "{user}");
        }
    }
}

// === LMTP: the protocol (RFC 2033) ===

/// RFC 2033 §4.2: DATA without a successful RCPT fails with 503; so does DATA without
/// MAIL. The session goes on, and a later transaction is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_without_a_successful_rcpt_gets_503() {
    let world = World::start(DeliveryTuning::default()).await;
    for delivery in DELIVERIES {
        let mut c = session(world.hook()).await;
        let r = sent(&mut c, b"DATA\r\n", delivery).await;
        assert_eq!(
            r.status(),
            "503 5.5.1",
            "{delivery:?}: DATA without MAIL: {r:?}"
        );
        assert_statuses(
            &mut c,
            b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<nobody@b.test>\r\nDATA\r\n",
            delivery,
            &["250 2.1.0", "550 5.1.1", "503 5.5.1"],
        )
        .await;
        // The refused transaction is gone; a new one works.
        let message = plain_message("after 503", "delivered");
        open_data(&mut c, ALICE, &["carol@b.test"]).await;
        let r = sent(&mut c, &data_of(&message), delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221 2.0.0").await;
        let carol = world.stored("carol", "INBOX").await;
        assert_lmtp_copy(carol.last().expect("a copy"), &message, "after 503");
    }
    assert_eq!(world.stored("carol", "INBOX").await.len(), 2);
}

/// RFC 2033 §4.2: a recipient Dovecot does not know is refused at RCPT (550, as without
/// the hook); after DATA every accepted recipient gets exactly one reply, in RCPT order,
/// each its own (Dovecot names the recipient in it), and nothing for the refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_recipient_gets_550_at_rcpt_and_the_others_one_reply_each_in_order() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = chat_message(i as u32, "", "to three, one unknown");
        let mut c = session(world.hook()).await;
        let mut commands = b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nRCPT TO:<nobody@b.test>\r\nRCPT TO:<carol@b.test>\r\nDATA\r\n".to_vec();
        commands.extend_from_slice(&data_of(&message));
        commands.extend_from_slice(b"QUIT\r\n");
        c.send(&commands, delivery).await.expect("send");
        let got = replies_to_close(&mut c, STEP).await;
        assert_eq!(
            statuses(&got),
            [
                "250 2.1.0",
                "250 2.1.5",
                "550 5.1.1",
                "250 2.1.5",
                "354",
                "250 2.0.0",
                "250 2.0.0",
                "221 2.0.0"
            ],
            "{delivery:?}: {got:#?}"
        );
        assert!(got[2].mentions("nobody"), "{got:#?}");
        // bob's chat copy is the writer's, carol's is Dovecot's and names her.
        assert!(!got[5].mentions("carol"), "{got:#?}");
        assert!(got[6].mentions("<carol@b.test>"), "{got:#?}");
        world
            .assert_nth_copies_for_bob_and_carol(i + 1, &message, &format!("{delivery:?}"))
            .await;
    }
}

/// Pipelining (RFC 2920, offered in LHLO): two whole transactions and QUIT in one write
/// are answered in order, one reply per command and per recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_transactions_in_one_write_are_answered_in_order() {
    let world = World::start(DeliveryTuning::default()).await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let first = plain_message(&format!("pipelined {i} a"), "first");
        let second = plain_message(&format!("pipelined {i} b"), "second");
        let mut c = greeted(world.hook()).await;
        let mut bytes = b"LHLO mx.b.test\r\nMAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nRCPT TO:<carol@b.test>\r\nDATA\r\n".to_vec();
        bytes.extend_from_slice(&data_of(&first));
        bytes.extend_from_slice(b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<carol@b.test>\r\nDATA\r\n");
        bytes.extend_from_slice(&data_of(&second));
        bytes.extend_from_slice(b"QUIT\r\n");
        c.send(&bytes, delivery).await.expect("send");
        let got = replies_to_close(&mut c, STEP).await;
        assert_eq!(
            statuses(&got),
            [
                "250",
                "250 2.1.0",
                "250 2.1.5",
                "250 2.1.5",
                "354",
                "250 2.0.0",
                "250 2.0.0",
                "250 2.1.0",
                "250 2.1.5",
                "354",
                "250 2.0.0",
                "221 2.0.0"
            ],
            "{delivery:?}: {got:#?}"
        );
        assert!(
            got[0].lines.iter().any(|l| l.ends_with("PIPELINING")),
            "{got:#?}"
        );
        assert!(got[5].mentions("<bob@b.test>") && got[6].mentions("<carol@b.test>"));
        let bob = world.stored("bob", "INBOX").await;
        assert_eq!(bob.len(), i + 1);
        assert_lmtp_copy(&bob[i], &first, "bob");
        let carol = world.stored("carol", "INBOX").await;
        assert_eq!(carol.len(), 2 * (i + 1));
        assert_lmtp_copy(&carol[2 * i], &first, "carol's first");
        assert_lmtp_copy(&carol[2 * i + 1], &second, "carol's second");
    }
}

/// RSET ends the transaction: its recipients are forgotten (a RCPT after it needs a new
/// MAIL) and the next transaction delivers to its own recipients only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rset_between_transactions_forgets_the_recipients() {
    let world = World::start(DeliveryTuning::default()).await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = plain_message(&format!("after rset {i}"), "only carol");
        let mut c = session(world.hook()).await;
        assert_statuses(
            &mut c,
            b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nRSET\r\nRCPT TO:<carol@b.test>\r\n",
            delivery,
            &["250 2.1.0", "250 2.1.5", "250 2.0.0", "503 5.5.1"],
        )
        .await;
        let mut bytes = b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<carol@b.test>\r\nDATA\r\n".to_vec();
        bytes.extend_from_slice(&data_of(&message));
        // After the end of data one reply, carol's.
        let want = ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"];
        assert_statuses(&mut c, &bytes, delivery, &want).await;
        expect(&mut c, "QUIT", "221 2.0.0").await;
        let carol = world.stored("carol", "INBOX").await;
        assert_eq!(carol.len(), i + 1);
        assert_lmtp_copy(&carol[i], &message, "carol");
    }
    world.assert_nothing_stored(&["bob"], "RSET").await;
}

/// RFC 2033 §4.1: LMTP has LHLO; EHLO and HELO are refused (500 5.5.1) and MAIL before
/// LHLO gets 503. LHLO afterwards works and the session delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehlo_and_helo_are_refused_and_lhlo_works() {
    let world = World::start(DeliveryTuning::default()).await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let mut c = greeted(world.hook()).await;
        assert_statuses(
            &mut c,
            b"EHLO mx.b.test\r\nHELO mx.b.test\r\nMAIL FROM:<alice@a.test>\r\n",
            delivery,
            &["500 5.5.1", "500 5.5.1", "503 5.5.1"],
        )
        .await;
        let r = sent(&mut c, b"LHLO mx.b.test\r\n", delivery).await;
        assert_eq!(r.code(), 250, "{delivery:?}: {r:?}");
        let message = plain_message(&format!("after ehlo {i}"), "hi");
        open_data(&mut c, ALICE, &["bob@b.test"]).await;
        let r = sent(&mut c, &data_of(&message), delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: {r:?}");
        expect(&mut c, "QUIT", "221 2.0.0").await;
    }
    assert_eq!(world.stored("bob", "INBOX").await.len(), 2);
}

/// D37 on the hook: with `delivery.limits.max_recipients` 2, the third RCPT gets
/// 452 4.5.3 and is never relayed; the message reaches the first two only, one reply
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_beyond_the_limit_get_452_4_5_3_and_get_nothing() {
    let world = World::start(DeliveryTuning {
        max_recipients: Some(2),
        ..DeliveryTuning::default()
    })
    .await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = plain_message(&format!("many {i}"), "to two of three");
        let mut c = session(world.hook()).await;
        assert_statuses(
            &mut c,
            b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nRCPT TO:<carol@b.test>\r\nRCPT TO:<alice@b.test>\r\nRCPT TO:<nobody@b.test>\r\nDATA\r\n",
            delivery,
            &["250 2.1.0", "250 2.1.5", "250 2.1.5", "452 4.5.3", "452 4.5.3", "354"],
        )
        .await;
        let want = ["250 2.0.0", "250 2.0.0"];
        assert_statuses(&mut c, &data_of(&message), delivery, &want).await;
        expect(&mut c, "QUIT", "221 2.0.0").await;
        for user in ["bob", "carol"] {
            let copies = world.stored(user, "INBOX").await;
            assert_eq!(copies.len(), i + 1, "{user}");
            assert_lmtp_copy(&copies[i], &message, user);
        }
    }
    world
        .assert_nothing_stored(&["alice"], "the recipient over the limit")
        .await;
}

// === §4 durability ===

/// How Dovecot's LMTP goes away in the durability cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Away {
    /// The LMTP processes are killed (SIGKILL, like a crash): the hook's connection just
    /// closes. Dovecot's master stays up and would start new ones.
    LmtpKilled,
    /// Dovecot is stopped (SIGTERM, orderly): its LMTP first says `421 4.3.2 <host>
    /// Shutting down` on every open connection, unasked, then closes.
    Stopped,
}

/// SIGKILLs the LMTP processes of `dovecot` (by pid; they are this test's) and waits
/// until they are gone.
fn kill_lmtp_processes(dovecot: &Dovecot) {
    let prefix = format!("dovecot-coi-test-{}/lmtp", dovecot.imap_addr().port());
    let lmtp: Vec<(u32, String)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, support::process::process_title(pid)?)))
        .filter(|(_, title)| title.starts_with(&prefix))
        .collect();
    assert!(!lmtp.is_empty(), "no {prefix} process");
    let pids: Vec<u32> = lmtp.iter().map(|(pid, _)| *pid).collect();
    support::process::send_signal("KILL", &pids);
    let deadline = Instant::now() + STEP;
    while lmtp
        .iter()
        .any(|(pid, title)| support::process::process_title(*pid).as_ref() == Some(title))
    {
        assert!(Instant::now() < deadline, "{lmtp:?} still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Dovecot's LMTP goes away (`away`) in the middle of DATA: at the end of data every
/// recipient gets 451 4.3.0 and nothing is stored. While Dovecot is down, MAIL on the
/// same session gets 451 4.3.0; once it is back, the same session delivers again (a new
/// LMTP connection), one copy.
async fn dovecot_goes_away_mid_data(away: Away) {
    let mut world = World::start(DeliveryTuning::default()).await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = plain_message(&format!("durable {i}"), "kept by the sender");
        let data = data_of(&message);
        let mut c = data_for_bob_and_carol(world.hook()).await;
        c.send(&data[..40], delivery).await.expect("send the head");
        tokio::task::block_in_place(|| match away {
            Away::LmtpKilled => kill_lmtp_processes(&world.dovecot),
            Away::Stopped => world.dovecot.stop().expect("stop Dovecot"),
        });
        c.send(&data[40..], delivery).await.expect("send the rest");
        let got = replies(&mut c, 2).await;
        assert_eq!(
            statuses(&got),
            ["451 4.3.0", "451 4.3.0"],
            "{away:?} {delivery:?}: {got:#?}"
        );
        if away == Away::LmtpKilled {
            // Down altogether (the hook holds no LMTP connection now).
            tokio::task::block_in_place(|| world.dovecot.stop()).expect("stop Dovecot");
        }
        let r = command(&mut c, "MAIL FROM:<alice@a.test>").await;
        assert_eq!(
            r.status(),
            "451 4.3.0",
            "{away:?} {delivery:?}: MAIL while Dovecot is down: {r:?}"
        );

        tokio::task::block_in_place(|| world.dovecot.restart()).expect("restart Dovecot");
        world
            .assert_nothing_stored(&["bob", "carol"], &format!("{away:?}"))
            .await;
        // The sender retries on the same session.
        open_data(&mut c, ALICE, &["bob@b.test"]).await;
        let r = sent(&mut c, &data, delivery).await;
        assert_eq!(r.status(), "250 2.0.0", "{delivery:?}: the retry: {r:?}");

        if away == Away::Stopped {
            // Stopped while the session is idle between transactions: MAIL must not
            // be answered with Dovecot's unasked 421 either.
            tokio::task::block_in_place(|| world.dovecot.stop()).expect("stop Dovecot");
            let r = command(&mut c, "MAIL FROM:<alice@a.test>").await;
            assert_eq!(r.status(), "451 4.3.0", "{delivery:?}: idle stop: {r:?}");
            tokio::task::block_in_place(|| world.dovecot.restart()).expect("restart");
        }
        expect(&mut c, "QUIT", "221 2.0.0").await;
        let bob = world.stored("bob", "INBOX").await;
        assert_eq!(bob.len(), 1, "{delivery:?}: one copy, the retry's");
        assert_lmtp_copy(&bob[0], &message, "the retry");
        // Clean slate for the next form.
        let mut imap = support::mailbox::imap_login(&world.dovecot, "bob").await;
        for command in ["SELECT INBOX", "STORE 1 +FLAGS (\\Deleted)", "EXPUNGE"] {
            let lines = imap.imap("x", command).await.expect("IMAP");
            assert_eq!(tagged_status(&lines), "OK", "{command}: {lines:?}");
        }
    }
}

/// §4 rule 2, case 61: Dovecot's LMTP crashes during DATA (its connection closes): 451
/// 4.3.0 for every recipient, nothing stored; MAIL gets 451 4.3.0 while Dovecot is down,
/// and the same session delivers once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_lmtp_crash_mid_data_gives_451_4_3_0_for_every_recipient_and_stores_nothing() {
    dovecot_goes_away_mid_data(Away::LmtpKilled).await;
}

/// §4 rule 2, case 61 with an orderly stop: Dovecot's LMTP says `421 4.3.2 … Shutting
/// down` on the hook's open connection before it closes. The hook must still answer
/// each recipient with its own 451 4.3.0 (and MAIL likewise), never relay that 421: a
/// 421 tells Postfix the hook is closing the channel, which it does not, and the text
/// names Dovecot's host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_stopped_gives_451_4_3_0_for_every_recipient_and_stores_nothing() {
    dovecot_goes_away_mid_data(Away::Stopped).await;
}

/// §4 rule 1 with the real Postfix in front: while Dovecot is down the hook answers
/// 451 4.3.0, Postfix keeps the message (deferred, never bounced, never lost), and once
/// Dovecot is back Postfix's retry delivers exactly one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_keeps_a_deferred_message_and_delivers_it_once_when_dovecot_is_back() {
    let mut world = World::start(DeliveryTuning::default()).await;
    let postfix = Postfix::start(PostfixOptions::new("b.test", world.hook())).expect("postfix");
    tokio::task::block_in_place(|| world.dovecot.stop()).expect("stop Dovecot");

    let mut client = smtp::connect(postfix.mx_addr()).await.expect("connect");
    smtp::expect(&mut client, "EHLO client.test", 250)
        .await
        .unwrap();
    smtp::start_data(&mut client, ALICE, &["bob@b.test"])
        .await
        .unwrap();
    let message = "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: deferred\r\nMessage-ID: <deferred@a.test>\r\n\r\nkept by Postfix\r\n";
    client
        .write_raw(format!("{message}.\r\n").as_bytes())
        .await
        .unwrap();
    let queued = smtp::read_reply(&mut client).await.unwrap();
    assert_eq!(queued.code, 250, "{}", queued.text());
    let id = queued.queue_id().expect("a queue id");
    smtp::expect(&mut client, "QUIT", 221).await.unwrap();

    let deferred = tokio::task::block_in_place(|| {
        postfix.wait_for_log_line(&[&id, "status=deferred"], STEP * 2)
    })
    .expect("Postfix defers the message");
    assert!(deferred.contains("451 4.3.0"), "{deferred}");
    assert_eq!(
        tokio::task::block_in_place(|| postfix.queue_ids()).expect("queue"),
        [id.as_str()],
        "Postfix holds the message"
    );

    tokio::task::block_in_place(|| world.dovecot.restart()).expect("restart Dovecot");
    tokio::task::block_in_place(|| postfix.flush()).expect("flush");
    tokio::task::block_in_place(|| postfix.wait_for_log_line(&[&id, "status=sent"], STEP * 2))
        .expect("Postfix delivers on its retry");
    tokio::task::block_in_place(|| postfix.wait_queue_empty(STEP)).expect("queue empty");
    let bob = world.stored("bob", "INBOX").await;
    assert_eq!(bob.len(), 1, "exactly one copy");
    let body = without_trace(&bob[0].bytes).expect("an LMTP copy");
    let text = String::from_utf8_lossy(body);
    assert!(
        text.contains("Message-ID: <deferred@a.test>\r\n")
            && text.ends_with("\r\n\r\nkept by Postfix\r\n"),
        "{}",
        escape(body)
    );
}

/// The upstream reply deadline of the stub worlds.
const UPSTREAM_REPLY: Duration = Duration::from_millis(1000);

/// A silent scripted LMTP upstream and the hook in front of it, without a mailbox
/// writer (everything by LMTP).
async fn stub_world() -> StubWorld {
    StubWorld::start(
        Protocol::Lmtp,
        Script::Silent,
        UPSTREAM_REPLY,
        shared_gate().await,
    )
    .await
}

const SIMPLE_DATA: &[u8] = b"Subject: durable\r\n\r\nbody\r\n.\r\n";

/// §4 rule 2, case 62: Dovecot's LMTP silent after the end of data gives every
/// recipient 451 4.3.0 at the reply deadline (not before, and never silence); closing
/// or resetting there gives the same at once. The hook sends the message once and
/// drops that connection; the sender's retry on the same session gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_silent_closed_or_reset_after_the_end_of_data_gives_451_per_recipient() {
    let world = stub_world().await;
    let (stub, hook) = (&world.stub, world.hook());
    let mut data_sent = 0;
    for script in [Script::Silent, Script::Close, Script::Reset] {
        for delivery in DELIVERIES {
            stub.set(script);
            let mut c = data_for_bob_and_carol(hook).await;
            let started = Instant::now();
            c.send(SIMPLE_DATA, delivery).await.expect("send");
            let got = replies(&mut c, 2).await;
            data_sent += 1;
            assert_eq!(
                statuses(&got),
                ["451 4.3.0", "451 4.3.0"],
                "{script:?} {delivery:?}: {got:#?}"
            );
            let waited = started.elapsed();
            if script == Script::Silent {
                assert!(
                    waited >= UPSTREAM_REPLY && waited < UPSTREAM_REPLY + STEP,
                    "{delivery:?}: 451 after {waited:?}"
                );
                println!("silent upstream: 451 after {waited:?}");
            }
            // The sender retries; the upstream answers this time.
            stub.set(Script::Reply(
                "250 2.0.0 <bob@b.test> Saved\r\n250 2.0.0 <carol@b.test> Saved\r\n",
            ));
            open_data(&mut c, ALICE, &["bob@b.test", "carol@b.test"]).await;
            let got = {
                c.send(SIMPLE_DATA, Delivery::Whole).await.expect("send");
                replies(&mut c, 2).await
            };
            data_sent += 1;
            assert_eq!(
                statuses(&got),
                ["250 2.0.0", "250 2.0.0"],
                "{script:?} {delivery:?}: the retry: {got:#?}"
            );
            expect(&mut c, "QUIT", "221 2.0.0").await;
        }
    }
    let data_commands = stub.commands().iter().filter(|l| *l == "DATA").count();
    assert_eq!(
        data_commands, data_sent,
        "one upstream DATA per message, never a resend"
    );
    assert_eq!(stub.ends(), data_sent, "{:#?}", stub.connections());
    // The silent connections were given up, not kept.
    stub.assert_silent_connections_given_up(2).await;
}

/// §4 rule 2, case 63: the upstream's per-recipient replies after the end of data reach
/// Postfix unchanged, each for its recipient, in RCPT order: a 452 for one and a 250
/// for the other, either way round, multi-line replies intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_replies_after_the_end_of_data_are_relayed_in_order() {
    let world = stub_world().await;
    let (stub, hook) = (&world.stub, world.hook());
    let cases: [(&str, &[&[&str]]); 3] = [
        (
            "452 4.2.2 <bob@b.test> Mailbox full\r\n250 2.0.0 <carol@b.test> Saved\r\n",
            &[
                &["452 4.2.2 <bob@b.test> Mailbox full"],
                &["250 2.0.0 <carol@b.test> Saved"],
            ],
        ),
        (
            "250 2.0.0 <bob@b.test> Saved\r\n452 4.2.2 <carol@b.test> Mailbox full\r\n",
            &[
                &["250 2.0.0 <bob@b.test> Saved"],
                &["452 4.2.2 <carol@b.test> Mailbox full"],
            ],
        ),
        (
            "452-4.3.1 <bob@b.test> Insufficient system storage\r\n452 4.3.1 Try again later\r\n554 5.7.1 <carol@b.test> Rejected\r\n",
            &[
                &[
                    "452-4.3.1 <bob@b.test> Insufficient system storage",
                    "452 4.3.1 Try again later",
                ],
                &["554 5.7.1 <carol@b.test> Rejected"],
            ],
        ),
    ];
    for (answer, expected) in cases {
        stub.set(Script::Reply(answer));
        for delivery in DELIVERIES {
            let got = attempt_to_bob_and_carol(hook, SIMPLE_DATA, delivery).await;
            let lines: Vec<Vec<String>> = got.iter().map(|r| r.lines.clone()).collect();
            let mut want: Vec<Vec<String>> = expected
                .iter()
                .map(|r| r.iter().map(|l| (*l).to_owned()).collect())
                .collect();
            want.push(vec!["221 2.0.0 Bye".to_owned()]);
            assert_eq!(lines, want, "{delivery:?}");
        }
    }
}

/// A TCP relay in front of Dovecot's IMAP (the proxy's IMAP upstream, which the mailbox
/// writer uses too). While `cut` is set, a connection whose client sends `APPEND` is
/// closed on both sides before that chunk is forwarded: the writer's APPEND fails as if
/// Dovecot had gone away, and Dovecot never sees it. Aborted when dropped.
struct ImapRelay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ImapRelay {
    async fn start(upstream: SocketAddr) -> ImapRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let cut = cut.clone();
            let cuts = cuts.clone();
            async move {
                let mut handlers = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    handlers.spawn(relay_connection(
                        client,
                        upstream,
                        cut.clone(),
                        cuts.clone(),
                    ));
                }
            }
        });
        ImapRelay {
            addr,
            cut,
            cuts,
            task,
        }
    }
}

impl Drop for ImapRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    client: TcpStream,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    const NEEDLE: &[u8] = b" APPEND ";
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        // The end of the previous chunk, so that a command split across reads is seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut window = std::mem::take(&mut tail);
            window.extend_from_slice(&buf[..n]);
            if cut.load(Ordering::SeqCst) && memchr::memmem::find(&window, NEEDLE).is_some() {
                cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
            tail = window[window.len().saturating_sub(NEEDLE.len())..].to_vec();
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = down => {}
        () = up => {}
    }
}

/// §4 rule 7 on the hook: the mailbox writer's APPEND of bob's chat copy fails (its
/// IMAP connection is cut at the APPEND): bob gets 451 4.2.0 (transient: Postfix keeps
/// the message for him) and nothing is stored for him; carol (COI off, Dovecot's LMTP)
/// still gets her copy and her 250, in RCPT order. The retry delivers bob's copy once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mailbox_writer_gives_its_recipient_451_and_the_others_are_delivered() {
    let _gate = shared_gate().await;
    let dovecot = Dovecot::start().expect("dovecot");
    let relay = ImapRelay::start(dovecot.imap_addr()).await;
    let proxy = hook_in_front_of(
        relay.addr,
        dovecot.lmtp_addr(),
        Some(master_of(&dovecot)),
        DeliveryTuning::default(),
    )
    .await;
    let hook = proxy.delivery.expect("the hook");
    enable_coi(&proxy, "bob", "active").await;
    relay.cut.store(true, Ordering::SeqCst);
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = chat_message(i as u32, "", "the writer fails");
        let got = attempt_to_bob_and_carol(hook, &data_of(&message), delivery).await;
        assert_eq!(
            statuses(&got),
            ["451 4.2.0", "250 2.0.0", "221 2.0.0"],
            "{delivery:?}: {got:#?}"
        );
        assert!(got[1].mentions("<carol@b.test>"), "{got:#?}");
        assert_eq!(relay.cuts.load(Ordering::SeqCst), i + 1, "one APPEND each");
        for mailbox in ["INBOX", CHATS] {
            assert!(
                stored(&dovecot, "bob", mailbox).await.is_empty(),
                "{delivery:?}: bob's {mailbox}"
            );
        }
        let carol = stored(&dovecot, "carol", "INBOX").await;
        assert_eq!(carol.len(), i + 1);
        assert_lmtp_copy(&carol[i], &message, "carol");
    }
    // Postfix's retry for bob alone, with the writer healthy again.
    relay.cut.store(false, Ordering::SeqCst);
    let message = chat_message(0, "", "the writer fails");
    let got = attempt(
        hook,
        ALICE,
        &["bob@b.test"],
        &data_of(&message),
        Delivery::Whole,
    )
    .await;
    assert_eq!(statuses(&got), ["250 2.0.0", "221 2.0.0"], "{got:#?}");
    let bob = stored(&dovecot, "bob", CHATS).await;
    assert_eq!(bob.len(), 1);
    assert_appended_copy(&bob[0], &message, "bob's retried copy");
}

/// docs/delivery.md §2: when a recipient's COI configuration cannot be read (here the
/// writer's master password is wrong, so it cannot log in at all), the message takes
/// Dovecot's LMTP: delivered (250) into INBOX as it is, without `$Chat`, rather than
/// deferred. Nothing is lost; only the keyword and the Chats filing are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_coi_configuration_sends_chat_mail_by_lmtp() {
    let _gate = shared_gate().await;
    let dovecot = Dovecot::start().expect("dovecot");
    let proxy = hook_in_front_of(
        dovecot.imap_addr(),
        dovecot.lmtp_addr(),
        Some((
            dovecot.master_user().to_owned(),
            "not-the-master-password".to_owned(),
        )),
        DeliveryTuning::default(),
    )
    .await;
    let hook = proxy.delivery.expect("the hook");
    enable_coi(&proxy, "bob", "active").await;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = chat_message(i as u32, "", "no writer login");
        let got = attempt_to_bob_and_carol(hook, &data_of(&message), delivery).await;
        assert_eq!(
            statuses(&got),
            ["250 2.0.0", "250 2.0.0", "221 2.0.0"],
            "{delivery:?}: {got:#?}"
        );
        assert!(
            got[0].mentions("<bob@b.test>"),
            "Dovecot's own reply: {got:#?}"
        );
        let bob = stored(&dovecot, "bob", "INBOX").await;
        assert_eq!(bob.len(), i + 1);
        assert_lmtp_copy(&bob[i], &message, "bob");
        assert!(stored(&dovecot, "bob", CHATS).await.is_empty());
    }
}

/// The `coi-proxy` binary with only the hook (and a plaintext IMAP listener the config
/// requires) in front of Dovecot.
async fn hook_process(imap: SocketAddr, lmtp: SocketAddr) -> ProxyProcess {
    // A port on a loopback address of its own (the in-process hooks use 127.0.0.7).
    let hook = free_port_on([127, 0, 0, 17]);
    let delivery = format!(
        "delivery:\n  address: \"{hook}\"\n  upstream:\n    address: \"{lmtp}\"\n  hostname: hook.test\n  user_name: local_part\n"
    );
    ProxyProcess::start(env!("CARGO_BIN_EXE_coi-proxy"), imap, &delivery, hook).await
}

/// §4 crash table, rule 1: the proxy killed (SIGKILL) in the middle of a message, with
/// Dovecot's LMTP transaction open behind it: the sender sees the connection drop with
/// no reply, and Dovecot stored nothing. A marker delivered afterwards is the only mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_mid_data_leaves_nothing_in_dovecot() {
    let world = World::start(DeliveryTuning::default()).await;
    for delivery in DELIVERIES {
        let mut proxy = hook_process(world.dovecot.imap_addr(), world.dovecot.lmtp_addr()).await;
        let mut c = data_for_bob_and_carol(proxy.listener).await;
        c.send(b"Subject: crash\r\n\r\nfirst half\r\nsecond", delivery)
            .await
            .expect("send");
        proxy.kill();
        assert_dropped_without_reply(&mut c, &format!("{delivery:?}")).await;
    }
    let marker = plain_message("marker", "the only one");
    assert_replies(
        world.hook(),
        ALICE,
        &["bob@b.test", "carol@b.test"],
        &data_of(&marker),
        Delivery::Whole,
        "250 2.0.0",
    )
    .await;
    for user in ["bob", "carol"] {
        let copies = world.stored(user, "INBOX").await;
        assert_eq!(copies.len(), 1, "{user}: only the marker");
        assert_lmtp_copy(&copies[0], &marker, user);
    }
}

/// §4 rule 8 on the hook: stopped while a message is half sent, the proxy waits out the
/// grace period, then says 421 4.3.2 and closes; the half message is stored nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_data_gives_421_4_3_2_and_stores_nothing() {
    let _gate = shared_gate().await;
    let dovecot = Dovecot::start().expect("dovecot");
    let grace = Duration::from_millis(300);
    for delivery in DELIVERIES {
        let proxy = hook_proxy(&dovecot, DeliveryTuning::default()).await;
        let mut c = data_for_bob_and_carol(proxy.delivery.expect("the hook")).await;
        c.send(b"Subject: stopped\r\n\r\nfirst half\r\n", delivery)
            .await
            .expect("send");
        let stopping = Instant::now();
        let stop = tokio::spawn(proxy.stop(grace));
        let got = replies_to_close(&mut c, grace + STEP).await;
        assert_eq!(statuses(&got), ["421 4.3.2"], "{delivery:?}: {got:#?}");
        assert!(
            stopping.elapsed() >= grace,
            "{delivery:?}: 421 before the grace ended"
        );
        tokio::time::timeout(STEP * 2, stop)
            .await
            .expect("the proxy stops")
            .expect("stop task");
    }
    for user in ["bob", "carol"] {
        assert!(stored(&dovecot, user, "INBOX").await.is_empty(), "{user}");
    }
}

// === §E tokens on the inbound path ===

/// Case 44: only the top-level header counts. A token for exactly this pair (bob writing
/// back to alice), but in the body, or in the header of an attached message/rfc822, is
/// not captured: the messages are delivered and bob has no contact. The same token in
/// the top-level header is captured (so the negative results are not for lack of
/// capture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_body_or_an_attached_message_is_not_captured() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    let token = token_for("bob@b.test", ALICE, unix_now(), DAY);
    let field = token_field(&token);
    let in_body = chat_message(1, "", &format!("{field}look, a token"));
    let attached = chat_message(
        2,
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n",
        &format!(
            "--outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: alice@a.test\r\nTo: bob@b.test\r\nSubject: inner\r\n{field}\r\ninner body\r\n--outer--"
        ),
    );
    let mut n = 0;
    for message in [&in_body, &attached] {
        for (i, delivery) in DELIVERIES.into_iter().enumerate() {
            let message = &for_delivery(message, i);
            assert_delivered_to_bob(world.hook(), message, delivery).await;
            n += 1;
            let chats = world.stored("bob", CHATS).await;
            assert_eq!(chats.len(), n);
            assert_appended_copy(&chats[n - 1], message, "the message as sent");
            assert_no_contact(&world.dovecot, "bob", &escape(message)).await;
        }
    }
    let top = chat_message(3, &field, "the token where it belongs");
    assert_delivered_to_bob(world.hook(), &top, Delivery::Whole).await;
    assert_one_contact_for_alice(&world.dovecot, "bob", &token).await;
}

/// Case 47 on the inbound path: a token bound to another pair (for carol, or for bob
/// writing to dave) delivered to bob from alice, an expired one, and one created more
/// than the allowed skew in the future are not captured. A message to bob and carol
/// (both COI users) with carol's token gives carol her contact and bob none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_pair_expired_or_from_the_future_are_not_captured() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    world.enable_coi("carol").await;
    let now = unix_now();
    let bad = [
        (
            "another recipient",
            token_for("carol@b.test", ALICE, now, DAY),
        ),
        (
            "another sender",
            token_for("bob@b.test", "dave@d.test", now, DAY),
        ),
        ("swapped pair", token_for(ALICE, "bob@b.test", now, DAY)),
        (
            "expired",
            token_for("bob@b.test", ALICE, now - 3 * DAY, DAY),
        ),
        ("future", token_for("bob@b.test", ALICE, now + 2 * DAY, DAY)),
    ];
    let mut n = 0;
    for (what, token) in &bad {
        for delivery in DELIVERIES {
            n += 1;
            let message = chat_message(n, &token_field(token), what);
            assert_delivered_to_bob(world.hook(), &message, delivery).await;
            assert_no_contact(&world.dovecot, "bob", &format!("{what} {delivery:?}")).await;
        }
    }
    assert_eq!(world.stored("bob", CHATS).await.len(), n as usize);
    // All of them at once with carol's in the middle: carol's contact, and none for bob.
    let carols = token_for("carol@b.test", ALICE, now, DAY);
    let mut fields: String = bad.iter().map(|(_, t)| token_field(t)).collect();
    fields.push_str(&token_field(&carols));
    let message = chat_message(100, &fields, "for two");
    assert_replies(
        world.hook(),
        ALICE,
        &["bob@b.test", "carol@b.test"],
        &data_of(&message),
        Delivery::Whole,
        "250 2.0.0",
    )
    .await;
    assert_one_contact_for_alice(&world.dovecot, "carol", &carols).await;
    assert_no_contact(&world.dovecot, "bob", "carol's token").await;
}

/// The captured token is stored once: the same message (same token) delivered twice
/// leaves one contact holding that one token, not rewritten the second time (same UID),
/// and the capture counters say stored once, unchanged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_stores_its_token_once() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    let token = token_for("bob@b.test", ALICE, unix_now(), DAY);
    let message = chat_message(1, &token_field(&token), "twice");
    let mut uids = Vec::new();
    for delivery in DELIVERIES {
        assert_delivered_to_bob(world.hook(), &message, delivery).await;
        uids.push(assert_one_contact_for_alice(&world.dovecot, "bob", &token).await);
    }
    assert_eq!(uids[0], uids[1], "the contact was not rewritten");
    // The second delivery finds the first copy by its delivery key (SECURITY-CASES §4
    // rule 5): one copy, and both deliveries were answered 250.
    let chats = world.stored("bob", CHATS).await;
    assert_eq!(chats.len(), 1, "the second delivery is a duplicate");
    assert_appended_copy(&chats[0], &message, "the chat message");
    let series = |outcome: &str| {
        metric(
            &world.proxy,
            &format!("coi_proxy_delivery_token_captures_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (series("stored"), series("unchanged"), series("failed")),
        (1, 1, 0),
        "{}",
        world.proxy.metrics_text()
    );
}

/// Case 46 (CVE-2020-12100 class): a chat message of 10,000 nested multiparts is
/// delivered in bounded time to a COI user (the writer's APPEND) and to a non-COI user
/// (Dovecot's LMTP), byte for byte: the hook reads only the top-level header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_nested_multiparts_are_delivered_in_bounded_time() {
    const DEPTH: usize = 10_000;
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    let mut body = String::new();
    for level in 1..DEPTH {
        body.push_str(&format!(
            "--b{level}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
            level + 1
        ));
    }
    body.push_str(&format!(
        "--b{DEPTH}\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
    ));
    for level in (1..=DEPTH).rev() {
        body.push_str(&format!("--b{level}--\r\n"));
    }
    body.truncate(body.len() - 2);
    let message = chat_message(
        1,
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n",
        &body,
    );
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let message = for_delivery(&message, i);
        let data = data_of(&message);
        let mut c = data_for_bob_and_carol(world.hook()).await;
        let started = Instant::now();
        let (head, rest) = data.split_at(1024);
        let (bulk, tail) = rest.split_at(rest.len() - 1024);
        send_large(&mut c, head, bulk, bulk.len(), tail, delivery, None).await;
        let got = replies(&mut c, 2).await;
        let took = started.elapsed();
        assert_eq!(
            statuses(&got),
            ["250 2.0.0", "250 2.0.0"],
            "{delivery:?}: {got:#?}"
        );
        println!(
            "{delivery:?}: {DEPTH} nested multiparts ({} bytes) delivered in {took:?}",
            message.len()
        );
        assert!(took < STEP, "{delivery:?}: {took:?}");
        expect(&mut c, "QUIT", "221 2.0.0").await;
        world
            .assert_nth_copies_for_bob_and_carol(i + 1, &message, &format!("{delivery:?}"))
            .await;
    }
}

// === §F address forms ===

/// Case 50 for capture: the contact is keyed on the normalised pair, so `BOB@B.TEST` as
/// the LMTP recipient and `Alice@A.Test` as the sender find the contact the lower-case
/// forms made (and the other way round): one contact, holding the newest token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_finds_one_contact_whatever_the_case_of_the_addresses() {
    let world = World::start(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    let base = unix_now() - 100;
    let forms = [("Alice@A.Test", "BOB@B.TEST"), (ALICE, "bob@b.test")];
    let mut n = 0;
    for (round, delivery) in DELIVERIES.into_iter().enumerate() {
        // Round 0: upper case first; round 1: lower case first.
        let order = if round == 0 {
            [forms[0], forms[1]]
        } else {
            [forms[1], forms[0]]
        };
        for (from, to) in order {
            n += 1;
            // Tokens are minted over the normalised pair, as alice's server does.
            let token = token_for("bob@b.test", ALICE, base + n as u64, DAY);
            let message = chat_message(n, &token_field(&token), "case");
            let got = attempt(world.hook(), from, &[to], &data_of(&message), delivery).await;
            assert_eq!(
                statuses(&got),
                ["250 2.0.0", "221 2.0.0"],
                "{delivery:?} {from} -> {to}: {got:#?}"
            );
            let chats = world.stored("bob", CHATS).await;
            assert_eq!(chats.len(), n as usize, "{from} -> {to}");
            assert_appended_copy(&chats[n as usize - 1], &message, "the chat message");
            assert_one_contact_for_alice(&world.dovecot, "bob", &token).await;
        }
    }
    // The contact is bob's under his normalised address, whichever form came first.
    let raw = world.stored("bob", CONTACTS).await;
    assert!(
        raw[0].bytes.starts_with(b"From: bob@b.test\r\n"),
        "{}",
        escape(&raw[0].bytes)
    );
}

// === memory ===

/// A 20 MB chat message to bob (COI: the writer's APPEND from the spool file) and carol
/// (Dovecot's LMTP, stuffed from the same spool): RSS grows by a few MB at most, and both
/// copies have the message's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_message_to_the_chat_and_the_lmtp_route_in_constant_memory() {
    const TOTAL: usize = 20 * 1000 * 1000;
    let world = World::exclusive(DeliveryTuning::default()).await;
    world.enable_coi("bob").await;
    let first = chat_message(1, "", "");
    let mut line = vec![b'm'; 998];
    line.extend_from_slice(b"\r\n");
    let bulk = TOTAL - (first.len() - 2);
    let bulk = bulk - bulk % line.len();
    let len = first.len() - 2 + bulk;
    for (i, delivery) in DELIVERIES.into_iter().enumerate() {
        let head = for_delivery(&first, i);
        let head = &head[..head.len() - 2];
        let mut c = data_for_bob_and_carol(world.hook()).await;
        let mut probe = MemoryProbe::start();
        let started = Instant::now();
        send_large(
            &mut c,
            head,
            &line,
            bulk,
            b".\r\n",
            delivery,
            Some(&mut probe),
        )
        .await;
        let got = tokio::time::timeout(STEP * 4, replies(&mut c, 2))
            .await
            .expect("the replies");
        let growth = probe.growth_kib();
        println!(
            "{delivery:?}: a {len}-byte message to the chat and the LMTP route in {:?}, RSS growth {growth} KiB (peak reset: {})",
            started.elapsed(),
            probe.peak_reset
        );
        assert_eq!(statuses(&got), ["250 2.0.0", "250 2.0.0"], "{delivery:?}");
        assert!(
            growth < GROWTH_LIMIT_KIB,
            "{delivery:?}: RSS grew by {growth} KiB for a {len}-byte message"
        );
        expect(&mut c, "QUIT", "221 2.0.0").await;
        let bob = sizes(&world.dovecot, "bob", CHATS).await;
        assert_eq!(bob.len(), i + 1);
        assert_eq!(
            bob[i],
            (len + DELIVERY_KEY_LINE_LEN) as u64,
            "bob's copy is the message after its delivery key line"
        );
        let carol = sizes(&world.dovecot, "carol", "INBOX").await;
        assert_eq!(carol.len(), i + 1);
        assert!(
            carol[i] > len as u64 && carol[i] < len as u64 + 1024,
            "carol's copy: the message and Dovecot's trace fields: {}",
            carol[i]
        );
    }
}

/// The RFC822.SIZE of every message of `user`'s `mailbox`.
async fn sizes(dovecot: &Dovecot, user: &str, mailbox: &str) -> Vec<u64> {
    let mut c = support::mailbox::imap_login(dovecot, user).await;
    let lines = c
        .imap("e", &format!("EXAMINE \"{mailbox}\""))
        .await
        .expect("EXAMINE");
    assert_eq!(tagged_status(&lines), "OK", "{lines:?}");
    let lines = c.imap("f", "FETCH 1:* (RFC822.SIZE)").await.expect("FETCH");
    assert_eq!(tagged_status(&lines), "OK", "{lines:?}");
    lines
        .iter()
        .filter_map(|l| {
            l.split("RFC822.SIZE ")
                .nth(1)?
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .collect()
}
