//! What popferry says about an account, in one set of words: `popferry
//! status` prints them and the daemon's status page (`daemon/page.rs`)
//! shows them, so the two never disagree about what "last run" or
//! "rejected" mean, or how a time is written.
//!
//! Why a module of its own: the words come from the ledger's
//! [`AccountStatus`] (which the command and the page read alike) plus, in
//! the daemon, what only a running process knows (the last failure's kind,
//! a requested check); both ends are thin renderers over [`counts`],
//! [`times`] and [`State`].

use crate::ledger::AccountStatus;
use crate::sync::FailureKind;

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// Formats a unix time for people (UTC, RFC 3339). Total: a time before
/// 1970 or after 9999 (a ledger row from a hostile LOGIN-DELAY, say) is
/// shown as its number instead of panicking.
pub fn when(t: Option<i64>) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let at = u64::try_from(t)
        .ok()
        .filter(|s| *s <= LAST_RFC3339_SECOND)
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)));
    match at {
        Some(at) => {
            use std::fmt::Write;
            let mut out = String::new();
            match write!(out, "{}", humantime::format_rfc3339_seconds(at)) {
                Ok(()) => out,
                Err(_) => format!("unix time {t}"),
            }
        }
        None => format!("unix time {t} (out of range)"),
    }
}

/// The message counts of an account, labelled, in the order they are shown.
pub fn counts(s: &AccountStatus) -> [(&'static str, u64); 6] {
    [
        ("copied", s.copied),
        ("deleted", s.deleted),
        ("skipped", s.skipped),
        ("rejected", s.rejected),
        ("pending", s.pending),
        ("unresolved", s.unresolved),
    ]
}

/// The times and the last error of an account, labelled, in the order they
/// are shown; the next run only once the daemon has planned one, the last
/// error only when there is one (the ledger's words: they already name the
/// account and the server, and never hold a secret).
pub fn times(s: &AccountStatus) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("last run", when(s.last_run)),
        ("last success", when(s.last_success)),
    ];
    if s.next_run.is_some() {
        rows.push(("next run", when(s.next_run)));
    }
    if let Some(e) = &s.last_error {
        rows.push(("last error", e.clone()));
    }
    if let Some((until, why)) = paused(s, crate::ledger::now()) {
        rows.push(("budget", format!("{why}; resumes at {}", when(Some(until)))));
    }
    rows
}

/// When and why an upload budget stopped appending, if it still does at
/// `now` (unix seconds).
pub fn paused(s: &AccountStatus, now: i64) -> Option<(i64, &str)> {
    match (s.paused_until, s.paused_reason.as_deref()) {
        (Some(until), why) if until > now => {
            Some((until, why.unwrap_or("an upload budget is spent")))
        }
        _ => None,
    }
}

/// Where an account stands, as the daemon sees it (and `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No pass has run yet.
    NotRunYet,
    /// The last pass went through.
    Ok,
    /// The last pass failed in a way a retry may mend (a timeout, a busy
    /// server): retrying with growing waits.
    BackingOff,
    /// The last pass failed in a way only a person can mend (a bad
    /// password, a refused certificate); or it failed and this process does
    /// not know how (the ledger says so, from before a restart).
    Failing,
    /// The ledger was lost while the POP3 mailbox was not: every message is
    /// looked up in the target before it is appended, until a whole pass
    /// has gone through.
    Recovering,
    /// The last pass went through until an upload budget
    /// (`max_upload_per_day`) was spent: appending waits for the next UTC
    /// day (see [`paused`]).
    BudgetSpent,
}

impl State {
    /// `recovering`: the ledger's mark; `last_failure`: the kind of the last
    /// failed pass, when this process ran it.
    pub fn of(s: &AccountStatus, recovering: bool, last_failure: Option<FailureKind>) -> State {
        if s.consecutive_failures > 0 || s.last_error.is_some() {
            match last_failure {
                Some(FailureKind::Transient) => State::BackingOff,
                Some(FailureKind::Permanent) | None => State::Failing,
            }
        } else if paused(s, crate::ledger::now()).is_some() {
            State::BudgetSpent
        } else if recovering {
            State::Recovering
        } else if s.last_run.is_none() {
            State::NotRunYet
        } else {
            State::Ok
        }
    }

    /// The state in words (also the page's CSS class, with `-` for spaces).
    pub fn words(self) -> &'static str {
        match self {
            State::NotRunYet => "not run yet",
            State::Ok => "ok",
            State::BackingOff => "backing off",
            State::Failing => "failing",
            State::Recovering => "recovering",
            State::BudgetSpent => "budget spent",
        }
    }

    /// One sentence on what the state means for the user.
    pub fn meaning(self) -> &'static str {
        match self {
            State::NotRunYet => "The first pass has not run yet.",
            State::Ok => "The last pass went through.",
            State::BackingOff => "The last pass failed; retrying with growing waits.",
            State::Failing => "The last pass failed: see the last error, it says what to do.",
            State::Recovering => {
                "The ledger was rebuilt: every message is looked up in the target before it is copied."
            }
            State::BudgetSpent => {
                "The day's upload budget is spent: appending resumes at the time shown, by itself."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any unix time prints (issue 9, case 5: a next run past year 9999
    /// panicked `popferry status`).
    #[test]
    fn when_is_total() {
        assert_eq!(when(None), "never");
        assert_eq!(when(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(when(Some(253_402_300_799)), "9999-12-31T23:59:59Z");
        for t in [i64::MAX, i64::MIN, -1, 253_402_300_800, 260_000_000_000] {
            let s = when(Some(t));
            assert!(s.contains(&t.to_string()), "{t}: {s}");
        }
    }

    #[test]
    fn states_follow_the_last_pass() {
        let mut s = AccountStatus::default();
        assert_eq!(State::of(&s, false, None), State::NotRunYet);
        s.last_run = Some(1);
        s.last_success = Some(1);
        assert_eq!(State::of(&s, false, None), State::Ok);
        assert_eq!(State::of(&s, true, None), State::Recovering);
        s.consecutive_failures = 2;
        s.last_error = Some("cannot log in".into());
        assert_eq!(
            State::of(&s, true, Some(FailureKind::Transient)),
            State::BackingOff
        );
        assert_eq!(
            State::of(&s, false, Some(FailureKind::Permanent)),
            State::Failing
        );
        assert_eq!(State::of(&s, false, None), State::Failing);
    }

    #[test]
    fn a_spent_budget_is_a_state_until_it_resumes() {
        let mut s = AccountStatus {
            last_run: Some(1),
            last_success: Some(1),
            ..AccountStatus::default()
        };
        let later = crate::ledger::now() + 3600;
        s.paused_until = Some(later);
        s.paused_reason = Some("the day's upload budget is spent".into());
        assert_eq!(State::of(&s, false, None), State::BudgetSpent);
        let row = times(&s).into_iter().find(|(k, _)| *k == "budget");
        let (_, text) = row.expect("a budget row");
        assert!(
            text.contains("resumes at") && text.contains("upload budget"),
            "{text}"
        );
        // Over: an ordinary state again, and no budget row.
        s.paused_until = Some(crate::ledger::now() - 1);
        assert_eq!(State::of(&s, false, None), State::Ok);
        assert!(times(&s).iter().all(|(k, _)| *k != "budget"));
        // A failure still wins.
        s.paused_until = Some(later);
        s.last_error = Some("x".into());
        s.consecutive_failures = 1;
        assert_eq!(
            State::of(&s, false, Some(FailureKind::Transient)),
            State::BackingOff
        );
    }
}
