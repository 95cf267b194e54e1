//! The domains postie delivers for: the host's names (host name, FQDN,
//! `/etc/mailname`, `localhost`), its interface addresses as address
//! literals, and those configured.
//!
//! Pure apart from [`LocalDomains::detect`], which asks the system once at
//! start-up; a source that fails is skipped, so detection never fails.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The domains postie delivers for. Compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct LocalDomains {
    names: HashSet<String>,
    addrs: Vec<IpAddr>,
}

/// Lower-cases a domain name and strips one trailing dot (the root label).
///
/// ASCII only. A U-label (RFC 6531 3.3, RFC 5890) is compared exactly as
/// configured: IDNA2008 U-labels are lower case already (its mapping is
/// the sender's job), Unicode's own lower-casing would join names that are
/// not one (the Kelvin sign K lowers to `k`, so `\u{212a}` would pass for a
/// `k`), and without an IDNA library a U-label is not its A-label either:
/// a site that wants both forms configures both.
fn normalize_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Parses an address literal with its brackets: `[192.0.2.1]` or
/// `[IPv6:2001:db8::1]` (the tag in any case), per RFC 5321 4.1.3.
/// Anything else, including general address literals with other tags,
/// is `None`.
pub fn parse_address_literal(literal: &str) -> Option<IpAddr> {
    let inner = literal.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

impl LocalDomains {
    /// Exactly the given names and addresses (for tests).
    ///
    /// Names are stored lower-cased without a trailing dot; empty names are
    /// dropped. A name that is an address literal (`[192.0.2.1]`) is added
    /// to the addresses instead.
    pub fn new(names: impl IntoIterator<Item = String>, addrs: Vec<IpAddr>) -> Self {
        let mut domains = LocalDomains {
            names: HashSet::new(),
            addrs: Vec::new(),
        };
        for addr in addrs {
            domains.add_addr(addr);
        }
        for name in names {
            let name = name.trim();
            if let Some(addr) = parse_address_literal(name) {
                domains.add_addr(addr);
                continue;
            }
            let name = normalize_name(name);
            if !name.is_empty() {
                domains.names.insert(name);
            }
        }
        domains
    }

    fn add_addr(&mut self, addr: IpAddr) {
        let addr = addr.to_canonical();
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// The host's: `hostname`, the short host name and FQDN, the contents of
    /// `/etc/mailname`, `localhost`, the host's interface addresses (as
    /// address literals) and `extra`.
    ///
    /// A source that fails (no host name, no `/etc/mailname`, no interface
    /// list) is skipped; this never fails.
    pub fn detect(hostname: &str, extra: &[String]) -> Self {
        let mut names = vec![hostname.to_owned()];
        if let Some(host) = system_hostname() {
            if let Some((short, _)) = host.split_once('.') {
                names.push(short.to_owned());
            }
            names.push(host);
        }
        names.extend(host_fqdn());
        names.extend(read_mailname(Path::new(MAILNAME)));
        names.push("localhost".to_owned());
        names.extend(extra.iter().cloned());

        let mut addrs = interface_addrs();
        addrs.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        addrs.push(IpAddr::V6(Ipv6Addr::LOCALHOST));

        let domains = Self::new(names, addrs);
        log::debug!(
            "local domains: {:?}, addresses: {:?}",
            domains.names,
            domains.addrs
        );
        domains
    }

    /// True if `domain` (a name, or an address literal with its brackets)
    /// is local.
    ///
    /// Names compare case-insensitively, with a trailing dot ignored.
    /// Address literals match one of the local addresses, an IPv4-mapped
    /// IPv6 address (`[IPv6:::ffff:127.0.0.1]`) counting as its IPv4
    /// address. A malformed literal is never local.
    pub fn is_local(&self, domain: &str) -> bool {
        if domain.starts_with('[') {
            return match parse_address_literal(domain) {
                Some(addr) => self.addrs.contains(&addr.to_canonical()),
                None => false,
            };
        }
        let name = normalize_name(domain);
        !name.is_empty() && self.names.contains(&name)
    }
}

/// The host name as gethostname(2) gives it, or `None` if it fails or is
/// empty or not UTF-8.
fn system_hostname() -> Option<String> {
    match nix::unistd::gethostname() {
        Ok(name) => match name.into_string() {
            Ok(name) if !name.is_empty() => Some(name),
            Ok(_) => None,
            Err(name) => {
                log::warn!("host name {name:?} is not UTF-8; ignored");
                None
            }
        },
        Err(e) => {
            log::warn!("gethostname: {}", e.desc());
            None
        }
    }
}

/// The host's FQDN: the canonical name getaddrinfo(3) gives for the host
/// name, from [`crate::sys::fqdn`]; failing that, the host name itself if
/// it already contains a dot.
fn host_fqdn() -> Option<String> {
    crate::sys::fqdn()
        .filter(|name| !name.is_empty())
        .or_else(|| system_hostname().filter(|name| name.contains('.')))
}

/// Debian's file of the host's mail name, read for the local domains and
/// for the host name postie gives itself ([`crate::config::mail_name`]).
pub const MAILNAME: &str = "/etc/mailname";

/// The mail name in `path` (Debian's `/etc/mailname`): the first line that
/// is neither blank nor a `#` comment, trimmed; `None` if it has no such
/// line. The one reader of the file: what a failure to read it means is
/// the caller's to say.
pub fn mailname_in(path: &Path) -> io::Result<Option<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned))
}

