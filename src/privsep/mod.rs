//! Privilege separation: the process that speaks SMTP runs unprivileged;
//! a small delivery process keeps the privilege that mailbox writes need.
//!
//! Started as root, postie binds (or receives) its sockets, then forks. The
//! child is the delivery process: it keeps root, closes every listening
//! socket, and serves requests on a socketpair; the parent drops to an
//! unprivileged user (`_postie` by default: no supplementary groups, no
//! capabilities) and runs the SMTP server, asking the child for the two
//! things that need privilege: the RCPT-time check of a mailbox, and the
//! delivery itself.
//!
//! The channel: the parent opens one stream socketpair per concurrent
//! request and hands one end to the child over the control socket
//! (SCM_RIGHTS); the child serves each on its own thread. A request is a
//! frame: a 4-byte big-endian length, then the payload (version byte, kind
//! byte, fields as length-prefixed strings and fixed-size integers); a
//! delivery request carries the message as a file descriptor.
//! The child treats every request as hostile input: versions, kinds,
//! lengths, names and addresses are checked, users are looked up again in
//! its own user database, and the descriptor must be a regular file of the
//! declared size. A bad request gets a refusal and harms nothing.
//!
//! Defence in depth: the child enforces the limits of the configuration
//! itself ([`Limits`]): `--max-size` (the message as stored is never
//! longer than as received), `--max-recipients`, and at most
//! `--max-connections` + `--max-local-connections` + `--max-per-client`
//! (root's local sessions, which the local total does not refuse) + 16
//! channels, each served on one thread (a channel
//! past that is closed at once: the SMTP side answers that request 4xx).
//! The descriptor limit (`RLIMIT_NOFILE`) is raised to its hard limit
//! before the fork, so that both processes have it.
//!
//! The message must not change while it is delivered: it is read once to
//! size the append (recorded in the journal), then once per mailbox.
//! * A message held in memory (at most `--spill-threshold` octets) is
//!   copied into a memfd that the SMTP side seals (`F_SEAL_SHRINK`,
//!   `F_SEAL_GROW`, `F_SEAL_WRITE`, then `F_SEAL_SEAL`) before it sends
//!   it. The child refuses any other descriptor for such a message: a
//!   memfd without those seals, one that cannot be sealed, a file.
//! * A larger message, which the SMTP side spilled to an unnamed
//!   temporary file, is passed as that file, not copied: copying it into
//!   a memfd would cost a copy of every large message and hold it all in
//!   memory (the reason it was spilled). Such a file cannot be sealed, and
//!   the SMTP side could still write to it; so the child reads it with
//!   positional reads of exactly the declared length, a read that ends
//!   short (the file shortened) is an error, and an append whose length is
//!   not the one recorded fails ([`crate::deliver`]). Either way the whole
//!   transaction is rolled back and the client gets `451`: nothing is ever
//!   half-written. What such a file can still do, change bytes in place,
//!   gives the SMTP side nothing it could not have sent as the message.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::maillog::Event;
use crate::message::FileReader;
use crate::message::{Delivery, MessageSource};
use crate::smtp::address::parse_path;
use crate::smtp::command::Body;
use crate::smtp::{Envelope, Mailbox, Outcome, Recipient, ReversePath, Submitter, TempReason};
use crate::sys;
use crate::users::{User, plausible_user_name};

/// Protocol version; a request of any other version is refused.
pub const VERSION: u8 = 1;
/// Largest request or response payload accepted.
const MAX_FRAME: usize = 1 << 20;
/// Longest string field.
const MAX_STR: usize = 4096;
/// Most recipients (and users per recipient) in one request.
const MAX_ITEMS: usize = 10_000;

/// Channels the delivery process serves beyond `--max-connections`,
/// `--max-local-connections` and `--max-per-client` (root's local sessions
/// beyond the local total) (one per request in progress; the SMTP side has
/// at most one per session, and sessions of every kind count).
const CHANNEL_SLACK: usize = 16;

/// What the delivery process accepts, whatever the SMTP side asks: the
/// SMTP side enforces the same limits, a forged one would not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, in octets (`--max-size`; the message as stored is
    /// never longer than as received).
    pub max_size: u64,
    /// Most recipients in one request (`--max-recipients`).
    pub max_recipients: usize,
    /// A message of at most this many octets (`--spill-threshold`) must
    /// come as a sealed memfd; a larger one may come as the SMTP side's
    /// temporary file (see the module documentation).
    pub spill_threshold: u64,
    /// Channels served at once, each on a thread of its own.
    pub max_channels: usize,
}

impl Limits {
    /// The limits for an SMTP side that accepts messages of at most
    /// `max_size` octets to at most `max_recipients` recipients, spills
    /// messages over `spill_threshold` octets to a file, and runs at most
    /// `max_sessions` sessions at once (a channel each, and 16 more: see
    /// the module documentation).
    pub fn new(
        max_size: u64,
        max_recipients: usize,
        spill_threshold: u64,
        max_sessions: usize,
    ) -> Self {
        Limits {
            max_size,
            max_recipients,
            spill_threshold,
            max_channels: max_sessions.saturating_add(CHANNEL_SLACK),
        }
    }
}

