//! The listing stage: what the POP3 mailbox holds, as [`plan::Listed`]
//! entries. With UIDL that is LIST + UIDL (one flight with PIPELINING);
//! without it, an ID derived from each message's header section (TOP n 0,
//! or the start of RETR where TOP is missing too).
//!
//! Two rules keep one message, or one bad moment, from costing the whole
//! mailbox (issue 9, cases 2 and 7):
//! - IDs are derived only when the server truly has no UIDL: its CAPA says
//!   so, or it answers no CAPA, refuses UIDL and the ledger holds no row
//!   under a real UIDL. A refusal from a server that announced UIDL (or
//!   that gave real UIDLs before) fails the pass transiently: derived IDs
//!   would make every message new and copy the mailbox again.
//! - A message that cannot be given an ID (a UIDL RFC 1939 does not allow;
//!   without UIDL, a header section over [`MAX_TOP_BYTES`], or a message
//!   over `max_message_size` on a server without TOP) is left on the
//!   server, warned about and reported (in [`Report::problems`], and counted
//!   in [`Report::skipped`] so that the pass is not clean); the rest of the
//!   mailbox flows.

use std::collections::HashMap;

use tracing::{info, warn};

use super::failure::{Failure, describe, ledger_failure, pop_failure};
use super::plan::{self, Listed};
use super::{FailureKind, Report};
use crate::config::Account;
use crate::ledger::Ledger;
use crate::pop3::{self, Pop3ErrorKind, UidlReply};

/// The most a TOP n 0 reply may hold for its header section to be taken as
/// one: beyond it the message is left on the server.
pub const MAX_TOP_BYTES: usize = crate::spool::MAX_HEADER_BYTES * 4;

/// The mailbox's listing, in the server's order (keys not yet resolved:
/// see [`plan::resolve_keys`]). Messages that cannot
/// be given an ID are left out and reported in `report`. `ledger` (none in
/// a dry run without one) is read only when a server that answers no CAPA
/// refuses UIDL, to tell a server without UIDL from a passing failure, and
/// when real UIDLs appear for an account known by derived IDs; only with
/// `adopt` (not in a dry run) are its rows then renamed
/// ([`adopt_real_uidls`]).
pub(super) async fn list(
    acc: &Account,
    pop: &mut pop3::Session,
    ledger: Option<&Ledger>,
    adopt: bool,
    report: &mut Report,
) -> Result<Vec<Listed>, Failure> {
    let (list, uidls) = pop
        .list_and_uidl_entries()
        .await
        .map_err(|e| pop_failure(acc, "LIST/UIDL failed", e))?;
    let sizes: HashMap<u32, u64> = list.into_iter().collect();
    let (pairs, derived) = match uidls {
        UidlReply::Listed { ids, invalid } => {
            for (n, bad) in invalid {
                left_on_server(
                    report,
                    format!(
                        "message {n}: its UIDL {} {} (RFC 1939 allows 1 to 70 characters in 0x21-0x7E); left on the POP3 server",
                        bad.shown, bad.reason
                    ),
                );
            }
            if let Some(ledger) = ledger.filter(|_| adopt) {
                adopt_real_uidls(acc, pop, ledger, &sizes, &ids).await?;
            }
            (ids, false)
        }
        UidlReply::Refused { text } => {
            if !derive_allowed(acc, pop, ledger, &text).await? {
                return Err(uidl_refused(acc, &text));
            }
            (derive_ids(acc, pop, &sizes, report).await?, true)
        }
    };
    Ok(plan::listing(&sizes, pairs, derived))
}

/// A server that gives real UIDLs to an account whose rows all have
/// derived IDs (one without CAPA whose UIDL refusals were passing after
/// all, or one upgraded): before the listing is planned, each message's
/// derived ID is computed once more and the row that has it is renamed to
/// the real UIDL. Without this every message would be new under its real
/// UIDL and be copied again. One query when there is nothing to adopt (an
/// account with real UIDLs already, the usual case).
async fn adopt_real_uidls(
    acc: &Account,
    pop: &mut pop3::Session,
    ledger: &Ledger,
    sizes: &HashMap<u32, u64>,
    ids: &[(u32, String)],
) -> Result<(), Failure> {
    let real = ledger
        .has_server_uidls(&acc.name)
        .await
        .map_err(ledger_failure)?;
    if real
        || ids.is_empty()
        || !ledger
            .has_derived_uidls(&acc.name)
            .await
            .map_err(ledger_failure)?
    {
        return Ok(());
    }
    warn!(
        "The POP3 server gives UIDLs now, where this account's messages were known by IDs derived from their headers; matching them once (TOP n 0 for each message)"
    );
    // Problems (a header too large to derive an ID from) were reported when
    // the IDs were derived; the message then has no row to adopt.
    let mut scratch = Report::default();
    let derived = derive_ids(acc, pop, sizes, &mut scratch).await?;
    let by_number: HashMap<u32, &str> = ids.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let pairs: Vec<(String, String)> = derived
        .into_iter()
        .filter_map(|(n, d)| by_number.get(&n).map(|u| (d, (*u).to_owned())))
        .collect();
    let renamed = ledger
        .rekey_derived(&acc.name, &pairs)
        .await
        .map_err(ledger_failure)?;
    info!(renamed, "Rows now keyed by the server's UIDLs");
    Ok(())
}

