//! Reading the message after `DATA` (RFC 5321 4.1.1.4, 4.5.2).

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

/// Reads a message from `input` up to the line `.` that ends it, writing the
/// unstuffed message, with LF line ends, to `out`.
///
/// Returns an error of kind `UnexpectedEof` if the input ends first, and
/// passes on read errors (a timeout is `WouldBlock` or `TimedOut`).
pub fn read_data<R: BufRead + ?Sized, W: Write + ?Sized>(
    input: &mut R,
    out: &mut W,
    limits: &DataLimits,
) -> io::Result<DataOutcome> {
    todo!()
}
