//! Tables of cases for the plan: every ledger state of DESIGN.md, every
//! delete policy, derived IDs, duplicates in the listing, recovery.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;
use crate::config::{DeletePolicy, Policy};
use crate::ledger::{Known, State};

const MAX: u64 = 1000;
const NOW: i64 = 1_000_000;
const DAY: i64 = 86_400;

fn policy(delete: DeletePolicy) -> Policy {
    Policy {
        delete,
        max_message_size: MAX,
        max_attempts: 3,
    }
}

fn listed(number: u32, uidl: &str, size: u64) -> Listed {
    Listed {
        number,
        uidl: uidl.into(),
        rekey: None,
        derived: false,
        size,
    }
}

/// A row of the ledger, by key; its LIST size unknown (an old row).
fn row(key: &str, state: State, size: u64) -> (String, Known) {
    let known = Known {
        state,
        size,
        listed_size: None,
        digest: false,
        message_date: None,
        appended_at: Some(NOW),
        superseded: false,
    };
    (key.into(), known)
}

fn rows(list: Vec<(String, Known)>) -> HashMap<String, Known> {
    list.into_iter().collect()
}

fn plan_of<'l>(
    listing: &'l [Listed],
    rows: &HashMap<String, Known>,
    delete: DeletePolicy,
    attempted: &HashSet<String>,
    batch: usize,
) -> (Vec<&'l str>, Vec<&'l str>, Vec<&'l str>, bool, u64) {
    let p = policy(delete);
    let plan = session(&Inputs {
        listing,
        rows,
        policy: &p,
        attempted,
        delete_batch: batch,
    });
    let uidls = |v: &[Fetch<'l>]| v.iter().map(|f| f.listed.uidl.as_str()).collect::<Vec<_>>();
    let looked: Vec<&str> = plan
        .fetch
        .iter()
        .filter(|f| f.look_up)
        .map(|f| f.listed.uidl.as_str())
        .collect();
    (
        uidls(&plan.fetch),
        uidls(&plan.skip),
        looked,
        plan.more,
        plan.todo,
    )
}

/// One message with a row in `state` (or none), listed at `size`: is it
/// fetched, skipped, looked up first?
#[test]
fn each_ledger_state_decides_what_a_listed_message_needs() {
    struct Case {
        what: &'static str,
        state: Option<State>,
        row_size: u64,
        sha: bool,
        listed_size: u64,
        fetch: bool,
        skip: bool,
        look_up: bool,
    }
    #[rustfmt::skip]
    let cases = [
        Case { what: "new", state: None, row_size: 0, sha: false, listed_size: 10, fetch: true, skip: false, look_up: false },
        Case { what: "new, over the limit", state: None, row_size: 0, sha: false, listed_size: MAX + 1, fetch: false, skip: true, look_up: false },
        Case { what: "new, exactly the limit", state: None, row_size: 0, sha: false, listed_size: MAX, fetch: true, skip: false, look_up: false },
        Case { what: "appending: outcome unknown", state: Some(State::Appending), row_size: 10, sha: true, listed_size: 10, fetch: true, skip: false, look_up: true },
        Case { what: "appending, now over the limit", state: Some(State::Appending), row_size: 10, sha: true, listed_size: MAX + 1, fetch: false, skip: true, look_up: true },
        Case { what: "pending: retried", state: Some(State::Pending), row_size: 10, sha: true, listed_size: 10, fetch: true, skip: false, look_up: false },
        Case { what: "appended", state: Some(State::Appended), row_size: 10, sha: true, listed_size: 10, fetch: false, skip: false, look_up: false },
        Case { what: "deleted (still listed)", state: Some(State::Deleted), row_size: 10, sha: true, listed_size: 10, fetch: false, skip: false, look_up: false },
        Case { what: "rejected", state: Some(State::Rejected), row_size: 10, sha: true, listed_size: 10, fetch: false, skip: false, look_up: false },
        Case { what: "skipped, still too large", state: Some(State::Skipped), row_size: MAX + 1, sha: false, listed_size: MAX + 1, fetch: false, skip: false, look_up: false },
        Case { what: "skipped, the limit grew", state: Some(State::Skipped), row_size: 500, sha: false, listed_size: 500, fetch: true, skip: false, look_up: false },
        Case { what: "skipped after an intent (has a digest)", state: Some(State::Skipped), row_size: 500, sha: true, listed_size: 500, fetch: true, skip: false, look_up: true },
        Case { what: "skipped when its LIST lied, LIST now small", state: Some(State::Skipped), row_size: MAX + 1, sha: false, listed_size: 10, fetch: false, skip: false, look_up: false },
    ];
    for c in cases {
        let listing = vec![listed(1, "u", c.listed_size)];
        let rs = match c.state {
            None => HashMap::new(),
            Some(s) => {
                let mut r = row("u", s, c.row_size);
                r.1.digest = c.sha;
                rows(vec![r])
            }
        };
        let (fetch, skip, looked, more, todo) =
            plan_of(&listing, &rs, DeletePolicy::Never, &HashSet::new(), 500);
        assert_eq!(!fetch.is_empty(), c.fetch, "{}: fetch", c.what);
        assert_eq!(!skip.is_empty(), c.skip, "{}: skip", c.what);
        let p = policy(DeletePolicy::Never);
        let plan = session(&Inputs {
            listing: &listing,
            rows: &rs,
            policy: &p,
            attempted: &HashSet::new(),
            delete_batch: 500,
        });
        let all_looked = plan.fetch.iter().chain(&plan.skip).any(|f| f.look_up);
        assert_eq!(all_looked, c.look_up, "{}: look up", c.what);
        assert_eq!(looked.is_empty(), !(c.look_up && c.fetch), "{}", c.what);
        assert!(!more, "{}", c.what);
        assert_eq!(todo, u64::from(c.fetch || c.skip), "{}: todo", c.what);
    }
}

#[test]
fn a_message_skipped_before_is_not_news_when_skipped_again() {
    let listing = vec![listed(1, "s", 10)];
    let mut r = row("s", State::Skipped, 10);
    r.1.digest = true;
    let rs = rows(vec![r]);
    let p = policy(DeletePolicy::Never);
    let plan = session(&Inputs {
        listing: &listing,
        rows: &rs,
        policy: &p,
        attempted: &HashSet::new(),
        delete_batch: 1,
    });
    assert!(plan.fetch.first().is_some_and(Fetch::was_skipped));
    let fresh = HashMap::new();
    let plan = session(&Inputs {
        listing: &listing,
        rows: &fresh,
        policy: &p,
        attempted: &HashSet::new(),
        delete_batch: 1,
    });
    assert!(plan.fetch.first().is_some_and(|f| !f.was_skipped()));
}

#[test]
fn recovering_looks_up_every_message_unless_the_target_is_empty() {
    let m = listed(1, "u", 10);
    let plain = Fetch {
        listed: &m,
        known: None,
        look_up: false,
    };
    let unresolved = Fetch {
        look_up: true,
        known: Some(State::Appending),
        ..plain
    };
    assert!(!must_look_up(&plain, false, 10));
    assert!(must_look_up(&plain, true, 10));
    assert!(
        !must_look_up(&plain, true, 0),
        "an empty target holds nothing"
    );
    assert!(must_look_up(&unresolved, false, 0));
    assert!(must_look_up(&unresolved, true, 0));
}

#[test]
fn recovery_starts_on_a_lost_ledger_and_ends_only_after_a_whole_pass() {
    let listing = vec![listed(1, "u", 10)];
    assert!(starts_recovery(0, &listing));
    assert!(!starts_recovery(0, &[]), "nothing to recover");
    assert!(
        !starts_recovery(1, &listing),
        "the ledger knows the account (rows of other messages count)"
    );
    let listed = vec![listed(1, "a", 1), listed(2, "b", 1)];
    let keys = listed_keys(&listed);
    // What the ledger's count_in_states answers for these rows.
    let settled = |rs: &HashMap<String, Known>| {
        rs.iter()
            .filter(|(k, r)| keys.contains(k.as_str()) && RECOVERY_SETTLED.contains(&r.state))
            .count() as u64
    };
    let done = rows(vec![
        row("a", State::Appended, 1),
        row("b", State::Rejected, 1),
    ]);
    assert!(recovery_complete(&keys, settled(&done), true, false));
    assert!(
        !recovery_complete(&keys, settled(&done), false, false),
        "cut short by LOGIN-DELAY"
    );
    assert!(
        !recovery_complete(&keys, settled(&done), true, true),
        "interrupted by a shutdown"
    );
    for (state, settles) in [
        (State::Appended, true),
        (State::Deleted, true),
        (State::Rejected, true),
        (State::Skipped, true),
        (State::Pending, false),
        (State::Appending, false),
    ] {
        let rs = rows(vec![row("a", State::Appended, 1), row("b", state, 1)]);
        assert_eq!(
            recovery_complete(&keys, settled(&rs), true, false),
            settles,
            "{state:?}"
        );
    }
    let only_a = rows(vec![row("a", State::Appended, 1)]);
    assert!(
        !recovery_complete(&keys, settled(&only_a), true, false),
        "b was never read (its session was abandoned)"
    );
    let other = rows(vec![
        row("a", State::Appended, 1),
        row("c", State::Appended, 1),
    ]);
    assert!(
        !recovery_complete(&keys, settled(&other), true, false),
        "a row of a message no longer listed does not stand for b"
    );
    // A rekeyed message is counted under its key, not its UIDL.
    let mut twice = vec![self::listed(1, "a", 1), self::listed(2, "a", 2)];
    resolve_keys(&mut twice, &HashMap::new());
    let twice_keys = listed_keys(&twice);
    assert_eq!(twice_keys.len(), 2, "{twice_keys:?}");
    assert!(!recovery_complete(&twice_keys, 1, true, false));
    assert!(recovery_complete(&twice_keys, 2, true, false));
}

#[test]
fn attempted_messages_wait_for_the_next_pass() {
    let listing = vec![listed(1, "a", 10), listed(2, "b", 10)];
    let rs = rows(vec![row("a", State::Pending, 10)]);
    let attempted: HashSet<String> = ["a".to_string()].into();
    let (fetch, _, _, _, todo) = plan_of(&listing, &rs, DeletePolicy::AfterSync, &attempted, 10);
    assert_eq!(fetch, ["b"]);
    assert_eq!(todo, 1);
}

#[test]
fn delete_policies_batch_sessions_and_never_does_not() {
    let listing: Vec<Listed> = (1..=5).map(|n| listed(n, &format!("u{n}"), 10)).collect();
    let mut big = listing.clone();
    big.push(listed(6, "huge", MAX + 1));
    let none = HashMap::new();
    for delete in [
        DeletePolicy::AfterSync,
        DeletePolicy::OlderThan(Duration::from_secs(30 * 86_400)),
    ] {
        let (fetch, skip, _, more, todo) = plan_of(&big, &none, delete, &HashSet::new(), 2);
        assert_eq!(fetch, ["u1", "u2"], "{delete:?}");
        assert_eq!(skip, ["huge"], "skips are not batched: {delete:?}");
        assert!(more, "{delete:?}");
        assert_eq!(todo, 6, "the progress bar counts the whole pass");
        let (fetch, _, _, more, _) = plan_of(&listing, &none, delete, &HashSet::new(), 5);
        assert_eq!(fetch.len(), 5);
        assert!(!more, "exactly one batch: {delete:?}");
        let (fetch, _, _, _, _) = plan_of(&listing, &none, delete, &HashSet::new(), 0);
        assert_eq!(fetch.len(), 1, "a batch of 0 is a batch of 1");
    }
    let (fetch, _, _, more, _) = plan_of(&listing, &none, DeletePolicy::Never, &HashSet::new(), 2);
    assert_eq!(fetch.len(), 5);
    assert!(!more);
}

#[test]
fn deletion_follows_the_policy_and_only_appended_rows() {
    let listing = vec![
        listed(1, "appended", 10),
        listed(2, "appending", 10),
        listed(3, "pending", 10),
        listed(4, "skipped", MAX + 1),
        listed(5, "rejected", 10),
        listed(6, "new", 10),
        listed(7, "deleted", 10),
    ];
    let rs = rows(vec![
        row("appended", State::Appended, 10),
        row("appending", State::Appending, 10),
        row("pending", State::Pending, 10),
        row("skipped", State::Skipped, MAX + 1),
        row("rejected", State::Rejected, 10),
        row("deleted", State::Deleted, 10),
    ]);
    let numbers = |d: &DeletePolicy, now| {
        deletable(&listing, &rs, d, now)
            .iter()
            .map(|m| m.number)
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&DeletePolicy::Never, NOW), Vec::<u32>::new());
    assert_eq!(numbers(&DeletePolicy::AfterSync, NOW), [1]);
    let month = DeletePolicy::OlderThan(Duration::from_secs(30 * 86_400));
    assert_eq!(numbers(&month, NOW), Vec::<u32>::new(), "copied just now");
    assert_eq!(
        numbers(&month, NOW + 30 * DAY),
        [1],
        "30 days after the copy"
    );
}

