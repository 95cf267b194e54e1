//! The wire between the two processes: versioned, length-prefixed frames,
//! and the pure encoding and decoding of what they carry.
//!
//! A request or a response is a frame: a 4-byte big-endian length, then
//! the payload (version byte, kind byte, fields as length-prefixed strings
//! and fixed-size integers); a delivery request carries the message as a
//! file descriptor attached to the frame (SCM_RIGHTS). Here the payloads
//! are made and taken apart on bytes, and every field is checked as it is
//! read (lengths, counts, UTF-8, control characters, addresses, the
//! message id): the decoder is the first line of the delivery process's
//! defence, and can be tested without a process or a socket. What a
//! request asks is judged in [`super::serve`].
//!
//! The format is fixed by [`VERSION`]; the tests below pin it byte for
//! byte. Version 2 added the DSN parameters of RFC 3461: a recipient's
//! NOTIFY and ORCPT, the message's RET and ENVID.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::smtp::address::parse_path;
use crate::smtp::command::Body;
use crate::smtp::{
    EnvId, Envelope, Mailbox, Notify, Orcpt, Recipient, Ret, ReversePath, Submitter, TempReason,
    Via,
};
use crate::sys;
use crate::tls::Pem;

/// Protocol version; a request of any other version is refused.
pub const VERSION: u8 = 3;
/// Largest request or response payload accepted.
const MAX_FRAME: usize = 1 << 20;
/// Longest string field.
const MAX_STR: usize = 4096;
/// Most recipients (and users per recipient) in one request.
const MAX_ITEMS: usize = 10_000;

pub(super) const KIND_CHECK: u8 = 1;
const KIND_DELIVER: u8 = 2;
const KIND_TLS_FILES: u8 = 3;

const ST_OK: u8 = 0;
const ST_TEMP: u8 = 1;
// 2 was a permanent failure, which delivery no longer reports.
const ST_UNAVAILABLE: u8 = 3;
const ST_BAD: u8 = 4;
const ST_PEM: u8 = 5;
/// Longest certificate chain or key carried (a frame holds both).
const MAX_PEM: usize = 256 * 1024;

/// A request as the delivery process reads it, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    /// The RCPT-time check of the mailbox of the user of this name.
    Check { user: String },
    /// A delivery of the message (`len` octets, in the descriptor that
    /// came with the frame) as `env` says.
    Deliver { env: Box<Envelope>, len: u64 },
    /// The TLS certificate and key, read again (SIGHUP).
    TlsFiles,
}

/// Reads a request: its version, its kind, its fields, and nothing after
/// them. `Err` says what is wrong with it.
pub(super) fn decode_request(payload: &[u8]) -> Result<Request, String> {
    let mut r = Reader { buf: payload };
    if r.u8()? != VERSION {
        return Err("unsupported protocol version".into());
    }
    match r.u8()? {
        KIND_CHECK => {
            let user = r.str()?;
            r.end()?;
            Ok(Request::Check { user })
        }
        KIND_TLS_FILES => {
            r.end()?;
            Ok(Request::TlsFiles)
        }
        KIND_DELIVER => {
            let (env, len) = decode_deliver(&mut r)?;
            Ok(Request::Deliver {
                env: Box::new(env),
                len,
            })
        }
        k => Err(format!("unknown request kind {k}")),
    }
}

// Encoding.

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// The payload of a request for the TLS certificate and key.
pub(super) fn encode_tls_files() -> Vec<u8> {
    vec![VERSION, KIND_TLS_FILES]
}

/// The payload of a request to check `user`'s mailbox.
pub(super) fn encode_check(user: &str) -> Vec<u8> {
    let mut out = vec![VERSION, KIND_CHECK];
    put_str(&mut out, user);
    out
}

