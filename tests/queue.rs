//! `postie queue`: show and delete queue entries, root only. Entries are
//! made with the queue's own API in the fixture's queue directory
//! (`--queue-dir`); the real binary shows and deletes them.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use crate::util::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `postie --queue-dir ... queue ARGS`, as the calling user.
fn queue(fx: &Fixture, args: &[&str]) -> Output {
    let mut all = fx.args();
    all.push("queue".into());
    all.extend(args.iter().map(|a| a.to_string()));
    run_postie(&all)
}

/// A refusal: EX_NOPERM, nothing on stdout, the reason on stderr.
fn refused(out: &Output) {
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("not permitted to"),
        "{}",
        text(&out.stderr)
    );
}

/// Anyone but root is refused, whatever the action, before any id is
/// looked at.
#[test]
fn queue_refused_to_others() {
    let fx = Fixture::new();
    let id = "0069331a20c0ffee0000000001";
    let actions: [&[&str]; 4] = [&[], &["show"], &["show", id], &["delete", id]];
    if !nix::unistd::geteuid().is_root() {
        for args in actions {
            refused(&queue(&fx, args));
        }
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        println!("SKIP queue_refused_to_others: root, and no user nobody to be");
        return;
    };
    // An entry root can see: nobody still may not.
    let q = postie::queue::Queue::open(&fx.queue()).unwrap();
    let mut entry = queue_entry();
    q.create(&mut entry, &mut &b"Subject: hi\n\nhello\n"[..])
        .unwrap();
    for args in [&["show", &entry.id][..], &["delete", &entry.id]] {
        let mut all = fx.args();
        all.push("queue".into());
        all.extend(args.iter().map(|a| a.to_string()));
        let out = Command::new(bin())
            .args(&all)
            .stdin(Stdio::null())
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .output()
            .unwrap();
        refused(&out);
    }
    assert!(q.load(&entry.id).is_ok(), "nobody deleted the entry");
}