#[test]
fn an_age_counts_from_arrival_then_from_the_copy() {
    let month = DeletePolicy::OlderThan(Duration::from_secs(30 * 86_400));
    let (_, mut r) = row("u", State::Appended, 10);
    r.message_date = Some(NOW - 31 * DAY);
    assert!(may_delete(&month, &r, NOW), "arrived 31 days ago");
    r.message_date = Some(NOW - 29 * DAY);
    r.appended_at = Some(NOW - 100 * DAY);
    assert!(!may_delete(&month, &r, NOW), "the arrival date wins");
    r.message_date = None;
    assert!(may_delete(&month, &r, NOW), "copied 100 days ago");
    r.appended_at = None;
    assert!(
        !may_delete(&month, &r, NOW),
        "nothing known: counts from now"
    );
    // Extreme values saturate instead of overflowing.
    let forever = DeletePolicy::OlderThan(Duration::MAX);
    r.message_date = Some(NOW - 100 * 365 * DAY);
    assert!(!may_delete(&forever, &r, NOW), "a century is not forever");
    r.message_date = Some(i64::MIN);
    assert!(may_delete(&month, &r, NOW), "dated at the dawn of time");
    r.message_date = Some(i64::MAX);
    assert!(!may_delete(&month, &r, NOW), "dated in the far future");
}

