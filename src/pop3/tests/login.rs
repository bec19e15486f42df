//! Logging in: which mechanism is chosen, how each is spoken, how a refusal
//! is classified, and that no secret reaches a log.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::*;

#[test]
fn apop_digest_rfc1939_example() {
    let d = crate::pop3::login::apop_digest(b"<1896.697170952@dbc.mtview.ca.us>", "tanstaaf");
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
    assert_eq!(sess.capabilities().args("SASL"), vec!["PLAIN", "LOGIN"]);
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
    assert!(matches!(e.kind(), Pop3ErrorKind::InUse { .. }), "{e:?}");
    assert!(e.is_transient() && !e.is_auth());
    assert!(e.to_string().contains("pop.test:110"), "{e}");

    let e = login_error("-ERR [AUTH] Authentication failed.").await;
    assert!(matches!(e.kind(), Pop3ErrorKind::Auth { .. }), "{e:?}");
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
    assert!(matches!(e.kind(), Pop3ErrorKind::LoginDelay { .. }) && e.is_transient());

    let e = login_error("-ERR [SYS/TEMP] try later").await;
    assert!(matches!(e.kind(), Pop3ErrorKind::SysTemp { .. }) && e.is_transient());

    let e = login_error("-ERR [SYS/PERM] account disabled").await;
    assert!(
        matches!(
            e.kind(),
            Pop3ErrorKind::Server {
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
    assert!(
        matches!(e.kind(), Pop3ErrorKind::PlaintextRefused { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("allow_plaintext_password"), "{e}");
    assert!(!e.is_transient());
    // The server saw no USER and no PASS: only EOF.
    server.await.unwrap().unwrap();
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
    // Call sites first met by another test of this binary, while no
    // subscriber wanted TRACE, would be cached as disabled (a flake): a
    // global subscriber that wants everything and writes nowhere keeps
    // every call site enabled for the thread-local one below.
    let sink = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::sink)
        .finish();
    let _ = tracing::subscriber::set_global_default(sink);
    tracing::callsite::rebuild_interest_cache();
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
