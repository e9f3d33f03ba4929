//! Byte-level clients for the security tests: send a byte string in one write or one
//! byte per write, read everything the peer says until a line, a tagged reply or the
//! close, and speak TLS (implicit, or after STARTTLS). Every network step is bounded by
//! [`STEP`](super::io::STEP).
//!
//! Unlike [`LineClient`](super::io::LineClient), a [`RawClient`] never hides what the
//! peer sent: lines come back as bytes, end of stream and connection resets are results
//! rather than errors, and whatever is left unread can be inspected.
//!
//! SMTP and LMTP replies over a raw client ([`Reply`], [`reply`], [`command`], [`sent`],
//! ...) are read in full, every line as sent, so that tests can check codes, enhanced
//! codes and the order of per-recipient replies.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::io::{step, STEP};

/// How a byte string is handed to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// One `write` of all the bytes (usually one TCP segment on loopback).
    Whole,
    /// One `write` and flush per byte (TCP_NODELAY is on, so usually one segment each):
    /// parsers must not depend on segment boundaries.
    BytePerWrite,
}

/// Both deliveries, for `for delivery in DELIVERIES { ... }`.
pub const DELIVERIES: [Delivery; 2] = [Delivery::Whole, Delivery::BytePerWrite];

/// The name the test certificate is valid for (see `support::proxy`).
pub const SERVER_NAME: &str = "localhost";

/// How reading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly end of stream (FIN, or TLS close_notify).
    Eof,
    /// The peer reset the connection (it closed with unread data, or after our writes).
    Reset,
}

/// A client over any byte stream, with its own receive buffer.
#[derive(Debug)]
pub struct RawClient<S> {
    stream: S,
    /// Received, not yet consumed.
    inbox: Vec<u8>,
    /// Set once the peer closed (or reset) the connection.
    ended: Option<End>,
}

impl RawClient<TcpStream> {
    /// Connects over plain TCP with TCP_NODELAY on.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = step(&format!("connect to {addr}"), TcpStream::connect(addr)).await?;
        stream.set_nodelay(true)?;
        Ok(Self::new(stream))
    }

    /// Upgrades the connection to TLS (after `OK Begin TLS negotiation`). Panics if
    /// plaintext bytes are still unread: the server must not send anything after its OK.
    pub async fn upgrade(self, ca_path: &Path) -> std::io::Result<RawClient<TlsStream<TcpStream>>> {
        let (stream, leftover) = self.into_parts();
        assert!(
            leftover.is_empty(),
            "plaintext bytes after the STARTTLS OK: {}",
            escape(&leftover)
        );
        let tls = step(
            "TLS handshake",
            tls_connector(ca_path).connect(server_name(), stream),
        )
        .await?;
        Ok(RawClient::new(tls))
    }
}

