//! The mail log, in two halves: [`event`] says what is told about
//! sessions and messages (one typed event a line, each formatted in one
//! place, so that the lines administrators grep for cannot drift apart),
//! and [`sink`] says where every log line goes (syslog, facility mail, or
//! stderr in the foreground). Events reach the sinks through the `log`
//! facade, as the diagnostics of the other modules do.

pub mod event;
pub mod sink;

pub use event::{CommandLine, Ending, Event, Peer};
pub use sink::{SYSLOG_SOCKETS, Sink, Stderr, Syslog, choose, init};
