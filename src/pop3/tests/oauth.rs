//! The OAuth2 logins on scripted bytes: the two-step AUTH XOAUTH2 and
//! OAUTHBEARER, the error challenge answered and decoded, a refused token
//! told apart, a credential of the wrong kind, and no token in the logs.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use secrecy::SecretString;

use super::*;
use crate::config::Credential;

/// A token longer than the 255 octets RFC 5034 allows on the AUTH line.
fn token() -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let body: String = (0..400usize)
        .map(|i| char::from(ALPHA[(i * 7 + i / 62) % ALPHA.len()]))
        .collect();
    format!("eyJhbGciOiJIUzI1NiJ9.{body}.c2ln")
}

fn bearer(t: &str) -> Option<Credential> {
    Some(Credential::Bearer(SecretString::from(t)))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn greeting_with_sasl() -> Vec<Step> {
    vec![
        s("+OK Dovecot ready.\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\nSASL PLAIN XOAUTH2 OAUTHBEARER\r\n.\r\n"),
    ]
}

const ERROR_JSON: &str = r#"{"status":"401","schemes":"bearer","scope":"mail"}"#;

#[tokio::test]
async fn xoauth2_sends_its_response_after_the_continuation() {
    let t = token();
    let response = b64(&format!("user=me\x01auth=Bearer {t}\x01\x01"));
    assert!(response.len() > 255);
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH XOAUTH2"),
        s("+ \r\n"),
        c(response),
        s("+OK Logged in.\r\n"),
    ]);
    let (io, server) = scripted(script);
    let sess = Session::establish_as(io, true, &settings(Pop3Auth::XOAuth2, false), bearer(&t))
        .await
        .unwrap();
    assert_eq!(sess.mechanism(), "SASL XOAUTH2");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_refused_xoauth2_token_is_acknowledged_and_decoded() {
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH XOAUTH2"),
        s("+ \r\n"),
        c(b64("user=me\x01auth=Bearer t0k\x01\x01")),
        s(format!("+ {}\r\n", b64(ERROR_JSON))),
        // XOAUTH2: an empty line, then the server's -ERR.
        c(""),
        s("-ERR [AUTH] Authentication failed.\r\n"),
    ]);
    let (io, server) = scripted(script);
    let e = Session::establish_as(io, true, &settings(Pop3Auth::XOAuth2, false), bearer("t0k"))
        .await
        .err()
        .expect("refused");
    assert!(
        e.is_auth() && e.is_token_refused() && !e.is_transient(),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("pop.test:110"), "{text}");
    assert!(text.contains("refused the OAuth2 access token"), "{text}");
    assert!(text.contains(r#"status 401, scope "mail""#), "{text}");
    assert!(!text.contains("t0k"), "{text}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn oauthbearer_names_host_and_port_and_answers_the_error_with_0x01() {
    let t = token();
    let response = b64(&format!(
        "n,a=me,\x01host=pop.test\x01port=110\x01auth=Bearer {t}\x01\x01"
    ));
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH OAUTHBEARER"),
        s("+ \r\n"),
        c(response.clone()),
        s("+OK Logged in.\r\n"),
    ]);
    let (io, server) = scripted(script);
    let sess = Session::establish_as(
        io,
        true,
        &settings(Pop3Auth::OAuthBearer, false),
        bearer(&t),
    )
    .await
    .unwrap();
    assert_eq!(sess.mechanism(), "SASL OAUTHBEARER");
    server.await.unwrap().unwrap();

    let json = r#"{"status":"invalid_token","scope":"pop"}"#;
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH OAUTHBEARER"),
        s("+ \r\n"),
        c(response),
        s(format!("+ {}\r\n", b64(json))),
        // RFC 7628 3.2.3: the dummy response %x01.
        c("AQ=="),
        s("-ERR [AUTH] Authentication failed.\r\n"),
    ]);
    let (io, server) = scripted(script);
    let e = Session::establish_as(
        io,
        true,
        &settings(Pop3Auth::OAuthBearer, false),
        bearer(&t),
    )
    .await
    .err()
    .expect("refused");
    assert!(e.is_token_refused(), "{e:?}");
    assert!(
        e.to_string()
            .contains(r#"status invalid_token, scope "pop""#),
        "{e}"
    );
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_temporary_refusal_stays_transient() {
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH XOAUTH2"),
        s("+ \r\n"),
        c(b64("user=me\x01auth=Bearer t\x01\x01")),
        s("-ERR [SYS/TEMP] Try later.\r\n"),
    ]);
    let (io, server) = scripted(script);
    let e = Session::establish_as(io, true, &settings(Pop3Auth::XOAuth2, false), bearer("t"))
        .await
        .err()
        .expect("refused");
    assert!(e.is_transient() && !e.is_token_refused(), "{e:?}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_challenge_after_the_acknowledgement_is_cancelled_and_ends_the_login() {
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH XOAUTH2"),
        s("+ \r\n"),
        c(b64("user=me\x01auth=Bearer t\x01\x01")),
        s("+ \r\n"),
        c(""),
        s("+ \r\n"),
        c("*"),
        s("+ \r\n"),
    ]);
    let (io, _server) = scripted(script);
    let e = Session::establish_as(io, true, &settings(Pop3Auth::XOAuth2, false), bearer("t"))
        .await
        .err()
        .expect("refused");
    assert!(matches!(e.kind(), Pop3ErrorKind::Protocol { .. }), "{e:?}");
}

