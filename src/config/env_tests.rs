//! The environment's account: each variable lands on its key, the loader's
//! rules apply, and every error names the variable (never a secret).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::{DeletePolicy, SecretSource, TlsMode};

const MINIMAL: [(&str, &str); 6] = [
    ("POPFERRY_SOURCE_HOST", "pop.example.net"),
    ("POPFERRY_SOURCE_USERNAME", "me@example.net"),
    ("POPFERRY_SOURCE_PASSWORD", "hunter2-pop"),
    ("POPFERRY_TARGET_HOST", "imap.example.com"),
    ("POPFERRY_TARGET_USERNAME", "me@example.com"),
    ("POPFERRY_TARGET_PASSWORD", "hunter2-imap"),
];

fn vars(extra: &[(&str, &str)]) -> EnvVars {
    let mut all: Vec<(&str, &str)> = MINIMAL.to_vec();
    for (k, v) in extra {
        all.retain(|(a, _)| a != k);
        all.push((k, v));
    }
    EnvVars::from_pairs(all)
}

fn cwd() -> &'static Path {
    Path::new("/srv/popferry")
}

fn load(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
    from_env(&vars(extra), cwd(), false)
}

/// The error text for these variables; it must never hold a password.
fn error(extra: &[(&str, &str)]) -> String {
    let e = load(extra).expect_err("should be refused").to_string();
    assert!(!e.contains("hunter2"), "a password in the error: {e}");
    assert!(e.starts_with("environment variables: "), "{e}");
    assert!(
        !e.contains("line "),
        "no line of a document the user never saw: {e}"
    );
    e
}

#[test]
fn the_minimal_account_takes_the_files_defaults() {
    let c = load(&[]).expect("valid");
    assert_eq!(c.ledger_path, PathBuf::from("/srv/popferry/ledger.db"));
    let a = &c.accounts[0];
    assert_eq!(a.name, "default");
    assert_eq!(a.source.endpoint.port, 995);
    assert_eq!(a.source.endpoint.tls, TlsMode::Implicit);
    assert_eq!(a.target.server.endpoint.port, 993);
    assert_eq!(a.target.mailbox, "INBOX");
    assert!(a.target.flags.is_empty());
    assert_eq!(a.policy.delete, DeletePolicy::Never);
    assert_eq!(a.poll_interval, Duration::from_secs(300));
    assert!(c.daemon.listen.is_none());
    // Read from the variable at each login; never copied into the settings.
    assert_eq!(
        a.source.password,
        SecretSource::Env("POPFERRY_SOURCE_PASSWORD".into())
    );
    assert_eq!(
        a.target.server.password,
        SecretSource::Env("POPFERRY_TARGET_PASSWORD".into())
    );
}

