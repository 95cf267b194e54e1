//! Integration tests: the real `postie` binary on a loopback port or on
//! pipes, a temporary spool, and real clients and mailbox readers.

mod chunking;
mod config;
mod crash;
mod delivery;
mod dsn;
mod golden;
mod lmtp;
mod load;
mod locks;
mod programs;
mod queue;
mod queued;
mod sendmail;
mod structure;
mod tls;
mod utf8;
mod util;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use golden::{load, play};
use util::*;

/// The article's telnet session, byte for byte, over TCP: the codes of
/// Sendmail 8.9.3, and the message read back by Python's mailbox module.
#[test]
fn article_session_over_tcp() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = srv.connect();
    play(&mut c, &load("article"));
    assert!(c.closed());
    check_article_mailbox(&fx, Some("127.0.0.1"));
}

fn check_article_mailbox(fx: &Fixture, peer: Option<&str>) {
    let msgs = python_mbox(&fx.mailbox(USER));
    assert_eq!(msgs.len(), 1, "one message in the mailbox");
    let m = &msgs[0];
    assert_eq!(m.subject, "Demonstration of email");
    assert!(
        m.from.starts_with(&format!("{USER}@{HOST} ")),
        "From_ line: {}",
        m.from
    );
    assert_eq!(m.return_path, format!("<{USER}@{HOST}>"));
    assert!(
        m.received.contains("from frogbog.localdomain"),
        "{}",
        m.received
    );
    if let Some(ip) = peer {
        assert!(m.received.contains(&format!("[{ip}]")), "{}", m.received);
    }
    // The body as the golden mailbox has it, without the blank line that
    // ends a message in an mbox.
    let mbox = &load("article").mailboxes[0].1;
    let body = mbox
        .split_once("\n\n")
        .unwrap()
        .1
        .strip_suffix('\n')
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&m.body), body);
    let mode = std::fs::metadata(fx.mailbox(USER))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Runs `postie ARGS` with the article's dialog on stdin and returns what it
/// wrote to stdout and stderr.
fn article_over_pipes(fx: &Fixture, mode: &[&str]) -> (Vec<Reply>, Vec<u8>) {
    let input = load("article").input();
    let mut child = Command::new(bin())
        .args(mode)
        .args(fx.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let mut r = &out.stdout[..];
    let mut replies = Vec::new();
    while let Some(rep) = read_reply(&mut r) {
        replies.push(rep);
    }
    (replies, out.stderr)
}

/// The same session over stdin/stdout (`-bs`, as sendmail), and nothing at
/// all on stderr: under inetd stderr is the client's socket.
#[test]
fn article_session_over_bs() {
    for mode in [&["-bs"][..], &["inetd"][..]] {
        let fx = Fixture::new();
        let (replies, stderr) = article_over_pipes(&fx, mode);
        let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [220, 250, 250, 250, 354, 250, 250, 550, 221],
            "{mode:?}"
        );
        assert!(
            stderr.is_empty(),
            "stderr must stay silent: {}",
            String::from_utf8_lossy(&stderr)
        );
        check_article_mailbox(&fx, None);
    }
}

