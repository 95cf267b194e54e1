//! Helpers for the integration tests: a postie server on a loopback port
//! with a temporary spool and users file, an SMTP client that checks reply
//! codes, and readers for the resulting mailboxes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HOST: &str = "razorback.test";
pub const USER: &str = "jon";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_postie")
}

/// A spool directory and a passwd file with `jon` and `alice`, both mapped
/// to the uid running the tests (so the tests pass as root and not), and
/// `nobody` (65534), the default user of programs and files.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("spool")).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let passwd = format!(
            "# test users\nroot:x:{uid}:{gid}:root:/root:/bin/sh\n\
             jon:x:{uid}:{gid}:Jon:/home/jon:/bin/sh\n\
             alice:x:{uid}:{gid}:Alice:/home/alice:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        std::fs::create_dir(dir.path().join("queue")).unwrap();
        std::fs::set_permissions(
            dir.path().join("queue"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        if nix::unistd::geteuid().is_root() {
            // Started as root, the SMTP side runs as nobody (privilege
            // separation): it reads the aliases here and spools big
            // messages in tmp/.
            use std::os::unix::fs::PermissionsExt;
            let set = |p: &Path, m: u32| {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
            };
            set(dir.path(), 0o755);
            set(&dir.path().join("tmp"), 0o1777);
        }
        Fixture { dir }
    }

    /// A fixture whose server has no queue (its directory missing): a
    /// recipient that cannot take a message at once defers the whole
    /// message (4xx), as before the queue; for the tests of locking and
    /// of the all-or-nothing transaction that runs before any queueing.
    pub fn without_queue() -> Self {
        let fx = Fixture::new();
        std::fs::remove_dir(fx.queue()).unwrap();
        fx
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Holds `user`'s mailbox with flock, as a mail reader holds it,
    /// until dropped (made if missing).
    pub fn hold_flock(&self, user: &str) -> nix::fcntl::Flock<std::fs::File> {
        let f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.mailbox(user))
            .unwrap();
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap()
    }

    /// The queue directory (mode 0700, empty).
    pub fn queue(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// The aliases file the server reads (missing until a test writes it).
    pub fn aliases(&self) -> PathBuf {
        self.dir.path().join("aliases")
    }

    /// Entries left in the temporary directory (spooled messages must
    /// leave none).
    pub fn temp_entries(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .count()
    }

    pub fn mailbox(&self, user: &str) -> PathBuf {
        self.spool().join(user)
    }

    pub fn read_mailbox(&self, user: &str) -> Vec<u8> {
        std::fs::read(self.mailbox(user)).unwrap_or_default()
    }

    /// The common options: spool, queue, users, host name, logging to
    /// stderr.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--spool".into(),
            self.spool().display().to_string(),
            "--queue-dir".into(),
            self.queue().display().to_string(),
            "--passwd".into(),
            self.dir.path().join("passwd").display().to_string(),
            "--hostname".into(),
            HOST.into(),
            "--log".into(),
            "stderr".into(),
            "--log-level".into(),
            "debug".into(),
            "--aliases".into(),
            self.aliases().display().to_string(),
            "--temp-dir".into(),
            self.dir.path().join("tmp").display().to_string(),
            "--user".into(),
            "nobody".into(),
            // No STARTTLS unless a test asks (Debian's snakeoil pair
            // would otherwise be used where root may read it).
            "--tls-cert".into(),
            "".into(),
        ]
    }

    /// [`Fixture::args`] with STARTTLS from `cert` and `key`.
    pub fn args_with_tls(&self, cert: &Path, key: &Path) -> Vec<String> {
        let mut args = self.args();
        let at = args.iter().position(|a| a == "--tls-cert").unwrap();
        args.drain(at..at + 2);
        args.extend([
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]);
        args
    }

    /// `--submit-socket` in the fixture's directory: a `serve` started as
    /// root without it would take over the system's
    /// `/run/postie/submit.sock`, and any root client of it on the
    /// machine would submit into the test's server.
    pub fn own_submit_socket(&self) -> [String; 2] {
        [
            "--submit-socket".into(),
            self.dir.path().join("submit.sock").display().to_string(),
        ]
    }

    /// The options of [`Fixture::args`] as configuration file lines.
    pub fn config_lines(&self) -> String {
        self.args()
            .chunks(2)
            .map(|kv| format!("{} = {}\n", kv[0].trim_start_matches('-'), kv[1]))
            .collect()
    }

    /// Writes `text` to `postie.conf` in the fixture's directory and
    /// returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("postie.conf");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Runs `postie ARGS` to its end with stdin from /dev/null.
