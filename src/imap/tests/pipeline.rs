//! The APPEND pipeline against a scripted server.

use std::time::Duration;

use tokio::io::DuplexStream;

use super::super::Appended;
use super::super::error::{self, ImapError, ImapErrorKind};
use super::super::pipeline::Pipe;
use super::super::proto::command::Part;
use super::*;
use crate::spool::SpooledMessage;

type Results = Vec<(u32, Result<Appended, ImapError>)>;

async fn drain(p: &mut Pipe<'_, u32, DuplexStream>) -> Results {
    let mut out = Vec::new();
    while let Some(r) = p.next_result().await.expect("next_result") {
        out.push(r);
    }
    out
}

fn uid(r: &Result<Appended, ImapError>) -> Option<u32> {
    r.as_ref().ok().and_then(|a| a.uid)
}

#[tokio::test]
async fn pipelined_appends_are_written_ahead_and_a_no_affects_only_its_message() {
    // The server reads all three APPENDs before answering any: a client
    // that waited for a completion between them would hang here.
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" (\\Seen) {3+}"),
        ExpectBytes(b"one\r\n".to_vec()),
        Expect("pf2 APPEND \"INBOX\" (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {3+}"),
        ExpectBytes(b"two\r\n".to_vec()),
        Expect("pf3 APPEND \"INBOX\" (\\Seen) {5+}"),
        ExpectBytes(b"three\r\n".to_vec()),
        Send(
            "* 1 EXISTS\r\npf1 OK [APPENDUID 7 1] ok\r\npf2 NO [LIMIT] too big\r\n* 2 EXISTS\r\npf3 OK [APPENDUID 7 2] ok\r\n",
        ),
        // Afterwards the connection is in step for ordinary commands.
        Expect("pf4 NOOP"),
        Send("pf4 OK done\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
    let msgs = [b"one".as_slice(), b"two", b"three"].map(SpooledMessage::from_bytes);
    let results = tokio::time::timeout(Duration::from_secs(5), async {
        let mut p = Pipe::new(&mut c, "INBOX", &["\\Seen".into()], 8, 1 << 20).expect("pipe");
        assert_eq!(p.window(), 8);
        p.push(1, &msgs[0], None).await.expect("push 1");
        p.push(2, &msgs[1], Some("5-Jan-2024 10:00:00 +0100"))
            .await
            .expect("push 2");
        p.push(3, &msgs[2], None).await.expect("push 3");
        assert_eq!(p.pending(), 3);
        drain(&mut p).await
    })
    .await
    .expect("APPENDs were not pipelined");
    assert_eq!(results.len(), 3);
    assert_eq!((results[0].0, uid(&results[0].1)), (1, Some(1)));
    assert_eq!(results[1].0, 2);
    let e = results[1].1.as_ref().expect_err("NO");
    assert!(e.is_permanent_rejection(), "{e}");
    assert_eq!((results[2].0, uid(&results[2].1)), (3, Some(2)));
    let done = c
        .simple("noop", vec![Part::text("NOOP")])
        .await
        .expect("noop");
    error::check("x", done).expect("ok");
    finish(c, h).await;
}

#[tokio::test]
async fn completions_out_of_order_are_handed_back_in_push_order() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
        Expect("pf2 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"b\r\n".to_vec()),
        Send("pf2 OK [APPENDUID 9 20] ok\r\npf1 OK [APPENDUID 9 10] ok\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
    let (a, b) = (
        SpooledMessage::from_bytes(b"a"),
        SpooledMessage::from_bytes(b"b"),
    );
    let mut p = Pipe::new(&mut c, "INBOX", &[], 4, 1 << 20).expect("pipe");
    p.push(1, &a, None).await.expect("push");
    p.push(2, &b, None).await.expect("push");
    let got: Vec<(u32, Option<u32>)> = drain(&mut p)
        .await
        .iter()
        .map(|(t, r)| (*t, uid(r)))
        .collect();
    assert_eq!(got, vec![(1, Some(10)), (2, Some(20))]);
    drop(p);
    finish(c, h).await;
}

#[tokio::test]
async fn without_literal_plus_each_append_waits_for_its_continuation() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1}"),
        Send("+ go\r\n"),
        ExpectBytes(b"a\r\n".to_vec()),
        Send("pf1 OK [APPENDUID 9 1] ok\r\n"),
        Expect("pf2 APPEND \"INBOX\" {1}"),
        Send("pf2 NO [OVERQUOTA] full\r\n"),
        Expect("pf3 APPEND \"INBOX\" {1}"),
        Send("+ go\r\n"),
        ExpectBytes(b"c\r\n".to_vec()),
        Send("pf3 OK [APPENDUID 9 2] ok\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "UIDPLUS"]);
    let msgs = [b"a".as_slice(), b"b", b"c"].map(SpooledMessage::from_bytes);
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    let mut results = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        while p.is_full() {
            results.push(p.next_result().await.expect("result").expect("some"));
        }
        p.push(i as u32, m, None).await.expect("push");
    }
    results.extend(drain(&mut p).await);
    assert_eq!(uid(&results[0].1), Some(1));
    assert!(results[1].1.as_ref().is_err_and(ImapError::is_overquota));
    assert_eq!(uid(&results[2].1), Some(2));
    drop(p);
    finish(c, h).await;
}

