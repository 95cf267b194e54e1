//! The SMTP client of local submission: one transaction with the daemon
//! on its Unix socket, or with an in-process session, and the mapping of
//! its replies to sysexits.h exit codes (in [`Error::exit_code`], and
//! nowhere else).
//!
//! A recipient refused for good does not stop the others, as in sendmail
//! 8: the message goes to the recipients the server took, the refused
//! ones are named on stderr in sendmail's words (`nosuchuser... User
//! unknown`) and the exit status says that not every address succeeded
//! (67, sendmail's EX_NOUSER). A recipient refused for now (4xx) stops the
//! whole message: without a queue nobody would try it again for that one
//! recipient, and a caller that tries again would send the others a
//! second copy; so nothing is sent and the status is 75.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use crate::exit::{EX_DATAERR, EX_NOUSER, EX_OK, EX_PROTOCOL, EX_TEMPFAIL, EX_UNAVAILABLE};
use crate::smtp::address::{AddrError, parse_path};
use crate::smtp::{EnvId, Mailbox, Notify, Ret};

/// Longest reply line we read, and most lines in one reply: a reply over
/// these is not from postie.
const MAX_REPLY_LINE: u64 = 4096;
const MAX_REPLY_LINES: usize = 100;

/// One reply: its code and its lines without CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (RFC 3463) of the last line: class,
    /// subject, detail.
    pub fn enhanced(&self) -> Option<(u16, u16, u16)> {
        let text = self.lines.last()?.get(4..)?;
        let word = text.split(' ').next()?;
        let mut it = word.split('.').map(|n| n.parse::<u16>().ok());
        match (it.next()??, it.next()??, it.next()??, it.next()) {
            (c, s, d, None) if (2..=5).contains(&c) => Some((c, s, d)),
            _ => None,
        }
    }

    /// The reply's lines joined, for messages: `550 5.1.1 <x>... User
    /// unknown`.
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

/// Where in the dialog a reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Hello,
    Mail,
    Rcpt,
    Data,
    /// After the final dot: the delivery itself.
    EndOfData,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Greeting => "the mail daemon is not accepting mail",
            Stage::Hello => "EHLO refused",
            Stage::Mail => "sender refused",
            Stage::Rcpt => "recipient refused",
            Stage::Data => "DATA refused",
            Stage::EndOfData => "message refused",
        }
    }
}

/// Why the message was not (or may not have been) delivered.
#[derive(Debug)]
pub enum Error {
    /// The connection failed: nothing known after the final dot.
    Io { e: io::Error, after_data: bool },
    /// A reply that is not SMTP.
    Protocol(String),
    /// A refusal outside RCPT.
    Refused { stage: Stage, reply: Reply },
    /// Recipients refused, each with its reply, and nothing sent: every
    /// recipient was refused, or one was refused for now. The transaction
    /// was reset.
    Recipients(Vec<(String, Reply)>),
}

/// A message the server took, for all recipients but those it refused for
/// good.
#[derive(Debug)]
pub struct Sent {
    /// The reply to the final dot.
    pub reply: Reply,
    /// The recipients refused at RCPT (5xx), each with its reply.
    pub refused: Vec<(String, Reply)>,
}

impl Sent {
    /// 0 if every recipient took the message, else the status of the
    /// first refusal (as sendmail keeps the first error's status).
    pub fn exit_code(&self) -> u8 {
        self.refused
            .first()
            .map_or(EX_OK, |(_, r)| code_for(Stage::Rcpt, r))
    }

    /// What to print on stderr: a line per refused recipient.
    pub fn report(&self) -> String {
        lines(&self.refused)
    }
}

/// `addr... text` for each refusal, one a line.
fn lines(list: &[(String, Reply)]) -> String {
    list.iter()
        .map(|(a, r)| refusal_line(a, r) + "\n")
        .collect()
}

