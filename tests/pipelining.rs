//! Pipelining against a real Dovecot: POP3 PIPELINING (LIST+UIDL in one
//! flight, a window of RETRs, DELEs in one flight) and pipelined IMAP APPEND
//! with LITERAL+, each checked byte for byte with the harness's own raw
//! clients, never with popferry's code; and the same with pipelining off.
//!
//! Why a file of its own: pipelining is where bytes of one reply sit in the
//! buffer behind another and where completions must be matched to messages
//! by tag, so guarantees 1 (byte for byte) and 2 (APPENDUIDs recorded per
//! message) are proved again here on the whole corpus (dot-lines, empty
//! body, big, NUL byte, ...).
//!
//! Turning pipelining off: Dovecot 2.3 has no setting to hide PIPELINING from
//! its POP3 CAPA (the list is compiled in), so the POP3 fallback runs here
//! with [`pop3::Session::set_pipelining`]`(false)` on the real server, and the
//! unit tests in `src/pop3/pipeline.rs` prove on a gated scripted stream
//! that a session whose server does not announce PIPELINING writes one
//! command per reply. For IMAP, Dovecot's `imap_capability` hides LITERAL+
//! for real, and the pipeline falls back to synchronizing literals.

mod support;

use std::time::Duration;

use popferry::config::{Endpoint, ImapAuth, Pop3Auth, ServerSettings, TlsMode};
use popferry::imap::{self, Appended, ImapError};
use popferry::pop3;
use popferry::spool::{Spool, SpooledMessage};
use support::corpus::messages;
use support::{Dovecot, Pop3, corpus, crlf_normalise, imap_fetch_all};

fn pop3_settings(d: &Dovecot, user: &str) -> ServerSettings<Pop3Auth> {
    ServerSettings {
        endpoint: Endpoint {
            host: d.host.clone(),
            port: d.pop3_port,
            tls: TlsMode::None,
            ca_file: None,
            tls_fingerprint: None,
            timeout: Duration::from_secs(30),
        },
        username: user.into(),
        password: d.password(user).into(),
        auth: Pop3Auth::User,
        allow_plaintext_password: true,
        oauth2: None,
    }
}

fn imap_settings(d: &Dovecot, user: &str) -> ServerSettings<ImapAuth> {
    ServerSettings {
        endpoint: Endpoint {
            host: d.host.clone(),
            port: d.imaps_port,
            tls: TlsMode::Implicit,
            ca_file: Some(d.ca_file.clone()),
            tls_fingerprint: None,
            timeout: Duration::from_secs(30),
        },
        username: user.into(),
        password: d.password(user).into(),
        auth: ImapAuth::Login,
        allow_plaintext_password: false,
        oauth2: None,
    }
}

/// What the harness's raw POP3 client gets: (uidl, RETR bytes) in order.
fn raw_retr_all(d: &Dovecot, user: &str) -> Vec<(String, Vec<u8>)> {
    tokio::task::block_in_place(|| {
        let mut p = Pop3::login(d, user);
        let uidls = p.uidl();
        let bodies: Vec<Vec<u8>> = (1..=uidls.len() as u32).map(|n| p.retr(n)).collect();
        p.quit();
        uidls.into_iter().zip(bodies).collect()
    })
}

/// RETRs every message through popferry's pipelined stream.
async fn popferry_retr_all(
    s: &mut pop3::Session,
    window: usize,
) -> (Vec<(u32, u64)>, Vec<(String, Vec<u8>)>) {
    let (list, uidl) = s.list_and_uidl().await.expect("LIST and UIDL");
    let uidl = uidl.expect("Dovecot supports UIDL");
    assert_eq!(list.len(), uidl.len());
    let numbers: Vec<u32> = uidl.iter().map(|(n, _)| *n).collect();
    let mut got = Vec::new();
    let mut stream = s.retr_pipelined(&numbers, window);
    let mut expected = numbers.iter();
    while let Some((n, body)) = stream.next_message().await.expect("next message") {
        assert_eq!(
            Some(&n),
            expected.next(),
            "messages come in the order asked"
        );
        let bytes = body
            .expect("RETR +OK")
            .read_to_end(64 << 20)
            .await
            .expect("body");
        got.push(bytes);
    }
    drop(stream);
    assert!(!s.is_poisoned());
    let uidls = uidl.into_iter().map(|(_, u)| u);
    (list, uidls.zip(got).collect())
}

