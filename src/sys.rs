//! The operating system below std, in one place, and the only module
//! with `unsafe` code (the crate denies it everywhere else): the libc
//! calls std and nix do not wrap or mark unsafe, each behind a safe
//! function with its contract stated.
//!
//! * the clock and the host: local time with its offset (`localtime_r`),
//!   the host name and its FQDN (`getaddrinfo`), unpredictable names
//!   ([`random_u64`]);
//! * descriptors: taking ownership of inherited and received ones,
//!   pointing one at `/dev/null` ([`null_fd`], [`silence_stderr`]);
//! * identity: a thread's filesystem uid and gid ([`become_fs`]),
//!   dropping groups and root ([`drop_privileges`]), [`fork`];
//! * programs (in `sys/child.rs`): what the child of a delivery to a
//!   program does between fork and exec ([`confine_child`]: its own
//!   session, the user's identity, a working directory, default signals,
//!   no inherited descriptors), and a descriptor that tells of its exit
//!   ([`pidfd_open`]);
//! * signals: the one set that ends or stops the process
//!   ([`delivery_signals`]), which every part blocks (a delivery in
//!   progress, the daemon's signalfd, the delivery process, root's
//!   sendmail dialog), held off a thread for a while
//!   ([`hold_delivery_signals`]), and stopping oneself.
//!
//! Every function here is small; all but [`fork`] are safe to call from
//! any thread.

use std::ffi::{CStr, CString};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

mod child;
pub use child::{ChildIdentity, ChildSetup, confine_child, pidfd_open};
#[cfg(test)]
pub use child::{SignalHandler, set_signal_handler};

/// A broken-down local time with its offset from UTC, from `localtime_r`
/// (the `time` crate refuses local offsets in threaded programs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday
    pub weekday: u32,
    /// Seconds east of UTC.
    pub utc_offset: i32,
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The Unix epoch itself, in UTC: the answer when the C library cannot
/// represent a time.
const EPOCH: LocalTime = LocalTime {
    year: 1970,
    month: 1,
    day: 1,
    hour: 0,
    minute: 0,
    second: 0,
    weekday: 4,
    utc_offset: 0,
};

static TZSET: Once = Once::new();

unsafe extern "C" {
    /// tzset(3) from the C library (POSIX); the `libc` crate does not
    /// declare it for Unix targets.
    fn tzset();
}

/// What a file of (l)stat `meta` is, for a log line that says why it was
/// not trusted: `a symbolic link of uid 1000, mode 0777, 1 link`.
pub fn describe_file(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    };
    let links = match meta.nlink() {
        1 => "1 link".to_string(),
        n => format!("{n} links"),
    };
    format!(
        "{kind} of uid {}, mode {:04o}, {links}",
        meta.uid(),
        meta.mode() & 0o7777
    )
}

/// True when `meta` is what postie's own files (journals, queue files)
/// must be: a regular file of this process's uid with one link.
pub fn is_own_single_file(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.file_type().is_file() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.nlink() == 1
}

/// 64 unpredictable bits, different at every call: the standard library's
/// randomly keyed hasher (seeded from the operating system once per
/// process, a fresh key per `RandomState`) over a process-wide counter, the
/// pid and the clock. For names that must not collide or be guessed in
/// advance (journals, dotlock temporaries, Message-IDs); not for keys.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// The local time at `t`. Times before the epoch are taken as the epoch.
pub fn localtime(t: SystemTime) -> LocalTime {
    // POSIX does not require localtime_r to read TZ (tzset); localtime and
    // tzset itself must. Do it once, before the first conversion.
    TZSET.call_once(|| {
        // SAFETY: tzset takes no arguments; it reads TZ and the zone files.
        // Nothing in postie changes the environment while threads run.
        unsafe { tzset() };
    });

    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Ok(clock) = libc::time_t::try_from(secs) else {
        return EPOCH;
    };

    // SAFETY: `libc::tm` is a plain C struct of integers and (on glibc) one
    // `const char *`; all-zero bytes are a valid value for every field.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers come from live references to properly typed
    // values; localtime_r writes only into `tm` and is thread-safe.
    let res = unsafe { libc::localtime_r(&clock, &mut tm) };
    if res.is_null() {
        return EPOCH;
    }

    let field = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
    LocalTime {
        year: tm.tm_year.saturating_add(1900),
        month: field(tm.tm_mon) + 1,
        day: field(tm.tm_mday),
        hour: field(tm.tm_hour),
        minute: field(tm.tm_min),
        second: field(tm.tm_sec),
        weekday: field(tm.tm_wday),
        utc_offset: i32::try_from(tm.tm_gmtoff).unwrap_or(0),
    }
}

