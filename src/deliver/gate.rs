//! Deliveries of one process to the same mailboxes take turns here
//! ([`Gates`]), before any lock, rather than in the lock back-off.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// The mailboxes a process's deliveries are writing to. A delivery enters
/// with all of its mailboxes at once, before it takes any lock, and waits
/// while another delivery of the process has any of them; leaving wakes
/// the waiters. Without it, deliveries to one mailbox from concurrent
/// sessions found its `fcntl` lock busy and slept in the lock back-off
/// (1 ms doubling to 100 ms), idle while the mailbox was free. Deadlock
/// free: a delivery waiting here holds no lock and no mailbox.
#[derive(Debug, Default)]
pub struct Gates {
    busy: Mutex<HashSet<PathBuf>>,
    freed: Condvar,
}

/// A delivery's mailboxes, entered; dropping leaves.
#[derive(Debug)]
pub struct Gate<'g> {
    gates: &'g Gates,
    paths: Vec<PathBuf>,
}

impl Gates {
    /// Waits until no other delivery has any of `paths`, then takes them
    /// all; `None` once `deadline` has passed.
    pub fn enter(&self, paths: &[&Path], deadline: Instant) -> Option<Gate<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while paths.iter().any(|p| busy.contains(*p)) {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self
                .freed
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        busy.extend(paths.iter().cloned());
        Some(Gate { gates: self, paths })
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut busy = self.gates.busy.lock().unwrap_or_else(|p| p.into_inner());
        for p in &self.paths {
            busy.remove(p);
        }
        drop(busy);
        self.gates.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gates_make_deliveries_to_one_mailbox_take_turns() {
        let gates = Gates::default();
        let (a, b, c) = (Path::new("/s/a"), Path::new("/s/b"), Path::new("/s/c"));
        let soon = || Instant::now() + Duration::from_millis(50);
        let first = gates.enter(&[a, b], soon()).unwrap();
        // Other mailboxes: no wait, even with no time left.
        let other = gates.enter(&[c], Instant::now()).unwrap();
        // One shared mailbox is enough to wait, here until the deadline.
        let t = Instant::now();
        assert!(gates.enter(&[b, Path::new("/s/d")], soon()).is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(other);
        // A waiter goes in as soon as the holder leaves, with all of its
        // mailboxes, and only then.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let g = gates.enter(&[b, c], Instant::now() + Duration::from_secs(10));
                (g.is_some(), Instant::now())
            });
            std::thread::sleep(Duration::from_millis(100));
            let released = Instant::now();
            drop(first);
            let (entered, at) = waiter.join().unwrap();
            assert!(entered);
            assert!(at >= released);
            assert!(
                at - released < Duration::from_secs(5),
                "{:?}",
                at - released
            );
        });
        // And left again when it dropped its gate.
        assert!(gates.enter(&[a, b, c], Instant::now()).is_some());
    }
}
