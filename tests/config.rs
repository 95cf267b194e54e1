//! The configuration file (`-C FILE`) under the real binary, and `postie
//! check`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `postie -C FILE serve`, everything else from the file but the
/// submission socket, next to the file (not the system's).
fn serve_with(conf: &std::path::Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(bin());
    cmd.arg("-C").arg(conf).arg("serve").args(extra);
    if !extra.contains(&"--submit-socket") {
        let dir = conf.parent().expect("a config file in a directory");
        cmd.arg("--submit-socket").arg(dir.join("submit.sock"));
    }
    Server::spawn(cmd)
}

/// Spool, users, host name, size limit, an extra local domain and the
/// listening address, all from the file: the greeting, EHLO's SIZE and
/// RCPT follow it, and the message lands in the file's spool.
#[test]
fn serve_follows_the_config_file() {
    let fx = Fixture::new();
    let conf = fx.write_config(&format!(
        "# from the test\n{}hostname = mx.frogbog.test\nmax_size = 12345\n\
         domain = extra.test\nlisten = 127.0.0.1:0\n",
        fx.config_lines().replace("hostname = razorback.test\n", "")
    ));
    let srv = serve_with(&conf, &[]);
    let mut c = srv.connect();
    let greeting = c.reply();
    assert!(
        greeting.lines[0].starts_with("220 mx.frogbog.test "),
        "{greeting:?}"
    );
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.iter().any(|l| l == "250-SIZE 12345"),
        "{:?}",
        ehlo.lines
    );
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect("RCPT TO:<jon@extra.test>", 250);
    c.expect("RCPT TO:<alice@mx.frogbog.test>", 250);
    c.expect("RCPT TO:<jon@razorback.test>", 550);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: configured\r\n\r\nhello\r\n.\r\n");
    c.expect_reply(250);
    c.expect("QUIT", 221);
    for user in ["jon", "alice"] {
        let msgs = python_mbox(&fx.mailbox(user));
        assert_eq!(msgs.len(), 1, "{user}");
        assert_eq!(msgs[0].subject, "configured");
    }
}

