//! The ledger: remembers, per account and POP3 UIDL, what happened to each
//! message. It is what makes "exactly once" and "nothing lost" possible
//! across runs, crashes and restarts.
//!
//! Why it is shaped so:
//! - [`Ledger`] is the interface the rest of the program uses; a backend
//!   sits behind it: SQLite ([`sqlite`]), the embedded default, or
//!   PostgreSQL ([`postgres`]) for replicas sharing one ledger, with the
//!   same calls, states and guarantees.
//!   Only backends contain SQL; everyone else sees typed calls.
//! - A call that returned is durable. The sync engine relies on that: the
//!   intent row is on disk before an APPEND is sent, and the `appended` row
//!   is on disk before a DELE. Calls that take a slice write it in one
//!   transaction (one fsync).
//! - Queries are checked at run time (not `query!`), so `cargo build` needs
//!   no database; the tests cover every query.
//! - Migrations are embedded (`sqlx::migrate!`) and only move forward.

#[macro_use]
mod imported;
mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

pub use postgres::{PostgresLedger, redact_url};
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
    pub header_sha256: Option<String>,
    /// See [`Known::superseded`].
    pub superseded: bool,
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
    /// The server now lists another message under this row's UIDL (and
    /// LIST size): the row keeps the copy's history, and the message listed
    /// now gets a key of its own (guarantee 8).
    pub superseded: bool,
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

/// What `verify` needs of one row ([`Ledger::audit_rows`]): where its copy
/// should be in the target and what it is known by there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The ledger key (the UIDL, or `"UIDL SIZE"`; see `sync::plan`).
    pub key: String,
    pub state: State,
    /// Bytes as appended (or as seen, for a skipped message).
    pub size: u64,
    /// SHA-256 (hex) of the bytes as appended, once an intent was written.
    pub sha256: Option<String>,
    pub message_id: Option<String>,
    /// The target mailbox of the intent, and the copy's UID there when the
    /// server gave one (APPENDUID, or found by a lookup).
    pub mailbox: Option<String>,
    pub uidvalidity: Option<u32>,
    pub uid: Option<u32>,
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
    /// Of the header section (guarantee 8: checked before a later DELE).
    pub header_sha256: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub message_date: Option<i64>,
    pub mailbox: &'a str,
}

/// What a row knows its copied message by (either may be unknown on rows
/// older than the digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 (hex) of the bytes as appended.
    pub sha256: Option<String>,
    /// SHA-256 (hex) of their header section.
    pub header_sha256: Option<String>,
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
    Held {
        until: i64,
        /// Set when this claim took the account over from another holder
        /// whose lease expired without being given back (a replica that
        /// died or was cut off): that holder.
        took_over: Option<String>,
    },
    /// Another process holds it, until then unless renewed.
    HeldBy { holder: String, until: i64 },
}

/// A write of a pass refused because the account's lease is no longer the
/// one the pass took: another process took it over (guarantee 9). The pass
/// stops; nothing more of it is written or appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the account's lease was taken over (now generation {generation}, held by {holder:?}; this pass had generation {ours}): stopping before anything more is appended"
)]
pub struct LeaseLost {
    pub holder: String,
    pub generation: i64,
    pub ours: i64,
}

/// One pass as the ledger recorded it (PostgreSQL only): who ran it, under
/// which lease generation, and when (microseconds, the database's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassRecord {
    pub holder: String,
    pub generation: i64,
    pub started_us: i64,
    pub ended_us: Option<i64>,
    pub error: Option<String>,
}

/// An account kept in the ledger (`popferry accounts import`): what its
/// CSV line gave; `config::db_accounts` makes it an account with the
/// file's `[account_template]`. Passwords are references (`env:NAME`,
/// `file:/path`, `command:CMD`), never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedAccount {
    pub name: String,
    pub source_host: String,
    pub source_username: String,
    pub source_password: String,
    pub target_host: String,
    pub target_username: String,
    pub target_password: String,
    pub mailbox: Option<String>,
    /// `[accounts.policy] delete`.
    pub delete: Option<String>,
}

/// What [`Ledger::import_accounts`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub added: u64,
    pub updated: u64,
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
    /// Who holds the account's lease now (a replica of `popferry run`, or a
    /// `popferry sync`: "host pid N tag"), while the lease runs.
    pub held_by: Option<String>,
    /// When that lease expires unless renewed (unix seconds).
    pub lease_until: Option<i64>,
    /// An upload budget stopped appending until then (unix seconds), and
    /// why (the pass's words). May lie in the past: compare with [`now`].
    pub paused_until: Option<i64>,
    pub paused_reason: Option<String>,
}

