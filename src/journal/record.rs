//! The journal's on-disk format: the file's name, its header, its lines,
//! their checksums, and [`parse`], which reads them back.
//!
//! Pure: nothing here touches the file system, so that the format can be
//! tested on bytes alone; [`super::Journal`] writes what this builds, and
//! recovery ([`super::recover()`]) reads what this parses. Journals written by
//! an earlier postie must still be read the same: no constant or line here
//! may change without a new [`MAGIC`].
//!
//! A journal is a header, `postie-txn 2 GENERATION\n` (the generation as 16
//! hex digits; 0 for an idle journal), then lines `KEY GENERATION REST\n`.
//! Only the lines of the header's generation count: further on are the
//! lines of earlier deliveries, which each delivery writes over in place.
//! In the order a delivery writes them:
//!
//! * its intent: `from` (the length of every append, then its beginning in
//!   hex), a `want` for each mailbox (uid, gid, name), and `end` (how many
//!   `want`s, and an FNV-1a checksum of the `from` and `want` lines);
//!   settling the delivery spoils it, `from` becoming `-rom`;
//! * a `lock` for each dotlock about to be made (device, inode,
//!   modification time in seconds and nanoseconds, mailbox name);
//! * where each append starts: a `size` for each mailbox (device, inode,
//!   size before the append, name), and `sizes` (how many, and a checksum
//!   of the `size` lines).
//!
//! * when the delivery also changes the queue (a recipient that cannot
//!   take the message now is queued; a queued one is delivered): a `qbox`
//!   for each mailbox that the delivery appends to after all (the others
//!   of the intent were left to the queue), and `queue` (`new` or `done`,
//!   the queue id, how many `qbox`es, and a checksum of the `qbox` lines),
//!   synced. Added after the first journals of this format, which have
//!   none and mean what they meant.
//!
//! The intent, the append starts and the queue step are trusted only whole
//! and with their checksum; a line cut short or of another generation ends
//! what is read.
//!
//! Every line names its target last: a mailbox of the spool by its user's
//! name, a file target (postie 8: an alias's or a `.forward`'s `/path`)
//! by its absolute path, spaces and all ([`valid_file_name`]: a name no
//! user can have, as it holds a `/`). Journals without file targets are
//! written byte for byte as before; an earlier postie reads a journal
//! naming a file as garbled.

use std::path::{Path, PathBuf};

use crate::mbox::LockId;
use crate::users::valid_user_name;

/// The start of every journal's name in the spool.
pub const PREFIX: &str = ".postie-txn.";

/// The header: this, a generation as 16 hex digits, a newline.
const MAGIC: &str = "postie-txn 2 ";
pub(super) const HEADER_LEN: usize = MAGIC.len() + 16 + 1;
/// The generation of an idle journal.
pub(super) const IDLE: u64 = 0;
/// The size a journal is filled to when created: one delivery's lines fit
/// (unless it has very many recipients or very long trace headers), so
/// that overwriting them never grows the file.
pub(super) const SLOT_SIZE: usize = 4096;
/// Settling a delivery writes this over the first byte of its intent,
/// right after the header (`from` becomes `-rom`).
pub(super) const SETTLED: &[u8] = b"-";
pub(super) const SETTLED_AT: u64 = HEADER_LEN as u64;

