//! `postie`: wiring only. Arguments → configuration (command line over
//! file over defaults) → logging → mode → exit status (sysexits.h).
//!
//! Called `sendmail`, `newaliases` or `mailq` (links to postie), or as
//! `postie sendmail ARGS...`, it takes sendmail's command line instead
//! (`postie::sendmail`).

#![deny(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use postie::check::{self, SpoolAccess, Verdict};
use postie::cli::{self, Cli, LogTo, Mode, SmtpSideUser};
use postie::config::{self, Loaded};
use postie::exit::{
    EX_CONFIG, EX_DATAERR, EX_NOUSER, EX_OK, EX_OSERR, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE,
};
use postie::sendmail::{self, Action};
use postie::{listen, maillog, queue_runner, queue_tool, server, sys};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(call) = sendmail::Call::from_argv(&argv) {
        return run_sendmail(call);
    }
    let cl = match cli::command_line(argv.iter().cloned()) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { EX_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Mode::Sendmail { args } = &cl.cli.mode {
        return run_sendmail(sendmail::Call::from_suffix(&argv, args.clone()));
    }
    let inetd = on_stdio(&cl.cli.mode);
    if inetd {
        // stderr is the client's socket under inetd; nothing may reach it,
        // not even a panic message.
        sys::silence_stderr();
    }
    let checking = matches!(cl.cli.mode, Mode::Check { .. });
    let (log_to, log_level) = (cl.cli.opts.log_to, cl.cli.opts.log_level);
    let conf = match config::load(cl) {
        Ok(c) => c,
        Err(e) if checking => return report(&check::Report::config_error(&e)),
        Err(e) => {
            // Logged as the command line alone says, the file being wrong.
            let sink = maillog::choose(log_to, inetd);
            maillog::init(sink, log_level, !inetd);
            return config_error(&e.to_string(), inetd, sink);
        }
    };
    if let Mode::Check { address } = &conf.cli.mode {
        return report(&check::run(&conf, address.as_deref()));
    }
    if let Mode::Queue { action } = &conf.cli.mode {
        // A command, as sendmail's: logged to syslog unless told otherwise.
        let opts = &conf.cli.opts;
        let sink = match opts.log_to {
            LogTo::Stderr => maillog::Sink::Stderr,
            _ => maillog::Sink::Syslog,
        };
        maillog::init(sink, opts.log_level, false);
        return ExitCode::from(queue_tool::run(&conf, action.as_ref()));
    }
    run(conf)
}

/// True for the modes that may have their client on stdin/stdout, and
/// perhaps on stderr too: `inetd`, and `lmtp` without `--listen`.
fn on_stdio(mode: &Mode) -> bool {
    match mode {
        Mode::Inetd => true,
        Mode::Lmtp { listen } => listen.is_empty(),
        _ => false,
    }
}

/// Runs `serve`, `inetd` or `lmtp`.
fn run(conf: Loaded) -> ExitCode {
    let inetd = on_stdio(&conf.cli.mode);
    if inetd {
        sys::silence_stderr();
    }
    let opts = &conf.cli.opts;
    let sink = maillog::choose(opts.log_to, inetd);
    maillog::init(sink, opts.log_level, !inetd);
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    if let Err(e) = sys::drop_supplementary_groups() {
        log::error!("cannot drop supplementary groups: {e}");
        return ExitCode::from(EX_OSERR);
    }
    let mut service = match conf.service() {
        Ok(s) => s,
        Err(e) => return config_error(&e.to_string(), inetd, sink),
    };
    service.session.lmtp = matches!(conf.cli.mode, Mode::Lmtp { .. });
    // The key is read here, before the SMTP side drops its privileges.
    // Not for a session on pipes (root's sendmail -bs): STARTTLS is for
    // TCP clients, and a certificate it would not use must not fail it.
    let pipes = matches!(conf.cli.mode, Mode::Inetd) && !listen::stdin_is_socket();
    let service = match if pipes { Ok(None) } else { conf.tls() } {
        Ok(Some(t)) => service.with_tls(t.tls, t.files, t.require),
        Ok(None) => service,
        Err(e) => return config_error(&e.to_string(), inetd, sink),
    };
    // As the delivery process will write: before the first RCPT gets 250.
    match check::spool_access(&opts.spool) {
        SpoolAccess::Good => {}
        // Under inetd this runs at every connection: said at debug level
        // there (each refused recipient's RCPT logs why in any case).
        SpoolAccess::Partial(why) if inetd => log::debug!("{why}"),
        SpoolAccess::Partial(why) => {
            log::warn!("{why}");
            if sink != maillog::Sink::Stderr {
                eprintln!("postie: warning: {why}");
            }
        }
        SpoolAccess::Unusable(why) => return config_error(&why, inetd, sink),
    }
    let unprivileged = match unprivileged_user(&opts.user, opts.group.as_deref()) {
        Ok(u) => u,
        Err(e) => return config_error(&e, inetd, sink),
    };
    let result = match &conf.cli.mode {
        Mode::Inetd => inetd_session(service, unprivileged),
        Mode::Serve { listen } => {
            let every = Duration::from_secs(opts.queue_run_interval);
            serve(service, unprivileged, listen, &opts.submit_socket, every)
        }
        Mode::Lmtp { listen } => {
            let every = Duration::from_secs(opts.queue_run_interval);
            let group = opts.lmtp_socket_group.as_deref();
            lmtp(service, unprivileged, listen, group, every)
        }
        Mode::Check { .. } | Mode::Sendmail { .. } | Mode::Queue { .. } => {
            unreachable!("handled in main")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            // Once: not again when the log line went to stderr.
            if !inetd && sink != maillog::Sink::Stderr {
                eprintln!("postie: {e}");
            }
            ExitCode::from(EX_OSERR)
        }
    }
}

