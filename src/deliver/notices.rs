//! The notices a delivery sends its sender (RFC 3464 reports made by
//! [`crate::queue::notice`]): a failure or a give-up from the queue, a
//! delay warning (`delay-warning`), and a success for a recipient that
//! asked (NOTIFY=SUCCESS), at the end of DATA or from the queue. Each is
//! a message of its own, delivered with the null sender to the sender
//! when local, else to postmaster ([`Deliverer::send_notice`]); as any
//! message, it may wait in the queue.
//!
//! Apart from `queued.rs`, which decides when a notice is due: this
//! file only makes and sends them.

use std::io::{self, Read};
use std::time::SystemTime;

use super::partial::new_entry;
use super::{Deliverer, QueueSetup};
use crate::dsn::DsnError;
use crate::message::{FileReader, MessageSource};
use crate::queue::{
    Entry, Notice, NoticeContext, NoticeError, Notification, Pending, Reported, notice,
};
use crate::recipients::Resolution;
use crate::smtp::{Envelope, Mailbox, Outcome, ReversePath};
use crate::sys;

impl Deliverer {
    /// Tells the sender of the message of `env` (delivered at the end of
    /// DATA, its trace headers `headers`) that the users `delivered` have
    /// it: those whose recipient asked (NOTIFY=SUCCESS). A notice that
    /// cannot be sent is logged and not tried again: the mail itself is
    /// delivered.
    pub(super) fn tell_delivered(
        &self,
        env: &Envelope,
        delivered: &[String],
        headers: &str,
        message: &dyn MessageSource,
    ) {
        let now = SystemTime::now();
        let backoff = self.queue.as_ref().map(|q| q.backoff).unwrap_or_default();
        let mut entry = new_entry(env, headers.len() as u64, &[], now, &backoff);
        entry.size = headers.len() as u64 + message.len();
        let which = delivered_pending(&entry, delivered, now);
        let original = match message.reader() {
            Ok(body) => io::BufReader::new(headers.as_bytes().chain(body)),
            Err(e) => {
                log::warn!("{}: no notice of delivery: {e}", env.id);
                return;
            }
        };
        let limit = self
            .queue
            .as_ref()
            .map_or(crate::dsn::DEFAULT_RETURN_LIMIT, |q| q.return_limit);
        let id = format!("{}.{:016x}", env.id, sys::random_u64());
        match self.send_report(&entry, &id, &which, Notice::Delivered, now, original, limit) {
            Ok(to) => log::info!("{}: notice of delivery: notice={to}", env.id),
            Err(e) => log::warn!("{}: no notice of delivery: {e}", env.id),
        }
    }

    /// [`tell_delivered`](Self::tell_delivered) for the users `delivered`
    /// from `entry` by the runner (`head`: the beginning of its message).
    pub(super) fn tell_delivered_from_queue(
        &self,
        q: &QueueSetup,
        entry: &Entry,
        delivered: &[String],
        head: &[u8],
        now: SystemTime,
    ) {
        let asked: Vec<String> = entry
            .recipients
            .iter()
            .filter(|r| wants_success(r.notify))
            .flat_map(|r| r.users.iter())
            .filter(|u| delivered.contains(u))
            .cloned()
            .collect();
        if asked.is_empty() {
            return;
        }
        let which = delivered_pending(entry, &asked, now);
        let id = format!("{}.{:016x}", entry.id, sys::random_u64());
        match self.send_report(
            entry,
            &id,
            &which,
            Notice::Delivered,
            now,
            head,
            q.return_limit,
        ) {
            Ok(to) => log::info!("{}: notice of delivery: notice={to}", entry.log_id),
            Err(e) => log::warn!("{}: no notice of delivery: {e}", entry.log_id),
        }
    }

    /// Tells the sender that `entry` is delayed, once (`delay-warning`):
    /// at its first run after that long in the queue with recipients
    /// still pending, as sendmail's `Timeout.queuewarn` and Postfix's
    /// `delay_warning_time` do.
    pub(super) fn warn_of_delay(&self, q: &QueueSetup, entry: &mut Entry, now: SystemTime) {
        let Some(after) = q.delay_warning else {
            return;
        };
        let due = entry.received.checked_add(after).is_some_and(|t| t <= now);
        if entry.warned.is_some() || entry.pending.is_empty() || !due {
            return;
        }
        let kind = Notice::Delayed {
            retry_until: entry.received.checked_add(q.backoff.give_up),
        };
        let pending = entry.pending.clone();
        match self.notify(q, entry, &pending, kind, now) {
            Ok(to) => {
                log::info!("{}: delay warning: notice={to}", entry.log_id);
                entry.warned = Some(now);
            }
            Err(e) => log::warn!(
                "queue: entry {}: cannot send the delay warning: {e}",
                entry.id
            ),
        }
    }

