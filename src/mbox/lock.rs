//! The mailbox locks: three kinds, taken all or none, and the seams the
//! transaction journal needs.
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
//!    [`MboxError::Unsafe`](super::MboxError::Unsafe)). Programs that only
//!    dotlock (older MUAs, `dotlockfile`, `movemail`) see this one;
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
pub(super) fn lock_all(
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
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};

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
}
