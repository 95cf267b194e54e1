//! Where connections come from: sockets we bind (`--listen`), listening
//! sockets passed by systemd (`LISTEN_FDS`, Accept=no), the local
//! submission socket (`--submit-socket`), or one connection on stdin/stdout
//! (inetd, systemd Accept=yes, `-bs`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, sockopt,
};

use crate::conn::TimedRead;
use crate::sys;

/// Binds a listening socket on each address. An IPv6 address listens on
/// IPv6 only, so that `[::]:25` and `0.0.0.0:25` can both be given.
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            bind_one(*a).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))
        })
        .collect()
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let SocketAddr::V6(v6) = addr else {
        return TcpListener::bind(addr);
    };
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    socket::bind(fd.as_raw_fd(), &socket::SockaddrIn6::from(v6))?;
    socket::listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// The listening sockets systemd passed (`LISTEN_FDS`, only when
/// `LISTEN_PID` is our pid): TCP sockets for SMTP, and at most one Unix
/// stream socket for local submission. Empty when not socket-activated.
pub fn systemd() -> io::Result<(Vec<TcpListener>, Option<UnixListener>)> {
    let fds = sd_notify::listen_fds()?;
    let mut out = Vec::with_capacity(fds.len());
    let mut unix = None;
    for raw in fds {
        let fd = sys::inherited_fd(raw);
        if !socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTEN_FDS: fd {raw} is not a listening socket"),
            ));
        }
        match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())?.family() {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => out.push(TcpListener::from(fd)),
            Some(AddressFamily::Unix) if unix.is_none() => unix = Some(UnixListener::from(fd)),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("LISTEN_FDS: fd {raw} is neither TCP nor the one Unix socket"),
                ));
            }
        }
    }
    Ok((out, unix))
}

/// Listens on the local submission socket at `path`, mode 0666 (any local
/// user may submit; the kernel tells the daemon who they are). A stale
/// socket file left by a previous run, or a symlink, is replaced (the
/// symlink is never followed); a live socket (another daemon answers) or
/// any other file is an error.
///
/// How the mode is set without a race: bind(2) creates the file with mode
/// 0777 & ~umask, and there is no `mode` argument. Setting it afterwards by
/// path (chmod) follows whatever is at the path by then: in a directory
/// another user can write, the socket may have been replaced by a symlink
/// to a file root then makes 0666. fchmod(2) on the socket does not help
/// on Linux: before bind it only changes what the umask is applied to
/// (0666 under umask 022 still gives 0644), after bind it changes the
/// socket's own inode, not the file's. Setting the umask around bind would
/// do, but the umask is per process and other threads may create files
/// meanwhile. So the socket is bound in a fresh directory beside `path`,
/// made by us mode 0700 (nobody else can enter it, so the chmod by path
/// there names our socket), and then renamed over `path`: rename(2) is
/// atomic (clients never find no socket at all, even when a stale one is
/// replaced) and replaces a symlink rather than following it. That holds
/// only where nobody else may rename the fresh directory away (and plant
/// their own with a symlink in it): so the socket's directory must not be
/// writable by others, unless it is sticky (/tmp), where only its owner
/// may rename an entry.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    bind_unix_as(path, 0o666, None)
}

/// [`bind_unix`] with the socket's `mode` and, if given, its group `gid`
/// (changed in the private directory too, before the rename): for `postie
/// lmtp`, whose socket only the MTA in front may reach.
pub fn bind_unix_as(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::metadata(parent)?;
    if dir.mode() & 0o022 != 0 && dir.mode() & 0o1000 == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: others may write this directory (mode {:04o}, not sticky): \
                 the socket's directory must be writable by its owner only",
                parent.display(),
                dir.mode() & 0o7777
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another daemon is listening", path.display()),
                ));
            }
        }
        Ok(m) if m.file_type().is_symlink() => {
            log::warn!("{}: replacing a symbolic link", path.display());
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    // A short name: a socket's path has room for 107 octets only.
    let private = tempfile::Builder::new()
        .prefix(".postie.")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)?;
    let fresh = private.path().join("s");
    let l = UnixListener::bind(&fresh)?;
    if gid.is_some() {
        std::os::unix::fs::chown(&fresh, None, gid)?;
    }
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&fresh, path)?;
    // The socket is in place: an empty directory left behind is no reason
    // to give it up.
    let left = private.path().to_path_buf();
    if let Err(e) = private.close() {
        log::warn!("{}: {e}", left.display());
    }
    Ok(l)
}

