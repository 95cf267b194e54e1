//! The sendmail(8) command line, parsed by hand: clap cannot express
//! `-oi`, `-bs` or `-fADDR`. Pure: arguments in, [`Flags`] or a
//! [`UsageError`] out.
//!
//! Short options follow getopt(3) as sendmail uses it: flags without a
//! value may be clustered (`-ti`), a value may be attached (`-fjon`) or be
//! the next argument (`-f jon`), and a flag taking a value ends its cluster
//! (`-tfjon` is `-t -f jon`). The options end at `--` or at the first
//! recipient, as getopt(3) ends them without GNU's permutation (sendmail's
//! and Postfix's rule): whatever follows is a recipient, even if it starts
//! with `-`. postie's own long options (`--hostname NAME`,
//! `--hostname=NAME`) are collected for the `cli` layer, which validates
//! them (and refuses those the sendmail command line may not set).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use super::client::Dsn;
use super::message::parse_address_list;
use crate::smtp::{EnvId, Mailbox, Notify, Ret};

/// What to do, chosen by `-b`, `-q`, `-I` or the program's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Read a message on stdin and submit it (`-bm`, the default).
    #[default]
    Submit,
    /// One SMTP session on stdin/stdout (`-bs`).
    Smtp,
    /// The daemon (`-bd`, `-bD`): `postie serve`.
    Daemon,
    /// Say how each recipient would be delivered (`-bv`).
    Verify,
    /// List the queue (`-bp`, `mailq`): postie has none.
    PrintQueue,
    /// Check the aliases file (`-bi`, `-I`, `newaliases`).
    InitAliases,
    /// Run the queue (`-q`, `-qR...`, `-qS...`, `-qI...`).
    RunQueue,
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The program's name decides what it does without flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Sendmail,
    Newaliases,
    Mailq,
}

impl Personality {
    /// The personality of a program called `argv0` (its base name).
    pub fn from_argv0(argv0: &OsStr) -> Option<Personality> {
        let name = std::path::Path::new(argv0).file_name()?;
        match name.to_str()? {
            "sendmail" => Some(Personality::Sendmail),
            "newaliases" => Some(Personality::Newaliases),
            "mailq" => Some(Personality::Mailq),
            _ => None,
        }
    }

    fn default_action(self) -> Action {
        match self {
            Personality::Sendmail => Action::Submit,
            Personality::Newaliases => Action::InitAliases,
            Personality::Mailq => Action::PrintQueue,
        }
    }
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    pub action: Action,
    /// `-t`: recipients from the To:, Cc: and Bcc: header fields too.
    pub extract: bool,
    /// `-i`, `-oi`, `-O IgnoreDots`: a line of a single dot does not end
    /// the message.
    pub ignore_dots: bool,
    /// `-f`/`-r`: the envelope sender, as given (`<>` or empty for the
    /// null sender).
    pub sender: Option<String>,
    /// `-F`: the full name for an added From: field.
    pub full_name: Option<String>,
    /// `-C FILE`: postie's configuration file.
    pub config: Option<OsString>,
    /// `-v`: show the SMTP dialog on stderr.
    pub verbose: bool,
    /// `-N`, `-R`, `-V`: the DSN parameters (RFC 3461) of the submission.
    pub dsn: Dsn,
    /// The recipients on the command line, each argument parsed as an
    /// address list (`"Jon <jon@host>, alice"` is two).
    pub recipients: Vec<String>,
    /// postie's own long options, each as one `--name=value` (or `--name`)
    /// argument, for `cli::parse`.
    pub postie_args: Vec<OsString>,
    /// What `-q` said besides "run the queue".
    pub queue: QueueRun,
}

