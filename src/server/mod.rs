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
//!
//! The parts: `workers.rs` (the session threads, kept for the next
//! connection), `caps.rs` (the connection counts and their caps), `admit.rs`
//! (a connection counted, refused, or handed to a session thread), and
//! `accept.rs` (the loop, the signals, the shutdown); [`Service`], what every
//! session shares, is here.

mod accept;
mod admit;
mod caps;
mod workers;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use accept::{serve, signals};

use crate::cli::RequireTls;
use crate::conn::{self, Context, End, TimedRead};
use crate::maillog::{self, Ending, Event};
use crate::message::Delivery;
use crate::privsep;
use crate::recipients::{RcptPolicy, Recipients};
use crate::smtp::session;
use crate::smtp::{Session, Submitter};
use crate::tls::{Tls, TlsFiles};
use workers::Workers;

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
    /// The longest a session may still need once its reads are shut
    /// after the grace: a delivery (`timeout-data-end`) and the write of
    /// its reply (`timeout-command`). Shutdown waits that long at most.
    pub finish_within: Duration,
    /// Stack of a connection thread; small, so idle clients cost little.
    pub thread_stack: usize,
}

impl ServerLimits {
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
    /// STARTTLS, offered to TCP clients, and where it is required.
    tls: Option<Arc<Tls>>,
    tls_files: Option<TlsFiles>,
    require_tls: Vec<RequireTls>,
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
            tls: None,
            tls_files: None,
            require_tls: Vec::new(),
        }
    }

    /// The same service offering STARTTLS to TCP clients (`inetd` and
    /// `serve`; never on the local socket, where there is nothing to
    /// protect).
    /// `files` are where the certificate and key were read from: once
    /// privileges are separated, the delivery process reads them again on
    /// SIGHUP.
    pub fn with_tls(mut self, tls: Tls, files: TlsFiles, require: Vec<RequireTls>) -> Self {
        self.tls = Some(Arc::new(tls));
        self.tls_files = Some(files);
        self.require_tls = require;
        self
    }

    /// STARTTLS, if offered.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_deref()
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
    /// looks users up in this service's user database, and runs the queue
    /// every `queue_runner` at most if given (the daemon; not inetd's
    /// one session). Call while single-threaded.
    pub fn separate(
        mut self,
        user: &str,
        uid: u32,
        gid: u32,
        inherited: &[std::os::fd::RawFd],
        queue_runner: Option<Duration>,
    ) -> io::Result<Self> {
        let recipients = self.rcpt.recipients.clone();
        let lookup = move |name: &str| recipients.user(name).ok().flatten();
        let mut limits = self.delivery_limits();
        // Once per process (`separate` runs once): the delivery process
        // keeps these for its life.
        limits.tls_files = self.tls_files.clone().map(|f| &*Box::leak(Box::new(f)));
        let delivery = self.rcpt.delivery.clone();
        let process = privsep::split(
            delivery,
            Arc::new(lookup),
            limits,
            user,
            uid,
            gid,
            inherited,
            queue_runner,
        )?;
        if let Some(tls) = &self.tls {
            let asked = process.clone();
            tls.set_source(Box::new(move || asked.tls_files()));
        }
        self.rcpt.delivery = process;
        Ok(self)
    }

    /// Delivery, shared: for the queue runner of a process that delivers
    /// itself (not separated).
    pub fn shared_delivery(&self) -> Arc<dyn Delivery> {
        self.rcpt.delivery.clone()
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
    /// Only a TCP client (`peer`) is offered STARTTLS.
    pub fn run_session<R: TimedRead, W: io::Write + Send>(
        &self,
        reader: R,
        writer: W,
        peer: Option<IpAddr>,
    ) {
        self.run(reader, writer, peer, None, None)
    }

    /// Runs the session of a TCP client `peer` that connected to `local`
    /// (which says whether TLS is required).
    pub fn run_tcp_session<R: TimedRead, W: io::Write + Send>(
        &self,
        reader: R,
        writer: W,
        peer: IpAddr,
        local: Option<SocketAddr>,
    ) {
        self.run(reader, writer, Some(peer), None, local)
    }

    /// Runs a local submission session for `submitter`.
    pub fn run_local_session<R: TimedRead, W: io::Write + Send>(
        &self,
        reader: R,
        writer: W,
        submitter: Submitter,
    ) {
        self.run(reader, writer, None, Some(submitter), None)
    }

    fn run<R: TimedRead, W: io::Write + Send>(
        &self,
        reader: R,
        writer: W,
        peer: Option<IpAddr>,
        submitter: Option<Submitter>,
        local: Option<SocketAddr>,
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
        let mut cfg = self.session.clone();
        let tls = self.tls.as_deref().filter(|_| peer.is_some());
        cfg.starttls = tls.is_some();
        cfg.require_tls = local.is_some_and(|l| self.require_tls.iter().any(|r| r.covers(l)));
        let mut session = Session::new(cfg, id.clone(), peer);
        if let Some(s) = submitter {
            session = session.with_submitter(s);
        }
        let cx = Context {
            limits: &self.conn,
            tls,
            policy: &self.rcpt,
            deliverer: self.delivery(),
            stopping: &self.stopping,
        };
        let end = conn::run(conn::Duplex { reader, writer }, session, &cx);
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

#[cfg(test)]
mod tests {
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
}
