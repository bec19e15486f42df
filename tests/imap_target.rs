//! The IMAP target (`popferry::imap`) against a real Dovecot: TLS both ways,
//! both login mechanisms, mailbox creation, APPEND with flags, date and
//! APPENDUID, a NUL byte kept exact through literal8, a 10 MB message streamed
//! from a spool file and found again, and the refusals that must be errors.
//!
//! Why a separate test file: these are the promises the sync engine builds
//! guarantees 1, 2, 6 and 7 on; each is checked here with the harness's own
//! raw IMAP client, never with popferry's code.

mod support;

use std::path::Path;
use std::time::Duration;

use popferry::config::{Endpoint, ImapAuth, ServerSettings, TlsMode};
use popferry::imap::{self, Appended, ImapError, ImapErrorKind};
use popferry::spool::{Spool, SpooledMessage};
use support::{Dovecot, imap_fetch_all, imap_mailboxes, sha256_hex};

/// One APPEND through the pipeline of one (what the sync engine uses).
async fn append_one(
    s: &mut imap::Session,
    mailbox: &str,
    flags: &[String],
    date: Option<&str>,
    msg: &SpooledMessage,
) -> Result<Appended, ImapError> {
    let mut pipe = s.append_pipeline::<()>(mailbox, flags, 1, u64::MAX)?;
    pipe.push((), msg, date).await?;
    match pipe.next_result().await? {
        Some(((), result)) => result,
        None => panic!("an APPEND without a result"),
    }
}

fn settings(
    d: &Dovecot,
    user: &str,
    tls: TlsMode,
    auth: ImapAuth,
    ca: Option<&Path>,
) -> ServerSettings<ImapAuth> {
    let port = match tls {
        TlsMode::Implicit => d.imaps_port,
        TlsMode::Starttls | TlsMode::None => d.imap_port,
    };
    ServerSettings {
        endpoint: Endpoint {
            host: d.host.clone(),
            port,
            tls,
            ca_file: ca.map(Path::to_path_buf),
            tls_fingerprint: None,
            timeout: Duration::from_secs(20),
        },
        username: user.into(),
        password: d.password(user).into(),
        auth,
        allow_plaintext_password: false,
        oauth2: None,
    }
}

