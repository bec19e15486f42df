//! Issue 9, case 8: the certificates small legacy servers really have.
//!
//! The usual one is self-signed with `basicConstraints CA:TRUE`, made by a
//! plain `openssl req -x509` (the harness makes it the same way, see
//! `support/certs.rs`), and names some host other than the one popferry
//! connects to. Against a real Dovecot presenting it:
//! - the certificate itself in `ca_file` is accepted (pinned), on every TLS
//!   mode of both sides;
//! - `tls_fingerprint = "sha256:…"` pins it, in upper or lower case, with or
//!   without colons; a malformed value is a configuration error (exit 2);
//! - anything else is refused, and the error gives the certificate's SHA-256
//!   fingerprint and subject (`sync` and `check`), and `check` prints the
//!   exact line to add and where: that line, added, makes `check` and `sync`
//!   succeed.
//!
//! A CA + leaf still verifies as before; a pinned certificate is trusted as
//! the server's identity whatever names it carries (as ssh trusts a host
//! key), which the wrong-name case shows.

mod support;

use std::path::Path;
use std::process::Output;

use support::certs::openssl_sha256_fingerprint;
use support::{
    ConfigBuilder, Dovecot, ServerCert, Storage, Tls, User, corpus_kind, describe_output,
    imap_fetch_all, popferry,
};

const POP_USER: &str = "alice";
const IMAP_USER: &str = "dave";

fn dovecot(cert: ServerCert) -> Dovecot {
    Dovecot::builder()
        .users(vec![
            User::new(POP_USER, "pop-pw-1", Storage::Maildir),
            User::new(IMAP_USER, "imap-pw-2", Storage::Mdbox),
        ])
        .server_cert(cert)
        .start()
}

fn config(d: &Dovecot, name: &str) -> ConfigBuilder {
    ConfigBuilder::new(d, POP_USER, IMAP_USER)
        .name(name)
        .mailbox(name)
        .file_name(&format!("{name}.toml"))
        .ledger(&d.scratch().join(format!("{name}.db")))
}

fn run(cfg: &Path, cmd: &str) -> Output {
    popferry(
        &[cmd, "-c", cfg.to_str().expect("utf-8 config path")],
        &[("NO_COLOR", "1")],
    )
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One side under TLS, the other plain: (label, source tls, target tls,
/// the port the failing side uses, the table the fix goes in).
fn tls_cases(d: &Dovecot) -> Vec<(&'static str, Tls, Tls, u16, &'static str)> {
    vec![
        (
            "POP3 implicit TLS",
            Tls::Implicit,
            Tls::None,
            d.pop3s_port,
            "[accounts.source]",
        ),
        (
            "POP3 STLS",
            Tls::Starttls,
            Tls::None,
            d.pop3_port,
            "[accounts.source]",
        ),
        (
            "IMAP implicit TLS",
            Tls::None,
            Tls::Implicit,
            d.imaps_port,
            "[accounts.target]",
        ),
        (
            "IMAP STARTTLS",
            Tls::None,
            Tls::Starttls,
            d.imap_port,
            "[accounts.target]",
        ),
    ]
}

fn assert_synced(what: &str, out: &Output, d: &Dovecot, mailbox: &str, n: usize) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: sync should succeed:\n{}",
        describe_output(out)
    );
    assert_eq!(
        imap_fetch_all(d, IMAP_USER, mailbox).len(),
        n,
        "{what}: every message copied"
    );
}

/// Refused for a certificate problem, naming the server, the presented
/// certificate's fingerprint (as openssl prints it) and its subject.
fn assert_refused_naming_the_certificate(what: &str, out: &Output, port: u16, fp: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: must be refused:\n{}",
        describe_output(out)
    );
    let all = all_text(out);
    for needle in [
        "certificate".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("sha256:{fp}"),
        "CN=mail.legacy.test".to_owned(),
        "O=Legacy Mail".to_owned(),
    ] {
        assert!(
            all.contains(&needle),
            "{what}: the error should contain {needle:?}:\n{}",
            describe_output(out)
        );
    }
}

#[test]
fn the_self_signed_certificate_itself_in_ca_file_is_accepted() {
    let d = dovecot(ServerCert::SelfSigned);
    let seeded = d.seed(POP_USER, &[corpus_kind("plain"), corpus_kind("dot-lines")]);
    for (i, (label, source, target, _, _)) in tls_cases(&d).into_iter().enumerate() {
        let name = format!("pinned{i}");
        let cfg = config(&d, &name)
            .source_tls(source)
            .target_tls(target)
            .ca_file(Some(&d.server_cert_file))
            .write();
        let what = format!("{label}, ca_file = the server's own self-signed certificate");
        assert_synced(&what, &run(&cfg, "sync"), &d, &name, seeded.len());
    }
}

