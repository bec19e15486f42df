//! Guarantee 7 of DESIGN.md: secrets stay secret, and TLS is verified.
//!
//! - Full syncs against a real Dovecot at trace level (`--log-level trace`
//!   and `RUST_LOG=trace`), text and JSON logs, over every TLS mode and every
//!   authentication mechanism (source: user, plain, apop, auto; target:
//!   login, plain, auto), then `check`, `status`, `sync --dry-run`, failing
//!   logins (the wrong password must not be printed either) and passwords
//!   read from `{ command = ... }` and `{ file = ... }`: no password, no
//!   base64 of one (nor of the SASL PLAIN strings `\0user\0pass`,
//!   `user\0pass`, `user\0user\0pass`), no hex of one, and no APOP digest
//!   appears on stdout or stderr.
//! - A server whose certificate names another host, or comes from a CA that
//!   is not trusted, is refused with exit status 1 and an error that says it
//!   is a certificate problem and names the server.
//! - Configuration errors on a password's line (an invalid escape, a
//!   misspelt key, an unquoted value) exit 2 without quoting the line
//!   (issue 9, case 6: toml's own message shows an excerpt of the file).
//! - A trace-level `check` against a server with an untrusted self-signed
//!   certificate prints the certificate's fingerprint and no password.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use md5::Digest as _;
use support::{
    ConfigBuilder, Dovecot, Password, ServerCert, Storage, Tls, User, corpus_kind, describe_output,
    imap_fetch_all, popferry,
};

const POP_USER: &str = "alice";
const IMAP_USER: &str = "dave";
const POP_PW: &str = "Pw-s3cr3t-POP-4711";
const IMAP_PW: &str = "Pw-s3cr3t-IMAP-0815";
const WRONG_PW: &str = "Wr0ng-Pw-9876-XYZ";

fn dovecot() -> Dovecot {
    Dovecot::builder()
        .users(vec![
            User::new(POP_USER, POP_PW, Storage::Maildir),
            User::new(IMAP_USER, IMAP_PW, Storage::Mdbox),
        ])
        .start()
}

/// Every form in which a password could leak, with a label for the report.
fn leak_forms(user: &str, pw: &str) -> Vec<(String, String)> {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(s);
    let b64url = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let hex: String = pw.bytes().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        (format!("the password of {user}"), pw.to_owned()),
        (
            format!("base64 of the password of {user}"),
            b64(pw.as_bytes()),
        ),
        (
            format!("base64url of the password of {user}"),
            b64url(pw.as_bytes()),
        ),
        (format!("hex of the password of {user}"), hex),
    ];
    for (label, raw) in [
        ("\\0user\\0pass", format!("\0{user}\0{pw}")),
        ("user\\0pass", format!("{user}\0{pw}")),
        ("user\\0user\\0pass", format!("{user}\0{user}\0{pw}")),
    ] {
        forms.push((
            format!("base64 of the SASL PLAIN string {label} for {user}"),
            b64(raw.as_bytes()),
        ));
    }
    forms
}

/// Tokens of exactly 32 lower- or upper-case hex digits: what an MD5 (an
/// APOP digest) looks like in a log.
fn md5_like_tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|t| t.len() == 32)
        .collect()
}

/// APOP timestamps (`<...@...>`) in a text, e.g. a logged greeting.
fn apop_timestamps(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open..];
        let Some(close) = after.find('>') else { break };
        let candidate = &after[..=close];
        if candidate.contains('@') && !candidate[1..].contains('<') {
            out.push(candidate.to_owned());
        }
        rest = &after[1..];
    }
    out
}

