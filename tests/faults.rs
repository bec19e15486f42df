//! Connection faults between popferry and real servers (issue 3, guarantees
//! 2, 3 and 5): a fault-injecting proxy (tests/support/proxy.rs) sits between
//! popferry and a real Dovecot, on the POP3 side or the IMAP side, and cuts,
//! resets or stalls the connection at precise points of the conversation: in
//! the middle of a RETR, in the middle of the UIDL listing, before the APPEND
//! command, inside its literal, after the literal, in place of the tagged OK
//! and right after it.
//!
//! Every case proves the same three things:
//! - the faulty run ends (no hang), exits 1 and names the account and the
//!   server it lost;
//! - nothing was deleted from the POP3 server early (these tests use
//!   `delete = "after-sync"`, the policy that could lose mail);
//! - after the next clean run the target holds exactly the seeded messages
//!   (multiset of SHA-256: nothing missing, nothing twice) and the ledger has
//!   nothing unresolved.
//!
//! The proxy sees plaintext only, so both sides use `tls = "none"` (allowed on
//! loopback). Each test has its own Dovecot and proxies; every popferry run is
//! bounded by a time limit, and `timeout = "2s"` makes stalls end quickly.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use support::corpus::corpus_kind;
use support::proxy::{Action, Dir, Fault, FaultId, Proxy};
use support::{
    ConfigBuilder, Dovecot, Seeded, Tls, describe_output, imap_fetch_all, popferry_with_timeout,
};

/// A bound on any single popferry run here; a run that takes longer is a hang.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Kinds that all carry a Message-ID (an interrupted APPEND of these can be
/// settled by a search). `plain` first: small, so the first APPEND is quick.
const KINDS: &[&str] = &[
    "plain",
    "attachment",
    "dot-lines",
    "utf8-8bit",
    "bare-lf",
    "long-line",
    "received-date",
];

struct Rig {
    d: Dovecot,
    pop: Proxy,
    imap: Proxy,
    seeded: Vec<Seeded>,
    cfg: PathBuf,
    account: String,
}

/// A Dovecot with `alice` seeded with `kinds`, proxies in front of its plain
/// POP3 and IMAP ports, and a config (account `faulty`, delete after sync,
/// timeout 2s) that goes through them.
fn rig(kinds: &[&str]) -> Rig {
    let d = Dovecot::start();
    let msgs: Vec<Vec<u8>> = kinds.iter().map(|k| corpus_kind(k)).collect();
    let seeded = d.seed("alice", &msgs);
    let pop = Proxy::start(d.pop3_port);
    let imap = Proxy::start(d.imap_port);
    let account = "faulty".to_string();
    let cfg = ConfigBuilder::new(&d, "alice", "dave")
        .name(&account)
        .source_tls(Tls::None)
        .target_tls(Tls::None)
        .source_port(Some(pop.port()))
        .target_port(Some(imap.port()))
        .timeout("2s")
        .delete("after-sync")
        .write();
    Rig {
        d,
        pop,
        imap,
        seeded,
        cfg,
        account,
    }
}

fn multiset<'a>(it: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in it {
        *m.entry(s.to_owned()).or_insert(0) += 1;
    }
    m
}

