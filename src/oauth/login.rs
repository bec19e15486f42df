//! `popferry oauth login`: sign in once, keep the refresh token.
//!
//! Two flows, as providers offer them to an app without a web server of its
//! own: the device code (RFC 8628; Microsoft: the user opens a URL on any
//! device and types a code while we poll) and the authorization code with
//! PKCE on a loopback redirect (RFC 7636, RFC 8252; Google's desktop
//! clients: the user opens a URL, the provider redirects the browser to a
//! listener of ours on 127.0.0.1 with the code, and `state` must match).
//! The refresh token goes where `refresh_token = { file }` says, written
//! atomically (`store.rs`); any other form is refused before anything is
//! asked, since it could not be written. Nothing here prints a token: the
//! caller is handed what the user must see ([`Prompt`]) and where the token
//! went ([`LoggedIn`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, PkceCodeChallenge, RedirectUrl, Scope,
    StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use super::{Http, OAuthError, token_error, write_secret_file_async};
use crate::config::{LoginFlow, OAuth2Config, Provider, SecretSource, TokenGrant};

/// How long the user has to finish signing in (the device code's own
/// expiry may be shorter).
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What the user must do now.
#[derive(Debug)]
pub enum Prompt {
    /// Open `verification_uri` and enter `user_code`.
    DeviceCode {
        verification_uri: String,
        user_code: String,
        expires_in: Duration,
    },
    /// Open `url` in a browser on this machine.
    OpenUrl { url: String },
}

/// Where the refresh token went.
#[derive(Debug)]
pub struct LoggedIn {
    pub file: PathBuf,
    pub flow: LoginFlow,
    /// The access token obtained with it, for the message.
    pub access_expires_in: Option<Duration>,
}

/// One side's sign-in.
pub struct Login<'a> {
    pub account: &'a str,
    pub side: &'static str,
    pub config: &'a OAuth2Config,
    /// The side's timeout, for each HTTP request.
    pub timeout: Duration,
}

