//! What a pass decides, apart from doing it: given the POP3 listing, the
//! ledger's rows and the policy, which messages to copy, which to look up in
//! the target first, which to skip, which may be deleted, and when a
//! recovery is over.
//!
//! Why a module of its own: these decisions are where mail is lost or
//! duplicated when they are wrong, and here they can be tested with tables
//! of cases, without a server. Nothing in this file does I/O or is async;
//! the stages around it ([`super::pass`] and its neighbours) carry the plan
//! out. `verify` is to reuse the same functions, so it cannot drift from
//! `sync`.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::config::{DeletePolicy, Policy};
use crate::ledger::{Known, State};
use crate::spool::hex;

/// One entry of the POP3 listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The message number in this POP3 session.
    pub number: u32,
    /// The server's UIDL, or one derived from the header section.
    pub uidl: String,
    /// The message's key in the ledger when it is not its UIDL, because
    /// that UIDL is another message's (see [`resolve_keys`]). Kept apart
    /// (rather than a key for every message) so that a listing of 100,000
    /// messages holds each UIDL once; [`Listed::key`] reads it.
    pub rekey: Option<String>,
    /// The UIDL was derived (the server has no UIDL).
    pub derived: bool,
    /// The size LIST announced (a server may lie about it).
    pub size: u64,
}

impl Listed {
    /// The message's key in the ledger: its UIDL, unless [`resolve_keys`]
    /// gave it another.
    pub fn key(&self) -> &str {
        self.rekey.as_deref().unwrap_or(&self.uidl)
    }
}

/// Joins LIST and UIDL into one listing, in the server's UIDL order; a
/// message missing from LIST has size 0. Every message gets its UIDL as
/// its key; [`resolve_keys`] then gives another key to a message whose UIDL
/// is taken.
pub fn listing(sizes: &HashMap<u32, u64>, uidls: Vec<(u32, String)>, derived: bool) -> Vec<Listed> {
    uidls
        .into_iter()
        .map(|(number, uidl)| Listed {
            number,
            size: sizes.get(&number).copied().unwrap_or(0),
            rekey: None,
            uidl,
            derived,
        })
        .collect()
}

/// A listed message whose UIDL is not enough to tell it apart: its key in
/// the ledger is another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    pub number: u32,
    pub uidl: String,
    pub key: String,
    /// Why: the UIDL is listed for another message at the same time, or
    /// the ledger's row for it has another LIST size (a reused UIDL).
    pub twice_listed: bool,
}

/// Gives each listed message its ledger key (guarantee 8: a UIDL is not
/// trusted alone). The key is the UIDL, unless
/// - the ledger's row for that UIDL was written with another LIST size
///   (the server gave the UIDL of a message that is gone to a new one), or
///   is marked superseded (the same, found out from the header section
///   before a DELE, when the size agreed; see [`super::reuse`]), or
/// - an earlier message of this listing has the key already (two messages
///   listed at once under one UIDL: popa3d's header hashes, GNU Mailutils'
///   X-UIDL copies);
///
/// then it is `"UIDL SIZE"`, and `"UIDL SIZE N"` (N = 2, 3, ...) for more
/// messages of one size. A space cannot occur in a UIDL, so such a key
/// never meets a server's own. Rows written before the LIST size was kept
/// are matched by UIDL alone, as they always were.
pub fn resolve_keys(listing: &mut [Listed], rows: &HashMap<String, Known>) -> Vec<Rekeyed> {
    // UIDLs kept as keys so far (borrowed: a pass may list 100,000
    // messages), and the few keys made here.
    let mut plain: HashSet<&str> = HashSet::with_capacity(listing.len());
    let mut made: HashSet<String> = HashSet::new();
    let mut changes: Vec<(usize, String, bool)> = Vec::new();
    for (i, m) in listing.iter().enumerate() {
        let reused = rows
            .get(&m.uidl)
            .is_some_and(|r| r.superseded || r.listed_size.is_some_and(|s| s != m.size));
        let twice = plain.contains(m.uidl.as_str());
        if reused || twice {
            let mut key = format!("{} {}", m.uidl, m.size);
            let mut n = 2u32;
            // A key whose row was superseded in turn names a message that
            // is gone too: the next one.
            while made.contains(&key) || rows.get(&key).is_some_and(|r| r.superseded) {
                key = format!("{} {} {n}", m.uidl, m.size);
                n = n.saturating_add(1);
            }
            made.insert(key.clone());
            changes.push((i, key, twice));
        } else {
            plain.insert(m.uidl.as_str());
        }
    }
    drop(plain);
    let mut out = Vec::with_capacity(changes.len());
    for (i, key, twice) in changes {
        if let Some(m) = listing.get_mut(i) {
            out.push(Rekeyed {
                number: m.number,
                uidl: m.uidl.clone(),
                key: key.clone(),
                twice_listed: twice,
            });
            m.rekey = Some(key);
        }
    }
    out
}

