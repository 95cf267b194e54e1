//! postie 8 end to end, through `postie serve`: programs, files,
//! `:include:` lists and `~/.forward`, with the identities, environment,
//! exit statuses and refusals postie(8) documents (PROGRAMS AND FILES,
//! PROGRAMS, FORWARD FILES).
//!
//! Test users get homes of their own under the fixture's directory. Run
//! as root, each is a uid of its own that no other account has (so that a
//! program's identity shows), and the default user of root's aliases is
//! `mailrun`; run as an ordinary user, every user is that user, and
//! postie runs everything as itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

/// How long a test waits for the queue runner to have run a program (it
/// runs within a second of the 250; this only bounds a broken run).
const RUN_WAIT: Duration = Duration::from_secs(60);

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A fixture with users of their own homes.
struct Users {
    fx: Fixture,
}

impl Users {
    /// `names` as users (uids 60001, 60002, ... as root), each with a home
    /// `home/NAME` (mode 0755, theirs), and `mailrun` (60000), the
    /// default user for root's aliases.
    fn new(names: &[&str]) -> Users {
        let fx = Fixture::new();
        let mut passwd = std::fs::read_to_string(fx.dir.path().join("passwd")).unwrap();
        std::fs::create_dir(fx.dir.path().join("home")).unwrap();
        let mut all = vec!["mailrun"];
        all.extend_from_slice(names);
        for (i, name) in all.iter().enumerate() {
            let uid = Users::uid_for(i);
            let home = fx.dir.path().join("home").join(name);
            std::fs::create_dir(&home).unwrap();
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
            chown(&home, uid);
            passwd.push_str(&format!(
                "{name}:x:{uid}:{uid}::{}:/bin/sh\n",
                home.display()
            ));
        }
        std::fs::write(fx.dir.path().join("passwd"), passwd).unwrap();
        if root() {
            // Debian's spool (root:mail 2775), where a user's mailbox is
            // made with their uid; without a group mail, a sticky 1777.
            let spool = fx.spool();
            match nix::unistd::Group::from_name("mail").unwrap() {
                Some(g) => {
                    nix::unistd::chown(&spool, None, Some(g.gid)).unwrap();
                    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2775))
                        .unwrap();
                }
                None => {
                    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777))
                        .unwrap();
                }
            }
        }
        Users { fx }
    }

    fn uid_for(i: usize) -> u32 {
        if root() {
            60000 + i as u32
        } else {
            nix::unistd::geteuid().as_raw()
        }
    }

    /// The uid of the `i`th user given to [`Users::new`] (from 1; 0 is
    /// `mailrun`).
    fn uid(&self, i: usize) -> u32 {
        Users::uid_for(i)
    }

    fn home(&self, name: &str) -> PathBuf {
        self.fx.dir.path().join("home").join(name)
    }

    /// Writes `name`'s `~/.forward` (theirs, mode 0644).
    fn forward(&self, name: &str, uid: u32, text: &str) {
        let path = self.home(name).join(".forward");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        chown(&path, uid);
    }

    /// A directory `NAME` that anyone may write to (sticky), for what
    /// programs record.
    fn drop_box(&self, name: &str) -> PathBuf {
        let d = self.fx.dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        d
    }

    /// `postie serve` with the default user `mailrun` and `extra`.
    fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--default-user", "mailrun"];
        args.extend_from_slice(extra);
        Server::start(&self.fx, &args)
    }

    /// The queue's entries (envelope files).
    fn queued(&self) -> Vec<String> {
        std::fs::read_dir(self.fx.queue())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("qf"))
            .collect()
    }
}

fn chown(path: &Path, uid: u32) {
    if root() {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .unwrap();
    }
}

