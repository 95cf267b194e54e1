//! The one loop that moves bytes between a client stream and a session.
//!
//! The loop owns one stream (`Link`): plain text, or TLS after
//! STARTTLS (RFC 3207), which replaces the stream mid-session. Replies are
//! buffered and written through the same stream.
//!
//! Every read is bounded: a command line longer than the limit is read past
//! to its LF, answered `500 5.5.2`, and the session stays in step. Replies
//! to a pipelined group (RFC 2920) are written to a buffer and flushed
//! together, just before the loop would block waiting for the client.
//! Timeouts follow RFC 5321 4.5.3.2: one for a command, one for each read
//! of the message (after DATA, or of a BDAT chunk). Those bound each wait,
//! not a session: a client that
//! sends a NOOP every few minutes, or a byte of its message every two,
//! would hold its slot for ever. So a whole session is bounded too
//! ([`Limits::session_timeout`]): every read waits at most until then.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod message;
mod stream;

pub use stream::{Duplex, TimedRead};

use crate::maillog::{CommandLine, Event};
use crate::message::Delivery;
use crate::message::MessageBuf;
use crate::smtp::data::DataLimits;
use crate::smtp::session::{Policy, Session};
use crate::smtp::{Action, Reply};
use crate::tls::{self, Tls};
use message::{Chunked, receive_chunk, receive_message};
use stream::{Bounded, Link, Reader, is_timeout};

/// The per-connection limits of RFC 5321 4.5.3.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest command line in octets, CRLF included (RFC 5321 4.5.3.1.4).
    pub max_line: usize,
    pub data: DataLimits,
    /// Waiting for a command (4.5.3.2.7: 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for each block of the message (4.5.3.2.5: 3 minutes).
    pub data_timeout: Duration,
    /// The whole session, however busy. RFC 5321 sets no such bound;
    /// chasquid closes a connection after 20 minutes. Ours must let the
    /// largest message through a slow link and then wait for its delivery
    /// (up to `timeout-data-end`), so the default is 30 minutes: 10 MiB at
    /// 64 kbit/s takes 22.
    pub session_timeout: Duration,
    /// Message bytes held in memory before spilling to a temporary file.
    pub spill_threshold: usize,
    /// Where spilled messages go (an unnamed file: nothing is left behind).
    pub temp_dir: PathBuf,
}

/// Size of the read buffer. Large enough that a message arrives in few
/// reads, small enough that a thousand idle clients cost little.
const READ_BUFFER: usize = 16 * 1024;
const WRITE_BUFFER: usize = 2 * 1024;

/// How a connection ended, for the log line.
#[derive(Debug)]
pub enum End {
    Quit,
    Eof,
    Timeout,
    /// The session's total time was up.
    SessionTime,
    TooManyErrors,
    Shutdown,
    /// A STARTTLS handshake failed (logged on its own line).
    TlsFailed,
    Error(io::Error),
}

/// Everything a connection needs besides its stream.
pub struct Context<'a> {
    pub limits: &'a Limits,
    /// STARTTLS, when offered on this connection.
    pub tls: Option<&'a Tls>,
    pub policy: &'a dyn Policy,
    pub deliverer: &'a dyn Delivery,
    /// Set when the server is stopping: the next command gets `421`.
    pub stopping: &'a AtomicBool,
}

/// Runs one SMTP session on `stream` until QUIT, EOF, a timeout or an
/// error, and says how it ended.
pub fn run<S: TimedRead + Write>(stream: S, mut session: Session, cx: &Context<'_>) -> End {
    let reader = Bounded {
        inner: Link::Plain(stream),
        until: Instant::now() + cx.limits.session_timeout,
        wait: None,
        hit: false,
    };
    let mut r = BufReader::with_capacity(READ_BUFFER, reader);
    let mut out = Vec::with_capacity(WRITE_BUFFER);
    let end = match serve(&mut r, &mut out, &mut session, cx) {
        Ok(end) => end,
        Err(e) if is_timeout(&e) && r.get_ref().expired() => {
            Event::SessionTime { id: session.id() }.log();
            let _ = send(&mut r, &mut out, &session.session_too_long())
                .and_then(|_| flush(&mut r, &mut out));
            End::SessionTime
        }
        Err(e) if is_timeout(&e) => {
            Event::Timeout { id: session.id() }.log();
            let _ =
                send(&mut r, &mut out, &session.timeout()).and_then(|_| flush(&mut r, &mut out));
            End::Timeout
        }
        Err(e) => End::Error(e),
    };
    r.get_mut().inner.close();
    end
}

