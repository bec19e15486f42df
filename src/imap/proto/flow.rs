//! The tag and continuation state machine of one command, with no I/O:
//! which reply ends it, when a "+" is expected, what is the caller's data.
//!
//! Rules (RFC 3501 section 2.2): untagged data may come at any time and is
//! handed to the caller; the completion carries the command's tag (one we did
//! not send is a protocol error: replies are out of step); a "+" is only
//! valid while the command waits for one (a synchronizing literal, or every
//! round of a SASL exchange); a completion that comes while we wait for "+"
//! ends the command early (the server refused it before its literal).
//! Pipelined commands match completions to tags with [`crate::window`]
//! instead, through [`pipelined`]; a command written behind others
//! ([`Flow::behind_others`]) hands their completions back as
//! [`Step::Other`] while it waits for its own "+".

use super::reply::{Done, Reply, Untagged};

/// What the command in progress waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Completion,
    /// One "+" (a synchronizing literal), then the completion.
    Continue,
    /// Any number of "+" (SASL challenges), then the completion.
    Challenges,
}

/// A reply that does not fit the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Misstep {
    #[error("completion of a command we did not send")]
    ForeignTag,
    #[error("unexpected continuation request")]
    UnexpectedContinue,
}

/// What a reply means for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Untagged data for the caller.
    Data(Untagged),
    /// An untagged BYE: the server is about to close the connection.
    Bye(String),
    /// The "+" the command waited for: send what comes next. Its text (a
    /// SASL challenge), bounded.
    Proceed(Vec<u8>),
    /// The command's completion (after a [`Flow::expect_continue`]: a
    /// refusal before the literal).
    Done(Done),
    /// The completion of an earlier pipelined command (only for a
    /// [`Flow::behind_others`]); the caller matches its tag.
    Other(String, Done),
}

/// One command in progress.
#[derive(Debug, Clone)]
pub struct Flow {
    tag: String,
    expect: Expect,
    /// Earlier pipelined commands may complete while this one is written.
    others: bool,
}

impl Flow {
    pub fn new(tag: &str) -> Self {
        Flow {
            tag: tag.to_owned(),
            expect: Expect::Completion,
            others: false,
        }
    }

    /// A command written while earlier pipelined ones may still complete:
    /// their completions are [`Step::Other`], not out of step.
    pub fn behind_others(tag: &str) -> Self {
        Flow {
            others: true,
            ..Flow::new(tag)
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A synchronizing literal's header was written: one "+" is due.
    pub fn expect_continue(&mut self) {
        self.expect = Expect::Continue;
    }

    /// A SASL exchange: each "+" is a challenge, until the completion.
    pub fn expect_challenges(&mut self) {
        self.expect = Expect::Challenges;
    }

    /// Whether the command still waits for a "+".
    pub fn waits_for_continue(&self) -> bool {
        self.expect == Expect::Continue
    }

    pub fn on_reply(&mut self, reply: Reply) -> Result<Step, Misstep> {
        match reply {
            Reply::Tagged { tag, done } if tag == self.tag => Ok(Step::Done(done)),
            Reply::Tagged { tag, done } if self.others => Ok(Step::Other(tag, done)),
            Reply::Tagged { .. } => Err(Misstep::ForeignTag),
            Reply::Continue(text) => match self.expect {
                Expect::Continue => {
                    self.expect = Expect::Completion;
                    Ok(Step::Proceed(text))
                }
                Expect::Challenges => Ok(Step::Proceed(text)),
                Expect::Completion => Err(Misstep::UnexpectedContinue),
            },
            Reply::Untagged(Untagged::Bye(text)) => Ok(Step::Bye(text)),
            Reply::Untagged(data) => Ok(Step::Data(data)),
        }
    }
}

/// A reply while several commands without literal waits are in flight:
/// a completion (any tag; the caller matches it), BYE, or data. A "+" is
/// out of step.
pub fn pipelined(reply: Reply) -> Result<Pipelined, Misstep> {
    match reply {
        Reply::Tagged { tag, done } => Ok(Pipelined::Done(tag, done)),
        Reply::Continue(_) => Err(Misstep::UnexpectedContinue),
        Reply::Untagged(Untagged::Bye(text)) => Ok(Pipelined::Bye(text)),
        Reply::Untagged(_) => Ok(Pipelined::Data),
    }
}

/// What [`pipelined`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pipelined {
    Done(String, Done),
    Bye(String),
    Data,
}
