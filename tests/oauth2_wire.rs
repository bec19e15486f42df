//! OAuth2 on the wire against a real Dovecot that validates bearer tokens
//! (HS256 JWTs, checked locally by its `oauth2` passdb: see
//! `DovecotBuilder::oauth2`), over TLS, through the client APIs with a
//! `Credential::Bearer` (`pop3::connect_with`, `imap::connect_with`):
//!
//! - POP3: the two-step `AUTH XOAUTH2` logs in with a token, and an expired
//!   token is refused with an error that says so, names the server and
//!   carries the server's JSON error; `AUTH OAUTHBEARER` likewise.
//! - IMAP: `AUTHENTICATE XOAUTH2` with SASL-IR (Dovecot offers it) and
//!   without (a Dovecot whose `imap_capability` leaves SASL-IR out, so the
//!   response follows the `+`); `AUTHENTICATE OAUTHBEARER`; the refusal.
//! - Passwords still log in on the same Dovecot.
//! - At trace level, the captured output holds no token and no base64 of
//!   the SASL strings built from it.
//!
//! The end-to-end `popferry sync` over OAuth2 needs the token side (the
//! `[accounts.<side>.oauth2]` table) and is tested with it.

mod support;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use popferry::config::{Credential, Endpoint, ImapAuth, Pop3Auth, ServerSettings, TlsMode};
use popferry::{imap, pop3};
use secrecy::SecretString;
use support::Dovecot;

fn endpoint(d: &Dovecot, port: u16, tls: TlsMode) -> Endpoint {
    Endpoint {
        host: d.host.clone(),
        port,
        tls,
        ca_file: Some(d.ca_file.clone()),
        tls_fingerprint: None,
        timeout: Duration::from_secs(20),
    }
}

/// POP3 settings: `password` is the user's password (never a token); the
/// token is handed to `connect_with`.
fn pop3_settings(
    d: &Dovecot,
    user: &str,
    tls: TlsMode,
    auth: Pop3Auth,
) -> ServerSettings<Pop3Auth> {
    let port = match tls {
        TlsMode::Implicit => d.pop3s_port,
        TlsMode::Starttls | TlsMode::None => d.pop3_port,
    };
    ServerSettings {
        endpoint: endpoint(d, port, tls),
        username: user.into(),
        password: d.password(user).into(),
        auth,
        allow_plaintext_password: false,
        oauth2: None,
    }
}

fn imap_settings(
    d: &Dovecot,
    user: &str,
    tls: TlsMode,
    auth: ImapAuth,
) -> ServerSettings<ImapAuth> {
    let port = match tls {
        TlsMode::Implicit => d.imaps_port,
        TlsMode::Starttls | TlsMode::None => d.imap_port,
    };
    ServerSettings {
        endpoint: endpoint(d, port, tls),
        username: user.into(),
        password: d.password(user).into(),
        auth,
        allow_plaintext_password: false,
        oauth2: None,
    }
}

fn bearer(token: &str) -> Credential {
    Credential::Bearer(SecretString::from(token))
}

/// `auth_debug` logs each AUTH request the login process passes on (the
/// response itself hidden), which shows whether it came with the command.
const AUTH_DEBUG: &str = "auth_debug = yes\n";

fn oauth_dovecot() -> Dovecot {
    Dovecot::builder().oauth2().extra_config(AUTH_DEBUG).start()
}

/// For each `mechanism` request in Dovecot's auth debug log: whether its
/// first response came with it (SASL-IR, `resp=`) or after a `+`.
fn auth_requests(d: &Dovecot, mechanism: &str) -> Vec<&'static str> {
    let log = std::fs::read_to_string(&d.log_file).expect("read the Dovecot log");
    let mechanism = format!("\t{mechanism}\t");
    log.lines()
        .filter(|l| l.contains("client in: AUTH\t") && l.contains(&mechanism))
        .map(|l| {
            if l.contains("\tresp=") {
                "with an initial response"
            } else {
                "without an initial response"
            }
        })
        .collect()
}

/// A Dovecot that accepts tokens and does not offer SASL-IR.
fn oauth_dovecot_without_sasl_ir() -> Dovecot {
    Dovecot::builder()
        .oauth2()
        .extra_config(
            "protocol imap {\n  imap_capability = IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE UIDPLUS\n}\n",
        )
        .extra_config(AUTH_DEBUG)
        .start()
}

fn one_message() -> Vec<Vec<u8>> {
    vec![b"From: a@example.test\r\nSubject: oauth\r\n\r\nbody\r\n".to_vec()]
}