/// Accept=no socket activation: the listening socket comes from systemd's
/// LISTEN_FDS, checked against LISTEN_PID.
#[test]
fn systemd_socket_activation() {
    if !have("systemd-socket-activate", "systemd_socket_activation") {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(bin())
        .arg("serve")
        .args(fx.args())
        .args(fx.own_submit_socket());
    // systemd-socket-activate listens, and starts postie on the first
    // connection with the socket as fd 3.
    let srv = Server::spawn_at(cmd, format!("127.0.0.1:{port}").parse().unwrap());
    let mut c = srv.connect();
    play(&mut c, &load("article"));
    check_article_mailbox(&fx, Some("127.0.0.1"));
    // The same postie process serves the next connection on the inherited
    // socket, and says where it listens.
    let mut c2 = srv.connect();
    c2.expect_reply(220);
    c2.expect("QUIT", 221);
    let log = srv.log_with(&[&format!("listening on 127.0.0.1:{port}")]);
    assert!(
        log.contains(&format!("listening on 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(log.matches(" connect from ").count() >= 2, "{log}");
}

/// `Type=notify`: postie tells systemd `READY=1` once it listens.
#[test]
fn notifies_readiness() {
    let fx = Fixture::new();
    let sock_path = fx.dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    // As systemd's, writable by the unprivileged SMTP side.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(fx.args())
        .args(fx.own_submit_socket());
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let srv = Server::spawn(cmd);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification");
    assert!(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
    );
    // Ready means serving.
    srv.connect().expect_reply(220);
}

/// Accept=yes, as inetd: one postie per connection on stdin/stdout, the
/// client's address from getpeername(0).
#[test]
fn systemd_accept_inetd() {
    if !have("systemd-socket-activate", "systemd_accept_inetd") {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .arg("--accept")
        .arg("--inetd")
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(bin())
        .arg("inetd")
        .args(fx.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "systemd-socket-activate did not listen"
    );
    let mut c = Client::connect(addr);
    play(&mut c, &load("article"));
    // A second connection gets its own process.
    let mut c2 = Client::connect(addr);
    assert_eq!(c2.reply().code, 220);
    c2.expect("QUIT", 221);
    let _ = child.kill();
    let _ = child.wait();
    check_article_mailbox(&fx, Some("127.0.0.1"));
}

/// Python's smtplib: EHLO, pipelined MAIL/RCPT/DATA, several messages on one
/// connection with 8-bit text, dot-leading lines and `From ` lines; each
/// reads back intact with mailbox.mbox.
#[test]
fn smtplib_pipelining_and_tricky_bodies() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let script = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
bodies = [
    "Plain line\n",
    "From the start\n>From quoted\n>>From twice\n",
    ".leading dot\n..two dots\n.\nend\n",
    "Gr\u00fc\u00dfe aus K\u00f6ln \u2013 8-bit\n",
]
with smtplib.SMTP(host, port) as s:
    code, caps = s.ehlo("client.example")
    assert code == 250
    assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("size"), caps
    for i, b in enumerate(bodies):
        msg = ("Subject: test %d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" % i) + b.replace("\n", "\r\n")
        s.sendmail("sender@example.org", ["jon@razorback.test", "Alice+list@RAZORBACK.TEST"],
                   msg.encode("utf-8"), mail_options=["BODY=8BITMIME"])
print("sent", len(bodies))
"#;
    let out = python(script, &["127.0.0.1", &srv.addr.port().to_string()]);
    assert_eq!(out.trim(), "sent 4");
    let expected = [
        "Plain line\n",
        "From the start\n>From quoted\n>>From twice\n",
        ".leading dot\n..two dots\n.\nend\n",
        "Grüße aus Köln – 8-bit\n",
    ];
    for user in ["jon", "alice"] {
        let msgs = python_mbox(&fx.mailbox(user));
        assert_eq!(msgs.len(), expected.len(), "{user}");
        for (i, (m, want)) in msgs.iter().zip(expected).enumerate() {
            assert_eq!(m.subject, format!("test {i}"));
            assert!(m.from.starts_with("sender@example.org "));
            // mailbox.mbox unquotes nothing (it is mboxo-agnostic): compare
            // after undoing mboxrd quoting ourselves.
            let body = unquote_mboxrd(&m.body);
            assert_eq!(String::from_utf8_lossy(&body), want, "{user} message {i}");
        }
    }
}

/// The exact bytes of a mailbox entry, with what the golden dialog
/// `mailbox-bytes` masks: the From_ line's asctime date, and the trace
/// headers with the Received: date's numeric offset.
#[test]
fn mailbox_bytes_are_exact() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    play(&mut srv.connect(), &load("mailbox-bytes"));
    let mb = String::from_utf8(fx.read_mailbox("jon")).unwrap();
    let (first, rest) = mb.split_once('\n').unwrap();
    assert!(first.starts_with("From MAILER-DAEMON "), "{first}");
    // asctime date: "Sat Nov 28 16:59:45 2026"
    let date = &first["From MAILER-DAEMON ".len()..];
    assert_eq!(date.len(), 24, "{date:?}");
    assert!(rest.starts_with("Return-Path: <>\nReceived: from client.example ([127.0.0.1])\n\tby razorback.test (postie) with ESMTP id "));
    // Received date with a numeric offset (RFC 5321 4.4).
    let recv_end = rest.find("\nSubject: x\n").unwrap();
    let date_line = &rest[..recv_end];
    let off = &date_line[date_line.len() - 5..];
    assert!(off.starts_with('+') || off.starts_with('-'), "{date_line}");
    assert!(
        rest.ends_with("\nSubject: x\n\n>From me\n>>From you\n.\nbare\rcr\n\n"),
        "{rest:?}"
    );
}

/// Connections over the per-client cap get 421 4.7.0 at once, and the
/// server keeps serving the others.
#[test]
fn connection_caps() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--max-per-client", "2"]);
    let mut a = srv.connect();
    let mut b = srv.connect();
    assert_eq!(a.reply().code, 220);
    assert_eq!(b.reply().code, 220);
    let mut c = srv.connect();
    let r = c.reply();
    assert_eq!(r.code, 421);
    assert!(r.lines[0].starts_with("421 4.7.0"));
    assert!(c.closed());
    a.expect("QUIT", 221);
    assert!(a.closed());
    // The slot is free again once a's thread has ended.
    assert!(wait_for(Duration::from_secs(5), || {
        let mut d = srv.connect();
        d.reply().code == 220
    }));
    b.expect("NOOP", 250);
}

/// An idle client is closed with 421 4.4.2 after the command timeout.
#[test]
fn idle_client_times_out() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--timeout-command", "1"]);
    let mut c = srv.connect();
    c.reply();
    let r = c.reply();
    assert_eq!(r.code, 421);
    assert!(r.lines[0].starts_with("421 4.4.2"));
    assert!(c.closed());
}

/// A client stalling in the middle of DATA is cut off after the data
/// timeout; nothing is delivered.
#[test]
fn stalled_data_times_out_and_delivers_nothing() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--timeout-data", "1"]);
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO c", 250);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect("RCPT TO:<jon>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: half\r\n\r\nhalf a mess");
    assert_eq!(c.reply().code, 421);
    assert!(fx.read_mailbox("jon").is_empty());
}