impl RawClient<TlsStream<TcpStream>> {
    /// Connects with implicit TLS, trusting only `ca_path`.
    pub async fn connect_tls(addr: SocketAddr, ca_path: &Path) -> std::io::Result<Self> {
        let tcp = RawClient::connect(addr).await?;
        tcp.upgrade(ca_path).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            inbox: Vec::new(),
            ended: None,
        }
    }

    /// The stream and the bytes received but not consumed.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.inbox)
    }

    /// Received bytes not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.inbox
    }

    /// How the peer ended the connection, once it did.
    pub fn ended(&self) -> Option<End> {
        self.ended
    }

    /// Sends `bytes` as `delivery` says. Each write must make progress within
    /// [`STEP`].
    pub async fn send(&mut self, bytes: &[u8], delivery: Delivery) -> std::io::Result<()> {
        match delivery {
            Delivery::Whole => {
                step("write", async {
                    self.stream.write_all(bytes).await?;
                    self.stream.flush().await
                })
                .await
            }
            Delivery::BytePerWrite => {
                for byte in bytes {
                    step("write one byte", async {
                        self.stream.write_all(std::slice::from_ref(byte)).await?;
                        self.stream.flush().await
                    })
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Sends `bytes` as `delivery` says, ignoring a failure because the peer closed or
    /// reset the connection (an attack's tail that the proxy refused to read). Returns
    /// whether everything was written.
    pub async fn send_attack(&mut self, bytes: &[u8], delivery: Delivery) -> bool {
        match self.send(bytes, delivery).await {
            Ok(()) => true,
            Err(e) if is_closed(&e) => false,
            Err(e) => panic!("sending failed: {e}"),
        }
    }

    /// Reads once more from the stream into the inbox; false at end of stream (or reset).
    async fn fill(&mut self, timeout: Duration) -> std::io::Result<bool> {
        if self.ended.is_some() {
            return Ok(false);
        }
        let mut chunk = [0u8; 16 * 1024];
        let read = match tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await {
            Ok(read) => read,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "nothing received within {timeout:?}; unread: {}",
                        escape(&self.inbox)
                    ),
                ))
            }
        };
        match read {
            Ok(0) => {
                self.ended = Some(End::Eof);
                Ok(false)
            }
            Ok(n) => {
                self.inbox.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if is_closed(&e) => {
                self.ended = Some(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    End::Eof
                } else {
                    End::Reset
                });
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one line (without its CRLF or bare LF); `None` once the peer has closed and
    /// no complete line is left.
    pub async fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(lf) = memchr::memchr(b'\n', &self.inbox) {
                let mut line: Vec<u8> = self.inbox.drain(..=lf).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if !self.fill(STEP).await? {
                return Ok(None);
            }
        }
    }

    /// Reads one line as text; end of stream is `UnexpectedEof` naming what was expected.
    pub async fn expect_line(&mut self, what: &str) -> std::io::Result<String> {
        match self.read_line().await? {
            Some(line) => Ok(String::from_utf8_lossy(&line).into_owned()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed while waiting for {what}; unread: {}",
                    escape(&self.inbox)
                ),
            )),
        }
    }

    /// Reads lines until (and including) the one starting with `{tag} `.
    pub async fn read_until_tagged(&mut self, tag: &str) -> std::io::Result<Vec<String>> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = match self.read_line().await? {
                Some(line) => String::from_utf8_lossy(&line).into_owned(),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("connection closed before the reply tagged {tag}; got {lines:?}"),
                    ))
                }
            };
            let done = line.starts_with(&prefix);
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }

    /// Reads lines until one satisfies `done` (returned last).
    pub async fn read_lines_until(
        &mut self,
        done: impl Fn(&str) -> bool,
    ) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let line = match self.read_line().await? {
                Some(line) => String::from_utf8_lossy(&line).into_owned(),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("connection closed before the expected line; got {lines:?}"),
                    ))
                }
            };
            let last = done(&line);
            lines.push(line);
            if last {
                return Ok(lines);
            }
        }
    }

    /// Sends `{tag} {command}\r\n` in one write and reads its reply.
    pub async fn command(&mut self, tag: &str, command: &str) -> std::io::Result<Vec<String>> {
        self.send(format!("{tag} {command}\r\n").as_bytes(), Delivery::Whole)
            .await?;
        self.read_until_tagged(tag).await
    }

    /// Reads until the peer closes (or resets) the connection, at most `within`, and
    /// returns every byte received from now on (the inbox included).
    pub async fn read_to_close(&mut self, within: Duration) -> std::io::Result<(Vec<u8>, End)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the peer did not close within {within:?}; received: {}",
                        escape(&self.inbox)
                    ),
                ));
            }
            if !self.fill(left).await? {
                let end = self.ended.unwrap_or(End::Eof);
                return Ok((std::mem::take(&mut self.inbox), end));
            }
        }
    }

    /// Reads whatever arrives until the inbox satisfies `done` (given all bytes received
    /// and not consumed), within `within`. The inbox is left as it is.
    pub async fn read_until_bytes(
        &mut self,
        within: Duration,
        done: impl Fn(&[u8]) -> bool,
    ) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.inbox) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.fill(left).await? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("expected bytes did not arrive within {within:?} (or the peer closed); received: {}", escape(&self.inbox)),
                ));
            }
        }
        Ok(())
    }

    /// Takes every byte received so far out of the inbox.
    pub fn take_inbox(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbox)
    }

    /// Reads exactly `n` bytes (e.g. an IMAP literal), within [`STEP`] per read; end of
    /// stream first is `UnexpectedEof`.
    pub async fn read_bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.inbox.len() < n {
            if !self.fill(STEP).await? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {} of {n} bytes", self.inbox.len()),
                ));
            }
        }
        Ok(self.inbox.drain(..n).collect())
    }
}

/// Whether an I/O error means the peer is gone (closed or reset the connection).
pub fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected
    )
}

/// A TLS client trusting only the certificates in `ca_path` (the proxy's test PKI).
pub fn tls_connector(ca_path: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_path).expect("read the test CA") {
        roots
            .add(cert.expect("parse the test CA"))
            .expect("add the test CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("valid server name")
}

/// Bytes for a test message: printable ASCII kept, everything else as `\xNN` (CR and LF
/// as `\r`, `\n`), cut after 2,000 bytes.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(2000) {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 2000 {
        out.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    out
}