/// What the `-q` options said, sendmail 8's: `-q` (and `-qf`, in the
/// foreground, which is the only way postie runs it) runs every entry;
/// `-qRsubstr`, `-qSsubstr`, `-qIsubstr` only those with a recipient,
/// the sender or the queue id holding the substring (`-qR substr`, as a
/// separate argument, too); `-q30m` (`-q1h30m`, `-qp30m`), an interval:
/// with `-bd`, the daemon's `--queue-run-interval`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRun {
    /// `-qTIME`: the interval, in seconds (0: none, as `-q0`).
    pub interval: Option<u64>,
    /// `-qI`: queue ids holding any of these (lowercase: ids are).
    pub ids: Vec<String>,
    /// `-qR`: a recipient address holding this.
    pub recipient: Option<String>,
    /// `-qS`: the sender address holding this.
    pub sender: Option<String>,
}

/// A command line that cannot be obeyed: exit 64 (EX_USAGE) with a usage
/// line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// An option sendmail does not have, or postie does not support.
    Unknown(String),
    /// An option missing its value.
    MissingValue(String),
    /// An argument that is not UTF-8 where text is needed.
    NotUtf8(String),
    /// A message to send, but nobody to send it to.
    NoRecipients,
    /// One of postie's options that only the configuration file may set
    /// (`--spool`, ...: [`super::SYSTEM_OPTIONS`]).
    SystemOption(String),
    /// A `-f`/`-r` sender that is not an address: it and why.
    BadSender(String, &'static str),
    /// A `-N`, `-R` or `-V` value that is not one: the option, the value
    /// and what it must be.
    BadDsn(char, String, &'static str),
    /// An option of sendmail's that postie does not have: it and why.
    Unsupported(String, &'static str),
    /// Recipients given with `-q`.
    RecipientsWithQueueRun,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Unknown(o) => write!(f, "unknown option {o}"),
            UsageError::MissingValue(o) => write!(f, "option {o} needs a value"),
            UsageError::NotUtf8(a) => write!(f, "argument {a:?} is not valid UTF-8"),
            UsageError::NoRecipients => f.write_str("no recipients given (and no -t)"),
            UsageError::SystemOption(o) => write!(
                f,
                "option {o} cannot be given to sendmail; it is set in the configuration file"
            ),
            UsageError::BadSender(a, why) => write!(f, "{a}... bad sender address: {why}"),
            UsageError::BadDsn(c, v, why) => write!(f, "invalid -{c} value {v:?}: {why}"),
            UsageError::Unsupported(o, why) => write!(f, "option {o} is not supported: {why}"),
            UsageError::RecipientsWithQueueRun => f.write_str(
                "no recipients with -q: it runs the queue (-qR substr picks entries by recipient)",
            ),
        }
    }
}

impl std::error::Error for UsageError {}

/// A `-f`/`-r` sender, parsed as the server parses MAIL FROM (audit of
/// "postie 5": `-f 'a@b> SIZE=1'` added a parameter): the address, or
/// `None` for the null sender (`<>` or empty). The one place `-f` is
/// read: checked here at parse time, parsed again by this when the
/// envelope is made.
pub fn sender(given: &str) -> Result<Option<Mailbox>, UsageError> {
    super::client::sender_path(given).map_err(|e| UsageError::BadSender(given.to_owned(), e.0))
}

/// The usage line printed after a usage error.
pub const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F full-name] \
[-N dsn] [-R ret] [-V envid] [-bm | -bs | -bd | -bv | -bp | -bi] \
[-q[f|time] | -qR substr | -qS substr | -qI substr] [-C file] [--postie-option ...] [--] \
[recipient ...]";

/// sendmail's flags without a value: `-t`, `-i`, `-v`, and those accepted
/// and ignored (`-m` "me too", `-n` no aliasing, `-G` gateway, `-U` initial
/// user submission).
const NO_VALUE: &[u8] = b"tivmnGUI";
/// Flags with a value. `-B` body type, `-L` syslog label, `-h` hop
/// count, `-e` error mode, `-d` debugging, `-X` traffic log, `-p`
/// protocol and `-O` options other than IgnoreDots are accepted and
/// ignored.
const WITH_VALUE: &[u8] = b"fFrbCoOBNRVLhedXp";

