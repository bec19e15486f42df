//! OAuth2 access tokens (issue 10, the token side) against a token
//! endpoint on loopback (`support::token_endpoint`): the cache and when it
//! refreshes, `force`, refresh-token rotation (the file rewritten
//! atomically, mode 0600, the old token refused afterwards), `invalid_grant`
//! as a permanent error with the advice to sign in again, 5xx and 429 as
//! transient (Retry-After clamped), the `access_token = { command }` form,
//! the client secret sent, and a trace-level run (every target, no caps)
//! whose output holds no token, refresh token, client secret nor the base64
//! of any of them.
//!
//! These drive `popferry::oauth::TokenSource` and
//! `ServerSettings::credential` directly: no mechanism of this branch logs
//! in with a token yet (XOAUTH2/OAUTHBEARER come with the SASL side), so a
//! configuration with an `oauth2` table cannot be loaded by the binary here;
//! `tests/oauth_login.rs` drives the binary once it can.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use popferry::config::{
    Credential, Endpoint, OAuth2Config, OAuth2Settings, Pop3Auth, SecretSource, ServerSettings,
    TlsMode, TokenGrant,
};
use popferry::oauth::{MAX_RETRY_AFTER, OAuthErrorKind, TokenSource};
use secrecy::ExposeSecret;
use support::token_endpoint::TokenEndpoint;

const CLIENT: &str = "popferry-test-client";
const CLIENT_SECRET: &str = "cs-Very-Secret-Client-Value";

fn config(ep: &TokenEndpoint, refresh: SecretSource, secret: Option<&str>) -> OAuth2Config {
    OAuth2Config {
        provider: None,
        token_url: Some(ep.token_url().parse().expect("url")),
        device_url: Some(ep.device_url().parse().expect("url")),
        auth_url: Some(ep.auth_url().parse().expect("url")),
        client_id: Some(CLIENT.into()),
        client_secret: secret.map(SecretSource::from),
        grant: TokenGrant::Refresh(refresh),
        scope: Some("https://outlook.office.com/POP.AccessAsUser.All offline_access".into()),
    }
}

fn source(config: OAuth2Config) -> TokenSource {
    TokenSource::new("legacy", "source", Duration::from_secs(10), config)
}

fn refreshes(ep: &TokenEndpoint) -> usize {
    ep.requests()
        .iter()
        .filter(|r| r.param("grant_type") == Some("refresh_token"))
        .count()
}

fn expose(t: &popferry::oauth::AccessToken) -> String {
    t.secret().expose_secret().to_owned()
}

#[tokio::test]
async fn a_cached_token_is_reused_while_it_has_more_than_a_minute_left() {
    let ep = TokenEndpoint::start(CLIENT, Some(CLIENT_SECRET));
    let rt = ep.issue_refresh_token("me@example.test");
    let tokens = source(config(
        &ep,
        SecretSource::from(rt.as_str()),
        Some(CLIENT_SECRET),
    ));

    let first = tokens.access_token(false).await.expect("first");
    let again = tokens.access_token(false).await.expect("again");
    assert_eq!(expose(&first), expose(&again), "reused");
    assert_eq!(refreshes(&ep), 1);
    assert!(
        first
            .expires_in()
            .is_some_and(|d| d > Duration::from_secs(3500))
    );
    assert!(ep.issued_access_tokens().contains(&expose(&first)));

    // The client authenticated with its secret, in the body, and asked for
    // the configured scope.
    let sent = ep.requests();
    let r = sent.first().expect("a request");
    assert_eq!(r.param("client_id"), Some(CLIENT));
    assert_eq!(r.param("client_secret"), Some(CLIENT_SECRET));
    assert_eq!(r.param("refresh_token"), Some(rt.as_str()));
    assert_eq!(
        r.param("scope"),
        Some("https://outlook.office.com/POP.AccessAsUser.All offline_access")
    );
}

