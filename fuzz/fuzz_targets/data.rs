//! The DATA reader on arbitrary bytes, read through a small buffer.
//!
//! Input: byte 0 picks the `BufReader` capacity (1 to 64 octets), byte 1
//! the limits (bit 0: bare LF rejected; the rest: the size limit), the
//! remaining bytes are what the client sends after `354`.
//!
//! Invariants:
//! * `read_data` never panics, and returns `UnexpectedEof` exactly when the
//!   input holds no end line;
//! * the result does not depend on how the input is cut into chunks: the
//!   outcome and the output are the same with a capacity of 8192 and with
//!   the small one;
//! * the input is consumed through the end line `.<CRLF>` and not one octet
//!   further: what is left in the reader is exactly what followed it;
//! * the output is what a plain, octet-by-octet reading of RFC 5321
//!   4.1.1.4 and 4.5.2 (the model below) gives: message = everything before
//!   the first `.<CRLF>` that starts the data or follows a CRLF; leading
//!   dots removed; CRLF (and an accepted bare LF) written as LF; the size
//!   limit and a refused bare LF cut the output as documented;
//! * CRLF is normalised: the output holds a CR LF pair only where the
//!   message had a bare CR right before a CRLF (`\r\r\n`, the CR being
//!   data), never otherwise.

#![no_main]

use std::io::{BufReader, ErrorKind, Read};

use libfuzzer_sys::fuzz_target;
use postie::smtp::data::{BareLf, DataLimits, DataOutcome, read_data};

/// What one run of the reader gave: the outcome (or the error kind), the
/// output, and the input left unread.
type Run = (Result<DataOutcome, ErrorKind>, Vec<u8>, Vec<u8>);

fn run(input: &[u8], capacity: usize, limits: &DataLimits) -> Run {
    let mut reader = BufReader::with_capacity(capacity, input);
    let mut out = Vec::new();
    let outcome = read_data(&mut reader, &mut out, limits).map_err(|e| e.kind());
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    (outcome, out, rest)
}

/// The reference model: where the message ends, then its output.
fn model(input: &[u8], limits: &DataLimits) -> Run {
    // The end line: `.<CRLF>` at the start or right after a CRLF.
    let end = (0..input.len()).find(|&k| {
        (k == 0 || (k >= 2 && &input[k - 2..k] == b"\r\n")) && input[k..].starts_with(b".\r\n")
    });
    let Some(k) = end else {
        return (Err(ErrorKind::UnexpectedEof), Vec::new(), Vec::new());
    };
    let message = &input[..k];
    let size = k as u64;
    let bare_lf =
        (0..message.len()).find(|&p| message[p] == b'\n' && (p == 0 || message[p - 1] != b'\r'));
    let reject = limits.bare_lf == BareLf::Reject;
    let mut cut = usize::try_from(limits.max_size)
        .unwrap_or(usize::MAX)
        .min(k);
    if let (true, Some(p)) = (reject, bare_lf) {
        cut = cut.min(p);
    }
    let outcome = if size > limits.max_size {
        DataOutcome::TooBig { size }
    } else if reject && bare_lf.is_some() {
        DataOutcome::BareLf { size }
    } else {
        DataOutcome::Complete { size }
    };
    let out = render(&message[..cut], message.get(cut).copied());
    (Ok(outcome), out, input[k + 3..].to_vec())
}

/// The output for the first octets of a message, `next` being the octet
/// after them (a CR right before the cut is a line end's, and dropped, if
/// the LF follows).
fn render(prefix: &[u8], next: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in prefix.split_inclusive(|&c| c == b'\n') {
        let line = line.strip_prefix(b".").unwrap_or(line);
        if let Some(body) = line.strip_suffix(b"\n") {
            out.extend_from_slice(body.strip_suffix(b"\r").unwrap_or(body));
            out.push(b'\n');
        } else if next == Some(b'\n') && line.ends_with(b"\r") {
            out.extend_from_slice(&line[..line.len() - 1]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let [a, b, input @ ..] = data else {
        return;
    };
    let capacity = 1 + usize::from(a & 63);
    let limits = DataLimits {
        max_size: match b >> 1 {
            127 => 10 << 20,
            n => u64::from(n) * 3,
        },
        bare_lf: if b & 1 == 1 {
            BareLf::Reject
        } else {
            BareLf::Accept
        },
    };
    let big = run(input, 8192, &limits);
    let small = run(input, capacity, &limits);
    assert_eq!(big.0, small.0, "outcome depends on the chunking");
    if big.0.is_err() {
        // After an error the position inside the message is unspecified
        // and the session ends; only the outcome has to agree.
        assert_eq!(model(input, &limits).0, big.0, "error without cause");
        return;
    }
    assert_eq!(big.1, small.1, "output depends on the chunking");
    assert_eq!(big.2, small.2, "unread rest depends on the chunking");
    let expected = model(input, &limits);
    assert_eq!(big.0, expected.0, "outcome differs from the model");
    assert_eq!(big.1, expected.1, "output differs from the model");
    assert_eq!(big.2, expected.2, "not consumed exactly through .<CRLF>");
    let message = &input[..input.len() - big.2.len() - 3];
    if contains(&big.1, b"\r\n") {
        assert!(
            contains(message, b"\r\r\n"),
            "a CRLF in the output that is not a bare CR before a line end"
        );
    }
});
