//! Parsing aliases(5) text: logical lines (continuations joined, comments
//! dropped), entries, and each target, quoted or not; and the bare target
//! lists of `~/.forward` and `:include:` files ([`Target::parse_targets`]),
//! which share the target syntax. Pure, and never failing on content: a bad
//! line or target is skipped with a `FILE:LINE` warning.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;

use super::{Alias, Aliases, Target};

impl Aliases {
    /// Parses aliases(5) text; `source` names the file in warnings.
    ///
    /// Never fails on content: a line that cannot be parsed is skipped, and
    /// the second value holds one `SOURCE:LINE: why` warning per problem,
    /// like sendmail's newaliases.
    ///
    /// The syntax:
    /// - `name: target, target, ...`; the name is trimmed and lower-cased
    ///   (ASCII), and may not be empty or contain whitespace, `@`, `"`, `,`,
    ///   `\`, control characters, or U+FFFD (bytes of the file that are not
    ///   UTF-8). A UTF-8 name (`jörg: jon`) is an alias for a UTF-8 local
    ///   part (RFC 6531); its non-ASCII letters keep their case (see
    ///   [`fold_name`]).
    /// - Blank lines and lines whose first non-blank character is `#` are
    ///   skipped (also in the middle of a continued entry, as Postfix does).
    /// - A line starting with a space or tab continues the entry before it.
    /// - Targets are separated by commas (empty ones are ignored), trimmed,
    ///   and may be quoted with double quotes (`"|/usr/bin/prog arg"`; inside
    ///   quotes, `\` escapes the next character).
    /// - A target is `|command`, `/file`, `:include:file`, `\user`,
    ///   `local@domain` or a local name. One bad target skips the whole
    ///   entry, so that a typo never silently drops a recipient.
    /// - An entry with no targets is skipped.
    /// - A name defined twice keeps its first definition (sendmail warns
    ///   "duplicate alias" too).
    pub fn parse(text: &str, source: &str) -> (Aliases, Vec<String>) {
        let mut warnings = Vec::new();
        let mut map: HashMap<String, Alias> = HashMap::new();
        for (line, entry) in logical_lines(text) {
            match entry.and_then(|entry| parse_entry(&entry)) {
                Ok((name, targets)) => match map.entry(name) {
                    MapEntry::Occupied(first) => warnings.push(format!(
                        "{source}:{line}: duplicate alias {} (first defined on line {}); ignored",
                        first.key(),
                        first.get().line
                    )),
                    MapEntry::Vacant(slot) => {
                        slot.insert(Alias { targets, line });
                    }
                },
                Err(why) => warnings.push(format!("{source}:{line}: {why}; line skipped")),
            }
        }
        let aliases = Aliases {
            source: source.to_owned(),
            owner: 0,
            map,
        };
        (aliases, warnings)
    }
}

/// Joins continuation lines: yields each entry with the number of its first
/// line, in order. Blank and comment lines are dropped; a run of
/// continuation lines with no entry before it yields one warning (`Err`).
fn logical_lines(text: &str) -> Vec<(usize, Result<String, String>)> {
    let mut entries: Vec<(usize, Result<String, String>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !raw.starts_with([' ', '\t']) {
            entries.push((line, Ok(raw.to_owned())));
            continue;
        }
        match entries.last_mut() {
            Some((_, Ok(entry))) => {
                entry.push(' ');
                entry.push_str(trimmed);
            }
            // Already warned for this run.
            Some((_, Err(_))) => {}
            None => entries.push((
                line,
                Err("continuation line without an alias before it".to_owned()),
            )),
        }
    }
    entries
}

/// Parses one joined entry `name: targets` to its lower-cased name and
/// targets, or says why it is bad.
fn parse_entry(entry: &str) -> Result<(String, Vec<Target>), String> {
    let Some((name, rest)) = entry.split_once(':') else {
        return Err("missing ':' after the alias name".to_owned());
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("empty alias name".to_owned());
    }
    if !valid_name(name) {
        return Err(format!("invalid alias name {name:?}"));
    }
    let mut targets = Vec::new();
    for target in parse_list(rest)? {
        targets.push(target?);
    }
    if targets.is_empty() {
        return Err(format!("alias {name} has no targets"));
    }
    Ok((fold_name(name), targets))
}

