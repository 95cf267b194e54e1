//! The on-disk format of a queue entry's envelope file: [`Entry`], what it
//! holds, [`Entry::to_text`], which writes it, and [`Entry::parse`], which
//! reads it back.
//!
//! Pure: nothing here touches the file system or the clock, so that the
//! format can be tested on bytes alone; the store (`store.rs`) writes what
//! this builds and reads what this parses. Entries written by an earlier
//! postie must still be read the same: no line here may change its meaning
//! without a new [`VERSION`].
//!
//! An envelope file is text, one field a line, `KEY VALUE`, in a fixed
//! order, so that `cat` shows it (times are seconds since the epoch):
//!
//! ```text
//! postie-queue 1
//! id 0069a1f2c3b4d5e6f708192a3b
//! log-id 5A1B2C3.7
//! received 1764900000
//! size 1234
//! trace 187
//! sender <jon@frogbog>
//! submitter 1000 jon
//! envid QQ314159
//! ret HDRS
//! warned 1764914400
//! rcpt SUCCESS,FAILURE rfc822;jon@razorback <jon@razorback>
//! user jon
//! user alice
//! pending 0 2 1764900600 alice
//! error 4.2.0 mailbox alice: lock not obtained in time
//! sum 0123456789abcdef
//! ```
//!
//! `trace` is how many octets at the start of the message file are the
//! trace headers postie added; `sender <>` is the null sender; `submitter`, `envid`, `ret`, `warned` (when the
//! sender was told of the delay) and each
//! `error` are there only when known. Each `rcpt` (the RFC 3461 NOTIFY or
//! `-`, the ORCPT or `-`, then the address as given) is followed by a
//! `user` line for each destination it expands to: a local user's name
//! (its mailbox), or a file's or a program's key (`file:USER:PATH`,
//! `prog:USER:COMMAND`, [`crate::dest`]). Each `pending` line is a
//! destination not yet delivered: the index of its `rcpt` (from 0), the attempts
//! so far, when to try next, and the user; an `error` line after it is
//! its last error (RFC 3463 code and one line of text). A field that may
//! hold spaces (an address, a user name, an error text) is always last on
//! its line, and no field holds a control character, so that a line is
//! always one line. The last line, `sum`, is the FNV-1a checksum of every
//! byte before it: an entry cut short or garbled never parses.
//!
//! The parser is strict: every line in its place, every field checked
//! (user names as [`crate::users`] checks them: a submitter's as a name
//! of the passwd database, a recipient's destinations as
//! [`crate::dest::Dest::parse`] does; no control characters,
//! bounded sizes and counts), nothing after the checksum.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::status::{LastError, StatusCode, sanitize};
use crate::dsn::Class;
use crate::smtp::Submitter;
// RET and NOTIFY, and the bounds of ENVID and ORCPT, are SMTP's (RFC 3461).
use crate::dest::Dest;
pub use crate::smtp::dsn_params::{MAX_ENVID, MAX_ORCPT, Notify, Ret};
use crate::users::valid_user_name;

/// The first line of every envelope file: the format and its version.
pub const VERSION: &str = "postie-queue 1";

/// The largest envelope file that parses.
pub const MAX_RECORD: usize = 4 << 20;
/// The most recipients (`rcpt` lines) an entry may have.
pub const MAX_RCPTS: usize = 10_000;
/// The most local users one recipient may expand to.
pub const MAX_USERS: usize = 10_000;
/// The longest address (RFC 5321 allows 256 octets for a path; room for
/// SMTPUTF8 and quoting).
pub const MAX_ADDRESS: usize = 1024;
/// The longest log id.
pub const MAX_LOG_ID: usize = 64;
/// The length of a queue id: 10 hex digits of time, 16 of randomness.
pub const ID_LEN: usize = 26;

/// One RCPT of the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as the client gave it, without angle brackets.
    pub address: String,
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT as given (`addr-type;xtext`).
    pub orcpt: Option<String>,
    /// The local users it expands to.
    pub users: Vec<String>,
}

/// A local user not yet delivered to, and how its attempts went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Which recipient (index into [`Entry::recipients`]) it came from.
    pub rcpt: usize,
    pub user: String,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt: SystemTime,
    pub last_error: Option<LastError>,
}

