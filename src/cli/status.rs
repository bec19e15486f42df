//! `popferry status`: what the ledger knows per account. Contacts no server
//! and needs no password.

use popferry::config::Config;
use popferry::ledger::AccountStatus;

use popferry::status;

use super::Outcome;

pub async fn execute(cfg: &Config, json: bool) -> Outcome {
    let names: Vec<String> = cfg.accounts.iter().map(|a| a.name.clone()).collect();
    let statuses = if super::ledger_may_exist(cfg) {
        let ledger = match super::open_ledger(cfg).await {
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
        let counts: Vec<String> = status::counts(s)
            .iter()
            .map(|(label, n)| format!("{label} {n}"))
            .collect();
        println!("  {}", counts.join("  "));
        for (label, value) in status::times(s) {
            println!("  {label:<13} {value}");
        }
        if let Some(holder) = &s.held_by {
            println!(
                "  {:<13} {holder} (lease until {})",
                "held by",
                status::when(s.lease_until)
            );
        }
    }
    Outcome::Ok
}
