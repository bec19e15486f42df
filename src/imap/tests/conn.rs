//! The connection and the commands built on it, against a scripted server.

use std::time::Duration;

use tokio::io::DuplexStream;

use super::super::conn::{Conn, GREETING_BUDGET};
use super::super::error::{ImapError, ImapErrorKind};
use super::super::pipeline::Pipe;
use super::super::proto::command::Part;
use super::super::{Appended, MailboxStatus};
use super::*;
use crate::spool::SpooledMessage;

/// One APPEND on its own, as the sync engine sends it: a pipeline of one.
async fn append(
    c: &mut Conn<DuplexStream>,
    mailbox: &str,
    flags: &[String],
    date: Option<&str>,
    msg: &SpooledMessage,
) -> Result<Appended, ImapError> {
    let mut p = Pipe::new(c, mailbox, flags, 1, u64::MAX)?;
    p.push((), msg, date).await?;
    let ((), result) = p.next_result().await?.expect("one result");
    result
}

#[tokio::test]
async fn append_with_literal_plus_sends_everything_at_once() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {6+}"),
        ExpectBytes(b"a\r\nb\r\n\r\n".to_vec()),
        Send("* 3 EXISTS\r\n* 1 RECENT\r\npf1 OK [APPENDUID 38505 3955] Append completed.\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
    let msg = SpooledMessage::from_bytes(b"a\nb\r\n");
    let got = append(
        &mut c,
        "INBOX",
        &["\\seen".into()],
        Some("5-Jan-2024 10:00:00 +0100"),
        &msg,
    )
    .await
    .expect("append");
    assert_eq!(
        got,
        Appended {
            uidvalidity: Some(38505),
            uid: Some(3955)
        }
    );
    finish(c, h).await;
}

#[tokio::test]
async fn append_without_literal_plus_waits_for_continuation() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"Bo&AO4-te\" {5}"),
        Send("+ OK\r\n"),
        ExpectBytes(b"hello\r\n".to_vec()),
        Send("pf1 OK Append completed.\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1"]);
    let msg = SpooledMessage::from_bytes(b"hello");
    let got = append(&mut c, "Boîte", &[], None, &msg)
        .await
        .expect("append");
    assert_eq!(got, Appended::default());
    finish(c, h).await;
}

#[tokio::test]
async fn refusal_before_the_literal_keeps_the_session_usable() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {5}"),
        Send("pf1 NO [TOOBIG] Message too big\r\n"),
        Expect("pf2 APPEND \"INBOX\" {2}"),
        Send("+ go\r\n"),
        ExpectBytes(b"ok\r\n".to_vec()),
        Send("pf2 OK done\r\n"),
    ]);
    let mut c = conn(s, &[]);
    let err = append(
        &mut c,
        "INBOX",
        &[],
        None,
        &SpooledMessage::from_bytes(b"hello"),
    )
    .await
    .expect_err("refused");
    assert_eq!(err.code(), Some("TOOBIG"));
    assert!(err.is_permanent_rejection() && !err.needs_reconnect());
    append(
        &mut c,
        "INBOX",
        &[],
        None,
        &SpooledMessage::from_bytes(b"ok"),
    )
    .await
    .expect("second append");
    finish(c, h).await;
}

#[tokio::test]
async fn nul_message_goes_as_literal8_when_binary_is_offered() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" ~{3+}"),
        ExpectBytes(b"a\0b\r\n".to_vec()),
        Send("pf1 OK [APPENDUID 1 2] done\r\n"),
        Expect("pf2 APPEND \"INBOX\" {3+}"),
        ExpectBytes(b"a\0b\r\n".to_vec()),
        Send("pf2 NO Invalid NUL byte\r\n"),
    ]);
    let mut c = conn(s, &["LITERAL+", "BINARY"]);
    let msg = SpooledMessage::from_bytes(b"a\0b");
    assert!(msg.has_nul());
    let got = append(&mut c, "INBOX", &[], None, &msg)
        .await
        .expect("append");
    assert_eq!(got.uid, Some(2));
    // Without BINARY: a plain literal, and the NO is an ordinary rejection.
    c.caps = Capabilities::from_names(["LITERAL+"]);
    let err = append(&mut c, "INBOX", &[], None, &msg)
        .await
        .expect_err("no");
    assert!(err.is_permanent_rejection());
    finish(c, h).await;
}

