//! The message as it is submitted: who is sending ([`Invoker`], from the
//! passwd entry of the real uid), the host name for addresses, and
//! [`prepare`], which makes the envelope and the finished message (Bcc:
//! removed; From:, Date:, Message-ID: added when missing). `prepare` is
//! pure, given a [`Context`], so that its rules are tested without a
//! passwd file or a clock; where the message then goes is the parent
//! module's business.

use std::time::{SystemTime, UNIX_EPOCH};

use super::args::{self, Flags};
use super::client::Envelope;
use super::message::{self, Message};
use crate::cli::Options;
use crate::config;
use crate::smtp::Mailbox;
use crate::sys;

/// The user running us, from the passwd database by real uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invoker {
    name: String,
    full_name: Option<String>,
}

impl Invoker {
    pub(super) fn current() -> Invoker {
        let uid = nix::unistd::getuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) => {
                let gecos = u.gecos.to_string_lossy().into_owned();
                let full_name = gecos_name(&gecos, &u.name);
                Invoker {
                    name: u.name,
                    full_name,
                }
            }
            // No passwd entry (a container's arbitrary uid): the number,
            // which the daemon will see through SO_PEERCRED all the same.
            _ => Invoker {
                name: uid.to_string(),
                full_name: None,
            },
        }
    }
}

/// The full name in a passwd GECOS field: its first comma-separated part,
/// with `&` standing for the capitalized user name (the BSD convention
/// finger(1) and sendmail follow).
fn gecos_name(gecos: &str, user: &str) -> Option<String> {
    let first = gecos.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        return None;
    }
    let mut cap = String::new();
    let mut cs = user.chars();
    if let Some(c) = cs.next() {
        cap.extend(c.to_uppercase());
        cap.push_str(cs.as_str());
    }
    Some(first.replace('&', &cap))
}

/// The envelope sender: `-f`/`-r` through the server's own parser
/// (qualified with our host name when it has no domain; empty for `<>`),
/// else the invoking user at our host.
fn envelope_sender(given: Option<&str>, me: &Invoker, host: &str) -> Result<String, String> {
    let Some(given) = given else {
        return Ok(user_address(&me.name, host));
    };
    match args::sender(given) {
        Ok(Some(mut m)) => {
            m.domain.get_or_insert_with(|| host.to_owned());
            Ok(m.to_string())
        }
        Ok(None) => Ok(String::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// `user@host`, the local part quoted if it must be.
fn user_address(user: &str, host: &str) -> String {
    Mailbox {
        local: user.to_owned(),
        domain: Some(host.to_owned()),
    }
    .to_string()
}

/// What [`prepare`] needs from the world, handed in so that it is pure.
pub(super) struct Context<'a> {
    pub(super) me: &'a Invoker,
    pub(super) host: &'a str,
    pub(super) now: SystemTime,
    pub(super) pid: u32,
    pub(super) random: u64,
}

/// The envelope and the message, ready for SMTP: recipients from the
/// command line and, with `-t`, the header; Bcc: removed; From:, Date:
/// and Message-ID: added when missing.
pub(super) fn prepare(
    flags: &Flags,
    mut msg: Message,
    cx: &Context<'_>,
) -> Result<(Envelope, Message), String> {
    let mut recipients = flags.recipients.clone();
    if flags.extract {
        recipients.extend(msg.header_recipients());
    }
    // The same address twice gets the message once.
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_ascii_lowercase()));
    msg.remove_bcc();
    if recipients.is_empty() {
        return Err("no recipients in the To:, Cc: or Bcc: fields".into());
    }
    let sender = envelope_sender(flags.sender.as_deref(), cx.me, cx.host)?;
    for a in recipients.iter().chain([&sender]) {
        if a.chars().any(|c| c.is_control()) {
            return Err(format!("bad address {a:?}: control character"));
        }
    }
    if !msg.has("From") {
        // The -f address if given (and not <>), else the invoking user,
        // with the -F name or, for the invoking user, the GECOS name.
        let (addr, gecos) = match &flags.sender {
            Some(_) if !sender.is_empty() => (sender.clone(), None),
            _ => (user_address(&cx.me.name, cx.host), cx.me.full_name.clone()),
        };
        let value = match flags.full_name.clone().or(gecos) {
            Some(name) if !message::display_name(&name).is_empty() => {
                format!("{} <{addr}>", message::display_name(&name))
            }
            _ => addr,
        };
        msg.add("From", &value);
    }
    if !msg.has("Date") {
        msg.add("Date", &sys::localtime(cx.now).rfc5322());
    }
    if !msg.has("Message-ID") {
        let secs = cx
            .now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        msg.add(
            "Message-ID",
            &format!("<{secs}.{}.{:016x}@{}>", cx.pid, cx.random, cx.host),
        );
    }
    let env = Envelope {
        sender,
        recipients,
        dsn: flags.dsn.clone(),
    };
    Ok((env, msg))
}