/// The ID of a message on a server without UIDL: a digest of its header
/// section, stable across sessions.
pub fn derived_uidl(header: &[u8]) -> String {
    format!("hdr-{}", hex(&Sha256::digest(header)))
}

/// The header section of `head` (the first bytes of a message): up to and
/// including the first empty line, or all of it when there is none.
pub fn header_section(head: &[u8]) -> &[u8] {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(head.len());
    head.get(..end).unwrap_or(head)
}

/// May the message of this `appended` row be deleted from the POP3 server
/// now (`now` in seconds since the epoch)? An age counts from the message's
/// arrival (its `message_date`), else from when it was copied.
pub fn may_delete(policy: &DeletePolicy, row: &Known, now: i64) -> bool {
    match policy {
        DeletePolicy::Never => false,
        DeletePolicy::AfterSync => true,
        DeletePolicy::OlderThan(age) => {
            let since = row.message_date.or(row.appended_at).unwrap_or(now);
            let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
            now.saturating_sub(since) >= age
        }
    }
}

/// The listed messages to DELE: those whose row (by key, so by UIDL and
/// LIST size) says `appended` (read back from the ledger) and that the
/// policy lets go.
pub fn deletable<'l>(
    listing: &'l [Listed],
    rows: &HashMap<String, Known>,
    policy: &DeletePolicy,
    now: i64,
) -> Vec<&'l Listed> {
    listing
        .iter()
        .filter(|m| {
            rows.get(m.key())
                .is_some_and(|r| r.state == State::Appended && may_delete(policy, r, now))
        })
        .collect()
}

/// Rows still `appended` whose UIDL the server no longer lists
/// (`unlisted_appended` of [`crate::ledger::KnownRows`]): a QUIT whose reply
/// we never saw did commit, or someone else deleted them. They are recorded
/// as deleted only under a delete policy (without one, popferry never
/// deletes, so the message went some other way and the row stays).
pub fn gone(unlisted_appended: &[String], policy: &DeletePolicy) -> Vec<String> {
    if *policy == DeletePolicy::Never {
        return Vec::new();
    }
    let mut out = unlisted_appended.to_vec();
    out.sort_unstable();
    out
}

/// Does a ledger that knows nothing of an account (`rows_in_all` rows)
/// while its mailbox is not empty mean the ledger was lost? Then every
/// message must be looked up in the target before it is appended, until a
/// whole pass went through.
pub fn starts_recovery(rows_in_all: u64, listing: &[Listed]) -> bool {
    rows_in_all == 0 && !listing.is_empty()
}

/// The states in which a message's row settles it for a recovery: it was
/// looked up in the target, or its fate is settled without one.
pub const RECOVERY_SETTLED: [State; 4] = [
    State::Appended,
    State::Deleted,
    State::Rejected,
    State::Skipped,
];

/// The keys of a listing, each once ([`resolve_keys`] makes them unique),
/// borrowed: what [`recovery_complete`] counts against.
pub fn listed_keys(listed: &[Listed]) -> HashSet<&str> {
    listed.iter().map(Listed::key).collect()
}

/// A recovery ends only when every message of the mailbox was looked up in
/// the target (or its fate is settled without one): the pass went through
/// the whole mailbox (not cut short by LOGIN-DELAY, not interrupted), and
/// every one of the `keys` of its last listing ([`listed_keys`]) has a row
/// in a state of [`RECOVERY_SETTLED`] (`appended`, `deleted`, `rejected`
/// or `skipped`): `settled` of them do, counted by the ledger
/// ([`crate::ledger::Ledger::count_in_states`]) rather than loaded, as
/// there may be 100,000. A message without a row (its session was
/// abandoned before it was read), `pending` (its RETR or APPEND was
/// refused) or `appending` was not looked up, so recovery goes on.
pub fn recovery_complete(
    keys: &HashSet<&str>,
    settled: u64,
    went_through_all: bool,
    interrupted: bool,
) -> bool {
    went_through_all && !interrupted && u64::try_from(keys.len()).is_ok_and(|n| settled == n)
}

/// What to do with one listed message in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Over `max_message_size` by its LIST size: recorded without being read.
    Skip,
    /// RETR it, then append it (after a lookup if [`Fetch::look_up`]).
    Fetch,
}