/// Root: the listing is mailq's; an entry in full; unknown and malformed
/// ids named and failed while the others go; delete removes the entry's
/// files; a symbolic link planted under an entry's name is neither
/// followed nor removed.
#[test]
fn queue_show_and_delete() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP queue_show_and_delete: not root");
        return;
    }
    let fx = Fixture::new();
    let out = queue(&fx, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Mail queue is empty\n");

    let q = postie::queue::Queue::open(&fx.queue()).unwrap();
    let (mut a, mut b) = (queue_entry(), queue_entry());
    q.create(&mut a, &mut &b"Subject: a\n\nhello\n"[..])
        .unwrap();
    q.create(&mut b, &mut &b"Subject: b\n\nhello again\n"[..])
        .unwrap();
    let (a, b) = (q.load(&a.id).unwrap(), q.load(&b.id).unwrap());

    // The listing: mailq's, with or without `show`.
    let mailq = q.list().unwrap().entries;
    let want = postie::queue::listing(&fx.queue(), &mailq);
    assert!(want.contains(&a.id) && want.contains(&b.id), "{want}");
    for args in [&[][..], &["show"]] {
        let out = queue(&fx, args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want);
    }

    // Entries in full, an empty line between them.
    let out = queue(&fx, &["show", &a.id, &b.id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (full_a, full_b) = (
        postie::queue::entry_in_full(&a),
        postie::queue::entry_in_full(&b),
    );
    assert_eq!(text(&out.stdout), format!("{full_a}\n{full_b}"));
    assert!(full_a.starts_with(&format!("id: {}\nlog-id: 5A1B2C3.7\n", a.id)));
    assert!(
        full_a.contains("\tlast error: 4.2.0 mailbox busy\n"),
        "{full_a}"
    );

    // An unknown id (EX_NOINPUT) and a malformed one (EX_DATAERR) are
    // named; the good one is still shown; the status is the first
    // failure's.
    let unknown = "00000000000000000000000000";
    let out = queue(&fx, &["show", unknown, "../queue/x", &a.id]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), full_a);
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{unknown}: no such entry")), "{err}");
    assert!(err.contains("\"../queue/x\": not a queue id"), "{err}");
    let out = queue(&fx, &["delete", &format!("qf{}", a.id)]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(q.load(&a.id).is_ok());

    // A symbolic link planted under an entry's name: not shown, not
    // followed, not removed.
    let secret = fx.dir.path().join("secret");
    std::fs::write(&secret, "top secret\n").unwrap();
    let planted = format!("{:026x}", 1u8);
    let link = fx.queue().join(format!("qf{planted}"));
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    for action in ["show", "delete"] {
        let out = queue(&fx, &[action, &planted]);
        assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "");
        assert!(
            text(&out.stderr).contains(&planted),
            "{}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("top secret"));
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&secret).unwrap(), b"top secret\n");
    }

    // Delete: one line per entry, logged too; an unknown id fails alone.
    let out = queue(&fx, &["delete", &a.id, unknown]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: deleted\n", a.id));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}: deleted", a.id)),
        "not logged: {err}"
    );
    assert!(err.contains(&format!("{unknown}: no such entry")), "{err}");
    for prefix in ["qf", "df"] {
        assert!(!fx.queue().join(format!("{prefix}{}", a.id)).exists());
    }
    assert!(q.load(&b.id).is_ok());
    // Deleted is gone: a second delete fails.
    let out = queue(&fx, &["delete", &a.id]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    let out = queue(&fx, &["delete", &b.id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: deleted\n", b.id));
    // A torn entry (its envelope file cut short) is not shown, but is
    // deleted: its files are ours (as postsuper -d deletes by id).
    let mut torn = queue_entry();
    q.create(&mut torn, &mut &b"Subject: torn\n\nx\n"[..])
        .unwrap();
    let qf = fx.queue().join(format!("qf{}", torn.id));
    let bytes = std::fs::read(&qf).unwrap();
    std::fs::write(&qf, &bytes[..bytes.len() / 2]).unwrap();
    let out = queue(&fx, &["show", &torn.id]);
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
    let out = queue(&fx, &["delete", &torn.id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: deleted\n", torn.id));
    let names: Vec<_> = std::fs::read_dir(fx.queue())
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert_eq!(names, [link.file_name().unwrap()], "{names:?}");
}

/// The daemon runs the queue on a thread of the process that delivers
/// (the delivery process, started as root; else the daemon itself), from
/// the start and every `--queue-run-interval` at most; SIGTERM stops it
/// with the daemon.
#[test]
fn the_daemon_runs_the_queue_where_it_delivers() {
    let fx = Fixture::new();
    let mut srv = Server::start(&fx, &["--queue-run-interval", "2h"]);
    let log = srv.log_with(&["queue runner started"]);
    let pid = if nix::unistd::geteuid().is_root() {
        let line = log
            .lines()
            .find(|l| l.contains("keeps root"))
            .unwrap_or_else(|| panic!("no delivery process: {log}"));
        let after = line.split("delivery process ").nth(1).unwrap();
        after.split(' ').next().unwrap().to_owned()
    } else {
        srv.child.id().to_string()
    };
    assert!(
        log.contains(&format!(
            "queue runner started in process {pid}: the queue is looked at every 7200 s at least"
        )),
        "{log}"
    );
    let status = srv.terminate(std::time::Duration::from_secs(60));
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{}", srv.log());
}

/// `postie queue run` and `flush`: for root and the queue directory's
/// owner (the fixture's queue is the test user's), one summary line on
/// stdout and in the log, EX_OK; named ids checked first (EX_DATAERR,
/// nothing run) and against the queue (EX_NOINPUT); no queue directory is
/// an empty queue; a directory that is not the queue's is EX_CONFIG. Each
/// entry run is delivered (how is for the delivery tests).
#[test]
fn queue_run_and_flush() {
    let fx = Fixture::new();
    let empty =
        |verb: &str| format!("postie queue {verb}: 0 entries, 0 delivered, 0 deferred, 0 failed\n");
    for verb in ["run", "flush"] {
        let out = queue(&fx, &[verb]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), empty(verb));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("queue run by postie queue {verb}: 0 entries")),
            "not logged: {err}"
        );
    }
    let q = postie::queue::Queue::open(&fx.queue()).unwrap();
    // A new entry for each run: a run delivers it (alice) and returns
    // what cannot be (bob, no such user), and it is gone.
    let fresh = || {
        let mut entry = queue_entry();
        q.create(&mut entry, &mut &b"Subject: hi\n\nhello\n"[..])
            .unwrap();
        entry.id
    };
    for n in 0..3 {
        let id = fresh();
        let args: &[&str] = match n {
            0 => &["run"],
            1 => &["flush", &id],
            _ => &["run", "--recipient", "bob", "--sender", "jon@", &id],
        };
        let out = queue(&fx, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let verb = args[0];
        assert!(
            text(&out.stdout).starts_with(&format!("postie queue {verb}: ")),
            "{args:?}: {}",
            text(&out.stdout)
        );
        if n < 2 {
            assert!(q.load(&id).is_err(), "{args:?}: the entry was run");
            assert_eq!(python_mbox(&fx.mailbox("alice")).len(), n + 1);
        } else {
            // --recipient bob: bob's part only (returned); alice waits.
            let left = q.load(&id).unwrap();
            let users: Vec<&str> = left.pending.iter().map(|p| p.user.as_str()).collect();
            assert_eq!(users, ["alice"], "{args:?}");
            assert_eq!(python_mbox(&fx.mailbox("alice")).len(), 2);
            q.remove(&id).unwrap();
        }
    }
    // Ids: malformed ones run nothing; unknown ones are said, the others
    // run.
    let unknown = "00000000000000000000000000";
    let id = fresh();
    let out = queue(&fx, &["flush", &id, "../x"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(
        !text(&out.stderr).contains("queue run by"),
        "{}",
        text(&out.stderr)
    );
    let out = queue(&fx, &["flush", unknown]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{unknown}: no such entry in the queue")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), empty("flush"), "nothing run");
    assert!(q.load(&id).is_ok(), "nothing run");
    let out = queue(&fx, &["flush", unknown, &id]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("queue run by postie queue flush"));
    assert!(q.load(&id).is_err(), "the entry named was run");

    // A queue directory others may write is none: EX_CONFIG.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fx.queue(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = queue(&fx, &["run"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("lets others write it"),
        "{}",
        text(&out.stderr)
    );
    // No queue directory: nothing queued (root; anyone else has no
    // directory of theirs to run, and is refused).
    std::fs::remove_dir_all(fx.queue()).unwrap();
    let out = queue(&fx, &["run"]);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), empty("run"));
    } else {
        assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    }
}

/// A user who is neither root nor the queue directory's owner may not run
/// it: EX_NOPERM, sendmail's words, nothing run.
#[test]
fn queue_run_refused_to_others() {
    let fx = Fixture::new();
    let check = |out: &Output| {
        assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "");
        assert!(
            text(&out.stderr).contains("You do not have permission to process the queue"),
            "{}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("queue run by"));
    };
    if !nix::unistd::geteuid().is_root() {
        // A queue of root's.
        for verb in ["run", "flush"] {
            let mut all = fx.args();
            let dir = all.iter().position(|a| a == "--queue-dir").unwrap();
            all[dir + 1] = "/".into();
            all.extend(["queue".into(), verb.into()]);
            check(&run_postie(&all));
        }
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        println!("SKIP queue_run_refused_to_others: root, and no user nobody to be");
        return;
    };
    let as_nobody = |verb: &str| {
        let mut all = fx.args();
        all.extend(["queue".into(), verb.into()]);
        Command::new(bin())
            .args(&all)
            .stdin(Stdio::null())
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .output()
            .unwrap()
    };
    for verb in ["run", "flush"] {
        check(&as_nobody(verb));
    }
    // Its owner may.
    std::os::unix::fs::chown(fx.queue(), Some(nobody.uid.as_raw()), None).unwrap();
    let out = as_nobody("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("postie queue run: "));
}

/// `postie queue delete` does not remove an entry from under a runner
/// that delivers from it: it waits for the entry's run lock (seen in
/// /proc/locks as a waiter), and deletes once the runner lets go.
#[test]
fn queue_delete_waits_for_a_runner() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP queue_delete_waits_for_a_runner: postie queue delete is root's");
        return;
    }
    let fx = Fixture::new();
    let q = postie::queue::Queue::open(&fx.queue()).unwrap();
    let mut entry = queue_entry();
    q.create(&mut entry, &mut &b"Subject: hi\n\nhello\n"[..])
        .unwrap();
    let run = q
        .lock_entry(&entry.id, false)
        .unwrap()
        .expect("the run lock");
    let mut args = fx.args();
    args.extend(["queue".into(), "delete".into(), entry.id.clone()]);
    let child = Command::new(bin())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiter = format!("-> FLOCK  ADVISORY  WRITE {} ", child.id());
    assert!(
        wait_for(std::time::Duration::from_secs(60), || {
            std::fs::read_to_string("/proc/locks").is_ok_and(|l| l.contains(&waiter))
        }),
        "postie queue delete does not wait for the run lock: {}",
        std::fs::read_to_string("/proc/locks").unwrap_or_default()
    );
    assert!(q.load(&entry.id).is_ok(), "deleted from under the runner");
    drop(run);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: deleted\n", entry.id));
    assert!(q.load(&entry.id).is_err());
}
