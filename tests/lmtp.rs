//! `postie lmtp` (RFC 2033): LMTP dialogs against the real binary on
//! stdin/stdout, on a Unix socket and on TCP, with one good and one
//! failing recipient (a mailbox held locked past --lock-timeout, without a
//! queue); who may connect to the socket; and Postfix 3.7 from Debian's
//! package (bench/postfix-setup) delivering through the socket into mbox.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// The dialog every transport below plays: LHLO after a refused EHLO;
/// `jon` (good), `nosuch` (refused at RCPT), `alice` (mailbox locked by
/// the test: 451 after the dot); then a message over --max-size to two
/// recipients, which both get 552. Replies, in order, as codes.
const DIALOG: &[(&str, &[u16])] = &[
    ("EHLO mx.example", &[500]),
    ("LHLO mx.example", &[250]),
    ("MAIL FROM:<sender@example.org>", &[250]),
    ("RCPT TO:<jon@razorback.test>", &[250]),
    ("RCPT TO:<nosuch@razorback.test>", &[550]),
    ("RCPT TO:<alice@razorback.test>", &[250]),
    ("DATA", &[354]),
    (
        "Subject: lmtp test\r\n\r\nhello over LMTP\r\n.",
        &[250, 451],
    ),
    ("MAIL FROM:<sender@example.org>", &[250]),
    ("RCPT TO:<jon@razorback.test>", &[250]),
    ("RCPT TO:<alice@razorback.test>", &[250]),
    ("DATA", &[354]),
    (BIG, &[552, 552]),
    ("NOOP", &[250]),
    ("QUIT", &[221]),
];

/// Over the --max-size of [`lmtp_args`].
const BIG: &str = "Subject: big\r\n\r\n\
    0123456789012345678901234567890123456789012345678901234567890123456789\r\n\
    0123456789012345678901234567890123456789012345678901234567890123456789\r\n\
    0123456789012345678901234567890123456789012345678901234567890123456789\r\n.";

/// The fixture's options, a short lock timeout (alice's mailbox stays
/// locked for the whole test: the timeout is reached however slow the
/// machine) and a small size limit.
fn lmtp_args(fx: &Fixture) -> Vec<String> {
    let mut a = fx.args();
    a.extend(["--lock-timeout", "1", "--max-size", "200"].map(String::from));
    a
}

/// Plays [`DIALOG`] on `r`/`w` after reading the greeting; returns every
/// reply after the greeting, in order.
fn play_dialog(r: &mut impl BufRead, w: &mut impl Write) -> Vec<Reply> {
    let greeting = read_reply(r).expect("greeting");
    assert_eq!(greeting.code, 220);
    assert!(greeting.text().contains("LMTP"), "{}", greeting.text());
    let mut got = Vec::new();
    for (line, codes) in DIALOG {
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        w.flush().unwrap();
        for want in codes.iter() {
            let reply = read_reply(r).unwrap_or_else(|| panic!("no reply to {line:?}"));
            assert_eq!(reply.code, *want, "after {line:?}: {}", reply.text());
            got.push(reply);
        }
    }
    got
}

/// What the dialog leaves: the replies after the first dot name their
/// recipient, in RCPT order; jon's mailbox holds the message, received
/// `with LMTP` and `for` him; alice's (locked) nothing.
fn check_outcome(fx: &Fixture, replies: &[Reply]) {
    let after_dot: Vec<&Reply> = replies.iter().skip(7).take(2).collect();
    assert!(
        after_dot[0]
            .text()
            .starts_with("250 2.0.0 <jon@razorback.test> "),
        "{}",
        after_dot[0].text()
    );
    assert!(
        after_dot[1]
            .text()
            .starts_with("451 4.2.0 <alice@razorback.test> "),
        "{}",
        after_dot[1].text()
    );
    let msgs = raw_messages(&fx.mailbox("jon"));
    assert_eq!(msgs.len(), 1, "jon has the one message");
    let text = String::from_utf8_lossy(&msgs[0]);
    assert!(
        text.starts_with("Return-Path: <sender@example.org>\n"),
        "{text}"
    );
    assert!(text.contains(" with LMTP id "), "{text}");
    assert!(text.contains("\tfor <jon@razorback.test>; "), "{text}");
    // The MTA in front is no local submitter: no user named, no warning.
    assert!(!text.contains("(user "), "{text}");
    assert!(!text.contains("X-Authentication-Warning"), "{text}");
    assert!(
        text.ends_with("Subject: lmtp test\n\nhello over LMTP\n"),
        "{text}"
    );
    assert_eq!(fx.read_mailbox("alice"), b"", "alice got nothing");
}

