//! Who a recipient is: local domains, the passwd database, address extensions.
//!
//! A lookup has three outcomes, kept apart all the way to the reply: the user
//! exists, the user does not exist (`550 5.1.1`), or the lookup itself failed
//! (`451 4.3.0`: an NSS hiccup must never bounce mail).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use crate::smtp::Mailbox;

/// A local user who can own a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The lookup itself failed (NSS unreachable, file unreadable): the answer
/// is "try later", never "no such user".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError(pub String);

/// A source of users: the system's passwd database, or a file for tests.
pub trait UserDb: Send + Sync {
    /// Looks up `name` exactly as given (the caller lower-cases).
    fn lookup(&self, name: &str) -> Result<Option<User>, LookupError>;
}

/// The system passwd database through NSS (`getpwnam_r`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Nss;

impl UserDb for Nss {
    fn lookup(&self, name: &str) -> Result<Option<User>, LookupError> {
        todo!()
    }
}

/// Users from a file in passwd(5) format, read once; for tests and chroots.
#[derive(Debug, Clone)]
pub struct PasswdFile {
    users: Vec<User>,
}

impl PasswdFile {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        todo!()
    }
}

impl UserDb for PasswdFile {
    fn lookup(&self, name: &str) -> Result<Option<User>, LookupError> {
        todo!()
    }
}

/// The domains postie delivers for. Compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct LocalDomains {
    names: HashSet<String>,
    addrs: Vec<IpAddr>,
}

impl LocalDomains {
    /// Exactly the given names and addresses (for tests).
    pub fn new(names: impl IntoIterator<Item = String>, addrs: Vec<IpAddr>) -> Self {
        todo!()
    }

    /// The host's: `hostname`, the short host name and FQDN, the contents of
    /// `/etc/mailname`, `localhost`, the host's interface addresses (as
    /// address literals) and `extra`.
    pub fn detect(hostname: &str, extra: &[String]) -> Self {
        todo!()
    }

    /// True if `domain` (a name, or an address literal with its brackets)
    /// is local.
    pub fn is_local(&self, domain: &str) -> bool {
        todo!()
    }
}

/// What a recipient address resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A local user, whose mailbox is `SPOOL/<name>`.
    Local(User),
    /// A local domain, but no such user: `550 5.1.1`.
    Unknown,
    /// Not one of our domains: `550 5.7.1` relaying denied.
    NotLocal,
    /// The lookup failed: `451 4.3.0`.
    TempFail(String),
}

/// Resolves recipient addresses to local users.
pub struct Recipients {
    domains: LocalDomains,
    db: Box<dyn UserDb>,
    delimiter: Option<char>,
}

impl Recipients {
    pub fn new(domains: LocalDomains, db: Box<dyn UserDb>, delimiter: Option<char>) -> Self {
        Recipients { domains, db, delimiter }
    }

    /// Resolves one address: domain check, lower-casing, extension
    /// (`user+tag` → `user`), `postmaster` → `root`, passwd lookup.
    pub fn resolve(&self, to: &Mailbox) -> Resolution {
        todo!()
    }

    /// Looks up a user by the name [`Resolution::Local`] gave.
    pub fn user(&self, name: &str) -> Result<Option<User>, LookupError> {
        self.db.lookup(name)
    }
}
