//! Every reply postie gives, in one table (RFC 5321 4.2, RFC 3463 codes).
//!
//! A reply is a value: the code, the enhanced status code (RFC 2034), the
//! text, and what the connection does next. Tests compare codes, never prose.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::chunk::Chunk;

/// What the connection does after sending a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the next command.
    Continue,
    /// Read the message (the reply is `354`).
    ReadData,
    /// Read the octets of a BDAT chunk first (RFC 3030 2): the reply is
    /// sent once they are read, and for the chunk that completes a message
    /// the reply is delivery's instead ([`super::Session::data_done`]).
    ReadChunk(Chunk),
    /// Close the connection: the client said QUIT (the reply is `221`).
    Quit,
    /// Close the connection on our side (a `421`, or a refusal that ends
    /// the session).
    Close,
    /// Start TLS (the reply is `220` to STARTTLS).
    StartTls,
}

/// One SMTP reply. `lines` holds the text of each line; a multi-line reply
/// (EHLO, HELP) is sent as `250-...` lines then a final `250 ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `x.y.z` of RFC 3463, or `None` where RFC 2034 asks for none (the
    /// greeting, EHLO/HELO, 354).
    pub enhanced: Option<&'static str>,
    pub lines: Vec<Cow<'static, str>>,
    pub action: Action,
}

impl Reply {
    pub fn build(
        code: u16,
        enhanced: Option<&'static str>,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
            action: Action::Continue,
        }
    }

    /// The same reply, closing the connection after it is sent.
    pub fn close(mut self) -> Self {
        self.action = Action::Close;
        self
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply on the wire, CRLF-terminated lines, every line carrying
    /// the enhanced code when there is one.
    pub fn to_wire(&self) -> String {
        let mut s = String::with_capacity(64);
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(|l| l.as_ref()).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            let _ = write!(s, "{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                s.push_str(e);
                if !text.is_empty() {
                    s.push(' ');
                }
            }
            s.push_str(text);
            s.push_str("\r\n");
        }
        s
    }
}

// The table. One function per reply; the text may carry a detail.

pub fn greeting(host: &str) -> Reply {
    Reply::build(220, None, format!("{host} ESMTP postie ready"))
}
/// LMTP's greeting, which names the protocol (RFC 2033 4.1: a client
/// that meant SMTP notices).
pub fn lmtp_greeting(host: &str) -> Reply {
    Reply::build(220, None, format!("{host} LMTP postie ready"))
}
pub fn closing(host: &str) -> Reply {
    let mut r = Reply::build(221, Some("2.0.0"), format!("{host} closing connection"));
    r.action = Action::Quit;
    r
}
/// Longest reply line, code and CRLF included (RFC 5321 4.5.3.1.5).
pub const MAX_LINE: usize = 512;

/// `s` if it is at most `max` octets long, else its start and `...`, in
/// `max` octets at most (in three if `max` is less).
fn shorten(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let room = max.saturating_sub(3);
    let end = s
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&end| end <= room)
        .last()
        .unwrap_or(0);
    Cow::Owned(format!("{}...", &s[..end]))
}

