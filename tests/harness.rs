//! Tests of the test harness itself, against a real Dovecot. They do not use popferry.

mod support;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;
use support::corpus::{self, messages};
use support::{
    ConfigBuilder, Dovecot, Imap, Password, Pop3, ServerCert, Storage, Tls, User, crlf_normalise,
    imap_append, imap_create, imap_fetch_all, imap_mailboxes, sha256_hex,
};

#[test]
fn starts_on_four_distinct_ports_and_stops() {
    let t = Instant::now();
    let d = Dovecot::start();
    eprintln!("dovecot started in {:?}", t.elapsed());
    let ports: HashSet<u16> = [d.pop3_port, d.pop3s_port, d.imap_port, d.imaps_port].into();
    assert_eq!(ports.len(), 4);
    assert!(!ports.contains(&0));
    assert!(d.base.as_os_str().len() <= 60);
    for f in [
        &d.ca_file,
        &d.wrong_ca_file,
        &d.server_cert_file,
        &d.wrong_name_cert_file,
    ] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    assert!(
        d.log_tail().contains("starting up"),
        "log: {}",
        d.log_tail()
    );
    let base = d.base.clone();
    let port = d.imap_port;
    let t = Instant::now();
    drop(d);
    eprintln!("dovecot stopped in {:?}", t.elapsed());
    assert!(!base.exists(), "instance folder left behind");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after drop"
    );
}

#[test]
fn seeded_corpus_is_served_by_pop3_in_order_and_byte_for_byte() {
    let c = corpus::corpus();
    assert!(c.len() >= 17);
    for (kind, msg) in &c {
        let kind_header = format!("X-Corpus-Kind: {kind}");
        assert!(
            msg.windows(kind_header.len())
                .any(|w| w == kind_header.as_bytes()),
            "{kind} lacks its kind header"
        );
        assert!(
            support::header_value(msg, "Date").is_some(),
            "{kind} lacks Date"
        );
    }
    let d = Dovecot::start();
    let seeded = d.seed("alice", &messages(&c));
    assert_eq!(seeded.len(), c.len());

    let uidls = d.pop3_uidls("alice");
    assert_eq!(uidls.len(), c.len());
    assert_eq!(
        uidls.iter().collect::<HashSet<_>>().len(),
        c.len(),
        "UIDLs not unique"
    );

    let mut p = Pop3::login(&d, "alice");
    let list = p.list();
    assert_eq!(list.len(), c.len());
    for (i, ((kind, _), s)) in c.iter().zip(&seeded).enumerate() {
        let n = i as u32 + 1;
        assert_eq!(list[i], (n, s.size), "LIST size of #{n} ({kind})");
        let got = p.retr(n);
        assert_eq!(got.len() as u64, s.size, "RETR size of #{n} ({kind})");
        assert_eq!(
            sha256_hex(&got),
            s.sha256_hex,
            "RETR bytes of #{n} ({kind})"
        );
    }
    p.quit();

    // the awkward bits really are there
    let by_kind = |k: &str| c.iter().position(|(kind, _)| *kind == k).expect("kind");
    assert_eq!(seeded[by_kind("no-msgid")].message_id, None);
    let dup: Vec<_> = c
        .iter()
        .zip(&seeded)
        .filter(|((k, _), _)| *k == "dup-msgid")
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(dup.len(), 2);
    assert_eq!(dup[0].message_id.as_deref(), Some(corpus::DUP_MESSAGE_ID));
    assert_eq!(dup[0].message_id, dup[1].message_id);
    assert_ne!(dup[0].sha256_hex, dup[1].sha256_hex);
    assert!(seeded[by_kind("big")].size > 10_000_000);
    assert!(c[by_kind("nul-byte")].1.contains(&0));
    assert!(c[by_kind("bare-cr")].1.windows(3).any(|w| w == b">\r<"));
    assert!(!c[by_kind("bare-lf")].1.contains(&b'\r'));
    let headers_only = &c[by_kind("headers-only")].1;
    assert!(!headers_only.windows(4).any(|w| w == b"\r\n\r\n"));
    assert!(c[by_kind("empty-body")].1.ends_with(b"\r\n\r\n"));
    assert!(c[by_kind("dot-lines")].1.ends_with(b"\r\n.\r\n"));
}