/// A queue entry's envelope and state: everything about it but the
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The queue id (the store makes it): names the entry's files.
    pub id: String,
    /// The message's id in the mail log (`SESSION.N`).
    pub log_id: String,
    pub received: SystemTime,
    /// The message's size in octets: its file's length.
    pub size: u64,
    /// How many octets at the start of the message file are the trace
    /// headers postie added on receipt (`Return-Path:`, `Received:`):
    /// each delivery writes them after its own `From ` line.
    pub trace: u64,
    /// The envelope sender; `None` for the null sender `<>`.
    pub sender: Option<String>,
    /// The local user who submitted it, for a local submission.
    pub submitter: Option<Submitter>,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    /// When the sender was told that the message is delayed
    /// (`delay-warning`), if it was: once per entry.
    pub warned: Option<SystemTime>,
    pub recipients: Vec<Recipient>,
    pub pending: Vec<Pending>,
}

/// Why an envelope file did not parse: the line (from 1) and what was
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub why: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

impl std::error::Error for ParseError {}

/// True for the code of an error: class 4 or 5, as the format has always
/// held it (a success, 2.x.x, is no last error).
fn is_failure(code: &StatusCode) -> bool {
    code.class() != Class::Success
}

/// True for a name the store may give an entry: [`ID_LEN`] lowercase hex
/// digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Entry {
    /// The envelope file's bytes, checksum included. Every field must be
    /// valid ([`Entry::check`]): what does not parse back is not written.
    pub fn to_text(&self) -> Result<String, String> {
        self.check()?;
        let mut s = format!("{VERSION}\n");
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            s.push(' ');
            s.push_str(v);
            s.push('\n');
        };
        line("id", &self.id);
        line("log-id", &self.log_id);
        line("received", &secs(self.received).to_string());
        line("size", &self.size.to_string());
        line("trace", &self.trace.to_string());
        line(
            "sender",
            &format!("<{}>", self.sender.as_deref().unwrap_or("")),
        );
        if let Some(sub) = &self.submitter {
            line("submitter", &format!("{} {}", sub.uid, sub.user));
        }
        if let Some(envid) = &self.envid {
            line("envid", envid);
        }
        if let Some(ret) = self.ret {
            line("ret", &ret.to_string());
        }
        if let Some(w) = self.warned {
            line("warned", &secs(w).to_string());
        }
        for r in &self.recipients {
            let notify = r.notify.map_or("-".to_string(), |n| n.to_string());
            let orcpt = r.orcpt.as_deref().unwrap_or("-");
            line("rcpt", &format!("{notify} {orcpt} <{}>", r.address));
            for u in &r.users {
                line("user", u);
            }
        }
        for p in &self.pending {
            line(
                "pending",
                &format!(
                    "{} {} {} {}",
                    p.rcpt,
                    p.attempts,
                    secs(p.next_attempt),
                    p.user
                ),
            );
            if let Some(e) = &p.last_error {
                line("error", &format!("{} {}", e.code, e.text));
            }
        }
        let sum = checksum(s.as_bytes());
        s.push_str(&format!("sum {sum:016x}\n"));
        Ok(s)
    }

    /// Why this entry cannot be written, if it cannot: the same checks the
    /// parser makes.
    pub fn check(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!("bad queue id {:?}", self.id));
        }
        if !token(&self.log_id, MAX_LOG_ID) {
            return Err("bad log id".into());
        }
        if let Some(s) = &self.sender {
            check_address(s)?;
            if s.is_empty() {
                return Err("an empty sender is the null sender: None".into());
            }
        }
        if let Some(sub) = &self.submitter {
            if !valid_user_name(&sub.user) {
                return Err("bad submitter".into());
            }
        }
        if let Some(e) = &self.envid {
            if !token(e, MAX_ENVID) {
                return Err("bad ENVID".into());
            }
        }
        if self.recipients.is_empty() || self.recipients.len() > MAX_RCPTS {
            return Err("no recipients, or too many".into());
        }
        for r in &self.recipients {
            check_address(&r.address)?;
            if r.address.is_empty() {
                return Err("empty recipient address".into());
            }
            if let Some(o) = &r.orcpt {
                if !token(o, MAX_ORCPT) || o == "-" {
                    return Err("bad ORCPT".into());
                }
            }
            if let Some(Notify::On {
                success: false,
                failure: false,
                delay: false,
            }) = r.notify
            {
                return Err("empty NOTIFY".into());
            }
            if r.users.is_empty() || r.users.len() > MAX_USERS {
                return Err("a recipient without users, or with too many".into());
            }
            if let Some(u) = r.users.iter().find(|u| !Dest::is_key(u)) {
                return Err(format!("bad destination {u:?}"));
            }
            let mut users: Vec<&String> = r.users.iter().collect();
            users.sort();
            if users.windows(2).any(|w| w[0] == w[1]) {
                return Err("a user twice for one recipient".into());
            }
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.pending {
            let Some(r) = self.recipients.get(p.rcpt) else {
                return Err("pending for no recipient".into());
            };
            if !r.users.contains(&p.user) {
                return Err(format!("pending user {:?} is not its recipient's", p.user));
            }
            if !seen.insert((p.rcpt, p.user.as_str())) {
                return Err(format!("pending user {:?} twice", p.user));
            }
            if let Some(e) = &p.last_error {
                if e.text.is_empty() || sanitize(&e.text) != e.text {
                    return Err("error text not one clean line".into());
                }
                if !is_failure(&e.code) {
                    return Err(format!("{} is no error", e.code));
                }
            }
        }
        Ok(())
    }

    /// Parses an envelope file: the whole of it, checksum included, or
    /// nothing.
    pub fn parse(bytes: &[u8]) -> Result<Entry, ParseError> {
        let bad = |line: usize, why: &str| ParseError {
            line,
            why: why.to_string(),
        };
        if bytes.len() > MAX_RECORD {
            return Err(bad(0, "too large"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad(0, "not UTF-8"))?;
        // The checksum first: what it vouches for is all that is read.
        let body_len = text
            .strip_suffix('\n')
            .and_then(|t| t.rfind('\n'))
            .map(|i| i + 1)
            .ok_or_else(|| bad(0, "cut short"))?;
        let (body, last) = text.split_at(body_len);
        let nlines = body.lines().count() + 1;
        let sum = last
            .strip_prefix("sum ")
            .and_then(|s| s.strip_suffix('\n'))
            .filter(|s| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| bad(nlines, "no checksum line: cut short"))?;
        if sum != checksum(body.as_bytes()) {
            return Err(bad(nlines, "checksum mismatch"));
        }
        let mut r = Reader {
            lines: body.split_terminator('\n').collect(),
            at: 0,
        };
        let e = r.entry().map_err(|why| bad(r.at, &why))?;
        e.check().map_err(|why| bad(nlines, &why))?;
        Ok(e)
    }
}

/// The lines of an envelope file being parsed.
struct Reader<'a> {
    lines: Vec<&'a str>,
    /// Lines taken so far: the number (from 1) of the last one taken.
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next line's value if its key is `key`.
    fn optional(&mut self, key: &str) -> Option<&'a str> {
        let v = self
            .lines
            .get(self.at)?
            .strip_prefix(key)?
            .strip_prefix(' ')?;
        self.at += 1;
        Some(v)
    }

    fn required(&mut self, key: &str) -> Result<&'a str, String> {
        self.optional(key).ok_or_else(|| {
            self.at += 1;
            format!("expected {key:?}")
        })
    }

    fn entry(&mut self) -> Result<Entry, String> {
        if self.lines.first() != Some(&VERSION) {
            self.at = 1;
            return Err(format!("not {VERSION:?}"));
        }
        if let Some(i) = self
            .lines
            .iter()
            .position(|l| l.chars().any(char::is_control))
        {
            self.at = i + 1;
            return Err("a control character".into());
        }
        self.at = 1;
        let id = self.required("id")?.to_string();
        let log_id = self.required("log-id")?.to_string();
        let received = time(self.required("received")?)?;
        let size = number(self.required("size")?)?;
        let trace = number(self.required("trace")?)?;
        if trace > size {
            return Err("trace headers longer than the message".into());
        }
        let sender = bracketed(self.required("sender")?)?;
        let sender = (!sender.is_empty()).then(|| sender.to_string());
        let submitter = match self.optional("submitter") {
            Some(v) => {
                let (uid, user) = v.split_once(' ').ok_or("submitter: no user")?;
                Some(Submitter {
                    uid: u32::try_from(number(uid)?).map_err(|_| "uid too large")?,
                    user: user.to_string(),
                })
            }
            None => None,
        };
        let envid = self.optional("envid").map(str::to_string);
        let ret = match self.optional("ret") {
            Some("FULL") => Some(Ret::Full),
            Some("HDRS") => Some(Ret::Hdrs),
            Some(_) => return Err("bad RET".into()),
            None => None,
        };
        let warned = self.optional("warned").map(time).transpose()?;
        let mut recipients = Vec::new();
        while let Some(v) = self.optional("rcpt") {
            let mut parts = v.splitn(3, ' ');
            let (notify, orcpt, address) = match (parts.next(), parts.next(), parts.next()) {
                (Some(n), Some(o), Some(a)) => (n, o, a),
                _ => return Err("rcpt: too few fields".into()),
            };
            let notify = match notify {
                "-" => None,
                n => Some(parse_notify(n)?),
            };
            let orcpt = (orcpt != "-").then(|| orcpt.to_string());
            let address = bracketed(address)?.to_string();
            let mut users = Vec::new();
            while let Some(u) = self.optional("user") {
                if users.len() == MAX_USERS {
                    return Err("too many users".into());
                }
                users.push(u.to_string());
            }
            if recipients.len() == MAX_RCPTS {
                return Err("too many recipients".into());
            }
            recipients.push(Recipient {
                address,
                notify,
                orcpt,
                users,
            });
        }
        let mut pending = Vec::new();
        while let Some(v) = self.optional("pending") {
            let mut parts = v.splitn(4, ' ');
            let mut field = || parts.next().ok_or("pending: too few fields");
            let rcpt = usize::try_from(number(field()?)?).map_err(|_| "bad index")?;
            let attempts = u32::try_from(number(field()?)?).map_err(|_| "too many attempts")?;
            let next_attempt = time(field()?)?;
            let user = field()?.to_string();
            let last_error = match self.optional("error") {
                Some(v) => {
                    let (code, text) = v.split_once(' ').ok_or("error: no text")?;
                    let code = StatusCode::parse(code)
                        .filter(is_failure)
                        .ok_or("bad status code")?;
                    Some(LastError {
                        code,
                        text: text.to_string(),
                    })
                }
                None => None,
            };
            pending.push(Pending {
                rcpt,
                user,
                attempts,
                next_attempt,
                last_error,
            });
        }
        if self.at < self.lines.len() {
            self.at += 1;
            return Err("unexpected line".into());
        }
        Ok(Entry {
            id,
            log_id,
            received,
            size,
            trace,
            sender,
            submitter,
            envid,
            ret,
            warned,
            recipients,
            pending,
        })
    }
}

