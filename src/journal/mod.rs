//! The transaction journal: all or nothing across a crash.
//!
//! A delivery appends one message to several mailboxes and rolls every one
//! back if any fails ([`crate::deliver`]). A crash (`SIGKILL`, a power
//! failure, a kernel panic) in the middle leaves no one to roll back: a
//! mailbox may end in part of a message, those already written keep the
//! whole message while the client, which got no `250`, sends it again, and
//! the dotlocks stay, blocking the mailboxes until they are stale (5
//! minutes). The journal is what lets the next postie undo such a delivery.
//!
//! # Journal files
//!
//! A journal is a file in the spool directory,
//! `SPOOL/.postie-txn.PID.N.RANDOM`, created with `O_EXCL` (mode 0600) by
//! the delivering process under its own identity (root, or the user postie
//! runs as), never a recipient's: recovery trusts only files of its own uid,
//! which no mail user can have written. It is created once, filled with
//! 4 KiB of zeros and synced, with the spool directory, and then serves one
//! delivery after another ([`Journals`] keeps the idle ones, and removes
//! them at exit): each delivery overwrites it in place, so that syncing it
//! is a data-only `fdatasync`, with no file created, grown or removed. It
//! is locked with an OFD `fcntl` write lock as long as its process has it
//! open: a journal whose lock can be taken belongs to a process that is
//! gone (the kernel drops the locks of a process that dies).
//!
//! A delivery writes, each line tagged with a random generation number that
//! tells it from what earlier deliveries left further on in the file:
//!
//! 1. a header with the generation;
//! 2. before it locks anything, its *intent* ([`Journal::intend`]): the
//!    beginning of every append (the `From ` line and the trace headers,
//!    which hold the message's unique ID), the exact length of an append,
//!    the mailboxes (name in the spool, or a file target's absolute path,
//!    and the identity they are written with), and a count and a checksum;
//!    then `fdatasync`;
//! 3. while it locks the mailboxes, a `lock` line for each dotlock about to
//!    be made, *before* its `link()` ([`crate::mbox::LockHooks`]): the lock
//!    file's device, inode and modification time, so that a dotlock a crash
//!    leaves behind is known for ours (even if the inode number is used
//!    again) and taken over. Every attempt makes a new temporary file, so
//!    each is recorded; when a busy mailbox makes the delivery release
//!    every lock and try the whole set again, the next round's lines are
//!    written over this round's ([`Journal::released`]), whose dotlocks
//!    are gone: the journal does not grow with the wait;
//! 4. once every mailbox is locked, before the first append
//!    ([`Journal::record_starts`]): each mailbox's device, inode and size, where
//!    its append begins (not synced, unless a file target is among them:
//!    [`Journal::sync`]);
//! 5. the appends, each followed by `fdatasync`, as without the journal;
//! 6. [`Journal::settle`]: the intent spoiled (one byte), then, after the
//!    locks are released, the header marked idle ([`Journal::end`]).
//!    Neither is synced; `250` follows.
//!
//! The intent is synced before any lock is taken, so that the sync holds
//! up no other delivery to the same mailboxes: the mailboxes stay locked
//! for exactly as long as without a journal. Where the appends begin is
//! known only under the locks, and is not synced: a process that dies
//! leaves its writes in the page cache, so after a process crash it is
//! there if any append was begun; after a power failure it may be lost,
//! and recovery then finds the appends by their beginning, which is unique
//! to the message.
//!
//! There is no synced commit record either: a delivery is over once every
//! mailbox holds the whole append, which recovery sees for itself. That
//! last append is the commit point: from there on recovery keeps the
//! message everywhere, before it removes it everywhere, and the client
//! hears `250` only after it. A failed delivery (4xx) truncates its
//! mailboxes back, then settles the journal *with* a sync, before it
//! releases the locks; if it can do neither, it keeps its dotlocks and
//! leaves the journal to recovery.
//!
//! The cost over a delivery without journal is one data-only `fdatasync`
//! of a 4 KiB file, outside the locks, and a few `pwrite`s. Syncing the
//! journal under the locks (after the sizes are known) made deliveries to
//! one mailbox, which wait for each other's locks, about half as fast; a
//! journal created for each delivery and unlinked as its synced commit
//! record, each time with a sync of the directory, about six times slower.
//!
//! # Where each part is
//!
//! * this file: [`Journal`], the writer a delivery calls at each step
//!   above, and [`Journals`], the journals of one process;
//! * `record.rs`: the format on disk (header, lines, checksums) and its
//!   parser, pure, without any file system access;
//! * `recover.rs`: [`recover()`], which finds the journals of processes that
//!   are gone and deals with each;
//! * `undo.rs`: what recovery does for a delivery that may have appended:
//!   locks its mailboxes again, sorts out what each holds, truncates;
//! * `dotlocks.rs`: the identity recovery acts as for each target, and
//!   the removal of the dotlocks a dead delivery left.
//!
//! # File targets
//!
//! A file outside the spool (an alias's or a `.forward`'s `/path`,
//! [`crate::deliver`]) is journalled as a mailbox is, named by its
//! absolute path, with the identity it is written with. Recovery handles
//! it as that identity only (never as root: a journal naming a file
//! written as root, which no delivery writes, is left alone), removes its
//! dotlock as that identity, and truncates it only back to where the
//! journal says its append began, and only if it is the very file
//! recorded (device and inode). Its start is therefore synced before any
//! append, and a file's append is never looked for by its beginning as a
//! mailbox's is after a power failure: a journal of such a delivery
//! without a start means nothing was appended. A journal is trusted as
//! before: only a regular file of our own uid with one link in the
//! spool.
//!
//! Calls go one way: the format depends on neither the writer nor
//! recovery; recovery uses the writer (a dotlock it makes is recorded in a
//! journal of its own) and the format; the writer calls nothing of
//! recovery (this file only re-exports it).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mbox::{self, LockId};
use crate::sys;

