//! Root's delivery when no daemon answers: the same SMTP dialog, with a
//! session of our own on a thread at the other end of a socket pair, so
//! that the message goes through the daemon's transaction code, run in
//! this process (cron mail on a host that runs postie from inetd only).
//! Apart because it is the one path of sendmail's that builds a
//! [`Service`](crate::server::Service) and delivers: it recovers the
//! journal first, as a daemon does, holds off the stop signals, and runs
//! what is due in the queue after (a program target runs from the queue
//! right after its message is accepted, and no daemon's runner is there
//! to run it).

use std::os::unix::net::UnixStream;

use super::client::{self, Envelope};
use super::daemon::over_socket;
use crate::cli::Options;
use crate::config;
use crate::exit::{EX_CONFIG, EX_OSERR};
use crate::listen;
use crate::sys;

/// Root without a daemon: the same SMTP dialog with a session of our own,
/// on a thread at the other end of a socket pair. Delivery is the daemon's
/// code, run here.
pub(super) fn in_process(
    opts: &Options,
    env: &Envelope,
    data: &[u8],
    trace: bool,
) -> Result<Result<client::Sent, client::Error>, u8> {
    let service = config::service(opts).map_err(|e| {
        eprintln!("postie: {e}; message not sent");
        EX_CONFIG
    })?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| {
        eprintln!("postie: cannot deliver: {e}; message not sent");
        EX_OSERR
    })?;
    // As a daemon would at start: undo what a crash interrupted.
    service.delivery().recover();
    let service = &service;
    // The signals that end or stop the process are held off this thread,
    // and so off the session's, for the dialog: a signal taken by a thread
    // that is not delivering would end or stop the whole process with
    // mailboxes locked. One that comes meanwhile takes effect after.
    let held = sys::hold_delivery_signals();
    let result = std::thread::scope(|scope| {
        let (reader, writer) = listen::halves(std::sync::Arc::new(theirs));
        scope.spawn(move || service.run_session(reader, writer, None));
        let result = over_socket(&ours, env, data, trace);
        // The session ends at QUIT, or at end of file if we left early.
        let _ = ours.shutdown(std::net::Shutdown::Both);
        result
    });
    // No daemon's runner either: what is due now (the programs this
    // message left to the queue, run right after it was accepted) is run
    // here, before sendmail returns.
    if result.is_ok() {
        let filter = crate::message::RunFilter {
            ids: Vec::new(),
            recipient: None,
            sender: None,
            all: false,
        };
        service.delivery().run_queue(&filter);
    }
    service.delivery().close();
    drop(held);
    Ok(result)
}
