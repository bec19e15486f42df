//! `popferry oauth login` and `popferry check` with an `oauth2` table, run
//! as the real binary against the token endpoint on loopback
//! (`support::token_endpoint`):
//!
//! - the device-code flow: popferry prints the verification URL and the
//!   code, the test plays the user (approves the code), popferry polls,
//!   writes the refresh token file (mode 0600) and prints its name;
//! - the browser flow with PKCE: popferry prints the authorization URL and
//!   listens on 127.0.0.1; the test follows the URL, the endpoint redirects
//!   to the listener with `code` and `state`; a request with a wrong `state`
//!   changes nothing; the token request carries the PKCE verifier of the
//!   challenge;
//! - a refresh token that is not a `{ file }` is refused (exit 2);
//! - `check` at trace level says a token was obtained and when it expires,
//!   and no output holds a token, refresh token or client secret (nor their
//!   base64); with a revoked refresh token it says to run `oauth login`.
//!
//! These need a POP3 mechanism that logs in with a token (`xoauth2`, from
//! the SASL side of issue 10).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;
use support::popferry_command;
use support::token_endpoint::TokenEndpoint;

const BEARER_AUTH: &str = "xoauth2";
const CLIENT: &str = "popferry-login-client";
const CLIENT_SECRET: &str = "cs-Login-Client-Secret-Value";

fn write_config(dir: &Path, ep: &TokenEndpoint, refresh_token: &str) -> PathBuf {
    let text = format!(
        r#"
[ledger]
path = "{ledger}"

[[accounts]]
name = "legacy"

[accounts.source]
host = "127.0.0.1"
port = 1
tls = "none"
username = "me@example.test"
password = "unused"
auth = "{BEARER_AUTH}"
timeout = "5s"

[accounts.source.oauth2]
token_url = "{token}"
device_url = "{device}"
auth_url = "{auth}"
client_id = "{CLIENT}"
client_secret = "{CLIENT_SECRET}"
refresh_token = {refresh_token}
scope = "https://outlook.office.com/POP.AccessAsUser.All offline_access"

[accounts.target]
host = "127.0.0.1"
port = 1
tls = "none"
username = "me"
password = "unused"
timeout = "5s"
"#,
        ledger = dir.join("ledger.db").display(),
        token = ep.token_url(),
        device = ep.device_url(),
        auth = ep.auth_url(),
    );
    let path = dir.join("popferry.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `popferry`, its stdout read line by line on a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(args: &[&str]) -> Running {
    let mut child = popferry_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run popferry");
    let out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        seen: Vec::new(),
        stderr,
    }
}

