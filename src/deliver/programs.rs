//! A program destination run from its queue entry
//! ([`Deliverer::run_program`]): who it runs as, the environment Postfix's
//! local(8) gives it, what it reads on its standard input, and what its
//! verdict does to the entry.
//!
//! Programs never run inside a transaction: one cannot be undone. The end
//! of DATA leaves each to a queue entry, due at once, and the runner runs
//! it right after ([`super::queued`]); one that exits 0 is taken off the
//! entry on disk at once, so that it runs again only if postie dies while
//! it runs or between its exit and that write (postie(8), CAVEATS).
//!
//! Its standard input is what Postfix's local(8) writes to a command: a
//! `From ` line, `Return-Path:`, `Delivered-To:` with the recipient
//! address, the rest of the trace headers, then the message as received
//! (LF line ends, no `>From` quoting: a program such as procmail does its
//! own).

use std::fs::File;
use std::io::Read;
use std::time::SystemTime;

use super::Deliverer;
use super::QueueSetup;
use super::partial::Left;
use super::program::{self, Program, ProgramEnv, ProgramOutcome, RunAs};
use crate::dest::Dest;
use crate::dsn::Class;
use crate::message::FileReader;
use crate::queue::{Entry, LastError, StatusCode};
use crate::smtp::dsn_params::Orcpt;

/// How much of a program's output is kept: what a bounce quotes of it.
pub const OUTPUT_LIMIT: usize = 4096;

/// How many lines of a failed program's output its error quotes.
const OUTPUT_LINES: usize = 5;

impl Deliverer {
    /// Runs the program of `key`, a pending destination of `entry` (whose
    /// message is `file`); `None`: it exited 0, and is taken off the entry
    /// on disk; else why it is left.
    pub(super) fn run_program(
        &self,
        q: &QueueSetup,
        entry: &Entry,
        file: &File,
        key: &str,
        now: SystemTime,
    ) -> Option<Left> {
        let Some(Dest::Program { user, command }) = Dest::parse(key) else {
            return Some(temporary(format!("{key}: not a program")));
        };
        let run_as = match self.run_as_user(&user) {
            Ok(r) => r,
            Err(why) => return Some(temporary(why)),
        };
        let Some(rcpt) = entry
            .pending
            .iter()
            .find(|p| p.user == key)
            .and_then(|p| entry.recipients.get(p.rcpt))
        else {
            return Some(temporary(format!("{key}: no recipient in the entry")));
        };
        let env = self.program_env(entry, &rcpt.address, rcpt.orcpt.as_deref());
        let mut head = String::new();
        head.push_str(&crate::mbox::from_line(
            &super::queued::sender_of(entry),
            &crate::sys::localtime(now),
        ));
        let mut trace = vec![0; usize::try_from(entry.trace).unwrap_or(0)];
        if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(file, &mut trace, 0) {
            return Some(temporary(format!("queue entry {}: {e}", entry.id)));
        }
        let trace = String::from_utf8_lossy(&trace);
        // Return-Path: first, as the trace headers have it; then ours.
        let (first, rest) = match trace.split_once('\n') {
            Some((first, rest)) if first.starts_with("Return-Path:") => (first, rest),
            _ => ("", trace.as_ref()),
        };
        if !first.is_empty() {
            head.push_str(first);
            head.push('\n');
        }
        head.push_str(&format!("Delivered-To: {}\n", env.recipient));
        head.push_str(rest);
        let body = FileReader::range(file, entry.trace, entry.size, |pos, end| {
            format!("queued message file ends at {pos}, before {end}")
        });
        let mut input = head.as_bytes().chain(body);
        let outcome = program::run(
            &Program {
                command: &command,
                run_as: &run_as,
                env: &env,
                time_limit: self.special.command_time_limit,
                output_limit: OUTPUT_LIMIT,
            },
            &mut input,
        );
        match outcome {
            ProgramOutcome::Delivered => {
                if let Err(f) = super::queued::take_off(&q.queue, entry, &[key.to_string()]) {
                    // It ran: the entry says otherwise until the next
                    // run, which runs it again (postie(8), CAVEATS).
                    log::error!(
                        "queue entry {}: {key} delivered, but cannot be taken off: {}",
                        entry.id,
                        f.why
                    );
                }
                None
            }
            ProgramOutcome::Temporary { why, output } => Some(Left::Temporary(LastError::new(
                code(Class::Transient),
                &quoted(&command, &why, &output),
            ))),
            ProgramOutcome::Permanent { why, output } => Some(Left::Permanent(LastError::new(
                code(Class::Permanent),
                &quoted(&command, &why, &output),
            ))),
        }
    }