#[tokio::test]
async fn without_literal_plus_the_next_command_line_goes_out_before_the_completion() {
    // The server answers pf1 only once pf2's command line is there, and
    // asks for pf2's literal in the same write: a client that waited for
    // pf1's OK before writing pf2 would hang here.
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1}"),
        Send("+ go\r\n"),
        ExpectBytes(b"a\r\n".to_vec()),
        Expect("pf2 APPEND \"INBOX\" {1}"),
        Send("* 1 EXISTS\r\npf1 OK [APPENDUID 9 1] ok\r\n+ go\r\n"),
        ExpectBytes(b"b\r\n".to_vec()),
        Expect("pf3 APPEND \"INBOX\" {1}"),
        // Refused before its literal, after pf2's OK.
        Send("pf2 OK [APPENDUID 9 2] ok\r\npf3 NO [OVERQUOTA] full\r\n"),
        Expect("pf4 APPEND \"INBOX\" {1}"),
        Send("+ go\r\n"),
        ExpectBytes(b"d\r\n".to_vec()),
        Send("pf4 OK [APPENDUID 9 3] ok\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "UIDPLUS"]);
    let msgs = [b"a".as_slice(), b"b", b"c", b"d"].map(SpooledMessage::from_bytes);
    let results = tokio::time::timeout(Duration::from_secs(5), async {
        let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
        let mut results = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            p.push(i as u32, m, None).await.expect("push");
            // What is known is known without reading.
            while let Some(r) = p.ready_result() {
                results.push(r);
            }
        }
        results.extend(drain(&mut p).await);
        results
    })
    .await
    .expect("the command line waited for the previous completion");
    let got: Vec<(u32, Option<u32>)> = results.iter().map(|(t, r)| (*t, uid(r))).collect();
    assert_eq!(
        got,
        vec![(0, Some(1)), (1, Some(2)), (2, None), (3, Some(3))]
    );
    assert!(results[2].1.as_ref().is_err_and(ImapError::is_overquota));
    finish(c, h).await;
}

#[tokio::test]
async fn literal_minus_pipelines_small_messages_and_syncs_large_ones() {
    let big = vec![b'x'; 5000];
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
        // A synchronizing literal goes alone: the small one's completion
        // is collected before the large one's command line is written.
        Send("pf1 OK done\r\n"),
        Expect("pf2 APPEND \"INBOX\" {5000}"),
        Send("+ go\r\n"),
        ExpectBytes([big.as_slice(), b"\r\n"].concat()),
        Send("pf2 OK done\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL-"]);
    let (a, b) = (
        SpooledMessage::from_bytes(b"a"),
        SpooledMessage::from_bytes(&big),
    );
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    p.push(1, &a, None).await.expect("push");
    p.push(2, &b, None).await.expect("push");
    let got = drain(&mut p).await;
    assert!(got.iter().all(|(_, r)| r.is_ok()) && got.len() == 2);
    drop(p);
    finish(c, h).await;
}

#[tokio::test]
async fn a_full_window_refuses_a_push_and_bytes_count() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {3+}"),
        ExpectBytes(b"abc\r\n".to_vec()),
        Send("pf1 OK ok\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
    let m = SpooledMessage::from_bytes(b"abc");
    {
        // By bytes: 3 bytes in flight reach the limit of 2.
        let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 2).expect("pipe");
        assert!(!p.is_full());
        p.push(1, &m, None).await.expect("push");
        assert!(p.is_full());
        assert!(matches!(
            p.push(2, &m, None).await,
            Err(ref e) if matches!(e.kind(), ImapErrorKind::InvalidArgument { .. })
        ));
        assert_eq!(drain(&mut p).await.len(), 1);
        assert!(!p.is_full());
    }
    assert_eq!(
        Pipe::<u32, _>::new(&mut c, "INBOX", &[], 1000, 1)
            .expect("pipe")
            .window(),
        crate::window::MAX_WINDOW
    );
    finish(c, h).await;
}