#[test]
fn a_tls_fingerprint_pins_the_certificate_in_any_spelling() {
    let d = dovecot(ServerCert::SelfSigned);
    let seeded = d.seed(POP_USER, &[corpus_kind("plain")]);
    let fp = openssl_sha256_fingerprint(&d.server_cert_file);
    let bare = fp.replace(':', "");
    let spellings = [
        format!("sha256:{fp}"),
        format!("sha256:{}", bare.to_lowercase()),
        format!("SHA256:{}", fp.to_lowercase()),
        bare.clone(),
    ];
    for (i, (label, source, target, _, _)) in tls_cases(&d).into_iter().enumerate() {
        for (j, value) in spellings.iter().enumerate() {
            let name = format!("fp{i}x{j}");
            let line = format!("tls_fingerprint = \"{value}\"\n");
            let mut b = config(&d, &name)
                .source_tls(source)
                .target_tls(target)
                .ca_file(None);
            b = if source == Tls::None {
                b.target_extra(&line)
            } else {
                b.source_extra(&line)
            };
            let cfg = b.write();
            let what = format!("{label}, {line:?} and no ca_file");
            assert_synced(&what, &run(&cfg, "sync"), &d, &name, seeded.len());
        }
    }
}

#[test]
fn an_untrusted_certificate_is_refused_with_its_fingerprint_and_subject() {
    let d = dovecot(ServerCert::SelfSigned);
    d.seed(POP_USER, &[corpus_kind("plain")]);
    let fp = openssl_sha256_fingerprint(&d.server_cert_file);
    // Another self-signed CA:TRUE certificate: trusting it trusts nothing here.
    let other = openssl_sha256_fingerprint(&d.wrong_ca_file);
    for (i, (label, source, target, port, _)) in tls_cases(&d).into_iter().enumerate() {
        let trusts: [(&str, ConfigBuilder); 3] = [
            (
                "platform roots only",
                config(&d, &format!("none{i}"))
                    .source_tls(source)
                    .target_tls(target)
                    .ca_file(None),
            ),
            (
                "ca_file = another self-signed certificate",
                config(&d, &format!("other{i}"))
                    .source_tls(source)
                    .target_tls(target)
                    .ca_file(Some(&d.wrong_ca_file)),
            ),
            (
                "tls_fingerprint of another certificate",
                config(&d, &format!("otherfp{i}"))
                    .source_tls(source)
                    .target_tls(target)
                    .ca_file(None)
                    .source_extra(&if source == Tls::None {
                        String::new()
                    } else {
                        format!("tls_fingerprint = \"sha256:{other}\"\n")
                    })
                    .target_extra(&if target == Tls::None {
                        String::new()
                    } else {
                        format!("tls_fingerprint = \"sha256:{other}\"\n")
                    }),
            ),
        ];
        for (trust, b) in trusts {
            let cfg = b.write();
            for cmd in ["sync", "check"] {
                let what = format!("{cmd} {label}, {trust}");
                let out = run(&cfg, cmd);
                assert_refused_naming_the_certificate(&what, &out, port, &fp);
            }
        }
    }
    assert!(imap_fetch_all(&d, IMAP_USER, "INBOX").is_empty());
    assert_eq!(d.pop3_uidls(POP_USER).len(), 1, "nothing deleted");
}

/// The `tls_fingerprint = ...` lines `check` printed.
fn printed_pins(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tls_fingerprint"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_prints_the_line_to_add_and_that_line_works() {
    let d = dovecot(ServerCert::SelfSigned);
    let seeded = d.seed(POP_USER, &[corpus_kind("plain"), corpus_kind("dot-lines")]);
    let fp = openssl_sha256_fingerprint(&d.server_cert_file);
    let expected = format!("tls_fingerprint = \"sha256:{fp}\"");

    // One side at a time: the advice names that side, and only that one.
    for (i, (label, source, target, _, table)) in tls_cases(&d).into_iter().enumerate() {
        let name = format!("legacy{i}");
        let b = config(&d, &name)
            .source_tls(source)
            .target_tls(target)
            .ca_file(None);
        let out = run(&b.write(), "check");
        let what = format!("check {label}, untrusted self-signed certificate");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}:\n{}",
            describe_output(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            printed_pins(&stdout),
            vec![expected.clone()],
            "{what}: prints exactly the line to add:\n{}",
            describe_output(&out)
        );
        let other = if table == "[accounts.source]" {
            "[accounts.target]"
        } else {
            "[accounts.source]"
        };
        assert!(
            stdout.contains(table) && !stdout.contains(other),
            "{what}: says to add it to {table} (and not to {other}):\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("\"{name}\"")),
            "{what}: names the account {name:?}:\n{stdout}"
        );

        // Added where it says, the line makes check and sync succeed.
        let pinned = if table == "[accounts.source]" {
            b.source_extra(&format!("{expected}\n"))
        } else {
            b.target_extra(&format!("{expected}\n"))
        };
        let cfg = pinned.write();
        let out = run(&cfg, "check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}, with the printed line added:\n{}",
            describe_output(&out)
        );
        assert!(printed_pins(&String::from_utf8_lossy(&out.stdout)).is_empty());
        assert_synced(&what, &run(&cfg, "sync"), &d, &name, seeded.len());
    }

    // Both sides at once: one line for each, each under its own table.
    let name = "legacyboth";
    let b = config(&d, name)
        .source_tls(Tls::Implicit)
        .target_tls(Tls::Starttls)
        .ca_file(None);
    let out = run(&b.write(), "check");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed_pins(&stdout),
        vec![expected.clone(), expected.clone()]
    );
    assert!(stdout.contains("[accounts.source]") && stdout.contains("[accounts.target]"));
    let line = format!("{expected}\n");
    let cfg = b.source_extra(&line).target_extra(&line).write();
    assert_eq!(run(&cfg, "check").status.code(), Some(0));
    assert_synced(
        "both sides pinned",
        &run(&cfg, "sync"),
        &d,
        name,
        seeded.len(),
    );
}