#[tokio::test]
async fn bad_arguments_are_refused_before_anything_is_sent() {
    let (s, h) = fake(vec![]);
    let mut c = conn(s, &["LITERAL+"]);
    let msg = SpooledMessage::from_bytes(b"x");
    let e = append(&mut c, "INBOX", &["\\Recent".into()], None, &msg)
        .await
        .expect_err("flag");
    assert!(matches!(e.kind(), ImapErrorKind::InvalidArgument { .. }));
    let e = append(&mut c, "INBOX", &[], Some("yesterday"), &msg)
        .await
        .expect_err("date");
    assert!(matches!(e.kind(), ImapErrorKind::InvalidArgument { .. }));
    finish(c, h).await;
}

#[tokio::test]
async fn bye_then_close_is_transient_and_breaks_the_session() {
    let (s, h) = fake(vec![
        Expect("pf1 STATUS \"INBOX\" (MESSAGES UIDVALIDITY)"),
        Send("* BYE Server shutting down.\r\n"),
        Close,
    ]);
    let mut c = conn(s, &[]);
    let e = c.status("INBOX").await.expect_err("bye");
    assert!(
        matches!(e.kind(), ImapErrorKind::Bye { text, .. } if text == "Server shutting down."),
        "{e}"
    );
    assert!(e.is_transient() && e.needs_reconnect());
    let e = c.status("INBOX").await.expect_err("broken");
    assert!(matches!(e.kind(), ImapErrorKind::Protocol { .. }), "{e}");
    finish(c, h).await;
}

#[tokio::test]
async fn a_reply_that_panicked_the_old_parser_is_a_protocol_error() {
    // imap-proto 0.17 sliced inside a character after a response code.
    let (s, h) = fake(vec![
        Expect("pf1 STATUS \"INBOX\" (MESSAGES UIDVALIDITY)"),
        Send("* OK [ALERT]\u{e9} hello\r\npf1 OK done\r\n"),
        Close,
    ]);
    let mut c = conn(s, &[]);
    let e = c.status("INBOX").await.expect_err("unparsable");
    assert!(
        matches!(e.kind(), ImapErrorKind::Protocol { what, .. } if what.contains("unparsable response")),
        "{e}"
    );
    let e = c.status("INBOX").await.expect_err("broken");
    assert!(matches!(e.kind(), ImapErrorKind::Protocol { .. }), "{e}");
    drop(c);
    let _ = h.await;
}

#[tokio::test]
async fn oversized_greeting_is_refused() {
    let (s, h) = fake(vec![Send("* OK "), Flood(GREETING_BUDGET as usize * 2)]);
    let mut c = conn(s, &[]);
    let e = c.greeting().await.err().expect("too large");
    assert!(
        matches!(e.kind(), ImapErrorKind::Protocol { what, .. } if what.contains("too large")),
        "{e}"
    );
    drop(c);
    h.abort();
}

#[tokio::test]
async fn silent_server_times_out() {
    let (s, h) = fake(vec![Expect("pf1 CAPABILITY")]);
    let mut c = Conn::new(s, "imap.test:143".into(), Duration::from_millis(100));
    let e = c.capability().await.expect_err("timeout");
    assert!(matches!(e.kind(), ImapErrorKind::Timeout { .. }), "{e}");
    assert!(e.is_transient() && e.needs_reconnect());
    finish(c, h).await;
}

#[tokio::test]
async fn a_reply_cut_short_times_out() {
    let (s, h) = fake(vec![
        Expect("pf1 CAPABILITY"),
        Send("* CAPABILITY IMAP4rev1"),
    ]);
    let mut c = Conn::new(s, "imap.test:143".into(), Duration::from_millis(100));
    let e = c.capability().await.expect_err("timeout");
    assert!(
        matches!(e.kind(), ImapErrorKind::Timeout { what, .. } if *what == "asking for capabilities"),
        "{e}"
    );
    finish(c, h).await;
}

