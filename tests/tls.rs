//! STARTTLS (RFC 3207) against the real binary: Python's `ssl` and swaks
//! as clients, TLS 1.2 and 1.3, the `Received:` line, plaintext injected
//! before the handshake (CVE-2011-0411), garbage and silence instead of a
//! ClientHello, `require-tls`, and a certificate swapped under SIGHUP.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A self-signed certificate and its key, made with openssl(1), in `dir`
/// as `NAME.pem` and `NAME.key` (mode 0600).
fn make_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "3650", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// A server offering STARTTLS with a fresh certificate (CN `cn`), and the
/// certificate's paths. None (with a SKIP line) without openssl.
fn tls_server(fx: &Fixture, test: &str, extra: &[&str]) -> Option<(Server, PathBuf, PathBuf)> {
    if !have("openssl", test) {
        return None;
    }
    let (cert, key) = make_cert(fx.dir.path(), "server", "first.test");
    let server = Server::spawn(serve_command(fx, fx.args_with_tls(&cert, &key), extra));
    Some((server, cert, key))
}

/// Python: a STARTTLS session to `port` at TLS `version` ("1.2", "1.3")
/// that sends one message to jon; prints the version, the cipher and the
/// SHA-256 of the server's certificate.
const SEND_OVER_TLS: &str = r#"
import hashlib, smtplib, ssl, sys
port, version = int(sys.argv[1]), sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = v
ctx.maximum_version = v
s = smtplib.SMTP("127.0.0.1", port, timeout=60)
s.ehlo("client.example")
assert s.has_extn("starttls"), s.esmtp_features
code, _ = s.starttls(context=ctx)
assert code == 220, code
s.ehlo("client.example")
assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
s.sendmail("sender@client.example", ["jon@razorback.test"],
           b"Subject: over TLS " + version.encode() + b"\r\n\r\nsecret\r\n")
der = s.sock.getpeercert(binary_form=True)
print(s.sock.version(), s.sock.cipher()[0], hashlib.sha256(der).hexdigest())
s.quit()
"#;

fn fingerprint(cert: &Path) -> String {
    python(
        r#"
import hashlib, ssl, sys
der = ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())
print(hashlib.sha256(der).hexdigest())
"#,
        &[cert.to_str().unwrap()],
    )
    .trim()
    .to_string()
}

/// Python's `ssl` through STARTTLS at TLS 1.2 and at 1.3: both delivered,
/// each `Received:` saying ESMTPS with the version and cipher agreed. As
/// root the key is root's, mode 0600: the SMTP side (nobody) could not
/// read it, and TLS works because it was read before the privileges were
/// dropped.
#[test]
fn python_starttls_at_tls_1_2_and_1_3() {
    let fx = Fixture::new();
    let Some((server, cert, _)) = tls_server(&fx, "python_starttls_at_tls_1_2_and_1_3", &[]) else {
        return;
    };
    let port = server.addr.port().to_string();
    for version in ["1.2", "1.3"] {
        let out = python(SEND_OVER_TLS, &[&port, version]);
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words[0], format!("TLSv{version}"), "{out}");
        assert_eq!(words[2], fingerprint(&cert));
    }
    let msgs = python_mbox(&fx.mailbox("jon"));
    assert_eq!(msgs.len(), 2);
    let mbox = String::from_utf8_lossy(&fx.read_mailbox("jon")).into_owned();
    for version in ["1.2", "1.3"] {
        let at = mbox.find(&format!("Subject: over TLS {version}")).unwrap();
        let received = &mbox[..at].rsplit("Received: ").next().unwrap();
        assert!(
            received.contains(&format!(
                "(postie) with ESMTPS (TLSv{version} with cipher TLS"
            )),
            "{received}"
        );
    }
    assert!(server.log_has("TLS started: TLSv1.3 with cipher"));
}

