//! The HTTP client oauth2-rs talks through: reqwest, bounded.
//!
//! Why not reqwest's own adapter in oauth2-rs: it reads a whole answer into
//! memory however large, keeps no deadline of ours, and hands 5xx and 429
//! answers to the JSON parser, which loses the status and `Retry-After`.
//! This adapter puts the side's timeout on the whole exchange, caps the
//! answer, and turns a 5xx or 429 into an error that says it may pass (with
//! `Retry-After` clamped). TLS is verified with the platform's roots, as for
//! the mail servers; redirects are not followed (a token endpoint that
//! redirects is refused rather than sent the secret elsewhere).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::http;
use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse};

/// The largest answer read from a token endpoint (a JWT access token is a
/// few KiB).
pub const MAX_ANSWER: usize = 64 << 10;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a request to the token endpoint got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("no answer from {url} within {}", humantime::format_duration(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("the answer from {url} is larger than {MAX_ANSWER} bytes")]
    TooLarge { url: String },
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
}

impl HttpError {
    /// The server's `Retry-After`, clamped, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A reqwest client with the side's timeout.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    pub fn new(timeout: Duration) -> Result<Http, HttpError> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map_err(|e| HttpError::Setup(e.to_string()))?
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("popferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Setup(chain(&e)))?;
        Ok(Http { client, timeout })
    }

    /// Sends one request and reads its answer, all within the timeout.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = shown(request.uri());
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(request, &url)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout { url, timeout }),
        }
    }

    async fn exchange(&self, request: HttpRequest, url: &str) -> Result<HttpResponse, HttpError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::Timeout {
                    url: url.to_owned(),
                    timeout: self.timeout,
                }
            } else {
                HttpError::Transport {
                    url: url.to_owned(),
                    reason: chain(&e.without_url()),
                }
            }
        };
        let request = reqwest::Request::try_from(request).map_err(transport)?;
        let mut response = self.client.execute(request).await.map_err(transport)?;
        let status = response.status();
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(HttpError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                retry_after: retry_after(response.headers()),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER as u64)
        {
            return Err(HttpError::TooLarge {
                url: url.to_owned(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len().saturating_add(chunk.len()) > MAX_ANSWER {
                return Err(HttpError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let mut answer = http::Response::builder().status(status);
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        answer.body(body).map_err(|e| HttpError::Transport {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The URL for messages: scheme, host, port and path, never the query
/// (which may hold a code).
fn shown(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map_or("", |a| a.as_str());
    // An authority never holds user info here (the loader refuses it), but
    // keep only what follows an `@` all the same.
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{authority}{}", uri.path())
}

/// `Retry-After` in seconds (an HTTP date is not parsed: the usual backoff
/// applies then), clamped to [`MAX_RETRY_AFTER`].
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_parsed_and_clamped() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().expect("value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            "99999999999".parse().expect("value"),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn shown_urls_drop_the_query() {
        let uri: http::Uri = "https://login.example/token?code=secret"
            .parse()
            .expect("uri");
        assert_eq!(shown(&uri), "https://login.example/token");
    }
}
