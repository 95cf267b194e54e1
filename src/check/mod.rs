//! `postie check [ADDRESS]`: what an admin runs after editing the
//! configuration, and what `sendmail -bv` is to sendmail.
//!
//! It looks at the options in force (command line over configuration file
//! over defaults), the spool directory, the queue directory, the aliases
//! file, whether the host name and the configured local domains resolve,
//! and, given an address, follows it the way RCPT TO would: domain,
//! extension, aliases, passwd lookup, mailbox. It never writes anything,
//! but for the leftovers of a crash in the queue, which every scan of the
//! queue removes.
//!
//! The result is a list of [`Finding`]s (`ok:`, `warning:`, `error:`, one
//! line each) and a [`Verdict`] that `main` turns into an exit status, so
//! the checks are testable without a process or stdout.
//!
//! The spool and what delivery may make in it are looked at in
//! `check/spool.rs` ([`spool_access`]), the queue in `check/queue.rs`;
//! everything else is here.

mod queue;
mod spool;

use std::fmt;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use crate::aliases::Aliases;
use crate::cli::{Options, SmtpSideUser};
use crate::config::{self, ConfigError, DEFAULT_FILE, Loaded};
use crate::dest::Dest;
use crate::domains::LocalDomains;
use crate::recipients::Resolution;
use crate::server::Service;
use crate::smtp::address::parse_path;
use crate::smtp::{Mailbox, reply};
use spool::{cannot_create_for, spool};

pub use spool::{SpoolAccess, spool_access};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.level {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{prefix}: {}", self.text)
    }
}

/// The outcome as a whole, from the worst error found. Ordered: a later
/// variant wins over an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// No errors (warnings allowed).
    Ok,
    /// ADDRESS is not an address (EX_DATAERR).
    BadAddress,
    /// ADDRESS is in a local domain but no user or alias (`550 5.1.1`;
    /// EX_NOUSER).
    NoUser,
    /// ADDRESS is not in a local domain (`550 5.7.1`; EX_UNAVAILABLE).
    NotLocal,
    /// Mail to ADDRESS would be deferred: a failed lookup (`451 4.3.0`) or
    /// a mailbox postie will not write to (`450 4.2.0`) (EX_TEMPFAIL).
    TempFail,
    /// The configuration, the spool or the aliases file is wrong
    /// (EX_CONFIG).
    Config,
}

/// Everything `postie check` found.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub verdict: Verdict,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            findings: Vec::new(),
            verdict: Verdict::Ok,
        }
    }
}

impl Report {
    fn ok(&mut self, text: impl Into<String>) {
        self.push(Level::Ok, text.into());
    }

    fn warn(&mut self, text: impl Into<String>) {
        self.push(Level::Warning, text.into());
    }

    fn error(&mut self, verdict: Verdict, text: impl Into<String>) {
        self.push(Level::Error, text.into());
        self.verdict = self.verdict.max(verdict);
    }

    fn push(&mut self, level: Level, text: String) {
        self.findings.push(Finding { level, text });
    }

    /// The report of a configuration that did not load at all.
    pub fn config_error(e: &ConfigError) -> Report {
        let mut r = Report::default();
        r.error(Verdict::Config, e.to_string());
        r
    }

    /// The texts of the findings at `level` (for tests).
    pub fn texts(&self, level: Level) -> Vec<&str> {
        self.findings
            .iter()
            .filter(|f| f.level == level)
            .map(|f| f.text.as_str())
            .collect()
    }
}

/// Runs every check on the options in force, and on `address` if given.
pub fn run(conf: &Loaded, address: Option<&str>) -> Report {
    let mut r = Report::default();
    let o = &conf.cli.opts;
    configuration(&mut r, conf);
    // The spool is examined below, in more detail than the service wants.
    let service = match conf.service_unchecked_spool() {
        Ok(s) => Some(s),
        Err(e) => {
            r.error(Verdict::Config, e.to_string());
            None
        }
    };
    names(&mut r, o);
    spool(&mut r, &o.spool);
    queue::queue(&mut r, &o.queue_dir);
    let aliases = aliases(&mut r, &o.aliases);
    smtp_user(&mut r, o);
    smtp_side_can_read(&mut r, o);
    tls(&mut r, conf);
    if let Some(service) = &service {
        users(&mut r, o);
        if let Some(addr) = address {
            recipient(&mut r, o, service, aliases.as_ref(), addr);
        }
    } else if let Some(addr) = address {
        r.error(
            Verdict::Config,
            format!("{addr}: not checked: the configuration has errors"),
        );
    }
    r
}