/// swaks --tls: a real client's STARTTLS dialog.
#[test]
fn swaks_starttls() {
    let test = "swaks_starttls";
    if !have("swaks", test) {
        return;
    }
    let fx = Fixture::new();
    let Some((server, _, _)) = tls_server(&fx, test, &[]) else {
        return;
    };
    let out = Command::new("swaks")
        .args(["--tls", "--server", "127.0.0.1", "--port"])
        .arg(server.addr.port().to_string())
        .args(["--to", "jon@razorback.test", "--from", "s@client.example"])
        .args(["--helo", "client.example", "--timeout", "60"])
        .output()
        .expect("swaks");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("TLS started"), "{said}");
    let mbox = String::from_utf8_lossy(&fx.read_mailbox("jon")).into_owned();
    assert!(mbox.contains("with ESMTPS (TLSv1.3 with cipher"), "{mbox}");
}

/// Python: a raw client of the server on port `sys.argv[1]`, with `s` the
/// socket, `f` its reader, `reply(f)` the lines of one reply, and
/// `starttls(s)` the TLS socket and its reader after a 220 (no
/// certificate check: the test's certificate is self-signed).
const RAW_CLIENT: &str = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
f = s.makefile("rb")
def reply(f):
    lines = []
    while True:
        l = f.readline()
        lines.append(l.decode("utf-8").rstrip())
        if l[3:4] != b"-":
            return lines
def starttls(s):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s)
    return t, t.makefile("rb")
reply(f)
"#;

/// CVE-2011-0411: `STARTTLS` and a command in one packet. The command was
/// sent in plain text before the handshake, so it must not run inside
/// TLS: the first reply in TLS is the one to the client's EHLO, and RCPT
/// finds no MAIL. The server says in its log what it threw away.
#[test]
fn plaintext_after_starttls_is_discarded() {
    let fx = Fixture::new();
    let test = "plaintext_after_starttls_is_discarded";
    let Some((server, _, _)) = tls_server(&fx, test, &[]) else {
        return;
    };
    let script = RAW_CLIENT.to_string()
        + r#"
s.sendall(b"EHLO client.example\r\n")
reply(f)
s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n")
print(reply(f)[-1])
t, g = starttls(s)
t.sendall(b"EHLO client.example\r\n")
print(reply(g)[0])
t.sendall(b"RCPT TO:<jon@razorback.test>\r\n")
print(reply(g)[-1])
t.sendall(b"QUIT\r\n")
print(reply(g)[-1])
"#;
    let out = python(&script, &[&server.addr.port().to_string()]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("220 2.0.0"), "{out}");
    assert!(lines[1].starts_with("250-razorback.test Hello"), "{out}");
    assert!(lines[2].starts_with("503 5.5.1"), "{out}");
    assert!(lines[3].starts_with("221"), "{out}");
    assert!(server.log_has("sent after STARTTLS before the handshake: discarded"));
}

/// An HTTP request where the ClientHello should be, and silence: each
/// connection is closed with a log line, and the server goes on serving.
#[test]
fn garbage_or_silence_instead_of_a_client_hello() {
    let fx = Fixture::new();
    let test = "garbage_or_silence_instead_of_a_client_hello";
    let Some((server, _, _)) = tls_server(&fx, test, &["--timeout-tls", "1"]) else {
        return;
    };
    let start_tls = || {
        let mut c = server.connect();
        c.expect_reply(220);
        c.expect("EHLO client.example", 250);
        c.expect("STARTTLS", 220);
        c
    };
    // Garbage: the server answers with an alert at most, and closes.
    let mut c = start_tls();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(read_to_close(&mut c.w), "open after garbage");
    assert!(wait_for(Duration::from_secs(20), || server
        .log_has("TLS handshake failed")));
    // Silence: the handshake's time limit (1 s) ends it.
    let mut c = start_tls();
    assert!(read_to_close(&mut c.w), "open after the handshake's time");
    // Still serving.
    let mut c = server.connect();
    c.expect_reply(220);
    c.send_message(
        "s@client.example",
        "jon@razorback.test",
        b"Subject: after\r\n\r\nx\r\n",
    );
    assert!(String::from_utf8_lossy(&fx.read_mailbox("jon")).contains("Subject: after"));
}

