//! postie's mailbox locks against other mail programs' (issue 2/4): one
//! table of (locker, what postie must do), run by one driver.
//!
//! A locker is a real program taking one kind of lock the way mail readers
//! and delivery agents do: a classic `fcntl`/`lockf` lock (mutt, Dovecot,
//! Postfix, procmail), `flock` (Python's and util-linux `flock(1)`), or a
//! dotlock `MAILBOX.lock` (liblockfile's `dotlockfile`, procmail's
//! `lockfile`, a shell's `set -C`). For each, postie must:
//!
//! - hold its own locks so that the locker cannot take its lock
//!   ([`Must::SeePostiesLock`], on `postie::mbox` directly);
//! - wait while the locker holds its lock, holding no lock meanwhile, and
//!   deliver once it lets go ([`Must::WaitThenDeliver`], over SMTP);
//! - give up at the lock timeout, changing nothing ([`Must::TimeOut`]:
//!   `LockTimeout` from `postie::mbox`, `451 4.2.0` over SMTP);
//! - remove the locker's dotlock once it is stale ([`Must::RemoveStale`]).
//!
//! A row whose locker is not installed prints `SKIP` and is passed over.
//! No timing margins: "postie is waiting" is the `busy` line in its log,
//! "before the release" is an order of events, and every wait is a
//! generous deadline polled for.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use postie::mbox::{self, LockHooks, LockedMailbox, MboxError, MboxOptions, Quoting};
use postie::users::User;

use crate::util::*;

/// The kinds of lock postie takes, all three, on every mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fcntl,
    Dotlock,
    Flock,
}

const KINDS: [Kind; 3] = [Kind::Fcntl, Kind::Dotlock, Kind::Flock];

/// A program that takes one kind of lock on a mailbox. Its commands run
/// under `sh -c`, with `MBOX` standing for the mailbox's path.
struct Locker {
    name: &'static str,
    kind: Kind,
    /// Programs it needs on the PATH.
    needs: &'static [&'static str],
    /// Takes the lock (waiting for it), prints `locked`, and holds the lock
    /// until its stdin is closed.
    hold: &'static str,
    /// Releases the lock, where closing `hold`'s stdin does not.
    release: Option<&'static str>,
    /// One attempt, without waiting: takes the lock and lets go at once;
    /// exits 0 if and only if the lock was free.
    try_take: &'static str,
}

const PY_LOCKF: Locker = Locker {
    name: "python3 fcntl.lockf",
    kind: Kind::Fcntl,
    needs: &["python3"],
    hold: r#"exec python3 -c 'import fcntl,sys; f=open(sys.argv[1],"r+"); fcntl.lockf(f, fcntl.LOCK_EX); print("locked", flush=True); sys.stdin.read()' MBOX"#,
    release: None,
    try_take: r#"exec python3 -c 'import fcntl,sys; f=open(sys.argv[1],"r+"); fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)' MBOX 2>/dev/null"#,
};

const PY_FLOCK: Locker = Locker {
    name: "python3 fcntl.flock",
    kind: Kind::Flock,
    needs: &["python3"],
    hold: r#"exec python3 -c 'import fcntl,sys; f=open(sys.argv[1],"r+"); fcntl.flock(f, fcntl.LOCK_EX); print("locked", flush=True); sys.stdin.read()' MBOX"#,
    release: None,
    try_take: r#"exec python3 -c 'import fcntl,sys; f=open(sys.argv[1],"r+"); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)' MBOX 2>/dev/null"#,
};

const FLOCK_1: Locker = Locker {
    name: "flock(1)",
    kind: Kind::Flock,
    needs: &["flock"],
    hold: "exec flock MBOX sh -c 'echo locked && exec cat >/dev/null'",
    release: None,
    try_take: "exec flock -n MBOX true",
};

