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
//!   ([`crate::queue::notice`]).
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

use super::notices::{HEAD_COPY, wants_success};
use super::partial::{Left, Partial, QueueMode, new_entry};
use super::target::{Append, Failure};
use super::{Deliverer, HoldSignals, QueueSetup};
use crate::dest::Dest;
use crate::journal::QueueRecovery;
use crate::maillog::Event;
use crate::mbox;
use crate::message::{FileReader, MessageSource, RunFilter, RunSummary};
use crate::queue::{Entry, Notice, Pending, Queue, Recipient};
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
    ) -> (Outcome, Vec<String>) {
        let id = q.queue.new_id();
        let now = SystemTime::now();
        let result = self.deliver_partially(
            names,
            deadline,
            q.lock_wait,
            append,
            QueueMode::New { id: &id },
            |_, left| {
                let mut entry = new_entry(env, append.headers.len() as u64, left, now, &q.backoff);
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
                    let text = why.why();
                    match why {
                        Left::Later => Event::Scheduled {
                            id: log_id,
                            from,
                            to,
                            size,
                            queue: &id,
                        },
                        _ => Event::Queued {
                            id: log_id,
                            from,
                            to,
                            size,
                            queue: &id,
                            why: &text,
                        },
                    }
                    .log();
                }
                if !left.is_empty() {
                    // This process's runner, if it has one, learns when
                    // the new entry is due.
                    crate::queue_runner::wake();
                }
                (Outcome::Delivered, delivered)
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
                (f.outcome, Vec::new())
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
            if crate::queue_runner::stopping() {
                // The daemon stops: the rest waits for the next run.
                break;
            }
            if !picked(filter, entry) {
                continue;
            }
            // Nothing due in it (as listed): not locked, so that a runner
            // that only looks never keeps another from an entry.
            let now = SystemTime::now();
            if !filter.all && !entry.pending.iter().any(|p| p.next_attempt <= now) {
                note_pending(entry, &mut sum);
                continue;
            }
            if let Err(e) = self.run_entry(q, &entry.id, filter, &mut sum) {
                log::warn!("queue {}: entry {}: {e}", q.queue.dir().display(), entry.id);
            }
        }
        sum
    }

    /// Delivers entry `id`'s recipients that are due (all of them, for
    /// `filter.all`), under its run lock; counts in `sum`. An entry gone
    /// meanwhile (another runner delivered it) is nothing to do.
    fn run_entry(
        &self,
        q: &QueueSetup,
        id: &str,
        filter: &RunFilter,
        sum: &mut RunSummary,
    ) -> io::Result<()> {
        // A run of everything (`flush`, `sendmail -q`) waits for another
        // runner's delivery from the entry to end; a run of what is due
        // leaves it to that runner.
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let run = match q.queue.lock_entry(id, filter.all) {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        };
        let Some(_run) = run else {
            log::debug!("queue: entry {id} is being run by another runner");
            return Ok(());
        };
        // Read again under the lock: another runner may have changed it,
        // or delivered all of it.
        let mut entry = match q.queue.load(id) {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        };
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
        // Programs run after the transaction of the mailboxes and files,
        // one at a time: a program cannot be undone.
        let (programs, names): (Vec<&str>, Vec<&str>) = due
            .iter()
            .map(String::as_str)
            .partition(|k| matches!(Dest::parse(k), Some(Dest::Program { .. })));
        // A notice of success returns the header only: a copy of its
        // beginning, kept for after the entry (and its message) may be
        // gone.
        let asked = entry
            .recipients
            .iter()
            .any(|r| wants_success(r.notify) && r.users.iter().any(|u| due.contains(u)));
        let head = if asked {
            let mut head = Vec::new();
            FileReader::range(&file, 0, entry.size, |pos, end| {
                format!("queued message file ends at {pos}, before {end}")
            })
            .take(HEAD_COPY)
            .read_to_end(&mut head)?;
            Some(head)
        } else {
            None
        };
        let result = if names.is_empty() {
            Ok(Partial::default())
        } else {
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
        let (mut delivered, mut left) = match result {
            Ok(Partial { delivered, left }) => (delivered, left),
            Err(f) => {
                let why = Left::Temporary(crate::queue::LastError::new(
                    super::partial::temp_code(match f.outcome {
                        Outcome::Temporary(r) => r,
                        Outcome::Delivered => TempReason::Local,
                    }),
                    &f.why,
                ));
                let left = names.iter().map(|u| (u.to_string(), why.clone())).collect();
                (Vec::new(), left)
            }
        };
        for key in programs {
            match self.run_program(q, &entry, &file, key, now) {
                None => delivered.push(key.to_string()),
                Some(why) => left.push((key.to_string(), why)),
            }
        }
        let (log_id, size) = (entry.log_id.clone(), entry.size);
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
        if let Some(head) = &head {
            self.tell_delivered_from_queue(q, &entry, &delivered, head, now);
        }
        entry.pending.retain(|p| !delivered.contains(&p.user));
        // Each one left: its next attempt, or given up.
        let mut failed: Vec<Pending> = Vec::new();
        for (user, why) in &left {
            for p in entry.pending.iter_mut().filter(|p| &p.user == user) {
                p.attempts = p.attempts.saturating_add(1);
                p.last_error = why.error().cloned();
                let next = match why {
                    Left::Temporary(_) | Left::Later => {
                        q.backoff.next_attempt(p.attempts, entry.received, now)
                    }
                    Left::Permanent(_) => None,
                };
                match next {
                    Some(t) => p.next_attempt = t,
                    None => failed.push(p.clone()),
                }
            }
        }
        if !failed.is_empty() {
            match self.notify(q, &entry, &failed, Notice::Failed, now) {
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
                    why: &why.why(),
                }
                .log();
            }
        }
        self.warn_of_delay(q, &mut entry, now);
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
}

