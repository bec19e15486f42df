//! Issue 9, the POP3 side: cases 2 (a passing UIDL failure), 7 (one bad
//! entry), 13 (UTF8 not negotiated) and 12 (a trickling server). The POP3
//! server is the scripted fake (tests/support/fake_pop3.rs): no real one
//! can be made to refuse UIDL now and then, list a bad UIDL, downgrade like
//! Courier or trickle. The target is the real Dovecot.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::corpus::corpus_kind;
use support::fake_pop3::{self, FakeMessage, FakePop3, Reply, Script};
use support::ledger::rows;
use support::{
    Dovecot, crlf_normalise, describe_output, imap_fetch_all, popferry_with_timeout, sha256_hex,
};

const RUN_LIMIT: Duration = Duration::from_secs(120);

fn run(cfg: &Path) -> Output {
    popferry_with_timeout(
        &["sync", "-c", cfg.to_str().expect("utf-8 path")],
        &[],
        RUN_LIMIT,
    )
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn sync_ok(cfg: &Path) {
    let o = run(cfg);
    assert_eq!(o.status.code(), Some(0), "{}", describe_output(&o));
}

fn target_set(d: &Dovecot) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in imap_fetch_all(d, "dave", "INBOX") {
        *m.entry(f.sha256_hex).or_insert(0) += 1;
    }
    m
}

fn set_of(msgs: &[&[u8]]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in msgs {
        *m.entry(sha256_hex(&crlf_normalise(b))).or_insert(0) += 1;
    }
    m
}

fn bytes_of(msgs: &[FakeMessage]) -> Vec<&[u8]> {
    msgs.iter().map(|m| m.bytes.as_slice()).collect()
}

// ------------------------------------------------------------------ case 2

/// Case 2: a server that announced UIDL answers it `-ERR` once. The pass
/// fails transiently and copies nothing; it neither derives IDs (which
/// made every message new: the target held 2N) nor marks the real rows
/// deleted (a delete policy was enough for that). The next pass goes on.
#[test]
fn a_passing_uidl_failure_copies_nothing_again_and_deletes_nothing() {
    let d = Dovecot::start();
    let msgs = fake_pop3::numbered(&["plain", "dot-lines", "no-msgid"]);
    let fake = FakePop3::start(Script::default(), msgs.clone());
    let b = fake_pop3::config(&d, &fake, "flaky").delete("3650d");
    let cfg = b.write();
    sync_ok(&cfg);
    let all = bytes_of(&msgs);
    assert_eq!(target_set(&d), set_of(&all));

    fake.set_script(Script::default().on("UIDL", Reply::raw("-ERR try again later\r\n")));
    let o = run(&cfg);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    assert!(out.contains("UIDL"), "the error names UIDL:\n{out}\n{err}");
    assert_eq!(target_set(&d), set_of(&all), "nothing copied again");
    assert_eq!(fake.count("TOP"), 0, "no IDs derived: {:?}", fake.log());
    let r = rows(b.ledger_path(), "flaky");
    assert_eq!(r.len(), msgs.len(), "no derived rows: {r:?}");
    assert!(
        r.values()
            .all(|row| !row.uidl_derived && row.state == popferry::ledger::State::Appended),
        "the real rows stay appended: {r:?}"
    );
    let s = popferry_with_timeout(
        &["status", "--json", "-c", cfg.to_str().expect("utf-8")],
        &[],
        RUN_LIMIT,
    );
    assert!(s.status.success(), "{}", describe_output(&s));

    fake.set_script(Script::default());
    sync_ok(&cfg);
    assert_eq!(target_set(&d), set_of(&all), "still each once");
    assert_eq!(fake.messages().len(), msgs.len(), "nothing deleted");
}

/// Case 2 on a server that answers no CAPA: the ledger tells. One that gave
/// real UIDLs before and refuses now fails the pass; a fresh account on one
/// that always refuses derives IDs from headers and copies each once.
#[test]
fn without_capa_the_ledger_tells_a_failure_from_a_server_without_uidl() {
    let d = Dovecot::start();
    let msgs = fake_pop3::numbered(&["plain", "utf8-8bit"]);
    let no_capa = Script {
        capa: None,
        ..Script::default()
    };
    let fake = FakePop3::start(no_capa.clone(), msgs.clone());
    let cfg = fake_pop3::config(&d, &fake, "nocapa").write();
    sync_ok(&cfg);
    let refusing = no_capa
        .clone()
        .on("UIDL", Reply::raw("-ERR unknown command\r\n"));
    fake.set_script(refusing.clone());
    let o = run(&cfg);
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    let all = bytes_of(&msgs);
    assert_eq!(target_set(&d), set_of(&all), "nothing copied again");

    // Another account, never seen with UIDLs: derived IDs, each copied once.
    let d2 = Dovecot::start();
    let fake2 = FakePop3::start(refusing, msgs.clone());
    let cfg2 = fake_pop3::config(&d2, &fake2, "nouidl").write();
    sync_ok(&cfg2);
    sync_ok(&cfg2);
    assert_eq!(target_set(&d2), set_of(&all), "copied once each");

    // The refusals were passing after all: the server gives real UIDLs now,
    // which the ledger has never seen. Every message is looked up in the
    // target before it is appended (as after a lost ledger): none twice.
    fake2.set_script(no_capa);
    sync_ok(&cfg2);
    assert_eq!(
        target_set(&d2),
        set_of(&all),
        "still once each when real UIDLs appear"
    );
    fake2.edit_messages(|m| m.push(FakeMessage::new(&corpus_kind("dot-lines"), "u9")));
    sync_ok(&cfg2);
    let copies: usize = target_set(&d2).values().sum();
    assert_eq!(copies, all.len() + 1, "new mail still flows, once");
}

