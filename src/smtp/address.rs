//! Mailbox addresses and SMTP paths (RFC 5321 4.1.2), with the UTF-8 of
//! RFC 6531 3.3: `atext`, `qtextSMTP` and `sub-domain` also take non-ASCII
//! characters ([`is_utf8_address_char`] says which). Whether a transaction
//! may carry such an address (the SMTPUTF8 parameter) is the session's
//! business, not the grammar's.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A mailbox as the client named it: `local@domain`, or a bare local part
/// (Sendmail and RFC 5321 4.5.1 accept `postmaster` without a domain).
///
/// `local` is the decoded local part: quotes removed and quoted pairs
/// unescaped, as in the RFC 5321 definition of equality of quoted forms.
/// `domain` is as sent, case preserved; an address literal keeps its
/// brackets (`[127.0.0.1]`, `[IPv6:::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: Option<String>,
}

/// The argument of `MAIL FROM`: a mailbox, or the null path `<>` used by
/// bounces (RFC 5321 4.5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

/// Why a path did not parse. The session answers `501 5.1.7` for a
/// sender, `501 5.1.3` for a recipient; the text is for the reply and the
/// log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError(pub &'static str);

impl Mailbox {
    /// True if nothing in the address is beyond ASCII: such an address
    /// needs no SMTPUTF8 (RFC 6531 3.5).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.as_deref().is_none_or(str::is_ascii)
    }
}

impl fmt::Display for Mailbox {
    /// Renders the mailbox in SMTP form, quoting the local part when it is
    /// not a dot-atom (RFC 5321 4.1.2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_atom(&self.local) {
            f.write_str(&self.local)?;
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        if let Some(domain) = &self.domain {
            write!(f, "@{domain}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ReversePath {
    /// `<>` for the null path, else the mailbox without angle brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Longest local part, in octets as sent (RFC 5321 4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest domain, in octets (RFC 5321 4.5.3.1.2).
const MAX_DOMAIN: usize = 255;
/// Longest path, brackets included (RFC 5321 4.5.3.1.3).
const MAX_PATH: usize = 256;
/// Longest DNS label (RFC 1035 2.3.4).
const MAX_LABEL: usize = 63;

/// `atext` of RFC 5322 3.2.3.
fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

/// Whether the non-ASCII character `c` may stand in an address.
///
/// RFC 6531 3.3 lets `atext`, `qtextSMTP` and U-labels hold any
/// `UTF8-non-ascii` (RFC 6532 3.1). postie takes fewer: none of the
/// characters that would let an address hide or reorder what is around it
/// where it is shown (a `Return-Path:` or `Received:` header, the mbox
/// `From ` line, a reply, a log line), so that no reader can be shown text
/// the address did not visibly hold:
/// - C1 controls (U+0080 to U+009F) and every Unicode white space (U+0085
///   NEL, U+00A0, U+2028 and U+2029 line and paragraph separators, ...);
/// - bidirectional marks, embeddings, overrides and isolates (U+061C,
///   U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069: the "Trojan
///   Source" characters) and the invisible format characters (soft
///   hyphen, U+180E, zero width space, word joiner and the invisible
///   operators, U+FEFF, the interlinear annotation characters, the tag
///   characters U+E0000 to U+E007F);
/// - the ideographic and fullwidth full stops that IDNA2003 read as a
///   dot (U+3002, U+FF0E, U+FF61): one domain must not pass for another;
/// - U+FFFD, the mark of bytes that were not UTF-8, and noncharacters.
///
/// The zero width joiner and non-joiner (U+200C, U+200D) stay: some
/// scripts need them inside words (RFC 5892 CONTEXTJ).
pub fn is_utf8_address_char(c: char) -> bool {
    let n = u32::from(c);
    !c.is_ascii()
        && !c.is_control()
        && !c.is_whitespace()
        && !matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3002}'
                | '\u{FDD0}'..='\u{FDEF}'
                | '\u{FEFF}'
                | '\u{FF0E}'
                | '\u{FF61}'
                | '\u{FFF9}'..='\u{FFFD}'
                | '\u{E0000}'..='\u{E007F}'
        )
        && n & 0xfffe != 0xfffe
}

/// Whether `s` is a Dot-string of RFC 5321 (with the UTF-8 atext of RFC
/// 6531 3.3): atoms separated by single dots.
pub fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| u8::try_from(c).is_ok_and(is_atext) || is_utf8_address_char(c))
        })
}

fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// The error for a byte that may not appear where it was found.
fn unexpected(c: u8) -> AddrError {
    match c {
        0..=0x1f | 0x7f => AddrError("control character in address"),
        // A parser over a `str` sees whole characters only: a non-ASCII
        // one here is one that [`is_utf8_address_char`] refuses, or one
        // where the grammar takes ASCII only (an address literal, after
        // the path).
        0x80..=0xff => AddrError("disallowed non-ASCII character in address"),
        b'<' | b'>' => AddrError("unbalanced angle brackets"),
        _ => AddrError("invalid character in address"),
    }
}

/// The error for a byte that may not appear in a domain.
fn bad_domain_char(c: Option<u8>) -> AddrError {
    match c {
        Some(c @ (0..=0x1f | 0x7f..=0xff)) => unexpected(c),
        _ => AddrError("bad domain"),
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn text(&self, from: usize) -> String {
        // The grammar stops only at ASCII bytes or after a whole character
        // ([`Self::utf8_char`]): a slice between two such points of a
        // `str` is UTF-8, so nothing is lost here.
        String::from_utf8_lossy(&self.b[from..self.pos]).into_owned()
    }

    /// The non-ASCII character at the current position, if it is one an
    /// address may hold ([`is_utf8_address_char`]). `b` is always a
    /// `str`'s bytes and `pos` on a character boundary, so the lead byte
    /// says how long the character is.
    fn utf8_char(&self) -> Option<char> {
        let lead = self.peek().filter(|&c| c >= 0x80)?;
        let width = match lead {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        let bytes = self.b.get(self.pos..self.pos + width)?;
        let c = std::str::from_utf8(bytes).ok()?.chars().next()?;
        is_utf8_address_char(c).then_some(c)
    }

    /// Moves past one character of `atext` (RFC 6531 3.3), if one is
    /// there.
    fn atext(&mut self) -> bool {
        match self.peek() {
            Some(c) if is_atext(c) => self.pos += 1,
            _ => match self.utf8_char() {
                Some(c) => self.pos += c.len_utf8(),
                None => return false,
            },
        }
        true
    }

    /// Moves past one character of a domain label (`Let-dig`, or `-` where
    /// `hyphen` allows it), a U-label's non-ASCII characters included (RFC
    /// 6531 3.3). IDNA2008's finer rules for U-labels (RFC 5892) are not
    /// checked: postie delivers only to domains configured as local, and
    /// looks nothing up in the DNS.
    fn label_char(&mut self, hyphen: bool) -> bool {
        match self.peek() {
            Some(c) if c.is_ascii_alphanumeric() || (hyphen && c == b'-') => self.pos += 1,
            _ => match self.utf8_char() {
                Some(c) => self.pos += c.len_utf8(),
                None => return false,
            },
        }
        true
    }

    /// `Mailbox = Local-part ["@" ( Domain / address-literal )]`, the domain
    /// being optional as in Sendmail's `postmaster`.
    fn mailbox(&mut self) -> Result<Mailbox, AddrError> {
        let start = self.pos;
        let local = self.local_part()?;
        if self.pos - start > MAX_LOCAL {
            return Err(AddrError("local part too long"));
        }
        if self.peek() != Some(b'@') {
            return Ok(Mailbox {
                local,
                domain: None,
            });
        }
        self.pos += 1;
        let start = self.pos;
        if self.peek() == Some(b'[') {
            self.address_literal()?;
        } else {
            self.domain()?;
        }
        if self.pos - start > MAX_DOMAIN {
            return Err(AddrError("domain too long"));
        }
        Ok(Mailbox {
            local,
            domain: Some(self.text(start)),
        })
    }

    /// `Local-part = Dot-string / Quoted-string`, decoded.
    fn local_part(&mut self) -> Result<String, AddrError> {
        if self.peek() == Some(b'"') {
            return self.quoted_string();
        }
        let start = self.pos;
        loop {
            let atom = self.pos;
            while self.atext() {}
            if self.pos == atom {
                return Err(match self.peek() {
                    Some(c @ (0..=0x1f | 0x7f..=0xff)) => unexpected(c),
                    None | Some(b'@' | b'>') if atom == start => AddrError("empty local part"),
                    Some(b'.' | b'@' | b'>' | b' ') | None => AddrError("bad local part"),
                    Some(c) => unexpected(c),
                });
            }
            if self.peek() != Some(b'.') {
                return Ok(self.text(start));
            }
            self.pos += 1;
        }
    }

    /// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE`, returned unquoted.
    fn quoted_string(&mut self) -> Result<String, AddrError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(AddrError("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ 0x20..=0x7e) => out.push(char::from(c)),
                        Some(c) => return Err(unexpected(c)),
                        None => return Err(AddrError("unterminated quoted string")),
                    }
                }
                Some(c @ 0x20..=0x7e) => out.push(char::from(c)),
                // qtextSMTP =/ UTF8-non-ascii (RFC 6531 3.3).
                Some(c) => match self.utf8_char() {
                    Some(u) => {
                        out.push(u);
                        self.pos += u.len_utf8() - 1;
                    }
                    None => return Err(unexpected(c)),
                },
            }
            self.pos += 1;
        }
        if out.is_empty() {
            return Err(AddrError("empty local part"));
        }
        Ok(out)
    }

    /// `Domain = sub-domain *("." sub-domain)`, with
    /// `sub-domain = Let-dig [Ldh-str] / U-label` (RFC 6531 3.3). A
    /// U-label's length is counted in UTF-8 octets against the 63 of a DNS
    /// label: without IDNA's Punycode its A-label's length is not known.
    fn domain(&mut self) -> Result<(), AddrError> {
        loop {
            let label = self.pos;
            if !self.label_char(false) {
                return Err(bad_domain_char(self.peek()));
            }
            while self.label_char(true) {}
            if self.b[self.pos - 1] == b'-' {
                return Err(AddrError("bad domain"));
            }
            if self.pos - label > MAX_LABEL {
                return Err(AddrError("domain label too long"));
            }
            match self.peek() {
                Some(b'.') => self.pos += 1,
                None | Some(b'>' | b' ' | b'\t' | b',' | b':') => return Ok(()),
                c => return Err(bad_domain_char(c)),
            }
        }
    }

    /// `address-literal = "[" ( IPv4 / "IPv6:" IPv6 ) "]"`; general
    /// (tagged) literals are refused.
    fn address_literal(&mut self) -> Result<(), AddrError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b']') => break,
                // dcontent = %d33-90 / %d94-126
                Some(33..=90 | 94..=126) => self.pos += 1,
                Some(c @ (0..=0x1f | 0x7f..=0xff)) => return Err(unexpected(c)),
                _ => return Err(AddrError("bad address literal")),
            }
        }
        let content = std::str::from_utf8(&self.b[start..self.pos])
            .map_err(|_| AddrError("bad address literal"))?;
        self.pos += 1;
        let ok = match content.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                content[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ if content.contains(':') => {
                return Err(AddrError("unsupported address literal"));
            }
            _ => content.parse::<Ipv4Addr>().is_ok(),
        };
        if !ok {
            return Err(AddrError("bad address literal"));
        }
        Ok(())
    }

    /// `A-d-l = At-domain *( "," At-domain ) ":"`, checked and dropped.
    fn source_route(&mut self) -> Result<(), AddrError> {
        loop {
            if self.peek() != Some(b'@') {
                return Err(AddrError("bad source route"));
            }
            self.pos += 1;
            self.domain()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b':') => {
                    self.pos += 1;
                    return Ok(());
                }
                // `<@b>`: most likely an address with its local part missing.
                Some(b'>') => return Err(AddrError("empty local part")),
                _ => return Err(AddrError("bad source route")),
            }
        }
    }
}

