//! What recovery does as a target's owner: the identity it acts as for
//! each target of a dead delivery (the one its journal records; never
//! root for a file target, which lies on a path a user may control), and
//! the removal of the dotlocks the dead delivery left, each as that
//! identity; and of the temporary files of dotlocks that a process killed
//! while it made one left in the spool. Both `recover.rs` and `undo.rs`
//! use it.

use std::io;
use std::path::Path;

use super::record::{Want, dotlock_path, valid_file_name};
use crate::mbox::LockId;
use crate::sys;

/// Runs the caller's file operations as `uid`/`gid` when we are root.
pub(super) fn as_user(uid: u32, gid: u32) -> io::Result<Option<sys::FsIdentity>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    sys::become_fs(uid, gid).map(Some)
}

/// The identity recovery handles the target `w` with: its own, but never
/// root for a file target (outside the spool, on a path a user may
/// control): `None` then, and the file is left alone.
pub(super) fn identity(w: &Want) -> Option<(u32, u32)> {
    let root = nix::unistd::geteuid().is_root();
    (!(root && w.uid == 0 && valid_file_name(&w.name))).then_some((w.uid, w.gid))
}

/// Removes the dotlocks a dead delivery made that are still there: a
/// mailbox's as ourselves (the spool is ours), a file target's as the
/// identity its intent (`wants`) names, and not at all without one.
pub(super) fn remove_dotlocks(
    spool: &Path,
    journal: &str,
    locks: &[(String, LockId)],
    wants: &[Want],
) {
    for (mailbox, id) in locks {
        let lock = dotlock_path(spool, mailbox);
        let _id = if valid_file_name(mailbox) {
            let who = wants.iter().find(|w| w.name == *mailbox).and_then(identity);
            match who.map(|(uid, gid)| as_user(uid, gid)) {
                Some(Ok(id)) => id,
                Some(Err(e)) => {
                    log::warn!("recovery: {journal}: {}: {e}", lock.display());
                    continue;
                }
                None => {
                    log::warn!(
                        "recovery: {journal}: {}: no identity to remove it as; left alone",
                        lock.display()
                    );
                    continue;
                }
            }
        } else {
            None
        };
        if let Ok(meta) = std::fs::symlink_metadata(&lock) {
            if LockId::of(&meta) == *id {
                match std::fs::remove_file(&lock) {
                    Ok(()) => log::info!(
                        "recovery: {journal}: removed {}, left by the interrupted delivery",
                        lock.display()
                    ),
                    Err(e) => log::warn!("recovery: {journal}: {}: {e}", lock.display()),
                }
            }
        }
    }
}

/// Removes, from the spool `spool`, the temporary files of dotlocks that
/// a process killed in the middle of making a lock left
/// (`.MAILBOX.lk.PID.COUNTER.RANDOM`, what `crate::mbox::lock` makes and
/// links to `MAILBOX.lock`, then removes): those of a process that is
/// gone, and any older than `stale` (a pid may be reused). A temporary
/// lives for a moment; one removed under a live locker only makes its
/// lock attempt fail and be tried again. A name still linked to a
/// dotlock (two links) is left to the dotlock's recovery. Returns how
/// many were removed.
pub(super) fn remove_dead_lock_temporaries(spool: &Path, stale: std::time::Duration) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir(spool) else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(lock_temporary_pid) else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() || meta.nlink() != 1 {
            continue;
        }
        let gone = process_gone(pid);
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= stale);
        if (gone || old) && std::fs::remove_file(&path).is_ok() {
            log::info!(
                "recovery: {}: a lock's temporary file left by a process that died; removed",
                path.display()
            );
            removed += 1;
        }
    }
    removed
}

/// Whether no process `pid` runs: none has it, or it is a zombie (a
/// process killed whose parent has not reaped it yet, as after a SIGKILL
/// of a whole process group).
fn process_gone(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        == Err(nix::errno::Errno::ESRCH)
    {
        return true;
    }
    // /proc/PID/stat: "PID (COMM) STATE ...", COMM may hold anything.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// The pid in the name of a dotlock's temporary file
/// (`.MAILBOX.lk.PID.COUNTER.RANDOM`, RANDOM 16 hex digits), if it is
/// one.
fn lock_temporary_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".lk.")?;
    let mut parts = tail.split('.');
    let (pid, count, random) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = parts.next().is_none()
        && digits(pid)
        && digits(count)
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| pid.parse().ok()).flatten().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lock_temporary_names() {
        assert_eq!(
            lock_temporary_pid(".jon.lk.123.0.00112233445566ff"),
            Some(123)
        );
        assert_eq!(lock_temporary_pid(".a.b.lk.9.12.00112233445566ff"), Some(9));
        for not in [
            "jon.lk.123.0.00112233445566ff",
            ".jon.lk.123.0.0011223344556",
            ".jon.lk.x.0.00112233445566ff",
            ".jon.lk.123.0.00112233445566ff.1",
            ".jon.lock",
            ".jon.lk.0.0.00112233445566ff",
        ] {
            assert_eq!(lock_temporary_pid(not), None, "{not}");
        }
    }

    /// A dead process's temporary goes; a live one's (ours), one still
    /// linked to its dotlock, and anything else stay.
    #[test]
    fn only_dead_processes_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A pid no process has: the kernel's pid_max is at most 2^22.
        let dead = d.join(".jon.lk.99999999.0.00112233445566ff");
        let live = d.join(format!(".jon.lk.{}.1.00112233445566ff", std::process::id()));
        let linked = d.join(".alice.lk.99999999.2.00112233445566ff");
        let other = d.join(".postie-txn.1.2.0123456789abcdef");
        for f in [&dead, &live, &linked, &other] {
            std::fs::write(f, b"0\n").unwrap();
        }
        std::fs::hard_link(&linked, d.join("alice.lock")).unwrap();
        assert_eq!(remove_dead_lock_temporaries(d, Duration::from_secs(300)), 1);
        assert!(!dead.exists());
        assert!(live.exists() && linked.exists() && other.exists());
        // Past the stale age, a live pid's goes too (pids are reused).
        assert_eq!(remove_dead_lock_temporaries(d, Duration::ZERO), 1);
        assert!(!live.exists() && linked.exists());
    }
}
