//! What makes data from a client safe to write into a delivery status
//! notification: addresses, diagnostic texts and the ENVID reduced to
//! printable US-ASCII on one line (RFC 3464 2.1.1: the fields of a
//! message/delivery-status part are US-ASCII header fields), long fields
//! folded, and a MIME boundary that occurs nowhere in what it separates.
//!
//! Every function here returns text without CR, LF or any other control
//! character, so that nothing a client sent can start a header line of its
//! own or a MIME boundary line: that is the one rule of this file.

use crate::smtp::Mailbox;

/// Longest diagnostic text, in characters; a longer one is cut and ends in
/// `...`. RFC 5321 4.5.3.1.5 allows 512 octets per reply line; a
/// multi-line reply is joined into one.
pub const MAX_TEXT: usize = 900;

/// Longest address written, in characters: a path is at most 256 octets
/// (RFC 5321 4.5.3.1.3), an ORCPT a little more once decoded.
const MAX_ADDRESS: usize = 512;

/// Longest ENVID, in characters before encoding (RFC 3461 4.4: 100).
const MAX_ENVID: usize = 100;

/// Where a header line is folded when it can be (RFC 5322 2.1.1: lines
/// SHOULD be at most 78 characters).
const FOLD_AT: usize = 78;

/// `s` on one line, printable US-ASCII: every run of white space (CR, LF
/// and TAB included) becomes one space, every other control character and
/// every non-ASCII character becomes `?`; trimmed; at most `max`
/// characters (a longer text is cut and ends in `...`).
pub fn text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(if c.is_ascii_graphic() { c } else { '?' });
    }
    if out.chars().count() > max {
        let keep = max.saturating_sub(3);
        out = out.chars().take(keep).collect::<String>();
        out.truncate(out.trim_end().len());
        out.push_str("...");
    }
    out
}

/// The mailbox as an RFC 5321 path without brackets (the local part
/// quoted where it must be), a bare local part qualified with `host`, and
/// every character that is not printable US-ASCII replaced by `?`: a
/// quoted local part may hold spaces but no line end.
pub fn address(m: &Mailbox, host: &str) -> String {
    let mut m = m.clone();
    if m.domain.is_none() {
        m.domain = Some(host.to_owned());
    }
    let s: String = m
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    text(&s, MAX_ADDRESS)
}

/// The mailbox typed for a delivery-status field (RFC 3464 2.1.2): `rfc822;
/// ADDRESS` when it is ASCII, else (a UTF-8 address, RFC 6531) `utf-8;`
/// and the utf-8-addr-xtext of RFC 6533 3, so that the part stays 7-bit:
/// printable ASCII but `+`, `=` and `\` as it is, every other character
/// `\x{HEX}` (upper-case hex, two digits at least). Qualified with `host`
/// as [`address`]; cut at [`MAX_ADDRESS`] characters before encoding.
pub fn typed_address(m: &Mailbox, host: &str) -> String {
    if m.is_ascii() {
        return format!("rfc822; {}", address(m, host));
    }
    let mut m = m.clone();
    if m.domain.is_none() {
        m.domain = Some(host.to_owned());
    }
    let mut out = String::from("utf-8; ");
    for c in m.to_string().chars().take(MAX_ADDRESS) {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", u32::from(c)));
        }
    }
    out
}

/// A decoded ORCPT address (RFC 3461 4.2) or any other address text the
/// client gave: [`text`], cut at [`MAX_ADDRESS`].
pub fn generic_address(s: &str) -> String {
    text(s, MAX_ADDRESS)
}

/// An address type (RFC 3464 2.1.2, `atom`): kept when it is letters,
/// digits and `-`, else `rfc822`.
pub fn address_type(s: &str) -> &str {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        s
    } else {
        "rfc822"
    }
}

