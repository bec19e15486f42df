//! The status page at `/`: one server-rendered HTML document, no
//! JavaScript (a refresh meta tag reloads it), readable on a phone.
//!
//! Why hand-written HTML and not a template engine: the page is one small
//! document, and every piece of text in it goes through [`escape`] at one
//! place ([`Html::text`]), so nothing an account name, a host or a server's
//! words hold can become markup. What it shows are the words of
//! `crate::status` (the same as `popferry status`): no password, no token,
//! and no server text beyond the last error the ledger keeps.

use crate::ledger::AccountStatus;
use crate::status::{self, State};

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 30;

/// One account as the page shows it.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub status: AccountStatus,
    pub state: State,
    /// The last "check now" (SIGUSR1), if there was one.
    pub check_requested: Option<CheckRequest>,
}

/// A "check now": when it was asked, and whether a pass has answered it
/// (one that started after it has ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRequest {
    pub at: i64,
    pub answered: bool,
}

/// The whole page; `now` is the time it shows as "updated".
pub fn render(accounts: &[AccountView], now: i64) -> String {
    let mut h = Html(String::with_capacity(4096 + accounts.len() * 1024));
    h.raw(HEAD);
    h.raw("<h1>popferry</h1>\n<p class=\"meta\">");
    h.text(&format!(
        "{} account{} · updated {} · reloads every {REFRESH_SECS} s",
        accounts.len(),
        if accounts.len() == 1 { "" } else { "s" },
        status::when(Some(now))
    ));
    h.raw("</p>\n");
    if accounts.is_empty() {
        h.raw("<p>No accounts are configured.</p>\n");
    }
    for a in accounts {
        account(&mut h, a);
    }
    h.raw("</body>\n</html>\n");
    h.0
}

fn account(h: &mut Html, a: &AccountView) {
    let state = a.state.words();
    let class = state.replace(' ', "-");
    h.raw("<section class=\"account state-");
    h.text(&class);
    h.raw("\">\n<h2><span class=\"name\">");
    h.text(&a.status.account);
    h.raw("</span> <span class=\"state\">");
    h.text(state);
    h.raw("</span></h2>\n<p class=\"meaning\">");
    h.text(a.state.meaning());
    h.raw("</p>\n<dl class=\"counts\">\n");
    for (label, n) in status::counts(&a.status) {
        h.raw("<div><dt>");
        h.text(label);
        h.raw("</dt><dd>");
        h.text(&n.to_string());
        h.raw("</dd></div>\n");
    }
    h.raw("</dl>\n<dl class=\"times\">\n");
    for (label, value) in status::times(&a.status) {
        let error = label == "last error";
        h.raw(if error {
            "<div class=\"error\"><dt>"
        } else {
            "<div><dt>"
        });
        h.text(label);
        h.raw("</dt><dd>");
        h.text(&value);
        h.raw("</dd></div>\n");
    }
    if let Some(c) = a.check_requested {
        h.raw("<div class=\"requested\"><dt>check requested</dt><dd>");
        h.text(&status::when(Some(c.at)));
        h.text(if c.answered {
            " (done)"
        } else {
            " (waiting for the pass)"
        });
        h.raw("</dd></div>\n");
    }
    h.raw("</dl>\n</section>\n");
}

/// The document being written: markup through [`Html::raw`] (constants
/// only), everything else through [`Html::text`].
struct Html(String);

impl Html {
    fn raw(&mut self, markup: &'static str) {
        self.0.push_str(markup);
    }

    fn text(&mut self, text: &str) {
        escape(&mut self.0, text);
    }
}