#[tokio::test]
async fn a_dropped_connection_leaves_the_unanswered_ones_unknown() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
        Expect("pf2 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"b\r\n".to_vec()),
        Expect("pf3 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"c\r\n".to_vec()),
        Send("pf1 OK [APPENDUID 3 1] ok\r\n"),
        Close,
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
    let msgs = [b"a".as_slice(), b"b", b"c"].map(SpooledMessage::from_bytes);
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    for (i, m) in msgs.iter().enumerate() {
        p.push(i as u32 + 1, m, None).await.expect("push");
    }
    let first = p.next_result().await.expect("first").expect("some");
    assert_eq!((first.0, uid(&first.1)), (1, Some(1)));
    let e = p.next_result().await.expect_err("connection lost");
    assert!(e.is_transient(), "{e}");
    let (known, unknown) = p.abandon();
    assert!(known.is_empty());
    assert_eq!(unknown, vec![2, 3]);
    // The session refuses to go on: its replies are out of step.
    assert!(c.simple("noop", vec![Part::text("NOOP")]).await.is_err());
    finish(c, h).await;
}

#[tokio::test]
async fn an_abandoned_pipeline_with_appends_in_flight_breaks_the_session() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
    let m = SpooledMessage::from_bytes(b"a");
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    p.push(7, &m, None).await.expect("push");
    drop(p);
    assert!(c.simple("noop", vec![Part::text("NOOP")]).await.is_err());
    finish(c, h).await;
}

#[tokio::test]
async fn a_completion_that_came_early_is_known_when_the_connection_fails() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
        Expect("pf2 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"b\r\n".to_vec()),
        Send("pf2 OK [APPENDUID 3 2] ok\r\n"),
        Close,
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+", "UIDPLUS"]);
    let msgs = [b"a".as_slice(), b"b"].map(SpooledMessage::from_bytes);
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    p.push(1, &msgs[0], None).await.expect("push");
    p.push(2, &msgs[1], None).await.expect("push");
    let e = p.next_result().await.expect_err("connection lost");
    assert!(e.is_transient(), "{e}");
    assert!(
        p.push(3, &msgs[0], None).await.is_err(),
        "broken: no more pushes"
    );
    let (known, unknown) = p.abandon();
    assert_eq!(known.len(), 1);
    assert_eq!((known[0].0, uid(&known[0].1)), (2, Some(2)));
    assert_eq!(unknown, vec![1]);
    assert!(c.simple("noop", vec![Part::text("NOOP")]).await.is_err());
    finish(c, h).await;
}

#[tokio::test]
async fn a_completion_for_a_tag_we_did_not_send_breaks_the_pipeline() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
        Send("zz9 OK [APPENDUID 3 2] ok\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
    let m = SpooledMessage::from_bytes(b"a");
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    p.push(1, &m, None).await.expect("push");
    let e = p.next_result().await.expect_err("foreign tag");
    assert!(
        matches!(e.kind(), ImapErrorKind::Protocol { what, .. } if what.contains("did not send")),
        "{e}"
    );
    let (known, unknown) = p.abandon();
    assert!(known.is_empty());
    assert_eq!(unknown, vec![1]);
    finish(c, h).await;
}

#[tokio::test]
async fn an_abandoned_pipeline_with_everything_answered_leaves_the_session_usable() {
    let (s, h) = fake(vec![
        Expect("pf1 APPEND \"INBOX\" {1+}"),
        ExpectBytes(b"a\r\n".to_vec()),
        Send("pf1 OK ok\r\n"),
        Expect("pf2 NOOP"),
        Send("pf2 OK done\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "LITERAL+"]);
    let m = SpooledMessage::from_bytes(b"a");
    let mut p = Pipe::new(&mut c, "INBOX", &[], 8, 1 << 20).expect("pipe");
    p.push(1, &m, None).await.expect("push");
    // Read the completion without handing it out.
    while p.pending_in_flight() > 0 {
        p.read_one_for_test().await.expect("read");
    }
    let (known, unknown) = p.abandon();
    assert_eq!(known.len(), 1);
    assert!(unknown.is_empty());
    let done = c
        .simple("noop", vec![Part::text("NOOP")])
        .await
        .expect("noop");
    assert!(done.is_ok());
    finish(c, h).await;
}
