//! End to end: one account from environment variables alone (no file
//! anywhere), against a real Dovecot, and the refusals around it (a file
//! and the variables together; a bad value names its variable, never a
//! password).
//!
//! Each run gets an empty working directory of its own, so that no
//! `./popferry.toml` is found, and no `-c` or `$POPFERRY_CONFIG`.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::config::output_within;
use support::corpus::small_messages;
use support::{Dovecot, Storage, User, describe_output, imap_fetch_all, popferry_command};

const POP_PASSWORD: &str = "Pop3-Env-Pw-8841";
const IMAP_PASSWORD: &str = "Imap-Env-Pw-1947";

fn dovecot() -> Dovecot {
    Dovecot::builder()
        .users(vec![
            User::new("alice", POP_PASSWORD, Storage::Maildir),
            User::new("dave", IMAP_PASSWORD, Storage::Mdbox),
        ])
        .start()
}

/// `popferry <args>` in `dir` with exactly these POPFERRY_* variables.
fn popferry_env(dir: &Path, args: &[&str], vars: &[(&str, String)]) -> Output {
    let mut cmd = popferry_command();
    for (k, _) in std::env::vars() {
        if k.starts_with("POPFERRY_") && k != "POPFERRY_TEST_TIMEOUT_SECS" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).args(args).env_remove("RUST_LOG");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    output_within(cmd, Duration::from_secs(120))
}

fn assert_no_password(out: &Output) {
    let all = describe_output(out);
    assert!(
        !all.contains(POP_PASSWORD) && !all.contains(IMAP_PASSWORD),
        "a password in the output:\n{all}"
    );
}

/// The account of these tests: STARTTLS on both sides with the test CA,
/// the POP3 password in a variable, the IMAP one in a file, two flags.
fn account_vars(d: &Dovecot, dir: &Path) -> Vec<(&'static str, String)> {
    let pw_file = dir.join("imap_password");
    std::fs::write(&pw_file, format!("{IMAP_PASSWORD}\n")).expect("write password file");
    let ca = d.ca_file.display().to_string();
    vec![
        ("POPFERRY_ACCOUNT", "from-env".into()),
        ("POPFERRY_SOURCE_HOST", d.host.clone()),
        ("POPFERRY_SOURCE_PORT", d.pop3_port.to_string()),
        ("POPFERRY_SOURCE_TLS", "starttls".into()),
        ("POPFERRY_SOURCE_USERNAME", "alice".into()),
        ("POPFERRY_SOURCE_PASSWORD", POP_PASSWORD.into()),
        ("POPFERRY_SOURCE_CA_FILE", ca.clone()),
        ("POPFERRY_SOURCE_TIMEOUT", "30s".into()),
        ("POPFERRY_TARGET_HOST", d.host.clone()),
        ("POPFERRY_TARGET_PORT", d.imap_port.to_string()),
        ("POPFERRY_TARGET_TLS", "starttls".into()),
        ("POPFERRY_TARGET_USERNAME", "dave".into()),
        (
            "POPFERRY_TARGET_PASSWORD_FILE",
            pw_file.display().to_string(),
        ),
        ("POPFERRY_TARGET_CA_FILE", ca),
        ("POPFERRY_TARGET_FLAGS", "\\Seen, \\Flagged".into()),
        ("POPFERRY_TARGET_MAILBOX", "From POP".into()),
    ]
}

#[test]
fn one_account_from_the_environment_syncs_over_starttls() {
    let d = dovecot();
    let dir = d.scratch().join("env-run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let seeded = d.seed("alice", &small_messages("env", 3));
    let vars = account_vars(&d, &dir);

    let out = popferry_env(&dir, &["sync"], &vars);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_no_password(&out);

    let fetched = imap_fetch_all(&d, "dave", "From POP");
    let mut got: Vec<&str> = fetched.iter().map(|f| f.sha256_hex.as_str()).collect();
    let mut want: Vec<&str> = seeded.iter().map(|s| s.sha256_hex.as_str()).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "each message once, byte for byte");
    for f in &fetched {
        for flag in ["\\Seen", "\\Flagged"] {
            assert!(f.flags.iter().any(|x| x == flag), "{flag}: {:?}", f.flags);
        }
    }
    // The default ledger is in the working directory.
    assert!(
        dir.join("ledger.db").is_file(),
        "ledger.db in {}",
        dir.display()
    );

    // A second run copies nothing more; `status` reads the same account.
    let out = popferry_env(&dir, &["sync"], &vars);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(imap_fetch_all(&d, "dave", "From POP").len(), 3);
    let out = popferry_env(&dir, &["status"], &vars);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("from-env") && text.contains("copied 3"),
        "{text}"
    );
    assert_no_password(&out);
}

#[test]
fn the_other_password_forms_and_a_ledger_variable() {
    let d = dovecot();
    let dir = d.scratch().join("env-pw");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let seeded = d.seed("alice", &small_messages("pw", 2));
    let mut vars = account_vars(&d, &dir);
    vars.retain(|(k, _)| *k != "POPFERRY_TARGET_PASSWORD_FILE" && *k != "POPFERRY_SOURCE_PASSWORD");
    vars.push(("POPFERRY_TARGET_PASSWORD", IMAP_PASSWORD.into()));
    let pop_file = dir.join("pop_password");
    std::fs::write(&pop_file, POP_PASSWORD).expect("write");
    vars.push((
        "POPFERRY_SOURCE_PASSWORD_FILE",
        pop_file.display().to_string(),
    ));
    let ledger = dir.join("state").join("l.db");
    vars.push(("POPFERRY_LEDGER", ledger.display().to_string()));

    let out = popferry_env(&dir, &["sync"], &vars);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_no_password(&out);
    assert_eq!(imap_fetch_all(&d, "dave", "From POP").len(), seeded.len());
    assert!(ledger.is_file());
    assert!(!dir.join("ledger.db").exists());
}

#[test]
fn a_file_and_account_variables_together_exit_2_naming_both() {
    let d = dovecot();
    let dir = d.scratch().join("env-conflict");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let vars = account_vars(&d, &dir);
    let file = support::ConfigBuilder::new(&d, "alice", "dave")
        .dir(&dir)
        .write();

    // Found as ./popferry.toml.
    let out = popferry_env(&dir, &["sync"], &vars);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("popferry.toml") && err.contains("POPFERRY_SOURCE_HOST"),
        "{err}"
    );
    assert_no_password(&out);

    // Named with -c.
    let f = file.to_str().expect("utf-8");
    let out = popferry_env(&d.scratch(), &["sync", "-c", f], &vars);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(f) && err.contains("POPFERRY_TARGET_USERNAME"),
        "{err}"
    );

    // Nothing was copied by either.
    assert!(imap_fetch_all(&d, "dave", "From POP").is_empty());
}

#[test]
fn a_bad_value_exits_2_naming_the_variable() {
    let d = dovecot();
    let dir = d.scratch().join("env-bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut vars = account_vars(&d, &dir);
    vars.retain(|(k, _)| *k != "POPFERRY_TARGET_PORT");
    vars.push(("POPFERRY_TARGET_PORT", "imap".into()));
    let out = popferry_env(&dir, &["sync"], &vars);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("POPFERRY_TARGET_PORT"), "{err}");
    assert_no_password(&out);
}