const KIND_CHECK: u8 = 1;
const KIND_DELIVER: u8 = 2;

const ST_OK: u8 = 0;
const ST_TEMP: u8 = 1;
// 2 was a permanent failure, which delivery no longer reports.
const ST_UNAVAILABLE: u8 = 3;
const ST_BAD: u8 = 4;

/// The SMTP side's view of the delivery process.
pub struct DeliveryProcess {
    control: Mutex<UnixStream>,
    idle: Mutex<Vec<UnixStream>>,
    /// Set when this side lets go of the channel, so that the delivery
    /// process ending then is expected, not a failure.
    closing: Arc<AtomicBool>,
    /// The delivery process, and whether it has been reaped: [`close`]
    /// waits for it (`None` in unit tests, where there is no process).
    ///
    /// [`close`]: Delivery::close
    child: Option<(nix::unistd::Pid, Arc<Reaped>)>,
    /// Users whose mailbox passed the RCPT-time check, and when.
    passed: Mutex<HashMap<String, Instant>>,
    /// How long a passed check stands ([`CHECK_STANDS`]).
    check_stands: Duration,
}

/// How long a mailbox that passed the RCPT-time check is not asked about
/// again. The check is a round trip to the delivery process, and each one
/// cost about a tenth of the throughput of one session sending one
/// message per connection (BENCHMARKS.md). Only a pass is kept, and the
/// delivery checks the mailbox again, under its locks, in any case: a
/// mailbox made unsafe in that second is refused at the end of DATA
/// (`451 4.3.0`) instead of at RCPT (`450 4.2.0`).
pub const CHECK_STANDS: Duration = Duration::from_secs(1);

/// Past this many remembered passes the memory is cleared.
const PASSED_MAX: usize = 1024;

impl DeliveryProcess {
    pub fn new(control: UnixStream) -> Self {
        DeliveryProcess {
            control: Mutex::new(control),
            idle: Mutex::new(Vec::new()),
            closing: Arc::new(AtomicBool::new(false)),
            child: None,
            passed: Mutex::new(HashMap::new()),
            check_stands: CHECK_STANDS,
        }
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// A channel to the delivery process: an idle one, or a new socketpair
    /// whose other end is handed over on the control socket.
    fn channel(&self) -> io::Result<UnixStream> {
        if self.is_closing() {
            return Err(io::Error::other("shutting down"));
        }
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let (ours, theirs) = UnixStream::pair()?;
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        send_frame(&control, &[VERSION], Some(theirs.as_raw_fd()))?;
        Ok(ours)
    }

    /// Keeps a channel for the next request; once closing, drops it, so
    /// that the delivery process sees it end.
    fn release(&self, c: UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_closing() {
            idle.push(c);
        }
    }

    /// One request and its response; a broken channel is dropped.
    fn call(&self, payload: &[u8], fd: Option<&OwnedFd>) -> io::Result<Vec<u8>> {
        let c = self.channel()?;
        send_frame(&c, payload, fd.map(|f| f.as_raw_fd()))?;
        let (resp, _) = recv_frame(&c)?;
        self.release(c);
        Ok(resp)
    }
}

impl Delivery for DeliveryProcess {
    fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
        let fd = match message.transfer_fd() {
            Ok(fd) => fd,
            Err(e) => {
                Event::NotPassed {
                    id: &env.id,
                    err: &e,
                }
                .log();
                return Outcome::Temporary(TempReason::Local);
            }
        };
        let req = encode_deliver(env, message.len());
        // Nor does the SMTP side stop (SIGTSTP) while it waits for the
        // outcome of a delivery.
        let _held = crate::deliver::HoldSignals::new();
        match self.call(&req, Some(&fd)).and_then(|r| decode_response(&r)) {
            Ok(Response::Ok) => Outcome::Delivered,
            Ok(Response::Temp(r)) => Outcome::Temporary(r),
            Ok(other) => {
                Event::BadAnswer {
                    id: &env.id,
                    answer: &other,
                }
                .log();
                Outcome::Temporary(TempReason::Local)
            }
            Err(e) => {
                Event::DeliveryProcessFailed {
                    id: &env.id,
                    err: &e,
                }
                .log();
                Outcome::Temporary(TempReason::Local)
            }
        }
    }

    fn check_mailbox(&self, user: &User) -> Result<(), String> {
        let fresh = self
            .passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user.name)
            .is_some_and(|t| t.elapsed() < self.check_stands);
        if fresh {
            return Ok(());
        }
        let mut req = vec![VERSION, KIND_CHECK];
        put_str(&mut req, &user.name);
        match self.call(&req, None).and_then(|r| decode_response(&r)) {
            Ok(Response::Ok) => {
                let mut p = self.passed.lock().unwrap_or_else(|p| p.into_inner());
                if p.len() >= PASSED_MAX {
                    p.clear();
                }
                p.insert(user.name.clone(), Instant::now());
                Ok(())
            }
            Ok(Response::Unavailable(why)) => Err(why),
            Ok(other) => Err(format!("delivery process answered {other:?}")),
            Err(e) => Err(format!("delivery process: {e}")),
        }
    }

    /// Lets go of the delivery process and waits until it has ended and
    /// been reaped: it finishes the requests in progress, then removes its
    /// journals, and only then may this process exit (a service manager
    /// takes the main process's exit for the end of the service, and a
    /// test or an admin for the end of postie).
    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // End of file on every channel not in use now; those in use end
        // when their request is answered ([`DeliveryProcess::release`]), and the
        // control socket ends the delivery process's main loop.
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let _ = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown(std::net::Shutdown::Both);
        let Some((pid, reaped)) = &self.child else {
            return;
        };
        log::info!("waiting for the delivery process {pid} to finish");
        reaped.wait();
        log::info!("delivery process {pid} ended");
    }
}

