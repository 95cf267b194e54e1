//! Delivery to a program: `"|/usr/bin/procmail"` in `~/.forward`,
//! `support: "|/usr/bin/rt-mailgate ..."` in the aliases file. Everything
//! from fork to verdict is here, in one call, [`run`]; the caller (the
//! queue runner) decides who the program runs as and builds its standard
//! input (the `From ` line, `Return-Path:`, `Delivered-To:`, the message).
//!
//! What the program gets, as Postfix's local(8) gives it:
//!
//! * `/bin/sh -c COMMAND`, in a session and process group of its own, so
//!   that the time limit kills what it started too;
//! * the identity [`RunAs`] names, never root: started as root, postie
//!   computes the user's supplementary groups in the parent
//!   (getgrouplist(3), which may ask NSS), and the child takes them, the
//!   gid and the uid, and checks that root cannot be regained
//!   ([`crate::sys::confine_child`]). A postie that is not root cannot
//!   switch: it runs programs as itself, and a program to be run as
//!   anyone else fails (temporarily, as a configuration that can be
//!   fixed). uid 0 and gid 0 are refused (Postfix's pipe_command() panics
//!   on either);
//! * the user's home as working directory, entered as the user; where
//!   that fails (a home that does not exist, as `nobody`'s
//!   `/nonexistent`, or is closed to the user), `/`. Postfix has no
//!   fallback to follow: by default it does not change directory at all
//!   (its programs run in the queue directory), and with
//!   `command_execution_directory = $home` a home it cannot enter defers
//!   the mail, for ever for `nobody`, whose programs are those of the
//!   aliases file. sendmail's prog mailer (`D=$z:/`: the home, else `/`)
//!   is what postie does;
//! * this environment and nothing of postie's: `HOME`, `USER`, `LOGNAME`,
//!   `SHELL`, `PATH=/usr/bin:/bin` (Postfix resets `PATH` to
//!   `_PATH_DEFPATH` of `<paths.h>`, glibc's being that), `SENDER`,
//!   `RECIPIENT`, `LOCAL`, `EXTENSION`, `DOMAIN`, `ORIGINAL_RECIPIENT`.
//!   `USER` and `LOGNAME` name the user the program runs as, and `HOME`
//!   and `SHELL` are that user's: Postfix's `USER` and `LOGNAME` are the
//!   recipient's bare name instead, the same for a `~/.forward`, but the
//!   alias's name for a program of the aliases file run as `nobody` (for
//!   which it exports no `HOME` and `SHELL`).
//!   As Postfix does (`command_expansion_filter`), every character of a
//!   value outside letters, digits and `!@%-_=+:,./` becomes `_`: the
//!   sender and the recipient come from the network, and a value is
//!   often pasted into a shell command line;
//! * default signal dispositions, an empty signal mask (the delivery
//!   process blocks signals while it delivers), and descriptors 0, 1 and
//!   2 only: the message on 0, one pipe for both 1 and 2.
//!
//! The parent feeds standard input and reads the output in one poll loop
//! on non-blocking descriptors, with a pidfd for the program's exit: no
//! thread, nothing that can block past the time limit. It keeps the first
//! `output_limit` bytes of output (4 KiB is Postfix's buffer,
//! `VSTREAM_BUFSIZE`) and reads and drops the rest, so that a chatty
//! program never blocks on a full pipe. A program that stops reading its
//! input early is no error in itself (the write gets `EPIPE`): its exit
//! status decides, as in Postfix's pipe_command(). The verdict comes when
//! the program exits, even if something it started still holds the output
//! pipe (a daemon): what is readable then is read, and the rest left.
//!
//! The verdict, by sysexits(3) as Postfix's local(8) reads it:
//!
//! * exit status 0: delivered;
//! * `EX_TEMPFAIL` (75): a temporary failure, retried from the queue;
//! * any other exit status: a permanent failure, a bounce that quotes the
//!   output;
//! * killed by a signal not of postie's: a permanent failure too. Postfix's
//!   pipe_command() reports it with status 5.3.0 ("Command died with
//!   signal"), and local(8) and pipe(8) bounce by that status;
//! * the time limit (`command-time-limit`, 1000 s as Postfix's
//!   `command_time_limit`): the process group is killed (SIGKILL) and the
//!   program reaped, then a temporary failure, retried (Postfix bounces
//!   it; postie's queue retries, as postie(8) says);
//! * a program that cannot be started (fork, the identity, exec), or a
//!   message that cannot be read (the program is killed before it sees
//!   the end of its input): a temporary failure.
//!
//! Every failure is logged with the command and the user. No path leaves
//! a zombie (the program is always reaped, after the kill if need be) or
//! a descriptor, and none panics.

use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::exit::EX_TEMPFAIL;
use crate::sys::{self, ChildIdentity, ChildSetup};

/// Who a program runs as (never root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// The user name: `USER` and `LOGNAME`, and whose groups are taken.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// The working directory and `HOME`.
    pub home: PathBuf,
    /// `SHELL` (the program itself always runs under `/bin/sh`).
    pub shell: String,
}

