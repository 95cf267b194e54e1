//! The last error of a queued recipient: [`StatusCode`], an RFC 3463
//! enhanced status code, and [`LastError`], a code with one line of text
//! made safe to keep in an envelope file and to show in `mailq` and in a
//! bounce ([`sanitize`]).
//!
//! Pure, and apart from the format (`record.rs`) that stores it: the
//! runner and the bounces build and read these too.

/// The longest error text kept.
pub const MAX_ERROR_TEXT: usize = 400;

/// An RFC 3463 enhanced status code of a failure: `4.x.x` or `5.x.x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

/// The last error of a pending recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub code: StatusCode,
    /// One line, printable ([`sanitize`] makes any text so).
    pub text: String,
}

impl LastError {
    /// The error `code` with `text` made one clean line ([`sanitize`]).
    pub fn new(code: StatusCode, text: &str) -> LastError {
        let text = match sanitize(text) {
            t if t.is_empty() => "(no text)".to_string(),
            t => t,
        };
        LastError { code, text }
    }
}

/// `text` as one printable line of at most [`MAX_ERROR_TEXT`] bytes:
/// every control character a space, cut at a character boundary.
pub fn sanitize(text: &str) -> String {
    let mut s = String::new();
    for c in text.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if s.len() + c.len_utf8() > MAX_ERROR_TEXT {
            break;
        }
        s.push(c);
    }
    s.trim_end().to_string()
}

/// `4.2.0 text`, as `mailq` and the mail log show it.
impl std::fmt::Display for LastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl StatusCode {
    /// Parses `4.2.0`: class 4 or 5, subject and detail of 1 to 3 digits.
    pub fn parse(s: &str) -> Option<StatusCode> {
        let mut parts = s.split('.');
        let (c, sub, det) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !matches!(c, "4" | "5") {
            return None;
        }
        let num = |p: &str| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        Some(StatusCode {
            class: c.as_bytes()[0] - b'0',
            subject: num(sub)?,
            detail: num(det)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_sanitized_to_one_line() {
        assert_eq!(sanitize(" lock\r\nbusy\t(3 s) \n"), "lock  busy (3 s)");
        let long = sanitize(&"é".repeat(MAX_ERROR_TEXT));
        assert!(long.len() <= MAX_ERROR_TEXT && long.len() >= MAX_ERROR_TEXT - 1);
        assert_eq!(sanitize("a\u{85}b"), "a b");
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            StatusCode::parse("5.1.1"),
            Some(StatusCode {
                class: 5,
                subject: 1,
                detail: 1
            })
        );
        assert_eq!(
            StatusCode::parse("4.999.999").unwrap().to_string(),
            "4.999.999"
        );
        for bad in [
            "", "4", "4.2", "4.2.0.0", "3.2.0", "4..0", "4.+2.0", "4.2.0 ",
        ] {
            assert_eq!(StatusCode::parse(bad), None, "{bad:?}");
        }
    }
}
