//! A delivery that may leave recipients to the queue: the mailboxes that
//! can take the message get it, all or nothing among themselves, and the
//! queue entry that holds it for the others is made (at the end of DATA)
//! or updated (by the runner) in the same transaction.
//!
//! [`Deliverer::deliver_partially`] is the one loop both use:
//!
//! 1. the recipients are looked up; one that cannot be (a failed lookup,
//!    a user gone) is left out, with why;
//! 2. a [`Transaction`] over the others' mailboxes records its intent,
//!    then locks them as any delivery does, but only for the queue's
//!    short wait (`queue-lock-wait`): after it, a last round takes every
//!    mailbox that is free and leaves the busy ones;
//! 3. if any mailbox is left (or the delivery is the runner's), the
//!    queue step is recorded in the journal and synced
//!    ([`crate::journal::QueueStep`]): which entry, and which mailboxes
//!    the delivery appends to after all;
//! 4. every mailbox locked is appended to; one that fails (its quota, a
//!    full filesystem, an unsafe file) is left out too, and the whole
//!    transaction rolled back and tried again without it: no mailbox
//!    keeps a copy of a delivery that is then redone;
//! 5. the caller's `finish` makes or updates the queue entry, durably,
//!    as the last step: for a new entry, its envelope file is the commit
//!    point (recovery keeps the appends if it is there, and undoes them
//!    if not); an entry's delivered recipients are taken off it once the
//!    appends are whole (recovery does it, should the process die
//!    between). If `finish` fails, the transaction is rolled back: the
//!    client gets today's 4xx, and nothing is written anywhere.
//!
//! Only then is the journal settled and the locks released.
//!
//! [`new_entry`] is the entry the end of DATA makes of an envelope (and
//! a notice of success reports from).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::file::{AppendTarget, FileTarget};
use super::target::{Append, Failure, Target, act_as_ourselves};
use super::transaction::Transaction;
use super::{Deliverer, RecoveryCause};
use crate::dest::Dest;
use crate::dsn::Class;
use crate::journal::QueueStep;
use crate::queue::{Backoff, Entry, LastError, Pending, Recipient, StatusCode};
use crate::smtp::{Envelope, ReversePath, TempReason};

/// What became of a delivery that may leave recipients to the queue.
#[derive(Debug, Default)]
pub(super) struct Partial {
    /// The users whose mailboxes have the message.
    pub delivered: Vec<String>,
    /// The users left out, each with why.
    pub left: Vec<(String, Left)>,
}

/// Why a destination was left out of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Left {
    /// To try again later: busy, full, a failed lookup.
    Temporary(LastError),
    /// For good: there is no such user any more.
    Permanent(LastError),
    /// A program: never in a transaction (it cannot be undone), it runs
    /// from the queue entry once the transaction is committed.
    Later,
}

impl Left {
    /// The error it records in the queue; none for [`Left::Later`].
    pub(super) fn error(&self) -> Option<&LastError> {
        match self {
            Left::Temporary(e) | Left::Permanent(e) => Some(e),
            Left::Later => None,
        }
    }

    /// Why, for the mail log.
    pub(super) fn why(&self) -> String {
        match self.error() {
            Some(e) => e.to_string(),
            None => "a program: runs from the queue".into(),
        }
    }
}

/// An RFC 3463 code of class 4 or 5.
fn code(class: u8, subject: u16, detail: u16) -> StatusCode {
    let class = if class == 5 {
        Class::Permanent
    } else {
        Class::Transient
    };
    StatusCode::new(class, subject, detail).expect("a code of three digits at most")
}

/// The RFC 3463 code of a temporary failure of a transaction, as the
/// SMTP reply to it gives it ([`crate::smtp::Session::delivered`]).
pub(super) fn temp_code(reason: TempReason) -> StatusCode {
    match reason {
        TempReason::LockTimeout => code(4, 2, 0),
        TempReason::NoSpace => code(4, 3, 1),
        TempReason::Quota => code(4, 2, 2),
        TempReason::LookupFailed | TempReason::Local => code(4, 3, 0),
    }
}

/// The queue's error for a failure of one target: permanent for a
/// refusal (a file that is a symbolic link), temporary otherwise.
fn left_for(f: &Failure) -> Left {
    if f.permanent {
        return Left::Permanent(LastError::new(code(5, 2, 0), &f.why));
    }
    let reason = match f.outcome {
        crate::smtp::Outcome::Temporary(r) => r,
        crate::smtp::Outcome::Delivered => TempReason::Local,
    };
    Left::Temporary(LastError::new(temp_code(reason), &f.why))
}

