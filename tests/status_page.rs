//! End to end: the daemon's status page at `/` against a real Dovecot —
//! fetched over HTTP (each account, its counts and state, no secret) and
//! rendered by a real headless Chromium (`--dump-dom` and a phone-sized
//! screenshot); `[daemon] status_token` on a non-loopback bind; SIGUSR1's
//! "check now" with an hour's poll interval.
//!
//! Chromium is the Debian package `chromium` (`.ci/run` installs it); a
//! missing one is a failure that says how to install it. Every browser run
//! has its own profile folder under the test's temporary folder, its own
//! process group, and a deadline (the group is killed after it).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::corpus::small_messages;
use support::daemon::{RunningDaemon, free_port};
use support::{ConfigBuilder, Dovecot, Password, Storage, User, imap_fetch_all};

const ALICE_PW: &str = "Alice-Pop-Pw-3391";
const BOB_PW: &str = "Bob-Pop-Pw-7720";
const CAROL_PW: &str = "Carol-Pop-Pw-1186";
const DAVE_PW: &str = "Dave-Imap-Pw-5503";
const ERIN_PW: &str = "Erin-Imap-Pw-2264";
/// The target password of the account that must fail.
const WRONG_PW: &str = "Wrong-Imap-Pw-8047";
const TOKEN: &str = "Page-Token-4471-xyzzy";

const SECRETS: [&str; 7] = [
    ALICE_PW, BOB_PW, CAROL_PW, DAVE_PW, ERIN_PW, WRONG_PW, TOKEN,
];

fn dovecot() -> Dovecot {
    Dovecot::builder()
        .users(vec![
            User::new("alice", ALICE_PW, Storage::Maildir),
            User::new("bob", BOB_PW, Storage::Maildir),
            User::new("carol", CAROL_PW, Storage::Maildir),
            User::new("dave", DAVE_PW, Storage::Mdbox),
            User::new("erin", ERIN_PW, Storage::Mdbox),
        ])
        .start()
}

/// Text as HTML shows it (the page escapes these five).
fn html_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} holds the secret {s:?}:\n{text}");
    }
}

/// The `<section>` of one account in the page.
fn section<'a>(page: &'a str, account: &str) -> Option<&'a str> {
    let marker = format!("<span class=\"name\">{account}</span>");
    page.split("<section")
        .find(|s| s.contains(&marker))
        .map(|s| s.split("</section>").next().unwrap_or(s))
}

fn shows_count(page: &str, account: &str, label: &str, n: u64) -> bool {
    section(page, account).is_some_and(|s| s.contains(&format!("<dt>{label}</dt><dd>{n}</dd>")))
}

fn shows_state(page: &str, account: &str, state: &str) -> bool {
    section(page, account)
        .is_some_and(|s| s.contains(&format!("<span class=\"state\">{state}</span>")))
}

// ---------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------

const CHROMIUM_DEADLINE: Duration = Duration::from_secs(90);

fn chromium_bin() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "headless Chromium is needed for the status page tests: apt-get install chromium (Debian's package)"
    );
}