/// Asserts that nothing in `out` reveals any password in `passwords`.
fn assert_clean(what: &str, out: &Output, passwords: &[(&str, &str)]) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (user, pw) in passwords {
        for (label, needle) in leak_forms(user, pw) {
            assert!(
                !text.contains(&needle),
                "{what}: {label} appears in the output:\n{}",
                describe_output(out)
            );
        }
        for ts in apop_timestamps(&text) {
            let digest: String = md5::Md5::digest(format!("{ts}{pw}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(
                !text.to_ascii_lowercase().contains(&digest),
                "{what}: the APOP digest for {user} appears in the output:\n{}",
                describe_output(out)
            );
        }
    }
    let md5s = md5_like_tokens(&text);
    assert!(
        md5s.is_empty(),
        "{what}: MD5-like tokens (an APOP digest?) in the output: {md5s:?}\n{}",
        describe_output(out)
    );
}

const ALL_PASSWORDS: &[(&str, &str)] = &[
    (POP_USER, POP_PW),
    (IMAP_USER, IMAP_PW),
    (POP_USER, WRONG_PW),
    (IMAP_USER, WRONG_PW),
];

#[derive(Clone, Copy, Debug)]
enum Format {
    /// `--log-format text --log-level trace`, and RUST_LOG=trace.
    TextFlag,
    /// `--log-format json`, level from RUST_LOG=trace only.
    JsonEnv,
}

/// Runs popferry `args` against `cfg` at trace level in `format`.
fn run_traced(cfg: &Path, args: &[&str], format: Format) -> Output {
    let c = cfg.to_str().expect("utf-8 config path");
    let mut all: Vec<&str> = match format {
        Format::TextFlag => vec!["--log-format", "text", "--log-level", "trace"],
        Format::JsonEnv => vec!["--log-format", "json"],
    };
    all.extend_from_slice(args);
    all.extend(["-c", c]);
    popferry(&all, &[("RUST_LOG", "trace"), ("NO_COLOR", "1")])
}

/// The logs really are at trace level (else the test would prove nothing).
fn assert_traced(what: &str, out: &Output, format: Format) {
    let err = String::from_utf8_lossy(&out.stderr);
    let traced = match format {
        Format::TextFlag => err.contains("TRACE"),
        Format::JsonEnv => err.contains("\"level\":\"TRACE\""),
    };
    assert!(
        traced,
        "{what}: no trace-level line in the logs:\n{}",
        describe_output(out)
    );
}

fn config(d: &Dovecot, name: &str) -> ConfigBuilder {
    ConfigBuilder::new(d, POP_USER, IMAP_USER)
        .name(name)
        .mailbox(name)
        .file_name(&format!("{name}.toml"))
        .ledger(&d.scratch().join(format!("{name}.db")))
}

/// How many APOP logins Dovecot has seen so far.
fn apop_logins(d: &Dovecot) -> usize {
    std::fs::read_to_string(&d.log_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("pop3-login") && l.contains("method=APOP"))
        .count()
}

#[test]
fn no_password_in_any_output_over_every_tls_mode_and_mechanism() {
    let d = dovecot();
    let seeded = d.seed(POP_USER, &[corpus_kind("plain"), corpus_kind("dot-lines")]);
    let mut case = 0usize;
    for tls in [Tls::Implicit, Tls::Starttls, Tls::None] {
        for (j, source_auth) in ["user", "plain", "apop", "auto"].into_iter().enumerate() {
            for format in [Format::TextFlag, Format::JsonEnv] {
                let target_auth = ["login", "plain", "auto"][(case + j) % 3];
                let name = format!("case{case}");
                let what = format!(
                    "sync {tls:?}, source auth {source_auth}, target auth {target_auth}, {format:?}"
                );
                let cfg = config(&d, &name)
                    .tls(tls)
                    .source_auth(source_auth)
                    .target_auth(target_auth)
                    .write();
                let apop_before = apop_logins(&d);
                let out = run_traced(&cfg, &["sync"], format);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{what}:\n{}",
                    describe_output(&out)
                );
                assert_traced(&what, &out, format);
                assert_clean(&what, &out, ALL_PASSWORDS);
                assert_eq!(
                    imap_fetch_all(&d, IMAP_USER, &name).len(),
                    seeded.len(),
                    "{what}: the messages were copied"
                );
                if source_auth == "apop" {
                    assert!(
                        apop_logins(&d) > apop_before,
                        "{what}: Dovecot saw no APOP login"
                    );
                }
                case += 1;
            }
        }
    }

    // check, status, a dry run: at trace level, both formats.
    let cfg = config(&d, "cmds").write();
    for format in [Format::TextFlag, Format::JsonEnv] {
        for args in [
            &["check"][..],
            &["status"],
            &["status", "--json"],
            &["sync", "--dry-run"],
            &["sync"],
            &["status"],
        ] {
            let what = format!("{args:?} {format:?}");
            let out = run_traced(&cfg, args, format);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}:\n{}",
                describe_output(&out)
            );
            assert_clean(&what, &out, ALL_PASSWORDS);
        }
    }
}

