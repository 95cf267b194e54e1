//! Parsing one SMTP command line into a typed [`Command`] (RFC 5321 4.1.1).

use super::address::{Mailbox, ReversePath, parse_path};
use super::dsn_params::{EnvId, Notify, Orcpt, Ret};

/// `BODY=` of RFC 6152, and `BINARYMIME` of RFC 3030 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    /// Octets that need not form lines; only `BDAT` may carry them (RFC
    /// 3030 3).
    BinaryMime,
}

/// The ESMTP parameters of `MAIL FROM` that postie knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152), `BODY=BINARYMIME` (RFC 3030).
    pub body: Option<Body>,
    /// `RET=FULL|HDRS` (RFC 3461 4.3).
    pub ret: Option<Ret>,
    /// `ENVID=xtext` (RFC 3461 4.4).
    pub envid: Option<EnvId>,
    /// `SMTPUTF8` (RFC 6531 3.4): the transaction may carry UTF-8
    /// addresses and headers.
    pub smtputf8: bool,
}

/// The ESMTP parameters of `RCPT TO` that postie knows: those of DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=NEVER|SUCCESS,FAILURE,DELAY` (RFC 3461 4.1).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext` (RFC 3461 4.2).
    pub orcpt: Option<Orcpt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// LMTP's EHLO (RFC 2033 4.1).
    Lhlo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox,
        params: RcptParams,
    },
    Data,
    /// `BDAT size [LAST]` (RFC 3030 2): `size` octets of the message
    /// follow the line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help(Option<String>),
    /// RFC 3207: no parameters.
    StartTls,
}

/// Why a line is not a command postie can act on; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a command verb we know: `500 5.5.1`.
    Unknown,
    /// A known verb with bad arguments: `501 5.5.4` (the text says what).
    Syntax(&'static str),
    /// A malformed sender in MAIL: `501 5.1.7` (RFC 3463 X.1.7).
    BadSender(&'static str),
    /// A malformed recipient in RCPT: `501 5.1.3` (RFC 3463 X.1.3).
    BadAddress(&'static str),
    /// An ESMTP parameter postie does not support: `555 5.5.4`.
    UnknownParam(String),
    /// An HTTP request line (`GET / HTTP/1.1`): someone made an HTTP client
    /// talk to the SMTP port, maybe a web page with an SMTP dialog as the
    /// body of a POST. `502 5.7.0` and close, as chasquid; Postfix closes
    /// too (`smtpd_forbidden_commands`).
    NotSmtp,
    /// `BDAT` with arguments other than `count [LAST]`: `501 5.5.4`. With
    /// the count known its octets are still read and dropped; without it
    /// the session cannot tell where the next command starts, and ends.
    BdatSyntax(Option<u64>),
}

/// HTTP methods (RFC 9110 9.3, RFC 5789). None is an SMTP verb.
const HTTP_METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"OPTIONS", b"DELETE", b"PATCH", b"TRACE",
];

/// Parses one command line, without its line ending (`CRLF` or `LF`).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let verb_len = line
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(line.len());
    let word = &line[..verb_len];
    let rest = &line[verb_len..];
    // Checked before anything else on the line, so that no byte of an HTTP
    // request makes it a mere syntax error.
    if HTTP_METHODS.iter().any(|m| m.eq_ignore_ascii_case(word))
        && rest.first().is_none_or(|&c| is_wsp(c))
    {
        return Err(ParseError::NotSmtp);
    }
    let verb = Verb::from_bytes(word).ok_or(ParseError::Unknown)?;
    // The verb ends at a space or the end of the line (`NOOPX`, `MAIL:` are
    // not commands); a control character there is a known verb's syntax error.
    if rest
        .first()
        .is_some_and(|&c| !is_wsp(c) && !c.is_ascii_control())
    {
        return Err(ParseError::Unknown);
    }
    // Before the checks below, so that any BDAT line says whether its
    // octets can be skipped.
    if let Verb::Bdat = verb {
        return parse_bdat(rest);
    }
    if rest.iter().any(|&c| c.is_ascii_control() && c != b'\t') {
        return Err(ParseError::Syntax("control character in command"));
    }
    let rest = match std::str::from_utf8(rest) {
        Ok(r) if r.is_ascii() => r,
        // RFC 6531 3.3: MAIL and RCPT may name UTF-8 addresses (whether
        // this transaction may is the session's check: SMTPUTF8); bytes
        // that are not UTF-8 are a syntax error there as anywhere.
        Ok(r) if matches!(verb, Verb::Mail | Verb::Rcpt) => r,
        Err(_) if matches!(verb, Verb::Mail | Verb::Rcpt) => {
            return Err(ParseError::Syntax("invalid UTF-8 in command"));
        }
        _ => return Err(ParseError::Syntax("non-ASCII character in command")),
    };
    let arg = rest.trim_matches(WSP);
    match verb {
        Verb::Helo => first_token(arg)
            .map(Command::Helo)
            .ok_or(ParseError::Syntax("HELO requires domain address")),
        Verb::Ehlo => first_token(arg)
            .map(Command::Ehlo)
            .ok_or(ParseError::Syntax("EHLO requires domain address")),
        Verb::Lhlo => first_token(arg)
            .map(Command::Lhlo)
            .ok_or(ParseError::Syntax("LHLO requires domain address")),
        Verb::Mail => parse_mail(rest),
        Verb::Rcpt => parse_rcpt(rest),
        Verb::Data => no_argument(arg, Command::Data, "DATA takes no arguments"),
        Verb::Bdat => parse_bdat(rest.as_bytes()),
        Verb::Rset => no_argument(arg, Command::Rset, "RSET takes no arguments"),
        Verb::Quit => no_argument(arg, Command::Quit, "QUIT takes no arguments"),
        Verb::Noop => Ok(Command::Noop),
        Verb::Vrfy => required(arg, "VRFY requires an argument").map(Command::Vrfy),
        Verb::Expn => required(arg, "EXPN requires an argument").map(Command::Expn),
        Verb::Help => Ok(Command::Help((!arg.is_empty()).then(|| arg.to_owned()))),
        Verb::StartTls => no_argument(arg, Command::StartTls, "STARTTLS takes no arguments"),
    }
}