#[tokio::test]
async fn a_token_with_less_than_a_minute_left_is_refreshed() {
    let ep = TokenEndpoint::start(CLIENT, None);
    ep.set_lifetime(59);
    let rt = ep.issue_refresh_token("me@example.test");
    let tokens = source(config(&ep, SecretSource::from(rt.as_str()), None));
    let first = tokens.access_token(false).await.expect("first");
    let second = tokens.access_token(false).await.expect("second");
    assert_ne!(expose(&first), expose(&second));
    assert_eq!(refreshes(&ep), 2);

    // 61 s left is still more than a minute.
    ep.set_lifetime(61);
    let third = tokens.access_token(false).await.expect("third");
    let fourth = tokens.access_token(false).await.expect("fourth");
    assert_eq!(expose(&third), expose(&fourth));
    assert_eq!(refreshes(&ep), 3);
}

#[tokio::test]
async fn force_refreshes_even_a_fresh_token() {
    let ep = TokenEndpoint::start(CLIENT, None);
    let rt = ep.issue_refresh_token("me@example.test");
    let tokens = source(config(&ep, SecretSource::from(rt.as_str()), None));
    let first = tokens.access_token(false).await.expect("first");
    let forced = tokens.access_token(true).await.expect("forced");
    assert_ne!(expose(&first), expose(&forced));
    assert_eq!(refreshes(&ep), 2);
    // And the forced one is cached in its turn.
    let after = tokens.access_token(false).await.expect("after");
    assert_eq!(expose(&after), expose(&forced));
    assert_eq!(refreshes(&ep), 2);
}

#[cfg(unix)]
#[tokio::test]
async fn a_rotated_refresh_token_rewrites_its_file_atomically_and_the_old_one_stops_working() {
    use std::os::unix::fs::PermissionsExt;

    let ep = TokenEndpoint::start(CLIENT, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("legacy-pop3.token");
    let old = ep.issue_refresh_token("me@example.test");
    std::fs::write(&file, format!("{old}\n")).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let inode_before = std::fs::metadata(&file).expect("meta");

    let tokens = source(config(&ep, SecretSource::File(file.clone()), None));
    ep.rotate_next();
    tokens
        .access_token(false)
        .await
        .expect("refresh with rotation");

    let stored = std::fs::read_to_string(&file).expect("read");
    let new = stored.trim_end().to_owned();
    assert_ne!(new, old);
    assert_eq!(ep.issued_refresh_tokens().last(), Some(&new));
    assert!(ep.is_valid_refresh_token(&new));
    assert!(
        !ep.is_valid_refresh_token(&old),
        "the old token stops working"
    );
    let meta = std::fs::metadata(&file).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    {
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            meta.ino(),
            inode_before.ino(),
            "replaced by a rename, not rewritten in place"
        );
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["legacy-pop3.token"], "no temporary file left");

    // The next refresh uses the stored token; the old one is refused.
    tokens
        .access_token(true)
        .await
        .expect("refresh with the new token");
    let last = ep.requests();
    assert_eq!(
        last.last().and_then(|r| r.param("refresh_token")),
        Some(new.as_str())
    );
    let stale = source(config(&ep, SecretSource::from(old.as_str()), None));
    let e = stale.access_token(false).await.expect_err("old token");
    assert!(!e.is_transient(), "{e}");
}

#[tokio::test]
async fn a_rotated_literal_refresh_token_is_kept_in_memory() {
    let ep = TokenEndpoint::start(CLIENT, None);
    let old = ep.issue_refresh_token("me@example.test");
    let tokens = source(config(&ep, SecretSource::from(old.as_str()), None));
    ep.rotate_next();
    tokens.access_token(false).await.expect("rotated");
    assert!(!ep.is_valid_refresh_token(&old));
    // The configuration still says the old one, which the provider now
    // refuses: only the one kept in memory works.
    tokens
        .access_token(true)
        .await
        .expect("the new token, from memory");
    let new = ep.issued_refresh_tokens().last().cloned().expect("issued");
    assert_eq!(
        ep.requests().last().and_then(|r| r.param("refresh_token")),
        Some(new.as_str())
    );
}

