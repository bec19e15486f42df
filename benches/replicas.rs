//! The replicas benchmark (issue 12; run on demand, not in CI):
//! `BENCH_ONLY=replicas scripts/bench.sh`.
//!
//! Why a bench binary and not a test: it reports rates, memory and a
//! takeover time, which are figures for BENCHMARKS.md, not pass/fail (it
//! does fail if a message is missing or doubled). It reuses the test
//! harness (`tests/support`): one private Dovecot (100 POP3 source users on
//! Maildir, 100 IMAP target users on mdbox), one private PostgreSQL cluster
//! (a fresh database per run), and the release binary.
//!
//! 1. Seeds every source user with `BENCH_MESSAGES` messages of the shared
//!    seeder's mix (no 10 MB message: `--big-count 0`), one seed per user.
//! 2. An idle replica: `popferry run` with the same accounts pointed at a
//!    closed port (every pass fails at once, nothing is held) for a few
//!    seconds: the memory of a replica that holds no account.
//! 3. For R in `BENCH_REPLICAS` (1, 2, 4): a fresh database and a fresh
//!    target mailbox per account, R `popferry run` replicas under
//!    `/usr/bin/time -v`, timed from their start until the ledger shows
//!    every account's messages appended; then every target mailbox is
//!    counted (exactly `BENCH_MESSAGES`), the replicas get SIGTERM and must
//!    exit 0. Peak RSS per replica from `/usr/bin/time`, the most accounts a
//!    replica held at once from the ledger's pass records.
//! 4. Takeover: 2 replicas (`lease_ttl` `BENCH_LEASE_TTL`, 10 s;
//!    `poll_interval` `BENCH_TAKEOVER_POLL`, 5 s), one SIGKILLed once a
//!    quarter of the messages are in and it is in the middle of passes. The
//!    accounts it held are the ones whose pass by it never ended; the
//!    takeover time of each is from the kill to the start of the next pass
//!    on it (the ledger's `passes`, the database's clock, this host). Twice:
//!    - the killed replica on this host: the survivor sees that its process
//!      is gone and takes its leases at once, at its next try;
//!    - the killed replica "on another node": it runs in a UTS namespace of
//!      its own (`unshare --uts`, another host name; needs root), so the
//!      survivor cannot tell it is dead and waits for the leases to expire.
//!
//!    Then every account must be complete, no two passes of one account
//!    may overlap, and every target mailbox holds exactly
//!    `BENCH_MESSAGES`.
//!
//! Knobs (environment): `BENCH_ACCOUNTS` (100), `BENCH_MESSAGES` (50),
//! `BENCH_REPLICAS` (`1,2,4`), `BENCH_CONCURRENCY` (4: each replica's
//! `max_concurrent_accounts`), `BENCH_POLL` (`30s`: the throughput runs'
//! `poll_interval`), `BENCH_LEASE_TTL` (`10s`), `BENCH_TAKEOVER_POLL`
//! (`5s`), `BENCH_SEEDER`, `BENCH_SKIP` (comma list of: throughput,
//! takeover, node).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use popferry::config::{Endpoint, ImapAuth, Mechanism, Pop3Auth, ServerSettings, TlsMode};
use popferry::imap;
use popferry::ledger::{Ledger, PassRecord};
use popferry::pop3;
use support::{ConfigBuilder, Dovecot, User, popferry_bin};

/// How long any one run may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(1800);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn skipped(what: &str) -> bool {
    std::env::var("BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == what)
}

fn seeder() -> PathBuf {
    std::env::var_os("BENCH_SEEDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/seed-pop3.py")
        })
}

fn source(i: usize) -> String {
    format!("s{i:03}")
}

fn target(i: usize) -> String {
    format!("t{i:03}")
}

