//! End-to-end: `popferry verify` against a real Dovecot (POP3 source, IMAP
//! target): a consistent account, copies deleted from the target, new mail
//! not synced yet, a target message the ledger does not know, a changed
//! UIDVALIDITY, messages gone from both sides; that nothing changes without
//! `--repair` (both servers and the ledger compared before and after); and
//! that `--repair` restores each message exactly once.
//!
//! Each test starts its own Dovecot (see tests/support). The servers are
//! read and changed with the harness's own raw clients, never popferry's.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use popferry::ledger::{AccountStatus, Ledger};
use support::corpus::{corpus_small, messages};
use support::{
    ConfigBuilder, Dovecot, Imap, Pop3, Seeded, describe_output, imap_append, imap_fetch_all,
    popferry,
};

/// Runs `popferry <args> -c <config>`: (exit code, stdout, all output).
fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", config.to_str().expect("utf-8 path")]);
    let out = popferry(&all, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        describe_output(&out),
    )
}

fn sync_ok(config: &Path) {
    let (code, _, all) = run(config, &["sync"]);
    assert_eq!(code, 0, "sync should succeed:\n{all}");
}

/// `verify --json` (with `extra` arguments): the exit code and the account's
/// report.
fn verify_json(config: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let (code, stdout, all) = run(config, &args);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("verify --json: {e}\n{all}"));
    let report = v
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("one report per account:\n{all}"));
    (code, report, all)
}

