//! What a transaction delivers to: the [`Target`] trait, and the mailbox
//! that implements it.
//!
//! A transaction ([`super::transaction`]) knows its destinations only
//! through this trait: where each is (the key that the gate holds and
//! that orders every transaction's locks), what the journal records of it
//! before anything is locked, one try at its locks; and, once locked
//! ([`LockedTarget`]): where its append starts, the append itself (synced),
//! its undoing, and letting go, of every lock or of all but the one that
//! other programs honour, which then keeps it for recovery. A mailbox
//! ([`MailboxTarget`]) does each with [`mbox::LockedMailbox`], as its
//! recipient's filesystem identity ([`OneTry`], which a file target
//! shares).
//!
//! The other destinations are each one more implementation, and no new
//! flag in the transaction:
//! * a file (an alias's or a `.forward`'s `/path`, postie 8): a mailbox
//!   outside the spool, with the same locks, append and rollback, as the
//!   identity the rules name: [`super::file`], which also holds
//!   `AppendTarget`, mailboxes and files in one transaction;
//! * a program (`|command`): run from the queue once the transaction is
//!   committed (postie 8), not a target of the transaction itself;
//! * a queue entry: a new file in the queue directory written and synced
//!   in the same transaction, its name unique (nothing to lock), its
//!   rollback its removal (the queue's step,
//!   [`crate::journal::QueueStep`]).
//!
//! The journal ([`crate::journal`]: [`Want`] and [`AppendStart`]) names a
//! mailbox of the spool by its user and a file by its absolute path, so
//! that recovery knows how to undo either.
//!
//! Also here: [`Failure`], why a step failed (for good, for a file that
//! refuses the message), and [`AppendWriter`], the path a mailbox's bytes
//! take to its file, where tests inject failing writes.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::journal::{AppendStart, Journal, Want};
use crate::mbox::{self, LockHooks, LockId, LockedMailbox, MboxError, MboxOptions, Quoting};
use crate::message::MessageSource;
use crate::smtp::{Outcome, TempReason};
use crate::sys;
use crate::users::User;

/// A destination of a transaction, not yet locked.
pub(crate) trait Target {
    /// The same destination, locked.
    type Locked: LockedTarget;

    /// Where it is: the gate holds this key, and every transaction locks
    /// its targets in the order of their keys, so that no two deadlock.
    fn key(&self) -> &Path;

    /// What the journal records of it before anything is locked: its name
    /// and the identity it is written with.
    fn intent(&self) -> Want;

    /// Runs this thread's file operations as the target's owner until the
    /// guard drops (`None`: nothing to switch). Each step below takes it
    /// for itself; a transaction of one target holds it throughout, so
    /// that the steps do not switch back and forth.
    fn act_as(&self) -> io::Result<Option<sys::FsIdentity>>;

    /// Tries its locks once, without waiting: `None` if one is busy (then
    /// none is held). Every lock is recorded in `round` before it is made.
    fn try_lock(&self, round: &mut LockRound<'_>) -> Result<Option<Self::Locked>, Failure>;

    /// Whether where its append starts must be on disk before the append
    /// (the journal synced once more): recovery truncates a file target
    /// only back to a start recorded, in the very file recorded, and
    /// never looks for an append it has no record of.
    fn durable_start(&self) -> bool {
        false
    }
}

/// A destination of a transaction, locked: appended to on a thread of its
/// own.
pub(crate) trait LockedTarget: Send {
    /// Where it is ([`Target::key`]).
    fn key(&self) -> &Path;

    /// Where its append starts, recorded before any append, so that
    /// recovery can find and undo it.
    fn append_start(&self) -> AppendStart;

