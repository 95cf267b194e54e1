//! The sendmail(8) command line: postie installed as `/usr/sbin/sendmail`
//! (and `newaliases`, `mailq`), or run as `postie sendmail ARGS...`, for
//! cron, mail(1) and scripts.
//!
//! A message given on stdin is submitted over SMTP, as a client of postie
//! itself, so that it goes through the same transaction code as mail from
//! the network ([`client`]):
//!
//! * to the running daemon on its Unix socket (`--submit-socket`,
//!   `/run/postie/submit.sock`), which learns who is submitting from
//!   `SO_PEERCRED`; this works for any user, without a setuid binary;
//! * when there is no daemon and we are root, to an in-process session
//!   (`Service::run_session` on one end of a socket pair), which delivers
//!   directly: root's cron mail on a host that runs postie from inetd
//!   only. It reads only the system's configuration: the options that say
//!   where mail goes ([`SYSTEM_OPTIONS`]) are refused on the command line,
//!   and root reads a `-C` file only if root owns it ([`root_may_read`]);
//!   the options end at the first recipient ([`args`]);
//! * otherwise not at all: a clear message on stderr and EX_TEMPFAIL, never
//!   a message lost in silence.
//!
//! Before that, the message is made a proper RFC 5322 message
//! ([`message`]): From:, Date: and Message-ID: are added when missing, and
//! Bcc: is removed. Flags are parsed in [`args`].

pub mod args;
pub mod client;
pub mod message;

use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::CommandFactory;

pub use args::{Action, Flags, Personality, USAGE, UsageError};

use crate::aliases::Aliases;
use crate::cli::{self, Options};
use crate::config;
use crate::exit::{
    EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOUSER, EX_OK, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL,
};
use crate::listen;
use crate::recipients::Resolution;
use crate::smtp::Mailbox;
use crate::smtp::address::parse_path;
use crate::sys;
use client::Envelope;
use message::Message;

/// How long to wait for each reply of the daemon: more than its own bound
/// on a delivery (`--timeout-data-end`, 10 minutes by default).
const REPLY_TIMEOUT: Duration = Duration::from_secs(11 * 60);

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
/// after the word `sendmail`: where mailboxes are written, whose passwd
/// and aliases say who a recipient is, which daemon gets the message,
/// where messages are spooled, the mode of new mailboxes, who the
/// privilege-separated side runs as, and when another program's dotlock
/// may be broken. Root runs sendmail from cron and scripts, with arguments
/// it did not all write; these come from the configuration file only.
/// Every other option of postie's is harmless per call (a test checks that
/// each option is in one list or the other).
pub const SYSTEM_OPTIONS: &[&str] = &[
    "spool",
    "passwd",
    "aliases",
    "submit-socket",
    "mailbox-mode",
    "temp-dir",
    "user",
    "group",
    "stale-lock",
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
    Ok(Invocation {
        flags,
        opts: loaded.cli.opts,
        listen,
    })
}

/// Runs everything but `-bd` and root's `-bs`, which are postie's `serve`
/// and `inetd` modes (run by `main`), and returns the exit status.
pub fn run(inv: &Invocation) -> u8 {
    match inv.flags.action {
        Action::Submit => submit(inv),
        Action::Verify => verify(&inv.opts, &inv.flags.recipients),
        Action::PrintQueue => {
            println!("Mail queue is empty");
            EX_OK
        }
        Action::RunQueue => EX_OK,
        Action::InitAliases => check_aliases(&inv.opts.aliases),
        Action::Help => {
            println!("{USAGE}");
            EX_OK
        }
        Action::Version => {
            println!("postie {}", env!("CARGO_PKG_VERSION"));
            EX_OK
        }
        Action::Smtp => relay_smtp(&inv.opts),
        Action::Daemon => {
            eprintln!("postie: internal error: -bd is the serve mode");
            EX_SOFTWARE
        }
    }
}

/// The user running us, from the passwd database by real uid.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invoker {
    name: String,
    full_name: Option<String>,
}

impl Invoker {
    fn current() -> Invoker {
        let uid = nix::unistd::getuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) => {
                let gecos = u.gecos.to_string_lossy().into_owned();
                let full_name = gecos_name(&gecos, &u.name);
                Invoker {
                    name: u.name,
                    full_name,
                }
            }
            // No passwd entry (a container's arbitrary uid): the number,
            // which the daemon will see through SO_PEERCRED all the same.
            _ => Invoker {
                name: uid.to_string(),
                full_name: None,
            },
        }
    }
}

