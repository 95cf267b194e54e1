//! The daemon's queue runner: one thread of the process that delivers
//! (the delivery process of a privilege-separated `postie serve`, or the
//! one process of a postie not started as root) that runs the queue
//! ([`Delivery::run_queue`], entries due only), then sleeps until the
//! earliest pending recipient is due again ([`RunSummary::next_due`]) or
//! for `--queue-run-interval`, whichever is sooner, and never less than
//! [`MIN_PAUSE`] between two runs.
//!
//! [`Runner::wake`] (or [`wake`], for the runner of this process, from
//! code that has no handle on it: delivery, when it has just queued
//! something) ends the sleep early, so that the next due time is looked
//! at again; a wake during a run makes one more run after it. The pause
//! is waited on a condition variable that [`Runner::stop`] also
//! notifies: stopping a sleeping runner is immediate, and a running one
//! stops once [`Delivery::run_queue`] returns (it is never interrupted:
//! a delivery in progress finishes; [`stopping`] tells the run that it
//! may end after the entry in progress).
//!
//! Where no daemon stays (inetd, systemd `Accept=yes`), no runner
//! either: `postie queue run` from `postie-queue.timer`, or `sendmail -q`
//! from cron, run the queue instead (`crate::sendmail::run_queue`).

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::maillog::Event;
use crate::message::{Delivery, RunFilter, RunSummary};

/// The shortest pause between the end of a run and the start of the
/// next, whatever is due or however often the runner is woken: a run
/// looks at every entry of the queue.
pub const MIN_PAUSE: Duration = Duration::from_secs(1);

/// What the runner's thread and its handles share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// [`Runner::stop`] was called: no new run starts.
    stop: bool,
    /// Woken since the last run started: run again once the minimal
    /// pause is over.
    wake: bool,
    /// The thread waits for the end of its pause (what the tests see
    /// of a runner between runs).
    asleep: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        self.lock().wake = true;
        self.cv.notify_all();
    }

    /// Waits until `pause` after `since`; or, woken, until `min_pause`
    /// after it; or until stopped: then false.
    fn sleep(&self, since: Instant, pause: Duration, min_pause: Duration) -> bool {
        let mut state = self.lock();
        loop {
            if state.stop {
                return false;
            }
            let until = since
                + if state.wake {
                    min_pause.min(pause)
                } else {
                    pause
                };
            let now = Instant::now();
            if now >= until {
                return true;
            }
            state.asleep = true;
            state = self
                .cv
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.asleep = false;
        }
    }
}

/// The runner of this process, for [`wake`]: the one last started with
/// [`Runner::start`], while it runs.
static RUNNER: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

/// Held by the unit tests that start the process's runner and by those
/// whose deliveries [`wake`] it (or ask [`stopping`]): tests run in
/// parallel in one process, and the one runner is the process's.
#[cfg(test)]
pub(crate) static PROCESS_RUNNER_TEST: Mutex<()> = Mutex::new(());

/// Wakes the queue runner of this process, if there is one (see the
/// module documentation); does nothing otherwise. Cheap: it takes a lock
/// and notifies a condition variable.
pub fn wake() {
    let runner = RUNNER.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
    if let Some(shared) = runner {
        shared.wake();
    }
}

/// True once the queue runner of this process has been told to stop
/// (the daemon is shutting down) and its run is not over yet: a long run
/// of [`Delivery::run_queue`] may end after the entry in progress rather
/// than try the others. False where no runner runs.
pub fn stopping() -> bool {
    let runner = RUNNER.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
    runner.is_some_and(|shared| shared.lock().stop)
}

