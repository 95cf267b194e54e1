//! The queue directory and its files: [`Queue`], which creates, updates,
//! loads, lists and removes entries, each durably.
//!
//! An entry is two files, as in sendmail's queue (`qf`/`df`), not one as
//! in Postfix's: `dfID`, the message, written once and never changed, and
//! `qfID`, its envelope and state ([`Entry`], `record.rs`), a small text
//! file replaced whole at every update. The runner updates an entry after
//! every failed attempt; with one file, each update would rewrite the
//! whole message (Postfix avoids that by writing its queue file in place,
//! which a crash can tear: here a torn file is refused, and a rename
//! replaces a file whole). The `qf` file is the entry: it is made last and
//! removed first, and it names the message's size, which its `df` file
//! must have.
//!
//! Every file is made under a temporary name `tfID.RANDOM` with `O_EXCL`,
//! written, `fsync`ed, then linked to its name (`link` fails rather than
//! replace a file: two entries never share an id) or, for an update,
//! renamed over it; the directory is synced before the call returns. A
//! crash leaves at worst a temporary file, or a `df` file without its
//! `qf`: both are removed by [`Queue::list`] once older than
//! [`LEFTOVER_AGE`] (younger ones may be an entry being made).
//!
//! The queue is written and read only by the delivery process (root when
//! started as root): the directory must be its own and writable by nobody
//! else, its files are mode 0600. Every name in it is still treated as
//! hostile: a file is looked at (`lstat`) before it is opened, opened with
//! `O_NOFOLLOW|O_NOCTTY|O_NONBLOCK` (no symlink followed, no terminal
//! taken, no FIFO waited on), and checked again on the open descriptor: a
//! regular file of our uid with one link, or it is skipped with a log line
//! and never read. Nobody but root and the delivery process can put a name
//! there, so each is logged at every scan, without the limits the
//! journal's scan of the mail spool (which users write) needs. An entry
//! that does not load (garbled, cut short, its message file missing or of
//! another size) is skipped and kept for the administrator: only the
//! leftovers above are ever removed by a scan.
//!
//! The path of the directory is trusted as the administrator's (like
//! `/var/spool` above it); only the directory itself is checked.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use super::record::{Entry, MAX_RECORD, valid_id};
use crate::sys;

/// Temporary files and `df` files without their `qf` older than this are
/// the leftovers of a crash, and [`Queue::list`] removes them.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(15 * 60);

const SAFE_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

/// What [`Queue::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The entries that loaded, oldest id first.
    pub entries: Vec<Entry>,
    /// Names skipped, each with why (also logged).
    pub skipped: Vec<(String, String)>,
    /// Leftovers of a crash removed.
    pub removed: Vec<String>,
}

/// The run lock of one entry ([`Queue::lock_entry`]).
#[derive(Debug)]
pub struct EntryLock {
    _lock: Flock<File>,
}

/// What a name in the queue directory is.
#[derive(Debug, PartialEq, Eq)]
enum Name<'a> {
    Envelope(&'a str),
    Message(&'a str),
    Temporary,
}

fn parse_name(name: &str) -> Option<Name<'_>> {
    if let Some(id) = name.strip_prefix("qf").filter(|id| valid_id(id)) {
        return Some(Name::Envelope(id));
    }
    if let Some(id) = name.strip_prefix("df").filter(|id| valid_id(id)) {
        return Some(Name::Message(id));
    }
    let (id, random) = name.strip_prefix("tf")?.split_once('.')?;
    (valid_id(id) && random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(Name::Temporary)
}

/// A new queue id: the time (so that ids sort by age) and 64 random bits.
fn new_id(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:010x}{:016x}", secs & 0xff_ffff_ffff, sys::random_u64())
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Why a file of (l)stat `meta` is not one of ours: a regular file of our
/// uid with one link.
fn not_ours(meta: &std::fs::Metadata) -> Option<String> {
    if crate::sys::is_own_single_file(meta) {
        return None;
    }
    Some(format!(
        "not a queue file of ours ({}; a queue file is a regular file of uid {} with one link)",
        crate::sys::describe_file(meta),
        nix::unistd::geteuid()
    ))
}

/// True for a file of ours with two links, younger than [`LEFTOVER_AGE`]:
/// a file being linked into place by [`Queue::create`] (between its
/// `link` and the removal of its temporary name), skipped without a
/// warning.
fn being_made(meta: &std::fs::Metadata, now: SystemTime) -> bool {
    meta.is_file()
        && meta.uid() == nix::unistd::geteuid().as_raw()
        && meta.nlink() == 2
        && meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age < LEFTOVER_AGE)
}

