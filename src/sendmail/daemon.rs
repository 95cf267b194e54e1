//! The daemon's Unix socket, from the client's side: whether the server
//! listening there may be trusted with a message ([`untrusted_peer`]),
//! the SMTP dialog over it with a bound on each reply, and `-bs` for an
//! ordinary user ([`relay_smtp`]), which relays a whole session to it.
//! Submission decides between this and root's in-process delivery
//! ([`super::fallback`]).

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::client::{self, Envelope};
use crate::cli::{self, Options};
use crate::config;
use crate::exit::{EX_IOERR, EX_OK, EX_OSERR, EX_TEMPFAIL};
use crate::sys;

/// How long to wait for each reply of the daemon: more than its own bound
/// on a delivery (`--timeout-data-end`, 10 minutes by default).
const REPLY_TIMEOUT: Duration = Duration::from_secs(11 * 60);

/// Why the server at the other end of `s` is not to be trusted with a
/// message, if it is not (audit of "postie 5": a socket in a directory
/// others may write can be anybody's). Its uid (SO_PEERCRED: who made
/// the listening socket) must be root's, that of postie's SMTP side
/// (`--user`, resolved as the daemon does), or our own when we are not
/// root.
pub(super) fn untrusted_peer(s: &UnixStream, user: &str) -> Option<String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let uid = match getsockopt(s, PeerCredentials) {
        Ok(c) => c.uid(),
        Err(e) => return Some(format!("cannot tell who listens there: {e}")),
    };
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || (me != 0 && uid == me) || smtp_side_uid(user) == Some(uid) {
        return None;
    }
    Some(format!(
        "the server there runs as uid {uid}, neither root nor postie's user ({user}); \
         not submitting to it"
    ))
}

/// The uid of `--user` as the daemon resolves it.
fn smtp_side_uid(user: &str) -> Option<u32> {
    let user = cli::SmtpSideUser::resolve(user).ok()?.user()?;
    Some(user.uid.as_raw())
}

/// Nobody listens at the socket path: no daemon (as opposed to one we may
/// not talk to).
pub(super) fn no_daemon(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

pub(super) fn over_socket(
    s: &UnixStream,
    env: &Envelope,
    data: &[u8],
    trace: bool,
) -> Result<client::Sent, client::Error> {
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    s.set_write_timeout(Some(REPLY_TIMEOUT))?;
    client::submit(BufReader::new(s), s, env, data, trace)
}

/// `-bs` when not root: the SMTP session on stdin/stdout is relayed to the
/// daemon's socket, so that an ordinary user's session is a submission the
/// daemon can attribute (SO_PEERCRED). Nothing is written to stderr, which
/// may be the client's connection (inetd).
pub(super) fn relay_smtp(opts: &Options) -> u8 {
    sys::silence_stderr();
    let stream = match UnixStream::connect(&opts.submit_socket) {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "-bs: cannot reach the daemon at {}: {e}",
                opts.submit_socket.display()
            );
            let host = config::mail_name(opts.hostname.as_deref());
            let mut out = io::stdout().lock();
            let _ = write!(
                out,
                "421 4.3.2 {host} No mail daemon to talk to (not running?), try again later\r\n"
            );
            let _ = out.flush();
            return EX_TEMPFAIL;
        }
    };
    if let Some(why) = untrusted_peer(&stream, &opts.user) {
        log::error!("-bs: {}: {why}", opts.submit_socket.display());
        let host = config::mail_name(opts.hostname.as_deref());
        let mut out = io::stdout().lock();
        let _ = write!(
            out,
            "421 4.3.2 {host} The mail daemon's socket is not trusted, try again later\r\n"
        );
        let _ = out.flush();
        return EX_TEMPFAIL;
    }
    let up = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log::error!("-bs: {e}");
            return EX_OSERR;
        }
    };
    // Client to daemon; when the client is done, tell the daemon. The
    // thread is not waited for: the session ends when the daemon closes.
    std::thread::spawn(move || {
        let mut up = up;
        let _ = io::copy(&mut io::stdin().lock(), &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    // Daemon to client, flushed as it comes.
    let mut down = &stream;
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match down.read(&mut buf) {
            Ok(0) => return EX_OK,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    return EX_IOERR;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::error!("-bs: {e}");
                return EX_IOERR;
            }
        }
    }
}
