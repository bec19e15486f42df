//! Before a DELE: is the message the server lists under a UIDL (and LIST
//! size) still the one copied under it?
//!
//! Why: guarantee 8, a UIDL is not trusted alone. A server that rebuilds
//! its UID list may give a gone message's UIDL to a new one, and when the
//! sizes agree as well nothing in the listing tells them apart; deleting on
//! that match would delete a message that was never copied. So a message
//! that was not read in this very session (its content was not seen under
//! this message number) is read again before its DELE: its header section
//! (`TOP n 0`), compared with the digest its ledger row keeps, or, on a
//! server without TOP or a row older than that digest, the whole message
//! (`RETR`), compared with the row's SHA-256. Messages read in this session
//! need no check, so `delete = "after-sync"` costs nothing more; an age
//! policy reads each header once, when the message becomes old enough.
//!
//! A mismatch marks the row superseded ([`crate::ledger::Ledger::supersede`]):
//! the plan then gives the message listed now a key of its own and copies
//! it like any other.

use tracing::warn;

use super::failure::{Failure, pop_failure};
use super::listing::drain_limit;
use super::plan::Listed;
use crate::config::Account;
use crate::ledger::Fingerprint;
use crate::pop3::{self, Pop3ErrorKind};
use crate::spool;

/// What reading the message again said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The copied message: it may be deleted.
    Same,
    /// Another message under the copied one's UIDL and size.
    Other,
    /// Cannot tell (the row has no digest, the server refused to send the
    /// message): it stays on the server this time.
    Unknown(String),
}

/// Reads message `m` again and compares it with its row's fingerprint.
/// `top` says whether TOP may be tried; it is cleared for the rest of the
/// session when the server refuses TOP. An error is a session that cannot
/// go on (a connection lost, a reply without end).
pub(super) async fn check(
    acc: &Account,
    pop: &mut pop3::Session,
    m: &Listed,
    fp: &Fingerprint,
    top: &mut bool,
) -> Result<Verdict, Failure> {
    let limit = drain_limit(acc, m.size);
    if let (Some(want), true) = (fp.header_sha256.as_deref(), *top) {
        match pop.top(m.number, 0).await {
            Ok(body) => {
                let seen = read(acc, body, limit, "TOP").await?;
                return Ok(same(want, &spool::header_sha256(seen.header())));
            }
            Err(e) if matches!(e.kind(), Pop3ErrorKind::Server { .. }) => *top = false,
            Err(e) => return Err(pop_failure(acc, "TOP failed", e)),
        }
    }
    let Some(want) = fp.sha256.as_deref() else {
        return Ok(Verdict::Unknown(
            "its ledger row has no digest to compare it with".into(),
        ));
    };
    match pop.retr(m.number).await {
        Ok(body) => {
            let seen = read(acc, body, limit, "RETR").await?;
            Ok(same(want, &seen.sha256_hex()))
        }
        Err(e) if matches!(e.kind(), Pop3ErrorKind::Server { .. }) => Ok(Verdict::Unknown(
            format!("the server refused to send it again: {e}"),
        )),
        Err(e) => Err(pop_failure(acc, "RETR failed", e)),
    }
}

fn same(want: &str, seen: &str) -> Verdict {
    if want.eq_ignore_ascii_case(seen) {
        Verdict::Same
    } else {
        Verdict::Other
    }
}

/// Streams one reply through a [`spool::Fingerprint`] (nothing kept but
/// the digest and the bounded header copy); a reply longer than `limit`
/// gives up the session.
async fn read(
    acc: &Account,
    mut body: pop3::Body<'_>,
    limit: u64,
    command: &str,
) -> Result<spool::Fingerprint, Failure> {
    let fail = |e| pop_failure(acc, &format!("{command} failed"), e);
    let mut fp = spool::Fingerprint::default();
    let mut total: u64 = 0;
    while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
        total = total.saturating_add(chunk.len() as u64);
        if total > limit {
            warn!(
                command,
                limit,
                "A reply goes on past any size the message could have; giving up the session"
            );
            return Err(Failure::transient(format!(
                "the POP3 server's {command} reply goes on past {limit} bytes"
            )));
        }
        fp.write(chunk);
    }
    Ok(fp)
}