mod dotlocks;
mod record;
mod recover;
#[cfg(test)]
mod testutil;
mod undo;

#[cfg(test)]
pub(crate) use record::PREFIX;
pub use record::{AppendStart, QueueStep, Want, target_path, valid_file_name};
use record::{HEADER_LEN, IDLE, SETTLED, SETTLED_AT, SLOT_SIZE, dotlock_path, header};
pub use recover::{QueueRecovery, Summary, recover};
#[cfg(test)]
pub(crate) use testutil::crashed_delivery;

/// One journal file, used by one delivery at a time. Dropping it closes it
/// and leaves the file to recovery.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    name: String,
    /// The current delivery's generation.
    generation: u64,
    /// Bytes of the current delivery written.
    len: u64,
    /// Where the `lock` lines of the current round of locking begin: the
    /// next round's overwrite them ([`released`](Self::released)).
    locks_at: u64,
    /// The dotlocks those lines name: mailbox name and lock.
    round: Vec<(String, LockId)>,
}

/// Makes journal names and generations unique within this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

const SAFE_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NOCTTY;

impl Journal {
    /// Creates, locks and fills a new journal in `spool`, durably (with
    /// the spool directory), with this thread's filesystem identity: call
    /// it outside any [`sys::become_fs`].
    pub fn create(spool: &Path) -> io::Result<Journal> {
        let mut tries = 0;
        loop {
            tries += 1;
            let name = record::name(
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                sys::random_u64(),
            );
            let path = spool.join(&name);
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(SAFE_FLAGS)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => continue,
                Err(e) => return Err(e),
            };
            // A recovery may have found it in the instant before this lock,
            // empty and unlocked, taken it for the leftover of a crash and
            // removed it: then it is locked by that recovery, or unlinked.
            // Start over under another name.
            if !mbox::ofd_lock(&file, libc::F_WRLCK)? || file.metadata()?.nlink() == 0 {
                if tries < 10 {
                    continue;
                }
                return Err(io::Error::other("could not lock a new journal"));
            }
            let setup = (|| {
                let mut zeros = vec![0u8; SLOT_SIZE];
                zeros[..HEADER_LEN].copy_from_slice(&header(IDLE));
                file.write_all_at(&zeros, 0)?;
                file.sync_all()?;
                File::open(spool)?.sync_all()
            })();
            if let Err(e) = setup {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            return Ok(Journal {
                file,
                path,
                name,
                generation: IDLE,
                len: 0,
                locks_at: 0,
                round: Vec::new(),
            });
        }
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Starts a delivery: a new generation in the header (not synced).
    pub fn begin(&mut self) -> io::Result<()> {
        self.generation = loop {
            let g = sys::random_u64();
            if g != IDLE {
                break g;
            }
        };
        self.len = 0;
        self.round.clear();
        self.write(&header(self.generation))?;
        self.locks_at = self.len;
        Ok(())
    }

    /// Records, before any mailbox is locked, what the delivery is about to
    /// do: append `len` bytes starting with `prefix` (the message's From_
    /// line and trace headers, unique to it) to each mailbox of `wants`;
    /// and syncs it (`fdatasync`). From here on, should the delivery be
    /// interrupted, recovery undoes it.
    pub fn intend(&mut self, prefix: &[u8], len: u64, wants: &[Want]) -> io::Result<()> {
        let lines = record::intent_lines(self.generation, prefix, len, wants);
        self.write(lines.as_bytes())?;
        self.locks_at = self.len;
        self.file.sync_data()
    }

    /// Records the dotlock about to be made for mailbox `name` (not
    /// synced: what a power failure loses of these costs at worst a stale
    /// dotlock). Each attempt at a dotlock makes a new temporary file, so
    /// each is recorded: a delivery killed just after its `link()` leaves
    /// that very file as the lock.
    pub fn record_lock(&mut self, name: &str, id: LockId) -> io::Result<()> {
        self.round.push((name.to_string(), id));
        let line = record::lock_line(self.generation, name, id);
        self.write(line.as_bytes())
    }

    /// Tells the journal that every lock of the set has been released (a
    /// mailbox was busy, and the whole set is tried again after a
    /// back-off): the `lock` lines of this round are overwritten by the
    /// next round's, so that a delivery that waits does not grow its
    /// journal by a line per dotlock per round (some 600 a mailbox in a
    /// minute). The line of a dotlock that is still there (one that could
    /// not be removed) is kept; the others name lock files that are gone
    /// for good (each was linked from a temporary file already removed),
    /// which recovery would find nothing of. Lines of the round before
    /// that the next one does not reach stay behind it; they too name
    /// dotlocks that are gone.
    pub fn released(&mut self) -> io::Result<()> {
        let spool = self.path.parent().unwrap_or(Path::new("."));
        let mut round = std::mem::take(&mut self.round);
        round.retain(
            |(name, id)| match std::fs::symlink_metadata(dotlock_path(spool, name)) {
                Ok(meta) => LockId::of(&meta) == *id,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            },
        );
        self.len = self.locks_at;
        for (name, id) in round {
            self.record_lock(&name, id)?;
        }
        Ok(())
    }

    /// Records where each append begins, once every mailbox is locked and
    /// before the first append (not synced: after a power failure that
    /// lost it, recovery finds the appends by their prefix instead).
    pub fn record_starts(&mut self, starts: &[AppendStart]) -> io::Result<()> {
        let lines = record::start_lines(self.generation, starts);
        self.write(lines.as_bytes())
    }

    /// Makes what is written so far durable (`fdatasync`): the append
    /// starts of a delivery to a file target, which recovery never looks
    /// for.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Records what the delivery does to the queue (after
    /// [`record_starts`](Self::record_starts), before the first append),
    /// and syncs it (`fdatasync`): the queue entry it names is made, or
    /// changed, only once recovery is sure to know of it.
    pub fn record_queue(&mut self, step: &QueueStep) -> io::Result<()> {
        let lines = record::queue_lines(self.generation, step);
        self.write(lines.as_bytes())?;
        self.file.sync_data()
    }

    /// Spoils the delivery's intent (one byte), so that the journal undoes
    /// nothing, but still names the dotlocks; with `sync`, durably. A
    /// finished delivery needs no sync (recovery sees it is whole).
    pub fn settle(&mut self, sync: bool) -> io::Result<()> {
        self.file.write_all_at(SETTLED, SETTLED_AT)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Ends the delivery, once its locks are released: the header marked
    /// idle (not synced).
    pub fn end(&mut self) -> io::Result<()> {
        self.generation = IDLE;
        self.file.write_all_at(&header(IDLE), 0)
    }
}

/// The journals of one process: the idle ones kept for the next delivery,
/// and the names of all of them, which recovery skips.
#[derive(Debug, Default)]
pub struct Journals {
    idle: Mutex<Vec<Journal>>,
    own: Mutex<HashSet<String>>,
    /// When a delivery last ran recovery, per spool.
    scans: Mutex<HashMap<PathBuf, Instant>>,
    /// The files by journals' names that are not ours, already warned
    /// about (at most [`MAX_WARNED`]).
    warned: Mutex<HashSet<String>>,
}

/// How often deliveries may scan one spool for journals to recover: at
/// most once in this long (recovery at start is not counted). Planted
/// dotlocks and files by journals' names made every back-off round of
/// every delivery scan the spool and open them all as root.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// How many foreign files by journals' names are each warned about once;
/// beyond that, one line per scan counts them.
const MAX_WARNED: usize = 10_000;

impl Journals {
    /// An idle journal in `spool`, or a new one.
    pub fn take(&self, spool: &Path) -> io::Result<Journal> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(j) = idle {
            return Ok(j);
        }
        let j = Journal::create(spool)?;
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(j.name.clone());
        Ok(j)
    }

    /// Gives back a journal whose delivery has [`ended`](Journal::end).
    pub fn put(&self, j: Journal) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(j);
    }

