//! The SMTP side's handle on the delivery process: [`DeliveryProcess`]
//! implements [`Delivery`] by asking it, over the wire of
//! [`super::wire`], for the two things that need privilege: the RCPT-time
//! check of a mailbox, and the delivery itself.
//!
//! It opens one stream socketpair per concurrent request and hands one end
//! to the delivery process over the control socket (SCM_RIGHTS); a channel
//! is kept, idle, for the next request once answered. A message goes
//! as a descriptor: a sealed memfd copy, or the file it was spilled to
//! ([`MessageSource::transfer_fd`]; see [`super::serve`] for why). A pass
//! of the mailbox check is remembered for a second ([`CHECK_STANDS`]). At
//! the end, [`Delivery::close`] lets go of the delivery process and waits
//! until it has finished and been reaped.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::wire::{
    Response, VERSION, decode_response, encode_check, encode_deliver, encode_tls_files, recv_frame,
    send_frame,
};
use crate::maillog::Event;
use crate::message::{Delivery, MailboxRefused, MessageSource};
use crate::smtp::{Envelope, Outcome, TempReason};
use crate::tls::Pem;
use crate::users::User;

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
    child: Option<(Pid, Arc<Reaped>)>,
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

    /// The handle on the delivery process `child`, over `control`, with a
    /// thread that waits for the child to end. Without its delivery
    /// process the SMTP side could only answer 4xx: this process exits
    /// then, so that the service manager (or inetd, at the next
    /// connection) starts a whole postie again. When this side is closing,
    /// the delivery process ending is expected, and
    /// [`DeliveryProcess::close`] waits for it.
    pub(super) fn watching(control: UnixStream, child: Pid) -> io::Result<Self> {
        let mut process = DeliveryProcess::new(control);
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
        Ok(process)
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

impl DeliveryProcess {
    /// The TLS certificate and key, read by the delivery process (SIGHUP:
    /// this side may not read the key file).
    pub fn tls_files(&self) -> io::Result<Pem> {
        match decode_response(&self.call(&encode_tls_files(), None)?)? {
            Response::Pem(pem) => Ok(pem),
            Response::Unavailable(why) => Err(io::Error::other(why)),
            other => Err(io::Error::other(format!(
                "the delivery process answered {other:?}"
            ))),
        }
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

    fn check_mailbox(&self, user: &User) -> Result<(), MailboxRefused> {
        let fresh = self
            .passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user.name)
            .is_some_and(|t| t.elapsed() < self.check_stands);
        if fresh {
            return Ok(());
        }
        let req = encode_check(&user.name);
        match self.call(&req, None).and_then(|r| decode_response(&r)) {
            Ok(Response::Ok) => {
                let mut p = self.passed.lock().unwrap_or_else(|p| p.into_inner());
                if p.len() >= PASSED_MAX {
                    p.clear();
                }
                p.insert(user.name.clone(), Instant::now());
                Ok(())
            }
            Ok(Response::Unavailable(why)) => Err(MailboxRefused::Reported(why)),
            Ok(other) => Err(MailboxRefused::UnexpectedAnswer(format!("{other:?}"))),
            Err(e) => Err(MailboxRefused::NoAnswer(e)),
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

impl Drop for DeliveryProcess {
    fn drop(&mut self) {
        // Runs before the sockets close (fields drop after this).
        self.closing.store(true, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::super::testutil::{envelope, lookup, start};
    use super::*;
    use crate::message::Delivery;
    use crate::smtp::Outcome;

    /// The check, its refusal as the mail log would say it.
    fn checked(process: &DeliveryProcess, user: &User) -> Result<(), String> {
        process.check_mailbox(user).map_err(|e| e.to_string())
    }

    #[test]
    fn a_passed_mailbox_check_stands_a_while_a_failed_one_does_not() {
        let (mut process, rec, _raw) = start();
        process.check_stands = Duration::from_millis(300);
        let checks = || rec.checks.load(Ordering::SeqCst);
        let jon = lookup("jon").unwrap();
        assert_eq!(checked(&process, &jon), Ok(()));
        assert_eq!(checked(&process, &jon), Ok(()));
        assert_eq!(checks(), 1, "the second check was answered from memory");
        // Another user is asked about.
        assert_eq!(checked(&process, &lookup("alice").unwrap()), Ok(()));
        assert_eq!(checks(), 2);
        // A refusal is never remembered.
        let broken = lookup("broken").unwrap();
        for n in 3..5 {
            assert!(process.check_mailbox(&broken).is_err());
            assert_eq!(checks(), n);
        }
        // Once the pass is old, jon is asked about again.
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(checked(&process, &jon), Ok(()));
        assert_eq!(checks(), 5);
    }

    #[test]
    fn requests_round_trip_through_the_channel() {
        let (process, rec, _raw) = start();
        let mut msg = crate::message::MessageBuf::new(16, std::env::temp_dir());
        msg.write_all(b"Subject: hi\n\nbody spilled to a file\n")
            .unwrap();
        assert_eq!(process.deliver(&envelope(), &msg), Outcome::Delivered);
        assert_eq!(checked(&process, &lookup("jon").unwrap()), Ok(()));
        // The delivery process's refusal arrives as its text.
        let refused = process.check_mailbox(&lookup("broken").unwrap());
        assert!(
            matches!(refused, Err(MailboxRefused::Reported(_))),
            "{refused:?}"
        );
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("/var/mail/broken: refusing to write: broken mailbox".into())
        );
        let got = rec.delivered.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, envelope());
        assert_eq!(got[0].1, b"Subject: hi\n\nbody spilled to a file\n");
    }
}
