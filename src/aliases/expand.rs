//! Expanding a recipient to where its mail goes ([`Aliases::expand_with`]):
//! recursion through aliases, local-domain addresses, `:include:` files and
//! `~/.forward` files; sendmail's rule for a name met again on its own
//! path; program and file targets kept with where they were named (which
//! decides who they run as) or refused by the policy ([`Allow`]); and the
//! other refusals (other domains, too deep, too many targets), each logged
//! with the file, line and alias.
//!
//! The walk itself is pure: what it reads besides the aliases (a
//! `.forward`, an `:include:` file) it asks of a [`Reader`]. The SMTP side
//! reads neither ([`NoReader`]: a user is a mailbox, an include counts as
//! reaching someone); the delivery process reads both, with the
//! identities `crate::forward` takes.

use std::fmt;

use super::{Aliases, Target};

/// Aliases nested deeper than this are not expanded (sendmail's
/// `MaxAliasRecursion` is 10; we allow more and still stop loops early).
/// `.forward` and `:include:` files count as levels too.
pub const MAX_DEPTH: usize = 32;

/// At most this many targets are visited in one expansion. Depth alone does
/// not bound the work: aliases that each list the next one several times
/// grow exponentially with depth.
const MAX_VISITS: usize = 10_000;

/// Where a program or file target was named: this decides whether the
/// policy allows it ([`Allow`]) and as whom it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The aliases file, owned by uid `owner`.
    Aliases { owner: u32 },
    /// An `:include:` file at `path`, owned by `owner`, `group`.
    Include {
        path: String,
        owner: u32,
        group: u32,
    },
    /// `~user/.forward`.
    Forward { user: String },
}

impl Source {
    /// The policy's word for it (`allow-commands = aliases, forward`).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Aliases { .. } => "aliases",
            Source::Include { .. } => "include",
            Source::Forward { .. } => "forward",
        }
    }
}

/// Which sources may name program, file and include targets: Postfix's
/// `allow_mail_to_commands` and `allow_mail_to_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow {
    pub commands: Sources,
    pub files: Sources,
}

/// A set of [`Source`] kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub aliases: bool,
    pub include: bool,
    pub forward: bool,
}

impl Sources {
    /// None at all.
    pub const NONE: Sources = Sources {
        aliases: false,
        include: false,
        forward: false,
    };

    /// Whether `source`'s kind is in the set.
    pub fn has(&self, source: &Source) -> bool {
        match source {
            Source::Aliases { .. } => self.aliases,
            Source::Include { .. } => self.include,
            Source::Forward { .. } => self.forward,
        }
    }

    /// Parses `aliases, include, forward` (any of them, in any order,
    /// separated by commas and/or spaces; empty: none).
    pub fn parse(text: &str) -> Result<Sources, String> {
        let mut set = Sources::NONE;
        for word in text.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            match word {
                "aliases" | "alias" => set.aliases = true,
                "include" => set.include = true,
                "forward" => set.forward = true,
                other => {
                    return Err(format!(
                        "unknown source {other:?} (expected aliases, include, forward)"
                    ));
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (self.aliases, "aliases"),
            (self.include, "include"),
            (self.forward, "forward"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        f.write_str(&words.join(", "))
    }
}

impl Default for Allow {
    /// Postfix's defaults: programs and files from the aliases and from
    /// `.forward` files, not from `:include:` files.
    fn default() -> Self {
        let classic = Sources {
            aliases: true,
            include: false,
            forward: true,
        };
        Allow {
            commands: classic,
            files: classic,
        }
    }
}

/// What a user's `.forward` says, as a [`Reader`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// Not read (the SMTP side), no such file, or an unsafe one (logged
    /// by the reader, with `why` for `postie check`): the user's mailbox.
    Mailbox(Option<String>),
    /// Its targets, in order.
    Targets(Vec<Target>),
    /// It could not be read for a reason that may pass: try again later.
    Failed(String),
}

/// What an `:include:` file says, as a [`Reader`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Included {
    /// Not read here (the SMTP side): counts as reaching someone.
    NotRead,
    /// Its targets, and its owner.
    Targets {
        targets: Vec<Target>,
        owner: u32,
        group: u32,
    },
    /// Unsafe or missing: refused, why.
    Refused(String),
    /// It could not be read for a reason that may pass.
    Failed(String),
}

/// What the walk reads besides the aliases.
pub trait Reader {
    /// `~name/.forward`, for a name that is no alias.
    fn forward(&self, name: &str) -> Forwarded;
    /// The `:include:` file `path`, named by `source`.
    fn include(&self, path: &str, source: &Source) -> Included;
}

/// The SMTP side's reader: reads nothing.
pub struct NoReader;

impl Reader for NoReader {
    fn forward(&self, _name: &str) -> Forwarded {
        Forwarded::Mailbox(None)
    }