/// Spaces and tabs separate words on a command line.
const WSP: [char; 2] = [' ', '\t'];

fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Helo,
    Ehlo,
    Lhlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
}

impl Verb {
    const ALL: &'static [(&'static [u8], Verb)] = &[
        (b"HELO", Verb::Helo),
        (b"EHLO", Verb::Ehlo),
        (b"LHLO", Verb::Lhlo),
        (b"MAIL", Verb::Mail),
        (b"RCPT", Verb::Rcpt),
        (b"DATA", Verb::Data),
        (b"BDAT", Verb::Bdat),
        (b"RSET", Verb::Rset),
        (b"NOOP", Verb::Noop),
        (b"QUIT", Verb::Quit),
        (b"VRFY", Verb::Vrfy),
        (b"EXPN", Verb::Expn),
        (b"HELP", Verb::Help),
        (b"STARTTLS", Verb::StartTls),
    ];

    fn from_bytes(word: &[u8]) -> Option<Verb> {
        Self::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|&(_, verb)| verb)
    }
}

fn first_token(arg: &str) -> Option<String> {
    arg.split(WSP)
        .next()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

fn no_argument(arg: &str, cmd: Command, msg: &'static str) -> Result<Command, ParseError> {
    if arg.is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::Syntax(msg))
    }
}

fn required(arg: &str, msg: &'static str) -> Result<String, ParseError> {
    if arg.is_empty() {
        Err(ParseError::Syntax(msg))
    } else {
        Ok(arg.to_owned())
    }
}

/// Strips the leading spaces and `keyword` (`FROM:` / `TO:`, any case),
/// returning what follows the colon.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = rest.trim_start_matches(WSP);
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &rest[keyword.len()..])
}

/// `MAIL FROM:<reverse-path> [SP Mail-parameters]`.
fn parse_mail(rest: &str) -> Result<Command, ParseError> {
    let path =
        after_keyword(rest, "FROM:").ok_or(ParseError::Syntax("syntax: MAIL FROM:<address>"))?;
    let (mailbox, params_text) = parse_path(path).map_err(|e| ParseError::BadSender(e.0))?;
    let from = mailbox.map_or(ReversePath::Null, ReversePath::Mailbox);
    let mut params = MailParams::default();
    for param in params_text.split(WSP).filter(|p| !p.is_empty()) {
        let (keyword, value) = split_param(param)?;
        if keyword.eq_ignore_ascii_case("SIZE") {
            if params.size.is_some() {
                return Err(ParseError::Syntax("duplicate SIZE parameter"));
            }
            params.size = Some(parse_size(value)?);
        } else if keyword.eq_ignore_ascii_case("BODY") {
            if params.body.is_some() {
                return Err(ParseError::Syntax("duplicate BODY parameter"));
            }
            params.body = Some(match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") => Body::SevenBit,
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => Body::EightBitMime,
                Some(v) if v.eq_ignore_ascii_case("BINARYMIME") => Body::BinaryMime,
                _ => {
                    return Err(ParseError::Syntax(
                        "BODY must be 7BIT, 8BITMIME or BINARYMIME",
                    ));
                }
            });
        } else if keyword.eq_ignore_ascii_case("RET") {
            if params.ret.is_some() {
                return Err(ParseError::Syntax("duplicate RET parameter"));
            }
            params.ret = Some(
                value
                    .and_then(Ret::parse)
                    .ok_or(ParseError::Syntax("RET must be FULL or HDRS"))?,
            );
        } else if keyword.eq_ignore_ascii_case("ENVID") {
            if params.envid.is_some() {
                return Err(ParseError::Syntax("duplicate ENVID parameter"));
            }
            let value = value.ok_or(ParseError::Syntax("ENVID requires a value"))?;
            params.envid = Some(EnvId::parse(value).map_err(ParseError::Syntax)?);
        } else if keyword.eq_ignore_ascii_case("SMTPUTF8") {
            // RFC 6531 3.4: "it MUST not accept a value".
            if params.smtputf8 {
                return Err(ParseError::Syntax("duplicate SMTPUTF8 parameter"));
            }
            if value.is_some() {
                return Err(ParseError::Syntax("SMTPUTF8 takes no value"));
            }
            params.smtputf8 = true;
        } else {
            return Err(ParseError::UnknownParam(keyword.to_owned()));
        }
    }
    Ok(Command::Mail { from, params })
}

