//! `postie`: wiring only. Arguments → configuration → logging → mode →
//! exit status (sysexits.h).

use std::process::ExitCode;
use std::sync::Arc;

use postie::cli::{self, Mode};
use postie::{config, listen, maillog, server, sys};

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
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("{e}");
            if !inetd {
                eprintln!("postie: {e}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    let result = match args.mode {
        Mode::Inetd => listen::stdio().map(|io| service.run_session(io.reader, io.writer, io.peer)),
        Mode::Serve { listen } => serve(service, &listen, &args.opts.submit_socket),
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

fn serve(
    service: Arc<server::Service>,
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
    server::serve(listeners, local, service, sigfd, listen::notify_ready)
}
