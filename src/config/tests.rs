//! Loading the configuration: defaults, the errors a user sees (each names
//! the account, the side and the key, and never quotes a line), auth
//! mechanisms per side, and when two loads describe the same account.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[ledger]
path = "ledger.db"

[[accounts]]
name = "legacy"

[accounts.source]
host = "pop.example.net"
username = "me"
password = "pw"

[accounts.target]
host = "imap.example.com"
username = "me"
password = "pw2"
flags = ["\\Seen"]
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str(text, Path::new("/etc/popferry/test.toml"), true)
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config/popferry.example.toml");
    let c = load_str(text, Path::new("/etc/popferry/popferry.toml"), false).expect("example");
    assert_eq!(c.accounts.len(), 1);
    assert_eq!(c.accounts[0].policy.max_attempts, 3);
}

#[test]
fn defaults_are_filled_in() {
    let c = load(GOOD).expect("valid");
    let a = &c.accounts[0];
    assert_eq!(a.source.endpoint.port, 995);
    assert_eq!(a.target.server.endpoint.port, 993);
    assert_eq!(a.target.mailbox, "INBOX");
    assert_eq!(a.policy.delete, DeletePolicy::Never);
    assert_eq!(a.policy.max_message_size, 50 << 20);
    assert_eq!(a.poll_interval, Duration::from_secs(300));
    assert_eq!(c.ledger_path, PathBuf::from("/etc/popferry/ledger.db"));
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = GOOD.replace(
        "username = \"me\"\npassword = \"pw\"",
        "username = \"me\"\npasword = \"pw\"",
    );
    let e = load(&text).expect_err("typo").to_string();
    assert!(e.contains("pasword"), "{e}");
    assert!(e.contains("line 11"), "{e}");
}

#[test]
fn duplicate_account_names_point_at_both() {
    let second = GOOD
        .split_once("[[accounts]]")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let text = format!("{GOOD}\n[[accounts]]{second}");
    let e = load(&text).expect_err("duplicate").to_string();
    assert!(e.contains("same name") && e.contains("line 5"), "{e}");
}

#[test]
fn plaintext_password_refused_off_loopback() {
    let text = GOOD.replace(
        "host = \"pop.example.net\"",
        "host = \"pop.example.net\"\ntls = \"none\"",
    );
    let e = load(&text).expect_err("plaintext").to_string();
    assert!(e.contains("allow_plaintext_password"), "{e}");
    let ok = GOOD.replace(
        "host = \"pop.example.net\"",
        "host = \"127.0.0.1\"\ntls = \"none\"",
    );
    assert_eq!(
        load(&ok).expect("loopback").accounts[0]
            .source
            .endpoint
            .port,
        110
    );
}

#[test]
fn missing_env_var_is_named() {
    let text = GOOD.replace(
        "password = \"pw\"",
        "password = { env = \"POPFERRY_TEST_SURELY_UNSET\" }",
    );
    let e = load(&text).expect_err("env").to_string();
    assert!(
        e.contains("POPFERRY_TEST_SURELY_UNSET") && e.contains("source.password"),
        "{e}"
    );
}

#[test]
fn bad_duration_and_delete_policy_are_reported() {
    let text = GOOD.replace(
        "name = \"legacy\"",
        "name = \"legacy\"\npoll_interval = \"5 fortnights\"",
    );
    assert!(
        load(&text)
            .expect_err("duration")
            .to_string()
            .contains("poll_interval")
    );
    let text = format!("{GOOD}\n[accounts.policy]\ndelete = \"sometimes\"\n");
    assert!(
        load(&text)
            .expect_err("delete")
            .to_string()
            .contains("policy.delete")
    );
}

#[test]
fn password_command_and_age_policy() {
    let text = GOOD.replace(
        "password = \"pw\"",
        "password = { command = \"printf 's3cret\\\\n'\" }",
    );
    let text =
        format!("{text}\n[accounts.policy]\ndelete = \"30d\"\nmax_message_size = \"10MB\"\n");
    let c = load(&text).expect("valid");
    use secrecy::ExposeSecret;
    let source = &c.accounts[0].source.password;
    assert!(matches!(source, SecretSource::Command(_)), "{source:?}");
    let value = source.resolve_blocking().expect("resolves");
    assert_eq!(value.expose_secret(), "s3cret");
    assert_eq!(
        c.accounts[0].policy.delete,
        DeletePolicy::OlderThan(Duration::from_secs(30 * 86400))
    );
    assert_eq!(c.accounts[0].policy.max_message_size, 10_000_000);
}