/// What Postfix's local(8) exports, per delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProgramEnv {
    /// The envelope sender (empty for the null sender).
    pub sender: String,
    /// The whole recipient address.
    pub recipient: String,
    /// The recipient's local part (left of the rightmost `@`).
    pub local: String,
    /// The address extension (`tag` of `user+tag`), or empty.
    pub extension: String,
    /// The recipient's domain.
    pub domain: String,
    /// The recipient address as it was given, before any alias.
    pub original_recipient: String,
}

/// One program to run.
pub(crate) struct Program<'a> {
    /// The shell command (what followed `|`).
    pub command: &'a str,
    pub run_as: &'a RunAs,
    pub env: &'a ProgramEnv,
    /// `command-time-limit`: then the process group is killed.
    pub time_limit: Duration,
    /// How many bytes of output are kept for the bounce and the log.
    pub output_limit: usize,
}

/// The verdict on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProgramOutcome {
    Delivered,
    /// EX_TEMPFAIL (75), the time limit, a failure to start it: retried
    /// from the queue.
    Temporary {
        why: String,
        output: String,
    },
    /// Any other exit status: a bounce that quotes `output`.
    Permanent {
        why: String,
        output: String,
    },
}

/// `PATH` for programs: `_PATH_DEFPATH` of glibc's `<paths.h>`, which
/// Postfix's pipe_command() sets.
const PATH: &str = "/usr/bin:/bin";

/// How many reads of what is left in the output pipe after the program
/// exited (a daemon it started may keep writing).
const DRAIN_READS: usize = 16;

/// How often the program's exit is looked for where there is no pidfd
/// (Linux before 5.3).
const EXIT_TICK: Duration = Duration::from_millis(50);

/// Runs `program` with `input` as its standard input, and says what came
/// of it. See the module's documentation. `input` is read between polls,
/// so it should be a file or memory, not something that blocks for long.
pub(crate) fn run(program: &Program<'_>, input: &mut dyn Read) -> ProgramOutcome {
    let outcome = run_unlogged(program, input);
    let who = &program.run_as;
    match &outcome {
        ProgramOutcome::Delivered => {}
        ProgramOutcome::Temporary { why, output } | ProgramOutcome::Permanent { why, output } => {
            let kind = match outcome {
                ProgramOutcome::Temporary { .. } => "deferred",
                _ => "failed",
            };
            let first = output.lines().next().unwrap_or("");
            log::warn!(
                "program {:?} as {} (uid {}): {kind}: {why}{}{first}",
                program.command,
                who.user,
                who.uid,
                if first.is_empty() { "" } else { "; output: " },
            );
        }
    }
    outcome
}

fn temporary(why: impl Into<String>, output: &[u8]) -> ProgramOutcome {
    ProgramOutcome::Temporary {
        why: why.into(),
        output: printable(output),
    }
}

fn run_unlogged(program: &Program<'_>, input: &mut dyn Read) -> ProgramOutcome {
    let who = program.run_as;
    if who.uid == 0 || who.gid == 0 {
        return temporary(
            format!("refused to run as uid {}, gid {}", who.uid, who.gid),
            b"",
        );
    }
    let identity = match identity(who) {
        Ok(identity) => identity,
        Err(why) => return temporary(why, b""),
    };
    let home = CString::new(who.home.as_os_str().as_bytes()).unwrap_or_else(|_| c"/".into());
    let mut running = match start(program, ChildSetup::new(identity, home)) {
        Ok(running) => running,
        Err(e) => return temporary(format!("cannot start /bin/sh: {e}"), b""),
    };
    let deadline = Instant::now().checked_add(program.time_limit);
    let end = running.exchange(input, deadline);
    let output = std::mem::take(&mut running.output);
    match end {
        End::Exited(status) => verdict(status, &output),
        End::TimeLimit => temporary(
            format!(
                "time limit exceeded ({} s)",
                program.time_limit.as_secs_f64()
            ),
            &output,
        ),
        End::Failed(why) => temporary(why, &output),
    }
}

/// The identity the child takes: `None` when postie is not root (it runs
/// the program as itself), or an error when that is not who `who` is.
fn identity(who: &RunAs) -> Result<Option<ChildIdentity>, String> {
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 {
        if who.uid != me {
            return Err(format!(
                "cannot run as {} (uid {}): postie runs as uid {me}, not as root",
                who.user, who.uid
            ));
        }
        return Ok(None);
    }
    let name = CString::new(who.user.as_bytes())
        .map_err(|_| format!("cannot run as {:?}: not a user name", who.user))?;
    let gid = nix::unistd::Gid::from_raw(who.gid);
    let groups = nix::unistd::getgrouplist(&name, gid)
        .map_err(|e| format!("cannot find the groups of {}: {e}", who.user))?;
    Ok(Some(ChildIdentity {
        uid: who.uid,
        gid: who.gid,
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
    }))
}

