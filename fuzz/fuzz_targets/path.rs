//! The path parser (`MAIL FROM:` / `RCPT TO:` arguments) on arbitrary text.
//!
//! Invariants:
//! * `parse_path` never panics;
//! * what it returns as the rest of the line is a suffix of its input that
//!   is empty or starts with a space or TAB (the ESMTP parameters);
//! * a mailbox is within the limits of RFC 5321 4.5.3.1, and printable
//!   ASCII or characters an address may hold (RFC 6531: no control, no
//!   space, nothing that hides text);
//! * Display round trip: a mailbox `m` that parsed gives `m` back from
//!   `<{m}>` and from the bare `{m}` (Sendmail's form without brackets),
//!   with nothing left over; the null path `<>` only comes from `<>`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postie::smtp::address::{is_utf8_address_char, parse_path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((mailbox, rest)) = parse_path(s) else {
        return;
    };
    assert!(s.ends_with(rest), "rest {rest:?} is not a suffix of {s:?}");
    assert!(
        rest.is_empty() || rest.starts_with([' ', '\t']),
        "{s:?}: rest {rest:?} does not start with a space"
    );
    let Some(m) = mailbox else {
        assert!(
            s.trim_start_matches([' ', '\t']).starts_with("<>"),
            "{s:?}: a null path from something other than <>"
        );
        return;
    };
    assert!(!m.local.is_empty(), "{s:?}: empty local part");
    assert!(m.local.len() <= 64, "{s:?}: local part over 64 octets");
    assert!(
        m.local
            .chars()
            .all(|c| (' '..='~').contains(&c) || is_utf8_address_char(c)),
        "{s:?}: local part {:?} not printable",
        m.local
    );
    if let Some(d) = &m.domain {
        assert!(!d.is_empty() && d.len() <= 255, "{s:?}: domain length");
        assert!(
            d.chars()
                .all(|c| c.is_ascii_graphic() || is_utf8_address_char(c)),
            "{s:?}: domain {d:?}"
        );
    }
    for shown in [format!("<{m}>"), m.to_string()] {
        assert_eq!(
            parse_path(&shown),
            Ok((Some(m.clone()), "")),
            "{s:?} parsed to {m:?}, shown as {shown:?}"
        );
    }
});
