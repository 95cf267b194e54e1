//! The queue in delivery: what the end of DATA leaves to it, how the
//! runner delivers from it, and what recovery does to it.
//!
//! * [`Deliverer::deliver_or_queue`], the end of DATA with a queue: the
//!   mailboxes that can take the message within the queue's short wait
//!   get it; a new entry holds it for the others, made as the last step of
//!   the same transaction ([`super::partial`]), so that `250` means that
//!   every recipient has the message or a durable entry holds it for them.
//!   If the entry cannot be made (a full queue filesystem), nothing is
//!   written anywhere and the client gets the 4xx it got before the queue.
//! * [`Deliverer::run_queue`], the runner: each entry picked (and not run
//!   by another runner: its run lock), its recipients due delivered in a
//!   transaction that takes them off the entry, the others given their
//!   next attempt (the back-off of [`crate::queue::Backoff`]), and those
//!   failed for good or given up returned to the sender
//!   ([`super::notice`]).
//! * [`QueueRecovery`] for the queue: recovery of a delivery that died
//!   keeps or removes the entry it was making, and takes off an entry the
//!   recipients whose delivery had finished.
//!
//! An entry's message file holds the message as received, after the trace
//! headers this host added (`Return-Path:`, `Received:`); each delivery
//! from the queue writes its own `From ` line before them, as a delivery
//! at the end of DATA would have.

use std::fs::File;
use std::io::{self, Read};
use std::time::{Instant, SystemTime};

use super::partial::{Left, Partial, QueueMode};
use super::target::{Append, Failure};
use super::{Deliverer, HoldSignals, QueueSetup};
use crate::journal::QueueRecovery;
use crate::maillog::Event;
use crate::mbox;
use crate::message::{FileReader, MessageSource, RunFilter, RunSummary};
use crate::queue::{Entry, Pending, Queue, Recipient};
use crate::smtp::address::parse_path;
use crate::smtp::{Envelope, Outcome, ReversePath, TempReason};
use crate::sys;

impl Deliverer {
    /// The end of DATA with a queue (see the module documentation): every
    /// user of `names` has the message, or a new queue entry holds it for
    /// them; else nothing is written and the outcome is the failure.
    pub(super) fn deliver_or_queue(
        &self,
        env: &Envelope,
        names: &[&str],
        deadline: Instant,
        append: &Append<'_>,
        q: &QueueSetup,
    ) -> Outcome {
        let id = q.queue.new_id();
        let now = SystemTime::now();
        let result = self.deliver_partially(
            names,
            deadline,
            q.lock_wait,
            append,
            QueueMode::New { id: &id },
            |_, left| {
                let mut entry = new_entry(env, append.headers.len() as u64, left, now, q);
                let body = append
                    .message
                    .reader()
                    .map_err(|e| queue_failure(&q.queue, e))?;
                let mut message = append.headers.as_bytes().chain(body);
                q.queue
                    .create_as(id.clone(), &mut entry, &mut message)
                    .map_err(|e| queue_failure(&q.queue, e))
            },
        );
        let (log_id, from, size) = (env.id.as_str(), &env.sender, env.size);
        match result {
            Ok(Partial { delivered, left }) => {
                for to in &delivered {
                    Event::Delivered {
                        id: log_id,
                        from,
                        to,
                        size,
                    }
                    .log();
                }
                for (to, why) in &left {
                    Event::Queued {
                        id: log_id,
                        from,
                        to,
                        size,
                        queue: &id,
                        why: &why.error().to_string(),
                    }
                    .log();
                }
                Outcome::Delivered
            }
            Err(f) => {
                for to in names {
                    Event::Deferred {
                        id: log_id,
                        from,
                        to,
                        size,
                        why: &f.why,
                    }
                    .log();
                }
                f.outcome
            }
        }
    }