impl LocalTime {
    fn weekday_name(&self) -> &'static str {
        WEEKDAYS
            .get(self.weekday as usize)
            .copied()
            .unwrap_or("???")
    }

    fn month_name(&self) -> &'static str {
        (self.month as usize)
            .checked_sub(1)
            .and_then(|i| MONTHS.get(i))
            .copied()
            .unwrap_or("???")
    }

    /// `Sat Nov 28 16:59:45 2026`, as asctime(3) without its newline: the
    /// date of an mbox `From ` line.
    pub fn asctime(&self) -> String {
        format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {}",
            self.weekday_name(),
            self.month_name(),
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.year
        )
    }

    /// `Sat, 28 Nov 2026 16:59:45 +0100`: an RFC 5322 date with a numeric
    /// offset, for `Received:` (RFC 5321 4.4).
    pub fn rfc5322(&self) -> String {
        let sign = if self.utc_offset < 0 { '-' } else { '+' };
        let off = self.utc_offset.unsigned_abs();
        format!(
            "{}, {} {} {:04} {:02}:{:02}:{:02} {}{:02}{:02}",
            self.weekday_name(),
            self.day,
            self.month_name(),
            self.year,
            self.hour,
            self.minute,
            self.second,
            sign,
            off / 3600,
            off % 3600 / 60
        )
    }
}

/// The host's name as gethostname(2) gives it (`localhost` if it has none).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Frees a getaddrinfo(3) result list when dropped.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getaddrinfo and is
            // freed exactly once, here.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// The host's fully qualified name: the canonical name getaddrinfo(3) gives
/// for the host name, or `None` if it cannot be resolved or has no dot.
/// May block on the resolver.
pub fn fqdn() -> Option<String> {
    let host = CString::new(hostname()).ok()?;

    // SAFETY: `libc::addrinfo` is a plain C struct of integers and pointers;
    // all-zero bytes (null pointers) are valid and what getaddrinfo expects
    // for the unused fields of `hints`.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;

    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `host` is a NUL-terminated string, the service may be null,
    // `hints` and `res` are live; on success `res` owns a list we free below.
    let rc = unsafe { libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    let list = AddrInfoList(res);
    if rc != 0 || list.0.is_null() {
        return None;
    }

    // SAFETY: `list.0` is non-null and points to the first entry of the
    // list, alive until `list` is dropped at the end of this function.
    let canon = unsafe { (*list.0).ai_canonname };
    if canon.is_null() {
        return None;
    }
    // SAFETY: a non-null `ai_canonname` is a NUL-terminated string owned by
    // the list, which outlives this borrow (copied out before the drop).
    let name = unsafe { CStr::from_ptr(canon) }
        .to_string_lossy()
        .into_owned();
    let name = name.trim_end_matches('.').to_owned();
    name.contains('.').then_some(name)
}

/// Takes ownership of a descriptor the process inherited: a socket passed by
/// systemd (`LISTEN_FDS`) or inetd (fd 0), or stdin/stdout. The caller must
/// name an fd that nothing else in the process owns, and call this once per
/// fd: `main` does so for 0 and 1 in inetd mode only, and for the
/// `LISTEN_FDS` range that systemd gave us.
pub fn inherited_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the fd is open (inherited from our parent, checked by the
    // caller through getpeername/getsockopt or by being stdin/stdout) and
    // has no other owner in this process, per this function's contract.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Points stderr at `/dev/null`. Under inetd stderr is the client's socket:
/// nothing, not even a panic message from a library, may be written there.
pub fn silence_stderr() {
    null_fd(2);
}

/// Points descriptor `fd` at `/dev/null`, keeping the number in use: in the
/// delivery process, the listening sockets and the client's socket it
/// inherited are replaced this way (nothing there may use them, and the
/// Rust objects that own them in the parent are never used in the child).
pub fn null_fd(fd: std::os::fd::RawFd) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: libc::dup2 on two valid descriptors; the replaced
        // descriptor's owner (if any) only ever sees /dev/null after this.
        unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
        }
    }
}