#[test]
fn seed_order_holds_across_calls() {
    let d = Dovecot::start();
    let c = corpus::corpus_small();
    let first = d.seed("bob", &messages(&c[..3]));
    let second = d.seed("bob", &messages(&c[3..6]));
    let all = d.pop3_retr_all("bob");
    let got: Vec<String> = all.iter().map(|m| sha256_hex(m)).collect();
    let want: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|s| s.sha256_hex.clone())
        .collect();
    assert_eq!(got, want);
    // UIDLs are stable across sessions
    assert_eq!(d.pop3_uidls("bob"), d.pop3_uidls("bob"));
}

#[test]
fn imap_append_and_fetch_back() {
    let d = Dovecot::start();
    assert!(imap_fetch_all(&d, "dave", "INBOX").is_empty());
    assert!(
        imap_fetch_all(&d, "dave", "Nope").is_empty(),
        "absent mailbox → empty"
    );

    let plain = corpus::corpus_kind("plain");
    let uid = imap_append(
        &d,
        "dave",
        "INBOX",
        &plain,
        &["\\Seen"],
        Some("14-Nov-2023 10:00:05 +0000"),
    );
    let got = imap_fetch_all(&d, "dave", "INBOX");
    assert_eq!(got.len(), 1);
    let f = &got[0];
    assert_eq!(f.uid, uid);
    assert_eq!(f.sha256_hex, sha256_hex(&plain));
    assert_eq!(f.bytes, plain);
    assert_eq!(f.size, plain.len() as u64);
    assert_eq!(f.flags, vec!["\\Seen".to_string()]);
    assert_eq!(f.internal_date, "14-Nov-2023 10:00:05 +0000");
    assert_eq!(
        f.message_id.as_deref(),
        Some("<corpus-0-plain@corpus.popferry.test>")
    );

    // Into another mailbox: every kind (as POP3 would deliver it), exactly, including NUL and base64 parts.
    imap_create(&d, "dave", "Archive/POP");
    assert!(imap_mailboxes(&d, "dave").contains(&"Archive/POP".to_string()));
    let c = corpus::corpus_small();
    let mut client = Imap::login(&d, "dave");
    for (kind, msg) in &c {
        let wire = crlf_normalise(msg);
        let r = client.append("Archive/POP", &wire, &[], None);
        assert!(r.is_ok(), "APPEND {kind}: {}", r.status);
    }
    let got = client.fetch_all("Archive/POP");
    client.logout();
    assert_eq!(got.len(), c.len());
    for ((kind, msg), f) in c.iter().zip(&got) {
        let wire = crlf_normalise(msg);
        assert_eq!(
            f.sha256_hex,
            sha256_hex(&wire),
            "{kind} not stored/fetched exactly"
        );
        assert_eq!(f.size, wire.len() as u64, "{kind} size");
        assert_eq!(f.flags, Vec::<String>::new(), "{kind} flags");
    }
}

#[test]
fn internaldate_is_shown_in_utc() {
    // Dovecot runs with TZ=UTC and shows INTERNALDATE converted to +0000, whatever offset APPEND gave.
    let d = Dovecot::start();
    let msg = corpus::corpus_kind("received-date");
    imap_append(
        &d,
        "erin",
        "INBOX",
        &msg,
        &[],
        Some("14-Nov-2023 11:00:05 +0100"),
    );
    let got = imap_fetch_all(&d, "erin", "INBOX");
    assert_eq!(got[0].internal_date, corpus::RECEIVED_NEWEST_INTERNALDATE);
}

fn tls_handshake(port: u16, server_name: &str, ca: &std::path::Path) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut line = String::new();
    BufReader::new(&mut tls)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if !(line.starts_with("+OK") || line.starts_with("* OK")) {
        return Err(format!("greeting {line:?}"));
    }
    let _ = tls.write_all(b"QUIT\r\n");
    Ok(())
}

