//! Appending one message to one mbox file: lock, format, fsync, rollback.
//!
//! Format (RFC 4155, mboxrd): a `From SENDER DATE` separator line, the
//! header lines postie adds, the message with LF line ends and every line
//! matching `^>*From ` given one more `>`, then a blank line.
//!
//! Safety of the spool: the mailbox is opened with `O_NOFOLLOW` and must be a
//! regular file with one link, owned by its user; a missing mailbox is
//! created with `O_EXCL`. While locked, the message is written with a few
//! large `write`s and fsynced; on any failure the file is truncated back to
//! the size it had when the lock was taken.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::{Gid, Group, Uid, fchown, geteuid};

use crate::smtp::ReversePath;
use crate::sys::LocalTime;
use crate::users::User;

/// How `From ` lines inside a message are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// `^>*From ` gets one more `>` (reversible).
    Mboxrd,
    /// Only `^From ` gets a `>` (what old readers expect; not reversible).
    Mboxo,
}

#[derive(Debug, Clone)]
pub struct MboxOptions {
    /// Mode of a newly created mailbox (default 0600).
    pub mode: u32,
    pub quoting: Quoting,
    /// How long to try for the mailbox lock before giving up (451 4.2.0).
    pub lock_timeout: Duration,
}

/// Why an append failed. The mailbox is as it was before in every case.
#[derive(Debug)]
pub enum MboxError {
    /// The lock could not be had in time.
    LockTimeout,
    /// ENOSPC.
    NoSpace,
    /// EDQUOT.
    Quota,
    /// The mailbox is not something postie will write to (symlink, not a
    /// regular file, wrong owner, several links); the text says which.
    Unsafe(String),
    Io(io::Error),
}

impl MboxError {
    /// Sorts an I/O error from writing or syncing: a full disk and an
    /// exceeded quota are told apart from other failures.
    fn from_write(e: io::Error) -> MboxError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) => MboxError::NoSpace,
            Some(libc::EDQUOT) => MboxError::Quota,
            _ => MboxError::Io(e),
        }
    }
}

impl std::fmt::Display for MboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MboxError::LockTimeout => f.write_str("timed out waiting for the mailbox lock"),
            MboxError::NoSpace => f.write_str("no space left on the mail spool"),
            MboxError::Quota => f.write_str("mailbox quota exceeded"),
            MboxError::Unsafe(why) => write!(f, "unsafe mailbox: {why}"),
            MboxError::Io(e) => write!(f, "mailbox I/O error: {e}"),
        }
    }
}

impl std::error::Error for MboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MboxError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The `From ` separator line, with its LF: `From SENDER DATE`, the date in
/// asctime(3) form, `MAILER-DAEMON` for the null sender, and no white space
/// inside SENDER (readers split this line on spaces).
pub fn from_line(sender: &ReversePath, date: &LocalTime) -> String {
    let mut who = String::new();
    if let ReversePath::Mailbox(m) = sender {
        who.push_str(&m.local);
        if let Some(domain) = &m.domain {
            who.push('@');
            who.push_str(domain);
        }
    }
    // A quoted local part may hold spaces, tabs or control characters; any
    // of them would split the line where readers (mutt) do not expect it.
    let who: String = who
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let who = if who.is_empty() {
        "MAILER-DAEMON"
    } else {
        &who
    };
    format!("From {who} {}\n", date.asctime())
}

