//! The command line around the pass: `check`, `-c` before or after the
//! subcommand, `$POPFERRY_CONFIG`, JSON logs, `--account`.

mod support;

use support::corpus;
use support::{
    ConfigBuilder, Dovecot, Password, describe_output, imap_fetch_all, imap_mailboxes, popferry,
};

#[test]
fn check_logs_in_everywhere_and_changes_nothing() {
    let d = Dovecot::start();
    d.seed("alice", &[corpus::corpus_kind("plain")]);
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .mailbox("Archive")
        .write();
    let c = cfg.to_str().expect("utf-8");
    let out = popferry(&["check", "-c", c], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("POP3") && text.contains("UIDL"),
        "POP3 capabilities reported:\n{text}"
    );
    assert!(
        text.contains("IMAP") && text.contains("UIDPLUS"),
        "IMAP capabilities reported:\n{text}"
    );
    assert!(
        text.contains("1 message(s)"),
        "POP3 mailbox size reported:\n{text}"
    );
    assert!(
        text.contains("missing; sync will create it"),
        "target mailbox reported:\n{text}"
    );
    assert!(
        !imap_mailboxes(&d, "dave").iter().any(|m| m == "Archive"),
        "check must not create the mailbox"
    );
    assert_eq!(d.pop3_uidls("alice").len(), 1);

    let bad = ConfigBuilder::new(&d, "alice", "dave")
        .target_password(Password::Plain("nope".into()))
        .file_name("bad.toml")
        .write();
    let out = popferry(&["-c", bad.to_str().expect("utf-8"), "check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
}

#[test]
fn config_from_the_environment_json_logs_and_one_account() {
    let d = Dovecot::start();
    d.seed("alice", &[corpus::corpus_kind("plain")]);
    d.seed("bob", &[corpus::corpus_kind("utf8-8bit")]);
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .add_account(&d, "bob", "bob", "erin")
        .write();
    let c = cfg.to_str().expect("utf-8");
    let out = popferry(
        &["--log-format", "json", "sync", "--account", "bob"],
        &[("POPFERRY_CONFIG", c)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let finished: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
        })
        .filter(|v| v["message"] == "Sync finished")
        .collect();
    assert_eq!(finished.len(), 1, "one line per account and run:\n{stderr}");
    assert_eq!(finished[0]["account"], "bob");
    assert_eq!(finished[0]["copied"], 1);
    assert_eq!(imap_fetch_all(&d, "erin", "INBOX").len(), 1);
    assert!(
        imap_fetch_all(&d, "dave", "INBOX").is_empty(),
        "--account bob leaves alice alone"
    );

    let out = popferry(&["sync", "--account", "nobody", "-c", c], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}
