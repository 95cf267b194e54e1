//! What an administrator reads of the queue, as text: the listing of
//! `mailq` and `postie queue show` ([`listing`], sendmail's format), and
//! one entry in full ([`entry_in_full`], `postie queue show ID`). Pure:
//! entries in, text out (the times in local time).
//!
//! The listing is sendmail 8's (`printqueue` in its `queue.c`): a title
//! with the directory and the number of requests, the column header, per
//! entry a line with its id, a blank where sendmail marks a locked entry,
//! the size, the time (`ctime` cut after the minutes) and the sender, then
//! each pending recipient, the last error it got in parentheses above it,
//! and the total. postie's ids are longer than sendmail's 14 characters;
//! the columns after them move right.

use std::path::Path;
use std::time::SystemTime;

use super::record::Entry;

/// sendmail's column header.
pub const HEADER: &str =
    "-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------";

/// What `mailq` prints when nothing is queued.
pub const EMPTY: &str = "Mail queue is empty";

/// The listing of `entries` of the queue in `dir`, as sendmail prints it.
pub fn listing(dir: &Path, entries: &[Entry]) -> String {
    if entries.is_empty() {
        return format!("{EMPTY}\n");
    }
    let n = entries.len();
    let mut out = format!(
        "\t\t{} ({n} request{})\n{HEADER}\n",
        dir.display(),
        if n == 1 { "" } else { "s" }
    );
    for e in entries {
        let time = crate::sys::localtime(e.received).asctime();
        out.push_str(&format!(
            "{:<14} {:>8} {} <{}>\n",
            e.id,
            e.size,
            time.get(..16).unwrap_or(&time),
            e.sender.as_deref().unwrap_or_default()
        ));
        // Those not tried yet first, then the others under their last
        // error, each error once.
        let mut pending: Vec<_> = e
            .pending
            .iter()
            .map(|p| {
                let error = p
                    .last_error
                    .as_ref()
                    .map(|l| format!("{} {}", l.code, l.text));
                (error, recipient(e, p.rcpt, &p.user))
            })
            .collect();
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let mut shown: Option<&str> = None;
        for (error, rcpt) in &pending {
            if let Some(error) = error.as_deref().filter(|&x| shown != Some(x)) {
                out.push_str(&format!("\t\t ({error})\n"));
                shown = Some(error);
            }
            out.push_str(&format!("\t\t\t\t\t {rcpt}\n"));
        }
    }
    out.push_str(&format!("\t\tTotal requests: {n}\n"));
    out
}

/// A pending recipient: its address as given, and the local user when the
/// address is not simply that user's (an alias, a list).
fn recipient(e: &Entry, rcpt: usize, user: &str) -> String {
    let Some(r) = e.recipients.get(rcpt) else {
        return format!("<{user}>");
    };
    let local = r.address.split('@').next().unwrap_or_default();
    if r.users.len() == 1 && local.eq_ignore_ascii_case(user) {
        format!("<{}>", r.address)
    } else {
        format!("<{}> -> {user}", r.address)
    }
}

