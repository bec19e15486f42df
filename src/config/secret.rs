//! Passwords: where the configuration says to find them, and the one call
//! that fetches them at each login.
//!
//! Why the settings keep the *source* (a literal, an environment variable, a
//! file, a command) and not the value: a secret may change while the daemon
//! runs (a rotated file, a vault behind a command; later an OAuth2 access
//! token that lives an hour), and every login should use the current one.
//! The loader still resolves each source once, so that a missing variable,
//! an unreadable file or a failing command is a configuration error (exit
//! status 2) before any server is contacted; [`ServerSettings::credential`]
//! then resolves it again at each login. Messages name the side and the
//! source, never the secret: not a command's standard output, and not a
//! command's text either (it may hold one).

use std::fmt;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use secrecy::{ExposeSecret, SecretString};

use super::{Mechanism, ServerSettings};

/// Where a password comes from, as the configuration file said.
#[derive(Clone)]
pub enum SecretSource {
    /// Written in the configuration file itself.
    Literal(SecretString),
    /// `{ env = "VAR" }`: an environment variable of this process.
    Env(String),
    /// `{ file = "/path" }`: a file's contents, without the trailing newline.
    File(PathBuf),
    /// `{ command = "..." }`: what `sh -c` prints, without the trailing newline.
    Command(String),
}

/// What a login presents to the server.
pub enum Credential {
    /// A password (USER/PASS, APOP, SASL PLAIN, IMAP LOGIN).
    Password(SecretString),
    /// An OAuth2 access token (SASL XOAUTH2, OAUTHBEARER).
    Bearer(SecretString),
}

impl Credential {
    /// What kind of secret this is, for messages: "a password" or "an
    /// OAuth2 access token" (never the secret).
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Password(_) => "a password",
            Credential::Bearer(_) => "an OAuth2 access token",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password([REDACTED])"),
            Credential::Bearer(_) => f.write_str("Bearer([REDACTED])"),
        }
    }
}

/// No credential for a login.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A secret that could be read when the configuration was loaded cannot
    /// be read at login (a file rotated away, a command failing now).
    #[error("cannot get the [accounts.{side}] password at login ({origin}): {reason}")]
    Password {
        side: &'static str,
        origin: String,
        reason: String,
    },
    /// No OAuth2 access token (the error names the account and side).
    #[error(transparent)]
    Token(#[from] crate::oauth::OAuthError),
}

impl CredentialError {
    /// True when trying again later may help: a password source failing
    /// now, a token endpoint unreachable or busy; not a refresh token the
    /// provider refused.
    pub fn is_transient(&self) -> bool {
        match self {
            CredentialError::Password { .. } => true,
            CredentialError::Token(e) => e.is_transient(),
        }
    }

    /// How long the token endpoint asked to wait (clamped), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CredentialError::Password { .. } => None,
            CredentialError::Token(e) => e.retry_after(),
        }
    }
}

impl<A: Mechanism> ServerSettings<A> {
    /// The credential for one login, resolved now from its source: a file
    /// is read again, a command run again; with an `oauth2` table, an
    /// access token (the cached one while it has more than a minute left).
    /// It takes at most the server's `timeout` (a command still running
    /// then is killed). Call it once per login, as late as possible.
    pub async fn credential(&self) -> Result<Credential, CredentialError> {
        self.credential_with(false).await
    }

    /// The credential for a second try after the server refused the first:
    /// with an `oauth2` table, a new access token even if the cached one
    /// has time left; otherwise the same as [`Self::credential`].
    pub async fn fresh_credential(&self) -> Result<Credential, CredentialError> {
        self.credential_with(true).await
    }