const DOTLOCKFILE: Locker = Locker {
    name: "dotlockfile (liblockfile)",
    kind: Kind::Dotlock,
    needs: &["dotlockfile"],
    hold: "dotlockfile -l -r 0 MBOX.lock && echo locked && exec cat >/dev/null",
    release: Some("dotlockfile -u MBOX.lock"),
    try_take: "dotlockfile -l -r 0 MBOX.lock && dotlockfile -u MBOX.lock",
};

const LOCKFILE: Locker = Locker {
    name: "lockfile (procmail)",
    kind: Kind::Dotlock,
    needs: &["lockfile"],
    hold: "lockfile -r 0 MBOX.lock && echo locked && exec cat >/dev/null",
    release: Some("rm -f MBOX.lock"),
    try_take: "lockfile -r 0 MBOX.lock 2>/dev/null && rm -f MBOX.lock",
};

/// A plain lock file made with `O_EXCL` by the shell, as scripts do.
const NOCLOBBER: Locker = Locker {
    name: "sh set -C (plain MBOX.lock)",
    kind: Kind::Dotlock,
    needs: &[],
    hold: "set -C && : >MBOX.lock && echo locked && exec cat >/dev/null",
    release: Some("rm -f MBOX.lock"),
    try_take: "set -C && { : >MBOX.lock; } 2>/dev/null && rm -f MBOX.lock",
};

/// What postie must do against a locker.
#[derive(Debug, Clone, Copy)]
enum Must {
    /// While postie holds a mailbox (`mbox::open_locked_with`), the locker
    /// cannot take its lock, and postie's dotlock (`0\n`) is the only file
    /// it left beside the mailbox; once postie unlocks or drops the
    /// mailbox, or refuses one found unsafe under its locks, it can, and
    /// nothing of postie's is left.
    SeePostiesLock,
    /// `mbox::open_locked_with` waits while the locker holds the mailbox,
    /// holding none of the other kinds of lock meanwhile, and locks once
    /// it lets go. And over SMTP, a message to alice and jon while the
    /// locker holds jon's mailbox:
    /// postie logs jon's as busy and neither replies nor writes; meanwhile
    /// another program can take every lock of alice's mailbox and the
    /// other kinds of jon's (postie holds none while it waits); once the
    /// locker lets go, 250 (after the release), one message in each
    /// mailbox, and no dotlock left.
    WaitThenDeliver,
    /// The lock held past the lock timeout: `mbox::open_locked_with` gives
    /// `LockTimeout` after its own timeout and at the caller's earlier
    /// deadline; over SMTP (`--lock-timeout 1`) 451 4.2.0. Neither mailbox
    /// changes, the locker's lock is left as it was, nothing of postie's
    /// is left; once the locker lets go, the next message is delivered.
    TimeOut,
    /// The locker's dotlock made an hour old: with `--stale-lock 60`
    /// postie removes it (saying so in its log) and delivers.
    RemoveStale,
}

/// The table: every locker against every rule that applies to its kind.
const ROWS: &[(&Locker, Must)] = &[
    (&PY_LOCKF, Must::SeePostiesLock),
    (&PY_FLOCK, Must::SeePostiesLock),
    (&FLOCK_1, Must::SeePostiesLock),
    (&DOTLOCKFILE, Must::SeePostiesLock),
    (&LOCKFILE, Must::SeePostiesLock),
    (&NOCLOBBER, Must::SeePostiesLock),
    (&PY_LOCKF, Must::WaitThenDeliver),
    (&PY_FLOCK, Must::WaitThenDeliver),
    (&FLOCK_1, Must::WaitThenDeliver),
    (&DOTLOCKFILE, Must::WaitThenDeliver),
    (&LOCKFILE, Must::WaitThenDeliver),
    (&NOCLOBBER, Must::WaitThenDeliver),
    (&PY_LOCKF, Must::TimeOut),
    (&PY_FLOCK, Must::TimeOut),
    (&FLOCK_1, Must::TimeOut),
    (&DOTLOCKFILE, Must::TimeOut),
    (&LOCKFILE, Must::TimeOut),
    (&NOCLOBBER, Must::TimeOut),
    (&DOTLOCKFILE, Must::RemoveStale),
    (&LOCKFILE, Must::RemoveStale),
    (&NOCLOBBER, Must::RemoveStale),
];

