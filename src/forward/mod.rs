//! Reading `~/.forward` and `:include:` files, and deciding whether they
//! may be trusted: "what does this file say, and who could have written
//! it". What each target becomes (loops, identities, policy) is the
//! expansion's business; this module only reads.
//!
//! A user's `~/.forward` redirects or filters their mail
//! (`"|/usr/bin/procmail"`, `\me, other`); an `:include:/path` target of
//! the aliases names a list kept in another file. Both hold the target
//! syntax of an alias's right-hand side
//! (`Target::parse_targets` in `crate::aliases`). Since a `.forward` may run
//! programs as its user, a file anyone else could have written must not be
//! obeyed: that is the whole of the rules below.
//!
//! # The rules for `~/.forward` ([`read_forward`])
//!
//! Every `stat` and `open` is done with the user's filesystem identity
//! (`setfsuid`/`setfsgid`, [`crate::sys::become_fs`]) when postie is root,
//! so that a user can never make postie read, as root, a file they could
//! not read themselves (sendmail's `include()` switches to the user too;
//! Postfix's local(8) uses `lstat_as`/`open_as`). Not root, postie reads as
//! itself. The file is used only if all of these hold; otherwise it is
//! [`ForwardFile::Unsafe`]: ignored, its reason logged, the mail delivered
//! to the mailbox, and nothing in it ever runs.
//!
//! 1. It is a regular file (not a directory, FIFO, socket or device),
//!    as the `lstat` before opening and the `fstat` of the opened
//!    descriptor both say, and both describe the same file. It is opened
//!    `O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`, relative to a descriptor of the
//!    home directory, so a FIFO swapped in between never blocks delivery.
//!    (sendmail: `SFF_REGONLY` and its `filechanged()` check; Postfix:
//!    "is not a regular file".)
//! 2. It is owned by the user or by root (sendmail: `SFF_MUSTOWN|
//!    SFF_ROOTOK`; Postfix: "has bad owner uid").
//! 3. It is writable by neither its group nor others (sendmail's default
//!    `SFF_NOGWFILES|SFF_NOWWFILES`; Postfix refuses only world-writable
//!    files). A POSIX ACL granting write to anyone else shows in the group
//!    bits (the ACL mask) and is refused too.
//! 4. A symbolic link `.forward` is followed only if the link is owned by
//!    the user or root and the file it reaches is owned by the user
//!    (then 1 and 3 apply to that file). Postfix refuses every symlink;
//!    sendmail follows one in a safe directory to a file of the user's or
//!    root's. Dotfile managers (stow, chezmoi) make `.forward` a link into
//!    the user's own tree, so that case is kept; a link to anybody else's
//!    file, root's included, is refused.
//! 5. The home directory, as opened, is owned by the user or root and
//!    writable by neither group nor others, sticky bit or not: nobody else
//!    may put a `.forward` there or swap it (sendmail: `SFF_SAFEDIRPATH`,
//!    on by default; Postfix does not look at directories).
//! 6. Every directory above the home, both those named in its path and
//!    those above its real location (reached through `..` from the opened
//!    home, so a symlinked `/home` is judged where it leads), is owned by
//!    root or the user, and writable by neither group nor others unless it
//!    has the sticky bit and the entry below it on the way is owned by root
//!    or the user (then nobody else may rename or remove that entry; this
//!    is sendmail's `TrustStickyBit`, off there by default, which postie
//!    takes because Linux enforces it; sendmail checks only the write
//!    bits of these directories, not their owners).
//! 7. It holds at most [`MAX_FORWARD_SIZE`] bytes. A real `.forward` is a
//!    few lines; the cap bounds the memory and time a user can make the
//!    delivery process (which serves every user) spend, and a bigger file
//!    is refused rather than cut short, which could cut a target in half.
//! 8. Each line must be UTF-8. A line that is not is skipped with a
//!    warning (silently if it is a comment), never decoded lossily: a
//!    replacement character could turn a command or file name into another
//!    one, and refusing the whole file for a stray Latin-1 comment would
//!    drop all of a user's forwarding.
//!
//! No `.forward`, an empty one (only blank lines and comments), and a home
//! directory that does not exist or is not a directory (`/nonexistent`,
//! `/dev/null`) are [`ForwardFile::Absent`]: the mailbox. A `.forward`
//! whose every entry is bad is [`ForwardFile::Unsafe`], so the mail goes
//! to the mailbox and the warnings say why (sendmail and Postfix deliver
//! to the mailbox when a `.forward` yields no address). A `.forward` the
//! user cannot read (mode 000, or a root-owned one of mode 600) is Unsafe,
//! as sendmail (`safefile()` checks the owner's read bit: "Permission
//! denied", logged, mailbox) and Postfix ("cannot open file", mailbox) do.
//! An error that may pass (`EIO`, `ENOMEM`, `ESTALE`, a full file table:
//! sendmail's `transienterror()` list) is [`ForwardFile::Failed`]: the
//! delivery is retried later rather than delivered to the mailbox while
//! the user's forwarding is unreadable.
//!
//! # The rules for `:include:` files ([`read_include`])
//!
//! The same checks, with the file's owner in place of the user (anybody
//! may own an include file; the caller makes that owner the identity of
//! its programs and files, as sendmail and Postfix do, root becoming the
//! default user), read with the identity the caller names, and stricter
//! where the alias can simply name another path:
//!
//! * the path must be absolute (Postfix: "uses a relative path");
//! * the file itself must not be a symbolic link (sendmail and Postfix
//!   follow one; the aliases file can name the real file instead, and
//!   then the owner that becomes the identity is the one of the file
//!   named);
//! * it must have one link, so that nobody made it by linking someone
//!   else's file into a directory of theirs (sendmail refuses links only
//!   in unsafe directories);
//! * the directory holding it, like a home above, is owned by root or the
//!   file's owner and writable by neither group nor others, and so are
//!   the directories above it as in rule 6: whoever could replace the
//!   file could choose whose identity its programs get. sendmail only
//!   withholds programs and files from a list in an unsafe directory;
//!   postie refuses the list, so a shared, group-writable list directory
//!   must become one directory per owner;
//! * at most [`MAX_INCLUDE_SIZE`] bytes: mailing lists are longer than
//!   `.forward` files.
//!
//! A missing include file is [`IncludeFile::Unsafe`] too (Postfix bounces
//! it as a configuration error); what the mail then does is the caller's.
//!
//! # Sources
//!
//! sendmail 8: `include()` in `sendmail/recipient.c` (the `SFF_` flags of
//! a `.forward` and of an include file, the `DontBlameSendmail` bits that
//! relax them, all off under the default `DontBlameSendmail=safe`), and
//! `safefile()` and `safedirpath()` in `libsmutil/safefile.c` (what those
//! flags check); `forward()` in `sendmail/alias.c` (which errors defer the
//! message: `transienterror()`; any other means no forwarding). Postfix:
//! `deliver_dotforward()` in `src/local/dotforward.c` and
//! `deliver_include()` in `src/local/include.c`, and local(8). Read, not
//! copied.
//!
//! The parts: `safety.rs` (opening directories and files relative to
//! descriptors, and judging owners and modes) and `text.rs` (the bounded
//! read and the line decoding).

