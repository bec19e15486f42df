//! Scripted bytes on a gated in-memory stream: each chunk of server
//! output is released only once the client has written a given number of
//! command lines, and the stream records how many lines had been written
//! when each chunk was released. That proves both the decoding (replies
//! back to back, split anywhere) and the pipelining (how many commands
//! were out before a reply was read), or the lack of it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::super::{Pop3Error, Pop3ErrorKind, Session};
use crate::config::{Pop3Auth, ServerSettings};
use crate::net::{Endpoint, TlsMode};
use crate::window::MAX_WINDOW;

#[derive(Default)]
struct Shared {
    /// (command lines that must have been written, bytes)
    reads: VecDeque<(usize, Vec<u8>)>,
    written: Vec<u8>,
    /// Separate write calls (to see batching).
    writes: Vec<Vec<u8>>,
    /// Lines written when each gated chunk was first released.
    released_at: Vec<usize>,
    waker: Option<Waker>,
}

#[derive(Clone)]
struct Gated(Arc<Mutex<Shared>>);

impl Gated {
    fn lines(s: &Shared) -> usize {
        s.written.iter().filter(|&&b| b == b'\n').count()
    }
    fn writes(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.writes
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }
    fn released_at(&self) -> Vec<usize> {
        self.0.lock().unwrap().released_at.clone()
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.0.lock().unwrap();
        let lines = Gated::lines(&s);
        let Some((gate, chunk)) = s.reads.pop_front() else {
            return Poll::Ready(Ok(())); // EOF
        };
        if gate > lines {
            s.reads.push_front((gate, chunk));
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // A gate of 0 marks the unread rest of a chunk already released.
        if gate != 0 {
            s.released_at.push(lines);
        }
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        if n < chunk.len() {
            s.reads.push_front((0, chunk[n..].to_vec()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.lock().unwrap();
        s.written.extend_from_slice(buf);
        s.writes.push(buf.to_vec());
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn settings() -> ServerSettings<Pop3Auth> {
    ServerSettings {
        endpoint: Endpoint {
            host: "pop.test".into(),
            port: 110,
            tls: TlsMode::None,
            ca_file: None,
            tls_fingerprint: None,
            timeout: Duration::from_secs(2),
        },
        username: "me".into(),
        password: "pw".into(),
        auth: Pop3Auth::User,
        allow_plaintext_password: true,
        oauth2: None,
    }
}

const LOGIN_LINES: usize = 3; // CAPA, USER, PASS

/// A logged-in session whose server then sends `after` (gate, bytes).
async fn session(pipelining: bool, after: Vec<(usize, Vec<u8>)>) -> (Session<Gated>, Gated) {
    let capa = if pipelining {
        "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n"
    } else {
        "+OK\r\nUSER\r\nUIDL\r\n.\r\n"
    };
    let mut reads: VecDeque<(usize, Vec<u8>)> = VecDeque::from(vec![
        (0, b"+OK ready\r\n".to_vec()),
        (1, capa.as_bytes().to_vec()),
        (2, b"+OK\r\n".to_vec()),
        (3, b"+OK logged in\r\n".to_vec()),
    ]);
    // An empty chunk would read as end of stream.
    reads.extend(after.into_iter().filter(|(_, b)| !b.is_empty()));
    let io = Gated(Arc::new(Mutex::new(Shared {
        reads,
        ..Shared::default()
    })));
    let s = Session::establish(io.clone(), false, &settings())
        .await
        .unwrap();
    assert_eq!(s.pipelining(), pipelining);
    io.0.lock().unwrap().released_at.clear();
    (s, io)
}

type Got = Vec<(u32, Result<Vec<u8>, String>)>;

async fn retr_all(s: &mut Session<Gated>, numbers: &[u32], window: usize) -> Got {
    let mut got = Vec::new();
    let mut stream = s.retr_pipelined(numbers, window);
    while let Some((n, body)) = stream.next_message().await.unwrap() {
        match body {
            Ok(body) => got.push((n, Ok(body.read_to_end(1 << 20).await.unwrap()))),
            Err(e) => got.push((n, Err(e.to_string()))),
        }
    }
    got
}

/// Three replies back to back: a dot-stuffed body, a -ERR, an empty body.
const REPLIES: &[u8] = b"+OK 20 octets\r\nSubject: a\r\n\r\n..x\r\n..\r\n.\r\n-ERR [SYS/PERM] no such message\r\n+OK 0 octets\r\n.\r\n";

fn expected() -> Got {
    vec![
        (1, Ok(b"Subject: a\r\n\r\n.x\r\n.\r\n".to_vec())),
        (
            2,
            Err(
                "POP3 server pop.test:110 answered RETR with -ERR [SYS/PERM]: no such message"
                    .into(),
            ),
        ),
        (3, Ok(Vec::new())),
    ]
}

#[tokio::test]
async fn replies_arriving_in_one_read_are_split_exactly() {
    // All three replies are released only once all three RETRs are out:
    // a client that waited for a reply before the next RETR would hang.
    let (mut s, io) = session(true, vec![(LOGIN_LINES + 3, REPLIES.to_vec())]).await;
    let got = tokio::time::timeout(Duration::from_secs(2), retr_all(&mut s, &[1, 2, 3], 8))
        .await
        .expect("the RETRs were not pipelined");
    assert_eq!(got, expected());
    assert!(!s.is_poisoned());
    let writes = io.writes();
    assert_eq!(writes.last().unwrap(), "RETR 1\r\nRETR 2\r\nRETR 3\r\n");
}

#[tokio::test]
async fn replies_split_at_every_offset_decode_the_same() {
    for at in 0..=REPLIES.len() {
        let (a, b) = REPLIES.split_at(at);
        let (mut s, _) = session(
            true,
            vec![(LOGIN_LINES + 3, a.to_vec()), (LOGIN_LINES + 3, b.to_vec())],
        )
        .await;
        assert_eq!(
            retr_all(&mut s, &[1, 2, 3], 3).await,
            expected(),
            "split at {at}"
        );
        assert!(!s.is_poisoned(), "split at {at}");
    }
    // And byte by byte.
    let bytes = REPLIES
        .iter()
        .map(|&b| (LOGIN_LINES + 3, vec![b]))
        .collect();
    let (mut s, _) = session(true, bytes).await;
    assert_eq!(retr_all(&mut s, &[1, 2, 3], 3).await, expected());
}

#[tokio::test]
async fn the_window_bounds_what_is_in_flight() {
    // Window 2: RETR 3 goes out only after reply 1 was read (then two are
    // in flight again: 2 and 3).
    let r1 = b"+OK\r\none\r\n.\r\n".to_vec();
    let r2 = b"+OK\r\ntwo\r\n.\r\n".to_vec();
    let r3 = b"+OK\r\nthree\r\n.\r\n".to_vec();
    let (mut s, io) = session(
        true,
        vec![
            (LOGIN_LINES + 2, r1),
            (LOGIN_LINES + 2, r2),
            (LOGIN_LINES + 3, r3),
        ],
    )
    .await;
    let got = retr_all(&mut s, &[1, 2, 3], 2).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], (3, Ok(b"three\r\n".to_vec())));
    let lines: Vec<usize> = io.released_at();
    assert_eq!(
        lines,
        vec![LOGIN_LINES + 2, LOGIN_LINES + 3, LOGIN_LINES + 3]
    );
    let writes = io.writes();
    assert_eq!(
        writes[writes.len() - 2..],
        ["RETR 1\r\nRETR 2\r\n", "RETR 3\r\n"]
    );
}

#[tokio::test]
async fn without_pipelining_one_command_at_a_time() {
    let r1 = b"+OK\r\none\r\n.\r\n".to_vec();
    let r2 = b"+OK\r\ntwo\r\n.\r\n".to_vec();
    let list = b"+OK\r\n1 5\r\n2 5\r\n.\r\n".to_vec();
    let uidl = b"+OK\r\n1 a\r\n2 b\r\n.\r\n".to_vec();
    let (mut s, io) = session(
        false,
        vec![
            (LOGIN_LINES + 1, list),
            (LOGIN_LINES + 2, uidl),
            (LOGIN_LINES + 3, r1),
            (LOGIN_LINES + 4, r2),
            (LOGIN_LINES + 5, b"+OK\r\n".to_vec()),
            (LOGIN_LINES + 6, b"-ERR no\r\n".to_vec()),
        ],
    )
    .await;
    let (list, uidl) = s.list_and_uidl().await.unwrap();
    assert_eq!(list, vec![(1, 5), (2, 5)]);
    assert_eq!(uidl.unwrap(), vec![(1, "a".into()), (2, "b".into())]);
    let got = retr_all(&mut s, &[1, 2], 16).await;
    assert_eq!(got[1], (2, Ok(b"two\r\n".to_vec())));
    let dele = s.dele_many(&[1, 2]).await.unwrap();
    assert!(dele[0].is_ok() && dele[1].is_err());
    // Each reply was released with exactly one more command written.
    let want: Vec<usize> = (1..=6).map(|i| LOGIN_LINES + i).collect();
    assert_eq!(io.released_at(), want);
    assert!(io.writes().iter().all(|w| w.matches('\n').count() == 1));
}

#[tokio::test]
async fn list_uidl_and_deles_go_in_one_flight() {
    let replies = b"+OK\r\n1 5\r\n2 7\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n".to_vec();
    let deles = b"+OK\r\n-ERR [SYS/TEMP] later\r\n+OK\r\n".to_vec();
    let (mut s, io) = session(
        true,
        vec![(LOGIN_LINES + 2, replies), (LOGIN_LINES + 5, deles)],
    )
    .await;
    let (list, uidl) = s.list_and_uidl().await.unwrap();
    assert_eq!(list, vec![(1, 5), (2, 7)]);
    assert_eq!(uidl.unwrap().len(), 2);
    let dele = s.dele_many(&[1, 2, 3]).await.unwrap();
    assert!(dele[0].is_ok() && dele[2].is_ok());
    assert!(matches!(
        dele[1].as_ref().map_err(Pop3Error::kind),
        Err(Pop3ErrorKind::SysTemp { .. })
    ));
    let writes = io.writes();
    assert!(
        writes.contains(&"LIST\r\nUIDL\r\n".to_string()),
        "{writes:?}"
    );
    assert!(
        writes.contains(&"DELE 1\r\nDELE 2\r\nDELE 3\r\n".to_string()),
        "{writes:?}"
    );
    assert!(!s.is_poisoned());
}

#[tokio::test]
async fn list_err_still_reads_the_uidl_reply() {
    let replies = b"-ERR [SYS/TEMP] busy\r\n+OK\r\n1 a\r\n.\r\n+OK 0 0\r\n".to_vec();
    let (mut s, _) = session(true, vec![(LOGIN_LINES + 2, replies)]).await;
    assert!(matches!(
        s.list_and_uidl().await.as_ref().map_err(Pop3Error::kind),
        Err(Pop3ErrorKind::SysTemp { .. })
    ));
    assert!(!s.is_poisoned());
    assert_eq!(s.stat().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn stopping_early_drains_or_poisons() {
    let replies =
        b"+OK\r\none\r\n.\r\n+OK\r\ntwo\r\n..\r\n.\r\n+OK\r\nthree\r\n.\r\n+OK bye\r\n".to_vec();
    let (mut s, _) = session(true, vec![(LOGIN_LINES + 3, replies.clone())]).await;
    {
        let mut stream = s.retr_pipelined(&[1, 2, 3], 3);
        let (n, body) = stream.next_message().await.unwrap().unwrap();
        assert_eq!(n, 1);
        assert_eq!(body.unwrap().read_to_end(100).await.unwrap(), b"one\r\n");
        assert_eq!(stream.in_flight(), 2);
        stream.drain().await.unwrap();
        assert!(stream.next_message().await.unwrap().is_none());
    }
    assert!(!s.is_poisoned());
    s.quit().await.unwrap();

    let (mut s, _) = session(true, vec![(LOGIN_LINES + 3, replies)]).await;
    {
        let mut stream = s.retr_pipelined(&[1, 2, 3], 3);
        let (_, body) = stream.next_message().await.unwrap().unwrap();
        body.unwrap().read_to_end(100).await.unwrap();
        // Dropped with two replies owed.
    }
    assert!(s.is_poisoned());
}

#[tokio::test]
async fn a_body_left_unread_poisons_the_stream() {
    let replies = b"+OK\r\none\r\n.\r\n+OK\r\ntwo\r\n.\r\n".to_vec();
    let (mut s, _) = session(true, vec![(LOGIN_LINES + 2, replies)]).await;
    let mut stream = s.retr_pipelined(&[1, 2], 2);
    let (_, body) = stream.next_message().await.unwrap().unwrap();
    drop(body);
    assert!(matches!(
        stream
            .next_message()
            .await
            .as_ref()
            .map_err(Pop3Error::kind),
        Err(Pop3ErrorKind::Poisoned)
    ));
}

#[tokio::test]
async fn window_is_clamped() {
    let (mut s, _) = session(true, vec![]).await;
    assert_eq!(s.retr_pipelined(&[], 0).window(), 1);
    assert_eq!(s.retr_pipelined(&[], 10_000).window(), MAX_WINDOW);
    s.set_pipelining(false);
    assert_eq!(s.retr_pipelined(&[], 10).window(), 1);
    s.set_pipelining(true);
    assert!(s.pipelining());
}