/// Runs the harness's blocking raw client off the async runtime.
async fn fetch_all(d: &Dovecot, user: &str, mailbox: &str) -> Vec<support::Fetched> {
    tokio::task::block_in_place(|| imap_fetch_all(d, user, mailbox))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_login_creates_mailbox_and_appends_with_flags_date_and_appenduid() {
    let d = Dovecot::start();
    let s = settings(
        &d,
        "dave",
        TlsMode::Implicit,
        ImapAuth::Login,
        Some(&d.ca_file),
    );
    let mut session = imap::connect(&s).await.expect("connect");
    assert!(session.is_tls());
    let caps = session.capabilities();
    assert!(
        caps.uidplus() && caps.literal_plus() && caps.binary(),
        "{caps:?}"
    );
    // Capabilities are those of the logged-in state.
    assert!(
        !caps.has("AUTH=PLAIN") && !caps.has("LOGINDISABLED"),
        "{caps:?}"
    );

    let st = session.ensure_mailbox("Archive/POP").await.expect("ensure");
    assert_eq!(st.exists, 0);
    assert!(st.uidvalidity.is_some());
    let names = tokio::task::block_in_place(|| imap_mailboxes(&d, "dave"));
    assert!(names.iter().any(|n| n == "Archive/POP"), "{names:?}");
    // A second time it exists already.
    assert_eq!(
        session.ensure_mailbox("Archive/POP").await.expect("again"),
        st
    );

    let body = b"From: a@example.com\r\nMessage-ID: <flags@example.com>\r\nSubject: x\r\n\r\nline\r\n.dot\r\n";
    let msg = SpooledMessage::from_bytes(body);
    let got = append_one(
        &mut session,
        "Archive/POP",
        &["\\Seen".into()],
        Some("14-Nov-2023 10:00:00 +0100"),
        &msg,
    )
    .await
    .expect("append");
    assert_eq!(got.uidvalidity, st.uidvalidity);
    let uid = got.uid.expect("APPENDUID");
    session.logout().await.expect("logout");

    let all = fetch_all(&d, "dave", "Archive/POP").await;
    assert_eq!(all.len(), 1);
    let m = &all[0];
    assert_eq!(m.uid, uid);
    assert!(m.flags.iter().any(|f| f == "\\Seen"), "{:?}", m.flags);
    assert_eq!(m.internal_date, "14-Nov-2023 09:00:00 +0000");
    assert_eq!(m.sha256_hex, sha256_hex(body));
    assert_eq!(m.size, body.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_authenticate_plain_keeps_a_nul_byte_exact_via_literal8() {
    let d = Dovecot::start();
    let s = settings(
        &d,
        "erin",
        TlsMode::Starttls,
        ImapAuth::Plain,
        Some(&d.ca_file),
    );
    let mut session = imap::connect(&s).await.expect("connect");
    assert!(session.is_tls());
    assert!(session.capabilities().binary());
    session.ensure_mailbox("INBOX").await.expect("inbox");

    let body =
        b"Message-ID: <nul@example.com>\r\nSubject: nul\r\n\r\nbefore\0after\r\n\x80\xff bytes\r\n";
    let msg = SpooledMessage::from_bytes(body);
    assert!(msg.has_nul());
    let got = append_one(&mut session, "INBOX", &[], None, &msg)
        .await
        .expect("append");
    let uid = got.uid.expect("APPENDUID");
    assert_eq!(
        session
            .find_message("INBOX", "<nul@example.com>", body.len() as u64)
            .await
            .expect("find"),
        vec![uid]
    );
    session.logout().await.expect("logout");

    let all = fetch_all(&d, "erin", "INBOX").await;
    let m = all.iter().find(|m| m.uid == uid).expect("appended message");
    assert_eq!(m.bytes, body.to_vec(), "BINARY[] must give back the NUL");
    assert!(m.flags.is_empty(), "{:?}", m.flags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_message_streams_from_its_spool_file_and_is_found_again() {
    let d = Dovecot::start();
    let s = settings(
        &d,
        "dave",
        TlsMode::Implicit,
        ImapAuth::Auto,
        Some(&d.ca_file),
    );
    let mut session = imap::connect(&s).await.expect("connect");

    let mut spool = Spool::new(1024 * 1024);
    spool
        .write(b"From: big@example.com\r\nMessage-ID: <big.1@example.com>\r\nSubject: big\r\n\r\n")
        .await
        .expect("spool");
    let line: Vec<u8> = (0..76u8).map(|i| b'!' + (i % 90)).chain(*b"\r\n").collect();
    while spool.len() < 10 * 1024 * 1024 {
        spool.write(&line).await.expect("spool");
    }
    let msg = spool.finish().await.expect("finish");
    assert!(msg.is_on_disk());
    let size = msg.len();

    let got = append_one(&mut session, "INBOX", &[], None, &msg)
        .await
        .expect("append");
    let uid = got.uid.expect("APPENDUID");

    assert_eq!(
        session
            .find_message("INBOX", "<big.1@example.com>", size)
            .await
            .expect("find"),
        vec![uid]
    );
    assert_eq!(
        session
            .find_message("INBOX", "<big.1@example.com>", size - 1)
            .await
            .expect("find"),
        Vec::<u32>::new(),
        "a size mismatch is not the same message"
    );
    assert_eq!(
        session
            .find_message("INBOX", "<other@example.com>", size)
            .await
            .expect("find"),
        Vec::<u32>::new()
    );
    assert_eq!(
        session
            .find_message("Nowhere", "<big.1@example.com>", size)
            .await
            .expect("find"),
        Vec::<u32>::new(),
        "a mailbox that does not exist holds nothing"
    );
    // The session stays usable after the searches.
    append_one(
        &mut session,
        "INBOX",
        &[],
        None,
        &SpooledMessage::from_bytes(b"Subject: after\r\n\r\nx\r\n"),
    )
    .await
    .expect("append after find");
    session.logout().await.expect("logout");

    let all = fetch_all(&d, "dave", "INBOX").await;
    let m = all.iter().find(|m| m.uid == uid).expect("appended message");
    assert_eq!(m.size, size);
    assert_eq!(m.sha256_hex, msg.sha256_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_errors_that_say_what_to_do() {
    let d = Dovecot::start();

    // Wrong password, both mechanisms: a permanent Auth error without the password.
    for auth in [ImapAuth::Login, ImapAuth::Plain] {
        let mut s = settings(&d, "dave", TlsMode::Implicit, auth, Some(&d.ca_file));
        s.password = "not-the-password".into();
        let e = imap::connect(&s).await.expect_err("wrong password");
        assert!(
            matches!(e.kind(), ImapErrorKind::Auth { .. }),
            "{auth:?}: {e}"
        );
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains(&format!("{}:{}", d.host, d.imaps_port)),
            "{text}"
        );
        assert!(!text.contains("not-the-password"), "{text}");
    }

    // An unknown CA: the certificate is not trusted.
    let s = settings(
        &d,
        "dave",
        TlsMode::Implicit,
        ImapAuth::Auto,
        Some(&d.wrong_ca_file),
    );
    let e = imap::connect(&s).await.expect_err("untrusted certificate");
    assert!(matches!(e.kind(), ImapErrorKind::Net(_)), "{e}");

    // No TLS: the password is not sent unless allowed.
    let mut s = settings(&d, "dave", TlsMode::None, ImapAuth::Login, None);
    let e = imap::connect(&s).await.expect_err("plaintext");
    assert!(matches!(e.kind(), ImapErrorKind::PlaintextRefused), "{e}");
    s.allow_plaintext_password = true;
    let session = imap::connect(&s).await.expect("allowed plaintext");
    assert!(!session.is_tls());
    session.logout().await.expect("logout");

    // A mailbox name the server cannot have, and a flag we refuse to send.
    let s = settings(
        &d,
        "dave",
        TlsMode::Implicit,
        ImapAuth::Auto,
        Some(&d.ca_file),
    );
    let mut session = imap::connect(&s).await.expect("connect");
    let msg = SpooledMessage::from_bytes(b"Subject: x\r\n\r\nx\r\n");
    let e = append_one(&mut session, "INBOX", &["\\Recent".into()], None, &msg)
        .await
        .expect_err("flag");
    assert!(
        matches!(e.kind(), ImapErrorKind::InvalidArgument { .. }),
        "{e}"
    );
    // An empty message is refused by Dovecot: a rejection, and the session goes on.
    let e = append_one(
        &mut session,
        "INBOX",
        &[],
        None,
        &SpooledMessage::from_bytes(b""),
    )
    .await
    .expect_err("empty message");
    assert!(
        matches!(
            e.kind(),
            ImapErrorKind::No { .. } | ImapErrorKind::Bad { .. }
        ) && !e.is_transient(),
        "{e}"
    );
    session.ensure_mailbox("INBOX").await.expect("still usable");
    session.logout().await.expect("logout");
}
