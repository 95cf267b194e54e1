//! A run of the queue asked on the command line: `sendmail -q` (and
//! `-qR`, `-qS`, `-qI`), `postie queue run` and `postie queue flush`.
//! Where no daemon stays (inetd, systemd `Accept=yes`), this is how the
//! queue runs: from cron (`sendmail -q`) or from `postie-queue.timer`
//! (`postie queue run`). With a daemon, it runs beside the daemon's
//! runner ([`crate::queue_runner`]); an entry one of them is running is
//! left to it.
//!
//! Who may: root, or the owner of the queue directory (a postie daemon
//! started by another user writes a queue of that user's). Anyone else
//! gets EX_NOPERM with sendmail's words ("You do not have permission to
//! process the queue", its `PrivacyOptions=restrictqrun`, which also lets
//! the queue directory's owner run it). Postfix's `sendmail -q` lets
//! anyone ask its daemon to flush; postie's runs the queue in the calling
//! process, which only the queue's owner can do.
//!
//! The run is that of a daemon at start: the journal's recovery first
//! (undo what a crash interrupted), then
//! [`Delivery::run_queue`](crate::message::Delivery::run_queue), with the
//! stop signals held off until it is over, as root's in-process delivery
//! holds them (`fallback.rs`): a run is never left with a mailbox
//! locked.
//!
//! Exit status: EX_OK once the run is done, whatever stays deferred.
//! A deferral is the queue doing its work, not a failure of the command:
//! Postfix's `postqueue -f` exits 0 once the flush is asked; sendmail's
//! `-q` says deferrals in the log, not in its status; and
//! `postie-queue.service` would be marked failed at every busy mailbox
//! otherwise. No queue directory is an empty queue (EX_OK, as `mailq`
//! says "Mail queue is empty"); one that is not the queue's (another
//! owner, writable by others) is EX_CONFIG, and one that cannot be read
//! EX_IOERR, as for `mailq`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cli::Options;
use crate::config::ConfigError;
use crate::exit::{EX_CONFIG, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OK, EX_OSERR};
use crate::maillog::Event;
use crate::message::{RunFilter, RunSummary};
use crate::queue::Queue;
use crate::server::Service;
use crate::sys;

/// A run of the queue, as the command line asked it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Who asks, for the messages and the mail log (`sendmail -q`,
    /// `postie queue flush`).
    pub by: String,
    /// The entries and recipients to try; its `ids` are queue ids, each
    /// of which must name an entry (EX_NOINPUT for one that does not).
    pub filter: RunFilter,
    /// sendmail's `-qI`: only entries whose id holds one of these
    /// (lowercase).
    pub id_parts: Vec<String>,
    /// Print the summary line on stdout (`postie queue`; `sendmail -q`
    /// only with `-v`, since cron mails whatever a job prints).
    pub report: bool,
}

/// Runs the queue of `opts.queue_dir` as `request` says, through the
/// service `service` builds, and returns the exit status (see the module
/// documentation).
pub fn run_queue(
    opts: &Options,
    request: Request,
    service: impl FnOnce() -> Result<Service, ConfigError>,
) -> u8 {
    let dir = &opts.queue_dir;
    if let Err(why) = may_run_queue(dir) {
        eprintln!("postie: {why}");
        return EX_NOPERM;
    }
    let queue = match Queue::open(dir) {
        Ok(q) => q,
        // No directory: nothing queued.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report(&request, &RunSummary::default());
            return EX_OK;
        }
        Err(e) => {
            eprintln!("postie: cannot run the queue: {e}");
            return if e.kind() == io::ErrorKind::PermissionDenied {
                EX_CONFIG
            } else {
                EX_IOERR
            };
        }
    };
    let (filter, status) = match pick(&queue, &request) {
        Ok(picked) => picked,
        Err(e) => {
            eprintln!("postie: cannot list the queue: {e}");
            return EX_IOERR;
        }
    };
    let Some(filter) = filter else {
        // Entries were named and none is there: none is run (an empty
        // list of ids would be every entry).
        report(&request, &RunSummary::default());
        return status;
    };
    if let Err(e) = sys::drop_supplementary_groups() {
        eprintln!("postie: cannot drop supplementary groups: {e}");
        return EX_OSERR;
    }
    let service = match service() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postie: {e}");
            return EX_CONFIG;
        }
    };
    let held = sys::hold_delivery_signals();
    let delivery = service.delivery();
    delivery.recover();
    let summary = delivery.run_queue(&filter);
    delivery.close();
    drop(held);
    Event::QueueRun {
        by: &request.by,
        entries: summary.entries,
        delivered: summary.delivered,
        deferred: summary.deferred,
        failed: summary.failed,
    }
    .log();
    report(&request, &summary);
    status
}

/// Whether this user may run the queue in `dir`: root, or the directory's
/// owner; if not, why, in sendmail's words.
pub fn may_run_queue(dir: &Path) -> Result<(), String> {
    let me = nix::unistd::geteuid();
    if me.is_root() {
        return Ok(());
    }
    let whose = match std::fs::metadata(dir) {
        Ok(m) if m.uid() == me.as_raw() => return Ok(()),
        Ok(m) => format!("{} is uid {}'s", dir.display(), m.uid()),
        Err(e) => format!("{}: {e}", dir.display()),
    };
    Err(format!(
        "You do not have permission to process the queue: only root or the owner of the queue \
         directory may ({whose})"
    ))
}

