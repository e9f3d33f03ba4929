//! The proxy's SMTP client towards Postfix's submission listener.
//!
//! Each connection is set up the same way: read the greeting, `XCLIENT` the real client
//! (address, port, HELO name and, once known, the SASL login), read the new greeting,
//! `EHLO`. XCLIENT is what keeps Postfix from trusting the proxy's loopback address
//! (SECURITY-CASES §D): Postfix applies its restrictions, rate limits and logs to the
//! real client, and `LOGIN=` lets a reconnect after an aborted message stay
//! authenticated without the proxy keeping the password (Postfix marks the session
//! SASL-authenticated, `sasl_method=XCLIENT`).
//!
//! Every read of a reply runs under the reply timeout; every failure is the upstream's
//! and ends this connection (the session reconnects for the next transaction).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ErrorKind, SessionError, Side};
use crate::net::connect::Connector;
use crate::net::stream::MaybeTls;
use crate::proto::smtp::command::Command;
use crate::proto::smtp::line::{LineFramer, REPLY_LINE_MAX};
use crate::proto::smtp::reply::{Reply, ReplyParser};

/// What Postfix is told about the client with XCLIENT.
#[derive(Clone, Debug)]
pub struct ClientFacts {
    pub peer: SocketAddr,
    /// The client's EHLO/HELO name, if it sent one.
    pub helo: Option<String>,
    /// The SASL login after a successful AUTH.
    pub login: Option<String>,
}

/// One connection to Postfix, set up and ready for a command.
pub struct Postfix {
    stream: MaybeTls,
    framer: LineFramer,
    parser: ReplyParser,
    reply_timeout: Duration,
    /// The EHLO keyword lines of Postfix's reply (greeting line excluded).
    keywords: Vec<String>,
}

impl Postfix {
    /// Connects and runs greeting, XCLIENT and EHLO.
    pub async fn connect(
        connector: &Connector,
        hostname: &str,
        client: &ClientFacts,
        reply_timeout: Duration,
    ) -> Result<Postfix, SessionError> {
        let stream = connector.connect().await?;
        let mut postfix = Postfix {
            stream,
            framer: LineFramer::new(REPLY_LINE_MAX),
            parser: ReplyParser::new(),
            reply_timeout,
            keywords: Vec::new(),
        };
        postfix.expect(220, "no 220 greeting from Postfix").await?;
        let xclient = Command::Xclient(xclient_attributes(client));
        let reply = postfix.command(&xclient).await?;
        if reply.code != 220 {
            // Postfix answers 550 5.7.0 when the proxy is not in
            // smtpd_authorized_xclient_hosts: a configuration error worth its own log line.
            tracing::warn!(code = reply.code, text = %reply.lines.join(" "), "Postfix refused XCLIENT; authorize the proxy in smtpd_authorized_xclient_hosts");
            return Err(protocol("Postfix refused XCLIENT"));
        }
        let reply = postfix.command(&Command::Ehlo(hostname.to_owned())).await?;
        if reply.code != 250 {
            return Err(protocol("Postfix refused EHLO"));
        }
        postfix.keywords = reply.lines.into_iter().skip(1).collect();
        Ok(postfix)
    }

    /// The EHLO keyword lines Postfix advertised to the proxy.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, command: &Command) -> Result<Reply, SessionError> {
        let bytes = command.to_bytes().map_err(|_| {
            SessionError::new(Side::Internal, ErrorKind::Protocol, "unencodable command")
        })?;
        self.send(&bytes).await?;
        self.reply().await
    }

    /// Sends a raw line (a SASL response, `*`), CRLF included by the caller.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.reply_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionError::io(Side::Upstream, e)),
            Err(_) => Err(timeout()),
        }
    }

    /// Writes message bytes without flushing each piece (the caller flushes at the end
    /// through [`Postfix::send`] or [`Postfix::reply`]).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        match tokio::time::timeout(self.reply_timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionError::io(Side::Upstream, e)),
            Err(_) => Err(timeout()),
        }
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

    async fn expect(&mut self, code: u16, detail: &'static str) -> Result<Reply, SessionError> {
        let reply = self.reply().await?;
        if reply.code == code {
            Ok(reply)
        } else {
            Err(protocol(detail))
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, SessionError> {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            while let Some(line) = self.framer.next_line() {
                let line = line.map_err(|_| protocol("malformed reply line from Postfix"))?;
                match self.parser.push_line(&line) {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => {}
                    Err(_) => return Err(protocol("malformed reply from Postfix")),
                }
            }
            buf.clear();
            let n = self
                .stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| SessionError::io(Side::Upstream, e))?;
            if n == 0 {
                return Err(SessionError::new(
                    Side::Upstream,
                    ErrorKind::Closed,
                    "Postfix closed the connection",
                ));
            }
            self.framer.push(&buf);
        }
    }
}

/// `XCLIENT ADDR=.. PORT=.. NAME=[UNAVAILABLE] PROTO=ESMTP [HELO=..] [LOGIN=..]`. NAME is
/// unavailable because the proxy does no reverse lookups (Postfix would otherwise keep
/// the proxy's own name); IPv6 addresses take Postfix's `IPV6:` prefix.
fn xclient_attributes(client: &ClientFacts) -> Vec<(String, String)> {
    let addr = match client.peer {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPV6:{}", v6.ip()),
        },
    };
    let mut attributes = vec![
        ("ADDR".to_owned(), addr),
        ("PORT".to_owned(), client.peer.port().to_string()),
        ("NAME".to_owned(), "[UNAVAILABLE]".to_owned()),
        ("PROTO".to_owned(), "ESMTP".to_owned()),
    ];
    if let Some(helo) = &client.helo {
        attributes.push(("HELO".to_owned(), helo.clone()));
    }
    if let Some(login) = &client.login {
        attributes.push(("LOGIN".to_owned(), login.clone()));
    }
    attributes
}

fn protocol(detail: &'static str) -> SessionError {
    SessionError::new(Side::Upstream, ErrorKind::Protocol, detail)
}

fn timeout() -> SessionError {
    SessionError::new(
        Side::Upstream,
        ErrorKind::Timeout,
        "Postfix did not answer in time",
    )
}
