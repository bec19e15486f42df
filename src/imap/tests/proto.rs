//! The sans-IO protocol on scripted bytes: no socket, no runtime.

use super::super::proto::command::{self, Part, Segment};
use super::super::proto::decode::Decoder;
use super::super::proto::encode;
use super::super::proto::flow::{self, Flow, Misstep, Pipelined, Step};
use super::super::proto::reply::{Done, Fetch, Greeting, Reply, State, Untagged};
use super::*;
use crate::spool::SpooledMessage;

/// Every reply in `bytes`, which must end exactly after the last one.
fn replies(bytes: &[u8]) -> Vec<Reply> {
    let mut d = Decoder::new();
    d.feed(bytes);
    let mut out = Vec::new();
    while let Some(r) = d.reply().expect("parses") {
        out.push(r);
    }
    assert_eq!(d.buffered(), 0, "left over");
    out
}

/// The same, fed in two pieces split at `at`.
fn replies_split(bytes: &[u8], at: usize) -> Vec<Reply> {
    let (a, b) = bytes.split_at(at);
    let mut d = Decoder::new();
    let mut out = Vec::new();
    d.feed(a);
    while let Some(r) = d.reply().expect("parses") {
        out.push(r);
    }
    d.feed(b);
    while let Some(r) = d.reply().expect("parses") {
        out.push(r);
    }
    assert_eq!(d.buffered(), 0, "left over at split {at}");
    out
}

fn done(line: &str) -> Done {
    match replies(line.as_bytes()).pop() {
        Some(Reply::Tagged { done, .. }) => done,
        other => panic!("not a tagged response: {other:?}"),
    }
}

#[test]
fn tagged_responses_are_classified() {
    let d = done("A3 OK [APPENDUID 38505 3955] APPEND completed\r\n");
    assert_eq!(d.state, State::Ok);
    assert_eq!(d.code.as_deref(), Some("APPENDUID"));
    assert_eq!(d.append_uid, Some((38505, Some(3955))));
    assert_eq!(d.text, "APPEND completed");

    let d = done("A4 NO [TRYCREATE] Mailbox doesn't exist: X\r\n");
    assert_eq!((d.state, d.code.as_deref()), (State::No, Some("TRYCREATE")));
    assert_eq!(d.text, "Mailbox doesn't exist: X");

    let d = done("A5 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n");
    assert_eq!(d.code.as_deref(), Some("OVERQUOTA"));
    assert_eq!(d.text, "Quota exceeded (mailbox for user is full)");
    let e = crate::imap::error::refusal("h:1", d);
    assert!(e.is_overquota() && e.is_transient());

    let e = crate::imap::error::refusal("h:1", done("A6 NO [LIMIT] Message too large\r\n"));
    assert!(e.is_permanent_rejection());
    assert_eq!(e.code(), Some("LIMIT"));

    let d = done("A7 BAD Error in IMAP command APPEND: 8bit data in atom\r\n");
    assert_eq!(d.state, State::Bad);
    let e = crate::imap::error::refusal("h:1", d);
    assert!(
        matches!(e.kind(), crate::imap::ImapErrorKind::Bad { .. }) && e.is_permanent_rejection()
    );

    let d = done("A8 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] Logged in\r\n");
    assert!(
        d.caps
            .as_ref()
            .is_some_and(|c| c.literal_plus() && c.uidplus())
    );

    let d = done("A9 NO Mailbox is locked\r\n");
    assert_eq!((d.code, d.text.as_str()), (None, "Mailbox is locked"));

    // A UID range of one, and a real range (MULTIAPPEND) without a single UID.
    assert_eq!(
        done("B1 OK [APPENDUID 7 9:9] done\r\n").append_uid,
        Some((7, Some(9)))
    );
    assert_eq!(
        done("B2 OK [APPENDUID 7 9:11] done\r\n").append_uid,
        Some((7, None))
    );
    assert_eq!(done("B3 OK [APPENDUID 0 1] done\r\n").append_uid, None);
    // Codes in any case are upper-cased; a code without text is accepted.
    assert_eq!(
        done("B4 NO [alreadyexists] exists\r\n").code.as_deref(),
        Some("ALREADYEXISTS")
    );
    assert!(done("B5 OK [READ-ONLY]\r\n").code_is("read-only"));
}

