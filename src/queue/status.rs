//! The last error of a queued recipient: [`LastError`], an RFC 3463
//! enhanced status code ([`StatusCode`]) with one line of text made safe
//! to keep in an envelope file and to show in `mailq` and in a bounce
//! ([`sanitize`]).
//!
//! Pure, and apart from the format (`record.rs`) that stores it: the
//! runner and the bounces build and read these too.
//!
//! [`StatusCode`] is the delivery status notifications' code,
//! [`crate::dsn::Status`], under the name the queue has always used: one
//! type, so that a last error goes into a bounce as it is. A last error's
//! class is 4 or 5, never 2: the format (`record.rs`) refuses to write or
//! read any other.

/// The longest error text kept.
pub const MAX_ERROR_TEXT: usize = 400;

pub use crate::dsn::Status as StatusCode;

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
        use crate::dsn::Class;
        assert_eq!(
            StatusCode::parse("5.1.1"),
            StatusCode::new(Class::Permanent, 1, 1)
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
