//! The ledger's calls against a real SQLite file and a real PostgreSQL
//! database (a private cluster, `tests/support/postgres.rs`): every case
//! runs on both backends ([`both!`]).

use super::*;

#[path = "../../tests/support/postgres.rs"]
mod pg;

/// Which backend a case runs on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Keeps a ledger's storage alive for the test.
enum Store {
    Dir(tempfile::TempDir),
    Db(pg::PgDatabase),
}

impl Store {
    /// A second handle on the same ledger (as another process would have).
    async fn open(&self) -> Ledger {
        match self {
            Store::Dir(d) => Ledger::open(&d.path().join("sub/ledger.db"))
                .await
                .expect("open"),
            Store::Db(db) => Ledger::connect(&secrecy::SecretString::from(db.url.as_str()))
                .await
                .expect("connect"),
        }
    }
}

async fn ledger(kind: Kind) -> (Store, Ledger) {
    let store = match kind {
        Kind::Sqlite => Store::Dir(tempfile::tempdir().expect("tempdir")),
        Kind::Postgres => Store::Db(tokio::task::spawn_blocking(pg::database).await.expect("pg")),
    };
    let l = store.open().await;
    (store, l)
}

/// One `#[tokio::test]` per backend for the case `$name(kind)`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Kind::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Kind::Postgres).await
            }
        }
    };
}

fn intent(uidl: &str) -> Intent<'_> {
    Intent {
        uidl,
        uidl_derived: false,
        size: 10,
        listed_size: 10,
        sha256: "ab",
        header_sha256: Some("cd"),
        message_id: Some("<a@b>"),
        message_date: Some(1),
        mailbox: "INBOX",
    }
}