/// May a session whose UIDL was refused derive IDs from headers? Only when
/// the server has no UIDL: its CAPA leaves it out, or (no CAPA at all) the
/// ledger has no row under a real UIDL, so it never gave one.
async fn derive_allowed(
    acc: &Account,
    pop: &pop3::Session,
    ledger: Option<&Ledger>,
    text: &str,
) -> Result<bool, Failure> {
    let caps = pop.capabilities();
    if caps.announced() {
        if caps.uidl() {
            warn!("The POP3 server announced UIDL but refused it ({text})");
        }
        return Ok(!caps.uidl());
    }
    let Some(ledger) = ledger else {
        return Ok(true);
    };
    let real = ledger
        .has_server_uidls(&acc.name)
        .await
        .map_err(ledger_failure)?;
    if real {
        warn!("The POP3 server refused UIDL ({text}), though it gave UIDLs before");
    }
    Ok(!real)
}

/// The pass fails, transiently: nothing is copied, nothing deleted.
fn uidl_refused(acc: &Account, text: &str) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        message: describe(
            "POP3",
            &acc.source,
            "UIDL refused",
            &format!(
                "{text:?}; this server has given UIDLs (CAPA or earlier runs), so IDs are not derived from headers (that would copy every message again); nothing copied or deleted, the next pass tries again"
            ),
        ),
        retry_after: None,
    }
}

/// Reports a message that is left on the server: a warning, a line in the
/// report's problems, and a skip (once per pass).
fn left_on_server(report: &mut Report, problem: String) {
    warn!("{problem}");
    if !report.problems.contains(&problem) {
        report.problems.push(problem);
        report.skipped += 1;
    }
}

/// IDs from header digests, for a server without UIDL. A message that cannot
/// have one is reported and left out.
async fn derive_ids(
    acc: &Account,
    pop: &mut pop3::Session,
    sizes: &HashMap<u32, u64>,
    report: &mut Report,
) -> Result<Vec<(u32, String)>, Failure> {
    warn!(
        "The POP3 server does not support UIDL; deriving message IDs from header digests (TOP n 0)"
    );
    let mut numbers: Vec<u32> = sizes.keys().copied().collect();
    numbers.sort_unstable();
    let mut v = Vec::with_capacity(numbers.len());
    let mut top = true;
    for n in numbers {
        let size = sizes.get(&n).copied().unwrap_or(0);
        let header = if top {
            match pop.top(n, 0).await {
                Ok(body) => Some(header_via_top(acc, body, n, size).await?),
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
            None => header_via_retr(acc, pop, n, size).await?,
        };
        match header {
            Ok(h) => v.push((n, plan::derived_uidl(&h))),
            Err(problem) => left_on_server(report, problem),
        }
    }
    Ok(v)
}

/// The most bytes of one TOP or RETR reply read (and dropped) to stay in
/// step after the part that counts: a reply longer than this abandons the
/// session (a message cannot be longer than max_message_size by more than
/// its LIST lie).
pub(super) fn drain_limit(acc: &Account, size: u64) -> u64 {
    acc.policy.max_message_size.max(size).saturating_mul(2).max(
        u64::try_from(MAX_TOP_BYTES)
            .unwrap_or(u64::MAX)
            .saturating_mul(2),
    )
}

/// The header section of message `n` from its TOP n 0 reply: `Err` (a
/// problem to report) when the reply is over [`MAX_TOP_BYTES`]; the rest is
/// then read and dropped, so that the session goes on.
async fn header_via_top(
    acc: &Account,
    mut body: pop3::Body<'_>,
    n: u32,
    size: u64,
) -> Result<Result<Vec<u8>, String>, Failure> {
    let fail = |e| pop_failure(acc, "TOP failed", e);
    let mut head: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let limit = drain_limit(acc, size);
    while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
        total = total.saturating_add(chunk.len() as u64);
        if total > limit {
            return Err(too_long(acc, n, "TOP", limit));
        }
        if head.len().saturating_add(chunk.len()) <= MAX_TOP_BYTES {
            head.extend_from_slice(chunk);
        }
    }
    if total > MAX_TOP_BYTES as u64 {
        return Ok(Err(format!(
            "message {n}: its header section (TOP {n} 0) is {total} bytes, over {MAX_TOP_BYTES}, and the server has no UIDL to name it by; left on the POP3 server"
        )));
    }
    Ok(Ok(head))
}

/// The session is given up: a reply went on far beyond any size it could
/// have.
fn too_long(acc: &Account, n: u32, command: &str, limit: u64) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        message: describe(
            "POP3",
            &acc.source,
            "deriving a message ID",
            &format!("the {command} reply for message {n} goes on past {limit} bytes"),
        ),
        retry_after: None,
    }
}

/// The header section of message `n`, read with RETR (for servers without
/// TOP); the rest is read and dropped. `Err` (a problem to report) when the
/// message is over max_message_size: by its LIST size it is not even asked
/// for; one whose LIST size lied is read to its end (up to a bound) so that
/// the session goes on.
async fn header_via_retr(
    acc: &Account,
    pop: &mut pop3::Session,
    n: u32,
    size: u64,
) -> Result<Result<Vec<u8>, String>, Failure> {
    let max = acc.policy.max_message_size;
    let over = |bytes: u64| {
        format!(
            "message {n}: {bytes} bytes is over max_message_size ({max} bytes), and the server has neither UIDL nor TOP to name it by without reading it all; left on the POP3 server"
        )
    };
    if size > max {
        return Ok(Err(over(size)));
    }
    let fail = |e| pop_failure(acc, "RETR failed", e);
    let limit = crate::spool::MAX_HEADER_BYTES;
    let drain = drain_limit(acc, size);
    let mut head: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut body = pop.retr(n).await.map_err(fail)?;
    while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
        total = total.saturating_add(chunk.len() as u64);
        if total > drain {
            return Err(too_long(acc, n, "RETR", drain));
        }
        let room = limit.saturating_sub(head.len());
        head.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
    }
    if total > max {
        return Ok(Err(over(total)));
    }
    let len = plan::header_section(&head).len();
    head.truncate(len);
    Ok(Ok(head))
}
