//! `popferry verify`: compare, per account, the POP3 listing, the ledger
//! and the target mailbox, and say what became of every message; with
//! `--repair`, put right what can be put right.
//!
//! Why it is shaped so:
//! - It lists the POP3 mailbox and resolves the keys with the very stages
//!   and functions a pass uses ([`super::listing`], [`plan::resolve_keys`],
//!   [`plan::session`]), so `verify` and `sync` cannot disagree about which
//!   message is which, or about what the next pass would copy. The verdicts
//!   are pure functions in [`verify_plan`].
//! - Without `--repair` it changes nothing anywhere: the POP3 session sends
//!   no DELE (it ends with QUIT), the target mailbox is opened read-only
//!   (EXAMINE; sizes and `BODY.PEEK` only), and the ledger is only read,
//!   not even the last run is recorded. The one write is the account's
//!   lease (guarantee 9), taken for the comparison and given back.
//! - The target is looked at by UID where the ledger has the copy's
//!   UIDVALIDITY and UID (one FETCH of every UID and size for the whole
//!   mailbox, no command per message), else by Message-ID and size, else by
//!   size and the SHA-256 the ledger keeps (read back in slices). Every
//!   target UID is given to one row at most.
//! - `--repair` changes the ledger only in ways the normal pass already
//!   knows how to finish (see [`verify_plan::repairs`]): a copy missing
//!   from the target becomes an unresolved intent again, so the pass that
//!   follows (an ordinary [`super::run_once`]) looks for it in the target
//!   once more, comparing content, and appends it only if it is not there:
//!   exactly once, through the usual intent and result records. Then the
//!   account is verified again, and that is what is reported.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::failure::{Failure, imap_failure, ledger_failure, pop_failure};
use super::pass::known;
use super::verify_plan::{self, Counts, Entry, Found, Verdict};
use super::{Options, Progress, Report, lease, listing, plan};
use crate::config::Account;
use crate::imap::{self, MailboxListing};
use crate::ledger::{AuditRow, KnownRows, Ledger, State};
use crate::pop3;
use crate::spool::hex;

/// How `verify` should behave.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Put right what can be put right, then verify again.
    pub repair: bool,
}

/// One message that is not simply copied and present.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The ledger key: the UIDL (or `"UIDL SIZE"` when the UIDL alone was
    /// not enough).
    pub uidl: String,
    /// The POP3 message number, when the server lists it.
    pub number: Option<u32>,
    pub size: u64,
    pub message_id: Option<String>,
    pub verdict: Verdict,
    /// The copy's UID in the target, when found there.
    pub uid: Option<u32>,
}

/// A target message no row of the account accounts for.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TargetMessage {
    pub uid: u32,
    pub size: u64,
}

/// What `--repair` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Repaired {
    /// The counts found before repairing.
    pub before: Counts,
    /// Copies missing from the target handed back to the pass to copy again.
    pub reopened: u64,
    /// Intents whose copy was in the target, recorded as copied.
    pub resolved: u64,
    /// Rows of messages on neither side, removed.
    pub forgotten: u64,
    /// The sync pass that followed.
    pub sync: Report,
}

/// What `verify` found for one account.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub account: String,
    pub counts: Counts,
    /// Every message whose verdict is not `present`, in POP3 order, then
    /// the rows of messages no longer listed.
    pub problems: Vec<Problem>,
    /// Target messages the ledger does not know: reported, never touched.
    pub unknown_in_target: Vec<TargetMessage>,
    /// Messages the POP3 listing could not name (left on the server).
    pub unnamed: Vec<String>,
    pub repaired: Option<Repaired>,
    /// Why the comparison could not be made (names account and server).
    pub error: Option<String>,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl VerifyReport {
    /// Everything accounted for: no error, every message present, skipped
    /// or rejected, and (after `--repair`) its pass clean.
    pub fn is_clean(&self) -> bool {
        self.error.is_none()
            && self.problems.iter().all(|p| p.verdict.accounted_for())
            && self.repaired.as_ref().is_none_or(|r| r.sync.is_clean())
    }
}

