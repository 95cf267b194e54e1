//! Test fixtures shared by the journal's test modules (and by
//! [`crate::deliver`]'s, through [`crashed_delivery`]): mailbox options, the
//! recipients, messages, a crashed delivery as another process leaves it,
//! and recovery as run by a process of its own.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{AppendStart, Journal, Journals, PREFIX, Summary, Want, recover};
use crate::mbox::{self, LockHooks, LockId, MboxOptions, Quoting};
use crate::users::User;

/// The mailbox options of the tests: mboxrd, a 5 s lock timeout.
pub(super) fn opts() -> MboxOptions {
    MboxOptions {
        mode: 0o600,
        quoting: Quoting::Mboxrd,
        lock_timeout: Duration::from_secs(5),
        stale_lock: mbox::DEFAULT_STALE_LOCK,
    }
}

/// A deadline no test reaches.
pub(super) fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// The user `name`, with the identity the test runs as.
pub(super) fn me(name: &str) -> User {
    User {
        name: name.into(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        ..Default::default()
    }
}

/// A whole append: the From_ line, a trace header with an ID, a body,
/// the blank line.
pub(super) fn message(id: &str, body: &str) -> Vec<u8> {
    format!(
        "From a@b.example Sun Nov  1 06:05:04 2026\nReceived: by h with SMTP id {id}\nSubject: t\n\n{body}\n\n"
    )
    .into_bytes()
}

/// The mailbox `name`, written with the identity the test runs as.
pub(super) fn want(name: &str) -> Want {
    let u = me(name);
    Want {
        name: name.into(),
        uid: u.uid,
        gid: u.gid,
    }
}

/// Recovery as a process with no journal of its own in `spool` runs
/// it (then gone: its journals removed).
pub(super) fn recover_until(spool: &Path, deadline: Instant) -> Summary {
    let js = Journals::default();
    let s = recover(spool, &opts(), deadline, &js, None);
    js.close();
    s
}

/// [`recover_until`] a deadline no test reaches.
pub(super) fn rec(spool: &Path) -> Summary {
    recover_until(spool, far())
}

/// The names of the journals in `spool`, sorted.
pub(super) fn journals(spool: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    v.sort();
    v
}

/// [`crashed_delivery`] that had recorded where the appends begin.
pub(super) fn crashed(spool: &Path, names: &[&str], before: &[u8], msg: &[u8], written: &[usize]) {
    crashed_delivery(spool, names, before, msg, written, true);
}

/// The journal as it was before the system went down: written before
/// the last boot.
pub(super) fn from_before_boot(path: &Path) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(1)).unwrap();
}

/// A delivery of `msg` (its prefix: the first two lines) to the mailboxes
/// `names` in `spool` (each holding `before`, owned by whoever runs the
/// test) by another process, that crashed after appending `written[i]`
/// bytes of it to the i-th; with `hint`, it had recorded where the appends
/// begin. The journal and the dotlocks are left as a SIGKILL leaves them.
pub(crate) fn crashed_delivery(
    spool: &Path,
    names: &[&str],
    before: &[u8],
    msg: &[u8],
    written: &[usize],
    hint: bool,
) -> PathBuf {
    let opts = MboxOptions {
        mode: 0o600,
        quoting: Quoting::Mboxrd,
        lock_timeout: Duration::from_secs(5),
        stale_lock: mbox::DEFAULT_STALE_LOCK,
    };
    let far = Instant::now() + Duration::from_secs(60);
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let second_line = msg
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    let mut j = Journal::create(spool).unwrap();
    j.begin().unwrap();
    let wants: Vec<Want> = names
        .iter()
        .map(|n| Want {
            name: n.to_string(),
            uid,
            gid,
        })
        .collect();
    j.intend(&msg[..second_line], msg.len() as u64, &wants)
        .unwrap();
    let mut locked = Vec::new();
    for n in names {
        let path = spool.join(n);
        std::fs::write(&path, before).unwrap();
        let mut record = |id: LockId| j.record_lock(n, id);
        let mut hooks = LockHooks {
            record: Some(&mut record),
            ..LockHooks::default()
        };
        let owner = User {
            name: n.to_string(),
            uid,
            gid,
            ..Default::default()
        };
        let mb = mbox::open_locked_with(&path, &owner, &opts, far, &mut hooks).unwrap();
        locked.push(mb);
    }
    if hint {
        let starts: Vec<AppendStart> = locked
            .iter()
            .zip(names)
            .map(|(mb, n)| {
                let (dev, ino) = mb.file_id();
                AppendStart {
                    name: n.to_string(),
                    dev,
                    ino,
                    old_size: mb.old_size(),
                }
            })
            .collect();
        j.record_starts(&starts).unwrap();
    }
    for (n, w) in names.iter().zip(written) {
        let mut f = OpenOptions::new().append(true).open(spool.join(n)).unwrap();
        io::Write::write_all(&mut f, &msg[..*w]).unwrap();
    }
    // The crash: fcntl and flock locks go with the process, the dotlocks
    // and the journal stay.
    for mb in locked {
        mb.unlock_keeping_dotlock();
    }
    j.path().to_owned()
}
