//! What happens to a message that is not copied: skipped for its size, or
//! refused (by the POP3 server's RETR or the target's APPEND). Each is
//! recorded in the ledger and reported once, in the same words everywhere.

use tracing::warn;

use super::Report;
use super::failure::{Failure, ledger_failure};
use super::pass::Ctx;
use super::plan::Listed;
use crate::ledger::State;

/// Which command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The POP3 server would not deliver the message.
    Retr,
    /// The target would not take it.
    Append,
}

/// Records a message over `max_message_size` (`size` is what it was seen
/// with) and reports it, unless it was skipped already.
pub(super) async fn skip(
    cx: &Ctx<'_>,
    report: &mut Report,
    m: &Listed,
    size: u64,
    was_skipped: bool,
) -> Result<(), Failure> {
    let reason = format!(
        "{size} bytes is over max_message_size ({} bytes); left on the POP3 server",
        cx.account.policy.max_message_size
    );
    skip_because(cx, report, m, size, was_skipped, reason).await
}

/// Records a message larger than the target's APPENDLIMIT (RFC 7889) and
/// reports it like one over `max_message_size`: never sent, never deleted.
pub(super) async fn skip_over_append_limit(
    cx: &Ctx<'_>,
    report: &mut Report,
    m: &Listed,
    size: u64,
    limit: u64,
    was_skipped: bool,
) -> Result<(), Failure> {
    let reason = format!(
        "{size} bytes is over the target's APPENDLIMIT ({limit} bytes); left on the POP3 server"
    );
    skip_because(cx, report, m, size, was_skipped, reason).await
}

async fn skip_because(
    cx: &Ctx<'_>,
    report: &mut Report,
    m: &Listed,
    size: u64,
    was_skipped: bool,
    reason: String,
) -> Result<(), Failure> {
    let acc = cx.account;
    warn!(uidl = %m.key(), "Skipping a message: {reason}");
    cx.ledger
        .record_skipped(&acc.name, m.key(), size, m.size, &reason)
        .await
        .map_err(ledger_failure)?;
    if !was_skipped {
        report.skipped += 1;
        report
            .problems
            .push(format!("{}: skipped: {reason}", m.key()));
    }
    Ok(())
}

/// A message whose RETR the server refused: retried on later runs, then
/// rejected like a message the target refuses.
pub(super) async fn retr_refused(
    cx: &Ctx<'_>,
    report: &mut Report,
    m: &Listed,
    text: &str,
) -> Result<(), Failure> {
    let acc = cx.account;
    let state = cx
        .ledger
        .record_retr_failure(&acc.name, m.key(), m.size, text, acc.policy.max_attempts)
        .await
        .map_err(ledger_failure)?;
    note_refusal(cx, report, m.key(), state, Refused::Retr, text);
    Ok(())
}

/// Reports a refused message: rejected for good, or to be retried.
pub(super) fn note_refusal(
    cx: &Ctx<'_>,
    report: &mut Report,
    uidl: &str,
    state: State,
    what: Refused,
    text: &str,
) {
    let max = cx.account.policy.max_attempts;
    let (who, command) = match what {
        Refused::Append => ("The target refused the message", ""),
        Refused::Retr => ("The POP3 server refused to deliver the message", "RETR "),
    };
    if state == State::Rejected {
        warn!(%uidl, "{who} {max} times; rejected, left on the POP3 server: {text}");
        report.rejected += 1;
        report
            .problems
            .push(format!("{uidl}: {command}rejected: {text}"));
    } else {
        warn!(%uidl, "{who}; will retry (at most {max} attempts): {text}");
        report.failed += 1;
        report
            .problems
            .push(format!("{uidl}: {command}refused (will retry): {text}"));
    }
}
