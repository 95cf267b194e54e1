//! One mbox file: open it safely, lock it, append messages, fsync, roll back.
//!
//! Format (RFC 4155, mboxrd): a `From SENDER DATE` separator line, the
//! header lines postie adds, the message with LF line ends and every line
//! matching `^>*From ` given one more `>`, then a blank line.
//!
//! Safety of the spool: the mailbox is opened with `O_NOFOLLOW` and must be a
//! regular file with one link, owned by its user; a missing mailbox is
//! created with `O_EXCL`. Once locked, the path must still name the file
//! locked (`lstat`: same device and inode), or a file swapped in while
//! postie waited for a lock (a hard link to another file of the user's,
//! removed again) would be written. While locked, the message is written
//! with a few large `write`s and fdatasynced; on any failure the file is
//! truncated back to the size it had when the locks were taken. [`check`]
//! applies the same rules (with `lstat`) at RCPT time, without opening
//! anything.
//!
//! # Locking
//!
//! [`open_locked`] takes three locks, in this order (Debian Policy 11.6), so
//! that every other mail program sees the mailbox as busy whichever kind it
//! uses:
//!
//! 1. an OFD ("open file description") `fcntl` write lock on the whole file,
//!    seen by everything that uses `fcntl(F_SETLK)` or `lockf` (mutt,
//!    Dovecot, Postfix, procmail). OFD and not classic POSIX record locks:
//!    classic locks belong to the process, so two threads of this server
//!    delivering to the same mailbox would both "get" the lock, and closing
//!    any descriptor of the file anywhere in the process would silently drop
//!    it. OFD locks belong to the open file description: they exclude other
//!    threads as well as other processes, and on Linux they conflict with
//!    the classic locks other programs take;
//! 2. a dotlock `MAILBOX.lock`, taken the NFS-safe way (liblockfile's): a
//!    unique hidden temporary file in the spool directory is `link()`ed to
//!    the lock name, and the lock is ours iff the lock name then is our
//!    file (the result of `link()` itself is not trusted: over NFS it may
//!    report failure after succeeding). A dotlock older than
//!    [`MboxOptions::stale_lock`] (5 minutes by default) is taken to be left
//!    over from a crash and removed, if it is a small regular file (at most
//!    [`MAX_DOTLOCK_LEN`] bytes; anything else is no lock and is left
//!    alone: [`MboxError::Unsafe`]). Programs that only dotlock (older
//!    MUAs, `dotlockfile`, `movemail`) see this one;
//! 3. `flock(LOCK_EX)` on the file, for programs that use only `flock`
//!    (on Linux it does not interact with `fcntl` locks at all).
//!
//! Every lock is tried without blocking. If one is busy, the ones already
//! held are released, the thread sleeps (1 ms, doubling up to 100 ms, plus a
//! little jitter so that waiting deliveries do not retry in step) and starts
//! over from the first: no lock is ever waited for while another is held,
//! so postie cannot deadlock with a program that takes the same locks in
//! another order. The locks are released in the reverse order. The wait is
//! bounded ([`MboxOptions::lock_timeout`] and the caller's deadline); a
//! mailbox whose locks could not all be had is never written.
//!
//! [`open_locked_with`] adds the seams of the transaction journal
//! ([`crate::journal`], [`LockHooks`]): each dotlock's identity is told to
//! the journal before its `link()`; recovery takes over the dotlocks a
//! crashed delivery left (known by that identity) instead of waiting for
//! them to go stale; and a delivery is told when it finds a dotlock taken
//! with the fcntl lock free (what a crashed postie leaves), so that it can
//! recover first.
//!
//! Only plain file operations are used: the caller may have switched the
//! thread's filesystem identity (`setfsuid`/`setfsgid`) to the recipient,
//! so nothing here relies on root's powers, and the dotlock needs a spool
//! directory writable by that identity (group `mail`, as usual).

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, Flock, FlockArg, OFlag, fcntl};
use nix::unistd::{Gid, Group, Uid, fchown, geteuid};

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
            MboxError::LockTimeout => f.write_str("timed out waiting for the mailbox lock"),
            MboxError::NoSpace => f.write_str("no space left on the mail spool"),
            MboxError::Quota => f.write_str("mailbox quota exceeded"),
            MboxError::Unsafe(why) => write!(f, "unsafe mailbox: {why}"),
            MboxError::Io(e) => write!(f, "mailbox I/O error: {e}"),
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

/// The `From ` separator line, with its LF: `From SENDER DATE`, the date in
/// asctime(3) form, `MAILER-DAEMON` for the null sender, and no white space
/// inside SENDER (readers split this line on spaces).
pub fn from_line(sender: &ReversePath, date: &LocalTime) -> String {
    let mut who = String::new();
    if let ReversePath::Mailbox(m) = sender {
        who.push_str(&m.local);
        if let Some(domain) = &m.domain {
            who.push('@');
            who.push_str(domain);
        }
    }
    // A quoted local part may hold spaces, tabs or control characters; any
    // of them would split the line where readers (mutt) do not expect it.
    let who: String = who
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let who = if who.is_empty() {
        "MAILER-DAEMON"
    } else {
        &who
    };
    format!("From {who} {}\n", date.asctime())
}

const FROM: &[u8] = b"From ";

