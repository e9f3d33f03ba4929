//! What can go wrong when the writer talks to Dovecot, who is at fault, and whether the
//! caller should answer with a temporary (4xx) or a permanent (5xx) reply.

use std::fmt;
use std::io;

use crate::error::Side;
use crate::proto::imap::client::ArgumentError;

/// Why a writer operation failed.
///
/// [`WriterError::side`] says who is at fault and [`WriterError::is_transient`] chooses
/// the SMTP/LMTP reply class. Only Dovecot's tagged OK makes a write count
/// (SECURITY-CASES §4 rule 7): every error means "not stored", except that a connection
/// lost after the command was complete on the wire leaves the outcome unknown, which the
/// transient class covers (the sender retries; receivers de-duplicate).
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// Dovecot refused the master login (wrong master password, unknown user, master
    /// passdb missing).
    #[error("Dovecot refused the master login for the user: {refusal}")]
    AuthFailed { refusal: Refusal },
    /// The APPEND body did not match its announced length or could not be read; the
    /// connection was aborted mid-literal, so Dovecot stored nothing.
    #[error("message body: {0}")]
    Body(#[source] BodyError),
    /// Dovecot said `* BYE` (shutdown, autologout, too many connections) and closed.
    #[error("Dovecot closed the connection: BYE {text}")]
    Bye { text: String },
    /// The connection broke (reset, end of stream, I/O error) before the tagged reply.
    #[error("connection to Dovecot lost")]
    Closed {
        #[source]
        source: Option<io::Error>,
    },
    /// Dovecot could not be reached: TCP refused or timed out, or the TLS handshake
    /// failed, all within the connect timeout.
    #[error("Dovecot unreachable: {detail}")]
    Connect {
        detail: &'static str,
        #[source]
        source: Option<io::Error>,
    },
    /// The caller passed a value with no IMAP form (a flag with a space, UID 0, ...).
    /// Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] ArgumentError),
    /// Every connection slot stayed busy for the connect timeout.
    #[error("no free connection to Dovecot within the timeout")]
    PoolTimeout,
    /// Dovecot's response broke the protocol; the connection is closed.
    #[error("Dovecot broke the IMAP protocol: {0}")]
    Protocol(ProtocolViolation),
    /// Dovecot answered the command with a tagged NO or BAD.
    #[error("Dovecot refused {command}: {refusal}")]
    Refused {
        command: &'static str,
        refusal: Refusal,
    },
    /// A response exceeded `max_response_bytes`; it was read and discarded, the
    /// connection is still usable.
    #[error("response larger than {limit} bytes")]
    ResponseTooLarge { limit: usize },
    /// An earlier error on this session closed its connection.
    #[error("the session's connection was closed by an earlier error")]
    SessionBroken,
    /// Dovecot did not answer (or take our bytes) within the reply timeout.
    #[error("Dovecot did not answer within the timeout ({waiting_for})")]
    Timeout { waiting_for: &'static str },
    /// Dovecot lacks a capability the writer needs (`UIDPLUS`, for APPENDUID).
    #[error("Dovecot does not support {capability}")]
    Unsupported { capability: &'static str },
}

impl WriterError {
    /// Who is at fault.
    ///
    /// - Upstream: Dovecot unreachable, slow, refusing, closing or misbehaving.
    /// - Downstream: the message source (the SMTP client or peer proxy whose body was
    ///   short, long or stalled).
    /// - Internal: the proxy's own limits and arguments.
    pub fn side(&self) -> Side {
        match self {
            WriterError::AuthFailed { .. }
            | WriterError::Bye { .. }
            | WriterError::Closed { .. }
            | WriterError::Connect { .. }
            | WriterError::Protocol(_)
            | WriterError::Refused { .. }
            | WriterError::Timeout { .. }
            | WriterError::Unsupported { .. } => Side::Upstream,
            WriterError::Body(_) => Side::Downstream,
            WriterError::InvalidArgument(_)
            | WriterError::PoolTimeout
            | WriterError::ResponseTooLarge { .. }
            | WriterError::SessionBroken => Side::Internal,
        }
    }

    /// Whether a later retry may succeed, i.e. whether the caller should answer with a
    /// temporary failure (SMTP/LMTP 4xx, QUIC `TempFail`) rather than a permanent one
    /// (5xx, `Rejected`).
    ///
    /// | error | class | why |
    /// |---|---|---|
    /// | `Connect`, `Timeout`, `Closed`, `Bye`, `PoolTimeout`, `SessionBroken` | 4xx | Dovecot down, busy or restarting |
    /// | `Protocol`, `Unsupported` | 4xx | a backend fault an operator fixes; the message must wait, not bounce |
    /// | `AuthFailed` | 4xx | almost always our master credentials (configuration); an unknown user is caught earlier, at RCPT |
    /// | `Body` | 4xx | nothing was stored; the sender may send it again |
    /// | `Refused`, BAD | 4xx | a command we built was wrong: a proxy bug, not the message's fault |
    /// | `Refused`, NO, see [`ResponseCode::is_transient`] | by code | `OVERQUOTA`, `INUSE`, `SERVERBUG`, `UNAVAILABLE`, ... 4xx; `TRYCREATE`, `NONEXISTENT`, `CANNOT`, `NOPERM`, `TOOBIG`, `LIMIT`, ... 5xx |
    /// | `Refused`, NO without a code | 4xx | unknown cause: delaying costs less than bouncing |
    /// | `InvalidArgument`, `ResponseTooLarge` | 5xx | the same request fails the same way again |
    pub fn is_transient(&self) -> bool {
        match self {
            WriterError::Refused { refusal, .. } => refusal.is_transient(),
            WriterError::InvalidArgument(_) | WriterError::ResponseTooLarge { .. } => false,
            WriterError::AuthFailed { .. }
            | WriterError::Body(_)
            | WriterError::Bye { .. }
            | WriterError::Closed { .. }
            | WriterError::Connect { .. }
            | WriterError::PoolTimeout
            | WriterError::Protocol(_)
            | WriterError::SessionBroken
            | WriterError::Timeout { .. }
            | WriterError::Unsupported { .. } => true,
        }
    }

    /// The response code of Dovecot's refusal (`TRYCREATE`, `OVERQUOTA`, ...), if any.
    pub fn response_code(&self) -> Option<&ResponseCode> {
        match self {
            WriterError::Refused { refusal, .. } | WriterError::AuthFailed { refusal } => {
                refusal.code.as_ref()
            }
            _ => None,
        }
    }

    /// A closed label for metrics and logs.
    pub fn as_label(&self) -> &'static str {
        match self {
            WriterError::AuthFailed { .. } => "auth_failed",
            WriterError::Body(_) => "body",
            WriterError::Bye { .. } => "bye",
            WriterError::Closed { .. } => "closed",
            WriterError::Connect { .. } => "connect",
            WriterError::InvalidArgument(_) => "invalid_argument",
            WriterError::PoolTimeout => "pool_timeout",
            WriterError::Protocol(_) => "protocol",
            WriterError::Refused { refusal, .. } => match refusal.status {
                RefusalStatus::Bad => "bad",
                RefusalStatus::No => "no",
            },
            WriterError::ResponseTooLarge { .. } => "response_too_large",
            WriterError::SessionBroken => "session_broken",
            WriterError::Timeout { .. } => "timeout",
            WriterError::Unsupported { .. } => "unsupported",
        }
    }
}

/// What was wrong with an APPEND body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body went on after the announced length.
    #[error("longer than the announced {expected} bytes")]
    Long { expected: u64 },
    /// Reading the body failed.
    #[error("reading failed")]
    Read(#[source] io::Error),
    /// The body ended before the announced length.
    #[error("ended after {received} of the announced {expected} bytes")]
    Short { expected: u64, received: u64 },
    /// The body made no progress within the reply timeout.
    #[error("no progress within the timeout")]
    Stalled,
}

/// How Dovecot broke the protocol. No free text: Dovecot's bytes are not repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// A line ended in LF without CR.
    #[error("bare LF")]
    BareLf,
    /// The greeting was neither `* OK` nor `* BYE`.
    #[error("unexpected greeting")]
    BadGreeting,
    /// A FETCH response did not follow the grammar.
    #[error("malformed FETCH response")]
    MalformedFetch,
    /// A METADATA response did not follow the grammar.
    #[error("malformed METADATA response")]
    MalformedMetadata,
    /// A response line could not be classified.
    #[error("malformed response")]
    MalformedResponse,
    /// A SEARCH response held something other than numbers.
    #[error("malformed SEARCH response")]
    MalformedSearch,
    /// A tagged OK to APPEND without a valid `APPENDUID` code, although UIDPLUS is
    /// advertised.
    #[error("APPEND OK without APPENDUID")]
    MissingAppendUid,
    /// A `+` continuation where none was asked for.
    #[error("unexpected continuation")]
    UnexpectedContinuation,
    /// `* PREAUTH` in the greeting: the writer must log in as the user itself.
    #[error("unexpected PREAUTH")]
    UnexpectedPreauth,
    /// A tagged reply to a command that was never sent (the writer never pipelines).
    #[error("reply with an unknown tag")]
    UnexpectedTag,
}

