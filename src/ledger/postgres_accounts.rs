//! The PostgreSQL backend's calls on accounts rather than messages: the
//! recovery mark, the record of runs and passes, `status`, and the leases
//! (claimed with `SKIP LOCKED`, fenced by their generation) that keep one
//! replica per account (guarantee 9).

use std::time::Duration;

use anyhow::Context as _;
use sqlx::Row;

use super::{Fence, PostgresLedger};
use crate::ledger::{AccountStatus, Lease, PassRecord, now};

impl PostgresLedger {
    /// Whether the account is recovering from a lost ledger.
    pub async fn is_recovering(&self, account: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT recovering FROM accounts WHERE name = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .context("Cannot read the ledger")?;
        Ok(match row {
            Some(r) => r.try_get("recovering")?,
            None => false,
        })
    }

    /// Starts or ends recovery for an account, durably.
    pub async fn set_recovering(&self, account: &str, on: bool) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, recovering) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET recovering = excluded.recovering",
        )
        .bind(account)
        .bind(on)
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Marks the start of a pass (and, under a lease of this handle, opens
    /// its pass record).
    pub async fn start_run(&self, account: &str) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        sqlx::query(
            "INSERT INTO accounts (name, last_run_at) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at",
        )
        .bind(account)
        .bind(now())
        .execute(&mut *tx)
        .await
        .context("Cannot write the ledger")?;
        if let Some(f) = self.fence_of(account) {
            sqlx::query(
                "INSERT INTO passes (account, holder, generation, started_us)
                 VALUES ($1, $2, $3, (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT)",
            )
            .bind(account)
            .bind(&f.holder)
            .bind(f.generation)
            .execute(&mut *tx)
            .await
            .context("Cannot write the ledger")?;
        }
        tx.commit().await.context("Cannot write the ledger")?;
        Ok(())
    }

    /// Marks the end of a pass: `None` for success, or the error.
    pub async fn finish_run(&self, account: &str, error: Option<&str>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        let q = match error {
            None => sqlx::query(
                "UPDATE accounts SET last_success_at = $1, last_error = NULL, consecutive_failures = 0 WHERE name = $2",
            )
            .bind(now()),
            Some(e) => sqlx::query(
                "UPDATE accounts SET last_error = $1, consecutive_failures = consecutive_failures + 1 WHERE name = $2",
            )
            .bind(e),
        };
        q.bind(account)
            .execute(&mut *tx)
            .await
            .context("Cannot write the ledger")?;
        self.end_pass(&mut tx, account, error).await?;
        tx.commit().await.context("Cannot write the ledger")?;
        Ok(())
    }

    /// Closes this handle's open pass record of `account`, if any.
    async fn end_pass(
        &self,
        tx: &mut sqlx::PgConnection,
        account: &str,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        if let Some(f) = self.fence_of(account) {
            sqlx::query(
                "UPDATE passes SET ended_us = (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT,
                   error = $4
                 WHERE account = $1 AND holder = $2 AND generation = $3 AND ended_us IS NULL",
            )
            .bind(account)
            .bind(&f.holder)
            .bind(f.generation)
            .bind(error)
            .execute(&mut *tx)
            .await
            .context("Cannot write the ledger")?;
        }
        Ok(())
    }

    /// How many messages (and bytes) were appended to `account` since
    /// `since` (unix seconds): what the upload budgets count.
    pub async fn appended_since(&self, account: &str, since: i64) -> anyhow::Result<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0)::BIGINT AS bytes FROM messages
             WHERE account = $1 AND appended_at >= $2 AND state IN ('appended', 'deleted')",
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
            "INSERT INTO accounts (name, paused_until, paused_reason) VALUES ($1, $2, $3)
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
            "INSERT INTO accounts (name, next_run_at) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET next_run_at = excluded.next_run_at",
        )
        .bind(account)
        .bind(at)
        .execute(&self.pool)
        .await
        .context("Cannot write the ledger")?;
        Ok(())
    }

    /// Every pass recorded for `account`, oldest first.
    pub async fn passes(&self, account: &str) -> anyhow::Result<Vec<PassRecord>> {
        let rows = sqlx::query(
            "SELECT holder, generation, started_us, ended_us, error FROM passes
             WHERE account = $1 ORDER BY started_us, id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(PassRecord {
                holder: r.try_get("holder")?,
                generation: r.try_get("generation")?,
                started_us: r.try_get("started_us")?,
                ended_us: r.try_get("ended_us")?,
                error: r.try_get("error")?,
            });
        }
        Ok(out)
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
        let leases = sqlx::query(
            "SELECT account, holder, expires_at FROM leases
             WHERE holder <> '' AND expires_at > extract(epoch FROM now())::BIGINT",
        )
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the ledger")?;
        crate::ledger::status_from_rows(counts, account_rows, leases, accounts)
    }

    /// Takes the lease on `account` for `holder` until `now + ttl` (the
    /// database's clock), or renews the one this handle holds.
    ///
    /// The lease row is claimed with `FOR UPDATE SKIP LOCKED`: a replica
    /// that finds it locked (another replica claiming or renewing it, or a
    /// pass committing a fenced write) does not wait, it is told the
    /// account is held. A renewal locks the row without skipping: it waits
    /// for this handle's own fenced writes (one transaction each, short). A lease expired or released is taken over with its
    /// generation bumped. A lease this handle took is only ever *renewed*
    /// at its generation: once another holder has taken it (even if that
    /// one released it since), the answer is [`Lease::HeldBy`], and the
    /// fence stays, so this handle's writes on the account keep failing
    /// until the pass ends ([`PostgresLedger::release_lease`]).
    pub async fn take_lease(
        &self,
        account: &str,
        holder: &str,
        ttl: Duration,
    ) -> anyhow::Result<Lease> {
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let fence = self.fence_of(account).filter(|f| f.holder == holder);
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Cannot take the account's lease in the ledger")?;
        sqlx::query(
            "INSERT INTO leases (account, holder, taken_at, expires_at, generation)
             VALUES ($1, '', 0, 0, 0) ON CONFLICT (account) DO NOTHING",
        )
        .bind(account)
        .execute(&mut *tx)
        .await
        .context("Cannot take the account's lease in the ledger")?;
        // A claim skips a row another replica has locked; a renewal waits
        // (a moment) for this handle's own fenced writes, which hold it
        // FOR SHARE until they commit.
        let row = sqlx::query(if fence.is_some() {
            "SELECT holder, expires_at, generation, extract(epoch FROM now())::BIGINT AS now_s
             FROM leases WHERE account = $1 FOR UPDATE"
        } else {
            "SELECT holder, expires_at, generation, extract(epoch FROM now())::BIGINT AS now_s
             FROM leases WHERE account = $1 FOR UPDATE SKIP LOCKED"
        })
        .bind(account)
        .fetch_optional(&mut *tx)
        .await
        .context("Cannot take the account's lease in the ledger")?;
        let Some(row) = row else {
            // Locked by a replica claiming or writing it this very moment.
            return Ok(Lease::HeldBy {
                holder: "another replica (claiming it now)".into(),
                until: now().saturating_add(1),
            });
        };
        let current: String = row.try_get("holder")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let generation: i64 = row.try_get("generation")?;
        let now_s: i64 = row.try_get("now_s")?;
        let until = now_s.saturating_add(ttl_s);
        let answer = match fence {
            // Renewal: only at the generation this handle took.
            Some(f) if f.generation == generation && current == holder => {
                sqlx::query("UPDATE leases SET expires_at = $2 WHERE account = $1")
                    .bind(account)
                    .bind(until)
                    .execute(&mut *tx)
                    .await
                    .context("Cannot renew the account's lease in the ledger")?;
                Lease::Held {
                    until,
                    took_over: None,
                }
            }
            Some(_) => Lease::HeldBy {
                holder: if current.is_empty() || current == holder {
                    "another replica (it took the lease over)".into()
                } else {
                    current
                },
                until: expires_at,
            },
            None if expires_at <= now_s || current == holder => {
                let new_generation = generation.saturating_add(1);
                sqlx::query(
                    "UPDATE leases SET holder = $2, taken_at = $3, expires_at = $4, generation = $5
                     WHERE account = $1",
                )
                .bind(account)
                .bind(holder)
                .bind(now_s)
                .bind(until)
                .bind(new_generation)
                .execute(&mut *tx)
                .await
                .context("Cannot take the account's lease in the ledger")?;
                if let Ok(mut fences) = self.fences.lock() {
                    fences.insert(
                        account.to_owned(),
                        Fence {
                            holder: holder.to_owned(),
                            generation: new_generation,
                            ttl: ttl_s,
                        },
                    );
                }
                // Released leases expire at 0; a running one was renewed.
                let unreleased = !current.is_empty() && current != holder && expires_at > 0;
                Lease::Held {
                    until,
                    took_over: unreleased.then_some(current),
                }
            }
            None => Lease::HeldBy {
                holder: current,
                until: expires_at,
            },
        };
        tx.commit()
            .await
            .context("Cannot take the account's lease in the ledger")?;
        Ok(answer)
    }

    /// Gives the lease back (only if `holder` still has it; at the
    /// generation this handle took, if it took it), keeping its row so that
    /// generations only grow; forgets this handle's fence on the account.
    pub async fn release_lease(&self, account: &str, holder: &str) -> anyhow::Result<()> {
        let fence = self.fence_of(account).filter(|f| f.holder == holder);
        let generation = fence.as_ref().map(|f| f.generation);
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Cannot release the account's lease in the ledger")?;
        // A pass that ended without its end recorded (an error) ends here.
        self.end_pass(&mut tx, account, Some("ended without a result"))
            .await?;
        sqlx::query(
            "UPDATE leases SET expires_at = 0
             WHERE account = $1 AND holder = $2 AND ($3::BIGINT IS NULL OR generation = $3::BIGINT)",
        )
        .bind(account)
        .bind(holder)
        .bind(generation)
        .execute(&mut *tx)
        .await
        .context("Cannot release the account's lease in the ledger")?;
        tx.commit()
            .await
            .context("Cannot release the account's lease in the ledger")?;
        if fence.is_some()
            && let Ok(mut f) = self.fences.lock()
        {
            f.remove(account);
        }
        Ok(())
    }
}
