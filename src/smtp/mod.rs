//! The SMTP protocol as pure code: command lines in, typed replies out.
//!
//! This module knows nothing of sockets, files or the clock. [`session`]
//! keeps the transaction state and hands out each message's [`envelope`];
//! [`command`] and [`address`] parse what the client sends; [`data`] reads
//! the message after `DATA`, [`chunk`] each chunk after `BDAT`; [`reply`] holds every reply postie can give,
//! in one table; [`dsn_params`] holds the DSN parameters of MAIL and RCPT
//! (RFC 3461), which the queue and the notifications name too; [`lmtp`]
//! holds what LMTP does differently after the final dot.

pub mod address;
pub mod chunk;
pub mod command;
pub mod data;
pub mod dsn_params;
pub mod envelope;
pub mod lmtp;
pub mod reply;
pub mod session;

pub use address::{Mailbox, ReversePath};
pub use command::Command;
pub use dsn_params::{EnvId, Notify, Orcpt, Ret};
pub use envelope::{Envelope, Outcome, Recipient, Submitter, TempReason, Via};
pub use reply::{Action, Reply};
pub use session::Session;
