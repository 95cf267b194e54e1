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
//!
//! With a queue ([`QueueSetup`]), a mailbox that cannot take the message
//! within the queue's short wait (busy, full, over quota) no longer
//! fails the others: they get the message, all or nothing among
//! themselves, and a queue entry made in the same transaction holds it
//! for the rest (`partial.rs`, `queued.rs`); the steps above are the
//! same, and the failures that give a 4xx are the journal's and the
//! entry's own.
//!
//! The files: `transaction.rs` holds the steps above as the methods of one
//! `Transaction`, over the targets of `target.rs` (a mailbox today; a file
//! and a program next, each one more implementation of its `Target`
//! trait), the turns of `gate.rs`, and the headers of `trace.rs`;
//! `partial.rs` holds the loop of a delivery that may leave recipients to
//! the queue, `queued.rs` the end of DATA with a queue, the queue's runner
//! and what recovery does to the queue, `notices.rs` the notices sent to
//! senders; this file holds the [`Deliverer`], which looks the recipients
//! up, runs the steps in order, logs one line per mailbox, and is the one
//! entry to recovery ([`Deliverer::recover_spool`]).

mod expand;
mod file;
mod gate;
mod notices;
mod partial;
pub(crate) mod program;
mod programs;
mod queued;
mod target;
mod trace;
mod transaction;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::dest::Dest;
use crate::journal::{self, Journals};
use crate::maillog::Event;
use crate::mbox::{self, MboxOptions};
use crate::message::{Delivery, MessageSource};
use crate::queue::{Backoff, Queue};
use crate::recipients::Recipients;
use crate::smtp::{Envelope, Outcome, ReversePath, TempReason};
use crate::sys;
use crate::users::User;
use target::{Append, Failure, MailboxTarget, Owner, act_as_ourselves, cannot_create, may_create};
use transaction::{Transaction, first_failure};

pub use expand::SpecialSetup;
pub use gate::{Gate, Gates};
pub use target::AppendWriter;
use trace::trace_headers;

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
    /// How an append's bytes reach the mailbox file: straight
    /// ([`AppendWriter::direct`]), or through a test's failing writer.
    pub append_writer: AppendWriter,
    /// Where recipients that cannot take a message at once wait; `None`:
    /// they defer the whole message (4xx), as before the queue.
    pub queue: Option<QueueSetup>,
    /// How programs and files are delivered to.
    pub special: SpecialSetup,
}

/// The queue as delivery uses it ([`crate::queue`]), and its policy.
pub struct QueueSetup {
    pub queue: Queue,
    /// How long the end of DATA waits for busy mailboxes before it
    /// queues their recipients.
    pub lock_wait: Duration,
    pub backoff: Backoff,
    /// After how long in the queue the sender is told of the delay.
    pub delay_warning: Option<Duration>,
    /// The largest message a bounce returns whole.
    pub return_limit: u64,
}

impl Delivery for Deliverer {
    fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
        Deliverer::deliver(self, env, message)
    }

    fn check_mailbox(&self, user: &User) -> Result<(), crate::message::MailboxRefused> {
        Deliverer::check_mailbox(self, user)
    }

    fn recover(&self) {
        let deadline = Instant::now() + self.mbox.lock_timeout;
        self.recover_spool(deadline, RecoveryCause::Start);
    }

    fn close(&self) {
        self.journals.close();
    }

    fn run_queue(&self, filter: &crate::message::RunFilter) -> crate::message::RunSummary {
        Deliverer::run_queue(self, filter)
    }

    fn explain(
        &self,
        to: &crate::smtp::Mailbox,
    ) -> Option<Result<crate::message::Explained, String>> {
        Some(Deliverer::explain(self, to))
    }
}

