//! Reading the octets of a `BDAT` chunk (RFC 3030 2, CHUNKING).
//!
//! `BDAT n [LAST]` is followed by exactly `n` octets of the message, and
//! nothing marks their end but the count: no dot, no dot-stuffing, no line
//! structure at all (with `BODY=BINARYMIME` the octets need not be lines).
//! Those octets are never a command, whatever they hold (`\r\n.\r\n`,
//! `MAIL FROM:`): the session stays in step by counting, so a message
//! cannot smuggle a second one past the server (the CVE-2023-51764 family
//! needs a terminator to fake; here there is none).
//!
//! [`read_chunk`] reads exactly the count, streaming the chunks
//! [`BufRead::fill_buf`] hands out (bounded memory, no per-octet calls),
//! and writes the octets as an mbox wants them: every CRLF as one LF, as
//! [`super::data::read_data`] does for DATA, and every other octet (a bare
//! CR, a bare LF, NUL, 8-bit octets) unchanged. A CR that ends one chunk
//! and the LF that begins the next are one CRLF: the CR is held back in a
//! [`Carry`] until the next octet is known, and [`finish`] writes it as
//! data when the message ends there.
//!
//! [`Chunk`] is what the session tells the connection about one `BDAT`:
//! how many octets to read, and whether to keep them.

use std::io::{self, BufRead, Write};

/// One `BDAT` command as the session judged it: the connection reads
/// `size` octets whatever the verdict, so that the next command is read
/// from the right place (RFC 3030 2: a server offering PIPELINING "MUST be
/// prepared to accept and discard additional BDAT chunks already in the
/// pipeline after the failed BDAT").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Octets that follow the command line.
    pub size: u64,
    /// Keep them as part of the message; otherwise read and drop them (no
    /// transaction, no recipient, a failed transaction, over the size
    /// limit), and drop what earlier chunks kept.
    pub keep: bool,
    /// The first chunk of a message: what an earlier message (or one given
    /// up by RSET) left in the buffer goes.
    pub first: bool,
    /// `LAST` of a kept message: once read, the message is complete and is
    /// delivered; `total` is its size as received.
    pub last: bool,
    /// Octets of the message received so far, this chunk included.
    pub total: u64,
}

/// What one chunk leaves for the next: a CR at its very end, not yet
/// written (the LF that would make it a line end may start the next one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carry {
    cr: bool,
}

/// Reads exactly `size` octets from `input`, writing them to `out` with
/// CRLF turned into LF (see the module doc); `carry` is the state the
/// previous chunk of the same message left, and is updated for the next.
///
/// On return with `Ok` exactly `size` octets have been consumed and what
/// follows (the next command, pipelined, RFC 2920) is still unread.
///
/// # Errors
///
/// `UnexpectedEof` if the input ends before `size` octets; read errors
/// other than `Interrupted` (retried) are passed on (a timeout is
/// `WouldBlock` or `TimedOut`), as are errors writing to `out`. After an
/// error the position in `input` is inside the chunk and the session
/// cannot go on.
pub fn read_chunk<R: BufRead + ?Sized, W: Write + ?Sized>(
    input: &mut R,
    out: &mut W,
    size: u64,
    carry: &mut Carry,
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a BDAT chunk",
            ));
        }
        let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        write_normalised(&buf[..n], out, carry)?;
        input.consume(n);
        left -= n as u64;
    }
    Ok(())
}

/// The end of the message: a CR held back at the end of the last chunk
/// is data (a bare CR), and is written now.
pub fn finish<W: Write + ?Sized>(out: &mut W, carry: &mut Carry) -> io::Result<()> {
    if std::mem::take(&mut carry.cr) {
        out.write_all(b"\r")?;
    }
    Ok(())
}

