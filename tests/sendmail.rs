//! The sendmail command line: `postie sendmail ...` and the `sendmail`,
//! `newaliases` and `mailq` links, against the real binary.
//!
//! Submission to a daemon is checked against a fake one (a Unix socket
//! served by this test, which records the dialog), so it runs as any user.
//! Direct delivery (root, no daemon) runs as root only; as any other user
//! those tests print `SKIP` and check what they can. Run as root, the
//! non-root paths run as `nobody` through setpriv.

use std::borrow::BorrowMut;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True if running as root; else prints why `test` is skipped.
fn need_root(test: &str) -> bool {
    need_root_for(test, "direct delivery without a daemon")
}

/// [`need_root`] for another reason, `why`.
fn need_root_for(test: &str, why: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root ({why})");
    }
    is_root()
}

/// The invoking user's name, as postie finds it.
fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// A configuration file of its own with the fixture's options, `socket`
/// as the daemon's, and `extra` lines. The sendmail command line may not
/// move the spool, passwd, aliases or socket: only this file does. Mode
/// 644, owned by whoever runs the tests: root reads only a file root owns
/// that nobody else may write.
fn sendmail_conf(fx: &Fixture, socket: &Path, extra: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = fx.dir.path().join(format!("sendmail-{n}.conf"));
    let text = format!(
        "{}submit-socket = {}\n{extra}",
        fx.config_lines(),
        socket.display()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// `postie sendmail -C FILE ARGS`: the fixture's options and `socket` in
/// FILE ([`sendmail_conf`]).
fn sendmail(fx: &Fixture, socket: &Path, args: &[&str]) -> Command {
    sendmail_with(fx, socket, "", args)
}

/// [`sendmail`] with `extra` lines in the configuration file.
fn sendmail_with(fx: &Fixture, socket: &Path, extra: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("sendmail")
        .arg("-C")
        .arg(sendmail_conf(fx, socket, extra))
        .args(args);
    cmd
}

/// Where no daemon listens.
fn no_socket(fx: &Fixture) -> PathBuf {
    fx.dir.path().join("no-daemon.sock")
}

/// Runs `cmd` with `input` on stdin.
fn run(mut cmd: impl BorrowMut<Command>, input: &[u8]) -> Output {
    let mut child = cmd
        .borrow_mut()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start postie");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer thread: postie may stop reading at a lone dot.
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The header of the `i`th raw message of `user`'s mailbox, as text.
fn header_of(fx: &Fixture, user: &str, i: usize) -> String {
    let raw = raw_messages(&fx.mailbox(user));
    let m = String::from_utf8_lossy(&raw[i]).into_owned();
    m.split("\n\n").next().unwrap().to_owned()
}

/// The body of the `i`th raw message of `user`'s mailbox.
fn body_of(fx: &Fixture, user: &str, i: usize) -> String {
    let raw = raw_messages(&fx.mailbox(user));
    let m = String::from_utf8_lossy(&raw[i]).into_owned();
    m.split_once("\n\n").unwrap().1.to_owned()
}

/// `cmd` run as `nobody` (through setpriv) when we are root, as is
/// otherwise; `None` (with a SKIP line) when root has no setpriv.
fn unprivileged(cmd: Command, test: &str) -> Option<Command> {
    if !is_root() {
        return Some(cmd);
    }
    if !have("setpriv", test) {
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    Some(c)
}

/// Opens the fixture to `nobody`, who runs the unprivileged commands when
/// the tests run as root.
fn open_to_all(fx: &Fixture) {
    // The fixture's directory holds the submission socket: sticky, as a
    // socket's directory others may write must be (`listen::bind_unix`).
    std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    for d in [&fx.spool(), &fx.dir.path().join("tmp")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(
        fx.dir.path().join("passwd"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// A fake postie daemon on a Unix socket: one connection, a canned
/// dialog, every line it receives recorded as sent (with its line end).
struct FakeDaemon {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    lines: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// Answers a command line (without CRLF) differently from the default, or
/// `None` for the default.
type Answer = Box<dyn Fn(&str) -> Option<String> + Send>;

impl FakeDaemon {
    fn start() -> FakeDaemon {
        Self::with(Box::new(|_| None))
    }

    /// The socket is in a fresh directory open to everybody, so that
    /// `nobody` may connect.
    fn with(answer: Answer) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("submit.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let rec = lines.clone();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let _ = w.write_all(b"220 fake.test ESMTP fake\r\n");
            let mut in_data = false;
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                rec.lock().unwrap().push(text.clone());
                let cmd = text.trim_end_matches(['\r', '\n']);
                if in_data {
                    if cmd == "." {
                        in_data = false;
                        let reply = answer(".").unwrap_or_else(|| "250 2.0.0 queued".into());
                        let _ = w.write_all(format!("{reply}\r\n").as_bytes());
                    }
                    continue;
                }
                let verb = cmd
                    .split([' ', ':'])
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                let reply = answer(cmd).unwrap_or_else(|| {
                    match verb.as_str() {
                        "EHLO" => "250-fake.test\r\n250-SIZE 1000000\r\n250 8BITMIME",
                        "MAIL" => "250 2.1.0 ok",
                        "RCPT" => "250 2.1.5 ok",
                        "DATA" => "354 go ahead",
                        "RSET" => "250 2.0.0 reset",
                        "QUIT" => "221 2.0.0 bye",
                        _ => "500 5.5.2 what?",
                    }
                    .to_owned()
                });
                if reply.starts_with("354") {
                    in_data = true;
                }
                let _ = w.write_all(format!("{reply}\r\n").as_bytes());
                if verb == "QUIT" {
                    return;
                }
            }
        });
        FakeDaemon {
            path,
            _dir: dir,
            lines,
            thread: Some(thread),
        }
    }

    /// Waits for the session to end; returns every line received.
    fn dialog(&mut self) -> Vec<String> {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.lines.lock().unwrap().clone()
    }
}

/// The cron-like submission: an ordinary user (nobody, when the tests run
/// as root) pipes a message into sendmail with Debian cron's flags; the
/// client speaks SMTP to the daemon's socket: EHLO, the invoking user as
/// the envelope sender, one RCPT per recipient, the message with CRLF line
/// ends and a dot-stuffed line, the final dot, QUIT.
#[test]
fn submits_to_the_daemon_socket() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let mut daemon = FakeDaemon::start();
    let cmd = sendmail(
        &fx,
        &daemon.path,
        &[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "jon",
            "alice@razorback.test",
        ],
    );
    let Some(cmd) = unprivileged(cmd, "submits_to_the_daemon_socket") else {
        return;
    };
    let input = b"Subject: Cron <jon@host> run-parts\n\nline one\n.starts with a dot\n.\nlast\n";
    let out = run(cmd, input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = daemon.dialog();
    let user = if is_root() { "nobody".to_owned() } else { me() };
    assert_eq!(d[0], "EHLO localhost\r\n");
    assert!(
        d[1].starts_with(&format!("MAIL FROM:<{user}@{HOST}> SIZE=")),
        "{d:?}"
    );
    assert!(d[1].ends_with("\r\n"));
    assert_eq!(d[2], "RCPT TO:<jon>\r\n");
    assert_eq!(d[3], "RCPT TO:<alice@razorback.test>\r\n");
    assert_eq!(d[4], "DATA\r\n");
    let end = d.iter().position(|l| l == ".\r\n").expect("final dot");
    let data = d[5..end].concat();
    assert!(
        data.starts_with("Subject: Cron <jon@host> run-parts\r\n"),
        "{data}"
    );
    assert!(
        data.contains(&format!("\r\nFrom: CronDaemon <{user}@{HOST}>\r\n")),
        "{data}"
    );
    assert!(data.contains("\r\nDate: "), "{data}");
    assert!(data.contains(&format!("@{HOST}>\r\n")), "{data}");
    // -i: the lone dot is data, stuffed; so is the line starting with one.
    assert!(
        data.ends_with("\r\n\r\nline one\r\n..starts with a dot\r\n..\r\nlast\r\n"),
        "{data:?}"
    );
    // Every line sent ends in CRLF, and there is no bare LF.
    for l in &d {
        assert!(
            l.ends_with("\r\n") && !l[..l.len() - 2].contains('\n'),
            "{l:?}"
        );
    }
    assert_eq!(d[end + 1], "QUIT\r\n");
    assert_eq!(d.len(), end + 2);
}

/// Refusals map to sysexits codes and are named on stderr. A recipient
/// refused for good does not stop the message to the others (DATA is
/// sent; the refusal is printed in sendmail's words: `elvis... User
/// unknown`); one refused for now stops it (RSET, no DATA, 75).
#[test]
fn daemon_refusals_map_to_exit_codes() {
    let cases: Vec<(&str, &str, i32, &str)> = vec![
        (
            "RCPT TO:<elvis>",
            "550 5.1.1 <elvis>... User unknown",
            67,
            "elvis... User unknown\n",
        ),
        (
            "RCPT TO:<elvis>",
            "451 4.3.0 try later",
            75,
            "elvis... try later\n",
        ),
        (
            "RCPT TO:<elvis>",
            "550 5.7.1 <elvis>... Relaying denied",
            69,
            "elvis... Relaying denied\n",
        ),
        ("MAIL", "501 5.1.7 bad sender", 65, "501 5.1.7 bad sender"),
        (
            ".",
            "552 5.3.4 Message size exceeds fixed limit",
            65,
            "552 5.3.4 Message size exceeds fixed limit",
        ),
        (
            ".",
            "452 4.3.1 Insufficient system storage",
            75,
            "452 4.3.1 Insufficient system storage",
        ),
        (".", "554 5.0.0 no", 69, "554 5.0.0 no"),
        (
            "DATA",
            "554 5.5.1 No valid recipients",
            69,
            "554 5.5.1 No valid recipients",
        ),
        (
            "EHLO",
            "421 4.3.2 shutting down",
            75,
            "421 4.3.2 shutting down",
        ),
    ];
    for (when, reply, code, says) in cases {
        let fx = Fixture::new();
        let (w, r) = (when.to_owned(), reply.to_owned());
        let mut daemon =
            FakeDaemon::with(Box::new(move |cmd| cmd.starts_with(&w).then(|| r.clone())));
        let out = run(
            sendmail(&fx, &daemon.path, &["jon", "elvis"]),
            b"Subject: x\n\nbody\n",
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{when} {reply}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(says),
            "{when} {reply}: {}",
            stderr(&out)
        );
        let d = daemon.dialog();
        if when.starts_with("RCPT") {
            let data = d.contains(&"DATA\r\n".to_owned());
            assert_eq!(data, reply.starts_with('5'), "{d:?}");
            assert_eq!(d.contains(&"RSET\r\n".to_owned()), !data, "{d:?}");
        }
        if when != "EHLO" {
            assert_eq!(d.last().map(String::as_str), Some("QUIT\r\n"), "{d:?}");
        }
    }
}

/// No daemon, not root: EX_TEMPFAIL and a message that says why; nothing
/// is delivered. As root, run as nobody.
#[test]
fn no_daemon_and_not_root_is_tempfail() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let cmd = sendmail(&fx, &no_socket(&fx), &["jon"]);
    let Some(cmd) = unprivileged(cmd, "no_daemon_and_not_root_is_tempfail") else {
        return;
    };
    let out = run(cmd, b"Subject: lost?\n\nno\n");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "postie: cannot submit: no postie daemon at {}",
            no_socket(&fx).display()
        )),
        "{err}"
    );
    assert!(err.contains("only root can deliver directly"), "{err}");
    assert!(!fx.mailbox("jon").exists());
}

/// Root without a daemon delivers in-process: the message arrives with the
/// From:, Date: and Message-ID: it lacked, from the invoking user.
#[test]
fn root_delivers_directly_and_adds_missing_fields() {
    if !need_root("root_delivers_directly_and_adds_missing_fields") {
        return;
    }
    let fx = Fixture::new();
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["jon"]),
        b"Subject: direct\n\nHello\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let msgs = python_mbox(&fx.mailbox("jon"));
    assert_eq!(msgs.len(), 1);
    let me = me();
    assert!(
        msgs[0].from.starts_with(&format!("{me}@{HOST} ")),
        "{}",
        msgs[0].from
    );
    assert_eq!(msgs[0].subject, "direct");
    assert_eq!(msgs[0].body, b"Hello\n");
    let h = header_of(&fx, "jon", 0);
    assert!(
        h.contains(&format!("\nFrom: {me}@{HOST}\n")) || h.contains(&format!(" <{me}@{HOST}>\n")),
        "{h}"
    );
    assert!(h.contains("\nDate: "), "{h}");
    assert!(h.contains("\nMessage-ID: <"), "{h}");
    assert!(h.contains(&format!("@{HOST}>")), "{h}");
    // Present fields are not added twice.
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["jon"]),
        b"From: Someone <someone@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
          Message-ID: <fixed@example.org>\nSubject: kept\n\nx\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let h = header_of(&fx, "jon", 1);
    assert_eq!(h.matches("From:").count(), 1, "{h}");
    assert_eq!(h.matches("Date:").count(), 1, "{h}");
    assert_eq!(h.matches("Message-ID:").count(), 1, "{h}");
    assert!(h.contains("Message-ID: <fixed@example.org>"), "{h}");
}