    /// Runs the queue as `filter` says (see the module documentation).
    pub fn run_queue(&self, filter: &RunFilter) -> RunSummary {
        let mut sum = RunSummary::default();
        let Some(q) = &self.queue else {
            return sum;
        };
        let listing = match q.queue.list() {
            Ok(l) => l,
            Err(e) => {
                log::error!("queue {}: {e}", q.queue.dir().display());
                return sum;
            }
        };
        for entry in &listing.entries {
            if !picked(filter, entry) {
                continue;
            }
            if let Err(e) = self.run_entry(q, &entry.id, filter, &mut sum) {
                log::warn!("queue {}: entry {}: {e}", q.queue.dir().display(), entry.id);
            }
        }
        sum
    }

    /// Delivers entry `id`'s recipients that are due (all of them, for
    /// `filter.all`), under its run lock; counts in `sum`.
    fn run_entry(
        &self,
        q: &QueueSetup,
        id: &str,
        filter: &RunFilter,
        sum: &mut RunSummary,
    ) -> io::Result<()> {
        let Some(_run) = q.queue.lock_entry(id, false)? else {
            log::debug!("queue: entry {id} is being run by another runner");
            return Ok(());
        };
        // Read again under the lock: another runner may have changed it.
        let mut entry = q.queue.load(id)?;
        sum.entries += 1;
        let now = SystemTime::now();
        let mut due: Vec<&str> = entry
            .pending
            .iter()
            .filter(|p| filter.all || p.next_attempt <= now)
            .filter(|p| rcpt_matches(filter, &entry.recipients[p.rcpt]))
            .map(|p| p.user.as_str())
            .collect();
        due.sort_unstable();
        due.dedup();
        if due.is_empty() {
            note_pending(&entry, sum);
            return Ok(());
        }
        let file = q.queue.open_message(id)?;
        let mut trace = vec![0; usize::try_from(entry.trace).unwrap_or(usize::MAX)];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut trace, 0)?;
        let headers = String::from_utf8(trace)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "trace headers not UTF-8"))?;
        let message = QueuedMessage {
            file: &file,
            start: entry.trace,
            end: entry.size,
        };
        let sender = sender_of(&entry);
        let append = Append {
            from_line: mbox::from_line(&sender, &sys::localtime(now)),
            headers,
            message: &message,
            quoting: self.mbox.quoting,
        };
        let due: Vec<String> = due.into_iter().map(str::to_string).collect();
        let names: Vec<&str> = due.iter().map(String::as_str).collect();
        let result = {
            let _held = HoldSignals::new();
            let deadline = Instant::now() + self.deadline;
            let before = &entry;
            self.deliver_partially(
                &names,
                deadline,
                q.lock_wait,
                &append,
                QueueMode::Done { id },
                |delivered, _| take_off(&q.queue, before, delivered),
            )
        };
        let (log_id, size) = (entry.log_id.clone(), entry.size);
        let left = match result {
            Ok(Partial { delivered, left }) => {
                for to in &delivered {
                    Event::Delivered {
                        id: &log_id,
                        from: &sender,
                        to,
                        size,
                    }
                    .log();
                }
                sum.delivered += delivered.len();
                entry.pending.retain(|p| !delivered.contains(&p.user));
                left
            }
            Err(f) => {
                let why = Left::Temporary(crate::queue::LastError::new(
                    super::partial::temp_code(match f.outcome {
                        Outcome::Temporary(r) => r,
                        Outcome::Delivered => TempReason::Local,
                    }),
                    &f.why,
                ));
                due.iter().map(|u| (u.clone(), why.clone())).collect()
            }
        };
        // Each one left: its next attempt, or given up.
        let mut failed: Vec<Pending> = Vec::new();
        for (user, why) in &left {
            for p in entry.pending.iter_mut().filter(|p| &p.user == user) {
                p.attempts = p.attempts.saturating_add(1);
                p.last_error = Some(why.error().clone());
                let next = match why {
                    Left::Temporary(_) => q.backoff.next_attempt(p.attempts, entry.received, now),
                    Left::Permanent(_) => None,
                };
                match next {
                    Some(t) => p.next_attempt = t,
                    None => failed.push(p.clone()),
                }
            }
        }
        if !failed.is_empty() {
            match self.notify_failed(q, &entry, &failed) {
                Ok(notice) => {
                    for p in &failed {
                        let why = p.last_error.as_ref().map(ToString::to_string);
                        Event::Bounced {
                            id: &log_id,
                            from: &sender,
                            to: &p.user,
                            size,
                            why: why.as_deref().unwrap_or("given up"),
                            notice: &notice,
                        }
                        .log();
                    }
                    sum.failed += failed.len();
                    entry.pending.retain(|p| !failed.contains(p));
                }
                Err(e) => {
                    // Kept, to be tried again: the notice must not be lost.
                    log::warn!("queue: entry {id}: cannot send the notice of failure: {e}");
                    for p in entry.pending.iter_mut().filter(|p| failed.contains(p)) {
                        p.next_attempt = now + q.backoff.minimal;
                    }
                }
            }
        }
        for (to, why) in &left {
            if entry.pending.iter().any(|p| &p.user == to) {
                Event::Queued {
                    id: &log_id,
                    from: &sender,
                    to,
                    size,
                    queue: id,
                    why: &why.error().to_string(),
                }
                .log();
            }
        }
        if entry.pending.is_empty() {
            match q.queue.remove(id) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            q.queue.update(&entry)?;
        }
        note_pending(&entry, sum);
        Ok(())
    }

    /// Returns `failed` (pending recipients of `entry` failed for good or
    /// given up) to the sender; returns whom the notice went to.
    fn notify_failed(
        &self,
        q: &QueueSetup,
        entry: &Entry,
        failed: &[Pending],
    ) -> Result<String, String> {
        let _ = (q, entry, failed);
        Ok("none".into())
    }
}

