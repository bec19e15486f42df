//! The kill loop: guarantees 2 (exactly once) and 3 (nothing lost) of
//! DESIGN.md under SIGKILL.
//!
//! A real Dovecot POP3 mailbox (Maildir) is seeded with many small, varied
//! messages: every kind of the harness corpus except `big`, each made unique
//! by an `X-Kill-Seq` header, most with their own Message-ID, some sharing a
//! Message-ID (in groups, never two of the same size) and some with none.
//! `popferry sync` is then started again and again and SIGKILLed at a random
//! moment each time (50 to 1500 ms after its start, log-uniform, so that
//! login, listing, copying, settling, DELE and QUIT all get hit), restarted,
//! and finally run to completion without a kill; once with
//! `delete = "never"` and once with `delete = "after-sync"` (into an mdbox
//! IMAP user). When a run ends by itself before its kill with everything
//! copied, a wave of new mail (a quarter of the initial count) arrives, so
//! that the kills keep landing in the middle of work; only kills that hit a
//! running process count towards the rounds. Checked:
//! - after every kill: every seeded message is on the POP3 server or in the
//!   target (with `after-sync`: nothing left the server before it was in the
//!   target), and with `never` the POP3 mailbox is untouched;
//! - at the end: the target holds every source message exactly once
//!   (multiset of SHA-256 of the stored bytes equals the seeded one; NUL
//!   bytes compared the way the harness's `imap_fetch_all` reads them,
//!   through BINARY[]), a further sync changes nothing, and
//!   `popferry status --json` agrees: copied == N, unresolved 0, rejected 0
//!   (with `after-sync`: deleted == N and the POP3 mailbox is empty).
//!
//! A third run of the loop does the same into a Gmail-shaped target (no
//! LITERAL+, issue 11), where every pass appends over 4 sessions at once, so
//! that the kills land with APPENDs in flight on several connections.
//!
//! A duplicate is reported with its kind, UIDL and ledger row, and the round
//! after which the first one appeared.
//!
//! A fourth test builds, deterministically, the one state the loop reaches
//! only by luck that matters most for settling: an interrupted APPEND whose
//! Message-ID and size match another message already in the target.
//!
//! Randomness is seeded; the seed is printed at the start. A seed fixes the
//! messages and the kill delays (not the machine's timing). Settings (env):
//! - `POPFERRY_KILL_SEED=<u64>`: replay a run with that seed;
//! - `POPFERRY_KILL_MESSAGES` (default 2000): messages seeded at the start;
//! - `POPFERRY_KILL_ROUNDS` (default 30): SIGKILLs that hit a running
//!   process.
//!
//! The CI setting is the default (about 40 s for both modes on 2 cores).
//! The longer soak (tens of minutes):
//!
//! ```text
//! POPFERRY_KILL_MESSAGES=10000 POPFERRY_KILL_ROUNDS=300 \
//!     cargo test --release --test kill_loop -- --nocapture
//! ```
//!
//! `POPFERRY_TEST_KEEP=1` keeps the Dovecot folder, whose `pf/` holds the
//! config, the ledger and the debug log of every round (`round-NNN.log`).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{
    ConfigBuilder, Dovecot, Imap, Pop3, User, corpus_small, describe_output, imap_fetch_all,
    popferry, popferry_command,
};

const SOURCE: &str = "alice";
const TARGET: &str = "dave";
const MAILBOX: &str = "INBOX";
/// Shortest and longest time a run is allowed before its SIGKILL.
const MIN_DELAY_MS: u64 = 50;
const MAX_DELAY_MS: u64 = 1500;

/// Both modes share two cores with their Dovecot: one at a time keeps the
/// kill delays meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

