use super::*;

const HEADER: &str = "name,source_host,source_username,source_password,target_host,target_username,target_password,mailbox,delete\n";

fn config(extra: &str) -> Config {
    let text = format!("[ledger]\npath = \"/tmp/l.db\"\n[daemon]\npoll_interval = \"7m\"\n{extra}");
    crate::config::load_str(&text, Path::new("/etc/popferry/popferry.toml"), false)
        .expect("valid configuration")
}

#[test]
fn fields_split_on_commas_with_quotes_and_crlf() {
    let recs =
        split_csv("a,\"b,c\",\"say \"\"hi\"\"\"\r\n\r\nx,,\"multi\nline\"\nlast,1,2").expect("csv");
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[0],
        (1, vec!["a".into(), "b,c".into(), "say \"hi\"".into()])
    );
    assert_eq!(
        recs[1],
        (3, vec!["x".into(), "".into(), "multi\nline".into()])
    );
    assert_eq!(recs[2].0, 5, "lines count inside quotes");
    assert_eq!(split_csv("a,b\"c\n").map_err(|e| e.line), Err(1));
    assert_eq!(split_csv("a\n\"open,\n").map_err(|e| e.line), Err(2));
    assert_eq!(split_csv("\"a\"b\n").map_err(|e| e.line), Err(1));
}

#[test]
fn a_csv_becomes_rows_and_every_bad_line_is_named() {
    let text = format!(
        "{HEADER}amy,pop.x,amy,env:AMY_POP3,imap.y,amy@y,file:/run/s/amy,,\n\
         bob,pop.x,bob,Hunter2-secret,imap.y,bob@y,command:pass bob,Archive,30d\n\
         amy,pop.x,amy2,env:A,imap.y,a,env:B,,\n\
         cid,pop.x,,env:A,imap.y,c,env:B,,\n\
         dan,pop.x,dan,file:relative/path,imap.y,d,env:B,,\n\
         eve,pop.x,eve,env:E,imap.y,e,env:F\n"
    );
    let (rows, errors) = parse_csv(&text);
    assert_eq!(
        rows.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2],
        "the good line"
    );
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let all = shown.join("\n");
    assert!(!all.contains("Hunter2"), "never quotes a password: {all}");
    assert_eq!(
        errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7],
        "{all}"
    );
    assert!(
        shown[0].contains("\"bob\": source_password is not a password reference"),
        "{all}"
    );
    assert!(shown[1].contains("also on line 2"), "{all}");
    assert!(shown[2].contains("empty source_username"), "{all}");
    assert!(shown[3].contains("absolute path"), "{all}");
    assert!(shown[4].contains("7 field(s), the header has 9"), "{all}");

    let good = "target_password,name,source_host,source_username,source_password,target_host,target_username\n\
                env:T,amy,pop.x,amy,env:AMY_POP3,imap.y,amy@y\n";
    let (rows, errors) = parse_csv(good);
    assert_eq!(errors, []);
    assert_eq!(rows.len(), 1);
    let (line, amy) = &rows[0];
    assert_eq!(*line, 2);
    assert_eq!(
        (
            amy.name.as_str(),
            amy.target_password.as_str(),
            amy.mailbox.as_deref()
        ),
        ("amy", "env:T", None),
        "columns in any order; mailbox and delete may be left out"
    );
    let (_, e) = parse_csv("name,host\n");
    assert!(e[0].message.contains("unknown column \"host\""), "{e:?}");
    let (_, e) = parse_csv("name,source_host\n");
    assert!(
        e[0].message.contains("missing column(s): source_username"),
        "{e:?}"
    );
}

fn row(name: &str) -> ImportedAccount {
    ImportedAccount {
        name: name.into(),
        source_host: "pop.example.net".into(),
        source_username: "u".into(),
        source_password: "env:POP".into(),
        target_host: "imap.example.com".into(),
        target_username: "v".into(),
        target_password: "command:echo x".into(),
        mailbox: None,
        delete: Some("after-sync".into()),
    }
}

