//! The ledger: remembers, per account and POP3 UIDL, what happened to each
//! message. It is what makes "exactly once" and "nothing lost" possible
//! across runs, crashes and restarts.
//!
//! Why it is shaped so:
//! - [`Ledger`] is the interface the rest of the program uses; a backend
//!   sits behind it (SQLite today, in [`sqlite`]; a PostgreSQL backend for
//!   replicas is to sit beside it with the same calls and guarantees).
//!   Only backends contain SQL; everyone else sees typed calls.
//! - A call that returned is durable. The sync engine relies on that: the
//!   intent row is on disk before an APPEND is sent, and the `appended` row
//!   is on disk before a DELE. Calls that take a slice write it in one
//!   transaction (one fsync).
//! - Queries are checked at run time (not `query!`), so `cargo build` needs
//!   no database; the tests cover every query.
//! - Migrations are embedded (`sqlx::migrate!`) and only move forward.

mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

pub use sqlite::SqliteLedger;

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Appending,
    Pending,
    Appended,
    Deleted,
    Skipped,
    Rejected,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Appending => "appending",
            State::Pending => "pending",
            State::Appended => "appended",
            State::Deleted => "deleted",
            State::Skipped => "skipped",
            State::Rejected => "rejected",
        }
    }
}

impl FromStr for State {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<State> {
        Ok(match s {
            "appending" => State::Appending,
            "pending" => State::Pending,
            "appended" => State::Appended,
            "deleted" => State::Deleted,
            "skipped" => State::Skipped,
            "rejected" => State::Rejected,
            other => anyhow::bail!("unknown ledger state {other:?}"),
        })
    }
}

/// What the ledger knows of one message.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub uidl: String,
    /// The UIDL was derived from the header section (no UIDL on the server).
    pub uidl_derived: bool,
    pub state: State,
    pub size: u64,
    /// What LIST said when the row was written (unknown on old rows).
    pub listed_size: Option<u64>,
    pub sha256: Option<String>,
    pub message_id: Option<String>,
    pub message_date: Option<i64>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub appended_at: Option<i64>,
}

/// What a pass needs to know of one row ([`Ledger::known`]): a small copy,
/// as a pass holds one per listed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub state: State,
    /// Bytes as appended (or as seen, for a skipped message).
    pub size: u64,
    /// What LIST said when the row was written (unknown on old rows).
    pub listed_size: Option<u64>,
    /// The row has the message's SHA-256 (an intent was written).
    pub digest: bool,
    pub message_date: Option<i64>,
    pub appended_at: Option<i64>,
}

/// The answer to [`Ledger::known`].
#[derive(Debug, Clone, Default)]
pub struct KnownRows {
    /// By ledger key, the rows of the listed UIDLs.
    pub rows: HashMap<String, Known>,
    /// Keys of the other rows that are still `appended`.
    pub unlisted_appended: Vec<String>,
    /// How many rows the account has in all.
    pub total: u64,
}

/// What is about to be appended: written as the intent.
#[derive(Debug, Clone)]
pub struct Intent<'a> {
    pub uidl: &'a str,
    pub uidl_derived: bool,
    pub size: u64,
    /// What LIST said (guarantee 8 compares it on later passes).
    pub listed_size: u64,
    pub sha256: &'a str,
    pub message_id: Option<&'a str>,
    pub message_date: Option<i64>,
    pub mailbox: &'a str,
}

/// The server's OK for one APPEND (or a copy found in the target), with
/// its APPENDUID when the server gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOk {
    pub uidl: String,
    pub uidvalidity: Option<u32>,
    pub uid: Option<u32>,
}

/// Whether a failed attempt counts towards `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The message's own fault (refused, too large): it counts.
    Counts,
    /// Not the message's fault (over quota, mailbox gone, connection lost):
    /// retried later, unpenalised.
    Free,
}

/// The answer to [`Ledger::take_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This process holds the account until then (unix seconds) unless it
    /// renews the lease.
    Held { until: i64 },
    /// Another process holds it, until then unless renewed.
    HeldBy { holder: String, until: i64 },
}

/// Per-account figures for `status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AccountStatus {
    pub account: String,
    pub copied: u64,
    pub deleted: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub pending: u64,
    pub unresolved: u64,
    pub last_run: Option<i64>,
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_run: Option<i64>,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The ledger the program uses: a cheap handle (clone it freely) on one
/// backend.
#[derive(Clone, Debug)]
pub struct Ledger {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteLedger),
}

/// Runs `$call` on whichever backend `$self` has.
macro_rules! on_backend {
    ($self:ident, $l:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($l) => $call,
        }
    };
}