#[tokio::test]
async fn a_refused_refresh_token_is_permanent_and_says_to_sign_in_again() {
    let ep = TokenEndpoint::start(CLIENT, None);
    let rt = ep.issue_refresh_token("me@example.test");
    ep.revoke(&rt);
    let tokens = source(config(&ep, SecretSource::from(rt.as_str()), None));
    let e = tokens.access_token(false).await.expect_err("revoked");
    assert!(!e.is_transient() && e.needs_login(), "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("\"legacy\"")
            && shown.contains("[accounts.source.oauth2]")
            && shown.contains("invalid_grant")
            && shown.contains("popferry oauth login --account legacy --side source"),
        "{shown}"
    );
    assert!(!shown.contains(&rt), "{shown}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_permanent_and_not_shown() {
    let ep = TokenEndpoint::start(CLIENT, Some(CLIENT_SECRET));
    let rt = ep.issue_refresh_token("me@example.test");
    let tokens = source(config(
        &ep,
        SecretSource::from(rt.as_str()),
        Some("cs-wrong-secret-value"),
    ));
    let e = tokens.access_token(false).await.expect_err("wrong secret");
    assert!(!e.is_transient() && !e.needs_login(), "{e}");
    assert!(matches!(e.kind(), OAuthErrorKind::Refused { .. }), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("invalid_client"), "{shown}");
    assert!(
        !shown.contains("cs-wrong-secret-value") && !shown.contains(&rt),
        "{shown}"
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_transient() {
    let ep = TokenEndpoint::start(CLIENT, None);
    let rt = ep.issue_refresh_token("me@example.test");
    let tokens = source(config(&ep, SecretSource::from(rt.as_str()), None));

    ep.fail_next(503, None);
    let e = tokens.access_token(false).await.expect_err("503");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    assert_eq!(e.retry_after(), None);

    ep.fail_next(429, Some(7));
    let e = tokens.access_token(false).await.expect_err("429");
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

    ep.fail_next(429, Some(10_000_000));
    let e = tokens.access_token(false).await.expect_err("429, far away");
    assert_eq!(e.retry_after(), Some(MAX_RETRY_AFTER), "clamped");

    // And then it works again.
    tokens.access_token(false).await.expect("recovered");
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_transient() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = OAuth2Config {
        token_url: Some(
            format!("http://127.0.0.1:{port}/token")
                .parse()
                .expect("url"),
        ),
        ..config(
            &TokenEndpoint::start(CLIENT, None),
            SecretSource::from("rt-x"),
            None,
        )
    };
    let e = source(cfg)
        .access_token(false)
        .await
        .expect_err("unreachable");
    assert!(e.is_transient(), "{e}");
}

fn settings(oauth2: Option<OAuth2Settings>) -> ServerSettings<Pop3Auth> {
    ServerSettings {
        endpoint: Endpoint {
            host: "127.0.0.1".into(),
            port: 1,
            tls: TlsMode::None,
            ca_file: None,
            tls_fingerprint: None,
            timeout: Duration::from_secs(5),
        },
        username: "me".into(),
        password: SecretSource::from("unused"),
        auth: Pop3Auth::Auto,
        allow_plaintext_password: true,
        oauth2,
    }
}

fn bearer(c: Credential) -> String {
    match c {
        Credential::Bearer(t) => t.expose_secret().to_owned(),
        Credential::Password(_) => panic!("a bearer token was expected"),
    }
}

#[tokio::test]
async fn the_access_token_command_form_runs_at_each_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("n");
    let cmd = format!(
        "echo x >> {p}; printf 'at-from-helper-%s\\n' $(wc -l < {p})",
        p = counter.display()
    );
    let cfg = OAuth2Config {
        provider: None,
        token_url: None,
        device_url: None,
        auth_url: None,
        client_id: None,
        client_secret: None,
        grant: TokenGrant::Command(cmd),
        scope: None,
    };
    let s = settings(Some(OAuth2Settings::new(
        "legacy",
        "source",
        Duration::from_secs(5),
        cfg,
    )));
    assert_eq!(
        bearer(s.credential().await.expect("one")),
        "at-from-helper-1"
    );
    assert_eq!(
        bearer(s.credential().await.expect("two")),
        "at-from-helper-2"
    );

    let failing = OAuth2Config {
        grant: TokenGrant::Command("echo at-LEAKED; echo helper broke >&2; exit 3".into()),
        ..s.oauth2.as_ref().expect("table").config.clone()
    };
    let s = settings(Some(OAuth2Settings::new(
        "legacy",
        "source",
        Duration::from_secs(5),
        failing,
    )));
    let e = match s.credential().await {
        Ok(_) => panic!("a failing helper must fail"),
        Err(e) => e,
    };
    let shown = e.to_string();
    assert!(
        shown.contains("[accounts.source.oauth2]")
            && shown.contains("access_token")
            && shown.contains("helper broke"),
        "{shown}"
    );
    assert!(!shown.contains("at-LEAKED"), "{shown}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn credential_returns_a_bearer_token_and_fresh_credential_refreshes() {
    let ep = TokenEndpoint::start(CLIENT, None);
    let rt = ep.issue_refresh_token("me@example.test");
    let o = OAuth2Settings::new(
        "legacy",
        "source",
        Duration::from_secs(5),
        config(&ep, SecretSource::from(rt.as_str()), None),
    );
    let s = settings(Some(o));
    let a = bearer(s.credential().await.expect("a"));
    // A clone of the settings (as the daemon hands to each pass) shares
    // the cache.
    let b = bearer(s.clone().credential().await.expect("b"));
    assert_eq!(a, b);
    let c = bearer(s.fresh_credential().await.expect("c"));
    assert_ne!(a, c);
    assert_eq!(refreshes(&ep), 2);

    ep.revoke(&rt);
    let e = match s.fresh_credential().await {
        Ok(_) => panic!("revoked"),
        Err(e) => e,
    };
    assert!(!e.is_transient(), "{e}");
}

/// Everything logged in this process, at every level and target (the
/// `log` records of reqwest and others included, no caps).
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static SINK: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let writer = sink.clone();
        let make = move || Capture(writer.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(make)
            .with_ansi(false)
            .try_init()
            .expect("the only subscriber of this process");
        sink
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Forms of a secret that must not appear.
fn forms(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        secret.to_owned(),
        b64.encode(secret),
        url.encode(secret),
        b64.encode(format!("user=me\x01auth=Bearer {secret}\x01\x01")),
        b64.encode(format!("{CLIENT}:{secret}")),
    ]
}

#[tokio::test]
async fn a_trace_level_run_logs_no_token_and_no_secret() {
    let sink = captured();
    let ep = TokenEndpoint::start(CLIENT, Some(CLIENT_SECRET));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rt");
    let rt = ep.issue_refresh_token("me@example.test");
    std::fs::write(&file, &rt).expect("write");
    let tokens = source(config(
        &ep,
        SecretSource::File(file.clone()),
        Some(CLIENT_SECRET),
    ));

    tokens.access_token(false).await.expect("refresh");
    tokens.access_token(false).await.expect("cached");
    ep.rotate_next();
    tokens.access_token(true).await.expect("rotated");
    ep.fail_next(500, Some(1));
    let _ = tokens.access_token(true).await.expect_err("500");
    let literal = source(config(
        &ep,
        SecretSource::from(rt.as_str()),
        Some(CLIENT_SECRET),
    ));
    let _ = literal
        .access_token(false)
        .await
        .expect_err("the rotated-away token");
    let wrong = source(config(
        &ep,
        SecretSource::File(file.clone()),
        Some("cs-Other-Wrong-Secret"),
    ));
    let _ = wrong.access_token(false).await.expect_err("wrong secret");

    let mut secrets = vec![
        rt.clone(),
        CLIENT_SECRET.to_owned(),
        "cs-Other-Wrong-Secret".into(),
    ];
    secrets.extend(ep.issued_access_tokens());
    secrets.extend(ep.issued_refresh_tokens());
    assert!(secrets.len() >= 6, "{}", secrets.len());
    let out = String::from_utf8_lossy(&sink.lock().expect("sink")).into_owned();
    assert!(
        out.contains("Obtained a new OAuth2 access token") && out.contains("rotated"),
        "the run was traced: {out}"
    );
    for s in &secrets {
        for f in forms(s) {
            assert!(!out.contains(&f), "{f:?} appears in the trace:\n{out}");
        }
    }
}