fn serve<S: TimedRead + Write>(
    r: &mut Reader<S>,
    w: &mut Vec<u8>,
    session: &mut Session,
    cx: &Context<'_>,
) -> io::Result<End> {
    let mut line = Vec::with_capacity(128);
    // One buffer per connection, reused (and shrunk) between messages.
    let mut message = MessageBuf::new(cx.limits.spill_threshold, cx.limits.temp_dir.clone());
    let mut chunked = Chunked::default();
    send(r, w, &session.greeting())?;
    // Set only when it changes: a setsockopt per command showed in the
    // profile.
    let mut command_timeout_set = false;
    loop {
        if !command_timeout_set {
            r.get_mut().set_read_timeout(cx.limits.command_timeout)?;
            command_timeout_set = true;
        }
        let got = read_line(r, w, &mut line, cx.limits.max_line)?;
        // Stopping: a session may finish the transaction it is in, but
        // starts no new one.
        if cx.stopping.load(Ordering::Relaxed) && !session.in_transaction() {
            send(r, w, &session.shutting_down())?;
            flush(r, w)?;
            return Ok(End::Shutdown);
        }
        let reply = match got {
            Line::Eof => {
                flush(r, w)?;
                return Ok(End::Eof);
            }
            Line::TooLong => session.line_too_long(),
            Line::Complete => session.command(&line, cx.policy),
        };
        // A BDAT chunk's octets come before its reply (RFC 3030 2).
        let reply = match reply.action {
            Action::ReadChunk(chunk) => {
                command_timeout_set = false;
                // After LAST, delivery's reply (in LMTP the last
                // recipient's: RFC 2033 4.3; the others' are sent).
                receive_chunk(r, w, session, cx, &mut message, &mut chunked, chunk)?
                    .unwrap_or(reply)
            }
            _ => reply,
        };
        // Every refusal gets a log line an admin can grep: the command (cut
        // short, control characters masked) and the reply.
        let command = match got {
            Line::TooLong => CommandLine::TooLong {
                max: cx.limits.max_line,
            },
            _ => CommandLine::Line(&line),
        };
        let id = session.id();
        if reply.code >= 400 {
            Event::Reject {
                id,
                command,
                reply: &reply,
            }
            .log();
        } else {
            Event::Replied {
                id,
                command,
                code: reply.code,
            }
            .log();
        }
        send(r, w, &reply)?;
        match reply.action {
            Action::Continue => {}
            Action::Quit => {
                flush(r, w)?;
                return Ok(End::Quit);
            }
            Action::Close => {
                flush(r, w)?;
                return Ok(End::TooManyErrors);
            }
            Action::StartTls => {
                flush(r, w)?;
                command_timeout_set = false;
                if let Some(end) = start_tls(r, session, cx) {
                    return Ok(end);
                }
            }
            // The chunk was read above, before the reply was sent.
            Action::ReadChunk(_) => {}
            Action::ReadData => {
                // The client waits for 354 before sending the message.
                flush(r, w)?;
                command_timeout_set = false;
                let reply = receive_message(r, w, session, cx, &mut message);
                message.clear();
                let reply = reply?;
                send(r, w, &reply)?;
                if reply.action == Action::Close {
                    flush(r, w)?;
                    return Ok(End::TooManyErrors);
                }
            }
        }
    }
}