/// The driver: runs every row of [`ROWS`], printing its name first.
#[test]
fn other_programs_locks_against_posties() {
    for (locker, must) in ROWS {
        let row = format!("{} / {must:?}", locker.name);
        eprintln!("row: {row}");
        // python3 reads the mailboxes back and probes the locks.
        let needs = locker.needs.iter().chain(&["python3"]);
        if let Some(tool) = needs.into_iter().find(|tool| !on_path(tool)) {
            eprintln!("SKIP locks: {row}: {tool} is not installed");
            continue;
        }
        match must {
            Must::SeePostiesLock => see_posties_lock(locker, &row),
            Must::WaitThenDeliver => wait_then_deliver(locker, &row),
            Must::TimeOut => time_out(locker, &row),
            Must::RemoveStale => remove_stale(locker, &row),
        }
    }
}

/// Whether `tool` is on the PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Runs `cmd` (of a [`Locker`]) under `sh -c` for the mailbox `mbox`.
fn sh(cmd: &str, mbox: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd.replace("MBOX", &mbox.display().to_string()));
    c
}

/// The locker's lock on `mbox`, taken: the running `hold` command.
struct Held<'a> {
    locker: &'a Locker,
    mbox: PathBuf,
    child: Child,
}

impl Locker {
    fn hold(&self, mbox: &Path) -> Held<'_> {
        let mut child = sh(self.hold, mbox)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "{}: did not lock", self.name);
        Held {
            locker: self,
            mbox: mbox.to_owned(),
            child,
        }
    }

    fn try_take(&self, mbox: &Path) -> bool {
        sh(self.try_take, mbox).status().unwrap().success()
    }
}

impl Held<'_> {
    /// Lets go of the lock and waits for the holder to end.
    fn release(mut self) {
        if let Some(cmd) = self.locker.release {
            assert!(
                sh(cmd, &self.mbox).status().unwrap().success(),
                "{}: release failed",
                self.locker.name
            );
        }
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // After a failed assertion: end the holder all the same.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn me() -> User {
    User {
        name: "me".into(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        ..Default::default()
    }
}

fn opts(lock_timeout: Duration) -> MboxOptions {
    MboxOptions {
        mode: 0o600,
        quoting: Quoting::Mboxrd,
        lock_timeout,
        stale_lock: mbox::DEFAULT_STALE_LOCK,
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// `mbox::open_locked_with` without the journal's seams.
fn open_locked(
    path: &Path,
    opts: &MboxOptions,
    deadline: Instant,
) -> Result<LockedMailbox, MboxError> {
    mbox::open_locked_with(path, &me(), opts, deadline, &mut LockHooks::default())
}

/// [`open_locked`] on another thread, which must answer within a minute
/// (a lock timeout or deadline not kept would hang the test).
fn open_locked_within(
    path: &Path,
    opts: MboxOptions,
    deadline: Instant,
    row: &str,
) -> Result<LockedMailbox, MboxError> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    thread::spawn(move || {
        let _ = tx.send(open_locked(&path, &opts, deadline));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{row}: the lock timeout or deadline was not kept"))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn lock_of(mbox: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", mbox.display()))
}

/// [`Must::SeePostiesLock`].
fn see_posties_lock(locker: &Locker, row: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me");
    std::fs::write(&path, b"old\n").unwrap();
    let o = opts(Duration::from_secs(60));

    let mailbox = open_locked(&path, &o, far()).unwrap();
    assert!(!locker.try_take(&path), "{row}: took its lock from postie");
    // Only the mailbox and postie's dotlock: the temporary file is gone.
    assert_eq!(names(dir.path()), ["me", "me.lock"], "{row}");
    assert_eq!(std::fs::read(lock_of(&path)).unwrap(), b"0\n", "{row}");
    mailbox.unlock();
    assert!(locker.try_take(&path), "{row}: locked after unlock");
    assert_eq!(names(dir.path()), ["me"], "{row}");

    // Dropping releases every lock too.
    let mailbox = open_locked(&path, &o, far()).unwrap();
    assert!(!locker.try_take(&path), "{row}: took its lock from postie");
    drop(mailbox);
    assert!(locker.try_take(&path), "{row}: locked after drop");
    assert_eq!(names(dir.path()), ["me"], "{row}");

    // So does a mailbox found unsafe once locked.
    std::fs::hard_link(&path, dir.path().join("other")).unwrap();
    let res = open_locked(&path, &o, far());
    assert!(matches!(res, Err(MboxError::Unsafe(_))), "{row}: {res:?}");
    assert!(locker.try_take(&path), "{row}: locked after refusal");
    assert_eq!(names(dir.path()), ["me", "other"], "{row}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old\n", "{row}");
}

/// Sends one message to all of `to` from a thread: the final reply and
/// when it came.
fn send_in_background(
    srv: &Server,
    to: &[&str],
    subject: &str,
) -> mpsc::Receiver<(Reply, Instant)> {
    let (tx, rx) = mpsc::channel();
    let addr = srv.addr;
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    let subject = subject.to_string();
    thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.w.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        c.reply();
        c.expect("HELO c", 250);
        c.expect("MAIL FROM:<a@b.example>", 250);
        for t in &to {
            c.expect(&format!("RCPT TO:<{t}>"), 250);
        }
        c.expect("DATA", 354);
        c.send_raw(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes());
        let r = c.reply();
        let _ = tx.send((r, Instant::now()));
    });
    rx
}