/// `postie lmtp` without --listen: one session on stdin/stdout.
#[test]
fn lmtp_on_stdin_stdout_replies_per_recipient() {
    let fx = Fixture::without_queue();
    let _held = fx.hold_flock("alice");
    let mut child = Command::new(bin())
        .arg("lmtp")
        .args(lmtp_args(&fx))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let replies = play_dialog(&mut r, &mut w);
    drop(w);
    assert!(child.wait().unwrap().success());
    check_outcome(&fx, &replies);
}

/// A `postie lmtp` daemon on a Unix socket in the fixture's directory and
/// on a loopback port, with [`lmtp_args`] and `extra`.
fn lmtp_daemon(fx: &Fixture, extra: &[&str]) -> (Server, PathBuf) {
    lmtp_daemon_with(fx, lmtp_args(fx), extra)
}

/// [`lmtp_daemon`] with `args` instead of [`lmtp_args`].
fn lmtp_daemon_with(fx: &Fixture, args: Vec<String>, extra: &[&str]) -> (Server, PathBuf) {
    let sock = fx.dir.path().join("lmtp.sock");
    let mut cmd = Command::new(bin());
    cmd.arg("lmtp")
        .arg("--listen")
        .arg(&sock)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(args)
        .args(extra);
    (Server::spawn(cmd), sock)
}

#[test]
fn lmtp_on_a_unix_socket_replies_per_recipient() {
    let fx = Fixture::without_queue();
    let _held = fx.hold_flock("alice");
    let (srv, sock) = lmtp_daemon(&fx, &[]);
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let replies = play_dialog(&mut BufReader::new(s.try_clone().unwrap()), &mut &s);
    check_outcome(&fx, &replies);
    assert!(srv.log_has("accepting LMTP on"), "{}", srv.log());
}

#[test]
fn lmtp_over_tcp_replies_per_recipient() {
    let fx = Fixture::without_queue();
    let _held = fx.hold_flock("alice");
    let (srv, _) = lmtp_daemon(&fx, &[]);
    let mut c = srv.connect();
    let replies = play_dialog(&mut c.r, &mut c.w);
    check_outcome(&fx, &replies);
}

/// `postie lmtp` without --listen under systemd socket activation
/// (Accept=no, as postie-lmtp.socket): LMTP on the Unix socket systemd
/// passes, not a submission socket.
#[test]
fn lmtp_on_a_socket_systemd_passes() {
    if !have("systemd-socket-activate", "lmtp_on_a_socket_systemd_passes") {
        return;
    }
    let fx = Fixture::without_queue();
    let _held = fx.hold_flock("alice");
    let sock = fx.dir.path().join("activated.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(bin())
        .arg("lmtp")
        .args(lmtp_args(&fx))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let connected = wait_for(Duration::from_secs(20), || sock.exists());
    let s = connected.then(|| UnixStream::connect(&sock).unwrap());
    let replies = s.map(|s| {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        play_dialog(&mut BufReader::new(s.try_clone().unwrap()), &mut &s)
    });
    let _ = child.kill();
    let _ = child.wait();
    check_outcome(
        &fx,
        &replies.expect("systemd-socket-activate did not listen"),
    );
}

/// The socket is its owner's alone by default (mode 0600): another user
/// cannot connect, whatever the directory lets through; with
/// --lmtp-socket-group it is 0660 and that group's members can.
#[test]
fn lmtp_socket_admits_only_its_owner_or_group() {
    let fx = Fixture::new();
    let (srv, sock) = lmtp_daemon(&fx, &[]);
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    drop(srv);
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP lmtp_socket_admits_only_its_owner_or_group: connecting as another user needs root"
        );
        return;
    }
    // The directory lets anyone through (the fixture makes it 0755 for
    // root): only the socket's mode stands in the way.
    assert_eq!(
        std::fs::metadata(fx.dir.path()).unwrap().mode() & 0o005,
        0o005
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (srv, sock) = lmtp_daemon(&fx, &[]);
    let refused = connect_as(nobody.uid.as_raw(), nobody.gid.as_raw(), &sock);
    assert!(refused.starts_with("error: PermissionError"), "{refused}");
    drop(srv);
    // Its group named: that group (here nobody's) may connect.
    let group = nix::unistd::Group::from_gid(nobody.gid).unwrap().unwrap();
    let (_srv, sock) = lmtp_daemon(&fx, &["--lmtp-socket-group", &group.name]);
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o660, nobody.gid.as_raw()));
    let let_in = connect_as(nobody.uid.as_raw(), nobody.gid.as_raw(), &sock);
    assert!(
        let_in.starts_with("220 ") && let_in.contains("LMTP"),
        "{let_in}"
    );
}