/// After `220` to STARTTLS: the handshake, within `--timeout-tls` (and
/// the session's time). What the client sent after STARTTLS in plain text
/// and we have already read is thrown away unread (CVE-2011-0411: a
/// `STARTTLS\r\nRSET\r\n` in one packet must not run the RSET as if it
/// came inside TLS). Then the session starts over (RFC 3207 4.2). A
/// failed handshake ends the connection: the stream is in no state to
/// carry a reply.
fn start_tls<S: TimedRead + Write>(
    r: &mut Reader<S>,
    session: &mut Session,
    cx: &Context<'_>,
) -> Option<End> {
    let id = session.id().to_string();
    let early = r.buffer().len();
    if early > 0 {
        r.consume(early);
        Event::TlsEarlyInput {
            id: &id,
            octets: early,
        }
        .log();
    }
    let Some(tls) = cx.tls else {
        // The session offers STARTTLS only when there is TLS to start.
        let e = io::Error::other("STARTTLS without TLS settings");
        Event::TlsFailed { id: &id, err: &e }.log();
        return Some(End::Error(e));
    };
    let bounded = r.get_mut();
    let within = tls
        .handshake_timeout
        .min(bounded.until.saturating_duration_since(Instant::now()));
    let Link::Plain(sock) = std::mem::replace(&mut bounded.inner, Link::Gone) else {
        let e = io::Error::other("STARTTLS twice");
        Event::TlsFailed { id: &id, err: &e }.log();
        return Some(End::Error(e));
    };
    match tls::handshake(tls.current(), sock, within, |s, t| s.set_read_timeout(t)) {
        Ok((stream, agreed)) => {
            bounded.inner = Link::Tls(Box::new(stream));
            // The handshake set the socket's timeout: set the phase's
            // again at the next read.
            bounded.wait = None;
            Event::TlsStarted {
                id: &id,
                agreed: &agreed,
            }
            .log();
            session.tls_started(agreed);
            None
        }
        Err(e) => {
            Event::TlsFailed { id: &id, err: &e }.log();
            Some(End::TlsFailed)
        }
    }
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one command line into `line` (without CRLF or LF). At most `max`
/// octets, the line ending included, are kept; a longer line is read to its
/// end and dropped. Flushes pending replies before blocking.
fn read_line<R: Read + Write>(
    r: &mut BufReader<R>,
    w: &mut Vec<u8>,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        if r.buffer().is_empty() {
            // About to block: the client may be waiting for our replies.
            flush(r, w)?;
        }
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if !too_long {
            if line.len() + n > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        r.consume(n);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            line.pop(); // LF
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

/// Adds a reply to those waiting in `out`; writes them once they fill the
/// buffer (a client that pipelines without reading is held back by its
/// own socket buffer, not our memory).
pub(super) fn send<R: Write>(
    r: &mut BufReader<R>,
    out: &mut Vec<u8>,
    reply: &Reply,
) -> io::Result<()> {
    out.extend_from_slice(reply.to_wire().as_bytes());
    if out.len() >= WRITE_BUFFER {
        flush(r, out)?;
    }
    Ok(())
}

/// Writes the replies waiting in `out` through the stream `r` reads.
pub(super) fn flush<R: Write>(r: &mut BufReader<R>, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let stream = r.get_mut();
    stream.write_all(out)?;
    out.clear();
    stream.flush()
}

/// Sends one reply on a stream outside any session (the `421` for a client
/// over the connection caps), without waiting on a slow client.
pub fn refuse<W: Write>(mut w: W, reply: &Reply) {
    let _ = w.write_all(reply.to_wire().as_bytes());
}

/// The address to show for a client in logs.
#[cfg(test)]
mod tests {
    use super::*;

    /// Input for the line reader, with nowhere to write replies to.
    struct Input<'a>(&'a [u8]);

    impl Read for Input<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Input<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn read_line_bounds_and_stays_in_step() {
        let input = format!("NOOP\r\n{}\r\nQUIT\n", "X".repeat(600));
        let mut r = BufReader::with_capacity(7, Input(input.as_bytes()));
        let mut w = Vec::new();
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut w, &mut line, 512).unwrap(),
            Line::Complete
        ));
        assert_eq!(line, b"NOOP");
        assert!(matches!(
            read_line(&mut r, &mut w, &mut line, 512).unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line(&mut r, &mut w, &mut line, 512).unwrap(),
            Line::Complete
        ));
        assert_eq!(line, b"QUIT");
        assert!(matches!(
            read_line(&mut r, &mut w, &mut line, 512).unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn read_line_limit_counts_the_line_ending() {
        let exact = format!("{}\r\n", "A".repeat(510));
        let over = format!("{}\r\n", "A".repeat(511));
        for (input, ok) in [(exact, true), (over, false)] {
            let mut r = BufReader::new(Input(input.as_bytes()));
            let mut w = Vec::new();
            let mut line = Vec::new();
            let got = read_line(&mut r, &mut w, &mut line, 512).unwrap();
            assert_eq!(matches!(got, Line::Complete), ok);
        }
    }

    #[test]
    fn bare_cr_does_not_end_a_command_line() {
        let mut r = BufReader::new(Input(b"NOOP\rQUIT\r\n"));
        let mut w = Vec::new();
        let mut line = Vec::new();
        read_line(&mut r, &mut w, &mut line, 512).unwrap();
        assert_eq!(line, b"NOOP\rQUIT");
    }
}
