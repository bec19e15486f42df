//! The ledger's calls against a real SQLite file.

use super::*;

async fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("sub/ledger.db"))
        .await
        .expect("open");
    (dir, l)
}

fn intent(uidl: &str) -> Intent<'_> {
    Intent {
        uidl,
        uidl_derived: false,
        size: 10,
        listed_size: 10,
        sha256: "ab",
        message_id: Some("<a@b>"),
        message_date: Some(1),
        mailbox: "INBOX",
    }
}

#[tokio::test]
async fn state_machine_and_status() {
    let (_d, l) = ledger().await;
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

#[tokio::test]
async fn batches_record_intents_and_results() {
    let (_d, l) = ledger().await;
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

#[tokio::test]
async fn recovery_flag_and_retr_failures() {
    let (_d, l) = ledger().await;
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

#[tokio::test]
async fn reopening_keeps_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("l.db");
    let l = Ledger::open(&path).await.expect("open");
    l.record_intent("a", &intent("x")).await.expect("intent");
    l.close().await;
    let l = Ledger::open(&path).await.expect("reopen");
    assert_eq!(l.messages("a").await.expect("rows").len(), 1);
}

#[tokio::test]
async fn known_reads_the_listed_uidls_and_counts_the_rest() {
    let (_d, l) = ledger().await;
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

#[tokio::test]
async fn server_uidls_are_told_from_derived_ones() {
    let (_d, l) = ledger().await;
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