    /// Who the program of a destination made for `user` runs as: that
    /// user (never root); postie not started as root runs it as itself,
    /// in that user's home and under their name.
    fn run_as_user(&self, user: &str) -> Result<RunAs, String> {
        let found = match self.recipients.user(user) {
            Ok(u) => u,
            Err(e) => return Err(e.0),
        };
        if !nix::unistd::geteuid().is_root() {
            // As ourselves, in the named user's home, under their name.
            let (home, shell) =
                found.map_or_else(|| ("/".into(), "/bin/sh".into()), |u| (u.home, u.shell));
            return Ok(RunAs {
                user: user.to_string(),
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                home,
                shell,
            });
        }
        match found {
            Some(u) if u.uid != 0 => Ok(RunAs {
                user: u.name,
                uid: u.uid,
                gid: u.gid,
                home: u.home,
                shell: u.shell,
            }),
            Some(_) => Err(format!("{user} is root: programs never run as root")),
            None => Err(format!("{user}: no such user")),
        }
    }

    /// The environment of a program delivered to for the recipient
    /// `address` (as the client gave it; ORCPT `orcpt`, if given).
    fn program_env(&self, entry: &Entry, address: &str, orcpt: Option<&str>) -> ProgramEnv {
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l.to_string(), d.to_string()),
            None => (address.to_string(), self.hostname.clone()),
        };
        let local = local.to_ascii_lowercase();
        let extension = self
            .recipients
            .delimiter()
            .and_then(|c| local.split_once(c))
            .filter(|(base, _)| !base.is_empty())
            .map(|(_, ext)| ext.to_string())
            .unwrap_or_default();
        let recipient = format!("{local}@{domain}");
        // ORCPT of type rfc822 is the address the sender's side first
        // had (RFC 3461 4.2); otherwise the address as given here.
        let original = orcpt
            .and_then(|o| Orcpt::parse(o).ok())
            .filter(|o| o.addr_type().eq_ignore_ascii_case("rfc822"))
            .map(|o| o.address())
            .filter(|a| !a.is_empty() && !a.chars().any(char::is_control))
            .unwrap_or_else(|| recipient.clone());
        ProgramEnv {
            sender: entry.sender.clone().unwrap_or_default(),
            recipient,
            local,
            extension,
            domain,
            original_recipient: original,
        }
    }
}

/// A temporary failure of the run, with why.
fn temporary(why: String) -> Left {
    log::warn!("{why}");
    Left::Temporary(LastError::new(code(Class::Transient), &why))
}

/// 4.3.0 or 5.3.0: "other or undefined mail system status" (RFC 3463),
/// what Postfix reports for a command's failure.
fn code(class: Class) -> StatusCode {
    StatusCode::new(class, 3, 0).expect("a valid code")
}

/// The error a failed program leaves: the command, why, and the first
/// lines of its output (one line: the queue keeps one).
fn quoted(command: &str, why: &str, output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(OUTPUT_LINES)
        .collect();
    if lines.is_empty() {
        format!("command {command}: {why}")
    } else {
        format!("command {command}: {why}: {}", lines.join(" / "))
    }
}
