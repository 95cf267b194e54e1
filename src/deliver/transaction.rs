//! One message's delivery to all of its targets, all or nothing: a
//! [`Transaction`] whose methods are its steps, in this order (the why of
//! each is in the [`crate::deliver`] module documentation):
//!
//! 1. [`begin`](Transaction::begin): a journal of this process taken and
//!    begun, the targets put in the one fixed order;
//! 2. [`intend`](Transaction::intend): what recovery needs to undo the
//!    appends written to the journal and synced, before any lock;
//! 3. [`lock_all`](Transaction::lock_all): the gate entered, then every
//!    target locked or none, round after round, recovering the spool when
//!    a round meets a lock a crashed delivery may have left; then where
//!    each append starts recorded;
//! 4. [`append_all`](Transaction::append_all): every target appended to and
//!    synced, each on a thread of its own;
//! 5. [`commit`](Transaction::commit) or [`rollback`](Transaction::rollback):
//!    the journal settled, the locks released, the journal kept for the
//!    next delivery or left to recovery.
//!
//! A transaction dropped before 5 rolls back, as on a failure; one dropped
//! while its thread panics lets its targets go with the locks that other
//! programs honour left in place (a mailbox's dotlock), so that nothing is
//! appended to them before recovery has undone the delivery.

use std::path::Path;
use std::time::{Duration, Instant};

use super::gate::{Gate, Gates};
use super::target::{Append, Failure, LockRound, LockedTarget, Target};
use crate::journal::{AppendStart, Journal, Journals, QueueStep, Summary, Want};
use crate::mbox::{self, MboxError};
use crate::smtp::TempReason;
use crate::sys;

/// One delivery to `T`s in progress. Ended by [`commit`](Self::commit) or
/// [`rollback`](Self::rollback); dropping it otherwise is the safety net
/// (see the module documentation).
pub(crate) struct Transaction<'d, T: Target> {
    journals: &'d Journals,
    gates: &'d Gates,
    spool: &'d Path,
    /// In the one fixed order, by key.
    targets: Vec<T>,
    /// `None` once ended.
    journal: Option<Journal>,
    /// The targets entered at the gate, from the first lock round on.
    gate: Option<Gate<'d>>,
    /// The targets locked so far (the first ones, in order).
    locked: Vec<T::Locked>,
    /// The targets left unlocked by a partial lock ([`lock_all`]'s
    /// `partial`): busy when the wait was over.
    ///
    /// [`lock_all`]: Self::lock_all
    left: Vec<usize>,
    /// Whether the journal may hold an intent: from then on a failure is
    /// undone (each target locked truncated back, the journal settled).
    armed: bool,
    /// The exact length of every append, as the intent records it.
    len: u64,
}

const ENDED: &str = "transaction used after its end";

impl<'d, T: Target> Transaction<'d, T> {
    /// Takes a journal of this process in `spool` and begins it, for a
    /// delivery to `targets`. Call it as ourselves (root in the delivery
    /// process), not as any recipient: recovery trusts only journals of
    /// its own uid.
    pub(crate) fn begin(
        journals: &'d Journals,
        gates: &'d Gates,
        spool: &'d Path,
        mut targets: Vec<T>,
    ) -> Result<Self, Failure> {
        // One fixed order for every transaction: no two sessions deadlock.
        targets.sort_by(|a, b| a.key().cmp(b.key()));
        let mut journal = journals.take(spool).map_err(|e| {
            // Not yet named: the log says where it was to be made.
            let what = format!("cannot create a journal in {}", spool.display());
            journal_failure(Path::new(&what), e)
        })?;
        if let Err(e) = journal.begin() {
            let f = journal_failure(journal.path(), e);
            journals.abandon(journal);
            return Err(f);
        }
        Ok(Transaction {
            journals,
            gates,
            spool,
            locked: Vec::with_capacity(targets.len()),
            left: Vec::new(),
            targets,
            journal: Some(journal),
            gate: None,
            armed: false,
            len: 0,
        })
    }

