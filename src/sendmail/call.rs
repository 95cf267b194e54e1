//! The sendmail command line: which calls are sendmail's ([`Call`]: by
//! program name or by postie's word `sendmail`), and their parsing into an
//! [`Invocation`] through the same option parser and configuration file as
//! every other mode. Root's side of that is here too: the options that say
//! where mail goes are refused on the command line ([`SYSTEM_OPTIONS`]),
//! and root reads a `-C` file only if root owns it ([`root_may_read`]),
//! without showing the lines of a file others may not read. Kept apart from
//! what the modes then do (the parent module), which never sees argv.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use clap::CommandFactory;

use super::args::{self, Action, Flags, Personality, UsageError};
use crate::cli::{self, Options};
use crate::config;

/// The sendmail part of a command line: who we are, postie's arguments
/// before the sendmail ones (`postie [OPTIONS] sendmail`, parsed by
/// [`cli::parse`] as the `sendmail` mode without arguments), and the
/// sendmail arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub personality: Personality,
    pub base: Vec<OsString>,
    pub args: Vec<OsString>,
}

impl Call {
    /// The sendmail call in `argv`, if it is one: the program is named
    /// `sendmail`, `newaliases` or `mailq` (whatever the directory), or
    /// postie's first word after its options is `sendmail`. The arguments
    /// after that word are sendmail's, untouched by clap (which would take
    /// `-bs` for the inetd mode).
    pub fn from_argv(argv: &[OsString]) -> Option<Call> {
        if let Some(p) = Personality::from_argv0(argv.first()?) {
            return Some(Call {
                personality: p,
                base: vec!["postie".into(), "sendmail".into()],
                args: argv[1..].to_vec(),
            });
        }
        let cmd = cli::Cli::command();
        let takes_value = |long: Option<&str>, short: Option<char>| {
            cmd.get_arguments()
                .find(|a| {
                    (long.is_some() && a.get_long() == long)
                        || (short.is_some() && a.get_short() == short)
                })
                .map(|a| a.get_action().takes_values())
        };
        let mut i = 1;
        while i < argv.len() {
            let a = argv[i].as_encoded_bytes();
            if a == b"sendmail" {
                return Some(Call {
                    personality: Personality::Sendmail,
                    base: argv[..=i].to_vec(),
                    args: argv[i + 1..].to_vec(),
                });
            }
            if let Some(long) = a.strip_prefix(b"--") {
                if long.is_empty() {
                    return None;
                }
                if long.contains(&b'=') {
                    i += 1;
                    continue;
                }
                let takes = takes_value(Some(std::str::from_utf8(long).ok()?), None)?;
                i += if takes { 2 } else { 1 };
                continue;
            }
            if a.len() >= 2 && a[0] == b'-' {
                let mut skip = 1;
                for (k, &c) in a.iter().enumerate().skip(1) {
                    if takes_value(None, Some(char::from(c)))? {
                        if k + 1 == a.len() {
                            skip = 2;
                        }
                        break;
                    }
                }
                i += skip;
                continue;
            }
            // Another mode.
            return None;
        }
        None
    }

    /// The call for `argv`, which clap parsed as the `sendmail` mode with
    /// `args`: they are the end of `argv` (clap keeps a trailing variable
    /// argument verbatim, except a `--` before it).
    pub fn from_suffix(argv: &[OsString], mut args: Vec<OsString>) -> Call {
        let n = argv.len().saturating_sub(args.len());
        let mut base = argv[..n].to_vec();
        if base.last().is_some_and(|a| a == "--") {
            base.pop();
            args.insert(0, "--".into());
        }
        Call {
            personality: Personality::Sendmail,
            base,
            args,
        }
    }
}

/// A parsed sendmail command line: its flags and postie's options.
#[derive(Debug)]
pub struct Invocation {
    pub flags: Flags,
    pub opts: Options,
    /// For `-bd`: the configuration file's `listen` addresses (empty: the
    /// default).
    pub listen: Vec<std::net::SocketAddr>,
}

/// Why a command line was refused (exit 64).
#[derive(Debug)]
pub enum ParseError {
    Usage(UsageError),
    /// postie's own options, refused by clap.
    Cli(clap::Error),
    /// The configuration file (`-C FILE`, or the default one) is wrong.
    Config(crate::config::ConfigError),
    /// The same, for `-bs`: stdout is an SMTP client, owed a 421.
    SmtpConfig(crate::config::ConfigError),
}

impl From<UsageError> for ParseError {
    fn from(e: UsageError) -> Self {
        ParseError::Usage(e)
    }
}

