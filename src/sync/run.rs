//! The pass itself. See the module doc of [`crate::sync`] for the rules.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{Instrument, debug, info, info_span, warn};

use super::headers::HeaderFacts;
use super::{FailureKind, Options, Progress, Report};
use crate::config::{Account, DeletePolicy, ServerSettings};
use crate::imap::{self, ImapError};
use crate::ledger::{Intent, Ledger, MessageRow, State, now};
use crate::pop3::{self, Pop3Error};
use crate::spool::{Spool, SpooledMessage, hex};

/// Why a pass stopped early.
struct Failure {
    kind: FailureKind,
    message: String,
    retry_after: Option<Duration>,
}

/// "what (user u): error", naming the server unless the error already does.
fn describe(side: &str, s: &ServerSettings, what: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let endpoint = s.endpoint.to_string();
    if text.contains(side) && text.contains(&endpoint) {
        format!("{what} (user {}): {text}", s.username)
    } else {
        format!(
            "{side} server {endpoint} (user {}): {what}: {text}",
            s.username
        )
    }
}

/// How long a POP3 server asks us to stay away after [LOGIN-DELAY] when it
/// did not announce the delay (RFC 2449 suggests values around 15 minutes).
const DEFAULT_LOGIN_DELAY: Duration = Duration::from_secs(900);

fn pop_failure(account: &Account, what: &str, e: Pop3Error) -> Failure {
    let kind = if e.is_transient() {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    };
    let retry_after = matches!(e, Pop3Error::LoginDelay { .. }).then_some(DEFAULT_LOGIN_DELAY);
    Failure {
        kind,
        message: describe("POP3", &account.source, what, &e),
        retry_after,
    }
}

fn imap_failure(account: &Account, what: &str, e: ImapError) -> Failure {
    let kind = if e.is_transient() {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    };
    let hint = if matches!(e, ImapError::Auth { .. }) {
        " (check the username and password in [accounts.target])"
    } else {
        ""
    };
    Failure {
        message: format!(
            "{}{hint}",
            describe("IMAP", &account.target.server, what, &e)
        ),
        kind,
        retry_after: None,
    }
}

fn ledger_failure(e: anyhow::Error) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        message: format!("ledger: {e:#}"),
        retry_after: None,
    }
}

fn spool_failure(e: std::io::Error) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        message: format!("cannot spool a message to a temporary file: {e}"),
        retry_after: None,
    }
}

/// Runs one pass for one account and reports what it did. Never panics on
/// server input and never returns early without a report: errors are in
/// [`Report::error`]. `ledger` may be `None` only for a dry run.
pub async fn run_once(
    account: &Account,
    ledger: Option<&Ledger>,
    opts: &Options,
    progress: &dyn Progress,
) -> Report {
    let started = Instant::now();
    let mut report = Report {
        account: account.name.clone(),
        ..Report::default()
    };
    let span = info_span!("sync", account = %account.name);
    async {
        let writable = if opts.dry_run { None } else { ledger };
        if let Some(l) = writable
            && let Err(e) = l.start_run(&account.name).await
        {
            report.error = Some(format!("account {:?}: {e:#}", account.name));
            report.error_kind = Some(FailureKind::Transient);
            return;
        }
        let mut pass = Pass {
            account,
            ledger,
            opts,
            progress,
            imap: None,
            target_count: 0,
            recovering: false,
            report: &mut report,
        };
        let result = pass.run().await;
        if let Some(session) = pass.imap.take() {
            let _ = session.logout().await;
        }
        if let Err(f) = result {
            report.error = Some(format!("account {:?}: {}", account.name, f.message));
            report.error_kind = Some(f.kind);
            report.retry_after = f.retry_after.or(report.retry_after);
        }
        // An interrupted pass leaves last success and the failure count alone.
        let record = !(report.interrupted && report.error.is_none());
        if let Some(l) = writable.filter(|_| record) {
            let err = report
                .error
                .clone()
                .or_else(|| (!report.problems.is_empty()).then(|| report.problems.join("; ")));
            if let Err(e) = l.finish_run(&account.name, err.as_deref()).await {
                warn!("Cannot record the end of the run: {e:#}");
            }
        }
    }
    .instrument(span)
    .await;
    report.duration = started.elapsed();
    log_report(&report, opts.dry_run);
    report
}

