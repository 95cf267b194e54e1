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
//!    the mailboxes (name in the spool, and the identity they are written
//!    with), and a count and a checksum; then `fdatasync`;
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
//!    ([`Journal::locked`]): each mailbox's device, inode and size, where
//!    its append begins (not synced);
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
//! # Recovery
//!
//! [`recover`] runs when a daemon (or the delivery process of a
//! privilege-separated one) starts, before it serves; when `postie inetd`
//! or an in-process `sendmail` starts; and whenever a delivery finds a
//! mailbox's dotlock taken while its `fcntl` lock was free, which is what a
//! delivery killed in another process leaves (a live postie holds both),
//! so that a crashed `postie inetd`, with no daemon to restart, is undone
//! by the next delivery that meets it (once a delivery, and once a
//! [`RESCAN_EVERY`] per spool: [`Journals::recovery_due`]; a user who can
//! write the spool can plant dotlocks; a delivery scans again only while
//! a journal of ours was still held by its process, [`Summary::held`]). It reads the spool directory (one
//! `readdir`), skips this process's own journals, and takes the lock of
//! every other journal it can (the others are in use, or being recovered
//! by someone else). For each:
//!
//! * one that is not ours (not a regular file of our uid with one link,
//!   seen with `lstat` before anything is opened) is left alone, with a
//!   warning once per process and file, in a line of its own for the first
//!   ten of a scan and counted in one line after that;
//! * idle, empty, garbage, or with its intent cut short or garbled by a
//!   crash while it was written (the intent is trusted only whole and with
//!   its checksum; since it is synced before any lock is taken, nothing was
//!   locked or appended): removed;
//! * settled (the delivery was over), or with an intent but no record of
//!   where the appends begin and written since the system started (the
//!   delivery was killed before it had locked every mailbox, so nothing
//!   was appended): the dotlocks its `lock` lines name that still exist,
//!   with the same device, inode and modification time, are removed, then
//!   the journal;
//! * otherwise every mailbox it names is locked again, in the same order,
//!   taking over the dotlock left behind (its own, or that of another dead
//!   delivery it was waiting for, which is left in place for that one's
//!   recovery); all of them or none, as a delivery locks them: each is
//!   tried once a round, and at a busy one every lock held is released (a
//!   dotlock taken over stays in place) and the whole set tried again after
//!   a back-off, until the lock timeout, so that no lock is waited for
//!   while another is held. Nothing is looked at or truncated before every
//!   one is locked. Where its append begins is read from the journal, or else
//!   looked for: the last line that begins with the whole beginning of the
//!   append, else the end of the mailbox if it ends with part of it. Each
//!   mailbox is then *whole* (the append is all there: the recorded
//!   length, starting with its beginning and ending in a blank line),
//!   *untouched*, *partial* (more, but less than the whole append, starting
//!   with as much of its beginning as fits), *broken* (part of the append,
//!   then another message: its dotlock was broken), or *changed*: replaced
//!   (another device or inode), shorter than the recorded size, or not
//!   holding the beginning of the append there; a changed mailbox tells
//!   nothing and is left alone. If some mailbox is whole and every other
//!   one whole or changed, the delivery had finished: nothing is undone
//!   (its client may or may not have had its `250`; either way every
//!   recipient has the message once). Otherwise every whole or partial
//!   mailbox is truncated back to where the append begins and fsynced.
//!   Then the intent is spoiled, durably, the locks are released (the
//!   dotlocks removed) and the journal removed. If a mailbox cannot be
//!   locked in time or truncated, nothing more is done: the locks are
//!   released but the dotlocks taken over are left, so that nothing is
//!   appended after a broken message before a later recovery undoes it.
//!
//! Recovery never truncates past the append it undoes: a mailbox with more
//! than the whole append, or with another message after part of it, is
//! left alone. A dotlock recovery makes itself (when the one the crash left
//! is gone) is recorded in a journal of its own, so that recovery killed
//! in turn leaves nothing the next one cannot undo. Every action is
//! logged, one line each.
//!
//! The scan is one `readdir` of the spool: about 0.3 ms per thousand
//! mailboxes, which is why deliveries do not scan unless they meet a
//! dotlock they cannot explain.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::mbox::{self, LockHooks, LockId, LockedMailbox, MboxError, MboxOptions};
use crate::sys;
use crate::users::{User, valid_user_name};

/// The start of every journal's name in the spool.
pub const PREFIX: &str = ".postie-txn.";

/// The header: this, a generation as 16 hex digits, a newline.
const MAGIC: &str = "postie-txn 2 ";
const HEADER_LEN: usize = MAGIC.len() + 16 + 1;
/// The generation of an idle journal.
const IDLE: u64 = 0;
/// The size a journal is filled to when created: one delivery's lines fit
/// (unless it has very many recipients or very long trace headers), so
/// that overwriting them never grows the file.
const SLOT_SIZE: usize = 4096;

/// A mailbox a delivery is about to write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Its name in the spool (the user's name).
    pub name: String,
    /// The filesystem identity the mailbox is handled with when postie is
    /// root: the owner, and group `mail` (or the owner's group).
    pub uid: u32,
    pub gid: u32,
}

/// A mailbox as a delivery found it once locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub name: String,
    pub dev: u64,
    pub ino: u64,
    /// Its size before the append: where the append begins, and what
    /// recovery truncates back to.
    pub old_size: u64,
}

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
            let name = format!(
                "{PREFIX}{}.{}.{:016x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                sys::random_u64()
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

    fn line(&self, key: &str, rest: &str) -> String {
        format!("{key} {:016x} {rest}\n", self.generation)
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
        let mut s = self.line("from", &format!("{len} {}", hex(prefix)));
        for w in wants {
            s.push_str(&self.line("want", &format!("{} {} {}", w.uid, w.gid, w.name)));
        }
        let sum = checksum(s.as_bytes());
        s.push_str(&self.line("end", &format!("{} {sum:016x}", wants.len())));
        self.write(s.as_bytes())?;
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
        let line = self.line(
            "lock",
            &format!(
                "{} {} {} {} {name}",
                id.dev, id.ino, id.mtime, id.mtime_nsec
            ),
        );
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
        round.retain(|(name, id)| {
            match std::fs::symlink_metadata(spool.join(format!("{name}.lock"))) {
                Ok(meta) => LockId::of(&meta) == *id,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            }
        });
        self.len = self.locks_at;
        for (name, id) in round {
            self.record_lock(&name, id)?;
        }
        Ok(())
    }

    /// Records where each append begins, once every mailbox is locked and
    /// before the first append (not synced: after a power failure that
    /// lost it, recovery finds the appends by their prefix instead).
    pub fn locked(&mut self, sizes: &[Size]) -> io::Result<()> {
        let mut s = String::new();
        for z in sizes {
            s.push_str(&self.line(
                "size",
                &format!("{} {} {} {}", z.dev, z.ino, z.old_size, z.name),
            ));
        }
        let sum = checksum(s.as_bytes());
        s.push_str(&self.line("sizes", &format!("{} {sum:016x}", sizes.len())));
        self.write(s.as_bytes())
    }

    /// Spoils the delivery's intent (one byte), so that the journal undoes
    /// nothing, but still names the dotlocks; with `sync`, durably. A
    /// finished delivery needs no sync (recovery sees it is whole).
    pub fn settle(&mut self, sync: bool) -> io::Result<()> {
        self.file.write_all_at(b"-", HEADER_LEN as u64)?;
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

fn header(generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(format!("{MAGIC}{generation:016x}\n").as_bytes());
    h
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
    /// [`recover`] undoes its delivery.
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

/// True for a name [`Journal::create`] could have made.
fn is_journal_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    parts.len() == 3
        && digits(parts[0])
        && digits(parts[1])
        && parts[2].len() == 16
        && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
}

/// FNV-1a, 64 bits: enough to tell lines cut short or garbled.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A delivery's intent, as its journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The beginning of every append: the From_ line and trace headers.
    pub prefix: Vec<u8>,
    /// The length of every append.
    pub len: u64,
    pub wants: Vec<Want>,
}

/// What a journal says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The generation; 0 for an idle or unreadable journal.
    pub generation: u64,
    /// The delivery's intent, if whole and intact and not settled.
    pub intent: Option<Intent>,
    /// The intent was there and has been spoiled: the delivery was over
    /// (delivered, or rolled back).
    pub settled: bool,
    /// The dotlocks the delivery made or was about to make: mailbox name
    /// and lock.
    pub locks: Vec<(String, LockId)>,
    /// Where each append begins, if recorded whole.
    pub sizes: Option<Vec<Size>>,
}

