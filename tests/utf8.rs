//! SMTPUTF8 (RFC 6531, RFC 6532) against the real binary: Python's
//! smtplib as the client (it sends SMTPUTF8 itself when an address is not
//! ASCII), raw dialogs for what smtplib will not send, and the mailbox
//! read back by Python's `mailbox.mbox`, s-nail and mutt. The refusals
//! themselves (550/553 5.6.7, 501) are the golden dialog `smtputf8`.

use crate::util::*;

/// Python's smtplib sends a message whose sender and recipient are UTF-8,
/// the recipient through a UTF-8 alias, its header fields raw UTF-8
/// (RFC 6532); smtplib itself adds SMTPUTF8 to MAIL. The mailbox holds
/// the sender as UTF-8 in `Return-Path:` and in ASCII on the `From ` line
/// (`\x{E9}`, RFC 6533's form),
/// `Received:` says UTF8SMTP and names the UTF-8 recipient, and
/// Python's mailbox module reads the header fields back unchanged.
#[test]
fn smtplib_sends_to_a_utf8_alias() {
    let fx = Fixture::new();
    std::fs::write(fx.aliases(), format!("j\u{f6}rg: {USER}\n")).unwrap();
    let srv = Server::start(&fx, &[]);
    let script = r#"
import smtplib, sys
from email.message import EmailMessage
port, host = int(sys.argv[1]), sys.argv[2]
s = smtplib.SMTP("127.0.0.1", port)
s.ehlo("client.example")
assert s.has_extn("smtputf8"), s.esmtp_features
m = EmailMessage()
m["From"] = "Pelé <pelé@b.example>"
m["To"] = "Jörg <jörg@" + host + ">"
m["Subject"] = "Grüße, 用户"
m.set_content("Käse.\n")
refused = s.send_message(m)
assert refused == {}, refused
s.quit()
"#;
    let port = srv.addr.port().to_string();
    python(script, &[&port, HOST]);
    let msgs = utf8_mbox(&fx.mailbox(USER));
    assert_eq!(msgs.len(), 1, "{}", srv.log());
    let m = &msgs[0];
    assert!(m.from.starts_with("pel\\x{E9}@b.example "), "{}", m.from);
    assert_eq!(m.return_path, "<pel\u{e9}@b.example>");
    assert_eq!(m.subject, "Gr\u{fc}\u{df}e, \u{7528}\u{6237}");
    assert!(m.received.contains(" with UTF8SMTP "), "{}", m.received);
    assert!(
        m.received.contains(&format!("for <j\u{f6}rg@{HOST}>;")),
        "{}",
        m.received
    );
    let raw = String::from_utf8(raw_messages(&fx.mailbox(USER)).remove(0)).unwrap();
    assert!(
        raw.contains("\nFrom: Pel\u{e9} <pel\u{e9}@b.example>\n"),
        "{raw}"
    );
    assert!(
        raw.contains("\nSubject: Gr\u{fc}\u{df}e, \u{7528}\u{6237}\n"),
        "{raw}"
    );
    assert!(raw.ends_with("\n\nK\u{e4}se.\n"), "{raw}");
    assert!(
        srv.log_has(&format!("from=<pel\u{e9}@b.example> to=<{USER}>")),
        "{}",
        srv.log()
    );
}

/// UTF-8 header fields and body, sent as raw bytes, arrive byte for byte
/// (RFC 6532: the DATA reader passes 8-bit bytes untouched).
#[test]
fn utf8_headers_arrive_byte_for_byte() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = srv.connect();
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<pel\u{e9}@b.example> SMTPUTF8", 250);
    c.expect(&format!("RCPT TO:<{USER}@{HOST}>"), 250);
    c.expect("DATA", 354);
    let message = "From: \u{5f20}\u{4f1f} <\u{5f20}\u{4f1f}@\u{4f8b}\u{5b50}.\u{5e7f}\u{544a}>\r\n\
                   To: J\u{f6}rg <jon@razorback.test>\r\n\
                   Subject: \u{1f600} Gr\u{fc}\u{df}e \u{5c0f}\u{6d4b}\u{8bd5}\r\n\
                   X-Bidi: a\u{202e}b\r\n\
                   \r\n\
                   K\u{e4}se \u{1f9c0}\r\n";
    c.send_raw(message.as_bytes());
    c.send_raw(b".\r\n");
    c.expect_reply(250);
    c.expect("QUIT", 221);
    let raw = raw_messages(&fx.mailbox(USER)).remove(0);
    let want = message.replace("\r\n", "\n");
    assert!(
        raw.ends_with(want.as_bytes()),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let msgs = utf8_mbox(&fx.mailbox(USER));
    assert_eq!(
        msgs[0].subject,
        "\u{1f600} Gr\u{fc}\u{df}e \u{5c0f}\u{6d4b}\u{8bd5}"
    );
}

