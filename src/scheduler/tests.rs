//! Scheduler timing under paused tokio time, with a scripted runner.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use tokio::time::Instant;

use super::*;

#[path = "hostile_tests.rs"]
mod hostile;

fn account(name: &str, interval: &str) -> Account {
    let text = format!(
        r#"
[ledger]
path = "/tmp/unused.db"
[[accounts]]
name = "{name}"
poll_interval = "{interval}"
[accounts.source]
host = "127.0.0.1"
username = "u"
password = "p"
[accounts.target]
host = "127.0.0.1"
username = "u"
password = "p"
"#
    );
    let mut cfg =
        crate::config::load_str(&text, std::path::Path::new("/tmp/x.toml"), true).expect("config");
    cfg.accounts.remove(0)
}

/// Records when each account ran; answers with a scripted report.
struct Script {
    calls: Mutex<Vec<(String, Instant)>>,
    busy: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
    report: Box<dyn Fn(&str) -> Report + Send + Sync>,
}

impl Script {
    fn new(busy: Duration, report: impl Fn(&str) -> Report + Send + Sync + 'static) -> Arc<Script> {
        Arc::new(Script {
            calls: Mutex::new(Vec::new()),
            busy,
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            report: Box::new(report),
        })
    }

    fn times(&self, name: &str) -> Vec<Instant> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }
}

struct ScriptRunner(Arc<Script>);

impl Runner for ScriptRunner {
    fn run(&self, account: Arc<Account>, _cancel: CancellationToken) -> BoxFuture<Report> {
        let s = self.0.clone();
        Box::pin(async move {
            s.calls
                .lock()
                .expect("lock")
                .push((account.name.clone(), Instant::now()));
            let now = s.running.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(s.busy).await;
            s.running.fetch_sub(1, Ordering::SeqCst);
            (s.report)(&account.name)
        })
    }
}