    async fn credential_with(&self, force: bool) -> Result<Credential, CredentialError> {
        if let Some(o) = &self.oauth2 {
            let token = o.tokens.access_token(force).await?;
            return Ok(Credential::Bearer(token.into_secret()));
        }
        let limit = self.endpoint.timeout;
        let reason = match tokio::time::timeout(limit, self.password.resolve()).await {
            Ok(Ok(secret)) => return Ok(Credential::Password(secret)),
            Ok(Err(reason)) => reason,
            Err(_) => format!(
                "no password within {} (the side's timeout)",
                humantime::format_duration(limit)
            ),
        };
        Err(CredentialError::Password {
            side: A::SIDE,
            origin: self.password.origin(),
            reason,
        })
    }
}

impl SecretSource {
    /// Where the secret comes from, for messages (never the secret, nor a
    /// command's text).
    pub fn origin(&self) -> String {
        match self {
            SecretSource::Literal(_) => "written in the configuration file".into(),
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Command(_) => "the password command".into(),
        }
    }

    /// Resolves the secret, blocking: for loading the configuration, which
    /// checks that every source yields one. The error says why, in words
    /// that never contain the secret.
    pub(super) fn resolve_blocking(&self) -> Result<SecretString, String> {
        let value = match self {
            SecretSource::Literal(s) => return non_empty(s.expose_secret().to_owned()),
            SecretSource::Env(var) => env(var)?,
            SecretSource::File(path) => file(path, std::fs::read_to_string(path))?,
            SecretSource::Command(cmd) => command(
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .output(),
            )?,
        };
        non_empty(value)
    }

    /// Resolves a secret that is no login's (the status page's token, read
    /// once when the daemon starts), within `limit`. The error names the
    /// source, never the secret.
    pub async fn resolve_within(&self, limit: std::time::Duration) -> Result<SecretString, String> {
        match tokio::time::timeout(limit, self.resolve()).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(reason)) => Err(format!("{} ({})", reason, self.origin())),
            Err(_) => Err(format!(
                "no value within {} ({})",
                humantime::format_duration(limit),
                self.origin()
            )),
        }
    }

    /// Resolves the secret without blocking the runtime. Dropping the
    /// future kills a command still running.
    pub async fn resolve(&self) -> Result<SecretString, String> {
        let value = match self {
            SecretSource::Literal(s) => return non_empty(s.expose_secret().to_owned()),
            SecretSource::Env(var) => env(var)?,
            SecretSource::File(path) => file(path, tokio::fs::read_to_string(path).await)?,
            SecretSource::Command(cmd) => command(
                tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await,
            )?,
        };
        non_empty(value)
    }
}

fn env(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))
}

fn file(path: &std::path::Path, read: std::io::Result<String>) -> Result<String, String> {
    let s = read.map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

fn command(out: std::io::Result<Output>) -> Result<String, String> {
    let out = out.map_err(|e| format!("cannot run password command: {e}"))?;
    if !out.status.success() {
        // stderr only: stdout might hold part of a secret.
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "password command failed ({}): {}",
            out.status,
            err.trim().chars().take(300).collect::<String>()
        ));
    }
    Ok(String::from_utf8(out.stdout)
        .map_err(|_| "password command printed non-UTF-8 output".to_string())?
        .trim_end_matches(['\r', '\n'])
        .to_owned())
}

fn non_empty(value: String) -> Result<SecretString, String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    Ok(SecretString::from(value))
}

impl From<&str> for SecretSource {
    /// A literal password (for settings built in code, as the tests do).
    fn from(s: &str) -> SecretSource {
        SecretSource::Literal(SecretString::from(s))
    }
}

impl From<String> for SecretSource {
    /// A literal password.
    fn from(s: String) -> SecretSource {
        SecretSource::Literal(SecretString::from(s))
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal([REDACTED])"),
            SecretSource::Env(var) => f.debug_tuple("Env").field(var).finish(),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretSource::Command(_) => f.write_str("Command([REDACTED])"),
        }
    }
}