    /// For a transaction of one target: its identity, to hold for the
    /// whole transaction (the journal's writes go to its open descriptor,
    /// and recovery takes our own identity for itself).
    pub(crate) fn single_identity(&self) -> Option<sys::FsIdentity> {
        match self.targets.as_slice() {
            [one] => one.act_as().ok().flatten(),
            _ => None,
        }
    }

    /// Records what recovery needs to undo the appends, on disk before any
    /// target is locked (so that the sync holds no lock): the targets, how
    /// the appends begin (From_ line and trace headers, unique to this
    /// message) and their exact length, which tells a whole append from
    /// part of one.
    pub(crate) fn intend(&mut self, what: &Append<'_>) -> Result<(), Failure> {
        let journal = self.journal.as_mut().expect(ENDED);
        self.len = what
            .appended_len()
            .map_err(|e| Failure::mbox(journal.path(), MboxError::Io(e)))?;
        let wants: Vec<Want> = self.targets.iter().map(|t| t.intent()).collect();
        self.armed = true;
        journal
            .intend(&what.prefix(), self.len, &wants)
            .map_err(|e| journal_failure(journal.path(), e))
    }

    /// Locks every target, all or none, by `deadline` and within
    /// `lock_timeout` of entering the gate, each lock recorded in the
    /// journal before it is made; then records where each append begins.
    /// `recover` is [`super::Deliverer::recover_spool`] for a lock a
    /// crashed delivery may have left, run by `until` at the latest, with
    /// the busy target's key (`None`: it could not run).
    ///
    /// `partial` (a delivery that may queue): once `lock_timeout` is over
    /// with a target still busy, a last round locks every target that is
    /// free, one try each, and leaves the busy ones ([`left`]) to the
    /// queue; nothing is waited for in it, so that no lock is waited for
    /// while another is held.
    ///
    /// [`left`]: Self::left
    pub(crate) fn lock_all(
        &mut self,
        deadline: Instant,
        lock_timeout: Duration,
        partial: bool,
        mut recover: impl FnMut(Instant, &Path) -> Option<Summary>,
    ) -> Result<(), Failure> {
        let journal = self.journal.as_mut().expect(ENDED);
        // After the journal's sync, which needs no target: deliveries of
        // this process to the same targets take turns here rather than in
        // the lock back-off.
        let keys: Vec<&Path> = self.targets.iter().map(|t| t.key()).collect();
        let first = keys.first().copied().unwrap_or(self.spool);
        let gates = self.gates;
        let enter = |until: Instant| {
            gates
                .enter(&keys, until)
                .ok_or_else(|| Failure::mbox(first, MboxError::LockTimeout))
        };
        self.gate = Some(enter(deadline)?);
        // The lock timeout counts from here, for the whole set.
        let lock_deadline = deadline.min(mbox::deadline_after(lock_timeout));
        // Every target locked, or none (DESIGN.md: no lock is waited for
        // while another is held): each is tried once a round, in the fixed
        // order; at one that is busy, those already locked are released,
        // the gate left, and the whole set tried again after a back-off,
        // until the lock timeout. A user who holds a lock on their own
        // mailbox keeps no other mailbox locked.
        let mut set = TargetSet {
            journal,
            journals: self.journals,
            spool: self.spool,
            gate: &mut self.gate,
            enter: &enter,
            recover: &mut recover,
            lock_deadline,
            orphan: false,
            scanned: false,
            scans_done: false,
            said_busy: false,
        };
        match mbox::lock_all_or_none(&mut set, &self.targets, lock_deadline, &mut self.locked) {
            Ok(()) => {}
            Err(f) if partial && f.busy() => {
                // The last round: whatever is free, the rest left. (The
                // gate, left at the busy one, entered again by the
                // delivery's deadline: the lock timeout is over.)
                *set.gate = Some((set.enter)(deadline)?);
                for (i, target) in self.targets.iter().enumerate() {
                    match mbox::LockSet::try_lock(&mut set, target)? {
                        mbox::Try::Locked(locked) => self.locked.push(locked),
                        mbox::Try::Busy => self.left.push(i),
                        mbox::Try::Skip => {}
                    }
                }
            }
            Err(f) => return Err(f),
        }
        let journal = set.journal;
        // Every target locked: where each append begins. Not synced: a
        // process that dies leaves it in the page cache, and after a
        // power failure recovery finds the appends by their beginning.
        let starts: Vec<AppendStart> = self.locked.iter().map(|t| t.append_start()).collect();
        journal
            .record_starts(&starts)
            .map_err(|e| journal_failure(journal.path(), e))?;
        // Synced, though, when a file target asks (`Target::durable_start`):
        // recovery never looks for a file's append.
        if self.targets.iter().any(|t| t.durable_start()) {
            journal
                .sync()
                .map_err(|e| journal_failure(journal.path(), e))?;
        }
        Ok(())
    }