/// Reads what the server sends (an alert, perhaps) until it closes; false
/// if it is still open after 60 s.
fn read_to_close(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// `require-tls` on the listener's port: MAIL is 530 5.7.0 before
/// STARTTLS, and the same MAIL goes through inside TLS.
#[test]
fn required_tls_refuses_mail_in_plain_text() {
    let test = "required_tls_refuses_mail_in_plain_text";
    if !have("openssl", test) {
        return;
    }
    let fx = Fixture::new();
    let (cert, key) = make_cert(fx.dir.path(), "server", "first.test");
    let port = free_port();
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(fx.args_with_tls(&cert, &key))
        .args(fx.own_submit_socket())
        .args(["--require-tls", &port.to_string()]);
    let server = Server::spawn(cmd);
    let mut c = server.connect();
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    let r = c.expect("MAIL FROM:<s@client.example>", 530);
    assert!(r.text().contains("5.7.0"), "{}", r.text());
    c.expect("QUIT", 221);
    let out = python(SEND_OVER_TLS, &[&port.to_string(), "1.3"]);
    assert!(out.starts_with("TLSv1.3"), "{out}");
    assert_eq!(python_mbox(&fx.mailbox("jon")).len(), 1);
}

/// A new certificate put in place of the old and SIGHUP: new handshakes
/// use it. A broken one and SIGHUP: the log says so and the last good one
/// stays. As root the files are root's, mode 0600: the delivery process
/// reads them for the SMTP side, which could not.
#[test]
fn sighup_swaps_the_certificate() {
    let fx = Fixture::new();
    let test = "sighup_swaps_the_certificate";
    let Some((server, cert, key)) = tls_server(&fx, test, &[]) else {
        return;
    };
    let port = server.addr.port().to_string();
    let seen = |n: usize| {
        let out = python(SEND_OVER_TLS, &[&port, "1.3"]);
        let fp = out.split_whitespace().nth(2).unwrap().to_string();
        assert_eq!(python_mbox(&fx.mailbox("jon")).len(), n);
        fp
    };
    let first = fingerprint(&cert);
    assert_eq!(seen(1), first);
    // The new pair is written beside the old and renamed over it, as
    // certbot and an admin's cp to a temporary name do.
    let (cert2, key2) = make_cert(fx.dir.path(), "second", "second.test");
    std::fs::rename(&cert2, &cert).unwrap();
    std::fs::rename(&key2, &key).unwrap();
    let second = fingerprint(&cert);
    assert_ne!(first, second);
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(20), || server
        .log_has("TLS certificate and key reloaded")));
    assert_eq!(seen(2), second);
    // A key that does not match: refused, the second pair stays.
    let (_, key3) = make_cert(fx.dir.path(), "third", "third.test");
    std::fs::rename(&key3, &key).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(20), || server
        .log_has("TLS certificate and key not reloaded")));
    assert_eq!(seen(3), second);
}

/// Without tls-cert, Debian's snakeoil pair where this process may read
/// its key (as root: STARTTLS offered), and no STARTTLS where it may not
/// (an ordinary user: said in the log).
#[test]
fn the_snakeoil_pair_is_the_default() {
    let key = Path::new("/etc/ssl/private/ssl-cert-snakeoil.key");
    if !key.exists() || !Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem").exists() {
        eprintln!("SKIP the_snakeoil_pair_is_the_default: no snakeoil pair (package ssl-cert)");
        return;
    }
    let fx = Fixture::new();
    let mut args = fx.args();
    let at = args.iter().position(|a| a == "--tls-cert").unwrap();
    args.drain(at..at + 2);
    let server = Server::spawn(serve_command(&fx, args, &[]));
    let mut c = server.connect();
    c.expect_reply(220);
    let ehlo = c.expect("EHLO client.example", 250).text();
    let readable = std::fs::File::open(key).is_ok();
    assert_eq!(ehlo.contains("250-STARTTLS"), readable, "{ehlo}");
    if readable {
        c.expect("STARTTLS", 220);
    } else {
        assert!(server.log_has("no STARTTLS: the snakeoil pair is not readable"));
        c.expect("STARTTLS", 502);
    }
}

