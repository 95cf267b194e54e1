//! The mail log's events: every line about a session or a message that a
//! mail administrator greps for (connect, refusal, reject, delivery,
//! disconnect), as one typed [`Event`] each, its text, level and target
//! made here and nowhere else. Call sites build an event and call
//! [`Event::log`]; diagnostics about the system (a configuration error, a
//! journal being recovered, a lock left behind) are not events and stay
//! beside their code.
//!
//! chasquid's `maillog.go` is the model: one place that says what the log
//! tells about mail. The text of each line is what scripts and the
//! integration tests match, so the tests below pin every line byte for
//! byte. Each line keeps the target it had when it was written where it
//! happens (`postie::conn`, `postie::server`, `postie::privsep`; the
//! per-recipient line `postie::maillog`): no sink of ours prints or filters
//! by target, but a logger that did would see what it saw before.
//!
//! Events borrow what they tell, and a line is formatted only when its
//! level is enabled: building an event costs nothing on the hot path (the
//! per-command debug line is made for every command).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use log::Level;

use crate::smtp::data::DataOutcome;
use crate::smtp::session::printable;
use crate::smtp::{Mailbox, Reply, ReversePath};

/// Who is at the other end of a session, as the connect and disconnect
/// lines name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A client by its address: `[192.0.2.1]`; `None` where the stream is
    /// no socket (stdin under inetd, a test): `local`.
    Ip(Option<IpAddr>),
    /// A local submission, by the user the kernel named:
    /// `local user alice (uid 1000)`.
    Local { user: String, uid: u32 },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(Some(ip)) => write!(f, "[{ip}]"),
            Peer::Ip(None) => f.write_str("local"),
            Peer::Local { user, uid } => write!(f, "local user {user} (uid {uid})"),
        }
    }
}

/// How a session ended, for the disconnect line: an I/O error is told
/// after a colon, any other end (`conn::End`, by its name) in parentheses.
#[derive(Debug)]
pub enum Ending<'a> {
    Error(&'a io::Error),
    Other(&'a dyn fmt::Debug),
}

/// A command as the reject and debug lines show it: cut short, control
/// characters masked, quoted.
#[derive(Debug, Clone, Copy)]
pub enum CommandLine<'a> {
    /// A whole command line, as read (without its line end).
    Line(&'a [u8]),
    /// A line longer than `max` octets, of which nothing is shown.
    TooLong { max: usize },
}

impl CommandLine<'_> {
    fn shown(&self) -> String {
        match self {
            CommandLine::Line(line) => printable(&String::from_utf8_lossy(line), 100),
            CommandLine::TooLong { max } => format!("line over {max} octets"),
        }
    }
}

