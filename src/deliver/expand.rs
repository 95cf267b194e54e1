//! The delivery process's own expansion of each recipient: where its
//! copies go ([`crate::dest::Dest`]), and as whom.
//!
//! The SMTP side tells only which address each recipient is; what it
//! expanded is never trusted for a program or a file. The delivery
//! process expands the address again with its own view of the aliases,
//! reads the `:include:` and `~/.forward` files the expansion reaches
//! ([`FileReader`]), and decides who each program runs as and each file
//! is written as, from where it was named ([`Source`]):
//!
//! * a root-owned aliases or `:include:` file: the default user
//!   (`--default-user`, `nobody`, as Postfix's `default_privs`);
//! * an aliases or `:include:` file owned by anyone else: that owner (the
//!   user of that uid in the passwd database; none: the target is
//!   refused);
//! * `~user/.forward`: the user;
//! * never root: root's own `.forward`, or a file owned by another user
//!   of uid 0, gets the default user too.
//!
//! The user is decided the same way when postie is not root; it then
//! writes and runs everything as its own user (as its mailbox deliveries
//! do), with the named user's home and name in a program's environment.

use std::time::Duration;

use super::Deliverer;
use super::target::Failure;
use crate::aliases::{Forwarded, Included, Reader, Source, Special};
use crate::dest::Dest;
use crate::forward::{self, ForwardFile, IncludeFile};
use crate::message::Explained;
use crate::recipients::Expanded;
use crate::smtp::{Envelope, TempReason};
use crate::users::User;

/// How programs and files are delivered to.
#[derive(Debug, Clone)]
pub struct SpecialSetup {
    /// Who programs and files named by root's files run as; never root.
    pub default_user: String,
    /// How long a program may run (Postfix's `command_time_limit`).
    pub command_time_limit: Duration,
}

impl Default for SpecialSetup {
    fn default() -> Self {
        SpecialSetup {
            default_user: "nobody".into(),
            command_time_limit: Duration::from_secs(1000),
        }
    }
}

/// Reads `.forward` and `:include:` files for the expansion
/// ([`crate::forward`]: each with the identity and the safety checks it
/// needs), and logs what it skipped or ignored.
struct FileReader<'d> {
    deliverer: &'d Deliverer,
}

impl Reader for FileReader<'_> {
    fn forward(&self, name: &str) -> Forwarded {
        let user = match self.deliverer.recipients.user(name) {
            Ok(Some(user)) => user,
            // Not a user: the expansion finds it unknown.
            Ok(None) => return Forwarded::Mailbox(None),
            Err(e) => return Forwarded::Failed(e.0),
        };
        match forward::read_forward(&user) {
            ForwardFile::Absent => Forwarded::Mailbox(None),
            ForwardFile::Targets { targets, warnings } => {
                for w in warnings {
                    log::warn!("{w}");
                }
                Forwarded::Targets(targets)
            }
            ForwardFile::Unsafe(why) => {
                log::warn!("{why}; ignored, the mail goes to the mailbox of {name}");
                Forwarded::Mailbox(Some(why))
            }
            ForwardFile::Failed(why) => Forwarded::Failed(why),
        }
    }

    fn include(&self, path: &str, source: &Source) -> Included {
        // Read as whoever named it: the owner of the aliases file, or of
        // the include file that names this one.
        let reader = match source {
            Source::Aliases { owner } => (*owner, 0),
            Source::Include { owner, group, .. } => (*owner, *group),
            Source::Forward { .. } => {
                return Included::Refused(":include: is not read from a .forward".into());
            }
        };
        let reader = match reader {
            (0, _) => (0, 0),
            (uid, 0) => match self.deliverer.recipients.user_by_uid(uid) {
                Ok(Some(u)) => (u.uid, u.gid),
                Ok(None) => {
                    return Included::Refused(format!(
                        "{path}: named by uid {uid}, who is no user"
                    ));
                }
                Err(e) => return Included::Failed(e.0),
            },
            ids => ids,
        };
        match forward::read_include(std::path::Path::new(path), reader) {
            IncludeFile::Targets {
                targets,
                warnings,
                owner_uid,
                owner_gid,
            } => {
                for w in warnings {
                    log::warn!("{w}");
                }
                Included::Targets {
                    targets,
                    owner: owner_uid,
                    group: owner_gid,
                }
            }
            IncludeFile::Unsafe(why) => Included::Refused(why),
            IncludeFile::Failed(why) => Included::Failed(why),
        }
    }
}

