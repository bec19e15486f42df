//! A Gmail-shaped target (issue 11): a real Dovecot that announces Gmail's
//! capability set after login (LITERAL- but no LITERAL+, no MULTIAPPEND,
//! no BINARY, APPENDLIMIT=35651584; see `support::GMAIL_CAPABILITY`).
//! Without LITERAL+ every literal over 4096 bytes waits for the server's
//! "+", so popferry spreads the APPENDs over `[accounts.target]
//! connections` sessions (4 by default). Checked here against the real
//! server: the whole pass byte-exact and exactly once over 4 sessions; a
//! session cut in the middle of a literal while the others go on; a server
//! that refuses the 3rd connection (Dovecot's `mail_max_userip_connections`)
//! costs sessions, not the pass; a message over the announced APPENDLIMIT
//! is skipped, never sent, never deleted, and `check` shows the limit. The
//! kill loop over 4 sessions is in tests/kill_loop.rs.
//!
//! The proxies see plaintext only, so those tests use `tls = "none"`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::corpus::{corpus_small, messages};
use support::imap::Imap;
use support::proxy::{Dir, Fault, Proxy};
use support::{
    ConfigBuilder, Dovecot, Seeded, Tls, describe_output, imap_fetch_all, popferry_with_timeout,
};

const RUN_LIMIT: Duration = Duration::from_secs(120);

fn multiset<'a>(it: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in it {
        *m.entry(s.to_owned()).or_insert(0) += 1;
    }
    m
}

fn seeded_set(seeded: &[Seeded]) -> BTreeMap<String, usize> {
    multiset(seeded.iter().map(|s| s.sha256_hex.as_str()))
}

fn target_set(d: &Dovecot) -> BTreeMap<String, usize> {
    let f = imap_fetch_all(d, "dave", "INBOX");
    multiset(f.iter().map(|m| m.sha256_hex.as_str()))
}

/// `n` messages of sizes from a few hundred bytes to ~40 kB: most over
/// LITERAL-'s 4096 bytes (synchronising), some under (non-synchronising).
fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let body_len = 200 + (i * 7919) % 40_000;
            let line = format!("line {i} of a numbered message, padded to length.\r\n");
            let body: String = line.repeat(body_len / line.len() + 1);
            format!(
                "Message-ID: <gmail-{i}@popferry.test>\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\nFrom: a@example.org\r\nTo: b@example.org\r\nSubject: numbered {i}\r\n\r\n{body}"
            )
            .into_bytes()
        })
        .collect()
}

fn run(cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["-c", cfg.to_str().expect("utf-8 path")]);
    popferry_with_timeout(&all, &[], RUN_LIMIT)
}

