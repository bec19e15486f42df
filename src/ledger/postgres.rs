//! The PostgreSQL backend of the ledger: the same calls and states as
//! [`super::SqliteLedger`], for replicas of `popferry run` that share one
//! ledger (DESIGN.md, "The same ledger runs on PostgreSQL").
//!
//! What differs from SQLite, and why:
//! - Leases (`postgres_accounts.rs`) are claimed with `SELECT … FOR UPDATE
//!   SKIP LOCKED`, so replicas racing for an account never wait on each
//!   other, and carry a *generation* bumped at each takeover. This handle
//!   remembers the generation of each lease it holds (its *fence*), and every
//!   write of a pass on messages checks it in the same transaction: a
//!   replica whose lease was taken over (a long pause, a partition) fails
//!   the write of its next intent, so it never sends the APPEND after it
//!   (ARCHITECTURE.md, "Fencing"). Writes of an account this handle holds
//!   no lease on (tests, tools) are not fenced.
//! - Lease times use the database's clock, so replicas' clocks need not
//!   agree.
//! - Each pass is recorded in `passes` (holder, generation, start, end).
//!
//! A call that returned is committed (`synchronous_commit` is the server's;
//! its default waits for the WAL flush).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Row};

use super::{
    AppendOk, Attempt, AuditRow, Fingerprint, Intent, Known, KnownRows, LeaseLost, MessageRow,
    State, now,
};

#[path = "postgres_accounts.rs"]
mod accounts;
#[path = "postgres_imported.rs"]
mod imported;

/// The lease this handle holds on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fence {
    holder: String,
    generation: i64,
    /// The lease's time to live when taken: an intent is committed only
    /// while at least half of it is left.
    ttl: i64,
}

/// The ledger in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresLedger {
    pool: PgPool,
    fences: Arc<Mutex<HashMap<String, Fence>>>,
}

