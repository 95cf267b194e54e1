//! Expanding an alias to the users it reaches ([`Aliases::expand`]):
//! recursion through local names and local-domain addresses, sendmail's
//! rule for a name met again on its own path, and the refusals (programs,
//! files, includes, other domains, too deep, too many targets), each
//! logged with the file, line and alias. Pure apart from the log.

use std::fmt;

use super::{Aliases, Target};

/// Aliases nested deeper than this are not expanded (sendmail's
/// `MaxAliasRecursion` is 10; we allow more and still stop loops early).
pub const MAX_DEPTH: usize = 32;

/// At most this many targets are visited in one expansion. Depth alone does
/// not bound the work: aliases that each list the next one several times
/// grow exponentially with depth.
const MAX_VISITS: usize = 10_000;
/// What a name expands to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Leaf local names (not aliases, or taken literally), sorted and
    /// de-duplicated. Empty if every target was refused.
    pub users: Vec<String>,
    /// One human-readable line per refused target (`FILE:LINE: alias NAME:
    /// TARGET: why`), in the order met; already logged by
    /// [`Aliases::expand`].
    pub refused: Vec<String>,
    /// The same refusals, short: `TARGET: why`.
    pub reasons: Vec<String>,
}

impl Expansion {
    /// Why the expansion reaches no user, for a report that the alias is
    /// an unknown recipient: its leaves are no users (`none of its users
    /// exists`) and/or its targets were refused (`"|/usr/bin/prog":
    /// program targets are not enabled`).
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
    /// Expands `name` (lower-cased, extension already stripped) to leaf
    /// user names.
    ///
    /// - A name that is not an alias is its own single leaf.
    /// - Local names and addresses in a domain for which `is_local_domain`
    ///   is true are expanded recursively; `\user` is a leaf as written.
    ///   Targets are taken literally: no extension is stripped from them.
    /// - A name met again on its own expansion path is the user of that
    ///   name (sendmail's rule): `jon: jon, jon-archive` delivers to user
    ///   `jon` and expands `jon-archive`; a loop `a: b`, `b: a` ends at user
    ///   `a`.
    /// - Pipes, files, includes and non-local addresses are refused, and so
    ///   is an alias nested deeper than [`MAX_DEPTH`]: each is logged here
    ///   (`log::warn!`, naming FILE:LINE and the alias) and listed in
    ///   [`Expansion::refused`].
    pub fn expand(&self, name: &str, is_local_domain: &dyn Fn(&str) -> bool) -> Expansion {
        let mut walk = Walk {
            aliases: self,
            is_local_domain,
            path: Vec::new(),
            users: Vec::new(),
            refused: Vec::new(),
            reasons: Vec::new(),
            visits: 0,
        };
        walk.visit(name, None);
        let mut users: Vec<String> = walk.users.into_iter().map(str::to_owned).collect();
        users.sort_unstable();
        users.dedup();
        Expansion {
            users,
            refused: walk.refused,
            reasons: walk.reasons,
        }
    }
}

/// The state of one expansion.
struct Walk<'a> {
    aliases: &'a Aliases,
    is_local_domain: &'a dyn Fn(&str) -> bool,
    /// The aliases being expanded, outermost first.
    path: Vec<&'a str>,
    users: Vec<&'a str>,
    refused: Vec<String>,
    reasons: Vec<String>,
    visits: usize,
}

impl<'a> Walk<'a> {
    /// Expands `name`, reached from the alias `from` (name and line) or
    /// asked for by the caller (`None`).
    fn visit(&mut self, name: &'a str, from: Option<(&'a str, usize)>) {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            if self.visits == MAX_VISITS + 1 {
                self.refuse(
                    from,
                    &name,
                    &format!("more than {MAX_VISITS} targets; stopped"),
                );
            }
            return;
        }
        if self.path.contains(&name) {
            // Self-reference: the user of that name.
            self.users.push(name);
            return;
        }
        let Some(alias) = self.aliases.map.get(name) else {
            self.users.push(name);
            return;
        };
        if self.path.len() >= MAX_DEPTH {
            self.refuse(
                from,
                &name,
                &format!("aliases nested deeper than {MAX_DEPTH}; not expanded"),
            );
            return;
        }
        self.path.push(name);
        let here = Some((name, alias.line));
        for target in &alias.targets {
            match target {
                Target::Local(local) => self.visit(local, here),
                Target::User(user) => self.users.push(user),
                Target::Address { local, domain } => {
                    if (self.is_local_domain)(domain) {
                        self.visit(local, here);
                    } else {
                        self.refuse(here, target, "not a local domain; not relayed");
                    }
                }
                // postie delivers to mailboxes only, for now.
                Target::Command(_) => self.refuse(here, target, "program targets are not enabled"),
                Target::File(_) => self.refuse(here, target, "file targets are not enabled"),
                Target::Include(_) => self.refuse(here, target, ":include: is not enabled"),
            }
        }
        self.path.pop();
    }

    /// Records and logs a refused target of alias `from`.
    fn refuse(&mut self, from: Option<(&str, usize)>, target: &dyn fmt::Display, why: &str) {
        let source = &self.aliases.source;
        let line = match from {
            Some((alias, line)) => format!("{source}:{line}: alias {alias}: {target}: {why}"),
            None => format!("{source}: {target}: {why}"),
        };
        log::warn!("{line}");
        self.refused.push(line);
        self.reasons.push(format!("{target}: {why}"));
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
            ("onlypipe", &[], 1),
            ("mixed", &["frank"], 3),
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
    }

    #[test]
    fn refused_targets_name_file_line_and_alias() {
        let (aliases, _) = Aliases::parse(
            "# header\nlist: jon,\n  \"|/usr/bin/prog\", /var/spool/f,\n  :include:/etc/l, x@example.com\n",
            "/etc/aliases",
        );
        let e = expand(&aliases, "list");
        assert_eq!(e.users, ["jon"]);
        assert_eq!(e.refused.len(), 4, "{:?}", e.refused);
        for (r, what) in e.refused.iter().zip([
            "\"|/usr/bin/prog\": program targets are not enabled",
            "/var/spool/f: file targets are not enabled",
            ":include:/etc/l: :include: is not enabled",
            "x@example.com: not a local domain",
        ]) {
            assert!(r.starts_with("/etc/aliases:2: alias list: "), "{r:?}");
            assert!(r.contains(what), "{r:?} should mention {what:?}");
        }
    }

    /// "A new user's first hour": an alias to `|prog` alone was reported
    /// as "none of its users exists"; the report says that program
    /// targets are not enabled.
    #[test]
    fn why_an_alias_reaches_nobody() {
        let (aliases, _) = Aliases::parse(
            "pipe: \"|/usr/bin/prog\"\nghost: nobody-here\nboth: ghost, /tmp/f\n",
            "/etc/aliases",
        );
        assert_eq!(
            expand(&aliases, "pipe").why_nobody(),
            "\"|/usr/bin/prog\": program targets are not enabled"
        );
        assert_eq!(
            expand(&aliases, "ghost").why_nobody(),
            "none of its users exists"
        );
        assert_eq!(
            expand(&aliases, "both").why_nobody(),
            "none of its users exists; /tmp/f: file targets are not enabled"
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
                refused: vec![],
                reasons: vec![],
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
