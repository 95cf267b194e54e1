//! The session threads. Each connection has a thread to itself, but a
//! thread whose session ended waits a while for the next connection
//! instead of exiting ([`Workers`]); apart from the accept loop because
//! it is a small thread pool that knows nothing of SMTP: it runs jobs.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// The session threads. Each connection still has a thread to itself, but
/// a thread whose session ended waits a while for the next connection
/// instead of exiting: creating a thread and unmapping its stack at exit
/// was a tenth of the SMTP side's CPU at one message per connection.
#[derive(Debug)]
pub(super) struct Workers {
    state: Mutex<WorkerState>,
    more: Condvar,
    stack: usize,
}

#[derive(Default)]
struct WorkerState {
    /// Threads waiting for a session.
    idle: usize,
    /// Sessions handed over and not yet picked up.
    queue: VecDeque<Job>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WorkerState {{ idle: {}, queued: {} }}",
            self.idle,
            self.queue.len()
        )
    }
}

pub(super) type Job = Box<dyn FnOnce() + Send>;

/// At most this many threads wait for a session: beyond, a thread whose
/// session ends exits, so that a burst leaves no crowd behind.
const MAX_IDLE_WORKERS: usize = 16;
/// How long a thread waits for a session before it exits.
const WORKER_LINGER: Duration = Duration::from_secs(10);

impl Workers {
    pub(super) fn new(stack: usize) -> Self {
        Workers {
            state: Mutex::new(WorkerState::default()),
            more: Condvar::new(),
            stack,
        }
    }

    fn state(&self) -> MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on a waiting thread, or else on a new one. An error (no
    /// thread could be made) drops the job unrun.
    pub(super) fn run(self: &Arc<Self>, job: Job) -> io::Result<()> {
        let mut st = self.state();
        // Every queued job has a waiting thread bound to take it.
        if st.idle > st.queue.len() {
            st.queue.push_back(job);
            drop(st);
            self.more.notify_one();
            return Ok(());
        }
        drop(st);
        let me = self.clone();
        thread::Builder::new()
            .name("session".into())
            .stack_size(self.stack)
            .spawn(move || {
                job();
                me.wait_for_more();
            })
            .map(drop)
    }

    /// After a session: runs the next one handed over, until none comes
    /// for [`WORKER_LINGER`] or enough threads wait already.
    fn wait_for_more(&self) {
        let mut st = self.state();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = self.state();
                continue;
            }
            if st.idle >= MAX_IDLE_WORKERS {
                return;
            }
            st.idle += 1;
            let (guard, waited) = self
                .more
                .wait_timeout(st, WORKER_LINGER)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle -= 1;
            if waited.timed_out() && st.queue.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_finished_session_thread_takes_the_next_connection() {
        let workers = Arc::new(Workers::new(256 * 1024));
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        workers
            .run(Box::new(move || t.send(thread::current().id()).unwrap()))
            .unwrap();
        let first = rx.recv().unwrap();
        // Wait until that thread waits for more.
        let t0 = Instant::now();
        while workers.state().idle == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            thread::sleep(Duration::from_millis(1));
        }
        let t = tx.clone();
        workers
            .run(Box::new(move || t.send(thread::current().id()).unwrap()))
            .unwrap();
        assert_eq!(rx.recv().unwrap(), first);
    }

    #[test]
    fn sessions_still_run_at_once_each_on_its_own_thread() {
        let workers = Arc::new(Workers::new(256 * 1024));
        // Each waits for all the others to have started: only possible if
        // they all run at the same time.
        let n = 5;
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let (tx, rx) = mpsc::channel();
        for _ in 0..n {
            let (b, t) = (barrier.clone(), tx.clone());
            workers
                .run(Box::new(move || {
                    b.wait();
                    t.send(thread::current().id()).unwrap();
                }))
                .unwrap();
        }
        let mut ids: Vec<_> = (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
