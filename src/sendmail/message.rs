//! A message submitted on the command line (RFC 5322), made ready for
//! SMTP: read from a stream as bytes (a lone `.` line ends it unless `-i`),
//! split into header fields and body, recipients taken from To:/Cc:/Bcc:
//! for `-t`, Bcc: removed, From:/Date:/Message-ID: added when missing, and
//! written out with CRLF line ends and dot-stuffing (RFC 5321 4.5.2).
//!
//! Pure apart from [`read_lines`], which reads the given stream: no clock,
//! no user database, no host name; the caller hands them in.

use std::io::{self, BufRead, Read, Write};

/// How reading the message ended badly.
#[derive(Debug)]
pub enum ReadError {
    /// More than the limit, in octets.
    TooBig(u64),
    Io(io::Error),
}

/// Reads the message: lines without their line ends (LF or CRLF), at most
/// `max` octets in all. Without `ignore_dots`, a line holding a single `.`
/// ends the message, as in sendmail; the rest of the input is not read.
pub fn read_lines<R: BufRead>(
    mut r: R,
    ignore_dots: bool,
    max: u64,
) -> Result<Vec<Vec<u8>>, ReadError> {
    let mut lines = Vec::new();
    let mut total: u64 = 0;
    loop {
        let mut line = Vec::new();
        // Bounded: never more than the limit (plus one octet to tell) in
        // one line.
        let n = Read::take(&mut r, max.saturating_sub(total).saturating_add(1))
            .read_until(b'\n', &mut line)
            .map_err(ReadError::Io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Err(ReadError::TooBig(max));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !ignore_dots && line == b"." {
            break;
        }
        lines.push(line);
    }
    Ok(lines)
}

/// One header field: its name as written and its lines (the first, then
/// any continuation lines), without line ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub lines: Vec<Vec<u8>>,
}

impl Field {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The unfolded value (RFC 5322 2.2.3): the lines joined, the name and
    /// colon removed; bytes that are not UTF-8 become U+FFFD.
    pub fn value(&self) -> String {
        let joined: Vec<u8> = self.lines.concat();
        let text = String::from_utf8_lossy(&joined);
        match text.split_once(':') {
            Some((_, v)) => v.to_owned(),
            None => String::new(),
        }
    }
}

/// A message: header fields, then the body lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub header: Vec<Field>,
    pub body: Vec<Vec<u8>>,
}

/// If `line` starts a header field, its name: printable ASCII but the
/// colon, then the colon (RFC 5322 2.2; the obsolete syntax allows spaces
/// before the colon, 4.5).
fn field_name(line: &[u8]) -> Option<&str> {
    let end = line.iter().position(|&b| b == b':')?;
    let name = &line[..end];
    let name = match name.iter().rposition(|&b| b != b' ' && b != b'\t') {
        Some(last) => &name[..=last],
        None => return None,
    };
    if name.iter().all(|&b| (33..=126).contains(&b)) {
        std::str::from_utf8(name).ok()
    } else {
        None
    }
}

impl Message {
    /// Splits `lines` into header and body. The header ends at the first
    /// empty line (not kept), or at the first line that is neither a field
    /// nor a continuation line (kept, as the body's first line: the input
    /// had no header, or a broken one). A first line `From ...` (an mbox
    /// separator, as some programs send) is dropped, as sendmail does.
    pub fn parse(mut lines: Vec<Vec<u8>>) -> Message {
        if lines.first().is_some_and(|l| l.starts_with(b"From ")) {
            lines.remove(0);
        }
        let mut header: Vec<Field> = Vec::new();
        let mut it = lines.into_iter();
        let mut body = Vec::new();
        for line in it.by_ref() {
            if line.is_empty() {
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                if let Some(f) = header.last_mut() {
                    f.lines.push(line);
                    continue;
                }
            } else if let Some(name) = field_name(&line) {
                header.push(Field {
                    name: name.to_owned(),
                    lines: vec![line],
                });
                continue;
            }
            body.push(line);
            break;
        }
        body.extend(it);
        Message { header, body }
    }

