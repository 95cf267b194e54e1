//! `mailq` and `sendmail -bp`: the queue (`--queue-dir`), listed in
//! sendmail's format, for root only.
//!
//! The queue is the delivery process's own (root's, mode 0700); as in
//! sendmail with `PrivacyOptions=restrictmailq`, another user is refused
//! (EX_NOPERM) rather than shown an empty queue. Root reads it through
//! [`Queue::open`] and [`Queue::list`], which refuse a directory that is
//! not root's or that others may write, and skip (and never follow) a name
//! in it that is not one of the queue's own files.
//!
//! The format is sendmail 8's (`printqueue` in its `queue.c`): a title
//! with the directory and the number of requests, the column header, per
//! entry a line with its id, a blank where sendmail marks a locked entry,
//! the size, the time (`ctime` cut after the minutes) and the sender, then each pending recipient, the last error it got in
//! parentheses above it, and the total. postie's ids are longer than
//! sendmail's 14 characters; the columns after them move right.

use std::io;
use std::path::Path;

use crate::cli::Options;
use crate::exit::{EX_CONFIG, EX_IOERR, EX_NOPERM, EX_OK};
use crate::queue::{Entry, Queue};

/// sendmail's column header.
pub const HEADER: &str =
    "-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------";

/// What `mailq` prints when nothing is queued.
pub const EMPTY: &str = "Mail queue is empty";

/// Lists the queue on stdout and returns the exit status.
pub(super) fn print_queue(opts: &Options) -> u8 {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "postie: you are not permitted to see the queue: only root may (the queue is the \
             delivery process's own)"
        );
        return EX_NOPERM;
    }
    let listing = match Queue::open(&opts.queue_dir).and_then(|q| q.list()) {
        Ok(l) => l,
        // Nothing writes the queue yet: no directory, nothing queued.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            println!("{EMPTY}");
            return EX_OK;
        }
        Err(e) => {
            eprintln!("postie: cannot list the queue: {e}");
            return if e.kind() == io::ErrorKind::PermissionDenied {
                EX_CONFIG
            } else {
                EX_IOERR
            };
        }
    };
    print!("{}", format(&opts.queue_dir, &listing.entries));
    if !listing.skipped.is_empty() {
        eprintln!(
            "postie: {} name{} in {} skipped as not an entry of the queue's own; \
             postie check names them",
            listing.skipped.len(),
            if listing.skipped.len() == 1 { "" } else { "s" },
            opts.queue_dir.display()
        );
    }
    EX_OK
}

/// The listing of `entries` of the queue in `dir`, as sendmail prints it.
pub fn format(dir: &Path, entries: &[Entry]) -> String {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
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
            sender: sender.map(str::to_owned),
            submitter: None,
            envid: None,
            ret: None,
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
        assert_eq!(format(Path::new("/q"), &[]), "Mail queue is empty\n");
    }

    #[test]
    fn entries_as_sendmail_lists_them() {
        let a = entry("0069331a20c0ffee0000000001", Some("jon@frogbog"));
        let b = entry("0069331a20c0ffee0000000002", None);
        let time = &crate::sys::localtime(a.received).asctime()[..16];
        let text = format(Path::new("/var/spool/postie"), &[a, b]);
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
}