// ------------------------------------------------------------------ case 7

/// Case 7: UIDLs RFC 1939 does not allow (71 characters, a space, 8-bit)
/// leave only their own messages on the server, reported; the others are
/// copied, and not again on the next run.
#[test]
fn a_bad_uidl_leaves_only_its_message_behind() {
    let d = Dovecot::start();
    let good = fake_pop3::numbered(&["plain", "dot-lines"]);
    let mut msgs = good.clone();
    msgs.push(FakeMessage::new(&corpus_kind("no-msgid"), &"x".repeat(71)));
    msgs.push(FakeMessage::new(&corpus_kind("utf8-8bit"), "has space"));
    msgs.push(FakeMessage::new(&corpus_kind("utf8-header"), "caf\u{e9}"));
    let fake = FakePop3::start(Script::default(), msgs);
    let cfg = fake_pop3::config(&d, &fake, "baduidl")
        .delete("after-sync")
        .write();
    for round in 0..2 {
        let o = run(&cfg);
        let (out, err) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "round {round}: not clean\n{}",
            describe_output(&o)
        );
        assert!(!err.contains("panicked"), "{err}");
        for n in [3, 4, 5] {
            assert!(
                out.contains(&format!("message {n}: its UIDL"))
                    || out.contains("its UIDL") && round == 1,
                "round {round}: message {n} reported:\n{out}"
            );
        }
        assert!(out.contains("left on the POP3 server"), "{out}");
        assert_eq!(target_set(&d), set_of(&bytes_of(&good)), "round {round}");
    }
    // The good ones were deleted (after-sync); the bad ones stay.
    assert_eq!(fake.messages().len(), 3, "{:?}", fake.log());
}

/// Case 7 without UIDL or TOP: a message over max_message_size is not even
/// read; it is reported and left, the others copied.
#[test]
fn without_uidl_or_top_an_oversized_message_is_left_and_the_rest_flows() {
    let d = Dovecot::start();
    let small = fake_pop3::numbered(&["plain", "dot-lines"]);
    let mut big = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 20_000));
    big.extend_from_slice(b"\r\n");
    let mut msgs = small.clone();
    msgs.insert(1, FakeMessage::new(&big, "ignored"));
    let mut script = Script::default()
        .on("UIDL", Reply::raw("-ERR unknown command\r\n"))
        .on("TOP", Reply::raw("-ERR unknown command\r\n"));
    script.capa = Some(vec!["USER".into()]);
    script.top = false;
    let fake = FakePop3::start(script, msgs);
    let cfg = fake_pop3::config(&d, &fake, "bignotop")
        .max_message_size("10KB")
        .write();
    let o = run(&cfg);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    assert!(
        out.contains("max_message_size") && out.contains("left on the POP3 server"),
        "{out}"
    );
    assert_eq!(target_set(&d), set_of(&bytes_of(&small)));
    assert!(
        !fake.log().iter().any(|l| l == "RETR 2"),
        "the big one is not read: {:?}",
        fake.log()
    );
}

/// Case 7 without UIDL: a header section over 1 MiB (TOP n 0) leaves its
/// message on the server, reported; the session stays in step and the
/// others are copied.
#[test]
fn without_uidl_a_huge_header_is_left_and_the_rest_flows() {
    let d = Dovecot::start();
    let small = fake_pop3::numbered(&["plain", "utf8-8bit"]);
    let mut huge = b"From: a@example.org\r\nSubject: huge header\r\n".to_vec();
    for i in 0..1500 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(990)).as_bytes());
    }
    huge.extend_from_slice(b"\r\nbody\r\n");
    let mut msgs = small.clone();
    msgs.insert(0, FakeMessage::new(&huge, "ignored"));
    let mut script = Script::default().on("UIDL", Reply::raw("-ERR unknown command\r\n"));
    script.capa = Some(vec!["USER".into(), "TOP".into()]);
    let fake = FakePop3::start(script, msgs);
    let cfg = fake_pop3::config(&d, &fake, "hugehdr").write();
    let o = run(&cfg);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    assert!(
        out.contains("message 1: its header section") && out.contains("left on the POP3 server"),
        "{out}"
    );
    assert_eq!(target_set(&d), set_of(&bytes_of(&small)));
}