/// Parses a journal. Never fails: what cannot be trusted is left out.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let Some(generation) = bytes
        .get(..HEADER_LEN)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.strip_prefix(MAGIC)?.strip_suffix('\n'))
        .and_then(|g| u64::from_str_radix(g, 16).ok())
    else {
        return p;
    };
    if generation == IDLE {
        return p;
    }
    p.generation = generation;
    let tag = format!("{generation:016x}");
    // Whole lines of this generation only: further on are the lines of
    // earlier deliveries, and a crash may leave half a line. Each is
    // (key, rest, the line's bytes).
    let mut lines: Vec<(&str, &str, &[u8])> = Vec::new();
    let mut rest = &bytes[HEADER_LEN..];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..nl + 1];
        rest = &rest[nl + 1..];
        let Some((key, tail)) = std::str::from_utf8(&raw[..nl])
            .ok()
            .and_then(|l| l.split_once(' '))
        else {
            break;
        };
        let Some(tail) = tail.strip_prefix(tag.as_str()) else {
            break;
        };
        let tail = tail.strip_prefix(' ').unwrap_or(tail);
        lines.push((key, tail, raw));
    }
    let mut at = 0;
    // The intent: from, want..., end.
    if let Some(&(first, from, _)) = lines.first().filter(|l| l.0 == "from" || l.0 == "-rom") {
        p.settled = first == "-rom";
        let mut signed = Vec::new();
        let mut wants = Vec::new();
        let mut end = None;
        for &(key, tail, raw) in &lines {
            at += 1;
            match key {
                "from" | "-rom" if at == 1 => signed.extend_from_slice(raw),
                "want" => {
                    signed.extend_from_slice(raw);
                    wants.push(tail);
                }
                "end" => {
                    end = Some(tail);
                    break;
                }
                _ => break,
            }
        }
        match end {
            Some(end) if !p.settled => p.intent = parse_intent(from, &wants, end, &signed),
            Some(_) => {}
            // Cut short: nothing after it can be trusted either.
            None => at = lines.len(),
        }
    }
    // The dotlocks, then where the appends begin.
    let mut sizes = Vec::new();
    let mut signed = Vec::new();
    for &(key, tail, raw) in &lines[at..] {
        match key {
            "lock" if sizes.is_empty() => match parse_lock(tail) {
                Some(l) => p.locks.push(l),
                None => break,
            },
            "size" => {
                signed.extend_from_slice(raw);
                sizes.push(tail);
            }
            "sizes" => {
                p.sizes = parse_sizes(&sizes, tail, &signed);
                break;
            }
            _ => break,
        }
    }
    p
}

fn parse_intent(from: &str, wants: &[&str], end: &str, signed: &[u8]) -> Option<Intent> {
    let (count, sum) = end.split_once(' ')?;
    if count.parse::<usize>().ok()? != wants.len()
        || u64::from_str_radix(sum, 16).ok()? != checksum(signed)
        || wants.is_empty()
    {
        return None;
    }
    let (len, prefix) = from.split_once(' ')?;
    let prefix = unhex(prefix)?;
    let wants = wants
        .iter()
        .map(|w| {
            let mut f = w.splitn(3, ' ');
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            let name = f.next()?;
            // Not `plausible_user_name`: a journal is our own, and one
            // written before names like `x.lock` were refused must still
            // be undone.
            valid_user_name(name).then(|| Want {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect::<Option<Vec<Want>>>()?;
    let intent = Intent {
        prefix,
        len: len.parse().ok()?,
        wants,
    };
    (intent.prefix.starts_with(b"From ") && intent.len as usize > intent.prefix.len())
        .then_some(intent)
}

fn parse_lock(tail: &str) -> Option<(String, LockId)> {
    let mut f = tail.splitn(5, ' ');
    let id = LockId {
        dev: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        mtime: f.next()?.parse().ok()?,
        mtime_nsec: f.next()?.parse().ok()?,
    };
    let name = f.next()?;
    valid_user_name(name).then(|| (name.to_string(), id))
}

fn parse_sizes(sizes: &[&str], end: &str, signed: &[u8]) -> Option<Vec<Size>> {
    let (count, sum) = end.split_once(' ')?;
    if count.parse::<usize>().ok()? != sizes.len()
        || u64::from_str_radix(sum, 16).ok()? != checksum(signed)
    {
        return None;
    }
    sizes
        .iter()
        .map(|z| {
            let mut f = z.splitn(4, ' ');
            Some(Size {
                dev: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
                old_size: f.next()?.parse().ok()?,
                name: f.next()?.to_string(),
            })
        })
        .collect()
}

/// What one run of [`recover`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Journals of processes that are gone, dealt with and removed.
    pub journals: usize,
    /// Interrupted deliveries undone (at least one mailbox truncated).
    pub undone: usize,
    /// Mailboxes truncated back.
    pub truncated: usize,
    /// Journals that could not be dealt with now (left for later).
    pub deferred: usize,
    /// Journals of ours with a delivery in them, still locked by their
    /// process: a live one, or one being killed that has not yet let go of
    /// its files.
    pub held: usize,
}

/// Recovers every journal in `spool` left by a process that is gone,
/// skipping this process's own (`journals`; see the module
/// documentation). Mailbox locks are tried until `deadline` (bounded by
/// the lock timeout of `opts`). A dotlock recovery has to make itself is
/// recorded in a journal of `journals`, so that a crash during recovery
/// leaves nothing that the next one cannot undo.
pub fn recover(
    spool: &Path,
    opts: &MboxOptions,
    deadline: Instant,
    journals: &Journals,
) -> Summary {
    let mut summary = Summary::default();
    let dir = match std::fs::read_dir(spool) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("recovery: {}: {e}", spool.display());
            return summary;
        }
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && is_journal_name(n) && !journals.is_own(n))
        .collect();
    if names.is_empty() {
        return summary;
    }
    names.sort();
    // Every journal of a process that is gone, locked by us for the whole
    // pass: a delivery killed while it waited for a mailbox names it, but
    // the dotlock on it may be another dead delivery's, which any of them
    // may then take over.
    let mut foreign = Foreign::default();
    let dead: Vec<Dead> = names
        .iter()
        .filter_map(|n| open_dead(spool, n, journals, &mut foreign, &mut summary.held))
        .collect();
    if foreign.unnamed > 0 {
        log::warn!(
            "recovery: {}: {} more files named like journals that are not ours; left alone",
            spool.display(),
            foreign.unnamed
        );
    }
    let dotlocks: Vec<(String, LockId)> = dead
        .iter()
        .flat_map(|d| d.parsed.locks.iter().cloned())
        .collect();
    for d in &dead {
        recover_one(spool, d, &dotlocks, opts, deadline, journals, &mut summary);
    }
    summary
}

/// A journal of a process that is gone, locked by us.
struct Dead {
    name: String,
    file: File,
    parsed: Parsed,
    /// Last written before the system started.
    before_boot: bool,
}

/// Runs the caller's file operations as `uid`/`gid` when we are root.
fn as_user(uid: u32, gid: u32) -> io::Result<Option<sys::FsIdentity>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    sys::become_fs(uid, gid).map(Some)
}