    /// Appends the message (exactly `len` bytes, as the journal says) and
    /// syncs it. On failure nothing of it is left.
    fn append(&mut self, what: &Append<'_>, len: u64) -> Result<(), Failure>;

    /// Undoes its append, durably: another target of the transaction
    /// failed.
    fn rollback(&mut self) -> Result<(), MboxError>;

    /// Releases every lock.
    fn unlock(self);

    /// Releases its locks but the one that other programs honour (a
    /// mailbox's dotlock), so that nothing is appended after a delivery
    /// that could be neither finished nor undone until recovery has undone
    /// it.
    fn unlock_keeping_lock(self);
}

/// One try at a target's locks in a round of the transaction's
/// all-or-none locking: where its locks are recorded, and what the round
/// found.
pub(crate) struct LockRound<'j> {
    journal: &'j mut Journal,
    recovered: bool,
    orphan: bool,
}

impl<'j> LockRound<'j> {
    /// A round recording into `journal`; `recovered`: this delivery has
    /// already run recovery.
    pub(crate) fn new(journal: &'j mut Journal, recovered: bool) -> Self {
        LockRound {
            journal,
            recovered,
            orphan: false,
        }
    }

    /// Records, before it is made, a lock of the target the journal knows
    /// as `name`: recovery tells it from anyone else's by `id`.
    pub(crate) fn record(&mut self, name: &str, id: LockId) -> io::Result<()> {
        self.journal.record_lock(name, id)
    }

    /// Whether this delivery has run recovery: a stale lock may go then,
    /// as recovery took over any that a journal explains.
    pub(crate) fn recovered(&self) -> bool {
        self.recovered
    }

    /// Tells the round that a target found a lock whose holder may have
    /// died in a delivery (a dotlock without its fcntl lock).
    pub(crate) fn found_orphan(&mut self) {
        self.orphan = true;
    }

    /// Whether a target found such a lock in this round.
    pub(crate) fn orphan(&self) -> bool {
        self.orphan
    }
}

/// What every target of a transaction appends: the `From ` line, the trace
/// headers and the message, quoted.
pub(crate) struct Append<'m> {
    pub from_line: String,
    pub headers: String,
    pub message: &'m dyn MessageSource,
    pub quoting: Quoting,
}

impl Append<'_> {
    /// How the append begins, unique to this message: what recovery
    /// looks for.
    pub(crate) fn prefix(&self) -> Vec<u8> {
        let mut prefix = self.from_line.as_bytes().to_vec();
        prefix.extend_from_slice(self.headers.as_bytes());
        prefix
    }

    /// The exact length of the append, which tells a whole one from part
    /// of one.
    pub(crate) fn appended_len(&self) -> io::Result<u64> {
        let mut body = self.message.reader()?;
        mbox::appended_len(
            self.quoting,
            &self.from_line,
            self.headers.as_bytes(),
            &mut body,
        )
    }
}

/// Makes the writer an append goes through, over the open, locked file of
/// the mailbox at the path.
type MakeWriter = dyn for<'f> Fn(&Path, &'f File) -> Box<dyn Write + 'f> + Send + Sync;

/// The path a mailbox's bytes take to its file: straight to it
/// ([`direct`](Self::direct)), or through what a test puts there (writes
/// that fail after a few bytes, as a full disk's do).
#[derive(Clone)]
pub struct AppendWriter(Arc<MakeWriter>);

fn straight_to<'f>(_: &Path, file: &'f File) -> Box<dyn Write + 'f> {
    Box::new(file)
}

impl AppendWriter {
    /// Writes go straight to the file.
    pub fn direct() -> Self {
        AppendWriter(Arc::new(straight_to))
    }

    /// Writes go through what `make` builds over the mailbox's path and
    /// file.
    pub fn new(
        make: impl for<'f> Fn(&Path, &'f File) -> Box<dyn Write + 'f> + Send + Sync + 'static,
    ) -> Self {
        AppendWriter(Arc::new(make))
    }
}

impl Default for AppendWriter {
    fn default() -> Self {
        AppendWriter::direct()
    }
}

/// The filesystem identity a mailbox is handled with when postie runs as
/// root: its owner, and group `mail` (or the owner's group).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// Runs the caller's file operations as the owner when we are root.
    pub(crate) fn act_as(self) -> io::Result<Option<sys::FsIdentity>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        sys::become_fs(self.uid, self.gid).map(Some)
    }
}

/// Runs the caller's file operations as this process again (root), in the
/// middle of an [`Owner::act_as`] in force.
pub(crate) fn act_as_ourselves() -> io::Result<Option<sys::FsIdentity>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    sys::become_fs(0, nix::unistd::getegid().as_raw()).map(Some)
}

