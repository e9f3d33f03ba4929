//! Tokio glue: TLS, QUIC, peer discovery (DNS), streams, shutdown. Knows nothing of IMAP.

pub mod connect;
pub mod discovery;
pub mod line_peer;
pub mod listener;
pub mod quic;
pub mod shutdown;
pub mod smtp;
pub mod spool;
pub mod stream;
pub mod tls;
