//! The mailbox writer against a real Dovecot: master login, streamed APPEND, reading back
//! over an ordinary user login byte for byte, the pool, and every failure the delivery
//! path must turn into the right reply class.
//!
//! Every network step is bounded: the writer by its own (short) timeouts, the test's own
//! IMAP client by [`STEP`].

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use coi_proxy::proxy::writer::{
    BodyError, CreateOutcome, InternalDate, MailboxWriter, MasterPassword, SearchKey, WriterConfig,
    WriterError,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use support::dovecot::{Dovecot, MASTER_PASSWORD, MASTER_USER, WRITER_CONNECT_TIMEOUT};
use support::io::{step, STEP};

fn start() -> Dovecot {
    Dovecot::start().expect("dovecot")
}

fn config(dovecot: &Dovecot) -> WriterConfig {
    dovecot.writer_config()
}

fn writer(dovecot: &Dovecot) -> Arc<MailboxWriter> {
    MailboxWriter::new(config(dovecot))
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.org>\r\nChat-Version: 1.0\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

// === A plain IMAP client logged in as the user (independent of the writer's parser) ===

/// One piece of a response: a line (without CRLF) or a literal's bytes.
#[derive(Debug)]
enum Piece {
    Line(String),
    Literal(Vec<u8>),
}

struct UserClient {
    stream: BufReader<TcpStream>,
}

impl UserClient {
    async fn login(dovecot: &Dovecot, user: &str) -> UserClient {
        let stream = step("connect", TcpStream::connect(dovecot.imap_addr()))
            .await
            .expect("connect");
        let mut client = UserClient {
            stream: BufReader::new(stream),
        };
        let greeting = client.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        let password = dovecot.password_of(user).expect("test user");
        client.ok(&format!("LOGIN {user} {password}")).await;
        client
    }

    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = step("read a line", self.stream.read_until(b'\n', &mut buf))
            .await
            .expect("read");
        assert!(n > 0, "Dovecot closed the connection");
        assert!(buf.ends_with(b"\r\n"), "{buf:?}");
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("ASCII response line")
    }

    /// Sends a command and returns its response pieces, the tagged line last.
    async fn command(&mut self, command: &str) -> Vec<Piece> {
        step("write", async {
            self.stream
                .get_mut()
                .write_all(format!("u {command}\r\n").as_bytes())
                .await
        })
        .await
        .expect("write");
        let mut pieces = Vec::new();
        loop {
            let line = self.line().await;
            let literal = line
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            let done = line.starts_with("u ");
            pieces.push(Piece::Line(line));
            if let Some(len) = literal {
                let mut bytes = vec![0; len];
                step("read a literal", self.stream.read_exact(&mut bytes))
                    .await
                    .expect("literal");
                pieces.push(Piece::Literal(bytes));
            } else if done {
                return pieces;
            }
        }
    }

    async fn ok(&mut self, command: &str) -> Vec<Piece> {
        let pieces = self.command(command).await;
        match pieces.last() {
            Some(Piece::Line(l)) if l.starts_with("u OK") => pieces,
            other => panic!("{command}: {other:?} in {pieces:?}"),
        }
    }

    /// The flags and the exact bytes of one message.
    async fn fetch(&mut self, mailbox: &str, uid: u32) -> (String, Vec<u8>) {
        self.ok(&format!("EXAMINE \"{mailbox}\"")).await;
        let pieces = self
            .ok(&format!("UID FETCH {uid} (FLAGS BODY.PEEK[])"))
            .await;
        let mut flags = None;
        let mut body = None;
        for piece in pieces {
            match piece {
                Piece::Line(l) if l.starts_with("* ") && l.contains("FETCH") => {
                    let start = l.find("FLAGS (").expect("FLAGS") + "FLAGS (".len();
                    let end = start + l[start..].find(')').expect("flags end");
                    flags = Some(l[start..end].to_owned());
                }
                Piece::Literal(bytes) => body = Some(bytes),
                _ => {}
            }
        }
        (flags.expect("a FETCH"), body.expect("a body"))
    }

    /// STATUS MESSAGES.
    async fn count(&mut self, mailbox: &str) -> u32 {
        let pieces = self.ok(&format!("STATUS \"{mailbox}\" (MESSAGES)")).await;
        for piece in pieces {
            if let Piece::Line(l) = piece {
                if let Some(rest) = l.split("(MESSAGES ").nth(1) {
                    return rest.trim_end_matches(')').parse().expect("count");
                }
            }
        }
        panic!("no STATUS response");
    }
}

/// A body that produces `len` bytes of a pattern without holding them.
struct Pattern {
    len: u64,
    sent: u64,
}

impl Pattern {
    fn byte(i: u64) -> u8 {
        // Lines of printable text, so the message is plain 7-bit mail.
        if i % 80 == 78 {
            b'\r'
        } else if i % 80 == 79 {
            b'\n'
        } else {
            b'a' + (i % 26) as u8
        }
    }
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (self.len - self.sent).min(buf.remaining() as u64);
        for i in 0..n {
            buf.put_slice(&[Pattern::byte(self.sent + i)]);
        }
        self.sent += n;
        Poll::Ready(Ok(()))
    }
}