/// The payload of a delivery request for `env`, whose message is `len`
/// bytes long.
pub fn encode_deliver(env: &Envelope, len: u64) -> Vec<u8> {
    let mut out = vec![VERSION, KIND_DELIVER];
    put_str(&mut out, &env.id);
    put_str(&mut out, &env.helo);
    out.push(via_flags(&env.via));
    put_str(&mut out, env.via.tls.as_deref().unwrap_or_default());
    put_str(
        &mut out,
        &env.peer.map(|p| p.to_string()).unwrap_or_default(),
    );
    let sender = match &env.sender {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    };
    put_str(&mut out, &sender);
    put_u32(&mut out, env.recipients.len() as u32);
    for r in &env.recipients {
        put_str(&mut out, &r.path.to_string());
        put_u32(&mut out, r.users.len() as u32);
        for u in &r.users {
            put_str(&mut out, u);
        }
        out.push(notify_byte(r.notify));
        put_str(&mut out, r.orcpt.as_deref().unwrap_or_default());
    }
    out.push(match env.body {
        None => 0,
        Some(Body::SevenBit) => 1,
        Some(Body::EightBitMime) => 2,
        Some(Body::BinaryMime) => 3,
    });
    put_u64(&mut out, env.size);
    match &env.submitter {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_u32(&mut out, s.uid);
            put_str(&mut out, &s.user);
        }
    }
    out.push(match env.ret {
        None => 0,
        Some(Ret::Full) => 1,
        Some(Ret::Hdrs) => 2,
    });
    put_str(&mut out, env.envid.as_deref().unwrap_or_default());
    put_u64(&mut out, len);
    out
}

/// NOTIFY in one byte: 0 for none, [`NOTIFY_NEVER`], or the conditions
/// as bits ([`NOTIFY_SUCCESS`], [`NOTIFY_FAILURE`], [`NOTIFY_DELAY`]; at
/// least one).
fn notify_byte(n: Option<Notify>) -> u8 {
    match n {
        None => 0,
        Some(Notify::Never) => NOTIFY_NEVER,
        Some(Notify::On {
            success,
            failure,
            delay,
        }) => [
            (success, NOTIFY_SUCCESS),
            (failure, NOTIFY_FAILURE),
            (delay, NOTIFY_DELAY),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |bits, (_, bit)| bits | bit),
    }
}

const NOTIFY_SUCCESS: u8 = 1;
const NOTIFY_FAILURE: u8 = 2;
const NOTIFY_DELAY: u8 = 4;
const NOTIFY_NEVER: u8 = 0x80;

