//! The `oauth2` table: presets, URL rules, the grant forms and their
//! errors (each names the key and never quotes a line), and equality.
//!
//! No mechanism of this crate wants a bearer token yet on its own (the
//! xoauth2/oauthbearer values of `auth` come with the SASL side), so these
//! tests validate sides through a test mechanism that does.

use std::path::Path;

use super::*;
use crate::config::load::server;
use crate::config::raw::{RawSource, RawTarget};
use crate::config::{Mechanism, ServerSettings};

macro_rules! bearer_mechanism {
    ($name:ident, $side:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        struct $name;
        impl Mechanism for $name {
            const PROTOCOL: &'static str = "TEST";
            const SIDE: &'static str = $side;
            const ALL: &'static [Self] = &[$name];
            fn name(self) -> &'static str {
                "testbearer"
            }
            fn needs_bearer(self) -> bool {
                true
            }
        }
    };
}
bearer_mechanism!(SourceBearer, "source");
bearer_mechanism!(TargetBearer, "target");

const SIDE: &str = r#"
host = "pop.example.net"
username = "me@example.net"
password = "unused"
auth = "testbearer"
"#;

fn source(table: &str) -> Result<ServerSettings<SourceBearer>, String> {
    let text = format!("{SIDE}\n[oauth2]\n{table}");
    let raw: RawSource = toml::from_str(&text).map_err(|e| e.message().to_owned())?;
    server::<SourceBearer>(
        raw.connection(),
        (995, 110),
        Path::new("/"),
        "legacy",
        false,
    )
}

fn target(table: &str) -> Result<ServerSettings<TargetBearer>, String> {
    let text = format!("{SIDE}\n[oauth2]\n{table}");
    let raw: RawTarget = toml::from_str(&text).map_err(|e| e.message().to_owned())?;
    server::<TargetBearer>(
        raw.connection(),
        (993, 143),
        Path::new("/"),
        "legacy",
        false,
    )
}

fn config<A: Mechanism>(s: &ServerSettings<A>) -> &OAuth2Config {
    &s.oauth2.as_ref().expect("an oauth2 table").config
}

#[test]
fn the_microsoft_preset_fills_urls_and_the_scope_of_each_side() {
    let table =
        "provider = \"microsoft\"\nclient_id = \"app\"\nrefresh_token = { file = \"/data/rt\" }\n";
    let s = source(table).expect("valid");
    let c = config(&s);
    assert_eq!(c.provider, Some(Provider::Microsoft));
    assert_eq!(
        c.token_url.as_ref().map(|u| u.as_str()),
        Some("https://login.microsoftonline.com/common/oauth2/v2.0/token")
    );
    assert_eq!(
        c.device_url.as_ref().map(|u| u.as_str()),
        Some("https://login.microsoftonline.com/common/oauth2/v2.0/devicecode")
    );
    assert_eq!(
        c.auth_url.as_ref().map(|u| u.as_str()),
        Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
    );
    assert_eq!(
        c.scope.as_deref(),
        Some("https://outlook.office.com/POP.AccessAsUser.All offline_access")
    );
    assert_eq!(
        c.grant,
        TokenGrant::Refresh(SecretSource::File("/data/rt".into()))
    );
    let t = target(table).expect("valid");
    assert_eq!(
        config(&t).scope.as_deref(),
        Some("https://outlook.office.com/IMAP.AccessAsUser.All offline_access")
    );
}

#[test]
fn the_google_preset_fills_urls_and_scope_and_given_keys_win() {
    let s = target(
        "provider = \"google\"\nclient_id = \"app\"\nclient_secret = { env = \"GSECRET\" }\nrefresh_token = { file = \"/data/rt\" }\n",
    )
    .expect("valid");
    let c = config(&s);
    assert_eq!(
        c.token_url.as_ref().map(|u| u.as_str()),
        Some("https://oauth2.googleapis.com/token")
    );
    assert_eq!(
        c.auth_url.as_ref().map(|u| u.as_str()),
        Some("https://accounts.google.com/o/oauth2/v2/auth")
    );
    assert_eq!(
        c.device_url.as_ref().map(|u| u.as_str()),
        Some("https://oauth2.googleapis.com/device/code")
    );
    assert_eq!(c.scope.as_deref(), Some("https://mail.google.com/"));
    assert_eq!(c.client_secret, Some(SecretSource::Env("GSECRET".into())));

    let s = source(
        "provider = \"google\"\ntoken_url = \"https://tokens.example/t\"\nscope = \"  a   b \"\nclient_id = \"app\"\nrefresh_token = \"rt\"\n",
    )
    .expect("valid");
    let c = config(&s);
    assert_eq!(
        c.token_url.as_ref().map(|u| u.as_str()),
        Some("https://tokens.example/t")
    );
    assert_eq!(c.scope.as_deref(), Some("a b"));
}