/// The characters Postfix's `command_expansion_filter` lets through by
/// default; any other in an exported value becomes `_`.
fn censor(value: &str) -> String {
    const KEEP: &str = "!@%-_=+:,./";
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || KEEP.contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The program's whole environment.
fn environment(program: &Program<'_>) -> [(&'static str, String); 11] {
    let (who, env) = (program.run_as, program.env);
    [
        ("HOME", censor(&who.home.to_string_lossy())),
        ("USER", censor(&who.user)),
        ("LOGNAME", censor(&who.user)),
        ("SHELL", censor(&who.shell)),
        ("PATH", PATH.to_owned()),
        ("SENDER", censor(&env.sender)),
        ("RECIPIENT", censor(&env.recipient)),
        ("LOCAL", censor(&env.local)),
        ("EXTENSION", censor(&env.extension)),
        ("DOMAIN", censor(&env.domain)),
        ("ORIGINAL_RECIPIENT", censor(&env.original_recipient)),
    ]
}

/// A started program: its pid (an unreaped child until `exchange` ends),
/// the two pipes, a pidfd if the kernel has them, and the output kept.
struct Running {
    pid: Pid,
    stdin: Option<ChildStdin>,
    out: Option<File>,
    exit: Option<OwnedFd>,
    /// The first `limit` bytes of output.
    output: Vec<u8>,
    limit: usize,
}

/// How the exchange with the program ended; the program is reaped in
/// every case.
enum End {
    Exited(WaitStatus),
    TimeLimit,
    Failed(String),
}

fn start(program: &Program<'_>, setup: ChildSetup) -> std::io::Result<Running> {
    let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    set_nonblocking(&out_read)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(program.command)
        .env_clear()
        .envs(environment(program))
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_write.try_clone()?))
        .stderr(Stdio::from(out_write));
    sys::confine_child(&mut cmd, setup);
    let mut child = cmd.spawn()?;
    // The write ends of the output pipe go with `cmd`: from now on only
    // the program (and what it starts) holds them.
    drop(cmd);
    let pid = Pid::from_raw(child.id() as i32);
    let stdin = child.stdin.take();
    let mut running = Running {
        pid,
        stdin,
        out: Some(File::from(out_read)),
        exit: exit_notifier(pid),
        output: Vec::new(),
        limit: program.output_limit,
    };
    if let Some(stdin) = &running.stdin
        && let Err(e) = set_nonblocking(stdin)
    {
        running.kill();
        return Err(e);
    }
    Ok(running)
}

/// A pidfd for the program's exit, if the kernel has them.
fn exit_notifier(pid: Pid) -> Option<OwnedFd> {
    #[cfg(test)]
    if tests::WITHOUT_PIDFD.get() {
        return None;
    }
    sys::pidfd_open(pid).ok()
}

