//! A ledger in a given state, through the ledger's own API: tests never
//! write SQL into it (the schema is the ledger's business, and a test that
//! writes rows by hand would pass against a ledger that could not have
//! them). Either backend: a SQLite file or a PostgreSQL database
//! ([`LedgerAt`]); [`Backend`] and [`both_backends!`] run one test on each.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use popferry::ledger::{Intent, Ledger, MessageRow, PassRecord};

use super::ConfigBuilder;
use super::postgres::PgDatabase;

/// Where a ledger is.
#[derive(Clone, Debug)]
pub enum LedgerAt {
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl From<&Path> for LedgerAt {
    fn from(p: &Path) -> LedgerAt {
        LedgerAt::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for LedgerAt {
    fn from(p: &PathBuf) -> LedgerAt {
        LedgerAt::Sqlite(p.clone())
    }
}

impl From<PathBuf> for LedgerAt {
    fn from(p: PathBuf) -> LedgerAt {
        LedgerAt::Sqlite(p)
    }
}

impl From<&LedgerAt> for LedgerAt {
    fn from(l: &LedgerAt) -> LedgerAt {
        l.clone()
    }
}

/// Which ledger backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A configuration on its backend; keeps the PostgreSQL database alive.
pub struct OnBackend {
    pub builder: ConfigBuilder,
    pub db: Option<PgDatabase>,
}

impl Backend {
    /// `b` with its ledger on this backend (a fresh database for
    /// PostgreSQL).
    pub fn apply(self, b: ConfigBuilder) -> OnBackend {
        match self {
            Backend::Sqlite => OnBackend {
                builder: b,
                db: None,
            },
            Backend::Postgres => {
                let db = super::postgres::database();
                OnBackend {
                    builder: b.postgres(&db.url),
                    db: Some(db),
                }
            }
        }
    }
}

/// One `#[test]` per backend for the case `fn $name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::support::ledger::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name(super::support::ledger::Backend::Postgres)
            }
        }
    };
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Opens the ledger (as a popferry process would).
pub async fn open(at: &LedgerAt) -> Ledger {
    match at {
        LedgerAt::Sqlite(p) => Ledger::open(p).await.expect("open the ledger"),
        LedgerAt::Postgres(url) => Ledger::connect(&secrecy::SecretString::from(url.as_str()))
            .await
            .expect("connect to the ledger"),
    }
}

/// Every row of `account`, by UIDL.
pub fn rows(ledger: impl Into<LedgerAt>, account: &str) -> HashMap<String, MessageRow> {
    let at = ledger.into();
    block_on(async {
        let l = open(&at).await;
        let rows = l.messages(account).await.expect("read the ledger");
        l.close().await;
        rows
    })
}

/// The passes recorded for `account` (PostgreSQL only; empty on SQLite).
pub fn passes(ledger: impl Into<LedgerAt>, account: &str) -> Vec<PassRecord> {
    let at = ledger.into();
    block_on(async {
        let l = open(&at).await;
        let p = l.passes(account).await.expect("read the ledger");
        l.close().await;
        p
    })
}

/// Makes every copied message of `account` look as if the process had died
/// between its APPEND and the record of the server's OK: the intent is
/// recorded again (for `mailbox`), exactly as a pass does before an APPEND,
/// so the row is `appending` with the message's size, SHA-256 and
/// Message-ID. Returns how many rows it changed (at least one, or it panics).
pub fn unresolve_all(ledger: impl Into<LedgerAt>, account: &str, mailbox: &str) -> usize {
    let at = ledger.into();
    block_on(async {
        let l = open(&at).await;
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
                    header_sha256: r.header_sha256.as_deref(),
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
pub fn hold(
    ledger: impl Into<LedgerAt>,
    account: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> bool {
    let at = ledger.into();
    block_on(async {
        let l = open(&at).await;
        let got = l
            .take_lease(account, holder, ttl)
            .await
            .expect("take the lease");
        l.close().await;
        matches!(got, popferry::ledger::Lease::Held { .. })
    })
}
