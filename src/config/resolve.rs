//! The options in force, from the command line or the file, resolved
//! against the system into the objects that run ([`service`]): the host's
//! mail name, the local domains, the user database, the aliases, the
//! delivery agent and the limits. The values the option parsers cannot
//! judge alone (a mode, a delimiter, a directory) are judged here, and an
//! error names the file's line or the option it came from.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{ConfigError, Loaded, printable};
use crate::aliases::AliasFile;
use crate::cli::RequireTls;
use crate::cli::{BareLfPolicy, Options, QuotingArg};
use crate::conn;
use crate::deliver::{Deliverer, QueueSetup};
use crate::domains::{self, LocalDomains};
use crate::mbox::{MboxOptions, Quoting};
use crate::queue::{Backoff, Queue};
use crate::recipients::Recipients;
use crate::server::{ServerLimits, Service};
use crate::smtp::data::{BareLf, DataLimits};
use crate::smtp::session;
use crate::sys;
use crate::tls::{Tls, TlsFiles};
use crate::users::{Nss, PasswdFile, UserDb};

/// Stack of a connection thread. The deepest path (NSS lookup, mailbox
/// append) uses a few tens of KiB; 256 KiB leaves a wide margin and costs
/// only the pages touched.
const THREAD_STACK: usize = 256 * 1024;
/// The host's mail name: `--hostname`, else the first line of
/// `/etc/mailname` (Debian's convention), else the FQDN, else the host
/// name.
pub fn mail_name(given: Option<&str>) -> String {
    if let Some(h) = given {
        return h.to_string();
    }
    // Unreadable, as missing: no name from it (and no warning here, where
    // the host name is only being looked up).
    if let Ok(Some(name)) = domains::mailname_in(Path::new(domains::MAILNAME)) {
        return name;
    }
    sys::fqdn().unwrap_or_else(sys::hostname)
}

/// The mode of new mailboxes, or why `s` is none.
fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => Ok(m),
        _ => {
            Err("want an octal mode no greater than 777 that lets the owner read and write".into())
        }
    }
}

/// The extension delimiter (`None`: extensions off), or why `s` is none.
pub fn parse_delimiter(s: &str) -> Result<Option<char>, String> {
    let mut cs = s.chars();
    match (cs.next(), cs.next()) {
        (None, _) => Ok(None),
        (Some(c), None) if c.is_ascii_punctuation() && c != '@' && c != '"' => Ok(Some(c)),
        _ => Err("want one ASCII punctuation character, or nothing".into()),
    }
}

/// True if `s` can be a local domain: a name of ASCII letters, digits,
/// `-`, `_` and dots, or U-labels' UTF-8 (RFC 6531: the non-ASCII
/// characters an address may hold, `bücher.example`), or an address
/// literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`). This is what catches
/// `domain = a.example # comment` (there are no trailing comments).
pub fn plausible_domain(s: &str) -> bool {
    if s.starts_with('[') {
        return crate::domains::parse_address_literal(s).is_some();
    }
    !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.')
                || crate::smtp::address::is_utf8_address_char(c)
        })
}
impl Loaded {
    /// STARTTLS as configured (`tls_setup`), for the options in force.
    pub fn tls(&self) -> Result<Option<TlsSetup>, ConfigError> {
        tls_setup(&self.cli.opts, &|k, v| self.origin(k, v))
    }

    /// [`service`] for the options in force, with errors naming `FILE:LINE`
    /// for values from the file.
    pub fn service(&self) -> Result<Service, ConfigError> {
        build(&self.cli.opts, &|k, v| self.origin(k, v), true)
    }

    /// [`Loaded::service`] without looking at the spool directory, for
    /// `postie check`, which examines the spool itself.
    pub(crate) fn service_unchecked_spool(&self) -> Result<Service, ConfigError> {
        build(&self.cli.opts, &|k, v| self.origin(k, v), false)
    }
}

/// Builds the service every session of this process shares, from the
/// options alone (errors name the option).
pub fn service(o: &Options) -> Result<Service, ConfigError> {
    build(o, &|_, _| None, true)
}