/// Writes `body` (LF line ends) to `w` with `From ` lines quoted, making sure
/// it ends with a newline.
///
/// Rather than walking every line, this looks for `From ` anywhere and then
/// checks whether only `>`s stand between it and the start of its line;
/// the runs between quoting points are written whole.
pub fn write_quoted<W: Write + ?Sized>(w: &mut W, body: &[u8], quoting: Quoting) -> io::Result<()> {
    quote_run(w, body, true, quoting)?;
    if body.last().is_some_and(|&b| b != b'\n') {
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// The heart of [`write_quoted`]: writes `body` quoted, adding nothing at
/// the end. `line_start` says whether `body[0]` begins a line (it does not
/// when `body` continues a line begun in an earlier piece).
fn quote_run<W: Write + ?Sized>(
    w: &mut W,
    body: &[u8],
    line_start: bool,
    quoting: Quoting,
) -> io::Result<()> {
    let mut written = 0; // body[..written] is out
    let mut search = 0; // where to look for the next "From "
    while let Some(i) = memchr::memchr(b'F', &body[search..]) {
        let at = search + i;
        search = at + 1;
        if !body[at..].starts_with(FROM) {
            continue;
        }
        search = at + FROM.len();
        let mut start = at;
        while start > 0 && body[start - 1] == b'>' {
            start -= 1;
        }
        let at_line_start = if start == 0 {
            line_start
        } else {
            body[start - 1] == b'\n'
        };
        let quote = at_line_start
            && match quoting {
                Quoting::Mboxrd => true,
                Quoting::Mboxo => start == at,
            };
        if quote {
            w.write_all(&body[written..start])?;
            w.write_all(b">")?;
            written = start;
        }
    }
    w.write_all(&body[written..])
}

/// How much of `body` [`write_quoted_from`] reads at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Streaming form of [`write_quoted`]: reads `body` to its end, a chunk at
/// a time, and writes the quoted form to `w`. The output is byte for byte
/// what [`write_quoted`] writes for the whole body, wherever the chunks
/// happen to be cut (inside a line, inside a `From `, inside a run of
/// `>`s); a final newline is added if missing, and an empty body gives
/// nothing.
pub fn write_quoted_from<W: Write + ?Sized, R: Read + ?Sized>(
    w: &mut W,
    body: &mut R,
    quoting: Quoting,
) -> io::Result<()> {
    // Small at first: most messages are a few KiB, and zeroing 64 KiB for
    // each of them showed in the profile. Grown once a read fills it.
    let mut buf = vec![0u8; 4096];
    let mut quoter = StreamQuoter {
        quoting,
        held: Some(Held { gts: 0, from: 0 }),
        last: None,
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        quoter.feed(w, &buf[..n])?;
        if n == buf.len() && buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
    }
    quoter.finish(w)
}

/// The start of a line that may yet turn out to need quoting, kept back
/// between two chunks: `gts` times `>`, then the first `from` bytes of
/// `From ` (fewer than all five).
#[derive(Debug, Clone, Copy)]
struct Held {
    gts: u64,
    from: usize,
}

impl Held {
    /// `Some` if `tail` (a line start up to the end of a chunk) is a
    /// `>`-run followed by a proper prefix of `From `: undecided.
    fn of(tail: &[u8]) -> Option<Held> {
        let gts = tail.iter().take_while(|&&b| b == b'>').count();
        let rest = &tail[gts..];
        (rest.len() < FROM.len() && FROM.starts_with(rest)).then_some(Held {
            gts: gts as u64,
            from: rest.len(),
        })
    }

    /// Writes the held bytes, with one more `>` in front if `quote`.
    fn write<W: Write + ?Sized>(&self, w: &mut W, quote: bool) -> io::Result<()> {
        const GTS: [u8; 64] = [b'>'; 64];
        if quote {
            w.write_all(b">")?;
        }
        let mut left = self.gts;
        while left > 0 {
            let n = left.min(GTS.len() as u64);
            w.write_all(&GTS[..n as usize])?;
            left -= n;
        }
        w.write_all(&FROM[..self.from])
    }
}

/// The state [`write_quoted_from`] carries from one chunk to the next.
struct StreamQuoter {
    quoting: Quoting,
    /// `Some` when the next byte is on a line whose start (held back, not
    /// yet written) may still turn into a `From ` line; `None` when it is
    /// inside a line already decided.
    held: Option<Held>,
    /// The last byte of the body so far.
    last: Option<u8>,
}

impl StreamQuoter {
    fn feed<W: Write + ?Sized>(&mut self, w: &mut W, chunk: &[u8]) -> io::Result<()> {
        let Some(&last) = chunk.last() else {
            return Ok(());
        };
        self.last = Some(last);

        // First settle the line start held back from the last chunk, a byte
        // at a time: it takes only a few.
        let mut i = 0;
        let mut line_start = false;
        if let Some(mut held) = self.held.take() {
            loop {
                let Some(&b) = chunk.get(i) else {
                    // Still undecided at the end of this chunk too.
                    self.held = Some(held);
                    return Ok(());
                };
                if held.from == 0 && b == b'>' {
                    held.gts += 1;
                } else if b == FROM[held.from] {
                    held.from += 1;
                    if held.from == FROM.len() {
                        let quote = match self.quoting {
                            Quoting::Mboxrd => true,
                            Quoting::Mboxo => held.gts == 0,
                        };
                        held.from = 0;
                        held.write(w, quote)?;
                        w.write_all(FROM)?;
                        i += 1;
                        break;
                    }
                } else {
                    // Not a `From ` line. `b` starts the line only if
                    // nothing was held.
                    line_start = held.gts == 0 && held.from == 0;
                    held.write(w, false)?;
                    break;
                }
                i += 1;
            }
        }

        // Then the rest in one go, keeping back the last line's start if it
        // is still undecided.
        let rest = &chunk[i..];
        let tail = match memchr::memrchr(b'\n', rest) {
            Some(nl) => Some(nl + 1),
            None if line_start => Some(0),
            None => None,
        };
        let mut end = rest.len();
        if let Some(tail) = tail {
            if let Some(held) = Held::of(&rest[tail..]) {
                self.held = Some(held);
                end = tail;
            }
        }
        quote_run(w, &rest[..end], line_start, self.quoting)
    }

    fn finish<W: Write + ?Sized>(self, w: &mut W) -> io::Result<()> {
        if let Some(held) = self.held {
            held.write(w, false)?;
        }
        if self.last.is_some_and(|b| b != b'\n') {
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// Appends one message to the mailbox at `path`, owned by `owner`, creating
/// it if missing: [`open_locked`], [`LockedMailbox::append`] and
/// [`LockedMailbox::unlock`] in one. Writes `from_line`, `headers` (already
/// LF-terminated lines), the quoted `body`, and a blank line; fsyncs; on
/// any error truncates the file back to its old size. Returns the bytes
/// appended.
pub fn append(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    from_line: &str,
    headers: &[u8],
    body: &[u8],
) -> Result<u64, MboxError> {
    let deadline = deadline_after(opts.lock_timeout);
    let mut mailbox = open_locked(path, owner, opts, deadline)?;
    let result = mailbox.append(from_line, headers, &mut &body[..]);
    mailbox.unlock();
    result
}

/// `timeout` from now, or far enough in the future if that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// A mailbox opened and locked for appending. Holds all three locks (see
/// the [module documentation](self)) until dropped or
/// [`unlock`](Self::unlock)ed; remembers the size it had when locked.
pub struct LockedMailbox {
    /// The open mailbox, flocked, with our OFD lock on it. `None` only
    /// once released.
    file: Option<Flock<File>>,
    /// Our dotlock, removed when dropped.
    dotlock: Option<DotLock>,
    path: PathBuf,
    old_size: u64,
    /// The device and inode of the file locked.
    dev: u64,
    ino: u64,
    quoting: Quoting,
}

impl std::fmt::Debug for LockedMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedMailbox")
            .field("path", &self.path)
            .field("old_size", &self.old_size)
            .field("locked", &self.file.is_some())
            .finish()
    }
}

/// Opens the mailbox at `path` (creating it if missing, owned by `owner`,
/// group `mail`, mode `opts.mode`) and takes, in this order, an OFD `fcntl`
/// write lock on the whole file, the dotlock `path` + `.lock`, and
/// `flock(LOCK_EX)`. Each is tried without blocking; if a later one is
/// busy, the earlier ones are released and the whole sequence is tried
/// again after a back-off (1 ms doubling to 100 ms, with jitter): no lock
/// is ever waited for while another is held. Gives up with
/// [`MboxError::LockTimeout`] at `deadline` or after `opts.lock_timeout`,
/// whichever comes first (but always tries once).
///
/// Once locked, the mailbox must be a regular file with one link owned by
/// `owner` (by the effective uid when not running as root), else
/// [`MboxError::Unsafe`].
pub fn open_locked(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    deadline: Instant,
) -> Result<LockedMailbox, MboxError> {
    open_locked_with(path, owner, opts, deadline, &mut LockHooks::default())
}

/// What identifies a dotlock postie made: the device, inode and
/// modification time of the temporary file it was linked from (the lock
/// file is that same inode). Recorded in the transaction journal before
/// the `link()` ([`LockHooks::record`]), so that after a crash the lock
/// left behind can be told from anyone else's, even if the inode number
/// has been used again since, and taken over ([`LockHooks::adopt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockId {
    pub dev: u64,
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl LockId {
    pub fn of(meta: &Metadata) -> LockId {
        LockId {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// What [`open_locked_with`] does beyond [`open_locked`]: the seams of the
/// transaction journal ([`crate::journal`]).
#[derive(Default)]
pub struct LockHooks<'a> {
    /// Told the identity of every dotlock about to be made, before its
    /// `link()`; an error gives up with that error, and no lock is made.
    pub record: Option<&'a mut dyn FnMut(LockId) -> io::Result<()>>,
    /// Dotlocks left behind by a postie that crashed, from its journal: one
    /// of these found on the mailbox, while the fcntl lock is held, is
    /// taken over as it is rather than waited for.
    pub adopt: &'a [LockId],
    /// For recovery: the mailbox is never created (a missing one is
    /// `Io(NotFound)`), and it is opened for reading too.
    pub recovery: bool,
    /// Called, with no lock held, when the dotlock is found taken while
    /// the fcntl lock was free: what a postie that died in a delivery
    /// leaves (a live postie holds the fcntl lock too), so the caller
    /// recovers interrupted deliveries here. Once this is set, a stale
    /// dotlock is removed only after it has been called, or if
    /// [`recovered`](Self::recovered).
    pub on_busy: Option<&'a mut dyn FnMut()>,
    /// The caller has already dealt with what `on_busy` tells (recovered
    /// interrupted deliveries) in an earlier call: a caller that tries
    /// each lock once per call and backs off itself.
    pub recovered: bool,
}

/// [`open_locked`] with the journal's [`LockHooks`].
pub fn open_locked_with(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    deadline: Instant,
    hooks: &mut LockHooks<'_>,
) -> Result<LockedMailbox, MboxError> {
    let deadline = deadline.min(deadline_after(opts.lock_timeout));
    let file = open_mailbox(path, owner, opts, hooks.recovery)?;
    let (file, dotlock) = lock_all(file, &dotlock_path(path), opts.stale_lock, deadline, hooks)?;
    let mut mailbox = LockedMailbox {
        file: Some(file),
        dotlock: Some(dotlock),
        path: path.to_owned(),
        old_size: 0,
        dev: 0,
        ino: 0,
        quoting: opts.quoting,
    };
    // Checked under the locks: a mailbox another delivery has just created
    // is locked by it until it is chowned. On error, dropping `mailbox`
    // releases everything.
    let meta = mailbox.file().metadata().map_err(MboxError::Io)?;
    check_meta(&meta, owner)?;
    same_file_at(path, &meta)?;
    mailbox.old_size = meta.len();
    mailbox.dev = meta.dev();
    mailbox.ino = meta.ino();
    Ok(mailbox)
}

impl LockedMailbox {
    /// Where the mailbox is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the mailbox when it was locked.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// The device and inode numbers of the mailbox file.
    pub fn file_id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The size of the mailbox now.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file().metadata()?.len())
    }

    /// Reads up to `buf.len()` bytes at `offset` (the mailbox must have
    /// been opened for recovery, [`LockHooks::recovery`]).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.file().read_at(buf, offset)
    }

    /// The device and inode of the dotlock held, if it is one a crashed
    /// postie left, taken over ([`LockHooks::adopt`]).
    pub fn adopted_dotlock(&self) -> Option<(u64, u64)> {
        self.dotlock
            .as_ref()
            .filter(|d| d.adopted)
            .map(|d| (d.dev, d.ino))
    }

    /// Truncates the mailbox to `size` and fsyncs it: recovery's undoing
    /// of an append interrupted by a crash.
    pub fn truncate_to(&mut self, size: u64) -> Result<(), MboxError> {
        self.old_size = size;
        self.rollback()
    }

    /// Releases the fcntl and flock locks but leaves the dotlock in place,
    /// so that the mailbox stays locked for every postie and every program
    /// that honours dotlocks, until recovery takes the dotlock over: for a
    /// transaction that could neither finish nor be undone.
    pub fn unlock_keeping_dotlock(mut self) {
        if let Some(d) = &mut self.dotlock {
            d.keep = true;
        }
        self.release();
    }

    fn file(&self) -> &File {
        // Only `release` takes it, and nothing is called after that.
        self.file.as_deref().expect("mailbox used after release")
    }

    /// Appends `from_line`, `headers` (LF-terminated lines), the quoted body
    /// read from `body` (streamed through a 64 KiB buffer; LF line ends
    /// expected) and a blank line, then fdatasyncs. Returns the bytes
    /// appended. On any error (reading `body` included) truncates the
    /// mailbox back to [`old_size`](Self::old_size), fsyncs, and returns
    /// the error: `NoSpace` for ENOSPC, `Quota` for EDQUOT.
    pub fn append(
        &mut self,
        from_line: &str,
        headers: &[u8],
        body: &mut dyn Read,
    ) -> Result<u64, MboxError> {
        let n = self.write_with(from_line, headers, body, |file| Box::new(file))?;
        self.sync().map(|()| n)
    }

    /// The first half of [`append`](Self::append): the writes, not the
    /// `fdatasync`, so that a transaction can sync its mailboxes in
    /// parallel ([`sync`](Self::sync)). Writes through the writer
    /// `make_writer` builds on the open, locked mailbox: the seam where
    /// tests inject failing writes. On error, truncates back as `append`.
    pub(crate) fn write_with(
        &mut self,
        from_line: &str,
        headers: &[u8],
        body: &mut dyn Read,
        make_writer: impl for<'f> FnOnce(&'f File) -> Box<dyn Write + 'f>,
    ) -> Result<u64, MboxError> {
        let file = self.file();
        let written = write_message(make_writer(file), self.quoting, from_line, headers, body);
        self.or_truncate_back(written)
    }

    /// The second half of [`append`](Self::append): `fdatasync`, which is
    /// enough: it also flushes the metadata needed to read the data back,
    /// which includes the file's new size. On error, truncates back.
    pub fn sync(&self) -> Result<(), MboxError> {
        let synced = self.file().sync_data();
        self.or_truncate_back(synced)
    }

    fn or_truncate_back<T>(&self, r: io::Result<T>) -> Result<T, MboxError> {
        r.map_err(|e| {
            if let Err(re) = self.truncate_back() {
                log::error!(
                    "{}: could not truncate back to {} bytes after a failed append: {re}",
                    self.path.display(),
                    self.old_size
                );
            }
            MboxError::from_write(e)
        })
    }

    /// Truncates the mailbox back to its size when locked and fsyncs it:
    /// for when another mailbox of the same transaction failed after this
    /// one was written.
    pub fn rollback(&mut self) -> Result<(), MboxError> {
        self.truncate_back().map_err(MboxError::from_write)
    }

    fn truncate_back(&self) -> io::Result<()> {
        let file = self.file();
        file.set_len(self.old_size)?;
        file.sync_all()
    }

    /// Releases the locks in the reverse order of taking: `flock`, our
    /// dotlock, the OFD lock; then closes the file. Dropping does the same.
    pub fn unlock(mut self) {
        self.release();
    }

    fn release(&mut self) {
        let Some(flocked) = self.file.take() else {
            return;
        };
        let file = match flocked.unlock() {
            Ok(file) => file,
            Err((flocked, e)) => {
                // Cannot really happen: LOCK_UN on an open descriptor does
                // not fail on Linux. Release the others in order all the
                // same; dropping `flocked` retries LOCK_UN (nix panics if
                // that fails too) and closing the file releases all locks.
                log::warn!("{}: could not release flock: {e}", self.path.display());
                drop(self.dotlock.take());
                if let Err(e) = ofd_lock(&flocked, libc::F_UNLCK) {
                    log::warn!("{}: could not unlock: {e}", self.path.display());
                }
                drop(flocked);
                return;
            }
        };
        drop(self.dotlock.take());
        if let Err(e) = ofd_lock(&file, libc::F_UNLCK) {
            // Closing the file (below) releases it too.
            log::warn!("{}: could not unlock: {e}", self.path.display());
        }
    }
}

impl Drop for LockedMailbox {
    fn drop(&mut self) {
        self.release();
    }
}

/// Writes the whole message through a 64 KiB buffer, so that the append is
/// a few large writes, and returns the bytes handed to `inner`. The buffer
/// is discarded, not flushed, on error: nothing may be written after the
/// rollback.
fn write_message<W: Write>(
    inner: W,
    quoting: Quoting,
    from_line: &str,
    headers: &[u8],
    body: &mut dyn Read,
) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(64 * 1024, Counting { inner, count: 0 });
    let res = (|| {
        out.write_all(from_line.as_bytes())?;
        out.write_all(headers)?;
        write_quoted_from(&mut out, body, quoting)?;
        out.write_all(b"\n")?;
        out.flush()
    })();
    let (counting, _unwritten) = out.into_parts();
    res.map(|()| counting.count)
}

