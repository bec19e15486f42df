//! The TRANSACTION state: listings, messages streamed exactly, the poison
//! rule, deadlines, and replies a hostile server might send.

use super::*;

#[tokio::test]
async fn user_pass_login_and_transaction() {
    let message = b"Subject: hi\r\n\r\n..\r\n..leading dot\r\nend\r\n.\r\n";
    let (mut sess, server) = session(with(
        user_login(),
        vec![
            c("STAT"),
            s("+OK 2 320\r\n"),
            c("LIST"),
            s("+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"),
            c("UIDL"),
            s("+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"),
            c("RETR 1"),
            s(b"+OK 120 octets\r\n"),
            s(message),
            c("TOP 2 0"),
            s("+OK\r\nSubject: two\r\n\r\n.\r\n"),
            c("QUIT"),
            s("+OK bye\r\n"),
            Step::Eof,
        ],
    ))
    .await;
    assert!(!sess.is_tls());
    let caps = sess.capabilities();
    assert!(
        caps.announced()
            && caps.has("TOP")
            && caps.has("UIDL")
            && caps.pipelining()
            && caps.has("RESP-CODES")
    );
    assert_eq!(sess.stat().await.unwrap(), (2, 320));
    assert_eq!(sess.list().await.unwrap(), vec![(1, 120), (2, 200)]);
    assert_eq!(
        sess.uidl().await.unwrap(),
        Some(vec![
            (1, "whqtswO00WBw418f9t5JxYwZ".to_owned()),
            (2, "QhdPYR:00WBw1Ph7x7".to_owned())
        ])
    );
    let body = sess.retr(1).await.unwrap();
    assert_eq!(
        body.read_to_end(1 << 20).await.unwrap(),
        b"Subject: hi\r\n\r\n.\r\n.leading dot\r\nend\r\n"
    );
    let top = sess.top(2, 0).await.unwrap();
    assert_eq!(
        top.read_to_end(1024).await.unwrap(),
        b"Subject: two\r\n\r\n"
    );
    sess.quit().await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn uidl_unsupported_is_none_and_session_goes_on() {
    let (mut sess, server) = session(with(
        user_login(),
        vec![
            c("UIDL"),
            s("-ERR unknown command\r\n"),
            c("STAT"),
            s("+OK 0 0\r\n"),
        ],
    ))
    .await;
    assert_eq!(sess.uidl().await.unwrap(), None);
    assert_eq!(sess.stat().await.unwrap(), (0, 0));
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn malformed_listing_line_is_an_error_not_a_panic() {
    let (mut sess, server) = session(with(
        user_login(),
        vec![
            c("UIDL"),
            s("+OK\r\n1 good\r\n2\r\nthree x\r\n.\r\n"),
            c("LIST"),
            s("+OK\r\n1 -20\r\n.\r\n"),
            c("STAT"),
            s("+OK 0 0\r\n"),
        ],
    ))
    .await;
    let e = sess.uidl().await.unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::Protocol { .. }), "{e:?}");
    let e = sess.list().await.unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::Protocol { .. }), "{e:?}");
    // The listing was read to its end: the session is still in step.
    assert_eq!(sess.stat().await.unwrap(), (0, 0));
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn retr_decodes_exactly_however_the_bytes_arrive() {
    let wire: &[u8] = b"+OK\r\n\xff\xfe binary\r\n..\r\n...\r\n.x\r\nlf only\n\r\n.\r\n";
    let want: &[u8] = b"\xff\xfe binary\r\n.\r\n..\r\nx\r\nlf only\n\r\n";
    let (mut sess, server) = session(with(
        user_login(),
        vec![
            c("RETR 1"),
            Step::Trickle(wire.to_vec()),
            c("RETR 2"),
            // An empty message, with the next reply in the same write.
            s(b"+OK\r\n.\r\n"),
            c("RETR 3"),
            s(b"+OK\r\nx\r\n.\r\n"),
            c("STAT"),
            s(b"+OK 0 0\r\n"),
        ],
    ))
    .await;
    let got = sess
        .retr(1)
        .await
        .unwrap()
        .read_to_end(1 << 20)
        .await
        .unwrap();
    assert_eq!(got, want);
    let got = sess
        .retr(2)
        .await
        .unwrap()
        .read_to_end(1 << 20)
        .await
        .unwrap();
    assert_eq!(got, b"");
    let got = sess
        .retr(3)
        .await
        .unwrap()
        .read_to_end(1 << 20)
        .await
        .unwrap();
    assert_eq!(got, b"x\r\n");
    assert_eq!(sess.stat().await.unwrap(), (0, 0));
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn big_message_is_streamed_in_bounded_chunks() {
    // 10 MB of base64-like lines plus one 6,000-character line.
    let mut body = Vec::new();
    body.extend_from_slice(b"Subject: big\r\n\r\n");
    body.extend(std::iter::repeat_n(b'Q', 6000));
    body.extend_from_slice(b"\r\n");
    while body.len() < 10_000_000 {
        body.extend(std::iter::repeat_n(b'A', 76));
        body.extend_from_slice(b"\r\n");
    }
    let mut wire = b"+OK\r\n".to_vec();
    wire.extend_from_slice(&body);
    wire.extend_from_slice(b".\r\n");
    let (mut sess, server) = session(with(
        user_login(),
        vec![c("RETR 1"), Step::Send(wire), c("QUIT"), s("+OK\r\n")],
    ))
    .await;
    let mut b = sess.retr(1).await.unwrap();
    let mut total = 0usize;
    let mut largest = 0usize;
    let mut hasher = sha2::Sha256::default();
    while let Some(chunk) = b.next_chunk().await.unwrap() {
        use sha2::Digest as _;
        total += chunk.len();
        largest = largest.max(chunk.len());
        hasher.update(chunk);
    }
    assert!(b.next_chunk().await.unwrap().is_none());
    drop(b);
    use sha2::Digest as _;
    assert_eq!(total, body.len());
    assert_eq!(hasher.finalize(), sha2::Sha256::digest(&body));
    assert!(largest <= 64 * 1024, "{largest}");
    sess.quit().await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropped_body_poisons_the_session() {
    let (mut sess, _server) = session(with(
        user_login(),
        vec![
            c("RETR 1"),
            s(b"+OK\r\nline one\r\n"),
            // The rest of the message is still to come when the body is dropped.
            Step::Hang,
        ],
    ))
    .await;
    {
        let mut body = sess.retr(1).await.unwrap();
        assert_eq!(body.next_chunk().await.unwrap(), Some(&b"line one\r\n"[..]));
    }
    assert!(sess.is_poisoned());
    let e = sess.stat().await.unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::Poisoned), "{e:?}");
    assert!(matches!(
        sess.dele_many(&[1]).await.as_ref().map_err(Pop3Error::kind),
        Err(Pop3ErrorKind::Poisoned)
    ));
    // QUIT is not even sent: the deletions must not be committed.
    assert!(matches!(
        sess.quit().await.as_ref().map_err(Pop3Error::kind),
        Err(Pop3ErrorKind::Poisoned)
    ));
}