/// The filter of the run: `request`'s, with its ids checked against the
/// queue (each missing one said on stderr, and EX_NOINPUT) and sendmail's
/// `-qI` parts made ids. `None`: ids were asked and none is there.
fn pick(queue: &Queue, request: &Request) -> io::Result<(Option<RunFilter>, u8)> {
    let mut filter = request.filter.clone();
    let mut status = EX_OK;
    let named = !filter.ids.is_empty() || !request.id_parts.is_empty();
    filter.ids.retain(|id| match queue.load(id) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("postie: {id}: no such entry in the queue");
            status = EX_NOINPUT;
            false
        }
        // One that does not load is still named: the run says why it
        // cannot try it.
        _ => true,
    });
    if !request.id_parts.is_empty() {
        let listing = queue.list()?;
        filter.ids.extend(
            listing
                .entries
                .into_iter()
                .map(|e| e.id)
                .filter(|id| request.id_parts.iter().any(|p| id.contains(p.as_str()))),
        );
    }
    Ok(((!named || !filter.ids.is_empty()).then_some(filter), status))
}

/// Prints the summary line, if asked.
fn report(request: &Request, s: &RunSummary) {
    if request.report {
        println!("{}", summary_line(&request.by, s));
    }
}

/// `BY: N entries, N delivered, N deferred, N failed`, and when the
/// earliest recipient left is due again.
pub fn summary_line(by: &str, s: &RunSummary) -> String {
    let mut line = format!(
        "{by}: {} {}, {} delivered, {} deferred, {} failed",
        s.entries,
        if s.entries == 1 { "entry" } else { "entries" },
        s.delivered,
        s.deferred,
        s.failed
    );
    if let Some(t) = s.next_due {
        line.push_str(&format!("; next attempt {}", sys::localtime(t).rfc5322()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_summary_line() {
        let s = RunSummary {
            entries: 1,
            delivered: 2,
            deferred: 1,
            failed: 0,
            next_due: None,
        };
        assert_eq!(
            summary_line("postie queue run", &s),
            "postie queue run: 1 entry, 2 delivered, 1 deferred, 0 failed"
        );
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let s = RunSummary {
            entries: 3,
            next_due: Some(t),
            ..s
        };
        assert_eq!(
            summary_line("sendmail -q", &s),
            format!(
                "sendmail -q: 3 entries, 2 delivered, 1 deferred, 0 failed; next attempt {}",
                sys::localtime(t).rfc5322()
            )
        );
    }

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let q = Queue::open(dir.path()).unwrap();
        (dir, q)
    }

    /// Named ids that are no entry are said and dropped; when none is
    /// left, nothing runs (not every entry); `-qI` parts pick the ids
    /// that hold them.
    #[test]
    fn named_entries_are_checked_and_never_widen_to_all() {
        let (_dir, q) = queue();
        let mut entry = crate::queue::testutil::entry(std::time::SystemTime::now());
        q.create(&mut entry, &mut &b"x\n"[..]).unwrap();
        let missing = "00000000000000000000000000".to_owned();
        let ask = |ids: Vec<String>, parts: Vec<String>| {
            let request = Request {
                filter: RunFilter {
                    ids,
                    ..RunFilter::default()
                },
                id_parts: parts,
                ..Request::default()
            };
            pick(&q, &request).unwrap()
        };
        let (f, status) = ask(vec![missing.clone()], vec![]);
        assert_eq!((f, status), (None, EX_NOINPUT));
        let (f, status) = ask(vec![missing.clone(), entry.id.clone()], vec![]);
        assert_eq!(f.unwrap().ids, vec![entry.id.clone()]);
        assert_eq!(status, EX_NOINPUT);
        let (f, status) = ask(vec![], vec![]);
        assert_eq!((f.unwrap().ids, status), (vec![], EX_OK), "no ids: all");
        let (f, _) = ask(vec![], vec![entry.id[10..20].to_owned()]);
        assert_eq!(f.unwrap().ids, vec![entry.id.clone()]);
        let (f, status) = ask(vec![], vec!["zzz".into()]);
        assert_eq!(
            (f, status),
            (None, EX_OK),
            "-qI matching nothing runs nothing"
        );
    }

    #[test]
    fn root_or_the_queue_directorys_owner_may_run_it() {
        let (dir, _q) = queue();
        assert_eq!(may_run_queue(dir.path()), Ok(()));
        let root_owned = Path::new("/");
        let missing = dir.path().join("missing");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(may_run_queue(root_owned), Ok(()));
            assert_eq!(may_run_queue(&missing), Ok(()));
            println!("SKIP root_or_the_queue_directorys_owner_may_run_it (refusals): root");
            return;
        }
        let why = may_run_queue(root_owned).unwrap_err();
        assert!(
            why.starts_with("You do not have permission to process the queue"),
            "{why}"
        );
        assert!(why.ends_with("(/ is uid 0's)"), "{why}");
        assert!(may_run_queue(&missing).is_err());
    }
}