/// [`mailname_in`], for the local domains: `None` if the file cannot be
/// read (a warning unless it is missing) or has no such line.
fn read_mailname(path: &Path) -> Option<String> {
    match mailname_in(path) {
        Ok(name) => name,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("{}: {e}", path.display());
            }
            None
        }
    }
}

/// Every IPv4 and IPv6 address of the host's interfaces, from
/// getifaddrs(3); empty if that fails.
fn interface_addrs() -> Vec<IpAddr> {
    let ifaddrs = match nix::ifaddrs::getifaddrs() {
        Ok(ifaddrs) => ifaddrs,
        Err(e) => {
            log::warn!("getifaddrs: {}", e.desc());
            return Vec::new();
        }
    };
    ifaddrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|sa| {
            if let Some(sin) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(sin.ip()))
            } else {
                sa.as_sockaddr_in6().map(|sin6| IpAddr::V6(sin6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> LocalDomains {
        LocalDomains::new(
            ["Example.ORG.".to_owned(), "localhost".to_owned()],
            vec![
                "127.0.0.1".parse().unwrap(),
                "192.0.2.7".parse().unwrap(),
                "::1".parse().unwrap(),
                "2001:db8::25".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn names_match_case_insensitively_and_ignore_trailing_dot() {
        let d = domains();
        assert!(d.is_local("example.org"));
        assert!(d.is_local("EXAMPLE.org"));
        assert!(d.is_local("example.org."));
        assert!(d.is_local("LocalHost"));
        assert!(!d.is_local("example.com"));
        assert!(!d.is_local("sub.example.org"));
        assert!(!d.is_local(""));
        assert!(!d.is_local("."));
        assert!(!d.is_local("example.org.."));
    }

    /// RFC 6531: a U-label domain is local only if configured, compared
    /// exactly (ASCII letters in any case); no Unicode case mapping lets
    /// another name pass for a local one.
    #[test]
    fn utf8_domains_are_local_only_as_configured() {
        let d = LocalDomains::new(
            [
                "b\u{fc}cher.example".to_string(),
                "kiosk.example".to_string(),
            ],
            vec![],
        );
        assert!(d.is_local("b\u{fc}cher.example"));
        assert!(d.is_local("b\u{fc}cher.EXAMPLE."));
        assert!(!d.is_local("B\u{dc}CHER.example"));
        assert!(!d.is_local("xn--bcher-kva.example"));
        assert!(!d.is_local("bucher.example"));
        // The Kelvin sign lowers to `k` in Unicode: not here.
        assert!(!d.is_local("\u{212a}iosk.example"));
        assert!(!domains().is_local("b\u{fc}cher.example"));
    }

    #[test]
    fn ipv4_literals() {
        let d = domains();
        assert!(d.is_local("[127.0.0.1]"));
        assert!(d.is_local("[192.0.2.7]"));
        assert!(!d.is_local("[192.0.2.8]"));
        assert!(!d.is_local("[192.0.2.7"));
        assert!(!d.is_local("[192.0.2]"));
        assert!(!d.is_local("[]"));
        assert!(!d.is_local("[ 127.0.0.1]"));
        assert!(!d.is_local("127.0.0.1"));
    }

    #[test]
    fn ipv6_literals_with_tag_in_any_case() {
        let d = domains();
        assert!(d.is_local("[IPv6:::1]"));
        assert!(d.is_local("[ipv6:::1]"));
        assert!(d.is_local("[IPV6:2001:DB8::25]"));
        assert!(d.is_local("[IPv6:2001:db8:0:0:0:0:0:25]"));
        assert!(!d.is_local("[IPv6:2001:db8::26]"));
        assert!(!d.is_local("[::1]"), "IPv6 literal needs its tag");
        assert!(!d.is_local("[IPv6:127.0.0.1]"));
        assert!(!d.is_local("[IPv6:]"));
        assert!(!d.is_local("[x-tag:foo]"));
    }

    #[test]
    fn ipv4_mapped_addresses_match_their_ipv4_address() {
        let d = domains();
        assert!(d.is_local("[IPv6:::ffff:127.0.0.1]"));
        assert!(d.is_local("[IPv6:::ffff:192.0.2.7]"));
        assert!(!d.is_local("[IPv6:::ffff:192.0.2.8]"));

        let mapped = LocalDomains::new([], vec!["::ffff:198.51.100.1".parse().unwrap()]);
        assert!(mapped.is_local("[198.51.100.1]"));
        assert!(mapped.is_local("[IPv6:::ffff:198.51.100.1]"));
    }

    #[test]
    fn new_takes_literals_among_names_and_drops_empty_names() {
        let d = LocalDomains::new(
            ["[192.0.2.1]".to_owned(), "".to_owned(), ".".to_owned()],
            vec![],
        );
        assert!(d.is_local("[192.0.2.1]"));
        assert!(d.names.is_empty());
    }

    #[test]
    fn mailname_is_the_first_meaningful_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailname");
        assert_eq!(read_mailname(&path), None);
        std::fs::write(&path, "# comment\n\n  mail.example.org  \nother\n").unwrap();
        assert_eq!(read_mailname(&path), Some("mail.example.org".to_owned()));
        std::fs::write(&path, "# only a comment\n").unwrap();
        assert_eq!(read_mailname(&path), None);
    }

    #[test]
    fn interface_addrs_does_not_fail() {
        // Whatever the host has; only checks the call works and does not panic.
        let _ = interface_addrs();
        let _ = system_hostname();
    }
}
