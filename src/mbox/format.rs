//! The mbox format: what one append writes, and how many bytes that is.
//!
//! Format (RFC 4155, mboxrd): a `From SENDER DATE` separator line, the
//! header lines postie adds, the message with LF line ends and every line
//! matching `^>*From ` given one more `>`, then a blank line.
//!
//! Pure: no locks, no files beyond the writer handed in, so that the
//! transaction journal can learn an append's length before anything is
//! written ([`appended_len`]), and the quoting can be tested on its own.

use std::io::{self, BufWriter, Read, Write};

use crate::smtp::ReversePath;
use crate::smtp::address::is_utf8_address_char;
use crate::sys::LocalTime;

/// How `From ` lines inside a message are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// `^>*From ` gets one more `>` (reversible).
    Mboxrd,
    /// Only `^From ` gets a `>` (what old readers expect; not reversible).
    Mboxo,
}

/// The `From ` separator line, with its LF: `From SENDER DATE`, the date in
/// asctime(3) form, `MAILER-DAEMON` for the null sender, and no white space
/// inside SENDER (readers split this line on spaces).
///
/// The line is ASCII whatever the sender: a UTF-8 sender (RFC 6531) has
/// each non-ASCII character written `\x{HEX}`, as RFC 6533 3 writes a
/// UTF-8 address in 7-bit text (`pel\x{E9}@b.example`). Its UTF-8 bytes
/// would do for mutt and s-nail, but Python's `mailbox` decodes this line
/// as ASCII and fails on the message (3.11: `UnicodeDecodeError` in
/// `mbox.get_message`); the sender as sent is in `Return-Path:`.
pub fn from_line(sender: &ReversePath, date: &LocalTime) -> String {
    let mut who = String::new();
    if let ReversePath::Mailbox(m) = sender {
        who.push_str(&m.local);
        if let Some(domain) = &m.domain {
            who.push('@');
            who.push_str(domain);
        }
    }
    // A quoted local part may hold spaces, tabs or control characters; any
    // of them would split the line where readers (mutt) do not expect it.
    // Of UTF-8 only what an address may hold is written (no C1 control, no
    // Unicode space or line separator, no bidirectional override), should
    // a sender ever come here without the address parser's check.
    let mut shown = String::with_capacity(who.len());
    for c in who.chars() {
        if c.is_ascii_graphic() {
            shown.push(c);
        } else if is_utf8_address_char(c) {
            shown.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        } else {
            shown.push('_');
        }
    }
    let who = shown;
    let who = if who.is_empty() {
        "MAILER-DAEMON"
    } else {
        &who
    };
    format!("From {who} {}\n", date.asctime())
}

const FROM: &[u8] = b"From ";