#[test]
fn rows_appended_but_no_longer_listed_are_gone_only_under_a_delete_policy() {
    let unlisted: Vec<String> = ["gone-b", "gone-a"].map(String::from).into();
    assert_eq!(
        gone(&unlisted, &DeletePolicy::AfterSync),
        ["gone-a", "gone-b"]
    );
    let month = DeletePolicy::OlderThan(Duration::from_secs(30 * 86_400));
    assert_eq!(gone(&unlisted, &month).len(), 2);
    assert!(gone(&unlisted, &DeletePolicy::Never).is_empty());
}

#[test]
fn the_listing_keeps_the_servers_order_and_sizes() {
    let sizes: HashMap<u32, u64> = [(1, 10), (2, 20)].into();
    let list = listing(
        &sizes,
        vec![(2, "b".into()), (1, "a".into()), (4, "c".into())],
        false,
    );
    assert_eq!(
        list.iter()
            .map(|m| (m.number, m.uidl.as_str(), m.key(), m.size))
            .collect::<Vec<_>>(),
        [(2, "b", "b", 20), (1, "a", "a", 10), (4, "c", "c", 0)],
        "a message LIST did not mention has size 0"
    );
}

/// Keys after [`resolve_keys`], in listing order.
fn keys_of(list: &[Listed]) -> Vec<&str> {
    list.iter().map(|m| m.key()).collect()
}

