//! End-to-end: `popferry run` (the daemon) as a child process against a real
//! Dovecot: new mail while it runs, SIGTERM in the middle of a large sync,
//! SIGHUP reloads (good and bad files), `/metrics`, `/readyz`, `status` and
//! the logs. Every daemon is killed at the end of its test, panics included
//! (see [`Daemon`]'s `Drop`).
//!
//! Each test starts its own Dovecot (see tests/support) and its own daemon
//! with `poll_interval = "2s"`, so a first pass starts within 2 s and the
//! next ones follow every 2 s ± 10 %. Waits are "until it happened, or fail
//! after a generous deadline"; nothing asserts how fast something was.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::corpus::{self, messages};
use support::imap::quote;
use support::{
    ConfigBuilder, Dovecot, Imap, Password, Seeded, describe_output, imap_fetch_all, popferry,
    popferry_command,
};

/// How long any single wait in these tests may take before it is a failure.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------

/// A `popferry run` child process. Killed (SIGKILL) on drop if still running;
/// on a panic, its log is printed.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    addr: SocketAddr,
    config: PathBuf,
}

/// A free port on 127.0.0.1 (bound, then released for the daemon to take).
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

impl Daemon {
    /// Starts `popferry [args] run -c config`, stderr to `<scratch>/<log_name>`,
    /// and waits until `/healthz` answers.
    fn start(
        d: &Dovecot,
        config: &Path,
        addr: SocketAddr,
        log_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = d.scratch().join(log_name);
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open daemon log");
        let mut cmd = popferry_command();
        cmd.args(args)
            .arg("run")
            .arg("-c")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("POPFERRY_BACKOFF_BASE")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn popferry run");
        let mut daemon = Daemon {
            child: Some(child),
            log,
            addr,
            config: config.to_path_buf(),
        };
        daemon.wait_for("/healthz to answer 200", |_| {
            daemon_get(addr, "/healthz").is_some_and(|(code, _)| code == 200)
        });
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// `kill -s SIG pid` (the shell's builtin: no procps needed).
    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("kill -s \"$0\" \"$1\"")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid());
    }

    /// Still running (panics with the log if it exited).
    fn assert_running(&mut self) {
        let exited = self
            .child
            .as_mut()
            .expect("daemon running")
            .try_wait()
            .expect("try_wait");
        if let Some(status) = exited {
            panic!(
                "the daemon exited ({status}) while it should run\n--- daemon log ---\n{}",
                self.log_text()
            );
        }
    }

    /// Polls `cond` every 100 ms until it holds; fails after [`DEADLINE`] or
    /// if the daemon exits meanwhile.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        loop {
            if cond(self) {
                return;
            }
            self.assert_running();
            if start.elapsed() > DEADLINE {
                panic!(
                    "gave up after {DEADLINE:?} waiting for {what}\n--- daemon log ---\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().expect("daemon running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then asserts a clean exit (status 0) within the 30 s shutdown
    /// deadline (plus slack for the process itself).
    fn stop(&mut self) {
        self.signal("TERM");
        match self.wait_exit(Duration::from_secs(40)) {
            Some(status) => assert!(
                status.success(),
                "the daemon should exit 0 on SIGTERM, got {status}\n--- daemon log ---\n{}",
                self.log_text()
            ),
            None => panic!(
                "the daemon did not exit within 40 s of SIGTERM\n--- daemon log ---\n{}",
                self.log_text()
            ),
        }
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        daemon_get(self.addr, path).unwrap_or_else(|| panic!("GET {path} on {} failed", self.addr))
    }

    fn metrics(&self) -> Metrics {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics:\n{body}");
        Metrics::parse(&body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- popferry daemon log ({}, config {}) ---\n{}",
                self.log.display(),
                self.config.display(),
                self.log_text()
            );
        }
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`: (status, body), or None if
/// nothing answered.
fn daemon_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked { dechunk(body) } else { body.into() };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Prometheus text: (name, sorted labels) → value.
struct Metrics {
    text: String,
    values: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, mut labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or(rest);
                    let labels: Vec<(String, String)> = inner
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.trim().to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            labels.sort();
            values.insert((name, labels), value);
        }
        Metrics {
            text: text.to_owned(),
            values,
        }
    }

    /// The value of `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.sort();
        self.values.get(&(name.to_owned(), l)).copied()
    }

    /// Every series of `name` whose labels include these.
    fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(&[(String, String)], f64)> {
        self.values
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|((_, l), v)| (l.as_slice(), *v))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// SHA-256 → how many times it occurs.
fn multiset<'a>(it: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in it {
        *m.entry(s.to_owned()).or_insert(0) += 1;
    }
    m
}

