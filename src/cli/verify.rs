//! `popferry verify`: per account, what became of every message (copied and
//! present, missing from the target, not copied yet, skipped, rejected) and
//! what the target holds that the ledger does not know; a progress bar on a
//! terminal, a summary table, one line per problem, or `--json`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use popferry::config::Config;
use popferry::sync::verify_plan::Counts;
use popferry::sync::{self, Progress, VerifyOptions, VerifyReport};

use super::{Outcome, select_accounts};

/// Target messages unknown to the ledger listed in the text output at
/// most (all of them are in `--json`): a shared mailbox may hold thousands.
const MAX_UNKNOWN_SHOWN: usize = 20;

/// A bar counting messages checked (or copied, in a repair's pass), drawn
/// on stderr while stdout is a terminal.
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn listed(&self, account: &str, messages: u64, _bytes: u64) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(old) = b.take() {
                old.finish_and_clear();
            }
            if messages == 0 {
                return;
            }
            let bar = ProgressBar::new(messages);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} messages (eta {eta})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(account.to_owned());
            *b = Some(bar);
        }
    }

    fn advanced(&self, _account: &str, _bytes: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(bar) = b.as_ref()
        {
            bar.inc(1);
        }
    }
}

impl Bar {
    fn clear(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(bar) = b.take()
        {
            bar.finish_and_clear();
        }
    }
}

pub async fn execute(cfg: &Config, names: &[String], json: bool, repair: bool) -> Outcome {
    let accounts = match select_accounts(cfg, names) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("popferry: {e}");
            return Outcome::Usage;
        }
    };
    // Verifying must not even create the ledger file.
    let ledger = if !repair && !super::ledger_may_exist(cfg) {
        None
    } else {
        match super::open_ledger(cfg).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("popferry: {e:#}");
                return Outcome::Failed;
            }
        }
    };
    let bar = Bar {
        bar: Mutex::new(None),
    };
    let show_bar = std::io::stdout().is_terminal() && !json;
    let opts = VerifyOptions { repair };
    let mut reports = Vec::new();
    for account in accounts {
        let progress: &dyn Progress = if show_bar { &bar } else { &sync::NoProgress };
        let report = sync::verify(account, ledger.as_ref(), opts, progress).await;
        bar.clear();
        reports.push(report);
    }
    if let Some(l) = &ledger {
        l.close().await;
    }
    if json {
        match serde_json::to_string_pretty(&reports) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("popferry: {e}");
                return Outcome::Failed;
            }
        }
    } else {
        print_summary(&reports);
    }
    if reports.iter().all(VerifyReport::is_clean) {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}

fn row(name: &str, c: &Counts, time: &str) {
    println!(
        "{:<20} {:>8} {:>8} {:>6} {:>11} {:>11} {:>8} {:>9} {:>6} {:>8} {:>8}",
        name,
        c.present,
        c.missing,
        c.lost,
        c.not_copied,
        c.unrecorded,
        c.skipped,
        c.rejected,
        c.stale,
        c.unknown_in_target,
        time
    );
}

fn print_summary(reports: &[VerifyReport]) {
    println!(
        "{:<20} {:>8} {:>8} {:>6} {:>11} {:>11} {:>8} {:>9} {:>6} {:>8} {:>8}",
        "account",
        "present",
        "missing",
        "lost",
        "not copied",
        "unrecorded",
        "skipped",
        "rejected",
        "stale",
        "unknown",
        "time"
    );
    for r in reports {
        row(
            &r.account,
            &r.counts,
            &format!("{:.1}s", r.duration.as_secs_f64()),
        );
    }
    for r in reports {
        if let Some(rep) = &r.repaired {
            println!(
                "{}: repaired: {} copied again, {} recorded as copied, {} rows forgotten; its sync pass copied {}, deleted {}",
                r.account,
                rep.reopened,
                rep.resolved,
                rep.forgotten,
                rep.sync.copied,
                rep.sync.deleted
            );
            if let Some(e) = &rep.sync.error {
                println!("{}: the repair's sync pass failed: {e}", r.account);
            }
        }
        for p in &r.problems {
            let number = p.number.map_or_else(
                || "not on the POP3 server".to_owned(),
                |n| format!("message {n}"),
            );
            let mid = p
                .message_id
                .as_ref()
                .map_or_else(String::new, |m| format!(", Message-ID {m:?}"));
            println!(
                "{}: {} {} ({number}, {} bytes{mid}): {}",
                r.account,
                p.verdict.as_str(),
                p.uidl,
                p.size,
                p.verdict.describe()
            );
        }
        for m in r.unknown_in_target.iter().take(MAX_UNKNOWN_SHOWN) {
            println!(
                "{}: unknown UID {} ({} bytes): in the target mailbox, not in the ledger; left alone",
                r.account, m.uid, m.size
            );
        }
        if let Some(more) = r.unknown_in_target.len().checked_sub(MAX_UNKNOWN_SHOWN)
            && more > 0
        {
            println!(
                "{}: ... and {more} more target messages not in the ledger (all are in --json)",
                r.account
            );
        }
        for u in &r.unnamed {
            println!("{}: {u}", r.account);
        }
        if let Some(e) = &r.error {
            println!("error: {e}");
        }
    }
}
