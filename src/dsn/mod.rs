//! Delivery status notifications (bounces, delay warnings): the message
//! postie sends to a message's sender when a recipient fails for good, or
//! is still waiting in the queue, as RFC 3464 defines it and sendmail and
//! Postfix write it.
//!
//! A pure generator: a typed [`Report`] (who reports, the original
//! envelope, one [`RecipientReport`] per recipient) and the original
//! message as a reader go in; the bytes of a complete message come out,
//! with LF line ends, as postie's mbox writer takes them. No clock, no
//! host name lookup, no files: the caller hands them in.
//!
//! Its caller is the queue ([`crate::queue::notice`]), which decides who
//! is told of what (never the null sender: RFC 5321 6.1, "if this address
//! is null (`<>`), the receiver-SMTP MUST NOT send a notification"), and
//! delivery, which sends the result with the null sender (RFC 3461 6.1),
//! so that no notification answers a notification.
//!
//! The message (RFC 6522 3, multipart/report; RFC 3464 3):
//!
//! ```text
//! From: Mail Delivery System <MAILER-DAEMON@host>
//! To: <original sender>
//! Subject: Undelivered Mail Returned to Sender     (Postfix, bounce(5))
//! Date, Message-ID, Auto-Submitted: auto-replied   (RFC 3834 5)
//! MIME-Version: 1.0
//! Content-Type: multipart/report; report-type=delivery-status; boundary=..
//!   1. text/plain: what happened, for a person
//!   2. message/delivery-status: the per-message fields (RFC 3464 2.2),
//!      then a block of per-recipient fields for each recipient (2.3)
//!   3. message/rfc822 (the whole message) or text/rfc822-headers (its
//!      header only)
//! ```
//!
//! The sender is `MAILER-DAEMON`, as sendmail and Postfix write it; RFC
//! 3464 3 wants a reply to reach a person responsible for the mail
//! system, which the usual `MAILER-DAEMON: postmaster` alias does.
//!
//! What part 3 holds: the whole message only when a recipient failed
//! (RFC 3461 4.3: FULL asks for the message in a failure report), RET was
//! not HDRS, and the message is at most [`Report::return_limit`] octets
//! (Postfix's `bounce_size_limit`, 50000 by default: larger messages come
//! back as their header); otherwise the header only (RET=HDRS, a delay
//! warning, a large message). RFC 3461 4.3 leaves the choice to the MTA
//! when RET is absent; sendmail and Postfix return the message then.
//!
//! Every value that came from a client (addresses, the ENVID, ORCPT,
//! diagnostic texts) is reduced to printable US-ASCII on one line before
//! it is written, so that it can add neither a header line nor a MIME
//! boundary; the boundary is chosen so that it occurs nowhere in the
//! three parts (RFC 2046 5.1.1).

mod clean;

use std::fmt;
use std::io::{self, BufRead, Read};

use crate::smtp::Mailbox;
/// The RET parameter of MAIL (RFC 3461 4.3), as SMTP parses it.
pub use crate::smtp::Ret;
use crate::sys::LocalTime;

/// Postfix's default `bounce_size_limit`: the largest message returned
/// whole, in octets.
pub const DEFAULT_RETURN_LIMIT: u64 = 50_000;

/// The most header returned, in octets (Postfix's `header_size_limit`):
/// a longer header is cut after its last whole line.
const HEADER_LIMIT: usize = 102_400;

/// The class of an enhanced status code (RFC 3463 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2: success.
    Success,
    /// 4: persistent transient failure.
    Transient,
    /// 5: permanent failure.
    Permanent,
}

/// An enhanced status code, `class.subject.detail` (RFC 3463 2: a subject
/// and a detail of one to three digits each). The one type of it in
/// postie: the queue keeps a recipient's last error in it too
/// (`queue::StatusCode` is this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    class: Class,
    subject: u16,
    detail: u16,
}

impl Status {
    /// The code, if `subject` and `detail` are at most 999.
    pub fn new(class: Class, subject: u16, detail: u16) -> Option<Status> {
        (subject <= 999 && detail <= 999).then_some(Status {
            class,
            subject,
            detail,
        })
    }

    /// `5.1.1` and the like, as a reply's enhanced code
    /// ([`crate::smtp::Reply::enhanced`]) holds it.
    pub fn parse(s: &str) -> Option<Status> {
        let mut parts = s.split('.');
        let class = match parts.next()? {
            "2" => Class::Success,
            "4" => Class::Transient,
            "5" => Class::Permanent,
            _ => return None,
        };
        let mut number = || -> Option<u16> {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let (subject, detail) = (number()?, number()?);
        if parts.next().is_some() {
            return None;
        }
        Status::new(class, subject, detail)
    }

    pub fn class(&self) -> Class {
        self.class
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.class {
            Class::Success => 2,
            Class::Transient => 4,
            Class::Permanent => 5,
        };
        write!(f, "{c}.{}.{}", self.subject, self.detail)
    }
}

/// What the reporting MTA did with one recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Given up: a permanent failure, or the give-up time passed.
    Failed,
    /// Not delivered yet, still being retried; until when, if known
    /// (`Will-Retry-Until`, RFC 3464 2.3.9, only in a delayed report).
    Delayed {
        will_retry_until: Option<LocalTime>,
    },
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    fn keyword(&self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed { .. } => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// Whether a status of class `class` goes with the action. A failure
    /// is 5.x.x, or 4.x.x when the give-up time passed: RFC 3463 2's
    /// class 4 is a temporary condition that "has caused abandonment or
    /// delay", and Postfix's bounce daemon writes an expired recipient as
    /// `Action: failed` with its last deferral's 4.x.x status.
    fn allows(&self, class: Class) -> bool {
        match self {
            Action::Failed => class != Class::Success,
            Action::Delayed { .. } => class == Class::Transient,
            _ => class == Class::Success,
        }
    }
}

/// Why, in the words of whoever said so (RFC 3464 2.3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnostic {
    /// An SMTP or LMTP reply, code and text (`Diagnostic-Code: smtp; ...`);
    /// a multi-line reply may keep its line ends, they become spaces.
    Smtp(String),
    /// postie's own words, for a local failure (`X-Postie; ...`, as
    /// Postfix writes `X-Postfix;`).
    Local(String),
}