#[tokio::test]
async fn pop3_two_step_xoauth2_logs_in_with_a_token_and_refuses_an_expired_one() {
    let d = oauth_dovecot();
    d.seed("alice", &one_message());
    let set = pop3_settings(&d, "alice", TlsMode::Implicit, Pop3Auth::XOAuth2);

    let mut s = pop3::connect_with(&set, bearer(&d.jwt("alice", 300)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log_tail()));
    assert_eq!(s.mechanism(), "SASL XOAUTH2");
    assert!(s.is_tls());
    assert_eq!(s.stat().await.expect("STAT").0, 1);
    s.quit().await.expect("QUIT");
    // Two steps, as Microsoft 365 requires: no response on the AUTH line.
    assert_eq!(
        auth_requests(&d, "XOAUTH2"),
        ["without an initial response"],
        "{}",
        d.log_tail()
    );

    let expired = d.jwt("alice", -60);
    let e = match pop3::connect_with(&set, bearer(&expired)).await {
        Ok(_) => panic!("an expired token must be refused"),
        Err(e) => e,
    };
    assert!(
        e.is_token_refused() && e.is_auth() && !e.is_transient(),
        "{e:?}"
    );
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", d.pop3s_port)),
        "{text}"
    );
    assert!(text.contains("refused the OAuth2 access token"), "{text}");
    assert!(text.contains("status 401"), "the JSON error: {text}");
    assert!(!text.contains(&expired), "{text}");
    assert!(
        d.log_tail().contains("Token has expired"),
        "Dovecot refused it for its age:\n{}",
        d.log_tail()
    );
}

#[tokio::test]
async fn pop3_oauthbearer_logs_in_over_stls_and_a_token_for_another_user_is_refused() {
    let d = oauth_dovecot();
    d.seed("bob", &one_message());
    let set = pop3_settings(&d, "bob", TlsMode::Starttls, Pop3Auth::OAuthBearer);
    let mut s = pop3::connect_with(&set, bearer(&d.jwt("bob", 300)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log_tail()));
    assert_eq!(s.mechanism(), "SASL OAUTHBEARER");
    assert_eq!(s.stat().await.expect("STAT").0, 1);
    s.quit().await.expect("QUIT");
    assert_eq!(
        auth_requests(&d, "OAUTHBEARER"),
        ["without an initial response"],
        "{}",
        d.log_tail()
    );

    // alice's token does not open bob's mailbox.
    let e = match pop3::connect_with(&set, bearer(&d.jwt("alice", 300))).await {
        Ok(_) => panic!("a token for another user must be refused"),
        Err(e) => e,
    };
    assert!(e.is_token_refused(), "{e:?}");
    assert!(format!("{e:#}").contains("OAUTHBEARER"), "{e:#}");
}

#[tokio::test]
async fn passwords_still_log_in_beside_the_oauth2_passdb() {
    let d = oauth_dovecot();
    let set = pop3_settings(&d, "carol", TlsMode::Implicit, Pop3Auth::Plain);
    let s = pop3::connect(&set).await.expect("password login");
    assert_eq!(s.mechanism(), "SASL PLAIN");
    s.quit().await.expect("QUIT");
    let set = imap_settings(&d, "dave", TlsMode::Implicit, ImapAuth::Login);
    let s = imap::connect(&set).await.expect("password login");
    assert_eq!(s.mechanism(), "LOGIN");
    s.logout().await.expect("LOGOUT");
    // And a password is no token.
    let set = imap_settings(&d, "dave", TlsMode::Implicit, ImapAuth::XOAuth2);
    let e = imap::connect(&set)
        .await
        .expect_err("a password for XOAUTH2");
    assert!(
        matches!(e.kind(), imap::ImapErrorKind::WrongCredential { .. }),
        "{e:#}"
    );
}

