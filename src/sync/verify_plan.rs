//! What `popferry verify` concludes, apart from finding it out: given the
//! POP3 listing (keys resolved by [`super::plan::resolve_keys`], as a pass
//! does), what the next pass would do with each message
//! ([`super::plan::session`]), the ledger's rows and what was found in the
//! target mailbox, the fate of every message; and what `--repair` changes.
//!
//! Why a module of its own: a wrong verdict either hides lost mail or, with
//! `--repair`, copies a message twice. Here the verdicts are tested with
//! tables of cases, without a server; nothing in this file does I/O.

use std::collections::{HashMap, HashSet};

use super::plan::{Listed, SessionPlan};
use crate::ledger::{AuditRow, State};

/// Where a row's copy was found in the target mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// There, with this UID.
    At(u32),
    /// Looked for, not there.
    Absent,
    /// Not looked for (the row says nothing was copied, or has nothing to
    /// look by).
    NotLookedUp,
}

/// The fate of one message (or ledger row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Copied, and the copy is in the target mailbox.
    Present,
    /// Copied, but the copy is gone from the target (moved or deleted
    /// there); still on the POP3 server, so `--repair` copies it again.
    Missing,
    /// Copied, gone from the target, and no longer on the POP3 server:
    /// nothing is left to copy again.
    Lost,
    /// On the POP3 server, not copied yet: the next pass copies it.
    NotCopied,
    /// The ledger has the intent (or a refusal) without a result, but the
    /// copy is in the target: the next pass records it (`--repair` does now).
    Unrecorded,
    /// Over `max_message_size`: left on the POP3 server.
    Skipped,
    /// Refused `max_attempts` times: left on the POP3 server.
    Rejected,
    /// A row of a message that was never copied and is no longer on the
    /// POP3 server (deleted there before it was copied).
    Stale,
}

impl Verdict {
    /// Is a message with this fate accounted for (exit status 0)? Skipped
    /// and rejected messages are: the ledger says where they are (on the
    /// POP3 server) and why.
    pub fn accounted_for(self) -> bool {
        matches!(
            self,
            Verdict::Present | Verdict::Skipped | Verdict::Rejected
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Present => "present",
            Verdict::Missing => "missing",
            Verdict::Lost => "lost",
            Verdict::NotCopied => "not-copied",
            Verdict::Unrecorded => "unrecorded",
            Verdict::Skipped => "skipped",
            Verdict::Rejected => "rejected",
            Verdict::Stale => "stale",
        }
    }

    /// What it means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Present => "copied, in the target",
            Verdict::Missing => {
                "copied, but missing from the target (moved or deleted there); `popferry verify --repair` copies it again"
            }
            Verdict::Lost => {
                "copied, but missing from the target and no longer on the POP3 server; nothing to copy again (`--repair` forgets the row)"
            }
            Verdict::NotCopied => "on the POP3 server, not copied yet; the next sync copies it",
            Verdict::Unrecorded => {
                "in the target, but the ledger has no record of the copy; the next sync records it"
            }
            Verdict::Skipped => "over max_message_size; left on the POP3 server",
            Verdict::Rejected => "refused by the target too often; left on the POP3 server",
            Verdict::Stale => {
                "never copied and no longer on the POP3 server (`--repair` forgets the row)"
            }
        }
    }
}

/// One message's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The ledger key (the UIDL unless it was not enough).
    pub key: String,
    /// The POP3 message number, when it is listed.
    pub number: Option<u32>,
    /// LIST size when listed, else the row's size.
    pub size: u64,
    pub verdict: Verdict,
    /// The copy's UID in the target, when found there.
    pub uid: Option<u32>,
}

/// Does this row say the message was (or may have been) copied, so that
/// its copy is to be looked for in the target?
pub fn looks_in_target(row: &AuditRow) -> bool {
    match row.state {
        State::Appended | State::Deleted => true,
        // An intent (or a refusal after one) may have landed: it has a
        // digest or a Message-ID to look by.
        State::Appending | State::Pending => row.sha256.is_some() || row.message_id.is_some(),
        State::Skipped | State::Rejected => false,
    }
}

/// Can the row's UID be trusted in the target as it is now: the copy went
/// to this mailbox, under this UIDVALIDITY? (A changed UIDVALIDITY means
/// the UIDs are unknown.)
pub fn uid_usable(row: &AuditRow, mailbox: &str, uidvalidity: Option<u32>) -> Option<u32> {
    let same_mailbox = row.mailbox.as_deref().is_none_or(|m| m == mailbox);
    match (row.uid, row.uidvalidity, uidvalidity) {
        (Some(uid), Some(theirs), Some(now)) if same_mailbox && theirs == now => Some(uid),
        _ => None,
    }
}

