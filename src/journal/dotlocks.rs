//! What recovery does as a target's owner: the identity it acts as for
//! each target of a dead delivery (the one its journal records; never
//! root for a file target, which lies on a path a user may control), and
//! the removal of the dotlocks the dead delivery left, each as that
//! identity. Both `recover.rs` and `undo.rs` use it.

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
