//! Delivering one accepted message to the mailboxes of its recipients.
//!
//! The boundary between the protocol and the mail spool is this one call,
//! [`Deliverer::deliver`]`(envelope, message) -> Outcome`: typed in, typed
//! out, so that delivery can later move behind a process boundary without
//! touching the protocol code. The outcome is temporary or permanent, and
//! [`crate::smtp::Session::delivered`] alone turns it into a reply code.
//!
//! Each mailbox append is all-or-nothing ([`crate::mbox::append`]). Several
//! recipients are written one after the other in a fixed order (sorted by
//! user name, duplicates removed); making the whole set all-or-nothing is
//! the next step (issue 2/4).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::mbox::{self, MboxError, MboxOptions};
use crate::smtp::session::{Outcome, PermReason, TempReason, printable};
use crate::smtp::{Envelope, ReversePath};
use crate::sys;
use crate::users::Recipients;

/// Delivers messages into mbox files under one spool directory.
pub struct Deliverer {
    pub spool: PathBuf,
    pub hostname: String,
    pub mbox: MboxOptions,
    pub recipients: Arc<Recipients>,
    /// The longest a whole delivery may take, lock waits included (RFC
    /// 5321 4.5.3.2.6: the client waits 10 minutes for the final reply).
    pub deadline: Duration,
}

/// Holds SIGTERM, SIGINT and SIGHUP off the delivering thread while a
/// delivery runs, so that a signal cannot end the process between a write
/// and its rollback. In the daemon they are blocked already (the accept
/// loop reads them from a signalfd); under inetd this is what protects the
/// append. A signal that arrives meanwhile is delivered when this drops.
struct HoldSignals(Option<SigSet>);

impl HoldSignals {
    fn new() -> Self {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.add(Signal::SIGHUP);
        HoldSignals(set.thread_swap_mask(SigmaskHow::SIG_BLOCK).ok())
    }
}

impl Drop for HoldSignals {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            let _ = old.thread_set_mask();
        }
    }
}

impl Deliverer {
    /// Appends `message` (LF line ends, as the DATA reader produced it) to
    /// the mailbox of every recipient of `env`, and logs one line per
    /// recipient.
    pub fn deliver(&self, env: &Envelope, message: &[u8]) -> Outcome {
        let _held = HoldSignals::new();
        let deadline = Instant::now() + self.deadline;
        let now = sys::localtime(SystemTime::now());
        let from_line = mbox::from_line(&env.sender, &now);
        let mut users: Vec<&str> = env.recipients.iter().map(|r| r.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let single = match env.recipients.as_slice() {
            [one] => Some(one.path.to_string()),
            _ => None,
        };
        let headers = trace_headers(
            &env.sender,
            &env.helo,
            env.esmtp,
            env.peer,
            &self.hostname,
            &env.id,
            single.as_deref(),
            &now.rfc5322(),
        );
        let mut outcome = Outcome::Delivered;
        for name in users {
            let result = self.deliver_one(name, deadline, &from_line, headers.as_bytes(), message);
            let status = match &result {
                Ok(()) => "delivered".to_string(),
                Err(o) => format!("deferred ({})", describe(o)),
            };
            log::info!(
                target: "postie::maillog",
                "{}: from=<{}> to=<{}> size={} status={}",
                env.id,
                sender_for_log(&env.sender),
                name,
                env.size,
                status
            );
            if let Err(o) = result {
                if outcome == Outcome::Delivered {
                    outcome = o;
                }
            }
        }
        outcome
    }

    fn deliver_one(
        &self,
        name: &str,
        deadline: Instant,
        from_line: &str,
        headers: &[u8],
        message: &[u8],
    ) -> Result<(), Outcome> {
        // Lock waits are cut to what is left of the whole delivery's time.
        let left = deadline.saturating_duration_since(Instant::now());
        let opts = MboxOptions {
            lock_timeout: self.mbox.lock_timeout.min(left),
            ..self.mbox.clone()
        };
        let user = match self.recipients.user(name) {
            Ok(Some(u)) => u,
            Ok(None) => return Err(Outcome::Permanent(PermReason::UnknownUser)),
            Err(e) => {
                log::warn!("lookup of {name} failed: {}", e.0);
                return Err(Outcome::Temporary(TempReason::LookupFailed));
            }
        };
        let path = self.spool.join(&user.name);
        match mbox::append(&path, &user, &opts, from_line, headers, message) {
            Ok(_) => Ok(()),
            Err(e) => {
                log::warn!("{}: {}", path.display(), mbox_error_text(&e));
                Err(Outcome::Temporary(match e {
                    MboxError::LockTimeout => TempReason::LockTimeout,
                    MboxError::NoSpace => TempReason::NoSpace,
                    MboxError::Quota => TempReason::Quota,
                    MboxError::Unsafe(_) | MboxError::Io(_) => TempReason::Local,
                }))
            }
        }
    }
}

fn mbox_error_text(e: &MboxError) -> String {
    match e {
        MboxError::LockTimeout => "lock not obtained in time".into(),
        MboxError::NoSpace => "no space left on device".into(),
        MboxError::Quota => "quota exceeded".into(),
        MboxError::Unsafe(why) => format!("refusing to write: {why}"),
        MboxError::Io(e) => e.to_string(),
    }
}

fn describe(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered => "delivered",
        Outcome::Temporary(TempReason::LockTimeout) => "mailbox lock timeout",
        Outcome::Temporary(TempReason::NoSpace) => "disk full",
        Outcome::Temporary(TempReason::Quota) => "over quota",
        Outcome::Temporary(TempReason::LookupFailed) => "user lookup failed",
        Outcome::Temporary(TempReason::Local) => "local error",
        Outcome::Permanent(PermReason::UnknownUser) => "user unknown",
    }
}