/// The full name in a passwd GECOS field: its first comma-separated part,
/// with `&` standing for the capitalized user name (the BSD convention
/// finger(1) and sendmail follow).
fn gecos_name(gecos: &str, user: &str) -> Option<String> {
    let first = gecos.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        return None;
    }
    let mut cap = String::new();
    let mut cs = user.chars();
    if let Some(c) = cs.next() {
        cap.extend(c.to_uppercase());
        cap.push_str(cs.as_str());
    }
    Some(first.replace('&', &cap))
}

/// The envelope sender: `-f`/`-r` through the server's own parser
/// (qualified with our host name when it has no domain; empty for `<>`),
/// else the invoking user at our host.
fn envelope_sender(given: Option<&str>, me: &Invoker, host: &str) -> Result<String, String> {
    let Some(given) = given else {
        return Ok(user_address(&me.name, host));
    };
    match args::sender(given) {
        Ok(Some(mut m)) => {
            m.domain.get_or_insert_with(|| host.to_owned());
            Ok(m.to_string())
        }
        Ok(None) => Ok(String::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// `user@host`, the local part quoted if it must be.
fn user_address(user: &str, host: &str) -> String {
    Mailbox {
        local: user.to_owned(),
        domain: Some(host.to_owned()),
    }
    .to_string()
}

/// What [`prepare`] needs from the world, handed in so that it is pure.
struct Context<'a> {
    me: &'a Invoker,
    host: &'a str,
    now: SystemTime,
    pid: u32,
    random: u64,
}

/// The envelope and the message, ready for SMTP: recipients from the
/// command line and, with `-t`, the header; Bcc: removed; From:, Date:
/// and Message-ID: added when missing.
fn prepare(
    flags: &Flags,
    mut msg: Message,
    cx: &Context<'_>,
) -> Result<(Envelope, Message), String> {
    let mut recipients = flags.recipients.clone();
    if flags.extract {
        recipients.extend(msg.header_recipients());
    }
    // The same address twice gets the message once.
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_ascii_lowercase()));
    msg.remove_bcc();
    if recipients.is_empty() {
        return Err("no recipients in the To:, Cc: or Bcc: fields".into());
    }
    let sender = envelope_sender(flags.sender.as_deref(), cx.me, cx.host)?;
    for a in recipients.iter().chain([&sender]) {
        if a.chars().any(|c| c.is_control()) {
            return Err(format!("bad address {a:?}: control character"));
        }
    }
    if !msg.has("From") {
        // The -f address if given (and not <>), else the invoking user,
        // with the -F name or, for the invoking user, the GECOS name.
        let (addr, gecos) = match &flags.sender {
            Some(_) if !sender.is_empty() => (sender.clone(), None),
            _ => (user_address(&cx.me.name, cx.host), cx.me.full_name.clone()),
        };
        let value = match flags.full_name.clone().or(gecos) {
            Some(name) if !message::display_name(&name).is_empty() => {
                format!("{} <{addr}>", message::display_name(&name))
            }
            _ => addr,
        };
        msg.add("From", &value);
    }
    if !msg.has("Date") {
        msg.add("Date", &sys::localtime(cx.now).rfc5322());
    }
    if !msg.has("Message-ID") {
        let secs = cx
            .now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        msg.add(
            "Message-ID",
            &format!("<{secs}.{}.{:016x}@{}>", cx.pid, cx.random, cx.host),
        );
    }
    Ok((Envelope { sender, recipients }, msg))
}

/// The host name for addresses and the Message-ID, checked as
/// `config::service` checks it.
fn host_name(opts: &Options) -> Result<String, String> {
    let host = config::mail_name(opts.hostname.as_deref());
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("--hostname {host:?}: not a host name"));
    }
    Ok(host)
}