impl Queue {
    /// The queue in `dir`, which must exist, be a directory owned by this
    /// process's user, and be writable by nobody else.
    pub fn open(dir: &Path) -> io::Result<Queue> {
        check_dir(dir)?;
        Ok(Queue {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the queue is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, prefix: &str, id: &str) -> PathBuf {
        self.dir.join(format!("{prefix}{id}"))
    }

    /// Copies `source` to a new temporary file for `id`, synced; returns
    /// its path and length.
    fn write_temporary(&self, id: &str, source: &mut dyn Read) -> io::Result<(PathBuf, u64)> {
        let path = self.dir.join(format!("tf{id}.{:016x}", sys::random_u64()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(SAFE_FLAGS)
            .open(&path)?;
        let written = (|| {
            let n = io::copy(source, &mut file)?;
            file.flush()?;
            file.sync_all()?;
            Ok(n)
        })();
        match written {
            Ok(n) => Ok((path, n)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Moves the temporary file `temp` to `to`, failing if `to` exists,
    /// in one step (`renameat2` with `RENAME_NOREPLACE`): a crash leaves
    /// either name, never both. A link and an unlink would leave both
    /// (two links) to a crash between them, and a file of two links is
    /// no queue file of ours ([`not_ours`]): recovery refused the entry,
    /// and kept the locks of the delivery that made it, until the
    /// leftover scan 15 minutes later (the crash test found it). A file
    /// system without `RENAME_NOREPLACE` gets the link and the unlink.
    fn link_into_place(temp: &Path, to: &Path) -> io::Result<()> {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, temp, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                let _ = std::fs::remove_file(temp);
                return Err(e.into());
            }
        }
        let linked = std::fs::hard_link(temp, to);
        let _ = std::fs::remove_file(temp);
        linked
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Makes a new entry of `entry` (its `id` and `size` are set here) and
    /// the message read from `message`, durably: when this returns `Ok`,
    /// both files and their names are on disk. On error nothing is left
    /// (but, after a crash, leftovers that [`list`](Self::list) removes).
    pub fn create(&self, entry: &mut Entry, message: &mut dyn Read) -> io::Result<()> {
        self.create_as(self.new_id(), entry, message)
    }

    /// A new queue id, for [`create_as`](Self::create_as): a delivery
    /// names the entry in its journal before it makes it.
    pub fn new_id(&self) -> String {
        new_id(SystemTime::now())
    }

    /// [`create`](Self::create) under the id `id`. The envelope file is
    /// made last: the entry exists from the moment its name is linked.
    pub fn create_as(
        &self,
        id: String,
        entry: &mut Entry,
        message: &mut dyn Read,
    ) -> io::Result<()> {
        let (df, qf) = (self.path("df", &id), self.path("qf", &id));
        let old = (std::mem::replace(&mut entry.id, id.clone()), entry.size);
        // What this call made, and so removes again on failure (`link`
        // fails on a name in use: that file is not ours to remove).
        let (mut df_made, mut qf_made) = (false, false);
        let made = (|| {
            entry.check().map_err(invalid)?;
            let (temp, size) = self.write_temporary(&id, message)?;
            Self::link_into_place(&temp, &df)?;
            df_made = true;
            entry.size = size;
            let text = entry.to_text().map_err(invalid)?;
            let (temp, _) = self.write_temporary(&id, &mut text.as_bytes())?;
            Self::link_into_place(&temp, &qf)?;
            qf_made = true;
            self.sync_dir()
        })();
        if let Err(e) = made {
            if qf_made {
                let _ = std::fs::remove_file(&qf);
            }
            if df_made {
                let _ = std::fs::remove_file(&df);
            }
            (entry.id, entry.size) = old;
            return Err(e);
        }
        Ok(())
    }

    /// Replaces the envelope file of `entry` (an entry of this queue) with
    /// what `entry` now says, durably: a new file renamed over the old,
    /// then the directory synced. A crash leaves the old or the new.
    pub fn update(&self, entry: &Entry) -> io::Result<()> {
        let qf = self.path("qf", &entry.id);
        if !valid_id(&entry.id) {
            return Err(invalid(format!("bad queue id {:?}", entry.id)));
        }
        if let Some(why) = not_ours(&std::fs::symlink_metadata(&qf)?) {
            return Err(invalid(format!("{}: {why}", qf.display())));
        }
        let text = entry.to_text().map_err(invalid)?;
        let (temp, _) = self.write_temporary(&entry.id, &mut text.as_bytes())?;
        if let Err(e) = std::fs::rename(&temp, &qf) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        self.sync_dir()
    }

    /// Removes entry `id` durably: its envelope file first (from then on
    /// there is no entry), then its message, then the directory synced.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(invalid(format!("bad queue id {id:?}")));
        }
        std::fs::remove_file(self.path("qf", id))?;
        match std::fs::remove_file(self.path("df", id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.sync_dir()
    }

    /// Removes entry `id` whatever its envelope file holds (one torn or
    /// garbled, that [`load`](Self::load) refuses: `postie queue delete`,
    /// as Postfix's `postsuper -d` deletes by id), but only if each of its
    /// files that exists is one of ours (`lstat`ed: a file not ours, a
    /// symlink, is refused and nothing is removed). NotFound if neither
    /// file exists.
    pub fn discard(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(invalid(format!("bad queue id {id:?}")));
        }
        let mut found = false;
        for kind in ["qf", "df"] {
            let path = self.path(kind, id);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) => {
                    if let Some(why) = not_ours(&meta) {
                        return Err(invalid(format!("{}: {why}", path.display())));
                    }
                    found = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !found {
            return Err(io::ErrorKind::NotFound.into());
        }
        for kind in ["qf", "df"] {
            match std::fs::remove_file(self.path(kind, id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.sync_dir()
    }

    /// Takes the run lock of entry `id` (`flock` on its message file,
    /// which is never replaced), so that no two runners (the daemon's,
    /// `sendmail -q` from cron) nor `postie queue delete` work on one
    /// entry at once: `None` if another holds it (with `wait`, waits for
    /// it). Held until the returned lock drops.
    pub fn lock_entry(&self, id: &str, wait: bool) -> io::Result<Option<EntryLock>> {
        let file = self.open_message(id)?;
        let how = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(file, how) {
            Ok(lock) => Ok(Some(EntryLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }

    /// Opens `path` for reading if it is one of our files: `lstat` first
    /// (a file not ours is never opened), then the checks again on the
    /// open descriptor.
    fn open_ours(path: &Path) -> io::Result<File> {
        let check = |meta: &std::fs::Metadata| match not_ours(meta) {
            Some(why) => Err(invalid(why)),
            None => Ok(()),
        };
        check(&std::fs::symlink_metadata(path)?)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(SAFE_FLAGS)
            .open(path)?;
        check(&file.metadata()?)?;
        Ok(file)
    }

    /// Loads entry `id`: its envelope file, whole and intact, and a
    /// message file of ours of the size it names.
    pub fn load(&self, id: &str) -> io::Result<Entry> {
        if !valid_id(id) {
            return Err(invalid(format!("bad queue id {id:?}")));
        }
        let mut bytes = Vec::new();
        Self::open_ours(&self.path("qf", id))?
            .take(MAX_RECORD as u64 + 1)
            .read_to_end(&mut bytes)?;
        let entry = Entry::parse(&bytes).map_err(|e| invalid(format!("garbled: {e}")))?;
        if entry.id != id {
            return Err(invalid(format!("holds entry {} instead", entry.id)));
        }
        let size = self.open_message(id)?.metadata()?.len();
        if size != entry.size {
            return Err(invalid(format!(
                "message file of {size} bytes, the entry says {}",
                entry.size
            )));
        }
        Ok(entry)
    }

    /// Opens the message of entry `id` for reading, if it is ours.
    pub fn open_message(&self, id: &str) -> io::Result<File> {
        if !valid_id(id) {
            return Err(invalid(format!("bad queue id {id:?}")));
        }
        let df = self.path("df", id);
        Self::open_ours(&df).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", df.display())))
    }

    /// Scans the queue: loads every entry that is whole and ours, skips
    /// (and logs) every name that is not, and removes the leftovers of a
    /// crash older than [`LEFTOVER_AGE`]. Fails only if the directory
    /// itself is no longer safe or cannot be read.
    pub fn list(&self) -> io::Result<Listing> {
        check_dir(&self.dir)?;
        let mut out = Listing::default();
        let mut names = Vec::new();
        for d in std::fs::read_dir(&self.dir)? {
            names.push(d?.file_name());
        }
        names.sort();
        let now = SystemTime::now();
        let skip = |out: &mut Listing, name: &str, why: String| {
            log::warn!("queue {}: {name:?} skipped: {why}", self.dir.display());
            out.skipped.push((name.to_string(), why));
        };
        for os_name in &names {
            let Some(name) = os_name.to_str() else {
                skip(
                    &mut out,
                    &os_name.to_string_lossy(),
                    "not a queue file name".into(),
                );
                continue;
            };
            let Some(kind) = parse_name(name) else {
                skip(&mut out, name, "not a queue file name".into());
                continue;
            };
            let path = self.dir.join(name);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    skip(&mut out, name, e.to_string());
                    continue;
                }
            };
            if being_made(&meta, now) {
                log::debug!("queue {}: {name:?} skipped: being made", self.dir.display());
                continue;
            }
            if let Some(why) = not_ours(&meta) {
                skip(&mut out, name, why);
                continue;
            }
            let leftover = match kind {
                Name::Envelope(id) => {
                    match self.load(id) {
                        Ok(e) => out.entries.push(e),
                        Err(e) => skip(&mut out, name, e.to_string()),
                    }
                    continue;
                }
                Name::Message(id) => std::fs::symlink_metadata(self.path("qf", id)).is_err(),
                Name::Temporary => true,
            };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= LEFTOVER_AGE);
            if leftover && old {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        log::warn!(
                            "queue {}: {name:?} removed: the leftover of a crash",
                            self.dir.display()
                        );
                        out.removed.push(name.to_string());
                    }
                    Err(e) => skip(&mut out, name, format!("could not remove leftover: {e}")),
                }
            }
        }
        if !out.removed.is_empty() {
            self.sync_dir()?;
        }
        Ok(out)
    }
}

/// Refuses a queue directory that is not a directory owned by this
/// process's user, or that others may write.
fn check_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("queue {}: {why}", dir.display()),
        ))
    };
    if !meta.is_dir() {
        return refuse("not a directory".into());
    }
    if meta.uid() != me {
        return refuse(format!(
            "owned by uid {}, not {me}: the queue must be the delivery process's own",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "mode {:04o} lets others write it: the queue must be writable by its owner only \
             (want 0700)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::UNIX_EPOCH;

    use super::super::{LastError, StatusCode};
    use super::*;

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let q = Queue::open(dir.path()).unwrap();
        (dir, q)
    }

    fn entry() -> Entry {
        crate::queue::testutil::entry(UNIX_EPOCH + Duration::from_secs(1_764_900_000))
    }

    const MESSAGE: &[u8] = b"Subject: hi\n\nhello\n";

    fn created(q: &Queue) -> Entry {
        let mut e = entry();
        q.create(&mut e, &mut &MESSAGE[..]).unwrap();
        e
    }

    fn names(q: &Queue) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(q.dir())
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// A file by a leftover's name, made older than [`LEFTOVER_AGE`]
    /// (`age_secs` ago).
    fn aged(path: &Path, age_secs: u64) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
    }

    fn skipped(l: &Listing, name: &str) -> String {
        l.skipped
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, why)| why.clone())
            .unwrap_or_else(|| panic!("{name} not skipped: {l:?}"))
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// One runner at a time per entry: the run lock is refused while
    /// held (in this process too: `flock` locks belong to the open file),
    /// and free again once dropped.
    #[test]
    fn an_entry_is_run_by_one_runner_at_a_time() {
        let (_d, q) = queue();
        let e = created(&q);
        let held = q.lock_entry(&e.id, false).unwrap();
        assert!(held.is_some());
        assert!(q.lock_entry(&e.id, false).unwrap().is_none());
        drop(held);
        assert!(q.lock_entry(&e.id, false).unwrap().is_some());
        assert!(q.lock_entry("0069a1f2c3b4d5e6f708192a3b", false).is_err());
    }

    #[test]
    fn entries_are_created_loaded_updated_and_removed() {
        let (_d, q) = queue();
        let mut e = created(&q);
        assert!(valid_id(&e.id));
        assert_eq!(e.size, MESSAGE.len() as u64);
        assert_eq!(names(&q), [format!("df{}", e.id), format!("qf{}", e.id)]);
        for n in names(&q) {
            let m = std::fs::metadata(q.dir().join(n)).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o600);
            assert_eq!(m.nlink(), 1);
        }
        assert_eq!(q.load(&e.id).unwrap(), e);
        let mut msg = Vec::new();
        q.open_message(&e.id)
            .unwrap()
            .read_to_end(&mut msg)
            .unwrap();
        assert_eq!(msg, MESSAGE);
        // Two entries never share an id.
        let other = created(&q);
        assert_ne!(other.id, e.id);

        e.pending[0].attempts = 1;
        e.pending[0].last_error = Some(LastError {
            code: StatusCode::parse("4.2.0").unwrap(),
            text: "mailbox alice: lock not obtained in time".into(),
        });
        let qf = q.dir().join(format!("qf{}", e.id));
        let before = std::fs::metadata(&qf).unwrap().ino();
        q.update(&e).unwrap();
        assert_eq!(q.load(&e.id).unwrap(), e);
        // A new file renamed over the old, never the old written in place.
        assert_ne!(std::fs::metadata(&qf).unwrap().ino(), before);
        assert_eq!(names(&q).len(), 4, "no temporary left: {:?}", names(&q));
        let listing = q.list().unwrap();
        assert_eq!(listing.entries.len(), 2);
        assert!(listing.skipped.is_empty() && listing.removed.is_empty());

        q.remove(&e.id).unwrap();
        assert_eq!(
            names(&q),
            [format!("df{}", other.id), format!("qf{}", other.id)]
        );
        assert_eq!(q.load(&e.id).unwrap_err().kind(), io::ErrorKind::NotFound);
        // An update does not bring back a removed entry.
        assert!(q.update(&e).is_err());
        assert_eq!(names(&q).len(), 2);
        assert!(q.remove("../etc").is_err());
    }

    /// A failed write leaves nothing behind.
    #[test]
    fn a_failed_create_leaves_nothing() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let (_d, q) = queue();
        let mut e = entry();
        assert!(q.create(&mut e, &mut Failing).is_err());
        assert_eq!(e, entry(), "the entry as it was");
        let mut bad = entry();
        bad.recipients[0].users[0] = "-rf".into();
        assert!(q.create(&mut bad, &mut &MESSAGE[..]).is_err());
        assert!(bad.id.is_empty());
        assert!(names(&q).is_empty(), "{:?}", names(&q));
    }

    /// Files planted by the id of a new entry: the entry is not made,
    /// and the planted files are neither written through nor removed.
    #[test]
    fn a_new_entry_never_takes_a_name_in_use() {
        let (_d, q) = queue();
        let id = "0069a1f2c3b4d5e6f708192a3b".to_string();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        for planted in ["df", "qf"] {
            let path = q.dir().join(format!("{planted}{id}"));
            std::os::unix::fs::symlink(&victim, &path).unwrap();
            let mut e = entry();
            let err = q.create_as(id.clone(), &mut e, &mut &MESSAGE[..]);
            assert_eq!(err.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(e, entry());
            assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
            assert_eq!(names(&q), [format!("{planted}{id}")], "nothing else left");
            std::fs::remove_file(&path).unwrap();
        }
        let mut e = entry();
        q.create_as(id.clone(), &mut e, &mut &MESSAGE[..]).unwrap();
        assert_eq!(q.load(&id).unwrap(), e);
    }

    #[test]
    fn a_queue_directory_others_may_write_is_refused() {
        let (d, q) = queue();
        created(&q);
        for mode in [0o777, 0o770, 0o702, 0o1777] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Queue::open(d.path()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{mode:o}");
            assert!(e.to_string().contains("lets others write"), "{e}");
            assert!(q.list().is_err(), "{mode:o}");
        }
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Queue::open(d.path()).is_ok());
        let file = d.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(Queue::open(&file).is_err());
        if !root() {
            println!(
                "SKIP a_queue_directory_others_may_write_is_refused, of another uid: not root"
            );
            return;
        }
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(d.path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = Queue::open(d.path()).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        assert!(q.list().is_err());
    }

    /// Names planted in the queue directory: each is skipped with its
    /// reason, never followed or read, and the good entry still listed.
    #[test]
    fn planted_names_are_skipped_and_never_followed() {
        let (_d, q) = queue();
        let good = created(&q);
        let outside = tempfile::tempdir().unwrap();
        // A symlink by an entry's name, to a valid entry elsewhere.
        let (_d2, elsewhere) = queue();
        let target = created(&elsewhere);
        let link_id = target.id.clone();
        std::os::unix::fs::symlink(
            elsewhere.dir().join(format!("qf{link_id}")),
            q.dir().join(format!("qf{link_id}")),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            elsewhere.dir().join(format!("df{link_id}")),
            q.dir().join(format!("df{link_id}")),
        )
        .unwrap();
        // A FIFO by an entry's name: opening it would wait forever.
        let fifo_id = "0069a1f2c3b4d5e6f708192a3c";
        nix::unistd::mkfifo(
            &q.dir().join(format!("qf{fifo_id}")),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        // A hard link to a file outside: two links.
        let hard_id = "0069a1f2c3b4d5e6f708192a3d";
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        aged(&secret, 3600);
        std::fs::hard_link(&secret, q.dir().join(format!("qf{hard_id}"))).unwrap();
        // Names of no pattern.
        std::fs::write(q.dir().join("README"), "").unwrap();
        std::fs::write(q.dir().join(format!("qf{}", "A".repeat(26))), "").unwrap();
        std::fs::create_dir(q.dir().join("lost+found")).unwrap();

        let l = q.list().unwrap();
        assert_eq!(l.entries, std::slice::from_ref(&good));
        assert!(skipped(&l, &format!("qf{link_id}")).contains("a symbolic link"));
        assert!(skipped(&l, &format!("df{link_id}")).contains("a symbolic link"));
        assert!(skipped(&l, &format!("qf{fifo_id}")).contains("a special file"));
        assert!(skipped(&l, &format!("qf{hard_id}")).contains("2 links"));
        assert!(skipped(&l, "README").contains("not a queue file name"));
        assert!(skipped(&l, "lost+found").contains("not a queue file name"));
        assert!(skipped(&l, &format!("qf{}", "A".repeat(26))).contains("name"));
        assert!(l.removed.is_empty());
        // Not followed by the single-entry calls either.
        assert!(
            q.load(&link_id)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(q.open_message(&link_id).is_err());
        assert!(q.load(fifo_id).is_err());
        // Nothing outside was touched.
        assert_eq!(elsewhere.load(&link_id).unwrap(), target);
        assert_eq!(std::fs::read(&secret).unwrap(), b"x");
    }

    #[test]
    fn files_of_another_uid_are_skipped() {
        if !root() {
            println!("SKIP files_of_another_uid_are_skipped: not root");
            return;
        }
        let (_d, q) = queue();
        let theirs = created(&q);
        let good = created(&q);
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&q.dir().join(format!("qf{}", theirs.id)), nobody, None).unwrap();
        // A leftover of theirs is not removed either, however old.
        let temp = q.dir().join(format!("tf{}.{:016x}", good.id, 7));
        std::fs::write(&temp, "").unwrap();
        aged(&temp, 3600);
        nix::unistd::chown(&temp, nobody, None).unwrap();
        let l = q.list().unwrap();
        assert_eq!(l.entries, std::slice::from_ref(&good));
        let name = format!("qf{}", theirs.id);
        assert!(skipped(&l, &name).contains("of uid 65534"), "{l:?}");
        assert!(temp.exists());
        assert!(q.load(&theirs.id).is_err());
        // Their message file under our entry's name: refused too.
        nix::unistd::chown(&q.dir().join(format!("df{}", good.id)), nobody, None).unwrap();
        assert!(
            q.load(&good.id)
                .unwrap_err()
                .to_string()
                .contains("uid 65534")
        );
        assert!(q.list().unwrap().entries.is_empty());
    }

    /// A torn or garbled envelope file, a message file cut short, an
    /// envelope file under another entry's name: skipped, and kept.
    #[test]
    fn garbled_and_torn_entries_are_skipped() {
        let (_d, q) = queue();
        let torn = created(&q);
        let qf = q.dir().join(format!("qf{}", torn.id));
        let text = std::fs::read(&qf).unwrap();
        std::fs::write(&qf, &text[..text.len() - 10]).unwrap();
        let short = created(&q);
        let df = q.dir().join(format!("df{}", short.id));
        std::fs::write(&df, &MESSAGE[..5]).unwrap();
        let moved = created(&q);
        let other = created(&q);
        std::fs::rename(
            q.dir().join(format!("qf{}", other.id)),
            q.dir().join(format!("qf{}", moved.id)),
        )
        .unwrap();
        let good = created(&q);
        let l = q.list().unwrap();
        assert_eq!(l.entries, std::slice::from_ref(&good));
        assert!(
            skipped(&l, &format!("qf{}", torn.id)).contains("garbled"),
            "{l:?}"
        );
        assert!(skipped(&l, &format!("qf{}", short.id)).contains("5 bytes"));
        assert!(skipped(&l, &format!("qf{}", moved.id)).contains("instead"));
        assert!(qf.exists() && df.exists(), "kept for the administrator");
    }

    /// An entry that does not load (a torn envelope file) is discarded
    /// when its files are ours; one whose envelope file is a symlink is
    /// refused, and neither the link nor what it points to is touched; a
    /// missing one is NotFound.
    #[test]
    fn discard_removes_our_broken_entry_and_nothing_else() {
        let (_d, q) = queue();
        let torn = created(&q);
        let qf = q.dir().join(format!("qf{}", torn.id));
        let text = std::fs::read(&qf).unwrap();
        std::fs::write(&qf, &text[..text.len() - 10]).unwrap();
        assert!(q.load(&torn.id).is_err());
        q.discard(&torn.id).unwrap();
        assert!(!qf.exists());
        assert!(!q.dir().join(format!("df{}", torn.id)).exists());

        let linked = created(&q);
        let qf = q.dir().join(format!("qf{}", linked.id));
        let outside = _d.path().join("secret");
        std::fs::write(&outside, b"not the queue's").unwrap();
        std::fs::remove_file(&qf).unwrap();
        std::os::unix::fs::symlink(&outside, &qf).unwrap();
        let e = q.discard(&linked.id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(
            std::fs::symlink_metadata(&qf)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(q.dir().join(format!("df{}", linked.id)).exists());
        assert_eq!(std::fs::read(&outside).unwrap(), b"not the queue's");

        let e = q.discard(&torn.id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(q.discard("../x").is_err());
    }

    /// The leftovers of a crash (a temporary file, a message file without
    /// its envelope file) are removed once old, and kept while young (an
    /// entry may be being made).
    #[test]
    fn old_leftovers_are_removed() {
        let (_d, q) = queue();
        let good = created(&q);
        let id = "0069a1f2c3b4d5e6f708192a3e";
        let old_temp = q.dir().join(format!("tf{id}.00000000000000ab"));
        let young_temp = q.dir().join(format!("tf{id}.00000000000000cd"));
        let old_df = q.dir().join(format!("df{id}"));
        let young_df = q.dir().join("df0069a1f2c3b4d5e6f708192a3f");
        for p in [&old_temp, &young_temp, &old_df, &young_df] {
            std::fs::write(p, MESSAGE).unwrap();
        }
        aged(&old_temp, LEFTOVER_AGE.as_secs() + 1);
        aged(&old_df, LEFTOVER_AGE.as_secs() + 1);
        // An old message file with its envelope file is an entry, not a
        // leftover.
        aged(&q.dir().join(format!("df{}", good.id)), 10 * 86400);
        let l = q.list().unwrap();
        assert_eq!(l.entries, std::slice::from_ref(&good));
        let mut removed = l.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            [format!("df{id}"), format!("tf{id}.00000000000000ab")]
        );
        assert!(l.skipped.is_empty(), "{l:?}");
        assert!(!old_temp.exists() && !old_df.exists());
        assert!(young_temp.exists() && young_df.exists());
        assert!(q.load(&good.id).is_ok());
        // An old leftover that is a symlink is skipped, not removed
        // through.
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let planted = q.dir().join(format!("tf{id}.00000000000000ef"));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let l = q.list().unwrap();
        assert!(skipped(&l, &format!("tf{id}.00000000000000ef")).contains("symbolic link"));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn queue_file_names() {
        let id = "0069a1f2c3b4d5e6f708192a3b";
        assert_eq!(parse_name(&format!("qf{id}")), Some(Name::Envelope(id)));
        assert_eq!(parse_name(&format!("df{id}")), Some(Name::Message(id)));
        assert_eq!(
            parse_name(&format!("tf{id}.0123456789abcdef")),
            Some(Name::Temporary)
        );
        for bad in [
            "qf",
            "qf0069a1f2c3b4d5e6f708192a3",
            "qf0069a1f2c3b4d5e6f708192a3bb",
            "qf../../../../etc/passwd00",
            "xf0069a1f2c3b4d5e6f708192a3b",
            "tf0069a1f2c3b4d5e6f708192a3b",
            "tf0069a1f2c3b4d5e6f708192a3b.0123",
            "tf0069a1f2c3b4d5e6f708192a3b.0123456789abcdeg",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        let id = new_id(SystemTime::now());
        assert!(valid_id(&id), "{id}");
        assert_ne!(new_id(SystemTime::now()), id);
    }
}