fn with_listed_size(mut r: (String, Known), listed: u64) -> (String, Known) {
    r.1.listed_size = Some(listed);
    r
}

#[test]
fn a_reused_uidl_is_a_new_message_under_its_own_key() {
    // The ledger copied "u" when LIST said 100 bytes; now LIST gives "u" to
    // a message of 250 bytes: another message.
    let rs = rows(vec![with_listed_size(row("u", State::Deleted, 100), 100)]);
    let mut list = vec![listed(1, "u", 250), listed(2, "v", 10)];
    let re = resolve_keys(&mut list, &rs);
    assert_eq!(keys_of(&list), ["u 250", "v"]);
    assert_eq!(
        re,
        [Rekeyed {
            number: 1,
            uidl: "u".into(),
            key: "u 250".into(),
            twice_listed: false
        }]
    );
    // So it is copied (no row under its key), and nothing is deleted on
    // the strength of the old row.
    let p = policy(DeletePolicy::AfterSync);
    let plan = session(&Inputs {
        listing: &list,
        rows: &rs,
        policy: &p,
        attempted: &HashSet::new(),
        delete_batch: 10,
    });
    assert_eq!(plan.fetch.len(), 2);
    let appended = rows(vec![with_listed_size(row("u", State::Appended, 100), 100)]);
    let mut list = vec![listed(1, "u", 250)];
    resolve_keys(&mut list, &appended);
    assert!(
        deletable(&list, &appended, &DeletePolicy::AfterSync, NOW).is_empty(),
        "a UIDL match alone never deletes"
    );
    // The next pass finds it under the same key: copied once.
    let again = rows(vec![
        with_listed_size(row("u", State::Deleted, 100), 100),
        with_listed_size(row("u 250", State::Appended, 250), 250),
    ]);
    let mut list = vec![listed(1, "u", 250)];
    assert!(resolve_keys(&mut list, &again).is_empty() || keys_of(&list) == ["u 250"]);
    assert_eq!(keys_of(&list), ["u 250"]);
    let plan = session(&Inputs {
        listing: &list,
        rows: &again,
        policy: &p,
        attempted: &HashSet::new(),
        delete_batch: 10,
    });
    assert!(plan.fetch.is_empty(), "already copied under its own key");
    assert_eq!(
        deletable(&list, &again, &DeletePolicy::AfterSync, NOW).len(),
        1
    );
}