/// A fake SMTP server for [`root_does_not_submit_to_an_untrusted_socket`]:
/// one connection, `250` to every command, everything received written
/// on stdout at the end.
const PEER_LISTENER: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + ".new")
os.chmod(sys.argv[1] + ".new", 0o777)
s.listen(1)
os.rename(sys.argv[1] + ".new", sys.argv[1])
s.settimeout(60)
c, _ = s.accept()
c.settimeout(60)
f = c.makefile("rb")
c.sendall(b"220 impostor ESMTP\r\n")
got, data = [], False
try:
    for line in f:
        got.append(line)
        if data:
            if line == b".\r\n":
                data = False
                c.sendall(b"250 taken\r\n")
            continue
        verb = line[:4].upper()
        if verb == b"DATA":
            data = True
            c.sendall(b"354 go\r\n")
        elif verb == b"QUIT":
            c.sendall(b"221 bye\r\n")
            break
        else:
            c.sendall(b"250 ok\r\n")
except OSError:
    pass
sys.stdout.buffer.write(b"".join(got))
"#;

/// Audit of "postie 5", item 6: the submission socket in a directory
/// others may write, where a user's own listener took the daemon's place.
/// Root's sendmail reads the peer's credentials (SO_PEERCRED), refuses a
/// server that runs as neither root nor postie's user, says so, and
/// delivers in-process as when no daemon runs: the impostor gets nothing.
#[test]
fn root_does_not_submit_to_an_untrusted_socket() {
    let test = "root_does_not_submit_to_an_untrusted_socket";
    if !need_root_for(test, "a listener of another uid") || !have("setpriv", test) {
        return;
    }
    // Not a python3 in root's home (pyenv), which the listener's uid
    // could not run.
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("SKIP {test}: no /usr/bin/python3");
        return;
    }
    let fx = Fixture::new();
    let dir = fx.dir.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The impostor, as uid 54321, at `sock`.
    let impostor = |sock: &Path| {
        let child = Command::new("setpriv")
            .args(["--reuid=54321", "--regid=54321", "--clear-groups", "--"])
            .arg(python)
            .args(["-c", PEER_LISTENER])
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(wait_for(Duration::from_secs(30), || sock.exists()));
        child
    };
    let sock = dir.join("submit.sock");
    let listener = impostor(&sock);
    let out = run(
        sendmail(&fx, &sock, &["-i", "root"]),
        b"Subject: s\n\nsecret\n",
    );
    let got = listener.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&got.stdout).into_owned();
    assert!(!got.contains("MAIL"), "{got}");
    assert!(!got.contains("secret"), "{got}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("uid 54321"), "{}", stderr(&out));
    // Another user's -bs session is not relayed there either: 421, 75.
    let sock = dir.join("submit2.sock");
    let listener = impostor(&sock);
    let cmd = unprivileged(sendmail(&fx, &sock, &["-bs"]), test).unwrap();
    let out = run(cmd, b"EHLO x\r\nMAIL FROM:<secret@x>\r\n");
    let got = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "");
    assert_eq!(out.status.code(), Some(75), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("421 4.3.2 "), "{}", stdout(&out));
    assert_eq!(body_of(&fx, "root", 0), "secret\n");
}