impl Ledger {
    /// Opens (creating it and its folders if missing) and migrates the
    /// SQLite ledger at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Ledger> {
        Ok(Ledger {
            backend: Backend::Sqlite(SqliteLedger::open(path).await?),
        })
    }

    /// Checks that the ledger answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        on_backend!(self, l => l.ping().await)
    }

    pub async fn close(&self) {
        on_backend!(self, l => l.close().await)
    }

    /// Every row of one account, by UIDL.
    pub async fn messages(&self, account: &str) -> anyhow::Result<HashMap<String, MessageRow>> {
        on_backend!(self, l => l.messages(account).await)
    }

    /// What a pass needs of the rows whose UIDL is `listed`, and the keys
    /// of the other rows still `appended` (their message left the server).
    /// Memory follows the listing, not the account's history.
    pub async fn known(&self, account: &str, listed: &HashSet<&str>) -> anyhow::Result<KnownRows> {
        on_backend!(self, l => l.known(account, listed).await)
    }

    /// Whether any row of `account` is keyed by a UIDL the server gave (not
    /// one derived from headers): one query, not the account's history.
    pub async fn has_server_uidls(&self, account: &str) -> anyhow::Result<bool> {
        on_backend!(self, l => l.has_server_uidls(account).await)
    }

    /// Records the intent to append, durably, before the APPEND is sent.
    pub async fn record_intent(&self, account: &str, i: &Intent<'_>) -> anyhow::Result<()> {
        self.record_intents(account, std::slice::from_ref(i)).await
    }

    /// Records the intents of several messages at once, before any of their
    /// APPENDs is sent.
    pub async fn record_intents(&self, account: &str, i: &[Intent<'_>]) -> anyhow::Result<()> {
        on_backend!(self, l => l.record_intents(account, i).await)
    }

    /// Records the server's OK for several APPENDs at once.
    pub async fn record_appended_many(
        &self,
        account: &str,
        done: &[AppendOk],
    ) -> anyhow::Result<()> {
        on_backend!(self, l => l.record_appended_many(account, done).await)
    }

    /// Records the server's OK for an APPEND (or a copy found in the target).
    pub async fn record_appended(
        &self,
        account: &str,
        uidl: &str,
        uidvalidity: Option<u32>,
        uid: Option<u32>,
    ) -> anyhow::Result<()> {
        on_backend!(self, l => l.record_appended(account, uidl, uidvalidity, uid).await)
    }

    /// The target UIDs the ledger already gives to messages of `account` in
    /// `mailbox` (under `uidvalidity` when both are known): a lookup must
    /// not settle another message with one of them.
    pub async fn claimed_uids(
        &self,
        account: &str,
        mailbox: &str,
        uidvalidity: Option<u32>,
    ) -> anyhow::Result<HashSet<u32>> {
        on_backend!(self, l => l.claimed_uids(account, mailbox, uidvalidity).await)
    }

    /// Records that an APPEND did not happen; returns the new state
    /// (`pending`, or `rejected` once `max_attempts` counted attempts are
    /// used up).
    pub async fn record_failure(
        &self,
        account: &str,
        uidl: &str,
        error: &str,
        attempt: Attempt,
        max_attempts: u32,
    ) -> anyhow::Result<State> {
        on_backend!(self, l => l.record_failure(account, uidl, error, attempt, max_attempts).await)
    }

    /// Records that the server refused RETR of a message (counted like a
    /// refused APPEND; an unresolved intent stays unresolved). Returns the
    /// new state.
    pub async fn record_retr_failure(
        &self,
        account: &str,
        uidl: &str,
        size: u64,
        error: &str,
        max_attempts: u32,
    ) -> anyhow::Result<State> {
        on_backend!(self, l => l.record_retr_failure(account, uidl, size, error, max_attempts).await)
    }

    /// Records a message skipped for its size (left on the server): `size`
    /// is the size it was seen with, `listed_size` what LIST said.
    pub async fn record_skipped(
        &self,
        account: &str,
        uidl: &str,
        size: u64,
        listed_size: u64,
        reason: &str,
    ) -> anyhow::Result<()> {
        on_backend!(self, l => l.record_skipped(account, uidl, size, listed_size, reason).await)
    }

    /// Records that QUIT committed the DELE of these (`appended`) messages.
    pub async fn record_deleted(&self, account: &str, uidls: &[String]) -> anyhow::Result<()> {
        on_backend!(self, l => l.record_deleted(account, uidls).await)
    }

    /// Whether the account is recovering from a lost ledger.
    pub async fn is_recovering(&self, account: &str) -> anyhow::Result<bool> {
        on_backend!(self, l => l.is_recovering(account).await)
    }

    /// Starts or ends recovery for an account, durably.
    pub async fn set_recovering(&self, account: &str, on: bool) -> anyhow::Result<()> {
        on_backend!(self, l => l.set_recovering(account, on).await)
    }

    /// Marks the start of a pass.
    pub async fn start_run(&self, account: &str) -> anyhow::Result<()> {
        on_backend!(self, l => l.start_run(account).await)
    }

    /// Marks the end of a pass: `None` for success, or the error.
    pub async fn finish_run(&self, account: &str, error: Option<&str>) -> anyhow::Result<()> {
        on_backend!(self, l => l.finish_run(account, error).await)
    }

    /// Records when the daemon will next run an account.
    pub async fn set_next_run(&self, account: &str, at: i64) -> anyhow::Result<()> {
        on_backend!(self, l => l.set_next_run(account, at).await)
    }

    /// Takes (or renews) the lease on `account` for `holder` for `ttl`,
    /// unless another holder's lease is still running (guarantee 9).
    pub async fn take_lease(
        &self,
        account: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> anyhow::Result<Lease> {
        on_backend!(self, l => l.take_lease(account, holder, ttl).await)
    }

    /// Gives the lease on `account` back, if `holder` still has it.
    pub async fn release_lease(&self, account: &str, holder: &str) -> anyhow::Result<()> {
        on_backend!(self, l => l.release_lease(account, holder).await)
    }

    /// Figures for `status`, for the given accounts (in that order) plus any
    /// the ledger knows that are no longer configured.
    pub async fn status(&self, accounts: &[String]) -> anyhow::Result<Vec<AccountStatus>> {
        on_backend!(self, l => l.status(accounts).await)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
