//! Who a user is: a local account that can own a mailbox, found in the
//! passwd database (NSS) or, for tests and chroots, a passwd(5) file.
//!
//! A lookup has three outcomes, kept apart all the way to the reply: the user
//! exists, the user does not exist (`550 5.1.1`), or the lookup itself failed
//! ([`LookupError`], `451 4.3.0`: an NSS hiccup must never bounce mail).
//! Which address reaches which user is [`crate::recipients`]'s question.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// A local user who can own a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The home directory (passwd's sixth field): where `~/.forward` is
    /// looked for and where the user's programs run.
    pub home: PathBuf,
    /// The login shell (passwd's seventh field): `SHELL` for the user's
    /// programs.
    pub shell: String,
}

/// The lookup itself failed (NSS unreachable, file unreadable): the answer
/// is "try later", never "no such user".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError(pub String);

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LookupError {}

/// A source of users: the system's passwd database, or a file for tests.
pub trait UserDb: Send + Sync {
    /// Looks up `name` exactly as given (the caller lower-cases).
    fn lookup(&self, name: &str) -> Result<Option<User>, LookupError>;

    /// Looks up the user of `uid` (the owner of an aliases or include
    /// file, who its programs and files run as). A database that cannot
    /// (a test's) finds nobody.
    fn lookup_uid(&self, uid: u32) -> Result<Option<User>, LookupError> {
        let _ = uid;
        Ok(None)
    }
}

/// True if `name` could be a user name at all: not empty, at most 255
/// bytes, no `/` (it names a file in the spool), no `:` (passwd(5)'s field
/// separator, and what tells a queue entry's file and program
/// destinations from mailboxes), no NUL or other control character, and
/// no leading `-` (it would read as an option to tools).
pub(crate) fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_control())
}

/// True if `name` could be a recipient postie delivers to: a
/// valid user name (`valid_user_name`) whose mailbox, `SPOOL/name`, is no
/// other file of the spool's: not ending in `.lock` (the mailbox of a user
/// `x.lock` is `x`'s dotlock, removed when it looks stale) and not
/// starting with `.` (postie's journals and temporary lock files).
///
/// Names failing this are answered "no such user" (550 5.1.1) without
/// asking NSS, so a hostile local part never reaches an NSS module; the
/// delivery process checks every name it is sent again.
pub fn plausible_user_name(name: &str) -> bool {
    valid_user_name(name) && !name.ends_with(".lock") && !name.starts_with('.')
}

/// The system passwd database through NSS (`getpwnam_r`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Nss;

impl UserDb for Nss {
    /// `getpwnam_r` says "not found" by returning 0 with a null result; any
    /// other return is an error. getpwnam(3) notes that some implementations
    /// also report "not found" as `ENOENT` or `ESRCH`, so those two are read
    /// as "no such user". It lists `EBADF` and `EPERM` too, but those are
    /// just as likely a real failure (a broken nscd socket, a database we may
    /// not read), and mistaking a failure for "no such user" would bounce
    /// mail, so they, like every other errno, are a [`LookupError`].
    fn lookup(&self, name: &str) -> Result<Option<User>, LookupError> {
        if !plausible_user_name(name) {
            return Ok(None);
        }
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Some(User {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
                shell: u.shell.to_string_lossy().into_owned(),
            })),
            Ok(None) | Err(Errno::ENOENT) | Err(Errno::ESRCH) => Ok(None),
            Err(e) => Err(LookupError(format!("getpwnam_r({name}): {}", e.desc()))),
        }
    }

    /// `getpwuid_r`, its errors read as [`Nss::lookup`] reads
    /// `getpwnam_r`'s; a name postie would not deliver to is nobody.
    fn lookup_uid(&self, uid: u32) -> Result<Option<User>, LookupError> {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) if plausible_user_name(&u.name) => Ok(Some(User {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
                shell: u.shell.to_string_lossy().into_owned(),
            })),
            Ok(_) | Err(Errno::ENOENT) | Err(Errno::ESRCH) => Ok(None),
            Err(e) => Err(LookupError(format!("getpwuid_r({uid}): {}", e.desc()))),
        }
    }
}

/// Users from a file in passwd(5) format, read once; for tests and chroots.
#[derive(Debug, Clone)]
pub struct PasswdFile {
    users: Vec<User>,
}

impl PasswdFile {
    /// Reads `path`: lines `name:password:uid:gid:gecos:dir:shell`; blank
    /// lines and lines starting with `#` are skipped. A malformed line is an
    /// error of kind [`io::ErrorKind::InvalidData`] reading `FILE:LINE: why`.
    pub fn load(path: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|(line, why)| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{line}: {why}", path.display()),
            )
        })
    }

    /// Parses passwd(5) text; an error gives the 1-based line number.
    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 7 {
                return Err((
                    line_no,
                    format!("expected 7 ':'-separated fields, found {}", fields.len()),
                ));
            }
            let name = fields[0];
            if !valid_user_name(name) {
                return Err((line_no, format!("invalid user name {name:?}")));
            }
            let uid = fields[2]
                .parse::<u32>()
                .map_err(|_| (line_no, format!("invalid uid {:?}", fields[2])))?;
            let gid = fields[3]
                .parse::<u32>()
                .map_err(|_| (line_no, format!("invalid gid {:?}", fields[3])))?;
            users.push(User {
                name: name.to_owned(),
                uid,
                gid,
                home: PathBuf::from(fields[5]),
                shell: fields[6].to_owned(),
            });
        }
        Ok(PasswdFile { users })
    }
}

