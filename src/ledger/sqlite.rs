//! The SQLite backend of the ledger: the only SQL in the program.
//!
//! Every state change is its own committed transaction (or one transaction
//! for a batch of them, where a call takes a slice) with
//! `synchronous = FULL` in WAL mode, so a call that returned is on disk.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Row};

use super::{
    AppendOk, Attempt, AuditRow, Fingerprint, Intent, Known, KnownRows, MessageRow, State, now,
};

#[path = "sqlite_accounts.rs"]
mod accounts;
#[path = "sqlite_imported.rs"]
mod imported;

/// Waits for, then holds, the exclusive lock on `<ledger>.lock` (released
/// when the file is dropped, or when the process ends in any way).
async fn migration_lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let shown = lock_path.display().to_string();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        f.lock()?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .context("Cannot wait for the ledger's lock")?
    .with_context(|| format!("Cannot lock {shown}"))
}

/// The ledger in a SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    /// Opens (creating it and its folders if missing) and migrates the ledger.
    pub async fn open(path: &Path) -> anyhow::Result<SqliteLedger> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("Cannot create the ledger folder {}", dir.display()))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // An fsync on a loaded disk can take seconds; that is not a
            // warning an operator can act on (sqlx's default), so it is
            // logged at INFO, which the subscriber caps for sqlx.
            .log_slow_statements(log::LevelFilter::Info, Duration::from_secs(1));
        // sqlx takes no lock around SQLite migrations: two processes opening
        // a new ledger at once would both create its tables (and switching
        // a new file to WAL fails at once, busy timeout or not, while
        // another process does the same). A lock file beside the ledger
        // makes them take turns until the ledger is open and migrated.
        let lock = migration_lock(path).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| format!("Cannot open the ledger {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("Cannot migrate the ledger {}", path.display()))?;
        drop(lock);
        Ok(SqliteLedger { pool })
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
             FROM messages WHERE account = ?",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let row = MessageRow {
                uidl: r.try_get("uidl")?,
                uidl_derived: r.try_get::<i64, _>("uidl_derived")? != 0,
                state: r.try_get::<String, _>("state")?.parse()?,
                size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                listed_size: r
                    .try_get::<Option<i64>, _>("listed_size")?
                    .map(|n| u64::try_from(n).unwrap_or(0)),
                sha256: r.try_get("sha256")?,
                header_sha256: r.try_get("header_sha256")?,
                superseded: r.try_get::<i64, _>("superseded")? != 0,
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
    /// space) is `listed`, streamed so that memory follows the listing, not
    /// the account's history; plus the keys of the other rows still
    /// `appended` (their message left the server).
    pub async fn known(&self, account: &str, listed: &HashSet<&str>) -> anyhow::Result<KnownRows> {
        let mut rows = sqlx::query(
            "SELECT uidl, state, size, listed_size, sha256 IS NOT NULL AS digest, message_date, appended_at, superseded
             FROM messages WHERE account = ?",
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
                digest: r.try_get::<i64, _>("digest")? != 0,
                message_date: r.try_get("message_date")?,
                appended_at: r.try_get("appended_at")?,
                superseded: r.try_get::<i64, _>("superseded")? != 0,
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
        let mut rows = sqlx::query("SELECT uidl, state FROM messages WHERE account = ?")
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

    /// Whether any row of `account` is keyed by a UIDL the server gave (not
    /// one derived from headers).
    pub async fn has_server_uidls(&self, account: &str) -> anyhow::Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account = ? AND uidl_derived = 0) AS any",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        Ok(row.try_get::<i64, _>("any")? != 0)
    }

    /// Whether any row of `account` is keyed by an ID derived from headers.
    pub async fn has_derived_uidls(&self, account: &str) -> anyhow::Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account = ? AND uidl_derived = 1) AS any",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        Ok(row.try_get::<i64, _>("any")? != 0)
    }

    /// Renames rows keyed by derived IDs to the server's real UIDLs, in one
    /// transaction: `(derived, real)` pairs; a pair without such a row, or
    /// whose real UIDL has a row already, changes nothing. Returns how many
    /// rows were renamed.
    pub async fn rekey_derived(
        &self,
        account: &str,
        pairs: &[(String, String)],
    ) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        let mut renamed = 0;
        for (derived, real) in pairs {
            let r = sqlx::query(
                "UPDATE messages SET uidl = ?, uidl_derived = 0, updated_at = ?
                 WHERE account = ? AND uidl = ? AND uidl_derived = 1
                   AND NOT EXISTS (SELECT 1 FROM messages WHERE account = ? AND uidl = ?)",
            )
            .bind(real)
            .bind(now())
            .bind(account)
            .bind(derived)
            .bind(account)
            .bind(real)
            .execute(&mut *tx)
            .await
            .context("Cannot write the ledger")?;
            renamed += r.rows_affected();
        }
        tx.commit().await.context("Cannot write the ledger")?;
        Ok(renamed)
    }

    /// What the row keyed `key` knows the copied message by: its SHA-256
    /// and its header section's, either unknown on older rows.
    pub async fn fingerprint(
        &self,
        account: &str,
        key: &str,
    ) -> anyhow::Result<Option<Fingerprint>> {
        let row = sqlx::query(
            "SELECT sha256, header_sha256 FROM messages WHERE account = ? AND uidl = ?",
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

    /// Marks the row keyed `key` superseded: the server lists another
    /// message under its UIDL now.
    pub async fn supersede(&self, account: &str, key: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE messages SET superseded = 1, updated_at = ? WHERE account = ? AND uidl = ?",
        )
        .bind(now())
        .bind(account)
        .bind(key)
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Every row of one account, with what `verify` compares with the
    /// target.
    pub async fn audit_rows(&self, account: &str) -> anyhow::Result<Vec<AuditRow>> {
        let mut rows = sqlx::query(
            "SELECT uidl, state, size, sha256, message_id, mailbox, uidvalidity, uid
             FROM messages WHERE account = ? ORDER BY uidl",
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

    /// Turns `appended`/`deleted` rows back into unresolved intents.
    pub async fn reopen(&self, account: &str, keys: &[String]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        for key in keys {
            sqlx::query(
                "UPDATE messages SET state = 'appending', uidvalidity = NULL, uid = NULL,
                   deleted_at = NULL, updated_at = ?
                 WHERE account = ? AND uidl = ? AND state IN ('appended', 'deleted')",
            )
            .bind(t)
            .bind(account)
            .bind(key)
            .execute(&mut *tx)
            .await
            .context("Cannot reopen a row in the ledger")?;
        }
        tx.commit()
            .await
            .context("Cannot reopen rows in the ledger")?;
        Ok(())
    }

    /// Removes rows.
    pub async fn forget(&self, account: &str, keys: &[String]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        for key in keys {
            sqlx::query("DELETE FROM messages WHERE account = ? AND uidl = ?")
                .bind(account)
                .bind(key)
                .execute(&mut *tx)
                .await
                .context("Cannot remove a row from the ledger")?;
        }
        tx.commit()
            .await
            .context("Cannot remove rows from the ledger")?;
        Ok(())
    }

    /// Records the intent to append, durably, before the APPEND is sent.
    pub async fn record_intent(&self, account: &str, i: &Intent<'_>) -> anyhow::Result<()> {
        self.record_intents(account, std::slice::from_ref(i)).await
    }

    /// Records the intents of several messages in one transaction (one
    /// fsync), before any of their APPENDs is sent.
    pub async fn record_intents(
        &self,
        account: &str,
        intents: &[Intent<'_>],
    ) -> anyhow::Result<()> {
        if intents.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        for i in intents {
            sqlx::query(
                "INSERT INTO messages (account, uidl, uidl_derived, state, size, listed_size, sha256, header_sha256, message_id, message_date, mailbox, first_seen_at, updated_at)
                 VALUES (?, ?, ?, 'appending', ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
            .bind(i.header_sha256)
            .bind(i.message_id)
            .bind(i.message_date)
            .bind(i.mailbox)
            .bind(t)
            .bind(t)
            .execute(&mut *tx)
            .await
            .context("Cannot record the intent to append in the ledger")?;
        }
        tx.commit()
            .await
            .context("Cannot record the intent to append in the ledger")?;
        Ok(())
    }

    /// Records the server's OK for several APPENDs in one transaction.
    pub async fn record_appended_many(
        &self,
        account: &str,
        done: &[AppendOk],
    ) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        for AppendOk {
            uidl,
            uidvalidity,
            uid,
        } in done
        {
            sqlx::query(
                "UPDATE messages SET state = 'appended', uidvalidity = ?, uid = ?, appended_at = ?,
                   last_error = NULL, updated_at = ?
                 WHERE account = ? AND uidl = ?",
            )
            .bind(uidvalidity.map(i64::from))
            .bind(uid.map(i64::from))
            .bind(t)
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

    /// The target UIDs the ledger already gives to messages of `account` in
    /// `mailbox` (under `uidvalidity` when both are known): a lookup must
    /// not settle another message with one of them.
    pub async fn claimed_uids(
        &self,
        account: &str,
        mailbox: &str,
        uidvalidity: Option<u32>,
    ) -> anyhow::Result<std::collections::HashSet<u32>> {
        let rows = sqlx::query(
            "SELECT uid FROM messages
             WHERE account = ?1 AND mailbox = ?2 AND uid IS NOT NULL
               AND state IN ('appended', 'deleted')
               AND (uidvalidity IS NULL OR ?3 IS NULL OR uidvalidity = ?3)",
        )
        .bind(account)
        .bind(mailbox)
        .bind(uidvalidity.map(i64::from))
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let mut out = std::collections::HashSet::with_capacity(rows.len());
        for r in rows {
            if let Ok(uid) = u32::try_from(r.try_get::<i64, _>("uid")?) {
                out.insert(uid);
            }
        }
        Ok(out)
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

    /// Records that an APPEND did not happen (the server refused it, or the
    /// connection failed before the message was sent). An attempt that
    /// [`Attempt::Counts`] counts towards the limit; once `max_attempts` are
    /// used up the message is `rejected`. Returns the new state.
    pub async fn record_failure(
        &self,
        account: &str,
        uidl: &str,
        error: &str,
        attempt: Attempt,
        max_attempts: u32,
    ) -> anyhow::Result<State> {
        let t = now();
        let counts = attempt == Attempt::Counts;
        let row = sqlx::query(
            "UPDATE messages SET
               attempts = attempts + ?,
               state = CASE WHEN attempts + ? >= ? THEN 'rejected' ELSE 'pending' END,
               last_error = ?, updated_at = ?
             WHERE account = ? AND uidl = ?
             RETURNING state",
        )
        .bind(i64::from(counts))
        .bind(i64::from(counts))
        .bind(i64::from(max_attempts))
        .bind(error)
        .bind(t)
        .bind(account)
        .bind(uidl)
        .fetch_optional(&self.pool)
        .await
        .context("Cannot record a failed APPEND in the ledger")?;
        match row {
            Some(r) => r.try_get::<String, _>("state")?.parse(),
            None => anyhow::bail!("No ledger row for {uidl} of {account}"),
        }
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
        let t = now();
        sqlx::query(
            "INSERT INTO messages (account, uidl, state, size, listed_size, last_error, first_seen_at, updated_at)
             VALUES (?, ?, 'skipped', ?, ?, ?, ?, ?)
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
        .bind(t)
        .execute(&self.pool)
        .await
        .context("Cannot record a skipped message in the ledger")?;
        Ok(())
    }

    /// Records that QUIT committed the DELE of these messages.
    pub async fn record_deleted(&self, account: &str, uidls: &[String]) -> anyhow::Result<()> {
        let t = now();
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        for uidl in uidls {
            sqlx::query(
                "UPDATE messages SET state = 'deleted', deleted_at = ?, updated_at = ?
                 WHERE account = ? AND uidl = ? AND state = 'appended'",
            )
            .bind(t)
            .bind(t)
            .bind(account)
            .bind(uidl)
            .execute(&mut *tx)
            .await
            .context("Cannot record deletions in the ledger")?;
        }
        tx.commit()
            .await
            .context("Cannot record deletions in the ledger")?;
        Ok(())
    }

    /// Records that RETR of a message failed (the server answered -ERR):
    /// counted like a refused APPEND, so that the message is retried on
    /// later runs and rejected after `max_attempts`. Returns the new state.
    pub async fn record_retr_failure(
        &self,
        account: &str,
        uidl: &str,
        size: u64,
        error: &str,
        max_attempts: u32,
    ) -> anyhow::Result<State> {
        let t = now();
        let row = sqlx::query(
            "INSERT INTO messages (account, uidl, state, size, listed_size, attempts, last_error, first_seen_at, updated_at)
             VALUES (?1, ?2, CASE WHEN 1 >= ?3 THEN 'rejected' ELSE 'pending' END, ?4, ?4, 1, ?5, ?6, ?6)
             ON CONFLICT (account, uidl) DO UPDATE SET
               attempts = messages.attempts + 1,
               state = CASE
                 WHEN messages.state = 'appending' THEN 'appending'
                 WHEN messages.attempts + 1 >= ?3 THEN 'rejected'
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
        .fetch_one(&self.pool)
        .await
        .context("Cannot record a failed RETR in the ledger")?;
        row.try_get::<String, _>("state")?.parse()
    }
}
