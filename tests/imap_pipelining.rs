//! Pipelined commands through the proxy, against a real Dovecot: the proxy's own replies
//! never land inside a response it is relaying, commands pipelined behind a LOGIN are
//! judged in the authenticated state, and the rest of a command after a literal is
//! checked like its first line.

mod support;

use std::time::Duration;

use coi_proxy::proto::imap::fragment::{Fragment, Framer, FramerOptions, LongLines, StreamKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::dovecot::Dovecot;
use support::io::{step, tagged_status, LineClient};
use support::proxy::{Options, Proxy};

async fn setup() -> (Dovecot, Proxy) {
    let dovecot = Dovecot::start().expect("dovecot");
    let proxy = Proxy::start(
        dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    (dovecot, proxy)
}

/// Reads framed responses until the tagged reply for `last_tag`; returns the first lines
/// of every response and the literal bytes, in order.
async fn responses(
    stream: &mut TcpStream,
    framer: &mut Framer,
    last_tag: &str,
) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut heads = Vec::new();
    let mut literals: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0; 65536];
    loop {
        while let Some(fragment) = framer.next_fragment() {
            match fragment {
                Fragment::Line {
                    line,
                    head,
                    literal,
                    ..
                } => {
                    if head {
                        heads.push(String::from_utf8_lossy(&line).into_owned());
                    }
                    if literal.is_some() {
                        literals.push(Vec::new());
                    }
                    if head && line.starts_with(format!("{last_tag} ").as_bytes()) {
                        return (heads, literals);
                    }
                }
                Fragment::LiteralData(data) => literals
                    .last_mut()
                    .expect("announced")
                    .extend_from_slice(&data),
                other => panic!("unexpected {other:?}"),
            }
        }
        let n = step("read", stream.read(&mut buf)).await.expect("read");
        assert!(n > 0, "closed early; so far {heads:?}");
        framer.push(&buf[..n]);
    }
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n",
        );
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_of_the_proxys_own_never_lands_inside_a_relayed_literal() {
    let (_dovecot, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.plain).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut framer = Framer::new(FramerOptions {
        max_line: 65536,
        long_lines: LongLines::Stream,
        stream: StreamKind::Responses,
    });
    let body = message(1024 * 1024);
    let mut setup_cmds = b"a LOGIN alice secret-alice\r\n".to_vec();
    setup_cmds.extend_from_slice(format!("b APPEND INBOX {{{}+}}\r\n", body.len()).as_bytes());
    setup_cmds.extend_from_slice(&body);
    setup_cmds.extend_from_slice(b"\r\nc SELECT INBOX\r\n");
    stream.write_all(&setup_cmds).await.unwrap();
    let (heads, _) = responses(&mut stream, &mut framer, "c").await;
    assert!(heads.last().unwrap().starts_with("c OK"), "{heads:?}");

    // COMPRESS is answered by the proxy itself while Dovecot streams the 1 MiB literal.
    stream
        .write_all(b"d FETCH 1 BODY.PEEK[]\r\ne COMPRESS DEFLATE\r\nf NOOP\r\n")
        .await
        .unwrap();
    let (heads, literals) = responses(&mut stream, &mut framer, "f").await;
    assert_eq!(literals, vec![body], "the literal arrives intact");
    let order: Vec<&str> = heads
        .iter()
        .map(|h| &h[..h.find(' ').unwrap_or(h.len())])
        .collect();
    assert_eq!(order, ["*", "d", "e", "f"], "{heads:?}");
    assert!(heads[2].starts_with("e NO"), "{heads:?}");
}

#[tokio::test]
async fn commands_pipelined_behind_login_get_coi_handling() {
    let (_dovecot, proxy) = setup().await;
    let mut c = LineClient::connect(proxy.plain).await.unwrap();
    c.read_line().await.unwrap();
    c.write_line(
        "a LOGIN alice secret-alice\r\nb SETMETADATA \"\" (/private/vendor/coi-proxy/config/enabled \"yes\")\r\nc GETMETADATA \"\" /private/vendor/vendor.dovecot/coi/config/mailbox-root",
    )
    .await
    .unwrap();
    let reply = c.read_until_tagged("c").await.unwrap();
    let b = reply
        .iter()
        .find(|l| l.starts_with("b "))
        .expect("b answered");
    assert!(
        b.starts_with("b NO [CANNOT]"),
        "the reserved storage entry stays the proxy's: {reply:?}"
    );
    assert!(
        reply
            .iter()
            .any(|l| l.contains("/coi/config/mailbox-root \"COI\"")),
        "{reply:?}"
    );
    assert_eq!(tagged_status(&reply), "OK");
}