#[tokio::test]
async fn a_credential_of_the_wrong_kind_is_refused_before_anything_is_sent() {
    // A password for XOAUTH2: nothing after CAPA.
    let mut script = greeting_with_sasl();
    script.push(Step::Eof);
    let (io, server) = scripted(script);
    let e = Session::establish(io, true, &settings(Pop3Auth::XOAuth2, false))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(e.kind(), Pop3ErrorKind::WrongCredential { .. }),
        "{e:?}"
    );
    assert!(!e.is_transient() && !e.is_auth());
    let text = e.to_string();
    assert!(
        text.contains("xoauth2") && text.contains("a password"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    server.await.unwrap().unwrap();

    // A token for PLAIN.
    let mut script = greeting_with_sasl();
    script.push(Step::Eof);
    let (io, server) = scripted(script);
    let e = Session::establish_as(io, true, &settings(Pop3Auth::Plain, false), bearer("tok"))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("an OAuth2 access token"), "{e}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_token_needs_tls_like_a_password() {
    let mut script = greeting_with_sasl();
    script.push(Step::Eof);
    let (io, server) = scripted(script);
    let e = Session::establish_as(io, false, &settings(Pop3Auth::XOAuth2, false), bearer("t"))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(e.kind(), Pop3ErrorKind::PlaintextRefused { .. }),
        "{e:?}"
    );
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
async fn no_token_reaches_the_logs_even_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // As in login.rs: a global sink keeps TRACE call sites enabled for the
    // thread-local subscriber.
    let sink = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::sink)
        .finish();
    let _ = tracing::subscriber::set_global_default(sink);
    tracing::callsite::rebuild_interest_cache();
    let _guard = tracing::subscriber::set_default(subscriber);

    let t = token();
    let x = b64(&format!("user=me\x01auth=Bearer {t}\x01\x01"));
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH XOAUTH2"),
        s("+ \r\n"),
        c(x.clone()),
        s(format!("+ {}\r\n", b64(ERROR_JSON))),
        c(""),
        s("-ERR [AUTH] Authentication failed.\r\n"),
    ]);
    let (io, server) = scripted(script);
    let e = Session::establish_as(io, true, &settings(Pop3Auth::XOAuth2, false), bearer(&t))
        .await
        .err()
        .expect("refused");
    server.await.unwrap().unwrap();
    tracing::error!("{e:#}");
    let ob = b64(&format!(
        "n,a=me,\x01host=pop.test\x01port=110\x01auth=Bearer {t}\x01\x01"
    ));
    let mut script = greeting_with_sasl();
    script.extend([
        c("AUTH OAUTHBEARER"),
        s("+ \r\n"),
        c(ob.clone()),
        s("+OK\r\n"),
    ]);
    let (io, server) = scripted(script);
    Session::establish_as(
        io,
        true,
        &settings(Pop3Auth::OAuthBearer, false),
        bearer(&t),
    )
    .await
    .unwrap();
    server.await.unwrap().unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("AUTH XOAUTH2"), "{logs}");
    assert!(logs.contains("<SASL response redacted>"), "{logs}");
    // Any 40-character stretch of the token or of its base64 lines.
    for secret in [t.as_str(), x.as_str(), ob.as_str()] {
        for part in secret.as_bytes().chunks(40) {
            let part = std::str::from_utf8(part).unwrap();
            assert!(!logs.contains(part), "{part:?} leaked into:\n{logs}");
        }
    }
}
