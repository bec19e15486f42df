//! Client tests against an in-process scripted server (a `tokio::io::duplex`
//! pipe or a 127.0.0.1 listener): the conversation, error classification,
//! streaming and the poison rule. Wire-format tests live in `proto`.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

use super::*;
use crate::config::{Pop3Auth, ServerSettings};
use crate::net::{Endpoint, TlsMode};

const PASSWORD: &str = "s3cr3t-pa55";

enum Step {
    /// The server sends these bytes.
    Send(Vec<u8>),
    /// The server sends these bytes one at a time.
    Trickle(Vec<u8>),
    /// The server expects this command line (without CRLF).
    Expect(String),
    /// The server expects the client to close the connection.
    Eof,
    /// The server never says anything again.
    Hang,
}

fn s(bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(bytes.as_ref().to_vec())
}
fn c(line: impl Into<String>) -> Step {
    Step::Expect(line.into())
}

async fn run_script<T>(io: T, steps: Vec<Step>) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(io);
    let mut r = BufReader::new(r);
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Send(b) => w
                .write_all(&b)
                .await
                .map_err(|e| format!("step {i}: {e}"))?,
            Step::Trickle(b) => {
                for byte in b {
                    w.write_all(&[byte]).await.map_err(|e| e.to_string())?;
                    w.flush().await.map_err(|e| e.to_string())?;
                    tokio::task::yield_now().await;
                }
            }
            Step::Expect(want) => {
                let mut got = Vec::new();
                r.read_until(b'\n', &mut got)
                    .await
                    .map_err(|e| format!("step {i}: {e}"))?;
                let want = format!("{want}\r\n");
                if got != want.as_bytes() {
                    return Err(format!(
                        "step {i}: expected {want:?}, got {:?}",
                        String::from_utf8_lossy(&got)
                    ));
                }
            }
            Step::Eof => {
                let mut got = Vec::new();
                r.read_until(b'\n', &mut got)
                    .await
                    .map_err(|e| e.to_string())?;
                if !got.is_empty() {
                    return Err(format!(
                        "step {i}: expected EOF, got {:?}",
                        String::from_utf8_lossy(&got)
                    ));
                }
            }
            Step::Hang => std::future::pending::<()>().await,
        }
    }
    w.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A scripted server on one end of a pipe; the client gets the other end.
fn scripted(steps: Vec<Step>) -> (tokio::io::DuplexStream, JoinHandle<Result<(), String>>) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let handle = tokio::spawn(run_script(server, steps));
    (client, handle)
}

fn settings(auth: Pop3Auth, allow_plaintext: bool) -> ServerSettings<Pop3Auth> {
    ServerSettings {
        endpoint: Endpoint {
            host: "pop.test".into(),
            port: 110,
            tls: TlsMode::None,
            ca_file: None,
            timeout: Duration::from_secs(5),
        },
        username: "me".into(),
        password: PASSWORD.into(),
        auth,
        allow_plaintext_password: allow_plaintext,
    }
}

/// Greeting, CAPA with USER, USER/PASS accepted.
fn user_login() -> Vec<Step> {
    vec![
        s("+OK POP3 ready\r\n"),
        c("CAPA"),
        s(
            "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n.\r\n",
        ),
        c("USER me"),
        s("+OK\r\n"),
        c(format!("PASS {PASSWORD}")),
        s("+OK Logged in.\r\n"),
    ]
}

fn with(mut a: Vec<Step>, b: Vec<Step>) -> Vec<Step> {
    a.extend(b);
    a
}

