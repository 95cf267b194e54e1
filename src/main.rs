//! `postie`: wiring only. Arguments → configuration → logging → mode →
//! exit status (sysexits.h).
//!
//! Called `sendmail`, `newaliases` or `mailq` (links to postie), or as
//! `postie sendmail ARGS...`, it takes sendmail's command line instead
//! (`postie::sendmail`).

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use postie::cli::{self, LogTo, Mode, Options};
use postie::sendmail::{self, Action};
use postie::{config, listen, maillog, server, sys};

// sysexits.h
const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(call) = sendmail::Call::from_argv(&argv) {
        return run_sendmail(call);
    }
    let args = match cli::parse(argv.iter().cloned()) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match args.mode {
        Mode::Sendmail { args } => run_sendmail(sendmail::Call::from_suffix(&argv, args)),
        mode => run(args.opts, mode),
    }
}

/// Runs `serve` or `inetd`.
fn run(opts: Options, mode: Mode) -> ExitCode {
    let inetd = matches!(mode, Mode::Inetd);
    if inetd {
        // stderr is the client's socket under inetd; nothing may reach it,
        // not even a panic message.
        sys::silence_stderr();
    }
    maillog::init(maillog::choose(opts.log_to, inetd), opts.log_level);
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    if let Err(e) = sys::drop_supplementary_groups() {
        log::error!("cannot drop supplementary groups: {e}");
        return ExitCode::from(EX_OSERR);
    }

    let service = match config::service(&opts) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("{e}");
            if !inetd {
                eprintln!("postie: {e}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    let result = match mode {
        Mode::Inetd => listen::stdio().map(|io| service.run_session(io.reader, io.writer, io.peer)),
        Mode::Serve { listen } => serve(service, &listen),
        Mode::Sendmail { .. } => unreachable!("handled by run_sendmail"),
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
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let root = nix::unistd::geteuid().is_root();
    match inv.flags.action {
        Action::Daemon => return run(inv.opts, Mode::Serve { listen: Vec::new() }),
        Action::Smtp if root => return run(inv.opts, Mode::Inetd),
        _ => {}
    }
    // A command, not a daemon: log to syslog unless told otherwise
    // (`--log stderr`); what the user must see is printed on stderr.
    let sink = match (inv.flags.action, inv.opts.log_to) {
        (Action::Smtp, _) => maillog::Sink::Syslog,
        (_, LogTo::Stderr) => maillog::Sink::Stderr,
        _ => maillog::Sink::Syslog,
    };
    maillog::init(sink, inv.opts.log_level);
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

fn serve(service: Arc<server::Service>, addrs: &[std::net::SocketAddr]) -> std::io::Result<()> {
    // Before any thread starts, so that every thread blocks these signals.
    let sigfd = server::signals()?;
    let mut listeners = listen::systemd()?;
    if !addrs.is_empty() || listeners.is_empty() {
        let default = ["127.0.0.1:2525".parse().expect("valid address")];
        let addrs = if addrs.is_empty() && listeners.is_empty() {
            &default[..]
        } else {
            addrs
        };
        listeners.extend(listen::bind(addrs)?);
    }
    server::serve(listeners, service, sigfd, listen::notify_ready)
}
