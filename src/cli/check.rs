//! `popferry check`: the configuration is valid (or `execute` is never
//! reached); now log in to every server and report what it offers.
//! Changes nothing: no mailbox is created, no message touched.

use popferry::config::{Config, OAuth2Settings};
use popferry::net::{NetError, PresentedCertificate};
use popferry::{imap, pop3};

use super::Outcome;

pub async fn execute(cfg: &Config) -> Outcome {
    println!(
        "configuration {} is valid ({} account(s))",
        cfg.source_path.display(),
        cfg.accounts.len()
    );
    let mut ok = spool(cfg);
    for a in &cfg.accounts {
        println!("account {}", a.name);
        let src = &a.source;
        if let Some(o) = &src.oauth2 {
            ok &= token(o, "POP3").await;
        }
        match pop3::connect(src).await {
            Ok(mut s) => {
                let caps = s.capabilities().raw().join(" ");
                let tls = s.is_tls();
                let mechanism = s.mechanism();
                let stat = s.stat().await;
                let _ = s.quit().await;
                println!(
                    "  POP3 {} as {}: ok ({}, {mechanism}); capabilities: {}",
                    src.endpoint,
                    src.username,
                    if tls { "TLS" } else { "no TLS" },
                    caps
                );
                if let Ok((n, bytes)) = stat {
                    println!("  POP3 mailbox: {n} message(s), {bytes} bytes");
                }
            }
            Err(e) => {
                ok = false;
                println!("  POP3 {} as {}: FAILED: {e}", src.endpoint, src.username);
                if let pop3::Pop3ErrorKind::Net(n) = e.kind() {
                    advise_pin(n, &a.name, "[accounts.source]");
                }
            }
        }
        let tgt = &a.target.server;
        if let Some(o) = &tgt.oauth2 {
            ok &= token(o, "IMAP").await;
        }
        match imap::connect(tgt).await {
            Ok(mut s) => {
                let caps = s.capabilities().names().collect::<Vec<_>>().join(" ");
                let appends = describe_appends(s.capabilities(), a.target.connections);
                let tls = s.is_tls();
                let mechanism = s.mechanism();
                let mailbox = s.mailbox_status(&a.target.mailbox).await;
                let _ = s.logout().await;
                println!(
                    "  IMAP {} as {}: ok ({}, {mechanism}); capabilities: {}",
                    tgt.endpoint,
                    tgt.username,
                    if tls { "TLS" } else { "no TLS" },
                    caps
                );
                println!("  IMAP appends: {appends}");
                match mailbox {
                    Ok(Some(st)) => println!(
                        "  IMAP mailbox {:?}: exists, {} message(s)",
                        a.target.mailbox, st.exists
                    ),
                    Ok(None) => println!(
                        "  IMAP mailbox {:?}: missing; sync will create it",
                        a.target.mailbox
                    ),
                    Err(e) => {
                        ok = false;
                        println!("  IMAP mailbox {:?}: FAILED: {e}", a.target.mailbox);
                    }
                }
            }
            Err(e) => {
                ok = false;
                println!("  IMAP {} as {}: FAILED: {e}", tgt.endpoint, tgt.username);
                if let imap::ImapErrorKind::Net(n) = e.kind() {
                    advise_pin(n, &a.name, "[accounts.target]");
                }
            }
        }
    }
    if ok { Outcome::Ok } else { Outcome::Failed }
}

/// Where large messages are spooled: a temporary file can be made there.
fn spool(cfg: &Config) -> bool {
    let dir = cfg
        .spool
        .path
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .display()
        .to_string();
    let place = popferry::spool::Place::new(cfg.spool.path.clone(), cfg.spool.max_bytes);
    match place.check() {
        Ok(()) => {
            println!(
                "spool {dir}: ok (temporary files of up to {} bytes in all)",
                cfg.spool.max_bytes
            );
            true
        }
        Err(e) => {
            println!("spool {dir}: FAILED: {e}");
            false
        }
    }
}

/// Gets an access token for one side (cached for the login that follows)
/// and says so, with its lifetime, never the token.
async fn token(o: &OAuth2Settings, protocol: &str) -> bool {
    match o.tokens.access_token(false).await {
        Ok(t) => {
            match t.expires_in() {
                Some(d) => println!(
                    "  {protocol} OAuth2: token obtained, expires in {}",
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                ),
                None => {
                    println!("  {protocol} OAuth2: token obtained from the access_token command")
                }
            }
            true
        }
        Err(e) => {
            println!("  {protocol} OAuth2: FAILED: {e}");
            false
        }
    }
}

/// How `sync` will append to a target with these capabilities.
fn describe_appends(caps: &imap::Capabilities, connections: usize) -> String {
    let how = if caps.literal_plus() {
        "pipelined with LITERAL+ over 1 connection".to_owned()
    } else {
        let literals = if caps.literal_minus() {
            "LITERAL- only: literals over 4096 bytes wait for the server's \"+\""
        } else {
            "every literal waits for the server's \"+\""
        };
        format!(
            "{literals}; over up to {connections} connection(s) ([accounts.target] connections)"
        )
    };
    match caps.append_limit() {
        Some(n) => format!("{how}; APPENDLIMIT {n} bytes (larger messages are skipped)"),
        None => format!("{how}; no APPENDLIMIT"),
    }
}

/// For a refused certificate: what it is, and the exact line that trusts
/// it, in the table it belongs to (as ssh offers a new host key).
fn advise_pin(e: &NetError, account: &str, table: &str) {
    let Some(PresentedCertificate {
        fingerprint,
        subject,
    }) = e.presented_certificate()
    else {
        return;
    };
    println!("  The server presented the certificate {fingerprint}");
    println!(
        "  (subject {}).",
        subject.as_deref().unwrap_or("unreadable")
    );
    println!(
        "  If that is your server's certificate, add this line to {table} of account {account:?}:"
    );
    println!("      {}", fingerprint.config_line());
}