impl Deliverer {
    /// `env` with each recipient's destinations (their keys) in place of
    /// the users the SMTP side found: expanded here, with `.forward` and
    /// `:include:` files read. A recipient that expands to nothing now (an
    /// alias changed since RCPT), or whose expansion failed, fails the
    /// whole delivery for now (4xx): the client tries again, and is told
    /// at RCPT what the address is then.
    pub(super) fn with_destinations(&self, env: &Envelope) -> Result<Envelope, Failure> {
        let mut env = env.clone();
        // A file reached twice, as two users: written once, as the first.
        let mut files: Vec<Dest> = Vec::new();
        for r in &mut env.recipients {
            let mut dests = self.destinations(&r.path)?;
            for d in &mut dests {
                if let Dest::File { path, .. } = d {
                    match files
                        .iter()
                        .find(|f| matches!(f, Dest::File { path: p, .. } if p == path))
                    {
                        Some(first) => *d = first.clone(),
                        None => files.push(d.clone()),
                    }
                }
            }
            let mut keys: Vec<String> = dests.iter().map(Dest::key).collect();
            keys.sort_unstable();
            keys.dedup();
            r.users = keys;
        }
        Ok(env)
    }

    /// Where mail to `to` goes, for `postie check`.
    pub(super) fn explain(&self, to: &crate::smtp::Mailbox) -> Result<Explained, String> {
        self.expanded(to).map_err(|f| f.why)
    }

    /// Where mail to `to` goes, sorted, no destination twice.
    fn destinations(&self, to: &crate::smtp::Mailbox) -> Result<Vec<Dest>, Failure> {
        self.expanded(to).map(|e| e.dests)
    }

    /// [`destinations`](Self::destinations), and the `.forward` files
    /// ignored on the way.
    fn expanded(&self, to: &crate::smtp::Mailbox) -> Result<Explained, Failure> {
        let temp = |why: String| Failure::temp(TempReason::LookupFailed, why);
        let (users, expansion) = match self.recipients.expand(to, &FileReader { deliverer: self }) {
            Expanded::Found { users, expansion } => (users, expansion),
            Expanded::TempFail(why) => return Err(temp(format!("{to}: {why}"))),
            Expanded::Unknown | Expanded::NotLocal => {
                return Err(temp(format!("{to}: no longer a recipient here")));
            }
        };
        let mut dests: Vec<Dest> = users.into_iter().map(|u| Dest::Mailbox(u.name)).collect();
        for special in &expansion.specials {
            let text = match special {
                Special::Command { command, .. } => command,
                Special::File { path, .. } => path,
            };
            if text.chars().any(char::is_control) || text.len() > crate::dest::MAX_KEY / 2 {
                log::warn!("{to}: {special}: a control character, or too long; not delivered to");
                continue;
            }
            if let Special::File { path, .. } = special {
                if std::path::Path::new(path).starts_with(&self.spool) {
                    log::warn!(
                        "{to}: {special}: a file in the mail spool; name its user instead; not delivered to"
                    );
                    continue;
                }
            }
            let user = match self.run_as(special.source()) {
                Ok(Some(user)) => user,
                Ok(None) => continue,
                Err(why) => return Err(temp(why)),
            };
            dests.push(match special {
                Special::Command { command, .. } => Dest::Program {
                    user,
                    command: command.clone(),
                },
                Special::File { path, .. } => Dest::File {
                    user,
                    path: path.clone(),
                },
            });
        }
        dests.sort();
        dests.dedup();
        if dests.is_empty() {
            return Err(temp(format!("{to}: no longer a recipient here")));
        }
        Ok(Explained {
            dests,
            ignored_forwards: expansion.ignored_forwards,
        })
    }

