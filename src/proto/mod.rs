pub mod imap;
