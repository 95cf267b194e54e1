//! Delivering one accepted message to the mailboxes of its recipients.
//!
//! The boundary between the protocol and the mail spool is this one call,
//! [`Deliverer::deliver`]`(envelope, message) -> Outcome`: typed in, typed
//! out, so that delivery can later move behind a process boundary without
//! touching the protocol code. The outcome is delivered or a temporary
//! failure, and [`crate::smtp::Session::delivered`] alone turns it into a
//! reply code.
//!
//! A message, whatever its number of recipients, is one transaction, all
//! or nothing, even across a crash:
//!
//! 1. the transaction journal ([`crate::journal`]) records what is about
//!    to be done (the mailboxes, the beginning and the exact length of the
//!    append) and is synced, before any lock is taken;
//! 2. deliveries of this process to any of the same mailboxes take turns
//!    ([`Gates`]); then every mailbox is opened and locked, in one fixed
//!    order (sorted by path), all or none: each lock is tried once a
//!    round, and at a busy one every lock held is released, the turn
//!    given up, and the whole set tried again after a back-off, so that
//!    no lock is waited for while another is held (a user holding a lock
//!    on their own mailbox keeps no co-recipient's locked); each dotlock
//!    is recorded in the journal before it is made, and then each
//!    mailbox's size, where its append begins;
//! 3. the message is appended to each mailbox and each is fsynced, each
//!    mailbox on a thread of its own;
//! 4. only then is the journal settled, the locks released and `250`
//!    given.
//!
//! If any step fails for any mailbox, every mailbox already written is
//! truncated back to its size before the transaction, the journal settled
//! (synced), the locks released, and the client gets a 4xx and retries: no
//! recipient has half a message, and none has it while the client is told
//! to try again. If the process dies in the middle, the journal lets the
//! next postie do the same: at its start, or when a delivery finds a
//! dotlock the dead one left (then with no lock held, once a second per
//! spool ([`Journals::recovery_due`]), and once a delivery unless a journal
//! of another process was still held by it, as a process being killed
//! holds its files for a moment). The
//! cost is one fsync per mailbox and one data-only fdatasync of the
//! journal, taken before the locks (and one fsync of the spool directory
//! when a mailbox or a journal is created).
//!
//! The journal is created with the process's own identity (root in the
//! delivery process), never a recipient's: recovery trusts only journals of
//! its own uid. (It is then written through its open descriptor, whatever
//! the thread's identity.)
//!
//! Started as root, every file operation on a mailbox runs with the
//! recipient's filesystem identity (fsuid = the user, fsgid = group `mail`),
//! on the delivering thread only ([`crate::sys::become_fs`]).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, SigmaskHow};

use crate::journal::{self, Journal, Journals, Size, Want};
use crate::mbox::{self, LockHooks, LockId, LockedMailbox, MboxError, MboxOptions};
pub use crate::message::{Delivery, MessageSource};
use crate::smtp::address::{comment_text, is_domain_or_literal};
use crate::smtp::session::{Outcome, TempReason, printable};
use crate::smtp::{Envelope, ReversePath};
use crate::sys;
use crate::users::{Recipients, User};

impl Delivery for Deliverer {
    fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
        Deliverer::deliver(self, env, message)
    }

    fn check_mailbox(&self, user: &User) -> Result<(), String> {
        Deliverer::check_mailbox(self, user)
    }

    fn recover(&self) {
        let deadline = Instant::now() + self.mbox.lock_timeout;
        let s = journal::recover(&self.spool, &self.mbox, deadline, &self.journals);
        if s != journal::Summary::default() {
            log::info!(
                "recovery: {} journals of earlier processes dealt with, {} interrupted deliveries undone ({} mailboxes truncated), {} left for later",
                s.journals,
                s.undone,
                s.truncated,
                s.deferred
            );
        }
    }

    fn close(&self) {
        self.journals.close();
    }
}

/// Delivers messages into mbox files under one spool directory.
pub struct Deliverer {
    pub spool: PathBuf,
    pub hostname: String,
    pub mbox: MboxOptions,
    pub recipients: Arc<Recipients>,
    /// The longest a whole delivery may take, lock waits included (RFC
    /// 5321 4.5.3.2.6: the client waits 10 minutes for the final reply).
    pub deadline: Duration,
    /// Group `mail`, the fsgid of a delivery when running as root (the
    /// spool is group-writable by it on Debian).
    pub mail_gid: Option<u32>,
    /// The transaction journals of this process ([`crate::journal`]).
    pub journals: Journals,
    /// The mailboxes this process is delivering to.
    pub gates: Gates,
}

/// The mailboxes a process's deliveries are writing to. A delivery enters
/// with all of its mailboxes at once, before it takes any lock, and waits
/// while another delivery of the process has any of them; leaving wakes
/// the waiters. Without it, deliveries to one mailbox from concurrent
/// sessions found its `fcntl` lock busy and slept in the lock back-off
/// (1 ms doubling to 100 ms), idle while the mailbox was free. Deadlock
/// free: a delivery waiting here holds no lock and no mailbox.
#[derive(Debug, Default)]
pub struct Gates {
    busy: Mutex<HashSet<PathBuf>>,
    freed: Condvar,
}

/// A delivery's mailboxes, entered; dropping leaves.
#[derive(Debug)]
pub struct Gate<'g> {
    gates: &'g Gates,
    paths: Vec<PathBuf>,
}

impl Gates {
    /// Waits until no other delivery has any of `paths`, then takes them
    /// all; `None` once `deadline` has passed.
    pub fn enter(&self, paths: &[&Path], deadline: Instant) -> Option<Gate<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while paths.iter().any(|p| busy.contains(*p)) {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self
                .freed
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        busy.extend(paths.iter().cloned());
        Some(Gate { gates: self, paths })
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut busy = self.gates.busy.lock().unwrap_or_else(|p| p.into_inner());
        for p in &self.paths {
            busy.remove(p);
        }
        drop(busy);
        self.gates.freed.notify_all();
    }
}

