//! The configuration file beneath the command line, and resolving both
//! against the system into the objects that run: the session limits, the
//! recipient policy, the delivery agent.
//!
//! The file (`/etc/postie/postie.conf`, or `-C FILE`) holds `key = value`
//! lines whose keys are the long options of [`Options`] (and `listen` of
//! `serve`). Its values are not parsed here: each becomes `--key=value` and
//! goes through the very clap value parser the command line uses, so one
//! set of rules applies. The file's options are then put in front of the
//! command line's, leaving out those the command line gives itself: the
//! command line wins over the file, and the file over the built-in
//! defaults.
//!
//! Errors name `FILE:LINE: key: why` for a value from the file, and the
//! option (`--key value: why`) for one from the command line.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, CommandFactory};
use nix::unistd::Group;

use crate::aliases::AliasFile;
use crate::cli::{BareLfPolicy, Cli, CommandLine, Mode, Options, QuotingArg};
use crate::conn;
use crate::deliver::Deliverer;
use crate::domains::{self, LocalDomains};
use crate::mbox::{MboxOptions, Quoting};
use crate::recipients::Recipients;
use crate::server::{ServerLimits, Service};
use crate::smtp::data::{BareLf, DataLimits};
use crate::smtp::session;
use crate::sys;
use crate::users::{Nss, PasswdFile, UserDb};

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

/// The configuration file read when `-C` is not given. A missing one is
/// no error: everything has a built-in default.
pub const DEFAULT_FILE: &str = "/etc/postie/postie.conf";

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

/// The group new mailboxes get, and the fsgid they are made with, when
/// postie runs as root: `mail`, if the system has it. Read here for
/// delivery and by `postie check`, which checks what delivery will do.
pub fn mail_gid() -> Option<u32> {
    Group::from_name("mail")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
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
/// `-`, `_` and dots, or an address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`). This is what catches `domain = a.example #
/// comment` (there are no trailing comments).
pub fn plausible_domain(s: &str) -> bool {
    if s.starts_with('[') {
        return crate::domains::parse_address_literal(s).is_some();
    }
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

// ---------------------------------------------------------------------
// The file

/// One `key = value` line of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key's canonical name: the long option (`max-size`, also when
    /// the file says `max_size`).
    pub key: String,
    /// The value; for a repeatable key the list on the line (possibly
    /// empty).
    pub values: Vec<String>,
    /// 1-based.
    pub line: usize,
}

/// A key the file may set.
#[derive(Debug, Clone)]
struct Key {
    /// The long option.
    name: String,
    /// clap's id, to ask the command line about it.
    id: String,
    /// May appear on several lines, each with a list.
    repeatable: bool,
}

/// The options a file may set, as one flat clap command: every option of
/// [`Options`] but `--config`, and `--listen` of `serve`. A value is
/// checked by parsing `--key=value` with it.
fn file_command() -> clap::Command {
    let cmd = Options::augment_args(
        clap::Command::new("postie.conf")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true),
    );
    let listen = Cli::command()
        .find_subcommand("serve")
        .and_then(|s| s.get_arguments().find(|a| a.get_id() == "listen"))
        .cloned();
    match listen {
        Some(listen) => cmd.arg(listen),
        None => cmd,
    }
}

/// The keys of [`file_command`].
fn keys(cmd: &clap::Command) -> Vec<Key> {
    cmd.get_arguments()
        .filter(|a| a.get_id() != "config")
        .filter_map(|a| {
            Some(Key {
                name: a.get_long()?.to_owned(),
                id: a.get_id().to_string(),
                repeatable: matches!(a.get_action(), ArgAction::Append),
            })
        })
        .collect()
}

/// The names of the keys a configuration file may set, in the order of
/// `postie --help`.
pub fn key_names() -> Vec<String> {
    keys(&file_command()).into_iter().map(|k| k.name).collect()
}

/// Parses configuration text (`source` names it in errors): the syntax,
/// the keys, duplicates; not the values, which [`load`] checks with the
/// command line's parsers.
///
/// - One setting a line: `key = value`, blanks around both ignored.
/// - Blank lines, and lines whose first non-blank character is `#`, are
///   skipped. There are no trailing comments and no continuation lines: a
///   `#` after a value is part of it.
/// - A key is a long option (`max-size`); `_` may stand for `-`.
/// - `domain` and `listen` may appear on several lines, each with a list
///   separated by commas and/or blanks. Any other key may appear once.
pub fn parse_file(text: &str, source: &str) -> Result<Vec<Setting>, ConfigError> {
    parse_with(text, source, &keys(&file_command()))
}

