//! Undoing one interrupted delivery that may have appended, for recovery
//! (`recover.rs`), which has read its journal: locks its mailboxes again,
//! sorts out what the crash left in each, truncates each back unless the
//! delivery had finished, and settles the journal.
//!
//! A journal with an intent, and a record of where the appends begin or
//! from before the system last started (see `recover.rs` for the others):
//! every mailbox it names is locked again, in the same order,
//! taking over the dotlock left behind (its own, or that of another dead
//! delivery it was waiting for, which is left in place for that one's
//! recovery); all of them or none, as a delivery locks them: each is
//! tried once a round, and at a busy one every lock held is released (a
//! dotlock taken over stays in place) and the whole set tried again after
//! a back-off, until the lock timeout, so that no lock is waited for
//! while another is held. Nothing is looked at or truncated before every
//! one is locked. Where its append begins is read from the journal, or else
//! looked for: the last line that begins with the whole beginning of the
//! append, else the end of the mailbox if it ends with part of it. Each
//! mailbox is then *whole* (the append is all there: the recorded
//! length, starting with its beginning and ending in a blank line),
//! *untouched*, *partial* (more, but less than the whole append, starting
//! with as much of its beginning as fits), *broken* (part of the append,
//! then another message: its dotlock was broken), or *changed*: replaced
//! (another device or inode), shorter than the recorded size, or not
//! holding the beginning of the append there; a changed mailbox tells
//! nothing and is left alone. If some mailbox is whole and every other
//! one whole or changed, the delivery had finished: nothing is undone
//! (its client may or may not have had its `250`; either way every
//! recipient has the message once). Otherwise every whole or partial
//! mailbox is truncated back to where the append begins and fsynced.
//! Then the intent is spoiled, durably, the locks are released (the
//! dotlocks removed) and the journal removed. If a mailbox cannot be
//! locked in time or truncated, nothing more is done: the locks are
//! released but the dotlocks taken over are left, so that nothing is
//! appended after a broken message before a later recovery undoes it.
//!
//! A file target (named in the journal by its absolute path) is handled
//! the same way, as the identity the journal records (never as root),
//! under a file's safe-open rules, and with two differences: its append
//! is never looked for (without a recorded start, nothing was appended
//! to it: the delivery synced the start before appending), and a file
//! replaced since is left alone like a mailbox.
//!
//! Recovery never truncates past the append it undoes: a mailbox with more
//! than the whole append, or with another message after part of it, is
//! left alone. A dotlock recovery makes itself (when the one the crash left
//! is gone) is recorded in a journal of its own, so that recovery killed
//! in turn leaves nothing the next one cannot undo. Every action is
//! logged, one line each.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::time::Instant;

use super::dotlocks::{as_user, identity, remove_dotlocks};
use super::record::{AppendStart, Intent, Parsed, Want, target_path, valid_file_name};
use super::{Journal, Journals};
use crate::mbox::{self, LockHooks, LockId, LockedMailbox, MboxError, MboxOptions};
use crate::users::User;

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
pub(super) struct Undo<'a> {
    pub spool: &'a Path,
    /// The journal's name.
    pub journal: &'a str,
    pub parsed: &'a Parsed,
    pub intent: &'a Intent,
    /// Where the appends begin is not known: look for them.
    pub search: bool,
    /// The dotlocks of every dead journal of this pass, which may be taken
    /// over (only this journal's own are removed).
    pub dotlocks: &'a [(String, LockId)],
    pub opts: &'a MboxOptions,
    pub deadline: Instant,
    /// Where to record the dotlocks recovery makes.
    pub journals: &'a Journals,
    /// Spoils the journal's intent, durably.
    pub settle: &'a dyn Fn() -> io::Result<()>,
    /// The delivery had not finished whatever its mailboxes hold: the
    /// queue entry it was to make last is not there.
    pub unfinished: bool,
    /// What a finished delivery still needs before the journal is
    /// settled (its queue entry's recipients taken off); an error leaves
    /// it for a later recovery.
    pub finish: &'a dyn Fn() -> io::Result<()>,
}

/// What [`undo`] found the interrupted delivery to be, once dealt with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undone {
    /// It had finished: nothing undone.
    Finished,
    /// Undone: this many mailboxes (at least one) truncated back.
    Truncated(usize),
    /// It had appended nothing: nothing to truncate.
    NothingAppended,
}