/// `postie check` says which pair STARTTLS uses, refuses a key that is
/// not the certificate's (exit 78, as the server would not start), and
/// warns about a key every user may read.
#[test]
fn check_reports_starttls() {
    let test = "check_reports_starttls";
    if !have("openssl", test) {
        return;
    }
    let fx = Fixture::new();
    let (cert, key) = make_cert(fx.dir.path(), "server", "first.test");
    let (_, other) = make_cert(fx.dir.path(), "other", "other.test");
    let check = |key: &Path| {
        let out = run_postie(&[fx.args_with_tls(&cert, key), vec!["check".to_string()]].concat());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) = check(&key);
    assert!(
        said.contains(&format!(
            "ok: STARTTLS offered: certificate {}, key {}",
            cert.display(),
            key.display()
        )),
        "{said}"
    );
    assert!(!said.contains("every user may read it"), "{said}");
    assert_ne!(code, Some(78), "{said}");
    let (code, said) = check(&other);
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("certificate and key"), "{said}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, said) = check(&key);
    assert!(said.contains("every user may read it; chmod 600"), "{said}");
}

/// Inside TLS, a message in BDAT chunks (RFC 3030) from a UTF-8 sender
/// (RFC 6531): the chunks are read through TLS by count, and Received
/// says UTF8SMTPS.
#[test]
fn bdat_and_smtputf8_inside_tls() {
    let fx = Fixture::new();
    let test = "bdat_and_smtputf8_inside_tls";
    let Some((server, _, _)) = tls_server(&fx, test, &[]) else {
        return;
    };
    let script = RAW_CLIENT.to_string()
        + r#"
s.sendall(b"EHLO client.example\r\n"); reply(f)
s.sendall(b"STARTTLS\r\n"); reply(f)
t, g = starttls(s)
t.sendall(b"EHLO client.example\r\n"); reply(g)
t.sendall("MAIL FROM:<pelé@client.example> SMTPUTF8\r\n".encode()); print(reply(g)[-1])
t.sendall(b"RCPT TO:<jon@razorback.test>\r\n"); print(reply(g)[-1])
body = "Subject: café\r\n\r\n.\r\nQUIT\r\n".encode()
t.sendall(b"BDAT %d LAST\r\n" % len(body) + body); print(reply(g)[-1])
t.sendall(b"QUIT\r\n"); print(reply(g)[-1])
"#;
    let out = python(&script, &[&server.addr.port().to_string()]);
    let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
    assert_eq!(codes, ["250", "250", "250", "221"], "{out}");
    let mbox = String::from_utf8_lossy(&fx.read_mailbox("jon")).into_owned();
    assert!(
        mbox.contains("with UTF8SMTPS (TLSv1.3 with cipher"),
        "{mbox}"
    );
    assert!(mbox.contains("Subject: café\n\n.\nQUIT\n"), "{mbox}");
}

/// A session on pipes (`postie inetd` from a script, root's `sendmail
/// -bs`) offers no STARTTLS and reads no certificate: one that cannot be
/// read does not fail it. Over TCP the same setting is an error (the
/// daemon does not start: `check_reports_starttls`).
#[test]
fn a_session_on_pipes_reads_no_certificate() {
    let fx = Fixture::new();
    let missing = fx.dir.path().join("missing.pem");
    let mut cmd = Command::new(bin());
    cmd.arg("inetd")
        .args(fx.args_with_tls(&missing, &missing))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"EHLO client.example\r\nQUIT\r\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("220 "), "{said}");
    assert!(said.contains("250-PIPELINING"), "{said}");
    assert!(!said.contains("STARTTLS"), "{said}");
    assert!(said.contains("221 "), "{said}");
}