async fn session(
    steps: Vec<Step>,
) -> (
    Session<tokio::io::DuplexStream>,
    JoinHandle<Result<(), String>>,
) {
    let (io, server) = scripted(steps);
    let sess = Session::establish(io, false, &settings(Pop3Auth::Auto, true))
        .await
        .unwrap();
    (sess, server)
}

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
            c("DELE 1"),
            s("+OK deleted\r\n"),
            c("RSET"),
            s("+OK\r\n"),
            c("NOOP"),
            s("+OK\r\n"),
            c("QUIT"),
            s("+OK bye\r\n"),
            Step::Eof,
        ],
    ))
    .await;
    assert!(!sess.is_tls());
    let caps = sess.capabilities();
    assert!(
        caps.announced() && caps.top() && caps.uidl() && caps.pipelining() && caps.resp_codes()
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
    sess.dele(1).await.unwrap();
    sess.rset().await.unwrap();
    sess.noop().await.unwrap();
    sess.quit().await.unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn apop_digest_rfc1939_example() {
    let d = super::client::apop_digest(b"<1896.697170952@dbc.mtview.ca.us>", "tanstaaf");
    assert_eq!(d.as_str(), "c4c9334bac560ecc979e58001b3e22fb");
}

#[tokio::test]
async fn apop_login_in_the_clear() {
    let (io, server) = scripted(vec![
        s("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
        c("CAPA"),
        s("-ERR unknown command\r\n"),
        c("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
        s("+OK mrose's maildrop has 2 messages (320 octets)\r\n"),
    ]);
    let mut set = settings(Pop3Auth::Apop, false);
    set.username = "mrose".into();
    set.password = "tanstaaf".into();
    let sess = Session::establish(io, false, &set).await.unwrap();
    assert!(!sess.capabilities().announced());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn auto_prefers_apop_when_password_may_not_travel() {
    let (io, server) = scripted(vec![
        s("+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n"),
        c("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
        s("+OK\r\n"),
    ]);
    let mut set = settings(Pop3Auth::Auto, false);
    set.username = "mrose".into();
    set.password = "tanstaaf".into();
    Session::establish(io, false, &set).await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn auth_plain() {
    let response = base64::engine::general_purpose::STANDARD.encode(format!("\0me\0{PASSWORD}"));
    let (io, server) = scripted(vec![
        s("+OK Dovecot ready.\r\n"),
        c("CAPA"),
        s("+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nSASL PLAIN LOGIN\r\n.\r\n"),
        c("AUTH PLAIN"),
        s("+ \r\n"),
        c(response),
        s("+OK Logged in.\r\n"),
    ]);
    let sess = Session::establish(io, true, &settings(Pop3Auth::Auto, false))
        .await
        .unwrap();
    assert!(sess.is_tls());
    assert_eq!(
        sess.capabilities().sasl_mechanisms(),
        vec!["PLAIN", "LOGIN"]
    );
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_without_capa_gets_user_pass() {
    let (io, server) = scripted(vec![
        s("+OK old server\r\n"),
        c("CAPA"),
        s("-ERR what?\r\n"),
        c("USER me"),
        s("+OK\r\n"),
        c(format!("PASS {PASSWORD}")),
        s("+OK\r\n"),
    ]);
    let sess = Session::establish(io, false, &settings(Pop3Auth::Auto, true))
        .await
        .unwrap();
    assert!(!sess.capabilities().announced());
    assert!(sess.capabilities().raw().is_empty());
    server.await.unwrap().unwrap();
}

async fn login_error(reply: &str) -> Pop3Error {
    let (io, _server) = scripted(vec![
        s("+OK ready\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\nRESP-CODES\r\n.\r\n"),
        c("USER me"),
        s("+OK\r\n"),
        c(format!("PASS {PASSWORD}")),
        s(format!("{reply}\r\n")),
    ]);
    match Session::establish(io, false, &settings(Pop3Auth::User, true)).await {
        Ok(_) => panic!("login should fail"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn error_classification() {
    let e = login_error("-ERR [IN-USE] Mailbox locked by another session").await;
    assert!(matches!(e, Pop3Error::InUse { .. }), "{e:?}");
    assert!(e.is_transient() && !e.is_auth());
    assert!(e.to_string().contains("pop.test:110"), "{e}");

    let e = login_error("-ERR [AUTH] Authentication failed.").await;
    assert!(matches!(e, Pop3Error::Auth { .. }), "{e:?}");
    assert!(e.is_auth() && !e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains("pop.test:110") && msg.contains("Authentication failed."),
        "{msg}"
    );
    assert!(!msg.contains(PASSWORD));

    let e = login_error("-ERR invalid password").await;
    assert!(e.is_auth(), "{e:?}");

    let e = login_error("-ERR [LOGIN-DELAY] wait 15 minutes").await;
    assert!(matches!(e, Pop3Error::LoginDelay { .. }) && e.is_transient());

    let e = login_error("-ERR [SYS/TEMP] try later").await;
    assert!(matches!(e, Pop3Error::SysTemp { .. }) && e.is_transient());

    let e = login_error("-ERR [SYS/PERM] account disabled").await;
    assert!(
        matches!(
            &e,
            Pop3Error::Server {
                code: Some(RespCode::SysPerm),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_transient() && !e.is_auth());
    assert!(e.to_string().contains("[SYS/PERM]"), "{e}");
}

#[tokio::test]
async fn plaintext_password_refused_without_tls() {
    let (io, server) = scripted(vec![
        s("+OK ready\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\n.\r\n"),
        Step::Eof,
    ]);
    let e = match Session::establish(io, false, &settings(Pop3Auth::Auto, false)).await {
        Ok(_) => panic!("must refuse"),
        Err(e) => e,
    };
    assert!(matches!(e, Pop3Error::PlaintextRefused { .. }), "{e:?}");
    assert!(e.to_string().contains("allow_plaintext_password"), "{e}");
    assert!(!e.is_transient());
    // The server saw no USER and no PASS: only EOF.
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn uidl_unsupported_is_none_and_session_goes_on() {
    let (mut sess, server) = session(with(
        user_login(),
        vec![
            c("UIDL"),
            s("-ERR unknown command\r\n"),
            c("NOOP"),
            s("+OK\r\n"),
        ],
    ))
    .await;
    assert_eq!(sess.uidl().await.unwrap(), None);
    sess.noop().await.unwrap();
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
            c("NOOP"),
            s("+OK\r\n"),
        ],
    ))
    .await;
    let e = sess.uidl().await.unwrap_err();
    assert!(matches!(e, Pop3Error::Protocol { .. }), "{e:?}");
    let e = sess.list().await.unwrap_err();
    assert!(matches!(e, Pop3Error::Protocol { .. }), "{e:?}");
    // The listing was read to its end: the session is still in step.
    sess.noop().await.unwrap();
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
            c("NOOP"),
            s(b"+OK\r\n"),
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
    sess.noop().await.unwrap();
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
    let e = sess.noop().await.unwrap_err();
    assert!(matches!(e, Pop3Error::Poisoned { .. }), "{e:?}");
    assert!(matches!(
        sess.dele(1).await,
        Err(Pop3Error::Poisoned { .. })
    ));
    // QUIT is not even sent: the deletions must not be committed.
    assert!(matches!(sess.quit().await, Err(Pop3Error::Poisoned { .. })));
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
    assert!(matches!(e, Pop3Error::TooLarge { limit: 5, .. }), "{e:?}");
    assert!(!sess.is_poisoned());
    // Over the limit with more to come: abandoned, so poisoned.
    let e = sess
        .top(2, 0)
        .await
        .unwrap()
        .read_to_end(5)
        .await
        .unwrap_err();
    assert!(matches!(e, Pop3Error::TooLarge { limit: 5, .. }), "{e:?}");
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
    assert!(matches!(e, Pop3Error::Closed { .. }), "{e:?}");
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
    assert!(matches!(e, Pop3Error::Timeout { .. }), "{e:?}");
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
    assert!(matches!(e, Pop3Error::Timeout { .. }), "{e:?}");
    drop(body);
    assert!(matches!(sess.noop().await, Err(Pop3Error::Poisoned { .. })));
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
    assert!(matches!(e, Pop3Error::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("longer than"), "{e}");
}

#[tokio::test]
async fn garbage_instead_of_status_is_a_protocol_error() {
    let (io, _server) = scripted(vec![s(b"* OK IMAP4rev1 ready\r\n")]);
    let e = match Session::establish(io, false, &settings(Pop3Auth::Auto, true)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e, Pop3Error::Protocol { .. }), "{e:?}");
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
            e,
            Pop3Error::Server {
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
    assert!(matches!(e, Pop3Error::SysTemp { .. }), "{e:?}");
}

/// Writes tracing output into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // USER/PASS
    let (io, server) = scripted(user_login());
    Session::establish(io, false, &settings(Pop3Auth::User, true))
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    // SASL PLAIN
    let response = base64::engine::general_purpose::STANDARD.encode(format!("\0me\0{PASSWORD}"));
    let (io, server) = scripted(vec![
        s("+OK\r\n"),
        c("CAPA"),
        s("+OK\r\nSASL PLAIN\r\n.\r\n"),
        c("AUTH PLAIN"),
        s("+ \r\n"),
        c(response.clone()),
        s("+OK\r\n"),
    ]);
    Session::establish(io, true, &settings(Pop3Auth::Plain, false))
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    // APOP
    let mut set = settings(Pop3Auth::Apop, false);
    set.password = "tanstaaf".into();
    set.username = "mrose".into();
    let (io, server) = scripted(vec![
        s("+OK <1896.697170952@dbc.mtview.ca.us>\r\n"),
        c("CAPA"),
        s("-ERR\r\n"),
        c("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
        s("+OK\r\n"),
    ]);
    Session::establish(io, false, &set).await.unwrap();
    server.await.unwrap().unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("PASS <redacted>"), "{logs}");
    assert!(logs.contains("CAPA"), "{logs}");
    for secret in [
        PASSWORD,
        response.as_str(),
        "tanstaaf",
        "c4c9334bac560ecc979e58001b3e22fb",
    ] {
        assert!(!logs.contains(secret), "{secret:?} leaked into:\n{logs}");
    }
    let _ = std::io::stderr().flush();
}

// --- through connect(), over 127.0.0.1 ---

async fn listener_with(steps: Vec<Step>) -> (u16, JoinHandle<Result<(), String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.map_err(|e| e.to_string())?;
        run_script(sock, steps).await
    });
    (port, handle)
}

fn loopback(port: u16, tls: TlsMode) -> ServerSettings<Pop3Auth> {
    let mut set = settings(Pop3Auth::Auto, true);
    set.endpoint.host = "127.0.0.1".into();
    set.endpoint.port = port;
    set.endpoint.tls = tls;
    set
}

#[tokio::test]
async fn connect_over_tcp() {
    let (port, server) =
        listener_with(with(user_login(), vec![c("QUIT"), s("+OK\r\n"), Step::Eof])).await;
    let sess = connect(&loopback(port, TlsMode::None)).await.unwrap();
    assert!(!sess.is_tls());
    assert_eq!(sess.server(), format!("127.0.0.1:{port}"));
    sess.quit().await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn stls_refused_is_an_error_not_a_downgrade() {
    let (port, server) = listener_with(vec![
        s("+OK ready\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\n.\r\n"),
        c("STLS"),
        s("-ERR not here\r\n"),
        Step::Eof,
    ])
    .await;
    let e = match connect(&loopback(port, TlsMode::Starttls)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e, Pop3Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("STLS refused"), "{e}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn bytes_injected_after_stls_reply_are_refused() {
    let (port, _server) = listener_with(vec![
        s("+OK ready\r\n"),
        c("CAPA"),
        s("+OK\r\nSTLS\r\n.\r\n"),
        c("STLS"),
        s("+OK Begin TLS\r\n+OK injected\r\n"),
        Step::Hang,
    ])
    .await;
    let e = match connect(&loopback(port, TlsMode::Starttls)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e, Pop3Error::Protocol { .. }), "{e:?}");
}

#[tokio::test]
async fn connection_refused_is_a_transient_net_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = match connect(&loopback(port, TlsMode::None)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e, Pop3Error::Net(_)), "{e:?}");
    assert!(e.is_transient());
}
