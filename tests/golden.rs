//! Golden dialogs: each `tests/dialogs/NAME.dialog` is one SMTP
//! conversation, run twice: against the real binary over TCP, step by
//! step, and in-process on the library's session loop with the whole
//! client side sent at once (the most pipelined client). Both runs must
//! get the replies written in the file and leave the mailboxes written
//! beside it. A conversation that needs nothing more than this reads
//! better as a dialog than as a chain of `c.expect` calls (chasquid keeps
//! its SMTP tests the same way, as `.cmy` files).
//!
//! The format, one directive a line:
//!
//! * `# ...` and blank lines are comments. Every dialog opens with a
//!   comment saying what it checks and why.
//! * `C: TEXT` is a line the client sends, with CRLF; a line ending in
//!   `\n` is sent with a bare LF instead. `\xHH` anywhere in TEXT is the
//!   byte HH (for a NUL, say).
//! * `S: CODE TEXT` is the reply expected: its last line must start with
//!   `CODE TEXT` (so `S: 250` checks the code, `S: 250 2.1.5` the enhanced
//!   code too). `S: CODE-TEXT` lines before it list the lines of a
//!   multi-line reply; when they are given, the reply must have exactly
//!   those lines, each starting with the text given.
//! * `S: CLOSED`: the server has closed the connection; nothing after it
//!   is answered.
//! * `ARGS: OPTIONS` adds command-line options (`--max-size 1000`) to the
//!   server of both runs.
//! * `ALIASES: LINE` is a line of the aliases file (aliases(5)) the server
//!   reads; without any, there is no aliases file.
//! * `L: TEXT`: the server's log holds TEXT once the dialog is over. Only
//!   the TCP run checks it (the in-process run has no log to read).
//!   `L!: TEXT`: the log does not hold TEXT then.
//!
//! `USER` and `HOST` stand for a local user and domain. A file
//! `NAME.WHO.mbox` beside the dialog is the mailbox of `WHO` (`USER`,
//! `alice`, `root`) afterwards, with the date of each `From ` line masked
//! as `DATE` and each `Received:` header as `RECEIVED`; an empty file means
//! an empty or missing mailbox. No other mailbox may exist afterwards.

use std::path::{Path, PathBuf};

use crate::util::*;

/// One parsed dialog file.
pub struct Dialog {
    pub name: String,
    /// Extra server options from `ARGS:` lines.
    pub args: Vec<String>,
    /// The aliases file from `ALIASES:` lines, if any.
    pub aliases: Option<String>,
    pub steps: Vec<Step>,
    /// The line of the file each step comes from, for messages.
    pub lines: Vec<usize>,
    /// Texts the server's log must hold (`L:` lines).
    pub logs: Vec<String>,
    /// Texts the server's log must not hold (`L!:` lines).
    pub not_logs: Vec<String>,
    /// Expected mailboxes beside the dialog: (user, masked contents).
    pub mailboxes: Vec<(String, String)>,
}

pub enum Step {
    Send(Vec<u8>),
    /// A reply: the start of each of its lines, or of its last line only.
    Expect(Vec<String>),
    /// `S: CLOSED`: the server has closed the connection.
    Closed,
}

/// Every dialog of `tests/dialogs/`, sorted by name.
pub fn dialogs() -> Vec<Dialog> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dialogs");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let dialogs: Vec<Dialog> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dialog"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let mut d = parse(&name, &std::fs::read_to_string(p).unwrap());
            for mb in &paths {
                let file = mb.file_name().unwrap().to_string_lossy();
                let Some(who) = file
                    .strip_prefix(&format!("{name}."))
                    .and_then(|f| f.strip_suffix(".mbox"))
                else {
                    continue;
                };
                let who = if who == "USER" { USER } else { who };
                let text = std::fs::read_to_string(mb).unwrap();
                d.mailboxes.push((who.to_string(), substitute(&text)));
            }
            d
        })
        .collect();
    assert!(!dialogs.is_empty(), "no dialogs in {}", dir.display());
    dialogs
}

/// The dialog `tests/dialogs/NAME.dialog`, for a test that plays it some
/// other way (on pipes, through systemd).
pub fn load(name: &str) -> Dialog {
    dialogs()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no dialog {name}"))
}