fn seeded_set(seeded: &[Seeded]) -> BTreeMap<String, usize> {
    multiset(seeded.iter().map(|s| s.sha256_hex.as_str()))
}

fn target_set(d: &Dovecot, user: &str) -> BTreeMap<String, usize> {
    let fetched = imap_fetch_all(d, user, "INBOX");
    multiset(fetched.iter().map(|f| f.sha256_hex.as_str()))
}

/// How many messages the user's INBOX holds (STATUS; 0 if it does not exist yet).
fn inbox_count(d: &Dovecot, user: &str) -> usize {
    let mut c = Imap::login(d, user);
    let r = c.command(&format!("STATUS {} (MESSAGES)", quote("INBOX")));
    c.logout();
    if !r.is_ok() {
        return 0;
    }
    r.untagged
        .iter()
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .find_map(|u| {
            let at = u.find("MESSAGES ")?;
            u[at + 9..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `n` small distinct messages, tagged so that no two share bytes.
fn small_messages(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "From: sender@example.test\r\n\
                 To: someone@example.test\r\n\
                 Subject: {tag} {i}\r\n\
                 Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n\
                 Message-ID: <{tag}-{i}@daemon.popferry.test>\r\n\
                 \r\n\
                 Message {i} of {n} ({tag}).\r\n"
            )
            .into_bytes()
        })
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Merges two seeded lists into one expected multiset.
fn union(a: &[Seeded], b: &[Seeded]) -> BTreeMap<String, usize> {
    let mut m = seeded_set(a);
    for s in b {
        *m.entry(s.sha256_hex.clone()).or_insert(0) += 1;
    }
    m
}

/// A daemon config: `poll_interval = "2s"` and the endpoint on `addr`.
fn daemon_config(d: &Dovecot, addr: SocketAddr) -> ConfigBuilder {
    ConfigBuilder::new(d, "alice", "dave")
        .daemon_poll_interval("2s")
        .listen(&addr.to_string())
}

/// `popferry status [--json] -c config`: stdout, asserting exit 0.
fn status(config: &Path, json: bool) -> String {
    let c = config.to_str().expect("utf-8 path");
    let mut args = vec!["status", "-c", c];
    if json {
        args.push("--json");
    }
    let out = popferry(&args, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status failed:\n{}",
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `--json` status entry of `account`.
fn status_json(config: &Path, account: &str) -> serde_json::Value {
    let text = status(config, true);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{text}"));
    v.as_array()
        .and_then(|a| a.iter().find(|e| e["account"] == account))
        .cloned()
        .unwrap_or_else(|| panic!("no {account:?} in status --json:\n{text}"))
}

/// "Sync finished" lines of a JSON log for `account`.
fn finished_lines(log: &str, account: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "Sync finished" && v["account"] == account)
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Mail present at start and mail that arrives while the daemon runs is
/// copied (each within about one interval), exactly once, and the daemon
/// stops cleanly on SIGTERM.
#[test]
fn copies_mail_that_arrives_while_running() {
    let d = Dovecot::start();
    let first = d.seed("alice", &messages(&corpus::corpus_small()));
    let addr = free_addr();
    let cfg = daemon_config(&d, addr).write();
    let mut daemon = Daemon::start(&d, &cfg, addr, "arrive.log", &[], &[]);

    daemon.wait_for("the mail present at start in the target", |_| {
        target_set(&d, "dave") == seeded_set(&first)
    });

    let second = d.seed("alice", &small_messages("later", 3));
    let want = union(&first, &second);
    daemon.wait_for("the mail that arrived later in the target", |_| {
        target_set(&d, "dave") == want
    });

    // And once more, a single message, to see the schedule keeps going.
    let third = d.seed("alice", &small_messages("latest", 1));
    let mut want_all = want.clone();
    *want_all.entry(third[0].sha256_hex.clone()).or_insert(0) += 1;
    daemon.wait_for("the third arrival in the target", |_| {
        target_set(&d, "dave") == want_all
    });

    // Further passes copy nothing more: wait for two more passes to finish.
    let runs = |m: &Metrics| {
        m.get(
            "popferry_runs_total",
            &[("account", "alice"), ("result", "success")],
        )
        .unwrap_or(0.0)
    };
    let before = runs(&daemon.metrics());
    daemon.wait_for("two more passes", |daemon| {
        runs(&daemon.metrics()) >= before + 2.0
    });
    assert_eq!(
        target_set(&d, "dave"),
        want_all,
        "idle passes must not append anything"
    );
    daemon.stop();
}

/// SIGTERM in the middle of a large sync: exit 0 at a safe point within the
/// deadline, part of the mail copied; the next start finishes it, and the
/// target then holds every seeded message exactly once.
#[test]
fn sigterm_mid_sync_exits_cleanly_and_the_next_start_finishes_without_duplicates() {
    let d = Dovecot::start();
    let mut batch = small_messages("bulk", 1500);
    // The 10 MB message early on, so that a stop is likely to land near it.
    batch.insert(5, corpus::corpus_kind("big"));
    let seeded = d.seed("alice", &batch);
    let total = seeded.len();
    let addr = free_addr();
    let cfg = daemon_config(&d, addr).write();

    let mut daemon = Daemon::start(&d, &cfg, addr, "term1.log", &[], &[]);
    daemon.wait_for("the first messages in the target", |_| {
        inbox_count(&d, "dave") >= 3
    });
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(40));
    let log = daemon.log_text();
    let status = status.unwrap_or_else(|| {
        panic!("no exit within 40 s of SIGTERM (deadline 30 s)\n--- daemon log ---\n{log}")
    });
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}\n--- daemon log ---\n{log}"
    );
    let copied = inbox_count(&d, "dave");
    assert!(
        (1..total).contains(&copied),
        "SIGTERM should stop the pass part-way: {copied} of {total} copied\n{log}"
    );
    assert!(
        log.contains("popferry daemon stopped"),
        "the daemon logs its stop:\n{log}"
    );
    // What the target holds so far is a subset without duplicates.
    let partial = target_set(&d, "dave");
    let want = seeded_set(&seeded);
    for (sha, n) in &partial {
        assert!(
            *n == 1 && want.contains_key(sha),
            "after the stop, message {sha} is in the target {n} times (seeded: {})",
            want.get(sha).copied().unwrap_or(0)
        );
    }

    // The interrupted pass is neither a success nor a failure.
    assert!(
        log.contains("Sync interrupted by shutdown"),
        "the interrupted pass says so:\n{log}"
    );
    let st = status_json(&cfg, "alice");
    assert!(
        st["last_success"].is_null() && st["consecutive_failures"] == 0,
        "an interrupted pass records no success and no failure: {st}"
    );

    // The next start finishes the job.
    let mut daemon = Daemon::start(&d, &cfg, addr, "term2.log", &[], &[]);
    daemon.wait_for("every message in the target", |_| {
        inbox_count(&d, "dave") >= total
    });
    // Let the pass that copied the last one record its end.
    daemon.wait_for("a successful pass recorded", |daemon| {
        daemon
            .metrics()
            .get(
                "popferry_runs_total",
                &[("account", "alice"), ("result", "success")],
            )
            .is_some_and(|v| v >= 1.0)
    });
    daemon.stop();
    assert_eq!(
        target_set(&d, "dave"),
        want,
        "after the restart the target holds each seeded message exactly once"
    );
    let st = status_json(&cfg, "alice");
    assert_eq!(st["copied"], total, "ledger count:\n{st}");
    assert_eq!(st["unresolved"], 0, "no unresolved intent left:\n{st}");
}

/// SIGHUP after adding an account: the new account syncs. SIGHUP with a
/// broken file: the daemon says why, keeps the old configuration, stays
/// healthy and keeps syncing both accounts.
#[test]
fn sighup_adds_an_account_and_a_broken_file_is_refused() {
    let d = Dovecot::start();
    let a1 = d.seed("alice", &small_messages("hup-alice", 2));
    let b1 = d.seed("bob", &small_messages("hup-bob", 3));
    let addr = free_addr();
    let one = daemon_config(&d, addr);
    let cfg = one.write();
    let mut daemon = Daemon::start(&d, &cfg, addr, "hup.log", &[], &[]);
    daemon.wait_for("alice's mail in dave", |_| {
        target_set(&d, "dave") == seeded_set(&a1)
    });
    assert_eq!(inbox_count(&d, "erin"), 0, "bob is not configured yet");

    // Add bob → erin and reload.
    let two = one.clone().add_account(&d, "bob", "bob", "erin");
    two.write();
    daemon.signal("HUP");
    daemon.wait_for("bob's mail in erin after the reload", |_| {
        target_set(&d, "erin") == seeded_set(&b1)
    });
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("Configuration reloaded") && l.contains("bob")),
        "the reload is logged with the added account:\n{log}"
    );

    // A broken file: an unknown key.
    fs::write(
        &cfg,
        format!("{}\n[daemon.oops]\nnot_a_key = 1\n", two.to_toml()),
    )
    .expect("write broken config");
    daemon.signal("HUP");
    daemon.wait_for("the refusal in the log", |daemon| {
        daemon.log_text().contains("Configuration reload refused")
    });
    let log = daemon.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("Configuration reload refused"))
        .unwrap_or_default();
    assert!(
        refusal.contains("oops") || refusal.contains("not_a_key") || refusal.contains("line"),
        "the refusal says why: {refusal}"
    );
    let (code, body) = daemon.get("/healthz");
    assert_eq!(code, 200, "/healthz after a refused reload: {body}");
    let (code, body) = daemon.get("/readyz");
    assert_eq!(code, 200, "/readyz after a refused reload: {body}");

    // Still syncing both accounts on the previous configuration.
    let a2 = d.seed("alice", &small_messages("hup-alice-2", 2));
    let b2 = d.seed("bob", &small_messages("hup-bob-2", 2));
    daemon.wait_for("new mail of both accounts after the refused reload", |_| {
        target_set(&d, "dave") == union(&a1, &a2) && target_set(&d, "erin") == union(&b1, &b2)
    });

    // Invalid TOML altogether is refused too.
    fs::write(&cfg, "this is [not toml\n").expect("write garbage config");
    daemon.signal("HUP");
    daemon.wait_for("a second refusal in the log", |daemon| {
        daemon
            .log_text()
            .matches("Configuration reload refused")
            .count()
            >= 2
    });
    daemon.assert_running();
    daemon.stop();
}

