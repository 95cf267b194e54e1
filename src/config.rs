//! Resolving the command line against the system into the objects that
//! run: the session limits, the recipient policy, the delivery agent.
//!
//! Errors name the option at fault. (A configuration file comes with
//! issue 3/4; its errors will name `file:line`.)

use std::fmt;
use std::path::{Path, PathBuf};

use nix::unistd::Group;
use std::sync::Arc;
use std::time::Duration;

use crate::aliases::AliasFile;
use crate::cli::{BareLfPolicy, Options, QuotingArg};
use crate::conn;
use crate::deliver::Deliverer;
use crate::mbox::{MboxOptions, Quoting};
use crate::server::{ServerLimits, Service};
use crate::smtp::data::{BareLf, DataLimits};
use crate::smtp::session;
use crate::sys;
use crate::users::{LocalDomains, Nss, PasswdFile, Recipients, UserDb};

/// A configuration error, to be printed once by `main`.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

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
    if let Ok(s) = std::fs::read_to_string("/etc/mailname") {
        if let Some(line) = s
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
        {
            return line.to_string();
        }
    }
    sys::fqdn().unwrap_or_else(sys::hostname)
}

fn parse_mode(s: &str) -> Result<u32, ConfigError> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => Ok(m),
        _ => Err(ConfigError(format!(
            "--mailbox-mode {s}: want an octal mode no greater than 777 that lets the owner read and write"
        ))),
    }
}

fn parse_delimiter(s: &str) -> Result<Option<char>, ConfigError> {
    let mut cs = s.chars();
    match (cs.next(), cs.next()) {
        (None, _) => Ok(None),
        (Some(c), None) if c.is_ascii_punctuation() && c != '@' && c != '"' => Ok(Some(c)),
        _ => Err(ConfigError(format!(
            "--extension-delimiter {s:?}: want one ASCII punctuation character, or nothing"
        ))),
    }
}

/// Builds the service every session of this process shares.
pub fn service(o: &Options) -> Result<Service, ConfigError> {
    let hostname = mail_name(o.hostname.as_deref());
    if hostname.is_empty() || !hostname.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "--hostname {hostname:?}: not a host name"
        )));
    }
    check_spool(&o.spool)?;
    let db: Box<dyn UserDb> = match &o.passwd {
        Some(p) => {
            Box::new(PasswdFile::load(p).map_err(|e| ConfigError(format!("--passwd: {e}")))?)
        }
        None => Box::new(Nss),
    };
    let domains = LocalDomains::detect(&hostname, &o.domains);
    let aliases = if o.aliases.as_os_str().is_empty() {
        AliasFile::empty()
    } else {
        AliasFile::open(&o.aliases)
    };
    let recipients = Arc::new(Recipients::new(
        domains,
        db,
        parse_delimiter(&o.extension_delimiter)?,
        aliases,
    ));
    let lock_timeout = Duration::from_secs(o.lock_timeout);
    let deliverer = Deliverer {
        spool: o.spool.clone(),
        hostname: hostname.clone(),
        mbox: MboxOptions {
            mode: parse_mode(&o.mailbox_mode)?,
            quoting: match o.quoting {
                QuotingArg::Mboxrd => Quoting::Mboxrd,
                QuotingArg::Mboxo => Quoting::Mboxo,
            },
            lock_timeout,
            stale_lock: secs(o.stale_lock, "--stale-lock")?,
        },
        recipients: recipients.clone(),
        deadline: secs(o.timeout_data_end, "--timeout-data-end")?,
        mail_gid: Group::from_name("mail")
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    };
    let session = session::Config {
        hostname,
        max_size: o.max_size,
        max_recipients: o.max_recipients as usize,
        max_errors: o.max_errors,
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
        command_timeout: secs(o.timeout_command, "--timeout-command")?,
        data_timeout: secs(o.timeout_data, "--timeout-data")?,
        spill_threshold: usize::try_from(o.spill_threshold).unwrap_or(usize::MAX),
        temp_dir: temp_dir(o.temp_dir.as_deref())?,
    };
    let server = ServerLimits {
        max_connections: o.max_connections as usize,
        max_per_client: o.max_per_client as usize,
        shutdown_grace: Duration::from_secs(o.shutdown_grace),
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

fn secs(n: u64, what: &str) -> Result<Duration, ConfigError> {
    if n == 0 {
        return Err(ConfigError(format!(
            "{what} 0: a timeout must be at least one second"
        )));
    }
    Ok(Duration::from_secs(n))
}

fn temp_dir(given: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let dir = given
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(ConfigError(format!(
            "--temp-dir {}: not a directory",
            dir.display()
        ))),
        Err(e) => Err(ConfigError(format!("--temp-dir {}: {e}", dir.display()))),
    }
}

fn check_spool(dir: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError(format!(
            "--spool {}: not a directory",
            dir.display()
        ))),
        Err(e) => Err(ConfigError(format!("--spool {}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn given_hostname_wins() {
        assert_eq!(mail_name(Some("mx.example")), "mx.example");
    }
}