/// The ORCPT parameter of RCPT (RFC 3461 4.2), decoded from xtext: its
/// address type (`rfc822`) and the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRecipient {
    pub addr_type: String,
    pub address: String,
}

/// One recipient's lines of the report (RFC 3464 2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The address the MTA tried (`Final-Recipient`); a bare local part
    /// is qualified with the reporting host.
    pub final_recipient: Mailbox,
    /// `Original-Recipient`, when the client gave ORCPT.
    pub original_recipient: Option<OriginalRecipient>,
    pub action: Action,
    /// Its class must go with the action: 5 for failed (or 4, a give-up:
    /// the last temporary error), 4 for delayed, 2 for the others.
    pub status: Status,
    pub diagnostic: Option<Diagnostic>,
    pub last_attempt: Option<LocalTime>,
}

/// The original message's envelope, as far as a report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalEnvelope {
    /// The sender: the report goes to it. Never null (nobody is told of
    /// a message from `<>`); a bare local part is qualified with the
    /// reporting host.
    pub sender: Mailbox,
    /// The ENVID parameter, decoded from xtext (RFC 3461 4.4); written
    /// encoded again as `Original-Envelope-Id`.
    pub envid: Option<String>,
    pub ret: Option<Ret>,
}

/// Everything a notification says, but the original message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// This host's name: `Reporting-MTA: dns; HOST`, `MAILER-DAEMON@HOST`.
    pub reporting_mta: String,
    /// When the original message arrived (`Arrival-Date`).
    pub arrival_date: LocalTime,
    pub envelope: OriginalEnvelope,
    pub recipients: Vec<RecipientReport>,
    /// The left part of the notification's own Message-ID
    /// (`<LEFT@HOST>`): unique, chosen by the caller.
    pub message_id: String,
    /// The notification's own `Date:`.
    pub date: LocalTime,
    /// The largest message returned whole, in octets
    /// ([`DEFAULT_RETURN_LIMIT`] as Postfix).
    pub return_limit: u64,
}

/// Why no notification was made.
#[derive(Debug)]
pub enum DsnError {
    /// A report with no recipient says nothing (RFC 3464 2.1: at least
    /// one per-recipient block).
    NoRecipients,
    /// The status class of the recipient at this index does not go with
    /// its action.
    StatusMismatch(usize),
    /// Reading the original message failed.
    Io(io::Error),
}

impl fmt::Display for DsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DsnError::NoRecipients => f.write_str("a delivery report needs a recipient"),
            DsnError::StatusMismatch(i) => {
                write!(f, "recipient {i}: status class does not match the action")
            }
            DsnError::Io(e) => write!(f, "reading the original message: {e}"),
        }
    }
}

impl std::error::Error for DsnError {}

impl From<io::Error> for DsnError {
    fn from(e: io::Error) -> Self {
        DsnError::Io(e)
    }
}

/// What part 3 returns of the original message.
enum Returned {
    /// The whole message.
    Full(Vec<u8>),
    /// Its header lines, LF-ended, without the blank line after them.
    Header(Vec<u8>),
}

impl Report {
    fn has(&self, pred: impl Fn(&Action) -> bool) -> bool {
        self.recipients.iter().any(|r| pred(&r.action))
    }

    fn has_failed(&self) -> bool {
        self.has(|a| *a == Action::Failed)
    }

    fn has_delayed(&self) -> bool {
        self.has(|a| matches!(a, Action::Delayed { .. }))
    }

    /// Postfix's subjects (bounce(5)): the worst action decides.
    fn subject(&self) -> &'static str {
        if self.has_failed() {
            "Undelivered Mail Returned to Sender"
        } else if self.has_delayed() {
            "Delayed Mail (still being retried)"
        } else {
            "Successful Mail Delivery Report"
        }
    }

    /// True when part 3 is to be the whole message, size permitting.
    fn wants_full(&self) -> bool {
        self.envelope.ret != Some(Ret::Hdrs) && self.has_failed()
    }

    fn check(&self) -> Result<(), DsnError> {
        if self.recipients.is_empty() {
            return Err(DsnError::NoRecipients);
        }
        match self
            .recipients
            .iter()
            .position(|r| !r.action.allows(r.status.class()))
        {
            Some(i) => Err(DsnError::StatusMismatch(i)),
            None => Ok(()),
        }
    }
}

