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

/// How a message came, for the `with` clause of `Received:` (RFC 5321
/// 4.4; RFC 3848 adds the `S` of TLS, RFC 6531 3.7.3 the `UTF8` prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Via {
    /// After EHLO (or LHLO), not HELO.
    pub esmtp: bool,
    /// Over LMTP (RFC 2033).
    pub lmtp: bool,
    /// MAIL carried the SMTPUTF8 parameter (RFC 6531).
    pub utf8: bool,
    /// Over TLS: the protocol version and cipher suite, as said in the
    /// `Received:` comment (printable ASCII).
    pub tls: Option<String>,
}

impl Via {
    /// The protocol keyword: `SMTP`, `ESMTP`, `LMTP`, `UTF8SMTP`,
    /// `UTF8LMTP`, each with `S` after it over TLS (`ESMTPS`; never after
    /// plain `SMTP`: STARTTLS needs EHLO).
    pub fn keyword(&self) -> String {
        let base = match (self.lmtp, self.utf8, self.esmtp) {
            (true, true, _) => "UTF8LMTP",
            (true, false, _) => "LMTP",
            (false, true, _) => "UTF8SMTP",
            (false, false, true) => "ESMTP",
            (false, false, false) => return "SMTP".into(),
        };
        let tls = if self.tls.is_some() { "S" } else { "" };
        format!("{base}{tls}")
    }
}

/// Everything known about a message except its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `SESSION.N`: unique per message, in the reply and the mail log.
    pub id: String,
    /// The HELO/EHLO argument as sent (printable ASCII only).
    pub helo: String,
    /// How it came: EHLO or HELO, LMTP, SMTPUTF8, TLS.
    pub via: Via,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_keywords_of_rfc_3848_and_6531() {
        let via = |esmtp, lmtp, utf8, tls: bool| Via {
            esmtp,
            lmtp,
            utf8,
            tls: tls.then(|| "TLSv1.3 TLS13_AES_128_GCM_SHA256".to_string()),
        };
        for (v, want) in [
            (via(false, false, false, false), "SMTP"),
            (via(true, false, false, false), "ESMTP"),
            (via(true, false, false, true), "ESMTPS"),
            (via(true, true, false, false), "LMTP"),
            (via(true, true, false, true), "LMTPS"),
            (via(true, false, true, false), "UTF8SMTP"),
            (via(true, false, true, true), "UTF8SMTPS"),
            (via(true, true, true, false), "UTF8LMTP"),
            (via(true, true, true, true), "UTF8LMTPS"),
        ] {
            assert_eq!(v.keyword(), want, "{v:?}");
        }
    }
}
