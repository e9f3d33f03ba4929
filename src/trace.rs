//! Logging setup, and the span and field names the whole proxy uses.
//!
//! [`init`] installs one global `tracing` subscriber: filtered by the configured
//! `EnvFilter` directive, written to stderr (the container runtime collects it), one line
//! per event, timestamps in RFC 3339 UTC with microseconds (`2025-01-31T12:00:00.123456Z`),
//! as human-readable text or as JSON for log pipelines. Records from crates that use the
//! `log` facade (rustls among them) are forwarded into the same subscriber.
//!
//! # Standard spans and fields
//!
//! Every IMAP client connection runs inside one span, so each event of a session carries
//! the same identifying fields without repeating them:
//!
//! ```ignore
//! let span = tracing::info_span!(
//!     "imap_session",
//!     session_id = id,             // counter per listener from 1, not process-unique
//!     peer = %peer_addr,           // client socket address, as accepted
//!     listener = kind.as_label(),  // listener kind: "implicit", "plain", "starttls"
//!     user = tracing::field::Empty // recorded once the upstream accepted the login
//! );
//! // later, on the upstream's tagged OK to LOGIN/AUTHENTICATE:
//! span.record("user", user.as_str());
//! ```
//!
//! - `user` is the login name the client sent, recorded only after the *upstream*
//!   accepted that login, never for a login that merely was attempted (DESIGN §2).
//! - Fields keep these names everywhere (`peer`, not `client` or `addr`), so log queries
//!   work across the code base. Events inside the span do not repeat them.
//! - Passwords, SASL responses, tokens and message contents are never logged, at any
//!   level: credentials are never put in log fields. (There is no redacting wrapper
//!   type; keeping command lines and SASL data out of log fields is the rule.)
//! - Per-connection failures that the peer caused are `debug` or `info`; `warn` and
//!   `error` are for what an operator should act on.
//!
//! In JSON, an event's fields sit at the top level next to `timestamp`, `level`,
//! `target` and `message`; `span` holds the innermost span's fields and `spans` the
//! whole stack.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::EnvFilter;

use crate::config::types::{LogConfig, LogFormat};

/// Installs the process-wide subscriber described by `cfg`.
///
/// Fails, without installing anything, if `cfg.level` is not a valid `EnvFilter`
/// directive; fails if a global subscriber (or `log` logger) is already installed, e.g.
/// on a second call.
pub fn init(cfg: &LogConfig) -> Result<(), TraceError> {
    // Colours only for a human at a terminal; in a pod they would be noise in the logs.
    let ansi = std::io::stderr().is_terminal();
    subscriber(cfg, std::io::stderr, ansi)?
        .try_init()
        .map_err(TraceError::Install)
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A global subscriber or `log` logger was already installed.
    #[error("cannot install the global log subscriber")]
    Install(#[source] TryInitError),
    /// `log.level` is not a valid `EnvFilter` directive.
    #[error("invalid log level directive {directive:?}")]
    InvalidFilter {
        directive: String,
        #[source]
        source: ParseError,
    },
}

/// Builds the subscriber `init` installs, writing to `writer`; separate so tests can
/// capture its output without touching the global state.
fn subscriber<W>(
    cfg: &LogConfig,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn Subscriber + Send + Sync>, TraceError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&cfg.level).map_err(|source| TraceError::InvalidFilter {
        directive: cfg.level.clone(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // RFC 3339 in UTC; the default too, named here because the format is a promise
        // to whoever parses the logs.
        .with_timer(SystemTime);
    Ok(match cfg.format {
        // Flattened so that log pipelines index `peer`, `user`, … without a prefix.
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
    })
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// Collects everything the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn text(&self) -> String {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8(bytes.clone()).expect("UTF-8 log output")
        }
    }

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn config(format: LogFormat, level: &str) -> LogConfig {
        LogConfig {
            format,
            level: level.to_owned(),
        }
    }

    /// Runs `f` with a subscriber for `cfg` as the thread's default; returns the output.
    fn capture(cfg: &LogConfig, f: impl FnOnce()) -> String {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = subscriber(cfg, move || writer.clone(), false).expect("valid config");
        tracing::subscriber::with_default(subscriber, f);
        capture.text()
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as `SystemTime` writes it.
    fn is_rfc3339_utc(stamp: &str) -> bool {
        let bytes = stamp.as_bytes();
        bytes.len() == 27
            && bytes.iter().enumerate().all(|(i, &b)| match i {
                4 | 7 => b == b'-',
                10 => b == b'T',
                13 | 16 => b == b':',
                19 => b == b'.',
                26 => b == b'Z',
                _ => b.is_ascii_digit(),
            })
    }

    fn session() {
        let span = tracing::info_span!(
            "imap_session",
            peer = "192.0.2.7:50123",
            listener = "imaps",
            session_id = 42_u64,
            user = tracing::field::Empty,
        );
        let _entered = span.enter();
        tracing::debug!("filtered out at info");
        span.record("user", "alice@example.org");
        tracing::info!(command = "select", "command finished");
    }

    #[test]
    fn json_lines_carry_timestamp_level_and_session_fields() {
        let output = capture(&config(LogFormat::Json, "info"), session);
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 1, "{output}");
        let line = lines[0];

        let stamp = line
            .split_once("\"timestamp\":\"")
            .and_then(|(_, rest)| rest.split('"').next())
            .expect("timestamp field");
        assert!(is_rfc3339_utc(stamp), "{stamp}");
        for field in [
            "\"level\":\"INFO\"",
            "\"message\":\"command finished\"",
            // flattened: event fields at top level
            "\"command\":\"select\"",
            "\"name\":\"imap_session\"",
            "\"peer\":\"192.0.2.7:50123\"",
            "\"listener\":\"imaps\"",
            "\"session_id\":42",
            "\"user\":\"alice@example.org\"",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }

    #[test]
    fn text_lines_start_with_the_timestamp() {
        let output = capture(&config(LogFormat::Text, "coi_proxy=info"), session);
        let line = output.lines().next().expect("one line");
        let (stamp, rest) = line.split_at(27);
        assert!(is_rfc3339_utc(stamp), "{line}");
        assert!(rest.contains("INFO"), "{line}");
        assert!(rest.contains("imap_session{"), "{line}");
        assert!(rest.contains("user=\"alice@example.org\""), "{line}");
        assert!(!output.contains("filtered out"), "{output}");
        assert!(!output.contains('\u{1b}'), "no ANSI escapes: {output:?}");
    }

    #[test]
    fn invalid_directive_is_an_error() {
        for level in ["coi_proxy=loud", "info,[", "=debug"] {
            let cfg = config(LogFormat::Text, level);
            match init(&cfg) {
                Err(TraceError::InvalidFilter { directive, .. }) => assert_eq!(directive, level),
                other => panic!("{level:?}: expected InvalidFilter, got {other:?}"),
            }
        }
    }

    #[test]
    fn second_init_is_an_error_not_a_panic() {
        // "off" keeps the installed subscriber from printing other tests' events.
        let cfg = config(LogFormat::Json, "off");
        // The first call may already fail if another test installed a subscriber; the
        // second must fail either way.
        let _ = init(&cfg);
        assert!(matches!(init(&cfg), Err(TraceError::Install(_))));
    }
}
