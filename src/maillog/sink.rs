//! Where log lines go: syslog (facility mail) for the daemon, inetd and
//! socket-activated runs, or stderr in the foreground. Both sinks are
//! ours: syslog(3) drops every line when nothing listens on /dev/log, and
//! env_logger brought seven crates for the stderr line.
//!
//! Under inetd and systemd Accept=yes, stdout and stderr are the client's
//! socket, so nothing may be printed there: the syslog sink writes to a
//! standard stream only where `main` allows it, to say once that no syslog
//! socket takes its lines (which would otherwise vanish). The lines about
//! sessions and messages reach these sinks through the `log` facade like
//! every other line; they are made in [`super::event`].

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::cli::LogTo;
use crate::sys;

/// The resolved sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Syslog,
    Stderr,
}

/// Chooses the sink: `auto` is stderr only for a foreground daemon whose
/// stderr is a terminal; `inetd` mode never logs to stderr.
pub fn choose(to: LogTo, inetd: bool) -> Sink {
    match to {
        _ if inetd => Sink::Syslog,
        LogTo::Syslog => Sink::Syslog,
        LogTo::Stderr => Sink::Stderr,
        LogTo::Auto if std::io::stderr().is_terminal() => Sink::Stderr,
        LogTo::Auto => Sink::Syslog,
    }
}

/// Where a syslog daemon takes datagrams, tried in this order: the
/// classic socket (rsyslog, syslog-ng, or journald through the link
/// systemd makes), then systemd-journald's own, which is there even when
/// /dev/log is missing (a container, a chroot, a removed link).
pub const SYSLOG_SOCKETS: [&str; 2] = ["/dev/log", "/run/systemd/journal/dev-log"];

/// The syslog sink: RFC 3164 datagrams (`<PRI>Mmm dd hh:mm:ss
/// postie[PID]: text`, facility mail), as syslog(3) sends them, but to the
/// first of [`SYSLOG_SOCKETS`] that takes them: glibc's syslog(3) knows
/// only /dev/log, and drops every line silently when nothing listens
/// there.
pub struct Syslog {
    level: LevelFilter,
    paths: Vec<PathBuf>,
    socket: Mutex<Option<UnixDatagram>>,
    /// Where to say, once, that no socket takes the lines (stderr in the
    /// foreground); `None` where nothing may be said (under inetd stderr is
    /// the client), and once it has been said.
    complain: Mutex<Option<Box<dyn Write + Send>>>,
}

impl Syslog {
    /// A sink over `paths`; `complain` is where to say once that none of
    /// them takes the lines.
    pub fn new(
        level: LevelFilter,
        paths: Vec<PathBuf>,
        complain: Option<Box<dyn Write + Send>>,
    ) -> Syslog {
        Syslog {
            level,
            paths,
            socket: Mutex::new(None),
            complain: Mutex::new(complain),
        }
    }

    /// A socket connected to the first path that takes a connection.
    fn connect(&self) -> Option<UnixDatagram> {
        self.paths.iter().find_map(|p| {
            let s = UnixDatagram::unbound().ok()?;
            s.connect(p).ok()?;
            Some(s)
        })
    }

    /// Sends one datagram, connecting (again) as needed: a syslog daemon
    /// that restarted has a new socket.
    fn send(&self, datagram: &[u8]) {
        let mut socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = socket.as_ref() {
            if s.send(datagram).is_ok() {
                return;
            }
            *socket = None;
        }
        match self.connect() {
            Some(s) => {
                // Lost if it fails again: a second try would only repeat it.
                let _ = s.send(datagram);
                *socket = Some(s);
            }
            None => {
                drop(socket);
                self.unreachable();
            }
        }
    }

    /// Says once, where it may, that the lines are lost.
    fn unreachable(&self) {
        let mut complain = self.complain.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut w) = complain.take() {
            let tried: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            let _ = writeln!(
                w,
                "postie: syslog is not reachable (nothing listens on {}): log lines are lost; start a syslog daemon or use --log stderr",
                tried.join(" or ")
            );
            let _ = w.flush();
        }
    }
}

/// One syslog datagram: `<PRI>Mmm dd hh:mm:ss postie[PID]: text`, the
/// facility mail (RFC 3164 4.1; what glibc's syslog(3) sends).
fn datagram(level: Level, time: &sys::LocalTime, pid: u32, text: &str) -> Vec<u8> {
    let severity = match level {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    };
    // asctime: `Sat Nov 28 16:59:45 2026`; syslog wants `Nov 28 16:59:45`.
    let asctime = time.asctime();
    let stamp = asctime.get(4..19).unwrap_or(&asctime);
    format!(
        "<{}>{stamp} postie[{pid}]: {text}",
        libc::LOG_MAIL | severity
    )
    .into_bytes()
}