/// Whether another program takes every lock of `kinds` on the mailbox at
/// `path` at once (`fcntl` as `lockf`, the dotlock `path.lock` by
/// `link()`, `flock`), trying every 5 ms for at most `secs` seconds; it
/// lets go at once.
fn another_program_gets(path: &Path, kinds: &[Kind], secs: u32) -> bool {
    let script = "import fcntl, os, sys, time\n\
                  path, kinds = sys.argv[1], sys.argv[2].split(',')\n\
                  end = time.monotonic() + float(sys.argv[3])\n\
                  tmp = path + '.probe.%d' % os.getpid()\n\
                  open(tmp, 'w').close()\n\
                  got = False\n\
                  while not got and time.monotonic() < end:\n    \
                      f = open(path, 'r+')\n    \
                      dot = False\n    \
                      try:\n        \
                          if 'Fcntl' in kinds:\n            \
                              fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        \
                          if 'Dotlock' in kinds:\n            \
                              os.link(tmp, path + '.lock')\n            \
                              dot = True\n        \
                          if 'Flock' in kinds:\n            \
                              fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        \
                          got = True\n    \
                      except OSError:\n        \
                          pass\n    \
                      if dot:\n        \
                          os.unlink(path + '.lock')\n    \
                      f.close()\n    \
                      if not got:\n        \
                          time.sleep(0.005)\n\
                  os.unlink(tmp)\n\
                  print('got' if got else 'busy')\n";
    let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(kinds.join(","))
        .arg(secs.to_string())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim() == "got"
}

/// [`Must::WaitThenDeliver`].
fn wait_then_deliver(locker: &Locker, row: &str) {
    wait_then_lock(locker, row);
    wait_then_deliver_over_smtp(locker, row);
}

