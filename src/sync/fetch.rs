//! The fetch stage: RETR the planned messages (a window of them in flight
//! where the server offers PIPELINING) into spools, and queue them for the
//! append stage. The queue is bounded three ways, so that memory does not
//! grow with the number or the size of the messages (guarantee 6).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::failure::{Failure, pop_failure, spool_failure};
use crate::config::Account;
use crate::pop3;
use crate::spool::{Spool, SpooledMessage};

/// RETRs in flight on the POP3 side (with PIPELINING; one without).
const RETR_WINDOW: usize = 256;
/// Messages read but not yet appended, at most (the bound in count)...
pub(super) const QUEUE: usize = 256;
/// ...and at most this many of their bytes held in memory (the bound in
/// bytes; a message above the spool threshold waits in its temporary file
/// and counts nothing here).
const QUEUE_BYTES: usize = 16 << 20;
/// ...and at most this many of them waiting in temporary files.
const QUEUE_ON_DISK: usize = 4;

/// The queue's bounds in bytes and in temporary files (its bound in count
/// is the channel's capacity, [`QUEUE`]).
pub(super) struct Bounds {
    bytes: Arc<Semaphore>,
    on_disk: Arc<Semaphore>,
}

impl Bounds {
    pub(super) fn new() -> Bounds {
        Bounds {
            bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
            on_disk: Arc::new(Semaphore::new(QUEUE_ON_DISK)),
        }
    }
}

/// What the POP3 side hands to the IMAP side.
pub(super) enum Fetched {
    Message(Box<SpooledMessage>),
    /// Larger than max_message_size part-way through its RETR (the LIST
    /// size lied); the POP3 session had to be abandoned.
    TooBig,
    /// The server refused its RETR (-ERR): the server's words.
    Failed(String),
}

/// How the POP3 side of a session ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Produced {
    All,
    /// The IMAP side stopped taking messages (shutdown or failure).
    Stopped,
    /// A RETR was abandoned: the session cannot be used further.
    SessionLost,
}

/// A queued message.
pub(super) struct Item {
    /// Index into the session's list of messages to fetch.
    pub index: usize,
    pub fetched: Fetched,
    /// Already looked for in the target (and not found).
    pub looked_up: bool,
    /// The SHA-256 of the message (empty when there is no message).
    pub sha: String,
    /// Its share of the queue's bounds, given back when the item is dropped.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Item {
    fn new(index: usize, fetched: Fetched, permit: Option<OwnedSemaphorePermit>) -> Item {
        let sha = match &fetched {
            Fetched::Message(m) => m.sha256_hex(),
            Fetched::TooBig | Fetched::Failed(_) => String::new(),
        };
        Item {
            index,
            fetched,
            looked_up: false,
            sha,
            permit,
        }
    }
}

/// The POP3 side of a session: RETRs `numbers` (pipelined where the server
/// offers it) into spools and queues them, in order.
pub(super) async fn produce(
    pop: &mut pop3::Session,
    acc: &Account,
    numbers: &[u32],
    threshold: usize,
    tx: mpsc::Sender<Item>,
    bounds: &Bounds,
) -> Result<Produced, Failure> {
    let max = acc.policy.max_message_size;
    let fail = |e| pop_failure(acc, "RETR failed", e);
    let mut stream = pop.retr_pipelined(numbers, RETR_WINDOW);
    let mut index = 0usize;
    // Set when the IMAP side stops taking messages.
    let mut stopped = false;
    loop {
        let Some((_, answer)) = stream.next_message().await.map_err(fail)? else {
            break;
        };
        let fetched = match answer {
            // This message only: the stream goes on.
            Err(e) => Fetched::Failed(e.to_string()),
            Ok(mut body) => {
                let mut spool = Spool::new(threshold).with_limit(max);
                let mut too_big = false;
                while let Some(chunk) = body.next_chunk().await.map_err(fail)? {
                    spool.write(chunk).await.map_err(spool_failure)?;
                    if spool.len() > max {
                        // Stop reading at once: a message that never ends
                        // must not hold the pass. The session is out of
                        // step from here.
                        too_big = true;
                        break;
                    }
                }
                if too_big {
                    Fetched::TooBig
                } else {
                    Fetched::Message(Box::new(spool.finish().await.map_err(spool_failure)?))
                }
            }
        };
        // Memory is bounded by bytes; temporary files by count.
        let permit = match &fetched {
            Fetched::Message(msg) if msg.is_on_disk() => {
                bounds.on_disk.clone().acquire_owned().await.ok()
            }
            Fetched::Message(msg) => {
                let cost = u32::try_from(msg.len().min(QUEUE_BYTES as u64)).unwrap_or(u32::MAX);
                bounds.bytes.clone().acquire_many_owned(cost).await.ok()
            }
            Fetched::TooBig | Fetched::Failed(_) => None,
        };
        let too_big = matches!(fetched, Fetched::TooBig);
        if tx.send(Item::new(index, fetched, permit)).await.is_err() {
            stopped = true;
            break;
        }
        if too_big {
            return Ok(Produced::SessionLost);
        }
        index += 1;
    }
    if stopped {
        // Read off what is in flight so that the session stays usable for
        // DELE and QUIT.
        stream.drain().await.map_err(fail)?;
        return Ok(Produced::Stopped);
    }
    Ok(Produced::All)
}