/// Whether the delivery process has ended and been reaped, set by the
/// thread that waits for it.
#[derive(Default)]
struct Reaped {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Reaped {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Splits the process (see the module documentation). The child, the
/// delivery process, serves `delivery` within `limits`, finding the users
/// a request names with `lookup`, and never returns. The parent drops to
/// `uid`/`gid` (`user` names them in the log) and returns its view of the
/// child, to deliver through. `inherited` are the descriptors the child
/// must not keep (listening sockets, the client's socket): they are
/// pointed at /dev/null there. Call while single-threaded.
pub fn split(
    delivery: Arc<dyn Delivery>,
    lookup: Arc<UserLookup>,
    limits: Limits,
    user: &str,
    uid: u32,
    gid: u32,
    inherited: &[std::os::fd::RawFd],
) -> io::Result<Arc<dyn Delivery>> {
    let (smtp_end, delivery_end) = UnixStream::pair()?;
    // Before the fork, so that the delivery process has the higher limit
    // too: it holds a descriptor per channel, mailbox and journal.
    sys::raise_fd_limit();
    match sys::fork()? {
        sys::Forked::Child => {
            drop(smtp_end);
            for fd in inherited {
                sys::null_fd(*fd);
            }
            // A delivery in progress must finish: stop signals here; the
            // process ends when the SMTP side closes the control socket
            // (and that side waits for it to end).
            // SIGTSTP, SIGTTIN and SIGTTOU too: it never stops with a
            // mailbox locked.
            let _ = sys::delivery_signals().thread_block();
            // Deliveries a crash interrupted are undone before any request
            // is served.
            delivery.recover();
            log::info!("delivery process {} serving", std::process::id());
            serve_delivery(delivery_end, delivery.clone(), lookup, limits);
            // The SMTP side has let go, and waits for this process to end.
            // A process that died while this one served (a crashed postie
            // still exiting when this one started, an inetd session) may
            // have left journals the first recovery saw locked: recovered
            // now, then this process's idle journals removed, so that a
            // clean shutdown leaves none.
            delivery.recover();
            delivery.close();
            std::process::exit(crate::exit::EX_OK.into());
        }
        sys::Forked::Parent { child } => {
            drop(delivery_end);
            sys::drop_privileges(uid, gid)?;
            let mut process = DeliveryProcess::new(smtp_end);
            // Without its delivery process the SMTP side could only answer
            // 4xx: exit, so that the service manager (or inetd, at the next
            // connection) starts a whole postie again. When this side is
            // closing, the delivery process ending is expected, and
            // [`DeliveryProcess::close`] waits for it.
            let closing = process.closing.clone();
            let reaped = Arc::new(Reaped::default());
            process.child = Some((child, reaped.clone()));
            std::thread::Builder::new()
                .name("watch".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let status = nix::sys::wait::waitpid(child, None);
                    if !closing.load(Ordering::SeqCst) {
                        log::error!("delivery process {child} ended ({status:?}); exiting");
                        std::process::exit(crate::exit::EX_OSERR.into());
                    }
                    if !matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
                        log::warn!("delivery process {child} ended ({status:?})");
                    }
                    reaped.set();
                })?;
            log::info!(
                "SMTP side runs as {user} (uid {uid}, gid {gid}); delivery process {child} keeps root"
            );
            Ok(Arc::new(process))
        }
    }
}

/// How the delivery process finds a user named in a request: in its own
/// user database, never trusting the SMTP side's word.
pub type UserLookup = dyn Fn(&str) -> Option<User> + Send + Sync;

impl Drop for DeliveryProcess {
    fn drop(&mut self) {
        // Runs before the sockets close (fields drop after this).
        self.closing.store(true, Ordering::SeqCst);
    }
}

/// What the delivery process answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok,
    Temp(TempReason),
    Unavailable(String),
    Bad(String),
}

/// The delivery process's main loop: receives channels on `control` and
/// serves each on a thread until the SMTP process goes away (end of file
/// on the control socket), then waits for requests in progress. A channel
/// beyond [`Limits::max_channels`] is closed at once.
pub fn serve_delivery(
    control: UnixStream,
    delivery: Arc<dyn Delivery>,
    lookup: Arc<UserLookup>,
    limits: Limits,
) {
    let mut workers = Vec::new();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (payload, fd) = match recv_frame(&control) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                log::error!("delivery process: control channel: {e}");
                break;
            }
        };
        let Some(fd) = fd.filter(|_| payload == [VERSION]) else {
            log::error!("delivery process: malformed control message, ignored");
            continue;
        };
        let channel = UnixStream::from(fd);
        if open.load(Ordering::SeqCst) >= limits.max_channels {
            log::error!(
                "delivery process: refused a channel: {} open, the most allowed",
                limits.max_channels
            );
            continue;
        }
        let counted = Counted::new(&open);
        let d = delivery.clone();
        let l = lookup.clone();
        match std::thread::Builder::new()
            .name("deliver".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _counted = counted;
                serve_channel(channel, &*d, &*l, &limits)
            }) {
            Ok(h) => workers.push(h),
            Err(e) => log::error!("delivery process: cannot start a thread: {e}"),
        }
        workers.retain(|h| !h.is_finished());
    }
    for h in workers {
        let _ = h.join();
    }
}