/// Logs a configuration error, prints it on stderr too unless the log
/// goes there, and gives EX_CONFIG. In inetd mode stderr is the client:
/// it gets a 421 on stdout instead, not a silent close.
fn config_error(e: &str, inetd: bool, sink: maillog::Sink) -> ExitCode {
    log::error!("{e}");
    if inetd {
        use std::io::Write;
        let reply = postie::smtp::reply::misconfigured().to_wire();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(reply.as_bytes()).and_then(|_| out.flush());
    } else if sink != maillog::Sink::Stderr {
        eprintln!("postie: {e}");
    }
    ExitCode::from(EX_CONFIG)
}

/// Prints `postie check`'s findings on stdout and gives its exit status.
fn report(r: &check::Report) -> ExitCode {
    for f in &r.findings {
        println!("{f}");
    }
    ExitCode::from(match r.verdict {
        Verdict::Ok => EX_OK,
        Verdict::BadAddress => EX_DATAERR,
        Verdict::NoUser => EX_NOUSER,
        Verdict::NotLocal => EX_UNAVAILABLE,
        Verdict::TempFail => EX_TEMPFAIL,
        Verdict::Config => EX_CONFIG,
    })
}

/// The user to drop to: name, uid, gid.
type Unprivileged = Option<(String, u32, u32)>;

/// Started as root, the SMTP side runs as `user` (privilege separation);
/// not root, there is nothing to drop.
fn unprivileged_user(user: &str, group: Option<&str>) -> Result<Unprivileged, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let found = unprivileged_uid(user)?;
    let Some(group) = group else {
        return Ok(found);
    };
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) if g.gid.as_raw() != 0 => g.gid.as_raw(),
        Ok(Some(_)) => return Err(format!("--group {group}: must not be root")),
        Ok(None) => return Err(format!("--group {group}: no such group")),
        Err(e) => return Err(format!("--group {group}: {e}")),
    };
    Ok(found.map(|(name, uid, _)| (name, uid, gid)))
}

/// The user part of [`unprivileged_user`].
fn unprivileged_uid(user: &str) -> Result<Unprivileged, String> {
    let found = |u: nix::unistd::User| Some((u.name, u.uid.as_raw(), u.gid.as_raw()));
    match SmtpSideUser::resolve(user) {
        Ok(SmtpSideUser::Named(u)) if !u.uid.is_root() => Ok(found(u)),
        Ok(SmtpSideUser::Named(_)) => Err(format!("--user {user}: must not be root")),
        Ok(SmtpSideUser::Nobody(nobody)) => {
            // The package creates _postie; a hand-started postie on a host
            // without it still never speaks SMTP as root.
            log::warn!("user _postie does not exist; the SMTP side runs as nobody");
            nobody
                .map(found)
                .ok_or_else(|| "neither _postie nor nobody exists".into())
        }
        Ok(SmtpSideUser::Missing) => Err(format!(
            "--user {user}: no such user; create it (adduser --system --group {user}) or name another"
        )),
        Err(e) => Err(format!("--user {user}: {e}")),
    }
}