/// The verdict on one row, given whether its message is listed on the POP3
/// server, what the next pass would do with it, and what the target holds.
fn judge(state: Option<State>, listed: bool, next_pass_fetches: bool, found: Found) -> Verdict {
    let present = matches!(found, Found::At(_));
    match state {
        // A pass would copy it (or, too large, skip it).
        None if next_pass_fetches => Verdict::NotCopied,
        None => Verdict::Skipped,
        Some(State::Appended | State::Deleted) => match (present, listed) {
            (true, _) => Verdict::Present,
            (false, true) => Verdict::Missing,
            (false, false) => Verdict::Lost,
        },
        Some(State::Appending | State::Pending) => match (present, listed) {
            (true, _) => Verdict::Unrecorded,
            (false, true) => Verdict::NotCopied,
            (false, false) => Verdict::Stale,
        },
        Some(State::Skipped) if !listed => Verdict::Stale,
        // The limit grew past its size: the next pass copies it.
        Some(State::Skipped) if next_pass_fetches => Verdict::NotCopied,
        Some(State::Skipped) => Verdict::Skipped,
        Some(State::Rejected) if !listed => Verdict::Stale,
        Some(State::Rejected) => Verdict::Rejected,
    }
}

/// The verdict on every listed message and every other row of the
/// account. `next` is the plan a pass would make now for the listing (with
/// nothing attempted yet), `rows` the account's rows by key, `found` what
/// the target lookups said by key (a key absent from it was not looked up).
pub fn classify(
    listing: &[Listed],
    next: &SessionPlan<'_>,
    rows: &HashMap<String, AuditRow>,
    found: &HashMap<String, Found>,
) -> Vec<Entry> {
    let fetches: HashSet<&str> = next.fetch.iter().map(|f| f.listed.key()).collect();
    let found_of = |key: &str| found.get(key).copied().unwrap_or(Found::NotLookedUp);
    let uid_of = |f: Found| match f {
        Found::At(uid) => Some(uid),
        Found::Absent | Found::NotLookedUp => None,
    };
    let mut out = Vec::with_capacity(listing.len().max(rows.len()));
    let mut seen: HashSet<&str> = HashSet::with_capacity(listing.len());
    for m in listing {
        seen.insert(m.key());
        let row = rows.get(m.key());
        let f = found_of(m.key());
        out.push(Entry {
            key: m.key().to_owned(),
            number: Some(m.number),
            size: m.size,
            verdict: judge(row.map(|r| r.state), true, fetches.contains(m.key()), f),
            uid: uid_of(f),
        });
    }
    let mut unlisted: Vec<&AuditRow> = rows
        .values()
        .filter(|r| !seen.contains(r.key.as_str()))
        .collect();
    unlisted.sort_by(|a, b| a.key.cmp(&b.key));
    for r in unlisted {
        let f = found_of(&r.key);
        out.push(Entry {
            key: r.key.clone(),
            number: None,
            size: r.size,
            verdict: judge(Some(r.state), false, false, f),
            uid: uid_of(f),
        });
    }
    out
}

/// Target UIDs no row of the account accounts for: reported, never touched.
pub fn unknown_in_target(target: &[(u32, u64)], entries: &[Entry]) -> Vec<(u32, u64)> {
    let known: HashSet<u32> = entries.iter().filter_map(|e| e.uid).collect();
    target
        .iter()
        .filter(|(uid, _)| !known.contains(uid))
        .copied()
        .collect()
}

/// What `--repair` changes in the ledger before its sync pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    /// Copies gone from the target, still on the POP3 server: back to an
    /// unresolved intent, so that the pass looks for each in the target
    /// once more (content compared) and appends it only if not found.
    pub reopen: Vec<String>,
    /// Intents (or refusals) whose copy is in the target: recorded as
    /// appended with that UID.
    pub resolve: Vec<(String, u32)>,
    /// Rows of messages on neither side (`Lost`, `Stale`): removed.
    pub forget: Vec<String>,
}

impl Repairs {
    pub fn is_empty(&self) -> bool {
        self.reopen.is_empty() && self.resolve.is_empty() && self.forget.is_empty()
    }
}

/// The ledger changes `--repair` makes for these verdicts. Messages not
/// copied yet need none: the sync pass that follows copies them.
pub fn repairs(entries: &[Entry]) -> Repairs {
    let mut out = Repairs::default();
    for e in entries {
        match (e.verdict, e.uid) {
            (Verdict::Missing, _) => out.reopen.push(e.key.clone()),
            (Verdict::Unrecorded, Some(uid)) => out.resolve.push((e.key.clone(), uid)),
            (Verdict::Lost | Verdict::Stale, _) => out.forget.push(e.key.clone()),
            _ => {}
        }
    }
    out
}

/// How many messages have each verdict (the summary's columns).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub present: u64,
    pub missing: u64,
    pub lost: u64,
    pub not_copied: u64,
    pub unrecorded: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub stale: u64,
    /// Target messages no row accounts for (not a problem: the mailbox may
    /// hold other mail).
    pub unknown_in_target: u64,
}

/// The counts of `entries`, plus `unknown` target messages.
pub fn count(entries: &[Entry], unknown: usize) -> Counts {
    let mut c = Counts {
        unknown_in_target: unknown as u64,
        ..Counts::default()
    };
    for e in entries {
        let n = match e.verdict {
            Verdict::Present => &mut c.present,
            Verdict::Missing => &mut c.missing,
            Verdict::Lost => &mut c.lost,
            Verdict::NotCopied => &mut c.not_copied,
            Verdict::Unrecorded => &mut c.unrecorded,
            Verdict::Skipped => &mut c.skipped,
            Verdict::Rejected => &mut c.rejected,
            Verdict::Stale => &mut c.stale,
        };
        *n += 1;
    }
    c
}

#[cfg(test)]
#[path = "verify_plan_tests.rs"]
mod tests;