fn notify_of(b: u8) -> Result<Option<Notify>, String> {
    match b {
        0 => Ok(None),
        NOTIFY_NEVER => Ok(Some(Notify::Never)),
        1..=7 => Ok(Some(Notify::On {
            success: b & NOTIFY_SUCCESS != 0,
            failure: b & NOTIFY_FAILURE != 0,
            delay: b & NOTIFY_DELAY != 0,
        })),
        _ => Err("bad NOTIFY".into()),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.buf.len() < n {
            return Err("truncated request".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn count(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > MAX_ITEMS {
            return Err(format!("count {n} over the limit"));
        }
        Ok(n)
    }
    fn pem(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        if n > MAX_PEM {
            return Err(format!("PEM of {n} bytes over the limit"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > MAX_STR {
            return Err(format!("string of {n} bytes over the limit"));
        }
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "string not UTF-8")?;
        if s.chars().any(|c| c.is_control()) {
            return Err("control character in a string".into());
        }
        Ok(s.to_string())
    }
    fn end(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes in request".into())
        }
    }
}

fn mailbox(s: &str) -> Result<Mailbox, String> {
    match parse_path(&format!("<{s}>")) {
        Ok((Some(m), "")) => Ok(m),
        _ => Err(format!(
            "bad address {:?}",
            crate::smtp::session::printable(s, 80)
        )),
    }
}

const VIA_ESMTP: u8 = 1;
const VIA_LMTP: u8 = 2;
const VIA_UTF8: u8 = 4;

fn via_flags(via: &Via) -> u8 {
    let mut flags = 0;
    for (on, bit) in [
        (via.esmtp, VIA_ESMTP),
        (via.lmtp, VIA_LMTP),
        (via.utf8, VIA_UTF8),
    ] {
        if on {
            flags |= bit;
        }
    }
    flags
}

/// How a message came, from its flags and TLS description: the
/// description goes into a `Received:` comment, so it must be short
/// printable ASCII.
fn via_of(flags: u8, tls: String) -> Result<Via, String> {
    if flags & !(VIA_ESMTP | VIA_LMTP | VIA_UTF8) != 0 {
        return Err("bad flag".into());
    }
    if tls.len() > 100 || !tls.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("bad TLS description".into());
    }
    Ok(Via {
        esmtp: flags & VIA_ESMTP != 0,
        lmtp: flags & VIA_LMTP != 0,
        utf8: flags & VIA_UTF8 != 0,
        tls: (!tls.is_empty()).then_some(tls),
    })
}

fn decode_deliver(r: &mut Reader<'_>) -> Result<(Envelope, u64), String> {
    let id = r.str()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        return Err("bad message id".into());
    }
    let helo = r.str()?;
    let via = via_of(r.u8()?, r.str()?)?;
    let peer = match r.str()? {
        p if p.is_empty() => None,
        p => Some(p.parse::<IpAddr>().map_err(|_| "bad peer address")?),
    };
    let sender = match r.str()? {
        s if s.is_empty() => ReversePath::Null,
        s => ReversePath::Mailbox(mailbox(&s)?),
    };
    let n = r.count()?;
    if n == 0 {
        return Err("no recipients".into());
    }
    let mut recipients = Vec::with_capacity(n.min(100));
    for _ in 0..n {
        let path = mailbox(&r.str()?)?;
        // No users: an alias to programs or files alone, which the
        // delivery process expands itself (as it does every recipient).
        let k = r.count()?;
        let mut users = Vec::with_capacity(k.min(100));
        for _ in 0..k {
            users.push(r.str()?);
        }
        let notify = notify_of(r.u8()?)?;
        let orcpt = match r.str()? {
            o if o.is_empty() => None,
            o => Some(Orcpt::parse(&o)?.into_string()),
        };
        recipients.push(Recipient {
            path,
            users,
            notify,
            orcpt,
        });
    }
    let body = match r.u8()? {
        0 => None,
        1 => Some(Body::SevenBit),
        2 => Some(Body::EightBitMime),
        3 => Some(Body::BinaryMime),
        _ => return Err("bad body type".into()),
    };
    let size = r.u64()?;
    let submitter = match r.u8()? {
        0 => None,
        1 => Some(Submitter {
            uid: r.u32()?,
            user: r.str()?,
        }),
        _ => return Err("bad flag".into()),
    };
    let ret = match r.u8()? {
        0 => None,
        1 => Some(Ret::Full),
        2 => Some(Ret::Hdrs),
        _ => return Err("bad RET".into()),
    };
    let envid = match r.str()? {
        e if e.is_empty() => None,
        e => Some(EnvId::parse(&e)?.into_string()),
    };
    let len = r.u64()?;
    r.end()?;
    // The SMTP side lets a UTF-8 address in only with SMTPUTF8 (RFC 6531
    // 3.5), and what delivery writes into headers depends on it.
    let ascii = |m: &Mailbox| m.is_ascii();
    let sender_ascii = match &sender {
        ReversePath::Null => true,
        ReversePath::Mailbox(m) => ascii(m),
    };
    if !via.utf8 && (!sender_ascii || recipients.iter().any(|r| !ascii(&r.path))) {
        return Err("UTF-8 address without SMTPUTF8".into());
    }
    Ok((
        Envelope {
            id,
            helo,
            via,
            peer,
            sender,
            recipients,
            body,
            size,
            submitter,
            ret,
            envid,
        },
        len,
    ))
}

/// What the delivery process answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok,
    Temp(TempReason),
    Unavailable(String),
    Bad(String),
    /// The TLS certificate chain and key.
    Pem(Pem),
}

const TEMP_REASONS: [TempReason; 5] = [
    TempReason::LockTimeout,
    TempReason::NoSpace,
    TempReason::Quota,
    TempReason::LookupFailed,
    TempReason::Local,
];

pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut out = vec![VERSION];
    match r {
        Response::Ok => out.push(ST_OK),
        Response::Temp(t) => {
            out.push(ST_TEMP);
            out.push(TEMP_REASONS.iter().position(|x| x == t).unwrap_or(4) as u8);
        }
        Response::Unavailable(why) => {
            out.push(ST_UNAVAILABLE);
            put_str(&mut out, &truncate(why));
        }
        Response::Bad(why) => {
            out.push(ST_BAD);
            put_str(&mut out, &truncate(why));
        }
        Response::Pem(pem) => {
            out.push(ST_PEM);
            for part in [&pem.cert, &pem.key] {
                put_u32(&mut out, part.len() as u32);
                out.extend_from_slice(part);
            }
        }
    }
    out
}

fn truncate(s: &str) -> String {
    crate::smtp::session::printable(s, 1000)
}

