//! COI domain values, sans-IO: the METADATA configuration paths and their values
//! (COI-PROTOCOL.md §2.2), and where the proxy keeps them in the backend; envelope address
//! normalisation and the v1 tokens (pair hashes, MACs, validity) of COI-PROTOCOL.md §4.

pub mod address;
pub mod classify;
pub mod config;
pub mod contacts;
pub mod dedup;
pub mod delivery;
pub mod headers;
pub mod submit;
pub mod token;
