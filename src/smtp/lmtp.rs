//! LMTP (RFC 2033) after the final dot, as pure code: one reply for each
//! accepted recipient, in RCPT order (4.2), so that a failure is that
//! recipient's alone. Everything before the dot is the SMTP session's
//! ([`super::session`], with `Config::lmtp`: LHLO instead of HELO/EHLO,
//! 503 for DATA without a recipient).
//!
//! Each recipient's copy is delivered as a transaction of its own (an
//! envelope with that one recipient, through the same delivery boundary
//! as SMTP's): a busy or refused mailbox fails its recipient only, where
//! SMTP's one transaction would defer them all. A recipient given again
//! with the same forward-path gets the earlier one's reply, as RFC 2033
//! asks ("one reply for each successful RCPT command"), and the mailbox
//! one copy.

use super::address::Mailbox;
use super::envelope::{Envelope, Outcome};
use super::reply::Reply;
use super::session::Session;

/// One accepted recipient's part of an LMTP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Delivered as a transaction of its own, with this envelope (the
    /// message's, with this one recipient).
    Deliver(Box<Envelope>),
    /// The same forward-path as the recipient at this earlier index: its
    /// reply again, and no second copy.
    Again(usize),
}

/// The shares of `env`, one per accepted recipient, in RCPT order.
pub fn shares(env: &Envelope) -> Vec<Share> {
    let mut out = Vec::with_capacity(env.recipients.len());
    for (i, r) in env.recipients.iter().enumerate() {
        let earlier = env.recipients[..i]
            .iter()
            .position(|e| same_path(&e.path, &r.path) && e.users == r.users);
        out.push(match earlier {
            Some(j) => Share::Again(j),
            None => Share::Deliver(Box::new(Envelope {
                recipients: vec![r.clone()],
                ..env.clone()
            })),
        });
    }
    out
}

/// Local parts are looked up case-insensitively, domains are
/// case-insensitive: `Jon@X` and `jon@x` are one mailbox.
fn same_path(a: &Mailbox, b: &Mailbox) -> bool {
    a.to_string().eq_ignore_ascii_case(&b.to_string())
}

/// Delivers each share of `env` with `deliver` and hands each reply to
/// `emit` as soon as it is known: one per accepted recipient in RCPT
/// order, each naming its recipient. The MTA in front sees each
/// recipient's reply when its delivery is over, not when the last one is
/// (RFC 2033 4.2 allows either). An error from `emit` (the client gone)
/// stops there: the recipients not yet answered are not delivered, and
/// the MTA retries them.
pub fn deliver_each<E>(
    session: &mut Session,
    env: &Envelope,
    mut deliver: impl FnMut(&Envelope) -> Outcome,
    mut emit: impl FnMut(Reply) -> Result<(), E>,
) -> Result<(), E> {
    let mut replies: Vec<Reply> = Vec::with_capacity(env.recipients.len());
    for share in shares(env) {
        let r = match share {
            Share::Deliver(one) => {
                let outcome = deliver(&one);
                naming(session.delivered(&one, outcome), &one.recipients[0].path)
            }
            Share::Again(j) => replies[j].clone(),
        };
        replies.push(r.clone());
        emit(r)?;
    }
    Ok(())
}