/// An alias name or a local part as it is looked up: ASCII letters
/// lower-cased, as postie always did, and nothing else changed.
///
/// For UTF-8 (RFC 6531) no Unicode case folding or normalisation: the
/// local part is the receiving site's to interpret (RFC 5321 2.4), and
/// Unicode folding is locale-dependent (Turkish dotted and dotless i) and
/// joins names that are not one (the Kelvin sign K folds to `k`); an
/// alias is found for the bytes its file gives, which are what mail
/// clients send in NFC. The lookup ([`crate::recipients`]) folds the same
/// way, so the file and the address always agree.
pub fn fold_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Target {
    /// Parses the targets of a `~/.forward` or `:include:` file: the
    /// right-hand side of an alias, spread over any number of lines, as
    /// sendmail reads those files (each line a list of its own); `source`
    /// names the file in warnings.
    ///
    /// The syntax is that of [`Aliases::parse`]'s targets, with no names
    /// and no continuation lines: blank lines and lines whose first
    /// non-blank character is `#` are skipped; every other line is a list of
    /// targets separated by commas outside double quotes (so
    /// `"|/usr/bin/prog a, b"` is one target). Targets come back in the
    /// order of the file.
    ///
    /// Never fails on content: a target that cannot be parsed is skipped
    /// and the rest of its line kept (unlike an alias, where one bad target
    /// skips the entry: a skipped entry is an unknown alias, refused at
    /// RCPT, while here the other targets are the user's mail); a line with
    /// an unterminated quote is skipped whole, since its commas cannot be
    /// told apart. The second value holds one `SOURCE:LINE: why` warning
    /// per skip.
    pub(crate) fn parse_targets(text: &str, source: &str) -> (Vec<Target>, Vec<String>) {
        let mut targets = Vec::new();
        let mut warnings = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_list(trimmed) {
                Ok(list) => {
                    for target in list {
                        match target {
                            Ok(target) => targets.push(target),
                            Err(why) => {
                                warnings.push(format!("{source}:{line}: {why}; target skipped"))
                            }
                        }
                    }
                }
                Err(why) => warnings.push(format!("{source}:{line}: {why}; line skipped")),
            }
        }
        (targets, warnings)
    }
}

/// Parses a comma-separated list of targets: each non-empty one parsed or
/// the reason it is bad; `Err` if the list cannot be split (an
/// unterminated quote).
fn parse_list(list: &str) -> Result<Vec<Result<Target, String>>, String> {
    Ok(split_targets(list)?
        .iter()
        .map(|token| token.trim())
        .filter(|token| !token.is_empty())
        .map(parse_target)
        .collect())
}

/// True if `name` may be an alias name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '@' | '"' | ',' | '\\' | '\u{fffd}')
        })
}

/// True if `local` may be a local name or the local part of an address
/// target (unquoted; quoted local parts are not supported).
fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && !local.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '"' | '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | ':' | '@' | '\\'
                )
        })
}

/// True if `domain` may be the domain of an address target: a name or an
/// address literal (`[192.0.2.1]`, `[IPv6:::1]`).
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && !domain.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '<' | '>' | '(' | ')' | ',' | ';' | '@' | '\\')
        })
}

/// Splits the right-hand side at commas outside double quotes. Tokens keep
/// their quotes and escapes.
fn split_targets(rest: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '\\' if quoted => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ',' if !quoted => tokens.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".to_owned());
    }
    tokens.push(current);
    Ok(tokens)
}

/// Parses one trimmed, non-empty target.
fn parse_target(token: &str) -> Result<Target, String> {
    let quoted = token.len() >= 2 && token.starts_with('"') && token.ends_with('"');
    let body = if quoted {
        unescape(&token[1..token.len() - 1])
    } else if token.contains('"') {
        return Err(format!("misplaced quote in target {token:?}"));
    } else {
        token.to_owned()
    };
    let bad = || format!("invalid target {token:?}");
    if let Some(cmd) = body.strip_prefix('|') {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            return Err(format!("empty command in target {token:?}"));
        }
        return Ok(Target::Command(cmd.to_owned()));
    }
    if body
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case(":include:"))
    {
        let path = body[9..].trim();
        if path.is_empty() {
            return Err(format!("empty file name in target {token:?}"));
        }
        return Ok(Target::Include(path.to_owned()));
    }
    if body.starts_with('/') {
        return Ok(Target::File(body));
    }
    if let Some(user) = body.strip_prefix('\\') {
        if !valid_local(user) {
            return Err(bad());
        }
        return Ok(Target::User(user.to_ascii_lowercase()));
    }
    if let Some((local, domain)) = body.rsplit_once('@') {
        if !valid_local(local) || !valid_domain(domain) {
            return Err(bad());
        }
        return Ok(Target::Address {
            local: local.to_ascii_lowercase(),
            domain: domain.to_ascii_lowercase(),
        });
    }
    if !valid_local(&body) {
        return Err(bad());
    }
    Ok(Target::Local(body.to_ascii_lowercase()))
}