/// Runs `f` on every item, the first on this thread and each other one
/// on a thread of its own, and returns the first error. A transaction's
/// mailboxes are appended to this way: the `fdatasync`s of different files
/// overlap on the device (four files in parallel reach more than twice the
/// one-file rate here, see BENCHMARKS.md), and the copies of a large
/// message use both CPUs; one after another they added up. A thread that
/// cannot be started fails its item (the transaction is rolled back).
fn each_in_parallel<T: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> Result<(), Failure> + Sync,
) -> Result<(), Failure> {
    let Some((first, rest)) = items.split_first_mut() else {
        return Ok(());
    };
    if rest.is_empty() {
        return f(first);
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
        let mut result = f(first);
        for h in others {
            let r = match h {
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
            };
            result = result.and(r);
        }
        result
    })
}

/// Holds the signals of [`sys::delivery_signals`] (those that end or stop
/// the process) off the delivering thread while a delivery runs, so that
/// no signal can end the process between a write and its rollback, or
/// stop it with mailboxes locked. In the daemon they are blocked already
/// in every thread (the accept loop reads them from a signalfd); under
/// inetd this is what protects the append. A signal that arrives
/// meanwhile is delivered when this drops.
///
/// It also holds [`DELIVERING`] for reading: the daemon's accept loop,
/// told to stop (`SIGTSTP`), takes it for writing first ([`quiesce`]),
/// so that the process stops only once no delivery is in progress.
pub(crate) struct HoldSignals {
    old: Option<SigSet>,
    delivering: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

/// Held for reading by each delivery in progress in this process.
static DELIVERING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Waits until no delivery is in progress in this process, and holds
/// new ones off until the guard drops: the daemon stops (`SIGTSTP`) under
/// it, never with a mailbox locked.
pub fn quiesce() -> std::sync::RwLockWriteGuard<'static, ()> {
    DELIVERING.write().unwrap_or_else(|p| p.into_inner())
}

impl HoldSignals {
    pub(crate) fn new() -> Self {
        let old = sys::delivery_signals()
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .ok();
        let delivering = Some(DELIVERING.read().unwrap_or_else(|p| p.into_inner()));
        HoldSignals { old, delivering }
    }
}

impl Drop for HoldSignals {
    fn drop(&mut self) {
        drop(self.delivering.take());
        if let Some(old) = self.old {
            let _ = old.thread_set_mask();
        }
    }
}

impl Deliverer {
    /// Appends `message` (LF line ends, as the DATA reader produced it) to
    /// the mailbox of every recipient of `env` as one transaction, and logs
    /// one line per mailbox.
    pub fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
        let _held = HoldSignals::new();
        let deadline = Instant::now() + self.deadline;
        let now = sys::localtime(SystemTime::now());
        let from_line = mbox::from_line(&env.sender, &now);
        let single = match env.recipients.as_slice() {
            [one] => Some(one.path.to_string()),
            _ => None,
        };
        let headers = trace_headers(
            env,
            &self.hostname,
            single.as_deref(),
            &now.rfc5322(),
            self.forged_sender(env),
        );
        let mut names: Vec<&str> = env
            .recipients
            .iter()
            .flat_map(|r| r.users.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let result = self.transaction(&names, deadline, &from_line, headers.as_bytes(), message);
        let status = match &result {
            Ok(()) => "delivered".to_string(),
            Err(f) => format!("deferred ({})", f.why),
        };
        for name in &names {
            log::info!(
                target: "postie::maillog",
                "{}: from=<{}> to=<{}> size={} status={}",
                env.id,
                sender_for_log(&env.sender),
                name,
                env.size,
                status
            );
        }
        match result {
            Ok(()) => Outcome::Delivered,
            Err(f) => f.outcome,
        }
    }

