//! coi-proxy: a Chat Over IMAP sidecar in front of an unmodified Dovecot and Postfix.
//!
//! # Layout
//!
//! Dependencies point one way: [`proto`] and [`coi`] (sans-IO: bytes and time in, events
//! and bytes out) ← [`net`] (tokio, sockets, TLS) ← [`proxy`] (policy) ← `main`.
//! `tests/layering.rs` guards the boundary.
//!
//! - [`proto`]: IMAP framing and parsing, capability filtering.
//! - [`coi`]: COI domain values (METADATA paths, config values).
//! - [`net`]: listeners, TLS, shutdown.
//! - [`proxy`]: the IMAP front.
//! - [`config`], [`metrics`], [`admin`], [`trace`]: cross-cutting.

// Production code names the invariant behind every unwrap; tests may unwrap freely.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod admin;
pub mod app;
pub mod coi;
pub mod config;
pub mod error;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod proxy;
pub mod trace;

#[doc(hidden)]
pub mod fuzzing;
