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
        text.contains(", SASL PLAIN)") && text.contains(", AUTHENTICATE PLAIN)"),
        "the mechanism of each side reported (auth = auto picks PLAIN on Dovecot):\n{text}"
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

/// Two listeners standing in for the POP3 and IMAP servers, and a
/// configuration pointing at them with `source_extra` and `target_extra`
/// added to each side.
struct Unreached {
    dir: tempfile::TempDir,
    listeners: [std::net::TcpListener; 2],
}

impl Unreached {
    fn new() -> Unreached {
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.set_nonblocking(true).expect("non-blocking");
            l
        };
        Unreached {
            dir: tempfile::tempdir().expect("tempdir"),
            listeners: [bind(), bind()],
        }
    }

    fn config(&self, source_extra: &str, target_extra: &str) -> std::path::PathBuf {
        let port = |i: usize| self.listeners[i].local_addr().expect("addr").port();
        let text = format!(
            r#"[ledger]
path = "ledger.db"

[[accounts]]
name = "legacy"

[accounts.source]
host = "127.0.0.1"
port = {pop}
tls = "none"
username = "alice"
password = "Pw-never-sent-1"
{source_extra}

[accounts.target]
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "dave"
password = "Pw-never-sent-2"
{target_extra}
"#,
            pop = port(0),
            imap = port(1),
        );
        let path = self.dir.path().join("popferry.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs `args` with the configuration: exit status 2, an error naming
    /// every part of `wanted`, no password in it, and no server contacted.
    fn refused(&self, cfg: &std::path::Path, args: &[&str], wanted: &[&str]) {
        let mut all = args.to_vec();
        all.extend(["-c", cfg.to_str().expect("utf-8")]);
        let out = popferry(&all, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for w in wanted {
            assert!(err.contains(w), "{w:?} missing:\n{}", describe_output(&out));
        }
        assert!(!err.contains("Pw-never-sent"), "{}", describe_output(&out));
        for l in &self.listeners {
            assert!(
                l.accept().is_err(),
                "{args:?}: a server was contacted:\n{}",
                describe_output(&out)
            );
        }
        assert!(
            !self.dir.path().join("ledger.db").exists(),
            "no ledger created"
        );
    }
}

#[test]
fn a_mechanism_of_the_other_protocol_is_a_configuration_error() {
    let u = Unreached::new();
    let cfg = u.config("", "auth = \"apop\"");
    for args in [&["check"][..], &["sync"], &["sync", "--dry-run"]] {
        u.refused(
            &cfg,
            args,
            &[
                "\"legacy\"",
                "target.auth",
                "\"apop\"",
                "auto, login, plain, xoauth2 or oauthbearer",
            ],
        );
    }
    let cfg = u.config("auth = \"login\"", "");
    u.refused(
        &cfg,
        &["sync"],
        &[
            "\"legacy\"",
            "source.auth",
            "\"login\"",
            "auto, user, apop, plain, xoauth2 or oauthbearer",
        ],
    );
}

#[test]
fn an_unknown_key_names_the_keys_of_its_side_and_quotes_no_line() {
    let u = Unreached::new();
    // A target-only key on the source side, and a misspelt password key.
    let cfg = u.config("mailbox = \"Archive\"", "");
    u.refused(
        &cfg,
        &["sync"],
        &["mailbox", "line 13", "allow_plaintext_password"],
    );
    let out = popferry(&["check", "-c", cfg.to_str().expect("utf-8")], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    let listed = err.split_once("expected one of").map_or("", |(_, l)| l);
    assert!(
        !listed.contains("internal_date") && !listed.contains("flags"),
        "the source side lists target keys:\n{err}"
    );

    let cfg = u.config("", "pasword = \"Pw-never-sent-3\"");
    u.refused(&cfg, &["sync"], &["pasword", "line 21", "internal_date"]);
}

/// A password command that prints `pw` the first time it runs (when the
/// configuration is loaded) and fails every time after (at login).
fn once_then_failing(d: &Dovecot, name: &str, pw: &str) -> Password {
    let marker = d.scratch().join(format!("{name}.ran"));
    let m = marker.display();
    Password::Command(format!(
        "if [ -e '{m}' ]; then echo 'vault sealed' >&2; exit 3; fi; touch '{m}'; printf '%s\\n' '{pw}'"
    ))
}

#[test]
fn the_password_is_fetched_again_at_each_login() {
    let d = Dovecot::start();
    d.seed("alice", &[corpus::corpus_kind("plain")]);
    for (side, protocol) in [("source", "POP3"), ("target", "IMAP")] {
        let name = format!("once-{side}");
        let b = ConfigBuilder::new(&d, "alice", "dave")
            .file_name(&format!("{name}.toml"))
            .ledger(&d.scratch().join(format!("{name}.db")));
        let b = if side == "source" {
            let p = once_then_failing(&d, &name, d.password("alice"));
            b.source_password(p)
        } else {
            let p = once_then_failing(&d, &name, d.password("dave"));
            b.target_password(p)
        };
        let cfg = b.write();
        let out = popferry(&["sync", "-c", cfg.to_str().expect("utf-8")], &[]);
        // Loading succeeded (the command ran once); the login ran it again.
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for w in [
            &format!("[accounts.{side}] password at login")[..],
            "the password command",
            "vault sealed",
            protocol,
        ] {
            assert!(all.contains(w), "{w:?} missing:\n{}", describe_output(&out));
        }
        assert!(!all.contains(d.password("alice")) && !all.contains(d.password("dave")));
    }
    assert!(
        imap_fetch_all(&d, "dave", "INBOX").is_empty(),
        "nothing copied"
    );
    assert_eq!(d.pop3_uidls("alice").len(), 1);
}