/// The first index of `needle` in `hay`, a word at a time.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ pattern;
        // Non-zero iff some byte of `x` is zero, i.e. some byte is `needle`.
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return chunk.iter().position(|&b| b == needle).map(|i| base + i);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// Writes `body` (LF line ends) to `w` with `From ` lines quoted, making sure
/// it ends with a newline.
///
/// Rather than walking every line, this looks for `From ` anywhere and then
/// checks whether only `>`s stand between it and the start of its line;
/// the runs between quoting points are written whole.
pub fn write_quoted<W: Write + ?Sized>(w: &mut W, body: &[u8], quoting: Quoting) -> io::Result<()> {
    const FROM: &[u8] = b"From ";
    let mut written = 0; // body[..written] is out
    let mut search = 0; // where to look for the next "From "
    while let Some(i) = find_byte(&body[search..], b'F') {
        let at = search + i;
        search = at + 1;
        if !body[at..].starts_with(FROM) {
            continue;
        }
        search = at + FROM.len();
        let mut start = at;
        while start > 0 && body[start - 1] == b'>' {
            start -= 1;
        }
        let at_line_start = start == 0 || body[start - 1] == b'\n';
        let quote = at_line_start
            && match quoting {
                Quoting::Mboxrd => true,
                Quoting::Mboxo => start == at,
            };
        if quote {
            w.write_all(&body[written..start])?;
            w.write_all(b">")?;
            written = start;
        }
    }
    w.write_all(&body[written..])?;
    if body.last().is_some_and(|&b| b != b'\n') {
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Appends one message to the mailbox at `path`, owned by `owner`, creating
/// it if missing. Writes `from_line`, `headers` (already LF-terminated
/// lines), the quoted `body`, and a blank line; fsyncs; on any error
/// truncates the file back to its old size. Returns the bytes appended.
pub fn append(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    from_line: &str,
    headers: &[u8],
    body: &[u8],
) -> Result<u64, MboxError> {
    append_with(path, owner, opts, from_line, headers, body, |file| {
        Box::new(file)
    })
}

/// [`append`] writing through the writer `make_writer` builds on the open,
/// locked mailbox: the seam where tests inject failing writes.
fn append_with(
    path: &Path,
    owner: &User,
    opts: &MboxOptions,
    from_line: &str,
    headers: &[u8],
    body: &[u8],
    make_writer: impl for<'f> FnOnce(&'f File) -> Box<dyn Write + 'f>,
) -> Result<u64, MboxError> {
    let file = open_mailbox(path, owner, opts)?;
    // Lock before the owner and link checks: a mailbox another delivery
    // has just created is locked by it until it is chowned and written.
    let locked = Locked::acquire(&file, opts.lock_timeout)?;
    check_mailbox(&file, owner)?;
    let old_size = file.metadata().map_err(MboxError::Io)?.len();

    let written = write_message(make_writer(&file), opts.quoting, from_line, headers, body)
        // fdatasync(2) is enough: it also flushes the metadata needed to read
        // the data back, which includes the file's new size.
        .and_then(|n| file.sync_data().map(|()| n));

    let result = match written {
        Ok(n) => Ok(n),
        Err(e) => {
            rollback(&file, path, old_size);
            Err(MboxError::from_write(e))
        }
    };
    drop(locked);
    result
}

/// Writes the whole message through a 64 KiB buffer, so that the append is
/// a few large writes, and returns the bytes handed to `inner`. The buffer
/// is discarded, not flushed, on error: nothing may be written after the
/// rollback.
fn write_message<W: Write>(
    inner: W,
    quoting: Quoting,
    from_line: &str,
    headers: &[u8],
    body: &[u8],
) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(64 * 1024, Counting { inner, count: 0 });
    let res = (|| {
        out.write_all(from_line.as_bytes())?;
        out.write_all(headers)?;
        write_quoted(&mut out, body, quoting)?;
        out.write_all(b"\n")?;
        out.flush()
    })();
    let (counting, _unwritten) = out.into_parts();
    res.map(|()| counting.count)
}

/// Counts the bytes its writer accepted.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Cuts the mailbox back to `size` after a failed append.
fn rollback(file: &File, path: &Path, size: u64) {
    if let Err(e) = file.set_len(size).and_then(|()| file.sync_all()) {
        log::error!(
            "{}: could not truncate back to {size} bytes after a failed append: {e}",
            path.display()
        );
    }
}