    /// The user a program or file named by `source` runs as (see the
    /// module documentation): `Ok(None)` if there is none (logged; the
    /// target is left out), `Err` if a lookup failed.
    fn run_as(&self, source: &Source) -> Result<Option<String>, String> {
        let owner = match source {
            Source::Aliases { owner } | Source::Include { owner, .. } => {
                if *owner == 0 {
                    None
                } else {
                    match self.recipients.user_by_uid(*owner) {
                        Ok(Some(u)) => Some(u),
                        Ok(None) => {
                            log::warn!(
                                "{}: owned by uid {owner}, who is no user: its programs and files are not delivered to",
                                source_name(source)
                            );
                            return Ok(None);
                        }
                        Err(e) => return Err(e.0),
                    }
                }
            }
            Source::Forward { user } => match self.recipients.user(user) {
                Ok(u) => u,
                Err(e) => return Err(e.0),
            },
        };
        match owner {
            Some(u) if u.uid != 0 => Ok(Some(u.name)),
            _ => self.default_user().map(|u| Some(u.name)),
        }
    }

    /// The default user, checked: it exists and is not root.
    fn default_user(&self) -> Result<User, String> {
        let name = &self.special.default_user;
        match self.recipients.user(name) {
            Ok(Some(u)) if u.uid != 0 => Ok(u),
            Ok(Some(_)) => Err(format!("default-user {name} is root; refused")),
            Ok(None) => Err(format!("default-user {name}: no such user")),
            Err(e) => Err(e.0),
        }
    }
}