pub fn decode_response(payload: &[u8]) -> io::Result<Response> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut r = Reader { buf: payload };
    let res = (|| -> Result<Response, String> {
        if r.u8()? != VERSION {
            return Err("unsupported protocol version".into());
        }
        let resp = match r.u8()? {
            ST_OK => Response::Ok,
            ST_TEMP => Response::Temp(*TEMP_REASONS.get(r.u8()? as usize).ok_or("bad reason")?),
            ST_UNAVAILABLE => Response::Unavailable(r.str()?),
            ST_BAD => Response::Bad(r.str()?),
            ST_PEM => Response::Pem(Pem {
                cert: r.pem()?,
                key: r.pem()?,
            }),
            _ => return Err("unknown status".into()),
        };
        r.end()?;
        Ok(resp)
    })();
    res.map_err(|e| bad(&e))
}

// Framing, with an optional descriptor attached to the frame's first byte.

/// Sends one frame: its length, then `payload`, with `fd` attached.
pub fn send_frame(s: &UnixStream, payload: &[u8], fd: Option<i32>) -> io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut parts = [IoSlice::new(&len), IoSlice::new(payload)];
    let fds = fd.map(|f| [f]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    let total = 4 + payload.len();
    let mut sent = sendmsg::<()>(s.as_raw_fd(), &parts, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    // A short write: the rest goes without the descriptor (already sent).
    while sent < total {
        let rest: Vec<u8> = [&len[..], payload].concat()[sent..].to_vec();
        parts = [IoSlice::new(&rest), IoSlice::new(&[])];
        sent += sendmsg::<()>(s.as_raw_fd(), &parts, &[], MsgFlags::MSG_NOSIGNAL, None)?;
    }
    Ok(())
}

/// Receives one frame and the descriptor attached to it, if any. End of
/// file before a frame starts is `UnexpectedEof`.
pub fn recv_frame(s: &UnixStream) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut got = 0;
    let mut fd = None;
    while got < 4 {
        let mut space = nix::cmsg_space!([i32; 4]);
        let mut iov = [IoSliceMut::new(&mut len[got..])];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let n = msg.bytes;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    let owned = sys::received_fd(raw);
                    // Keep the first; any extra descriptor is closed.
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {n} bytes"),
        ));
    }
    let mut payload = vec![0u8; n];
    (&*s).read_exact(&mut payload)?;
    Ok((payload, fd))
}

