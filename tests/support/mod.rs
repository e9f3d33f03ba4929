//! Shared support for the integration tests. Each test binary says `mod support;`.

pub mod dovecot;
pub mod io;
pub mod mailbox;
pub mod mbsync;
pub mod memory;
pub mod peers;
pub mod pki;
pub mod postfix;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod stub;
pub mod world;
