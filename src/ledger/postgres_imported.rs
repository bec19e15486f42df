//! The PostgreSQL backend's accounts kept in the ledger (`popferry
//! accounts`): the shared statements of `ledger/imported.rs`, with `$n`
//! placeholders.

use anyhow::Context as _;
use sqlx::Row;

use super::PostgresLedger;
use crate::ledger::imported::numbered;
use crate::ledger::{Imported, ImportedAccount, now};

imported_accounts_impl!(PostgresLedger, numbered);
