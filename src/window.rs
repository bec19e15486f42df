//! A bounded window of commands in flight, answered in the order they were
//! sent: the bookkeeping of pipelining, with no I/O and no async.
//!
//! Why one type: POP3 keeps a window of RETRs and of DELEs (RFC 2449
//! PIPELINING), IMAP a window of APPENDs (LITERAL+). Each needs the same
//! four things: a bound on what is in flight (commands, and for IMAP the
//! literal bytes written ahead), answers matched to their command (POP3
//! answers arrive in order; IMAP tags may complete out of order), answers
//! handed back strictly in send order (so that the ledger records each OK as
//! it is known and never before), and, once the connection failed, a clean
//! split between the answers that are known and the commands whose outcome
//! is not. Written three times that drifted apart (`poisoned` on one side,
//! `broken` on the other, `MAX_WINDOW` twice); here it is written once, and
//! the protocol code keeps only what is its own: writing commands and
//! reading replies.
//!
//! Vocabulary: an entry is *pushed* when its command is written, *answered*
//! when its reply is read ([`Window::complete`] by key, or
//! [`Window::complete_oldest`]), and *popped* ([`Window::pop`]) when the
//! caller takes its answer, which is only possible once every older entry
//! was popped. A pushed entry counts against the window until it is popped;
//! its cost (bytes in flight) only until it is answered.

use std::collections::VecDeque;

/// Most commands in flight at once on one connection, for every protocol.
pub const MAX_WINDOW: usize = 256;

/// Why the window refused an operation. Callers turn it into their own
/// error; none of these touches a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// [`Window::push`] while [`Window::is_full`]: pop an answer first.
    #[error("the window of commands in flight is full")]
    Full,
    /// [`Window::push`] after [`Window::set_broken`].
    #[error("the connection broke while commands were in flight")]
    Broken,
    /// An answer whose key is not that of an unanswered entry: a reply to a
    /// command we did not send, or a second reply to one.
    #[error("a reply to a command that is not in flight")]
    UnknownKey,
    /// [`Window::complete_oldest`] with nothing unanswered.
    #[error("a reply while no command is in flight")]
    NothingInFlight,
}

#[derive(Debug)]
struct Entry<K, M, A> {
    key: K,
    meta: M,
    cost: u64,
    answer: Option<A>,
}

/// A popped (or, on [`Window::abandon`], known) answer: the entry's key, the
/// caller's metadata given to [`Window::push`], and the answer.
pub type Answered<K, M, A> = (K, M, A);

/// What [`Window::abandon`] returns: the known answers, in send order, and
/// the key and metadata of each entry whose outcome is unknown.
pub type Abandoned<K, M, A> = (Vec<Answered<K, M, A>>, Vec<(K, M)>);

/// The commands in flight on one connection, oldest first.
///
/// `K` identifies a command's reply (an IMAP tag; `()` or a message number
/// for POP3, whose replies come in order), `M` is the caller's metadata (a
/// ledger token, a message number) and `A` the answer.
#[derive(Debug)]
pub struct Window<K, M, A> {
    limit: usize,
    max_cost: u64,
    entries: VecDeque<Entry<K, M, A>>,
    cost_in_flight: u64,
    unanswered: usize,
    broken: bool,
}

impl<K, M, A> Window<K, M, A> {
    /// A window of at most `limit` entries (clamped to `1..=`[`MAX_WINDOW`]),
    /// with no bound on cost.
    pub fn new(limit: usize) -> Self {
        Self::with_max_cost(limit, u64::MAX)
    }

    /// A window of at most `limit` entries (clamped to `1..=`[`MAX_WINDOW`])
    /// that is also full once the unanswered entries cost `max_cost` or more
    /// (at least 1; one entry is always allowed, however costly).
    pub fn with_max_cost(limit: usize, max_cost: u64) -> Self {
        Window {
            limit: limit.clamp(1, MAX_WINDOW),
            max_cost: max_cost.max(1),
            entries: VecDeque::new(),
            cost_in_flight: 0,
            unanswered: 0,
            broken: false,
        }
    }