/// What the queue does in a partial delivery.
pub(super) enum QueueMode<'a> {
    /// The end of DATA: a new entry, with this id, if anyone is left.
    New { id: &'a str },
    /// The runner: entry `id`, whose pending users this delivers.
    Done { id: &'a str },
}

impl Deliverer {
    /// Delivers to the mailboxes of `names` that can take the message now
    /// (see the module documentation), waiting `lock_wait` at most for
    /// busy ones; `finish(delivered, left)` is the transaction's last step
    /// (the queue entry made or updated), run only when the queue is to
    /// change. `Err`: nothing was delivered, and the transaction's
    /// failure says why.
    pub(super) fn deliver_partially(
        &self,
        names: &[&str],
        deadline: Instant,
        lock_wait: Duration,
        append: &Append<'_>,
        mode: QueueMode<'_>,
        mut finish: impl FnMut(&[String], &[(String, Left)]) -> Result<(), Failure>,
    ) -> Result<Partial, Failure> {
        let mut left: Vec<(String, Left)> = Vec::new();
        // Each round leaves out at least one more user, or ends.
        loop {
            let is_left = |n: &str| left.iter().any(|(u, _)| u == n);
            let trying: Vec<&str> = names.iter().copied().filter(|n| !is_left(n)).collect();
            let Looked {
                targets,
                keys,
                gone,
            } = self.lookup(&trying);
            if !gone.is_empty() {
                left.extend(gone);
                continue;
            }
            if targets.is_empty() {
                // Nobody to deliver to now: no transaction, only the
                // queue (a new entry is its own commit point).
                if matches!(mode, QueueMode::New { .. }) {
                    finish(&[], &left)?;
                }
                return Ok(Partial {
                    delivered: Vec::new(),
                    left,
                });
            }
            // A target's key (SPOOL/NAME, or a file's path): the
            // destination's key back from it.
            let user_of = |key: &Path| {
                keys.iter()
                    .find(|(k, _)| k.as_path() == key)
                    .map(|(_, d)| d.clone())
            };
            let name_of = |f: &Failure| f.target.as_deref().and_then(user_of);
            let mut txn = Transaction::begin(&self.journals, &self.gates, &self.spool, targets)?;
            // One mailbox: its identity held throughout, as a delivery
            // without a queue holds it (the queue is written as ourselves,
            // below).
            let _as_recipient = txn.single_identity();
            txn.intend(append)?;
            let locked = txn.lock_all(deadline, lock_wait, true, |until, busy| {
                self.recover_spool(until, RecoveryCause::OrphanDotlock(busy))
            });
            if let Err(f) = locked {
                txn.rollback();
                match name_of(&f) {
                    Some(name) => {
                        left.push((name, left_for(&f)));
                        continue;
                    }
                    None => return Err(f),
                }
            }
            for busy in txn.left() {
                let why = format!(
                    "{}: mailbox busy: lock not obtained in {} s",
                    busy.key().display(),
                    lock_wait.as_secs()
                );
                if let Some(key) = user_of(busy.key()) {
                    left.push((key, Left::Temporary(LastError::new(code(4, 2, 0), &why))));
                }
            }
            let delivered: Vec<String> = txn.locked_keys().filter_map(user_of).collect();
            // The journal names them as it names their targets.
            let journal_names = || delivered.iter().map(|k| Dest::journal_name(k)).collect();
            let step = match mode {
                QueueMode::New { .. } if left.is_empty() => None,
                QueueMode::New { id } => Some(QueueStep::New {
                    id: id.to_string(),
                    mailboxes: journal_names(),
                }),
                QueueMode::Done { .. } if delivered.is_empty() => {
                    // Nothing to deliver now: every one left.
                    txn.rollback();
                    return Ok(Partial { delivered, left });
                }
                QueueMode::Done { id } => Some(QueueStep::Done {
                    id: id.to_string(),
                    mailboxes: journal_names(),
                }),
            };
            if let Some(step) = &step {
                if let Err(f) = txn.record_queue(step) {
                    txn.rollback();
                    return Err(f);
                }
            }
            if let Err(failures) = txn.append_all(append) {
                txn.rollback();
                for f in failures {
                    match name_of(&f) {
                        Some(name) => left.push((name, left_for(&f))),
                        None => return Err(f),
                    }
                }
                continue;
            }
            if step.is_some() {
                // The queue is ours (root's), not the recipient's.
                let me = act_as_ourselves()
                    .map_err(|e| Failure::temp(TempReason::Local, format!("queue: {e}")));
                if let Err(f) = me.and_then(|_me| finish(&delivered, &left)) {
                    txn.rollback();
                    return Err(f);
                }
            }
            txn.commit();
            return Ok(Partial { delivered, left });
        }
    }

    /// The target of each destination of `names` (keys) that can be
    /// made now (a mailbox whose user can be looked up, a file), with the
    /// key of each; each one that cannot, with why; programs are left for
    /// after the transaction ([`Left::Later`]).
    fn lookup<'d>(&'d self, names: &[&str]) -> Looked<'d> {
        let mut looked = Looked {
            targets: Vec::with_capacity(names.len()),
            keys: Vec::with_capacity(names.len()),
            gone: Vec::new(),
        };
        for name in names {
            let target = match Dest::parse(name) {
                Some(Dest::Mailbox(user)) => self.mailbox_of(&user),
                Some(Dest::File { user, path }) => self.file_of(&user, &path),
                Some(Dest::Program { .. }) => Err(Left::Later),
                None => Err(Left::Permanent(LastError::new(
                    code(5, 3, 0),
                    &format!("{name}: not a destination postie delivers to"),
                ))),
            };
            match target {
                Ok(t) => {
                    looked.keys.push((t.key().to_path_buf(), name.to_string()));
                    looked.targets.push(t);
                }
                Err(why) => looked.gone.push((name.to_string(), why)),
            }
        }
        looked
    }

    /// The mailbox of `name`, if its user can be looked up.
    fn mailbox_of(&self, name: &str) -> Result<AppendTarget<'_>, Left> {
        let user = self.user_or_left(name, &format!("user {name}"))?;
        Ok(AppendTarget::Mailbox(self.mailbox(user)))
    }

    /// The file `path`, written as `user` (the identity is only taken
    /// when we are root, as for a mailbox).
    fn file_of(&self, user: &str, path: &str) -> Result<AppendTarget<'_>, Left> {
        let u = self.user_or_left(user, &format!("{path}: user {user}"))?;
        FileTarget::new(path.into(), u.uid, u.gid, &self.mbox, &self.append_writer)
            .map(AppendTarget::File)
            .map_err(|f| left_for(&f))
    }

    /// The user `name` (`what` in the error): gone is for good, a failed
    /// lookup for now.
    fn user_or_left(&self, name: &str, what: &str) -> Result<crate::users::User, Left> {
        match self.recipients.user(name) {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Left::Permanent(LastError::new(
                code(5, 1, 1),
                &format!("{what} does not exist any more"),
            ))),
            Err(e) => Err(Left::Temporary(LastError::new(
                code(4, 3, 0),
                &format!("lookup of {name}: {}", e.0),
            ))),
        }
    }
}

