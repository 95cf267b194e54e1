//! The message received after `DATA`, held in memory or spilled to disk.
//!
//! A message (already dot-unstuffed, LF line ends) is kept in a `Vec` until
//! it would grow past a threshold (1 MiB by default, chosen by the caller).
//! Past it, the content moves to an unnamed temporary file made with
//! [`tempfile::tempfile_in`] — `O_TMPFILE` on Linux where the file system
//! has it, otherwise a file unlinked at once — so nothing is left behind in
//! the temporary directory, even on a crash. Delivery then streams from the
//! file. Memory per session stays bounded whatever the size of the message.
//!
//! After the spill, the `Vec` is reused as a small write buffer (at most
//! [`FILE_BUF`] bytes and at most the threshold): small writes are gathered
//! into large `write`s. A [`reader`](MessageBuf::reader) reads the file with
//! `pread` at its own offset and then the unwritten tail of the buffer, so it
//! needs no flush, and several readers disturb neither each other nor the
//! writer.
//!
//! If a write fails (ENOSPC in the temporary directory, say), the content is
//! incomplete: every later write and [`reader`](MessageBuf::reader) fails
//! too, until [`clear`](MessageBuf::clear), so a truncated message cannot be
//! delivered by mistake.
//!
//! Here too is what the SMTP side knows of delivery, so that it need not
//! import [`crate::deliver`]: the [`Delivery`] boundary it calls, with
//! [`MailboxRefused`], why a mailbox fails the RCPT-time check, and
//! [`MessageSource`], a message readable once per mailbox (a
//! [`MessageBuf`] here, the delivery process's
//! [`crate::privsep::FdMessage`] there), with the sealed memory copy that
//! carries a message across the privilege-separation boundary
//! (`memfd_copy`).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::smtp::{Envelope, Outcome};
use crate::users::User;

/// The default threshold: bytes held in memory before spilling.
pub const DEFAULT_THRESHOLD: usize = 1024 * 1024;

/// Size of the write buffer once spilled, of each reader's buffer over the
/// file, and the capacity the `Vec` is shrunk back to by `clear()`.
pub const FILE_BUF: usize = 64 * 1024;

/// One message's content: in memory up to a threshold, then in an unnamed
/// temporary file.
#[derive(Debug)]
pub struct MessageBuf {
    /// In memory: the whole content. Spilled: bytes not yet written to
    /// `file` (they follow its content).
    mem: Vec<u8>,
    /// The unnamed temporary file, once spilled.
    file: Option<File>,
    /// Total bytes written since the last `clear()`.
    len: u64,
    threshold: usize,
    dir: PathBuf,
    /// A write failed since the last `clear()`: the content is incomplete.
    failed: bool,
}

impl MessageBuf {
    /// `threshold`: bytes kept in memory before spilling; `dir`: where the
    /// unnamed temp file goes.
    pub fn new(threshold: usize, dir: PathBuf) -> Self {
        MessageBuf {
            mem: Vec::new(),
            file: None,
            len: 0,
            threshold,
            dir,
            failed: false,
        }
    }

