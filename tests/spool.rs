//! `[spool]` (issue 9, case 10): large messages go through temporary files
//! in `[spool] path`, bounded by `[spool] max_bytes` per process; a message
//! larger than the whole budget still goes through; a folder that cannot be
//! used is a configuration error (exit 2) that names the key, found before
//! any server is contacted. Real Dovecot on both sides.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::{ConfigBuilder, Dovecot, describe_output, popferry_with_timeout};

fn run(cfg: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["-c", cfg.to_str().expect("utf-8 path")]);
    popferry_with_timeout(&all, &[], Duration::from_secs(120))
}

fn large_message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@example.net\r\nTo: b@example.net\r\nSubject: large\r\nMessage-ID: <spool-large@example.net>\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n",
        );
    }
    m
}

#[test]
fn a_large_message_goes_through_a_custom_spool_folder_with_a_small_budget() {
    let d = Dovecot::start();
    d.seed(
        "alice",
        &[
            large_message(3 << 20),
            b"Subject: small\r\n\r\nhi\r\n".to_vec(),
        ],
    );
    let dir = d.scratch().join("my-spool");
    std::fs::create_dir_all(&dir).expect("spool dir");
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .extra_toml(&format!(
            "[spool]\npath = {:?}\nmax_bytes = \"1MiB\"\n",
            dir.display().to_string()
        ))
        .write();
    let o = run(&cfg, &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe_output(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains('2'), "two copied:\n{out}");
    // Unlinked at creation: nothing is left behind.
    assert!(std::fs::read_dir(&dir).expect("read").next().is_none());
}

#[test]
fn an_unusable_spool_folder_is_a_configuration_error_naming_the_key() {
    let d = Dovecot::start();
    d.seed("alice", &[b"Subject: x\r\n\r\nx\r\n".to_vec()]);
    let missing = d.scratch().join("no-such-spool");
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .extra_toml(&format!(
            "[spool]\npath = {:?}\n",
            missing.display().to_string()
        ))
        .write();
    for cmd in ["sync", "run"] {
        let o = run(&cfg, &[cmd]);
        let ctx = describe_output(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {ctx}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("[spool] path"), "{cmd}: {err}");
        assert!(err.contains("no-such-spool"), "{cmd}: {err}");
    }
    // `check` reports it beside the servers, and fails.
    let o = run(&cfg, &["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", describe_output(&o));
    assert!(
        out.lines()
            .any(|l| l.contains("no-such-spool") && l.contains("FAILED")),
        "{out}"
    );
    assert!(
        out.contains("POP3 "),
        "the servers are still checked: {out}"
    );
}