/// Parses `args` (without the program name). `long_option(name)` says
/// whether postie has the long option `--name`: `None` if not,
/// `Some(true)` if it takes a value.
pub fn parse(
    personality: Personality,
    args: &[OsString],
    long_option: &dyn Fn(&str) -> Option<bool>,
) -> Result<Flags, UsageError> {
    let mut flags = Flags::default();
    let mut action: Option<Action> = None;
    let mut queue_run = false;
    let mut i = 0;
    let next = |i: &mut usize| -> Option<&OsString> {
        *i += 1;
        args.get(*i)
    };
    while i < args.len() {
        let raw = &args[i];
        let bytes = raw.as_encoded_bytes();
        if bytes == b"--" {
            for r in &args[i + 1..] {
                add_recipients(&mut flags, r)?;
            }
            break;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&b| b == b'=') {
                Some(eq) => (&long[..eq], Some(OsStr::from_bytes(&long[eq + 1..]))),
                None => (long, None),
            };
            let name = utf8(OsStr::from_bytes(name))?;
            match (name, long_option(name)) {
                ("help", _) => action = Some(Action::Help),
                ("version", _) => action = Some(Action::Version),
                (_, None) => return Err(UsageError::Unknown(format!("--{name}"))),
                (_, Some(false)) if inline.is_some() => {
                    return Err(UsageError::Unknown(raw.to_string_lossy().into_owned()));
                }
                (_, Some(false)) => flags.postie_args.push(raw.clone()),
                (_, Some(true)) => {
                    // Always `--name=value`, so that a value starting with
                    // `-` is not taken for an option by the next parser.
                    let value = match inline {
                        Some(v) => v.to_owned(),
                        None => next(&mut i)
                            .cloned()
                            .ok_or_else(|| UsageError::MissingValue(format!("--{name}")))?,
                    };
                    let mut arg = OsString::from(format!("--{name}="));
                    arg.push(value);
                    flags.postie_args.push(arg);
                }
            }
            i += 1;
            continue;
        }
        if bytes.len() < 2 || bytes[0] != b'-' {
            if bytes == b"-" {
                return Err(UsageError::Unknown("-".into()));
            }
            // The first recipient ends the options: every argument after
            // it is a recipient, whatever it looks like (getopt's POSIX
            // rule, which sendmail and Postfix follow). Scripts run by
            // root put arguments they did not write after the options.
            for r in &args[i..] {
                add_recipients(&mut flags, r)?;
            }
            break;
        }
        // A cluster of short options.
        let text = utf8(raw)?;
        for (at, c) in text[1..].char_indices() {
            let rest = &text[1 + at + c.len_utf8()..];
            if c == 'q' {
                // `-q`, `-q30m`, `-qIid`: an optional attached value.
                queue_run = true;
                let mut value = || next(&mut i).map(|v| utf8(v).map(str::to_owned));
                queue_option(&mut flags.queue, rest, &mut value)?;
                break;
            }
            if c.is_ascii() && NO_VALUE.contains(&(c as u8)) {
                match c {
                    't' => flags.extract = true,
                    'i' => flags.ignore_dots = true,
                    'v' => flags.verbose = true,
                    'I' => action = Some(Action::InitAliases),
                    _ => {}
                }
                continue;
            }
            if !(c.is_ascii() && WITH_VALUE.contains(&(c as u8))) {
                return Err(UsageError::Unknown(format!("-{c}")));
            }
            let value: String = if !rest.is_empty() {
                rest.to_owned()
            } else {
                match next(&mut i) {
                    Some(v) => utf8(v)?.to_owned(),
                    None => return Err(UsageError::MissingValue(format!("-{c}"))),
                }
            };
            match c {
                'f' | 'r' => {
                    sender(&value)?;
                    flags.sender = Some(value)
                }
                'F' => flags.full_name = Some(value),
                'N' | 'R' | 'V' => dsn_flag(&mut flags.dsn, c, &value)?,
                'C' => flags.config = Some(OsString::from(value)),
                'b' => action = Some(b_mode(&value)?),
                'o' => {
                    if let Some(v) = value.strip_prefix('i') {
                        flags.ignore_dots = truth(v);
                    }
                }
                'O' => {
                    let (name, v) = value.split_once('=').unwrap_or((&value, ""));
                    if name.trim().eq_ignore_ascii_case("IgnoreDots") {
                        flags.ignore_dots = truth(v.trim());
                    }
                }
                _ => {}
            }
            break;
        }
        i += 1;
    }
    flags.action = action.unwrap_or(if queue_run {
        Action::RunQueue
    } else {
        personality.default_action()
    });
    let needs_recipients = match flags.action {
        Action::Submit => !flags.extract,
        Action::Verify => true,
        _ => false,
    };
    if needs_recipients && flags.recipients.is_empty() {
        return Err(UsageError::NoRecipients);
    }
    if flags.action == Action::RunQueue && !flags.recipients.is_empty() {
        // As Postfix's sendmail ("flush mode requires no recipient").
        return Err(UsageError::RecipientsWithQueueRun);
    }
    Ok(flags)
}

