//! The listing stage: what the POP3 mailbox holds, as [`plan::Listed`]
//! entries. With UIDL that is LIST + UIDL (one flight with PIPELINING);
//! without it, an ID derived from each message's header section (TOP n 0,
//! or the start of RETR where TOP is missing too).

use std::collections::HashMap;

use tracing::warn;

use super::FailureKind;
use super::failure::{Failure, describe, pop_failure};
use super::plan::{self, Listed};
use crate::config::Account;
use crate::pop3::{self, Pop3ErrorKind};

/// The mailbox's listing, in the server's order (keys not yet resolved:
/// see [`plan::resolve_keys`]).
pub(super) async fn list(acc: &Account, pop: &mut pop3::Session) -> Result<Vec<Listed>, Failure> {
    let (list, uidls) = pop
        .list_and_uidl()
        .await
        .map_err(|e| pop_failure(acc, "LIST/UIDL failed", e))?;
    let sizes: HashMap<u32, u64> = list.into_iter().collect();
    let (pairs, derived) = match uidls {
        Some(v) => (v, false),
        None => (derive_ids(acc, pop, &sizes).await?, true),
    };
    Ok(plan::listing(&sizes, pairs, derived))
}

/// IDs from header digests, for a server without UIDL.
async fn derive_ids(
    acc: &Account,
    pop: &mut pop3::Session,
    sizes: &HashMap<u32, u64>,
) -> Result<Vec<(u32, String)>, Failure> {
    warn!(
        "The POP3 server does not support UIDL; deriving message IDs from header digests (TOP n 0)"
    );
    let mut numbers: Vec<u32> = sizes.keys().copied().collect();
    numbers.sort_unstable();
    let mut v = Vec::with_capacity(numbers.len());
    let mut top = true;
    for n in numbers {
        let header = if top {
            match pop.top(n, 0).await {
                Ok(body) => Some(
                    body.read_to_end(crate::spool::MAX_HEADER_BYTES * 4)
                        .await
                        .map_err(|e| pop_failure(acc, "TOP failed", e))?,
                ),
                Err(e) if matches!(e.kind(), Pop3ErrorKind::Server { .. }) => {
                    warn!(
                        "The POP3 server supports neither UIDL nor TOP; deriving message IDs from each whole message (RETR), which reads every message on every run"
                    );
                    top = false;
                    None
                }
                Err(e) => return Err(pop_failure(acc, "TOP failed", e)),
            }
        } else {
            None
        };
        let header = match header {
            Some(h) => h,
            None => header_via_retr(acc, pop, n).await?,
        };
        v.push((n, plan::derived_uidl(&header)));
    }
    Ok(v)
}

/// The header section of message `n`, read with RETR (for servers without
/// TOP). The rest is read and dropped, up to max_message_size.
async fn header_via_retr(
    acc: &Account,
    pop: &mut pop3::Session,
    n: u32,
) -> Result<Vec<u8>, Failure> {
    let fail = |e| pop_failure(acc, "RETR failed", e);
    let limit = crate::spool::MAX_HEADER_BYTES;
    let mut head: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut body = pop.retr(n).await.map_err(fail)?;
    while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
        total = total.saturating_add(chunk.len() as u64);
        if total > acc.policy.max_message_size {
            return Err(Failure {
                kind: FailureKind::Transient,
                message: describe(
                    "POP3",
                    &acc.source,
                    "deriving a message ID",
                    &format!("message {n} is larger than max_message_size"),
                ),
                retry_after: None,
            });
        }
        let room = limit.saturating_sub(head.len());
        head.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
    }
    let len = plan::header_section(&head).len();
    head.truncate(len);
    Ok(head)
}