both!(state_machine_and_status);
async fn state_machine_and_status(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    l.start_run("acc").await.expect("run");
    l.record_intent("acc", &intent("u1")).await.expect("intent");
    l.record_intent("acc", &intent("u2")).await.expect("intent");
    l.record_intent("acc", &intent("u3")).await.expect("intent");
    l.record_appended("acc", "u1", Some(7), Some(1))
        .await
        .expect("appended");
    assert_eq!(
        l.record_failure("acc", "u2", "NO", Attempt::Counts, 2)
            .await
            .expect("f"),
        State::Pending
    );
    assert_eq!(
        l.record_failure("acc", "u2", "NO again", Attempt::Counts, 2)
            .await
            .expect("f"),
        State::Rejected
    );
    l.record_skipped("acc", "u4", 99, 99, "too large")
        .await
        .expect("skip");
    l.record_deleted("acc", &["u1".into(), "u3".into()])
        .await
        .expect("deleted");
    l.finish_run("acc", Some("boom")).await.expect("finish");
    let rows = l.messages("acc").await.expect("rows");
    assert_eq!(rows["u1"].state, State::Deleted);
    // u3 was never appended: a DELE record must not touch it.
    assert_eq!(rows["u3"].state, State::Appending);
    assert_eq!(rows["u2"].last_error.as_deref(), Some("NO again"));
    let st = l
        .status(&["acc".into(), "other".into()])
        .await
        .expect("status");
    assert_eq!(
        (
            st[0].copied,
            st[0].deleted,
            st[0].rejected,
            st[0].skipped,
            st[0].unresolved
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(st[0].last_error.as_deref(), Some("boom"));
    assert_eq!(st[0].consecutive_failures, 1);
    assert_eq!(st[1].account, "other");
    l.finish_run("acc", None).await.expect("finish");
    let st = l.status(&[]).await.expect("status");
    assert_eq!(
        (st[0].consecutive_failures, st[0].last_error.clone()),
        (0, None)
    );
}

both!(batches_record_intents_and_results);
async fn batches_record_intents_and_results(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    l.record_intents("acc", &[intent("a"), intent("b"), intent("c")])
        .await
        .expect("intents");
    l.record_appended_many(
        "acc",
        &[
            AppendOk {
                uidl: "a".into(),
                uidvalidity: Some(1),
                uid: Some(10),
            },
            AppendOk {
                uidl: "c".into(),
                uidvalidity: None,
                uid: None,
            },
        ],
    )
    .await
    .expect("appended");
    let rows = l.messages("acc").await.expect("rows");
    assert_eq!(rows["a"].state, State::Appended);
    assert_eq!(rows["b"].state, State::Appending);
    assert_eq!(rows["c"].state, State::Appended);
    l.record_intents("acc", &[]).await.expect("empty is fine");
}

both!(recovery_flag_and_retr_failures);
async fn recovery_flag_and_retr_failures(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    assert!(!l.is_recovering("acc").await.expect("read"));
    l.set_recovering("acc", true).await.expect("set");
    assert!(l.is_recovering("acc").await.expect("read"));
    l.set_recovering("acc", false).await.expect("clear");
    assert!(!l.is_recovering("acc").await.expect("read"));
    assert_eq!(
        l.record_retr_failure("acc", "r", 5, "-ERR", 2)
            .await
            .expect("f"),
        State::Pending
    );
    assert_eq!(
        l.record_retr_failure("acc", "r", 5, "-ERR", 2)
            .await
            .expect("f"),
        State::Rejected
    );
    // An unresolved APPEND keeps its intent whatever RETR says.
    l.record_intent("acc", &intent("i")).await.expect("intent");
    assert_eq!(
        l.record_retr_failure("acc", "i", 5, "-ERR", 1)
            .await
            .expect("f"),
        State::Appending
    );
}

both!(reopening_keeps_rows);
async fn reopening_keeps_rows(kind: Kind) {
    let (store, l) = ledger(kind).await;
    l.record_intent("a", &intent("x")).await.expect("intent");
    l.close().await;
    let l = store.open().await;
    assert_eq!(l.messages("a").await.expect("rows").len(), 1);
}

both!(known_reads_the_listed_uidls_and_counts_the_rest);
async fn known_reads_the_listed_uidls_and_counts_the_rest(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    l.record_intents("acc", &[intent("a"), intent("b"), intent("c 99")])
        .await
        .expect("intents");
    let ok = |u: &str| AppendOk {
        uidl: u.into(),
        uidvalidity: None,
        uid: None,
    };
    l.record_appended_many("acc", &[ok("a"), ok("b"), ok("c 99")])
        .await
        .expect("appended");
    l.record_skipped("acc", "d", 500, 400, "too large")
        .await
        .expect("skip");
    l.record_intent("other", &intent("a"))
        .await
        .expect("intent");
    let listed: HashSet<&str> = ["a", "c", "d"].into();
    let k = l.known("acc", &listed).await.expect("known");
    assert_eq!(k.total, 4, "every row of the account, listed or not");
    let mut keys: Vec<&str> = k.rows.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a", "c 99", "d"], "a key counts by its UIDL part");
    assert_eq!(k.unlisted_appended, ["b"]);
    let a = &k.rows["a"];
    assert_eq!(
        (a.state, a.size, a.listed_size, a.digest),
        (State::Appended, 10, Some(10), true)
    );
    let d = &k.rows["d"];
    assert_eq!(
        (d.state, d.size, d.listed_size, d.digest),
        (State::Skipped, 500, Some(400), false)
    );
}

both!(count_in_states_counts_the_given_keys_in_the_given_states);
async fn count_in_states_counts_the_given_keys_in_the_given_states(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    l.record_intents("acc", &[intent("a"), intent("b"), intent("c 99")])
        .await
        .expect("intents");
    let ok = |u: &str| AppendOk {
        uidl: u.into(),
        uidvalidity: None,
        uid: None,
    };
    l.record_appended_many("acc", &[ok("a"), ok("c 99")])
        .await
        .expect("appended");
    l.record_skipped("acc", "d", 500, 400, "too large")
        .await
        .expect("skip");
    l.record_intent("other", &intent("e"))
        .await
        .expect("intent");
    l.record_appended_many("other", &[ok("e")])
        .await
        .expect("appended");
    let settled = [State::Appended, State::Skipped];
    assert_eq!(
        count(&l, &["a", "b", "c 99", "d"], &settled).await,
        3,
        "b is appending"
    );
    assert_eq!(
        count(&l, &["a", "b", "c 99", "d"], &[State::Appending]).await,
        1
    );
    assert_eq!(
        count(&l, &["c"], &settled).await,
        0,
        "a key, not a UIDL, is matched"
    );
    assert_eq!(
        count(&l, &["e", "x"], &settled).await,
        0,
        "another account's row"
    );
    assert_eq!(count(&l, &[], &settled).await, 0);
}

async fn count(l: &Ledger, keys: &[&str], states: &[State]) -> u64 {
    let keys: HashSet<&str> = keys.iter().copied().collect();
    l.count_in_states("acc", &keys, states)
        .await
        .expect("count")
}

both!(server_uidls_are_told_from_derived_ones);
async fn server_uidls_are_told_from_derived_ones(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    assert!(!l.has_server_uidls("acc").await.expect("read"));
    let mut derived = intent("hdr-ab");
    derived.uidl_derived = true;
    l.record_intent("acc", &derived).await.expect("intent");
    assert!(!l.has_server_uidls("acc").await.expect("read"));
    l.record_intent("other", &intent("u1"))
        .await
        .expect("intent");
    assert!(
        !l.has_server_uidls("acc").await.expect("read"),
        "another account's"
    );
    l.record_intent("acc", &intent("u1")).await.expect("intent");
    assert!(l.has_server_uidls("acc").await.expect("read"));
}

both!(fingerprints_supersede_and_derived_rows_take_real_uidls);
async fn fingerprints_supersede_and_derived_rows_take_real_uidls(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    l.record_intent("acc", &intent("u1")).await.expect("intent");
    let fp = l
        .fingerprint("acc", "u1")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(fp.sha256.as_deref(), Some("ab"));
    assert_eq!(fp.header_sha256.as_deref(), Some("cd"));
    assert_eq!(l.fingerprint("acc", "nope").await.expect("read"), None);
    let listed: HashSet<&str> = ["u1"].into();
    assert!(!l.known("acc", &listed).await.expect("known").rows["u1"].superseded);
    l.supersede("acc", "u1").await.expect("supersede");
    assert!(l.known("acc", &listed).await.expect("known").rows["u1"].superseded);

    // Rows under derived IDs take the server's UIDLs; a pair whose real
    // UIDL has a row already, or whose derived ID has none, changes nothing.
    let derived = |uidl| Intent {
        uidl_derived: true,
        ..intent(uidl)
    };
    for u in ["hdr-a", "hdr-b"] {
        l.record_intent("d", &derived(u)).await.expect("intent");
    }
    assert!(l.has_derived_uidls("d").await.expect("query"));
    assert!(!l.has_server_uidls("d").await.expect("query"));
    l.record_intent("d", &intent("taken"))
        .await
        .expect("intent");
    let pairs = [
        ("hdr-a".to_string(), "r1".to_string()),
        ("hdr-b".to_string(), "taken".to_string()),
        ("hdr-none".to_string(), "r3".to_string()),
    ];
    assert_eq!(l.rekey_derived("d", &pairs).await.expect("rekey"), 1);
    let rows = l.messages("d").await.expect("rows");
    let mut keys: Vec<&str> = rows.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["hdr-b", "r1", "taken"]);
    assert!(!rows["r1"].uidl_derived);
}

both!(audit_rows_reopen_and_forget);
async fn audit_rows_reopen_and_forget(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    for u in ["u1", "u2", "u3"] {
        l.record_intent("acc", &intent(u)).await.expect("intent");
    }
    l.record_intent("other", &intent("u1"))
        .await
        .expect("intent");
    l.record_appended("acc", "u1", Some(7), Some(41))
        .await
        .expect("appended");
    l.record_appended("acc", "u2", Some(7), Some(42))
        .await
        .expect("appended");
    l.record_deleted("acc", &["u2".to_owned()])
        .await
        .expect("deleted");
    let rows = l.audit_rows("acc").await.expect("audit");
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["u1", "u2", "u3"],
        "this account's rows only, in order"
    );
    let first = rows.first().expect("u1");
    assert_eq!(first.state, State::Appended);
    assert_eq!((first.uidvalidity, first.uid), (Some(7), Some(41)));
    assert_eq!(first.mailbox.as_deref(), Some("INBOX"));
    assert_eq!(first.message_id.as_deref(), Some("<a@b>"));
    assert_eq!(first.sha256.as_deref(), Some("ab"));
    assert_eq!(first.size, 10);
    assert_eq!(rows.get(1).map(|r| r.state), Some(State::Deleted));
    assert_eq!(
        rows.get(2).map(|r| (r.state, r.uid)),
        Some((State::Appending, None))
    );

    // Reopening touches appended and deleted rows only, and forgets the UID.
    let all = ["u1".to_owned(), "u2".to_owned(), "u3".to_owned()];
    l.reopen("acc", &all).await.expect("reopen");
    let rows = l.audit_rows("acc").await.expect("audit");
    for r in &rows {
        assert_eq!(r.state, State::Appending, "{}", r.key);
        assert_eq!((r.uidvalidity, r.uid), (None, None), "{}", r.key);
        assert_eq!(
            r.sha256.as_deref(),
            Some("ab"),
            "the digest stays for the lookup"
        );
    }
    let known = l.known("acc", &HashSet::from(["u1"])).await.expect("known");
    assert_eq!(
        known.rows.get("u1").map(|k| k.state),
        Some(State::Appending)
    );

    l.forget("acc", &all[..2]).await.expect("forget");
    let keys: Vec<String> = l
        .audit_rows("acc")
        .await
        .expect("audit")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["u3"]);
    assert_eq!(
        l.audit_rows("other").await.expect("audit").len(),
        1,
        "another account's row is untouched"
    );
    l.reopen("acc", &[]).await.expect("nothing to reopen");
    l.forget("acc", &[]).await.expect("nothing to forget");
}

