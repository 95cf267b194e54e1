//! postie: a small Mail Transfer Agent for local delivery on Unix hosts.
//!
//! postie accepts mail over SMTP (RFC 5321) for the users of the host and
//! appends each message to the recipient's mbox file in the mail spool, with
//! the locking and format that classic Unix mail programs share. It has no
//! outbound relay: before the client is told `250`, a message is in every
//! recipient's mailbox, on disk, or a durable [`queue`] entry made in the
//! same transaction holds it for those whose mailbox could not take it at
//! once.
//!
//! Data flows one way, left to right; a module calls only modules to its
//! right or below it (`tests/structure.rs` fails on any import cycle):
//!
//! ```text
//!  SMTP side (the unprivileged user when started as root)
//!  ───────────────────────────────────────────────────────────────────────
//!  listen ─► server ─► conn ─► smtp::Session ─► message::Delivery
//!  sockets:  accept,   the     pure protocol:   deliver(envelope, message)
//!  TCP,      caps,     stream, commands, state, -> Outcome; check_mailbox
//!  inetd,    workers,  DATA    typed replies         │
//!  systemd,  signals   into a      │ RCPT            │ (same process when
//!  the local           message::   ▼                 │  not root)
//!  socket              MessageBuf  recipients::RcptPolicy
//!                                  recipients ─► aliases ─► users, domains
//!  ════════════════════════ privsep ═════════│═══════════════════════════
//!  a socketpair per session; the message as a sealed memfd; every request
//!  checked as hostile                        ▼
//!  delivery process (root; fsuid = the recipient for each file operation)
//!  ───────────────────────────────────────────────────────────────────────
//!  deliver::Deliverer::deliver ─► deliver::Transaction over deliver::Target
//!    intend ─► lock_all ─► append_all ─► commit | rollback  (Drop: the net)
//!      │           │            │
//!      ▼           ▼            ▼
//!  journal      mbox::lock   mbox::format, mbox::mailbox
//!  intent on    fcntl, dot-  From_ line and quoting; the safe open,
//!  disk first;  lock, flock  append, fsync, truncate back
//!  journal::recover: undoes a dead process's delivery (at start, at
//!  exit, and on a dotlock without its fcntl lock), entered only through
//!  deliver::Deliverer::recover_spool
//! ```
//!
//! Beside the flow: [`maillog`] makes every mail-log line from a typed
//! event and writes it to syslog or stderr; [`config`] and [`cli`] build
//! the pieces from the configuration file and the command line;
//! [`queue`] is the queue's entries, store and retry schedule, and
//! [`dsn`] writes delivery status notifications; [`dest`] names where a
//! copy goes (a mailbox, a file, a program, and as whom) in the queue;
//! [`sendmail`] is the `sendmail(8)` interface (a client of the local
//! socket, or the same delivery in-process); [`check`] is `postie check`;
//! [`queue_tool`] is `postie queue` (show, run, flush, delete), and
//! [`queue_runner`] the daemon's thread that runs the queue;
//! [`exit`] holds the sysexits codes; [`forward`] reads `~/.forward` and
//! `:include:` files and says whether they may be trusted (postie 8);
//! [`tls`] is STARTTLS: the certificate and key, their reload, and the
//! handshake after which [`conn`] reads and writes through TLS (postie 9).
//!
//! Nothing in [`smtp`] touches a socket, a file or the clock; they are handed
//! in. [`sys`] is the only module with `unsafe` code (`#![deny(unsafe_code)]`
//! everywhere else).

#![deny(unsafe_code)]

pub mod aliases;
pub mod check;
pub mod cli;
pub mod config;
pub mod conn;
pub mod deliver;
pub mod dest;
pub mod domains;
pub mod dsn;
pub mod exit;
pub mod forward;
pub mod journal;
pub mod listen;
pub mod maillog;
pub mod mbox;
pub mod message;
pub mod privsep;
pub mod queue;
pub mod queue_runner;
pub mod queue_tool;
pub mod recipients;
pub mod sendmail;
pub mod server;
pub mod smtp;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod users;