/// `echo ... | sendmail -t`: recipients from To:, Cc: and Bcc:, the Bcc:
/// field gone from every copy; `-f` is the envelope sender (From_ line,
/// Return-Path) and, with `-F`, the added From:.
#[test]
fn t_reads_recipients_and_removes_bcc() {
    if !need_root("t_reads_recipients_and_removes_bcc") {
        return;
    }
    let fx = Fixture::new();
    let out = run(
        sendmail(
            &fx,
            &no_socket(&fx),
            &["-t", "-f", "cron@example.org", "-F", "The Cron"],
        ),
        b"To: Jon <jon@razorback.test>\nCc: undisclosed-recipients:;\n\
          Bcc: alice,\n  root\nSubject: blind\n\nsecret copies\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for user in ["jon", "alice", "root"] {
        let msgs = python_mbox(&fx.mailbox(user));
        assert_eq!(msgs.len(), 1, "{user}");
        assert!(
            msgs[0].from.starts_with("cron@example.org "),
            "{}",
            msgs[0].from
        );
        assert_eq!(msgs[0].return_path, "<cron@example.org>");
        let h = header_of(&fx, user, 0);
        // A field, not "bcc" anywhere: the Message-ID's hex may hold it.
        assert!(
            !h.to_ascii_lowercase()
                .lines()
                .any(|l| l.starts_with("bcc:")),
            "{user}: {h}"
        );
        assert!(!h.contains("alice,"), "{h}");
        assert!(h.contains("\nFrom: The Cron <cron@example.org>\n"), "{h}");
    }
}

/// Without -i a line of a single dot ends the message (the rest is not
/// sent); with -i or -oi it is data.
#[test]
fn lone_dot_ends_input_unless_i() {
    if !need_root("lone_dot_ends_input_unless_i") {
        return;
    }
    let fx = Fixture::new();
    let input = b"Subject: dots\n\nbefore\n.\nafter\n";
    for (flags, want) in [
        (&[][..], "before\n"),
        (&["-i"][..], "before\n.\nafter\n"),
        (&["-oi"][..], "before\n.\nafter\n"),
    ] {
        let mut args = flags.to_vec();
        args.push("jon");
        let out = run(sendmail(&fx, &no_socket(&fx), &args), input);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let n = raw_messages(&fx.mailbox("jon")).len();
        assert_eq!(body_of(&fx, "jon", n - 1), want, "{flags:?}");
    }
}

/// "A new user's first hour": `sendmail jon elvis` as root without a
/// daemon delivers to jon, prints `elvis... User unknown` (sendmail's
/// words) and exits 67 (EX_NOUSER), as sendmail 8 does.
#[test]
fn unknown_recipient_is_reported_and_the_others_get_it() {
    if !need_root("unknown_recipient_is_reported_and_the_others_get_it") {
        return;
    }
    let fx = Fixture::new();
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["jon", "elvis"]),
        b"Subject: x\n\ny\n",
    );
    assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    assert!(
        stderr(&out).lines().any(|l| l == "elvis... User unknown"),
        "{}",
        stderr(&out)
    );
    assert_eq!(body_of(&fx, "jon", 0), "y\n");
}

/// The same through the real daemon, as any user (nobody when the tests
/// run as root): the good recipient gets the message.
#[test]
fn unknown_recipient_through_the_daemon() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let sock = fx.dir.path().join("submit.sock");
    let srv = Server::start(&fx, &["--submit-socket", sock.to_str().unwrap()]);
    assert!(
        wait_for(Duration::from_secs(5), || sock.exists()),
        "{}",
        srv.log()
    );
    let test = "unknown_recipient_through_the_daemon";
    let Some(cmd) = unprivileged(sendmail(&fx, &sock, &["-i", "jon", "nosuchuser"]), test) else {
        return;
    };
    let out = run(cmd, b"Subject: first hour\n\nhello\n");
    assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    assert_eq!(stderr(&out), "nosuchuser... User unknown\n");
    assert_eq!(body_of(&fx, "jon", 0), "hello\n");
}

