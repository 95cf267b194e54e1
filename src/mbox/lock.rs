//! The mailbox locks: three kinds, taken all or none; several mailboxes
//! locked all or none; and the seams the transaction journal needs.
//!
//! # Locking
//!
//! [`open_locked_with`](super::open_locked_with) takes three locks, in
//! this order (Debian Policy 11.6), so that every other mail program sees
//! the mailbox as busy whichever kind it uses:
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
//!    [`MboxOptions::stale_lock`](super::MboxOptions::stale_lock) (5
//!    minutes by default) is taken to be left over from a crash and
//!    removed, if it is a small regular file (at most [`MAX_DOTLOCK_LEN`]
//!    bytes; anything else is no lock and is left alone:
//!    [`super::MboxError::Unsafe`]). Programs that only
//!    dotlock (older MUAs, `dotlockfile`, `movemail`) see this one. A
//!    file target outside the spool (an alias's `/path`) goes without
//!    it where its identity may not create files in the directory and no
//!    dotlock is there, as Postfix's `MBOX_DOT_LOCK_MAY_FAIL` does for
//!    such files; one that is there is honoured;
//! 3. `flock(LOCK_EX)` on the file, for programs that use only `flock`
//!    (on Linux it does not interact with `fcntl` locks at all).
//!
//! Every lock is tried without blocking. If one is busy, the ones already
//! held are released, the thread sleeps (1 ms, doubling up to 100 ms, plus a
//! little jitter so that waiting deliveries do not retry in step) and starts
//! over from the first: no lock is ever waited for while another is held,
//! so postie cannot deadlock with a program that takes the same locks in
//! another order. The locks are released in the reverse order. The wait is
//! bounded ([`MboxOptions::lock_timeout`](super::MboxOptions::lock_timeout)
//! and the caller's deadline); a mailbox whose locks could not all be had
//! is never written.
//!
//! Across mailboxes the rule is the same: `lock_all_or_none` drives a
//! set of them (a delivery's, or the one recovery undoes, each a
//! `LockSet`), one try each a round, in a fixed order, every lock of the
//! set released at a busy one, then a back-off and another round. The set
//! itself says whose identity each try is made as, what the journal
//! records, what a refusal means and what is logged.
//!
//! [`open_locked_with`](super::open_locked_with) adds the seams of the
//! transaction journal ([`crate::journal`], [`LockHooks`]): each dotlock's identity is told to
//! the journal before its `link()`; recovery takes over the dotlocks a
//! crashed delivery left (known by that identity) instead of waiting for
//! them to go stale; and a delivery is told when it finds a dotlock taken
//! with the fcntl lock free (what a crashed postie leaves), so that it can
//! recover first.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, Flock, FlockArg, fcntl};

use super::{MboxError, SAFE_FLAGS};

/// `timeout` from now, or far enough in the future if that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
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

/// What [`open_locked_with`](super::open_locked_with) does beyond taking
/// the locks: the seams of the transaction journal ([`crate::journal`]).
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