pub fn helo(host: &str, client: &str) -> Reply {
    // The client's name is echoed: a command line holds up to 505 octets
    // of it, so it is cut to keep the line within MAX_LINE.
    const FIXED: usize = "250-".len() + " Hello ".len() + ", pleased to meet you\r\n".len();
    let client = shorten(client, MAX_LINE.saturating_sub(FIXED + host.len()));
    Reply::build(
        250,
        None,
        format!("{host} Hello {client}, pleased to meet you"),
    )
}
/// The EHLO reply with its extensions (RFC 5321 4.1.1.1).
/// The EHLO reply; `starttls` when STARTTLS is offered (RFC 3207 4: not
/// once TLS is on).
pub fn ehlo(host: &str, client: &str, max_size: u64, starttls: bool) -> Reply {
    let mut r = helo(host, client);
    r.lines.push("PIPELINING".into());
    if starttls {
        r.lines.push("STARTTLS".into());
    }
    r.lines.push(format!("SIZE {max_size}").into());
    r.lines.push("8BITMIME".into());
    r.lines.push("BINARYMIME".into());
    r.lines.push("CHUNKING".into());
    r.lines.push("DSN".into());
    r.lines.push("ENHANCEDSTATUSCODES".into());
    r.lines.push("SMTPUTF8".into());
    r.lines.push("HELP".into());
    r
}
pub fn ok(text: &'static str) -> Reply {
    Reply::build(250, Some("2.0.0"), text)
}
/// `path` as the client would write it: `<a@b>`, or `<>`.
pub fn sender_ok(path: &str) -> Reply {
    Reply::build(250, Some("2.1.0"), format!("{path}... Sender ok"))
}
pub fn recipient_ok(rcpt: &str) -> Reply {
    Reply::build(250, Some("2.1.5"), format!("<{rcpt}>... Recipient ok"))
}
pub fn delivered(id: &str) -> Reply {
    Reply::build(
        250,
        Some("2.0.0"),
        format!("{id} Message accepted for delivery"),
    )
}
pub fn reset() -> Reply {
    Reply::build(250, Some("2.0.0"), "Reset state")
}
pub fn noop() -> Reply {
    Reply::build(250, Some("2.0.0"), "OK")
}
pub fn help() -> Reply {
    let mut r = Reply::build(214, Some("2.0.0"), "postie: commands are");
    r.lines.push("HELO EHLO MAIL RCPT DATA BDAT".into());
    r.lines.push("RSET NOOP QUIT HELP VRFY EXPN".into());
    r.lines.push("see postie(8) and RFC 5321".into());
    r
}
/// HELP in LMTP, whose greeting is LHLO.
pub fn lmtp_help() -> Reply {
    let mut r = Reply::build(214, Some("2.0.0"), "postie: LMTP commands are");
    r.lines.push("LHLO MAIL RCPT DATA".into());
    r.lines.push("RSET NOOP QUIT HELP VRFY".into());
    r.lines.push("see postie(8) and RFC 2033".into());
    r
}
/// RFC 5321 3.5.3: a server that will not verify says 252. Sendmail
/// sends 2.5.2 with it, but X.5.2 is a syntax error, "useful only as a
/// permanent error" (RFC 3463 3.6): 2.0.0, as Postfix.
pub fn vrfy() -> Reply {
    Reply::build(
        252,
        Some("2.0.0"),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}
pub fn start_data() -> Reply {
    let mut r = Reply::build(354, None, "Enter mail, end with \".\" on a line by itself");
    r.action = Action::ReadData;
    r
}
/// RFC 3207 4: `220 Ready to start TLS`.
pub fn start_tls() -> Reply {
    let mut r = Reply::build(220, Some("2.0.0"), "Ready to start TLS");
    r.action = Action::StartTls;
    r
}
/// STARTTLS where no certificate is configured, or on the local socket.
pub fn tls_not_available() -> Reply {
    Reply::build(502, Some("5.5.1"), "STARTTLS not available")
}
/// RFC 3207 4.2: a second STARTTLS.
pub fn tls_active() -> Reply {
    Reply::build(503, Some("5.5.1"), "TLS already active")
}
/// RFC 3207 4: this listener requires TLS before a transaction.
pub fn tls_required() -> Reply {
    Reply::build(530, Some("5.7.0"), "Must issue a STARTTLS command first")
}
pub fn expn_disabled() -> Reply {
    Reply::build(502, Some("5.5.1"), "EXPN not available")
}
pub fn shutting_down(host: &str) -> Reply {
    Reply::build(
        421,
        Some("4.3.2"),
        format!("{host} Service shutting down, closing connection"),
    )
    .close()
}
pub fn too_many_connections(host: &str) -> Reply {
    Reply::build(
        421,
        Some("4.7.0"),
        format!("{host} Too many connections, try again later"),
    )
    .close()
}
pub fn too_many_errors(host: &str) -> Reply {
    Reply::build(
        421,
        Some("4.7.0"),
        format!("{host} Too many errors, closing connection"),
    )
    .close()
}
pub fn timeout(host: &str) -> Reply {
    Reply::build(
        421,
        Some("4.4.2"),
        format!("{host} Timeout waiting for input, closing connection"),
    )
    .close()
}
/// The session's total time (`timeout-session`) is up: 421 like a
/// timeout, X.4.2 (bad connection) as for one.
pub fn session_too_long(host: &str) -> Reply {
    Reply::build(
        421,
        Some("4.4.2"),
        format!("{host} Session time limit reached, closing connection"),
    )
    .close()
}
/// inetd mode with a configuration it cannot run with: the client is
/// told before the process exits (RFC 5321 3.8: 421; RFC 3463 X.3.5,
/// system incorrectly configured). The host name is not known for sure.
pub fn misconfigured() -> Reply {
    Reply::build(
        421,
        Some("4.3.5"),
        "Service not available: configuration error, try again later",
    )
    .close()
}
/// RFC 5321 4.2.2: 450, mailbox unavailable (busy or blocked for policy
/// reasons); RFC 3463 X.2.0, other mailbox status.
pub fn mailbox_unavailable(rcpt: &str) -> Reply {
    Reply::build(
        450,
        Some("4.2.0"),
        format!("<{rcpt}>... Mailbox unavailable, try again later"),
    )
}
/// A local submitter whose uid could not be looked up (RFC 5321 4.2.3:
/// 421, service not available; X.3.0 of RFC 3463, other system status).
pub fn submitter_unknown() -> Reply {
    Reply::build(
        421,
        Some("4.3.0"),
        "Cannot look up the submitting user, try again later",
    )
    .close()
}
pub fn lookup_failed() -> Reply {
    Reply::build(
        451,
        Some("4.3.0"),
        "Temporary failure looking up recipient, try again later",
    )
}
pub fn local_error(detail: &'static str) -> Reply {
    Reply::build(
        451,
        Some("4.3.0"),
        format!("Local error: {detail}; try again later"),
    )
}
pub fn lock_timeout() -> Reply {
    Reply::build(451, Some("4.2.0"), "Mailbox busy, try again later")
}
pub fn too_many_recipients() -> Reply {
    Reply::build(452, Some("4.5.3"), "Too many recipients")
}
pub fn disk_full() -> Reply {
    Reply::build(
        452,
        Some("4.3.1"),
        "Insufficient system storage, try again later",
    )
}
pub fn over_quota() -> Reply {
    Reply::build(452, Some("4.2.2"), "Mailbox full, try again later")
}
/// RFC 3463 X.5.1, "unsupported" command, as sendmail and chasquid say
/// (X.5.2 would fit "unrecognized" too; a verb postie does not know is
/// both).
pub fn unknown_command() -> Reply {
    Reply::build(500, Some("5.5.1"), "Command unrecognized")
}
/// An HTTP request line on the SMTP port (a cross-protocol request):
/// refused and the connection closed, so that nothing sent after it (the
/// body of a POST) is read as SMTP. The code is chasquid's: 502, and X.7.0,
/// a policy refusal. RFC 5321 7.8 lets a server under attack close the
/// connection (Postfix answers `221 2.7.0` to the same lines and closes).
pub fn not_smtp(host: &str) -> Reply {
    Reply::build(
        502,
        Some("5.7.0"),
        format!("{host} HTTP request refused, this is an SMTP server; closing connection"),
    )
    .close()
}
pub fn line_too_long() -> Reply {
    Reply::build(500, Some("5.5.2"), "Line too long")
}
pub fn syntax(detail: &'static str) -> Reply {
    Reply::build(501, Some("5.5.4"), format!("Syntax error: {detail}"))
}
/// RFC 3463 X.1.7, bad sender's mailbox address syntax.
pub fn bad_sender(detail: &'static str) -> Reply {
    Reply::build(
        501,
        Some("5.1.7"),
        format!("Bad sender address syntax: {detail}"),
    )
}
/// RFC 3463 X.1.3, bad destination mailbox address syntax.
pub fn bad_address(detail: &'static str) -> Reply {
    Reply::build(501, Some("5.1.3"), format!("Bad address syntax: {detail}"))
}
pub fn bad_sequence(detail: &'static str) -> Reply {
    Reply::build(503, Some("5.5.1"), detail)
}
pub fn unknown_user(rcpt: &str) -> Reply {
    Reply::build(550, Some("5.1.1"), format!("<{rcpt}>... User unknown"))
}
/// RFC 6531 3.5: a UTF-8 sender in a transaction without the SMTPUTF8
/// parameter is 550 ("mailbox unavailable"), X.6.7 "Non-ASCII addresses
/// not permitted for that sender/recipient". The address is not echoed:
/// the client said it cannot take UTF-8.
pub fn non_ascii_sender() -> Reply {
    Reply::build(
        550,
        Some("5.6.7"),
        "Non-ASCII sender address needs the SMTPUTF8 parameter",
    )
}
/// RFC 6531 3.5: a UTF-8 recipient in a transaction without the SMTPUTF8
/// parameter is 553 ("mailbox name not allowed"), X.6.7.
pub fn non_ascii_recipient() -> Reply {
    Reply::build(
        553,
        Some("5.6.7"),
        "Non-ASCII recipient address needs the SMTPUTF8 parameter",
    )
}
pub fn relay_denied(rcpt: &str) -> Reply {
    Reply::build(550, Some("5.7.1"), format!("<{rcpt}>... Relaying denied"))
}
pub fn bare_lf() -> Reply {
    Reply::build(
        550,
        Some("5.6.0"),
        "Message contains a bare LF line ending; use CRLF",
    )
}
pub fn message_too_big(max: u64) -> Reply {
    Reply::build(
        552,
        Some("5.3.4"),
        format!("Message size exceeds fixed limit of {max} octets"),
    )
}
/// A BDAT chunk read and kept (RFC 3030 2), and how many octets it held.
pub fn chunk_received(size: u64) -> Reply {
    Reply::build(250, Some("2.0.0"), format!("{size} octets received"))
}
/// `BDAT` whose arguments are not `count [LAST]` (RFC 3030 2). X.5.4,
/// invalid command arguments, as for any syntax error.
pub fn bdat_syntax() -> Reply {
    Reply::build(501, Some("5.5.4"), "Syntax: BDAT count [LAST]")
}
/// `BDAT` whose count is not a number: how many octets follow is unknown,
/// so whatever comes next cannot be told from the chunk and the session
/// ends (Postfix hangs up too, with `521 5.5.4`; RFC 7504 3 keeps 521 for
/// hosts that take no mail at all, so here it is the syntax error's 501).
pub fn bdat_count_unknown(host: &str) -> Reply {
    Reply::build(
        501,
        Some("5.5.4"),
        format!("{host} Syntax: BDAT count [LAST]; chunk size unknown, closing connection"),
    )
    .close()
}
pub fn no_valid_recipients() -> Reply {
    Reply::build(554, Some("5.5.1"), "No valid recipients")
}
pub fn unknown_parameter(param: &str) -> Reply {
    Reply::build(555, Some("5.5.4"), format!("Unsupported parameter {param}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_carries_enhanced_code() {
        assert_eq!(noop().to_wire(), "250 2.0.0 OK\r\n");
    }

    #[test]
    fn multi_line_uses_dashes_until_the_last() {
        let w = ehlo("h.example", "c", 1000, false).to_wire();
        let lines: Vec<&str> = w.split_terminator("\r\n").collect();
        let n = lines.len();
        assert_eq!(n, 10);
        assert!(lines[..n - 1].iter().all(|l| l.starts_with("250-")));
        assert_eq!(lines[n - 1], "250 HELP");
        assert!(lines.contains(&"250-CHUNKING"));
        assert!(lines.contains(&"250-BINARYMIME"));
        assert!(lines.contains(&"250-DSN"));
        assert!(lines.contains(&"250-SMTPUTF8"));
        assert!(lines.contains(&"250-SIZE 1000"));
        assert!(!lines.contains(&"250-STARTTLS"));
        let w = ehlo("h.example", "c", 1000, true).to_wire();
        assert!(w.contains("250-STARTTLS\r\n"), "{w}");
    }

    /// Found by the `session` fuzz target: `EHLO` with a name of 470
    /// octets got a first reply line of 513 (RFC 5321 4.5.3.1.5: 512).
    #[test]
    fn helo_lines_fit_in_512_octets() {
        for name in ["a".repeat(505), format!("{}.example", "b".repeat(470))] {
            for r in [
                helo("mx.example.org", &name),
                ehlo("mx.example.org", &name, 1, true),
            ] {
                let wire = r.to_wire();
                for line in wire.split_terminator("\r\n") {
                    assert!(line.len() + 2 <= MAX_LINE, "{} octets", line.len() + 2);
                }
                assert!(wire.starts_with("250"));
                assert!(wire.contains("Hello aaaa") || wire.contains("Hello bbbb"));
                assert!(wire.contains("..., pleased to meet you"));
            }
        }
        // The longest name that fits is shown whole.
        let host = "mx.example.org";
        let fits = "c".repeat(MAX_LINE - 4 - host.len() - 7 - 23);
        let line = helo(host, &fits).to_wire();
        assert_eq!(line.len(), MAX_LINE);
        assert!(line.contains(&format!(" {fits},")));
        assert_eq!(
            helo(host, "client.example").lines[0],
            format!("{host} Hello client.example, pleased to meet you")
        );
    }

    #[test]
    fn shorten_cuts_on_a_character_boundary() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcdef", 5), "ab...");
        assert_eq!(shorten("ééé", 6), "ééé");
        assert_eq!(shorten("ééé", 5), "é...");
        assert_eq!(shorten("abc", 2), "...");
    }

    #[test]
    fn close_action_only_where_asked() {
        assert_eq!(closing("h").action, Action::Quit);
        assert_eq!(too_many_errors("h").code, 421);
        assert_eq!(start_data().action, Action::ReadData);
        assert_eq!(noop().action, Action::Continue);
    }
}