/// splitmix64, seeded from the environment or the clock.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn seed_from_env_or_clock() -> u64 {
    if std::env::var_os("POPFERRY_KILL_SEED").is_some() {
        return env_u64("POPFERRY_KILL_SEED", 0);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// One seeded message and what identifies it.
struct Msg {
    seq: usize,
    kind: &'static str,
    bytes: Vec<u8>,
}

/// Replaces the value of the `Message-ID:` header (which must exist).
fn with_message_id(msg: &[u8], id: &str) -> Vec<u8> {
    let key = b"\nMessage-ID: ";
    let start = msg
        .windows(key.len())
        .position(|w| w == key)
        .map(|p| p + key.len())
        .expect("corpus message with a Message-ID header");
    let end = msg[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(msg.len(), |p| start + p);
    let mut out = msg[..start].to_vec();
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&msg[end..]);
    out
}

/// `n` unique small messages cycling through the corpus kinds (minus `big`):
/// each starts with `X-Kill-Seq: <seq>`; `no-msgid` ones have no Message-ID;
/// `dup-msgid` ones share a Message-ID in groups of about eight, padded so
/// that no two in a group have the same size (Message-ID and size is what
/// settles an interrupted APPEND: equal sizes would make two different
/// messages indistinguishable to it); every other one has its own.
fn make_messages(
    seqs: std::ops::Range<usize>,
    group_sizes: &mut HashMap<String, HashSet<usize>>,
) -> Vec<Msg> {
    let templates = corpus_small();
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let (kind, template) = &templates[seq % templates.len()];
        let eol = if *kind == "bare-lf" { "\n" } else { "\r\n" };
        let head = format!("X-Kill-Seq: {seq}{eol}");
        let bytes = match *kind {
            "no-msgid" => [head.as_bytes(), template].concat(),
            "dup-msgid" => {
                let id = format!("<kill-dup-{}@kill.popferry.test>", seq / 64);
                let body = with_message_id(template, &id);
                let sizes = group_sizes.entry(id).or_default();
                let mut pad = 0;
                loop {
                    let padded = format!("X-Kill-Pad: {}{eol}", "p".repeat(pad));
                    let m = [head.as_bytes(), padded.as_bytes(), &body].concat();
                    let size = support::crlf_normalise(&m).len();
                    if sizes.insert(size) {
                        break m;
                    }
                    pad += 1;
                    assert!(pad < 1000, "cannot make the sizes differ");
                }
            }
            _ => {
                let id = format!("<kill-{seq}-{kind}@kill.popferry.test>");
                [head.as_bytes(), &with_message_id(template, &id)].concat()
            }
        };
        out.push(Msg { seq, kind, bytes });
    }
    out
}

/// The `X-Kill-Seq` value in some header bytes.
fn seq_of(bytes: &[u8]) -> Option<usize> {
    let key = b"X-Kill-Seq: ";
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = bytes[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Sequence numbers of the messages in the target mailbox, with repeats.
fn target_seqs(d: &Dovecot) -> Vec<usize> {
    let mut c = Imap::login(d, TARGET);
    let r = c.command(&format!("EXAMINE {MAILBOX}"));
    assert!(r.is_ok(), "EXAMINE {MAILBOX}: {}", r.status);
    let empty = r.untagged.iter().any(|u| u.starts_with(b"* 0 EXISTS"));
    let mut seqs = Vec::new();
    if !empty {
        let r = c.command("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (X-Kill-Seq)])");
        assert!(r.is_ok(), "UID FETCH: {}", r.status);
        for u in r.untagged.iter().filter(|u| {
            let s = String::from_utf8_lossy(u);
            s.contains(" FETCH ")
        }) {
            let seq = seq_of(u).unwrap_or_else(|| {
                panic!(
                    "a target message without X-Kill-Seq: {}",
                    String::from_utf8_lossy(u)
                )
            });
            seqs.push(seq);
        }
    }
    c.logout();
    seqs
}

/// UIDLs on the POP3 server now.
fn pop3_uidls(d: &Dovecot) -> Vec<String> {
    let mut p = Pop3::login(d, SOURCE);
    let u = p.uidl();
    p.quit();
    u
}

/// Adds to `map` (UIDL → sequence number) every UIDL the POP3 server lists
/// that it does not know yet, reading its `X-Kill-Seq` with TOP.
fn refresh_uidl_map(d: &Dovecot, map: &mut HashMap<String, usize>) {
    let mut p = Pop3::login(d, SOURCE);
    let uidls = p.uidl();
    for (i, u) in uidls.into_iter().enumerate() {
        if map.contains_key(&u) {
            continue;
        }
        let top = p.multiline(&format!("TOP {} 0", i + 1));
        let seq = seq_of(&top).unwrap_or_else(|| {
            panic!(
                "POP3 message {} has no X-Kill-Seq: {}",
                i + 1,
                String::from_utf8_lossy(&top)
            )
        });
        map.insert(u, seq);
    }
    p.quit();
}

/// `popferry status --json` for the single account.
fn status(cfg: &Path) -> serde_json::Value {
    let c = cfg.to_str().expect("utf-8 config path");
    let out = popferry(&["status", "--json", "-c", c], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("status --json lists no account: {v}"))
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("status --json has no number {key:?}: {v}"))
}

/// Ledger rows (state, has Message-ID) per UIDL, for diagnostics only.
fn ledger_states(ledger: &Path, account: &str) -> HashMap<String, (String, bool, u32)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let Ok(l) = popferry::ledger::Ledger::open(ledger).await else {
            return HashMap::new();
        };
        let rows = l.messages(account).await.unwrap_or_default();
        l.close().await;
        rows.into_iter()
            .map(|(u, r)| {
                (
                    u,
                    (
                        r.state.as_str().to_owned(),
                        r.message_id.is_some(),
                        r.attempts,
                    ),
                )
            })
            .collect()
    })
}