impl Rig {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        let c = self.cfg.to_str().expect("utf-8 path");
        all.extend(["-c", c]);
        popferry_with_timeout(&all, &[], RUN_LIMIT)
    }

    fn seeded_set(&self) -> BTreeMap<String, usize> {
        multiset(self.seeded.iter().map(|s| s.sha256_hex.as_str()))
    }

    fn target_set(&self) -> BTreeMap<String, usize> {
        let f = imap_fetch_all(&self.d, "dave", "INBOX");
        multiset(f.iter().map(|m| m.sha256_hex.as_str()))
    }

    fn pop3_set(&self) -> BTreeMap<String, usize> {
        let all = self.d.pop3_retr_all("alice");
        multiset(
            all.iter()
                .map(|m| support::sha256_hex(m))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        )
    }

    fn context(&self, out: &std::process::Output) -> String {
        format!(
            "{}\n--- pop3 proxy ---\n{}\n--- imap proxy ---\n{}",
            describe_output(out),
            self.pop.events(),
            self.imap.events()
        )
    }

    /// The faulty run: exit 1, a clear error naming the account, the protocol
    /// and the server (the proxy's port, which is what popferry knows), and
    /// the fault really happened.
    fn faulty_run(&self, fault: FaultId, proxy: &Proxy, side: &str) -> String {
        let out = self.run(&["sync"]);
        let ctx = self.context(&out);
        assert!(proxy.fired(fault) >= 1, "the fault never fired:\n{ctx}");
        assert_eq!(out.status.code(), Some(1), "exit status:\n{ctx}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let error = stdout
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no error line on stdout:\n{ctx}"));
        assert!(
            error.contains(&self.account)
                && error.contains(side)
                && error.contains(&format!("127.0.0.1:{}", proxy.port())),
            "the error names the account, {side} and the server:\n{ctx}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "panic:\n{ctx}"
        );
        // Nothing deleted: the pass failed before QUIT, so no DELE committed.
        let left = self.pop3_set();
        assert_eq!(
            left,
            self.seeded_set(),
            "a failed pass deleted mail from the POP3 server:\n{ctx}"
        );
        stdout.into_owned()
    }

    /// Clean runs until done: exactly the seeded set in the target, nothing
    /// unresolved, the POP3 mailbox emptied (after-sync), and one more run
    /// changes nothing.
    fn recovers(&self) {
        self.pop.clear();
        self.imap.clear();
        let out = self.run(&["sync"]);
        let ctx = self.context(&out);
        assert_eq!(out.status.code(), Some(0), "clean run:\n{ctx}");
        assert_eq!(
            self.target_set(),
            self.seeded_set(),
            "the target must hold every message exactly once:\n{ctx}"
        );
        let out = self.run(&["status", "--json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
        assert_eq!(v[0]["unresolved"], 0, "{v}");
        assert_eq!(v[0]["copied"], self.seeded.len(), "{v}");
        assert_eq!(v[0]["rejected"], 0, "{v}");
        assert!(
            self.d.pop3_uidls("alice").is_empty(),
            "after-sync: everything copied is deleted"
        );
        let out = self.run(&["sync"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
        assert_eq!(
            self.target_set(),
            self.seeded_set(),
            "a later run changed nothing"
        );
    }
}

#[test]
fn pop3_cut_in_the_middle_of_a_retr() {
    let r = rig(KINDS);
    // The third RETR: 200 bytes into the message data.
    let f = r.pop.add(
        Fault::cut(Dir::ServerToClient)
            .after(b" octets\r\n", 200)
            .nth(3),
    );
    r.faulty_run(f, &r.pop, "POP3");
    // What was appended before the cut is in the target, once.
    let partial = r.target_set();
    assert_eq!(partial.len(), 2, "the first two were copied: {partial:?}");
    r.recovers();
}

#[test]
fn pop3_reset_in_the_middle_of_a_retr() {
    let r = rig(KINDS);
    let f = r.pop.add(
        Fault::reset(Dir::ServerToClient)
            .after(b" octets\r\n", 1000)
            .nth(2),
    );
    r.faulty_run(f, &r.pop, "POP3");
    r.recovers();
}

#[test]
fn pop3_cut_in_the_middle_of_the_uidl_listing() {
    let r = rig(KINDS);
    let uidls = r.d.pop3_uidls("alice");
    // Cut right before the third line of the UIDL listing.
    let line = format!("\r\n3 {}\r\n", uidls[2]);
    let f = r
        .pop
        .add(Fault::cut(Dir::ServerToClient).before(line.as_bytes()));
    r.faulty_run(f, &r.pop, "POP3");
    assert!(
        r.target_set().is_empty(),
        "nothing is copied without a complete listing"
    );
    r.recovers();
}

#[test]
fn pop3_stall_past_the_timeout() {
    let r = rig(KINDS);
    let f = r.pop.add(
        Fault::stall(Dir::ServerToClient)
            .after(b" octets\r\n", 50)
            .nth(2),
    );
    let out = r.faulty_run(f, &r.pop, "POP3");
    assert!(
        out.contains("within"),
        "the error says the server did not answer in time:\n{out}"
    );
    r.recovers();
}

#[test]
fn pop3_stall_of_the_client_side_past_the_timeout() {
    let r = rig(KINDS);
    // popferry's RETR 2 never reaches the server.
    let f = r
        .pop
        .add(Fault::stall(Dir::ClientToServer).before(b"RETR 2"));
    r.faulty_run(f, &r.pop, "POP3");
    r.recovers();
}

#[test]
fn imap_cut_before_the_append() {
    let r = rig(KINDS);
    let f = r
        .imap
        .add(Fault::cut(Dir::ClientToServer).before(b" APPEND ").nth(2));
    r.faulty_run(f, &r.imap, "IMAP");
    assert_eq!(r.target_set().len(), 1, "only the first APPEND happened");
    r.recovers();
}

#[test]
fn imap_cut_during_the_append_literal() {
    let r = rig(KINDS);
    // 20 bytes into the second message's literal ({n+}: LITERAL+).
    let f = r
        .imap
        .add(Fault::cut(Dir::ClientToServer).after(b"+}\r\n", 20).nth(2));
    r.faulty_run(f, &r.imap, "IMAP");
    assert_eq!(r.target_set().len(), 1, "the cut APPEND stored nothing");
    r.recovers();
}

#[test]
fn imap_reset_during_the_append_literal() {
    let r = rig(KINDS);
    let f = r.imap.add(
        Fault::reset(Dir::ClientToServer)
            .after(b"+}\r\n", 5000)
            .nth(2),
    );
    r.faulty_run(f, &r.imap, "IMAP");
    r.recovers();
}

#[test]
fn imap_cut_after_the_literal_before_the_command_ends() {
    let r = rig(KINDS);
    // The whole literal of the third message reaches the server, the CRLF
    // that completes the command does not.
    let size = r.seeded[2].size;
    let f = r.imap.add(
        Fault::cut(Dir::ClientToServer)
            .after(b"+}\r\n", size)
            .nth(3),
    );
    r.faulty_run(f, &r.imap, "IMAP");
    r.recovers();
}

#[test]
fn imap_tagged_ok_lost_after_the_server_stored_the_message() {
    let r = rig(KINDS);
    // The server stored the second message; its tagged OK never arrives.
    let f = r.imap.add(
        Fault::cut(Dir::ServerToClient)
            .before(b"OK [APPENDUID")
            .nth(2),
    );
    r.faulty_run(f, &r.imap, "IMAP");
    // APPENDs are pipelined: the second and any sent after it may all have
    // landed, none of them recorded.
    let landed = r.target_set().len();
    assert!(
        landed >= 2,
        "the second APPEND landed although popferry did not see the OK ({landed} in the target)"
    );
    let out = r.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let unresolved = v[0]["unresolved"].as_u64().expect("unresolved count");
    let copied = v[0]["copied"].as_u64().expect("copied count");
    assert!(unresolved >= 1, "intents await settling: {v}");
    // The first OK is recorded when popferry read it before the cut; when
    // the cut breaks a write first, that OK may sit unread and its intent is
    // settled by the next run instead (see the closing note of the
    // restructure: the pipeline does not yet drain replies already received
    // when a write fails). Never is an OK recorded that was not seen.
    assert!(
        copied <= 1,
        "only the first OK can have been seen and recorded: {v}"
    );
    r.recovers();
}

#[test]
fn imap_cut_right_after_the_tagged_ok() {
    let r = rig(KINDS);
    // popferry reads the OK of the second APPEND, then the connection is gone.
    let f = r.imap.add(
        Fault::cut(Dir::ServerToClient)
            .after_line_of(b"OK [APPENDUID")
            .nth(2),
    );
    r.faulty_run(f, &r.imap, "IMAP");
    assert!(
        r.target_set().len() >= 2,
        "pipelined APPENDs after the cut may have landed too"
    );
    r.recovers();
}

#[test]
fn imap_stall_instead_of_the_tagged_ok_past_the_timeout() {
    let r = rig(KINDS);
    let f = r.imap.add(
        Fault::stall(Dir::ServerToClient)
            .before(b"OK [APPENDUID")
            .nth(3),
    );
    let out = r.faulty_run(f, &r.imap, "IMAP");
    assert!(
        out.contains("within") || out.to_lowercase().contains("timed out"),
        "the error says it timed out:\n{out}"
    );
    r.recovers();
}

#[test]
fn imap_stall_of_the_append_literal_past_the_timeout() {
    let r = rig(KINDS);
    let f = r.imap.add(
        Fault::stall(Dir::ClientToServer)
            .after(b"+}\r\n", 100)
            .nth(2),
    );
    r.faulty_run(f, &r.imap, "IMAP");
    r.recovers();
}

#[test]
fn imap_tagged_ok_lost_for_a_message_without_message_id() {
    // Settling an unresolved APPEND searches by Message-ID; a message without
    // one must still not be appended twice (guarantee 2).
    let r = rig(&["plain", "no-msgid", "utf8-8bit"]);
    let f = r.imap.add(
        Fault::cut(Dir::ServerToClient)
            .before(b"OK [APPENDUID")
            .nth(2),
    );
    r.faulty_run(f, &r.imap, "IMAP");
    assert!(
        r.target_set().len() >= 2,
        "pipelined APPENDs after the cut may have landed too"
    );
    r.recovers();
}

#[test]
fn the_proxy_really_cuts_and_a_clear_proxy_passes_everything() {
    // Self-test of the harness: with no rule everything flows; a rule on the
    // k-th connection leaves the others alone.
    let r = rig(&["plain", "utf8-8bit"]);
    let f = r.imap.add(
        Fault::new(Dir::ServerToClient, Action::Close)
            .after_bytes(0)
            .on_connection(99),
    );
    let out = r.run(&["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", r.context(&out));
    assert_eq!(r.imap.fired(f), 0);
    assert!(r.imap.connections() >= 1 && r.pop.connections() >= 1);
    r.recovers();
}
