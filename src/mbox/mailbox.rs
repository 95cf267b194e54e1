//! One mailbox, opened safely and locked: the [`LockedMailbox`] that
//! deliveries and recovery append through, sync, roll back and unlock.
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
//! A file target outside the spool (an alias's or a `.forward`'s
//! `/path`: [`open_file_locked_with`]) is opened, locked and written the
//! same way, under the rules Postfix's local(8) applies to such a file
//! (`Rules::File`): no owner check (the identity's right to write it is
//! the kernel's to check), never an executable file, created mode 0600
//! by the identity, and the dotlock skipped where the identity may not
//! create it.

use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{FcntlArg, Flock, OFlag, fcntl};
use nix::unistd::{Gid, Uid, fchown, geteuid};

use super::format::{Quoting, write_message};
use super::lock::{DotLock, LockHooks, deadline_after, dotlock_path, lock_all, ofd_lock};
use super::{MboxError, MboxOptions, SAFE_FLAGS};
use crate::users::User;

/// A mailbox opened and locked for appending. Holds all three locks (see
/// [`lock`](super::lock)) until dropped or
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
///
/// `hooks` are the seams of the transaction journal ([`LockHooks`]).
pub fn open_locked_with(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    deadline: Instant,
    hooks: &mut LockHooks<'_>,
) -> Result<LockedMailbox, MboxError> {
    open_locked_under(Rules::Mailbox, path, owner, opts, deadline, hooks)
}

/// [`open_locked_with`] for a file target outside the spool (an alias's
/// `/path`), under a file's rules (`Rules::File`): `owner` is the
/// identity it is written with (the thread's filesystem identity when
/// root).
pub fn open_file_locked_with(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    deadline: Instant,
    hooks: &mut LockHooks<'_>,
) -> Result<LockedMailbox, MboxError> {
    open_locked_under(Rules::File, path, owner, opts, deadline, hooks)
}

/// Which safe-open rules a file is opened under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// A mailbox of the spool: owned by its user; created with the
    /// options' mode, group `mail`; all three locks.
    Mailbox,
    /// A file target, as Postfix's local(8) delivers to one: whoever owns
    /// it (the identity's right to write it is the kernel's to check, and
    /// a hard link to someone else's file is refused by its link count),
    /// never executable; created 0600 by the identity, its group the
    /// identity's; where the identity may not make the dotlock in its
    /// directory, the kernel locks only. Texts say "is a symbolic link",
    /// for "PATH: is a symbolic link; not delivered".
    File,
}

/// The mode a missing file target is created with (Postfix's
/// `S_IRUSR | S_IWUSR`), whatever the mailboxes' mode.
const FILE_MODE: u32 = 0o600;

fn open_locked_under(
    rules: Rules,
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    deadline: Instant,
    hooks: &mut LockHooks<'_>,
) -> Result<LockedMailbox, MboxError> {
    let deadline = deadline.min(deadline_after(opts.lock_timeout));
    let file = open_mailbox(rules, path, owner, opts, hooks.recovery)?;
    let may_fail = rules == Rules::File;
    let (file, dotlock) = lock_all(
        file,
        &dotlock_path(path),
        opts.stale_lock,
        may_fail,
        deadline,
        hooks,
    )?;
    let mut mailbox = LockedMailbox {
        file: Some(file),
        dotlock,
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
    check_meta(rules, &meta, owner)?;
    same_file_at(rules, path, &meta)?;
    mailbox.old_size = meta.len();
    mailbox.dev = meta.dev();
    mailbox.ino = meta.ino();
    Ok(mailbox)
}

/// [`open_locked_with`] without the journal's seams (tests).
#[cfg(test)]
pub fn open_locked(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    deadline: Instant,
) -> Result<LockedMailbox, MboxError> {
    open_locked_with(path, owner, opts, deadline, &mut LockHooks::default())
}

/// Appends one message to the mailbox at `path`, owned by `owner`, creating
/// it if missing: [`open_locked`], [`LockedMailbox::append`] and
/// [`LockedMailbox::unlock`] in one. Writes `from_line`, `headers` (already
/// LF-terminated lines), the quoted `body`, and a blank line; fsyncs; on
/// any error truncates the file back to its old size. Returns the bytes
/// appended.
#[cfg(test)]
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
        self.dotlock.as_ref().and_then(DotLock::adopted_id)
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
            d.keep();
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
    #[cfg(test)]
    pub fn append(
        &mut self,
        from_line: &str,
        headers: &[u8],
        body: &mut dyn Read,
    ) -> Result<u64, MboxError> {
        let n = self.write_with(from_line, headers, body, |file| Box::new(file))?;
        self.sync().map(|()| n)
    }

    /// The first half of `append`: the writes, not the
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

    /// The second half of an append (after `write_with`): `fdatasync`,
    /// which is enough: it also flushes the metadata needed to read the data back,
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

/// The RCPT-time check on the mailbox at `path`: `Ok(())` if it is missing
/// (delivery will create it) or is a regular file with one link owned by
/// `owner` (by the effective uid when not root), the rule delivery applies;
/// [`MboxError::Unsafe`] otherwise. Uses `lstat` only: never creates
/// anything, never opens anything.
pub fn check(path: &Path, owner: &User) -> Result<(), MboxError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_meta(Rules::Mailbox, &meta, owner),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MboxError::Io(e)),
    }
}