/// The number of bytes [`LockedMailbox::append`] appends for this message,
/// found by formatting it into nothing: the transaction journal records
/// it, so that recovery can tell a whole append from part of one.
pub fn appended_len(
    quoting: Quoting,
    from_line: &str,
    headers: &[u8],
    body: &mut dyn Read,
) -> io::Result<u64> {
    write_message(io::sink(), quoting, from_line, headers, body)
}

/// Counts the bytes its writer accepted.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The RCPT-time check on the mailbox at `path`: `Ok(())` if it is missing
/// (delivery will create it) or is a regular file with one link owned by
/// `owner` (by the effective uid when not root), the rule delivery applies;
/// [`MboxError::Unsafe`] otherwise. Uses `lstat` only: never creates
/// anything, never opens anything.
pub fn check(path: &Path, owner: &User) -> Result<(), MboxError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_meta(&meta, owner),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MboxError::Io(e)),
    }
}

/// The rules for a mailbox postie writes to, on its (l)stat: a regular
/// file, one link, the right owner.
fn check_meta(meta: &Metadata, owner: &User) -> Result<(), MboxError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(MboxError::Unsafe("mailbox is a symbolic link".into()));
    }
    if !kind.is_file() {
        return Err(MboxError::Unsafe("not a regular file".into()));
    }
    if meta.nlink() != 1 {
        return Err(MboxError::Unsafe(format!(
            "has {} hard links",
            meta.nlink()
        )));
    }
    let expected = if is_root() {
        owner.uid
    } else {
        geteuid().as_raw()
    };
    if meta.uid() != expected {
        return Err(MboxError::Unsafe(format!(
            "owned by uid {}, not {expected}",
            meta.uid()
        )));
    }
    Ok(())
}

/// Checks, once every lock is held, that `path` still names the file
/// opened and locked (`meta`, its `fstat`): `lstat` gives the same device
/// and inode. The checks on the descriptor alone let a user who can write
/// the spool (group `mail`) hard-link another file of the recipient's
/// (`~/.ssh/authorized_keys`) as the mailbox, hold the dotlock while
/// postie opened it, and remove both: the file then had one link, the
/// right owner, and got the message (mail.local makes the same check).
fn same_file_at(path: &Path, meta: &Metadata) -> Result<(), MboxError> {
    let replaced =
        || MboxError::Unsafe("mailbox removed or replaced while it was being locked".into());
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => Ok(()),
        Ok(_) => Err(replaced()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(replaced()),
        Err(e) => Err(MboxError::Io(e)),
    }
}

/// The flags every mailbox open adds to std's `O_CLOEXEC`: never follow a
/// symbolic link, never acquire a controlling terminal.
const SAFE_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NOCTTY;

fn is_root() -> bool {
    geteuid().is_root()
}

fn unsafe_open(e: &io::Error) -> Option<MboxError> {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Some(MboxError::Unsafe("mailbox is a symbolic link".into())),
        // EISDIR: a directory; ENXIO: a FIFO without reader or a device.
        Some(libc::EISDIR) | Some(libc::ENXIO) => {
            Some(MboxError::Unsafe("not a regular file".into()))
        }
        _ => None,
    }
}

/// Opens the mailbox for appending, creating it if missing, and makes sure
/// it is a regular file.
fn open_mailbox(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    recovery: bool,
) -> Result<File, MboxError> {
    let mut tries = 0;
    let file = loop {
        tries += 1;
        match open_existing(path, recovery) {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !recovery => {}
            Err(e) => return Err(unsafe_open(&e).unwrap_or(MboxError::Io(e))),
        }
        match create(path, owner, opts) {
            Ok(file) => break file,
            // Someone created it between our two opens: open theirs, once.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 2 => continue,
            Err(e) => return Err(unsafe_open(&e).unwrap_or(MboxError::Io(e))),
        }
    };

    let meta = file.metadata().map_err(MboxError::Io)?;
    if !meta.file_type().is_file() {
        return Err(MboxError::Unsafe("not a regular file".into()));
    }
    // O_NONBLOCK only kept a FIFO from hanging the open; drop it for good
    // measure now that this is known to be a regular file.
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| MboxError::Io(e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags)).map_err(|e| MboxError::Io(e.into()))?;
    Ok(file)
}

fn open_existing(path: &Path, read: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(read)
        .append(true)
        .custom_flags(SAFE_FLAGS | libc::O_NONBLOCK)
        .open(path)
}

