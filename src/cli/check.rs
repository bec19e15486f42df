//! `popferry check`: the configuration is valid (or `execute` is never
//! reached); now log in to every server and report what it offers.
//! Changes nothing: no mailbox is created, no message touched.

use popferry::config::Config;
use popferry::net::{NetError, PresentedCertificate};
use popferry::{imap, pop3};

use super::Outcome;

pub async fn execute(cfg: &Config) -> Outcome {
    println!(
        "configuration {} is valid ({} account(s))",
        cfg.source_path.display(),
        cfg.accounts.len()
    );
    let mut ok = true;
    for a in &cfg.accounts {
        println!("account {}", a.name);
        let src = &a.source;
        match pop3::connect(src).await {
            Ok(mut s) => {
                let caps = s.capabilities().raw().join(" ");
                let tls = s.is_tls();
                let stat = s.stat().await;
                let _ = s.quit().await;
                println!(
                    "  POP3 {} as {}: ok ({}); capabilities: {}",
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
        match imap::connect(tgt).await {
            Ok(mut s) => {
                let caps = s.capabilities().names().collect::<Vec<_>>().join(" ");
                let tls = s.is_tls();
                let mailbox = s.mailbox_status(&a.target.mailbox).await;
                let _ = s.logout().await;
                println!(
                    "  IMAP {} as {}: ok ({}); capabilities: {}",
                    tgt.endpoint,
                    tgt.username,
                    if tls { "TLS" } else { "no TLS" },
                    caps
                );
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
