//! The command line: argv → validated [`Cli`]. Resolving it against the
//! system (host name, local domains, users) is [`crate::config`]'s job, and
//! so is the configuration file, whose keys are the long names of
//! [`Options`] and whose values go through the same clap value parsers.
//! One resolution is here, beside its option: what `--user` names
//! ([`SmtpSideUser`]), which the daemon, `postie check` and sendmail must
//! agree on.
//!
//! Sendmail's `-bs` (SMTP on stdin/stdout) and `-bd` (daemon) are accepted
//! as the first argument, for inetd.conf lines and scripts written for
//! sendmail; the whole sendmail command line comes with issue 3/4.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "postie",
    version,
    about = "A small MTA: SMTP in, local mbox delivery",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub opts: Options,
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Listen for SMTP connections (the daemon; also under systemd socket
    /// activation, where the sockets come from LISTEN_FDS).
    Serve {
        /// Address to listen on; repeatable. Default 127.0.0.1:2525 when
        /// systemd passes no sockets.
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<SocketAddr>,
    },
    /// One SMTP session on stdin/stdout (inetd, systemd Accept=yes; `-bs`).
    Inetd,
    /// LMTP (RFC 2033), for a Postfix or Exim in front: one session on
    /// stdin/stdout, or, with --listen or systemd's sockets, a daemon.
    Lmtp {
        /// Where to listen: HOST:PORT for TCP, or an absolute path for a
        /// Unix socket (at most one); repeatable.
        #[arg(long = "listen", id = "lmtp_listen", value_name = "ADDR",
              value_parser = parse_lmtp_addr)]
        listen: Vec<LmtpAddr>,
    },
    /// The sendmail(8) command line: `postie sendmail -t -i ...` does what
    /// `/usr/sbin/sendmail -t -i ...` (a link to postie) does.
    Sendmail {
        /// sendmail's flags and the recipients, parsed by
        /// `postie::sendmail`, not here.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Check the configuration, the spool and the aliases file; with an
    /// ADDRESS, say how mail to it would be delivered (like sendmail -bv).
    /// Findings go to stdout, one a line.
    Check {
        /// A recipient address, as in RCPT TO (`user`, `user@domain`).
        #[arg(value_name = "ADDRESS")]
        address: Option<String>,
    },
    /// Show, run, flush or delete queue entries (root only; run and flush
    /// also the queue directory's owner). Without an action, the queue
    /// listed as by mailq.
    Queue {
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
}

/// What `postie queue` does.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueAction {
    /// List the queue as mailq does; with IDs, each entry in full.
    Show {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Remove each entry named, for good (Postfix's postsuper -d).
    Delete {
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
    /// Deliver to the recipients whose next attempt is due (all entries,
    /// or those named), as the daemon's queue runner does; for
    /// postie-queue.timer where no daemon stays.
    Run(RunArgs),
    /// Try every pending recipient now, due or not (Postfix's postqueue
    /// -f; with IDs, postqueue -i; sendmail -q).
    Flush(RunArgs),
}

/// Which entries `postie queue run` and `flush` try.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Only entries with a pending recipient whose address holds this
    /// (case-insensitively; sendmail's -qR).
    #[arg(long, value_name = "SUBSTR")]
    pub recipient: Option<String>,
    /// Only entries whose sender holds this (sendmail's -qS).
    #[arg(long, value_name = "SUBSTR")]
    pub sender: Option<String>,
    /// Only these entries (queue ids, as mailq lists them).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
}

/// Where `postie lmtp` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddr {
    Tcp(SocketAddr),
    /// A Unix socket at this absolute path.
    Unix(PathBuf),
}

/// An absolute path is a Unix socket; anything else must be HOST:PORT.
fn parse_lmtp_addr(s: &str) -> Result<LmtpAddr, String> {
    if s.starts_with('/') {
        return Ok(LmtpAddr::Unix(PathBuf::from(s)));
    }
    s.parse()
        .map(LmtpAddr::Tcp)
        .map_err(|_| format!("{s:?}: want HOST:PORT or an absolute path"))
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogTo {
    /// syslog(3), facility mail.
    Syslog,
    /// Standard error (a foreground daemon only; never in inetd mode).
    Stderr,
    /// stderr when it is a terminal and the mode is `serve`, else syslog.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BareLfPolicy {
    /// A bare LF inside a message is taken as a line end.
    Accept,
    /// A message with a bare LF is refused with 550 5.6.0.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuotingArg {
    Mboxrd,
    Mboxo,
}

/// Options shared by every mode. Each one but `--config` can also be set
/// in the configuration file, under its long name.
#[derive(Debug, Args)]
pub struct Options {
    /// The configuration file. Default: /etc/postie/postie.conf, if it
    /// exists. Options on the command line override it.
    #[arg(short = 'C', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Mail spool directory; a user's mailbox is SPOOL/USER.
    #[arg(long, global = true, value_name = "DIR", default_value = "/var/mail")]
    pub spool: PathBuf,
    /// The queue directory, where a message waits for the recipients that
    /// could not take it at once: the delivery process's own (root's, mode
    /// 0700 when started as root).
    #[arg(long, global = true, value_name = "DIR", default_value = crate::queue::DEFAULT_DIR)]
    pub queue_dir: PathBuf,
    /// Seconds a delivery waits for busy mailboxes before it queues their
    /// recipients and delivers to the others (at most --lock-timeout).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_lock_wait: u64,
    /// How long a queued recipient is retried before the message is
    /// returned to its sender (sendmail's Timeout.queuereturn): a number
    /// with s, m, h, d or w (seconds without).
    #[arg(long, global = true, value_name = "TIME", default_value = "5d",
          value_parser = parse_duration)]
    pub queue_return: u64,
    /// After how long in the queue the sender is told that a message is
    /// delayed (sendmail's Timeout.queuewarn); 0: never.
    #[arg(long, global = true, value_name = "TIME", default_value = "0",
          value_parser = parse_duration)]
    pub delay_warning: u64,
    /// The wait before the first retry of a queued recipient; it doubles
    /// at each failed attempt (Postfix's minimal_backoff_time).
    #[arg(long, global = true, value_name = "TIME", default_value = "300s",
          value_parser = parse_duration)]
    pub minimal_backoff: u64,
    /// The longest wait between two attempts (maximal_backoff_time).
    #[arg(long, global = true, value_name = "TIME", default_value = "4000s",
          value_parser = parse_duration)]
    pub maximal_backoff: u64,
    /// How often the daemon looks at the queue for entries due, at most.
    #[arg(long, global = true, value_name = "TIME", default_value = "300s",
          value_parser = parse_duration)]
    pub queue_run_interval: u64,
    /// The largest message a bounce returns whole, in octets; a larger
    /// one comes back as its header (Postfix's bounce_size_limit).
    #[arg(long, global = true, value_name = "BYTES", default_value_t = crate::dsn::DEFAULT_RETURN_LIMIT)]
    pub return_limit: u64,
    /// Where program targets (`|command`) may be named: any of aliases,
    /// include, forward (Postfix's allow_mail_to_commands); empty: nowhere.
    #[arg(long, global = true, value_name = "SOURCES", default_value = "aliases, forward",
          value_parser = crate::aliases::Sources::parse)]
    pub allow_commands: crate::aliases::Sources,
    /// Where file targets (`/path`) may be named (allow_mail_to_files).
    #[arg(long, global = true, value_name = "SOURCES", default_value = "aliases, forward",
          value_parser = crate::aliases::Sources::parse)]
    pub allow_files: crate::aliases::Sources,
    /// The user that programs and files named by a root-owned aliases or
    /// :include: file run as (Postfix's default_privs); never root.
    #[arg(long, global = true, value_name = "USER", default_value = "nobody")]
    pub default_user: String,
    /// How long a program target may run before it is killed and its
    /// delivery retried (Postfix's command_time_limit).
    #[arg(long, global = true, value_name = "TIME", default_value = "1000s",
          value_parser = parse_duration)]
    pub command_time_limit: u64,
    /// The TLS certificate chain for STARTTLS, in PEM. Default: Debian's
    /// snakeoil certificate when it is there; an empty value: no STARTTLS.
    #[arg(long, global = true, value_name = "FILE",
          value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, in PEM; read as root, before the
    /// SMTP side drops its privileges.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Refuse MAIL before STARTTLS (530 5.7.0) on connections to this
    /// local port or address:port; repeatable.
    #[arg(long, global = true, value_name = "[ADDR:]PORT",
          value_parser = RequireTls::parse)]
    pub require_tls: Vec<RequireTls>,
    /// Seconds a STARTTLS handshake may take.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    pub timeout_tls: u64,
    /// Our name in the greeting, EHLO and Received:, and a local domain.
    /// Default: /etc/mailname, else the host's FQDN.
    #[arg(long, global = true, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Another local domain; repeatable.
    #[arg(long = "domain", global = true, value_name = "NAME")]
    pub domains: Vec<String>,
    /// Largest message accepted, in octets.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_size: u64,
    /// Recipients per message.
    #[arg(long, global = true, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_recipients: u32,
    /// Longest command line in octets, CRLF included (at least 512).
    #[arg(long, global = true, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(512..=65536))]
    pub max_line: u32,
    /// Errors tolerated in a session before 421 and close.
    #[arg(long, global = true, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_errors: u32,
    /// Concurrent SMTP connections over TCP in total.
    #[arg(long, global = true, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Concurrent connections on the submission socket, a cap of their own:
    /// remote clients filling --max-connections do not stop local mail.
    /// Root's submissions are not refused for this total.
    #[arg(long, global = true, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_local_connections: u32,
    /// Concurrent connections from one client: an IPv4 address, an IPv6
    /// /64, or a local user. A local user other than root also gets at most
    /// a quarter of --max-local-connections (at least 1).
    #[arg(long, global = true, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_client: u32,
    /// Seconds to wait for a command (RFC 5321 4.5.3.2.7).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 300)]
    pub timeout_command: u64,
    /// Seconds to wait for each block of message data (4.5.3.2.5).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 180)]
    pub timeout_data: u64,
    /// Longest time between the final dot and the reply: the bound on a
    /// whole delivery, lock waits included (4.5.3.2.6).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 600)]
    pub timeout_data_end: u64,
    /// Longest a whole session may last, however busy: then the next read
    /// gets 421 4.4.2 and the connection is closed.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 1800)]
    pub timeout_session: u64,
    /// Seconds to try for a mailbox lock before answering 451 4.2.0.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    pub lock_timeout: u64,
    /// Seconds after which another program's mailbox dotlock (USER.lock)
    /// is stale and removed.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 300)]
    pub stale_lock: u64,
    /// Message bytes held in memory; a larger message is spooled to an
    /// unnamed temporary file in --temp-dir.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub spill_threshold: u64,
    /// Directory for spooled messages. Default: $TMPDIR, else /tmp.
    #[arg(long, global = true, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// The aliases file, in aliases(5) syntax; an empty value disables
    /// aliases.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/aliases",
        // clap's path parser refuses an empty value, which means "none".
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub aliases: PathBuf,
    /// The Unix socket where local programs (postie as sendmail) submit
    /// mail over SMTP; the daemon listens there when its directory exists.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/run/postie/submit.sock"
    )]
    pub submit_socket: PathBuf,
    /// The group of `postie lmtp`'s Unix socket, which is then mode 0660
    /// (else 0600: its owner alone). Whoever may connect delivers mail with
    /// any sender: name the MTA's group only (postfix, Debian-exim).
    #[arg(long, global = true, value_name = "NAME")]
    pub lmtp_socket_group: Option<String>,
    /// The unprivileged user the SMTP side runs as when postie is started
    /// as root (privilege separation); delivery keeps root in a separate
    /// process.
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_USER)]
    pub user: String,
    /// The group of the SMTP side when started as root. Default: the
    /// --user's primary group.
    #[arg(long, global = true, value_name = "NAME")]
    pub group: Option<String>,
    /// Seconds running sessions may go on after SIGTERM.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// What to do with a bare LF line ending inside a message.
    #[arg(long, global = true, value_enum, default_value_t = BareLfPolicy::Accept)]
    pub bare_lf: BareLfPolicy,
    /// How `From ` lines inside messages are quoted in the mailbox.
    #[arg(long, global = true, value_enum, default_value_t = QuotingArg::Mboxrd)]
    pub quoting: QuotingArg,
    /// Separator of address extensions (user+tag); empty to disable.
    #[arg(long, global = true, value_name = "CHAR", default_value = "+")]
    pub extension_delimiter: String,
    /// Mode of newly created mailboxes, in octal.
    #[arg(long, global = true, value_name = "OCTAL", default_value = "600")]
    pub mailbox_mode: String,
    /// Look users up in FILE (passwd(5) format) instead of the system's
    /// passwd database; for tests and chroots.
    #[arg(long, global = true, value_name = "FILE")]
    pub passwd: Option<PathBuf>,
    /// Where log lines go.
    #[arg(long = "log", global = true, value_enum, default_value_t = LogTo::Auto)]
    pub log_to: LogTo,
    /// Least severe log level written (error, warn, info, debug, trace).
    #[arg(long, global = true, value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,
}