/// Connects to the Unix socket at `path` as `uid`:`gid` (a Python child
/// that drops root first); its first line, or the error.
fn connect_as(uid: u32, gid: u32, path: &Path) -> String {
    let script = r#"
import os, socket, sys
os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
try:
    s.connect(sys.argv[3])
    print(s.makefile().readline().strip())
except OSError as e:
    print("error: " + type(e).__name__)
"#;
    python(
        script,
        &[&uid.to_string(), &gid.to_string(), path.to_str().unwrap()],
    )
}

/// Postfix 3.7 (Debian's package, unpacked by bench/postfix-setup) as the
/// MX in front: `mailbox_transport = lmtp:unix:SOCKET`, a message to one
/// good and one unknown local recipient sent to it over SMTP. The good one
/// reaches the mbox through postie's LMTP socket; Postfix logs postie's
/// 550 for the other (and bounces it, which nobody reads here).
#[test]
fn postfix_delivers_through_the_lmtp_socket() {
    let test = "postfix_delivers_through_the_lmtp_socket";
    let Some(pf) = PrivatePostfix::available(test) else {
        return;
    };
    let fx = Fixture::new();
    let (srv, sock) = lmtp_daemon_with(
        &fx,
        fx.args(),
        &["--lmtp-socket-group", "postfix", "--domain", "lmtp.test"],
    );
    let postfix = pf.start(&fx.dir.path().join("postfix"), &sock);
    let mut c = Client::connect(postfix.addr);
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<sender@example.org>", 250);
    c.expect("RCPT TO:<jon@lmtp.test>", 250);
    c.expect("RCPT TO:<nosuch@lmtp.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: through Postfix\r\n\r\nhello from the MX\r\n.\r\n");
    c.expect_reply(250);
    c.expect("QUIT", 221);
    let delivered = wait_for(Duration::from_secs(60), || {
        raw_messages(&fx.mailbox("jon")).len() == 1
    });
    assert!(
        delivered,
        "nothing in jon's mailbox; Postfix's log:\n{}\npostie's log:\n{}",
        postfix.log(),
        srv.log()
    );
    let text = String::from_utf8_lossy(&raw_messages(&fx.mailbox("jon"))[0]).into_owned();
    assert!(
        text.starts_with("Return-Path: <sender@example.org>\n"),
        "{text}"
    );
    assert!(text.contains(" with LMTP id "), "{text}");
    assert!(text.contains("\tfor <jon@lmtp.test>; "), "{text}");
    assert!(text.contains("(Postfix) with ESMTP id "), "{text}");
    assert!(text.contains("\nSubject: through Postfix\n"), "{text}");
    assert!(text.ends_with("\n\nhello from the MX\n"), "{text}");
    let bounced = wait_for(Duration::from_secs(60), || {
        postfix.log().lines().any(|l| {
            l.contains("to=<nosuch@lmtp.test>")
                && l.contains("status=bounced")
                && l.contains("550 5.1.1")
        })
    });
    assert!(bounced, "Postfix's log:\n{}", postfix.log());
}

/// Postfix's files, unpacked privately by bench/postfix-setup.
struct PrivatePostfix {
    root: PathBuf,
    ld_path: String,
}

/// A running private Postfix; stopped when dropped.
struct RunningPostfix {
    postfix: PathBuf,
    conf: PathBuf,
    work: PathBuf,
    ld_path: String,
    addr: std::net::SocketAddr,
}

