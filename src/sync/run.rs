//! The pass itself. See the module doc of [`crate::sync`] for the rules.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
fn describe<A>(side: &str, s: &ServerSettings<A>, what: &str, e: &dyn std::fmt::Display) -> String {
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
            target_uidvalidity: None,
            claimed: None,
            recovering: false,
            attempted: HashSet::new(),
            login_delay: None,
            incomplete: false,
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
    /// The target mailbox's UIDVALIDITY when we connected.
    target_uidvalidity: Option<u32>,
    /// Target UIDs the ledger gives to other messages (loaded at the first
    /// lookup): a lookup never settles a message with one of them.
    claimed: Option<HashSet<u32>>,
    /// The ledger knew nothing of this account when the pass began: look in
    /// the target before every APPEND (a ledger lost with its volume).
    recovering: bool,
    /// UIDLs handed to an earlier session of this pass: a later session
    /// (delete batches) does not try a refused message again at once.
    attempted: HashSet<String>,
    /// The POP3 server's LOGIN-DELAY, if it announced one.
    login_delay: Option<Duration>,
    /// The pass stopped before going through the whole mailbox.
    incomplete: bool,
    report: &'a mut Report,
}

/// A LOGIN-DELAY up to this long is waited out between two batches of a
/// pass; a longer one ends the pass (the next one goes on).
const MAX_LOGIN_DELAY_WAIT: Duration = Duration::from_secs(60);

/// RETRs in flight on the POP3 side (with PIPELINING; one without).
const RETR_WINDOW: usize = 256;
/// APPENDs in flight on the IMAP side (with LITERAL+; one without).
const APPEND_WINDOW: usize = 256;
/// Literal bytes in flight on the IMAP side.
const APPEND_BYTES_IN_FLIGHT: u64 = 16 << 20;
/// Messages read but not yet appended, at most (the bound in count)...
const QUEUE: usize = 256;
/// ...and at most this many of their bytes held in memory (the bound in
/// bytes; a message above the spool threshold waits in its temporary file
/// and counts nothing here).
const QUEUE_BYTES: usize = 16 << 20;
/// ...and at most this many of them waiting in temporary files.
const QUEUE_ON_DISK: usize = 4;

/// What the POP3 side hands to the IMAP side.
enum Fetched {
    Message(Box<SpooledMessage>),
    /// Larger than max_message_size part-way through its RETR (the LIST
    /// size lied); the POP3 session had to be abandoned.
    TooBig,
    /// The server refused its RETR (-ERR): the server's words.
    Failed(String),
}

/// How the POP3 side of a session ended.
#[derive(Debug, PartialEq, Eq)]
enum Produced {
    All,
    /// The IMAP side stopped taking messages (shutdown or failure).
    Stopped,
    /// A RETR was abandoned: the session cannot be used further.
    SessionLost,
}

/// A queued message on the IMAP side.
struct Item {
    /// Index into the session's list of messages to fetch.
    index: usize,
    fetched: Fetched,
    /// Already looked for in the target (and not found).
    looked_up: bool,
    sha: String,
    /// Its share of [`QUEUE_BYTES`], given back when the item is dropped.
    permit: Option<OwnedSemaphorePermit>,
}

impl Item {
    fn new(index: usize, fetched: Fetched, permit: Option<OwnedSemaphorePermit>) -> Item {
        let sha = match &fetched {
            Fetched::Message(m) => m.sha256_hex(),
            Fetched::TooBig | Fetched::Failed(_) => String::new(),
        };
        Item {
            index,
            fetched,
            looked_up: false,
            sha,
            permit,
        }
    }
}

/// A message ready for the pipeline: its queue item (holding its share of
/// the queue's bounds), its listing entry, its bytes and its header facts.
type Ready<'l> = (Item, &'l Listed, SpooledMessage, HeaderFacts);

/// Why one pipeline ended.
enum PipeEnd {
    Done,
    /// This message must be looked up in the target before it is appended.
    Lookup(Box<Item>),
}