/// Removes the backslash escapes of a quoted string: `\x` → `x`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::testutil::*;
    use proptest::prelude::*;

    #[test]
    fn parses_entries() {
        let cases: Vec<(&str, &str, Vec<Target>)> = vec![
            ("jon: jon", "jon", vec![local("jon")]),
            ("a: b, c", "a", vec![local("b"), local("c")]),
            ("a:b,c", "a", vec![local("b"), local("c")]),
            ("a  :  b  ", "a", vec![local("b")]),
            (
                "Staff: Jon, ALICE",
                "staff",
                vec![local("jon"), local("alice")],
            ),
            ("a: b,, c,", "a", vec![local("b"), local("c")]),
            ("a: Jon@Example.ORG", "a", vec![addr("jon", "example.org")]),
            ("a: jon@[127.0.0.1]", "a", vec![addr("jon", "[127.0.0.1]")]),
            (
                "a: \\Jon, b",
                "a",
                vec![Target::User("jon".to_owned()), local("b")],
            ),
            (
                "a: \"|/usr/bin/prog arg, other\"",
                "a",
                vec![Target::Command("/usr/bin/prog arg, other".to_owned())],
            ),
            (
                "a: \"|/bin/echo \\\"hi\\\"\"",
                "a",
                vec![Target::Command("/bin/echo \"hi\"".to_owned())],
            ),
            (
                "a: |/usr/bin/prog",
                "a",
                vec![Target::Command("/usr/bin/prog".to_owned())],
            ),
            (
                "a: /var/log/a",
                "a",
                vec![Target::File("/var/log/a".to_owned())],
            ),
            (
                "a: \"/var/log/with space\"",
                "a",
                vec![Target::File("/var/log/with space".to_owned())],
            ),
            (
                "a: :include:/etc/mail/list",
                "a",
                vec![Target::Include("/etc/mail/list".to_owned())],
            ),
            (
                "a: :INCLUDE: /etc/mail/list",
                "a",
                vec![Target::Include("/etc/mail/list".to_owned())],
            ),
            ("a: \"Jon\"", "a", vec![local("jon")]),
            // RFC 6531: UTF-8 names, ASCII letters lower-cased only.
            ("J\u{f6}rg: jon", "j\u{f6}rg", vec![local("jon")]),
            ("J\u{d6}RG: jon", "j\u{d6}rg", vec![local("jon")]),
            (
                "\u{7528}\u{6237}: jon",
                "\u{7528}\u{6237}",
                vec![local("jon")],
            ),
            ("a-b.c_d: x", "a-b.c_d", vec![local("x")]),
        ];
        for (text, name, targets) in cases {
            let (aliases, warnings) = parse(text);
            assert!(warnings.is_empty(), "{text:?}: {warnings:?}");
            assert_eq!(aliases.len(), 1, "{text:?}");
            assert_eq!(aliases.targets(name), Some(targets.as_slice()), "{text:?}");
        }
    }

    #[test]
    fn comments_blank_lines_and_continuations() {
        let text = "# The aliases file.

postmaster: root
   # an indented comment
staff: jon,
\talice,
# a comment inside an entry
   bob

  \t
list: \"|/usr/bin/prog\",
  carol\r
Mixed: Dave
";
        let (aliases, warnings) = parse(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(aliases.len(), 4);
        assert_eq!(aliases.targets("postmaster"), Some(&[local("root")][..]));
        assert_eq!(
            aliases.targets("staff"),
            Some(&[local("jon"), local("alice"), local("bob")][..])
        );
        assert_eq!(
            aliases.targets("list"),
            Some(&[Target::Command("/usr/bin/prog".to_owned()), local("carol")][..])
        );
        assert_eq!(aliases.targets("mixed"), Some(&[local("dave")][..]));
        assert!(!aliases.contains("Mixed"), "names are stored lower-cased");
    }

    /// Attacker: a name with bytes that are not UTF-8 (read as U+FFFD)
    /// is skipped with a warning: no address can name it, and it must not
    /// stand for another.
    #[test]
    fn names_that_were_not_utf8_are_skipped() {
        let text = String::from_utf8_lossy(b"j\xf6rg: jon\ngood: jon\n");
        let (aliases, warnings) = Aliases::parse(&text, "/etc/aliases");
        assert_eq!(aliases.len(), 1);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("/etc/aliases:1: invalid alias name"));
    }

    #[test]
    fn malformed_lines_are_skipped_with_file_and_line() {
        let text = "  orphan
\tstill-orphan
good: jon
no colon here
: nobody
bad name: x
at@sign: x
empty:
   ,
quote: \"jon
misplaced: jo\"n\"
spaces: jon doe
addr: jon@, @example.org
third: \"|\", :include:, \\
also-good: alice
   , bob
";
        let (aliases, warnings) = Aliases::parse(text, "/etc/aliases");
        let expected: &[(usize, &str)] = &[
            (1, "continuation line"),
            (4, "missing ':'"),
            (5, "empty alias name"),
            (6, "invalid alias name"),
            (7, "invalid alias name"),
            (8, "no targets"),
            (10, "unterminated quote"),
            (11, "misplaced quote"),
            (12, "invalid target"),
            (13, "invalid target"),
            (14, "empty command"),
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
        for (warning, (line, what)) in warnings.iter().zip(expected) {
            let prefix = format!("/etc/aliases:{line}: ");
            assert!(
                warning.starts_with(&prefix),
                "{warning:?} should start {prefix:?}"
            );
            assert!(
                warning.contains(what),
                "{warning:?} should mention {what:?}"
            );
        }
        let mut names: Vec<&String> = aliases.map.keys().collect();
        names.sort();
        assert_eq!(names, ["also-good", "good"]);
        assert_eq!(
            aliases.targets("also-good"),
            Some(&[local("alice"), local("bob")][..])
        );
    }

    #[test]
    fn each_kind_of_bad_target_skips_the_entry() {
        for target in [
            "jon doe",
            "<jon>",
            "jon@",
            "@example.org",
            "jon@exa mple.org",
            "jon@a@",
            "\\",
            "\\jon@x",
            "\"\"",
            "\"|\"",
            ":include:",
            "a\"b\"",
            "jon;x",
        ] {
            let (aliases, warnings) = parse(&format!("a: b, {target}, c"));
            assert!(aliases.is_empty(), "{target:?}");
            assert_eq!(warnings.len(), 1, "{target:?}: {warnings:?}");
            assert!(warnings[0].starts_with("aliases:1: "), "{warnings:?}");
        }
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let (aliases, warnings) = parse("a: b\nx: y\nA: c\na: d\n");
        assert_eq!(aliases.targets("a"), Some(&[local("b")][..]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("aliases:3: duplicate alias a"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("line 1"), "{warnings:?}");
        assert!(warnings[1].starts_with("aliases:4: "), "{warnings:?}");
    }

    /// A `.forward` or `:include:` list: targets in the order of the file,
    /// comments and blank lines skipped, a quoted command keeping its
    /// commas, `\user`, files, includes and addresses as in aliases.
    #[test]
    fn target_lists_keep_their_order() {
        let text = "# forward my mail
\\Jon, \"|/usr/bin/procmail -a x, y\"

  # an indented comment
bob@Example.ORG,alice
\t/var/mail/archive , :include:/etc/mail/list\r
|/usr/bin/vacation jon
";
        let (targets, warnings) = Target::parse_targets(text, "/home/jon/.forward");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            targets,
            [
                Target::User("jon".to_owned()),
                Target::Command("/usr/bin/procmail -a x, y".to_owned()),
                addr("bob", "example.org"),
                local("alice"),
                Target::File("/var/mail/archive".to_owned()),
                Target::Include("/etc/mail/list".to_owned()),
                Target::Command("/usr/bin/vacation jon".to_owned()),
            ]
        );
    }

    /// A bad target is skipped and the rest of its line kept; a line with
    /// an unterminated quote is skipped whole; each with `FILE:LINE`.
    /// Alias syntax (`name: target`) and continuation lines mean nothing
    /// here.
    #[test]
    fn bad_targets_in_a_list_are_skipped_with_file_and_line() {
        let text = "jon, jon doe, bob
\"|/bin/prog, alice
carol: dave
  erin
\"|\", @x, frank
";
        let (targets, warnings) = Target::parse_targets(text, "/home/jon/.forward");
        assert_eq!(
            targets,
            [local("jon"), local("bob"), local("erin"), local("frank")]
        );
        let expected: &[(usize, &str, &str)] = &[
            (1, "invalid target", "target skipped"),
            (2, "unterminated quote", "line skipped"),
            (3, "invalid target", "target skipped"),
            (5, "empty command", "target skipped"),
            (5, "invalid target", "target skipped"),
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
        for (warning, (line, what, skipped)) in warnings.iter().zip(expected) {
            let prefix = format!("/home/jon/.forward:{line}: ");
            assert!(warning.starts_with(&prefix), "{warning:?} vs {prefix:?}");
            assert!(warning.contains(what), "{warning:?} vs {what:?}");
            assert!(warning.ends_with(skipped), "{warning:?} vs {skipped:?}");
        }
    }

    proptest! {
        #[test]
        fn target_lists_never_panic(text in any::<String>()) {
            let (_, warnings) = Target::parse_targets(&text, "f");
            for w in &warnings {
                prop_assert!(w.starts_with("f:"), "{w:?}");
            }
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let (aliases, warnings) = Aliases::parse(&text, "f");
            for w in &warnings {
                prop_assert!(w.starts_with("f:"), "{w:?}");
            }
            let _ = aliases.len();
        }
    }
}