/// `RCPT TO:<forward-path> [SP Rcpt-parameters]`.
fn parse_rcpt(rest: &str) -> Result<Command, ParseError> {
    let path = after_keyword(rest, "TO:").ok_or(ParseError::Syntax("syntax: RCPT TO:<address>"))?;
    let (mailbox, params_text) = parse_path(path).map_err(|e| ParseError::BadAddress(e.0))?;
    let to = mailbox.ok_or(ParseError::BadAddress("null path not allowed as recipient"))?;
    let mut params = RcptParams::default();
    for param in params_text.split(WSP).filter(|p| !p.is_empty()) {
        let (keyword, value) = split_param(param)?;
        if keyword.eq_ignore_ascii_case("NOTIFY") {
            if params.notify.is_some() {
                return Err(ParseError::Syntax("duplicate NOTIFY parameter"));
            }
            params.notify = Some(value.and_then(Notify::parse).ok_or(ParseError::Syntax(
                "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
            ))?);
        } else if keyword.eq_ignore_ascii_case("ORCPT") {
            if params.orcpt.is_some() {
                return Err(ParseError::Syntax("duplicate ORCPT parameter"));
            }
            let value = value.ok_or(ParseError::Syntax("ORCPT requires a value"))?;
            params.orcpt = Some(Orcpt::parse(value).map_err(ParseError::Syntax)?);
        } else {
            return Err(ParseError::UnknownParam(keyword.to_owned()));
        }
    }
    Ok(Command::Rcpt { to, params })
}

/// Splits `esmtp-param = esmtp-keyword ["=" esmtp-value]` (RFC 5321 4.1.2).
fn split_param(param: &str) -> Result<(&str, Option<&str>), ParseError> {
    let (keyword, value) = match param.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (param, None),
    };
    let keyword_ok = keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
        && keyword
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !keyword_ok {
        return Err(ParseError::Syntax("bad parameter keyword"));
    }
    // esmtp-value = 1*(%d33-60 / %d62-126): not empty, no "=". RFC 6531
    // 3.3 adds UTF8-non-ascii, but no parameter postie knows takes it (a
    // UTF-8 ORCPT is RFC 6533's, not supported).
    if value.is_some_and(|v| v.is_empty() || v.contains('=') || !v.is_ascii()) {
        return Err(ParseError::Syntax("bad parameter value"));
    }
    Ok((keyword, value))
}

/// `BDAT SP chunk-size [SP end-marker]`, `chunk-size = 1*DIGIT`,
/// `end-marker = "LAST"` (RFC 3030 2), on what follows the verb. Any
/// octet may be there: this runs before the checks for control and 8-bit
/// characters, which would leave the count unread.
fn parse_bdat(rest: &[u8]) -> Result<Command, ParseError> {
    let mut words = rest.split(|&c| is_wsp(c)).filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.iter().all(u8::is_ascii_digit))
        .and_then(|w| std::str::from_utf8(w).ok()?.parse::<u64>().ok())
        .ok_or(ParseError::BdatSyntax(None))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(ParseError::BdatSyntax(Some(size))),
    };
    if words.next().is_some() {
        return Err(ParseError::BdatSyntax(Some(size)));
    }
    Ok(Command::Bdat { size, last })
}