pub fn run_postie<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run postie")
}

/// A running `postie serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `postie serve --listen 127.0.0.1:0` with the fixture's
    /// options and `extra`, and waits until it listens.
    pub fn start(fx: &Fixture, extra: &[&str]) -> Server {
        Server::spawn(serve_command(fx, fx.args(), extra))
    }

    /// Spawns `cmd` (which must log to stderr) and waits for its
    /// "listening on ADDR" line.
    pub fn spawn(cmd: Command) -> Server {
        Server::spawn_inner(cmd, None)
    }

    /// Spawns `cmd`, which listens on `addr` itself or through a parent
    /// (systemd-socket-activate), and waits until `addr` accepts.
    pub fn spawn_at(cmd: Command, addr: SocketAddr) -> Server {
        Server::spawn_inner(cmd, Some(addr))
    }

    fn spawn_inner(mut cmd: Command, at: Option<SocketAddr>) -> Server {
        assert_own_submit_socket(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start postie");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    if let Some(tx) = tx.take() {
                        let a: SocketAddr = line[i + 13..].trim().parse().unwrap();
                        let _ = tx.send(a);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        if let Some(addr) = at {
            if !wait_for(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()) {
                let _ = child.kill();
                panic!("nothing listens on {addr}");
            }
            return Server { child, addr, log };
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "postie did not start listening; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server { child, addr, log }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// True once the server's log holds `needle`. The log is read from the
    /// server's stderr by another thread, so a line written just before a
    /// reply may arrive a moment after it: wait up to 5 s.
    pub fn log_has(&self, needle: &str) -> bool {
        wait_for(Duration::from_secs(5), || self.log().contains(needle))
    }

    /// The log, once it holds every one of `needles` (or after 5 s).
    pub fn log_with(&self, needles: &[&str]) -> String {
        wait_for(Duration::from_secs(5), || {
            let log = self.log();
            needles.iter().all(|n| log.contains(n))
        });
        self.log()
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(within)
    }

    /// Sends `sig` to the server process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Waits (at most `within`) for the server to exit; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One reply: its code and its lines as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Reads one (possibly multi-line) reply.
pub fn read_reply<R: BufRead>(r: &mut R) -> Option<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        assert!(
            line.ends_with("\r\n"),
            "reply line not CRLF-terminated: {line:?}"
        );
        let line = line.trim_end().to_string();
        let code: u16 = line.get(..3)?.parse().ok()?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Some(Reply { code, lines });
        }
    }
}

/// A blocking SMTP client for tests.
pub struct Client {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Client {
    /// Sends a message of about 40 KB (`Subject: big`) to `rcpts`; returns
    /// the final reply.
    pub fn send_big(&mut self, rcpts: &[&str]) -> Reply {
        self.expect("HELO c", 250);
        self.expect("MAIL FROM:<a@b.example>", 250);
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), 250);
        }
        self.expect("DATA", 354);
        let line = format!("{}\r\n", "z".repeat(78));
        let mut w = self.w.try_clone().unwrap();
        w.write_all(b"Subject: big\r\n\r\n").unwrap();
        for _ in 0..500 {
            w.write_all(line.as_bytes()).unwrap();
        }
        w.write_all(b".\r\n").unwrap();
        self.reply()
    }

    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    pub fn reply(&mut self) -> Reply {
        read_reply(&mut self.r).expect("a reply")
    }

    /// Reads a reply, or `None` at end of stream.
    pub fn try_reply(&mut self) -> Option<Reply> {
        read_reply(&mut self.r)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// Sends `line` with CRLF and returns the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `line` and checks the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "after {line:?}: {}", r.text());
        r
    }

    /// One whole transaction after the greeting: HELO, MAIL, RCPT, DATA,
    /// the message (CRLF lines, already dot-stuffed), and the final 250.
    pub fn send_message(&mut self, from: &str, to: &str, message: &[u8]) {
        self.expect("HELO client.example", 250);
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        self.expect(&format!("RCPT TO:<{to}>"), 250);
        self.expect("DATA", 354);
        self.send_raw(message);
        self.send_raw(b".\r\n");
        self.expect_reply(250);
    }

    /// Reads a reply and checks its code.
    pub fn expect_reply(&mut self, code: u16) -> Reply {
        let r = self.reply();
        assert_eq!(r.code, code, "{}", r.text());
        r
    }

    /// True once the server has closed the connection (a reset counts: a
    /// server that closes with unread input resets the connection).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// One message as Python's `mailbox.mbox` reads it back.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    /// The `From ` line without `From `.
    pub from: String,
    pub subject: String,
    pub return_path: String,
    pub received: String,
    /// The body (after the header's blank line), as bytes.
    pub body: Vec<u8>,
}