    /// True if the header has a field `name` (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.header.iter().any(|f| f.is(name))
    }

    /// The addresses in To:, Cc: and Bcc: (for `-t`), in order; or in
    /// Resent-To:, Resent-Cc: and Resent-Bcc: if the message has any of
    /// those (it is being resent: RFC 5322 3.6.6).
    pub fn header_recipients(&self) -> Vec<String> {
        let resent = ["Resent-To", "Resent-Cc", "Resent-Bcc"];
        let names: &[&str] = if resent.iter().any(|n| self.has(n)) {
            &resent
        } else {
            &["To", "Cc", "Bcc"]
        };
        self.header
            .iter()
            .filter(|f| names.iter().any(|n| f.is(n)))
            .flat_map(|f| parse_address_list(&f.value()))
            .collect()
    }

    /// Removes Bcc: and Resent-Bcc: with their continuation lines: blind
    /// copies stay blind.
    pub fn remove_bcc(&mut self) {
        self.header.retain(|f| !f.is("Bcc") && !f.is("Resent-Bcc"));
    }

    /// Appends the field `name: value` to the header. `value` must be one
    /// line.
    pub fn add(&mut self, name: &str, value: &str) {
        self.header.push(Field {
            name: name.to_owned(),
            lines: vec![format!("{name}: {value}").into_bytes()],
        });
    }

    /// Writes the message as SMTP DATA content (RFC 5321 4.5.2): CRLF line
    /// ends, a `.` doubled at the start of a line, the header and body
    /// separated by an empty line. Not the final `.` line.
    pub fn write_smtp<W: Write>(&self, w: &mut W) -> io::Result<()> {
        let line = |w: &mut W, l: &[u8]| -> io::Result<()> {
            if l.first() == Some(&b'.') {
                w.write_all(b".")?;
            }
            w.write_all(l)?;
            w.write_all(b"\r\n")
        };
        for f in &self.header {
            for l in &f.lines {
                line(w, l)?;
            }
        }
        w.write_all(b"\r\n")?;
        for l in &self.body {
            line(w, l)?;
        }
        Ok(())
    }

    /// The message as [`Message::write_smtp`] writes it.
    pub fn to_smtp(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_smtp(&mut out).expect("writing to memory");
        out
    }
}

/// The addr-specs of an address list (RFC 5322 3.4): `a@b`, `Name <a@b>`,
/// `"Name, Jr." <a@b>`, comments `(...)`, groups `team: a@b, c@d;` and the
/// empty group `undisclosed-recipients:;`. Display names, comments and
/// source routes are dropped; an element that does not parse is passed on
/// as written (without comments), so that the server refuses it by name
/// rather than it being dropped in silence.
pub fn parse_address_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    // The current element, outside angle brackets and comments.
    let mut plain = String::new();
    // The current element's `<...>`, if it has one.
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut in_quote = false;
    let mut comment = 0usize;
    let mut chars = s.chars();
    let finish = |plain: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let addr = match angle.take() {
            Some(a) => strip_route(a.trim()).to_owned(),
            None => plain.trim().to_owned(),
        };
        plain.clear();
        if !addr.is_empty() {
            out.push(addr);
        }
    };
    while let Some(c) = chars.next() {
        if comment > 0 {
            match c {
                '(' => comment += 1,
                ')' => comment -= 1,
                '\\' => {
                    chars.next();
                }
                _ => {}
            }
            continue;
        }
        let buf = if in_angle {
            angle.get_or_insert_with(String::new)
        } else {
            &mut plain
        };
        if in_quote {
            buf.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        buf.push(n);
                    }
                }
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                buf.push(c);
            }
            '(' => comment = 1,
            '>' if in_angle => in_angle = false,
            _ if in_angle => buf.push(c),
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            // A group's display name ends at its colon: drop it.
            ':' => plain.clear(),
            ',' | ';' => finish(&mut plain, &mut angle, &mut out),
            _ => buf.push(c),
        }
    }
    finish(&mut plain, &mut angle, &mut out);
    out
}

/// `@a,@b:user@host` (an obsolete source route, RFC 5322 4.4) → `user@host`.
fn strip_route(a: &str) -> &str {
    if a.starts_with('@') {
        if let Some((_, rest)) = a.split_once(':') {
            return rest;
        }
    }
    a
}