/// FNV-1a, 64 bits (as the journal's): enough to tell a file cut short or
/// garbled.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A decimal number without sign or leading zeros (but `0`).
fn number(s: &str) -> Result<u64, String> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a number: {s:?}"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("leading zero: {s:?}"));
    }
    s.parse().map_err(|_| format!("number too large: {s:?}"))
}

fn time(s: &str) -> Result<SystemTime, String> {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(number(s)?))
        .ok_or_else(|| "time out of range".to_string())
}

/// Printable ASCII without spaces, 1 to `max` bytes.
fn token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// An address as written: printable (spaces allowed, for quoted local
/// parts), no angle brackets, at most [`MAX_ADDRESS`] bytes.
fn check_address(a: &str) -> Result<(), String> {
    if a.len() > MAX_ADDRESS || a.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err(format!("bad address {a:?}"));
    }
    Ok(())
}

fn bracketed(v: &str) -> Result<&str, String> {
    let a = v
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .ok_or("address without angle brackets")?;
    check_address(a)?;
    Ok(a)
}

/// `NEVER`, or `SUCCESS`, `FAILURE`, `DELAY` joined by commas in this
/// order, each at most once (as its `Display` writes it).
fn parse_notify(s: &str) -> Result<Notify, String> {
    if s == "NEVER" {
        return Ok(Notify::Never);
    }
    let n = Notify::On {
        success: s.split(',').any(|w| w == "SUCCESS"),
        failure: s.split(',').any(|w| w == "FAILURE"),
        delay: s.split(',').any(|w| w == "DELAY"),
    };
    if n.to_string() != s || s.is_empty() {
        return Err(format!("bad NOTIFY {s:?}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    /// An entry with every field there.
    pub(crate) fn full() -> Entry {
        Entry {
            id: "0069a1f2c3b4d5e6f708192a3b".into(),
            log_id: "5A1B2C3.7".into(),
            received: at(1_764_900_000),
            size: 1234,
            trace: 187,
            sender: Some("jon@frogbog".into()),
            submitter: Some(Submitter {
                uid: 1000,
                user: "jon".into(),
            }),
            envid: Some("QQ314159".into()),
            ret: Some(Ret::Hdrs),
            warned: Some(at(1_764_914_400)),
            recipients: vec![
                Recipient {
                    address: "staff@razorback".into(),
                    notify: Some(Notify::On {
                        success: true,
                        failure: true,
                        delay: false,
                    }),
                    orcpt: Some("rfc822;staff@razorback".into()),
                    users: vec!["jon".into(), "alice smith".into()],
                },
                Recipient {
                    address: "\"odd name\"@razorback".into(),
                    notify: Some(Notify::Never),
                    orcpt: None,
                    users: vec![
                        "bob".into(),
                        "file:bob:/home/bob/Mail/in box".into(),
                        "prog:nobody:/usr/bin/procmail -f- -a \"x y\"".into(),
                    ],
                },
            ],
            pending: vec![
                Pending {
                    rcpt: 0,
                    user: "alice smith".into(),
                    attempts: 2,
                    next_attempt: at(1_764_900_600),
                    last_error: Some(LastError {
                        code: StatusCode::parse("4.2.0").unwrap(),
                        text: "mailbox alice smith: lock not obtained in time".into(),
                    }),
                },
                Pending {
                    rcpt: 1,
                    user: "bob".into(),
                    attempts: 0,
                    next_attempt: at(1_764_900_000),
                    last_error: None,
                },
                Pending {
                    rcpt: 1,
                    user: "prog:nobody:/usr/bin/procmail -f- -a \"x y\"".into(),
                    attempts: 0,
                    next_attempt: at(1_764_900_000),
                    last_error: None,
                },
            ],
        }
    }

    /// An entry with only what must be there.
    fn minimal() -> Entry {
        Entry {
            sender: None,
            submitter: None,
            envid: None,
            ret: None,
            warned: None,
            recipients: vec![Recipient {
                address: "jon".into(),
                notify: None,
                orcpt: None,
                users: vec!["jon".into()],
            }],
            pending: vec![],
            ..full()
        }
    }

    /// `text` (an envelope file) with `f` applied to its lines before the
    /// checksum, which is made again: a well-formed file of bad content.
    fn edited(text: &str, f: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.pop(); // the sum
        f(&mut lines);
        let mut body = String::new();
        for l in lines {
            body.push_str(&l);
            body.push('\n');
        }
        let sum = checksum(body.as_bytes());
        format!("{body}sum {sum:016x}\n").into_bytes()
    }

    #[test]
    fn entries_round_trip() {
        for e in [full(), minimal()] {
            let text = e.to_text().unwrap();
            assert_eq!(Entry::parse(text.as_bytes()).unwrap(), e);
        }
    }

    /// RFC 6531: UTF-8 addresses are kept as they are, whatever the
    /// script; one with a control character (C1 included) is not written.
    #[test]
    fn utf8_addresses_round_trip() {
        let mut e = full();
        e.sender = Some("pel\u{e9}@b\u{fc}cher.example".into());
        e.recipients[0].address = "\u{7528}\u{6237}@razorback".into();
        let text = e.to_text().unwrap();
        assert!(
            text.contains("\nsender <pel\u{e9}@b\u{fc}cher.example>\n"),
            "{text}"
        );
        assert_eq!(Entry::parse(text.as_bytes()).unwrap(), e);
        e.recipients[0].address = "j\u{85}rg@razorback".into();
        assert!(e.to_text().is_err());
    }

    #[test]
    fn the_format_is_lines_of_text() {
        let text = full().to_text().unwrap();
        let body: Vec<&str> = text.lines().collect();
        assert_eq!(
            &body[..body.len() - 1],
            [
                "postie-queue 1",
                "id 0069a1f2c3b4d5e6f708192a3b",
                "log-id 5A1B2C3.7",
                "received 1764900000",
                "size 1234",
                "trace 187",
                "sender <jon@frogbog>",
                "submitter 1000 jon",
                "envid QQ314159",
                "ret HDRS",
                "warned 1764914400",
                "rcpt SUCCESS,FAILURE rfc822;staff@razorback <staff@razorback>",
                "user jon",
                "user alice smith",
                "rcpt NEVER - <\"odd name\"@razorback>",
                "user bob",
                "user file:bob:/home/bob/Mail/in box",
                "user prog:nobody:/usr/bin/procmail -f- -a \"x y\"",
                "pending 0 2 1764900600 alice smith",
                "error 4.2.0 mailbox alice smith: lock not obtained in time",
                "pending 1 0 1764900000 bob",
                "pending 1 0 1764900000 prog:nobody:/usr/bin/procmail -f- -a \"x y\"",
            ]
        );
        assert!(body[body.len() - 1].starts_with("sum "));
        let min = minimal().to_text().unwrap();
        assert!(min.contains("\nsender <>\nrcpt - - <jon>\nuser jon\nsum "));
    }

    /// A torn write: every proper prefix of a file is refused, as is
    /// every single garbled byte.
    #[test]
    fn torn_or_garbled_files_never_parse() {
        let text = full().to_text().unwrap();
        let bytes = text.as_bytes();
        for n in 0..bytes.len() {
            assert!(Entry::parse(&bytes[..n]).is_err(), "cut at {n}");
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut b = bytes.to_vec();
                b[i] ^= flip;
                assert!(Entry::parse(&b).is_err(), "byte {i} ^ {flip:#x}");
            }
        }
        let mut more = bytes.to_vec();
        more.extend_from_slice(b"user eve\n");
        assert!(Entry::parse(&more).is_err(), "a line after the checksum");
        let big = vec![b'a'; MAX_RECORD + 1];
        assert_eq!(Entry::parse(&big).unwrap_err().why, "too large");
    }

    /// Each field checked, in files whose checksum is right.
    #[test]
    fn every_malformed_field_is_refused() {
        let text = full().to_text().unwrap();
        let set = |i: usize, v: &'static str| move |l: &mut Vec<String>| l[i] = v.to_string();
        type Edit = Box<dyn FnOnce(&mut Vec<String>)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("version", Box::new(set(0, "postie-queue 2"))),
            ("id", Box::new(set(1, "id 0069A1F2C3B4D5E6F708192A3B"))),
            ("short id", Box::new(set(1, "id 0069a1f2"))),
            ("log id with a space", Box::new(set(2, "log-id 5A1 7"))),
            ("time", Box::new(set(3, "received -1"))),
            ("leading zero", Box::new(set(3, "received 01764900000"))),
            (
                "huge time",
                Box::new(set(3, "received 99999999999999999999")),
            ),
            ("size", Box::new(set(4, "size 12x"))),
            ("trace", Box::new(set(5, "trace 1235"))),
            ("sender unbracketed", Box::new(set(6, "sender jon@frogbog"))),
            ("sender bracket", Box::new(set(6, "sender <jon<@frogbog>"))),
            ("submitter", Box::new(set(7, "submitter 1000 -jon"))),
            (
                "submitter uid",
                Box::new(set(7, "submitter 4294967296 jon")),
            ),
            ("submitter slash", Box::new(set(7, "submitter 1000 ../jon"))),
            ("envid space", Box::new(set(8, "envid QQ 3"))),
            ("ret", Box::new(set(9, "ret ALL"))),
            ("warned", Box::new(set(10, "warned soon"))),
            (
                "notify twice",
                Box::new(set(11, "rcpt SUCCESS,SUCCESS - <a@b>")),
            ),
            (
                "notify order",
                Box::new(set(11, "rcpt FAILURE,SUCCESS - <a@b>")),
            ),
            (
                "notify never and",
                Box::new(set(11, "rcpt NEVER,DELAY - <a@b>")),
            ),
            ("notify word", Box::new(set(11, "rcpt SOMETIMES - <a@b>"))),
            ("rcpt fields", Box::new(set(11, "rcpt - <a@b>"))),
            ("rcpt empty", Box::new(set(11, "rcpt - - <>"))),
            ("user dash", Box::new(set(12, "user -rf"))),
            ("user slash", Box::new(set(12, "user ../../etc/passwd"))),
            ("user empty", Box::new(set(12, "user "))),
            ("user twice", Box::new(set(12, "user alice smith"))),
            ("user dot", Box::new(set(12, "user .postie-txn.1.2.3"))),
            ("user lock", Box::new(set(12, "user jon.lock"))),
            ("file relative", Box::new(set(16, "user file:bob:Mail/in"))),
            ("prog empty", Box::new(set(17, "user prog:nobody: "))),
            ("kind", Box::new(set(17, "user pipe:nobody:/bin/true"))),
            (
                "pending index",
                Box::new(set(18, "pending 2 2 1764900600 bob")),
            ),
            (
                "pending user",
                Box::new(set(18, "pending 1 2 1764900600 alice smith")),
            ),
            (
                "pending fields",
                Box::new(set(18, "pending 0 2 1764900600")),
            ),
            (
                "pending twice",
                Box::new(set(20, "pending 0 0 1764900000 alice smith")),
            ),
            ("code class", Box::new(set(19, "error 2.0.0 fine"))),
            ("code digits", Box::new(set(19, "error 4.2000.0 long"))),
            ("code form", Box::new(set(19, "error 4.2 short"))),
            ("error text", Box::new(set(19, "error 4.2.0"))),
            ("error blank", Box::new(set(19, "error 4.2.0  padded "))),
            ("control", Box::new(set(19, "error 4.2.0 a\rb"))),
            ("tab", Box::new(set(2, "log-id 5A1\t7"))),
            (
                "unknown key",
                Box::new(|l: &mut Vec<String>| l.insert(5, "x 1".into())),
            ),
            ("out of order", Box::new(|l: &mut Vec<String>| l.swap(3, 4))),
            ("missing", Box::new(|l: &mut Vec<String>| drop(l.remove(4)))),
            ("user first", Box::new(|l: &mut Vec<String>| l.swap(9, 10))),
            (
                "no users",
                Box::new(|l: &mut Vec<String>| drop(l.remove(13))),
            ),
            (
                "no recipients",
                Box::new(|l: &mut Vec<String>| l.truncate(9)),
            ),
            (
                "error alone",
                Box::new(|l: &mut Vec<String>| drop(l.remove(14))),
            ),
            (
                "empty line",
                Box::new(|l: &mut Vec<String>| l.push(String::new())),
            ),
        ];
        // The edit helper itself makes a file that parses.
        assert_eq!(Entry::parse(&edited(&text, |_| ())).unwrap(), full());
        for (what, edit) in cases {
            let bytes = edited(&text, edit);
            assert!(
                Entry::parse(&bytes).is_err(),
                "{what}: parsed\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let mut latin1 = edited(&text, |_| ());
        latin1[30] = 0xe9;
        assert!(Entry::parse(&latin1).is_err(), "not UTF-8");
        let long = format!("user {}", "a".repeat(256));
        assert!(Entry::parse(&edited(&text, |l| l[10] = long)).is_err());
        let long = format!("rcpt - - <{}>", "a".repeat(MAX_ADDRESS + 1));
        assert!(Entry::parse(&edited(&text, |l| l[9] = long)).is_err());
    }

    /// What would not parse back is not written.
    #[test]
    fn invalid_entries_are_not_written() {
        let mut cases = Vec::new();
        let mut e = full();
        e.recipients[0].users[0] = "jon\nrcpt - - <eve@evil>".into();
        cases.push(e);
        let mut e = full();
        e.recipients[0].address = "a@b>\nuser eve".into();
        cases.push(e);
        let mut e = full();
        e.pending[0].last_error.as_mut().unwrap().text = "busy\nuser eve".into();
        cases.push(e);
        let mut e = full();
        e.id = "../../etc/passwd".into();
        cases.push(e);
        let mut e = full();
        e.recipients[1].orcpt = Some("-".into());
        cases.push(e);
        let mut e = full();
        e.recipients[0].notify = Some(Notify::On {
            success: false,
            failure: false,
            delay: false,
        });
        cases.push(e);
        let mut e = full();
        e.sender = Some(String::new());
        cases.push(e);
        let mut e = full();
        e.recipients[1].users.push("bob".into());
        cases.push(e);
        let mut e = full();
        e.pending[0].last_error.as_mut().unwrap().code = StatusCode::parse("2.0.0").unwrap();
        cases.push(e);
        for e in cases {
            assert!(e.to_text().is_err(), "{e:?}");
        }
    }

    #[test]
    fn last_errors_are_written_whatever_their_text() {
        let code = StatusCode::parse("4.2.2").unwrap();
        for text in ["", " \n", "over quota\r\nuser eve", &"x".repeat(10_000)] {
            let mut e = full();
            e.pending[0].last_error = Some(LastError::new(code, text));
            let back = Entry::parse(e.to_text().unwrap().as_bytes()).unwrap();
            assert_eq!(back, e, "{text:?}");
        }
    }
}
