//! Issue 10 end to end: `popferry sync` and `popferry run` with OAuth2,
//! against a real Dovecot that validates the bearer tokens locally (its
//! `oauth2` passdb with an HS256 key; an expired token is refused) and the
//! test's token endpoint on loopback, which mints those tokens from refresh
//! tokens:
//!
//! - both sides over OAuth2 (XOAUTH2 on POP3, OAUTHBEARER on IMAP, and the
//!   other way round), byte-exact and exactly once; a revoked refresh token
//!   stops cleanly;
//! - a daemon whose tokens expire every few seconds keeps copying, both
//!   when the provider says so (`expires_in`) and when the tokens die
//!   earlier than announced (the server's refusal, one refresh, a retry);
//! - rotation: the `{ file }` is rewritten (mode 0600, by rename), the old
//!   refresh token is refused, the next sync works with the new one;
//! - `access_token = { command }` on both sides;
//! - a trace-level run shows no token, refresh token or client secret in
//!   any form (raw, base64 at any alignment, URL-encoded, hex).
//!
//! What only the local endpoint can show (device code, PKCE, 429) is in
//! `oauth_tokens.rs` and `oauth_login.rs`; the wire exchanges alone in
//! `oauth2_wire.rs`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use support::corpus::{self, messages, small_messages};
use support::daemon::{RunningDaemon, free_port};
use support::token_endpoint::TokenEndpoint;
use support::{ConfigBuilder, Dovecot, Seeded, describe_output, imap_fetch_all, popferry};

const CLIENT: &str = "popferry-e2e";
const CLIENT_SECRET: &str = "cs-E2e/Secret+Value=4711-xyz";

fn target_counts(d: &Dovecot) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in imap_fetch_all(d, "dave", "INBOX") {
        *m.entry(f.sha256_hex).or_insert(0) += 1;
    }
    m
}

fn add(want: &mut BTreeMap<String, usize>, seeded: &[Seeded]) {
    for s in seeded {
        *want.entry(s.sha256_hex.clone()).or_insert(0) += 1;
    }
}

fn counts(seeded: &[Seeded]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    add(&mut m, seeded);
    m
}

/// The body of an `[accounts.<side>.oauth2]` table with a refresh token in
/// `file`.
fn refresh_table(ep: &TokenEndpoint, file: &Path, secret: Option<&str>) -> String {
    let mut t = format!(
        "token_url = {:?}\nclient_id = {CLIENT:?}\nrefresh_token = {{ file = {:?} }}\nscope = \"mail\"\n",
        ep.token_url(),
        file.display().to_string()
    );
    if let Some(s) = secret {
        t.push_str(&format!("client_secret = {s:?}\n"));
    }
    t
}

/// The body of an `[accounts.<side>.oauth2]` table with a token helper.
fn command_table(command: &str) -> String {
    format!(
        "access_token = {{ command = {} }}\n",
        support::config::toml_str(command)
    )
}

/// One side over OAuth2: its `auth` and its `oauth2` table's body.
struct OAuthSide {
    auth: &'static str,
    table: String,
}

/// An account alice (POP3) → dave (IMAP) named `name`, with its own ledger:
/// each side given over OAuth2 has no password (the table replaces it); a
/// side given as None logs in with its password.
fn config_with(
    d: &Dovecot,
    name: &str,
    source: Option<OAuthSide>,
    target: Option<OAuthSide>,
    tweak: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> PathBuf {
    let mut b = ConfigBuilder::new(d, "alice", "dave")
        .name(name)
        .file_name(&format!("{name}.toml"))
        .ledger(&d.scratch().join(format!("{name}.db")));
    let mut extra = String::new();
    if let Some(s) = &source {
        b = b.source_auth(s.auth);
        extra.push_str(&format!("[accounts.source.oauth2]\n{}\n", s.table));
    }
    if let Some(t) = &target {
        b = b.target_auth(t.auth);
        extra.push_str(&format!("[accounts.target.oauth2]\n{}\n", t.table));
    }
    let b = tweak(b.extra_toml(&extra));
    let path = b.config_path();
    let text = b.to_toml();
    let mut out = String::new();
    let mut section = String::new();
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            section = t.to_owned();
        }
        let oauth_side = (section == "[accounts.source]" && source.is_some())
            || (section == "[accounts.target]" && target.is_some());
        if oauth_side && t.starts_with("password") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    std::fs::write(&path, out).expect("write the config");
    path
}

