//! One mbox file: open it safely, lock it, append messages, fsync, roll back.
//!
//! Three concerns, a file each:
//!
//! - [`format`](mod@format): what one append writes (the `From ` line, the quoting of
//!   `From ` lines, the whole message) and how long it is; pure: no
//!   locks, no files beyond the writer it is handed;
//! - [`lock`]: the three locks other mail programs may take (OFD `fcntl`,
//!   dotlock, `flock`), taken all or none with a back-off; the same rule
//!   across several mailboxes (`lock_all_or_none`); and the seams the
//!   transaction journal needs ([`LockHooks`], [`LockId`]);
//! - [`mailbox`]: the safe open (and its RCPT-time form, [`check`]) and
//!   the [`LockedMailbox`] that deliveries and recovery write, sync, roll
//!   back and unlock through; a file target outside the spool (an alias's
//!   `/path`) is one too, opened under a file's rules
//!   ([`open_file_locked_with`]).
//!
//! This file holds what they share: the options ([`MboxOptions`]) and the
//! error ([`MboxError`]), and re-exports every item other modules use, so
//! that they name it `mbox::Item`. Calls flow one way: `mailbox` uses
//! `lock` and `format`; those two use neither each other nor `mailbox`;
//! all three use the types here and nothing else of this file.
//!
//! Only plain file operations are used: the caller may have switched the
//! thread's filesystem identity (`setfsuid`/`setfsgid`) to the recipient,
//! so nothing here relies on root's powers, and the dotlock needs a spool
//! directory writable by that identity (group `mail`, as usual).

pub mod format;
pub mod lock;
pub mod mailbox;
#[cfg(test)]
mod testutil;

use std::io;
use std::time::Duration;

#[cfg(test)]
pub use format::write_quoted;
pub use format::{Quoting, appended_len, from_line, write_quoted_from};
pub use lock::{LockHooks, LockId};
pub(crate) use lock::{LockSet, Try, deadline_after, lock_all_or_none, ofd_lock};
pub use mailbox::{LockedMailbox, check, open_file_locked_with, open_locked_with};
#[cfg(test)]
pub use mailbox::{append, open_locked};

/// The default for [`MboxOptions::stale_lock`]: five minutes, as in
/// liblockfile and procmail.
pub const DEFAULT_STALE_LOCK: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct MboxOptions {
    /// Mode of a newly created mailbox (default 0600).
    pub mode: u32,
    pub quoting: Quoting,
    /// How long to try for the mailbox locks before giving up (451 4.2.0).
    pub lock_timeout: Duration,
    /// A dotlock (`MAILBOX.lock`) whose modification time is older than
    /// this is taken to be left over by a crashed program, and removed
    /// (with a warning in the log). Default [`DEFAULT_STALE_LOCK`], 5
    /// minutes; it must be longer than any program holds the lock.
    pub stale_lock: Duration,
}

/// Why an append failed. The mailbox is as it was before in every case.
#[derive(Debug)]
pub enum MboxError {
    /// The locks could not be had in time.
    LockTimeout,
    /// ENOSPC.
    NoSpace,
    /// EDQUOT.
    Quota,
    /// The mailbox is not something postie will write to (symlink, not a
    /// regular file, wrong owner, several links); the text says which.
    Unsafe(String),
    Io(io::Error),
}

impl MboxError {
    /// Sorts an I/O error from writing or syncing: a full disk and an
    /// exceeded quota are told apart from other failures.
    pub(crate) fn from_write(e: io::Error) -> MboxError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) => MboxError::NoSpace,
            Some(libc::EDQUOT) => MboxError::Quota,
            _ => MboxError::Io(e),
        }
    }
}

impl std::fmt::Display for MboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MboxError::LockTimeout => f.write_str("lock not obtained in time"),
            MboxError::NoSpace => f.write_str("no space left on device"),
            MboxError::Quota => f.write_str("quota exceeded"),
            MboxError::Unsafe(why) => write!(f, "refusing to write: {why}"),
            MboxError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MboxError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The flags every mailbox open adds to std's `O_CLOEXEC`: never follow a
/// symbolic link, never acquire a controlling terminal.
const SAFE_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NOCTTY;