#[test]
fn a_malformed_fingerprint_is_a_configuration_error() {
    let d = dovecot(ServerCert::SelfSigned);
    let fp = openssl_sha256_fingerprint(&d.server_cert_file);
    let bare = fp.replace(':', "");
    let malformed = [
        String::new(),
        "sha256:".to_owned(),
        format!("sha256:{}", &fp[..fp.len() - 3]),
        format!("sha256:{fp}:00"),
        format!(
            "sha256:{}",
            bare.replacen(|c: char| c.is_ascii_hexdigit(), "G", 1)
        ),
        format!("md5:{fp}"),
        format!("sha1:{fp}"),
        format!("sha256:{}", fp.replacen(':', "", 1)),
        format!("sha256:{}", fp.replace(':', "-")),
        format!("sha256: {fp}"),
        format!("sha256:{bare}0"),
    ];
    for (i, value) in malformed.iter().enumerate() {
        for side in ["source", "target"] {
            let name = format!("bad{i}{side}");
            let line = format!("tls_fingerprint = \"{value}\"\n");
            let b = config(&d, &name);
            let cfg = if side == "source" {
                b.source_extra(&line)
            } else {
                b.target_extra(&line)
            }
            .write();
            for cmd in ["check", "sync"] {
                let out = run(&cfg, cmd);
                let what = format!("{cmd} with {line:?} on the {side}");
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "{what}: a configuration error:\n{}",
                    describe_output(&out)
                );
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains(&format!("{side}.tls_fingerprint: ")),
                    "{what}: names the key and the side:\n{err}"
                );
            }
        }
    }
    // A pin on a side without TLS cannot mean anything: also refused.
    let cfg = config(&d, "pinnotls")
        .source_tls(Tls::None)
        .source_extra(&format!("tls_fingerprint = \"sha256:{fp}\"\n"))
        .write();
    let out = run(&cfg, "check");
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_fingerprint"));
    assert!(imap_fetch_all(&d, IMAP_USER, "INBOX").is_empty());
}

#[test]
fn a_ca_signed_certificate_still_verifies_and_a_pin_needs_no_name() {
    let d = dovecot(ServerCert::Good);
    let seeded = d.seed(POP_USER, &[corpus_kind("plain")]);
    // CA + leaf: the CA in ca_file, as before.
    let cfg = config(&d, "ca")
        .source_tls(Tls::Implicit)
        .target_tls(Tls::Starttls)
        .write();
    assert_synced(
        "CA + leaf, the CA in ca_file",
        &run(&cfg, "sync"),
        &d,
        "ca",
        seeded.len(),
    );
    // The leaf itself (CA:FALSE) in ca_file: pinned too.
    let cfg = config(&d, "leaf")
        .source_tls(Tls::Starttls)
        .target_tls(Tls::Implicit)
        .ca_file(Some(&d.server_cert_file))
        .write();
    assert_synced(
        "the leaf itself in ca_file",
        &run(&cfg, "sync"),
        &d,
        "leaf",
        seeded.len(),
    );

    // A certificate for another name, from the trusted CA: refused, with
    // its fingerprint; pinned, it is that server's identity.
    let w = dovecot(ServerCert::WrongName);
    let seeded = w.seed(POP_USER, &[corpus_kind("plain")]);
    let fp = openssl_sha256_fingerprint(&w.server_cert_file);
    let cfg = config(&w, "wrongname").write();
    let out = run(&cfg, "sync");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let all = all_text(&out);
    assert!(
        all.contains(&format!("sha256:{fp}")) && all.contains("CN=wrong-name.invalid"),
        "names the certificate:\n{all}"
    );
    let line = format!("tls_fingerprint = \"sha256:{fp}\"\n");
    let cfg = config(&w, "wrongpinned")
        .source_extra(&line)
        .target_extra(&line)
        .write();
    assert_synced(
        "a pinned certificate for another name",
        &run(&cfg, "sync"),
        &w,
        "wrongpinned",
        seeded.len(),
    );
}