/// Creates a missing mailbox with exactly `opts.mode`, owned (when root) by
/// its user and the group `mail`, and makes its directory entry durable.
fn create(path: &Path, owner: &User, opts: &MboxOptions) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(opts.mode)
        .custom_flags(SAFE_FLAGS)
        .open(path)?;
    // Take the OFD lock at once (OFD locks are per open file description,
    // so `lock_all` only re-takes this one): another delivery that opens
    // the new file meanwhile waits for the lock and then finds it chowned,
    // not owned by root.
    if let Err(e) = ofd_lock(&file, libc::F_WRLCK) {
        log::warn!("{}: could not lock a new mailbox: {e}", path.display());
    }
    let setup = (|| {
        // The umask may have taken bits away.
        file.set_permissions(Permissions::from_mode(opts.mode))?;
        if is_root() {
            let gid = match Group::from_name("mail") {
                Ok(Some(group)) => group.gid,
                _ => Gid::from_raw(owner.gid),
            };
            fchown(&file, Some(Uid::from_raw(owner.uid)), Some(gid))?;
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    })();
    match setup {
        Ok(()) => Ok(file),
        Err(e) => {
            // Leave no half-made mailbox behind (e.g. one still owned by root).
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Takes the three locks on `file` in order, starting over after a
/// back-off whenever one is busy, until `deadline`. On error every lock
/// taken is released (dropping the file releases the OFD lock).
fn lock_all(
    mut file: File,
    dotlock: &Path,
    stale_lock: Duration,
    deadline: Instant,
    hooks: &mut LockHooks<'_>,
) -> Result<(Flock<File>, DotLock), MboxError> {
    let mut backoff = Backoff::new();
    let mut dotlock_busy = false;
    loop {
        if ofd_lock(&file, libc::F_WRLCK).map_err(MboxError::Io)? {
            // With `on_busy`, a stale dotlock may be a crashed delivery's,
            // which recovery takes over rather than anyone removing it.
            let stale_ok = hooks.on_busy.is_none() || dotlock_busy || hooks.recovered;
            match DotLock::try_take(dotlock, stale_lock, stale_ok, hooks)? {
                Some(dot) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(flocked) => return Ok((flocked, dot)),
                    Err((f, Errno::EAGAIN | Errno::EINTR)) => {
                        file = f;
                        dot.let_go();
                        ofd_unlock(&file, dotlock);
                    }
                    Err((_, e)) => {
                        dot.let_go();
                        return Err(MboxError::Io(e.into()));
                    }
                },
                None => {
                    ofd_unlock(&file, dotlock);
                    dotlock_busy = true;
                    if let Some(f) = hooks.on_busy.as_mut() {
                        f();
                    }
                }
            }
        }
        backoff.wait(deadline)?;
    }
}

/// Releases the OFD lock before a back-off.
fn ofd_unlock(file: &File, dotlock: &Path) {
    if let Err(e) = ofd_lock(file, libc::F_UNLCK) {
        log::warn!(
            "{}: could not release the fcntl lock: {e}",
            dotlock.display()
        );
    }
}

/// One non-blocking attempt to set an OFD lock of `kind` on the whole file:
/// `Ok(false)` if someone else holds a conflicting one.
pub(crate) fn ofd_lock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    let lock = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however long it grows
        l_pid: 0, // must be 0 for OFD locks
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The sleeps between rounds of lock attempts: about 1 ms, doubling up to
/// about 100 ms, with a little jitter so that waiting deliveries do not
/// retry in step.
pub(crate) struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> Backoff {
        Backoff { delay: Self::FIRST }
    }

    /// Sleeps before the next round, never past `deadline`; `LockTimeout`
    /// if `deadline` has come.
    pub(crate) fn wait(&mut self, deadline: Instant) -> Result<(), MboxError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(MboxError::LockTimeout);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let spread = self.delay.as_micros() as u32 / 4 + 1;
        let jitter = Duration::from_micros(u64::from(nanos % spread));
        thread::sleep((self.delay + jitter).min(deadline - now));
        self.delay = (self.delay * 2).min(Self::MAX);
        Ok(())
    }
}

/// `path` + `.lock`.
fn dotlock_path(path: &Path) -> PathBuf {
    let mut lock = OsString::from(path.as_os_str());
    lock.push(".lock");
    PathBuf::from(lock)
}

/// A dotlock we hold: the lock file, known by its device and inode so that
/// we never remove one that is not ours. Removed when dropped.
#[derive(Debug)]
struct DotLock {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Taken over from a crashed postie ([`LockHooks::adopt`]).
    adopted: bool,
    /// Left in place when dropped ([`LockedMailbox::unlock_keeping_dotlock`]).
    keep: bool,
}

/// The largest file removed as a stale dotlock: lock files hold a pid, a
/// host name, or nothing (ours hold `0\n`).
pub const MAX_DOTLOCK_LEN: u64 = 512;

/// Makes the names of our temporary files unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DotLock {
    /// One attempt at the dotlock `lock`: `Ok(None)` if someone else holds
    /// it. A lock older than `stale_after` is removed and tried again.
    fn try_take(
        lock: &Path,
        stale_after: Duration,
        stale_ok: bool,
        hooks: &mut LockHooks<'_>,
    ) -> Result<Option<DotLock>, MboxError> {
        // A few rounds: a stale lock removed, or a lock gone between our
        // `link` and our look at it, is worth another try at once.
        for _ in 0..3 {
            let (temp, temp_file) = create_temp(lock).map_err(MboxError::from_write)?;
            let temp_meta = temp_file.metadata();
            drop(temp_file);
            // Recorded before the link: a crash can leave no lock file of
            // ours that the journal does not name.
            let recorded = match (&temp_meta, hooks.record.as_mut()) {
                (Ok(meta), Some(record)) => record(LockId::of(meta)),
                _ => Ok(()),
            };
            if let Err(e) = recorded {
                let _ = std::fs::remove_file(&temp);
                return Err(MboxError::from_write(e));
            }
            // The result of link(2) is not trusted (over NFS it may report
            // failure after succeeding): the lock is ours iff the lock name
            // now is our temporary file.
            let linked = std::fs::hard_link(&temp, lock);
            let lock_meta = std::fs::symlink_metadata(lock);
            if let Err(e) = std::fs::remove_file(&temp) {
                log::warn!("{}: could not remove: {e}", temp.display());
            }
            let temp_meta = temp_meta.map_err(MboxError::Io)?;
            let lock_meta = match lock_meta {
                Ok(meta) => Some(meta),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(MboxError::Io(e)),
            };
            if let Some(meta) = &lock_meta {
                if meta.dev() == temp_meta.dev() && meta.ino() == temp_meta.ino() {
                    return Ok(Some(DotLock {
                        path: lock.to_owned(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                        adopted: false,
                        keep: false,
                    }));
                }
                // The lock of a crashed postie, named by its journal: ours
                // now (the caller holds the fcntl lock, so no other postie
                // is looking at it).
                if hooks.adopt.contains(&LockId::of(meta)) {
                    return Ok(Some(DotLock {
                        path: lock.to_owned(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                        adopted: true,
                        keep: false,
                    }));
                }
            }
            if let Err(e) = linked {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(MboxError::from_write(e));
                }
            }
            let Some(lock_meta) = lock_meta else {
                // Gone between our link and our look: try again.
                continue;
            };
            // Someone else's lock. Stale?
            let age = lock_meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok());
            match age {
                Some(age) if age > stale_after && stale_ok => {
                    // Only what a dotlock can be: the mailbox of a user
                    // named `x.lock`, or a directory, is no lock of `x`'s.
                    if !lock_meta.is_file() || lock_meta.len() > MAX_DOTLOCK_LEN {
                        return Err(MboxError::Unsafe(format!(
                            "{} looks stale ({} s old) but is not a small regular file (a dotlock is at most {MAX_DOTLOCK_LEN} bytes); left alone",
                            lock.display(),
                            age.as_secs()
                        )));
                    }
                    log::warn!(
                        "{}: removing stale lock file, {} s old",
                        lock.display(),
                        age.as_secs()
                    );
                    match std::fs::remove_file(lock) {
                        Ok(()) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            log::warn!("{}: could not remove stale lock: {e}", lock.display());
                            return Ok(None);
                        }
                    }
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

impl DotLock {
    /// Releases the lock before a back-off or on failure: removes it, but
    /// leaves one taken over from a crash in place, for recovery to find
    /// again.
    fn let_go(mut self) {
        self.keep = self.adopted;
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Only if it is still ours: had someone taken it for stale and
        // locked anew, removing it would break their lock.
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::error!("{}: could not remove our lock: {e}", self.path.display());
                }
            }
            Ok(_) => log::warn!(
                "{}: our lock file was replaced by another",
                self.path.display()
            ),
            Err(e) => log::warn!("{}: our lock file is gone: {e}", self.path.display()),
        }
    }
}