    /// Locks every mailbox, appends to each, and commits or rolls back all.
    fn transaction(
        &self,
        names: &[&str],
        deadline: Instant,
        from_line: &str,
        headers: &[u8],
        message: &dyn MessageSource,
    ) -> Result<(), Failure> {
        let mut targets = Vec::with_capacity(names.len());
        for name in names {
            let user = match self.recipients.user(name) {
                Ok(Some(u)) => u,
                // The user vanished between RCPT and DATA: let the client
                // retry rather than bounce every recipient for one.
                Ok(None) => {
                    return Err(Failure::temp(
                        TempReason::Local,
                        format!("user {name} vanished"),
                    ));
                }
                Err(e) => {
                    return Err(Failure::temp(
                        TempReason::LookupFailed,
                        format!("lookup of {name}: {}", e.0),
                    ));
                }
            };
            targets.push((self.spool.join(&user.name), user));
        }
        // One fixed order for every transaction: no two sessions deadlock.
        targets.sort_by(|a, b| a.0.cmp(&b.0));

        // Made as ourselves (root in the delivery process), not as any
        // recipient: recovery trusts only journals of our own uid.
        let journal_failure =
            |path: &Path, e: std::io::Error| Failure::mbox(path, MboxError::from_write(e));
        let mut journal = self.journals.take(&self.spool).map_err(|e| {
            // Not yet named: the log says where it was to be made.
            let what = format!("cannot create a journal in {}", self.spool.display());
            journal_failure(Path::new(&what), e)
        })?;
        if let Err(e) = journal.begin() {
            let f = journal_failure(journal.path(), e);
            self.journals.abandon(journal);
            return Err(f);
        }

        // One mailbox: its identity held for the whole transaction, so
        // that the steps below, which each take it, do not switch back and
        // forth (the journal's writes go to its open descriptor, and
        // recovery takes our own identity for itself).
        let _as_recipient = match targets.as_slice() {
            [(_, user)] => self.identity(user).ok().flatten(),
            _ => None,
        };
        let mut locked = Locked(Vec::with_capacity(targets.len()));
        let mut armed = false;
        let mut gate = None;
        let result = self.lock_and_append(
            &targets,
            &mut locked.0,
            &mut gate,
            &mut journal,
            &mut armed,
            deadline,
            from_line,
            headers,
            message,
        );
        // Whether the transaction could be neither finished nor undone:
        // then the dotlocks and the journal stay, so that no delivery
        // appends to these mailboxes before recovery has undone it.
        let mut stuck = false;
        // Whether the journal is fit for another delivery.
        let mut reuse = true;
        if result.is_ok() {
            // Delivered. Not synced: should this not reach the disk,
            // recovery finds every append whole and undoes nothing.
            if let Err(e) = journal.settle(false) {
                log::warn!("{}: {e}", journal.path().display());
                reuse = false;
            }
        } else if armed {
            for (mb, user) in locked.0.iter_mut().rev() {
                let _id = self.identity(user);
                if let Err(e) = mb.rollback() {
                    log::error!(
                        "{}: rollback failed; the mailboxes stay locked until recovery undoes the delivery: {e}",
                        mb.path().display()
                    );
                    stuck = true;
                }
            }
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
        for (mb, user) in std::mem::take(&mut locked.0).into_iter().rev() {
            let _id = self.identity(user);
            if stuck {
                mb.unlock_keeping_dotlock();
            } else {
                mb.unlock();
            }
        }
        drop(gate);
        if !stuck && reuse && journal.end().is_ok() {
            self.journals.put(journal);
        } else {
            // Closed and left to the next recovery.
            self.journals.abandon(journal);
        }
        result
    }

    /// Records the delivery's intent in `journal` (setting `armed` before
    /// trying), locks every mailbox (each dotlock recorded first), records
    /// where each append begins, and appends to each mailbox.
    #[allow(clippy::too_many_arguments)]
    fn lock_and_append<'u, 's>(
        &'s self,
        targets: &'u [(PathBuf, User)],
        locked: &mut Vec<(LockedMailbox, &'u User)>,
        gate: &mut Option<Gate<'s>>,
        journal: &mut Journal,
        armed: &mut bool,
        deadline: Instant,
        from_line: &str,
        headers: &[u8],
        message: &dyn MessageSource,
    ) -> Result<(), Failure> {
        // What recovery needs to undo the appends, on disk before any
        // mailbox is locked (so that the sync holds no lock): the mailboxes,
        // how the appends begin (From_ line and trace headers, unique to
        // this message) and their exact length, which tells a whole append
        // from part of one.
        let journal_failure =
            |j: &Journal, e: std::io::Error| Failure::mbox(j.path(), MboxError::from_write(e));
        let len = message
            .reader()
            .and_then(|mut body| {
                mbox::appended_len(self.mbox.quoting, from_line, headers, &mut body)
            })
            .map_err(|e| Failure::mbox(journal.path(), MboxError::Io(e)))?;
        let wants: Vec<Want> = targets
            .iter()
            .map(|(_, user)| Want {
                name: user.name.clone(),
                uid: user.uid,
                gid: self.fs_gid(user),
            })
            .collect();
        let mut prefix = from_line.as_bytes().to_vec();
        prefix.extend_from_slice(headers);
        *armed = true;
        journal
            .intend(&prefix, len, &wants)
            .map_err(|e| journal_failure(journal, e))?;
        // After the journal's sync, which needs no mailbox: deliveries of
        // this process to the same mailboxes take turns here rather than
        // in the lock back-off.
        let paths: Vec<&Path> = targets.iter().map(|(p, _)| p.as_path()).collect();
        let first = paths.first().copied().unwrap_or(&self.spool);
        let enter = |until: Instant| {
            self.gates
                .enter(&paths, until)
                .ok_or_else(|| Failure::mbox(first, MboxError::LockTimeout))
        };
        *gate = Some(enter(deadline)?);
        // The lock timeout counts from here, for the whole set.
        let lock_deadline = deadline.min(mbox::deadline_after(self.mbox.lock_timeout));
        // Every mailbox locked, or none (DESIGN.md: no lock is waited for
        // while another is held): each is tried once a round, in the fixed
        // order; at one that is busy, those already locked are released,
        // the gate left, and the whole set tried again after a back-off,
        // until the lock timeout. A user who holds a lock on their own
        // mailbox keeps no other mailbox locked.
        let mut backoff = mbox::Backoff::new();
        // Whether this delivery has scanned the spool (then a stale
        // dotlock may be removed: recovery took over any it explains), and
        // whether it needs no more scans (the last found no journal of
        // ours with a delivery still held by its process).
        let mut scanned = false;
        let mut scans_done = false;
        let mut said_busy = false;
        loop {
            // A dotlock found without its fcntl lock: a crashed delivery's?
            let mut orphan = false;
            let mut busy = None;
            for (path, user) in targets {
                let _id = self
                    .identity(user)
                    .map_err(|e| Failure::mbox(path, MboxError::Io(e)))?;
                if !self.may_create(user) && !path.exists() {
                    return Err(Failure::mbox(path, MboxError::Unsafe(cannot_create(user))));
                }
                let name = user.name.as_str();
                let mut record = |id: LockId| journal.record_lock(name, id);
                let mut on_busy = || orphan = true;
                let mut hooks = LockHooks {
                    record: Some(&mut record),
                    on_busy: Some(&mut on_busy),
                    recovered: scanned,
                    ..LockHooks::default()
                };
                // One try (a deadline already come).
                match mbox::open_locked_with(path, user, &self.mbox, Instant::now(), &mut hooks) {
                    Ok(mb) => locked.push((mb, user)),
                    Err(MboxError::LockTimeout) => {
                        busy = Some(path);
                        break;
                    }
                    Err(e) => return Err(Failure::mbox(path, e)),
                }
            }
            let Some(busy) = busy else {
                break;
            };
            for (mb, user) in locked.drain(..).rev() {
                let _id = self.identity(user);
                mb.unlock();
            }
            // The next round's dotlocks are recorded over this one's: the
            // journal does not grow with the wait.
            journal
                .released()
                .map_err(|e| journal_failure(journal, e))?;
            *gate = None;
            if !said_busy {
                said_busy = true;
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
            if orphan && !scans_done && self.journals.recovery_due(&self.spool) {
                log::info!(
                    "{}: dotlock without its fcntl lock; recovery: scanning {}",
                    busy.display(),
                    self.spool.display()
                );
                // As ourselves, not as a recipient: journals are ours.
                match self.own_identity() {
                    Ok(_me) => {
                        let s = journal::recover(
                            &self.spool,
                            &self.mbox,
                            lock_deadline,
                            &self.journals,
                        );
                        scans_done = s.held == 0;
                    }
                    Err(e) => {
                        log::warn!("recovery: {e}");
                        scans_done = true;
                    }
                }
                scanned = true;
            }
            backoff
                .wait(lock_deadline)
                .map_err(|e| Failure::mbox(busy, e))?;
            *gate = Some(enter(lock_deadline)?);
        }
        // Every mailbox locked: where each append begins. Not synced: a
        // process that dies leaves it in the page cache, and after a
        // power failure recovery finds the appends by their beginning.
        let sizes: Vec<Size> = locked
            .iter()
            .map(|(mb, user)| {
                let (dev, ino) = mb.file_id();
                Size {
                    name: user.name.clone(),
                    dev,
                    ino,
                    old_size: mb.old_size(),
                }
            })
            .collect();
        journal
            .locked(&sizes)
            .map_err(|e| journal_failure(journal, e))?;
        // Each mailbox is written and synced as its recipient; several at
        // once, each on a thread of its own (see `each_in_parallel`).
        let append = |(mb, user): &mut (LockedMailbox, &User)| -> Result<(), Failure> {
            let _id = self
                .identity(user)
                .map_err(|e| Failure::mbox(mb.path(), MboxError::Io(e)))?;
            let mut body = message
                .reader()
                .map_err(|e| Failure::mbox(mb.path(), MboxError::Io(e)))?;
            #[cfg(test)]
            if let Some(errno) = tests::fault_for(mb.path()) {
                // The test seam: this mailbox's writes fail with `errno`
                // after a few bytes, as a full disk would.
                let r = mb.write_with(from_line, headers, &mut body, |f| {
                    Box::new(tests::FailAfter(f, 10, errno))
                });
                r.map_err(|e| Failure::mbox(mb.path(), e))?;
                return Ok(());
            }
            let n = mb
                .write_with(from_line, headers, &mut body, |f| Box::new(f))
                .map_err(|e| Failure::mbox(mb.path(), e))?;
            if n != len {
                // Cannot happen (the same formatting twice); were it to,
                // the journal would be wrong about this append.
                let e = std::io::Error::other(format!("appended {n} bytes, not {len}"));
                return Err(Failure::mbox(mb.path(), MboxError::Io(e)));
            }
            mb.sync().map_err(|e| Failure::mbox(mb.path(), e))
        };
        each_in_parallel(locked, append)
    }

    /// True when a local, non-root submitter named a sender other than
    /// themselves (sendmail's `-f`): the message gets an
    /// `X-Authentication-Warning:`, as sendmail gives it.
    fn forged_sender(&self, env: &Envelope) -> bool {
        let Some(s) = &env.submitter else {
            return false;
        };
        if s.uid == 0 {
            return false;
        }
        match &env.sender {
            ReversePath::Null => true,
            ReversePath::Mailbox(m) => {
                !m.local.eq_ignore_ascii_case(&s.user)
                    || m.domain
                        .as_deref()
                        .is_some_and(|d| !self.recipients.is_local_domain(d))
            }
        }
    }

    /// Runs the caller's file operations as `user` when we are root.
    fn identity(&self, user: &User) -> std::io::Result<Option<sys::FsIdentity>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        sys::become_fs(user.uid, self.fs_gid(user)).map(Some)
    }

    /// Runs the caller's file operations as this process again (root), in
    /// the middle of an [`identity`](Self::identity) in force.
    fn own_identity(&self) -> std::io::Result<Option<sys::FsIdentity>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        sys::become_fs(0, nix::unistd::getegid().as_raw()).map(Some)
    }

    /// The fsgid of file operations on `user`'s mailbox when root.
    fn fs_gid(&self, user: &User) -> u32 {
        self.mail_gid.unwrap_or(user.gid)
    }

    /// Root can give a new mailbox to its owner; anyone else only to
    /// themselves.
    fn may_create(&self, user: &User) -> bool {
        let me = nix::unistd::geteuid();
        me.is_root() || me.as_raw() == user.uid
    }

    /// The RCPT-time check of a user's mailbox: it must be missing (and
    /// creatable by us for its owner) or a regular file with one link owned
    /// by the user. Returns why not.
    pub fn check_mailbox(&self, user: &User) -> Result<(), String> {
        let path = self.spool.join(&user.name);
        let _id = self
            .identity(user)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !self.may_create(user) && std::fs::symlink_metadata(&path).is_err() {
            return Err(format!("{}: {}", path.display(), cannot_create(user)));
        }
        // As root, the dotlock (and a missing mailbox) are made with the
        // user's identity: a spool it cannot write would defer the whole
        // message at the end of DATA, every other recipient's copy too.
        // faccessat with AT_EACCESS checks with the fsuid and fsgid now in
        // force.
        if nix::unistd::geteuid().is_root() {
            if let Err(e) = nix::unistd::faccessat(
                nix::fcntl::AT_FDCWD,
                &self.spool,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                nix::fcntl::AtFlags::AT_EACCESS,
            ) {
                let gid = self.fs_gid(user);
                let group = match nix::unistd::Group::from_gid(gid.into()) {
                    Ok(Some(g)) => g.name,
                    _ => gid.to_string(),
                };
                return Err(format!(
                    "{}: uid {} with group {group} cannot create the mailbox or its dotlock there ({})",
                    path.display(),
                    user.uid,
                    e.desc()
                ));
            }
        }
        mbox::check(&path, user).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The mailboxes of a transaction, locked. Should the delivering thread
/// panic, they are let go with their dotlocks left in place, so that
/// nothing is appended to them before recovery has undone the delivery.
struct Locked<'u>(Vec<(LockedMailbox, &'u User)>);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (mb, _) in self.0.drain(..) {
                mb.unlock_keeping_dotlock();
            }
        }
    }
}

