//! The SMTP command parser on arbitrary lines.
//!
//! Invariants:
//! * `parse` never panics;
//! * a line it accepts is UTF-8 with no control character but TAB, and
//!   only a MAIL or RCPT line (an address, RFC 6531) holds anything but
//!   ASCII, and then only characters an address may hold;
//! * a parsed command written back in canonical form parses to the same
//!   command (the parser keeps everything it needs and nothing depends on
//!   how the client spelled it: case, spaces, quoting, source routes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use postie::smtp::ReversePath;
use postie::smtp::address::is_utf8_address_char;
use postie::smtp::command::{Body, Command, parse};

/// The command as a client would canonically send it.
fn canonical(cmd: &Command) -> String {
    match cmd {
        Command::Helo(name) => format!("HELO {name}"),
        Command::Ehlo(name) => format!("EHLO {name}"),
        Command::Lhlo(name) => format!("LHLO {name}"),
        Command::StartTls => "STARTTLS".into(),
        Command::Mail { from, params } => {
            let mut s = match from {
                ReversePath::Null => "MAIL FROM:<>".to_string(),
                ReversePath::Mailbox(m) => format!("MAIL FROM:<{m}>"),
            };
            if let Some(n) = params.size {
                s.push_str(&format!(" SIZE={n}"));
            }
            match params.body {
                Some(Body::SevenBit) => s.push_str(" BODY=7BIT"),
                Some(Body::EightBitMime) => s.push_str(" BODY=8BITMIME"),
                Some(Body::BinaryMime) => s.push_str(" BODY=BINARYMIME"),
                None => {}
            }
            if let Some(ret) = params.ret {
                s.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &params.envid {
                s.push_str(&format!(" ENVID={envid}"));
            }
            if params.smtputf8 {
                s.push_str(" SMTPUTF8");
            }
            s
        }
        Command::Rcpt { to, params } => {
            let mut s = format!("RCPT TO:<{to}>");
            if let Some(notify) = params.notify {
                s.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(orcpt) = &params.orcpt {
                s.push_str(&format!(" ORCPT={orcpt}"));
            }
            s
        }
        Command::Data => "DATA".into(),
        Command::Bdat { size, last: false } => format!("BDAT {size}"),
        Command::Bdat { size, last: true } => format!("BDAT {size} LAST"),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::Vrfy(arg) => format!("VRFY {arg}"),
        Command::Expn(arg) => format!("EXPN {arg}"),
        Command::Help(None) => "HELP".into(),
        Command::Help(Some(arg)) => format!("HELP {arg}"),
    }
}

fuzz_target!(|line: &[u8]| {
    let Ok(cmd) = parse(line) else {
        return;
    };
    let text = std::str::from_utf8(line).expect("accepted a line that is not UTF-8");
    let address = matches!(cmd, Command::Mail { .. } | Command::Rcpt { .. });
    assert!(
        text.chars().all(|c| match c {
            '\t' => true,
            c if c.is_ascii() => !c.is_ascii_control(),
            c => address && is_utf8_address_char(c),
        }),
        "accepted a line with a control or non-ASCII character: {line:?} -> {cmd:?}"
    );
    let again = canonical(&cmd);
    assert_eq!(
        parse(again.as_bytes()),
        Ok(cmd.clone()),
        "{line:?} parsed to {cmd:?}, whose canonical form {again:?} does not"
    );
});