#[test]
fn wrong_passwords_are_not_printed_either() {
    let d = dovecot();
    d.seed(POP_USER, &[corpus_kind("plain")]);
    let mut n = 0;
    for source_auth in ["user", "plain", "apop", "auto"] {
        for format in [Format::TextFlag, Format::JsonEnv] {
            let name = format!("badpop{n}");
            n += 1;
            let cfg = config(&d, &name)
                .source_auth(source_auth)
                .source_password(Password::Plain(WRONG_PW.into()))
                .write();
            for args in [&["sync"][..], &["check"]] {
                let what = format!("{args:?} wrong POP3 password, auth {source_auth}, {format:?}");
                let out = run_traced(&cfg, args, format);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{what}:\n{}",
                    describe_output(&out)
                );
                assert_clean(&what, &out, ALL_PASSWORDS);
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    all.contains(&d.pop3s_port.to_string()),
                    "{what}: names the server:\n{all}"
                );
            }
        }
    }
    for target_auth in ["login", "plain", "auto"] {
        for format in [Format::TextFlag, Format::JsonEnv] {
            let name = format!("badimap{n}");
            n += 1;
            let cfg = config(&d, &name)
                .target_auth(target_auth)
                .target_password(Password::Plain(WRONG_PW.into()))
                .write();
            for args in [&["sync"][..], &["check"]] {
                let what = format!("{args:?} wrong IMAP password, auth {target_auth}, {format:?}");
                let out = run_traced(&cfg, args, format);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{what}:\n{}",
                    describe_output(&out)
                );
                assert_clean(&what, &out, ALL_PASSWORDS);
            }
        }
    }
    assert!(imap_fetch_all(&d, IMAP_USER, "INBOX").is_empty());
}

/// Writes `secret` and a newline to a 0600 file in the scratch folder.
fn secret_file(d: &Dovecot, name: &str, secret: &str) -> PathBuf {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = d.scratch().join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create the secret file");
    writeln!(f, "{secret}").expect("write the secret file");
    path
}

#[test]
fn passwords_from_a_command_or_a_file_stay_secret() {
    let d = dovecot();
    let seeded = d.seed(POP_USER, &[corpus_kind("plain")]);
    let pop_file = secret_file(&d, "pop.pw", POP_PW);
    let imap_file = secret_file(&d, "imap.pw", IMAP_PW);
    let cat = |p: &Path| Password::Command(format!("cat '{}'", p.display()));
    for (i, (source, target)) in [
        (cat(&pop_file), Password::File(imap_file.clone())),
        (Password::File(pop_file.clone()), cat(&imap_file)),
    ]
    .into_iter()
    .enumerate()
    {
        for format in [Format::TextFlag, Format::JsonEnv] {
            let name = format!("cmdfile{i}{format:?}");
            let cfg = config(&d, &name)
                .source_password(source.clone())
                .target_password(target.clone())
                .write();
            for args in [&["check"][..], &["sync"], &["status", "--json"]] {
                let what = format!("{args:?} passwords {source:?} / {target:?}, {format:?}");
                let out = run_traced(&cfg, args, format);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{what}:\n{}",
                    describe_output(&out)
                );
                assert_clean(&what, &out, ALL_PASSWORDS);
            }
            assert_eq!(imap_fetch_all(&d, IMAP_USER, &name).len(), seeded.len());
        }
    }

    // A password command that prints the password and then fails: a
    // configuration error (exit status 2) that does not echo what it printed.
    let cfg = config(&d, "cmdfail")
        .source_password(Password::Command(format!(
            "echo '{POP_PW}'; echo '{WRONG_PW}' >&2; exit 3"
        )))
        .write();
    let out = run_traced(&cfg, &["sync"], Format::TextFlag);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_clean(
        "a failing password command",
        &out,
        &[(POP_USER, POP_PW), (IMAP_USER, IMAP_PW)],
    );
}