    fn include(&self, _path: &str, _source: &Source) -> Included {
        Included::NotRead
    }
}

/// What an expansion is done with: which domains are ours, the policy,
/// and the reader of `.forward` and `:include:` files.
pub struct Context<'a> {
    pub is_local_domain: &'a dyn Fn(&str) -> bool,
    pub allow: Allow,
    pub reader: &'a dyn Reader,
}

/// A program or a file an expansion reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Special {
    /// `|command`, as written after the bar.
    Command { command: String, source: Source },
    /// `/path`, as written.
    File { path: String, source: Source },
}

impl Special {
    /// Where it was named.
    pub fn source(&self) -> &Source {
        match self {
            Special::Command { source, .. } | Special::File { source, .. } => source,
        }
    }
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Special::Command { command, .. } => write!(f, "\"|{command}\""),
            Special::File { path, .. } => f.write_str(path),
        }
    }
}

/// What a name expands to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Leaf local names (not aliases, or taken literally): mailboxes,
    /// sorted and de-duplicated. Empty if every target was refused.
    pub users: Vec<String>,
    /// The programs and files reached, sorted and de-duplicated.
    pub specials: Vec<Special>,
    /// `:include:` files the reader did not read (the SMTP side).
    pub unread_includes: usize,
    /// Users whose `.forward` was ignored, and why (for `postie check`).
    pub ignored_forwards: Vec<(String, String)>,
    /// A file that could not be read for a reason that may pass: the
    /// whole expansion is to be tried again later.
    pub failed: Option<String>,
    /// One human-readable line per refused target (`FILE:LINE: alias NAME:
    /// TARGET: why`), in the order met; already logged by
    /// [`Aliases::expand_with`].
    pub refused: Vec<String>,
    /// The same refusals, short: `TARGET: why`.
    pub reasons: Vec<String>,
}

impl Expansion {
    /// Whether mail reaches anyone: a mailbox, a program, a file, or an
    /// include not read here.
    pub fn reaches_someone(&self) -> bool {
        !self.users.is_empty() || !self.specials.is_empty() || self.unread_includes > 0
    }

    /// Why the expansion reaches no user, for a report that the alias is
    /// an unknown recipient: its leaves are no users (`none of its users
    /// exists`) and/or its targets were refused (`"|/usr/bin/prog":
    /// program targets are not allowed in the aliases (allow-commands)`).
    pub fn why_nobody(&self) -> String {
        let mut parts = Vec::new();
        if !self.users.is_empty() || self.reasons.is_empty() {
            parts.push("none of its users exists");
        }
        parts.extend(self.reasons.iter().map(String::as_str));
        parts.join("; ")
    }
}

impl Aliases {
    /// [`expand_with`](Self::expand_with) as the SMTP side sees it: the
    /// default policy, no `.forward` or `:include:` file read.
    pub fn expand(&self, name: &str, is_local_domain: &dyn Fn(&str) -> bool) -> Expansion {
        self.expand_with(
            name,
            &Context {
                is_local_domain,
                allow: Allow::default(),
                reader: &NoReader,
            },
        )
    }

