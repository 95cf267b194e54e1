//! The accept loop: one thread per connection, connection caps, signals.
//!
//! All listeners and a signalfd are polled by the main thread. A client over
//! the total or per-address cap gets `421 4.7.0` from the main thread and
//! no thread is spawned for it. SIGTERM and SIGINT stop accepting; running
//! sessions may finish their transaction for up to `shutdown_grace`, then
//! their streams are shut for reading so that they end at once.
//!
//! Clients come over TCP, or over the local submission socket, where the
//! kernel tells us the submitting user (SO_PEERCRED) and the session is
//! marked with it ([`Submitter`]); the per-client cap then counts per uid
//! (over TCP it counts per IPv4 address or per IPv6 /64: `client_of`).
//! Local submissions have a cap of their own, `max_local_connections`:
//! remote clients filling `max_connections` (idle ones cost them nothing)
//! must not stop cron and mail(1) from submitting. One local user other
//! than root holds at most a quarter of it, so that no user can fill it
//! alone; root is not refused for it at all.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::conn::{self, Context, End, TimedRead};
use crate::listen::{self, Socket, WriteHalf};
use crate::maillog::{self, Ending, Event};
use crate::message::Delivery;
use crate::privsep;
use crate::recipients::{RcptPolicy, Recipients};
use crate::smtp::session;
use crate::smtp::{Session, Submitter, reply};

/// Caps and bounds of the accept loop.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Concurrent TCP connections in total.
    pub max_connections: usize,
    /// Concurrent connections on the submission socket, counted apart.
    pub max_local_connections: usize,
    /// Concurrent connections from one client (address, /64, local user).
    pub max_per_client: usize,
    /// How long running sessions may go on after SIGTERM.
    pub shutdown_grace: Duration,
    /// Stack of a connection thread; small, so idle clients cost little.
    pub thread_stack: usize,
}

impl ServerLimits {
    /// The most connections `client` may hold at once: `max_per_client`,
    /// and for a local user other than root also a quarter of
    /// `max_local_connections` (at least one), so that one user cannot
    /// take every local slot from the others.
    fn per_client_cap(&self, client: Client) -> usize {
        match client {
            Client::Uid(0) => self.max_per_client,
            Client::Uid(_) => self
                .max_per_client
                .min((self.max_local_connections / 4).max(1)),
            _ => self.max_per_client,
        }
    }

    /// The most sessions that may run at once: every TCP and local one,
    /// and root's local ones beyond `max_local_connections`, which are
    /// refused only for the per-client cap.
    pub fn max_sessions(&self) -> usize {
        self.max_connections
            .saturating_add(self.max_local_connections)
            .saturating_add(self.max_per_client)
    }
}

/// What every session of this process shares: the policy, the delivery
/// agent, the limits.
pub struct Service {
    pub session: session::Config,
    pub conn: conn::Limits,
    pub server: ServerLimits,
    /// The recipients, and delivery: in this process, or across the
    /// privilege separation.
    rcpt: RcptPolicy,
    pub stopping: AtomicBool,
    next_id: AtomicU64,
    started: u64,
    workers: Arc<Workers>,
}

/// The session threads. Each connection still has a thread to itself, but
/// a thread whose session ended waits a while for the next connection
/// instead of exiting: creating a thread and unmapping its stack at exit
/// was a tenth of the SMTP side's CPU at one message per connection.
#[derive(Debug)]
struct Workers {
    state: Mutex<WorkerState>,
    more: Condvar,
    stack: usize,
}

#[derive(Default)]
struct WorkerState {
    /// Threads waiting for a session.
    idle: usize,
    /// Sessions handed over and not yet picked up.
    queue: VecDeque<Job>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WorkerState {{ idle: {}, queued: {} }}",
            self.idle,
            self.queue.len()
        )
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// At most this many threads wait for a session: beyond, a thread whose
/// session ends exits, so that a burst leaves no crowd behind.
const MAX_IDLE_WORKERS: usize = 16;
/// How long a thread waits for a session before it exits.
const WORKER_LINGER: Duration = Duration::from_secs(10);

impl Workers {
    fn new(stack: usize) -> Self {
        Workers {
            state: Mutex::new(WorkerState::default()),
            more: Condvar::new(),
            stack,
        }
    }