/// One open channel, counted while this lives (dropped with its thread, or
/// with the closure if no thread could be started).
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Counted {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Counted(n.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves requests on one channel until it closes.
pub fn serve_channel(
    channel: UnixStream,
    delivery: &dyn Delivery,
    lookup: &dyn Fn(&str) -> Option<User>,
    limits: &Limits,
) {
    loop {
        let (payload, fd) = match recv_frame(&channel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                // A frame we cannot even read: say so, and drop the channel.
                log::warn!("delivery process: refused request: {e}");
                let _ = send_frame(
                    &channel,
                    &encode_response(&Response::Bad(e.to_string())),
                    None,
                );
                return;
            }
        };
        let response = handle(&payload, fd, delivery, lookup, limits);
        if let Response::Bad(why) = &response {
            log::warn!("delivery process: refused request: {why}");
        }
        if send_frame(&channel, &encode_response(&response), None).is_err() {
            return;
        }
    }
}

/// Validates and carries out one request.
pub fn handle(
    payload: &[u8],
    fd: Option<OwnedFd>,
    delivery: &dyn Delivery,
    lookup: &dyn Fn(&str) -> Option<User>,
    limits: &Limits,
) -> Response {
    let mut r = Reader { buf: payload };
    let parsed = (|| -> Result<Response, String> {
        if r.u8()? != VERSION {
            return Err("unsupported protocol version".into());
        }
        match r.u8()? {
            KIND_CHECK => {
                let name = r.str()?;
                r.end()?;
                if fd.is_some() {
                    return Err("unexpected descriptor".into());
                }
                let user = known_user(&name, lookup)?;
                Ok(match delivery.check_mailbox(&user) {
                    Ok(()) => Response::Ok,
                    Err(why) => Response::Unavailable(why),
                })
            }
            KIND_DELIVER => {
                let (env, len) = decode_deliver(&mut r)?;
                if len > limits.max_size {
                    return Err(format!(
                        "message of {len} bytes over the limit of {}",
                        limits.max_size
                    ));
                }
                if env.recipients.len() > limits.max_recipients {
                    return Err(format!(
                        "{} recipients over the limit of {}",
                        env.recipients.len(),
                        limits.max_recipients
                    ));
                }
                for rcpt in &env.recipients {
                    for u in &rcpt.users {
                        known_user(u, lookup)?;
                    }
                }
                let fd = fd.ok_or("no message descriptor")?;
                let message = FdMessage::new(File::from(fd), len, limits)?;
                Ok(match delivery.deliver(&env, &message) {
                    Outcome::Delivered => Response::Ok,
                    Outcome::Temporary(t) => Response::Temp(t),
                })
            }
            k => Err(format!("unknown request kind {k}")),
        }
    })();
    parsed.unwrap_or_else(Response::Bad)
}

fn known_user(name: &str, lookup: &dyn Fn(&str) -> Option<User>) -> Result<User, String> {
    if !plausible_user_name(name) {
        return Err(format!(
            "implausible user name {:?}",
            crate::smtp::session::printable(name, 40)
        ));
    }
    lookup(name).ok_or_else(|| format!("no such user {name:?}"))
}

/// The message of a delivery request: a regular file of the declared
/// length, read with positional reads. Up to the spill threshold it must
/// be a memfd sealed against any change; a larger one may be a file the
/// SMTP side can still change, and then a read that ends short fails the
/// delivery (see the module documentation).
pub struct FdMessage {
    file: File,
    len: u64,
}

/// The seals a memfd must carry: its size and content cannot change.
fn required_seals() -> nix::fcntl::SealFlag {
    use nix::fcntl::SealFlag;
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

impl FdMessage {
    pub(crate) fn new(file: File, len: u64, limits: &Limits) -> Result<Self, String> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let md = file
            .metadata()
            .map_err(|e| format!("message descriptor: {e}"))?;
        if !md.is_file() {
            return Err("message descriptor is not a regular file".into());
        }
        if md.len() != len {
            return Err(format!("message is {} bytes, request says {len}", md.len()));
        }
        // A memfd (or any tmpfs file) tells its seals; any other file
        // cannot be sealed (EINVAL).
        let seals = fcntl(&file, FcntlArg::F_GET_SEALS)
            .ok()
            .map(SealFlag::from_bits_truncate);
        match seals {
            Some(s) if s.contains(required_seals()) => {}
            // Could be sealed and is not: the SMTP side always seals.
            Some(s) if !s.contains(SealFlag::F_SEAL_SEAL) => {
                return Err("message in an unsealed memory file".into());
            }
            // Cannot be sealed: only for a message the SMTP side spilled.
            _ if len > limits.spill_threshold => {}
            _ => {
                return Err(format!(
                    "message of {len} bytes not in a sealed memory file"
                ));
            }
        }
        Ok(FdMessage { file, len })
    }
}

impl MessageSource for FdMessage {
    fn len(&self) -> u64 {
        self.len
    }

    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(FileReader::new(
            &self.file,
            self.len,
            |pos, len| {
                // Shortened under us (an unsealed file): the delivery fails
                // and is rolled back rather than append part of a message.
                format!("message file ends at {pos} of {len} bytes: changed during delivery")
            },
        )))
    }
}