#[test]
fn tls_certificates_verify_with_rustls() {
    let d = Dovecot::start();
    for port in [d.pop3s_port, d.imaps_port] {
        tls_handshake(port, "localhost", &d.ca_file).expect("localhost + test CA");
        tls_handshake(port, "127.0.0.1", &d.ca_file).expect("127.0.0.1 + test CA");
        let e = tls_handshake(port, "localhost", &d.wrong_ca_file).expect_err("wrong CA must fail");
        assert!(
            e.to_lowercase().contains("unknownissuer") || e.contains("issuer"),
            "{e}"
        );
    }
    drop(d);
    let d = Dovecot::builder()
        .server_cert(ServerCert::WrongName)
        .start();
    let e = tls_handshake(d.imaps_port, "localhost", &d.ca_file).expect_err("wrong name must fail");
    assert!(e.to_lowercase().contains("name"), "{e}");
}

#[test]
fn instances_are_independent_and_restartable() {
    let a = Dovecot::start();
    let mut b = Dovecot::builder()
        .users(vec![
            User::new("zed", "pa55", Storage::Maildir),
            User::mdbox("yan"),
        ])
        .extra_config("pop3_lock_session = yes")
        .start();
    let ports_a: HashSet<u16> = [a.pop3_port, a.pop3s_port, a.imap_port, a.imaps_port].into();
    assert!(ports_a.is_disjoint(&[b.pop3_port, b.pop3s_port, b.imap_port, b.imaps_port].into()));
    b.seed("zed", &[corpus::corpus_kind("plain")]);
    assert_eq!(b.pop3_uidls("zed").len(), 1);
    assert!(a.pop3_uidls("alice").is_empty());
    let mut p = Pop3::connect(&b);
    p.ok("USER zed");
    assert!(p.command("PASS wrong").starts_with("-ERR"));
    let pid = b.pid();
    b.stop();
    assert!(!b.is_running());
    assert!(TcpStream::connect(("127.0.0.1", b.pop3_port)).is_err());
    b.restart();
    assert_ne!(b.pid(), pid);
    assert_eq!(b.pop3_uidls("zed").len(), 1, "mail survives a restart");
}

#[test]
fn config_builder_writes_valid_toml() {
    let d = Dovecot::start();
    let path = support::write_config(&d, "alice", "dave");
    let v: toml::Value =
        toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
    assert_eq!(
        v["accounts"][0]["source"]["port"].as_integer(),
        Some(d.pop3s_port.into())
    );
    assert_eq!(v["accounts"][0]["target"]["tls"].as_str(), Some("implicit"));

    let b = ConfigBuilder::new(&d, "alice", "dave")
        .source_tls(Tls::Starttls)
        .target_tls(Tls::None)
        .source_password(Password::Env("SRC_PW".into()))
        .flags(&["\\Seen", "$Forwarded"])
        .internal_date("date")
        .mailbox("Archive/POP")
        .delete("after-sync")
        .max_message_size("5MiB")
        .timeout("5s")
        .add_account(&d, "second", "bob", "erin")
        .delete("30d")
        .daemon_poll_interval("1s")
        .file_name("two.toml");
    let path = b.write();
    let text = std::fs::read_to_string(&path).expect("read");
    let v: toml::Value = toml::from_str(&text).expect("toml");
    let a0 = &v["accounts"][0];
    assert_eq!(a0["source"]["port"].as_integer(), Some(d.pop3_port.into()));
    assert_eq!(a0["source"]["tls"].as_str(), Some("starttls"));
    assert_eq!(a0["source"]["password"]["env"].as_str(), Some("SRC_PW"));
    assert_eq!(a0["target"]["port"].as_integer(), Some(d.imap_port.into()));
    assert!(a0["target"].get("ca_file").is_none());
    assert_eq!(a0["target"]["flags"][0].as_str(), Some("\\Seen"));
    assert_eq!(a0["policy"]["delete"].as_str(), Some("after-sync"));
    assert_eq!(v["accounts"][1]["name"].as_str(), Some("second"));
    assert_eq!(v["accounts"][1]["policy"]["delete"].as_str(), Some("30d"));
    assert_eq!(
        v["ledger"]["path"].as_str(),
        Some(b.ledger_path().to_str().expect("utf8"))
    );
    assert_eq!(v["daemon"]["poll_interval"].as_str(), Some("1s"));
}

#[test]
fn missing_binary_is_a_clear_failure_message() {
    // Not testable without uninstalling Dovecot; check the hint text at least.
    assert!(
        support::INSTALL_HINT
            .contains("apt-get install -y dovecot-core dovecot-imapd dovecot-pop3d")
    );
    assert!(support::dovecot_bin().is_file());
}
