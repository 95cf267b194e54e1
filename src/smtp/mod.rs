//! The SMTP protocol as pure code: command lines in, typed replies out.
//!
//! This module knows nothing of sockets, files or the clock. [`session`]
//! keeps the transaction state and hands out each message's [`envelope`];
//! [`command`] and [`address`] parse what the client sends; [`data`] reads
//! the message after `DATA`; [`reply`] holds every reply postie can give,
//! in one table.

pub mod address;
pub mod command;
pub mod data;
pub mod envelope;
pub mod reply;
pub mod session;

pub use address::{Mailbox, ReversePath};
pub use command::Command;
pub use envelope::{Envelope, Outcome, Recipient, Submitter, TempReason};
pub use reply::{Action, Reply};
pub use session::Session;