/// The UTF-8 senders a client may send, even one with a space (quoted),
/// and bodies with `From ` lines after UTF-8: every reader we have finds
/// the same number of messages (Python's mailbox, s-nail, mutt), so no
/// `From ` line postie writes is split or missed.
#[test]
fn readers_count_messages_from_utf8_senders() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = srv.connect();
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    let senders = [
        "<pel\u{e9}@b.example>",
        "<\"pel\u{e9} x\"@b\u{fc}cher.example>",
        "<\u{7528}\u{6237}@\u{4f8b}\u{5b50}.\u{5e7f}\u{544a}>",
        "<\u{1f600}@b.example>",
        "<>",
    ];
    for (i, from) in senders.iter().enumerate() {
        c.expect(&format!("MAIL FROM:{from} SMTPUTF8"), 250);
        c.expect(&format!("RCPT TO:<{USER}>"), 250);
        c.expect("DATA", 354);
        c.send_raw(
            format!("Subject: m{i}\r\n\r\nFrom \u{e9}t\u{e9}\r\n>From x\r\nK\u{e4}se\r\n.\r\n")
                .as_bytes(),
        );
        c.expect_reply(250);
    }
    c.expect("QUIT", 221);
    let path = fx.mailbox(USER);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let from_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("From ")).collect();
    assert_eq!(from_lines.len(), senders.len(), "{text}");
    // Sender, a space, the date: one space before the date's fields.
    assert!(
        from_lines[1].starts_with("From pel\\x{E9}_x@b\\x{FC}cher.example "),
        "{text}"
    );
    // ASCII, so that Python's mailbox (which decodes it so) reads it.
    assert!(from_lines.iter().all(|l| l.is_ascii()), "{text}");
    for l in &from_lines {
        let who = l.split(' ').nth(1).unwrap();
        assert!(!who.is_empty() && !who.contains(char::is_whitespace), "{l}");
    }
    let msgs = utf8_mbox(&path);
    assert_eq!(msgs.len(), senders.len());
    let subjects: Vec<String> = (0..senders.len()).map(|i| format!("m{i}")).collect();
    let got: Vec<&String> = msgs.iter().map(|m| &m.subject).collect();
    assert_eq!(got, subjects.iter().collect::<Vec<_>>());
    if let Some(got) = snail_subjects(&path, "readers_count_messages_from_utf8_senders") {
        assert_eq!(got, subjects);
    }
    if let Some(n) = mutt_count(&path, "readers_count_messages_from_utf8_senders") {
        assert_eq!(n, senders.len());
    }
}

/// The messages of the mailbox at `path` as Python's `mailbox.mbox` reads
/// them (its `From ` line decoded as ASCII, which is why postie writes it
/// so), each header field then decoded as RFC 6532 UTF-8 by the `email`
/// package's SMTPUTF8 policy: util's `python_mbox` reads fields with the
/// compat32 policy, which cannot give a UTF-8 field back as text.
fn utf8_mbox(path: &std::path::Path) -> Vec<Msg> {
    let script = r#"
import mailbox, sys, email.parser, email.policy
for m in mailbox.mbox(sys.argv[1], create=False):
    raw = m.as_bytes(unixfrom=False)
    p = email.parser.BytesParser(policy=email.policy.SMTPUTF8).parsebytes(raw)
    f = [m.get_from()] + [str(p.get(k, "")) for k in ("Subject", "Return-Path", "Received")]
    print("\t".join(x.encode("utf-8").hex() for x in f))
"#;
    let unhex = |s: &str| -> String {
        let b: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        String::from_utf8(b).unwrap()
    };
    python(script, &[path.to_str().unwrap()])
        .lines()
        .map(|l| {
            let f: Vec<String> = l.split('\t').map(unhex).collect();
            Msg {
                from: f[0].clone(),
                subject: f[1].clone(),
                return_path: f[2].clone(),
                received: f[3].clone(),
                body: Vec::new(),
            }
        })
        .collect()
}

