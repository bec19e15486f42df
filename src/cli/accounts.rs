//! `popferry accounts import|list|remove`: accounts kept in the ledger
//! beside the configuration file's, for fleets of thousands
//! (`config/db_accounts.rs` says how a row becomes an account). Also the
//! hook that adds them to the file's before `sync`, `run`, `status`,
//! `check` and `verify` use the configuration.

use std::path::Path;

use popferry::config::{Config, ConfigError, db_accounts};
use popferry::ledger::{ImportedAccount, Ledger};

use super::Outcome;

/// Why the ledger's accounts could not be added.
pub enum MergeError {
    /// The ledger cannot be read (exit 1).
    Ledger(anyhow::Error),
    /// An account there is wrong, or clashes with the file's (exit 2).
    Config(ConfigError),
}

/// Adds the accounts kept in the ledger to `cfg`'s (none when there is no
/// ledger yet).
pub async fn merge(cfg: &mut Config, resolve_secrets: bool) -> Result<(), MergeError> {
    let rows = if super::ledger_may_exist(cfg) {
        let ledger = super::open_ledger(cfg).await.map_err(MergeError::Ledger)?;
        let rows = ledger.imported_accounts().await;
        ledger.close().await;
        rows.map_err(MergeError::Ledger)?
    } else {
        Vec::new()
    };
    db_accounts::merge(cfg, &rows, resolve_secrets).map_err(MergeError::Config)
}

/// [`merge`] on an open ledger (a reload of the daemon).
pub async fn merge_from(
    cfg: &mut Config,
    ledger: &Ledger,
    resolve_secrets: bool,
) -> anyhow::Result<()> {
    let rows = ledger.imported_accounts().await?;
    db_accounts::merge(cfg, &rows, resolve_secrets).map_err(anyhow::Error::from)
}

/// `accounts import FILE.csv`: every line checked first; one bad line and
/// nothing is imported (exit 2, each bad line named). A name already in
/// the ledger is replaced; a name of the file's is refused.
pub async fn import(cfg: &Config, file: &Path) -> Outcome {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("popferry: cannot read {}: {e}", file.display());
            return Outcome::Usage;
        }
    };
    let (rows, mut errors) = db_accounts::parse_csv(&text);
    let mut accounts: Vec<ImportedAccount> = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let problem = if cfg.accounts.iter().any(|a| a.name == row.name) {
            Some(format!(
                "account {:?} is already in {}: the file's accounts and the ledger's are one set",
                row.name,
                cfg.source_path.display()
            ))
        } else {
            // Validated as it will be used (its references are resolved by
            // the replicas, which may have what this machine has not).
            db_accounts::account(&row, cfg, false)
                .err()
                .map(|m| format!("account {:?}: {m}", row.name))
        };
        match problem {
            Some(message) => errors.push(db_accounts::LineError { line, message }),
            None => accounts.push(row),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        for e in &errors {
            eprintln!("popferry: {}: {e}", file.display());
        }
        eprintln!(
            "popferry: nothing imported ({} line(s) to fix)",
            errors.len()
        );
        return Outcome::Usage;
    }
    let ledger = match super::open_ledger(cfg).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("popferry: {e:#}");
            return Outcome::Failed;
        }
    };
    let done = ledger.import_accounts(&accounts).await;
    ledger.close().await;
    match done {
        Ok(d) => {
            println!(
                "imported {} account(s) into the {} ledger: {} added, {} updated",
                accounts.len(),
                ledger.kind(),
                d.added,
                d.updated
            );
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("popferry: {e:#}");
            Outcome::Failed
        }
    }
}

/// The ledger's accounts, or none when there is no ledger yet.
async fn rows(cfg: &Config) -> anyhow::Result<Vec<ImportedAccount>> {
    if !super::ledger_may_exist(cfg) {
        return Ok(Vec::new());
    }
    let ledger = super::open_ledger(cfg).await?;
    let rows = ledger.imported_accounts().await;
    ledger.close().await;
    rows
}

/// `accounts list`: the file's accounts and the ledger's, one a line
/// (no password, not even a reference).
pub async fn list(cfg: &Config) -> Outcome {
    let rows = match rows(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("popferry: {e:#}");
            return Outcome::Failed;
        }
    };
    println!(
        "{:<20} {:<7} {:<36} {:<36} mailbox",
        "account", "kept in", "source", "target"
    );
    for a in &cfg.accounts {
        println!(
            "{:<20} {:<7} {:<36} {:<36} {}",
            a.name,
            "file",
            format!("{}@{}", a.source.username, a.source.endpoint.host),
            format!(
                "{}@{}",
                a.target.server.username, a.target.server.endpoint.host
            ),
            a.target.mailbox
        );
    }
    for r in &rows {
        println!(
            "{:<20} {:<7} {:<36} {:<36} {}",
            r.name,
            "ledger",
            format!("{}@{}", r.source_username, r.source_host),
            format!("{}@{}", r.target_username, r.target_host),
            r.mailbox.as_deref().unwrap_or("(template)")
        );
    }
    Outcome::Ok
}

/// `accounts remove NAME`: the ledger's account goes; its messages'
/// history stays (as for an account removed from the file).
pub async fn remove(cfg: &Config, name: &str) -> Outcome {
    if cfg.accounts.iter().any(|a| a.name == name) {
        eprintln!(
            "popferry: account {name:?} is in {}, not in the ledger: remove it from the file",
            cfg.source_path.display()
        );
        return Outcome::Failed;
    }
    let ledger = match super::open_ledger(cfg).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("popferry: {e:#}");
            return Outcome::Failed;
        }
    };
    let removed = ledger.remove_imported_account(name).await;
    ledger.close().await;
    match removed {
        Ok(true) => {
            println!("removed account {name:?} from the ledger (its history stays)");
            Outcome::Ok
        }
        Ok(false) => {
            eprintln!("popferry: no account named {name:?} in the ledger");
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("popferry: {e:#}");
            Outcome::Failed
        }
    }
}
