//! Exit statuses, in one place: the names and values of sysexits(3)
//! (`/usr/include/sysexits.h`, from 4.3BSD), which sendmail(8) and the
//! programs that run it (cron, mail(1), MTAs calling a local mailer) read.
//! Every `exit` and `ExitCode` of postie, the daemon's as well as the
//! sendmail command's, takes its number from here.
//!
//! Only the codes postie gives are defined.

/// Successful termination.
pub const EX_OK: u8 = 0;
/// Command line usage error.
pub const EX_USAGE: u8 = 64;
/// Data format error (a malformed address or message).
pub const EX_DATAERR: u8 = 65;
/// Cannot open input (here: `postie queue` given the id of no entry).
pub const EX_NOINPUT: u8 = 66;
/// Addressee unknown.
pub const EX_NOUSER: u8 = 67;
/// Service unavailable (here: refused for good, as another domain is).
pub const EX_UNAVAILABLE: u8 = 69;
/// Internal software error.
pub const EX_SOFTWARE: u8 = 70;
/// System error (cannot fork, a helper process died, ...).
pub const EX_OSERR: u8 = 71;
/// Input/output error.
pub const EX_IOERR: u8 = 74;
/// Temporary failure: the caller is invited to retry.
pub const EX_TEMPFAIL: u8 = 75;
/// Remote error in protocol.
pub const EX_PROTOCOL: u8 = 76;
/// Permission denied (here: `mailq` or `postie queue` run by a user
/// other than root).
pub const EX_NOPERM: u8 = 77;
/// Configuration error.
pub const EX_CONFIG: u8 = 78;

#[cfg(test)]
mod tests {
    use super::*;

    /// The values are sysexits.h's: other programs read them.
    #[test]
    fn the_values_are_those_of_sysexits_h() {
        let ours = [
            ("EX_OK", EX_OK),
            ("EX_USAGE", EX_USAGE),
            ("EX_DATAERR", EX_DATAERR),
            ("EX_NOINPUT", EX_NOINPUT),
            ("EX_NOUSER", EX_NOUSER),
            ("EX_UNAVAILABLE", EX_UNAVAILABLE),
            ("EX_SOFTWARE", EX_SOFTWARE),
            ("EX_OSERR", EX_OSERR),
            ("EX_IOERR", EX_IOERR),
            ("EX_TEMPFAIL", EX_TEMPFAIL),
            ("EX_PROTOCOL", EX_PROTOCOL),
            ("EX_CONFIG", EX_CONFIG),
        ];
        let Ok(header) = std::fs::read_to_string("/usr/include/sysexits.h") else {
            println!("SKIP the_values_are_those_of_sysexits_h: no /usr/include/sysexits.h");
            return;
        };
        for (name, value) in ours {
            let defined = header.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("#define") && w.next() == Some(name))
                    .then(|| w.next().and_then(|v| v.parse::<u8>().ok()))
                    .flatten()
            });
            assert_eq!(defined, Some(value), "{name}");
        }
    }
}
