//! Differential tests: the same scripted IMAP session runs directly against Dovecot and
//! through the proxy (each side on its own fresh Dovecot), and the two transcripts must
//! be equal after the documented normalisations:
//!
//! - capability lists: the direct list is passed through the proxy's documented filter
//!   (`proto::imap::capability::filter`, see docs/imap-front.md), so a proxied list
//!   that differs in any other way fails;
//! - the greeting's text (it names the Dovecot instance), the timing suffix of Dovecot's
//!   tagged replies `(0.001 + 0.000 secs)` (whatever the durations) and per-instance
//!   UIDVALIDITY numbers;
//! - the text of continuation requests (`+ OK` from Dovecot, `+ Ready for literal data`
//!   from the proxy for commands it assembles) and of BAD replies the proxy writes itself;
//! - how the server's close reaches the client: end of stream and connection reset are
//!   both recorded as `<connection ended: closed>` (RST instead of FIN only means the
//!   server closed with unread input pending, e.g. a command sent after LOGOUT, and which
//!   one the client reads first depends on timing). A timeout is still recorded as such.
//!
//! Scripts live in `tests/data/imap-sessions/*.txt`:
//! `> line` sends the line + CRLF; `>> bytes` sends bytes as they are (escapes `\r`, `\n`,
//! `\0`, `\\`, `\xNN`, and `{repeat N:x}` for N copies of `x`); `< tag` reads until the
//! tagged reply for `tag`; `< +` reads until a continuation request; `< *` reads one
//! untagged response. Lines starting with `#` are comments.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use coi_proxy::proto::imap::capability::{self, CapabilityView};
use coi_proxy::proto::imap::fragment::{Fragment, Framer, FramerOptions, LongLines, StreamKind};
use coi_proxy::proto::imap::response::{self, ResponseHead, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::dovecot::Dovecot;
use support::io::step;
use support::proxy::{Options, Proxy};

/// The proxy's default literal limit, advertised as APPENDLIMIT.
const APPEND_LIMIT: u64 = coi_proxy::config::DEFAULT_MAX_LITERAL_BYTES;

#[derive(Debug)]
enum Step {
    Send(Vec<u8>),
    UntilTagged(String),
    UntilContinuation,
    OneUntagged,
}

fn parse_script(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let step = if let Some(raw) = line.strip_prefix(">> ") {
            Step::Send(unescape(raw))
        } else if let Some(command) = line.strip_prefix("> ") {
            let mut bytes = unescape(command);
            bytes.extend_from_slice(b"\r\n");
            Step::Send(bytes)
        } else if line == "< +" {
            Step::UntilContinuation
        } else if line == "< *" {
            Step::OneUntagged
        } else if let Some(tag) = line.strip_prefix("< ") {
            Step::UntilTagged(tag.to_owned())
        } else {
            panic!("script line {}: cannot parse {line:?}", n + 1);
        };
        steps.push(step);
    }
    steps
}

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("{repeat ") {
            let end = text[i..].find('}').expect("closing brace") + i;
            let (count, what) = text[i + 8..end].split_once(':').expect("{repeat N:x}");
            let count: usize = count.parse().expect("repeat count");
            for _ in 0..count {
                out.extend_from_slice(&unescape(what));
            }
            i = end + 1;
            continue;
        }
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    out.push(u8::from_str_radix(&text[i + 2..i + 4], 16).expect("hex escape"));
                    i += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// One complete server message as text: lines joined with `\n`, literals shown inline
/// (short ones escaped, long ones as length and checksum).
struct Reader {
    stream: TcpStream,
    framer: Framer,
}

