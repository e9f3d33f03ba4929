//! Policy: the fronts that face clients and the backend.

pub mod delivery;
pub mod imap;
pub mod peer;
pub mod registry;
pub mod state;
pub mod store;
pub mod submission;
pub mod writer;
