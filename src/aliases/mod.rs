//! The aliases file (aliases(5), `/etc/aliases`): parsing, expansion, and a
//! holder that reloads the file when it changes.
//!
//! Parsing and expansion are pure: text in, [`Aliases`] and warnings out;
//! a name in, leaf user names out. The only I/O is in [`AliasFile`], which
//! the server keeps for its lifetime: it re-stats the file at most once a
//! second and re-reads it when it changed, so an admin's edit takes effect
//! without a restart, and SIGHUP forces a reload.
//!
//! Targets are local names, `\\user`, addresses in our domains, programs
//! (`|cmd`), files (`/path`) and `:include:` files; programs and files are
//! kept with where they were named, which decides whether the policy
//! allows them and as whom they run. An address in a domain that is not
//! ours is refused and logged (we do not relay).
//!
//! The parts: `parse.rs` (aliases(5) text into [`Aliases`]), `expand.rs`
//! (a name into leaf users, [`Expansion`]) and `file.rs` (the reloading
//! [`AliasFile`]); the parsed aliases themselves are here.

mod expand;
mod file;
mod parse;

use std::collections::HashMap;
use std::fmt;

pub use expand::{
    Allow, Context, Expansion, Forwarded, Included, MAX_DEPTH, NoReader, Reader, Source, Sources,
    Special,
};
pub use file::AliasFile;
pub use parse::fold_name;

/// One target on the right-hand side of an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local name (`jon`), lower-cased: another alias or a user.
    Local(String),
    /// `\jon`: the user `jon`, not looked up in the aliases again
    /// (sendmail's escape against alias expansion).
    User(String),
    /// `user@domain`, both lower-cased; local if the caller says the domain
    /// is local, refused otherwise.
    Address { local: String, domain: String },
    /// `|command`: the message on the program's standard input.
    Command(String),
    /// `/path/file`: appended to as an mbox.
    File(String),
    /// `:include:/path`: more targets, read from that file.
    Include(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local(name) => f.write_str(name),
            Target::User(name) => write!(f, "\\{name}"),
            Target::Address { local, domain } => write!(f, "{local}@{domain}"),
            Target::Command(cmd) => write!(f, "\"|{cmd}\""),
            Target::File(path) => f.write_str(path),
            Target::Include(path) => write!(f, ":include:{path}"),
        }
    }
}

/// One alias: its targets and the line it starts on (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alias {
    targets: Vec<Target>,
    line: usize,
}

/// The parsed aliases of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    /// The file name, for messages (`FILE:LINE: ...`).
    source: String,
    /// The uid that owns the file: programs and files it names run as the
    /// default user if root, else as this owner.
    owner: u32,
    /// By lower-cased name.
    map: HashMap<String, Alias>,
}

impl Aliases {
    /// No aliases at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The number of aliases.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// True if `name` (lower-cased) is an alias.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The same aliases, read from a file owned by `uid`.
    pub fn owned_by(self, uid: u32) -> Self {
        Aliases { owner: uid, ..self }
    }

    /// The targets of alias `name` (lower-cased), as parsed.
    pub fn targets(&self, name: &str) -> Option<&[Target]> {
        self.map.get(name).map(|a| a.targets.as_slice())
    }
}

#[cfg(test)]
mod testutil;