/// Why [`Deliverer::recover_spool`] runs.
#[derive(Debug, Clone, Copy)]
pub enum RecoveryCause<'p> {
    /// At start, before the first session.
    Start,
    /// A delivery's lock round met this mailbox's dotlock without its
    /// fcntl lock, as a delivery that died leaves it.
    OrphanDotlock(&'p Path),
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
    // Fields drop in this order: no longer delivering, then the signals
    // let through.
    _delivering: std::sync::RwLockReadGuard<'static, ()>,
    _signals: sys::DeliverySignalsHeld,
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
        let signals = sys::hold_delivery_signals();
        let delivering = DELIVERING.read().unwrap_or_else(|p| p.into_inner());
        HoldSignals {
            _delivering: delivering,
            _signals: signals,
        }
    }
}

impl Deliverer {
    /// Appends `message` (LF line ends, as the DATA reader produced it) to
    /// the mailbox of every recipient of `env` as one transaction, and logs
    /// one line per mailbox.
    ///
    /// A recipient that asked for it (NOTIFY=SUCCESS, RFC 3461) is then
    /// told its sender of the delivery: once the transaction is over and
    /// the signals let through again, as a message of its own.
    pub fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
        // Where each recipient's copies go, as this process expands it.
        let env = match self.with_destinations(env) {
            Ok(env) => env,
            Err(f) => {
                for r in &env.recipients {
                    let to = r.path.to_string();
                    Event::Deferred {
                        id: &env.id,
                        from: &env.sender,
                        to: &to,
                        size: env.size,
                        why: &f.why,
                    }
                    .log();
                }
                return f.outcome;
            }
        };
        let env = &env;
        let (outcome, delivered, headers) = self.deliver_held(env, message);
        if !delivered.is_empty() {
            self.tell_delivered(env, &delivered, &headers, message);
        }
        outcome
    }

    /// [`deliver`](Self::deliver) with the signals held; also returns the
    /// users delivered to whose recipient asked for a notice of success
    /// (none, most often), and the trace headers written.
    fn deliver_held(
        &self,
        env: &Envelope,
        message: &dyn MessageSource,
    ) -> (Outcome, Vec<String>, String) {
        let _held = HoldSignals::new();
        let deadline = Instant::now() + self.deadline;
        let now = sys::localtime(SystemTime::now());
        let single = match env.recipients.as_slice() {
            [one] => Some(one.path.to_string()),
            _ => None,
        };
        let append = Append {
            from_line: mbox::from_line(&env.sender, &now),
            headers: trace_headers(
                env,
                &self.hostname,
                single.as_deref(),
                &now.rfc5322(),
                self.forged_sender(env),
            ),
            message,
            quoting: self.mbox.quoting,
        };
        let mut names: Vec<&str> = env
            .recipients
            .iter()
            .flat_map(|r| r.users.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        // The users delivered to whose recipient asked for a notice of
        // success: none, most often, and then nothing is allocated.
        let wanted = |delivered: &dyn Fn(&str) -> bool| -> Vec<String> {
            let mut users: Vec<String> = env
                .recipients
                .iter()
                .filter(|r| notices::wants_success(r.notify))
                .flat_map(|r| r.users.iter())
                .filter(|u| delivered(u))
                .cloned()
                .collect();
            users.sort_unstable();
            users.dedup();
            users
        };
        if let Some(q) = &self.queue {
            let (outcome, delivered) = self.deliver_or_queue(env, &names, deadline, &append, q);
            let asked = wanted(&|u| delivered.iter().any(|d| d == u));
            return (outcome, asked, append.headers);
        }
        let result = match names
            .iter()
            .find(|n| !matches!(Dest::parse(n), Some(Dest::Mailbox(_))))
        {
            // Without a queue, only mailboxes: a program runs from the
            // queue, after the transaction.
            Some(other) => Err(Failure::temp(
                TempReason::Local,
                format!("{other}: programs and files need the queue, which is unusable"),
            )),
            None => self.transaction(&names, deadline, &append),
        };
        for &to in &names {
            let (id, from, size) = (env.id.as_str(), &env.sender, env.size);
            match &result {
                Ok(()) => Event::Delivered { id, from, to, size },
                Err(f) => Event::Deferred {
                    id,
                    from,
                    to,
                    size,
                    why: &f.why,
                },
            }
            .log();
        }
        match result {
            Ok(()) => (Outcome::Delivered, wanted(&|_| true), append.headers),
            Err(f) => (f.outcome, Vec::new(), String::new()),
        }
    }

    /// The steps of one transaction over the mailboxes of `names`
    /// ([`transaction`]): begin, intend, lock all, append all, then commit,
    /// or roll back at the first step that fails.
    fn transaction(
        &self,
        names: &[&str],
        deadline: Instant,
        append: &Append<'_>,
    ) -> Result<(), Failure> {
        let targets = self.mailboxes(names)?;
        let mut txn = Transaction::begin(&self.journals, &self.gates, &self.spool, targets)?;
        // One mailbox: its identity held throughout, rather than taken
        // and given back by each step.
        let _as_recipient = txn.single_identity();
        let steps = (|| {
            txn.intend(append)?;
            txn.lock_all(deadline, self.mbox.lock_timeout, false, |until, busy| {
                self.recover_spool(until, RecoveryCause::OrphanDotlock(busy))
            })?;
            txn.append_all(append).map_err(first_failure)
        })();
        match steps {
            Ok(()) => txn.commit(),
            Err(_) => txn.rollback(),
        }
        steps
    }

    /// The mailbox of each user of `names`, as a transaction's target.
    fn mailboxes(&self, names: &[&str]) -> Result<Vec<MailboxTarget<'_>>, Failure> {
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
            targets.push(self.mailbox(user));
        }
        Ok(targets)
    }

    /// `user`'s mailbox, as a transaction's target.
    fn mailbox(&self, user: User) -> MailboxTarget<'_> {
        MailboxTarget::new(
            self.spool.join(&user.name),
            self.owner(&user),
            user,
            &self.mbox,
            &self.append_writer,
        )
    }

    /// The one entry to recovery ([`journal::recover`]), which undoes the
    /// deliveries a crash interrupted in the spool: at start
    /// ([`Delivery::recover`]), and from a delivery whose lock round met a
    /// dotlock without its fcntl lock (with nothing locked, and as often as
    /// [`Journals::recovery_due`] allows). Runs as ourselves, not as a
    /// recipient: the journals are ours. `None` if that identity could not
    /// be taken.
    pub fn recover_spool(
        &self,
        deadline: Instant,
        cause: RecoveryCause<'_>,
    ) -> Option<journal::Summary> {
        if let RecoveryCause::OrphanDotlock(busy) = cause {
            log::info!(
                "{}: dotlock without its fcntl lock; recovery: scanning {}",
                busy.display(),
                self.spool.display()
            );
        }
        let _me = match act_as_ourselves() {
            Ok(me) => me,
            Err(e) => {
                log::warn!("recovery: {e}");
                return None;
            }
        };
        let queue = self
            .queue
            .as_ref()
            .map(|q| &q.queue as &dyn journal::QueueRecovery);
        let s = journal::recover(&self.spool, &self.mbox, deadline, &self.journals, queue);
        if matches!(cause, RecoveryCause::Start) && s != journal::Summary::default() {
            log::info!(
                "recovery: {} journals of earlier processes dealt with, {} interrupted deliveries undone ({} mailboxes truncated), {} left for later",
                s.journals,
                s.undone,
                s.truncated,
                s.deferred
            );
        }
        Some(s)
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

    /// The fsgid of file operations on `user`'s mailbox when root.
    fn fs_gid(&self, user: &User) -> u32 {
        self.mail_gid.unwrap_or(user.gid)
    }

    /// The filesystem identity of file operations on `user`'s mailbox
    /// when root.
    fn owner(&self, user: &User) -> Owner {
        Owner {
            uid: user.uid,
            gid: self.fs_gid(user),
        }
    }

    /// The RCPT-time check of a user's mailbox: it must be missing (and
    /// creatable by us for its owner) or a regular file with one link owned
    /// by the user. Returns why not.
    pub fn check_mailbox(&self, user: &User) -> Result<(), crate::message::MailboxRefused> {
        use crate::message::MailboxRefused;
        let path = self.spool.join(&user.name);
        let _id = match self.owner(user).act_as() {
            Ok(id) => id,
            Err(err) => return Err(MailboxRefused::Identity { path, err }),
        };
        if !may_create(user) && std::fs::symlink_metadata(&path).is_err() {
            let why = cannot_create(user);
            return Err(MailboxRefused::CannotCreate { path, why });
        }
        // As root, the dotlock (and a missing mailbox) are made with the
        // user's identity: a spool it cannot write would defer the whole
        // message at the end of DATA, every other recipient's copy too.
        // faccessat with AT_EACCESS checks with the fsuid and fsgid now in
        // force.
        if nix::unistd::geteuid().is_root() {
            if let Err(errno) = nix::unistd::faccessat(
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
                return Err(MailboxRefused::SpoolNotWritable {
                    path,
                    uid: user.uid,
                    group,
                    errno,
                });
            }
        }
        match mbox::check(&path, user) {
            Ok(()) => Ok(()),
            Err(err) => Err(MailboxRefused::Mbox { path, err }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBuf;
    use crate::smtp::Mailbox;

    use std::io::Write;

    /// Writes `.1` bytes to the file, then fails with errno `.2`.
    struct FailAfter<'f>(pub &'f std::fs::File, pub usize, pub i32);

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

    pub(super) fn deliverer(spool: &std::path::Path) -> Deliverer {
        use crate::{domains::LocalDomains, users::PasswdFile};
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
            append_writer: AppendWriter::direct(),
            queue: None,
            special: Default::default(),
        }
    }

    pub(super) fn envelope(users: &[&str]) -> Envelope {
        Envelope {
            id: "T.1".into(),
            helo: "c".into(),
            via: crate::smtp::Via {
                esmtp: true,
                ..Default::default()
            },
            peer: None,
            sender: ReversePath::Null,
            recipients: users
                .iter()
                .map(|u| crate::smtp::Recipient {
                    path: Mailbox {
                        local: u.to_string(),
                        domain: None,
                    },
                    users: vec![u.to_string()],
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            body: None,
            size: 10,
            submitter: None,
            ret: None,
            envid: None,
        }
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

    /// A write failure in the second mailbox of a transaction (ENOSPC,
    /// EDQUOT) leaves both mailboxes exactly as before, and maps to the
    /// reason the client is told.
    #[test]
    fn failure_in_one_mailbox_rolls_back_all() {
        let cases = [
            (libc::ENOSPC, TempReason::NoSpace),
            (libc::EDQUOT, TempReason::Quota),
        ];
        for (errno, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut d = deliverer(dir.path());
            std::fs::write(dir.path().join("alice"), b"old alice\n").unwrap();
            std::fs::write(dir.path().join("jon"), b"old jon\n").unwrap();
            let mut msg = MessageBuf::new(1024, dir.path().to_path_buf());
            msg.write_all(b"Subject: x\n\nbody\n").unwrap();
            // jon's writes fail after a few bytes, as a full disk's would.
            let jon = dir.path().join("jon");
            d.append_writer = AppendWriter::new(move |path, f| {
                if path == jon {
                    Box::new(FailAfter(f, 10, errno))
                } else {
                    Box::new(f)
                }
            });
            let out = d.deliver(&envelope(&["jon", "alice"]), &msg);
            d.append_writer = AppendWriter::direct();
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
            env.submitter = Some(crate::smtp::Submitter {
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
            tls_files: None,
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