    fn state(&self) -> MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on a waiting thread, or else on a new one. An error (no
    /// thread could be made) drops the job unrun.
    fn run(self: &Arc<Self>, job: Job) -> io::Result<()> {
        let mut st = self.state();
        // Every queued job has a waiting thread bound to take it.
        if st.idle > st.queue.len() {
            st.queue.push_back(job);
            drop(st);
            self.more.notify_one();
            return Ok(());
        }
        drop(st);
        let me = self.clone();
        thread::Builder::new()
            .name("session".into())
            .stack_size(self.stack)
            .spawn(move || {
                job();
                me.wait_for_more();
            })
            .map(drop)
    }

    /// After a session: runs the next one handed over, until none comes
    /// for [`WORKER_LINGER`] or enough threads wait already.
    fn wait_for_more(&self) {
        let mut st = self.state();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = self.state();
                continue;
            }
            if st.idle >= MAX_IDLE_WORKERS {
                return;
            }
            st.idle += 1;
            let (guard, waited) = self
                .more
                .wait_timeout(st, WORKER_LINGER)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle -= 1;
            if waited.timed_out() && st.queue.is_empty() {
                return;
            }
        }
    }
}

impl Service {
    pub fn new(
        session: session::Config,
        conn: conn::Limits,
        server: ServerLimits,
        recipients: Arc<Recipients>,
        delivery: Arc<dyn Delivery>,
    ) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let workers = Arc::new(Workers::new(server.thread_stack));
        Service {
            session,
            conn,
            server,
            rcpt: RcptPolicy {
                recipients,
                delivery,
            },
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            started,
            workers,
        }
    }

    /// Who the recipients are.
    pub fn recipients(&self) -> &Recipients {
        &self.rcpt.recipients
    }

    /// Delivery: in this process, or across the privilege separation.
    pub fn delivery(&self) -> &dyn Delivery {
        &*self.rcpt.delivery
    }

    /// What the delivery process accepts from this service's SMTP side.
    pub fn delivery_limits(&self) -> privsep::Limits {
        privsep::Limits::new(
            self.session.max_size,
            self.session.max_recipients,
            self.conn.spill_threshold as u64,
            self.server.max_sessions(),
        )
    }

    /// Moves delivery to a process of its own that keeps root, and drops
    /// this one to `uid`/`gid` (see [`privsep`]); `inherited` are the
    /// descriptors the delivery process must not keep. The delivery process
    /// looks users up in this service's user database. Call while
    /// single-threaded.
    pub fn separate(
        mut self,
        user: &str,
        uid: u32,
        gid: u32,
        inherited: &[std::os::fd::RawFd],
    ) -> io::Result<Self> {
        let recipients = self.rcpt.recipients.clone();
        let lookup = move |name: &str| recipients.user(name).ok().flatten();
        let limits = self.delivery_limits();
        let delivery = self.rcpt.delivery.clone();
        self.rcpt.delivery = privsep::split(
            delivery,
            Arc::new(lookup),
            limits,
            user,
            uid,
            gid,
            inherited,
        )?;
        Ok(self)
    }

    /// A session id unique on this host: start time, pid, and a counter.
    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:X}{:X}{:X}",
            self.started & 0xFF_FFFF,
            std::process::id(),
            n
        )
    }

    /// Runs one session on an established connection and logs its end.
    pub fn run_session<R: TimedRead, W: io::Write>(
        &self,
        reader: R,
        writer: W,
        peer: Option<IpAddr>,
    ) {
        self.run(reader, writer, peer, None)
    }

    /// Runs a local submission session for `submitter`.
    pub fn run_local_session<R: TimedRead, W: io::Write>(
        &self,
        reader: R,
        writer: W,
        submitter: Submitter,
    ) {
        self.run(reader, writer, None, Some(submitter))
    }

    fn run<R: TimedRead, W: io::Write>(
        &self,
        reader: R,
        writer: W,
        peer: Option<IpAddr>,
        submitter: Option<Submitter>,
    ) {
        let id = self.new_id();
        let who = match &submitter {
            Some(s) => maillog::Peer::Local {
                user: s.user.clone(),
                uid: s.uid,
            },
            None => maillog::Peer::Ip(peer),
        };
        Event::Connect {
            id: &id,
            peer: &who,
        }
        .log();
        let mut session = Session::new(self.session.clone(), id.clone(), peer);
        if let Some(s) = submitter {
            session = session.with_submitter(s);
        }
        let cx = Context {
            limits: &self.conn,
            policy: &self.rcpt,
            deliverer: self.delivery(),
            stopping: &self.stopping,
        };
        let end = conn::run(reader, writer, session, &cx);
        let end = match &end {
            End::Error(e) => Ending::Error(e),
            other => Ending::Other(other),
        };
        Event::Disconnect {
            id: &id,
            peer: &who,
            end,
        }
        .log();
    }
}

/// Whom the per-client cap counts: an IPv4 address, an IPv6 /64, or a
/// local user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
    Uid(u32),
}