/// `-N never|success,failure,delay`, `-R full|hdrs`, `-V envid`, as
/// sendmail reads them: any case, the NOTIFY list in any order (a later
/// `-N` replaces an earlier one), `-R` at most once ("Duplicate -R flag"),
/// the envelope id already xtext as it goes into ENVID= (sendmail checks
/// it with xtextok; Postfix's sendmail takes plain text). A bad value is
/// a usage error, as in sendmail.
fn dsn_flag(dsn: &mut Dsn, c: char, value: &str) -> Result<(), UsageError> {
    let bad = |why| UsageError::BadDsn(c, value.to_owned(), why);
    match c {
        'N' => {
            dsn.notify = Some(Notify::parse(value).ok_or(bad(
                "never, or a list of success, failure, delay separated by commas",
            ))?);
        }
        'R' if dsn.ret.is_some() => return Err(bad("-R given twice")),
        'R' => dsn.ret = Some(Ret::parse(value).ok_or(bad("full or hdrs"))?),
        _ => dsn.envid = Some(EnvId::parse(value).map_err(bad)?),
    }
    Ok(())
}

/// Reads one `-q` option: `value` is what follows the `q` in its
/// argument; `next` gives the next argument, for `-qR substr`.
fn queue_option(
    q: &mut QueueRun,
    value: &str,
    next: &mut dyn FnMut() -> Option<Result<String, UsageError>>,
) -> Result<(), UsageError> {
    let option = format!("-q{value}");
    let unsupported = |why| Err(UsageError::Unsupported(option.clone(), why));
    let Some(letter) = value.chars().next() else {
        return Ok(());
    };
    match letter {
        'f' if value.len() == 1 => Ok(()),
        '!' => unsupported("postie picks entries by what they hold, not by what they lack"),
        'G' => unsupported("postie has one queue, no queue groups"),
        'Q' => unsupported("postie quarantines nothing"),
        'I' | 'R' | 'S' => {
            let substr = match &value[1..] {
                "" => next().ok_or_else(|| UsageError::MissingValue(option.clone()))??,
                attached => attached.to_owned(),
            };
            if substr.is_empty() {
                return Err(UsageError::MissingValue(option));
            }
            let once = |slot: &mut Option<String>| match slot {
                Some(_) => unsupported("one substring for each of -qR and -qS"),
                None => {
                    *slot = Some(substr.clone());
                    Ok(())
                }
            };
            match letter {
                'I' => {
                    q.ids.push(substr.to_ascii_lowercase());
                    Ok(())
                }
                'R' => once(&mut q.recipient),
                _ => once(&mut q.sender),
            }
        }
        // A persistent runner: the daemon's runner is one; `-qp` alone
        // runs the queue once, as `-q`.
        'p' if value.len() == 1 => Ok(()),
        'p' => set_interval(q, &value[1..], &option),
        '0'..='9' => set_interval(q, value, &option),
        _ => Err(UsageError::Unknown(option)),
    }
}