// Encoding.

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// The payload of a delivery request for `env`, whose message is `len`
/// bytes long.
pub fn encode_deliver(env: &Envelope, len: u64) -> Vec<u8> {
    let mut out = vec![VERSION, KIND_DELIVER];
    put_str(&mut out, &env.id);
    put_str(&mut out, &env.helo);
    out.push(u8::from(env.esmtp));
    put_str(
        &mut out,
        &env.peer.map(|p| p.to_string()).unwrap_or_default(),
    );
    let sender = match &env.sender {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    };
    put_str(&mut out, &sender);
    put_u32(&mut out, env.recipients.len() as u32);
    for r in &env.recipients {
        put_str(&mut out, &r.path.to_string());
        put_u32(&mut out, r.users.len() as u32);
        for u in &r.users {
            put_str(&mut out, u);
        }
    }
    out.push(match env.body {
        None => 0,
        Some(Body::SevenBit) => 1,
        Some(Body::EightBitMime) => 2,
    });
    put_u64(&mut out, env.size);
    match &env.submitter {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_u32(&mut out, s.uid);
            put_str(&mut out, &s.user);
        }
    }
    put_u64(&mut out, len);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.buf.len() < n {
            return Err("truncated request".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn count(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > MAX_ITEMS {
            return Err(format!("count {n} over the limit"));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > MAX_STR {
            return Err(format!("string of {n} bytes over the limit"));
        }
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "string not UTF-8")?;
        if s.chars().any(|c| c.is_control()) {
            return Err("control character in a string".into());
        }
        Ok(s.to_string())
    }
    fn end(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes in request".into())
        }
    }
}

fn mailbox(s: &str) -> Result<Mailbox, String> {
    match parse_path(&format!("<{s}>")) {
        Ok((Some(m), "")) => Ok(m),
        _ => Err(format!(
            "bad address {:?}",
            crate::smtp::session::printable(s, 80)
        )),
    }
}

fn decode_deliver(r: &mut Reader<'_>) -> Result<(Envelope, u64), String> {
    let id = r.str()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        return Err("bad message id".into());
    }
    let helo = r.str()?;
    let esmtp = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err("bad flag".into()),
    };
    let peer = match r.str()? {
        p if p.is_empty() => None,
        p => Some(p.parse::<IpAddr>().map_err(|_| "bad peer address")?),
    };
    let sender = match r.str()? {
        s if s.is_empty() => ReversePath::Null,
        s => ReversePath::Mailbox(mailbox(&s)?),
    };
    let n = r.count()?;
    if n == 0 {
        return Err("no recipients".into());
    }
    let mut recipients = Vec::with_capacity(n.min(100));
    for _ in 0..n {
        let path = mailbox(&r.str()?)?;
        let k = r.count()?;
        if k == 0 {
            return Err("recipient without users".into());
        }
        let mut users = Vec::with_capacity(k.min(100));
        for _ in 0..k {
            users.push(r.str()?);
        }
        recipients.push(Recipient { path, users });
    }
    let body = match r.u8()? {
        0 => None,
        1 => Some(Body::SevenBit),
        2 => Some(Body::EightBitMime),
        _ => return Err("bad body type".into()),
    };
    let size = r.u64()?;
    let submitter = match r.u8()? {
        0 => None,
        1 => Some(Submitter {
            uid: r.u32()?,
            user: r.str()?,
        }),
        _ => return Err("bad flag".into()),
    };
    let len = r.u64()?;
    r.end()?;
    Ok((
        Envelope {
            id,
            helo,
            esmtp,
            peer,
            sender,
            recipients,
            body,
            size,
            submitter,
        },
        len,
    ))
}

const TEMP_REASONS: [TempReason; 5] = [
    TempReason::LockTimeout,
    TempReason::NoSpace,
    TempReason::Quota,
    TempReason::LookupFailed,
    TempReason::Local,
];

pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut out = vec![VERSION];
    match r {
        Response::Ok => out.push(ST_OK),
        Response::Temp(t) => {
            out.push(ST_TEMP);
            out.push(TEMP_REASONS.iter().position(|x| x == t).unwrap_or(4) as u8);
        }
        Response::Unavailable(why) => {
            out.push(ST_UNAVAILABLE);
            put_str(&mut out, &truncate(why));
        }
        Response::Bad(why) => {
            out.push(ST_BAD);
            put_str(&mut out, &truncate(why));
        }
    }
    out
}

