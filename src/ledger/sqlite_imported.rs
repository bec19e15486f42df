//! The SQLite backend's accounts kept in the ledger (`popferry accounts`):
//! the shared statements of `ledger/imported.rs`, with `?` placeholders.

use anyhow::Context as _;
use sqlx::Row;

use super::SqliteLedger;
use crate::ledger::{Imported, ImportedAccount, now};

imported_accounts_impl!(SqliteLedger, str::to_owned);
