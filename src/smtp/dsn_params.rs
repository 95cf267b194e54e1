//! The parameters of the DSN extension (RFC 3461): what a client asks of
//! the delivery status notifications about its message. `RET` and
//! `ENVID` of MAIL, `NOTIFY` and `ORCPT` of RCPT, each parsed here into a
//! type that holds only a valid value.
//!
//! The one definition of [`Ret`] and [`Notify`]: the queue's entry file
//! and the notification generator (`crate::queue`, `crate::dsn`) name
//! these. The ENVID and the ORCPT are kept as the client wrote them
//! (xtext, RFC 3461 4): a notification writes them back the same way
//! (`Original-Envelope-Id`, `Original-Recipient`), and a value that
//! passed [`EnvId::parse`] or [`Orcpt::parse`] is known to decode.
//!
//! Pure: strings in, values or a reason out.

use std::fmt;

/// The longest ENVID, as written (RFC 3461 4.4: 100 characters).
pub const MAX_ENVID: usize = 100;
/// The longest ORCPT value, `addr-type;xtext` as written (RFC 3461 4.2:
/// 500 characters).
pub const MAX_ORCPT: usize = 500;

/// RFC 3461 4.3 RET: what a failure report returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Only its header.
    Hdrs,
}

impl Ret {
    /// `FULL` or `HDRS`, in any case (ESMTP values are case-insensitive
    /// words, as sendmail and Postfix read them).
    pub fn parse(s: &str) -> Option<Ret> {
        if s.eq_ignore_ascii_case("FULL") {
            Some(Ret::Full)
        } else if s.eq_ignore_ascii_case("HDRS") {
            Some(Ret::Hdrs)
        } else {
            None
        }
    }
}

/// As RFC 3461 writes it in MAIL: `FULL` or `HDRS`.
impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        })
    }
}

/// RFC 3461 4.1 NOTIFY of one recipient: `NEVER`, or the conditions that
/// produce a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Never,
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

impl Notify {
    /// `notify-esmtp-value = "NEVER" / 1#notify-list-element` (RFC 3461
    /// 4.1): `NEVER` alone, or `SUCCESS`, `FAILURE` and `DELAY` joined by
    /// commas, in any order and any case. An empty element (`SUCCESS,`)
    /// and `NEVER` in a list are refused; a word given twice counts once.
    pub fn parse(s: &str) -> Option<Notify> {
        if s.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::Never);
        }
        let (mut success, mut failure, mut delay) = (false, false, false);
        for word in s.split(',') {
            if word.eq_ignore_ascii_case("SUCCESS") {
                success = true;
            } else if word.eq_ignore_ascii_case("FAILURE") {
                failure = true;
            } else if word.eq_ignore_ascii_case("DELAY") {
                delay = true;
            } else {
                return None;
            }
        }
        Some(Notify::On {
            success,
            failure,
            delay,
        })
    }
}

/// As RFC 3461 writes it in RCPT: `NEVER`, or the conditions in the
/// order SUCCESS, FAILURE, DELAY, comma-separated.
impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Notify::Never => f.write_str("NEVER"),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let on = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")];
                let words: Vec<&str> = on.iter().filter(|(o, _)| *o).map(|(_, w)| *w).collect();
                f.write_str(&words.join(","))
            }
        }
    }
}

/// The ENVID of MAIL (RFC 3461 4.4), as the client wrote it: xtext of at
/// most [`MAX_ENVID`] characters whose decoded value is printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvId(String);

