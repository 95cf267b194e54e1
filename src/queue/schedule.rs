//! When a queued recipient is tried again: [`Backoff`] and its
//! [`Backoff::next_attempt`], a pure function of the attempts so far, when
//! the message was queued, and now.
//!
//! The defaults are those of the classic MTAs a postie user knows:
//! * Postfix retries a deferred message after `minimal_backoff_time`,
//!   doubling the wait at each failed attempt up to `maximal_backoff_time`
//!   (qmgr(8): "exponential backoff by doubling the time between delivery
//!   attempts"); the defaults are 300 s (1000 s before Postfix 2.4, as the
//!   older qmgr(8) page shows) and 4000 s, postconf(5);
//! * both Postfix (`maximal_queue_lifetime`, 5d) and sendmail
//!   (`Timeout.queuereturn`, "typically set to five days", the sendmail
//!   Installation and Operation Guide 4.1.3, after RFC 1123 5.3.1.1: "at
//!   least 4-5 days") give up after five days.
//!
//! The last attempt is made at the give-up time itself, so that a mailbox
//! that frees up at the last moment still gets its message; a failure at
//! or after that time gives up (`None`), and the runner bounces.

use std::time::{Duration, SystemTime};

/// The retry schedule of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub minimal: Duration,
    /// The longest wait between two attempts.
    pub maximal: Duration,
    /// How long after it was queued a recipient is given up.
    pub give_up: Duration,
}

/// Postfix's `minimal_backoff_time` default.
pub const MINIMAL_BACKOFF: Duration = Duration::from_secs(300);
/// Postfix's `maximal_backoff_time` default.
pub const MAXIMAL_BACKOFF: Duration = Duration::from_secs(4000);
/// sendmail's `Timeout.queuereturn` and Postfix's
/// `maximal_queue_lifetime` default: five days.
pub const GIVE_UP: Duration = Duration::from_secs(5 * 24 * 3600);

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            minimal: MINIMAL_BACKOFF,
            maximal: MAXIMAL_BACKOFF,
            give_up: GIVE_UP,
        }
    }
}

impl Backoff {
    /// When to try a recipient again after its `attempts`th failed attempt
    /// (at `now`; the message was queued at `first_queued`), or `None` to
    /// give up: the wait is `minimal` doubled for each attempt after the
    /// first, at most `maximal`, and no later than the give-up time.
    pub fn next_attempt(
        &self,
        attempts: u32,
        first_queued: SystemTime,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let deadline = first_queued.checked_add(self.give_up)?;
        if now >= deadline {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(31);
        let wait = self
            .minimal
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.maximal)
            .min(self.maximal);
        Some(now.checked_add(wait).map_or(deadline, |t| t.min(deadline)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const MIN: u64 = 60;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_900_000 + s)
    }

    #[test]
    fn waits_double_from_minimal_to_maximal() {
        let q = at(0);
        let waits: Vec<u64> = (1..=6)
            .map(|n| {
                let now = at(n * 1000);
                let next = Backoff::default().next_attempt(n as u32, q, now).unwrap();
                next.duration_since(now).unwrap().as_secs()
            })
            .collect();
        assert_eq!(waits, [300, 600, 1200, 2400, 4000, 4000]);
        // Attempt 0 (none failed yet) waits as the first.
        assert_eq!(Backoff::default().next_attempt(0, q, q), Some(at(300)));
        // Very many attempts do not overflow.
        assert_eq!(
            Backoff::default().next_attempt(u32::MAX, q, q),
            Some(at(4000))
        );
    }

    #[test]
    fn gives_up_after_five_days_with_a_last_attempt_at_the_deadline() {
        let q = at(0);
        let five_days = 5 * 24 * 60 * MIN;
        // Half an hour before the deadline, a wait of 4000 s is cut to it.
        let now = at(five_days - 30 * MIN);
        assert_eq!(
            Backoff::default().next_attempt(20, q, now),
            Some(at(five_days))
        );
        // At the deadline, and after, give up.
        assert_eq!(Backoff::default().next_attempt(20, q, at(five_days)), None);
        assert_eq!(
            Backoff::default().next_attempt(1, q, at(five_days + 1)),
            None
        );
        // A second before, still one more try.
        assert_eq!(
            Backoff::default().next_attempt(1, q, at(five_days - 1)),
            Some(at(five_days))
        );
    }

    #[test]
    fn a_configured_schedule_is_honoured() {
        let b = Backoff {
            minimal: Duration::from_secs(10),
            maximal: Duration::from_secs(25),
            give_up: Duration::from_secs(100),
        };
        let q = at(0);
        assert_eq!(b.next_attempt(1, q, at(1)), Some(at(11)));
        assert_eq!(b.next_attempt(2, q, at(1)), Some(at(21)));
        assert_eq!(b.next_attempt(3, q, at(1)), Some(at(26)));
        assert_eq!(b.next_attempt(3, q, at(90)), Some(at(100)));
        assert_eq!(b.next_attempt(3, q, at(100)), None);
        // A clock set back before the queueing time still schedules.
        assert_eq!(b.next_attempt(1, at(50), at(0)), Some(at(10)));
    }
}
