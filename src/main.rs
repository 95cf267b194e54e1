//! `postie`: wiring only. Arguments → configuration (command line over
//! file over defaults) → logging → mode → exit status (sysexits.h).

use std::process::ExitCode;
use std::sync::Arc;

use postie::check::{self, Verdict};
use postie::cli::{self, Mode};
use postie::{config, listen, maillog, server, sys};

// sysexits.h
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_UNAVAILABLE: u8 = 69;
const EX_OSERR: u8 = 71;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cl = match cli::command_line(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let inetd = matches!(cl.cli.mode, Mode::Inetd);
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
            maillog::init(sink, log_level);
            return config_error(&e, inetd, sink);
        }
    };
    if let Mode::Check { address } = &conf.cli.mode {
        return report(&check::run(&conf, address.as_deref()));
    }
    let args = &conf.cli;
    let sink = maillog::choose(args.opts.log_to, inetd);
    maillog::init(sink, args.opts.log_level);
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    if let Err(e) = sys::drop_supplementary_groups() {
        log::error!("cannot drop supplementary groups: {e}");
        return ExitCode::from(EX_OSERR);
    }

    let service = match conf.service() {
        Ok(s) => Arc::new(s),
        Err(e) => return config_error(&e, inetd, sink),
    };
    let result = match &args.mode {
        Mode::Inetd => listen::stdio().map(|io| service.run_session(io.reader, io.writer, io.peer)),
        Mode::Serve { listen } => serve(service, listen),
        Mode::Check { .. } => unreachable!("handled above"),
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

/// Logs a configuration error, prints it on stderr too unless the log
/// goes there (or stderr is the client, in inetd mode), and gives
/// EX_CONFIG.
fn config_error(e: &config::ConfigError, inetd: bool, sink: maillog::Sink) -> ExitCode {
    log::error!("{e}");
    if !inetd && sink != maillog::Sink::Stderr {
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
        Verdict::Ok => 0,
        Verdict::BadAddress => EX_DATAERR,
        Verdict::NoUser => EX_NOUSER,
        Verdict::NotLocal => EX_UNAVAILABLE,
        Verdict::TempFail => EX_TEMPFAIL,
        Verdict::Config => EX_CONFIG,
    })
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
