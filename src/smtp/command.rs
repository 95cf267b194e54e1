//! Parsing one SMTP command line into a typed [`Command`] (RFC 5321 4.1.1).

use super::address::{Mailbox, ReversePath};

/// `BODY=` of RFC 6152.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// The ESMTP parameters of `MAIL FROM` that postie knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152).
    pub body: Option<Body>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail { from: ReversePath, params: MailParams },
    Rcpt { to: Mailbox },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help(Option<String>),
}

/// Why a line is not a command postie can act on; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a command verb we know: `500 5.5.2`.
    Unknown,
    /// A known verb with bad arguments: `501 5.5.4` (the text says what).
    Syntax(&'static str),
    /// A malformed address in MAIL or RCPT: `501 5.1.3` (from) / `501 5.1.3` (to).
    BadAddress(&'static str),
    /// An ESMTP parameter postie does not support: `555 5.5.4`.
    UnknownParam(String),
}

/// Parses one command line, without its line ending (`CRLF` or `LF`).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    todo!()
}
