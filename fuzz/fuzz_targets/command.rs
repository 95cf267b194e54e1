//! The SMTP command parser on arbitrary lines.
//!
//! Invariants:
//! * `parse` never panics;
//! * a line it accepts is ASCII with no control character but TAB;
//! * a parsed command written back in canonical form parses to the same
//!   command (the parser keeps everything it needs and nothing depends on
//!   how the client spelled it: case, spaces, quoting, source routes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use postie::smtp::ReversePath;
use postie::smtp::command::{Body, Command, parse};

/// The command as a client would canonically send it.
fn canonical(cmd: &Command) -> String {
    match cmd {
        Command::Helo(name) => format!("HELO {name}"),
        Command::Ehlo(name) => format!("EHLO {name}"),
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
    assert!(
        line.iter()
            .all(|&c| c.is_ascii() && (!c.is_ascii_control() || c == b'\t')),
        "accepted a line with a control or non-ASCII octet: {line:?} -> {cmd:?}"
    );
    let again = canonical(&cmd);
    assert_eq!(
        parse(again.as_bytes()),
        Ok(cmd.clone()),
        "{line:?} parsed to {cmd:?}, whose canonical form {again:?} does not"
    );
});