    /// The targets a partial [`lock_all`](Self::lock_all) left unlocked.
    pub(crate) fn left(&self) -> impl Iterator<Item = &T> {
        self.left.iter().map(|&i| &self.targets[i])
    }

    /// The keys of the targets locked.
    pub(crate) fn locked_keys(&self) -> impl Iterator<Item = &Path> {
        self.locked.iter().map(|t| t.key())
    }

    /// Records what this delivery does to the queue, synced, after
    /// [`lock_all`](Self::lock_all) and before the first append.
    pub(crate) fn record_queue(&mut self, step: &QueueStep) -> Result<(), Failure> {
        let journal = self.journal.as_mut().expect(ENDED);
        journal
            .record_queue(step)
            .map_err(|e| journal_failure(journal.path(), e))
    }

    /// Appends to every target, each on a thread of its own (see
    /// [`each_in_parallel`]). On failure, every target's failure, each
    /// with its key.
    pub(crate) fn append_all(&mut self, what: &Append<'_>) -> Result<(), Vec<Failure>> {
        let len = self.len;
        let failures: Vec<Failure> = each_in_parallel(&mut self.locked, |t| t.append(what, len))
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// Delivered: the journal settled, every lock released.
    pub(crate) fn commit(mut self) {
        let journal = self.journal.as_mut().expect(ENDED);
        // Not synced: should this not reach the disk, recovery finds every
        // append whole and undoes nothing.
        let reuse = match journal.settle(false) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{}: {e}", journal.path().display());
                false
            }
        };
        self.end(false, reuse);
    }

    /// A step failed: every target written truncated back, the journal
    /// settled (synced), every lock released. Should that fail, the
    /// transaction is stuck: the locks other programs honour and the
    /// journal stay, so that nothing is appended to these targets before
    /// recovery has undone it.
    pub(crate) fn rollback(mut self) {
        self.undo();
    }

    fn undo(&mut self) {
        let mut stuck = false;
        if self.armed {
            for locked in self.locked.iter_mut().rev() {
                if let Err(e) = locked.rollback() {
                    log::error!(
                        "{}: rollback failed; the mailboxes stay locked until recovery undoes the delivery: {e}",
                        locked.key().display()
                    );
                    stuck = true;
                }
            }
            let journal = self.journal.as_mut().expect(ENDED);
            if !stuck {
                if let Err(e) = journal.settle(true) {
                    log::error!(
                        "{}: cannot settle the journal; the mailboxes stay locked until recovery: {e}",
                        journal.path().display()
                    );
                    stuck = true;
                }
            }
        }
        self.end(stuck, true);
    }

    /// Releases the locks (all but those kept for recovery if `stuck`),
    /// leaves the gate, and keeps the journal for another delivery if it
    /// is fit for one (`reuse`), or closes it and leaves it to the next
    /// recovery.
    fn end(&mut self, stuck: bool, reuse: bool) {
        for locked in std::mem::take(&mut self.locked).into_iter().rev() {
            if stuck {
                locked.unlock_keeping_lock();
            } else {
                locked.unlock();
            }
        }
        self.gate = None;
        let mut journal = self.journal.take().expect(ENDED);
        if !stuck && reuse && journal.end().is_ok() {
            self.journals.put(journal);
        } else {
            self.journals.abandon(journal);
        }
    }
}