/// The ENVID as xtext (RFC 3461 4): every octet outside `!`..`~`, and `+`
/// and `=`, written `+XX` in upper-case hex. The result is printable
/// US-ASCII without spaces whatever the input; the input is cut to the
/// 100 characters RFC 3461 4.4 allows.
pub fn xtext(s: &str) -> String {
    let cut: String = s.chars().take(MAX_ENVID).collect();
    let mut out = String::with_capacity(cut.len());
    for b in cut.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// A host name as postie writes it after `dns;` and `@`: letters, digits
/// and `-._:[]` kept, anything else `?`; `localhost` when empty.
pub fn host(s: &str) -> String {
    let h: String = s
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._:[]".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if h.is_empty() { "localhost".into() } else { h }
}

/// The left part of a Message-ID (RFC 5322 3.6.4, `dot-atom-text`):
/// `atext` and `.` kept, anything else `_`.
pub fn id_left(s: &str) -> String {
    let l: String = s
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let l = l.trim_matches('.');
    if l.is_empty() { "dsn".into() } else { l.into() }
}

/// `line` (one header field on one line, made by this module: printable
/// US-ASCII, single spaces) folded before a space wherever it would pass
/// [`FOLD_AT`] characters (RFC 5322 2.2.3), LF-ended. A word longer than a
/// line stays whole, and the value's first word stays beside the name.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut width = 0;
    for (i, word) in line.split(' ').enumerate() {
        if i > 0 {
            // Never between the field name and the first word of its value.
            if width + 1 + word.len() > FOLD_AT && i > 1 && !word.is_empty() {
                out.push_str("\n ");
                width = 1;
            } else {
                out.push(' ');
                width += 1;
            }
        }
        out.push_str(word);
        width += word.len();
    }
    out.push('\n');
    out
}

