//! `postie`: wiring only. Arguments → configuration → logging → mode →
//! exit status (sysexits.h).

use std::process::ExitCode;
use std::sync::Arc;

use postie::cli::{self, Mode};
use std::os::fd::AsRawFd;

use postie::{config, listen, maillog, privsep, server, sys};

// sysexits.h
const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let inetd = matches!(args.mode, Mode::Inetd);
    if inetd {
        // stderr is the client's socket under inetd; nothing may reach it,
        // not even a panic message.
        sys::silence_stderr();
    }
    maillog::init(
        maillog::choose(args.opts.log_to, inetd),
        args.opts.log_level,
    );
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    if let Err(e) = sys::drop_supplementary_groups() {
        log::error!("cannot drop supplementary groups: {e}");
        return ExitCode::from(EX_OSERR);
    }

    let service = match config::service(&args.opts) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            if !inetd {
                eprintln!("postie: {e}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Started as root, the SMTP side will run as this user.
    let unprivileged = if nix::unistd::geteuid().is_root() {
        match nix::unistd::User::from_name(&args.opts.user) {
            Ok(Some(u)) if !u.uid.is_root() => Some((u.name, u.uid.as_raw(), u.gid.as_raw())),
            Ok(Some(_)) => {
                return config_error(
                    inetd,
                    &format!("--user {}: must not be root", args.opts.user),
                );
            }
            Ok(None) if args.opts.user == "_postie" => {
                // The package creates _postie; a hand-started postie on a
                // host without it still never speaks SMTP as root.
                log::warn!("user _postie does not exist; the SMTP side runs as nobody");
                match nix::unistd::User::from_name("nobody") {
                    Ok(Some(u)) => Some((u.name, u.uid.as_raw(), u.gid.as_raw())),
                    _ => return config_error(inetd, "neither _postie nor nobody exists"),
                }
            }
            Ok(None) => {
                let e = format!(
                    "--user {0}: no such user; create it (adduser --system --group {0}) or name another",
                    args.opts.user
                );
                return config_error(inetd, &e);
            }
            Err(e) => return config_error(inetd, &format!("--user {}: {e}", args.opts.user)),
        }
    } else {
        None
    };
    let result = match args.mode {
        Mode::Inetd => inetd_session(service, unprivileged),
        Mode::Serve { listen } => serve(service, unprivileged, &listen, &args.opts.submit_socket),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            if !inetd {
                eprintln!("postie: {e}");
            }
            ExitCode::from(EX_OSERR)
        }
    }
}

/// The user to drop to: name, uid, gid.
type Unprivileged = Option<(String, u32, u32)>;

fn config_error(inetd: bool, e: &str) -> ExitCode {
    log::error!("{e}");
    if !inetd {
        eprintln!("postie: {e}");
    }
    ExitCode::from(EX_CONFIG)
}

/// Splits off the delivery process when started as root (see
/// `privsep`); `inherited` are the descriptors it must not keep.
fn separate(
    service: server::Service,
    unprivileged: Unprivileged,
    inherited: &[std::os::fd::RawFd],
) -> std::io::Result<server::Service> {
    match unprivileged {
        Some((name, uid, gid)) => privsep::split(service, &name, uid, gid, inherited),
        None => Ok(service),
    }
}

fn inetd_session(service: server::Service, unprivileged: Unprivileged) -> std::io::Result<()> {
    let io = listen::stdio()?;
    let service = separate(service, unprivileged, &[0, 1])?;
    service.run_session(io.reader, io.writer, io.peer);
    Ok(())
}

fn serve(
    service: server::Service,
    unprivileged: Unprivileged,
    addrs: &[std::net::SocketAddr],
    submit: &std::path::Path,
) -> std::io::Result<()> {
    // Before any thread starts, so that every thread blocks these signals.
    let sigfd = server::signals()?;
    let (mut listeners, mut local) = listen::systemd()?;
    if local.is_none() {
        // The submission socket is optional: without it, local programs
        // cannot submit through this daemon, but SMTP works.
        match submit.parent() {
            Some(dir) if dir.is_dir() => match listen::bind_unix(submit) {
                Ok(l) => local = Some(l),
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
    // Still single-threaded: split now, the delivery process keeping none
    // of the listening sockets.
    let mut inherited: Vec<std::os::fd::RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    inherited.extend(local.as_ref().map(|l| l.as_raw_fd()));
    inherited.push(sigfd.as_raw_fd());
    let service = Arc::new(separate(service, unprivileged, &inherited)?);
    server::serve(listeners, local, service, sigfd, listen::notify_ready)
}