fn log_report(r: &Report, dry_run: bool) {
    if dry_run {
        info!(account = %r.account, would_copy = r.would_copy, would_copy_bytes = r.would_copy_bytes,
            would_delete = r.would_delete, "Dry run finished");
    } else if r.interrupted && r.error.is_none() {
        info!(account = %r.account, copied = r.copied, skipped = r.skipped, rejected = r.rejected,
            failed = r.failed, deleted = r.deleted, bytes = r.bytes,
            seconds = r.duration.as_secs_f64(), "Sync interrupted by shutdown");
    } else if let Some(e) = &r.error {
        tracing::error!(account = %r.account, copied = r.copied, skipped = r.skipped,
            rejected = r.rejected, deleted = r.deleted, bytes = r.bytes,
            seconds = r.duration.as_secs_f64(), "Sync failed: {e}");
    } else {
        info!(account = %r.account, copied = r.copied, skipped = r.skipped, rejected = r.rejected,
            failed = r.failed, deleted = r.deleted, bytes = r.bytes,
            seconds = r.duration.as_secs_f64(), "Sync finished");
    }
}

struct Pass<'a> {
    account: &'a Account,
    ledger: Option<&'a Ledger>,
    opts: &'a Options,
    progress: &'a dyn Progress,
    imap: Option<imap::Session>,
    /// Messages in the target mailbox when we connected.
    target_count: u32,
    /// The ledger knew nothing of this account when the pass began: look in
    /// the target before every APPEND (a ledger lost with its volume).
    recovering: bool,
    report: &'a mut Report,
}

/// What [`Pass::copy_one`] did with a message.
enum Copied {
    /// Appended, or found already in the target.
    Yes,
    /// Skipped, refused, or a dry run.
    No,
    /// Skipped, and the POP3 session can no longer be used.
    SessionLost,
}

/// One entry of the POP3 listing.
struct Listed {
    number: u32,
    uidl: String,
    derived: bool,
    size: u64,
}

impl<'a> Pass<'a> {
    async fn run(&mut self) -> Result<(), Failure> {
        // A pass is one POP3 session, or several when a delete policy asks
        // for DELEs to be committed in batches.
        while self.session().await? {}
        Ok(())
    }