fn parse_with(text: &str, source: &str, keys: &[Key]) -> Result<Vec<Setting>, ConfigError> {
    let mut settings = Vec::new();
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |why: String| ConfigError(format!("{source}:{line}: {why}"));
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(err(format!(
                "expected \"key = value\", found \"{}\"",
                printable(trimmed)
            )));
        };
        let key = key.trim_end().replace('_', "-");
        if key.is_empty() {
            return Err(err("no key before \"=\"".into()));
        }
        let Some(k) = keys.iter().find(|k| k.name == key) else {
            return Err(err(format!("unknown key \"{}\"", printable(&key))));
        };
        let value = value.trim_start();
        let values = if k.repeatable {
            value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            if let Some(before) = first.get(&key) {
                return Err(err(format!("{key}: set again; first set on line {before}")));
            }
            vec![value.to_owned()]
        };
        first.entry(key.clone()).or_insert(line);
        settings.push(Setting { key, values, line });
    }
    Ok(settings)
}

/// `s` with quotes, backslashes and control characters escaped, for an
/// error message.
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

/// Why clap refused `value`, in a line without clap's layout.
fn why(e: &clap::Error, value: &str) -> String {
    let valid = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(v)) => format!(" (possible values: {})", v.join(", ")),
        _ => String::new(),
    };
    let value = printable(value);
    match (e.kind(), std::error::Error::source(e)) {
        (ErrorKind::InvalidValue, _) if value.is_empty() => {
            format!("a value is required{valid}")
        }
        (ErrorKind::ValueValidation, Some(src)) => {
            format!("invalid value \"{value}\": {src}{valid}")
        }
        (ErrorKind::InvalidValue | ErrorKind::ValueValidation, _) => {
            format!("invalid value \"{value}\"{valid}")
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    }
}

/// The options in force: the command line over the configuration file over
/// the built-in defaults.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    /// The file read; `None` when the default file does not exist.
    pub file: Option<PathBuf>,
    /// The file's settings that took effect (not those the command line
    /// overrode), in file order.
    pub settings: Vec<Setting>,
    /// The file's keys that the command line overrode.
    pub overridden: Vec<String>,
}

impl Loaded {
    /// The options in force when there is no file at all.
    pub fn without_file(cli: Cli) -> Self {
        Loaded {
            cli,
            file: None,
            settings: Vec::new(),
            overridden: Vec::new(),
        }
    }

