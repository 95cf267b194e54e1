//! The delivery process's side: it keeps root, and treats every request
//! from the SMTP side as hostile input.
//!
//! [`serve_delivery`] takes channels from the control socket and serves
//! each on a thread of its own, at most [`Limits::max_channels`] at once (a
//! channel past that is closed at once: the SMTP side answers that request
//! 4xx). On a channel, [`handle`] reads a request ([`super::wire`] checks
//! versions, kinds, lengths, names and addresses), looks every user it
//! names up again in its own user database, enforces the limits of the
//! configuration itself ([`Limits`]: the SMTP side enforces the same ones,
//! a forged one would not), and checks that the descriptor is a regular
//! file of the declared size. A bad request gets a refusal and harms
//! nothing.
//!
//! The message must not change while it is delivered: it is read once to
//! size the append (recorded in the journal), then once per mailbox.
//! * A message held in memory (at most `--spill-threshold` octets) is
//!   copied into a memfd that the SMTP side seals (`F_SEAL_SHRINK`,
//!   `F_SEAL_GROW`, `F_SEAL_WRITE`, then `F_SEAL_SEAL`) before it sends
//!   it. The delivery process refuses any other descriptor for such a
//!   message: a memfd without those seals, one that cannot be sealed, a
//!   file.
//! * A larger message, which the SMTP side spilled to an unnamed
//!   temporary file, is passed as that file, not copied: copying it into
//!   a memfd would cost a copy of every large message and hold it all in
//!   memory (the reason it was spilled). Such a file cannot be sealed, and
//!   the SMTP side could still write to it; so [`FdMessage`] reads it with
//!   positional reads of exactly the declared length, a read that ends
//!   short (the file shortened) is an error, and an append whose length is
//!   not the one recorded fails ([`crate::deliver`]). Either way the whole
//!   transaction is rolled back and the client gets `451`: nothing is ever
//!   half-written. What such a file can still do, change bytes in place,
//!   gives the SMTP side nothing it could not have sent as the message.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::wire::{Request, Response, decode_request, encode_response, recv_frame, send_frame};
use super::{Limits, UserLookup, VERSION};
use crate::message::{Delivery, FileReader, MessageSource};
use crate::smtp::Outcome;
use crate::users::{User, plausible_user_name};

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
    let open = Arc::new(AtomicUsize::new(0));
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
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(n: &Arc<AtomicUsize>) -> Self {
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
    let carried_out = (|| -> Result<Response, String> {
        match decode_request(payload)? {
            Request::Check { user } => {
                if fd.is_some() {
                    return Err("unexpected descriptor".into());
                }
                let user = known_user(&user, lookup)?;
                Ok(match delivery.check_mailbox(&user) {
                    Ok(()) => Response::Ok,
                    // The wire carries the text; the SMTP side only logs it.
                    Err(why) => Response::Unavailable(why.to_string()),
                })
            }
            Request::TlsFiles => {
                if fd.is_some() {
                    return Err("unexpected descriptor".into());
                }
                let files = limits.tls_files.ok_or("no TLS files configured")?;
                Ok(match files.read() {
                    Ok(pem) => Response::Pem(pem),
                    Err(e) => Response::Unavailable(e.to_string()),
                })
            }
            Request::Deliver { env, len } => {
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
        }
    })();
    carried_out.unwrap_or_else(Response::Bad)
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
pub(super) fn required_seals() -> nix::fcntl::SealFlag {
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::super::testutil::{LIMITS, Recorder, envelope, lookup, memfd, memfd_sealed, start};
    use super::super::wire::{
        KIND_CHECK, decode_response, encode_check, encode_deliver, encode_tls_files, send_raw,
    };
    use super::*;
    use crate::message::Delivery;
    use crate::smtp::Outcome;
    use std::sync::Mutex;

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
        // A program or a file by the queue's key (postie 8): the SMTP side
        // never names one; only the delivery process's own expansion does.
        let mut program = envelope();
        program.recipients[0].users = vec!["prog:jon:/bin/sh -c 'cp /bin/sh /tmp/x'".into()];
        let mut file = envelope();
        file.recipients[0].users = vec!["file:jon:/home/jon/.ssh/authorized_keys".into()];
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
            ("fd on check", encode_check("jon"), Some(memfd(b""))),
            (
                "program key",
                encode_deliver(&program, 3),
                Some(memfd(b"abc")),
            ),
            ("file key", encode_deliver(&file, 3), Some(memfd(b"abc"))),
            // No TLS files configured: nothing to read.
            ("tls without files", encode_tls_files(), None),
            (
                "tls with trailing",
                [encode_tls_files(), vec![0]].concat(),
                None,
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
            tls_files: None,
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
            send_frame(c, &encode_check("jon"), None).ok()?;
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

    /// The TLS files a request reads are those of the configuration, never
    /// named by the request; a descriptor with it is refused; a file that
    /// cannot be read is said, not a failure of the channel.
    #[test]
    fn tls_files_come_from_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::tls::TlsFiles {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
        };
        std::fs::write(&files.cert, "CERT").unwrap();
        std::fs::write(&files.key, "KEY").unwrap();
        let files: &'static crate::tls::TlsFiles = Box::leak(Box::new(files));
        let limits = Limits {
            tls_files: Some(files),
            ..LIMITS
        };
        let rec = Recorder {
            delivered: Mutex::new(Vec::new()),
            checks: AtomicUsize::new(0),
        };
        match handle(&encode_tls_files(), None, &rec, &lookup, &limits) {
            Response::Pem(pem) => {
                assert_eq!((&pem.cert[..], &pem.key[..]), (&b"CERT"[..], &b"KEY"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            handle(
                &encode_tls_files(),
                Some(memfd(b"")),
                &rec,
                &lookup,
                &limits
            ),
            Response::Bad(_)
        ));
        std::fs::remove_file(&files.key).unwrap();
        assert!(matches!(
            handle(&encode_tls_files(), None, &rec, &lookup, &limits),
            Response::Unavailable(_)
        ));
    }
}
