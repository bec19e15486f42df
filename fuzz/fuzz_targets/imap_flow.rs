//! The tag/continuation state machine of one command
//! (`imap::proto::flow::Flow`) and of pipelined APPENDs
//! (`flow::pipelined` with `window::Window`), driven by replies decoded
//! from fuzzer bytes. The first input byte picks the mode.
//!
//! Checks besides "no panic": a completion is only ever handed out for our
//! own tag; "+" is accepted only while one is due; in the window, answers
//! come out in push order, each exactly once, and abandon() accounts for
//! every entry not popped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popferry::imap::proto::decode::Decoder;
use popferry::imap::proto::flow::{self, Flow, Misstep, Pipelined, Step};
use popferry::imap::proto::reply::Reply;
use popferry::window::Window;

fn replies(data: &[u8]) -> Vec<Reply> {
    let mut d = Decoder::new();
    d.feed(data);
    let mut out = Vec::new();
    while let Ok(Some(r)) = d.reply() {
        out.push(r);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let replies = replies(rest);
    if mode % 2 == 0 {
        let mut f = Flow::new("pf1");
        match mode % 6 {
            2 => f.expect_continue(),
            4 => f.expect_challenges(),
            _ => {}
        }
        for r in replies {
            let was_waiting = f.waits_for_continue();
            let is_continue = matches!(r, Reply::Continue(_));
            let ours = matches!(&r, Reply::Tagged { tag, .. } if tag == "pf1");
            match f.on_reply(r) {
                Ok(Step::Done(_)) => {
                    assert!(ours);
                    break;
                }
                Ok(Step::Proceed(_)) => assert!(is_continue),
                Ok(Step::Data(_) | Step::Bye(_)) => assert!(!is_continue && !ours),
                Err(Misstep::UnexpectedContinue) => {
                    assert!(is_continue && !was_waiting);
                    break;
                }
                Err(Misstep::ForeignTag) => break,
            }
        }
    } else {
        // Tags pf1..pfN pushed (N from the mode byte); completions as decoded.
        let n = usize::from(mode / 2 % 16) + 1;
        let mut w: Window<String, usize, bool> = Window::new(n);
        for i in 0..n {
            w.push(format!("pf{}", i + 1), i, 1).expect("room");
        }
        let mut popped = Vec::new();
        for r in replies {
            match flow::pipelined(r) {
                Ok(Pipelined::Done(tag, done)) => {
                    if w.complete(tag.as_str(), done.is_ok()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
            while let Some((_, i, _)) = w.pop() {
                popped.push(i);
            }
        }
        assert!(popped.iter().enumerate().all(|(k, &i)| k == i), "out of order");
        let (known, unknown) = w.abandon();
        assert_eq!(popped.len() + known.len() + unknown.len(), n);
    }
});
