//! The aliases file (aliases(5), `/etc/aliases`): parsing, expansion, and a
//! holder that reloads the file when it changes.
//!
//! Parsing and expansion are pure: text in, [`Aliases`] and warnings out;
//! a name in, leaf user names out. The only I/O is in [`AliasFile`], which
//! the server keeps for its lifetime: it re-stats the file at most once a
//! second and re-reads it when it changed, so an admin's edit takes effect
//! without a restart, and SIGHUP forces a reload.
//!
//! Only local delivery exists: a target that would run a program (`|cmd`),
//! append to a file (`/path`) or read another file (`:include:`) is refused
//! and logged, as is an address in a domain that is not ours (we do not
//! relay).

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::users::LookupError;

/// Aliases nested deeper than this are not expanded (sendmail's
/// `MaxAliasRecursion` is 10; we allow more and still stop loops early).
pub const MAX_DEPTH: usize = 32;

/// At most this many targets are visited in one expansion. Depth alone does
/// not bound the work: aliases that each list the next one several times
/// grow exponentially with depth.
const MAX_VISITS: usize = 10_000;

/// How often [`AliasFile::get`] looks at the file at most.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    /// `|command`: refused.
    Command(String),
    /// `/path/file`: refused.
    File(String),
    /// `:include:/path`: refused.
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
    /// By lower-cased name.
    map: HashMap<String, Alias>,
}

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
    /// No aliases at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses aliases(5) text; `source` names the file in warnings.
    ///
    /// Never fails on content: a line that cannot be parsed is skipped, and
    /// the second value holds one `SOURCE:LINE: why` warning per problem,
    /// like sendmail's newaliases.
    ///
    /// The syntax:
    /// - `name: target, target, ...`; the name is trimmed and lower-cased
    ///   (ASCII), and may not be empty or contain whitespace, `@`, `"`, `,`,
    ///   `\` or control characters.
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
            map,
        };
        (aliases, warnings)
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

    /// The targets of alias `name` (lower-cased), as parsed.
    pub fn targets(&self, name: &str) -> Option<&[Target]> {
        self.map.get(name).map(|a| a.targets.as_slice())
    }

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
    for token in split_targets(rest)? {
        let token = token.trim();
        if !token.is_empty() {
            targets.push(parse_target(token)?);
        }
    }
    if targets.is_empty() {
        return Err(format!("alias {name} has no targets"));
    }
    Ok((name.to_ascii_lowercase(), targets))
}

/// True if `name` may be an alias name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '"' | ',' | '\\'))
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

/// The aliases file the server uses: loaded once, then re-read when it
/// changes. Thread-safe; [`AliasFile::get`] is an `Arc` clone under a mutex
/// plus, at most once a second, one `stat`.
#[derive(Debug)]
pub struct AliasFile {
    /// `None` for [`AliasFile::empty`].
    path: Option<PathBuf>,
    /// How often `get` looks at the file at most.
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    aliases: Result<Arc<Aliases>, LookupError>,
    /// The file as last loaded; `None` after a failure or while it is
    /// missing, so that the next check loads it again.
    stamp: Option<Stamp>,
    /// The file was missing at the last check (logged once).
    missing: bool,
    /// When the file was last looked at.
    checked: Option<Instant>,
    /// How many times the file was read (for tests).
    loads: u64,
}

/// What tells one version of the file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

impl AliasFile {
    /// The aliases in `path`, loaded now. Never fails: a missing file is no
    /// aliases, and an unreadable one makes [`AliasFile::get`] fail until
    /// it can be read.
    pub fn open(path: &Path) -> Self {
        let file = AliasFile {
            path: Some(path.to_owned()),
            interval: CHECK_INTERVAL,
            state: Mutex::new(State {
                aliases: Ok(Arc::new(Aliases::empty())),
                stamp: None,
                missing: false,
                checked: None,
                loads: 0,
            }),
        };
        file.refresh(&mut file.lock(), true, "loaded");
        file
    }