both!(claimed_uids_and_next_run);
async fn claimed_uids_and_next_run(kind: Kind) {
    let (_d, l) = ledger(kind).await;
    l.record_intents("acc", &[intent("a"), intent("b"), intent("c")])
        .await
        .expect("intents");
    l.record_appended("acc", "a", Some(7), Some(1))
        .await
        .expect("a");
    l.record_appended("acc", "b", None, Some(2))
        .await
        .expect("b");
    l.record_deleted("acc", &["a".into()]).await.expect("del");
    let mut got: Vec<u32> = l
        .claimed_uids("acc", "INBOX", Some(7))
        .await
        .expect("uids")
        .into_iter()
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [1, 2],
        "deleted counts; an unknown UIDVALIDITY matches"
    );
    let got = l.claimed_uids("acc", "INBOX", Some(8)).await.expect("uids");
    assert_eq!(got, [2].into(), "another UIDVALIDITY");
    let got = l.claimed_uids("acc", "Other", None).await.expect("uids");
    assert!(got.is_empty(), "another mailbox");
    l.set_next_run("acc", 1234).await.expect("next");
    let st = l.status(&["acc".into()]).await.expect("status");
    assert_eq!(st[0].next_run, Some(1234));
    l.ping().await.expect("ping");
}

both!(a_lease_is_held_by_one_process_at_a_time);
async fn a_lease_is_held_by_one_process_at_a_time(kind: Kind) {
    let (store, a) = ledger(kind).await;
    let b = store.open().await;
    let ttl = std::time::Duration::from_secs(60);
    assert!(matches!(
        a.take_lease("acc", "A", ttl).await.expect("take"),
        Lease::Held { .. }
    ));
    match b.take_lease("acc", "B", ttl).await.expect("take") {
        Lease::HeldBy { holder, until } => {
            assert_eq!(holder, "A");
            assert!(until > now() + 50, "{until}");
        }
        other => panic!("B got {other:?}"),
    }
    assert!(
        matches!(
            a.take_lease("acc", "A", ttl).await.expect("renew"),
            Lease::Held { .. }
        ),
        "renewing is taking again"
    );
    b.release_lease("acc", "B").await.expect("not B's: no-op");
    assert!(matches!(
        b.take_lease("acc", "B", ttl).await.expect("take"),
        Lease::HeldBy { .. }
    ));
    a.release_lease("acc", "A").await.expect("release");
    assert!(matches!(
        b.take_lease("acc", "B", ttl).await.expect("take"),
        Lease::Held { .. }
    ));
    // An expired lease is taken over.
    let short = std::time::Duration::from_secs(1);
    assert!(matches!(
        a.take_lease("other", "A", short).await.expect("take"),
        Lease::Held { .. }
    ));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(matches!(
        b.take_lease("other", "B", ttl).await.expect("take over"),
        Lease::Held { .. }
    ));
}