    /// Total bytes written since the last clear().
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the content lives in a temporary file.
    pub fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    /// A reader over the whole content from the start; may be called several
    /// times (once per recipient mailbox), and readers may be used side by
    /// side. Fails if a write failed since the last `clear()`.
    pub fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        if self.failed {
            return Err(io::Error::other(
                "message incomplete: an earlier write to it failed",
            ));
        }
        match &self.file {
            None => Ok(Box::new(&self.mem[..])),
            Some(file) => {
                let on_file = self.len - self.mem.len() as u64;
                let file_part = FileReader::new(file, on_file, |_, _| {
                    "temporary message file shorter than what was written to it".into()
                });
                Ok(Box::new(
                    BufReader::with_capacity(FILE_BUF, file_part).chain(&self.mem[..]),
                ))
            }
        }
    }

    /// The whole message as a descriptor another process can read, once
    /// it has spilled: the temporary file itself, with the bytes still in
    /// memory written after its content (positionally: the buffer's own
    /// bookkeeping is unchanged), so that a large message is not copied
    /// again. `None` while the message is in memory.
    pub fn spilled_fd(&self) -> io::Result<Option<std::os::fd::OwnedFd>> {
        if self.failed {
            return Err(io::Error::other(
                "message incomplete: an earlier write to it failed",
            ));
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let on_file = self.len - self.mem.len() as u64;
        file.write_all_at(&self.mem, on_file)?;
        Ok(Some(file.try_clone()?.into()))
    }

    /// Forget the content (for the next message on the same connection):
    /// drops the temp file and shrinks the memory buffer back to
    /// [`FILE_BUF`] if it grew larger, so an idle connection does not keep a
    /// large buffer.
    pub fn clear(&mut self) {
        self.file = None;
        self.mem.clear();
        self.mem.shrink_to(FILE_BUF);
        self.len = 0;
        self.failed = false;
    }

    #[cfg(test)]
    fn mem_capacity(&self) -> usize {
        self.mem.capacity()
    }

    /// The write buffer's size once spilled.
    fn file_buf(&self) -> usize {
        self.threshold.min(FILE_BUF)
    }

    /// Append to the in-memory content, growing the `Vec` as usual but never
    /// past the threshold (the caller made sure the result fits in it).
    fn push_mem(&mut self, buf: &[u8]) {
        let need = self.mem.len() + buf.len();
        if need > self.mem.capacity() {
            let target = (self.mem.capacity() * 2).max(need).min(self.threshold);
            self.mem.reserve_exact(target - self.mem.len());
        }
        self.mem.extend_from_slice(buf);
    }

    /// Move the content to a new unnamed temporary file and make `mem` the
    /// (small) write buffer.
    fn spill(&mut self) -> io::Result<()> {
        let mut file = tempfile::tempfile_in(&self.dir)?;
        file.write_all(&self.mem)?;
        self.file = Some(file);
        self.mem = Vec::with_capacity(self.file_buf());
        Ok(())
    }

    /// Write the buffered tail to the file (spilled only).
    fn flush_mem(&mut self) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            if !self.mem.is_empty() {
                file.write_all(&self.mem)?;
                self.mem.clear();
            }
        }
        Ok(())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            if self.mem.len() + buf.len() <= self.threshold {
                self.push_mem(buf);
                return Ok(());
            }
            self.spill()?;
        }
        let cap = self.file_buf();
        if self.mem.len() + buf.len() > cap {
            self.flush_mem()?;
        }
        if buf.len() >= cap {
            if let Some(file) = &mut self.file {
                file.write_all(buf)?;
            }
        } else {
            self.mem.extend_from_slice(buf);
        }
        Ok(())
    }
}

impl Write for MessageBuf {
    /// Appends all of `buf` (or fails).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(
                "message incomplete: an earlier write to it failed",
            ));
        }
        match self.append(buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(buf.len())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Writes the buffered tail to the temporary file, if spilled. Not needed
    /// before [`reader`](MessageBuf::reader).
    fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "message incomplete: an earlier write to it failed",
            ));
        }
        let r = self.flush_mem();
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

// What the SMTP side hands delivery.