/// The sendmail command line. `-bd` is `serve` and root's `-bs` is
/// `inetd`; everything else is `sendmail::run`.
fn run_sendmail(call: sendmail::Call) -> ExitCode {
    let inv = match sendmail::parse(call) {
        Ok(inv) => inv,
        Err(sendmail::ParseError::Usage(e)) => {
            eprintln!("postie: {e}");
            eprintln!("{}", sendmail::USAGE);
            return ExitCode::from(EX_USAGE);
        }
        Err(sendmail::ParseError::Cli(e)) => {
            let code = if e.use_stderr() { EX_USAGE } else { EX_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
        Err(sendmail::ParseError::Config(e)) => {
            eprintln!("postie: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        Err(sendmail::ParseError::SmtpConfig(e)) => {
            // -bs: the client is on stdin/stdout and, as in inetd mode,
            // perhaps on stderr too. It gets inetd's 421; the log the rest.
            sys::silence_stderr();
            let sink = maillog::Sink::Syslog;
            maillog::init(sink, log::LevelFilter::Info, false);
            return config_error(&e.to_string(), true, sink);
        }
    };
    let root = nix::unistd::geteuid().is_root();
    match inv.flags.action {
        Action::Daemon => {
            let mode = Mode::Serve { listen: inv.listen };
            return run(Loaded::without_file(Cli {
                opts: inv.opts,
                mode,
            }));
        }
        Action::Smtp if root => {
            let mode = Mode::Inetd;
            return run(Loaded::without_file(Cli {
                opts: inv.opts,
                mode,
            }));
        }
        _ => {}
    }
    // A command, not a daemon: log to syslog unless told otherwise
    // (`--log stderr`); what the user must see is printed on stderr.
    let sink = match (inv.flags.action, inv.opts.log_to) {
        (Action::Smtp, _) => maillog::Sink::Syslog,
        (_, LogTo::Stderr) => maillog::Sink::Stderr,
        _ => maillog::Sink::Syslog,
    };
    // Without syslog, nothing said on stderr: it is the caller's output
    // (cron mails any), and said at every message.
    maillog::init(sink, inv.opts.log_level, false);
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
        eprintln!("postie: internal error: {info}");
    }));
    if let Err(e) = sys::drop_supplementary_groups() {
        eprintln!("postie: cannot drop supplementary groups: {e}");
        return ExitCode::from(EX_OSERR);
    }
    ExitCode::from(sendmail::run(&inv))
}

/// Splits off the delivery process when started as root (see
/// `privsep`); `inherited` are the descriptors it must not keep; with
/// `queue_runner`, the queue runner's interval, it runs the queue.
fn separate(
    service: server::Service,
    unprivileged: Unprivileged,
    inherited: &[std::os::fd::RawFd],
    queue_runner: Option<Duration>,
) -> std::io::Result<server::Service> {
    match unprivileged {
        Some((name, uid, gid)) => service.separate(&name, uid, gid, inherited, queue_runner),
        None => Ok(service),
    }
}

fn inetd_session(service: server::Service, unprivileged: Unprivileged) -> std::io::Result<()> {
    let io = listen::stdio()?;
    // One session per process: no queue runner (postie-queue.timer or
    // cron's sendmail -q runs the queue).
    let service = separate(service, unprivileged, &[0, 1], None)?;
    // Undo what a crash interrupted (in the delivery process, when
    // separated: this is then a no-op).
    service.delivery().recover();
    match io.peer {
        Some(ip) => service.run_tcp_session(io.reader, io.writer, ip, io.local),
        None => service.run_session(io.reader, io.writer, None),
    }
    service.delivery().close();
    Ok(())
}

fn serve(
    service: server::Service,
    unprivileged: Unprivileged,
    addrs: &[std::net::SocketAddr],
    submit: &std::path::Path,
    queue_run_interval: Duration,
) -> std::io::Result<()> {
    // Before any thread starts, so that every thread blocks these signals.
    let sigfd = server::signals()?;
    let (mut listeners, mut local) = listen::systemd()?;
    if let Some(l) = &local {
        if let Some(p) = l.local_addr().ok().as_ref().and_then(|a| a.as_pathname()) {
            log::info!(
                "accepting local submissions on {} (from systemd)",
                p.display()
            );
        }
    } else {
        // The submission socket is optional: without it, local programs
        // cannot submit through this daemon, but SMTP works.
        match submit.parent() {
            Some(dir) if dir.is_dir() => match listen::bind_unix(submit) {
                // Named here: the socket's own address is the private
                // directory it was bound in before the rename.
                Ok(l) => {
                    log::info!("accepting local submissions on {}", submit.display());
                    local = Some(l);
                }
                Err(e) => log::warn!("no local submission socket: {}: {e}", submit.display()),
            },
            _ => log::info!(
                "no local submission socket: {} has no directory",
                submit.display()
            ),
        }
    }
    if !addrs.is_empty() || listeners.is_empty() {
        let default = ["127.0.0.1:2525".parse().expect("valid address")];
        let addrs = if addrs.is_empty() && listeners.is_empty() {
            &default[..]
        } else {
            addrs
        };
        listeners.extend(listen::bind(addrs)?);
    }
    daemon(
        service,
        unprivileged,
        listeners,
        local,
        sigfd,
        queue_run_interval,
    )
}