/// An option on the command line wins over the file, a repeatable one
/// (`--domain`, `--listen`) included: its values replace the file's.
#[test]
fn the_command_line_overrides_the_file() {
    let fx = Fixture::new();
    let port = free_port();
    let conf = fx.write_config(&format!(
        "{}max-size = 12345\ndomain = extra.test\nlisten = 127.0.0.1:{port}\n",
        fx.config_lines()
    ));
    let srv = serve_with(
        &conf,
        &[
            "--max-size",
            "999",
            "--domain",
            "other.test",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let mut c = srv.connect();
    c.reply();
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.iter().any(|l| l == "250-SIZE 999"),
        "{:?}",
        ehlo.lines
    );
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect("RCPT TO:<jon@other.test>", 250);
    c.expect("RCPT TO:<jon@extra.test>", 550);
    c.expect("QUIT", 221);
    assert!(
        !srv.log()
            .contains(&format!("listening on 127.0.0.1:{port}")),
        "{}",
        srv.log()
    );
}

/// An unknown key, a bad value, a line without `=`, a key set twice: exit
/// 78 (EX_CONFIG) naming FILE:LINE on stderr, before anything listens.
#[test]
fn config_errors_exit_78_naming_file_and_line() {
    let fx = Fixture::new();
    for (line, want) in [
        ("bogus = 1", "unknown key \"bogus\""),
        ("max-size = lots", "max-size: invalid value \"lots\""),
        ("max-line = 100", "max-line: invalid value \"100\""),
        ("bare_lf = maybe", "bare-lf: invalid value \"maybe\""),
        (
            "mailbox-mode = 444",
            "mailbox-mode: 444: want an octal mode",
        ),
        ("spool /var/mail", "expected \"key = value\""),
        (
            "log-level = debug",
            "log-level: set again; first set on line",
        ),
    ] {
        let conf = fx.write_config(&format!("{}{line}\n", fx.config_lines()));
        let n = fx.config_lines().lines().count() + 1;
        let out = run_postie(&[
            "-C".as_ref(),
            conf.as_os_str(),
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ]);
        assert_eq!(out.status.code(), Some(78), "{line}: {}", stderr(&out));
        let err = stderr(&out);
        let at = format!("{}:{n}: ", conf.display());
        assert!(err.contains(&at), "{line}: want {at:?} in {err}");
        assert!(err.contains(want), "{line}: want {want:?} in {err}");
        assert!(!err.contains("listening on"), "{err}");
    }
}

/// A file named with -C must exist; the error says which.
#[test]
fn a_missing_config_file_exits_78() {
    let fx = Fixture::new();
    let missing = fx.dir.path().join("nowhere.conf");
    let out = run_postie(&[
        "--config".as_ref(),
        missing.as_os_str(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}: ", missing.display())),
        "{}",
        stderr(&out)
    );
}

/// inetd mode takes its whole configuration from the file; a broken file
/// still exits 78 and writes nothing to stderr, the client's socket.
#[test]
fn inetd_mode_reads_the_file_and_stays_silent_on_errors() {
    let fx = Fixture::new();
    let conf = fx.write_config(&fx.config_lines());
    let mut child = Command::new(bin())
        .arg("-C")
        .arg(&conf)
        .arg("-bs")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<jon@razorback.test>\r\nDATA\r\n\
              Subject: over -bs\r\n\r\nx\r\n.\r\nQUIT\r\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    assert_eq!(python_mbox(&fx.mailbox("jon"))[0].subject, "over -bs");

    let conf = fx.write_config(&format!("{}bogus = 1\n", fx.config_lines()));
    let out = run_postie(&["-C".as_ref(), conf.as_os_str(), "inetd".as_ref()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

/// Issue 5, first hour: inetd mode with a bad configuration answers the
/// client `421 4.3.5` (system incorrectly configured, RFC 3463) on stdout
/// before it exits 78, instead of closing without a word; stderr stays
/// empty. Both a file the parser refuses and a value only the service can
/// judge (the spool directory), over pipes, with the client's commands
/// waiting on stdin.
#[test]
fn inetd_with_a_bad_config_answers_421_before_exiting() {
    let fx = Fixture::new();
    for line in ["bogus = 1", "mailbox-mode = 444"] {
        let conf = fx.write_config(&format!("{}{line}\n", fx.config_lines()));
        let mut child = Command::new(bin())
            .arg("-C")
            .arg(&conf)
            .arg("inetd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The client may already have spoken; nothing reads it.
        let _ = child.stdin.take().unwrap().write_all(b"EHLO c\r\n");
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{line}");
        assert!(out.stderr.is_empty(), "{line}: {}", stderr(&out));
        let o = stdout(&out);
        assert!(o.starts_with("421 4.3.5 "), "{line}: {o:?}");
        assert!(o.ends_with("\r\n") && o.lines().count() == 1, "{o:?}");
    }
}

/// Issue 5, first hour: a port that cannot be bound is reported once on
/// stderr (the log line, when the log goes to stderr), not twice.
#[test]
fn a_listen_failure_is_reported_once() {
    let fx = Fixture::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sock = fx.dir.path().join("submit.sock");
    let mut args: Vec<String> = vec!["serve".into(), "--listen".into(), addr.clone()];
    args.extend(fx.args());
    args.extend(["--submit-socket".into(), sock.display().to_string()]);
    let out = run_postie(&args);
    assert_eq!(out.status.code(), Some(71), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches(&format!("cannot listen on {addr}")).count(),
        1,
        "{err}"
    );
    // Logging elsewhere, the error is still printed, once.
    let i = args.iter().position(|a| a == "--log").unwrap();
    args[i + 1] = "syslog".into();
    let out = run_postie(&args);
    assert_eq!(out.status.code(), Some(71));
    assert_eq!(
        stderr(&out).matches("cannot listen on").count(),
        1,
        "{}",
        stderr(&out)
    );
}

/// Issue 5, first hour: `postie --listen ADDR serve`, the listen option
/// before the mode like every other option, listens there; before any
/// other mode it is an error that names `serve --listen`.
#[test]
fn listen_before_the_serve_word_works() {
    let fx = Fixture::new();
    let mut cmd = Command::new(bin());
    cmd.args(["--listen", "127.0.0.1:0", "serve"])
        .args(fx.args())
        .arg("--submit-socket")
        .arg(fx.dir.path().join("submit.sock"));
    let srv = Server::spawn(cmd);
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.expect("QUIT", 221);

    let out = run_postie(&["--listen", "127.0.0.1:0", "inetd"]);
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(err.contains("serve --listen"), "{err}");
    assert!(!err.contains("--aliases"), "{err}");
}

/// Issue 5, item 9b: the submission socket is mode 0666 whatever the
/// umask, and a symlink planted at its path (by another user, when the
/// tests run as root) is replaced, never followed: the file it points to
/// keeps its mode and content.
#[test]
fn submission_socket_mode_and_a_planted_symlink() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fx = Fixture::new();
    let run = fx.dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let victim = fx.dir.path().join("victim");
    std::fs::write(&victim, b"secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = run.join("submit.sock");
    std::os::unix::fs::symlink(&victim, &sock).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(&sock, Some(65534), Some(65534)).unwrap();
    }
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(fx.args())
        .arg("--submit-socket")
        .arg(&sock);
    // A umask that would leave the socket unusable to other users if its
    // mode came from bind(2).
    let cmd = {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("umask 077 && exec \"$@\"")
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        sh
    };
    let srv = Server::spawn(cmd);
    assert!(
        srv.log_has("accepting local submissions on"),
        "{}",
        srv.log()
    );
    // The log names the socket's path, not the private directory it was
    // bound in before the rename.
    assert!(
        srv.log_has(&format!(
            "accepting local submissions on {}",
            sock.display()
        )),
        "{}",
        srv.log()
    );
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert!(m.file_type().is_socket(), "{:?}", m.file_type());
    assert_eq!(m.permissions().mode() & 0o7777, 0o666);
    let v = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        v.permissions().mode() & 0o7777,
        0o600,
        "the target was chmod'ed"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret\n");
    // Nothing left behind in the directory but the socket.
    let names: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["submit.sock"]);
    let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(read_reply(&mut r).unwrap().code, 220);
}

/// `postie -C FILE check ARGS`, with the fixture's options in the file.
fn check(fx: &Fixture, args: &[&str]) -> std::process::Output {
    let conf = fx.write_config(&fx.config_lines());
    let mut cmd = Command::new(bin());
    cmd.arg("-C").arg(&conf).arg("check").args(args);
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// Every line of `postie check` is a finding; a good setup exits 0
/// (warnings allowed: the test spool is not root:mail 2775).
#[test]
fn check_a_good_setup() {
    let fx = Fixture::new();
    let out = check(&fx, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    for line in text.lines() {
        assert!(
            line.starts_with("ok: ") || line.starts_with("warning: "),
            "{line}"
        );
    }
    let conf = fx.dir.path().join("postie.conf");
    assert!(
        text.contains(&format!(
            "ok: configuration {}: {} settings\n",
            conf.display(),
            fx.config_lines().lines().count()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok: spool {}: a directory", fx.spool().display())),
        "{text}"
    );
    assert!(text.contains("ok: aliases "), "{text}");
    assert!(
        text.contains(&format!(
            "ok: queue {}: 0 entries, 0 broken\n",
            fx.queue().display()
        )),
        "{text}"
    );
}

/// The queue's health: its entries and the oldest one's age; a queue
/// directory replaced by a symbolic link to a directory anyone may write
/// is refused (EX_CONFIG), and nothing in it is looked at.
#[test]
fn check_reports_the_queue() {
    use postie::queue::Queue;
    use std::time::{Duration, SystemTime};
    let fx = Fixture::new();
    let mut entry = queue_entry();
    entry.received = SystemTime::now() - Duration::from_secs(3 * 3600 + 5 * 60 + 30);
    Queue::open(&fx.queue())
        .unwrap()
        .create(&mut entry, &mut &b"Subject: hi\n\nhello\n"[..])
        .unwrap();
    let out = check(&fx, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let want = format!(
        "ok: queue {}: 1 entry, 0 broken, the oldest 3h 5m old\n",
        fx.queue().display()
    );
    assert!(text.contains(&want), "want {want:?} in\n{text}");

    std::fs::remove_file(fx.queue().join(format!("qf{}", entry.id))).unwrap();
    std::fs::remove_file(fx.queue().join(format!("df{}", entry.id))).unwrap();
    std::fs::remove_dir(fx.queue()).unwrap();
    std::os::unix::fs::symlink("/tmp", fx.queue()).unwrap();
    let out = check(&fx, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let queue_lines: Vec<&str> = text.lines().filter(|l| l.contains("queue ")).collect();
    assert_eq!(queue_lines.len(), 1, "{text}");
    assert!(
        queue_lines[0].starts_with(&format!("error: queue {}: ", fx.queue().display())),
        "{text}"
    );
}

/// With an address: the user, uid and mailbox, as RCPT TO would resolve
/// it.
#[test]
fn check_names_the_user_and_mailbox() {
    let fx = Fixture::new();
    std::fs::write(fx.mailbox("jon"), b"0123456789").unwrap();
    let out = check(&fx, &["jon@razorback.test"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let uid = nix::unistd::geteuid();
    let want = format!(
        "ok: jon@razorback.test: local user jon (uid {uid}), mailbox {} (exists, 10 bytes)\n",
        fx.mailbox("jon").display()
    );
    assert!(text.contains(&want), "want {want:?} in\n{text}");
}

/// Unknown user: 550 5.1.1 and EX_NOUSER (67); another domain: 550 5.7.1
/// and EX_UNAVAILABLE (69); not an address: EX_DATAERR (65).
#[test]
fn check_refused_addresses() {
    let fx = Fixture::new();
    for (addr, code, want) in [
        (
            "elvis@razorback.test",
            67,
            "error: elvis@razorback.test: 550 5.1.1 user unknown\n",
        ),
        (
            "jon@elsewhere.example",
            69,
            "error: jon@elsewhere.example: 550 5.7.1 relaying denied",
        ),
        (
            "<jon@razorback.test",
            65,
            "error: <jon@razorback.test: bad address",
        ),
    ] {
        let out = check(&fx, &[addr]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(code), "{addr}: {text}");
        assert!(text.contains(want), "{addr}: want {want:?} in\n{text}");
    }
}

/// An alias is shown expanded, then each of its users.
#[test]
fn check_expands_an_alias() {
    let fx = Fixture::new();
    std::fs::write(fx.aliases(), "staff: admins, jon\nadmins: alice\n").unwrap();
    let out = check(&fx, &["Staff@razorback.test"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok: Staff@razorback.test: alias staff -> alice, jon\n"),
        "{text}"
    );
    assert!(
        text.contains("ok: Staff@razorback.test: local user alice "),
        "{text}"
    );
    assert!(
        text.contains("ok: Staff@razorback.test: local user jon "),
        "{text}"
    );
}

/// A broken configuration is reported by check on stdout, with EX_CONFIG.
#[test]
fn check_reports_a_broken_config_file() {
    let fx = Fixture::new();
    let conf = fx.write_config(&format!("{}max-size = lots\n", fx.config_lines()));
    let out = run_postie(&["-C".as_ref(), conf.as_os_str(), "check".as_ref()]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stdout(&out),
        format!(
            "error: {}:{}: max-size: invalid value \"lots\": invalid digit found in string\n",
            conf.display(),
            fx.config_lines().lines().count() + 1
        )
    );

    let fx = Fixture::new();
    std::fs::remove_dir(fx.spool()).unwrap();
    let out = check(&fx, &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stdout(&out).contains(&format!("error: spool {}: ", fx.spool().display())),
        "{}",
        stdout(&out)
    );
}

/// The shipped example (packaging/postie.conf) and postie.conf(5) name
/// every key; the example's commented-out values are the built-in
/// defaults, except for the keys whose default comes from the system,
/// where it shows an example.
#[test]
fn example_file_and_man_page_cover_every_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("packaging/postie.conf")).unwrap();
    let man = std::fs::read_to_string(root.join("man/postie.conf.5")).unwrap();
    let keys = postie::config::key_names();
    for key in &keys {
        assert!(
            example
                .lines()
                .any(|l| l.starts_with(&format!("#{key} = "))),
            "packaging/postie.conf lacks {key}"
        );
        let mdoc = format!(".It Cm {} No = ", key.replace('-', "\\-"));
        assert!(man.contains(&mdoc), "postie.conf(5) lacks {key}");
    }
    let examples_only = [
        "listen",
        "hostname",
        "domain",
        "passwd",
        "temp-dir",
        "group",
        "tls-cert",
        "tls-key",
        "require-tls",
        "lmtp-socket-group",
    ];
    let defaults: String = example
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, _)| keys.iter().any(|x| x == k) && !examples_only.contains(&k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("defaults.conf");
    std::fs::write(&conf, &defaults).unwrap();
    let load = |args: &[&str]| {
        let cl = postie::cli::command_line(args.iter().map(std::ffi::OsString::from)).unwrap();
        let mut loaded = postie::config::load(cl).unwrap();
        loaded.cli.opts.config = None;
        (format!("{:?}", loaded.cli.opts), loaded.settings.len())
    };
    let (from_file, n) = load(&["postie", "-C", conf.to_str().unwrap(), "inetd"]);
    assert_eq!(n, keys.len() - examples_only.len(), "{defaults}");
    let none = dir.path().join("empty.conf");
    std::fs::write(&none, "").unwrap();
    let (built_in, _) = load(&["postie", "-C", none.to_str().unwrap(), "inetd"]);
    assert_eq!(from_file, built_in);
}

/// Started as root, the SMTP side reads the aliases as --user: `check`
/// warns about an aliases file only root can read.
#[test]
fn check_warns_about_aliases_the_smtp_side_cannot_read() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP check_warns_about_aliases_the_smtp_side_cannot_read: not running as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    std::fs::write(fx.aliases(), "staff: jon\n").unwrap();
    for (mode, warned) in [(0o600, true), (0o644, false)] {
        std::fs::set_permissions(fx.aliases(), std::fs::Permissions::from_mode(mode)).unwrap();
        let text = stdout(&check(&fx, &[]));
        let warning = format!(
            "warning: aliases {}: mode {mode:o} is not readable",
            fx.aliases().display()
        );
        assert_eq!(text.contains(&warning), warned, "{text}");
        let ok = format!(
            "ok: aliases {}: readable by the SMTP side (nobody)",
            fx.aliases().display()
        );
        assert_eq!(text.contains(&ok), !warned, "{text}");
    }
}

/// Makes `cmd` run postie as an ordinary user that owns the fixture's
/// spool and is every user of its passwd file: the user running the tests,
/// or, as root, nobody (65534).
fn as_ordinary_user(fx: &Fixture, cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let (uid, gid) = (65534, 65534);
    std::os::unix::fs::chown(fx.spool(), Some(uid), Some(gid)).unwrap();
    let passwd = fx.dir.path().join("passwd");
    let text = std::fs::read_to_string(&passwd).unwrap();
    let remapped: String = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() == 7 {
                format!("{}:x:{uid}:{gid}:{}:{}:{}\n", f[0], f[4], f[5], f[6])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&passwd, remapped).unwrap();
    cmd.uid(uid).gid(gid);
}

/// Runs `cmd` to its end (at most 20 s, else kills it and fails).
fn run_bounded(mut cmd: Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let exited = wait_for(std::time::Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "still running after 20 s; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

/// Issue "postie 5": a spool postie cannot create files in (as an ordinary
/// user, /var/mail) took RCPT with 250 and failed at the end of DATA.
/// Now `serve` refuses to start (EX_CONFIG) and says why, and `check`
/// calls it an error, with EX_CONFIG.
#[test]
fn a_spool_postie_cannot_write_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(fx.args());
    cmd.arg("--submit-socket")
        .arg(fx.dir.path().join("submit.sock"));
    as_ordinary_user(&fx, &mut cmd);
    std::fs::set_permissions(fx.spool(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = run_bounded(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let want = format!("spool {}: postie (uid ", fx.spool().display());
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("cannot create files in it (Permission denied): no journal, mailbox or dotlock can be made, so no mail can be delivered"),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");

    let conf = fx.write_config(&fx.config_lines());
    let mut cmd = Command::new(bin());
    cmd.arg("-C").arg(&conf).arg("check");
    as_ordinary_user(&fx, &mut cmd);
    let out = run_bounded(cmd);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains(&format!("error: {want}")), "{text}");
}

/// Issue "postie 5": the journal that could not be made was logged as
/// `SPOOL/.postie-txn.: Permission denied`, a file name cut off. (The
/// spool is made read-only after the start.)
#[test]
fn a_journal_that_cannot_be_made_is_logged_plainly() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(fx.args());
    cmd.arg("--submit-socket")
        .arg(fx.dir.path().join("submit.sock"));
    as_ordinary_user(&fx, &mut cmd);
    let srv = Server::spawn(cmd);
    std::fs::set_permissions(fx.spool(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut c = srv.connect();
    c.reply();
    c.expect("HELO client.example", 250);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect("RCPT TO:<jon@razorback.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nhello\r\n.\r\n");
    c.expect_reply(451);
    let want = format!(
        "cannot create a journal in {}: Permission denied",
        fx.spool().display()
    );
    let log = srv.log_with(&[&want]);
    assert!(log.contains(&want), "{log}");
    assert!(!log.contains(".postie-txn.:"), "{log}");
}

/// Issue "postie 5": started as root on a spool made by `mkdir -p` (root
/// 0755), postie says at start that only root's mail can arrive, and how
/// to make it right; on Debian's root:mail 2775 it says nothing. `check`
/// names a recipient whose mailbox cannot be made.
#[test]
fn root_says_at_start_whose_mail_cannot_arrive() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP root_says_at_start_whose_mail_cannot_arrive: not running as root");
        return;
    }
    let Ok(Some(mail)) = nix::unistd::Group::from_name("mail") else {
        eprintln!("SKIP root_says_at_start_whose_mail_cannot_arrive: no group mail");
        return;
    };
    let fx = Fixture::new();
    std::os::unix::fs::chown(fx.spool(), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(fx.spool(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let want = format!(
        "spool {} is root:root 0755: only root's mail can arrive, mail to any other user is deferred (450 at RCPT)",
        fx.spool().display()
    );
    let srv = Server::start(&fx, &[]);
    let log = srv.log_with(&[&want]);
    assert!(log.contains(&want), "{log}");
    assert!(log.contains("chown root:mail "), "{log}");
    drop(srv);

    // A recipient other than root, as check sees them.
    let passwd = fx.dir.path().join("passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("bob:x:65534:65534:Bob:/nonexistent:/bin/sh\n");
    std::fs::write(&passwd, text).unwrap();
    let out = check(&fx, &["bob@razorback.test"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(text.contains(&format!("warning: {want}")), "{text}");
    assert!(
        text.contains("uid 65534 with group mail cannot create the mailbox or its dotlock there"),
        "{text}"
    );

    std::os::unix::fs::chown(fx.spool(), Some(0), Some(mail.gid.as_raw())).unwrap();
    std::fs::set_permissions(fx.spool(), std::fs::Permissions::from_mode(0o2775)).unwrap();
    let srv = Server::start(&fx, &[]);
    let mut c = srv.connect();
    c.reply();
    c.expect("QUIT", 221);
    assert!(!srv.log().contains("can arrive"), "{}", srv.log());
    let out = check(&fx, &["bob@razorback.test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// Issue "postie 5": with `--log syslog` and no syslog daemon (neither
/// /dev/log nor journald's socket), every line vanished silently. In the
/// foreground postie now says so, once, on stderr.
#[test]
fn serve_without_syslog_says_so_once() {
    let test = "serve_without_syslog_says_so_once";
    if let Some(p) = postie::maillog::SYSLOG_SOCKETS
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    {
        eprintln!("SKIP {test}: this host has {p}; the test needs a host without syslog");
        return;
    }
    let fx = Fixture::new();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut args = fx.args();
    let at = args.iter().position(|a| a == "--log").unwrap();
    args[at + 1] = "syslog".into();
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .args(args)
        .arg("--submit-socket")
        .arg(fx.dir.path().join("submit.sock"));
    let mut srv = Server::spawn_at(cmd, addr);
    for _ in 0..2 {
        let mut c = srv.connect();
        c.reply();
        c.expect("QUIT", 221);
    }
    srv.terminate(std::time::Duration::from_secs(20));
    let log = srv.log_with(&["syslog is not reachable"]);
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("syslog is not reachable"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].starts_with(
            "postie: syslog is not reachable (nothing listens on /dev/log or /run/systemd/journal/dev-log): log lines are lost"
        ),
        "{log}"
    );
}

/// Issue "postie 5": `check` said nothing of a missing `_postie`, the
/// user the SMTP side runs as when started as root (nobody stands in);
/// a missing `--user` of another name stops a root postie from starting.
#[test]
fn check_reports_the_smtp_side_user() {
    let fx = Fixture::new();
    let conf = fx.write_config(&fx.config_lines().replace("user = nobody\n", ""));
    let out = run_postie(&["-C".as_ref(), conf.as_os_str(), "check".as_ref()]);
    let text = stdout(&out);
    match nix::unistd::User::from_name("_postie").unwrap() {
        Some(u) => assert!(
            text.contains(&format!("ok: user _postie (uid {}): ", u.uid)),
            "{text}"
        ),
        None => {
            assert!(
                text.contains("warning: user _postie does not exist: started as root, the SMTP side runs as nobody; create it: adduser --system --group _postie\n"),
                "{text}"
            );
            assert_eq!(out.status.code(), Some(0), "{text}");
        }
    }
    let out = check(&fx, &["--user", "postie-no-such-user"]);
    let text = stdout(&out);
    let root = nix::unistd::geteuid().is_root();
    let want = format!(
        "{}: user postie-no-such-user: no such user: started as root, postie does not start\n",
        if root { "error" } else { "warning" }
    );
    assert!(text.contains(&want), "{text}");
    assert_eq!(out.status.code(), Some(if root { 78 } else { 0 }), "{text}");
}

/// The shipped example aliases file (packaging/aliases) parses without a
/// warning, and once its commented-out examples are taken in, shows a
/// program, a file and an include target, as postie(8) documents them.
#[test]
fn example_aliases_file_parses_and_shows_program_targets() {
    use postie::aliases::{Aliases, Target};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("packaging/aliases")).unwrap();
    let (aliases, warnings) = Aliases::parse(&text, "aliases");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(aliases.contains("postmaster"));
    // The examples, uncommented.
    let taken: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let (aliases, warnings) = Aliases::parse(&taken, "aliases");
    assert!(warnings.is_empty(), "{warnings:?}");
    match aliases.targets("support") {
        Some([Target::Command(cmd)]) => {
            assert!(cmd.starts_with("/usr/bin/rt-mailgate --queue support"))
        }
        other => panic!("support: {other:?}"),
    }
    assert!(matches!(
        aliases.targets("archive"),
        Some([Target::File(_)])
    ));
    assert!(matches!(
        aliases.targets("announce"),
        Some([Target::Include(_)])
    ));
}