    /// Where an option's value came from if it came from the file:
    /// `FILE:LINE`. For a repeatable key, `value` picks the line that gave
    /// it.
    pub fn origin(&self, key: &str, value: Option<&str>) -> Option<String> {
        let file = self.file.as_ref()?;
        self.settings
            .iter()
            .find(|s| s.key == key && value.is_none_or(|v| s.values.iter().any(|x| x == v)))
            .map(|s| format!("{}:{}", file.display(), s.line))
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

/// Reads the configuration file (`-C FILE`, else [`DEFAULT_FILE`] if it
/// exists) and puts it beneath the command line: an option the command
/// line gives replaces the file's (for `domain` and `listen` too: their
/// values do not add up across the two), and the file's replace the
/// defaults. `listen` applies to `serve` only.
///
/// Errors: a file given with `-C` that cannot be read, or any file that
/// exists but cannot be read; text that is not UTF-8; a line that is not
/// `key = value`; an unknown key; a key other than `domain` and `listen`
/// set twice; a value the option's parser refuses. Each names `FILE:LINE`.
pub fn load(cl: CommandLine) -> Result<Loaded, ConfigError> {
    load_vetted(cl, &|_| Ok(()))
}

/// [`load`], asking `vet` about the file before opening it and again on the
/// open file, so that the file vetted is the file read (the sendmail command
/// line run by root reads only a file root owns: `sendmail::root_may_read`).
pub fn load_vetted(
    cl: CommandLine,
    vet: &dyn Fn(&std::fs::Metadata) -> Result<(), String>,
) -> Result<Loaded, ConfigError> {
    let (path, explicit) = match &cl.cli.opts.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_FILE), false),
    };
    let source = path.display().to_string();
    let read = |mut f: std::fs::File| -> Result<Vec<u8>, String> {
        vet(&f.metadata().map_err(|e| e.to_string())?)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    };
    // `vet` sees the file before it is opened for reading: an open of a
    // FIFO without a writer blocks for ever, and an open of a device may
    // do something. So the path is first opened with O_PATH, which opens
    // nothing (no device driver, no FIFO wait), that descriptor is vetted
    // (fstat), and the very inode it names is opened for reading through
    // /proc/self/fd: a path swapped since (a link in /tmp) cannot slip
    // another file in. Without /proc, the path is opened again, with
    // O_NONBLOCK, and the open file is vetted once more before it is read.
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let handle = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&path)
    {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Loaded::without_file(cl.cli));
        }
        Err(e) => return Err(ConfigError(format!("{source}: {e}"))),
    };
    let meta = handle
        .metadata()
        .map_err(|e| ConfigError(format!("{source}: {e}")))?;
    vet(&meta).map_err(|why| ConfigError(format!("{source}: {why}")))?;
    let nonblock = if meta.is_file() { libc::O_NONBLOCK } else { 0 };
    let reopen = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | nonblock)
            .open(p)
    };
    let opened = match reopen(Path::new(&format!("/proc/self/fd/{}", handle.as_raw_fd()))) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => reopen(&path),
        other => other,
    };
    let bytes = match opened {
        Ok(f) => read(f).map_err(|why| ConfigError(format!("{source}: {why}")))?,
        Err(e) => return Err(ConfigError(format!("{source}: {e}"))),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError(format!("{source}:{line}: not UTF-8 text"))
    })?;
    let mut cmd = file_command();
    let keys = keys(&cmd);
    let all = parse_with(&text, &source, &keys)?;

    // Every value through its option's own parser, one at a time, so that
    // an error names its line.
    for s in &all {
        for v in &s.values {
            if let Err(e) = cmd.try_get_matches_from_mut([format!("--{}={v}", s.key)]) {
                return Err(ConfigError(format!(
                    "{source}:{}: {}: {}",
                    s.line,
                    s.key,
                    why(&e, v)
                )));
            }
        }
    }

    let serve = matches!(cl.cli.mode, Mode::Serve { .. });
    let mut front: Vec<OsString> = vec![
        cl.args
            .first()
            .cloned()
            .unwrap_or_else(|| OsString::from("postie")),
    ];
    let mut back = Vec::new();
    let mut settings = Vec::new();
    let mut overridden: Vec<String> = Vec::new();
    for s in all {
        let key = keys
            .iter()
            .find(|k| k.name == s.key)
            .expect("parse_with knows the key");
        if cl.given(&key.id) {
            if !overridden.contains(&s.key) {
                overridden.push(s.key.clone());
            }
            continue;
        }
        // The global options go first, before the mode; `listen` belongs
        // to `serve` and goes last, after it.
        let args = s
            .values
            .iter()
            .map(|v| OsString::from(format!("--{}={v}", s.key)));
        if s.key == "listen" {
            if serve {
                back.extend(args);
            }
        } else {
            front.extend(args);
        }
        settings.push(s);
    }
    front.extend(cl.args.iter().skip(1).cloned());
    front.extend(back);
    // Every value passed its parser above; what can still fail is a rule
    // between options.
    let matches = crate::cli::command()
        .try_get_matches_from(&front)
        .map_err(|e| ConfigError(format!("{source}: {}", why(&e, ""))))?;
    let cli =
        crate::cli::from_matches(&matches).map_err(|e| ConfigError(format!("{source}: {e}")))?;
    Ok(Loaded {
        cli,
        file: Some(path),
        settings,
        overridden,
    })
}

