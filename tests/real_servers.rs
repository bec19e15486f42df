//! Issue 9: the servers people really have. One test (or a few) per case of
//! the issue, each seen failing on the code before its fix. A real Dovecot
//! wherever a real server can be made to do it; the scripted fake POP3
//! server only for what no real one will do (reuse a UIDL, fail UIDL now
//! and then).

mod support;

use std::path::Path;

use support::corpus::{self, corpus_kind, messages};
use support::fake_pop3::{self, FakeMessage, FakePop3, Reply, Script};
use support::imap::imap_append;
use support::{
    ConfigBuilder, Dovecot, Password, crlf_normalise, describe_output, imap_fetch_all, popferry,
    sha256_hex,
};

/// Runs `popferry <args> -c <config>`: (exit code, stdout, stderr).
fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let c = config.to_str().expect("utf-8 path");
    all.extend(["-c", c]);
    let out = popferry(&all, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sync_ok(config: &Path) {
    let c = config.to_str().expect("utf-8 path");
    let out = popferry(&["sync", "-c", c], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
}

/// Case 9: with nothing new to copy, a pass still logs in to the target,
/// so a wrong or expired target credential is reported at once (exit 1)
/// instead of waiting for the next message to arrive.
#[test]
fn a_broken_target_login_is_noticed_with_nothing_to_copy() {
    let d = Dovecot::start();
    let all = corpus::corpus_small();
    d.seed("alice", &messages(&all[..1]));
    let good = ConfigBuilder::new(&d, "alice", "dave").write();
    sync_ok(&good);
    for (what, file) in [
        ("one message already copied", "copied.toml"),
        ("an empty mailbox", "empty.toml"),
    ] {
        let source = if file == "empty.toml" { "bob" } else { "alice" };
        let bad = ConfigBuilder::new(&d, source, "dave")
            .name("alice")
            .target_password(Password::Plain("wrong".into()))
            .file_name(file)
            .write();
        let (code, out, err) = run(&bad, &["sync"]);
        assert_eq!(
            code, 1,
            "{what}: the target refused our login\n{out}\n{err}"
        );
        assert!(
            out.contains("IMAP server") && out.contains("dave"),
            "{what}: the error names the IMAP server and user:\n{out}"
        );
    }
}

fn target_shas(d: &Dovecot) -> Vec<String> {
    let mut v: Vec<String> = imap_fetch_all(d, "dave", "INBOX")
        .into_iter()
        .map(|f| f.sha256_hex)
        .collect();
    v.sort_unstable();
    v
}

fn shas(msgs: &[&[u8]]) -> Vec<String> {
    let mut v: Vec<String> = msgs
        .iter()
        .map(|m| sha256_hex(&crlf_normalise(m)))
        .collect();
    v.sort_unstable();
    v
}

/// Case 3: a lost ledger is recovered (every message looked up in the
/// target before it is appended) until every message of the mailbox was
/// looked up; a RETR refused during recovery does not end it, so the
/// message already in the target is not appended a second time later.
#[test]
fn a_refused_retr_does_not_end_a_recovery() {
    let d = Dovecot::start();
    let a = corpus_kind("plain");
    let b = corpus_kind("utf8-8bit");
    // A was copied before the ledger was lost.
    imap_append(&d, "dave", "INBOX", &crlf_normalise(&a), &[], None);
    let fake = FakePop3::start(
        Script::default().on("RETR", Reply::raw("-ERR [SYS/TEMP] try later\r\n")),
        vec![FakeMessage::new(&a, "a"), FakeMessage::new(&b, "b")],
    );
    let cfg = fake_pop3::config(&d, &fake, "retrrec").write();
    let (code, out, err) = run(&cfg, &["sync"]);
    assert_eq!(code, 1, "the refusals are reported\n{out}\n{err}");
    // The server delivers again.
    fake.set_script(Script::default());
    let (code, out, err) = run(&cfg, &["sync"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        target_shas(&d),
        shas(&[&a, &b]),
        "A once (found, not appended again), B copied"
    );
}

/// Case 3: a message larger than its LIST size abandons the POP3 session
/// during recovery; the messages after it in that batch were not looked up,
/// so recovery goes on and the next pass looks them up before appending.
#[test]
fn a_list_size_liar_does_not_end_a_recovery() {
    let d = Dovecot::start();
    let a = corpus_kind("plain");
    let big = corpus_kind("attachment");
    imap_append(&d, "dave", "INBOX", &crlf_normalise(&a), &[], None);
    let fake = FakePop3::start(
        Script::default(),
        vec![
            FakeMessage::new(&big, "liar").list_size(100),
            FakeMessage::new(&a, "a"),
        ],
    );
    let cfg = fake_pop3::config(&d, &fake, "liarrec2")
        .max_message_size("20000")
        .write();
    let (code, out, err) = run(&cfg, &["sync"]);
    assert_eq!(code, 1, "the skip is reported\n{out}\n{err}");
    let (code, out, err) = run(&cfg, &["sync"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(target_shas(&d), shas(&[&a]), "A once, the liar not copied");
}

/// Case 4: two processes on one account never both copy. Two `popferry
/// sync` started together on one mailbox: one holds the account's lease,
/// the other skips it (exit 1, saying who holds it) or finds it done; each
/// message is in the target exactly once.
#[test]
fn two_processes_on_one_account_copy_each_message_once() {
    let d = Dovecot::start();
    let msgs: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            format!("Message-ID: <m{i}@lease.test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n")
                .into_bytes()
        })
        .collect();
    let seeded = d.seed("alice", &msgs);
    let cfg = ConfigBuilder::new(&d, "alice", "dave").write();
    let c = cfg.to_str().expect("utf-8 path").to_owned();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_popferry"))
            .args(["sync", "-c", &c])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start popferry")
    };
    let (one, two) = (spawn(), spawn());
    let outs = [
        one.wait_with_output().expect("wait"),
        two.wait_with_output().expect("wait"),
    ];
    let mut got = target_shas(&d);
    got.dedup();
    assert_eq!(
        imap_fetch_all(&d, "dave", "INBOX").len(),
        seeded.len(),
        "each message once:\n{}\n{}",
        describe_output(&outs[0]),
        describe_output(&outs[1])
    );
    assert_eq!(got.len(), seeded.len());
    let skipped: Vec<&std::process::Output> =
        outs.iter().filter(|o| o.status.code() == Some(1)).collect();
    for o in &skipped {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("another popferry process works on this account"),
            "a skip says why:\n{}",
            describe_output(o)
        );
    }
    assert!(
        outs.iter().any(|o| o.status.code() == Some(0)),
        "one of them copied:\n{}\n{}",
        describe_output(&outs[0]),
        describe_output(&outs[1])
    );
}

/// Case 4: an account held by a live process elsewhere is skipped, naming
/// the holder; once the lease has expired, it is taken over.
fn a_held_account_is_skipped_and_an_expired_lease_taken_over(backend: support::ledger::Backend) {
    let d = Dovecot::start();
    let all = corpus::corpus_small();
    d.seed("alice", &messages(&all[..2]));
    let on = backend.apply(ConfigBuilder::new(&d, "alice", "dave"));
    let b = &on.builder;
    let cfg = b.write();
    let ledger = b.ledger_at();
    let other = "replica-7 pid 1 cafe0001";
    assert!(support::ledger::hold(
        &ledger,
        "alice",
        other,
        std::time::Duration::from_secs(600)
    ));
    let (code, out, err) = run(&cfg, &["sync"]);
    assert_eq!(code, 1, "skipped\n{out}\n{err}");
    assert!(out.contains(other), "names the holder:\n{out}");
    assert!(
        imap_fetch_all(&d, "dave", "INBOX").is_empty(),
        "nothing copied"
    );
    // The holder stops renewing: its lease runs out.
    assert!(support::ledger::hold(
        ledger,
        "alice",
        other,
        std::time::Duration::ZERO
    ));
    sync_ok(&cfg);
    assert_eq!(imap_fetch_all(&d, "dave", "INBOX").len(), 2);
}
both_backends!(a_held_account_is_skipped_and_an_expired_lease_taken_over);

/// Case 1: a server that gives the UIDL of a message that is gone to a new
/// one (a rebuilt UID list): the new message is copied, not skipped as
/// "already copied".
#[test]
fn a_reused_uidl_is_copied_as_a_new_message() {
    let d = Dovecot::start();
    let a = corpus_kind("plain");
    let b = corpus_kind("utf8-8bit");
    assert_ne!(a.len(), b.len());
    let fake = FakePop3::start(Script::default(), vec![FakeMessage::new(&a, "u1")]);
    let cfg = fake_pop3::config(&d, &fake, "reuse")
        .delete("after-sync")
        .write();
    sync_ok(&cfg);
    assert!(fake.messages().is_empty(), "A deleted after its copy");
    // The server rebuilds its UID list: B gets A's old UIDL.
    fake.set_messages(vec![FakeMessage::new(&b, "u1")]);
    sync_ok(&cfg);
    assert_eq!(target_shas(&d), shas(&[&a, &b]), "B copied too");
    assert!(fake.messages().is_empty(), "B deleted only after its copy");
    // Nothing is copied twice on the next pass.
    fake.set_messages(vec![FakeMessage::new(&b, "u1")]);
    sync_ok(&cfg);
    assert_eq!(target_shas(&d), shas(&[&a, &b]), "still once each");
}

/// Case 1: with an age policy, a message now listed under the UIDL of one
/// copied earlier (and not yet old enough to go) is not deleted on the
/// strength of the UIDL alone: it is copied, and deleted only once it is
/// old enough itself.
#[test]
fn an_age_policy_never_deletes_on_a_uidl_match_alone() {
    let d = Dovecot::start();
    // No Date, no Received: the age counts from the copy.
    let a = b"Message-ID: <a@reuse.test>\r\nSubject: A\r\n\r\nfirst\r\n".to_vec();
    let b = b"Message-ID: <b@reuse.test>\r\nSubject: B\r\n\r\nthe second one\r\n".to_vec();
    let fake = FakePop3::start(Script::default(), vec![FakeMessage::new(&a, "u1")]);
    let cfg = fake_pop3::config(&d, &fake, "reuseage")
        .delete("2s")
        .write();
    sync_ok(&cfg);
    assert_eq!(fake.messages().len(), 1, "A is too young to go");
    // A vanishes behind popferry's back and B takes its UIDL; A's copy is
    // now old enough to be deleted.
    fake.set_messages(vec![FakeMessage::new(&b, "u1")]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    sync_ok(&cfg);
    assert_eq!(target_shas(&d), shas(&[&a, &b]), "B is copied");
    assert_eq!(
        fake.messages().len(),
        1,
        "B is not deleted before its copy is old"
    );
}

/// Case 1: two different messages listed at once under one UIDL (popa3d's
/// header hash, GNU Mailutils' X-UIDL): both are copied, each once.
#[test]
fn two_messages_listed_under_one_uidl_are_both_copied_once() {
    let d = Dovecot::start();
    let a = corpus_kind("plain");
    let b = corpus_kind("utf8-8bit");
    let fake = FakePop3::start(
        Script::default(),
        vec![FakeMessage::new(&a, "same"), FakeMessage::new(&b, "same")],
    );
    let cfg = fake_pop3::config(&d, &fake, "twice").write();
    sync_ok(&cfg);
    sync_ok(&cfg);
    assert_eq!(target_shas(&d), shas(&[&a, &b]), "both, once each");
}

/// Case 1, the same size: a message now listed under the UIDL of one
/// copied earlier, with the very same LIST size, is still not deleted on
/// the strength of the UIDL (and size) alone: before a DELE of a message
/// not read in this session, its header section (TOP n 0) is compared with
/// the one recorded at its copy, and where they differ it is a new message,
/// copied like any other. `top` false: a server without TOP, where the
/// whole message is read and compared by its SHA-256.
fn same_size_reuse(name: &str, top: bool) {
    let d = Dovecot::start();
    // No Date, no Received: the age counts from the copy. Same length.
    let a = b"Message-ID: <a@same.test>\r\nSubject: A\r\n\r\nfirst one\r\n".to_vec();
    let b = b"Message-ID: <b@same.test>\r\nSubject: B\r\n\r\nother one\r\n".to_vec();
    assert_eq!(a.len(), b.len());
    let script = Script {
        top,
        ..Script::default()
    };
    let fake = FakePop3::start(script, vec![FakeMessage::new(&a, "u1")]);
    let cfg = fake_pop3::config(&d, &fake, name).delete("2s").write();
    sync_ok(&cfg);
    assert_eq!(fake.messages().len(), 1, "A is too young to go");
    // A vanishes behind popferry's back and B takes its UIDL (and size);
    // A's copy is now old enough to be deleted.
    fake.set_messages(vec![FakeMessage::new(&b, "u1")]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    sync_ok(&cfg);
    assert_eq!(target_shas(&d), shas(&[&a, &b]), "B is copied in that pass");
    assert_eq!(
        fake.messages().len(),
        1,
        "B is not deleted before its own copy is old"
    );
    // Once B's copy is old enough, B goes (its header matches its own row).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    sync_ok(&cfg);
    assert!(fake.messages().is_empty(), "B deleted once old enough");
    assert_eq!(target_shas(&d), shas(&[&a, &b]), "still once each");
}

#[test]
fn a_reused_uidl_of_the_same_size_is_told_apart_by_its_header() {
    same_size_reuse("samesize", true);
}

#[test]
fn a_reused_uidl_of_the_same_size_is_told_apart_without_top() {
    same_size_reuse("samesizenotop", false);
}
