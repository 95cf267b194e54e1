//! A file as a transaction's target: an mbox file outside the spool
//! (`/var/log/mail-archive` from an alias `archive: /var/log/mail-archive`,
//! `/home/jon/Mail/inbox` from jon's `~/.forward`), appended in the same
//! transaction as the mailboxes, with the same locks, append, rollback and
//! journal; and [`AppendTarget`], one transaction's mailboxes and files
//! together.
//!
//! A [`FileTarget`] is an absolute path and the identity it is written
//! with (uid and gid: the rules of aliases, includes and `.forward` name
//! it, never root). Every file operation runs as that identity
//! ([`crate::sys::become_fs`], when postie is root), under the rules of
//! Postfix's local(8) for a file (`deliver_file`, `mbox_open`), which are
//! those of a mailbox but for the owner:
//!
//! * an absolute, plain path (no empty, `.` or `..` component, no `/` at
//!   the end: Postfix's maildir form is not supported), written in the
//!   journal as it is;
//! * the last component never followed if a symbolic link (`O_NOFOLLOW`):
//!   refused; a regular file with one link (a hard link to someone
//!   else's file is refused, as for a mailbox), not executable (as
//!   Postfix); once locked, the path must still name the file locked;
//! * no owner check: the kernel decides, as the identity (its primary
//!   group only: the delivery process has no supplementary groups),
//!   whether it may write the file, as Postfix leaves it to `set_eugid`;
//! * a missing file is created (`O_EXCL`) as the identity, mode 0600,
//!   owned by its uid and gid (Postfix creates it `S_IRUSR | S_IWUSR` as
//!   the user); its directory must exist and is never created;
//! * the mailbox's three locks, fcntl, the dotlock `PATH.lock` and flock
//!   (Postfix applies `mailbox_delivery_lock` to files too); where the
//!   identity may not create the dotlock in the file's directory, the
//!   kernel locks only (Postfix's `MBOX_DOT_LOCK_MAY_FAIL`, kept for
//!   "installations that deliver to files in non-writable directories"),
//!   logged; a dotlock someone else made there is honoured (and a
//!   transaction that can neither finish nor be undone then leaves no
//!   lock that keeps other programs off the file until recovery: the
//!   kernel locks go with their holder);
//! * the append is the mailbox's, byte for byte (the `From ` line, the
//!   configured quoting, the blank line at the end), synced.
//!
//! A refusal (the rules above, no right to write the file or its
//! directory, a missing directory) is a permanent failure
//! ([`Failure::permanent`]) whose text says why: "/path: is a symbolic
//! link; not delivered". I/O trouble (a full disk, a quota, a lock not
//! had in time, an I/O error) is temporary, as for a mailbox.
//!
//! The journal names a file target by its path (a name no user can have:
//! it begins with `/`) with its identity, so that recovery after a crash
//! truncates an interrupted append back as that identity, never as root,
//! and removes the dotlock it made. Recovery truncates a file only back to
//! where the journal says its append began and only if it is the very
//! file recorded (device and inode): the transaction syncs that record
//! before appending to a file ([`Target::durable_start`]), and a file's
//! append is never looked for by its beginning, as a mailbox's is after a
//! power failure.

use std::io;
use std::path::{Path, PathBuf};

use super::target::{
    AppendWriter, Failure, LockRound, LockedMailboxTarget, MailboxTarget, OneTry, Owner, Target,
};
use crate::journal::{Want, valid_file_name};
use crate::mbox::{self, MboxError, MboxOptions};
use crate::sys;
use crate::users::User;

/// A file outside the spool, as a transaction's target.
pub(crate) struct FileTarget<'d> {
    path: PathBuf,
    /// The path as the journal knows it.
    name: String,
    /// The identity it is written with, as the mbox layer takes it.
    user: User,
    owner: Owner,
    opts: &'d MboxOptions,
    writer: &'d AppendWriter,
}

