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
