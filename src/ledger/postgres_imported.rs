//! The PostgreSQL backend's accounts kept in the ledger (`popferry accounts`):
//! rows of `imported_accounts` (migrations/postgres/0002_imported_accounts.sql), passwords as references only.

use anyhow::Context as _;
use sqlx::Row;

use super::PostgresLedger;
use crate::ledger::{Imported, ImportedAccount, now};

impl PostgresLedger {
    /// Adds these accounts, or replaces those of the same name, in one
    /// transaction.
    pub async fn import_accounts(&self, accounts: &[ImportedAccount]) -> anyhow::Result<Imported> {
        let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
        let mut done = Imported::default();
        for a in accounts {
            let existed = sqlx::query("SELECT 1 AS one FROM imported_accounts WHERE name = $1")
                .bind(&a.name)
                .fetch_optional(&mut *tx)
                .await
                .context("Cannot read the ledger")?
                .is_some();
            sqlx::query(
                "INSERT INTO imported_accounts (name, source_host, source_username, source_password,
                   target_host, target_username, target_password, mailbox, delete_policy, imported_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (name) DO UPDATE SET
                   source_host = excluded.source_host, source_username = excluded.source_username,
                   source_password = excluded.source_password, target_host = excluded.target_host,
                   target_username = excluded.target_username, target_password = excluded.target_password,
                   mailbox = excluded.mailbox, delete_policy = excluded.delete_policy,
                   imported_at = excluded.imported_at",
            )
            .bind(&a.name)
            .bind(&a.source_host)
            .bind(&a.source_username)
            .bind(&a.source_password)
            .bind(&a.target_host)
            .bind(&a.target_username)
            .bind(&a.target_password)
            .bind(&a.mailbox)
            .bind(&a.delete)
            .bind(now())
            .execute(&mut *tx)
            .await
            .context("Cannot write the ledger")?;
            if existed {
                done.updated += 1;
            } else {
                done.added += 1;
            }
        }
        tx.commit().await.context("Cannot write the ledger")?;
        Ok(done)
    }

    /// The accounts kept in the ledger, by name.
    pub async fn imported_accounts(&self) -> anyhow::Result<Vec<ImportedAccount>> {
        let rows = sqlx::query(
            "SELECT name, source_host, source_username, source_password, target_host, target_username,
               target_password, mailbox, delete_policy FROM imported_accounts ORDER BY name",
        )
            .fetch_all(&self.pool)
            .await
            .context("Cannot read the accounts kept in the ledger")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ImportedAccount {
                name: r.try_get("name")?,
                source_host: r.try_get("source_host")?,
                source_username: r.try_get("source_username")?,
                source_password: r.try_get("source_password")?,
                target_host: r.try_get("target_host")?,
                target_username: r.try_get("target_username")?,
                target_password: r.try_get("target_password")?,
                mailbox: r.try_get("mailbox")?,
                delete: r.try_get("delete_policy")?,
            });
        }
        Ok(out)
    }

    /// Removes an account kept in the ledger; false if there was none.
    pub async fn remove_imported_account(&self, name: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM imported_accounts WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .context("Cannot write the ledger")?;
        Ok(done.rows_affected() > 0)
    }
}
