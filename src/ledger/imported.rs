//! The accounts kept in the ledger (`popferry accounts`), one implementation
//! for both backends: rows of `imported_accounts` (SQLite
//! migrations/0007_imported_accounts.sql, PostgreSQL
//! migrations/postgres/0002_imported_accounts.sql), passwords as references
//! only. The statements are the same on both but for their placeholders, so
//! they are written once with `?` and each backend's `sql` function gives
//! its own spelling ([`numbered`] for PostgreSQL). They are constants of
//! this file, never built from input, hence `AssertSqlSafe`.

/// `?` placeholders as PostgreSQL's `$1`, `$2`, … (the statements here hold
/// no `?` of their own).
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// The `imported_accounts` calls for one backend type, whose statements are
/// spelled by `$sql` (a `fn(&str) -> String`).
macro_rules! imported_accounts_impl {
    ($ledger:ty, $sql:expr) => {
        impl $ledger {
            /// Adds these accounts, or replaces those of the same name, in one
            /// transaction.
            pub async fn import_accounts(&self, accounts: &[ImportedAccount]) -> anyhow::Result<Imported> {
                let mut tx = self.pool.begin().await.context("Cannot write the ledger")?;
                let mut done = Imported::default();
                for a in accounts {
                    let existed = sqlx::query(sqlx::AssertSqlSafe($sql("SELECT 1 AS one FROM imported_accounts WHERE name = ?")))
                        .bind(&a.name)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("Cannot read the ledger")?
                        .is_some();
                    sqlx::query(sqlx::AssertSqlSafe($sql(
                        "INSERT INTO imported_accounts (name, source_host, source_username, source_password,
                           target_host, target_username, target_password, mailbox, delete_policy, imported_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (name) DO UPDATE SET
                           source_host = excluded.source_host, source_username = excluded.source_username,
                           source_password = excluded.source_password, target_host = excluded.target_host,
                           target_username = excluded.target_username, target_password = excluded.target_password,
                           mailbox = excluded.mailbox, delete_policy = excluded.delete_policy,
                           imported_at = excluded.imported_at",
                    )))
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
                let done = sqlx::query(sqlx::AssertSqlSafe($sql("DELETE FROM imported_accounts WHERE name = ?")))
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .context("Cannot write the ledger")?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            super::numbered("INSERT INTO t (a, b) VALUES (?, ?) -- c = ?"),
            "INSERT INTO t (a, b) VALUES ($1, $2) -- c = $3"
        );
        assert_eq!(super::numbered("SELECT 1"), "SELECT 1");
    }
}