/// A listed message the session handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch<'l> {
    pub listed: &'l Listed,
    /// Its state in the ledger, if it has a row.
    pub known: Option<State>,
    /// It must be looked up in the target before it is appended: its APPEND
    /// may have landed (an intent without a result, or a message skipped
    /// after such an intent, which still has a digest). While recovering,
    /// every message is looked up as well (see [`must_look_up`]).
    pub look_up: bool,
}

impl Fetch<'_> {
    /// Was this message skipped already (so skipping it again is not news)?
    pub fn was_skipped(&self) -> bool {
        self.known == Some(State::Skipped)
    }
}

/// Should a fetched message be looked up in the target before its APPEND?
/// `target_messages` is how many the target mailbox held when the pass
/// connected: while recovering, an empty target has nothing to find.
pub fn must_look_up(f: &Fetch<'_>, recovering: bool, target_messages: u32) -> bool {
    f.look_up || (recovering && target_messages > 0)
}

/// One session's plan.
#[derive(Debug, Default)]
pub struct SessionPlan<'l> {
    /// Too large by LIST size: skip without reading.
    pub skip: Vec<Fetch<'l>>,
    /// RETR and append these, in this order.
    pub fetch: Vec<Fetch<'l>>,
    /// Messages and bytes still to handle in the whole pass (this session's
    /// and later ones'), for the progress bar.
    pub todo: u64,
    pub todo_bytes: u64,
    /// More messages wait for another session (delete batches).
    pub more: bool,
}

/// What a session needs to plan.
pub struct Inputs<'l, 'a> {
    pub listing: &'l [Listed],
    pub rows: &'a HashMap<String, Known>,
    pub policy: &'a Policy,
    /// Keys handed to an earlier session of this pass: a refused message is
    /// not tried twice in one pass.
    pub attempted: &'a HashSet<String>,
    /// With a delete policy, at most this many messages per session, so that
    /// their DELEs are committed (at QUIT) before the next batch is read.
    pub delete_batch: usize,
}

/// Is this listed message to be handled, given its ledger row?
fn wanted(m: &Listed, row: Option<&Known>, max: u64) -> bool {
    match row {
        None => true,
        Some(r) => match r.state {
            State::Appending | State::Pending => true,
            // Looked at again if the limit grew past the size it was seen with.
            State::Skipped => m.size <= max && r.size <= max,
            State::Appended | State::Deleted | State::Rejected => false,
        },
    }
}

/// Plans one POP3 session.
pub fn session<'l>(i: &Inputs<'l, '_>) -> SessionPlan<'l> {
    let max = i.policy.max_message_size;
    let mut plan = SessionPlan::default();
    let batch = if i.policy.delete == DeletePolicy::Never {
        usize::MAX
    } else {
        i.delete_batch.max(1)
    };
    let mut fetching = 0usize;
    for m in i.listing.iter().filter(|m| !i.attempted.contains(m.key())) {
        let row = i.rows.get(m.key());
        if !wanted(m, row, max) {
            continue;
        }
        plan.todo += 1;
        plan.todo_bytes = plan.todo_bytes.saturating_add(m.size);
        let f = Fetch {
            listed: m,
            known: row.map(|r| r.state),
            look_up: row.is_some_and(|r| {
                r.state == State::Appending || (r.state == State::Skipped && r.digest)
            }),
        };
        if m.size > max {
            plan.skip.push(f);
        } else if fetching < batch {
            fetching += 1;
            plan.fetch.push(f);
        } else {
            plan.more = true;
        }
    }
    plan
}

/// What a dry run reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DryRun {
    pub would_copy: u64,
    pub would_copy_bytes: u64,
    pub would_delete: u64,
}

/// What a pass would do, without doing it: what it would copy, and what it
/// would delete (what is already copied and may go, and, with after-sync,
/// what it would copy now).
pub fn dry_run(
    listing: &[Listed],
    rows: &HashMap<String, Known>,
    policy: &Policy,
    now: i64,
) -> DryRun {
    let max = policy.max_message_size;
    let mut out = DryRun::default();
    for m in listing {
        let row = rows.get(m.key());
        if wanted(m, row, max) && m.size <= max {
            out.would_copy += 1;
            out.would_copy_bytes = out.would_copy_bytes.saturating_add(m.size);
        }
        let deletes = match row {
            Some(r) if r.state == State::Appended => may_delete(&policy.delete, r, now),
            Some(_) => false,
            None => policy.delete == DeletePolicy::AfterSync && m.size <= max,
        };
        out.would_delete += u64::from(deletes);
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
