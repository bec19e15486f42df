//! `popferry oauth login`: picks the side, runs the sign-in
//! (`popferry::oauth::login`) and says what the user must do and which
//! file it wrote. It never prints a token.

use std::io::Write;

use popferry::config::{Config, LoginFlow, OAuth2Settings};
use popferry::oauth::login::{Login, Prompt};

use super::{Flow, Outcome, Side};

pub async fn login(cfg: &Config, account: &str, side: Option<Side>, flow: Option<Flow>) -> Outcome {
    match run(cfg, account, side, flow).await {
        Ok(()) => Outcome::Ok,
        Err(Failure::Usage(m)) => {
            eprintln!("popferry: {m}");
            Outcome::Usage
        }
        Err(Failure::Failed(e)) => {
            eprintln!("popferry: oauth login failed: {e:#}");
            Outcome::Failed
        }
    }
}

enum Failure {
    /// The command line or the configuration cannot work (exit 2).
    Usage(String),
    /// The sign-in itself failed (exit 1).
    Failed(anyhow::Error),
}

async fn run(
    cfg: &Config,
    account: &str,
    side: Option<Side>,
    flow: Option<Flow>,
) -> Result<(), Failure> {
    let names = [account.to_owned()];
    let acc = super::select_accounts(cfg, &names)
        .map_err(Failure::Usage)?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Usage(format!("no account named {account:?}")))?;
    let source = acc
        .source
        .oauth2
        .as_ref()
        .map(|o| (o, acc.source.endpoint.timeout));
    let target = acc
        .target
        .server
        .oauth2
        .as_ref()
        .map(|o| (o, acc.target.server.endpoint.timeout));
    let (side_name, (settings, timeout)): (&'static str, (&OAuth2Settings, _)) = match (
        side, source, target,
    ) {
        (Some(Side::Source), Some(s), _) | (None, Some(s), None) => ("source", s),
        (Some(Side::Target), _, Some(t)) | (None, None, Some(t)) => ("target", t),
        (None, Some(_), Some(_)) => {
            return Err(Failure::Usage(format!(
                "account {account:?} uses OAuth2 on both sides: say which with --side source or --side target"
            )));
        }
        (Some(s), _, _) => {
            let name = if s == Side::Source {
                "source"
            } else {
                "target"
            };
            return Err(Failure::Usage(format!(
                "account {account:?} has no [accounts.{name}.oauth2] table"
            )));
        }
        (None, None, None) => {
            return Err(Failure::Usage(format!(
                "account {account:?} uses OAuth2 on neither side (no oauth2 table)"
            )));
        }
    };
    let login = Login {
        account,
        side: side_name,
        config: &settings.config,
        timeout,
    };
    let file = login
        .target_file()
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    let chosen = flow.map(|f| match f {
        Flow::Device => LoginFlow::DeviceCode,
        Flow::Browser => LoginFlow::Browser,
    });
    let flow = login
        .flow(chosen)
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    println!(
        "Signing in for account {account:?}, [accounts.{side_name}.oauth2]; the refresh token will go to {}",
        file.display()
    );
    let done = login
        .run(flow, |p| {
            match p {
                Prompt::DeviceCode {
                    verification_uri,
                    user_code,
                    expires_in,
                } => {
                    println!("To sign in, open {verification_uri} and enter the code {user_code}");
                    println!(
                        "(waiting up to {} for you to finish)",
                        humantime::format_duration(expires_in)
                    );
                }
                Prompt::OpenUrl { url } => {
                    println!("To sign in, open this URL in a browser on this machine:");
                    println!("{url}");
                    println!("(waiting for the browser to come back to 127.0.0.1)");
                }
            }
            // Whoever reads our output must see this before we wait.
            let _ = std::io::stdout().flush();
        })
        .await
        .map_err(Failure::Failed)?;
    match done.access_expires_in {
        Some(d) => println!(
            "Signed in. Wrote the refresh token to {} (an access token was obtained; it expires in {}).",
            done.file.display(),
            humantime::format_duration(d)
        ),
        None => println!(
            "Signed in. Wrote the refresh token to {}.",
            done.file.display()
        ),
    }
    Ok(())
}
