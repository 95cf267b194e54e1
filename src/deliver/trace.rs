//! The trace header lines each delivered copy starts with: `Return-Path:`
//! and `Received:` (RFC 5321 4.4), and for a local submitter who set
//! another sender, sendmail's `X-Authentication-Warning:`.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::smtp::address::{comment_text, is_domain_or_literal, is_utf8_address_char};
use crate::smtp::session::printable;
use crate::smtp::{Envelope, ReversePath};

/// The `Return-Path:` and `Received:` header lines (RFC 5321 4.4), LF
/// ended, and for a local submitter who set another sender, sendmail's
/// `X-Authentication-Warning:`. Everything that came from the client is
/// reduced to printable ASCII first (the addresses of a UTF8SMTP message
/// keep their UTF-8, RFC 6531 3.7.3 and RFC 6532 3.2, but only the
/// characters an address may hold: [`is_utf8_address_char`]), so no CR, LF
/// or control character can reach a header; a HELO that is not a domain or an address literal is
/// written only inside the comment, escaped, so that it can neither
/// unbalance the comment nor add a `;` and a date of its own.
pub fn trace_headers(
    env: &Envelope,
    hostname: &str,
    for_rcpt: Option<&str>,
    date: &str,
    forged: bool,
) -> String {
    let mut h = String::with_capacity(256);
    let rp = match &env.sender {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => clean_address(&m.to_string(), env.via.utf8),
    };
    let _ = writeln!(h, "Return-Path: <{rp}>");
    let tcp_info = match (&env.submitter, env.peer) {
        (Some(s), _) => format!("user {}, uid {}", comment_text(&s.user, 200), s.uid),
        (None, Some(IpAddr::V6(ip))) => format!("[IPv6:{ip}]"),
        (None, Some(ip)) => format!("[{ip}]"),
        (None, None) => "local".into(),
    };
    // RFC 5321 4.4: the From-domain is a Domain or an address literal.
    // Any other HELO (clients send junk, and some send a fake date) goes
    // into the comment, escaped; the client's address, or localhost,
    // stands in for it.
    let from = if is_domain_or_literal(&env.helo) {
        format!("{} ({tcp_info})", env.helo)
    } else {
        let said = comment_text(&env.helo, 200);
        match (&env.submitter, env.peer) {
            (None, Some(_)) => format!("{tcp_info} (helo={said})"),
            _ => format!("localhost (helo={said}, {tcp_info})"),
        }
    };
    // RFC 3848's `ESMTPS` says TLS; which version and cipher go in a
    // comment after it, as Postfix and Exim write them.
    let with = env.via.keyword();
    let tls = match &env.via.tls {
        Some(t) => format!(" ({})", comment_text(t, 100)),
        None => String::new(),
    };
    let _ = write!(
        h,
        "Received: from {from}\n\tby {} (postie) with {with}{tls} id {}",
        clean(hostname),
        env.id
    );
    // The `for` clause is optional (RFC 5321 4.4): a recipient whose quoted
    // local part holds a `;`, a parenthesis or a backslash is left out, so
    // that the only `;` is the one before the date.
    match for_rcpt.filter(|r| !r.contains([';', '(', ')', '\\'])) {
        Some(r) => {
            let _ = write!(h, "\n\tfor <{}>; {date}\n", clean_address(r, env.via.utf8));
        }
        None => {
            let _ = writeln!(h, ";\n\t{date}");
        }
    }
    if let (true, Some(s)) = (forged, &env.submitter) {
        let _ = writeln!(
            h,
            "X-Authentication-Warning: {}: {} set sender to {} using -f",
            clean(hostname),
            clean(&s.user),
            if rp.is_empty() {
                "<>".to_string()
            } else {
                rp.clone()
            }
        );
    }
    h
}

/// Printable ASCII only (space allowed), at most 200 characters.
fn clean(s: &str) -> String {
    printable(s, 200)
}