/// A time as the queue options take it: a number of seconds, or a number
/// with a unit, `s`, `m`, `h`, `d` or `w`, as Postfix's time parameters
/// and sendmail's timeouts are written (`5d`, `30m`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: a number with s, m, h, d or w")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: a number with s, m, h, d or w"))?;
    n.checked_mul(scale)
        .filter(|&t| t <= 10 * 365 * 86_400)
        .ok_or_else(|| format!("{s:?}: longer than ten years"))
}

/// A parsed command line, with what the configuration file layer
/// ([`crate::config::load`]) needs besides the values: the arguments (after
/// the sendmail rewrites) and clap's record of where each value came from.
#[derive(Debug)]
pub struct CommandLine {
    pub cli: Cli,
    pub args: Vec<OsString>,
    pub matches: ArgMatches,
}

impl CommandLine {
    /// True if the argument `id` (clap's id: the field name, `max_size`,
    /// or `listen` of `serve`) was given on the command line rather than
    /// left to its default.
    pub fn given(&self, id: &str) -> bool {
        let on = |m: &ArgMatches| {
            m.try_contains_id(id).is_ok() && m.value_source(id) == Some(ValueSource::CommandLine)
        };
        on(&self.matches) || self.matches.subcommand().is_some_and(|(_, m)| on(m))
    }
}