/// Root can give a new mailbox to its owner; anyone else only to
/// themselves.
pub(crate) fn may_create(user: &User) -> bool {
    let me = nix::unistd::geteuid();
    me.is_root() || me.as_raw() == user.uid
}

pub(crate) fn cannot_create(user: &User) -> String {
    format!(
        "no mailbox, and postie (uid {}) cannot create one owned by {} (uid {}) unless run as root",
        nix::unistd::geteuid(),
        user.name,
        user.uid
    )
}

/// A recipient's mailbox in the spool, as a transaction's target.
pub(crate) struct MailboxTarget<'d> {
    path: PathBuf,
    user: User,
    owner: Owner,
    opts: &'d MboxOptions,
    writer: &'d AppendWriter,
}

impl<'d> MailboxTarget<'d> {
    pub(crate) fn new(
        path: PathBuf,
        owner: Owner,
        user: User,
        opts: &'d MboxOptions,
        writer: &'d AppendWriter,
    ) -> Self {
        MailboxTarget {
            path,
            user,
            owner,
            opts,
            writer,
        }
    }
}

impl MailboxTarget<'_> {}

impl<'d> Target for MailboxTarget<'d> {
    type Locked = LockedMailboxTarget<'d>;

    fn key(&self) -> &Path {
        &self.path
    }

    fn intent(&self) -> Want {
        Want {
            name: self.user.name.clone(),
            uid: self.owner.uid,
            gid: self.owner.gid,
        }
    }

    fn act_as(&self) -> io::Result<Option<sys::FsIdentity>> {
        self.owner.act_as()
    }

    fn try_lock(&self, round: &mut LockRound<'_>) -> Result<Option<Self::Locked>, Failure> {
        let path = &self.path;
        let _id = self
            .owner
            .act_as()
            .map_err(|e| Failure::mbox(path, MboxError::Io(e)))?;
        if !may_create(&self.user) && !path.exists() {
            let why = cannot_create(&self.user);
            return Err(Failure::mbox(path, MboxError::Unsafe(why)));
        }
        let how = OneTry {
            open: mbox::open_locked_with,
            path,
            name: &self.user.name,
            user: &self.user,
            owner: self.owner,
            opts: self.opts,
            writer: self.writer,
        };
        how.try_lock(round).map_err(|e| Failure::mbox(path, e))
    }
}

/// One try at the locks of an mbox file (a mailbox, or a file target):
/// how it is opened, where, what the journal calls it, as whom.
pub(crate) struct OneTry<'a, 'd> {
    /// [`mbox::open_locked_with`] or [`mbox::open_file_locked_with`].
    pub open: fn(
        &Path,
        &User,
        &MboxOptions,
        Instant,
        &mut LockHooks<'_>,
    ) -> Result<LockedMailbox, MboxError>,
    pub path: &'a Path,
    /// Its name in the journal.
    pub name: &'a str,
    pub user: &'a User,
    pub owner: Owner,
    pub opts: &'d MboxOptions,
    pub writer: &'d AppendWriter,
}

impl<'d> OneTry<'_, 'd> {
    /// Opens and locks it, once, without waiting, each lock recorded in
    /// `round` under its name: `None` if a lock is busy. Call it as the
    /// identity it is written with.
    pub(crate) fn try_lock(
        self,
        round: &mut LockRound<'_>,
    ) -> Result<Option<LockedMailboxTarget<'d>>, MboxError> {
        let name = self.name;
        let recovered = round.recovered();
        let mut orphan = false;
        let opened = {
            let mut record = |id: LockId| round.record(name, id);
            let mut on_busy = || orphan = true;
            let mut hooks = LockHooks {
                record: Some(&mut record),
                on_busy: Some(&mut on_busy),
                recovered,
                ..LockHooks::default()
            };
            // One try (a deadline already come).
            (self.open)(self.path, self.user, self.opts, Instant::now(), &mut hooks)
        };
        if orphan {
            round.found_orphan();
        }
        match opened {
            Ok(mailbox) => Ok(Some(LockedMailboxTarget {
                mailbox,
                name: name.to_string(),
                owner: self.owner,
                writer: self.writer,
            })),
            Err(MboxError::LockTimeout) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A recipient's mailbox, or a file target, locked.
pub(crate) struct LockedMailboxTarget<'d> {
    mailbox: LockedMailbox,
    /// Its name in the journal: the user's (a mailbox of the spool), or
    /// a file target's path.
    name: String,
    owner: Owner,
    writer: &'d AppendWriter,
}

