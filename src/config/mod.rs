//! The configuration file beneath the command line, and resolving both
//! against the system into the objects that run: the session limits, the
//! recipient policy, the delivery agent.
//!
//! The file (`/etc/postie/postie.conf`, or `-C FILE`) holds `key = value`
//! lines whose keys are the long options of
//! [`Options`](crate::cli::Options) (and `listen` of `serve`). Its values are not parsed here: each becomes `--key=value` and
//! goes through the very clap value parser the command line uses, so one
//! set of rules applies. The file's options are then put in front of the
//! command line's, leaving out those the command line gives itself: the
//! command line wins over the file, and the file over the built-in
//! defaults.
//!
//! Errors name `FILE:LINE: key: why` for a value from the file, and the
//! option (`--key value: why`) for one from the command line.
//!
//! The parts: `file.rs` (the file's syntax, and [`load`], which puts it
//! beneath the command line into a [`Loaded`]) and `resolve.rs` (the
//! options, from wherever they came, resolved against the system into a
//! [`Service`](crate::server::Service)); what both share is here.

mod file;
mod resolve;

use std::fmt;

pub use file::{Loaded, Setting, key_names, load, load_vetted, parse_file};
pub use resolve::{TlsSetup, mail_name, parse_delimiter, plausible_domain, service};

/// A configuration error, to be printed once by `main`.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The configuration file read when `-C` is not given. A missing one is
/// no error: everything has a built-in default.
pub const DEFAULT_FILE: &str = "/etc/postie/postie.conf";

/// `s` with quotes, backslashes and control characters escaped, for an
/// error message.
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod testutil;
