//! The configuration file: its syntax ([`parse_file`]: `key = value`
//! lines, the keys being postie's long options) and [`load`], which checks
//! every value with the command line's own parser and puts the file
//! beneath the command line, remembering which line gave what so that
//! later errors can name it ([`Loaded::origin`]). Nothing here looks at
//! the system beyond reading the file; that is [`super::resolve`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, CommandFactory};

use super::{ConfigError, DEFAULT_FILE, printable};
use crate::cli::{Cli, CommandLine, Mode, Options};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::Conf;

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
            "queue-dir",
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
            "queue-lock-wait",
            "queue-return",
            "delay-warning",
            "minimal-backoff",
            "maximal-backoff",
            "queue-run-interval",
            "return-limit",
            "allow-commands",
            "allow-files",
            "default-user",
            "command-time-limit",
            "tls-cert",
            "tls-key",
            "require-tls",
            "timeout-tls",
            "lmtp-socket-group",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        for k in ["config", "help", "version"] {
            assert!(!keys.iter().any(|x| x == k), "{k} must not be a key");
        }
        assert_eq!(keys.len(), 48, "{keys:?}");
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
