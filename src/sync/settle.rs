//! The settle stage: before a message whose APPEND may have landed is
//! appended again (an intent without a result, or any message while a lost
//! ledger is recovered), look for it in the target mailbox.
//!
//! Candidates come by Message-ID and size (without a Message-ID: size and
//! the SHA-256 of the header section), minus the UIDs the ledger gives to
//! other messages; the one kept must have the message's SHA-256. Two
//! messages sharing a Message-ID and a size are thus never mistaken for
//! each other.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::failure::{Failure, imap_failure, ledger_failure};
use super::headers::HeaderFacts;
use super::pass::{Ctx, intent};
use super::plan::Fetch;
use crate::config::Account;
use crate::imap;
use crate::spool::SpooledMessage;

/// What the pass knows of the target mailbox.
#[derive(Debug, Default)]
pub(super) struct TargetState {
    /// Messages in the mailbox when the pass connected.
    pub messages: u32,
    pub uidvalidity: Option<u32>,
    /// Target UIDs the ledger gives to messages of this account (loaded at
    /// the first lookup, then kept up to date): a lookup never settles a
    /// message with one of them.
    pub claimed: Option<HashSet<u32>>,
}

/// Connects and logs in to the target, and makes sure the mailbox exists.
pub(super) async fn connect(
    acc: &Account,
    recovering: bool,
) -> Result<(imap::Session, TargetState), Failure> {
    let mut s = imap::connect(&acc.target.server)
        .await
        .map_err(|e| imap_failure(acc, "cannot log in", e))?;
    let status = s.ensure_mailbox(&acc.target.mailbox).await.map_err(|e| {
        imap_failure(
            acc,
            &format!("cannot open mailbox {:?}", acc.target.mailbox),
            e,
        )
    })?;
    if recovering && status.exists > 0 {
        info!(
            messages = status.exists,
            "The ledger has no record of this account and the target mailbox is not empty; each message is looked up there before it is appended"
        );
    }
    let state = TargetState {
        messages: status.exists,
        uidvalidity: status.uidvalidity,
        claimed: None,
    };
    Ok((s, state))
}

/// Records the intent, then looks for the message in the target. Returns
/// true when it was there (and is now recorded as appended), false when it
/// must be appended.
pub(super) async fn settle(
    cx: &Ctx<'_>,
    target: &mut TargetState,
    session: &mut imap::Session,
    f: &Fetch<'_>,
    msg: &SpooledMessage,
    sha: &str,
) -> Result<bool, Failure> {
    let acc = cx.account;
    let m = f.listed;
    let facts = HeaderFacts::parse(msg.header());
    cx.ledger
        .record_intent(&acc.name, &intent(m, msg, &facts, sha, &acc.target.mailbox))
        .await
        .map_err(ledger_failure)?;
    let claimed = match target.claimed.take() {
        Some(c) => c,
        None => cx
            .ledger
            .claimed_uids(&acc.name, &acc.target.mailbox, target.uidvalidity)
            .await
            .map_err(ledger_failure)?,
    };
    let found = find_in_target(session, acc, msg, &facts, &claimed).await;
    let claimed = target.claimed.insert(claimed);
    let Some(uid) = found? else {
        debug!(uidl = %m.key(), "Not in the target mailbox; appending");
        return Ok(false);
    };
    info!(uidl = %m.key(), uid, "Already in the target mailbox; not appending again");
    cx.ledger
        .record_appended(&acc.name, m.key(), target.uidvalidity, Some(uid))
        .await
        .map_err(ledger_failure)?;
    claimed.insert(uid);
    Ok(true)
}

/// Looks for `msg` in the target mailbox (see the module doc).
async fn find_in_target(
    imap: &mut imap::Session,
    acc: &Account,
    msg: &SpooledMessage,
    facts: &HeaderFacts,
    claimed: &HashSet<u32>,
) -> Result<Option<u32>, Failure> {
    let fail = |e| imap_failure(acc, "looking for a message in the target failed", e);
    let mailbox = acc.target.mailbox.as_str();
    let candidates = match &facts.message_id {
        Some(mid) => imap.find_message(mailbox, mid, msg.len()).await,
        None => {
            let digest: [u8; 32] = Sha256::digest(msg.header()).into();
            imap.find_by_header(mailbox, digest, msg.len()).await
        }
    }
    .map_err(fail)?;
    let unclaimed = candidates.into_iter().filter(|u| !claimed.contains(u));
    imap.find_copy(unclaimed, msg).await.map_err(fail)
}
