//! `popferry sync`: one pass over the accounts, a progress bar on a
//! terminal, a summary at the end.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use popferry::config::Config;
use popferry::sync::{self, Options, Progress, Report};

use super::{Outcome, select_accounts};

/// A bar per account, drawn on stderr while stdout is a terminal.
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn listed(&self, account: &str, messages: u64, bytes: u64) {
        if messages == 0 {
            return;
        }
        let bar = ProgressBar::new(bytes);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(account.to_owned());
        bar.set_message(format!("0/{messages} messages"));
        bar.set_length(bytes);
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
        if let Ok(mut c) = COUNTS.lock() {
            *c = (0, messages);
        }
    }

    fn advanced(&self, _account: &str, bytes: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(bar) = b.as_ref()
        {
            bar.inc(bytes);
            if let Ok(mut c) = COUNTS.lock() {
                c.0 += 1;
                bar.set_message(format!("{}/{} messages", c.0, c.1));
            }
        }
    }
}

static COUNTS: Mutex<(u64, u64)> = Mutex::new((0, 0));

impl Bar {
    fn clear(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(bar) = b.take()
        {
            bar.finish_and_clear();
        }
    }
}

pub async fn execute(cfg: &Config, names: &[String], dry_run: bool) -> Outcome {
    let accounts = match select_accounts(cfg, names) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("popferry: {e}");
            return Outcome::Usage;
        }
    };
    // A dry run must not even create the ledger file.
    let ledger = if dry_run && !super::ledger_may_exist(cfg) {
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
    let opts = Options {
        dry_run,
        held_is_failure: true,
        ..Options::default()
    };
    let bar = Bar {
        bar: Mutex::new(None),
    };
    let show_bar = std::io::stdout().is_terminal() && !dry_run;
    let mut reports = Vec::new();
    for account in accounts {
        let progress: &dyn Progress = if show_bar { &bar } else { &sync::NoProgress };
        let report = sync::run_once(account, ledger.as_ref(), &opts, progress).await;
        bar.clear();
        reports.push(report);
    }
    if let Some(l) = &ledger {
        l.close().await;
    }
    print_summary(&reports, dry_run);
    if reports.iter().all(Report::is_clean) {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}

fn print_summary(reports: &[Report], dry_run: bool) {
    if dry_run {
        println!(
            "{:<20} {:>12} {:>14} {:>12}",
            "account", "would copy", "bytes", "would delete"
        );
        for r in reports {
            println!(
                "{:<20} {:>12} {:>14} {:>12}",
                r.account, r.would_copy, r.would_copy_bytes, r.would_delete
            );
        }
    } else {
        println!(
            "{:<20} {:>8} {:>8} {:>9} {:>8} {:>8} {:>14} {:>9}",
            "account", "copied", "skipped", "rejected", "retry", "deleted", "bytes", "time"
        );
        for r in reports {
            println!(
                "{:<20} {:>8} {:>8} {:>9} {:>8} {:>8} {:>14} {:>8.1}s",
                r.account,
                r.copied,
                r.skipped,
                r.rejected,
                r.failed,
                r.deleted,
                r.bytes,
                r.duration.as_secs_f64()
            );
        }
    }
    for r in reports {
        for p in &r.problems {
            println!("{}: {p}", r.account);
        }
        if let Some(e) = &r.error {
            println!("error: {e}");
        }
        if let Some(p) = &r.paused {
            println!(
                "{}: paused: {}; appending resumes at {} (the daemon resumes by itself; run `popferry sync` again then)",
                r.account,
                p.reason,
                popferry::status::when(Some(p.resumes_at))
            );
        }
    }
}
