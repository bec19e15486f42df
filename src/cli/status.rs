//! `popferry status`: what the ledger knows per account. Contacts no server
//! and needs no password.

use popferry::config::Config;
use popferry::ledger::{AccountStatus, Ledger};

use super::{Outcome, when};

pub async fn execute(cfg: &Config, json: bool) -> Outcome {
    let names: Vec<String> = cfg.accounts.iter().map(|a| a.name.clone()).collect();
    let statuses = if cfg.ledger_path.exists() {
        let ledger = match Ledger::open(&cfg.ledger_path).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("popferry: {e:#}");
                return Outcome::Failed;
            }
        };
        let s = ledger.status(&names).await;
        ledger.close().await;
        match s {
            Ok(s) => s,
            Err(e) => {
                eprintln!("popferry: {e:#}");
                return Outcome::Failed;
            }
        }
    } else {
        if !json {
            println!(
                "No ledger yet at {} (nothing synced).",
                cfg.ledger_path.display()
            );
        }
        names
            .into_iter()
            .map(|account| AccountStatus {
                account,
                ..Default::default()
            })
            .collect()
    };
    if json {
        match serde_json::to_string_pretty(&statuses) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("popferry: {e}");
                return Outcome::Failed;
            }
        }
        return Outcome::Ok;
    }
    for s in &statuses {
        println!("{}", s.account);
        println!(
            "  copied {}  deleted {}  skipped {}  rejected {}  pending {}  unresolved {}",
            s.copied, s.deleted, s.skipped, s.rejected, s.pending, s.unresolved
        );
        println!("  last run      {}", when(s.last_run));
        println!("  last success  {}", when(s.last_success));
        if s.next_run.is_some() {
            println!("  next run      {}", when(s.next_run));
        }
        if let Some(e) = &s.last_error {
            println!("  last error    {e}");
        }
    }
    Outcome::Ok
}
