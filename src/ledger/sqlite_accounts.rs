//! The SQLite backend's calls on accounts rather than messages: the
//! recovery mark, the record of runs, `status`, and the leases that keep
//! one process per account (guarantee 9).

use std::time::Duration;

use anyhow::Context as _;
use sqlx::Row;

use super::SqliteLedger;
use crate::ledger::{AccountStatus, Lease, now};

impl SqliteLedger {
    /// Whether the account is recovering from a lost ledger (see
    /// migrations/0002_recovering.sql).
    pub async fn is_recovering(&self, account: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT recovering FROM accounts WHERE name = ?")
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .context("Cannot read the ledger")?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("recovering")? != 0,
            None => false,
        })
    }

    /// Starts or ends recovery for an account, durably.
    pub async fn set_recovering(&self, account: &str, on: bool) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, recovering) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET recovering = excluded.recovering",
        )
        .bind(account)
        .bind(on)
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Marks the start of a pass.
    pub async fn start_run(&self, account: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, last_run_at) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at",
        )
        .bind(account)
        .bind(now())
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Marks the end of a pass: `None` for success, or the error.
    pub async fn finish_run(&self, account: &str, error: Option<&str>) -> anyhow::Result<()> {
        let q = match error {
            None => sqlx::query(
                "UPDATE accounts SET last_success_at = ?, last_error = NULL, consecutive_failures = 0 WHERE name = ?",
            )
            .bind(now()),
            Some(e) => sqlx::query(
                "UPDATE accounts SET last_error = ?, consecutive_failures = consecutive_failures + 1 WHERE name = ?",
            )
            .bind(e),
        };
        q.bind(account)
            .execute(&self.pool)
            .await
            .context("Cannot write the ledger")?;
        Ok(())
    }

    /// How many messages (and bytes) were appended to `account` since
    /// `since` (unix seconds): what the upload budgets count.
    pub async fn appended_since(&self, account: &str, since: i64) -> anyhow::Result<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM messages
             WHERE account = ? AND appended_at >= ? AND state IN ('appended', 'deleted')",
        )
        .bind(account)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
        let bytes = u64::try_from(r.try_get::<i64, _>("bytes")?).unwrap_or(0);
        Ok((n, bytes))
    }

    /// Records that a budget stopped appending until `until` (unix
    /// seconds), and why; `None` clears it.
    pub async fn set_paused(
        &self,
        account: &str,
        paused: Option<(i64, &str)>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, paused_until, paused_reason) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET paused_until = excluded.paused_until, paused_reason = excluded.paused_reason",
        )
        .bind(account)
        .bind(paused.map(|p| p.0))
        .bind(paused.map(|p| p.1))
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Records when the daemon will next run an account.
    pub async fn set_next_run(&self, account: &str, at: i64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, next_run_at) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET next_run_at = excluded.next_run_at",
        )
        .bind(account)
        .bind(at)
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Figures for `status`, for the given accounts (in that order) plus any
    /// the ledger knows that are no longer configured.
    pub async fn status(&self, accounts: &[String]) -> anyhow::Result<Vec<AccountStatus>> {
        let counts = sqlx::query(
            "SELECT account, state, COUNT(*) AS n FROM messages GROUP BY account, state",
        )
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let account_rows = sqlx::query(
            "SELECT name, last_run_at, last_success_at, last_error, consecutive_failures, next_run_at, paused_until, paused_reason FROM accounts",
        )
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        // Who holds each account now (a lease that has not expired).
        let leases =
            sqlx::query("SELECT account, holder, expires_at FROM leases WHERE expires_at > ?")
                .bind(now())
                .fetch_all(&self.pool)
                .await
                .context("Cannot read the ledger")?;
        crate::ledger::status_from_rows(counts, account_rows, leases, accounts)
    }

    /// Takes the lease on `account` for `holder` until `now + ttl`, unless
    /// another holder's lease is still running; renewing one's own lease is
    /// taking it again. Atomic: of two processes racing, one wins.
    pub async fn take_lease(
        &self,
        account: &str,
        holder: &str,
        ttl: Duration,
    ) -> anyhow::Result<Lease> {
        let t = now();
        let until = t.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        // The lease as it is now: taking it over is then conditional on
        // its holder still being that one, so that a takeover knows whose
        // lease it took.
        let before = sqlx::query("SELECT holder, expires_at FROM leases WHERE account = ?")
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .context("Cannot read the account's lease in the ledger")?;
        let before: Option<(String, i64)> = match before {
            Some(r) => Some((r.try_get("holder")?, r.try_get("expires_at")?)),
            None => None,
        };
        let previous = before.as_ref().map_or("", |(h, _)| h.as_str());
        let won = sqlx::query(
            "INSERT INTO leases (account, holder, taken_at, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account) DO UPDATE SET
               holder = excluded.holder, expires_at = excluded.expires_at,
               taken_at = CASE WHEN leases.holder = excluded.holder THEN leases.taken_at ELSE excluded.taken_at END
             WHERE leases.holder = excluded.holder OR (leases.expires_at <= ?3 AND leases.holder = ?5)
             RETURNING holder",
        )
        .bind(account)
        .bind(holder)
        .bind(t)
        .bind(until)
        .bind(previous)
        .fetch_optional(&self.pool)
        .await
        .context("Cannot take the account's lease in the ledger")?;
        if won.is_some() {
            // A released lease has no row: one still there, of another
            // holder, expired unreleased.
            let took_over = before.filter(|(h, _)| h != holder).map(|(h, _)| h);
            return Ok(Lease::Held { until, took_over });
        }
        let row = sqlx::query("SELECT holder, expires_at FROM leases WHERE account = ?")
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .context("Cannot read the account's lease in the ledger")?;
        Ok(match row {
            Some(r) => Lease::HeldBy {
                holder: r.try_get("holder")?,
                until: r.try_get("expires_at")?,
            },
            // Released between the two statements: try again later.
            None => Lease::HeldBy {
                holder: "another process".into(),
                until: t,
            },
        })
    }

    /// Gives the lease back (only if `holder` still has it).
    pub async fn release_lease(&self, account: &str, holder: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM leases WHERE account = ? AND holder = ?")
            .bind(account)
            .bind(holder)
            .execute(&self.pool)
            .await
            .context("Cannot release the account's lease in the ledger")?;
        Ok(())
    }
}