async fn check_retr(pipelining: bool) {
    let d = Dovecot::start();
    let corpus = corpus();
    tokio::task::block_in_place(|| d.seed("alice", &messages(&corpus)));
    let raw = raw_retr_all(&d, "alice");
    assert_eq!(raw.len(), corpus.len());

    let mut s = pop3::connect(&pop3_settings(&d, "alice"))
        .await
        .expect("POP3 login");
    assert!(
        s.capabilities().pipelining(),
        "Dovecot announces PIPELINING"
    );
    s.set_pipelining(pipelining);
    assert_eq!(s.pipelining(), pipelining);
    let (list, got) = popferry_retr_all(&mut s, 8).await;
    assert_eq!(got.len(), raw.len());
    for (i, ((uidl, bytes), (raw_uidl, raw_bytes))) in got.iter().zip(&raw).enumerate() {
        let kind = corpus[i].0;
        assert_eq!(uidl, raw_uidl, "message {} ({kind})", i + 1);
        assert!(
            bytes == raw_bytes,
            "message {} ({kind}): {} bytes from popferry, {} from the raw client",
            i + 1,
            bytes.len(),
            raw_bytes.len()
        );
        assert_eq!(list[i].1, raw_bytes.len() as u64, "LIST size ({kind})");
    }
    // The dangerous kinds are in there.
    for kind in ["empty-body", "dot-lines", "big", "nul-byte"] {
        assert!(corpus.iter().any(|(k, _)| *k == kind), "{kind}");
    }

    // A second, early-stopped stream drains and the session goes on: DELE
    // everything in one flight, QUIT commits.
    let numbers: Vec<u32> = (1..=list.len() as u32).collect();
    {
        let mut stream = s.retr_pipelined(&numbers, 4);
        let (_, body) = stream.next_message().await.expect("next").expect("some");
        body.expect("ok").read_to_end(64 << 20).await.expect("body");
        stream.drain().await.expect("drain");
    }
    let mut with_bogus = numbers.clone();
    with_bogus.push(9999);
    let dele = s.dele_many(&with_bogus).await.expect("DELE");
    assert_eq!(dele.len(), with_bogus.len());
    assert!(dele[..numbers.len()].iter().all(Result::is_ok), "{dele:?}");
    assert!(dele[numbers.len()].is_err(), "no message 9999");
    s.quit().await.expect("QUIT");
    let left = tokio::task::block_in_place(|| d.pop3_uidls("alice"));
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_retr_of_the_corpus_matches_the_raw_client() {
    check_retr(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retr_with_pipelining_off_matches_the_raw_client() {
    check_retr(false).await;
}

async fn spool(bytes: &[u8]) -> SpooledMessage {
    // A small threshold so that the big message goes through a spool file.
    let mut s = Spool::new(64 * 1024);
    for chunk in bytes.chunks(10_000) {
        s.write(chunk).await.expect("spool");
    }
    s.finish().await.expect("spool")
}

/// What Dovecot gives back for what we sent (see `Fetched::bytes`: a NUL
/// shows as 0x80 when the message also has a base64 part).
fn stored_matches(sent: &[u8], stored: &[u8]) -> bool {
    stored == sent
        || (sent.contains(&0)
            && stored.len() == sent.len()
            && sent
                .iter()
                .zip(stored)
                .all(|(a, b)| a == b || (*a == 0 && *b == 0x80)))
}

async fn check_append(d: &Dovecot, user: &str, literal_plus: bool) {
    let corpus = corpus();
    let mut session = imap::connect(&imap_settings(d, user))
        .await
        .expect("IMAP login");
    assert_eq!(session.capabilities().literal_plus(), literal_plus);
    session.ensure_mailbox("Pipe").await.expect("mailbox");
    let mut msgs = Vec::new();
    for (_, m) in &corpus {
        msgs.push(spool(m).await);
    }
    assert!(msgs.iter().any(SpooledMessage::is_on_disk));

    let mut results: Vec<(usize, Result<Appended, ImapError>)> = Vec::new();
    {
        let mut pipe = session
            .append_pipeline::<usize>("Pipe", &["\\Seen".to_owned()], 8, 8 << 20)
            .expect("pipeline");
        // Without LITERAL+ the window is the same: each command line goes
        // out behind the APPENDs in flight and only its literal waits for
        // the server's "+".
        assert_eq!(pipe.window(), 8);
        for (i, m) in msgs.iter().enumerate() {
            while pipe.is_full() {
                results.push(pipe.next_result().await.expect("result").expect("some"));
            }
            let date = (i % 2 == 0).then_some("14-Nov-2023 10:00:00 +0000");
            pipe.push(i, m, date).await.expect("push");
        }
        while let Some(r) = pipe.next_result().await.expect("result") {
            results.push(r);
        }
    }
    // In order, each OK with its own APPENDUID, increasing.
    assert_eq!(results.len(), msgs.len());
    let mut last_uid = 0;
    for (i, (token, r)) in results.iter().enumerate() {
        assert_eq!(*token, i);
        let a = r
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", corpus[i].0));
        let uid = a.uid.expect("APPENDUID");
        assert!(uid > last_uid, "UIDs in push order");
        last_uid = uid;
    }
    session.logout().await.expect("logout");

    let stored = tokio::task::block_in_place(|| imap_fetch_all(d, user, "Pipe"));
    assert_eq!(stored.len(), msgs.len());
    for (i, (kind, m)) in corpus.iter().enumerate() {
        let uid = results[i].1.as_ref().ok().and_then(|a| a.uid);
        let f = stored
            .iter()
            .find(|f| Some(f.uid) == uid)
            .unwrap_or_else(|| panic!("{kind}: UID {uid:?} not in the mailbox"));
        let sent = crlf_normalise(m);
        assert_eq!(f.size, sent.len() as u64, "{kind}");
        assert!(stored_matches(&sent, &f.bytes), "{kind}: bytes differ");
        assert!(f.flags.iter().any(|x| x == "\\Seen"), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_append_of_the_corpus_lands_byte_exact_with_appenduids_in_order() {
    let d = Dovecot::start();
    check_append(&d, "dave", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_without_literal_plus_waits_for_each_literal_and_stays_exact_and_in_order() {
    // Dovecot announces exactly this list after login: no LITERAL+.
    let d = Dovecot::builder()
        .extra_config(
            "protocol imap {\n  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE UIDPLUS BINARY\n}\n",
        )
        .start();
    check_append(&d, "dave", false).await;
}