/// What one comparison found.
struct Findings {
    entries: Vec<Entry>,
    rows: HashMap<String, AuditRow>,
    uidvalidity: Option<u32>,
    unknown: Vec<(u32, u64)>,
    unnamed: Vec<String>,
}

/// Verifies one account (and repairs it with `--repair`). Never panics on
/// server input; errors are in [`VerifyReport::error`]. Without a ledger
/// (none was ever written) every message counts as not copied, and
/// `--repair` is refused.
pub async fn verify(
    account: &Account,
    ledger: Option<&Ledger>,
    opts: VerifyOptions,
    progress: &dyn Progress,
) -> VerifyReport {
    let started = Instant::now();
    let mut report = VerifyReport {
        account: account.name.clone(),
        ..VerifyReport::default()
    };
    let span = info_span!("verify", account = %account.name);
    let result = run(account, ledger, opts, progress, &mut report)
        .instrument(span)
        .await;
    if let Err(f) = result {
        report.error = Some(format!("account {:?}: {}", account.name, f.message));
    }
    report.duration = started.elapsed();
    let c = &report.counts;
    match &report.error {
        Some(e) => tracing::error!(account = %report.account, "Verify failed: {e}"),
        None => info!(account = %report.account, present = c.present, missing = c.missing,
            lost = c.lost, not_copied = c.not_copied, unrecorded = c.unrecorded,
            skipped = c.skipped, rejected = c.rejected, stale = c.stale,
            unknown_in_target = c.unknown_in_target, seconds = report.duration.as_secs_f64(),
            "Verify finished"),
    }
    report
}

async fn run(
    acc: &Account,
    ledger: Option<&Ledger>,
    opts: VerifyOptions,
    progress: &dyn Progress,
    report: &mut VerifyReport,
) -> Result<(), Failure> {
    let Some(ledger) = ledger else {
        if opts.repair {
            return Err(Failure::transient(
                "no ledger yet, so nothing to repair: run `popferry sync`",
            ));
        }
        let f = check(acc, None, progress).await?;
        fill(report, &f);
        return Ok(());
    };
    if !opts.repair {
        let f = leased(ledger, &acc.name, check(acc, Some(ledger), progress)).await?;
        fill(report, &f);
        return Ok(());
    }
    let mut repaired = Repaired::default();
    leased(ledger, &acc.name, async {
        let f = check(acc, Some(ledger), progress).await?;
        repaired.before = verify_plan::count(&f.entries, f.unknown.len());
        apply(acc, ledger, &f, &mut repaired).await
    })
    .await?;
    // An ordinary pass: it settles the reopened intents (looking in the
    // target first) and copies what is not copied yet.
    repaired.sync = super::run_once(acc, Some(ledger), &Options::default(), progress).await;
    report.repaired = Some(repaired);
    let f = leased(ledger, &acc.name, check(acc, Some(ledger), progress)).await?;
    fill(report, &f);
    Ok(())
}

/// Runs `work` while this process holds the account's lease (guarantee 9),
/// renewing it; gives it back after.
async fn leased<T>(
    ledger: &Ledger,
    account: &str,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match lease::take(ledger, account).await {
        Ok(Ok(())) => {}
        Ok(Err(held)) => {
            return Err(Failure::transient(format!(
                "skipped: another popferry process works on this account: {}",
                lease::describe(&held)
            )));
        }
        Err(e) => return Err(Failure::transient(format!("{e:#}"))),
    }
    let stop = CancellationToken::new();
    let result = {
        let keeping = lease::keep(ledger, account, &stop);
        tokio::pin!(work, keeping);
        tokio::select! {
            r = &mut work => r,
            lost = &mut keeping => Err(Failure::transient(format!(
                "lost the account's lease to {}; stopped",
                lease::describe(&lost)
            ))),
        }
    };
    lease::release(ledger, account).await;
    result
}

