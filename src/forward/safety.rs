//! The checks of `~/.forward` and `:include:` files: opening a directory
//! and the file in it relative to the directory's descriptor, judging
//! their owners and modes, and the directories above. Every call here runs
//! with whatever filesystem identity the caller set; errors come back as a
//! [`Refusal`] that says whether the file is missing, not to be trusted,
//! or unreadable for a reason that may pass.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, lstat, stat};

/// Why a file is not read.
#[derive(Debug)]
pub(super) enum Refusal {
    /// It, or the directory it would be in, does not exist.
    Missing(String),
    /// It may not be trusted, or cannot be read for a reason that stays.
    Unsafe(String),
    /// An error that may pass: try again later.
    Failed(String),
}

/// Who may own, and alone write, the file and the directories it is
/// reached through: root and this uid.
#[derive(Debug, Clone, Copy)]
pub(super) struct Trusted(pub u32);

impl Trusted {
    /// True if `meta` belongs to root or the trusted uid.
    pub(super) fn owns(self, meta: &FileStat) -> bool {
        meta.st_uid == 0 || meta.st_uid == self.0
    }
}

/// A file opened for reading, with the `fstat` of its descriptor.
pub(super) struct Opened {
    pub file: File,
    pub stat: FileStat,
}

/// How many directories above a home or list directory are looked at,
/// at most: far more than any real path has.
const MAX_DEPTH: usize = 256;

/// The mode bits that let the group or others write.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Errors that may pass if retried, as sendmail's `transienterror()`
/// counts them (and `EINTR`).
fn transient(e: Errno) -> bool {
    use Errno::*;
    matches!(
        e,
        EIO | ENXIO
            | EAGAIN
            | ENOMEM
            | ENODEV
            | ENFILE
            | EMFILE
            | ENOSPC
            | ETIMEDOUT
            | ESTALE
            | ENETDOWN
            | ENETUNREACH
            | ENETRESET
            | ECONNABORTED
            | ECONNRESET
            | ENOBUFS
            | ECONNREFUSED
            | EHOSTDOWN
            | EHOSTUNREACH
            | EINTR
            | ENOLCK
    )
}

/// The refusal for a failed system call on `what`: missing for
/// `ENOENT` and `ENOTDIR`, failed if it may pass, unsafe otherwise.
pub(super) fn refusal(what: &str, doing: &str, e: Errno) -> Refusal {
    let why = format!("{what}: {doing}: {}", e.desc());
    match e {
        Errno::ENOENT | Errno::ENOTDIR => Refusal::Missing(why),
        e if transient(e) => Refusal::Failed(why),
        _ => Refusal::Unsafe(why),
    }
}

/// What kind of file `meta` is, for a message.
fn kind(meta: &FileStat) -> &'static str {
    match meta.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "a special file",
    }
}

fn is_kind(meta: &FileStat, kind: libc::mode_t) -> bool {
    meta.st_mode & libc::S_IFMT == kind
}

/// True if `meta` is a symbolic link (as `lstat` says).
pub(super) fn is_symlink(meta: &FileStat) -> bool {
    is_kind(meta, libc::S_IFLNK)
}

/// Opens the directory `dir` (following symbolic links on the way) as a
/// path descriptor, which needs no read permission on it.
pub(super) fn open_dir(dir: &Path) -> Result<OwnedFd, Refusal> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(dir, flags, Mode::empty())
        .map_err(|e| refusal(&dir.display().to_string(), "cannot open the directory", e))
}

/// `lstat` of `name` in the directory `dir`.
pub(super) fn lstat_entry(
    dir: &OwnedFd,
    name: impl AsRef<OsStr>,
    shown: &str,
) -> Result<FileStat, Refusal> {
    fstatat(dir, name.as_ref(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| refusal(shown, "cannot look at it", e))
}

/// `stat` of `name` in the directory `dir`, following a symbolic link.
pub(super) fn stat_entry_following(
    dir: &OwnedFd,
    name: impl AsRef<OsStr>,
    shown: &str,
) -> Result<FileStat, Refusal> {
    fstatat(dir, name.as_ref(), AtFlags::empty())
        .map_err(|e| refusal(shown, "cannot look at the file its link leads to", e))
}

/// Opens `name` in the directory `dir` for reading, once `expected` (its
/// `lstat`, or its `stat` when `follow` is set for a symbolic link the
/// caller accepted) says it is a regular file, so that no device is ever
/// opened; then checks that the descriptor is that same regular file.
/// `O_NONBLOCK`: a FIFO swapped in meanwhile returns at once (and is
/// refused); `O_NOCTTY`: a terminal never becomes ours.
pub(super) fn open_entry(
    dir: &OwnedFd,
    name: impl AsRef<OsStr>,
    expected: &FileStat,
    follow: bool,
    shown: &str,
) -> Result<Opened, Refusal> {
    if !is_kind(expected, libc::S_IFREG) {
        return Err(Refusal::Unsafe(format!(
            "{shown}: is {}, not a regular file",
            kind(expected)
        )));
    }
    let mut flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = openat(dir, name.as_ref(), flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => Refusal::Unsafe(format!(
            "{shown}: became a symbolic link while it was opened"
        )),
        e => refusal(shown, "cannot open it", e),
    })?;
    let stat = fstat(&fd).map_err(|e| refusal(shown, "cannot fstat it", e))?;
    if !is_kind(&stat, libc::S_IFREG) {
        return Err(Refusal::Unsafe(format!(
            "{shown}: is {}, not a regular file",
            kind(&stat)
        )));
    }
    if (stat.st_dev, stat.st_ino) != (expected.st_dev, expected.st_ino) {
        return Err(Refusal::Unsafe(format!(
            "{shown}: was replaced while it was opened"
        )));
    }
    Ok(Opened {
        file: File::from(fd),
        stat,
    })
}