fn set_nonblocking(fd: impl AsFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl Running {
    /// Feeds `input` to the program and reads its output until it exits,
    /// the deadline passes (then it is killed) or something fails (it is
    /// killed too).
    fn exchange(&mut self, input: &mut dyn Read, deadline: Option<Instant>) -> End {
        let mut pending: Vec<u8> = Vec::new();
        let mut sent = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => {
                        self.kill();
                        return End::TimeLimit;
                    }
                },
                None => None,
            };
            // Refill from the message once all of the last piece is sent.
            if self.stdin.is_some() && sent == pending.len() {
                match input.read(&mut chunk) {
                    Ok(0) => self.stdin = None, // the program sees the end
                    Ok(n) => {
                        pending.clear();
                        pending.extend_from_slice(&chunk[..n]);
                        sent = 0;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.kill();
                        return End::Failed(format!("cannot read the message: {e}"));
                    }
                }
            }
            let (stdin_ready, out_ready, exited) = match self.wait(remaining) {
                Ok(ready) => ready,
                Err(e) => {
                    self.kill();
                    return End::Failed(format!("poll: {e}"));
                }
            };
            if stdin_ready && let Some(stdin) = &mut self.stdin {
                match stdin.write(&pending[sent..]) {
                    Ok(n) => sent += n,
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    // It stopped reading (EPIPE; no SIGPIPE: std ignores it
                    // in every Rust program): its exit status decides.
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => self.stdin = None,
                    Err(e) => {
                        self.kill();
                        return End::Failed(format!("cannot write to it: {e}"));
                    }
                }
            }
            if out_ready {
                self.read_output();
            }
            if exited {
                match self.reap(Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(status) => {
                        self.stdin = None;
                        self.drain();
                        return End::Exited(status);
                    }
                    Err(why) => return End::Failed(why),
                }
            }
        }
    }

    /// Polls the open pipes and the pidfd for at most `remaining` (and
    /// [`EXIT_TICK`] without a pidfd): whether standard input can take
    /// more, output can be read, and the program may have exited.
    fn wait(&self, remaining: Option<Duration>) -> nix::Result<(bool, bool, bool)> {
        let mut fds = Vec::with_capacity(3);
        let mut slots = [None; 3];
        if let Some(stdin) = &self.stdin {
            slots[0] = Some(fds.len());
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(out) = &self.out {
            slots[1] = Some(fds.len());
            fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
        }
        let mut timeout = remaining;
        match &self.exit {
            Some(pidfd) => {
                slots[2] = Some(fds.len());
                fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            }
            None => timeout = Some(timeout.map_or(EXIT_TICK, |t| t.min(EXIT_TICK))),
        }
        // Rounded up, so that a wait of less than a millisecond is not a
        // busy loop of zero-time polls.
        let timeout = timeout.map_or(PollTimeout::NONE, |t| {
            let ms = t.as_millis().saturating_add(1).min(i32::MAX as u128);
            PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
        });
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok((false, false, self.exit.is_none())),
            Err(e) => return Err(e),
        }
        let ready = |slot: Option<usize>| {
            slot.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        Ok((
            ready(slots[0]),
            ready(slots[1]),
            self.exit.is_none() || ready(slots[2]),
        ))
    }

    /// What is left in the output pipe once the program is gone: what is
    /// there now, up to [`DRAIN_READS`] reads (something it started may
    /// hold the pipe and keep writing).
    fn drain(&mut self) {
        for _ in 0..DRAIN_READS {
            if !self.read_output() {
                break;
            }
        }
    }

    /// One read of output: the first `limit` bytes are kept, the rest
    /// dropped. False at the end of the output, when nothing is there
    /// now, or on an error (then the pipe is closed).
    fn read_output(&mut self) -> bool {
        let Some(out) = &mut self.out else {
            return false;
        };
        let mut buf = [0u8; 16 * 1024];
        match out.read(&mut buf) {
            Ok(0) => {
                self.out = None;
                false
            }
            Ok(n) => {
                let keep = n.min(self.limit.saturating_sub(self.output.len()));
                self.output.extend_from_slice(&buf[..keep]);
                true
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(_) => {
                self.out = None;
                false
            }
        }
    }

    /// waitpid(2) on the program, again after `EINTR`. An error (`ECHILD`:
    /// something else reaped it) says what was lost.
    fn reap(&mut self, flags: Option<WaitPidFlag>) -> Result<WaitStatus, String> {
        loop {
            match waitpid(self.pid, flags) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("its exit status was lost: {e}")),
                Ok(status) => return Ok(status),
            }
        }
    }

    /// Kills the program's process group (while the program is unreaped,
    /// its pid, and so the group's id, can name no other), reaps it, and
    /// reads what output is left.
    fn kill(&mut self) {
        if killpg(self.pid, Signal::SIGKILL).is_err() {
            // No group of that id (it cannot have been left): the
            // program itself at least, or the reaping below would wait.
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        }
        let _ = self.reap(None);
        self.stdin = None;
        self.drain();
    }
}

/// The verdict on an exit status (see the module's documentation).
fn verdict(status: WaitStatus, output: &[u8]) -> ProgramOutcome {
    match status {
        WaitStatus::Exited(_, 0) => ProgramOutcome::Delivered,
        WaitStatus::Exited(_, code) if code == i32::from(EX_TEMPFAIL) => {
            temporary("exit status 75 (EX_TEMPFAIL)", output)
        }
        WaitStatus::Exited(_, code) => ProgramOutcome::Permanent {
            why: match sysexits_name(code) {
                Some(name) => format!("exit status {code} ({name})"),
                None => format!("exit status {code}"),
            },
            output: printable(output),
        },
        WaitStatus::Signaled(_, signal, _) => ProgramOutcome::Permanent {
            why: format!("killed by signal {} ({signal})", signal as i32),
            output: printable(output),
        },
        other => temporary(format!("unexpected wait status {other:?}"), output),
    }
}

/// The name of a sysexits(3) code, for the bounce and the log.
fn sysexits_name(code: i32) -> Option<&'static str> {
    const NAMES: [&str; 15] = [
        "EX_USAGE",
        "EX_DATAERR",
        "EX_NOINPUT",
        "EX_NOUSER",
        "EX_NOHOST",
        "EX_UNAVAILABLE",
        "EX_SOFTWARE",
        "EX_OSERR",
        "EX_OSFILE",
        "EX_CANTCREAT",
        "EX_IOERR",
        "EX_TEMPFAIL",
        "EX_PROTOCOL",
        "EX_NOPERM",
        "EX_CONFIG",
    ];
    code.checked_sub(64)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| NAMES.get(i))
        .copied()
}