fn cannot_create(user: &User) -> String {
    format!(
        "no mailbox, and postie (uid {}) cannot create one owned by {} (uid {}) unless run as root",
        nix::unistd::geteuid(),
        user.name,
        user.uid
    )
}

/// Why a transaction failed: the outcome for the client and the reason for
/// the log.
#[derive(Debug)]
struct Failure {
    outcome: Outcome,
    why: String,
}

impl Failure {
    fn temp(reason: TempReason, why: String) -> Self {
        Failure {
            outcome: Outcome::Temporary(reason),
            why,
        }
    }

    fn mbox(path: &std::path::Path, e: MboxError) -> Self {
        let why = format!("{}: {e}", path.display());
        log::warn!("{why}");
        let reason = match e {
            MboxError::LockTimeout => TempReason::LockTimeout,
            MboxError::NoSpace => TempReason::NoSpace,
            MboxError::Quota => TempReason::Quota,
            MboxError::Unsafe(_) | MboxError::Io(_) => TempReason::Local,
        };
        Failure::temp(reason, why)
    }
}

fn sender_for_log(s: &ReversePath) -> String {
    match s {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    }
}

/// The `Return-Path:` and `Received:` header lines (RFC 5321 4.4), LF
/// ended, and for a local submitter who set another sender, sendmail's
/// `X-Authentication-Warning:`. Everything that came from the client is
/// reduced to printable ASCII first, so no CR, LF or control character can
/// reach a header; a HELO that is not a domain or an address literal is
/// written only inside the comment, escaped, so that it can neither
/// unbalance the comment nor add a `;` and a date of its own.
pub fn trace_headers(
    env: &Envelope,
    hostname: &str,
    for_rcpt: Option<&str>,
    date: &str,
    forged: bool,
) -> String {
    let mut h = String::with_capacity(256);
    let rp = match &env.sender {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => clean(&m.to_string()),
    };
    let _ = writeln!(h, "Return-Path: <{rp}>");
    let tcp_info = match (&env.submitter, env.peer) {
        (Some(s), _) => format!("user {}, uid {}", comment_text(&s.user, 200), s.uid),
        (None, Some(IpAddr::V6(ip))) => format!("[IPv6:{ip}]"),
        (None, Some(ip)) => format!("[{ip}]"),
        (None, None) => "local".into(),
    };
    // RFC 5321 4.4: the From-domain is a Domain or an address literal.
    // Any other HELO (clients send junk, and some send a fake date) goes
    // into the comment, escaped; the client's address, or localhost,
    // stands in for it.
    let from = if is_domain_or_literal(&env.helo) {
        format!("{} ({tcp_info})", env.helo)
    } else {
        let said = comment_text(&env.helo, 200);
        match (&env.submitter, env.peer) {
            (None, Some(_)) => format!("{tcp_info} (helo={said})"),
            _ => format!("localhost (helo={said}, {tcp_info})"),
        }
    };
    let with = if env.esmtp { "ESMTP" } else { "SMTP" };
    let _ = write!(
        h,
        "Received: from {from}\n\tby {} (postie) with {with} id {}",
        clean(hostname),
        env.id
    );
    // The `for` clause is optional (RFC 5321 4.4): a recipient whose quoted
    // local part holds a `;`, a parenthesis or a backslash is left out, so
    // that the only `;` is the one before the date.
    match for_rcpt.filter(|r| !r.contains([';', '(', ')', '\\'])) {
        Some(r) => {
            let _ = write!(h, "\n\tfor <{}>; {date}\n", clean(r));
        }
        None => {
            let _ = writeln!(h, ";\n\t{date}");
        }
    }
    if let (true, Some(s)) = (forged, &env.submitter) {
        let _ = writeln!(
            h,
            "X-Authentication-Warning: {}: {} set sender to {} using -f",
            clean(hostname),
            clean(&s.user),
            if rp.is_empty() {
                "<>".to_string()
            } else {
                rp.clone()
            }
        );
    }
    h
}