impl Login<'_> {
    /// The file the refresh token goes to, or why there is none.
    pub fn target_file(&self) -> anyhow::Result<PathBuf> {
        let table = format!(
            "[accounts.{}.oauth2] of account {:?}",
            self.side, self.account
        );
        match &self.config.grant {
            TokenGrant::Refresh(SecretSource::File(p)) => Ok(p.clone()),
            TokenGrant::Refresh(other) => bail!(
                "{table}: refresh_token is {}, where popferry cannot store a token; set refresh_token = {{ file = \"/path/to/{}.token\" }} and run this again",
                other.origin(),
                self.account
            ),
            TokenGrant::Command(_) => bail!(
                "{table}: access_token = {{ command }} is set, so popferry asks no provider; to let popferry sign in, replace it with refresh_token = {{ file = \"…\" }}"
            ),
        }
    }

    /// The flow to use: `chosen`, else the provider's usual one, else the
    /// one the table has a URL for (device code first).
    pub fn flow(&self, chosen: Option<LoginFlow>) -> anyhow::Result<LoginFlow> {
        let flow = chosen
            .or(self.config.provider.map(Provider::default_flow))
            .or(self.config.device_url.as_ref().map(|_| LoginFlow::DeviceCode))
            .or(self.config.auth_url.as_ref().map(|_| LoginFlow::Browser))
            .ok_or_else(|| {
                anyhow!(
                    "[accounts.{}.oauth2] of account {:?} has neither device_url nor auth_url: set provider, or the URL of the flow to use",
                    self.side,
                    self.account
                )
            })?;
        Ok(flow)
    }

    /// Signs in with `flow`, telling the user what to do through `prompt`,
    /// and stores the refresh token.
    pub async fn run(
        &self,
        flow: LoginFlow,
        prompt: impl FnMut(Prompt),
    ) -> anyhow::Result<LoggedIn> {
        let file = self.target_file()?;
        let (Some(token_url), Some(client_id)) = (&self.config.token_url, &self.config.client_id)
        else {
            bail!(
                "[accounts.{}.oauth2] of account {:?}: token_url and client_id are needed to sign in",
                self.side,
                self.account
            );
        };
        let secret = match &self.config.client_secret {
            Some(s) => Some(s.resolve().await.map_err(|m| {
                anyhow!(
                    "[accounts.{}.oauth2] of account {:?}: client_secret: {m}",
                    self.side,
                    self.account
                )
            })?),
            None => None,
        };
        let http = Http::new(self.timeout).context("Cannot set up the HTTPS client")?;
        let mut client = BasicClient::new(ClientId::new(client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(token_url.clone()));
        if let Some(s) = &secret {
            client = client.set_client_secret(ClientSecret::new(s.expose_secret().to_owned()));
        }
        let secrets = [secret.as_ref().map_or("", |s| s.expose_secret())];
        let oauth_err = |kind| OAuthError::new(self.account, self.side, kind);
        let scopes: Vec<Scope> = self
            .config
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(|s| Scope::new(s.to_owned()))
            .collect();

        let answer = match flow {
            LoginFlow::DeviceCode => {
                let Some(url) = &self.config.device_url else {
                    bail!(
                        "[accounts.{}.oauth2] of account {:?}: the device-code flow needs device_url (or a provider)",
                        self.side,
                        self.account
                    );
                };
                let client = client
                    .set_device_authorization_url(DeviceAuthorizationUrl::from_url(url.clone()));
                device_code(&client, &http, scopes, prompt, &secrets, &oauth_err).await?
            }
            LoginFlow::Browser => {
                let Some(url) = &self.config.auth_url else {
                    bail!(
                        "[accounts.{}.oauth2] of account {:?}: the browser flow needs auth_url (or a provider)",
                        self.side,
                        self.account
                    );
                };
                let client = client.set_auth_uri(AuthUrl::from_url(url.clone()));
                let offline = self.config.provider == Some(Provider::Google);
                browser(client, &http, scopes, offline, prompt, &secrets, &oauth_err).await?
            }
        };
        let Some(refresh) = answer.refresh_token().filter(|r| !r.secret().is_empty()) else {
            bail!(
                "the provider signed you in but gave no refresh token; for Microsoft the scope must include offline_access, for Google the client must be a desktop client (nothing was written)"
            );
        };
        let refresh = SecretString::from(refresh.secret().to_owned());
        write_secret_file_async(file.clone(), refresh)
            .await
            .with_context(|| format!("Cannot write the refresh token to {}", file.display()))?;
        Ok(LoggedIn {
            file,
            flow,
            access_expires_in: answer.expires_in(),
        })
    }
}

type DeviceClient = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;
type BrowserClient = BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

async fn device_code(
    client: &DeviceClient,
    http: &Http,
    scopes: Vec<Scope>,
    mut prompt: impl FnMut(Prompt),
    secrets: &[&str],
    oauth_err: &impl Fn(super::OAuthErrorKind) -> OAuthError,
) -> anyhow::Result<oauth2::basic::BasicTokenResponse> {
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes)
        .request_async(http)
        .await
        .map_err(|e| oauth_err(token_error(e, secrets)))?;
    let expires_in = details.expires_in().min(SIGN_IN_WINDOW);
    prompt(Prompt::DeviceCode {
        verification_uri: details.verification_uri().to_string(),
        user_code: details.user_code().secret().to_owned(),
        expires_in,
    });
    let answer = client
        .exchange_device_access_token(&details)
        .set_max_backoff_interval(Duration::from_secs(30))
        .request_async(http, tokio::time::sleep, Some(expires_in))
        .await
        .map_err(|e| oauth_err(token_error(e, secrets)))?;
    Ok(answer)
}