/// Which file was read, and what the command line overrode.
fn configuration(r: &mut Report, conf: &Loaded) {
    match &conf.file {
        Some(file) => {
            let n = conf.settings.len() + conf.overridden.len();
            r.ok(format!(
                "configuration {}: {n} setting{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            ));
            if !conf.overridden.is_empty() {
                r.ok(format!(
                    "configuration {}: overridden on the command line: {}",
                    file.display(),
                    conf.overridden.join(", ")
                ));
            }
        }
        None => r.ok(format!(
            "no configuration file {DEFAULT_FILE}; built-in defaults and the command line"
        )),
    }
}

/// The host name and each configured local domain should resolve: clients
/// find this host by them.
fn names(r: &mut Report, o: &Options) {
    let hostname = config::mail_name(o.hostname.as_deref());
    if hostname.bytes().all(|b| b.is_ascii_graphic()) && !hostname.is_empty() {
        resolves(r, "hostname", &hostname);
    }
    for d in &o.domains {
        if d.starts_with('[') {
            if config::plausible_domain(d) {
                r.ok(format!("domain {d}: an address literal"));
            }
        } else if config::plausible_domain(d) {
            resolves(r, "domain", d);
        }
    }
}

fn resolves(r: &mut Report, what: &str, name: &str) {
    match (name, 25).to_socket_addrs() {
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            let shown: Vec<String> = ips.iter().take(4).map(IpAddr::to_string).collect();
            let more = if ips.len() > 4 { ", ..." } else { "" };
            r.ok(format!(
                "{what} {name} resolves to {}{more}",
                shown.join(", ")
            ));
        }
        Err(e) => r.warn(format!("{what} {name} does not resolve: {e}")),
    }
}
/// STARTTLS: the pair in use, or why there is none; a key file others
/// may read is a warning.
fn tls(r: &mut Report, conf: &Loaded) {
    use std::os::unix::fs::MetadataExt;
    let o = &conf.cli.opts;
    match conf.tls() {
        Ok(Some(setup)) => {
            r.ok(format!(
                "STARTTLS offered: certificate {}, key {}",
                setup.files.cert.display(),
                setup.files.key.display()
            ));
            if let Ok(m) = std::fs::metadata(&setup.files.key) {
                if m.mode() & 0o004 != 0 {
                    r.warn(format!(
                        "tls-key {}: every user may read it; chmod 600 (or 640 with group ssl-cert)",
                        setup.files.key.display()
                    ));
                }
            }
        }
        Ok(None) if o.tls_cert.is_some() => r.ok("STARTTLS off: tls-cert is empty"),
        Ok(None) => r.warn(
            "STARTTLS not offered: no tls-cert, and no snakeoil pair this user may read (package ssl-cert)",
        ),
        Err(e) => r.error(Verdict::Config, e.to_string()),
    }
}

/// The user the SMTP side runs as when postie is started as root
/// (privilege separation, `--user`): as the server decides, a missing
/// `_postie` is replaced by nobody, any other missing user, or root, stops
/// a root postie from starting (an error when checking as root).
fn smtp_user(r: &mut Report, o: &Options) {
    let root = nix::unistd::geteuid().is_root();
    let fatal = |r: &mut Report, text: String| match root {
        true => r.error(Verdict::Config, text),
        false => r.warn(text),
    };
    match SmtpSideUser::resolve(&o.user) {
        Ok(SmtpSideUser::Named(u)) if u.uid.is_root() => fatal(
            r,
            format!("user {}: is root: started as root, postie does not start", o.user),
        ),
        Ok(SmtpSideUser::Named(u)) => r.ok(format!(
            "user {} (uid {}): started as root, the SMTP side runs as it",
            u.name, u.uid
        )),
        Ok(SmtpSideUser::Nobody(_)) => r.warn(
            "user _postie does not exist: started as root, the SMTP side runs as nobody; create it: adduser --system --group _postie",
        ),
        Ok(SmtpSideUser::Missing) => fatal(
            r,
            format!(
                "user {}: no such user: started as root, postie does not start",
                o.user
            ),
        ),
        Err(e) => r.warn(format!("user {}: lookup failed: {e}", o.user)),
    }
}

/// Started as root, the SMTP side reads the aliases file as the
/// unprivileged --user: a file only root can read works at start and fails
/// after the first reload. Not root, there is nothing to check.
fn smtp_side_can_read(r: &mut Report, o: &crate::cli::Options) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() || o.aliases.as_os_str().is_empty() {
        return;
    }
    // As the server resolves it: without _postie, nobody.
    let user = SmtpSideUser::resolve(&o.user)
        .ok()
        .and_then(SmtpSideUser::user);
    let Some(user) = user else {
        // Reported by smtp_user.
        return;
    };
    let gid = match &o.group {
        Some(g) => nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
        None => Some(user.gid.as_raw()),
    };
    let Ok(md) = std::fs::metadata(&o.aliases) else {
        return;
    };
    let mode = md.mode();
    let readable = (md.uid() == user.uid.as_raw() && mode & 0o400 != 0)
        || (Some(md.gid()) == gid && mode & 0o040 != 0)
        || mode & 0o004 != 0;
    if readable {
        r.ok(format!(
            "aliases {}: readable by the SMTP side ({})",
            o.aliases.display(),
            user.name
        ));
    } else {
        r.warn(format!(
            "aliases {}: mode {:o} is not readable by the SMTP side ({}): recipients get 451 after the first reload; make it world-readable (644)",
            o.aliases.display(),
            mode & 0o7777,
            user.name
        ));
    }
}