/// How sendmail reports a refused recipient: `nosuchuser... User unknown`,
/// the reply's text without its codes and without the `<addr>... ` the
/// server put in front of it.
pub fn refusal_line(addr: &str, r: &Reply) -> String {
    let texts: Vec<&str> = r
        .lines
        .iter()
        .filter_map(|l| {
            let t = l.get(4..)?.trim();
            let t = match t.split_once(' ') {
                Some((word, rest)) if is_enhanced(word) => rest,
                _ if is_enhanced(t) => "",
                _ => t,
            };
            let t = match t.strip_prefix('<').and_then(|t| t.split_once(">... ")) {
                Some((_, rest)) => rest,
                None => t,
            };
            (!t.is_empty()).then_some(t)
        })
        .collect();
    if texts.is_empty() {
        return format!("{addr}... {}", r.code);
    }
    format!("{addr}... {}", texts.join(" "))
}

/// True if `word` is an RFC 3463 enhanced status code (`5.1.1`).
fn is_enhanced(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io {
            e,
            after_data: false,
        }
    }
}

impl Error {
    /// sysexits.h code: 4xx and lost connections are EX_TEMPFAIL (75); a
    /// recipient refused as an address (5.1.x) EX_NOUSER (67); a sender
    /// refused as an address, or a message refused for its size or content
    /// (5.3.4, 5.6.x), EX_DATAERR (65); any other 5xx EX_UNAVAILABLE (69).
    /// When refused recipients stopped the message, one refused for now
    /// makes it EX_TEMPFAIL (trying again will reach the others), else the
    /// first refusal decides.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Io { .. } => EX_TEMPFAIL,
            Error::Protocol(_) => EX_PROTOCOL,
            Error::Refused { stage, reply } => code_for(*stage, reply),
            Error::Recipients(list) => {
                if list.iter().any(|(_, r)| r.code < 500) {
                    EX_TEMPFAIL
                } else {
                    list.first()
                        .map_or(EX_TEMPFAIL, |(_, r)| code_for(Stage::Rcpt, r))
                }
            }
        }
    }

    /// What to print on stderr, one or more lines: refused recipients in
    /// sendmail's words, everything else after `postie: `.
    pub fn report(&self) -> String {
        match self {
            Error::Recipients(list) => format!("{}postie: {self}\n", lines(list)),
            other => format!("postie: {other}\n"),
        }
    }
}

/// The exit code for a refusal at `stage`.
fn code_for(stage: Stage, r: &Reply) -> u8 {
    if r.code < 500 {
        return EX_TEMPFAIL;
    }
    let subject = r.enhanced().map(|(_, s, d)| (s, d));
    match (stage, subject) {
        (Stage::Rcpt, Some((1, _))) => EX_NOUSER,
        (Stage::Rcpt, None) if matches!(r.code, 550 | 551 | 553) => EX_NOUSER,
        (Stage::Mail, Some((1, _))) => EX_DATAERR,
        (Stage::Mail, None) if matches!(r.code, 501 | 553) => EX_DATAERR,
        (Stage::EndOfData | Stage::Data, Some((3, 4) | (6, _))) => EX_DATAERR,
        (Stage::EndOfData | Stage::Data, None) if r.code == 552 => EX_DATAERR,
        _ => EX_UNAVAILABLE,
    }
}

impl fmt::Display for Error {
    /// One or more lines, for stderr.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                e,
                after_data: false,
            } => write!(
                f,
                "connection to the mail daemon failed: {e}; message not sent"
            ),
            Error::Io {
                e,
                after_data: true,
            } => write!(
                f,
                "connection to the mail daemon failed after the message was sent: {e}; \
                 it may or may not have been delivered"
            ),
            Error::Protocol(what) => write!(f, "bad reply from the mail daemon: {what}"),
            Error::Refused { stage, reply } => {
                write!(
                    f,
                    "{}: {}; message not sent",
                    stage.describe(),
                    reply.text()
                )
            }
            Error::Recipients(list) => {
                let n = list.len();
                let s = if n == 1 { "" } else { "s" };
                if list.iter().any(|(_, r)| r.code < 500) {
                    write!(
                        f,
                        "message not sent to anybody: {n} recipient{s} refused, \
                         one or more for now; try again later"
                    )
                } else {
                    write!(f, "message not sent: {n} recipient{s} refused")
                }
            }
        }
    }
}

impl std::error::Error for Error {}