fn sender_for_log(s: &ReversePath) -> String {
    match s {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    }
}

/// The `Return-Path:` and `Received:` header lines (RFC 5321 4.4), LF
/// ended. Everything that came from the client is reduced to printable
/// ASCII first, so no CR, LF or control character can reach a header.
#[allow(clippy::too_many_arguments)]
pub fn trace_headers(
    sender: &ReversePath,
    helo: &str,
    esmtp: bool,
    peer: Option<IpAddr>,
    hostname: &str,
    id: &str,
    for_rcpt: Option<&str>,
    date: &str,
) -> String {
    let mut h = String::with_capacity(256);
    let rp = match sender {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => clean(&m.to_string()),
    };
    let _ = writeln!(h, "Return-Path: <{rp}>");
    let from = match peer {
        Some(IpAddr::V6(ip)) => format!("{} ([IPv6:{ip}])", clean(helo)),
        Some(ip) => format!("{} ([{ip}])", clean(helo)),
        None => format!("{} (local)", clean(helo)),
    };
    let with = if esmtp { "ESMTP" } else { "SMTP" };
    let _ = write!(
        h,
        "Received: from {from}\n\tby {} (postie) with {with} id {id}",
        clean(hostname)
    );
    match for_rcpt {
        Some(r) => {
            let _ = write!(h, "\n\tfor <{}>; {date}\n", clean(r));
        }
        None => {
            let _ = writeln!(h, ";\n\t{date}");
        }
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
    use crate::smtp::Mailbox;

    #[test]
    fn trace_headers_shape() {
        let s = ReversePath::Mailbox(Mailbox {
            local: "jon".into(),
            domain: Some("frogbog".into()),
        });
        let h = trace_headers(
            &s,
            "frogbog.localdomain",
            false,
            Some("127.0.0.1".parse().unwrap()),
            "razorback",
            "A1.1",
            Some("jon@razorback"),
            "Sat, 28 Nov 2026 16:59:45 +0000",
        );
        assert_eq!(
            h,
            "Return-Path: <jon@frogbog>\n\
             Received: from frogbog.localdomain ([127.0.0.1])\n\
             \tby razorback (postie) with SMTP id A1.1\n\
             \tfor <jon@razorback>; Sat, 28 Nov 2026 16:59:45 +0000\n"
        );
    }

    #[test]
    fn nothing_from_the_client_breaks_a_header() {
        let h = trace_headers(
            &ReversePath::Null,
            "evil\r\nX-Injected: yes",
            true,
            Some("::1".parse().unwrap()),
            "h",
            "A1.2",
            None,
            "date",
        );
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
}