/// `status`'s answer from the rows either backend reads: message counts
/// (`account`, `state`, `n`), account rows (`name` and the `accounts`
/// columns), and leases still running (`account`, `holder`, `expires_at`);
/// the given accounts first, in that order, then any others the ledger
/// knows. One decoding for both backends, so their answers cannot drift.
pub(crate) fn status_from_rows<R>(
    counts: Vec<R>,
    account_rows: Vec<R>,
    leases: Vec<R>,
    accounts: &[String],
) -> anyhow::Result<Vec<AccountStatus>>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut by_name: std::collections::BTreeMap<String, AccountStatus> = Default::default();
    fn at(
        by_name: &mut std::collections::BTreeMap<String, AccountStatus>,
        name: String,
    ) -> &mut AccountStatus {
        by_name
            .entry(name.clone())
            .or_insert_with(|| AccountStatus {
                account: name,
                ..Default::default()
            })
    }
    for r in counts {
        let s = at(&mut by_name, r.try_get("account")?);
        let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
        match r.try_get::<String, _>("state")?.parse()? {
            State::Appended => s.copied += n,
            State::Deleted => {
                s.copied += n;
                s.deleted += n;
            }
            State::Skipped => s.skipped += n,
            State::Rejected => s.rejected += n,
            State::Pending => s.pending += n,
            State::Appending => s.unresolved += n,
        }
    }
    for r in account_rows {
        let s = at(&mut by_name, r.try_get("name")?);
        s.last_run = r.try_get("last_run_at")?;
        s.last_success = r.try_get("last_success_at")?;
        s.last_error = r.try_get("last_error")?;
        s.consecutive_failures =
            u32::try_from(r.try_get::<i64, _>("consecutive_failures")?).unwrap_or(0);
        s.next_run = r.try_get("next_run_at")?;
        s.paused_until = r.try_get("paused_until")?;
        s.paused_reason = r.try_get("paused_reason")?;
    }
    for r in leases {
        let s = at(&mut by_name, r.try_get("account")?);
        s.held_by = Some(r.try_get("holder")?);
        s.lease_until = Some(r.try_get("expires_at")?);
    }
    let mut out = Vec::new();
    for name in accounts {
        out.push(by_name.remove(name).unwrap_or_else(|| AccountStatus {
            account: name.clone(),
            ..Default::default()
        }));
    }
    out.extend(by_name.into_values());
    Ok(out)
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
    /// How long a lease lasts unless renewed (`[ledger] lease_ttl`).
    lease_ttl: std::time::Duration,
}

/// The lease's time to live unless the configuration says otherwise.
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteLedger),
    Postgres(PostgresLedger),
}

/// Runs `$call` on whichever backend `$self` has.
macro_rules! on_backend {
    ($self:ident, $l:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($l) => $call,
            Backend::Postgres($l) => $call,
        }
    };
}

