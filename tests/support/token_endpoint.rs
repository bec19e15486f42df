//! A small OAuth2 provider on 127.0.0.1 for the tests: the token endpoint
//! (refresh-token, device-code and authorization-code grants), the device
//! authorization endpoint and the authorization endpoint (PKCE).
//!
//! No real provider can be run here, so this is the one fake the OAuth2
//! tests need; it follows RFC 6749, 7636 and 8628 as far as popferry uses
//! them, and refuses what a provider refuses (a wrong client secret, a
//! revoked or rotated-away refresh token, a PKCE verifier that does not
//! match). Access tokens are minted by a closure the test passes in (the
//! default: an opaque random token), so that a test against Dovecot can
//! mint the JWTs its oauth2 passdb validates. On demand it answers 5xx or
//! 429 (with `Retry-After`), rotates refresh tokens, and records every
//! request so that tests can assert what was sent.
//!
//! It runs on a thread of its own with its own runtime, so that both
//! `#[test]` and `#[tokio::test]` functions can use it; it stops on drop.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Mints an access token for a subject, valid for the given seconds.
pub type Mint = Arc<dyn Fn(&str, u64) -> String + Send + Sync>;

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The form body (POST) or the query (GET), decoded.
    pub params: BTreeMap<String, String>,
    pub authorization: Option<String>,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// A failure served instead of the next answer of the token endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    pub status: u16,
    pub retry_after: Option<u64>,
}

struct Pending {
    device_code: String,
    subject: Option<String>,
}

struct Grant {
    code: String,
    subject: String,
    challenge: String,
    redirect_uri: String,
}

struct Inner {
    mint: Mint,
    client_id: String,
    client_secret: Option<String>,
    lifetime: u64,
    /// The lifetime the mint gives the tokens when it differs from the
    /// `expires_in` announced (a provider whose tokens die early).
    mint_lifetime: Option<u64>,
    /// Valid refresh tokens and their subject.
    refresh: BTreeMap<String, String>,
    rotate_next: bool,
    /// Every refresh rotates.
    rotate_always: bool,
    failures: VecDeque<Failure>,
    /// By user code.
    pending: BTreeMap<String, Pending>,
    grants: Vec<Grant>,
    login_subject: String,
    issued_access: Vec<String>,
    issued_refresh: Vec<String>,
    requests: Vec<Recorded>,
}

/// The provider; stops on drop.
pub struct TokenEndpoint {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenEndpoint {
    /// A provider minting opaque random access tokens, for the client
    /// `client_id` with the secret `client_secret` (if any).
    pub fn start(client_id: &str, client_secret: Option<&str>) -> TokenEndpoint {
        TokenEndpoint::with_mint(
            client_id,
            client_secret,
            Arc::new(|subject: &str, _lifetime: u64| format!("at-{subject}-{}", random())),
        )
    }

