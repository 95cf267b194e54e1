//! Where log lines go: syslog (facility mail) for the daemon, inetd and
//! socket-activated runs, or stderr in the foreground.
//!
//! Under inetd and systemd Accept=yes, stdout and stderr are the client's
//! socket, so nothing may be printed there: the syslog sink never writes to
//! a standard stream. Delivery lines (`ID: from=<..> to=<..> size=N
//! status=..`) are written by [`crate::deliver`] through the same facade.

use std::io::IsTerminal;

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

struct Syslog {
    level: LevelFilter,
}

impl Log for Syslog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let prio = match r.level() {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        sys::syslog(prio, &r.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger. Call once, before any thread starts.
pub fn init(sink: Sink, level: LevelFilter) {
    match sink {
        Sink::Syslog => {
            sys::openlog(c"postie");
            if log::set_boxed_logger(Box::new(Syslog { level })).is_ok() {
                log::set_max_level(level);
            }
        }
        Sink::Stderr => {
            let _ = env_logger::Builder::new()
                .filter_level(level)
                .parse_env("RUST_LOG")
                .format_target(false)
                .try_init();
        }
    }
}