mod safety;
mod text;

use std::path::Path;

use crate::aliases::Target;
use crate::users::User;
use safety::{Refusal, Trusted};

/// The most bytes a `~/.forward` may hold (see rule 7).
pub const MAX_FORWARD_SIZE: u64 = 64 * 1024;

/// The most bytes an `:include:` file may hold: about 30,000 addresses.
pub const MAX_INCLUDE_SIZE: u64 = 1024 * 1024;

/// What a user's `~/.forward` says, if it may be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardFile {
    /// No `~/.forward`, one with no entries, or no home directory: the
    /// mailbox.
    Absent,
    /// Read and safe: its targets in the order of the file (never empty),
    /// and one `FILE:LINE: why` warning per entry or line skipped, to log.
    Targets {
        targets: Vec<Target>,
        warnings: Vec<String>,
    },
    /// Present but not to be obeyed: ignored, the mail goes to the
    /// mailbox; why, naming the file, for the log and `postie check`.
    Unsafe(String),
    /// Could not be read for a reason that may pass (`EIO`, `ENOMEM`,
    /// `ESTALE`, no identity switch): the delivery is retried.
    Failed(String),
}

/// What an `:include:` file says, if it may be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeFile {
    /// Read and safe: its targets in order (possibly none: an empty
    /// list), the warnings of entries skipped, and the file's owner, whose
    /// identity its programs and files get (root-owned: the caller's
    /// default user).
    Targets {
        targets: Vec<Target>,
        warnings: Vec<String>,
        owner_uid: u32,
        owner_gid: u32,
    },
    /// Missing, or present but not to be trusted: why, naming the file.
    Unsafe(String),
    /// Could not be read for a reason that may pass: retry later.
    Failed(String),
}

/// Reads `user`'s `~/.forward` (`user.home`/.forward) under the rules of
/// the module documentation, with the user's filesystem identity when
/// postie is root. Like every switch of identity in postie, this relies on
/// root's supplementary groups having been dropped at start
/// ([`crate::sys::drop_supplementary_groups`]): the kernel checks them
/// along with the fsgid.
pub fn read_forward(user: &User) -> ForwardFile {
    if user.home.as_os_str().is_empty() {
        return ForwardFile::Absent;
    }
    let path = user.home.join(".forward");
    let shown = path.display().to_string();
    if !user.home.is_absolute() {
        return ForwardFile::Unsafe(format!(
            "{shown}: the home directory is not an absolute path"
        ));
    }
    let _identity = match reading_as(user.uid, user.gid) {
        Ok(guard) => guard,
        Err(why) => return ForwardFile::Failed(format!("{shown}: {why}")),
    };
    match read_forward_as_user(user, &shown) {
        Ok(bytes) => {
            let (targets, warnings) = text::targets(&bytes, &shown);
            match (targets.is_empty(), warnings.is_empty()) {
                (false, _) => ForwardFile::Targets { targets, warnings },
                (true, true) => ForwardFile::Absent,
                (true, false) => ForwardFile::Unsafe(format!(
                    "{shown}: no usable entries ({})",
                    warnings.join("; ")
                )),
            }
        }
        Err(Refusal::Missing(_)) => ForwardFile::Absent,
        Err(Refusal::Unsafe(why)) => ForwardFile::Unsafe(why),
        Err(Refusal::Failed(why)) => ForwardFile::Failed(why),
    }
}

