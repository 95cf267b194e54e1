//! `postie check`'s look at the queue directory (`--queue-dir`): whether
//! the store would take it ([`Queue::open`]: a directory of the user
//! postie runs as that nobody else may write), and what
//! [`Queue::list`] finds in it: the entries, the broken ones it skips,
//! the age of the oldest. Apart from the other checks because it is the
//! only one that reads the queue (and the scan may remove the leftovers
//! of a crash, as every scan of the store does).
//!
//! A missing directory is a warning that says how to make it (postie runs
//! without a queue then: a recipient that cannot take a message at once
//! defers all of it); an unsafe one is an error.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Report, Verdict};
use crate::queue::Queue;

/// At most this many broken names are listed one by one.
const SHOWN_BROKEN: usize = 10;

/// The queue in `dir`: missing is a warning, unsafe an error, and its
/// entries counted.
pub(super) fn queue(r: &mut Report, dir: &Path) {
    let shown = dir.display();
    let root = nix::unistd::geteuid().is_root();
    let q = match Queue::open(dir) {
        Ok(q) => q,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let how = if root {
                format!("install -d -o root -g root -m 0700 {shown}")
            } else {
                format!("install -d -m 0700 {shown}")
            };
            return r.warn(format!(
                "queue {shown}: no such directory; without it a recipient that cannot take a \
                 message at once defers the whole message: {how}"
            ));
        }
        Err(e) => {
            // Not root, the queue of a postie started as root is not ours
            // to look into, and is no error of this user's postie.
            if !root && roots_and_safe(dir) {
                return r.warn(format!(
                    "queue {shown}: root's, mode 0700 or stricter: right for postie started \
                     as root; run postie check as root to look into it"
                ));
            }
            let text = e.to_string();
            let prefix = format!("queue {shown}:");
            return r.error(
                Verdict::Config,
                if text.starts_with(&prefix) {
                    text
                } else {
                    format!("{prefix} {text}")
                },
            );
        }
    };
    let listing = match q.list() {
        Ok(l) => l,
        Err(e) => return r.error(Verdict::Config, format!("queue {shown}: {e}")),
    };
    let n = listing.entries.len();
    let broken = listing.skipped.len();
    let oldest = listing
        .entries
        .iter()
        .map(|e| e.received)
        .min()
        .map(|t| {
            let age = SystemTime::now()
                .duration_since(t)
                .unwrap_or(Duration::ZERO);
            format!(", the oldest {} old", age_text(age))
        })
        .unwrap_or_default();
    r.ok(format!(
        "queue {shown}: {n} entr{}, {broken} broken{oldest}",
        if n == 1 { "y" } else { "ies" }
    ));
    for name in &listing.removed {
        r.ok(format!(
            "queue {shown}: {name:?} removed: the leftover of a crash"
        ));
    }
    for (name, why) in listing.skipped.iter().take(SHOWN_BROKEN) {
        r.warn(format!("queue {shown}: {name:?} skipped: {why}"));
    }
    if broken > SHOWN_BROKEN {
        r.warn(format!(
            "queue {shown}: {} more names skipped",
            broken - SHOWN_BROKEN
        ));
    }
}

/// True if `dir` is a directory of root's that only root may write and
/// nobody else read: the queue as the package makes it.
fn roots_and_safe(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o077 == 0)
}

