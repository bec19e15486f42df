//! Logging setup: tracing to stderr, as text or JSON lines.
//!
//! sqlx logs every statement: it is capped here whatever `RUST_LOG` or
//! `--log-level` say, so that no level shows a secret. The IMAP parser,
//! imap-codec, never sees a command of ours, but warns about every response
//! code without text (which Dovecot sends and which we accept): capped at
//! error, so that a quiet run stays quiet. The HTTP stack of the OAuth2
//! token requests (reqwest, hyper, hyper-util) is capped at debug: their
//! trace output is about connections, and reqwest's verbose connection
//! log (off in our client, but one call away) would show request bodies,
//! which hold the refresh token and the client secret.

use tracing_subscriber::EnvFilter;

use super::LogFormat;

/// Directives appended last so they win over the user's.
const CAPS: &[&str] = &[
    "imap_codec=error",
    "sqlx=warn",
    "rustls=info",
    "reqwest=debug",
    "reqwest::connect::verbose=off",
    "hyper=debug",
    "hyper_util=debug",
];

pub fn init(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    let base = match level {
        Some(l) => l.to_owned(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    };
    let mut filter = EnvFilter::try_new(&base)
        .map_err(|e| anyhow::anyhow!("invalid log level {base:?}: {e}"))?;
    for cap in CAPS {
        filter = filter.add_directive(cap.parse()?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