/// True for the journal's name of a file target: its absolute path,
/// which no user name can be (a user name holds no `/`). Plain: no empty,
/// `.` or `..` component, no `/` at the end, no control character (the
/// journal is lines), at most 4095 bytes.
pub fn valid_file_name(name: &str) -> bool {
    name.len() > 1
        && name.len() < 4096
        && name.starts_with('/')
        && !name.chars().any(char::is_control)
        && name[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Where the target the journal knows as `name` is: a file target's own
/// path, or the mailbox `spool/name`.
pub fn target_path(spool: &Path, name: &str) -> PathBuf {
    if valid_file_name(name) {
        PathBuf::from(name)
    } else {
        spool.join(name)
    }
}

/// The dotlock of the target the journal knows as `name`: its path and
/// `.lock`.
pub(super) fn dotlock_path(spool: &Path, name: &str) -> PathBuf {
    let mut lock = target_path(spool, name).into_os_string();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// True for a name the journal may hold: a user's (a mailbox of the
/// spool) or a file target's ([`valid_file_name`]).
fn valid_target_name(name: &str) -> bool {
    valid_user_name(name) || valid_file_name(name)
}

/// A mailbox (or file target) a delivery is about to write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Its name: in the spool (the user's name), or a file target's
    /// absolute path ([`valid_file_name`]).
    pub name: String,
    /// The filesystem identity the mailbox is handled with when postie is
    /// root: the owner, and group `mail` (or the owner's group).
    pub uid: u32,
    pub gid: u32,
}

/// Where a delivery's append to one mailbox starts: the mailbox as the
/// delivery found it once locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendStart {
    pub name: String,
    pub dev: u64,
    pub ino: u64,
    /// Its size before the append: where the append begins, and what
    /// recovery truncates back to.
    pub old_size: u64,
}

/// What a delivery does to the queue in the same transaction as its
/// appends ([`super::Journal::record_queue`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueStep {
    /// Makes queue entry `id` for the recipients that could not take the
    /// message, after every append to `mailboxes`: the entry's envelope
    /// file is the delivery's commit point.
    New { id: String, mailboxes: Vec<String> },
    /// Delivers queue entry `id` to `mailboxes`, pending in it: once every
    /// append is whole they are taken off the entry.
    Done { id: String, mailboxes: Vec<String> },
}

impl QueueStep {
    /// The mailboxes the delivery appends to.
    pub fn mailboxes(&self) -> &[String] {
        match self {
            QueueStep::New { mailboxes, .. } | QueueStep::Done { mailboxes, .. } => mailboxes,
        }
    }
}

/// A delivery's intent, as its journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The beginning of every append: the From_ line and trace headers.
    pub prefix: Vec<u8>,
    /// The length of every append.
    pub len: u64,
    pub wants: Vec<Want>,
}

/// What a journal says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The generation; 0 for an idle or unreadable journal.
    pub generation: u64,
    /// The delivery's intent, if whole and intact and not settled.
    pub intent: Option<Intent>,
    /// The targets of the intent, whole and intact, settled or not: the
    /// identity that removes a file target's dotlock.
    pub wants: Vec<Want>,
    /// The intent was there and has been spoiled: the delivery was over
    /// (delivered, or rolled back).
    pub settled: bool,
    /// The dotlocks the delivery made or was about to make: mailbox name
    /// and lock.
    pub locks: Vec<(String, LockId)>,
    /// Where each append begins, if recorded whole.
    pub starts: Option<Vec<AppendStart>>,
    /// What the delivery does to the queue, if recorded whole.
    pub queue: Option<QueueStep>,
}

/// The name of the `n`th journal made by process `pid`, told apart from
/// other runs of a process of that number by `random`.
pub(super) fn name(pid: u32, n: u64, random: u64) -> String {
    format!("{PREFIX}{pid}.{n}.{random:016x}")
}

