//! `postie check`'s look at the spool directory, and what the delivering
//! process may make in it ([`spool_access`], also asked by `serve` and
//! `inetd` at start): its owner, group and mode against Debian's
//! `/var/mail`, and whether journals, mailboxes and dotlocks can be
//! created with the identities delivery uses, tried with those very
//! identities (setfsuid). Apart from the other checks because it is the
//! one that takes on other identities.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{AccessFlags, Gid, Group, Uid, User as PwUser};

use super::{Report, Verdict};
use crate::users::mail_gid;

/// The spool: a directory (else an error), and as Debian ships
/// `/var/mail`: owner root, group `mail`, mode 2775, i.e. writable by group
/// mail with the setgid (or at least the sticky) bit; a deviation is a
/// warning, since postie itself writes as the recipient. A spool in which
/// no journal can be made is an error, one in which not every recipient's
/// mailbox can be made a warning ([`spool_access`]).
pub(super) fn spool(r: &mut Report, dir: &Path) {
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return r.error(Verdict::Config, format!("spool {shown}: not a directory")),
        Err(e) => return r.error(Verdict::Config, format!("spool {shown}: {e}")),
    };
    let mode = meta.mode() & 0o7777;
    let owner = user_name(meta.uid());
    let group = group_name(meta.gid());
    r.ok(format!(
        "spool {shown}: a directory, owner {owner}, group {group}, mode {mode:04o}"
    ));
    if meta.uid() != 0 {
        r.warn(format!("spool {shown}: owned by {owner}, not root"));
    }
    match mail_gid() {
        Some(mail) if mail == meta.gid() => {}
        Some(_) => r.warn(format!("spool {shown}: group {group}, not mail")),
        None => r.warn(format!(
            "spool {shown}: this host has no group mail, which other mail programs expect"
        )),
    }
    if mode & 0o020 == 0 {
        r.warn(format!(
            "spool {shown}: mode {mode:04o} is not writable by the group (want 2775)"
        ));
    }
    if mode & 0o3000 == 0 {
        r.warn(format!(
            "spool {shown}: mode {mode:04o} has neither the setgid nor the sticky bit (want 2775)"
        ));
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        r.warn(format!(
            "spool {shown}: writable by anyone without the sticky bit: any user can remove others' mailboxes"
        ));
    }
    match spool_access(dir) {
        SpoolAccess::Good => {}
        SpoolAccess::Partial(why) => r.warn(why),
        SpoolAccess::Unusable(why) => r.error(Verdict::Config, why),
    }
}

fn user_name(uid: u32) -> String {
    match PwUser::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => format!("gid {gid}"),
    }
}

/// What the spool lets the delivering process do, found out with the
/// identities it writes with: itself for the journals (root, or the user
/// postie runs as), and, started as root, each recipient's uid with group
/// `mail` (else the recipient's primary group) for a new mailbox and the
/// `USER.lock` dotlock (see [`crate::deliver`]). Used at start by `serve`
/// and `inetd`, and by `postie check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolAccess {
    /// Journals, and every recipient's mailbox and dotlock, can be made.
    Good,
    /// Journals can be made, but not every recipient's mailbox and
    /// dotlock: the text says whose mail can arrive and what to do.
    Partial(String),
    /// Nothing can be delivered: no journal can be made. The text says why.
    Unusable(String),
}

/// Whether this thread, with its filesystem identity, may create files in
/// `dir` (faccessat with AT_EACCESS checks with the fsuid and fsgid, and
/// without root's capabilities once the fsuid is not 0).
fn may_create_in(dir: &Path) -> nix::Result<()> {
    nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
}

/// `owner:group mode` of a directory, as `ls -l` and chmod would say it.
fn described(meta: &std::fs::Metadata) -> String {
    format!(
        "{}:{} {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    )
}

/// See [`SpoolAccess`]. `dir` must exist (the configuration checks that).
pub fn spool_access(dir: &Path) -> SpoolAccess {
    let shown = dir.display();
    let me = nix::unistd::geteuid();
    if let Err(e) = may_create_in(dir) {
        let who = if me.is_root() {
            "postie".to_owned()
        } else {
            format!("postie (uid {me})")
        };
        return SpoolAccess::Unusable(format!(
            "spool {shown}: {who} cannot create files in it ({}): no journal, mailbox or dotlock can be made, so no mail can be delivered; {}",
            e.desc(),
            if me.is_root() {
                "use a writable spool (--spool)".to_owned()
            } else {
                format!("run postie as root, or use a spool uid {me} can write (--spool)")
            }
        ));
    }
    if !me.is_root() {
        // Everything is written as ourselves, which was just checked.
        return SpoolAccess::Good;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return SpoolAccess::Good;
    };
    // A recipient who is neither the spool's owner nor root, with the
    // fsgid delivery gives them: group mail, else their own primary group
    // (here one that is not the spool's).
    let mail = mail_gid();
    let other = |taken: u32| if taken == 65534 { 65533 } else { 65534 };
    let probe_gid = mail.unwrap_or_else(|| other(meta.gid()));
    let probe_uid = other(meta.uid());
    let able = match crate::sys::become_fs(probe_uid, probe_gid) {
        Ok(_as_user) => may_create_in(dir).is_ok(),
        // Not checkable: say nothing rather than something false.
        Err(_) => true,
    };
    if able {
        return SpoolAccess::Good;
    }
    let mode = meta.mode();
    let mut can = vec!["root's".to_owned()];
    if meta.uid() != 0 && mode & 0o300 == 0o300 {
        can.push(format!("{}'s", user_name(meta.uid())));
    }
    if mail.is_none() && mode & 0o030 == 0o030 {
        can.push(format!("that of users of group {}", group_name(meta.gid())));
    }
    let (how, fix) = match mail {
        Some(_) => (
            "the recipient's uid and group mail",
            format!(
                "make it root:mail 2775 like Debian's /var/mail: chown root:mail {shown} && chmod 2775 {shown}"
            ),
        ),
        None => (
            "the recipient's uid and group",
            format!("make it writable by every user: chmod 1777 {shown}"),
        ),
    };
    SpoolAccess::Partial(format!(
        "spool {shown} is {}: only {} mail can arrive, mail to any other user is deferred (450 at RCPT): a new mailbox and the USER.lock dotlock are made with {how}; {fix}",
        described(&meta),
        can.join(" and ")
    ))
}

/// Started as root: why `user`'s mailbox and `USER.lock` dotlock cannot
/// be made in `dir` with the identity delivery gives them, if they cannot.
pub(super) fn cannot_create_for(dir: &Path, user: &crate::users::User) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let gid = mail_gid().unwrap_or(user.gid);
    let denied = {
        let _as_user = crate::sys::become_fs(user.uid, gid).ok()?;
        may_create_in(dir).err()?
    };
    let meta = std::fs::metadata(dir).ok()?;
    Some(format!(
        "spool {} is {}: uid {} with group {} cannot create the mailbox or its dotlock there ({})",
        dir.display(),
        described(&meta),
        user.uid,
        group_name(gid),
        denied.desc()
    ))
}