/// RFC 6531: a UTF-8 recipient (a UTF-8 alias of jon) or `-f` sender
/// makes sendmail's client send SMTPUTF8 (the daemon offers it); the
/// daemon takes the message, and `Received:` says UTF8SMTP. An ASCII one
/// goes without it.
#[test]
fn utf8_addresses_through_the_daemon() {
    let fx = Fixture::new();
    open_to_all(&fx);
    std::fs::write(fx.aliases(), "j\u{f6}rg: jon\n").unwrap();
    let sock = fx.dir.path().join("submit.sock");
    let srv = Server::start(&fx, &["--submit-socket", sock.to_str().unwrap()]);
    assert!(
        wait_for(Duration::from_secs(5), || sock.exists()),
        "{}",
        srv.log()
    );
    let test = "utf8_addresses_through_the_daemon";
    let runs: [(&[&str], bool); 3] = [
        (&["-v", "-i", "j\u{f6}rg"], true),
        (&["-v", "-i", "-f", "pel\u{e9}@b.example", "jon"], true),
        (&["-v", "-i", "jon"], false),
    ];
    for (i, (args, utf8)) in runs.iter().enumerate() {
        let Some(cmd) = unprivileged(sendmail(&fx, &sock, args), test) else {
            return;
        };
        let out = run(
            cmd,
            format!("Subject: Gr\u{fc}\u{df}e {i}\n\nK\u{e4}se\n").as_bytes(),
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        let mail = err
            .lines()
            .find(|l| l.starts_with(">>> MAIL FROM:"))
            .unwrap();
        assert_eq!(mail.ends_with(" SMTPUTF8"), *utf8, "{err}");
        let header = header_of(&fx, "jon", i);
        let with = if *utf8 {
            " with UTF8SMTP "
        } else {
            " with ESMTP "
        };
        assert!(header.contains(with), "{header}");
        assert!(
            header.contains(&format!("\nSubject: Gr\u{fc}\u{df}e {i}\n")),
            "{header}"
        );
        assert_eq!(body_of(&fx, "jon", i), "K\u{e4}se\n");
    }
    assert!(header_of(&fx, "jon", 1).contains("Return-Path: <pel\u{e9}@b.example>"));
}

/// `-N`, `-R` and `-V` (RFC 3461) reach the daemon as NOTIFY on each
/// RCPT and RET and ENVID on MAIL (the daemon offers DSN), which takes
/// them and delivers; `-v` shows the dialog.
#[test]
fn dsn_flags_reach_the_daemon() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let sock = fx.dir.path().join("submit.sock");
    let srv = Server::start(&fx, &["--submit-socket", sock.to_str().unwrap()]);
    assert!(
        wait_for(Duration::from_secs(5), || sock.exists()),
        "{}",
        srv.log()
    );
    let args = [
        "-v",
        "-N",
        "failure,delay",
        "-R",
        "hdrs",
        "-V",
        "cron+2B1",
        "-i",
        "jon",
    ];
    let Some(cmd) = unprivileged(sendmail(&fx, &sock, &args), "dsn_flags_reach_the_daemon") else {
        return;
    };
    let out = run(cmd, b"Subject: dsn\n\nhello\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let mail = lines.iter().position(|l| l.starts_with(">>> MAIL FROM:"));
    let mail = mail.unwrap_or_else(|| panic!("no MAIL: {err}"));
    assert!(
        lines[mail].ends_with(" RET=HDRS ENVID=cron+2B1"),
        "{}",
        lines[mail]
    );
    assert!(lines[mail + 1].starts_with("250 2.1.0"), "{err}");
    assert_eq!(
        lines[mail + 2],
        ">>> RCPT TO:<jon> NOTIFY=FAILURE,DELAY",
        "{err}"
    );
    assert!(lines[mail + 3].starts_with("250 2.1.5"), "{err}");
    assert_eq!(body_of(&fx, "jon", 0), "hello\n");
}

/// Audit of "postie 5", item 5: no byte of an argument reaches the SMTP
/// stream outside `<...>` as a parsed address. A `-f` sender that does
/// not parse is a usage error (64); a recipient that does not parse, on
/// the command line or in a -t header, is named on stderr like an unknown
/// one (67) and the others still get the message.
#[test]
fn addresses_cannot_carry_smtp_parameters() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["-f", "a@b> SIZE=1", "jon"]),
        b"Subject: x\n\ny\n",
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a@b> SIZE=1... bad sender address: "),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("usage: sendmail"), "{}", stderr(&out));
    let mut daemon = FakeDaemon::start();
    let test = "addresses_cannot_carry_smtp_parameters";
    let cmd = sendmail(&fx, &daemon.path, &["-t", "-i", "jon", "x@y> NOTIFY=NEVER"]);
    let Some(cmd) = unprivileged(cmd, test) else {
        return;
    };
    let out = run(
        cmd,
        b"To: alice@razorback.test, <c@d> ORCPT=rfc822;e\nSubject: s\n\nbody\n",
    );
    assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.starts_with("x@y> NOTIFY=NEVER... bad address: ")),
        "{}",
        stderr(&out)
    );
    let d = daemon.dialog();
    let rcpts: Vec<&String> = d.iter().filter(|l| l.starts_with("RCPT")).collect();
    assert_eq!(rcpts[0], "RCPT TO:<jon>\r\n", "{d:?}");
    assert_eq!(rcpts[1], "RCPT TO:<alice@razorback.test>\r\n", "{d:?}");
    for l in &d {
        if l.starts_with("MAIL") || l.starts_with("RCPT") {
            assert!(!l.contains("NOTIFY") && !l.contains("ORCPT"), "{d:?}");
        }
    }
    assert!(d.iter().any(|l| l == "DATA\r\n"), "{d:?}");
}

/// What the attacker of issue "postie 5" prepares: a configuration file
/// that points the spool at a directory holding `authorized_keys`, a
/// passwd file with a root-owned user of that name, and aliases sending
/// `root` there. Returns the file and the target, which holds one line.
fn evil_config(fx: &Fixture) -> (PathBuf, PathBuf) {
    let evil = fx.dir.path().join("evil");
    let ssh = evil.join("ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let keys = ssh.join("authorized_keys");
    std::fs::write(&keys, "ssh-ed25519 AAAA root@legit\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    std::fs::write(
        evil.join("passwd"),
        format!("authorized_keys:x:{uid}:{gid}::/:/bin/sh\n"),
    )
    .unwrap();
    std::fs::write(evil.join("aliases"), "root: authorized_keys\n").unwrap();
    let conf = evil.join("evil.conf");
    std::fs::write(
        &conf,
        format!(
            "spool = {}\npasswd = {}\naliases = {}\nsubmit-socket = {}\n",
            ssh.display(),
            evil.join("passwd").display(),
            evil.join("aliases").display(),
            evil.join("no-daemon.sock").display(),
        ),
    )
    .unwrap();
    (conf, keys)
}

/// Issue "postie 5", the reviewer's exploit: a root cron job runs
/// `sendmail -i root "$ARG"` with one argument an attacker chose,
/// `-C/tmp/evil.conf`. Options end at the first recipient, so the argument
/// is an address: it goes to the daemon as a RCPT (refused there, exit 67
/// EX_NOUSER, named on stderr), and the evil file's socket, spool, passwd
/// and aliases are never used. Run as any user (against a fake daemon).
#[test]
fn argument_after_a_recipient_is_an_address() {
    let fx = Fixture::new();
    let (evil, keys) = evil_config(&fx);
    let mut daemon = FakeDaemon::with(Box::new(|cmd| {
        cmd.starts_with("RCPT TO:<-C")
            .then(|| format!("550 5.1.1 <{}>... User unknown", &cmd[9..cmd.len() - 1]))
    }));
    let arg = format!("-C{}", evil.display());
    let out = run(
        sendmail(&fx, &daemon.path, &["-i", "root", &arg]),
        b"Subject: cron\n\nssh-ed25519 AAAA attacker\n",
    );
    assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{arg}... User unknown\n")),
        "{}",
        stderr(&out)
    );
    let d = daemon.dialog();
    assert!(d.contains(&"RCPT TO:<root>\r\n".to_owned()), "{d:?}");
    assert!(d.contains(&format!("RCPT TO:<{arg}>\r\n")), "{d:?}");
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAA root@legit\n"
    );
}