    /// No aliases file: no aliases, never any I/O.
    pub fn empty() -> Self {
        AliasFile {
            path: None,
            interval: CHECK_INTERVAL,
            state: Mutex::new(State {
                aliases: Ok(Arc::new(Aliases::empty())),
                stamp: None,
                missing: false,
                checked: None,
                loads: 0,
            }),
        }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current aliases; looks at the file first if it was last looked
    /// at a second ago or more, and re-reads it if its inode, size or mtime
    /// changed. An error means the file exists but cannot be read: the
    /// caller must answer "try later", not "no such user".
    pub fn get(&self) -> Result<Arc<Aliases>, LookupError> {
        let mut state = self.lock();
        let due = state.checked.is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            self.refresh(&mut state, false, "reloaded");
        }
        state.aliases.clone()
    }

    /// Re-reads the file now, changed or not (for SIGHUP). Logs `reloaded N
    /// aliases from FILE` at info and each parse warning at warn.
    pub fn reload(&self) {
        self.refresh(&mut self.lock(), true, "reloaded");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent
        // state (every field is assigned whole), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stats the file and loads it if `force` or it changed.
    fn refresh(&self, state: &mut State, force: bool, verb: &str) {
        let Some(path) = &self.path else {
            return;
        };
        state.checked = Some(Instant::now());
        match std::fs::metadata(path) {
            Ok(meta) => {
                let stamp = Stamp::of(&meta);
                if force || state.stamp != Some(stamp) {
                    self.load(state, path, stamp, verb);
                }
            }
            Err(e) => self.failed(state, path, e),
        }
    }

    /// Reads and parses the file whose `stat` gave `stamp`.
    fn load(&self, state: &mut State, path: &Path, stamp: Stamp, verb: &str) {
        state.loads += 1;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return self.failed(state, path, e),
        };
        let source = path.display().to_string();
        let text = String::from_utf8_lossy(&bytes);
        let (aliases, warnings) = Aliases::parse(&text, &source);
        for warning in &warnings {
            log::warn!("{warning}");
        }
        log::info!("{verb} {} aliases from {source}", aliases.len());
        state.aliases = Ok(Arc::new(aliases));
        state.stamp = Some(stamp);
        state.missing = false;
    }

