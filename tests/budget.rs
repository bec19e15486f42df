//! Upload budgets and provider limits (issue 11): a migration that runs
//! into a day's budget stops appending cleanly, says when it resumes
//! (summary, `status`), deletes only what it copied, and picks up where it
//! stopped, with nothing lost or doubled; a provider's "account exceeded
//! its limits" backs the whole account off without counting against the
//! message.
//!
//! The budget is popferry's own, so the real Dovecot is the target (over 4
//! sessions, as Gmail is: `gmail_shape`). The provider's refusal is one no
//! real server here gives on demand, so that one uses the scripted fake
//! IMAP server (tests/support/fake_imap.rs).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::corpus::corpus_kind;
use support::fake_imap::FakeImap;
use support::{
    ConfigBuilder, Dovecot, Tls, describe_output, imap_fetch_all, popferry_with_timeout,
};

const RUN_LIMIT: Duration = Duration::from_secs(120);

fn run(cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["-c", cfg.to_str().expect("utf-8 path")]);
    popferry_with_timeout(&all, &[], RUN_LIMIT)
}

fn status(cfg: &Path) -> serde_json::Value {
    let out = run(cfg, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn multiset<'a>(it: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in it {
        *m.entry(s.to_owned()).or_insert(0) += 1;
    }
    m
}

/// `n` messages of a few kB to ~30 kB each.
fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let body_len = 2000 + (i * 7919) % 30_000;
            let line = format!("line {i} of a budgeted message, padded to length.\r\n");
            let body = line.repeat(body_len / line.len() + 1);
            format!(
                "Message-ID: <budget-{i}@popferry.test>\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\nFrom: a@example.org\r\nTo: b@example.org\r\nSubject: budget {i}\r\n\r\n{body}"
            )
            .into_bytes()
        })
        .collect()
}

