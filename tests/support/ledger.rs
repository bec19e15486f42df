//! A ledger in a given state, through the ledger's own API: tests never
//! write SQL into it (the schema is the ledger's business, and a test that
//! writes rows by hand would pass against a ledger that could not have
//! them).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;

use popferry::ledger::{Intent, Ledger, MessageRow};

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Every row of `account`, by UIDL.
pub fn rows(ledger: &Path, account: &str) -> HashMap<String, MessageRow> {
    block_on(async {
        let l = Ledger::open(ledger).await.expect("open the ledger");
        let rows = l.messages(account).await.expect("read the ledger");
        l.close().await;
        rows
    })
}

/// Makes every copied message of `account` look as if the process had died
/// between its APPEND and the record of the server's OK: the intent is
/// recorded again (for `mailbox`), exactly as a pass does before an APPEND,
/// so the row is `appending` with the message's size, SHA-256 and
/// Message-ID. Returns how many rows it changed (at least one, or it panics).
pub fn unresolve_all(ledger: &Path, account: &str, mailbox: &str) -> usize {
    block_on(async {
        let l = Ledger::open(ledger).await.expect("open the ledger");
        let rows = l.messages(account).await.expect("read the ledger");
        let intents: Vec<Intent<'_>> = rows
            .values()
            .filter_map(|r| {
                Some(Intent {
                    uidl: &r.uidl,
                    uidl_derived: r.uidl_derived,
                    size: r.size,
                    listed_size: r.listed_size.unwrap_or(r.size),
                    sha256: r.sha256.as_deref()?,
                    message_id: r.message_id.as_deref(),
                    message_date: r.message_date,
                    mailbox,
                })
            })
            .collect();
        assert!(!intents.is_empty(), "no copied message to unresolve");
        l.record_intents(account, &intents)
            .await
            .expect("record the intents");
        l.close().await;
        intents.len()
    })
}

/// Takes `account`'s lease for `holder` (as another popferry process
/// would) for `ttl`; true if it was free.
pub fn hold(ledger: &Path, account: &str, holder: &str, ttl: std::time::Duration) -> bool {
    block_on(async {
        let l = Ledger::open(ledger).await.expect("open the ledger");
        let got = l
            .take_lease(account, holder, ttl)
            .await
            .expect("take the lease");
        l.close().await;
        matches!(got, popferry::ledger::Lease::Held { .. })
    })
}