/// Writes bytes as they are, frame or not (for tests of hostile input).
#[cfg(test)]
pub(super) fn send_raw(s: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    (&*s).write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::envelope;
    use super::*;

    /// The bytes of version 3, written out by hand: a change to the format
    /// must come with a new [`VERSION`].
    #[test]
    fn requests_and_responses_keep_their_bytes() {
        let env = Envelope {
            id: "A.1".into(),
            helo: "h".into(),
            via: Via {
                esmtp: true,
                lmtp: false,
                utf8: true,
                tls: Some("TLSv1.3 X".into()),
            },
            peer: Some("192.0.2.1".parse().unwrap()),
            sender: ReversePath::Mailbox(Mailbox {
                local: "jon".into(),
                domain: Some("x.example".into()),
            }),
            recipients: vec![Recipient {
                path: Mailbox {
                    local: "staff".into(),
                    domain: None,
                },
                users: vec!["jon".into()],
                notify: Some(Notify::On {
                    success: true,
                    failure: false,
                    delay: true,
                }),
                orcpt: Some("rfc822;s+2B1@x".into()),
            }],
            body: Some(Body::SevenBit),
            size: 42,
            submitter: Some(Submitter {
                uid: 1000,
                user: "jon".into(),
            }),
            ret: Some(Ret::Hdrs),
            envid: Some("Q+3D1".into()),
        };
        let want: Vec<u8> = [
            &[3u8, 2][..],
            b"\0\0\0\x03A.1",
            b"\0\0\0\x01h",
            &[5],
            b"\0\0\0\x09TLSv1.3 X",
            b"\0\0\0\x09192.0.2.1",
            b"\0\0\0\x0djon@x.example",
            b"\0\0\0\x01",
            b"\0\0\0\x05staff",
            b"\0\0\0\x01",
            b"\0\0\0\x03jon",
            &[5],
            b"\0\0\0\x0erfc822;s+2B1@x",
            &[1],
            &42u64.to_be_bytes(),
            &[1],
            b"\0\0\x03\xe8",
            b"\0\0\0\x03jon",
            &[2],
            b"\0\0\0\x05Q+3D1",
            &3u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(encode_deliver(&env, 3), want);
        let null = Envelope {
            sender: ReversePath::Null,
            peer: None,
            via: Via::default(),
            recipients: vec![Recipient {
                notify: Some(Notify::Never),
                orcpt: None,
                ..env.recipients[0].clone()
            }],
            body: None,
            submitter: None,
            ret: None,
            envid: None,
            ..env.clone()
        };
        let want: Vec<u8> = [
            &[3u8, 2][..],
            b"\0\0\0\x03A.1",
            b"\0\0\0\x01h",
            &[0],
            b"\0\0\0\0",
            b"\0\0\0\0",
            b"\0\0\0\0",
            b"\0\0\0\x01",
            b"\0\0\0\x05staff",
            b"\0\0\0\x01",
            b"\0\0\0\x03jon",
            &[0x80],
            b"\0\0\0\0",
            &[0],
            &42u64.to_be_bytes(),
            &[0],
            &[0],
            b"\0\0\0\0",
            &3u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(encode_deliver(&null, 3), want);
        assert_eq!(encode_check("jon"), b"\x03\x01\0\0\0\x03jon");
        let responses: [(Response, &[u8]); 6] = [
            (Response::Ok, b"\x03\x00"),
            (Response::Temp(TempReason::LockTimeout), b"\x03\x01\x00"),
            (Response::Temp(TempReason::NoSpace), b"\x03\x01\x01"),
            (Response::Temp(TempReason::Local), b"\x03\x01\x04"),
            (Response::Unavailable("no".into()), b"\x03\x03\0\0\0\x02no"),
            (Response::Bad("x".into()), b"\x03\x04\0\0\0\x01x"),
        ];
        for (r, bytes) in responses {
            assert_eq!(encode_response(&r), bytes, "{r:?}");
            assert_eq!(decode_response(bytes).unwrap(), r);
        }
        let pem = Response::Pem(Pem {
            cert: b"C".to_vec(),
            key: b"KK".to_vec(),
        });
        let bytes = b"\x03\x05\0\0\0\x01C\0\0\0\x02KK";
        assert_eq!(encode_response(&pem), bytes);
        assert_eq!(decode_response(bytes).unwrap(), pem);
        assert_eq!(encode_tls_files(), b"\x03\x03");
        assert_eq!(decode_request(b"\x03\x03"), Ok(Request::TlsFiles));
        for env in [env, null] {
            assert_eq!(
                decode_request(&encode_deliver(&env, 3)),
                Ok(Request::Deliver {
                    env: Box::new(env),
                    len: 3
                })
            );
        }
    }

    /// The DSN parameters are checked as the SMTP side checks them: every
    /// NOTIFY, ORCPT, RET and ENVID round-trips, and a value that SMTP
    /// would have refused is refused here too, as is a request of
    /// version 1.
    #[test]
    fn dsn_parameters_round_trip_and_bad_ones_are_refused() {
        let mut env = envelope();
        let notifies = (0..8u8)
            .map(|m| {
                Some(Notify::On {
                    success: m & 1 != 0,
                    failure: m & 2 != 0,
                    delay: m & 4 != 0,
                })
            })
            .filter(|n| {
                n != &Some(Notify::On {
                    success: false,
                    failure: false,
                    delay: false,
                })
            })
            .chain([None, Some(Notify::Never)]);
        for notify in notifies {
            for ret in [None, Some(Ret::Full), Some(Ret::Hdrs)] {
                env.recipients[0].notify = notify;
                env.recipients[0].orcpt = Some("rfc822;a+20b@c".into());
                env.ret = ret;
                env.envid = Some("x".repeat(100));
                assert_eq!(
                    decode_request(&encode_deliver(&env, 1)),
                    Ok(Request::Deliver {
                        env: Box::new(env.clone()),
                        len: 1
                    })
                );
            }
        }
        let refused = |env: &Envelope| decode_request(&encode_deliver(env, 1)).unwrap_err();
        let mut bad = envelope();
        bad.envid = Some("a b".into());
        assert!(refused(&bad).contains("ENVID"), "{}", refused(&bad));
        bad.envid = Some("x".repeat(101));
        assert!(refused(&bad).contains("ENVID"));
        let mut bad = envelope();
        bad.recipients[0].orcpt = Some("rfc822;a+2b".into());
        assert!(refused(&bad).contains("ORCPT"), "{}", refused(&bad));
        bad.recipients[0].orcpt = Some("no-semicolon".into());
        assert!(refused(&bad).contains("ORCPT"));
        // A NOTIFY of no condition, or of unknown bits; a RET of 3.
        let good = encode_deliver(&envelope(), 1);
        let notify_at = good.len() - 8 - 4 - 1 - (4 + 4 + 3) - 1 - 8 - 1 - 4 - 1;
        assert_eq!(good[notify_at], 0, "the offset of NOTIFY");
        for b in [0x08, 0x81, 0xff] {
            let mut bytes = good.clone();
            bytes[notify_at] = b;
            assert_eq!(decode_request(&bytes), Err("bad NOTIFY".into()), "{b:#x}");
        }
        let mut bytes = good.clone();
        bytes[good.len() - 8 - 4 - 1] = 3;
        assert_eq!(decode_request(&bytes), Err("bad RET".into()));
        let mut bytes = good;
        bytes[0] = 1;
        assert_eq!(
            decode_request(&bytes),
            Err("unsupported protocol version".into())
        );
    }

    /// Each BODY type is one byte, BINARYMIME (RFC 3030) 3; any other
    /// byte is refused.
    #[test]
    fn body_types_round_trip() {
        let mut env = envelope();
        let mut encoded = Vec::new();
        for body in [
            None,
            Some(Body::SevenBit),
            Some(Body::EightBitMime),
            Some(Body::BinaryMime),
        ] {
            env.body = body;
            let bytes = encode_deliver(&env, 1);
            assert_eq!(
                decode_request(&bytes),
                Ok(Request::Deliver {
                    env: Box::new(env.clone()),
                    len: 1
                })
            );
            encoded.push(bytes);
        }
        let at = (0..encoded[0].len())
            .find(|&i| encoded[0][i] != encoded[3][i])
            .unwrap();
        let bytes: Vec<u8> = encoded.iter().map(|e| e[at]).collect();
        assert_eq!(bytes, [0, 1, 2, 3]);
        let mut bad = encoded[3].clone();
        bad[at] = 4;
        assert_eq!(decode_request(&bad), Err("bad body type".into()));
    }

    /// RFC 6531: UTF-8 addresses cross the wire intact in a UTF8SMTP
    /// envelope; in any other, or with a character the SMTP side refuses
    /// (a bidirectional override, a C1 control), the request is refused.
    #[test]
    fn utf8_addresses_cross_only_with_smtputf8() {
        let mut env = envelope();
        env.via.utf8 = true;
        env.sender = ReversePath::Mailbox(Mailbox {
            local: "pel\u{e9}".into(),
            domain: Some("b\u{fc}cher.example".into()),
        });
        env.recipients[0].path = Mailbox {
            local: "\u{7528}\u{6237}".into(),
            domain: Some("h".into()),
        };
        assert_eq!(
            decode_request(&encode_deliver(&env, 1)),
            Ok(Request::Deliver {
                env: Box::new(env.clone()),
                len: 1
            })
        );
        let mut plain = env.clone();
        plain.via.utf8 = false;
        assert_eq!(
            decode_request(&encode_deliver(&plain, 1)),
            Err("UTF-8 address without SMTPUTF8".into())
        );
        plain.sender = ReversePath::Null;
        assert!(decode_request(&encode_deliver(&plain, 1)).is_err());
        for bad in ["a\u{202e}b", "a\u{85}b", "a\u{2028}b"] {
            let mut hostile = env.clone();
            hostile.recipients[0].path.local = bad.into();
            let err = decode_request(&encode_deliver(&hostile, 1)).unwrap_err();
            assert!(
                err.contains("bad address") || err.contains("control character"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn requests_decode_to_what_was_encoded() {
        let env = envelope();
        assert_eq!(
            decode_request(&encode_deliver(&env, 7)),
            Ok(Request::Deliver {
                env: Box::new(env),
                len: 7
            })
        );
        assert_eq!(
            decode_request(&encode_check("jon")),
            Ok(Request::Check { user: "jon".into() })
        );
    }

    /// A frame on the socket: its length in four bytes, then the payload.
    #[test]
    fn a_frame_is_its_length_then_its_payload() {
        let (a, b) = UnixStream::pair().unwrap();
        send_frame(&a, b"xyz", None).unwrap();
        let mut got = [0u8; 7];
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\0\0\0\x03xyz");
        send_raw(&a, b"\0\0\0\x02hi").unwrap();
        let (payload, fd) = recv_frame(&b).unwrap();
        assert_eq!(payload, b"hi");
        assert!(fd.is_none());
    }
}