/// The aliases file: read and parsed as the server does; each parse
/// warning is a warning. Missing is no aliases; unreadable is an error
/// (the server would answer 451 for every recipient).
fn aliases(r: &mut Report, path: &Path) -> Option<Aliases> {
    if path.as_os_str().is_empty() {
        r.ok("aliases: disabled");
        return Some(Aliases::empty());
    }
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            r.ok(format!("aliases {shown}: no such file; no aliases"));
            return Some(Aliases::empty());
        }
        Err(e) => {
            r.error(Verdict::Config, format!("aliases {shown}: {e}"));
            return None;
        }
    };
    let (aliases, warnings) = Aliases::parse(&String::from_utf8_lossy(&bytes), &shown);
    for w in warnings {
        r.warn(w);
    }
    let n = aliases.len();
    r.ok(format!(
        "aliases {shown}: {n} alias{}",
        if n == 1 { "" } else { "es" }
    ));
    Some(aliases)
}

/// Where users come from.
fn users(r: &mut Report, o: &Options) {
    match &o.passwd {
        Some(p) => r.ok(format!("users: from {}", p.display())),
        None => r.ok("users: the system's passwd database (NSS)"),
    }
}

/// `code enhanced` of a reply, as the session would send it.
fn code(reply: &reply::Reply) -> String {
    match reply.enhanced {
        Some(e) => format!("{} {e}", reply.code),
        None => reply.code.to_string(),
    }
}