/// When the system last started, from `/proc/stat`.
fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Whether `meta` ((l)stat) can be a journal of ours: a regular file of
/// our uid with one link.
fn ours(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.nlink() == 1
}

/// Why a file named like a journal, of (l)stat `meta`, is skipped.
fn not_ours(meta: &std::fs::Metadata) -> String {
    let t = meta.file_type();
    let kind = if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    };
    let links = match meta.nlink() {
        1 => "1 link".to_string(),
        n => format!("{n} links"),
    };
    format!(
        "skipped, not a journal this postie may recover ({kind} of uid {}, mode {:04o}, {links}; \
         a journal is a regular file of uid {} with one link)",
        meta.uid(),
        meta.mode() & 0o7777,
        nix::unistd::geteuid()
    )
}

/// Files named like journals that are not ours, in one scan: at most
/// [`NAMED_PER_SCAN`] are named in a line of their own, the others
/// counted. A process under inetd scans once or twice in its life, so
/// the once-a-process memory alone would still let planted files cost a
/// line each at every connection.
#[derive(Default)]
struct Foreign {
    named: usize,
    unnamed: usize,
}

/// Foreign files named in their own line, per scan.
const NAMED_PER_SCAN: usize = 10;

/// Opens, checks and locks the journal `name`, if its process is gone. A
/// file that is not ours is not even opened (`lstat` first: as root, an
/// open of a user's file is work done for them) and is warned about once
/// per process, in its own line for the first few of a scan, or counted
/// ([`Foreign`]). A journal with a delivery in it that its process still
/// holds is counted in `held`.
fn open_dead(
    spool: &Path,
    name: &str,
    journals: &Journals,
    seen: &mut Foreign,
    held: &mut usize,
) -> Option<Dead> {
    let path = spool.join(name);
    let shown = path.display();
    let foreign = |meta: &std::fs::Metadata, seen: &mut Foreign| match journals.first_warning(name)
    {
        Some(true) if seen.named < NAMED_PER_SCAN => {
            seen.named += 1;
            log::warn!("recovery: {shown}: {}", not_ours(meta));
        }
        Some(false) => {}
        Some(true) | None => seen.unnamed += 1,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if ours(&meta) => {}
        Ok(meta) => {
            foreign(&meta, seen);
            return None;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("recovery: {shown}: {e}");
            return None;
        }
    }
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(SAFE_FLAGS | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        // Removed (by another recovery, or at its process's exit) since
        // the readdir.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("recovery: {shown}: {e}");
            return None;
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| log::warn!("recovery: {shown}: {e}"))
        .ok()?;
    if !ours(&meta) {
        // Replaced since the lstat.
        foreign(&meta, seen);
        return None;
    }
    match mbox::ofd_lock(&file, libc::F_WRLCK) {
        Ok(true) => {}
        // In use by its process, or being recovered by another. Counted
        // if it holds a delivery (not idle): that process may be one being
        // killed, whose dotlocks only this journal explains.
        Ok(false) => {
            let mut header = [0u8; HEADER_LEN];
            let busy = io::Read::read_exact(&mut &file, &mut header).is_ok()
                && parse(&header).generation != IDLE;
            if busy {
                *held += 1;
            }
            return None;
        }
        Err(e) => {
            log::warn!("recovery: {shown}: cannot lock: {e}");
            return None;
        }
    }
    // Removed by another recovery between our open and our lock?
    let meta = file.metadata().ok().filter(|m| m.nlink() > 0)?;
    let mut bytes = Vec::new();
    if let Err(e) = io::Read::read_to_end(&mut &file, &mut bytes) {
        log::warn!("recovery: {shown}: {e}");
        return None;
    }
    let before_boot = match (meta.modified(), boot_time()) {
        (Ok(m), Some(b)) => m < b,
        _ => true,
    };
    Some(Dead {
        name: name.to_string(),
        file,
        parsed: parse(&bytes),
        before_boot,
    })
}

fn recover_one(
    spool: &Path,
    d: &Dead,
    dotlocks: &[(String, LockId)],
    opts: &MboxOptions,
    deadline: Instant,
    journals: &Journals,
    s: &mut Summary,
) {
    let (name, parsed) = (d.name.as_str(), &d.parsed);
    let path = spool.join(name);
    let what = match &parsed.intent {
        // Where the appends begin is recorded (not synced) once every
        // mailbox is locked, before the first append: without it, a
        // journal written since the system started (its process died,
        // leaving its writes in the page cache) tells that nothing was
        // appended; one from before (a power failure, a crash of the
        // system) may have lost it, and then the appends are looked for.
        Some(_) if parsed.sizes.is_none() && !d.before_boot => {
            remove_dotlocks(spool, name, &parsed.locks);
            "of an interrupted delivery that had appended nothing"
        }
        Some(intent) => {
            // The intent spoiled, the lock lines kept: should this
            // recovery be interrupted after it, the next one still knows
            // the dotlocks to remove.
            let settle = || {
                d.file.write_all_at(b"-", HEADER_LEN as u64)?;
                d.file.sync_data()
            };
            let cx = Undo {
                spool,
                journal: name,
                parsed,
                intent,
                search: parsed.sizes.is_none(),
                dotlocks,
                opts,
                deadline,
                journals,
                settle: &settle,
            };
            match undo(&cx, s) {
                Some(what) => what,
                None => {
                    s.deferred += 1;
                    return;
                }
            }
        }
        None if parsed.generation == IDLE => "idle",
        None => {
            remove_dotlocks(spool, name, &parsed.locks);
            if parsed.settled {
                "of a delivery that was over"
            } else {
                "of a delivery that had not begun"
            }
        }
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            s.journals += 1;
            log::info!("recovery: {name}: removed the journal, {what}");
        }
        Err(e) => log::warn!("recovery: {}: could not remove: {e}", path.display()),
    }
}

/// Removes the dotlocks a dead delivery made that are still there.
fn remove_dotlocks(spool: &Path, journal: &str, locks: &[(String, LockId)]) {
    for (mailbox, id) in locks {
        let lock = spool.join(format!("{mailbox}.lock"));
        if let Ok(meta) = std::fs::symlink_metadata(&lock) {
            if LockId::of(&meta) == *id {
                match std::fs::remove_file(&lock) {
                    Ok(()) => log::info!(
                        "recovery: {journal}: removed {}, left by the interrupted delivery",
                        lock.display()
                    ),
                    Err(e) => log::warn!("recovery: {journal}: {}: {e}", lock.display()),
                }
            }
        }
    }
}

/// What a crash left in one mailbox of an interrupted delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The whole append, at `at`, and `size` bytes in all.
    Whole { at: u64, size: u64 },
    /// Nothing appended.
    Untouched,
    /// Part of the append, at `at`, up to the end (`size`).
    Partial { at: u64, size: u64 },
    /// Part of the append, then another message appended after it (the
    /// dotlock was broken): the delivery had not finished, but this
    /// mailbox cannot be truncated without losing the other message.
    Broken,
    /// Not what the delivery left: replaced, shortened or rewritten.
    Changed,
}

/// What [`undo`] works with.
struct Undo<'a> {
    spool: &'a Path,
    /// The journal's name.
    journal: &'a str,
    parsed: &'a Parsed,
    intent: &'a Intent,
    /// Where the appends begin is not known: look for them.
    search: bool,
    /// The dotlocks of every dead journal of this pass, which may be taken
    /// over (only this journal's own are removed).
    dotlocks: &'a [(String, LockId)],
    opts: &'a MboxOptions,
    deadline: Instant,
    /// Where to record the dotlocks recovery makes.
    journals: &'a Journals,
    /// Spoils the journal's intent, durably.
    settle: &'a dyn Fn() -> io::Result<()>,
}