    fn ledger(&self) -> Option<&'a Ledger> {
        if self.opts.dry_run { None } else { self.ledger }
    }

    async fn rows(&self) -> Result<HashMap<String, MessageRow>, Failure> {
        match self.ledger {
            Some(l) => l.messages(&self.account.name).await.map_err(ledger_failure),
            None => Ok(HashMap::new()),
        }
    }

    /// One POP3 session. Returns true when another session is needed.
    async fn session(&mut self) -> Result<bool, Failure> {
        let acc = self.account;
        let mut pop = pop3::connect(&acc.source)
            .await
            .map_err(|e| pop_failure(acc, "cannot log in", e))?;
        // RFC 2449 LOGIN-DELAY: the least time between two logins.
        if let Some(secs) = pop
            .capabilities()
            .args("LOGIN-DELAY")
            .first()
            .and_then(|a| a.parse::<u64>().ok())
        {
            let delay = Duration::from_secs(secs);
            self.report.retry_after = Some(self.report.retry_after.map_or(delay, |d| d.max(delay)));
        }
        let listing = self.listing(&mut pop).await?;
        let mut rows = self.rows().await?;
        if rows.is_empty() && !listing.is_empty() && self.ledger().is_some() {
            self.recovering = true;
        }

        // Rows still `appended` whose message left the server: a QUIT whose
        // reply we never saw did commit, or someone else deleted it.
        if let Some(l) = self.ledger() {
            let present: HashSet<&str> = listing.iter().map(|m| m.uidl.as_str()).collect();
            let gone: Vec<String> = rows
                .values()
                .filter(|r| r.state == State::Appended && !present.contains(r.uidl.as_str()))
                .map(|r| r.uidl.clone())
                .collect();
            if !gone.is_empty() && acc.policy.delete != DeletePolicy::Never {
                l.record_deleted(&acc.name, &gone)
                    .await
                    .map_err(ledger_failure)?;
                for u in &gone {
                    if let Some(r) = rows.get_mut(u) {
                        r.state = State::Deleted;
                    }
                }
            }
        }

        let max = acc.policy.max_message_size;
        let todo: Vec<&Listed> = listing
            .iter()
            .filter(|m| match rows.get(&m.uidl) {
                None => true,
                Some(r) => match r.state {
                    State::Appending | State::Pending => true,
                    // A skipped message is looked at again if the limit
                    // grew past the size it was seen with.
                    State::Skipped => m.size <= max && r.size <= max,
                    State::Appended | State::Deleted | State::Rejected => false,
                },
            })
            .collect();
        let todo_bytes: u64 = todo.iter().map(|m| m.size).sum();
        debug!(
            listed = listing.len(),
            new = todo.len(),
            "Listed the POP3 mailbox"
        );

        if self.opts.dry_run {
            self.report.would_copy += todo.iter().filter(|m| m.size <= max).count() as u64;
            self.report.would_copy_bytes += todo
                .iter()
                .filter(|m| m.size <= max)
                .map(|m| m.size)
                .sum::<u64>();
            let deletable = listing
                .iter()
                .filter(|m| match rows.get(&m.uidl) {
                    Some(r) if r.state == State::Appended => self.may_delete(r),
                    Some(_) => false,
                    None => acc.policy.delete == DeletePolicy::AfterSync && m.size <= max,
                })
                .count();
            self.report.would_delete += deletable as u64;
            let _ = pop.quit().await;
            // Check that the target accepts our login, without changing it.
            let imap = imap::connect(&acc.target.server)
                .await
                .map_err(|e| imap_failure(acc, "cannot log in", e))?;
            let _ = imap.logout().await;
            return Ok(false);
        }

        self.progress
            .listed(&acc.name, todo.len() as u64, todo_bytes);
        let batch = if acc.policy.delete == DeletePolicy::Never {
            usize::MAX
        } else {
            self.opts.delete_batch.max(1)
        };
        let mut more = false;
        let mut appended_here = 0usize;
        for m in todo {
            // A safe point: the previous message is fully recorded.
            if self.opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                info!("Stopping early: shutting down");
                self.report.interrupted = true;
                break;
            }
            if appended_here >= batch {
                more = true;
                break;
            }
            let span = info_span!("message", uidl = %m.uidl, n = m.number);
            let row = rows.get(&m.uidl).cloned();
            let copied = self
                .copy_one(&mut pop, m, row.as_ref())
                .instrument(span)
                .await?;
            self.progress.advanced(&acc.name, m.size);
            match copied {
                Copied::Yes => appended_here += 1,
                Copied::No => {}
                Copied::SessionLost => {
                    // The POP3 session is out of step (a message that never
                    // ended): no DELE, no QUIT; the next session goes on.
                    return Ok(true);
                }
            }
        }

        self.delete_and_quit(pop, &listing).await?;
        Ok(more)
    }

    /// UIDL listing with sizes; without UIDL support, IDs derived from a
    /// digest of each message's header section (TOP n 0).
    async fn listing(&mut self, pop: &mut pop3::Session) -> Result<Vec<Listed>, Failure> {
        let acc = self.account;
        let sizes: HashMap<u32, u64> = pop
            .list()
            .await
            .map_err(|e| pop_failure(acc, "LIST failed", e))?
            .into_iter()
            .collect();
        let uidls = pop
            .uidl()
            .await
            .map_err(|e| pop_failure(acc, "UIDL failed", e))?;
        let (pairs, derived) = match uidls {
            Some(v) => (v, false),
            None => {
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
                            Err(Pop3Error::Server { .. }) => {
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
                        None => self.header_via_retr(pop, n).await?,
                    };
                    v.push((n, format!("hdr-{}", hex(&Sha256::digest(&header)))));
                }
                (v, true)
            }
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(pairs.len());
        for (number, uidl) in pairs {
            if !seen.insert(uidl.clone()) {
                warn!(uidl = %uidl, n = number, "The POP3 server lists this UIDL twice; only the first is copied");
                continue;
            }
            let size = sizes.get(&number).copied().unwrap_or(0);
            out.push(Listed {
                number,
                uidl,
                derived,
                size,
            });
        }
        Ok(out)
    }

    /// The header section of message `n`, read with RETR (for servers
    /// without TOP). The rest is read and dropped, up to max_message_size.
    async fn header_via_retr(&self, pop: &mut pop3::Session, n: u32) -> Result<Vec<u8>, Failure> {
        let acc = self.account;
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
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
            .unwrap_or(head.len());
        head.truncate(end);
        Ok(head)
    }

    fn may_delete(&self, row: &MessageRow) -> bool {
        match self.account.policy.delete {
            DeletePolicy::Never => false,
            DeletePolicy::AfterSync => true,
            DeletePolicy::OlderThan(age) => {
                let since = row.message_date.or(row.appended_at).unwrap_or_else(now);
                let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
                now().saturating_sub(since) >= age
            }
        }
    }

    async fn skip(
        &mut self,
        m: &Listed,
        size: u64,
        row: Option<&MessageRow>,
    ) -> Result<(), Failure> {
        let acc = self.account;
        let reason = format!(
            "{size} bytes is over max_message_size ({} bytes); left on the POP3 server",
            acc.policy.max_message_size
        );
        warn!(uidl = %m.uidl, "Skipping a message: {reason}");
        if let Some(l) = self.ledger() {
            l.record_skipped(&acc.name, &m.uidl, size, &reason)
                .await
                .map_err(ledger_failure)?;
        }
        if row.map(|r| r.state) != Some(State::Skipped) {
            self.report.skipped += 1;
            self.report
                .problems
                .push(format!("{}: skipped: {reason}", m.uidl));
        }
        Ok(())
    }

    /// Copies one message. Returns true when it was appended (or found
    /// already in the target).
    async fn copy_one(
        &mut self,
        pop: &mut pop3::Session,
        m: &Listed,
        row: Option<&MessageRow>,
    ) -> Result<Copied, Failure> {
        let acc = self.account;
        let max = acc.policy.max_message_size;
        if m.size > max {
            self.skip(m, m.size, row).await?;
            return Ok(Copied::No);
        }
        let msg = self.retrieve(pop, m.number, max).await?;
        let Some(msg) = msg else {
            // The LIST size lied: the message is larger than announced. Its
            // RETR was abandoned, which leaves the session out of step.
            self.skip(m, max.saturating_add(1), row).await?;
            return Ok(Copied::SessionLost);
        };
        let facts = HeaderFacts::parse(msg.header());
        let Some(ledger) = self.ledger() else {
            return Ok(Copied::No);
        };
        let mailbox = acc.target.mailbox.as_str();

        let sha = msg.sha256_hex();
        ledger
            .record_intent(
                &acc.name,
                &Intent {
                    uidl: &m.uidl,
                    uidl_derived: m.derived,
                    size: msg.len(),
                    sha256: &sha,
                    message_id: facts.message_id.as_deref(),
                    message_date: facts.arrival().map(|d| d.to_timestamp()),
                    mailbox,
                },
            )
            .await
            .map_err(ledger_failure)?;

        // An intent without a result (the APPEND may or may not have
        // landed), or no ledger at all: look before appending again.
        let unresolved = row.map(|r| r.state) == Some(State::Appending);
        if unresolved || self.recovering {
            self.imap().await?;
            if unresolved || self.target_count > 0 {
                if let Some(uid) = self.find_in_target(&msg, &facts).await? {
                    info!(uid, "Already in the target mailbox; not appending again");
                    ledger
                        .record_appended(&acc.name, &m.uidl, None, Some(uid))
                        .await
                        .map_err(ledger_failure)?;
                    self.report.copied += 1;
                    return Ok(Copied::Yes);
                }
                debug!("Not in the target mailbox; appending");
            }
        }

        let internal_date = facts.internal_date(acc.target.internal_date);
        let result = {
            let imap = self.imap().await?;
            imap.append(mailbox, &acc.target.flags, internal_date.as_deref(), &msg)
                .await
        };
        match result {
            Ok(done) => {
                ledger
                    .record_appended(&acc.name, &m.uidl, done.uidvalidity, done.uid)
                    .await
                    .map_err(ledger_failure)?;
                debug!(uid = ?done.uid, bytes = msg.len(), "Appended");
                self.report.copied += 1;
                self.report.bytes += msg.len();
                Ok(Copied::Yes)
            }
            Err(e) if e.is_overquota() => {
                // The mailbox is full: nothing else will fit either.
                let text = e.to_string();
                ledger
                    .record_failure(&acc.name, &m.uidl, &text, false, acc.policy.max_attempts)
                    .await
                    .map_err(ledger_failure)?;
                Err(imap_failure(
                    acc,
                    "the target mailbox is over quota; will retry later",
                    e,
                ))
            }
            Err(e) if e.is_permanent_rejection() => {
                let text = e.to_string();
                let state = ledger
                    .record_failure(&acc.name, &m.uidl, &text, true, acc.policy.max_attempts)
                    .await
                    .map_err(ledger_failure)?;
                let attempts = row.map_or(0, |r| r.attempts) + 1;
                if state == State::Rejected {
                    warn!(
                        "The target refused the message {attempts} times; rejected, left on the POP3 server: {text}"
                    );
                    self.report.rejected += 1;
                    self.report
                        .problems
                        .push(format!("{}: rejected: {text}", m.uidl));
                } else {
                    warn!(
                        "The target refused the message (attempt {attempts} of {}); will retry: {text}",
                        acc.policy.max_attempts
                    );
                    self.report.failed += 1;
                    self.report
                        .problems
                        .push(format!("{}: refused (will retry): {text}", m.uidl));
                }
                Ok(Copied::No)
            }
            Err(e) => {
                // The connection failed: the APPEND's outcome is unknown, so
                // the intent stays unresolved and the next run settles it.
                self.imap = None;
                Err(imap_failure(acc, "APPEND failed", e))
            }
        }
    }

    /// RETR into a spool. `None` when the message exceeds `max` bytes.
    async fn retrieve(
        &mut self,
        pop: &mut pop3::Session,
        number: u32,
        max: u64,
    ) -> Result<Option<SpooledMessage>, Failure> {
        let acc = self.account;
        let fail = |e| pop_failure(acc, "RETR failed", e);
        let mut spool = Spool::new(self.opts.spool_threshold);
        let mut body = pop.retr(number).await.map_err(fail)?;
        while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
            spool.write(chunk).await.map_err(spool_failure)?;
            if spool.len() > max {
                // Stop reading at once: a message that never ends must not
                // hold the pass. The session is out of step from here.
                return Ok(None);
            }
        }
        Ok(Some(spool.finish().await.map_err(spool_failure)?))
    }

    /// Looks for `msg` in the target mailbox: by Message-ID and size, or
    /// (without a Message-ID) by size and the SHA-256 of its header section.
    async fn find_in_target(
        &mut self,
        msg: &SpooledMessage,
        facts: &HeaderFacts,
    ) -> Result<Option<u32>, Failure> {
        let acc = self.account;
        let mailbox = acc.target.mailbox.as_str();
        let imap = self.imap().await?;
        let found = match &facts.message_id {
            Some(mid) => imap.find_message(mailbox, mid, msg.len()).await,
            None => {
                let digest: [u8; 32] = Sha256::digest(msg.header()).into();
                imap.find_by_header(mailbox, digest, msg.len()).await
            }
        };
        found.map_err(|e| {
            self.imap = None;
            imap_failure(acc, "looking for a message in the target failed", e)
        })
    }

    /// The IMAP session, connected (and the mailbox ensured) on first use.
    async fn imap(&mut self) -> Result<&mut imap::Session, Failure> {
        let acc = self.account;
        if self.imap.is_none() {
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
            self.target_count = status.exists;
            if self.recovering && status.exists > 0 {
                info!(
                    messages = status.exists,
                    "The ledger has no record of this account and the target mailbox is not empty; each message is looked up there before it is appended"
                );
            }
            self.imap = Some(s);
        }
        match self.imap.as_mut() {
            Some(s) => Ok(s),
            None => Err(Failure {
                kind: FailureKind::Transient,
                message: "IMAP session lost".into(),
                retry_after: None,
            }),
        }
    }

    /// DELE what the policy allows among messages whose APPEND is durably
    /// recorded, then QUIT; only a QUIT that said OK is recorded as deleted.
    async fn delete_and_quit(
        &mut self,
        mut pop: pop3::Session,
        listing: &[Listed],
    ) -> Result<(), Failure> {
        let acc = self.account;
        let (Some(ledger), false) = (self.ledger(), acc.policy.delete == DeletePolicy::Never)
        else {
            let _ = pop.quit().await;
            return Ok(());
        };
        // Read back from disk: only what the ledger holds as appended counts.
        let rows = ledger.messages(&acc.name).await.map_err(ledger_failure)?;
        let mut deleting = Vec::new();
        for m in listing {
            let Some(row) = rows.get(&m.uidl) else {
                continue;
            };
            if row.state == State::Appended && self.may_delete(row) {
                pop.dele(m.number)
                    .await
                    .map_err(|e| pop_failure(acc, "DELE failed", e))?;
                deleting.push(m.uidl.clone());
            }
        }
        pop.quit()
            .await
            .map_err(|e| pop_failure(acc, "QUIT failed (deletions not committed)", e))?;
        if !deleting.is_empty() {
            ledger
                .record_deleted(&acc.name, &deleting)
                .await
                .map_err(ledger_failure)?;
            info!(count = deleting.len(), "Deleted from the POP3 server");
            self.report.deleted += deleting.len() as u64;
        }
        Ok(())
    }
}
