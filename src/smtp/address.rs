//! Mailbox addresses and SMTP paths (RFC 5321 4.1.2).

use std::fmt;

/// A mailbox as the client named it: `local@domain`, or a bare local part
/// (Sendmail and RFC 5321 4.5.1 accept `postmaster` without a domain).
///
/// `local` is the decoded local part: quotes removed and quoted pairs
/// unescaped, as in the RFC 5321 definition of equality of quoted forms.
/// `domain` is as sent, case preserved; an address literal keeps its
/// brackets (`[127.0.0.1]`, `[IPv6:::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: Option<String>,
}

/// The argument of `MAIL FROM`: a mailbox, or the null path `<>` used by
/// bounces (RFC 5321 4.5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

/// Why a path did not parse. Every variant is answered `501 5.1.3` or
/// `501 5.5.4` by the session; the text is for the reply and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError(pub &'static str);

impl fmt::Display for Mailbox {
    /// Renders the mailbox in SMTP form, quoting the local part when it is
    /// not a dot-atom (RFC 5321 4.1.2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl fmt::Display for ReversePath {
    /// `<>` for the null path, else the mailbox without angle brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

/// Parses a path argument: `<a@b>`, `<@x,@y:a@b>` (source route, ignored),
/// `<"quoted local"@b>`, `<a@[127.0.0.1]>`, and Sendmail's leniency of a bare
/// `a@b` without brackets. Returns the mailbox (or `None` for `<>`, which only
/// a reverse path may use; the caller decides) and the rest of the line after
/// the path (the ESMTP parameters, leading spaces not stripped).
pub fn parse_path(s: &str) -> Result<(Option<Mailbox>, &str), AddrError> {
    todo!()
}