/// Counts `entry`'s pending recipients in `sum`, and when the first is
/// due again.
fn note_pending(entry: &Entry, sum: &mut RunSummary) {
    sum.deferred += entry.pending.len();
    if let Some(t) = entry.pending.iter().map(|p| p.next_attempt).min() {
        sum.next_due = Some(sum.next_due.map_or(t, |d| d.min(t)));
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
pub(super) fn take_off(queue: &Queue, before: &Entry, delivered: &[String]) -> Result<(), Failure> {
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
pub(super) fn sender_of(entry: &Entry) -> ReversePath {
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
        // The journal names a file by its path: a pending destination is
        // taken off if its target is one of those named.
        entry
            .pending
            .retain(|p| !mailboxes.contains(&Dest::journal_name(&p.user)));
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

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::MutexGuard;
    use std::time::Duration;

    use nix::fcntl::{Flock, FlockArg};

    use super::super::RecoveryCause;
    use super::super::tests::{deliverer, envelope};
    use super::*;
    use crate::message::MessageBuf;
    use crate::queue::Backoff;
    use crate::smtp::Mailbox;

    /// A deliverer with a queue in `dir/queue`, whose lock wait is one
    /// second and which gives up after `give_up`; and the guard that keeps
    /// the test that starts the process's queue runner from seeing this
    /// test's wakes (a delivery that queues wakes it).
    fn with_queue(dir: &Path, give_up: Duration) -> (MutexGuard<'static, ()>, Deliverer) {
        let alone = crate::queue_runner::PROCESS_RUNNER_TEST
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let qdir = dir.join("queue");
        std::fs::create_dir(&qdir).unwrap();
        std::fs::set_permissions(&qdir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut d = deliverer(dir);
        d.queue = Some(QueueSetup {
            queue: Queue::open(&qdir).unwrap(),
            lock_wait: Duration::from_secs(1),
            backoff: Backoff {
                give_up,
                ..Backoff::default()
            },
            delay_warning: None,
            return_limit: 50_000,
        });
        (alone, d)
    }

    fn message(dir: &Path, text: &[u8]) -> MessageBuf {
        let mut m = MessageBuf::new(1 << 20, dir.to_path_buf());
        m.write_all(text).unwrap();
        m
    }

    /// Holds `path` locked with flock, as a mail reader does.
    fn hold(path: &Path) -> Flock<File> {
        let f = File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap()
    }

    fn count(mbox: &Path) -> usize {
        let text = std::fs::read(mbox).unwrap_or_default();
        text.split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"From "))
            .count()
    }

    fn entries(d: &Deliverer) -> Vec<Entry> {
        d.queue.as_ref().unwrap().queue.list().unwrap().entries
    }

    fn from(sender: &str) -> ReversePath {
        let (local, domain) = sender.split_once('@').unwrap();
        ReversePath::Mailbox(Mailbox {
            local: local.into(),
            domain: Some(domain.into()),
        })
    }

    /// The first test, in the library: a recipient whose mailbox
    /// is held (flock) is left to the queue, the other delivered at once,
    /// the client told 250; once the lock goes, the runner delivers the
    /// queued copy, exactly once, and the entry is gone.
    #[test]
    fn a_busy_recipient_waits_in_the_queue_and_gets_the_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, d) = with_queue(dir.path(), Duration::from_secs(3600));
        let (alice, jon) = (dir.path().join("alice"), dir.path().join("jon"));
        let held = hold(&jon);
        let msg = message(dir.path(), b"Subject: q\n\nqueued\n");
        let mut env = envelope(&["alice", "jon"]);
        env.sender = from("bob@h");
        assert_eq!(d.deliver(&env, &msg), Outcome::Delivered);
        assert_eq!(count(&alice), 1);
        assert_eq!(count(&jon), 0);
        let queued = entries(&d);
        assert_eq!(queued.len(), 1);
        let e = &queued[0];
        assert_eq!(e.pending.len(), 1);
        assert_eq!(e.pending[0].user, "jon");
        let err = e.pending[0].last_error.as_ref().unwrap();
        assert_eq!(err.code.to_string(), "4.2.0");
        assert!(err.text.contains("busy"), "{}", err.text);
        // Not due yet: not even tried (nor locked), but counted pending.
        let s = d.run_queue(&RunFilter::default());
        assert_eq!((s.entries, s.delivered, s.deferred), (0, 0, 1));
        assert!(s.next_due.is_some());
        drop(held);
        let s = d.run_queue(&RunFilter {
            all: true,
            ..RunFilter::default()
        });
        assert_eq!((s.delivered, s.deferred, s.failed), (1, 0, 0));
        assert_eq!(count(&jon), 1);
        let text = std::fs::read_to_string(&jon).unwrap();
        assert!(text.starts_with("From bob@h "), "{text}");
        assert!(text.contains("Return-Path: <bob@h>\n"), "{text}");
        assert!(text.ends_with("Subject: q\n\nqueued\n\n"), "{text}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
            0
        );
        let s = d.run_queue(&RunFilter {
            all: true,
            ..RunFilter::default()
        });
        assert_eq!(s, RunSummary::default());
        assert_eq!((count(&alice), count(&jon)), (1, 1));
    }

    /// Two runners on one entry: a run of what is due leaves an entry
    /// another runner holds; a flush waits for it (seen in /proc/locks as
    /// a waiter) and then delivers.
    #[test]
    fn a_flush_waits_for_another_runner_and_a_due_run_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, d) = with_queue(dir.path(), Duration::from_secs(3600));
        let jon = dir.path().join("jon");
        let held = hold(&jon);
        let msg = message(dir.path(), b"Subject: q\n\nx\n");
        assert_eq!(d.deliver(&envelope(&["jon"]), &msg), Outcome::Delivered);
        drop(held);
        let q = &d.queue.as_ref().unwrap().queue;
        let id = entries(&d)[0].id.clone();
        let other = q.lock_entry(&id, false).unwrap().unwrap();
        // Due now (the entry made so), yet held by the other runner.
        let mut e = q.load(&id).unwrap();
        e.pending[0].next_attempt = SystemTime::now();
        q.update(&e).unwrap();
        let s = d.run_queue(&RunFilter::default());
        assert_eq!((s.entries, s.delivered), (0, 0));
        let waiter = format!("-> FLOCK  ADVISORY  WRITE {} ", std::process::id());
        std::thread::scope(|scope| {
            let flush = scope.spawn(|| {
                d.run_queue(&RunFilter {
                    all: true,
                    ..RunFilter::default()
                })
            });
            while !std::fs::read_to_string("/proc/locks")
                .unwrap()
                .contains(&waiter)
            {
                assert!(!flush.is_finished(), "the flush did not wait");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(count(&jon), 0);
            drop(other);
            let s = flush.join().unwrap();
            assert_eq!((s.entries, s.delivered), (1, 1));
        });
        assert_eq!(count(&jon), 1);
        assert!(entries(&d).is_empty());
    }

    /// Every mailbox busy: all of the message waits in the queue, and the
    /// client still gets 250.
    #[test]
    fn every_recipient_busy_queues_the_whole_message() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, d) = with_queue(dir.path(), Duration::from_secs(3600));
        let _a = hold(&dir.path().join("alice"));
        let _j = hold(&dir.path().join("jon"));
        let msg = message(dir.path(), b"Subject: q\n\nx\n");
        assert_eq!(
            d.deliver(&envelope(&["alice", "jon"]), &msg),
            Outcome::Delivered
        );
        let q = entries(&d);
        assert_eq!(q.len(), 1);
        let users: Vec<&str> = q[0].pending.iter().map(|p| p.user.as_str()).collect();
        assert_eq!(users, ["alice", "jon"]);
        assert_eq!(q[0].sender, None);
    }

    /// A recipient given up: its sender (local) gets a delivery status
    /// notification, multipart/report, and the entry is gone; for the
    /// null sender, nobody is told.
    #[test]
    fn a_recipient_given_up_is_returned_to_its_local_sender_and_never_to_the_null_sender() {
        for (sender, bounced) in [(Some("alice@h"), true), (None, false)] {
            let dir = tempfile::tempdir().unwrap();
            let (_alone, d) = with_queue(dir.path(), Duration::ZERO);
            let jon = dir.path().join("jon");
            let _held = hold(&jon);
            let msg = message(dir.path(), b"Subject: lost\n\nnever there\n");
            let mut env = envelope(&["jon"]);
            if let Some(s) = sender {
                env.sender = from(s);
            }
            assert_eq!(d.deliver(&env, &msg), Outcome::Delivered);
            assert_eq!(entries(&d).len(), 1);
            let s = d.run_queue(&RunFilter {
                all: true,
                ..RunFilter::default()
            });
            assert_eq!((s.delivered, s.failed, s.deferred), (0, 1, 0), "{sender:?}");
            assert!(entries(&d).is_empty());
            assert_eq!(count(&jon), 0);
            let alice = std::fs::read_to_string(dir.path().join("alice")).unwrap_or_default();
            if bounced {
                assert!(alice.starts_with("From MAILER-DAEMON "), "{alice}");
                assert!(alice.contains("multipart/report"), "{alice}");
                assert!(alice.contains("Final-Recipient: rfc822; jon@h"), "{alice}");
                assert!(alice.contains("Action: failed"), "{alice}");
                assert!(alice.contains("Status: 4.2.0"), "{alice}");
                assert!(alice.contains("Subject: lost"), "{alice}");
            } else {
                assert_eq!(alice, "");
            }
        }
    }

    /// With a delay warning set, a sender whose message still waits is
    /// told once (Action: delayed), not at every run.
    #[test]
    fn a_delay_warning_goes_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, mut d) = with_queue(dir.path(), Duration::from_secs(3600));
        d.queue.as_mut().unwrap().delay_warning = Some(Duration::ZERO);
        let jon = dir.path().join("jon");
        let alice = dir.path().join("alice");
        let _held = hold(&jon);
        let msg = message(dir.path(), b"Subject: slow\n\nx\n");
        let mut env = envelope(&["jon"]);
        env.sender = from("alice@h");
        assert_eq!(d.deliver(&env, &msg), Outcome::Delivered);
        let all = RunFilter {
            all: true,
            ..RunFilter::default()
        };
        for _ in 0..2 {
            let s = d.run_queue(&all);
            assert_eq!((s.delivered, s.failed, s.deferred), (0, 0, 1));
            assert_eq!(count(&alice), 1, "one warning, not one a run");
        }
        let text = std::fs::read_to_string(&alice).unwrap();
        assert!(text.contains("Action: delayed"), "{text}");
        assert!(text.contains("Will-Retry-Until: "), "{text}");
        assert!(entries(&d)[0].warned.is_some());
        assert_eq!(count(&jon), 0);
    }

    /// NOTIFY=SUCCESS: the sender is told of the delivery (Action:
    /// delivered), at the end of DATA and from the queue alike; a
    /// recipient that did not ask is not reported.
    #[test]
    fn a_recipient_that_asked_is_reported_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, d) = with_queue(dir.path(), Duration::from_secs(3600));
        let (alice, jon) = (dir.path().join("alice"), dir.path().join("jon"));
        let success = Some(crate::smtp::Notify::On {
            success: true,
            failure: true,
            delay: false,
        });
        let msg = message(dir.path(), b"Subject: hi\n\nx\n");
        let mut env = envelope(&["jon"]);
        env.sender = from("alice@h");
        env.recipients[0].notify = success;
        assert_eq!(d.deliver(&env, &msg), Outcome::Delivered);
        assert_eq!((count(&jon), count(&alice)), (1, 1));
        let text = std::fs::read_to_string(&alice).unwrap();
        assert!(text.contains("Action: delivered"), "{text}");
        assert!(text.contains("Subject: hi"), "{text}");
        // From the queue.
        let held = hold(&jon);
        assert_eq!(d.deliver(&env, &msg), Outcome::Delivered);
        assert_eq!((count(&jon), count(&alice)), (1, 1));
        drop(held);
        let s = d.run_queue(&RunFilter {
            all: true,
            ..RunFilter::default()
        });
        assert_eq!(s.delivered, 1);
        assert_eq!((count(&jon), count(&alice)), (2, 2));
        // Not asked: no notice.
        env.recipients[0].notify = None;
        assert_eq!(d.deliver(&env, &msg), Outcome::Delivered);
        assert_eq!((count(&jon), count(&alice)), (3, 2));
    }

    /// A deliverer on `dir`'s existing spool and queue, with journals of
    /// its own: another process, after a crash of the first.
    fn another(dir: &Path) -> Deliverer {
        let mut d = deliverer(dir);
        d.queue = Some(QueueSetup {
            queue: Queue::open(&dir.join("queue")).unwrap(),
            lock_wait: Duration::from_secs(1),
            backoff: Backoff::default(),
            delay_warning: None,
            return_limit: 50_000,
        });
        d
    }

    /// Appends to `victim`'s mailbox go through, and then the delivering
    /// thread dies (a panic once the whole append is written, before its
    /// sync): as a process killed there leaves it, the journal and the
    /// dotlock in place.
    fn dies_after_appending_to(victim: &'static str) -> crate::deliver::AppendWriter {
        struct Dies<'f>(&'f File);
        impl Write for Dies<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self.0).write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Drop for Dies<'_> {
            fn drop(&mut self) {
                panic!("killed after the append");
            }
        }
        crate::deliver::AppendWriter::new(move |path, file| {
            if path.ends_with(victim) {
                Box::new(Dies(file))
            } else {
                Box::new(file)
            }
        })
    }

    /// Killed after its appends, before it made the queue entry: the
    /// delivery had not finished (the entry is its commit point), so
    /// recovery undoes the append to the free mailbox and leaves no entry.
    #[test]
    fn a_crash_before_the_entry_is_made_undoes_the_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, mut d) = with_queue(dir.path(), Duration::from_secs(3600));
        let alice = dir.path().join("alice");
        std::fs::write(&alice, b"").unwrap();
        d.append_writer = dies_after_appending_to("alice");
        let held = hold(&dir.path().join("jon"));
        let msg = message(dir.path(), b"Subject: q\n\nx\n");
        let env = envelope(&["alice", "jon"]);
        let died = std::thread::scope(|s| s.spawn(|| d.deliver(&env, &msg)).join().is_err());
        assert!(died);
        assert_eq!(count(&alice), 1, "the append was written");
        drop(held);
        let d2 = another(dir.path());
        let far = Instant::now() + Duration::from_secs(60);
        d2.recover_spool(far, RecoveryCause::Start).unwrap();
        assert_eq!(std::fs::read(&alice).unwrap(), b"", "undone");
        assert!(entries(&d2).is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
            0
        );
    }

    /// The runner killed after its append, before it took the recipient
    /// off the entry: recovery finds the append whole and takes the
    /// recipient off (rolls the delivery forward), so that no later run
    /// delivers it twice.
    #[test]
    fn a_crash_after_the_runners_append_is_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, mut d) = with_queue(dir.path(), Duration::from_secs(3600));
        let jon = dir.path().join("jon");
        let held = hold(&jon);
        let msg = message(dir.path(), b"Subject: q\n\nx\n");
        assert_eq!(
            d.deliver(&envelope(&["alice", "jon"]), &msg),
            Outcome::Delivered
        );
        drop(held);
        assert_eq!(entries(&d)[0].pending.len(), 1);
        d.append_writer = dies_after_appending_to("jon");
        let all = RunFilter {
            all: true,
            ..RunFilter::default()
        };
        let died = std::thread::scope(|s| s.spawn(|| d.run_queue(&all)).join().is_err());
        assert!(died);
        assert_eq!(count(&jon), 1);
        assert_eq!(entries(&d)[0].pending.len(), 1, "not yet taken off");
        let d2 = another(dir.path());
        let far = Instant::now() + Duration::from_secs(60);
        d2.recover_spool(far, RecoveryCause::Start).unwrap();
        assert!(entries(&d2).is_empty(), "taken off by recovery");
        assert_eq!(d2.run_queue(&all), RunSummary::default());
        assert_eq!(count(&jon), 1, "once");
        assert!(!dir.path().join("jon.lock").exists());
    }

    /// A full queue filesystem: when the entry cannot be made, nothing is
    /// written anywhere and the client gets the 4xx of a full disk.
    #[test]
    fn no_entry_written_means_no_delivery_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (_alone, d) = with_queue(dir.path(), Duration::from_secs(3600));
        let alice = dir.path().join("alice");
        std::fs::write(&alice, b"old\n").unwrap();
        let _held = hold(&dir.path().join("jon"));
        // The queue directory made unusable under the store: a file by
        // the entry's name cannot be created in a directory we cannot
        // write (root writes anyway: then a directory that is gone).
        let qdir = dir.path().join("queue");
        std::fs::remove_dir(&qdir).unwrap();
        let msg = message(dir.path(), b"Subject: q\n\nx\n");
        let out = d.deliver(&envelope(&["alice", "jon"]), &msg);
        assert!(matches!(out, Outcome::Temporary(_)), "{out:?}");
        assert_eq!(std::fs::read(&alice).unwrap(), b"old\n");
        assert!(!qdir.exists());
    }
}
