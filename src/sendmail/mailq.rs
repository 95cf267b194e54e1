//! `mailq` and `sendmail -bp`: the queue (`--queue-dir`), listed in
//! sendmail's format, for root only.
//!
//! The queue is the delivery process's own (root's, mode 0700); as in
//! sendmail with `PrivacyOptions=restrictmailq`, another user is refused
//! (EX_NOPERM) rather than shown an empty queue. Root reads it through
//! [`Queue::open`] and [`Queue::list`], which refuse a directory that is
//! not root's or that others may write, and skip (and never follow) a name
//! in it that is not one of the queue's own files.
//!
//! The format is sendmail 8's, made by [`crate::queue::listing`], which
//! `postie queue show` prints too (through [`print_queue`]).

use std::io;

use crate::cli::Options;
use crate::exit::{EX_CONFIG, EX_IOERR, EX_NOPERM, EX_OK};
use crate::queue::{EMPTY, Queue, listing};

/// Lists the queue on stdout and returns the exit status: `mailq`,
/// `sendmail -bp` and `postie queue show`.
pub fn print_queue(opts: &Options) -> u8 {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "postie: you are not permitted to see the queue: only root may (the queue is the \
             delivery process's own)"
        );
        return EX_NOPERM;
    }
    let scan = match Queue::open(&opts.queue_dir).and_then(|q| q.list()) {
        Ok(l) => l,
        // Nothing writes the queue yet: no directory, nothing queued.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            println!("{EMPTY}");
            return EX_OK;
        }
        Err(e) => {
            eprintln!("postie: cannot list the queue: {e}");
            return if e.kind() == io::ErrorKind::PermissionDenied {
                EX_CONFIG
            } else {
                EX_IOERR
            };
        }
    };
    print!("{}", listing(&opts.queue_dir, &scan.entries));
    if !scan.skipped.is_empty() {
        eprintln!(
            "postie: {} name{} in {} skipped as not an entry of the queue's own; \
             postie check names them",
            scan.skipped.len(),
            if scan.skipped.len() == 1 { "" } else { "s" },
            opts.queue_dir.display()
        );
    }
    EX_OK
}