/// [`Must::WaitThenDeliver`] on the library: `mbox::open_locked_with`
/// tries the whole set again after each back-off, holds nothing while it
/// waits, and locks once the locker lets go.
fn wait_then_lock(locker: &Locker, row: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me");
    std::fs::write(&path, b"old\n").unwrap();
    let held = locker.hold(&path);
    let (tried, tries) = mpsc::channel();
    let (done, result) = mpsc::channel();
    {
        let path = path.clone();
        thread::spawn(move || {
            let mut record = |_| {
                let _ = tried.send(());
                Ok(())
            };
            let mut hooks = LockHooks {
                record: Some(&mut record),
                ..LockHooks::default()
            };
            let o = opts(Duration::from_secs(3600));
            let res = mbox::open_locked_with(&path, &me(), &o, far(), &mut hooks);
            let _ = done.send((res, Instant::now()));
        });
    }
    // Past the fcntl lock, every round makes a dotlock, told to `record`
    // first: a second one means a round found the lock busy and the next
    // has begun. (Before an fcntl lock, which comes first, the library
    // gives no sign of trying: the SMTP half shows it waits for those.)
    if locker.kind != Kind::Fcntl {
        for _ in 0..2 {
            tries
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{row}: postie did not try the dotlock"));
        }
    }
    assert!(
        result.try_recv().is_err(),
        "{row}: locked while the lock was held"
    );
    let others: Vec<Kind> = KINDS.into_iter().filter(|&k| k != locker.kind).collect();
    assert!(
        another_program_gets(&path, &others, 60),
        "{row}: postie held {others:?} while it waited"
    );
    assert!(
        result.try_recv().is_err(),
        "{row}: locked while the lock was held"
    );

    let released = Instant::now();
    held.release();
    let (res, at) = result
        .recv_timeout(Duration::from_secs(60))
        .expect("an answer");
    let mailbox = res.unwrap_or_else(|e| panic!("{row}: {e}"));
    assert!(at >= released, "{row}: locked before the lock was released");
    assert_eq!(names(dir.path()), ["me", "me.lock"], "{row}");
    mailbox.unlock();
    assert_eq!(names(dir.path()), ["me"], "{row}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old\n", "{row}");
}

/// What is beside the mailbox `me` while `locker` holds it: its dotlock, if
/// it takes one.
fn locker_files(locker: &Locker) -> &'static [&'static str] {
    match locker.kind {
        Kind::Dotlock => &["me", "me.lock"],
        _ => &["me"],
    }
}

/// [`Must::WaitThenDeliver`] over SMTP.
fn wait_then_deliver_over_smtp(locker: &Locker, row: &str) {
    let fx = Fixture::without_queue();
    for u in ["alice", "jon"] {
        std::fs::write(fx.mailbox(u), b"").unwrap();
    }
    let srv = Server::start(&fx, &[]);
    let jon = fx.mailbox("jon");
    let held = locker.hold(&jon);
    // "alice" sorts before "jon": hers is locked first.
    let rx = send_in_background(&srv, &["alice", "jon"], row);
    let busy = format!("{}: busy", jon.display());
    assert!(
        wait_for(Duration::from_secs(60), || srv.log().contains(&busy)),
        "{row}: postie did not find jon's mailbox busy\n{}",
        srv.log()
    );
    assert!(
        rx.try_recv().is_err(),
        "{row}: replied while the lock was held"
    );
    // Waiting, postie holds no lock: not on alice's mailbox, and not of the
    // other kinds on jon's.
    assert!(
        another_program_gets(&fx.mailbox("alice"), &KINDS, 60),
        "{row}: alice's mailbox stayed locked while postie waited for jon's\n{}",
        srv.log()
    );
    let others: Vec<Kind> = KINDS.into_iter().filter(|&k| k != locker.kind).collect();
    assert!(
        another_program_gets(&jon, &others, 60),
        "{row}: postie held {others:?} on jon's mailbox while it waited\n{}",
        srv.log()
    );
    assert!(
        rx.try_recv().is_err(),
        "{row}: replied while the lock was held"
    );
    for u in ["alice", "jon"] {
        assert_eq!(
            fx.read_mailbox(u),
            b"",
            "{row}: {u}'s written while the lock was held"
        );
    }

    let released = Instant::now();
    held.release();
    let (r, at) = rx.recv_timeout(Duration::from_secs(60)).expect("a reply");
    assert_eq!(r.code, 250, "{row}: {}", r.text());
    assert!(at >= released, "{row}: 250 before the lock was released");
    for u in ["alice", "jon"] {
        assert_eq!(python_mbox(&fx.mailbox(u)).len(), 1, "{row}: {u}");
        assert!(
            !lock_of(&fx.mailbox(u)).exists(),
            "{row}: {u}.lock left behind"
        );
    }
}