#[test]
fn plain_http_is_refused_unless_the_host_is_loopback() {
    let with = |url: &str| {
        source(&format!(
            "token_url = \"{url}\"\nclient_id = \"app\"\nrefresh_token = \"rt\"\n"
        ))
    };
    let e = with("http://login.example/token").expect_err("plain http off loopback");
    assert!(
        e.starts_with("oauth2.token_url:") && e.contains("https"),
        "{e}"
    );
    for ok in [
        "http://127.0.0.1:8080/token",
        "http://127.9.9.9/token",
        "http://localhost:1/token",
        "http://[::1]:1/token",
        "https://login.example/token",
    ] {
        with(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let e = with("ftp://login.example/token").expect_err("not https");
    assert!(e.contains("oauth2.token_url"), "{e}");
    let e = with("not a url").expect_err("garbage");
    assert!(e.contains("oauth2.token_url"), "{e}");
    let e = with("https://user:pw@login.example/token").expect_err("credentials in the URL");
    assert!(!e.contains("pw@"), "{e}");
    let e = source(
        "token_url = \"https://t.example\"\ndevice_url = \"http://d.example/\"\nclient_id = \"app\"\nrefresh_token = \"rt\"\n",
    )
    .expect_err("device_url over http");
    assert!(e.starts_with("oauth2.device_url:"), "{e}");
}

#[test]
fn exactly_one_of_refresh_token_and_access_token() {
    let e = source("provider = \"google\"\nclient_id = \"a\"\n").expect_err("neither");
    assert!(
        e.contains("neither refresh_token nor access_token")
            && e.contains("popferry oauth login --account legacy --side source"),
        "{e}"
    );
    let e = source(
        "provider = \"google\"\nclient_id = \"a\"\nrefresh_token = \"rt-SECRET\"\naccess_token = { command = \"helper\" }\n",
    )
    .expect_err("both");
    assert!(e.contains("both refresh_token and access_token"), "{e}");
    assert!(!e.contains("rt-SECRET"), "{e}");

    let s = source("access_token = { command = \"helper legacy\" }\n").expect("command form");
    assert_eq!(
        config(&s).grant,
        TokenGrant::Command("helper legacy".into())
    );
    let e = source("access_token = \"at-SECRET\"\n").expect_err("a literal access token");
    assert!(e.contains("only the command form"), "{e}");
    assert!(!e.contains("at-SECRET"), "{e}");
}

#[test]
fn a_refresh_token_needs_a_token_url_and_a_client_id() {
    let e = source("client_id = \"a\"\nrefresh_token = \"rt\"\n").expect_err("no token_url");
    assert!(e.contains("provider") && e.contains("token_url"), "{e}");
    let e = source("provider = \"microsoft\"\nrefresh_token = \"rt\"\n").expect_err("no client id");
    assert!(e.starts_with("oauth2.client_id:"), "{e}");
    let e = source("provider = \"yahoo\"\nclient_id = \"a\"\nrefresh_token = \"rt\"\n")
        .expect_err("unknown provider");
    assert!(
        e.contains("yahoo") && e.contains("microsoft or google"),
        "{e}"
    );
}

#[test]
fn a_missing_refresh_token_file_says_to_sign_in() {
    let text = format!(
        "{SIDE}\n[oauth2]\nprovider = \"microsoft\"\nclient_id = \"a\"\nrefresh_token = {{ file = \"/nonexistent/popferry/rt\" }}\n"
    );
    let raw: RawSource = toml::from_str(&text).expect("toml");
    let e = server::<SourceBearer>(raw.connection(), (995, 110), Path::new("/"), "legacy", true)
        .expect_err("missing file");
    assert!(
        e.starts_with("oauth2.refresh_token:")
            && e.contains("/nonexistent/popferry/rt")
            && e.contains("popferry oauth login --account legacy --side source"),
        "{e}"
    );
}

#[test]
fn settings_compare_by_the_table_not_by_the_cache() {
    let table =
        "provider = \"microsoft\"\nclient_id = \"app\"\nrefresh_token = { file = \"/data/rt\" }\n";
    let a = source(table).expect("a");
    let b = source(table).expect("b");
    let (Some(oa), Some(ob)) = (&a.oauth2, &b.oauth2) else {
        panic!("tables");
    };
    assert!(!std::sync::Arc::ptr_eq(&oa.tokens, &ob.tokens));
    assert_eq!(a, b);
    let c = source(&table.replace("app", "other")).expect("c");
    assert_ne!(a, c);
    // A clone shares its cache (the daemon keeps it across passes).
    let cloned = a.clone();
    assert!(std::sync::Arc::ptr_eq(
        &oa.tokens,
        &cloned.oauth2.as_ref().expect("table").tokens
    ));
    assert_eq!(oa.tokens.side(), "source");
    assert_eq!(oa.tokens.account(), "legacy");
}

#[test]
fn debug_shows_no_secret_and_no_command() {
    let s = source(
        "provider = \"google\"\nclient_id = \"app\"\nclient_secret = \"cs-SECRET\"\nrefresh_token = \"rt-SECRET\"\n",
    )
    .expect("valid");
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("cs-SECRET") && !shown.contains("rt-SECRET"),
        "{shown}"
    );
    let s = source("access_token = { command = \"helper --key k3y-SECRET\" }\n").expect("valid");
    let shown = format!("{s:?}");
    assert!(!shown.contains("k3y-SECRET"), "{shown}");
}