#[tokio::test]
async fn read_to_end_over_limit_fails_and_poisons() {
    let (mut sess, _server) = session(with(
        user_login(),
        vec![
            c("TOP 1 0"),
            s(b"+OK\r\n0123456789\r\n.\r\n"),
            c("TOP 2 0"),
            s(b"+OK\r\n0123456789\r\n"),
            Step::Hang,
        ],
    ))
    .await;
    // Over the limit but read to its end: the session stays in step.
    let e = sess
        .top(1, 0)
        .await
        .unwrap()
        .read_to_end(5)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), Pop3ErrorKind::TooLarge { limit: 5, .. }),
        "{e:?}"
    );
    assert!(!sess.is_poisoned());
    // Over the limit with more to come: abandoned, so poisoned.
    let e = sess
        .top(2, 0)
        .await
        .unwrap()
        .read_to_end(5)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), Pop3ErrorKind::TooLarge { limit: 5, .. }),
        "{e:?}"
    );
    assert!(sess.is_poisoned());
}

#[tokio::test]
async fn truncated_message_is_an_error() {
    let (mut sess, _server) = session(with(
        user_login(),
        vec![c("RETR 1"), s(b"+OK\r\nsome data\r\n.")],
    ))
    .await;
    let e = sess
        .retr(1)
        .await
        .unwrap()
        .read_to_end(1024)
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::Closed { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(sess.is_poisoned());
}

#[tokio::test]
async fn silent_server_times_out() {
    let (io, _server) = scripted(vec![Step::Hang]);
    let mut set = settings(Pop3Auth::Auto, true);
    set.endpoint.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let e = match Session::establish(io, false, &set).await {
        Ok(_) => panic!("must time out"),
        Err(e) => e,
    };
    assert!(matches!(e.kind(), Pop3ErrorKind::Timeout { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("pop.test:110"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn silent_server_mid_message_times_out() {
    let (mut sess, _server) = session(with(
        user_login(),
        vec![c("RETR 1"), s(b"+OK\r\npartial"), Step::Hang],
    ))
    .await;
    // Shorten the deadline now that we are logged in.
    sess.set_timeout_for_tests(Duration::from_millis(200));
    let mut body = sess.retr(1).await.unwrap();
    assert_eq!(body.next_chunk().await.unwrap(), Some(&b"partial"[..]));
    let e = body.next_chunk().await.unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::Timeout { .. }), "{e:?}");
    drop(body);
    assert!(matches!(
        sess.stat().await.as_ref().map_err(Pop3Error::kind),
        Err(Pop3ErrorKind::Poisoned)
    ));
}

#[tokio::test]
async fn overlong_status_line_is_a_protocol_error() {
    let mut huge = b"+OK ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 4 * 1024 * 1024));
    huge.extend_from_slice(b"\r\n");
    let (io, _server) = scripted(vec![Step::Send(huge)]);
    let e = match Session::establish(io, false, &settings(Pop3Auth::Auto, true)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e.kind(), Pop3ErrorKind::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("longer than"), "{e}");
}

#[tokio::test]
async fn garbage_instead_of_status_is_a_protocol_error() {
    let (io, _server) = scripted(vec![s(b"* OK IMAP4rev1 ready\r\n")]);
    let e = match Session::establish(io, false, &settings(Pop3Auth::Auto, true)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e.kind(), Pop3ErrorKind::Protocol { .. }), "{e:?}");
}

#[tokio::test]
async fn quit_refused_is_an_error() {
    let (sess, server) = session(with(
        user_login(),
        vec![c("QUIT"), s("-ERR some deleted messages not removed\r\n")],
    ))
    .await;
    let e = sess.quit().await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            Pop3ErrorKind::Server {
                command: "QUIT",
                ..
            }
        ),
        "{e:?}"
    );
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn uidl_busy_is_not_mistaken_for_unsupported() {
    let (mut sess, _server) = session(with(
        user_login(),
        vec![c("UIDL"), s("-ERR [SYS/TEMP] storage unavailable\r\n")],
    ))
    .await;
    let e = sess.uidl().await.unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::SysTemp { .. }), "{e:?}");
}

