//! OAuth2 access tokens for the logins (XOAUTH2, OAUTHBEARER): one
//! [`TokenSource`] per side of an account, and the sign-in flows of
//! `popferry oauth login` ([`login`]).
//!
//! Why a source with a cache rather than a refresh per login: an access
//! token lives about an hour and a pass logs in several times (POP3, IMAP
//! connections, DELE batches); asking the provider each time is slow and
//! invites rate limits. The cache is reused while the token has more than a
//! minute left; after the server refused a token, `force` refreshes anyway.
//! Refreshes of one side are serialised (the cache's lock is held across
//! the request), so parallel IMAP connections share one refresh.
//!
//! Providers may rotate refresh tokens (hand out a new one, refuse the old
//! one later). A refresh token in a `{ file }` is then rewritten atomically
//! (`store.rs`); one written in the configuration or an environment
//! variable cannot be, so the new one is kept in memory and a warning says
//! so. Tokens never reach a log line or an error (`error.rs`).

mod error;
mod http;
pub mod login;
mod store;

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError,
    Scope, StandardErrorResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::config::{OAuth2Config, Provider, SecretSource, TokenGrant};

pub use error::{OAuthError, OAuthErrorKind};
pub use http::{Http, HttpError, MAX_ANSWER, MAX_RETRY_AFTER};
pub use store::{write_secret_file, write_secret_file_async};

/// A cached token is reused only while it has more than this left.
pub const MIN_LIFETIME_LEFT: Duration = Duration::from_secs(60);

/// The lifetime assumed when the provider gives none (RFC 6749 makes
/// `expires_in` only recommended).
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300 + 60);

/// The longest lifetime believed (the answer is untrusted).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One access token, for one login.
pub struct AccessToken {
    secret: SecretString,
    expires_in: Option<Duration>,
}

impl AccessToken {
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    pub fn into_secret(self) -> SecretString {
        self.secret
    }