impl Dialog {
    fn push(&mut self, line: usize, step: Step) {
        self.steps.push(step);
        self.lines.push(line);
    }

    /// Where step `i` is written: `NAME.dialog:LINE`.
    fn at(&self, i: usize) -> String {
        format!("{}.dialog:{}", self.name, self.lines[i])
    }

    /// Everything the client sends, in one piece.
    pub fn input(&self) -> Vec<u8> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) => Some(b.clone()),
                Step::Expect(_) | Step::Closed => None,
            })
            .flatten()
            .collect()
    }
}

fn substitute(text: &str) -> String {
    text.replace("USER", USER).replace("HOST", HOST)
}

/// Parses one dialog file; a line that is no directive is an error, so
/// that a typo cannot turn a check into a comment.
fn parse(name: &str, text: &str) -> Dialog {
    let mut d = Dialog {
        name: name.to_string(),
        args: Vec::new(),
        aliases: None,
        steps: Vec::new(),
        lines: Vec::new(),
        logs: Vec::new(),
        not_logs: Vec::new(),
        mailboxes: Vec::new(),
    };
    let mut reply: Vec<String> = Vec::new();
    for (n, line) in substitute(text).lines().enumerate() {
        let at = format!("{name}.dialog:{}", n + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{at}: not a directive: {line:?}"));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        assert!(
            key == "S" || reply.is_empty(),
            "{at}: a multi-line reply ends with an `S: CODE TEXT` line"
        );
        match key {
            "C" => d.push(n + 1, Step::Send(client_bytes(rest))),
            "S" if rest == "CLOSED" => d.push(n + 1, Step::Closed),
            "S" => {
                let rest = rest.trim_end();
                assert!(
                    rest.get(..3).is_some_and(|c| c.parse::<u16>().is_ok()),
                    "{at}: a reply starts with its code: {line:?}"
                );
                reply.push(rest.to_string());
                match rest.as_bytes().get(3) {
                    Some(b'-') => {}
                    None | Some(b' ') => d.push(n + 1, Step::Expect(std::mem::take(&mut reply))),
                    Some(_) => panic!("{at}: a code is followed by ' ' or '-': {line:?}"),
                }
            }
            "L" => d.logs.push(rest.to_string()),
            "L!" => d.not_logs.push(rest.to_string()),
            "ARGS" => d.args.extend(rest.split_whitespace().map(String::from)),
            "ALIASES" => {
                let file = d.aliases.get_or_insert_with(String::new);
                file.push_str(rest);
                file.push('\n');
            }
            _ => panic!("{at}: unknown directive {key:?}"),
        }
    }
    assert!(reply.is_empty(), "{name}: the last reply has no last line");
    d
}

/// The bytes of a `C:` line: `\xHH` escapes decoded, and CRLF or (after a
/// trailing `\n`) a bare LF.
fn client_bytes(text: &str) -> Vec<u8> {
    let (body, end) = match text.strip_suffix("\\n") {
        Some(bare) => (bare, &b"\n"[..]),
        None => (text, &b"\r\n"[..]),
    };
    let b = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b[i..]
            .starts_with(b"\\x")
            .then(|| b.get(i + 2..i + 4))
            .flatten();
        match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out.extend_from_slice(end);
    out
}

/// Checks one reply against an `S:` step: the start of its last line, or
/// of every line when the step lists them all.
fn check_reply(at: &str, got: &Reply, want: &[String]) {
    let shown = got.text();
    if let [last] = want {
        let line = got.lines.last().unwrap();
        assert!(
            line.starts_with(last.as_str()),
            "{at}: want {last:?}, got:\n{shown}"
        );
        return;
    }
    assert_eq!(
        got.lines.len(),
        want.len(),
        "{at}: want {want:?}, got:\n{shown}"
    );
    for (line, w) in got.lines.iter().zip(want) {
        assert!(
            line.starts_with(w.as_str()),
            "{at}: want {w:?}, got:\n{shown}"
        );
    }
}

