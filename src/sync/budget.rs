//! Upload budgets: `max_upload_per_day` and `max_messages_per_minute`.
//!
//! Why here and why so: providers cap what one account may upload (Google
//! Workspace about 500 MB a day, Microsoft per day and per minute), and past
//! the cap they refuse every APPEND, so a migration that ignores the cap
//! fails in a loop. The append stage asks [`Budget::admit`] before a
//! message's intent is recorded: nothing is counted, recorded or sent for a
//! message the budget does not admit, so stopping there leaves no
//! unresolved intent behind. The day's use is read from the ledger at the
//! start of a pass (bytes of rows appended since the UTC day began), so a
//! restart, a second `sync` the same day, or another replica sees what was
//! spent. The rule is a pure function of the counts and the clock, tested
//! below; [`crate::sync::append`] acts on its answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::UploadBudget;
use crate::ledger::{Ledger, now};

const DAY: i64 = 86_400;
const MINUTE: Duration = Duration::from_secs(60);

/// What the budget says to one more message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Admit {
    /// Append it (now counted as spent).
    Go,
    /// The minute's budget is spent: wait this long, then ask again.
    Wait(Duration),
    /// The day's budget is spent: nothing more until `resumes_at` (unix
    /// seconds, the next UTC midnight).
    Spent { resumes_at: i64, reason: String },
}

/// What an account may still append in this pass.
#[derive(Debug)]
pub(super) struct Budget {
    limits: UploadBudget,
    /// The UTC day (days since the epoch) `used` counts for.
    day: i64,
    /// Bytes appended on `day` (by any process, as of the pass's start,
    /// plus what this pass admitted).
    used: u64,
    /// When the messages of the last minute were admitted, oldest first.
    recent: VecDeque<Instant>,
}

impl Budget {
    /// No limits: every message goes.
    pub(super) fn unlimited() -> Budget {
        Budget::new(UploadBudget::default(), now(), 0, 0, Instant::now())
    }

    /// A budget as of `unix` (seconds), with `used` bytes already appended
    /// that UTC day and `last_minute` messages in the last 60 seconds.
    pub(super) fn new(
        limits: UploadBudget,
        unix: i64,
        used: u64,
        last_minute: u64,
        at: Instant,
    ) -> Budget {
        let keep = limits.messages_per_minute.map_or(0, |n| {
            usize::try_from(u64::from(n).min(last_minute)).unwrap_or(0)
        });
        Budget {
            limits,
            day: unix.div_euclid(DAY),
            used,
            recent: std::iter::repeat_n(at, keep).collect(),
        }
    }

    /// Reads from the ledger what `account` has spent today and in the
    /// last minute (nothing is read when no budget is set).
    pub(super) async fn load(
        ledger: &Ledger,
        account: &str,
        limits: UploadBudget,
    ) -> anyhow::Result<Budget> {
        if limits == UploadBudget::default() {
            return Ok(Budget::unlimited());
        }
        let t = now();
        let (_, used) = match limits.bytes_per_day {
            Some(_) => {
                ledger
                    .appended_since(account, t - t.rem_euclid(DAY))
                    .await?
            }
            None => (0, 0),
        };
        let (last_minute, _) = match limits.messages_per_minute {
            Some(_) => ledger.appended_since(account, t - 60).await?,
            None => (0, 0),
        };
        Ok(Budget::new(limits, t, used, last_minute, Instant::now()))
    }

    /// Whether a message of `len` bytes may be appended now (`unix` and
    /// `at` are the clock). A message larger than the whole day's budget
    /// goes as the first of a day, or it would never go.
    pub(super) fn admit(&mut self, len: u64, unix: i64, at: Instant) -> Admit {
        let day = unix.div_euclid(DAY);
        if day != self.day {
            self.day = day;
            self.used = 0;
        }
        if let Some(limit) = self.limits.bytes_per_day
            && self.used > 0
            && self.used.saturating_add(len) > limit
        {
            let resumes_at = day.saturating_add(1).saturating_mul(DAY);
            return Admit::Spent {
                resumes_at,
                reason: format!(
                    "the day's upload budget is spent (max_upload_per_day = {}; {} appended since 00:00 UTC, the next message is {})",
                    bytes(limit),
                    bytes(self.used),
                    bytes(len)
                ),
            };
        }
        if let Some(n) = self.limits.messages_per_minute {
            while self
                .recent
                .front()
                .is_some_and(|t| at.saturating_duration_since(*t) >= MINUTE)
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= usize::try_from(n).unwrap_or(usize::MAX)
                && let Some(oldest) = self.recent.front()
            {
                let wait = MINUTE.saturating_sub(at.saturating_duration_since(*oldest));
                return Admit::Wait(wait.max(Duration::from_millis(10)));
            }
            self.recent.push_back(at);
        }
        self.used = self.used.saturating_add(len);
        Admit::Go
    }
}