/// `--user`'s default, the account the postie package creates.
pub const DEFAULT_USER: &str = "_postie";

/// What `--user` names, as every part of postie resolves it: the daemon
/// dropping privileges, `postie check`, and sendmail deciding whether to
/// trust the daemon's socket. The default [`DEFAULT_USER`], on a host
/// without it, is `nobody`: a hand-started postie still never speaks SMTP
/// as root.
#[derive(Debug)]
pub enum SmtpSideUser {
    /// The user named.
    Named(nix::unistd::User),
    /// [`DEFAULT_USER`] does not exist; `nobody` stands in (`None`: no
    /// `nobody` either, or its lookup failed).
    Nobody(Option<nix::unistd::User>),
    /// Another name, and no such user.
    Missing,
}

impl SmtpSideUser {
    /// Looks `name` (the value of `--user`) up in the user database.
    pub fn resolve(name: &str) -> nix::Result<SmtpSideUser> {
        Self::resolve_with_default(name, DEFAULT_USER)
    }

    /// [`Self::resolve`], `default` standing for [`DEFAULT_USER`] (tests
    /// name one the host does not have).
    fn resolve_with_default(name: &str, default: &str) -> nix::Result<SmtpSideUser> {
        use nix::unistd::User;
        Ok(match User::from_name(name)? {
            Some(u) => SmtpSideUser::Named(u),
            None if name == default => {
                SmtpSideUser::Nobody(User::from_name("nobody").ok().flatten())
            }
            None => SmtpSideUser::Missing,
        })
    }