#[test]
fn a_day_budget_that_runs_out_mid_pass_stops_cleanly_and_the_rest_follows_once() {
    let d = Dovecot::builder().gmail_shape().start();
    let seeded = d.seed("alice", &numbered(20));
    // Room for the first 8 messages and half of the 9th: exactly 8 go.
    let first8: u64 = seeded[..8].iter().map(|s| s.size).sum();
    let budget = first8 + seeded[8].size / 2;
    let builder = ConfigBuilder::new(&d, "alice", "dave")
        .name("migrating")
        .target_tls(Tls::None)
        .delete("after-sync");
    let cfg = builder
        .clone()
        .target_extra(&format!("max_upload_per_day = {budget}\n"))
        .write();

    let out = run(&cfg, &["sync"]);
    let ctx = describe_output(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a spent budget is no failure:\n{ctx}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("migrating: paused:")
            && stdout.contains("max_upload_per_day")
            && stdout.contains("resumes at"),
        "the summary says the budget stopped it and when it resumes:\n{ctx}"
    );
    let landed = imap_fetch_all(&d, "dave", "INBOX");
    assert_eq!(
        multiset(landed.iter().map(|f| f.sha256_hex.as_str())),
        multiset(seeded[..8].iter().map(|s| s.sha256_hex.as_str())),
        "exactly the first 8 messages, once each:\n{ctx}"
    );
    // Only what was copied is deleted; the rest waits on the POP3 server.
    assert_eq!(d.pop3_uidls("alice").len(), 12, "{ctx}");

    let v = status(&cfg);
    assert_eq!(v[0]["copied"], 8, "{v}");
    assert_eq!(v[0]["unresolved"], 0, "nothing left in flight: {v}");
    let until = v[0]["paused_until"].as_i64().expect("paused_until is set");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        until > now && until <= now + 86_400 && until % 86_400 == 0,
        "resumes at the next UTC midnight: {until} (now {now})"
    );
    let text = run(&cfg, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("budget") && text.contains("resumes at"),
        "status says when it resumes:\n{text}"
    );

    // The same day, the same budget: nothing more goes, nothing breaks.
    let out = run(&cfg, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(imap_fetch_all(&d, "dave", "INBOX").len(), 8);
    assert_eq!(d.pop3_uidls("alice").len(), 12);

    // A bigger budget (as the next day brings): the rest, once each.
    let cfg = builder.write();
    let out = run(&cfg, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let landed = imap_fetch_all(&d, "dave", "INBOX");
    assert_eq!(
        multiset(landed.iter().map(|f| f.sha256_hex.as_str())),
        multiset(seeded.iter().map(|s| s.sha256_hex.as_str())),
        "every message exactly once"
    );
    assert!(d.pop3_uidls("alice").is_empty());
    let v = status(&cfg);
    assert!(v[0]["paused_until"].is_null(), "the pause is over: {v}");
    assert_eq!(v[0]["copied"], 20, "{v}");
}

#[test]
fn a_provider_saying_the_account_exceeded_its_limits_backs_off_without_rejecting_the_message() {
    let d = Dovecot::start();
    let msgs = vec![
        corpus_kind("plain"),
        corpus_kind("utf8-8bit"),
        corpus_kind("dot-lines"),
    ];
    d.seed("alice", &msgs);
    let fake = FakeImap::start();
    let marker = b"X-Corpus-Kind: utf8-8bit".as_slice();
    fake.refuse(
        marker,
        "NO [ALERT] Account exceeded command or bandwidth limits. (Failure)",
    );
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .name("throttled")
        .target_tls(Tls::None)
        .target_port(Some(fake.port()))
        .timeout("2s")
        .write();
    // More runs than max_attempts (3): a limit of the account is never
    // held against the message.
    for round in 1..=4 {
        let out = run(&cfg, &["sync"]);
        let ctx = describe_output(&out);
        assert_eq!(out.status.code(), Some(1), "round {round}:\n{ctx}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("throttled") && stdout.contains("limits this account"),
            "round {round}: the error says the account is limited:\n{ctx}"
        );
        assert_eq!(fake.attempts(marker), round, "one try per run:\n{ctx}");
        let v = status(&cfg);
        assert_eq!(v[0]["rejected"], 0, "round {round}: {v}");
        assert_eq!(v[0]["pending"], 1, "round {round}: {v}");
    }
    // The message before it went; the one after waits (nothing more is
    // sent once the account is limited).
    let stored = fake.stored();
    assert!(
        stored
            .iter()
            .any(|m| m.windows(18).any(|w| w == b"X-Corpus-Kind: pla")),
        "the first message was appended"
    );
    assert!(
        stored
            .iter()
            .all(|m| !m.windows(marker.len()).any(|w| w == marker))
    );
}

/// The daemon: a spent budget is the account's state on the status page
/// and in `/metrics`, and its next pass waits for the next UTC day.
#[test]
fn the_daemon_waits_for_the_next_day_and_says_so_on_its_page_and_metrics() {
    use support::daemon::{RunningDaemon, free_port};
    let d = Dovecot::start();
    let seeded = d.seed("alice", &numbered(6));
    let budget = seeded[0].size + seeded[1].size / 2;
    let port = free_port();
    let builder = ConfigBuilder::new(&d, "alice", "dave")
        .name("paced")
        .target_extra(&format!("max_upload_per_day = {budget}\n"))
        .poll_interval("2s")
        .listen(&format!("127.0.0.1:{port}"));
    let cfg = builder.write();
    let log = cfg.with_file_name("daemon.log");
    let mut daemon = RunningDaemon::start(&cfg, port, &log);
    daemon.wait_for("the budget to stop the first pass", |dm| {
        dm.try_get("/", &[])
            .is_some_and(|a| a.body.contains("budget spent"))
    });
    let page = daemon.get("/", &[]).body;
    assert!(page.contains("resumes at"), "{page}");
    // The page reads the ledger, written inside the pass; the metrics are
    // recorded once the pass has returned: wait for them too.
    const GAUGE: &str = "popferry_budget_resumes_at_timestamp_seconds{account=\"paced\"}";
    daemon.wait_for("the budget gauge", |dm| {
        dm.try_get("/metrics", &[])
            .is_some_and(|a| a.body.lines().any(|l| l.starts_with(GAUGE)))
    });
    let metrics = daemon.get("/metrics", &[]).body;
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with(GAUGE))
        .unwrap_or_else(|| panic!("no budget gauge:\n{metrics}"));
    let resumes: f64 = gauge
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{gauge}"));
    assert!(resumes > 0.0 && resumes % 86_400.0 == 0.0, "{gauge}");
    // Polls every 2 s, yet no second pass: the next one is planned for
    // the next UTC day.
    std::thread::sleep(Duration::from_secs(5));
    let v = status(&cfg);
    let next = v[0]["next_run"].as_i64().expect("next run planned");
    assert!(
        next as f64 >= resumes,
        "next run {next} before {resumes}: {v}"
    );
    assert_eq!(v[0]["copied"], 1, "{v}");
    assert_eq!(imap_fetch_all(&d, "dave", "INBOX").len(), 1);
    daemon.stop();
}