/// Writes `body` (LF line ends) to `w` with `From ` lines quoted, making sure
/// it ends with a newline.
///
/// Rather than walking every line, this looks for `From ` anywhere and then
/// checks whether only `>`s stand between it and the start of its line;
/// the runs between quoting points are written whole.
#[cfg(test)]
pub fn write_quoted<W: Write + ?Sized>(w: &mut W, body: &[u8], quoting: Quoting) -> io::Result<()> {
    quote_run(w, body, true, quoting)?;
    if body.last().is_some_and(|&b| b != b'\n') {
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// The heart of `write_quoted`: writes `body` quoted, adding nothing at
/// the end. `line_start` says whether `body[0]` begins a line (it does not
/// when `body` continues a line begun in an earlier piece).
fn quote_run<W: Write + ?Sized>(
    w: &mut W,
    body: &[u8],
    line_start: bool,
    quoting: Quoting,
) -> io::Result<()> {
    let mut written = 0; // body[..written] is out
    let mut search = 0; // where to look for the next "From "
    while let Some(i) = memchr::memchr(b'F', &body[search..]) {
        let at = search + i;
        search = at + 1;
        if !body[at..].starts_with(FROM) {
            continue;
        }
        search = at + FROM.len();
        let mut start = at;
        while start > 0 && body[start - 1] == b'>' {
            start -= 1;
        }
        let at_line_start = if start == 0 {
            line_start
        } else {
            body[start - 1] == b'\n'
        };
        let quote = at_line_start
            && match quoting {
                Quoting::Mboxrd => true,
                Quoting::Mboxo => start == at,
            };
        if quote {
            w.write_all(&body[written..start])?;
            w.write_all(b">")?;
            written = start;
        }
    }
    w.write_all(&body[written..])
}

/// How much of `body` [`write_quoted_from`] reads at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Streaming form of `write_quoted`: reads `body` to its end, a chunk at
/// a time, and writes the quoted form to `w`. The output is byte for byte
/// what `write_quoted` writes for the whole body, wherever the chunks
/// happen to be cut (inside a line, inside a `From `, inside a run of
/// `>`s); a final newline is added if missing, and an empty body gives
/// nothing.
pub fn write_quoted_from<W: Write + ?Sized, R: Read + ?Sized>(
    w: &mut W,
    body: &mut R,
    quoting: Quoting,
) -> io::Result<()> {
    // Small at first: most messages are a few KiB, and zeroing 64 KiB for
    // each of them showed in the profile. Grown once a read fills it.
    let mut buf = vec![0u8; 4096];
    let mut quoter = StreamQuoter {
        quoting,
        held: Some(Held { gts: 0, from: 0 }),
        last: None,
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        quoter.feed(w, &buf[..n])?;
        if n == buf.len() && buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
    }
    quoter.finish(w)
}

/// The start of a line that may yet turn out to need quoting, kept back
/// between two chunks: `gts` times `>`, then the first `from` bytes of
/// `From ` (fewer than all five).
#[derive(Debug, Clone, Copy)]
struct Held {
    gts: u64,
    from: usize,
}

impl Held {
    /// `Some` if `tail` (a line start up to the end of a chunk) is a
    /// `>`-run followed by a proper prefix of `From `: undecided.
    fn of(tail: &[u8]) -> Option<Held> {
        let gts = tail.iter().take_while(|&&b| b == b'>').count();
        let rest = &tail[gts..];
        (rest.len() < FROM.len() && FROM.starts_with(rest)).then_some(Held {
            gts: gts as u64,
            from: rest.len(),
        })
    }

    /// Writes the held bytes, with one more `>` in front if `quote`.
    fn write<W: Write + ?Sized>(&self, w: &mut W, quote: bool) -> io::Result<()> {
        const GTS: [u8; 64] = [b'>'; 64];
        if quote {
            w.write_all(b">")?;
        }
        let mut left = self.gts;
        while left > 0 {
            let n = left.min(GTS.len() as u64);
            w.write_all(&GTS[..n as usize])?;
            left -= n;
        }
        w.write_all(&FROM[..self.from])
    }
}

/// The state [`write_quoted_from`] carries from one chunk to the next.
struct StreamQuoter {
    quoting: Quoting,
    /// `Some` when the next byte is on a line whose start (held back, not
    /// yet written) may still turn into a `From ` line; `None` when it is
    /// inside a line already decided.
    held: Option<Held>,
    /// The last byte of the body so far.
    last: Option<u8>,
}

impl StreamQuoter {
    fn feed<W: Write + ?Sized>(&mut self, w: &mut W, chunk: &[u8]) -> io::Result<()> {
        let Some(&last) = chunk.last() else {
            return Ok(());
        };
        self.last = Some(last);

        // First settle the line start held back from the last chunk, a byte
        // at a time: it takes only a few.
        let mut i = 0;
        let mut line_start = false;
        if let Some(mut held) = self.held.take() {
            loop {
                let Some(&b) = chunk.get(i) else {
                    // Still undecided at the end of this chunk too.
                    self.held = Some(held);
                    return Ok(());
                };
                if held.from == 0 && b == b'>' {
                    held.gts += 1;
                } else if b == FROM[held.from] {
                    held.from += 1;
                    if held.from == FROM.len() {
                        let quote = match self.quoting {
                            Quoting::Mboxrd => true,
                            Quoting::Mboxo => held.gts == 0,
                        };
                        held.from = 0;
                        held.write(w, quote)?;
                        w.write_all(FROM)?;
                        i += 1;
                        break;
                    }
                } else {
                    // Not a `From ` line. `b` starts the line only if
                    // nothing was held.
                    line_start = held.gts == 0 && held.from == 0;
                    held.write(w, false)?;
                    break;
                }
                i += 1;
            }
        }

        // Then the rest in one go, keeping back the last line's start if it
        // is still undecided.
        let rest = &chunk[i..];
        let tail = match memchr::memrchr(b'\n', rest) {
            Some(nl) => Some(nl + 1),
            None if line_start => Some(0),
            None => None,
        };
        let mut end = rest.len();
        if let Some(tail) = tail {
            if let Some(held) = Held::of(&rest[tail..]) {
                self.held = Some(held);
                end = tail;
            }
        }
        quote_run(w, &rest[..end], line_start, self.quoting)
    }

    fn finish<W: Write + ?Sized>(self, w: &mut W) -> io::Result<()> {
        if let Some(held) = self.held {
            held.write(w, false)?;
        }
        if self.last.is_some_and(|b| b != b'\n') {
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// Writes the whole message through a 64 KiB buffer, so that the append is
/// a few large writes, and returns the bytes handed to `inner`. The buffer
/// is discarded, not flushed, on error: nothing may be written after the
/// rollback.
pub(super) fn write_message<W: Write>(
    inner: W,
    quoting: Quoting,
    from_line: &str,
    headers: &[u8],
    body: &mut dyn Read,
) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(64 * 1024, Counting { inner, count: 0 });
    let res = (|| {
        out.write_all(from_line.as_bytes())?;
        out.write_all(headers)?;
        write_quoted_from(&mut out, body, quoting)?;
        out.write_all(b"\n")?;
        out.flush()
    })();
    let (counting, _unwritten) = out.into_parts();
    res.map(|()| counting.count)
}

/// The number of bytes appending this message to a mailbox adds,
/// found by formatting it into nothing: the transaction journal records
/// it, so that recovery can tell a whole append from part of one.
pub fn appended_len(
    quoting: Quoting,
    from_line: &str,
    headers: &[u8],
    body: &mut dyn Read,
) -> io::Result<u64> {
    write_message(io::sink(), quoting, from_line, headers, body)
}

/// Counts the bytes its writer accepted.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbox::testutil::Chunky;
    use crate::smtp::Mailbox;
    use proptest::prelude::*;

    fn date() -> LocalTime {
        LocalTime {
            year: 2026,
            month: 11,
            day: 1,
            hour: 6,
            minute: 5,
            second: 4,
            weekday: 0,
            utc_offset: 3600,
        }
    }

    fn sender(local: &str, domain: Option<&str>) -> ReversePath {
        ReversePath::Mailbox(Mailbox {
            local: local.to_owned(),
            domain: domain.map(str::to_owned),
        })
    }

    #[test]
    fn from_line_null_sender() {
        assert_eq!(
            from_line(&ReversePath::Null, &date()),
            "From MAILER-DAEMON Sun Nov  1 06:05:04 2026\n"
        );
    }

    #[test]
    fn from_line_normal_sender() {
        assert_eq!(
            from_line(&sender("alice", Some("example.org")), &date()),
            "From alice@example.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("postmaster", None), &date()),
            "From postmaster Sun Nov  1 06:05:04 2026\n"
        );
    }

    #[test]
    fn from_line_quoted_sender_has_no_white_space() {
        assert_eq!(
            from_line(&sender("john smith", Some("example.org")), &date()),
            "From john_smith@example.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("a\tb\rc\nd\u{7f}e\u{a0}f", Some("x.org")), &date()),
            "From a_b_c_d_e_f@x.org Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("", None), &date()),
            "From MAILER-DAEMON Sun Nov  1 06:05:04 2026\n"
        );
    }

    /// RFC 6531: a UTF-8 sender is written in ASCII, each non-ASCII
    /// character as RFC 6533's `\x{HEX}`; anything that could split the
    /// line or hide text (a C1 control, NEL, a Unicode space or line
    /// separator, a bidirectional override) is `_`.
    #[test]
    fn from_line_utf8_sender() {
        assert_eq!(
            from_line(&sender("pel\u{e9}", Some("b\u{fc}cher.example")), &date()),
            "From pel\\x{E9}@b\\x{FC}cher.example Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(&sender("\u{7528}\u{1f600}", Some("x")), &date()),
            "From \\x{7528}\\x{1F600}@x Sun Nov  1 06:05:04 2026\n"
        );
        assert_eq!(
            from_line(
                &sender(
                    "a\u{85}b\u{9b}c\u{2028}d\u{202e}e\u{3000}f\u{feff}g\0h",
                    Some("x")
                ),
                &date()
            ),
            "From a_b_c_d_e_f_g_h@x Sun Nov  1 06:05:04 2026\n"
        );
    }

    fn quoted(body: &[u8], quoting: Quoting) -> String {
        let mut out = Vec::new();
        write_quoted(&mut out, body, quoting).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn write_quoted_mboxrd() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("From x\n", ">From x\n"),
            (">From x\n", ">>From x\n"),
            (">>From x\n", ">>>From x\n"),
            (" From x\n", " From x\n"),
            ("From\n", "From\n"),
            ("Fromx\n", "Fromx\n"),
            ("From", "From\n"),
            ("From ", ">From \n"),
            ("a\nFrom x", "a\n>From x\n"),
            ("no newline", "no newline\n"),
            ("\n", "\n"),
            ("a>From x\n", "a>From x\n"),
            (
                "x From y\nFrom z\n>>From\n>>From \n",
                "x From y\n>From z\n>>From\n>>>From \n",
            ),
            ("From From From \nFrom\n", ">From From From \nFrom\n"),
            ("F\nFr\nFro\nFrom\n", "F\nFr\nFro\nFrom\n"),
            ("\n\nFrom a\n\n>From b\n", "\n\n>From a\n\n>>From b\n"),
        ];
        for (body, want) in table {
            assert_eq!(quoted(body.as_bytes(), Quoting::Mboxrd), *want, "{body:?}");
        }
    }

    #[test]
    fn write_quoted_mboxo() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("From x\n", ">From x\n"),
            (">From x\n", ">From x\n"),
            (">>From x\n", ">>From x\n"),
            (" From x\n", " From x\n"),
            ("From\n", "From\n"),
            ("From", "From\n"),
            ("a\nFrom x", "a\n>From x\n"),
            ("no newline", "no newline\n"),
            ("x\n>From y\nFrom z\n", "x\n>From y\n>From z\n"),
        ];
        for (body, want) in table {
            assert_eq!(quoted(body.as_bytes(), Quoting::Mboxo), *want, "{body:?}");
        }
    }

    /// Counts `write` calls.
    #[derive(Default)]
    struct CountWrites {
        calls: usize,
        data: Vec<u8>,
    }

    impl Write for CountWrites {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_quoted_writes_unchanged_runs_whole() {
        let line = "Some text, Fine, For everyone: From here on\n";
        let body = line.repeat(100_000);
        let mut w = CountWrites::default();
        write_quoted(&mut w, body.as_bytes(), Quoting::Mboxrd).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.data, body.as_bytes());

        let body = format!("{}From me\n{}", line.repeat(1000), line.repeat(1000));
        let mut w = CountWrites::default();
        write_quoted(&mut w, body.as_bytes(), Quoting::Mboxrd).unwrap();
        assert_eq!(w.calls, 3);
    }

    /// Undoes mboxrd quoting: one `>` off every `^>+From ` line.
    fn unquote_mboxrd(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let gt = line.iter().take_while(|&&b| b == b'>').count();
            if gt > 0 && line[gt..].starts_with(b"From ") {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn mboxrd_is_reversible(body in "([>]{0,3}(From |From|Fro|x| |\n)){0,30}") {
            let out = quoted(body.as_bytes(), Quoting::Mboxrd);
            let mut want = body.clone().into_bytes();
            if want.last().is_some_and(|&b| b != b'\n') {
                want.push(b'\n');
            }
            prop_assert_eq!(unquote_mboxrd(out.as_bytes()), want);
            // And no line of the output starts with an unquoted "From ".
            for line in out.split('\n') {
                prop_assert!(!line.starts_with("From "));
            }
        }
    }

    fn quoted_from(body: &[u8], sizes: &[usize], quoting: Quoting) -> Vec<u8> {
        let mut out = Vec::new();
        write_quoted_from(&mut out, &mut Chunky::new(body, sizes), quoting).unwrap();
        out
    }

    fn quoted_bytes(body: &[u8], quoting: Quoting) -> Vec<u8> {
        let mut out = Vec::new();
        write_quoted(&mut out, body, quoting).unwrap();
        out
    }

    #[test]
    fn write_quoted_from_every_split() {
        let bodies: &[&[u8]] = &[
            b"",
            b"\n",
            b"From x\n",
            b">>>From x\n>From\n>>From y",
            b"a\nFrom b\n>From c\nFrom",
            b"x From y\n>>>>\n>>>>Fro\n>>>>From \nFrom ",
            b"From From \n\n\nFrom\r\n>From \xff\n\xffFrom \n",
            b">>>>>>>>",
            b"Fro",
            b"FFrom x\n>>FFrom \n>F>From \nFroFrom \n",
        ];
        for &body in bodies {
            for quoting in [Quoting::Mboxrd, Quoting::Mboxo] {
                let want = quoted_bytes(body, quoting);
                for size in 1..=8 {
                    assert_eq!(
                        quoted_from(body, &[size], quoting),
                        want,
                        "{body:?} by {size}"
                    );
                }
                // Cut once, everywhere.
                for cut in 1..body.len() {
                    let sizes = [cut, body.len() - cut];
                    assert_eq!(
                        quoted_from(body, &sizes, quoting),
                        want,
                        "{body:?} at {cut}"
                    );
                }
            }
        }
        // A long run of `>` across many chunks, and a big body.
        let mut body = vec![b'>'; 100_000];
        body.extend_from_slice(b"From x\n");
        let want = quoted_bytes(&body, Quoting::Mboxrd);
        assert_eq!(want[0], b'>');
        assert_eq!(want.len(), body.len() + 1);
        assert_eq!(quoted_from(&body, &[7, 1000, 3], Quoting::Mboxrd), want);
        let big = "line\nFrom here\n>From there\n".repeat(20_000);
        assert_eq!(
            quoted_from(big.as_bytes(), &[100_000, 1, 0, 4096], Quoting::Mboxrd),
            quoted_bytes(big.as_bytes(), Quoting::Mboxrd)
        );
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"From "[..]),
            Just(&b">From "[..]),
            Just(&b">"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"\xff"[..]),
            Just(&b"\x80F"[..]),
            Just(&b"F"[..]),
            Just(&b"Fro"[..]),
            Just(&b"From"[..]),
            Just(&b"x"[..]),
            Just(&b" "[..]),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn write_quoted_from_matches_write_quoted(
            body in body_strategy(),
            sizes in proptest::collection::vec(0usize..9, 1..20),
            mboxrd in any::<bool>(),
        ) {
            let quoting = if mboxrd { Quoting::Mboxrd } else { Quoting::Mboxo };
            let mut sizes = sizes;
            sizes.push(1); // at least one that reads something
            prop_assert_eq!(quoted_from(&body, &sizes, quoting), quoted_bytes(&body, quoting));
        }
    }
}
