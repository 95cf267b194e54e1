//! The only module with `unsafe` code: the few libc calls std and nix do
//! not wrap (local time with its offset, syslog, the host's FQDN).
//!
//! Every function here is small and safe to call from any thread.

use std::time::SystemTime;

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

/// The local time at `t`.
pub fn localtime(t: SystemTime) -> LocalTime {
    todo!()
}

impl LocalTime {
    /// `Sat Nov 28 16:59:45 2026`, as asctime(3) without its newline: the
    /// date of an mbox `From ` line.
    pub fn asctime(&self) -> String {
        todo!()
    }

    /// `Sat, 28 Nov 2026 16:59:45 +0100`: an RFC 5322 date with a numeric
    /// offset, for `Received:` (RFC 5321 4.4).
    pub fn rfc5322(&self) -> String {
        todo!()
    }
}

/// The host's name as gethostname(2) gives it.
pub fn hostname() -> String {
    todo!()
}

/// The host's fully qualified name: the canonical name getaddrinfo(3) gives
/// for the host name, or `None` if it cannot be resolved.
pub fn fqdn() -> Option<String> {
    todo!()
}

/// Opens the connection to syslog(3): facility mail, `LOG_PID`, never the
/// console or stderr.
pub fn openlog(ident: &'static std::ffi::CStr) {
    todo!()
}

/// Sends one message to syslog at `priority` (a `libc::LOG_*` level).
/// Interior NUL bytes are replaced.
pub fn syslog(priority: libc::c_int, msg: &str) {
    todo!()
}