    /// The user the SMTP side runs as, if there is one.
    pub fn user(self) -> Option<nix::unistd::User> {
        match self {
            SmtpSideUser::Named(u) | SmtpSideUser::Nobody(Some(u)) => Some(u),
            SmtpSideUser::Nobody(None) | SmtpSideUser::Missing => None,
        }
    }
}

/// Sendmail's `-bs` and `-bd`, rewritten to the `inetd` and `serve` modes.
fn rewrite(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-bs") => OsString::from("inetd"),
            Some("-bd") => OsString::from("serve"),
            _ => a,
        })
        .collect()
}

/// clap's command for [`Cli`], which also takes serve's `--listen` before
/// the mode (`postie --listen ADDR serve`), like every other option; hidden
/// from the help, and moved to serve by [`from_matches`].
pub fn command() -> clap::Command {
    Cli::command().arg(
        clap::Arg::new("listen")
            .long("listen")
            .value_name("ADDR")
            .action(clap::ArgAction::Append)
            .value_parser(clap::value_parser!(SocketAddr))
            .hide(true),
    )
}

/// The [`Cli`] of matches of [`command`]: a `--listen` before the mode is
/// serve's (before any other mode, an error that says so).
pub fn from_matches(m: &ArgMatches) -> Result<Cli, clap::Error> {
    let mut cli = Cli::from_arg_matches(m)?;
    let Some(early) = m.get_many::<SocketAddr>("listen") else {
        return Ok(cli);
    };
    let mut early: Vec<SocketAddr> = early.copied().collect();
    match &mut cli.mode {
        Mode::Serve { listen } => {
            early.append(listen);
            *listen = early;
            Ok(cli)
        }
        _ => Err(command().error(
            clap::error::ErrorKind::ArgumentConflict,
            "--listen is an option of serve only: postie [OPTIONS] serve --listen ADDR",
        )),
    }
}