/// Counts `entry`'s pending recipients in `sum`, and when the first is
/// due again.
fn note_pending(entry: &Entry, sum: &mut RunSummary) {
    sum.deferred += entry.pending.len();
    if let Some(t) = entry.pending.iter().map(|p| p.next_attempt).min() {
        sum.next_due = Some(sum.next_due.map_or(t, |d| d.min(t)));
    }
}

/// The new entry of a message at the end of DATA, for the users `left`.
fn new_entry(
    env: &Envelope,
    trace: u64,
    left: &[(String, Left)],
    now: SystemTime,
    q: &QueueSetup,
) -> Entry {
    let recipients: Vec<Recipient> = env
        .recipients
        .iter()
        .map(|r| Recipient {
            address: r.path.to_string(),
            notify: None,
            orcpt: None,
            users: r.users.clone(),
        })
        .collect();
    let mut pending = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        for (user, why) in left.iter().filter(|(u, _)| r.users.contains(u)) {
            let next = match why {
                Left::Temporary(_) => q.backoff.next_attempt(1, now, now),
                Left::Permanent(_) => None,
            };
            pending.push(Pending {
                rcpt: i,
                user: user.clone(),
                attempts: 1,
                next_attempt: next.unwrap_or(now),
                last_error: Some(why.error().clone()),
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
        envid: None,
        ret: None,
        recipients,
        pending,
    }
}

/// The failure of a delivery whose queue entry could not be made or
/// changed: today's 4xx (452 for a full filesystem).
fn queue_failure(queue: &Queue, e: io::Error) -> Failure {
    let reason = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => TempReason::NoSpace,
        _ => TempReason::Local,
    };
    let why = format!("queue {}: {e}", queue.dir().display());
    log::warn!("{why}");
    Failure::temp(reason, why)
}

/// The runner's last step of a delivery from entry `before`: the users
/// `delivered` taken off it (the entry removed when none is left), after
/// checking that they are still pending in the entry on disk (recovery of
/// another runner's delivery may have taken them off meanwhile: then this
/// delivery is rolled back, not doubled).
fn take_off(queue: &Queue, before: &Entry, delivered: &[String]) -> Result<(), Failure> {
    let fail = |e: io::Error| queue_failure(queue, e);
    let now = queue.load(&before.id).map_err(fail)?;
    if !delivered
        .iter()
        .all(|u| now.pending.iter().any(|p| &p.user == u))
    {
        return Err(Failure::temp(
            TempReason::Local,
            format!("queue entry {} changed during its delivery", before.id),
        ));
    }
    let mut after = now;
    after.pending.retain(|p| !delivered.contains(&p.user));
    let written = if after.pending.is_empty() {
        queue.remove(&after.id)
    } else {
        queue.update(&after)
    };
    match written {
        Ok(()) => Ok(()),
        // The new file may be in place even so (renamed, then the
        // directory's sync failed): then the delivery stands, as the
        // entry on disk says.
        Err(e) => match queue.load(&after.id) {
            Ok(e2) if !e2.pending.iter().any(|p| delivered.contains(&p.user)) => Ok(()),
            Err(e2) if e2.kind() == io::ErrorKind::NotFound && after.pending.is_empty() => Ok(()),
            _ => Err(fail(e)),
        },
    }
}

/// Whether `filter` picks `entry` (its ids, sender and recipient).
fn picked(filter: &RunFilter, entry: &Entry) -> bool {
    let holds = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
    (filter.ids.is_empty() || filter.ids.contains(&entry.id))
        && filter
            .sender
            .as_deref()
            .is_none_or(|s| holds(entry.sender.as_deref().unwrap_or(""), s))
        && entry
            .pending
            .iter()
            .any(|p| rcpt_matches(filter, &entry.recipients[p.rcpt]))
}

fn rcpt_matches(filter: &RunFilter, r: &Recipient) -> bool {
    filter
        .recipient
        .as_deref()
        .is_none_or(|s| r.address.to_lowercase().contains(&s.to_lowercase()))
}

/// The envelope sender of `entry`.
fn sender_of(entry: &Entry) -> ReversePath {
    match &entry.sender {
        None => ReversePath::Null,
        Some(s) => match parse_path(&format!("<{s}>")) {
            Ok((Some(m), _)) => ReversePath::Mailbox(m),
            _ => ReversePath::Null,
        },
    }
}

/// The message of a queue entry: its message file after the trace
/// headers.
struct QueuedMessage<'f> {
    file: &'f File,
    start: u64,
    end: u64,
}