/// The flags every mailbox open adds to std's `O_CLOEXEC`: never follow a
/// symbolic link, never acquire a controlling terminal.
const SAFE_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NOCTTY;

fn is_root() -> bool {
    geteuid().is_root()
}

fn unsafe_open(e: &io::Error) -> Option<MboxError> {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Some(MboxError::Unsafe("mailbox is a symbolic link".into())),
        // EISDIR: a directory; ENXIO: a FIFO without reader or a device.
        Some(libc::EISDIR) | Some(libc::ENXIO) => {
            Some(MboxError::Unsafe("not a regular file".into()))
        }
        _ => None,
    }
}

/// Opens the mailbox for appending, creating it if missing, and makes sure
/// it is a regular file.
fn open_mailbox(path: &Path, owner: &User, opts: &MboxOptions) -> Result<File, MboxError> {
    let mut tries = 0;
    let file = loop {
        tries += 1;
        match open_existing(path) {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(unsafe_open(&e).unwrap_or(MboxError::Io(e))),
        }
        match create(path, owner, opts) {
            Ok(file) => break file,
            // Someone created it between our two opens: open theirs, once.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 2 => continue,
            Err(e) => return Err(unsafe_open(&e).unwrap_or(MboxError::Io(e))),
        }
    };

    let meta = file.metadata().map_err(MboxError::Io)?;
    if !meta.file_type().is_file() {
        return Err(MboxError::Unsafe("not a regular file".into()));
    }
    // O_NONBLOCK only kept a FIFO from hanging the open; drop it for good
    // measure now that this is known to be a regular file.
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| MboxError::Io(e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags)).map_err(|e| MboxError::Io(e.into()))?;
    Ok(file)
}

fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .custom_flags(SAFE_FLAGS | libc::O_NONBLOCK)
        .open(path)
}

