//! What the queue tells a message's sender, and whom it tells: given an
//! [`Entry`] and some of its users that failed for good, are still
//! delayed, or were delivered, [`notice`] makes the delivery status
//! notification (the bytes of a complete message, by [`crate::dsn`]) and
//! names the mailbox it goes to, or says that nobody is to be told.
//!
//! Pure: the clock, the host name, the local domains and the original
//! message come in from the caller (the queue runner), so that every rule
//! here is tested on values alone.
//!
//! The rules, each where it is applied:
//!
//! * never a notification for the null sender (RFC 5321 6.1: "if this
//!   address is null (`<>`), the receiver-SMTP MUST NOT send a
//!   notification"): no bounce answers a bounce;
//! * each recipient's RFC 3461 NOTIFY decides whether it is reported
//!   ([`Notice::wanted_by`]);
//! * whom: the envelope sender when it is local (no domain, or a domain
//!   [`NoticeContext::is_local_domain`] calls local); any other sender's
//!   notification goes to `postmaster` at [`NoticeContext::hostname`].
//!   postie has no outbound transport yet, so a remote sender cannot be
//!   reached, and the report must still reach a person: issue 10 ("postie
//!   7: a queue") asks for exactly this. The notification's `To:` header
//!   still names the sender, so that the postmaster sees whose it was;
//! * what each block says ([`report_of`]): `Final-Recipient` is the
//!   address the client gave in RCPT, `Original-Recipient` its ORCPT when
//!   it gave one, the status the user's last error's code, the diagnostic
//!   that error's text;
//! * what is returned of the message (RET, size): [`crate::dsn::generate`]
//!   decides.

use std::fmt;
use std::io::BufRead;
use std::time::SystemTime;

use super::record::{Entry, Pending, Recipient};
use super::status::LastError;
use crate::dsn::{
    self, Action, Class, Diagnostic, DsnError, OriginalEnvelope, OriginalRecipient,
    RecipientReport, Report, Status,
};
use crate::queue::{Notify, Ret};
use crate::smtp::address::parse_path;
use crate::smtp::{EnvId, Mailbox, Orcpt};
use crate::sys::LocalTime;

/// What happened to the users a notification reports: the RFC 3461
/// NOTIFY condition (FAILURE, DELAY, SUCCESS) it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Given up: a permanent failure, or the give-up time passed.
    Failed,
    /// Still waiting in the queue; retried until `retry_until` (the
    /// entry's arrival plus the give-up time), when known.
    Delayed { retry_until: Option<SystemTime> },
    /// Delivered, for a recipient that asked for NOTIFY=SUCCESS.
    Delivered,
}

impl Notice {
    /// Whether a recipient with this NOTIFY wants to hear of this notice.
    ///
    /// RFC 3461 4.1: NEVER asks for no notification at all, a list of
    /// SUCCESS, FAILURE and DELAY for those conditions only; the absence
    /// of NOTIFY "may be interpreted as either NOTIFY=FAILURE or
    /// NOTIFY=FAILURE,DELAY". postie takes the latter, as sendmail and
    /// Postfix do (Postfix's `dsn_mask.h`: "Postfix chooses the latter"):
    /// failures and delays are reported, a success never unless asked.
    pub fn wanted_by(&self, notify: Option<Notify>) -> bool {
        match notify {
            None => !matches!(self, Notice::Delivered),
            Some(Notify::Never) => false,
            Some(Notify::On {
                success,
                failure,
                delay,
            }) => match self {
                Notice::Failed => failure,
                Notice::Delayed { .. } => delay,
                Notice::Delivered => success,
            },
        }
    }
}

/// One user a notification is about: a user of the entry (as
/// [`Entry::pending`] holds it, its last error included; a delivered user
/// as it was before it left the list) and when it was last tried.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    pub pending: &'a Pending,
    /// `Last-Attempt-Date` (RFC 3464 2.3.7), if it was tried.
    pub last_attempt: Option<SystemTime>,
}