/// postie's options that the sendmail command line may not set, before or
/// after the word `sendmail`: where mailboxes and the queue are written, whose passwd
/// and aliases say who a recipient is, which daemon gets the message,
/// where messages are spooled, the mode of new mailboxes, who the
/// privilege-separated side runs as, when another program's dotlock
/// may be broken, and which files root reads as TLS certificate and key. Root runs sendmail from cron and scripts, with arguments
/// it did not all write; these come from the configuration file only.
/// Every other option of postie's is harmless per call (a test checks that
/// each option is in one list or the other).
pub const SYSTEM_OPTIONS: &[&str] = &[
    "spool",
    "queue-dir",
    "passwd",
    "aliases",
    "submit-socket",
    "lmtp-socket-group",
    "mailbox-mode",
    "temp-dir",
    "user",
    "group",
    "stale-lock",
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
];

/// Whether root may read a configuration file owned by `uid`, with `mode`:
/// only a regular file that root owns and nobody else may write. Anyone
/// else who could write it would choose root's spool, passwd and aliases.
/// (sendmail 8 gives up its privileges for `-C`, which for root changes
/// nothing; Postfix's sendmail honours root's `-C` as it is. Here root's
/// sendmail may deliver in-process, so the file is vetted instead.)
pub fn root_may_read(uid: u32, mode: u32, is_file: bool) -> Result<(), String> {
    if !is_file {
        return Err("not a regular file; root reads only a file root owns".into());
    }
    if uid != 0 {
        return Err(format!(
            "owned by uid {uid}; root reads only a configuration file root owns"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "mode {:03o} lets others write it; root reads only a configuration file \
             nobody else may write",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// An error about the content of root's configuration `file` (a line,
/// or a value, that it may quote), when others may not read the file: its
/// content is not shown. A root script may pass `-C` an argument someone
/// else chose (`/etc/shadow`, through a link), and show them the output.
/// `vetted` is the mode of the file that passed the vetting, as its
/// descriptor said (`None`: none did, and no content was read).
fn hide_private_lines(
    e: config::ConfigError,
    file: &Path,
    vetted: Option<u32>,
) -> config::ConfigError {
    let prefix = format!("{}:", file.display());
    let about_the_file = e.0.starts_with(&prefix);
    let private = vetted.is_some_and(|mode| mode & 0o004 == 0);
    if about_the_file && private {
        config::ConfigError(format!(
            "{}: not a valid configuration file (its lines are not shown: others may not read it; postie -C FILE check shows them)",
            file.display()
        ))
    } else {
        e
    }
}

/// Parses the sendmail flags, then postie's options (those before the
/// sendmail arguments and the long ones among them) through [`cli::parse`],
/// so that they mean and check the same as everywhere else.
pub fn parse(call: Call) -> Result<Invocation, ParseError> {
    let cmd = cli::Cli::command();
    let long = |name: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .map(|a| a.get_action().takes_values())
    };
    let flags = args::parse(call.personality, &call.args, &long)?;
    let mut argv = call.base;
    // -bd is `serve`, named instead of `sendmail` (the last word of the
    // base), so that the file's `listen`, which belongs to serve only,
    // applies.
    let daemon = flags.action == Action::Daemon;
    if daemon {
        argv.pop();
    }
    if let Some(file) = &flags.config {
        // `-C FILE` is postie's configuration file (the `cli` option with
        // the short name C); root reads it only if root owns it (below).
        if let Some(c) = cmd.get_arguments().find(|a| a.get_short() == Some('C')) {
            let mut arg = match c.get_long() {
                Some(l) => OsString::from(format!("--{l}=")),
                None => OsString::from("-C="),
            };
            arg.push(file);
            argv.push(arg);
        }
    }
    argv.extend(flags.postie_args.iter().cloned());
    if daemon {
        argv.push("serve".into());
    }
    // The configuration file goes beneath the command line, as for
    // every other mode.
    let cl = cli::command_line(argv).map_err(ParseError::Cli)?;
    for name in SYSTEM_OPTIONS {
        let id = cmd.get_arguments().find(|a| a.get_long() == Some(name));
        if id.is_some_and(|a| cl.given(a.get_id().as_str())) {
            return Err(UsageError::SystemOption(format!("--{name}")).into());
        }
    }
    let loaded = if nix::unistd::geteuid().is_root() {
        let file = cl
            .cli
            .opts
            .config
            .clone()
            .unwrap_or_else(|| config::DEFAULT_FILE.into());
        // The mode of the file as vetted on its descriptor (the file that
        // is read), not as its path says later.
        let vetted = std::cell::Cell::new(None);
        crate::config::load_vetted(cl, &|m| {
            let ok = root_may_read(m.uid(), m.mode(), m.file_type().is_file());
            vetted.set(ok.is_ok().then_some(m.mode()));
            ok
        })
        .map_err(|e| hide_private_lines(e, &file, vetted.get()))
    } else {
        crate::config::load(cl)
    }
    .map_err(|e| match flags.action {
        Action::Smtp => ParseError::SmtpConfig(e),
        _ => ParseError::Config(e),
    })?;
    let listen = match loaded.cli.mode {
        cli::Mode::Serve { listen } => listen,
        _ => Vec::new(),
    };
    let mut opts = loaded.cli.opts;
    if let (Action::Daemon, Some(secs)) = (flags.action, flags.queue.interval) {
        // `-bd -q30m`: how often the daemon's runner looks at the queue
        // (over the file's queue-run-interval; harmless per call, unlike
        // the option itself, which names no path).
        opts.queue_run_interval = secs;
    }
    Ok(Invocation {
        flags,
        opts,
        listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn calls_by_name_and_by_word() {
        let c = Call::from_argv(&os(&["/usr/sbin/sendmail", "-t", "-bs"])).unwrap();
        assert_eq!(c.personality, Personality::Sendmail);
        assert_eq!(c.base, os(&["postie", "sendmail"]));
        assert_eq!(c.args, os(&["-t", "-bs"]));
        let c = Call::from_argv(&os(&["newaliases"])).unwrap();
        assert_eq!(c.personality, Personality::Newaliases);
        let c = Call::from_argv(&os(&[
            "postie",
            "--spool",
            "/tmp/s",
            "--hostname=h",
            "sendmail",
            "-bs",
            "--spool",
            "x",
        ]))
        .unwrap();
        assert_eq!(
            c.base,
            os(&["postie", "--spool", "/tmp/s", "--hostname=h", "sendmail"])
        );
        assert_eq!(c.args, os(&["-bs", "--spool", "x"]));
        // A value that happens to be `sendmail` is not the mode.
        assert_eq!(
            Call::from_argv(&os(&["postie", "--hostname", "sendmail", "inetd"])),
            None
        );
        for other in [
            &["postie", "serve"][..],
            &["postie", "-bs"],
            &["postie", "--bogus", "sendmail"],
            &["postie"],
        ] {
            assert_eq!(Call::from_argv(&os(other)), None, "{other:?}");
        }
    }

    #[test]
    fn calls_from_clap_suffix() {
        let c = Call::from_suffix(&os(&["postie", "sendmail", "--", "-x"]), os(&["-x"]));
        assert_eq!(c.base, os(&["postie", "sendmail"]));
        assert_eq!(c.args, os(&["--", "-x"]));
        let c = Call::from_suffix(&os(&["postie", "sendmail", "-t"]), os(&["-t"]));
        assert_eq!(c.base, os(&["postie", "sendmail"]));
        assert_eq!(c.args, os(&["-t"]));
    }

    #[test]
    fn postie_options_in_both_places() {
        let c = Call::from_argv(&os(&[
            "postie",
            "--domain",
            "a.example",
            "sendmail",
            "-t",
            "--hostname",
            "h.example",
            "--max-size=1000",
        ]))
        .unwrap();
        let inv = parse(c).unwrap();
        assert!(inv.flags.extract);
        assert_eq!(inv.opts.domains, vec!["a.example".to_owned()]);
        assert_eq!(inv.opts.hostname.as_deref(), Some("h.example"));
        assert_eq!(inv.opts.max_size, 1000);
        assert_eq!(inv.opts.submit_socket, Path::new("/run/postie/submit.sock"));
        // Bad values are clap's errors.
        let c = Call::from_argv(&os(&["sendmail", "--max-size", "lots", "jon"])).unwrap();
        assert!(matches!(parse(c), Err(ParseError::Cli(_))));
        let c = Call::from_argv(&os(&["sendmail", "-X"])).unwrap();
        assert!(matches!(parse(c), Err(ParseError::Usage(_))));
    }

    /// Issue "postie 5": a root cron job passed an attacker's argument
    /// that moved the spool, passwd and aliases. Those options are the
    /// configuration file's alone, wherever they stand on the command line.
    #[test]
    fn system_options_are_refused_anywhere() {
        for argv in [
            &["sendmail", "--spool", "/root/.ssh", "jon"][..],
            &["sendmail", "--passwd=/tmp/p", "jon"],
            &["postie", "--aliases", "/tmp/a", "sendmail", "jon"],
            &["postie", "sendmail", "--submit-socket=/tmp/s", "-bs"],
            &["sendmail", "--temp-dir", "/tmp", "-bd"],
            &["sendmail", "--mailbox-mode=666", "jon"],
            &["postie", "--user", "jon", "sendmail", "-bs"],
            &["sendmail", "--stale-lock", "0", "jon"],
            &["sendmail", "--queue-dir", "/tmp/q", "-bp"],
            &["postie", "--queue-dir=/tmp/q", "sendmail", "jon"],
        ] {
            let c = Call::from_argv(&os(argv)).unwrap();
            match parse(c) {
                Err(ParseError::Usage(UsageError::SystemOption(o))) => {
                    assert!(argv.iter().any(|a| a.starts_with(&o)), "{argv:?}: {o}")
                }
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        // After the first recipient it is no option at all.
        let c = Call::from_argv(&os(&["sendmail", "jon", "--spool=/root/.ssh"])).unwrap();
        let inv = parse(c).unwrap();
        assert_eq!(inv.flags.recipients, vec!["jon", "--spool=/root/.ssh"]);
        assert_eq!(inv.opts.spool, Path::new("/var/mail"));
    }

    /// Each option of postie's command line as the binary parses it
    /// (`cli::command()`: `Cli`'s options and the hidden top-level
    /// `--listen` it adds) is a system option, one that may be set per
    /// call, or one that sendmail's command line does not take at all: a
    /// new option must be put in one list.
    #[test]
    fn every_option_is_classified() {
        const PER_CALL: &[&str] = &[
            "config",
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
            "timeout-tls",
            "require-tls",
            "timeout-data-end",
            "timeout-session",
            "lock-timeout",
            "spill-threshold",
            "shutdown-grace",
            "bare-lf",
            "quoting",
            "extension-delimiter",
            "log",
            "log-level",
        ];
        // Refused by sendmail as unknown options (checked below): -bd
        // listens where the configuration file says.
        const NOT_TAKEN: &[&str] = &["listen"];
        let cmd = cli::command();
        let mut seen = 0;
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            seen += 1;
            let lists = [SYSTEM_OPTIONS, PER_CALL, NOT_TAKEN];
            assert_eq!(
                lists.iter().filter(|l| l.contains(&long)).count(),
                1,
                "--{long}: put it in one of SYSTEM_OPTIONS, PER_CALL or NOT_TAKEN"
            );
        }
        assert_eq!(
            seen,
            SYSTEM_OPTIONS.len() + PER_CALL.len() + NOT_TAKEN.len()
        );
        for long in NOT_TAKEN {
            let call = Call {
                personality: Personality::Sendmail,
                base: vec!["postie".into(), "sendmail".into()],
                args: vec![format!("--{long}=127.0.0.1:25").into(), "jon".into()],
            };
            assert!(
                matches!(parse(call), Err(ParseError::Usage(UsageError::Unknown(_)))),
                "--{long}"
            );
        }
    }

    /// `-bd -q30m`: the daemon's runner looks at the queue every 30
    /// minutes, over the default (and the file); `-q30m` alone changes
    /// no option.
    #[test]
    fn bd_with_an_interval_sets_the_runners() {
        let interval = |argv: &[&str]| {
            let inv = parse(Call::from_argv(&os(argv)).unwrap()).unwrap();
            inv.opts.queue_run_interval
        };
        assert_eq!(interval(&["sendmail", "-bd", "-q30m"]), 1800);
        assert_eq!(interval(&["sendmail", "-q1h", "-bd"]), 3600);
        assert_eq!(interval(&["sendmail", "-bd"]), 300);
        assert_eq!(interval(&["sendmail", "-q30m"]), 300);
    }

    #[test]
    fn root_reads_only_files_root_owns() {
        assert_eq!(root_may_read(0, 0o100644, true), Ok(()));
        assert_eq!(root_may_read(0, 0o100600, true), Ok(()));
        assert_eq!(root_may_read(0, 0o100755, true), Ok(()));
        let e = root_may_read(1000, 0o100644, true).unwrap_err();
        assert!(e.contains("owned by uid 1000"), "{e}");
        let e = root_may_read(0, 0o100664, true).unwrap_err();
        assert!(e.contains("mode 664"), "{e}");
        let e = root_may_read(0, 0o100646, true).unwrap_err();
        assert!(e.contains("mode 646"), "{e}");
        assert!(root_may_read(0, 0o010644, false).is_err());
    }
}