/// `/metrics` counts what was copied: messages and bytes per account, runs by
/// result, the run duration histogram and the last success timestamp; idle
/// passes add runs but no messages.
#[test]
fn metrics_match_what_was_copied() {
    let d = Dovecot::start();
    let seeded = d.seed("alice", &messages(&corpus::corpus_small()));
    let n = seeded.len();
    let bytes: u64 = seeded.iter().map(|s| s.size).sum();
    let addr = free_addr();
    let cfg = daemon_config(&d, addr).write();
    let started = unix_now();
    let mut daemon = Daemon::start(&d, &cfg, addr, "metrics.log", &[], &[]);
    daemon.wait_for("a successful pass in /metrics", |daemon| {
        daemon
            .metrics()
            .get(
                "popferry_runs_total",
                &[("account", "alice"), ("result", "success")],
            )
            .is_some_and(|v| v >= 1.0)
    });
    assert_eq!(target_set(&d, "dave"), seeded_set(&seeded));

    let m = daemon.metrics();
    let acc = [("account", "alice")];
    assert_eq!(
        m.get("popferry_messages_copied_total", &acc),
        Some(n as f64),
        "copied counter\n{}",
        m.text
    );
    assert_eq!(
        m.get("popferry_bytes_copied_total", &acc),
        Some(bytes as f64),
        "bytes counter\n{}",
        m.text
    );
    for zero in [
        "popferry_messages_skipped_total",
        "popferry_messages_rejected_total",
        "popferry_messages_deleted_total",
    ] {
        assert_eq!(m.get(zero, &acc), Some(0.0), "{zero}\n{}", m.text);
    }
    assert_eq!(
        m.get(
            "popferry_runs_total",
            &[("account", "alice"), ("result", "failure")]
        )
        .unwrap_or(0.0),
        0.0,
        "no failed run\n{}",
        m.text
    );
    let count = m
        .get("popferry_run_duration_seconds_count", &acc)
        .unwrap_or_else(|| panic!("run duration histogram missing\n{}", m.text));
    assert!(count >= 1.0, "histogram count {count}");
    assert!(
        !m.series("popferry_run_duration_seconds_bucket", &acc)
            .is_empty(),
        "histogram buckets missing\n{}",
        m.text
    );
    let last = m
        .get("popferry_last_success_timestamp_seconds", &acc)
        .unwrap_or_else(|| panic!("last success timestamp missing\n{}", m.text));
    assert!(
        last >= (started - 5) as f64 && last <= (unix_now() + 5) as f64,
        "last success {last} should be between the start ({started}) and now"
    );
    assert_eq!(
        m.get("popferry_consecutive_failures", &acc),
        Some(0.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.get("popferry_pending_intents", &acc),
        Some(0.0),
        "{}",
        m.text
    );

    // Idle passes: more runs, the same message and byte counts.
    let runs = m
        .get(
            "popferry_runs_total",
            &[("account", "alice"), ("result", "success")],
        )
        .unwrap_or(0.0);
    daemon.wait_for("two more passes", |daemon| {
        daemon
            .metrics()
            .get(
                "popferry_runs_total",
                &[("account", "alice"), ("result", "success")],
            )
            .is_some_and(|v| v >= runs + 2.0)
    });
    let m = daemon.metrics();
    assert_eq!(
        m.get("popferry_messages_copied_total", &acc),
        Some(n as f64)
    );
    assert_eq!(
        m.get("popferry_bytes_copied_total", &acc),
        Some(bytes as f64)
    );
    assert!(
        m.get("popferry_run_duration_seconds_count", &acc)
            .is_some_and(|c| c >= count + 2.0),
        "every pass is in the histogram\n{}",
        m.text
    );

    // New mail adds exactly its count.
    let more = d.seed("alice", &small_messages("metrics-more", 4));
    let more_bytes: u64 = more.iter().map(|s| s.size).sum();
    daemon.wait_for("the copied counter to reach n + 4", |daemon| {
        daemon
            .metrics()
            .get("popferry_messages_copied_total", &acc)
            .is_some_and(|v| v >= (n + 4) as f64)
    });
    let m = daemon.metrics();
    assert_eq!(
        m.get("popferry_messages_copied_total", &acc),
        Some((n + 4) as f64)
    );
    assert_eq!(
        m.get("popferry_bytes_copied_total", &acc),
        Some((bytes + more_bytes) as f64)
    );
    daemon.stop();
}

/// An account that keeps failing (wrong password) turns `/readyz` to 503
/// after a few passes in a row (saying "not ready" and nothing more: no
/// account, user, host or server reply; the details are in `status`), while `/healthz` stays 200 and the
/// healthy account keeps syncing; fixing the password (SIGHUP) makes it
/// ready again.
///
/// The wait after a permanent failure is an hour in production; the test
/// shortens it with the daemon's test knob `POPFERRY_BACKOFF_BASE`.
#[test]
fn readyz_turns_unhealthy_when_an_account_keeps_failing() {
    let d = Dovecot::start();
    let a1 = d.seed("alice", &small_messages("ready-alice", 2));
    d.seed("bob", &small_messages("ready-bob", 2));
    let addr = free_addr();
    let good = daemon_config(&d, addr).add_account(&d, "bob", "bob", "erin");
    let bad = good
        .clone()
        .source_password(Password::Plain("wrong-password-xyzzy".into()));
    let cfg = bad.write();
    let mut daemon = Daemon::start(
        &d,
        &cfg,
        addr,
        "ready.log",
        &[],
        &[("POPFERRY_BACKOFF_BASE", "50ms")],
    );
    daemon.wait_for("alice's mail in dave", |_| {
        target_set(&d, "dave") == seeded_set(&a1)
    });

    let mut healthz_always_ok = true;
    daemon.wait_for("/readyz to answer 503", |_| {
        healthz_always_ok &= daemon_get(addr, "/healthz").is_some_and(|(c, _)| c == 200);
        daemon_get(addr, "/readyz").is_some_and(|(c, _)| c == 503)
    });
    assert!(healthz_always_ok, "/healthz must stay 200 meanwhile");
    // The status and nothing else: no account, user, host or server reply
    // (the endpoint listens on every interface in a container). Why bob
    // fails is in `popferry status`.
    let (code, body) = daemon.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body, "not ready\n", "/readyz says only its status");
    for secret in ["bob", "127.0.0.1", "wrong-password-xyzzy", "uthenticat"] {
        assert!(!body.contains(secret), "{secret:?} in /readyz: {body}");
    }
    let st = status_json(&cfg, "bob");
    assert!(
        st["last_error"].as_str().is_some_and(|e| e.contains("bob")),
        "the details are in status: {st}"
    );
    let (code, _) = daemon.get("/healthz");
    assert_eq!(code, 200, "/healthz stays 200");

    let m = daemon.metrics();
    let fails = m
        .get("popferry_consecutive_failures", &[("account", "bob")])
        .unwrap_or(0.0);
    assert!(fails >= 3.0, "consecutive failures {fails}\n{}", m.text);
    assert!(
        m.get(
            "popferry_runs_total",
            &[("account", "bob"), ("result", "failure")]
        )
        .is_some_and(|v| v >= 3.0),
        "{}",
        m.text
    );
    assert_eq!(inbox_count(&d, "erin"), 0);

    // The healthy account keeps syncing.
    let a2 = d.seed("alice", &small_messages("ready-alice-2", 3));
    daemon.wait_for("alice's new mail while bob fails", |_| {
        target_set(&d, "dave") == union(&a1, &a2)
    });
    let log = daemon.log_text();
    assert!(
        !log.contains("wrong-password-xyzzy"),
        "no password in the log"
    );

    // Fixed password, reload: bob syncs and /readyz is 200 again.
    good.write();
    daemon.signal("HUP");
    daemon.wait_for("/readyz to answer 200 again", |_| {
        daemon_get(addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(daemon.get("/readyz").1, "ready\n");
    daemon.wait_for("bob's mail in erin", |_| inbox_count(&d, "erin") == 2);
    daemon.stop();
}

/// `popferry status` (text and `--json`) while the daemon runs and after it
/// stopped: last run, last success, next run and the counts.
#[test]
fn status_shows_the_daemons_runs() {
    let d = Dovecot::start();
    let seeded = d.seed("alice", &small_messages("status", 5));
    let addr = free_addr();
    let cfg = daemon_config(&d, addr).write();
    let t0 = unix_now();
    let mut daemon = Daemon::start(&d, &cfg, addr, "status.log", &[], &[]);
    daemon.wait_for("a next run in status --json", |_| {
        let st = status_json(&cfg, "alice");
        st["copied"] == 5 && st["next_run"].is_i64()
    });
    assert_eq!(target_set(&d, "dave"), seeded_set(&seeded));

    let st = status_json(&cfg, "alice");
    let t = |k: &str| {
        st[k]
            .as_i64()
            .unwrap_or_else(|| panic!("{k} missing in status --json:\n{st}"))
    };
    let now = unix_now();
    assert!(
        (t0 - 1..=now + 1).contains(&t("last_run")),
        "last_run:\n{st}"
    );
    assert!(
        (t0 - 1..=now + 1).contains(&t("last_success")),
        "last_success:\n{st}"
    );
    // The next pass is about one interval (2 s ± 10 %) after the last one.
    assert!(
        t("next_run") >= t("last_run") && t("next_run") <= now + 5,
        "next_run:\n{st}"
    );
    assert_eq!(st["last_error"], serde_json::Value::Null, "{st}");
    assert_eq!(st["consecutive_failures"], 0, "{st}");
    for k in ["skipped", "rejected", "pending", "unresolved", "deleted"] {
        assert_eq!(st[k], 0, "{k}:\n{st}");
    }

    let text = status(&cfg, false);
    assert!(text.contains("alice"), "{text}");
    assert!(text.contains("copied 5"), "{text}");
    for label in ["last run", "last success", "next run"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line:\n{text}"));
        assert!(!line.contains("never"), "{line}");
    }

    // The daemon moves last_run forward on every pass.
    let first_run = t("last_run");
    daemon.wait_for("last_run to move on", |_| {
        status_json(&cfg, "alice")["last_run"]
            .as_i64()
            .is_some_and(|r| r > first_run)
    });

    daemon.stop();
    let after = status_json(&cfg, "alice");
    assert_eq!(after["copied"], 5, "{after}");
    assert!(after["last_success"].is_i64(), "{after}");
}

/// `--log-format json`: every line is JSON; each pass logs one info line per
/// account with copied/skipped/rejected/deleted/bytes/seconds; an idle daemon
/// logs nothing else at info level and above.
#[test]
fn json_logs_one_line_per_pass_and_no_noise_when_idle() {
    let d = Dovecot::start();
    let seeded = d.seed("alice", &small_messages("logs", 3));
    let bytes: u64 = seeded.iter().map(|s| s.size).sum();
    let addr = free_addr();
    let cfg = daemon_config(&d, addr)
        .add_account(&d, "bob", "bob", "erin")
        .write();
    let mut daemon = Daemon::start(
        &d,
        &cfg,
        addr,
        "json.log",
        &["--log-format", "json", "--log-level", "info"],
        &[],
    );
    daemon.wait_for("four idle passes of each account", |daemon| {
        let log = daemon.log_text();
        finished_lines(&log, "alice").len() >= 5 && finished_lines(&log, "bob").len() >= 5
    });
    daemon.stop();
    assert_eq!(target_set(&d, "dave"), seeded_set(&seeded));

    let log = daemon.log_text();
    let mut parsed = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        parsed.push(v);
    }
    for v in &parsed {
        assert!(
            v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(),
            "level, message and timestamp on every line: {v}"
        );
        assert_ne!(v["level"], "WARN", "nothing to warn about: {v}");
        assert_ne!(v["level"], "ERROR", "nothing failed: {v}");
    }

    for account in ["alice", "bob"] {
        let lines = finished_lines(&log, account);
        for l in &lines {
            assert_eq!(l["level"], "INFO", "{l}");
            for k in ["copied", "skipped", "rejected", "deleted", "bytes"] {
                assert!(l[k].is_u64(), "{k} on the pass line: {l}");
            }
            assert!(l["seconds"].is_f64(), "seconds on the pass line: {l}");
        }
        let copied: u64 = lines.iter().filter_map(|l| l["copied"].as_u64()).sum();
        let want = if account == "alice" { 3 } else { 0 };
        assert_eq!(copied, want, "{account}: copied over all passes");
        if account == "alice" {
            let b: u64 = lines.iter().filter_map(|l| l["bytes"].as_u64()).sum();
            assert_eq!(b, bytes, "bytes over all passes");
        }
    }

    // No noise: after the first pass of each account, every info line that
    // is not the daemon's own stop is a pass line; so one line per pass per
    // account.
    let first_pass = |account: &str| {
        parsed
            .iter()
            .position(|v| v["message"] == "Sync finished" && v["account"] == account)
            .unwrap_or_else(|| panic!("no pass line for {account}"))
    };
    let first_done = first_pass("alice").max(first_pass("bob"));
    let stop_at = parsed
        .iter()
        .position(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("SIGTERM"))
        })
        .expect("the SIGTERM line");
    let noise: Vec<&serde_json::Value> = parsed[first_done + 1..stop_at]
        .iter()
        .filter(|v| v["message"] != "Sync finished")
        .collect();
    assert!(
        noise.is_empty(),
        "an idle daemon logs only one line per pass per account; also got:\n{}",
        noise
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let idle: Vec<&serde_json::Value> = parsed[first_done + 1..stop_at].iter().collect();
    assert!(
        idle.iter().all(|v| v["copied"] == 0),
        "idle passes copy nothing"
    );
}