#[tokio::test]
async fn a_server_that_trickles_is_cut_off_by_the_read_budget_not_waited_for() {
    // Every byte arrives in time, but the response never ends: the budget
    // ends it (a per-read deadline alone would wait for ever).
    let (s, h) = fake(vec![
        Expect("pf1 CAPABILITY"),
        Send("* CAPABILITY "),
        Flood(2 << 20),
    ]);
    let mut c = conn(s, &[]);
    let e = c.capability().await.expect_err("too large");
    assert!(
        matches!(e.kind(), ImapErrorKind::Protocol { what, .. } if what.contains("too large")),
        "{e}"
    );
    drop(c);
    h.abort();
}

#[tokio::test]
async fn greeting_capabilities_and_preauth() {
    let (s, h) = fake(vec![Send(
        "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.\r\n",
    )]);
    let mut c = conn(s, &[]);
    let g = c.greeting().await.expect("greeting");
    assert!(!g.preauth);
    assert!(g.caps.is_some_and(|c| c.starttls() && c.login_disabled()));
    finish(c, h).await;

    let (s, h) = fake(vec![Send("* PREAUTH ready\r\n")]);
    let mut c = conn(s, &[]);
    assert!(c.greeting().await.expect("greeting").preauth);
    finish(c, h).await;

    let (s, h) = fake(vec![Send("* BYE Too many connections\r\n"), Close]);
    let mut c = conn(s, &[]);
    let e = c.greeting().await.err().expect("bye");
    assert!(
        matches!(e.kind(), ImapErrorKind::Bye { text, .. } if text == "Too many connections"),
        "{e}"
    );
    finish(c, h).await;

    let (s, h) = fake(vec![Send("pf1 OK not a greeting\r\n")]);
    let mut c = conn(s, &[]);
    let e = c.greeting().await.err().expect("not a greeting");
    assert!(
        matches!(e.kind(), ImapErrorKind::Protocol { what, .. } if what.contains("did not send an IMAP greeting")),
        "{e}"
    );
    finish(c, h).await;
}