    /// Expands `name` (lower-cased, extension already stripped).
    ///
    /// - An alias is expanded through its targets; a name that is not an
    ///   alias is a user, whose `.forward` the reader is asked for: its
    ///   targets are expanded in turn, or the user is a mailbox.
    /// - Local names and addresses in a domain for which `is_local_domain`
    ///   is true are expanded recursively; `\user` is that user's mailbox,
    ///   as written. Targets are taken literally: no extension is stripped.
    /// - A name met again on its own expansion path is the mailbox of that
    ///   name (sendmail's rule): `jon: jon, jon-archive` delivers to user
    ///   `jon` and expands `jon-archive`; a loop `a: b`, `b: a` (aliases or
    ///   `.forward` files alike) ends at user `a`.
    /// - `|command` and `/file` are kept with their [`Source`] if the policy
    ///   allows that source, refused otherwise; `:include:` files are read
    ///   (from the aliases and other include files; never from a
    ///   `.forward`) and their targets expanded.
    /// - Non-local addresses are refused (postie does not relay), and so is
    ///   anything nested deeper than [`MAX_DEPTH`]: each refusal is logged
    ///   here (`log::warn!`, naming FILE:LINE and the alias) and listed in
    ///   [`Expansion::refused`].
    pub fn expand_with(&self, name: &str, cx: &Context<'_>) -> Expansion {
        let mut walk = Walk {
            aliases: self,
            cx,
            path: Vec::new(),
            out: Expansion::default(),
            visits: 0,
        };
        walk.visit(name, None);
        let mut out = walk.out;
        out.users.sort_unstable();
        out.users.dedup();
        out.specials.sort_unstable();
        out.specials.dedup();
        out
    }
}

/// Where a target was read, for messages: `FILE:LINE: alias NAME` or
/// `FILE: `.
#[derive(Clone, Copy)]
struct From<'s> {
    file: &'s str,
    line: Option<usize>,
    /// The alias (or the user of a `.forward`) whose target it is.
    name: &'s str,
}

/// The state of one expansion.
struct Walk<'a> {
    aliases: &'a Aliases,
    cx: &'a Context<'a>,
    /// The names and files being expanded, outermost first.
    path: Vec<String>,
    out: Expansion,
    visits: usize,
}

