//! Tokio glue: TLS, QUIC, streams, shutdown. Knows nothing of IMAP.

pub mod connect;
pub mod line_peer;
pub mod listener;
pub mod quic;
pub mod shutdown;
pub mod smtp;
pub mod spool;
pub mod stream;
pub mod tls;
