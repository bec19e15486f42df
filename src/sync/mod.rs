//! One pass over one account: list the POP3 mailbox, copy what the ledger
//! has not seen into the IMAP mailbox, then delete what the policy allows.
//!
//! This is where the guarantees of DESIGN.md are kept. The decisions (what
//! is new, what must be looked up first, what may be deleted, when a
//! recovery is over) are pure functions in [`plan`], tested with tables of
//! cases; the stages that carry them out are small modules, in the order
//! [`pass`] runs them: [`listing`], [`fetch`] and [`append`] (joined by a
//! bounded queue; [`lanes`] spreads the APPENDs over several sessions
//! where the target lacks LITERAL+, with [`settle`] for messages that may
//! already be in the target), then [`delete`] (with [`reuse`], which reads
//! a message again before a DELE that its UIDL alone would allow). [`dry`]
//! is the dry run. The rules they keep:
//! - the ledger records the intent (durably) before an APPEND is sent, and
//!   the result (durably) after the server's OK;
//! - an intent found unresolved is settled by looking in the target mailbox
//!   (Message-ID and size) before anything is appended again;
//! - DELE is only sent for messages whose `appended` row is on disk, and is
//!   only recorded as done after QUIT said OK (POP3 commits DELE at QUIT);
//! - a message the target refuses is retried on later runs up to
//!   `max_attempts`, then rejected; it never stops the messages after it.
//!
//! The daemon and `popferry sync` both call [`run_once`]; `popferry
//! verify` calls [`verify()`], which compares the POP3 listing, the ledger
//! and the target with the same listing and plan ([`verify_plan`] holds its
//! verdicts).

mod append;
mod budget;
mod delete;
mod dry;
mod failure;
mod fetch;
pub mod headers;
mod lanes;
mod lease;
mod listing;
mod outcome;
mod pass;
pub mod plan;
mod reuse;
mod settle;
mod verify;
pub mod verify_plan;

use std::time::Duration;

pub use lease::{holder as lease_holder, metric as lease_metric};
pub use pass::run_once;
pub use verify::{Problem, Repaired, TargetMessage, VerifyOptions, VerifyReport, verify};

/// How a pass should behave.
#[derive(Clone)]
pub struct Options {
    /// Connect and list, report what would happen, change nothing.
    pub dry_run: bool,
    /// Messages larger than this are spooled to a temporary file.
    pub spool_threshold: usize,
    /// With a delete policy, QUIT (committing DELEs) after this many new
    /// messages and start a new POP3 session, so that a long migration that
    /// is interrupted has deleted most of what it copied.
    pub delete_batch: usize,
    /// Stop at the next safe point (between messages) when cancelled.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
    /// An account another process holds is a failure of this run (`sync`:
    /// exit status 1). Otherwise (the daemon, whose replicas share the
    /// accounts) it is only not this process's turn: [`Report::held_by`].
    pub held_is_failure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            spool_threshold: crate::spool::DEFAULT_MEMORY_THRESHOLD,
            delete_batch: 500,
            cancel: None,
            held_is_failure: false,
        }
    }
}

/// Receives progress events; the command line draws a bar from them.
pub trait Progress: Send + Sync {
    /// A listing is done: this many messages and bytes are to be copied.
    fn listed(&self, _account: &str, _messages: u64, _bytes: u64) {}
    /// One message was handled (copied, skipped or failed).
    fn advanced(&self, _account: &str, _bytes: u64) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Whether a failed pass may succeed by itself later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Timeout, dropped connection, server busy: back off and retry.
    Transient,
    /// Bad password, refused certificate: a person must act.
    Permanent,
}

/// What one pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub account: String,
    /// Messages appended in this pass (including unresolved intents found
    /// already in the target).
    pub copied: u64,
    /// Messages over the size limit, newly skipped in this pass.
    pub skipped: u64,
    /// Messages rejected for good in this pass.
    pub rejected: u64,
    /// Messages refused in this pass (by the target's APPEND or the POP3
    /// server's RETR) that will be retried.
    pub failed: u64,
    /// Messages deleted from the POP3 server in this pass.
    pub deleted: u64,
    /// Bytes appended.
    pub bytes: u64,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// In a dry run: what would be copied and deleted.
    pub would_copy: u64,
    pub would_copy_bytes: u64,
    pub would_delete: u64,
    /// Why the pass failed, if it did (already names account and server).
    pub error: Option<String>,
    pub error_kind: Option<FailureKind>,
    /// A server's LOGIN-DELAY or [IN-USE] asked to wait at least this long.
    #[serde(with = "humantime_serde")]
    pub retry_after: Option<Duration>,
    /// One line per message refused in this pass: UIDL and the server's words.
    pub problems: Vec<String>,
    /// The pass stopped at a safe point because of a shutdown: neither a
    /// success nor a failure.
    pub interrupted: bool,
    /// No pass: another process (a replica) holds the account, described
    /// so. Not a failure unless [`Options::held_is_failure`]; the next try
    /// is no sooner than `retry_after` (the lease's expiry).
    pub held_by: Option<String>,
    /// An upload budget stopped appending: what was admitted went, the rest
    /// waits for `resumes_at`. Neither a failure nor the end of the work.
    pub paused: Option<Paused>,
}

/// Appending stopped because an upload budget is spent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Paused {
    /// When the budget allows more again (unix seconds: the next UTC midnight).
    pub resumes_at: i64,
    /// Which budget, and how much was spent (no secrets; the config's words).
    pub reason: String,
}

impl Report {
    /// True when nothing failed: no error, nothing skipped, refused or rejected.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.skipped == 0 && self.rejected == 0 && self.failed == 0
    }
}