impl EnvId {
    pub fn parse(s: &str) -> Result<EnvId, &'static str> {
        if s.is_empty() {
            return Err("ENVID is empty");
        }
        if s.len() > MAX_ENVID {
            return Err("ENVID longer than 100 characters");
        }
        decode_xtext(s).map_err(|e| match e {
            XtextError::Syntax => "ENVID is not xtext (+XX with upper-case hex digits)",
            XtextError::NotPrintable => "ENVID decodes to a non-printable character",
        })?;
        Ok(EnvId(s.to_owned()))
    }

    /// The value as written (xtext).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The value decoded: printable ASCII.
    pub fn decoded(&self) -> String {
        decode_xtext(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ORCPT of RCPT (RFC 3461 4.2), as the client wrote it:
/// `addr-type;xtext`, at most [`MAX_ORCPT`] characters, the address type
/// an atom (`rfc822`, `utf-8`, ...) and the address xtext whose decoded
/// value is printable ASCII. The address is not checked against the
/// syntax of its type: RFC 3461 4.2 says it need not conform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt(String);

impl Orcpt {
    pub fn parse(s: &str) -> Result<Orcpt, &'static str> {
        if s.len() > MAX_ORCPT {
            return Err("ORCPT longer than 500 characters");
        }
        let (kind, address) = s.split_once(';').ok_or("ORCPT must be addr-type;address")?;
        if kind.is_empty() || !kind.bytes().all(is_atext) {
            return Err("ORCPT address type is not an atom");
        }
        if address.is_empty() {
            return Err("ORCPT address is empty");
        }
        decode_xtext(address).map_err(|e| match e {
            XtextError::Syntax => "ORCPT address is not xtext (+XX with upper-case hex digits)",
            XtextError::NotPrintable => "ORCPT address decodes to a non-printable character",
        })?;
        Ok(Orcpt(s.to_owned()))
    }

    /// The value as written: `addr-type;xtext`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The address type as written (`rfc822`).
    pub fn addr_type(&self) -> &str {
        self.0.split_once(';').map_or("", |(k, _)| k)
    }

    /// The address decoded: printable ASCII.
    pub fn address(&self) -> String {
        let coded = self.0.split_once(';').map_or("", |(_, a)| a);
        decode_xtext(coded).unwrap_or_default()
    }
}

impl fmt::Display for Orcpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `atext` of RFC 5322 3.2.3: the characters of an atom.
fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

enum XtextError {
    Syntax,
    NotPrintable,
}

/// Decodes xtext (RFC 3461 4): `xchar` is any of `!` (33) to `~` (126)
/// but `+` and `=`; `+` is followed by two upper-case hexadecimal digits,
/// the code of the character it stands for. The decoded value must be
/// printable ASCII, spaces included (RFC 3461 4.2 and 4.4: a
/// notification could not carry anything else).
fn decode_xtext(s: &str) -> Result<String, XtextError> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = match b[i] {
            b'+' => {
                let hex = |at: usize| {
                    b.get(at)
                        .and_then(|&d| (d as char).to_digit(16).filter(|_| !d.is_ascii_lowercase()))
                };
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(XtextError::Syntax);
                };
                i += 3;
                (hi * 16 + lo) as u8
            }
            c @ 33..=126 if c != b'=' => {
                i += 1;
                c
            }
            _ => return Err(XtextError::Syntax),
        };
        if !(b' '..=b'~').contains(&c) {
            return Err(XtextError::NotPrintable);
        }
        out.push(c as char);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_parses_either_word_in_any_case_and_writes_it_upper_case() {
        for (s, want) in [
            ("FULL", Some(Ret::Full)),
            ("full", Some(Ret::Full)),
            ("Hdrs", Some(Ret::Hdrs)),
            ("HDRS", Some(Ret::Hdrs)),
            ("", None),
            ("HEADERS", None),
            ("FULL ", None),
            ("FULL,HDRS", None),
        ] {
            assert_eq!(Ret::parse(s), want, "{s:?}");
        }
        assert_eq!(Ret::Full.to_string(), "FULL");
        assert_eq!(Ret::Hdrs.to_string(), "HDRS");
    }

    #[test]
    fn notify_is_never_alone_or_a_list_of_conditions() {
        let on = |success, failure, delay| {
            Some(Notify::On {
                success,
                failure,
                delay,
            })
        };
        for (s, want) in [
            ("NEVER", Some(Notify::Never)),
            ("never", Some(Notify::Never)),
            ("SUCCESS", on(true, false, false)),
            ("failure", on(false, true, false)),
            ("DELAY", on(false, false, true)),
            ("SUCCESS,FAILURE,DELAY", on(true, true, true)),
            ("delay,Success", on(true, false, true)),
            ("FAILURE,FAILURE", on(false, true, false)),
            // NEVER with anything else, empty elements, other words.
            ("NEVER,SUCCESS", None),
            ("SUCCESS,NEVER", None),
            ("NEVER,NEVER", None),
            ("", None),
            (",", None),
            ("SUCCESS,", None),
            (",FAILURE", None),
            ("SUCCESS,,DELAY", None),
            ("SUCCESS FAILURE", None),
            ("ALWAYS", None),
            ("SUCCES", None),
        ] {
            assert_eq!(Notify::parse(s), want, "{s:?}");
        }
    }

    #[test]
    fn notify_is_written_as_rfc_3461_does_and_reads_back() {
        assert_eq!(Notify::Never.to_string(), "NEVER");
        for mask in 1..8u8 {
            let n = Notify::On {
                success: mask & 1 != 0,
                failure: mask & 2 != 0,
                delay: mask & 4 != 0,
            };
            let s = n.to_string();
            assert_eq!(Notify::parse(&s), Some(n), "{s}");
        }
        let n = Notify::parse("delay,success").unwrap();
        assert_eq!(n.to_string(), "SUCCESS,DELAY");
    }

    #[test]
    fn envid_is_xtext_of_at_most_100_characters() {
        for ok in [
            "QQ314159",
            "a",
            "x+2By+3Dz",
            "with+20space",
            "!\"#$%&'()*,-./:;<>?@[\\]^_`{|}~",
            "+7E",
        ] {
            let e = EnvId::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(e.as_str(), ok);
            assert_eq!(e.to_string(), ok);
        }
        assert_eq!(EnvId::parse("x+2By+3Dz").unwrap().decoded(), "x+y=z");
        assert_eq!(EnvId::parse("a+20b").unwrap().decoded(), "a b");
        let longest = "e".repeat(MAX_ENVID);
        assert!(EnvId::parse(&longest).is_ok());
        assert_eq!(
            EnvId::parse(&format!("{longest}e")),
            Err("ENVID longer than 100 characters")
        );
        let not_xtext = Err("ENVID is not xtext (+XX with upper-case hex digits)");
        for bad in [
            "a+b", "a+", "+2", "+2b", "+ab", "+G0", "a=b", "a b", "a\tb", "\u{e9}", "+2B+",
        ] {
            assert_eq!(EnvId::parse(bad), not_xtext, "{bad:?}");
        }
        for bad in ["a+0Db", "+00", "+7F", "+80", "+FF", "+09"] {
            assert_eq!(
                EnvId::parse(bad),
                Err("ENVID decodes to a non-printable character"),
                "{bad:?}"
            );
        }
        assert_eq!(EnvId::parse(""), Err("ENVID is empty"));
    }

    #[test]
    fn orcpt_is_an_atom_a_semicolon_and_xtext_of_at_most_500_characters() {
        for (ok, kind, address) in [
            ("rfc822;jon@frogbog", "rfc822", "jon@frogbog"),
            ("RFC822;a+2Bb@c", "RFC822", "a+b@c"),
            ("rfc822;\"a+20b\"@c", "rfc822", "\"a b\"@c"),
            ("x-foo;a;b", "x-foo", "a;b"),
            ("utf-8;j\\x{F6}n@x", "utf-8", "j\\x{F6}n@x"),
        ] {
            let o = Orcpt::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(o.as_str(), ok);
            assert_eq!(o.addr_type(), kind);
            assert_eq!(o.address(), address);
        }
        let at = |n: usize| format!("rfc822;{}", "a".repeat(n - "rfc822;".len()));
        assert!(Orcpt::parse(&at(MAX_ORCPT)).is_ok());
        assert_eq!(
            Orcpt::parse(&at(MAX_ORCPT + 1)),
            Err("ORCPT longer than 500 characters")
        );
        for (bad, why) in [
            ("jon@frogbog", "ORCPT must be addr-type;address"),
            (";jon@frogbog", "ORCPT address type is not an atom"),
            ("rfc 822;jon", "ORCPT address type is not an atom"),
            ("rfc.822;jon", "ORCPT address type is not an atom"),
            ("rfc822;", "ORCPT address is empty"),
            (
                "rfc822;a+b",
                "ORCPT address is not xtext (+XX with upper-case hex digits)",
            ),
            (
                "rfc822;a+2b",
                "ORCPT address is not xtext (+XX with upper-case hex digits)",
            ),
            (
                "rfc822;a=b",
                "ORCPT address is not xtext (+XX with upper-case hex digits)",
            ),
            (
                "rfc822;a+0A",
                "ORCPT address decodes to a non-printable character",
            ),
        ] {
            assert_eq!(Orcpt::parse(bad), Err(why), "{bad:?}");
        }
    }
}