struct Quiet;
impl Observer for Quiet {
    fn finished(&self, _: Arc<Account>, _: Report, _: u32, _: Duration) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

fn ok(_: &str) -> Report {
    Report::default()
}

fn failing(kind: FailureKind, retry_after: Option<Duration>) -> impl Fn(&str) -> Report {
    move |_| Report {
        error: Some("boom".into()),
        error_kind: Some(kind),
        retry_after,
        ..Report::default()
    }
}

fn gaps(times: &[Instant]) -> Vec<f64> {
    times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect()
}

#[test]
fn backoff_grows_and_is_capped() {
    let fail = failing(FailureKind::Transient, None)("a");
    let i = Duration::from_secs(300);
    let d: Vec<u64> = (1..=10)
        .map(|n| next_delay(i, &fail, n).as_secs())
        .collect();
    assert_eq!(d, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    let perm = failing(FailureKind::Permanent, None)("a");
    assert_eq!(next_delay(i, &perm, 1), PERMANENT_RETRY);
    assert_eq!(next_delay(i, &Report::default(), 0), i);
    let delayed = failing(FailureKind::Transient, Some(Duration::from_secs(900)))("a");
    assert_eq!(next_delay(i, &delayed, 1), Duration::from_secs(900));
}

#[test]
fn jitter_stays_within_ten_percent() {
    let d = Duration::from_secs(100);
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for r in 0..5000u64 {
        let j = jitter(d, r.wrapping_mul(0x9e37_79b9_7f4a_7c15)).as_secs_f64();
        lo = lo.min(j);
        hi = hi.max(j);
    }
    assert!(lo >= 90.0 && hi <= 110.0, "{lo}..{hi}");
    assert!(
        lo < 92.0 && hi > 108.0,
        "jitter should use its range: {lo}..{hi}"
    );
    assert!(first_delay(Duration::from_secs(300), u64::MAX) <= FIRST_RUN_SPREAD);
}

#[tokio::test(start_paused = true)]
async fn each_account_runs_on_its_own_interval() {
    let script = Script::new(Duration::from_secs(1), ok);
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 4);
    s.apply(&[account("fast", "60s"), account("slow", "5m")]);
    tokio::time::sleep(Duration::from_secs(610)).await;
    assert!(s.shutdown(Duration::from_secs(5)).await);
    let fast = script.times("fast");
    let slow = script.times("slow");
    assert!(
        (9..=12).contains(&fast.len()),
        "fast ran {} times",
        fast.len()
    );
    assert!(
        (2..=3).contains(&slow.len()),
        "slow ran {} times",
        slow.len()
    );
    for g in gaps(&fast) {
        // interval ± 10 %, plus the 1 s the pass itself took
        assert!((54.0..=67.0).contains(&g), "gap {g}");
    }
    for g in gaps(&slow) {
        assert!((270.0..=331.0).contains(&g), "gap {g}");
    }
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_limited() {
    let script = Script::new(Duration::from_secs(20), ok);
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 2);
    let accounts: Vec<Account> = (0..5).map(|i| account(&format!("a{i}"), "10m")).collect();
    s.apply(&accounts);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(s.shutdown(Duration::from_secs(60)).await);
    assert_eq!(script.max_running.load(Ordering::SeqCst), 2);
    for i in 0..5 {
        assert_eq!(
            script.times(&format!("a{i}")).len(),
            1,
            "a{i} should have run once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially() {
    let script = Script::new(Duration::ZERO, failing(FailureKind::Transient, None));
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 1);
    s.apply(&[account("flaky", "5m")]);
    tokio::time::sleep(Duration::from_secs(30 + 60 + 120 + 240 + 480 + 200)).await;
    s.shutdown(Duration::from_secs(1)).await;
    let g = gaps(&script.times("flaky"));
    assert!(g.len() >= 4, "{g:?}");
    for (gap, want) in g.iter().zip([30.0, 60.0, 120.0, 240.0]) {
        assert!(
            (want * 0.9..=want * 1.1).contains(gap),
            "gap {gap} want ~{want}: {g:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn login_delay_is_a_floor() {
    let script = Script::new(
        Duration::ZERO,
        failing(FailureKind::Transient, Some(Duration::from_secs(900))),
    );
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 1);
    s.apply(&[account("busy", "1m")]);
    tokio::time::sleep(Duration::from_secs(2000)).await;
    s.shutdown(Duration::from_secs(1)).await;
    let g = gaps(&script.times("busy"));
    assert!(!g.is_empty());
    assert!(g.iter().all(|&x| x >= 900.0), "{g:?}");
}

#[tokio::test(start_paused = true)]
async fn reload_adds_removes_and_restarts_changed_accounts() {
    let script = Script::new(Duration::ZERO, ok);
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 4);
    let c = s.apply(&[
        account("keep", "1m"),
        account("drop", "1m"),
        account("edit", "1m"),
    ]);
    assert_eq!(c.added.len(), 3);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let c = s.apply(&[
        account("keep", "1m"),
        account("edit", "2m"),
        account("new", "1m"),
    ]);
    assert_eq!(
        c,
        Changes {
            added: vec!["new".into()],
            removed: vec!["drop".into()],
            changed: vec!["edit".into()],
        }
    );
    tokio::time::sleep(Duration::from_secs(300)).await;
    s.shutdown(Duration::from_secs(1)).await;
    assert_eq!(script.times("drop").len(), 1, "a removed account stops");
    assert!(script.times("new").len() >= 4, "an added account runs");
}

/// Records every report the observer is told about.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Option<String>, u32)>>);
impl Observer for Recorder {
    fn finished(&self, a: Arc<Account>, r: Report, failures: u32, _: Duration) -> BoxFuture<()> {
        self.0
            .lock()
            .expect("lock")
            .push((a.name.clone(), r.error, failures));
        Box::pin(async {})
    }
}

#[tokio::test(start_paused = true)]
async fn a_changed_account_waits_for_its_previous_pass_to_end() {
    // The pass ignores cancellation for 30 s (a slow message, a server that
    // runs into its timeout): the restarted account must not start a second
    // pass of the same mailbox meanwhile.
    let script = Script::new(Duration::from_secs(30), ok);
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 4);
    s.apply(&[account("edit", "1m")]);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(script.running.load(Ordering::SeqCst), 1, "first pass busy");
    let c = s.apply(&[account("edit", "2m")]);
    assert_eq!(c.changed, ["edit"]);
    // Changed again while the old pass still runs: the third task waits too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.apply(&[account("edit", "3m")]);
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(s.shutdown(Duration::from_secs(60)).await);
    assert_eq!(
        script.max_running.load(Ordering::SeqCst),
        1,
        "two passes of one account overlapped"
    );
    let t = script.times("edit");
    assert!(t.len() >= 2, "the changed account runs again: {t:?}");
    assert!(
        (t[1] - t[0]) >= Duration::from_secs(30),
        "the new pass started before the old one ended: {:?}",
        t[1] - t[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pass_cut_short_by_removal_is_not_reported() {
    // A removed account whose last pass fails while it is being removed
    // must not come back into the health report (it would keep /readyz
    // unhealthy for an account that no longer exists).
    let script = Script::new(
        Duration::from_secs(30),
        failing(FailureKind::Transient, None),
    );
    let rec = Arc::new(Recorder::default());
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), rec.clone(), 4);
    s.apply(&[account("gone", "1m")]);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(script.running.load(Ordering::SeqCst), 1, "pass busy");
    s.apply(&[]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(s.shutdown(Duration::from_secs(5)).await);
    assert_eq!(script.times("gone").len(), 1);
    assert!(
        rec.0.lock().expect("lock").is_empty(),
        "the cut-short pass was reported: {:?}",
        rec.0.lock().expect("lock")
    );
}

#[test]
fn scaled_backoff_keeps_its_shape() {
    let b = Backoff::scaled(Duration::from_millis(50));
    assert_eq!(b.base, Duration::from_millis(50));
    assert_eq!(b.cap, Duration::from_secs(6));
    assert_eq!(b.permanent, Duration::from_secs(6));
    assert_eq!(Backoff::scaled(BACKOFF_BASE), Backoff::default());
    let fail = failing(FailureKind::Transient, None)("a");
    let i = Duration::from_secs(2);
    assert_eq!(b.next_delay(i, &fail, 3), Duration::from_millis(200));
    let perm = failing(FailureKind::Permanent, None)("a");
    assert_eq!(b.next_delay(i, &perm, 1), Duration::from_secs(6));
    assert_eq!(b.next_delay(i, &Report::default(), 0), i);
}

/// The account "rotating" as a reload reads it: its POP3 password in
/// `file`, its POP3 server `host`.
fn account_with_password_file(file: &std::path::Path, host: &str) -> Account {
    let text = format!(
        r#"
[ledger]
path = "/tmp/unused.db"
[[accounts]]
name = "rotating"
poll_interval = "1m"
[accounts.source]
host = "{host}"
username = "u"
password = {{ file = {file:?} }}
[accounts.target]
host = "127.0.0.1"
username = "u"
password = "p"
"#,
        file = file.display().to_string()
    );
    let mut cfg =
        crate::config::load_str(&text, std::path::Path::new("/tmp/x.toml"), true).expect("config");
    cfg.accounts.remove(0)
}

#[tokio::test(start_paused = true)]
async fn a_rotated_password_file_restarts_nothing_a_new_host_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pop.pw");
    std::fs::write(&file, "first\n").expect("write");
    let script = Script::new(Duration::ZERO, ok);
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 4);
    s.apply(&[account_with_password_file(&file, "127.0.0.1")]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(script.times("rotating").len(), 1, "first pass");

    // The next login reads the file anyway: same account, same schedule.
    std::fs::write(&file, "rotated\n").expect("rotate");
    let c = s.apply(&[account_with_password_file(&file, "127.0.0.1")]);
    assert_eq!(c, Changes::default(), "a rotated password is not a change");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        script.times("rotating").len(),
        1,
        "a restarted task would have run again within its first 10 s"
    );

    let c = s.apply(&[account_with_password_file(&file, "localhost")]);
    assert_eq!(c.changed, ["rotating"]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(s.shutdown(Duration::from_secs(5)).await);
    assert_eq!(script.times("rotating").len(), 2, "restarted at once");
}

/// SIGUSR1's "check now": a waiting account runs at once although its
/// interval is an hour; one in the middle of a pass runs again as soon as
/// that pass ends.
#[tokio::test(start_paused = true)]
async fn check_now_makes_every_account_due() {
    let script = Script::new(Duration::from_secs(30), ok);
    let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), Arc::new(Quiet), 4);
    s.apply(&[account("a", "1h"), account("b", "1h")]);
    // First passes start within 10 s and take 30 s.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(script.times("a").len(), 1);
    assert_eq!(script.times("b").len(), 1);

    let asked = s.check_now();
    assert_eq!(asked, vec!["a".to_string(), "b".to_string()]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        script.times("a").len(),
        2,
        "a waits an hour without the check"
    );
    assert_eq!(script.times("b").len(), 2);

    // Asked again while both are in that pass (30 s): each runs once more
    // right after it, not twice, and then waits its hour.
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.check_now();
    s.check_now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let a = script.times("a");
    assert_eq!(a.len(), 3, "one more pass after the one running");
    let gap = a[2].duration_since(a[1]).as_secs_f64();
    assert!(
        (29.0..=31.5).contains(&gap),
        "the next pass followed at once: {gap}"
    );
    tokio::time::sleep(Duration::from_secs(1800)).await;
    assert_eq!(script.times("a").len(), 3, "then the interval again");
    assert!(s.shutdown(Duration::from_secs(60)).await);
}