/// `sendmail [-t] [-i] ... recipients`: read, prepare, submit.
fn submit(inv: &Invocation) -> u8 {
    let (flags, opts) = (&inv.flags, &inv.opts);
    let host = match host_name(opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("postie: {e}");
            return EX_CONFIG;
        }
    };
    let lines = match message::read_lines(io::stdin().lock(), flags.ignore_dots, opts.max_size) {
        Ok(l) => l,
        Err(message::ReadError::TooBig(max)) => {
            eprintln!("postie: message not sent: larger than {max} octets (--max-size)");
            return EX_DATAERR;
        }
        Err(message::ReadError::Io(e)) => {
            eprintln!("postie: cannot read the message: {e}");
            return EX_IOERR;
        }
    };
    let me = Invoker::current();
    let cx = Context {
        me: &me,
        host: &host,
        now: SystemTime::now(),
        pid: std::process::id(),
        random: crate::sys::random_u64(),
    };
    let (env, msg) = match prepare(flags, Message::parse(lines), &cx) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postie: message not sent: {e}");
            return EX_DATAERR;
        }
    };
    let data = msg.to_smtp();
    let root = nix::unistd::geteuid().is_root();
    let socket = opts.submit_socket.display();
    // The daemon's socket, or None for root's in-process delivery.
    let daemon = match UnixStream::connect(&opts.submit_socket) {
        Ok(s) => match untrusted_peer(&s, &opts.user) {
            None => Some(s),
            Some(why) if root => {
                log::warn!("{socket}: {why}; delivering directly");
                eprintln!("postie: warning: {socket}: {why}; delivering directly");
                None
            }
            Some(why) => {
                log::error!("{socket}: {why}");
                eprintln!("postie: cannot submit to {socket}: {why}; message not sent");
                return EX_TEMPFAIL;
            }
        },
        Err(e) if no_daemon(&e) => {
            if !root {
                eprintln!(
                    "postie: cannot submit: no postie daemon at {socket} ({e}), and only root can \
                     deliver directly; message not sent"
                );
                return EX_TEMPFAIL;
            }
            None
        }
        Err(e) => {
            eprintln!("postie: cannot submit to {socket}: {e}; message not sent");
            return EX_TEMPFAIL;
        }
    };
    let result = match daemon {
        Some(s) => over_socket(&s, &env, &data, flags.verbose),
        None => match in_process(opts, &env, &data, flags.verbose) {
            Ok(r) => r,
            Err(code) => return code,
        },
    };
    match result {
        Ok(sent) => {
            eprint!("{}", sent.report());
            sent.exit_code()
        }
        Err(e) => {
            eprint!("{}", e.report());
            e.exit_code()
        }
    }
}

/// Why the server at the other end of `s` is not to be trusted with a
/// message, if it is not (audit of "postie 5": a socket in a directory
/// others may write can be anybody's). Its uid (SO_PEERCRED: who made
/// the listening socket) must be root's, that of postie's SMTP side
/// (`--user`, resolved as the daemon does), or our own when we are not
/// root.
fn untrusted_peer(s: &UnixStream, user: &str) -> Option<String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let uid = match getsockopt(s, PeerCredentials) {
        Ok(c) => c.uid(),
        Err(e) => return Some(format!("cannot tell who listens there: {e}")),
    };
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || (me != 0 && uid == me) || smtp_side_uid(user) == Some(uid) {
        return None;
    }
    Some(format!(
        "the server there runs as uid {uid}, neither root nor postie's user ({user}); \
         not submitting to it"
    ))
}

/// The uid of `--user` as the daemon resolves it.
fn smtp_side_uid(user: &str) -> Option<u32> {
    let user = cli::SmtpSideUser::resolve(user).ok()?.user()?;
    Some(user.uid.as_raw())
}