/// The key under which the per-client cap counts a TCP client at `ip`.
/// An IPv6 host is handed a whole /64 (RFC 4291 2.5.1: interface ids are
/// 64 bits; SLAAC and privacy addresses, RFC 8981, pick any of them), so
/// counting addresses would let one host take every slot; a v4-mapped
/// address (a dual-stack socket's view of an IPv4 client) is that IPv4
/// address.
fn client_of(ip: IpAddr) -> Client {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Client::V4(v4),
        IpAddr::V6(v6) => Client::V6Net((v6.to_bits() >> 64) as u64),
    }
}

#[derive(Default)]
struct Connections {
    /// Every connection, local ones included.
    total: usize,
    /// Connections on the submission socket.
    local: usize,
    per_client: HashMap<Client, usize>,
    /// Every connection's socket, shut at the end of the shutdown grace.
    streams: HashMap<u64, Arc<dyn Socket>>,
    next: u64,
}

/// One counted connection; removes itself from the counts when its thread
/// ends, however it ends.
struct Slot {
    conns: Arc<Mutex<Connections>>,
    client: Client,
    key: u64,
}

impl Slot {
    /// Counts a new connection from `client`, or says no when a cap is
    /// reached.
    fn take(
        conns: &Arc<Mutex<Connections>>,
        client: Client,
        stream: Arc<dyn Socket>,
        limits: &ServerLimits,
    ) -> Option<Slot> {
        let mut c = lock(conns);
        let per = c.per_client.get(&client).copied().unwrap_or(0);
        let full = match client {
            // Root's submissions (cron, the system's daemons) are not
            // refused for the total: one user's idle connections filling
            // the local slots would otherwise stop the system's mail.
            Client::Uid(0) => false,
            Client::Uid(_) => c.local >= limits.max_local_connections,
            _ => c.total - c.local >= limits.max_connections,
        };
        if full || per >= limits.per_client_cap(client) {
            return None;
        }
        c.total += 1;
        if let Client::Uid(_) = client {
            c.local += 1;
        }
        *c.per_client.entry(client).or_insert(0) += 1;
        c.next += 1;
        let key = c.next;
        c.streams.insert(key, stream);
        Some(Slot {
            conns: conns.clone(),
            client,
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.conns);
        c.total -= 1;
        if let Client::Uid(_) = self.client {
            c.local -= 1;
        }
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
        c.streams.remove(&self.key);
    }
}

fn lock(m: &Mutex<Connections>) -> MutexGuard<'_, Connections> {
    // A panicking connection thread cannot leave the counts half-updated
    // (every update is a few integer operations), so a poisoned lock is
    // still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks the signals held off deliveries ([`crate::sys::delivery_signals`]:
/// SIGTERM, SIGINT, SIGHUP, SIGTSTP, SIGTTIN, SIGTTOU) in this thread and
/// every thread it starts from now on, and returns a signalfd that reports
/// them. Call before starting any thread.
pub fn signals() -> io::Result<SignalFd> {
    let set: SigSet = crate::sys::delivery_signals();
    set.thread_block()?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?)
}

