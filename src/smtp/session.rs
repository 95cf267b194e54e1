//! The SMTP transaction state machine (RFC 5321 4.1.4, 4.3.2). Pure.
//!
//! A [`Session`] is fed command lines and answers each with a typed
//! [`Reply`]; it never reads or writes a socket. Who a recipient is comes
//! from a [`Policy`] passed in, and the message itself is read by
//! [`super::data::read_data`] and delivered by the caller: the session only
//! hands out the finished [`Envelope`] ([`Session::data_done`]) and turns the
//! delivery [`Outcome`] into the final reply ([`Session::delivered`]).
//!
//! States: greeted → (HELO/EHLO) ready → (MAIL) mail → (RCPT) rcpt →
//! (DATA, 354) data → back to ready. RSET and a new HELO/EHLO return to
//! ready; commands out of order get `503 5.5.1`.
//!
//! Instead of DATA a message may come in `BDAT` chunks (RFC 3030 2): each
//! is answered once its octets are read ([`Action::ReadChunk`] says how
//! many, and whether to keep them), `BDAT ... LAST` ends the message. The
//! octets of every BDAT whose count parses are read, kept or not, so the
//! session stays in step: see [`Session::command`].

use std::net::IpAddr;

use super::address::{Mailbox, ReversePath};
use super::chunk::Chunk;
use super::command::{self, Body, Command, ParseError};
use super::data::DataOutcome;
use super::dsn_params::Ret;
use super::envelope::{Envelope, Outcome, TempReason, Via};
use super::reply::{self, Action, Reply};
// Reachable here too for deliver.rs's tests, which another branch of
// "postie 6" rewrites: remove the `pub` once they name `crate::smtp::...`.
pub use super::envelope::{Recipient, Submitter};

/// The limits and names a session needs; everything else is passed in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our name, in the greeting, HELO/EHLO replies and `Received:`.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised as `SIZE`).
    pub max_size: u64,
    /// Recipients per message; more get `452 4.5.3` (RFC 5321 4.5.3.1.8).
    pub max_recipients: usize,
    /// Errors (5xx replies) tolerated before `421 4.7.0` and close.
    pub max_errors: u32,
    /// STARTTLS is offered (RFC 3207): a certificate is loaded and the
    /// connection is not the local socket.
    pub starttls: bool,
    /// MAIL is refused (`530 5.7.0`) until TLS is on (`require-tls`).
    pub require_tls: bool,
    /// Speak LMTP (RFC 2033: LHLO, one reply per recipient; see
    /// [`super::lmtp`]) rather than SMTP.
    pub lmtp: bool,
}

/// What the recipient policy says about one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    /// Deliver to the mailboxes of these local users (an alias may name
    /// several).
    Accept { users: Vec<String> },
    /// Local domain, no such user: `550 5.1.1`.
    Unknown,
    /// Not a local domain: `550 5.7.1`.
    NotLocal,
    /// The lookup failed: `451 4.3.0`, the client retries.
    TempFail,
    /// A mailbox is in a state postie will not write to (a symlink, not a
    /// regular file, the wrong owner): `450 4.2.0`, and a log line naming
    /// the problem, so that an admin sees it before any message waits.
    MailboxUnavailable,
}

/// Decides about recipients; implemented outside this module
/// ([`crate::recipients::RcptPolicy`]), and by fakes in tests.
pub trait Policy {
    fn check_rcpt(&self, to: &Mailbox) -> RcptVerdict;
}

#[derive(Debug)]
struct Transaction {
    sender: ReversePath,
    body: Option<Body>,
    /// RFC 3461 RET and ENVID (as given) of MAIL.
    ret: Option<Ret>,
    envid: Option<String>,
    recipients: Vec<Recipient>,
    /// RCPT commands tried, accepted or not (RFC 2920: DATA after only
    /// failed RCPTs is `554`, not `503`).
    rcpt_tried: bool,
    /// MAIL carried SMTPUTF8 (RFC 6531): UTF-8 addresses are allowed.
    utf8: bool,
    /// Set by the first BDAT: the message comes in chunks.
    chunks: Option<Chunks>,
}

/// A message coming in BDAT chunks (RFC 3030 2).
#[derive(Debug)]
struct Chunks {
    /// Octets received so far, as sent.
    total: u64,
    /// The refusal that failed the transaction (over the size limit, a
    /// malformed BDAT). Every later chunk of it is read, dropped and
    /// answered with it again, until BDAT LAST, RSET or a new EHLO ends
    /// the transaction (RFC 3030 2: the client "MUST NOT send any
    /// additional BDAT segments", the server discards those already in the
    /// pipeline). It counts as one error, not one per chunk.
    failed: Option<Reply>,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Command,
    Data,
}

/// One SMTP session, from the greeting to QUIT.
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    id: String,
    peer: Option<IpAddr>,
    submitter: Option<Submitter>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    phase: Phase,
    errors: u32,
    messages: u32,
    /// After STARTTLS: what was agreed (for `Received:`).
    tls: Option<String>,
}

impl Session {
    /// A new session with the id `id` (used in message ids and logs) for a
    /// client at `peer` (none for a local pipe).
    pub fn new(cfg: Config, id: impl Into<String>, peer: Option<IpAddr>) -> Self {
        Session {
            cfg,
            id: id.into(),
            peer,
            submitter: None,
            helo: None,
            esmtp: false,
            tx: None,
            phase: Phase::Command,
            errors: 0,
            messages: 0,
            tls: None,
        }
    }

    /// The same session for a local submitter.
    pub fn with_submitter(mut self, s: Submitter) -> Self {
        self.submitter = Some(s);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// True between MAIL and the end of DATA.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    pub fn greeting(&self) -> Reply {
        if self.cfg.lmtp {
            return reply::lmtp_greeting(&self.cfg.hostname);
        }
        reply::greeting(&self.cfg.hostname)
    }

    /// How many replies the end of the current message gets: one per
    /// accepted recipient in LMTP (RFC 2033 4.2), else one.
    pub fn replies_due(&self) -> usize {
        match &self.tx {
            Some(tx) if self.cfg.lmtp => tx.recipients.len().max(1),
            _ => 1,
        }
    }