    /// Lets go of a journal that must be recovered (closes it): the next
    /// [`recover()`] undoes its delivery.
    pub fn abandon(&self, j: Journal) {
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&j.name);
    }

    /// True for the name of one of our journals.
    pub fn is_own(&self, name: &str) -> bool {
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Whether a delivery may run recovery in `spool` now: true (and
    /// counted as run) if no delivery of this process has in the last
    /// [`RESCAN_EVERY`]. When false, one has just run.
    pub fn recovery_due(&self, spool: &Path) -> bool {
        let now = Instant::now();
        let mut scans = self.scans.lock().unwrap_or_else(|p| p.into_inner());
        match scans.get(spool) {
            Some(last) if now.duration_since(*last) < RESCAN_EVERY => false,
            _ => {
                scans.insert(spool.to_path_buf(), now);
                true
            }
        }
    }

    /// True the first time it is asked about `name` (a file that is not
    /// one of our journals), while fewer than [`MAX_WARNED`] are known.
    fn first_warning(&self, name: &str) -> Option<bool> {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.contains(name) {
            return Some(false);
        }
        if warned.len() >= MAX_WARNED {
            return None;
        }
        warned.insert(name.to_string());
        Some(true)
    }

    /// Removes the idle journals, at exit.
    pub fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        for j in idle {
            own.remove(&j.name);
            if let Err(e) = std::fs::remove_file(&j.path) {
                log::warn!("{}: could not remove: {e}", j.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::record::{Intent, Parsed, is_journal_name, parse};
    use super::testutil::{far, me, opts, rec, want};
    use super::*;
    use crate::mbox::LockHooks;

    #[test]
    fn journal_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path()).unwrap();
        let id = LockId {
            dev: 1,
            ino: 2,
            mtime: 3,
            mtime_nsec: 4,
        };
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\nReceived: x\n".to_vec();
        for round in 0..3 {
            j.begin().unwrap();
            let wants = vec![want("alice"), want("jon")];
            j.intend(&prefix, 500, &wants).unwrap();
            j.record_lock("alice", id).unwrap();
            if round == 0 {
                j.record_lock("jon", id).unwrap();
            }
            let sizes = vec![
                AppendStart {
                    name: "alice".into(),
                    dev: 8,
                    ino: 9,
                    old_size: 100,
                },
                AppendStart {
                    name: "jon".into(),
                    dev: 8,
                    ino: 10,
                    old_size: 0,
                },
            ];
            j.record_starts(&sizes).unwrap();
            let bytes = std::fs::read(j.path()).unwrap();
            assert_eq!(bytes.len(), SLOT_SIZE, "written in place");
            let p = parse(&bytes);
            let mut locks = vec![("alice".to_string(), id)];
            if round == 0 {
                locks.push(("jon".to_string(), id));
            }
            assert_eq!(p.locks, locks, "round {round}");
            assert_eq!(
                p.intent,
                Some(Intent {
                    prefix: prefix.clone(),
                    len: 500,
                    wants
                })
            );
            assert_eq!(p.starts, Some(sizes));
            assert!(!p.settled);
            // Settled: the lock lines are still read; ended, nothing.
            j.settle(false).unwrap();
            let p = parse(&std::fs::read(j.path()).unwrap());
            assert_eq!(p.locks, locks);
            assert_eq!(p.intent, None);
            assert!(p.settled);
            j.end().unwrap();
            assert_eq!(parse(&std::fs::read(j.path()).unwrap()), Parsed::default());
        }
        let mode = std::fs::metadata(j.path()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Deliveries scan a spool at most once a `RESCAN_EVERY` (postie 5,
    /// item 4); another spool is counted apart.
    #[test]
    fn recovery_from_deliveries_is_rate_limited_per_spool() {
        let js = Journals::default();
        let (a, b) = (Path::new("/spool/a"), Path::new("/spool/b"));
        assert!(js.recovery_due(a));
        assert!(!js.recovery_due(a));
        assert!(js.recovery_due(b));
        js.scans
            .lock()
            .unwrap()
            .insert(a.to_path_buf(), Instant::now() - RESCAN_EVERY);
        assert!(js.recovery_due(a));
        assert!(!js.recovery_due(a));
    }

    #[test]
    fn journal_names() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        assert!(is_journal_name(&j.name));
        assert!(!is_journal_name(".postie-txn.lock"));
        assert!(!is_journal_name(".postie-txn.1.2.xyz"));
        assert!(!is_journal_name("jon"));
    }

    /// Rounds of locking whose locks were all released again (a busy
    /// mailbox) write their `lock` lines over the last round's: the
    /// journal keeps its size however long the wait. The line of a
    /// dotlock still there (one that could not be removed) is kept, and
    /// recovery removes that dotlock.
    #[test]
    fn lock_lines_of_released_rounds_are_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let mut j = Journal::create(spool).unwrap();
        j.begin().unwrap();
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\nReceived: x\n";
        j.intend(prefix, 500, &[want("alice"), want("jon")])
            .unwrap();
        for round in 0..200 {
            let mut held = Vec::new();
            for n in ["alice", "jon"] {
                let mut record = |id: LockId| j.record_lock(n, id);
                let mut hooks = LockHooks {
                    record: Some(&mut record),
                    ..LockHooks::default()
                };
                let mb = mbox::open_locked_with(&spool.join(n), &me(n), &opts(), far(), &mut hooks)
                    .unwrap();
                held.push((n, mb));
            }
            for (n, mb) in held {
                // The last round cannot remove jon's dotlock.
                if round == 199 && n == "jon" {
                    mb.unlock_keeping_dotlock();
                } else {
                    mb.unlock();
                }
            }
            j.released().unwrap();
        }
        let bytes = std::fs::read(j.path()).unwrap();
        assert_eq!(bytes.len(), SLOT_SIZE);
        let jon_lock = LockId::of(&std::fs::symlink_metadata(spool.join("jon.lock")).unwrap());
        let p = parse(&bytes);
        assert!(p.intent.is_some());
        assert_eq!(p.locks.first(), Some(&("jon".to_string(), jon_lock)));
        assert!(p.locks.len() <= 2, "{:?}", p.locks);
        // Killed now: recovery finds the dotlock by its line.
        drop(j);
        let s = rec(spool);
        assert_eq!(s.journals, 1);
        assert!(!spool.join("jon.lock").exists());
        assert!(!spool.join("alice.lock").exists());
    }
}