/// Two handles on one PostgreSQL ledger, as two replicas have.
async fn two_replicas() -> (Store, Ledger, Ledger) {
    let (store, a) = ledger(Kind::Postgres).await;
    let b = store.open().await;
    (store, a, b)
}

#[tokio::test]
async fn postgres_a_replica_whose_lease_was_taken_over_cannot_write() {
    let (_s, a, b) = two_replicas().await;
    let short = std::time::Duration::from_secs(1);
    let ttl = std::time::Duration::from_secs(60);
    assert!(matches!(
        a.take_lease("acc", "A", short).await.expect("take"),
        Lease::Held { .. }
    ));
    a.start_run("acc").await.expect("start");
    a.record_intent("acc", &intent("u1"))
        .await
        .expect("A's intent");
    // A pauses (GC, partition) past its lease; B takes the account over.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(matches!(
        b.take_lease("acc", "B", ttl).await.expect("take over"),
        Lease::Held { .. }
    ));
    b.start_run("acc").await.expect("start");
    // A wakes up: neither its intent nor its result commits.
    let e = a
        .record_intent("acc", &intent("u2"))
        .await
        .expect_err("A's lease is gone");
    let lost = e.downcast_ref::<LeaseLost>().expect("a LeaseLost");
    assert_eq!((lost.holder.as_str(), lost.ours), ("B", 1));
    assert_eq!(lost.generation, 2);
    a.record_appended("acc", "u1", None, Some(1))
        .await
        .expect_err("A's result is fenced too");
    a.record_deleted("acc", &["u1".into()])
        .await
        .expect_err("and its deletions");
    // Its renewal does not take the lease back, even once B released it.
    assert!(matches!(
        a.take_lease("acc", "A", ttl).await.expect("renew"),
        Lease::HeldBy { holder, .. } if holder == "B"
    ));
    b.record_intent("acc", &intent("u2"))
        .await
        .expect("B writes");
    b.finish_run("acc", None).await.expect("finish");
    b.release_lease("acc", "B").await.expect("release");
    assert!(matches!(
        a.take_lease("acc", "A", ttl).await.expect("renew"),
        Lease::HeldBy { .. }
    ));
    a.record_intent("acc", &intent("u3"))
        .await
        .expect_err("still fenced");
    let rows = a.messages("acc").await.expect("rows");
    assert_eq!(rows["u1"].state, State::Appending, "left for B's lookup");
    assert!(!rows.contains_key("u3"));
    // A's pass ends; a new pass of A starts with a new generation.
    a.release_lease("acc", "A").await.expect("release");
    assert!(matches!(
        a.take_lease("acc", "A", ttl).await.expect("take"),
        Lease::Held { .. }
    ));
    a.record_intent("acc", &intent("u3"))
        .await
        .expect("writes again");
    let passes = a.passes("acc").await.expect("passes");
    let seen: Vec<(&str, i64, bool)> = passes
        .iter()
        .map(|p| (p.holder.as_str(), p.generation, p.ended_us.is_some()))
        .collect();
    assert_eq!(seen, [("A", 1, true), ("B", 2, true)]);
    assert!(passes[1].started_us >= passes[0].started_us);
}