/// The rules for a file postie writes to, on its (l)stat: a regular
/// file, one link; a mailbox owned by its user, a file target not
/// executable.
fn check_meta(rules: Rules, meta: &Metadata, owner: &User) -> Result<(), MboxError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(symlink(rules));
    }
    if !kind.is_file() {
        return Err(not_regular(rules));
    }
    if meta.nlink() != 1 {
        return Err(MboxError::Unsafe(format!(
            "has {} hard links",
            meta.nlink()
        )));
    }
    if rules == Rules::File {
        return if meta.mode() & 0o111 != 0 {
            Err(MboxError::Unsafe("is executable".into()))
        } else {
            Ok(())
        };
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
fn same_file_at(rules: Rules, path: &Path, meta: &Metadata) -> Result<(), MboxError> {
    let replaced = || {
        MboxError::Unsafe(match rules {
            Rules::Mailbox => "mailbox removed or replaced while it was being locked".into(),
            Rules::File => "was removed or replaced while it was being locked".into(),
        })
    };
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => Ok(()),
        Ok(_) => Err(replaced()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(replaced()),
        Err(e) => Err(MboxError::Io(e)),
    }
}

fn is_root() -> bool {
    geteuid().is_root()
}

fn symlink(rules: Rules) -> MboxError {
    MboxError::Unsafe(match rules {
        Rules::Mailbox => "mailbox is a symbolic link".into(),
        Rules::File => "is a symbolic link".into(),
    })
}

fn not_regular(rules: Rules) -> MboxError {
    MboxError::Unsafe(match rules {
        Rules::Mailbox => "not a regular file".into(),
        Rules::File => "is not a regular file".into(),
    })
}

fn unsafe_open(rules: Rules, e: &io::Error) -> Option<MboxError> {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Some(symlink(rules)),
        // EISDIR: a directory; ENXIO: a FIFO without reader or a device.
        Some(libc::EISDIR) | Some(libc::ENXIO) => Some(not_regular(rules)),
        _ => None,
    }
}

/// Opens the mailbox for appending, creating it if missing, and makes sure
/// it is a regular file.
fn open_mailbox(
    rules: Rules,
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
            Err(e) => return Err(unsafe_open(rules, &e).unwrap_or(MboxError::Io(e))),
        }
        match create(rules, path, owner, opts) {
            Ok(file) => break file,
            // Someone created it between our two opens: open theirs, once.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 2 => continue,
            Err(e) => return Err(unsafe_open(rules, &e).unwrap_or(MboxError::Io(e))),
        }
    };

    let meta = file.metadata().map_err(MboxError::Io)?;
    if !meta.file_type().is_file() {
        return Err(not_regular(rules));
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
/// its user and the group `mail` (a file target: mode [`FILE_MODE`], the
/// identity's uid and gid), and makes its directory entry durable.
fn create(rules: Rules, path: &Path, owner: &User, opts: &MboxOptions) -> io::Result<File> {
    let mode = match rules {
        Rules::Mailbox => opts.mode,
        Rules::File => FILE_MODE,
    };
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
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
        file.set_permissions(Permissions::from_mode(mode))?;
        if is_root() {
            let gid = match rules {
                Rules::Mailbox => crate::users::mail_gid().unwrap_or(owner.gid),
                // Made as the identity already: this only makes sure.
                Rules::File => owner.gid,
            };
            fchown(
                &file,
                Some(Uid::from_raw(owner.uid)),
                Some(Gid::from_raw(gid)),
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbox::testutil::*;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::Duration;

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
            ..Default::default()
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

    #[test]
    fn locked_mailbox_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<LockedMailbox>();
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
                ..Default::default()
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