impl Reader {
    async fn message(&mut self) -> std::io::Result<(String, Vec<u8>)> {
        let mut text = Vec::new();
        let mut first_line = Vec::new();
        let mut literal: Vec<u8> = Vec::new();
        loop {
            while let Some(fragment) = self.framer.next_fragment() {
                match fragment {
                    Fragment::Line {
                        line, literal: lit, ..
                    } => {
                        if first_line.is_empty() && text.is_empty() {
                            first_line = line.to_vec();
                        }
                        flush_literal(&mut text, &mut literal);
                        text.extend_from_slice(&line);
                        if lit.is_none() {
                            return Ok((String::from_utf8_lossy(&text).into_owned(), first_line));
                        }
                        text.push(b'\n');
                    }
                    Fragment::LinePart { bytes, .. } => text.extend_from_slice(&bytes),
                    Fragment::LiteralData(data) => literal.extend_from_slice(&data),
                    Fragment::LineTooLong => unreachable!("streamed"),
                }
            }
            let mut buf = vec![0; 65536];
            let n = step("read a response", self.stream.read(&mut buf)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.framer.push(&buf[..n]);
        }
    }
}

fn flush_literal(text: &mut Vec<u8>, literal: &mut Vec<u8>) {
    if literal.is_empty() {
        return;
    }
    if literal.len() <= 512 {
        text.extend_from_slice(
            format!("<literal {:?}>\n", String::from_utf8_lossy(literal)).as_bytes(),
        );
    } else {
        let sum = literal.iter().fold(0u64, |acc, &b| {
            acc.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        text.extend_from_slice(
            format!("<literal {} bytes, checksum {sum:x}>\n", literal.len()).as_bytes(),
        );
    }
    literal.clear();
}

/// Runs a script and returns the normalised transcript.
async fn run(addr: SocketAddr, steps: &[Step], proxied: bool) -> Vec<String> {
    let stream = step("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = Reader {
        stream,
        framer: Framer::new(FramerOptions {
            max_line: 65536,
            long_lines: LongLines::Stream,
            stream: StreamKind::Responses,
        }),
    };
    let mut transcript = Vec::new();
    let mut auth_tags: Vec<String> = Vec::new();
    let mut authenticated = false;
    let mut record = |text: String, first: &[u8], authenticated: bool| {
        transcript.push(normalise(&text, first, proxied, authenticated));
    };
    let (greeting, first) = reader.message().await.expect("greeting");
    // The greeting text names the Dovecot instance; only its capability code is compared.
    let greeting = match greeting.rfind(']') {
        Some(end) => format!("{} <greeting>", &greeting[..=end]),
        None => greeting,
    };
    record(greeting, &first, false);
    for step_ in steps {
        match step_ {
            Step::Send(bytes) => {
                for line in bytes.split(|&b| b == b'\n') {
                    let words: Vec<&[u8]> = line.splitn(3, |&b| b == b' ').collect();
                    if words.len() >= 2
                        && (words[1].eq_ignore_ascii_case(b"LOGIN")
                            || words[1].eq_ignore_ascii_case(b"AUTHENTICATE"))
                    {
                        auth_tags.push(String::from_utf8_lossy(words[0]).into_owned());
                    }
                }
                step("write", reader.stream.write_all(bytes))
                    .await
                    .expect("write");
            }
            Step::UntilTagged(tag) => loop {
                let (text, first) = match reader.message().await {
                    Ok(message) => message,
                    Err(e) => {
                        transcript.push(connection_ended(e.kind()));
                        return transcript;
                    }
                };
                let tagged = matches!(response::response_head(&first), Ok(ResponseHead::Tagged { tag: t, .. }) if t == tag.as_bytes());
                if tagged
                    && auth_tags.contains(tag)
                    && matches!(
                        response::response_head(&first),
                        Ok(ResponseHead::Tagged {
                            status: Status::Ok,
                            ..
                        })
                    )
                {
                    authenticated = true;
                }
                record(text, &first, authenticated);
                if tagged {
                    break;
                }
            },
            Step::UntilContinuation => loop {
                let (text, first) = reader.message().await.expect("continuation");
                let done = first.first() == Some(&b'+');
                record(text, &first, authenticated);
                if done {
                    break;
                }
            },
            Step::OneUntagged => {
                let (text, first) = reader.message().await.expect("untagged");
                record(text, &first, authenticated);
            }
        }
    }
    transcript
}

/// How a connection end is recorded. A server that closes while input it never read is
/// pending (a command sent after LOGOUT) makes the kernel send RST instead of FIN, and
/// whether the client then reads "reset" or "end of stream" depends on timing, so both
/// are recorded alike. Anything else (a timeout: nothing came) stays distinct.
fn connection_ended(kind: std::io::ErrorKind) -> String {
    match kind {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            "<connection ended: closed>".to_owned()
        }
        other => format!("<connection ended: {other:?}>"),
    }
}

fn normalise(text: &str, first: &[u8], proxied: bool, authenticated: bool) -> String {
    let mut text = text.to_owned();
    if first.first() == Some(&b'+') {
        return "+ <continuation>".into();
    }
    if let Ok(head) = response::response_head(first) {
        if let ResponseHead::Tagged {
            status: Status::Bad,
            tag,
            ..
        } = head
        {
            return format!("{} BAD <text>", String::from_utf8_lossy(tag));
        }
        if let ResponseHead::UntaggedStatus {
            status: Status::Bad,
            ..
        } = head
        {
            return "* BAD <text>".into();
        }
        if !proxied {
            let view = CapabilityView {
                tls_active: false,
                starttls_offered: false,
                authenticated,
                plaintext_auth_allowed: true,
                append_limit: APPEND_LIMIT,
            };
            let filter =
                |caps: &[u8]| capability::filter(response::capability_atoms(caps), &view).join(" ");
            match head {
                ResponseHead::Capability { caps } => {
                    text = format!("* CAPABILITY {}", filter(caps))
                }
                ResponseHead::Tagged {
                    code: Some(code), ..
                }
                | ResponseHead::UntaggedStatus {
                    code: Some(code), ..
                } if code.is("CAPABILITY") => {
                    text = format!(
                        "{}[CAPABILITY {}]{}",
                        String::from_utf8_lossy(&first[..code.span.0]),
                        filter(code.args),
                        &text[code.span.1..]
                    );
                }
                _ => {}
            }
        }
    }
    // Dovecot's timing suffix of tagged replies, `(0.001 + 0.000 secs)` right before the
    // final period (any duration: a loaded machine makes it exceed a second), and
    // per-instance identifiers.
    let tagged = matches!(
        response::response_head(first),
        Ok(ResponseHead::Tagged { .. })
    );
    let mut from = 0;
    while let Some(at) = text[from..].find(" (").map(|i| i + from).filter(|_| tagged) {
        let inner = &text[at + 2..];
        let timing = inner.find("secs)").filter(|&end| {
            matches!(&inner[end + 5..], "" | ".")
                && inner.starts_with(|c: char| c.is_ascii_digit())
                && inner[..end]
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | ' '))
        });
        match timing {
            Some(end) => text.replace_range(at..at + 2 + end + 5, ""),
            None => from = at + 2,
        }
    }
    for key in ["UIDVALIDITY ", "APPENDUID ", "COPYUID "] {
        let mut from = 0;
        while let Some(at) = text[from..].find(key).map(|i| i + from + key.len()) {
            let end = text[at..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(text.len(), |e| at + e);
            text.replace_range(at..end, "N");
            from = at;
        }
    }
    text
}

async fn differential(name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/imap-sessions")
        .join(format!("{name}.txt"));
    let script =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let steps = parse_script(&script);
    let direct_dovecot = Dovecot::start().expect("dovecot for the direct run");
    let proxied_dovecot = Dovecot::start().expect("dovecot for the proxied run");
    let proxy = Proxy::start(
        proxied_dovecot.imap_addr(),
        Options {
            plaintext_auth: true,
            ..Options::default()
        },
    )
    .await;
    let direct = run(direct_dovecot.imap_addr(), &steps, false).await;
    let proxied = run(proxy.plain, &steps, true).await;
    if direct != proxied {
        let mut report = format!("transcripts differ for {name}\n");
        for i in 0..direct.len().max(proxied.len()) {
            let d = direct.get(i).map_or("<none>", String::as_str);
            let p = proxied.get(i).map_or("<none>", String::as_str);
            let mark = if d == p { "  " } else { "!!" };
            report.push_str(&format!("{mark} direct : {d}\n{mark} proxied: {p}\n"));
        }
        panic!("{report}");
    }
    assert!(
        direct.len() > steps.iter().filter(|s| !matches!(s, Step::Send(_))).count(),
        "every wait produced output"
    );
}

/// `test_name => "file-name",` runs `tests/data/imap-sessions/file-name.txt`.
/// `test_name => "file-name" (ignore "reason"),` keeps a script that shows a known proxy
/// bug in the suite but ignored (`cargo test -- --ignored` runs it): the script asserts
/// the correct, transparent behaviour, so the line goes back to the plain form when the
/// bug is fixed. The reason names the difference.
macro_rules! sessions {
    ($($test:ident => $file:literal $((ignore $reason:literal))?,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $reason])?
            async fn $test() {
                differential($file).await;
            }
        )*