/// Writes `text` so that it is text in HTML content and in quoted
/// attribute values; control characters other than tab and newline become
/// U+FFFD (a server's words may hold any byte).
pub fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<meta name="robots" content="noindex">
<title>popferry status</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 48rem; padding: 0.75rem; line-height: 1.4; color: #1a1a1a; background: #fafafa; }
h1 { font-size: 1.4rem; margin: 0.25rem 0; }
.meta { color: #555; font-size: 0.9rem; margin-top: 0; }
.account { background: #fff; border: 1px solid #ddd; border-left: 0.4rem solid #888; border-radius: 0.4rem; padding: 0.5rem 0.75rem; margin: 0.75rem 0; }
.account h2 { font-size: 1.1rem; margin: 0.2rem 0; overflow-wrap: anywhere; }
.state { font-size: 0.85rem; font-weight: normal; padding: 0.1rem 0.45rem; border-radius: 1rem; background: #eee; white-space: nowrap; }
.state-ok { border-left-color: #2e7d32; } .state-ok .state { background: #e3f2e5; color: #1b5e20; }
.state-failing { border-left-color: #c62828; } .state-failing .state { background: #fde7e7; color: #8e1c1c; }
.state-backing-off { border-left-color: #ef6c00; } .state-backing-off .state { background: #fff0e0; color: #8a3d00; }
.state-recovering { border-left-color: #1565c0; } .state-recovering .state { background: #e4eefb; color: #0d3c75; }
.state-budget-spent { border-left-color: #6a1b9a; } .state-budget-spent .state { background: #f3e5f5; color: #4a148c; }
.meaning { margin: 0.2rem 0 0.4rem; color: #444; font-size: 0.9rem; }
dl { margin: 0.3rem 0; }
.counts { display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; }
.counts div { min-width: 5.5rem; }
.counts dt { font-size: 0.8rem; color: #555; }
.counts dd { margin: 0; font-size: 1.2rem; font-variant-numeric: tabular-nums; }
.times div { display: flex; flex-wrap: wrap; gap: 0 0.5rem; }
.times dt { min-width: 7.5rem; color: #555; }
.times dd { margin: 0; overflow-wrap: anywhere; }
.error dd { color: #8e1c1c; }
</style>
</head>
<body>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: State) -> AccountView {
        AccountView {
            status: AccountStatus {
                account: name.into(),
                copied: 12,
                skipped: 1,
                rejected: 2,
                pending: 3,
                last_run: Some(1_700_000_000),
                ..Default::default()
            },
            state,
            check_requested: None,
        }
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let mut a = view("<script>alert('x')</script>&\"", State::Failing);
        a.status.last_error = Some("server said: <b>NO</b> \u{7}\r\nbye".into());
        let page = render(&[a], 1_700_000_100);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"),
            "{page}"
        );
        assert!(
            page.contains("&lt;b&gt;NO&lt;/b&gt; \u{FFFD}\u{FFFD}\nbye"),
            "{page}"
        );
        assert!(!page.contains("<script"), "no script of our own either");
    }

    #[test]
    fn each_account_shows_its_state_counts_and_times() {
        let mut b = view("second", State::BackingOff);
        b.check_requested = Some(CheckRequest {
            at: 1_700_000_050,
            answered: false,
        });
        b.status.last_error = Some("POP3 server timed out".into());
        let page = render(&[view("first", State::Ok), b], 1_700_000_100);
        for want in [
            "<span class=\"name\">first</span> <span class=\"state\">ok</span>",
            "<section class=\"account state-backing-off\">",
            "<dt>copied</dt><dd>12</dd>",
            "<dt>skipped</dt><dd>1</dd>",
            "<dt>rejected</dt><dd>2</dd>",
            "<dt>pending</dt><dd>3</dd>",
            "<dt>last run</dt><dd>2023-11-14T22:13:20Z</dd>",
            "<dt>last error</dt><dd>POP3 server timed out</dd>",
            "<dt>check requested</dt><dd>2023-11-14T22:14:10Z (waiting for the pass)</dd>",
            "<meta name=\"viewport\"",
            "<meta http-equiv=\"refresh\" content=\"30\">",
            "2 accounts",
        ] {
            assert!(page.contains(want), "{want:?} missing:\n{page}");
        }
        assert_eq!(page.matches("check requested").count(), 1, "{page}");
        assert_eq!(
            HEAD.matches("content=\"30\"").count(),
            1,
            "REFRESH_SECS and the meta tag agree"
        );
        assert_eq!(REFRESH_SECS, 30);
    }
}