/// Accepts connections on `listeners` until SIGTERM or SIGINT arrives on
/// `sigfd`, then stops as described in the module documentation.
pub fn serve(
    listeners: Vec<TcpListener>,
    local: Option<UnixListener>,
    service: Arc<Service>,
    sigfd: SignalFd,
    on_ready: impl FnOnce(),
) -> io::Result<()> {
    for l in &listeners {
        l.set_nonblocking(true)?;
        if let Ok(a) = l.local_addr() {
            log::info!("listening on {a}");
        }
    }
    if let Some(l) = &local {
        l.set_nonblocking(true)?;
    }
    let conns = Arc::new(Mutex::new(Connections::default()));
    let files = crate::sys::raise_fd_limit();
    let limits = &service.server;
    if files < (limits.max_connections + limits.max_local_connections) as u64 + 16 {
        log::warn!(
            "open file limit {files} is below max-connections {} + max-local-connections {} \
             (+16): clients may be refused",
            limits.max_connections,
            limits.max_local_connections
        );
    }
    on_ready();
    'outer: loop {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        if let Some(l) = &local {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if ready[listeners.len()] {
            while let Ok(Some(info)) = sigfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => {
                        log::info!("SIGHUP: reloading the aliases");
                        service.recipients().reload_aliases();
                    }
                    Ok(Signal::SIGTSTP) => {
                        // Stop as asked, but never with a mailbox locked:
                        // once the deliveries in progress here are over
                        // (started as root, the delivery process does not
                        // stop at all).
                        let _quiet = crate::deliver::quiesce();
                        log::info!("SIGTSTP: stopping");
                        crate::sys::stop_self();
                        log::info!("continued");
                    }
                    Ok(Signal::SIGTTIN | Signal::SIGTTOU) => {}
                    Ok(s) => {
                        log::info!("{s}: no longer accepting connections");
                        break 'outer;
                    }
                    Err(_) => {}
                }
            }
        }
        if let (Some(l), Some(true)) = (&local, ready.get(listeners.len() + 1)) {
            loop {
                match l.accept() {
                    Ok((stream, _)) => {
                        if let Some(uid) = local_peer(&stream) {
                            admit(stream, Peer::Local(uid), &service, &conns)
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("accept (local): {e}");
                        thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
        for (l, _) in listeners.iter().zip(&ready).filter(|(_, r)| **r) {
            // Take every pending connection on this listener.
            loop {
                match l.accept() {
                    Ok((stream, addr)) => {
                        let ip = addr.ip().to_canonical();
                        admit(stream, Peer::Tcp(ip), &service, &conns)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE, ENOBUFS, ECONNABORTED...: log, back off a
                        // little so a full fd table does not spin the loop.
                        log::warn!("accept: {e}");
                        thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
    drop(listeners);
    drop(local);
    service.stopping.store(true, Ordering::SeqCst);
    drain(&conns, service.server.shutdown_grace);
    Ok(())
}

/// Waits for the sessions to end, for up to `grace`; then shuts their
/// streams for reading (a blocked read returns end-of-file, a delivery in
/// progress completes) and waits a little more.
fn drain(conns: &Mutex<Connections>, grace: Duration) {
    let wait = |bound: Duration| {
        let until = Instant::now() + bound;
        while lock(conns).total > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait(grace);
    let n = {
        let c = lock(conns);
        for s in c.streams.values() {
            let _ = s.shutdown(Shutdown::Read);
        }
        c.streams.len()
    };
    if n > 0 {
        log::info!("closed {n} remaining sessions");
        wait(Duration::from_secs(10));
    }
}

/// Who is at the other end of an accepted connection.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// A TCP client at this address (an IPv4-mapped one as IPv4).
    Tcp(IpAddr),
    /// A local submission by this uid (SO_PEERCRED).
    Local(u32),
}

impl Peer {
    /// Whom the per-client cap counts.
    fn client(self) -> Client {
        match self {
            Peer::Tcp(ip) => client_of(ip),
            Peer::Local(uid) => Client::Uid(uid),
        }
    }
}

/// The uid of a local submitter (SO_PEERCRED), or `None`, logged, when
/// the kernel does not say.
fn local_peer(stream: &UnixStream) -> Option<u32> {
    match listen::peer_uid(stream) {
        Ok(uid) => Some(uid),
        Err(e) => {
            Event::NoPeerCredentials { err: &e }.log();
            None
        }
    }
}

/// Admits a connection, TCP or local: counted against the caps, or
/// refused with `421` from this thread (no session thread is started for
/// it); then its session runs on a session thread.
fn admit<S: Socket>(
    stream: S,
    peer: Peer,
    service: &Arc<Service>,
    conns: &Arc<Mutex<Connections>>,
) {
    let host = &service.session.hostname;
    // The socket inherits nothing from the non-blocking listener on Linux,
    // but say so: the session relies on blocking reads with timeouts.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let stream = Arc::new(stream);
    let Some(slot) = Slot::take(conns, peer.client(), stream.clone(), &service.server) else {
        match peer {
            Peer::Tcp(ip) => Event::TooManyConnections { ip }.log(),
            Peer::Local(uid) => Event::TooManyLocal { uid }.log(),
        }
        refuse(&stream, &reply::too_many_connections(host));
        return;
    };
    let svc = service.clone();
    let s2 = stream.clone();
    let spawned = service.workers.run(Box::new(move || {
        let _slot = slot;
        let _ = s2.set_write_timeout(Some(svc.conn.command_timeout));
        run_admitted(s2, peer, &svc);
    }));
    if let Err(e) = spawned {
        // The closure (and its slot) was dropped: the counts are right.
        match peer {
            Peer::Tcp(ip) => Event::NoThread { ip, err: &e }.log(),
            Peer::Local(_) => Event::NoThreadLocal { err: &e }.log(),
        }
        refuse(&stream, &reply::too_many_connections(host));
    }
}

/// The session of an admitted connection, on its session thread.
fn run_admitted<S: Socket>(stream: Arc<S>, peer: Peer, svc: &Service) {
    let (reader, writer) = listen::halves(stream);
    let uid = match peer {
        Peer::Tcp(ip) => return svc.run_session(reader, writer, Some(ip)),
        Peer::Local(uid) => uid,
    };
    // The name, on this thread: a slow name service must not stall the
    // accept loop.
    let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        // A uid without a passwd entry (a container's, say) still
        // submits, under its number.
        Ok(None) => format!("uid{uid}"),
        Err(e) => {
            Event::SubmitterUnknown { uid, err: e }.log();
            conn::refuse(writer, &reply::submitter_unknown());
            return;
        }
    };
    let who = Submitter { uid, user };
    svc.run_local_session(reader, writer, who);
}

/// Answers without waiting, and closes: the socket buffer of a fresh
/// connection has room for one line, and a client that does not read
/// gets nothing.
fn refuse<S: Socket>(stream: &Arc<S>, r: &reply::Reply) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let _ = fcntl(&**stream, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    conn::refuse(WriteHalf(stream.clone()), r);
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A non-root local user gets a quarter of the local slots (at least
    /// one), never more than `max_per_client`; root and TCP clients get
    /// `max_per_client`.
    #[test]
    fn a_local_user_gets_a_share_of_the_local_slots() {
        let limits = |local, per| ServerLimits {
            max_connections: 100,
            max_local_connections: local,
            max_per_client: per,
            shutdown_grace: Duration::from_secs(1),
            thread_stack: 1 << 16,
        };
        let user = Client::Uid(1000);
        let tcp = Client::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(limits(50, 50).per_client_cap(user), 12);
        assert_eq!(limits(50, 5).per_client_cap(user), 5);
        assert_eq!(limits(3, 50).per_client_cap(user), 1);
        assert_eq!(limits(1, 50).per_client_cap(user), 1);
        assert_eq!(limits(50, 50).per_client_cap(Client::Uid(0)), 50);
        assert_eq!(limits(50, 50).per_client_cap(tcp), 50);
    }

    /// The channel cap counts every session the SMTP side may run at
    /// once: the TCP ones, the local ones, and root's local ones beyond
    /// `--max-local-connections` (at most `--max-per-client`), then 16.
    #[test]
    fn channels_cover_every_session_of_the_smtp_side() {
        let spool = tempfile::tempdir().unwrap();
        let argv = [
            "postie",
            "inetd",
            "--spool",
            spool.path().to_str().unwrap(),
            "--passwd",
            "/dev/null",
            "--max-connections",
            "100",
            "--max-local-connections",
            "20",
            "--max-per-client",
            "7",
        ];
        let cl = crate::cli::command_line(argv.iter().map(std::ffi::OsString::from)).unwrap();
        let service = crate::config::Loaded::without_file(cl.cli)
            .service()
            .unwrap();
        assert_eq!(service.delivery_limits().max_channels, 100 + 20 + 7 + 16);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_v4_mapped_as_ipv4() {
        let key = |s: &str| client_of(s.parse().unwrap());
        // One /64 is one client: a host there has 2^64 addresses.
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:a:b:c:d"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db9:1:2::1"));
        // IPv4, and IPv4 seen through a dual-stack socket, per address.
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:192.0.2.2"));
        // A v4-mapped address is not lumped with the rest of ::ffff:0:0/96.
        assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:198.51.100.7"));
        // Loopback stays itself.
        assert_ne!(key("::1"), key("127.0.0.1"));
    }

    #[test]
    fn a_finished_session_thread_takes_the_next_connection() {
        let workers = Arc::new(Workers::new(256 * 1024));
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        workers
            .run(Box::new(move || t.send(thread::current().id()).unwrap()))
            .unwrap();
        let first = rx.recv().unwrap();
        // Wait until that thread waits for more.
        let t0 = Instant::now();
        while workers.state().idle == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            thread::sleep(Duration::from_millis(1));
        }
        let t = tx.clone();
        workers
            .run(Box::new(move || t.send(thread::current().id()).unwrap()))
            .unwrap();
        assert_eq!(rx.recv().unwrap(), first);
    }

    #[test]
    fn sessions_still_run_at_once_each_on_its_own_thread() {
        let workers = Arc::new(Workers::new(256 * 1024));
        // Each waits for all the others to have started: only possible if
        // they all run at the same time.
        let n = 5;
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let (tx, rx) = mpsc::channel();
        for _ in 0..n {
            let (b, t) = (barrier.clone(), tx.clone());
            workers
                .run(Box::new(move || {
                    b.wait();
                    t.send(thread::current().id()).unwrap();
                }))
                .unwrap();
        }
        let mut ids: Vec<_> = (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
