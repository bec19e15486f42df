//! Issue 10 end to end: `popferry sync` with OAuth2 on both sides, against
//! a real Dovecot that validates the bearer tokens locally (its `oauth2`
//! passdb with an HS256 key) and the test's token endpoint on loopback,
//! which mints those tokens from refresh tokens. What only the local
//! endpoint can show (device code, PKCE, rotation, 429) is in
//! `oauth_tokens.rs` and `oauth_login.rs`; the wire exchanges alone in
//! `oauth2_wire.rs`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::corpus::{self, messages};
use support::token_endpoint::TokenEndpoint;
use support::{ConfigBuilder, Dovecot, describe_output, imap_fetch_all, popferry};

const CLIENT: &str = "popferry-e2e";

fn target_counts(d: &Dovecot) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in imap_fetch_all(d, "dave", "INBOX") {
        *m.entry(f.sha256_hex).or_insert(0) += 1;
    }
    m
}

/// The config: XOAUTH2 on the POP3 side, OAUTHBEARER on the IMAP side,
/// each with its refresh token in a file and no password.
fn oauth_config(
    d: &Dovecot,
    ep: &TokenEndpoint,
    src_rt: &Path,
    tgt_rt: &Path,
) -> std::path::PathBuf {
    let table = |side: &str, rt: &Path| {
        format!(
            "[accounts.{side}.oauth2]\ntoken_url = {:?}\nclient_id = {CLIENT:?}\nrefresh_token = {{ file = {:?} }}\nscope = \"mail\"\n",
            ep.token_url(),
            rt.display().to_string()
        )
    };
    let text = std::fs::read_to_string(
        ConfigBuilder::new(d, "alice", "dave")
            .name("oauth")
            .source_auth("xoauth2")
            .target_auth("oauthbearer")
            .extra_toml(&format!(
                "{}\n{}",
                table("source", src_rt),
                table("target", tgt_rt)
            ))
            .write(),
    )
    .expect("read the config");
    // No password on either side: the oauth2 table replaces it.
    let without: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("password"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = d.scratch().join("oauth.toml");
    std::fs::write(&path, without).expect("write the config");
    path
}

fn sync(cfg: &Path) -> std::process::Output {
    popferry(&["sync", "-c", cfg.to_str().expect("utf-8 path")], &[])
}

#[test]
fn both_sides_over_oauth2_copy_each_message_once_and_a_revoked_token_stops_cleanly() {
    let d = Dovecot::builder().oauth2().start();
    let ep = TokenEndpoint::with_mint(CLIENT, None, d.jwt_mint());
    let src_rt = d.scratch().join("alice.token");
    let tgt_rt = d.scratch().join("dave.token");
    let alice = ep.issue_refresh_token("alice");
    std::fs::write(&src_rt, &alice).expect("write");
    std::fs::write(&tgt_rt, ep.issue_refresh_token("dave")).expect("write");
    let seeded = d.seed("alice", &messages(&corpus::corpus_small()));
    let cfg = oauth_config(&d, &ep, &src_rt, &tgt_rt);

    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let mut want = BTreeMap::new();
    for s in &seeded {
        *want.entry(s.sha256_hex.clone()).or_insert(0) += 1;
    }
    assert_eq!(target_counts(&d), want, "byte-exact, each once");
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(target_counts(&d), want, "still once each");
    // Each run got its tokens from the endpoint (a new process, no cache).
    assert!(ep.issued_access_tokens().len() >= 4, "{:?}", ep.requests());

    // The provider revokes the POP3 side's grant: a permanent error that
    // names the account and says what to do; nothing appended or deleted.
    ep.revoke(&alice);
    d.seed("alice", &messages(&corpus::corpus_small()[..1]));
    let out = sync(&cfg);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(text.contains("oauth login"), "{text}");
    assert!(text.contains("oauth"), "names the account: {text}");
    assert_eq!(target_counts(&d), want, "nothing appended");
    for t in ep.issued_access_tokens() {
        assert!(!text.contains(&t), "a token in the output");
    }
    assert!(!text.contains(&alice), "the refresh token in the output");
}