/// The error for `text`, as the user sees it.
fn error(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("expected a configuration error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn each_side_takes_only_its_own_protocols_mechanisms() {
    let pop_on_target = GOOD.replace("password = \"pw2\"", "password = \"pw2\"\nauth = \"apop\"");
    let e = error(&pop_on_target);
    for part in [
        "\"legacy\"",
        "target.auth",
        "\"apop\"",
        "IMAP",
        "auto, login, plain, xoauth2 or oauthbearer",
    ] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }

    let imap_on_source = GOOD.replace("password = \"pw\"", "password = \"pw\"\nauth = \"login\"");
    let e = error(&imap_on_source);
    for part in [
        "\"legacy\"",
        "source.auth",
        "\"login\"",
        "POP3",
        "auto, user, apop, plain, xoauth2 or oauthbearer",
    ] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }

    let unknown = GOOD.replace(
        "password = \"pw\"",
        "password = \"pw\"\nauth = \"cram-md5\"",
    );
    assert!(error(&unknown).contains("source.auth: \"cram-md5\""));

    let both = GOOD
        .replace("password = \"pw\"", "password = \"pw\"\nauth = \"apop\"")
        .replace("password = \"pw2\"", "password = \"pw2\"\nauth = \"login\"");
    let a = &load(&both).expect("valid").accounts[0];
    assert_eq!(a.source.auth, Pop3Auth::Apop);
    assert_eq!(a.target.server.auth, ImapAuth::Login);
    let a = &load(GOOD).expect("valid").accounts[0];
    assert_eq!(
        (a.source.auth, a.target.server.auth),
        (Pop3Auth::Auto, ImapAuth::Auto)
    );
}