#[test]
fn the_same_size_keeps_the_key_and_old_rows_match_by_uidl() {
    let same = rows(vec![with_listed_size(row("u", State::Appended, 100), 100)]);
    let mut list = vec![listed(1, "u", 100)];
    assert!(resolve_keys(&mut list, &same).is_empty());
    assert_eq!(keys_of(&list), ["u"]);
    // A row written before the LIST size was kept: matched by UIDL alone.
    let old = rows(vec![row("u", State::Appended, 90)]);
    let mut list = vec![listed(1, "u", 100)];
    assert!(resolve_keys(&mut list, &old).is_empty());
    assert_eq!(keys_of(&list), ["u"]);
}

/// A row marked superseded (a DELE's check found another message under
/// its UIDL and size) gives the message listed now a key of its own, and a
/// superseded key in turn gives the next one.
#[test]
fn a_superseded_row_gives_the_listed_message_a_key_of_its_own() {
    let superseded = |(k, mut r): (String, Known)| {
        r.superseded = true;
        (k, r)
    };
    let one = rows(vec![superseded(with_listed_size(
        row("u", State::Appended, 100),
        100,
    ))]);
    let mut list = vec![listed(1, "u", 100)];
    let re = resolve_keys(&mut list, &one);
    assert_eq!(keys_of(&list), ["u 100"]);
    assert_eq!(re.len(), 1);
    assert!(!re.iter().any(|r| r.twice_listed));
    // That message is new: fetched, not deletable by the old row.
    let (fetch, ..) = plan_of(&list, &one, DeletePolicy::AfterSync, &HashSet::new(), 10);
    assert_eq!(fetch, ["u"]);
    assert!(deletable(&list, &one, &DeletePolicy::AfterSync, NOW).is_empty());
    // Its own key superseded in turn: the next key.
    let two = rows(vec![
        superseded(with_listed_size(row("u", State::Appended, 100), 100)),
        superseded(with_listed_size(row("u 100", State::Appended, 100), 100)),
    ]);
    let mut list = vec![listed(1, "u", 100)];
    resolve_keys(&mut list, &two);
    assert_eq!(keys_of(&list), ["u 100 2"]);
}