/// Printable ASCII only (space allowed), at most 200 characters.
fn clean(s: &str) -> String {
    printable(s, 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBuf;
    use crate::smtp::Mailbox;

    use std::io::Write;

    /// The mailbox whose writes fail, and with which errno. Global, not
    /// per thread: mailboxes are written on threads of their own. Keyed by
    /// the whole path, unique to a test's spool.
    static FAULT: std::sync::Mutex<Option<(std::path::PathBuf, i32)>> = std::sync::Mutex::new(None);

    pub(super) fn fault_for(path: &std::path::Path) -> Option<i32> {
        FAULT
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(p, _)| p == path)
            .map(|(_, e)| *e)
    }

    /// Writes `.1` bytes to the file, then fails with errno `.2`.
    pub(super) struct FailAfter<'f>(pub &'f std::fs::File, pub usize, pub i32);

    impl Write for FailAfter<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.1 == 0 {
                return Err(std::io::Error::from_raw_os_error(self.2));
            }
            let n = buf.len().min(self.1);
            let n = self.0.write(&buf[..n])?;
            self.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn deliverer(spool: &std::path::Path) -> Deliverer {
        use crate::users::{LocalDomains, PasswdFile};
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let passwd = spool.join("passwd");
        let users = format!("alice:x:{uid}:{gid}::/:/bin/sh\njon:x:{uid}:{gid}::/:/bin/sh\n");
        std::fs::write(&passwd, users).unwrap();
        let db = PasswdFile::load(&passwd).unwrap();
        let recipients = Recipients::new(
            LocalDomains::new(["h".to_string()], vec![]),
            Box::new(db),
            Some('+'),
            crate::aliases::AliasFile::empty(),
        );
        Deliverer {
            spool: spool.to_path_buf(),
            hostname: "h".into(),
            mbox: MboxOptions {
                mode: 0o600,
                quoting: crate::mbox::Quoting::Mboxrd,
                lock_timeout: Duration::from_secs(5),
                stale_lock: Duration::from_secs(300),
            },
            recipients: Arc::new(recipients),
            deadline: Duration::from_secs(10),
            mail_gid: None,
            journals: Journals::default(),
            gates: Gates::default(),
        }
    }

    fn envelope(users: &[&str]) -> Envelope {
        Envelope {
            id: "T.1".into(),
            helo: "c".into(),
            esmtp: true,
            peer: None,
            sender: ReversePath::Null,
            recipients: users
                .iter()
                .map(|u| crate::smtp::session::Recipient {
                    path: Mailbox {
                        local: u.to_string(),
                        domain: None,
                    },
                    users: vec![u.to_string()],
                })
                .collect(),
            body: None,
            size: 10,
            submitter: None,
        }
    }

    /// A write failure in the second mailbox of a transaction (ENOSPC,
    /// EDQUOT) leaves both mailboxes exactly as before, and maps to the
    /// reason the client is told.
    #[test]
    fn gates_make_deliveries_to_one_mailbox_take_turns() {
        let gates = Gates::default();
        let (a, b, c) = (Path::new("/s/a"), Path::new("/s/b"), Path::new("/s/c"));
        let soon = || Instant::now() + Duration::from_millis(50);
        let first = gates.enter(&[a, b], soon()).unwrap();
        // Other mailboxes: no wait, even with no time left.
        let other = gates.enter(&[c], Instant::now()).unwrap();
        // One shared mailbox is enough to wait, here until the deadline.
        let t = Instant::now();
        assert!(gates.enter(&[b, Path::new("/s/d")], soon()).is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(other);
        // A waiter goes in as soon as the holder leaves, with all of its
        // mailboxes, and only then.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let g = gates.enter(&[b, c], Instant::now() + Duration::from_secs(10));
                (g.is_some(), Instant::now())
            });
            std::thread::sleep(Duration::from_millis(100));
            let released = Instant::now();
            drop(first);
            let (entered, at) = waiter.join().unwrap();
            assert!(entered);
            assert!(at >= released);
            assert!(
                at - released < Duration::from_secs(5),
                "{:?}",
                at - released
            );
        });
        // And left again when it dropped its gate.
        assert!(gates.enter(&[a, b, c], Instant::now()).is_some());
    }

    /// A delivery that meets the dotlock of a delivery killed in another
    /// process whose exit is not done yet (its journal still locked) scans
    /// the spool again once a second while that journal is held, rather
    /// than waiting out the lock timeout and answering 451 (the crash test
    /// met this under load: the first scan found the journal held, and
    /// the delivery never looked again).
    #[test]
    fn a_journal_its_dying_process_still_holds_is_recovered_a_round_later() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let mut d = deliverer(spool);
        // Room for a loaded machine: the fix needs about two seconds.
        d.mbox.lock_timeout = Duration::from_secs(60);
        d.deadline = Duration::from_secs(60);
        let crashed = b"From a@b Thu Jan  1 00:00:00 1970\nReturn-Path: <a@b>\n\nhalf\n";
        let journal =
            crate::journal::crashed_delivery(spool, &["alice"], b"", crashed, &[40], false);
        assert!(spool.join("alice.lock").exists());
        // The dying process: it holds its journal a moment longer.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&journal)
            .unwrap();
        assert!(crate::mbox::ofd_lock(&held, libc::F_WRLCK).unwrap());
        let mut msg = MessageBuf::new(1024, spool.to_path_buf());
        msg.write_all(b"Subject: x\n\nbody\n").unwrap();
        let out = std::thread::scope(|s| {
            let t = s.spawn(|| d.deliver(&envelope(&["alice"]), &msg));
            // Past the first scan and its once-a-second limit, well within
            // the lock timeout.
            std::thread::sleep(Duration::from_millis(1500));
            drop(held);
            t.join().unwrap()
        });
        assert_eq!(out, Outcome::Delivered);
        assert!(!journal.exists(), "the crashed delivery's journal is left");
        let mbox = std::fs::read(spool.join("alice")).unwrap();
        assert!(
            mbox.ends_with(b"body\n\n"),
            "{:?}",
            String::from_utf8_lossy(&mbox)
        );
        assert!(
            !mbox.windows(4).any(|w| w == b"half"),
            "the half message is left"
        );
    }

    /// A stale dotlock (an old one no journal explains) is removed once
    /// the delivery has scanned, even while another postie process is
    /// alive with its journals locked (review of postie 5: the rescan rule
    /// had made a live process's journals keep every stale dotlock).
    #[test]
    fn a_stale_dotlock_goes_while_another_postie_lives() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        let mut d = deliverer(spool);
        d.mbox.lock_timeout = Duration::from_secs(60);
        d.deadline = Duration::from_secs(60);
        // Another process's journals: one idle, one with a delivery in it.
        let other = Journals::default();
        let idle = other.take(spool).unwrap();
        let mut busy = other.take(spool).unwrap();
        busy.begin().unwrap();
        busy.intend(
            b"From x Sun Nov  1 06:05:04 2026\n",
            80,
            &[journal::Want {
                name: "jon".into(),
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            }],
        )
        .unwrap();
        let lock = spool.join("alice.lock");
        std::fs::write(&lock, b"0\n").unwrap();
        let f = std::fs::File::options().write(true).open(&lock).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(600))
            .unwrap();
        drop(f);
        let mut msg = MessageBuf::new(1024, spool.to_path_buf());
        msg.write_all(b"Subject: x\n\nbody\n").unwrap();
        let t = Instant::now();
        assert_eq!(d.deliver(&envelope(&["alice"]), &msg), Outcome::Delivered);
        assert!(t.elapsed() < Duration::from_secs(50), "{:?}", t.elapsed());
        assert!(!lock.exists());
        drop((idle, busy));
    }

    #[test]
    fn failure_in_one_mailbox_rolls_back_all() {
        let cases = [
            (libc::ENOSPC, TempReason::NoSpace),
            (libc::EDQUOT, TempReason::Quota),
        ];
        for (errno, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            let d = deliverer(dir.path());
            std::fs::write(dir.path().join("alice"), b"old alice\n").unwrap();
            std::fs::write(dir.path().join("jon"), b"old jon\n").unwrap();
            let mut msg = MessageBuf::new(1024, dir.path().to_path_buf());
            msg.write_all(b"Subject: x\n\nbody\n").unwrap();
            *FAULT.lock().unwrap() = Some((dir.path().join("jon"), errno));
            let out = d.deliver(&envelope(&["jon", "alice"]), &msg);
            *FAULT.lock().unwrap() = None;
            assert_eq!(out, Outcome::Temporary(reason));
            assert_eq!(
                std::fs::read(dir.path().join("alice")).unwrap(),
                b"old alice\n"
            );
            assert_eq!(std::fs::read(dir.path().join("jon")).unwrap(), b"old jon\n");
            assert!(!dir.path().join("alice.lock").exists());
            assert!(!dir.path().join("jon.lock").exists());
            // Without the fault, both get the message once.
            let out = d.deliver(&envelope(&["jon", "alice", "jon"]), &msg);
            assert_eq!(out, Outcome::Delivered);
            for u in ["alice", "jon"] {
                let got = std::fs::read_to_string(dir.path().join(u)).unwrap();
                assert_eq!(got.matches("\nbody\n").count(), 1, "{u}: {got}");
            }
        }
    }

    /// A delivery that finds the dotlock of a delivery another process
    /// was killed in (inetd mode: no daemon recovered it at start)
    /// recovers it first: the half-written message goes, the new one is
    /// appended after what was there before.
    #[test]
    fn delivery_recovers_a_crashed_delivery_it_meets() {
        let dir = tempfile::tempdir().unwrap();
        let d = deliverer(dir.path());
        let half = "From x@y.example Sun Nov  1 06:05:04 2026\nReceived: id X.1\nSubject: half\n\nbody\n\n";
        crate::journal::crashed_delivery(
            dir.path(),
            &["alice", "jon"],
            b"old\n\n",
            half.as_bytes(),
            &[half.len(), 10],
            true,
        );
        assert!(dir.path().join("jon.lock").exists());
        let mut msg = MessageBuf::new(1024, dir.path().to_path_buf());
        msg.write_all(b"Subject: new\n\nfresh\n").unwrap();
        let out = d.deliver(&envelope(&["jon"]), &msg);
        assert_eq!(out, Outcome::Delivered);
        let jon = std::fs::read_to_string(dir.path().join("jon")).unwrap();
        assert!(jon.starts_with("old\n\nFrom MAILER-DAEMON "), "{jon}");
        assert!(!jon.contains("half"), "{jon}");
        assert!(jon.ends_with("\nfresh\n\n"), "{jon}");
        // The other mailbox of the crashed delivery is undone too.
        assert_eq!(std::fs::read(dir.path().join("alice")).unwrap(), b"old\n\n");
        assert!(!dir.path().join("alice.lock").exists());
        d.journals.close();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(crate::journal::PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn trace_headers_shape() {
        let mut env = envelope(&["jon"]);
        env.id = "A1.1".into();
        env.helo = "frogbog.localdomain".into();
        env.esmtp = false;
        env.peer = Some("127.0.0.1".parse().unwrap());
        env.sender = ReversePath::Mailbox(Mailbox {
            local: "jon".into(),
            domain: Some("frogbog".into()),
        });
        let h = trace_headers(
            &env,
            "razorback",
            Some("jon@razorback"),
            "Sat, 28 Nov 2026 16:59:45 +0000",
            false,
        );
        assert_eq!(
            h,
            "Return-Path: <jon@frogbog>\n\
             Received: from frogbog.localdomain ([127.0.0.1])\n\
             \tby razorback (postie) with SMTP id A1.1\n\
             \tfor <jon@razorback>; Sat, 28 Nov 2026 16:59:45 +0000\n"
        );
    }

    /// Issue "postie 5" item 9: a HELO that is not a domain or an address
    /// literal goes into the comment, escaped, and the From-domain is the
    /// client's address (RFC 5321 4.4); one `;`, the one before the date.
    #[test]
    fn bogus_helo_stays_in_a_comment() {
        let mut env = envelope(&["jon"]);
        env.id = "A1.1".into();
        env.helo = "evil(x);y=z)".into();
        env.esmtp = false;
        env.peer = Some("127.0.0.1".parse().unwrap());
        let date = "Sat, 28 Nov 2026 16:59:45 +0000";
        let h = trace_headers(&env, "razorback", Some("jon@razorback"), date, false);
        assert_eq!(
            h,
            "Return-Path: <>\n\
             Received: from [127.0.0.1] (helo=evil\\(x\\)?y=z\\))\n\
             \tby razorback (postie) with SMTP id A1.1\n\
             \tfor <jon@razorback>; Sat, 28 Nov 2026 16:59:45 +0000\n"
        );
        env.peer = Some("::1".parse().unwrap());
        let h = trace_headers(&env, "h", None, date, false);
        assert!(
            h.contains("Received: from [IPv6:::1] (helo=evil\\(x\\)?y=z\\))\n"),
            "{h}"
        );
        env.peer = None;
        let h = trace_headers(&env, "h", None, date, false);
        assert!(
            h.contains("Received: from localhost (helo=evil\\(x\\)?y=z\\), local)\n"),
            "{h}"
        );
        env.submitter = Some(crate::smtp::session::Submitter {
            uid: 1000,
            user: "jon".into(),
        });
        let h = trace_headers(&env, "h", None, date, false);
        assert!(
            h.contains("Received: from localhost (helo=evil\\(x\\)?y=z\\), user jon, uid 1000)\n"),
            "{h}"
        );
        // A domain or an address literal is written as it is.
        for helo in ["frogbog.localdomain", "[192.0.2.1]", "[IPv6:2001:db8::1]"] {
            env.helo = helo.into();
            env.submitter = None;
            env.peer = Some("127.0.0.1".parse().unwrap());
            let h = trace_headers(&env, "h", None, date, false);
            assert!(
                h.contains(&format!("Received: from {helo} ([127.0.0.1])\n")),
                "{h}"
            );
        }
        assert_eq!(h.matches(';').count(), 1, "{h}");
    }

    /// A quoted local part may hold `;` and parentheses (`RCPT
    /// TO:<"jon+x; Thu, 1 Jan 2015 00:00:00 +0000"@razorback>` reaches jon
    /// through his extension): the optional `for` clause is left out then,
    /// so that the header's one `;` is the one before our date.
    #[test]
    fn recipient_with_specials_is_not_named_in_received() {
        let mut env = envelope(&["jon"]);
        env.helo = "client.example".into();
        env.peer = Some("127.0.0.1".parse().unwrap());
        let date = "Sat, 28 Nov 2026 16:59:45 +0000";
        for rcpt in [
            "\"jon+x; Thu, 1 Jan 2015 00:00:00 +0000\"@razorback",
            "\"jon+(\"@razorback",
            "\"jon+\\\\\"@razorback",
        ] {
            let h = trace_headers(&env, "razorback", Some(rcpt), date, false);
            assert!(!h.contains("for <"), "{h}");
            assert_eq!(h.matches(';').count(), 1, "{h}");
            assert!(h.ends_with(&format!(";\n\t{date}\n")), "{h}");
        }
        let h = trace_headers(&env, "razorback", Some("\"j d\"@razorback"), date, false);
        assert!(h.contains("\tfor <\"j d\"@razorback>; Sat"), "{h}");
    }

    #[test]
    fn nothing_from_the_client_breaks_a_header() {
        let mut env = envelope(&["jon", "alice"]);
        env.helo = "evil\r\nX-Injected: yes".into();
        env.peer = Some("::1".parse().unwrap());
        let h = trace_headers(&env, "h", None, "date", false);
        assert!(h.starts_with("Return-Path: <>\n"));
        assert!(h.contains("[IPv6:::1]"));
        assert!(!h.contains("\nX-Injected"));
        // Every line but the first of a header is a continuation.
        for line in h.lines() {
            assert!(
                line.starts_with("Return-Path:")
                    || line.starts_with("Received:")
                    || line.starts_with('\t')
            );
        }
    }

    /// A local user who sets another sender gets sendmail's warning; one
    /// who sends as themselves, or root, does not.
    #[test]
    fn local_submitter_setting_another_sender_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let d = deliverer(dir.path());
        let mut env = envelope(&["jon"]);
        env.helo = "localhost".into();
        let as_user = |local: &str, domain: Option<&str>| {
            ReversePath::Mailbox(Mailbox {
                local: local.into(),
                domain: domain.map(String::from),
            })
        };
        let cases = [
            (1000, as_user("jon", Some("h")), false),
            (1000, as_user("JON", None), false),
            (1000, as_user("alice", Some("h")), true),
            (1000, as_user("jon", Some("elsewhere.example")), true),
            (1000, ReversePath::Null, true),
            (0, as_user("anyone", Some("elsewhere.example")), false),
        ];
        for (uid, sender, want) in cases {
            env.submitter = Some(crate::smtp::session::Submitter {
                uid,
                user: if uid == 0 {
                    "root".into()
                } else {
                    "jon".into()
                },
            });
            env.sender = sender.clone();
            assert_eq!(d.forged_sender(&env), want, "{sender:?} by uid {uid}");
            let h = trace_headers(&env, "h", None, "date", d.forged_sender(&env));
            assert_eq!(
                h.contains("X-Authentication-Warning: h: jon set sender to "),
                want,
                "{h}"
            );
            assert!(
                h.contains(&format!(
                    "Received: from localhost (user {}, uid {uid})",
                    if uid == 0 { "root" } else { "jon" }
                )),
                "{h}"
            );
        }
    }

    /// Issue postie 5, item 7: a spilled message passed as its file, which
    /// the SMTP side could still change, shortened in the middle of a
    /// delivery to two mailboxes: the delivery fails with 451 and neither
    /// mailbox keeps any of it.
    #[test]
    fn a_message_file_shortened_during_delivery_is_rolled_back() {
        use crate::privsep::{FdMessage, Limits};
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Shrinking {
            inner: FdMessage,
            other: std::fs::File,
            readers: AtomicUsize,
        }
        impl MessageSource for Shrinking {
            fn len(&self) -> u64 {
                self.inner.len()
            }
            fn reader(&self) -> std::io::Result<Box<dyn std::io::Read + '_>> {
                // The first reader sizes the append; the next two write
                // the mailboxes (at once): the file shrinks before the
                // second of those.
                if self.readers.fetch_add(1, Ordering::SeqCst) == 2 {
                    self.other.set_len(100)?;
                }
                self.inner.reader()
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let d = deliverer(dir.path());
        let body: Vec<u8> = (0..200)
            .flat_map(|i| format!("line {i:04} of the message\n").into_bytes())
            .collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&body).unwrap();
        let other = file.try_clone().unwrap();
        let limits = Limits {
            max_size: 1 << 20,
            max_recipients: 100,
            spill_threshold: 100,
            max_channels: 4,
        };
        let message = Shrinking {
            inner: FdMessage::new(file, body.len() as u64, &limits).unwrap(),
            other,
            readers: AtomicUsize::new(0),
        };
        let outcome = d.deliver(&envelope(&["alice", "jon"]), &message);
        assert_eq!(outcome, Outcome::Temporary(TempReason::Local));
        for u in ["alice", "jon"] {
            let kept = std::fs::read(dir.path().join(u)).unwrap_or_default();
            assert!(kept.is_empty(), "{u}: {}", String::from_utf8_lossy(&kept));
        }
    }
}
