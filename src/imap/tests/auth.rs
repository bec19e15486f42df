//! AUTHENTICATE XOAUTH2 / OAUTHBEARER on scripted bytes: SASL-IR or the
//! continuation, the error challenge answered and decoded, a refused token
//! told apart, and a credential of the wrong kind.

use base64::Engine as _;
use secrecy::SecretString;

use super::super::error::ImapErrorKind;
use super::*;
use crate::config::Credential;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A line for the script (the fake server takes `'static` text).
fn line(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn bearer(t: &str) -> Option<Credential> {
    Some(Credential::Bearer(SecretString::from(t)))
}

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

fn xoauth2_ir() -> String {
    b64(&format!("user=alice\x01auth=Bearer {TOKEN}\x01\x01"))
}

#[tokio::test]
async fn xoauth2_with_sasl_ir_and_without() {
    let (s, h) = fake(vec![
        Expect(line(format!("pf1 AUTHENTICATE XOAUTH2 {}", xoauth2_ir()))),
        Send("pf1 OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "SASL-IR", "AUTH=XOAUTH2"]);
    let m = c
        .authenticate(&settings(ImapAuth::XOAuth2, "pw"), true, bearer(TOKEN))
        .await
        .expect("login");
    assert_eq!(m, "AUTHENTICATE XOAUTH2");
    assert!(c.caps.uidplus());
    finish(c, h).await;

    let (s, h) = fake(vec![
        Expect("pf1 AUTHENTICATE XOAUTH2"),
        Send("+ \r\n"),
        Expect(line(xoauth2_ir())),
        Send("pf1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
    ]);
    let mut c = conn(s, &["IMAP4rev1", "AUTH=XOAUTH2"]);
    c.authenticate(&settings(ImapAuth::XOAuth2, "pw"), true, bearer(TOKEN))
        .await
        .expect("login");
    finish(c, h).await;
}

#[tokio::test]
async fn a_refused_token_is_acknowledged_and_its_error_decoded() {
    let json = r#"{"status":"401","schemes":"bearer","scope":"mail"}"#;
    let (s, h) = fake(vec![
        Expect(line(format!("pf1 AUTHENTICATE XOAUTH2 {}", xoauth2_ir()))),
        Send(line(format!("+ {}\r\n", b64(json)))),
        // XOAUTH2: an empty line, then the tagged NO.
        Expect(""),
        Send("pf1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ]);
    let mut c = conn(s, &["SASL-IR"]);
    let e = c
        .authenticate(&settings(ImapAuth::XOAuth2, "pw"), true, bearer(TOKEN))
        .await
        .expect_err("refused");
    assert!(
        e.is_auth() && e.is_token_refused() && !e.is_transient(),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("imap.test:143"), "{text}");
    assert!(text.contains("AUTHENTICATIONFAILED"), "{text}");
    assert!(text.contains(r#"status 401, scope "mail""#), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    finish(c, h).await;
}

#[tokio::test]
async fn oauthbearer_names_host_and_port_and_answers_the_error_with_0x01() {
    let ir = b64(&format!(
        "n,a=alice,\x01host=imap.test\x01port=143\x01auth=Bearer {TOKEN}\x01\x01"
    ));
    let (s, h) = fake(vec![
        Expect("pf1 AUTHENTICATE OAUTHBEARER"),
        Send("+\r\n"),
        Expect(line(ir)),
        Send(line(format!(
            "+ {}\r\n",
            b64(r#"{"status":"invalid_token","scope":"imap"}"#)
        ))),
        Expect("AQ=="),
        Send("pf1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ]);
    let mut c = conn(s, &["AUTH=OAUTHBEARER"]);
    let e = c
        .authenticate(&settings(ImapAuth::OAuthBearer, "pw"), true, bearer(TOKEN))
        .await
        .expect_err("refused");
    assert!(e.is_token_refused(), "{e:?}");
    assert!(
        e.to_string()
            .contains(r#"status invalid_token, scope "imap""#),
        "{e}"
    );
    finish(c, h).await;
}

#[tokio::test]
async fn a_temporary_refusal_of_a_token_stays_transient() {
    let (s, h) = fake(vec![
        Expect(line(format!("pf1 AUTHENTICATE XOAUTH2 {}", xoauth2_ir()))),
        Send("pf1 NO [UNAVAILABLE] Temporary authentication failure.\r\n"),
    ]);
    let mut c = conn(s, &["SASL-IR"]);
    let e = c
        .authenticate(&settings(ImapAuth::XOAuth2, "pw"), true, bearer(TOKEN))
        .await
        .expect_err("refused");
    assert!(e.is_transient() && !e.is_token_refused(), "{e:?}");
    finish(c, h).await;
}

#[tokio::test]
async fn a_credential_of_the_wrong_kind_sends_nothing() {
    let (s, h) = fake(vec![]);
    let mut c = conn(s, &["SASL-IR"]);
    let e = c
        .authenticate(&settings(ImapAuth::XOAuth2, "s3cret"), true, None)
        .await
        .expect_err("a password for xoauth2");
    assert!(
        matches!(e.kind(), ImapErrorKind::WrongCredential { .. }),
        "{e:?}"
    );
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = c
        .authenticate(&settings(ImapAuth::Login, "pw"), true, bearer(TOKEN))
        .await
        .expect_err("a token for LOGIN");
    assert!(e.to_string().contains("an OAuth2 access token"), "{e}");
    // A token needs TLS like a password.
    let mut plain = settings(ImapAuth::XOAuth2, "pw");
    plain.allow_plaintext_password = false;
    let e = c
        .authenticate(&plain, false, bearer(TOKEN))
        .await
        .expect_err("no TLS");
    assert!(matches!(e.kind(), ImapErrorKind::PlaintextRefused), "{e}");
    finish(c, h).await;
}