/// True for a name [`name`] could have made.
pub(super) fn is_journal_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    parts.len() == 3
        && digits(parts[0])
        && digits(parts[1])
        && parts[2].len() == 16
        && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The header of a journal whose delivery is of `generation` ([`IDLE`]
/// for none).
pub(super) fn header(generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(format!("{MAGIC}{generation:016x}\n").as_bytes());
    h
}

fn line(generation: u64, key: &str, rest: &str) -> String {
    format!("{key} {generation:016x} {rest}\n")
}

/// The intent's lines: every append `len` bytes long, starting with
/// `prefix`, to each mailbox of `wants`; then their count and checksum.
pub(super) fn intent_lines(generation: u64, prefix: &[u8], len: u64, wants: &[Want]) -> String {
    let mut s = line(generation, "from", &format!("{len} {}", hex(prefix)));
    for w in wants {
        s.push_str(&line(
            generation,
            "want",
            &format!("{} {} {}", w.uid, w.gid, w.name),
        ));
    }
    let sum = checksum(s.as_bytes());
    s.push_str(&line(
        generation,
        "end",
        &format!("{} {sum:016x}", wants.len()),
    ));
    s
}

/// The line of the dotlock `id` about to be made for mailbox `name`.
pub(super) fn lock_line(generation: u64, name: &str, id: LockId) -> String {
    line(
        generation,
        "lock",
        &format!(
            "{} {} {} {} {name}",
            id.dev, id.ino, id.mtime, id.mtime_nsec
        ),
    )
}

/// The lines of where each append starts; then their count and checksum.
pub(super) fn start_lines(generation: u64, starts: &[AppendStart]) -> String {
    let mut s = String::new();
    for z in starts {
        s.push_str(&line(
            generation,
            "size",
            &format!("{} {} {} {}", z.dev, z.ino, z.old_size, z.name),
        ));
    }
    let sum = checksum(s.as_bytes());
    s.push_str(&line(
        generation,
        "sizes",
        &format!("{} {sum:016x}", starts.len()),
    ));
    s
}

/// The lines of a delivery's queue step.
pub(super) fn queue_lines(generation: u64, step: &QueueStep) -> String {
    let mut s = String::new();
    for name in step.mailboxes() {
        s.push_str(&line(generation, "qbox", name));
    }
    let sum = checksum(s.as_bytes());
    let (kind, id) = match step {
        QueueStep::New { id, .. } => ("new", id),
        QueueStep::Done { id, .. } => ("done", id),
    };
    let n = step.mailboxes().len();
    s.push_str(&line(
        generation,
        "queue",
        &format!("{kind} {id} {n} {sum:016x}"),
    ));
    s
}

/// FNV-1a, 64 bits: enough to tell lines cut short or garbled.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a journal. Never fails: what cannot be trusted is left out.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let Some(generation) = bytes
        .get(..HEADER_LEN)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.strip_prefix(MAGIC)?.strip_suffix('\n'))
        .and_then(|g| u64::from_str_radix(g, 16).ok())
    else {
        return p;
    };
    if generation == IDLE {
        return p;
    }
    p.generation = generation;
    let tag = format!("{generation:016x}");
    // Whole lines of this generation only: further on are the lines of
    // earlier deliveries, and a crash may leave half a line. Each is
    // (key, rest, the line's bytes).
    let mut lines: Vec<(&str, &str, &[u8])> = Vec::new();
    let mut rest = &bytes[HEADER_LEN..];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..nl + 1];
        rest = &rest[nl + 1..];
        let Some((key, tail)) = std::str::from_utf8(&raw[..nl])
            .ok()
            .and_then(|l| l.split_once(' '))
        else {
            break;
        };
        let Some(tail) = tail.strip_prefix(tag.as_str()) else {
            break;
        };
        let tail = tail.strip_prefix(' ').unwrap_or(tail);
        lines.push((key, tail, raw));
    }
    let mut at = 0;
    // The intent: from, want..., end.
    if let Some(&(first, from, _)) = lines.first().filter(|l| l.0 == "from" || l.0 == "-rom") {
        p.settled = first == "-rom";
        let mut signed = Vec::new();
        let mut wants = Vec::new();
        let mut end = None;
        for &(key, tail, raw) in &lines {
            at += 1;
            match key {
                "from" | "-rom" if at == 1 => signed.extend_from_slice(raw),
                "want" => {
                    signed.extend_from_slice(raw);
                    wants.push(tail);
                }
                "end" => {
                    end = Some(tail);
                    break;
                }
                _ => break,
            }
        }
        if p.settled {
            // Signed as written, before settling spoiled it.
            signed[0] = b'f';
        }
        match end {
            Some(end) => {
                let intent = parse_intent(from, &wants, end, &signed);
                p.wants = intent.as_ref().map(|i| i.wants.clone()).unwrap_or_default();
                if !p.settled {
                    p.intent = intent;
                }
            }
            // Cut short: nothing after it can be trusted either.
            None => at = lines.len(),
        }
    }
    // The dotlocks, then where the appends begin, then the queue step.
    let mut starts = Vec::new();
    let mut signed = Vec::new();
    for &(key, tail, raw) in &lines[at..] {
        at += 1;
        match key {
            "lock" if starts.is_empty() => match parse_lock(tail) {
                Some(l) => p.locks.push(l),
                None => break,
            },
            "size" => {
                signed.extend_from_slice(raw);
                starts.push(tail);
            }
            "sizes" => {
                p.starts = parse_starts(&starts, tail, &signed);
                break;
            }
            _ => break,
        }
    }
    if p.starts.is_some() {
        let (mut boxes, mut signed) = (Vec::new(), Vec::new());
        for &(key, tail, raw) in &lines[at..] {
            match key {
                "qbox" => {
                    signed.extend_from_slice(raw);
                    boxes.push(tail);
                }
                "queue" => {
                    p.queue = parse_queue(&boxes, tail, &signed);
                    break;
                }
                _ => break,
            }
        }
    }
    p
}