/// A sender as `-f` gives it, through the server's own parser: `a@b`,
/// `<a@b>`, a bare local part; `None` for the null sender (`<>` or
/// empty). Anything after the address (`a@b> SIZE=1`) is refused: no byte
/// of an argument may reach the dialog outside `<...>` as a parsed
/// address (audit of "postie 5").
pub fn sender_path(s: &str) -> Result<Option<Mailbox>, AddrError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match parse_path(s)? {
        (m, rest) if rest.trim().is_empty() => Ok(m),
        _ => Err(AddrError("junk after the address")),
    }
}

/// A recipient through the server's own parser, as [`sender_path`].
pub fn recipient_path(s: &str) -> Result<Mailbox, AddrError> {
    sender_path(s)?.ok_or(AddrError("the null address is no recipient"))
}

/// The envelope: the sender (empty for the null sender `<>`) and the
/// recipients, as they go into `MAIL FROM:<...>` and `RCPT TO:<...>`, and
/// the DSN parameters that go with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<String>,
    pub dsn: Dsn,
}

/// What sendmail's `-N`, `-R` and `-V` ask of delivery status
/// notifications (RFC 3461): `NOTIFY=` on every RCPT, `RET=` and `ENVID=`
/// on MAIL, sent when the server offers DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    pub notify: Option<Notify>,
    pub ret: Option<Ret>,
    pub envid: Option<EnvId>,
}

struct Client<R, W> {
    r: R,
    w: W,
    /// `-v`: the dialog on stderr, without the message.
    trace: bool,
}

impl<R: BufRead, W: Write> Client<R, W> {
    fn reply(&mut self) -> Result<Reply, Error> {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = Read::take(&mut self.r, MAX_REPLY_LINE).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the mail daemon closed the connection",
                )
                .into());
            }
            if line.last() != Some(&b'\n') {
                return Err(Error::Protocol("reply line too long".into()));
            }
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if self.trace {
                eprintln!("{text}");
            }
            let b = text.as_bytes();
            let code = match text.get(..3).and_then(|c| c.parse::<u16>().ok()) {
                Some(c) if (200..600).contains(&c) => c,
                _ => return Err(Error::Protocol(format!("{text:?}"))),
            };
            let more = match b.get(3) {
                Some(b'-') => true,
                Some(b' ') | None => false,
                Some(_) => return Err(Error::Protocol(format!("{text:?}"))),
            };
            if lines.len() >= MAX_REPLY_LINES {
                return Err(Error::Protocol("reply too long".into()));
            }
            lines.push(text);
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), Error> {
        if self.trace {
            eprintln!(">>> {line}");
        }
        self.w.write_all(line.as_bytes())?;
        self.w.write_all(b"\r\n")?;
        self.w.flush()?;
        Ok(())
    }

    fn cmd(&mut self, line: &str) -> Result<Reply, Error> {
        self.send(line)?;
        self.reply()
    }

    /// Ends the session politely; its outcome no longer matters.
    fn quit(&mut self) {
        if self.send("QUIT").is_ok() {
            let _ = self.reply();
        }
    }

    /// Returns `err` after QUIT.
    fn fail<T>(&mut self, err: Error) -> Result<T, Error> {
        self.quit();
        Err(err)
    }
}

/// The refusal the server would give an address that does not parse:
/// `501 ENHANCED bad address: WHY`.
fn bad_address(enhanced: &str, e: &AddrError) -> Reply {
    Reply {
        code: 501,
        lines: vec![format!("501 {enhanced} bad address: {}", e.0)],
    }
}

