//! A whole SMTP session: arbitrary bytes as everything the client sends,
//! through the real connection loop (`postie::conn::run` via
//! `Service::run_session`: line splitting, pipelining, the DATA reader,
//! spilling to a temporary file) and the real delivery into mbox files in
//! a temporary spool, with the recipients of a temporary passwd file and
//! aliases file.
//!
//! Input: byte 0 picks one of two configurations (bit 0) and how many
//! octets the client stream hands out per read (bits 1-7: 1 to 127, 0 for
//! no limit); the rest is the client's side of the session.
//!
//! Invariants:
//! * no panic, and memory stays bounded (libFuzzer's -rss_limit_mb);
//! * everything the server writes is well-formed replies: lines of
//!   `DDD-text` or `DDD text` ended by CRLF, with a code from 200 to 599,
//!   printable ASCII text, at most 512 octets (RFC 5321 4.5.3.1.5), and the
//!   lines of a multi-line reply share one code;
//! * the first reply is the 220 greeting; nothing follows a 221 or 421;
//! * the spool holds mailboxes only (no lock or temporary file is left
//!   behind); each one that is not empty starts with a From_ line; and
//!   there are messages in it exactly when a message was accepted (`250 ...
//!   Message accepted for delivery`), at least one per acceptance.

#![no_main]

use std::io::{Cursor, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use postie::server::Service;

struct Fixture {
    _dir: tempfile::TempDir,
    spool: PathBuf,
    services: [Service; 2],
    /// `POSTIE_FUZZ_SHOW` is set: print the replies (to look at an input
    /// with `cargo fuzz run session FILE`).
    show: bool,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // A memory file system where there is one: delivery fsyncs.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let path = dir.path();
        let spool = path.join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::create_dir(path.join("tmp")).unwrap();
        // Every user is the one running the fuzzer, who owns the directory.
        let meta = std::fs::metadata(path).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        std::fs::write(
            path.join("passwd"),
            format!(
                "root:x:{uid}:{gid}:root:/root:/bin/sh\n\
                 jon:x:{uid}:{gid}:Jon:/home/jon:/bin/sh\n\
                 alice:x:{uid}:{gid}:Alice:/home/alice:/bin/sh\n"
            ),
        )
        .unwrap();
        std::fs::write(
            path.join("aliases"),
            "postmaster: root\nteam: jon, alice, team\nj: \\jon\nbad: |/bin/false\n\
             far: someone@elsewhere.example\nloop1: loop2\nloop2: loop1\n",
        )
        .unwrap();
        let common = |extra: &[&str]| {
            let mut argv: Vec<String> = ["postie", "inetd", "--hostname", "fuzz.test"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            for (k, v) in [
                ("--spool", spool.clone()),
                ("--passwd", path.join("passwd")),
                ("--aliases", path.join("aliases")),
                ("--temp-dir", path.join("tmp")),
            ] {
                argv.push(k.into());
                argv.push(v.display().to_string());
            }
            argv.extend(extra.iter().map(|s| s.to_string()));
            let cli = postie::cli::parse(argv.iter().map(std::ffi::OsString::from)).unwrap();
            postie::config::service(&cli.opts).unwrap()
        };
        let services = [
            common(&["--domain", "example.org", "--lock-timeout", "1"]),
            common(&[
                "--max-size",
                "200",
                "--bare-lf",
                "reject",
                "--spill-threshold",
                "16",
                "--max-recipients",
                "2",
                "--max-errors",
                "3",
                "--quoting",
                "mboxo",
                "--extension-delimiter",
                "-",
                "--lock-timeout",
                "1",
            ]),
        ];
        Fixture {
            _dir: dir,
            spool,
            services,
            show: std::env::var_os("POSTIE_FUZZ_SHOW").is_some(),
        }
    })
}

/// The client: the fuzz input, handed out at most `step` octets a read.
struct Client {
    input: Cursor<Vec<u8>>,
    step: usize,
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step);
        self.input.read(&mut buf[..n])
    }
}

impl postie::conn::TimedRead for Client {
    fn set_read_timeout(&mut self, _: Duration) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks that `out` is a sequence of well-formed replies; returns the
/// number of messages accepted.
fn check_replies(out: &[u8]) -> usize {
    let text = std::str::from_utf8(out).expect("replies are not UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\r\n"),
        "unterminated reply line"
    );
    let mut accepted = 0;
    let mut continued: Option<&str> = None;
    let mut closed = false;
    for (i, line) in text.split_terminator("\r\n").enumerate() {
        assert!(!closed, "a reply after the connection closed: {line:?}");
        assert!(
            line.len() + 2 <= 512,
            "reply line over 512 octets: {line:?}"
        );
        assert!(
            line.bytes().all(|c| (0x20..0x7f).contains(&c)),
            "reply line with a control or 8-bit octet: {line:?}"
        );
        let code = line.get(..3).expect("short reply line");
        assert!(
            code.bytes().all(|c| c.is_ascii_digit()),
            "bad code: {line:?}"
        );
        assert!(
            ("200".."600").contains(&code),
            "code out of range: {line:?}"
        );
        let sep = line.as_bytes().get(3).copied();
        assert!(matches!(sep, Some(b' ' | b'-')), "no separator: {line:?}");
        if let Some(c) = continued {
            assert_eq!(c, code, "multi-line reply changes code: {line:?}");
        }
        if i == 0 {
            assert_eq!(code, "220", "no greeting first: {line:?}");
        }
        if sep == Some(b'-') {
            continued = Some(code);
            continue;
        }
        continued = None;
        if code == "250" && line.ends_with(" Message accepted for delivery") {
            accepted += 1;
        }
        closed = code == "221" || code == "421";
    }
    assert!(
        continued.is_none(),
        "multi-line reply without its last line"
    );
    accepted
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let service = &fx.services[usize::from(first & 1)];
    let step = match first >> 1 {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let client = Client {
        input: Cursor::new(input.to_vec()),
        step,
    };
    let mut out = Vec::new();
    service.run_session(client, &mut out, None);
    if fx.show {
        eprintln!("{}", String::from_utf8_lossy(&out));
    }
    let accepted = check_replies(&out);

    let mut messages = 0;
    for entry in std::fs::read_dir(&fx.spool).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        // The delivery's transaction journal, kept for the next delivery.
        if name.starts_with(".postie-txn.") {
            continue;
        }
        assert!(
            ["root", "jon", "alice"].contains(&name.as_str()),
            "unexpected file left in the spool: {name}"
        );
        let mbox = std::fs::read(entry.path()).unwrap();
        assert!(
            mbox.is_empty() || mbox.starts_with(b"From "),
            "{name}: does not start with a From_ line"
        );
        messages += mbox
            .split(|&c| c == b'\n')
            .filter(|l| l.starts_with(b"From "))
            .count();
        std::fs::remove_file(entry.path()).unwrap();
    }
    assert_eq!(
        messages == 0,
        accepted == 0,
        "{messages} messages in the spool for {accepted} accepted"
    );
    assert!(
        messages >= accepted,
        "{messages} messages for {accepted} accepted"
    );
});