/// A session's worth of replies: data with literals, a continuation,
/// untagged status, BYE and completions back to back.
const SCRIPT: &[u8] = b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n\
* 3 EXISTS\r\n\
* OK [UIDVALIDITY 9] UIDs valid\r\n\
+ go ahead\r\n\
* STATUS \"INBOX\" (MESSAGES 3 UIDVALIDITY 9)\r\n\
* SEARCH 4 7\r\n\
* LIST (\\HasNoChildren \\NonExistent) \"/\" Gone\r\n\
* 1 FETCH (UID 4 RFC822.SIZE 100 BODY[HEADER] {12}\r\nSubject: a\r\n)\r\n\
* 2 FETCH (UID 7 BODY[]<0> {5}\r\na\r\n.\r)\r\n\
pf1 OK [APPENDUID 1 2] done\r\n\
+\r\n\
* BYE shutting down\r\n\
pf2 NO [OVERQUOTA] full\r\n";

fn script_replies() -> Vec<Reply> {
    vec![
        Reply::Untagged(Untagged::Capability(Capabilities::from_names([
            "IMAP4REV1",
            "LITERAL+",
            "AUTH=PLAIN",
        ]))),
        Reply::Untagged(Untagged::Other),
        Reply::Untagged(Untagged::Other),
        Reply::Continue(b"go ahead".to_vec()),
        Reply::Untagged(Untagged::Status {
            messages: Some(3),
            uidvalidity: Some(9),
        }),
        Reply::Untagged(Untagged::Search(vec![4, 7])),
        Reply::Untagged(Untagged::List {
            name: b"Gone".to_vec(),
            nonexistent: true,
        }),
        Reply::Untagged(Untagged::Fetch(Fetch {
            uid: Some(4),
            size: Some(100),
            header: Some(b"Subject: a\r\n".to_vec()),
            body: None,
        })),
        Reply::Untagged(Untagged::Fetch(Fetch {
            uid: Some(7),
            size: None,
            header: None,
            body: Some(b"a\r\n.\r".to_vec()),
        })),
        Reply::Tagged {
            tag: "pf1".into(),
            done: Done {
                state: State::Ok,
                code: Some("APPENDUID".into()),
                text: "done".into(),
                append_uid: Some((1, Some(2))),
                caps: None,
            },
        },
        Reply::Continue(Vec::new()),
        Reply::Untagged(Untagged::Bye("shutting down".into())),
        Reply::Tagged {
            tag: "pf2".into(),
            done: Done {
                state: State::No,
                code: Some("OVERQUOTA".into()),
                text: "full".into(),
                append_uid: None,
                caps: None,
            },
        },
    ]
}

#[test]
fn a_script_of_replies_decodes_in_one_piece() {
    assert_eq!(replies(SCRIPT), script_replies());
}

#[test]
fn replies_split_at_every_offset_decode_the_same() {
    let want = script_replies();
    for at in 0..=SCRIPT.len() {
        assert_eq!(replies_split(SCRIPT, at), want, "split at {at}");
    }
}

#[test]
fn replies_fed_byte_by_byte_decode_the_same() {
    let mut d = Decoder::new();
    let mut got = Vec::new();
    for &b in SCRIPT {
        d.feed(&[b]);
        while let Some(r) = d.reply().expect("parses") {
            got.push(r);
        }
    }
    assert_eq!(got, script_replies());
}

#[test]
fn a_literal_is_waited_for_however_it_is_cut() {
    let reply = b"* 1 FETCH (UID 3 BODY[]<0> {10}\r\n0123\r\n6789)\r\npf9 OK done\r\n";
    let mut d = Decoder::new();
    d.feed(reply.get(..reply.len() - 20).unwrap());
    assert_eq!(d.reply(), Ok(None), "literal incomplete");
    d.feed(reply.get(reply.len() - 20..).unwrap());
    assert!(matches!(
        d.reply(),
        Ok(Some(Reply::Untagged(Untagged::Fetch(Fetch { body: Some(b), .. })))) if b == b"0123\r\n6789"
    ));
    assert!(matches!(d.reply(), Ok(Some(Reply::Tagged { .. }))));
    assert_eq!(d.reply(), Ok(None));
}

