//! The far end of an SMTP or LMTP conversation the proxy answers itself (a submission
//! client, Postfix delivering by LMTP): command lines in through a strict CRLF framer,
//! replies out through a buffer written only when the session would wait for the peer,
//! so a pipelined group of commands gets its replies in one write (RFC 2920).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::shutdown::{Phase, Shutdown};
use crate::error::{ErrorKind, SessionError, Side};
use crate::proto::smtp::line::{LineError, LineFramer};
use crate::proto::smtp::reply::Reply;

/// How the errors of a read name the peer ("client closed the connection", "Postfix too
/// slow").
pub struct PeerErrors {
    pub closed: &'static str,
    pub too_slow: &'static str,
}

/// How long [`LinePeer::read_command`] and [`LinePeer::read_line`] may wait.
#[derive(Clone, Copy, Debug)]
pub enum Deadline {
    /// One instant for the whole line, however many reads it takes: a peer that trickles
    /// a byte now and then cannot extend it.
    At(Instant),
    /// A fresh timeout for every read: the peer only has to keep sending.
    EachRead(Duration),
}

/// The peer's stream, the framer its lines go through, and the replies not yet written.
pub struct LinePeer<S> {
    stream: S,
    framer: LineFramer,
    read_buf: BytesMut,
    /// How much room each read makes in `read_buf`.
    read_chunk: usize,
    /// Replies not yet written.
    out: Vec<u8>,
    shutdown: Shutdown,
    errors: PeerErrors,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LinePeer<S> {
    /// `max_line` bounds a command line, CRLF included.
    pub fn new(
        stream: S,
        max_line: usize,
        read_chunk: usize,
        shutdown: Shutdown,
        errors: PeerErrors,
    ) -> Self {
        Self {
            stream,
            framer: LineFramer::new(max_line),
            read_buf: BytesMut::with_capacity(read_chunk),
            read_chunk,
            out: Vec::new(),
            shutdown,
            errors,
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, to replace it (STARTTLS).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The framer, for its limit and for the bytes it holds beyond the current line
    /// (message data, pipelining after STARTTLS).
    pub fn framer_mut(&mut self) -> &mut LineFramer {
        &mut self.framer
    }

    /// Queues a reply; it is written at the next [`LinePeer::flush`] or read.
    pub fn reply(&mut self, reply: &Reply) {
        reply.encode(&mut self.out);
    }

    /// Writes the queued replies.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| SessionError::io(Side::Downstream, e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| SessionError::io(Side::Downstream, e))
    }

    /// Ends the conversation on the proxy's side: queues the reply the session's error
    /// calls for ([`SessionError::smtp_reply`]: a 421, unless the connection itself
    /// failed), then writes what is queued, as far as the peer still reads.
    pub async fn finish(&mut self, result: &Result<(), SessionError>) {
        if let Err(e) = result {
            if let Some(reply) = e.smtp_reply() {
                self.reply(&reply);
            }
        }
        // Best effort: the peer may be gone.
        let _ = self.flush().await;
    }

    /// The next command line; queued replies are written before waiting. `None`: the
    /// line was too long and has been discarded (the session answers it and goes on).
    ///
    /// A bare CR or LF ends the session (SECURITY-CASES §A): it is not a line end the
    /// proxy and the backend behind it could be trusted to agree on, so the proxy closes
    /// rather than guess.
    pub async fn read_command(
        &mut self,
        deadline: Deadline,
    ) -> Result<Option<Bytes>, SessionError> {
        match self.read_line(deadline).await? {
            Ok(line) => Ok(Some(line)),
            Err(LineError::TooLong) => Ok(None),
            Err(LineError::BareCr | LineError::BareLf) => Err(SessionError::new(
                Side::Downstream,
                ErrorKind::Protocol,
                "bare CR or LF in a command",
            )),
        }
    }

    /// The next line as the framer gives it; queued replies are written before waiting.
    /// The inner `Err` is a line the framer refused, the outer one ends the session.
    pub async fn read_line(
        &mut self,
        deadline: Deadline,
    ) -> Result<Result<Bytes, LineError>, SessionError> {
        loop {
            if let Some(line) = self.framer.next_line() {
                return Ok(line);
            }
            let until = match deadline {
                Deadline::At(instant) => instant,
                Deadline::EachRead(timeout) => Instant::now() + timeout,
            };
            let bytes = self.read(until).await?;
            self.framer.push(&bytes);
        }
    }

    /// Writes the queued replies, then reads what the peer sends next, until `deadline`
    /// or the end of the grace period at shutdown.
    pub async fn read(&mut self, deadline: Instant) -> Result<BytesMut, SessionError> {
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.reserve(self.read_chunk);
        let read = self.read_into(&mut buf, deadline).await;
        self.read_buf = buf;
        read.map(|()| self.read_buf.split())
    }

    /// [`LinePeer::read`] into the caller's buffer (a receiver's input buffer, so that
    /// nothing is copied out of it), which should have room for a read's worth.
    pub async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        deadline: Instant,
    ) -> Result<(), SessionError> {
        self.flush().await?;
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, self.stream.read_buf(buf)) => read,
            () = self.shutdown.reached(Phase::Closing) => {
                return Err(SessionError::new(Side::Internal, ErrorKind::Shutdown, "shutting down"));
            }
        };
        match read {
            Ok(Ok(0)) => Err(SessionError::new(
                Side::Downstream,
                ErrorKind::Closed,
                self.errors.closed,
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SessionError::io(Side::Downstream, e)),
            Err(_) => Err(SessionError::new(
                Side::Downstream,
                ErrorKind::Timeout,
                self.errors.too_slow,
            )),
        }
    }
}