/// `postie lmtp`: with `--listen`, a daemon on those addresses; without,
/// on systemd's sockets if it passed any (Accept=no), else one session on
/// stdin/stdout (inetd, systemd Accept=yes).
fn lmtp(
    service: server::Service,
    unprivileged: Unprivileged,
    addrs: &[cli::LmtpAddr],
    group: Option<&str>,
    queue_run_interval: Duration,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if addrs.is_empty() {
        match listen::systemd() {
            Ok((tcp, unix)) if !tcp.is_empty() || unix.is_some() => {
                let sigfd = server::signals()?;
                return daemon(service, unprivileged, tcp, unix, sigfd, queue_run_interval);
            }
            Ok(_) => {}
            // Accept=yes: fd 3 is the connection itself, on stdin too.
            Err(e) if e.kind() == ErrorKind::InvalidInput => log::debug!("{e}: LMTP on stdin"),
            Err(e) => return Err(e),
        }
        return inetd_session(service, unprivileged);
    }
    let sigfd = server::signals()?;
    let mut tcp = Vec::new();
    let mut paths = Vec::new();
    for a in addrs {
        match a {
            cli::LmtpAddr::Tcp(t) => tcp.push(*t),
            cli::LmtpAddr::Unix(p) => paths.push(p),
        }
    }
    let unix = match paths[..] {
        [] => None,
        [path] => Some(lmtp_socket(path, group)?),
        _ => {
            let why = "postie lmtp listens on one Unix socket at most";
            return Err(Error::new(ErrorKind::InvalidInput, why));
        }
    };
    let listeners = listen::bind(&tcp)?;
    daemon(
        service,
        unprivileged,
        listeners,
        unix,
        sigfd,
        queue_run_interval,
    )
}

/// The LMTP socket at `path`: mode 0660 and group `group` if given, else
/// 0600. Whoever can connect delivers with any sender, unmarked.
fn lmtp_socket(
    path: &std::path::Path,
    group: Option<&str>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::io::{Error, ErrorKind};
    let gid = match group.map(nix::unistd::Group::from_name) {
        None => None,
        Some(Ok(Some(g))) => Some(g.gid.as_raw()),
        Some(Ok(None)) => {
            let why = format!("--lmtp-socket-group {}: no such group", group.unwrap_or(""));
            return Err(Error::new(ErrorKind::NotFound, why));
        }
        Some(Err(e)) => return Err(e.into()),
    };
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    let l = listen::bind_unix_as(path, mode, gid)
        .map_err(|e| Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    log::info!("accepting LMTP on {} (mode {mode:04o})", path.display());
    Ok(l)
}

/// The daemon of `serve` and `lmtp` on its listening sockets: splits off
/// the delivery process (when root), recovers, runs the queue, and serves
/// until SIGTERM.
fn daemon(
    service: server::Service,
    unprivileged: Unprivileged,
    listeners: Vec<std::net::TcpListener>,
    local: Option<std::os::unix::net::UnixListener>,
    sigfd: nix::sys::signalfd::SignalFd,
    queue_run_interval: Duration,
) -> std::io::Result<()> {
    // Still single-threaded: split now, the delivery process keeping none
    // of the listening sockets.
    let mut inherited: Vec<std::os::fd::RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    inherited.extend(local.as_ref().map(|l| l.as_raw_fd()));
    inherited.push(sigfd.as_raw_fd());
    let separated = unprivileged.is_some();
    let service = Arc::new(separate(
        service,
        unprivileged,
        &inherited,
        Some(queue_run_interval),
    )?);
    // Undo what a crash interrupted, before accepting (in the delivery
    // process, when separated: this is then a no-op).
    service.delivery().recover();
    // The queue runner runs where delivery does: here when not separated
    // (else the delivery process started its own). Started after the
    // signals were blocked, as every thread here.
    let runner = if separated {
        None
    } else {
        let delivery = service.shared_delivery();
        Some(queue_runner::Runner::start(delivery, queue_run_interval)?)
    };
    let result = server::serve(
        listeners,
        local,
        service.clone(),
        sigfd,
        listen::notify_ready,
    );
    // No new run of the queue; one in progress finishes first.
    drop(runner);
    // Journals of processes that died while this one served are recovered
    // before it exits, and its idle journals removed (when separated, the
    // delivery process does both as it ends, and close waits for that).
    service.delivery().recover();
    service.delivery().close();
    result
}
