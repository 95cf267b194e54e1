//! Where one copy of a message goes ([`Dest`]): a user's mailbox, a file
//! or a program, each file and program with the user it is written or run
//! as; and its key, the one-line text that names it in a queue entry
//! (`user` and `pending` lines) and in the journal's queue steps.
//!
//! A key is the user's name for a mailbox (`jon`), as before programs and
//! files existed, so that entries written then read the same; a file is
//! `file:USER:PATH` and a program `prog:USER:COMMAND`. No user name that
//! postie delivers to holds a `:` ([`crate::users::plausible_user_name`]:
//! it separates passwd(5)'s fields), so a key with one is never a mailbox.
//! A key never holds a control character: it is always one line.
//!
//! Which user a file or program gets is decided where the recipient is
//! expanded, in the delivery process, from where it was named
//! ([`crate::aliases::Source`]); the queue directory is root's alone, so
//! the key it keeps is as trusted as that decision.

use std::fmt;

use crate::users::plausible_user_name;

/// The longest key: a command or a path with room to spare (Postfix's
/// `line_length_limit` is 2048 for the whole line).
pub const MAX_KEY: usize = 4096;

/// Where one copy of a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dest {
    /// The mailbox of the user of this name (`SPOOL/NAME`).
    Mailbox(String),
    /// An mbox file outside the spool, written as `user`.
    File { user: String, path: String },
    /// A program, run as `user` with the message on its standard input.
    Program { user: String, command: String },
}

impl Dest {
    /// The destination a key names; `None` if it is no valid key.
    pub fn parse(key: &str) -> Option<Dest> {
        if key.len() > MAX_KEY || key.chars().any(char::is_control) {
            return None;
        }
        let Some((kind, rest)) = key.split_once(':') else {
            return plausible_user_name(key).then(|| Dest::Mailbox(key.to_owned()));
        };
        let (user, what) = rest.split_once(':')?;
        if !plausible_user_name(user) || what.trim().is_empty() {
            return None;
        }
        let user = user.to_owned();
        match kind {
            "file" if what.starts_with('/') => Some(Dest::File {
                user,
                path: what.to_owned(),
            }),
            "prog" => Some(Dest::Program {
                user,
                command: what.to_owned(),
            }),
            _ => None,
        }
    }

    /// Whether `key` names a destination.
    pub fn is_key(key: &str) -> bool {
        Dest::parse(key).is_some()
    }

    /// Its key (see the module documentation).
    pub fn key(&self) -> String {
        match self {
            Dest::Mailbox(name) => name.clone(),
            Dest::File { user, path } => format!("file:{user}:{path}"),
            Dest::Program { user, command } => format!("prog:{user}:{command}"),
        }
    }

    /// The name the journal gives the target of destination `key`: the
    /// user's name for a mailbox, the path for a file (a program has no
    /// target; its key is returned as it is).
    pub fn journal_name(key: &str) -> String {
        match Dest::parse(key) {
            Some(Dest::File { path, .. }) => path,
            _ => key.to_owned(),
        }
    }
}

impl fmt::Display for Dest {
    /// As the mail log and `postie check` show it: `jon`, `/var/log/archive
    /// (as nobody)`, `"|/usr/bin/procmail" (as jon)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Mailbox(name) => f.write_str(name),
            Dest::File { user, path } => write!(f, "{path} (as {user})"),
            Dest::Program { user, command } => write!(f, "\"|{command}\" (as {user})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_round_trip_and_mailboxes_stay_user_names() {
        let cases = [
            (Dest::Mailbox("jon".into()), "jon"),
            (
                Dest::File {
                    user: "nobody".into(),
                    path: "/var/log/mail archive".into(),
                },
                "file:nobody:/var/log/mail archive",
            ),
            (
                Dest::Program {
                    user: "jon".into(),
                    command: "/usr/bin/procmail -a \"x:y\"".into(),
                },
                "prog:jon:/usr/bin/procmail -a \"x:y\"",
            ),
        ];
        for (dest, key) in cases {
            assert_eq!(dest.key(), key);
            assert_eq!(Dest::parse(key), Some(dest));
        }
    }

    /// A key that could name something else, or be two lines, is none.
    #[test]
    fn bad_keys_are_refused() {
        for key in [
            "",
            "-rf",
            "x.lock",
            ".journal",
            "../etc",
            "file:jon:relative/path",
            "file:jon:",
            "prog:jon:",
            "prog:jon:  ",
            "prog::/bin/true",
            "prog:a/b:/bin/true",
            "pipe:jon:/bin/true",
            "prog:jon:/bin/true\nrcpt - - <eve@evil>",
            "jon\r",
        ] {
            assert_eq!(Dest::parse(key), None, "{key:?}");
        }
        assert_eq!(
            Dest::parse(&format!("prog:jon:{}", "x".repeat(MAX_KEY))),
            None
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_what_parses_round_trips(key in any::<String>()) {
            if let Some(d) = Dest::parse(&key) {
                prop_assert_eq!(d.key(), key);
            }
        }
    }
}