/// Whether `s`, whole, is a `Domain` or an address literal (RFC 5321
/// 4.1.2): what `Received: from` may name (RFC 5321 4.4, From-domain).
///
/// ASCII only: a HELO name is (RFC 6531 3.7.1), and what is written there
/// is read by programs that know nothing of UTF-8.
pub fn is_domain_or_literal(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_DOMAIN || !s.is_ascii() {
        return false;
    }
    let mut p = Parser { b, pos: 0 };
    let parsed = if p.peek() == Some(b'[') {
        p.address_literal()
    } else {
        p.domain()
    };
    parsed.is_ok() && p.pos == b.len()
}

/// `s` as the text of an RFC 5322 comment (3.2.2), whatever it holds: cut
/// to `max` characters, anything but printable ASCII and space shown as
/// `?`, `(`, `)` and `\` escaped as quoted pairs so that the parentheses
/// balance, and `;` shown as `?`, since in `Received:` a `;` ends the
/// tokens and starts the date (RFC 5322 3.6.7): a reader that looks for it
/// without parsing comments must not find a date the client wrote.
pub fn comment_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for c in s.chars().take(max) {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ';' => out.push('?'),
            c if c == ' ' || c.is_ascii_graphic() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// Parses a path argument: `<a@b>`, `<@x,@y:a@b>` (source route, ignored),
/// `<"quoted local"@b>`, `<a@[127.0.0.1]>`, and Sendmail's leniency of a bare
/// `a@b` without brackets. Returns the mailbox (or `None` for `<>`, which only
/// a reverse path may use; the caller decides) and the rest of the line after
/// the path (the ESMTP parameters, leading spaces not stripped).
pub fn parse_path(s: &str) -> Result<(Option<Mailbox>, &str), AddrError> {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_wsp(c)).unwrap_or(b.len());
    let mut p = Parser { b, pos: start };
    let (mailbox, len) = match p.peek() {
        None => return Err(AddrError("empty address")),
        Some(b'>') => return Err(AddrError("unbalanced angle brackets")),
        Some(b'<') => {
            p.pos += 1;
            let mailbox = if p.peek() == Some(b'>') {
                None
            } else if p.peek().is_none() {
                return Err(AddrError("unbalanced angle brackets"));
            } else {
                if p.peek() == Some(b'@') {
                    p.source_route()?;
                }
                Some(p.mailbox()?)
            };
            match p.peek() {
                Some(b'>') => p.pos += 1,
                None => return Err(AddrError("unbalanced angle brackets")),
                Some(c) => return Err(unexpected(c)),
            }
            (mailbox, p.pos - start)
        }
        // Sendmail: `MAIL FROM: a@b`, ended by a space or the line's end.
        Some(_) => (Some(p.mailbox()?), p.pos - start + 2),
    };
    match p.peek() {
        None | Some(b' ' | b'\t') => {}
        Some(c @ (b'<' | b'>' | 0..=0x1f | 0x7f..=0xff)) => return Err(unexpected(c)),
        Some(_) => return Err(AddrError("junk after address")),
    }
    if len > MAX_PATH {
        return Err(AddrError("path too long"));
    }
    Ok((mailbox, &s[p.pos..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mb(local: &str, domain: Option<&str>) -> Mailbox {
        Mailbox {
            local: local.to_owned(),
            domain: domain.map(str::to_owned),
        }
    }

    #[test]
    fn good_paths() {
        let long_local = "a".repeat(64);
        let long_label = "d".repeat(63);
        let max_local = format!("<{long_local}@b>");
        let max_label = format!("<a@{long_label}>");
        let cases: Vec<(&str, Option<Mailbox>, &str)> = vec![
            ("<a@b>", Some(mb("a", Some("b"))), ""),
            ("<>", None, ""),
            ("<> SIZE=10", None, " SIZE=10"),
            ("  \t<a@b>", Some(mb("a", Some("b"))), ""),
            (
                "<a@b> SIZE=100 BODY=8BITMIME",
                Some(mb("a", Some("b"))),
                " SIZE=100 BODY=8BITMIME",
            ),
            ("<a@b>\tX", Some(mb("a", Some("b"))), "\tX"),
            (
                "<Jon.Smith@Example.COM>",
                Some(mb("Jon.Smith", Some("Example.COM"))),
                "",
            ),
            (
                "<user+tag@mail.example.org>",
                Some(mb("user+tag", Some("mail.example.org"))),
                "",
            ),
            (
                "<!#$%&'*+-/=?^_`{|}~@x>",
                Some(mb("!#$%&'*+-/=?^_`{|}~", Some("x"))),
                "",
            ),
            ("<a@b-c.d1>", Some(mb("a", Some("b-c.d1"))), ""),
            ("<a@123.example>", Some(mb("a", Some("123.example"))), ""),
            ("<a@x--y.example>", Some(mb("a", Some("x--y.example"))), ""),
            // Source routes are checked and dropped.
            (
                "<@x.example,@y.example:a@b.example>",
                Some(mb("a", Some("b.example"))),
                "",
            ),
            ("<@x:a@b>", Some(mb("a", Some("b"))), ""),
            // Quoted local parts are decoded.
            ("<\"john doe\"@b>", Some(mb("john doe", Some("b"))), ""),
            ("<\"a\\\"b\"@c>", Some(mb("a\"b", Some("c"))), ""),
            ("<\"a\\\\b\"@c>", Some(mb("a\\b", Some("c"))), ""),
            ("<\"\\x\"@c>", Some(mb("x", Some("c"))), ""),
            ("<\"a..b\"@c>", Some(mb("a..b", Some("c"))), ""),
            ("<\"a@b\"@c>", Some(mb("a@b", Some("c"))), ""),
            ("<\"a>b\"@c>", Some(mb("a>b", Some("c"))), ""),
            ("<\"postmaster\">", Some(mb("postmaster", None)), ""),
            // Address literals keep their brackets and tag.
            ("<a@[127.0.0.1]>", Some(mb("a", Some("[127.0.0.1]"))), ""),
            ("<a@[IPv6:::1]>", Some(mb("a", Some("[IPv6:::1]"))), ""),
            (
                "<a@[ipv6:2001:db8::1]>",
                Some(mb("a", Some("[ipv6:2001:db8::1]"))),
                "",
            ),
            (
                "<a@[IPv6:::ffff:192.0.2.1]>",
                Some(mb("a", Some("[IPv6:::ffff:192.0.2.1]"))),
                "",
            ),
            // A bare local part: RFC 5321 4.5.1 postmaster, and Sendmail.
            ("<postmaster>", Some(mb("postmaster", None)), ""),
            ("<Postmaster>", Some(mb("Postmaster", None)), ""),
            ("<jon>", Some(mb("jon", None)), ""),
            // Sendmail: no brackets, ended by a space.
            ("jon@frogbog", Some(mb("jon", Some("frogbog"))), ""),
            (" jon@frogbog", Some(mb("jon", Some("frogbog"))), ""),
            (
                "jon@razorback SIZE=1",
                Some(mb("jon", Some("razorback"))),
                " SIZE=1",
            ),
            ("postmaster", Some(mb("postmaster", None)), ""),
            ("postmaster ", Some(mb("postmaster", None)), " "),
            ("a@[10.0.0.1]", Some(mb("a", Some("[10.0.0.1]"))), ""),
            // Limits, just inside.
            (&max_local, Some(mb(&long_local, Some("b"))), ""),
            (&max_label, Some(mb("a", Some(&long_label))), ""),
        ];
        for (input, want, rest) in cases {
            assert_eq!(parse_path(input), Ok((want, rest)), "input {input:?}");
        }
    }

    #[test]
    fn bad_paths() {
        let long_local = "a".repeat(65);
        let long_label = "d".repeat(64);
        // 4 labels of 63 plus 3 dots: 255 octets, one more is too long.
        let label = "d".repeat(63);
        let domain_255 = [&label[..], &label, &label, &label].join(".");
        let domain_256 = format!("{}.x", &domain_255[1..]);
        assert_eq!((domain_255.len(), domain_256.len()), (255, 256));
        // A path of 257 octets: within the local and domain limits, over the whole.
        let path_257 = format!(
            "<@{}:{}@{}>",
            "r".repeat(61),
            "l".repeat(64),
            &domain_255[..127]
        );
        assert_eq!(path_257.len(), 257);
        let path_256 = format!(
            "<@{}:{}@{}>",
            "r".repeat(60),
            "l".repeat(64),
            &domain_255[..127]
        );
        assert!(parse_path(&path_256).is_ok());
        let local_65 = format!("<{long_local}@b>");
        let quoted_65 = format!("<\"{}\"@b>", "a".repeat(63));
        let label_64 = format!("<a@{long_label}>");
        let with_domain_255 = format!("<a@{domain_255}>");
        let with_domain_256 = format!("<a@{domain_256}>");
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty address"),
            ("   ", "empty address"),
            ("\t", "empty address"),
            ("<", "unbalanced angle brackets"),
            ("<@x:>", "empty local part"),
            ("<@x:", "empty local part"),
            ("<a@b", "unbalanced angle brackets"),
            ("<a", "unbalanced angle brackets"),
            ("a@b>", "unbalanced angle brackets"),
            ("<<a@b>>", "unbalanced angle brackets"),
            ("<a@b>>", "unbalanced angle brackets"),
            (">", "unbalanced angle brackets"),
            ("<a<b@c>", "unbalanced angle brackets"),
            ("<a@b>x", "junk after address"),
            ("<@b>", "empty local part"),
            ("<@b", "bad source route"),
            ("@b", "empty local part"),
            ("<\"\"@b>", "empty local part"),
            ("<.a@b>", "bad local part"),
            ("<a.@b>", "bad local part"),
            ("<a..b@c>", "bad local part"),
            ("<a b@c>", "invalid character in address"),
            ("<a(b)@c>", "invalid character in address"),
            ("<a,b@c>", "invalid character in address"),
            ("<\"a@b>", "unterminated quoted string"),
            ("<\"a\\", "unterminated quoted string"),
            ("<a@>", "bad domain"),
            ("<a@b.>", "bad domain"),
            ("a@b.", "bad domain"),
            ("<a@.b>", "bad domain"),
            ("<a@b..c>", "bad domain"),
            ("<a@-b>", "bad domain"),
            ("<a@b->", "bad domain"),
            ("<a@b-.c>", "bad domain"),
            ("<a@b_c>", "bad domain"),
            ("<a@b@c>", "bad domain"),
            ("<a@b c>", "invalid character in address"),
            (&label_64, "domain label too long"),
            ("<a@[127.0.0.256]>", "bad address literal"),
            ("<a@[127.0.0]>", "bad address literal"),
            ("<a@[127.0.0.1>", "bad address literal"),
            ("<a@[]>", "bad address literal"),
            ("<a@[IPv6:1.2.3.4]>", "bad address literal"),
            ("<a@[IPv6:::g]>", "bad address literal"),
            ("<a@[IPv6:fe80::1%eth0]>", "bad address literal"),
            ("<a@[x-tag:foo]>", "unsupported address literal"),
            ("<a@[::1]>", "unsupported address literal"),
            ("<@x,b:a@c>", "bad source route"),
            ("<@x;a@c>", "bad domain"),
            ("<@x a@c>", "bad source route"),
            ("<@-x:a@c>", "bad domain"),
            ("<a\x01@b>", "control character in address"),
            ("<a@b\x7f>", "control character in address"),
            ("<a@b\r>", "control character in address"),
            ("<\"a\x00\"@b>", "control character in address"),
            ("<a@b\t>", "control character in address"),
            ("<a@b>ü", "disallowed non-ASCII character in address"),
            (
                "<a@[127.0.0.ü]>",
                "disallowed non-ASCII character in address",
            ),
            ("<\"a\\ü\"@b>", "disallowed non-ASCII character in address"),
            (&local_65, "local part too long"),
            (&quoted_65, "local part too long"),
            (&with_domain_255, "path too long"),
            (&with_domain_256, "domain too long"),
            (&path_257, "path too long"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_path(input), Err(AddrError(want)), "input {input:?}");
        }
    }

    /// RFC 6531 3.3: UTF-8 in dot-strings, quoted strings and domains.
    #[test]
    fn utf8_paths() {
        let cases: Vec<(&str, Option<Mailbox>, &str)> = vec![
            ("<jön@b>", Some(mb("jön", Some("b"))), ""),
            ("<a@bü>", Some(mb("a", Some("bü"))), ""),
            ("<a@ü>", Some(mb("a", Some("ü"))), ""),
            ("<\"ü\"@b>", Some(mb("ü", Some("b"))), ""),
            ("<\"ü x\"@b>", Some(mb("ü x", Some("b"))), ""),
            (
                "<用户@例子.广告> SMTPUTF8",
                Some(mb("用户", Some("例子.广告"))),
                " SMTPUTF8",
            ),
            (
                "<δοκιμή@παράδειγμα.δοκιμή>",
                Some(mb("δοκιμή", Some("παράδειγμα.δοκιμή"))),
                "",
            ),
            (
                "<Pelé.x@bücher-x.example>",
                Some(mb("Pelé.x", Some("bücher-x.example"))),
                "",
            ),
            ("<😀@b>", Some(mb("😀", Some("b"))), ""),
            // ZWNJ inside a word (RFC 5892 CONTEXTJ) stays.
            (
                "<می\u{200C}خواهم@b>",
                Some(mb("می\u{200C}خواهم", Some("b"))),
                "",
            ),
            // Sendmail's bracketless form too.
            ("jörg@frogbog", Some(mb("jörg", Some("frogbog"))), ""),
        ];
        for (input, want, rest) in cases {
            assert_eq!(parse_path(input), Ok((want, rest)), "input {input:?}");
        }
        // Limits count octets: 32 two-octet characters fill a local part.
        let local = "é".repeat(32);
        assert!(parse_path(&format!("<{local}@b>")).is_ok());
        assert_eq!(
            parse_path(&format!("<{local}x@b>")),
            Err(AddrError("local part too long"))
        );
        let label = "ü".repeat(32);
        assert_eq!(
            parse_path(&format!("<a@{label}>")),
            Err(AddrError("domain label too long"))
        );
        let m = mb("jön", Some("bü"));
        assert!(!m.is_ascii());
        assert!(!mb("a", Some("ü")).is_ascii());
        assert!(mb("a", Some("b")).is_ascii());
        assert!(mb("a", None).is_ascii());
    }

    /// Attacker: characters that would hide or reorder text where an
    /// address is shown are refused wherever they stand, and so are
    /// lookalike dots in a domain.
    #[test]
    fn utf8_that_hides_text_is_refused() {
        for c in [
            '\u{80}',
            '\u{85}',
            '\u{9b}',
            '\u{9f}',
            '\u{a0}',
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{2000}',
            '\u{200b}',
            '\u{200e}',
            '\u{200f}',
            '\u{2028}',
            '\u{2029}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{2060}',
            '\u{3000}',
            '\u{3002}',
            '\u{fdd0}',
            '\u{feff}',
            '\u{ff0e}',
            '\u{ff61}',
            '\u{fffd}',
            '\u{fffe}',
            '\u{1fffe}',
            '\u{e0041}',
        ] {
            assert!(!is_utf8_address_char(c), "{c:?}");
            for input in [
                format!("<a{c}b@c>"),
                format!("<{c}@c>"),
                format!("<\"a{c}\"@c>"),
                format!("<a@b{c}c>"),
                format!("<a@{c}>"),
                format!("a{c}@c"),
            ] {
                let got = parse_path(&input);
                assert!(
                    matches!(got, Err(AddrError(why)) if why.contains("character")),
                    "{input:?}: {got:?}"
                );
            }
        }
        for c in ['é', 'ü', '用', 'δ', '\u{200c}', '\u{200d}', '😀'] {
            assert!(is_utf8_address_char(c), "{c:?}");
        }
        // HELO names stay ASCII (RFC 6531 3.7.1).
        assert!(!is_domain_or_literal("bücher.example"));
    }

    #[test]
    fn display() {
        let cases = [
            (mb("a", Some("b")), "a@b"),
            (
                mb("Jon.Smith", Some("Example.COM")),
                "Jon.Smith@Example.COM",
            ),
            (mb("postmaster", None), "postmaster"),
            (mb("john doe", Some("b")), "\"john doe\"@b"),
            (mb("a\"b", Some("c")), "\"a\\\"b\"@c"),
            (mb("a\\b", Some("c")), "\"a\\\\b\"@c"),
            (mb("a..b", Some("c")), "\"a..b\"@c"),
            (mb(".a", Some("c")), "\".a\"@c"),
            (mb("a.", None), "\"a.\""),
            (mb("a@b", Some("c")), "\"a@b\"@c"),
            (mb("a", Some("[127.0.0.1]")), "a@[127.0.0.1]"),
            (mb("a", Some("[IPv6:::1]")), "a@[IPv6:::1]"),
            (mb("jön", Some("bü")), "jön@bü"),
            (mb("jön doe", Some("b")), "\"jön doe\"@b"),
        ];
        for (m, want) in cases {
            assert_eq!(m.to_string(), want);
        }
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(ReversePath::Mailbox(mb("a", Some("b"))).to_string(), "a@b");
        assert_eq!(ReversePath::Mailbox(mb("x y", None)).to_string(), "\"x y\"");
    }

    #[test]
    fn dot_atom() {
        for s in ["a", "a.b", "a.b.c", "!#$%&'*+-/=?^_`{|}~"] {
            assert!(is_dot_atom(s), "{s:?}");
        }
        assert!(is_dot_atom("ü"));
        for s in [
            "",
            ".",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a\"b",
            "a@b",
            "a(b",
            "a\\b",
            "a\u{202e}",
        ] {
            assert!(!is_dot_atom(s), "{s:?}");
        }
    }

    #[test]
    fn domains_and_literals_for_received() {
        for s in [
            "frogbog.localdomain",
            "localhost",
            "a",
            "mx-1.example.org",
            "[127.0.0.1]",
            "[IPv6:::1]",
            "[ipv6:2001:db8::1]",
            "EXAMPLE.COM",
        ] {
            assert!(is_domain_or_literal(s), "{s:?}");
        }
        for s in [
            "",
            "evil(x);y=z)",
            "a.b.",
            ".a",
            "a..b",
            "-a",
            "a-",
            "Client_Host",
            "a b",
            "a>b",
            "a,b",
            "a:b",
            "[127.0.0.1",
            "[127.0.0.1]x",
            "[1.2.3]",
            "[x:y]",
            "a;b",
            "a\\b",
            &"a".repeat(64),
            &["a"; 129].join("."),
        ] {
            assert!(!is_domain_or_literal(s), "{s:?}");
        }
    }

    #[test]
    fn comment_text_cannot_break_a_comment() {
        let cases = [
            ("evil(x);y=z)", "evil\\(x\\)?y=z\\)"),
            ("plain.example", "plain.example"),
            ("a\\b", "a\\\\b"),
            (
                "(by spoof; Thu, 1 Jan 2015 00:00:00 +0000",
                "\\(by spoof? Thu, 1 Jan 2015 00:00:00 +0000",
            ),
            ("tab\there\r\nX: y", "tab?here??X: y"),
            ("caf\u{e9}", "caf?"),
            ("\"q\" <a@b>", "\"q\" <a@b>"),
        ];
        for (input, want) in cases {
            assert_eq!(comment_text(input, 100), want, "{input:?}");
        }
        assert_eq!(comment_text("((((", 2), "\\(\\(");
    }

    proptest! {
        /// Whatever the input, the text between `(` and `)` is one
        /// well-formed comment (RFC 5322 3.2.2): quoted pairs, ctext, no
        /// unescaped parenthesis, and no `;` at all.
        #[test]
        fn comment_text_is_always_one_comment(s in ".{0,80}") {
            let t = comment_text(&s, 80);
            prop_assert!(!t.contains(';'));
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                prop_assert!(c == ' ' || c.is_ascii_graphic(), "{:?}", t);
                match c {
                    '\\' => prop_assert!(matches!(chars.next(), Some('(' | ')' | '\\')), "{:?}", t),
                    '(' | ')' => prop_assert!(false, "bare parenthesis in {:?}", t),
                    _ => {}
                }
            }
        }
    }

    const ATEXT: &str = "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]";

    fn dot_atom_local() -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("{ATEXT}{{1,12}}(\\.{ATEXT}{{1,12}}){{0,3}}"))
            .expect("valid regex")
    }

    fn domain() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?){0,4}"
    }

    proptest! {
        #[test]
        fn dot_atom_round_trip(local in dot_atom_local(), domain in proptest::option::of(domain())) {
            let m = Mailbox { local, domain };
            let text = m.to_string();
            prop_assert!(!text.contains('"'));
            let bracketed = format!("<{m}>");
            prop_assert_eq!(parse_path(&bracketed), Ok((Some(m.clone()), "")));
            // Sendmail's bracketless form gives the same mailbox.
            prop_assert_eq!(parse_path(&text), Ok((Some(m), "")));
        }

        #[test]
        fn quoted_round_trip(local in "[ -~]{1,30}", domain in proptest::option::of(domain())) {
            let m = Mailbox { local, domain };
            let text = format!("<{m}> X");
            prop_assert_eq!(parse_path(&text), Ok((Some(m), " X")));
        }

        /// UTF-8 mailboxes, shown and parsed again, are the same.
        #[test]
        fn utf8_round_trip(local in "[a-zé用δ😀.]{1,12}", domain in "[a-zü例]{1,10}(\\.[a-zü例]{1,10}){0,2}") {
            let m = Mailbox { local, domain: Some(domain) };
            let text = format!("<{m}>");
            prop_assert_eq!(parse_path(&text), Ok((Some(m), "")));
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_path(&s);
        }

        #[test]
        fn never_panics_pathlike(s in "[<>@\\[\\]\":,.\\\\ a-z0-9IPv\u{1}\u{e9}]{0,40}") {
            if let Ok((_, rest)) = parse_path(&s) {
                prop_assert!(s.ends_with(rest));
            }
        }
    }
}
