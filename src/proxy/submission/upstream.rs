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
//! and ends this connection (the session reconnects for the next transaction); a 421
//! from Postfix counts as such a failure ([`SmtpClient`]).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{ErrorKind, SessionError, Side};
use crate::net::connect::Connector;
use crate::net::smtp::SmtpClient;
use crate::proto::smtp::command::Command;
use crate::proto::smtp::reply::Reply;

/// What Postfix is told about the client with XCLIENT.
#[derive(Clone, Debug)]
pub struct ClientFacts {
    pub peer: SocketAddr,
    /// The client's EHLO/HELO name, if it sent one.
    pub helo: Option<String>,
    /// The SASL login after a successful AUTH.
    pub login: Option<String>,
}

/// One connection to Postfix, set up and ready for a command: an [`SmtpClient`] plus what
/// Postfix advertised.
pub struct Postfix {
    client: SmtpClient,
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
        let mut smtp = SmtpClient::connect(connector, reply_timeout).await?;
        let xclient = Command::Xclient(xclient_attributes(client));
        let reply = smtp.command(&xclient).await?;
        if reply.code != 220 {
            // Postfix answers 550 5.7.0 when the proxy is not in
            // smtpd_authorized_xclient_hosts: a configuration error worth its own log line.
            tracing::warn!(code = reply.code, text = %reply.lines.join(" "), "Postfix refused XCLIENT; authorize the proxy in smtpd_authorized_xclient_hosts");
            return Err(protocol("Postfix refused XCLIENT"));
        }
        let reply = smtp
            .expect(
                &Command::Ehlo(hostname.to_owned()),
                250,
                "Postfix refused EHLO",
            )
            .await?;
        Ok(Postfix {
            client: smtp,
            keywords: reply.lines.into_iter().skip(1).collect(),
        })
    }

    /// The EHLO keyword lines Postfix advertised to the proxy.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, command: &Command) -> Result<Reply, SessionError> {
        self.client.command(command).await
    }

    /// Sends `commands` in one write and reads a reply to each, in order (RFC 2920
    /// PIPELINING; only when [`Postfix::pipelining`]).
    pub async fn commands(&mut self, commands: &[&Command]) -> Result<Vec<Reply>, SessionError> {
        self.client.commands(commands).await
    }

    /// Whether Postfix closed this idle connection, or is closing it ([`SmtpClient::went_away`]).
    pub fn went_away(&mut self) -> bool {
        self.client.went_away()
    }

    /// Whether Postfix offered PIPELINING (it does unless an operator turned it off).
    pub fn pipelining(&self) -> bool {
        self.keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case("PIPELINING"))
    }

    /// Sends a raw line (a SASL response, `*`), CRLF included by the caller.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.client.send(bytes).await
    }

    /// Writes message bytes, gathered from `parts`, without flushing.
    pub async fn write_parts(&mut self, parts: &[Bytes]) -> Result<(), SessionError> {
        self.client.write_parts(parts).await
    }

    /// Writes message bytes, gathered from `parts`, and flushes them.
    pub async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), SessionError> {
        self.client.send_parts(parts).await
    }

    /// Sends a spooled message dot-stuffed, with the end-of-data line.
    pub async fn send_stuffed(
        &mut self,
        message: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<(), SessionError> {
        self.client.send_stuffed(message).await
    }

    /// Reads the next complete reply under the reply timeout.
    pub async fn reply(&mut self) -> Result<Reply, SessionError> {
        self.client.reply().await
    }

    /// Says QUIT without waiting long for the answer.
    pub async fn quit(self) {
        self.client.quit().await;
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