/// Takes the three locks on `file` in order, starting over after a
/// back-off whenever one is busy, until `deadline`. On error every lock
/// taken is released (dropping the file releases the OFD lock).
///
/// `dotlock_may_fail` (a file target's rule, as Postfix's
/// `MBOX_DOT_LOCK_MAY_FAIL`): where the thread's identity may not create
/// the dotlock's temporary file in the directory (`EACCES`, `EPERM`,
/// `EROFS`) and no dotlock is there, the file is locked with the kernel
/// locks only, and no dotlock is returned; a dotlock that is there is
/// honoured (busy), stale or not, as it cannot be removed from there.
pub(super) fn lock_all(
    mut file: File,
    dotlock: &Path,
    stale_lock: Duration,
    dotlock_may_fail: bool,
    deadline: Instant,
    hooks: &mut LockHooks<'_>,
) -> Result<(Flock<File>, Option<DotLock>), MboxError> {
    let mut backoff = Backoff::new();
    let mut dotlock_busy = false;
    loop {
        if ofd_lock(&file, libc::F_WRLCK).map_err(MboxError::Io)? {
            // With `on_busy`, a stale dotlock may be a crashed delivery's,
            // which recovery takes over rather than anyone removing it.
            let stale_ok = hooks.on_busy.is_none() || dotlock_busy || hooks.recovered;
            match DotLock::try_take(dotlock, stale_lock, stale_ok, dotlock_may_fail, hooks)? {
                Some(dot) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(flocked) => {
                        if let Dot::Unwritable(e) = &dot {
                            log::info!(
                                "{}: cannot be made here ({e}): locked with fcntl and flock only",
                                dotlock.display()
                            );
                        }
                        return Ok((flocked, dot.held()));
                    }
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
struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(100);

    fn new() -> Backoff {
        Backoff { delay: Self::FIRST }
    }

    /// Sleeps before the next round, never past `deadline`; `LockTimeout`
    /// if `deadline` has come.
    fn wait(&mut self, deadline: Instant) -> Result<(), MboxError> {
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

/// What one try at one member of a [`LockSet`] found.
pub(crate) enum Try<L> {
    /// Locked: held until the set is all locked, or released.
    Locked(L),
    /// Busy: the round ends here.
    Busy,
    /// Nothing to lock there: the round goes on to the next.
    Skip,
}

/// A set of mailboxes (or other targets) to lock all or none, as
/// [`lock_all_or_none`] drives it: the set's own part of each step (whose
/// identity, which journal, what a refusal means, what is logged).
pub(crate) trait LockSet<'t, T> {
    /// A member locked.
    type Locked;
    type Error;

    /// One try at `target`'s locks, without waiting; an error ends the
    /// locking (the members locked in this round stay held).
    fn try_lock(&mut self, target: &'t T) -> Result<Try<Self::Locked>, Self::Error>;

    /// Releases a member locked in a round that met a busy one.
    fn release(&mut self, locked: Self::Locked);

    /// After a round that met `busy` and released every member, before the
    /// back-off; an error ends the locking.
    fn busy(&mut self, busy: &'t T) -> Result<(), Self::Error>;

    /// After the back-off, before the next round.
    fn again(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The error for a `deadline` come with `busy` still busy.
    fn timed_out(&mut self, busy: &'t T) -> Self::Error;
}

/// Locks every member of `targets`, all or none (DESIGN.md: no lock is
/// waited for while another is held), into `held` (empty at the start):
/// each is tried once a round, in order; at the first busy one, those locked in the round are
/// released in reverse order, [`LockSet::busy`] told, and the whole set
/// tried again after a back-off ([`Backoff`]), until `deadline` (one round
/// if it has come). On success `held` has every member locked, in order;
/// on an error from `set` it has those locked in that round.
pub(crate) fn lock_all_or_none<'t, T, S: LockSet<'t, T>>(
    set: &mut S,
    targets: &'t [T],
    deadline: Instant,
    held: &mut Vec<S::Locked>,
) -> Result<(), S::Error> {
    let mut backoff = Backoff::new();
    loop {
        let mut busy = None;
        for target in targets {
            match set.try_lock(target)? {
                Try::Locked(locked) => held.push(locked),
                Try::Busy => {
                    busy = Some(target);
                    break;
                }
                Try::Skip => {}
            }
        }
        let Some(busy) = busy else {
            return Ok(());
        };
        for locked in held.drain(..).rev() {
            set.release(locked);
        }
        set.busy(busy)?;
        if backoff.wait(deadline).is_err() {
            return Err(set.timed_out(busy));
        }
        set.again()?;
    }
}

/// `path` + `.lock`.
pub(super) fn dotlock_path(path: &Path) -> PathBuf {
    let mut lock = OsString::from(path.as_os_str());
    lock.push(".lock");
    PathBuf::from(lock)
}

/// A dotlock we hold: the lock file, known by its device and inode so that
/// we never remove one that is not ours. Removed when dropped.
#[derive(Debug)]
pub(super) struct DotLock {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Taken over from a crashed postie ([`LockHooks::adopt`]).
    adopted: bool,
    /// Left in place when dropped
    /// ([`LockedMailbox::unlock_keeping_dotlock`](super::LockedMailbox::unlock_keeping_dotlock)).
    keep: bool,
}

/// The largest file removed as a stale dotlock: lock files hold a pid, a
/// host name, or nothing (ours hold `0\n`).
pub const MAX_DOTLOCK_LEN: u64 = 512;

/// Makes the names of our temporary files unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What one try at a dotlock got, when it was not busy.
enum Dot {
    /// The dotlock, ours.
    Held(DotLock),
    /// None: the directory is not writable by this identity, and no
    /// dotlock is there ([`lock_all`]'s `dotlock_may_fail`); why.
    Unwritable(io::Error),
}

impl Dot {
    fn held(self) -> Option<DotLock> {
        match self {
            Dot::Held(d) => Some(d),
            Dot::Unwritable(_) => None,
        }
    }

    fn let_go(self) {
        if let Dot::Held(d) = self {
            d.let_go();
        }
    }
}

/// The errors of a directory this identity may not create files in.
fn unwritable_dir(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

impl DotLock {
    /// One attempt at the dotlock `lock`: `Ok(None)` if someone else holds
    /// it. A lock older than `stale_after` is removed and tried again.
    /// With `may_fail`, a directory where the temporary file cannot be
    /// made gives [`Dot::Unwritable`] if no lock is there.
    fn try_take(
        lock: &Path,
        stale_after: Duration,
        stale_ok: bool,
        may_fail: bool,
        hooks: &mut LockHooks<'_>,
    ) -> Result<Option<Dot>, MboxError> {
        // A few rounds: a stale lock removed, or a lock gone between our
        // `link` and our look at it, is worth another try at once.
        for _ in 0..3 {
            let (temp, temp_file) = match create_temp(lock) {
                Ok(made) => made,
                Err(e) if may_fail && unwritable_dir(&e) => {
                    return match std::fs::symlink_metadata(lock) {
                        Err(gone) if gone.kind() == io::ErrorKind::NotFound => {
                            Ok(Some(Dot::Unwritable(e)))
                        }
                        // Someone's, that we could not remove if stale.
                        Ok(_) => Ok(None),
                        Err(other) => Err(MboxError::Io(other)),
                    };
                }
                Err(e) => return Err(MboxError::from_write(e)),
            };
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
                    return Ok(Some(Dot::Held(DotLock {
                        path: lock.to_owned(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                        adopted: false,
                        keep: false,
                    })));
                }
                // The lock of a crashed postie, named by its journal: ours
                // now (the caller holds the fcntl lock, so no other postie
                // is looking at it).
                if hooks.adopt.contains(&LockId::of(meta)) {
                    return Ok(Some(Dot::Held(DotLock {
                        path: lock.to_owned(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                        adopted: true,
                        keep: false,
                    })));
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

    /// The device and inode of the lock file, if it was taken over from a
    /// crashed postie ([`LockHooks::adopt`]).
    pub(super) fn adopted_id(&self) -> Option<(u64, u64)> {
        self.adopted.then_some((self.dev, self.ino))
    }

    /// Leaves the lock file in place when dropped
    /// ([`LockedMailbox::unlock_keeping_dotlock`](super::LockedMailbox::unlock_keeping_dotlock)).
    pub(super) fn keep(&mut self) {
        self.keep = true;
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
    use crate::mbox::testutil::*;
    use crate::mbox::{append, open_locked};

    /// A [`LockSet`] that plays a script: each target is busy for its
    /// first `busy` tries, or skipped, or an error; every call logged,
    /// with what the set holds when it is told of a busy one.
    struct Script {
        tries: std::collections::HashMap<&'static str, usize>,
        holding: Vec<&'static str>,
        log: Vec<String>,
    }

    struct Member {
        name: &'static str,
        busy: usize,
        skip: bool,
        fails: bool,
    }

    fn member(name: &'static str) -> Member {
        Member {
            name,
            busy: 0,
            skip: false,
            fails: false,
        }
    }

    impl<'t> LockSet<'t, Member> for Script {
        type Locked = &'static str;
        type Error = String;

        fn try_lock(&mut self, m: &'t Member) -> Result<Try<&'static str>, String> {
            self.log.push(format!("try {}", m.name));
            let tries = self.tries.entry(m.name).or_default();
            *tries += 1;
            // A broken loop fails here rather than at its deadline.
            assert!(*tries < 10, "{} tried again and again", m.name);
            if m.fails {
                return Err(format!("{} failed", m.name));
            }
            if m.skip {
                return Ok(Try::Skip);
            }
            if *tries <= m.busy {
                return Ok(Try::Busy);
            }
            self.holding.push(m.name);
            Ok(Try::Locked(m.name))
        }

        fn release(&mut self, locked: &'static str) {
            // In reverse order: the last one locked goes first.
            assert_eq!(self.holding.pop(), Some(locked));
            self.log.push(format!("release {locked}"));
        }

        fn busy(&mut self, m: &'t Member) -> Result<(), String> {
            self.log
                .push(format!("busy {}, holding {:?}", m.name, self.holding));
            Ok(())
        }

        fn again(&mut self) -> Result<(), String> {
            self.log.push("again".into());
            Ok(())
        }

        fn timed_out(&mut self, m: &'t Member) -> String {
            format!("{} timed out", m.name)
        }
    }

    fn run(
        members: &[Member],
        deadline: Instant,
    ) -> (Result<(), String>, Vec<&'static str>, Script) {
        let mut script = Script {
            tries: Default::default(),
            holding: Vec::new(),
            log: Vec::new(),
        };
        let mut held = Vec::new();
        let res = lock_all_or_none(&mut script, members, deadline, &mut held);
        (res, held, script)
    }

    #[test]
    fn all_or_none_releases_everything_at_a_busy_one_and_tries_again() {
        let members = [
            member("a"),
            member("b"),
            Member {
                busy: 1,
                ..member("c")
            },
            member("d"),
        ];
        let (res, held, script) = run(&members, far());
        assert_eq!(res, Ok(()));
        assert_eq!(held, ["a", "b", "c", "d"]);
        assert_eq!(script.holding, held);
        assert_eq!(
            script.log,
            [
                "try a",
                "try b",
                "try c",
                "release b",
                "release a",
                "busy c, holding []",
                "again",
                "try a",
                "try b",
                "try c",
                "try d",
            ]
        );
    }

    #[test]
    fn all_or_none_with_its_deadline_come_tries_one_round() {
        let members = [
            member("a"),
            Member {
                busy: usize::MAX,
                ..member("b")
            },
            member("c"),
        ];
        let (res, held, script) = run(&members, Instant::now());
        assert_eq!(res, Err("b timed out".to_string()));
        assert!(held.is_empty());
        assert!(script.holding.is_empty());
        assert_eq!(
            script.log,
            ["try a", "try b", "release a", "busy b, holding []"]
        );
    }

    #[test]
    fn all_or_none_goes_past_a_skipped_one() {
        let members = [
            Member {
                skip: true,
                ..member("a")
            },
            Member {
                busy: 1,
                ..member("b")
            },
            member("c"),
        ];
        let (res, held, script) = run(&members, far());
        assert_eq!(res, Ok(()));
        assert_eq!(held, ["b", "c"]);
        assert_eq!(
            script.log,
            [
                "try a",
                "try b",
                "busy b, holding []",
                "again",
                "try a",
                "try b",
                "try c",
            ]
        );
    }

    #[test]
    fn all_or_none_leaves_the_round_held_on_an_error() {
        let members = [
            member("a"),
            Member {
                fails: true,
                ..member("b")
            },
            member("c"),
        ];
        let (res, held, script) = run(&members, far());
        assert_eq!(res, Err("b failed".to_string()));
        assert_eq!(held, ["a"]);
        assert_eq!(script.log, ["try a", "try b"]);
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
}