/// Where a value came from: `FILE:LINE`, or `None` for the command line or
/// a default. The second argument picks one value of a repeatable key.
type Origin<'a> = &'a dyn Fn(&str, Option<&str>) -> Option<String>;

/// An error about option `key` set to `value` (as it is to be shown):
/// `FILE:LINE: key: value: why` if it came from the file, else `--key
/// value: why`.
fn bad(origin: Origin<'_>, key: &str, value: &str, why: &str) -> ConfigError {
    match origin(key, None) {
        Some(at) => ConfigError(format!("{at}: {key}: {value}: {why}")),
        None => ConfigError(format!("--{key} {value}: {why}")),
    }
}

fn build(o: &Options, origin: Origin<'_>, with_spool: bool) -> Result<Service, ConfigError> {
    let hostname = mail_name(o.hostname.as_deref());
    // 255: a domain name's limit (RFC 1035 2.3.4), which also keeps every
    // reply that names the host within the 512-octet reply line.
    if hostname.is_empty()
        || hostname.len() > 255
        || !hostname.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(match o.hostname {
            Some(_) => bad(
                origin,
                "hostname",
                &format!("{hostname:?}"),
                "not a host name",
            ),
            None => ConfigError(format!(
                "host name {hostname:?} (from /etc/mailname or the system): not a host name; set hostname"
            )),
        });
    }
    for d in &o.domains {
        if !plausible_domain(d) {
            let why = "not a domain name or address literal";
            return Err(match origin("domain", Some(d)) {
                Some(at) => ConfigError(format!("{at}: domain: \"{}\": {why}", printable(d))),
                None => ConfigError(format!("--domain {d:?}: {why}")),
            });
        }
    }
    let dir_error =
        |key: &str, dir: &Path, why: String| bad(origin, key, &dir.display().to_string(), &why);
    if with_spool {
        check_dir(&o.spool).map_err(|why| dir_error("spool", &o.spool, why))?;
    }
    let db: Box<dyn UserDb> = match &o.passwd {
        Some(p) => Box::new(
            PasswdFile::load(p).map_err(|e| match origin("passwd", None) {
                Some(at) => ConfigError(format!("{at}: passwd: {e}")),
                None => ConfigError(format!("--passwd: {e}")),
            })?,
        ),
        None => Box::new(Nss),
    };
    let delimiter = parse_delimiter(&o.extension_delimiter).map_err(|why| {
        let shown = format!("{:?}", o.extension_delimiter);
        bad(origin, "extension-delimiter", &shown, &why)
    })?;
    let mode = parse_mode(&o.mailbox_mode)
        .map_err(|why| bad(origin, "mailbox-mode", &o.mailbox_mode, &why))?;
    let secs = |n: u64, key: &str| secs(n).map_err(|why| bad(origin, key, &n.to_string(), why));
    let stale_lock = secs(o.stale_lock, "stale-lock")?;
    let deadline = secs(o.timeout_data_end, "timeout-data-end")?;
    let command_timeout = secs(o.timeout_command, "timeout-command")?;
    let data_timeout = secs(o.timeout_data, "timeout-data")?;
    let session_timeout = secs(o.timeout_session, "timeout-session")?;
    let temp_dir = o.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    check_dir(&temp_dir).map_err(|why| dir_error("temp-dir", &temp_dir, why))?;

    let domains = LocalDomains::detect(&hostname, &o.domains);
    let aliases = if o.aliases.as_os_str().is_empty() {
        AliasFile::empty()
    } else {
        AliasFile::open(&o.aliases)
    };
    let allow = crate::aliases::Allow {
        commands: o.allow_commands,
        files: o.allow_files,
    };
    let recipients = Arc::new(Recipients::new(domains, db, delimiter, aliases).with_allow(allow));
    let deliverer = Deliverer {
        spool: o.spool.clone(),
        hostname: hostname.clone(),
        mbox: MboxOptions {
            mode,
            quoting: match o.quoting {
                QuotingArg::Mboxrd => Quoting::Mboxrd,
                QuotingArg::Mboxo => Quoting::Mboxo,
            },
            lock_timeout: Duration::from_secs(o.lock_timeout),
            stale_lock,
        },
        recipients: recipients.clone(),
        deadline,
        mail_gid: crate::users::mail_gid(),
        journals: Default::default(),
        gates: Default::default(),
        append_writer: Default::default(),
        queue: queue_setup(o),
        special: crate::deliver::SpecialSetup {
            default_user: o.default_user.clone(),
            command_time_limit: Duration::from_secs(o.command_time_limit),
        },
    };
    let session = session::Config {
        hostname,
        max_size: o.max_size,
        max_recipients: o.max_recipients as usize,
        max_errors: o.max_errors,
        starttls: false,
        require_tls: false,
        // `postie lmtp` sets it.
        lmtp: false,
    };
    let conn = conn::Limits {
        max_line: o.max_line as usize,
        data: DataLimits {
            max_size: o.max_size,
            bare_lf: match o.bare_lf {
                BareLfPolicy::Accept => BareLf::Accept,
                BareLfPolicy::Reject => BareLf::Reject,
            },
        },
        command_timeout,
        data_timeout,
        session_timeout,
        spill_threshold: usize::try_from(o.spill_threshold).unwrap_or(usize::MAX),
        temp_dir,
    };
    let server = ServerLimits {
        max_connections: o.max_connections as usize,
        max_local_connections: o.max_local_connections as usize,
        max_per_client: o.max_per_client as usize,
        shutdown_grace: Duration::from_secs(o.shutdown_grace),
        finish_within: deadline.saturating_add(command_timeout),
        thread_stack: THREAD_STACK,
    };
    Ok(Service::new(
        session,
        conn,
        server,
        recipients,
        Arc::new(deliverer),
    ))
}