impl Ledger {
    /// Opens (creating it and its folders if missing) and migrates the
    /// SQLite ledger at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Ledger> {
        Ok(Ledger {
            backend: Backend::Sqlite(SqliteLedger::open(path).await?),
            lease_ttl: DEFAULT_LEASE_TTL,
        })
    }

    /// Connects to the PostgreSQL ledger at `url` and migrates it. Errors
    /// show the URL without its password.
    pub async fn connect(url: &secrecy::SecretString) -> anyhow::Result<Ledger> {
        Ok(Ledger {
            backend: Backend::Postgres(PostgresLedger::connect(url).await?),
            lease_ttl: DEFAULT_LEASE_TTL,
        })
    }

    /// The same ledger with leases of this time to live.
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> Ledger {
        self.lease_ttl = ttl;
        self
    }

    /// How long a lease lasts unless renewed.
    pub fn lease_ttl(&self) -> std::time::Duration {
        self.lease_ttl
    }

    /// Which backend this is, for messages: "SQLite" or "PostgreSQL".
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
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

    /// How many of `keys` (ledger keys) have a row in one of `states`. The
    /// rows are streamed and only counted, so a check over a whole listing
    /// (the end of a recovery) holds no row.
    pub async fn count_in_states(
        &self,
        account: &str,
        keys: &HashSet<&str>,
        states: &[State],
    ) -> anyhow::Result<u64> {
        on_backend!(self, l => l.count_in_states(account, keys, states).await)
    }

    /// Whether any row of `account` is keyed by a UIDL the server gave (not
    /// one derived from headers): one query, not the account's history.
    pub async fn has_server_uidls(&self, account: &str) -> anyhow::Result<bool> {
        on_backend!(self, l => l.has_server_uidls(account).await)
    }

    /// Whether any row of `account` is keyed by an ID derived from headers.
    pub async fn has_derived_uidls(&self, account: &str) -> anyhow::Result<bool> {
        on_backend!(self, l => l.has_derived_uidls(account).await)
    }

    /// Renames rows keyed by derived IDs to the server's real UIDLs
    /// (`(derived, real)` pairs), in one transaction; returns how many.
    pub async fn rekey_derived(
        &self,
        account: &str,
        pairs: &[(String, String)],
    ) -> anyhow::Result<u64> {
        on_backend!(self, l => l.rekey_derived(account, pairs).await)
    }

    /// What the row keyed `key` knows its copy by (guarantee 8: checked
    /// before a message not read in this session is deleted).
    pub async fn fingerprint(
        &self,
        account: &str,
        key: &str,
    ) -> anyhow::Result<Option<Fingerprint>> {
        on_backend!(self, l => l.fingerprint(account, key).await)
    }

    /// Marks the row keyed `key` superseded: the server now lists another
    /// message under its UIDL (and LIST size).
    pub async fn supersede(&self, account: &str, key: &str) -> anyhow::Result<()> {
        on_backend!(self, l => l.supersede(account, key).await)
    }

    /// Every row of one account, with what `verify` compares with the
    /// target (read only).
    pub async fn audit_rows(&self, account: &str) -> anyhow::Result<Vec<AuditRow>> {
        on_backend!(self, l => l.audit_rows(account).await)
    }

    /// Turns these `appended` (or `deleted`) rows back into unresolved
    /// intents (`appending`, UID forgotten), in one transaction: their copy
    /// is gone from the target, and the next pass looks for it there and
    /// appends it again only if it is not found (`verify --repair`). Rows
    /// in another state are left alone.
    pub async fn reopen(&self, account: &str, keys: &[String]) -> anyhow::Result<()> {
        on_backend!(self, l => l.reopen(account, keys).await)
    }

    /// Removes these rows, in one transaction: their message is neither on
    /// the POP3 server nor in the target (`verify --repair`).
    pub async fn forget(&self, account: &str, keys: &[String]) -> anyhow::Result<()> {
        on_backend!(self, l => l.forget(account, keys).await)
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

    /// Messages and bytes appended to `account` since `since` (unix
    /// seconds): what the upload budgets count.
    pub async fn appended_since(&self, account: &str, since: i64) -> anyhow::Result<(u64, u64)> {
        on_backend!(self, l => l.appended_since(account, since).await)
    }

    /// Records that an upload budget stopped appending until `until` (unix
    /// seconds), and why; `None` clears it.
    pub async fn set_paused(
        &self,
        account: &str,
        paused: Option<(i64, &str)>,
    ) -> anyhow::Result<()> {
        on_backend!(self, l => l.set_paused(account, paused).await)
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

    /// The passes recorded for `account`, oldest first. Only the PostgreSQL
    /// ledger records them (replicas); SQLite's answer is empty.
    pub async fn passes(&self, account: &str) -> anyhow::Result<Vec<PassRecord>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(l) => l.passes(account).await,
        }
    }

    /// Adds these accounts to the ledger, or replaces those of the same
    /// name, in one transaction.
    pub async fn import_accounts(&self, accounts: &[ImportedAccount]) -> anyhow::Result<Imported> {
        on_backend!(self, l => l.import_accounts(accounts).await)
    }

    /// The accounts kept in the ledger, by name.
    pub async fn imported_accounts(&self) -> anyhow::Result<Vec<ImportedAccount>> {
        on_backend!(self, l => l.imported_accounts().await)
    }

    /// Removes an account kept in the ledger (its messages' history stays);
    /// false if there was none of that name.
    pub async fn remove_imported_account(&self, name: &str) -> anyhow::Result<bool> {
        on_backend!(self, l => l.remove_imported_account(name).await)
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