/// How many messages mutt finds in the mailbox at `path`: it pipes each
/// one (tagged, split) through `cat` into a file, whose `Subject:` lines
/// are counted. mutt has no batch mode: it runs in a pseudo-terminal
/// (`script`), its keys from `push`. `None` (with a SKIP line) when mutt
/// or script is missing.
fn mutt_count(path: &std::path::Path, test: &str) -> Option<usize> {
    if !have("mutt", test) || !have("script", test) {
        return None;
    }
    let text = mutt_piped(
        path,
        "pipe_split=yes",
        "<tag-pattern>~A<enter><tag-prefix><pipe-message>cat >> SHOWN<enter><quit>",
    );
    Some(text.lines().filter(|l| l.starts_with("Subject: ")).count())
}

/// Attacker: addresses built to break a header or the `From ` line, sent
/// with SMTPUTF8. A CR, a NUL or a C1 control is a syntax error; a space
/// ends the address; a right-to-left override, NEL, a line or paragraph
/// separator or a no-break space in an address (quoted or not, local part
/// or domain) is refused with 501; a recipient with one never reaches a
/// mailbox, and nothing of a refused address reaches a header.
#[test]
fn hostile_utf8_addresses_are_refused() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--max-errors", "100"]);
    let mut c = srv.connect();
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    for bad in [
        "\u{202e}", "\u{85}", "\u{9b}", "\u{2028}", "\u{2029}", "\u{a0}", "\u{2066}", "\u{feff}",
    ] {
        for from in [
            format!("<p{bad}x@b.example>"),
            format!("<\"p{bad}x\"@b.example>"),
            format!("<px@b{bad}.example>"),
        ] {
            let r = c.cmd(&format!("MAIL FROM:{from} SMTPUTF8"));
            assert_eq!(r.code, 501, "{from:?}: {}", r.text());
        }
    }
    for bad in ["\r", "\0"] {
        let r = c.cmd(&format!("MAIL FROM:<p\u{e9}{bad}x@b.example> SMTPUTF8"));
        assert_eq!(r.code, 501, "{bad:?}: {}", r.text());
    }
    // A space ends a bare address: what follows is no parameter postie knows.
    let r = c.cmd("MAIL FROM:p\u{e9} x@b.example SMTPUTF8");
    assert!(r.code >= 500, "{}", r.text());
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<p\u{e9}@b.example> SMTPUTF8", 250);
    for bad in ["\u{202e}", "\u{85}", "\u{2028}"] {
        let r = c.cmd(&format!("RCPT TO:<{USER}{bad}@{HOST}>"));
        assert_eq!(r.code, 501, "{bad:?}: {}", r.text());
    }
    // Invalid UTF-8 anywhere in the address.
    c.send_raw(b"RCPT TO:<j\xc3\x28@razorback.test>\r\n");
    assert_eq!(c.reply().code, 501);
    c.expect(&format!("RCPT TO:<{USER}@{HOST}>"), 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: safe\r\n\r\nx\r\n.\r\n");
    c.expect_reply(250);
    c.expect("QUIT", 221);
    let raw = std::fs::read(fx.mailbox(USER)).unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert_eq!(text.matches("\nFrom ").count() + 1, 1, "{text}");
    for c in ['\u{202e}', '\u{85}', '\u{2028}', '\r', '\0'] {
        assert!(!text.contains(c), "{c:?} in {text:?}");
    }
    assert!(text.starts_with("From p\\x{E9}@b.example "), "{text}");
}

/// A UTF-8 domain is local only when `--domain` names it: then a UTF-8
/// transaction reaches the user there; its A-label, a look-alike without
/// the umlaut, or the umlaut in upper case, are relayed no further than
/// any other domain (550 5.7.1).
#[test]
fn a_utf8_domain_is_local_only_when_configured() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--domain", "b\u{fc}cher.example"]);
    let mut c = srv.connect();
    c.expect_reply(220);
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<pel\u{e9}@b.example> SMTPUTF8", 250);
    for other in [
        "xn--bcher-kva.example",
        "bucher.example",
        "B\u{dc}CHER.example",
        "b\u{fc}cher.example.org",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{USER}@{other}>"));
        assert_eq!((r.code, r.text().contains("5.7.1")), (550, true), "{other}");
    }
    c.expect(&format!("RCPT TO:<{USER}@B\u{fc}cher.EXAMPLE>"), 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: umlaut\r\n\r\nx\r\n.\r\n");
    c.expect_reply(250);
    c.expect("QUIT", 221);
    let msgs = utf8_mbox(&fx.mailbox(USER));
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0]
            .received
            .contains(&format!("for <{USER}@B\u{fc}cher.EXAMPLE>;")),
        "{}",
        msgs[0].received
    );
}