fn set_interval(q: &mut QueueRun, time: &str, option: &str) -> Result<(), UsageError> {
    let secs = queue_interval(time).ok_or_else(|| UsageError::Unknown(option.to_owned()))?;
    q.interval = Some(secs);
    Ok(())
}

/// sendmail's time for `-q`: numbers each with a unit (`s`, `m`, `h`,
/// `d`, `w`), summed (`1h30m`); a number without one is minutes, as
/// sendmail reads it.
fn queue_interval(time: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = time;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        let (unit, tail) = match rest[digits..].chars().next() {
            Some(u) => (u, &rest[digits + 1..]),
            None => ('m', ""),
        };
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(scale)?)?;
        rest = tail;
    }
    (total <= 10 * 365 * 86_400).then_some(total)
}

/// The mode of `-bX`.
fn b_mode(value: &str) -> Result<Action, UsageError> {
    Ok(match value {
        "m" => Action::Submit,
        "s" => Action::Smtp,
        "d" | "D" => Action::Daemon,
        "v" => Action::Verify,
        "p" => Action::PrintQueue,
        "i" => Action::InitAliases,
        _ => return Err(UsageError::Unknown(format!("-b{value}"))),
    })
}

/// sendmail's boolean option values: empty (the option alone) and words
/// starting with t or y are true.
fn truth(v: &str) -> bool {
    v.is_empty() || v.starts_with(['t', 'T', 'y', 'Y'])
}

fn utf8(a: &OsStr) -> Result<&str, UsageError> {
    a.to_str()
        .ok_or_else(|| UsageError::NotUtf8(a.to_string_lossy().into_owned()))
}