/// What the SMTP side asks of delivery: the narrow, typed boundary that
/// privilege separation puts a process boundary across
/// ([`crate::privsep::DeliveryProcess`] implements it by asking the delivery
/// process; [`crate::deliver::Deliverer`] does the work).
pub trait Delivery: Send + Sync {
    /// Delivers one message to every recipient of `env`, all or nothing.
    fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome;
    /// The RCPT-time check of `user`'s mailbox; `Err` says why not.
    fn check_mailbox(&self, user: &User) -> Result<(), MailboxRefused>;
    /// Undoes the deliveries a crash interrupted ([`crate::journal`]):
    /// called at start, before the first session, by the process that
    /// delivers. Nothing to do for the SMTP side of a privilege-separated
    /// postie.
    fn recover(&self) {}
    /// Removes what delivery keeps between messages (idle journals), at
    /// exit.
    fn close(&self) {}
    /// Tries the queue entries `filter` picks ([`crate::queue`]): delivers
    /// to their pending recipients that can take the message now, and
    /// returns a notice of failure to the sender for those given up.
    /// Nothing to do where there is no queue (the SMTP side of a
    /// privilege-separated postie, a postie without a queue directory).
    fn run_queue(&self, filter: &RunFilter) -> RunSummary {
        let _ = filter;
        RunSummary::default()
    }
    /// Where mail to `to` goes as delivery expands it (`.forward` and
    /// `:include:` files read), for `postie check`; `None` where delivery
    /// is another process's.
    fn explain(&self, to: &crate::smtp::Mailbox) -> Option<Result<Explained, String>> {
        let _ = to;
        None
    }
}

/// What [`Delivery::explain`] finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explained {
    /// Each destination: a mailbox, a file or a program, and as whom.
    pub dests: Vec<crate::dest::Dest>,
    /// Each user whose `.forward` was ignored, and why.
    pub ignored_forwards: Vec<(String, String)>,
}

/// Which queue entries a run of the queue tries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only those entries (queue ids); empty: all.
    pub ids: Vec<String>,
    /// Only entries with a pending recipient whose address holds this,
    /// case-insensitively (sendmail's `-qR`).
    pub recipient: Option<String>,
    /// Only entries whose sender holds this, case-insensitively
    /// (sendmail's `-qS`).
    pub sender: Option<String>,
    /// Every pending recipient, due or not (`sendmail -q`, `postie queue
    /// flush`); otherwise only those whose next attempt has come (the
    /// daemon's runner, `postie queue run`).
    pub all: bool,
}

/// What a run of the queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Entries tried (picked by the filter, with a recipient due or
    /// `all`, and not being run by another runner).
    pub entries: usize,
    /// Recipients delivered to.
    pub delivered: usize,
    /// Recipients still pending after this run.
    pub deferred: usize,
    /// Recipients given up or failed for good (their sender told).
    pub failed: usize,
    /// When the earliest recipient left pending is due again, if any.
    pub next_due: Option<std::time::SystemTime>,
}

/// Why the RCPT-time check refuses a mailbox ([`Delivery::check_mailbox`]).
/// Its text is what the mail log says after `mailbox unavailable: `.
///
/// Across the privilege separation only that text travels: the delivery
/// process answers with it, and the SMTP side, which only logs it, holds
/// it as [`MailboxRefused::Reported`].
#[derive(Debug)]
pub enum MailboxRefused {
    /// There is no mailbox, and this process cannot create one for its
    /// owner (only root can give a new mailbox to another user); `why`
    /// says who we are and who the owner is.
    CannotCreate { path: PathBuf, why: String },
    /// As root, with the owner's uid and the mail group (`group`, by
    /// name where it has one), the spool does not let us create the
    /// mailbox or its dotlock there (`faccessat`'s `errno`).
    SpoolNotWritable {
        path: PathBuf,
        uid: u32,
        group: String,
        errno: nix::errno::Errno,
    },
    /// The mailbox is not one postie will write to, or could not be
    /// examined ([`crate::mbox::check`]).
    Mbox {
        path: PathBuf,
        err: crate::mbox::MboxError,
    },
    /// Switching to the owner's filesystem identity failed.
    Identity { path: PathBuf, err: io::Error },
    /// The delivery process refused the mailbox; its words, as the wire
    /// carried them.
    Reported(String),
    /// The delivery process answered what a check never is answered (the
    /// answer, as `{:?}` shows it).
    UnexpectedAnswer(String),
    /// No answer from the delivery process.
    NoAnswer(io::Error),
}

