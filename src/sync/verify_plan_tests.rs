//! Tables of cases for `verify`'s verdicts: every ledger state, listed on
//! the POP3 server or not, found in the target or not; and what `--repair`
//! does with each.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::config::{DeletePolicy, Policy};
use crate::ledger::{AuditRow, Known, State};
use crate::sync::plan::{self, Inputs};

const MAX: u64 = 1000;
const SMALL: u64 = 10;
const LARGE: u64 = 5000;

fn policy() -> Policy {
    Policy {
        delete: DeletePolicy::Never,
        max_message_size: MAX,
        max_attempts: 3,
    }
}

fn audit(key: &str, state: State, size: u64, uid: Option<u32>) -> AuditRow {
    let copied = !matches!(state, State::Skipped | State::Rejected);
    AuditRow {
        key: key.into(),
        state,
        size,
        sha256: copied.then(|| "ab".into()),
        message_id: copied.then(|| format!("<{key}@example>")),
        mailbox: copied.then(|| "INBOX".into()),
        uidvalidity: uid.map(|_| 7),
        uid,
    }
}

fn known(r: &AuditRow) -> Known {
    Known {
        state: r.state,
        size: r.size,
        listed_size: Some(r.size),
        digest: r.sha256.is_some(),
        message_date: None,
        appended_at: None,
        superseded: false,
    }
}

/// One case: the row's state (none: no row), whether the message is listed
/// on the POP3 server, its size, what the target lookup said.
struct Case {
    state: Option<State>,
    listed: bool,
    size: u64,
    found: Found,
    want: Verdict,
}

fn c(state: Option<State>, listed: bool, size: u64, found: Found, want: Verdict) -> Case {
    Case {
        state,
        listed,
        size,
        found,
        want,
    }
}

/// Runs a case through the same plan a pass makes, then `classify`.
fn verdict_of(case: &Case) -> Entry {
    let key = "u1";
    let mut rows: HashMap<String, AuditRow> = HashMap::new();
    if let Some(state) = case.state {
        rows.insert(key.into(), audit(key, state, case.size, Some(5)));
    }
    let listing: Vec<Listed> = if case.listed {
        vec![Listed {
            number: 1,
            uidl: key.into(),
            rekey: None,
            derived: false,
            size: case.size,
        }]
    } else {
        Vec::new()
    };
    let known_rows: HashMap<String, Known> =
        rows.iter().map(|(k, r)| (k.clone(), known(r))).collect();
    let policy = policy();
    let attempted = HashSet::new();
    let next = plan::session(&Inputs {
        listing: &listing,
        rows: &known_rows,
        policy: &policy,
        attempted: &attempted,
        delete_batch: usize::MAX,
    });
    let found: HashMap<String, Found> = match case.found {
        Found::NotLookedUp => HashMap::new(),
        f => HashMap::from([(key.to_owned(), f)]),
    };
    let entries = classify(&listing, &next, &rows, &found);
    assert_eq!(entries.len(), 1, "one entry per message or row");
    entries.into_iter().next().expect("one entry")
}

#[test]
fn every_state_listed_or_not_found_or_not() {
    use Found::{Absent, At, NotLookedUp};
    use State::*;
    use Verdict as V;
    let cases = [
        // Copied rows: the target decides.
        c(Some(Appended), true, SMALL, At(5), V::Present),
        c(Some(Appended), true, SMALL, Absent, V::Missing),
        c(Some(Appended), false, SMALL, At(5), V::Present),
        c(Some(Appended), false, SMALL, Absent, V::Lost),
        c(Some(Deleted), false, SMALL, At(5), V::Present),
        c(Some(Deleted), false, SMALL, Absent, V::Lost),
        c(Some(Deleted), true, SMALL, Absent, V::Missing),
        // Intents and refusals: in the target means a copy not recorded.
        c(Some(Appending), true, SMALL, At(5), V::Unrecorded),
        c(Some(Appending), true, SMALL, Absent, V::NotCopied),
        c(Some(Appending), false, SMALL, At(5), V::Unrecorded),
        c(Some(Appending), false, SMALL, Absent, V::Stale),
        c(Some(Pending), true, SMALL, Absent, V::NotCopied),
        c(Some(Pending), true, SMALL, NotLookedUp, V::NotCopied),
        c(Some(Pending), true, SMALL, At(5), V::Unrecorded),
        c(Some(Pending), false, SMALL, Absent, V::Stale),
        // Left on the server on purpose.
        c(Some(Skipped), true, LARGE, NotLookedUp, V::Skipped),
        c(Some(Skipped), false, LARGE, NotLookedUp, V::Stale),
        c(Some(Rejected), true, SMALL, NotLookedUp, V::Rejected),
        c(Some(Rejected), false, SMALL, NotLookedUp, V::Stale),
        // Skipped when the limit was lower: the next pass copies it.
        c(Some(Skipped), true, SMALL, NotLookedUp, V::NotCopied),
        // No row: new mail, or too large for the next pass.
        c(None, true, SMALL, NotLookedUp, V::NotCopied),
        c(None, true, LARGE, NotLookedUp, V::Skipped),
    ];
    for (i, case) in cases.iter().enumerate() {
        let e = verdict_of(case);
        assert_eq!(
            e.verdict, case.want,
            "case {i}: {:?} listed={} size={} found={:?}",
            case.state, case.listed, case.size, case.found
        );
        assert_eq!(e.number.is_some(), case.listed, "case {i}");
        let uid = matches!(case.found, Found::At(_)).then_some(5);
        assert_eq!(e.uid, uid, "case {i}");
    }
}