/// Dovecot's tagged NO or BAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// NO or BAD.
    pub status: RefusalStatus,
    /// The response code, e.g. `TRYCREATE`.
    pub code: Option<ResponseCode>,
    /// The human-readable text (controls replaced, length bounded).
    pub text: String,
}

impl Refusal {
    /// See [`WriterError::is_transient`].
    pub fn is_transient(&self) -> bool {
        match (self.status, &self.code) {
            (RefusalStatus::Bad, _) | (RefusalStatus::No, None) => true,
            (RefusalStatus::No, Some(code)) => code.is_transient(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            RefusalStatus::Bad => "BAD",
            RefusalStatus::No => "NO",
        };
        match &self.code {
            Some(code) => write!(f, "{status} [{code}] {}", self.text),
            None => write!(f, "{status} {}", self.text),
        }
    }
}

/// The status of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalStatus {
    /// The command was malformed or not valid in this state.
    Bad,
    /// The command was understood and refused.
    No,
}

/// A response code (RFC 5530 and extensions), owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseCode {
    /// The atom, upper-cased (`TRYCREATE`).
    pub name: String,
    /// Whatever follows the atom inside the brackets.
    pub args: String,
}

impl ResponseCode {
    /// Codes after which a retry may succeed without anyone changing the request: the
    /// user frees quota, a lock is released, Dovecot recovers. Every other known code
    /// means the request itself cannot succeed (`TRYCREATE`, `NONEXISTENT`, `CANNOT`,
    /// `NOPERM`, `TOOBIG`, `LIMIT`, `ALREADYEXISTS`, `PARSE`, `BADCHARSET`, ...);
    /// unknown codes count as transient, like a NO without a code.
    const TRANSIENT: &'static [&'static str] = &[
        "CONTACTADMIN",
        "CORRUPTION",
        "EXPUNGEISSUED",
        "INUSE",
        "OVERQUOTA",
        "SERVERBUG",
        "UNAVAILABLE",
    ];
    const PERMANENT: &'static [&'static str] = &[
        "ALREADYEXISTS",
        "AUTHENTICATIONFAILED",
        "AUTHORIZATIONFAILED",
        "BADCHARSET",
        "CANNOT",
        "CLIENTBUG",
        "EXPIRED",
        "LIMIT",
        "NONEXISTENT",
        "NOPERM",
        "PARSE",
        "PRIVACYREQUIRED",
        "TOOBIG",
        "TRYCREATE",
    ];

    /// Whether the code has this name (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// See [`WriterError::is_transient`].
    pub fn is_transient(&self) -> bool {
        if Self::TRANSIENT.iter().any(|c| self.is(c)) {
            return true;
        }
        !Self::PERMANENT.iter().any(|c| self.is(c))
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.args.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{} {}", self.name, self.args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(code: Option<&str>) -> WriterError {
        WriterError::Refused {
            command: "APPEND",
            refusal: Refusal {
                status: RefusalStatus::No,
                code: code.map(|c| ResponseCode {
                    name: c.into(),
                    args: String::new(),
                }),
                text: "x".into(),
            },
        }
    }

    #[test]
    fn reply_class_by_response_code() {
        for transient in [
            "OVERQUOTA",
            "INUSE",
            "SERVERBUG",
            "UNAVAILABLE",
            "overquota",
            "NEWCODE",
        ] {
            assert!(no(Some(transient)).is_transient(), "{transient}");
        }
        for permanent in [
            "TRYCREATE",
            "NONEXISTENT",
            "CANNOT",
            "NOPERM",
            "TOOBIG",
            "LIMIT",
        ] {
            assert!(!no(Some(permanent)).is_transient(), "{permanent}");
        }
        assert!(no(None).is_transient(), "an unexplained NO waits");
        let bad = WriterError::Refused {
            command: "APPEND",
            refusal: Refusal {
                status: RefusalStatus::Bad,
                code: Some(ResponseCode {
                    name: "CLIENTBUG".into(),
                    args: String::new(),
                }),
                text: "x".into(),
            },
        };
        assert!(bad.is_transient(), "our bug must not bounce mail");
        assert_eq!(bad.as_label(), "bad");
    }

    #[test]
    fn reply_class_and_side_of_connection_failures() {
        let connect = WriterError::Connect {
            detail: "connect refused",
            source: None,
        };
        assert!(connect.is_transient());
        assert_eq!(connect.side(), Side::Upstream);
        let body = WriterError::Body(BodyError::Short {
            expected: 10,
            received: 3,
        });
        assert!(body.is_transient());
        assert_eq!(body.side(), Side::Downstream);
        let arg = WriterError::InvalidArgument(ArgumentError::InvalidFlag);
        assert!(!arg.is_transient());
        assert_eq!(arg.side(), Side::Internal);
    }

    #[test]
    fn display_shows_code_and_text() {
        let e = no(Some("TRYCREATE"));
        assert_eq!(e.to_string(), "Dovecot refused APPEND: NO [TRYCREATE] x");
        assert_eq!(
            e.response_code().map(|c| c.name.as_str()),
            Some("TRYCREATE")
        );
    }
}