impl Walk<'_> {
    /// Counts a visit; false once there were too many.
    fn count(&mut self, from: Option<From<'_>>, what: &dyn fmt::Display) -> bool {
        self.visits += 1;
        if self.visits == MAX_VISITS + 1 {
            self.refuse(
                from,
                what,
                &format!("more than {MAX_VISITS} targets; stopped"),
            );
        }
        self.visits <= MAX_VISITS
    }

    /// Expands the local name `name`, reached from `from` or asked for by
    /// the caller (`None`).
    fn visit(&mut self, name: &str, from: Option<From<'_>>) {
        if !self.count(from, &name) {
            return;
        }
        if self.path.iter().any(|p| p == name) {
            // Self-reference: the mailbox of that name.
            self.out.users.push(name.to_owned());
            return;
        }
        let aliases = self.aliases;
        if let Some(alias) = aliases.map.get(name) {
            if !self.deep_enough(from, &name) {
                return;
            }
            let here = From {
                file: &aliases.source,
                line: Some(alias.line),
                name,
            };
            let source = Source::Aliases {
                owner: aliases.owner,
            };
            self.path.push(name.to_owned());
            self.targets(&alias.targets, here, &source);
            self.path.pop();
            return;
        }
        match self.cx.reader.forward(name) {
            Forwarded::Mailbox(why) => {
                if let Some(why) = why {
                    self.out.ignored_forwards.push((name.to_owned(), why));
                }
                self.out.users.push(name.to_owned());
            }
            Forwarded::Failed(why) => self.fail(why),
            Forwarded::Targets(targets) => {
                if !self.deep_enough(from, &name) {
                    return;
                }
                let file = format!("~{name}/.forward");
                let here = From {
                    file: &file,
                    line: None,
                    name,
                };
                let source = Source::Forward {
                    user: name.to_owned(),
                };
                self.path.push(name.to_owned());
                self.targets(&targets, here, &source);
                self.path.pop();
            }
        }
    }

    /// Whether one more level fits under [`MAX_DEPTH`]; refuses `what` if
    /// not.
    fn deep_enough(&mut self, from: Option<From<'_>>, what: &dyn fmt::Display) -> bool {
        if self.path.len() < MAX_DEPTH {
            return true;
        }
        self.refuse(
            from,
            what,
            &format!("nested deeper than {MAX_DEPTH}; not expanded"),
        );
        false
    }

    /// Expands the targets of one alias, `.forward` or include file.
    fn targets(&mut self, targets: &[Target], here: From<'_>, source: &Source) {
        let allow = self.cx.allow;
        for target in targets {
            let from = Some(here);
            match target {
                Target::Local(local) => self.visit(local, from),
                Target::User(user) => {
                    if self.count(from, target) {
                        self.out.users.push(user.clone());
                    }
                }
                Target::Address { local, domain } => {
                    if (self.cx.is_local_domain)(domain) {
                        self.visit(local, from);
                    } else {
                        self.refuse(from, target, "not a local domain; not relayed");
                    }
                }
                Target::Command(command) => {
                    if !self.count(from, target) {
                    } else if allow.commands.has(source) {
                        self.out.specials.push(Special::Command {
                            command: command.clone(),
                            source: source.clone(),
                        });
                    } else {
                        let why = format!(
                            "program targets are not allowed in {} (allow-commands)",
                            source_words(source)
                        );
                        self.refuse(from, target, &why);
                    }
                }
                Target::File(path) => {
                    if !self.count(from, target) {
                    } else if allow.files.has(source) {
                        self.out.specials.push(Special::File {
                            path: path.clone(),
                            source: source.clone(),
                        });
                    } else {
                        let why = format!(
                            "file targets are not allowed in {} (allow-files)",
                            source_words(source)
                        );
                        self.refuse(from, target, &why);
                    }
                }
                Target::Include(path) => self.include(path, from, target, source),
            }
        }
    }

    /// Reads and expands the `:include:` file `path`, named by `source`.
    fn include(&mut self, path: &str, from: Option<From<'_>>, target: &Target, source: &Source) {
        if !self.count(from, target) {
            return;
        }
        if matches!(source, Source::Forward { .. }) {
            self.refuse(from, target, ":include: is not read from a .forward");
            return;
        }
        let key = format!(":include:{path}");
        if self.path.contains(&key) {
            self.refuse(from, target, "includes itself; not expanded again");
            return;
        }
        if !self.deep_enough(from, target) {
            return;
        }
        match self.cx.reader.include(path, source) {
            Included::NotRead => self.out.unread_includes += 1,
            Included::Refused(why) => self.refuse(from, target, &why),
            Included::Failed(why) => self.fail(why),
            Included::Targets {
                targets,
                owner,
                group,
            } => {
                let here = From {
                    file: path,
                    line: None,
                    name: &key,
                };
                let source = Source::Include {
                    path: path.to_owned(),
                    owner,
                    group,
                };
                self.path.push(key.clone());
                self.targets(&targets, here, &source);
                self.path.pop();
            }
        }
    }

    /// Records a failure that may pass (the first one).
    fn fail(&mut self, why: String) {
        log::warn!("{why}");
        self.out.failed.get_or_insert(why);
    }

    /// Records and logs a refused target reached from `from`.
    fn refuse(&mut self, from: Option<From<'_>>, target: &dyn fmt::Display, why: &str) {
        let line = match from {
            Some(From {
                file,
                line: Some(line),
                name,
            }) => format!("{file}:{line}: alias {name}: {target}: {why}"),
            Some(From {
                file,
                line: None,
                name: _,
            }) => format!("{file}: {target}: {why}"),
            None => format!("{}: {target}: {why}", self.aliases.source),
        };
        log::warn!("{line}");
        self.out.refused.push(line);
        self.out.reasons.push(format!("{target}: {why}"));
    }
}

