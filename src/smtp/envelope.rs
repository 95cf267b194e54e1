//! What a finished SMTP transaction hands to delivery, and what delivery
//! answers: the [`Envelope`] (everything known about a message except its
//! content) and the [`Outcome`].
//!
//! Kept apart from the session that fills them in: delivery and the
//! privilege separation wire name the message and its outcome, not the
//! protocol's state machine.

use std::net::IpAddr;

use super::address::{Mailbox, ReversePath};
use super::command::Body;
use super::dsn_params::{Notify, Ret};

/// Why a delivery must be retried later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempReason {
    /// A mailbox lock was not obtained in time: `451 4.2.0`.
    LockTimeout,
    /// The disk is full: `452 4.3.1`.
    NoSpace,
    /// A mailbox is over quota: `452 4.2.2`.
    Quota,
    /// A recipient lookup failed: `451 4.3.0`.
    LookupFailed,
    /// Any other local problem: `451 4.3.0`.
    Local,
}

/// The result of delivering one message to all of its recipients: all or
/// nothing, so one outcome for the whole transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Temporary(TempReason),
}

/// The local user who submitted a message over postie's Unix socket, as
/// the kernel reported it (SO_PEERCRED), not as the client claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    pub uid: u32,
    pub user: String,
}

/// One accepted recipient: the address as the client gave it, the local
/// users whose mailboxes receive it, and what its DSN parameters asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub path: Mailbox,
    pub users: Vec<String>,
    /// RFC 3461 NOTIFY, if given.
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT as given (`addr-type;xtext`), checked by
    /// [`super::dsn_params::Orcpt::parse`].
    pub orcpt: Option<String>,
}

/// Everything known about a message except its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `SESSION.N`: unique per message, in the reply and the mail log.
    pub id: String,
    /// The HELO/EHLO argument as sent (printable ASCII only).
    pub helo: String,
    /// True after EHLO: `Received: ... with ESMTP`.
    pub esmtp: bool,
    pub peer: Option<IpAddr>,
    pub sender: ReversePath,
    pub recipients: Vec<Recipient>,
    pub body: Option<Body>,
    /// The message size in octets as received.
    pub size: u64,
    /// Who submitted it, for a local submission.
    pub submitter: Option<Submitter>,
    /// RFC 3461 RET, if given.
    pub ret: Option<Ret>,
    /// RFC 3461 ENVID as given (xtext), checked by
    /// [`super::dsn_params::EnvId::parse`].
    pub envid: Option<String>,
}