#[test]
fn messages_listed_at_once_under_one_uidl_each_get_a_key() {
    let none = HashMap::new();
    let mut list = vec![
        listed(1, "x", 10),
        listed(2, "y", 10),
        listed(3, "x", 20),
        listed(4, "x", 10),
        listed(5, "x", 10),
    ];
    let re = resolve_keys(&mut list, &none);
    assert_eq!(keys_of(&list), ["x", "y", "x 20", "x 10", "x 10 2"]);
    assert!(re.iter().all(|r| r.twice_listed) && re.len() == 3);
    // Stable: the same listing gives the same keys on the next pass.
    let mut again = list.clone();
    for m in &mut again {
        m.rekey = None;
    }
    resolve_keys(&mut again, &none);
    assert_eq!(keys_of(&again), keys_of(&list));
    // All of them are copied.
    let p = policy(DeletePolicy::Never);
    let plan = session(&Inputs {
        listing: &list,
        rows: &none,
        policy: &p,
        attempted: &HashSet::new(),
        delete_batch: 10,
    });
    assert_eq!(plan.fetch.len(), 5);
}

#[test]
fn derived_ids_are_stable_digests_of_the_header_section() {
    let a = derived_uidl(b"Subject: a\r\n\r\n");
    assert_eq!(a, derived_uidl(b"Subject: a\r\n\r\n"));
    assert_ne!(a, derived_uidl(b"Subject: b\r\n\r\n"));
    assert!(a.starts_with("hdr-") && a.len() == 4 + 64, "{a}");
    let list = listing(&HashMap::new(), vec![(1, a.clone())], true);
    assert!(list.iter().all(|m| m.derived));
    assert_eq!(header_section(b"A: 1\r\n\r\nbody"), b"A: 1\r\n\r\n");
    assert_eq!(header_section(b"A: 1\n\nbody"), b"A: 1\n\n");
    assert_eq!(header_section(b"A: 1\r\nno end"), b"A: 1\r\nno end");
    assert_eq!(header_section(b""), b"");
}

#[test]
fn a_dry_run_counts_what_would_be_copied_and_deleted() {
    let listing = vec![
        listed(1, "appended", 10),
        listed(2, "new", 10),
        listed(3, "new-huge", MAX + 1),
        listed(4, "pending", 30),
        listed(5, "rejected", 10),
    ];
    let rs = rows(vec![
        row("appended", State::Appended, 10),
        row("pending", State::Pending, 30),
        row("rejected", State::Rejected, 10),
    ]);
    let never = dry_run(&listing, &rs, &policy(DeletePolicy::Never), NOW);
    assert_eq!(
        never,
        DryRun {
            would_copy: 2,
            would_copy_bytes: 40,
            would_delete: 0
        }
    );
    let after = dry_run(&listing, &rs, &policy(DeletePolicy::AfterSync), NOW);
    assert_eq!(
        (after.would_copy, after.would_delete),
        (2, 2),
        "appended + new"
    );
    let month = DeletePolicy::OlderThan(Duration::from_secs(30 * 86_400));
    let aged = dry_run(&listing, &rs, &policy(month), NOW + 31 * DAY);
    assert_eq!(aged.would_delete, 1, "only what is already copied and old");
}