#[test]
fn every_variable_lands_on_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").expect("write ca");
    let ca = ca.to_str().expect("utf-8");
    let c = from_env(
        &vars(&[
            ("POPFERRY_ACCOUNT", "legacy"),
            ("POPFERRY_LEDGER", "state/ledger.db"),
            ("POPFERRY_POLL_INTERVAL", "2m"),
            ("POPFERRY_LISTEN", "127.0.0.1:9925"),
            ("POPFERRY_SOURCE_PORT", "1110"),
            ("POPFERRY_SOURCE_TLS", "starttls"),
            ("POPFERRY_SOURCE_AUTH", "user"),
            ("POPFERRY_SOURCE_CA_FILE", ca),
            ("POPFERRY_SOURCE_TIMEOUT", "15s"),
            ("POPFERRY_TARGET_PASSWORD", ""),
            ("POPFERRY_TARGET_PASSWORD_FILE", "/run/secrets/imap"),
            ("POPFERRY_TARGET_PORT", "1143"),
            ("POPFERRY_TARGET_TLS", "starttls"),
            ("POPFERRY_TARGET_AUTH", "login"),
            ("POPFERRY_TARGET_CA_FILE", ca),
            ("POPFERRY_TARGET_TIMEOUT", "20s"),
            ("POPFERRY_TARGET_MAILBOX", "Archive/Old POP"),
            ("POPFERRY_TARGET_FLAGS", "\\Seen, $Imported,,"),
            ("POPFERRY_DELETE", "30d"),
            ("POPFERRY_MAX_MESSAGE_SIZE", "10MiB"),
        ]),
        cwd(),
        false,
    )
    .expect("valid");
    assert_eq!(
        c.ledger_path,
        PathBuf::from("/srv/popferry/state/ledger.db")
    );
    assert_eq!(c.daemon.poll_interval, Duration::from_secs(120));
    assert_eq!(
        c.daemon.listen,
        Some("127.0.0.1:9925".parse().expect("addr"))
    );
    let a = &c.accounts[0];
    assert_eq!(a.name, "legacy");
    assert_eq!(a.poll_interval, Duration::from_secs(120));
    let s = &a.source.endpoint;
    assert_eq!((s.port, s.tls), (1110, TlsMode::Starttls));
    assert_eq!(s.timeout, Duration::from_secs(15));
    assert_eq!(s.ca_file.as_deref(), Some(Path::new(ca)));
    assert_eq!(a.source.auth, crate::config::Pop3Auth::User);
    let t = &a.target.server.endpoint;
    assert_eq!((t.port, t.tls), (1143, TlsMode::Starttls));
    assert_eq!(t.timeout, Duration::from_secs(20));
    assert_eq!(a.target.server.auth, crate::config::ImapAuth::Login);
    assert_eq!(
        a.target.server.password,
        SecretSource::File("/run/secrets/imap".into())
    );
    assert_eq!(a.target.mailbox, "Archive/Old POP");
    assert_eq!(a.target.flags, vec!["\\Seen", "$Imported"]);
    assert_eq!(
        a.policy.delete,
        DeletePolicy::OlderThan(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(a.policy.max_message_size, 10 << 20);
    assert_eq!(
        c.source_path,
        PathBuf::from("environment variables (POPFERRY_*)")
    );
}

#[test]
fn a_bad_value_names_its_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("POPFERRY_SOURCE_PORT", "pop3s")],
            "POPFERRY_SOURCE_PORT: ",
        ),
        (
            &[("POPFERRY_TARGET_PORT", "70000")],
            "POPFERRY_TARGET_PORT: ",
        ),
        (
            &[("POPFERRY_TARGET_TLS", "tls1.3")],
            "POPFERRY_TARGET_TLS: ",
        ),
        (
            &[("POPFERRY_SOURCE_TIMEOUT", "5 fortnights")],
            "POPFERRY_SOURCE_TIMEOUT: ",
        ),
        (
            &[("POPFERRY_SOURCE_TIMEOUT", "0s")],
            "POPFERRY_SOURCE_TIMEOUT: must be longer",
        ),
        (
            &[("POPFERRY_SOURCE_AUTH", "login")],
            "POPFERRY_SOURCE_AUTH: \"login\" is not",
        ),
        (
            &[("POPFERRY_TARGET_CA_FILE", "/nonexistent/ca.pem")],
            "POPFERRY_TARGET_CA_FILE: ",
        ),
        (
            &[("POPFERRY_SOURCE_TLS", "none")],
            "POPFERRY_SOURCE_TLS: \"none\" would send",
        ),
        (
            &[("POPFERRY_TARGET_FLAGS", "\\Recent")],
            "POPFERRY_TARGET_FLAGS: ",
        ),
        (
            &[("POPFERRY_TARGET_MAILBOX", "a\rb")],
            "POPFERRY_TARGET_MAILBOX: ",
        ),
        (
            &[("POPFERRY_DELETE", "sometimes")],
            "POPFERRY_DELETE: \"sometimes\" is not",
        ),
        (
            &[("POPFERRY_MAX_MESSAGE_SIZE", "5 parsecs")],
            "POPFERRY_MAX_MESSAGE_SIZE: ",
        ),
        (&[("POPFERRY_LISTEN", "everywhere")], "POPFERRY_LISTEN: "),
        (
            &[("POPFERRY_POLL_INTERVAL", "often")],
            "POPFERRY_POLL_INTERVAL: ",
        ),
        (
            &[("POPFERRY_POLL_INTERVAL", "0s")],
            "POPFERRY_POLL_INTERVAL: must be longer",
        ),
        (
            &[("POPFERRY_ACCOUNT", "  ")],
            "POPFERRY_ACCOUNT: must not be empty",
        ),
    ];
    for (extra, want) in cases {
        let e = error(extra);
        assert!(e.contains(want), "{extra:?}: want {want:?} in: {e}");
    }
}