/// How mail to `addr` would be delivered, as RCPT TO resolves it and the
/// deliverer checks the mailbox.
fn recipient(
    r: &mut Report,
    o: &Options,
    service: &Service,
    aliases: Option<&Aliases>,
    addr: &str,
) {
    let mailbox = match parse_path(addr) {
        Ok((Some(m), rest)) if rest.trim().is_empty() => m,
        Ok((None, _)) => {
            return r.error(
                Verdict::BadAddress,
                format!("{addr}: the null address has no mailbox"),
            );
        }
        Ok(_) => {
            return r.error(
                Verdict::BadAddress,
                format!("{addr}: junk after the address"),
            );
        }
        Err(e) => return r.error(Verdict::BadAddress, format!("{addr}: bad address: {}", e.0)),
    };
    let shown = mailbox.to_string();
    let users = match service.recipients().resolve(&mailbox) {
        Resolution::Local(users) => users,
        Resolution::Unknown => {
            let why = service
                .recipients()
                .why_unknown(&mailbox)
                .map(|why| format!(" ({why})"))
                .unwrap_or_default();
            return r.error(
                Verdict::NoUser,
                format!(
                    "{shown}: {} user unknown{why}",
                    code(&reply::unknown_user(&shown))
                ),
            );
        }
        Resolution::NotLocal => {
            let domain = mailbox.domain.as_deref().unwrap_or_default();
            return r.error(
                Verdict::NotLocal,
                format!(
                    "{shown}: {} relaying denied: {domain} is not a local domain",
                    code(&reply::relay_denied(&shown))
                ),
            );
        }
        Resolution::TempFail(why) => {
            return r.error(
                Verdict::TempFail,
                format!(
                    "{shown}: {} lookup failed: {why}",
                    code(&reply::lookup_failed())
                ),
            );
        }
    };
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    if let (Some(name), Some(aliases)) = (alias_of(o, aliases, &mailbox), aliases) {
        r.ok(format!("{shown}: alias {name} -> {}", names.join(", ")));
        let hostname = config::mail_name(o.hostname.as_deref());
        let domains = LocalDomains::detect(&hostname, &o.domains);
        let is_local = |d: &str| domains.is_local(d);
        let expansion = aliases.expand_with(
            &name,
            &crate::aliases::Context {
                is_local_domain: &is_local,
                allow: crate::aliases::Allow {
                    commands: o.allow_commands,
                    files: o.allow_files,
                },
                reader: &crate::aliases::NoReader,
            },
        );
        for refused in expansion.refused {
            r.warn(refused);
        }
        for special in &expansion.specials {
            r.ok(format!(
                "{shown}: alias {name} -> {special} (named in {})",
                special.source().kind()
            ));
        }
        for leaf in expansion.users {
            if !names.contains(&leaf.as_str()) {
                r.warn(format!("{shown}: alias {name}: {leaf} is no user; skipped"));
            }
        }
    } else if base_name(o, &mailbox) == "postmaster" {
        r.ok(format!(
            "{shown}: postmaster, not an alias: delivered to {} (RFC 5321 4.5.1)",
            names.join(", ")
        ));
    }
    // Where delivery sends it: .forward and :include: files read, and
    // each program and file with the user it runs as.
    match service.delivery().explain(&mailbox) {
        Some(Ok(explained)) => {
            for (user, why) in &explained.ignored_forwards {
                r.warn(format!(
                    "{shown}: {why}; ignored, {user}'s mailbox gets the mail"
                ));
            }
            let dests: Vec<String> = explained
                .dests
                .iter()
                .map(|d| match d {
                    Dest::Mailbox(u) => format!("mailbox of {u}"),
                    Dest::Program { .. } => format!("program {d}"),
                    Dest::File { .. } => format!("file {d}"),
                })
                .collect();
            r.ok(format!("{shown}: delivered to {}", dests.join(", ")));
        }
        Some(Err(why)) => r.warn(format!("{shown}: delivery cannot expand it now: {why}")),
        None => {}
    }
    for u in &users {
        let checked = service
            .delivery()
            .check_mailbox(u)
            .map_err(|refused| refused.to_string())
            .and_then(|()| cannot_create_for(&o.spool, u).map_or(Ok(()), Err));
        match checked {
            Ok(()) => {
                let path = o.spool.join(&u.name);
                let state = match std::fs::symlink_metadata(&path) {
                    Ok(m) => format!(
                        "exists, {} byte{}",
                        m.len(),
                        if m.len() == 1 { "" } else { "s" }
                    ),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        "none yet; created at the first delivery".into()
                    }
                    Err(e) => e.to_string(),
                };
                r.ok(format!(
                    "{shown}: local user {} (uid {}), mailbox {} ({state})",
                    u.name,
                    u.uid,
                    path.display()
                ));
            }
            Err(why) => r.error(
                Verdict::TempFail,
                format!(
                    "{shown}: {} mailbox unavailable: {why}",
                    code(&reply::mailbox_unavailable(&shown))
                ),
            ),
        }
    }
}

/// The local part as looked up: lower-cased, extension removed.
fn base_name(o: &Options, mailbox: &Mailbox) -> String {
    let local = mailbox.local.to_ascii_lowercase();
    let delimiter = config::parse_delimiter(&o.extension_delimiter)
        .ok()
        .flatten();
    match delimiter.and_then(|c| local.split_once(c)) {
        Some((base, _)) if !base.is_empty() => base.to_owned(),
        _ => local,
    }
}

