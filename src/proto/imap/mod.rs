//! IMAP (RFC 3501, RFC 9051) as far as the proxy must understand it.
//!
//! - [`fragment`]: lines and literals, under limits (frame first).
//! - [`command`]: the head of a client command (tag, name) and the arguments of the
//!   commands the proxy intercepts.
//! - [`response`]: classification of server responses and their response codes.
//! - [`capability`]: what the proxy advertises.
//! - [`encode`]: canonical output the proxy writes itself (quoting, literals).
//! - [`client`]: the mailbox writer's side: commands it builds, responses it reads
//!   (APPENDUID, FETCH bodies).

pub mod capability;
pub mod client;
pub mod command;
pub mod encode;
pub mod fragment;
pub mod response;