/// A transaction's targets as a [`mbox::LockSet`]: each lock recorded in
/// its journal, the gate left while it backs off, and the spool recovered
/// when a round meets a lock a crashed delivery may have left.
struct TargetSet<'a, 'd> {
    journal: &'a mut Journal,
    journals: &'d Journals,
    spool: &'d Path,
    gate: &'a mut Option<Gate<'d>>,
    /// Enters the gate, by the deadline given.
    enter: &'a dyn Fn(Instant) -> Result<Gate<'d>, Failure>,
    /// [`Transaction::lock_all`]'s `recover`.
    recover: &'a mut dyn FnMut(Instant, &Path) -> Option<Summary>,
    lock_deadline: Instant,
    /// Whether a target of this round found a dotlock without its fcntl
    /// lock: a crashed delivery's?
    orphan: bool,
    /// Whether this delivery has scanned the spool (then a stale dotlock
    /// may be removed: recovery took over any it explains), and whether
    /// it needs no more scans (the last found no journal of ours with a
    /// delivery still held by its process).
    scanned: bool,
    scans_done: bool,
    said_busy: bool,
}

impl<'t, T: Target> mbox::LockSet<'t, T> for TargetSet<'_, '_> {
    type Locked = T::Locked;
    type Error = Failure;

    fn try_lock(&mut self, target: &'t T) -> Result<mbox::Try<T::Locked>, Failure> {
        let mut round = LockRound::new(self.journal, self.scanned);
        let locked = target.try_lock(&mut round)?;
        self.orphan |= round.orphan();
        Ok(match locked {
            Some(locked) => mbox::Try::Locked(locked),
            None => mbox::Try::Busy,
        })
    }

    fn release(&mut self, locked: T::Locked) {
        locked.unlock();
    }

    fn busy(&mut self, busy: &'t T) -> Result<(), Failure> {
        let busy = busy.key();
        let orphan = std::mem::take(&mut self.orphan);
        // The next round's dotlocks are recorded over this one's: the
        // journal does not grow with the wait.
        let journal = &mut *self.journal;
        journal
            .released()
            .map_err(|e| journal_failure(journal.path(), e))?;
        *self.gate = None;
        if !self.said_busy {
            self.said_busy = true;
            log::info!(
                "{}: busy; every lock of the delivery released, trying again",
                busy.display()
            );
        }
        // A dotlock without its fcntl lock may be a crashed delivery's
        // (another process's: a daemon's own are recovered at start):
        // recover then, with nothing locked, so that its half-written
        // message goes before anything is appended after it. Not more
        // often than `Journals::recovery_due` allows, and once a
        // delivery: a user can plant dotlocks and files by journals'
        // names. Only a journal of ours that its process still held
        // (one just killed holds its files until its exit is done)
        // earns the delivery another scan, as rate-limited.
        if orphan && !self.scans_done && self.journals.recovery_due(self.spool) {
            self.scans_done = (self.recover)(self.lock_deadline, busy).is_none_or(|s| s.held == 0);
            self.scanned = true;
        }
        Ok(())
    }

    fn again(&mut self) -> Result<(), Failure> {
        *self.gate = Some((self.enter)(self.lock_deadline)?);
        Ok(())
    }

    fn timed_out(&mut self, busy: &'t T) -> Failure {
        Failure::mbox(busy.key(), MboxError::LockTimeout)
    }
}

impl<T: Target> Drop for Transaction<'_, T> {
    fn drop(&mut self) {
        if self.journal.is_none() {
            return;
        }
        if std::thread::panicking() {
            // Whatever the thread was doing, the targets stay locked for
            // other programs until recovery; the journal is closed.
            for locked in self.locked.drain(..) {
                locked.unlock_keeping_lock();
            }
        } else {
            self.undo();
        }
    }
}

/// The first of the failures of [`Transaction::append_all`]: a delivery
/// that is all or nothing fails with it.
pub(crate) fn first_failure(failures: Vec<Failure>) -> Failure {
    failures
        .into_iter()
        .next()
        .unwrap_or_else(|| Failure::temp(TempReason::Local, "append failed".into()))
}

/// A failure of the journal: of the whole delivery, of no one target.
fn journal_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure {
        target: None,
        ..Failure::mbox(path, MboxError::from_write(e))
    }
}