    /// How many entries may be pending (pushed, not popped) at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries pushed and not popped yet (answered or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing pushed is waiting to be popped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries whose answer has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.unanswered
    }

    /// The summed cost of the unanswered entries.
    pub fn cost_in_flight(&self) -> u64 {
        self.cost_in_flight
    }

    /// True when [`Window::push`] must wait for a [`Window::pop`] (or, for
    /// cost, an answer) first.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.limit || self.cost_in_flight >= self.max_cost
    }

    /// The connection failed: no more pushes. Answers already known can
    /// still be popped; see [`Window::abandon`] for the rest.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Whether [`Window::set_broken`] was called.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Records a command just written, with its key, the caller's metadata
    /// and its cost (bytes in flight; 0 if not counted).
    pub fn push(&mut self, key: K, meta: M, cost: u64) -> Result<(), WindowError> {
        if self.broken {
            return Err(WindowError::Broken);
        }
        if self.is_full() {
            return Err(WindowError::Full);
        }
        self.entries.push_back(Entry {
            key,
            meta,
            cost,
            answer: None,
        });
        self.cost_in_flight = self.cost_in_flight.saturating_add(cost);
        self.unanswered = self.unanswered.saturating_add(1);
        Ok(())
    }

    /// Records a command that was answered as soon as it was written (an
    /// IMAP APPEND refused before its literal): pushed and answered at once.
    pub fn push_answered(&mut self, key: K, meta: M, answer: A) -> Result<(), WindowError> {
        self.push(key, meta, 0)?;
        if let Some(e) = self.entries.back_mut() {
            self.unanswered = self.unanswered.saturating_sub(1);
            e.answer = Some(answer);
        }
        Ok(())
    }

    fn answer(&mut self, index: usize, answer: A) -> Result<(), WindowError> {
        let e = self.entries.get_mut(index).ok_or(WindowError::UnknownKey)?;
        e.answer = Some(answer);
        self.cost_in_flight = self.cost_in_flight.saturating_sub(e.cost);
        self.unanswered = self.unanswered.saturating_sub(1);
        Ok(())
    }

    /// The answer of the oldest unanswered entry (replies that arrive in
    /// send order, as in POP3).
    pub fn complete_oldest(&mut self, answer: A) -> Result<(), WindowError> {
        let index = self
            .entries
            .iter()
            .position(|e| e.answer.is_none())
            .ok_or(WindowError::NothingInFlight)?;
        self.answer(index, answer)
    }

    /// The answer of the unanswered entry whose key is `key` (replies that
    /// may arrive out of order, as IMAP tagged completions). An unknown key,
    /// or one already answered, is [`WindowError::UnknownKey`] and changes
    /// nothing.
    pub fn complete<Q>(&mut self, key: &Q, answer: A) -> Result<(), WindowError>
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        let index = self
            .entries
            .iter()
            .position(|e| e.answer.is_none() && e.key == *key)
            .ok_or(WindowError::UnknownKey)?;
        self.answer(index, answer)
    }

    /// Whether the oldest entry is answered, i.e. [`Window::pop`] would
    /// return it.
    pub fn can_pop(&self) -> bool {
        self.entries.front().is_some_and(|e| e.answer.is_some())
    }

    /// The oldest entry, if it is answered: answers come out in send order
    /// only, whatever order they arrived in.
    pub fn pop(&mut self) -> Option<Answered<K, M, A>> {
        if !self.can_pop() {
            return None;
        }
        let e = self.entries.pop_front()?;
        e.answer.map(|a| (e.key, e.meta, a))
    }

    /// Gives up: every known answer not popped yet (in send order), and the
    /// key and metadata of every entry whose outcome is unknown.
    pub fn abandon(self) -> Abandoned<K, M, A> {
        let mut answered = Vec::new();
        let mut unanswered = Vec::new();
        for e in self.entries {
            match e.answer {
                Some(a) => answered.push((e.key, e.meta, a)),
                None => unanswered.push((e.key, e.meta)),
            }
        }
        (answered, unanswered)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type W = Window<&'static str, u32, &'static str>;

    #[test]
    fn limit_is_clamped() {
        assert_eq!(W::new(0).limit(), 1);
        assert_eq!(W::new(10_000).limit(), MAX_WINDOW);
        assert_eq!(W::new(7).limit(), 7);
    }

    #[test]
    fn answers_come_back_in_send_order_whatever_order_they_arrive_in() {
        let mut w = W::new(8);
        w.push("a1", 1, 0).unwrap();
        w.push("a2", 2, 0).unwrap();
        w.push("a3", 3, 0).unwrap();
        assert_eq!(w.in_flight(), 3);
        // a2 and a3 complete before a1: nothing can be popped yet.
        w.complete(&"a3", "ok3").unwrap();
        w.complete(&"a2", "no2").unwrap();
        assert!(!w.can_pop());
        assert_eq!(w.pop(), None);
        w.complete(&"a1", "ok1").unwrap();
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.pop(), Some(("a1", 1, "ok1")));
        assert_eq!(w.pop(), Some(("a2", 2, "no2")));
        assert_eq!(w.pop(), Some(("a3", 3, "ok3")));
        assert_eq!(w.pop(), None);
        assert!(w.is_empty());
    }

    #[test]
    fn unknown_and_repeated_keys_are_refused_and_change_nothing() {
        let mut w = W::new(4);
        w.push("a1", 1, 0).unwrap();
        assert_eq!(w.complete(&"zz", "x"), Err(WindowError::UnknownKey));
        w.complete(&"a1", "ok").unwrap();
        assert_eq!(w.complete(&"a1", "again"), Err(WindowError::UnknownKey));
        assert_eq!(w.pop(), Some(("a1", 1, "ok")));
    }

    #[test]
    fn in_order_replies_complete_the_oldest() {
        let mut w: Window<(), u32, bool> = Window::new(3);
        assert_eq!(w.complete_oldest(true), Err(WindowError::NothingInFlight));
        for n in 1..=3 {
            w.push((), n, 0).unwrap();
        }
        assert!(w.is_full());
        w.complete_oldest(true).unwrap();
        w.complete_oldest(false).unwrap();
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.pop(), Some(((), 1, true)));
        assert!(!w.is_full());
        assert_eq!(w.pop(), Some(((), 2, false)));
        assert_eq!(w.pop(), None, "3 is still in flight");
    }

    #[test]
    fn a_popped_entry_frees_its_place_and_an_answer_frees_its_cost() {
        let mut w = W::with_max_cost(2, 100);
        w.push("a1", 1, 60).unwrap();
        assert!(!w.is_full());
        w.push("a2", 2, 60).unwrap();
        assert!(w.is_full());
        assert_eq!(w.push("a3", 3, 1), Err(WindowError::Full));
        assert_eq!(w.cost_in_flight(), 120);
        w.complete(&"a1", "ok").unwrap();
        assert_eq!(w.cost_in_flight(), 60);
        // Answered but not popped: still takes a place in the window.
        assert!(w.is_full());
        w.pop().unwrap();
        assert!(!w.is_full());

        // Cost alone fills it, and one costly entry is always allowed.
        let mut w = W::with_max_cost(8, 100);
        w.push("big", 1, 1_000).unwrap();
        assert!(w.is_full());
        w.complete(&"big", "ok").unwrap();
        assert!(!w.is_full());
    }

    #[test]
    fn answered_at_once_costs_nothing_and_pops_in_order() {
        let mut w = W::with_max_cost(4, 10);
        w.push("a1", 1, 9).unwrap();
        w.push_answered("a2", 2, "refused").unwrap();
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.cost_in_flight(), 9);
        assert_eq!(w.pop(), None, "a1 first");
        w.complete(&"a1", "ok").unwrap();
        assert_eq!(w.pop(), Some(("a1", 1, "ok")));
        assert_eq!(w.pop(), Some(("a2", 2, "refused")));
    }

    #[test]
    fn a_broken_window_takes_no_more_but_hands_out_what_is_known() {
        let mut w = W::new(8);
        w.push("a1", 1, 0).unwrap();
        w.push("a2", 2, 0).unwrap();
        w.push("a3", 3, 0).unwrap();
        w.push("a4", 4, 0).unwrap();
        w.complete(&"a1", "ok1").unwrap();
        w.complete(&"a3", "ok3").unwrap();
        w.set_broken();
        assert!(w.is_broken());
        assert_eq!(w.push("a5", 5, 0), Err(WindowError::Broken));
        assert_eq!(w.pop(), Some(("a1", 1, "ok1")));
        let (answered, unanswered) = w.abandon();
        assert_eq!(answered, vec![("a3", 3, "ok3")]);
        assert_eq!(unanswered, vec![("a2", 2), ("a4", 4)]);
    }

    #[test]
    fn string_keys_complete_by_str() {
        let mut w: Window<String, (), u8> = Window::new(2);
        w.push("pf1".to_owned(), (), 0).unwrap();
        w.complete("pf1", 7).unwrap();
        assert_eq!(w.pop(), Some(("pf1".to_owned(), (), 7)));
    }
}
