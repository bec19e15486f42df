//! The delete stage: DELE what the policy allows among messages whose
//! APPEND is durably recorded, then QUIT. POP3 commits DELE only at QUIT
//! (a dropped session rolls them back), so only a QUIT that said OK is
//! recorded as deleted (guarantee 3). A message not read in this session
//! is read again first, so that nothing is deleted on a UIDL match alone
//! (guarantee 8; [`super::reuse`]).

use std::collections::HashSet;

use tracing::{info, warn};

use super::Report;
use super::failure::{Failure, ledger_failure, pop_failure};
use super::pass::{Ctx, known};
use super::plan::{self, Listed};
use super::reuse::{self, Verdict};
use crate::config::DeletePolicy;
use crate::ledger::now;
use crate::pop3;

/// DELEs (in one flight with PIPELINING) and QUITs; without a delete
/// policy, only QUITs. `seen`: the keys of the messages read in this
/// session; any other message is read again before its DELE
/// ([`reuse::check`]). Returns true when a message was found to be another
/// than the one copied under its UIDL: another session copies it.
pub(super) async fn delete_and_quit(
    cx: &Ctx<'_>,
    report: &mut Report,
    mut pop: pop3::Session,
    listing: &[Listed],
    seen: &HashSet<&str>,
) -> Result<bool, Failure> {
    let acc = cx.account;
    if acc.policy.delete == DeletePolicy::Never {
        let _ = pop.quit().await;
        return Ok(false);
    }
    // Read back from disk: only what the ledger holds as appended counts.
    let uidls = listing.iter().map(|m| m.uidl.as_str());
    let rows = known(cx.ledger, &acc.name, uidls).await?.rows;
    let candidates = plan::deletable(listing, &rows, &acc.policy.delete, now());
    let mut chosen = Vec::with_capacity(candidates.len());
    let mut superseded = false;
    let mut top = true;
    for m in candidates {
        // A derived ID is a digest of the header section already.
        if m.derived || seen.contains(m.key()) {
            chosen.push(m);
            continue;
        }
        let Some(fp) = cx
            .ledger
            .fingerprint(&acc.name, m.key())
            .await
            .map_err(ledger_failure)?
        else {
            continue;
        };
        match reuse::check(acc, &mut pop, m, &fp, &mut top).await? {
            Verdict::Same => chosen.push(m),
            Verdict::Other => {
                warn!(uidl = %m.uidl, n = m.number, "The POP3 server lists another message under the UIDL (and size) of one copied earlier: not deleted; it is copied as a new message");
                cx.ledger
                    .supersede(&acc.name, m.key())
                    .await
                    .map_err(ledger_failure)?;
                superseded = true;
            }
            Verdict::Unknown(why) => {
                warn!(uidl = %m.uidl, n = m.number, "Not deleting a message that cannot be told from another under its UIDL: {why}");
            }
        }
    }
    let numbers: Vec<u32> = chosen.iter().map(|m| m.number).collect();
    let answers = pop
        .dele_many(&numbers)
        .await
        .map_err(|e| pop_failure(acc, "DELE failed", e))?;
    let mut deleting = Vec::new();
    for (m, answer) in chosen.iter().zip(answers) {
        match answer {
            Ok(()) => deleting.push(m.key().to_owned()),
            Err(e) => warn!(uidl = %m.key(), "DELE refused, the message stays: {e}"),
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
    Ok(superseded)
}