/// XOAUTH2 on the POP3 side, OAUTHBEARER on the IMAP side, each with its
/// refresh token in a file.
fn oauth_config(
    d: &Dovecot,
    ep: &TokenEndpoint,
    src_rt: &Path,
    tgt_rt: &Path,
) -> std::path::PathBuf {
    config_with(
        d,
        "oauth",
        Some(OAuthSide {
            auth: "xoauth2",
            table: refresh_table(ep, src_rt, None),
        }),
        Some(OAuthSide {
            auth: "oauthbearer",
            table: refresh_table(ep, tgt_rt, None),
        }),
        |b| b,
    )
}

fn sync(cfg: &Path) -> Output {
    popferry(&["sync", "-c", cfg.to_str().expect("utf-8 path")], &[])
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The methods of the successful logins Dovecot logged for `service`
/// (`pop3-login`, `imap-login`) and `user`.
fn login_methods(d: &Dovecot, service: &str, user: &str) -> Vec<String> {
    let log = std::fs::read_to_string(&d.log_file).expect("read the Dovecot log");
    let who = format!("user=<{user}>");
    log.lines()
        .filter(|l| l.contains(service) && l.contains("Login: ") && l.contains(&who))
        .filter_map(|l| {
            let at = l.find("method=")? + "method=".len();
            Some(l[at..].split(',').next()?.trim().to_owned())
        })
        .collect()
}

/// Writes a refresh token file with mode 0644 (so that a rewrite to 0600
/// shows).
fn write_token_file(path: &Path, token: &str) {
    std::fs::write(path, token).expect("write the token file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn read_token_file(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read the token file")
        .trim()
        .to_owned()
}

/// The `sub` claim of a JWT the endpoint minted.
fn jwt_subject(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON claims");
    v["sub"].as_str().expect("a sub claim").to_owned()
}

/// Whether Dovecot logs `user` in with `token` right now (IMAP on the
/// loopback port, `AUTHENTICATE XOAUTH2` with an initial response).
fn dovecot_takes(d: &Dovecot, user: &str, token: &str) -> bool {
    let stream = TcpStream::connect((d.host.as_str(), d.imap_port)).expect("connect IMAP");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    let sasl = base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"));
    w.write_all(format!("a AUTHENTICATE XOAUTH2 {sasl}\r\n").as_bytes())
        .expect("write");
    loop {
        line.clear();
        r.read_line(&mut line).expect("answer");
        if line.starts_with("a ") {
            return line.starts_with("a OK");
        }
        if line.starts_with('+') {
            // The error challenge: the token is refused.
            return false;
        }
    }
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
    let want = counts(&seeded);
    assert_eq!(target_counts(&d), want, "byte-exact, each once");
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(target_counts(&d), want, "still once each");
    // Each run got its tokens from the endpoint (a new process, no cache).
    assert!(ep.issued_access_tokens().len() >= 4, "{:?}", ep.requests());
    // And logged in with the mechanisms configured, nothing else.
    let pop = login_methods(&d, "pop3-login", "alice");
    let imap = login_methods(&d, "imap-login", "dave");
    assert!(
        !pop.is_empty() && pop.iter().all(|m| m == "XOAUTH2"),
        "{pop:?}"
    );
    assert!(
        imap.iter().any(|m| m == "OAUTHBEARER"),
        "popferry's logins: {imap:?}"
    );

    // The provider revokes the POP3 side's grant: a permanent error that
    // names the account and says what to do; nothing appended or deleted.
    ep.revoke(&alice);
    d.seed("alice", &messages(&corpus::corpus_small()[..1]));
    let out = sync(&cfg);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(text.contains("oauth login"), "{text}");
    assert!(text.contains("oauth"), "names the account: {text}");
    assert_eq!(target_counts(&d), want, "nothing appended");
    for t in ep.issued_access_tokens() {
        assert!(!text.contains(&t), "a token in the output");
    }
    assert!(!text.contains(&alice), "the refresh token in the output");
}

/// OAUTHBEARER on the POP3 side and XOAUTH2 on the IMAP side (the test
/// above has it the other way round), through a full sync.
#[test]
fn oauthbearer_on_pop3_and_xoauth2_on_imap_through_a_sync() {
    let d = Dovecot::builder().oauth2().start();
    let ep = TokenEndpoint::with_mint(CLIENT, None, d.jwt_mint());
    let src_rt = d.scratch().join("alice.token");
    let tgt_rt = d.scratch().join("dave.token");
    std::fs::write(&src_rt, ep.issue_refresh_token("alice")).expect("write");
    std::fs::write(&tgt_rt, ep.issue_refresh_token("dave")).expect("write");
    let seeded = d.seed("alice", &messages(&corpus::corpus_small()));
    let cfg = config_with(
        &d,
        "swapped",
        Some(OAuthSide {
            auth: "oauthbearer",
            table: refresh_table(&ep, &src_rt, None),
        }),
        Some(OAuthSide {
            auth: "xoauth2",
            table: refresh_table(&ep, &tgt_rt, None),
        }),
        |b| b,
    );
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let want = counts(&seeded);
    assert_eq!(target_counts(&d), want, "byte-exact, each once");
    let pop = login_methods(&d, "pop3-login", "alice");
    assert!(
        !pop.is_empty() && pop.iter().all(|m| m == "OAUTHBEARER"),
        "{pop:?}"
    );
    assert!(
        login_methods(&d, "imap-login", "dave")
            .iter()
            .any(|m| m == "XOAUTH2"),
        "{:?}",
        login_methods(&d, "imap-login", "dave")
    );
    let more = d.seed("alice", &small_messages("swapped-later", 2));
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let mut want = want;
    add(&mut want, &more);
    assert_eq!(
        target_counts(&d),
        want,
        "the second run copied only the new"
    );
}

/// The number of lines of the daemon's log holding the refusal message for
/// the server on `port`.
fn refusals(log: &str, port: u16) -> usize {
    let server = format!("127.0.0.1:{port}");
    log.lines()
        .filter(|l| l.contains("The OAuth2 access token was refused") && l.contains(&server))
        .count()
}

/// The seconds an access token lives in the daemon test.
const SHORT: u64 = 3;

/// A daemon whose access tokens expire every few seconds keeps copying new
/// mail: first with a provider that says so (`expires_in` 3 s: a new token
/// at each login), then with one whose tokens die long before the
/// `expires_in` it announces (the cache keeps them, Dovecot refuses them,
/// popferry refreshes once and logs in again). Each message once,
/// byte-exact.
#[test]
fn a_daemon_whose_tokens_expire_every_few_seconds_keeps_copying_new_mail() {
    let d = Dovecot::builder().oauth2().start();
    let ep = TokenEndpoint::with_mint(CLIENT, None, d.jwt_mint());
    ep.set_lifetime(SHORT);
    let src_rt = d.scratch().join("alice.token");
    let tgt_rt = d.scratch().join("dave.token");
    std::fs::write(&src_rt, ep.issue_refresh_token("alice")).expect("write");
    std::fs::write(&tgt_rt, ep.issue_refresh_token("dave")).expect("write");
    let port = free_port();
    let cfg = config_with(
        &d,
        "expiring",
        Some(OAuthSide {
            auth: "xoauth2",
            table: refresh_table(&ep, &src_rt, None),
        }),
        Some(OAuthSide {
            auth: "oauthbearer",
            table: refresh_table(&ep, &tgt_rt, None),
        }),
        |b| {
            b.daemon_poll_interval("2s")
                .listen(&format!("127.0.0.1:{port}"))
        },
    );
    let first = d.seed("alice", &messages(&corpus::corpus_small()));
    let mut want = counts(&first);
    let mut daemon = RunningDaemon::start(&cfg, port, &d.scratch().join("expiring.log"));
    daemon.wait_for("the first mail in the target", |_| {
        target_counts(&d) == want
    });

    // The tokens really expire: the first one minted is refused now, while
    // one just minted for the same user is taken.
    let first_token = ep.issued_access_tokens()[0].clone();
    let user = jwt_subject(&first_token);
    std::thread::sleep(Duration::from_secs(SHORT + 2));
    assert!(
        !dovecot_takes(&d, &user, &first_token),
        "an expired token was taken"
    );
    assert!(dovecot_takes(&d, &user, &d.jwt(&user, 60)), "a fresh token");

    let second = d.seed("alice", &small_messages("after-expiry", 3));
    add(&mut want, &second);
    daemon.wait_for("the mail seeded after the tokens expired", |_| {
        target_counts(&d) == want
    });
    let issued = ep.issued_access_tokens().len();
    assert!(issued >= 4, "a new token at each login: {issued}");

    // Now the provider's tokens die after 3 s but it announces an hour:
    // popferry caches them, Dovecot refuses them, popferry refreshes.
    ep.set_lifetime(3600);
    ep.set_mint_lifetime(Some(SHORT));
    let third = d.seed("alice", &small_messages("cached-token", 2));
    add(&mut want, &third);
    daemon.wait_for("the mail seeded with hour-long announced tokens", |_| {
        target_counts(&d) == want
    });
    std::thread::sleep(Duration::from_secs(SHORT + 2));
    let fourth = d.seed("alice", &small_messages("after-refusal", 2));
    add(&mut want, &fourth);
    daemon.wait_for("the mail seeded after the cached tokens died", |_| {
        target_counts(&d) == want
    });
    daemon.wait_for("a refused token on each side, then a new one", |dm| {
        let log = dm.log_text();
        refusals(&log, d.pop3s_port) >= 1 && refusals(&log, d.imaps_port) >= 1
    });
    assert!(ep.issued_access_tokens().len() > issued + 2);

    // Later passes copy nothing more.
    let before = ep.requests().len();
    daemon.wait_for("more passes", |_| ep.requests().len() > before);
    assert_eq!(target_counts(&d), want, "each message once");
    let log = daemon.log_text();
    for t in ep.issued_access_tokens() {
        assert!(!log.contains(&t), "a token in the daemon's log");
    }
    daemon.stop();
}

/// Rotation through `popferry sync`: each refresh hands out a new refresh
/// token and revokes the old one; each `{ file }` is rewritten (mode 0600,
/// a new file renamed into place, no temporary left), the old tokens are
/// refused (a sync holding them exits 1 and says to sign in again), and
/// the next sync works with the new ones.
#[test]
fn rotation_rewrites_the_token_files_and_the_old_tokens_stop_working() {
    let d = Dovecot::builder().oauth2().start();
    let ep = TokenEndpoint::with_mint(CLIENT, Some(CLIENT_SECRET), d.jwt_mint());
    ep.set_rotate(true);
    let dir = d.scratch().join("rotation-tokens");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src_rt = dir.join("alice.token");
    let tgt_rt = dir.join("dave.token");
    let old_src = ep.issue_refresh_token("alice");
    let old_tgt = ep.issue_refresh_token("dave");
    write_token_file(&src_rt, &old_src);
    write_token_file(&tgt_rt, &old_tgt);
    let inodes = |p: &Path| std::fs::metadata(p).expect("stat").ino();
    let (src_ino, tgt_ino) = (inodes(&src_rt), inodes(&tgt_rt));
    let side = |auth, file: &Path| {
        Some(OAuthSide {
            auth,
            table: refresh_table(&ep, file, Some(CLIENT_SECRET)),
        })
    };
    let cfg = config_with(
        &d,
        "rotation",
        side("xoauth2", &src_rt),
        side("oauthbearer", &tgt_rt),
        |b| b,
    );
    let first = d.seed("alice", &messages(&corpus::corpus_small()));
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let mut want = counts(&first);
    assert_eq!(target_counts(&d), want);

    let check_rotated = |file: &Path, old: &str, ino: u64| -> String {
        let new = read_token_file(file);
        assert_ne!(new, old, "{} was not rewritten", file.display());
        assert!(
            ep.is_valid_refresh_token(&new),
            "the file holds the new one"
        );
        assert!(!ep.is_valid_refresh_token(old), "the old one is revoked");
        let meta = std::fs::metadata(file).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_ne!(meta.ino(), ino, "rewritten by a rename, not in place");
        new
    };
    let new_src = check_rotated(&src_rt, &old_src, src_ino);
    let new_tgt = check_rotated(&tgt_rt, &old_tgt, tgt_ino);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["alice.token", "dave.token"], "no temporary left");
    let text = text_of(&out);
    for s in [&old_src, &old_tgt, &new_src, &new_tgt] {
        assert!(!text.contains(s.as_str()), "a refresh token in the output");
    }

    // The old refresh tokens stop working at the endpoint: a sync that
    // still holds one (the other side logging in with its password) is
    // refused by the provider, exits 1 with the advice, and appends nothing.
    let more = d.seed("alice", &small_messages("after-rotation", 2));
    for (which, file, old) in [
        ("source", "old-alice", &old_src),
        ("target", "old-dave", &old_tgt),
    ] {
        let stale = dir.join(file);
        write_token_file(&stale, old);
        let oauth = |auth| {
            Some(OAuthSide {
                auth,
                table: refresh_table(&ep, &stale, Some(CLIENT_SECRET)),
            })
        };
        let (s, t) = if which == "source" {
            (oauth("xoauth2"), None)
        } else {
            (None, oauth("oauthbearer"))
        };
        let stale_cfg = config_with(&d, &format!("stale-{which}"), s, t, |b| b);
        let out = sync(&stale_cfg);
        let text = text_of(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{which}: {}",
            describe_output(&out)
        );
        assert!(text.contains("oauth login"), "{which}: {text}");
        assert!(text.contains(which), "{which}: names the side: {text}");
        assert_eq!(target_counts(&d), want, "{which}: nothing appended");
        assert_eq!(read_token_file(&stale), *old, "{which}: not rewritten");
        std::fs::remove_file(&stale).expect("rm");
    }

    // The next sync works with the rotated tokens and rotates them again.
    let (src_ino, tgt_ino) = (inodes(&src_rt), inodes(&tgt_rt));
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    add(&mut want, &more);
    assert_eq!(target_counts(&d), want, "each message once");
    check_rotated(&src_rt, &new_src, src_ino);
    check_rotated(&tgt_rt, &new_tgt, tgt_ino);
}