impl PrivatePostfix {
    /// Postfix and the users it runs as, or `None` with the reason
    /// printed as a skip of `test`.
    fn available(test: &str) -> Option<PrivatePostfix> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/.postfix");
        let root = dir.join("root");
        let skip = |why: &str| eprintln!("SKIP {test}: {why}");
        if !nix::unistd::geteuid().is_root() {
            skip("Postfix's master runs as root");
            return None;
        }
        if !root.join("usr/sbin/postfix").is_file() {
            skip("no Postfix in bench/.postfix (bench/postfix-setup fetches it; .ci/run does)");
            return None;
        }
        let user = nix::unistd::User::from_name("postfix").ok().flatten();
        let group = nix::unistd::Group::from_name("postdrop").ok().flatten();
        if user.is_none() || group.is_none() {
            skip("no user postfix or group postdrop (bench/postfix-setup makes them)");
            return None;
        }
        // bench/postfix-setup writes the library path it found, for the
        // checkout it ran in; this one's own directory otherwise.
        let own = root.join("usr/lib/postfix").display().to_string();
        let ld_path = std::fs::read_to_string(dir.join("env"))
            .ok()
            .and_then(|t| {
                let p = t.trim().strip_prefix("LD_LIBRARY_PATH=")?.to_string();
                p.split(':').all(|d| Path::new(d).is_dir()).then_some(p)
            })
            .unwrap_or(own);
        Some(PrivatePostfix { root, ld_path })
    }

    /// Starts an instance in `work` (made here) on a loopback port, whose
    /// local mailboxes go to the LMTP socket at `sock`.
    fn start(&self, work: &Path, sock: &Path) -> RunningPostfix {
        let conf = work.join("conf");
        std::fs::create_dir_all(work.join("queue")).unwrap();
        std::fs::create_dir_all(work.join("data")).unwrap();
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755)).unwrap();
        let owner = nix::unistd::User::from_name("postfix").unwrap().unwrap();
        nix::unistd::chown(&work.join("data"), Some(owner.uid), Some(owner.gid)).unwrap();
        let copied = Command::new("cp")
            .arg("-a")
            .arg(self.root.join("etc/postfix"))
            .arg(&conf)
            .status()
            .unwrap();
        assert!(copied.success());
        let port = free_port();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {work}/queue\n\
             data_directory = {work}/data\n\
             daemon_directory = {pf}/usr/lib/postfix/sbin\n\
             command_directory = {pf}/usr/sbin\n\
             shlib_directory = {pf}/usr/lib/postfix\n\
             meta_directory = {conf}\n\
             sample_directory = {conf}\n\
             manpage_directory = {pf}/usr/share/man\n\
             html_directory = no\n\
             readme_directory = no\n\
             sendmail_path = {pf}/usr/sbin/sendmail\n\
             newaliases_path = {pf}/usr/bin/newaliases\n\
             mailq_path = {pf}/usr/bin/mailq\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH={ld}\n\
             syslog_name = postfix-lmtp-test\n\
             maillog_file = {work}/maillog\n\
             maillog_file_prefixes = {work}\n\
             myhostname = lmtp.test\n\
             mydomain = lmtp.test\n\
             mydestination = $myhostname\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             relayhost =\n\
             biff = no\n\
             smtpd_peername_lookup = no\n\
             smtp_dns_support_level = disabled\n\
             alias_maps =\n\
             alias_database =\n\
             # postie knows the users: Postfix accepts every local part.\n\
             local_recipient_maps =\n\
             mailbox_transport = lmtp:unix:{sock}\n\
             smtputf8_enable = no\n",
            work = work.display(),
            pf = self.root.display(),
            conf = conf.display(),
            ld = self.ld_path,
            sock = sock.display(),
        );
        std::fs::write(conf.join("main.cf"), main_cf).unwrap();
        std::fs::write(
            conf.join("master.cf"),
            MASTER_CF.replace("{port}", &port.to_string()),
        )
        .unwrap();
        let pf = RunningPostfix {
            postfix: self.root.join("usr/sbin/postfix"),
            conf,
            work: work.to_path_buf(),
            ld_path: self.ld_path.clone(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let out = pf.run("start");
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let up = wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(pf.addr).is_ok()
        });
        assert!(up, "Postfix does not listen; its log:\n{}", pf.log());
        pf
    }
}