/// `age` as days, hours, minutes or seconds, the two largest units.
fn age_text(age: Duration) -> String {
    let s = age.as_secs();
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::check::Level;
    use crate::queue::Entry;

    fn checked(dir: &Path) -> Report {
        let mut r = Report::default();
        queue(&mut r, dir);
        r
    }

    /// A queue directory as the package makes it, but of this user.
    fn queue_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn entry(received: SystemTime) -> Entry {
        crate::queue::testutil::entry(received)
    }

    #[test]
    fn a_missing_queue_is_a_warning_that_says_how_to_make_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("queue");
        let r = checked(&missing);
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        let w = r.texts(Level::Warning);
        assert_eq!(w.len(), 1, "{r:?}");
        assert!(
            w[0].starts_with(&format!("queue {}: no such directory", missing.display())),
            "{w:?}"
        );
        assert!(
            w[0].contains("install -d ")
                && w[0].ends_with(&format!("-m 0700 {}", missing.display())),
            "{w:?}"
        );
    }

    #[test]
    fn entries_broken_names_and_the_oldest_are_counted() {
        let dir = queue_dir();
        let q = Queue::open(dir.path()).unwrap();
        let now = SystemTime::now();
        for age in [3600, 2 * 86_400 + 3 * 3600 + 30] {
            let mut e = entry(now - Duration::from_secs(age));
            q.create(&mut e, &mut &b"Subject: hi\n\nhello\n"[..])
                .unwrap();
        }
        let r = checked(dir.path());
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        let want = format!(
            "queue {}: 2 entries, 0 broken, the oldest 2d 3h old",
            dir.path().display()
        );
        assert_eq!(r.texts(Level::Ok), [want.as_str()], "{r:?}");
        assert!(r.texts(Level::Warning).is_empty(), "{r:?}");

        // A garbled entry, and a symbolic link planted as an entry: both
        // skipped, counted as broken and named; the link is not followed.
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "secret\n").unwrap();
        let garbled = format!("qf{:026x}", 1u8);
        let planted = format!("qf{:026x}", 2u8);
        std::fs::write(dir.path().join(&garbled), "not an entry\n").unwrap();
        std::os::unix::fs::symlink(secret.path(), dir.path().join(&planted)).unwrap();
        let r = checked(dir.path());
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        assert!(
            r.texts(Level::Ok)[0].starts_with(&format!(
                "queue {}: 2 entries, 2 broken, the oldest 2d 3h",
                dir.path().display()
            )),
            "{r:?}"
        );
        let w = r.texts(Level::Warning);
        assert_eq!(w.len(), 2, "{r:?}");
        assert!(
            w.iter()
                .any(|t| t.contains(&format!("{garbled:?} skipped: garbled"))),
            "{w:?}"
        );
        assert!(
            w.iter().any(|t| t.contains(&format!(
                "{planted:?} skipped: not a queue file of ours (a symbolic link"
            ))),
            "{w:?}"
        );
        assert!(!w.iter().any(|t| t.contains("secret")), "{w:?}");
    }

    #[test]
    fn a_queue_others_may_write_is_an_error() {
        let dir = queue_dir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let r = checked(dir.path());
        assert_eq!(r.verdict, Verdict::Config, "{r:?}");
        let e = r.texts(Level::Error);
        assert!(
            e[0].starts_with(&format!(
                "queue {}: mode 0777 lets others write it",
                dir.path().display()
            )),
            "{e:?}"
        );
        assert!(r.texts(Level::Ok).is_empty(), "{r:?}");
    }

    #[test]
    fn a_file_as_the_queue_is_an_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let r = checked(f.path());
        assert_eq!(r.verdict, Verdict::Config, "{r:?}");
        assert_eq!(
            r.texts(Level::Error),
            [format!("queue {}: not a directory", f.path().display()).as_str()]
        );
    }

    /// A symbolic link planted as the queue directory, to a directory
    /// anyone may write (/tmp) or, as root, to one of another user: the
    /// store refuses it, and check says so, without looking inside.
    #[test]
    fn a_symlink_to_a_directory_not_ours_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("queue");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        let r = checked(&link);
        assert_eq!(r.verdict, Verdict::Config, "{r:?}");
        assert!(r.texts(Level::Ok).is_empty(), "{r:?}");
        assert!(r.texts(Level::Warning).is_empty(), "{r:?}");
        if !nix::unistd::geteuid().is_root() {
            println!(
                "SKIP a_symlink_to_a_directory_not_ours_is_an_error (another user's): not root"
            );
            return;
        }
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            println!(
                "SKIP a_symlink_to_a_directory_not_ours_is_an_error (another user's): no user nobody"
            );
            return;
        };
        let theirs = queue_dir();
        std::os::unix::fs::chown(theirs.path(), Some(nobody.uid.as_raw()), None).unwrap();
        std::fs::write(theirs.path().join(format!("qf{:026x}", 3u8)), "x").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(theirs.path(), &link).unwrap();
        let r = checked(&link);
        assert_eq!(r.verdict, Verdict::Config, "{r:?}");
        let e = r.texts(Level::Error);
        assert!(
            e[0].starts_with(&format!(
                "queue {}: owned by uid {}",
                link.display(),
                nobody.uid
            )),
            "{e:?}"
        );
        assert!(r.texts(Level::Ok).is_empty(), "{r:?}");
    }

    #[test]
    fn ages() {
        assert_eq!(age_text(Duration::from_secs(0)), "0s");
        assert_eq!(age_text(Duration::from_secs(59)), "59s");
        assert_eq!(age_text(Duration::from_secs(61)), "1m 1s");
        assert_eq!(age_text(Duration::from_secs(3 * 3600 + 120)), "3h 2m");
        assert_eq!(
            age_text(Duration::from_secs(5 * 86_400 + 7 * 3600 + 59)),
            "5d 7h"
        );
    }
}