/// The alias `mailbox` names, if it names one.
fn alias_of(o: &Options, aliases: Option<&Aliases>, mailbox: &Mailbox) -> Option<String> {
    let name = base_name(o, mailbox);
    aliases.filter(|a| a.contains(&name)).map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// A spool, a passwd file with `jon` and `alice` (the uid running the
    /// tests, so this passes as root and not), and an aliases file path.
    struct Setup {
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("spool")).unwrap();
            std::fs::create_dir(dir.path().join("queue")).unwrap();
            std::fs::set_permissions(
                dir.path().join("queue"),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
            let uid = nix::unistd::geteuid().as_raw();
            let gid = nix::unistd::getegid().as_raw();
            std::fs::write(
                dir.path().join("passwd"),
                format!(
                    "jon:x:{uid}:{gid}::/:/bin/sh\nalice:x:{uid}:{gid}::/:/bin/sh\n\
                     nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
                ),
            )
            .unwrap();
            Setup { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn run(&self, extra: &[&str], address: Option<&str>) -> Report {
            let mut argv: Vec<String> = [
                "postie",
                "check",
                "--hostname",
                "localhost",
                "--domain",
                "[192.0.2.25]",
                "--temp-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            argv.push(self.path(""));
            for (opt, file) in [
                ("--spool", "spool"),
                ("--queue-dir", "queue"),
                ("--passwd", "passwd"),
                ("--aliases", "aliases"),
            ] {
                argv.push(opt.into());
                argv.push(self.path(file));
            }
            argv.extend(extra.iter().map(|s| s.to_string()));
            let cli = crate::cli::parse(argv.iter().map(OsString::from)).unwrap();
            run(&Loaded::without_file(cli), address)
        }
    }

    #[test]
    fn a_good_setup_is_ok() {
        let s = Setup::new();
        let r = s.run(&[], None);
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        let ok = r.texts(Level::Ok);
        assert!(
            ok.iter().any(|t| t.starts_with("no configuration file")),
            "{ok:?}"
        );
        assert!(
            ok.iter()
                .any(|t| t.starts_with("hostname localhost resolves to ")),
            "{ok:?}"
        );
        assert!(
            ok.contains(&"domain [192.0.2.25]: an address literal"),
            "{ok:?}"
        );
        assert!(
            ok.iter()
                .any(|t| t.starts_with(&format!("spool {}: a directory", s.path("spool")))),
            "{ok:?}"
        );
        assert!(
            ok.iter().any(|t| t.ends_with("no such file; no aliases")),
            "{ok:?}"
        );
        let queue = format!("queue {}: 0 entries, 0 broken", s.path("queue"));
        assert!(ok.contains(&queue.as_str()), "{ok:?}");
        assert!(r.texts(Level::Error).is_empty());
    }

    #[test]
    fn a_local_user_and_their_mailbox() {
        let s = Setup::new();
        std::fs::write(s.dir.path().join("spool/jon"), b"12345").unwrap();
        let r = s.run(&[], Some("Jon+lists@LOCALHOST"));
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        let uid = nix::unistd::geteuid();
        let want = format!(
            "Jon+lists@LOCALHOST: local user jon (uid {uid}), mailbox {} (exists, 5 bytes)",
            s.path("spool/jon")
        );
        assert!(r.texts(Level::Ok).contains(&want.as_str()), "{r:?}");
        let r = s.run(&[], Some("alice@[192.0.2.25]"));
        assert!(
            r.texts(Level::Ok)
                .iter()
                .any(|t| t.contains("local user alice")
                    && t.ends_with("(none yet; created at the first delivery)")),
            "{r:?}"
        );
    }

    #[test]
    fn unknown_relay_and_bad_addresses() {
        let s = Setup::new();
        let r = s.run(&[], Some("elvis@localhost"));
        assert_eq!(r.verdict, Verdict::NoUser);
        assert_eq!(
            r.texts(Level::Error),
            ["elvis@localhost: 550 5.1.1 user unknown"]
        );
        let r = s.run(&[], Some("jon@elsewhere.example"));
        assert_eq!(r.verdict, Verdict::NotLocal);
        assert_eq!(
            r.texts(Level::Error),
            [
                "jon@elsewhere.example: 550 5.7.1 relaying denied: elsewhere.example is not a local domain"
            ]
        );
        for bad in ["<>", "jon@", "a b@c"] {
            assert_eq!(s.run(&[], Some(bad)).verdict, Verdict::BadAddress, "{bad}");
        }
    }

    #[test]
    fn aliases_are_expanded_and_their_problems_shown() {
        let s = Setup::new();
        std::fs::write(
            s.dir.path().join("aliases"),
            "staff: admins, jon\nadmins: alice, ghost, \"|/bin/prog\"\nempty: ghost\nbroken line\n",
        )
        .unwrap();
        let r = s.run(&[], Some("staff"));
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        let ok = r.texts(Level::Ok);
        assert!(ok.contains(&"staff: alias staff -> alice, jon"), "{ok:?}");
        // Delivery's view: the program with the user it runs as (the
        // default user for root's aliases file, else its owner).
        let runs_as = if nix::unistd::geteuid().is_root() {
            "nobody"
        } else {
            "jon"
        };
        let delivered = format!(
            "staff: delivered to mailbox of alice, mailbox of jon, program \"|/bin/prog\" (as {runs_as})"
        );
        assert!(ok.contains(&delivered.as_str()), "{ok:?}");
        assert!(
            ok.iter().any(|t| t.starts_with("staff: local user alice")),
            "{ok:?}"
        );
        assert!(
            ok.iter().any(|t| t.starts_with("staff: local user jon")),
            "{ok:?}"
        );
        let warnings = r.texts(Level::Warning);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(":4: ") && w.ends_with("line skipped")),
            "{warnings:?}"
        );
        assert!(
            ok.contains(&"staff: alias staff -> \"|/bin/prog\" (named in aliases)"),
            "{ok:?}"
        );
        assert!(
            warnings.contains(&"staff: alias staff: ghost is no user; skipped"),
            "{warnings:?}"
        );
        let r = s.run(&[], Some("empty"));
        assert_eq!(r.verdict, Verdict::NoUser);
        assert_eq!(
            r.texts(Level::Error),
            ["empty: 550 5.1.1 user unknown (alias empty: none of its users exists)"]
        );
        // An alias to a program alone: say why, not "none of its users".
        std::fs::write(s.dir.path().join("aliases"), "pipe: \"|/bin/prog\"\n").unwrap();
        let r = s.run(&["--allow-commands", "forward"], Some("pipe"));
        assert_eq!(r.verdict, Verdict::NoUser);
        assert_eq!(
            r.texts(Level::Error),
            [
                "pipe: 550 5.1.1 user unknown (alias pipe: \"|/bin/prog\": program targets are not allowed in the aliases (allow-commands))"
            ]
        );
        // Allowed (the default): the alias exists.
        let r = s.run(&[], Some("pipe"));
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
    }

    #[test]
    fn postmaster_without_an_alias_is_root() {
        let s = Setup::new();
        let r = s.run(&[], Some("postmaster"));
        assert!(
            r.texts(Level::Ok)
                .iter()
                .any(|t| t.starts_with("postmaster: postmaster, not an alias: delivered to root")),
            "{r:?}"
        );
    }

    #[test]
    fn a_mailbox_postie_will_not_write_is_a_temporary_failure() {
        let s = Setup::new();
        std::os::unix::fs::symlink("/etc/passwd", s.dir.path().join("spool/jon")).unwrap();
        let r = s.run(&[], Some("jon"));
        assert_eq!(r.verdict, Verdict::TempFail, "{r:?}");
        let errors = r.texts(Level::Error);
        assert!(
            errors[0].starts_with("jon: 450 4.2.0 mailbox unavailable: "),
            "{errors:?}"
        );
    }

    #[test]
    fn setup_errors_are_config_errors() {
        let s = Setup::new();
        // An aliases "file" that cannot be read.
        std::fs::create_dir(s.dir.path().join("aliases")).unwrap();
        let r = s.run(&[], Some("jon"));
        assert_eq!(r.verdict, Verdict::Config, "{r:?}");
        assert!(r.texts(Level::Error)[0].starts_with(&format!("aliases {}: ", s.path("aliases"))));

        let s = Setup::new();
        std::fs::remove_dir(s.dir.path().join("spool")).unwrap();
        let r = s.run(&[], None);
        assert_eq!(r.verdict, Verdict::Config);
        assert_eq!(r.texts(Level::Error).len(), 1, "{r:?}");
        assert!(r.texts(Level::Error)[0].starts_with(&format!("spool {}: ", s.path("spool"))));

        let s = Setup::new();
        let r = s.run(&["--mailbox-mode", "400"], Some("jon"));
        assert_eq!(r.verdict, Verdict::Config);
        let errors = r.texts(Level::Error);
        assert!(errors[0].starts_with("--mailbox-mode 400: "), "{errors:?}");
        assert!(errors[1].starts_with("jon: not checked"), "{errors:?}");
    }

    #[test]
    fn spool_deviations_from_debian_are_warnings() {
        use std::os::unix::fs::PermissionsExt;
        let s = Setup::new();
        let spool = s.dir.path().join("spool");
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o757)).unwrap();
        let r = s.run(&[], None);
        assert_eq!(r.verdict, Verdict::Ok);
        let w = r.texts(Level::Warning);
        assert!(
            w.iter()
                .any(|t| t.ends_with("mode 0757 is not writable by the group (want 2775)")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|t| t.contains("neither the setgid nor the sticky bit")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|t| t.contains("writable by anyone without the sticky bit")),
            "{w:?}"
        );
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2775)).unwrap();
        let w = s.run(&[], None).texts(Level::Warning).join("\n");
        assert!(!w.contains("mode"), "{w}");
    }
}
