//! Accounts kept in the ledger (`popferry accounts import|list|remove`),
//! on both backends, end to end: a real Dovecot, the real binary. A CSV's
//! accounts sync like the file's, with the file's [account_template] for
//! ports and TLS; a line with a password instead of a reference, or the
//! name of a file account, is refused (the whole import), naming the line
//! and never showing the password; the file's accounts and the ledger's
//! are one set for `sync` and `status`.

mod support;

use std::fs;

use support::ledger::Backend;
use support::{ConfigBuilder, Dovecot, describe_output, imap_fetch_all, popferry};

fn message(who: &str, n: usize) -> Vec<u8> {
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: {who} {n}\r\n\
         Message-ID: <{who}-{n}@accounts.popferry.test>\r\n\r\nBody {n} of {who}.\r\n"
    )
    .into_bytes()
}

const HEADER: &str = "name,source_host,source_username,source_password,target_host,target_username,target_password,mailbox,delete";

fn accounts_from_a_csv_are_one_set_with_the_file_s(backend: Backend) {
    let d = Dovecot::start();
    d.seed(
        "alice",
        &[
            message("alice", 1),
            message("alice", 2),
            message("alice", 3),
        ],
    );
    d.seed("bob", &[message("bob", 1), message("bob", 2)]);
    let ca = d.ca_file.display().to_string();
    let template = format!(
        "[account_template]\npoll_interval = \"10m\"\n\
         [account_template.source]\nport = {}\nca_file = {:?}\n\
         [account_template.target]\nport = {}\nca_file = {:?}\n",
        d.pop3s_port, ca, d.imaps_port, ca
    );
    let on = backend.apply(ConfigBuilder::new(&d, "carol", "erin").extra_toml(&template));
    let cfg = on.builder.write();
    let cfg = cfg.to_str().expect("utf-8");
    let pw_file = d.scratch().join("imap-password");
    fs::write(&pw_file, "secret\n").expect("password file");
    let pw = pw_file.display();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = args.to_vec();
        all.extend(["-c", cfg]);
        let out = popferry(&all, env);
        let text = describe_output(&out);
        assert!(!text.contains("Hunter2"), "never shown: {text}");
        (out.status.code(), text)
    };
    let csv = d.scratch().join("accounts.csv");

    // One line with a password itself, one with a file account's name:
    // nothing is imported, and each line is named.
    fs::write(
        &csv,
        format!(
            "{HEADER}\nalice,127.0.0.1,alice,env:POP_PW,127.0.0.1,dave,file:{pw},,\n\
             bob,127.0.0.1,bob,Hunter2-pw,127.0.0.1,dave,file:{pw},Bob,\n\
             carol,127.0.0.1,carol,env:POP_PW,127.0.0.1,dave,file:{pw},,\n"
        ),
    )
    .expect("csv");
    let (code, text) = run(&["accounts", "import", csv.to_str().expect("utf-8")], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("line 3: account \"bob\": source_password is not a password reference"),
        "{text}"
    );
    assert!(
        text.contains("line 4: account \"carol\" is already in"),
        "{text}"
    );
    assert!(text.contains("nothing imported"), "{text}");
    let (code, text) = run(&["accounts", "list"], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("alice"), "nothing was imported: {text}");

    // The good lines.
    fs::write(
        &csv,
        format!(
            "{HEADER}\nalice,127.0.0.1,alice,env:POP_PW,127.0.0.1,dave,file:{pw},,\n\
             bob,127.0.0.1,bob,env:POP_PW,127.0.0.1,dave,\"file:{pw}\",Bob,after-sync\n"
        ),
    )
    .expect("csv");
    let (code, text) = run(&["accounts", "import", csv.to_str().expect("utf-8")], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("2 added, 0 updated"), "{text}");
    let (code, text) = run(&["accounts", "import", csv.to_str().expect("utf-8")], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("0 added, 2 updated"),
        "importing again replaces: {text}"
    );
    let (code, text) = run(&["accounts", "list"], &[]);
    assert_eq!(code, Some(0), "{text}");
    for want in ["alice ", "bob ", "carol "] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("bob") && l.contains("ledger") && l.contains("Bob")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("carol") && l.contains("file")),
        "{text}"
    );
    assert!(
        !text.contains("POP_PW"),
        "list shows no password reference: {text}"
    );

    // A reference that does not resolve is a configuration error naming the account.
    let (code, text) = run(&["sync"], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("\"alice\" (kept in the ledger)"), "{text}");

    // sync takes the file's account and the ledger's.
    let (code, text) = run(&["sync"], &[("POP_PW", "secret")]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        imap_fetch_all(&d, "dave", "INBOX").len(),
        3,
        "alice's three"
    );
    assert_eq!(
        imap_fetch_all(&d, "dave", "Bob").len(),
        2,
        "bob's two, in his mailbox"
    );
    assert!(
        support::Pop3::login(&d, "bob").uidl().is_empty(),
        "bob's policy (delete after sync) came from his line"
    );
    let (code, text) = run(&["status"], &[]);
    assert_eq!(code, Some(0), "{text}");
    let alice = text.split("\nbob\n").next().expect("alice first");
    assert!(alice.contains("alice\n  copied 3"), "{text}");
    assert!(text.contains("bob\n  copied 2"), "{text}");
    assert!(
        text.contains("--- stdout ---\ncarol\n"),
        "the file's account first: {text}"
    );

    // remove: the ledger's account goes, the file's stays where it is.
    let (code, text) = run(&["accounts", "remove", "bob"], &[]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["accounts", "remove", "bob"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("no account named \"bob\" in the ledger"),
        "{text}"
    );
    let (code, text) = run(&["accounts", "remove", "carol"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("not in the ledger: remove it from the file"),
        "{text}"
    );
    let (_, text) = run(&["accounts", "list"], &[]);
    assert!(!text.contains("bob "), "{text}");
    drop(on.db);
}
both_backends!(accounts_from_a_csv_are_one_set_with_the_file_s);

/// A file with only an [account_template] and no accounts anywhere: the
/// import works, and sync says where accounts come from until then.
#[test]
fn a_fleet_file_needs_no_account_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("popferry.toml");
    fs::write(
        &cfg,
        "[ledger]\npath = \"ledger.db\"\n\n[account_template]\n",
    )
    .expect("write");
    let cfg = cfg.to_str().expect("utf-8");
    let out = popferry(&["sync", "-c", cfg], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        describe_output(&out).contains("popferry accounts import FILE.csv"),
        "{}",
        describe_output(&out)
    );
    let out = popferry(&["accounts", "list", "-c", cfg], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
}