impl Log for Syslog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // The pid at each line: the delivery process is a fork.
        let now = sys::localtime(std::time::SystemTime::now());
        let text = r.args().to_string();
        self.send(&datagram(r.level(), &now, std::process::id(), &text));
    }

    fn flush(&self) {}
}

/// The foreground sink: one line a record on stderr,
/// `[2026-12-05T00:31:21+01:00 INFO ] text` (local time with its offset, as
/// RFC 3339 writes it), each line in one write under a lock so that the
/// lines of threads never mix. Ours rather than env_logger's, which brought
/// seven crates (regex among them) for this line.
pub struct Stderr<W> {
    level: LevelFilter,
    out: Mutex<W>,
}

impl<W: Write + Send> Stderr<W> {
    pub fn new(level: LevelFilter, out: W) -> Self {
        Stderr {
            level,
            out: Mutex::new(out),
        }
    }
}

/// One line of the stderr sink.
fn stderr_line(level: Level, t: &sys::LocalTime, text: &str) -> String {
    let sign = if t.utc_offset < 0 { '-' } else { '+' };
    let off = t.utc_offset.unsigned_abs();
    format!(
        "[{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02} {:<5}] {text}\n",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        off / 3600,
        off % 3600 / 60,
        level.as_str()
    )
}

impl<W: Write + Send> Log for Stderr<W> {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = sys::localtime(std::time::SystemTime::now());
        let line = stderr_line(r.level(), &now, &r.args().to_string());
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // Lost if stderr is gone: there is nowhere else to say so.
        let _ = out.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// The level of the stderr sink: `RUST_LOG`, when it is a level (`debug`,
/// `warn`, `off`, ...), else `level` (`--log-level`).
fn stderr_level(level: LevelFilter, rust_log: Option<&str>) -> LevelFilter {
    rust_log
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(level)
}

/// Installs the logger. Call once, before any thread starts. With
/// `stderr_ok` the syslog sink says once on stderr if no syslog socket
/// takes its lines; never under inetd, where stderr is the client.
pub fn init(sink: Sink, level: LevelFilter, stderr_ok: bool) {
    match sink {
        Sink::Syslog => {
            let paths = SYSLOG_SOCKETS.iter().map(PathBuf::from).collect();
            let complain: Option<Box<dyn Write + Send>> = match stderr_ok {
                true => Some(Box::new(std::io::stderr())),
                false => None,
            };
            let sink = Syslog::new(level, paths, complain);
            if log::set_boxed_logger(Box::new(sink)).is_ok() {
                log::set_max_level(level);
            }
        }
        Sink::Stderr => {
            let rust_log = std::env::var("RUST_LOG").ok();
            let level = stderr_level(level, rust_log.as_deref());
            let sink = Stderr::new(level, std::io::stderr());
            if log::set_boxed_logger(Box::new(sink)).is_ok() {
                log::set_max_level(level);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stderr_lines_carry_the_local_time_with_its_offset_and_the_level() {
        let t = sys::LocalTime {
            year: 2026,
            month: 12,
            day: 5,
            hour: 0,
            minute: 31,
            second: 2,
            weekday: 6,
            utc_offset: -(5 * 3600 + 30 * 60),
        };
        assert_eq!(
            stderr_line(Level::Info, &t, "listening on 127.0.0.1:25"),
            "[2026-12-05T00:31:02-05:30 INFO ] listening on 127.0.0.1:25\n"
        );
        let t = sys::LocalTime {
            utc_offset: 3600,
            ..t
        };
        assert!(
            stderr_line(Level::Error, &t, "x").starts_with("[2026-12-05T00:31:02+01:00 ERROR] x")
        );
    }

    #[test]
    fn the_stderr_sink_filters_by_level_and_writes_whole_lines() {
        let out = Shared::default();
        let sink = Stderr::new(LevelFilter::Info, out.clone());
        for (level, text) in [
            (Level::Debug, "hidden"),
            (Level::Info, "one"),
            (Level::Warn, "two"),
        ] {
            sink.log(
                &Record::builder()
                    .args(format_args!("{text}"))
                    .level(level)
                    .build(),
            );
        }
        let got = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 2, "{got:?}");
        assert!(lines[0].ends_with(" INFO ] one"), "{got:?}");
        assert!(lines[1].ends_with(" WARN ] two"), "{got:?}");
        assert!(got.ends_with('\n'));
    }

    #[test]
    fn rust_log_sets_the_stderr_level_when_it_is_one() {
        assert_eq!(stderr_level(LevelFilter::Info, None), LevelFilter::Info);
        assert_eq!(
            stderr_level(LevelFilter::Info, Some("debug")),
            LevelFilter::Debug
        );
        assert_eq!(
            stderr_level(LevelFilter::Info, Some(" WARN ")),
            LevelFilter::Warn
        );
        assert_eq!(
            stderr_level(LevelFilter::Info, Some("off")),
            LevelFilter::Off
        );
        // Module filters (env_logger's) are not ours: --log-level stands.
        assert_eq!(
            stderr_level(LevelFilter::Warn, Some("postie=debug")),
            LevelFilter::Warn
        );
    }

    fn line(sink: &Syslog, level: Level, text: &str) {
        sink.log(
            &Record::builder()
                .args(format_args!("{text}"))
                .level(level)
                .build(),
        );
    }

    /// A fake syslog daemon: a datagram socket bound at `path`.
    fn daemon(path: &std::path::Path) -> UnixDatagram {
        let s = UnixDatagram::bind(path).unwrap();
        // Generous: a missing line fails the test, a present one returns
        // at once.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn received(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Issue "postie 5": with no /dev/log, the lines go to journald's own
    /// socket (tried second), in syslog(3)'s format, facility mail.
    #[test]
    fn without_dev_log_lines_go_to_the_journal_socket() {
        let dir = tempfile::tempdir().unwrap();
        let dev_log = dir.path().join("dev-log");
        let journal = dir.path().join("journal-dev-log");
        let d = daemon(&journal);
        let complaints = Shared::default();
        let sink = Syslog::new(
            LevelFilter::Info,
            vec![dev_log.clone(), journal.clone()],
            Some(Box::new(complaints.clone())),
        );
        line(&sink, Level::Warn, "spool is full");
        let got = received(&d);
        // <20>: mail (2 << 3) | warning (4).
        assert!(got.starts_with("<20>"), "{got}");
        let want = format!(" postie[{}]: spool is full", std::process::id());
        assert!(got.ends_with(&want), "{got}");
        // `<20>Nov 28 16:59:45 postie[...]`
        assert_eq!(got.as_bytes()[4 + 15], b' ', "{got}");
        line(&sink, Level::Debug, "not at this level");
        line(&sink, Level::Info, "second");
        assert!(received(&d).ends_with("]: second"));
        assert!(complaints.0.lock().unwrap().is_empty());

        // /dev/log comes first where it exists.
        let first = daemon(&dev_log);
        let sink = Syslog::new(LevelFilter::Info, vec![dev_log, journal], None);
        line(&sink, Level::Error, "to the first");
        let got = received(&first);
        assert!(
            got.starts_with("<19>") && got.ends_with("]: to the first"),
            "{got}"
        );
    }

    /// A syslog daemon that restarts makes a new socket: the sink connects
    /// again.
    #[test]
    fn a_restarted_daemon_gets_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev-log");
        let d = daemon(&path);
        let sink = Syslog::new(LevelFilter::Info, vec![path.clone()], None);
        line(&sink, Level::Info, "one");
        assert!(received(&d).ends_with("]: one"));
        drop(d);
        std::fs::remove_file(&path).unwrap();
        let d = daemon(&path);
        line(&sink, Level::Info, "two");
        assert!(received(&d).ends_with("]: two"));
    }

    /// Issue "postie 5": with no socket at all, it says so once where it
    /// may (stderr in the foreground), not once a line; where it may not
    /// (inetd), it says nothing.
    #[test]
    fn no_syslog_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![dir.path().join("dev-log"), dir.path().join("journal")];
        let complaints = Shared::default();
        let sink = Syslog::new(
            LevelFilter::Info,
            paths.clone(),
            Some(Box::new(complaints.clone())),
        );
        line(&sink, Level::Info, "one");
        line(&sink, Level::Error, "two");
        let said = String::from_utf8(complaints.0.lock().unwrap().clone()).unwrap();
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.starts_with(&format!(
                "postie: syslog is not reachable (nothing listens on {} or {}): log lines are lost",
                paths[0].display(),
                paths[1].display()
            )),
            "{said}"
        );
        // Once one is there, the lines reach it.
        let d = daemon(&paths[1]);
        line(&sink, Level::Info, "three");
        assert!(received(&d).ends_with("]: three"));
    }
}
