//! `postie queue`: root's tool for the queue (`--queue-dir`). `show`
//! lists it as `mailq` does ([`crate::sendmail::mailq::print_queue`]) or,
//! given ids, prints each entry in full ([`crate::queue::entry_in_full`]);
//! `delete` removes entries for good, as Postfix's `postsuper -d`; `run`
//! delivers what is due and `flush` everything pending, as `sendmail -q`
//! does ([`crate::sendmail::runq`], which says who may and the exit
//! statuses), printing one summary line.
//!
//! Only root may show and delete: the queue is the delivery process's own
//! (root's, mode 0700), and anyone else is refused with EX_NOPERM, as
//! `mailq` refuses. `run` and `flush` are also the queue directory's
//! owner's, as sendmail lets the owner of its queue run it (a postie
//! daemon started by another user has a queue of that user's).
//!
//! The ids come from root's command line, perhaps from a script fed by
//! others: each is checked against the store's id pattern ([`check_id`]:
//! 26 lowercase hex digits, so no `/`, no `..`, no prefix) before any
//! path is made of it, and an entry is read and removed only through
//! [`Queue`], which never follows a symbolic link. `delete` loads an entry
//! (refusing a name that is not one of the queue's own files: a symbolic
//! link, another user's file) before it removes it, so that nothing
//! planted under an entry's name is removed in its place. An entry that
//! does not load (garbled, cut short) is deleted through
//! [`Queue::discard`], which removes its files only if each is one of
//! ours, as Postfix's `postsuper -d` deletes by id.
//!
//! Exit status: EX_OK when every id went; else that of the first that did
//! not: EX_DATAERR for an argument that is no queue id, EX_NOINPUT for an
//! id of no entry (sysexits(3): an input that does not exist), EX_IOERR
//! for an entry that could not be read or removed. Postfix's `postcat -q`
//! also fails on both (`bad mail queue ID`, `open queue file`: exit 1),
//! and, like `postsuper -d`, checks the id (`mail_queue_id_ok`) before it
//! makes a path of it; `postsuper -d` only warns and counts it as not
//! deleted, where a script here learns from the status whether all went.

use std::io;

use crate::cli::{QueueAction, RunArgs};
use crate::config::Loaded;
use crate::exit::{EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OK};
use crate::message::RunFilter;
use crate::queue::{ID_LEN, Queue, entry_in_full, valid_id};
use crate::sendmail::runq;

/// Runs `postie queue ACTION` (no action: `show`) with the configuration
/// `conf` and returns the exit status.
pub fn run(conf: &Loaded, action: Option<&QueueAction>) -> u8 {
    let opts = &conf.cli.opts;
    let (ids, delete) = match action {
        None => (&[][..], false),
        Some(QueueAction::Show { ids }) => (&ids[..], false),
        Some(QueueAction::Delete { ids }) => (&ids[..], true),
        Some(QueueAction::Run(args)) => return run_queue(conf, args, false),
        Some(QueueAction::Flush(args)) => return run_queue(conf, args, true),
    };
    if ids.is_empty() {
        return crate::sendmail::mailq::print_queue(opts);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "postie: you are not permitted to {} queue entries: only root may (the queue is \
             the delivery process's own)",
            if delete { "delete" } else { "see" }
        );
        return EX_NOPERM;
    }
    let queue = match Queue::open(&opts.queue_dir) {
        Ok(q) => Some(q),
        // No directory: no entry either.
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("postie: cannot open the queue: {e}");
            return if e.kind() == io::ErrorKind::PermissionDenied {
                EX_CONFIG
            } else {
                EX_IOERR
            };
        }
    };
    let mut status = EX_OK;
    let mut first = true;
    for id in ids {
        let done = match do_one(queue.as_ref(), id, delete) {
            Ok(text) if delete => {
                crate::maillog::Event::QueueDeleted { id }.log();
                println!("{text}");
                continue;
            }
            Ok(text) => {
                // Entries in full are separated by an empty line.
                if !std::mem::replace(&mut first, false) {
                    println!();
                }
                print!("{text}");
                continue;
            }
            Err(failed) => failed,
        };
        eprintln!("postie: {}", done.why);
        if status == EX_OK {
            status = done.status;
        }
    }
    status
}