/// Entry `e` in full, one field a line: its id, log id, received time,
/// size, sender, submitter, ENVID, RET and when the delay warning went
/// if any, each recipient (with its
/// NOTIFY and ORCPT if any) and the users it expands to, and each pending
/// user with its attempts, next attempt and last error.
pub fn entry_in_full(e: &Entry) -> String {
    let mut out = format!(
        "id: {}\nlog-id: {}\nreceived: {}\nsize: {}\nsender: <{}>\n",
        e.id,
        e.log_id,
        time(e.received),
        e.size,
        e.sender.as_deref().unwrap_or_default()
    );
    if let Some(s) = &e.submitter {
        out.push_str(&format!("submitter: {} (uid {})\n", s.user, s.uid));
    }
    if let Some(envid) = &e.envid {
        out.push_str(&format!("envid: {envid}\n"));
    }
    if let Some(ret) = e.ret {
        out.push_str(&format!("ret: {ret}\n"));
    }
    if let Some(w) = e.warned {
        out.push_str(&format!("delay warning sent: {}\n", time(w)));
    }
    for r in &e.recipients {
        out.push_str(&format!("recipient: <{}>", r.address));
        if let Some(n) = r.notify {
            out.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &r.orcpt {
            out.push_str(&format!(" ORCPT={o}"));
        }
        out.push_str(&format!("\n\tusers: {}\n", r.users.join(" ")));
    }
    for p in &e.pending {
        let from = e
            .recipients
            .get(p.rcpt)
            .map_or(String::new(), |r| format!(" of <{}>", r.address));
        out.push_str(&format!(
            "pending: {}{from}\n\tattempts: {}\n\tnext attempt: {}\n",
            p.user,
            p.attempts,
            time(p.next_attempt)
        ));
        if let Some(l) = &p.last_error {
            out.push_str(&format!("\tlast error: {} {}\n", l.code, l.text));
        }
    }
    out
}

/// `t` in local time, as asctime(3) writes it.
fn time(t: SystemTime) -> String {
    crate::sys::localtime(t).asctime()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::queue::record::{Notify, Ret};
    use crate::queue::{LastError, Pending, Recipient, StatusCode};

    fn entry(id: &str, sender: Option<&str>) -> Entry {
        let received = UNIX_EPOCH + Duration::from_secs(1_764_900_000);
        let busy = LastError::new(
            StatusCode::parse("4.2.0").unwrap(),
            "mailbox busy: locked by another program",
        );
        let pending = |rcpt, user: &str, last_error: Option<LastError>| Pending {
            rcpt,
            user: user.into(),
            attempts: 1,
            next_attempt: received,
            last_error,
        };
        Entry {
            id: id.into(),
            log_id: "5A1B2C3.7".into(),
            received,
            size: 1234,
            trace: 0,
            sender: sender.map(str::to_owned),
            submitter: None,
            envid: None,
            ret: None,
            warned: None,
            recipients: vec![
                Recipient {
                    address: "staff@frogbog".into(),
                    notify: None,
                    orcpt: None,
                    users: vec!["jon".into(), "alice".into(), "bob".into()],
                },
                Recipient {
                    address: "Carol@frogbog".into(),
                    notify: None,
                    orcpt: None,
                    users: vec!["carol".into()],
                },
            ],
            pending: vec![
                pending(0, "alice", Some(busy.clone())),
                pending(0, "bob", Some(busy)),
                pending(1, "carol", None),
            ],
        }
    }

    #[test]
    fn nothing_queued() {
        assert_eq!(listing(Path::new("/q"), &[]), "Mail queue is empty\n");
    }

    #[test]
    fn entries_as_sendmail_lists_them() {
        let a = entry("0069331a20c0ffee0000000001", Some("jon@frogbog"));
        let b = entry("0069331a20c0ffee0000000002", None);
        let time = &crate::sys::localtime(a.received).asctime()[..16];
        let text = listing(Path::new("/var/spool/postie"), &[a, b]);
        let want = format!(
            "\t\t/var/spool/postie (2 requests)\n\
             {HEADER}\n\
             0069331a20c0ffee0000000001     1234 {time} <jon@frogbog>\n\
             \t\t\t\t\t <Carol@frogbog>\n\
             \t\t (4.2.0 mailbox busy: locked by another program)\n\
             \t\t\t\t\t <staff@frogbog> -> alice\n\
             \t\t\t\t\t <staff@frogbog> -> bob\n\
             0069331a20c0ffee0000000002     1234 {time} <>\n\
             \t\t\t\t\t <Carol@frogbog>\n\
             \t\t (4.2.0 mailbox busy: locked by another program)\n\
             \t\t\t\t\t <staff@frogbog> -> alice\n\
             \t\t\t\t\t <staff@frogbog> -> bob\n\
             \t\tTotal requests: 2\n"
        );
        assert_eq!(text, want);
    }

    #[test]
    fn one_entry_in_full() {
        let mut e = entry("0069331a20c0ffee0000000001", Some("jon@frogbog"));
        e.submitter = Some(crate::smtp::Submitter {
            uid: 1000,
            user: "jon".into(),
        });
        e.envid = Some("QQ314159".into());
        e.ret = Some(Ret::Hdrs);
        e.recipients[0].notify = Some(Notify::On {
            success: false,
            failure: true,
            delay: true,
        });
        e.recipients[0].orcpt = Some("rfc822;staff@frogbog".into());
        e.pending[2].attempts = 0;
        let t = crate::sys::localtime(e.received).asctime();
        let want = format!(
            "id: 0069331a20c0ffee0000000001\n\
             log-id: 5A1B2C3.7\n\
             received: {t}\n\
             size: 1234\n\
             sender: <jon@frogbog>\n\
             submitter: jon (uid 1000)\n\
             envid: QQ314159\n\
             ret: HDRS\n\
             recipient: <staff@frogbog> NOTIFY=FAILURE,DELAY ORCPT=rfc822;staff@frogbog\n\
             \tusers: jon alice bob\n\
             recipient: <Carol@frogbog>\n\
             \tusers: carol\n\
             pending: alice of <staff@frogbog>\n\
             \tattempts: 1\n\
             \tnext attempt: {t}\n\
             \tlast error: 4.2.0 mailbox busy: locked by another program\n\
             pending: bob of <staff@frogbog>\n\
             \tattempts: 1\n\
             \tnext attempt: {t}\n\
             \tlast error: 4.2.0 mailbox busy: locked by another program\n\
             pending: carol of <Carol@frogbog>\n\
             \tattempts: 0\n\
             \tnext attempt: {t}\n"
        );
        assert_eq!(entry_in_full(&e), want);
        // A null sender, and nothing optional.
        let e = entry("0069331a20c0ffee0000000002", None);
        let text = entry_in_full(&e);
        assert!(text.contains("\nsender: <>\n"), "{text}");
        assert!(!text.contains("submitter") && !text.contains("envid") && !text.contains("ret:"));
        assert!(
            !text.contains("NOTIFY") && !text.contains("ORCPT"),
            "{text}"
        );
    }
}