/// Refuses a file its group or others may write.
pub(super) fn check_not_writable_by_others(meta: &FileStat, shown: &str) -> Result<(), Refusal> {
    if meta.st_mode & WRITABLE_BY_OTHERS == 0 {
        return Ok(());
    }
    let who = if meta.st_mode & 0o002 != 0 {
        "world"
    } else {
        "group"
    };
    Err(Refusal::Unsafe(format!(
        "{shown}: is {who}-writable (mode {:04o})",
        meta.st_mode & 0o7777
    )))
}

/// Judges the directory the file is in (opened as `dir`, named `path`):
/// owned by root or the trusted uid, writable by neither group nor
/// others, sticky bit or not.
pub(super) fn check_dir_itself(dir: &OwnedFd, path: &Path, trust: Trusted) -> Result<(), Refusal> {
    let shown = path.display().to_string();
    let meta = fstat(dir).map_err(|e| refusal(&shown, "cannot fstat the directory", e))?;
    if !trust.owns(&meta) {
        return Err(Refusal::Unsafe(format!(
            "{shown}: the directory is owned by uid {}, not by uid {} or root",
            meta.st_uid, trust.0
        )));
    }
    if meta.st_mode & WRITABLE_BY_OTHERS != 0 {
        return Err(Refusal::Unsafe(format!(
            "{shown}: the directory is writable by others (mode {:04o})",
            meta.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Judges a directory `above` on the way to `entry`: owned by root or the
/// trusted uid, and writable by neither group nor others unless it is
/// sticky and `entry` is root's or the trusted uid's (then nobody else
/// may rename or remove it). `Err` says why, to follow the directory's
/// name.
fn judge_above(above: &FileStat, entry: &FileStat, trust: Trusted) -> Result<(), String> {
    if !is_kind(above, libc::S_IFDIR) {
        return Err(format!("is {}, not a directory", kind(above)));
    }
    if !trust.owns(above) {
        return Err(format!(
            "is owned by uid {}, not by uid {} or root",
            above.st_uid, trust.0
        ));
    }
    let sticky = above.st_mode & libc::S_ISVTX != 0;
    if above.st_mode & WRITABLE_BY_OTHERS != 0 && !(sticky && trust.owns(entry)) {
        return Err(format!(
            "is writable by others (mode {:04o})",
            above.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// Judges every directory above the opened `dir` where it really is,
/// reached through `..` (so a symbolic link on its path is judged where
/// it leads), up to the root.
pub(super) fn check_real_ancestors(
    dir: &OwnedFd,
    path: &Path,
    trust: Trusted,
) -> Result<(), Refusal> {
    let shown = path.display().to_string();
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut below = fstat(dir).map_err(|e| refusal(&shown, "cannot fstat the directory", e))?;
    let mut current = openat(dir, "..", flags, Mode::empty())
        .map_err(|e| refusal(&shown, "cannot open the directory above it", e))?;
    for level in 1..=MAX_DEPTH {
        let above =
            fstat(&current).map_err(|e| refusal(&shown, "cannot fstat a directory above it", e))?;
        if (above.st_dev, above.st_ino) == (below.st_dev, below.st_ino) {
            return Ok(());
        }
        judge_above(&above, &below, trust).map_err(|why| {
            Refusal::Unsafe(format!(
                "{shown}: the directory {level} level(s) above it (inode {}) {why}",
                above.st_ino
            ))
        })?;
        let next = openat(&current, "..", flags, Mode::empty())
            .map_err(|e| refusal(&shown, "cannot open a directory above it", e))?;
        below = above;
        current = next;
    }
    Err(Refusal::Unsafe(format!(
        "{shown}: more than {MAX_DEPTH} directories above it"
    )))
}

/// Judges every directory named in the absolute path `dir` above it (for
/// `/home/jon`: `/` and `/home`), each with the entry below it on the
/// path as `lstat` sees it: the directories holding a symbolic link of
/// the path, which [`check_real_ancestors`] does not pass.
pub(super) fn check_named_ancestors(dir: &Path, trust: Trusted) -> Result<(), Refusal> {
    let chain: Vec<&Path> = dir.ancestors().collect();
    for pair in chain.windows(2) {
        let (entry, above) = (pair[0], pair[1]);
        let shown = above.display().to_string();
        let above_meta = stat(above).map_err(|e| refusal(&shown, "cannot look at it", e))?;
        let entry_meta = lstat(entry)
            .map_err(|e| refusal(&entry.display().to_string(), "cannot look at it", e))?;
        judge_above(&above_meta, &entry_meta, trust).map_err(|why| {
            Refusal::Unsafe(format!(
                "{}: the directory {shown} above it {why}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}