/// STARTTLS as configured, for `serve` and `inetd`: the certificate and
/// key files, read now (as root, before the SMTP side drops its
/// privileges), the handshake's limit, and where TLS is required. `None`:
/// no STARTTLS (`tls-cert` empty, or not set and no snakeoil pair that
/// this process may read).
pub fn tls_setup(o: &Options, origin: Origin<'_>) -> Result<Option<TlsSetup>, ConfigError> {
    let files = match (&o.tls_cert, &o.tls_key) {
        (Some(c), _) if c.as_os_str().is_empty() => return Ok(None),
        (Some(cert), Some(key)) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        (Some(c), None) => {
            return Err(bad(
                origin,
                "tls-cert",
                &c.display().to_string(),
                "needs tls-key too",
            ));
        }
        (None, Some(k)) => {
            return Err(bad(
                origin,
                "tls-key",
                &k.display().to_string(),
                "needs tls-cert too",
            ));
        }
        (None, None) => match TlsFiles::snakeoil() {
            Some(f) => match f.read() {
                Ok(_) => f,
                Err(e) => {
                    log::info!("no STARTTLS: the snakeoil pair is not readable: {e}");
                    return Ok(None);
                }
            },
            None => return Ok(None),
        },
    };
    let shown = files.cert.display().to_string();
    let pem = files
        .read()
        .map_err(|e| bad(origin, "tls-cert", &shown, &e.to_string()))?;
    let timeout = secs(o.timeout_tls)
        .map_err(|why| bad(origin, "timeout-tls", &o.timeout_tls.to_string(), why))?;
    let source = files.clone();
    let tls = Tls::new(&pem, Box::new(move || source.read()), timeout)
        .map_err(|why| bad(origin, "tls-cert", &shown, &why))?;
    Ok(Some(TlsSetup {
        tls,
        files,
        require: o.require_tls.clone(),
    }))
}

/// What `tls_setup` found: STARTTLS as configured.
pub struct TlsSetup {
    pub tls: Tls,
    /// Where the delivery process reads them again on SIGHUP.
    pub files: TlsFiles,
    pub require: Vec<RequireTls>,
}