    /// Answers one command line (without its line ending).
    ///
    /// A BDAT line is answered with [`Action::ReadChunk`]: the connection
    /// reads the chunk's octets (keeping them or not, as the action says),
    /// then sends this reply; a BDAT whose count does not parse gets `501`
    /// and closes the connection, since nothing tells where its octets end.
    pub fn command(&mut self, line: &[u8], policy: &dyn Policy) -> Reply {
        debug_assert_eq!(self.phase, Phase::Command, "command() during DATA");
        let r = match command::parse(line) {
            Ok(Command::Bdat { size, last }) => return self.bdat(size, last),
            Err(ParseError::BdatSyntax(size)) => return self.bdat_syntax(size),
            Ok(cmd) => self.execute(cmd, policy),
            Err(ParseError::Unknown) => reply::unknown_command(),
            Err(ParseError::Syntax(why)) => reply::syntax(why),
            Err(ParseError::BadSender(why)) => reply::bad_sender(why),
            Err(ParseError::BadAddress(why)) => reply::bad_address(why),
            Err(ParseError::UnknownParam(p)) => reply::unknown_parameter(&printable(&p, 64)),
            Err(ParseError::NotSmtp) => reply::not_smtp(&self.cfg.hostname),
        };
        self.count(r)
    }

    /// Answers a command line longer than the limit, which the caller has
    /// read past and dropped (`500 5.5.2`, RFC 5321 4.5.3.1.4).
    pub fn line_too_long(&mut self) -> Reply {
        self.count(reply::line_too_long())
    }

    /// The client said nothing for too long (RFC 5321 4.5.3.2.7).
    pub fn timeout(&self) -> Reply {
        reply::timeout(&self.cfg.hostname)
    }

    /// The server is stopping; the next command gets this.
    pub fn shutting_down(&self) -> Reply {
        reply::shutting_down(&self.cfg.hostname)
    }

    /// The session's total time is up (`timeout-session`).
    pub fn session_too_long(&self) -> Reply {
        reply::session_too_long(&self.cfg.hostname)
    }

    /// After the DATA reader is done: the envelope to deliver, or the reply
    /// to give when the message cannot be accepted. Either way the
    /// transaction is over.
    pub fn data_done(&mut self, outcome: DataOutcome) -> Result<Envelope, Reply> {
        debug_assert_eq!(self.phase, Phase::Data, "data_done() without DATA");
        self.phase = Phase::Command;
        let Some(tx) = self.tx.take() else {
            return Err(reply::local_error("no transaction"));
        };
        match outcome {
            DataOutcome::Complete { size } => {
                self.messages += 1;
                Ok(Envelope {
                    id: format!("{}.{}", self.id, self.messages),
                    helo: self.helo.clone().unwrap_or_default(),
                    via: Via {
                        esmtp: self.esmtp,
                        tls: self.tls.clone(),
                        lmtp: self.cfg.lmtp,
                        utf8: tx.utf8,
                    },
                    peer: self.peer,
                    sender: tx.sender,
                    recipients: tx.recipients,
                    body: tx.body,
                    size,
                    submitter: self.submitter.clone(),
                    ret: tx.ret,
                    envid: tx.envid,
                })
            }
            DataOutcome::TooBig { .. } => {
                Err(self.count(reply::message_too_big(self.cfg.max_size)))
            }
            DataOutcome::BareLf { .. } => Err(self.count(reply::bare_lf())),
        }
    }