/// `r` with the recipient it is about before its text, as Dovecot's LMTP
/// says it: the MTA in front logs each recipient's reply.
fn naming(mut r: Reply, rcpt: &Mailbox) -> Reply {
    if let Some(first) = r.lines.first_mut() {
        *first = format!("<{rcpt}> {first}").into();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::ReversePath;
    use crate::smtp::envelope::{Recipient, TempReason, Via};
    use crate::smtp::session::Config;

    fn rcpt(local: &str, user: &str) -> Recipient {
        Recipient {
            path: Mailbox {
                local: local.into(),
                domain: Some("lmtp.test".into()),
            },
            users: vec![user.into()],
            notify: None,
            orcpt: None,
        }
    }

    fn envelope(rcpts: Vec<Recipient>) -> Envelope {
        Envelope {
            id: "S1.1".into(),
            helo: "mx.example".into(),
            via: Via {
                esmtp: true,
                lmtp: true,
                ..Via::default()
            },
            peer: None,
            sender: ReversePath::Null,
            recipients: rcpts,
            body: None,
            size: 10,
            submitter: None,
            ret: None,
            envid: None,
        }
    }

    fn session() -> Session {
        let cfg = Config {
            hostname: "razorback".into(),
            max_size: 1000,
            max_recipients: 10,
            max_errors: 10,
            lmtp: true,
            starttls: false,
            require_tls: false,
        };
        Session::new(cfg, "S1", None)
    }

    /// Each recipient is delivered alone, in RCPT order, and gets the
    /// reply of its own delivery, naming it; a repeated forward-path (in
    /// any case) gets the first one's reply and no second delivery.
    #[test]
    fn one_delivery_and_one_reply_per_recipient_in_order() {
        let env = envelope(vec![
            rcpt("jon", "jon"),
            rcpt("alice", "alice"),
            rcpt("JON", "jon"),
            rcpt("bob", "bob"),
        ]);
        let mut tried = Vec::new();
        let mut replies = Vec::new();
        let mut emitted_after = Vec::new();
        let delivered = std::cell::Cell::new(0);
        let result: Result<(), ()> = deliver_each(
            &mut session(),
            &env,
            |one| {
                delivered.set(delivered.get() + 1);
                assert_eq!(one.recipients.len(), 1);
                assert_eq!((&one.id, one.size, &one.via), (&env.id, env.size, &env.via));
                let user = one.recipients[0].users[0].clone();
                tried.push(user.clone());
                match user.as_str() {
                    "alice" => Outcome::Temporary(TempReason::LockTimeout),
                    _ => Outcome::Delivered,
                }
            },
            |r| {
                // Each reply goes out before the next delivery starts.
                emitted_after.push(delivered.get());
                replies.push(r);
                Ok(())
            },
        );
        assert_eq!(result, Ok(()));
        assert_eq!(tried, ["jon", "alice", "bob"]);
        assert_eq!(emitted_after, [1, 2, 2, 3]);
        let got: Vec<(u16, Option<&str>)> = replies.iter().map(|r| (r.code, r.enhanced)).collect();
        assert_eq!(
            got,
            [
                (250, Some("2.0.0")),
                (451, Some("4.2.0")),
                (250, Some("2.0.0")),
                (250, Some("2.0.0"))
            ]
        );
        assert!(replies[0].lines[0].starts_with("<jon@lmtp.test> "));
        assert!(replies[1].lines[0].starts_with("<alice@lmtp.test> "));
        assert!(replies[2].lines[0].starts_with("<jon@lmtp.test> "));
        assert!(replies[3].lines[0].starts_with("<bob@lmtp.test> "));
    }

    /// The same address reaching other users (it cannot, but the
    /// aliases file may change between two RCPTs) is delivered again.
    #[test]
    fn a_repeated_path_with_other_users_is_delivered_again() {
        let env = envelope(vec![rcpt("jon", "jon"), rcpt("jon", "alice")]);
        let s = shares(&env);
        assert!(matches!(s[..], [Share::Deliver(_), Share::Deliver(_)]));
    }

    /// The client gone (a reply that cannot be sent): no more deliveries;
    /// the MTA retries the recipients it got no reply for.
    #[test]
    fn a_reply_that_cannot_be_sent_stops_the_deliveries() {
        let env = envelope(vec![
            rcpt("jon", "jon"),
            rcpt("alice", "alice"),
            rcpt("bob", "bob"),
        ]);
        let mut tried = 0;
        let result = deliver_each(
            &mut session(),
            &env,
            |_| {
                tried += 1;
                Outcome::Delivered
            },
            |_| Err("gone"),
        );
        assert_eq!(result, Err("gone"));
        assert_eq!(tried, 1);
    }
}
