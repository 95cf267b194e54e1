//! Reading the message after `DATA` (RFC 5321 4.1.1.4, 4.5.2).
//!
//! After the `354` reply the client sends the message as lines ended by
//! CRLF, and marks its end with a line holding a single period: the octets
//! `<CRLF>.<CRLF>` (RFC 5321 4.1.1.4). Any line of the message that begins
//! with a period has had one more period put in front of it by the client
//! ("dot-stuffing", RFC 5321 4.5.2), so that no line of the message can look
//! like the end.
//!
//! [`read_data`] undoes that transparency and guarantees:
//!
//! * **Only `<CRLF>.<CRLF>` ends the message.** A line `.` counts as the end
//!   only if it is ended by CRLF *and* the line before it was ended by CRLF
//!   too (the start of the data counts as following a CRLF, so `.<CRLF>`
//!   straight after `DATA` is an empty message). A bare LF or a bare CR is
//!   not a line end on the wire (RFC 5321 2.3.8) and never takes part in the
//!   end mark. Servers that accept `<LF>.<LF>`,
//!   `<CRLF>.<LF>`, `<LF>.<CRLF>` or `<CR>.<CR>` as the end can be made to see
//!   a second, smuggled message inside the first one (SMTP smuggling,
//!   CVE-2023-51764 and its relatives); here those octets are message data.
//! * **Exact framing.** The input is consumed through the end line and not one
//!   octet further, so pipelined commands (RFC 2920) that follow it are left
//!   in the [`BufRead`] for the session.
//! * **Bounded memory and no per-octet syscalls.** The input is scanned in
//!   the chunks [`BufRead::fill_buf`] hands out; only a few flags are carried
//!   from one chunk to the next, so a line of any length (even with no line
//!   end at all) is streamed to the sink, never collected.
//! * **Normalised output.** The sink gets the message with the stuffing
//!   periods removed and every line end written as a single LF, ready for an
//!   mbox file. A bare CR is data and is kept; 8-bit octets pass unchanged.
//! * **The session stays in step.** A message that is too large or has bare
//!   LFs (when they are refused) is still read to its real end before the
//!   outcome is returned, so the reply to it is the reply to `DATA` and not to
//!   some line of the message (RFC 5321 4.2.5).

use std::io::{self, BufRead, Write};

/// What to do with a line ended by a bare LF inside DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareLf {
    /// Take it as a line end inside the message (the default).
    Accept,
    /// Read to the real end, then reject the message with `550 5.6.0`.
    Reject,
}

#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    /// Largest message accepted, in octets as received (CRLF line ends).
    pub max_size: u64,
    pub bare_lf: BareLf,
}

/// How the DATA phase ended. In every case the reader has consumed the
/// input up to and including the terminating `<CRLF>.<CRLF>`, so the
/// session stays in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    /// The whole message was written to the sink.
    Complete { size: u64 },
    /// More than `max_size` octets; the sink holds only a prefix.
    TooBig { size: u64 },
    /// A bare LF was seen and the policy is [`BareLf::Reject`].
    BareLf { size: u64 },
}

/// Where the reader is within the current line. Together with the flag
/// "the previous line ended with CRLF" this is all the state carried from
/// one buffered chunk to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first octet of a line.
    LineStart,
    /// The line so far is a single `.`, already removed.
    Dot,
    /// The line so far is `.` CR and the line before ended with CRLF: an LF
    /// now ends the message. The CR is held back.
    DotCr,
    /// Inside a line.
    Mid,
    /// Inside a line, just after a CR that is held back until we know
    /// whether an LF follows it.
    MidCr,
}

/// The output side. Writes the message until it passes `max_size` octets or
/// is known to be refused, then drops the rest.
///
/// What ends up in `out` depends only on the input, never on how it was cut
/// into chunks: data is cut at exactly `max_size` octets of input.
struct Sink<'a, W: Write + ?Sized> {
    out: &'a mut W,
    max_size: u64,
    stopped: bool,
}