/// [`Must::TimeOut`].
fn time_out(locker: &Locker, row: &str) {
    // The library: its own timeout, then the caller's deadline.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me");
    std::fs::write(&path, b"old\n").unwrap();
    let held = locker.hold(&path);
    let theirs = std::fs::read(lock_of(&path)).ok();
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    let res = open_locked_within(&path, opts(timeout), far(), row);
    assert!(matches!(res, Err(MboxError::LockTimeout)), "{row}: {res:?}");
    assert!(start.elapsed() >= timeout, "{row}: gave up early");
    let deadline = Instant::now() + timeout;
    let res = open_locked_within(&path, opts(Duration::from_secs(3600)), deadline, row);
    assert!(matches!(res, Err(MboxError::LockTimeout)), "{row}: {res:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old\n", "{row}");
    // Theirs is left as it was, and nothing of postie's is left.
    assert_eq!(std::fs::read(lock_of(&path)).ok(), theirs, "{row}");
    assert_eq!(names(dir.path()), locker_files(locker), "{row}");
    held.release();

    // Over SMTP: 451 4.2.0 for the whole transaction.
    let fx = Fixture::without_queue();
    for u in ["alice", "jon"] {
        std::fs::write(fx.mailbox(u), format!("{u}'s\n")).unwrap();
    }
    let srv = Server::start(&fx, &["--lock-timeout", "1"]);
    let jon = fx.mailbox("jon");
    let held = locker.hold(&jon);
    let theirs = std::fs::read(lock_of(&jon)).ok();
    let rx = send_in_background(&srv, &["alice", "jon"], row);
    let (r, _) = rx.recv_timeout(Duration::from_secs(60)).expect("a reply");
    assert!(r.lines[0].starts_with("451 4.2.0"), "{row}: {}", r.text());
    for u in ["alice", "jon"] {
        assert_eq!(
            fx.read_mailbox(u),
            format!("{u}'s\n").as_bytes(),
            "{row}: {u}"
        );
    }
    assert!(!lock_of(&fx.mailbox("alice")).exists(), "{row}");
    assert_eq!(
        std::fs::read(lock_of(&jon)).ok(),
        theirs,
        "{row}: a foreign lock is not ours to remove"
    );
    held.release();
    let rx = send_in_background(&srv, &["alice", "jon"], "again");
    let (r, _) = rx.recv_timeout(Duration::from_secs(60)).expect("a reply");
    assert_eq!(r.code, 250, "{row}: {}", r.text());
    for u in ["alice", "jon"] {
        let data = fx.read_mailbox(u);
        assert!(
            data.starts_with(format!("{u}'s\nFrom ").as_bytes()),
            "{row}: {u}"
        );
        assert!(!lock_of(&fx.mailbox(u)).exists(), "{row}");
    }
}

/// [`Must::RemoveStale`].
fn remove_stale(locker: &Locker, row: &str) {
    let fx = Fixture::without_queue();
    let jon = fx.mailbox("jon");
    std::fs::write(&jon, b"").unwrap();
    let held = locker.hold(&jon);
    let lock = lock_of(&jon);
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    set_mtime(&lock, hour_ago);
    let srv = Server::start(&fx, &["--stale-lock", "60"]);
    let mut c = srv.connect();
    c.reply();
    c.send_message("a@b.example", "jon", b"Subject: stale\r\n\r\nx\r\n");
    assert!(!lock.exists(), "{row}");
    assert!(srv.log_has("stale"), "{row}: {}", srv.log());
    assert_eq!(python_mbox(&jon).len(), 1, "{row}");
    drop(held); // its lock is gone already: nothing to release
}

/// Sets the modification time of `path` (owned by us, maybe read-only).
fn set_mtime(path: &Path, to: std::time::SystemTime) {
    let secs = to.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ok = Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "touch {}", path.display());
}