impl<'d> FileTarget<'d> {
    /// The file at `path`, written as `uid`/`gid`, appended to with the
    /// mailboxes' `opts` (quoting, lock timeout, stale dotlocks; not their
    /// mode) through `writer`. Refused ([`Failure::refused`]) if the path
    /// is not a plain absolute one, or if the identity is root and so is
    /// postie.
    pub(crate) fn new(
        path: PathBuf,
        uid: u32,
        gid: u32,
        opts: &'d MboxOptions,
        writer: &'d AppendWriter,
    ) -> Result<Self, Failure> {
        let name = match path.to_str() {
            Some(name) if valid_file_name(name) => name.to_string(),
            Some(name) if !name.starts_with('/') => {
                return Err(Failure::refused(&path, "is not an absolute path"));
            }
            Some(name) if name.ends_with('/') => {
                return Err(Failure::refused(
                    &path,
                    "ends in / (delivery to a maildir is not supported)",
                ));
            }
            Some(_) => {
                return Err(Failure::refused(
                    &path,
                    "is not a plain path (an empty, . or .. component, or a control character)",
                ));
            }
            None => return Err(Failure::refused(&path, "is not valid UTF-8")),
        };
        if uid == 0 && nix::unistd::geteuid().is_root() {
            return Err(Failure::refused(&path, "would be written as root"));
        }
        Ok(FileTarget {
            user: User {
                name: format!("uid {uid}"),
                uid,
                gid,
                ..User::default()
            },
            owner: Owner { uid, gid },
            path,
            name,
            opts,
            writer,
        })
    }
}

impl<'d> Target for FileTarget<'d> {
    type Locked = LockedMailboxTarget<'d>;

    fn key(&self) -> &Path {
        &self.path
    }

    fn intent(&self) -> Want {
        Want {
            name: self.name.clone(),
            uid: self.owner.uid,
            gid: self.owner.gid,
        }
    }

    fn act_as(&self) -> io::Result<Option<sys::FsIdentity>> {
        self.owner.act_as()
    }

    fn try_lock(&self, round: &mut LockRound<'_>) -> Result<Option<Self::Locked>, Failure> {
        let path = &self.path;
        let _id = self
            .owner
            .act_as()
            .map_err(|e| Failure::mbox(path, MboxError::Io(e)))?;
        let how = OneTry {
            open: mbox::open_file_locked_with,
            path,
            name: &self.name,
            user: &self.user,
            owner: self.owner,
            opts: self.opts,
            writer: self.writer,
        };
        how.try_lock(round)
            .map_err(|e| failure(path, self.owner.uid, e))
    }

    fn durable_start(&self) -> bool {
        true
    }
}

/// A failure to open or lock the file target at `path` as `uid`: a
/// refusal for good, or trouble that may pass.
fn failure(path: &Path, uid: u32, e: MboxError) -> Failure {
    let errno = match &e {
        MboxError::Unsafe(why) => return Failure::refused(path, why),
        MboxError::Io(io) => io.raw_os_error(),
        _ => None,
    };
    let why = match errno {
        Some(libc::EACCES | libc::EPERM) if nix::unistd::geteuid().is_root() => {
            format!("uid {uid} may not write it or create it there")
        }
        Some(libc::EACCES | libc::EPERM) => "postie may not write it or create it there".into(),
        Some(libc::ENOENT) => "its directory does not exist".into(),
        Some(libc::ENOTDIR) => "a component of its directory is not a directory".into(),
        _ => return Failure::mbox(path, e),
    };
    Failure::refused(path, &why)
}