/// Creates a missing mailbox with exactly `opts.mode`, owned (when root) by
/// its user and the group `mail`, and makes its directory entry durable.
fn create(path: &Path, owner: &User, opts: &MboxOptions) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(opts.mode)
        .custom_flags(SAFE_FLAGS)
        .open(path)?;
    // Lock it at once (OFD locks are per open file description, so the
    // `Locked::acquire` in `append_with` only re-takes this one): another
    // delivery that opens the new file meanwhile waits for the lock and
    // then finds it chowned and written, not owned by root and empty.
    if let Err(e) = ofd_lock(&file, libc::F_WRLCK) {
        log::warn!("{}: could not lock a new mailbox: {e}", path.display());
    }
    let setup = (|| {
        // The umask may have taken bits away.
        file.set_permissions(Permissions::from_mode(opts.mode))?;
        if is_root() {
            let gid = match Group::from_name("mail") {
                Ok(Some(group)) => group.gid,
                _ => Gid::from_raw(owner.gid),
            };
            fchown(&file, Some(Uid::from_raw(owner.uid)), Some(gid))?;
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    })();
    match setup {
        Ok(()) => Ok(file),
        Err(e) => {
            // Leave no half-made mailbox behind (e.g. one still owned by root).
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// The checks on an open, locked mailbox: one link, the right owner.
fn check_mailbox(file: &File, owner: &User) -> Result<(), MboxError> {
    let meta = file.metadata().map_err(MboxError::Io)?;
    if meta.nlink() != 1 {
        return Err(MboxError::Unsafe(format!(
            "has {} hard links",
            meta.nlink()
        )));
    }
    let expected = if is_root() {
        owner.uid
    } else {
        geteuid().as_raw()
    };
    if meta.uid() != expected {
        return Err(MboxError::Unsafe(format!(
            "owned by uid {}, not {expected}",
            meta.uid()
        )));
    }
    Ok(())
}

/// The locks held on one open mailbox, released (in reverse order of
/// taking) when dropped.
///
/// Today that is one OFD ("open file description") `fcntl` write lock on
/// the whole file. OFD and not classic POSIX record locks: classic locks
/// belong to the process, so two threads of postie delivering to the same
/// mailbox would both "get" the lock, and closing any descriptor of the file
/// anywhere in the process would drop it. OFD locks belong to the open file
/// description, so they exclude other threads as well as other processes,
/// and they conflict with the classic locks other mail programs take
/// (`lockf`, `fcntl(F_SETLK)`) on Linux.
///
/// More kinds (a `.lock` dot file, `flock(2)`) fit as further fields, taken
/// one after another against the same deadline.
struct Locked<'a> {
    file: &'a File,
    ofd: bool,
}

impl<'a> Locked<'a> {
    /// Takes every lock on `file`, trying for at most `timeout`.
    fn acquire(file: &'a File, timeout: Duration) -> Result<Locked<'a>, MboxError> {
        let deadline = Instant::now() + timeout;
        let mut locked = Locked { file, ofd: false };
        retry_until(deadline, || ofd_lock(file, libc::F_WRLCK))?;
        locked.ofd = true;
        Ok(locked)
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.ofd {
            // Closing the last descriptor would release it too.
            if let Err(e) = ofd_lock(self.file, libc::F_UNLCK) {
                log::warn!("could not unlock a mailbox: {e}");
            }
        }
    }
}

/// One non-blocking attempt to set an OFD lock of `kind` on the whole file:
/// `Ok(false)` if someone else holds a conflicting one.
fn ofd_lock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    let lock = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however long it grows
        l_pid: 0, // must be 0 for OFD locks
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Calls `attempt` until it succeeds, backing off from about 1 ms to about
/// 100 ms between tries, with a little jitter so that waiting deliveries do
/// not retry in step; gives up with `LockTimeout` at `deadline`.
fn retry_until(
    deadline: Instant,
    mut attempt: impl FnMut() -> io::Result<bool>,
) -> Result<(), MboxError> {
    let mut delay = Duration::from_millis(1);
    loop {
        if attempt().map_err(MboxError::Io)? {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(MboxError::LockTimeout);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let spread = delay.as_micros() as u32 / 4 + 1;
        let jitter = Duration::from_micros(u64::from(nanos % spread));
        thread::sleep((delay + jitter).min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Mailbox;
    use nix::unistd::getegid;
    use proptest::prelude::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::symlink;
    use std::process::{Child, Command, Stdio};

    fn date() -> LocalTime {
        LocalTime {
            year: 2026,
            month: 11,
            day: 1,
            hour: 6,
            minute: 5,
            second: 4,
            weekday: 0,
            utc_offset: 3600,
        }
    }

    fn sender(local: &str, domain: Option<&str>) -> ReversePath {
        ReversePath::Mailbox(Mailbox {
            local: local.to_owned(),
            domain: domain.map(str::to_owned),
        })
    }

    #[test]
    fn from_line_null_sender() {
        assert_eq!(
            from_line(&ReversePath::Null, &date()),
            "From MAILER-DAEMON Sun Nov  1 06:05:04 2026\n"
        );
    }

    #[test]
    fn from_line_normal_sender() {
        assert_eq!(
            from_line(&sender("alice", Some("example.org")), &date()),
            "From alice@example.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("postmaster", None), &date()),
            "From postmaster Sun Nov  1 06:05:04 2026\n"
        );
    }

    #[test]
    fn from_line_quoted_sender_has_no_white_space() {
        assert_eq!(
            from_line(&sender("john smith", Some("example.org")), &date()),
            "From john_smith@example.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("a\tb\rc\nd\u{7f}e\u{a0}f", Some("x.org")), &date()),
            "From a_b_c_d_e_f@x.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("", None), &date()),
            "From MAILER-DAEMON Sun Nov  1 06:05:04 2026\n"
        );
    }

    fn quoted(body: &[u8], quoting: Quoting) -> String {
        let mut out = Vec::new();
        write_quoted(&mut out, body, quoting).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn write_quoted_mboxrd() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("From x\n", ">From x\n"),
            (">From x\n", ">>From x\n"),
            (">>From x\n", ">>>From x\n"),
            (" From x\n", " From x\n"),
            ("From\n", "From\n"),
            ("Fromx\n", "Fromx\n"),
            ("From", "From\n"),
            ("From ", ">From \n"),
            ("a\nFrom x", "a\n>From x\n"),
            ("no newline", "no newline\n"),
            ("\n", "\n"),
            ("a>From x\n", "a>From x\n"),
            (
                "x From y\nFrom z\n>>From\n>>From \n",
                "x From y\n>From z\n>>From\n>>>From \n",
            ),
            ("From From From \nFrom\n", ">From From From \nFrom\n"),
            ("F\nFr\nFro\nFrom\n", "F\nFr\nFro\nFrom\n"),
            ("\n\nFrom a\n\n>From b\n", "\n\n>From a\n\n>>From b\n"),
        ];
        for (body, want) in table {
            assert_eq!(quoted(body.as_bytes(), Quoting::Mboxrd), *want, "{body:?}");
        }
    }

    #[test]
    fn write_quoted_mboxo() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("From x\n", ">From x\n"),
            (">From x\n", ">From x\n"),
            (">>From x\n", ">>From x\n"),
            (" From x\n", " From x\n"),
            ("From\n", "From\n"),
            ("From", "From\n"),
            ("a\nFrom x", "a\n>From x\n"),
            ("no newline", "no newline\n"),
            ("x\n>From y\nFrom z\n", "x\n>From y\n>From z\n"),
        ];
        for (body, want) in table {
            assert_eq!(quoted(body.as_bytes(), Quoting::Mboxo), *want, "{body:?}");
        }
    }

    /// Counts `write` calls.
    #[derive(Default)]
    struct CountWrites {
        calls: usize,
        data: Vec<u8>,
    }

    impl Write for CountWrites {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_quoted_writes_unchanged_runs_whole() {
        let line = "Some text, Fine, For everyone: From here on\n";
        let body = line.repeat(100_000);
        let mut w = CountWrites::default();
        write_quoted(&mut w, body.as_bytes(), Quoting::Mboxrd).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.data, body.as_bytes());

        let body = format!("{}From me\n{}", line.repeat(1000), line.repeat(1000));
        let mut w = CountWrites::default();
        write_quoted(&mut w, body.as_bytes(), Quoting::Mboxrd).unwrap();
        assert_eq!(w.calls, 3);
    }

    /// Undoes mboxrd quoting: one `>` off every `^>+From ` line.
    fn unquote_mboxrd(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let gt = line.iter().take_while(|&&b| b == b'>').count();
            if gt > 0 && line[gt..].starts_with(b"From ") {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn find_byte_matches_naive(hay in proptest::collection::vec(
            prop_oneof![Just(b'F'), Just(b'\n'), Just(0u8), Just(0xffu8), any::<u8>()], 0..64),
            needle in prop_oneof![Just(b'F'), Just(b'\n'), any::<u8>()]) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
        }

        #[test]
        fn mboxrd_is_reversible(body in "([>]{0,3}(From |From|Fro|x| |\n)){0,30}") {
            let out = quoted(body.as_bytes(), Quoting::Mboxrd);
            let mut want = body.clone().into_bytes();
            if want.last().is_some_and(|&b| b != b'\n') {
                want.push(b'\n');
            }
            prop_assert_eq!(unquote_mboxrd(out.as_bytes()), want);
            // And no line of the output starts with an unquoted "From ".
            for line in out.split('\n') {
                prop_assert!(!line.starts_with("From "));
            }
        }
    }

    fn me() -> User {
        User {
            name: "me".into(),
            uid: geteuid().as_raw(),
            gid: getegid().as_raw(),
        }
    }

    fn opts(lock_timeout: Duration) -> MboxOptions {
        MboxOptions {
            mode: 0o600,
            quoting: Quoting::Mboxrd,
            lock_timeout,
        }
    }

    const FROM: &str = "From a@b.c Sun Nov  1 06:05:04 2026\n";
    const HEADERS: &[u8] =
        b"Return-Path: <a@b.c>\nReceived: from x by y; Sun, 1 Nov 2026 06:05:04 +0100\n";

    fn message(body: &[u8]) -> Vec<u8> {
        let mut m = FROM.as_bytes().to_vec();
        m.extend_from_slice(HEADERS);
        write_quoted(&mut m, body, Quoting::Mboxrd).unwrap();
        m.push(b'\n');
        m
    }

    #[test]
    fn append_creates_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let body1 = b"Subject: one\n\nhello\nFrom the start\n";
        let body2 = b"Subject: two\n\nno final newline";

        let n1 = append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            body1,
        )
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), geteuid().as_raw());
        assert_eq!(n1, message(body1).len() as u64);

        let n2 = append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            body2,
        )
        .unwrap();
        assert_eq!(n2, message(body2).len() as u64);

        let mut want = message(body1);
        want.extend_from_slice(&message(body2));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert!(want.ends_with(b"no final newline\n\n"));
    }

    #[test]
    fn append_creates_with_exact_mode_despite_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let mut o = opts(Duration::from_secs(5));
        o.mode = 0o662; // the usual umask 022 would take away both write bits
        append(&path, &me(), &o, FROM, HEADERS, b"x\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o662);
    }

    #[test]
    fn append_without_spool_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("me");
        let err = append(
            &path,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert!(matches!(err, Err(MboxError::Io(_))), "{err:?}");
    }

    fn assert_unsafe(res: Result<u64, MboxError>, contains: &str) {
        match res {
            Err(MboxError::Unsafe(why)) => assert!(why.contains(contains), "{why}"),
            other => panic!("expected Unsafe({contains}), got {other:?}"),
        }
    }

    #[test]
    fn append_refuses_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious\n").unwrap();
        let path = dir.path().join("me");
        symlink(&target, &path).unwrap();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "symbolic link");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious\n");

        // A dangling link is not followed to create its target either.
        let dangling = dir.path().join("dangling");
        let nowhere = dir.path().join("nowhere");
        symlink(&nowhere, &dangling).unwrap();
        let res = append(
            &dangling,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert!(res.is_err(), "{res:?}");
        assert!(!nowhere.exists());
    }

    #[test]
    fn append_refuses_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        std::fs::hard_link(&path, dir.path().join("other")).unwrap();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "has 2 hard links");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    }

    #[test]
    fn append_refuses_fifo_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let res = append(
            &fifo,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a regular file");

        // Even with a reader present (so that the open succeeds).
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let res = append(
            &fifo,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a regular file");
        drop(reader);

        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        let res = append(
            &sub,
            &me(),
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "not a regular file");
    }

    #[test]
    fn append_refuses_wrong_owner_as_root() {
        if !geteuid().is_root() {
            // Only root can make a file someone else's.
            eprintln!("SKIP append_refuses_wrong_owner_as_root: not running as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();
        let other = User {
            name: "other".into(),
            uid: 54_321,
            gid: 54_321,
        };
        let res = append(
            &path,
            &other,
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        );
        assert_unsafe(res, "owned by uid 0, not 54321");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");

        // A mailbox it creates is the user's.
        let new = dir.path().join("other");
        append(
            &new,
            &other,
            &opts(Duration::from_secs(1)),
            FROM,
            HEADERS,
            b"x\n",
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().uid(), 54_321);
    }

    /// Writes through to the file until `left` bytes are used up, then
    /// fails with ENOSPC.
    struct FailAfter<'f> {
        file: &'f File,
        left: usize,
    }

    impl Write for FailAfter<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.left);
            let n = (&mut &*self.file).write(&buf[..n])?;
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn append_rolls_back_on_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"first\n",
        )
        .unwrap();
        let before = std::fs::read(&path).unwrap();

        let big = "a line of text\nFrom someone\n".repeat(10_000);
        for left in [0, 10, 100, 70_000, 200_000] {
            let res = append_with(
                &path,
                &me(),
                &opts(Duration::from_secs(5)),
                FROM,
                HEADERS,
                big.as_bytes(),
                |file| Box::new(FailAfter { file, left }),
            );
            assert!(matches!(res, Err(MboxError::NoSpace)), "{res:?}");
            assert_eq!(std::fs::read(&path).unwrap(), before, "left {left}");
        }

        let res = append_with(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"x\n",
            |_| Box::new(FailQuota),
        );
        assert!(matches!(res, Err(MboxError::Quota)), "{res:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // And the mailbox still takes mail afterwards.
        append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"second\n",
        )
        .unwrap();
        let mut want = before.clone();
        want.extend_from_slice(&message(b"second\n"));
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    struct FailQuota;

    impl Write for FailQuota {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::EDQUOT))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A python3 child that holds a classic POSIX lock (`lockf`) on `path`
    /// for `secs`, returned once it has the lock.
    fn hold_posix_lock(path: &Path, secs: f64) -> Child {
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1], 'r+')\n\
                      fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      print('locked', flush=True)\n\
                      time.sleep(float(sys.argv[2]))\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        child
    }

    #[test]
    fn append_waits_for_a_posix_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"").unwrap();

        let start = Instant::now();
        let mut child = hold_posix_lock(&path, 1.0);
        append(
            &path,
            &me(),
            &opts(Duration::from_secs(5)),
            FROM,
            HEADERS,
            b"x\n",
        )
        .unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(800), "{waited:?}");
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(&path).unwrap(), message(b"x\n"));
    }

    #[test]
    fn append_times_out_on_a_posix_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        std::fs::write(&path, b"old\n").unwrap();

        let mut child = hold_posix_lock(&path, 3.0);
        let start = Instant::now();
        let res = append(
            &path,
            &me(),
            &opts(Duration::from_millis(200)),
            FROM,
            HEADERS,
            b"x\n",
        );
        let waited = start.elapsed();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(res, Err(MboxError::LockTimeout)), "{res:?}");
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    }

    #[test]
    fn ofd_locks_exclude_threads_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let a = File::options()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let b = File::options().append(true).open(&path).unwrap();
        let held = Locked::acquire(&a, Duration::ZERO).unwrap();
        let res = Locked::acquire(&b, Duration::from_millis(20));
        assert!(matches!(res, Err(MboxError::LockTimeout)));
        drop(held);
        Locked::acquire(&b, Duration::ZERO).unwrap();
    }

    #[test]
    fn concurrent_appends_stay_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me");
        let body = |t: usize, i: usize| {
            let filler = format!("thread {t} message {i} filler line\n").repeat(3000);
            format!("Subject: {t}-{i}\n\n{filler}From inside\n{filler}end {t}-{i}").into_bytes()
        };

        thread::scope(|s| {
            for t in 0..2 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..50 {
                        let o = opts(Duration::from_secs(30));
                        append(path, &me(), &o, FROM, HEADERS, &body(t, i)).unwrap();
                    }
                });
            }
        });

        let data = std::fs::read(&path).unwrap();
        let expected: Vec<Vec<Vec<u8>>> = (0..2)
            .map(|t| (0..50).map(|i| message(&body(t, i))).collect())
            .collect();
        let mut next = [0usize; 2];
        let mut pos = 0;
        while pos < data.len() {
            let t = (0..2)
                .find(|&t| next[t] < 50 && data[pos..].starts_with(&expected[t][next[t]]))
                .unwrap_or_else(|| panic!("garbled mailbox at byte {pos}"));
            pos += expected[t][next[t]].len();
            next[t] += 1;
        }
        assert_eq!(next, [50, 50]);
    }
}