/// The lines of `bytes` (split at LF, CR stripped), lossily as text.
pub fn lines_of(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect()
}

/// A minimal TLS ClientHello offering only `client_version` (no supported_versions
/// extension, so nothing newer), in a record of `record_version`: `[3, 0]` is SSLv3,
/// `[3, 1]` TLS 1.0, `[3, 2]` TLS 1.1 (SECURITY-CASES case 14).
pub fn legacy_client_hello(record_version: [u8; 2], client_version: [u8; 2]) -> Vec<u8> {
    let mut body = client_version.to_vec();
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 6] = [0x002f, 0x0035, 0x000a, 0xc013, 0xc014, 0x00ff];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16]; // handshake
    record.extend_from_slice(&record_version);
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// SSLv3, TLS 1.0 and TLS 1.1 hellos for [`legacy_client_hello`]: (name, record
/// version, client version).
pub const LEGACY_HELLOS: [(&str, [u8; 2], [u8; 2]); 3] = [
    ("SSLv3", [3, 0], [3, 0]),
    ("TLS 1.0", [3, 1], [3, 1]),
    ("TLS 1.1", [3, 1], [3, 2]),
];

// === SMTP and LMTP replies ===

/// A plaintext raw client.
pub type Plain = RawClient<TcpStream>;

/// A raw client over TLS (implicit, or after STARTTLS).
pub type Tls = RawClient<TlsStream<TcpStream>>;

/// One SMTP or LMTP reply as received: every line in full (`250-…`, `250 …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply code of the first line; 0 when it has none.
    pub fn code(&self) -> u16 {
        self.lines
            .first()
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The code and the enhanced code of the first line: `"550 5.6.0"`, or `"354"` when
    /// the line has no enhanced code.
    pub fn status(&self) -> String {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let code = first.get(..3).unwrap_or(first);
        match first.get(4..).and_then(|t| t.split(' ').next()) {
            Some(word) if is_enhanced_code(word) => format!("{code} {word}"),
            _ => code.to_owned(),
        }
    }

    /// Whether a line contains `text`.
    pub fn mentions(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.contains(text))
    }

    /// EHLO keywords: the first word of every line but the first.
    pub fn keywords(&self) -> Vec<String> {
        self.lines
            .iter()
            .skip(1)
            .filter_map(|l| l.get(4..)?.split(' ').next().map(str::to_owned))
            .collect()
    }

    /// The queue id of Postfix's `250 2.0.0 Ok: queued as ABC123`.
    pub fn queue_id(&self) -> Option<String> {
        let last = self.lines.last()?;
        Some(last.split("queued as ").nth(1)?.trim().to_owned())
    }
}

/// Whether `word` is an enhanced status code (`5.6.0`).
fn is_enhanced_code(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `line` ends its reply (`250 …`, not `250-…`).
pub fn is_last_reply_line(line: &str) -> bool {
    line.as_bytes().get(3) != Some(&b'-')
}

/// The replies in `bytes` (e.g. everything read up to the close).
pub fn replies_in(bytes: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    let mut lines = Vec::new();
    for line in lines_of(bytes) {
        let last = is_last_reply_line(&line);
        lines.push(line);
        if last {
            replies.push(Reply {
                lines: std::mem::take(&mut lines),
            });
        }
    }
    if !lines.is_empty() {
        replies.push(Reply { lines });
    }
    replies
}

/// The [`Reply::status`] of each reply.
pub fn statuses(replies: &[Reply]) -> Vec<String> {
    replies.iter().map(Reply::status).collect()
}

/// Reads one (possibly multi-line) reply; panics if the connection ends first.
pub async fn reply<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>) -> Reply {
    let lines = c
        .read_lines_until(is_last_reply_line)
        .await
        .unwrap_or_else(|e| panic!("an SMTP or LMTP reply: {e}"));
    Reply { lines }
}

/// Reads `n` replies.
pub async fn replies<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    n: usize,
) -> Vec<Reply> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(reply(c).await);
    }
    out
}

/// Sends `line` and CRLF in one write, and reads the reply.
pub async fn command<S: AsyncRead + AsyncWrite + Unpin>(c: &mut RawClient<S>, line: &str) -> Reply {
    c.send(format!("{line}\r\n").as_bytes(), Delivery::Whole)
        .await
        .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    reply(c).await
}

/// [`command`], requiring the status `status`: a code (`"250"`, any 250) or a code and
/// an enhanced code (`"250 2.1.0"`).
pub async fn expect<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    line: &str,
    status: &str,
) -> Reply {
    let r = command(c, line).await;
    assert!(
        r.status() == status || r.code().to_string() == status,
        "{line}: {r:?}, not {status}"
    );
    r
}