/// A size for people: "512.0 MB" (decimal, as providers state budgets).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: i64 = 20_000 * DAY + 12 * 3600;

    fn limits(day: Option<u64>, minute: Option<u32>) -> UploadBudget {
        UploadBudget {
            bytes_per_day: day,
            messages_per_minute: minute,
        }
    }

    #[test]
    fn the_day_budget_admits_until_the_next_message_would_pass_it() {
        let at = Instant::now();
        let mut b = Budget::new(limits(Some(1000), None), NOON, 0, 0, at);
        assert_eq!(b.admit(400, NOON, at), Admit::Go);
        assert_eq!(b.admit(600, NOON, at), Admit::Go); // exactly 1000
        match b.admit(1, NOON, at) {
            Admit::Spent { resumes_at, reason } => {
                assert_eq!(resumes_at, 20_001 * DAY);
                assert!(reason.contains("max_upload_per_day = 1.0 kB"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Still spent a little later; the next UTC day starts afresh.
        assert!(matches!(b.admit(1, NOON + 60, at), Admit::Spent { .. }));
        assert_eq!(b.admit(1000, 20_001 * DAY, at), Admit::Go);
    }

    #[test]
    fn what_was_spent_before_the_pass_counts() {
        let at = Instant::now();
        let mut b = Budget::new(limits(Some(1000), None), NOON, 900, 0, at);
        assert!(matches!(b.admit(200, NOON, at), Admit::Spent { .. }));
        assert_eq!(b.admit(100, NOON, at), Admit::Go);
    }

    #[test]
    fn a_message_larger_than_the_whole_budget_goes_first_thing_in_a_day() {
        let at = Instant::now();
        let mut b = Budget::new(limits(Some(1000), None), NOON, 0, 0, at);
        assert_eq!(b.admit(5000, NOON, at), Admit::Go);
        assert!(matches!(b.admit(1, NOON, at), Admit::Spent { .. }));
    }

    #[test]
    fn the_minute_budget_makes_the_next_message_wait_for_the_oldest_to_age_out() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(None, Some(2)), NOON, 0, 0, t0);
        assert_eq!(b.admit(10, NOON, t0), Admit::Go);
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(b.admit(10, NOON, t1), Admit::Go);
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(10, NOON, t2), Admit::Wait(Duration::from_secs(30)));
        // Nothing was counted for the refused one.
        let t3 = t0 + Duration::from_secs(60);
        assert_eq!(b.admit(10, NOON, t3), Admit::Go);
        assert_eq!(b.admit(10, NOON, t3), Admit::Wait(Duration::from_secs(20)));
    }

    #[test]
    fn the_last_minute_before_the_pass_counts() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(None, Some(3)), NOON, 0, 10, t0);
        assert_eq!(b.admit(1, NOON, t0), Admit::Wait(MINUTE));
        assert_eq!(b.admit(1, NOON, t0 + MINUTE), Admit::Go);
    }

    #[test]
    fn no_limits_admit_everything() {
        let at = Instant::now();
        let mut b = Budget::unlimited();
        for _ in 0..10_000 {
            assert_eq!(b.admit(u64::MAX / 2, now(), at), Admit::Go);
        }
    }

    #[test]
    fn sizes_read_as_providers_write_them() {
        assert_eq!(bytes(999), "999 bytes");
        assert_eq!(bytes(500_000_000), "500.0 MB");
        assert_eq!(bytes(1_500), "1.5 kB");
    }
}