/// Two sources are the same when the configuration says the same: a
/// literal by its value, every other source by where it points (what it
/// yields is read at each login, so a rotated file changes nothing here).
impl PartialEq for SecretSource {
    fn eq(&self, other: &SecretSource) -> bool {
        match (self, other) {
            (SecretSource::Literal(a), SecretSource::Literal(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (SecretSource::Env(a), SecretSource::Env(b)) => a == b,
            (SecretSource::File(a), SecretSource::File(b)) => a == b,
            (SecretSource::Command(a), SecretSource::Command(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for SecretSource {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::config::{Endpoint, ImapAuth, Pop3Auth, TlsMode};

    fn settings<A: Mechanism>(auth: A, password: SecretSource) -> ServerSettings<A> {
        ServerSettings {
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 1,
                tls: TlsMode::None,
                ca_file: None,
                tls_fingerprint: None,
                timeout: Duration::from_secs(5),
            },
            username: "u".into(),
            password,
            auth,
            allow_plaintext_password: true,
            oauth2: None,
        }
    }

    fn password(c: Credential) -> String {
        match c {
            Credential::Password(p) => p.expose_secret().to_owned(),
            Credential::Bearer(_) => panic!("a password source yields a password"),
        }
    }

    #[tokio::test]
    async fn a_file_is_read_again_at_each_login() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\n").expect("write");
        let s = settings(Pop3Auth::Auto, SecretSource::File(path.clone()));
        assert_eq!(password(s.credential().await.expect("first")), "first");
        std::fs::write(&path, "rotated\r\n").expect("rotate");
        assert_eq!(password(s.credential().await.expect("second")), "rotated");

        std::fs::remove_file(&path).expect("remove");
        let e = match s.credential().await {
            Ok(_) => panic!("a missing file must fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("[accounts.source]") && e.contains(&path.display().to_string()),
            "names the side and the file: {e}"
        );
        assert!(!e.contains("rotated"), "{e}");
    }

    #[tokio::test]
    async fn a_command_runs_at_each_login_and_its_output_stays_out_of_errors() {
        let s = settings(
            ImapAuth::Login,
            SecretSource::Command("printf 'tok3n\\n'".into()),
        );
        assert_eq!(password(s.credential().await.expect("ok")), "tok3n");

        let s = settings(
            ImapAuth::Login,
            SecretSource::Command("echo s3cr3t-out; echo why >&2; exit 4".into()),
        );
        let e = match s.credential().await {
            Ok(_) => panic!("a failing command must fail"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("[accounts.target]") && e.contains("why"), "{e}");
        assert!(!e.contains("s3cr3t-out") && !e.contains("echo"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_command_is_bounded_by_the_timeout() {
        let mut s = settings(Pop3Auth::User, SecretSource::Command("sleep 30".into()));
        s.endpoint.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let e = match s.credential().await {
            Ok(_) => panic!("a hanging command must fail"),
            Err(e) => e.to_string(),
        };
        assert!(started.elapsed() < Duration::from_secs(10), "{e}");
        assert!(e.contains("no password within 200ms"), "{e}");
    }

    #[test]
    fn debug_never_shows_a_literal_or_a_command() {
        let shown = format!(
            "{:?} {:?} {:?}",
            SecretSource::from("hunter2"),
            SecretSource::Command("echo hunter2".into()),
            SecretSource::Env("POP_PW".into()),
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("POP_PW"), "{shown}");
        let shown = format!(
            "{:?} {:?}",
            Credential::Bearer(SecretString::from("eyJtoken")),
            Credential::Password(SecretString::from("hunter2"))
        );
        assert_eq!(shown, "Bearer([REDACTED]) Password([REDACTED])");
    }

    #[test]
    fn sources_compare_by_where_they_point() {
        assert_eq!(SecretSource::from("a"), SecretSource::from("a"));
        assert_ne!(SecretSource::from("a"), SecretSource::from("b"));
        assert_eq!(
            SecretSource::File("/run/pw".into()),
            SecretSource::File("/run/pw".into())
        );
        assert_ne!(
            SecretSource::Env("/run/pw".into()),
            SecretSource::File("/run/pw".into())
        );
    }
}