#[tokio::test]
async fn postgres_no_intent_is_written_on_a_lease_near_its_end() {
    let (_s, a, _b) = two_replicas().await;
    assert!(matches!(
        a.take_lease("acc", "A", std::time::Duration::from_secs(4))
            .await
            .expect("take"),
        Lease::Held { .. }
    ));
    a.record_intent("acc", &intent("u1")).await.expect("fresh");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let e = a
        .record_intent("acc", &intent("u2"))
        .await
        .expect_err("under half the TTL left");
    assert!(format!("{e:#}").contains("left"), "{e:#}");
    a.record_appended("acc", "u1", None, None)
        .await
        .expect("a result still commits");
}

#[tokio::test]
async fn postgres_a_lease_being_claimed_is_skipped_not_waited_for() {
    let (store, a, _b) = two_replicas().await;
    let Store::Db(db) = &store else {
        unreachable!()
    };
    assert!(matches!(
        a.take_lease("acc", "A", std::time::Duration::from_secs(60))
            .await
            .expect("take"),
        Lease::Held { .. }
    ));
    a.release_lease("acc", "A").await.expect("release");
    // Another replica is in the middle of claiming it (holds the row lock).
    use sqlx::Connection as _;
    let mut other = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM leases WHERE account = 'acc' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .expect("lock");
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        a.take_lease("acc", "A", std::time::Duration::from_secs(60)),
    )
    .await
    .expect("SKIP LOCKED: no waiting")
    .expect("take");
    assert!(matches!(got, Lease::HeldBy { .. }), "{got:?}");
    tx.rollback().await.expect("rollback");
    assert!(matches!(
        a.take_lease("acc", "A", std::time::Duration::from_secs(60))
            .await
            .expect("take"),
        Lease::Held { .. }
    ));
}

#[path = "fleet_tests.rs"]
mod fleet;