        /// Every script file has a test, so none is silently skipped.
        #[test]
        fn every_session_file_is_listed() {
            let listed: Vec<&str> = vec![$($file),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/imap-sessions");
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .expect("sessions dir")
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".txt").map(str::to_owned))
                .collect();
            files.sort();
            for file in &files {
                assert!(listed.contains(&file.as_str()), "{file}.txt has no test in imap_differential.rs");
            }
            assert!(listed.len() >= 40, "at least 40 sessions, found {}", listed.len());
        }
    };
}

sessions! {
    append_1mib => "append-1mib",
    append_200k => "append-200k",
    append_catenate => "append-catenate",
    append_empty => "append-empty",
    append_flags_date => "append-flags-date",
    append_nonsync_literal => "append-nonsync-literal",
    append_sync_literal => "append-sync-literal",
    append_trycreate => "append-trycreate",
    authenticate_cancel => "authenticate-cancel",
    authenticate_login => "authenticate-login",
    authenticate_login_initial_response => "authenticate-login-initial-response",
    authenticate_login_invalid_response => "authenticate-login-invalid-response",
    authenticate_plain_continuation => "authenticate-plain-continuation",
    authenticate_plain_invalid => "authenticate-plain-invalid",
    authenticate_plain_invalid_encoding => "authenticate-plain-invalid-encoding",
    authenticate_plain_sasl_ir => "authenticate-plain-sasl-ir",
    authenticate_unknown_mechanism => "authenticate-unknown-mechanism",
    capability_authenticate => "capability-authenticate",
    check => "check",
    close_unselect => "close-unselect",
    copy_move_expunge => "copy-move-expunge",
    create_delete => "create-delete",
    create_hierarchy => "create-hierarchy",
    enable => "enable",
    error_bad_command_limit => "error-bad-command-limit",
    error_bad_login_syntax => "error-bad-login-syntax",
    error_bad_sequence_set => "error-bad-sequence-set",
    error_fetch_before_select => "error-fetch-before-select",
    error_gibberish => "error-gibberish",
    error_login_parse_errors => "error-login-parse-errors",
    error_lone_word => "error-lone-word",
    error_mailbox_commands_before_login => "error-mailbox-commands-before-login",
    error_missing_arguments => "error-missing-arguments",
    error_prelogin_bad_limit => "error-prelogin-bad-limit",
    error_select_before_login => "error-select-before-login",
    error_unknown_command => "error-unknown-command",
    fetch_1mib => "fetch-1mib",
    fetch_binary => "fetch-binary",
    fetch_body_sections => "fetch-body-sections",
    fetch_bodystructure => "fetch-bodystructure",
    fetch_envelope => "fetch-envelope",
    fetch_flags_uid => "fetch-flags-uid",
    fetch_long_header => "fetch-long-header",
    fetch_size_internaldate => "fetch-size-internaldate",
    greeting_and_capability => "greeting-capability",
    id => "id",
    idle => "idle",
    idle_done_pipelined => "idle-done-pipelined",
    idle_not_done => "idle-not-done",
    list_extended => "list-extended",
    list_plain => "list-plain",
    list_quoted_names => "list-quoted-names",
    list_special_use => "list-special-use",
    list_wildcards => "list-wildcards",
    literal_mailbox_names => "literal-mailbox-names",
    login_nonsync_literal => "login-nonsync-literal",
    login_quoted_password => "login-quoted-password",
    login_sync_literal => "login-sync-literal",
    login_wrong_password => "login-wrong-password",
    login_password_of_another_user => "login-password-of-another-user",
    logout => "logout",
    logout_selected => "logout-selected",
    lsub => "lsub",
    mailbox_commands_lowercase => "mailbox-commands-lowercase",
    mailbox_errors => "mailbox-errors",
    metadata_mailbox => "metadata-mailbox",
    metadata_server => "metadata-server",
    metadata_server_syntax => "metadata-server-syntax",
    multiappend => "multiappend",
    namespace => "namespace",
    noop => "noop",
    notify => "notify",
    pipelining => "pipelining",
    pipelining_after_authenticate => "pipelining-after-authenticate",
    pipelining_after_login => "pipelining-after-login",
    pipelining_large_fetches => "pipelining-large-fetches",
    rename => "rename",
    search_basic => "search-basic",
    search_charset_literal => "search-charset-literal",
    search_esearch => "search-esearch",
    search_searchres => "search-searchres",
    select_condstore_qresync => "select-condstore-qresync",
    select_examine => "select-examine",
    sort => "sort",
    status => "status",
    store_flags => "store-flags",
    store_unchangedsince => "store-unchangedsince",
    subscribe => "subscribe",
    thread => "thread",
    uid_copy_move_expunge => "uid-copy-move-expunge",
    uid_fetch_store_search => "uid-fetch-store-search",
}