/// A MIME boundary (RFC 2046 5.1.1: at most 70 characters of `bchars`)
/// made from `seed`, such that `--` and the boundary occur nowhere in any
/// of `parts`: the candidates are tried in turn until one is absent.
pub fn boundary(seed: &str, parts: &[&[u8]]) -> String {
    // FNV-1a: the seed only spreads boundaries between messages; safety
    // comes from the search below, not from the boundary being unguessable.
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (0u64..)
        .map(|n| format!("postie-dsn={hash:016x}.{n}"))
        .find(|b| {
            let delimiter = format!("--{b}");
            !parts
                .iter()
                .any(|p| memchr::memmem::find(p, delimiter.as_bytes()).is_some())
        })
        .expect("a finite content cannot hold every candidate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_one_printable_line() {
        assert_eq!(
            text("550 5.1.1 User unknown", 100),
            "550 5.1.1 User unknown"
        );
        assert_eq!(
            text("550-5.1.1 first\r\n550 5.1.1 second\n", 100),
            "550-5.1.1 first 550 5.1.1 second"
        );
        assert_eq!(text("a\r\nX-Injected: yes", 100), "a X-Injected: yes");
        assert_eq!(text("\t a \x0b\x0c b\t", 100), "a b");
        assert_eq!(text("nul\0bell\x07del\x7f", 100), "nul?bell?del?");
        assert_eq!(text("Jürgen\u{2028}x\u{85}y", 100), "J?rgen x y");
        assert_eq!(text("abcdefgh", 5), "ab...");
        assert_eq!(text("abc defgh", 7), "abc...");
        for s in ["\r", "\n", "\r\n\r\n", "x\n\ny", "\u{1b}[1m"] {
            let t = text(s, 100);
            assert!(t.bytes().all(|b| (0x20..0x7f).contains(&b)), "{t:?}");
        }
    }

    #[test]
    fn addresses_are_qualified_and_printable() {
        let m = |local: &str, domain: Option<&str>| Mailbox {
            local: local.into(),
            domain: domain.map(Into::into),
        };
        assert_eq!(address(&m("jon", None), "razorback"), "jon@razorback");
        assert_eq!(address(&m("jon", Some("x.example")), "h"), "jon@x.example");
        assert_eq!(address(&m("j d", Some("x")), "h"), "\"j d\"@x");
        assert_eq!(
            address(&m("a\r\nBcc: victim@x", Some("x")), "h"),
            "\"a??Bcc: victim@x\"@x"
        );
        assert_eq!(address(&m("a", Some("x\nTo: y")), "h"), "a@x?To: y");
        assert_eq!(generic_address("a@b\r\nX: y"), "a@b X: y");
        assert_eq!(address_type("rfc822"), "rfc822");
        assert_eq!(address_type("x-local"), "x-local");
        assert_eq!(address_type("rfc822\r\nX: y"), "rfc822");
        assert_eq!(address_type(""), "rfc822");
    }

    /// RFC 6533 3: a UTF-8 address is `utf-8;` and its xtext, 7-bit;
    /// an ASCII one is `rfc822;` as before.
    #[test]
    fn utf8_addresses_are_typed_utf8_xtext() {
        let m = |local: &str, domain: Option<&str>| Mailbox {
            local: local.into(),
            domain: domain.map(Into::into),
        };
        assert_eq!(typed_address(&m("jon", None), "h"), "rfc822; jon@h");
        assert_eq!(
            typed_address(&m("j\u{f6}rg+x=y", None), "h"),
            "utf-8; j\\x{F6}rg\\x{2B}x\\x{3D}y@h"
        );
        assert_eq!(
            typed_address(&m("\u{7528}", Some("b\u{fc}cher.example")), "h"),
            "utf-8; \\x{7528}@b\\x{FC}cher.example"
        );
        assert_eq!(
            typed_address(&m("\u{1f600} a\\", Some("x")), "h"),
            "utf-8; \"\\x{1F600}\\x{20}a\\x{5C}\\x{5C}\"@x"
        );
        // Whatever the address holds, the field is printable ASCII.
        let t = typed_address(&m("\u{e9}\r\n\u{202e}\u{85}", Some("x")), "h");
        assert!(t.bytes().all(|b| (0x20..0x7f).contains(&b)), "{t:?}");
    }

    #[test]
    fn xtext_encodes_everything_unsafe() {
        assert_eq!(xtext("abc-123"), "abc-123");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("x\r\nX-Injected: yes"), "x+0D+0AX-Injected:+20yes");
        assert_eq!(xtext("é"), "+C3+A9");
        assert_eq!(xtext(&"z".repeat(300)).len(), 100);
        let enc = xtext("\0\x7f\n--b");
        assert!(enc.bytes().all(|b| b.is_ascii_graphic()), "{enc}");
    }

    #[test]
    fn hosts_and_ids() {
        assert_eq!(host("mx.example.org"), "mx.example.org");
        assert_eq!(host("[192.0.2.1]"), "[192.0.2.1]");
        assert_eq!(host("a b\r\nc"), "a?b??c");
        assert_eq!(host(""), "localhost");
        assert_eq!(id_left("20261205.A1"), "20261205.A1");
        assert_eq!(id_left("a>b\r\n<c@d"), "a_b___c_d");
        assert_eq!(id_left("..."), "dsn");
    }

    #[test]
    fn folding_keeps_the_text_and_the_width() {
        let short = "Status: 5.1.1";
        assert_eq!(fold(short), "Status: 5.1.1\n");
        let long = format!("Diagnostic-Code: smtp; 550 {}", "word ".repeat(40).trim());
        let folded = fold(&long);
        for line in folded.lines() {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        for line in folded.lines().skip(1) {
            assert!(line.starts_with(' ') && line.trim() != "", "{line:?}");
        }
        // Unfolding (RFC 5322 2.2.3: remove each line end) gives it back.
        assert_eq!(folded.trim_end().replace('\n', ""), long);
        // A word longer than a line is not split, and never left alone
        // after the name.
        let word = format!("Original-Envelope-Id: {}", "x".repeat(100));
        assert_eq!(fold(&word), format!("{word}\n"));
    }

    #[test]
    fn boundary_avoids_the_content() {
        let first = boundary("seed", &[]);
        assert!(first.len() <= 70, "{first}");
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-=.".contains(&b))
        );
        assert_eq!(boundary("seed", &[b"nothing here"]), first);
        let trap = format!("x\n--{first}\ny");
        let second = boundary("seed", &[b"a", trap.as_bytes()]);
        assert_ne!(second, first);
        assert!(!trap.contains(&format!("--{second}")));
        // Inside a line too, not only at its start.
        let inline = format!("text --{first} and --{second}");
        let third = boundary("seed", &[inline.as_bytes()]);
        assert!(third != first && third != second);
        assert_ne!(boundary("other seed", &[]), first);
    }
}