/// The combined output of a run that must be refused for a certificate
/// problem with a given server.
fn assert_refused_for_tls(what: &str, out: &Output, port: u16) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}:\n{}",
        describe_output(out)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lower = all.to_lowercase();
    assert!(
        lower.contains("certificate"),
        "{what}: the error should say it is a certificate problem:\n{all}"
    );
    assert!(
        all.contains(&format!("127.0.0.1:{port}")),
        "{what}: the error should name the server 127.0.0.1:{port}:\n{all}"
    );
}

/// Every way a side can do TLS, with the port it then uses:
/// (label, source tls, target tls, port expected in the error).
fn tls_cases(d: &Dovecot) -> Vec<(&'static str, Tls, Tls, u16)> {
    vec![
        ("POP3 implicit TLS", Tls::Implicit, Tls::None, d.pop3s_port),
        ("POP3 STLS", Tls::Starttls, Tls::None, d.pop3_port),
        ("IMAP implicit TLS", Tls::None, Tls::Implicit, d.imaps_port),
        ("IMAP STARTTLS", Tls::None, Tls::Starttls, d.imap_port),
    ]
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let d = Dovecot::builder()
        .users(vec![
            User::new(POP_USER, POP_PW, Storage::Maildir),
            User::new(IMAP_USER, IMAP_PW, Storage::Mdbox),
        ])
        .server_cert(ServerCert::WrongName)
        .start();
    d.seed(POP_USER, &[corpus_kind("plain")]);
    for (i, (label, source, target, port)) in tls_cases(&d).into_iter().enumerate() {
        let cfg = config(&d, &format!("wrongname{i}"))
            .source_tls(source)
            .target_tls(target)
            .write();
        for args in [&["sync"][..], &["check"]] {
            let what = format!("{args:?} {label}, certificate for wrong-name.invalid");
            let out = run_traced(&cfg, args, Format::TextFlag);
            assert_refused_for_tls(&what, &out, port);
            assert_clean(&what, &out, ALL_PASSWORDS);
        }
    }
    assert!(imap_fetch_all(&d, IMAP_USER, "INBOX").is_empty());
    assert_eq!(d.pop3_uidls(POP_USER).len(), 1, "nothing deleted");
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused() {
    let d = dovecot();
    d.seed(POP_USER, &[corpus_kind("plain")]);
    for (i, (label, source, target, port)) in tls_cases(&d).into_iter().enumerate() {
        let cfg = config(&d, &format!("wrongca{i}"))
            .source_tls(source)
            .target_tls(target)
            .ca_file(Some(&d.wrong_ca_file))
            .write();
        for args in [&["sync"][..], &["check"]] {
            let what = format!("{args:?} {label}, only an unrelated CA trusted");
            let out = run_traced(&cfg, args, Format::JsonEnv);
            assert_refused_for_tls(&what, &out, port);
            assert_clean(&what, &out, ALL_PASSWORDS);
        }
    }
    // Without any ca_file, the platform roots do not know the test CA either.
    let cfg = config(&d, "noca").ca_file(None).write();
    let out = run_traced(&cfg, &["sync"], Format::TextFlag);
    assert_refused_for_tls("sync with platform roots only", &out, d.pop3s_port);
    assert!(imap_fetch_all(&d, IMAP_USER, "INBOX").is_empty());
}

/// Writes `cfg` with its POP3 password line replaced by `line`.
fn with_password_line(cfg: &Path, line: &str) -> PathBuf {
    let text = std::fs::read_to_string(cfg).expect("read the config");
    let original = format!("password = \"{POP_PW}\"");
    assert!(text.contains(&original), "the harness wrote {original:?}");
    let path = cfg.with_extension("broken.toml");
    std::fs::write(&path, text.replace(&original, line)).expect("write the config");
    path
}

/// Guards a fixed bug (issue 9, case 6): toml's error message quotes the
/// offending line, and these lines hold a password.
#[test]
fn configuration_errors_do_not_print_the_password() {
    let d = dovecot();
    let base = config(&d, "cfgerr").write();
    // (the line, what of it must not be printed, the key the error names)
    let cases = [
        (r#"password = "s3cr\qet""#, "s3cr", "password"),
        (r#"pasword = "hunter2""#, "hunter2", "pasword"),
        ("password = hunter2", "hunter2", "password"),
        ("password = Pw-unquoted-0042", "unquoted-0042", "password"),
    ];
    for (line, secret, key) in cases {
        let cfg = with_password_line(&base, line);
        for format in [Format::TextFlag, Format::JsonEnv] {
            for args in [&["check"][..], &["sync"], &["status"]] {
                let what = format!("{args:?} with {line:?}, {format:?}");
                let out = run_traced(&cfg, args, format);
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "{what}: a configuration error:\n{}",
                    describe_output(&out)
                );
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    !all.contains(secret),
                    "{what}: the password ({secret:?}) appears in the output:\n{}",
                    describe_output(&out)
                );
                assert_clean(&what, &out, ALL_PASSWORDS);
                assert!(
                    all.contains("line ") && all.contains(key),
                    "{what}: still says where (line) and which key ({key}):\n{all}"
                );
            }
        }
    }
}

#[test]
fn a_trace_level_check_against_a_self_signed_server_prints_no_password() {
    let d = Dovecot::builder()
        .users(vec![
            User::new(POP_USER, POP_PW, Storage::Maildir),
            User::new(IMAP_USER, IMAP_PW, Storage::Mdbox),
        ])
        .server_cert(ServerCert::SelfSigned)
        .start();
    d.seed(POP_USER, &[corpus_kind("plain")]);
    let fp = support::certs::openssl_sha256_fingerprint(&d.server_cert_file);
    let pin = format!("tls_fingerprint = \"sha256:{fp}\"");
    for (i, (label, source, target, port)) in tls_cases(&d).into_iter().enumerate() {
        let b = config(&d, &format!("selfsigned{i}"))
            .source_tls(source)
            .target_tls(target)
            .ca_file(None);
        for format in [Format::TextFlag, Format::JsonEnv] {
            let what = format!("check {label}, untrusted self-signed certificate, {format:?}");
            let out = run_traced(&b.write(), &["check"], format);
            // (No assert_traced: a refused handshake is over before
            // anything is traced; the pinned runs below show the level.)
            assert_refused_for_tls(&what, &out, port);
            assert_clean(&what, &out, ALL_PASSWORDS);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&pin),
                "{what}: prints the line to add:\n{}",
                describe_output(&out)
            );
        }
        let line = format!("{pin}\n");
        let pinned = if source == Tls::None {
            b.clone().target_extra(&line)
        } else {
            b.clone().source_extra(&line)
        };
        for format in [Format::TextFlag, Format::JsonEnv] {
            let what = format!("check {label}, pinned self-signed certificate, {format:?}");
            let out = run_traced(&pinned.write(), &["check"], format);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}:\n{}",
                describe_output(&out)
            );
            assert_traced(&what, &out, format);
            assert_clean(&what, &out, ALL_PASSWORDS);
        }
    }
}
