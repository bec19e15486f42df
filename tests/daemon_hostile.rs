//! The daemon against hostile values (issue 9, case 5): a POP3 server that
//! announces `LOGIN-DELAY 18446744073709551615` does not panic the daemon
//! (it stays alive, polls, and `status` prints), and `popferry status`
//! prints any next run the ledger holds (i64::MAX, negative) without
//! panicking. The POP3 side is the scripted fake: no real server announces
//! such a delay.

mod support;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use popferry::ledger::Ledger;
use support::corpus::corpus_kind;
use support::fake_pop3::{FakeMessage, FakePop3, Script};
use support::{
    ConfigBuilder, Dovecot, Tls, describe_output, popferry_command, popferry_with_timeout,
};

const LIMIT: Duration = Duration::from_secs(90);

fn run(cfg: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["-c", cfg.to_str().expect("utf-8 path")]);
    popferry_with_timeout(&all, &[], LIMIT)
}

fn fake_config(d: &Dovecot, fake: &FakePop3, name: &str) -> ConfigBuilder {
    ConfigBuilder::new(d, "alice", "dave")
        .name(name)
        .source_tls(Tls::None)
        .source_port(Some(fake.port()))
        .target_tls(Tls::None)
        .timeout("2s")
}

fn set_next_run(ledger: &Path, account: &str, at: i64) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            let l = Ledger::open(ledger).await.expect("open the ledger");
            l.set_next_run(account, at).await.expect("set next run");
            l.close().await;
        });
}

fn status_prints(cfg: &Path) -> String {
    let o = run(cfg, &["status"]);
    let ctx = describe_output(&o);
    assert_eq!(o.status.code(), Some(0), "status:\n{ctx}");
    assert!(!ctx.contains("panicked"), "{ctx}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `status` with a next run past year 9999, or before 1970.
#[test]
fn status_prints_any_next_run() {
    let d = Dovecot::start();
    let fake = FakePop3::start(
        Script::default(),
        vec![FakeMessage::new(&corpus_kind("plain"), "u1")],
    );
    let b = fake_config(&d, &fake, "far");
    let cfg = b.write();
    let o = run(&cfg, &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe_output(&o));
    for at in [i64::MAX, 260_000_000_000 + 1_764_000_000, -1, i64::MIN] {
        set_next_run(&b.ledger_path(), "far", at);
        let out = status_prints(&cfg);
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("next run"))
            .unwrap_or_else(|| panic!("no next run line:\n{out}"));
        assert!(line.contains(&at.to_string()), "{line}");
        let json = run(&cfg, &["status", "--json"]);
        assert_eq!(json.status.code(), Some(0), "{}", describe_output(&json));
    }
}

/// `popferry run` against a server announcing the longest LOGIN-DELAY a
/// u64 holds: the first pass copies, the daemon stays alive, the next run is
/// at most about a day away, and `status` prints it.
#[test]
fn an_endless_login_delay_leaves_the_daemon_alive() {
    let d = Dovecot::start();
    let mut script = Script::default();
    script
        .capa
        .get_or_insert_with(Vec::new)
        .push("LOGIN-DELAY 18446744073709551615".into());
    let fake = FakePop3::start(script, vec![FakeMessage::new(&corpus_kind("plain"), "u1")]);
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let b = fake_config(&d, &fake, "delay")
        .daemon_poll_interval("1s")
        .listen(&addr.to_string());
    let cfg = b.write();
    let log = d.scratch().join("delay.log");
    let mut child = popferry_command()
        .args(["run", "-c"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn popferry run");
    let log_text = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    let start = Instant::now();
    let mut next = None;
    while next.is_none() {
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!("the daemon exited ({st}):\n{}", log_text());
        }
        assert!(start.elapsed() < LIMIT, "no pass recorded:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(200));
        let o = run(&cfg, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        next = v[0]["next_run"].as_i64();
    }
    assert!(
        fake.count("RETR") >= 1,
        "the first pass polled: {:?}",
        fake.log()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let next = next.unwrap_or_default();
    assert!(
        next <= now + 86_400 * 11 / 10 + 5,
        "next run {next}, now {now}"
    );
    assert!(
        next >= now + 86_400 - 60,
        "LOGIN-DELAY is a floor: {next}, now {now}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "{}",
        log_text()
    );
    let text = log_text();
    assert!(!text.contains("panicked"), "{text}");
    status_prints(&cfg);
    let _ = child.kill();
    let _ = child.wait();
}

/// A pass stuck in a server read when SIGTERM comes (the POP3 server goes
/// silent after LIST was sent; the read's timeout is longer than the
/// shutdown deadline) is dropped at the deadline, and its lease is given
/// back before the process exits 0: another replica or a `sync` may take
/// the account at once instead of waiting for `lease_ttl`.
#[test]
fn a_pass_stuck_in_a_read_at_sigterm_is_dropped_and_its_lease_given_back() {
    use support::daemon::{RunningDaemon, free_port};
    use support::fake_pop3::Reply;
    let d = Dovecot::start();
    let fake = FakePop3::start(
        Script::default().on("LIST", Reply::Silent(Vec::new())),
        vec![FakeMessage::new(&corpus_kind("plain"), "u1")],
    );
    let port = free_port();
    let cfg = fake_config(&d, &fake, "stuck")
        .timeout("90s")
        .poll_interval("1h")
        .listen(&format!("127.0.0.1:{port}"))
        .write();
    let log = cfg.with_file_name("daemon.log");
    let mut daemon = RunningDaemon::start(&cfg, port, &log);
    daemon.wait_for("the pass to send LIST", |_| fake.count("LIST") >= 1);
    let v: serde_json::Value =
        serde_json::from_slice(&run(&cfg, &["status", "--json"]).stdout).expect("status JSON");
    assert!(
        v[0]["held_by"].is_string(),
        "the stuck pass holds the lease: {v}"
    );
    let started = Instant::now();
    daemon.stop();
    let took = started.elapsed();
    let text = daemon.log_text();
    assert!(
        text.contains("dropped"),
        "the pass was dropped at the deadline (after {took:?}):\n{text}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&run(&cfg, &["status", "--json"]).stdout).expect("status JSON");
    assert!(
        v[0]["held_by"].is_null(),
        "the lease was given back before the exit: {v}\n{text}"
    );
}
