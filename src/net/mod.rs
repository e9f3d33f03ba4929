//! Tokio glue: TLS, streams, shutdown. Knows nothing of IMAP.

pub mod connect;
pub mod line_peer;
pub mod listener;
pub mod shutdown;
pub mod smtp;
pub mod spool;
pub mod stream;
pub mod tls;
