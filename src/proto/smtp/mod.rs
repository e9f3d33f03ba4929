//! SMTP (RFC 5321) as far as the proxy must understand it: sans-IO framing, parsing and
//! canonical encoding for the submission front and the delivery hook. The proxy
//! terminates SMTP: it never pipes client bytes upstream, it parses them and writes its
//! own canonical stream (SECURITY-CASES §A).
//!
//! - [`line`]: strict CRLF line framing under a length limit, with a discard state for
//!   over-long and malformed lines (RFC 5321 §2.3.8, §4.5.3.1.4–5).
//! - [`command`]: client commands, one nom parser per ABNF rule, and their canonical
//!   encoding: RFC 5321 (EHLO, HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY, EXPN,
//!   HELP), RFC 3207 (STARTTLS), RFC 4954 (AUTH, the `AUTH=` parameter, SASL lines),
//!   RFC 1870 (`SIZE=`), RFC 6152 (`BODY=8BITMIME`), RFC 6531 (SMTPUTF8: UTF-8 paths),
//!   RFC 3030 (BDAT, `BODY=BINARYMIME`), RFC 3461 (DSN: `RET`, `ENVID`, `NOTIFY`,
//!   `ORCPT`, xtext) and Postfix's XCLIENT.
//! - [`reply`]: server replies, multi-line (RFC 5321 §4.2) with enhanced status codes
//!   (RFC 2034, RFC 3463): parsed all-or-nothing, encoded canonically.
//! - [`data`]: the DATA receiver (end of data only at CRLF "." CRLF, dot-unstuffing, bare
//!   CR/LF, NUL, line and size limits), the dot-stuffing encoder for the upstream, and
//!   the BDAT chunk counter (RFC 3030).
//!
//! RFC 2920 (PIPELINING) shapes the API rather than a module: every framer hands over the
//! bytes that follow its unit (`take_buffered`), so pipelined commands after DATA's end
//! or before STARTTLS are seen, never lost or misread.

pub mod command;
pub mod data;
pub mod ehlo;
#[doc(hidden)]
pub mod fuzz;
pub mod line;
pub mod reply;

#[cfg(test)]
mod tests;
