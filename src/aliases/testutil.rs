//! Test fixtures shared by the aliases' tests: parsing with a fixed source
//! name, targets, and expansion with a fixed set of local domains.

use super::{Aliases, Expansion, Target};

pub(crate) fn parse(text: &str) -> (Aliases, Vec<String>) {
    Aliases::parse(text, "aliases")
}

pub(crate) fn local(name: &str) -> Target {
    Target::Local(name.to_owned())
}

pub(crate) fn addr(local: &str, domain: &str) -> Target {
    Target::Address {
        local: local.to_owned(),
        domain: domain.to_owned(),
    }
}

pub(crate) fn local_domain(domain: &str) -> bool {
    domain == "localhost" || domain == "example.org"
}

pub(crate) fn expand(aliases: &Aliases, name: &str) -> Expansion {
    aliases.expand(name, &local_domain)
}

pub(crate) fn users(aliases: &Aliases, name: &str) -> Vec<String> {
    expand(aliases, name).users
}

pub(crate) fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}