/// One transaction's target that is appended to: a mailbox of the spool
/// or a file target, so that one transaction holds both.
pub(crate) enum AppendTarget<'d> {
    Mailbox(MailboxTarget<'d>),
    File(FileTarget<'d>),
}

impl<'d> Target for AppendTarget<'d> {
    type Locked = LockedMailboxTarget<'d>;

    fn key(&self) -> &Path {
        match self {
            AppendTarget::Mailbox(m) => m.key(),
            AppendTarget::File(f) => f.key(),
        }
    }

    fn intent(&self) -> Want {
        match self {
            AppendTarget::Mailbox(m) => m.intent(),
            AppendTarget::File(f) => f.intent(),
        }
    }

    fn act_as(&self) -> io::Result<Option<sys::FsIdentity>> {
        match self {
            AppendTarget::Mailbox(m) => m.act_as(),
            AppendTarget::File(f) => f.act_as(),
        }
    }

    fn try_lock(&self, round: &mut LockRound<'_>) -> Result<Option<Self::Locked>, Failure> {
        match self {
            AppendTarget::Mailbox(m) => m.try_lock(round),
            AppendTarget::File(f) => f.try_lock(round),
        }
    }

    fn durable_start(&self) -> bool {
        match self {
            AppendTarget::Mailbox(m) => m.durable_start(),
            AppendTarget::File(f) => f.durable_start(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File, Permissions};
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::deliver::Deliverer;
    use crate::deliver::target::Append;
    use crate::deliver::tests::deliverer;
    use crate::deliver::transaction::Transaction;
    use crate::journal::{self, AppendStart, Journal, Journals};
    use crate::message::MessageBuf;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The identity file targets are written with: a uid of no account
    /// as root (never root), ourselves otherwise.
    fn ident() -> (u32, u32) {
        if root() {
            (4242, 4243)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }

    /// A temporary directory with a spool (and a deliverer for it) and
    /// `files/`, a directory the identity may write, where the file
    /// targets go.
    struct Fixture {
        dir: tempfile::TempDir,
        d: Deliverer,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            // The identity goes through it to files/.
            fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
            fs::create_dir(dir.path().join("spool")).unwrap();
            let files = dir.path().join("files");
            fs::create_dir(&files).unwrap();
            chown_to_ident(&files);
            let d = deliverer(&dir.path().join("spool"));
            Fixture { dir, d }
        }

        fn spool(&self) -> &Path {
            &self.d.spool
        }

        fn file(&self, name: &str) -> PathBuf {
            self.dir.path().join("files").join(name)
        }

        fn target(&self, path: &Path) -> Result<FileTarget<'_>, Failure> {
            let (uid, gid) = ident();
            FileTarget::new(
                path.to_path_buf(),
                uid,
                gid,
                &self.d.mbox,
                &self.d.append_writer,
            )
        }

        /// alice's mailbox and the files at `paths`, as one transaction's
        /// targets.
        fn targets(&self, paths: &[&Path]) -> Vec<AppendTarget<'_>> {
            let mut targets: Vec<AppendTarget<'_>> = self
                .d
                .mailboxes(&["alice"])
                .unwrap()
                .into_iter()
                .map(AppendTarget::Mailbox)
                .collect();
            for p in paths {
                targets.push(AppendTarget::File(self.target(p).unwrap()));
            }
            targets
        }

        /// Delivers `msg` to `targets` in one transaction: `Ok` once
        /// committed; the failure of the lock or of the appends (rolled
        /// back) otherwise.
        fn deliver(
            &self,
            targets: Vec<AppendTarget<'_>>,
            msg: &MessageBuf,
            lock_timeout: Duration,
        ) -> Result<(), Failure> {
            let d = &self.d;
            let what = append(msg);
            let mut txn = Transaction::begin(&d.journals, &d.gates, &d.spool, targets)?;
            txn.intend(&what)?;
            let far = Instant::now() + Duration::from_secs(60);
            if let Err(f) = txn.lock_all(far, lock_timeout, false, |_, _| None) {
                txn.rollback();
                return Err(f);
            }
            match txn.append_all(&what) {
                Ok(()) => {
                    txn.commit();
                    Ok(())
                }
                Err(fs) => {
                    txn.rollback();
                    Err(crate::deliver::transaction::first_failure(fs))
                }
            }
        }

        /// The journals left in the spool.
        fn journals(&self) -> Vec<String> {
            fs::read_dir(self.spool())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with(".postie-txn."))
                .collect()
        }

        /// Recovery as another process (a postie started after a crash).
        fn recover(&self) -> journal::Summary {
            let js = Journals::default();
            let deadline = Instant::now() + Duration::from_secs(10);
            let s = journal::recover(self.spool(), &self.d.mbox, deadline, &js, None);
            js.close();
            s
        }
    }

    fn chown_to_ident(path: &Path) {
        if root() {
            let (uid, gid) = ident();
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    /// A file at `path` holding `bytes`, the identity's, mode 0600.
    fn own_file(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, Permissions::from_mode(0o600)).unwrap();
        chown_to_ident(path);
    }

    fn message(spool: &Path, body: &str) -> MessageBuf {
        let mut msg = MessageBuf::new(1 << 20, spool.to_path_buf());
        msg.write_all(body.as_bytes()).unwrap();
        msg
    }

    fn append(msg: &MessageBuf) -> Append<'_> {
        Append {
            from_line: "From x@y.example Thu Jan  1 00:00:00 1970\n".into(),
            headers: "Return-Path: <x@y.example>\nReceived: by h id F.1\n".into(),
            message: msg,
            quoting: mbox::Quoting::Mboxrd,
        }
    }

    const BODY: &str = "Subject: x\n\nFrom here on\nbody\n";

    /// What one delivery of [`BODY`] appends, to a mailbox and to a file
    /// alike.
    const APPENDED: &[u8] = b"From x@y.example Thu Jan  1 00:00:00 1970\n\
        Return-Path: <x@y.example>\nReceived: by h id F.1\n\
        Subject: x\n\n>From here on\nbody\n\n";

    /// Writes `.1` bytes, then fails with EIO (`.2` false) or panics (a
    /// process killed in the middle of the append).
    struct Cut<'f>(&'f File, usize, bool);

    impl Write for Cut<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 == 0 {
                assert!(!self.2, "killed in the middle of the append");
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let n = (&mut &*self.0).write(&buf[..buf.len().min(self.1)])?;
            self.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes to the file at `at` cut short after `n` bytes (`kill`: a
    /// panic there), to every other straight.
    fn cut_at(at: &Path, n: usize, kill: bool) -> AppendWriter {
        let at = at.to_path_buf();
        AppendWriter::new(move |path, f| -> Box<dyn Write + '_> {
            if path == at {
                Box::new(Cut(f, n, kill))
            } else {
                Box::new(f)
            }
        })
    }

    /// A mailbox and a missing file in one transaction: both get the
    /// same bytes, the file created 0600 as the identity; a second
    /// delivery appends to both.
    #[test]
    fn a_mailbox_and_a_file_are_appended_in_one_transaction() {
        let fx = Fixture::new();
        let archive = fx.file("archive");
        let msg = message(fx.spool(), BODY);
        let timeout = Duration::from_secs(5);
        let targets = fx.targets(&[&archive]);
        // The journal names the mailbox by its user, the file by its path.
        let names: Vec<String> = targets.iter().map(|t| t.intent().name).collect();
        assert_eq!(names, ["alice", archive.to_str().unwrap()]);
        fx.deliver(targets, &msg, timeout).unwrap();
        assert_eq!(fs::read(&archive).unwrap(), APPENDED);
        assert_eq!(fs::read(fx.spool().join("alice")).unwrap(), APPENDED);
        let meta = fs::metadata(&archive).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!((meta.uid(), meta.gid()), ident());
        fx.deliver(fx.targets(&[&archive]), &msg, timeout).unwrap();
        let twice = [APPENDED, APPENDED].concat();
        assert_eq!(fs::read(&archive).unwrap(), twice);
        assert_eq!(fs::read(fx.spool().join("alice")).unwrap(), twice);
        assert!(!fx.file("archive.lock").exists());
        assert_eq!(
            fs::read_dir(fx.file("")).unwrap().count(),
            1,
            "only the file"
        );
    }

    /// All or nothing across kinds: the file's append is undone when the
    /// mailbox's fails, and the mailbox's when the file's fails.
    #[test]
    fn a_failed_append_undoes_the_others_of_either_kind() {
        let mut fx = Fixture::new();
        let archive = fx.file("archive");
        own_file(&archive, b"old archive\n\n");
        fs::write(fx.spool().join("alice"), b"old alice\n\n").unwrap();
        let msg = message(fx.spool(), BODY);
        for failing in [fx.spool().join("alice"), archive.clone()] {
            fx.d.append_writer = cut_at(&failing, 30, false);
            let f = fx
                .deliver(fx.targets(&[&archive]), &msg, Duration::from_secs(5))
                .unwrap_err();
            assert_eq!(f.target.as_deref(), Some(failing.as_path()), "{}", f.why);
            assert!(!f.permanent);
            assert_eq!(fs::read(&archive).unwrap(), b"old archive\n\n");
            assert_eq!(
                fs::read(fx.spool().join("alice")).unwrap(),
                b"old alice\n\n"
            );
            assert!(!fx.file("archive.lock").exists());
            assert!(!fx.spool().join("alice.lock").exists());
        }
    }

    /// A file target that is a symbolic link is refused, for good, and
    /// what it points to is untouched: a file of another user, a
    /// passwd-like file (both writable by anyone, so that only the rule
    /// protects them), a link to nowhere (not followed to create it).
    #[test]
    fn a_symlinked_file_is_refused_and_untouched() {
        let fx = Fixture::new();
        let others = fx.dir.path().join("others");
        fs::create_dir(&others).unwrap();
        let passwd = others.join("passwd");
        fs::write(&passwd, b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let mut pointed = vec![passwd];
        if root() {
            let theirs = others.join("theirs");
            fs::write(&theirs, b"another user's\n").unwrap();
            std::os::unix::fs::chown(&theirs, Some(4343), Some(4343)).unwrap();
            pointed.push(theirs);
        } else {
            println!(
                "SKIP a_symlinked_file_is_refused_and_untouched (another user's file): not root"
            );
        }
        pointed.push(others.join("nowhere"));
        for (i, to) in pointed.iter().enumerate() {
            if to.exists() {
                fs::set_permissions(to, Permissions::from_mode(0o666)).unwrap();
            }
            let before = fs::read(to).ok();
            let link = fx.file(&format!("link{i}"));
            symlink(to, &link).unwrap();
            let f = fx
                .deliver(
                    fx.targets(&[&link]),
                    &message(fx.spool(), BODY),
                    Duration::from_secs(5),
                )
                .unwrap_err();
            assert!(f.permanent, "{}", f.why);
            assert_eq!(
                f.why,
                format!("{}: is a symbolic link; not delivered", link.display())
            );
            assert_eq!(fs::read(to).ok(), before, "{}", to.display());
            assert!(!fx.file(&format!("link{i}.lock")).exists());
        }
        assert!(!others.join("nowhere").exists());
        // Nothing reached the mailbox either.
        assert_eq!(fs::read(fx.spool().join("alice")).unwrap_or_default(), b"");
    }

    /// A file with a second hard link (perhaps to someone else's file)
    /// is refused for good, and untouched; so is an executable one.
    #[test]
    fn a_hard_linked_or_executable_file_is_refused() {
        let fx = Fixture::new();
        let archive = fx.file("archive");
        own_file(&archive, b"old\n\n");
        fs::hard_link(&archive, fx.file("other")).unwrap();
        let msg = message(fx.spool(), BODY);
        let timeout = Duration::from_secs(5);
        let f = fx
            .deliver(fx.targets(&[&archive]), &msg, timeout)
            .unwrap_err();
        assert!(f.permanent);
        assert_eq!(
            f.why,
            format!("{}: has 2 hard links; not delivered", archive.display())
        );
        assert_eq!(fs::read(&archive).unwrap(), b"old\n\n");
        fs::remove_file(fx.file("other")).unwrap();
        fs::set_permissions(&archive, Permissions::from_mode(0o700)).unwrap();
        let f = fx
            .deliver(fx.targets(&[&archive]), &msg, timeout)
            .unwrap_err();
        assert!(f.permanent);
        assert_eq!(
            f.why,
            format!("{}: is executable; not delivered", archive.display())
        );
        assert_eq!(fs::read(&archive).unwrap(), b"old\n\n");
    }

    /// A file in a directory the identity cannot write (so no dotlock)
    /// is delivered under the kernel locks, which other programs see; a
    /// dotlock someone else made there is still honoured.
    #[test]
    fn a_file_in_a_directory_the_identity_cannot_write_is_delivered_with_kernel_locks() {
        let fx = Fixture::new();
        let ro = fx.dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        let archive = ro.join("archive");
        own_file(&archive, b"");
        let planted = ro.join("archive.lock");
        fs::write(&planted, b"0\n").unwrap();
        // Not writable by the identity: root's as root, read-only as us.
        fs::set_permissions(&ro, Permissions::from_mode(0o555)).unwrap();
        let msg = message(fx.spool(), BODY);
        let f = fx
            .deliver(fx.targets(&[&archive]), &msg, Duration::from_millis(100))
            .unwrap_err();
        assert!(f.busy(), "{}", f.why);
        assert_eq!(fs::read(&archive).unwrap(), b"");
        // The dotlock gone: locked and appended with fcntl and flock.
        fs::set_permissions(&ro, Permissions::from_mode(0o755)).unwrap();
        fs::remove_file(&planted).unwrap();
        fs::set_permissions(&ro, Permissions::from_mode(0o555)).unwrap();
        let d = &fx.d;
        let what = append(&msg);
        let mut txn =
            Transaction::begin(&d.journals, &d.gates, &d.spool, fx.targets(&[&archive])).unwrap();
        txn.intend(&what).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        txn.lock_all(far, Duration::from_secs(5), false, |_, _| None)
            .unwrap();
        let other = File::options().append(true).open(&archive).unwrap();
        assert!(
            !mbox::ofd_lock(&other, libc::F_WRLCK).unwrap(),
            "fcntl lock held"
        );
        let flocked = nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock);
        assert!(flocked.is_err(), "flock held");
        txn.append_all(&what).unwrap();
        txn.commit();
        assert_eq!(fs::read(&archive).unwrap(), APPENDED);
        assert_eq!(fs::read_dir(&ro).unwrap().count(), 1, "nothing made there");
        fs::set_permissions(&ro, Permissions::from_mode(0o755)).unwrap();
    }

    /// The path's rules, before anything is opened: a missing directory
    /// is never created; a relative path, a maildir's, a path with `..`,
    /// and (as root) root as the identity are refused.
    #[test]
    fn paths_and_identities_that_are_refused() {
        let fx = Fixture::new();
        let missing = fx.file("no/such/dir/archive");
        let f = fx
            .deliver(
                fx.targets(&[&missing]),
                &message(fx.spool(), BODY),
                Duration::from_secs(5),
            )
            .unwrap_err();
        assert!(f.permanent);
        assert_eq!(
            f.why,
            format!(
                "{}: its directory does not exist; not delivered",
                missing.display()
            )
        );
        assert!(!fx.file("no").exists());
        let (uid, gid) = ident();
        let (opts, w) = (&fx.d.mbox, &fx.d.append_writer);
        for (path, why) in [
            ("archive", "is not an absolute path"),
            (
                "/var/mail/box/",
                "ends in / (delivery to a maildir is not supported)",
            ),
            (
                "/var/../etc/passwd",
                "is not a plain path (an empty, . or .. component, or a control character)",
            ),
        ] {
            let f = FileTarget::new(PathBuf::from(path), uid, gid, opts, w)
                .err()
                .unwrap();
            assert!(f.permanent);
            assert_eq!(f.why, format!("{path}: {why}; not delivered"));
        }
        let root_owned = FileTarget::new(fx.file("archive"), 0, 0, opts, w);
        if root() {
            assert_eq!(
                root_owned.err().unwrap().why,
                format!(
                    "{}: would be written as root; not delivered",
                    fx.file("archive").display()
                )
            );
        } else {
            println!("SKIP paths_and_identities_that_are_refused (root as identity): not root");
        }
    }

    /// A delivery killed in the middle of a file's append (a mailbox
    /// whole beside it): recovery, in another process, truncates both
    /// back, as the identity for the file, and removes the dotlocks.
    #[test]
    fn recovery_truncates_a_file_back_after_a_crash() {
        let mut fx = Fixture::new();
        // Before the spool in the transaction's order: appended on the
        // thread that dies.
        assert!(fx.file("archive") < fx.spool().join("alice"));
        let archive = fx.file("archive");
        own_file(&archive, b"old archive\n\n");
        fs::write(fx.spool().join("alice"), b"old alice\n\n").unwrap();
        fx.d.append_writer = cut_at(&archive, 50, true);
        let msg = message(fx.spool(), BODY);
        let killed = std::thread::scope(|s| {
            s.spawn(|| fx.deliver(fx.targets(&[&archive]), &msg, Duration::from_secs(5)))
                .join()
                .is_err()
        });
        assert!(killed);
        assert_eq!(fs::read(&archive).unwrap().len(), 13 + 50);
        assert!(fx.file("archive.lock").exists());
        assert_eq!(fx.journals().len(), 1);
        let s = fx.recover();
        assert_eq!((s.journals, s.undone, s.truncated), (1, 1, 2), "{s:?}");
        assert_eq!(fs::read(&archive).unwrap(), b"old archive\n\n");
        assert_eq!(fs::metadata(&archive).unwrap().uid(), ident().0);
        assert_eq!(
            fs::read(fx.spool().join("alice")).unwrap(),
            b"old alice\n\n"
        );
        assert!(!fx.file("archive.lock").exists());
        assert!(!fx.spool().join("alice.lock").exists());
        assert!(fx.journals().is_empty());
    }

    /// A journal naming a file that was swapped for another since (same
    /// path, same bytes, another inode) leaves that file untouched: only
    /// the very file recorded is ever truncated. The crash's dotlock
    /// goes.
    #[test]
    fn recovery_leaves_a_swapped_file_alone() {
        let mut fx = Fixture::new();
        let archive = fx.file("archive");
        own_file(&archive, b"old archive\n\n");
        fx.d.append_writer = cut_at(&archive, 50, true);
        let msg = message(fx.spool(), BODY);
        let killed = std::thread::scope(|s| {
            s.spawn(|| {
                let only = vec![AppendTarget::File(fx.target(&archive).unwrap())];
                fx.deliver(only, &msg, Duration::from_secs(5))
            })
            .join()
            .is_err()
        });
        assert!(killed);
        let left = fs::read(&archive).unwrap();
        let other = fx.file("other");
        own_file(&other, &left);
        fs::rename(&other, &archive).unwrap();
        let ino = fs::metadata(&archive).unwrap().ino();
        let s = fx.recover();
        assert_eq!((s.journals, s.truncated), (1, 0), "{s:?}");
        assert_eq!(fs::read(&archive).unwrap(), left);
        assert_eq!(fs::metadata(&archive).unwrap().ino(), ino);
        assert!(!fx.file("archive.lock").exists());
        assert!(fx.journals().is_empty());
    }

    /// A delivery killed while it was locking (its intent and a file's
    /// dotlock recorded, nothing appended): recovery removes that
    /// dotlock, as the identity, and the journal.
    #[test]
    fn recovery_removes_the_dotlock_of_a_file_left_while_locking() {
        let fx = Fixture::new();
        let archive = fx.file("archive");
        own_file(
            &archive, b"old

",
        );
        let (uid, gid) = ident();
        let name = archive.to_str().unwrap().to_string();
        let mut j = Journal::create(fx.spool()).unwrap();
        j.begin().unwrap();
        let prefix = b"From x@y.example Thu Jan  1 00:00:00 1970
Received: by h id F.3
";
        let want = journal::Want {
            name: name.clone(),
            uid,
            gid,
        };
        j.intend(prefix, 200, &[want]).unwrap();
        {
            let _as = Owner { uid, gid }.act_as().unwrap();
            let mut record = |id| j.record_lock(&name, id);
            let mut hooks = mbox::LockHooks {
                record: Some(&mut record),
                ..mbox::LockHooks::default()
            };
            let user = User {
                uid,
                gid,
                ..User::default()
            };
            let far = Instant::now() + Duration::from_secs(60);
            mbox::open_file_locked_with(&archive, &user, &fx.d.mbox, far, &mut hooks)
                .unwrap()
                .unlock_keeping_dotlock();
        }
        drop(j);
        assert!(fx.file("archive.lock").exists());
        let s = fx.recover();
        assert_eq!((s.journals, s.truncated), (1, 0), "{s:?}");
        assert!(!fx.file("archive.lock").exists());
        assert_eq!(
            fs::read(&archive).unwrap(),
            b"old

"
        );
    }

    /// A journal of ours naming a file target written as root (which no
    /// delivery writes) is never acted on as root: the file is left
    /// alone.
    #[test]
    fn recovery_never_truncates_a_file_as_root() {
        if !root() {
            println!("SKIP recovery_never_truncates_a_file_as_root: not root");
            return;
        }
        let fx = Fixture::new();
        let victim = fx.file("victim");
        let prefix = b"From x@y.example Thu Jan  1 00:00:00 1970\nReceived: by h id F.2\n";
        // Part of the append after it: what a truncation would undo.
        let held = [&b"precious\n"[..], &prefix[..30]].concat();
        fs::write(&victim, &held).unwrap();
        let meta = fs::metadata(&victim).unwrap();
        let mut j = Journal::create(fx.spool()).unwrap();
        j.begin().unwrap();
        let name = victim.to_str().unwrap().to_string();
        let want = journal::Want {
            name: name.clone(),
            uid: 0,
            gid: 0,
        };
        j.intend(prefix, 200, &[want]).unwrap();
        j.record_starts(&[AppendStart {
            name,
            dev: meta.dev(),
            ino: meta.ino(),
            old_size: 9,
        }])
        .unwrap();
        drop(j);
        let s = fx.recover();
        assert_eq!((s.journals, s.truncated), (1, 0), "{s:?}");
        assert_eq!(fs::read(&victim).unwrap(), held);
    }

    /// After a power failure that lost where the appends began, a
    /// mailbox's append is looked for by its beginning, a file's never:
    /// its start is synced before any append, so without it nothing was
    /// appended, and a file that holds the same beginning (the message
    /// come by another way since) is left alone.
    #[test]
    fn recovery_never_looks_for_a_file_append() {
        let fx = Fixture::new();
        let archive = fx.file("archive");
        let prefix = b"From x@y.example Thu Jan  1 00:00:00 1970\nReceived: by h id F.4\n";
        let held = [&b"old\n\n"[..], &prefix[..]].concat();
        own_file(&archive, &held);
        let (uid, gid) = ident();
        let mut j = Journal::create(fx.spool()).unwrap();
        j.begin().unwrap();
        let want = journal::Want {
            name: archive.to_str().unwrap().to_string(),
            uid,
            gid,
        };
        j.intend(prefix, 200, &[want]).unwrap();
        let path = fx.spool().join(&fx.journals()[0]);
        drop(j);
        // Written before the system last started.
        let before_boot = std::time::UNIX_EPOCH + Duration::from_secs(1);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(before_boot)
            .unwrap();
        let s = fx.recover();
        assert_eq!((s.journals, s.truncated), (1, 0), "{s:?}");
        assert_eq!(fs::read(&archive).unwrap(), held);
    }
}
