//! `postie lmtp` (RFC 2033): LMTP dialogs against the real binary on
//! stdin/stdout, on a Unix socket and on TCP, with one good and one
//! failing recipient (a mailbox held locked past --lock-timeout, without a
//! queue); who may connect to the socket; and Postfix 3.7 from Debian's
//! package (bench/postfix-setup) delivering through the socket into mbox.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
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
/// on a loopback port.
fn lmtp_daemon(fx: &Fixture, extra: &[&str]) -> (Server, PathBuf) {
    let sock = fx.dir.path().join("lmtp.sock");
    let mut cmd = Command::new(bin());
    cmd.arg("lmtp")
        .arg("--listen")
        .arg(&sock)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(lmtp_args(fx))
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