impl std::fmt::Display for MailboxRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailboxRefused::CannotCreate { path, why } => write!(f, "{}: {why}", path.display()),
            MailboxRefused::SpoolNotWritable {
                path,
                uid,
                group,
                errno,
            } => write!(
                f,
                "{}: uid {uid} with group {group} cannot create the mailbox or its dotlock there ({})",
                path.display(),
                errno.desc()
            ),
            MailboxRefused::Mbox { path, err } => write!(f, "{}: {err}", path.display()),
            MailboxRefused::Identity { path, err } => write!(f, "{}: {err}", path.display()),
            MailboxRefused::Reported(why) => f.write_str(why),
            MailboxRefused::UnexpectedAnswer(answer) => {
                write!(f, "delivery process answered {answer}")
            }
            MailboxRefused::NoAnswer(err) => write!(f, "delivery process: {err}"),
        }
    }
}

impl std::error::Error for MailboxRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MailboxRefused::Mbox { err, .. } => Some(err),
            MailboxRefused::Identity { err, .. } | MailboxRefused::NoAnswer(err) => Some(err),
            _ => None,
        }
    }
}

/// A received message, readable from the start as many times as needed
/// (once per mailbox).
pub trait MessageSource: Sync {
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reader(&self) -> io::Result<Box<dyn Read + '_>>;

    /// The message as a descriptor another process can read: an anonymous
    /// memory file (memfd) holding a copy.
    fn transfer_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        memfd_copy(self)
    }
}

/// A copy of `message` in an anonymous memory file (memfd), sealed so
/// that neither its size nor its content can change any more: the
/// delivery process refuses an unsealed one.
fn memfd_copy<M: MessageSource + ?Sized>(message: &M) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(
        c"postie-message",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut f = std::fs::File::from(fd);
    io::copy(&mut message.reader()?, &mut f)?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&f, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(f.into())
}

impl MessageSource for MessageBuf {
    fn len(&self) -> u64 {
        MessageBuf::len(self)
    }

    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        MessageBuf::reader(self)
    }

    /// A spilled message goes as its temporary file, not as a copy.
    fn transfer_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        match self.spilled_fd()? {
            Some(fd) => Ok(fd),
            None => memfd_copy(self),
        }
    }
}

/// Reads `file[pos..end]` with `pread`, at its own offset, so that
/// several readers of one file disturb neither each other nor a writer: a
/// spilled [`MessageBuf`] and the delivery process's
/// [`crate::privsep::FdMessage`] read their files with it. A file that ends
/// before `end` is an error, never a short message: `short` says why, from
/// where the read stopped and where it should have.
pub struct FileReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    short: fn(pos: u64, end: u64) -> String,
}

impl<'a> FileReader<'a> {
    /// Reads `file` from its start up to `end`.
    pub fn new(file: &'a File, end: u64, short: fn(u64, u64) -> String) -> Self {
        Self::range(file, 0, end, short)
    }