    /// The final reply for a message, from what delivery made of it. This is
    /// the one place where delivery outcomes become reply codes.
    pub fn delivered(&mut self, env: &Envelope, outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Delivered => reply::delivered(&env.id),
            Outcome::Temporary(TempReason::LockTimeout) => reply::lock_timeout(),
            Outcome::Temporary(TempReason::NoSpace) => reply::disk_full(),
            Outcome::Temporary(TempReason::Quota) => reply::over_quota(),
            Outcome::Temporary(TempReason::LookupFailed) => reply::lookup_failed(),
            Outcome::Temporary(TempReason::Local) => reply::local_error("delivery failed"),
        }
    }

    /// The STARTTLS handshake is done: the session starts over, knowing
    /// nothing the client said before it (RFC 3207 4.2), not even its
    /// EHLO; what was agreed goes into `Received:`.
    pub fn tls_started(&mut self, agreed: String) {
        self.tls = Some(agreed);
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
    }

    /// Counts permanent failures; past the limit the reply becomes
    /// `421 4.7.0` and the connection closes (a client that keeps sending
    /// garbage, or harvests addresses, is cut off).
    fn count(&mut self, r: Reply) -> Reply {
        if r.is_permanent() {
            self.errors += 1;
            if self.errors >= self.cfg.max_errors {
                return reply::too_many_errors(&self.cfg.hostname);
            }
        }
        r
    }

    fn execute(&mut self, cmd: Command, policy: &dyn Policy) -> Reply {
        match cmd {
            // LMTP has LHLO instead (RFC 2033 4.1); a client that says
            // HELO or EHLO meant SMTP, and must not get 250. Dovecot's
            // LMTP answers the same.
            Command::Helo(_) | Command::Ehlo(_) if self.cfg.lmtp => reply::unknown_command(),
            Command::Lhlo(_) if !self.cfg.lmtp => reply::unknown_command(),
            Command::Lhlo(name) if !is_printable(&name) => reply::syntax("bad LHLO argument"),
            Command::Lhlo(name) => {
                let starttls = self.cfg.starttls && self.tls.is_none();
                let r = reply::ehlo(&self.cfg.hostname, &name, self.cfg.max_size, starttls);
                self.hello(name, true);
                r
            }
            Command::Help(_) if self.cfg.lmtp => reply::lmtp_help(),
            // RFC 2033 4.2: DATA without a successful RCPT is 503 in LMTP.
            Command::Data
                if self.cfg.lmtp && self.tx.as_ref().is_some_and(|t| t.recipients.is_empty()) =>
            {
                reply::bad_sequence("No valid recipients")
            }
            Command::Helo(name) | Command::Ehlo(name) if !is_printable(&name) => {
                reply::syntax("bad HELO/EHLO argument")
            }
            Command::Helo(name) => {
                let r = reply::helo(&self.cfg.hostname, &name);
                self.hello(name, false);
                r
            }
            Command::Ehlo(name) => {
                let starttls = self.cfg.starttls && self.tls.is_none();
                let r = reply::ehlo(&self.cfg.hostname, &name, self.cfg.max_size, starttls);
                self.hello(name, true);
                r
            }
            Command::Mail { mut from, params } => {
                if self.helo.is_none() {
                    return reply::bad_sequence("Send HELO or EHLO first");
                }
                if self.tx.is_some() {
                    return reply::bad_sequence("Sender already specified");
                }
                if self.cfg.require_tls && self.tls.is_none() {
                    return reply::tls_required();
                }
                // RFC 6531 is an extension: after HELO, where it was not
                // offered, its parameter is as unknown as any other.
                if params.smtputf8 && !self.esmtp {
                    return reply::unknown_parameter("SMTPUTF8");
                }
                // RFC 6531 3.5: a UTF-8 sender needs the parameter.
                if !params.smtputf8 && matches!(&from, ReversePath::Mailbox(m) if !m.is_ascii()) {
                    return reply::non_ascii_sender();
                }
                // RFC 1870 6.1: a declared size over the limit is refused
                // before any data is sent.
                if params.size.is_some_and(|n| n > self.cfg.max_size) {
                    return reply::message_too_big(self.cfg.max_size);
                }
                // A sender without a domain is qualified with our name, as
                // sendmail does with $j and Postfix with myorigin: a `From `
                // line or Return-Path: of a bare `pepe` names no one a reply
                // can reach.
                if let ReversePath::Mailbox(m) = &mut from {
                    m.domain.get_or_insert_with(|| self.cfg.hostname.clone());
                }
                let shown = match &from {
                    ReversePath::Null => "<>".to_string(),
                    ReversePath::Mailbox(m) => format!("<{m}>"),
                };
                let r = reply::sender_ok(&shown);
                self.tx = Some(Transaction {
                    sender: from,
                    body: params.body,
                    ret: params.ret,
                    envid: params.envid.map(|e| e.into_string()),
                    recipients: Vec::new(),
                    rcpt_tried: false,
                    chunks: None,
                    utf8: params.smtputf8,
                });
                r
            }
            Command::Rcpt { to, params } => {
                let max = self.cfg.max_recipients;
                let Some(tx) = self.tx.as_mut() else {
                    return reply::bad_sequence("Need MAIL before RCPT");
                };
                if tx.chunks.is_some() {
                    return reply::bad_sequence("RCPT after BDAT");
                }
                tx.rcpt_tried = true;
                // RFC 6531 3.5: a UTF-8 recipient needs SMTPUTF8 in MAIL.
                if !tx.utf8 && !to.is_ascii() {
                    return reply::non_ascii_recipient();
                }
                if tx.recipients.len() >= max {
                    return reply::too_many_recipients();
                }
                let shown = to.to_string();
                match policy.check_rcpt(&to) {
                    RcptVerdict::Accept { users } => {
                        tx.recipients.push(Recipient {
                            path: to,
                            users,
                            notify: params.notify,
                            orcpt: params.orcpt.map(|o| o.into_string()),
                        });
                        reply::recipient_ok(&shown)
                    }
                    RcptVerdict::Unknown => reply::unknown_user(&shown),
                    RcptVerdict::NotLocal => reply::relay_denied(&shown),
                    RcptVerdict::TempFail => reply::lookup_failed(),
                    RcptVerdict::MailboxUnavailable => reply::mailbox_unavailable(&shown),
                }
            }
            // Answered in `command`, before the count of errors.
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Data => match &self.tx {
                None => reply::bad_sequence("Need MAIL command"),
                // RFC 3030 2: "DATA and BDAT commands cannot be used in the
                // same transaction"; 3: a BINARYMIME body only with BDAT.
                Some(tx) if tx.chunks.is_some() => reply::bad_sequence("DATA after BDAT"),
                Some(tx) if tx.body == Some(Body::BinaryMime) => {
                    reply::bad_sequence("BODY=BINARYMIME requires BDAT")
                }
                Some(tx) if tx.recipients.is_empty() && tx.rcpt_tried => {
                    reply::no_valid_recipients()
                }
                Some(tx) if tx.recipients.is_empty() => reply::bad_sequence("Need RCPT command"),
                Some(_) => {
                    self.phase = Phase::Data;
                    reply::start_data()
                }
            },
            Command::Rset => {
                self.tx = None;
                reply::reset()
            }
            Command::Noop => reply::noop(),
            Command::Quit => reply::closing(&self.cfg.hostname),
            Command::Vrfy(_) => reply::vrfy(),
            Command::Expn(_) => reply::expn_disabled(),
            Command::Help(_) => reply::help(),
            Command::StartTls if !self.cfg.starttls => reply::tls_not_available(),
            Command::StartTls if self.tls.is_some() => reply::tls_active(),
            Command::StartTls if self.tx.is_some() => {
                reply::bad_sequence("STARTTLS inside a mail transaction")
            }
            Command::StartTls => reply::start_tls(),
        }
    }

    /// `BDAT size [LAST]`: the verdict on the chunk, which the connection
    /// reads whatever it is, and the reply to give once it has. Decided
    /// here from the size alone, before any octet is read: without a
    /// transaction or a recipient the chunk is dropped and refused as DATA
    /// would be; the chunk that takes the message past the size limit
    /// fails the transaction (`552 5.3.4`, RFC 1870 6.1 and RFC 3030 2).
    fn bdat(&mut self, size: u64, last: bool) -> Reply {
        let drop = Chunk {
            size,
            keep: false,
            first: false,
            last,
            total: 0,
        };
        let Some(tx) = self.tx.as_mut() else {
            return self.count(read_first(reply::bad_sequence("Need MAIL command"), drop));
        };
        if tx.recipients.is_empty() {
            let r = if tx.rcpt_tried {
                reply::no_valid_recipients()
            } else {
                reply::bad_sequence("Need RCPT command")
            };
            return self.count(read_first(r, drop));
        }
        let first = tx.chunks.is_none();
        let chunks = tx.chunks.get_or_insert(Chunks {
            total: 0,
            failed: None,
        });
        if let Some(failed) = &chunks.failed {
            let r = read_first(failed.clone(), drop);
            if last {
                self.tx = None;
            }
            return r;
        }
        let total = chunks.total.saturating_add(size);
        if total > self.cfg.max_size {
            let r = reply::message_too_big(self.cfg.max_size);
            chunks.failed = Some(r.clone());
            if last {
                self.tx = None;
            }
            return self.count(read_first(r, drop));
        }
        chunks.total = total;
        if last {
            // `data_done` ends the transaction once the chunk is read.
            self.phase = Phase::Data;
        }
        let keep = Chunk {
            size,
            keep: true,
            first,
            last,
            total,
        };
        read_first(reply::chunk_received(size), keep)
    }

    /// A BDAT line that is not `BDAT count [LAST]`. With the count known,
    /// its octets are read and dropped and the transaction, if any, fails;
    /// without it the session cannot go on.
    fn bdat_syntax(&mut self, size: Option<u64>) -> Reply {
        let Some(size) = size else {
            return reply::bdat_count_unknown(&self.cfg.hostname);
        };
        let r = reply::bdat_syntax();
        if let Some(tx) = self.tx.as_mut() {
            let chunks = tx.chunks.get_or_insert(Chunks {
                total: 0,
                failed: None,
            });
            chunks.failed.get_or_insert_with(|| r.clone());
        }
        let drop = Chunk {
            size,
            keep: false,
            first: false,
            last: false,
            total: 0,
        };
        self.count(read_first(r, drop))
    }

    /// HELO/EHLO: a new greeting resets any transaction (RFC 5321 4.1.4).
    fn hello(&mut self, name: String, esmtp: bool) {
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.tx = None;
    }
}