/// Runs headless Chromium on `url` with `args`, a fresh profile under
/// `scratch`, in its own process group; the group is killed after
/// [`CHROMIUM_DEADLINE`] (a failure) and once it has exited.
fn chromium(scratch: &Path, name: &str, args: &[String], url: &str) -> Output {
    use std::os::unix::process::CommandExt;
    let profile = scratch.join(format!("chromium-{name}"));
    std::fs::create_dir_all(&profile).expect("profile dir");
    let stdout = scratch.join(format!("chromium-{name}.out"));
    let stderr = scratch.join(format!("chromium-{name}.err"));
    let mut child = Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .env("HOME", &profile)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromium ({e}): apt-get install chromium"));
    let pgid = child.id();
    let kill_group = || {
        let _ = Command::new("sh")
            .arg("-c")
            .arg("kill -KILL -- \"-$0\" 2>/dev/null")
            .arg(pgid.to_string())
            .status();
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if start.elapsed() > CHROMIUM_DEADLINE {
            kill_group();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish within {CHROMIUM_DEADLINE:?}\n--- stderr ---\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Helpers it may have left behind (zygote, utility processes).
    kill_group();
    Output {
        status,
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        stderr: std::fs::read(&stderr).unwrap_or_default(),
    }
}

/// A PNG's signature and its IHDR width and height.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn the_page_shows_every_account_with_its_counts_and_no_secret() {
    let d = dovecot();
    d.seed("alice", &small_messages("page-alice", 3));
    d.seed("bob", &small_messages("page-bob", 2));
    d.seed("carol", &small_messages("page-carol", 1));
    let port = free_port();
    let config = ConfigBuilder::new(&d, "alice", "dave")
        .name("alice-legacy")
        .add_account(&d, "bob <&> \"quoted\"", "bob", "erin")
        .add_account(&d, "broken", "carol", "dave")
        .target_password(Password::Plain(WRONG_PW.into()))
        .daemon_poll_interval("1h")
        .listen(&format!("127.0.0.1:{port}"))
        .write();
    let mut daemon = RunningDaemon::start(&config, port, &d.scratch().join("page.log"));

    // The counts are in the ledger as the pass writes them; the next run
    // only once the pass has returned and the daemon planned the next one:
    // wait for both (three sections each with a next run).
    daemon.wait_for("both accounts copied and the broken one failing", |dm| {
        let page = dm.get("/", &[]).body;
        shows_count(&page, "alice-legacy", "copied", 3)
            && shows_count(&page, "bob &lt;&amp;&gt; &quot;quoted&quot;", "copied", 2)
            && shows_state(&page, "broken", "failing")
            && page.matches("<dt>next run</dt>").count() == 3
    });
    let answer = daemon.get("/", &[]);
    assert_eq!(answer.code, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert!(
        answer
            .header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")),
        "{:?}",
        answer.headers
    );
    let page = answer.body;
    assert_no_secret("the page", &page);
    assert!(!page.contains("<script"), "no JavaScript:\n{page}");
    assert!(page.contains("name=\"viewport\""), "{page}");
    assert!(shows_state(&page, "alice-legacy", "ok"), "{page}");
    for (account, copied) in [
        ("alice-legacy", 3),
        ("bob &lt;&amp;&gt; &quot;quoted&quot;", 2),
        ("broken", 0),
    ] {
        let s = section(&page, account).unwrap_or_else(|| panic!("{account}:\n{page}"));
        assert!(shows_count(&page, account, "copied", copied), "{s}");
        for label in ["skipped", "rejected", "pending"] {
            assert!(shows_count(&page, account, label, 0), "{label}: {s}");
        }
        assert!(s.contains("<dt>last run</dt><dd>20"), "{s}");
        assert!(s.contains("<dt>next run</dt><dd>20"), "{s}");
    }
    let broken = section(&page, "broken").expect("broken");
    assert!(broken.contains("<dt>last error</dt><dd>"), "{broken}");
    assert!(
        broken.contains("<dt>last success</dt><dd>never</dd>"),
        "{broken}"
    );
    // The last error in the words `popferry status` prints.
    let status = support::popferry(&["status", "-c", config.to_str().expect("utf-8")], &[]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let error_line = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("last error"))
        .map(str::trim)
        .expect("status shows the last error");
    let escaped = html_text(error_line);
    assert!(broken.contains(&escaped), "{error_line:?} in {broken}");

    // /readyz stays status only.
    let ready = daemon.get("/readyz", &[]);
    assert!(
        ready.body == "ready\n" || ready.body == "not ready\n",
        "{}",
        ready.body
    );

    // A real browser renders it.
    let scratch = d.scratch();
    let url = format!("http://127.0.0.1:{port}/");
    let out = chromium(&scratch, "dom", &["--dump-dom".into()], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium --dump-dom: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["alice-legacy", "bob &lt;&amp;&gt; \"quoted\"", "broken"] {
        assert!(
            dom.contains(name),
            "{name:?} not in the rendered DOM:\n{dom}"
        );
    }
    assert!(dom.contains("copied"), "{dom}");
    assert_no_secret("the rendered DOM", &dom);

    let png = scratch.join("page.png");
    let out = chromium(
        &scratch,
        "shot",
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=412,915".into(),
            "--hide-scrollbars".into(),
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium --screenshot: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!(
        png_size(&bytes),
        Some((412, 915)),
        "a PNG of the window's size at {}",
        png.display()
    );
    assert!(
        bytes.len() > 20_000,
        "a page with content, not a blank image: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());
    if let Some(copy) = std::env::var_os("POPFERRY_TEST_SCREENSHOT_COPY") {
        std::fs::copy(&png, copy).expect("copy the screenshot");
    }
    daemon.stop();
}

#[test]
fn the_status_token_guards_the_page_on_a_non_loopback_bind() {
    let d = dovecot();
    d.seed("alice", &small_messages("token", 1));
    let port = free_port();
    // 0.0.0.0 is not loopback, whatever address the client comes from.
    let config = ConfigBuilder::new(&d, "alice", "dave")
        .daemon_poll_interval("1h")
        .listen(&format!("0.0.0.0:{port}"))
        .daemon_extra(&format!("status_token = \"{TOKEN}\"\n"))
        .write();
    let mut daemon = RunningDaemon::start(&config, port, &d.scratch().join("token.log"));

    let denied = daemon.get("/", &[]);
    assert_eq!(denied.code, 401, "{}", denied.body);
    assert!(
        denied
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        denied.headers
    );
    assert!(!denied.body.contains("alice"), "{}", denied.body);
    for bad in ["Bearer wrong-token", "Bearer Page-Token-4471", "Basic abc"] {
        let a = daemon.get("/", &[("Authorization", bad)]);
        assert_eq!(a.code, 401, "{bad}: {}", a.body);
    }
    assert_eq!(daemon.get("/?token=wrong", &[]).code, 401);

    let bearer = format!("Bearer {TOKEN}");
    daemon.wait_for("the account on the page, with the token", |dm| {
        let a = dm.get("/", &[("Authorization", &bearer)]);
        a.code == 200 && shows_count(&a.body, "alice", "copied", 1)
    });
    let by_query = daemon.get(&format!("/?token={TOKEN}"), &[]);
    assert_eq!(by_query.code, 200);
    assert!(
        section(&by_query.body, "alice").is_some(),
        "{}",
        by_query.body
    );
    assert_no_secret("the page", &by_query.body);
    assert_eq!(by_query.header("referrer-policy"), Some("no-referrer"));

    // The probes stay open.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(daemon.get(path, &[]).code, 200, "{path}");
    }
    let ready = daemon.get("/readyz", &[]);
    assert!([200, 503].contains(&ready.code), "{}", ready.code);
    assert_no_secret("the log", &daemon.log_text());
    daemon.stop();

    // Without a token on a non-loopback bind, the page is off and the
    // probes still answer.
    let port = free_port();
    let config = ConfigBuilder::new(&d, "alice", "dave")
        .file_name("no-token.toml")
        .daemon_poll_interval("1h")
        .listen(&format!("0.0.0.0:{port}"))
        .write();
    let mut daemon = RunningDaemon::start(&config, port, &d.scratch().join("no-token.log"));
    let off = daemon.get("/", &[]);
    assert_eq!(off.code, 404, "{}", off.body);
    assert!(off.body.contains("status_token"), "{}", off.body);
    assert!(!off.body.contains("alice"), "{}", off.body);
    assert_eq!(daemon.get("/healthz", &[]).code, 200);
    assert_eq!(daemon.get("/metrics", &[]).code, 200);
    assert!(daemon.log_text().contains("off"), "{}", daemon.log_text());
    daemon.stop();
}

#[test]
fn sigusr1_copies_mail_seeded_after_start_within_seconds() {
    let d = dovecot();
    d.seed("alice", &small_messages("before", 1));
    let port = free_port();
    let config = ConfigBuilder::new(&d, "alice", "dave")
        .poll_interval("1h")
        .daemon_poll_interval("1h")
        .listen(&format!("127.0.0.1:{port}"))
        .write();
    let mut daemon = RunningDaemon::start(&config, port, &d.scratch().join("usr1.log"));
    daemon.wait_for("the first pass", |dm| {
        shows_count(&dm.get("/", &[]).body, "alice", "copied", 1)
    });
    assert!(!dm_page(&daemon).contains("check requested"));

    d.seed("alice", &small_messages("after", 2));
    let asked = Instant::now();
    daemon.signal("USR1");
    daemon.wait_for("the new mail in the target", |_| {
        imap_fetch_all(&d, "dave", "INBOX").len() == 3
    });
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the poll interval is an hour; the check took {took:?}"
    );
    daemon.wait_for("the page to show the check as done", |dm| {
        let page = dm_page(dm);
        section(&page, "alice").is_some_and(|s| {
            s.contains("<dt>check requested</dt><dd>20") && s.contains(" (done)</dd>")
        }) && shows_count(&page, "alice", "copied", 3)
    });
    assert!(
        daemon.log_text().contains("SIGUSR1"),
        "{}",
        daemon.log_text()
    );
    daemon.stop();
}

fn dm_page(d: &RunningDaemon) -> String {
    d.get("/", &[]).body
}