/// `SIZE=n` of RFC 1870: decimal digits only.
fn parse_size(value: Option<&str>) -> Result<u64, ParseError> {
    match value {
        Some(v) if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) => v
            .parse()
            .map_err(|_| ParseError::Syntax("SIZE value too large")),
        _ => Err(ParseError::Syntax("SIZE requires a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;
    use ParseError::{BadAddress, BadSender, BdatSyntax, NotSmtp, Syntax, Unknown, UnknownParam};
    use proptest::prelude::*;

    fn mb(local: &str, domain: Option<&str>) -> Mailbox {
        Mailbox {
            local: local.to_owned(),
            domain: domain.map(str::to_owned),
        }
    }

    fn from(local: &str, domain: &str) -> ReversePath {
        ReversePath::Mailbox(mb(local, Some(domain)))
    }

    fn mail(from: ReversePath, size: Option<u64>, body: Option<Body>) -> Command {
        Mail {
            from,
            params: MailParams {
                size,
                body,
                ..MailParams::default()
            },
        }
    }

    fn rcpt(local: &str, domain: Option<&str>) -> Command {
        Rcpt {
            to: mb(local, domain),
            params: RcptParams::default(),
        }
    }

    fn unknown(p: &str) -> ParseError {
        UnknownParam(p.to_owned())
    }

    #[test]
    fn sendmail_telnet_session() {
        let cases = [
            (
                "HELO frogbog.localdomain",
                Ok(Helo("frogbog.localdomain".into())),
            ),
            (
                "mail from: jon@frogbog",
                Ok(mail(from("jon", "frogbog"), None, None)),
            ),
            ("rcpt to: jon@razorback", Ok(rcpt("jon", Some("razorback")))),
            ("data", Ok(Data)),
            ("quit", Ok(Quit)),
            (
                "rcpt to: elvis@razorback",
                Ok(rcpt("elvis", Some("razorback"))),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line.as_bytes()), want, "line {line:?}");
        }
    }

    #[test]
    fn table() {
        let eight = Some(Body::EightBitMime);
        let seven = Some(Body::SevenBit);
        let ab = || from("a", "b");
        let cases: Vec<(&[u8], Result<Command, ParseError>)> = vec![
            // Verbs, any case.
            (b"HELO client.example", Ok(Helo("client.example".into()))),
            (b"helo client.example", Ok(Helo("client.example".into()))),
            (b"HeLo client.example  ", Ok(Helo("client.example".into()))),
            (b"HELO\tclient.example", Ok(Helo("client.example".into()))),
            (b"HELO [192.0.2.1]", Ok(Helo("[192.0.2.1]".into()))),
            (b"HELO a b", Ok(Helo("a".into()))),
            (b"HELO", Err(Syntax("HELO requires domain address"))),
            (b"HELO   ", Err(Syntax("HELO requires domain address"))),
            (b"EHLO client.example", Ok(Ehlo("client.example".into()))),
            (b"ehlo Client_Host", Ok(Ehlo("Client_Host".into()))),
            (b"EHLO", Err(Syntax("EHLO requires domain address"))),
            (b"LHLO mx.example", Ok(Lhlo("mx.example".into()))),
            (b"lhlo", Err(Syntax("LHLO requires domain address"))),
            (b"DATA", Ok(Data)),
            (b"DATA ", Ok(Data)),
            (b"DATA x", Err(Syntax("DATA takes no arguments"))),
            (b"RSET", Ok(Rset)),
            (b"rset", Ok(Rset)),
            (b"RSET now", Err(Syntax("RSET takes no arguments"))),
            (b"NOOP", Ok(Noop)),
            (b"noop anything at all", Ok(Noop)),
            (b"STARTTLS", Ok(StartTls)),
            (b"starttls  ", Ok(StartTls)),
            (
                b"STARTTLS now",
                Err(ParseError::Syntax("STARTTLS takes no arguments")),
            ),
            (b"QUIT", Ok(Quit)),
            (b"QUIT now", Err(Syntax("QUIT takes no arguments"))),
            (b"VRFY jon", Ok(Vrfy("jon".into()))),
            (b"vrfy  Jon Smith  ", Ok(Vrfy("Jon Smith".into()))),
            (b"VRFY", Err(Syntax("VRFY requires an argument"))),
            (b"VRFY  ", Err(Syntax("VRFY requires an argument"))),
            (b"EXPN staff", Ok(Expn("staff".into()))),
            (b"EXPN", Err(Syntax("EXPN requires an argument"))),
            (b"HELP", Ok(Help(None))),
            (b"HELP ", Ok(Help(None))),
            (b"help MAIL", Ok(Help(Some("MAIL".into())))),
            // Not commands.
            (b"", Err(Unknown)),
            (b" ", Err(Unknown)),
            (b" HELO x", Err(Unknown)),
            (b"FOO bar", Err(Unknown)),
            (b"TURN", Err(Unknown)),
            (b"STARTTLSX", Err(Unknown)),
            (b"MAILFROM:<a@b>", Err(Unknown)),
            (b"MAIL:<a@b>", Err(Unknown)),
            (b"NOOPX", Err(Unknown)),
            (b"HEL", Err(Unknown)),
            (b"QUIT2", Err(Unknown)),
            (b"Q\xc3\x9cIT", Err(Unknown)),
            (b"\xff\xfe", Err(Unknown)),
            (b"\x00QUIT", Err(Unknown)),
            (b"\r", Err(Unknown)),
            // HTTP request lines: cross-protocol requests, refused whole.
            (b"GET / HTTP/1.1", Err(NotSmtp)),
            (b"POST / HTTP/1.1", Err(NotSmtp)),
            (b"HEAD / HTTP/1.0", Err(NotSmtp)),
            (b"PUT /x HTTP/1.1", Err(NotSmtp)),
            (b"CONNECT mx.example:25 HTTP/1.1", Err(NotSmtp)),
            (b"OPTIONS * HTTP/1.1", Err(NotSmtp)),
            (b"DELETE /x HTTP/1.1", Err(NotSmtp)),
            (b"PATCH /x HTTP/1.1", Err(NotSmtp)),
            (b"TRACE / HTTP/1.1", Err(NotSmtp)),
            (b"get /", Err(NotSmtp)),
            (b"GET", Err(NotSmtp)),
            (b"GET\t/", Err(NotSmtp)),
            (b"GET /\xff", Err(NotSmtp)),
            (b"GETS /", Err(Unknown)),
            (b"GET/ HTTP/1.1", Err(Unknown)),
            // Control characters and 8-bit bytes after a known verb.
            (b"QUIT\r", Err(Syntax("control character in command"))),
            (b"DATA\x00", Err(Syntax("control character in command"))),
            (b"NOOP a\rb", Err(Syntax("control character in command"))),
            (b"HELO a\x7f", Err(Syntax("control character in command"))),
            (
                b"HELO a\x1b[0m",
                Err(Syntax("control character in command")),
            ),
            (
                b"MAIL FROM:<a@b>\r",
                Err(Syntax("control character in command")),
            ),
            (
                b"RCPT TO:<a\x00@b>",
                Err(Syntax("control character in command")),
            ),
            (
                b"HELO h\xc3\xa9",
                Err(Syntax("non-ASCII character in command")),
            ),
            (b"HELO \xff", Err(Syntax("non-ASCII character in command"))),
            // RFC 6531: UTF-8 addresses parse (the session decides whether
            // the transaction may carry them); bytes that are not UTF-8 do not.
            (
                b"MAIL FROM:<j\xc3\xb6n@b>",
                Ok(mail(from("j\u{f6}n", "b"), None, None)),
            ),
            (
                b"RCPT TO:<a@b\x80>",
                Err(Syntax("invalid UTF-8 in command")),
            ),
            (
                b"MAIL FROM:<\xff@b>",
                Err(Syntax("invalid UTF-8 in command")),
            ),
            // An overlong encoding of "<", and a lone surrogate, are not UTF-8.
            (
                b"MAIL FROM:\xc0\xbca@b>",
                Err(Syntax("invalid UTF-8 in command")),
            ),
            (
                b"RCPT TO:<\xed\xa0\x80@b>",
                Err(Syntax("invalid UTF-8 in command")),
            ),
            (
                b"VRFY j\xc3\xb6n",
                Err(Syntax("non-ASCII character in command")),
            ),
            (
                b"MAIL FROM:<j\xc3\xb6n@b> SMTPUTF8",
                Ok(Mail {
                    from: from("j\u{f6}n", "b"),
                    params: MailParams {
                        smtputf8: true,
                        ..MailParams::default()
                    },
                }),
            ),
            (
                b"MAIL FROM:<a@b> smtputf8 BODY=8BITMIME",
                Ok(Mail {
                    from: ab(),
                    params: MailParams {
                        smtputf8: true,
                        body: Some(Body::EightBitMime),
                        ..MailParams::default()
                    },
                }),
            ),
            (
                b"RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@b>",
                Ok(rcpt("\u{7528}\u{6237}", Some("b"))),
            ),
            (
                b"MAIL FROM:<a@b> SMTPUTF8=yes",
                Err(Syntax("SMTPUTF8 takes no value")),
            ),
            (
                b"MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8",
                Err(Syntax("duplicate SMTPUTF8 parameter")),
            ),
            (b"RCPT TO:<a@b> SMTPUTF8", Err(unknown("SMTPUTF8"))),
            (
                b"MAIL FROM:<a@b> ENVID=\xc3\xa9",
                Err(Syntax("bad parameter value")),
            ),
            (
                b"MAIL FROM:<a@b> SMTP\xc3\x9cTF8",
                Err(Syntax("bad parameter keyword")),
            ),
            // MAIL.
            (b"MAIL FROM:<a@b>", Ok(mail(ab(), None, None))),
            (b"mail from:<a@b>", Ok(mail(ab(), None, None))),
            (b"MAIL FROM: <a@b>", Ok(mail(ab(), None, None))),
            (b"MAIL   FROM:   <a@b>  ", Ok(mail(ab(), None, None))),
            (b"MAIL\tFROM:\t<a@b>", Ok(mail(ab(), None, None))),
            (b"MAIL FROM:<>", Ok(mail(ReversePath::Null, None, None))),
            (b"MAIL FROM: <>", Ok(mail(ReversePath::Null, None, None))),
            (
                b"MAIL FROM:<> BODY=7BIT",
                Ok(mail(ReversePath::Null, None, seven)),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME",
                Ok(mail(ab(), Some(1000), eight)),
            ),
            (
                b"MAIL FROM:<a@b> body=8bitmime size=0",
                Ok(mail(ab(), Some(0), eight)),
            ),
            (
                b"MAIL FROM:<a@b>  SIZE=5\t BODY=7Bit ",
                Ok(mail(ab(), Some(5), seven)),
            ),
            (b"MAIL FROM:a@b SIZE=7", Ok(mail(ab(), Some(7), None))),
            (
                b"MAIL FROM:<a@b> SIZE=18446744073709551615",
                Ok(mail(ab(), Some(u64::MAX), None)),
            ),
            (b"MAIL FROM:<a@b> SIZE=007", Ok(mail(ab(), Some(7), None))),
            (
                b"MAIL FROM:<postmaster>",
                Ok(mail(
                    ReversePath::Mailbox(mb("postmaster", None)),
                    None,
                    None,
                )),
            ),
            (b"MAIL FROM:<@x.example:a@b>", Ok(mail(ab(), None, None))),
            (
                b"MAIL FROM:<\"a b\"@c>",
                Ok(mail(from("a b", "c"), None, None)),
            ),
            (
                b"MAIL FROM:<a@[127.0.0.1]>",
                Ok(mail(from("a", "[127.0.0.1]"), None, None)),
            ),
            (b"MAIL", Err(Syntax("syntax: MAIL FROM:<address>"))),
            (b"MAIL <a@b>", Err(Syntax("syntax: MAIL FROM:<address>"))),
            (
                b"MAIL FROM <a@b>",
                Err(Syntax("syntax: MAIL FROM:<address>")),
            ),
            (b"MAIL FROM", Err(Syntax("syntax: MAIL FROM:<address>"))),
            (b"MAIL TO:<a@b>", Err(Syntax("syntax: MAIL FROM:<address>"))),
            (
                b"MAIL FRM:<a@b>",
                Err(Syntax("syntax: MAIL FROM:<address>")),
            ),
            (b"MAIL FROM:", Err(BadSender("empty address"))),
            (b"MAIL FROM:  ", Err(BadSender("empty address"))),
            (
                b"MAIL FROM:<a@b",
                Err(BadSender("unbalanced angle brackets")),
            ),
            (b"MAIL FROM:<a@b.>", Err(BadSender("bad domain"))),
            (b"MAIL FROM:<@b>", Err(BadSender("empty local part"))),
            (
                b"MAIL FROM:<a@b>SIZE=1",
                Err(BadSender("junk after address")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE",
                Err(Syntax("SIZE requires a number")),
            ),
            (b"MAIL FROM:<a@b> SIZE=", Err(Syntax("bad parameter value"))),
            (
                b"MAIL FROM:<a@b> SIZE=12k",
                Err(Syntax("SIZE requires a number")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=+12",
                Err(Syntax("SIZE requires a number")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=-1",
                Err(Syntax("SIZE requires a number")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=18446744073709551616",
                Err(Syntax("SIZE value too large")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=1 SIZE=1",
                Err(Syntax("duplicate SIZE parameter")),
            ),
            (
                b"MAIL FROM:<a@b> BODY=7BIT body=7bit",
                Err(Syntax("duplicate BODY parameter")),
            ),
            (
                b"MAIL FROM:<a@b> BODY",
                Err(Syntax("BODY must be 7BIT, 8BITMIME or BINARYMIME")),
            ),
            (
                b"MAIL FROM:<a@b> BODY=binarymime",
                Ok(mail(ab(), None, Some(Body::BinaryMime))),
            ),
            (
                b"MAIL FROM:<a@b> BODY=8BIT",
                Err(Syntax("BODY must be 7BIT, 8BITMIME or BINARYMIME")),
            ),
            (b"MAIL FROM:<a@b> REQUIRETLS", Err(unknown("REQUIRETLS"))),
            (b"MAIL FROM:<a@b> SIZE=1 AUTH=<>", Err(unknown("AUTH"))),
            (b"MAIL FROM:<a@b> X-FOO", Err(unknown("X-FOO"))),
            (b"MAIL FROM:<a@b> =1", Err(Syntax("bad parameter keyword"))),
            (
                b"MAIL FROM:<a@b> -X=1",
                Err(Syntax("bad parameter keyword")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE==1",
                Err(Syntax("bad parameter value")),
            ),
            // RCPT.
            (b"RCPT TO:<a@b>", Ok(rcpt("a", Some("b")))),
            (b"rcpt to:<a@b>", Ok(rcpt("a", Some("b")))),
            (b"RCPT  TO:  <a@b> ", Ok(rcpt("a", Some("b")))),
            (b"RCPT TO:<Postmaster>", Ok(rcpt("Postmaster", None))),
            (b"RCPT TO:postmaster", Ok(rcpt("postmaster", None))),
            (
                b"RCPT TO:<@x.example,@y.example:a@b.example>",
                Ok(rcpt("a", Some("b.example"))),
            ),
            (b"RCPT TO:<\"john doe\"@b>", Ok(rcpt("john doe", Some("b")))),
            (b"RCPT TO:<\"a\\\"q\"@b>", Ok(rcpt("a\"q", Some("b")))),
            (b"RCPT TO:<a@[IPv6:::1]>", Ok(rcpt("a", Some("[IPv6:::1]")))),
            (
                b"RCPT TO:<a@[IPv6:2001:db8::1]>",
                Ok(rcpt("a", Some("[IPv6:2001:db8::1]"))),
            ),
            (
                b"RCPT TO:<Jon.Smith@Example.COM>",
                Ok(rcpt("Jon.Smith", Some("Example.COM"))),
            ),
            (
                b"RCPT TO:<>",
                Err(BadAddress("null path not allowed as recipient")),
            ),
            (b"RCPT TO:", Err(BadAddress("empty address"))),
            (b"RCPT", Err(Syntax("syntax: RCPT TO:<address>"))),
            (b"RCPT <a@b>", Err(Syntax("syntax: RCPT TO:<address>"))),
            (b"RCPT FROM:<a@b>", Err(Syntax("syntax: RCPT TO:<address>"))),
            (b"RCPT TO <a@b>", Err(Syntax("syntax: RCPT TO:<address>"))),
            (b"RCPTTO:<a@b>", Err(Unknown)),
            (b"RCPT TO:<a@b> SIZE=1", Err(unknown("SIZE"))),
            (b"RCPT TO:<a@b> =x", Err(Syntax("bad parameter keyword"))),
            (
                b"RCPT TO:<a@[1.2.3]>",
                Err(BadAddress("bad address literal")),
            ),
            (
                b"RCPT TO:<a@[x:y]>",
                Err(BadAddress("unsupported address literal")),
            ),
            (b"RCPT TO:<a..b@c>", Err(BadAddress("bad local part"))),
            (b"RCPT TO:<a@b_c>", Err(BadAddress("bad domain"))),
            (b"RCPT TO:<a@-b>", Err(BadAddress("bad domain"))),
            (
                b"RCPT TO:<<a@b>>",
                Err(BadAddress("unbalanced angle brackets")),
            ),
            (
                b"RCPT TO:a@b>",
                Err(BadAddress("unbalanced angle brackets")),
            ),
            (
                b"RCPT TO:<\"a@b>",
                Err(BadAddress("unterminated quoted string")),
            ),
            (
                b"RCPT TO:<a b@c>",
                Err(BadAddress("invalid character in address")),
            ),
        ];
        let mut failures = Vec::new();
        for (line, want) in &cases {
            let got = parse(line);
            if &got != want {
                failures.push(format!(
                    "{:?}: got {got:?}, want {want:?}",
                    String::from_utf8_lossy(line)
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn long_paths() {
        let local = "l".repeat(65);
        assert_eq!(
            parse(format!("RCPT TO:<{local}@b>").as_bytes()),
            Err(BadAddress("local part too long"))
        );
        let domain = [
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(63),
        ]
        .join(".");
        assert_eq!(
            parse(format!("MAIL FROM:<a@{domain}>").as_bytes()),
            Err(BadSender("path too long"))
        );
        let ok = format!("MAIL FROM:<{}@{}> SIZE=1", "l".repeat(64), &domain[..189]);
        assert_eq!(
            parse(ok.as_bytes()),
            Ok(mail(
                ReversePath::Mailbox(mb(&"l".repeat(64), Some(&domain[..189]))),
                Some(1),
                None
            ))
        );
    }

    /// RFC 3461's parameters: RET and ENVID on MAIL, NOTIFY and ORCPT on
    /// RCPT, each at most once, with the syntax of RFC 3461 4; anything
    /// else is 501 5.5.4 (`Syntax`), as Postfix answers, and a DSN keyword
    /// on the other command is unknown there (555).
    #[test]
    fn dsn_parameters() {
        let ab = || from("a", "b");
        let mail_dsn = |ret: Option<Ret>, envid: Option<&str>| Mail {
            from: ab(),
            params: MailParams {
                ret,
                envid: envid.map(|e| EnvId::parse(e).unwrap()),
                ..MailParams::default()
            },
        };
        let rcpt_dsn = |notify: Option<Notify>, orcpt: Option<&str>| Rcpt {
            to: mb("a", Some("b")),
            params: RcptParams {
                notify,
                orcpt: orcpt.map(|o| Orcpt::parse(o).unwrap()),
            },
        };
        let on = |success, failure, delay| {
            Some(Notify::On {
                success,
                failure,
                delay,
            })
        };
        let full = Some(Ret::Full);
        let hdrs = Some(Ret::Hdrs);
        let envid_100 = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(100));
        let envid_101 = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(101));
        let orcpt_500 = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "o".repeat(493));
        let orcpt_501 = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "o".repeat(494));
        let e100 = "e".repeat(100);
        let o500 = format!("rfc822;{}", "o".repeat(493));
        let not_envid = "ENVID is not xtext (+XX with upper-case hex digits)";
        let not_orcpt = "ORCPT address is not xtext (+XX with upper-case hex digits)";
        let bad_notify = "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY";
        let cases: Vec<(&[u8], Result<Command, ParseError>)> = vec![
            (b"MAIL FROM:<a@b> RET=FULL", Ok(mail_dsn(full, None))),
            (b"MAIL FROM:<a@b> Ret=hdrs", Ok(mail_dsn(hdrs, None))),
            (
                b"MAIL FROM:<a@b> ENVID=QQ314159 RET=HDRS",
                Ok(mail_dsn(hdrs, Some("QQ314159"))),
            ),
            (
                b"MAIL FROM:<a@b> envid=x+2By+3Dz",
                Ok(mail_dsn(None, Some("x+2By+3Dz"))),
            ),
            (envid_100.as_bytes(), Ok(mail_dsn(None, Some(&e100)))),
            (
                envid_101.as_bytes(),
                Err(Syntax("ENVID longer than 100 characters")),
            ),
            (
                b"MAIL FROM:<a@b> RET=NONE",
                Err(Syntax("RET must be FULL or HDRS")),
            ),
            (
                b"MAIL FROM:<a@b> RET",
                Err(Syntax("RET must be FULL or HDRS")),
            ),
            (
                b"MAIL FROM:<a@b> RET=FULL RET=FULL",
                Err(Syntax("duplicate RET parameter")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a ENVID=a",
                Err(Syntax("duplicate ENVID parameter")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID",
                Err(Syntax("ENVID requires a value")),
            ),
            (b"MAIL FROM:<a@b> ENVID=a+2b", Err(Syntax(not_envid))),
            (b"MAIL FROM:<a@b> ENVID=a+", Err(Syntax(not_envid))),
            (b"MAIL FROM:<a@b> ENVID=a+4G", Err(Syntax(not_envid))),
            (
                b"MAIL FROM:<a@b> ENVID=a+0D+0A",
                Err(Syntax("ENVID decodes to a non-printable character")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a=b",
                Err(Syntax("bad parameter value")),
            ),
            (b"MAIL FROM:<a@b> NOTIFY=NEVER", Err(unknown("NOTIFY"))),
            (b"MAIL FROM:<a@b> ORCPT=rfc822;a@b", Err(unknown("ORCPT"))),
            (
                b"RCPT TO:<a@b> NOTIFY=NEVER",
                Ok(rcpt_dsn(Some(Notify::Never), None)),
            ),
            (
                b"RCPT TO:<a@b> notify=never",
                Ok(rcpt_dsn(Some(Notify::Never), None)),
            ),
            (
                b"RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY",
                Ok(rcpt_dsn(on(true, true, true), None)),
            ),
            (
                b"RCPT TO:<a@b> NOTIFY=delay,failure",
                Ok(rcpt_dsn(on(false, true, true), None)),
            ),
            (
                b"RCPT TO:<a@b> ORCPT=rfc822;a+2Bx@b NOTIFY=FAILURE",
                Ok(rcpt_dsn(on(false, true, false), Some("rfc822;a+2Bx@b"))),
            ),
            (orcpt_500.as_bytes(), Ok(rcpt_dsn(None, Some(&o500)))),
            (
                orcpt_501.as_bytes(),
                Err(Syntax("ORCPT longer than 500 characters")),
            ),
            (
                b"RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS",
                Err(Syntax(bad_notify)),
            ),
            (b"RCPT TO:<a@b> NOTIFY=SUCCESS,", Err(Syntax(bad_notify))),
            (b"RCPT TO:<a@b> NOTIFY=ALWAYS", Err(Syntax(bad_notify))),
            (b"RCPT TO:<a@b> NOTIFY", Err(Syntax(bad_notify))),
            (
                b"RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER",
                Err(Syntax("duplicate NOTIFY parameter")),
            ),
            (
                b"RCPT TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;a",
                Err(Syntax("duplicate ORCPT parameter")),
            ),
            (
                b"RCPT TO:<a@b> ORCPT",
                Err(Syntax("ORCPT requires a value")),
            ),
            (
                b"RCPT TO:<a@b> ORCPT=a@b",
                Err(Syntax("ORCPT must be addr-type;address")),
            ),
            (
                b"RCPT TO:<a@b> ORCPT=;a@b",
                Err(Syntax("ORCPT address type is not an atom")),
            ),
            (
                b"RCPT TO:<a@b> ORCPT=rfc822;",
                Err(Syntax("ORCPT address is empty")),
            ),
            (b"RCPT TO:<a@b> ORCPT=rfc822;a+2b", Err(Syntax(not_orcpt))),
            (b"RCPT TO:<a@b> RET=FULL", Err(unknown("RET"))),
            (b"RCPT TO:<a@b> ENVID=x", Err(unknown("ENVID"))),
            (b"RCPT TO:<a@b> SIZE=1 NOTIFY=NEVER", Err(unknown("SIZE"))),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// RFC 3030 2: `BDAT SP chunk-size [SP end-marker]`. A line whose
    /// count is not a number (a sign, an overflow, a missing count) says
    /// nothing of how many octets follow: `BdatSyntax(None)`.
    #[test]
    fn bdat() {
        let bdat = |size, last| Ok(Bdat { size, last });
        let cases: [(&[u8], Result<Command, ParseError>); 21] = [
            (b"BDAT 0", bdat(0, false)),
            (b"BDAT 0 LAST", bdat(0, true)),
            (b"bdat 1000 last", bdat(1000, true)),
            (b"BDAT\t12\tLast ", bdat(12, true)),
            (b"BDAT 007", bdat(7, false)),
            (
                b"BDAT 18446744073709551615",
                bdat(18_446_744_073_709_551_615, false),
            ),
            (b"BDAT", Err(BdatSyntax(None))),
            (b"BDAT ", Err(BdatSyntax(None))),
            (b"BDAT LAST", Err(BdatSyntax(None))),
            (b"BDAT -1", Err(BdatSyntax(None))),
            (b"BDAT -1 LAST", Err(BdatSyntax(None))),
            (b"BDAT +5", Err(BdatSyntax(None))),
            (b"BDAT 18446744073709551616", Err(BdatSyntax(None))),
            (b"BDAT 99999999999999999999999 LAST", Err(BdatSyntax(None))),
            (b"BDAT 0x10", Err(BdatSyntax(None))),
            (b"BDAT 5\x01", Err(BdatSyntax(None))),
            (b"BDAT \xd9\xa3", Err(BdatSyntax(None))),
            (b"BDAT 5 SCRAMBLE", Err(BdatSyntax(Some(5)))),
            (b"BDAT 5 LAST LAST", Err(BdatSyntax(Some(5)))),
            (b"BDAT 5 LAST \xff", Err(BdatSyntax(Some(5)))),
            (b"BDATX 5", Err(Unknown)),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_commandlike(
            verb in "(?i)(HELO|EHLO|MAIL|RCPT|DATA|BDAT|RSET|NOOP|QUIT|VRFY|EXPN|HELP)",
            rest in proptest::collection::vec(
                prop_oneof![
                    Just(b' '), Just(b'<'), Just(b'>'), Just(b'@'), Just(b':'), Just(b'='),
                    Just(b'"'), Just(b'\\'), Just(b'['), Just(b']'), Just(b'.'), Just(b','),
                    any::<u8>(), 0x61u8..0x7b,
                ],
                0..80,
            ),
        ) {
            let mut line = verb.into_bytes();
            line.extend(&rest);
            let _ = parse(&line);
            let mut line = b"MAIL FROM:".to_vec();
            line.extend(&rest);
            let _ = parse(&line);
        }

        #[test]
        fn rcpt_of_displayed_mailbox(
            local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,2}|[ -~]{1,20}",
            domain in proptest::option::of("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{2,6}){0,3}"),
        ) {
            let to = Mailbox { local, domain };
            let line = format!("RCPT TO:<{to}>");
            prop_assert_eq!(parse(line.as_bytes()), Ok(Rcpt { to, params: RcptParams::default() }));
        }
    }
}