#[test]
fn normalisation_removes_only_what_it_documents() {
    assert_eq!(
        normalise(
            "a OK Append completed (1.204 + 0.000 + 1.203 secs).",
            b"a OK Append completed",
            true,
            true
        ),
        "a OK Append completed."
    );
    assert_eq!(
        normalise("* LIST () \"/\" \"a (1 secs)\"", b"* LIST", true, true),
        "* LIST () \"/\" \"a (1 secs)\""
    );
    assert_eq!(
        normalise("a NO x (2 secs) y.", b"a NO x (2 secs) y.", true, true),
        "a NO x (2 secs) y."
    );
    assert_eq!(
        normalise(
            "a OK Logged in (0.001 + 0.000 + 0.002 secs).",
            b"a OK Logged in",
            true,
            true
        ),
        "a OK Logged in."
    );
    assert_eq!(
        normalise(
            "* OK [UIDVALIDITY 1732181234] UIDs valid",
            b"* OK [UIDVALIDITY 1732181234] UIDs valid",
            true,
            true
        ),
        "* OK [UIDVALIDITY N] UIDs valid"
    );
    assert_eq!(
        normalise(
            "a NO [TRYCREATE] Mailbox doesn't exist: x",
            b"a NO [TRYCREATE] Mailbox doesn't exist: x",
            true,
            true
        ),
        "a NO [TRYCREATE] Mailbox doesn't exist: x"
    );
    let direct = normalise(
        "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE",
        b"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE",
        false,
        true,
    );
    assert_eq!(
        direct,
        format!("* CAPABILITY IMAP4rev1 IDLE APPENDLIMIT={APPEND_LIMIT} COI")
    );
    assert_eq!(
        connection_ended(std::io::ErrorKind::ConnectionReset),
        connection_ended(std::io::ErrorKind::UnexpectedEof)
    );
    assert_ne!(
        connection_ended(std::io::ErrorKind::TimedOut),
        connection_ended(std::io::ErrorKind::UnexpectedEof)
    );
    assert_eq!(unescape("a\\r\\n\\x41{repeat 3:b}"), b"a\r\nAbbb");
    let _ = Bytes::new();
}