/// The host name for addresses and the Message-ID, checked as
/// `config::service` checks it.
pub(super) fn host_name(opts: &Options) -> Result<String, String> {
    let host = config::mail_name(opts.hostname.as_deref());
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("--hostname {host:?}: not a host name"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gecos() {
        assert_eq!(gecos_name("Jon Doe,,,", "jon"), Some("Jon Doe".into()));
        assert_eq!(
            gecos_name("& Smith,room 1", "jon"),
            Some("Jon Smith".into())
        );
        assert_eq!(gecos_name(",,,", "jon"), None);
        assert_eq!(gecos_name("", "jon"), None);
    }

    #[test]
    fn senders() {
        let me = Invoker {
            name: "jon".into(),
            full_name: None,
        };
        let s = |g: Option<&str>| envelope_sender(g, &me, "h.example").unwrap();
        assert_eq!(s(None), "jon@h.example");
        assert_eq!(s(Some("cron@x.example")), "cron@x.example");
        assert_eq!(s(Some("<cron@x.example>")), "cron@x.example");
        assert_eq!(s(Some("daemon")), "daemon@h.example");
        assert_eq!(s(Some("<>")), "");
        assert_eq!(s(Some("")), "");
        let odd = Invoker {
            name: "a b".into(),
            full_name: None,
        };
        assert_eq!(envelope_sender(None, &odd, "h").unwrap(), "\"a b\"@h");
        assert!(envelope_sender(Some("a@b> SIZE=1"), &me, "h").is_err());
    }

    fn cx<'a>(me: &'a Invoker) -> Context<'a> {
        Context {
            me,
            host: "h.example",
            now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            pid: 42,
            random: 0xabc,
        }
    }

    fn prep(flags: Flags, text: &str) -> Result<(Envelope, String), String> {
        let me = Invoker {
            name: "jon".into(),
            full_name: Some("Jon Doe".into()),
        };
        let lines = message::read_lines(text.as_bytes(), flags.ignore_dots, 1 << 20).unwrap();
        let (env, msg) = prepare(&flags, Message::parse(lines), &cx(&me))?;
        Ok((env, String::from_utf8(msg.to_smtp()).unwrap()))
    }

    fn to(list: &[&str]) -> Flags {
        Flags {
            recipients: list.iter().map(|s| (*s).to_owned()).collect(),
            ..Flags::default()
        }
    }

    #[test]
    fn missing_fields_are_added() {
        let (env, text) = prep(to(&["alice"]), "Subject: hi\n\nbody\n").unwrap();
        assert_eq!(env.sender, "jon@h.example");
        assert_eq!(env.recipients, vec!["alice"]);
        let date = sys::localtime(UNIX_EPOCH + Duration::from_secs(1_800_000_000)).rfc5322();
        assert_eq!(
            text,
            format!(
                "Subject: hi\r\nFrom: Jon Doe <jon@h.example>\r\nDate: {date}\r\n\
                 Message-ID: <1800000000.42.0000000000000abc@h.example>\r\n\r\nbody\r\n"
            )
        );
    }

    #[test]
    fn present_fields_are_kept() {
        let (_, text) = prep(
            to(&["alice"]),
            "from: Me <me@x>\ndate: Mon, 1 Jan 2024 00:00:00 +0000\nmessage-id: <a@b>\n\nbody\n",
        )
        .unwrap();
        assert_eq!(
            text,
            "from: Me <me@x>\r\ndate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
             message-id: <a@b>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn sender_and_names() {
        let flags = Flags {
            sender: Some("cron@x.example".into()),
            ..to(&["alice"])
        };
        let (env, text) = prep(flags.clone(), "\n").unwrap();
        assert_eq!(env.sender, "cron@x.example");
        // -f without -F: no GECOS name of somebody else.
        assert!(text.starts_with("From: cron@x.example\r\n"), "{text}");
        let flags = Flags {
            full_name: Some("Cron Daemon".into()),
            ..flags
        };
        let (_, text) = prep(flags, "\n").unwrap();
        assert!(
            text.starts_with("From: Cron Daemon <cron@x.example>\r\n"),
            "{text}"
        );
        // -F without -f names the invoking user.
        let flags = Flags {
            full_name: Some("Doe, J.".into()),
            ..to(&["alice"])
        };
        let (_, text) = prep(flags, "\n").unwrap();
        assert!(
            text.starts_with("From: \"Doe, J.\" <jon@h.example>\r\n"),
            "{text}"
        );
        // The null sender: MAIL FROM:<>, From: the user.
        let flags = Flags {
            sender: Some("<>".into()),
            ..to(&["alice"])
        };
        let (env, text) = prep(flags, "\n").unwrap();
        assert_eq!(env.sender, "");
        assert!(
            text.starts_with("From: Jon Doe <jon@h.example>\r\n"),
            "{text}"
        );
    }

    #[test]
    fn extract_recipients_and_remove_bcc() {
        let flags = Flags {
            extract: true,
            ..to(&["carol"])
        };
        let (env, text) = prep(
            flags,
            "To: Alice <alice@h.example>, jon\nCc: undisclosed-recipients:;\n\
             Bcc: secret@h.example,\n  carol\nSubject: s\n\nbody\n",
        )
        .unwrap();
        assert_eq!(
            env.recipients,
            vec!["carol", "alice@h.example", "jon", "secret@h.example"]
        );
        assert!(!text.contains("Bcc"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.starts_with(
            "To: Alice <alice@h.example>, jon\r\nCc: undisclosed-recipients:;\r\nSubject: s\r\n"
        ));
    }

    #[test]
    fn bcc_is_removed_without_t_too() {
        let (env, text) = prep(to(&["alice"]), "Bcc: secret\nSubject: s\n\nb\n").unwrap();
        assert_eq!(env.recipients, vec!["alice"]);
        assert!(!text.contains("secret"));
    }

    #[test]
    fn t_without_any_recipient_is_an_error() {
        let flags = Flags {
            extract: true,
            ..Flags::default()
        };
        let e = prep(flags, "Subject: nobody\n\nb\n").unwrap_err();
        assert!(e.contains("no recipients"), "{e}");
    }

    #[test]
    fn control_characters_in_addresses_are_refused() {
        let flags = Flags {
            sender: Some("a@b>\r\nRCPT TO:<x".into()),
            ..to(&["alice"])
        };
        assert!(prep(flags, "\n").is_err());
        let flags = Flags {
            extract: true,
            ..Flags::default()
        };
        assert!(prep(flags, "To: a\u{1}b@h\n\nx\n").is_err());
    }

    #[test]
    fn lone_dot() {
        let (_, text) = prep(to(&["a"]), "Subject: s\n\none\n.\ntwo\n").unwrap();
        assert!(text.ends_with("\r\n\r\none\r\n"), "{text}");
        let flags = Flags {
            ignore_dots: true,
            ..to(&["a"])
        };
        let (_, text) = prep(flags, "Subject: s\n\none\n.\ntwo\n").unwrap();
        assert!(text.ends_with("\r\n\r\none\r\n..\r\ntwo\r\n"), "{text}");
    }

    #[test]
    fn duplicates_are_sent_once() {
        let flags = Flags {
            extract: true,
            ..to(&["jon", "Jon"])
        };
        let (env, _) = prep(flags, "To: jon, alice\n\nx\n").unwrap();
        assert_eq!(env.recipients, vec!["jon", "alice"]);
    }
}
