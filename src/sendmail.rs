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
//!
//! The parts: `call.rs` (the command line and root's configuration),
//! `prepare.rs` (the message and its envelope), `daemon.rs` (the daemon's
//! socket, and `-bs` relayed to it), `fallback.rs` (root's in-process
//! delivery), `mailq.rs` (`mailq`, `-bp`: the queue listed), `runq.rs`
//! (`-q`: the queue run, which `postie queue run` uses too); the other
//! modes are here.

pub mod args;
mod call;
pub mod client;
mod daemon;
mod fallback;
pub mod mailq;
pub mod message;
mod prepare;
pub mod runq;

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::SystemTime;

pub use args::{Action, Flags, Personality, USAGE, UsageError};
pub use call::{Call, Invocation, ParseError, SYSTEM_OPTIONS, parse, root_may_read};

use crate::aliases::Aliases;
use crate::aliases::{NoReader, Special};
use crate::cli::Options;
use crate::config;
use crate::exit::{EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOUSER, EX_OK, EX_SOFTWARE, EX_TEMPFAIL};
use crate::recipients::Expanded;
use crate::smtp::address::parse_path;
use daemon::{no_daemon, over_socket, relay_smtp, untrusted_peer};
use fallback::in_process;
use message::Message;
use prepare::{Context, Invoker, host_name, prepare};

/// Runs everything but `-bd` and root's `-bs`, which are postie's `serve`
/// and `inetd` modes (run by `main`), and returns the exit status.
pub fn run(inv: &Invocation) -> u8 {
    match inv.flags.action {
        Action::Submit => submit(inv),
        Action::Verify => verify(&inv.opts, &inv.flags.recipients),
        Action::PrintQueue => mailq::print_queue(&inv.opts),
        Action::RunQueue => run_queue(inv),
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

/// `-q`: the queue run once, in this process; silent unless `-v` or
/// something fails (cron mails what a job prints). `-q30m` without `-bd`
/// starts no periodic runner: the daemon has one, and without a daemon
/// `postie-queue.timer` (or cron's `sendmail -q`) runs the queue; said on
/// stderr, and the queue is run once, as sendmail's `-q30m` runs it first
/// (an old rc line that starts a queue runner still runs it).
fn run_queue(inv: &Invocation) -> u8 {
    let q = &inv.flags.queue;
    if let Some(secs) = q.interval.filter(|&s| s > 0) {
        eprintln!(
            "postie: warning: -q with an interval ({secs} s): postie starts no periodic queue \
             runner (the daemon runs the queue; without one, postie-queue.timer or cron's \
             sendmail -q); the queue is run once"
        );
    }
    let request = runq::Request {
        by: "sendmail -q".into(),
        filter: crate::message::RunFilter {
            ids: Vec::new(),
            recipient: q.recipient.clone(),
            sender: q.sender.clone(),
            all: true,
        },
        id_parts: q.ids.clone(),
        report: inv.flags.verbose,
    };
    runq::run_queue(&inv.opts, request, || config::service(&inv.opts))
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
        // As the SMTP side sees it: no user's .forward is read.
        match service.recipients().expand(&mailbox, &NoReader) {
            Expanded::Found { users, expansion } => {
                let mut what = Vec::new();
                if !users.is_empty() {
                    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
                    let s = if names.len() == 1 { "" } else { "s" };
                    what.push(format!("local user{s} {}", names.join(", ")));
                }
                for special in &expansion.specials {
                    let kind = match special {
                        Special::Command { .. } => "program",
                        Special::File { .. } => "file",
                    };
                    what.push(format!("{kind} {special}"));
                }
                if expansion.unread_includes > 0 {
                    what.push("an :include: list".into());
                }
                println!("{r}... deliverable: {}", what.join(", "));
            }
            Expanded::Unknown => {
                match service.recipients().why_unknown(&mailbox) {
                    Some(why) => println!("{r}... User unknown ({why})"),
                    None => println!("{r}... User unknown"),
                }
                permanent = true;
            }
            Expanded::NotLocal => {
                println!("{r}... not deliverable: not a local domain (postie does not relay)");
                permanent = true;
            }
            Expanded::TempFail(why) => {
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
