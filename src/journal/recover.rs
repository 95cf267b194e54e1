//! Recovery: finds the journals that processes now gone left in the spool,
//! and deals with each: removes what tells of nothing to undo, and has
//! `undo.rs` undo a delivery that may have appended. What a journal holds
//! is read by `record.rs`; this file only opens, checks, locks and removes
//! the files.
//!
//! [`recover()`] runs when a daemon (or the delivery process of a
//! privilege-separated one) starts, before it serves; when `postie inetd`
//! or an in-process `sendmail` starts; and whenever a delivery finds a
//! mailbox's dotlock taken while its `fcntl` lock was free, which is what a
//! delivery killed in another process leaves (a live postie holds both),
//! so that a crashed `postie inetd`, with no daemon to restart, is undone
//! by the next delivery that meets it (once a delivery, and once a
//! [`RESCAN_EVERY`](super::RESCAN_EVERY) per spool:
//! [`Journals::recovery_due`]; a user who can
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
//!   with the same device, inode and modification time, are removed (a
//!   file target's as the identity its intent names), then the journal;
//! * otherwise its delivery is undone, unless it had finished: see
//!   `undo.rs`.
//!
//! The scan is one `readdir` of the spool: about 0.3 ms per thousand
//! mailboxes, which is why deliveries do not scan unless they meet a
//! dotlock they cannot explain.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dotlocks::remove_dotlocks;
use super::record::{
    self, HEADER_LEN, IDLE, Intent, PREFIX, Parsed, QueueStep, SETTLED, SETTLED_AT, parse,
};
use super::undo::{self, Undo, Undone};
use super::{Journals, SAFE_FLAGS};
use crate::mbox::{self, LockId, MboxOptions};

/// What one run of [`recover()`] did.
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
    queue: Option<&dyn QueueRecovery>,
) -> Summary {
    let mut summary = Summary::default();
    super::dotlocks::remove_dead_lock_temporaries(spool, opts.stale_lock);
    let dir = match std::fs::read_dir(spool) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("recovery: {}: {e}", spool.display());
            return summary;
        }
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && record::is_journal_name(n) && !journals.is_own(n))
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
        let cx = Pass {
            spool,
            dotlocks: &dotlocks,
            opts,
            deadline,
            journals,
            queue,
        };
        recover_one(&cx, d, &mut summary);
    }
    summary
}

/// What recovery needs of the queue for a delivery that changed it
/// ([`QueueStep`]). The delivery module gives it: the journal knows no
/// queue.
pub trait QueueRecovery {
    /// Whether entry `id` is there: its envelope file exists and loads.
    fn exists(&self, id: &str) -> io::Result<bool>;
    /// Removes whatever an undone delivery made of entry `id`.
    fn discard(&self, id: &str) -> io::Result<()>;
    /// Takes `mailboxes` off entry `id`'s pending recipients (the entry
    /// removed when none is left): their delivery had finished. Done
    /// already (the entry gone, or without them), it changes nothing.
    fn delivered(&self, id: &str, mailboxes: &[String]) -> io::Result<()>;
}

/// What every journal of one pass of [`recover()`] is dealt with in.
struct Pass<'a> {
    spool: &'a Path,
    /// The dotlocks of every dead journal of the pass.
    dotlocks: &'a [(String, LockId)],
    opts: &'a MboxOptions,
    deadline: Instant,
    journals: &'a Journals,
    queue: Option<&'a dyn QueueRecovery>,
}

/// A journal of a process that is gone, locked by us.
struct Dead {
    name: String,
    file: File,
    parsed: Parsed,
    /// Last written before the system started.
    before_boot: bool,
}

