//! Replicas of `popferry run` sharing a PostgreSQL ledger (guarantee 9,
//! issue 12), end to end: a real Dovecot, a real PostgreSQL (a private
//! cluster, `tests/support/postgres.rs`), the real binary.
//!
//! Three replicas and thirty accounts: every message reaches its target
//! mailbox exactly once (counted in the target and in the ledger); no
//! account is ever passed by two processes at once (from the ledger's pass
//! records); one replica SIGKILLed in the middle of a pass leaves its
//! accounts to the others with no duplicate; a `popferry sync` started
//! beside them adds nothing twice; SIGTERM makes each replica give its
//! leases back and exit 0.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use popferry::ledger::{Lease, Ledger, PassRecord, State};
use support::{ConfigBuilder, Dovecot, Storage, User, imap_fetch_all, popferry_command};

const ACCOUNTS: usize = 30;
const MESSAGES: usize = 4;
const REPLICAS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(240);

fn source(i: usize) -> String {
    format!("src{i:02}")
}

fn mailbox(i: usize) -> String {
    format!("acc{i:02}")
}

/// `n` small distinct messages of account `i`.
fn messages(i: usize) -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|m| {
            format!(
                "From: sender@example.test\r\nTo: someone@example.test\r\n\
                 Subject: account {i} message {m}\r\n\
                 Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n\
                 Message-ID: <r{i}-{m}@replicas.popferry.test>\r\n\r\n\
                 Body of message {m} of account {i}.\r\n{}\r\n",
                "x".repeat(200 * m)
            )
            .into_bytes()
        })
        .collect()
}

/// One runtime for the test's ledger handle (its pool's connections
/// belong to the runtime that opened them).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
    .block_on(f)
}

/// One `popferry run`, its stderr in a file.
struct Replica {
    child: Option<Child>,
    log: PathBuf,
}