/// The calling thread's filesystem identity, switched for the life of the
/// guard: every file operation of a delivery (open, create, lock files)
/// runs as the recipient, never as root on a path a user controls. Linux
/// keeps fsuid and fsgid per thread (glibc's setfsuid is a plain system
/// call, unlike its setuid, which changes every thread), so other sessions
/// are not affected. Dropping the guard restores the previous identity.
#[derive(Debug)]
pub struct FsIdentity {
    /// What to restore; `None` when the thread had this identity already.
    old: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

thread_local! {
    /// This thread's fsuid and fsgid as [`become_fs`] last set them: a
    /// switch to the identity the thread has already is skipped, so that
    /// a delivery can hold one identity around operations that each ask
    /// for it (each switch is four system calls, and the profile showed
    /// them).
    static FS_IDS: std::cell::Cell<Option<(u32, u32)>> = const { std::cell::Cell::new(None) };
}

/// Switches this thread's fsgid to `gid`, then its fsuid to `uid`.
/// setfsuid(2) reports failure only by not changing anything, so each call
/// is checked by asking again.
pub fn become_fs(uid: u32, gid: u32) -> std::io::Result<FsIdentity> {
    use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
    if FS_IDS.get() == Some((uid, gid)) {
        return Ok(FsIdentity { old: None });
    }
    let want = (uid, gid);
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let old_gid = setfsgid(gid);
    if setfsgid(gid) != gid {
        setfsgid(old_gid);
        return Err(std::io::Error::other(format!("setfsgid({gid}) failed")));
    }
    let old_uid = setfsuid(uid);
    if setfsuid(uid) != uid {
        setfsuid(old_uid);
        setfsgid(old_gid);
        return Err(std::io::Error::other(format!("setfsuid({uid}) failed")));
    }
    FS_IDS.set(Some(want));
    Ok(FsIdentity {
        old: Some((old_uid, old_gid)),
    })
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        let Some((old_uid, old_gid)) = self.old else {
            return;
        };
        // The uid first: regaining fsuid 0 restores the right to set any
        // fsgid.
        nix::unistd::setfsuid(old_uid);
        nix::unistd::setfsgid(old_gid);
        FS_IDS.set(Some((old_uid.as_raw(), old_gid.as_raw())));
    }
}

/// Drops the supplementary groups of a process started as root, so that a
/// thread switched to a recipient's fsuid does not keep root's groups for
/// its file access checks. A no-op when not root.
pub fn drop_supplementary_groups() -> std::io::Result<()> {
    if nix::unistd::geteuid().is_root() {
        nix::unistd::setgroups(&[])?;
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every client
/// holds a descriptor, and the default soft limit (1024) is below what a
/// busy host may need. Returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Takes ownership of a descriptor received over a Unix socket
/// (SCM_RIGHTS): the kernel installed it in our table for us alone.
pub fn received_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: a descriptor from SCM_RIGHTS is new in this process and has
    // no other owner; the caller takes each one once.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Which side of [`fork`] we are on.
pub enum Forked {
    Parent { child: nix::unistd::Pid },
    Child,
}

/// fork(2). Must be called while the process has a single thread (the
/// privilege separation forks at start-up, before any thread exists), so
/// that the child inherits no lock held by another thread.
pub fn fork() -> std::io::Result<Forked> {
    // SAFETY: the caller guarantees the process is single-threaded, so the
    // child can run any code, not only async-signal-safe functions.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent { child }),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Drops root for good: no supplementary groups, real/effective/saved gid
/// and uid set to `gid`/`uid` (which clears every capability), then checks
/// that root cannot be regained.
pub fn drop_privileges(uid: u32, gid: u32) -> std::io::Result<()> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() && !uid.is_root() {
        return Err(std::io::Error::other(
            "root could be regained after dropping privileges",
        ));
    }
    Ok(())
}

/// The signals held off a delivery, from its first lock to the last
/// unlock: those that end the process (`SIGTERM`, `SIGINT`, `SIGHUP`) and
/// those that stop it with its locks held, so that other mail programs
/// wait for them until `SIGCONT` (`SIGTSTP`, and `SIGTTIN` and `SIGTTOU`,
/// which a background process gets when it reads or, with `stty tostop`,
/// logs to its terminal; blocked, a write goes through and a read fails
/// with `EIO`). `SIGSTOP` and `SIGKILL` cannot be held.
pub fn delivery_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        set.add(s);
    }
    set
}

/// [`delivery_signals`] blocked on the calling thread (and on the threads
/// it starts) until the guard drops, which restores the thread's previous
/// mask: a signal that came meanwhile takes effect then.
#[must_use]
pub struct DeliverySignalsHeld {
    old: Option<nix::sys::signal::SigSet>,
}

/// Holds [`delivery_signals`] off the calling thread; see
/// [`DeliverySignalsHeld`].
pub fn hold_delivery_signals() -> DeliverySignalsHeld {
    let old = delivery_signals()
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .ok();
    DeliverySignalsHeld { old }
}

