//! `sync --dry-run`: connect, list, plan and report what a pass would copy
//! and delete; check that the target takes our login. It writes nothing,
//! anywhere: not to the ledger (which it may not even have), not to either
//! server.

use super::failure::{Failure, imap_failure, pop_failure};
use super::pass::known;
use super::{Report, listing, plan};
use crate::config::Account;
use crate::imap;
use crate::ledger::{Ledger, now};
use crate::pop3;

/// One dry pass. `ledger` is read when there is one.
pub(super) async fn run(
    acc: &Account,
    ledger: Option<&Ledger>,
    report: &mut Report,
) -> Result<(), Failure> {
    let mut pop = pop3::connect(&acc.source)
        .await
        .map_err(|e| pop_failure(acc, "cannot log in", e))?;
    if let Some(delay) = pop.login_delay() {
        report.retry_after = Some(delay);
    }
    let mut listing = listing::list(acc, &mut pop, ledger, false, report).await?;
    let rows = match ledger {
        Some(l) => {
            known(l, &acc.name, listing.iter().map(|m| m.uidl.as_str()))
                .await?
                .rows
        }
        None => Default::default(),
    };
    plan::resolve_keys(&mut listing, &rows);
    let figures = plan::dry_run(&listing, &rows, &acc.policy, now());
    report.would_copy += figures.would_copy;
    report.would_copy_bytes += figures.would_copy_bytes;
    report.would_delete += figures.would_delete;
    let _ = pop.quit().await;
    // Check that the target accepts our login, without changing it.
    let imap = imap::connect(&acc.target.server)
        .await
        .map_err(|e| imap_failure(acc, "cannot log in", e))?;
    let _ = imap.logout().await;
    Ok(())
}