/// What [`notice`] takes from the world.
pub struct NoticeContext<'a> {
    /// This host's name: `Reporting-MTA`, `MAILER-DAEMON@HOST`, and the
    /// domain of `postmaster` for a remote sender.
    pub hostname: &'a str,
    /// The notification's own `Date:`.
    pub now: LocalTime,
    /// How a time is written in the report (`crate::sys::localtime`).
    pub local_time: &'a dyn Fn(SystemTime) -> LocalTime,
    /// Whether a domain is one of this host's (`LocalDomains::is_local`).
    pub is_local_domain: &'a dyn Fn(&str) -> bool,
    /// The largest message returned whole ([`dsn::DEFAULT_RETURN_LIMIT`]).
    pub return_limit: u64,
    /// The left part of the notification's Message-ID: unique.
    pub message_id: &'a str,
}

/// A notification made: the message, to be delivered with the null
/// sender (RFC 3461 6.1), and the one mailbox it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub to: Mailbox,
    /// A complete message, LF line ends.
    pub message: Vec<u8>,
}

/// Why no notification was made.
#[derive(Debug)]
pub enum NoticeError {
    /// A reported user names a recipient the entry does not have.
    NoSuchRecipient(usize),
    Dsn(DsnError),
}

impl fmt::Display for NoticeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoticeError::NoSuchRecipient(i) => write!(f, "no recipient {i} in the entry"),
            NoticeError::Dsn(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for NoticeError {}

impl From<DsnError> for NoticeError {
    fn from(e: DsnError) -> Self {
        NoticeError::Dsn(e)
    }
}

/// The notification of `kind` about the users `which` of `entry`, whose
/// message (`message`, as the queue holds it) is returned whole or by its
/// header as [`dsn::generate`] decides; `None` when nobody is to be told:
/// a null sender, or no user in `which` whose recipient asked for it.
///
/// A failed or delayed user is one block of the report: its status and
/// its reason are its own, and postie's delivery errors name the mailbox
/// ("mailbox alice: ..."), so that of two users behind one alias the
/// reader sees which failed and why. Its `Final-Recipient` is the address
/// the client gave in RCPT, not the local user: RFC 3464 2.3.2 wants "the
/// mailbox address of the recipient (from the transport envelope), as it
/// was when the Reporting MTA accepted the message for delivery", it is
/// the address the sender wrote and can recognise, and it is sendmail's
/// classic behaviour (Postfix writes the expanded address instead). A
/// delivered recipient is one block however many of its users are
/// reported: `delivered`, or `expanded` for an alias of several users
/// (RFC 3464 2.3.3).
pub fn notice<R: BufRead>(
    entry: &Entry,
    which: &[Reported<'_>],
    kind: Notice,
    ctx: &NoticeContext<'_>,
    message: R,
) -> Result<Option<Notification>, NoticeError> {
    let Some(sender) = entry.sender.as_deref() else {
        return Ok(None);
    };
    let mut recipients = Vec::new();
    let mut reported_rcpts = Vec::new();
    for r in which {
        let index = r.pending.rcpt;
        let rcpt = entry
            .recipients
            .get(index)
            .ok_or(NoticeError::NoSuchRecipient(index))?;
        if !kind.wanted_by(rcpt.notify) {
            continue;
        }
        if kind == Notice::Delivered {
            if reported_rcpts.contains(&index) {
                continue;
            }
            reported_rcpts.push(index);
        }
        recipients.push(report_of(rcpt, r, kind, ctx));
    }
    if recipients.is_empty() {
        return Ok(None);
    }
    let sender = mailbox_of(sender);
    let to = match &sender.domain {
        Some(d) if !(ctx.is_local_domain)(d) => Mailbox {
            local: "postmaster".into(),
            domain: Some(ctx.hostname.into()),
        },
        _ => sender.clone(),
    };
    let report = Report {
        reporting_mta: ctx.hostname.into(),
        arrival_date: (ctx.local_time)(entry.received),
        envelope: OriginalEnvelope {
            sender,
            envid: entry.envid.as_deref().map(envid),
            ret: entry.ret.map(|r| match r {
                Ret::Full => dsn::Ret::Full,
                Ret::Hdrs => dsn::Ret::Hdrs,
            }),
        },
        recipients,
        message_id: ctx.message_id.into(),
        date: ctx.now,
        return_limit: ctx.return_limit,
    };
    let message = dsn::generate(&report, message)?;
    Ok(Some(Notification { to, message }))
}

/// The block of the report for one user of `rcpt`.
fn report_of(
    rcpt: &Recipient,
    r: &Reported<'_>,
    kind: Notice,
    ctx: &NoticeContext<'_>,
) -> RecipientReport {
    let error = r.pending.last_error.as_ref();
    let action = match kind {
        Notice::Failed => Action::Failed,
        Notice::Delayed { retry_until } => Action::Delayed {
            will_retry_until: retry_until.map(ctx.local_time),
        },
        Notice::Delivered if rcpt.users.len() > 1 => Action::Expanded,
        Notice::Delivered => Action::Delivered,
    };
    let diagnostic = match kind {
        Notice::Delivered => None,
        _ => error.map(|e| Diagnostic::Local(e.text.clone())),
    };
    RecipientReport {
        final_recipient: mailbox_of(&rcpt.address),
        original_recipient: rcpt.orcpt.as_deref().map(original_recipient),
        action,
        status: status_of(kind, error),
        diagnostic,
        last_attempt: r.last_attempt.map(ctx.local_time),
    }
}

/// The `Status` of a reported user.
///
/// A failure reports its last error's code: 5.x.x for a permanent
/// failure, and for a give-up the last temporary error's 4.x.x, as Postfix
/// writes an expired recipient (`Action: failed`, the deferral's status;
/// RFC 3463 2: class 4 is a temporary condition that "has caused
/// abandonment or delay"; 3.5, X.4.7 "Delivery time expired": "If
/// possible, the code for the actual problem found when delivery was
/// attempted should be returned rather than this code"). A failure with
/// no error recorded is 5.0.0, as Postfix's bounce log reads a failure
/// without a status: the runner, which knows a give-up from a permanent
/// failure, hands a user given up before any attempt in with the error
/// 4.4.7. A delay is its last error's 4.x.x, or 4.0.0 (Postfix's default
/// for a deferral); a delivery 2.0.0.
fn status_of(kind: Notice, error: Option<&LastError>) -> Status {
    let code = |class, subject, detail| {
        Status::new(class, subject, detail).expect("subject and detail under 1000")
    };
    let last = error.map(|e| e.code);
    match kind {
        Notice::Failed => last
            .filter(|c| c.class() != Class::Success)
            .unwrap_or_else(|| code(Class::Permanent, 0, 0)),
        Notice::Delayed { .. } => last
            .filter(|c| c.class() == Class::Transient)
            .unwrap_or_else(|| code(Class::Transient, 0, 0)),
        Notice::Delivered => code(Class::Success, 0, 0),
    }
}

/// An address as the entry holds it (the SMTP form without brackets) as
/// a mailbox. What the session accepted parses again; anything else is
/// split at its last `@`, so that a report is never lost to a parser.
fn mailbox_of(address: &str) -> Mailbox {
    if let Ok((Some(m), "")) = parse_path(&format!("<{address}>")) {
        return m;
    }
    match address.rsplit_once('@') {
        Some((local, domain)) => Mailbox {
            local: local.into(),
            domain: Some(domain.into()),
        },
        None => Mailbox {
            local: address.into(),
            domain: None,
        },
    }
}

/// ORCPT as given (`addr-type;xtext`, RFC 3461 4.2) as the report's
/// `Original-Recipient`: the type, and the address decoded (the SMTP
/// side checked it; one that is not xtext is taken as it is, and the
/// report cleans whatever it writes).
fn original_recipient(orcpt: &str) -> OriginalRecipient {
    match Orcpt::parse(orcpt) {
        Ok(o) => OriginalRecipient {
            addr_type: o.addr_type().into(),
            address: o.address(),
        },
        Err(_) => {
            let (addr_type, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            OriginalRecipient {
                addr_type: addr_type.trim().into(),
                address: address.trim().into(),
            }
        }
    }
}

/// ENVID as given (xtext, RFC 3461 4.4), decoded.
fn envid(given: &str) -> String {
    EnvId::parse(given).map_or_else(|_| given.to_string(), |e| e.decoded())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::queue::testutil;

    const RECEIVED: u64 = 1_764_900_000; // Fri, 5 Dec 2025 02:00:00 UTC
    const HOST: &str = "razorback.example";
    const MESSAGE: &str = "From: jon@frogbog\nSubject: hi\n\nhello\n";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// `t` in UTC: a clock of the test's own, independent of TZ.
    fn utc(t: SystemTime) -> LocalTime {
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        LocalTime {
            year,
            month,
            day,
            hour: (rest / 3600) as u32,
            minute: (rest / 60 % 60) as u32,
            second: (rest % 60) as u32,
            weekday: ((days + 4).rem_euclid(7)) as u32,
            utc_offset: 0,
        }
    }

    fn local(domain: &str) -> bool {
        ["razorback.example", "localhost"].contains(&domain.to_ascii_lowercase().as_str())
    }

    fn ctx() -> NoticeContext<'static> {
        NoticeContext {
            hostname: HOST,
            now: utc(at(RECEIVED + 3600)),
            local_time: &utc,
            is_local_domain: &local,
            return_limit: dsn::DEFAULT_RETURN_LIMIT,
            message_id: "20251205030000.notice.1",
        }
    }

    /// The fixture's entry, from a local sender: `staff` (jon and alice)
    /// and `bob@razorback.example`, every user pending with `error`.
    fn entry(error: Option<&str>) -> Entry {
        let mut e = testutil::entry(at(RECEIVED));
        e.sender = Some("jon@Razorback.example".into());
        e.recipients.push(Recipient {
            address: "bob@razorback.example".into(),
            notify: None,
            orcpt: None,
            users: vec!["bob".into()],
        });
        let last_error = error.map(|e| {
            let (code, text) = e.split_once(' ').unwrap();
            LastError::new(Status::parse(code).unwrap(), text)
        });
        e.pending = [(0, "jon"), (0, "alice"), (1, "bob")]
            .into_iter()
            .map(|(rcpt, user)| Pending {
                rcpt,
                user: user.into(),
                attempts: 3,
                next_attempt: at(RECEIVED + 7200),
                last_error: last_error
                    .clone()
                    .map(|e| LastError::new(e.code, &format!("mailbox {user}: {}", e.text))),
            })
            .collect();
        e
    }

    fn all(e: &Entry) -> Vec<Reported<'_>> {
        e.pending
            .iter()
            .map(|p| Reported {
                pending: p,
                last_attempt: None,
            })
            .collect()
    }

    fn make(e: &Entry, which: &[Reported<'_>], kind: Notice) -> Option<Notification> {
        notice(e, which, kind, &ctx(), MESSAGE.as_bytes()).unwrap()
    }

    fn text(n: &Notification) -> String {
        String::from_utf8(n.message.clone()).unwrap()
    }

    /// The per-recipient blocks of the delivery-status part, as lines.
    fn blocks(n: &Notification) -> Vec<Vec<String>> {
        let t = text(n);
        let part = t
            .split_once("Content-Type: message/delivery-status\n\n")
            .unwrap()
            .1;
        let part = part.split_once("\n\n--").unwrap().0;
        let mut b: Vec<Vec<String>> = part
            .split("\n\n")
            .map(|b| b.lines().map(str::to_owned).collect())
            .collect();
        b.remove(0);
        b
    }

    fn field<'a>(block: &'a [String], name: &str) -> Option<&'a str> {
        block
            .iter()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    fn notify(success: bool, failure: bool, delay: bool) -> Option<Notify> {
        Some(Notify::On {
            success,
            failure,
            delay,
        })
    }

    const DELAYED: Notice = Notice::Delayed { retry_until: None };

    /// RFC 6531: a notice to a UTF-8 sender about a UTF-8 recipient is
    /// made, goes to that sender, keeps its header 7-bit and types the
    /// recipient `utf-8` (RFC 6533 3).
    #[test]
    fn notices_to_and_about_utf8_addresses() {
        let mut e = entry(Some("5.2.0 refused"));
        e.sender = Some("pel\u{e9}@razorback.example".into());
        e.recipients[1].address = "j\u{f6}rg@razorback.example".into();
        let n = make(&e, &all(&e), Notice::Failed).expect("a notice");
        assert_eq!(n.to.local, "pel\u{e9}");
        let t = text(&n);
        let head = t.split_once("\n\n").unwrap().0;
        assert!(head.is_ascii(), "{head}");
        assert!(head.contains("\nTo: <pel?@razorback.example>\n"), "{head}");
        let b = blocks(&n);
        let finals: Vec<&str> = b
            .iter()
            .filter_map(|b| field(b, "Final-Recipient"))
            .collect();
        assert!(
            finals.contains(&"utf-8; j\\x{F6}rg@razorback.example"),
            "{finals:?}"
        );
    }

    /// ORCPT and ENVID come back decoded from their xtext; what is not
    /// xtext is taken as it is.
    #[test]
    fn orcpt_and_envid_are_decoded() {
        assert_eq!(
            original_recipient("rfc822;a+40b@c"),
            OriginalRecipient {
                addr_type: "rfc822".into(),
                address: "a@b@c".into()
            }
        );
        assert_eq!(
            original_recipient("rfc822;a+zz"),
            OriginalRecipient {
                addr_type: "rfc822".into(),
                address: "a+zz".into()
            }
        );
        assert_eq!(envid("QQ+2B1"), "QQ+1");
        assert_eq!(envid("a+2"), "a+2");
    }

    #[test]
    fn never_a_notification_for_the_null_sender() {
        let mut e = entry(Some("5.2.2 over quota"));
        e.sender = None;
        for r in &mut e.recipients {
            r.notify = notify(true, true, true);
        }
        for kind in [Notice::Failed, DELAYED, Notice::Delivered] {
            assert_eq!(make(&e, &all(&e), kind), None, "{kind:?}");
        }
        // The same entry with a sender is told.
        e.sender = Some("jon".into());
        for kind in [Notice::Failed, DELAYED, Notice::Delivered] {
            assert!(make(&e, &all(&e), kind).is_some(), "{kind:?}");
        }
    }

    /// RFC 3461 4.1, condition by condition.
    #[test]
    fn notify_decides_who_is_reported() {
        let cases = [
            // NOTIFY, then whether Failed, Delayed, Delivered is reported.
            (None, [true, true, false]),
            (Some(Notify::Never), [false, false, false]),
            (notify(false, true, false), [true, false, false]),
            (notify(false, false, true), [false, true, false]),
            (notify(true, false, false), [false, false, true]),
            (notify(true, true, true), [true, true, true]),
        ];
        for (n, wanted) in cases {
            let kinds = [Notice::Failed, DELAYED, Notice::Delivered];
            for (kind, want) in kinds.into_iter().zip(wanted) {
                assert_eq!(kind.wanted_by(n), want, "{n:?} {kind:?}");
                let mut e = entry(Some("4.2.0 busy"));
                for r in &mut e.recipients {
                    r.notify = n;
                }
                assert_eq!(make(&e, &all(&e), kind).is_some(), want, "{n:?} {kind:?}");
            }
        }
    }

    /// Only the recipients that asked are in a notification: `staff` said
    /// NEVER, `bob` nothing.
    #[test]
    fn each_recipient_by_its_own_notify() {
        let mut e = entry(Some("5.2.2 over quota"));
        e.recipients[0].notify = Some(Notify::Never);
        let n = make(&e, &all(&e), Notice::Failed).unwrap();
        let b = blocks(&n);
        assert_eq!(b.len(), 1);
        assert_eq!(
            field(&b[0], "Final-Recipient"),
            Some("rfc822; bob@razorback.example")
        );
        // Bob alone, and bob said nothing: no success report.
        let bob = all(&e).split_off(2);
        assert_eq!(make(&e, &bob, Notice::Delivered), None);
        assert_eq!(make(&e, &[], Notice::Failed), None);
    }

    #[test]
    fn a_local_sender_is_told_and_a_remote_one_reaches_postmaster() {
        let mut e = entry(Some("5.2.2 over quota"));
        let to = |e: &Entry| make(e, &all(e), Notice::Failed).unwrap().to.to_string();
        // A local domain, in any case.
        assert_eq!(to(&e), "jon@Razorback.example");
        e.sender = Some("jon@localhost".into());
        assert_eq!(to(&e), "jon@localhost");
        // No domain: a local user, as it was given.
        e.sender = Some("jon".into());
        assert_eq!(to(&e), "jon");
        // Remote: postmaster of this host; the header still names the
        // sender whose message it was.
        e.sender = Some("jon@frogbog".into());
        let n = make(&e, &all(&e), Notice::Failed).unwrap();
        assert_eq!(n.to.to_string(), "postmaster@razorback.example");
        assert!(text(&n).contains("\nTo: <jon@frogbog>\n"), "{}", text(&n));
        // A quoted local part is read as the session wrote it.
        e.sender = Some("\"odd name\"@razorback.example".into());
        assert_eq!(to(&e), "\"odd name\"@razorback.example");
    }

    /// Final-Recipient is the RCPT; each failed user is a block of its
    /// own, with its own reason; ORCPT is carried, decoded.
    #[test]
    fn blocks_name_the_rcpt_and_carry_orcpt() {
        let mut e = entry(Some("5.2.2 over quota"));
        e.recipients[0].orcpt = Some("rfc822;Staff+2Bjon@Razorback.example".into());
        e.envid = Some("QQ+2B1".into());
        let mut which = all(&e);
        which[1].last_attempt = Some(at(RECEIVED + 3000));
        let n = make(&e, &which, Notice::Failed).unwrap();
        let b = blocks(&n);
        assert_eq!(b.len(), 3, "{}", text(&n));
        assert_eq!(
            b[1],
            [
                "Original-Recipient: rfc822; Staff+jon@Razorback.example",
                "Final-Recipient: rfc822; staff@razorback.example",
                "Action: failed",
                "Status: 5.2.2",
                "Diagnostic-Code: X-Postie; mailbox alice: over quota",
                "Last-Attempt-Date: Fri, 5 Dec 2025 02:50:00 +0000",
            ]
        );
        assert_eq!(
            field(&b[0], "Diagnostic-Code"),
            Some("X-Postie; mailbox jon: over quota")
        );
        assert_eq!(field(&b[0], "Last-Attempt-Date"), None);
        assert_eq!(field(&b[2], "Original-Recipient"), None);
        let t = text(&n);
        assert!(t.contains("\nOriginal-Envelope-Id: QQ+2B1\n"), "{t}");
        assert!(t.contains("\nArrival-Date: Fri, 5 Dec 2025 02:00:00 +0000\n"));
        assert!(t.contains("\nDate: Fri, 5 Dec 2025 03:00:00 +0000\n"));
        assert!(t.contains("\nMessage-ID: <20251205030000.notice.1@razorback.example>\n"));
        assert!(t.contains("\nReporting-MTA: dns; razorback.example\n"));
        // An index out of the entry is refused, not skipped.
        let mut stray = e.pending[2].clone();
        stray.rcpt = 7;
        let which = [Reported {
            pending: &stray,
            last_attempt: None,
        }];
        assert!(matches!(
            notice(&e, &which, Notice::Failed, &ctx(), MESSAGE.as_bytes()),
            Err(NoticeError::NoSuchRecipient(7))
        ));
    }

    /// Status and action, kind by kind, with and without a last error.
    #[test]
    fn statuses_follow_the_last_error() {
        let first = |error: Option<&str>, kind: Notice| {
            let e = entry(error);
            let n = make(&e, &all(&e), kind).unwrap();
            let b = blocks(&n).remove(0);
            let get = |f| field(&b, f).map(str::to_owned);
            (get("Action"), get("Status"), get("Diagnostic-Code"))
        };
        let s = |v: &str| Some(v.to_owned());
        // A permanent failure.
        assert_eq!(
            first(Some("5.2.2 over quota"), Notice::Failed),
            (
                s("failed"),
                s("5.2.2"),
                s("X-Postie; mailbox jon: over quota")
            )
        );
        // A give-up: failed, with the last temporary error's code.
        assert_eq!(
            first(Some("4.2.0 lock busy"), Notice::Failed),
            (
                s("failed"),
                s("4.2.0"),
                s("X-Postie; mailbox jon: lock busy")
            )
        );
        // No error recorded.
        assert_eq!(first(None, Notice::Failed), (s("failed"), s("5.0.0"), None));
        assert_eq!(first(None, DELAYED), (s("delayed"), s("4.0.0"), None));
        assert_eq!(
            first(Some("4.2.0 lock busy"), DELAYED),
            (
                s("delayed"),
                s("4.2.0"),
                s("X-Postie; mailbox jon: lock busy")
            )
        );
        // A delivered user's old error is not its report.
        let mut e = entry(Some("4.2.0 lock busy"));
        for r in &mut e.recipients {
            r.notify = notify(true, true, true);
        }
        let n = make(&e, &all(&e), Notice::Delivered).unwrap();
        let b = blocks(&n);
        // One block per recipient: staff (two users) expanded, bob
        // delivered.
        assert_eq!(b.len(), 2, "{}", text(&n));
        assert_eq!(field(&b[0], "Action"), Some("expanded"));
        assert_eq!(
            field(&b[0], "Final-Recipient"),
            Some("rfc822; staff@razorback.example")
        );
        assert_eq!(field(&b[1], "Action"), Some("delivered"));
        for block in &b {
            assert_eq!(field(block, "Status"), Some("2.0.0"));
            assert_eq!(field(block, "Diagnostic-Code"), None);
        }
        assert!(text(&n).contains("\nSubject: Successful Mail Delivery Report\n"));
    }

    #[test]
    fn a_delay_says_until_when() {
        let e = entry(Some("4.2.0 lock busy"));
        let kind = Notice::Delayed {
            retry_until: Some(at(RECEIVED + 5 * 86_400)),
        };
        let n = make(&e, &all(&e), kind).unwrap();
        assert_eq!(
            field(&blocks(&n)[0], "Will-Retry-Until"),
            Some("Wed, 10 Dec 2025 02:00:00 +0000")
        );
        assert!(text(&n).contains("\nSubject: Delayed Mail (still being retried)\n"));
    }

    /// RET: the whole message by default, its header for RET=HDRS.
    #[test]
    fn ret_chooses_what_comes_back() {
        let mut e = entry(Some("5.2.2 over quota"));
        let returned = |e: &Entry| {
            let t = text(&make(e, &all(e), Notice::Failed).unwrap());
            t.rsplit("Content-Description: ").next().unwrap().to_owned()
        };
        assert!(returned(&e).contains("Content-Type: message/rfc822\n"));
        assert!(returned(&e).contains("\n\nhello\n"));
        e.ret = Some(Ret::Hdrs);
        let third = returned(&e);
        assert!(
            third.contains("Content-Type: text/rfc822-headers\n"),
            "{third}"
        );
        assert!(!third.contains("hello"), "{third}");
        e.ret = Some(Ret::Full);
        assert!(returned(&e).contains("\n\nhello\n"));
    }

    #[test]
    fn the_test_clock_is_utc() {
        assert_eq!(
            utc(at(RECEIVED)).rfc5322(),
            "Fri, 5 Dec 2025 02:00:00 +0000"
        );
        assert_eq!(utc(at(0)).rfc5322(), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            utc(at(951_782_400)).rfc5322(),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }
}