/// The last line of a round's log (colours removed, cut short), for the
/// one-line round summary: where the run was when it was killed.
fn last_log_line(path: &Path) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let line = text.lines().last().unwrap_or("").trim();
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    // Skip the timestamp and level.
    let shown = plain
        .split_once(" DEBUG ")
        .map_or(plain.as_str(), |(_, r)| r);
    shown.chars().take(120).collect()
}

fn spawn_sync(cfg: &Path, log: &Path) -> Child {
    let file = fs::File::create(log).expect("create round log");
    let err = file.try_clone().expect("dup round log");
    popferry_command()
        .args(["--log-level", "debug", "sync", "-c"])
        .env("NO_COLOR", "1")
        .arg(cfg)
        .stdout(file)
        .stderr(err)
        .spawn()
        .expect("spawn popferry sync")
}

/// How one round ended.
enum Ended {
    Killed,
    Exited(ExitStatus),
}

/// Waits up to `delay` for the run to end by itself, else SIGKILLs it.
fn run_and_kill(child: &mut Child, delay: Duration) -> Ended {
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait popferry") {
            return Ended::Exited(status);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
    }
    // std's kill is SIGKILL on Unix. The race with a natural exit is decided
    // by wait: a process that had exited reports its own status.
    let _ = child.kill();
    let status = child.wait().expect("wait for the killed popferry");
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(9) {
        Ended::Killed
    } else {
        Ended::Exited(status)
    }
}

/// A kill delay: log-uniform in `MIN_DELAY_MS..=MAX_DELAY_MS`, so that
/// short ones (login, listing, the first APPENDs, settling) are as common as
/// long ones (deep in the copy, DELE and QUIT of a batch).
fn kill_delay(rng: &mut Rng) -> Duration {
    let (lo, hi) = (MIN_DELAY_MS as f64, MAX_DELAY_MS as f64);
    let unit = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let ms = (lo.ln() + unit * (hi.ln() - lo.ln())).exp();
    Duration::from_millis((ms.round() as u64).clamp(MIN_DELAY_MS, MAX_DELAY_MS))
}

/// What has been seeded so far.
struct Seeded {
    msgs: Vec<Msg>,
    shas: Vec<String>,
    group_sizes: HashMap<String, HashSet<usize>>,
    /// UIDL → sequence number.
    uidls: HashMap<String, usize>,
}

impl Seeded {
    /// Seeds `count` more messages and learns their UIDLs.
    fn more(&mut self, d: &Dovecot, count: usize) {
        let start = self.msgs.len();
        let msgs = make_messages(start..start + count, &mut self.group_sizes);
        let raw: Vec<Vec<u8>> = msgs.iter().map(|m| m.bytes.clone()).collect();
        let seeded = d.seed(SOURCE, &raw);
        self.shas.extend(seeded.into_iter().map(|s| s.sha256_hex));
        self.msgs.extend(msgs);
        refresh_uidl_map(d, &mut self.uidls);
        let known: HashSet<usize> = self.uidls.values().copied().collect();
        assert!(
            (start..start + count).all(|s| known.contains(&s)),
            "every newly seeded message is listed by POP3"
        );
    }
}