    /// How long it is still valid, when known (not for the command form).
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Where one side's access tokens come from, with their cache.
pub struct TokenSource {
    account: String,
    side: &'static str,
    timeout: Duration,
    config: OAuth2Config,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// A refresh token the provider rotated that could not be stored where
    /// the configuration says (a literal, an environment variable, a file
    /// that could not be written): used instead of the configured one.
    rotated: Option<SecretString>,
    http: Option<Http>,
}

struct Cached {
    token: SecretString,
    expires_at: Instant,
}

/// The oauth2-rs client for a refresh: only the token endpoint is set.
type RefreshClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

impl TokenSource {
    pub fn new(
        account: &str,
        side: &'static str,
        timeout: Duration,
        config: OAuth2Config,
    ) -> TokenSource {
        TokenSource {
            account: account.to_owned(),
            side,
            timeout,
            config,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &OAuth2Config {
        &self.config
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn side(&self) -> &'static str {
        self.side
    }

    fn error(&self, kind: OAuthErrorKind) -> OAuthError {
        OAuthError::new(&self.account, self.side, kind)
    }

    /// An access token for a login: the cached one while it has more than
    /// [`MIN_LIFETIME_LEFT`] left, else a new one. `force` (after the
    /// server refused a token) refreshes in any case.
    pub async fn access_token(&self, force: bool) -> Result<AccessToken, OAuthError> {
        let refresh = match &self.config.grant {
            TokenGrant::Command(cmd) => return self.run_command(cmd).await,
            TokenGrant::Refresh(source) => source,
        };
        let mut state = self.state.lock().await;
        if !force && let Some(c) = &state.cached {
            let left = c.expires_at.saturating_duration_since(Instant::now());
            if left > MIN_LIFETIME_LEFT {
                tracing::trace!(
                    account = %self.account,
                    side = self.side,
                    "Reusing the cached OAuth2 access token"
                );
                return Ok(AccessToken {
                    secret: c.token.clone(),
                    expires_in: Some(left),
                });
            }
        }
        state.cached = None;
        let token = self.refresh(&mut state, refresh).await?;
        Ok(token)
    }

    /// Runs `access_token = { command }`, bounded by the side's timeout.
    async fn run_command(&self, cmd: &str) -> Result<AccessToken, OAuthError> {
        let source = SecretSource::Command(cmd.to_owned());
        let reason = match tokio::time::timeout(self.timeout, source.resolve()).await {
            Ok(Ok(secret)) => {
                return Ok(AccessToken {
                    secret,
                    expires_in: None,
                });
            }
            Ok(Err(reason)) => reason,
            Err(_) => format!(
                "the command printed no token within {} (the side's timeout)",
                humantime::format_duration(self.timeout)
            ),
        };
        Err(self.error(OAuthErrorKind::Secret {
            key: "access_token",
            reason,
        }))
    }

    async fn refresh(
        &self,
        state: &mut State,
        source: &SecretSource,
    ) -> Result<AccessToken, OAuthError> {
        let refresh_token = match &state.rotated {
            Some(t) => t.clone(),
            None => self.read(source, "refresh_token").await?,
        };
        let client_secret = match &self.config.client_secret {
            Some(s) => Some(self.read(s, "client_secret").await?),
            None => None,
        };
        let http = match &state.http {
            Some(h) => h.clone(),
            None => {
                let h = Http::new(self.timeout).map_err(|e| {
                    self.error(OAuthErrorKind::Unavailable {
                        reason: e.to_string(),
                        retry_after: None,
                    })
                })?;
                state.http = Some(h.clone());
                h
            }
        };
        let client = self.refresh_client(client_secret.as_ref())?;
        let rt = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut request = client.exchange_refresh_token(&rt);
        if let Some(scope) = self.refresh_scope() {
            for s in scope.split_whitespace() {
                request = request.add_scope(Scope::new(s.to_owned()));
            }
        }
        let secrets = [
            refresh_token.expose_secret(),
            client_secret.as_ref().map_or("", |s| s.expose_secret()),
        ];
        let answer = request
            .request_async(&http)
            .await
            .map_err(|e| self.error(token_error(e, &secrets)))?;

        let access = answer.access_token().secret();
        if access.is_empty() {
            return Err(self.error(OAuthErrorKind::Garbled {
                reason: "the access token is empty".into(),
            }));
        }
        let access = SecretString::from(access.to_owned());
        let lifetime = answer
            .expires_in()
            .unwrap_or(ASSUMED_LIFETIME)
            .min(MAX_LIFETIME);
        if let Some(new) = answer.refresh_token()
            && !new.secret().is_empty()
            && new.secret() != refresh_token.expose_secret()
        {
            let new = SecretString::from(new.secret().to_owned());
            self.rotate(state, source, new).await;
        }
        tracing::debug!(
            account = %self.account,
            side = self.side,
            expires_in = %humantime::format_duration(lifetime),
            "Obtained a new OAuth2 access token"
        );
        state.cached = Some(Cached {
            token: access.clone(),
            expires_at: Instant::now() + lifetime,
        });
        Ok(AccessToken {
            secret: access,
            expires_in: Some(lifetime),
        })
    }

    /// The scope sent with a refresh: Google's token endpoint wants none
    /// (the grant keeps its scope); Microsoft's v2 endpoint wants it.
    fn refresh_scope(&self) -> Option<&str> {
        match self.config.provider {
            Some(Provider::Google) => None,
            _ => self.config.scope.as_deref(),
        }
    }

    fn refresh_client(&self, secret: Option<&SecretString>) -> Result<RefreshClient, OAuthError> {
        let (Some(url), Some(id)) = (&self.config.token_url, &self.config.client_id) else {
            // The loader requires both with a refresh token.
            return Err(self.error(OAuthErrorKind::Secret {
                key: "token_url",
                reason: "token_url and client_id are needed with a refresh token".into(),
            }));
        };
        let mut client = BasicClient::new(ClientId::new(id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(url.clone()));
        if let Some(s) = secret {
            client = client.set_client_secret(ClientSecret::new(s.expose_secret().to_owned()));
        }
        Ok(client)
    }

    async fn read(
        &self,
        source: &SecretSource,
        key: &'static str,
    ) -> Result<SecretString, OAuthError> {
        let reason = match tokio::time::timeout(self.timeout, source.resolve()).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(reason)) => format!("{reason} ({})", source.origin()),
            Err(_) => format!(
                "not read within {} ({})",
                humantime::format_duration(self.timeout),
                source.origin()
            ),
        };
        Err(self.error(OAuthErrorKind::Secret { key, reason }))
    }

    /// Keeps a rotated refresh token: in its file when it has one, else
    /// in memory with a warning.
    async fn rotate(&self, state: &mut State, source: &SecretSource, new: SecretString) {
        if let SecretSource::File(path) = source {
            match write_secret_file_async(path.clone(), new.clone()).await {
                Ok(()) => {
                    tracing::info!(
                        account = %self.account,
                        side = self.side,
                        file = %path.display(),
                        "The OAuth2 provider rotated the refresh token; stored the new one"
                    );
                    state.rotated = None;
                }
                Err(e) => {
                    tracing::warn!(
                        account = %self.account,
                        side = self.side,
                        file = %path.display(),
                        "The OAuth2 provider rotated the refresh token, but it cannot be stored ({e}); using it in memory until popferry stops, then a new sign-in will be needed"
                    );
                    state.rotated = Some(new);
                }
            }
            return;
        }
        tracing::warn!(
            account = %self.account,
            side = self.side,
            "The OAuth2 provider rotated the refresh token, which the configuration gives {}: it cannot be rewritten there, so the new one is used in memory until popferry stops; use refresh_token = {{ file = \"…\" }} to keep it",
            source.origin()
        );
        state.rotated = Some(new);
    }
}

/// Reduces oauth2-rs's error to ours: the provider's `error` and
/// description only (never the answer's body), and whether it may pass.
fn token_error<T>(
    e: RequestTokenError<HttpError, StandardErrorResponse<T>>,
    secrets: &[&str],
) -> OAuthErrorKind
where
    T: oauth2::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().as_ref();
            let words =
                error::server_words(code, r.error_description().map(String::as_str), secrets);
            if code == BasicErrorResponseType::InvalidGrant.as_ref() {
                OAuthErrorKind::Revoked { words }
            } else {
                OAuthErrorKind::Refused { words }
            }
        }
        RequestTokenError::Request(h) => OAuthErrorKind::Unavailable {
            retry_after: h.retry_after(),
            reason: error::scrub(h.to_string(), secrets),
        },
        RequestTokenError::Parse(e, _body) => OAuthErrorKind::Garbled {
            // The path only (e.g. "access_token"), never the body, which
            // may hold a token.
            reason: format!("not a token answer (at {})", e.path()),
        },
        RequestTokenError::Other(m) => OAuthErrorKind::Garbled {
            reason: error::scrub(m.chars().take(200).collect(), secrets),
        },
    }
}
