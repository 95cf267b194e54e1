//! The aliases file the server keeps for its lifetime ([`AliasFile`]):
//! re-stated at most once a second and re-read when it changed, so that
//! an admin's edit takes effect without a restart; SIGHUP forces a reload.
//! The only I/O of the aliases.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Aliases;
use crate::users::LookupError;

/// How often [`AliasFile::get`] looks at the file at most.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The aliases file the server uses: loaded once, then re-read when it
/// changes. Thread-safe; [`AliasFile::get`] is an `Arc` clone under a mutex
/// plus, at most once a second, one `stat`.
#[derive(Debug)]
pub struct AliasFile {
    /// `None` for [`AliasFile::empty`].
    path: Option<PathBuf>,
    /// How often `get` looks at the file at most.
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    aliases: Result<Arc<Aliases>, LookupError>,
    /// The file as last loaded; `None` after a failure or while it is
    /// missing, so that the next check loads it again.
    stamp: Option<Stamp>,
    /// The file was missing at the last check (logged once).
    missing: bool,
    /// When the file was last looked at.
    checked: Option<Instant>,
    /// How many times the file was read (for tests).
    loads: u64,
}

/// What tells one version of the file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    /// The owner: who the programs and files it names run as.
    uid: u32,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            uid: meta.uid(),
        }
    }
}

impl AliasFile {
    /// The aliases in `path`, loaded now. Never fails: a missing file is no
    /// aliases, and an unreadable one makes [`AliasFile::get`] fail until
    /// it can be read.
    pub fn open(path: &Path) -> Self {
        let file = AliasFile {
            path: Some(path.to_owned()),
            ..AliasFile::empty()
        };
        file.refresh(&mut file.lock(), true, "loaded");
        file
    }

    /// No aliases file: no aliases, never any I/O.
    pub fn empty() -> Self {
        AliasFile {
            path: None,
            interval: CHECK_INTERVAL,
            state: Mutex::new(State {
                aliases: Ok(Arc::new(Aliases::empty())),
                stamp: None,
                missing: false,
                checked: None,
                loads: 0,
            }),
        }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current aliases; looks at the file first if it was last looked
    /// at a second ago or more, and re-reads it if its inode, size or mtime
    /// changed. An error means the file exists but cannot be read: the
    /// caller must answer "try later", not "no such user".
    pub fn get(&self) -> Result<Arc<Aliases>, LookupError> {
        let mut state = self.lock();
        let due = state.checked.is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            self.refresh(&mut state, false, "reloaded");
        }
        state.aliases.clone()
    }

    /// The current aliases, the file looked at first whenever it was
    /// last looked at (one `stat`): what the delivery process expands
    /// each message with, so that it never delivers by an older version
    /// than the one the SMTP side accepted the recipients by (which only
    /// SIGHUP, sent to the SMTP side, reloads at once).
    pub fn get_fresh(&self) -> Result<Arc<Aliases>, LookupError> {
        let mut state = self.lock();
        self.refresh(&mut state, false, "reloaded");
        state.aliases.clone()
    }

    /// Re-reads the file now, changed or not (for SIGHUP). Logs `reloaded N
    /// aliases from FILE` at info and each parse warning at warn.
    pub fn reload(&self) {
        self.refresh(&mut self.lock(), true, "reloaded");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent
        // state (every field is assigned whole), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stats the file and loads it if `force` or it changed.
    fn refresh(&self, state: &mut State, force: bool, verb: &str) {
        let Some(path) = &self.path else {
            return;
        };
        state.checked = Some(Instant::now());
        match std::fs::metadata(path) {
            Ok(meta) => {
                let stamp = Stamp::of(&meta);
                if force || state.stamp != Some(stamp) {
                    self.load(state, path, stamp, verb);
                }
            }
            Err(e) => self.failed(state, path, e),
        }
    }

    /// Reads and parses the file whose `stat` gave `stamp`.
    fn load(&self, state: &mut State, path: &Path, stamp: Stamp, verb: &str) {
        state.loads += 1;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return self.failed(state, path, e),
        };
        let source = path.display().to_string();
        let text = String::from_utf8_lossy(&bytes);
        // UTF-8 names (RFC 6531) are read as they are; other bytes cannot
        // be an address's, and a name holding them is skipped.
        if let std::borrow::Cow::Owned(_) = text {
            log::warn!("{source}: not all UTF-8; other bytes are read as U+FFFD");
        }
        let (aliases, warnings) = Aliases::parse(&text, &source);
        let aliases = aliases.owned_by(stamp.uid);
        for warning in &warnings {
            log::warn!("{warning}");
        }
        log::info!("{verb} {} aliases from {source}", aliases.len());
        state.aliases = Ok(Arc::new(aliases));
        state.stamp = Some(stamp);
        state.missing = false;
    }

