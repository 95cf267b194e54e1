//! Delivery status notifications (`postie::dsn`, and
//! `postie::queue::notice` that makes them from a queue entry) read by
//! parsers we did not write: Python's `email` package as a MIME parser,
//! and s-nail as a mail reader over an mbox that holds one, as postie's
//! mbox writer would append it.

use std::path::Path;

use postie::dsn::{
    Action, DEFAULT_RETURN_LIMIT, Diagnostic, OriginalEnvelope, OriginalRecipient, RecipientReport,
    Report, Ret, Status, generate,
};
use postie::smtp::{Mailbox, ReversePath};
use postie::sys::LocalTime;

use crate::util::{have, mutt_piped, python, snail, snail_subjects};

const WHEN: LocalTime = LocalTime {
    year: 2026,
    month: 12,
    day: 6,
    hour: 10,
    minute: 31,
    second: 0,
    weekday: 0,
    utc_offset: 0,
};

fn mailbox(local: &str, domain: &str) -> Mailbox {
    Mailbox {
        local: local.into(),
        domain: Some(domain.into()),
    }
}

/// Two recipients that failed (one named by ORCPT, one with a diagnostic
/// that tries to add a header line), an ENVID, and RET as given.
fn report(ret: Option<Ret>) -> Report {
    Report {
        reporting_mta: "razorback.example".into(),
        arrival_date: WHEN,
        envelope: OriginalEnvelope {
            sender: mailbox("jon", "frogbog.example"),
            envid: Some("QQ314159 x".into()),
            ret,
        },
        recipients: vec![
            RecipientReport {
                final_recipient: mailbox("alice", "razorback.example"),
                original_recipient: Some(OriginalRecipient {
                    addr_type: "rfc822".into(),
                    address: "Alice@razorback.example".into(),
                }),
                action: Action::Failed,
                status: Status::parse("5.1.1").unwrap(),
                diagnostic: Some(Diagnostic::Smtp(
                    "550 5.1.1 <alice@razorback.example>... User unknown".into(),
                )),
                last_attempt: Some(WHEN),
            },
            RecipientReport {
                final_recipient: mailbox("bob", "razorback.example"),
                original_recipient: None,
                action: Action::Failed,
                status: Status::parse("5.2.2").unwrap(),
                diagnostic: Some(Diagnostic::Local("over quota\r\nX-Injected: yes".into())),
                last_attempt: None,
            },
        ],
        message_id: "20261206103100.A1.1".into(),
        date: WHEN,
        return_limit: DEFAULT_RETURN_LIMIT,
    }
}

/// An original message with 8-bit text, a `From ` line in its body, and
/// lines that look like MIME boundaries.
const ORIGINAL: &[u8] = b"From: jon@frogbog.example\n\
    To: alice@razorback.example\n\
    Subject: Demonstration of email\n\
    \n\
    caf\xc3\xa9\n\
    From here on\n\
    --postie-dsn=0\n\
    --\n";

/// What Python's `email` package (policy default) makes of `dsn`: one
/// `key=value` line per fact.
fn python_view(dsn: &[u8], dir: &Path) -> String {
    let path = dir.join("dsn.eml");
    std::fs::write(&path, dsn).unwrap();
    let script = r#"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
print("defects=%d" % len(m.defects))
print("multipart=%s" % m.is_multipart())
print("type=%s" % m.get_content_type())
print("report-type=%s" % m.get_param("report-type"))
print("to=%s" % m["To"])
print("from=%s" % m["From"])
print("subject=%s" % m["Subject"])
print("auto-submitted=%s" % m["Auto-Submitted"])
print("injected=%s" % m["X-Injected"])
parts = m.get_payload()
print("parts=%s" % ",".join(p.get_content_type() for p in parts))
for p in m.walk():
    if p.defects:
        print("part-defects=%s %s" % (p.get_content_type(), p.defects))
status = parts[1].get_payload()
print("blocks=%d" % len(status))
print("reporting-mta=%s" % status[0]["Reporting-MTA"])
print("envid=%s" % status[0]["Original-Envelope-Id"])
for r in status[1:]:
    print("rcpt=%s|%s|%s|%s|%s|%s" % (r["Final-Recipient"], r["Original-Recipient"],
        r["Action"], r["Status"], r["Diagnostic-Code"], r["X-Injected"]))
third = parts[2]
if third.get_content_type() == "message/rfc822":
    inner = third.get_payload(0)
    print("returned-subject=%s" % inner["Subject"])
    print("returned-body=%s" % inner.get_payload(decode=True).hex())
else:
    print("returned-headers=%s" % third.get_payload(decode=True).hex())
"#;
    python(script, &[path.to_str().unwrap()])
}