impl MessageSource for QueuedMessage<'_> {
    fn len(&self) -> u64 {
        self.end - self.start
    }

    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(FileReader::range(
            self.file,
            self.start,
            self.end,
            |pos, end| format!("queued message file ends at {pos}, before {end}"),
        )))
    }
}

impl QueueRecovery for Queue {
    fn exists(&self, id: &str) -> io::Result<bool> {
        match self.load(id) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn discard(&self, id: &str) -> io::Result<()> {
        Queue::discard(self, id)
    }

    fn delivered(&self, id: &str, mailboxes: &[String]) -> io::Result<()> {
        // Not while a runner works on it: it read the entry before this.
        let Some(_run) = self.lock_entry(id, false).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(None),
            _ => Err(e),
        })?
        else {
            return match self.exists(id)? {
                false => Ok(()),
                true => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("queue entry {id} is being run"),
                )),
            };
        };
        let mut entry = match self.load(id) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let before = entry.pending.len();
        entry.pending.retain(|p| !mailboxes.contains(&p.user));
        if entry.pending.len() == before {
            return Ok(());
        }
        log::info!(
            "recovery: queue entry {id}: {} delivered before the crash, taken off",
            mailboxes.join(", ")
        );
        if entry.pending.is_empty() {
            self.remove(id)
        } else {
            self.update(&entry)
        }
    }
}