/// Runs `f` on every item, the first on this thread and each other one
/// on a thread of its own, and returns what each gave. A transaction's
/// mailboxes are appended to this way: the `fdatasync`s of different files
/// overlap on the device (four files in parallel reach more than twice the
/// one-file rate here, see BENCHMARKS.md), and the copies of a large
/// message use both CPUs; one after another they added up. A thread that
/// cannot be started fails its item (the transaction is rolled back).
fn each_in_parallel<T: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> Result<(), Failure> + Sync,
) -> Vec<Result<(), Failure>> {
    let Some((first, rest)) = items.split_first_mut() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return vec![f(first)];
    }
    let f = &f;
    std::thread::scope(|s| {
        let others: Vec<_> = rest
            .iter_mut()
            .map(|item| {
                std::thread::Builder::new()
                    .name("append".into())
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || f(item))
            })
            .collect();
        let mut results = vec![f(first)];
        for h in others {
            results.push(match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(Failure::temp(
                        TempReason::Local,
                        "append thread panicked".into(),
                    ))
                }),
                Err(e) => Err(Failure::temp(
                    TempReason::Local,
                    format!("cannot start an append thread: {e}"),
                )),
            });
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::tests::deliverer;
    use crate::message::MessageBuf;
    use std::io::Write;

    fn message(spool: &Path) -> MessageBuf {
        let mut msg = MessageBuf::new(1024, spool.to_path_buf());
        msg.write_all(b"Subject: x\n\nbody\n").unwrap();
        msg
    }

    fn append(msg: &MessageBuf) -> Append<'_> {
        Append {
            from_line: "From x@y.example Thu Jan  1 00:00:00 1970\n".into(),
            headers: "Return-Path: <x@y.example>\n".into(),
            message: msg,
            quoting: mbox::Quoting::Mboxrd,
        }
    }

    /// The safety net: a transaction dropped after its appends, neither
    /// committed nor rolled back, undoes them and lets every lock go.
    #[test]
    fn a_transaction_dropped_unended_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = deliverer(dir.path());
        let (alice, jon) = (dir.path().join("alice"), dir.path().join("jon"));
        std::fs::write(&alice, b"old alice\n").unwrap();
        let msg = message(dir.path());
        let what = append(&msg);
        let targets = d.mailboxes(&["alice", "jon"]).unwrap();
        let mut txn = Transaction::begin(&d.journals, &d.gates, &d.spool, targets).unwrap();
        txn.intend(&what).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        txn.lock_all(far, Duration::from_secs(5), false, |_, _| None)
            .unwrap();
        txn.append_all(&what).unwrap();
        assert!(std::fs::read(&jon).unwrap().ends_with(b"body\n\n"));
        drop(txn);
        assert_eq!(std::fs::read(&alice).unwrap(), b"old alice\n");
        assert_eq!(std::fs::read(&jon).unwrap(), b"");
        assert!(!dir.path().join("alice.lock").exists());
        assert!(!dir.path().join("jon.lock").exists());
    }

    /// A transaction whose thread panics lets its mailboxes go with their
    /// dotlocks in place: nothing is appended to them before recovery.
    #[test]
    fn a_transaction_dropped_in_a_panic_keeps_its_dotlocks() {
        let dir = tempfile::tempdir().unwrap();
        let d = deliverer(dir.path());
        let msg = message(dir.path());
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let what = append(&msg);
                let targets = d.mailboxes(&["alice"]).unwrap();
                let mut txn = Transaction::begin(&d.journals, &d.gates, &d.spool, targets).unwrap();
                txn.intend(&what).unwrap();
                let far = Instant::now() + Duration::from_secs(60);
                txn.lock_all(far, Duration::from_secs(5), false, |_, _| None)
                    .unwrap();
                txn.append_all(&what).unwrap();
                panic!("the delivering thread dies with the transaction open");
            })
            .join()
            .is_err()
        });
        assert!(panicked);
        assert!(dir.path().join("alice.lock").exists());
        assert!(
            std::fs::read(dir.path().join("alice"))
                .unwrap()
                .ends_with(b"body\n\n")
        );
    }
}