/// The same exploit as root with no daemon, where root's sendmail delivers
/// in-process: nothing is written to the target file; root's mail goes to
/// root's mailbox under the trusted configuration.
#[test]
fn root_cron_with_an_attackers_argument_writes_nothing_there() {
    if !need_root("root_cron_with_an_attackers_argument_writes_nothing_there") {
        return;
    }
    let fx = Fixture::new();
    let (evil, keys) = evil_config(&fx);
    // The attacker owns the file.
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();
    let arg = format!("-C{}", evil.display());
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["-i", "root", &arg]),
        b"Subject: cron\n\nssh-ed25519 AAAA attacker\n",
    );
    assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{arg}... User unknown\n")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAA root@legit\n"
    );
    assert!(!keys.with_file_name("authorized_keys.lock").exists());
    // root's own mail went where the trusted configuration says.
    assert_eq!(body_of(&fx, "root", 0), "ssh-ed25519 AAAA attacker\n");
}

/// Root's `-C FILE` is read only if root owns FILE and nobody else may
/// write it: an attacker's file, or root's own left writable, is refused
/// with EX_CONFIG (78) before anything is read or delivered.
#[test]
fn root_refuses_a_config_file_others_may_write() {
    if !need_root_for(
        "root_refuses_a_config_file_others_may_write",
        "only root's -C file is vetted, and only root can give files away",
    ) {
        return;
    }
    let fx = Fixture::new();
    let (evil, keys) = evil_config(&fx);
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();
    let cmd = |conf: &Path| {
        let mut c = Command::new(bin());
        c.arg("sendmail").arg("-C").arg(conf).args(["-i", "root"]);
        c
    };
    let out = run(cmd(&evil), b"Subject: x\n\nssh-ed25519 AAAA attacker\n");
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("owned by uid 65534"),
        "{}",
        stderr(&out)
    );
    std::os::unix::fs::chown(&evil, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run(cmd(&evil), b"Subject: x\n\nssh-ed25519 AAAA attacker\n");
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("mode 666"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAA root@legit\n"
    );
    // Root's own file, writable by root alone, is read.
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(cmd(&evil), b"Subject: x\n\nfrom root\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Root's `-C FILE` naming a FIFO (which anyone can make in /tmp) is
/// refused with EX_CONFIG (78) without opening it: an open of a FIFO
/// without a writer blocks forever, so root's cron job hung (found by the
/// audit after "postie 5"). Also through a symbolic link to the FIFO.
#[test]
fn root_refuses_a_fifo_as_config_file_without_blocking() {
    if !need_root_for(
        "root_refuses_a_fifo_as_config_file_without_blocking",
        "only root's -C file is vetted",
    ) {
        return;
    }
    let fx = Fixture::new();
    let fifo = fx.dir.path().join("evil.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let link = fx.dir.path().join("evil.link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    for conf in [&fifo, &link] {
        let mut child = Command::new(bin())
            .arg("sendmail")
            .arg("-C")
            .arg(conf)
            .args(["-i", "root"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A generous bound: the fixed program exits at once; the broken
        // one never does.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sendmail -C {} (a FIFO) blocked", conf.display());
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{}",
            stderr(&out)
        );
    }
}

/// Root's `-C FILE` naming a root-owned file others may not read (the
/// audit used `/etc/shadow`, through a symbolic link in /tmp) is refused
/// with EX_CONFIG (78), and the error does not quote its lines: it said
/// `expected "key = value", found "root:$6$...:"` to whoever reads the
/// output of a root script with one argument chosen by someone else.
#[test]
fn root_does_not_show_lines_of_a_file_others_may_not_read() {
    if !need_root_for(
        "root_does_not_show_lines_of_a_file_others_may_not_read",
        "only root's -C file is vetted",
    ) {
        return;
    }
    let fx = Fixture::new();
    let secret = fx.dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$secret-hash-xyz:20000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = fx.dir.path().join("evil.conf");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    for conf in [&secret, &link] {
        let out = run(
            Command::new(bin())
                .arg("sendmail")
                .arg("-C")
                .arg(conf)
                .args(["-i", "root"]),
            b"Subject: x\n\nx\n",
        );
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(!stderr(&out).contains("secret-hash"), "{}", stderr(&out));
        assert!(stderr(&out).contains("not shown"), "{}", stderr(&out));
    }
    // A file anyone may read: its errors say what they found, as always.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(
        Command::new(bin())
            .arg("sendmail")
            .arg("-C")
            .arg(&secret)
            .args(["-i", "root"]),
        b"Subject: x\n\nx\n",
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("secret-hash"), "{}", stderr(&out));
}

/// Usage errors: no recipient without -t, an unknown flag, a bad value of
/// one of postie's options. Each is EX_USAGE with a usage line.
#[test]
fn usage_errors() {
    let fx = Fixture::new();
    for (args, says) in [
        (&[][..], "no recipients"),
        (&["-Z", "jon"][..], "unknown option -Z"),
        (&["-bt", "jon"][..], "unknown option -bt"),
        (&["-f"][..], "option -f needs a value"),
        (&["-N", "always", "jon"][..], "invalid -N value \"always\""),
        (&["-R", "body", "jon"][..], "invalid -R value \"body\""),
        (&["-V", "my id", "jon"][..], "invalid -V value \"my id\""),
        (
            &["--spool", "/tmp", "jon"][..],
            "option --spool cannot be given to sendmail",
        ),
        (
            &["--queue-dir=/tmp", "-bp"][..],
            "option --queue-dir cannot be given to sendmail",
        ),
    ] {
        let out = run(sendmail(&fx, &no_socket(&fx), args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("usage: sendmail"), "{}", stderr(&out));
    }
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["--max-size", "lots", "jon"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(64));
    // -t and nobody in the header: bad data.
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["-t"]),
        b"Subject: to nobody\n\nx\n",
    );
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("no recipients"), "{}", stderr(&out));
}

/// A symbolic link named NAME to the binary, in a directory of the
/// fixture.
fn link(fx: &Fixture, name: &str) -> PathBuf {
    let dir = fx.dir.path().join("bin");
    let _ = std::fs::create_dir(&dir);
    let path = dir.join(name);
    std::os::unix::fs::symlink(bin(), &path).unwrap();
    path
}

/// `mailq` and `sendmail -bp` list the queue of the configuration file
/// (`queue-dir`) for root, in sendmail's format; refuse anyone else with
/// EX_NOPERM (sendmail's restrictmailq); never follow a symbolic link in
/// the queue, nor list a queue directory of another user's. `-q` (the
/// link's): runs the queue, silently (`q_runs_the_queue_for_its_owner_only`).
#[test]
fn mailq_and_queue_runs() {
    use std::os::unix::process::CommandExt;
    let fx = Fixture::new();
    let conf = sendmail_conf(&fx, &no_socket(&fx), "");
    let mailq = link(&fx, "mailq");
    let sm = link(&fx, "sendmail");
    let out = run(Command::new(&sm).arg("-C").arg(&conf).arg("-q"), b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let refused = |out: &Output| {
        assert_eq!(out.status.code(), Some(77), "{}", stderr(out));
        assert_eq!(stdout(out), "");
        assert!(
            stderr(out).contains("not permitted to see the queue"),
            "{}",
            stderr(out)
        );
    };
    if !nix::unistd::geteuid().is_root() {
        refused(&run(Command::new(&mailq).arg("-C").arg(&conf), b""));
        refused(&run(Command::new(&sm).arg("-C").arg(&conf).arg("-bp"), b""));
        println!("SKIP mailq_and_queue_runs (the listing): not root");
        return;
    }
    for cmd in [Command::new(&mailq), {
        let mut c = Command::new(&sm);
        c.arg("-bp");
        c
    }] {
        let mut cmd = cmd;
        let out = run(cmd.arg("-C").arg(&conf), b"");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "Mail queue is empty\n");
    }

    let q = postie::queue::Queue::open(&fx.queue()).unwrap();
    let mut entry = queue_entry();
    q.create(&mut entry, &mut &b"Subject: hi\n\nhello\n"[..])
        .unwrap();
    let out = run(Command::new(&mailq).arg("-C").arg(&conf), b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let time = &postie::sys::localtime(entry.received).asctime()[..16];
    let want = format!(
        "\t\t{} (1 request)\n\
         -----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n\
         {}       19 {time} <jon@frogbog>\n\
         \t\t\t\t\t <bob>\n\
         \t\t (4.2.0 mailbox busy)\n\
         \t\t\t\t\t <alice@frogbog>\n\
         \t\tTotal requests: 1\n",
        fx.queue().display(),
        entry.id
    );
    assert_eq!(stdout(&out), want);
    assert_eq!(stderr(&out), "");

    // A symbolic link planted as an entry is skipped, not followed, and
    // said on stderr.
    let secret = fx.dir.path().join("secret");
    std::fs::write(&secret, "jon@secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, fx.queue().join(format!("qf{:026x}", 1u8))).unwrap();
    let out = run(Command::new(&sm).arg("-C").arg(&conf).arg("-bp"), b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), want);
    assert!(stderr(&out).contains("1 name in "), "{}", stderr(&out));
    assert!(!stderr(&out).contains("secret"), "{}", stderr(&out));

    // Another user is refused, even with the file's queue.
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        println!("SKIP mailq_and_queue_runs (as another user): no user nobody");
        return;
    };
    let mut as_nobody = Command::new(&mailq);
    as_nobody
        .arg("-C")
        .arg(&conf)
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw());
    refused(&run(as_nobody, b""));

    // A queue directory of another user's is no queue of root's.
    std::os::unix::fs::chown(fx.queue(), Some(nobody.uid.as_raw()), None).unwrap();
    let out = run(Command::new(&mailq).arg("-C").arg(&conf), b"");
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains(&format!("queue {}: owned by uid", fx.queue().display())),
        "{}",
        stderr(&out)
    );
}