/// Parses the mailbox at `path` with Python's `mailbox.mbox`, a reader we
/// did not write. Fields travel hex-encoded, one message per line.
pub fn python_mbox(path: &Path) -> Vec<Msg> {
    let script = r#"
import mailbox, sys
for m in mailbox.mbox(sys.argv[1], create=False):
    raw = m.as_bytes(unixfrom=False)
    body = raw.split(b"\n\n", 1)[1] if b"\n\n" in raw else b""
    f = [m.get_from(), m.get("Subject", ""), m.get("Return-Path", ""), str(m.get("Received", ""))]
    print("\t".join([x.encode("utf-8", "surrogateescape").hex() for x in f] + [body.hex()]))
"#;
    let out = python(script, &[path.to_str().unwrap()]);
    out.lines()
        .map(|l| {
            let f: Vec<Vec<u8>> = l.split('\t').map(unhex).collect();
            let s = |i: usize| String::from_utf8_lossy(&f[i]).into_owned();
            Msg {
                from: s(0),
                subject: s(1),
                return_path: s(2),
                received: s(3),
                body: f[4].clone(),
            }
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs a Python snippet with `args`; returns stdout, panics with stderr
/// on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `postie serve --listen 127.0.0.1:0` with `args` (the fixture's
/// options, perhaps changed) and `extra`, and a submission socket in the
/// fixture's directory unless `extra` names one. Never the system's
/// /run/postie/submit.sock: an installed postie may be serving it, every
/// test server started as root would take it over from the others, and
/// any `postie sendmail` run as root on the machine (another test's) would
/// submit through it into this test's server, as a session the caps do
/// not refuse.
pub fn serve_command(fx: &Fixture, args: Vec<String>, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(args)
        .args(extra);
    if !extra.contains(&"--submit-socket") {
        cmd.args(fx.own_submit_socket());
    }
    cmd
}

/// Panics unless a daemon that `cmd` starts (`serve`, `sendmail -bd`)
/// has a submission socket of its own, on its command line or in its `-C`
/// file: as root it would otherwise take over `/run/postie/submit.sock`,
/// and a root client of it elsewhere on the machine (cron's mail, another
/// test) would submit into this test's server.
fn assert_own_submit_socket(cmd: &Command) {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let daemon = args.iter().any(|a| a == "serve" || a == "-bd");
    if !daemon || args.iter().any(|a| a == "--submit-socket") {
        return;
    }
    let in_file = args
        .iter()
        .position(|a| a == "-C" || a == "--config")
        .and_then(|i| args.get(i + 1))
        .and_then(|f| std::fs::read_to_string(f).ok())
        .is_some_and(|text| {
            text.lines()
                .any(|l| l.trim_start().starts_with("submit-socket"))
        });
    assert!(
        in_file,
        "a test daemon without a submission socket of its own: {args:?} (add fx.own_submit_socket())"
    );
}

/// A free port on 127.0.0.1 (bound and released: a race is possible but
/// harmless in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Looks for `tool` on PATH; prints why a test is skipped when missing.
pub fn have(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        eprintln!("SKIP {test}: {tool} is not installed (.ci/run installs it)");
    }
    found
}

/// Waits until `f` is true, for at most `within`.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A client stream in memory, for running the session loop in-process.
pub struct InMemory(pub std::io::Cursor<Vec<u8>>);

impl Read for InMemory {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl postie::conn::TimedRead for InMemory {
    fn set_read_timeout(&mut self, _: Duration) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs one session in-process, configured as `postie inetd` with the
/// fixture's options, on `input` (everything the client sends, at once),
/// and returns what the server wrote.
pub fn run_in_process(fx: &Fixture, input: Vec<u8>) -> Vec<u8> {
    run_in_process_with(fx, &[], input)
}

/// [`run_in_process`] with `extra` options after the fixture's.
pub fn run_in_process_with(fx: &Fixture, extra: &[&str], input: Vec<u8>) -> Vec<u8> {
    let mut argv = vec!["postie".to_string(), "inetd".to_string()];
    argv.extend(fx.args());
    argv.extend(extra.iter().map(|a| a.to_string()));
    let cli = postie::cli::parse(argv.iter().map(std::ffi::OsString::from)).unwrap();
    let service = postie::config::service(&cli.opts).unwrap();
    let mut output = Vec::new();
    service.run_session(InMemory(std::io::Cursor::new(input)), &mut output, None);
    output
}

/// Subjects of the messages in `path` as s-nail, a real mail reader, lists
/// them in batch mode; `None` (with a printed reason) when s-nail is not
/// installed.
pub fn snail_subjects(path: &Path, test: &str) -> Option<Vec<String>> {
    if !have("s-nail", test) {
        return None;
    }
    Some(
        snail(path, &["-S", "headline=SUBJ %s"], "headers\nquit\n")
            .lines()
            .filter_map(|l| l.split_once("SUBJ ").map(|(_, s)| s.trim().to_string()))
            .collect(),
    )
}

/// What mutt writes when it pipes messages of the mailbox `mbox` through
/// `cat`: `set` holds extra settings, `keys` the keys pushed (they end in
/// `<pipe-message>cat > SHOWN<enter><quit>`; `SHOWN` stands for the
/// file). mutt has no batch mode: it runs in a pseudo-terminal (`script`).
/// The caller checks that mutt and script are there.
pub fn mutt_piped(mbox: &Path, set: &str, keys: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let shown = dir.path().join("shown");
    let keys = keys.replace("SHOWN", &shown.display().to_string());
    let mutt = format!(
        "mutt -n -F /dev/null -R -f {} -e 'set folder={} quit=yes wait_key=no {set}' \
         -e 'push \"{keys}\"'",
        mbox.display(),
        dir.path().display(),
    );
    let out = Command::new("timeout")
        .args(["60", "script", "-qfec", &mutt, "/dev/null"])
        .env("HOME", &home)
        .env("TERM", "vt100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mutt: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&std::fs::read(&shown).unwrap()).into_owned()
}

/// What s-nail prints in batch mode (`-# -R`, with `opts`) for the
/// commands of `script` on the mailbox at `path`.
pub fn snail(path: &Path, opts: &[&str], script: &str) -> String {
    let mut child = Command::new("s-nail")
        .args(["-#", "-R"])
        .args(opts)
        .arg("-f")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("s-nail");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "s-nail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every message of `path` as raw bytes, split on the `From ` lines of
/// mboxrd (each message without its From_ line and final blank line).
pub fn raw_messages(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_default();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(Vec::new());
        } else if let Some(m) = out.last_mut() {
            m.extend_from_slice(line);
        } else {
            panic!("{}: does not start with a From_ line", path.display());
        }
    }
    for m in &mut out {
        assert!(m.ends_with(b"\n\n"), "message without its blank line");
        m.pop();
    }
    out
}

/// Undoes mboxrd quoting: a line `>+From ` loses one `>`.
pub fn unquote_mboxrd(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in b.split_inclusive(|&c| c == b'\n') {
        let n = line.iter().take_while(|&&c| c == b'>').count();
        if n > 0 && line[n..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// A queue entry from `jon@frogbog` for `alice` (busy: 4.2.0) and `bob`
/// (not tried yet), received an hour ago.
pub fn queue_entry() -> postie::queue::Entry {
    use postie::queue::{Entry, LastError, Pending, Recipient, StatusCode};
    let received = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let rcpt = |address: &str, user: &str| Recipient {
        address: address.into(),
        notify: None,
        orcpt: None,
        users: vec![user.into()],
    };
    let pending = |rcpt, user: &str, last_error| Pending {
        rcpt,
        user: user.into(),
        attempts: 1,
        next_attempt: received,
        last_error,
    };
    let busy = LastError::new(StatusCode::parse("4.2.0").unwrap(), "mailbox busy");
    Entry {
        id: String::new(),
        log_id: "5A1B2C3.7".into(),
        received,
        size: 0,
        trace: 0,
        sender: Some("jon@frogbog".into()),
        submitter: None,
        envid: None,
        ret: None,
        warned: None,
        recipients: vec![rcpt("alice@frogbog", "alice"), rcpt("bob", "bob")],
        pending: vec![pending(0, "alice", Some(busy)), pending(1, "bob", None)],
    }
}

/// A tmpfs of `size` mounted on `dir` (mode `mode`) until dropped; `None`
/// (with the reason printed as a skip of `test`) where that cannot be
/// done: mounting needs root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str, mode: &str, test: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP {test}: mounting a tmpfs needs root");
            return None;
        }
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode={mode}"),
                "tmpfs",
            ])
            .arg(dir)
            .status();
        if !matches!(mounted, Ok(s) if s.success()) {
            eprintln!("SKIP {test}: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