#[test]
fn hostile_replies_are_errors_not_panics() {
    for bad in [
        &b"* OK [ALERT]\xc3\xa9 hello\r\n"[..],
        b"pf1 ((( garbage\r\n",
        b"* 1 FETCH (UID 0)\r\n",
        b"\r\n",
        b"* \xff\xfe\r\n",
    ] {
        let mut d = Decoder::new();
        d.feed(bad);
        let e = d.reply().expect_err("refused");
        assert!(!e.line.is_empty(), "{bad:?}");
    }
    // The offending line is quoted, bounded and printable.
    let mut d = Decoder::new();
    let mut long = b"pf1 ((( ".to_vec();
    long.extend(std::iter::repeat_n(b'\x07', 2000));
    long.extend_from_slice(b"\r\n");
    d.feed(&long);
    let e = d.reply().expect_err("refused");
    assert!(e.line.chars().count() <= encode::MAX_TEXT + 1);
    assert!(!e.line.chars().any(char::is_control));
}

#[test]
fn no_line_feed_no_parse() {
    // A flood without LF is never parsed (and never complete): the
    // connection's budget ends it.
    let mut d = Decoder::new();
    d.feed(b"* OK ");
    for _ in 0..100 {
        d.feed(&[b'x'; 1000]);
        assert_eq!(d.reply(), Ok(None));
    }
    d.feed(b"\r\n");
    assert_eq!(d.reply(), Ok(Some(Reply::Untagged(Untagged::Other))));
}