fn session_lost() -> Failure {
    Failure {
        kind: FailureKind::Transient,
        message: "IMAP session lost".into(),
        retry_after: None,
    }
}

fn intent<'x>(
    m: &'x Listed,
    msg: &SpooledMessage,
    facts: &'x HeaderFacts,
    sha: &'x str,
    mailbox: &'x str,
) -> Intent<'x> {
    Intent {
        uidl: &m.uidl,
        uidl_derived: m.derived,
        size: msg.len(),
        sha256: sha,
        message_id: facts.message_id.as_deref(),
        message_date: facts.arrival().map(|d| d.to_timestamp()),
        mailbox,
    }
}

/// Looks for `msg` in the target mailbox: candidates by Message-ID and
/// size (without a Message-ID: size and the SHA-256 of the header section),
/// minus the UIDs other messages already own, then the one whose content
/// has the message's SHA-256 (with a NUL shown as 0x80, as Dovecot stores
/// it when the server has no BINARY). Two messages sharing a Message-ID and
/// a size are thus never mistaken for each other.
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
    let want = msg.sha256();
    let mut shown: Option<[u8; 32]> = None;
    for uid in candidates.into_iter().filter(|u| !claimed.contains(u)) {
        let Some(got) = imap.content_sha256(uid, msg.len()).await.map_err(fail)? else {
            continue;
        };
        if got == want {
            return Ok(Some(uid));
        }
        if msg.has_nul() {
            if shown.is_none() {
                shown = Some(msg.sha256_nul_as_0x80().await.map_err(spool_failure)?);
            }
            if shown == Some(got) {
                return Ok(Some(uid));
            }
        }
    }
    Ok(None)
}