/// Nobody listens at the socket path: no daemon (as opposed to one we may
/// not talk to).
fn no_daemon(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn over_socket(
    s: &UnixStream,
    env: &Envelope,
    data: &[u8],
    trace: bool,
) -> Result<client::Sent, client::Error> {
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    s.set_write_timeout(Some(REPLY_TIMEOUT))?;
    client::submit(BufReader::new(s), s, env, data, trace)
}

/// Root without a daemon: the same SMTP dialog with a session of our own,
/// on a thread at the other end of a socket pair. Delivery is the daemon's
/// code, run here.
fn in_process(
    opts: &Options,
    env: &Envelope,
    data: &[u8],
    trace: bool,
) -> Result<Result<client::Sent, client::Error>, u8> {
    let service = config::service(opts).map_err(|e| {
        eprintln!("postie: {e}; message not sent");
        EX_CONFIG
    })?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| {
        eprintln!("postie: cannot deliver: {e}; message not sent");
        EX_OSERR
    })?;
    // As a daemon would at start: undo what a crash interrupted.
    service.delivery().recover();
    let service = &service;
    // The signals that end or stop the process are held off this thread,
    // and so off the session's, for the dialog: a signal taken by a thread
    // that is not delivering would end or stop the whole process with
    // mailboxes locked. One that comes meanwhile takes effect after.
    let held = sys::hold_delivery_signals();
    let result = std::thread::scope(|scope| {
        let (reader, writer) = listen::halves(std::sync::Arc::new(theirs));
        scope.spawn(move || service.run_session(reader, writer, None));
        let result = over_socket(&ours, env, data, trace);
        // The session ends at QUIT, or at end of file if we left early.
        let _ = ours.shutdown(std::net::Shutdown::Both);
        result
    });
    service.delivery().close();
    drop(held);
    Ok(result)
}

/// `-bs` when not root: the SMTP session on stdin/stdout is relayed to the
/// daemon's socket, so that an ordinary user's session is a submission the
/// daemon can attribute (SO_PEERCRED). Nothing is written to stderr, which
/// may be the client's connection (inetd).
fn relay_smtp(opts: &Options) -> u8 {
    sys::silence_stderr();
    let stream = match UnixStream::connect(&opts.submit_socket) {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "-bs: cannot reach the daemon at {}: {e}",
                opts.submit_socket.display()
            );
            let host = config::mail_name(opts.hostname.as_deref());
            let mut out = io::stdout().lock();
            let _ = write!(
                out,
                "421 4.3.2 {host} No mail daemon to talk to (not running?), try again later\r\n"
            );
            let _ = out.flush();
            return EX_TEMPFAIL;
        }
    };
    if let Some(why) = untrusted_peer(&stream, &opts.user) {
        log::error!("-bs: {}: {why}", opts.submit_socket.display());
        let host = config::mail_name(opts.hostname.as_deref());
        let mut out = io::stdout().lock();
        let _ = write!(
            out,
            "421 4.3.2 {host} The mail daemon's socket is not trusted, try again later\r\n"
        );
        let _ = out.flush();
        return EX_TEMPFAIL;
    }
    let up = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::error!("-bs: {e}");
            return EX_OSERR;
        }
    };
    // Client to daemon; when the client is done, tell the daemon. The
    // thread is not waited for: the session ends when the daemon closes.
    std::thread::spawn(move || {
        let mut up = up;
        let _ = io::copy(&mut io::stdin().lock(), &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    // Daemon to client, flushed as it comes.
    let mut down = &stream;
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match down.read(&mut buf) {
            Ok(0) => return EX_OK,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    return EX_IOERR;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::error!("-bs: {e}");
                return EX_IOERR;
            }
        }
    }
}

/// `-bv`: how each recipient would be delivered.
fn verify(opts: &Options, recipients: &[String]) -> u8 {
    let service = match config::service(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postie: {e}");
            return EX_CONFIG;
        }
    };
    let mut permanent = false;
    let mut temporary = false;
    for r in recipients {
        let mailbox = match parse_path(r) {
            Ok((Some(m), rest)) if rest.trim().is_empty() => m,
            Ok((Some(_), _)) => {
                println!("{r}... bad address: junk after the address");
                permanent = true;
                continue;
            }
            Ok((None, _)) => {
                println!("{r}... bad address: the null address is no recipient");
                permanent = true;
                continue;
            }
            Err(e) => {
                println!("{r}... bad address: {}", e.0);
                permanent = true;
                continue;
            }
        };
        match service.recipients().resolve(&mailbox) {
            Resolution::Local(users) => {
                let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
                let s = if names.len() == 1 { "" } else { "s" };
                println!("{r}... deliverable: local user{s} {}", names.join(", "));
            }
            Resolution::Unknown => {
                match service.recipients().why_unknown(&mailbox) {
                    Some(why) => println!("{r}... User unknown ({why})"),
                    None => println!("{r}... User unknown"),
                }
                permanent = true;
            }
            Resolution::NotLocal => {
                println!("{r}... not deliverable: not a local domain (postie does not relay)");
                permanent = true;
            }
            Resolution::TempFail(why) => {
                println!("{r}... temporary failure: {why}");
                temporary = true;
            }
        }
    }
    if permanent {
        EX_NOUSER
    } else if temporary {
        EX_TEMPFAIL
    } else {
        EX_OK
    }
}

