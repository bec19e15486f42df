//! The delete stage: DELE what the policy allows among messages whose
//! APPEND is durably recorded, then QUIT. POP3 commits DELE only at QUIT
//! (a dropped session rolls them back), so only a QUIT that said OK is
//! recorded as deleted (guarantee 3).

use tracing::{info, warn};

use super::Report;
use super::failure::{Failure, ledger_failure, pop_failure};
use super::pass::{Ctx, known};
use super::plan::{self, Listed};
use crate::config::DeletePolicy;
use crate::ledger::now;
use crate::pop3;

/// DELEs (in one flight with PIPELINING) and QUITs; without a delete
/// policy, only QUITs.
pub(super) async fn delete_and_quit(
    cx: &Ctx<'_>,
    report: &mut Report,
    mut pop: pop3::Session,
    listing: &[Listed],
) -> Result<(), Failure> {
    let acc = cx.account;
    if acc.policy.delete == DeletePolicy::Never {
        let _ = pop.quit().await;
        return Ok(());
    }
    // Read back from disk: only what the ledger holds as appended counts.
    let uidls = listing.iter().map(|m| m.uidl.as_str());
    let rows = known(cx.ledger, &acc.name, uidls).await?.rows;
    let chosen = plan::deletable(listing, &rows, &acc.policy.delete, now());
    let numbers: Vec<u32> = chosen.iter().map(|m| m.number).collect();
    let answers = pop
        .dele_many(&numbers)
        .await
        .map_err(|e| pop_failure(acc, "DELE failed", e))?;
    let mut deleting = Vec::new();
    for (m, answer) in chosen.iter().zip(answers) {
        match answer {
            Ok(()) => deleting.push(m.key.clone()),
            Err(e) => warn!(uidl = %m.key, "DELE refused, the message stays: {e}"),
        }
    }
    pop.quit()
        .await
        .map_err(|e| pop_failure(acc, "QUIT failed (deletions not committed)", e))?;
    if !deleting.is_empty() {
        cx.ledger
            .record_deleted(&acc.name, &deleting)
            .await
            .map_err(ledger_failure)?;
        info!(count = deleting.len(), "Deleted from the POP3 server");
        report.deleted += deleting.len() as u64;
    }
    Ok(())
}