    /// Reads `file` from `start` up to `end`.
    pub fn range(file: &'a File, start: u64, end: u64, short: fn(u64, u64) -> String) -> Self {
        FileReader {
            file,
            pos: start.min(end),
            end,
            short,
        }
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                (self.short)(self.pos, self.end),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The texts of the RCPT-time refusals, as the mail log gives them
    /// after `mailbox unavailable: ` (tests and admins grep them).
    #[test]
    fn mailbox_refusals_say_what_they_always_said() {
        use crate::mbox::MboxError;
        let path = || PathBuf::from("/var/mail/carol");
        let cases = [
            (
                MailboxRefused::CannotCreate {
                    path: path(),
                    why: "no mailbox, and postie (uid 1000) cannot create one owned by carol \
                          (uid 1001) unless run as root"
                        .into(),
                },
                "/var/mail/carol: no mailbox, and postie (uid 1000) cannot create one owned by \
                 carol (uid 1001) unless run as root",
            ),
            (
                MailboxRefused::SpoolNotWritable {
                    path: path(),
                    uid: 1001,
                    group: "mail".into(),
                    errno: nix::errno::Errno::EACCES,
                },
                "/var/mail/carol: uid 1001 with group mail cannot create the mailbox or its \
                 dotlock there (Permission denied)",
            ),
            (
                MailboxRefused::Mbox {
                    path: path(),
                    err: MboxError::Unsafe("is a symbolic link".into()),
                },
                "/var/mail/carol: refusing to write: is a symbolic link",
            ),
            (
                MailboxRefused::Mbox {
                    path: path(),
                    err: MboxError::Io(io::Error::from_raw_os_error(libc::EIO)),
                },
                "/var/mail/carol: Input/output error (os error 5)",
            ),
            (
                MailboxRefused::Identity {
                    path: path(),
                    err: io::Error::from_raw_os_error(libc::EPERM),
                },
                "/var/mail/carol: Operation not permitted (os error 1)",
            ),
            (
                MailboxRefused::Reported("/var/mail/carol: refusing to write: x".into()),
                "/var/mail/carol: refusing to write: x",
            ),
            (
                MailboxRefused::UnexpectedAnswer("Bad(\"truncated request\")".into()),
                "delivery process answered Bad(\"truncated request\")",
            ),
            (
                MailboxRefused::NoAnswer(io::ErrorKind::UnexpectedEof.into()),
                "delivery process: unexpected end of file",
            ),
        ];
        for (refused, text) in cases {
            assert_eq!(refused.to_string(), text, "{refused:?}");
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn read_all(m: &MessageBuf) -> Vec<u8> {
        let mut out = Vec::new();
        m.reader().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn dir_is_empty(dir: &std::path::Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn below_threshold_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
        assert!(m.is_empty());
        let data = pattern(1000);
        m.write_all(&data[..400]).unwrap();
        m.write_all(&data[400..]).unwrap();
        assert!(!m.is_spilled());
        assert_eq!(m.len(), 1000);
        assert!(!m.is_empty());
        assert_eq!(read_all(&m), data);
        assert_eq!(read_all(&m), data);
        assert!(m.mem_capacity() <= 1000);
    }

    #[test]
    fn one_large_write_spills() {
        let dir = tempfile::tempdir().unwrap();
        for size in [1001, 10_000, 3_000_000] {
            let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
            let data = pattern(size);
            m.write_all(&data).unwrap();
            assert!(m.is_spilled());
            assert_eq!(m.len(), size as u64);
            assert_eq!(read_all(&m), data);
            assert_eq!(read_all(&m), data);
        }
    }

    #[test]
    fn many_small_writes_spill() {
        let dir = tempfile::tempdir().unwrap();
        for size in [10_000, 3_000_000] {
            let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
            let data = pattern(size);
            for chunk in data.chunks(77) {
                m.write_all(chunk).unwrap();
            }
            assert!(m.is_spilled());
            assert_eq!(m.len(), size as u64);
            assert_eq!(read_all(&m), data);
            assert!(m.mem_capacity() <= 1000);
        }
    }

    #[test]
    fn spilled_fd_is_the_whole_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
        m.write_all(&pattern(500)).unwrap();
        assert!(m.spilled_fd().unwrap().is_none());
        let data = pattern(100_001);
        m.clear();
        for chunk in data.chunks(77) {
            m.write_all(chunk).unwrap();
        }
        let fd = m.spilled_fd().unwrap().expect("spilled");
        // Read positionally, as the delivery process does: the offset is
        // shared with the buffer's own descriptor.
        let f = File::from(fd);
        assert_eq!(f.metadata().unwrap().len(), data.len() as u64);
        let mut out = vec![0; data.len()];
        f.read_exact_at(&mut out, 0).unwrap();
        assert_eq!(out, data);
        // The buffer itself still reads the same message.
        assert_eq!(read_all(&m), data);
    }

    #[test]
    fn readers_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
        let data = pattern(200_000);
        for chunk in data.chunks(333) {
            m.write_all(chunk).unwrap();
        }
        let mut a = m.reader().unwrap();
        let mut b = m.reader().unwrap();
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 4097];
        loop {
            let na = a.read(&mut buf).unwrap();
            out_a.extend_from_slice(&buf[..na]);
            let nb = b.read(&mut buf[..1000]).unwrap();
            out_b.extend_from_slice(&buf[..nb]);
            if na == 0 && nb == 0 {
                break;
            }
        }
        assert_eq!(out_a, data);
        assert_eq!(out_b, data);
        drop((a, b));
        // The writer's file offset was not disturbed by the readers.
        m.write_all(b"tail").unwrap();
        let mut all = data.clone();
        all.extend_from_slice(b"tail");
        assert_eq!(read_all(&m), all);
    }

    #[test]
    fn clear_then_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
        m.write_all(&pattern(5000)).unwrap();
        assert!(m.is_spilled());
        m.clear();
        assert!(!m.is_spilled());
        assert!(m.is_empty());
        assert_eq!(read_all(&m), b"");
        m.write_all(b"small message\n").unwrap();
        assert!(!m.is_spilled());
        assert_eq!(read_all(&m), b"small message\n");
        m.clear();
        let data = pattern(7000);
        m.write_all(&data).unwrap();
        assert!(m.is_spilled());
        assert_eq!(read_all(&m), data);
    }