fn kill_loop(delete: &str) {
    kill_loop_on(delete, false);
}

/// The loop; with `gmail`, the target announces Gmail's capabilities (no
/// LITERAL+), so every pass appends over 4 sessions (the default
/// `connections`) and a kill lands with APPENDs in flight on several.
fn kill_loop_on(delete: &str, gmail: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed_from_env_or_clock();
    let n = env_u64("POPFERRY_KILL_MESSAGES", 2000) as usize;
    let rounds = env_u64("POPFERRY_KILL_ROUNDS", 30) as usize;
    assert!(n >= 1 && rounds >= 1, "need messages and rounds");
    let after_sync = delete == "after-sync";
    println!(
        "kill loop (delete = {delete:?}): POPFERRY_KILL_SEED={seed} POPFERRY_KILL_MESSAGES={n} POPFERRY_KILL_ROUNDS={rounds}"
    );
    let mut rng = Rng(seed);
    let started = Instant::now();

    let mut builder = Dovecot::builder().users(vec![User::maildir(SOURCE), User::mdbox(TARGET)]);
    if gmail {
        builder = builder.gmail_shape();
    }
    let d = builder.start();
    let mut seeded = Seeded {
        msgs: Vec::new(),
        shas: Vec::new(),
        group_sizes: HashMap::new(),
        uidls: HashMap::new(),
    };
    seeded.more(&d, n);
    let no_msgid = seeded.msgs.iter().filter(|m| m.kind == "no-msgid").count();
    println!(
        "seeded {n} messages ({no_msgid} without Message-ID) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // When a run finishes before its kill, new mail arrives: a wave this big.
    let wave = n.div_ceil(4);

    let cfg_builder = ConfigBuilder::new(&d, SOURCE, TARGET)
        .name("kill")
        .delete(delete);
    let cfg = cfg_builder.write();
    let ledger = cfg_builder.ledger_path();
    let logs: PathBuf = d.scratch();

    let mut violations: Vec<String> = Vec::new();
    let mut first_dup_round: Option<usize> = None;
    let mut kills = 0usize;
    let mut finished_early = 0usize;
    let max_rounds = rounds * 4 + 10;
    let mut round = 0usize;
    while kills < rounds {
        assert!(
            round < max_rounds,
            "only {kills} of {rounds} kills hit a running process in {round} rounds"
        );
        let delay = kill_delay(&mut rng);
        let log = logs.join(format!("round-{round:03}.log"));
        let mut child = spawn_sync(&cfg, &log);
        let ended = run_and_kill(&mut child, delay);
        let how = match &ended {
            Ended::Killed => {
                kills += 1;
                "killed".to_owned()
            }
            Ended::Exited(s) => {
                finished_early += 1;
                format!("exited by itself ({s})")
            }
        };

        // The state right after the kill.
        let total = seeded.msgs.len();
        let target = target_seqs(&d);
        let on_pop3: HashSet<usize> = pop3_uidls(&d)
            .iter()
            .map(|u| {
                *seeded
                    .uidls
                    .get(u)
                    .unwrap_or_else(|| panic!("POP3 lists an unknown UIDL {u:?}"))
            })
            .collect();
        let mut in_target: BTreeMap<usize, usize> = BTreeMap::new();
        for s in &target {
            *in_target.entry(*s).or_insert(0) += 1;
        }
        let dups: Vec<usize> = in_target
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(s, _)| *s)
            .collect();
        if !dups.is_empty() && first_dup_round.is_none() {
            first_dup_round = Some(round);
        }
        let lost: Vec<usize> = (0..total)
            .filter(|s| !on_pop3.contains(s) && !in_target.contains_key(s))
            .collect();
        if !lost.is_empty() {
            violations.push(format!(
                "round {round}: {} message(s) neither on the POP3 server nor in the target \
                 (deleted before they were appended): seqs {:?}",
                lost.len(),
                &lost[..lost.len().min(20)]
            ));
        }
        if !after_sync && on_pop3.len() != total {
            violations.push(format!(
                "round {round}: delete = \"never\" but the POP3 server holds {} of {total}",
                on_pop3.len()
            ));
        }
        println!(
            "round {round:3}: after {:4} ms {how}; target {} ({} duplicated), pop3 {}; last log: {}",
            delay.as_millis(),
            target.len(),
            dups.len(),
            on_pop3.len(),
            last_log_line(&log)
        );
        if matches!(ended, Ended::Exited(_)) && in_target.len() == total {
            // Everything is across: more mail arrives, so that the next
            // kills land in the middle of work again.
            seeded.more(&d, wave);
            println!(
                "           {wave} new messages arrive ({} in all)",
                seeded.msgs.len()
            );
        }
        round += 1;
    }
    let total = seeded.msgs.len();

    // Run to completion, then once more: nothing left to do.
    let c = cfg.to_str().expect("utf-8 config path");
    let last = popferry(&["sync", "-c", c], &[]);
    assert_eq!(
        last.status.code(),
        Some(0),
        "the final sync should succeed:\n{}",
        describe_output(&last)
    );
    let again = popferry(&["sync", "-c", c], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", describe_output(&again));

    // Exactly once, byte for byte.
    let fetched = imap_fetch_all(&d, TARGET, MAILBOX);
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seeded.shas {
        *want.entry(s.as_str()).or_insert(0) += 1;
    }
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &fetched {
        *got.entry(f.sha256_hex.as_str()).or_insert(0) += 1;
    }
    if got != want {
        let sha_to_seq: HashMap<&str, usize> = seeded
            .shas
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let seq_to_uidl: HashMap<usize, &str> =
            seeded.uidls.iter().map(|(u, s)| (*s, u.as_str())).collect();
        let rows = ledger_states(&ledger, "kill");
        let describe = |sha: &str| -> String {
            match sha_to_seq.get(sha) {
                Some(&seq) => {
                    let m = &seeded.msgs[seq];
                    let uidl = seq_to_uidl.get(&seq).copied().unwrap_or("?");
                    let row = rows
                        .get(uidl)
                        .map(|(st, mid, att)| {
                            format!("ledger {st}, message_id recorded {mid}, attempts {att}")
                        })
                        .unwrap_or_else(|| "no ledger row".into());
                    format!("seq {} kind {} uidl {uidl} ({row})", m.seq, m.kind)
                }
                None => format!("unknown bytes sha {sha}"),
            }
        };
        let mut report = Vec::new();
        let mut dup_kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for (sha, c) in &got {
            let w = want.get(sha).copied().unwrap_or(0);
            if *c > w {
                if let Some(&seq) = sha_to_seq.get(sha) {
                    *dup_kinds.entry(seeded.msgs[seq].kind).or_insert(0) += c - w;
                }
                report.push(format!("{} extra: {}", c - w, describe(sha)));
            }
        }
        for (sha, w) in &want {
            let c = got.get(sha).copied().unwrap_or(0);
            if c < *w {
                report.push(format!("{} missing: {}", w - c, describe(sha)));
            }
        }
        report.truncate(60);
        panic!(
            "seed {seed}: the target does not hold every source message exactly once \
             ({} stored, {total} seeded; first duplicate seen after round {first_dup_round:?}; \
             extra copies by kind {dup_kinds:?}):\n{}\nviolations during the loop: {violations:#?}",
            fetched.len(),
            report.join("\n")
        );
    }
    assert_eq!(fetched.len(), total);

    // The ledger agrees.
    let st = status(&cfg);
    assert_eq!(count(&st, "copied"), total as u64, "status: {st}");
    assert_eq!(count(&st, "unresolved"), 0, "status: {st}");
    assert_eq!(count(&st, "rejected"), 0, "status: {st}");
    let left = pop3_uidls(&d).len();
    if after_sync {
        assert_eq!(count(&st, "deleted"), total as u64, "status: {st}");
        assert_eq!(left, 0, "after-sync: the POP3 mailbox ends empty");
    } else {
        assert_eq!(count(&st, "deleted"), 0, "status: {st}");
        assert_eq!(left, total, "never: the POP3 mailbox is untouched");
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: guarantees broken after a kill:\n{}",
        violations.join("\n")
    );
    println!(
        "kill loop (delete = {delete:?}, seed {seed}): {kills} kills in {round} rounds \
         ({finished_early} runs ended before their kill), {total} messages, {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn sigkill_loop_with_delete_never_copies_each_message_once() {
    kill_loop("never");
}

#[test]
fn sigkill_loop_with_delete_after_sync_loses_nothing_and_copies_once() {
    kill_loop("after-sync");
}

#[test]
fn sigkill_loop_over_four_sessions_to_a_gmail_shaped_target_copies_each_message_once() {
    kill_loop_on("after-sync", true);
}

/// The state a SIGKILL leaves when it lands after the intent of message B
/// was written and before its APPEND reached the server, while message A,
/// which has the same Message-ID and the same size (a resent or re-delivered
/// message whose bytes differ), is already in the target. Settling B must
/// not take A for it: B must be appended, and with `after-sync` it must not
/// be deleted from the POP3 server before it is in the target.
///
/// The state is built with popferry's own `Ledger` (what the killed run
/// would have written) and the harness's APPEND of A (what it would have
/// sent): the kill loop above reaches this window only by chance.
#[test]
fn an_unresolved_append_is_not_settled_by_another_message_with_the_same_id_and_size() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = Dovecot::builder()
        .users(vec![User::maildir(SOURCE), User::mdbox(TARGET)])
        .start();
    let twin = |letter: &str| -> Vec<u8> {
        format!(
            "From: a@kill.popferry.test\r\nTo: b@kill.popferry.test\r\n\
             Subject: twin {letter}\r\nDate: Mon, 13 Nov 2023 08:00:00 +0000\r\n\
             Message-ID: <twin@kill.popferry.test>\r\n\r\nbody {letter}\r\n"
        )
        .into_bytes()
    };
    let (a, b) = (twin("A"), twin("B"));
    assert_eq!(a.len(), b.len());
    let seeded = d.seed(SOURCE, &[a.clone(), b.clone()]);
    let uidls = pop3_uidls(&d);
    assert_eq!(uidls.len(), 2);

    let cfg_builder = ConfigBuilder::new(&d, SOURCE, TARGET)
        .name("twins")
        .delete("after-sync");
    let cfg = cfg_builder.write();
    let uid_a = support::imap_append(&d, TARGET, MAILBOX, &a, &[], None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        use popferry::ledger::{Intent, Ledger};
        let l = Ledger::open(&cfg_builder.ledger_path())
            .await
            .expect("open the ledger");
        l.start_run("twins").await.expect("start a run");
        for ((uidl, s), bytes) in uidls.iter().zip(&seeded).zip([&a, &b]) {
            // What the killed run would have recorded: the digest of the
            // header section too (checked before a DELE).
            let end = bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(bytes.len(), |p| p + 4);
            let header = popferry::spool::header_sha256(&bytes[..end]);
            l.record_intent(
                "twins",
                &Intent {
                    uidl,
                    uidl_derived: false,
                    size: s.size,
                    listed_size: s.size,
                    sha256: &s.sha256_hex,
                    header_sha256: Some(&header),
                    message_id: Some("twin@kill.popferry.test"),
                    message_date: None,
                    mailbox: MAILBOX,
                },
            )
            .await
            .expect("record an intent");
        }
        l.record_appended("twins", &uidls[0], None, Some(uid_a))
            .await
            .expect("record A appended");
        l.close().await;
    });

    let c = cfg.to_str().expect("utf-8 config path");
    let out = popferry(&["sync", "-c", c], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let fetched = imap_fetch_all(&d, TARGET, MAILBOX);
    let mut got: Vec<&str> = fetched.iter().map(|f| f.sha256_hex.as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = seeded.iter().map(|s| s.sha256_hex.as_str()).collect();
    want.sort_unstable();
    let left = pop3_uidls(&d);
    assert_eq!(
        got,
        want,
        "B (same Message-ID and size as A, its APPEND interrupted) must be appended; \
         {} message(s) left on the POP3 server:\n{}",
        left.len(),
        describe_output(&out)
    );
    assert!(
        left.is_empty(),
        "after-sync: both deleted once both are in the target"
    );
}