/// Creates a unique temporary file next to `lock` (hidden,
/// `.MAILBOX.lk.PID.COUNTER.RANDOM`, mode 0644 less the umask) holding
/// `0\n`, as `dotlockfile` writes: no pid, which would mean nothing to a
/// reader on another host or in another pid namespace; staleness goes by
/// age alone.
fn create_temp(lock: &Path) -> io::Result<(PathBuf, File)> {
    let dir = match lock.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // The mailbox name, cut short enough for NAME_MAX.
    let base = lock.file_name().unwrap_or_default().as_bytes();
    let base = &base[..base.len().saturating_sub(".lock".len()).min(150)];
    let mut tries = 0;
    loop {
        tries += 1;
        let count = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = OsString::from(".");
        name.push(std::ffi::OsStr::from_bytes(base));
        name.push(format!(
            ".lk.{}.{count}.{:016x}",
            std::process::id(),
            crate::sys::random_u64()
        ));
        let temp = dir.join(name);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(SAFE_FLAGS)
            .open(&temp)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => continue,
            Err(e) => return Err(e),
        };
        if let Err(e) = file.write_all(b"0\n") {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        return Ok((temp, file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Mailbox;
    use nix::unistd::getegid;
    use proptest::prelude::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::symlink;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn date() -> LocalTime {
        LocalTime {
            year: 2026,
            month: 11,
            day: 1,
            hour: 6,
            minute: 5,
            second: 4,
            weekday: 0,
            utc_offset: 3600,
        }
    }

    fn sender(local: &str, domain: Option<&str>) -> ReversePath {
        ReversePath::Mailbox(Mailbox {
            local: local.to_owned(),
            domain: domain.map(str::to_owned),
        })
    }

    #[test]
    fn from_line_null_sender() {
        assert_eq!(
            from_line(&ReversePath::Null, &date()),
            "From MAILER-DAEMON Sun Nov  1 06:05:04 2026\n"
        );
    }

    #[test]
    fn from_line_normal_sender() {
        assert_eq!(
            from_line(&sender("alice", Some("example.org")), &date()),
            "From alice@example.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("postmaster", None), &date()),
            "From postmaster Sun Nov  1 06:05:04 2026\n"
        );
    }

    #[test]
    fn from_line_quoted_sender_has_no_white_space() {
        assert_eq!(
            from_line(&sender("john smith", Some("example.org")), &date()),
            "From john_smith@example.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("a\tb\rc\nd\u{7f}e\u{a0}f", Some("x.org")), &date()),
            "From a_b_c_d_e_f@x.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("", None), &date()),
            "From MAILER-DAEMON Sun Nov  1 06:05:04 2026\n"
        );
    }

    fn quoted(body: &[u8], quoting: Quoting) -> String {
        let mut out = Vec::new();
        write_quoted(&mut out, body, quoting).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn write_quoted_mboxrd() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("From x\n", ">From x\n"),
            (">From x\n", ">>From x\n"),
            (">>From x\n", ">>>From x\n"),
            (" From x\n", " From x\n"),
            ("From\n", "From\n"),
            ("Fromx\n", "Fromx\n"),
            ("From", "From\n"),
            ("From ", ">From \n"),
            ("a\nFrom x", "a\n>From x\n"),
            ("no newline", "no newline\n"),
            ("\n", "\n"),
            ("a>From x\n", "a>From x\n"),
            (
                "x From y\nFrom z\n>>From\n>>From \n",
                "x From y\n>From z\n>>From\n>>>From \n",
            ),
            ("From From From \nFrom\n", ">From From From \nFrom\n"),
            ("F\nFr\nFro\nFrom\n", "F\nFr\nFro\nFrom\n"),
            ("\n\nFrom a\n\n>From b\n", "\n\n>From a\n\n>>From b\n"),
        ];
        for (body, want) in table {
            assert_eq!(quoted(body.as_bytes(), Quoting::Mboxrd), *want, "{body:?}");
        }
    }

    #[test]
    fn write_quoted_mboxo() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("From x\n", ">From x\n"),
            (">From x\n", ">From x\n"),
            (">>From x\n", ">>From x\n"),
            (" From x\n", " From x\n"),
            ("From\n", "From\n"),
            ("From", "From\n"),
            ("a\nFrom x", "a\n>From x\n"),
            ("no newline", "no newline\n"),
            ("x\n>From y\nFrom z\n", "x\n>From y\n>From z\n"),
        ];
        for (body, want) in table {
            assert_eq!(quoted(body.as_bytes(), Quoting::Mboxo), *want, "{body:?}");
        }
    }

    /// Counts `write` calls.
    #[derive(Default)]
    struct CountWrites {
        calls: usize,
        data: Vec<u8>,
    }

    impl Write for CountWrites {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_quoted_writes_unchanged_runs_whole() {
        let line = "Some text, Fine, For everyone: From here on\n";
        let body = line.repeat(100_000);
        let mut w = CountWrites::default();
        write_quoted(&mut w, body.as_bytes(), Quoting::Mboxrd).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.data, body.as_bytes());

        let body = format!("{}From me\n{}", line.repeat(1000), line.repeat(1000));
        let mut w = CountWrites::default();
        write_quoted(&mut w, body.as_bytes(), Quoting::Mboxrd).unwrap();
        assert_eq!(w.calls, 3);
    }

    /// Undoes mboxrd quoting: one `>` off every `^>+From ` line.
    fn unquote_mboxrd(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let gt = line.iter().take_while(|&&b| b == b'>').count();
            if gt > 0 && line[gt..].starts_with(b"From ") {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn mboxrd_is_reversible(body in "([>]{0,3}(From |From|Fro|x| |\n)){0,30}") {
            let out = quoted(body.as_bytes(), Quoting::Mboxrd);
            let mut want = body.clone().into_bytes();
            if want.last().is_some_and(|&b| b != b'\n') {
                want.push(b'\n');
            }
            prop_assert_eq!(unquote_mboxrd(out.as_bytes()), want);
            // And no line of the output starts with an unquoted "From ".
            for line in out.split('\n') {
                prop_assert!(!line.starts_with("From "));
            }
        }
    }

    fn me() -> User {
        User {
            name: "me".into(),
            uid: geteuid().as_raw(),
            gid: getegid().as_raw(),
        }
    }

    fn opts(lock_timeout: Duration) -> MboxOptions {
        MboxOptions {
            mode: 0o600,
            quoting: Quoting::Mboxrd,
            lock_timeout,
            stale_lock: DEFAULT_STALE_LOCK,
        }
    }

    const FROM: &str = "From a@b.c Sun Nov  1 06:05:04 2026\n";
    const HEADERS: &[u8] =
        b"Return-Path: <a@b.c>\nReceived: from x by y; Sun, 1 Nov 2026 06:05:04 +0100\n";

    fn message(body: &[u8]) -> Vec<u8> {
        let mut m = FROM.as_bytes().to_vec();
        m.extend_from_slice(HEADERS);
        write_quoted(&mut m, body, Quoting::Mboxrd).unwrap();
        m.push(b'\n');
        m
    }

    #[test]
    fn append_creates_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let body1 = b"Subject: one\n\nhello\nFrom the start\n";
        let body2 = b"Subject: two\n\nno final newline";

        let n1 = append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            body1,
        )
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), geteuid().as_raw());
        assert_eq!(n1, message(body1).len() as u64);

        let n2 = append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            body2,
        )
        .unwrap();
        assert_eq!(n2, message(body2).len() as u64);

        let mut want = message(body1);
        want.extend_from_slice(&message(body2));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert!(want.ends_with(b"no final newline\n\n"));
    }

    #[test]
    fn append_creates_with_exact_mode_despite_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let mut o = opts(Duration::from_secs(5));
        o.mode = 0o662; // the usual umask 022 would take away both write bits
        append(&path, &me(), &o, FROM, HEADERS, b"x\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o662);
    }

    #[test]
    fn append_without_spool_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("me");
        let err = append(
            &path,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert!(matches!(err, Err(MboxError::Io(_))), "{err:?}");
    }

    fn assert_unsafe(res: Result<u64, MboxError>, contains: &str) {
        match res {
            Err(MboxError::Unsafe(why)) => assert!(why.contains(contains), "{why}"),
            other => panic!("expected Unsafe({contains}), got {other:?}"),
        }
    }

    #[test]
    fn append_refuses_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious\n").unwrap();
        let path = dir.path().join("me");
        symlink(&target, &path).unwrap();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "symbolic link");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious\n");

        // A dangling link is not followed to create its target either.
        let dangling = dir.path().join("dangling");
        let nowhere = dir.path().join("nowhere");
        symlink(&nowhere, &dangling).unwrap();
        let res = append(
            &dangling,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert!(res.is_err(), "{res:?}");
        assert!(!nowhere.exists());
    }

    #[test]
    fn append_refuses_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        std::fs::hard_link(&path, dir.path().join("other")).unwrap();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "has 2 hard links");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    }

    #[test]
    fn append_refuses_fifo_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let res = append(
            &fifo,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a regular file");

        // Even with a reader present (so that the open succeeds).
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let res = append(
            &fifo,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a regular file");
        drop(reader);

        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        let res = append(
            &sub,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a regular file");
    }

    #[test]
    fn append_refuses_wrong_owner_as_root() {
        if !geteuid().is_root() {
            // Only root can make a file someone else's.
            eprintln!("SKIP append_refuses_wrong_owner_as_root: not running as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let other = User {
            name: "other".into(),
            uid: 54_321,
            gid: 54_321,
        };
        let res = append(
            &path,
            &other,
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "owned by uid 0, not 54321");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");

        // A mailbox it creates is the user's.
        let new = dir.path().join("other");
        append(
            &new,
            &other,
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().uid(), 54_321);
    }

    /// Writes through to the file until `left` bytes are used up, then
    /// fails with ENOSPC.
    struct FailAfter<'f> {
        file: &'f File,
        left: usize,
    }

    impl Write for FailAfter<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.left);
            let n = (&mut &*self.file).write(&buf[..n])?;
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FailQuota;

    impl Write for FailQuota {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::EDQUOT))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Reads from a slice in pieces of the given sizes, taken in turn; a
    /// size of 0 stands for an `Interrupted` error.
    struct Chunky<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl<'a> Chunky<'a> {
        fn new(data: &'a [u8], sizes: &[usize]) -> Chunky<'a> {
            assert!(sizes.iter().any(|&n| n > 0));
            Chunky {
                data,
                sizes: sizes.to_vec(),
                next: 0,
            }
        }
    }

    impl Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            if size == 0 {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Reads `data`, then fails.
    struct FailingReader<'a>(&'a [u8]);

    impl Read for FailingReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn quoted_from(body: &[u8], sizes: &[usize], quoting: Quoting) -> Vec<u8> {
        let mut out = Vec::new();
        write_quoted_from(&mut out, &mut Chunky::new(body, sizes), quoting).unwrap();
        out
    }

    fn quoted_bytes(body: &[u8], quoting: Quoting) -> Vec<u8> {
        let mut out = Vec::new();
        write_quoted(&mut out, body, quoting).unwrap();
        out
    }

    #[test]
    fn write_quoted_from_every_split() {
        let bodies: &[&[u8]] = &[
            b"",
            b"\n",
            b"From x\n",
            b">>>From x\n>From\n>>From y",
            b"a\nFrom b\n>From c\nFrom",
            b"x From y\n>>>>\n>>>>Fro\n>>>>From \nFrom ",
            b"From From \n\n\nFrom\r\n>From \xff\n\xffFrom \n",
            b">>>>>>>>",
            b"Fro",
            b"FFrom x\n>>FFrom \n>F>From \nFroFrom \n",
        ];
        for &body in bodies {
            for quoting in [Quoting::Mboxrd, Quoting::Mboxo] {
                let want = quoted_bytes(body, quoting);
                for size in 1..=8 {
                    assert_eq!(
                        quoted_from(body, &[size], quoting),
                        want,
                        "{body:?} by {size}"
                    );
                }
                // Cut once, everywhere.
                for cut in 1..body.len() {
                    let sizes = [cut, body.len() - cut];
                    assert_eq!(
                        quoted_from(body, &sizes, quoting),
                        want,
                        "{body:?} at {cut}"
                    );
                }
            }
        }
        // A long run of `>` across many chunks, and a big body.
        let mut body = vec![b'>'; 100_000];
        body.extend_from_slice(b"From x\n");
        let want = quoted_bytes(&body, Quoting::Mboxrd);
        assert_eq!(want[0], b'>');
        assert_eq!(want.len(), body.len() + 1);
        assert_eq!(quoted_from(&body, &[7, 1000, 3], Quoting::Mboxrd), want);
        let big = "line\nFrom here\n>From there\n".repeat(20_000);
        assert_eq!(
            quoted_from(big.as_bytes(), &[100_000, 1, 0, 4096], Quoting::Mboxrd),
            quoted_bytes(big.as_bytes(), Quoting::Mboxrd)
        );
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"From "[..]),
            Just(&b">From "[..]),
            Just(&b">"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"\xff"[..]),
            Just(&b"\x80F"[..]),
            Just(&b"F"[..]),
            Just(&b"Fro"[..]),
            Just(&b"From"[..]),
            Just(&b"x"[..]),
            Just(&b" "[..]),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn write_quoted_from_matches_write_quoted(
            body in body_strategy(),
            sizes in proptest::collection::vec(0usize..9, 1..20),
            mboxrd in any::<bool>(),
        ) {
            let quoting = if mboxrd { Quoting::Mboxrd } else { Quoting::Mboxo };
            let mut sizes = sizes;
            sizes.push(1); // at least one that reads something
            prop_assert_eq!(quoted_from(&body, &sizes, quoting), quoted_bytes(&body, quoting));
        }
    }

    /// What is in `dir` besides the mailbox `me`: no temporary files or
    /// dotlocks may be left behind.
    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "me")
            .collect();
        names.sort();
        names
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn append_rolls_back_on_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"first\n",
        )
        .unwrap();
        let before = std::fs::read(&path).unwrap();

        let big = "a line of text\nFrom someone\n".repeat(10_000);
        for left in [0, 10, 100, 70_000, 200_000] {
            let mut mailbox =
                open_locked(&path, &me(), &opts(Duration::from_secs(5)), far()).unwrap();
            assert_eq!(mailbox.old_size(), before.len() as u64);
            let res = mailbox.write_with(
                FROM,
                HEADERS,
                &mut Chunky::new(big.as_bytes(), &[1000, 3, 70_000]),
                |file| Box::new(FailAfter { file, left }),
            );
            assert!(matches!(res, Err(MboxError::NoSpace)), "{res:?}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "left {left}");
            mailbox.unlock();
        }

        let mut mailbox = open_locked(&path, &me(), &opts(Duration::from_secs(5)), far()).unwrap();
        let res = mailbox.write_with(FROM, HEADERS, &mut &b"x\n"[..], |_| Box::new(FailQuota));
        assert!(matches!(res, Err(MboxError::Quota)), "{res:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // A body that cannot be read to its end is not delivered either.
        let res = mailbox.append(FROM, HEADERS, &mut FailingReader(big.as_bytes()));
        assert!(matches!(res, Err(MboxError::Io(_))), "{res:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        drop(mailbox);

        // And the mailbox still takes mail afterwards.
        append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"second\n",
        )
        .unwrap();
        let mut want = before.clone();
        want.extend_from_slice(&message(b"second\n"));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn streaming_append_matches_slice_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let body = b"Subject: s\n\nFrom x\n>From y\nlast".repeat(5000);
        let mut mailbox = open_locked(&path, &me(), &opts(Duration::from_secs(5)), far()).unwrap();
        assert_eq!(mailbox.path(), path);
        assert_eq!(mailbox.old_size(), 0);
        let n = mailbox
            .append(
                FROM,
                HEADERS,
                &mut Chunky::new(&body, &[1, 4095, 70_000, 0]),
            )
            .unwrap();
        mailbox.unlock();
        assert_eq!(std::fs::read(&path).unwrap(), message(&body));
        assert_eq!(n, message(&body).len() as u64);
    }

    #[test]
    fn rollback_undoes_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        append(
            &a,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"old a\n",
        )
        .unwrap();
        std::fs::write(&b, b"").unwrap();
        let before_a = std::fs::read(&a).unwrap();

        let o = opts(Duration::from_secs(5));
        let mut ma = open_locked(&a, &me(), &o, far()).unwrap();
        let mut mb = open_locked(&b, &me(), &o, far()).unwrap();
        assert_eq!(ma.old_size(), before_a.len() as u64);
        assert_eq!(mb.old_size(), 0);
        ma.append(FROM, HEADERS, &mut &b"new\n"[..]).unwrap();
        mb.append(FROM, HEADERS, &mut &b"new\n"[..]).unwrap();
        assert!(std::fs::metadata(&a).unwrap().len() > before_a.len() as u64);
        assert!(std::fs::metadata(&b).unwrap().len() > 0);
        ma.rollback().unwrap();
        mb.rollback().unwrap();
        ma.unlock();
        mb.unlock();
        assert_eq!(std::fs::read(&a).unwrap(), before_a);
        assert_eq!(std::fs::read(&b).unwrap(), b"");
        assert!(!dotlock_path(&a).exists());
        assert!(!dotlock_path(&b).exists());
    }

    /// True if `prog` is on the PATH.
    fn have(prog: &str) -> bool {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                std::fs::metadata(dir.join(prog))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
    }

    /// A python3 child that holds a lock on `path` for `secs`, returned once
    /// it has the lock: `how` is `lockf` (a classic POSIX lock) or `flock`.
    fn hold_lock(path: &Path, how: &str, secs: f64) -> Child {
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1], 'r+')\n\
                      if sys.argv[2] == 'flock':\n    fcntl.flock(f, fcntl.LOCK_EX)\n\
                      else:\n    fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      print('locked', flush=True)\n\
                      time.sleep(float(sys.argv[3]))\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(how)
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        child
    }

    /// Whether another process could take a lock on `path` at once: `how`
    /// is `lockf` or `flock`.
    fn lock_is_free(path: &Path, how: &str) -> bool {
        let script = "import fcntl, sys\n\
                      f = open(sys.argv[1], 'r+')\n\
                      try:\n    \
                          if sys.argv[2] == 'flock':\n        \
                              fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    \
                          else:\n        \
                              fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                      except OSError:\n    print('busy')\n    sys.exit(0)\n\
                      print('free')\n";
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(how)
            .output()
            .expect("python3");
        assert!(out.status.success(), "{out:?}");
        match String::from_utf8_lossy(&out.stdout).trim() {
            "free" => true,
            "busy" => false,
            other => panic!("python3 said {other:?}"),
        }
    }

    fn dotlockfile(args: &[&str], lock: &Path) -> bool {
        Command::new("dotlockfile")
            .args(args)
            .arg(lock)
            .status()
            .expect("dotlockfile")
            .success()
    }

    /// Delivers `body` to `path` on another thread.
    fn deliver_in_background(
        path: &Path,
        timeout: Duration,
        body: &'static [u8],
    ) -> thread::JoinHandle<Result<u64, MboxError>> {
        let path = path.to_owned();
        thread::spawn(move || {
            let mut mailbox = open_locked(&path, &me(), &opts(timeout), far())?;
            let n = mailbox.append(FROM, HEADERS, &mut &body[..])?;
            mailbox.unlock();
            Ok(n)
        })
    }

    #[test]
    fn append_waits_for_a_posix_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"").unwrap();

        let start = Instant::now();
        let mut child = hold_lock(&path, "lockf", 1.0);
        let handle = deliver_in_background(&path, Duration::from_secs(5), b"x\n");
        thread::sleep(Duration::from_millis(500));
        // Waiting, and holding nothing else meanwhile.
        assert!(!handle.is_finished());
        assert!(!dotlock_path(&path).exists());
        assert!(lock_is_free(&path, "flock"));
        handle.join().unwrap().unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(800), "{waited:?}");
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(&path).unwrap(), message(b"x\n"));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn append_times_out_on_a_posix_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();

        let mut child = hold_lock(&path, "lockf", 3.0);
        let start = Instant::now();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_millis(200)),
            FROM,
            HEADERS,
            b"x\n",
        );
        let waited = start.elapsed();
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");

        // The caller's deadline counts too, when it comes first.
        let start = Instant::now();
        let res = open_locked(
            &path,
            &me(),
            &opts(Duration::from_secs(30)),
            Instant::now() + Duration::from_millis(200),
        );
        let waited = start.elapsed();
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");

        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn append_waits_for_a_dotlock() {
        if !have("dotlockfile") {
            eprintln!("SKIP append_waits_for_a_dotlock: dotlockfile not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        assert!(dotlockfile(&["-l", "-r", "0"], &lock));

        let start = Instant::now();
        let releaser = {
            let (path, lock) = (path.clone(), lock.clone());
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(500));
                // Nothing written while the dotlock is held.
                let mid = std::fs::read(&path).unwrap();
                thread::sleep(Duration::from_millis(500));
                assert!(dotlockfile(&["-u"], &lock));
                mid
            })
        };
        append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"x\n",
        )
        .unwrap();
        let waited = start.elapsed();
        assert_eq!(releaser.join().unwrap(), b"old\n");
        assert!(waited >= Duration::from_millis(800), "{waited:?}");
        let mut want = b"old\n".to_vec();
        want.extend_from_slice(&message(b"x\n"));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn append_times_out_on_a_dotlock() {
        if !have("dotlockfile") {
            eprintln!("SKIP append_times_out_on_a_dotlock: dotlockfile not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        assert!(dotlockfile(&["-l", "-r", "0"], &lock));
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_millis(200)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
        // Theirs is left alone, and nothing of ours is left behind.
        assert_eq!(std::fs::read(&lock).unwrap(), b"0\n");
        assert_eq!(leftovers(dir.path()), vec!["me.lock".to_owned()]);
        assert!(dotlockfile(&["-u"], &lock));
    }

    #[test]
    fn append_waits_for_a_flock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();

        let start = Instant::now();
        let mut child = hold_lock(&path, "flock", 1.0);
        let handle = deliver_in_background(&path, Duration::from_secs(5), b"x\n");
        thread::sleep(Duration::from_millis(500));
        assert!(!handle.is_finished());
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
        handle.join().unwrap().unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(800), "{waited:?}");
        assert!(child.wait().unwrap().success());
        let mut want = b"old\n".to_vec();
        want.extend_from_slice(&message(b"x\n"));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn append_times_out_on_a_flock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();

        let mut child = hold_lock(&path, "flock", 3.0);
        let start = Instant::now();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_millis(200)),
            FROM,
            HEADERS,
            b"x\n",
        );
        let waited = start.elapsed();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
        // Our dotlock, taken and dropped on every round, is gone.
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn other_programs_see_all_three_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        let dotlock = have("dotlockfile");
        if !dotlock {
            eprintln!(
                "SKIP other_programs_see_all_three_locks (dotlock part): dotlockfile not installed"
            );
        }

        let mailbox = open_locked(&path, &me(), &opts(Duration::from_secs(5)), far()).unwrap();
        assert!(!lock_is_free(&path, "lockf"));
        assert!(!lock_is_free(&path, "flock"));
        assert_eq!(std::fs::read(&lock).unwrap(), b"0\n");
        if dotlock {
            assert!(!dotlockfile(&["-l", "-r", "0"], &lock));
        }
        // Only the mailbox and our dotlock: the temporary file is gone.
        assert_eq!(leftovers(dir.path()), vec!["me.lock".to_owned()]);

        mailbox.unlock();
        assert!(!lock.exists());
        assert!(lock_is_free(&path, "lockf"));
        assert!(lock_is_free(&path, "flock"));
        if dotlock {
            assert!(dotlockfile(&["-l", "-r", "0"], &lock));
            assert!(dotlockfile(&["-u"], &lock));
        }
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn locked_mailbox_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<LockedMailbox>();
    }

    #[test]
    fn dropping_releases_all_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let mailbox = open_locked(&path, &me(), &opts(Duration::from_secs(5)), far()).unwrap();
        assert!(dotlock_path(&path).exists());
        drop(mailbox);
        assert!(!dotlock_path(&path).exists());
        assert!(lock_is_free(&path, "lockf"));
        assert!(lock_is_free(&path, "flock"));
    }

    #[test]
    fn stale_dotlock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        std::fs::write(&lock, b"12345\n").unwrap();
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(600))
            .unwrap();

        let mailbox = open_locked(&path, &me(), &opts(Duration::from_secs(2)), far()).unwrap();
        // The lock now is ours.
        assert_eq!(std::fs::read(&lock).unwrap(), b"0\n");
        mailbox.unlock();
        assert!(!lock.exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn fresh_dotlock_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        std::fs::write(&lock, b"theirs\n").unwrap();

        let res = open_locked(&path, &me(), &opts(Duration::from_millis(300)), far());
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        assert_eq!(std::fs::read(&lock).unwrap(), b"theirs\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");

        // A shorter staleness limit makes it stale.
        let mut o = opts(Duration::from_millis(300));
        o.stale_lock = Duration::ZERO;
        thread::sleep(Duration::from_millis(20));
        open_locked(&path, &me(), &o, far()).unwrap().unlock();
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    /// A python3 child that, for `secs`, keeps checking whether it could
    /// take a classic POSIX lock on `path` (and, if `also_no_dotlock`,
    /// whether `path.lock` is absent at the same moment), holding a flock
    /// on `path` throughout if `hold_flock`. Returned once it is ready;
    /// prints `TRIES FREE` at the end.
    fn probe(path: &Path, secs: f64, hold_flock: bool, also_no_dotlock: bool) -> Child {
        let script = "import fcntl, os, sys, time\n\
                      path, secs = sys.argv[1], float(sys.argv[2])\n\
                      hold, nodot = sys.argv[3] == '1', sys.argv[4] == '1'\n\
                      f = open(path, 'r+')\n\
                      if hold:\n    fcntl.flock(f, fcntl.LOCK_EX)\n\
                      print('ready', flush=True)\n\
                      sys.stdin.readline()\n\
                      g = open(path, 'r+')\n\
                      tries = free = 0\n\
                      end = time.monotonic() + secs\n\
                      while time.monotonic() < end:\n    \
                          tries += 1\n    \
                          dot = os.path.exists(path + '.lock')\n    \
                          try:\n        \
                              fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        \
                              fcntl.lockf(g, fcntl.LOCK_UN)\n        \
                              if not (nodot and dot):\n            \
                                  free += 1\n    \
                          except OSError:\n        \
                              pass\n    \
                          time.sleep(0.005)\n\
                      print(tries, free, flush=True)\n";
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(secs.to_string())
            .arg(flag(hold_flock))
            .arg(flag(also_no_dotlock))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    }

    /// Lets a [`probe`] start probing, waits for its report, and returns
    /// (tries, free).
    fn probe_result(mut child: Child) -> (u32, u32) {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let nums: Vec<u32> = text
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        (nums[0], nums[1])
    }

    #[test]
    fn no_lock_is_held_while_waiting_for_a_dotlock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        std::fs::write(&lock, b"0\n").unwrap(); // someone else's, fresh

        let child = probe(&path, 1.0, false, false);
        let handle = deliver_in_background(&path, Duration::from_secs(10), b"x\n");
        thread::sleep(Duration::from_millis(100));
        let (tries, free) = probe_result(child);
        // Still waiting, yet the fcntl lock was free (nearly) all along.
        assert!(!handle.is_finished());
        assert!(tries > 10, "{tries}");
        assert!(free > tries / 2, "{free} of {tries}");
        assert!(lock_is_free(&path, "flock"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");

        std::fs::remove_file(&lock).unwrap();
        handle.join().unwrap().unwrap();
        assert!(std::fs::read(&path).unwrap().ends_with(&message(b"x\n")));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn no_lock_is_held_while_waiting_for_a_flock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();

        let child = probe(&path, 1.0, true, true);
        let handle = deliver_in_background(&path, Duration::from_secs(10), b"x\n");
        thread::sleep(Duration::from_millis(100));
        let (tries, free) = probe_result(child);
        // The probe has exited, dropping its flock: now we may finish.
        handle.join().unwrap().unwrap();
        // While we waited, both the fcntl lock and the dotlock were free
        // (nearly) all along.
        assert!(tries > 10, "{tries}");
        assert!(free > tries / 2, "{free} of {tries}");
        assert!(std::fs::read(&path).unwrap().ends_with(&message(b"x\n")));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn unsafe_mailbox_found_under_the_locks_leaves_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        std::fs::hard_link(&path, dir.path().join("other")).unwrap();
        let res = open_locked(&path, &me(), &opts(Duration::from_secs(1)), far());
        assert!(matches!(res, Err(MboxError::Unsafe(_))), "{res:?}");
        assert_eq!(leftovers(dir.path()), vec!["other".to_owned()]);
        assert!(lock_is_free(&path, "lockf"));
        assert!(lock_is_free(&path, "flock"));
    }

    #[test]
    fn ofd_locks_exclude_threads_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let a = File::options()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let b = File::options().append(true).open(&path).unwrap();
        assert!(ofd_lock(&a, libc::F_WRLCK).unwrap());
        assert!(!ofd_lock(&b, libc::F_WRLCK).unwrap());
        // Closing another descriptor of the file does not drop it (a
        // classic POSIX lock would be gone now).
        drop(File::open(&path).unwrap());
        assert!(!ofd_lock(&b, libc::F_WRLCK).unwrap());
        assert!(ofd_lock(&a, libc::F_UNLCK).unwrap());
        assert!(ofd_lock(&b, libc::F_WRLCK).unwrap());

        // And a whole LockedMailbox excludes another thread's.
        let held = open_locked(&path, &me(), &opts(Duration::ZERO), far());
        assert!(matches!(held, Err(MboxError::LockTimeout)), "{held:?}");
        drop(b);
        let held = open_locked(&path, &me(), &opts(Duration::ZERO), far()).unwrap();
        let res = thread::scope(|s| {
            s.spawn(|| open_locked(&path, &me(), &opts(Duration::from_millis(20)), far()))
                .join()
                .unwrap()
        });
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        held.unlock();
    }

    #[test]
    fn concurrent_appends_stay_intact() {
        const THREADS: usize = 8;
        const EACH: usize = 25;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let body = |t: usize, i: usize| {
            let filler = format!("thread {t} message {i} filler line\n").repeat(200 + 37 * i);
            format!(
                "Subject: {t}-{i}\n\n{filler}From inside {t}-{i}\n>From {t}\n{filler}end {t}-{i}"
            )
            .into_bytes()
        };

        let failed = Arc::new(AtomicBool::new(false));
        thread::scope(|s| {
            for t in 0..THREADS {
                let (path, failed) = (&path, failed.clone());
                s.spawn(move || {
                    for i in 0..EACH {
                        let o = opts(Duration::from_secs(60));
                        let res = open_locked(path, &me(), &o, far()).and_then(|mut m| {
                            let n = m.append(FROM, HEADERS, &mut &body(t, i)[..])?;
                            m.unlock();
                            Ok(n)
                        });
                        if let Err(e) = res {
                            failed.store(true, Ordering::Relaxed);
                            panic!("thread {t} message {i}: {e}");
                        }
                    }
                });
            }
        });
        assert!(!failed.load(Ordering::Relaxed));

        let data = std::fs::read(&path).unwrap();
        let expected: Vec<Vec<Vec<u8>>> = (0..THREADS)
            .map(|t| (0..EACH).map(|i| message(&body(t, i))).collect())
            .collect();
        let mut next = [0usize; THREADS];
        let mut pos = 0;
        while pos < data.len() {
            let t = (0..THREADS)
                .find(|&t| next[t] < EACH && data[pos..].starts_with(&expected[t][next[t]]))
                .unwrap_or_else(|| panic!("garbled mailbox at byte {pos}"));
            pos += expected[t][next[t]].len();
            next[t] += 1;
        }
        assert_eq!(next, [EACH; THREADS]);
        let separators = data
            .split(|&b| b == b'\n')
            .filter(|line| line.starts_with(b"From "))
            .count();
        assert_eq!(separators, THREADS * EACH);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    /// postie 5, item 2: the mailbox path is swapped while postie waits
    /// for a lock with the file already open: a hard link to another file
    /// of the recipient's (`~/.ssh/authorized_keys`) that is removed again,
    /// or a different file put in its place. Once every lock is held the
    /// path must still be the file locked: refused, nothing written.
    #[test]
    fn mailbox_swapped_while_waiting_for_a_lock_is_refused() {
        for replace_with_other in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let victim = dir.path().join("authorized_keys");
            std::fs::write(&victim, b"ssh-ed25519 AAAA victim\n").unwrap();
            let path = dir.path().join("me");
            std::fs::hard_link(&victim, &path).unwrap();
            let lock = dotlock_path(&path);
            std::fs::write(&lock, b"0\n").unwrap(); // the attacker's, fresh
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = {
                let path = path.clone();
                thread::spawn(move || {
                    let mut waiting = || {
                        let _ = tx.send(());
                    };
                    let mut hooks = LockHooks {
                        on_busy: Some(&mut waiting),
                        ..LockHooks::default()
                    };
                    let o = opts(Duration::from_secs(60));
                    let mut mb = open_locked_with(&path, &me(), &o, far(), &mut hooks)?;
                    let n = mb.append(FROM, HEADERS, &mut &b"x\n"[..])?;
                    mb.unlock();
                    Ok::<u64, MboxError>(n)
                })
            };
            // The victim is open in the delivery, which waits for the
            // dotlock: swap the path, then let go of the lock.
            rx.recv_timeout(Duration::from_secs(30)).unwrap();
            std::fs::remove_file(&path).unwrap();
            if replace_with_other {
                std::fs::write(&path, b"").unwrap();
            }
            std::fs::remove_file(&lock).unwrap();
            let res = handle.join().unwrap();
            assert_unsafe(res, "replaced");
            assert_eq!(
                std::fs::read(&victim).unwrap(),
                b"ssh-ed25519 AAAA victim\n"
            );
            if replace_with_other {
                assert_eq!(std::fs::read(&path).unwrap(), b"");
            }
            assert!(!lock.exists());
        }
    }

    /// postie 5, item 5: only a small regular file is removed as a stale
    /// dotlock. Anything else by that name (the mailbox of a user called
    /// `me.lock`, a directory) is left alone, and the delivery fails at
    /// once rather than waiting for the lock timeout.
    #[test]
    fn stale_lock_that_is_no_small_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let lock = dotlock_path(&path);
        let mailbox = message(&b"another user's mail\n".repeat(100));
        std::fs::write(&lock, &mailbox).unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let start = Instant::now();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_secs(30)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a small regular file");
        assert!(start.elapsed() < Duration::from_secs(20));
        assert_eq!(std::fs::read(&lock).unwrap(), mailbox);
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");

        std::fs::remove_file(&lock).unwrap();
        std::fs::create_dir(&lock).unwrap();
        File::open(&lock).unwrap().set_modified(old).unwrap();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_secs(30)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a small regular file");
        assert!(lock.is_dir());
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    }

    fn assert_check_unsafe(res: Result<(), MboxError>, contains: &str) {
        match res {
            Err(MboxError::Unsafe(why)) => assert!(why.contains(contains), "{why}"),
            other => panic!("expected Unsafe({contains}), got {other:?}"),
        }
    }

    #[test]
    fn check_applies_the_delivery_rules() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        check(&missing, &me()).unwrap();
        assert!(!missing.exists());

        let good = dir.path().join("good");
        std::fs::write(&good, b"").unwrap();
        check(&good, &me()).unwrap();

        let link = dir.path().join("link");
        symlink(&good, &link).unwrap();
        assert_check_unsafe(check(&link, &me()), "symbolic link");
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert_check_unsafe(check(&dangling, &me()), "symbolic link");

        let linked = dir.path().join("linked");
        std::fs::write(&linked, b"").unwrap();
        std::fs::hard_link(&linked, dir.path().join("linked2")).unwrap();
        assert_check_unsafe(check(&linked, &me()), "has 2 hard links");

        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        assert_check_unsafe(check(&sub, &me()), "not a regular file");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_check_unsafe(check(&fifo, &me()), "not a regular file");

        if geteuid().is_root() {
            let other = User {
                name: "other".into(),
                uid: 54_321,
                gid: 54_321,
            };
            assert_check_unsafe(check(&good, &other), "owned by uid 0, not 54321");
        } else {
            eprintln!("SKIP check_applies_the_delivery_rules (owner part): not running as root");
        }
        // Nothing was created.
        let mut names = leftovers(dir.path());
        names.sort();
        assert_eq!(
            names,
            [
                "dangling", "dir", "fifo", "good", "link", "linked", "linked2", "missing"
            ]
            .iter()
            .filter(|n| **n != "missing")
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
        );
    }
}
