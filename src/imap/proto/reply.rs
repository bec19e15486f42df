//! Server replies in the form popferry uses them, converted from what
//! imap-codec parsed: a tagged completion ([`Done`]) with its response code,
//! a continuation request, or untagged data reduced to the few kinds a
//! command of ours asks for ([`Untagged`]).
//!
//! Why a reduction of our own: the rest of `imap` then depends on a dozen
//! small types instead of imap-codec's whole model, server text is bounded
//! and sanitised here once, and codes imap-codec does not model (APPENDUID,
//! LIMIT, ALREADYEXISTS, NONEXISTENT, AUTHENTICATIONFAILED, ...) are
//! recognised in one place.

use imap_codec::imap_types::core::{IString, NString};
use imap_codec::imap_types::fetch::{MessageDataItem, Section};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data, Greeting as CodecGreeting, GreetingKind};
use imap_codec::imap_types::status::StatusDataItem;

use super::encode;
use crate::imap::Capabilities;

/// How a tagged command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    No,
    Bad,
}

/// A tagged completion, with what we care about from its response code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub state: State,
    /// Upper-cased response code name (`TRYCREATE`, `APPENDUID`, ...).
    pub code: Option<String>,
    /// Bounded, printable text after the code.
    pub text: String,
    /// APPENDUID: UIDVALIDITY and the UID when it is a single one.
    pub append_uid: Option<(u32, Option<u32>)>,
    /// A CAPABILITY response code (often in the OK of a login).
    pub caps: Option<Capabilities>,
}

impl Done {
    pub fn is_ok(&self) -> bool {
        self.state == State::Ok
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(code))
    }
}

/// One FETCH response, reduced to the items popferry asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch {
    pub uid: Option<u32>,
    pub size: Option<u32>,
    /// `BODY[HEADER]`.
    pub header: Option<Vec<u8>>,
    /// `BODY[]` or `BODY[]<origin>`.
    pub body: Option<Vec<u8>>,
}

/// Untagged data, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    /// `* BYE`: the server is closing the connection (bounded text).
    Bye(String),
    /// `* CAPABILITY ...`.
    Capability(Capabilities),
    /// `* STATUS mailbox (...)`.
    Status {
        messages: Option<u32>,
        uidvalidity: Option<u32>,
    },
    /// `* SEARCH ...`.
    Search(Vec<u32>),
    /// `* LIST (...) delim name`: the name as sent (modified UTF-7) and
    /// whether it carries `\NonExistent`.
    List { name: Vec<u8>, nonexistent: bool },
    /// `* n FETCH (...)`.
    Fetch(Fetch),
    /// Anything else (EXISTS, FLAGS, untagged OK, ...): read and ignored.
    Other,
}

/// One server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+ ...`: the server waits for a literal or a SASL response. The text
    /// after `+ ` (a SASL challenge, base64), at most
    /// [`MAX_CONTINUE_TEXT`] bytes, without the line end.
    Continue(Vec<u8>),
    Tagged {
        tag: String,
        done: Done,
    },
    Untagged(Untagged),
}

/// Most bytes of a continuation's text kept: a SASL challenge of ours
/// (an OAuth2 error report) is far shorter.
pub const MAX_CONTINUE_TEXT: usize = 8 * 1024;

/// What the greeting said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    Ok { caps: Option<Capabilities> },
    PreAuth { caps: Option<Capabilities> },
    Bye { text: String },
}

/// A response code: its upper-cased name, the APPENDUID and CAPABILITY
/// values when it is one of those.
struct CodeInfo {
    name: String,
    append_uid: Option<(u32, Option<u32>)>,
    caps: Option<Capabilities>,
}

fn code_info(code: &Code<'_>) -> CodeInfo {
    let fixed = |name: &str| CodeInfo {
        name: name.to_owned(),
        append_uid: None,
        caps: None,
    };
    match code {
        Code::Alert => fixed("ALERT"),
        Code::BadCharset { .. } => fixed("BADCHARSET"),
        Code::Capability(list) => CodeInfo {
            name: "CAPABILITY".to_owned(),
            append_uid: None,
            caps: Some(Capabilities::from_parsed(list.as_ref())),
        },
        Code::Parse => fixed("PARSE"),
        Code::PermanentFlags(_) => fixed("PERMANENTFLAGS"),
        Code::ReadOnly => fixed("READ-ONLY"),
        Code::ReadWrite => fixed("READ-WRITE"),
        Code::TryCreate => fixed("TRYCREATE"),
        Code::UidNext(_) => fixed("UIDNEXT"),
        Code::UidValidity(_) => fixed("UIDVALIDITY"),
        Code::Unseen(_) => fixed("UNSEEN"),
        Code::CompressionActive => fixed("COMPRESSIONACTIVE"),
        Code::OverQuota => fixed("OVERQUOTA"),
        Code::TooBig => fixed("TOOBIG"),
        Code::Other(other) => other_code(other.inner()),
    }
}