async fn browser(
    client: BrowserClient,
    http: &Http,
    scopes: Vec<Scope>,
    offline: bool,
    mut prompt: impl FnMut(Prompt),
    secrets: &[&str],
    oauth_err: &impl Fn(super::OAuthErrorKind) -> OAuthError,
) -> anyhow::Result<oauth2::basic::BasicTokenResponse> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("Cannot listen on 127.0.0.1 for the sign-in redirect")?;
    let port = listener.local_addr()?.port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/"))?;
    let client = client.set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes)
        .set_pkce_challenge(challenge);
    if offline {
        // Google gives a refresh token only for offline access, and again
        // on a second sign-in only when consent is asked anew.
        request = request
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent");
    }
    let (url, state) = request.url();
    prompt(Prompt::OpenUrl {
        url: url.to_string(),
    });
    let code = tokio::time::timeout(SIGN_IN_WINDOW, redirect::wait(listener, state.secret()))
        .await
        .map_err(|_| {
            anyhow!(
                "no sign-in within {}",
                humantime::format_duration(SIGN_IN_WINDOW)
            )
        })??;
    let answer = client
        .exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()))
        .set_pkce_verifier(verifier)
        .request_async(http)
        .await
        .map_err(|e| oauth_err(token_error(e, secrets)))?;
    Ok(answer)
}

/// The listener the browser is redirected to.
mod redirect {
    use std::sync::{Arc, Mutex};

    use anyhow::anyhow;
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::Html;
    use secrecy::SecretString;
    use tokio::sync::mpsc;

    use super::super::error::server_words;

    type Outcome = Result<SecretString, String>;

    #[derive(Clone)]
    struct Shared {
        state: Arc<str>,
        done: mpsc::Sender<Outcome>,
        answered: Arc<Mutex<bool>>,
    }

    /// Serves `listener` until a redirect with the right `state` arrives;
    /// returns its code, or the provider's error.
    pub async fn wait(
        listener: tokio::net::TcpListener,
        state: &str,
    ) -> anyhow::Result<SecretString> {
        let (tx, mut rx) = mpsc::channel::<Outcome>(1);
        let shared = Shared {
            state: Arc::from(state),
            done: tx,
            answered: Arc::new(Mutex::new(false)),
        };
        let app = axum::Router::new().fallback(callback).with_state(shared);
        let server = axum::serve(listener, app);
        tokio::select! {
            r = server => Err(anyhow!("the sign-in listener stopped: {}", match r { Ok(()) => "closed".to_owned(), Err(e) => e.to_string() })),
            got = rx.recv() => match got {
                Some(Ok(code)) => Ok(code),
                Some(Err(m)) => Err(anyhow!("the sign-in failed: {m}")),
                None => Err(anyhow!("the sign-in listener stopped")),
            },
        }
    }

    async fn callback(
        State(shared): State<Shared>,
        RawQuery(query): RawQuery,
    ) -> (StatusCode, Html<&'static str>) {
        let query = query.unwrap_or_default();
        let mut code = None;
        let mut state = None;
        let mut error = None;
        let mut description = None;
        for (k, v) in oauth2::url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                "error_description" => description = Some(v.into_owned()),
                _ => {}
            }
        }
        // Anything without our state is not the provider's answer to our
        // request (a stray request, or a forged one): it changes nothing.
        if state.as_deref() != Some(&*shared.state) {
            return (
                StatusCode::BAD_REQUEST,
                Html("<p>popferry: this is not the answer to the sign-in it started.</p>"),
            );
        }
        let outcome = match (code, error) {
            (Some(c), None) if !c.is_empty() => Ok(SecretString::from(c)),
            (_, Some(e)) => Err(server_words(&e, description.as_deref(), &[])),
            _ => Err("the redirect held no code".to_owned()),
        };
        let ok = outcome.is_ok();
        let first = match shared.answered.lock() {
            Ok(mut a) => !std::mem::replace(&mut *a, true),
            Err(_) => false,
        };
        if first {
            // A full channel means an answer is already being handled.
            let _ = shared.done.try_send(outcome);
        }
        if ok {
            (
                StatusCode::OK,
                Html("<p>popferry: signed in. You can close this window.</p>"),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                Html("<p>popferry: the sign-in failed; see the terminal.</p>"),
            )
        }
    }
}