#[tokio::test]
async fn imap_xoauth2_with_sasl_ir_logs_in_and_refuses_an_expired_token() {
    let d = oauth_dovecot();
    let set = imap_settings(&d, "dave", TlsMode::Implicit, ImapAuth::XOAuth2);
    let s = imap::connect_with(&set, bearer(&d.jwt("dave", 300)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log_tail()));
    assert_eq!(s.mechanism(), "AUTHENTICATE XOAUTH2");
    assert!(s.capabilities().sasl_ir(), "Dovecot offers SASL-IR");
    s.logout().await.expect("LOGOUT");
    assert_eq!(
        auth_requests(&d, "XOAUTH2"),
        ["with an initial response"],
        "{}",
        d.log_tail()
    );

    let expired = d.jwt("dave", -60);
    let e = imap::connect_with(&set, bearer(&expired))
        .await
        .expect_err("expired");
    assert!(e.is_token_refused() && !e.is_transient(), "{e:?}");
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", d.imaps_port)),
        "{text}"
    );
    assert!(text.contains("AUTHENTICATIONFAILED"), "{text}");
    assert!(text.contains(r#"status 401, scope "mail""#), "{text}");
    assert!(!text.contains(&expired), "{text}");
}

#[tokio::test]
async fn imap_xoauth2_without_sasl_ir_answers_the_continuation() {
    let d = oauth_dovecot_without_sasl_ir();
    let set = imap_settings(&d, "erin", TlsMode::Starttls, ImapAuth::XOAuth2);
    let s = imap::connect_with(&set, bearer(&d.jwt("erin", 300)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log_tail()));
    assert_eq!(s.mechanism(), "AUTHENTICATE XOAUTH2");
    assert!(!s.capabilities().sasl_ir(), "this Dovecot hides SASL-IR");
    s.logout().await.expect("LOGOUT");
    // Dovecot takes an initial response even where it does not offer
    // SASL-IR, so its auth debug log says which way the response came.
    assert_eq!(
        auth_requests(&d, "XOAUTH2"),
        ["without an initial response"],
        "{}",
        d.log_tail()
    );

    let e = imap::connect_with(&set, bearer(&d.jwt("erin", -60)))
        .await
        .expect_err("expired");
    assert!(e.is_token_refused(), "{e:?}");
}

#[tokio::test]
async fn imap_oauthbearer_logs_in_and_refuses_an_expired_token() {
    let d = oauth_dovecot();
    let set = imap_settings(&d, "dave", TlsMode::Starttls, ImapAuth::OAuthBearer);
    let s = imap::connect_with(&set, bearer(&d.jwt("dave", 300)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log_tail()));
    assert_eq!(s.mechanism(), "AUTHENTICATE OAUTHBEARER");
    s.logout().await.expect("LOGOUT");
    let e = imap::connect_with(&set, bearer(&d.jwt("dave", -60)))
        .await
        .expect_err("expired");
    assert!(e.is_token_refused(), "{e:?}");
    assert!(format!("{e:#}").contains("OAUTHBEARER"), "{e:#}");
}

/// Writes tracing output into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn b64(raw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Every 24-character stretch of `secret`: a leak of part of it shows too.
fn stretches(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .windows(24)
        .step_by(8)
        .map(|w| w.iter().collect())
        .collect()
}

#[tokio::test]
async fn no_token_and_no_base64_of_one_in_trace_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A global subscriber that wants everything and writes nowhere keeps
    // every TRACE call site enabled for the thread-local one below.
    let sink = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::sink)
        .finish();
    let _ = tracing::subscriber::set_global_default(sink);
    tracing::callsite::rebuild_interest_cache();
    let _guard = tracing::subscriber::set_default(subscriber);

    let d = oauth_dovecot();
    let good = d.jwt("alice", 300);
    let expired = d.jwt("alice", -60);
    let imap_good = d.jwt("dave", 300);
    let mut secrets = Vec::new();
    for (tls, port) in [
        (TlsMode::Implicit, d.pop3s_port),
        (TlsMode::Starttls, d.pop3_port),
    ] {
        for auth in [Pop3Auth::XOAuth2, Pop3Auth::OAuthBearer] {
            let set = pop3_settings(&d, "alice", tls, auth);
            let s = pop3::connect_with(&set, bearer(&good))
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            s.quit().await.expect("QUIT");
            let e = match pop3::connect_with(&set, bearer(&expired)).await {
                Ok(_) => panic!("expired"),
                Err(e) => e,
            };
            tracing::error!("{e:#}");
            for t in [&good, &expired] {
                secrets.push(b64(&format!("user=alice\x01auth=Bearer {t}\x01\x01")));
                secrets.push(b64(&format!(
                    "n,a=alice,\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {t}\x01\x01"
                )));
            }
        }
    }
    for (tls, port) in [
        (TlsMode::Implicit, d.imaps_port),
        (TlsMode::Starttls, d.imap_port),
    ] {
        for auth in [ImapAuth::XOAuth2, ImapAuth::OAuthBearer] {
            let set = imap_settings(&d, "dave", tls, auth);
            let s = imap::connect_with(&set, bearer(&imap_good))
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            s.logout().await.expect("LOGOUT");
            let e = imap::connect_with(&set, bearer(&expired))
                .await
                .expect_err("expired");
            tracing::error!("{e:#}");
            for t in [&imap_good, &expired] {
                secrets.push(b64(&format!("user=dave\x01auth=Bearer {t}\x01\x01")));
                secrets.push(b64(&format!(
                    "n,a=dave,\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {t}\x01\x01"
                )));
            }
        }
    }
    let _ = std::io::stderr().flush();

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8 logs");
    assert!(
        logs.contains("AUTH XOAUTH2"),
        "trace output was captured:\n{logs}"
    );
    assert!(logs.contains("<SASL response redacted>"), "{logs}");
    assert!(logs.contains("refused the OAuth2 access token"), "{logs}");
    secrets.extend([good, expired, imap_good]);
    for secret in &secrets {
        for part in stretches(secret) {
            assert!(
                !logs.contains(&part),
                "{part:?} (of a secret) leaked into:\n{logs}"
            );
        }
    }
}