/// The output kept, as text for a bounce and a log line: invalid UTF-8
/// as U+FFFD, control characters but newline and tab as `_`.
fn printable(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    thread_local! {
        /// Set by a test to run programs as on a kernel without pidfds.
        pub(super) static WITHOUT_PIDFD: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A directory for one test that any user can enter and read (a
    /// program run as `nobody` reads its script there), with a
    /// subdirectory `out` that the program's user owns and writes.
    struct Scratch {
        dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new(owner: &RunAs) -> Scratch {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
            let out = dir.path().join("out");
            std::fs::create_dir(&out).unwrap();
            std::os::unix::fs::chown(&out, Some(owner.uid), Some(owner.gid)).unwrap();
            Scratch { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().canonicalize().unwrap()
        }

        fn out(&self, name: &str) -> PathBuf {
            self.path().join("out").join(name)
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.out(name))
                .unwrap_or_else(|e| panic!("{}: {e}", self.out(name).display()))
        }

        /// Writes an executable `/bin/sh` script `name`; returns its path.
        fn script(&self, name: &str, body: &str) -> String {
            let path = self.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&path, PermissionsExt::from_mode(0o755)).unwrap();
            path.to_string_lossy().into_owned()
        }
    }

    /// Whom tests run programs as: as root `nobody` (never root itself),
    /// else this process's own user; `home` as the home directory.
    fn tester(home: &Path) -> RunAs {
        if is_root() {
            let nobody = nix::unistd::User::from_name("nobody")
                .unwrap()
                .expect("a user nobody");
            RunAs {
                user: "nobody".into(),
                uid: nobody.uid.as_raw(),
                gid: nobody.gid.as_raw(),
                home: home.to_path_buf(),
                shell: "/usr/sbin/nologin".into(),
            }
        } else {
            let uid = nix::unistd::geteuid();
            let name = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid{uid}"), |u| u.name);
            RunAs {
                user: name,
                uid: uid.as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                home: home.to_path_buf(),
                shell: "/bin/sh".into(),
            }
        }
    }

    fn envelope() -> ProgramEnv {
        ProgramEnv {
            // What a shell would expand is censored.
            sender: "alice$(id)@example.org".into(),
            recipient: "bob+tag@host.example".into(),
            local: "bob+tag".into(),
            extension: "tag".into(),
            domain: "host.example".into(),
            original_recipient: "support@host.example".into(),
        }
    }

    fn run_it(command: &str, who: &RunAs, limit: Duration, input: &[u8]) -> ProgramOutcome {
        let env = envelope();
        let program = Program {
            command,
            run_as: who,
            env: &env,
            time_limit: limit,
            output_limit: 4096,
        };
        run(&program, &mut &input[..])
    }

    const LONG: Duration = Duration::from_secs(600);

    /// Waits for process `pid` (not a child of ours) to be gone: no such
    /// process, or its exit seen through a pidfd (a SIGKILL is delivered
    /// after kill(2) returns, not before). False if it still runs after a
    /// minute, which no test expects to take more than a moment.
    fn gone(pid: i32) -> bool {
        match sys::pidfd_open(Pid::from_raw(pid)) {
            Err(e) => e.raw_os_error() == Some(libc::ESRCH),
            Ok(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                nix::poll::poll(&mut fds, PollTimeout::from(60_000u16)).unwrap_or(0) == 1
            }
        }
    }

    /// True when process `pid` runs now.
    fn alive(pid: i32) -> bool {
        match sys::pidfd_open(Pid::from_raw(pid)) {
            Err(_) => false,
            Ok(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap_or(1) == 0
            }
        }
    }

    /// The recorder writes down, for the shell postie started (`$$` of
    /// `sh -c`, which opens nothing of its own), its ids, ignored signals,
    /// environment, descriptors and working directory, and then its own
    /// standard input (the script is a child of that shell and inherits
    /// it). (Not its blocked signals: dash blocks them all around its
    /// waits; see `a_program_gets_default_signals`.)
    const RECORDER: &str = r#"p=$1; out=$2
echo $p > $out/pid
grep -E '^(Uid|Gid|Groups|SigIgn):' /proc/$p/status > $out/status
tr '\0' '\n' < /proc/$p/environ > $out/env
ls /proc/$p/fd > $out/fds
readlink /proc/$p/cwd > $out/cwd
cat > $out/stdin
"#;

    /// The fields of `Name:` in a /proc status record.
    fn field(status: &str, name: &str) -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Runs the recorder as `who` and checks each thing it recorded.
    fn record_and_check(who: RunAs, scratch: &Scratch, expect_cwd: &Path) {
        let rec = scratch.script("rec.sh", RECORDER);
        let command = format!("{rec} $$ {}; exit $?", scratch.path().join("out").display());
        // A message larger than a pipe's buffer, with every byte value.
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let outcome = run_it(&command, &who, LONG, &input);
        assert_eq!(outcome, ProgramOutcome::Delivered);
        // Reaped: not even a zombie is left.
        let pid: i32 = scratch.read("pid").trim().parse().unwrap();
        assert_eq!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        );

        let status = scratch.read("status");
        let uid = who.uid.to_string();
        let gid = who.gid.to_string();
        assert_eq!(field(&status, "Uid"), [uid.as_str(); 4], "{status}");
        assert_eq!(field(&status, "Gid"), [gid.as_str(); 4], "{status}");
        let mut groups: Vec<u32> = field(&status, "Groups")
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        groups.sort_unstable();
        let mut want: Vec<u32> = if is_root() {
            let name = CString::new(who.user.clone()).unwrap();
            nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(who.gid)).unwrap()
        } else {
            nix::unistd::getgroups().unwrap()
        }
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
        want.sort_unstable();
        want.dedup();
        groups.dedup();
        assert_eq!(groups, want, "{status}");
        assert_eq!(field(&status, "SigIgn"), ["0000000000000000"], "{status}");

        let mut env: Vec<String> = scratch.read("env").lines().map(str::to_owned).collect();
        env.sort();
        let mut want = vec![
            format!("HOME={}", who.home.display()),
            format!("USER={}", who.user),
            format!("LOGNAME={}", who.user),
            format!("SHELL={}", who.shell),
            "PATH=/usr/bin:/bin".to_owned(),
            "SENDER=alice__id_@example.org".to_owned(),
            "RECIPIENT=bob+tag@host.example".to_owned(),
            "LOCAL=bob+tag".to_owned(),
            "EXTENSION=tag".to_owned(),
            "DOMAIN=host.example".to_owned(),
            "ORIGINAL_RECIPIENT=support@host.example".to_owned(),
        ];
        want.sort();
        assert_eq!(env, want);

        assert_eq!(
            scratch.read("fds").split_whitespace().collect::<Vec<_>>(),
            ["0", "1", "2"]
        );
        assert_eq!(scratch.read("cwd").trim_end(), expect_cwd.to_str().unwrap());
        assert_eq!(std::fs::read(scratch.out("stdin")).unwrap(), input);
    }

    /// A descriptor of this process without close-on-exec (as a
    /// careless library or the process's own parent leaves them): no
    /// program may get it.
    fn leaky_descriptor() -> OwnedFd {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let fd: OwnedFd = File::open("/dev/null").unwrap().into();
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        fd
    }

    #[test]
    fn a_program_gets_the_identity_environment_directory_descriptors_and_input() {
        let _leak = leaky_descriptor();
        let probe = tester(Path::new("/"));
        let scratch = Scratch::new(&probe);
        // In its home.
        let who = tester(&scratch.path());
        record_and_check(who, &scratch, &scratch.path());
        // A home that does not exist (nobody's): `/`.
        let who = tester(Path::new("/nonexistent"));
        record_and_check(who, &scratch, Path::new("/"));
    }

    /// The first account of the passwd file, other than root, with
    /// supplementary groups.
    fn account_with_groups() -> Option<RunAs> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let (uid, gid) = (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
            if uid == 0 || gid == 0 {
                return None;
            }
            let name = CString::new(f[0]).ok()?;
            let groups = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok()?;
            (groups.len() > 1).then(|| RunAs {
                user: f[0].to_owned(),
                uid,
                gid,
                home: PathBuf::from("/nonexistent"),
                shell: f.get(6).unwrap_or(&"").to_string(),
            })
        })
    }

    #[test]
    fn as_root_a_program_gets_the_supplementary_groups_of_its_user() {
        if !is_root() {
            eprintln!("SKIP as_root_a_program_gets_the_supplementary_groups_of_its_user: not root");
            return;
        }
        let Some(mut who) = account_with_groups() else {
            eprintln!(
                "SKIP as_root_a_program_gets_the_supplementary_groups_of_its_user: \
                 no account with supplementary groups"
            );
            return;
        };
        let scratch = Scratch::new(&who);
        who.home = scratch.path();
        record_and_check(who, &scratch, &scratch.path());
    }

    #[test]
    fn exit_statuses_decide() {
        let who = tester(Path::new("/"));
        assert_eq!(
            run_it("exit 0", &who, LONG, b"x\n"),
            ProgramOutcome::Delivered
        );
        assert_eq!(
            run_it("cat >/dev/null; echo busy; exit 75", &who, LONG, b"x\n"),
            ProgramOutcome::Temporary {
                why: "exit status 75 (EX_TEMPFAIL)".into(),
                output: "busy\n".into()
            }
        );
        // Standard output and error, in the order written, quoted.
        assert_eq!(
            run_it(
                "cat >/dev/null; echo 'no such user' >&2; printf 'second\\tline\\r\\n'; exit 67",
                &who,
                LONG,
                b"x\n"
            ),
            ProgramOutcome::Permanent {
                why: "exit status 67 (EX_NOUSER)".into(),
                output: "no such user\nsecond\tline_\n".into()
            }
        );
        assert_eq!(
            run_it("exit 1", &who, LONG, b""),
            ProgramOutcome::Permanent {
                why: "exit status 1".into(),
                output: String::new()
            }
        );
        // Killed by a signal of its own: bounced, as Postfix does.
        assert_eq!(
            run_it("echo dying; kill -SEGV $$", &who, LONG, b""),
            ProgramOutcome::Permanent {
                why: "killed by signal 11 (SIGSEGV)".into(),
                output: "dying\n".into()
            }
        );
    }

    /// Signals ignored or blocked by postie are neither for the program:
    /// this process ignores SIGUSR2 for a moment (no other test uses it),
    /// a thread blocks SIGUSR1 (as a delivery blocks the signals that end
    /// the process), and a program that sends either to itself dies of it.
    #[test]
    fn a_program_gets_default_signals() {
        let who = tester(Path::new("/"));
        let old = sys::set_signal_handler(Signal::SIGUSR2, sys::SignalHandler::Ignore);
        let outcome = run_it("kill -USR2 $$; exit 0", &who, LONG, b"");
        if let Some(old) = old {
            sys::set_signal_handler(Signal::SIGUSR2, old);
        }
        assert_eq!(
            outcome,
            ProgramOutcome::Permanent {
                why: "killed by signal 12 (SIGUSR2)".into(),
                output: String::new()
            }
        );
        let outcome = std::thread::spawn(move || {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.thread_block().unwrap();
            run_it("kill -USR1 $$; exit 0", &who, LONG, b"")
        })
        .join()
        .unwrap();
        assert_eq!(
            outcome,
            ProgramOutcome::Permanent {
                why: "killed by signal 10 (SIGUSR1)".into(),
                output: String::new()
            }
        );
    }

    /// Past its time limit the program is killed, and its process group
    /// with it: a child it started in the background is dead too. The
    /// limit doubles until the program had the time to write that
    /// child's pid down (a busy machine may not have started it yet).
    #[test]
    fn a_program_past_its_time_limit_is_killed_with_its_process_group() {
        let who = tester(Path::new("/"));
        let scratch = Scratch::new(&who);
        let pidfile = scratch.out("pid");
        let script = scratch.script(
            "slow.sh",
            &format!(
                "echo $PPID > {}.sh\nsleep 1000 &\necho $! > {}\necho started\nwait\n",
                pidfile.display(),
                pidfile.display()
            ),
        );
        let mut limit = Duration::from_millis(100);
        let pid = loop {
            // Not the last command: `sh -c` forks for it, and its
            // parent is our child.
            let outcome = run_it(&format!("{script}; exit $?"), &who, limit, b"");
            let ProgramOutcome::Temporary { why, output } = outcome else {
                panic!("{outcome:?}");
            };
            assert!(why.starts_with("time limit exceeded"), "{why}");
            if let Ok(pid) = std::fs::read_to_string(&pidfile) {
                assert_eq!(output, "started\n");
                break pid.trim().parse::<i32>().unwrap();
            }
            limit *= 2;
        };
        assert!(gone(pid), "the background child {pid} lives");
        // Our child, the shell, was reaped.
        let program: i32 = scratch.read("pid.sh").trim().parse().unwrap();
        assert_eq!(
            nix::sys::signal::kill(Pid::from_raw(program), None),
            Err(Errno::ESRCH)
        );
    }

    /// A program that starts a daemon (a session of its own, holding the
    /// output pipe) and exits: the verdict comes with the program's exit,
    /// and the daemon is left alone.
    #[test]
    fn a_program_that_leaves_a_daemon_is_done_when_it_exits() {
        if !Path::new("/usr/bin/setsid").exists() {
            eprintln!("SKIP a_program_that_leaves_a_daemon_is_done_when_it_exits: no setsid(1)");
            return;
        }
        let who = tester(Path::new("/"));
        let scratch = Scratch::new(&who);
        let pidfile = scratch.out("pid");
        let command = format!(
            "/usr/bin/setsid sleep 1000 & echo $! > {}; echo bye; exit 0",
            pidfile.display()
        );
        let outcome = run_it(&command, &who, LONG, b"message\n");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let lives = alive(pid);
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert_eq!(outcome, ProgramOutcome::Delivered);
        assert!(lives, "the daemon {pid} was killed");
    }

    /// Output past the cap is read and dropped; the first `output_limit`
    /// bytes are kept exactly.
    #[test]
    fn output_is_kept_up_to_the_cap() {
        let who = tester(Path::new("/"));
        let env = envelope();
        for (size, cap) in [(100_000, 4096), (100, 4096), (5000, 0), (5000, 4999)] {
            let command = format!("head -c {size} /dev/zero | tr '\\0' x; exit 67");
            let program = Program {
                command: &command,
                run_as: &who,
                env: &env,
                time_limit: LONG,
                output_limit: cap,
            };
            let outcome = run(&program, &mut &b""[..]);
            let ProgramOutcome::Permanent { output, .. } = outcome else {
                panic!("{outcome:?}");
            };
            assert_eq!(output, "x".repeat(size.min(cap)), "{size} bytes, cap {cap}");
        }
    }

    /// A program that reads none of a large message: its exit status
    /// decides, the broken pipe is no error.
    #[test]
    fn a_program_that_does_not_read_its_input_is_judged_by_its_exit_status() {
        let who = tester(Path::new("/"));
        let input = vec![b'a'; 4 << 20];
        assert_eq!(
            run_it("exit 0", &who, LONG, &input),
            ProgramOutcome::Delivered
        );
        assert_eq!(
            run_it("head -c 10 >/dev/null; exit 0", &who, LONG, &input),
            ProgramOutcome::Delivered
        );
        assert_eq!(
            run_it("exit 67", &who, LONG, &input),
            ProgramOutcome::Permanent {
                why: "exit status 67 (EX_NOUSER)".into(),
                output: String::new()
            }
        );
    }

    /// Never as root: uid 0 (and gid 0) are refused before anything runs.
    #[test]
    fn root_is_refused() {
        let scratch = Scratch::new(&tester(Path::new("/")));
        let ran = scratch.out("ran");
        let command = format!("touch {}", ran.display());
        for (uid, gid) in [(0, 0), (0, 65534), (65534, 0)] {
            let who = RunAs {
                user: "root".into(),
                uid,
                gid,
                home: "/root".into(),
                shell: "/bin/sh".into(),
            };
            let outcome = run_it(&command, &who, LONG, b"");
            assert_eq!(
                outcome,
                ProgramOutcome::Temporary {
                    why: format!("refused to run as uid {uid}, gid {gid}"),
                    output: String::new()
                }
            );
        }
        assert!(!ran.exists());
    }

    /// Not root, postie runs programs as itself and as no one else.
    #[test]
    fn not_root_a_program_of_another_user_is_not_run() {
        if is_root() {
            eprintln!("SKIP not_root_a_program_of_another_user_is_not_run: running as root");
            return;
        }
        let scratch = Scratch::new(&tester(Path::new("/")));
        let ran = scratch.out("ran");
        let mut who = tester(Path::new("/"));
        who.uid += 1;
        let outcome = run_it(&format!("touch {}", ran.display()), &who, LONG, b"");
        let ProgramOutcome::Temporary { why, .. } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            why.starts_with(&format!("cannot run as {} (uid {})", who.user, who.uid)),
            "{why}"
        );
        assert!(!ran.exists());
    }

    /// A message that cannot be read: the program is killed before it
    /// sees the end of its input (it never takes half a message for a
    /// whole one), and the delivery is tried again.
    #[test]
    fn a_message_that_cannot_be_read_kills_the_program() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(b'm');
                self.0 -= n;
                Ok(n)
            }
        }
        let who = tester(Path::new("/"));
        let scratch = Scratch::new(&who);
        let done = scratch.out("done");
        let command = format!("cat >/dev/null; touch {}", done.display());
        let env = envelope();
        let program = Program {
            command: &command,
            run_as: &who,
            env: &env,
            time_limit: LONG,
            output_limit: 4096,
        };
        let outcome = run(&program, &mut Failing(100_000));
        assert_eq!(
            outcome,
            ProgramOutcome::Temporary {
                why: "cannot read the message: disk on fire".into(),
                output: String::new()
            }
        );
        assert!(!done.exists());
    }

    /// What cannot be started is tried again later.
    #[test]
    fn a_command_that_cannot_be_started_is_temporary() {
        let who = tester(Path::new("/"));
        let outcome = run_it("echo a\0b", &who, LONG, b"");
        let ProgramOutcome::Temporary { why, .. } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(why.starts_with("cannot start /bin/sh: "), "{why}");
    }

    #[test]
    fn exported_values_are_censored_as_postfix_does() {
        assert_eq!(censor("alice@example.org"), "alice@example.org");
        assert_eq!(censor("a!b%c-d_e=f+g:h,i.j/k"), "a!b%c-d_e=f+g:h,i.j/k");
        assert_eq!(censor("`rm -rf /`;$(x)|y&z'\"\n"), "_rm_-rf_/____x__y_z___");
        assert_eq!(censor("jöe"), "j_e");
    }

    #[test]
    fn kept_output_is_printable_text() {
        assert_eq!(printable(b"a\tb\nc\r\x1b[0m\xff"), "a\tb\nc__[0m\u{fffd}");
        assert_eq!(sysexits_name(63), None);
        assert_eq!(sysexits_name(64), Some("EX_USAGE"));
        assert_eq!(sysexits_name(78), Some("EX_CONFIG"));
        assert_eq!(sysexits_name(79), None);
        assert_eq!(sysexits_name(-1), None);
        assert_eq!(sysexits_name(i32::MIN), None);
    }

    /// Without a pidfd (Linux before 5.3) the exit is looked for every
    /// [`EXIT_TICK`]: the same verdicts, a daemon does not hold them up,
    /// and the time limit still kills.
    #[test]
    fn without_a_pidfd_the_exit_is_found_all_the_same() {
        WITHOUT_PIDFD.set(true);
        let who = tester(Path::new("/"));
        assert_eq!(
            run_it("exit 0", &who, LONG, b"x\n"),
            ProgramOutcome::Delivered
        );
        assert_eq!(
            run_it("echo no; exit 67", &who, LONG, &vec![b'a'; 1 << 20]),
            ProgramOutcome::Permanent {
                why: "exit status 67 (EX_NOUSER)".into(),
                output: "no\n".into()
            }
        );
        let outcome = run_it("sleep 1000", &who, Duration::from_millis(100), b"");
        assert!(
            matches!(&outcome, ProgramOutcome::Temporary { why, .. } if why.starts_with("time limit exceeded")),
            "{outcome:?}"
        );
        if Path::new("/usr/bin/setsid").exists() {
            let scratch = Scratch::new(&who);
            let pidfile = scratch.out("pid");
            let command = format!(
                "/usr/bin/setsid sleep 1000 & echo $! > {}; exit 0",
                pidfile.display()
            );
            let outcome = run_it(&command, &who, LONG, b"");
            let pid: i32 = scratch.read("pid").trim().parse().unwrap();
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            assert_eq!(outcome, ProgramOutcome::Delivered);
        }
    }
}