/// `access_token = { command = "…" }` on both sides through a full sync: a
/// helper script prints a JWT the test minted. An expired one (the helper
/// asked again after the refusal) fails the run with nothing appended; a
/// valid one copies everything.
#[test]
fn the_access_token_command_form_logs_in_on_both_sides() {
    let d = Dovecot::builder().oauth2().start();
    let dir = d.scratch().join("helper");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let runs = dir.join("runs");
    let jwt_file = |user: &str| dir.join(format!("{user}.jwt"));
    let helper = dir.join("token-helper.sh");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\ncat \"{}/$1.jwt\"\n",
            runs.display(),
            dir.display()
        ),
    )
    .expect("write the helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let side = |auth, user: &str| {
        Some(OAuthSide {
            auth,
            table: command_table(&format!("'{}' {user}", helper.display())),
        })
    };
    let cfg = config_with(
        &d,
        "helper",
        side("xoauth2", "alice"),
        side("oauthbearer", "dave"),
        |b| b,
    );
    let seeded = d.seed("alice", &messages(&corpus::corpus_small()));
    let ran = |user: &str| {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == user)
            .count()
    };

    // Expired tokens: refused, the helper asked once more, refused again.
    let expired = [d.jwt("alice", -60), d.jwt("dave", -60)];
    std::fs::write(jwt_file("alice"), &expired[0]).expect("write");
    std::fs::write(jwt_file("dave"), &expired[1]).expect("write");
    let out = sync(&cfg);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(target_counts(&d), BTreeMap::new(), "nothing appended");
    // Once when the configuration is loaded (checked, as a password
    // command is), once for the login, once more after the refusal.
    assert_eq!(
        ran("alice"),
        3,
        "the helper ran again after the refusal: {}",
        describe_output(&out)
    );
    let text = text_of(&out);
    assert!(!text.contains(&expired[0]), "the token in the output");

    // Valid tokens: everything copied, each once.
    let valid = [d.jwt("alice", 600), d.jwt("dave", 600)];
    std::fs::write(jwt_file("alice"), &valid[0]).expect("write");
    std::fs::write(jwt_file("dave"), &valid[1]).expect("write");
    let out = sync(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert_eq!(target_counts(&d), counts(&seeded), "byte-exact, each once");
    assert!(ran("alice") >= 5 && ran("dave") >= 2, "the helper was used");
    let text = text_of(&out);
    for t in valid.iter().chain(&expired) {
        assert!(!text.contains(t.as_str()), "a token in the output");
    }
    let pop = login_methods(&d, "pop3-login", "alice");
    assert!(pop.iter().any(|m| m == "XOAUTH2"), "{pop:?}");
    let imap = login_methods(&d, "imap-login", "dave");
    assert!(imap.iter().any(|m| m == "OAUTHBEARER"), "{imap:?}");
}