// ----------------------------------------------------------------- case 13

const NOTICE: &[u8] = b"From: Courier mail server <postmaster@example.org>\r\nSubject: Cannot display Unicode content\r\n\r\nThis E-mail message was determined to be Unicode-formatted, but your\r\nE-mail reader does not support Unicode E-mail.\r\n";

/// Case 13: where CAPA lists UTF8, popferry sends UTF8 before logging in
/// (RFC 6856: AUTHORIZATION state only) and gets the real message, not the
/// downgrade notice Courier serves otherwise.
#[test]
fn utf8_is_enabled_before_the_login_where_announced() {
    let d = Dovecot::start();
    let real = corpus_kind("utf8-header");
    let msgs = vec![FakeMessage::new(&real, "u1").downgraded(NOTICE)];
    let mut script = Script::default();
    script
        .capa
        .as_mut()
        .expect("default CAPA")
        .push("UTF8 USER".into());
    let fake = FakePop3::start(script, msgs);
    let cfg = fake_pop3::config(&d, &fake, "utf8").write();
    sync_ok(&cfg);
    assert_eq!(target_set(&d), set_of(&[&real]), "the real message");
    let log = fake.log();
    let at = |verb: &str| log.iter().position(|l| l.starts_with(verb));
    assert!(
        at("UTF8").is_some() && at("UTF8") < at("USER"),
        "UTF8 before the login: {log:?}"
    );
}

/// Case 13: a server that does not announce UTF8 is not sent it, and one
/// that announces it but refuses it does not fail the pass (a warning says
/// messages may come downgraded).
#[test]
fn utf8_is_not_sent_unannounced_and_a_refusal_is_a_warning() {
    let d = Dovecot::start();
    let msgs = fake_pop3::numbered(&["plain"]);
    let fake = FakePop3::start(Script::default(), msgs.clone());
    let cfg = fake_pop3::config(&d, &fake, "noutf8").write();
    sync_ok(&cfg);
    assert_eq!(fake.count("UTF8"), 0, "{:?}", fake.log());

    let mut script = Script::default().on("UTF8", Reply::raw("-ERR not now\r\n"));
    script
        .capa
        .as_mut()
        .expect("default CAPA")
        .push("UTF8".into());
    let d2 = Dovecot::start();
    let fake2 = FakePop3::start(script, msgs.clone());
    let cfg2 = fake_pop3::config(&d2, &fake2, "utf8refused").write();
    let o = run(&cfg2);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{}", describe_output(&o));
    assert!(err.contains("refused it"), "a warning:\n{err}");
    assert_eq!(target_set(&d2), set_of(&bytes_of(&msgs)));
}

// ----------------------------------------------------------------- case 12

/// Case 12: a server that sends a byte every 300 ms (each read well within
/// the 1 s timeout) would hold a pass for hours; the throughput floor
/// (timeout + bytes / 16 KiB/s for a whole reply) ends it within seconds,
/// as a transient failure that names the floor.
#[test]
fn a_trickling_server_cannot_hold_a_pass() {
    let d = Dovecot::start();
    let msg = corpus_kind("plain");
    let mut reply = b"+OK message follows\r\n".to_vec();
    reply.extend_from_slice(&msg);
    reply.extend_from_slice(b"\r\n.\r\n");
    let script = Script::default().on(
        "RETR",
        Reply::Trickle {
            bytes: reply,
            chunk: 1,
            every: Duration::from_millis(300),
        },
    );
    let fake = FakePop3::start(script, vec![FakeMessage::new(&msg, "u1")]);
    let cfg = fake_pop3::config(&d, &fake, "trickle")
        .timeout("1s")
        .write();
    let started = Instant::now();
    let o = popferry_with_timeout(
        &["sync", "-c", cfg.to_str().expect("utf-8")],
        &[],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    assert!(out.contains("KiB/s"), "the error names the floor:\n{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(target_set(&d), BTreeMap::new());
}

/// Case 12 for a listing: a UIDL listing that trickles ends the same way.
#[test]
fn a_trickling_listing_cannot_hold_a_pass() {
    let d = Dovecot::start();
    let mut reply = b"+OK\r\n".to_vec();
    for i in 1..=50 {
        reply.extend_from_slice(format!("{i} uid-{i}\r\n").as_bytes());
    }
    reply.extend_from_slice(b".\r\n");
    let script = Script::default().on(
        "UIDL",
        Reply::Trickle {
            bytes: reply,
            chunk: 2,
            every: Duration::from_millis(300),
        },
    );
    let fake = FakePop3::start(script, fake_pop3::numbered(&["plain"]));
    let cfg = fake_pop3::config(&d, &fake, "tricklelist")
        .timeout("1s")
        .write();
    let started = Instant::now();
    let o = popferry_with_timeout(
        &["sync", "-c", cfg.to_str().expect("utf-8")],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(text(&o).0.contains("KiB/s"), "{}", describe_output(&o));
}
