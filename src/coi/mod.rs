//! COI domain values, sans-IO: the METADATA configuration paths and their values
//! (COI-PROTOCOL.md §2.2), and where the proxy keeps them in the backend.

pub mod config;