/// The keys listed after "expected one of" in an unknown-key error.
fn expected_keys(e: &str) -> Vec<String> {
    let list = e.split_once("expected one of").map_or("", |(_, l)| l);
    list.split(',')
        .map(|k| k.trim().trim_matches('`').to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn an_unknown_key_lists_the_keys_of_its_own_side() {
    let shared = [
        "host",
        "port",
        "tls",
        "username",
        "password",
        "auth",
        "ca_file",
        "tls_fingerprint",
        "timeout",
        "allow_plaintext_password",
        "oauth2",
    ];
    let target_only = [
        "mailbox",
        "flags",
        "internal_date",
        "connections",
        "max_upload_per_day",
        "max_messages_per_minute",
    ];

    let e = error(&GOOD.replace(
        "username = \"me\"\npassword = \"pw\"",
        "username = \"me\"\npassword = \"pw\"\nhots = \"x\"",
    ));
    assert!(e.contains("hots") && e.contains("line 12"), "{e}");
    assert_eq!(expected_keys(&e), shared, "{e}");

    let e = error(&format!("{GOOD}hots = \"x\"\n"));
    assert!(e.contains("hots"), "{e}");
    let mut all: Vec<&str> = shared.to_vec();
    all.extend(target_only);
    assert_eq!(expected_keys(&e), all, "{e}");

    // A target-only key on the source side is unknown there.
    let e = error(&GOOD.replace(
        "password = \"pw\"",
        "password = \"pw\"\nmailbox = \"Archive\"",
    ));
    assert!(e.contains("mailbox") && e.contains("line 12"), "{e}");
    assert!(!expected_keys(&e).iter().any(|k| k == "mailbox"), "{e}");
}

#[test]
fn toml_errors_never_quote_the_line() {
    // A misspelt key holding a password, a password of the wrong type.
    for (text, key) in [
        (
            GOOD.replace("password = \"pw\"", "pasword = \"Hunter2-secret\""),
            "pasword",
        ),
        (
            GOOD.replace(
                "password = \"pw\"",
                "password = { env = \"X\", value = \"Hunter2-secret\" }",
            ),
            "key password",
        ),
    ] {
        let e = error(&text);
        assert!(!e.contains("Hunter2"), "the secret is quoted: {e}");
        assert!(e.contains(key) && e.contains("line 11"), "{e}");
    }
}

#[test]
fn status_loads_without_resolving_secrets_but_keeps_their_source() {
    let text = GOOD.replace(
        "password = \"pw\"",
        "password = { env = \"POPFERRY_TEST_SURELY_UNSET\" }",
    );
    let c = load_str(&text, Path::new("/etc/popferry/test.toml"), false).expect("no lookup");
    assert_eq!(
        c.accounts[0].source.password,
        SecretSource::Env("POPFERRY_TEST_SURELY_UNSET".into())
    );
}

/// A configuration whose source password is read from `file`.
fn with_password_file(file: &Path) -> String {
    GOOD.replace(
        "password = \"pw\"",
        &format!("password = {{ file = {:?} }}", file.display().to_string()),
    )
}

#[test]
fn accounts_are_equal_when_the_configuration_says_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pop.pw");
    std::fs::write(&file, "first\n").expect("write");
    let text = with_password_file(&file);
    let before = load(&text).expect("valid").accounts.remove(0);
    assert_eq!(
        before,
        load(&text).expect("valid").accounts.remove(0),
        "re-read"
    );

    // A new password behind the same file is read at the next login.
    std::fs::write(&file, "rotated\n").expect("rotate");
    assert_eq!(
        before,
        load(&text).expect("valid").accounts.remove(0),
        "rotated file"
    );

    for (what, changed) in [
        (
            "source host",
            text.replace("pop.example.net", "pop2.example.net"),
        ),
        (
            "target port",
            text.replace(
                "host = \"imap.example.com\"",
                "host = \"imap.example.com\"\nport = 1993",
            ),
        ),
        (
            "mailbox",
            text.replace("flags = [", "mailbox = \"Archive\"\nflags = ["),
        ),
        (
            "flags",
            text.replace("flags = [\"\\\\Seen\"]", "flags = []"),
        ),
        (
            "policy",
            format!("{text}\n[accounts.policy]\ndelete = \"after-sync\"\n"),
        ),
        (
            "poll interval",
            text.replace(
                "name = \"legacy\"",
                "name = \"legacy\"\npoll_interval = \"1m\"",
            ),
        ),
        (
            "target auth",
            text.replace("password = \"pw2\"", "password = \"pw2\"\nauth = \"login\""),
        ),
        (
            "literal password",
            text.replace("password = \"pw2\"", "password = \"pw3\""),
        ),
        ("password file", text.replace("pop.pw", "other.pw")),
        (
            "password source",
            text.replace(
                &format!("{{ file = {:?} }}", file.display().to_string()),
                "{ env = \"PATH\" }",
            ),
        ),
    ] {
        if what == "password file" {
            std::fs::write(dir.path().join("other.pw"), "rotated\n").expect("write");
        }
        assert_ne!(text, changed, "{what}: the test edit applies");
        let after = load(&changed).expect(what).accounts.remove(0);
        assert_ne!(before, after, "{what} changes the account");
    }
}

#[test]
fn a_tls_fingerprint_pins_its_side_and_is_part_of_the_settings() {
    let fp = "sha256:".to_owned() + &["ab"; 32].join(":");
    let text = GOOD
        .replace(
            "password = \"pw\"\n",
            &format!("password = \"pw\"\ntls_fingerprint = \"{fp}\"\n"),
        )
        .replace(
            "password = \"pw2\"",
            &format!(
                "password = \"pw2\"\ntls_fingerprint = \"{}\"",
                fp.to_lowercase()
            ),
        );
    let cfg = load(&text).expect("valid");
    let a = &cfg.accounts[0];
    let parsed: crate::net::CertFingerprint = fp.parse().expect("a fingerprint");
    assert_eq!(a.source.endpoint.tls_fingerprint, Some(parsed));
    assert_eq!(a.target.server.endpoint.tls_fingerprint, Some(parsed));
    // A changed pin is a changed account (a reload restarts its task).
    let plain = load(GOOD).expect("valid");
    assert_ne!(plain.accounts[0], cfg.accounts[0]);

    let e = error(&GOOD.replacen(
        "password = \"pw\"",
        "password = \"pw\"\ntls_fingerprint = \"sha256:AB\"",
        1,
    ));
    assert!(
        e.contains("source.tls_fingerprint: not a SHA-256 fingerprint"),
        "{e}"
    );
}

/// `[daemon] status_token` is a secret form: kept as its source, checked
/// when loaded, and never quoted in an error.
#[test]
fn the_status_token_is_a_secret_form() {
    let with = |token: &str| {
        GOOD.replace(
            "[[accounts]]",
            &format!("[daemon]\nstatus_token = {token}\n\n[[accounts]]"),
        )
    };
    let c = load(&with("\"t0ken-hunter2\"")).expect("a literal token");
    assert_eq!(
        c.daemon.status_token,
        Some(SecretSource::from("t0ken-hunter2"))
    );
    assert!(load(GOOD).expect("valid").daemon.status_token.is_none());
    let e = load(&with("{ env = \"POPFERRY_TEST_NO_SUCH_TOKEN\" }"))
        .expect_err("unset variable")
        .to_string();
    assert!(
        e.contains("daemon.status_token") && e.contains("POPFERRY_TEST_NO_SUCH_TOKEN"),
        "{e}"
    );
    let e = load(&with("\"\"")).expect_err("empty").to_string();
    assert!(e.contains("daemon.status_token: is empty"), "{e}");
    let e = load(&with("{ file = \"/nonexistent/token\", env = \"X\" }"))
        .expect_err("two sources")
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

/// `[accounts.source.oauth2]` with a key misspelt on a line holding a
/// secret: the key and its line are named, the line is not quoted.
#[test]
fn an_unknown_oauth2_key_is_named_with_its_line_and_not_quoted() {
    let text = GOOD.replace(
        "password = \"pw\"\n",
        "password = \"pw\"\n\n[accounts.source.oauth2]\nprovider = \"microsoft\"\nclient_id = \"app\"\nrefresh_tokn = \"rt-SECRET-VALUE\"\n",
    );
    let e = load(&text).expect_err("typo").to_string();
    assert!(e.contains("refresh_tokn"), "{e}");
    assert!(e.contains("line 16"), "{e}");
    assert!(!e.contains("rt-SECRET-VALUE"), "{e}");
}

/// The table belongs to a mechanism that logs in with a token; with any
/// other the error names the account and the side.
#[test]
fn an_oauth2_table_needs_a_bearer_mechanism() {
    let text = format!(
        "{}\n[accounts.target.oauth2]\nprovider = \"google\"\nclient_id = \"app\"\nrefresh_token = \"rt-SECRET-VALUE\"\n",
        GOOD.replace(
            "password = \"pw2\"\n",
            "password = \"pw2\"\nauth = \"plain\"\n"
        )
    );
    let e = load(&text)
        .expect_err("plain with a token table")
        .to_string();
    assert!(
        e.contains("\"legacy\": target.oauth2:") && e.contains("xoauth2"),
        "{e}"
    );
    assert!(!e.contains("rt-SECRET-VALUE"), "{e}");
}

/// `[ledger] url`: a PostgreSQL ledger instead of the file; in a secret
/// form too; never with `path`, never printed with its password.
#[test]
fn a_postgres_ledger_url_instead_of_a_path() {
    let with = |ledger: &str| GOOD.replace("path = \"ledger.db\"", ledger);
    let c = load(&with("url = \"postgres://pf:pw@db/popferry\"")).expect("url");
    assert!(c.ledger_url.is_some());
    assert_eq!(c.lease_ttl, Duration::from_secs(60), "the default");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("url");
    std::fs::write(&file, "postgres://pf:hunter2@db/p\n").expect("write");
    let c = load(&with(&format!(
        "url = {{ file = {:?} }}\nlease_ttl = \"90s\"",
        file.display().to_string()
    )))
    .expect("file url");
    assert_eq!(c.lease_ttl, Duration::from_secs(90));
    assert_eq!(c.ledger_url, Some(SecretSource::File(file.clone())));
    std::fs::write(&file, "mysql://pf:hunter2@db/p\n").expect("write");
    let bad = error(&with(&format!(
        "url = {{ file = {:?} }}",
        file.display().to_string()
    )));
    assert!(bad.contains(&file.display().to_string()), "{bad}");
    assert!(!bad.contains("hunter2"), "{bad}");

    let both = error(&with(
        "path = \"l.db\"\nurl = \"postgres://pf:hunter2@db/p\"",
    ));
    assert!(both.contains("path") && both.contains("url"), "{both}");
    assert!(!both.contains("hunter2"), "{both}");
    let neither = error(&with(""));
    assert!(
        neither.contains("path") && neither.contains("url"),
        "{neither}"
    );
    let not_pg = error(&with("url = \"mysql://pf:hunter2@db/p\""));
    assert!(not_pg.contains("PostgreSQL"), "{not_pg}");
    assert!(!not_pg.contains("hunter2"), "{not_pg}");
    let missing = error(&with("url = { env = \"POPFERRY_TEST_LEDGER_URL_UNSET\" }"));
    assert!(
        missing.contains("POPFERRY_TEST_LEDGER_URL_UNSET"),
        "{missing}"
    );
    let short = error(&with("url = \"postgres://db/p\"\nlease_ttl = \"1s\""));
    assert!(short.contains("lease_ttl"), "{short}");
}

#[test]
fn target_connections_default_to_four_and_are_bounded() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.accounts[0].target.connections, 4);
    for (n, ok) in [(1, true), (15, true), (0, false), (16, false)] {
        let text = GOOD.replace(
            "flags = [\"\\\\Seen\"]",
            &format!("flags = [\"\\\\Seen\"]\nconnections = {n}"),
        );
        match load(&text) {
            Ok(c) if ok => assert_eq!(c.accounts[0].target.connections, n),
            Ok(_) => panic!("connections = {n} accepted"),
            Err(e) if !ok => {
                let e = e.to_string();
                assert!(
                    e.contains("legacy") && e.contains("target.connections") && e.contains("15"),
                    "{e}"
                );
            }
            Err(e) => panic!("connections = {n}: {e}"),
        }
    }
}