/// Parses `args` (the program name first), keeping what
/// [`crate::config::load`] needs to put the configuration file beneath it.
pub fn command_line<I: IntoIterator<Item = OsString>>(args: I) -> Result<CommandLine, clap::Error> {
    let args = rewrite(args);
    let matches = command().try_get_matches_from(&args)?;
    let cli = from_matches(&matches)?;
    Ok(CommandLine { cli, args, matches })
}

/// Parses `args` (the program name first), the command line alone: no
/// configuration file. Sendmail's `-bs` and `-bd` are rewritten to the
/// `inetd` and `serve` modes.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Cli, clap::Error> {
    command_line(args).map(|c| c.cli)
}

/// Where TLS is required before MAIL (`require-tls`): connections to a
/// local port, on any address or on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequireTls {
    pub ip: Option<std::net::IpAddr>,
    pub port: u16,
}

impl RequireTls {
    /// `587`, `127.0.0.1:587` or `[::1]:587`.
    pub fn parse(s: &str) -> Result<RequireTls, String> {
        let s = s.trim();
        if let Ok(port) = s.parse::<u16>() {
            return Ok(RequireTls { ip: None, port });
        }
        s.parse::<std::net::SocketAddr>()
            .map(|a| RequireTls {
                ip: Some(a.ip()),
                port: a.port(),
            })
            .map_err(|_| format!("{s:?} is not a port or an address:port"))
    }