/// The mailboxes after a dialog: each as written beside it, and no other.
fn check_mailboxes(fx: &Fixture, d: &Dialog, how: &str) {
    for (user, want) in &d.mailboxes {
        assert_eq!(
            masked_mailbox(&fx.read_mailbox(user)),
            *want,
            "{} ({how}): mailbox of {user}",
            d.name
        );
    }
    for entry in std::fs::read_dir(fx.spool()).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            file.starts_with('.') || d.mailboxes.iter().any(|(u, _)| *u == file),
            "{} ({how}): spool/{file} exists and no {}.{file}.mbox says what it holds",
            d.name,
            d.name
        );
    }
}

/// A mailbox with what varies masked: the date of each `From ` line
/// becomes `DATE`, each `Received:` header (with its continuation lines)
/// becomes `RECEIVED`.
fn masked_mailbox(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut in_received = false;
    for line in text.split_inclusive('\n') {
        if in_received && line.starts_with('\t') {
            continue;
        }
        in_received = false;
        if line.starts_with("Received:") {
            in_received = true;
            out.push_str("RECEIVED\n");
        } else if let Some(rest) = line.strip_prefix("From ") {
            let sender = rest.split(' ').next().unwrap_or("");
            out.push_str(&format!("From {sender} DATE\n"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Plays a dialog on a connected client, step by step, checking each
/// reply as it comes.
pub fn play(c: &mut Client, d: &Dialog) {
    // The lines a client sends before it reads the next reply go in one
    // write, as a client writes them. One write per line raced the server
    // where it closes the connection at a line (HTTP verbs): a later line's
    // write met the reset of the close and failed.
    let mut pending: Vec<u8> = Vec::new();
    for (i, step) in d.steps.iter().enumerate() {
        if !matches!(step, Step::Send(_)) && !pending.is_empty() {
            c.send_raw(&std::mem::take(&mut pending));
        }
        match step {
            Step::Send(b) => pending.extend_from_slice(b),
            Step::Expect(want) => check_reply(&d.at(i), &c.reply(), want),
            Step::Closed => {
                assert!(c.closed(), "{}: connection open", d.at(i));
                return;
            }
        }
    }
    if !pending.is_empty() {
        c.send_raw(&pending);
    }
}

/// A fresh fixture with the dialog's aliases file.
fn fixture(d: &Dialog) -> Fixture {
    let fx = Fixture::new();
    if let Some(text) = &d.aliases {
        std::fs::write(fx.aliases(), text).unwrap();
    }
    fx
}

/// The golden dialogs against the real binary over TCP, step by step.
#[test]
fn golden_dialogs_over_tcp() {
    for d in dialogs() {
        let fx = fixture(&d);
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        let srv = Server::start(&fx, &args);
        play(&mut srv.connect(), &d);
        if !d.logs.is_empty() || !d.not_logs.is_empty() {
            let needles: Vec<&str> = d.logs.iter().map(String::as_str).collect();
            let log = srv.log_with(&needles);
            for n in needles {
                assert!(log.contains(n), "{}: the log lacks {n:?}:\n{log}", d.name);
            }
            for n in &d.not_logs {
                assert!(!log.contains(n), "{}: the log holds {n:?}:\n{log}", d.name);
            }
        }
        check_mailboxes(&fx, &d, "over TCP");
    }
}

/// The same dialogs in-process: the library's session loop on an in-memory
/// stream, the whole client side sent at once.
#[test]
fn golden_dialogs_in_process() {
    for d in dialogs() {
        let fx = fixture(&d);
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        let output = run_in_process_with(&fx, &args, d.input());
        let mut r = &output[..];
        // Replies up to `S: CLOSED`; the rest of the input is not answered.
        let expected = d
            .steps
            .iter()
            .enumerate()
            .take_while(|(_, s)| !matches!(s, Step::Closed))
            .filter_map(|(i, s)| match s {
                Step::Expect(want) => Some((i, want)),
                Step::Send(_) | Step::Closed => None,
            });
        for (i, want) in expected {
            let got =
                read_reply(&mut r).unwrap_or_else(|| panic!("{}: no reply (in-process)", d.at(i)));
            check_reply(&format!("{} (in-process)", d.at(i)), &got, want);
        }
        assert!(
            read_reply(&mut r).is_none(),
            "{}: replies beyond the dialog (in-process)",
            d.name
        );
        check_mailboxes(&fx, &d, "in-process");
    }
}