/// Sends `bytes` as `delivery` says and reads one reply.
pub async fn sent<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    bytes: &[u8],
    delivery: Delivery,
) -> Reply {
    c.send(bytes, delivery)
        .await
        .unwrap_or_else(|e| panic!("{delivery:?}: send {}: {e}", escape(bytes)));
    reply(c).await
}

/// Sends `bytes` as `delivery` says and requires the next replies to have the statuses
/// `want` (see [`Reply::status`]), in order. Returns them.
pub async fn assert_statuses<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    bytes: &[u8],
    delivery: Delivery,
    want: &[&str],
) -> Vec<Reply> {
    c.send(bytes, delivery)
        .await
        .unwrap_or_else(|e| panic!("{delivery:?}: send {}: {e}", escape(bytes)));
    let got = replies(c, want.len()).await;
    assert_eq!(
        statuses(&got),
        want,
        "{delivery:?} {}: {got:#?}",
        escape(bytes)
    );
    got
}

/// Reads to the close, which must come within `within`, and returns the replies.
pub async fn replies_to_close<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    within: Duration,
) -> Vec<Reply> {
    let (bytes, _) = c
        .read_to_close(within)
        .await
        .unwrap_or_else(|e| panic!("the proxy closes the connection: {e}"));
    replies_in(&bytes)
}

/// Sends a ClientHello the proxy must refuse (e.g. a [`legacy_client_hello`]) as
/// `delivery` says, reads to the close, which must come `within`, and requires
/// [`assert_only_an_alert`].
pub async fn assert_hello_refused<S: AsyncRead + AsyncWrite + Unpin>(
    mut c: RawClient<S>,
    hello: &[u8],
    delivery: Delivery,
    within: Duration,
    plaintext: &[&str],
    what: &str,
) {
    c.send_attack(hello, delivery).await;
    let (bytes, _) = c.read_to_close(within).await.expect("the proxy closes");
    assert_only_an_alert(&bytes, plaintext, what);
}

/// The `openssl` program, if it is on the PATH.
pub fn openssl() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("openssl"))
        .find(|p| p.is_file())
}

/// Runs `openssl s_client -tls1_1` against the implicit-TLS listener `addr` and requires
/// the attempt refused by the server: the handshake fails, openssl says it tried TLS 1.1
/// and got the server's alert (rustls answers a ClientHello without TLS 1.2/1.3 with a
/// handshake_failure alert; not a local refusal), and neither output holds `plaintext`
/// (a word of the protocol's greeting).
pub async fn assert_openssl_tls_1_1_refused(openssl: &Path, addr: SocketAddr, plaintext: &str) {
    let mut command = tokio::process::Command::new(openssl);
    command
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            "localhost",
            "-connect",
        ])
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(STEP * 2, command.output())
        .await
        .expect("openssl s_client finishes")
        .expect("run openssl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the TLS 1.1 handshake succeeded:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Protocol  : TLSv1.1") && stderr.contains("SSL alert number"),
        "expected a TLS 1.1 attempt refused by the server's alert (not a local refusal):\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains(plaintext) && !stderr.contains(plaintext),
        "plaintext leaked:\n{stdout}\n{stderr}"
    );
}

/// Reads to the close, which must come within [`STEP`] and without a single byte: the
/// peer went away (e.g. was killed) without a reply.
pub async fn assert_dropped_without_reply<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut RawClient<S>,
    what: &str,
) {
    let (bytes, _) = c.read_to_close(STEP).await.expect("the connection drops");
    assert!(bytes.is_empty(), "{what}: {}", escape(&bytes));
}

/// Connects and reads the greeting, which must be a 220.
pub async fn greeted(addr: SocketAddr) -> Plain {
    let mut c = RawClient::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let greeting = reply(&mut c).await;
    assert_eq!(greeting.code(), 220, "greeting: {greeting:?}");
    c
}

/// The proxy's answer to a refused TLS handshake: nothing or a TLS alert record, then
/// the close; none of the `plaintext` words of the protocol's own lines.
pub fn assert_only_an_alert(bytes: &[u8], plaintext: &[&str], what: &str) {
    assert!(
        bytes.is_empty() || bytes[0] == 0x15,
        "{what}: expected a TLS alert or nothing: {}",
        escape(bytes)
    );
    let text = String::from_utf8_lossy(bytes);
    for word in plaintext {
        assert!(!text.contains(word), "{what}: {}", escape(bytes));
    }
}
