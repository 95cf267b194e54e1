//! Fixtures the tests of the three parts share: a delivery agent that
//! records what it is asked, a user database of three users, an envelope,
//! a delivery process served on a thread, and sealed memfds.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::serve::required_seals;
use super::{DeliveryProcess, Limits, serve_delivery};
use crate::mbox::MboxError;
use crate::message::{Delivery, MailboxRefused, MessageSource};
use crate::smtp::command::Body;
use crate::smtp::{Envelope, Mailbox, Outcome, Recipient, ReversePath, Submitter};
use crate::users::User;

/// A delivery agent that records what it is asked.
pub(super) struct Recorder {
    pub(super) delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
    pub(super) checks: AtomicUsize,
}

impl Delivery for Recorder {
    fn deliver(&self, env: &Envelope, message: &dyn MessageSource) -> Outcome {
        let mut body = Vec::new();
        message.reader().unwrap().read_to_end(&mut body).unwrap();
        self.delivered.lock().unwrap().push((env.clone(), body));
        Outcome::Delivered
    }
    fn check_mailbox(&self, user: &User) -> Result<(), MailboxRefused> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if user.name == "broken" {
            Err(MailboxRefused::Mbox {
                path: "/var/mail/broken".into(),
                err: MboxError::Unsafe("broken mailbox".into()),
            })
        } else {
            Ok(())
        }
    }
}

pub(super) fn lookup(name: &str) -> Option<User> {
    ["jon", "alice", "broken"].contains(&name).then(|| User {
        name: name.into(),
        uid: 1000,
        gid: 1000,
        ..Default::default()
    })
}

pub(super) fn envelope() -> Envelope {
    Envelope {
        id: "ABC.1".into(),
        helo: "client.example".into(),
        via: crate::smtp::Via {
            esmtp: true,
            ..Default::default()
        },
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
            notify: None,
            orcpt: None,
        }],
        body: Some(Body::EightBitMime),
        size: 42,
        submitter: Some(Submitter {
            uid: 1000,
            user: "jon".into(),
        }),
        ret: None,
        envid: None,
    }
}

pub(super) fn start() -> (DeliveryProcess, Arc<Recorder>, UnixStream) {
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

pub(super) const LIMITS: Limits = Limits {
    tls_files: None,
    max_size: 10 << 20,
    max_recipients: 100,
    spill_threshold: 16,
    max_channels: 4,
};

/// A memfd holding `bytes`, with `seals` added.
pub(super) fn memfd_sealed(bytes: &[u8], seals: nix::fcntl::SealFlag) -> OwnedFd {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let mut f = File::from(fd);
    f.write_all(bytes).unwrap();
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).unwrap();
    OwnedFd::from(f)
}

/// A memfd holding `bytes`, sealed as the SMTP side seals it.
pub(super) fn memfd(bytes: &[u8]) -> OwnedFd {
    memfd_sealed(bytes, required_seals())
}