    /// The file could not be stat'ed or read: missing is no aliases,
    /// anything else is a lookup failure until it can be read again.
    fn failed(&self, state: &mut State, path: &Path, e: io::Error) {
        state.stamp = None;
        if e.kind() == io::ErrorKind::NotFound {
            if !state.missing {
                log::info!("{}: no such file; no aliases", path.display());
            }
            state.missing = true;
            state.aliases = Ok(Arc::new(Aliases::empty()));
            return;
        }
        state.missing = false;
        let why = LookupError(format!("{}: {e}", path.display()));
        // Once per failure, not once per check.
        if state.aliases.as_ref().err() != Some(&why) {
            log::warn!("{why}");
        }
        state.aliases = Err(why);
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::testutil::*;
    use std::time::SystemTime;

    /// An alias file in a temporary directory that never re-stats on its
    /// own (the interval is an hour), so tests decide when it looks.
    fn alias_file(dir: &tempfile::TempDir, text: Option<&str>) -> (PathBuf, AliasFile) {
        let path = dir.path().join("aliases");
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let mut file = AliasFile::open(&path);
        file.interval = Duration::from_secs(3600);
        (path, file)
    }

    /// Makes the next `get` look at the file.
    fn expire(file: &AliasFile) {
        file.lock().checked = None;
    }

    fn loads(file: &AliasFile) -> u64 {
        file.lock().loads
    }

    /// Rewrites `path` and moves its mtime, so a change is seen even on a
    /// file system with coarse timestamps.
    fn rewrite(path: &Path, text: &str, mtime: SystemTime) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(mtime).unwrap();
    }

    #[test]
    fn alias_file_loads_and_reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = alias_file(&dir, Some("staff: jon\n"));
        let first = file.get().unwrap();
        assert_eq!(first.targets("staff"), Some(&[local("jon")][..]));
        assert_eq!(loads(&file), 1);

        // Changed, but not looked at yet: the old aliases.
        let past = SystemTime::now() - Duration::from_secs(3600);
        rewrite(&path, "staff: alice\n", past);
        assert!(Arc::ptr_eq(&file.get().unwrap(), &first));

        // Looked at: reloaded.
        expire(&file);
        let second = file.get().unwrap();
        assert_eq!(second.targets("staff"), Some(&[local("alice")][..]));
        assert_eq!(loads(&file), 2);

        // Looked at again, unchanged: not read again, same Arc.
        expire(&file);
        assert!(Arc::ptr_eq(&file.get().unwrap(), &second));
        assert_eq!(loads(&file), 2);

        // Same size, only the mtime moves: reloaded.
        rewrite(&path, "staff: carol\n", past + Duration::from_secs(10));
        expire(&file);
        assert_eq!(
            file.get().unwrap().targets("staff"),
            Some(&[local("carol")][..])
        );
        assert_eq!(loads(&file), 3);

        // Replaced by a new file (new inode) with the same size and mtime.
        let tmp = dir.path().join("aliases.new");
        rewrite(&tmp, "staff: danny\n", past + Duration::from_secs(10));
        std::fs::rename(&tmp, &path).unwrap();
        expire(&file);
        assert_eq!(
            file.get().unwrap().targets("staff"),
            Some(&[local("danny")][..])
        );
    }

    #[test]
    fn alias_file_rechecks_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut file) = alias_file(&dir, Some("a: b\n"));
        file.interval = Duration::ZERO;
        rewrite(&path, "a: c\n", SystemTime::now() - Duration::from_secs(60));
        assert_eq!(file.get().unwrap().targets("a"), Some(&[local("c")][..]));
    }

    #[test]
    fn alias_file_reload_forces_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = alias_file(&dir, Some("a: b\n"));
        rewrite(&path, "a: c\n", SystemTime::now() - Duration::from_secs(60));
        file.reload();
        assert_eq!(file.get().unwrap().targets("a"), Some(&[local("c")][..]));
        file.reload();
        assert_eq!(loads(&file), 3, "reload reads even an unchanged file");
    }

    #[test]
    fn alias_file_missing_is_empty_and_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = alias_file(&dir, None);
        assert!(file.get().unwrap().is_empty());
        assert!(file.lock().missing);
        assert_eq!(loads(&file), 0);

        std::fs::write(&path, "a: b\n").unwrap();
        expire(&file);
        assert_eq!(file.get().unwrap().len(), 1);

        std::fs::remove_file(&path).unwrap();
        expire(&file);
        assert!(file.get().unwrap().is_empty());
    }

    #[test]
    fn alias_file_unreadable_is_a_lookup_error_until_fixed() {
        // A directory cannot be read as a file, as root too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases");
        std::fs::create_dir(&path).unwrap();
        let mut file = AliasFile::open(&path);
        file.interval = Duration::from_secs(3600);
        let e = file.get().unwrap_err();
        assert!(e.0.starts_with(&path.display().to_string()), "{e}");

        // Each check retries, changed or not.
        expire(&file);
        assert!(file.get().is_err());
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, "a: b\n").unwrap();
        expire(&file);
        assert_eq!(file.get().unwrap().len(), 1);
    }

    #[test]
    fn alias_file_invalid_utf8_is_read_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases");
        std::fs::write(&path, b"a: b\n\xff\xfe: x\nc: d\n").unwrap();
        let file = AliasFile::open(&path);
        let aliases = file.get().unwrap();
        assert!(aliases.contains("a"));
        assert!(aliases.contains("c"));
    }

    #[test]
    fn empty_alias_file_has_no_aliases_and_no_path() {
        let file = AliasFile::empty();
        assert!(file.path().is_none());
        assert!(file.get().unwrap().is_empty());
        file.reload();
        assert!(file.get().unwrap().is_empty());
    }

    #[test]
    fn alias_file_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AliasFile>();
        check::<Aliases>();
    }
}