    /// Tells the sender of `entry` of `which` (pending recipients, last
    /// tried at `now`: failed for good or given up, or delayed), as
    /// [`notice`] decides; returns whom the notice went to (`none`: nobody
    /// is to be told, as for the null sender). `Err`: it could not be sent
    /// now.
    pub(super) fn notify(
        &self,
        q: &QueueSetup,
        entry: &Entry,
        which: &[Pending],
        kind: Notice,
        now: SystemTime,
    ) -> Result<String, String> {
        let file = q.queue.open_message(&entry.id).map_err(|e| e.to_string())?;
        let original = io::BufReader::new(FileReader::range(&file, 0, entry.size, |pos, end| {
            format!("queued message file ends at {pos}, before {end}")
        }));
        let id = format!("{}.{:016x}", entry.id, sys::random_u64());
        self.send_report(entry, &id, which, kind, now, original, q.return_limit)
    }

    /// [`notice`] of `kind` about `which` of `entry` (whose message, trace
    /// headers first, `original` reads) made and sent; `message_id` is the
    /// notice's own.
    #[allow(clippy::too_many_arguments)]
    fn send_report(
        &self,
        entry: &Entry,
        message_id: &str,
        which: &[Pending],
        kind: Notice,
        now: SystemTime,
        original: impl io::BufRead,
        return_limit: u64,
    ) -> Result<String, String> {
        let reported: Vec<Reported<'_>> = which
            .iter()
            .map(|p| Reported {
                pending: p,
                last_attempt: Some(now),
            })
            .collect();
        let is_local = |d: &str| self.recipients.is_local_domain(d);
        let ctx = NoticeContext {
            hostname: &self.hostname,
            now: sys::localtime(now),
            local_time: &sys::localtime,
            is_local_domain: &is_local,
            return_limit,
            message_id,
        };
        match notice(entry, &reported, kind, &ctx, original) {
            Ok(None) => Ok("none".into()),
            Ok(Some(n)) => self.send_notice(&n, &entry.log_id),
            Err(NoticeError::Dsn(DsnError::Io(e))) => Err(e.to_string()),
            // Not to be mended by trying again: said, and not sent.
            Err(e) => {
                log::error!("{}: no notice: {e}", entry.log_id);
                Ok("none".into())
            }
        }
    }

    /// Delivers notice `n` about the message of `log_id` with the null
    /// sender (RFC 3461 6.1: no notice answers it), to its recipient or,
    /// if that is no local user, to `postmaster`; as any message, it may
    /// wait in the queue. Returns whom it went to.
    fn send_notice(&self, n: &Notification, log_id: &str) -> Result<String, String> {
        let postmaster = Mailbox {
            local: "postmaster".into(),
            domain: None,
        };
        let (to, users) = match self.recipients.resolve(&n.to) {
            Resolution::Local(users) => (n.to.clone(), users),
            Resolution::TempFail(e) => return Err(e),
            Resolution::Unknown | Resolution::NotLocal => {
                match self.recipients.resolve(&postmaster) {
                    Resolution::Local(users) => (postmaster, users),
                    Resolution::TempFail(e) => return Err(e),
                    _ => return Err("postmaster is no local user".into()),
                }
            }
        };
        let env = Envelope {
            id: format!("{log_id}.notice"),
            helo: self.hostname.clone(),
            via: crate::smtp::Via::default(),
            peer: None,
            sender: ReversePath::Null,
            recipients: vec![crate::smtp::Recipient {
                path: to.clone(),
                users: users.into_iter().map(|u| u.name).collect(),
                notify: None,
                orcpt: None,
            }],
            body: None,
            size: n.message.len() as u64,
            submitter: None,
            ret: None,
            envid: None,
        };
        match self.deliver(&env, &Bytes(&n.message)) {
            Outcome::Delivered => Ok(to.to_string()),
            Outcome::Temporary(r) => Err(format!("its delivery failed ({r:?})")),
        }
    }
}

/// A message in memory, as a notice is made.
struct Bytes<'a>(&'a [u8]);

impl MessageSource for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0))
    }
}

/// How much of a queued message a notice of success may need: its
/// header, which a notice returns at most 100 KiB of (`dsn`).
pub(super) const HEAD_COPY: u64 = 128 * 1024;

/// Whether a recipient's NOTIFY asks for a notice of success.
pub(super) fn wants_success(notify: Option<crate::smtp::Notify>) -> bool {
    Notice::Delivered.wanted_by(notify)
}

/// `delivered` (users of `entry` just delivered to) as the pending users
/// a notice of success reports, one for each of their recipients.
fn delivered_pending(entry: &Entry, delivered: &[String], now: SystemTime) -> Vec<Pending> {
    let mut which = Vec::new();
    for (i, r) in entry.recipients.iter().enumerate() {
        for u in r.users.iter().filter(|u| delivered.contains(u)) {
            which.push(Pending {
                rcpt: i,
                user: u.clone(),
                attempts: 0,
                next_attempt: now,
                last_error: None,
            });
        }
    }
    which
}