impl Running {
    /// The first line (from now on) that `pick` accepts.
    fn line_where(&mut self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pick(&l) {
                        return l;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with {what}; stdout so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for the exit; returns (status code, stdout, stderr).
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("popferry did not exit; stdout:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        let err = self.stderr.join().expect("stderr thread");
        (status.code(), self.seen.join("\n"), err)
    }
}

fn no_secret_in(out: &str, ep: &TokenEndpoint) {
    let mut secrets = vec![CLIENT_SECRET.to_owned()];
    secrets.extend(ep.issued_access_tokens());
    secrets.extend(ep.issued_refresh_tokens());
    let b64 = base64::engine::general_purpose::STANDARD;
    for s in &secrets {
        for form in [
            s.clone(),
            b64.encode(s),
            b64.encode(format!("user=me@example.test\x01auth=Bearer {s}\x01\x01")),
        ] {
            assert!(!out.contains(&form), "{form:?} appears in:\n{out}");
        }
    }
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[test]
fn device_code_login_writes_the_refresh_token_file() {
    let ep = TokenEndpoint::start(CLIENT, Some(CLIENT_SECRET));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tokens").join("legacy-pop3.token");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    let cfg = write_config(
        dir.path(),
        &ep,
        &format!("{{ file = \"{}\" }}", file.display()),
    );
    let cfg = cfg.to_str().expect("utf-8");
    let mut run = spawn(&[
        "-c",
        cfg,
        "oauth",
        "login",
        "--account",
        "legacy",
        "--flow",
        "device",
    ]);
    let line = run.line_where("the user code", |l| l.contains("enter the code"));
    assert!(
        line.contains("https://microsoft.example/devicelogin"),
        "{line}"
    );
    let code = line
        .rsplit(' ')
        .next()
        .expect("a code at the end of the line")
        .to_owned();
    // The user signs in (popferry is polling meanwhile).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        ep.approve(&code, "me@example.test"),
        "code {code:?} pending"
    );
    let (status, out, err) = run.finish();
    assert_eq!(status, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let stored = std::fs::read_to_string(&file).expect("the token file");
    let stored = stored.trim_end();
    assert_eq!(
        ep.issued_refresh_tokens().last().map(String::as_str),
        Some(stored)
    );
    assert!(ep.is_valid_refresh_token(stored));
    #[cfg(unix)]
    assert_private(&file);
    assert!(out.contains(&file.display().to_string()), "{out}");
    no_secret_in(&format!("{out}\n{err}"), &ep);

    let sent = ep.requests();
    let dev = sent
        .iter()
        .find(|r| r.path == "/devicecode")
        .expect("a device authorization request");
    assert_eq!(dev.param("client_id"), Some(CLIENT));
    assert_eq!(
        dev.param("scope"),
        Some("https://outlook.office.com/POP.AccessAsUser.All offline_access")
    );
    assert!(
        sent.iter().any(|r| r.param("grant_type")
            == Some("urn:ietf:params:oauth:grant-type:device_code")
            && r.param("client_secret") == Some(CLIENT_SECRET)),
        "polled the token endpoint with the device code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_follows_the_redirect_with_pkce_and_checks_state() {
    let ep = TokenEndpoint::start(CLIENT, Some(CLIENT_SECRET));
    ep.set_login_subject("me@example.test");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("legacy.token");
    std::fs::write(&file, "rt-old-one\n").expect("an old token");
    let cfg = write_config(
        dir.path(),
        &ep,
        &format!("{{ file = \"{}\" }}", file.display()),
    );
    let cfg = cfg.to_str().expect("utf-8").to_owned();
    let (run, url) = tokio::task::spawn_blocking(move || {
        let mut run = spawn(&[
            "-c",
            &cfg,
            "oauth",
            "login",
            "--account",
            "legacy",
            "--flow",
            "browser",
        ]);
        let url = run.line_where("the authorization URL", |l| l.starts_with("http://"));
        (run, url)
    })
    .await
    .expect("spawn");
    let parsed = oauth2::url::Url::parse(&url).expect("a URL");
    let q = |k: &str| {
        parsed
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(q("code_challenge_method").as_deref(), Some("S256"));
    let redirect = q("redirect_uri").expect("redirect_uri");
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");

    let client = reqwest::Client::new();
    // A request that is not the provider's answer (wrong state) is refused
    // and changes nothing.
    let forged = client
        .get(format!("{redirect}?code=forged&state=not-the-state"))
        .send()
        .await
        .expect("forged request");
    assert_eq!(forged.status().as_u16(), 400);
    // The user signs in: the provider redirects the browser back.
    let page = client.get(&url).send().await.expect("follow the sign-in");
    assert_eq!(page.status().as_u16(), 200);
    let (status, out, err) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("finish");
    assert_eq!(status, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let stored = std::fs::read_to_string(&file).expect("the token file");
    assert_eq!(
        ep.issued_refresh_tokens().last().map(String::as_str),
        Some(stored.trim_end())
    );
    #[cfg(unix)]
    assert_private(&file);
    assert!(out.contains(&file.display().to_string()), "{out}");
    no_secret_in(&format!("{out}\n{err}"), &ep);

    let sent = ep.requests();
    let exchange = sent
        .iter()
        .find(|r| r.param("grant_type") == Some("authorization_code"))
        .expect("the code exchange");
    let verifier = exchange.param("code_verifier").expect("a PKCE verifier");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert_eq!(q("code_challenge").as_deref(), Some(challenge.as_str()));
    assert_eq!(exchange.param("redirect_uri"), Some(redirect.as_str()));
    assert_eq!(exchange.param("client_secret"), Some(CLIENT_SECRET));
    assert_ne!(exchange.param("code"), Some("forged"));
}

#[test]
fn login_refuses_a_refresh_token_that_is_not_a_file() {
    let ep = TokenEndpoint::start(CLIENT, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = ep.issue_refresh_token("me@example.test");
    let cfg = write_config(dir.path(), &ep, &format!("\"{rt}\""));
    let run = spawn(&[
        "-c",
        cfg.to_str().expect("utf-8"),
        "oauth",
        "login",
        "--account",
        "legacy",
    ]);
    let (status, out, err) = run.finish();
    assert_eq!(status, Some(2), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("refresh_token = { file"), "{err}");
    assert!(!err.contains(&rt) && !out.contains(&rt), "{err}");
    assert!(ep.requests().is_empty(), "nothing was asked");
}

#[test]
fn check_at_trace_level_shows_the_token_lifetime_and_no_secret() {
    let ep = TokenEndpoint::start(CLIENT, Some(CLIENT_SECRET));
    ep.set_lifetime(3600);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rt");
    let rt = ep.issue_refresh_token("me@example.test");
    std::fs::write(&file, &rt).expect("write");
    let cfg = write_config(
        dir.path(),
        &ep,
        &format!("{{ file = \"{}\" }}", file.display()),
    );
    let cfg = cfg.to_str().expect("utf-8");
    let run = spawn(&["-c", cfg, "--log-level", "trace", "check"]);
    let (status, out, err) = run.finish();
    // The mail servers are not there (port 1): check fails, after the token.
    assert_eq!(status, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("POP3 OAuth2: token obtained, expires in"),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    assert_eq!(ep.issued_access_tokens().len(), 1);
    no_secret_in(&format!("{out}\n{err}"), &ep);

    ep.revoke(&rt);
    let run = spawn(&["-c", cfg, "check"]);
    let (status, out, err) = run.finish();
    assert_eq!(status, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("popferry oauth login --account legacy --side source"),
        "stdout:\n{out}"
    );
    no_secret_in(&format!("{out}\n{err}"), &ep);
}
