//! Admission: an accepted connection, TCP or local ([`Peer`]), is counted
//! against the caps or refused with `421` on the accept loop's thread, and
//! otherwise handed to a session thread, which looks up a local
//! submitter's name (a slow name service must not stall the loop).

use std::net::{IpAddr, Shutdown};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::Service;
use super::caps::{Client, Connections, Slot, client_of};
use crate::conn;
use crate::listen::{self, Socket, WriteHalf};
use crate::maillog::Event;
use crate::smtp::{Submitter, reply};

/// Who is at the other end of an accepted connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Peer {
    /// A TCP client at this address (an IPv4-mapped one as IPv4).
    Tcp(IpAddr),
    /// A local submission by this uid (SO_PEERCRED).
    Local(u32),
    /// A client of `postie lmtp`'s Unix socket, this uid: an MTA that the
    /// socket's mode lets in, not a submitter; capped as a TCP client.
    Lmtp(u32),
}

impl Peer {
    /// Whom the per-client cap counts.
    fn client(self) -> Client {
        match self {
            Peer::Tcp(ip) => client_of(ip),
            Peer::Local(uid) => Client::Uid(uid),
            Peer::Lmtp(uid) => Client::LmtpUid(uid),
        }
    }
}

/// The uid of a local submitter (SO_PEERCRED), or `None`, logged, when
/// the kernel does not say.
pub(super) fn local_peer(stream: &UnixStream) -> Option<u32> {
    match listen::peer_uid(stream) {
        Ok(uid) => Some(uid),
        Err(e) => {
            Event::NoPeerCredentials { err: &e }.log();
            None
        }
    }
}

/// Admits a connection, TCP or local: counted against the caps, or
/// refused with `421` from this thread (no session thread is started for
/// it); then its session runs on a session thread.
pub(super) fn admit<S: Socket>(
    stream: S,
    peer: Peer,
    service: &Arc<Service>,
    conns: &Arc<Mutex<Connections>>,
) {
    let host = &service.session.hostname;
    // `postie lmtp` has no submission socket: its Unix socket is LMTP's.
    let peer = match peer {
        Peer::Local(uid) if service.session.lmtp => Peer::Lmtp(uid),
        other => other,
    };
    // The socket inherits nothing from the non-blocking listener on Linux,
    // but say so: the session relies on blocking reads with timeouts.
    stream.no_delay();
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let stream = Arc::new(stream);
    let Some(slot) = Slot::take(conns, peer.client(), stream.clone(), &service.server) else {
        match peer {
            Peer::Tcp(ip) => Event::TooManyConnections { ip }.log(),
            Peer::Local(uid) | Peer::Lmtp(uid) => Event::TooManyLocal { uid }.log(),
        }
        refuse(&stream, &reply::too_many_connections(host));
        return;
    };
    let svc = service.clone();
    let s2 = stream.clone();
    let spawned = service.workers.run(Box::new(move || {
        let _slot = slot;
        let _ = s2.set_write_timeout(Some(svc.conn.command_timeout));
        run_admitted(s2, peer, &svc);
    }));
    if let Err(e) = spawned {
        // The closure (and its slot) was dropped: the counts are right.
        match peer {
            Peer::Tcp(ip) => Event::NoThread { ip, err: &e }.log(),
            Peer::Local(_) | Peer::Lmtp(_) => Event::NoThreadLocal { err: &e }.log(),
        }
        refuse(&stream, &reply::too_many_connections(host));
    }
}

/// The session of an admitted connection, on its session thread.
fn run_admitted<S: Socket>(stream: Arc<S>, peer: Peer, svc: &Service) {
    // Where it came in only matters to `require-tls`: no getsockname
    // per connection otherwise.
    let local = match svc.require_tls.is_empty() {
        true => None,
        false => stream.tcp_local(),
    };
    let (reader, writer) = listen::halves(stream);
    let uid = match peer {
        Peer::Tcp(ip) => return svc.run_tcp_session(reader, writer, ip, local),
        Peer::Lmtp(_) => return svc.run_session(reader, writer, None),
        Peer::Local(uid) => uid,
    };
    // The name, on this thread: a slow name service must not stall the
    // accept loop.
    let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        // A uid without a passwd entry (a container's, say) still
        // submits, under its number.
        Ok(None) => format!("uid{uid}"),
        Err(e) => {
            Event::SubmitterUnknown { uid, err: e }.log();
            conn::refuse(writer, &reply::submitter_unknown());
            return;
        }
    };
    let who = Submitter { uid, user };
    svc.run_local_session(reader, writer, who);
}

/// Answers without waiting, and closes: the socket buffer of a fresh
/// connection has room for one line, and a client that does not read
/// gets nothing.
fn refuse<S: Socket>(stream: &Arc<S>, r: &reply::Reply) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let _ = fcntl(&**stream, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    conn::refuse(WriteHalf(stream.clone()), r);
    let _ = stream.shutdown(Shutdown::Both);
}
