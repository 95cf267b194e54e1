//! Fixtures the tests of [`super`]'s files share: a user and options for
//! the mailboxes they make, the message they append and what it looks like
//! in the mailbox, and a reader that hands out its data in odd pieces.

use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::unistd::{getegid, geteuid};

use super::{DEFAULT_STALE_LOCK, MboxError, MboxOptions, Quoting, write_quoted};
use crate::users::User;

pub(crate) fn me() -> User {
    User {
        name: "me".into(),
        uid: geteuid().as_raw(),
        gid: getegid().as_raw(),
        ..Default::default()
    }
}

pub(crate) fn opts(lock_timeout: Duration) -> MboxOptions {
    MboxOptions {
        mode: 0o600,
        quoting: Quoting::Mboxrd,
        lock_timeout,
        stale_lock: DEFAULT_STALE_LOCK,
    }
}

pub(crate) const FROM: &str = "From a@b.c Sun Nov  1 06:05:04 2026\n";

pub(crate) const HEADERS: &[u8] =
    b"Return-Path: <a@b.c>\nReceived: from x by y; Sun, 1 Nov 2026 06:05:04 +0100\n";

pub(crate) fn message(body: &[u8]) -> Vec<u8> {
    let mut m = FROM.as_bytes().to_vec();
    m.extend_from_slice(HEADERS);
    write_quoted(&mut m, body, Quoting::Mboxrd).unwrap();
    m.push(b'\n');
    m
}

pub(crate) fn assert_unsafe(res: Result<u64, MboxError>, contains: &str) {
    match res {
        Err(MboxError::Unsafe(why)) => assert!(why.contains(contains), "{why}"),
        other => panic!("expected Unsafe({contains}), got {other:?}"),
    }
}

/// Reads from a slice in pieces of the given sizes, taken in turn; a
/// size of 0 stands for an `Interrupted` error.
pub(crate) struct Chunky<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl<'a> Chunky<'a> {
    pub(crate) fn new(data: &'a [u8], sizes: &[usize]) -> Chunky<'a> {
        assert!(sizes.iter().any(|&n| n > 0));
        Chunky {
            data,
            sizes: sizes.to_vec(),
            next: 0,
        }
    }
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        if size == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What is in `dir` besides the mailbox `me`: no temporary files or
/// dotlocks may be left behind.
pub(crate) fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "me")
        .collect();
    names.sort();
    names
}

pub(crate) fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
