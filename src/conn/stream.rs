//! The client's stream as the session loop sees it: [`Duplex`], a
//! connection's two halves as one stream; `Link`, that stream in plain
//! text or, after STARTTLS, in TLS; and `Bounded`, which ends every read
//! by the session's deadline.

use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::tls::TlsStream;

/// A readable client stream whose read timeout can be changed between
/// phases (command, data).
pub trait TimedRead: Read + Send {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl<T: TimedRead + ?Sized> TimedRead for Box<T> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
}

/// The two halves of a connection as one stream: reads from one, writes
/// to the other (a socket's two handles, or inetd's stdin and stdout).
pub struct Duplex<R, W> {
    pub reader: R,
    pub writer: W,
}

impl<R: Read, W> Read for Duplex<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl<R: TimedRead, W: Write + Send> TimedRead for Duplex<R, W> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.reader.set_read_timeout(timeout)
    }
}

/// The client's stream as the session sees it: plain, or TLS once a
/// STARTTLS handshake is done. `Gone` only after a failed handshake, when
/// the session ends.
pub(super) enum Link<S: Read + Write> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    Gone,
}

impl<S: TimedRead + Write> Link<S> {
    /// Says goodbye in TLS (close_notify), so that the client can tell the
    /// end from a cut connection.
    pub(super) fn close(&mut self) {
        if let Link::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "no stream after a failed handshake",
    )
}

impl<S: TimedRead + Write> Read for Link<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(t) => t.read(buf),
            Link::Gone => Err(gone()),
        }
    }
}

impl<S: TimedRead + Write> Write for Link<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(t) => t.write(buf),
            Link::Gone => Err(gone()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(t) => t.flush(),
            Link::Gone => Err(gone()),
        }
    }
}

impl<S: TimedRead + Write> TimedRead for Link<S> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.set_read_timeout(timeout),
            Link::Tls(t) => t.sock.set_read_timeout(timeout),
            Link::Gone => Err(gone()),
        }
    }
}

/// What the session loop reads: the link, bounded in time, buffered.
pub(super) type Reader<S> = BufReader<Bounded<Link<S>>>;

/// A client stream whose reads all end by a deadline: each read waits for
/// the phase's timeout (command, data) or until the deadline, whichever is
/// sooner. The socket's timeout is set again only in the last stretch,
/// when the deadline is nearer than the phase's timeout: a `setsockopt`
/// per read showed in the profile.
pub(super) struct Bounded<R> {
    pub(super) inner: R,
    pub(super) until: Instant,
    /// The phase's timeout, as last set.
    pub(super) wait: Option<Duration>,
    /// A read waited until the deadline and timed out. (The kernel may end
    /// such a wait a tick before our clock says the deadline is there.)
    pub(super) hit: bool,
}

impl<R> Bounded<R> {
    /// True once the session's time is up.
    pub(super) fn expired(&self) -> bool {
        self.hit || Instant::now() >= self.until
    }
}

impl<R: TimedRead> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let cut = self.wait.is_none_or(|wait| left < wait);
        if cut {
            self.inner.set_read_timeout(left)?;
        }
        let got = self.inner.read(buf);
        if cut && got.as_ref().is_err_and(is_timeout) {
            self.hit = true;
        }
        got
    }
}

impl<R: TimedRead> TimedRead for Bounded<R> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.wait = Some(timeout);
        if timeout <= self.until.saturating_duration_since(Instant::now()) {
            self.inner.set_read_timeout(timeout)
        } else {
            // Cut short by the deadline: each read sets its own.
            Ok(())
        }
    }
}

impl<R: Write> Write for Bounded<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A timed-out read, as the socket says it.
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that never has anything to read, and records the read
    /// timeouts it is given.
    struct Silent(Vec<Duration>);

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl TimedRead for Silent {
        fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
            self.0.push(t);
            Ok(())
        }
    }

    #[test]
    fn the_session_deadline_cuts_only_the_last_waits() {
        let bounded = |left: Duration| Bounded {
            inner: Silent(Vec::new()),
            until: Instant::now() + left,
            wait: None,
            hit: false,
        };
        let minute = Duration::from_secs(60);
        let mut buf = [0u8; 8];
        // Far from the deadline: the phase's timeout, set once.
        let mut b = bounded(60 * minute);
        b.set_read_timeout(5 * minute).unwrap();
        for _ in 0..3 {
            assert!(b.read(&mut buf).is_err());
        }
        assert_eq!(b.inner.0, [5 * minute]);
        assert!(!b.expired(), "a phase timeout is not the session's end");
        // Nearer than the phase's timeout: each read waits only until the
        // deadline, and a read that times out then ends the session, even
        // if the kernel's clock ran out a little before ours.
        let mut b = bounded(minute);
        b.set_read_timeout(5 * minute).unwrap();
        assert!(b.inner.0.is_empty());
        assert!(b.read(&mut buf).is_err());
        assert_eq!(b.inner.0.len(), 1);
        assert!(b.inner.0[0] <= minute, "{:?}", b.inner.0);
        assert!(b.expired());
        // Past the deadline, a read fails at once.
        let mut b = bounded(Duration::ZERO);
        let e = b.read(&mut buf).unwrap_err();
        assert!(is_timeout(&e) && b.expired());
        assert!(b.inner.0.is_empty());
    }
}