/// A code imap-codec keeps as raw bytes (`APPENDUID 38505 3955`, `LIMIT`).
fn other_code(raw: &[u8]) -> CodeInfo {
    let text = String::from_utf8_lossy(raw);
    let mut words = text.split_ascii_whitespace();
    let name = words.next().unwrap_or_default().to_ascii_uppercase();
    let append_uid = if name == "APPENDUID" {
        parse_append_uid(words.next(), words.next())
    } else {
        None
    };
    let name = if !name.is_empty() && name.bytes().all(encode::is_atom_char) {
        name
    } else {
        // Not an atom: keep something printable and short.
        encode::bounded_text(&name)
    };
    CodeInfo {
        name,
        append_uid,
        caps: None,
    }
}

/// `APPENDUID uidvalidity uid-set`: the UID only when the set is one UID.
fn parse_append_uid(validity: Option<&str>, set: Option<&str>) -> Option<(u32, Option<u32>)> {
    let validity = validity?.parse::<u32>().ok().filter(|v| *v > 0)?;
    let uid = set.and_then(|s| match s.split_once(':') {
        None => s.parse::<u32>().ok(),
        Some((a, b)) => {
            let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
            (a == b).then_some(a)
        }
    });
    Some((validity, uid.filter(|u| *u > 0)))
}

/// A tagged completion from its parts.
pub(crate) fn done(state: State, code: Option<&Code<'_>>, text: &str) -> Done {
    let info = code.map(code_info);
    let (append_uid, caps, code) = match info {
        Some(i) => (i.append_uid, i.caps, Some(i.name)),
        None => (None, None, None),
    };
    Done {
        state,
        code,
        text: encode::bounded_text(text),
        append_uid,
        caps,
    }
}

pub(crate) fn greeting(g: &CodecGreeting<'_>) -> Greeting {
    let caps = match &g.code {
        Some(Code::Capability(list)) => Some(Capabilities::from_parsed(list.as_ref())),
        _ => None,
    };
    match g.kind {
        GreetingKind::Ok => Greeting::Ok { caps },
        GreetingKind::PreAuth => Greeting::PreAuth { caps },
        GreetingKind::Bye => Greeting::Bye {
            text: encode::bounded_text(g.text.inner()),
        },
    }
}

fn nstring(n: &NString<'_>) -> Option<Vec<u8>> {
    n.0.as_ref().map(|s: &IString<'_>| s.as_ref().to_vec())
}

fn fetch(items: &[MessageDataItem<'_>]) -> Fetch {
    let mut f = Fetch::default();
    for item in items {
        match item {
            MessageDataItem::Uid(u) => f.uid = Some(u.get()),
            MessageDataItem::Rfc822Size(s) => f.size = Some(*s),
            MessageDataItem::BodyExt {
                section: Some(Section::Header(None)),
                data,
                ..
            } => f.header = nstring(data),
            MessageDataItem::BodyExt {
                section: None,
                data,
                ..
            } => f.body = nstring(data),
            _ => {}
        }
    }
    f
}

pub(crate) fn data(d: &Data<'_>) -> Untagged {
    match d {
        Data::Capability(list) => Untagged::Capability(Capabilities::from_parsed(list.as_ref())),
        Data::Status { items, .. } => {
            let (mut messages, mut uidvalidity) = (None, None);
            for item in items.iter() {
                match item {
                    StatusDataItem::Messages(n) => messages = Some(*n),
                    StatusDataItem::UidValidity(v) => uidvalidity = Some(v.get()),
                    _ => {}
                }
            }
            Untagged::Status {
                messages,
                uidvalidity,
            }
        }
        Data::Search(uids) => Untagged::Search(uids.iter().map(|u| u.get()).collect()),
        Data::List { items, mailbox, .. } => Untagged::List {
            name: match mailbox {
                Mailbox::Inbox => b"INBOX".to_vec(),
                Mailbox::Other(other) => other.inner().as_ref().to_vec(),
            },
            nonexistent: items.iter().any(|a| match a {
                FlagNameAttribute::Extension(_) => {
                    a.to_string().eq_ignore_ascii_case("\\NonExistent")
                }
                _ => false,
            }),
        },
        Data::Fetch { items, .. } => Untagged::Fetch(fetch(items.as_ref())),
        _ => Untagged::Other,
    }
}
