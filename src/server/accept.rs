//! The accept loop: the listeners and a signalfd polled by the main
//! thread ([`serve`]), SIGHUP (reload the aliases and the TLS certificate) and SIGTSTP (stop with no
//! mailbox locked) handled between accepts, and after SIGTERM or SIGINT the
//! shutdown grace ([`drain`]).

use std::io;
use std::net::{Shutdown, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::Service;
use super::admit::{Peer, admit, local_peer};
use super::caps::{Connections, lock};

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
                        if let Some(tls) = service.tls() {
                            let err = tls.reload().err();
                            crate::maillog::Event::TlsReloaded {
                                err: err.as_deref(),
                            }
                            .log();
                        }
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
    drain(
        &conns,
        service.server.shutdown_grace,
        service.server.finish_within,
    );
    Ok(())
}

/// Waits for the sessions to end, for up to `grace`; then shuts their
/// streams for reading (a blocked read returns end-of-file) and waits for
/// the sessions still there: each is in a delivery, or writing its reply,
/// which must reach the client before the process exits (a delivery
/// done and not told is delivered twice, as the client tries again), for
/// up to `finish` ([`ServerLimits::finish_within`](super::ServerLimits)).
fn drain(conns: &Mutex<Connections>, grace: Duration, finish: Duration) {
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
        wait(finish);
    }
}