/// What [`Deliverer::lookup`] found.
struct Looked<'d> {
    targets: Vec<AppendTarget<'d>>,
    /// Each target's key, and the key of its destination.
    keys: Vec<(std::path::PathBuf, String)>,
    gone: Vec<(String, Left)>,
}

/// The new entry of a message at the end of DATA, for the users `left`.
pub(super) fn new_entry(
    env: &Envelope,
    trace: u64,
    left: &[(String, Left)],
    now: SystemTime,
    backoff: &Backoff,
) -> Entry {
    let recipients: Vec<Recipient> = env
        .recipients
        .iter()
        .map(|r| Recipient {
            address: r.path.to_string(),
            notify: r.notify,
            orcpt: r.orcpt.clone(),
            users: r.users.clone(),
        })
        .collect();
    let mut pending = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        for (user, why) in left.iter().filter(|(u, _)| r.users.contains(u)) {
            let (attempts, next) = match why {
                Left::Temporary(_) => (1, backoff.next_attempt(1, now, now)),
                Left::Permanent(_) => (1, None),
                Left::Later => (0, None),
            };
            pending.push(Pending {
                rcpt: i,
                user: user.clone(),
                attempts,
                next_attempt: next.unwrap_or(now),
                last_error: why.error().cloned(),
            });
        }
    }
    Entry {
        id: String::new(),
        log_id: env.id.clone(),
        received: now,
        size: 0,
        trace,
        sender: match &env.sender {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m.to_string()),
        },
        submitter: env.submitter.clone(),
        envid: env.envid.clone(),
        ret: env.ret,
        warned: None,
        recipients,
        pending,
    }
}