/// The queue and its policy, if the queue directory is one this process
/// may use; else `None`, said in the log: a recipient that cannot take a
/// message at once then defers the whole message.
fn queue_setup(o: &Options) -> Option<QueueSetup> {
    let queue = match Queue::open(&o.queue_dir) {
        Ok(q) => q,
        Err(e) => {
            // (The error names the directory.)
            log::info!(
                "{e}: no queue; a recipient that cannot take a message at once defers all of it"
            );
            return None;
        }
    };
    let minimal = Duration::from_secs(o.minimal_backoff.max(1));
    Some(QueueSetup {
        queue,
        lock_wait: Duration::from_secs(o.queue_lock_wait.min(o.lock_timeout)),
        backoff: Backoff {
            minimal,
            maximal: Duration::from_secs(o.maximal_backoff).max(minimal),
            give_up: Duration::from_secs(o.queue_return),
        },
        delay_warning: (o.delay_warning > 0).then(|| Duration::from_secs(o.delay_warning)),
        return_limit: o.return_limit,
    })
}

fn secs(n: u64) -> Result<Duration, &'static str> {
    if n == 0 {
        return Err("a timeout must be at least one second");
    }
    Ok(Duration::from_secs(n))
}

/// Why `dir` is no directory, if it is not.
fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::Conf;

    #[test]
    fn mailbox_modes() {
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert!(parse_mode("400").is_err());
        assert!(parse_mode("7777").is_err());
        assert!(parse_mode("abc").is_err());
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("+").unwrap(), Some('+'));
        assert_eq!(parse_delimiter("").unwrap(), None);
        assert!(parse_delimiter("@").is_err());
        assert!(parse_delimiter("ab").is_err());
    }

    /// RFC 6531: a U-label domain may be configured; what an address may
    /// not hold may not be configured either.
    #[test]
    fn utf8_domains_are_plausible() {
        assert!(plausible_domain("b\u{fc}cher.example"));
        assert!(plausible_domain("\u{4f8b}\u{5b50}.\u{5e7f}\u{544a}"));
        assert!(plausible_domain("a.example"));
        for bad in ["a\u{202e}b.example", "a\u{a0}b", "a\u{3002}b", "#", "a b"] {
            assert!(!plausible_domain(bad), "{bad:?}");
        }
    }

    #[test]
    fn given_hostname_wins() {
        assert_eq!(mail_name(Some("mx.example")), "mx.example");
    }
    #[test]
    fn values_that_only_the_service_can_judge_name_the_line() {
        let spool = tempfile::tempdir().unwrap();
        let s = spool.path().display().to_string();
        for (text, want) in [
            (
                "mailbox-mode = 400",
                ":3: mailbox-mode: 400: want an octal mode",
            ),
            ("timeout-data = 0", ":3: timeout-data: 0: a timeout must be"),
            (
                "domain = a.example # x",
                ":3: domain: \"#\": not a domain name",
            ),
            (
                "extension-delimiter = ab",
                ":3: extension-delimiter: \"ab\": want one",
            ),
            (
                "temp-dir = /nonexistent/dir",
                ":3: temp-dir: /nonexistent/dir: ",
            ),
        ] {
            let c = Conf::new(format!("spool = {s}\npasswd = /dev/null\n{text}\n").as_bytes());
            let e = c.load(&["inetd"]).unwrap().service().err().unwrap().0;
            assert!(e.starts_with(&c.path()), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
        // From the command line, the option is named instead.
        let c = Conf::new(format!("spool = {s}\npasswd = /dev/null\n").as_bytes());
        let l = c.load(&["inetd", "--mailbox-mode", "400"]).unwrap();
        let e = l.service().err().unwrap().0;
        assert!(e.starts_with("--mailbox-mode 400: "), "{e}");
    }

    #[test]
    fn hostname_longer_than_a_domain_name_is_refused() {
        let s = tempfile::tempdir().unwrap();
        let s = s.path().display();
        let c = Conf::new(format!("spool = {s}\npasswd = /dev/null\n").as_bytes());
        let long = format!("{}.example", "a".repeat(250));
        let l = c.load(&["inetd", "--hostname", &long]).unwrap();
        let e = l.service().err().unwrap().0;
        assert!(e.contains("not a host name"), "{e}");
        let ok = format!("{}.example", "a".repeat(240));
        let l = c.load(&["inetd", "--hostname", &ok]).unwrap();
        assert!(l.service().is_ok());
    }
}