    /// Whether a connection that came in on `local` must use TLS.
    pub fn covers(&self, local: std::net::SocketAddr) -> bool {
        let ip = match local.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(std::net::IpAddr::V6(v6)),
            v4 => v4,
        };
        local.port() == self.port && self.ip.is_none_or(|want| want == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_tls_names_a_port_or_an_address() {
        let any = RequireTls::parse("587").unwrap();
        let one = RequireTls::parse("127.0.0.1:587").unwrap();
        let v6 = RequireTls::parse("[::1]:25").unwrap();
        assert!(any.covers("192.0.2.1:587".parse().unwrap()));
        assert!(!any.covers("192.0.2.1:25".parse().unwrap()));
        assert!(one.covers("127.0.0.1:587".parse().unwrap()));
        assert!(one.covers("[::ffff:127.0.0.1]:587".parse().unwrap()));
        assert!(!one.covers("127.0.0.2:587".parse().unwrap()));
        assert!(v6.covers("[::1]:25".parse().unwrap()));
        for bad in ["", "x", "70000", "1.2.3.4", "1.2.3.4:x"] {
            assert!(RequireTls::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_times_take_units() {
        assert_eq!(parse_duration("300"), Ok(300));
        assert_eq!(parse_duration("300s"), Ok(300));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("4h"), Ok(14_400));
        assert_eq!(parse_duration("5d"), Ok(432_000));
        assert_eq!(parse_duration("1w"), Ok(604_800));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "d", "5x", "5 d", "-5", "5dd", "1.5h", "99999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let c = p(&["postie", "serve"]).unwrap();
        assert_eq!(c.opts.queue_return, 432_000);
        assert_eq!(c.opts.delay_warning, 0);
        let c = p(&["postie", "--queue-return", "2d", "serve"]).unwrap();
        assert_eq!(c.opts.queue_return, 172_800);
    }

    #[test]
    fn the_smtp_side_user_falls_back_to_nobody_for_the_default_only() {
        let absent = "postie-test-no-such-user";
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            println!(
                "SKIP the_smtp_side_user_falls_back_to_nobody_for_the_default_only: no user nobody"
            );
            return;
        };
        match SmtpSideUser::resolve("root").unwrap() {
            SmtpSideUser::Named(u) => assert!(u.uid.is_root()),
            other => panic!("root: {other:?}"),
        }
        match SmtpSideUser::resolve_with_default(absent, absent).unwrap() {
            SmtpSideUser::Nobody(Some(u)) => assert_eq!(u.uid, nobody.uid),
            other => panic!("missing default: {other:?}"),
        }
        assert!(matches!(
            SmtpSideUser::resolve(absent).unwrap(),
            SmtpSideUser::Missing
        ));
        assert_eq!(
            SmtpSideUser::resolve_with_default(absent, absent)
                .unwrap()
                .user()
                .map(|u| u.uid),
            Some(nobody.uid)
        );
        assert!(SmtpSideUser::Missing.user().is_none());
    }

    fn p(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(args.iter().map(OsString::from))
    }

    /// `postie lmtp --listen`: a path is a Unix socket, HOST:PORT TCP,
    /// anything else an error; without it, stdin/stdout.
    #[test]
    fn lmtp_listens_on_paths_and_ports() {
        let c = p(&[
            "postie",
            "lmtp",
            "--listen",
            "/run/postie/lmtp.sock",
            "--listen",
            "127.0.0.1:2424",
        ])
        .unwrap();
        let Mode::Lmtp { listen } = c.mode else {
            panic!("not lmtp");
        };
        assert_eq!(
            listen,
            [
                LmtpAddr::Unix("/run/postie/lmtp.sock".into()),
                LmtpAddr::Tcp("127.0.0.1:2424".parse().unwrap())
            ]
        );
        assert!(
            matches!(p(&["postie", "lmtp"]).unwrap().mode, Mode::Lmtp { listen } if listen.is_empty())
        );
        assert!(p(&["postie", "lmtp", "--listen", "lmtp.sock"]).is_err());
    }

    #[test]
    fn serve_with_listen_addresses() {
        let c = p(&[
            "postie",
            "serve",
            "--listen",
            "127.0.0.1:2525",
            "--listen",
            "[::1]:2525",
        ])
        .unwrap();
        match c.mode {
            Mode::Serve { listen } => assert_eq!(listen.len(), 2),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn global_options_before_or_after_the_mode() {
        let a = p(&["postie", "--spool", "/tmp/s", "inetd"]).unwrap();
        let b = p(&["postie", "inetd", "--spool", "/tmp/s"]).unwrap();
        assert_eq!(a.opts.spool, b.opts.spool);
        let q = p(&["postie", "check", "--queue-dir", "/tmp/q"]).unwrap();
        assert_eq!(q.opts.queue_dir, PathBuf::from("/tmp/q"));
    }

    #[test]
    fn sendmail_bs_is_inetd() {
        assert!(matches!(p(&["postie", "-bs"]).unwrap().mode, Mode::Inetd));
    }

    #[test]
    fn line_limit_below_512_is_refused() {
        assert!(p(&["postie", "--max-line", "100", "inetd"]).is_err());
        assert!(p(&["postie", "--max-line", "1000", "inetd"]).is_ok());
    }

    #[test]
    fn check_with_and_without_an_address() {
        match p(&["postie", "check"]).unwrap().mode {
            Mode::Check { address } => assert_eq!(address, None),
            m => panic!("{m:?}"),
        }
        match p(&["postie", "-C", "/x.conf", "check", "jon@example.org"])
            .unwrap()
            .mode
        {
            Mode::Check { address } => assert_eq!(address.as_deref(), Some("jon@example.org")),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn config_file_option_short_and_long() {
        let a = p(&["postie", "-C", "/a.conf", "inetd"]).unwrap();
        assert_eq!(a.opts.config, Some(PathBuf::from("/a.conf")));
        let b = p(&["postie", "inetd", "--config", "/b.conf"]).unwrap();
        assert_eq!(b.opts.config, Some(PathBuf::from("/b.conf")));
        assert_eq!(p(&["postie", "inetd"]).unwrap().opts.config, None);
    }

    #[test]
    fn empty_aliases_value_turns_aliases_off() {
        let c = p(&["postie", "--aliases", "", "inetd"]).unwrap();
        assert_eq!(c.opts.aliases, PathBuf::new());
    }

    #[test]
    fn given_tells_the_command_line_from_defaults() {
        let argv = [
            "postie",
            "--max-size",
            "5",
            "serve",
            "--domain",
            "a.example",
            "--listen",
            "127.0.0.1:1",
        ];
        let cl = command_line(argv.iter().map(OsString::from)).unwrap();
        assert!(cl.given("max_size"));
        assert!(cl.given("domains"), "a global option after the mode");
        assert!(cl.given("listen"));
        assert!(!cl.given("max_line"));
        assert!(!cl.given("no_such_id"));
    }

    #[test]
    fn listen_before_the_mode() {
        // Issue 5: every other option may come before the mode; so may
        // serve's --listen, adding to those after it.
        let c = p(&[
            "postie",
            "--listen",
            "127.0.0.1:1",
            "--spool",
            "/s",
            "serve",
            "--listen=[::1]:2",
        ])
        .unwrap();
        match c.mode {
            Mode::Serve { listen } => assert_eq!(
                listen,
                ["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()]
            ),
            m => panic!("{m:?}"),
        }
        let cl = command_line(
            ["postie", "--listen", "127.0.0.1:1", "serve"]
                .iter()
                .map(OsString::from),
        )
        .unwrap();
        assert!(cl.given("listen"));
        // Before another mode, it is an error naming serve's option.
        let e = p(&["postie", "--listen", "127.0.0.1:1", "inetd"]).unwrap_err();
        assert!(e.to_string().contains("serve --listen"), "{e}");
        assert!(!e.to_string().contains("--aliases"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = p(&["postie", "inetd"]).unwrap();
        assert_eq!(c.opts.spool, PathBuf::from("/var/mail"));
        assert_eq!(c.opts.queue_dir, PathBuf::from("/var/spool/postie"));
        assert_eq!(c.opts.max_size, 10 * 1024 * 1024);
        assert_eq!(c.opts.timeout_command, 300);
        assert_eq!(c.opts.timeout_data, 180);
        assert_eq!(c.opts.timeout_data_end, 600);
    }
}