/// The notification for `report`, with `original` (the message as postie
/// holds it, LF line ends) returned whole or by its header as the module
/// documentation says: a complete message, LF line ends, to be delivered
/// with the null sender.
pub fn generate<R: BufRead>(report: &Report, original: R) -> Result<Vec<u8>, DsnError> {
    report.check()?;
    let host = clean::host(&report.reporting_mta);
    let returned = read_original(original, report.wants_full(), report.return_limit)?;
    let human = human_text(report, &host, &returned);
    let status = delivery_status(report, &host);
    let (kind, description, content) = match &returned {
        Returned::Full(m) => ("message/rfc822", "Undelivered Message", m),
        Returned::Header(h) => ("text/rfc822-headers", "Undelivered Message Headers", h),
    };
    let boundary = clean::boundary(
        &report.message_id,
        &[human.as_bytes(), status.as_bytes(), content],
    );
    // RFC 2045 6.4 / RFC 2046 5.2.1: an 8-bit message/rfc822 part is
    // labelled 8bit, and so is the multipart that contains it.
    let eight_bit = content.iter().any(|&b| b >= 0x80);
    let cte = if eight_bit {
        "Content-Transfer-Encoding: 8bit\n"
    } else {
        ""
    };

    let mut out = Vec::with_capacity(content.len() + human.len() + status.len() + 1024);
    let header = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\n\
         To: <{to}>\n\
         Subject: {subject}\n\
         Date: {date}\n\
         Message-ID: <{id}@{host}>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"{boundary}\"\n\
         {cte}\
         \n\
         This is a MIME-encapsulated message.\n\
         \n\
         --{boundary}\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=us-ascii\n\
         \n\
         {human}\
         \n\
         --{boundary}\n\
         Content-Description: Delivery report\n\
         Content-Type: message/delivery-status\n\
         \n\
         {status}\
         \n\
         --{boundary}\n\
         Content-Description: {description}\n\
         Content-Type: {kind}\n\
         {cte}\
         \n",
        to = clean::address(&report.envelope.sender, &host),
        subject = report.subject(),
        date = report.date.rfc5322(),
        id = clean::id_left(&report.message_id),
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(content);
    // The line end before a delimiter belongs to the delimiter (RFC 2046
    // 5.1.1): a part that ends without one keeps its last line as it is.
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    Ok(out)
}

/// Reads what part 3 returns: the whole message if `full` and it is at
/// most `limit` octets, else its header (at most [`HEADER_LIMIT`] octets,
/// cut after the last whole line).
fn read_original<R: BufRead>(mut r: R, full: bool, limit: u64) -> io::Result<Returned> {
    let mut start = Vec::new();
    if full {
        (&mut r)
            .take(limit.saturating_add(1))
            .read_to_end(&mut start)?;
        if start.len() as u64 <= limit {
            return Ok(Returned::Full(start));
        }
    }
    let mut r = io::Cursor::new(start).chain(r);
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let room = (HEADER_LIMIT + 1 - before) as u64;
        if (&mut r).take(room).read_until(b'\n', &mut head)? == 0 {
            break;
        }
        if &head[before..] == b"\n" || head.len() > HEADER_LIMIT {
            head.truncate(before);
            break;
        }
        if !head.ends_with(b"\n") {
            // The message ended inside its header.
            head.push(b'\n');
            break;
        }
    }
    Ok(Returned::Header(head))
}

/// Part 1: what happened, in words, for the sender.
fn human_text(report: &Report, host: &str, returned: &Returned) -> String {
    let mut t = format!("This is the mail system at host {host}.\n\n");
    if report.has_failed() {
        t.push_str(
            "Your message could not be delivered to one or more recipients,\n\
             and delivery has been given up for them. The delivery report\n\
             below says why for each.\n",
        );
    } else if report.has_delayed() {
        t.push_str(
            "Your message could not be delivered yet to one or more\n\
             recipients. Delivery is still being retried; you do not need\n\
             to send it again.\n",
        );
    } else {
        t.push_str("Your message was delivered to the recipients listed below.\n");
    }
    t.push_str(match returned {
        Returned::Full(_) => "\nYour message is attached after the report.\n",
        Returned::Header(_) => "\nThe header of your message is attached after the report.\n",
    });
    t.push_str(&format!(
        "\nFor help, write to <postmaster@{host}> and include this report.\n\n"
    ));
    for r in &report.recipients {
        let mut line = format!(
            "<{}>: {} ({})",
            clean::address(&r.final_recipient, host),
            r.action.keyword(),
            r.status
        );
        if let Some(d) = &r.diagnostic {
            line.push_str(": ");
            line.push_str(&clean::text(diagnostic_text(d), clean::MAX_TEXT));
        }
        if let Action::Delayed {
            will_retry_until: Some(until),
        } = r.action
        {
            line.push_str(&format!("; retried until {}", until.rfc5322()));
        }
        // Folded like a header field, so that no line passes 998 octets
        // (RFC 5322 2.1.1) however long the address and the diagnostic.
        t.push_str(&clean::fold(&line));
    }
    t
}

fn diagnostic_text(d: &Diagnostic) -> &str {
    match d {
        Diagnostic::Smtp(s) | Diagnostic::Local(s) => s,
    }
}