    /// The file could not be stat'ed or read: missing is no aliases,
    /// anything else is a lookup failure until it can be read again.
    fn failed(&self, state: &mut State, path: &Path, e: io::Error) {
        state.stamp = None;
        if e.kind() == io::ErrorKind::NotFound {
            if !state.missing {
                log::info!("{}: no such file; no aliases", path.display());
            }
            state.missing = true;
            state.aliases = Ok(Arc::new(Aliases::empty()));
            return;
        }
        state.missing = false;
        let why = LookupError(format!("{}: {e}", path.display()));
        // Once per failure, not once per check.
        if state.aliases.as_ref().err() != Some(&why) {
            log::warn!("{why}");
        }
        state.aliases = Err(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn parse(text: &str) -> (Aliases, Vec<String>) {
        Aliases::parse(text, "aliases")
    }

    fn local(name: &str) -> Target {
        Target::Local(name.to_owned())
    }

    fn addr(local: &str, domain: &str) -> Target {
        Target::Address {
            local: local.to_owned(),
            domain: domain.to_owned(),
        }
    }

    fn local_domain(domain: &str) -> bool {
        domain == "localhost" || domain == "example.org"
    }

    fn expand(aliases: &Aliases, name: &str) -> Expansion {
        aliases.expand(name, &local_domain)
    }

    fn users(aliases: &Aliases, name: &str) -> Vec<String> {
        expand(aliases, name).users
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

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
        fn parse_never_panics(text in any::<String>()) {
            let (aliases, warnings) = Aliases::parse(&text, "f");
            for w in &warnings {
                prop_assert!(w.starts_with("f:"), "{w:?}");
            }
            let _ = aliases.len();
        }

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

    // ---- AliasFile ----

    /// An alias file in a temporary directory that never re-stats on its
    /// own (the interval is an hour), so tests decide when it looks.
    fn alias_file(dir: &tempfile::TempDir, text: Option<&str>) -> (PathBuf, AliasFile) {
        let path = dir.path().join("aliases");
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let mut file = AliasFile::open(&path);
        file.interval = Duration::from_secs(3600);
        (path, file)
    }

    /// Makes the next `get` look at the file.
    fn expire(file: &AliasFile) {
        file.lock().checked = None;
    }

    fn loads(file: &AliasFile) -> u64 {
        file.lock().loads
    }

    /// Rewrites `path` and moves its mtime, so a change is seen even on a
    /// file system with coarse timestamps.
    fn rewrite(path: &Path, text: &str, mtime: SystemTime) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(mtime).unwrap();
    }

    #[test]
    fn alias_file_loads_and_reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = alias_file(&dir, Some("staff: jon\n"));
        let first = file.get().unwrap();
        assert_eq!(first.targets("staff"), Some(&[local("jon")][..]));
        assert_eq!(loads(&file), 1);

        // Changed, but not looked at yet: the old aliases.
        let past = SystemTime::now() - Duration::from_secs(3600);
        rewrite(&path, "staff: alice\n", past);
        assert!(Arc::ptr_eq(&file.get().unwrap(), &first));

        // Looked at: reloaded.
        expire(&file);
        let second = file.get().unwrap();
        assert_eq!(second.targets("staff"), Some(&[local("alice")][..]));
        assert_eq!(loads(&file), 2);

        // Looked at again, unchanged: not read again, same Arc.
        expire(&file);
        assert!(Arc::ptr_eq(&file.get().unwrap(), &second));
        assert_eq!(loads(&file), 2);

        // Same size, only the mtime moves: reloaded.
        rewrite(&path, "staff: carol\n", past + Duration::from_secs(10));
        expire(&file);
        assert_eq!(
            file.get().unwrap().targets("staff"),
            Some(&[local("carol")][..])
        );
        assert_eq!(loads(&file), 3);

        // Replaced by a new file (new inode) with the same size and mtime.
        let tmp = dir.path().join("aliases.new");
        rewrite(&tmp, "staff: danny\n", past + Duration::from_secs(10));
        std::fs::rename(&tmp, &path).unwrap();
        expire(&file);
        assert_eq!(
            file.get().unwrap().targets("staff"),
            Some(&[local("danny")][..])
        );
    }

    #[test]
    fn alias_file_rechecks_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut file) = alias_file(&dir, Some("a: b\n"));
        file.interval = Duration::ZERO;
        rewrite(&path, "a: c\n", SystemTime::now() - Duration::from_secs(60));
        assert_eq!(file.get().unwrap().targets("a"), Some(&[local("c")][..]));
    }

    #[test]
    fn alias_file_reload_forces_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = alias_file(&dir, Some("a: b\n"));
        rewrite(&path, "a: c\n", SystemTime::now() - Duration::from_secs(60));
        file.reload();
        assert_eq!(file.get().unwrap().targets("a"), Some(&[local("c")][..]));
        file.reload();
        assert_eq!(loads(&file), 3, "reload reads even an unchanged file");
    }

    #[test]
    fn alias_file_missing_is_empty_and_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = alias_file(&dir, None);
        assert!(file.get().unwrap().is_empty());
        assert!(file.lock().missing);
        assert_eq!(loads(&file), 0);

        std::fs::write(&path, "a: b\n").unwrap();
        expire(&file);
        assert_eq!(file.get().unwrap().len(), 1);

        std::fs::remove_file(&path).unwrap();
        expire(&file);
        assert!(file.get().unwrap().is_empty());
    }

    #[test]
    fn alias_file_unreadable_is_a_lookup_error_until_fixed() {
        // A directory cannot be read as a file, as root too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases");
        std::fs::create_dir(&path).unwrap();
        let mut file = AliasFile::open(&path);
        file.interval = Duration::from_secs(3600);
        let e = file.get().unwrap_err();
        assert!(e.0.starts_with(&path.display().to_string()), "{e}");

        // Each check retries, changed or not.
        expire(&file);
        assert!(file.get().is_err());
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, "a: b\n").unwrap();
        expire(&file);
        assert_eq!(file.get().unwrap().len(), 1);
    }

    #[test]
    fn alias_file_invalid_utf8_is_read_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aliases");
        std::fs::write(&path, b"a: b\n\xff\xfe: x\nc: d\n").unwrap();
        let file = AliasFile::open(&path);
        let aliases = file.get().unwrap();
        assert!(aliases.contains("a"));
        assert!(aliases.contains("c"));
    }

    #[test]
    fn empty_alias_file_has_no_aliases_and_no_path() {
        let file = AliasFile::empty();
        assert!(file.path().is_none());
        assert!(file.get().unwrap().is_empty());
        file.reload();
        assert!(file.get().unwrap().is_empty());
    }

    #[test]
    fn alias_file_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AliasFile>();
        check::<Aliases>();
    }
}
