//! Small async line clients for tests: every network step is bounded by [`STEP`].
//!
//! Naming: this module is `support::io`; inside it `std::io` is spelled out in full.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Upper bound for one network step (connect, one line, one command's reply).
pub const STEP: Duration = Duration::from_secs(5);

/// Runs `fut` under the [`STEP`] timeout and turns a timeout into a `TimedOut` error
/// that names `what`.
pub async fn step<T, F>(what: &str, fut: F) -> std::io::Result<T>
where
    F: Future<Output = std::io::Result<T>>,
{
    match tokio::time::timeout(STEP, fut).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what}: no answer within {STEP:?}"),
        )),
    }
}

/// A CRLF line client (IMAP, LMTP, SMTP) over plain TCP.
///
/// Lines are returned without their CRLF. IMAP literals are not parsed: their bytes come
/// back as ordinary lines, which is enough for the short values tests use.
#[derive(Debug)]
pub struct LineClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl LineClient {
    /// Connects to `addr` (bounded by [`STEP`]).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = step(&format!("connect to {addr}"), TcpStream::connect(addr)).await?;
        // Without it a command written in two pieces waits for a delayed ACK (~40 ms).
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer,
        })
    }

    /// Connects, checks the greeting and logs in as `user` (password `secret-<user>`, the
    /// test Dovecot's convention), asserting the OK.
    pub async fn logged_in(addr: SocketAddr, user: &str) -> Self {
        let mut client = Self::connect(addr).await.expect("connect");
        let greeting = client.read_line().await.expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        let reply = client
            .imap("login", &format!("LOGIN {user} secret-{user}"))
            .await
            .expect("login");
        assert_eq!(tagged_status(&reply), "OK", "LOGIN {user}: {reply:?}");
        client
    }

    /// Wraps an already connected stream (e.g. one bound to a chosen source address).
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Reads one line; end of stream is `UnexpectedEof`.
    pub async fn read_line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = step("read a line", async {
            self.reader.read_until(b'\n', &mut buf).await
        })
        .await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed the connection",
            ));
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Writes bytes exactly as given (no CRLF added).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        step("write bytes", async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        })
        .await
    }

    /// Writes `line` followed by CRLF.
    pub async fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        step("write a line", async {
            self.writer.write_all(line.as_bytes()).await?;
            self.writer.write_all(b"\r\n").await?;
            self.writer.flush().await
        })
        .await
    }

    /// Sends `{tag} {command}` and returns every line up to and including the tagged
    /// completion line (use [`tagged_status`] on the last one).
    pub async fn imap(&mut self, tag: &str, command: &str) -> std::io::Result<Vec<String>> {
        self.write_line(&format!("{tag} {command}")).await?;
        self.read_until_tagged(tag).await
    }

    /// Reads lines until the one that starts with `{tag} `.
    pub async fn read_until_tagged(&mut self, tag: &str) -> std::io::Result<Vec<String>> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let done = line.starts_with(&prefix);
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }
}

/// The status word (`OK`, `NO`, `BAD`) of a tagged completion, i.e. of the last line of
/// [`LineClient::imap`]'s answer. Empty when there is no line.
pub fn tagged_status(lines: &[String]) -> &str {
    lines
        .last()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("")
}