#[test]
fn a_row_takes_the_template_and_the_file_s_defaults() {
    let mut cfg = config(
        "[account_template]\npoll_interval = \"2m\"\n[account_template.source]\nport = 1110\ntls = \"starttls\"\n\
         [account_template.target]\nmailbox = \"Imported\"\nflags = [\"\\\\Seen\"]\n\
         [account_template.policy]\nmax_attempts = 5\n",
    );
    assert!(
        cfg.accounts.is_empty(),
        "a template allows a file without accounts"
    );
    let mut other = row("other");
    other.mailbox = Some("Mine".into());
    other.delete = None;
    merge(&mut cfg, &[row("one"), other], false).expect("merge");
    let one = &cfg.accounts[0];
    assert_eq!(one.name, "one");
    assert_eq!(one.source.endpoint.port, 1110);
    assert_eq!(one.source.endpoint.tls, crate::config::TlsMode::Starttls);
    assert_eq!(one.target.server.endpoint.port, 993, "the default port");
    assert_eq!(one.poll_interval, std::time::Duration::from_secs(120));
    assert_eq!(one.target.mailbox, "Imported");
    assert_eq!(one.target.flags, ["\\Seen"]);
    assert_eq!(one.policy.max_attempts, 5);
    assert_eq!(one.policy.delete, crate::config::DeletePolicy::AfterSync);
    assert_eq!(
        one.source.password,
        crate::config::SecretSource::Env("POP".into())
    );
    let other = &cfg.accounts[1];
    assert_eq!(other.target.mailbox, "Mine", "the row's mailbox wins");
    assert_eq!(other.policy.delete, crate::config::DeletePolicy::Never);

    let mut plain = config("[account_template]\n");
    merge(&mut plain, &[row("x")], false).expect("merge");
    assert_eq!(
        plain.accounts[0].poll_interval,
        std::time::Duration::from_secs(420)
    );
    assert_eq!(plain.accounts[0].target.mailbox, "INBOX");
}

#[test]
fn merging_refuses_a_name_in_both_a_bad_template_and_no_accounts_at_all() {
    let file_account = "[[accounts]]\nname = \"one\"\n[accounts.source]\nhost = \"h\"\nusername = \"u\"\npassword = \"p\"\n\
                        [accounts.target]\nhost = \"h\"\nusername = \"u\"\npassword = \"p\"\n";
    let mut cfg = config(file_account);
    let e = merge(&mut cfg, &[row("one")], false).expect_err("a name in both");
    assert!(
        e.to_string()
            .contains("\"one\" is both in this file and in the ledger"),
        "{e}"
    );

    let mut cfg = config("[account_template.source]\nprot = 1\n");
    let e = merge(&mut cfg, &[row("x")], false).expect_err("unknown key");
    let e = e.to_string();
    assert!(
        e.contains("\"x\" (kept in the ledger)") && e.contains("prot"),
        "{e}"
    );

    let mut cfg = config("[account_template]\n");
    let e = merge(&mut cfg, &[], false).expect_err("no accounts");
    assert!(e.to_string().contains("popferry accounts import"), "{e}");

    let mut cfg = config("[account_template.policy]\ndelete = \"soon\"\n");
    let mut r = row("x");
    r.delete = None;
    let e = merge(&mut cfg, &[r], false).expect_err("bad policy");
    assert!(e.to_string().contains("policy.delete"), "{e}");
}

#[test]
fn references_become_secret_forms() {
    assert_eq!(
        reference("env:A_1").expect("env").to_string(),
        "{ env = \"A_1\" }"
    );
    assert_eq!(
        reference("file:/run/x").expect("file").to_string(),
        "{ file = \"/run/x\" }"
    );
    assert!(reference("command:pass show x").is_ok());
    for bad in ["env:", "env:A-B", "file:x", "command:"] {
        assert!(reference(bad).is_err(), "{bad}");
    }
    for secret in ["hunter2", "pass:word", "http://x"] {
        let e = reference(secret).expect_err(secret);
        assert!(!e.contains(secret), "never quoted: {e}");
    }
}