/// The file a source is, for messages.
fn source_name(source: &Source) -> String {
    match source {
        Source::Aliases { .. } => "the aliases file".into(),
        Source::Include { path, .. } => path.clone(),
        Source::Forward { user } => format!("~{user}/.forward"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::tests::{deliverer, envelope};
    use super::*;
    use crate::aliases::AliasFile;
    use crate::domains::LocalDomains;
    use crate::message::MessageBuf;
    use crate::recipients::Recipients;
    use crate::smtp::Outcome;
    use crate::users::PasswdFile;

    /// A deliverer whose users are `passwd`'s and whose aliases are
    /// `aliases`, in `dir`.
    fn with(dir: &std::path::Path, passwd: &str, aliases: &str) -> Deliverer {
        let mut d = deliverer(dir);
        // Not root, the aliases file is ours: its programs run as the user
        // of our uid, `me`.
        let me = format!(
            "me:x:{}:{}::/nonexistent:/bin/sh\n",
            nix::unistd::geteuid(),
            nix::unistd::getegid()
        );
        let passwd = if nix::unistd::geteuid().is_root() {
            passwd.to_string()
        } else {
            format!("{passwd}{me}")
        };
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("aliases"), aliases).unwrap();
        d.recipients = std::sync::Arc::new(Recipients::new(
            LocalDomains::new(["h".to_string()], vec![]),
            Box::new(PasswdFile::load(&dir.join("passwd")).unwrap()),
            Some('+'),
            AliasFile::open(&dir.join("aliases")),
        ));
        d
    }

    /// Who the programs and files of the test's aliases file (root's, or
    /// ours) run as.
    fn runs_as() -> &'static str {
        if nix::unistd::geteuid().is_root() {
            "nobody"
        } else {
            "me"
        }
    }

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\n\
                          jon:x:1000:1000::/nonexistent:/bin/sh\n\
                          owner:x:1234:1234::/nonexistent:/bin/sh\n\
                          nobody:x:65534:65534::/nonexistent:/bin/sh\n";

    /// Who a program or a file runs as: the default user for root's
    /// aliases and include files and for root's own .forward; the owner
    /// of anyone else's file; the user of a .forward; nobody at all for
    /// an owner the passwd database does not know (the target is left
    /// out); and an error for a default user that is missing or root.
    #[test]
    fn who_programs_and_files_run_as() {
        let dir = tempfile::tempdir().unwrap();
        let d = with(dir.path(), PASSWD, "");
        let run_as = |source: Source| d.run_as(&source);
        let include = |owner| Source::Include {
            path: "/etc/list".into(),
            owner,
            group: owner,
        };
        let forward = |user: &str| Source::Forward { user: user.into() };
        assert_eq!(
            run_as(Source::Aliases { owner: 0 }),
            Ok(Some("nobody".into()))
        );
        assert_eq!(
            run_as(Source::Aliases { owner: 1234 }),
            Ok(Some("owner".into()))
        );
        assert_eq!(run_as(include(0)), Ok(Some("nobody".into())));
        assert_eq!(run_as(include(1234)), Ok(Some("owner".into())));
        assert_eq!(run_as(include(4242)), Ok(None));
        assert_eq!(run_as(forward("jon")), Ok(Some("jon".into())));
        assert_eq!(run_as(forward("root")), Ok(Some("nobody".into())));
        // The default user: never root, and it must exist.
        let mut d = with(dir.path(), PASSWD, "");
        d.special.default_user = "root".into();
        assert!(
            d.run_as(&Source::Aliases { owner: 0 })
                .unwrap_err()
                .contains("root")
        );
        d.special.default_user = "ghost".into();
        assert!(d.run_as(&Source::Aliases { owner: 0 }).is_err());
    }

    /// The SMTP side's users are never trusted: a recipient that claims a
    /// program (by its queue key) gets what delivery's own expansion says,
    /// here jon's mailbox; and an alias's program is found by delivery
    /// itself, even when the SMTP side sent no user at all.
    #[test]
    fn delivery_expands_every_recipient_itself() {
        let dir = tempfile::tempdir().unwrap();
        let d = with(dir.path(), PASSWD, "pipe: \"|/bin/true\", jon\n");
        let mut env = envelope(&["jon", "pipe"]);
        env.recipients[0].users = vec!["prog:jon:/bin/sh -c evil".into()];
        env.recipients[1].users = vec![];
        let env = d.with_destinations(&env).unwrap();
        assert_eq!(env.recipients[0].users, ["jon"]);
        let owner = runs_as();
        assert_eq!(
            env.recipients[1].users,
            ["jon".to_string(), format!("prog:{owner}:/bin/true")]
        );
        // Without a queue, a program cannot be delivered: 4xx, nothing
        // appended anywhere.
        let mut msg = MessageBuf::new(1024, dir.path().to_path_buf());
        msg.write_all(b"Subject: x\n\nbody\n").unwrap();
        let out = d.deliver(&envelope(&["pipe"]), &msg);
        assert!(matches!(out, Outcome::Temporary(_)), "{out:?}");
        assert!(!dir.path().join("jon").exists());
    }

    /// A file in the mail spool is no file target (a user's mailbox is
    /// named by the user), and a file reached twice, as two users, is
    /// written once, as the first.
    #[test]
    fn files_in_the_spool_are_refused_and_files_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().to_path_buf();
        let d = with(
            dir.path(),
            PASSWD,
            &format!("bad: {}/jon\nboth: /var/x, jon\n", spool.display()),
        );
        let env = envelope(&["bad"]);
        assert!(d.with_destinations(&env).is_err());
        let env = d.with_destinations(&envelope(&["both", "jon"])).unwrap();
        assert_eq!(
            env.recipients[0].users,
            [format!("file:{}:/var/x", runs_as()), "jon".to_string()]
        );
    }
}