#[test]
fn upload_budgets_are_optional_sizes_and_counts_above_zero() {
    let c = load(GOOD).expect("valid");
    assert_eq!(
        c.accounts[0].target.budget,
        crate::config::UploadBudget::default()
    );
    let with = |lines: &str| {
        GOOD.replace(
            "flags = [\"\\\\Seen\"]",
            &format!("flags = [\"\\\\Seen\"]\n{lines}"),
        )
    };
    let c = load(&with(
        "max_upload_per_day = \"500MB\"\nmax_messages_per_minute = 600",
    ))
    .expect("valid");
    let b = c.accounts[0].target.budget;
    assert_eq!(b.bytes_per_day, Some(500_000_000));
    assert_eq!(b.messages_per_minute, Some(600));
    for bad in ["max_upload_per_day = 0", "max_messages_per_minute = 0"] {
        let e = load(&with(bad)).map(|_| ()).expect_err(bad).to_string();
        let key = bad.split(' ').next().unwrap_or_default();
        assert!(e.contains("legacy") && e.contains(key), "{bad}: {e}");
    }
}

/// Without an oauth2 table a side needs its password; with one it does
/// not (the token is the credential).
#[test]
fn a_password_is_needed_unless_an_oauth2_table_replaces_it() {
    let e = error(&GOOD.replace("password = \"pw2\"\n", ""));
    assert!(
        e.contains("\"legacy\"") && e.contains("target.password: missing"),
        "{e}"
    );
    let text = format!(
        "{}\n[accounts.source.oauth2]\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"app\"\naccess_token = {{ command = \"echo t\" }}\n",
        GOOD.replace("password = \"pw\"\n", "auth = \"xoauth2\"\n")
    );
    let c = load(&text).expect("no password with an oauth2 table");
    assert!(c.accounts[0].source.oauth2.is_some());
}