fn status(cfg: &Path) -> serde_json::Value {
    let out = run(cfg, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// The harness's own client: what Dovecot announces, and whether it takes
/// a non-synchronising literal it did not announce.
#[test]
fn the_gmail_shaped_dovecot_announces_literal_minus_and_no_literal_plus() {
    let d = Dovecot::builder().gmail_shape().start();
    let mut c = Imap::login(&d, "dave");
    let r = c.command("CAPABILITY");
    assert!(r.is_ok(), "{}", r.status);
    let caps = String::from_utf8_lossy(&r.untagged.concat()).into_owned();
    for want in ["LITERAL-", "APPENDLIMIT=35651584", "UIDPLUS", "IMAP4rev1"] {
        assert!(caps.contains(want), "{want} missing: {caps}");
    }
    for absent in ["LITERAL+", "MULTIAPPEND", "BINARY"] {
        assert!(!caps.contains(absent), "{absent} announced: {caps}");
    }
    // Dovecot still takes a large non-synchronising literal it no longer
    // announces: the server cannot be relied on to refuse one, so the
    // client decides from the capability (and the whole-pass test below
    // watches the wire for `{n+}` over 4096 bytes).
    let big = "x".repeat(5000);
    let r = c.command(&format!(
        "APPEND \"INBOX\" {{{}+}}\r\nSubject: t\r\n\r\n{big}",
        big.len() + 15
    ));
    assert!(r.is_ok(), "{}", r.status);
    c.logout();
}

#[test]
fn a_whole_pass_over_four_sessions_is_byte_exact_and_once() {
    let d = Dovecot::builder().gmail_shape().start();
    let mut msgs = messages(&corpus_small());
    msgs.extend(numbered(80));
    let seeded = d.seed("alice", &msgs);
    // Plain, through a proxy that counts the connections popferry opens.
    let proxy = Proxy::start(d.imap_port);
    // Traps: a literal over 4096 bytes sent non-synchronising (which this
    // lenient server would take) cuts the connection.
    let mut big: Vec<u64> = seeded
        .iter()
        .map(|s| s.size)
        .filter(|&n| n > 4096)
        .collect();
    big.sort_unstable();
    big.dedup();
    let traps: Vec<_> = big
        .iter()
        .rev()
        .take(4)
        .map(|n| {
            proxy.add(
                Fault::cut(Dir::ClientToServer)
                    .before(format!(" {{{n}+}}").as_bytes())
                    .always(),
            )
        })
        .collect();
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .target_tls(Tls::None)
        .target_port(Some(proxy.port()))
        .flags(&["\\Seen"])
        .write();
    let out = run(&cfg, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    for t in traps {
        assert_eq!(proxy.fired(t), 0, "a large literal went non-synchronising");
    }
    assert_eq!(
        proxy.connections(),
        4,
        "4 sessions (the default) to a target without LITERAL+:\n{}",
        proxy.events()
    );
    let fetched = imap_fetch_all(&d, "dave", "INBOX");
    assert_eq!(fetched.len(), seeded.len(), "every message once");
    assert_eq!(
        multiset(fetched.iter().map(|f| f.sha256_hex.as_str())),
        seeded_set(&seeded),
        "the target holds exactly the bytes RETR served"
    );
    assert!(
        fetched
            .iter()
            .all(|f| f.flags.iter().any(|x| x == "\\Seen"))
    );
    let v = status(&cfg);
    assert_eq!(v[0]["copied"], seeded.len(), "{v}");
    assert_eq!(v[0]["unresolved"], 0, "{v}");
    // Nothing new: nothing appended again.
    let out = run(&cfg, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(target_set(&d), seeded_set(&seeded));
}

#[test]
fn one_session_cut_in_the_middle_of_a_literal_while_the_others_go_on() {
    let d = Dovecot::builder().gmail_shape().start();
    let seeded = d.seed("alice", &numbered(60));
    let proxy = Proxy::start(d.imap_port);
    // The second connection (an extra session) dies 1000 bytes into the
    // literal of its second APPEND: "{n}\r\n" ends the command line, the
    // literal follows once the server said "+".
    let cut = proxy.add(
        Fault::cut(Dir::ClientToServer)
            .after(b"}\r\n", 1000)
            .nth(2)
            .on_connection(2),
    );
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .target_tls(Tls::None)
        .target_port(Some(proxy.port()))
        .delete("after-sync")
        .timeout("5s")
        .write();
    let out = run(&cfg, &["sync"]);
    let ctx = format!(
        "{}\n--- proxy ---\n{}",
        describe_output(&out),
        proxy.events()
    );
    assert!(proxy.fired(cut) >= 1, "the cut never happened:\n{ctx}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the other sessions go on:\n{ctx}"
    );
    let landed = target_set(&d);
    assert!(landed.values().all(|&n| n == 1), "nothing twice:\n{ctx}");
    // Only the cut session's APPENDs in flight are left over (at most its
    // window), settled by the next pass; everything else landed.
    assert!(
        landed.len() >= seeded.len() - 2 && landed.len() < seeded.len(),
        "{} of {} landed:\n{ctx}",
        landed.len(),
        seeded.len()
    );
    let v = status(&cfg);
    assert!(v[0]["unresolved"].as_u64() >= Some(1), "{v}");
    // What was not copied is still on the POP3 server.
    let left = d.pop3_uidls("alice").len();
    assert_eq!(left, seeded.len() - landed.len(), "{ctx}");

    proxy.clear();
    let out = run(&cfg, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(target_set(&d), seeded_set(&seeded), "exactly once at last");
    let v = status(&cfg);
    assert_eq!(v[0]["unresolved"], 0, "{v}");
    assert_eq!(v[0]["copied"], seeded.len(), "{v}");
    assert!(d.pop3_uidls("alice").is_empty(), "after-sync deleted all");
}

#[test]
fn a_server_that_refuses_the_third_connection_costs_sessions_not_the_pass() {
    let d = Dovecot::builder()
        .gmail_shape()
        .max_imap_connections(2)
        .start();
    let seeded = d.seed("alice", &numbered(40));
    let proxy = Proxy::start(d.imap_port);
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .target_tls(Tls::None)
        .target_port(Some(proxy.port()))
        .write();
    let out = run(&cfg, &["sync"]);
    let ctx = format!(
        "{}\n--- proxy ---\n{}",
        describe_output(&out),
        proxy.events()
    );
    assert_eq!(out.status.code(), Some(0), "no failure:\n{ctx}");
    assert_eq!(proxy.connections(), 4, "4 asked for:\n{ctx}");
    let log = d.log_tail();
    assert!(
        log.contains("Maximum number of connections"),
        "Dovecot really refused a connection:\n{log}"
    );
    assert_eq!(target_set(&d), seeded_set(&seeded), "exactly once:\n{ctx}");
    let v = status(&cfg);
    assert_eq!(v[0]["unresolved"], 0, "{v}");
}

#[test]
fn messages_over_the_announced_appendlimit_are_skipped_never_sent_never_deleted() {
    // The limit is only announced (Dovecot would take more): whatever lands
    // over it was sent by popferry.
    let d = Dovecot::builder()
        .extra_config(
            "protocol imap {\n  imap_capability = IMAP4rev1 UIDPLUS LITERAL- APPENDLIMIT=10000\n}\n",
        )
        .start();
    let msgs = numbered(12);
    let seeded = d.seed("alice", &msgs);
    let (over, under): (Vec<&Seeded>, Vec<&Seeded>) = seeded.iter().partition(|s| s.size > 10_000);
    assert!(!over.is_empty() && !under.is_empty(), "both kinds seeded");
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .delete("after-sync")
        .write();

    let out = run(&cfg, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("APPENDLIMIT 10000 bytes"),
        "check shows the limit:\n{}",
        describe_output(&out)
    );

    let out = run(&cfg, &["sync"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Reported like a message over max_message_size.
    assert!(
        stdout.contains("APPENDLIMIT"),
        "the summary names the limit:\n{}",
        describe_output(&out)
    );
    let want: Vec<&Seeded> = under.clone();
    let want = multiset(want.iter().map(|s| s.sha256_hex.as_str()));
    assert_eq!(target_set(&d), want, "only those under the limit were sent");
    let v = status(&cfg);
    assert_eq!(v[0]["skipped"], over.len(), "{v}");
    // Never deleted: what was skipped is still on the POP3 server.
    assert_eq!(d.pop3_uidls("alice").len(), over.len());
    // A later pass does not report them again, nor send them.
    let out = run(&cfg, &["sync"]);
    assert_eq!(target_set(&d), want, "{}", describe_output(&out));
    assert_eq!(d.pop3_uidls("alice").len(), over.len());
}