/// The kernel's word on who is at the other end of a Unix socket.
pub fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    Ok(socket::getsockopt(s, sockopt::PeerCredentials)?.uid())
}

/// Tells systemd we are serving (`READY=1`); nothing when not under systemd.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("sd_notify READY=1: {e}");
    }
}

/// A connected stream socket, TCP or Unix: what a session's two halves
/// ([`ReadHalf`], [`WriteHalf`]) and the accept loop (which shuts it at
/// the end of the shutdown grace) share. std gives both kinds the same
/// methods, but no trait to be generic over them.
pub trait Socket: AsFd + Send + Sync + 'static {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_some(&self, buf: &[u8]) -> io::Result<usize>;
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// The local address a TCP connection came in on.
    fn tcp_local(&self) -> Option<SocketAddr>;
    /// Sends each write at once (TCP_NODELAY). The session loop writes
    /// its replies in one write per wait for the client, so Nagle's
    /// algorithm has nothing to merge; it only held a reply back until the
    /// client's delayed ACK (40 ms) when the previous write, such as a TLS
    /// 1.3 session ticket, was not yet acknowledged.
    fn no_delay(&self);
}

macro_rules! socket {
    ($t:ty, $local:expr, $no_delay:expr) => {
        impl Socket for $t {
            fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
                Read::read(&mut &*self, buf)
            }
            fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
                Write::write(&mut &*self, buf)
            }
            fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, t)
            }
            fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_write_timeout(self, t)
            }
            fn set_nonblocking(&self, on: bool) -> io::Result<()> {
                <$t>::set_nonblocking(self, on)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$t>::shutdown(self, how)
            }
            fn tcp_local(&self) -> Option<SocketAddr> {
                $local(self)
            }
            fn no_delay(&self) {
                $no_delay(self)
            }
        }
    };
}
socket!(
    TcpStream,
    |s: &TcpStream| s.local_addr().ok(),
    |s: &TcpStream| {
        let _ = s.set_nodelay(true);
    }
);
socket!(UnixStream, |_: &UnixStream| None, |_: &UnixStream| {});

/// The read half of a connection: what the session loop reads, with a
/// read timeout it changes between phases.
pub struct ReadHalf<S: Socket>(pub Arc<S>);
/// The write half of a connection. Unbuffered (the session loop buffers),
/// so `flush` has nothing to do.
pub struct WriteHalf<S: Socket>(pub Arc<S>);

impl<S: Socket> Read for ReadHalf<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_some(buf)
    }
}

impl<S: Socket> TimedRead for ReadHalf<S> {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.0.set_read_timeout(Some(t))
    }
}