#[test]
fn a_missing_required_variable_is_named() {
    let e = error(&[("POPFERRY_SOURCE_HOST", "")]);
    assert!(e.contains("POPFERRY_SOURCE_HOST must be set"), "{e}");
    let e = error(&[("POPFERRY_TARGET_PASSWORD", "")]);
    assert!(
        e.contains("POPFERRY_TARGET_PASSWORD or POPFERRY_TARGET_PASSWORD_FILE must be set"),
        "{e}"
    );
}

#[test]
fn both_password_forms_or_a_misspelt_variable_are_refused() {
    let e = error(&[("POPFERRY_SOURCE_PASSWORD_FILE", "/run/secrets/pop3")]);
    assert!(
        e.contains("POPFERRY_SOURCE_PASSWORD and POPFERRY_SOURCE_PASSWORD_FILE are both set"),
        "{e}"
    );
    let e = error(&[("POPFERRY_SOURCE_PROT", "110")]);
    assert!(
        e.contains("POPFERRY_SOURCE_PROT is not a variable") && e.contains("POPFERRY_SOURCE_PORT"),
        "{e}"
    );
}

#[test]
fn a_password_that_cannot_be_read_names_its_variable_not_its_value() {
    let e = from_env(
        &vars(&[
            ("POPFERRY_TARGET_PASSWORD", ""),
            (
                "POPFERRY_TARGET_PASSWORD_FILE",
                "/nonexistent/imap_password",
            ),
        ]),
        cwd(),
        true,
    )
    .expect_err("unreadable")
    .to_string();
    // The source password is read from the process's environment, where
    // this test did not set it: that is the first error.
    assert!(e.contains("POPFERRY_SOURCE_PASSWORD"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn a_postgres_ledger_is_a_url_read_from_the_variable() {
    let url = "postgres://popferry:hunter2-db@db/popferry";
    let doc = Document::build(&vars(&[("POPFERRY_LEDGER", url)])).expect("document");
    assert!(
        doc.text.contains("\nurl = { env = \"POPFERRY_LEDGER\" }\n"),
        "{}",
        doc.text
    );
    assert!(!doc.text.contains("hunter2-db"), "{}", doc.text);
    let plain = Document::build(&vars(&[("POPFERRY_LEDGER", "/data/l.db")])).expect("document");
    assert!(
        plain.text.contains("\npath = \"/data/l.db\"\n"),
        "{}",
        plain.text
    );
    // Whatever the loader makes of it, the URL is never shown.
    if let Err(e) = load(&[("POPFERRY_LEDGER", url)]) {
        let e = e.to_string();
        assert!(
            e.contains("POPFERRY_LEDGER") && !e.contains("hunter2"),
            "{e}"
        );
    }
}

#[test]
fn a_file_and_account_variables_together_are_refused_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("popferry.toml");
    std::fs::write(&file, "[ledger]\npath = \"l.db\"\n").expect("write");
    let e = load_with(Some(file.clone()), &vars(&[]), cwd(), false)
        .expect_err("conflict")
        .to_string();
    assert!(
        e.contains(&file.display().to_string())
            && e.contains("POPFERRY_SOURCE_HOST")
            && e.contains("POPFERRY_TARGET_PASSWORD"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    assert!(matches!(
        load_with(Some(file), &vars(&[]), cwd(), false),
        Err(ConfigError::Conflict { .. })
    ));

    // Other POPFERRY_* variables are no account: the file is used.
    let only_ledger = EnvVars::from_pairs([("POPFERRY_LEDGER", "x.db")]);
    let missing = dir.path().join("missing.toml");
    let e = load_with(Some(missing.clone()), &only_ledger, cwd(), false).expect_err("missing file");
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");

    // A file asked for but missing, with account variables set: the hint says why.
    let e = load_with(Some(missing), &vars(&[]), cwd(), false)
        .expect_err("missing file")
        .to_string();
    assert!(e.contains("only without -c"), "{e}");
}

#[test]
fn no_file_and_no_variables_says_where_it_looked() {
    let e = load_with(None, &EnvVars::default(), cwd(), false)
        .expect_err("nothing")
        .to_string();
    assert!(
        e.contains("$POPFERRY_CONFIG") && e.contains("POPFERRY_SOURCE_*"),
        "{e}"
    );
}
