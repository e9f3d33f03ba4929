//! Policy: the fronts that face clients and the backend.

pub mod imap;
pub mod submission;