    pub fn with_mint(client_id: &str, client_secret: Option<&str>, mint: Mint) -> TokenEndpoint {
        let inner = Arc::new(Mutex::new(Inner {
            mint,
            client_id: client_id.to_owned(),
            client_secret: client_secret.map(str::to_owned),
            lifetime: 3600,
            mint_lifetime: None,
            refresh: BTreeMap::new(),
            rotate_next: false,
            rotate_always: false,
            failures: VecDeque::new(),
            pending: BTreeMap::new(),
            grants: Vec::new(),
            login_subject: "user@example.test".into(),
            issued_access: Vec::new(),
            issued_refresh: Vec::new(),
            requests: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the token endpoint");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/token", axum::routing::post(token))
                    .route("/devicecode", axum::routing::post(devicecode))
                    .route("/authorize", axum::routing::get(authorize))
                    .with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        TokenEndpoint {
            addr,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("token endpoint state")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }
    pub fn device_url(&self) -> String {
        format!("{}/devicecode", self.base_url())
    }
    pub fn auth_url(&self) -> String {
        format!("{}/authorize", self.base_url())
    }

    /// Issues a valid refresh token for `subject`.
    pub fn issue_refresh_token(&self, subject: &str) -> String {
        let rt = format!("rt-{}", random());
        let mut s = self.lock();
        s.refresh.insert(rt.clone(), subject.to_owned());
        s.issued_refresh.push(rt.clone());
        rt
    }

    pub fn revoke(&self, refresh_token: &str) {
        self.lock().refresh.remove(refresh_token);
    }

    pub fn is_valid_refresh_token(&self, refresh_token: &str) -> bool {
        self.lock().refresh.contains_key(refresh_token)
    }

    /// The `expires_in` of the access tokens issued from now on.
    pub fn set_lifetime(&self, seconds: u64) {
        self.lock().lifetime = seconds;
    }

    /// The lifetime of the tokens minted from now on, while `expires_in`
    /// still announces [`Self::set_lifetime`]'s (None: the same): tokens
    /// that a server refuses before the client expects it to.
    pub fn set_mint_lifetime(&self, seconds: Option<u64>) {
        self.lock().mint_lifetime = seconds;
    }

    /// Every refresh from now on (`true`) answers with a new refresh token
    /// and revokes the one it was given.
    pub fn set_rotate(&self, always: bool) {
        self.lock().rotate_always = always;
    }

    /// The next refresh answers with a new refresh token and revokes the
    /// one it was given.
    pub fn rotate_next(&self) {
        self.lock().rotate_next = true;
    }

    /// The next request to the token endpoint gets this failure instead.
    pub fn fail_next(&self, status: u16, retry_after: Option<u64>) {
        self.lock().failures.push_back(Failure {
            status,
            retry_after,
        });
    }

    /// The subject signed in by the authorization endpoint.
    pub fn set_login_subject(&self, subject: &str) {
        self.lock().login_subject = subject.to_owned();
    }

    /// The user enters `user_code` at the verification page and signs in
    /// as `subject`. False when no such code is pending.
    pub fn approve(&self, user_code: &str, subject: &str) -> bool {
        match self.lock().pending.get_mut(user_code) {
            Some(p) => {
                p.subject = Some(subject.to_owned());
                true
            }
            None => false,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Every access token and refresh token handed out so far.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.lock().issued_access.clone()
    }
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.lock().issued_refresh.clone()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn random() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(out.len() as u64);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn form(bytes: &[u8]) -> BTreeMap<String, String> {
    oauth2::url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(code: &str, description: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": code, "error_description": description}),
    )
}

fn record(
    s: &mut Inner,
    method: &str,
    path: &str,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) {
    s.requests.push(Recorded {
        method: method.into(),
        path: path.into(),
        params: params.clone(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
}

/// Checks the client: id, and secret when one is configured (in the body,
/// or HTTP Basic).
fn client_ok(s: &Inner, params: &BTreeMap<String, String>, headers: &HeaderMap) -> bool {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match &basic {
        Some(pair) => match pair.split_once(':') {
            Some((i, p)) => (Some(i.to_owned()), Some(p.to_owned())),
            None => (None, None),
        },
        None => (
            params.get("client_id").cloned(),
            params.get("client_secret").cloned(),
        ),
    };
    id.as_deref() == Some(s.client_id.as_str())
        && match &s.client_secret {
            Some(want) => secret.as_deref() == Some(want.as_str()),
            None => true,
        }
}

fn tokens(s: &mut Inner, subject: &str, with_refresh: bool) -> Response {
    let lifetime = s.lifetime;
    let access = (s.mint)(subject, s.mint_lifetime.unwrap_or(lifetime));
    s.issued_access.push(access.clone());
    let mut body = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime,
    });
    if with_refresh {
        let rt = format!("rt-{}", random());
        s.refresh.insert(rt.clone(), subject.to_owned());
        s.issued_refresh.push(rt.clone());
        body["refresh_token"] = serde_json::Value::String(rt);
    }
    json(StatusCode::OK, body)
}

async fn token(
    State(state): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    record(&mut s, "POST", "/token", &params, &headers);
    if let Some(f) = s.failures.pop_front() {
        let mut r = (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "<html>busy</html>",
        )
            .into_response();
        if let Some(secs) = f.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if !client_ok(&s, &params, &headers) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"}),
        );
    }
    match params.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let rt = params.get("refresh_token").cloned().unwrap_or_default();
            let Some(subject) = s.refresh.get(&rt).cloned() else {
                return oauth_error(
                    "invalid_grant",
                    "the refresh token is expired, revoked or unknown",
                );
            };
            let rotate = std::mem::replace(&mut s.rotate_next, false) || s.rotate_always;
            if rotate {
                s.refresh.remove(&rt);
            }
            tokens(&mut s, &subject, rotate)
        }
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            let dc = params.get("device_code").cloned().unwrap_or_default();
            let found = s
                .pending
                .iter()
                .find(|(_, p)| p.device_code == dc)
                .map(|(code, p)| (code.clone(), p.subject.clone()));
            match found {
                None => oauth_error("expired_token", "unknown device code"),
                Some((_, None)) => oauth_error("authorization_pending", "waiting for the user"),
                Some((user_code, Some(subject))) => {
                    s.pending.remove(&user_code);
                    tokens(&mut s, &subject, true)
                }
            }
        }
        Some("authorization_code") => {
            let code = params.get("code").cloned().unwrap_or_default();
            let Some(i) = s.grants.iter().position(|g| g.code == code) else {
                return oauth_error("invalid_grant", "unknown or used code");
            };
            let g = s.grants.remove(i);
            let verifier = params.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            if challenge != g.challenge {
                return oauth_error("invalid_grant", "PKCE verification failed");
            }
            if params.get("redirect_uri") != Some(&g.redirect_uri) {
                return oauth_error("invalid_grant", "redirect_uri differs");
            }
            tokens(&mut s, &g.subject, true)
        }
        _ => oauth_error("unsupported_grant_type", "no such grant"),
    }
}

async fn devicecode(
    State(state): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    record(&mut s, "POST", "/devicecode", &params, &headers);
    if !client_ok(&s, &params, &headers) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_client"}),
        );
    }
    let r = random();
    let user_code = format!(
        "{}-{}",
        r.get(0..4).unwrap_or("ABCD").to_ascii_uppercase(),
        r.get(4..8).unwrap_or("EFGH").to_ascii_uppercase()
    );
    let device_code = format!("dc-{}", random());
    s.pending.insert(
        user_code.clone(),
        Pending {
            device_code: device_code.clone(),
            subject: None,
        },
    );
    json(
        StatusCode::OK,
        serde_json::json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": "https://microsoft.example/devicelogin",
            "expires_in": 600,
            "interval": 1,
        }),
    )
}

async fn authorize(
    State(state): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form(query.unwrap_or_default().as_bytes());
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    record(&mut s, "GET", "/authorize", &params, &headers);
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    if get("client_id") != s.client_id
        || get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let redirect_uri = get("redirect_uri");
    let Ok(mut target) = oauth2::url::Url::parse(&redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    let code = format!("code-{}", random());
    let subject = s.login_subject.clone();
    s.grants.push(Grant {
        code: code.clone(),
        subject,
        challenge: get("code_challenge"),
        redirect_uri,
    });
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}