/// The checks and the read of [`read_forward`], with the identity set.
fn read_forward_as_user(user: &User, shown: &str) -> Result<Vec<u8>, Refusal> {
    let trust = Trusted(user.uid);
    // No home (/nonexistent), or not a directory (/dev/null): Missing, no
    // .forward to read.
    let home = safety::open_dir(&user.home)?;
    // A missing .forward is no forwarding, whatever the directories: look
    // before judging them, so that an unsafe home without one is quiet.
    let entry = safety::lstat_entry(&home, ".forward", shown)?;
    safety::check_dir_itself(&home, &user.home, trust)?;
    safety::check_real_ancestors(&home, &user.home, trust)?;
    safety::check_named_ancestors(&user.home, trust)?;
    let link = safety::is_symlink(&entry);
    let expected = if link {
        if !trust.owns(&entry) {
            return Err(Refusal::Unsafe(format!(
                "{shown}: is a symbolic link of uid {}, neither the user's nor root's",
                entry.st_uid
            )));
        }
        let target = safety::stat_entry_following(&home, ".forward", shown)?;
        if target.st_uid != user.uid {
            return Err(Refusal::Unsafe(format!(
                "{shown}: is a symbolic link to a file of uid {}, not the user's",
                target.st_uid
            )));
        }
        target
    } else {
        entry
    };
    let file = safety::open_entry(&home, ".forward", &expected, link, shown)?;
    if !trust.owns(&file.stat) {
        return Err(Refusal::Unsafe(format!(
            "{shown}: is owned by uid {}, neither the user's nor root's",
            file.stat.st_uid
        )));
    }
    safety::check_not_writable_by_others(&file.stat, shown)?;
    text::read_capped(file.file, &file.stat, MAX_FORWARD_SIZE, shown)
}

/// Reads the `:include:` file `path` with the filesystem identity
/// `reader` (uid, gid) when postie is root (as itself otherwise), under
/// the rules of the module documentation.
pub fn read_include(path: &Path, reader: (u32, u32)) -> IncludeFile {
    let shown = path.display().to_string();
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return IncludeFile::Unsafe(format!("{shown}: does not name a file"));
    };
    if !path.is_absolute() {
        return IncludeFile::Unsafe(format!("{shown}: is not an absolute path"));
    }
    let _identity = match reading_as(reader.0, reader.1) {
        Ok(guard) => guard,
        Err(why) => return IncludeFile::Failed(format!("{shown}: {why}")),
    };
    match read_include_as_reader(dir, name, &shown) {
        Ok((bytes, owner_uid, owner_gid)) => {
            let (targets, warnings) = text::targets(&bytes, &shown);
            IncludeFile::Targets {
                targets,
                warnings,
                owner_uid,
                owner_gid,
            }
        }
        Err(Refusal::Missing(why) | Refusal::Unsafe(why)) => IncludeFile::Unsafe(why),
        Err(Refusal::Failed(why)) => IncludeFile::Failed(why),
    }
}

/// The checks and the read of [`read_include`], with the identity set:
/// the bytes and the owner's uid and gid.
fn read_include_as_reader(
    dir: &Path,
    name: &std::ffi::OsStr,
    shown: &str,
) -> Result<(Vec<u8>, u32, u32), Refusal> {
    let parent = safety::open_dir(dir)?;
    let entry = safety::lstat_entry(&parent, name, shown)?;
    if safety::is_symlink(&entry) {
        return Err(Refusal::Unsafe(format!(
            "{shown}: is a symbolic link; name the file it leads to"
        )));
    }
    let trust = Trusted(entry.st_uid);
    safety::check_dir_itself(&parent, dir, trust)?;
    safety::check_real_ancestors(&parent, dir, trust)?;
    safety::check_named_ancestors(dir, trust)?;
    let file = safety::open_entry(&parent, name, &entry, false, shown)?;
    if file.stat.st_nlink != 1 {
        return Err(Refusal::Unsafe(format!(
            "{shown}: has {} links; an include file must have one",
            file.stat.st_nlink
        )));
    }
    safety::check_not_writable_by_others(&file.stat, shown)?;
    let (uid, gid) = (file.stat.st_uid, file.stat.st_gid);
    let bytes = text::read_capped(file.file, &file.stat, MAX_INCLUDE_SIZE, shown)?;
    Ok((bytes, uid, gid))
}

/// The filesystem identity `uid`/`gid` for this thread until the guard
/// drops, when postie is root; nothing otherwise (it reads as itself).
fn reading_as(uid: u32, gid: u32) -> Result<Option<crate::sys::FsIdentity>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    crate::sys::become_fs(uid, gid)
        .map(Some)
        .map_err(|e| format!("cannot take the identity {uid}:{gid}: {e}"))
}

#[cfg(test)]
mod tests;