/// Puts what a comparison found into the report.
fn fill(report: &mut VerifyReport, f: &Findings) {
    report.counts = verify_plan::count(&f.entries, f.unknown.len());
    report.problems = f
        .entries
        .iter()
        .filter(|e| e.verdict != Verdict::Present)
        .map(|e| Problem {
            uidl: e.key.clone(),
            number: e.number,
            size: e.size,
            message_id: f.rows.get(&e.key).and_then(|r| r.message_id.clone()),
            verdict: e.verdict,
            uid: e.uid,
        })
        .collect();
    report.unknown_in_target = f
        .unknown
        .iter()
        .map(|&(uid, size)| TargetMessage { uid, size })
        .collect();
    report.unnamed = f.unnamed.clone();
}

/// The ledger changes of `--repair` (see [`verify_plan::repairs`]).
async fn apply(
    acc: &Account,
    ledger: &Ledger,
    f: &Findings,
    repaired: &mut Repaired,
) -> Result<(), Failure> {
    let r = verify_plan::repairs(&f.entries);
    if r.is_empty() {
        return Ok(());
    }
    ledger
        .reopen(&acc.name, &r.reopen)
        .await
        .map_err(ledger_failure)?;
    for (key, uid) in &r.resolve {
        ledger
            .record_appended(&acc.name, key, f.uidvalidity, Some(*uid))
            .await
            .map_err(ledger_failure)?;
    }
    ledger
        .forget(&acc.name, &r.forget)
        .await
        .map_err(ledger_failure)?;
    info!(
        reopened = r.reopen.len(),
        resolved = r.resolve.len(),
        forgotten = r.forget.len(),
        "Repairing: copies missing from the target are copied again by the pass that follows"
    );
    repaired.reopened = r.reopen.len() as u64;
    repaired.resolved = r.resolve.len() as u64;
    repaired.forgotten = r.forget.len() as u64;
    Ok(())
}

/// One comparison of the POP3 listing, the ledger and the target. Changes
/// nothing anywhere.
async fn check(
    acc: &Account,
    ledger: Option<&Ledger>,
    progress: &dyn Progress,
) -> Result<Findings, Failure> {
    let mut pop = pop3::connect(&acc.source)
        .await
        .map_err(|e| pop_failure(acc, "cannot log in", e))?;
    // The listing stage reports messages it cannot name here.
    let mut scratch = Report::default();
    let listed = listing::list(acc, &mut pop, ledger, false, &mut scratch).await;
    // No DELE was sent: QUIT commits nothing. It cannot matter any more.
    let _ = pop.quit().await;
    let mut listing = listed?;
    let known_rows = match ledger {
        Some(l) => known(l, &acc.name, listing.iter().map(|m| m.uidl.as_str())).await?,
        None => KnownRows::default(),
    };
    plan::resolve_keys(&mut listing, &known_rows.rows);
    let nothing_attempted = HashSet::new();
    let next = plan::session(&plan::Inputs {
        listing: &listing,
        rows: &known_rows.rows,
        policy: &acc.policy,
        attempted: &nothing_attempted,
        delete_batch: usize::MAX,
    });
    let rows: HashMap<String, AuditRow> = match ledger {
        Some(l) => l
            .audit_rows(&acc.name)
            .await
            .map_err(ledger_failure)?
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect(),
        None => HashMap::new(),
    };
    let mut session = imap::connect(&acc.target.server)
        .await
        .map_err(|e| imap_failure(acc, "cannot log in", e))?;
    let looked = look(acc, &mut session, &rows, progress).await;
    let _ = session.logout().await;
    let (target, found) = looked?;
    let entries = verify_plan::classify(&listing, &next, &rows, &found);
    let unknown = verify_plan::unknown_in_target(&target.messages, &entries);
    Ok(Findings {
        entries,
        rows,
        uidvalidity: target.uidvalidity,
        unknown,
        unnamed: scratch.problems,
    })
}

