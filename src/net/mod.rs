//! Tokio glue: TLS, streams, shutdown. Knows nothing of IMAP.

pub mod shutdown;
pub mod stream;
pub mod tls;