/// Garbage from one client (binary noise, no line ends, a flood of
/// pipelined commands) neither crashes the server nor stops it answering
/// another client.
#[test]
fn garbage_does_not_disturb_other_clients() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut noise = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        noise.push((x >> 16) as u8);
    }
    let mut g = std::net::TcpStream::connect(srv.addr).unwrap();
    let _ = g.write_all(&noise);
    let mut g2 = std::net::TcpStream::connect(srv.addr).unwrap();
    let flood = "NOOP\r\n".repeat(50_000);
    let _ = g2.write_all(flood.as_bytes());
    let _ = g2.shutdown(std::net::Shutdown::Write);
    let mut c = srv.connect();
    c.reply();
    c.send_message("a@b.example", "jon", b"Subject: fine\r\n\r\nstill here\r\n");
    c.expect("QUIT", 221);
    drop(g);
    let mut buf = Vec::new();
    g2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = g2.read_to_end(&mut buf);
    assert!(buf.starts_with(b"220 "));
    assert_eq!(python_mbox(&fx.mailbox("jon")).len(), 1);
}

/// SIGTERM: the server stops accepting, lets a session finish its
/// transaction, and exits 0.
#[test]
fn sigterm_lets_a_transaction_finish_then_exits() {
    let fx = Fixture::new();
    let mut srv = Server::start(&fx, &["--shutdown-grace", "5"]);
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO c", 250);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect("RCPT TO:<jon>", 250);
    srv.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(srv.addr).is_err(),
        "still accepting after SIGTERM"
    );
    c.expect("DATA", 354);
    c.send_raw(b"Subject: last\r\n\r\nlast one\r\n.\r\n");
    c.expect_reply(250);
    let r = c.cmd("MAIL FROM:<a@b.example>");
    assert_eq!(r.code, 421, "{}", r.text());
    let st = srv.terminate(Duration::from_secs(10)).expect("exited");
    assert!(st.success(), "{st:?}");
    assert_eq!(python_mbox(&fx.mailbox("jon")).len(), 1);
}