/// Every form in which `secret` could show: itself, URL-encoded (a form
/// body), hex, and its base64 (standard and URL-safe) at each of the three
/// alignments it could have inside a longer encoded string (a SASL
/// response, an HTTP Basic header): the characters that come from the
/// secret's bytes alone.
fn leak_forms(secret: &str) -> Vec<String> {
    assert!(secret.len() >= 12, "too short to look for: {secret:?}");
    let mut forms = vec![
        secret.to_owned(),
        oauth2::url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
    ];
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for k in 0..3usize {
            let mut bytes = vec![0u8; k];
            bytes.extend_from_slice(secret.as_bytes());
            let enc = engine.encode(&bytes);
            let skip = (8 * k).div_ceil(6);
            // The last 2 characters may mix in what follows.
            let core = &enc[skip..enc.trim_end_matches('=').len() - 2];
            forms.push(core.to_owned());
        }
    }
    forms
}

/// The detector itself: a secret inside any encoded string, at any offset,
/// is found by one of its forms.
#[test]
fn leak_forms_find_a_secret_inside_any_base64() {
    let secret = "eyJhbGciOi.secret-token_value";
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for prefix in ["", "u", "us", "user=dave\x01auth=Bearer "] {
            for suffix in ["", "\x01\x01", "x"] {
                let enc = engine.encode(format!("{prefix}{secret}{suffix}"));
                assert!(
                    leak_forms(secret).iter().any(|f| enc.contains(f.as_str())),
                    "{prefix:?} {suffix:?}: {enc}"
                );
            }
        }
    }
    assert!(
        !leak_forms(secret)
            .iter()
            .any(|f| "an innocent log line".contains(f.as_str()))
    );
}