/// `postgres://user:password@host/db` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a PostgreSQL URL)".into();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            if user_info.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("{user}@{host}")
            }
        }
        None => authority.to_owned(),
    };
    // A password may also sit in the query string (`?password=…`).
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PostgresLedger {
    /// Connects to the database at `url` and migrates it (under sqlx's
    /// advisory lock, so replicas starting together take turns).
    pub async fn connect(url: &secrecy::SecretString) -> anyhow::Result<PostgresLedger> {
        use secrecy::ExposeSecret as _;
        let shown = redact_url(url.expose_secret());
        // sqlx's own parse error may quote the URL: it is replaced.
        let opts: PgConnectOptions = url.expose_secret().parse().map_err(|_| {
            anyhow::anyhow!("Cannot read the PostgreSQL URL {shown} (postgres://user@host/db)")
        })?;
        let opts = opts
            .application_name("popferry")
            .log_slow_statements(log::LevelFilter::Info, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|e| anyhow::anyhow!("{}", scrub(&e.to_string(), url.expose_secret())))
            .with_context(|| format!("Cannot connect to the ledger {shown}"))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .with_context(|| format!("Cannot migrate the ledger {shown}"))?;
        Ok(PostgresLedger {
            pool,
            fences: Arc::default(),
        })
    }

    fn fence_of(&self, account: &str) -> Option<Fence> {
        self.fences
            .lock()
            .ok()
            .and_then(|f| f.get(account).cloned())
    }

    /// Begins a transaction of a write on `account`'s messages, fenced
    /// ([`Self::fenced`]); a refused fence rolls it back at once, so that
    /// its lock on the lease row goes with it.
    async fn begin_fenced(
        &self,
        account: &str,
        for_intent: bool,
    ) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        if let Err(e) = self.fenced(&mut tx, account, for_intent).await {
            if let Err(r) = tx.rollback().await {
                tracing::warn!("Cannot roll back a refused ledger write: {r:#}");
            }
            return Err(e);
        }
        Ok(tx)
    }

    /// Checks, inside `tx`, that this handle still holds the lease it took
    /// on `account` (same holder, same generation), and locks the lease row
    /// against a takeover until `tx` ends. With `for_intent`, at least half
    /// the lease's time to live must be left too: an intent commits only
    /// when its APPEND will be sent well before the lease could expire.
    async fn fenced(
        &self,
        tx: &mut PgConnection,
        account: &str,
        for_intent: bool,
    ) -> anyhow::Result<()> {
        let Some(f) = self.fence_of(account) else {
            return Ok(());
        };
        let row = sqlx::query(
            "SELECT holder, generation, expires_at - extract(epoch FROM now())::BIGINT AS left_s
             FROM leases WHERE account = $1 FOR SHARE",
        )
        .bind(account)
        .fetch_optional(&mut *tx)
        .await
        .context("Cannot read the account's lease in the ledger")?;
        let (holder, generation, left): (String, i64, i64) = match row {
            Some(r) => (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
            None => (String::new(), 0, 0),
        };
        if holder != f.holder || generation != f.generation {
            return Err(LeaseLost {
                holder,
                generation,
                ours: f.generation,
            }
            .into());
        }
        if for_intent && left < f.ttl / 2 {
            anyhow::bail!(
                "the account's lease has {left} s left (less than half its time to live): \
                 not starting an APPEND that could outlive it"
            );
        }
        Ok(())
    }

    /// Checks that the ledger answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("The ledger does not answer")?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Every row of one account, by UIDL.
    pub async fn messages(&self, account: &str) -> anyhow::Result<HashMap<String, MessageRow>> {
        let rows = sqlx::query(
            "SELECT uidl, uidl_derived, state, size, listed_size, sha256, header_sha256, superseded, message_id, message_date, attempts, last_error, appended_at
             FROM messages WHERE account = $1",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let row = MessageRow {
                uidl: r.try_get("uidl")?,
                uidl_derived: r.try_get("uidl_derived")?,
                state: r.try_get::<String, _>("state")?.parse()?,
                size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                listed_size: r
                    .try_get::<Option<i64>, _>("listed_size")?
                    .map(|n| u64::try_from(n).unwrap_or(0)),
                sha256: r.try_get("sha256")?,
                header_sha256: r.try_get("header_sha256")?,
                superseded: r.try_get("superseded")?,
                message_id: r.try_get("message_id")?,
                message_date: r.try_get("message_date")?,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                last_error: r.try_get("last_error")?,
                appended_at: r.try_get("appended_at")?,
            };
            out.insert(row.uidl.clone(), row);
        }
        Ok(out)
    }

    /// What a pass needs of the rows whose UIDL (the key up to its first
    /// space) is `listed`, streamed; plus the keys of the other rows still
    /// `appended`.
    pub async fn known(&self, account: &str, listed: &HashSet<&str>) -> anyhow::Result<KnownRows> {
        let mut rows = sqlx::query(
            "SELECT uidl, state, size, listed_size, sha256 IS NOT NULL AS digest, message_date, appended_at, superseded
             FROM messages WHERE account = $1",
        )
        .bind(account)
        .fetch(&self.pool);
        let mut out = KnownRows::default();
        while let Some(r) = rows.try_next().await.context("Cannot read the ledger")? {
            out.total += 1;
            let key: String = r.try_get("uidl")?;
            let state: State = r.try_get::<String, _>("state")?.parse()?;
            let uidl = key.split(' ').next().unwrap_or_default();
            if !listed.contains(uidl) {
                if state == State::Appended {
                    out.unlisted_appended.push(key);
                }
                continue;
            }
            let size = |n: Option<i64>| n.map(|n| u64::try_from(n).unwrap_or(0));
            let known = Known {
                state,
                size: size(r.try_get("size")?).unwrap_or(0),
                listed_size: size(r.try_get("listed_size")?),
                digest: r.try_get("digest")?,
                message_date: r.try_get("message_date")?,
                appended_at: r.try_get("appended_at")?,
                superseded: r.try_get("superseded")?,
            };
            out.rows.insert(key, known);
        }
        Ok(out)
    }

    /// How many of `keys` have a row whose state is one of `states`,
    /// streamed: nothing is kept but the count.
    pub async fn count_in_states(
        &self,
        account: &str,
        keys: &HashSet<&str>,
        states: &[State],
    ) -> anyhow::Result<u64> {
        let mut rows = sqlx::query("SELECT uidl, state FROM messages WHERE account = $1")
            .bind(account)
            .fetch(&self.pool);
        let mut n = 0u64;
        while let Some(r) = rows.try_next().await.context("Cannot read the ledger")? {
            let key: &str = r.try_get("uidl")?;
            if !keys.contains(key) {
                continue;
            }
            let state: State = r.try_get::<&str, _>("state")?.parse()?;
            n += u64::from(states.contains(&state));
        }
        Ok(n)
    }

    /// Whether any row of `account` is keyed by a UIDL the server gave.
    pub async fn has_server_uidls(&self, account: &str) -> anyhow::Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account = $1 AND NOT uidl_derived) AS any",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        Ok(row.try_get("any")?)
    }

    /// Whether any row of `account` is keyed by an ID derived from headers.
    pub async fn has_derived_uidls(&self, account: &str) -> anyhow::Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account = $1 AND uidl_derived) AS any",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        Ok(row.try_get("any")?)
    }

    /// Renames rows keyed by derived IDs to the server's real UIDLs, in one
    /// transaction fenced by the account's lease; returns how many.
    pub async fn rekey_derived(
        &self,
        account: &str,
        pairs: &[(String, String)],
    ) -> anyhow::Result<u64> {
        let mut tx = self.begin_fenced(account, false).await?;
        let mut renamed = 0;
        for (derived, real) in pairs {
            let r = sqlx::query(
                "UPDATE messages SET uidl = $1, uidl_derived = FALSE, updated_at = $2
                 WHERE account = $3 AND uidl = $4 AND uidl_derived
                   AND NOT EXISTS (SELECT 1 FROM messages WHERE account = $3 AND uidl = $1)",
            )
            .bind(real)
            .bind(now())
            .bind(account)
            .bind(derived)
            .execute(&mut *tx)
            .await
            .context("Cannot write the ledger")?;
            renamed += r.rows_affected();
        }
        tx.commit().await.context("Cannot write the ledger")?;
        Ok(renamed)
    }

    /// What the row keyed `key` knows its copy by.
    pub async fn fingerprint(
        &self,
        account: &str,
        key: &str,
    ) -> anyhow::Result<Option<Fingerprint>> {
        let row = sqlx::query(
            "SELECT sha256, header_sha256 FROM messages WHERE account = $1 AND uidl = $2",
        )
        .bind(account)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        row.map(|r| {
            Ok(Fingerprint {
                sha256: r.try_get("sha256")?,
                header_sha256: r.try_get("header_sha256")?,
            })
        })
        .transpose()
    }

    /// Marks the row keyed `key` superseded, fenced by the account's lease.
    pub async fn supersede(&self, account: &str, key: &str) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(account, false).await?;
        sqlx::query(
            "UPDATE messages SET superseded = TRUE, updated_at = $1 WHERE account = $2 AND uidl = $3",
        )
        .bind(now())
        .bind(account)
        .bind(key)
        .execute(&mut *tx)
        .await
        .context("Cannot write the ledger")?;
        tx.commit().await.context("Cannot write the ledger")?;
        Ok(())
    }

    /// Every row of one account, with what `verify` compares with the
    /// target.
    pub async fn audit_rows(&self, account: &str) -> anyhow::Result<Vec<AuditRow>> {
        let mut rows = sqlx::query(
            "SELECT uidl, state, size, sha256, message_id, mailbox, uidvalidity, uid
             FROM messages WHERE account = $1 ORDER BY uidl COLLATE \"C\"",
        )
        .bind(account)
        .fetch(&self.pool);
        let mut out = Vec::new();
        let u32_of = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
        while let Some(r) = rows.try_next().await.context("Cannot read the ledger")? {
            out.push(AuditRow {
                key: r.try_get("uidl")?,
                state: r.try_get::<String, _>("state")?.parse()?,
                size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                sha256: r.try_get("sha256")?,
                message_id: r.try_get("message_id")?,
                mailbox: r.try_get("mailbox")?,
                uidvalidity: u32_of(r.try_get("uidvalidity")?),
                uid: u32_of(r.try_get("uid")?),
            });
        }
        Ok(out)
    }

    /// Turns `appended`/`deleted` rows back into unresolved intents, fenced
    /// by the account's lease.
    pub async fn reopen(&self, account: &str, keys: &[String]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_fenced(account, false).await?;
        sqlx::query(
            "UPDATE messages SET state = 'appending', uidvalidity = NULL, uid = NULL,
               deleted_at = NULL, updated_at = $1
             WHERE account = $2 AND uidl = ANY($3) AND state IN ('appended', 'deleted')",
        )
        .bind(now())
        .bind(account)
        .bind(keys)
        .execute(&mut *tx)
        .await
        .context("Cannot reopen rows in the ledger")?;
        tx.commit()
            .await
            .context("Cannot reopen rows in the ledger")?;
        Ok(())
    }

    /// Removes rows, fenced by the account's lease.
    pub async fn forget(&self, account: &str, keys: &[String]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_fenced(account, false).await?;
        sqlx::query("DELETE FROM messages WHERE account = $1 AND uidl = ANY($2)")
            .bind(account)
            .bind(keys)
            .execute(&mut *tx)
            .await
            .context("Cannot remove rows from the ledger")?;
        tx.commit()
            .await
            .context("Cannot remove rows from the ledger")?;
        Ok(())
    }

    /// Records the intents of several messages in one transaction, fenced
    /// by the account's lease, before any of their APPENDs is sent.
    pub async fn record_intents(
        &self,
        account: &str,
        intents: &[Intent<'_>],
    ) -> anyhow::Result<()> {
        if intents.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.begin_fenced(account, true).await?;
        for i in intents {
            sqlx::query(
                "INSERT INTO messages (account, uidl, uidl_derived, state, size, listed_size, sha256, message_id, message_date, mailbox, first_seen_at, updated_at, header_sha256)
                 VALUES ($1, $2, $3, 'appending', $4, $5, $6, $7, $8, $9, $10, $10, $11)
                 ON CONFLICT (account, uidl) DO UPDATE SET
                   state = 'appending', size = excluded.size, listed_size = excluded.listed_size,
                   sha256 = excluded.sha256, header_sha256 = excluded.header_sha256,
                   message_id = excluded.message_id, message_date = excluded.message_date,
                   mailbox = excluded.mailbox, updated_at = excluded.updated_at",
            )
            .bind(account)
            .bind(i.uidl)
            .bind(i.uidl_derived)
            .bind(i64::try_from(i.size).unwrap_or(i64::MAX))
            .bind(i64::try_from(i.listed_size).unwrap_or(i64::MAX))
            .bind(i.sha256)
            .bind(i.message_id)
            .bind(i.message_date)
            .bind(i.mailbox)
            .bind(t)
            .bind(i.header_sha256)
            .execute(&mut *tx)
            .await
            .context("Cannot record the intent to append in the ledger")?;
        }
        tx.commit()
            .await
            .context("Cannot record the intent to append in the ledger")?;
        Ok(())
    }

    /// Records the server's OK for several APPENDs in one transaction,
    /// fenced by the account's lease.
    pub async fn record_appended_many(
        &self,
        account: &str,
        done: &[AppendOk],
    ) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.begin_fenced(account, false).await?;
        for AppendOk {
            uidl,
            uidvalidity,
            uid,
        } in done
        {
            sqlx::query(
                "UPDATE messages SET state = 'appended', uidvalidity = $1, uid = $2, appended_at = $3,
                   last_error = NULL, updated_at = $3
                 WHERE account = $4 AND uidl = $5",
            )
            .bind(uidvalidity.map(i64::from))
            .bind(uid.map(i64::from))
            .bind(t)
            .bind(account)
            .bind(uidl)
            .execute(&mut *tx)
            .await
            .context("Cannot record an APPEND in the ledger")?;
        }
        tx.commit()
            .await
            .context("Cannot record an APPEND in the ledger")?;
        Ok(())
    }

    /// Records the server's OK for an APPEND (or a copy found in the target).
    pub async fn record_appended(
        &self,
        account: &str,
        uidl: &str,
        uidvalidity: Option<u32>,
        uid: Option<u32>,
    ) -> anyhow::Result<()> {
        let ok = AppendOk {
            uidl: uidl.to_owned(),
            uidvalidity,
            uid,
        };
        self.record_appended_many(account, std::slice::from_ref(&ok))
            .await
    }

    /// The target UIDs the ledger already gives to messages of `account` in
    /// `mailbox` (under `uidvalidity` when both are known).
    pub async fn claimed_uids(
        &self,
        account: &str,
        mailbox: &str,
        uidvalidity: Option<u32>,
    ) -> anyhow::Result<HashSet<u32>> {
        let rows = sqlx::query(
            "SELECT uid FROM messages
             WHERE account = $1 AND mailbox = $2 AND uid IS NOT NULL
               AND state IN ('appended', 'deleted')
               AND (uidvalidity IS NULL OR $3::BIGINT IS NULL OR uidvalidity = $3::BIGINT)",
        )
        .bind(account)
        .bind(mailbox)
        .bind(uidvalidity.map(i64::from))
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let mut out = HashSet::with_capacity(rows.len());
        for r in rows {
            if let Ok(uid) = u32::try_from(r.try_get::<i64, _>("uid")?) {
                out.insert(uid);
            }
        }
        Ok(out)
    }

    /// Records that an APPEND did not happen; returns the new state.
    pub async fn record_failure(
        &self,
        account: &str,
        uidl: &str,
        error: &str,
        attempt: Attempt,
        max_attempts: u32,
    ) -> anyhow::Result<State> {
        let t = now();
        let counts = i64::from(attempt == Attempt::Counts);
        let mut tx = self.begin_fenced(account, false).await?;
        let row = sqlx::query(
            "UPDATE messages SET
               attempts = attempts + $1,
               state = CASE WHEN attempts + $1 >= $2 THEN 'rejected' ELSE 'pending' END,
               last_error = $3, updated_at = $4
             WHERE account = $5 AND uidl = $6
             RETURNING state",
        )
        .bind(counts)
        .bind(i64::from(max_attempts))
        .bind(error)
        .bind(t)
        .bind(account)
        .bind(uidl)
        .fetch_optional(&mut *tx)
        .await
        .context("Cannot record a failed APPEND in the ledger")?;
        tx.commit()
            .await
            .context("Cannot record a failed APPEND in the ledger")?;
        match row {
            Some(r) => r.try_get::<String, _>("state")?.parse(),
            None => anyhow::bail!("No ledger row for {uidl} of {account}"),
        }
    }

    /// Records a message skipped for its size (left on the server).
    pub async fn record_skipped(
        &self,
        account: &str,
        uidl: &str,
        size: u64,
        listed_size: u64,
        reason: &str,
    ) -> anyhow::Result<()> {
        let t = now();
        let mut tx = self.begin_fenced(account, false).await?;
        sqlx::query(
            "INSERT INTO messages (account, uidl, state, size, listed_size, last_error, first_seen_at, updated_at)
             VALUES ($1, $2, 'skipped', $3, $4, $5, $6, $6)
             ON CONFLICT (account, uidl) DO UPDATE SET state = 'skipped', size = excluded.size,
               listed_size = excluded.listed_size,
               last_error = excluded.last_error, updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(uidl)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(i64::try_from(listed_size).unwrap_or(i64::MAX))
        .bind(reason)
        .bind(t)
        .execute(&mut *tx)
        .await
        .context("Cannot record a skipped message in the ledger")?;
        tx.commit()
            .await
            .context("Cannot record a skipped message in the ledger")?;
        Ok(())
    }

    /// Records that QUIT committed the DELE of these messages.
    pub async fn record_deleted(&self, account: &str, uidls: &[String]) -> anyhow::Result<()> {
        let t = now();
        let mut tx = self.begin_fenced(account, false).await?;
        sqlx::query(
            "UPDATE messages SET state = 'deleted', deleted_at = $1, updated_at = $1
             WHERE account = $2 AND uidl = ANY($3) AND state = 'appended'",
        )
        .bind(t)
        .bind(account)
        .bind(uidls)
        .execute(&mut *tx)
        .await
        .context("Cannot record deletions in the ledger")?;
        tx.commit()
            .await
            .context("Cannot record deletions in the ledger")?;
        Ok(())
    }

    /// Records that RETR of a message failed (the server answered -ERR).
    /// Returns the new state.
    pub async fn record_retr_failure(
        &self,
        account: &str,
        uidl: &str,
        size: u64,
        error: &str,
        max_attempts: u32,
    ) -> anyhow::Result<State> {
        let t = now();
        let mut tx = self.begin_fenced(account, false).await?;
        let row = sqlx::query(
            "INSERT INTO messages (account, uidl, state, size, listed_size, attempts, last_error, first_seen_at, updated_at)
             VALUES ($1, $2, CASE WHEN 1 >= $3 THEN 'rejected' ELSE 'pending' END, $4, $4, 1, $5, $6, $6)
             ON CONFLICT (account, uidl) DO UPDATE SET
               attempts = messages.attempts + 1,
               state = CASE
                 WHEN messages.state = 'appending' THEN 'appending'
                 WHEN messages.attempts + 1 >= $3 THEN 'rejected'
                 ELSE 'pending' END,
               last_error = excluded.last_error, updated_at = excluded.updated_at
             RETURNING state",
        )
        .bind(account)
        .bind(uidl)
        .bind(i64::from(max_attempts))
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(error)
        .bind(t)
        .fetch_one(&mut *tx)
        .await
        .context("Cannot record a failed RETR in the ledger")?;
        tx.commit()
            .await
            .context("Cannot record a failed RETR in the ledger")?;
        row.try_get::<String, _>("state")?.parse()
    }
}

/// `text` with every occurrence of the URL's password replaced.
fn scrub(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|auth| auth.rsplit_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(p, "***").replace(url, &redact_url(url)),
        None => text.replace(url, &redact_url(url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://pf:s3cret@db:5432/popferry"),
            "postgres://pf:***@db:5432/popferry"
        );
        assert_eq!(
            redact_url("postgres://pf@db/popferry?sslmode=require&password=s3cret"),
            "postgres://pf@db/popferry?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://db"), "postgres://db");
        assert_eq!(redact_url("p:a@ss"), "(a PostgreSQL URL)");
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/d"),
            "postgresql://u:***@h/d",
            "the last @ ends the user part"
        );
        let s = scrub("error for u:hunter2@h: hunter2", "postgres://u:hunter2@h/d");
        assert!(!s.contains("hunter2"), "{s}");
    }
}