/// Runs one transaction: greeting, `EHLO localhost` (`HELO` if EHLO is
/// not known), `MAIL FROM` (with `SIZE=` and `BODY=8BITMIME` when the
/// server offers them, `RET=` and `ENVID=` when it offers DSN), one `RCPT
/// TO` per recipient (with `NOTIFY=` when it offers DSN), `DATA`, the message
/// (`data`: CRLF lines, already dot-stuffed, without the final dot), `.`,
/// `QUIT`. Returns the server's reply to the final dot and the
/// recipients it refused for good; see the module's docs for refusals.
pub fn submit<R: BufRead, W: Write>(
    r: R,
    w: W,
    env: &Envelope,
    data: &[u8],
    trace: bool,
) -> Result<Sent, Error> {
    let mut c = Client { r, w, trace };
    let greeting = c.reply()?;
    if greeting.code != 220 {
        return c.fail(Error::Refused {
            stage: Stage::Greeting,
            reply: greeting,
        });
    }
    let ehlo = c.cmd("EHLO localhost")?;
    let (size, eightbit, dsn, smtputf8) = if ehlo.code == 250 {
        let has = |kw: &str| {
            ehlo.lines.iter().skip(1).any(|l| {
                l.get(4..)
                    .and_then(|t| t.split(' ').next())
                    .is_some_and(|w| w.eq_ignore_ascii_case(kw))
            })
        };
        (has("SIZE"), has("8BITMIME"), has("DSN"), has("SMTPUTF8"))
    } else if (500..=502).contains(&ehlo.code) {
        let helo = c.cmd("HELO localhost")?;
        if helo.code != 250 {
            return c.fail(Error::Refused {
                stage: Stage::Hello,
                reply: helo,
            });
        }
        (false, false, false, false)
    } else {
        return c.fail(Error::Refused {
            stage: Stage::Hello,
            reply: ehlo,
        });
    };
    // Only parsed addresses go into MAIL and RCPT, rendered again.
    let sender = match sender_path(&env.sender) {
        Ok(m) => m.map(|m| m.to_string()).unwrap_or_default(),
        Err(e) => {
            return c.fail(Error::Refused {
                stage: Stage::Mail,
                reply: bad_address("5.1.7", &e),
            });
        }
    };
    let mut mail = format!("MAIL FROM:<{sender}>");
    if size {
        mail.push_str(&format!(" SIZE={}", data.len()));
    }
    if eightbit && !data.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    // RFC 6531 3.4: a UTF-8 sender or recipient needs SMTPUTF8 (only to a
    // server that offers it: to another, the server's 550 or 553 5.6.7
    // says why). ASCII addresses go without it, as the RFC advises.
    let utf8 = !env.sender.is_ascii() || env.recipients.iter().any(|r| !r.is_ascii());
    if smtputf8 && utf8 {
        mail.push_str(" SMTPUTF8");
    }
    // RFC 3461 5.1: a client sends the DSN parameters only to a server
    // that offers the extension.
    if dsn {
        if let Some(ret) = env.dsn.ret {
            mail.push_str(&format!(" RET={ret}"));
        }
        if let Some(envid) = &env.dsn.envid {
            mail.push_str(&format!(" ENVID={envid}"));
        }
    }
    let notify = match env.dsn.notify {
        Some(n) if dsn => format!(" NOTIFY={n}"),
        _ => String::new(),
    };
    let reply = c.cmd(&mail)?;
    if reply.code != 250 {
        return c.fail(Error::Refused {
            stage: Stage::Mail,
            reply,
        });
    }
    let mut refused = Vec::new();
    for to in &env.recipients {
        // One that does not parse is refused here, as the server would.
        let reply = match recipient_path(to) {
            Ok(m) => c.cmd(&format!("RCPT TO:<{m}>{notify}"))?,
            Err(e) => bad_address("5.1.3", &e),
        };
        if reply.code != 250 && reply.code != 251 {
            refused.push((to.clone(), reply));
        }
    }
    let for_now = refused.iter().any(|(_, r)| r.code < 500);
    if refused.len() == env.recipients.len() || for_now {
        if c.cmd("RSET").is_ok() {
            c.quit();
        }
        return Err(Error::Recipients(refused));
    }
    let reply = c.cmd("DATA")?;
    if reply.code != 354 {
        return c.fail(Error::Refused {
            stage: Stage::Data,
            reply,
        });
    }
    if c.trace {
        eprintln!(">>> ({} octets of message)", data.len());
        eprintln!(">>> .");
    }
    c.w.write_all(data)?;
    c.w.write_all(b".\r\n")?;
    c.w.flush()?;
    let reply = c.reply().map_err(|e| match e {
        Error::Io { e, .. } => Error::Io {
            e,
            after_data: true,
        },
        other => other,
    })?;
    if reply.code != 250 {
        return c.fail(Error::Refused {
            stage: Stage::EndOfData,
            reply,
        });
    }
    c.quit();
    Ok(Sent { reply, refused })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn env(to: &[&str]) -> Envelope {
        Envelope {
            sender: "jon@h.example".into(),
            recipients: to.iter().map(|s| (*s).to_owned()).collect(),
            dsn: Dsn::default(),
        }
    }

    /// Runs `submit` against canned server replies; returns the result and
    /// what the client sent.
    fn run(server: &str, env: &Envelope, data: &[u8]) -> (Result<Sent, Error>, String) {
        let mut sent = Vec::new();
        let res = submit(Cursor::new(server.as_bytes()), &mut sent, env, data, false);
        (res, String::from_utf8(sent).unwrap())
    }

    const EHLO: &str = "250-h.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
                        250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";

    #[test]
    fn a_whole_transaction() {
        let server = format!(
            "220 h.example ESMTP\r\n{EHLO}250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n\
             354 go\r\n250 2.0.0 ID accepted\r\n221 2.0.0 bye\r\n"
        );
        let (res, sent) = run(
            &server,
            &env(&["jon", "alice@h.example"]),
            b"Subject: x\r\n\r\nhi\r\n",
        );
        assert_eq!(res.unwrap().reply.code, 250);
        assert_eq!(
            sent,
            "EHLO localhost\r\nMAIL FROM:<jon@h.example> SIZE=18\r\nRCPT TO:<jon>\r\n\
             RCPT TO:<alice@h.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
        );
    }

    /// RFC 6531 3.4: a UTF-8 recipient or sender sends SMTPUTF8 to a
    /// server that offers it; ASCII addresses go without it, and a server
    /// that does not offer it is not sent it (its 553 5.6.7 refuses the
    /// recipient).
    #[test]
    fn utf8_addresses_send_smtputf8() {
        let utf8_ehlo = EHLO.replace("250-8BITMIME", "250-8BITMIME\r\n250-SMTPUTF8");
        let server =
            format!("220 h\r\n{utf8_ehlo}250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n");
        let (res, sent) = run(&server, &env(&["j\u{f6}rg"]), b"hi\r\n");
        assert_eq!(res.unwrap().reply.code, 250);
        assert!(
            sent.starts_with(
                "EHLO localhost\r\nMAIL FROM:<jon@h.example> SIZE=4 SMTPUTF8\r\nRCPT TO:<j\u{f6}rg>\r\n"
            ),
            "{sent}"
        );
        let mut e = env(&["jon"]);
        e.sender = "pel\u{e9}@h.example".into();
        let (_, sent) = run(&server, &e, b"hi\r\n");
        assert!(
            sent.contains("MAIL FROM:<pel\u{e9}@h.example> SIZE=4 SMTPUTF8\r\n"),
            "{sent}"
        );
        let (_, sent) = run(&server, &env(&["jon"]), b"hi\r\n");
        assert!(
            sent.contains("MAIL FROM:<jon@h.example> SIZE=4\r\n"),
            "{sent}"
        );
        // Not offered: not sent.
        let server = format!("220 h\r\n{EHLO}250 ok\r\n553 5.6.7 no\r\n250 ok\r\n221 bye\r\n");
        let (res, sent) = run(&server, &env(&["j\u{f6}rg"]), b"hi\r\n");
        assert!(!sent.contains("SMTPUTF8"), "{sent}");
        assert!(matches!(res, Err(Error::Recipients(r)) if r[0].1.code == 553));
    }

    /// Audit of "postie 5": an address that does not parse never reaches
    /// the dialog; a recipient is refused as the server would, the others
    /// get the message; a sender stops it before MAIL.
    #[test]
    fn only_parsed_addresses_are_sent() {
        let server = format!("220 h\r\n{EHLO}250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n");
        let e = env(&["x@y> NOTIFY=NEVER", "jon", "<>"]);
        let (res, sent) = run(&server, &e, b"hi\r\n");
        let sent_ok = res.unwrap();
        assert_eq!(
            sent,
            "EHLO localhost\r\nMAIL FROM:<jon@h.example> SIZE=4\r\nRCPT TO:<jon>\r\n\
             DATA\r\nhi\r\n.\r\nQUIT\r\n"
        );
        assert_eq!(sent_ok.exit_code(), EX_NOUSER);
        assert!(
            sent_ok
                .report()
                .starts_with("x@y> NOTIFY=NEVER... bad address: "),
            "{}",
            sent_ok.report()
        );
        let e = Envelope {
            sender: "a@b> SIZE=1".into(),
            recipients: vec!["jon".into()],
            dsn: Dsn::default(),
        };
        let (res, sent) = run(&format!("220 h\r\n{EHLO}221 bye\r\n"), &e, b"hi\r\n");
        assert_eq!(res.unwrap_err().exit_code(), EX_DATAERR);
        assert_eq!(sent, "EHLO localhost\r\nQUIT\r\n");
        // Quoted forms are rendered again from the parse.
        assert_eq!(
            sender_path("<\"a b\"@h>").unwrap().unwrap().to_string(),
            "\"a b\"@h"
        );
        assert_eq!(sender_path(" <> ").unwrap(), None);
        assert!(recipient_path("<>").is_err());
        assert!(recipient_path("a@b c@d").is_err());
    }

    /// `-N`, `-R` and `-V` become NOTIFY on each RCPT and RET and ENVID
    /// on MAIL, as RFC 3461 writes them; to a server that does not offer
    /// DSN they are not sent (RFC 3461 5.1).
    #[test]
    fn dsn_parameters_go_to_a_server_that_offers_dsn() {
        let mut e = env(&["jon", "alice"]);
        e.dsn = Dsn {
            notify: Notify::parse("delay,failure"),
            ret: Some(Ret::Hdrs),
            envid: Some(EnvId::parse("Q+2B1").unwrap()),
        };
        let replies = "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n";
        let with_dsn = EHLO.replace("250-8BITMIME", "250-8BITMIME\r\n250-DSN");
        let (res, sent) = run(&format!("220 h\r\n{with_dsn}{replies}"), &e, b"x\r\n");
        assert!(res.is_ok());
        assert!(
            sent.starts_with(
                "EHLO localhost\r\nMAIL FROM:<jon@h.example> SIZE=3 RET=HDRS ENVID=Q+2B1\r\n\
                 RCPT TO:<jon> NOTIFY=FAILURE,DELAY\r\nRCPT TO:<alice> NOTIFY=FAILURE,DELAY\r\n"
            ),
            "{sent}"
        );
        let (res, sent) = run(&format!("220 h\r\n{EHLO}{replies}"), &e, b"x\r\n");
        assert!(res.is_ok());
        assert!(
            sent.starts_with(
                "EHLO localhost\r\nMAIL FROM:<jon@h.example> SIZE=3\r\n\
                 RCPT TO:<jon>\r\nRCPT TO:<alice>\r\n"
            ),
            "{sent}"
        );
    }

    #[test]
    fn eight_bit_data_says_so() {
        let server = format!("220 h\r\n{EHLO}250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n");
        let (res, sent) = run(&server, &env(&["jon"]), "caf\u{e9}\r\n".as_bytes());
        assert!(res.is_ok());
        assert!(
            sent.contains("MAIL FROM:<jon@h.example> SIZE=7 BODY=8BITMIME\r\n"),
            "{sent}"
        );
    }

    #[test]
    fn helo_when_ehlo_is_unknown() {
        let server =
            "220 h\r\n502 no\r\n250 h\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n";
        let (res, sent) = run(server, &env(&["jon"]), b"x\r\n");
        assert!(res.is_ok());
        assert!(
            sent.starts_with("EHLO localhost\r\nHELO localhost\r\nMAIL FROM:<jon@h.example>\r\n")
        );
    }

    /// "A new user's first hour": `sendmail gooduser nosuchuser` delivers
    /// to the good one, as sendmail 8 does, names the other in sendmail's
    /// words, and exits 67 (sendmail's EX_NOUSER: not every address
    /// succeeded).
    #[test]
    fn unknown_recipient_does_not_stop_the_others() {
        let server = format!(
            "220 h\r\n{EHLO}250 ok\r\n250 2.1.5 ok\r\n550 5.1.1 <elvis>... User unknown\r\n\
             354 go\r\n250 2.0.0 accepted\r\n221 bye\r\n"
        );
        let (res, sent) = run(&server, &env(&["jon", "elvis"]), b"x\r\n");
        let done = res.unwrap();
        assert_eq!(done.reply.code, 250);
        assert_eq!(done.exit_code(), EX_NOUSER);
        assert_eq!(done.report(), "elvis... User unknown\n");
        assert!(
            sent.ends_with("RCPT TO:<elvis>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"),
            "{sent}"
        );
    }

    /// Everybody refused: nothing to send; reset, and say so.
    #[test]
    fn all_refused_sends_nothing() {
        let server = format!(
            "220 h\r\n{EHLO}250 ok\r\n550 5.1.1 <elvis>... User unknown\r\n\
             250 2.0.0 Reset\r\n221 bye\r\n"
        );
        let (res, sent) = run(&server, &env(&["elvis"]), b"x\r\n");
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), EX_NOUSER);
        assert_eq!(
            e.report(),
            "elvis... User unknown\npostie: message not sent: 1 recipient refused\n"
        );
        assert!(
            sent.ends_with("RCPT TO:<elvis>\r\nRSET\r\nQUIT\r\n"),
            "{sent}"
        );
        assert!(!sent.contains("DATA"));
    }

    /// A recipient that cannot take the message now: without a queue,
    /// sending to the others would have a retry deliver to them twice, so
    /// nobody gets it and the caller is told to try again (75), even if
    /// another recipient was refused for good.
    #[test]
    fn temporary_refusal_sends_nothing() {
        let server = format!(
            "220 h\r\n{EHLO}250 ok\r\n250 2.1.5 ok\r\n451 4.2.0 <alice>... mailbox busy\r\n\
             550 5.1.1 <elvis>... User unknown\r\n250 2.0.0 Reset\r\n221 bye\r\n"
        );
        let (res, sent) = run(&server, &env(&["jon", "alice", "elvis"]), b"x\r\n");
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), EX_TEMPFAIL);
        let report = e.report();
        assert!(
            report.starts_with("alice... mailbox busy\nelvis... User unknown\n"),
            "{report}"
        );
        assert!(report.contains("try again later"), "{report}");
        assert!(!sent.contains("DATA"));
        assert!(sent.ends_with("RSET\r\nQUIT\r\n"), "{sent}");
    }

    #[test]
    fn refusals_in_sendmail_words() {
        let r = |lines: &[&str]| Reply {
            code: 550,
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        };
        assert_eq!(
            refusal_line(
                "nosuchuser",
                &r(&["550 5.1.1 <nosuchuser>... User unknown"])
            ),
            "nosuchuser... User unknown"
        );
        assert_eq!(
            refusal_line(
                "x@y.example",
                &r(&["550 5.7.1 <x@y.example>... Relaying denied"])
            ),
            "x@y.example... Relaying denied"
        );
        assert_eq!(
            refusal_line("a", &r(&["550 no such user"])),
            "a... no such user"
        );
        assert_eq!(
            refusal_line("a", &r(&["550-5.1.1 first", "550 5.1.1 second"])),
            "a... first second"
        );
        assert_eq!(refusal_line("a", &r(&["550"])), "a... 550");
    }

    #[test]
    fn exit_codes() {
        let r = |code: u16, text: &str| Reply {
            code,
            lines: vec![format!("{code} {text}")],
        };
        let rcpt = |list: Vec<Reply>| {
            Error::Recipients(list.into_iter().map(|r| ("x".to_owned(), r)).collect()).exit_code()
        };
        let partial = |list: Vec<Reply>| {
            Sent {
                reply: r(250, "2.0.0 ok"),
                refused: list.into_iter().map(|r| ("x".to_owned(), r)).collect(),
            }
            .exit_code()
        };
        assert_eq!(partial(vec![]), EX_OK);
        assert_eq!(partial(vec![r(550, "5.1.1 unknown")]), EX_NOUSER);
        assert_eq!(
            partial(vec![r(550, "5.7.1 relaying denied")]),
            EX_UNAVAILABLE
        );
        assert_eq!(
            partial(vec![r(550, "5.7.1 relaying denied"), r(550, "5.1.1 x")]),
            EX_UNAVAILABLE
        );
        let refused = |stage, reply| Error::Refused { stage, reply }.exit_code();
        assert_eq!(rcpt(vec![r(550, "5.1.1 unknown")]), EX_NOUSER);
        assert_eq!(rcpt(vec![r(550, "unknown, no enhanced code")]), EX_NOUSER);
        assert_eq!(rcpt(vec![r(501, "5.1.3 bad address")]), EX_NOUSER);
        assert_eq!(rcpt(vec![r(550, "5.7.1 relaying denied")]), EX_UNAVAILABLE);
        assert_eq!(rcpt(vec![r(451, "4.3.0 later")]), EX_TEMPFAIL);
        assert_eq!(
            rcpt(vec![r(451, "4.3.0 later"), r(550, "5.1.1 x")]),
            EX_TEMPFAIL
        );
        assert_eq!(
            rcpt(vec![r(550, "5.1.1 x"), r(451, "4.3.0 later")]),
            EX_TEMPFAIL
        );
        assert_eq!(refused(Stage::Greeting, r(421, "4.3.2 busy")), EX_TEMPFAIL);
        assert_eq!(refused(Stage::Greeting, r(554, "no")), EX_UNAVAILABLE);
        assert_eq!(refused(Stage::Mail, r(501, "5.1.7 bad sender")), EX_DATAERR);
        assert_eq!(
            refused(Stage::Mail, r(550, "5.7.1 not you")),
            EX_UNAVAILABLE
        );
        assert_eq!(
            refused(Stage::EndOfData, r(552, "5.3.4 too big")),
            EX_DATAERR
        );
        assert_eq!(
            refused(Stage::EndOfData, r(550, "5.6.0 bare LF")),
            EX_DATAERR
        );
        assert_eq!(
            refused(Stage::EndOfData, r(452, "4.3.1 disk full")),
            EX_TEMPFAIL
        );
        assert_eq!(
            refused(Stage::EndOfData, r(554, "5.0.0 no")),
            EX_UNAVAILABLE
        );
        let io = Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(io.exit_code(), EX_TEMPFAIL);
        assert_eq!(Error::Protocol("x".into()).exit_code(), EX_PROTOCOL);
    }

    #[test]
    fn closed_or_garbled_server() {
        let (res, _) = run("220 h\r\n", &env(&["jon"]), b"x\r\n");
        assert_eq!(res.unwrap_err().exit_code(), EX_TEMPFAIL);
        let (res, _) = run("HTTP/1.1 400 Bad Request\r\n", &env(&["jon"]), b"x\r\n");
        assert!(matches!(res, Err(Error::Protocol(_))));
        let (res, _) = run("421 4.3.2 h shutting down\r\n", &env(&["jon"]), b"x\r\n");
        assert_eq!(res.unwrap_err().exit_code(), EX_TEMPFAIL);
        // Lost after the final dot: delivered or not, nobody knows.
        let server = format!("220 h\r\n{EHLO}250 ok\r\n250 ok\r\n354 go\r\n");
        let (res, _) = run(&server, &env(&["jon"]), b"x\r\n");
        let e = res.unwrap_err();
        assert!(matches!(
            e,
            Error::Io {
                after_data: true,
                ..
            }
        ));
        assert!(e.to_string().contains("may or may not"));
    }

    #[test]
    fn enhanced_codes() {
        let r = |l: &str| Reply {
            code: 550,
            lines: vec![l.to_owned()],
        };
        assert_eq!(
            r("550 5.1.1 <x>... User unknown").enhanced(),
            Some((5, 1, 1))
        );
        assert_eq!(r("550 User unknown").enhanced(), None);
        assert_eq!(r("550 1.2.3 x").enhanced(), None);
        assert_eq!(r("550").enhanced(), None);
    }
}