fn truncate(s: &str) -> String {
    crate::smtp::session::printable(s, 1000)
}

pub fn decode_response(payload: &[u8]) -> io::Result<Response> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut r = Reader { buf: payload };
    let res = (|| -> Result<Response, String> {
        if r.u8()? != VERSION {
            return Err("unsupported protocol version".into());
        }
        let resp = match r.u8()? {
            ST_OK => Response::Ok,
            ST_TEMP => Response::Temp(*TEMP_REASONS.get(r.u8()? as usize).ok_or("bad reason")?),
            ST_UNAVAILABLE => Response::Unavailable(r.str()?),
            ST_BAD => Response::Bad(r.str()?),
            _ => return Err("unknown status".into()),
        };
        r.end()?;
        Ok(resp)
    })();
    res.map_err(|e| bad(&e))
}

// Framing, with an optional descriptor attached to the frame's first byte.

/// Sends one frame: its length, then `payload`, with `fd` attached.
pub fn send_frame(s: &UnixStream, payload: &[u8], fd: Option<i32>) -> io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut parts = [IoSlice::new(&len), IoSlice::new(payload)];
    let fds = fd.map(|f| [f]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    let total = 4 + payload.len();
    let mut sent = sendmsg::<()>(s.as_raw_fd(), &parts, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    // A short write: the rest goes without the descriptor (already sent).
    while sent < total {
        let rest: Vec<u8> = [&len[..], payload].concat()[sent..].to_vec();
        parts = [IoSlice::new(&rest), IoSlice::new(&[])];
        sent += sendmsg::<()>(s.as_raw_fd(), &parts, &[], MsgFlags::MSG_NOSIGNAL, None)?;
    }
    Ok(())
}

/// Receives one frame and the descriptor attached to it, if any. End of
/// file before a frame starts is `UnexpectedEof`.
pub fn recv_frame(s: &UnixStream) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut got = 0;
    let mut fd = None;
    while got < 4 {
        let mut space = nix::cmsg_space!([i32; 4]);
        let mut iov = [IoSliceMut::new(&mut len[got..])];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let n = msg.bytes;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    let owned = sys::received_fd(raw);
                    // Keep the first; any extra descriptor is closed.
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {n} bytes"),
        ));
    }
    let mut payload = vec![0u8; n];
    (&*s).read_exact(&mut payload)?;
    Ok((payload, fd))
}