// ---------------------------------------------------------------------
// Options -> Service

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
    let recipients = Arc::new(Recipients::new(domains, db, delimiter, aliases));
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
        mail_gid: mail_gid(),
        journals: Default::default(),
        gates: Default::default(),
        append_writer: Default::default(),
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

    fn parse(text: &str) -> Result<Vec<Setting>, String> {
        parse_file(text, "t.conf").map_err(|e| e.0)
    }

    fn setting(key: &str, values: &[&str], line: usize) -> Setting {
        Setting {
            key: key.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            line,
        }
    }

    #[test]
    fn keys_are_the_long_options_and_listen() {
        let keys = key_names();
        for k in [
            "spool",
            "hostname",
            "domain",
            "max-size",
            "max-recipients",
            "max-line",
            "max-errors",
            "max-connections",
            "max-local-connections",
            "max-per-client",
            "timeout-command",
            "timeout-data",
            "timeout-data-end",
            "timeout-session",
            "lock-timeout",
            "stale-lock",
            "shutdown-grace",
            "bare-lf",
            "quoting",
            "extension-delimiter",
            "mailbox-mode",
            "passwd",
            "aliases",
            "spill-threshold",
            "temp-dir",
            "log",
            "log-level",
            "listen",
            "submit-socket",
            "user",
            "group",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        for k in ["config", "help", "version"] {
            assert!(!keys.iter().any(|x| x == k), "{k} must not be a key");
        }
        assert_eq!(keys.len(), 31, "{keys:?}");
    }

    #[test]
    fn comments_blank_lines_and_blanks_around() {
        let text = "# a comment\n\n   # indented comment\n\tmax-size\t=  5  \r\nspool=/s\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![setting("max-size", &["5"], 4), setting("spool", &["/s"], 5)]
        );
    }

    #[test]
    fn underscore_stands_for_hyphen() {
        assert_eq!(
            parse("max_size = 5\ntimeout_data_end = 9").unwrap(),
            vec![
                setting("max-size", &["5"], 1),
                setting("timeout-data-end", &["9"], 2)
            ]
        );
    }

    #[test]
    fn a_value_is_the_rest_of_the_line() {
        // No trailing comments: the `#` is part of the value (and the
        // option's parser will refuse it); an `=` in a value stays.
        assert_eq!(
            parse("max-size = 5 # bytes\nhostname = a=b").unwrap(),
            vec![
                setting("max-size", &["5 # bytes"], 1),
                setting("hostname", &["a=b"], 2)
            ]
        );
        assert_eq!(
            parse("aliases =").unwrap(),
            vec![setting("aliases", &[""], 1)]
        );
    }

    #[test]
    fn repeatable_keys_take_lists_on_several_lines() {
        assert_eq!(
            parse("domain = a.example, b.example  c.example\ndomain=d.example\nlisten = 127.0.0.1:25,[::1]:25\ndomain =").unwrap(),
            vec![
                setting("domain", &["a.example", "b.example", "c.example"], 1),
                setting("domain", &["d.example"], 2),
                setting("listen", &["127.0.0.1:25", "[::1]:25"], 3),
                setting("domain", &[], 4),
            ]
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            parse("# x\nbogus = 1").unwrap_err(),
            "t.conf:2: unknown key \"bogus\""
        );
        assert_eq!(
            parse("max-size 5").unwrap_err(),
            "t.conf:1: expected \"key = value\", found \"max-size 5\""
        );
        assert_eq!(parse(" = 5").unwrap_err(), "t.conf:1: no key before \"=\"");
        assert_eq!(
            parse("config = /etc/other.conf").unwrap_err(),
            "t.conf:1: unknown key \"config\""
        );
        assert_eq!(
            parse("Max-Size = 5").unwrap_err(),
            "t.conf:1: unknown key \"Max-Size\"",
            "keys are lower case"
        );
    }

    #[test]
    fn no_continuation_lines() {
        assert_eq!(
            parse("domain = a.example\n  b.example\n").unwrap_err(),
            "t.conf:2: expected \"key = value\", found \"b.example\""
        );
    }

    #[test]
    fn a_key_set_twice_names_both_lines() {
        assert_eq!(
            parse("max-size = 5\n\nmax_size = 6").unwrap_err(),
            "t.conf:3: max-size: set again; first set on line 1"
        );
    }

    /// A file in a temporary directory, and `config::load` of `args` with
    /// `-C FILE` in front.
    struct Conf {
        dir: tempfile::TempDir,
    }

    impl Conf {
        fn new(text: &[u8]) -> Conf {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("postie.conf"), text).unwrap();
            Conf { dir }
        }

        fn path(&self) -> String {
            self.dir.path().join("postie.conf").display().to_string()
        }

        fn load(&self, args: &[&str]) -> Result<Loaded, String> {
            let path = self.path();
            let mut argv = vec!["postie", "-C", &path];
            argv.extend(args);
            let cl = crate::cli::command_line(argv.iter().map(OsString::from)).unwrap();
            load(cl).map_err(|e| e.0)
        }
    }

    #[test]
    fn precedence_command_line_file_default() {
        let c = Conf::new(b"max-size = 5\ndomain = a.example\nmax-errors = 3\n");
        let l = c.load(&["inetd", "--max-size", "7"]).unwrap();
        assert_eq!(l.cli.opts.max_size, 7, "command line over file");
        assert_eq!(l.cli.opts.max_errors, 3, "file over default");
        assert_eq!(l.cli.opts.max_recipients, 100, "default");
        assert_eq!(l.cli.opts.domains, ["a.example"]);
        assert_eq!(l.overridden, ["max-size"]);
        assert_eq!(
            l.origin("max-errors", None),
            Some(format!("{}:3", c.path()))
        );
        assert_eq!(l.origin("max-size", None), None);
        // Before the mode, too.
        let l = c.load(&["--max-size=8", "inetd"]).unwrap();
        assert_eq!(l.cli.opts.max_size, 8);
    }

    #[test]
    fn a_repeatable_key_on_the_command_line_replaces_the_file() {
        let c = Conf::new(b"domain = a.example b.example\ndomain = c.example\n");
        let l = c.load(&["inetd"]).unwrap();
        assert_eq!(l.cli.opts.domains, ["a.example", "b.example", "c.example"]);
        assert_eq!(
            l.origin("domain", Some("c.example")),
            Some(format!("{}:2", c.path()))
        );
        let l = c.load(&["inetd", "--domain", "d.example"]).unwrap();
        assert_eq!(l.cli.opts.domains, ["d.example"]);
    }

    #[test]
    fn listen_is_for_serve() {
        let c = Conf::new(b"listen = 127.0.0.1:2600, [::1]:2600\n");
        let l = c.load(&["serve"]).unwrap();
        match &l.cli.mode {
            Mode::Serve { listen } => assert_eq!(
                listen,
                &[
                    "127.0.0.1:2600".parse().unwrap(),
                    "[::1]:2600".parse().unwrap()
                ]
            ),
            m => panic!("{m:?}"),
        }
        let l = c.load(&["serve", "--listen", "127.0.0.1:2700"]).unwrap();
        match &l.cli.mode {
            Mode::Serve { listen } => assert_eq!(listen, &["127.0.0.1:2700".parse().unwrap()]),
            m => panic!("{m:?}"),
        }
        assert!(c.load(&["inetd"]).is_ok(), "ignored by other modes");
    }

    #[test]
    fn values_go_through_the_command_line_parsers() {
        for (text, want) in [
            (
                "max-size = abc",
                "max-size: invalid value \"abc\": invalid digit found in string",
            ),
            (
                "max-line = 100",
                "max-line: invalid value \"100\": 100 is not in 512..=65536",
            ),
            (
                "quoting = mbox",
                "quoting: invalid value \"mbox\" (possible values: mboxrd, mboxo)",
            ),
            (
                "listen = here",
                "listen: invalid value \"here\": invalid socket address syntax",
            ),
            (
                "max-size = 5 # bytes",
                "max-size: invalid value \"5 # bytes\"",
            ),
        ] {
            let c = Conf::new(format!("# c\n{text}\n").as_bytes());
            let e = c.load(&["inetd"]).unwrap_err();
            assert!(e.starts_with(&format!("{}:2: ", c.path())), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn empty_values() {
        let c = Conf::new(b"aliases =\nextension-delimiter =\n");
        let l = c.load(&["inetd"]).unwrap();
        assert_eq!(l.cli.opts.aliases, PathBuf::new());
        assert_eq!(l.cli.opts.extension_delimiter, "");
        let c = Conf::new(b"max-size =\n");
        assert!(c.load(&["inetd"]).unwrap_err().contains(":1: max-size: "));
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

    #[test]
    fn file_errors() {
        let c = Conf::new(b"spool = /x\nhostname = \xff\n");
        assert_eq!(
            c.load(&["inetd"]).unwrap_err(),
            format!("{}:2: not UTF-8 text", c.path())
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.conf").display().to_string();
        let cl = crate::cli::command_line(
            ["postie", "-C", &missing, "inetd"]
                .iter()
                .map(OsString::from),
        )
        .unwrap();
        let e = load(cl).unwrap_err().0;
        assert!(e.starts_with(&format!("{missing}: ")), "{e}");
    }
}