/// A running queue runner: a thread, stopped by [`Runner::stop`] (or
/// when dropped).
pub struct Runner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts the runner of this process over `delivery`, looking at the
    /// queue at least every `interval` (`--queue-run-interval`); [`wake`]
    /// wakes it. Its first run starts at once.
    pub fn start(delivery: Arc<dyn Delivery>, interval: Duration) -> io::Result<Runner> {
        let runner = Runner::spawn(delivery, interval, MIN_PAUSE)?;
        *RUNNER.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&runner.shared);
        log::info!(
            "queue runner started in process {}: the queue is looked at every {} s at least",
            std::process::id(),
            interval.max(MIN_PAUSE).as_secs()
        );
        Ok(runner)
    }

    /// A runner that [`wake`] does not know, with `min_pause` for
    /// [`MIN_PAUSE`] (tests use none).
    fn spawn(
        delivery: Arc<dyn Delivery>,
        interval: Duration,
        min_pause: Duration,
    ) -> io::Result<Runner> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("queue-runner".into())
            .spawn(move || run(&*delivery, &theirs, interval, min_pause))?;
        Ok(Runner {
            shared,
            thread: Some(thread),
        })
    }

    /// Ends the pause: the queue is run again (after [`MIN_PAUSE`] since
    /// the last run).
    pub fn wake(&self) {
        self.shared.wake();
    }

    /// Stops the runner and waits for its thread: at once if it sleeps,
    /// else when the run in progress is over. No run starts after.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("queue runner: its thread panicked");
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The runner's thread: run, pause, until stopped.
fn run(delivery: &dyn Delivery, shared: &Shared, interval: Duration, min_pause: Duration) {
    let filter = RunFilter::default();
    loop {
        {
            let mut state = shared.lock();
            if state.stop {
                return;
            }
            // This run covers every wake so far.
            state.wake = false;
        }
        // A panic in one run (logged by the panic hook) does not end the
        // runner: the next run tries again.
        let summary = catch_unwind(AssertUnwindSafe(|| delivery.run_queue(&filter)));
        let ended = Instant::now();
        let pause = match &summary {
            Ok(s) => {
                log_run(s);
                pause(s.next_due, SystemTime::now(), interval, min_pause)
            }
            Err(_) => interval.max(min_pause),
        };
        if !shared.sleep(ended, pause, min_pause) {
            return;
        }
    }
}

/// A run that looked at entries is said in the mail log; an empty one at
/// debug level only (every few minutes, for an empty queue).
fn log_run(s: &RunSummary) {
    if s.entries == 0 {
        log::debug!("queue runner: nothing due");
        return;
    }
    Event::QueueRun {
        by: "the queue runner",
        entries: s.entries,
        delivered: s.delivered,
        deferred: s.deferred,
        failed: s.failed,
    }
    .log();
}