/// `-bi`, `newaliases`: postie reads the aliases file itself (and re-reads
/// it when it changes), so there is no database to build; this checks the
/// file and reports what the daemon will make of it.
fn check_aliases(path: &Path) -> u8 {
    if path.as_os_str().is_empty() {
        println!("postie: aliases are disabled (--aliases is empty)");
        return EX_OK;
    }
    let source = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => {
            let (aliases, warnings) = Aliases::parse(&String::from_utf8_lossy(&bytes), &source);
            for w in &warnings {
                eprintln!("postie: {w}");
            }
            let plural = |n: usize, one: &str, many: &str| {
                format!("{n} {}", if n == 1 { one } else { many })
            };
            println!(
                "{source}: {}, {}",
                plural(aliases.len(), "alias", "aliases"),
                plural(warnings.len(), "warning", "warnings")
            );
            EX_OK
        }
        // As for the daemon: a missing file is no aliases.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            println!("{source}: no such file; no aliases");
            EX_OK
        }
        Err(e) => {
            eprintln!("postie: cannot read {source}: {e}");
            EX_CONFIG
        }
    }
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

    #[test]
    fn gecos() {
        assert_eq!(gecos_name("Jon Doe,,,", "jon"), Some("Jon Doe".into()));
        assert_eq!(
            gecos_name("& Smith,room 1", "jon"),
            Some("Jon Smith".into())
        );
        assert_eq!(gecos_name(",,,", "jon"), None);
        assert_eq!(gecos_name("", "jon"), None);
    }

    #[test]
    fn senders() {
        let me = Invoker {
            name: "jon".into(),
            full_name: None,
        };
        let s = |g: Option<&str>| envelope_sender(g, &me, "h.example").unwrap();
        assert_eq!(s(None), "jon@h.example");
        assert_eq!(s(Some("cron@x.example")), "cron@x.example");
        assert_eq!(s(Some("<cron@x.example>")), "cron@x.example");
        assert_eq!(s(Some("daemon")), "daemon@h.example");
        assert_eq!(s(Some("<>")), "");
        assert_eq!(s(Some("")), "");
        let odd = Invoker {
            name: "a b".into(),
            full_name: None,
        };
        assert_eq!(envelope_sender(None, &odd, "h").unwrap(), "\"a b\"@h");
        assert!(envelope_sender(Some("a@b> SIZE=1"), &me, "h").is_err());
    }

    fn cx<'a>(me: &'a Invoker) -> Context<'a> {
        Context {
            me,
            host: "h.example",
            now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            pid: 42,
            random: 0xabc,
        }
    }

    fn prep(flags: Flags, text: &str) -> Result<(Envelope, String), String> {
        let me = Invoker {
            name: "jon".into(),
            full_name: Some("Jon Doe".into()),
        };
        let lines = message::read_lines(text.as_bytes(), flags.ignore_dots, 1 << 20).unwrap();
        let (env, msg) = prepare(&flags, Message::parse(lines), &cx(&me))?;
        Ok((env, String::from_utf8(msg.to_smtp()).unwrap()))
    }

    fn to(list: &[&str]) -> Flags {
        Flags {
            recipients: list.iter().map(|s| (*s).to_owned()).collect(),
            ..Flags::default()
        }
    }

    #[test]
    fn missing_fields_are_added() {
        let (env, text) = prep(to(&["alice"]), "Subject: hi\n\nbody\n").unwrap();
        assert_eq!(env.sender, "jon@h.example");
        assert_eq!(env.recipients, vec!["alice"]);
        let date = sys::localtime(UNIX_EPOCH + Duration::from_secs(1_800_000_000)).rfc5322();
        assert_eq!(
            text,
            format!(
                "Subject: hi\r\nFrom: Jon Doe <jon@h.example>\r\nDate: {date}\r\n\
                 Message-ID: <1800000000.42.0000000000000abc@h.example>\r\n\r\nbody\r\n"
            )
        );
    }

    #[test]
    fn present_fields_are_kept() {
        let (_, text) = prep(
            to(&["alice"]),
            "from: Me <me@x>\ndate: Mon, 1 Jan 2024 00:00:00 +0000\nmessage-id: <a@b>\n\nbody\n",
        )
        .unwrap();
        assert_eq!(
            text,
            "from: Me <me@x>\r\ndate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
             message-id: <a@b>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn sender_and_names() {
        let flags = Flags {
            sender: Some("cron@x.example".into()),
            ..to(&["alice"])
        };
        let (env, text) = prep(flags.clone(), "\n").unwrap();
        assert_eq!(env.sender, "cron@x.example");
        // -f without -F: no GECOS name of somebody else.
        assert!(text.starts_with("From: cron@x.example\r\n"), "{text}");
        let flags = Flags {
            full_name: Some("Cron Daemon".into()),
            ..flags
        };
        let (_, text) = prep(flags, "\n").unwrap();
        assert!(
            text.starts_with("From: Cron Daemon <cron@x.example>\r\n"),
            "{text}"
        );
        // -F without -f names the invoking user.
        let flags = Flags {
            full_name: Some("Doe, J.".into()),
            ..to(&["alice"])
        };
        let (_, text) = prep(flags, "\n").unwrap();
        assert!(
            text.starts_with("From: \"Doe, J.\" <jon@h.example>\r\n"),
            "{text}"
        );
        // The null sender: MAIL FROM:<>, From: the user.
        let flags = Flags {
            sender: Some("<>".into()),
            ..to(&["alice"])
        };
        let (env, text) = prep(flags, "\n").unwrap();
        assert_eq!(env.sender, "");
        assert!(
            text.starts_with("From: Jon Doe <jon@h.example>\r\n"),
            "{text}"
        );
    }

    #[test]
    fn extract_recipients_and_remove_bcc() {
        let flags = Flags {
            extract: true,
            ..to(&["carol"])
        };
        let (env, text) = prep(
            flags,
            "To: Alice <alice@h.example>, jon\nCc: undisclosed-recipients:;\n\
             Bcc: secret@h.example,\n  carol\nSubject: s\n\nbody\n",
        )
        .unwrap();
        assert_eq!(
            env.recipients,
            vec!["carol", "alice@h.example", "jon", "secret@h.example"]
        );
        assert!(!text.contains("Bcc"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.starts_with(
            "To: Alice <alice@h.example>, jon\r\nCc: undisclosed-recipients:;\r\nSubject: s\r\n"
        ));
    }

    #[test]
    fn bcc_is_removed_without_t_too() {
        let (env, text) = prep(to(&["alice"]), "Bcc: secret\nSubject: s\n\nb\n").unwrap();
        assert_eq!(env.recipients, vec!["alice"]);
        assert!(!text.contains("secret"));
    }

    #[test]
    fn t_without_any_recipient_is_an_error() {
        let flags = Flags {
            extract: true,
            ..Flags::default()
        };
        let e = prep(flags, "Subject: nobody\n\nb\n").unwrap_err();
        assert!(e.contains("no recipients"), "{e}");
    }

    #[test]
    fn control_characters_in_addresses_are_refused() {
        let flags = Flags {
            sender: Some("a@b>\r\nRCPT TO:<x".into()),
            ..to(&["alice"])
        };
        assert!(prep(flags, "\n").is_err());
        let flags = Flags {
            extract: true,
            ..Flags::default()
        };
        assert!(prep(flags, "To: a\u{1}b@h\n\nx\n").is_err());
    }

    #[test]
    fn lone_dot() {
        let (_, text) = prep(to(&["a"]), "Subject: s\n\none\n.\ntwo\n").unwrap();
        assert!(text.ends_with("\r\n\r\none\r\n"), "{text}");
        let flags = Flags {
            ignore_dots: true,
            ..to(&["a"])
        };
        let (_, text) = prep(flags, "Subject: s\n\none\n.\ntwo\n").unwrap();
        assert!(text.ends_with("\r\n\r\none\r\n..\r\ntwo\r\n"), "{text}");
    }

    #[test]
    fn duplicates_are_sent_once() {
        let flags = Flags {
            extract: true,
            ..to(&["jon", "Jon"])
        };
        let (env, _) = prep(flags, "To: jon, alice\n\nx\n").unwrap();
        assert_eq!(env.recipients, vec!["jon", "alice"]);
    }
}
