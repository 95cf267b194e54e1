//! Delivery through the queue, over SMTP against the real binary: a
//! recipient whose mailbox cannot take the message now waits in the queue
//! (`--queue-dir`), the others have it at once, and the client gets 250
//! only when both are durable.

use std::io::Write;

use crate::util::*;

/// The queue directory's file names.
fn queue_files(fx: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fx.queue())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The "ENOSPC on one recipient's filesystem": the spool on a
/// tiny tmpfs where a 40 KB message fits once, not twice. The transaction
/// that tried both is rolled back and tried again without the one that
/// failed: one mailbox has the message, the other recipient waits in the
/// queue (4.3.1, the disk full), and the client gets 250. Once there is
/// room again, a run of the queue delivers it there too, once.
#[test]
fn a_full_disk_under_one_mailbox_queues_that_recipient_only() {
    let test = "a_full_disk_under_one_mailbox_queues_that_recipient_only";
    let fx = Fixture::new();
    let Some(_tmpfs) = Tmpfs::mount(&fx.spool(), "64k", "0755", test) else {
        return;
    };
    let srv = Server::start(&fx, &["--queue-lock-wait", "1"]);
    let mut c = srv.connect();
    c.reply();
    let r = c.send_big(&["alice", "jon"]);
    assert_eq!(r.code, 250, "{}", r.text());
    let (a, j) = (
        python_mbox(&fx.mailbox("alice")).len(),
        python_mbox(&fx.mailbox("jon")).len(),
    );
    assert_eq!(a + j, 1, "one mailbox has it: alice {a}, jon {j}");
    assert!(srv.log_has("status=deferred (4.3.1 "), "{}", srv.log());
    let files = queue_files(&fx);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("df") && files[1].starts_with("qf"));
}

/// The "a full queue filesystem": a recipient is busy (its
/// mailbox held with flock past the short wait) and its queue entry
/// cannot be written (the queue on a tmpfs that is full): 452 4.3.1 at
/// the end of DATA, and nothing is written anywhere: the free mailbox is
/// as it was, and the queue holds nothing of the message.
#[test]
fn a_full_queue_filesystem_is_452_and_writes_nothing() {
    let test = "a_full_queue_filesystem_is_452_and_writes_nothing";
    let fx = Fixture::new();
    let Some(_tmpfs) = Tmpfs::mount(&fx.queue(), "64k", "0700", test) else {
        return;
    };
    // The queue full: a file of ours fills it.
    let filler = fx.queue().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![b'x'; 4096];
    while f.write_all(&block).is_ok() {}
    drop(f);
    std::fs::write(fx.mailbox("alice"), b"").unwrap();
    let held = fx.hold_flock("jon");
    let srv = Server::start(&fx, &["--queue-lock-wait", "1"]);
    let mut c = srv.connect();
    c.reply();
    let r = c.send_big(&["alice", "jon"]);
    assert_eq!(r.code, 452, "{}", r.text());
    assert!(r.lines[0].starts_with("452 4.3.1"), "{}", r.text());
    assert_eq!(fx.read_mailbox("alice"), b"");
    assert_eq!(fx.read_mailbox("jon"), b"");
    assert_eq!(queue_files(&fx), ["filler"]);
    drop(held);
    // With room again, the same message goes through at once.
    std::fs::remove_file(&filler).unwrap();
    let r = c.send_big(&["alice", "jon"]);
    assert_eq!(r.code, 250, "{}", r.text());
    assert_eq!(python_mbox(&fx.mailbox("alice")).len(), 1);
    assert_eq!(python_mbox(&fx.mailbox("jon")).len(), 1);
    assert!(queue_files(&fx).is_empty());
}

/// The first test: a recipient whose mailbox is held with flock
/// for the whole transaction. The client gets 250; the other recipient
/// has the message at once; the busy one's waits in the queue (listed by
/// `postie queue` for root, its last error 4.2.0), and once the lock goes
/// the daemon's queue runner delivers it, exactly once, and the queue is
/// empty.
#[test]
fn a_flocked_recipient_gets_250_and_the_message_from_the_runner_once() {
    let fx = Fixture::new();
    let held = fx.hold_flock("jon");
    let srv = Server::start(
        &fx,
        &[
            "--queue-lock-wait",
            "1",
            "--minimal-backoff",
            "1s",
            "--maximal-backoff",
            "2s",
        ],
    );
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO c", 250);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect("RCPT TO:<alice>", 250);
    c.expect("RCPT TO:<jon>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: busy\r\n\r\none of two waits\r\n.\r\n");
    c.expect_reply(250);
    assert_eq!(python_mbox(&fx.mailbox("alice")).len(), 1);
    assert_eq!(fx.read_mailbox("jon"), b"");
    let files = queue_files(&fx);
    assert_eq!(files.len(), 2, "{files:?}");
    let id = files[0].strip_prefix("df").unwrap().to_string();
    assert!(srv.log_has("to=<jon> size="), "{}", srv.log());
    assert!(srv.log_has(&format!("queue={id}")), "{}", srv.log());
    if nix::unistd::geteuid().is_root() {
        let mut args = fx.args();
        args.push("queue".into());
        let out = run_postie(&args);
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains(&id), "{listing}");
        assert!(listing.contains("<a@b.example>"), "{listing}");
        assert!(listing.contains("4.2.0"), "{listing}");
        assert!(listing.contains("jon"), "{listing}");
    }
    drop(held);
    assert!(
        wait_for(std::time::Duration::from_secs(60), || queue_files(&fx)
            .is_empty()),
        "the runner did not deliver: {:?}\n{}",
        queue_files(&fx),
        srv.log()
    );
    let jon = python_mbox(&fx.mailbox("jon"));
    assert_eq!(jon.len(), 1);
    assert_eq!(jon[0].subject, "busy");
    assert_eq!(jon[0].body, b"one of two waits\n");
    assert_eq!(jon[0].return_path, "<a@b.example>");
    assert_eq!(python_mbox(&fx.mailbox("alice")).len(), 1);
    // Nothing more to do for anyone: a flush changes nothing.
    let mut args = fx.args();
    args.extend(["queue".into(), "flush".into()]);
    let out = run_postie(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(python_mbox(&fx.mailbox("jon")).len(), 1);
}