/// swaks, a real SMTP test client, where installed.
#[test]
fn swaks_delivers() {
    if !have("swaks", "swaks_delivers") {
        return;
    }
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &srv.addr.port().to_string(),
        ])
        .args(["--to", "jon@razorback.test", "--from", "cron@example.org"])
        .args([
            "--header",
            "Subject: via swaks",
            "--body",
            "Hello from swaks",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let msgs = python_mbox(&fx.mailbox("jon"));
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].subject, "via swaks");
}

/// `--version` and `--help` work and a bad option is a usage error (64).
#[test]
fn command_line_basics() {
    let v = Command::new(bin()).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("postie "));
    let h = Command::new(bin()).arg("--help").output().unwrap();
    assert!(h.status.success());
    assert!(String::from_utf8_lossy(&h.stdout).contains("serve"));
    let bad = Command::new(bin())
        .arg("--no-such-option")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    let fx = Fixture::new();
    let missing = Command::new(bin())
        .args(["inetd", "--spool", "/nonexistent/spool"])
        .args(["--log", "stderr"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
    drop(fx);
}

/// Issue "postie 5" item 8, cross-protocol: an HTTP POST whose body is an
/// SMTP dialog (what a web page can make a browser send to port 25), sent
/// by curl itself, reads `502 5.7.0` and no `250`; nothing is delivered.
/// (Such a request as raw bytes, all at once, is the golden dialog
/// `http-post`.)
#[test]
fn http_post_with_an_smtp_dialog_delivers_nothing() {
    if !have("curl", "http_post_with_an_smtp_dialog_delivers_nothing") {
        return;
    }
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let body = format!(
        "HELO evil.example\r\nMAIL FROM:<a@evil.example>\r\nRCPT TO:<{USER}@{HOST}>\r\n\
         DATA\r\nSubject: cross-protocol\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dialog");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("curl")
        .args(["--http0.9", "-sS", "--max-time", "60", "-X", "POST"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/", srv.addr))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("\r\n502 5.7.0 "), "curl read: {shown:?}");
    assert!(!shown.contains("\r\n250 "), "curl read: {shown:?}");
    assert!(fx.read_mailbox(USER).is_empty(), "a message was delivered");
}

/// Issue "postie 5" item 9: `HELO evil(x);y=z) (by spoof; Thu, 1 Jan 2015
/// 00:00:00 +0000` is accepted for the dialog (the golden dialog
/// `bogus-helo`), but the `Received:` header it leaves keeps its RFC 5322
/// structure: read by Python's email package, comments balance and there
/// is one `;`, before today's date.
#[test]
fn bogus_helo_keeps_received_well_formed() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    play(&mut srv.connect(), &load("bogus-helo"));
    let script = r#"
import email, email.policy, email.utils, mailbox, sys
msgs = list(mailbox.mbox(sys.argv[1], create=False))
assert len(msgs) == 1, len(msgs)
m = email.message_from_bytes(msgs[0].as_bytes(unixfrom=False), policy=email.policy.default)
rs = m.get_all("Received")
assert len(rs) == 1, rs
v = str(rs[0])
# RFC 5322 3.2.2: comments nest and balance, a backslash quotes the next
# character; 3.6.7: "Received:" *received-token ";" date-time.
depth, quoted, semis, i = 0, False, [], 0
while i < len(v):
    ch = v[i]
    if ch == "\\":
        i += 2
        continue
    if quoted:
        quoted = ch != '"'
    elif ch == '"' and depth == 0:
        quoted = True
    elif ch == "(":
        depth += 1
    elif ch == ")":
        depth -= 1
        assert depth >= 0, "unbalanced ')' at %d: %r" % (i, v)
    elif ch == ";" and depth == 0:
        semis.append(i)
    i += 1
assert depth == 0 and not quoted, "unbalanced: %r" % v
assert len(semis) == 1 and v.count(";") == 1, "semicolons: %r" % v
date = email.utils.parsedate_to_datetime(v[semis[0] + 1:].strip())
print(date.year)
print(v)
"#;
    let out = python(script, &[fx.mailbox(USER).to_str().unwrap()]);
    let mut lines = out.lines();
    let year: i32 = lines.next().unwrap().parse().unwrap();
    assert!(year >= 2024, "{out}");
    let received = lines.collect::<Vec<_>>().join("\n");
    assert!(
        received.starts_with("from [127.0.0.1] (helo=evil\\(x\\)?y=z\\))"),
        "{received}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary bytes from a client, through the whole connection loop
    /// in-process: no panic, every reply well formed, nothing half-written.
    #[test]
    fn any_bytes_through_the_connection_loop(chunks in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            proptest::sample::select(vec![
                b"EHLO x\r\n".to_vec(), b"MAIL FROM:<a@b.example>\r\n".to_vec(),
                b"RCPT TO:<jon>\r\n".to_vec(), b"DATA\r\n".to_vec(), b"\r\n.\r\n".to_vec(),
                b".\r\n".to_vec(), b"\n.\n".to_vec(), b"From x\r\n".to_vec(), b"\r".to_vec(),
            ]),
        ],
        0..30,
    )) {
        let fx = Fixture::new();
        let output = run_in_process(&fx, chunks.concat());
        let mut r = &output[..];
        let first = read_reply(&mut r).expect("greeting");
        proptest::prop_assert_eq!(first.code, 220);
        while let Some(rep) = read_reply(&mut r) {
            proptest::prop_assert!((200..600).contains(&rep.code));
        }
        proptest::prop_assert!(r.is_empty(), "trailing bytes: {:?}", r);
        // Whatever was delivered parses as whole messages.
        let mb = fx.read_mailbox("jon");
        if !mb.is_empty() {
            proptest::prop_assert!(mb.starts_with(b"From a@b.example "));
            proptest::prop_assert!(mb.ends_with(b"\n\n"));
        }
    }
}

/// `--listen` may be given several times, IPv4 and IPv6; each address is
/// served, and the IPv6 client's address is recorded as an IPv6 literal.
#[test]
fn listens_on_ipv4_and_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP listens_on_ipv4_and_ipv6: no IPv6 loopback on this machine");
        return;
    }
    let fx = Fixture::new();
    let (p4, p6) = (free_port(), free_port());
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .args([
            "--listen",
            &format!("127.0.0.1:{p4}"),
            "--listen",
            &format!("[::1]:{p6}"),
        ])
        .args(fx.args())
        .args(fx.own_submit_socket());
    let srv = Server::spawn(cmd);
    let log = srv.log();
    for addr in [format!("127.0.0.1:{p4}"), format!("[::1]:{p6}")] {
        let a: std::net::SocketAddr = addr.parse().unwrap();
        assert!(
            wait_for(Duration::from_secs(5), || srv
                .log()
                .contains(&format!("listening on {a}"))),
            "{log}"
        );
        let mut c = Client::connect(a);
        c.expect_reply(220);
        c.send_message("a@b.example", "jon", b"Subject: over IP\r\n\r\nx\r\n");
        c.expect("QUIT", 221);
    }
    let msgs = python_mbox(&fx.mailbox("jon"));
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[0].received.contains("[127.0.0.1]"),
        "{}",
        msgs[0].received
    );
    assert!(
        msgs[1].received.contains("[IPv6:::1]"),
        "{}",
        msgs[1].received
    );
}

/// SIGINT stops an idle daemon cleanly, like SIGTERM.
#[test]
fn sigint_stops_the_daemon() {
    let fx = Fixture::new();
    let mut srv = Server::start(&fx, &[]);
    srv.connect().expect_reply(220);
    srv.signal(nix::sys::signal::Signal::SIGINT);
    let st = srv
        .wait_exit(Duration::from_secs(10))
        .expect("still running after SIGINT");
    assert!(st.success(), "{st:?}");
}

/// On pipes (`-bs`), the command timeout still holds: a silent client gets
/// 421 4.4.2 on stdout and postie exits.
#[test]
fn bs_on_pipes_times_out() {
    let fx = Fixture::new();
    let mut child = Command::new(bin())
        .args(["-bs", "--timeout-command", "1"])
        .args(fx.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take(); // held open, never written
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("220 "), "{out}");
    assert!(lines[1].starts_with("421 4.4.2 "), "{out}");
}