fn parse_queue(boxes: &[&str], tail: &str, signed: &[u8]) -> Option<QueueStep> {
    let mut f = tail.split(' ');
    let (kind, id, count, sum) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some()
        || count.parse::<usize>().ok()? != boxes.len()
        || u64::from_str_radix(sum, 16).ok()? != checksum(signed)
        || !crate::queue::valid_id(id)
        || !boxes.iter().all(|b| valid_target_name(b))
    {
        return None;
    }
    let (id, mailboxes) = (
        id.to_string(),
        boxes.iter().map(|b| b.to_string()).collect(),
    );
    match kind {
        "new" => Some(QueueStep::New { id, mailboxes }),
        "done" => Some(QueueStep::Done { id, mailboxes }),
        _ => None,
    }
}

fn parse_intent(from: &str, wants: &[&str], end: &str, signed: &[u8]) -> Option<Intent> {
    let (count, sum) = end.split_once(' ')?;
    if count.parse::<usize>().ok()? != wants.len()
        || u64::from_str_radix(sum, 16).ok()? != checksum(signed)
        || wants.is_empty()
    {
        return None;
    }
    let (len, prefix) = from.split_once(' ')?;
    let prefix = unhex(prefix)?;
    let wants = wants
        .iter()
        .map(|w| {
            let mut f = w.splitn(3, ' ');
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            let name = f.next()?;
            // Not `plausible_user_name`: a journal is our own, and one
            // written before names like `x.lock` were refused must still
            // be undone.
            valid_target_name(name).then(|| Want {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect::<Option<Vec<Want>>>()?;
    let intent = Intent {
        prefix,
        len: len.parse().ok()?,
        wants,
    };
    (intent.prefix.starts_with(b"From ") && intent.len as usize > intent.prefix.len())
        .then_some(intent)
}

fn parse_lock(tail: &str) -> Option<(String, LockId)> {
    let mut f = tail.splitn(5, ' ');
    let id = LockId {
        dev: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        mtime: f.next()?.parse().ok()?,
        mtime_nsec: f.next()?.parse().ok()?,
    };
    let name = f.next()?;
    valid_target_name(name).then(|| (name.to_string(), id))
}

fn parse_starts(starts: &[&str], end: &str, signed: &[u8]) -> Option<Vec<AppendStart>> {
    let (count, sum) = end.split_once(' ')?;
    if count.parse::<usize>().ok()? != starts.len()
        || u64::from_str_radix(sum, 16).ok()? != checksum(signed)
    {
        return None;
    }
    starts
        .iter()
        .map(|z| {
            let mut f = z.splitn(4, ' ');
            Some(AppendStart {
                dev: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
                old_size: f.next()?.parse().ok()?,
                name: f.next()?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::want;
    use super::*;

    #[test]
    fn hex_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let h = hex(&all);
        assert_eq!(&h[..8], "00010203");
        assert_eq!(&h[h.len() - 4..], "feff");
        assert_eq!(unhex(&h), Some(all));
        assert_eq!(unhex("0g"), None);
    }

    const ID: LockId = LockId {
        dev: 1,
        ino: 2,
        mtime: 3,
        mtime_nsec: 4,
    };

    /// A journal's bytes as [`super::super::Journal`] writes them, before
    /// the slot's zeros: the header of `generation`, then `lines`.
    fn journal(generation: u64, lines: &[String]) -> Vec<u8> {
        let mut bytes = header(generation).to_vec();
        for l in lines {
            bytes.extend_from_slice(l.as_bytes());
        }
        bytes
    }

    /// A queue step after the append starts is read back whole; cut
    /// short, garbled, before the starts, or naming no valid entry, it is
    /// not there (and the rest of the journal reads as without it).
    #[test]
    fn queue_steps_round_trip_and_are_trusted_only_whole() {
        const G: u64 = 0x0123_4567_89ab_cdef;
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\n";
        let intent = intent_lines(G, prefix, 500, &[want("alice"), want("jon")]);
        let starts = start_lines(
            G,
            &[AppendStart {
                name: "alice".into(),
                dev: 8,
                ino: 9,
                old_size: 100,
            }],
        );
        let id = "0069a1f2c3b4d5e6f708192a3b".to_string();
        for step in [
            QueueStep::New {
                id: id.clone(),
                mailboxes: vec!["alice".into()],
            },
            QueueStep::Done {
                id: id.clone(),
                mailboxes: vec!["alice".into(), "jon".into()],
            },
            QueueStep::New {
                id: id.clone(),
                mailboxes: vec![],
            },
        ] {
            let q = queue_lines(G, &step);
            let whole = journal(G, &[intent.clone(), starts.clone(), q.clone()]);
            let p = parse(&whole);
            assert_eq!(p.queue.as_ref(), Some(&step));
            assert!(p.intent.is_some() && p.starts.is_some());
            for cut in 0..q.len() {
                let short = journal(G, &[intent.clone(), starts.clone(), q[..cut].into()]);
                let p = parse(&short);
                assert_eq!(p.queue, None, "cut at {cut}");
                assert!(p.starts.is_some());
            }
            let garbled = journal(
                G,
                &[
                    intent.clone(),
                    starts.clone(),
                    q.replacen("qbox", "qbux", 1),
                ],
            );
            if !step.mailboxes().is_empty() {
                assert_eq!(parse(&garbled).queue, None);
            }
            let before = journal(G, &[intent.clone(), q.clone(), starts.clone()]);
            assert_eq!(parse(&before).queue, None);
            let other = journal(
                G,
                &[intent.clone(), starts.clone(), queue_lines(G + 1, &step)],
            );
            assert_eq!(parse(&other).queue, None);
        }
        let bad_id = QueueStep::New {
            id: "../../etc/passwd".into(),
            mailboxes: vec![],
        };
        let j = journal(
            G,
            &[intent.clone(), starts.clone(), queue_lines(G, &bad_id)],
        );
        assert_eq!(parse(&j).queue, None);
        let wrong_sum = queue_lines(
            G,
            &QueueStep::New {
                id: id.clone(),
                mailboxes: vec!["alice".into()],
            },
        )
        .replace("qbox 0123456789abcdef alice", "qbox 0123456789abcdef alicf");
        assert_eq!(parse(&journal(G, &[intent, starts, wrong_sum])).queue, None);
    }

    /// The format on disk, byte for byte, as postie 2 to 6 write it (the
    /// checksums computed apart, with another FNV-1a): journals an earlier
    /// postie left are read, and this one writes what they wrote.
    #[test]
    fn the_format_on_disk_is_unchanged() {
        const G: u64 = 0x0123_4567_89ab_cdef;
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\n";
        let wants = [
            Want {
                name: "alice".into(),
                uid: 1000,
                gid: 8,
            },
            Want {
                name: "jon".into(),
                uid: 0,
                gid: 0,
            },
        ];
        let starts = [
            AppendStart {
                name: "alice".into(),
                dev: 8,
                ino: 9,
                old_size: 100,
            },
            AppendStart {
                name: "jon".into(),
                dev: 8,
                ino: 10,
                old_size: 0,
            },
        ];
        let golden = "postie-txn 2 0123456789abcdef\n\
            from 0123456789abcdef 500 46726f6d206140622053756e204e6f762020312030363a30353a303420323032360a\n\
            want 0123456789abcdef 1000 8 alice\n\
            want 0123456789abcdef 0 0 jon\n\
            end 0123456789abcdef 2 73202b1999dbef6d\n\
            lock 0123456789abcdef 1 2 3 4 alice\n\
            size 0123456789abcdef 8 9 100 alice\n\
            size 0123456789abcdef 8 10 0 jon\n\
            sizes 0123456789abcdef 2 e396ac6073e4f369\n";
        let written = journal(
            G,
            &[
                intent_lines(G, prefix, 500, &wants),
                lock_line(G, "alice", ID),
                start_lines(G, &starts),
            ],
        );
        assert_eq!(String::from_utf8(written).unwrap(), golden);
        let p = parse(golden.as_bytes());
        assert_eq!(
            p,
            Parsed {
                generation: G,
                intent: Some(Intent {
                    prefix: prefix.to_vec(),
                    len: 500,
                    wants: wants.to_vec(),
                }),
                wants: wants.to_vec(),
                settled: false,
                locks: vec![("alice".to_string(), ID)],
                starts: Some(starts.to_vec()),
                queue: None,
            }
        );
        // Settled: `from` spoiled to `-rom`; idle: generation 0.
        let mut settled = golden.as_bytes().to_vec();
        settled[SETTLED_AT as usize..][..SETTLED.len()].copy_from_slice(SETTLED);
        assert!(settled[HEADER_LEN..].starts_with(b"-rom 0123456789abcdef "));
        let p = parse(&settled);
        assert!(p.settled && p.intent.is_none() && p.locks.len() == 1);
        assert_eq!(&header(IDLE), b"postie-txn 2 0000000000000000\n");
        assert_eq!(parse(&header(IDLE)), Parsed::default());
        assert_eq!(name(42, 7, 0xabc), ".postie-txn.42.7.0000000000000abc");
        assert!(is_journal_name(&name(42, 7, u64::MAX)));
        assert!(!is_journal_name(".postie-txn.lock"));
    }

    /// A file target is named by its absolute path (spaces and all), in
    /// the lines a mailbox's name takes, byte for byte as pinned here
    /// (checksums computed apart); a settled journal still gives its
    /// targets (`wants`), whose identities remove a file's dotlock.
    #[test]
    fn file_targets_are_named_by_their_path() {
        const G: u64 = 0x0123_4567_89ab_cdef;
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\n";
        let file = "/var/log/mail archive";
        let wants = [
            Want {
                name: "alice".into(),
                uid: 1000,
                gid: 8,
            },
            Want {
                name: file.into(),
                uid: 4242,
                gid: 4243,
            },
        ];
        let starts = [
            AppendStart {
                name: "alice".into(),
                dev: 8,
                ino: 9,
                old_size: 100,
            },
            AppendStart {
                name: file.into(),
                dev: 8,
                ino: 11,
                old_size: 7,
            },
        ];
        let golden = "postie-txn 2 0123456789abcdef\n\
            from 0123456789abcdef 500 46726f6d206140622053756e204e6f762020312030363a30353a303420323032360a\n\
            want 0123456789abcdef 1000 8 alice\n\
            want 0123456789abcdef 4242 4243 /var/log/mail archive\n\
            end 0123456789abcdef 2 c835e672c4af4abe\n\
            lock 0123456789abcdef 1 2 3 4 /var/log/mail archive\n\
            size 0123456789abcdef 8 9 100 alice\n\
            size 0123456789abcdef 8 11 7 /var/log/mail archive\n\
            sizes 0123456789abcdef 2 13c1007b14b6a8bd\n";
        let written = journal(
            G,
            &[
                intent_lines(G, prefix, 500, &wants),
                lock_line(G, file, ID),
                start_lines(G, &starts),
            ],
        );
        assert_eq!(String::from_utf8(written).unwrap(), golden);
        let p = parse(golden.as_bytes());
        assert_eq!(p.intent.map(|i| i.wants), Some(wants.to_vec()));
        assert_eq!(p.wants, wants.to_vec());
        assert_eq!(p.locks, vec![(file.to_string(), ID)]);
        assert_eq!(p.starts, Some(starts.to_vec()));
        let mut settled = golden.as_bytes().to_vec();
        settled[SETTLED_AT as usize..][..SETTLED.len()].copy_from_slice(SETTLED);
        let p = parse(&settled);
        assert!(p.settled && p.intent.is_none());
        assert_eq!(p.wants, wants.to_vec());
        assert_eq!(p.locks.len(), 1);
        let spool = Path::new("/var/mail");
        assert_eq!(target_path(spool, file), Path::new(file));
        assert_eq!(target_path(spool, "alice"), Path::new("/var/mail/alice"));
        assert_eq!(
            dotlock_path(spool, file),
            Path::new("/var/log/mail archive.lock")
        );
        // Names that are neither a user's nor a plain absolute path make
        // the intent (or lock line) untrusted.
        for bad in ["/", "/a//b", "/a/./b", "/a/../b", "/a/", "/a\tb", "a/b"] {
            assert!(!valid_file_name(bad), "{bad:?}");
            let w = Want {
                name: bad.into(),
                uid: 1,
                gid: 1,
            };
            let j = journal(
                G,
                &[intent_lines(G, prefix, 500, &[w]), lock_line(G, bad, ID)],
            );
            let p = parse(&j);
            assert_eq!(p.intent, None, "{bad:?}");
            assert!(p.wants.is_empty() && p.locks.is_empty(), "{bad:?}");
        }
        for good in ["/a", "/var/log/mail archive", "/home/jon/Mail/in.box"] {
            assert!(valid_file_name(good), "{good:?}");
        }
    }

    /// A journal naming a user that is no recipient any more (`x.lock`,
    /// refused since postie 5) is still read whole, so that a delivery
    /// an older postie left is undone, not taken for garbage.
    #[test]
    fn journal_of_a_since_refused_name_still_parses() {
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\nReceived: x\n".to_vec();
        let bytes = journal(
            1,
            &[
                intent_lines(1, &prefix, 500, &[want("old.lock")]),
                lock_line(1, "old.lock", ID),
            ],
        );
        let p = parse(&bytes);
        assert_eq!(p.intent.unwrap().wants, vec![want("old.lock")]);
        assert_eq!(p.locks, vec![("old.lock".to_string(), ID)]);
    }

    /// Any prefix of a journal (a crash while writing it) parses to no
    /// intent unless the intent is whole, a flipped byte anywhere in it is
    /// caught, and lines of an earlier generation are ignored.
    #[test]
    fn partial_or_garbled_journal_names_nothing() {
        const G: u64 = 0x5eed;
        let prefix = b"From a@b Sun Nov  1 06:05:04 2026\n";
        let mut whole = journal(G, &[intent_lines(G, prefix, 100, &[want("jon")])]);
        let intent_end = whole.len();
        whole.extend_from_slice(lock_line(G, "jon", ID).as_bytes());
        let locks_end = whole.len();
        let start = AppendStart {
            name: "jon".into(),
            dev: 5,
            ino: 6,
            old_size: 7,
        };
        whole.extend_from_slice(start_lines(G, &[start]).as_bytes());
        let all = whole.len();
        // What follows in the file: the zeros it was filled with.
        whole.resize(SLOT_SIZE, 0);
        for cut in 0..all {
            let p = parse(&whole[..cut]);
            assert_eq!(p.intent.is_some(), cut >= intent_end, "cut at {cut}");
            assert_eq!(p.locks.len(), usize::from(cut >= locks_end), "cut at {cut}");
            assert_eq!(p.starts, None, "cut at {cut}");
        }
        assert!(parse(&whole).starts.is_some());
        for i in HEADER_LEN..all {
            let mut bad = whole.clone();
            bad[i] ^= 0x01;
            let p = parse(&bad);
            if i < intent_end {
                assert_eq!(p.intent, None, "flipped byte {i}");
            } else if i >= locks_end {
                assert_eq!(p.starts, None, "flipped byte {i}");
            }
        }
        // The same journal overwritten by the next delivery, cut short
        // (its header only): nothing of the old one is taken for the new
        // one.
        whole[..HEADER_LEN].copy_from_slice(&header(G + 1));
        let p = parse(&whole);
        assert_eq!(p.intent, None);
        assert!(p.locks.is_empty());
        assert_eq!(p.starts, None);
        assert_eq!(parse(b"garbage\n"), Parsed::default());
        assert_eq!(parse(b""), Parsed::default());
        assert_eq!(parse(&[0u8; SLOT_SIZE]), Parsed::default());
    }
}