#[tokio::test]
async fn a_select_pipelined_behind_a_seen_store_still_gets_the_move() {
    let (_dovecot, proxy) = setup().await;
    let mut c = LineClient::connect(proxy.plain).await.unwrap();
    c.read_line().await.unwrap();
    for command in [
        "LOGIN alice secret-alice",
        "SETMETADATA \"\" (/private/vendor/vendor.dovecot/coi/config/enabled \"yes\" /private/vendor/vendor.dovecot/coi/config/message-filter \"seen\")",
    ] {
        assert_eq!(tagged_status(&c.imap("s", command).await.unwrap()), "OK", "{command}");
    }
    let chat = "From: b@example.org\r\nChat-Version: 1.0\r\nSubject: hi\r\n\r\nhi\r\n";
    c.write_line(&format!(
        "m APPEND INBOX ($Chat) {{{}+}}\r\n{chat}",
        chat.len()
    ))
    .await
    .unwrap();
    assert_eq!(
        tagged_status(&c.read_until_tagged("m").await.unwrap()),
        "OK"
    );
    assert_eq!(
        tagged_status(&c.imap("s", "SELECT INBOX").await.unwrap()),
        "OK"
    );
    c.write_line("t STORE 1 +FLAGS (\\Seen)\r\nu SELECT COI/Chats")
        .await
        .unwrap();
    let reply = c.read_until_tagged("u").await.unwrap();
    assert_eq!(tagged_status(&reply), "OK", "{reply:?}");
    assert!(
        reply.iter().any(|l| l == "* 1 EXISTS"),
        "the message moved before the SELECT: {reply:?}"
    );
}

#[tokio::test]
async fn a_control_character_after_a_relayed_literal_closes_the_session() {
    let (dovecot, proxy) = setup().await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    c.write_line("b APPEND INBOX {5}").await.unwrap();
    assert!(
        c.read_line().await.unwrap().starts_with('+'),
        "Dovecot's continuation, relayed"
    );
    // The command's first line is upstream already: the proxy cannot answer BAD.
    c.write_line("hello \"x\0y\"").await.unwrap();
    assert_eq!(
        c.read_line().await.unwrap(),
        "* BYE Too many invalid IMAP commands."
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read_line())
        .await
        .expect("closed in time");
    assert!(closed.is_err(), "connection closed: {closed:?}");
    let mut direct = LineClient::connect(dovecot.imap_addr()).await.unwrap();
    direct.read_line().await.unwrap();
    direct.imap("a", "LOGIN alice secret-alice").await.unwrap();
    let status = direct.imap("s", "STATUS INBOX (MESSAGES)").await.unwrap();
    assert_eq!(
        status[0], "* STATUS INBOX (MESSAGES 0)",
        "the half command was never completed upstream"
    );
}

#[tokio::test]
async fn a_control_character_after_an_assembled_literal_is_refused_before_anything_runs() {
    let (_dovecot, proxy) = setup().await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    c.write_line("b CREATE {5}").await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with('+'));
    c.write_line("box-1 (x\0y)").await.unwrap();
    let reply = c.read_until_tagged("b").await.unwrap();
    assert_eq!(tagged_status(&reply), "BAD", "{reply:?}");
    let list = c.imap("l", "LIST \"\" box-1").await.unwrap();
    assert_eq!(list.len(), 1, "nothing was created: {list:?}");
}

/// Under the default `bare_lf: reject`, a bare-LF line where no tagged BAD can answer it
/// (the DONE of an IDLE) ends the session instead of leaving the IDLE hanging.
#[tokio::test]
async fn a_bare_lf_done_ends_the_session_under_the_strict_policy() {
    let (_dovecot, proxy) = setup().await;
    let mut c = LineClient::logged_in(proxy.plain, "alice").await;
    assert_eq!(
        tagged_status(&c.imap("b", "SELECT INBOX").await.unwrap()),
        "OK"
    );
    c.write_line("c IDLE").await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with('+'));
    c.write_raw(b"DONE\n").await.unwrap();
    assert_eq!(
        c.read_line().await.unwrap(),
        "* BYE Too many invalid IMAP commands."
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read_line())
        .await
        .expect("closed in time");
    assert!(closed.is_err(), "connection closed: {closed:?}");
}