impl Drop for DeliverySignalsHeld {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            let _ = old.thread_set_mask();
        }
    }
}

/// Stops this process as `SIGTSTP` would have (with `SIGSTOP`, which
/// cannot be blocked); returns once it is continued.
pub fn stop_self() {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGSTOP);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The words a skipped journal or queue file is logged with, and
    /// which files pass as our own: a regular file of ours with one link,
    /// not a symlink to one, not one with a second link.
    #[test]
    fn own_files_and_what_the_others_are() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let me = nix::unistd::geteuid();
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(is_own_single_file(&meta));
        assert_eq!(
            describe_file(&meta),
            format!("a regular file of uid {me}, mode 0600, 1 link")
        );
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(!is_own_single_file(&meta));
        assert!(describe_file(&meta).starts_with("a symbolic link of uid "));
        std::fs::hard_link(&file, dir.path().join("h")).unwrap();
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(!is_own_single_file(&meta));
        assert!(describe_file(&meta).ends_with(", 2 links"));
        let meta = std::fs::symlink_metadata(dir.path()).unwrap();
        assert!(!is_own_single_file(&meta));
        assert!(describe_file(&meta).starts_with("a directory of uid "));
    }

    fn lt(
        (year, month, day): (i32, u32, u32),
        (hour, minute, second): (u32, u32, u32),
        weekday: u32,
        utc_offset: i32,
    ) -> LocalTime {
        LocalTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday,
            utc_offset,
        }
    }

    #[test]
    fn asctime_format() {
        let t = lt((2026, 11, 28), (16, 59, 45), 6, 3600);
        assert_eq!(t.asctime(), "Sat Nov 28 16:59:45 2026");
        let t = lt((2026, 11, 1), (6, 5, 4), 0, 0);
        assert_eq!(t.asctime(), "Sun Nov  1 06:05:04 2026");
        let t = lt((1999, 1, 9), (0, 0, 0), 6, -18000);
        assert_eq!(t.asctime(), "Sat Jan  9 00:00:00 1999");
        let t = lt((2000, 12, 31), (23, 59, 60), 0, 0);
        assert_eq!(t.asctime(), "Sun Dec 31 23:59:60 2000");
    }

    #[test]
    fn rfc5322_format() {
        let t = lt((2026, 11, 28), (16, 59, 45), 6, 3600);
        assert_eq!(t.rfc5322(), "Sat, 28 Nov 2026 16:59:45 +0100");
        let t = lt((2026, 11, 1), (6, 5, 4), 0, 0);
        assert_eq!(t.rfc5322(), "Sun, 1 Nov 2026 06:05:04 +0000");
        let t = lt((2026, 3, 2), (1, 2, 3), 1, -(3 * 3600 + 30 * 60));
        assert_eq!(t.rfc5322(), "Mon, 2 Mar 2026 01:02:03 -0330");
        let t = lt((2026, 7, 15), (12, 0, 0), 3, 5 * 3600 + 45 * 60);
        assert_eq!(t.rfc5322(), "Wed, 15 Jul 2026 12:00:00 +0545");
        let t = lt((2026, 7, 15), (12, 0, 0), 3, -12 * 3600);
        assert_eq!(t.rfc5322(), "Wed, 15 Jul 2026 12:00:00 -1200");
    }

    #[test]
    fn formatters_do_not_panic_on_bad_fields() {
        let t = lt((2026, 13, 40), (25, 61, 61), 9, 0);
        assert!(t.asctime().starts_with("??? ???"));
        let t = lt((2026, 0, 1), (0, 0, 0), 0, 0);
        assert!(t.rfc5322().contains("???"));
    }

    /// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    fn check_consistent(secs: u64) {
        let t = UNIX_EPOCH + Duration::from_secs(secs);
        let l = localtime(t);
        assert!((1..=12).contains(&l.month), "{l:?}");
        assert!((1..=31).contains(&l.day), "{l:?}");
        assert!(l.hour < 24 && l.minute < 60 && l.second <= 60, "{l:?}");
        assert!(l.weekday < 7, "{l:?}");
        assert!(l.utc_offset.abs() <= 26 * 3600, "{l:?}");

        // The wall clock minus the offset is the UTC time of day.
        let local_sod = i64::from(l.hour * 3600 + l.minute * 60 + l.second);
        let utc_sod = (secs % 86_400) as i64;
        assert_eq!(
            (local_sod - i64::from(l.utc_offset)).rem_euclid(86_400),
            utc_sod,
            "{l:?}"
        );

        // And the date and weekday are those of UTC shifted by the offset.
        let local_secs = secs as i64 + i64::from(l.utc_offset);
        let days = local_secs.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        assert_eq!((i64::from(l.year), l.month, l.day), (y, m, d), "{l:?}");
        assert_eq!(i64::from(l.weekday), (days + 4).rem_euclid(7), "{l:?}");
    }

    #[test]
    fn localtime_is_consistent() {
        for secs in [
            0,
            86_400 * 365 + 12_345,
            86_400 * 365 * 56 + 4_321,
            1_795_885_185, // 2026-11-28
            951_782_400,   // 2000-02-29
            4_102_444_799, // 2099-12-31 23:59:59 UTC
        ] {
            check_consistent(secs);
        }
        let l = localtime(UNIX_EPOCH + Duration::from_secs(86_400 * 365 * 56 + 4_321));
        assert!((2025..=2026).contains(&l.year), "{l:?}");
    }

    #[test]
    fn localtime_clamps_before_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(1_000_000);
        assert_eq!(localtime(before), localtime(UNIX_EPOCH));
    }

    #[test]
    fn localtime_now_is_sane() {
        let l = localtime(SystemTime::now());
        assert!(l.year >= 2024, "{l:?}");
    }

    #[test]
    fn hostname_is_not_empty() {
        let h = hostname();
        assert!(!h.is_empty());
        assert!(!h.contains('\0'));
    }

    #[test]
    fn fqdn_has_a_dot_if_any() {
        if let Some(name) = fqdn() {
            assert!(name.contains('.'), "{name}");
            assert!(!name.ends_with('.'), "{name}");
        }
    }

    #[test]
    fn deliveries_hold_off_the_signals_that_end_or_stop_the_process() {
        use nix::sys::signal::Signal::*;
        let set = delivery_signals();
        for s in [SIGTERM, SIGINT, SIGHUP, SIGTSTP, SIGTTIN, SIGTTOU] {
            assert!(set.contains(s), "{s}");
        }
        for s in [SIGCONT, SIGCHLD, SIGPIPE, SIGUSR1] {
            assert!(!set.contains(s), "{s}");
        }
    }

    #[test]
    fn held_delivery_signals_are_blocked_until_the_guard_drops() {
        use nix::sys::signal::{SigSet, Signal::*};
        // On a thread of its own: the test harness's threads keep theirs.
        std::thread::spawn(|| {
            let before = SigSet::thread_get_mask().unwrap();
            assert!(!before.contains(SIGTERM));
            {
                let _held = hold_delivery_signals();
                let during = SigSet::thread_get_mask().unwrap();
                for s in delivery_signals().iter() {
                    assert!(during.contains(s), "{s}");
                }
            }
            let after = SigSet::thread_get_mask().unwrap();
            assert_eq!(
                after.iter().collect::<Vec<_>>(),
                before.iter().collect::<Vec<_>>()
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn fs_identity_switches_this_thread_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP fs_identity_switches_this_thread_only: not running as root");
            // Not root: switching to another uid must fail, not pretend.
            assert!(super::become_fs(54_321, 54_321).is_err());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        // A thread started before the switch (a new thread would inherit
        // the switched identity from its creator).
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let p = dir.path().join("other");
        let other = std::thread::spawn(move || {
            wait.recv().unwrap();
            std::fs::File::create(p).map(|_| ())
        });
        {
            let _id = super::become_fs(54_321, 54_321).unwrap();
            // As uid 54321, root's 0755 directory is not writable...
            let err = std::fs::File::create(dir.path().join("x")).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
            // ...while another thread is still root.
            go.send(()).unwrap();
            other.join().unwrap().unwrap();
        }
        // Restored.
        std::fs::File::create(dir.path().join("y")).unwrap();
        assert!(dir.path().join("other").exists());

        // Nested: the same identity again is kept when the inner guard
        // goes; root in between is undone by its own guard.
        {
            let _outer = super::become_fs(54_321, 54_321).unwrap();
            {
                let _inner = super::become_fs(54_321, 54_321).unwrap();
            }
            assert!(std::fs::File::create(dir.path().join("a")).is_err());
            {
                let _root = super::become_fs(0, 0).unwrap();
                std::fs::File::create(dir.path().join("b")).unwrap();
            }
            assert!(std::fs::File::create(dir.path().join("c")).is_err());
        }
        std::fs::File::create(dir.path().join("d")).unwrap();
    }
}