fn add_recipients(flags: &mut Flags, arg: &OsStr) -> Result<(), UsageError> {
    flags.recipients.extend(parse_address_list(utf8(arg)?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// postie's long options in these tests: `--spool` and `--hostname`
    /// take a value.
    fn long(name: &str) -> Option<bool> {
        match name {
            "spool" | "hostname" | "submit-socket" => Some(true),
            _ => None,
        }
    }

    fn p(args: &[&str]) -> Result<Flags, UsageError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(Personality::Sendmail, &args, &long)
    }

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn table() {
        let base = || Flags {
            recipients: rcpts(&["jon"]),
            ..Flags::default()
        };
        let cases: Vec<(&[&str], Flags)> = vec![
            (&["jon"], base()),
            (
                &["-t"],
                Flags {
                    extract: true,
                    recipients: vec![],
                    ..base()
                },
            ),
            (
                &["-t", "-i", "jon"],
                Flags {
                    extract: true,
                    ignore_dots: true,
                    ..base()
                },
            ),
            (
                &["-ti", "jon"],
                Flags {
                    extract: true,
                    ignore_dots: true,
                    ..base()
                },
            ),
            (
                &["-it", "jon"],
                Flags {
                    extract: true,
                    ignore_dots: true,
                    ..base()
                },
            ),
            (
                &["-oi", "jon"],
                Flags {
                    ignore_dots: true,
                    ..base()
                },
            ),
            (
                &["-o", "i", "jon"],
                Flags {
                    ignore_dots: true,
                    ..base()
                },
            ),
            (
                &["-OIgnoreDots=true", "jon"],
                Flags {
                    ignore_dots: true,
                    ..base()
                },
            ),
            (&["-oem", "-odi", "-oQ/var/spool", "jon"], base()),
            (
                &["-f", "cron@host", "jon"],
                Flags {
                    sender: Some("cron@host".into()),
                    ..base()
                },
            ),
            (
                &["-fcron@host", "jon"],
                Flags {
                    sender: Some("cron@host".into()),
                    ..base()
                },
            ),
            (
                &["-r", "<>", "jon"],
                Flags {
                    sender: Some("<>".into()),
                    ..base()
                },
            ),
            (
                &["-f", "", "jon"],
                Flags {
                    sender: Some(String::new()),
                    ..base()
                },
            ),
            (
                &["-tfcron", "jon"],
                Flags {
                    extract: true,
                    sender: Some("cron".into()),
                    ..base()
                },
            ),
            (
                &["-ti", "-f", "a@b", "jon"],
                Flags {
                    extract: true,
                    ignore_dots: true,
                    sender: Some("a@b".into()),
                    ..base()
                },
            ),
            // Debian cron: -FCronDaemon -i -B8BITMIME -oem.
            (
                &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "jon"],
                Flags {
                    full_name: Some("CronDaemon".into()),
                    ignore_dots: true,
                    ..base()
                },
            ),
            (
                &["-F", "Jon Doe", "jon"],
                Flags {
                    full_name: Some("Jon Doe".into()),
                    ..base()
                },
            ),
            (
                &["-N", "never", "-R", "hdrs", "-V", "id1", "-v", "-m", "jon"],
                Flags {
                    verbose: true,
                    dsn: Dsn {
                        notify: Some(Notify::Never),
                        ret: Some(Ret::Hdrs),
                        envid: EnvId::parse("id1").ok(),
                    },
                    ..base()
                },
            ),
            (
                &["-NDelay,SUCCESS", "-RFULL", "-VQ+2B1", "jon"],
                Flags {
                    dsn: Dsn {
                        notify: Notify::parse("SUCCESS,DELAY"),
                        ret: Some(Ret::Full),
                        envid: EnvId::parse("Q+2B1").ok(),
                    },
                    ..base()
                },
            ),
            (
                &["-N", "success", "-N", "failure", "-tVx", "jon"],
                Flags {
                    extract: true,
                    dsn: Dsn {
                        notify: Notify::parse("FAILURE"),
                        envid: EnvId::parse("x").ok(),
                        ..Dsn::default()
                    },
                    ..base()
                },
            ),
            (
                &["-C", "/etc/postie/test.conf", "jon"],
                Flags {
                    config: Some("/etc/postie/test.conf".into()),
                    ..base()
                },
            ),
            (
                &["-bs"],
                Flags {
                    action: Action::Smtp,
                    recipients: vec![],
                    ..base()
                },
            ),
            (
                &["-bd", "-q30m"],
                Flags {
                    action: Action::Daemon,
                    recipients: vec![],
                    queue: QueueRun {
                        interval: Some(1800),
                        ..QueueRun::default()
                    },
                    ..base()
                },
            ),
            (
                &["-q"],
                Flags {
                    action: Action::RunQueue,
                    recipients: vec![],
                    ..base()
                },
            ),
            (
                &["-bp"],
                Flags {
                    action: Action::PrintQueue,
                    recipients: vec![],
                    ..base()
                },
            ),
            (
                &["-bi"],
                Flags {
                    action: Action::InitAliases,
                    recipients: vec![],
                    ..base()
                },
            ),
            (
                &["-I"],
                Flags {
                    action: Action::InitAliases,
                    recipients: vec![],
                    ..base()
                },
            ),
            (
                &["-bv", "jon"],
                Flags {
                    action: Action::Verify,
                    ..base()
                },
            ),
            (
                &["-bm", "jon"],
                Flags {
                    action: Action::Submit,
                    ..base()
                },
            ),
            // postie's own options, in both forms, before the recipients.
            (
                &["--spool", "/tmp/s", "--hostname=h.example", "jon"],
                Flags {
                    postie_args: vec!["--spool=/tmp/s".into(), "--hostname=h.example".into()],
                    ..base()
                },
            ),
            // Options end at the first recipient (getopt's POSIX rule, as
            // sendmail and Postfix parse): what follows is addresses, even
            // when it looks like an option. A root cron job that passes
            // one argument it did not write must not be steered by it.
            (
                &[
                    "-i",
                    "root",
                    "-C/tmp/evil.conf",
                    "--spool=/root/.ssh",
                    "-f",
                    "--",
                ],
                Flags {
                    ignore_dots: true,
                    recipients: rcpts(&[
                        "root",
                        "-C/tmp/evil.conf",
                        "--spool=/root/.ssh",
                        "-f",
                        "--",
                    ]),
                    ..Flags::default()
                },
            ),
            (
                &["jon", "-bs"],
                Flags {
                    recipients: rcpts(&["jon", "-bs"]),
                    ..Flags::default()
                },
            ),
            // Everything after `--` is a recipient.
            (
                &["--", "jon", "-t"],
                Flags {
                    recipients: rcpts(&["jon", "-t"]),
                    ..Flags::default()
                },
            ),
            // An argument is an address list.
            (
                &["Jon Doe <jon@h.example>, alice", "bob"],
                Flags {
                    recipients: rcpts(&["jon@h.example", "alice", "bob"]),
                    ..Flags::default()
                },
            ),
            (
                &["--help"],
                Flags {
                    action: Action::Help,
                    recipients: vec![],
                    ..base()
                },
            ),
        ];
        for (args, want) in cases {
            assert_eq!(p(args), Ok(want), "{args:?}");
        }
    }

    #[test]
    fn errors() {
        const NOTIFY: &str = "never, or a list of success, failure, delay separated by commas";
        let bad_dsn = |c, v: &str, why| UsageError::BadDsn(c, v.to_owned(), why);
        let long_envid = "e".repeat(101);
        let long_args = ["-V", long_envid.as_str(), "jon"];
        let cases: Vec<(&[&str], UsageError)> = vec![
            (&["-x", "jon"], UsageError::Unknown("-x".into())),
            (&["-tx", "jon"], UsageError::Unknown("-x".into())),
            (&["-bt", "jon"], UsageError::Unknown("-bt".into())),
            (&["-"], UsageError::Unknown("-".into())),
            (&["--bogus", "jon"], UsageError::Unknown("--bogus".into())),
            (&["-f"], UsageError::MissingValue("-f".into())),
            (&["--spool"], UsageError::MissingValue("--spool".into())),
            (&[], UsageError::NoRecipients),
            (&["-i", "-f", "a@b"], UsageError::NoRecipients),
            (&["-bv"], UsageError::NoRecipients),
            (&["-N"], UsageError::MissingValue("-N".into())),
            (&["-N", "always", "jon"], bad_dsn('N', "always", NOTIFY)),
            (
                &["-N", "never,success", "jon"],
                bad_dsn('N', "never,success", NOTIFY),
            ),
            (&["-Nsuccess,", "jon"], bad_dsn('N', "success,", NOTIFY)),
            (&["-R", "body", "jon"], bad_dsn('R', "body", "full or hdrs")),
            (
                &["-Rfull", "-Rhdrs", "jon"],
                bad_dsn('R', "hdrs", "-R given twice"),
            ),
            (
                &["-V", "my id", "jon"],
                bad_dsn(
                    'V',
                    "my id",
                    "ENVID is not xtext (+XX with upper-case hex digits)",
                ),
            ),
            (
                &["-V", "a+2b", "jon"],
                bad_dsn(
                    'V',
                    "a+2b",
                    "ENVID is not xtext (+XX with upper-case hex digits)",
                ),
            ),
            (
                &long_args,
                bad_dsn('V', &long_envid, "ENVID longer than 100 characters"),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(p(args), Err(want), "{args:?}");
        }
    }

    /// sendmail 8's `-q` options: the substrings attached or (postie's
    /// leniency) as the next argument, several letters together, times
    /// with units summed (minutes without one); what postie has not is
    /// refused by name.
    #[test]
    fn queue_runs() {
        let q = |args: &[&str]| {
            let f = p(args).unwrap();
            assert_eq!(f.action, Action::RunQueue, "{args:?}");
            f.queue
        };
        assert_eq!(q(&["-q"]), QueueRun::default());
        assert_eq!(q(&["-qf"]), QueueRun::default());
        assert_eq!(q(&["-qp"]), QueueRun::default());
        assert_eq!(
            q(&["-qSroot", "-qR", "biff@here", "-qI0069", "-qIABC"]),
            QueueRun {
                sender: Some("root".into()),
                recipient: Some("biff@here".into()),
                ids: vec!["0069".into(), "abc".into()],
                interval: None,
            }
        );
        assert_eq!(q(&["-iqRjon"]).recipient.as_deref(), Some("jon"));
        for (arg, secs) in [
            ("-q30m", 1800),
            ("-q1h30m", 5400),
            ("-q90", 5400),
            ("-q45s", 45),
            ("-q1d", 86_400),
            ("-qp15m", 900),
            ("-q0", 0),
        ] {
            assert_eq!(q(&[arg]).interval, Some(secs), "{arg}");
        }
        // With -bd, the interval is the daemon's; the action -bd's.
        let f = p(&["-q1h", "-bd"]).unwrap();
        assert_eq!((f.action, f.queue.interval), (Action::Daemon, Some(3600)));

        let unsupported = |args: &[&str], option: &str| match p(args) {
            Err(UsageError::Unsupported(o, _)) => assert_eq!(o, option, "{args:?}"),
            other => panic!("{args:?}: {other:?}"),
        };
        unsupported(&["-q!Rjon"], "-q!Rjon");
        unsupported(&["-q!", "Rjon"], "-q!");
        unsupported(&["-qGmain"], "-qGmain");
        unsupported(&["-qQspam"], "-qQspam");
        unsupported(&["-qRa", "-qRb"], "-qRb");
        for (args, want) in [
            (&["-qR"][..], UsageError::MissingValue("-qR".into())),
            (&["-qS", ""], UsageError::MissingValue("-qS".into())),
            (&["-q30x"], UsageError::Unknown("-q30x".into())),
            (&["-q1h30x"], UsageError::Unknown("-q1h30x".into())),
            (&["-qx"], UsageError::Unknown("-qx".into())),
            (&["-q", "jon"], UsageError::RecipientsWithQueueRun),
            (&["-qRjon", "jon"], UsageError::RecipientsWithQueueRun),
        ] {
            assert_eq!(p(args), Err(want), "{args:?}");
        }
    }

    #[test]
    fn personalities() {
        let none: Vec<OsString> = vec![];
        let a = |p| parse(p, &none, &long).unwrap().action;
        assert_eq!(a(Personality::Newaliases), Action::InitAliases);
        assert_eq!(a(Personality::Mailq), Action::PrintQueue);
        assert!(parse(Personality::Sendmail, &none, &long).is_err());
        for (name, want) in [
            ("/usr/sbin/sendmail", Some(Personality::Sendmail)),
            ("/usr/lib/sendmail", Some(Personality::Sendmail)),
            ("newaliases", Some(Personality::Newaliases)),
            ("/usr/bin/mailq", Some(Personality::Mailq)),
            ("/usr/sbin/postie", None),
            ("sendmail.postie", None),
        ] {
            assert_eq!(Personality::from_argv0(OsStr::new(name)), want, "{name}");
        }
    }

    #[test]
    fn non_utf8_recipient_is_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![OsString::from_vec(vec![b'j', 0xff])];
        assert!(matches!(
            parse(Personality::Sendmail, &args, &long),
            Err(UsageError::NotUtf8(_))
        ));
    }
}