#[test]
fn only_present_skipped_and_rejected_are_accounted_for() {
    use Verdict as V;
    for v in [V::Present, V::Skipped, V::Rejected] {
        assert!(v.accounted_for(), "{v:?}");
    }
    for v in [V::Missing, V::Lost, V::NotCopied, V::Unrecorded, V::Stale] {
        assert!(!v.accounted_for(), "{v:?}");
    }
}

fn entry(key: &str, verdict: Verdict, uid: Option<u32>) -> Entry {
    Entry {
        key: key.into(),
        number: None,
        size: 1,
        verdict,
        uid,
    }
}

#[test]
fn repair_reopens_missing_resolves_unrecorded_forgets_the_gone() {
    use Verdict as V;
    let entries = [
        entry("present", V::Present, Some(1)),
        entry("missing", V::Missing, None),
        entry("lost", V::Lost, None),
        entry("new", V::NotCopied, None),
        entry("unrecorded", V::Unrecorded, Some(9)),
        entry("skipped", V::Skipped, None),
        entry("rejected", V::Rejected, None),
        entry("stale", V::Stale, None),
    ];
    let r = repairs(&entries);
    assert_eq!(r.reopen, ["missing"]);
    assert_eq!(r.resolve, [("unrecorded".to_owned(), 9)]);
    assert_eq!(r.forget, ["lost", "stale"]);
    assert!(!r.is_empty());
    assert!(
        repairs(&entries[..1]).is_empty(),
        "nothing to do when all is present"
    );
    let n = count(&entries, 2);
    assert_eq!(
        (n.present, n.missing, n.lost, n.not_copied, n.unrecorded),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(
        (n.skipped, n.rejected, n.stale, n.unknown_in_target),
        (1, 1, 1, 2)
    );
}

#[test]
fn unknown_target_messages_are_those_no_row_found() {
    let entries = [
        entry("a", Verdict::Present, Some(2)),
        entry("b", Verdict::Missing, None),
    ];
    let target = [(1, 10), (2, 20), (3, 30)];
    assert_eq!(unknown_in_target(&target, &entries), [(1, 10), (3, 30)]);
}

#[test]
fn a_uid_is_trusted_only_in_its_mailbox_under_its_uidvalidity() {
    let r = audit("k", State::Appended, 1, Some(5));
    assert_eq!(uid_usable(&r, "INBOX", Some(7)), Some(5));
    assert_eq!(
        uid_usable(&r, "INBOX", Some(8)),
        None,
        "UIDVALIDITY changed"
    );
    assert_eq!(uid_usable(&r, "INBOX", None), None);
    assert_eq!(uid_usable(&r, "Archive", Some(7)), None, "another mailbox");
    let no_uid = audit("k", State::Appended, 1, None);
    assert_eq!(uid_usable(&no_uid, "INBOX", Some(7)), None);
}

#[test]
fn rows_are_looked_for_when_they_may_have_a_copy() {
    assert!(looks_in_target(&audit("k", State::Appended, 1, None)));
    assert!(looks_in_target(&audit("k", State::Deleted, 1, None)));
    assert!(looks_in_target(&audit("k", State::Appending, 1, None)));
    assert!(!looks_in_target(&audit("k", State::Skipped, 1, None)));
    assert!(!looks_in_target(&audit("k", State::Rejected, 1, None)));
    // A RETR refused before any intent: nothing to look by.
    let mut retr = audit("k", State::Pending, 1, None);
    retr.sha256 = None;
    retr.message_id = None;
    assert!(!looks_in_target(&retr));
}

#[test]
fn listed_messages_come_first_then_the_other_rows_by_key() {
    let rows: HashMap<String, AuditRow> = ["z", "b", "a"]
        .iter()
        .map(|k| ((*k).to_owned(), audit(k, State::Appended, 1, None)))
        .collect();
    let listing = vec![Listed {
        number: 3,
        uidl: "z".into(),
        rekey: None,
        derived: false,
        size: 1,
    }];
    let next = plan::SessionPlan::default();
    let entries = classify(&listing, &next, &rows, &HashMap::new());
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["z", "a", "b"]);
    assert_eq!(entries.first().and_then(|e| e.number), Some(3));
}