/// One line of the mail log.
#[derive(Debug)]
pub enum Event<'a> {
    /// A session starts.
    Connect { id: &'a str, peer: &'a Peer },
    /// A session ended.
    Disconnect {
        id: &'a str,
        peer: &'a Peer,
        end: Ending<'a>,
    },
    /// A TCP client over its connection limit, answered 421 and closed.
    TooManyConnections { ip: IpAddr },
    /// A local submitter over its connection limit, answered 421.
    TooManyLocal { uid: u32 },
    /// No thread for a TCP client's session: answered 421.
    NoThread { ip: IpAddr, err: &'a io::Error },
    /// No thread for a local submission's session: answered 421.
    NoThreadLocal { err: &'a io::Error },
    /// A local submission whose peer the kernel did not name: closed.
    NoPeerCredentials { err: &'a io::Error },
    /// A local submitter whose name could not be looked up: refused.
    SubmitterUnknown { uid: u32, err: nix::Error },
    /// A recipient whose mailbox postie will not write to: refused at RCPT.
    MailboxUnavailable { to: &'a Mailbox, why: &'a str },
    /// A recipient that could not be looked up: deferred at RCPT.
    LookupFailed { to: &'a Mailbox, why: &'a str },
    /// The session's total time was up.
    SessionTime { id: &'a str },
    /// The client sent nothing within the phase's timeout.
    Timeout { id: &'a str },
    /// A STARTTLS handshake completed: what was agreed.
    TlsStarted { id: &'a str, agreed: &'a str },
    /// A STARTTLS handshake failed (garbage, a timeout, no common
    /// version): the connection is closed.
    TlsFailed { id: &'a str, err: &'a io::Error },
    /// Octets the client sent after STARTTLS and before the handshake,
    /// discarded unread (CVE-2011-0411: they must not run inside TLS).
    TlsEarlyInput { id: &'a str, octets: usize },
    /// SIGHUP read the TLS certificate and key again, or could not.
    TlsReloaded { err: Option<&'a str> },
    /// Root deleted a queue entry (`postie queue delete`).
    QueueDeleted { id: &'a str },
    /// A run of the queue that looked at entries: who ran it (`sendmail
    /// -q`, `postie queue flush`, the daemon's runner) and what it did.
    QueueRun {
        by: &'a str,
        entries: usize,
        delivered: usize,
        deferred: usize,
        failed: usize,
    },
    /// A command answered 4xx or 5xx.
    Reject {
        id: &'a str,
        command: CommandLine<'a>,
        reply: &'a Reply,
    },
    /// A command answered 2xx or 3xx (debug level).
    Replied {
        id: &'a str,
        command: CommandLine<'a>,
        code: u16,
    },
    /// A message read to its end and refused (too big, a bare LF).
    MessageRefused {
        id: &'a str,
        data: DataOutcome,
        max_size: u64,
        reply: &'a Reply,
    },
    /// A message that could not be held (the temporary directory is full).
    NotHeld {
        id: &'a str,
        dir: &'a Path,
        err: &'a io::Error,
    },
    /// A message appended to one recipient's mailbox.
    Delivered {
        id: &'a str,
        from: &'a ReversePath,
        to: &'a str,
        size: u64,
    },
    /// A message not appended to one recipient's mailbox (nor to any of
    /// the others: delivery is all or nothing), and why.
    Deferred {
        id: &'a str,
        from: &'a ReversePath,
        to: &'a str,
        size: u64,
        why: &'a str,
    },
    /// A recipient left to the queue: its mailbox could not take the
    /// message now (the others have it), and why; or, from the queue,
    /// not yet.
    Queued {
        id: &'a str,
        from: &'a ReversePath,
        to: &'a str,
        size: u64,
        queue: &'a str,
        why: &'a str,
    },
    /// A program left to the queue entry made at the end of DATA, to run
    /// from it at once (a program never runs inside a transaction).
    Scheduled {
        id: &'a str,
        from: &'a ReversePath,
        to: &'a str,
        size: u64,
        queue: &'a str,
    },
    /// A queued recipient given up (its time in the queue over) or failed
    /// for good; `notice` says whom the sender's notification went to.
    Bounced {
        id: &'a str,
        from: &'a ReversePath,
        to: &'a str,
        size: u64,
        why: &'a str,
        notice: &'a str,
    },
    /// The SMTP side could not hand the message to the delivery process.
    NotPassed { id: &'a str, err: &'a io::Error },
    /// The delivery process answered something that is not an outcome.
    BadAnswer {
        id: &'a str,
        answer: &'a dyn fmt::Debug,
    },
    /// The delivery process could not be asked, or its answer not read.
    DeliveryProcessFailed { id: &'a str, err: &'a io::Error },
}

impl Event<'_> {
    /// Writes the line, if its level is enabled.
    pub fn log(&self) {
        log::log!(target: self.target(), self.level(), "{self}");
    }

    pub fn level(&self) -> Level {
        use Event::*;
        match self {
            Replied { .. } => Level::Debug,
            Connect { .. }
            | Disconnect { .. }
            | SessionTime { .. }
            | Timeout { .. }
            | TlsStarted { .. }
            | Reject { .. }
            | MessageRefused { .. }
            | Delivered { .. }
            | Deferred { .. }
            | Queued { .. }
            | Scheduled { .. }
            | Bounced { .. }
            | QueueDeleted { .. }
            | QueueRun { .. } => Level::Info,
            TooManyConnections { .. }
            | TooManyLocal { .. }
            | NoPeerCredentials { .. }
            | SubmitterUnknown { .. }
            | MailboxUnavailable { .. }
            | LookupFailed { .. }
            | TlsFailed { .. }
            | TlsEarlyInput { .. }
            | NotHeld { .. } => Level::Warn,
            TlsReloaded { err: None } => Level::Info,
            TlsReloaded { err: Some(_) } => Level::Error,
            NoThread { .. }
            | NoThreadLocal { .. }
            | NotPassed { .. }
            | BadAnswer { .. }
            | DeliveryProcessFailed { .. } => Level::Error,
        }
    }

    /// The module the line was written in before it became an event.
    pub fn target(&self) -> &'static str {
        use Event::*;
        match self {
            Connect { .. }
            | Disconnect { .. }
            | TooManyConnections { .. }
            | TooManyLocal { .. }
            | NoThread { .. }
            | NoThreadLocal { .. }
            | NoPeerCredentials { .. }
            | SubmitterUnknown { .. }
            | MailboxUnavailable { .. }
            | LookupFailed { .. } => "postie::server",
            TlsReloaded { .. } => "postie::server",
            SessionTime { .. }
            | Timeout { .. }
            | TlsStarted { .. }
            | TlsFailed { .. }
            | TlsEarlyInput { .. }
            | Reject { .. }
            | Replied { .. }
            | MessageRefused { .. }
            | NotHeld { .. } => "postie::conn",
            Delivered { .. }
            | Deferred { .. }
            | Queued { .. }
            | Scheduled { .. }
            | Bounced { .. }
            | QueueDeleted { .. }
            | QueueRun { .. } => "postie::maillog",
            NotPassed { .. } | BadAnswer { .. } | DeliveryProcessFailed { .. } => "postie::privsep",
        }
    }
}

/// The text of the line, without the sink's time stamp and level.
impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match self {
            Connect { id, peer } => write!(f, "{id}: connect from {peer}"),
            Disconnect {
                id,
                peer,
                end: Ending::Error(e),
            } => write!(f, "{id}: disconnect from {peer}: {e}"),
            Disconnect {
                id,
                peer,
                end: Ending::Other(end),
            } => write!(f, "{id}: disconnect from {peer} ({end:?})"),
            TooManyConnections { ip } => {
                write!(f, "refusing connection from [{ip}]: too many connections")
            }
            TooManyLocal { uid } => write!(
                f,
                "refusing local submission by uid {uid}: too many connections"
            ),
            NoThread { ip, err } => write!(f, "cannot start a thread for [{ip}]: {err}"),
            NoThreadLocal { err } => {
                write!(f, "cannot start a thread for a local submission: {err}")
            }
            NoPeerCredentials { err } => {
                write!(f, "local submission without peer credentials: {err}")
            }
            SubmitterUnknown { uid, err } => write!(
                f,
                "local submission by uid {uid}: user lookup failed: {err}"
            ),
            MailboxUnavailable { to, why } => write!(f, "<{to}>: mailbox unavailable: {why}"),
            LookupFailed { to, why } => write!(f, "lookup for <{to}> failed: {why}"),
            SessionTime { id } => write!(f, "{id}: session time limit reached"),
            Timeout { id } => write!(f, "{id}: timeout"),
            TlsStarted { id, agreed } => write!(f, "{id}: TLS started: {agreed}"),
            TlsFailed { id, err } => write!(f, "{id}: TLS handshake failed: {err}"),
            TlsEarlyInput { id, octets } => write!(
                f,
                "{id}: {octets} octets sent after STARTTLS before the handshake: discarded"
            ),
            TlsReloaded { err: None } => write!(f, "SIGHUP: TLS certificate and key reloaded"),
            TlsReloaded { err: Some(e) } => write!(
                f,
                "SIGHUP: TLS certificate and key not reloaded, the old ones stay: {e}"
            ),
            QueueDeleted { id } => write!(f, "{id}: deleted (postie queue delete)"),
            QueueRun {
                by,
                entries,
                delivered,
                deferred,
                failed,
            } => write!(
                f,
                "queue run by {by}: {entries} entries, {delivered} delivered, \
                 {deferred} deferred, {failed} failed"
            ),
            Reject { id, command, reply } => write!(
                f,
                "{id}: reject: {:?}: {}",
                command.shown(),
                reply.to_wire().trim_end()
            ),
            Replied { id, command, code } => write!(f, "{id}: {:?}: {code}", command.shown()),
            MessageRefused {
                id,
                data,
                max_size,
                reply,
            } => {
                write!(f, "{id}: message refused: ")?;
                match data {
                    DataOutcome::TooBig { size } => {
                        write!(f, "{size} octets, over the limit of {max_size}")?
                    }
                    DataOutcome::BareLf { size } => write!(f, "a bare LF in {size} octets")?,
                    DataOutcome::Complete { size } => write!(f, "{size} octets")?,
                }
                write!(f, ": {}", reply.to_wire().trim_end())
            }
            NotHeld { id, dir, err } => write!(
                f,
                "{id}: cannot hold the message in {}: {err}",
                dir.display()
            ),
            Delivered { id, from, to, size } => write!(
                f,
                "{id}: from=<{}> to=<{to}> size={size} status=delivered",
                Sender(from)
            ),
            Deferred {
                id,
                from,
                to,
                size,
                why,
            } => write!(
                f,
                "{id}: from=<{}> to=<{to}> size={size} status=deferred ({why})",
                Sender(from)
            ),
            Queued {
                id,
                from,
                to,
                size,
                queue,
                why,
            } => write!(
                f,
                "{id}: from=<{}> to=<{to}> size={size} status=deferred ({why}) queue={queue}",
                Sender(from)
            ),
            Scheduled {
                id,
                from,
                to,
                size,
                queue,
            } => write!(
                f,
                "{id}: from=<{}> to=<{to}> size={size} status=queued (a program: runs from the queue) queue={queue}",
                Sender(from)
            ),
            Bounced {
                id,
                from,
                to,
                size,
                why,
                notice,
            } => write!(
                f,
                "{id}: from=<{}> to=<{to}> size={size} status=bounced ({why}) notice={notice}",
                Sender(from)
            ),
            NotPassed { id, err } => write!(
                f,
                "{id}: cannot pass the message to the delivery process: {err}"
            ),
            BadAnswer { id, answer } => write!(f, "{id}: delivery process answered {answer:?}"),
            DeliveryProcessFailed { id, err } => write!(f, "{id}: delivery process: {err}"),
        }
    }
}

/// The sender between the delivery line's `from=<` and `>`: empty for the
/// null reverse path (a bounce).
struct Sender<'a>(&'a ReversePath);

impl fmt::Display for Sender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => write!(f, "{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply;
    use std::sync::Mutex;

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: Some(domain.into()),
        }
    }

    /// The line, its level and its target.
    fn line(e: &Event<'_>) -> (Level, &'static str, String) {
        (e.level(), e.target(), e.to_string())
    }

    fn info(target: &'static str, text: &str) -> (Level, &'static str, String) {
        (Level::Info, target, text.to_string())
    }

    fn warn(target: &'static str, text: &str) -> (Level, &'static str, String) {
        (Level::Warn, target, text.to_string())
    }

    fn error(target: &'static str, text: &str) -> (Level, &'static str, String) {
        (Level::Error, target, text.to_string())
    }

    fn ip() -> IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn connect() {
        let id = "18d2f5a0c4e1b000";
        let peer = Peer::Ip(Some(ip()));
        assert_eq!(
            line(&Event::Connect { id, peer: &peer }),
            info(
                "postie::server",
                "18d2f5a0c4e1b000: connect from [192.0.2.7]"
            )
        );
        let v6 = Peer::Ip(Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            Event::Connect { id, peer: &v6 }.to_string(),
            "18d2f5a0c4e1b000: connect from [2001:db8::1]"
        );
        assert_eq!(
            Event::Connect {
                id,
                peer: &Peer::Ip(None)
            }
            .to_string(),
            "18d2f5a0c4e1b000: connect from local"
        );
        let local = Peer::Local {
            user: "alice".into(),
            uid: 1000,
        };
        assert_eq!(
            Event::Connect { id, peer: &local }.to_string(),
            "18d2f5a0c4e1b000: connect from local user alice (uid 1000)"
        );
    }

    /// A program left to the queue at the end of DATA: `status=queued`,
    /// not `deferred` (nothing failed), with the entry.
    #[test]
    fn scheduled_program() {
        let from = ReversePath::Null;
        assert_eq!(
            line(&Event::Scheduled {
                id: "abc.1",
                from: &from,
                to: "prog:nobody:/usr/bin/vacation jon",
                size: 12,
                queue: "006b138fb1b8acbce6f6e684fd",
            }),
            info(
                "postie::maillog",
                "abc.1: from=<> to=<prog:nobody:/usr/bin/vacation jon> size=12 status=queued (a program: runs from the queue) queue=006b138fb1b8acbce6f6e684fd"
            )
        );
    }

    #[test]
    fn disconnect() {
        /// Stands for `conn::End`, whose variant names the line shows.
        #[derive(Debug)]
        enum End {
            Quit,
            TooManyErrors,
        }
        let peer = Peer::Ip(Some(ip()));
        let end = |end| Event::Disconnect {
            id: "abc",
            peer: &peer,
            end,
        };
        assert_eq!(
            line(&end(Ending::Other(&End::Quit))),
            info("postie::server", "abc: disconnect from [192.0.2.7] (Quit)")
        );
        assert_eq!(
            end(Ending::Other(&End::TooManyErrors)).to_string(),
            "abc: disconnect from [192.0.2.7] (TooManyErrors)"
        );
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(
            end(Ending::Error(&reset)).to_string(),
            "abc: disconnect from [192.0.2.7]: Connection reset by peer (os error 104)"
        );
    }

    #[test]
    fn refused_connections() {
        let again = io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(
            line(&Event::TooManyConnections { ip: ip() }),
            warn(
                "postie::server",
                "refusing connection from [192.0.2.7]: too many connections"
            )
        );
        assert_eq!(
            line(&Event::TooManyLocal { uid: 1000 }),
            warn(
                "postie::server",
                "refusing local submission by uid 1000: too many connections"
            )
        );
        assert_eq!(
            line(&Event::NoThread {
                ip: ip(),
                err: &again
            }),
            error(
                "postie::server",
                "cannot start a thread for [192.0.2.7]: Resource temporarily unavailable (os error 11)"
            )
        );
        assert_eq!(
            line(&Event::NoThreadLocal { err: &again }),
            error(
                "postie::server",
                "cannot start a thread for a local submission: Resource temporarily unavailable (os error 11)"
            )
        );
        let notconn = io::Error::from_raw_os_error(libc::ENOTCONN);
        assert_eq!(
            line(&Event::NoPeerCredentials { err: &notconn }),
            warn(
                "postie::server",
                "local submission without peer credentials: Transport endpoint is not connected (os error 107)"
            )
        );
        assert_eq!(
            line(&Event::SubmitterUnknown {
                uid: 1234,
                err: nix::Error::EIO
            }),
            warn(
                "postie::server",
                "local submission by uid 1234: user lookup failed: EIO: I/O error"
            )
        );
    }

    #[test]
    fn recipients_refused() {
        let to = mailbox("bob", "example.org");
        assert_eq!(
            line(&Event::MailboxUnavailable {
                to: &to,
                why: "/var/mail/bob: is a symbolic link"
            }),
            warn(
                "postie::server",
                "<bob@example.org>: mailbox unavailable: /var/mail/bob: is a symbolic link"
            )
        );
        let quoted = mailbox("b ob", "example.org");
        assert_eq!(
            line(&Event::LookupFailed {
                to: &quoted,
                why: "getpwnam: EIO"
            }),
            warn(
                "postie::server",
                "lookup for <\"b ob\"@example.org> failed: getpwnam: EIO"
            )
        );
    }

    #[test]
    fn session_timeouts() {
        assert_eq!(
            line(&Event::SessionTime { id: "abc" }),
            info("postie::conn", "abc: session time limit reached")
        );
        assert_eq!(
            line(&Event::Timeout { id: "abc" }),
            info("postie::conn", "abc: timeout")
        );
    }

    #[test]
    fn queue_deleted() {
        assert_eq!(
            line(&Event::QueueDeleted {
                id: "0123456789abcdef"
            }),
            info(
                "postie::maillog",
                "0123456789abcdef: deleted (postie queue delete)"
            )
        );
    }

    #[test]
    fn queue_run() {
        assert_eq!(
            line(&Event::QueueRun {
                by: "sendmail -q",
                entries: 3,
                delivered: 2,
                deferred: 1,
                failed: 0
            }),
            info(
                "postie::maillog",
                "queue run by sendmail -q: 3 entries, 2 delivered, 1 deferred, 0 failed"
            )
        );
    }

    #[test]
    fn reject() {
        let r = reply::unknown_command();
        assert_eq!(
            line(&Event::Reject {
                id: "abc",
                command: CommandLine::Line(b"XYZZY\tplugh\x01"),
                reply: &r
            }),
            info(
                "postie::conn",
                r#"abc: reject: "XYZZY?plugh?": 500 5.5.1 Command unrecognized"#
            )
        );
        // Cut at 100 characters; quotes in the command escaped.
        let long = format!("\"{}", "a".repeat(200));
        assert_eq!(
            Event::Reject {
                id: "abc",
                command: CommandLine::Line(long.as_bytes()),
                reply: &r
            }
            .to_string(),
            format!(
                r#"abc: reject: "\"{}": 500 5.5.1 Command unrecognized"#,
                "a".repeat(99)
            )
        );
        assert_eq!(
            Event::Reject {
                id: "abc",
                command: CommandLine::TooLong { max: 512 },
                reply: &reply::line_too_long()
            }
            .to_string(),
            r#"abc: reject: "line over 512 octets": 500 5.5.2 Line too long"#
        );
    }

    #[test]
    fn replied() {
        assert_eq!(
            line(&Event::Replied {
                id: "abc",
                command: CommandLine::Line(b"MAIL FROM:<a@example.org>"),
                code: 250
            }),
            (
                Level::Debug,
                "postie::conn",
                r#"abc: "MAIL FROM:<a@example.org>": 250"#.to_string()
            )
        );
    }

    #[test]
    fn message_refused() {
        let too_big = reply::message_too_big(1000);
        assert_eq!(
            line(&Event::MessageRefused {
                id: "abc",
                data: DataOutcome::TooBig { size: 4200 },
                max_size: 1000,
                reply: &too_big
            }),
            info(
                "postie::conn",
                "abc: message refused: 4200 octets, over the limit of 1000: 552 5.3.4 Message size exceeds fixed limit of 1000 octets"
            )
        );
        assert_eq!(
            Event::MessageRefused {
                id: "abc",
                data: DataOutcome::BareLf { size: 12 },
                max_size: 1000,
                reply: &reply::bare_lf()
            }
            .to_string(),
            "abc: message refused: a bare LF in 12 octets: 550 5.6.0 Message contains a bare LF line ending; use CRLF"
        );
        assert_eq!(
            Event::MessageRefused {
                id: "abc",
                data: DataOutcome::Complete { size: 12 },
                max_size: 1000,
                reply: &reply::no_valid_recipients()
            }
            .to_string(),
            "abc: message refused: 12 octets: 554 5.5.1 No valid recipients"
        );
    }

    #[test]
    fn not_held() {
        assert_eq!(
            line(&Event::NotHeld {
                id: "abc",
                dir: Path::new("/var/tmp"),
                err: &enospc()
            }),
            warn(
                "postie::conn",
                "abc: cannot hold the message in /var/tmp: No space left on device (os error 28)"
            )
        );
    }

    #[test]
    fn delivered() {
        let from = ReversePath::Mailbox(mailbox("alice", "example.org"));
        assert_eq!(
            line(&Event::Delivered {
                id: "abc",
                from: &from,
                to: "bob",
                size: 1234
            }),
            info(
                "postie::maillog",
                "abc: from=<alice@example.org> to=<bob> size=1234 status=delivered"
            )
        );
        // A bounce: the null sender is empty between the brackets.
        assert_eq!(
            Event::Delivered {
                id: "abc",
                from: &ReversePath::Null,
                to: "bob",
                size: 0
            }
            .to_string(),
            "abc: from=<> to=<bob> size=0 status=delivered"
        );
    }

    #[test]
    fn deferred() {
        let from = ReversePath::Mailbox(mailbox("a\"lice", "[192.0.2.1]"));
        assert_eq!(
            line(&Event::Deferred {
                id: "abc",
                from: &from,
                to: "bob",
                size: 1234,
                why: "/var/mail/bob: lock not obtained in time"
            }),
            info(
                "postie::maillog",
                r#"abc: from=<"a\"lice"@[192.0.2.1]> to=<bob> size=1234 status=deferred (/var/mail/bob: lock not obtained in time)"#
            )
        );
    }

    #[test]
    fn delivery_process_failures() {
        assert_eq!(
            line(&Event::NotPassed {
                id: "abc",
                err: &enospc()
            }),
            error(
                "postie::privsep",
                "abc: cannot pass the message to the delivery process: No space left on device (os error 28)"
            )
        );
        #[derive(Debug)]
        enum Response {
            Checked,
        }
        assert_eq!(
            line(&Event::BadAnswer {
                id: "abc",
                answer: &Response::Checked
            }),
            error("postie::privsep", "abc: delivery process answered Checked")
        );
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed");
        assert_eq!(
            line(&Event::DeliveryProcessFailed {
                id: "abc",
                err: &eof
            }),
            error(
                "postie::privsep",
                "abc: delivery process: connection closed"
            )
        );
    }

    /// What reached the logger of the test binary: level, target, text.
    static SEEN: Mutex<Vec<(Level, String, String)>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            SEEN.lock()
                .unwrap()
                .push((r.level(), r.target().to_string(), r.args().to_string()));
        }
        fn flush(&self) {}
    }

    /// `log` hands the line to the logger with the event's level and
    /// target, and only at an enabled level.
    #[test]
    fn log_goes_through_the_facade_at_the_events_level() {
        // The only logger of the library's test binary; other tests' lines
        // reach it too, so this one looks for its own id.
        log::set_logger(&Capture).expect("no other logger in the unit tests");
        log::set_max_level(log::LevelFilter::Debug);
        let id = "log-goes-through-the-facade";
        Event::SessionTime { id }.log();
        Event::Replied {
            id,
            command: CommandLine::Line(b"NOOP"),
            code: 250,
        }
        .log();
        log::set_max_level(log::LevelFilter::Info);
        Event::Replied {
            id,
            command: CommandLine::Line(b"RSET"),
            code: 250,
        }
        .log();
        let seen: Vec<_> = SEEN
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, text)| text.starts_with(id))
            .cloned()
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Level::Info,
                    "postie::conn".to_string(),
                    format!("{id}: session time limit reached")
                ),
                (
                    Level::Debug,
                    "postie::conn".to_string(),
                    format!("{id}: \"NOOP\": 250")
                ),
            ]
        );
    }
}