impl<W: Write + ?Sized> Sink<'_, W> {
    /// Writes `data`, octets taken unchanged from the input starting at wire
    /// offset `start`. Only the part within the first `max_size` octets of
    /// the message is written.
    fn data(&mut self, start: u64, data: &[u8]) -> io::Result<()> {
        if self.stopped || data.is_empty() {
            return Ok(());
        }
        let room = usize::try_from(self.max_size.saturating_sub(start)).unwrap_or(usize::MAX);
        let data = if room < data.len() {
            self.stopped = true;
            &data[..room]
        } else {
            data
        };
        self.out.write_all(data)
    }

    /// Writes `mark` (a line end or a held-back CR) for input octets that end
    /// at wire offset `end`, if they are all within the first `max_size`.
    fn mark(&mut self, end: u64, mark: &[u8]) -> io::Result<()> {
        if self.stopped {
            return Ok(());
        }
        if end > self.max_size {
            self.stopped = true;
            return Ok(());
        }
        self.out.write_all(mark)
    }
}

/// Reads a message from `input` up to the line `.` that ends it, writing the
/// unstuffed message, with LF line ends, to `out`.
///
/// Returns an error of kind `UnexpectedEof` if the input ends first, and
/// passes on read errors (a timeout is `WouldBlock` or `TimedOut`).
///
/// # The end of the message
///
/// Only a line `.` ended by CRLF, after a line ended by CRLF (or at the very
/// start of the data), ends the message (RFC 5321 4.1.1.4). `<LF>.<CRLF>`,
/// `<CRLF>.<LF>`, `<LF>.<LF>` and `<CR>.<CR>` are message data: taking any of
/// them as the end lets a client smuggle a second message past the checks
/// made on the first (CVE-2023-51764 and relatives). On return with `Ok`
/// the input has been consumed exactly through the `.<CRLF>` line; what
/// follows (pipelined commands, RFC 2920) is still unread in `input`.
///
/// # What is written to `out`
///
/// * A line that begins with `.` and is not the end has that first `.`
///   removed (RFC 5321 4.5.2). This is done at every line start, also after
///   a bare LF when bare LFs are accepted, so `<LF>..x` gives `\n.x`.
/// * CRLF is written as LF. With [`BareLf::Accept`] a bare LF is a line end
///   too and is written as LF.
/// * A bare CR (one not followed by LF) is data and is written unchanged, as
///   are all other octets, 8-bit ones included.
/// * The end line `.<CRLF>` is not written.
///
/// Output is written in slices of the input chunks, never an octet at a time.
/// What `out` receives depends only on the input, not on how the reader cuts
/// it into chunks.
///
/// # Size
///
/// `size` in every outcome is the full size of the message as received: all
/// octets before the end line `.<CRLF>`, counting the CRLFs and the stuffing
/// periods, i.e. what the client would declare with `SIZE` (RFC 1870). It is
/// counted to the real end even when the message is too large.
///
/// # Outcomes
///
/// * [`DataOutcome::TooBig`] if `size > limits.max_size`. Writing stops at
///   the limit: `out` holds what the first `max_size` octets of the message
///   give (a CRLF cut in two by the limit gives nothing). The rest is read
///   and dropped.
/// * Otherwise [`DataOutcome::BareLf`] if the policy is [`BareLf::Reject`]
///   and some line was ended by a bare LF. `out` holds the message up to,
///   not including, the first bare LF; the rest is read and dropped.
/// * Otherwise [`DataOutcome::Complete`].
///
/// If a message is both too large and has a bare LF, `TooBig` wins: the
/// size is the more basic fault (`552` tells the client not to retry the
/// same message here, whatever its line ends).
///
/// # Errors
///
/// `UnexpectedEof` if the input ends before the end line; read errors other
/// than `Interrupted` (which is retried) are passed on unchanged, as are
/// errors writing to `out`. After an error the position in `input` is
/// somewhere inside the message and the session can't go on.
pub fn read_data<R: BufRead + ?Sized, W: Write + ?Sized>(
    input: &mut R,
    out: &mut W,
    limits: &DataLimits,
) -> io::Result<DataOutcome> {
    let reject_bare_lf = limits.bare_lf == BareLf::Reject;
    let mut sink = Sink {
        out,
        max_size: limits.max_size,
        stopped: false,
    };
    let mut state = State::LineStart;
    // The line before the current one ended with CRLF. The start of the data
    // follows the CRLF of the DATA command line.
    let mut after_crlf = true;
    let mut bare_lf_seen = false;
    // Octets consumed from `input` before the current chunk.
    let mut consumed: u64 = 0;

    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the message (<CRLF>.<CRLF>)",
            ));
        }

        let mut i = 0;
        let mut done = false;
        while i < buf.len() {
            // Wire offset of buf[i], which is also the number of message
            // octets before it.
            let here = consumed + i as u64;
            match state {
                State::LineStart => {
                    if buf[i] == b'.' {
                        i += 1;
                        state = State::Dot;
                    } else {
                        state = State::Mid;
                    }
                }
                State::Dot => {
                    if buf[i] == b'\r' {
                        i += 1;
                        state = if after_crlf {
                            State::DotCr
                        } else {
                            State::MidCr
                        };
                    } else {
                        // Stuffed line (or `.` ended by a bare LF, which
                        // `Mid` sees as an empty line).
                        state = State::Mid;
                    }
                }
                State::DotCr => {
                    if buf[i] == b'\n' {
                        i += 1;
                        done = true;
                        break;
                    }
                    // `.` CR followed by data: the CR is a bare CR.
                    sink.mark(here, b"\r")?;
                    state = State::Mid;
                }
                State::MidCr => {
                    if buf[i] == b'\n' {
                        i += 1;
                        sink.mark(here + 1, b"\n")?;
                        after_crlf = true;
                        state = State::LineStart;
                    } else {
                        sink.mark(here, b"\r")?;
                        state = State::Mid;
                    }
                }
                State::Mid => {
                    let rest = &buf[i..];
                    match memchr::memchr(b'\n', rest) {
                        Some(n) => {
                            let end = here + n as u64 + 1;
                            if n > 0 && rest[n - 1] == b'\r' {
                                sink.data(here, &rest[..n - 1])?;
                                sink.mark(end, b"\n")?;
                                after_crlf = true;
                            } else {
                                bare_lf_seen = true;
                                if reject_bare_lf {
                                    // Keep what came before the bare LF, so
                                    // the sink's content doesn't depend on
                                    // how the input was chunked.
                                    sink.data(here, &rest[..n])?;
                                    sink.stopped = true;
                                } else {
                                    sink.data(here, &rest[..=n])?;
                                }
                                after_crlf = false;
                            }
                            i += n + 1;
                            state = State::LineStart;
                        }
                        None => {
                            // The line goes on past this chunk. Hold back a
                            // final CR: the LF may be in the next chunk.
                            let n = rest.len();
                            if rest[n - 1] == b'\r' {
                                sink.data(here, &rest[..n - 1])?;
                                state = State::MidCr;
                            } else {
                                sink.data(here, rest)?;
                            }
                            i += n;
                        }
                    }
                }
            }
        }

        input.consume(i);
        consumed += i as u64;
        if done {
            break;
        }
    }

    // `consumed` ends with the end line `.` CR LF.
    let size = consumed.saturating_sub(3);
    Ok(if size > limits.max_size {
        DataOutcome::TooBig { size }
    } else if reject_bare_lf && bare_lf_seen {
        DataOutcome::BareLf { size }
    } else {
        DataOutcome::Complete { size }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{BufReader, Read};

    const ACCEPT: BareLf = BareLf::Accept;
    const REJECT: BareLf = BareLf::Reject;
    const BIG: u64 = 1 << 40;
    const CAPACITIES: [usize; 6] = [1, 2, 3, 7, 8, 8192];

    /// Expected outcome, without the size (checked separately per row).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Complete,
        TooBig,
        Bare,
        Eof,
    }

    /// Runs `input` through `read_data` with a `BufReader` of `cap` octets.
    /// Returns the result, the output and the unread rest of the input.
    fn run(
        input: &[u8],
        policy: BareLf,
        max_size: u64,
        cap: usize,
    ) -> (io::Result<DataOutcome>, Vec<u8>, Vec<u8>) {
        let mut reader = BufReader::with_capacity(cap, input);
        let mut out = Vec::new();
        let limits = DataLimits {
            max_size,
            bare_lf: policy,
        };
        let res = read_data(&mut reader, &mut out, &limits);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        (res, out, rest)
    }

    fn kind(res: &io::Result<DataOutcome>) -> (Kind, Option<u64>) {
        match res {
            Ok(DataOutcome::Complete { size }) => (Kind::Complete, Some(*size)),
            Ok(DataOutcome::TooBig { size }) => (Kind::TooBig, Some(*size)),
            Ok(DataOutcome::BareLf { size }) => (Kind::Bare, Some(*size)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => (Kind::Eof, None),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    struct Row {
        input: &'static [u8],
        policy: BareLf,
        max_size: u64,
        kind: Kind,
        /// Expected `size`, if the outcome is not an error.
        size: Option<u64>,
        /// Expected output; `None` means "don't check" (only a prefix).
        out: Option<&'static [u8]>,
        rest: &'static [u8],
    }

    const fn row(
        input: &'static [u8],
        policy: BareLf,
        max_size: u64,
        kind: Kind,
        size: Option<u64>,
        out: Option<&'static [u8]>,
        rest: &'static [u8],
    ) -> Row {
        Row {
            input,
            policy,
            max_size,
            kind,
            size,
            out,
            rest,
        }
    }

    use Kind::*;

    const ROWS: &[Row] = &[
        // Empty message.
        row(b".\r\n", ACCEPT, BIG, Complete, Some(0), Some(b""), b""),
        row(
            b".\r\nQUIT\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(0),
            Some(b""),
            b"QUIT\r\n",
        ),
        // Simple messages.
        row(
            b"hello\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(7),
            Some(b"hello\n"),
            b"",
        ),
        row(
            b"Subject: x\r\n\r\nbody\r\nline 2\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(28),
            Some(b"Subject: x\n\nbody\nline 2\n"),
            b"",
        ),
        // A message without a final line end is impossible on the wire: the
        // CRLF before the end line belongs to the last line.
        row(
            b"\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(2),
            Some(b"\n"),
            b"",
        ),
        // Dot-stuffing.
        row(
            b"..foo\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(7),
            Some(b".foo\n"),
            b"",
        ),
        row(
            b"..\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(4),
            Some(b".\n"),
            b"",
        ),
        row(
            b"...\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(5),
            Some(b"..\n"),
            b"",
        ),
        row(
            b"a\r\n..\r\nb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(10),
            Some(b"a\n.\nb\n"),
            b"",
        ),
        // A leading dot is removed even when not doubled (lenient, 4.5.2).
        row(
            b".foo\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(6),
            Some(b"foo\n"),
            b"",
        ),
        // Dots not at the start of a line are data.
        row(
            b"a.b.\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(6),
            Some(b"a.b.\n"),
            b"",
        ),
        // Bare LF, accepted: a line end, and dot-unstuffing applies after it.
        row(
            b"a\nb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(5),
            Some(b"a\nb\n"),
            b"",
        ),
        row(
            b"a\n..b\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(7),
            Some(b"a\n.b\n"),
            b"",
        ),
        row(
            b"\n\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(3),
            Some(b"\n\n"),
            b"",
        ),
        // Bare LF, refused: read to the real end anyway.
        row(
            b"a\nb\r\n.\r\nQUIT\r\n",
            REJECT,
            BIG,
            Bare,
            Some(5),
            Some(b"a"),
            b"QUIT\r\n",
        ),
        row(
            b"a\r\nb\r\n.\r\n",
            REJECT,
            BIG,
            Complete,
            Some(6),
            Some(b"a\nb\n"),
            b"",
        ),
        row(
            b"a\n.\r\n.\r\nX",
            REJECT,
            BIG,
            Bare,
            Some(5),
            Some(b"a"),
            b"X",
        ),
        // Smuggling: <LF>.<CRLF> is not the end.
        row(
            b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(22),
            Some(b"a\n\nMAIL FROM:<x@y>\n"),
            b"QUIT\r\n",
        ),
        // <CRLF>.<LF> is not the end.
        row(
            b"a\r\n.\nb\r\n.\r\nQUIT\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(8),
            Some(b"a\n\nb\n"),
            b"QUIT\r\n",
        ),
        // <LF>.<LF> is not the end.
        row(
            b"a\n.\nb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(7),
            Some(b"a\n\nb\n"),
            b"",
        ),
        // <CR>.<CRLF> is not the end: the CR is data, the dot mid-line.
        row(
            b"a\r.\r\nb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(8),
            Some(b"a\r.\nb\n"),
            b"",
        ),
        // <CR>.<CR> is not the end.
        row(
            b"a\r.\rb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(7),
            Some(b"a\r.\rb\n"),
            b"",
        ),
        // <CRLF>.<CR>b is not the end: a stuffed line with a bare CR.
        row(
            b"a\r\n.\rb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(8),
            Some(b"a\n\rb\n"),
            b"",
        ),
        // Smuggling under Reject: still not the end, and refused.
        row(
            b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
            REJECT,
            BIG,
            Bare,
            Some(22),
            None,
            b"QUIT\r\n",
        ),
        row(
            b"a\r\n.\nb\r\n.\r\n",
            REJECT,
            BIG,
            Bare,
            Some(8),
            Some(b"a\n"),
            b"",
        ),
        // A smuggled end with nothing after it: the input ends first.
        row(b"a\n.\r\n", ACCEPT, BIG, Eof, None, None, b""),
        row(b"a\r\n.\n", ACCEPT, BIG, Eof, None, None, b""),
        row(b"a\n.\n", ACCEPT, BIG, Eof, None, None, b""),
        row(b"a\r.\r\n", ACCEPT, BIG, Eof, None, None, b""),
        // Bare CR is kept.
        row(
            b"a\rb\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(5),
            Some(b"a\rb\n"),
            b"",
        ),
        row(
            b"\r\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(3),
            Some(b"\r\n"),
            b"",
        ),
        row(
            b"a\r\r\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(5),
            Some(b"a\r\r\n"),
            b"",
        ),
        row(
            b"\r.\r\n.\r\n",
            REJECT,
            BIG,
            Complete,
            Some(4),
            Some(b"\r.\n"),
            b"",
        ),
        // 8-bit octets pass unchanged.
        row(
            b"caf\xc3\xa9 \xff\x00\x80\r\n.\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(11),
            Some(b"caf\xc3\xa9 \xff\x00\x80\n"),
            b"",
        ),
        // Size limit: exactly at the limit is fine.
        row(
            b"hello\r\n.\r\n",
            ACCEPT,
            7,
            Complete,
            Some(7),
            Some(b"hello\n"),
            b"",
        ),
        // One over: too big, read to the end, what follows is intact.
        row(
            b"hello\r\n.\r\nQUIT\r\n",
            ACCEPT,
            6,
            TooBig,
            Some(7),
            Some(b"hello"),
            b"QUIT\r\n",
        ),
        row(
            b"ab\r\ncd\r\nef\r\n.\r\nRSET\r\n",
            ACCEPT,
            5,
            TooBig,
            Some(12),
            Some(b"ab\nc"),
            b"RSET\r\n",
        ),
        row(b"x\r\n.\r\n", ACCEPT, 0, TooBig, Some(3), Some(b""), b""),
        row(b".\r\n", ACCEPT, 0, Complete, Some(0), Some(b""), b""),
        // Stuffing dots count in the size.
        row(b"..\r\n.\r\n", ACCEPT, 3, TooBig, Some(4), Some(b"."), b""),
        // Too big and bare LF: TooBig wins.
        row(
            b"a\nbbbbbbbb\r\n.\r\nX",
            REJECT,
            4,
            TooBig,
            Some(12),
            Some(b"a"),
            b"X",
        ),
        // EOF before the end.
        row(b"", ACCEPT, BIG, Eof, None, None, b""),
        row(b"hello", ACCEPT, BIG, Eof, None, None, b""),
        row(b"hello\r\n", ACCEPT, BIG, Eof, None, None, b""),
        row(b"hello\r\n.", ACCEPT, BIG, Eof, None, None, b""),
        row(b"hello\r\n.\r", ACCEPT, BIG, Eof, None, None, b""),
        row(
            b"hello\r\n.\r\n",
            ACCEPT,
            1,
            TooBig,
            Some(7),
            Some(b"h"),
            b"",
        ),
        row(b"hello\r\n..\r\n", ACCEPT, 1, Eof, None, None, b""),
        // Pipelined bytes after the end stay unread, even another end line.
        row(
            b"m\r\n.\r\n.\r\nQUIT\r\n",
            ACCEPT,
            BIG,
            Complete,
            Some(3),
            Some(b"m\n"),
            b".\r\nQUIT\r\n",
        ),
    ];

    #[test]
    fn table() {
        for (n, r) in ROWS.iter().enumerate() {
            for cap in CAPACITIES {
                let (res, out, rest) = run(r.input, r.policy, r.max_size, cap);
                let (k, size) = kind(&res);
                let ctx = format!(
                    "row {n} ({:?}), cap {cap}: {res:?}, out {:?}",
                    String::from_utf8_lossy(r.input),
                    String::from_utf8_lossy(&out)
                );
                assert_eq!(k, r.kind, "{ctx}");
                assert_eq!(size, r.size, "{ctx}");
                if let Some(expected) = r.out {
                    assert_eq!(out, expected, "{ctx}");
                }
                if k != Eof {
                    assert_eq!(rest, r.rest, "{ctx}");
                } else {
                    assert!(rest.is_empty(), "{ctx}");
                }
            }
        }
    }

    /// Every capacity gives the same result as reading the input at once.
    #[test]
    fn table_same_for_all_capacities() {
        for r in ROWS {
            let (res, out, rest) = run(r.input, r.policy, r.max_size, 1 << 20);
            let res = res.map_err(|e| e.kind());
            for cap in CAPACITIES {
                let (res2, out2, rest2) = run(r.input, r.policy, r.max_size, cap);
                assert_eq!(res2.map_err(|e| e.kind()), res);
                assert_eq!(out2, out);
                assert_eq!(rest2, rest);
            }
        }
    }

    #[test]
    fn sink_holds_a_prefix_within_the_limit() {
        let input = b"line one\r\nline two\r\nline three\r\n.\r\nQUIT\r\n";
        for cap in CAPACITIES {
            let (res, out, rest) = run(input, ACCEPT, 15, cap);
            assert_eq!(res.unwrap(), DataOutcome::TooBig { size: 32 });
            assert_eq!(out, b"line one\nline ", "cap {cap}");
            assert_eq!(rest, b"QUIT\r\n");
        }
    }

    #[test]
    fn long_line_is_streamed() {
        let len = 10 << 20;
        let mut input = vec![b'x'; len];
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let mut reader = BufReader::with_capacity(8192, &input[..]);
        let mut out = Vec::new();
        let limits = DataLimits {
            max_size: BIG,
            bare_lf: ACCEPT,
        };
        let res = read_data(&mut reader, &mut out, &limits).unwrap();
        assert_eq!(
            res,
            DataOutcome::Complete {
                size: len as u64 + 2
            }
        );
        assert_eq!(out.len(), len + 1);
        assert!(out[..len].iter().all(|&b| b == b'x'));
        assert_eq!(out[len], b'\n');
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"QUIT\r\n");

        // Too big: nothing beyond the limit reaches the sink.
        let mut reader = BufReader::with_capacity(8192, &input[..]);
        let mut out = Vec::new();
        let limits = DataLimits {
            max_size: 1000,
            bare_lf: ACCEPT,
        };
        let res = read_data(&mut reader, &mut out, &limits).unwrap();
        assert_eq!(
            res,
            DataOutcome::TooBig {
                size: len as u64 + 2
            }
        );
        assert!(out.len() <= 1000);
    }

    /// A reader that fails with `Interrupted` before every chunk, and yields
    /// chunks of at most `step` octets.
    struct Flaky<'a> {
        data: &'a [u8],
        pos: usize,
        step: usize,
        interrupt: bool,
        error_at_end: Option<io::ErrorKind>,
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Flaky<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            if self.interrupt {
                self.interrupt = false;
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.pos == self.data.len() {
                if let Some(kind) = self.error_at_end {
                    return Err(kind.into());
                }
            }
            let end = self.data.len().min(self.pos + self.step);
            Ok(&self.data[self.pos..end])
        }

        fn consume(&mut self, n: usize) {
            self.pos += n;
            self.interrupt = true;
        }
    }

    #[test]
    fn interrupted_is_retried() {
        let input = b"a\r\n..b\rc\r\n.\r\nQUIT\r\n";
        for step in [1, 2, 5, 100] {
            let mut r = Flaky {
                data: input,
                pos: 0,
                step,
                interrupt: true,
                error_at_end: None,
            };
            let mut out = Vec::new();
            let limits = DataLimits {
                max_size: BIG,
                bare_lf: ACCEPT,
            };
            let res = read_data(&mut r, &mut out, &limits).unwrap();
            assert_eq!(res, DataOutcome::Complete { size: 10 });
            assert_eq!(out, b"a\n.b\rc\n");
            assert_eq!(&input[r.pos..], b"QUIT\r\n");
        }
    }

    #[test]
    fn read_errors_are_passed_on() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            let mut r = Flaky {
                data: b"partial\r\n",
                pos: 0,
                step: 4,
                interrupt: false,
                error_at_end: Some(kind),
            };
            let mut out = Vec::new();
            let limits = DataLimits {
                max_size: BIG,
                bare_lf: ACCEPT,
            };
            let err = read_data(&mut r, &mut out, &limits).unwrap_err();
            assert_eq!(err.kind(), kind);
        }
    }

    #[test]
    fn works_with_unsized_types() {
        let mut input: &[u8] = b"x\r\n.\r\nrest";
        let reader: &mut dyn BufRead = &mut input;
        let mut out = Vec::new();
        let sink: &mut dyn Write = &mut out;
        let limits = DataLimits {
            max_size: BIG,
            bare_lf: REJECT,
        };
        let res = read_data(reader, sink, &limits).unwrap();
        assert_eq!(res, DataOutcome::Complete { size: 3 });
        assert_eq!(out, b"x\n");
        assert_eq!(input, b"rest");
    }

    /// A plain, whole-input model of the rules, line by line: the result
    /// (kind and size), the full unstuffed output, and how many octets were
    /// consumed. `None` if the input ends before the end line.
    fn model(input: &[u8], policy: BareLf, max_size: u64) -> Option<(DataOutcome, Vec<u8>, usize)> {
        let mut pos = 0;
        let mut after_crlf = true;
        let mut bare = false;
        let mut out = Vec::new();
        loop {
            let nl = pos + input[pos..].iter().position(|&b| b == b'\n')?;
            let crlf = nl > pos && input[nl - 1] == b'\r';
            let content = &input[pos..if crlf { nl - 1 } else { nl }];
            if after_crlf && crlf && content == b"." {
                let size = pos as u64;
                let outcome = if size > max_size {
                    DataOutcome::TooBig { size }
                } else if bare && policy == REJECT {
                    DataOutcome::BareLf { size }
                } else {
                    DataOutcome::Complete { size }
                };
                return Some((outcome, out, nl + 1));
            }
            out.extend_from_slice(content.strip_prefix(b".").unwrap_or(content));
            out.push(b'\n');
            bare |= !crlf;
            after_crlf = crlf;
            pos = nl + 1;
        }
    }

    /// Octets of one line of a message: anything but CR and LF, with `.`
    /// much more likely than chance so stuffing is well exercised.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(
                any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b'.' } else { b }),
                0..40,
            ),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            prop::collection::vec(any::<u8>(), 0..10).prop_map(|v| {
                let mut line = b".".to_vec();
                line.extend(v.into_iter().filter(|&b| b != b'\r' && b != b'\n'));
                line
            }),
        ]
    }

    proptest! {
        /// Stuffing a message with CRLF line ends and reading it back gives
        /// the message, with LF line ends.
        #[test]
        fn stuffed_message_round_trips(
            lines in prop::collection::vec(line(), 0..30),
            cap in prop_oneof![Just(1usize), Just(2), Just(3), Just(7), Just(8192)],
            policy in prop_oneof![Just(ACCEPT), Just(REJECT)],
        ) {
            let mut body = Vec::new();
            let mut wire = Vec::new();
            for l in &lines {
                body.extend_from_slice(l);
                body.push(b'\n');
                if l.first() == Some(&b'.') {
                    wire.push(b'.');
                }
                wire.extend_from_slice(l);
                wire.extend_from_slice(b"\r\n");
            }
            let size = wire.len() as u64;
            wire.extend_from_slice(b".\r\nNEXT");
            let (res, out, rest) = run(&wire, policy, BIG, cap);
            prop_assert_eq!(res.unwrap(), DataOutcome::Complete { size });
            prop_assert_eq!(out, body);
            prop_assert_eq!(rest, b"NEXT".to_vec());
        }

        /// Any input: no panic, the result the line-by-line model gives, and
        /// the same result for every capacity.
        #[test]
        fn arbitrary_input_is_chunking_independent(
            input in prop::collection::vec(
                prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()
                ],
                0..200,
            ),
            max_size in 0u64..100,
            policy in prop_oneof![Just(ACCEPT), Just(REJECT)],
            end in any::<bool>(),
        ) {
            let mut input = input;
            if end {
                // Make sure an end line comes, so most cases get to the end.
                input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            }
            let (res, out, rest) = run(&input, policy, max_size, 4096);
            let res = res.map_err(|e| e.kind());
            match model(&input, policy, max_size) {
                None => prop_assert_eq!(res, Err(io::ErrorKind::UnexpectedEof)),
                Some((outcome, full, used)) => {
                    prop_assert_eq!(res, Ok(outcome));
                    prop_assert_eq!(&rest[..], &input[used..]);
                    if let DataOutcome::Complete { .. } = outcome {
                        prop_assert_eq!(&out, &full);
                    } else {
                        prop_assert!(full.starts_with(&out));
                    }
                }
            }
            if let Ok(outcome) = res {
                let size = match outcome {
                    DataOutcome::Complete { size }
                    | DataOutcome::TooBig { size }
                    | DataOutcome::BareLf { size } => size,
                };
                // Exactly the message and the end line were consumed.
                prop_assert_eq!(size as usize + 3 + rest.len(), input.len());
                prop_assert!(input[..input.len() - rest.len()].ends_with(b".\r\n"));
                prop_assert!(out.len() as u64 <= size);
            }
            for cap in [1, 2, 3, 7] {
                let (res2, out2, rest2) = run(&input, policy, max_size, cap);
                prop_assert_eq!(res2.map_err(|e| e.kind()), res);
                prop_assert_eq!(&out2, &out);
                prop_assert_eq!(&rest2, &rest);
            }
        }
    }
}