/// Writes a whole frame without a descriptor (for tests of hostile input).
pub fn send_raw(s: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    (&*s).write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageSource;
    use std::sync::atomic::AtomicUsize;

    /// A delivery agent that records what it is asked.
    struct Recorder {
        delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
        checks: AtomicUsize,
    }

    impl Delivery for Recorder {
        fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
            let mut body = Vec::new();
            message.reader().unwrap().read_to_end(&mut body).unwrap();
            self.delivered.lock().unwrap().push((env.clone(), body));
            Outcome::Delivered
        }
        fn check_mailbox(&self, user: &User) -> Result<(), String> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            if user.name == "broken" {
                Err("broken mailbox".into())
            } else {
                Ok(())
            }
        }
    }

    fn lookup(name: &str) -> Option<User> {
        ["jon", "alice", "broken"].contains(&name).then(|| User {
            name: name.into(),
            uid: 1000,
            gid: 1000,
        })
    }

    fn envelope() -> Envelope {
        Envelope {
            id: "ABC.1".into(),
            helo: "client.example".into(),
            esmtp: true,
            peer: Some("192.0.2.1".parse().unwrap()),
            sender: ReversePath::Mailbox(Mailbox {
                local: "a b".into(),
                domain: Some("x.example".into()),
            }),
            recipients: vec![Recipient {
                path: Mailbox {
                    local: "staff".into(),
                    domain: None,
                },
                users: vec!["alice".into(), "jon".into()],
            }],
            body: Some(Body::EightBitMime),
            size: 42,
            submitter: Some(Submitter {
                uid: 1000,
                user: "jon".into(),
            }),
        }
    }

    fn start() -> (DeliveryProcess, Arc<Recorder>, UnixStream) {
        let rec = Arc::new(Recorder {
            delivered: Mutex::new(Vec::new()),
            checks: AtomicUsize::new(0),
        });
        let (ours, theirs) = UnixStream::pair().unwrap();
        let d: Arc<dyn Delivery> = rec.clone();
        std::thread::spawn(move || serve_delivery(theirs, d, Arc::new(lookup), LIMITS));
        let raw = ours.try_clone().unwrap();
        (DeliveryProcess::new(ours), rec, raw)
    }

    const LIMITS: Limits = Limits {
        max_size: 10 << 20,
        max_recipients: 100,
        spill_threshold: 16,
        max_channels: 4,
    };

    /// A memfd holding `bytes`, with `seals` added.
    fn memfd_sealed(bytes: &[u8], seals: nix::fcntl::SealFlag) -> OwnedFd {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        let mut f = File::from(fd);
        f.write_all(bytes).unwrap();
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).unwrap();
        OwnedFd::from(f)
    }

    /// A memfd holding `bytes`, sealed as the SMTP side seals it.
    fn memfd(bytes: &[u8]) -> OwnedFd {
        memfd_sealed(bytes, required_seals())
    }

    #[test]
    fn a_passed_mailbox_check_stands_a_while_a_failed_one_does_not() {
        let (mut process, rec, _raw) = start();
        process.check_stands = Duration::from_millis(300);
        let checks = || rec.checks.load(Ordering::SeqCst);
        let jon = lookup("jon").unwrap();
        assert_eq!(process.check_mailbox(&jon), Ok(()));
        assert_eq!(process.check_mailbox(&jon), Ok(()));
        assert_eq!(checks(), 1, "the second check was answered from memory");
        // Another user is asked about.
        assert_eq!(process.check_mailbox(&lookup("alice").unwrap()), Ok(()));
        assert_eq!(checks(), 2);
        // A refusal is never remembered.
        let broken = lookup("broken").unwrap();
        for n in 3..5 {
            assert!(process.check_mailbox(&broken).is_err());
            assert_eq!(checks(), n);
        }
        // Once the pass is old, jon is asked about again.
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(process.check_mailbox(&jon), Ok(()));
        assert_eq!(checks(), 5);
    }

    #[test]
    fn requests_round_trip_through_the_channel() {
        let (process, rec, _raw) = start();
        let mut msg = crate::message::MessageBuf::new(16, std::env::temp_dir());
        msg.write_all(b"Subject: hi\n\nbody spilled to a file\n")
            .unwrap();
        assert_eq!(process.deliver(&envelope(), &msg), Outcome::Delivered);
        assert_eq!(process.check_mailbox(&lookup("jon").unwrap()), Ok(()));
        assert_eq!(
            process.check_mailbox(&lookup("broken").unwrap()),
            Err("broken mailbox".into())
        );
        let got = rec.delivered.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, envelope());
        assert_eq!(got[0].1, b"Subject: hi\n\nbody spilled to a file\n");
    }

    #[test]
    fn hostile_requests_are_refused_without_harm() {
        let rec = Recorder {
            delivered: Mutex::new(Vec::new()),
            checks: AtomicUsize::new(0),
        };
        let good = encode_deliver(&envelope(), 3);
        let mut other_user = envelope();
        other_user.recipients[0].users = vec!["../../etc/passwd".into()];
        let mut unknown = envelope();
        unknown.recipients[0].users = vec!["mallory".into()];
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut huge = vec![VERSION, KIND_CHECK];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, Option<OwnedFd>)> = vec![
            ("empty", vec![], None),
            ("version", bad_version, Some(memfd(b"abc"))),
            ("kind", vec![VERSION, 77], None),
            (
                "truncated",
                good[..good.len() - 3].to_vec(),
                Some(memfd(b"abc")),
            ),
            ("trailing", trailing, Some(memfd(b"abc"))),
            ("no fd", good.clone(), None),
            ("length mismatch", good.clone(), Some(memfd(b"abcdef"))),
            (
                "path traversal",
                encode_deliver(&other_user, 3),
                Some(memfd(b"abc")),
            ),
            (
                "unknown user",
                encode_deliver(&unknown, 3),
                Some(memfd(b"abc")),
            ),
            ("huge string", huge, None),
            (
                "fd on check",
                {
                    let mut v = vec![VERSION, KIND_CHECK];
                    put_str(&mut v, "jon");
                    v
                },
                Some(memfd(b"")),
            ),
        ];
        for (name, payload, fd) in cases {
            match handle(&payload, fd, &rec, &lookup, &LIMITS) {
                Response::Bad(_) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        // A directory as the message descriptor.
        let dir = File::open(std::env::temp_dir()).unwrap();
        assert!(matches!(
            handle(&good, Some(OwnedFd::from(dir)), &rec, &lookup, &LIMITS),
            Response::Bad(_)
        ));
        assert!(
            rec.delivered.lock().unwrap().is_empty(),
            "nothing delivered"
        );
        assert_eq!(rec.checks.load(Ordering::SeqCst), 0, "nothing checked");
        // And the good one works.
        assert_eq!(
            handle(&good, Some(memfd(b"abc")), &rec, &lookup, &LIMITS),
            Response::Ok
        );
    }

    /// Garbage on a live channel: a refusal, and the delivery process goes
    /// on serving other channels.
    #[test]
    fn garbage_on_a_channel_does_not_stop_the_delivery_process() {
        let (process, rec, raw) = start();
        // A channel of our own, handed over by hand, then garbage on it.
        let (ours, theirs) = UnixStream::pair().unwrap();
        send_frame(&raw, &[VERSION], Some(theirs.as_raw_fd())).unwrap();
        drop(theirs);
        send_raw(&ours, &[0, 0, 0, 5, 9, 9, 9, 9, 9]).unwrap();
        let (resp, _) = recv_frame(&ours).unwrap();
        assert!(matches!(decode_response(&resp).unwrap(), Response::Bad(_)));
        // An oversized frame header closes that channel only.
        send_raw(&ours, &[0xff, 0xff, 0xff, 0xff]).unwrap();
        let _ = recv_frame(&ours);
        let mut msg = crate::message::MessageBuf::new(1024, std::env::temp_dir());
        msg.write_all(b"x\n").unwrap();
        assert_eq!(process.deliver(&envelope(), &msg), Outcome::Delivered);
        assert_eq!(rec.delivered.lock().unwrap().len(), 1);
    }

    /// Issue postie 5, item 7: requests a forged SMTP side could send past
    /// the limits the real one keeps (a message of 30 times --max-size,
    /// too many recipients, a message that could change under the
    /// delivery) are refused, and nothing is delivered.
    #[test]
    fn forged_requests_past_the_limits_are_refused_without_harm() {
        use nix::fcntl::SealFlag;
        let rec = Recorder {
            delivered: Mutex::new(Vec::new()),
            checks: AtomicUsize::new(0),
        };
        let limits = Limits {
            max_size: 10 << 20,
            max_recipients: 3,
            spill_threshold: 100,
            max_channels: 4,
        };
        let refused = |name: &str, payload: &[u8], fd: OwnedFd| match handle(
            payload,
            Some(fd),
            &rec,
            &lookup,
            &limits,
        ) {
            Response::Bad(why) => why,
            other => panic!("{name}: {other:?}"),
        };
        // 300 MiB (sparse), sealed: over --max-size.
        let huge = {
            use nix::sys::memfd::{MFdFlags, memfd_create};
            let fd =
                memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
            let f = File::from(fd);
            f.set_len(300 << 20).unwrap();
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_ADD_SEALS(required_seals())).unwrap();
            OwnedFd::from(f)
        };
        let why = refused("huge", &encode_deliver(&envelope(), 300 << 20), huge);
        assert!(why.contains("over the limit"), "{why}");
        let mut crowd = envelope();
        crowd.recipients = (0..4).map(|_| envelope().recipients[0].clone()).collect();
        let why = refused("recipients", &encode_deliver(&crowd, 3), memfd(b"abc"));
        assert!(why.contains("recipients over the limit"), "{why}");
        let good = encode_deliver(&envelope(), 3);
        let unsealed = memfd_sealed(b"abc", SealFlag::empty());
        let why = refused("unsealed", &good, unsealed);
        assert!(why.contains("unsealed"), "{why}");
        let part = memfd_sealed(b"abc", SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW);
        refused("write seal missing", &good, part);
        // A memfd made without sealing, and a file on disk: not for a
        // message the SMTP side holds in memory.
        let unsealable = {
            let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .unwrap();
            let mut f = File::from(fd);
            f.write_all(b"abc").unwrap();
            OwnedFd::from(f)
        };
        refused("unsealable memfd", &good, unsealable);
        let mut disk = tempfile::tempfile().unwrap();
        disk.write_all(b"abc").unwrap();
        refused("small file", &good, OwnedFd::from(disk));
        assert!(
            rec.delivered.lock().unwrap().is_empty(),
            "nothing delivered"
        );
        // A spilled message (over the threshold) may come as its file; a
        // sealed memfd is accepted at any size within the limit.
        let big = vec![b'x'; 101];
        let mut disk = tempfile::tempfile().unwrap();
        disk.write_all(&big).unwrap();
        let ok = |fd| {
            handle(
                &encode_deliver(&envelope(), 101),
                Some(fd),
                &rec,
                &lookup,
                &limits,
            )
        };
        assert_eq!(ok(OwnedFd::from(disk)), Response::Ok);
        assert_eq!(ok(memfd(&big)), Response::Ok);
        assert_eq!(rec.delivered.lock().unwrap().len(), 2);
    }

    /// A message file that gets shorter during the delivery (an unsealed
    /// spilled file, changed by the SMTP side) is a read error, not the
    /// end of the message.
    #[test]
    fn a_message_file_that_shrinks_is_a_read_error() {
        let mut disk = tempfile::tempfile().unwrap();
        disk.write_all(&[b'x'; 200]).unwrap();
        let other = disk.try_clone().unwrap();
        let m = FdMessage::new(disk, 200, &LIMITS).unwrap();
        other.set_len(50).unwrap();
        let mut got = Vec::new();
        let e = m.reader().unwrap().read_to_end(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }

    /// Channels past [`Limits::max_channels`] are closed at once; the
    /// others are served, and once one closes a new one is taken.
    #[test]
    fn channels_past_the_limit_are_refused() {
        let (_process, _rec, raw) = start();
        let open = || {
            let (ours, theirs) = UnixStream::pair().unwrap();
            send_frame(&raw, &[VERSION], Some(theirs.as_raw_fd())).unwrap();
            ours
        };
        let check = |c: &UnixStream| {
            let mut req = vec![VERSION, KIND_CHECK];
            put_str(&mut req, "jon");
            send_frame(c, &req, None).ok()?;
            recv_frame(c)
                .ok()
                .map(|(r, _)| decode_response(&r).unwrap())
        };
        let served: Vec<UnixStream> = (0..LIMITS.max_channels).map(|_| open()).collect();
        for c in &served {
            assert_eq!(check(c), Some(Response::Ok));
        }
        let extra = open();
        assert_eq!(check(&extra), None, "a channel past the limit is closed");
        drop(served);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if check(&open()) == Some(Response::Ok) {
                break;
            }
            assert!(
                Instant::now() < until,
                "no channel taken after others closed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
