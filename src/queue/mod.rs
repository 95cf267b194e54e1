//! The queue: where a message waits for the recipients that could not take
//! it at once (a busy mailbox lock, a full quota, a failed lookup), and
//! later for targets that cannot be rolled back (programs, remote hosts).
//!
//! This module is the queue's data: its entries, their store, the retry
//! schedule and the notices they call for. Delivery writes and runs it
//! ([`crate::deliver`]: an entry made in the delivery's own transaction,
//! the runner delivering from it); `mailq`, `postie queue` and `postie
//! check` read it (`--queue-dir`).
//!
//! * `record.rs`: [`Entry`], the envelope and state of an entry, and its
//!   text format on disk (versioned, checksummed, parsed strictly), pure;
//! * `store.rs`: [`Queue`], the queue directory (default [`DEFAULT_DIR`]):
//!   entries created, updated and removed durably, listed with every name
//!   that is not ours skipped;
//! * `status.rs`: [`LastError`], a recipient's last error (RFC 3463 code
//!   and one clean line of text), pure;
//! * `schedule.rs`: [`Backoff`], when a recipient is tried again, and
//!   when it is given up;
//! * `show.rs`: the queue as text for an administrator: [`listing`]
//!   (`mailq`, sendmail's format) and [`entry_in_full`] (`postie queue
//!   show ID`), pure;
//! * `bounce.rs`: [`notice`], the delivery status notification an entry's
//!   failed, delayed or delivered users call for, and whom it goes to
//!   (the local sender, else postmaster; nobody for the null sender),
//!   pure, over [`crate::dsn`].
//!
//! Calls go one way: the store, the text and the notices use the format,
//! the format the status;
//! the status and the schedule use nothing of the queue.

mod bounce;
mod record;
mod schedule;
mod show;
mod status;
mod store;
#[cfg(test)]
pub(crate) mod testutil;

pub use bounce::{Notice, NoticeContext, NoticeError, Notification, Reported, notice};
pub use record::{
    Entry, ID_LEN, MAX_ADDRESS, MAX_ENVID, MAX_LOG_ID, MAX_ORCPT, MAX_RCPTS, MAX_RECORD, MAX_USERS,
    Notify, ParseError, Pending, Recipient, Ret, VERSION, valid_id,
};
pub use schedule::{Backoff, GIVE_UP, MAXIMAL_BACKOFF, MINIMAL_BACKOFF};
pub use show::{EMPTY, HEADER, entry_in_full, listing};
pub use status::{LastError, MAX_ERROR_TEXT, StatusCode, sanitize};
pub use store::{EntryLock, LEFTOVER_AGE, Listing, Queue};

/// Where the queue is unless configured otherwise.
pub const DEFAULT_DIR: &str = "/var/spool/postie";