/// `the aliases`, `:include: files`, `.forward files`: for refusals.
fn source_words(source: &Source) -> &'static str {
    match source {
        Source::Aliases { .. } => "the aliases",
        Source::Include { .. } => ":include: files",
        Source::Forward { .. } => ".forward files",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::testutil::*;
    use proptest::prelude::*;

    #[test]
    fn expansion_table() {
        let (aliases, warnings) = parse(
            "\
postmaster: root
staff: jon, alice, Jon
all: staff, bob, staff
deep: all, carol
self: self, self-archive
self-archive: archive
loop-a: loop-b
loop-b: loop-a
tri-a: tri-b, x
tri-b: tri-c
tri-c: tri-a
me: me
escaped: \\staff, dave
viadomain: staff@example.org, bob@LOCALHOST, eve@[127.0.0.1]
remote: jon@example.com, alice
onlyremote: jon@example.com
onlypipe: \"|/bin/true\"
mixed: \"|/bin/true\", /tmp/f, :include:/etc/l, frank
diamond: left, right
left: shared
right: shared
shared: zed
",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let cases: &[(&str, &[&str], usize)] = &[
            ("jon", &["jon"], 0),
            ("nobody", &["nobody"], 0),
            ("postmaster", &["root"], 0),
            ("staff", &["alice", "jon"], 0),
            ("all", &["alice", "bob", "jon"], 0),
            ("deep", &["alice", "bob", "carol", "jon"], 0),
            ("self", &["archive", "self"], 0),
            ("loop-a", &["loop-a"], 0),
            ("loop-b", &["loop-b"], 0),
            ("tri-a", &["tri-a", "x"], 0),
            ("tri-c", &["tri-c", "x"], 0),
            ("me", &["me"], 0),
            ("escaped", &["dave", "staff"], 0),
            ("viadomain", &["alice", "bob", "eve", "jon"], 0),
            ("remote", &["alice"], 1),
            ("onlyremote", &[], 1),
            ("onlypipe", &[], 0),
            ("mixed", &["frank"], 0),
            ("diamond", &["zed"], 0),
        ];
        let is_local = |d: &str| d == "localhost" || d == "example.org" || d == "[127.0.0.1]";
        for &(name, want, refused) in cases {
            let got = aliases.expand(name, &is_local);
            assert_eq!(got.users, strings(want), "{name}");
            assert_eq!(got.refused.len(), refused, "{name}: {:?}", got.refused);
        }
        // [127.0.0.1] is not local under the narrower predicate.
        assert_eq!(users(&aliases, "viadomain"), ["alice", "bob", "jon"]);
        // Programs and files are kept with their source (the aliases
        // file, owned by root here); the SMTP side reads no include.
        let mixed = expand(&aliases, "mixed");
        let root = Source::Aliases { owner: 0 };
        assert_eq!(
            mixed.specials,
            [
                Special::Command {
                    command: "/bin/true".into(),
                    source: root.clone()
                },
                Special::File {
                    path: "/tmp/f".into(),
                    source: root
                },
            ]
        );
        assert_eq!(mixed.unread_includes, 1);
        assert!(expand(&aliases, "onlypipe").reaches_someone());
        assert!(!expand(&aliases, "onlyremote").reaches_someone());
    }

    /// A reader of `.forward` and include files from tables.
    #[derive(Default)]
    struct Files {
        forwards: Vec<(&'static str, Forwarded)>,
        includes: Vec<(&'static str, Included)>,
    }

    impl Reader for Files {
        fn forward(&self, name: &str) -> Forwarded {
            self.forwards
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Forwarded::Mailbox(None), |(_, f)| f.clone())
        }

        fn include(&self, path: &str, _source: &Source) -> Included {
            self.includes
                .iter()
                .find(|(p, _)| *p == path)
                .map_or(Included::Refused("no such file".into()), |(_, i)| i.clone())
        }
    }

    fn targets(text: &str) -> Vec<Target> {
        let (a, w) = parse(&format!("x: {text}\n"));
        assert!(w.is_empty(), "{w:?}");
        a.targets("x").unwrap().to_vec()
    }

    fn expand_reading(aliases: &Aliases, name: &str, files: &Files, allow: Allow) -> Expansion {
        aliases.expand_with(
            name,
            &Context {
                is_local_domain: &local_domain,
                allow,
                reader: files,
            },
        )
    }

    /// `.forward` files are expanded like aliases: loops end at the user
    /// met again (a → b → a delivers to a; a → a to a), `\\user` is the
    /// mailbox, local names go through the aliases again, and programs
    /// and files carry the user as their source.
    #[test]
    fn forward_files_expand_with_loops_broken_as_sendmail_does() {
        let (aliases, _) = parse("staff: a, b\nlist: c\n");
        let files = Files {
            forwards: vec![
                ("a", Forwarded::Targets(targets("b"))),
                ("b", Forwarded::Targets(targets("a"))),
                ("c", Forwarded::Targets(targets("c"))),
                (
                    "d",
                    Forwarded::Targets(targets("\\d, list, \"|/usr/bin/procmail\", /home/d/x")),
                ),
                ("e", Forwarded::Mailbox(Some("group-writable".into()))),
                ("f", Forwarded::Failed("~f/.forward: EIO".into())),
                ("g", Forwarded::Targets(targets("jon@elsewhere.net"))),
            ],
            ..Files::default()
        };
        let all = Allow::default();
        let users = |name| expand_reading(&aliases, name, &files, all).users;
        assert_eq!(users("a"), ["a"]);
        assert_eq!(users("b"), ["b"]);
        assert_eq!(users("c"), ["c"]);
        assert_eq!(users("staff"), ["a", "b"]);
        let d = expand_reading(&aliases, "d", &files, all);
        assert_eq!(d.users, ["c", "d"]);
        let fwd = Source::Forward { user: "d".into() };
        assert_eq!(
            d.specials,
            [
                Special::Command {
                    command: "/usr/bin/procmail".into(),
                    source: fwd.clone()
                },
                Special::File {
                    path: "/home/d/x".into(),
                    source: fwd
                },
            ]
        );
        let e = expand_reading(&aliases, "e", &files, all);
        assert_eq!(e.users, ["e"]);
        assert_eq!(e.ignored_forwards, [("e".into(), "group-writable".into())]);
        let f = expand_reading(&aliases, "f", &files, all);
        assert_eq!(f.failed.as_deref(), Some("~f/.forward: EIO"));
        let g = expand_reading(&aliases, "g", &files, all);
        assert!(!g.reaches_someone());
        assert!(
            g.refused[0].starts_with("~g/.forward: jon@elsewhere.net: not a local domain"),
            "{:?}",
            g.refused
        );
        // The policy per source: no programs from .forward files.
        let no_forward_programs = Allow {
            commands: Sources {
                forward: false,
                ..Sources::parse("aliases").unwrap()
            },
            ..all
        };
        let d = expand_reading(&aliases, "d", &files, no_forward_programs);
        assert_eq!(d.specials.len(), 1);
        assert!(
            d.reasons[0].contains("not allowed in .forward files (allow-commands)"),
            "{:?}",
            d.reasons
        );
    }

    /// `:include:` files: their targets expanded with the file (and its
    /// owner) as their source, never from a `.forward`, never into
    /// themselves; programs in them refused by default (Postfix's
    /// `allow_mail_to_commands`).
    #[test]
    fn include_files_expand_with_their_owner_as_source() {
        let (aliases, _) =
            parse("list: :include:/etc/list\nloop: :include:/etc/loop\nmissing: :include:/nope\n");
        let files = Files {
            forwards: vec![("h", Forwarded::Targets(targets(":include:/etc/list")))],
            includes: vec![
                (
                    "/etc/list",
                    Included::Targets {
                        targets: targets("jon, \"|/bin/prog\", /var/x"),
                        owner: 1000,
                        group: 100,
                    },
                ),
                (
                    "/etc/loop",
                    Included::Targets {
                        targets: targets("alice, :include:/etc/loop"),
                        owner: 0,
                        group: 0,
                    },
                ),
            ],
        };
        let all = Allow::default();
        let list = expand_reading(&aliases, "list", &files, all);
        assert_eq!(list.users, ["jon"]);
        assert!(list.specials.is_empty());
        assert!(list.reasons[0].contains("not allowed in :include: files (allow-commands)"));
        assert!(list.reasons[1].contains("not allowed in :include: files (allow-files)"));
        let files_too = Allow {
            files: Sources::parse("include").unwrap(),
            ..all
        };
        let list = expand_reading(&aliases, "list", &files, files_too);
        assert_eq!(
            list.specials,
            [Special::File {
                path: "/var/x".into(),
                source: Source::Include {
                    path: "/etc/list".into(),
                    owner: 1000,
                    group: 100
                }
            }]
        );
        let looped = expand_reading(&aliases, "loop", &files, all);
        assert_eq!(looped.users, ["alice"]);
        assert!(looped.reasons[0].contains("includes itself"), "{looped:?}");
        let missing = expand_reading(&aliases, "missing", &files, all);
        assert!(!missing.reaches_someone());
        assert!(missing.reasons[0].ends_with("no such file"));
        let h = expand_reading(&aliases, "h", &files, all);
        assert!(!h.reaches_someone());
        assert!(h.reasons[0].contains("not read from a .forward"));
    }

    #[test]
    fn sources_parse_and_show() {
        let s = Sources::parse("forward,aliases include").unwrap();
        assert_eq!(s.to_string(), "aliases, include, forward");
        assert_eq!(Sources::parse("").unwrap(), Sources::NONE);
        assert!(Sources::parse("aliases, pipes").is_err());
    }

    #[test]
    fn refused_targets_name_file_line_and_alias() {
        let (aliases, _) = Aliases::parse(
            "# header\nlist: jon,\n  \"|/usr/bin/prog\", /var/spool/f,\n  :include:/etc/l, x@example.com\n",
            "/etc/aliases",
        );
        let e = expand_reading(&aliases, "list", &Files::default(), NOTHING);
        assert_eq!(e.users, ["jon"]);
        assert_eq!(e.refused.len(), 4, "{:?}", e.refused);
        for (r, what) in e.refused.iter().zip([
            "\"|/usr/bin/prog\": program targets are not allowed in the aliases (allow-commands)",
            "/var/spool/f: file targets are not allowed in the aliases (allow-files)",
            ":include:/etc/l: no such file",
            "x@example.com: not a local domain",
        ]) {
            assert!(r.starts_with("/etc/aliases:2: alias list: "), "{r:?}");
            assert!(r.contains(what), "{r:?} should mention {what:?}");
        }
    }

    /// No program and no file from anywhere.
    const NOTHING: Allow = Allow {
        commands: Sources::NONE,
        files: Sources::NONE,
    };

    /// "A new user's first hour": an alias to `|prog` alone was reported
    /// as "none of its users exists"; the report says that program
    /// targets are not allowed.
    #[test]
    fn why_an_alias_reaches_nobody() {
        let (aliases, _) = Aliases::parse(
            "pipe: \"|/usr/bin/prog\"\nghost: nobody-here\nboth: ghost, /tmp/f\n",
            "/etc/aliases",
        );
        let nobody = |name| expand_reading(&aliases, name, &Files::default(), NOTHING).why_nobody();
        assert_eq!(
            nobody("pipe"),
            "\"|/usr/bin/prog\": program targets are not allowed in the aliases (allow-commands)"
        );
        assert_eq!(
            expand(&aliases, "ghost").why_nobody(),
            "none of its users exists"
        );
        assert_eq!(
            nobody("both"),
            "none of its users exists; /tmp/f: file targets are not allowed in the aliases (allow-files)"
        );
    }

    /// `a0: a1`, `a1: a2`, ... `a{n-1}: jon`: n aliases deep.
    fn chain(n: usize) -> Aliases {
        let mut text = String::new();
        for i in 0..n {
            if i + 1 == n {
                text.push_str(&format!("a{i}: jon\n"));
            } else {
                text.push_str(&format!("a{i}: a{}\n", i + 1));
            }
        }
        let (aliases, warnings) = parse(&text);
        assert!(warnings.is_empty());
        aliases
    }

    #[test]
    fn depth_limit() {
        let ok = chain(MAX_DEPTH);
        assert_eq!(
            expand(&ok, "a0"),
            Expansion {
                users: strings(&["jon"]),
                ..Expansion::default()
            }
        );

        let too_deep = chain(MAX_DEPTH + 1);
        let e = expand(&too_deep, "a0");
        assert!(e.users.is_empty(), "{e:?}");
        assert_eq!(e.refused.len(), 1);
        let last = MAX_DEPTH - 1;
        assert!(
            e.refused[0].starts_with(&format!(
                "aliases:{}: alias a{last}: a{MAX_DEPTH}: ",
                last + 1
            )),
            "{:?}",
            e.refused
        );
        assert!(e.refused[0].contains("deeper"), "{:?}", e.refused);
        // From further down the chain it fits.
        assert_eq!(users(&too_deep, "a1"), ["jon"]);
    }

    #[test]
    fn exponential_fan_out_is_bounded() {
        // Each level lists the next one ten times: 10^31 paths without the
        // bound on visits.
        let mut text = String::new();
        for i in 0..31 {
            let next = vec![format!("f{}", i + 1); 10].join(", ");
            text.push_str(&format!("f{i}: {next}\n"));
        }
        text.push_str("f31: jon\n");
        let (aliases, warnings) = parse(&text);
        assert!(warnings.is_empty());
        let e = expand(&aliases, "f0");
        assert_eq!(e.users, ["jon"]);
        assert_eq!(e.refused.len(), 1, "{:?}", e.refused);
        assert!(e.refused[0].contains("more than"), "{:?}", e.refused);
    }

    #[test]
    fn local_domain_addresses_expand_and_remote_ones_are_refused() {
        let (aliases, _) =
            parse("a: Jon@Example.org, staff@localhost\nstaff: alice\nr: jon@elsewhere.net\n");
        let seen = std::cell::RefCell::new(Vec::new());
        let is_local = |d: &str| {
            seen.borrow_mut().push(d.to_owned());
            local_domain(d)
        };
        let e = aliases.expand("a", &is_local);
        assert_eq!(e.users, ["alice", "jon"]);
        assert!(e.refused.is_empty());
        assert_eq!(*seen.borrow(), ["example.org", "localhost"]);

        let e = aliases.expand("r", &is_local);
        assert!(e.users.is_empty());
        assert_eq!(e.refused.len(), 1);
        assert!(
            e.refused[0].contains("jon@elsewhere.net"),
            "{:?}",
            e.refused
        );
    }

    #[test]
    fn empty_aliases_expand_every_name_to_itself() {
        let aliases = Aliases::empty();
        assert!(aliases.is_empty());
        assert_eq!(users(&aliases, "jon"), ["jon"]);
        assert_eq!(users(&aliases, "postmaster"), ["postmaster"]);
    }
    proptest! {
        #[test]
        fn parse_and_expand_never_panic_on_alias_like_text(
            text in "([a-cA-C]{1,2}|[ \t]|[:,\"|/@\\\\#]|:include:|\n|\r\n|@localhost){0,80}"
        ) {
            let (aliases, warnings) = Aliases::parse(&text, "f");
            for w in &warnings {
                prop_assert!(w.starts_with("f:"), "{w:?}");
            }
            let names: Vec<String> = aliases.map.keys().cloned().collect();
            for name in names.iter().map(String::as_str).chain(["a", "zz"]) {
                let e = aliases.expand(name, &local_domain);
                let mut sorted = e.users.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(&sorted, &e.users);
                for user in &e.users {
                    prop_assert!(!user.is_empty());
                }
            }
        }
    }
}