/// The POP3 side of a session: RETRs `numbers` (pipelined where the server
/// offers it) into spools and queues them, in order.
async fn produce(
    pop: &mut pop3::Session,
    acc: &Account,
    numbers: &[u32],
    threshold: usize,
    tx: mpsc::Sender<(usize, Fetched, Option<OwnedSemaphorePermit>)>,
    budget: Arc<Semaphore>,
    on_disk: Arc<Semaphore>,
) -> Result<Produced, Failure> {
    let max = acc.policy.max_message_size;
    let fail = |e| pop_failure(acc, "RETR failed", e);
    let mut stream = pop.retr_pipelined(numbers, RETR_WINDOW);
    let mut index = 0usize;
    // Set when the IMAP side stops taking messages.
    let mut stopped = false;
    loop {
        let Some((_, answer)) = stream.next_message().await.map_err(fail)? else {
            break;
        };
        let fetched = match answer {
            // This message only: the stream goes on.
            Err(e) => Fetched::Failed(e.to_string()),
            Ok(mut body) => {
                let mut spool = Spool::new(threshold);
                let mut too_big = false;
                while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
                    spool.write(chunk).await.map_err(spool_failure)?;
                    if spool.len() > max {
                        // Stop reading at once: a message that never ends
                        // must not hold the pass. The session is out of
                        // step from here.
                        too_big = true;
                        break;
                    }
                }
                if too_big {
                    Fetched::TooBig
                } else {
                    Fetched::Message(Box::new(spool.finish().await.map_err(spool_failure)?))
                }
            }
        };
        // Memory is bounded by bytes; temporary files by count.
        let permit = match &fetched {
            Fetched::Message(msg) if msg.is_on_disk() => on_disk.clone().acquire_owned().await.ok(),
            Fetched::Message(msg) => {
                let cost = u32::try_from(msg.len().min(QUEUE_BYTES as u64)).unwrap_or(u32::MAX);
                budget.clone().acquire_many_owned(cost).await.ok()
            }
            Fetched::TooBig | Fetched::Failed(_) => None,
        };
        let too_big = matches!(fetched, Fetched::TooBig);
        if tx.send((index, fetched, permit)).await.is_err() {
            stopped = true;
            break;
        }
        if too_big {
            return Ok(Produced::SessionLost);
        }
        index += 1;
    }
    if stopped {
        // Read off what is in flight so that the session stays usable for
        // DELE and QUIT.
        stream.drain().await.map_err(fail)?;
        return Ok(Produced::Stopped);
    }
    Ok(Produced::All)
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
        let name = &self.account.name;
        if let Some(l) = self.ledger() {
            self.recovering = l.is_recovering(name).await.map_err(ledger_failure)?;
        }
        // A pass is one POP3 session, or several when a delete policy asks
        // for DELEs to be committed in batches.
        while self.session().await? {}
        // Recovery ends only with a pass that went through everything.
        if self.recovering
            && !self.incomplete
            && !self.report.interrupted
            && let Some(l) = self.ledger()
        {
            l.set_recovering(name, false)
                .await
                .map_err(ledger_failure)?;
            info!("Recovery finished: the ledger again knows every message of this account");
        }
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
            self.login_delay = Some(delay);
            self.report.retry_after = Some(self.report.retry_after.map_or(delay, |d| d.max(delay)));
        }
        let listing = self.listing(&mut pop).await?;
        let mut rows = self.rows().await?;
        if rows.is_empty()
            && !listing.is_empty()
            && !self.recovering
            && let Some(l) = self.ledger()
        {
            // Durably, before anything is appended: a recovery cut short
            // must go on recovering.
            l.set_recovering(&acc.name, true)
                .await
                .map_err(ledger_failure)?;
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
            .filter(|m| !self.attempted.contains(&m.uidl))
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

        // Too large by its LIST size: recorded without being read.
        let mut fetch: Vec<&Listed> = Vec::with_capacity(todo.len());
        for m in todo {
            if m.size > max {
                let row = rows.get(&m.uidl);
                self.skip(m, m.size, row).await?;
                self.progress.advanced(&acc.name, m.size);
            } else {
                fetch.push(m);
            }
        }
        // With a delete policy, one session handles a batch, so that its
        // DELEs are committed (at QUIT) before the next batch is read.
        let batch = if acc.policy.delete == DeletePolicy::Never {
            usize::MAX
        } else {
            self.opts.delete_batch.max(1)
        };
        let more = fetch.len() > batch;
        fetch.truncate(batch);
        self.attempted.extend(fetch.iter().map(|m| m.uidl.clone()));
        if fetch.is_empty() {
            self.delete_and_quit(pop, &listing).await?;
            return Ok(more);
        }

        // The POP3 side reads (RETR, pipelined where offered) while the IMAP
        // side appends (LITERAL+ where offered); a bounded queue joins them.
        let numbers: Vec<u32> = fetch.iter().map(|m| m.number).collect();
        let (tx, rx) = mpsc::channel(QUEUE);
        let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
        let on_disk = Arc::new(Semaphore::new(QUEUE_ON_DISK));
        let threshold = self.opts.spool_threshold;
        let (produced, consumed) = tokio::join!(
            produce(&mut pop, acc, &numbers, threshold, tx, budget, on_disk),
            self.consume(&fetch, &rows, rx)
        );
        consumed?;
        if produced? == Produced::SessionLost {
            // The POP3 session is out of step (a message that never ended):
            // no DELE, no QUIT; the next session goes on (unless stopping).
            return Ok(!self.report.interrupted);
        }
        let interrupted = self.report.interrupted;
        self.delete_and_quit(pop, &listing).await?;
        if !more || interrupted {
            return Ok(false);
        }
        // Another batch means another login: respect LOGIN-DELAY.
        if let Some(delay) = self.login_delay.filter(|d| !d.is_zero()) {
            if delay > MAX_LOGIN_DELAY_WAIT {
                info!(
                    login_delay = delay.as_secs(),
                    "The POP3 server's LOGIN-DELAY stops this pass after a batch; the next pass goes on"
                );
                self.incomplete = true;
                return Ok(false);
            }
            let cancelled = async {
                match &self.opts.cancel {
                    Some(c) => c.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancelled => {
                    self.report.interrupted = true;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// UIDL listing with sizes; without UIDL support, IDs derived from a
    /// digest of each message's header section (TOP n 0).
    async fn listing(&mut self, pop: &mut pop3::Session) -> Result<Vec<Listed>, Failure> {
        let acc = self.account;
        // One flight with PIPELINING, one after the other without.
        let (list, uidls) = pop
            .list_and_uidl()
            .await
            .map_err(|e| pop_failure(acc, "LIST/UIDL failed", e))?;
        let sizes: HashMap<u32, u64> = list.into_iter().collect();
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

    /// The IMAP side of a session: appends what the POP3 side queues, in
    /// order, recording the intents before and the results after.
    async fn consume(
        &mut self,
        fetch: &[&Listed],
        rows: &HashMap<String, MessageRow>,
        mut rx: mpsc::Receiver<(usize, Fetched, Option<OwnedSemaphorePermit>)>,
    ) -> Result<(), Failure> {
        let acc = self.account;
        let Some(ledger) = self.ledger() else {
            return Ok(());
        };
        self.imap().await?;
        let Some(mut session) = self.imap.take() else {
            return Err(session_lost());
        };
        let mut queue: VecDeque<Item> = VecDeque::new();
        loop {
            match self
                .pipe_run(&mut session, ledger, fetch, rows, &mut rx, &mut queue)
                .await?
            {
                PipeEnd::Done => break,
                PipeEnd::Lookup(mut item) => {
                    // Settle before appending again: look in the target.
                    let m = fetch.get(item.index).copied().ok_or_else(session_lost)?;
                    let Fetched::Message(msg) = &item.fetched else {
                        continue;
                    };
                    let facts = HeaderFacts::parse(msg.header());
                    ledger
                        .record_intent(
                            &acc.name,
                            &intent(m, msg, &facts, &item.sha, &acc.target.mailbox),
                        )
                        .await
                        .map_err(ledger_failure)?;
                    if self.claimed.is_none() {
                        let claimed = ledger
                            .claimed_uids(&acc.name, &acc.target.mailbox, self.target_uidvalidity)
                            .await
                            .map_err(ledger_failure)?;
                        self.claimed = Some(claimed);
                    }
                    let claimed = self.claimed.take().unwrap_or_default();
                    let found = find_in_target(&mut session, acc, msg, &facts, &claimed).await;
                    self.claimed = Some(claimed);
                    if let Some(uid) = found? {
                        info!(uidl = %m.uidl, uid, "Already in the target mailbox; not appending again");
                        ledger
                            .record_appended(&acc.name, &m.uidl, self.target_uidvalidity, Some(uid))
                            .await
                            .map_err(ledger_failure)?;
                        if let Some(c) = self.claimed.as_mut() {
                            c.insert(uid);
                        }
                        self.report.copied += 1;
                        self.progress.advanced(&acc.name, m.size);
                    } else {
                        debug!(uidl = %m.uidl, "Not in the target mailbox; appending");
                        item.looked_up = true;
                        queue.push_front(*item);
                    }
                }
            }
        }
        self.imap = Some(session);
        Ok(())
    }

    /// Appends through one pipeline until the queue is done, or until a
    /// message must first be looked up in the target (which needs the
    /// session to itself).
    async fn pipe_run(
        &mut self,
        session: &mut imap::Session,
        ledger: &Ledger,
        fetch: &[&Listed],
        rows: &HashMap<String, MessageRow>,
        rx: &mut mpsc::Receiver<(usize, Fetched, Option<OwnedSemaphorePermit>)>,
        queue: &mut VecDeque<Item>,
    ) -> Result<PipeEnd, Failure> {
        let acc = self.account;
        let mailbox = acc.target.mailbox.as_str();
        let mut pipe = session
            .append_pipeline::<(usize, u64)>(
                mailbox,
                &acc.target.flags,
                APPEND_WINDOW,
                APPEND_BYTES_IN_FLIGHT,
            )
            .map_err(|e| imap_failure(acc, "APPEND failed", e))?;
        let mut done: Vec<(String, Option<u32>, Option<u32>)> = Vec::new();
        let mut stop: Option<Failure> = None;
        let mut lookup: Option<Box<Item>> = None;
        // Messages whose intents are on disk, to be written next. Batch k+1's
        // intents are committed while batch k's APPENDs are written, so the
        // fsync overlaps the network instead of adding to it; an intent is
        // still always durable before its own APPEND.
        let mut ready: Vec<Ready<'_>> = Vec::new();
        let mut closed = false;
        loop {
            // A safe point: every message handed to the pipeline so far is
            // either answered and recorded below, or still owed an answer.
            let cancelled = self.opts.cancel.as_ref().is_some_and(|c| c.is_cancelled());
            if cancelled && !self.report.interrupted {
                info!("Stopping early: shutting down");
                self.report.interrupted = true;
            }
            let gathering = !cancelled && stop.is_none() && lookup.is_none();
            if gathering && !closed && queue.is_empty() {
                if ready.is_empty() {
                    match rx.recv().await {
                        Some((index, fetched, permit)) => {
                            queue.push_back(Item::new(index, fetched, permit))
                        }
                        None => closed = true,
                    }
                }
                while !closed && queue.len() < APPEND_WINDOW {
                    match rx.try_recv() {
                        Ok((index, fetched, permit)) => {
                            queue.push_back(Item::new(index, fetched, permit))
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                    }
                }
            }
            // The next batch: messages that can go straight to the pipeline.
            let mut next: Vec<Ready<'_>> = Vec::new();
            while gathering && next.len() < APPEND_WINDOW {
                let Some(item) = queue.pop_front() else { break };
                let Some(m) = fetch.get(item.index).copied() else {
                    continue;
                };
                let row = rows.get(&m.uidl);
                // Look before appending: an intent without a result, a
                // message skipped after such an intent (it has a digest), or
                // any message while recovering a lost ledger.
                let needs_lookup = matches!(item.fetched, Fetched::Message(_))
                    && !item.looked_up
                    && (row.is_some_and(|r| {
                        r.state == State::Appending
                            || (r.state == State::Skipped && r.sha256.is_some())
                    }) || (self.recovering && self.target_count > 0));
                if needs_lookup {
                    if next.is_empty() && ready.is_empty() {
                        lookup = Some(Box::new(item));
                    } else {
                        queue.push_front(item);
                    }
                    break;
                }
                match item.fetched {
                    Fetched::TooBig => {
                        // The LIST size lied: larger than announced.
                        self.skip(m, acc.policy.max_message_size.saturating_add(1), row)
                            .await?;
                        self.progress.advanced(&acc.name, m.size);
                    }
                    Fetched::Failed(text) => {
                        self.retr_refused(ledger, m, &text).await?;
                        self.progress.advanced(&acc.name, m.size);
                    }
                    Fetched::Message(msg) => {
                        let facts = HeaderFacts::parse(msg.header());
                        let item = Item {
                            index: item.index,
                            fetched: Fetched::TooBig,
                            looked_up: item.looked_up,
                            sha: item.sha,
                            permit: item.permit,
                        };
                        next.push((item, m, *msg, facts));
                    }
                }
            }
            if next.is_empty() && ready.is_empty() {
                if !gathering || lookup.is_some() || (closed && queue.is_empty()) {
                    break;
                }
                continue;
            }
            // Commit `next`'s intents while `ready` is written.
            let intents: Vec<Intent<'_>> = next
                .iter()
                .map(|(item, m, msg, facts)| intent(m, msg, facts, &item.sha, mailbox))
                .collect();
            let writing = std::mem::take(&mut ready);
            let (recorded, pushed) = tokio::join!(
                ledger.record_intents(&acc.name, &intents),
                self.push_batch(&mut pipe, writing, fetch, ledger, &mut done, &mut stop)
            );
            drop(intents);
            if let Some(e) = pushed? {
                return self.abandon(pipe, e, fetch, ledger, done).await;
            }
            recorded.map_err(ledger_failure)?;
            ready = next;
            if done.len() >= APPEND_WINDOW {
                self.flush(ledger, &mut done).await?;
            }
        }
        // Every answer still owed, recorded before the pipeline closes.
        loop {
            match pipe.next_result().await {
                Ok(Some(r)) => {
                    self.take_result(r, fetch, ledger, &mut done, &mut stop)
                        .await?
                }
                Ok(None) => break,
                Err(e) => return self.abandon(pipe, e, fetch, ledger, done).await,
            }
        }
        drop(pipe);
        self.flush(ledger, &mut done).await?;
        match (stop, lookup) {
            (Some(f), _) => Err(f),
            (None, Some(item)) => Ok(PipeEnd::Lookup(item)),
            (None, None) => Ok(PipeEnd::Done),
        }
    }

    /// Writes the APPENDs of `batch` (whose intents are on disk), taking
    /// answers whenever the window is full. `Ok(Some(e))` when the
    /// connection failed and the pipeline must be abandoned.
    async fn push_batch(
        &mut self,
        pipe: &mut imap::AppendPipeline<'_, (usize, u64)>,
        batch: Vec<Ready<'_>>,
        fetch: &[&Listed],
        ledger: &Ledger,
        done: &mut Vec<(String, Option<u32>, Option<u32>)>,
        stop: &mut Option<Failure>,
    ) -> Result<Option<ImapError>, Failure> {
        let acc = self.account;
        for (item, m, msg, facts) in batch {
            while pipe.is_full() && stop.is_none() {
                match pipe.next_result().await {
                    Ok(Some(r)) => self.take_result(r, fetch, ledger, done, stop).await?,
                    Ok(None) => break,
                    Err(e) => return Ok(Some(e)),
                }
            }
            if stop.is_some() {
                // The intent stays unresolved-but-unsent: settled (not
                // found, appended) by the next run.
                continue;
            }
            let date = facts.internal_date(acc.target.internal_date);
            if let Err(e) = pipe
                .push((item.index, msg.len()), &msg, date.as_deref())
                .await
            {
                return Ok(Some(e));
            }
            debug!(uidl = %m.uidl, bytes = msg.len(), "APPEND sent");
        }
        Ok(None)
    }

    /// A message whose RETR the server refused: retried on later runs, then
    /// rejected like a message the target refuses.
    async fn retr_refused(
        &mut self,
        ledger: &Ledger,
        m: &Listed,
        text: &str,
    ) -> Result<(), Failure> {
        let acc = self.account;
        let state = ledger
            .record_retr_failure(&acc.name, &m.uidl, m.size, text, acc.policy.max_attempts)
            .await
            .map_err(ledger_failure)?;
        self.note_refusal(&m.uidl, state, "RETR ", text);
        Ok(())
    }

    /// Reports a refused message: rejected for good, or to be retried.
    /// `what` names the refused command for the report ("RETR ", or "" for
    /// an APPEND).
    fn note_refusal(&mut self, uidl: &str, state: State, what: &str, text: &str) {
        let max = self.account.policy.max_attempts;
        let who = if what.is_empty() {
            "The target refused the message"
        } else {
            "The POP3 server refused to deliver the message"
        };
        if state == State::Rejected {
            warn!(%uidl, "{who} {max} times; rejected, left on the POP3 server: {text}");
            self.report.rejected += 1;
            self.report
                .problems
                .push(format!("{uidl}: {what}rejected: {text}"));
        } else {
            warn!(%uidl, "{who}; will retry (at most {max} attempts): {text}");
            self.report.failed += 1;
            self.report
                .problems
                .push(format!("{uidl}: {what}refused (will retry): {text}"));
        }
    }

    /// Records the APPENDs answered OK so far, in one transaction.
    async fn flush(
        &mut self,
        ledger: &Ledger,
        done: &mut Vec<(String, Option<u32>, Option<u32>)>,
    ) -> Result<(), Failure> {
        if let Some(c) = self.claimed.as_mut() {
            c.extend(done.iter().filter_map(|(_, _, uid)| *uid));
        }
        ledger
            .record_appended_many(&self.account.name, done)
            .await
            .map_err(ledger_failure)?;
        done.clear();
        Ok(())
    }

    /// One APPEND's answer. An OK waits in `done` for [`Pass::flush`]; a
    /// refusal is recorded at once; a refusal that will hit every message
    /// (over quota, mailbox gone) sets `stop`.
    async fn take_result(
        &mut self,
        ((index, len), result): imap::AppendResult<(usize, u64)>,
        fetch: &[&Listed],
        ledger: &Ledger,
        done: &mut Vec<(String, Option<u32>, Option<u32>)>,
        stop: &mut Option<Failure>,
    ) -> Result<(), Failure> {
        let acc = self.account;
        let Some(m) = fetch.get(index).copied() else {
            return Ok(());
        };
        self.progress.advanced(&acc.name, m.size);
        let e = match result {
            Ok(a) => {
                done.push((m.uidl.clone(), a.uidvalidity, a.uid));
                self.report.copied += 1;
                self.report.bytes += len;
                return Ok(());
            }
            Err(e) => e,
        };
        let text = e.to_string();
        if e.is_overquota() || e.is_trycreate() || e.is_transient() {
            // Not this message's fault: it is retried later, unpenalised.
            ledger
                .record_failure(&acc.name, &m.uidl, &text, false, acc.policy.max_attempts)
                .await
                .map_err(ledger_failure)?;
            if stop.is_none() {
                let what = if e.is_overquota() {
                    "the target mailbox is over quota; will retry later"
                } else if e.is_trycreate() {
                    "the target mailbox has vanished; it is created again on the next run"
                } else {
                    "APPEND failed; will retry later"
                };
                *stop = Some(imap_failure(acc, what, e));
            }
            return Ok(());
        }
        let state = ledger
            .record_failure(&acc.name, &m.uidl, &text, true, acc.policy.max_attempts)
            .await
            .map_err(ledger_failure)?;
        self.note_refusal(&m.uidl, state, "", &text);
        Ok(())
    }

    /// The IMAP connection failed with APPENDs in flight: record what is
    /// known; the others keep their intent (unresolved) and are settled by
    /// the next run, which looks for them in the target first.
    async fn abandon(
        &mut self,
        pipe: imap::AppendPipeline<'_, (usize, u64)>,
        e: ImapError,
        fetch: &[&Listed],
        ledger: &Ledger,
        mut done: Vec<(String, Option<u32>, Option<u32>)>,
    ) -> Result<PipeEnd, Failure> {
        let (known, unknown) = pipe.abandon();
        let mut stop = None;
        for r in known {
            self.take_result(r, fetch, ledger, &mut done, &mut stop)
                .await?;
        }
        self.flush(ledger, &mut done).await?;
        if !unknown.is_empty() {
            warn!(
                count = unknown.len(),
                "APPENDs in flight when the connection failed; the next run settles them"
            );
        }
        Err(imap_failure(self.account, "APPEND failed", e))
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
            self.target_uidvalidity = status.uidvalidity;
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
        let chosen: Vec<&Listed> = listing
            .iter()
            .filter(|m| {
                rows.get(&m.uidl)
                    .is_some_and(|r| r.state == State::Appended && self.may_delete(r))
            })
            .collect();
        let numbers: Vec<u32> = chosen.iter().map(|m| m.number).collect();
        // In one flight with PIPELINING.
        let answers = pop
            .dele_many(&numbers)
            .await
            .map_err(|e| pop_failure(acc, "DELE failed", e))?;
        let mut deleting = Vec::new();
        for (m, answer) in chosen.iter().zip(answers) {
            match answer {
                Ok(()) => deleting.push(m.uidl.clone()),
                Err(e) => warn!(uidl = %m.uidl, "DELE refused, the message stays: {e}"),
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