/// Undoes an interrupted delivery, unless it had finished: locks its
/// mailboxes, truncates each back, settles the journal, unlocks. `None` if
/// it must be tried again later; else what it was, for the log.
fn undo(cx: &Undo<'_>, s: &mut Summary) -> Option<&'static str> {
    let Undo {
        spool,
        journal,
        parsed,
        intent,
        search,
        dotlocks,
        opts,
        deadline,
        journals,
        settle,
    } = *cx;
    // A dotlock this recovery makes (when the one the crash left is gone)
    // is recorded in a journal of our own, as a delivery records its own.
    let mut recorder = match journals.take(spool).and_then(|mut j| j.begin().map(|()| j)) {
        Ok(j) => Some(j),
        Err(e) => {
            log::warn!("recovery: {journal}: no journal of our own: {e}");
            None
        }
    };
    // Every mailbox locked, or none, as a delivery locks them (DESIGN.md:
    // no lock is waited for while another is held): each is tried once a
    // round, in the journal's order; at one that is busy, those already
    // locked are released (a dotlock taken over stays, so that nothing is
    // appended after a broken message meanwhile) and the whole set tried
    // again after a back-off, until the lock timeout. Nothing is looked at
    // or truncated until every one is locked.
    let deadline = deadline.min(mbox::deadline_after(opts.lock_timeout));
    let mut backoff = mbox::Backoff::new();
    let mut held: Vec<(LockedMailbox, &Want)> = Vec::new();
    // Mailboxes missing or unsafe: nothing to lock or undo there.
    let mut skip: HashSet<&str> = HashSet::new();
    let mut failed = false;
    let mut said_busy = false;
    loop {
        let mut busy = None;
        for w in &intent.wants {
            if skip.contains(w.name.as_str()) {
                continue;
            }
            let adopt: Vec<LockId> = dotlocks
                .iter()
                .filter(|(n, _)| *n == w.name)
                .map(|l| l.1)
                .collect();
            let owner = User {
                name: w.name.clone(),
                uid: w.uid,
                gid: w.gid,
            };
            let path = spool.join(&w.name);
            let _id = match as_user(w.uid, w.gid) {
                Ok(id) => id,
                Err(err) => {
                    log::error!("recovery: {journal}: {}: {err}", w.name);
                    failed = true;
                    break;
                }
            };
            let name = w.name.as_str();
            let mut record = |id: LockId| match &mut recorder {
                Some(j) => j.record_lock(name, id),
                None => Ok(()),
            };
            let mut hooks = LockHooks {
                record: Some(&mut record),
                adopt: &adopt,
                recovery: true,
                ..LockHooks::default()
            };
            // One try (a deadline already come).
            match mbox::open_locked_with(&path, &owner, opts, Instant::now(), &mut hooks) {
                Ok(mb) => held.push((mb, w)),
                Err(MboxError::LockTimeout) => {
                    busy = Some(path);
                    break;
                }
                Err(MboxError::Io(err)) if err.kind() == io::ErrorKind::NotFound => {
                    remove_dotlocks(spool, journal, &own_locks(parsed, &w.name));
                    skip.insert(name);
                }
                Err(MboxError::Unsafe(why)) => {
                    log::warn!("recovery: {journal}: {}: {why}; left alone", path.display());
                    remove_dotlocks(spool, journal, &own_locks(parsed, &w.name));
                    skip.insert(name);
                }
                Err(err) => {
                    log::error!(
                        "recovery: {journal}: {}: {err}; will try again",
                        path.display()
                    );
                    failed = true;
                    break;
                }
            }
        }
        let Some(busy) = busy.filter(|_| !failed) else {
            break;
        };
        let_go(&mut held);
        // The next round's dotlocks are recorded over this one's.
        if let Some(Err(err)) = recorder.as_mut().map(|j| j.released()) {
            log::error!("recovery: {journal}: cannot write our own journal: {err}; will try again");
            failed = true;
            break;
        }
        if !said_busy {
            said_busy = true;
            log::info!(
                "recovery: {journal}: {}: busy; every lock released, trying again",
                busy.display()
            );
        }
        if backoff.wait(deadline).is_err() {
            log::error!(
                "recovery: {journal}: {}: {}; will try again",
                busy.display(),
                MboxError::LockTimeout
            );
            failed = true;
            break;
        }
    }
    let mut locked: Vec<(LockedMailbox, &Want, State)> = Vec::new();
    for (mb, w) in held {
        if failed {
            locked.push((mb, w, State::Changed));
            continue;
        }
        let _id = as_user(w.uid, w.gid);
        if mb.adopted_dotlock().is_some() {
            log::info!(
                "recovery: {journal}: took over {}.lock, left by the interrupted delivery",
                mb.path().display()
            );
        }
        let size = parsed
            .sizes
            .as_ref()
            .and_then(|z| z.iter().find(|z| z.name == w.name));
        match state(&mb, intent, size, search) {
            Ok(st) => locked.push((mb, w, st)),
            Err(err) => {
                log::error!(
                    "recovery: {journal}: {}: {err}; will try again",
                    mb.path().display()
                );
                locked.push((mb, w, State::Changed));
                failed = true;
            }
        }
    }
    let finished = locked
        .iter()
        .any(|(_, _, st)| matches!(st, State::Whole { .. }))
        && locked
            .iter()
            .all(|(_, _, st)| matches!(st, State::Whole { .. } | State::Changed));
    let mut truncated = 0;
    if !failed && !finished {
        for (mb, w, st) in locked.iter_mut() {
            let _id = as_user(w.uid, w.gid);
            let shown = mb.path().display().to_string();
            let (at, size) = match *st {
                State::Whole { at, size } if size > at + intent.len => {
                    log::error!(
                        "recovery: {journal}: {shown}: more was appended after the interrupted delivery; left alone"
                    );
                    continue;
                }
                State::Whole { at, size } | State::Partial { at, size } => (at, size),
                State::Untouched | State::Broken | State::Changed => continue,
            };
            if let Err(err) = mb.truncate_to(at) {
                log::error!("recovery: {journal}: {shown}: {err}; will try again");
                failed = true;
                break;
            }
            truncated += 1;
            log::info!(
                "recovery: {journal}: {shown}: truncated from {size} to {at} bytes, undoing the interrupted delivery"
            );
        }
    }
    if !failed {
        // Before the locks go: a power failure after they are released
        // must not bring back an intent that would truncate again.
        if let Err(err) = settle() {
            log::error!("recovery: {journal}: cannot settle the journal: {err}; will try again");
            failed = true;
        }
    }
    let own = |id: (u64, u64)| parsed.locks.iter().any(|(_, l)| (l.dev, l.ino) == id);
    for (mb, w, _) in locked.into_iter().rev() {
        let _id = as_user(w.uid, w.gid);
        match mb.adopted_dotlock() {
            // What we took over stays if we failed, so that nothing is
            // appended after a broken message before the next try (which
            // takes it over again, by the journal's record of it); and
            // so does another dead delivery's, for its own recovery.
            Some(id) if failed || !own(id) => mb.unlock_keeping_dotlock(),
            _ => mb.unlock(),
        }
    }
    if let Some(mut j) = recorder {
        match j.end() {
            Ok(()) => journals.put(j),
            Err(_) => journals.abandon(j),
        }
    }
    if failed {
        return None;
    }
    s.truncated += truncated;
    Some(if finished {
        "of a delivery that had finished: nothing to undo"
    } else if truncated > 0 {
        s.undone += 1;
        "of an interrupted delivery, undone"
    } else {
        "of an interrupted delivery that had appended nothing"
    })
}

/// Lets go of the mailboxes of a round that could not lock them all,
/// before the back-off: a dotlock taken over stays in place (nothing is
/// appended after a broken message meanwhile), for the next round to take
/// over again; those recovery made are removed.
fn let_go(held: &mut Vec<(LockedMailbox, &Want)>) {
    for (mb, w) in held.drain(..).rev() {
        let _id = as_user(w.uid, w.gid);
        if mb.adopted_dotlock().is_some() {
            mb.unlock_keeping_dotlock();
        } else {
            mb.unlock();
        }
    }
}

fn own_locks(parsed: &Parsed, mailbox: &str) -> Vec<(String, LockId)> {
    parsed
        .locks
        .iter()
        .filter(|(n, _)| n == mailbox)
        .cloned()
        .collect()
}

/// Reads `len` bytes at `offset`, fewer at the end of the file.
fn read_exact_at(mb: &LockedMailbox, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match mb.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Where an append that begins with `prefix` begins in the mailbox, not
/// knowing its old size: the last place a line begins with the whole
/// prefix (which holds the message's unique ID), else the end of the
/// mailbox if it ends with a line that is the beginning of the prefix.
fn find_append(mb: &LockedMailbox, prefix: &[u8]) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let size = mb.size()?;
    let mut found = None;
    // The bytes [off, off + window.len()) of the mailbox.
    let mut off = 0u64;
    let mut window: Vec<u8> = Vec::new();
    let mut after_newline = true;
    loop {
        let more = read_exact_at(mb, CHUNK, off + window.len() as u64)?;
        let eof = more.len() < CHUNK;
        window.extend_from_slice(&more);
        // Starts that can be compared whole now.
        let limit = if eof {
            window.len()
        } else {
            window.len().saturating_sub(prefix.len())
        };
        for i in 0..limit {
            let line_start = if i == 0 {
                after_newline
            } else {
                window[i - 1] == b'\n'
            };
            if line_start && window[i..].starts_with(prefix) {
                found = Some(off + i as u64);
            }
        }
        if eof {
            break;
        }
        if limit > 0 {
            after_newline = window[limit - 1] == b'\n';
            off += limit as u64;
            window.drain(..limit);
        }
    }
    if found.is_some() {
        return Ok(found);
    }
    let tail_len = prefix
        .len()
        .min(usize::try_from(size).unwrap_or(usize::MAX));
    let tail = read_exact_at(mb, tail_len, size - tail_len as u64)?;
    for k in (1..=tail.len()).rev() {
        let start = tail.len() - k;
        let line_start = if start == 0 {
            size == k as u64 || read_exact_at(mb, 1, size - k as u64 - 1)? == b"\n"
        } else {
            tail[start - 1] == b'\n'
        };
        if line_start && prefix.starts_with(&tail[start..]) {
            return Ok(Some(size - k as u64));
        }
    }
    Ok(None)
}

/// Sorts out what the crash left in one locked mailbox; logs a change.
/// `size` is the mailbox as the delivery found it, if recorded; else,
/// with `search`, the append is looked for; without, nothing was appended.
fn state(
    mb: &LockedMailbox,
    intent: &Intent,
    recorded: Option<&Size>,
    search: bool,
) -> io::Result<State> {
    let shown = mb.path().display();
    let at = match recorded {
        Some(z) if mb.file_id() != (z.dev, z.ino) => {
            log::warn!("recovery: {shown}: replaced since the interrupted delivery; left alone");
            return Ok(State::Changed);
        }
        Some(z) => z.old_size,
        None if search => match find_append(mb, &intent.prefix)? {
            Some(at) => at,
            None => return Ok(State::Untouched),
        },
        // Not locked yet, or not yet told where it begins: no append.
        None => return Ok(State::Untouched),
    };
    let size = mb.size()?;
    if size == at {
        return Ok(State::Untouched);
    }
    if size < at {
        log::warn!(
            "recovery: {shown}: {size} bytes, shorter than the {at} before the interrupted delivery; left alone"
        );
        return Ok(State::Changed);
    }
    let end = at + intent.len;
    let here = read_exact_at(
        mb,
        usize::try_from(size.min(end) - at).unwrap_or(usize::MAX),
        at,
    )?;
    // The append begins with the prefix, as much of it as was written.
    let n = here.len().min(intent.prefix.len());
    if here[..n] != intent.prefix[..n] {
        log::warn!(
            "recovery: {shown}: does not hold the interrupted message where it was written; left alone"
        );
        return Ok(State::Changed);
    }
    // Nothing but its From_ line starts a line with "From " in an append
    // (the body is quoted, the header lines are not From_ lines): another
    // one within it is a message appended after a partial one, which is
    // not to be truncated with it.
    if here.windows(6).any(|w| w == b"\nFrom ") {
        log::error!(
            "recovery: {shown}: another message was appended after part of the interrupted one; left alone"
        );
        return Ok(State::Broken);
    }
    if size < end {
        return Ok(State::Partial { at, size });
    }
    // And a whole one ends with the blank line.
    if !here.ends_with(b"\n\n") {
        log::warn!(
            "recovery: {shown}: the interrupted message does not end where it should; left alone"
        );
        return Ok(State::Changed);
    }
    Ok(State::Whole { at, size })
}

/// A delivery of `msg` (its prefix: the first two lines) to the mailboxes
/// `names` in `spool` (each holding `before`, owned by whoever runs the
/// test) by another process, that crashed after appending `written[i]`
/// bytes of it to the i-th; with `hint`, it had recorded where the appends
/// begin. The journal and the dotlocks are left as a SIGKILL leaves them.
#[cfg(test)]
pub(crate) fn crashed_delivery(
    spool: &Path,
    names: &[&str],
    before: &[u8],
    msg: &[u8],
    written: &[usize],
    hint: bool,
) -> PathBuf {
    let opts = MboxOptions {
        mode: 0o600,
        quoting: mbox::Quoting::Mboxrd,
        lock_timeout: Duration::from_secs(5),
        stale_lock: mbox::DEFAULT_STALE_LOCK,
    };
    let far = Instant::now() + Duration::from_secs(60);
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let second_line = msg
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    let mut j = Journal::create(spool).unwrap();
    j.begin().unwrap();
    let wants: Vec<Want> = names
        .iter()
        .map(|n| Want {
            name: n.to_string(),
            uid,
            gid,
        })
        .collect();
    j.intend(&msg[..second_line], msg.len() as u64, &wants)
        .unwrap();
    let mut locked = Vec::new();
    for n in names {
        let path = spool.join(n);
        std::fs::write(&path, before).unwrap();
        let mut record = |id: LockId| j.record_lock(n, id);
        let mut hooks = LockHooks {
            record: Some(&mut record),
            ..LockHooks::default()
        };
        let owner = User {
            name: n.to_string(),
            uid,
            gid,
        };
        let mb = mbox::open_locked_with(&path, &owner, &opts, far, &mut hooks).unwrap();
        locked.push(mb);
    }
    if hint {
        let sizes: Vec<Size> = locked
            .iter()
            .zip(names)
            .map(|(mb, n)| {
                let (dev, ino) = mb.file_id();
                Size {
                    name: n.to_string(),
                    dev,
                    ino,
                    old_size: mb.old_size(),
                }
            })
            .collect();
        j.locked(&sizes).unwrap();
    }
    for (n, w) in names.iter().zip(written) {
        let mut f = OpenOptions::new().append(true).open(spool.join(n)).unwrap();
        io::Write::write_all(&mut f, &msg[..*w]).unwrap();
    }
    // The crash: fcntl and flock locks go with the process, the dotlocks
    // and the journal stay.
    for mb in locked {
        mb.unlock_keeping_dotlock();
    }
    j.path().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbox::Quoting;

    fn opts() -> MboxOptions {
        MboxOptions {
            mode: 0o600,
            quoting: Quoting::Mboxrd,
            lock_timeout: Duration::from_secs(5),
            stale_lock: mbox::DEFAULT_STALE_LOCK,
        }
    }

    #[test]
    fn hex_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let h = hex(&all);
        assert_eq!(&h[..8], "00010203");
        assert_eq!(&h[h.len() - 4..], "feff");
        assert_eq!(unhex(&h), Some(all));
        assert_eq!(unhex("0g"), None);
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn me(name: &str) -> User {
        User {
            name: name.into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// A whole append: the From_ line, a trace header with an ID, a body,
    /// the blank line.
    fn message(id: &str, body: &str) -> Vec<u8> {
        format!(
            "From a@b.example Sun Nov  1 06:05:04 2026\nReceived: by h with SMTP id {id}\nSubject: t\n\n{body}\n\n"
        )
        .into_bytes()
    }

    fn want(name: &str) -> Want {
        let u = me(name);
        Want {
            name: name.into(),
            uid: u.uid,
            gid: u.gid,
        }
    }

    /// Recovery as a process with no journal of its own in `spool` runs
    /// it (then gone: its journals removed).
    fn recover_until(spool: &Path, deadline: Instant) -> Summary {
        let js = Journals::default();
        let s = recover(spool, &opts(), deadline, &js);
        js.close();
        s
    }

    fn rec(spool: &Path) -> Summary {
        recover_until(spool, far())
    }

    fn journals(spool: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(PREFIX))
            .collect();
        v.sort();
        v
    }

    fn crashed(spool: &Path, names: &[&str], before: &[u8], msg: &[u8], written: &[usize]) {
        crashed_delivery(spool, names, before, msg, written, true);
    }

    /// The journal as it was before the system went down: written before
    /// the last boot.
    fn from_before_boot(path: &Path) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1)).unwrap();
    }

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
                Size {
                    name: "alice".into(),
                    dev: 8,
                    ino: 9,
                    old_size: 100,
                },
                Size {
                    name: "jon".into(),
                    dev: 8,
                    ino: 10,
                    old_size: 0,
                },
            ];
            j.locked(&sizes).unwrap();
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
            assert_eq!(p.sizes, Some(sizes));
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

    /// A journal naming a user that is no recipient any more (`x.lock`,
    /// refused since postie 5) is still read whole, so that a delivery
    /// an older postie left is undone, not taken for garbage.
    #[test]
    fn journal_of_a_since_refused_name_still_parses() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path()).unwrap();
        let id = LockId {
            dev: 1,
            ino: 2,
            mtime: 3,
            mtime_nsec: 4,
        };
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\nReceived: x\n".to_vec();
        j.begin().unwrap();
        j.intend(&prefix, 500, &[want("old.lock")]).unwrap();
        j.record_lock("old.lock", id).unwrap();
        let p = parse(&std::fs::read(j.path()).unwrap());
        assert_eq!(p.intent.unwrap().wants, vec![want("old.lock")]);
        assert_eq!(p.locks, vec![("old.lock".to_string(), id)]);
    }

    /// Any prefix of a journal (a crash while writing it) parses to no
    /// intent unless the intent is whole, a flipped byte anywhere in it is
    /// caught, and lines of an earlier generation are ignored.
    #[test]
    fn partial_or_garbled_journal_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path()).unwrap();
        j.begin().unwrap();
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\n";
        j.intend(prefix, 100, &[want("jon")]).unwrap();
        let intent_end = j.len as usize;
        j.record_lock(
            "jon",
            LockId {
                dev: 1,
                ino: 2,
                mtime: 3,
                mtime_nsec: 4,
            },
        )
        .unwrap();
        let locks_end = j.len as usize;
        j.locked(&[Size {
            name: "jon".into(),
            dev: 5,
            ino: 6,
            old_size: 7,
        }])
        .unwrap();
        let all = j.len as usize;
        let whole = std::fs::read(j.path()).unwrap();
        for cut in 0..all {
            let p = parse(&whole[..cut]);
            assert_eq!(p.intent.is_some(), cut >= intent_end, "cut at {cut}");
            assert_eq!(p.locks.len(), usize::from(cut >= locks_end), "cut at {cut}");
            assert_eq!(p.sizes, None, "cut at {cut}");
        }
        assert!(parse(&whole).sizes.is_some());
        for i in HEADER_LEN..all {
            let mut bad = whole.clone();
            bad[i] ^= 0x01;
            let p = parse(&bad);
            if i < intent_end {
                assert_eq!(p.intent, None, "flipped byte {i}");
            } else if i >= locks_end {
                assert_eq!(p.sizes, None, "flipped byte {i}");
            }
        }
        // The same journal overwritten by the next delivery, cut short:
        // nothing of the old one is taken for the new one.
        j.begin().unwrap();
        let p = parse(&std::fs::read(j.path()).unwrap());
        assert_eq!(p.intent, None);
        assert!(p.locks.is_empty());
        assert_eq!(p.sizes, None);
        assert_eq!(parse(b"garbage\n"), Parsed::default());
        assert_eq!(parse(b""), Parsed::default());
        assert_eq!(parse(&[0u8; SLOT_SIZE]), Parsed::default());
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

    /// A crash in the middle of the appends: recovery truncates every
    /// mailbox back (the whole append, the partial one; the untouched one
    /// is left as it is), takes over and removes the dotlocks, and removes
    /// the journal.
    #[test]
    fn recovery_truncates_every_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.1", "half a mess");
        crashed(
            spool,
            &["alice", "jon", "root"],
            b"old\n\n",
            &msg,
            &[msg.len(), 20, 0],
        );
        assert!(spool.join("jon.lock").exists());
        assert_eq!(journals(spool).len(), 1);
        let s = rec(spool);
        assert_eq!(
            s,
            Summary {
                journals: 1,
                undone: 1,
                truncated: 2,
                deferred: 0,
                held: 0
            }
        );
        for n in ["alice", "jon", "root"] {
            assert_eq!(std::fs::read(spool.join(n)).unwrap(), b"old\n\n");
            assert!(!spool.join(format!("{n}.lock")).exists(), "{n}.lock");
        }
        assert!(journals(spool).is_empty());
        // Nothing left to do, and the mailboxes are usable at once.
        assert_eq!(rec(spool), Summary::default());
        mbox::open_locked(
            &spool.join("jon"),
            &me("jon"),
            &opts(),
            Instant::now() + Duration::from_millis(200),
        )
        .unwrap()
        .unlock();
    }

    /// A crash after every append was written: the delivery had finished,
    /// and every recipient keeps the message.
    #[test]
    fn recovery_keeps_a_finished_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.2", "all there");
        crashed(spool, &["alice", "jon"], b"", &msg, &[msg.len(), msg.len()]);
        let s = rec(spool);
        assert_eq!(s.journals, 1);
        assert_eq!(s.truncated, 0);
        for n in ["alice", "jon"] {
            assert_eq!(std::fs::read(spool.join(n)).unwrap(), msg);
            assert!(!spool.join(format!("{n}.lock")).exists());
        }
        assert!(journals(spool).is_empty());
    }

    /// A mailbox replaced since the crash (another inode) is left alone;
    /// the others are still recovered (a replaced mailbox says nothing of
    /// whether the delivery had finished: the others tell).
    #[test]
    fn recovery_skips_a_replaced_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.3", "x");
        crashed(spool, &["alice", "jon"], b"", &msg, &[3, msg.len()]);
        std::fs::remove_file(spool.join("jon")).unwrap();
        std::fs::write(spool.join("jon"), b"a new jon\n").unwrap();
        let s = rec(spool);
        assert_eq!(s.truncated, 1);
        assert_eq!(s.journals, 1);
        assert_eq!(std::fs::read(spool.join("alice")).unwrap(), b"");
        assert_eq!(std::fs::read(spool.join("jon")).unwrap(), b"a new jon\n");
        assert!(journals(spool).is_empty());
        assert!(!spool.join("jon.lock").exists());
        assert!(!spool.join("alice.lock").exists());
    }

    /// A mailbox that does not hold the message's beginning where the
    /// append began was changed by someone else: left alone.
    #[test]
    fn recovery_leaves_a_rewritten_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.4", "y");
        crashed(spool, &["alice", "jon"], b"old\n\n", &msg, &[30, 30]);
        let mut other = b"old\n\n".to_vec();
        other.extend(std::iter::repeat_n(b'x', 30));
        std::fs::write(spool.join("jon"), &other).unwrap();
        let s = rec(spool);
        assert_eq!(s.truncated, 1, "alice only");
        assert_eq!(s.journals, 1);
        assert_eq!(std::fs::read(spool.join("jon")).unwrap(), other);
        assert_eq!(std::fs::read(spool.join("alice")).unwrap(), b"old\n\n");
    }

    /// Another message appended after a partial one (the dotlock of the
    /// crash broken by someone): the partial one cannot be cut out without
    /// the other, so that mailbox is left alone; the others are undone.
    #[test]
    fn recovery_never_truncates_a_later_message() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.5", &"long line\n".repeat(100));
        crashed(spool, &["alice", "jon"], b"", &msg, &[msg.len(), 120]);
        let mut f = OpenOptions::new()
            .append(true)
            .open(spool.join("jon"))
            .unwrap();
        io::Write::write_all(&mut f, b"\n").unwrap();
        io::Write::write_all(&mut f, &message("B.1", "later")).unwrap();
        let jon = std::fs::read(spool.join("jon")).unwrap();
        assert!(jon.len() < msg.len(), "shorter than the whole append");
        let s = rec(spool);
        assert_eq!(s.truncated, 1, "alice only");
        assert_eq!(std::fs::read(spool.join("alice")).unwrap(), b"");
        assert_eq!(std::fs::read(spool.join("jon")).unwrap(), jon);
    }

    /// A power failure (the journal from before the last boot) that lost
    /// where the appends begin: they are found by their prefix, the
    /// partial one at the end of its mailbox, the whole one in the middle
    /// of its own; the delivery had not finished, and both are undone.
    #[test]
    fn recovery_finds_the_appends_after_a_power_failure() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.6", &"data\n".repeat(50));
        let old = message("A.0", "an older message");
        let path = crashed_delivery(
            spool,
            &["alice", "jon"],
            &old,
            &msg,
            &[msg.len(), 70],
            false,
        );
        from_before_boot(&path);
        let s = rec(spool);
        assert_eq!(s.truncated, 2);
        for n in ["alice", "jon"] {
            assert_eq!(std::fs::read(spool.join(n)).unwrap(), old, "{n}");
        }
        // The same, but the delivery had finished (and more was delivered
        // since): nothing is undone.
        let msg = message("A.7", "z");
        let path = crashed_delivery(spool, &["alice", "jon"], &old, &msg, &[msg.len(); 2], false);
        let mut f = OpenOptions::new()
            .append(true)
            .open(spool.join("alice"))
            .unwrap();
        io::Write::write_all(&mut f, &message("A.8", "later")).unwrap();
        from_before_boot(&path);
        let alice = std::fs::read(spool.join("alice")).unwrap();
        let s = rec(spool);
        assert_eq!(s.truncated, 0);
        assert_eq!(std::fs::read(spool.join("alice")).unwrap(), alice);
        let mut jon = old.clone();
        jon.extend_from_slice(&msg);
        assert_eq!(std::fs::read(spool.join("jon")).unwrap(), jon);
    }

    /// A delivery killed while it was locking (no record of where the
    /// appends begin, and the system did not go down): nothing can have
    /// been appended, nothing is looked for or truncated; the dotlocks go.
    #[test]
    fn recovery_of_a_delivery_killed_while_locking() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("A.9", "w");
        // Even a mailbox that happens to end like the message is left.
        crashed_delivery(spool, &["alice", "jon"], &msg, &msg, &[0, 0], false);
        let s = rec(spool);
        assert_eq!(s.journals, 1);
        assert_eq!(s.truncated, 0);
        for n in ["alice", "jon"] {
            assert_eq!(std::fs::read(spool.join(n)).unwrap(), msg);
            assert!(!spool.join(format!("{n}.lock")).exists());
        }
    }

    /// Deliveries killed while one waited for a mailbox the other held:
    /// neither recovery waits for the other's dotlock, after a process
    /// crash (the waiter had appended nothing: nothing to lock) or a power
    /// failure (the waiter's mailboxes are looked at, the holder's dotlock
    /// taken over for a moment and left to the holder's recovery).
    #[test]
    fn deliveries_killed_waiting_for_each_other() {
        for power_failure in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let spool = dir.path();
            let msg = message("D.1", "held");
            let holder =
                crashed_delivery(spool, &["alice", "jon"], b"", &msg, &[msg.len(), 20], true);
            let mut waiter = Journal::create(spool).unwrap();
            waiter.begin().unwrap();
            let other = message("D.2", "waited");
            waiter
                .intend(&other[..60], other.len() as u64, &[want("alice")])
                .unwrap();
            let waiter_path = waiter.path().to_owned();
            drop(waiter);
            if power_failure {
                from_before_boot(&holder);
                from_before_boot(&waiter_path);
            }
            let s = recover_until(spool, Instant::now() + Duration::from_secs(2));
            assert_eq!(
                (s.journals, s.deferred, s.truncated),
                (2, 0, 2),
                "{power_failure}"
            );
            for n in ["alice", "jon"] {
                assert_eq!(std::fs::read(spool.join(n)).unwrap(), b"", "{n}");
                assert!(!spool.join(format!("{n}.lock")).exists(), "{n}.lock");
            }
            assert!(journals(spool).is_empty());
        }
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

    /// A journal cut short (a crash while writing it): nothing can have
    /// been locked or appended, so it is just removed; and so are an
    /// empty journal and an idle one.
    #[test]
    fn recovery_removes_a_partial_journal() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        std::fs::write(spool.join("jon"), b"old\n\n").unwrap();
        let mut j = Journal::create(spool).unwrap();
        j.begin().unwrap();
        j.intend(b"From x Sun Nov  1 06:05:04 2026\n", 80, &[want("jon")])
            .unwrap();
        // Cut in the middle of its intent.
        j.file.set_len(HEADER_LEN as u64 + 20).unwrap();
        let path = j.path().to_owned();
        drop(j);
        let empty = Journal::create(spool).unwrap();
        let empty_path = empty.path().to_owned();
        std::fs::write(&empty_path, b"").unwrap();
        drop(empty);
        let idle = Journal::create(spool).unwrap();
        let idle_path = idle.path().to_owned();
        drop(idle);
        let s = rec(spool);
        assert_eq!(s.journals, 3);
        assert_eq!(s.truncated, 0);
        assert!(!path.exists());
        assert!(!empty_path.exists());
        assert!(!idle_path.exists());
        assert_eq!(std::fs::read(spool.join("jon")).unwrap(), b"old\n\n");
    }

    /// The journal of a delivery in progress (locked) is not touched; nor
    /// is one this process says is its own, nor another program's dotlock,
    /// nor a file that only looks like a journal.
    #[test]
    fn recovery_leaves_live_journals_and_foreign_locks() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let live = Journal::create(spool).unwrap();
        std::fs::write(spool.join("jon.lock"), b"0\n").unwrap();
        // Ours, closed but not let go of (so unlocked).
        let js = Journals::default();
        let mut dead = js.take(spool).unwrap();
        dead.begin().unwrap();
        dead.intend(b"From x Sun Nov  1 06:05:04 2026\n", 80, &[want("jon")])
            .unwrap();
        dead.settle(false).unwrap();
        dead.record_lock(
            "jon",
            LockId {
                dev: 1,
                ino: 2,
                mtime: 3,
                mtime_nsec: 4,
            },
        )
        .unwrap();
        let dead_path = dead.path().to_owned();
        drop(dead);
        std::fs::write(spool.join(".postie-txn.not-ours"), b"x").unwrap();
        // The live journal is idle: not counted as held.
        assert_eq!(recover(spool, &opts(), far(), &js), Summary::default());
        assert!(dead_path.exists());
        let s = rec(spool);
        assert_eq!(s.journals, 1);
        assert!(live.path().exists());
        assert!(!dead_path.exists());
        assert!(spool.join("jon.lock").exists());
        assert!(spool.join(".postie-txn.not-ours").exists());
        drop(live);
    }

    /// The warning for a file named like a journal that is not one says
    /// what the file is and what a journal must be.
    #[test]
    fn a_file_that_is_not_a_journal_is_described() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid();
        let planted = dir.path().join(".postie-txn.1.2.0000000000000003");
        std::fs::write(&planted, b"x").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(&planted, dir.path().join("other")).unwrap();
        let meta = std::fs::symlink_metadata(&planted).unwrap();
        assert_eq!(
            not_ours(&meta),
            format!(
                "skipped, not a journal this postie may recover (a regular file of uid {me}, \
                 mode 0640, 2 links; a journal is a regular file of uid {me} with one link)"
            )
        );
        std::fs::remove_file(dir.path().join("other")).unwrap();
        let link = dir.path().join(".postie-txn.1.2.0000000000000004");
        std::os::unix::fs::symlink(&planted, &link).unwrap();
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert_eq!(
            not_ours(&meta),
            format!(
                "skipped, not a journal this postie may recover (a symbolic link of uid {me}, \
                 mode 0777, 1 link; a journal is a regular file of uid {me} with one link)"
            )
        );
    }

    /// A recovery interrupted after it settled the journal (a crash before
    /// it released the dotlocks it took over): the next one removes them.
    #[test]
    fn interrupted_recovery_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("C.1", "z");
        crashed(spool, &["alice", "jon"], b"", &msg, &[msg.len(), 9]);
        let path = spool.join(journals(spool).pop().unwrap());
        // What the interrupted recovery did: truncated, then settled.
        for n in ["alice", "jon"] {
            OpenOptions::new()
                .write(true)
                .open(spool.join(n))
                .unwrap()
                .set_len(0)
                .unwrap();
        }
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"-", HEADER_LEN as u64).unwrap();
        assert!(parse(&std::fs::read(&path).unwrap()).settled);
        let s = rec(spool);
        assert_eq!(s.journals, 1);
        assert!(!spool.join("alice.lock").exists());
        assert!(!spool.join("jon.lock").exists());
        assert!(journals(spool).is_empty());
    }

    /// A dotlock recovery makes itself (the one the crash left being gone)
    /// is recorded in a journal of its own.
    #[test]
    fn recovery_records_the_dotlocks_it_makes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("C.2", "w");
        crashed(spool, &["jon"], b"", &msg, &[50]);
        std::fs::remove_file(spool.join("jon.lock")).unwrap();
        let js = Journals::default();
        let s = recover(spool, &opts(), far(), &js);
        assert_eq!(s.truncated, 1);
        let mine = js.take(spool).unwrap();
        let bytes = std::fs::read(mine.path()).unwrap();
        // Ended (idle) after use; the lock line is still there, of the
        // generation before.
        assert_eq!(parse(&bytes), Parsed::default());
        assert!(String::from_utf8_lossy(&bytes).contains(" jon\n"));
        js.put(mine);
        js.close();
        assert!(journals(spool).is_empty());
    }

    /// A mailbox still locked by someone else past the deadline: the
    /// journal stays, and so do the dotlocks of the crash, for next time.
    #[test]
    fn recovery_that_cannot_lock_tries_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let msg = message("C.3", "y");
        crashed(spool, &["alice", "jon"], b"", &msg, &[msg.len(), 1]);
        // Another program holds jon's flock.
        let other = File::open(spool.join("jon")).unwrap();
        let held =
            nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        let s = recover_until(spool, Instant::now() + Duration::from_millis(100));
        assert_eq!(s.deferred, 1);
        assert_eq!(s.journals, 0);
        assert_eq!(journals(spool).len(), 1);
        assert!(spool.join("alice.lock").exists());
        assert!(spool.join("jon.lock").exists());
        assert_eq!(std::fs::read(spool.join("alice")).unwrap(), msg);
        drop(held);
        let s = rec(spool);
        assert_eq!(s.journals, 1);
        assert_eq!(s.truncated, 2);
        assert!(!spool.join("alice.lock").exists());
        assert!(!spool.join("jon.lock").exists());
    }

    /// The `lock` lines naming `mailbox` in the journals of `spool` other
    /// than `except`: each dotlock's device, inode and modification time.
    fn lock_lines(spool: &Path, except: &Path, mailbox: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for name in journals(spool) {
            let path = spool.join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if path == except {
                continue;
            }
            for line in String::from_utf8_lossy(&bytes).lines() {
                let f: Vec<&str> = line.splitn(3, ' ').collect();
                if f[0] == "lock" && line.ends_with(&format!(" {mailbox}")) && f.len() == 3 {
                    lines.push(f[2].to_string());
                }
            }
        }
        lines
    }

    /// Recovery follows the rule of deliveries (postie 5, item 3): no lock
    /// is waited for while another is held. With one mailbox of a crashed
    /// delivery flocked by another program, it holds no lock on the other
    /// while it waits (another program takes all three, again and again),
    /// truncates nothing meanwhile, records the dotlock it makes each round
    /// over the last round's (its journal does not grow), and undoes the
    /// delivery once the holder lets go.
    #[test]
    fn recovery_waiting_for_one_mailbox_holds_no_lock_on_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().to_owned();
        let msg = message("C.4", "v");
        let crashed_journal =
            crashed_delivery(&spool, &["alice", "jon"], b"", &msg, &[msg.len(), 1], true);
        // Recovery makes alice's dotlock itself (and lets go of it while it
        // waits); jon's mailbox is flocked by another program.
        std::fs::remove_file(spool.join("alice.lock")).unwrap();
        let jon = File::open(spool.join("jon")).unwrap();
        let held =
            nix::fcntl::Flock::lock(jon, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        let patient = MboxOptions {
            lock_timeout: Duration::from_secs(600),
            ..opts()
        };
        let recovery = std::thread::spawn({
            let spool = spool.clone();
            move || {
                let js = Journals::default();
                let s = recover(&spool, &patient, far() + Duration::from_secs(600), &js);
                js.close();
                s
            }
        });
        // Every lock of alice's mailbox taken by another program, in
        // between recovery's rounds, until 20 rounds of recovery's have
        // been seen (each makes a dotlock of its own, recorded in its
        // journal).
        let alice = spool.join("alice");
        let mut probes = 0;
        let mut rounds = HashSet::new();
        let mut most_lines = 0;
        let until = Instant::now() + Duration::from_secs(60);
        while (probes == 0 || rounds.len() < 20) && Instant::now() < until {
            let lines = lock_lines(&spool, &crashed_journal, "alice");
            most_lines = most_lines.max(lines.len());
            rounds.extend(lines);
            // Only once recovery has locked alice's mailbox (its fcntl
            // lock is held when the dotlock is recorded): before that, any
            // program gets it.
            if rounds.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if let Ok(mb) = mbox::open_locked(
                &alice,
                &me("alice"),
                &opts(),
                Instant::now() + Duration::from_millis(50),
            ) {
                assert!(!recovery.is_finished());
                assert_eq!(std::fs::read(&alice).unwrap(), msg, "truncated unlocked");
                probes += 1;
                mb.unlock();
            }
        }
        assert!(
            probes > 0,
            "alice's mailbox stayed locked while recovery waited for jon's"
        );
        assert!(rounds.len() >= 20, "{} rounds", rounds.len());
        assert!(most_lines <= 3, "{most_lines} lock lines");
        assert!(!recovery.is_finished());
        assert_eq!(std::fs::read(&alice).unwrap(), msg);
        drop(held);
        let s = recovery.join().unwrap();
        assert_eq!(
            (s.journals, s.undone, s.truncated, s.deferred),
            (1, 1, 2, 0)
        );
        for n in ["alice", "jon"] {
            assert_eq!(std::fs::read(spool.join(n)).unwrap(), b"", "{n}");
            assert!(!spool.join(format!("{n}.lock")).exists(), "{n}.lock");
        }
        assert!(journals(&spool).is_empty());
    }
}