/// Writes `data` with each CRLF as LF, in runs between line ends.
fn write_normalised<W: Write + ?Sized>(
    mut data: &[u8],
    out: &mut W,
    carry: &mut Carry,
) -> io::Result<()> {
    if std::mem::take(&mut carry.cr) {
        match data.first() {
            // The CR of the last chunk and this LF: one line end, written
            // with the LF.
            Some(b'\n') => {}
            _ => out.write_all(b"\r")?,
        }
    }
    while let Some(i) = memchr::memchr(b'\r', data) {
        match data.get(i + 1) {
            Some(b'\n') => {
                // Everything up to the CR; the LF starts the next run.
                out.write_all(&data[..i])?;
                data = &data[i + 1..];
            }
            Some(_) => {
                // A bare CR: data, kept in this run.
                out.write_all(&data[..=i])?;
                data = &data[i + 1..];
            }
            None => {
                out.write_all(&data[..i])?;
                carry.cr = true;
                return Ok(());
            }
        }
    }
    out.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    const CAPACITIES: [usize; 6] = [1, 2, 3, 7, 8, 8192];

    /// Reads the chunks of `sizes` from `input` (one carry, as for one
    /// message), then finishes; returns the output and the unread rest.
    fn run(input: &[u8], sizes: &[u64], cap: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut r = BufReader::with_capacity(cap, input);
        let mut out = Vec::new();
        let mut carry = Carry::default();
        for &size in sizes {
            read_chunk(&mut r, &mut out, size, &mut carry)?;
        }
        finish(&mut out, &mut carry)?;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?;
        Ok((out, rest))
    }

    /// Input (chunk octets, then what follows them), chunk sizes, output,
    /// the unread rest.
    type Row = (&'static [u8], &'static [u64], &'static [u8], &'static [u8]);

    const ROWS: &[Row] = &[
        (b"", &[0], b"", b""),
        (b"QUIT\r\n", &[0], b"", b"QUIT\r\n"),
        (b"hello\r\nQUIT\r\n", &[7], b"hello\n", b"QUIT\r\n"),
        // No dot handling: the DATA terminator and a command are data.
        (
            b"a\r\n.\r\nMAIL FROM:<x>\r\nb\r\nRSET\r\n",
            &[24],
            b"a\n.\nMAIL FROM:<x>\nb\n",
            b"RSET\r\n",
        ),
        (b"..x\r\n.\r\n", &[8], b"..x\n.\n", b""),
        // Bare CR and bare LF are data, kept as they are.
        (b"a\rb\nc\r\n", &[7], b"a\rb\nc\n", b""),
        (b"\r\r\n\n", &[4], b"\r\n\n", b""),
        // A message need not end with a line end; a final CR is data.
        (b"abc", &[3], b"abc", b""),
        (b"abc\r", &[4], b"abc\r", b""),
        (b"abc\rQUIT\r\n", &[4], b"abc\r", b"QUIT\r\n"),
        // The count ends the chunk, even inside a CRLF: the LF is the
        // start of what follows (here the next chunk).
        (b"a\r\nb", &[2, 2], b"a\nb", b""),
        (b"a\r\nb", &[2, 0, 2], b"a\nb", b""),
        (b"a\rxb", &[2, 2], b"a\rxb", b""),
        (b"a\r\r\n", &[2, 2], b"a\r\n", b""),
        (
            b"one\r\ntwo\r\nthree",
            &[4, 4, 4, 3],
            b"one\ntwo\nthree",
            b"",
        ),
        // Binary octets pass unchanged.
        (b"\0\xff\x80\r\n\x1b", &[6], b"\0\xff\x80\n\x1b", b""),
    ];

    #[test]
    fn table() {
        for (i, (input, sizes, want, rest)) in ROWS.iter().enumerate() {
            for cap in CAPACITIES {
                let (out, left) = run(input, sizes, cap).unwrap();
                assert_eq!(out, *want, "row {i}, capacity {cap}");
                assert_eq!(left, *rest, "row {i}, capacity {cap}");
            }
        }
    }

    #[test]
    fn short_input_is_an_eof() {
        for cap in CAPACITIES {
            let e = run(b"abc", &[4], cap).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
        // A huge count with little behind it: an error, not a wait or an
        // allocation of the count.
        let e = run(b"abc", &[1_000_000_000_000], 8192).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A chunk larger than any buffer is streamed to the sink in the
    /// reader's pieces.
    #[test]
    fn large_chunk_is_streamed() {
        struct Counting(u64, usize);
        impl Write for Counting {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0 += b.len() as u64;
                self.1 = self.1.max(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let input = vec![b'x'; 10 << 20];
        let mut r = BufReader::with_capacity(8192, &input[..]);
        let mut out = Counting(0, 0);
        read_chunk(&mut r, &mut out, 10 << 20, &mut Carry::default()).unwrap();
        assert_eq!(out.0, 10 << 20);
        assert!(out.1 <= 8192, "wrote {} octets at once", out.1);
    }

    proptest::proptest! {
        /// However a message is cut into chunks, and however the reader
        /// hands them out, the output is the whole input with each CRLF
        /// as LF, and nothing past the chunks is consumed.
        #[test]
        fn cuts_do_not_matter(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'\r', b'\n', b'.', 0xff]),
                0..200,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            cap in 1usize..9,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.push(0);
            cuts.push(input.len());
            cuts.sort_unstable();
            let sizes: Vec<u64> = cuts.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
            let mut wire = input.clone();
            wire.extend_from_slice(b"NEXT");
            let (out, rest) = run(&wire, &sizes, cap).unwrap();
            let mut want = Vec::new();
            for (i, &b) in input.iter().enumerate() {
                if !(b == b'\r' && input.get(i + 1) == Some(&b'\n')) {
                    want.push(b);
                }
            }
            proptest::prop_assert_eq!(out, want);
            proptest::prop_assert_eq!(rest, b"NEXT".to_vec());
        }
    }

    /// A reader that is interrupted before every piece, then fails.
    struct Flaky<'a> {
        data: &'a [u8],
        pos: usize,
        interrupt: bool,
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            unreachable!("read through BufRead")
        }
    }

    impl BufRead for Flaky<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.pos == self.data.len() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            Ok(&self.data[self.pos..(self.pos + 2).min(self.data.len())])
        }
        fn consume(&mut self, n: usize) {
            self.pos += n;
        }
    }

    #[test]
    fn interruptions_are_retried_and_errors_passed_on() {
        let mut r = Flaky {
            data: b"ab\r\ncd",
            pos: 0,
            interrupt: false,
        };
        let mut out = Vec::new();
        let mut carry = Carry::default();
        read_chunk(&mut r, &mut out, 5, &mut carry).unwrap();
        assert_eq!((out.as_slice(), r.pos), (&b"ab\nc"[..], 5));
        let e = read_chunk(&mut r, &mut out, 2, &mut carry).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