/// `r`, sent once the chunk's octets are read.
fn read_first(mut r: Reply, chunk: Chunk) -> Reply {
    r.action = Action::ReadChunk(chunk);
    r
}

fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// `s` cut to `max` characters with anything but printable ASCII replaced,
/// for echoing client input in a reply or a log line.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
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
    use crate::smtp::Notify;
    use crate::smtp::reply::Action;

    /// Users `jon` and `root`; domain `razorback` and none; `tmpfail` fails
    /// the lookup.
    struct Fake;
    impl Policy for Fake {
        fn check_rcpt(&self, to: &Mailbox) -> RcptVerdict {
            if let Some(d) = &to.domain {
                if !d.eq_ignore_ascii_case("razorback") {
                    return RcptVerdict::NotLocal;
                }
            }
            match to.local.to_ascii_lowercase().as_str() {
                "jon" => RcptVerdict::Accept {
                    users: vec!["jon".into()],
                },
                "postmaster" => RcptVerdict::Accept {
                    users: vec!["root".into()],
                },
                "broken" => RcptVerdict::MailboxUnavailable,
                "j\u{f6}rg" => RcptVerdict::Accept {
                    users: vec!["jon".into()],
                },
                "tmpfail" => RcptVerdict::TempFail,
                _ => RcptVerdict::Unknown,
            }
        }
    }

    fn session() -> Session {
        Session::new(
            Config {
                hostname: "razorback".into(),
                max_size: 1000,
                max_recipients: 3,
                max_errors: 10,
                starttls: true,
                require_tls: false,
                lmtp: false,
            },
            "S1",
            None,
        )
    }

    /// Runs a dialog: each entry is a command line and the expected code.
    /// `DATA!` stands for the DATA command followed by a complete message.
    fn dialog(s: &mut Session, steps: &[(&str, u16)]) {
        for (i, (line, want)) in steps.iter().enumerate() {
            let r = if let Some(rest) = line.strip_prefix("DATAEND ") {
                let outcome = match rest {
                    "big" => DataOutcome::TooBig { size: 5000 },
                    "barelf" => DataOutcome::BareLf { size: 10 },
                    _ => DataOutcome::Complete { size: 10 },
                };
                match s.data_done(outcome) {
                    Ok(env) => s.delivered(&env, Outcome::Delivered),
                    Err(r) => r,
                }
            } else {
                s.command(line.as_bytes(), &Fake)
            };
            assert_eq!(r.code, *want, "step {i}: {line:?} got {}", r.to_wire());
        }
    }

    #[test]
    fn the_article_session() {
        let mut s = session();
        assert_eq!(s.greeting().code, 220);
        dialog(
            &mut s,
            &[
                ("HELO frogbog.localdomain", 250),
                ("mail from: jon@frogbog", 250),
                ("rcpt to: jon@razorback", 250),
                ("data", 354),
                ("DATAEND ok", 250),
                ("mail from: jon@frogbog", 250),
                ("rcpt to: elvis@razorback", 550),
                ("quit", 221),
            ],
        );
    }

    /// RFC 6531 3.5: UTF-8 addresses only in a transaction that MAIL
    /// opened with SMTPUTF8 (550 5.6.7 for the sender, 553 5.6.7 for a
    /// recipient); and then `Received:` says UTF8SMTP.
    #[test]
    fn utf8_addresses_need_smtputf8() {
        let mut s = session();
        let ehlo = s.command(b"EHLO c", &Fake);
        assert!(ehlo.lines.iter().any(|l| l == "SMTPUTF8"));
        let r = s.command("MAIL FROM:<j\u{f6}rg@frogbog>".as_bytes(), &Fake);
        assert_eq!((r.code, r.enhanced), (550, Some("5.6.7")));
        assert!(!s.in_transaction());
        let r = s.command(b"MAIL FROM:<jon@frogbog>", &Fake);
        assert_eq!(r.code, 250);
        let r = s.command("RCPT TO:<j\u{f6}rg@razorback>".as_bytes(), &Fake);
        assert_eq!((r.code, r.enhanced), (553, Some("5.6.7")));
        let r = s.command("RCPT TO:<jon@r\u{e4}zorback>".as_bytes(), &Fake);
        assert_eq!((r.code, r.enhanced), (553, Some("5.6.7")));
        dialog(&mut s, &[("RCPT TO:<jon@razorback>", 250), ("DATA", 354)]);
        let env = s.data_done(DataOutcome::Complete { size: 10 }).unwrap();
        assert!(!env.via.utf8);
        assert_eq!(env.via.keyword(), "ESMTP");

        // With the parameter, in any case.
        dialog(
            &mut s,
            &[
                ("MAIL FROM:<j\u{f6}rg@frogbog> smtputf8", 250),
                ("RCPT TO:<j\u{d6}rg@razorback>", 550),
                ("RCPT TO:<j\u{f6}rg@razorback>", 250),
                ("RCPT TO:<jon@razorback>", 250),
                ("DATA", 354),
            ],
        );
        let env = s.data_done(DataOutcome::Complete { size: 10 }).unwrap();
        assert!(env.via.utf8);
        assert_eq!(env.via.keyword(), "UTF8SMTP");
        assert_eq!(env.sender.to_string(), "j\u{f6}rg@frogbog");
        assert_eq!(env.recipients[0].path.local, "j\u{f6}rg");

        // An ASCII transaction with the parameter is UTF8SMTP too: the
        // headers may hold UTF-8 (RFC 6532).
        dialog(
            &mut s,
            &[
                ("MAIL FROM:<jon@frogbog> SMTPUTF8", 250),
                ("RCPT TO:<jon@razorback>", 250),
                ("DATA", 354),
            ],
        );
        let env = s.data_done(DataOutcome::Complete { size: 10 }).unwrap();
        assert!(env.via.utf8);
    }

    /// Attacker: bytes that are not UTF-8 are a syntax error (501), and
    /// the parameter is unknown where EHLO did not offer it.
    #[test]
    fn utf8_syntax_errors() {
        let mut s = session();
        dialog(
            &mut s,
            &[("HELO c", 250), ("MAIL FROM:<a@b> SMTPUTF8", 555)],
        );
        dialog(&mut s, &[("EHLO c", 250)]);
        for line in [
            &b"MAIL FROM:<j\xf6rg@frogbog> SMTPUTF8"[..],
            b"MAIL FROM:<\xc3@b> SMTPUTF8",
            b"MAIL FROM:<a@b> SMTPUTF8=x",
        ] {
            let r = s.command(line, &Fake);
            assert_eq!(r.code, 501, "{:?}", String::from_utf8_lossy(line));
        }
        dialog(&mut s, &[("MAIL FROM:<a@b> SMTPUTF8", 250)]);
        for line in [
            &b"RCPT TO:<j\xf6rg@razorback>"[..],
            "RCPT TO:<j\u{202e}rg@razorback>".as_bytes(),
            "RCPT TO:<j\u{85}rg@razorback>".as_bytes(),
            "RCPT TO:<\"j\u{a0}rg\"@razorback>".as_bytes(),
        ] {
            let r = s.command(line, &Fake);
            assert_eq!(r.code, 501, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn sequence_errors() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("MAIL FROM:<a@b>", 503),
                ("RCPT TO:<jon>", 503),
                ("DATA", 503),
                ("EHLO c", 250),
                ("RCPT TO:<jon>", 503),
                ("MAIL FROM:<a@b>", 250),
                ("MAIL FROM:<a@b>", 503),
                ("DATA", 503),
            ],
        );
    }

    #[test]
    fn data_after_only_failed_recipients_is_554() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO c", 250),
                ("MAIL FROM:<>", 250),
                ("RCPT TO:<elvis@razorback>", 550),
                ("DATA", 554),
            ],
        );
    }

    #[test]
    fn recipients_verdicts() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO c", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon@elsewhere.example>", 550),
                ("RCPT TO:<tmpfail@razorback>", 451),
                ("RCPT TO:<Postmaster>", 250),
                ("RCPT TO:<JON@RAZORBACK>", 250),
            ],
        );
        let r = s.command(b"RCPT TO:<jon@elsewhere.example>", &Fake);
        assert_eq!(r.enhanced, Some("5.7.1"));
        let r = s.command(b"RCPT TO:<nobody@razorback>", &Fake);
        assert_eq!(r.enhanced, Some("5.1.1"));
        let r = s.command(b"RCPT TO:<broken@razorback>", &Fake);
        assert_eq!((r.code, r.enhanced), (450, Some("4.2.0")));
    }

    #[test]
    fn recipient_limit_is_452() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO c", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
                ("RCPT TO:<jon>", 250),
                ("RCPT TO:<jon>", 250),
                ("RCPT TO:<jon>", 452),
                ("DATA", 354),
            ],
        );
    }

    /// RFC 3207: STARTTLS is answered 220 and starts the session over;
    /// once TLS is on, EHLO no longer offers it and a second STARTTLS is
    /// 503; inside a transaction it is 503; not offered, 502.
    #[test]
    fn starttls_starts_over() {
        let mut s = session();
        dialog(&mut s, &[("EHLO c", 250), ("MAIL FROM:<a@b>", 250)]);
        let r = s.command(b"STARTTLS", &Fake);
        assert_eq!((r.code, r.action), (503, Action::Continue));
        dialog(&mut s, &[("RSET", 250), ("STARTTLS now", 501)]);
        let r = s.command(b"EHLO c", &Fake);
        assert!(r.to_wire().contains("250-STARTTLS\r\n"));
        let r = s.command(b"starttls", &Fake);
        assert_eq!(
            (r.code, r.enhanced, r.action),
            (220, Some("2.0.0"), Action::StartTls)
        );
        s.tls_started("TLSv1.3 with cipher X".into());
        // What was said before is forgotten: EHLO again first.
        dialog(&mut s, &[("MAIL FROM:<a@b>", 503), ("STARTTLS", 503)]);
        let r = s.command(b"EHLO c", &Fake);
        assert!(!r.to_wire().contains("STARTTLS"), "{}", r.to_wire());
        dialog(
            &mut s,
            &[
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
                ("DATA", 354),
            ],
        );
        let env = s.data_done(DataOutcome::Complete { size: 1 }).unwrap();
        assert_eq!(env.via.tls.as_deref(), Some("TLSv1.3 with cipher X"));
        assert_eq!(env.via.keyword(), "ESMTPS");
        let mut plain = session();
        plain.cfg.starttls = false;
        let r = plain.command(b"EHLO c", &Fake);
        assert!(!r.to_wire().contains("STARTTLS"));
        dialog(&mut plain, &[("STARTTLS", 502)]);
    }

    /// `require-tls`: MAIL is 530 5.7.0 until STARTTLS (RFC 3207 4);
    /// EHLO, NOOP, RSET and QUIT still work.
    #[test]
    fn required_tls_refuses_mail_before_starttls() {
        let mut s = session();
        s.cfg.require_tls = true;
        dialog(&mut s, &[("EHLO c", 250), ("NOOP", 250), ("RSET", 250)]);
        let r = s.command(b"MAIL FROM:<a@b>", &Fake);
        assert_eq!((r.code, r.enhanced), (530, Some("5.7.0")));
        dialog(&mut s, &[("RCPT TO:<jon>", 503), ("STARTTLS", 220)]);
        s.tls_started("TLSv1.2 with cipher Y".into());
        dialog(&mut s, &[("EHLO c", 250), ("MAIL FROM:<a@b>", 250)]);
    }

    #[test]
    fn declared_size_over_limit_is_552() {
        let mut s = session();
        dialog(
            &mut s,
            &[("EHLO c", 250), ("MAIL FROM:<a@b> SIZE=1001", 552)],
        );
        let r = s.command(b"MAIL FROM:<a@b> SIZE=1000", &Fake);
        assert_eq!(r.code, 250);
    }

    #[test]
    fn data_outcomes_map_to_codes_and_end_the_transaction() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO c", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
                ("DATA", 354),
                ("DATAEND big", 552),
                ("RCPT TO:<jon>", 503),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
                ("DATA", 354),
                ("DATAEND barelf", 550),
            ],
        );
    }

    #[test]
    fn envelope_carries_the_transaction() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO client.example", 250),
                ("MAIL FROM:<a@b> BODY=8BITMIME", 250),
                ("RCPT TO:<jon@razorback>", 250),
                ("DATA", 354),
            ],
        );
        let env = s.data_done(DataOutcome::Complete { size: 42 }).unwrap();
        assert_eq!(env.id, "S1.1");
        assert_eq!(env.helo, "client.example");
        assert!(env.via.esmtp);
        assert_eq!(env.body, Some(Body::EightBitMime));
        assert_eq!(env.size, 42);
        assert_eq!(env.recipients.len(), 1);
        assert_eq!(env.recipients[0].users, ["jon"]);
        for (o, code, enh) in [
            (Outcome::Temporary(TempReason::LockTimeout), 451, "4.2.0"),
            (Outcome::Temporary(TempReason::NoSpace), 452, "4.3.1"),
            (Outcome::Temporary(TempReason::Quota), 452, "4.2.2"),
            (Outcome::Temporary(TempReason::Local), 451, "4.3.0"),
            (Outcome::Delivered, 250, "2.0.0"),
        ] {
            let r = s.delivered(&env, o);
            assert_eq!((r.code, r.enhanced), (code, Some(enh)));
        }
    }

    /// RET and ENVID of MAIL and NOTIFY and ORCPT of each RCPT reach the
    /// envelope as given (the ENVID and ORCPT still xtext); a malformed
    /// one is 501 5.5.4 and leaves the transaction as it was; RSET, a
    /// new EHLO and the end of a message forget them.
    #[test]
    fn dsn_parameters_reach_the_envelope_and_go_with_the_transaction() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO client.example", 250),
                ("MAIL FROM:<a@b> RET=HDRS ENVID=QQ+2B1", 250),
                (
                    "RCPT TO:<jon> NOTIFY=failure,DELAY ORCPT=rfc822;Jon+2Bx@frogbog",
                    250,
                ),
                ("RCPT TO:<jon> NOTIFY=SUCCESS,NEVER", 501),
                ("RCPT TO:<jon> ORCPT=rfc822;a+2b", 501),
                ("RCPT TO:<postmaster> NOTIFY=NEVER", 250),
                ("DATA", 354),
            ],
        );
        let env = s.data_done(DataOutcome::Complete { size: 3 }).unwrap();
        assert_eq!(env.ret, Some(Ret::Hdrs));
        assert_eq!(env.envid.as_deref(), Some("QQ+2B1"));
        let notify: Vec<_> = env.recipients.iter().map(|r| r.notify).collect();
        assert_eq!(
            notify,
            [
                Some(Notify::On {
                    success: false,
                    failure: true,
                    delay: true
                }),
                Some(Notify::Never)
            ]
        );
        assert_eq!(
            env.recipients[0].orcpt.as_deref(),
            Some("rfc822;Jon+2Bx@frogbog")
        );
        assert_eq!(env.recipients[1].orcpt, None);
        let r = s.command(b"MAIL FROM:<a@b> RET=FULL RET=FULL", &Fake);
        assert_eq!((r.code, r.enhanced), (501, Some("5.5.4")));
        assert!(!s.in_transaction());
        // The next message, and the one after RSET, have none of them.
        for reset in ["RSET", "EHLO again", "MAIL FROM:<a@b>"] {
            dialog(
                &mut s,
                &[
                    ("MAIL FROM:<a@b> RET=FULL ENVID=x", 250),
                    ("RCPT TO:<jon> NOTIFY=NEVER ORCPT=rfc822;jon", 250),
                ],
            );
            if reset == "MAIL FROM:<a@b>" {
                dialog(&mut s, &[("DATA", 354)]);
                s.data_done(DataOutcome::Complete { size: 1 }).unwrap();
            } else {
                dialog(&mut s, &[(reset, 250)]);
            }
            dialog(
                &mut s,
                &[
                    ("MAIL FROM:<a@b>", 250),
                    ("RCPT TO:<jon>", 250),
                    ("DATA", 354),
                ],
            );
            let env = s.data_done(DataOutcome::Complete { size: 1 }).unwrap();
            assert_eq!((env.ret, env.envid), (None, None), "after {reset}");
            assert_eq!(env.recipients[0].notify, None, "after {reset}");
            assert_eq!(env.recipients[0].orcpt, None, "after {reset}");
        }
    }

    /// A sender without a domain gets ours, as sendmail qualifies it with
    /// `$j`: `MAIL FROM:<pepe>` is `pepe@razorback` in the envelope (the
    /// `From ` line and `Return-Path:`) and in the reply.
    #[test]
    fn unqualified_sender_gets_our_domain() {
        for line in ["MAIL FROM:<pepe>", "mail from: pepe", "MAIL FROM:<\"p p\">"] {
            let mut s = session();
            s.command(b"HELO c", &Fake);
            let r = s.command(line.as_bytes(), &Fake);
            assert_eq!(r.code, 250, "{line}");
            assert!(
                r.lines[0].ends_with("@razorback>... Sender ok"),
                "{line}: {r:?}"
            );
            s.command(b"RCPT TO:<jon>", &Fake);
            s.command(b"DATA", &Fake);
            let env = s.data_done(DataOutcome::Complete { size: 1 }).unwrap();
            let ReversePath::Mailbox(m) = env.sender else {
                panic!("{line}: null sender");
            };
            assert_eq!(m.domain.as_deref(), Some("razorback"), "{line}");
        }
        let mut s = session();
        s.command(b"HELO c", &Fake);
        s.command(b"MAIL FROM:<>", &Fake);
        s.command(b"RCPT TO:<jon>", &Fake);
        s.command(b"DATA", &Fake);
        let env = s.data_done(DataOutcome::Complete { size: 1 }).unwrap();
        assert_eq!(env.sender, ReversePath::Null);
    }

    #[test]
    fn sender_shown_in_brackets_once() {
        let mut s = session();
        s.command(b"EHLO c", &Fake);
        assert_eq!(
            s.command(b"MAIL FROM:<>", &Fake).lines[0],
            "<>... Sender ok"
        );
        s.command(b"RSET", &Fake);
        assert_eq!(
            s.command(b"mail from: jon@frogbog", &Fake).lines[0],
            "<jon@frogbog>... Sender ok"
        );
    }

    #[test]
    fn rset_and_ehlo_reset_the_transaction() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("EHLO c", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RSET", 250),
                ("RCPT TO:<jon>", 503),
                ("MAIL FROM:<a@b>", 250),
                ("EHLO c", 250),
                ("RCPT TO:<jon>", 503),
            ],
        );
    }

    #[test]
    fn other_commands() {
        let mut s = session();
        dialog(
            &mut s,
            &[
                ("NOOP", 250),
                ("HELP", 214),
                ("VRFY jon", 252),
                ("EXPN staff", 502),
                ("FOO", 500),
                ("RSET", 250),
            ],
        );
        assert_eq!(s.command(b"QUIT", &Fake).action, Action::Quit);
    }

    /// Each refusal carries the RFC 3463 code that names its cause: an
    /// unknown verb X.5.1 (as sendmail and chasquid), a malformed sender
    /// X.1.7, a malformed recipient X.1.3, and VRFY's 252 a success code
    /// (X.5.2 is a syntax error, "useful only as a permanent error").
    #[test]
    fn enhanced_codes_follow_rfc3463() {
        let mut s = session();
        let cases: [(&[u8], u16, &str); 7] = [
            (b"FROB", 500, "5.5.1"),
            (b"VRFY jon", 252, "2.0.0"),
            (b"EHLO c", 250, ""),
            (b"MAIL FROM:<a@b", 501, "5.1.7"),
            (b"MAIL FROM:<a@b.>", 501, "5.1.7"),
            (b"MAIL FROM:<a@b>", 250, "2.1.0"),
            (b"RCPT TO:<a@b", 501, "5.1.3"),
        ];
        for (line, code, enhanced) in cases {
            let r = s.command(line, &Fake);
            let line = String::from_utf8_lossy(line);
            assert_eq!(r.code, code, "{line}: {}", r.to_wire());
            assert_eq!(
                r.enhanced.unwrap_or(""),
                enhanced,
                "{line}: {}",
                r.to_wire()
            );
        }
        let r = s.command(b"RCPT TO:<>", &Fake);
        assert_eq!((r.code, r.enhanced), (501, Some("5.1.3")));
        s.command(b"RSET", &Fake);
        let r = s.command(b"MAIL FROM:", &Fake);
        assert_eq!((r.code, r.enhanced), (501, Some("5.1.7")));
    }

    /// An HTTP request line (a browser or `curl` aimed at the SMTP port,
    /// its body an SMTP dialog) ends the session, in any state: nothing
    /// after it is read as SMTP.
    #[test]
    fn http_request_lines_close_the_session() {
        for verb in ["GET", "POST", "HEAD", "PUT", "CONNECT", "post"] {
            for before in [&[][..], &["EHLO c", "MAIL FROM:<a@b>"][..]] {
                let mut s = session();
                for line in before {
                    assert_eq!(s.command(line.as_bytes(), &Fake).code, 250);
                }
                let r = s.command(format!("{verb} / HTTP/1.1").as_bytes(), &Fake);
                assert_eq!(
                    (r.code, r.enhanced, r.action),
                    (502, Some("5.7.0"), Action::Close),
                    "{verb} after {before:?}"
                );
            }
        }
    }

    #[test]
    fn too_many_errors_closes() {
        let mut s = session();
        for _ in 0..9 {
            assert_eq!(s.command(b"BOGUS", &Fake).code, 500);
        }
        let r = s.command(b"BOGUS", &Fake);
        assert_eq!((r.code, r.action), (421, Action::Close));
    }

    #[test]
    fn line_too_long_counts_as_error() {
        let mut s = session();
        assert_eq!(s.line_too_long().code, 500);
        assert_eq!(s.command(b"NOOP", &Fake).code, 250);
    }

    /// The chunk a BDAT reply asks the connection to read.
    fn chunk(r: &Reply) -> Chunk {
        match r.action {
            Action::ReadChunk(c) => c,
            a => panic!("{a:?} for {}", r.to_wire()),
        }
    }

    fn kept(size: u64, first: bool, last: bool, total: u64) -> Chunk {
        Chunk {
            size,
            keep: true,
            first,
            last,
            total,
        }
    }

    fn dropped(size: u64, last: bool) -> Chunk {
        Chunk {
            size,
            keep: false,
            first: false,
            last,
            total: 0,
        }
    }

    /// Sends `line`, a BDAT, and checks the reply and the chunk it asks
    /// for.
    fn bdat(s: &mut Session, line: &str, code: u16, want: Chunk) {
        let r = s.command(line.as_bytes(), &Fake);
        assert_eq!((r.code, chunk(&r)), (code, want), "{line}: {}", r.to_wire());
    }

    fn ready(s: &mut Session) {
        dialog(
            s,
            &[
                ("EHLO c", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
            ],
        );
    }

    /// RFC 3030 2: a message in chunks, each answered 250 once read; LAST
    /// completes it and the envelope says its size as sent.
    #[test]
    fn bdat_message_in_chunks() {
        let mut s = session();
        ready(&mut s);
        bdat(&mut s, "BDAT 5", 250, kept(5, true, false, 5));
        bdat(&mut s, "BDAT 3", 250, kept(3, false, false, 8));
        bdat(&mut s, "bdat 0 last", 250, kept(0, false, true, 8));
        let env = s.data_done(DataOutcome::Complete { size: 8 }).unwrap();
        assert_eq!((env.size, env.id.as_str()), (8, "S1.1"));
        assert!(!s.in_transaction());
        // The next message starts afresh, in one chunk.
        dialog(&mut s, &[("MAIL FROM:<a@b>", 250), ("RCPT TO:<jon>", 250)]);
        bdat(&mut s, "BDAT 1000 LAST", 250, kept(1000, true, true, 1000));
        assert_eq!(
            s.data_done(DataOutcome::Complete { size: 1000 })
                .unwrap()
                .size,
            1000
        );
        // RSET gives up a message in chunks: the next one is a first.
        ready(&mut s);
        bdat(&mut s, "BDAT 7", 250, kept(7, true, false, 7));
        dialog(
            &mut s,
            &[
                ("RSET", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
            ],
        );
        bdat(&mut s, "BDAT 2 LAST", 250, kept(2, true, true, 2));
    }

    /// Out of sequence, the chunk is read and dropped, and answered as DATA
    /// would be; the session stays as it was.
    #[test]
    fn bdat_without_mail_or_recipient_is_read_and_refused() {
        let mut s = session();
        bdat(&mut s, "BDAT 10", 503, dropped(10, false));
        dialog(&mut s, &[("EHLO c", 250)]);
        bdat(&mut s, "BDAT 10 LAST", 503, dropped(10, true));
        dialog(&mut s, &[("MAIL FROM:<a@b>", 250)]);
        bdat(&mut s, "BDAT 4", 503, dropped(4, false));
        dialog(&mut s, &[("RCPT TO:<elvis@razorback>", 550)]);
        bdat(&mut s, "BDAT 4 LAST", 554, dropped(4, true));
        dialog(&mut s, &[("RCPT TO:<jon>", 250)]);
        bdat(&mut s, "BDAT 4 LAST", 250, kept(4, true, true, 4));
    }

    /// RFC 3030 2 and 3: no DATA after BDAT, no RCPT either (Postfix's
    /// replies), and a BINARYMIME body only in chunks.
    #[test]
    fn data_and_bdat_do_not_mix() {
        let mut s = session();
        ready(&mut s);
        bdat(&mut s, "BDAT 5", 250, kept(5, true, false, 5));
        let r = s.command(b"DATA", &Fake);
        assert_eq!(
            (r.code, r.enhanced, r.action),
            (503, Some("5.5.1"), Action::Continue)
        );
        dialog(&mut s, &[("RCPT TO:<jon>", 503), ("MAIL FROM:<a@b>", 503)]);
        bdat(&mut s, "BDAT 0 LAST", 250, kept(0, false, true, 5));
        s.data_done(DataOutcome::Complete { size: 5 }).unwrap();
        // DATA's transaction over, BDAT needs a new one.
        bdat(&mut s, "BDAT 1", 503, dropped(1, false));

        dialog(
            &mut s,
            &[
                ("MAIL FROM:<a@b> BODY=BINARYMIME", 250),
                ("RCPT TO:<jon>", 250),
                ("DATA", 503),
            ],
        );
        bdat(&mut s, "BDAT 3 LAST", 250, kept(3, true, true, 3));
        let env = s.data_done(DataOutcome::Complete { size: 3 }).unwrap();
        assert_eq!(env.body, Some(Body::BinaryMime));
    }

    /// Past --max-size (all chunks counted) the transaction fails with 552;
    /// its later chunks are read, dropped and answered 552 too, counted as
    /// one error, until LAST or RSET ends it.
    #[test]
    fn chunks_past_the_size_limit_fail_the_transaction() {
        let mut s = session();
        ready(&mut s);
        bdat(&mut s, "BDAT 600", 250, kept(600, true, false, 600));
        bdat(&mut s, "BDAT 400", 250, kept(400, false, false, 1000));
        let r = s.command(b"BDAT 1", &Fake);
        assert_eq!(
            (r.code, r.enhanced, chunk(&r)),
            (552, Some("5.3.4"), dropped(1, false))
        );
        for _ in 0..30 {
            bdat(&mut s, "BDAT 100", 552, dropped(100, false));
        }
        bdat(&mut s, "BDAT 0 LAST", 552, dropped(0, true));
        assert!(!s.in_transaction());
        ready(&mut s);
        bdat(
            &mut s,
            "BDAT 18446744073709551615",
            552,
            dropped(u64::MAX, false),
        );
        dialog(
            &mut s,
            &[
                ("RSET", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<jon>", 250),
            ],
        );
        bdat(&mut s, "BDAT 1000 LAST", 250, kept(1000, true, true, 1000));
    }

    /// A BDAT count that does not parse: nothing tells where the chunk
    /// ends, so 501 and close. A bad end marker after a good count: the
    /// chunk is read and dropped, 501, and the transaction fails.
    #[test]
    fn malformed_bdat() {
        for line in [
            "BDAT",
            "BDAT -1 LAST",
            "BDAT 99999999999999999999",
            "BDAT x",
        ] {
            let mut s = session();
            ready(&mut s);
            let r = s.command(line.as_bytes(), &Fake);
            assert_eq!(
                (r.code, r.enhanced, r.action),
                (501, Some("5.5.4"), Action::Close),
                "{line}"
            );
        }
        let mut s = session();
        bdat(&mut s, "BDAT 5 SCRAMBLE", 501, dropped(5, false));
        ready(&mut s);
        bdat(&mut s, "BDAT 5", 250, kept(5, true, false, 5));
        bdat(&mut s, "BDAT 5 LAST LAST", 501, dropped(5, false));
        bdat(&mut s, "BDAT 5", 501, dropped(5, false));
        bdat(&mut s, "BDAT 0 LAST", 501, dropped(0, true));
        assert!(!s.in_transaction());
    }

    /// Refused chunks count as errors like any refusal: past the limit the
    /// reply is 421 and the connection closes (unread chunk or not).
    #[test]
    fn refused_chunks_count_as_errors() {
        let mut s = session();
        for _ in 0..9 {
            bdat(&mut s, "BDAT 1", 503, dropped(1, false));
        }
        let r = s.command(b"BDAT 1", &Fake);
        assert_eq!((r.code, r.action), (421, Action::Close));
    }

    proptest::proptest! {
        /// Whatever the client sends, the session answers every line with a
        /// well-formed reply and never panics; after a Close it is over.
        #[test]
        fn any_lines_get_well_formed_replies(lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..80),
                proptest::sample::select(vec![
                    b"EHLO x".to_vec(), b"MAIL FROM:<a@b>".to_vec(), b"RCPT TO:<jon>".to_vec(),
                    b"DATA".to_vec(), b"RSET".to_vec(), b"mail from: <>".to_vec(),
                    b"RCPT TO:<@a,@b:jon@razorback>".to_vec(), b"HELO".to_vec(),
                    b"BDAT 5".to_vec(), b"BDAT 0 LAST".to_vec(), b"BDAT 999999 LAST".to_vec(),
                    b"BDAT 3 X".to_vec(), b"MAIL FROM:<a@b> BODY=BINARYMIME".to_vec(),
                ]),
            ],
            0..40,
        )) {
            let mut s = session();
            for line in &lines {
                let r = if s.phase == Phase::Data {
                    match s.data_done(DataOutcome::Complete { size: 1 }) {
                        Ok(env) => s.delivered(&env, Outcome::Delivered),
                        Err(r) => r,
                    }
                } else {
                    s.command(line, &Fake)
                };
                proptest::prop_assert!((200..600).contains(&r.code));
                let wire = r.to_wire();
                proptest::prop_assert!(wire.ends_with("\r\n"));
                proptest::prop_assert!(wire.lines().all(|l| l.is_ascii() && !l.contains('\r')));
                if matches!(r.action, Action::Close | Action::Quit) {
                    break;
                }
            }
        }
    }

    /// LMTP (RFC 2033 4.1, 4.2): LHLO answers as EHLO does, HELO and
    /// EHLO are unknown (and LHLO is in SMTP), DATA with no accepted
    /// recipient is 503, a message is marked LMTP, and its end is due one
    /// reply per accepted recipient.
    #[test]
    fn lmtp_has_lhlo_and_counts_replies_per_recipient() {
        let mut s = session();
        dialog(&mut s, &[("LHLO mx.example", 500), ("EHLO c", 250)]);
        let mut s = Session::new(
            Config {
                lmtp: true,
                ..session().cfg
            },
            "L1",
            None,
        );
        assert!(s.greeting().lines[0].contains("LMTP"));
        dialog(
            &mut s,
            &[
                ("EHLO mx.example", 500),
                ("HELO mx.example", 500),
                ("MAIL FROM:<a@b>", 503),
                ("LHLO", 501),
                ("LHLO mx.example", 250),
                ("MAIL FROM:<a@b>", 250),
                ("RCPT TO:<elvis@razorback>", 550),
                ("DATA", 503),
                ("RCPT TO:<jon@razorback>", 250),
                ("RCPT TO:<elvis@razorback>", 550),
                ("RCPT TO:<postmaster>", 250),
            ],
        );
        let r = s.command(b"EHLO again", &Fake);
        assert_eq!((r.code, r.enhanced), (500, Some("5.5.1")));
        let r = s.command(b"HELP", &Fake);
        assert!(r.to_wire().contains("LHLO") && !r.to_wire().contains("EHLO"));
        assert_eq!(s.replies_due(), 2);
        dialog(&mut s, &[("DATA", 354)]);
        let env = s.data_done(DataOutcome::Complete { size: 1 }).unwrap();
        assert!(env.via.lmtp && env.via.esmtp);
        assert_eq!(env.via.keyword(), "LMTP");
        assert_eq!(s.replies_due(), 1);
    }

    #[test]
    fn printable_cuts_and_masks() {
        assert_eq!(printable("a\r\nb\u{7f}é", 10), "a??b??");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