fn value<'a>(view: &'a str, key: &str) -> Vec<&'a str> {
    view.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn python_email_reads_a_dsn() {
    if !have("python3", "python_email_reads_a_dsn") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dsn = generate(&report(None), ORIGINAL).unwrap();
    let view = python_view(&dsn, dir.path());
    let one = |key: &str| -> String {
        let v = value(&view, key);
        assert_eq!(v.len(), 1, "{key} in\n{view}");
        v[0].to_owned()
    };
    assert_eq!(one("defects"), "0", "{view}");
    assert!(value(&view, "part-defects").is_empty(), "{view}");
    assert_eq!(one("multipart"), "True");
    assert_eq!(one("type"), "multipart/report");
    assert_eq!(one("report-type"), "delivery-status");
    // Python writes an angle-addr without its brackets.
    assert_eq!(one("to"), "jon@frogbog.example");
    assert_eq!(
        one("from"),
        "Mail Delivery System <MAILER-DAEMON@razorback.example>"
    );
    assert_eq!(one("subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(one("auto-submitted"), "auto-replied");
    assert_eq!(one("injected"), "None");
    assert_eq!(
        one("parts"),
        "text/plain,message/delivery-status,message/rfc822"
    );
    assert_eq!(one("blocks"), "3");
    assert_eq!(one("reporting-mta"), "dns; razorback.example");
    assert_eq!(one("envid"), "QQ314159+20x");
    assert_eq!(
        value(&view, "rcpt"),
        [
            "rfc822; alice@razorback.example|rfc822; Alice@razorback.example|failed|5.1.1\
             |smtp; 550 5.1.1 <alice@razorback.example>... User unknown|None",
            "rfc822; bob@razorback.example|None|failed|5.2.2\
             |X-Postie; over quota X-Injected: yes|None",
        ]
    );
    assert_eq!(one("returned-subject"), "Demonstration of email");
    let blank = ORIGINAL.windows(2).position(|w| w == b"\n\n").unwrap();
    assert_eq!(one("returned-body"), hex(&ORIGINAL[blank + 2..]));

    // RET=HDRS: the header alone, as text/rfc822-headers.
    let dsn = generate(&report(Some(Ret::Hdrs)), ORIGINAL).unwrap();
    let view = python_view(&dsn, dir.path());
    assert_eq!(value(&view, "defects"), ["0"], "{view}");
    assert_eq!(
        value(&view, "parts"),
        ["text/plain,message/delivery-status,text/rfc822-headers"]
    );
    assert_eq!(
        value(&view, "returned-headers"),
        [hex(&ORIGINAL[..blank + 1])]
    );

    // An original that holds the boundary the first notification used: the
    // next one picks another, and the returned message comes back whole.
    let full = String::from_utf8_lossy(&generate(&report(None), ORIGINAL).unwrap()).into_owned();
    let used = full
        .split_once("boundary=\"")
        .unwrap()
        .1
        .split_once('"')
        .unwrap()
        .0;
    let trap =
        format!("Subject: trap\n\n--{used}\nContent-Type: text/html\n\n<b>x</b>\n--{used}--\n");
    let dsn = generate(&report(None), trap.as_bytes()).unwrap();
    let view = python_view(&dsn, dir.path());
    assert_eq!(value(&view, "defects"), ["0"], "{view}");
    assert_eq!(
        value(&view, "parts"),
        ["text/plain,message/delivery-status,message/rfc822"]
    );
    assert_eq!(value(&view, "returned-subject"), ["trap"]);
    let body = trap.split_once("\n\n").unwrap().1;
    assert_eq!(value(&view, "returned-body"), [hex(body.as_bytes())]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An mbox holding `messages` as postie appends them (From_ line,
/// mboxrd quoting, a blank line after each).
fn write_mbox(path: &Path, messages: &[Vec<u8>]) {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(postie::mbox::from_line(&ReversePath::Null, &WHEN).as_bytes());
        postie::mbox::write_quoted_from(&mut out, &mut &m[..], postie::mbox::Quoting::Mboxrd)
            .unwrap();
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn snail_reads_a_dsn_in_a_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jon");
    let full = generate(&report(None), ORIGINAL).unwrap();
    let hdrs = generate(&report(Some(Ret::Hdrs)), ORIGINAL).unwrap();
    let after = b"From: alice@razorback.example\nSubject: after the bounce\n\nhi\n".to_vec();
    write_mbox(&path, &[full, hdrs, after]);
    let Some(subjects) = snail_subjects(&path, "snail_reads_a_dsn_in_a_mailbox") else {
        return;
    };
    // Three messages: neither the returned message nor its `From ` line
    // split the mailbox.
    assert_eq!(
        subjects,
        [
            "Undelivered Mail Returned to Sender",
            "Undelivered Mail Returned to Sender",
            "after the bounce"
        ]
    );
    // s-nail shows the parts of each notification, by type.
    let first = snail_show(&path, 1);
    for part in [
        "[-- #1.1 ",
        "text/plain",
        "[-- #1.2 ",
        "message/delivery-status",
        "[-- #1.3 ",
        "message/rfc822",
        "Subject: Demonstration of email",
        "<alice@razorback.example>: failed (5.1.1)",
    ] {
        assert!(first.contains(part), "{part} in\n{first}");
    }
    let second = snail_show(&path, 2);
    assert!(second.contains("text/rfc822-headers"), "{second}");
    assert!(!second.contains("message/rfc822"), "{second}");
}

/// s-nail's display of message `n` of the mailbox at `path` (its `type`
/// command in batch mode: each MIME part under a `[-- #n.i ... --]` line).
fn snail_show(path: &Path, n: usize) -> String {
    snail(
        path,
        &["-S", "ttycharset=utf-8"],
        &format!("type {n}\nquit\n"),
    )
}

/// The notice of failure about every pending user of `entry`, as the
/// runner makes it (`message_id` its own), if anyone is to be told.
fn failure_notice(
    entry: &postie::queue::Entry,
    message_id: &str,
) -> Option<postie::queue::Notification> {
    use postie::queue::{Notice, NoticeContext, Reported, notice};
    let is_local = |d: &str| d.eq_ignore_ascii_case("razorback.example");
    let ctx = NoticeContext {
        hostname: "razorback.example",
        now: WHEN,
        local_time: &postie::sys::localtime,
        is_local_domain: &is_local,
        return_limit: DEFAULT_RETURN_LIMIT,
        message_id,
    };
    let which: Vec<Reported> = entry
        .pending
        .iter()
        .map(|p| Reported {
            pending: p,
            last_attempt: Some(entry.received),
        })
        .collect();
    notice(entry, &which, Notice::Failed, &ctx, ORIGINAL).unwrap()
}

/// A queue entry from the local `jon`: `staff` (ORCPT given; jon and
/// alice, alice given up on while her mailbox was busy) and `bob` (over
/// quota, but NOTIFY=NEVER), returning headers only.
fn queue_entry() -> postie::queue::Entry {
    use postie::queue::{Entry, LastError, Notify, Pending, Recipient, Ret, StatusCode};
    let received = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_900_000);
    let pending = |rcpt, user: &str, code, text| Pending {
        rcpt,
        user: user.into(),
        attempts: 12,
        next_attempt: received,
        last_error: Some(LastError::new(StatusCode::parse(code).unwrap(), text)),
    };
    Entry {
        id: String::new(),
        log_id: "5A1B2C3.7".into(),
        received,
        size: ORIGINAL.len() as u64,
        trace: 0,
        sender: Some("jon@razorback.example".into()),
        submitter: None,
        envid: Some("QQ314159".into()),
        ret: Some(Ret::Hdrs),
        warned: None,
        recipients: vec![
            Recipient {
                address: "staff".into(),
                notify: None,
                orcpt: Some("rfc822;Staff@razorback.example".into()),
                users: vec!["jon".into(), "alice".into()],
            },
            Recipient {
                address: "bob@razorback.example".into(),
                notify: Some(Notify::Never),
                orcpt: None,
                users: vec!["bob".into()],
            },
        ],
        pending: vec![
            pending(
                0,
                "alice",
                "4.2.0",
                "mailbox alice: lock not obtained in time",
            ),
            pending(1, "bob", "5.2.2", "mailbox bob: over quota"),
        ],
    }
}

#[test]
fn python_email_reads_a_notice_from_the_queue() {
    if !have("python3", "python_email_reads_a_notice_from_the_queue") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut entry = queue_entry();
    let n = failure_notice(&entry, "20261206103100.Q1.1").expect("a notice for jon");
    assert_eq!(n.to, mailbox("jon", "razorback.example"));
    let view = python_view(&n.message, dir.path());
    assert_eq!(value(&view, "defects"), ["0"], "{view}");
    assert!(value(&view, "part-defects").is_empty(), "{view}");
    assert_eq!(value(&view, "type"), ["multipart/report"]);
    assert_eq!(value(&view, "report-type"), ["delivery-status"]);
    assert_eq!(value(&view, "to"), ["jon@razorback.example"]);
    assert_eq!(
        value(&view, "parts"),
        ["text/plain,message/delivery-status,text/rfc822-headers"]
    );
    assert_eq!(value(&view, "envid"), ["QQ314159"]);
    // One block: alice's, under the address jon wrote; bob said NEVER.
    assert_eq!(
        value(&view, "rcpt"),
        [
            "rfc822; staff@razorback.example|rfc822; Staff@razorback.example|failed|4.2.0\
          |X-Postie; mailbox alice: lock not obtained in time|None"
        ]
    );
    // The null sender is never told.
    entry.sender = None;
    assert!(failure_notice(&entry, "20261206103100.Q1.1").is_none());
}

/// Mutt, a second mail reader, reads a notice of failure made from a
/// queue entry, delivered in a mailbox: piping it decoded (`pipe_decode`)
/// gives the three parts of the multipart/report in turn, their MIME
/// structure undone (the explanation, the delivery-status fields, the
/// returned header), and nothing of the boundaries. mutt has no batch
/// mode: it runs in a pseudo-terminal (`script`), reading its keys from
/// `push`.
#[test]
fn mutt_reads_a_notice_from_the_queue() {
    let test = "mutt_reads_a_notice_from_the_queue";
    if !have("mutt", test) || !have("script", test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = failure_notice(&queue_entry(), "20261206103100.Q1.2").expect("a notice for jon");
    let mbox = dir.path().join("jon");
    write_mbox(&mbox, std::slice::from_ref(&n.message));
    let text = mutt_piped(
        &mbox,
        "pipe_decode=yes",
        "<pipe-message>cat > SHOWN<enter><quit>",
    );
    for part in [
        "Subject: Undelivered Mail Returned to Sender",
        "Your message could not be delivered",
        "Reporting-MTA: dns; razorback.example",
        "Original-Envelope-Id: QQ314159",
        "Final-Recipient: rfc822; staff@razorback.example",
        "Action: failed",
        "Status: 4.2.0",
        "Subject: Demonstration of email",
    ] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
    assert!(!text.contains("postie-dsn="), "a boundary left:\n{text}");
    assert!(
        !text.contains("Content-Type: message/delivery-status"),
        "{text}"
    );
}