/// Looks for every row's copy in the target mailbox (see the module doc).
async fn look(
    acc: &Account,
    session: &mut imap::Session,
    rows: &HashMap<String, AuditRow>,
    progress: &dyn Progress,
) -> Result<(MailboxListing, HashMap<String, Found>), Failure> {
    let mailbox = acc.target.mailbox.as_str();
    let fail = |e| imap_failure(acc, "reading the target mailbox failed", e);
    let mut wanted: Vec<&AuditRow> = rows
        .values()
        .filter(|r| verify_plan::looks_in_target(r))
        .collect();
    wanted.sort_by(|a, b| a.key.cmp(&b.key));
    let Some(target) = session.list_messages(mailbox).await.map_err(fail)? else {
        warn!(mailbox, "The target mailbox does not exist");
        let absent = wanted.iter().map(|r| (r.key.clone(), Found::Absent));
        let empty = MailboxListing {
            uidvalidity: None,
            messages: Vec::new(),
        };
        return Ok((empty, absent.collect()));
    };
    let total = wanted.len() as u64;
    progress.listed(&acc.name, total, total);
    let present: HashSet<u32> = target.messages.iter().map(|&(uid, _)| uid).collect();
    let mut taken: HashSet<u32> = HashSet::new();
    let mut found: HashMap<String, Found> = HashMap::with_capacity(wanted.len());
    // By UID: UIDs are never reused under one UIDVALIDITY.
    let mut by_search: Vec<&AuditRow> = Vec::new();
    for r in wanted {
        match verify_plan::uid_usable(r, mailbox, target.uidvalidity) {
            Some(uid) if present.contains(&uid) && taken.insert(uid) => {
                found.insert(r.key.clone(), Found::At(uid));
                progress.advanced(&acc.name, 1);
            }
            _ => by_search.push(r),
        }
    }
    // The others by Message-ID and size, else by size and content.
    for r in by_search {
        let uid = search(session, mailbox, &target, r, &taken)
            .await
            .map_err(fail)?;
        if let Some(uid) = uid {
            taken.insert(uid);
        }
        found.insert(r.key.clone(), uid.map_or(Found::Absent, Found::At));
        progress.advanced(&acc.name, 1);
    }
    Ok((target, found))
}

/// At most this many same-sized candidates are read back for one row
/// without a Message-ID.
const MAX_SIZE_CANDIDATES: usize = 100;

/// The UID of the copy of row `r` in `mailbox`, found by Message-ID and
/// size, or by size and content; never one of `taken`. A row whose copy is
/// not recorded (an intent or a refusal) is only settled on its exact
/// content.
async fn search(
    session: &mut imap::Session,
    mailbox: &str,
    target: &MailboxListing,
    r: &AuditRow,
    taken: &HashSet<u32>,
) -> Result<Option<u32>, imap::ImapError> {
    let mid = r.message_id.as_deref().filter(|m| !m.trim().is_empty());
    let candidates: Vec<u32> = match mid {
        Some(mid) => session.find_message(mailbox, mid, r.size).await?,
        None => target
            .messages
            .iter()
            .rev()
            .filter(|&&(uid, size)| size == r.size && !taken.contains(&uid))
            .map(|&(uid, _)| uid)
            .take(MAX_SIZE_CANDIDATES)
            .collect(),
    };
    let unresolved = matches!(r.state, State::Appending | State::Pending);
    let by_content = unresolved || mid.is_none();
    for uid in candidates.into_iter().filter(|u| !taken.contains(u)) {
        if !by_content {
            return Ok(Some(uid));
        }
        let Some(want) = &r.sha256 else {
            return Ok(None);
        };
        if let Some(got) = session.content_sha256(uid, r.size).await?
            && hex(&got) == *want
        {
            return Ok(Some(uid));
        }
    }
    Ok(None)
}