/// A body that never delivers a byte and never ends.
struct Stalled;

impl AsyncRead for Stalled {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

// === Tests ===

#[tokio::test]
async fn append_into_inbox_and_a_new_folder_reads_back_byte_for_byte() {
    let dovecot = start();
    let writer = writer(&dovecot);
    let mut session = writer.session("alice").await.expect("session");
    assert_eq!(session.user(), "alice");

    let plain = message("inbox", "hello\r\n.\r\nline with a dot");
    let stored = session
        .append("INBOX", &[], None, plain.len() as u64, &plain[..])
        .await
        .expect("append to INBOX");
    assert_eq!(stored.uid, 1);

    assert_eq!(
        session
            .create_if_missing("COI/Chats", true)
            .await
            .expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(
        session
            .create_if_missing("COI/Chats", true)
            .await
            .expect("create again"),
        CreateOutcome::Existed
    );
    let chat = message("chat", "8-bit: caf\u{e9} \u{1F600}");
    let date = InternalDate::with_offset(1_700_000_000, 60).expect("date");
    let in_chats = session
        .append(
            "COI/Chats",
            &["$Chat", "\\Seen"],
            Some(date),
            chat.len() as u64,
            &chat[..],
        )
        .await
        .expect("append to COI/Chats");
    assert_eq!(in_chats.uid, 1);
    assert_ne!(in_chats.uid_validity, 0);
    drop(session);

    let mut user = UserClient::login(&dovecot, "alice").await;
    let (flags, body) = user.fetch("INBOX", stored.uid).await;
    assert_eq!(body, plain);
    assert!(!flags.contains("\\Seen"), "{flags}");
    let (flags, body) = user.fetch("COI/Chats", in_chats.uid).await;
    assert_eq!(body, chat);
    assert!(
        flags.contains("$Chat") && flags.contains("\\Seen"),
        "{flags}"
    );
    let pieces = user
        .ok(&format!("UID FETCH {} (INTERNALDATE)", in_chats.uid))
        .await;
    // The same instant; maildir keeps it as the file's mtime, without the zone.
    let shown = format!("{pieces:?}");
    assert!(
        shown.contains("14-Nov-2023 23:13:20 +0100")
            || shown.contains("14-Nov-2023 22:13:20 +0000"),
        "{shown}"
    );
    let subscribed = user.ok("LSUB \"\" \"COI/*\"").await;
    assert!(
        format!("{subscribed:?}").contains("COI/Chats"),
        "{subscribed:?}"
    );
}

#[tokio::test]
async fn a_five_mib_body_is_streamed() {
    let dovecot = start();
    let writer = writer(&dovecot);
    let mut session = writer.session("bob").await.expect("session");
    let len = 5 * 1024 * 1024;
    let header = b"Subject: big\r\n\r\n";
    let body = (&header[..]).chain(Pattern {
        len: len - header.len() as u64,
        sent: 0,
    });
    let stored = session
        .append("INBOX", &[], None, len, body)
        .await
        .expect("append");
    drop(session);

    let mut user = UserClient::login(&dovecot, "bob").await;
    let (_, got) = user.fetch("INBOX", stored.uid).await;
    assert_eq!(got.len() as u64, len);
    assert_eq!(&got[..header.len()], header);
    let mismatch = got[header.len()..]
        .iter()
        .enumerate()
        .position(|(i, &b)| b != Pattern::byte(i as u64));
    assert_eq!(mismatch, None, "first differing byte after the header");
}

#[tokio::test]
async fn synchronising_literals_work_when_literal_plus_is_off() {
    let dovecot = start();
    let mut config = config(&dovecot);
    config.literal_plus = false;
    let writer = MailboxWriter::new(config);
    let mut session = writer.session("carol").await.expect("session");
    let mail = "Subject: sync caf\u{e9}\r\n\r\nbody\r\n"
        .as_bytes()
        .to_vec();
    session
        .create_if_missing("Odd \"name\"", false)
        .await
        .expect("create");
    let stored = session
        .append(
            "Odd \"name\"",
            &["$Chat"],
            None,
            mail.len() as u64,
            &mail[..],
        )
        .await
        .expect("append");
    let found = session.examine("Odd \"name\"").await.expect("examine");
    assert_eq!(found.exists, 1);
    assert!(found.read_only);
    let uids = session
        .uid_search(&[SearchKey::Header {
            name: "Subject".into(),
            // Not ASCII: a (synchronising) literal in the middle of the command.
            value: "caf\u{e9}".into(),
        }])
        .await
        .expect("search");
    assert_eq!(uids, [stored.uid]);
}

#[tokio::test]
async fn wrong_master_password_is_an_authentication_error() {
    let dovecot = start();
    let mut config = config(&dovecot);
    config.master_password = MasterPassword::new("not-the-secret");
    let writer = MailboxWriter::new(config);
    let error = writer.session("alice").await.expect_err("login must fail");
    assert!(
        matches!(&error, WriterError::AuthFailed { refusal } if refusal.code.as_ref().is_some_and(|c| c.is("AUTHENTICATIONFAILED"))),
        "{error:?}"
    );
    assert!(
        error.is_transient(),
        "a configuration error must not bounce mail"
    );
    let shown = format!("{error} {error:?} {:?}", writer);
    assert!(!shown.contains("not-the-secret"), "{shown}");
    let stats = writer.stats();
    assert_eq!((stats.open_failures, stats.open), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn a_body_shorter_or_longer_than_announced_stores_nothing() {
    let dovecot = start();
    for literal_plus in [true, false] {
        let mut config = config(&dovecot);
        config.literal_plus = literal_plus;
        config.reply_timeout = Duration::from_millis(500);
        let writer = MailboxWriter::new(config);
        let mut session = writer.session("alice").await.expect("session");
        let mail = message("short", "the end is missing");

        let error = session
            .append("INBOX", &[], None, mail.len() as u64 + 10, &mail[..])
            .await
            .expect_err("short body");
        assert!(
            matches!(error, WriterError::Body(BodyError::Short { expected, received })
                if expected == mail.len() as u64 + 10 && received == mail.len() as u64),
            "{error:?}"
        );
        assert!(error.is_transient());
        let again = session
            .select("INBOX")
            .await
            .expect_err("connection is gone");
        assert!(matches!(again, WriterError::SessionBroken), "{again:?}");
        drop(session);

        let mut session = writer.session("alice").await.expect("session");
        let error = session
            .append("INBOX", &[], None, mail.len() as u64 - 1, &mail[..])
            .await
            .expect_err("long body");
        assert!(
            matches!(error, WriterError::Body(BodyError::Long { .. })),
            "{error:?}"
        );
        drop(session);

        let mut session = writer.session("alice").await.expect("session");
        let error = session
            .append("INBOX", &[], None, 100, Stalled)
            .await
            .expect_err("stalled body");
        assert!(
            matches!(error, WriterError::Body(BodyError::Stalled)),
            "{error:?}"
        );
        drop(session);

        let stats = writer.stats();
        assert_eq!(
            (
                stats.connections_opened,
                stats.connections_reused,
                stats.open
            ),
            (3, 0, 0),
            "every aborted connection is closed, none reused: {stats:?}"
        );
    }
    let mut user = UserClient::login(&dovecot, "alice").await;
    assert_eq!(user.count("INBOX").await, 0, "nothing was stored");
}

#[tokio::test]
async fn sequential_sessions_of_a_user_reuse_one_connection() {
    let dovecot = start();
    let writer = writer(&dovecot);
    for round in 0..3 {
        let mut session = writer.session("alice").await.expect("session");
        session.select("INBOX").await.expect("select");
        drop(session);
        let stats = writer.stats();
        assert_eq!(
            (
                stats.connections_opened,
                stats.connections_reused,
                stats.idle
            ),
            (1, round, 1),
            "{stats:?}"
        );
    }
    // Another user gets a connection of their own; two at once need two.
    let bob = writer.session("bob").await.expect("bob");
    let alice_1 = writer.session("alice").await.expect("alice 1");
    let alice_2 = writer.session("alice").await.expect("alice 2");
    assert_eq!(writer.stats().connections_opened, 3);
    drop((bob, alice_1, alice_2));
    let stats = writer.stats();
    assert_eq!((stats.idle, stats.open), (3, 3), "{stats:?}");
    writer.close_idle();
    assert_eq!(writer.stats().open, 0);
}

#[tokio::test]
async fn a_full_pool_closes_another_users_idle_connection_or_times_out() {
    let dovecot = start();
    let mut config = config(&dovecot);
    config.max_connections = 1;
    config.connect_timeout = Duration::from_millis(300);
    let writer = MailboxWriter::new(config);
    drop(writer.session("alice").await.expect("alice"));
    let bob = writer
        .session("bob")
        .await
        .expect("bob gets alice's idle slot");
    let stats = writer.stats();
    assert_eq!(
        (
            stats.connections_opened,
            stats.connections_closed,
            stats.open
        ),
        (2, 1, 1),
        "{stats:?}"
    );
    let started = tokio::time::Instant::now();
    let error = writer.session("carol").await.expect_err("pool is full");
    assert!(matches!(error, WriterError::PoolTimeout), "{error:?}");
    assert!(error.is_transient());
    assert!(started.elapsed() < STEP);
    drop(bob);
    writer.session("carol").await.expect("a slot is free again");
}

#[tokio::test]
async fn stopped_dovecot_is_a_transient_error_within_the_connect_timeout() {
    let mut dovecot = start();
    let writer = writer(&dovecot);
    drop(writer.session("alice").await.expect("session"));
    assert_eq!(writer.stats().idle, 1);
    dovecot.stop().expect("stop dovecot");

    let started = tokio::time::Instant::now();
    let error = writer.session("alice").await.expect_err("dovecot is down");
    assert!(
        started.elapsed() <= WRITER_CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, WriterError::Connect { .. }),
        "the idle connection that saw BYE is not handed out: {error:?}"
    );
    assert!(error.is_transient());
    let stats = writer.stats();
    assert_eq!((stats.connections_closed, stats.open), (1, 0), "{stats:?}");

    dovecot.restart().expect("restart dovecot");
    let mut session = writer.session("alice").await.expect("after the restart");
    session.select("INBOX").await.expect("select");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        // Holds the connection open without a greeting.
        let (socket, _) = listener.accept().await.expect("accept");
        socket
    });
    let mut config = WriterConfig::new(
        addr.ip().to_string(),
        addr.port(),
        MASTER_USER,
        MasterPassword::new(MASTER_PASSWORD),
    );
    config.reply_timeout = Duration::from_millis(200);
    let writer = MailboxWriter::new(config);
    let started = tokio::time::Instant::now();
    let error = writer.session("alice").await.expect_err("no greeting");
    assert!(
        matches!(
            error,
            WriterError::Timeout {
                waiting_for: "greeting"
            }
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert!(started.elapsed() < STEP);
    drop(
        step("accept", async {
            accept.await.map_err(std::io::Error::other)
        })
        .await,
    );
}

#[tokio::test]
async fn append_to_a_missing_mailbox_is_trycreate_and_keeps_the_connection() {
    let dovecot = start();
    for literal_plus in [true, false] {
        let mut config = config(&dovecot);
        config.literal_plus = literal_plus;
        let writer = MailboxWriter::new(config);
        let mut session = writer.session("alice").await.expect("session");
        let mail = message("nowhere", "x");
        let error = session
            .append("No/Such", &[], None, mail.len() as u64, &mail[..])
            .await
            .expect_err("missing mailbox");
        assert!(
            error.response_code().is_some_and(|c| c.is("TRYCREATE")),
            "{error:?}"
        );
        assert!(!error.is_transient(), "{error:?}");
        session
            .select("INBOX")
            .await
            .expect("the connection is still in step");
        let error = session
            .create_if_missing("a//b", false)
            .await
            .expect_err("invalid mailbox name");
        assert!(
            error.response_code().is_some_and(|c| c.is("CANNOT")),
            "{error:?}"
        );
        assert!(!error.is_transient(), "{error:?}");
        for bad in ["bad\u{0}name", "bad&name", "caf\u{e9}", "line\r\nbreak"] {
            let error = session
                .create_if_missing(bad, false)
                .await
                .expect_err("not a wire mailbox name");
            assert!(
                matches!(error, WriterError::InvalidArgument(_)),
                "{error:?}"
            );
            assert!(!error.is_transient(), "{error:?}");
        }
        drop(session);
        assert_eq!(writer.stats().idle, 1, "literal_plus {literal_plus}");
    }
}

#[tokio::test]
async fn search_by_header_then_fetch_then_expunge() {
    let dovecot = start();
    let writer = writer(&dovecot);
    let mut session = writer.session("bob").await.expect("session");
    let first = message("first", "one");
    let second = message("second", "two");
    let a = session
        .append("INBOX", &[], None, first.len() as u64, &first[..])
        .await
        .expect("append");
    let b = session
        .append("INBOX", &["$Chat"], None, second.len() as u64, &second[..])
        .await
        .expect("append");
    let selected = session.select("INBOX").await.expect("select");
    assert_eq!(selected.exists, 2);
    assert_eq!(selected.uid_validity, Some(b.uid_validity));
    assert!(!selected.read_only);

    let by_id = SearchKey::Header {
        name: "Message-ID".into(),
        value: b"<second@example.org>".to_vec(),
    };
    let found = session
        .uid_search(std::slice::from_ref(&by_id))
        .await
        .expect("search");
    assert_eq!(found, [b.uid]);
    let chats = session
        .uid_search(&[SearchKey::Keyword("$Chat".into()), SearchKey::Undeleted])
        .await
        .expect("search keyword");
    assert_eq!(chats, [b.uid]);

    let bodies = session
        .uid_fetch_bodies(&[a.uid, b.uid, 999])
        .await
        .expect("fetch");
    assert_eq!(
        bodies
            .iter()
            .map(|(uid, body)| (*uid, body.to_vec()))
            .collect::<Vec<_>>(),
        [(a.uid, first.clone()), (b.uid, second.clone())]
    );
    let unseen = session
        .uid_search(&[SearchKey::Unseen])
        .await
        .expect("search");
    assert_eq!(unseen, [a.uid, b.uid], "BODY.PEEK sets no \\Seen");

    session
        .uid_store_add_flags(&[b.uid], &["\\Deleted"])
        .await
        .expect("store");
    session.uid_expunge(&[b.uid]).await.expect("expunge");
    assert_eq!(
        session.uid_search(&[by_id]).await.expect("search"),
        Vec::<u32>::new()
    );
    assert_eq!(
        session.uid_search(&[SearchKey::All]).await.expect("all"),
        [a.uid]
    );
    let error = session
        .uid_store_add_flags(&[a.uid], &["bad flag"])
        .await
        .expect_err("invalid flag");
    assert!(
        matches!(error, WriterError::InvalidArgument(_)),
        "{error:?}"
    );
    session
        .uid_search(&[SearchKey::All])
        .await
        .expect("nothing was sent; the session is fine");
}

#[tokio::test]
async fn a_response_over_the_limit_is_refused_and_the_connection_stays_usable() {
    let dovecot = start();
    let mut config = config(&dovecot);
    config.max_response_bytes = 4096;
    let writer = MailboxWriter::new(config);
    let mut session = writer.session("carol").await.expect("session");
    let big = Pattern {
        len: 10_000,
        sent: 0,
    };
    let stored = session
        .append("INBOX", &[], None, 10_000, big)
        .await
        .expect("append");
    let small = message("small", "s");
    let small_uid = session
        .append("INBOX", &[], None, small.len() as u64, &small[..])
        .await
        .expect("append");
    session.select("INBOX").await.expect("select");
    let error = session
        .uid_fetch_bodies(&[stored.uid])
        .await
        .expect_err("too large");
    assert!(
        matches!(error, WriterError::ResponseTooLarge { limit: 4096 }),
        "{error:?}"
    );
    let bodies = session
        .uid_fetch_bodies(&[small_uid.uid])
        .await
        .expect("same connection");
    assert_eq!(bodies[0].1, small);
    drop(session);
    let stats = writer.stats();
    assert_eq!((stats.connections_closed, stats.idle), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn get_metadata_reads_what_the_user_set() {
    let dovecot = start();
    const ENABLED: &str = "/private/vendor/coi-proxy/config/enabled";
    const FILTER: &str = "/private/vendor/coi-proxy/config/message-filter";
    const MISSING: &str = "/private/vendor/coi-proxy/config/mailbox-root";
    const MULTILINE: &str = "/private/comment";
    let mut user = UserClient::login(&dovecot, "alice").await;
    user.ok(&format!(
        "SETMETADATA \"\" ({ENABLED} \"yes\" {FILTER} \"active\" {MULTILINE} {{8+}}\r\nline\r\n\u{1}z)"
    ))
    .await;

    let writer = writer(&dovecot);
    let mut session = writer.session("alice").await.expect("session");
    let values = session
        .get_metadata("", &[ENABLED, FILTER, MISSING, MULTILINE])
        .await
        .expect("getmetadata");
    let values: Vec<(String, Option<Vec<u8>>)> = values
        .into_iter()
        .map(|(e, v)| (e, v.map(|v| v.to_vec())))
        .collect();
    assert_eq!(
        values,
        [
            (ENABLED.to_owned(), Some(b"yes".to_vec())),
            (FILTER.to_owned(), Some(b"active".to_vec())),
            (MISSING.to_owned(), None),
            (MULTILINE.to_owned(), Some(b"line\r\n\x01z".to_vec())),
        ]
    );
    session
        .set_metadata("", &[(FILTER, Some(b"seen")), (ENABLED, None)])
        .await
        .expect("setmetadata");
    let values = session
        .get_metadata("", &[ENABLED, FILTER])
        .await
        .expect("getmetadata");
    assert_eq!(values[0].1, None);
    assert_eq!(values[1].1.as_deref(), Some(&b"seen"[..]));
}

#[tokio::test]
async fn invalid_user_names_are_refused_before_connecting() {
    let dovecot = start();
    let writer = writer(&dovecot);
    for user in ["", "alice\r\nx", "al\u{0}ice"] {
        let error = writer.session(user).await.expect_err("invalid user");
        assert!(
            matches!(error, WriterError::InvalidArgument(_)),
            "{error:?}"
        );
    }
    assert_eq!(writer.stats().connections_opened, 0);
    let error = writer.session("nobody").await.expect_err("unknown user");
    assert!(matches!(error, WriterError::AuthFailed { .. }), "{error:?}");
}