/// How long to sleep after a run at `now` whose earliest pending
/// recipient is due at `next_due`: until then, but `interval` at most
/// and `min_pause` at least.
fn pause(
    next_due: Option<SystemTime>,
    now: SystemTime,
    interval: Duration,
    min_pause: Duration,
) -> Duration {
    let due_in = next_due.map(|t| t.duration_since(now).unwrap_or(Duration::ZERO));
    due_in.map_or(interval, |d| d.min(interval)).max(min_pause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MailboxRefused, MessageSource};
    use crate::smtp::{Envelope, Outcome};
    use crate::users::User;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_pause_is_until_the_next_due_within_the_interval() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let cases = [
            (None, s(300), s(300)),
            (Some(now + s(60)), s(300), s(60)),
            (Some(now + s(600)), s(300), s(300)),
            // Due already, or just now: the minimal pause.
            (Some(now - s(60)), s(300), s(1)),
            (Some(now), s(300), s(1)),
            (Some(now + Duration::from_millis(200)), s(300), s(1)),
            // An interval of 0 is the minimal pause too.
            (None, s(0), s(1)),
        ];
        for (due, interval, want) in cases {
            assert_eq!(
                pause(due, now, interval, MIN_PAUSE),
                want,
                "{due:?} {interval:?}"
            );
        }
    }

    /// A delivery agent that counts the runs of the queue, answers each
    /// with the next of `due` (then none), and holds a run while `held`.
    #[derive(Default)]
    struct Counting {
        runs: Mutex<usize>,
        ran: Condvar,
        held: Mutex<bool>,
        released: Condvar,
        due: Mutex<Vec<Option<SystemTime>>>,
    }

    impl Delivery for Counting {
        fn deliver(&self, _: &Envelope, _: &dyn MessageSource) -> Outcome {
            unreachable!("the runner delivers through run_queue only")
        }
        fn check_mailbox(&self, _: &User) -> Result<(), MailboxRefused> {
            unreachable!("the runner checks no mailbox")
        }
        fn run_queue(&self, filter: &RunFilter) -> RunSummary {
            assert_eq!(
                filter,
                &RunFilter::default(),
                "the entries due, all of them"
            );
            *self.runs.lock().unwrap() += 1;
            self.ran.notify_all();
            let mut held = self.held.lock().unwrap();
            while *held {
                held = self.released.wait(held).unwrap();
            }
            let mut due = self.due.lock().unwrap();
            RunSummary {
                next_due: if due.is_empty() { None } else { due.remove(0) },
                ..RunSummary::default()
            }
        }
    }

    impl Counting {
        /// Waits for the `n`th run to start (no bound: a runner that
        /// never runs hangs the test, which is the failure).
        fn wait_runs(&self, n: usize) {
            let mut runs = self.runs.lock().unwrap();
            while *runs < n {
                runs = self.ran.wait(runs).unwrap();
            }
        }

        fn runs(&self) -> usize {
            *self.runs.lock().unwrap()
        }

        /// Waits until `runner` sleeps after its `n`th run (or has run
        /// more: false).
        fn asleep_after(&self, runner: &Runner, n: usize) -> bool {
            loop {
                if self.runs() > n {
                    return false;
                }
                if runner.shared.lock().asleep {
                    return self.runs() == n;
                }
                std::thread::yield_now();
            }
        }

        fn hold(&self, on: bool) {
            *self.held.lock().unwrap() = on;
            self.released.notify_all();
        }
    }

    /// Runs at once, then sleeps for the interval (an hour: no run comes
    /// from it here); each wake makes one more run; stop ends the sleep
    /// and nothing runs after.
    #[test]
    fn runs_at_start_and_when_woken_and_stops_while_asleep() {
        let d = Arc::new(Counting::default());
        let runner = Runner::spawn(d.clone(), HOUR, Duration::ZERO).unwrap();
        d.wait_runs(1);
        assert!(d.asleep_after(&runner, 1));
        runner.wake();
        d.wait_runs(2);
        assert!(d.asleep_after(&runner, 2), "one wake, one run");
        runner.wake();
        d.wait_runs(3);
        assert!(d.asleep_after(&runner, 3), "one wake, one run");
        runner.stop();
        assert_eq!(d.runs(), 3, "no run after stop");
    }

    /// A recipient due soon (here: now) brings the next run without a
    /// wake, though the interval is an hour.
    #[test]
    fn the_next_due_time_brings_the_next_run() {
        let d = Arc::new(Counting::default());
        d.due.lock().unwrap().push(Some(SystemTime::now()));
        let runner = Runner::spawn(d.clone(), HOUR, Duration::ZERO).unwrap();
        d.wait_runs(2);
        assert!(d.asleep_after(&runner, 2));
        drop(runner);
        assert_eq!(
            d.runs(),
            2,
            "after the second run, nothing due: the interval"
        );
    }

    /// Stopped during a run: the run finishes (stop waits for it), and a
    /// wake that came during it starts no other.
    #[test]
    fn stop_waits_for_the_run_in_progress_and_then_nothing_runs() {
        let d = Arc::new(Counting::default());
        d.hold(true);
        let runner = Runner::spawn(d.clone(), HOUR, Duration::ZERO).unwrap();
        d.wait_runs(1);
        runner.wake();
        let shared = runner.shared.clone();
        std::thread::scope(|s| {
            let stopping = s.spawn(|| runner.stop());
            // Once stop has said so, let the run end.
            while !shared.lock().stop {
                std::thread::yield_now();
            }
            // The run is held: stop cannot have returned.
            assert!(!stopping.is_finished());
            d.hold(false);
            stopping.join().unwrap();
        });
        assert_eq!(d.runs(), 1, "the wake during the run started no other");
    }

    /// [`wake`] wakes the runner of the process (after the real minimal
    /// pause), and nothing once it is stopped; [`stopping`] is true from
    /// the stop to the end of the run in progress.
    #[test]
    fn wake_and_stopping_reach_the_runner_of_the_process() {
        let _alone = PROCESS_RUNNER_TEST
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let d = Arc::new(Counting::default());
        let runner = Runner::start(d.clone(), HOUR).unwrap();
        d.wait_runs(1);
        wake();
        d.wait_runs(2);
        assert!(d.asleep_after(&runner, 2));
        assert!(!stopping());
        d.hold(true);
        wake();
        d.wait_runs(3);
        std::thread::scope(|s| {
            let shared = runner.shared.clone();
            let stop = s.spawn(|| runner.stop());
            while !shared.lock().stop {
                std::thread::yield_now();
            }
            assert!(stopping(), "told to stop, its run held");
            d.hold(false);
            stop.join().unwrap();
        });
        assert!(!stopping());
        wake();
        assert_eq!(d.runs(), 3);
        assert!(RUNNER.lock().unwrap().upgrade().is_none(), "no runner left");
    }
}