/// An address for a header: as [`clean`], and where `utf8` (the message
/// came with SMTPUTF8) the non-ASCII characters an address may hold are
/// kept; anything else, a C1 control or a bidirectional override, is `?`.
fn clean_address(s: &str, utf8: bool) -> String {
    s.chars()
        .take(200)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() || (utf8 && is_utf8_address_char(c)) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::tests::envelope;
    use crate::smtp::Mailbox;

    #[test]
    fn trace_headers_shape() {
        let mut env = envelope(&["jon"]);
        env.id = "A1.1".into();
        env.helo = "frogbog.localdomain".into();
        env.via.esmtp = false;
        env.peer = Some("127.0.0.1".parse().unwrap());
        env.sender = ReversePath::Mailbox(Mailbox {
            local: "jon".into(),
            domain: Some("frogbog".into()),
        });
        let h = trace_headers(
            &env,
            "razorback",
            Some("jon@razorback"),
            "Sat, 28 Nov 2026 16:59:45 +0000",
            false,
        );
        assert_eq!(
            h,
            "Return-Path: <jon@frogbog>\n\
             Received: from frogbog.localdomain ([127.0.0.1])\n\
             \tby razorback (postie) with SMTP id A1.1\n\
             \tfor <jon@razorback>; Sat, 28 Nov 2026 16:59:45 +0000\n"
        );
    }

    /// Over TLS: `ESMTPS` (RFC 3848) and the version and cipher in a
    /// comment; a description with a parenthesis cannot end the comment.
    #[test]
    fn tls_says_esmtps_and_its_cipher() {
        let mut env = envelope(&["jon"]);
        env.id = "A1.2".into();
        env.helo = "mx.example".into();
        env.peer = Some("192.0.2.7".parse().unwrap());
        env.via.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
        let date = "Sat, 28 Nov 2026 16:59:45 +0000";
        let h = trace_headers(&env, "razorback", None, date, false);
        assert!(
            h.contains(
                "\tby razorback (postie) with ESMTPS (TLSv1.3 TLS13_AES_256_GCM_SHA384) id A1.2;"
            ),
            "{h}"
        );
        env.via.tls = Some("x) id Z; evil (".into());
        let h = trace_headers(&env, "razorback", None, date, false);
        assert!(
            h.contains("with ESMTPS (x\\) id Z? evil \\() id A1.2;"),
            "{h}"
        );
    }

    /// Issue "postie 5" item 9: a HELO that is not a domain or an address
    /// literal goes into the comment, escaped, and the From-domain is the
    /// client's address (RFC 5321 4.4); one `;`, the one before the date.
    #[test]
    fn bogus_helo_stays_in_a_comment() {
        let mut env = envelope(&["jon"]);
        env.id = "A1.1".into();
        env.helo = "evil(x);y=z)".into();
        env.via.esmtp = false;
        env.peer = Some("127.0.0.1".parse().unwrap());
        let date = "Sat, 28 Nov 2026 16:59:45 +0000";
        let h = trace_headers(&env, "razorback", Some("jon@razorback"), date, false);
        assert_eq!(
            h,
            "Return-Path: <>\n\
             Received: from [127.0.0.1] (helo=evil\\(x\\)?y=z\\))\n\
             \tby razorback (postie) with SMTP id A1.1\n\
             \tfor <jon@razorback>; Sat, 28 Nov 2026 16:59:45 +0000\n"
        );
        env.peer = Some("::1".parse().unwrap());
        let h = trace_headers(&env, "h", None, date, false);
        assert!(
            h.contains("Received: from [IPv6:::1] (helo=evil\\(x\\)?y=z\\))\n"),
            "{h}"
        );
        env.peer = None;
        let h = trace_headers(&env, "h", None, date, false);
        assert!(
            h.contains("Received: from localhost (helo=evil\\(x\\)?y=z\\), local)\n"),
            "{h}"
        );
        env.submitter = Some(crate::smtp::Submitter {
            uid: 1000,
            user: "jon".into(),
        });
        let h = trace_headers(&env, "h", None, date, false);
        assert!(
            h.contains("Received: from localhost (helo=evil\\(x\\)?y=z\\), user jon, uid 1000)\n"),
            "{h}"
        );
        // A domain or an address literal is written as it is.
        for helo in ["frogbog.localdomain", "[192.0.2.1]", "[IPv6:2001:db8::1]"] {
            env.helo = helo.into();
            env.submitter = None;
            env.peer = Some("127.0.0.1".parse().unwrap());
            let h = trace_headers(&env, "h", None, date, false);
            assert!(
                h.contains(&format!("Received: from {helo} ([127.0.0.1])\n")),
                "{h}"
            );
        }
        assert_eq!(h.matches(';').count(), 1, "{h}");
    }

    /// A quoted local part may hold `;` and parentheses (`RCPT
    /// TO:<"jon+x; Thu, 1 Jan 2015 00:00:00 +0000"@razorback>` reaches jon
    /// through his extension): the optional `for` clause is left out then,
    /// so that the header's one `;` is the one before our date.
    #[test]
    fn recipient_with_specials_is_not_named_in_received() {
        let mut env = envelope(&["jon"]);
        env.helo = "client.example".into();
        env.peer = Some("127.0.0.1".parse().unwrap());
        let date = "Sat, 28 Nov 2026 16:59:45 +0000";
        for rcpt in [
            "\"jon+x; Thu, 1 Jan 2015 00:00:00 +0000\"@razorback",
            "\"jon+(\"@razorback",
            "\"jon+\\\\\"@razorback",
        ] {
            let h = trace_headers(&env, "razorback", Some(rcpt), date, false);
            assert!(!h.contains("for <"), "{h}");
            assert_eq!(h.matches(';').count(), 1, "{h}");
            assert!(h.ends_with(&format!(";\n\t{date}\n")), "{h}");
        }
        let h = trace_headers(&env, "razorback", Some("\"j d\"@razorback"), date, false);
        assert!(h.contains("\tfor <\"j d\"@razorback>; Sat"), "{h}");
    }

    /// RFC 6531 3.7.3, RFC 6532 3.2: a UTF8SMTP message's Return-Path:
    /// and `for` clause hold its addresses in UTF-8; any other message's
    /// stay ASCII.
    #[test]
    fn utf8_addresses_in_a_utf8smtp_message() {
        let mut env = envelope(&["jon"]);
        env.id = "A1.3".into();
        env.helo = "mx.example".into();
        env.peer = Some("192.0.2.7".parse().unwrap());
        env.via.utf8 = true;
        env.sender = ReversePath::Mailbox(Mailbox {
            local: "pel\u{e9}".into(),
            domain: Some("b\u{fc}cher.example".into()),
        });
        let date = "Sat, 28 Nov 2026 16:59:45 +0000";
        let h = trace_headers(&env, "razorback", Some("j\u{f6}rg@razorback"), date, false);
        assert_eq!(
            h,
            "Return-Path: <pel\u{e9}@b\u{fc}cher.example>\n\
             Received: from mx.example ([192.0.2.7])\n\
             \tby razorback (postie) with UTF8SMTP id A1.3\n\
             \tfor <j\u{f6}rg@razorback>; Sat, 28 Nov 2026 16:59:45 +0000\n"
        );
        env.via.utf8 = false;
        let h = trace_headers(&env, "razorback", Some("j\u{f6}rg@razorback"), date, false);
        assert!(h.starts_with("Return-Path: <pel?@b?cher.example>\n"), "{h}");
        assert!(h.contains("\tfor <j?rg@razorback>;"), "{h}");
        assert!(h.is_ascii());
    }

    /// Attacker: whatever an address holds (the parser refuses these, the
    /// header must not rely on it), no CR, LF, NUL, C1 control, line
    /// separator or bidirectional override reaches the header, UTF8SMTP
    /// or not.
    #[test]
    fn hostile_characters_never_reach_a_header() {
        let mut env = envelope(&["jon"]);
        env.helo = "mx.example".into();
        for utf8 in [true, false] {
            env.via.utf8 = utf8;
            for bad in [
                "\r\nX-Injected: yes",
                "\n",
                "\0",
                "\u{85}",
                "\u{9b}",
                "\u{2028}",
                "\u{202e}",
                "\u{2066}",
            ] {
                env.sender = ReversePath::Mailbox(Mailbox {
                    local: format!("a{bad}b"),
                    domain: Some("x".into()),
                });
                let rcpt = format!("c{bad}d@razorback");
                let h = trace_headers(&env, "razorback", Some(&rcpt), "date", false);
                assert!(h.contains("Return-Path: <\"a?"), "{h:?}");
                assert!(
                    !h.chars()
                        .any(|c| c != '\n' && bad.contains(c) && !c.is_ascii_graphic() && c != ' '),
                    "{h:?}"
                );
                assert_eq!(h.lines().count(), 4, "{h:?}");
            }
        }
    }

    #[test]
    fn nothing_from_the_client_breaks_a_header() {
        let mut env = envelope(&["jon", "alice"]);
        env.helo = "evil\r\nX-Injected: yes".into();
        env.peer = Some("::1".parse().unwrap());
        let h = trace_headers(&env, "h", None, "date", false);
        assert!(h.starts_with("Return-Path: <>\n"));
        assert!(h.contains("[IPv6:::1]"));
        assert!(!h.contains("\nX-Injected"));
        // Every line but the first of a header is a continuation.
        for line in h.lines() {
            assert!(
                line.starts_with("Return-Path:")
                    || line.starts_with("Received:")
                    || line.starts_with('\t')
            );
        }
    }
}