impl LockedTarget for LockedMailboxTarget<'_> {
    fn key(&self) -> &Path {
        self.mailbox.path()
    }

    fn append_start(&self) -> AppendStart {
        let (dev, ino) = self.mailbox.file_id();
        AppendStart {
            name: self.name.clone(),
            dev,
            ino,
            old_size: self.mailbox.old_size(),
        }
    }

    /// Written and synced as the recipient.
    fn append(&mut self, what: &Append<'_>, len: u64) -> Result<(), Failure> {
        let path = self.mailbox.path().to_path_buf();
        let _id = self
            .owner
            .act_as()
            .map_err(|e| Failure::mbox(&path, MboxError::Io(e)))?;
        let mut body = what
            .message
            .reader()
            .map_err(|e| Failure::mbox(&path, MboxError::Io(e)))?;
        let make_writer = &self.writer.0;
        let n = self
            .mailbox
            .write_with(&what.from_line, what.headers.as_bytes(), &mut body, |f| {
                make_writer(&path, f)
            })
            .map_err(|e| Failure::mbox(&path, e))?;
        if n != len {
            // Cannot happen (the same formatting twice); were it to, the
            // journal would be wrong about this append.
            let e = io::Error::other(format!("appended {n} bytes, not {len}"));
            return Err(Failure::mbox(&path, MboxError::Io(e)));
        }
        self.mailbox.sync().map_err(|e| Failure::mbox(&path, e))
    }

    fn rollback(&mut self) -> Result<(), MboxError> {
        let _id = self.owner.act_as();
        self.mailbox.rollback()
    }

    fn unlock(self) {
        let _id = self.owner.act_as();
        self.mailbox.unlock();
    }

    fn unlock_keeping_lock(self) {
        let _id = self.owner.act_as();
        self.mailbox.unlock_keeping_dotlock();
    }
}

/// Why a transaction failed: the outcome for the client and the reason for
/// the log.
#[derive(Debug)]
pub(crate) struct Failure {
    pub outcome: Outcome,
    pub why: String,
    /// The target it is about (its key), if one: a delivery that may
    /// queue leaves that one to the queue and delivers to the others.
    pub target: Option<PathBuf>,
    /// The target refused the message for good (a file target's
    /// safe-open rules: a symbolic link, hard links, no right to write
    /// it): trying again changes nothing, and a delivery that may queue
    /// returns it to its sender rather than retrying. The outcome is a
    /// temporary one all the same, for a delivery that is all or nothing.
    pub permanent: bool,
}

impl Failure {
    pub(crate) fn temp(reason: TempReason, why: String) -> Self {
        Failure {
            outcome: Outcome::Temporary(reason),
            why,
            target: None,
            permanent: false,
        }
    }

    /// A target at `path` that refuses the message for good
    /// ([`permanent`](Self::permanent)): "PATH: WHY; not delivered"
    /// (logged as it is made).
    pub(crate) fn refused(path: &Path, why: &str) -> Self {
        let why = format!("{}: {why}; not delivered", path.display());
        log::warn!("{why}");
        Failure {
            target: Some(path.to_path_buf()),
            permanent: true,
            ..Failure::temp(TempReason::Local, why)
        }
    }

    /// A lock that was busy until the wait was over.
    pub(crate) fn busy(&self) -> bool {
        self.outcome == Outcome::Temporary(TempReason::LockTimeout)
    }

    /// A failure at `path` (logged as it is made).
    pub(crate) fn mbox(path: &Path, e: MboxError) -> Self {
        let why = format!("{}: {e}", path.display());
        log::warn!("{why}");
        let reason = match e {
            MboxError::LockTimeout => TempReason::LockTimeout,
            MboxError::NoSpace => TempReason::NoSpace,
            MboxError::Quota => TempReason::Quota,
            MboxError::Unsafe(_) | MboxError::Io(_) => TempReason::Local,
        };
        Failure {
            target: Some(path.to_path_buf()),
            ..Failure::temp(reason, why)
        }
    }
}
