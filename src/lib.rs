//! postie: a small Mail Transfer Agent for local delivery on Unix hosts.
//!
//! postie accepts mail over SMTP (RFC 5321) for the users of the host and
//! appends each message to the recipient's mbox file in the mail spool, with
//! the locking and format that classic Unix mail programs share. It has no
//! queue and no outbound relay: a message is in every recipient's mailbox, on
//! disk, before the client is told `250`.
//!
//! Data flows one way:
//!
//! ```text
//!   listen ──► server ──► conn ──► smtp::Session ──► deliver ──► mbox
//!   (where      (threads,  (the      (pure protocol:    (recipients,  (one mailbox:
//!   sockets     caps,      stream,   commands, state,   transaction)  lock, format,
//!   come from)  signals)   timeouts) replies)                          fsync, rollback)
//! ```
//!
//! Nothing in [`smtp`] touches a socket, a file or the clock; they are handed
//! in. [`users`] answers who a recipient is; [`sys`] is the only module with
//! `unsafe` code.

#![deny(unsafe_code)]

pub mod aliases;
pub mod check;
pub mod cli;
pub mod config;
pub mod conn;
pub mod deliver;
pub mod domains;
pub mod exit;
pub mod journal;
pub mod listen;
pub mod maillog;
pub mod mbox;
pub mod message;
pub mod privsep;
pub mod recipients;
pub mod sendmail;
pub mod server;
pub mod smtp;
#[allow(unsafe_code)]
pub mod sys;
pub mod users;