#[tokio::test]
async fn uidl_entries_keep_bad_ids_and_refusals_apart() {
    let long = "x".repeat(71);
    let (mut sess, server) = session(with(
        user_login(),
        vec![
            c("UIDL"),
            s(format!(
                "+OK\r\n1 good\r\n2 {long}\r\n3 has space\r\n4 ok\r\n.\r\n"
            )),
            c("UIDL"),
            s("-ERR try later\r\n"),
            c("UIDL"),
            s("-ERR [SYS/TEMP] storage\r\n"),
            c("STAT"),
            s("+OK 0 0\r\n"),
        ],
    ))
    .await;
    let UidlReply::Listed { ids, invalid } = sess.uidl_entries().await.unwrap() else {
        panic!("a listing")
    };
    assert_eq!(ids, vec![(1, "good".to_owned()), (4, "ok".to_owned())]);
    assert_eq!(
        invalid.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(matches!(
        sess.uidl_entries().await.unwrap(),
        UidlReply::Refused { text } if text == "try later"
    ));
    let e = sess.uidl_entries().await.unwrap_err();
    assert!(matches!(e.kind(), Pop3ErrorKind::SysTemp { .. }), "{e:?}");
    assert_eq!(sess.stat().await.unwrap(), (0, 0));
    server.await.unwrap().unwrap();
}

/// RFC 6856: UTF8 goes in the AUTHORIZATION state, before the login, and
/// only where CAPA lists it.
fn utf8_login(reply: &str) -> Vec<Step> {
    vec![
        s("+OK POP3 ready\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\nUIDL\r\nUTF8 USER\r\n.\r\n"),
        c("UTF8"),
        s(reply),
        c("USER me"),
        s("+OK\r\n"),
        c(format!("PASS {PASSWORD}")),
        s("+OK Logged in.\r\n"),
    ]
}

#[tokio::test]
async fn utf8_is_sent_before_the_login_where_announced() {
    let (sess, server) = session(utf8_login("+OK UTF8 enabled\r\n")).await;
    assert!(sess.utf8());
    server.await.unwrap().unwrap();
    // A plain refusal: logged in all the same, without UTF-8 mode.
    let (sess, server) = session(utf8_login("-ERR no\r\n")).await;
    assert!(!sess.utf8());
    server.await.unwrap().unwrap();
    // Not announced: not sent (user_login's script would fail on it).
    let (sess, server) = session(user_login()).await;
    assert!(!sess.utf8());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_utf8_refusal_with_a_code_is_that_error() {
    let steps = utf8_login("-ERR [SYS/TEMP] later\r\n");
    let (io, _server) = scripted(steps);
    let e = Session::establish(io, false, &settings(Pop3Auth::Auto, true))
        .await
        .err()
        .unwrap();
    assert!(matches!(e.kind(), Pop3ErrorKind::SysTemp { .. }), "{e:?}");
}

/// The throughput floor: each byte comes within the timeout, but the reply
/// as a whole gets the timeout plus bytes / MIN_RATE, then fails (and the
/// session is poisoned). A reply that keeps the floor is not cut.
#[tokio::test(start_paused = true)]
async fn a_trickling_reply_is_cut_by_the_floor() {
    let mut body = b"+OK\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'a', 5000));
    body.extend_from_slice(b"\r\n.\r\n");
    let (mut sess, _server) = session(with(
        user_login(),
        vec![c("RETR 1"), Step::Slowly(body, Duration::from_secs(4))],
    ))
    .await;
    let started = tokio::time::Instant::now();
    let e = match sess.retr(1).await {
        Ok(b) => b.read_to_end(1 << 20).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e.kind(), Pop3ErrorKind::TooSlow { .. }), "{e:?}");
    assert!(e.is_transient());
    // The timeout is 5s: cut after about that, not after 5000 * 4s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(sess.is_poisoned());
}

#[tokio::test(start_paused = true)]
async fn a_reply_that_keeps_the_floor_is_not_cut() {
    // 64 KiB in 2 KiB pieces every 100 ms: 20 KiB/s, above the floor, and
    // 3.2 s in all (under the 5 s timeout anyway for the first bytes).
    let mut steps = with(user_login(), vec![c("RETR 1"), s("+OK\r\n")]);
    for _ in 0..32 {
        steps.push(Step::Slowly(vec![b'b'; 1], Duration::from_millis(100)));
        steps.push(s(vec![b'b'; 2047]));
    }
    steps.push(s("\r\n.\r\n"));
    let (mut sess, _server) = session(steps).await;
    let body = sess.retr(1).await.unwrap();
    let got = body.read_to_end(1 << 20).await.unwrap();
    assert_eq!(got.len(), 64 * 1024 + 2);
}