/// `newaliases` and `sendmail -bi` check the aliases file: how many
/// aliases, each warning; EX_CONFIG if it cannot be read.
#[test]
fn newaliases_checks_the_aliases_file() {
    let fx = Fixture::new();
    std::fs::write(
        fx.aliases(),
        "postmaster: root\nstaff: jon, alice\nbroken line\n",
    )
    .unwrap();
    let aliases = fx.aliases().display().to_string();
    let conf = sendmail_conf(&fx, &no_socket(&fx), "");
    let out = run(
        Command::new(link(&fx, "newaliases")).arg("-C").arg(conf),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{aliases}: 2 aliases, 1 warning\n"));
    assert!(
        stderr(&out).contains(&format!("{aliases}:3:")),
        "{}",
        stderr(&out)
    );
    let out = run(sendmail(&fx, &no_socket(&fx), &["-bi"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 aliases"), "{}", stdout(&out));
    // A directory cannot be read as a file, whoever we are.
    let out = run(
        sendmail_with(
            &fx,
            &no_socket(&fx),
            &format!("aliases = {}\n", fx.dir.path().display()),
            &["-bi"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
}

/// `-bv` says how each address would be delivered.
#[test]
fn bv_verifies_recipients() {
    let fx = Fixture::new();
    std::fs::write(fx.aliases(), "staff: jon, alice\n").unwrap();
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["-bv", "jon", "Staff", "postmaster"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "jon... deliverable: local user jon\n\
         Staff... deliverable: local users alice, jon\n\
         postmaster... deliverable: local user root\n"
    );
    let out = run(
        sendmail(
            &fx,
            &no_socket(&fx),
            &["-bv", "jon", "elvis", "x@relay.example"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(67));
    let o = stdout(&out);
    assert!(o.contains("elvis... User unknown\n"), "{o}");
    assert!(o.contains("x@relay.example... not deliverable"), "{o}");
    // An alias to a program only: deliverable, and -bv says to what.
    std::fs::write(
        fx.aliases(),
        "reports: \"|/usr/local/bin/file-report\"\nlog: /var/log/x, jon\n",
    )
    .unwrap();
    let out = run(
        sendmail(&fx, &no_socket(&fx), &["-bv", "reports", "log"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "reports... deliverable: program \"|/usr/local/bin/file-report\"\n\
         log... deliverable: local user jon, file /var/log/x\n"
    );
    // Programs not allowed in the aliases: -bv says so rather than that
    // none of its users exists.
    let cmd = sendmail_with(
        &fx,
        &no_socket(&fx),
        "allow-commands = forward\n",
        &["-bv", "reports"],
    );
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(67));
    assert_eq!(
        stdout(&out),
        "reports... User unknown (alias reports: \"|/usr/local/bin/file-report\": \
         program targets are not allowed in the aliases (allow-commands))\n"
    );
}

/// Called `sendmail` (a link), with postie's options before the flags
/// too, it submits like `postie sendmail`.
#[test]
fn sendmail_link_submits() {
    let fx = Fixture::new();
    let mut daemon = FakeDaemon::start();
    let mut cmd = Command::new(link(&fx, "sendmail"));
    cmd.arg("-C")
        .arg(sendmail_conf(&fx, &daemon.path, ""))
        .args(["--hostname", HOST, "-oi", "-f", "<>", "--", "jon"]);
    let out = run(cmd, b"Subject: via link\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = daemon.dialog();
    assert!(d[1].starts_with("MAIL FROM:<> "), "{d:?}");
    assert_eq!(d[2], "RCPT TO:<jon>\r\n");
    // `postie --opt ... sendmail ...`: options before the word count.
    let mut daemon = FakeDaemon::start();
    let mut cmd = Command::new(bin());
    cmd.arg("-C")
        .arg(sendmail_conf(&fx, &daemon.path, ""))
        .args(["--hostname", HOST, "sendmail", "-t"]);
    let out = run(cmd, b"To: alice\nSubject: x\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(daemon.dialog()[2], "RCPT TO:<alice>\r\n");
}

/// `-bs` as an ordinary user relays the SMTP session on stdin/stdout to
/// the daemon's socket (run as nobody when the tests run as root).
#[test]
fn bs_relays_to_the_daemon_when_not_root() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let mut daemon = FakeDaemon::start();
    let cmd = sendmail(&fx, &daemon.path, &["-bs"]);
    let Some(cmd) = unprivileged(cmd, "bs_relays_to_the_daemon_when_not_root") else {
        return;
    };
    let out = run(
        cmd,
        b"EHLO me.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<jon>\r\nDATA\r\n\
          Subject: relayed\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.starts_with("220 fake.test"), "{o}");
    assert!(
        o.contains("354 go ahead\r\n250 2.0.0 queued\r\n221 2.0.0 bye\r\n"),
        "{o}"
    );
    let d = daemon.dialog();
    assert_eq!(d[0], "EHLO me.example\r\n");
    assert_eq!(d.last().unwrap(), "QUIT\r\n");
}

/// `-bs` without a daemon, not root: a 421 on stdout (the client is
/// there), EX_TEMPFAIL.
#[test]
fn bs_without_daemon_when_not_root_is_421() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let cmd = sendmail(&fx, &no_socket(&fx), &["-bs"]);
    let Some(cmd) = unprivileged(cmd, "bs_without_daemon_when_not_root_is_421") else {
        return;
    };
    let out = run(cmd, b"EHLO x\r\n");
    assert_eq!(out.status.code(), Some(75));
    assert!(stdout(&out).starts_with("421 4.3.2 "), "{}", stdout(&out));
    assert_eq!(stderr(&out), "");
}

/// Audit of "postie 5", item 4: `sendmail -bs` with a configuration file
/// that does not load answers its client, on stdout, with the 421 that
/// `postie inetd` gives (exit 78, EX_CONFIG), and writes nothing on
/// stderr, which an inetd-style caller may have joined to the socket.
#[test]
fn bs_with_a_bad_config_file_is_421() {
    let fx = Fixture::new();
    let conf = fx.dir.path().join("bad.conf");
    std::fs::write(&conf, "no-such-option = 1\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("sendmail").arg("-bs").arg("-C").arg(&conf);
    let out = run(cmd, b"QUIT\r\n");
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("421 4.3.5 "), "{}", stdout(&out));
    assert_eq!(stderr(&out), "");
}

/// `sendmail -bs` as root is postie's inetd mode: the article's session,
/// delivered in-process.
#[test]
fn bs_as_root_runs_the_session_itself() {
    if !need_root("bs_as_root_runs_the_session_itself") {
        return;
    }
    let fx = Fixture::new();
    let input = crate::golden::load("article").input();
    let out = run(sendmail(&fx, &no_socket(&fx), &["-bs"]), &input);
    assert_eq!(out.status.code(), Some(0));
    let codes: Vec<u16> = stdout(&out)
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].parse().unwrap())
        .collect();
    assert_eq!(codes, vec![220, 250, 250, 250, 354, 250, 250, 550, 221]);
    let msgs = python_mbox(&fx.mailbox(USER));
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].subject, "Demonstration of email");
}

/// mail(1): s-nail configured to use postie as its MTA (a `sendmail` link
/// with postie's options in mta-arguments). As root the message is
/// delivered directly; as anybody else it goes to a fake daemon.
#[test]
fn snail_sends_through_sendmail() {
    if !have("s-nail", "snail_sends_through_sendmail") {
        return;
    }
    let fx = Fixture::new();
    let mut daemon = (!is_root()).then(FakeDaemon::start);
    let socket = match &daemon {
        Some(d) => d.path.clone(),
        None => no_socket(&fx),
    };
    let mta_args = format!("-C {}", sendmail_conf(&fx, &socket, "").display());
    let mut cmd = Command::new("s-nail");
    cmd.args(["-#", "-:/", "-S", "sendwait", "-S"])
        .arg(format!("mta={}", link(&fx, "sendmail").display()))
        .arg("-S")
        .arg(format!("mta-arguments={mta_args}"))
        .args(["-s", "from mail(1)", "jon"])
        .env("HOME", fx.dir.path());
    let out = run(cmd, b"Sent with s-nail.\n.\nStill the body.\n");
    assert!(out.status.success(), "{}", stderr(&out));
    match daemon.as_mut() {
        None => {
            let msgs = python_mbox(&fx.mailbox("jon"));
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].subject, "from mail(1)");
            // s-nail passes -i: the lone dot is part of the body.
            assert_eq!(msgs[0].body, b"Sent with s-nail.\n.\nStill the body.\n");
        }
        Some(d) => {
            let data = d.dialog().concat();
            assert!(data.contains("Subject: from mail(1)\r\n"), "{data}");
            assert!(data.contains("\r\n..\r\nStill the body.\r\n"), "{data}");
        }
    }
}

/// The whole local path, as cron uses it: an ordinary user (nobody, when
/// the tests run as root) runs `sendmail -i jon` with no root and no setuid
/// bit; the running daemon (privilege-separated when root) takes the
/// message over its Unix socket and delivers it. With `-f` naming someone
/// else, the message carries sendmail's X-Authentication-Warning.
#[test]
fn cron_like_submission_through_the_real_daemon() {
    let fx = Fixture::new();
    open_to_all(&fx);
    let sock = fx.dir.path().join("submit.sock");
    let srv = Server::start(&fx, &["--submit-socket", sock.to_str().unwrap()]);
    assert!(
        wait_for(Duration::from_secs(5), || sock.exists()),
        "{}",
        srv.log()
    );
    let user = if is_root() { "nobody".to_owned() } else { me() };
    let test = "cron_like_submission_through_the_real_daemon";
    let Some(cmd) = unprivileged(sendmail(&fx, &sock, &["-i", "jon"]), test) else {
        return;
    };
    let out = run(cmd, b"Subject: cron output\n\nbackup done\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let h = header_of(&fx, "jon", 0);
    assert!(
        h.starts_with(&format!("Return-Path: <{user}@{HOST}>")),
        "{h}"
    );
    assert!(h.contains(&format!("(user {user}, uid ")), "{h}");
    assert!(
        h.contains(&format!("From: {user}@{HOST}")) || h.contains(&format!("<{user}@{HOST}>")),
        "{h}"
    );
    assert!(!h.contains("X-Authentication-Warning"), "{h}");
    assert_eq!(body_of(&fx, "jon", 0), "backup done\n");
    // -f someone else: delivered, with the warning.
    let Some(cmd) = unprivileged(
        sendmail(&fx, &sock, &["-f", "boss@example.org", "jon"]),
        test,
    ) else {
        return;
    };
    let out = run(cmd, b"Subject: forged\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let h = header_of(&fx, "jon", 1);
    let want =
        format!("X-Authentication-Warning: {HOST}: {user} set sender to boss@example.org using -f");
    assert!(h.contains(&want), "{h}");
}

/// `sendmail -bd` is postie's `serve`, on the configuration file's
/// `listen` addresses like `postie serve`, and delivers.
#[test]
fn bd_serves_on_the_configured_listen_address() {
    let fx = Fixture::new();
    let port = free_port();
    let sock = fx.dir.path().join("bd.sock");
    let cmd = sendmail_with(
        &fx,
        &sock,
        &format!("listen = 127.0.0.1:{port}\n"),
        &["-bd"],
    );
    let srv = Server::spawn_at(cmd, format!("127.0.0.1:{port}").parse().unwrap());
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.expect("HELO c", 250);
    c.send_message("a@b.example", "jon", b"Subject: via -bd\r\n\r\nhi\r\n");
    c.expect("QUIT", 221);
    assert_eq!(body_of(&fx, "jon", 0), "hi\n");
    // Without -q, the daemon's runner keeps its default interval.
    assert!(
        srv.log_has("the queue is looked at every 300 s"),
        "{}",
        srv.log()
    );
}

/// `sendmail -bd -q30m`: the daemon, whose queue runner looks at the
/// queue every 30 minutes (sendmail's periodic queue runs).
#[test]
fn bd_with_an_interval_runs_the_queue_that_often() {
    let fx = Fixture::new();
    let port = free_port();
    let sock = fx.dir.path().join("bd.sock");
    let cmd = sendmail_with(
        &fx,
        &sock,
        &format!("listen = 127.0.0.1:{port}\n"),
        &["-bd", "-q30m"],
    );
    let srv = Server::spawn_at(cmd, format!("127.0.0.1:{port}").parse().unwrap());
    assert!(
        srv.log_has("the queue is looked at every 1800 s"),
        "{}",
        srv.log()
    );
}

/// `sendmail -q`: the queue run in this process, for root and for the
/// queue directory's owner, silent (cron mails what a job prints) unless
/// -v; refused to anyone else with sendmail's words and EX_NOPERM;
/// sendmail's -q options that postie has not are usage errors. What an
/// entry holds is delivered, or returned.
#[test]
fn q_runs_the_queue_for_its_owner_only() {
    let fx = Fixture::new();
    let conf = sendmail_conf(&fx, &no_socket(&fx), "");
    let q = |args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.arg("sendmail").arg("-C").arg(&conf).args(args);
        run(cmd, b"")
    };
    for args in [&["-q"][..], &["-qf"], &["-qRjon", "-qS", "bob"]] {
        let out = q(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            stderr(&out).contains("queue run by sendmail -q: "),
            "{args:?}: not logged: {}",
            stderr(&out)
        );
    }
    let out = q(&["-v", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("sendmail -q: "),
        "{}",
        stdout(&out)
    );
    // -qI matching no entry: nothing to run.
    let out = q(&["-v", "-qI0069"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "sendmail -q: 0 entries, 0 delivered, 0 deferred, 0 failed\n"
    );
    // An entry, and an empty queue: the same.
    let queue = postie::queue::Queue::open(&fx.queue()).unwrap();
    let mut entry = queue_entry();
    queue
        .create(&mut entry, &mut &b"Subject: hi\n\nhello\n"[..])
        .unwrap();
    let out = q(&["-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // What it held went: alice has the message; bob (no such user) is
    // returned, and as jon@frogbog is no local sender, to postmaster
    // (root here); the entry is gone.
    assert!(queue.load(&entry.id).is_err(), "{}", stderr(&out));
    let alice = python_mbox(&fx.mailbox("alice"));
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].body, b"hello\n");
    let root = std::fs::read_to_string(fx.mailbox("root")).unwrap();
    assert!(root.contains("Final-Recipient: rfc822; bob"), "{root}");
    assert!(root.contains("Status: 5.1.1"), "{root}");
    // No queue directory: nothing queued, nothing to do, for root; no
    // directory of one's own for anyone else, who is refused.
    std::fs::remove_dir_all(fx.queue()).unwrap();
    let out = q(&["-v", "-q"]);
    if is_root() {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "sendmail -q: 0 entries, 0 delivered, 0 deferred, 0 failed\n"
        );
    } else {
        assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    }
    std::fs::create_dir(fx.queue()).unwrap();
    std::fs::set_permissions(fx.queue(), std::fs::Permissions::from_mode(0o700)).unwrap();

    for (args, says) in [
        (&["-q!Rjon"][..], "option -q!Rjon is not supported"),
        (&["-qGmain"], "option -qGmain is not supported"),
        (&["-q", "jon"], "no recipients with -q"),
        (&["-qR"], "option -qR needs a value"),
    ] {
        let out = q(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    // -q30m alone starts no periodic runner: said, and the queue is run
    // once.
    let out = q(&["-q30m"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("postie starts no periodic queue runner"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("queue run by sendmail -q"),
        "{}",
        stderr(&out)
    );

    // Another user: refused (as root, nobody; otherwise, a queue of
    // root's).
    let refused = |out: &Output| {
        assert_eq!(out.status.code(), Some(77), "{}", stderr(out));
        assert_eq!(stdout(out), "");
        assert!(
            stderr(out).contains("You do not have permission to process the queue"),
            "{}",
            stderr(out)
        );
    };
    if !is_root() {
        let lines = fx.config_lines().replace(
            &format!("queue-dir = {}", fx.queue().display()),
            "queue-dir = /",
        );
        let conf = fx.write_config(&lines);
        let mut cmd = Command::new(bin());
        cmd.arg("sendmail").arg("-C").arg(&conf).arg("-q");
        refused(&run(cmd, b""));
        println!("SKIP q_runs_the_queue_for_its_owner_only (as nobody): not root");
        return;
    }
    open_to_all(&fx);
    let mut cmd = Command::new(bin());
    cmd.arg("sendmail").arg("-C").arg(&conf).arg("-q");
    let Some(cmd) = unprivileged(cmd, "q_runs_the_queue_for_its_owner_only") else {
        return;
    };
    refused(&run(cmd, b""));
    // The queue directory's owner may (a daemon of that user's).
    std::os::unix::fs::chown(fx.queue(), Some(65534), Some(65534)).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("sendmail").arg("-C").arg(&conf).args(["-v", "-q"]);
    let out = run(unprivileged(cmd, "").unwrap(), b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("sendmail -q: "),
        "{}",
        stdout(&out)
    );
}