#[test]
fn greetings() {
    let mut d = Decoder::new();
    d.feed(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n* 1 EXISTS\r\n");
    match d.greeting() {
        Ok(Some(Greeting::Ok { caps: Some(c) })) => assert!(c.starttls()),
        other => panic!("{other:?}"),
    }
    // What follows the greeting stays buffered for the first reply.
    assert_eq!(d.reply(), Ok(Some(Reply::Untagged(Untagged::Other))));

    let mut d = Decoder::new();
    d.feed(b"* PREAUTH hi\r\n");
    assert_eq!(d.greeting(), Ok(Some(Greeting::PreAuth { caps: None })));

    let mut d = Decoder::new();
    d.feed(b"* BYE [UNAVAILABLE] busy\r\n");
    assert_eq!(
        d.greeting(),
        Ok(Some(Greeting::Bye {
            text: "busy".into()
        }))
    );

    let mut d = Decoder::new();
    d.feed(b"* OK");
    assert_eq!(d.greeting(), Ok(None));
    let mut d = Decoder::new();
    d.feed(b"pf1 OK no\r\n");
    assert!(d.greeting().is_err());
}

fn tagged(tag: &str) -> Reply {
    Reply::Tagged {
        tag: tag.into(),
        done: Done {
            state: State::Ok,
            code: None,
            text: "ok".into(),
            append_uid: None,
            caps: None,
        },
    }
}

#[test]
fn a_continuation_keeps_its_text_bounded() {
    assert_eq!(
        replies(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n+\r\n+ \n"),
        vec![
            Reply::Continue(b"eyJzdGF0dXMiOiI0MDEifQ==".to_vec()),
            Reply::Continue(Vec::new()),
            Reply::Continue(Vec::new()),
        ]
    );
    let long = format!(
        "+ {}\r\n",
        "A".repeat(super::super::proto::reply::MAX_CONTINUE_TEXT + 100)
    );
    match replies(long.as_bytes()).as_slice() {
        [Reply::Continue(text)] => {
            assert_eq!(text.len(), super::super::proto::reply::MAX_CONTINUE_TEXT)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_flow_of_one_command() {
    let mut f = Flow::new("pf3");
    assert_eq!(f.tag(), "pf3");
    assert_eq!(
        f.on_reply(Reply::Untagged(Untagged::Search(vec![1]))),
        Ok(Step::Data(Untagged::Search(vec![1])))
    );
    assert_eq!(
        f.on_reply(Reply::Untagged(Untagged::Bye("x".into()))),
        Ok(Step::Bye("x".into()))
    );
    assert_eq!(
        f.on_reply(Reply::Continue(Vec::new())),
        Err(Misstep::UnexpectedContinue)
    );
    assert_eq!(f.on_reply(tagged("pf2")), Err(Misstep::ForeignTag));
    assert!(matches!(f.on_reply(tagged("pf3")), Ok(Step::Done(_))));

    // One literal: one "+", then only the completion.
    let mut f = Flow::new("pf4");
    f.expect_continue();
    assert!(f.waits_for_continue());
    assert_eq!(
        f.on_reply(Reply::Continue(b"Ready".to_vec())),
        Ok(Step::Proceed(b"Ready".to_vec()))
    );
    assert!(!f.waits_for_continue());
    assert_eq!(
        f.on_reply(Reply::Continue(Vec::new())),
        Err(Misstep::UnexpectedContinue)
    );

    // Refused before the literal.
    let mut f = Flow::new("pf5");
    f.expect_continue();
    assert!(matches!(f.on_reply(tagged("pf5")), Ok(Step::Done(_))));

    // SASL: any number of challenges.
    let mut f = Flow::new("pf6");
    f.expect_challenges();
    for challenge in ["", "eyJzdGF0dXMiOiI0MDEifQ==", ""] {
        let c = challenge.as_bytes().to_vec();
        assert_eq!(f.on_reply(Reply::Continue(c.clone())), Ok(Step::Proceed(c)));
    }
    assert!(matches!(f.on_reply(tagged("pf6")), Ok(Step::Done(_))));
}

#[test]
fn a_command_behind_others_hands_their_completions_back() {
    // Written while pf1 is still owed its completion: pf1's OK may come
    // before pf2's "+" (or after it), and is pf1's, not out of step.
    let mut f = Flow::behind_others("pf2");
    f.expect_continue();
    assert!(matches!(f.on_reply(tagged("pf1")), Ok(Step::Other(t, _)) if t == "pf1"));
    assert!(f.waits_for_continue());
    assert_eq!(
        f.on_reply(Reply::Continue(Vec::new())),
        Ok(Step::Proceed(Vec::new()))
    );
    assert!(matches!(f.on_reply(tagged("pf2")), Ok(Step::Done(_))));
}

#[test]
fn pipelined_replies() {
    assert!(matches!(
        flow::pipelined(tagged("pf9")),
        Ok(Pipelined::Done(t, _)) if t == "pf9"
    ));
    assert_eq!(
        flow::pipelined(Reply::Untagged(Untagged::Other)),
        Ok(Pipelined::Data)
    );
    assert_eq!(
        flow::pipelined(Reply::Untagged(Untagged::Bye("b".into()))),
        Ok(Pipelined::Bye("b".into()))
    );
    assert_eq!(
        flow::pipelined(Reply::Continue(Vec::new())),
        Err(Misstep::UnexpectedContinue)
    );
}

/// The segments as text, `<+>` for a wait and `<msg N>` for a message.
fn show(segments: &[Segment<'_>]) -> Vec<String> {
    segments
        .iter()
        .map(|s| match s {
            Segment::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Segment::AwaitContinue => "<+>".to_owned(),
            Segment::Message(m) => format!("<msg {}>", m.len()),
        })
        .collect()
}

#[test]
fn commands_are_encoded_with_the_right_literals() {
    let plain = Capabilities::default();
    let plus = Capabilities::from_names(["LITERAL+"]);
    let minus = Capabilities::from_names(["LITERAL-"]);

    let s = command::encode("pf1", vec![Part::text("NOOP")], &plain);
    assert_eq!(show(&s), ["pf1 NOOP\r\n"]);

    let login = || {
        vec![
            Part::text("LOGIN "),
            Part::arg(encode::string_arg(b"alice")),
            Part::text(" "),
            Part::arg(encode::string_arg("pä\"ss".as_bytes())),
        ]
    };
    let s = command::encode("pf2", login(), &plain);
    assert_eq!(
        show(&s),
        ["pf2 LOGIN \"alice\" {6}\r\n", "<+>", "pä\"ss\r\n"]
    );
    let s = command::encode("pf2", login(), &plus);
    assert_eq!(show(&s), ["pf2 LOGIN \"alice\" {6+}\r\npä\"ss\r\n"]);

    let big = SpooledMessage::from_bytes(&[b'x'; 5000]);
    let small = SpooledMessage::from_bytes(b"hi");
    for (caps, msg, binary, want) in [
        (
            &minus,
            &big,
            false,
            vec![
                "pf3 APPEND \"INBOX\" {5000}\r\n",
                "<+>",
                "<msg 5000>",
                "\r\n",
            ],
        ),
        (
            &minus,
            &small,
            false,
            vec!["pf3 APPEND \"INBOX\" {2+}\r\n", "<msg 2>", "\r\n"],
        ),
        (
            &plus,
            &big,
            true,
            vec!["pf3 APPEND \"INBOX\" ~{5000+}\r\n", "<msg 5000>", "\r\n"],
        ),
    ] {
        let parts = vec![
            Part::text("APPEND "),
            Part::arg(encode::string_arg(b"INBOX")),
            Part::text(" "),
            Part::Message { msg, binary },
        ];
        assert_eq!(show(&command::encode("pf3", parts, caps)), want);
    }
}