/// `run` (`all`: `flush`): the ids checked first (EX_DATAERR, and
/// nothing run, for one that is no queue id), then the run.
fn run_queue(conf: &Loaded, args: &RunArgs, all: bool) -> u8 {
    for id in &args.ids {
        if let Err(why) = check_id(id) {
            eprintln!("postie: {why}");
            return EX_DATAERR;
        }
    }
    let request = runq::Request {
        by: format!("postie queue {}", if all { "flush" } else { "run" }),
        filter: RunFilter {
            ids: args.ids.clone(),
            recipient: args.recipient.clone(),
            sender: args.sender.clone(),
            all,
        },
        id_parts: Vec::new(),
        report: true,
    };
    runq::run_queue(&conf.cli.opts, request, || conf.service())
}

/// Why one id did not go, and the exit status it gives.
#[derive(Debug)]
struct Failed {
    why: String,
    status: u8,
}

/// Shows (the entry in full) or deletes (`ID: deleted`) entry `id`.
fn do_one(queue: Option<&Queue>, id: &str, delete: bool) -> Result<String, Failed> {
    check_id(id).map_err(|why| Failed {
        why,
        status: EX_DATAERR,
    })?;
    let failed = |e: io::Error| Failed {
        status: match e.kind() {
            io::ErrorKind::NotFound => EX_NOINPUT,
            _ => EX_IOERR,
        },
        why: match e.kind() {
            io::ErrorKind::NotFound => format!("{id}: no such entry in the queue"),
            _ => format!("{id}: {e}"),
        },
    };
    let Some(queue) = queue else {
        return Err(failed(io::ErrorKind::NotFound.into()));
    };
    // Through the store's checks: nothing but an entry of its own is read,
    // and so removed; one that does not load (torn, garbled) is still
    // deleted if its files are ours.
    if !delete {
        return queue.load(id).map(|e| entry_in_full(&e)).map_err(failed);
    }
    // Not from under a runner delivering from it: its run lock, waited
    // for (a run of one entry ends within the delivery timeout). An entry
    // without its message file has no lock to take.
    let _run = queue.lock_entry(id, true).ok().flatten();
    match queue.load(id) {
        Ok(_) => queue.remove(id).map_err(failed)?,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => queue.discard(id).map_err(failed)?,
        Err(e) => return Err(failed(e)),
    }
    Ok(format!("{id}: deleted"))
}

/// Whether `arg` is a queue id (26 lowercase hex digits: nothing a path
/// could be made of but the entry's own name); if not, why, naming it.
pub fn check_id(arg: &str) -> Result<(), String> {
    if valid_id(arg) {
        return Ok(());
    }
    Err(format!(
        "{:?}: not a queue id (an id is {ID_LEN} lowercase hexadecimal digits, as mailq lists \
         them)",
        arg
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_stores_and_nothing_else() {
        assert_eq!(check_id("0069331a20c0ffee0000000001"), Ok(()));
        for bad in [
            "",
            "../x",
            "..",
            "/etc/passwd",
            "qf0069331a20c0ffee0000000001",
            "df0069331a20c0ffee0000000001",
            "qfX",
            "0069331a20c0ffee000000000",       // too short
            "0069331a20c0ffee00000000011",     // too long
            "0069331a20c0ffee0000000001/",     // a separator after it
            "0069331A20C0FFEE0000000001",      // not lowercase
            "0069331a20c0ffee000000000.",      // right length, a dot
            "../69331a20c0ffee0000000001",     // right length, a path
            "0069331a20c0ffee000000000\u{e9}", // not ASCII
        ] {
            let why = check_id(bad).expect_err(bad);
            assert!(
                why.starts_with(&format!("{bad:?}: not a queue id")),
                "{why}"
            );
        }
    }

    #[test]
    fn no_queue_directory_means_no_entry() {
        let e = do_one(None, "0069331a20c0ffee0000000001", true).unwrap_err();
        assert_eq!(e.status, EX_NOINPUT);
        assert_eq!(
            e.why,
            "0069331a20c0ffee0000000001: no such entry in the queue"
        );
        let e = do_one(None, "../../etc/passwd", false).unwrap_err();
        assert_eq!(e.status, EX_DATAERR);
    }
}