/// A script that records, in the directory given as its argument, its
/// uid, gid, groups, working directory, environment and standard input,
/// then writes `done`.
fn recorder(dir: &Path) -> PathBuf {
    let path = dir.join("record.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         out=\"$1\"\n\
         id -u > \"$out/uid\"\n\
         id -g > \"$out/gid\"\n\
         id -G > \"$out/groups\"\n\
         pwd > \"$out/cwd\"\n\
         env > \"$out/env\"\n\
         ls /proc/$$/fd > \"$out/fds\"\n\
         cat > \"$out/stdin\"\n\
         : > \"$out/done\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A program named in `~/.forward` runs as that user, in their home,
/// with the environment of Postfix's local(8) and nothing else, only
/// descriptors 0 to 2, and reads the message with a `From ` line,
/// `Return-Path:` and `Delivered-To:`; it runs from the queue after the
/// 250, and the queue is empty afterwards. The user's mailbox gets
/// nothing: the `.forward` sent it elsewhere.
#[test]
fn forward_program_runs_as_the_user_with_postfix_environment() {
    let u = Users::new(&["pat"]);
    let out = u.drop_box("out");
    let script = recorder(u.fx.dir.path());
    u.forward(
        "pat",
        u.uid(1),
        &format!("\"|{} {}\"\n", script.display(), out.display()),
    );
    let srv = u.serve(&[]);
    let mut c = srv.connect();
    c.reply();
    c.send_message(
        "sender@example.org",
        "Pat+lists@razorback.test",
        b"Subject: to a program\r\n\r\nline one\r\nFrom here\r\n",
    );
    assert!(
        wait_for(RUN_WAIT, || out.join("done").exists()),
        "the program did not run:\n{}",
        srv.log()
    );
    assert_eq!(read(&out.join("uid")).trim(), u.uid(1).to_string());
    assert_eq!(read(&out.join("gid")).trim(), u.uid(1).to_string());
    if root() {
        // No supplementary group of root's (the test user has none).
        assert_eq!(read(&out.join("groups")).trim(), u.uid(1).to_string());
    }
    assert_eq!(
        read(&out.join("cwd")).trim(),
        u.home("pat").to_str().unwrap()
    );
    let mut env: Vec<String> = read(&out.join("env"))
        .lines()
        // What the shell adds itself.
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .map(String::from)
        .collect();
    env.sort();
    let home = u.home("pat");
    let want = [
        "DOMAIN=razorback.test".to_string(),
        "EXTENSION=lists".into(),
        format!("HOME={}", home.display()),
        "LOCAL=pat+lists".into(),
        "LOGNAME=pat".into(),
        "ORIGINAL_RECIPIENT=pat+lists@razorback.test".into(),
        "PATH=/usr/bin:/bin".into(),
        "RECIPIENT=pat+lists@razorback.test".into(),
        "SENDER=sender@example.org".into(),
        "SHELL=/bin/sh".into(),
        "USER=pat".into(),
    ];
    // Not root, postie runs it as itself, but in pat's home and name.
    assert_eq!(env, want);
    let mut fds: Vec<u32> = read(&out.join("fds"))
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    fds.sort_unstable();
    // 0, 1 and 2, and the shell's own (dash keeps the script and saved
    // descriptors at 10 and up): nothing of postie's.
    assert!(fds[..3] == [0, 1, 2], "{fds:?}");
    assert!(fds.iter().skip(3).all(|&f| f >= 10), "{fds:?}");
    let stdin = read(&out.join("stdin"));
    assert!(stdin.starts_with("From sender@example.org "), "{stdin}");
    let lines: Vec<&str> = stdin.lines().collect();
    assert_eq!(lines[1], "Return-Path: <sender@example.org>");
    assert_eq!(lines[2], "Delivered-To: pat+lists@razorback.test");
    assert!(lines[3].starts_with("Received: "), "{stdin}");
    // The message as received, no >From quoting: the program's own job.
    assert!(
        stdin.ends_with("Subject: to a program\n\nline one\nFrom here\n"),
        "{stdin:?}"
    );
    assert!(u.fx.read_mailbox("pat").is_empty());
    assert!(
        wait_for(RUN_WAIT, || u.queued().is_empty()),
        "{:?}\n{}",
        u.queued(),
        srv.log()
    );
}

/// procmail from Debian's package, run by `~/.forward`, files a message
/// in a folder of its own by its `~/.procmailrc`.
#[test]
fn procmail_through_forward_files_into_its_folder() {
    if !have("procmail", "procmail_through_forward_files_into_its_folder") {
        return;
    }
    let u = Users::new(&["pat"]);
    let home = u.home("pat");
    let rc = home.join(".procmailrc");
    // procmail takes $HOME from the system's passwd database, which does
    // not know the test's users: the rcfile is named, with its paths.
    std::fs::write(
        &rc,
        format!(
            "MAILDIR={h}/Mail\nDEFAULT={h}/Mail/inbox\nLOGFILE={h}/procmail.log\n\
             :0:\n* ^Subject:.*weekly report\nreports\n",
            h = home.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&rc, u.uid(1));
    let mail = home.join("Mail");
    std::fs::create_dir(&mail).unwrap();
    chown(&mail, u.uid(1));
    u.forward(
        "pat",
        u.uid(1),
        &format!("\"|/usr/bin/procmail {}\"\n", rc.display()),
    );
    let srv = u.serve(&[]);
    let mut c = srv.connect();
    c.reply();
    c.send_message(
        "boss@example.org",
        "pat",
        b"Subject: the weekly report\r\n\r\nnumbers\r\n",
    );
    c.send_message("friend@example.org", "pat", b"Subject: hello\r\n\r\nhi\r\n");
    let reports = mail.join("reports");
    let inbox = mail.join("inbox");
    assert!(
        wait_for(RUN_WAIT, || {
            reports.exists() && inbox.exists() && u.queued().is_empty()
        }),
        "{}\n{}",
        srv.log(),
        std::fs::read_to_string(home.join("procmail.log")).unwrap_or_default()
    );
    let r = python_mbox(&reports);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].subject, "the weekly report");
    assert!(r[0].from.starts_with("boss@example.org "), "{}", r[0].from);
    let i = python_mbox(&inbox);
    assert_eq!(i.len(), 1);
    assert_eq!(i[0].subject, "hello");
    assert!(u.fx.read_mailbox("pat").is_empty());
}

/// Programs of a root-owned aliases file run as the default user; their
/// exit status decides: 0 delivered; 75 (EX_TEMPFAIL) and a program over
/// `--command-time-limit` (killed, with the process group it started)
/// stay in the queue with why; 67 (EX_NOUSER) returns the message to its
/// sender with the program's first line of output.
#[test]
fn program_exit_statuses_decide() {
    let u = Users::new(&[]);
    let out = u.drop_box("out");
    let pidfile = out.join("sleeper.pid");
    std::fs::write(
        u.fx.aliases(),
        format!(
            "ok: \"|id -u > {o}/ok.tmp && mv {o}/ok.tmp {o}/ok.uid\"\n\
             later: \"|exit 75\"\n\
             nouser: \"|echo no such account here; exit 67\"\n\
             slow: \"|sleep 1000 & echo $! > {p}; wait\"\n",
            o = out.display(),
            p = pidfile.display()
        ),
    )
    .unwrap();
    let srv = u.serve(&["--command-time-limit", "2"]);
    let mut c = srv.connect();
    c.reply();
    for to in ["ok", "later", "nouser", "slow"] {
        c.send_message(
            "jon@razorback.test",
            to,
            format!("Subject: to {to}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    // 0: run as the default user (mailrun, 60000, as root).
    assert!(
        wait_for(RUN_WAIT, || out.join("ok.uid").exists()),
        "{}",
        srv.log()
    );
    assert_eq!(read(&out.join("ok.uid")).trim(), u.uid(0).to_string());
    // 67: a bounce to jon quoting the output.
    let jon = || String::from_utf8_lossy(&u.fx.read_mailbox("jon")).into_owned();
    assert!(
        wait_for(RUN_WAIT, || jon().contains("no such account here")),
        "{}\n{}",
        jon(),
        srv.log()
    );
    let bounce = jon();
    assert_eq!(python_mbox(&u.fx.mailbox("jon")).len(), 1, "{bounce}");
    assert!(bounce.contains("67"), "{bounce}");
    // 75 and the time limit: both still queued, with why.
    let show = |srv: &Server| {
        let o = run_postie(&[&u.fx.args()[..], &["queue".into(), "show".into()]].concat());
        format!("{}\n{}", String::from_utf8_lossy(&o.stdout), srv.log())
    };
    assert!(
        wait_for(RUN_WAIT, || {
            let s = show(&srv);
            s.contains("exit status 75") && s.contains("time limit")
        }),
        "{}",
        show(&srv)
    );
    // 0 and 67 taken off the queue (each once its run has ended), 75 and
    // the slow one kept.
    assert!(
        wait_for(RUN_WAIT, || u.queued().len() == 2),
        "{}",
        show(&srv)
    );
    // The slow one's background child went with its process group (gone,
    // or a zombie that init has not reaped yet).
    let Ok(pid) = std::fs::read_to_string(&pidfile) else {
        eprintln!(
            "SKIP program_exit_statuses_decide (the killed group): the program was killed before it wrote its child's pid (a busy machine)"
        );
        return;
    };
    let pid = pid.trim();
    let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    };
    assert!(
        wait_for(RUN_WAIT, dead),
        "pid {pid} outlived the time limit"
    );
}

/// Unsafe `~/.forward` files are ignored with a log line, and the mail
/// goes to the mailbox: nothing in them runs (no queue entry is made for
/// a program), nothing is lost.
#[test]
fn unsafe_forward_files_run_nothing_and_lose_nothing() {
    let u = Users::new(&["pat"]);
    let out = u.drop_box("out");
    let fwd = format!("\"|touch {}/ran\"\n", out.display());
    u.forward("pat", u.uid(1), &fwd);
    // Group-writable.
    std::fs::set_permissions(
        u.home("pat").join(".forward"),
        std::fs::Permissions::from_mode(0o664),
    )
    .unwrap();
    let srv = u.serve(&[]);
    let mut c = srv.connect();
    c.reply();
    c.send_message("a@b.example", "pat", b"Subject: one\r\n\r\nx\r\n");
    // A home others may write.
    std::fs::set_permissions(
        u.home("pat").join(".forward"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(u.home("pat"), std::fs::Permissions::from_mode(0o777)).unwrap();
    c.send_message("a@b.example", "pat", b"Subject: two\r\n\r\nx\r\n");
    std::fs::set_permissions(u.home("pat"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A symbolic link to someone else's file (root's, as root).
    if root() {
        let other = u.fx.dir.path().join("other-forward");
        std::fs::write(&other, &fwd).unwrap();
        std::fs::remove_file(u.home("pat").join(".forward")).unwrap();
        std::os::unix::fs::symlink(&other, u.home("pat").join(".forward")).unwrap();
        std::os::unix::fs::lchown(u.home("pat").join(".forward"), Some(u.uid(1)), None).unwrap();
        c.send_message("a@b.example", "pat", b"Subject: three\r\n\r\nx\r\n");
    } else {
        eprintln!(
            "SKIP unsafe_forward_files_run_nothing_and_lose_nothing (symlink to another's file): not root"
        );
    }
    let msgs = python_mbox(&u.fx.mailbox("pat"));
    let subjects: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
    let want: &[&str] = if root() {
        &["one", "two", "three"]
    } else {
        &["one", "two"]
    };
    assert_eq!(subjects, want, "{}", srv.log());
    assert!(u.queued().is_empty(), "{:?}", u.queued());
    assert!(!out.join("ran").exists());
    let log = srv.log();
    assert!(
        log.contains("ignored, the mail goes to the mailbox of pat"),
        "{log}"
    );
}

/// Loops through `.forward` files end where sendmail ends them: pat →
/// sam → pat delivers to pat; `\kim, jon` in kim's `.forward` keeps a
/// copy and forwards one; a `.forward` naming its own user (lee → lee,
/// alice) is that user's mailbox. An `:include:` list expands to its
/// members.
#[test]
fn forward_loops_backslash_and_include_lists() {
    let u = Users::new(&["pat", "sam", "kim", "lee"]);
    u.forward("pat", u.uid(1), "sam\n");
    u.forward("sam", u.uid(2), "pat\n");
    u.forward("kim", u.uid(3), "\\kim, jon\n");
    u.forward("lee", u.uid(4), "lee, alice\n");
    let list = u.fx.dir.path().join("team.list");
    std::fs::write(&list, "# the team\nkim\nalice\n").unwrap();
    std::fs::write(
        u.fx.aliases(),
        format!("team: :include:{}\n", list.display()),
    )
    .unwrap();
    let srv = u.serve(&[]);
    let mut c = srv.connect();
    c.reply();
    c.send_message("a@b.example", "pat", b"Subject: to pat\r\n\r\nx\r\n");
    c.send_message("a@b.example", "sam", b"Subject: to sam\r\n\r\nx\r\n");
    c.send_message("a@b.example", "team", b"Subject: to team\r\n\r\nx\r\n");
    c.send_message("a@b.example", "lee", b"Subject: to lee\r\n\r\nx\r\n");
    let subjects = |user: &str| -> Vec<String> {
        python_mbox(&u.fx.mailbox(user))
            .into_iter()
            .map(|m| m.subject)
            .collect()
    };
    assert_eq!(subjects("pat"), ["to pat"], "{}", srv.log());
    assert_eq!(subjects("sam"), ["to sam"]);
    // kim keeps a copy (\kim) and forwards one to jon.
    assert_eq!(subjects("kim"), ["to team"]);
    assert_eq!(subjects("jon"), ["to team"]);
    // lee -> lee, alice: lee's own mailbox (a name met again on its own
    // path) and alice.
    assert_eq!(subjects("lee"), ["to lee"]);
    assert_eq!(subjects("alice"), ["to team", "to lee"]);
}

/// A file target from root's aliases is appended as an mbox, created
/// 0600 by the default user; one that is a symbolic link is refused and
/// its target untouched, and the sender gets the message back.
#[test]
fn file_targets_append_and_refuse_symlinks() {
    let u = Users::new(&[]);
    let dir = u.drop_box("files");
    let victim = u.fx.dir.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
    std::fs::write(
        u.fx.aliases(),
        format!(
            "archive: {d}/archive, alice\nsneaky: {d}/link\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let srv = u.serve(&[]);
    let mut c = srv.connect();
    c.reply();
    c.send_message(
        "jon@razorback.test",
        "archive",
        b"Subject: keep\r\n\r\nx\r\n",
    );
    c.send_message(
        "jon@razorback.test",
        "sneaky",
        b"Subject: steal\r\n\r\nx\r\n",
    );
    let archive = dir.join("archive");
    let a = python_mbox(&archive);
    assert_eq!(a.len(), 1, "{}", srv.log());
    assert_eq!(a[0].subject, "keep");
    let meta = std::fs::metadata(&archive).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        u.uid(0),
        "written as the default user"
    );
    assert_eq!(python_mbox(&u.fx.mailbox("alice")).len(), 1);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    // The refusal is permanent: jon gets the message back, saying why.
    let jon = || String::from_utf8_lossy(&u.fx.read_mailbox("jon")).into_owned();
    assert!(
        wait_for(RUN_WAIT, || jon().contains("symbolic link")),
        "{}\n{}",
        jon(),
        srv.log()
    );
    assert_eq!(python_mbox(&u.fx.mailbox("jon")).len(), 1, "{}", jon());
}

/// `postie check ADDRESS` shows the whole expansion as delivery does it:
/// a `.forward`'s program with the user it runs as, and a `.forward`
/// ignored, with why.
#[test]
fn check_shows_forward_programs_and_ignored_forwards() {
    let u = Users::new(&["pat", "sam"]);
    u.forward("pat", u.uid(1), "\\pat, \"|/usr/bin/procmail\"\n");
    u.forward("sam", u.uid(2), "jon\n");
    std::fs::set_permissions(
        u.home("sam").join(".forward"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let check = |who: &str| {
        let args = [u.fx.args(), vec!["check".into(), who.into()]].concat();
        let out = run_postie(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pat = check("pat");
    assert!(
        pat.contains(
            "ok: pat: delivered to mailbox of pat, program \"|/usr/bin/procmail\" (as pat)\n"
        ),
        "{pat}"
    );
    let sam = check("sam");
    assert!(sam.contains("warning: sam: "), "{sam}");
    assert!(sam.contains("writable"), "{sam}");
    assert!(
        sam.contains("ignored, sam's mailbox gets the mail"),
        "{sam}"
    );
    assert!(
        sam.contains("ok: sam: delivered to mailbox of sam\n"),
        "{sam}"
    );
}
