//! Appending one message to one mbox file: lock, format, fsync, rollback.
//!
//! Format (RFC 4155, mboxrd): a `From SENDER DATE` separator line, the
//! header lines postie adds, the message with LF line ends and every line
//! matching `^>*From ` given one more `>`, then a blank line.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::smtp::ReversePath;
use crate::sys::LocalTime;
use crate::users::User;

/// How `From ` lines inside a message are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// `^>*From ` gets one more `>` (reversible).
    Mboxrd,
    /// Only `^From ` gets a `>` (what old readers expect; not reversible).
    Mboxo,
}

#[derive(Debug, Clone)]
pub struct MboxOptions {
    /// Mode of a newly created mailbox (default 0600).
    pub mode: u32,
    pub quoting: Quoting,
    /// How long to try for the mailbox lock before giving up (451 4.2.0).
    pub lock_timeout: Duration,
}

/// Why an append failed. The mailbox is as it was before in every case.
#[derive(Debug)]
pub enum MboxError {
    /// The lock could not be had in time.
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

/// The `From ` separator line, with its LF: `From SENDER DATE`, the date in
/// asctime(3) form, `MAILER-DAEMON` for the null sender, and no white space
/// inside SENDER (readers split this line on spaces).
pub fn from_line(sender: &ReversePath, date: &LocalTime) -> String {
    todo!()
}

/// Writes `body` (LF line ends) to `w` with `From ` lines quoted, making sure
/// it ends with a newline.
pub fn write_quoted<W: Write + ?Sized>(w: &mut W, body: &[u8], quoting: Quoting) -> io::Result<()> {
    todo!()
}

/// Appends one message to the mailbox at `path`, owned by `owner`, creating
/// it if missing. Writes `from_line`, `headers` (already LF-terminated
/// lines), the quoted `body`, and a blank line; fsyncs; on any error
/// truncates the file back to its old size. Returns the bytes appended.
pub fn append(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    from_line: &str,
    headers: &[u8],
    body: &[u8],
) -> Result<u64, MboxError> {
    todo!()
}