fn count(report: &serde_json::Value, name: &str) -> u64 {
    report["counts"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counts.{name} in {report:#}"))
}

/// The problems of a report with this verdict, by UIDL (sorted).
fn with_verdict(report: &serde_json::Value, verdict: &str) -> Vec<String> {
    let mut v: Vec<String> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p["verdict"] == verdict)
        .map(|p| p["uidl"].as_str().expect("uidl").to_owned())
        .collect();
    v.sort();
    v
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn status(ledger: &Path, account: &str) -> AccountStatus {
    block_on(async {
        let l = Ledger::open(ledger).await.expect("open the ledger");
        let s = l.status(&[account.to_owned()]).await.expect("status");
        l.close().await;
        s.into_iter().next().expect("the account's status")
    })
}

/// Everything `verify` must leave as it found it: the target mailbox (UIDs,
/// flags, dates, bytes), the POP3 listing, every ledger row and the
/// account's record of runs.
#[derive(Debug, PartialEq)]
struct World {
    target: Vec<(u32, Vec<String>, String, String)>,
    mailboxes: Vec<String>,
    pop3: Vec<(String, u64)>,
    rows: Vec<String>,
    runs: String,
}

fn world(d: &Dovecot, ledger: &Path, mailbox: &str) -> World {
    let target = imap_fetch_all(d, "dave", mailbox)
        .into_iter()
        .map(|f| (f.uid, f.flags, f.internal_date, f.sha256_hex))
        .collect();
    let mut p = Pop3::login(d, "alice");
    let uidls = p.uidl();
    let sizes = p.list();
    p.quit();
    let pop3 = uidls
        .into_iter()
        .zip(sizes)
        .map(|(u, (_, size))| (u, size))
        .collect();
    let mut rows: Vec<String> = support::ledger::rows(ledger, "alice")
        .values()
        .map(|r| format!("{r:?}"))
        .collect();
    rows.sort();
    let s = status(ledger, "alice");
    let runs = format!(
        "{:?} {:?} {:?} {}",
        s.last_run, s.last_success, s.last_error, s.consecutive_failures
    );
    World {
        target,
        mailboxes: support::imap_mailboxes(d, "dave"),
        pop3,
        rows,
        runs,
    }
}

/// SHA-256 → how many times the target holds it.
fn target_shas(d: &Dovecot, mailbox: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in imap_fetch_all(d, "dave", mailbox) {
        *m.entry(f.sha256_hex).or_insert(0) += 1;
    }
    m
}

fn seeded_shas(seeded: &[Seeded]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in seeded {
        *m.entry(s.sha256_hex.clone()).or_insert(0) += 1;
    }
    m
}

/// Deletes (flag and EXPUNGE) the target messages with these UIDs.
fn delete_in_target(d: &Dovecot, mailbox: &str, uids: &[u32]) {
    let mut c = Imap::login(d, "dave");
    let r = c.command(&format!("SELECT {}", support::imap::quote(mailbox)));
    assert!(r.is_ok(), "SELECT: {}", r.status);
    for uid in uids {
        let r = c.command(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"));
        assert!(r.is_ok(), "STORE: {}", r.status);
    }
    let r = c.command("EXPUNGE");
    assert!(r.is_ok(), "EXPUNGE: {}", r.status);
    c.logout();
}

fn small_message(n: u32) -> Vec<u8> {
    format!(
        "From: a@example.net\r\nTo: b@example.net\r\nSubject: verify {n}\r\nMessage-ID: <verify-{n}@example.net>\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\n\r\nBody {n}.\r\n"
    )
    .into_bytes()
}

#[test]
fn a_consistent_account_verifies_clean_with_its_counts() {
    let d = Dovecot::start();
    let seeded = d.seed("alice", &messages(&corpus_small()));
    let b = ConfigBuilder::new(&d, "alice", "dave");
    let cfg = b.write();
    sync_ok(&cfg);

    let before = world(&d, &b.ledger_path(), "INBOX");
    // A run recorded by mistake would show in the ledger's seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, stdout, all) = run(&cfg, &["verify"]);
    assert_eq!(code, 0, "a consistent account verifies clean:\n{all}");
    assert!(stdout.contains("present"), "a summary table:\n{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("alice "))
        .unwrap_or_else(|| panic!("a row for the account:\n{stdout}"));
    let n = seeded.len().to_string();
    assert_eq!(
        line.split_whitespace().nth(1),
        Some(n.as_str()),
        "every message present: {line}"
    );

    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(count(&report, "present"), seeded.len() as u64, "{report:#}");
    for c in [
        "missing",
        "lost",
        "not_copied",
        "unrecorded",
        "skipped",
        "rejected",
        "stale",
        "unknown_in_target",
    ] {
        assert_eq!(count(&report, c), 0, "{c}: {report:#}");
    }
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        world(&d, &b.ledger_path(), "INBOX"),
        before,
        "verify changed something"
    );

    // No password in any output, even at trace level.
    let (code, _, all) = run(&cfg, &["verify", "--log-level", "trace"]);
    assert_eq!(code, 0, "{all}");
    for user in ["alice", "dave"] {
        let password = d.password(user);
        assert!(!all.contains(password), "{user}'s password in the output");
    }

    // An account another process works on is not compared (guarantee 9).
    let held = support::ledger::hold(
        b.ledger_path(),
        "alice",
        "elsewhere pid 1 0000beef",
        std::time::Duration::from_secs(600),
    );
    assert!(held, "the lease was free");
    let (code, stdout, all) = run(&cfg, &["verify"]);
    assert_eq!(code, 1, "{all}");
    assert!(
        stdout.contains("another popferry process") && stdout.contains("elsewhere pid 1"),
        "the holder is named:\n{all}"
    );
}

#[test]
fn missing_new_and_unknown_are_reported_nothing_changes_then_repair_restores_once() {
    let d = Dovecot::start();
    let first: Vec<Vec<u8>> = (1..=6).map(small_message).collect();
    let mut seeded = d.seed("alice", &first);
    let b = ConfigBuilder::new(&d, "alice", "dave");
    let cfg = b.write();
    let ledger = b.ledger_path();
    sync_ok(&cfg);
    let uidls = d.pop3_uidls("alice");

    // Two copies deleted in the target, two new messages on the POP3
    // server, one message in the target that popferry did not put there.
    let target = imap_fetch_all(&d, "dave", "INBOX");
    let gone: Vec<u32> = target.iter().take(2).map(|f| f.uid).collect();
    let gone_mids: Vec<String> = target
        .iter()
        .take(2)
        .filter_map(|f| f.message_id.clone())
        .collect();
    delete_in_target(&d, "INBOX", &gone);
    seeded.extend(d.seed("alice", &[small_message(7), small_message(8)]));
    let stranger = b"From: x@example.org\r\nSubject: not from popferry\r\n\r\nHello.\r\n";
    let stranger_uid = imap_append(&d, "dave", "INBOX", stranger, &["\\Flagged"], None);
    let all_uidls = d.pop3_uidls("alice");
    let new_uidls: Vec<String> = all_uidls[6..].to_vec();

    let before = world(&d, &ledger, "INBOX");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, stdout, all) = run(&cfg, &["verify"]);
    assert_eq!(
        code, 1,
        "missing and new mail are not accounted for:\n{all}"
    );
    for u in &uidls[..2] {
        assert!(
            stdout.lines().any(|l| l.contains(u.as_str())
                && l.contains("missing")
                && l.contains("moved or deleted")),
            "{u} reported as missing from the target:\n{stdout}"
        );
    }
    for m in &gone_mids {
        assert!(
            stdout.contains(m.trim_start_matches('<').trim_end_matches('>')),
            "its Message-ID shown:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("unknown UID {stranger_uid} ")),
        "the stranger reported:\n{stdout}"
    );
    assert!(!stdout.contains("not from popferry"), "no subject shown");

    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(count(&report, "present"), 4, "{report:#}");
    assert_eq!(count(&report, "missing"), 2, "{report:#}");
    assert_eq!(count(&report, "not_copied"), 2, "{report:#}");
    assert_eq!(count(&report, "unknown_in_target"), 1, "{report:#}");
    let mut want_missing = uidls[..2].to_vec();
    want_missing.sort();
    assert_eq!(with_verdict(&report, "missing"), want_missing);
    assert_eq!(with_verdict(&report, "not-copied"), new_uidls);
    assert_eq!(report["unknown_in_target"][0]["uid"], stranger_uid);
    assert_eq!(
        world(&d, &ledger, "INBOX"),
        before,
        "verify without --repair changed a server or the ledger"
    );

    // --repair: the missing copies come back once, the new mail is copied,
    // the stranger stays as it was; twice in a row changes nothing more.
    let (code, report, all) = verify_json(&cfg, &["--repair"]);
    assert_eq!(code, 0, "repaired and verified again:\n{all}");
    assert_eq!(report["repaired"]["reopened"], 2, "{report:#}");
    assert_eq!(report["repaired"]["sync"]["copied"], 4, "{report:#}");
    assert_eq!(count(&report, "present"), 8, "{report:#}");
    assert_eq!(count(&report, "missing"), 0, "{report:#}");
    assert_eq!(count(&report, "unknown_in_target"), 1, "{report:#}");
    let mut want = seeded_shas(&seeded);
    want.insert(support::sha256_hex(stranger), 1);
    assert_eq!(
        target_shas(&d, "INBOX"),
        want,
        "each message once, byte for byte"
    );
    let after_first = world(&d, &ledger, "INBOX");
    let kept = after_first
        .target
        .iter()
        .find(|t| t.0 == stranger_uid)
        .expect("the stranger is untouched");
    assert_eq!(kept.1, ["\\Flagged"], "its flags untouched");

    let (code, report, all) = verify_json(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(report["repaired"]["reopened"], 0, "{report:#}");
    assert_eq!(report["repaired"]["sync"]["copied"], 0, "{report:#}");
    assert_eq!(
        target_shas(&d, "INBOX"),
        want,
        "a second repair copies nothing"
    );
    assert_eq!(
        world(&d, &ledger, "INBOX").target,
        after_first.target,
        "the target is as the first repair left it"
    );
    let (code, _, all) = run(&cfg, &["verify"]);
    assert_eq!(code, 0, "verify after --repair:\n{all}");
}

#[test]
fn a_changed_uidvalidity_falls_back_to_message_id_and_content() {
    let d = Dovecot::start();
    let seeded = d.seed("alice", &messages(&corpus_small()));
    let b = ConfigBuilder::new(&d, "alice", "dave").mailbox("Archive");
    let cfg = b.write();
    sync_ok(&cfg);

    // The mailbox is rebuilt: same messages, new UIDVALIDITY, new UIDs.
    let mut c = Imap::login(&d, "dave");
    let old = c.command("STATUS Archive (UIDVALIDITY)");
    for cmd in ["RENAME Archive Old", "CREATE Archive", "SELECT Old"] {
        let r = c.command(cmd);
        assert!(r.is_ok(), "{cmd}: {}", r.status);
    }
    let r = c.command("UID COPY 1:* Archive");
    assert!(r.is_ok(), "COPY: {}", r.status);
    let new = c.command("STATUS Archive (UIDVALIDITY)");
    c.logout();
    assert_ne!(
        old.untagged, new.untagged,
        "the test needs a new UIDVALIDITY"
    );

    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 0, "found by Message-ID, or size and content:\n{all}");
    assert_eq!(count(&report, "present"), seeded.len() as u64, "{report:#}");
    assert_eq!(count(&report, "unknown_in_target"), 0, "{report:#}");

    // One copy without a Message-ID deleted: found missing by content.
    let no_mid: Vec<u32> = imap_fetch_all(&d, "dave", "Archive")
        .iter()
        .filter(|f| f.message_id.is_none())
        .map(|f| f.uid)
        .collect();
    assert!(
        !no_mid.is_empty(),
        "the corpus has a message without a Message-ID"
    );
    delete_in_target(&d, "Archive", &no_mid);
    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(count(&report, "missing"), no_mid.len() as u64, "{report:#}");
    let (code, _, all) = verify_json(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(
        target_shas(&d, "Archive"),
        seeded_shas(&seeded),
        "restored once, byte for byte"
    );
}

#[test]
fn copies_gone_from_both_sides_are_lost_until_repair_forgets_them() {
    let d = Dovecot::start();
    let first: Vec<Vec<u8>> = (1..=3).map(small_message).collect();
    d.seed("alice", &first);
    let b = ConfigBuilder::new(&d, "alice", "dave").delete("after-sync");
    let cfg = b.write();
    let ledger = b.ledger_path();
    let uidls = d.pop3_uidls("alice");
    sync_ok(&cfg);
    assert!(d.pop3_uidls("alice").is_empty(), "deleted after the sync");

    let one = imap_fetch_all(&d, "dave", "INBOX")
        .first()
        .map(|f| f.uid)
        .expect("a copy");
    delete_in_target(&d, "INBOX", &[one]);
    let before = world(&d, &ledger, "INBOX");
    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(count(&report, "present"), 2, "{report:#}");
    let lost = with_verdict(&report, "lost");
    assert_eq!(lost.len(), 1, "{report:#}");
    assert!(uidls.contains(&lost[0]), "{lost:?}");
    assert_eq!(world(&d, &ledger, "INBOX"), before, "nothing changed");

    let (code, report, all) = verify_json(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(report["repaired"]["forgotten"], 1, "{report:#}");
    assert_eq!(report["repaired"]["reopened"], 0, "nothing to copy again");
    assert!(
        !support::ledger::rows(&ledger, "alice").contains_key(&lost[0]),
        "the row of a message on neither side is forgotten"
    );
    assert_eq!(imap_fetch_all(&d, "dave", "INBOX").len(), 2);
    let (code, _, all) = run(&cfg, &["verify"]);
    assert_eq!(code, 0, "{all}");
}

#[test]
fn unresolved_intents_whose_copy_landed_are_reported_and_resolved() {
    let d = Dovecot::start();
    let seeded = d.seed("alice", &messages(&corpus_small()));
    let b = ConfigBuilder::new(&d, "alice", "dave");
    let cfg = b.write();
    let ledger = b.ledger_path();
    sync_ok(&cfg);
    let n = support::ledger::unresolve_all(&ledger, "alice", "INBOX");

    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(count(&report, "unrecorded"), n as u64, "{report:#}");
    let (code, report, all) = verify_json(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(report["repaired"]["resolved"], n as u64, "{report:#}");
    assert_eq!(report["repaired"]["sync"]["copied"], 0, "{report:#}");
    assert_eq!(
        target_shas(&d, "INBOX"),
        seeded_shas(&seeded),
        "nothing twice"
    );
    assert!(
        support::ledger::rows(&ledger, "alice")
            .values()
            .all(|r| r.state == popferry::ledger::State::Appended),
        "every row recorded as copied"
    );
}

#[test]
fn an_unknown_account_is_a_usage_error() {
    let d = Dovecot::start();
    let cfg = ConfigBuilder::new(&d, "alice", "dave").write();
    let (code, _, all) = run(&cfg, &["verify", "--account", "nobody"]);
    assert_eq!(code, 2, "{all}");
    assert!(
        !Path::new(&d.scratch().join("ledger.db")).exists(),
        "no ledger created"
    );
}

#[test]
fn without_a_ledger_everything_is_not_copied_and_no_ledger_is_created() {
    let d = Dovecot::start();
    d.seed("alice", &[small_message(1), small_message(2)]);
    let b = ConfigBuilder::new(&d, "alice", "dave");
    let cfg = b.write();
    let (code, report, all) = verify_json(&cfg, &[]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(count(&report, "not_copied"), 2, "{report:#}");
    assert_eq!(count(&report, "present"), 0, "{report:#}");
    assert!(!b.ledger_path().exists(), "verify created the ledger");
    assert_eq!(d.pop3_uidls("alice").len(), 2, "nothing deleted");
    assert!(
        imap_fetch_all(&d, "dave", "INBOX").is_empty(),
        "nothing copied"
    );
}
