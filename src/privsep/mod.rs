//! Privilege separation: the process that speaks SMTP runs unprivileged;
//! a small delivery process keeps the privilege that mailbox writes need.
//!
//! Started as root, postie binds (or receives) its sockets, then forks
//! ([`split`]). The child is the delivery process: it keeps root, closes
//! every listening socket, and serves requests on a socketpair; the parent
//! drops to an unprivileged user (`_postie` by default: no supplementary
//! groups, no capabilities) and runs the SMTP server, asking the child for
//! the two things that need privilege: the RCPT-time check of a mailbox,
//! and the delivery itself.
//!
//! The delivery process of a daemon also runs the queue, on a thread of
//! its own ([`crate::queue_runner`]): the queue is its own, and the SMTP
//! side can neither read nor write it.
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
//! The parts, in the order a request meets them:
//! * [`smtp_side`]: [`DeliveryProcess`], the SMTP side's handle, which
//!   implements [`Delivery`] by asking the delivery process.
//! * [`wire`]: the versioned, length-prefixed protocol; frames with an
//!   attached descriptor, and the pure encoding and decoding of requests
//!   and responses, every field checked as it is read.
//! * [`serve`]: the delivery process's loop and what it does with each
//!   request, and why the message cannot change under a delivery
//!   ([`FdMessage`]).
//!
//! This file holds what both sides share: [`split`], which makes them, and
//! [`Limits`].

pub mod serve;
pub mod smtp_side;
pub mod wire;

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

pub use serve::FdMessage;
use serve::serve_delivery;
pub use smtp_side::DeliveryProcess;
pub use wire::VERSION;

use crate::message::Delivery;
use crate::sys;
use crate::tls::TlsFiles;
use crate::users::User;

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
    /// temporary file (see [`serve`]).
    pub spill_threshold: u64,
    /// Channels served at once, each on a thread of its own.
    pub max_channels: usize,
    /// The TLS certificate and key files, which the delivery process
    /// reads for the SMTP side on SIGHUP (it may not read them itself).
    /// The only files a request may have read: named here, at start, not
    /// by the request. (`'static`: made once per process, and `Limits`
    /// stays `Copy`.)
    pub tls_files: Option<&'static TlsFiles>,
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
            tls_files: None,
        }
    }
}

/// Splits the process (see the module documentation). The child, the
/// delivery process, serves `delivery` within `limits`, finding the users
/// a request names with `lookup`, and never returns. The parent drops to
/// `uid`/`gid` (`user` names them in the log) and returns its view of the
/// child, to deliver through. `inherited` are the descriptors the child
/// must not keep (listening sockets, the client's socket): they are
/// pointed at /dev/null there. With `queue_runner` (the daemon's
/// `--queue-run-interval`), the child runs the queue on a thread of its
/// own ([`crate::queue_runner`]) while it serves. Call while
/// single-threaded.
#[allow(clippy::too_many_arguments)]
pub fn split(
    delivery: Arc<dyn Delivery>,
    lookup: Arc<UserLookup>,
    limits: Limits,
    user: &str,
    uid: u32,
    gid: u32,
    inherited: &[std::os::fd::RawFd],
    queue_runner: Option<std::time::Duration>,
) -> io::Result<Arc<DeliveryProcess>> {
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
            // The queue is the delivery process's: its runner is here, on
            // a thread that has the signals blocked as above.
            let runner = queue_runner.and_then(|interval| {
                crate::queue_runner::Runner::start(delivery.clone(), interval)
                    .map_err(|e| log::error!("delivery process: no queue runner: {e}"))
                    .ok()
            });
            log::info!("delivery process {} serving", std::process::id());
            serve_delivery(delivery_end, delivery.clone(), lookup, limits);
            // The SMTP side is gone: no new run of the queue (one in
            // progress finishes first).
            drop(runner);
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
            let process = DeliveryProcess::watching(smtp_end, child)?;
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

#[cfg(test)]
mod testutil;
