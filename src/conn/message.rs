//! The end of a message: read after DATA, or in BDAT chunks, then
//! delivered, and the final replies (one, or in LMTP one per recipient).

use std::io::{self, Write};

use super::stream::{Reader, TimedRead};
use super::{Context, flush, send};
use crate::maillog::Event;
use crate::message::MessageBuf;
use crate::smtp::chunk::{self, Carry, Chunk};
use crate::smtp::data::{self, DataOutcome};
use crate::smtp::session::Session;
use crate::smtp::{Envelope, Outcome, Reply, TempReason, lmtp};

/// Reads the message, delivers it, and returns the final reply, for the
/// caller to send. In LMTP there is one per accepted recipient (RFC 2033
/// 4.2), the same for all of them when the message itself is refused:
/// all but the last are sent here, each as soon as it is known.
pub(super) fn receive_message<S: TimedRead + Write>(
    r: &mut Reader<S>,
    w: &mut Vec<u8>,
    session: &mut Session,
    cx: &Context<'_>,
    message: &mut MessageBuf,
) -> io::Result<Reply> {
    let due = session.replies_due();
    r.get_mut().set_read_timeout(cx.limits.data_timeout)?;
    let mut sink = Sink {
        buf: message,
        error: None,
    };
    let outcome = data::read_data(r, &mut sink, &cx.limits.data)?;
    let spill_error = sink.error.take();
    let mut out = Replies::new(r, w, due);
    finish_message(&mut out, session, cx, message, outcome, spill_error)?;
    Ok(out.last())
}

/// What a message in BDAT chunks carries from one chunk to the next.
#[derive(Default)]
pub(super) struct Chunked {
    /// A CR at the end of the last chunk, not yet written.
    carry: Carry,
    /// The message buffer could not take a chunk: the message is not
    /// kept, and its last chunk gets `452` ([`finish_message`]).
    error: Option<io::Error>,
}

/// Reads one BDAT chunk as the session judged it (RFC 3030 2): into the
/// message buffer, or read and dropped; after the LAST chunk of a kept
/// message, delivers it and returns delivery's reply (in LMTP the last
/// recipient's, the others' sent already). `None`: send the session's
/// reply.
pub(super) fn receive_chunk<S: TimedRead + Write>(
    r: &mut Reader<S>,
    w: &mut Vec<u8>,
    session: &mut Session,
    cx: &Context<'_>,
    message: &mut MessageBuf,
    chunked: &mut Chunked,
    chunk: Chunk,
) -> io::Result<Option<Reply>> {
    // A client may wait for the replies to what it sent before the chunk.
    flush(r, w)?;
    r.get_mut().set_read_timeout(cx.limits.data_timeout)?;
    if chunk.first || !chunk.keep {
        message.clear();
        *chunked = Chunked::default();
    }
    if !chunk.keep {
        chunk::read_chunk(r, &mut io::sink(), chunk.size, &mut Carry::default())?;
        return Ok(None);
    }
    let mut sink = Sink {
        buf: message,
        error: chunked.error.take(),
    };
    chunk::read_chunk(r, &mut sink, chunk.size, &mut chunked.carry)?;
    if chunk.last {
        chunk::finish(&mut sink, &mut chunked.carry)?;
    }
    chunked.error = sink.error.take();
    if !chunk.last {
        return Ok(None);
    }
    let due = session.replies_due();
    let outcome = DataOutcome::Complete { size: chunk.total };
    let mut out = Replies::new(r, w, due);
    let finished = finish_message(
        &mut out,
        session,
        cx,
        message,
        outcome,
        chunked.error.take(),
    );
    message.clear();
    finished?;
    Ok(Some(out.last()))
}

/// The final replies of a message on their way to the client: all but the
/// last are sent and flushed as they come (LMTP: the MTA in front sees
/// each recipient's reply as soon as its delivery is over); the last is
/// kept for the caller, which sends it (and, for BDAT, logs it) as the
/// reply to the command.
struct Replies<'a, S: TimedRead + Write> {
    r: &'a mut Reader<S>,
    w: &'a mut Vec<u8>,
    /// Replies still to come, the kept one included.
    due: usize,
    kept: Option<Reply>,
}

impl<'a, S: TimedRead + Write> Replies<'a, S> {
    fn new(r: &'a mut Reader<S>, w: &'a mut Vec<u8>, due: usize) -> Self {
        Replies {
            r,
            w,
            due: due.max(1),
            kept: None,
        }
    }

    fn give(&mut self, reply: Reply) -> io::Result<()> {
        // One more than announced: what was kept goes first.
        if let Some(earlier) = self.kept.take() {
            self.send(&earlier)?;
        }
        self.due = self.due.saturating_sub(1);
        if self.due == 0 {
            self.kept = Some(reply);
            return Ok(());
        }
        self.send(&reply)
    }

    fn send(&mut self, reply: &Reply) -> io::Result<()> {
        send(self.r, self.w, reply)?;
        flush(self.r, self.w)
    }

    /// The reply for the caller to send.
    fn last(self) -> Reply {
        self.kept
            .unwrap_or_else(|| crate::smtp::reply::local_error("no reply"))
    }
}

/// The end of a message, after DATA's dot or BDAT LAST: the envelope from
/// the session, delivery, and the final replies, each logged, into `out`:
/// one, or in LMTP one per accepted recipient.
fn finish_message<S: TimedRead + Write>(
    out: &mut Replies<'_, S>,
    session: &mut Session,
    cx: &Context<'_>,
    message: &MessageBuf,
    outcome: DataOutcome,
    spill_error: Option<io::Error>,
) -> io::Result<()> {
    let env = match session.data_done(outcome) {
        Ok(env) => env,
        Err(reply) => {
            Event::MessageRefused {
                id: session.id(),
                data: outcome,
                max_size: cx.limits.data.max_size,
                reply: &reply,
            }
            .log();
            for _ in 0..out.due {
                out.give(reply.clone())?;
            }
            return Ok(());
        }
    };
    if let Some(e) = spill_error {
        // The message was read to its end, so the session is in step; it
        // just could not be kept.
        Event::NotHeld {
            id: &env.id,
            dir: &cx.limits.temp_dir,
            err: &e,
        }
        .log();
        let reason = if e.raw_os_error() == Some(libc::EDQUOT) {
            TempReason::Quota
        } else {
            TempReason::NoSpace
        };
        let reply = session.delivered(&env, Outcome::Temporary(reason));
        for _ in 0..out.due {
            out.give(reply.clone())?;
        }
        return Ok(());
    }
    deliver_message(out, session, cx, &env, message)
}

/// Delivers a message received whole: one transaction and one reply, or
/// in LMTP a transaction and a reply per recipient ([`lmtp`]).
fn deliver_message<S: TimedRead + Write>(
    out: &mut Replies<'_, S>,
    session: &mut Session,
    cx: &Context<'_>,
    env: &Envelope,
    message: &MessageBuf,
) -> io::Result<()> {
    if env.via.lmtp {
        return lmtp::deliver_each(
            session,
            env,
            |one| cx.deliverer.deliver(one, message),
            |reply| out.give(reply),
        );
    }
    let result: Outcome = cx.deliverer.deliver(env, message);
    out.give(session.delivered(env, result))
}

/// Where the DATA reader writes: the message buffer, until a write fails
/// (a full temporary directory); then the rest is discarded so that the
/// reader still drains the message to its end, and the error is kept for
/// the reply.
struct Sink<'a> {
    buf: &'a mut MessageBuf,
    error: Option<io::Error>,
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.error.is_none() {
            if let Err(e) = self.buf.write_all(data) {
                self.error = Some(e);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