    #[test]
    fn clear_shrinks_a_large_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(DEFAULT_THRESHOLD, dir.path().to_path_buf());
        m.write_all(&pattern(DEFAULT_THRESHOLD)).unwrap();
        assert!(!m.is_spilled());
        assert!(m.mem_capacity() <= DEFAULT_THRESHOLD);
        m.clear();
        assert!(m.mem_capacity() <= FILE_BUF);
    }

    #[test]
    fn temp_file_is_unnamed() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(1000, dir.path().to_path_buf());
        m.write_all(&pattern(50_000)).unwrap();
        m.flush().unwrap();
        assert!(m.is_spilled());
        assert!(dir_is_empty(dir.path()));
        m.clear();
        assert!(dir_is_empty(dir.path()));
    }

    #[test]
    fn memory_is_bounded_after_spilling() {
        let dir = tempfile::tempdir().unwrap();
        let threshold = 100_000;
        let mut m = MessageBuf::new(threshold, dir.path().to_path_buf());
        for chunk in pattern(1_000_000).chunks(999) {
            m.write_all(chunk).unwrap();
            assert!(m.mem_capacity() <= threshold);
        }
        assert!(m.is_spilled());
        assert!(m.mem_capacity() <= FILE_BUF);
    }

    #[test]
    fn spill_error_is_propagated() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("does-not-exist");
        let mut m = MessageBuf::new(1000, missing);
        m.write_all(&pattern(1000)).unwrap();
        let err = m.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // The content is incomplete from then on: no reader, no more writes.
        assert!(m.reader().is_err());
        assert!(m.write_all(b"y").is_err());
        m.clear();
        m.write_all(b"next").unwrap();
        assert_eq!(read_all(&m), b"next");
    }

    #[test]
    fn zero_threshold_spills_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuf::new(0, dir.path().to_path_buf());
        m.write_all(b"").unwrap();
        assert!(!m.is_spilled());
        let data = pattern(3000);
        for chunk in data.chunks(10) {
            m.write_all(chunk).unwrap();
        }
        assert!(m.is_spilled());
        assert_eq!(m.mem_capacity(), 0);
        assert_eq!(read_all(&m), data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn reader_returns_what_was_written(
            threshold in 0usize..5000,
            chunks in proptest::collection::vec(0usize..3000, 0..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut m = MessageBuf::new(threshold, dir.path().to_path_buf());
            let mut reference = Vec::new();
            for (i, size) in chunks.iter().enumerate() {
                let chunk: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
                m.write_all(&chunk).unwrap();
                reference.extend_from_slice(&chunk);
                prop_assert!(m.mem_capacity() <= threshold);
            }
            prop_assert_eq!(m.len(), reference.len() as u64);
            prop_assert_eq!(m.is_spilled(), reference.len() > threshold);
            prop_assert_eq!(read_all(&m), reference.clone());
            prop_assert_eq!(read_all(&m), reference);
            prop_assert!(dir_is_empty(dir.path()));
        }
    }
}
