//! The ledger's calls for fleets of accounts, on both backends: who holds
//! each account (for `status`), takeovers (for `/metrics`), and the
//! accounts kept in the ledger (`popferry accounts`).

use super::*;

use std::time::Duration;

both!(status_names_who_holds_each_account);
async fn status_names_who_holds_each_account(kind: Kind) {
    let (_s, l) = ledger(kind).await;
    let ttl = Duration::from_secs(60);
    assert!(matches!(
        l.take_lease("held", "replica A", ttl).await.expect("take"),
        Lease::Held { .. }
    ));
    l.start_run("free").await.expect("run");
    let st = l
        .status(&["held".into(), "free".into()])
        .await
        .expect("status");
    assert_eq!(st[0].held_by.as_deref(), Some("replica A"));
    assert!(st[0].lease_until.is_some_and(|t| t > now() + 50), "{st:?}");
    assert_eq!((st[1].held_by.as_deref(), st[1].lease_until), (None, None));

    l.release_lease("held", "replica A").await.expect("release");
    let st = l.status(&["held".into()]).await.expect("status");
    assert_eq!(st[0].held_by, None, "a released lease is held by nobody");
}

both!(a_claim_says_whose_unreleased_lease_it_took_over);
async fn a_claim_says_whose_unreleased_lease_it_took_over(kind: Kind) {
    let (store, a) = ledger(kind).await;
    let b = store.open().await;
    let short = Duration::from_secs(1);
    let ttl = Duration::from_secs(60);
    let took_over = |l: Lease| match l {
        Lease::Held { took_over, .. } => took_over,
        other => panic!("not held: {other:?}"),
    };
    assert_eq!(
        took_over(a.take_lease("dies", "A", short).await.expect("take")),
        None
    );
    assert_eq!(
        took_over(a.take_lease("dies", "A", short).await.expect("renew")),
        None
    );
    assert_eq!(
        took_over(a.take_lease("gives", "A", ttl).await.expect("take")),
        None
    );
    a.release_lease("gives", "A").await.expect("release");
    assert_eq!(
        took_over(b.take_lease("gives", "B", ttl).await.expect("take")),
        None,
        "a released lease is no takeover"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        took_over(b.take_lease("dies", "B", ttl).await.expect("take over")),
        Some("A".to_owned()),
        "an expired, unreleased lease is taken over"
    );
    assert_eq!(
        took_over(b.take_lease("dies", "B", ttl).await.expect("renew")),
        None,
        "renewing is no takeover"
    );
}

fn imported(name: &str, mailbox: Option<&str>) -> ImportedAccount {
    ImportedAccount {
        name: name.into(),
        source_host: "pop.example.net".into(),
        source_username: format!("{name}@example.net"),
        source_password: format!("env:{}_POP3", name.to_uppercase()),
        target_host: "imap.example.com".into(),
        target_username: format!("{name}@example.com"),
        target_password: "file:/run/secrets/imap".into(),
        mailbox: mailbox.map(str::to_owned),
        delete: None,
    }
}

both!(accounts_are_imported_listed_replaced_and_removed);
async fn accounts_are_imported_listed_replaced_and_removed(kind: Kind) {
    let (store, l) = ledger(kind).await;
    assert_eq!(l.imported_accounts().await.expect("list"), vec![]);
    let first = [imported("zed", None), imported("amy", Some("Old"))];
    let done = l.import_accounts(&first).await.expect("import");
    assert_eq!(
        done,
        Imported {
            added: 2,
            updated: 0
        }
    );
    let mut amy = imported("amy", Some("New"));
    amy.delete = Some("30d".into());
    let done = l
        .import_accounts(&[amy.clone(), imported("bob", None)])
        .await
        .expect("import again");
    assert_eq!(
        done,
        Imported {
            added: 1,
            updated: 1
        }
    );
    let other = store.open().await;
    let names: Vec<String> = other
        .imported_accounts()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["amy", "bob", "zed"], "by name, from another handle");
    assert_eq!(other.imported_accounts().await.expect("list")[0], amy);
    assert!(l.remove_imported_account("bob").await.expect("remove"));
    assert!(
        !l.remove_imported_account("bob")
            .await
            .expect("remove again")
    );
    assert_eq!(l.imported_accounts().await.expect("list").len(), 2);
}