impl RunningPostfix {
    fn run(&self, what: &str) -> std::process::Output {
        Command::new(&self.postfix)
            .arg("-c")
            .arg(&self.conf)
            .arg(what)
            .env("LD_LIBRARY_PATH", &self.ld_path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("maillog")).unwrap_or_default()
    }

    fn master_running(&self) -> bool {
        std::fs::read_to_string(self.work.join("queue/pid/master.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}

impl Drop for RunningPostfix {
    fn drop(&mut self) {
        let _ = self.run("stop");
        wait_for(Duration::from_secs(30), || !self.master_running());
    }
}

/// The services of a private Postfix (as bench/mta.py runs it): SMTP on a
/// loopback port, local delivery, the LMTP client; nothing chrooted.
const MASTER_CF: &str = "\
127.0.0.1:{port} inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// BDAT in LMTP (RFC 2033 4.3, RFC 3030): the LAST chunk gets one reply
/// per recipient, in RCPT order, as the dot does; the chunks' octets
/// arrive exactly, in each mailbox.
#[test]
fn lmtp_bdat_last_replies_per_recipient() {
    let fx = Fixture::without_queue();
    let _held = fx.hold_flock("alice");
    let (srv, _) = lmtp_daemon(&fx, &[]);
    let mut c = srv.connect();
    c.expect_reply(220);
    let lhlo = c.expect("LHLO mx.example", 250).text();
    assert!(lhlo.contains("250-CHUNKING"), "{lhlo}");
    c.expect("MAIL FROM:<s@mx.example>", 250);
    c.expect("RCPT TO:<jon@razorback.test>", 250);
    c.expect("RCPT TO:<alice@razorback.test>", 250);
    let first = b"Subject: chunked\r\n\r\nline one\r";
    let last = b"\nline two\r\n";
    c.send_raw(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send_raw(first);
    c.expect_reply(250);
    c.send_raw(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    c.send_raw(last);
    let jon = c.reply();
    let alice = c.reply();
    assert_eq!((jon.code, alice.code), (250, 451), "{jon:?} {alice:?}");
    assert!(jon.text().contains("jon@razorback.test"), "{}", jon.text());
    assert!(
        alice.text().contains("alice@razorback.test"),
        "{}",
        alice.text()
    );
    c.expect("QUIT", 221);
    let mbox = String::from_utf8_lossy(&fx.read_mailbox("jon")).into_owned();
    assert!(mbox.contains("with LMTP"), "{mbox}");
    assert!(
        mbox.contains("Subject: chunked\n\nline one\nline two\n"),
        "{mbox}"
    );
    assert!(fx.read_mailbox("alice").is_empty());
}

/// Each recipient's reply goes out when its delivery is over, not when
/// the last one is (RFC 2033 4.2 allows either; the MTA in front waits
/// less). alice's mailbox is locked by the test until it has read jon's
/// reply: it can only read it if that reply came while alice's delivery
/// still waited for the lock; then alice's goes through too.
#[test]
fn lmtp_replies_stream_as_deliveries_finish() {
    let fx = Fixture::without_queue();
    let held = fx.hold_flock("alice");
    let mut args = fx.args();
    args.extend(["--lock-timeout", "120"].map(String::from));
    let (srv, _) = lmtp_daemon_with(&fx, args, &[]);
    let mut c = srv.connect();
    c.w.set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    c.r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(100)))
        .unwrap();
    c.expect_reply(220);
    c.expect("LHLO mx.example", 250);
    c.expect("MAIL FROM:<s@mx.example>", 250);
    c.expect("RCPT TO:<jon@razorback.test>", 250);
    c.expect("RCPT TO:<alice@razorback.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: streamed\r\n\r\nx\r\n.\r\n");
    let jon = c.reply();
    assert_eq!(jon.code, 250, "{}", jon.text());
    assert!(
        jon.text().contains("<jon@razorback.test>"),
        "{}",
        jon.text()
    );
    drop(held);
    let alice = c.reply();
    assert_eq!(alice.code, 250, "{}", alice.text());
    assert!(
        alice.text().contains("<alice@razorback.test>"),
        "{}",
        alice.text()
    );
    c.expect("QUIT", 221);
    assert!(String::from_utf8_lossy(&fx.read_mailbox("alice")).contains("Subject: streamed"));
}