/// Undoes the interrupted delivery of `d` (intent `intent`) unless it had
/// finished, with what it did to the queue: a delivery that was to make
/// a queue entry had finished only if the entry is there (its envelope
/// file is made after every append), and is undone, the entry's files
/// removed, if not; one that delivered a queue entry's recipients, if
/// finished, takes them off the entry before the journal is settled.
/// Only the mailboxes the queue step names were appended to: the others
/// of the intent were left to the queue. `None`: to be tried again
/// later; else what was done, for the log.
fn undo_with_queue(
    cx: &Pass<'_>,
    d: &Dead,
    intent: &Intent,
    settle: &dyn Fn() -> io::Result<()>,
    s: &mut Summary,
) -> Option<String> {
    let (name, parsed) = (d.name.as_str(), &d.parsed);
    let step = parsed.queue.as_ref();
    let queue = match (step, cx.queue) {
        (Some(step), None) => {
            log::error!(
                "recovery: {name}: the interrupted delivery changed queue entry {}, but there is no queue; will try again",
                step_id(step)
            );
            return None;
        }
        (_, q) => q,
    };
    let filtered;
    let intent = match step {
        Some(step) => {
            filtered = Intent {
                wants: intent
                    .wants
                    .iter()
                    .filter(|w| step.mailboxes().contains(&w.name))
                    .cloned()
                    .collect(),
                ..intent.clone()
            };
            &filtered
        }
        None => intent,
    };
    let mut unfinished = false;
    if let (Some(QueueStep::New { id, .. }), Some(q)) = (step, queue) {
        match q.exists(id) {
            Ok(true) => {
                remove_dotlocks(cx.spool, name, &parsed.locks, &parsed.wants);
                if let Err(e) = settle() {
                    log::error!("recovery: {name}: cannot settle the journal: {e}; will try again");
                    return None;
                }
                return Some(format!(
                    "of a delivery that had finished, queue entry {id} made"
                ));
            }
            Ok(false) => unfinished = true,
            Err(e) => {
                log::error!("recovery: {name}: queue entry {id}: {e}; will try again");
                return None;
            }
        }
    }
    let finish = || match (step, queue) {
        (Some(QueueStep::Done { id, mailboxes }), Some(q)) => q.delivered(id, mailboxes),
        _ => Ok(()),
    };
    let undo_cx = Undo {
        spool: cx.spool,
        journal: name,
        parsed,
        intent,
        search: parsed.starts.is_none(),
        dotlocks: cx.dotlocks,
        opts: cx.opts,
        deadline: cx.deadline,
        journals: cx.journals,
        settle,
        unfinished,
        finish: &finish,
    };
    let undone = undo::undo(&undo_cx)?;
    if let (Some(QueueStep::New { id, .. }), Some(q)) = (step, queue) {
        match q.discard(id) {
            Ok(()) => log::info!("recovery: {name}: removed what was made of queue entry {id}"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("recovery: {name}: queue entry {id}: {e}"),
        }
    }
    Some(match undone {
        Undone::Finished => match step {
            Some(QueueStep::Done { id, .. }) => {
                format!("of a delivery that had finished: queue entry {id} delivered")
            }
            _ => "of a delivery that had finished: nothing to undo".into(),
        },
        Undone::Truncated(truncated) => {
            s.truncated += truncated;
            s.undone += 1;
            "of an interrupted delivery, undone".into()
        }
        Undone::NothingAppended => "of an interrupted delivery that had appended nothing".into(),
    })
}

fn step_id(step: &QueueStep) -> &str {
    match step {
        QueueStep::New { id, .. } | QueueStep::Done { id, .. } => id,
    }
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

/// Why a file named like a journal, of (l)stat `meta`, is skipped.
fn not_ours(meta: &std::fs::Metadata) -> String {
    format!(
        "skipped, not a journal this postie may recover ({}; \
         a journal is a regular file of uid {} with one link)",
        crate::sys::describe_file(meta),
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
        Ok(meta) if crate::sys::is_own_single_file(&meta) => {}
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
    if !crate::sys::is_own_single_file(&meta) {
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

/// Deals with the dead journal `d`, as the module documentation says, and
/// removes it, unless its delivery must be undone later; counts what was
/// done in `s`.
fn recover_one(cx: &Pass<'_>, d: &Dead, s: &mut Summary) {
    let spool = cx.spool;
    let (name, parsed) = (d.name.as_str(), &d.parsed);
    let path = spool.join(name);
    // The intent spoiled, the lock lines kept: should this recovery be
    // interrupted after it, the next one still knows the dotlocks to
    // remove.
    let settle = || {
        d.file.write_all_at(SETTLED, SETTLED_AT)?;
        d.file.sync_data()
    };
    let what = match &parsed.intent {
        // Where the appends begin is recorded (not synced) once every
        // mailbox is locked, before the first append: without it, a
        // journal written since the system started (its process died,
        // leaving its writes in the page cache) tells that nothing was
        // appended; one from before (a power failure, a crash of the
        // system) may have lost it, and then the appends are looked for.
        Some(_) if parsed.starts.is_none() && !d.before_boot => {
            remove_dotlocks(spool, name, &parsed.locks, &parsed.wants);
            "of an interrupted delivery that had appended nothing".to_string()
        }
        Some(intent) => match undo_with_queue(cx, d, intent, &settle, s) {
            Some(what) => what,
            None => {
                s.deferred += 1;
                return;
            }
        },
        None if parsed.generation == IDLE => "idle".into(),
        None => {
            remove_dotlocks(spool, name, &parsed.locks, &parsed.wants);
            if parsed.settled {
                "of a delivery that was over".into()
            } else {
                "of a delivery that had not begun".into()
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::Journal;
    use super::super::testutil::{
        crashed, crashed_delivery, far, from_before_boot, journals, me, message, opts, rec,
        recover_until, want,
    };
    use super::*;

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
        assert_eq!(
            recover(spool, &opts(), far(), &js, None),
            Summary::default()
        );
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
        let s = recover(spool, &opts(), far(), &js, None);
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
                let s = recover(
                    &spool,
                    &patient,
                    far() + Duration::from_secs(600),
                    &js,
                    None,
                );
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