/// A display name as a phrase (RFC 5322 3.2.5): as is when it is atoms,
/// a quoted string when it has specials, RFC 2047 encoded words (UTF-8,
/// base64) when it is not ASCII. Control characters become spaces, so
/// that `-F` cannot add header lines.
pub fn display_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = name.trim();
    if !name.is_ascii() {
        return encoded_words(name);
    }
    let atom = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    if name.chars().all(atom) {
        return name.to_owned();
    }
    let mut q = String::from("\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// `=?UTF-8?B?...?=` words of at most 75 characters (RFC 2047 2), split
/// between characters, separated by spaces.
fn encoded_words(s: &str) -> String {
    // 45 octets make 60 base64 characters; with `=?UTF-8?B?` and `?=`, 72.
    const CHUNK: usize = 45;
    let mut words = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + CHUNK).min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!("=?UTF-8?B?{}?=", base64(&s.as_bytes()[start..end])));
        start = end;
    }
    words.join(" ")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Vec<u8>> {
        read_lines(text.as_bytes(), true, 1 << 20).unwrap()
    }

    fn msg(text: &str) -> Message {
        Message::parse(lines(text))
    }

    fn smtp(m: &Message) -> String {
        String::from_utf8(m.to_smtp()).unwrap()
    }

    #[test]
    fn reading_lone_dot_and_line_ends() {
        let input = "a\r\nb\n.\nafter\n";
        let with = read_lines(input.as_bytes(), false, 100).unwrap();
        assert_eq!(with, vec![b"a".to_vec(), b"b".to_vec()]);
        let without = read_lines(input.as_bytes(), true, 100).unwrap();
        assert_eq!(without.len(), 4);
        assert_eq!(without[2], b".");
        // `.` with CRLF, and at the very end without a line end.
        assert_eq!(
            read_lines(&b"x\r\n.\r\ny"[..], false, 100).unwrap().len(),
            1
        );
        assert_eq!(read_lines(&b"x\n."[..], false, 100).unwrap().len(), 1);
        // `..` and ` .` are data.
        assert_eq!(read_lines(&b"..\n .\n"[..], false, 100).unwrap().len(), 2);
        // A last line without a line end is kept.
        assert_eq!(
            read_lines(&b"a\nlast"[..], false, 100).unwrap(),
            vec![b"a".to_vec(), b"last".to_vec()]
        );
        // Binary bytes pass.
        assert_eq!(
            read_lines(&b"\xff\x00\xfe\n"[..], false, 100).unwrap(),
            vec![b"\xff\x00\xfe".to_vec()]
        );
    }

    #[test]
    fn reading_is_bounded() {
        assert!(read_lines(&b"12345\n"[..], true, 6).is_ok());
        assert!(matches!(
            read_lines(&b"12345\n7"[..], true, 6),
            Err(ReadError::TooBig(6))
        ));
        let long = vec![b'x'; 10_000];
        assert!(matches!(
            read_lines(&long[..], true, 100),
            Err(ReadError::TooBig(100))
        ));
    }

    #[test]
    fn header_and_body() {
        let m = msg("Subject: hi\nTo: jon,\n alice\n\nbody\n\nmore\n");
        assert_eq!(m.header.len(), 2);
        assert_eq!(m.header[1].name, "To");
        assert_eq!(m.header[1].lines.len(), 2);
        assert_eq!(m.header[1].value(), " jon, alice");
        assert_eq!(
            m.body,
            vec![b"body".to_vec(), b"".to_vec(), b"more".to_vec()]
        );
    }

    #[test]
    fn no_header_at_all() {
        let m = msg("hello there\nsecond line\n");
        assert!(m.header.is_empty());
        assert_eq!(m.body.len(), 2);
        // A line that is not a field ends the header and starts the body.
        let m = msg("Subject: x\nnot a header\nbody\n");
        assert_eq!(m.header.len(), 1);
        assert_eq!(m.body[0], b"not a header");
        // A continuation with no field before it is body.
        let m = msg(" indented\n");
        assert!(m.header.is_empty());
        // Obsolete space before the colon is still a field.
        let m = msg("Subject : x\n\nb\n");
        assert_eq!(m.header[0].name, "Subject");
        // A colon-less first line or a name with a space is not a field.
        assert!(msg("Hello world: x\n").header.is_empty());
    }

    #[test]
    fn mbox_from_line_is_dropped() {
        let m = msg("From jon Sat Nov 28 16:59:45 2026\nSubject: x\n\nb\n");
        assert_eq!(m.header.len(), 1);
        assert_eq!(m.header[0].name, "Subject");
    }

    #[test]
    fn smtp_form_stuffs_dots_and_uses_crlf() {
        let m = msg("Subject: x\n\n.hidden\n..two\n.\nend");
        assert_eq!(
            smtp(&m),
            "Subject: x\r\n\r\n..hidden\r\n...two\r\n..\r\nend\r\n"
        );
        // The empty line between header and body is added when missing.
        let mut m = msg("just a body\n");
        m.add("From", "jon@h");
        assert_eq!(smtp(&m), "From: jon@h\r\n\r\njust a body\r\n");
        // An empty message still has the separator.
        assert_eq!(smtp(&Message::default()), "\r\n");
    }

    #[test]
    fn recipients_from_the_header() {
        let m = msg("From: me@h\n\
             To: Jon Doe <jon@h.example>, \"Smith, Alice\" <alice@h.example>\n\
             Cc: bob@h.example (Bob),\n\tcarol@h.example\n\
             bcc: <dave@h.example>\n\
             Subject: To: not@me\n\n\
             To: body@not.header\n");
        assert_eq!(
            m.header_recipients(),
            vec![
                "jon@h.example",
                "alice@h.example",
                "bob@h.example",
                "carol@h.example",
                "dave@h.example"
            ]
        );
    }

    #[test]
    fn resent_fields_win() {
        let m = msg("To: old@h\nResent-To: new@h\nResent-Bcc: hidden@h\n\nb\n");
        assert_eq!(m.header_recipients(), vec!["new@h", "hidden@h"]);
        let mut m = m;
        m.remove_bcc();
        assert!(!m.has("Resent-Bcc"));
        assert!(m.has("Resent-To"));
    }

    #[test]
    fn bcc_is_removed_with_its_continuations() {
        let mut m = msg("To: a@h\nBcc: secret@h,\n  other@h\nSubject: s\nBCC: x@h\n\nbody\n");
        m.remove_bcc();
        assert_eq!(smtp(&m), "To: a@h\r\nSubject: s\r\n\r\nbody\r\n");
    }

    #[test]
    fn address_lists() {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("jon", vec!["jon"]),
            ("jon@h, alice@h", vec!["jon@h", "alice@h"]),
            ("Jon <jon@h>", vec!["jon@h"]),
            ("\"Doe, Jon\" <jon@h>, x@h", vec!["jon@h", "x@h"]),
            ("jon@h (Jon, the (nested) one), x@h", vec!["jon@h", "x@h"]),
            ("undisclosed-recipients:;", vec![]),
            ("team: a@h, B <b@h>;, c@h", vec!["a@h", "b@h", "c@h"]),
            ("<@relay.example:jon@h>", vec!["jon@h"]),
            ("\"john doe\"@h", vec!["\"john doe\"@h"]),
            ("\"a\\\"b\"@h", vec!["\"a\\\"b\"@h"]),
            ("  ,, jon@h ,", vec!["jon@h"]),
            ("<>", vec![]),
            ("", vec![]),
            // Not an address: passed on, for the server to refuse by name.
            ("Jon Doe", vec!["Jon Doe"]),
            // RFC 6532 header fields: UTF-8 addresses, for -t.
            (
                "J\u{f6}rg <j\u{f6}rg@h>, \u{7528}\u{6237}@\u{4f8b}\u{5b50}.\u{5e7f}\u{544a}",
                vec![
                    "j\u{f6}rg@h",
                    "\u{7528}\u{6237}@\u{4f8b}\u{5b50}.\u{5e7f}\u{544a}",
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_address_list(text), want, "{text:?}");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("Jon Doe"), "Jon Doe");
        assert_eq!(display_name("Doe, Jon"), "\"Doe, Jon\"");
        assert_eq!(display_name("J. \"Q\" Doe"), "\"J. \\\"Q\\\" Doe\"");
        assert_eq!(display_name("x\r\nBcc: victim@h"), "\"x  Bcc: victim@h\"");
        assert_eq!(display_name("Jürgen"), "=?UTF-8?B?SsO8cmdlbg==?=");
        let long = "é".repeat(40);
        let enc = display_name(&long);
        for w in enc.split(' ') {
            assert!(w.len() <= 75, "{w}");
            assert!(w.starts_with("=?UTF-8?B?") && w.ends_with("?="));
        }
        assert_eq!(enc.split(' ').count(), 2);
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
