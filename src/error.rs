//! Errors that end a session, classified by who is at fault, and the one table that maps
//! them to what the client is told.

use std::io;

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client (the IMAP client, the SMTP client, the peer proxy).
    Downstream,
    /// The backend (Dovecot, Postfix).
    Upstream,
    /// The proxy itself: a bug or a resource limit.
    Internal,
}

/// What went wrong; a closed set so it can label metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The peer closed the connection.
    Closed,
    /// Reading or writing failed.
    Io,
    /// A deadline passed (handshake, pre-auth, idle, upstream reply).
    Timeout,
    /// The peer broke the protocol in a way that ends the session.
    Protocol,
    /// A line or literal exceeded its limit.
    TooBig,
    /// The TLS handshake failed.
    Tls,
    /// The upstream could not be reached.
    Connect,
    /// The process is shutting down.
    Shutdown,
    /// Too many failed authentications in one session.
    AuthenticationFailures,
    /// Too many refused commands in one session.
    TooManyErrors,
}

impl ErrorKind {
    pub fn as_label(self) -> &'static str {
        match self {
            ErrorKind::AuthenticationFailures => "authentication_failures",
            ErrorKind::Closed => "closed",
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TooBig => "too_big",
            ErrorKind::TooManyErrors => "too_many_errors",
            ErrorKind::Tls => "tls",
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
#[error("{side:?} {}: {detail}", kind.as_label())]
pub struct SessionError {
    pub side: Side,
    pub kind: ErrorKind,
    pub detail: &'static str,
    #[source]
    pub source: Option<io::Error>,
}

impl SessionError {
    pub fn new(side: Side, kind: ErrorKind, detail: &'static str) -> Self {
        Self {
            side,
            kind,
            detail,
            source: None,
        }
    }

    pub fn io(side: Side, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Self {
            side,
            kind,
            detail: "i/o error",
            source: Some(source),
        }
    }

    /// The untagged `BYE` the client gets before the proxy closes, if it can still be
    /// told anything. This is the only place that chooses these texts.
    pub fn imap_bye(&self) -> Option<&'static str> {
        match (self.side, self.kind) {
            (Side::Downstream, ErrorKind::Closed | ErrorKind::Io | ErrorKind::Tls) => None,
            (Side::Downstream, ErrorKind::Timeout) => Some("* BYE Autologout; idle for too long"),
            (Side::Downstream, ErrorKind::TooBig) => Some("* BYE [TOOBIG] Input exceeds a limit"),
            (Side::Downstream, ErrorKind::AuthenticationFailures) => {
                Some("* BYE [AUTHENTICATIONFAILED] Too many failed authentications")
            }
            // Dovecot's words for the same situation.
            (Side::Downstream, _) => Some("* BYE Too many invalid IMAP commands."),
            (Side::Upstream, ErrorKind::Connect) => {
                Some("* BYE [UNAVAILABLE] Backend server unavailable")
            }
            (Side::Upstream, _) => Some("* BYE [UNAVAILABLE] Backend server connection lost"),
            (Side::Internal, ErrorKind::Shutdown) => {
                Some("* BYE [UNAVAILABLE] Server shutting down")
            }
            (Side::Internal, _) => Some("* BYE [SERVERBUG] Internal error"),
        }
    }

    /// The SMTP reply the client gets before the proxy closes, if it can still be told
    /// anything (RFC 5321 §3.8: 421 when the service closes the channel). This is the
    /// only place that chooses these texts.
    pub fn smtp_reply(&self) -> Option<crate::proto::smtp::reply::Reply> {
        use crate::proto::smtp::reply::Reply;
        let reply = |code, enhanced, text: &str| Some(Reply::new(code, Some(enhanced), text));
        match (self.side, self.kind) {
            (Side::Downstream, ErrorKind::Closed | ErrorKind::Io | ErrorKind::Tls) => None,
            (Side::Downstream, ErrorKind::Timeout) => {
                reply(421, (4, 4, 2), "Error: timeout exceeded; closing")
            }
            (Side::Downstream, ErrorKind::AuthenticationFailures) => reply(
                421,
                (4, 7, 0),
                "Error: too many failed authentications; closing",
            ),
            (Side::Downstream, ErrorKind::TooManyErrors) => {
                reply(421, (4, 7, 0), "Error: too many errors; closing")
            }
            (Side::Downstream, _) => reply(421, (4, 7, 0), "Error: protocol violation; closing"),
            (Side::Upstream, _) => reply(
                421,
                (4, 3, 0),
                "Mail system temporarily unavailable; try again later",
            ),
            (Side::Internal, ErrorKind::Shutdown) => {
                reply(421, (4, 3, 2), "Service shutting down; try again later")
            }
            (Side::Internal, _) => reply(421, (4, 3, 0), "Temporary internal error; closing"),
        }
    }
}