fn settings<A: Mechanism>(d: &Dovecot, port: u16, user: &str) -> ServerSettings<A> {
    ServerSettings {
        endpoint: Endpoint {
            host: d.host.clone(),
            port,
            tls: TlsMode::Implicit,
            ca_file: Some(d.ca_file.clone()),
            tls_fingerprint: None,
            timeout: Duration::from_secs(120),
        },
        username: user.into(),
        password: support::PASSWORD.into(),
        auth: A::default(),
        allow_plaintext_password: false,
        oauth2: None,
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `/usr/bin/time -v` said about one replica.
#[derive(Debug, Clone)]
struct Finished {
    peak_rss_kib: u64,
    cpu_secs: f64,
    /// Exited 0 (not killed by a signal, no non-zero status).
    clean: bool,
}

/// One `popferry run` under `/usr/bin/time -v`, its stderr (and time's
/// report) in a file.
struct Replica {
    time: Option<Child>,
    /// popferry's own process id (the child of `/usr/bin/time`).
    pid: u32,
    log: PathBuf,
}

impl Replica {
    /// Starts a replica; with `node`, in a UTS namespace of its own whose
    /// host name is `node` (another machine, as far as the lease holder
    /// names go).
    fn start(config: &Path, log: PathBuf, node: Option<&str>) -> Replica {
        let stderr = fs::File::create(&log).expect("log file");
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v");
        if let Some(host) = node {
            c.args([
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$@\"",
            ])
            .arg(host);
        }
        c.arg(popferry_bin())
            .args(["run", "-c"])
            .arg(config)
            .env_remove("POPFERRY_CONFIG")
            .env("RUST_LOG", env_str("BENCH_RUST_LOG", "warn"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = c.spawn().expect("/usr/bin/time (apt-get install time)");
        let tp = child.id();
        let started = Instant::now();
        let pid = loop {
            let kids =
                fs::read_to_string(format!("/proc/{tp}/task/{tp}/children")).unwrap_or_default();
            if let Some(p) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "/usr/bin/time started no popferry"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        Replica {
            time: Some(child),
            pid,
            log,
        }
    }

    /// Is `holder` (a lease holder name, "host pid N tag") this process?
    fn holds(&self, holder: &str) -> bool {
        holder.contains(&format!(" pid {} ", self.pid))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -s {sig} {}", self.pid);
    }

    fn running(&mut self) -> bool {
        self.time
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Waits for the process to end (after a signal) and reads time's report.
    fn finish(&mut self, limit: Duration) -> Finished {
        let started = Instant::now();
        let child = self.time.as_mut().expect("running");
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "replica {} did not exit within {limit:?}\n{}",
                self.pid,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.time = None;
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let field = |name: &str| -> Option<f64> {
            text.lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        Finished {
            peak_rss_kib: field("Maximum resident set size (kbytes):").unwrap_or(0.0) as u64,
            cpu_secs: field("User time (seconds):").unwrap_or(0.0)
                + field("System time (seconds):").unwrap_or(0.0),
            clean: !text.contains("Command terminated by signal")
                && !text.contains("Command exited with non-zero status"),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.time.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &self.pid.to_string()])
                    .status();
            }
            let _ = c.wait();
        }
    }
}

/// The bench's side: the Dovecot, the accounts, a runtime for the ledger.
struct Bench {
    d: Dovecot,
    accounts: usize,
    messages: u64,
    concurrency: u32,
    rt: tokio::runtime::Runtime,
}

/// How one configuration is written.
struct Setup<'a> {
    tag: &'a str,
    url: &'a str,
    mailbox: &'a str,
    poll: &'a str,
    lease_ttl: Option<&'a str>,
    /// Both sides at this port instead of Dovecot's (the idle replica).
    dead_port: Option<u16>,
}

impl Bench {
    fn names(&self) -> Vec<String> {
        (0..self.accounts).map(source).collect()
    }

    fn config(&self, s: &Setup) -> PathBuf {
        let dir = self.d.scratch().join(format!("bench-{}", s.tag));
        fs::create_dir_all(&dir).expect("mkdir");
        let mut b = ConfigBuilder::new(&self.d, &source(0), &target(0))
            .dir(&dir)
            .postgres(s.url)
            .daemon_poll_interval(s.poll)
            .max_concurrent_accounts(self.concurrency);
        if let Some(ttl) = s.lease_ttl {
            b = b.lease_ttl(ttl);
        }
        for i in 0..self.accounts {
            if i > 0 {
                b = b.add_account(&self.d, &source(i), &source(i), &target(i));
            }
            b = b.mailbox(s.mailbox);
            if let Some(p) = s.dead_port {
                b = b.source_port(Some(p)).target_port(Some(p));
            }
        }
        b.write()
    }

    fn ledger(&self, url: &str) -> Ledger {
        self.rt.block_on(async {
            Ledger::connect(&secrecy::SecretString::from(url))
                .await
                .expect("connect to the ledger")
        })
    }

    /// Messages appended per account, in account order.
    fn copied(&self, l: &Ledger) -> Vec<u64> {
        let names = self.names();
        let st = self.rt.block_on(l.status(&names)).expect("ledger status");
        names
            .iter()
            .map(|n| st.iter().find(|s| &s.account == n).map_or(0, |s| s.copied))
            .collect()
    }

    fn passes(&self, l: &Ledger) -> Vec<Vec<PassRecord>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for n in self.names() {
                out.push(l.passes(&n).await.expect("passes"));
            }
            out
        })
    }

    /// Every target mailbox's message count.
    fn target_counts(&self, mailbox: &str) -> Vec<u32> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for i in 0..self.accounts {
                let s = settings::<ImapAuth>(&self.d, self.d.imaps_port, &target(i));
                let mut session = imap::connect(&s).await.expect("IMAP login");
                let st = session.ensure_mailbox(mailbox).await.expect("STATUS");
                let _ = session.logout().await;
                out.push(st.exists);
            }
            out
        })
    }

    /// Fails unless every target mailbox holds exactly the seeded count.
    fn check_exactly_once(&self, mailbox: &str, what: &str) {
        let counts = self.target_counts(mailbox);
        let wrong: Vec<(String, u32)> = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| u64::from(**n) != self.messages)
            .map(|(i, n)| (target(i), *n))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: target mailboxes without exactly {} messages: {wrong:?}",
            self.messages
        );
    }

    /// Waits until the ledger shows every message of every account in.
    fn wait_all(&self, l: &Ledger, replicas: &mut [Replica], started: Instant) {
        loop {
            let copied = self.copied(l);
            if copied.iter().all(|n| *n >= self.messages) {
                return;
            }
            if started.elapsed() > DEADLINE {
                let logs: Vec<String> = replicas.iter().map(Replica::log_tail).collect();
                panic!(
                    "not done within {DEADLINE:?}: {copied:?}\n{}",
                    logs.join("\n---\n")
                );
            }
            for r in replicas.iter_mut() {
                if !r.running() {
                    panic!("a replica exited early\n{}", r.log_tail());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The most passes `r` ran at once (its pass records; a pass that never
/// ended is open until `end_us`).
fn most_held(passes: &[Vec<PassRecord>], r: &Replica, end_us: i64) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for p in passes.iter().flatten().filter(|p| r.holds(&p.holder)) {
        events.push((p.started_us, 1));
        events.push((p.ended_us.unwrap_or(end_us).min(end_us), -1));
    }
    // Ends before starts at the same instant.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, e) in events {
        now += e;
        most = most.max(now);
    }
    most as usize
}

/// Fails if two passes of one account overlap (a pass of `killed` that
/// never ended ended at the kill).
fn check_no_overlap(passes: &[Vec<PassRecord>], killed: &Replica, killed_at_us: i64) {
    for (i, ps) in passes.iter().enumerate() {
        for w in ps.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let end = match a.ended_us {
                Some(e) => e,
                None if killed.holds(&a.holder) => killed_at_us,
                None => panic!("account {}: a pass never ended: {a:?}", source(i)),
            };
            assert!(
                end <= b.started_us,
                "account {}: two passes at once:\n{a:?}\n{b:?}",
                source(i)
            );
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

struct Throughput {
    replicas: usize,
    secs: f64,
    rss_mib: Vec<f64>,
    held: Vec<usize>,
    cpu: Vec<f64>,
    passes: Vec<usize>,
    /// The sum of the passes' durations until every message was in, seconds.
    pass_secs: f64,
    load: String,
}

fn throughput(b: &Bench, r: usize, poll: &str) -> Throughput {
    let db = support::postgres::database();
    let mailbox = format!("r{r}");
    let cfg = b.config(&Setup {
        tag: &format!("r{r}"),
        url: &db.url,
        mailbox: &mailbox,
        poll,
        lease_ttl: None,
        dead_port: None,
    });
    let ledger = b.ledger(&db.url);
    let load = loadavg();
    let started = Instant::now();
    let started_us = now_us();
    let mut replicas: Vec<Replica> = (0..r)
        .map(|k| {
            Replica::start(
                &cfg,
                b.d.scratch().join(format!("r{r}-replica{k}.log")),
                None,
            )
        })
        .collect();
    b.wait_all(&ledger, &mut replicas, started);
    let secs = started.elapsed().as_secs_f64();
    let done_us = now_us();
    eprintln!("bench: {r} replica(s): every message in after {secs:.1} s (load before: {load})");
    b.check_exactly_once(&mailbox, &format!("{r} replicas"));
    for x in &replicas {
        x.signal("TERM");
    }
    let fin: Vec<Finished> = replicas
        .iter_mut()
        .map(|x| x.finish(Duration::from_secs(60)))
        .collect();
    for (k, f) in fin.iter().enumerate() {
        assert!(
            f.clean,
            "replica {k} did not exit 0 on SIGTERM\n{}",
            replicas[k].log_tail()
        );
    }
    // After the exit: no pass is still open. Only the passes until every
    // message was in count (the replicas pass the accounts again until
    // they are stopped).
    let passes: Vec<Vec<PassRecord>> = b
        .passes(&ledger)
        .into_iter()
        .map(|ps| ps.into_iter().filter(|p| p.started_us < done_us).collect())
        .collect();
    let end = done_us;
    let held = replicas
        .iter()
        .map(|x| most_held(&passes, x, end))
        .collect();
    let by = replicas
        .iter()
        .map(|x| {
            passes
                .iter()
                .flatten()
                .filter(|p| x.holds(&p.holder))
                .count()
        })
        .collect();
    let pass_secs = passes
        .iter()
        .flatten()
        .map(|p| {
            let (from, to) = (
                p.started_us.max(started_us),
                p.ended_us.unwrap_or(end).min(end),
            );
            (to - from).max(0) as f64 / 1e6
        })
        .sum();
    b.rt.block_on(ledger.close());
    Throughput {
        replicas: r,
        secs,
        pass_secs,
        rss_mib: fin.iter().map(|f| mib(f.peak_rss_kib)).collect(),
        held,
        cpu: fin.iter().map(|f| f.cpu_secs).collect(),
        passes: by,
        load,
    }
}

/// A replica that holds nothing: every account points at a closed port.
fn idle_rss(b: &Bench) -> f64 {
    let db = support::postgres::database();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = b.config(&Setup {
        tag: "idle",
        url: &db.url,
        mailbox: "idle",
        poll: "30s",
        lease_ttl: None,
        dead_port: Some(port),
    });
    drop(b.ledger(&db.url));
    let mut x = Replica::start(&cfg, b.d.scratch().join("idle.log"), None);
    // Every account's first pass starts within 10 s (FIRST_RUN_SPREAD).
    std::thread::sleep(Duration::from_secs(12));
    assert!(x.running(), "the idle replica exited\n{}", x.log_tail());
    x.signal("TERM");
    let f = x.finish(Duration::from_secs(60));
    mib(f.peak_rss_kib)
}

struct Takeover {
    node: bool,
    orphaned: usize,
    takeover_secs: Vec<f64>,
    orphans_done_secs: f64,
    all_done_secs: f64,
    killed_at_secs: f64,
    survivor_rss_mib: f64,
    load: String,
}

fn takeover(b: &Bench, node: bool, ttl: &str, poll: &str) -> Takeover {
    let db = support::postgres::database();
    let tag = if node { "kill-node" } else { "kill-host" };
    let cfg = b.config(&Setup {
        tag,
        url: &db.url,
        mailbox: tag,
        poll,
        lease_ttl: Some(ttl),
        dead_port: None,
    });
    let ledger = b.ledger(&db.url);
    let load = loadavg();
    let total = b.messages * b.accounts as u64;
    let started = Instant::now();
    let victim = Replica::start(
        &cfg,
        b.d.scratch().join(format!("{tag}-victim.log")),
        node.then_some("popferry-other-node"),
    );
    let survivor = Replica::start(
        &cfg,
        b.d.scratch().join(format!("{tag}-survivor.log")),
        None,
    );
    let mut replicas = [victim, survivor];
    // SIGKILL the victim once a quarter of the messages are in and it is in
    // the middle of passes.
    let killed_at_us = loop {
        let copied: u64 = b.copied(&ledger).iter().sum();
        if copied * 4 >= total {
            let passes = b.passes(&ledger);
            let open = passes
                .iter()
                .flatten()
                .filter(|p| p.ended_us.is_none() && replicas[0].holds(&p.holder))
                .count();
            if open > 0 {
                replicas[0].signal("KILL");
                break now_us();
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the victim never held a pass\n{}",
            replicas[0].log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let killed = Instant::now();
    let killed_at_secs = started.elapsed().as_secs_f64();
    let f = replicas[0].finish(Duration::from_secs(10));
    assert!(!f.clean, "the victim was killed");
    eprintln!("bench: takeover ({tag}): SIGKILL at {killed_at_secs:.1} s, load before: {load}");

    // The victim's passes that never ended: the accounts it held.
    let orphans: Vec<usize> = b
        .passes(&ledger)
        .iter()
        .enumerate()
        .filter(|(_, ps)| {
            ps.iter()
                .any(|p| p.ended_us.is_none() && replicas[0].holds(&p.holder))
        })
        .map(|(i, _)| i)
        .collect();
    let mut orphans_done: Option<f64> = None;
    loop {
        let copied = b.copied(&ledger);
        if orphans_done.is_none() && orphans.iter().all(|i| copied[*i] >= b.messages) {
            orphans_done = Some(killed.elapsed().as_secs_f64());
        }
        if copied.iter().all(|n| *n >= b.messages) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not done: {copied:?}\n{}",
            replicas[1].log_tail()
        );
        assert!(
            replicas[1].running(),
            "the survivor exited\n{}",
            replicas[1].log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all_done_secs = killed.elapsed().as_secs_f64();
    b.check_exactly_once(tag, tag);
    replicas[1].signal("TERM");
    let fs = replicas[1].finish(Duration::from_secs(60));
    assert!(
        fs.clean,
        "the survivor did not exit 0\n{}",
        replicas[1].log_tail()
    );
    let passes = b.passes(&ledger);
    check_no_overlap(&passes, &replicas[0], killed_at_us);
    let takeover_secs = orphans
        .iter()
        .map(|i| {
            let next = passes[*i]
                .iter()
                .filter(|p| p.started_us > killed_at_us)
                .map(|p| p.started_us)
                .min()
                .expect("an orphaned account passed again");
            (next - killed_at_us) as f64 / 1e6
        })
        .collect();
    b.rt.block_on(ledger.close());
    Takeover {
        node,
        orphaned: orphans.len(),
        takeover_secs,
        orphans_done_secs: orphans_done.unwrap_or(all_done_secs),
        all_done_secs,
        killed_at_secs,
        survivor_rss_mib: mib(fs.peak_rss_kib),
        load,
    }
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and must not start a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "replicas: a benchmark; run it with BENCH_ONLY=replicas scripts/bench.sh (cargo bench --bench replicas)"
        );
        return;
    }
    let accounts = env_num("BENCH_ACCOUNTS", 100) as usize;
    let messages = env_num("BENCH_MESSAGES", 50);
    let concurrency = env_num("BENCH_CONCURRENCY", 4) as u32;
    let counts: Vec<usize> = env_str("BENCH_REPLICAS", "1,2,4")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let poll = env_str("BENCH_POLL", "30s");
    let ttl = env_str("BENCH_LEASE_TTL", "10s");
    let takeover_poll = env_str("BENCH_TAKEOVER_POLL", "5s");

    let mut users: Vec<User> = (0..accounts).map(|i| User::maildir(&source(i))).collect();
    users.extend((0..accounts).map(|i| User::mdbox(&target(i))));
    let d = Dovecot::builder().users(users).start();
    let t = Instant::now();
    for i in 0..accounts {
        let st = Command::new("python3")
            .arg(seeder())
            .arg("--maildir")
            .arg(d.maildir(&source(i)))
            .args(["-n", &messages.to_string(), "--big-count", "0"])
            .args(["--seed", &(i + 1).to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("python3 and the seeder (set BENCH_SEEDER)");
        assert!(st.success(), "seeding {} failed", source(i));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let bytes: u64 = rt.block_on(async {
        let mut total = 0;
        for i in 0..accounts {
            let s = settings::<Pop3Auth>(&d, d.pop3s_port, &source(i));
            let mut p = pop3::connect(&s).await.expect("POP3 login");
            let (n, size) = p.stat().await.expect("STAT");
            assert_eq!(u64::from(n), messages, "{} seeded", source(i));
            let _ = p.quit().await;
            total += size;
        }
        total
    });
    eprintln!(
        "bench: seeded {accounts} accounts x {messages} messages, {:.1} MB, in {:.1?}",
        bytes as f64 / 1e6,
        t.elapsed()
    );
    let b = Bench {
        d,
        accounts,
        messages,
        concurrency,
        rt,
    };
    let total = messages * accounts as u64;
    let mb = bytes as f64 / 1e6;

    let idle = idle_rss(&b);
    eprintln!("bench: a replica holding nothing: peak RSS {idle:.1} MiB");

    let mut runs = Vec::new();
    if !skipped("throughput") {
        for r in &counts {
            runs.push(throughput(&b, *r, &poll));
        }
    }
    let mut kills = Vec::new();
    if !skipped("takeover") {
        kills.push(takeover(&b, false, &ttl, &takeover_poll));
    }
    if !skipped("node") {
        kills.push(takeover(&b, true, &ttl, &takeover_poll));
    }

    println!();
    println!(
        "{accounts} accounts x {messages} messages ({total} messages, {mb:.1} MB), \
         max_concurrent_accounts = {concurrency} per replica, poll_interval = {poll}"
    );
    println!();
    println!(
        "| replicas | seconds | accounts/hour | msg/s | MB/s | peak RSS per replica MiB | most accounts held at once | CPU s per replica | passes per replica until done | busy share | load before |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: | --- |");
    for t in &runs {
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {} | {:.2} | {} |",
            t.replicas,
            t.secs,
            accounts as f64 * 3600.0 / t.secs,
            total as f64 / t.secs,
            mb / t.secs,
            list(
                &t.rss_mib
                    .iter()
                    .map(|m| format!("{m:.1}"))
                    .collect::<Vec<_>>()
            ),
            list(&t.held),
            list(&t.cpu.iter().map(|c| format!("{c:.1}")).collect::<Vec<_>>()),
            list(&t.passes),
            t.pass_secs / (t.replicas as f64 * f64::from(concurrency) * t.secs),
            t.load
        );
    }
    println!();
    println!(
        "- a replica holding no account (every account at a closed port): peak RSS {idle:.1} MiB"
    );
    for t in &runs {
        let n = t.rss_mib.len() as f64;
        let mean = t.rss_mib.iter().sum::<f64>() / n;
        let held = t.held.iter().sum::<usize>() as f64 / n;
        if held > 0.0 {
            println!(
                "- {} replica(s): (mean peak {mean:.1} - idle {idle:.1}) / {held:.1} accounts held = {:.1} MiB per account held",
                t.replicas,
                (mean - idle) / held
            );
        }
    }
    if !kills.is_empty() {
        println!();
        println!(
            "Takeover: 2 replicas, lease_ttl = {ttl}, poll_interval = {takeover_poll}, one SIGKILLed once a quarter of the messages are in"
        );
        println!();
        println!(
            "| killed replica | killed at s | accounts it held | kill -> next pass on each, min / median / max s | kill -> its accounts complete s | kill -> all complete s | target mailboxes with != {messages} | survivor peak RSS MiB | load before |"
        );
        println!("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |");
        for k in &kills {
            let mut v = k.takeover_secs.clone();
            let med = median(&mut v);
            let (lo, hi) = (
                v.first().copied().unwrap_or(f64::NAN),
                v.last().copied().unwrap_or(f64::NAN),
            );
            println!(
                "| {} | {:.1} | {} | {lo:.2} / {med:.2} / {hi:.2} | {:.1} | {:.1} | 0 | {:.1} | {} |",
                if k.node {
                    "on \"another node\" (own UTS namespace): the lease must expire"
                } else {
                    "on this host: its process is seen gone"
                },
                k.killed_at_secs,
                k.orphaned,
                k.orphans_done_secs,
                k.all_done_secs,
                k.survivor_rss_mib,
                k.load
            );
        }
    }
}