#[tokio::test]
async fn login_sends_an_unusual_password_as_a_literal_and_refreshes_caps() {
    let (s, h) = fake(vec![
        Expect("pf1 LOGIN \"alice\" {6}"),
        Send("+ OK\r\n"),
        ExpectBytes("pä\"ss\r\n".as_bytes().to_vec()),
        Send("pf1 OK Logged in\r\n"),
        Expect("pf2 CAPABILITY"),
        Send("* CAPABILITY IMAP4rev1 UIDPLUS BINARY\r\npf2 OK done\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "AUTH=PLAIN"]);
    c.authenticate(&settings(ImapAuth::Login, "pä\"ss"), false, None)
        .await
        .expect("login");
    assert!(c.caps.binary() && c.caps.uidplus());
    finish(c, h).await;
}

#[tokio::test]
async fn auto_uses_authenticate_plain_with_or_without_sasl_ir() {
    // base64("\0alice\0secret")
    let (s, h) = fake(vec![
        Expect("pf1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA=="),
        Send("pf1 OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in\r\n"),
    ]);
    let mut c = conn(s, &["AUTH=PLAIN", "SASL-IR"]);
    c.authenticate(&settings(ImapAuth::Auto, "secret"), true, None)
        .await
        .expect("auth");
    assert!(c.caps.literal_plus());
    finish(c, h).await;

    let (s, h) = fake(vec![
        Expect("pf1 AUTHENTICATE PLAIN"),
        Send("+ \r\n"),
        Expect("AGFsaWNlAHNlY3JldA=="),
        Send("pf1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ]);
    let mut c = conn(s, &["AUTH=PLAIN"]);
    let e = c
        .authenticate(&settings(ImapAuth::Auto, "secret"), true, None)
        .await
        .expect_err("refused");
    assert!(
        matches!(e.kind(), ImapErrorKind::Auth { text, .. } if text.contains("AUTHENTICATIONFAILED")),
        "{e}"
    );
    assert!(!e.is_transient());
    assert!(!e.to_string().contains("secret") && !e.to_string().contains("AGFsaWNl"));
    finish(c, h).await;
}

#[tokio::test]
async fn a_second_plain_challenge_is_cancelled() {
    let (s, h) = fake(vec![
        Expect("pf1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA=="),
        Send("+\r\n"),
        Expect("*"),
        Send("pf1 BAD Authentication cancelled\r\n"),
    ]);
    let mut c = conn(s, &["AUTH=PLAIN", "SASL-IR"]);
    let e = c
        .authenticate(&settings(ImapAuth::Plain, "secret"), true, None)
        .await
        .expect_err("cancelled");
    assert!(matches!(e.kind(), ImapErrorKind::Auth { .. }), "{e}");
    finish(c, h).await;
}

#[tokio::test]
async fn login_refusals() {
    let (s, h) = fake(vec![]);
    let mut c = conn(s, &["LOGINDISABLED"]);
    let e = c
        .authenticate(&settings(ImapAuth::Auto, "secret"), true, None)
        .await
        .expect_err("disabled");
    assert!(matches!(e.kind(), ImapErrorKind::Auth { .. }), "{e}");
    let mut plain = settings(ImapAuth::Login, "secret");
    plain.allow_plaintext_password = false;
    let e = c
        .authenticate(&plain, false, None)
        .await
        .expect_err("plaintext");
    assert!(matches!(e.kind(), ImapErrorKind::PlaintextRefused), "{e}");
    finish(c, h).await;

    // A temporary refusal stays transient rather than "bad password".
    let (s, h) = fake(vec![
        Expect("pf1 LOGIN \"alice\" \"secret\""),
        Send("pf1 NO [UNAVAILABLE] Temporary authentication failure.\r\n"),
    ]);
    let mut c = conn(s, &[]);
    let e = c
        .authenticate(&settings(ImapAuth::Auto, "secret"), true, None)
        .await
        .expect_err("unavailable");
    assert!(e.is_transient(), "{e}");
    finish(c, h).await;
}

#[tokio::test]
async fn ensure_mailbox_creates_a_missing_one() {
    let (s, h) = fake(vec![
        Expect("pf1 STATUS \"Archive/POP\" (MESSAGES UIDVALIDITY)"),
        Send("pf1 NO [NONEXISTENT] Mailbox doesn't exist: Archive/POP\r\n"),
        Expect("pf2 CREATE \"Archive/POP\""),
        Send("pf2 OK Create completed.\r\n"),
        Expect("pf3 STATUS \"Archive/POP\" (MESSAGES UIDVALIDITY)"),
        Send("* STATUS Archive/POP (MESSAGES 0 UIDVALIDITY 1700000000)\r\npf3 OK done\r\n"),
    ]);
    let mut c = conn(s, &[]);
    let st = c.ensure_mailbox("Archive/POP").await.expect("ensure");
    assert_eq!(
        st,
        MailboxStatus {
            uidvalidity: Some(1_700_000_000),
            exists: 0
        }
    );
    finish(c, h).await;
}

#[tokio::test]
async fn find_message_searches_then_checks_sizes() {
    let (s, h) = fake(vec![
        Expect("pf1 EXAMINE \"INBOX\""),
        Send(
            "* 3 EXISTS\r\n* OK [UIDVALIDITY 9] UIDs valid\r\npf1 OK [READ-ONLY] Examine completed\r\n",
        ),
        Expect("pf2 UID SEARCH HEADER Message-ID \"<a@b>\""),
        Send("* SEARCH 4 7\r\npf2 OK Search completed\r\n"),
        Expect("pf3 UID FETCH 7,4 (UID RFC822.SIZE)"),
        Send(
            "* 1 FETCH (UID 4 RFC822.SIZE 100)\r\n* 2 FETCH (UID 7 RFC822.SIZE 120)\r\npf3 OK done\r\n",
        ),
        Expect("pf4 EXAMINE \"INBOX\""),
        Send("pf4 OK done\r\n"),
        Expect("pf5 UID SEARCH CHARSET UTF-8 HEADER Message-ID {7}"),
        Send("+ go\r\n"),
        ExpectBytes("<ü\"@b>\r\n".as_bytes().to_vec()),
        Send("* SEARCH\r\npf5 OK done\r\n"),
        Expect("pf6 EXAMINE \"Gone\""),
        Send("pf6 NO [NONEXISTENT] Mailbox doesn't exist: Gone\r\n"),
        Expect("pf7 EXAMINE \"Gone\""),
        Send("pf7 NO Mailbox doesn't exist: Gone\r\n"),
        Expect("pf8 LIST \"\" \"Gone\""),
        Send("* LIST (\\HasNoChildren) \"/\" Gone2\r\npf8 OK done\r\n"),
        Expect("pf9 EXAMINE \"Locked\""),
        Send("pf9 NO Permission denied\r\n"),
        Expect("pf10 LIST \"\" \"Locked\""),
        Send("* LIST (\\HasNoChildren) \"/\" Locked\r\npf10 OK done\r\n"),
    ]);
    let mut c = conn(s, &[]);
    assert_eq!(
        c.find_message("INBOX", "<a@b>", 100).await.expect("find"),
        vec![4]
    );
    assert_eq!(
        c.find_message("INBOX", "<ü\"@b>", 100).await.expect("find"),
        Vec::<u32>::new()
    );
    assert_eq!(
        c.find_message("Gone", "<a@b>", 1).await.expect("find"),
        Vec::<u32>::new()
    );
    assert_eq!(
        c.find_message("Gone", "<a@b>", 1).await.expect("find"),
        Vec::<u32>::new()
    );
    let e = c
        .find_message("Locked", "<a@b>", 1)
        .await
        .expect_err("exists but refused");
    assert!(matches!(e.kind(), ImapErrorKind::No { .. }), "{e}");
    assert!(matches!(
        c.find_message("INBOX", " ", 1).await,
        Err(ref e) if matches!(e.kind(), ImapErrorKind::InvalidArgument { .. })
    ));
    finish(c, h).await;
}

#[tokio::test]
async fn find_by_header_and_content_digest_read_literals() {
    use sha2::{Digest, Sha256};
    let header = b"Subject: x\r\n\r\n";
    let digest: [u8; 32] = Sha256::digest(header).into();
    let (s, h) = fake(vec![
        Expect("pf1 EXAMINE \"INBOX\""),
        Send("pf1 OK done\r\n"),
        Expect("pf2 UID SEARCH LARGER 19 SMALLER 21"),
        Send("* SEARCH 3 5\r\npf2 OK done\r\n"),
        Expect("pf3 UID FETCH 5,3 (UID BODY.PEEK[HEADER])"),
        Send(
            "* 1 FETCH (UID 3 BODY[HEADER] {14}\r\nSubject: x\r\n\r\n)\r\n* 2 FETCH (UID 5 BODY[HEADER] {14}\r\nSubject: y\r\n\r\n)\r\npf3 OK done\r\n",
        ),
        Expect("pf4 UID FETCH 3 (UID BODY.PEEK[]<0.20>)"),
        Send("* 1 FETCH (UID 3 BODY[]<0> {20}\r\nSubject: x\r\n\r\nbody\r\n)\r\npf4 OK done\r\n"),
    ]);
    let mut c = conn(s, &[]);
    assert_eq!(
        c.find_by_header("INBOX", digest, 20).await.expect("find"),
        vec![3]
    );
    let want: [u8; 32] = Sha256::digest(b"Subject: x\r\n\r\nbody\r\n").into();
    assert_eq!(c.content_sha256(3, 20).await.expect("digest"), Some(want));
    finish(c, h).await;
}

#[tokio::test]
async fn unparsable_reply_is_an_error() {
    let (s, h) = fake(vec![Expect("pf1 CAPABILITY"), Send("pf1 ((( garbage\r\n")]);
    let mut c = conn(s, &[]);
    let e = c.capability().await.expect_err("garbage");
    assert!(
        matches!(
            e.kind(),
            ImapErrorKind::Protocol { .. } | ImapErrorKind::Bad { .. }
        ),
        "{e}"
    );
    finish(c, h).await;
}

#[tokio::test]
async fn logout_accepts_a_server_that_hangs_up() {
    let (s, h) = fake(vec![
        Expect("pf1 LOGOUT"),
        Send("* BYE Logging out\r\n"),
        Close,
    ]);
    let mut c = conn(s, &[]);
    c.logout().await.expect("logout");
    finish(c, h).await;
    let (s, h) = fake(vec![
        Expect("pf1 NOOP"),
        Send("pf1 OK done\r\n"),
        Expect("pf2 LOGOUT"),
        Send("* BYE bye\r\npf2 OK Logout completed.\r\n"),
    ]);
    let mut c = conn(s, &[]);
    let done = c.simple("noop", vec![Part::text("NOOP")]).await.unwrap();
    assert!(done.is_ok());
    c.logout().await.expect("logout");
    finish(c, h).await;
}