fn assert_traced(what: &str, out: &Output, json: bool) {
    let err = String::from_utf8_lossy(&out.stderr);
    let traced = if json {
        err.contains("\"level\":\"TRACE\"")
    } else {
        err.contains("TRACE")
    };
    assert!(
        traced,
        "{what}: not at trace level:\n{}",
        describe_output(out)
    );
}

/// A trace-level sync over OAuth2 on both sides (with a client secret and
/// rotating refresh tokens), in text and JSON logs, plus a run whose token
/// Dovecot refuses: stdout and stderr hold no access token, refresh token,
/// client secret, nor the base64 of any of them, nor of the XOAUTH2 or
/// OAUTHBEARER strings.
#[test]
fn a_trace_level_oauth2_sync_shows_no_token_and_no_secret() {
    let d = Dovecot::builder().oauth2().start();
    let ep = TokenEndpoint::with_mint(CLIENT, Some(CLIENT_SECRET), d.jwt_mint());
    ep.set_rotate(true);
    let src_rt = d.scratch().join("alice.token");
    let tgt_rt = d.scratch().join("dave.token");
    std::fs::write(&src_rt, ep.issue_refresh_token("alice")).expect("write");
    std::fs::write(&tgt_rt, ep.issue_refresh_token("dave")).expect("write");
    let side = |auth, file: &Path| {
        Some(OAuthSide {
            auth,
            table: refresh_table(&ep, file, Some(CLIENT_SECRET)),
        })
    };
    let cfg = config_with(
        &d,
        "traced",
        side("xoauth2", &src_rt),
        side("oauthbearer", &tgt_rt),
        |b| b,
    );
    let c = cfg.to_str().expect("utf-8 path");
    let env = [("RUST_LOG", "trace"), ("NO_COLOR", "1")];
    let mut runs: Vec<(&str, Output, bool)> = Vec::new();

    let first = d.seed("alice", &messages(&corpus::corpus_small()));
    let out = popferry(
        &[
            "--log-format",
            "text",
            "--log-level",
            "trace",
            "sync",
            "-c",
            c,
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let mut want = counts(&first);
    assert_eq!(target_counts(&d), want);
    runs.push(("text", out, false));

    let second = d.seed("alice", &small_messages("traced-json", 2));
    let out = popferry(&["--log-format", "json", "sync", "-c", c], &env);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    add(&mut want, &second);
    assert_eq!(target_counts(&d), want);
    runs.push(("json", out, true));

    // A token Dovecot refuses (minted for another user): the refusal, the
    // server's error challenge, the second refresh and the error at trace.
    let wrong = d.scratch().join("wrong.token");
    std::fs::write(&wrong, ep.issue_refresh_token("bob")).expect("write");
    let refused = config_with(
        &d,
        "refused",
        side("xoauth2", &wrong),
        side("oauthbearer", &tgt_rt),
        |b| b,
    );
    d.seed("alice", &small_messages("traced-refused", 1));
    let out = popferry(
        &[
            "--log-format",
            "text",
            "--log-level",
            "trace",
            "sync",
            "-c",
            refused.to_str().expect("utf-8 path"),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_eq!(target_counts(&d), want, "nothing appended");
    runs.push(("refused", out, false));

    let mut secrets = vec![CLIENT_SECRET.to_owned()];
    secrets.extend(ep.issued_access_tokens());
    secrets.extend(ep.issued_refresh_tokens());
    let mut sasl = Vec::new();
    for t in ep.issued_access_tokens() {
        let user = jwt_subject(&t);
        sasl.push(format!("user={user}\x01auth=Bearer {t}\x01\x01"));
        sasl.push(format!("n,a={user},\x01auth=Bearer {t}\x01\x01"));
        sasl.push(format!("n,,\x01auth=Bearer {t}\x01\x01"));
    }
    // At least: 2 refresh tokens at the start, each side rotated in each
    // of the three runs (the refused side twice), and their access tokens.
    assert!(ep.issued_access_tokens().len() >= 6, "{:?}", ep.requests());
    assert!(ep.issued_refresh_tokens().len() >= 8);
    let b64 = base64::engine::general_purpose::STANDARD;
    for (what, out, json) in &runs {
        assert_traced(what, out, *json);
        let text = text_of(out);
        for s in &secrets {
            for f in leak_forms(s) {
                assert!(
                    !text.contains(&f),
                    "{what}: {f:?} (a form of a secret) in the output:\n{}",
                    describe_output(out)
                );
            }
        }
        for s in &sasl {
            assert!(
                !text.contains(&b64.encode(s)),
                "{what}: the base64 of a SASL string in the output:\n{}",
                describe_output(out)
            );
        }
    }
}