/// Undoes an interrupted delivery, unless it had finished: locks its
/// mailboxes, truncates each back, settles the journal, unlocks. `None` if
/// it must be tried again later; else what it was.
pub(super) fn undo(cx: &Undo<'_>) -> Option<Undone> {
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
        unfinished,
        finish,
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
    let mut held: Vec<(LockedMailbox, &Want)> = Vec::new();
    let mut set = WantSet {
        spool,
        journal,
        parsed,
        dotlocks,
        opts,
        recorder: &mut recorder,
        skip: HashSet::new(),
        said_busy: false,
    };
    // Every error is logged as it is met.
    let mut failed = mbox::lock_all_or_none(&mut set, &intent.wants, deadline, &mut held).is_err();
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
        let start = parsed
            .starts
            .as_ref()
            .and_then(|z| z.iter().find(|z| z.name == w.name));
        // A file target's append is never looked for: its start is on
        // disk whenever it may have been appended to (a transaction with a
        // file syncs it), and only the very file recorded is truncated.
        let search = search && !valid_file_name(&w.name);
        match state(&mb, intent, start, search) {
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
    let finished = !unfinished
        && locked
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
    if !failed && finished {
        if let Err(err) = finish() {
            log::error!("recovery: {journal}: {err}; will try again");
            failed = true;
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
    Some(if finished {
        Undone::Finished
    } else if truncated > 0 {
        Undone::Truncated(truncated)
    } else {
        Undone::NothingAppended
    })
}

/// The mailboxes of an interrupted delivery as a [`mbox::LockSet`]: each
/// locked as its owner, taking over the dotlocks the crash left, each
/// dotlock recovery makes recorded in `recorder`; one missing or unsafe
/// skipped, as there is nothing to undo there. Its errors are logged here,
/// and mean "try again later".
struct WantSet<'a> {
    spool: &'a Path,
    /// The journal's name.
    journal: &'a str,
    parsed: &'a Parsed,
    dotlocks: &'a [(String, LockId)],
    opts: &'a MboxOptions,
    /// Our own journal, if we have one.
    recorder: &'a mut Option<Journal>,
    /// Mailboxes missing or unsafe: nothing to lock or undo there.
    skip: HashSet<&'a str>,
    said_busy: bool,
}

impl<'a> mbox::LockSet<'a, Want> for WantSet<'a> {
    type Locked = (LockedMailbox, &'a Want);
    type Error = ();

    fn try_lock(&mut self, w: &'a Want) -> Result<mbox::Try<Self::Locked>, ()> {
        let (spool, journal) = (self.spool, self.journal);
        if self.skip.contains(w.name.as_str()) {
            return Ok(mbox::Try::Skip);
        }
        let adopt: Vec<LockId> = self
            .dotlocks
            .iter()
            .filter(|(n, _)| *n == w.name)
            .map(|l| l.1)
            .collect();
        let owner = User {
            name: w.name.clone(),
            uid: w.uid,
            gid: w.gid,
            ..User::default()
        };
        let path = target_path(spool, &w.name);
        let file = valid_file_name(&w.name);
        if identity(w).is_none() {
            log::error!(
                "recovery: {journal}: {}: a file target of uid 0; left alone",
                path.display()
            );
            self.skip.insert(&w.name);
            return Ok(mbox::Try::Skip);
        }
        let _id = match as_user(w.uid, w.gid) {
            Ok(id) => id,
            Err(err) => {
                log::error!("recovery: {journal}: {}: {err}", w.name);
                return Err(());
            }
        };
        let name = w.name.as_str();
        let recorder = &mut *self.recorder;
        let mut record = |id: LockId| match recorder {
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
        let open = if file {
            mbox::open_file_locked_with
        } else {
            mbox::open_locked_with
        };
        let one = std::slice::from_ref(w);
        match open(&path, &owner, self.opts, Instant::now(), &mut hooks) {
            Ok(mb) => Ok(mbox::Try::Locked((mb, w))),
            Err(MboxError::LockTimeout) => Ok(mbox::Try::Busy),
            Err(MboxError::Io(err)) if err.kind() == io::ErrorKind::NotFound => {
                remove_dotlocks(spool, journal, &own_locks(self.parsed, &w.name), one);
                self.skip.insert(name);
                Ok(mbox::Try::Skip)
            }
            Err(MboxError::Unsafe(why)) => {
                log::warn!("recovery: {journal}: {}: {why}; left alone", path.display());
                remove_dotlocks(spool, journal, &own_locks(self.parsed, &w.name), one);
                self.skip.insert(name);
                Ok(mbox::Try::Skip)
            }
            Err(err) => {
                log::error!(
                    "recovery: {journal}: {}: {err}; will try again",
                    path.display()
                );
                Err(())
            }
        }
    }

    /// Lets go of a mailbox of a round that could not lock them all,
    /// before the back-off: a dotlock taken over stays in place (nothing
    /// is appended after a broken message meanwhile), for the next round
    /// to take over again; one recovery made is removed.
    fn release(&mut self, (mb, w): Self::Locked) {
        let _id = as_user(w.uid, w.gid);
        if mb.adopted_dotlock().is_some() {
            mb.unlock_keeping_dotlock();
        } else {
            mb.unlock();
        }
    }

    fn busy(&mut self, w: &'a Want) -> Result<(), ()> {
        let journal = self.journal;
        // The next round's dotlocks are recorded over this one's.
        if let Some(Err(err)) = self.recorder.as_mut().map(|j| j.released()) {
            log::error!("recovery: {journal}: cannot write our own journal: {err}; will try again");
            return Err(());
        }
        if !self.said_busy {
            self.said_busy = true;
            log::info!(
                "recovery: {journal}: {}: busy; every lock released, trying again",
                target_path(self.spool, &w.name).display()
            );
        }
        Ok(())
    }

    fn timed_out(&mut self, w: &'a Want) {
        log::error!(
            "recovery: {}: {}: {}; will try again",
            self.journal,
            target_path(self.spool, &w.name).display(),
            MboxError::LockTimeout
        );
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
/// `recorded` is the mailbox as the delivery found it, if recorded; else,
/// with `search`, the append is looked for; without, nothing was appended.
fn state(
    mb: &LockedMailbox,
    intent: &Intent,
    recorded: Option<&AppendStart>,
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