/// Part 2: the per-message fields, then one block per recipient, each
/// after a blank line, in the order of RFC 3464 2.1's grammar.
fn delivery_status(report: &Report, host: &str) -> String {
    let mut s = String::new();
    let field = |s: &mut String, line: String| s.push_str(&clean::fold(&line));
    // RFC 3464 2.2.1; RFC 3461 4.4: the ENVID as the client sent it, xtext.
    if let Some(envid) = &report.envelope.envid {
        field(
            &mut s,
            format!("Original-Envelope-Id: {}", clean::xtext(envid)),
        );
    }
    field(&mut s, format!("Reporting-MTA: dns; {host}")); // 2.2.2
    field(
        &mut s,
        format!("Arrival-Date: {}", report.arrival_date.rfc5322()), // 2.2.5
    );
    for r in &report.recipients {
        s.push('\n');
        if let Some(o) = &r.original_recipient {
            field(
                &mut s,
                format!(
                    "Original-Recipient: {}; {}", // 2.3.1
                    clean::address_type(&o.addr_type),
                    clean::generic_address(&o.address)
                ),
            );
        }
        field(
            &mut s,
            format!(
                "Final-Recipient: {}", // 2.3.2; RFC 6533 3 for UTF-8
                clean::typed_address(&r.final_recipient, host)
            ),
        );
        field(&mut s, format!("Action: {}", r.action.keyword())); // 2.3.3
        field(&mut s, format!("Status: {}", r.status)); // 2.3.4
        if let Some(d) = &r.diagnostic {
            let kind = match d {
                Diagnostic::Smtp(_) => "smtp",
                Diagnostic::Local(_) => "X-Postie",
            };
            let text = clean::text(diagnostic_text(d), clean::MAX_TEXT);
            field(&mut s, format!("Diagnostic-Code: {kind}; {text}")); // 2.3.6
        }
        if let Some(t) = &r.last_attempt {
            field(&mut s, format!("Last-Attempt-Date: {}", t.rfc5322())); // 2.3.7
        }
        if let Action::Delayed {
            will_retry_until: Some(t),
        } = &r.action
        {
            field(&mut s, format!("Will-Retry-Until: {}", t.rfc5322())); // 2.3.9
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARRIVED: LocalTime = LocalTime {
        year: 2026,
        month: 12,
        day: 1,
        hour: 9,
        minute: 30,
        second: 0,
        weekday: 2,
        utc_offset: 3600,
    };
    const TRIED: LocalTime = LocalTime {
        day: 6,
        weekday: 0,
        hour: 10,
        ..ARRIVED
    };
    const NOW: LocalTime = LocalTime {
        day: 6,
        weekday: 0,
        hour: 10,
        minute: 31,
        ..ARRIVED
    };

    fn mailbox(local: &str, domain: Option<&str>) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.map(Into::into),
        }
    }

    fn failed(local: &str) -> RecipientReport {
        RecipientReport {
            final_recipient: mailbox(local, None),
            original_recipient: None,
            action: Action::Failed,
            status: Status::parse("5.2.0").unwrap(),
            diagnostic: None,
            last_attempt: None,
        }
    }

    fn report(recipients: Vec<RecipientReport>) -> Report {
        Report {
            reporting_mta: "razorback.example".into(),
            arrival_date: ARRIVED,
            envelope: OriginalEnvelope {
                sender: mailbox("jon", Some("frogbog.example")),
                envid: None,
                ret: None,
            },
            recipients,
            message_id: "20261206103100.A1.1".into(),
            date: NOW,
            return_limit: DEFAULT_RETURN_LIMIT,
        }
    }

    const MESSAGE: &str = "From: jon@frogbog.example\nSubject: hi\n\nbody\n";

    fn make(r: &Report, message: &[u8]) -> String {
        String::from_utf8_lossy(&generate(r, message).unwrap()).into_owned()
    }

    /// The boundary of a made notification.
    fn boundary_of(dsn: &str) -> &str {
        dsn.split_once("boundary=\"")
            .unwrap()
            .1
            .split_once('"')
            .unwrap()
            .0
    }

    /// The parts of a made notification, between its delimiter lines.
    fn parts(dsn: &str) -> Vec<String> {
        let b = boundary_of(dsn);
        let body = dsn.split_once("\n\n").unwrap().1;
        let close = format!("\n--{b}--\n");
        assert!(body.ends_with(&close), "{dsn}");
        let body = body.strip_suffix(&close).unwrap();
        let mut parts: Vec<String> = body
            .split(&format!("\n--{b}\n"))
            .map(String::from)
            .collect();
        assert_eq!(parts.remove(0), "This is a MIME-encapsulated message.\n");
        parts
    }

    /// The field lines of the delivery-status part, unfolded, in blocks.
    fn status_blocks(dsn: &str) -> Vec<Vec<String>> {
        let part = &parts(dsn)[1];
        let (head, body) = part.split_once("\n\n").unwrap();
        assert!(head.ends_with("Content-Type: message/delivery-status"));
        let body = body.replace("\n ", " ");
        body.trim_end()
            .split("\n\n")
            .map(|b| b.lines().map(String::from).collect())
            .collect()
    }

    #[test]
    fn a_failure_report_byte_for_byte() {
        let mut r = report(vec![failed("alice")]);
        r.recipients[0].diagnostic = Some(Diagnostic::Local("mailbox busy for 5 days".into()));
        let dsn = make(&r, MESSAGE.as_bytes());
        let b = boundary_of(&dsn).to_owned();
        assert_eq!(
            dsn,
            format!(
                "From: Mail Delivery System <MAILER-DAEMON@razorback.example>\n\
                 To: <jon@frogbog.example>\n\
                 Subject: Undelivered Mail Returned to Sender\n\
                 Date: Sun, 6 Dec 2026 10:31:00 +0100\n\
                 Message-ID: <20261206103100.A1.1@razorback.example>\n\
                 Auto-Submitted: auto-replied\n\
                 MIME-Version: 1.0\n\
                 Content-Type: multipart/report; report-type=delivery-status;\n\
                 \tboundary=\"{b}\"\n\
                 \n\
                 This is a MIME-encapsulated message.\n\
                 \n\
                 --{b}\n\
                 Content-Description: Notification\n\
                 Content-Type: text/plain; charset=us-ascii\n\
                 \n\
                 This is the mail system at host razorback.example.\n\
                 \n\
                 Your message could not be delivered to one or more recipients,\n\
                 and delivery has been given up for them. The delivery report\n\
                 below says why for each.\n\
                 \n\
                 Your message is attached after the report.\n\
                 \n\
                 For help, write to <postmaster@razorback.example> and include this report.\n\
                 \n\
                 <alice@razorback.example>: failed (5.2.0): mailbox busy for 5 days\n\
                 \n\
                 --{b}\n\
                 Content-Description: Delivery report\n\
                 Content-Type: message/delivery-status\n\
                 \n\
                 Reporting-MTA: dns; razorback.example\n\
                 Arrival-Date: Tue, 1 Dec 2026 09:30:00 +0100\n\
                 \n\
                 Final-Recipient: rfc822; alice@razorback.example\n\
                 Action: failed\n\
                 Status: 5.2.0\n\
                 Diagnostic-Code: X-Postie; mailbox busy for 5 days\n\
                 \n\
                 --{b}\n\
                 Content-Description: Undelivered Message\n\
                 Content-Type: message/rfc822\n\
                 \n\
                 From: jon@frogbog.example\n\
                 Subject: hi\n\
                 \n\
                 body\n\
                 \n\
                 --{b}--\n"
            )
        );
        assert!(b.len() <= 70 && b.starts_with("postie-dsn="), "{b}");
        // Nothing but LF line ends, and only US-ASCII of our own.
        assert!(!dsn.contains('\r'));
    }

    #[test]
    fn per_message_fields() {
        let mut r = report(vec![failed("alice")]);
        let blocks = status_blocks(&make(&r, MESSAGE.as_bytes()));
        assert_eq!(
            blocks[0],
            [
                "Reporting-MTA: dns; razorback.example",
                "Arrival-Date: Tue, 1 Dec 2026 09:30:00 +0100"
            ]
        );
        r.envelope.envid = Some("QQ314159 x+y=z".into());
        r.reporting_mta = "mx.example\r\nX-Injected: host".into();
        let blocks = status_blocks(&make(&r, MESSAGE.as_bytes()));
        assert_eq!(
            blocks[0],
            [
                "Original-Envelope-Id: QQ314159+20x+2By+3Dz",
                "Reporting-MTA: dns; mx.example??X-Injected:?host",
                "Arrival-Date: Tue, 1 Dec 2026 09:30:00 +0100"
            ]
        );
        assert_eq!(blocks.len(), 2);
    }

    #[test]
    fn per_recipient_fields() {
        let mut a = failed("alice");
        a.final_recipient = mailbox("alice", Some("razorback.example"));
        a.original_recipient = Some(OriginalRecipient {
            addr_type: "rfc822".into(),
            address: "Alice@Razorback.example".into(),
        });
        a.status = Status::parse("5.1.1").unwrap();
        a.diagnostic = Some(Diagnostic::Smtp(
            "550 5.1.1 <alice@razorback.example>... User unknown".into(),
        ));
        a.last_attempt = Some(TRIED);
        let mut r = report(vec![a, failed("bob")]);
        let dsn = make(&r, MESSAGE.as_bytes());
        let blocks = status_blocks(&dsn);
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            blocks[1],
            [
                "Original-Recipient: rfc822; Alice@Razorback.example",
                "Final-Recipient: rfc822; alice@razorback.example",
                "Action: failed",
                "Status: 5.1.1",
                "Diagnostic-Code: smtp; 550 5.1.1 <alice@razorback.example>... User unknown",
                "Last-Attempt-Date: Sun, 6 Dec 2026 10:30:00 +0100",
            ]
        );
        assert_eq!(
            blocks[2],
            [
                "Final-Recipient: rfc822; bob@razorback.example",
                "Action: failed",
                "Status: 5.2.0",
            ]
        );
        // Delayed: 4.x.x, and Will-Retry-Until only here.
        r.recipients = vec![RecipientReport {
            action: Action::Delayed {
                will_retry_until: Some(LocalTime {
                    day: 11,
                    weekday: 5,
                    ..ARRIVED
                }),
            },
            status: Status::parse("4.2.0").unwrap(),
            last_attempt: Some(TRIED),
            ..failed("carol")
        }];
        let dsn = make(&r, MESSAGE.as_bytes());
        assert!(dsn.contains("\nSubject: Delayed Mail (still being retried)\n"));
        assert_eq!(
            status_blocks(&dsn)[1],
            [
                "Final-Recipient: rfc822; carol@razorback.example",
                "Action: delayed",
                "Status: 4.2.0",
                "Last-Attempt-Date: Sun, 6 Dec 2026 10:30:00 +0100",
                "Will-Retry-Until: Fri, 11 Dec 2026 09:30:00 +0100",
            ]
        );
        assert!(dsn.contains(
            "<carol@razorback.example>: delayed (4.2.0); retried until Fri, 11 Dec 2026"
        ));
        // The other actions, with a success subject.
        for (action, word) in [
            (Action::Delivered, "delivered"),
            (Action::Relayed, "relayed"),
            (Action::Expanded, "expanded"),
        ] {
            r.recipients = vec![RecipientReport {
                action,
                status: Status::parse("2.0.0").unwrap(),
                ..failed("dave")
            }];
            let dsn = make(&r, MESSAGE.as_bytes());
            assert!(dsn.contains("\nSubject: Successful Mail Delivery Report\n"));
            assert_eq!(status_blocks(&dsn)[1][1], format!("Action: {word}"));
            assert!(!dsn.contains("Will-Retry-Until"));
        }
    }

    #[test]
    fn long_diagnostics_are_folded_and_cut() {
        let mut a = failed("alice");
        let words = "lorem ipsum dolor sit amet ".repeat(60);
        a.diagnostic = Some(Diagnostic::Smtp(format!("550 5.2.0 {words}")));
        let dsn = make(&report(vec![a]), MESSAGE.as_bytes());
        let part = &parts(&dsn)[1];
        for line in part.lines() {
            assert!(line.len() <= 78, "{line}");
        }
        let human = &parts(&dsn)[0];
        for line in human.lines() {
            assert!(line.len() <= 78, "{line}");
        }
        let code = &status_blocks(&dsn)[1][3];
        assert!(code.starts_with("Diagnostic-Code: smtp; 550 5.2.0 lorem ipsum"));
        assert!(code.ends_with("..."), "{code}");
        assert!(code.len() <= "Diagnostic-Code: smtp; ".len() + clean::MAX_TEXT);
    }

    #[test]
    fn statuses() {
        for s in ["2.0.0", "4.2.0", "5.1.1", "5.7.1", "4.123.999"] {
            assert_eq!(Status::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "", "5", "5.1", "3.1.1", "5.1.1.1", "5.1000.1", "5..1", "5.1.x", "5.1.+1", "5.1.1 ",
        ] {
            assert_eq!(Status::parse(s), None, "{s:?}");
        }
        assert_eq!(Status::parse("5.01.1").unwrap().to_string(), "5.1.1");
        assert_eq!(Status::new(Class::Success, 1000, 0), None);
        assert_eq!(Status::parse("4.4.7").unwrap().class(), Class::Transient);
    }

    #[test]
    fn reports_that_say_nothing_or_contradict_themselves_are_refused() {
        let r = report(vec![]);
        assert!(matches!(
            generate(&r, MESSAGE.as_bytes()),
            Err(DsnError::NoRecipients)
        ));
        let mut wrong = failed("bob");
        wrong.status = Status::parse("2.0.0").unwrap();
        let r = report(vec![failed("alice"), wrong]);
        assert!(matches!(
            generate(&r, MESSAGE.as_bytes()),
            Err(DsnError::StatusMismatch(1))
        ));
        // A give-up: failed, with the last temporary error's 4.x.x.
        let mut expired = failed("bob");
        expired.status = Status::parse("4.4.7").unwrap();
        assert!(generate(&report(vec![expired]), MESSAGE.as_bytes()).is_ok());
        let delayed = RecipientReport {
            action: Action::Delayed {
                will_retry_until: None,
            },
            ..failed("carol")
        };
        assert!(matches!(
            generate(&report(vec![delayed]), MESSAGE.as_bytes()),
            Err(DsnError::StatusMismatch(0))
        ));
    }

    /// The third part's type and content.
    fn returned(r: &Report, message: &[u8]) -> (String, String) {
        let dsn = make(r, message);
        let part = parts(&dsn).remove(2);
        let (head, body) = part.split_once("\n\n").unwrap();
        let kind = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .unwrap()
            .to_owned();
        (kind, body.to_owned())
    }

    #[test]
    fn what_is_returned_follows_ret_the_action_and_the_size() {
        let header = "From: jon@frogbog.example\nSubject: hi\n";
        let full = ("message/rfc822".to_string(), MESSAGE.to_string());
        let head = ("text/rfc822-headers".to_string(), header.to_string());
        let mut r = report(vec![failed("alice")]);
        // No RET, a failure: the whole message, as sendmail and Postfix.
        assert_eq!(returned(&r, MESSAGE.as_bytes()), full);
        r.envelope.ret = Some(Ret::Full);
        assert_eq!(returned(&r, MESSAGE.as_bytes()), full);
        r.envelope.ret = Some(Ret::Hdrs);
        assert_eq!(returned(&r, MESSAGE.as_bytes()), head);
        // Over the limit: the header, whatever RET says.
        r.envelope.ret = Some(Ret::Full);
        r.return_limit = MESSAGE.len() as u64;
        assert_eq!(returned(&r, MESSAGE.as_bytes()), full);
        r.return_limit = MESSAGE.len() as u64 - 1;
        assert_eq!(returned(&r, MESSAGE.as_bytes()), head);
        r.envelope.ret = None;
        assert_eq!(returned(&r, MESSAGE.as_bytes()), head);
        r.return_limit = 0;
        assert_eq!(returned(&r, MESSAGE.as_bytes()), head);
        // A delay warning returns the header, even with RET=FULL.
        r.return_limit = DEFAULT_RETURN_LIMIT;
        r.envelope.ret = Some(Ret::Full);
        r.recipients = vec![RecipientReport {
            action: Action::Delayed {
                will_retry_until: None,
            },
            status: Status::parse("4.2.0").unwrap(),
            ..failed("carol")
        }];
        assert_eq!(returned(&r, MESSAGE.as_bytes()), head);
        let dsn = make(&r, MESSAGE.as_bytes());
        assert!(dsn.contains("Content-Description: Undelivered Message Headers\n"));
        assert!(dsn.contains("The header of your message is attached"));
    }

    #[test]
    fn odd_originals() {
        let mut r = report(vec![failed("alice")]);
        r.envelope.ret = Some(Ret::Hdrs);
        // No header at all, a header without a body, a message that ends
        // inside its header, an empty message.
        let cases = [
            ("\nbody only\n", ""),
            ("Subject: x\n", "Subject: x\n"),
            ("Subject: x\nTo: y", "Subject: x\nTo: y\n"),
            ("", ""),
            ("Subject: x\n folded\n\n\nbody\n", "Subject: x\n folded\n"),
        ];
        for (message, header) in cases {
            assert_eq!(returned(&r, message.as_bytes()).1, header, "{message:?}");
        }
        // A header past the limit is cut after its last whole line.
        let line = format!("X-Long: {}\n", "y".repeat(990));
        let big = format!("{}\nbody\n", line.repeat(200));
        let got = returned(&r, big.as_bytes()).1;
        assert!(got.len() <= HEADER_LIMIT && got.len() > HEADER_LIMIT - 1000);
        assert_eq!(got.len() % line.len(), 0);
        // The whole message, without a final line end, keeps its last line.
        r.envelope.ret = None;
        let dsn = make(&r, b"Subject: x\n\nlast");
        assert!(dsn.ends_with(&format!("\n\nlast\n--{}--\n", boundary_of(&dsn))));
    }

    #[test]
    fn eight_bit_content_is_labelled() {
        let r = report(vec![failed("alice")]);
        let dsn = make(&r, MESSAGE.as_bytes());
        assert!(!dsn.contains("Content-Transfer-Encoding"));
        let message = "Subject: caf\u{e9}\n\nna\u{ef}ve\n";
        let dsn = make(&r, message.as_bytes());
        let top = dsn.split_once("\n\n").unwrap().0;
        assert!(top.ends_with("\nContent-Transfer-Encoding: 8bit"), "{top}");
        let third = &parts(&dsn)[2];
        assert!(
            third.contains("Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n")
        );
        assert!(third.ends_with(message));
    }

    /// The top-level header and every part's header hold only the fields
    /// postie writes, and the delivery-status part only RFC 3464 fields:
    /// nothing a client sent adds a line of its own.
    fn assert_no_injection(dsn: &str) {
        let known_top = [
            "From:",
            "To:",
            "Subject:",
            "Date:",
            "Message-ID:",
            "Auto-Submitted:",
            "MIME-Version:",
            "Content-Type:",
            "Content-Transfer-Encoding:",
            "\t",
        ];
        let top = dsn.split_once("\n\n").unwrap().0;
        for line in top.lines() {
            assert!(known_top.iter().any(|k| line.starts_with(k)), "{line:?}");
        }
        assert_eq!(top.lines().count(), 9, "{top}");
        let p = parts(dsn);
        assert_eq!(p.len(), 3, "{dsn}");
        let known_status = [
            "Original-Envelope-Id:",
            "Reporting-MTA:",
            "Arrival-Date:",
            "Original-Recipient:",
            "Final-Recipient:",
            "Action:",
            "Status:",
            "Diagnostic-Code:",
            "Last-Attempt-Date:",
            "Will-Retry-Until:",
            " ",
        ];
        let status = p[1].split_once("\n\n").unwrap().1;
        for line in status.lines().filter(|l| !l.is_empty()) {
            assert!(known_status.iter().any(|k| line.starts_with(k)), "{line:?}");
        }
        assert!(!dsn.contains('\r'));
        assert!(!dsn.contains("\nX-Injected"), "{dsn}");
    }

    /// RFC 6531 addresses: a notification to or about a UTF-8 address is
    /// made (no panic), its header and report fields stay 7-bit, the
    /// recipient is typed `utf-8;` with RFC 6533's xtext, and nothing the
    /// address holds (a line separator, NEL, a bidi override) adds a line.
    #[test]
    fn utf8_addresses_in_a_notification() {
        let mut a = failed("j\u{f6}rg");
        a.final_recipient.domain = Some("b\u{fc}cher.example".into());
        let mut r = report(vec![a, failed("jon")]);
        r.envelope.sender = mailbox("pel\u{e9}", Some("frogbog.example"));
        let dsn = make(&r, MESSAGE.as_bytes());
        assert_no_injection(&dsn);
        let top = dsn.split_once("\n\n").unwrap().0;
        assert!(top.is_ascii(), "{top}");
        assert!(top.contains("\nTo: <pel?@frogbog.example>\n"), "{top}");
        let blocks = status_blocks(&dsn);
        assert_eq!(
            blocks[1][0],
            "Final-Recipient: utf-8; j\\x{F6}rg@b\\x{FC}cher.example"
        );
        assert_eq!(
            blocks[2][0],
            "Final-Recipient: rfc822; jon@razorback.example"
        );
        assert!(parts(&dsn)[..2].iter().all(|p| p.is_ascii()));

        let mut evil = failed("a\u{2028}X-Injected: yes\u{85}\u{202e}\u{e9}");
        evil.final_recipient.domain = Some("x\u{2029}y".into());
        let mut r = report(vec![evil]);
        r.envelope.sender = mailbox("\u{e9}\u{2028}X-Injected: yes", Some("x"));
        let dsn = make(&r, MESSAGE.as_bytes());
        assert_no_injection(&dsn);
        assert!(dsn.split_once("\n\n").unwrap().0.is_ascii());
    }

    #[test]
    fn nothing_from_the_client_adds_a_line() {
        let evil = "x\r\nX-Injected: yes\n\n--b\nContent-Type: text/html\r";
        let mut a = failed(evil);
        a.final_recipient.domain = Some(format!("d{evil}"));
        a.original_recipient = Some(OriginalRecipient {
            addr_type: format!("rfc822{evil}"),
            address: format!("o{evil}"),
        });
        a.diagnostic = Some(Diagnostic::Smtp(format!("550 5.0.0 {evil}")));
        let mut r = report(vec![a]);
        r.envelope.sender = mailbox(evil, Some(evil));
        r.envelope.envid = Some(evil.into());
        r.message_id = evil.into();
        let dsn = make(&r, MESSAGE.as_bytes());
        assert_no_injection(&dsn);
        let blocks = status_blocks(&dsn);
        assert_eq!(
            blocks[0][0],
            "Original-Envelope-Id: x+0D+0AX-Injected:+20yes+0A+0A--b+0AContent-Type:+20text/html+0D"
        );
        assert_eq!(
            blocks[1][0],
            "Original-Recipient: rfc822; ox X-Injected: yes --b Content-Type: text/html"
        );
        assert!(
            blocks[1][4].starts_with("Diagnostic-Code: smtp; 550 5.0.0 x X-Injected: yes --b"),
            "{}",
            blocks[1][4]
        );
        let to = dsn.lines().find(|l| l.starts_with("To:")).unwrap();
        assert_eq!(
            to,
            "To: <\"x??X-Injected: yes??--b?Content-Type: text/html?\"@x??X-Injected: yes??--b?Content-Type: text/html?>"
        );
        // A quoted local part with a `>` stays inside its quotes.
        r.envelope.sender = mailbox("a>b", Some("x"));
        let dsn = make(&r, MESSAGE.as_bytes());
        assert!(dsn.contains("\nTo: <\"a>b\"@x>\n"));
        assert_no_injection(&dsn);
    }

    #[test]
    fn the_boundary_never_occurs_in_the_content() {
        let r = report(vec![failed("alice")]);
        let would_be = clean::boundary(&r.message_id, &[]);
        let dsn = make(&r, MESSAGE.as_bytes());
        assert_eq!(boundary_of(&dsn), would_be);
        // The message holds the boundary postie would have chosen: another.
        let message =
            format!("Subject: x\n\n--{would_be}\nContent-Type: text/html\n\n--{would_be}--\n");
        let dsn = make(&r, message.as_bytes());
        let b = boundary_of(&dsn);
        assert_ne!(b, would_be);
        assert!(!message.contains(b));
        assert_eq!(dsn.matches(&format!("--{b}")).count(), 4);
        assert_eq!(parts(&dsn)[2].split_once("\n\n").unwrap().1, message);
        assert_no_injection(&dsn);
        // In a diagnostic (part 2) or an address (parts 1 and 2) too.
        let mut a = failed("alice");
        a.diagnostic = Some(Diagnostic::Smtp(format!("550 --{would_be}")));
        let dsn = make(&report(vec![a]), MESSAGE.as_bytes());
        assert_ne!(boundary_of(&dsn), would_be);
        assert_eq!(parts(&dsn).len(), 3);
        let a = failed(&format!("--{would_be}"));
        let dsn = make(&report(vec![a]), MESSAGE.as_bytes());
        assert_ne!(boundary_of(&dsn), would_be);
        assert_eq!(parts(&dsn).len(), 3);
    }

    #[test]
    fn bare_local_parts_are_qualified() {
        let mut r = report(vec![failed("alice")]);
        r.envelope.sender = mailbox("jon", None);
        let dsn = make(&r, MESSAGE.as_bytes());
        assert!(dsn.contains("\nTo: <jon@razorback.example>\n"));
        assert!(dsn.contains("\nFinal-Recipient: rfc822; alice@razorback.example\n"));
    }
}
