//! An SMTP or LMTP client connection to a backend (Postfix, Dovecot's LMTP): greeting,
//! commands and their replies, message bytes. Every read of a reply runs under the
//! reply timeout; every failure is the upstream's and ends the connection, and so does
//! a 421 reply (the server closing the channel), which is reported as a failure rather
//! than relayed as an answer.

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::Connector;
use super::stream::MaybeTls;
use crate::error::{ErrorKind, SessionError, Side};
use crate::proto::smtp::command::Command;
use crate::proto::smtp::line::{LineFramer, REPLY_LINE_MAX};
use crate::proto::smtp::reply::{Reply, ReplyParser};

/// One connection, past its 220 greeting.
pub struct SmtpClient {
    stream: MaybeTls,
    framer: LineFramer,
    parser: ReplyParser,
    read_buf: BytesMut,
    reply_timeout: Duration,
}

impl SmtpClient {
    /// Connects and reads the 220 greeting.
    pub async fn connect(
        connector: &Connector,
        reply_timeout: Duration,
    ) -> Result<SmtpClient, SessionError> {
        let stream = connector.connect().await?;
        let mut client = SmtpClient {
            stream,
            framer: LineFramer::new(REPLY_LINE_MAX),
            parser: ReplyParser::new(),
            read_buf: BytesMut::with_capacity(4096),
            reply_timeout,
        };
        let greeting = client.reply().await?;
        if greeting.code != 220 {
            return Err(protocol("no 220 greeting"));
        }
        Ok(client)
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, command: &Command) -> Result<Reply, SessionError> {
        let bytes = command.to_bytes().map_err(|_| {
            SessionError::new(Side::Internal, ErrorKind::Protocol, "unencodable command")
        })?;
        self.send(&bytes).await?;
        self.reply().await
    }

    /// Sends `commands` in one write (the server must offer PIPELINING) and reads one
    /// reply per command, in order.
    pub async fn commands(&mut self, commands: &[&Command]) -> Result<Vec<Reply>, SessionError> {
        let mut bytes = Vec::new();
        for command in commands {
            bytes.extend_from_slice(&command.to_bytes().map_err(|_| {
                SessionError::new(Side::Internal, ErrorKind::Protocol, "unencodable command")
            })?);
        }
        self.send(&bytes).await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.reply().await?);
        }
        Ok(replies)
    }

    /// Sends a command and fails unless the reply has `code`.
    pub async fn expect(
        &mut self,
        command: &Command,
        code: u16,
        detail: &'static str,
    ) -> Result<Reply, SessionError> {
        let reply = self.command(command).await?;
        if reply.code == code {
            Ok(reply)
        } else {
            Err(protocol(detail))
        }
    }

    /// Writes bytes and flushes them.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        within(self.reply_timeout, write).await
    }

    /// Writes message bytes without flushing each piece ([`SmtpClient::send`] flushes).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        within(self.reply_timeout, self.stream.write_all(bytes)).await
    }

    /// Writes `parts` in order without flushing, in as few system calls as the stream
    /// takes (a gathering write), so that the parts need not be copied together first.
    pub async fn write_parts(&mut self, parts: &[Bytes]) -> Result<(), SessionError> {
        within(self.reply_timeout, write_all_parts(&mut self.stream, parts)).await
    }

    /// [`SmtpClient::write_parts`], then a flush.
    pub async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), SessionError> {
        let write = async {
            write_all_parts(&mut self.stream, parts).await?;
            self.stream.flush().await
        };
        within(self.reply_timeout, write).await
    }

    /// Copies a message (unstuffed, e.g. from a spool) dot-stuffed, then the end-of-data
    /// line; the reply is the caller's to read. A read failure is the proxy's own.
    pub async fn send_stuffed(
        &mut self,
        mut message: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<(), SessionError> {
        use tokio::io::AsyncReadExt;
        const CHUNK: usize = 64 * 1024;
        let mut stuffer = crate::proto::smtp::data::DotStuffer::new();
        let mut buf = vec![0u8; CHUNK];
        let mut out = bytes::BytesMut::with_capacity(CHUNK + CHUNK / 16);
        loop {
            let n = message
                .read(&mut buf)
                .await
                .map_err(|e| SessionError::io(Side::Internal, e))?;
            if n == 0 {
                break;
            }
            stuffer.stuff(&buf[..n], &mut out);
            self.write(&out).await?;
            out.clear();
        }
        stuffer.finish(&mut out);
        self.send(&out).await
    }

    /// Whether the server went away while the connection was idle: it closed, or said
    /// something nobody asked for (the 421 a server sends before closing an idle
    /// connection). Checked without waiting: at most one read, which returns at once.
    pub fn went_away(&mut self) -> bool {
        // Bytes after the last reply: something unasked has already arrived.
        if self.framer.buffered() > 0 {
            return true;
        }
        let mut probe = [0u8; 512];
        let mut read = std::pin::pin!(self.stream.read(&mut probe));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        // Pending: nothing to read, the connection is as it was.
        std::future::Future::poll(read.as_mut(), &mut context).is_ready()
    }

    /// Reads the next complete reply under the reply timeout.
    pub async fn reply(&mut self) -> Result<Reply, SessionError> {
        match tokio::time::timeout(self.reply_timeout, self.read_reply()).await {
            Ok(result) => result,
            Err(_) => Err(timeout()),
        }
    }

    /// Says QUIT without waiting long for the answer: the connection is done either way.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if self.send(b"QUIT\r\n").await.is_ok() {
                let _ = self.read_reply().await;
            }
        })
        .await;
    }

    async fn read_reply(&mut self) -> Result<Reply, SessionError> {
        loop {
            while let Some(line) = self.framer.next_line() {
                let line = line.map_err(|_| protocol("malformed reply line"))?;
                match self.parser.push_line(&line) {
                    // RFC 5321 §3.8: 421 means the server is closing the channel, whatever
                    // command it answers (Dovecot says it unasked when it shuts down):
                    // this connection is done.
                    Ok(Some(reply)) if reply.code == 421 => {
                        return Err(SessionError::new(
                            Side::Upstream,
                            ErrorKind::Closed,
                            "the backend is closing the connection (421)",
                        ))
                    }
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => {}
                    Err(_) => return Err(protocol("malformed reply")),
                }
            }
            self.read_buf.clear();
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| SessionError::io(Side::Upstream, e))?;
            if n == 0 {
                return Err(SessionError::new(
                    Side::Upstream,
                    ErrorKind::Closed,
                    "the backend closed the connection",
                ));
            }
            self.framer.push(&self.read_buf);
        }
    }
}

fn protocol(detail: &'static str) -> SessionError {
    SessionError::new(Side::Upstream, ErrorKind::Protocol, detail)
}

fn timeout() -> SessionError {
    SessionError::new(
        Side::Upstream,
        ErrorKind::Timeout,
        "the backend did not answer in time",
    )
}

/// Runs one write to the backend under `limit`: its failure, or running out of time, is
/// the upstream's.
async fn within(
    limit: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), SessionError> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SessionError::io(Side::Upstream, e)),
        Err(_) => Err(timeout()),
    }
}

/// Writes every byte of `parts`, in order, with gathering writes.
async fn write_all_parts(stream: &mut MaybeTls, parts: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| IoSlice::new(part))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let written = stream.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}