impl UserDb for PasswdFile {
    /// Exact match on the name; the first entry wins, as with getpwnam(3).
    /// A name that is no [plausible](plausible_user_name) recipient is
    /// never found, as with [`Nss`].
    fn lookup(&self, name: &str) -> Result<Option<User>, LookupError> {
        if !plausible_user_name(name) {
            return Ok(None);
        }
        Ok(self.users.iter().find(|u| u.name == name).cloned())
    }

    /// The first entry with that uid, as with getpwuid(3).
    fn lookup_uid(&self, uid: u32) -> Result<Option<User>, LookupError> {
        Ok(self
            .users
            .iter()
            .find(|u| u.uid == uid && plausible_user_name(&u.name))
            .cloned())
    }
}

/// The group new mailboxes get, and the fsgid they are made with, when
/// postie runs as root: `mail`, if the system has it. Read for delivery
/// (the configuration, and the owner of a new mailbox) and by `postie
/// check`, which checks what delivery will do.
pub fn mail_gid() -> Option<u32> {
    nix::unistd::Group::from_name("mail")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn user(name: &str, uid: u32) -> User {
        User {
            name: name.to_owned(),
            uid,
            gid: uid,
            ..Default::default()
        }
    }

    fn passwd_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn passwd_file_loads_and_looks_up_exactly() {
        let f = passwd_file(
            "# users\n\
             root:x:0:0:root:/root:/bin/sh\n\
             \n\
             jon:x:1000:100:Jon Doe,,,:/home/jon:/bin/bash\n\
             jon:x:2000:200::/home/jon2:/bin/sh\n\
             svc:*:998:998:::\n",
        );
        let db = PasswdFile::load(f.path()).unwrap();
        let at = |u: User, home: &str, shell: &str| User {
            home: home.into(),
            shell: shell.to_owned(),
            ..u
        };
        assert_eq!(
            db.lookup("root"),
            Ok(Some(at(user("root", 0), "/root", "/bin/sh")))
        );
        assert_eq!(
            db.lookup("jon"),
            Ok(Some(User {
                name: "jon".to_owned(),
                uid: 1000,
                gid: 100,
                home: "/home/jon".into(),
                shell: "/bin/bash".to_owned(),
            }))
        );
        assert_eq!(db.lookup("svc"), Ok(Some(user("svc", 998))));
        assert_eq!(db.lookup("JON"), Ok(None));
        // By uid: the first entry, as getpwuid(3).
        assert_eq!(db.lookup_uid(1000).unwrap().unwrap().gid, 100);
        assert_eq!(db.lookup_uid(4242), Ok(None));
        assert_eq!(db.lookup("jo"), Ok(None));
        assert_eq!(db.lookup(""), Ok(None));
    }

    fn load_error(text: &str) -> (tempfile::NamedTempFile, io::Error) {
        let f = passwd_file(text);
        let e = PasswdFile::load(f.path()).unwrap_err();
        (f, e)
    }

    #[test]
    fn passwd_file_errors_name_the_line() {
        let cases = [
            ("root:x:0:0:root:/root:/bin/sh\njon:x:1000\n", 2, "7"),
            ("# c\n\njon:x:abc:1000::/home/jon:/bin/sh\n", 3, "uid"),
            ("jon:x:1000:-1::/home/jon:/bin/sh\n", 1, "gid"),
            ("jon:x:1000:1000::/home/jon:/bin/sh:extra\n", 1, "8"),
            ("root:x:0:0::/:/bin/sh\n:x:1:1::/:/bin/sh\n", 2, "name"),
        ];
        for (text, line, what) in cases {
            let (f, e) = load_error(text);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{text:?}");
            let msg = e.to_string();
            let prefix = format!("{}:{line}: ", f.path().display());
            assert!(msg.starts_with(&prefix), "{msg:?} should start {prefix:?}");
            assert!(msg.contains(what), "{msg:?} should mention {what:?}");
        }
    }

    #[test]
    fn passwd_file_missing_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let e = PasswdFile::load(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn implausible_user_names() {
        for name in [
            "",
            "a/b",
            "a\0b",
            "a\nb",
            // passwd(5)'s separator; and a queue key's, never a mailbox.
            "prog:jon:x",
            "-rf",
            "\u{7f}x",
            &"a".repeat(256),
            // postie 5, item 5: a dotlock's name, or hidden (where postie's
            // journals and temporary lock files are).
            "secvic.lock",
            "jon.lock",
            ".lock",
            ".hidden",
            ".postie-txn.1.2.0123456789abcdef",
        ] {
            assert!(!plausible_user_name(name), "{name:?}");
            assert_eq!(Nss.lookup(name), Ok(None), "{name:?}");
        }
        for name in [
            "jon",
            "jon-doe",
            "a_b.c",
            "+foo",
            "jon.locksmith",
            "lock",
            "a.",
            &"a".repeat(255),
        ] {
            assert!(plausible_user_name(name), "{name:?}");
        }
    }

    #[test]
    fn nss_finds_root() {
        let root = Nss.lookup("root").unwrap().expect("root exists");
        assert_eq!(root.name, "root");
        assert_eq!(root.uid, 0);
        assert_eq!(Nss.lookup_uid(0).unwrap().unwrap().name, "root");
    }

    #[test]
    fn nss_does_not_find_a_nonexistent_user() {
        assert_eq!(Nss.lookup("no-such-user-xyzzy"), Ok(None));
    }
}