impl<S: Socket> Write for WriteHalf<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_some(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Both halves of `socket`.
pub fn halves<S: Socket>(socket: Arc<S>) -> (ReadHalf<S>, WriteHalf<S>) {
    (ReadHalf(socket.clone()), WriteHalf(socket))
}

/// Reads a pipe (or any fd) with a timeout, by polling before each read.
pub struct PollReader {
    fd: std::fs::File,
    timeout: Duration,
}

impl Read for PollReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ms = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        loop {
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
                Ok(_) => return self.fd.read(buf),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl TimedRead for PollReader {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.timeout = t;
        Ok(())
    }
}

/// The connection on stdin/stdout, as inetd and systemd (Accept=yes) hand
/// it over, or as a local `-bs` client's pipes.
pub struct Stdio {
    pub reader: Box<dyn TimedRead>,
    pub writer: Box<dyn Write + Send>,
    /// The client's address, from `getpeername(0)` when stdin is a socket.
    pub peer: Option<IpAddr>,
    /// The address it connected to (`getsockname(0)`).
    pub local: Option<SocketAddr>,
}

/// True when stdin is a socket with a peer (inetd's and systemd's
/// `Accept=yes` TCP connection), not a pipe.
pub fn stdin_is_socket() -> bool {
    socket::getpeername::<SockaddrStorage>(0).is_ok()
}

/// Takes over stdin and stdout for one session. When stdin is a TCP socket
/// it is used for both directions, with socket timeouts.
pub fn stdio() -> io::Result<Stdio> {
    if let Ok(addr) = socket::getpeername::<SockaddrStorage>(0) {
        let peer = sockaddr_ip(&addr);
        let fd: OwnedFd = sys::inherited_fd(0);
        let stream = Arc::new(TcpStream::from(fd));
        stream.no_delay();
        let local = stream.local_addr().ok();
        let (reader, writer) = halves(stream);
        return Ok(Stdio {
            reader: Box::new(reader),
            writer: Box::new(writer),
            peer,
            local,
        });
    }
    let input = std::fs::File::from(sys::inherited_fd(0));
    let output = std::fs::File::from(sys::inherited_fd(1));
    Ok(Stdio {
        reader: Box::new(PollReader {
            fd: input,
            timeout: Duration::from_secs(300),
        }),
        writer: Box::new(output),
        peer: None,
        local: None,
    })
}

fn sockaddr_ip(a: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    a.as_sockaddr_in6().map(|v6| {
        let ip = v6.ip();
        match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(ip),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a directory others may write (and that is not sticky), another
    /// user could rename the fresh directory away between bind and chmod
    /// and plant a symlink in its place: such a directory is refused.
    #[test]
    fn the_socket_directory_must_be_ours_alone_or_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("submit.sock");
        for (mode, ok) in [
            (0o777, false),
            (0o775, false),
            (0o1777, true),
            (0o755, true),
        ] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            match bind_unix(&sock) {
                Ok(l) => {
                    assert!(ok, "mode {mode:o}: bound");
                    drop(l);
                }
                Err(e) => {
                    assert!(!ok, "mode {mode:o}: {e}");
                    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
                    assert!(!sock.exists());
                }
            }
            let _ = std::fs::remove_file(&sock);
        }
    }

    /// `postie lmtp`'s socket gets its mode and group itself; a symlink
    /// planted at its path is replaced, and the file it names keeps its
    /// own mode.
    #[test]
    fn bind_unix_as_sets_the_sockets_mode_and_group_only() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("lmtp.sock");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, &sock).unwrap();
        let gid = nix::unistd::getegid().as_raw();
        let _l = bind_unix_as(&sock, 0o660, Some(gid)).unwrap();
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!((m.mode() & 0o7777, m.gid()), (0o660, gid));
        let v = std::fs::metadata(&victim).unwrap();
        assert_eq!(v.mode() & 0o7777, 0o644);
        drop(_l);
        std::fs::remove_file(&sock).unwrap();
        let _l = bind_unix_as(&sock, 0o600, None).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o7777, 0o600);
    }

    /// Both kinds of socket through the same halves: what the write half
    /// sends the other end reads, what the other end sends the read half
    /// reads, and a read with nothing to come ends at the timeout set.
    #[test]
    fn socket_halves_carry_both_ways_and_time_out() {
        fn check<S: Socket>(ours: S, mut theirs: impl Read + Write) {
            let (mut r, mut w) = halves(Arc::new(ours));
            w.write_all(b"hello").unwrap();
            w.flush().unwrap();
            let mut buf = [0; 5];
            theirs.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            theirs.write_all(b"back").unwrap();
            let mut buf = [0; 4];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"back");
            TimedRead::set_read_timeout(&mut r, Duration::from_millis(1)).unwrap();
            let e = r.read(&mut buf).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{e}"
            );
        }
        let (a, b) = UnixStream::pair().unwrap();
        check(a, b);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        check(a, b);
    }
}