impl Replica {
    fn start(config: &Path, log: PathBuf) -> Replica {
        let stderr = fs::File::create(&log).expect("log file");
        let child = popferry_command()
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn popferry run");
        Replica {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The lease holder name of this process: "host pid N tag".
    fn holds(&self, holder: &str) -> bool {
        holder.contains(&format!(" pid {} ", self.pid()))
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg("kill -s \"$0\" \"$1\"")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -s {sig} {}", self.pid());
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Rows `appended` per account, and every pass record, read in one go.
fn snapshot(l: &Ledger) -> (Vec<usize>, Vec<Vec<PassRecord>>) {
    block_on(async {
        let mut done = Vec::new();
        let mut passes = Vec::new();
        for i in 0..ACCOUNTS {
            let rows = l.messages(&source(i)).await.expect("rows");
            done.push(rows.values().filter(|r| r.state == State::Appended).count());
            passes.push(l.passes(&source(i)).await.expect("passes"));
        }
        (done, passes)
    })
}

#[test]
fn three_replicas_share_thirty_accounts_exactly_once_through_a_kill() {
    let mut users: Vec<User> = (0..ACCOUNTS).map(|i| User::maildir(&source(i))).collect();
    users.push(User::new("target", support::PASSWORD, Storage::Mdbox));
    let d = Dovecot::builder().users(users).start();
    let mut seeded: Vec<BTreeMap<String, usize>> = Vec::new();
    for i in 0..ACCOUNTS {
        let s = d.seed(&source(i), &messages(i));
        let mut m = BTreeMap::new();
        for x in s {
            *m.entry(x.sha256_hex).or_insert(0) += 1;
        }
        seeded.push(m);
    }
    let db = support::postgres::database();
    let mut b = ConfigBuilder::new(&d, &source(0), "target")
        .mailbox(&mailbox(0))
        .postgres(&db.url)
        .lease_ttl("4s")
        .daemon_poll_interval("6s")
        .max_concurrent_accounts(4);
    for i in 1..ACCOUNTS {
        b = b
            .add_account(&d, &source(i), &source(i), "target")
            .mailbox(&mailbox(i));
    }
    let cfg = b.write();
    let at = b.ledger_at();
    let ledger = block_on(support::ledger::open(&at));

    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|r| Replica::start(&cfg, d.scratch().join(format!("replica{r}.log"))))
        .collect();
    let logs = |replicas: &[Replica]| {
        replicas
            .iter()
            .enumerate()
            .map(|(r, x)| format!("--- replica {r} ---\n{}", x.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // SIGKILL replica 0 as soon as it is in the middle of a pass.
    let start = Instant::now();
    let killed_at_us = loop {
        let (_, passes) = snapshot(&ledger);
        let open = passes
            .iter()
            .flatten()
            .any(|p| p.ended_us.is_none() && replicas[0].holds(&p.holder));
        if open {
            replicas[0].signal("KILL");
            let at = now_us();
            replicas[0]
                .wait_exit(Duration::from_secs(10))
                .expect("killed");
            break at;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "replica 0 never started a pass\n{}",
            logs(&replicas)
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // A one-shot sync beside the replicas: it skips what they hold.
    let out = support::popferry(&["sync", "-c", cfg.to_str().expect("utf-8")], &[]);
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "sync beside the replicas: {}",
        support::describe_output(&out)
    );

    // Everything arrives.
    loop {
        let (done, _) = snapshot(&ledger);
        if done.iter().all(|n| *n == MESSAGES) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not all accounts finished: {done:?}\n{}",
            logs(&replicas)
        );
        for r in replicas.iter_mut().skip(1) {
            assert!(
                r.wait_exit(Duration::ZERO).is_none(),
                "a replica exited\n{}",
                r.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more polls on every account, to give a duplicate its chance.
    std::thread::sleep(Duration::from_secs(8));

    // SIGTERM: each surviving replica gives its leases back and exits 0.
    for r in replicas.iter().skip(1) {
        r.signal("TERM");
    }
    for r in replicas.iter_mut().skip(1) {
        let status = r.wait_exit(Duration::from_secs(40));
        assert!(
            status.is_some_and(|s| s.success()),
            "exit 0 on SIGTERM, got {status:?}\n{}",
            r.log_text()
        );
    }
    let after_term = block_on(async {
        let mut held = Vec::new();
        for i in 0..ACCOUNTS {
            let got = ledger
                .take_lease(&source(i), "the test", Duration::from_secs(60))
                .await
                .expect("take");
            if let Lease::HeldBy { holder, .. } = got
                && !replicas[0].holds(&holder)
            {
                held.push((source(i), holder));
            }
        }
        held
    });
    assert!(
        after_term.is_empty(),
        "leases not given back on SIGTERM: {after_term:?}"
    );

    // Exactly once, in the target and in the ledger.
    let (done, passes) = snapshot(&ledger);
    assert!(done.iter().all(|n| *n == MESSAGES), "{done:?}");
    for (i, want) in seeded.iter().enumerate() {
        let got = imap_fetch_all(&d, "target", &mailbox(i));
        let mut m = BTreeMap::new();
        for f in got {
            *m.entry(f.sha256_hex).or_insert(0) += 1;
        }
        assert_eq!(&m, want, "account {i}: every message once");
    }

    // No two passes of one account overlap. A pass of the killed replica
    // never recorded its end: it ended at the kill.
    let mut total = 0;
    let mut by_replica = [0usize; REPLICAS];
    for (i, ps) in passes.iter().enumerate() {
        total += ps.len();
        for p in ps {
            for (r, x) in replicas.iter().enumerate() {
                if x.holds(&p.holder) {
                    by_replica[r] += 1;
                }
            }
        }
        for w in ps.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let end = match a.ended_us {
                Some(e) => e,
                None if replicas[0].holds(&a.holder) => killed_at_us,
                None => panic!("account {i}: a pass never ended: {a:?}"),
            };
            assert!(
                end <= b.started_us,
                "account {i}: two passes at once:\n{a:?}\n{b:?}"
            );
            assert!(b.generation > a.generation, "generations grow: {ps:?}");
        }
    }
    assert!(total >= ACCOUNTS, "every account passed: {total}");
    assert!(
        by_replica.iter().skip(1).all(|n| *n > 0),
        "both surviving replicas took part: {by_replica:?}"
    );
}

fn config_text(ledger: &str) -> String {
    format!(
        "[ledger]\n{ledger}\n\n[[accounts]]\nname = \"legacy\"\n\n[accounts.source]\n\
         host = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nusername = \"alice\"\npassword = \"pw1\"\n\n\
         [accounts.target]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nusername = \"dave\"\npassword = \"pw2\"\n"
    )
}

fn run_with(ledger: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("popferry.toml");
    fs::write(&cfg, config_text(ledger)).expect("write");
    let mut all = args.to_vec();
    all.extend(["-c", cfg.to_str().expect("utf-8")]);
    let out = support::popferry(&all, &[]);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `[ledger] url`: `status` reads a PostgreSQL ledger like a SQLite one;
/// `path` and `url` together are a configuration error naming both; no
/// message shows the URL's password.
#[test]
fn status_on_a_postgres_ledger_and_url_errors_without_the_password() {
    let db = support::postgres::database();
    let url = format!("url = \"{}\"", db.url);
    let (code, out) = run_with(&url, &["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("legacy"), "{out}");

    let (code, out) = run_with(
        "path = \"l.db\"\nurl = \"postgres://pf:Hunter2-pw@127.0.0.1:9/p\"",
        &["status"],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("path") && out.contains("url"), "{out}");
    assert!(!out.contains("Hunter2-pw"), "{out}");

    // Nothing listens on port 9: the connection fails, the password is not shown.
    let (code, out) = run_with(
        "url = \"postgres://pf:Hunter2-pw@127.0.0.1:9/p?connect_timeout=5\"",
        &["status"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("pf:***@127.0.0.1:9"), "{out}");
    assert!(!out.contains("Hunter2-pw"), "{out}");
}

/// A value of `/metrics` (a sample without labels, or the first with them).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The lease holder a replica names in `popferry_replica_info{holder="…"}`.
fn replica_holder(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("popferry_replica_info{"))?;
    let start = line.find("holder=\"")? + "holder=\"".len();
    let rest = line.get(start..)?;
    Some(rest.get(..rest.find('"')?)?.to_owned())
}

/// `/metrics` of each replica: the leases it holds, the passes it ran
/// (exactly the pass records the ledger has under its holder name), and
/// the takeovers (exactly one: the test's own lease left to expire
/// unreleased, as a dead replica's would be).
#[test]
fn each_replica_s_metrics_count_its_leases_passes_and_takeovers() {
    const N: usize = 6;
    let mut users: Vec<User> = (0..N).map(|i| User::maildir(&source(i))).collect();
    users.push(User::new("target", support::PASSWORD, Storage::Mdbox));
    let d = Dovecot::builder().users(users).start();
    for i in 0..N {
        d.seed(&source(i), &messages(i));
    }
    let db = support::postgres::database();
    let mut b = ConfigBuilder::new(&d, &source(0), "target")
        .mailbox(&mailbox(0))
        .postgres(&db.url)
        .lease_ttl("4s")
        // One pass each (the first within 10 s), then quiet: the counts
        // can be compared with the ledger's at rest.
        .daemon_poll_interval("1h")
        .max_concurrent_accounts(2);
    for i in 1..N {
        b = b
            .add_account(&d, &source(i), &source(i), "target")
            .mailbox(&mailbox(i));
    }
    let at = b.ledger_at();
    // A replica that died holding src00: its lease expires unreleased.
    assert!(support::ledger::hold(
        &at,
        &source(0),
        "a replica that died",
        Duration::from_secs(1)
    ));
    let mut daemons = Vec::new();
    for r in 0..2 {
        let port = support::daemon::free_port();
        let cfg = b
            .clone()
            .file_name(&format!("replica{r}.toml"))
            .listen(&format!("127.0.0.1:{port}"))
            .write();
        daemons.push(support::daemon::RunningDaemon::start(
            &cfg,
            port,
            &d.scratch().join(format!("replica{r}.log")),
        ));
    }
    let ledger = block_on(support::ledger::open(&at));
    let done = |l: &Ledger| {
        block_on(async {
            let mut n = 0;
            for i in 0..N {
                let rows = l.messages(&source(i)).await.expect("rows");
                n += rows.values().filter(|r| r.state == State::Appended).count();
            }
            n
        })
    };
    daemons[0].wait_for("every message copied", |_| done(&ledger) == N * MESSAGES);

    // At rest: no lease held, and two scrapes a second apart agree.
    let scrape = |daemons: &[support::daemon::RunningDaemon]| -> Vec<String> {
        daemons
            .iter()
            .map(|x| x.get("/metrics", &[]).body)
            .collect()
    };
    let passes_of = |texts: &[String]| -> Vec<f64> {
        texts
            .iter()
            .map(|t| sample(t, "popferry_passes_total").unwrap_or(-1.0))
            .collect()
    };
    let start = Instant::now();
    let texts = loop {
        let a = scrape(&daemons);
        std::thread::sleep(Duration::from_secs(1));
        let b = scrape(&daemons);
        let idle = b
            .iter()
            .all(|t| sample(t, "popferry_leases_held") == Some(0.0));
        if idle && passes_of(&a) == passes_of(&b) {
            break b;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never at rest:\n{}",
            b.join("\n")
        );
    };

    let records: Vec<PassRecord> = block_on(async {
        let mut all = Vec::new();
        for i in 0..N {
            all.extend(ledger.passes(&source(i)).await.expect("passes"));
        }
        all
    });
    let mut takeovers = 0.0;
    let mut passes = 0.0;
    for t in &texts {
        let holder = replica_holder(t).unwrap_or_else(|| panic!("no replica_info:\n{t}"));
        let ran = sample(t, "popferry_passes_total").expect("passes_total");
        let recorded = records.iter().filter(|p| p.holder == holder).count();
        assert_eq!(ran, recorded as f64, "{holder}: passes vs the ledger\n{t}");
        assert!(
            sample(t, "popferry_passes_held_elsewhere_total").is_some(),
            "{t}"
        );
        takeovers += sample(t, "popferry_lease_takeovers_total").expect("takeovers");
        passes += ran;
    }
    assert!(passes >= N as f64, "every account passed: {passes}");
    assert_eq!(
        takeovers,
        1.0,
        "one lease expired unreleased\n{}",
        texts.join("\n")
    );
    for dm in &mut daemons {
        dm.stop();
    }
}

/// `popferry status` names the process holding each account's lease, and
/// when that lease expires; a free account names nobody.
fn status_names_the_lease_holder(backend: support::ledger::Backend) {
    let d = Dovecot::start();
    let on = backend.apply(ConfigBuilder::new(&d, "alice", "dave"));
    let b = on.builder.add_account(&d, "free", "bob", "dave");
    let cfg = b.write();
    assert!(support::ledger::hold(
        b.ledger_at(),
        "alice",
        "replica-7 pid 42 cafe",
        Duration::from_secs(300)
    ));
    let out = support::popferry(&["status", "-c", cfg.to_str().expect("utf-8")], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        support::describe_output(&out)
    );
    let (alice, free) = text.split_once("\nfree\n").expect("both accounts");
    assert!(
        alice.contains("held by       replica-7 pid 42 cafe (lease until 20"),
        "{text}"
    );
    assert!(!free.contains("held by"), "{text}");
    let out = support::popferry(
        &["status", "--json", "-c", cfg.to_str().expect("utf-8")],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("\"held_by\": \"replica-7 pid 42 cafe\""),
        "{text}"
    );
    drop(on.db);
}
both_backends!(status_names_the_lease_holder);

/// Replicas given a file with only an [account_template] share the
/// accounts kept in the ledger; one imported while they run is taken up on
/// SIGHUP; every message arrives exactly once.
#[test]
fn replicas_share_the_accounts_kept_in_the_ledger_and_reload_them() {
    const N: usize = 5;
    let mut users: Vec<User> = (0..N).map(|i| User::maildir(&source(i))).collect();
    users.push(User::new("target", support::PASSWORD, Storage::Mdbox));
    let d = Dovecot::builder().users(users).start();
    for i in 0..N {
        d.seed(&source(i), &messages(i));
    }
    let db = support::postgres::database();
    let pw = d.scratch().join("password");
    fs::write(&pw, support::PASSWORD).expect("password file");
    let ca = d.ca_file.display().to_string();
    let cfg = d.scratch().join("fleet.toml");
    fs::write(
        &cfg,
        format!(
            "[ledger]\nurl = {:?}\nlease_ttl = \"4s\"\n\n[daemon]\npoll_interval = \"3s\"\n\n\
             [account_template]\n[account_template.source]\nport = {}\nca_file = {ca:?}\n\
             [account_template.target]\nport = {}\nca_file = {ca:?}\n",
            db.url, d.pop3s_port, d.imaps_port
        ),
    )
    .expect("config");
    let cfg_s = cfg.to_str().expect("utf-8");
    let import = |range: std::ops::Range<usize>| {
        let csv = d.scratch().join(format!("fleet{}.csv", range.start));
        let mut text = String::from(
            "name,source_host,source_username,source_password,target_host,target_username,target_password,mailbox\n",
        );
        for i in range {
            text.push_str(&format!(
                "{s},127.0.0.1,{s},file:{p},127.0.0.1,target,file:{p},{m}\n",
                s = source(i),
                p = pw.display(),
                m = mailbox(i)
            ));
        }
        fs::write(&csv, text).expect("csv");
        let out = support::popferry(
            &[
                "accounts",
                "import",
                csv.to_str().expect("utf-8"),
                "-c",
                cfg_s,
            ],
            &[],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            support::describe_output(&out)
        );
    };
    import(0..N - 1);
    let ledger = block_on(support::ledger::open(&support::ledger::LedgerAt::Postgres(
        db.url.clone(),
    )));
    let mut replicas: Vec<Replica> = (0..2)
        .map(|r| Replica::start(&cfg, d.scratch().join(format!("fleet{r}.log"))))
        .collect();
    let logs = |replicas: &[Replica]| {
        replicas
            .iter()
            .map(Replica::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let wait_all = |n: usize, replicas: &[Replica]| {
        let start = Instant::now();
        loop {
            let (done, _) = snapshot(&ledger);
            if done.iter().take(n).all(|x| *x == MESSAGES) {
                return done;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "not all accounts finished: {done:?}\n{}",
                logs(replicas)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let done = wait_all(N - 1, &replicas);
    assert_eq!(done[N - 1], 0, "not imported yet");

    import(N - 1..N);
    for r in &replicas {
        r.signal("HUP");
    }
    wait_all(N, &replicas);
    std::thread::sleep(Duration::from_secs(4));
    for r in &replicas {
        r.signal("TERM");
    }
    for r in &mut replicas {
        let status = r.wait_exit(Duration::from_secs(40));
        assert!(status.is_some_and(|s| s.success()), "{}", r.log_text());
    }
    let (_, passes) = snapshot(&ledger);
    for i in 0..N {
        let got = imap_fetch_all(&d, "target", &mailbox(i));
        assert_eq!(got.len(), MESSAGES, "account {i}: every message once");
    }
    let holders: std::collections::BTreeSet<&str> =
        passes.iter().flatten().map(|p| p.holder.as_str()).collect();
    assert!(!passes[N - 1].is_empty(), "the reloaded account passed");
    assert!(holders.len() <= 2, "{holders:?}");
}
